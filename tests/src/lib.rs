//! Helpers for tenet's end-to-end tests: container links, a tenetd process under test,
//! tenetctl and the API, and the raw-frame tool, on the lab tenet-bench uses too
//! (`bench::lab`: namespaces, veth pairs, temporary directories, etcd). Everything made
//! here is removed when its guard drops, also when a test fails.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use bench::lab::{add_veth, unique, Etcd, EtcdTls, Netns, TempDir};
pub use bench::process::run;

pub mod sniff;

/// A container's link: a veth pair whose host end tenetd attaches and whose other end
/// sits in the container namespace as `eth0` with `address`.
pub struct Link {
    /// Host-side interface name.
    pub host: String,
    /// MAC of the container side.
    pub mac: String,
    host_ns: Option<String>,
}

impl Link {
    /// Creates the pair, moves one end into `ns` as eth0 with `address` (CIDR), and
    /// brings both up. Offloads are off so frames cross the switch as the kernel sent
    /// them (no partial checksums).
    pub fn new(ns: &Netns, address: Option<&str>) -> anyhow::Result<Self> {
        Self::between(None, ns, address)
    }

    /// Like [`Link::new`], with the host end in `host_ns` (a namespace standing in for a
    /// host running tenetd) instead of the root namespace.
    pub fn between(
        host_ns: Option<&Netns>,
        ns: &Netns,
        address: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::named(host_ns, ns, &unique("tv"), address)
    }

    /// Like [`Link::between`], with the host end named `host` (a container recreated
    /// under its old interface name).
    pub fn named(
        host_ns: Option<&Netns>,
        ns: &Netns,
        host: &str,
        address: Option<&str>,
    ) -> anyhow::Result<Self> {
        let host = host.to_owned();
        let peer = unique("tp");
        add_veth(&host, &peer)?;
        let mut link = Self {
            host: host.clone(),
            mac: String::new(),
            host_ns: None,
        };
        if let Some(hns) = host_ns {
            run("ip", &["link", "set", &host, "netns", hns.name()])?;
            link.host_ns = Some(hns.name().to_owned());
        }
        let on_host = |args: &[&str]| -> anyhow::Result<String> {
            match host_ns {
                Some(hns) => hns.exec(args[0], &args[1..]),
                None => run(args[0], &args[1..]),
            }
        };
        run("ip", &["link", "set", &peer, "netns", ns.name()])?;
        ns.exec("ip", &["link", "set", &peer, "name", "eth0"])?;
        if let Some(address) = address {
            ns.exec("ip", &["addr", "add", address, "dev", "eth0"])?;
        }
        // IPv6 autoconfiguration chatter would cross the switch too.
        let _ = ns.exec("sysctl", &["-qw", "net.ipv6.conf.eth0.disable_ipv6=1"]);
        let _ = on_host(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{host}.disable_ipv6=1"),
        ]);
        let offloads = [
            "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
        ];
        let mut args = vec!["ethtool", "-K", "eth0"];
        args.extend(offloads);
        let _ = ns.exec(args[0], &args[1..]);
        args[2] = host.as_str();
        let _ = on_host(&args);
        ns.exec("ip", &["link", "set", "eth0", "up"])?;
        on_host(&["ip", "link", "set", &host, "up"])?;
        link.mac = ns
            .exec("cat", &["/sys/class/net/eth0/address"])?
            .trim()
            .to_owned();
        Ok(link)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end deletes both (if the namespace did not take it already).
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.host_ns {
            cmd.args(["netns", "exec", ns, "ip"]);
        }
        let _ = cmd
            .args(["link", "del", &self.host])
            .stderr(Stdio::null())
            .status();
    }
}

/// An underlay link between two host namespaces: a veth pair with jumbo MTU so tunnelled
/// full-size frames fit. Returns the interface names in `a` and `b`.
pub fn underlay(a: &Netns, b: &Netns) -> anyhow::Result<(String, String)> {
    let (ia, ib) = (unique("ua"), unique("ub"));
    add_veth(&ia, &ib)?;
    run("ip", &["link", "set", &ia, "netns", a.name()])?;
    run("ip", &["link", "set", &ib, "netns", b.name()])?;
    underlay_end(a, &ia)?;
    underlay_end(b, &ib)?;
    Ok((ia, ib))
}

/// Hands the container end `eth0` in `ns` the offloads a container keeps on tenet's
/// af-packet ports, as tenet-cni sets them: checksums and TCP/IPv4 segmentation left
/// to the switch, segments capped to one large buffer.
pub fn offload_container_end(ns: &Netns) -> anyhow::Result<()> {
    ns.exec("ip", &["link", "set", "eth0", "gso_max_size", "65000"])?;
    ns.exec(
        "ethtool",
        &[
            "-K", "eth0", "tx", "on", "sg", "on", "tso", "on", "gso", "on",
        ],
    )?;
    Ok(())
}

/// Readies one end of an underlay link: jumbo MTU (tunnelled full-size frames fit), no
/// IPv6 chatter, no offloads (frames cross the switch as the kernel sent them), up.
pub fn underlay_end(ns: &Netns, dev: &str) -> anyhow::Result<()> {
    ns.exec("ip", &["link", "set", dev, "mtu", "9000"])?;
    let _ = ns.exec(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
    );
    let _ = ns.exec(
        "ethtool",
        &[
            "-K", dev, "tx", "off", "rx", "off", "tso", "off", "gso", "off", "gro", "off",
        ],
    );
    ns.exec("ip", &["link", "set", dev, "up"])?;
    Ok(())
}

/// Path of a workspace binary (`tenetd`), built by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first: `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// The raw-frame tool.
pub fn frames_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/frames.py")
}

/// Runs `tenetctl --socket SOCKET ARGS...`.
pub fn tenetctl(socket: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> Output {
    Command::new(binary("tenetctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("tenetctl runs")
}

/// The names of the ports the tenetd at `socket` has, in its order.
pub fn port_names(socket: &Path) -> Vec<String> {
    let out = tenetctl_ok(socket, &["--json", "port", "list"]);
    let ports: serde_json::Value = serde_json::from_str(&out).expect("port list is JSON");
    ports
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// One request to the API at `socket`, through the client tenetctl uses; the body
/// goes as it is.
pub fn http(socket: &Path, method: &str, path: &str, body: &str) -> control::client::Answer {
    control::client::Client::new(socket)
        .send(method, path, body.as_bytes())
        .expect("the API answered")
}

/// Runs tenetctl, which must succeed; returns its stdout.
pub fn tenetctl_ok(socket: &Path, args: &[impl AsRef<OsStr> + std::fmt::Debug]) -> String {
    let out = tenetctl(socket, args);
    assert!(
        out.status.success(),
        "tenetctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tenetctl's arguments that add tenant `name` with `id`, its subnet given as the
/// gateway's address (`10.1.0.1/24`), and its gateway on `gateway_host` (`auto`:
/// placed by the cluster).
pub fn tenant_add(name: &str, id: u32, subnet: &str, gateway_host: &str) -> Vec<String> {
    let id = id.to_string();
    [
        "tenant",
        "add",
        name,
        "--id",
        &id,
        "--subnet",
        subnet,
        "--gateway-host",
        gateway_host,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Pings until an answer comes (learning and ARP take a moment), or panics after 15 s.
pub fn wait_for_ping(from: &Netns, to: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if from.exec("ping", &["-c", "1", "-W", "1", to]).is_ok() {
            return;
        }
    }
    panic!("no ping reply from {to}");
}

/// One iperf3 TCP test of `seconds` from `client` to a server in `server` bound to
/// `address`; the received bit rate.
pub fn iperf3_bits(client: &Netns, server: &Netns, address: &str, seconds: u32) -> f64 {
    iperf3_streams(client, server, address, seconds, 1)
}

/// Like [`iperf3_bits`], with `streams` TCP connections at once (`-P`).
pub fn iperf3_streams(
    client: &Netns,
    server: &Netns,
    address: &str,
    seconds: u32,
    streams: u32,
) -> f64 {
    let mut srv = server
        .command("iperf3")
        .args(["-s", "-1", "-B", address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let out = client
        .exec(
            "iperf3",
            &[
                "-c",
                address,
                "-t",
                &seconds.to_string(),
                "-P",
                &streams.to_string(),
                "-J",
            ],
        )
        .expect("iperf3 through tenet");
    let _ = srv.wait();
    let report: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("iperf3 result: {out}"))
}

/// The resettable TCP stream tool (gap measurement).
pub fn stream_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/stream.py")
}

/// A running tenetd. Its output is collected; dropping it kills it if still running.
pub struct Tenetd {
    child: Option<Child>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    _config_dir: TempDir,
    /// DPDK's file prefix from the config: a killed tenetd leaves its runtime
    /// directory behind.
    file_prefix: Option<String>,
}

/// What a stopped tenetd left.
#[derive(Debug)]
pub struct Stopped {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr (logs).
    pub stderr: String,
}

impl Tenetd {
    /// Writes `config` to a file and starts `tenetd --config FILE` with `extra` args.
    pub fn start(config: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(None, config, extra)
    }

    /// Starts tenetd (in `ns`, if given) and waits until its API answers.
    pub fn serving(ns: Option<&Netns>, config: &str) -> anyhow::Result<Self> {
        let mut tenetd = Self::start_in(ns, config, &[])?;
        tenetd.wait_for_line("API listening", Duration::from_secs(30))?;
        Ok(tenetd)
    }

    /// Starts tenetd inside a namespace (a "host").
    pub fn start_in(ns: Option<&Netns>, config: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = TempDir::new("cfg")?;
        let path = dir.path().join("tenetd.toml");
        std::fs::write(&path, private_control(config, dir.path()))?;
        let mut command = match ns {
            Some(ns) => {
                let mut c = ns.command(&binary("tenetd").to_string_lossy());
                c.env("TENET_LOG", "info");
                c
            }
            None => Command::new(binary("tenetd")),
        };
        let mut child = command
            .arg("--config")
            .arg(&path)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tenetd")?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        for (pipe, sink) in [
            (
                Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
                Arc::clone(&stdout),
            ),
            (
                Box::new(child.stderr.take().expect("piped")) as Box<dyn std::io::Read + Send>,
                Arc::clone(&stderr),
            ),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().expect("output lock").push_str(&line);
                    sink.lock().expect("output lock").push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        let file_prefix = config.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "file_prefix").then(|| value.trim().trim_matches('"').to_owned())
        });
        Ok(Self {
            child: Some(child),
            stdout,
            stderr,
            lines,
            _config_dir: dir,
            file_prefix,
        })
    }

    /// Waits until tenetd says it forwards (or fails with what it printed).
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for_line("tenetd forwarding", timeout)
    }

    /// Waits for an output line containing `needle`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(needle) => return Ok(()),
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    std::thread::sleep(Duration::from_millis(100));
                    bail!(
                        "tenetd exited ({status}) before `{needle}`:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }
        bail!(
            "no `{needle}` from tenetd within {timeout:?}:\n{}",
            self.stderr_text()
        )
    }

    /// Kills it with SIGKILL (a crash: nothing is cleaned up by tenetd itself) and
    /// waits for it to be gone.
    pub fn kill(mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        child.kill()?;
        child.wait()?;
        if let Some(prefix) = &self.file_prefix {
            remove_dpdk_runtime(prefix);
        }
        Ok(())
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Logs so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("output lock").clone()
    }

    /// Sends SIGINT and waits for the exit.
    pub fn stop(mut self) -> anyhow::Result<Stopped> {
        let mut child = self.child.take().context("already stopped")?;
        run("kill", &["-INT", &child.id().to_string()])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "tenetd did not stop within 10 s of SIGINT:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Stopped {
            status,
            stdout: self.stdout.lock().expect("output lock").clone(),
            stderr: self.stderr_text(),
        })
    }
}

impl Drop for Tenetd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(prefix) = &self.file_prefix {
                remove_dpdk_runtime(prefix);
            }
        }
    }
}

/// Gives a test's tenetd its own API socket and state file (in `dir`) unless the config
/// names them, so tests running side by side never share them or leave state behind.
fn private_control(config: &str, dir: &Path) -> String {
    if config.contains("[control]") {
        return config.to_owned();
    }
    format!(
        "{config}\n[control]\napi_socket = \"{0}/tenetd.sock\"\nstate_file = \"{0}/state.json\"\n",
        dir.display()
    )
}

/// Runs tenetd to completion (for configs it must refuse).
pub fn tenetd_once(config: &str, extra: &[&str]) -> anyhow::Result<Output> {
    let dir = TempDir::new("cfg")?;
    let path = dir.path().join("tenetd.toml");
    std::fs::write(&path, private_control(config, dir.path()))?;
    Command::new(binary("tenetd"))
        .arg("--config")
        .arg(&path)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .context("running tenetd")
}

/// A frame receiver running in a namespace.
pub struct Receiver {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Receiver {
    /// Starts `frames.py recv` on `iface` in `ns`, and waits until it listens.
    pub fn start(ns: &Netns, iface: &str, count: usize, tag: u32) -> anyhow::Result<Self> {
        let mut child = ns
            .command("python3")
            .arg(frames_tool())
            .args([
                "recv",
                iface,
                &count.to_string(),
                "--tag",
                &tag.to_string(),
                "--timeout",
                "20",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the frame receiver")?;
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line == "ready" => Ok(Self { child, lines }),
            other => bail!("frame receiver did not start: {other:?}"),
        }
    }

    /// Collects frames until `count` arrived or `timeout` passed.
    pub fn collect(mut self, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        while frames.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(hex) => frames.push(decode_hex(&hex)),
                Err(_) => break,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        frames
    }
}

/// Sends `count` frames marked `tag` from `iface` in `ns`, 802.1Q-tagged with `vlan`
/// when given.
pub fn send_frames(
    ns: &Netns,
    iface: &str,
    count: usize,
    tag: u32,
    src: &str,
    dst: &str,
    vlan: Option<u16>,
) -> anyhow::Result<()> {
    let tool = frames_tool().to_string_lossy().into_owned();
    let (count, tag) = (count.to_string(), tag.to_string());
    let mut args = vec![
        tool.as_str(),
        "send",
        iface,
        &count,
        "--tag",
        &tag,
        "--src",
        src,
        "--dst",
        dst,
        "--gap",
        "0.0005",
    ];
    let vid = vlan.map(|v| v.to_string());
    if let Some(vid) = &vid {
        args.extend(["--vlan", vid.as_str()]);
    }
    ns.exec("python3", &args)?;
    Ok(())
}

/// The frame `frames.py send` makes for `seq` (to compare byte by byte).
pub fn expected_frame(src: &str, dst: &str, tag: u32, seq: u32, size: usize) -> Vec<u8> {
    let mac = |s: &str| dataplane::packet::parse_mac(s).expect("a MAC");
    let mut f = mac(dst).to_vec();
    f.extend(mac(src));
    f.extend(0x88b5u16.to_be_bytes());
    f.extend(tag.to_be_bytes());
    f.extend(seq.to_be_bytes());
    let head = f.len();
    f.extend((0..size.saturating_sub(head)).map(|i| ((seq as usize * 7 + i) & 0xff) as u8));
    f
}

pub(crate) fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Whether hugepage files or a runtime directory of `prefix` remain.
pub fn dpdk_leftovers(prefix: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let runtime = Path::new("/var/run/dpdk").join(prefix);
    if runtime.exists() {
        left.push(runtime);
    }
    if let Ok(entries) = std::fs::read_dir("/dev/hugepages") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                left.push(entry.path());
            }
        }
    }
    left
}

/// Removes the DPDK runtime directory of `prefix`, which a DPDK process that was killed,
/// or that does not clean up after itself (dpdk-testpmd), leaves behind.
pub fn remove_dpdk_runtime(prefix: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

/// dpdk-testpmd's command line up to its devices: stopped by SIGINT after `seconds`,
/// on `lcores`, in memory under `prefix` (so it leaves no hugepage files).
pub fn testpmd(seconds: u32, lcores: &str, prefix: &str) -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["-s", "INT", &seconds.to_string(), "dpdk-testpmd"])
        .args(["--lcores", lcores, "--no-pci", "--in-memory"])
        .args([
            "--single-file-segments",
            "--file-prefix",
            prefix,
            "-m",
            "256",
        ]);
    command
}

/// Runs dpdk-testpmd as a DPDK container on two virtio-user ports at `sock0` and
/// `sock1` (as socket servers when `server`, else connecting to tenetd's), in io
/// forwarding started with a burst, for `seconds`; returns what each port received.
pub fn testpmd_virtio_pair(sock0: &Path, sock1: &Path, server: bool, seconds: u32) -> Vec<u64> {
    let prefix = unique("tpmd");
    let mode = if server { ",server=1" } else { "" };
    let out = testpmd(seconds, "0@0,1@0", &prefix)
        .arg(format!(
            "--vdev=net_virtio_user0,path={},queues=1{mode}",
            sock0.display()
        ))
        .arg(format!(
            "--vdev=net_virtio_user1,path={},queues=1{mode}",
            sock1.display()
        ))
        .args([
            "--",
            "--forward-mode=io",
            "--auto-start",
            "--tx-first",
            "--stats-period",
            "1",
        ])
        .args(["--nb-cores=1", "--total-num-mbufs=8192"])
        .stdin(Stdio::null())
        .output()
        .expect("dpdk-testpmd runs");
    remove_dpdk_runtime(&prefix);
    // testpmd's final "Forward statistics for port N" blocks: RX-packets per port.
    String::from_utf8_lossy(&out.stdout)
        .split("Forward statistics for port")
        .skip(1)
        .filter_map(|block| {
            block
                .split("RX-packets:")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}
