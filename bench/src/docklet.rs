//! `tenet-bench containers`: the Docklet experiments on this machine. Hosts are
//! network namespaces each running tenetd, joined by a veth underlay; containers are
//! namespaces attached by tenet-cni (run inside their host's namespace, as a kubelet
//! there would), addressed by host-local with a range per host; traffic is iperf3 TCP.
//!
//! - internal: one tenant, a container on each host, beside the same two namespaces
//!   joined by a plain veth and by a Linux bridge (Docker's default network);
//! - tenants: both designs (shared: VLAN per tenant, GRE star to the egress host,
//!   central gateways; dedicated: GRE key per tenant, gateways spread over the hosts)
//!   with N tenants, two containers each on different hosts, all pairs at once, the
//!   average bandwidth per tenant (the paper's Table 2);
//! - egress: a container downloading from an "outside" server through its gateway's
//!   SNAT, beside the host downloading from the same server over its own kernel link.
//!
//! The rig itself (namespaces, underlay, baselines) is set up with `ip`: it stands in
//! for machines and wires, and only the containers' attachment is tenet's.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::lab::{veth_between, Netns, TempDir};
use crate::process::Proc;

/// What to run.
pub struct Options {
    /// Tenant counts for the designs experiment.
    pub counts: Vec<usize>,
    /// Seconds each iperf3 runs.
    pub seconds: u32,
    /// Results directory.
    pub out: PathBuf,
    /// tenetd.
    pub tenetd: PathBuf,
    /// tenet-cni.
    pub cni: PathBuf,
    /// Where host-local is.
    pub cni_path: String,
    /// The containers' port backend as tenet-cni's config names it (`af-xdp` falls
    /// back to `af-packet` where AF_XDP or DPDK's port table gives out).
    pub backend: String,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Gbit/s per pair (the average over pairs running at once).
    pub gbps: f64,
    /// Pairs running at once.
    pub pairs: usize,
}

/// A design's result at one tenant count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DesignPoint {
    /// `shared` or `dedicated`.
    pub design: String,
    /// Tenants (pairs running at once).
    pub tenants: usize,
    /// Average Gbit/s per tenant.
    pub gbps_per_tenant: f64,
    /// The slowest tenant's.
    pub gbps_min: f64,
    /// All tenants' together.
    pub gbps_total: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Internal bandwidth: tenet across hosts, veth, Linux bridge.
    pub internal: Vec<Figure>,
    /// Both designs at each tenant count.
    pub designs: Vec<DesignPoint>,
    /// Egress: a container through its gateway, the host itself.
    pub egress: Vec<Figure>,
}

/// Runs iperf3 servers in each `(server, address)` and clients from the matching
/// `client` at once for `seconds`; returns each pair's received Gbit/s.
fn iperf_pairs(
    pairs: &[(&Netns, String, &Netns)],
    seconds: u32,
    reverse: bool,
) -> anyhow::Result<Vec<f64>> {
    /// Servers and clients still running are killed, also when a pair fails.
    struct Running(Vec<Child>);
    impl Drop for Running {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut servers = Running(Vec::new());
    for (i, (server, address, _)) in pairs.iter().enumerate() {
        servers.0.push(
            server
                .command("iperf3")
                .args(["-s", "-1", "-B", address, "-p", &(5201 + i).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut clients = Vec::new();
    for (i, (_, address, client)) in pairs.iter().enumerate() {
        let mut c = client.command("iperf3");
        c.args([
            "-c",
            address,
            "-p",
            &(5201 + i).to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        if reverse {
            c.arg("-R");
        }
        clients.push(c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?);
    }
    let outputs: Vec<_> = clients.into_iter().map(Child::wait_with_output).collect();
    let mut rates = Vec::new();
    for out in outputs {
        let v: Value = serde_json::from_slice(&out?.stdout).context("iperf3 JSON")?;
        let bits = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("iperf3 failed: {}", v["error"]))?;
        rates.push(bits / 1e9);
    }
    drop(servers);
    Ok(rates)
}

fn average(rates: &[f64]) -> f64 {
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}

/// A host: its namespace, its end of the underlay, and its tenetd.
struct Host {
    ns: Netns,
    dir: TempDir,
    tenetd: Option<Proc>,
    /// The last byte of the first address its containers get (hosts do not overlap).
    first_address: u32,
}

impl Host {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("tenetd.sock")
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.tenetd.take() {
            p.stop();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// tenetd's config for host `me` of the two-host lab: `tenants` tenants with their
/// gateways central (shared) or alternating between hosts (dedicated).
fn lab_config(design: &str, me: &str, uplink: &str, tenants: usize, dir: &Path) -> String {
    let other = if me == "a" { "b" } else { "a" };
    // One host's worker on each CPU: two busy-polling workers sharing one CPU would
    // take turns by scheduler time slices.
    let core = if me == "a" { 0 } else { 1 };
    let mut t = format!(
        "[dataplane]\nworkers = [{core}]\nmain_core = {core}\nfile_prefix = \"tbd{me}{pid}\"\nmemory_mb = 256\nmbufs = 16383\n\n\
         [switch]\ndesign = \"{design}\"\nhost = \"{me}\"\n\n\
         [[host]]\nname = \"a\"\nunderlay_ip = \"192.168.77.1/24\"\n{egress}\n\n\
         [[host]]\nname = \"b\"\nunderlay_ip = \"192.168.77.2/24\"\n\n",
        pid = std::process::id() % 10_000,
        egress = if design == "shared" { "egress = true" } else { "" },
    );
    for i in 0..tenants {
        let gateway = match design {
            "shared" => "central",
            _ if i % 2 == 0 => "a",
            _ => "b",
        };
        t.push_str(&format!(
            "[[tenant]]\nname = \"t{i}\"\nid = {}\nvlan = {}\nhosts = [\"{other}\"]\nsubnets = [\"10.{}.{}.1/24\"]\ngateway_host = \"{gateway}\"\n\n",
            100 + i,
            100 + i,
            100 + i / 256,
            i % 256
        ));
    }
    t.push_str(&format!(
        "[[port]]\nname = \"underlay\"\nbackend = \"af-packet\"\ninterface = \"{uplink}\"\nrole = \"uplink\"\n\n\
         [control]\napi_socket = \"{0}/tenetd.sock\"\npersist = false\n",
        dir.display()
    ));
    t
}

fn start_tenetd(host: &mut Host, config: &str, options: &Options, log: &str) -> anyhow::Result<()> {
    let path = host.dir.path().join("tenetd.toml");
    std::fs::write(&path, config)?;
    let mut command = host.ns.command(&options.tenetd.to_string_lossy());
    command.arg("--config").arg(&path);
    let mut p = Proc::spawn("tenetd", command, &options.out.join("logs").join(log))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host.socket().exists() {
        if Instant::now() > deadline || !p.alive() {
            bail!("tenetd in {} did not start: see logs/{log}", host.ns.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    host.tenetd = Some(p);
    Ok(())
}

/// The two-host lab: namespaces, a jumbo underlay, tenetd on each.
fn lab(design: &str, tenants: usize, options: &Options) -> anyhow::Result<(Host, Host)> {
    let make = |tag: &str, first_address: u32| -> anyhow::Result<Host> {
        Ok(Host {
            ns: Netns::new(tag)?,
            dir: TempDir::new(&format!("docklet-{tag}"))?,
            tenetd: None,
            first_address,
        })
    };
    let (mut a, mut b) = (make("ha", 10)?, make("hb", 100)?);
    veth_between(&a.ns, "under", &b.ns, "under")?;
    for h in [&a, &b] {
        h.ns.ip(&["link", "set", "under", "mtu", "9000"])?;
        let _ =
            h.ns.exec("sysctl", &["-qw", "net.ipv6.conf.under.disable_ipv6=1"]);
    }
    let log = |me: &str| format!("{design}-{tenants}-{me}.tenetd.log");
    let config_a = lab_config(design, "a", "under", tenants, a.dir.path());
    let config_b = lab_config(design, "b", "under", tenants, b.dir.path());
    start_tenetd(&mut a, &config_a, options, &log("a"))?;
    start_tenetd(&mut b, &config_b, options, &log("b"))?;
    Ok((a, b))
}

/// A container of tenant `tenant` on `host`, attached by tenet-cni run in the host's
/// namespace; addresses from host-local, from .10 on host a and .100 on host b.
fn container(
    host: &Host,
    tenant: usize,
    tag: &str,
    options: &Options,
) -> anyhow::Result<(Netns, String)> {
    let ns = Netns::new(tag)?;
    let net = format!("10.{}.{}", 100 + tenant / 256, tenant % 256);
    let start = host.first_address;
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": format!("t{tenant}"),
        "type": "tenet",
        "tenant": format!("t{tenant}"),
        "socket": host.socket(),
        "backend": options.backend,
        "mtu": 1400,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": format!("{net}.0/24"), "gateway": format!("{net}.1"),
                         "rangeStart": format!("{net}.{start}"), "rangeEnd": format!("{net}.{}", start + 89)}]],
            "dataDir": host.dir.path().join("ipam"),
        },
    });
    let mut child = host
        .ns
        .command(&options.cni.to_string_lossy())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", ns.name())
        .env("CNI_NETNS", ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &options.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let result: Value =
        serde_json::from_slice(&out.stdout).context("tenet-cni answered no JSON")?;
    if !out.status.success() {
        bail!("tenet-cni ADD: {}", result["msg"]);
    }
    let address = result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .context("no address in the result")?
        .to_owned();
    Ok((ns, address))
}

/// Pings until `to` answers (learning and ARP across hosts take a moment).
fn reach(from: &Netns, to: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if from.exec("ping", &["-c", "1", "-W", "1", to]).is_ok() {
            return Ok(());
        }
    }
    bail!("{to} never answered a ping from {}", from.name())
}

/// Tenant pairs across the two hosts, all at once: per-tenant Gbit/s.
fn tenant_pairs(design: &str, tenants: usize, options: &Options) -> anyhow::Result<Vec<f64>> {
    let (a, b) = lab(design, tenants, options)?;
    let mut made = Vec::new();
    for t in 0..tenants {
        let (ca, _) = container(&a, t, &format!("a{t}"), options)?;
        let (cb, ib) = container(&b, t, &format!("b{t}"), options)?;
        made.push((ca, ib, cb));
    }
    for (ca, ib, _) in &made {
        reach(ca, ib)?;
    }
    let pairs: Vec<(&Netns, String, &Netns)> = made
        .iter()
        .map(|(ca, ib, cb)| (cb, ib.clone(), ca))
        .collect();
    let rates = iperf_pairs(&pairs, options.seconds, false)?;
    drop(made);
    drop((a, b));
    Ok(rates)
}

/// Two containers of one tenant on one host: tenet's ports alone, no tunnel between.
fn same_host_pair(options: &Options) -> anyhow::Result<f64> {
    let (a, b) = lab("dedicated", 1, options)?;
    let (client, _) = container(&a, 0, "a0", options)?;
    let (server, address) = container(&a, 0, "a1", options)?;
    reach(&client, &address)?;
    let rates = iperf_pairs(
        &[(&server, address.clone(), &client)],
        options.seconds,
        false,
    )?;
    drop((client, server));
    drop((a, b));
    Ok(rates[0])
}

/// The same two namespaces over a plain veth and over a Linux bridge.
fn kernel_baselines(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let (c1, c2) = (Netns::new("k1")?, Netns::new("k2")?);
    veth_between(&c1, "eth0", &c2, "eth0")?;
    c1.ip(&["addr", "add", "10.250.0.1/24", "dev", "eth0"])?;
    c2.ip(&["addr", "add", "10.250.0.2/24", "dev", "eth0"])?;
    let plain = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    drop((c1, c2));
    let (bridge, c1, c2) = (Netns::new("kb")?, Netns::new("k3")?, Netns::new("k4")?);
    bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
    bridge.ip(&["link", "set", "br0", "up"])?;
    veth_between(&c1, "eth0", &bridge, "p1")?;
    veth_between(&c2, "eth0", &bridge, "p2")?;
    for p in ["p1", "p2"] {
        bridge.ip(&["link", "set", p, "master", "br0"])?;
    }
    c1.ip(&["addr", "add", "10.250.0.1/24", "dev", "eth0"])?;
    c2.ip(&["addr", "add", "10.250.0.2/24", "dev", "eth0"])?;
    let bridged = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    // The same bridge frame by frame, as a switch outside the kernel sees the traffic:
    // no 64 KiB segments handed through (TSO/GSO off), the containers' MTU.
    for c in [&c1, &c2] {
        c.exec(
            "ethtool",
            &[
                "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ],
        )?;
        c.ip(&["link", "set", "eth0", "mtu", "1400"])?;
    }
    let framed = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    Ok(vec![
        Figure {
            what: "plain veth between the two namespaces".into(),
            gbps: plain[0],
            pairs: 1,
        },
        Figure {
            what: "Linux bridge (Docker's default)".into(),
            gbps: bridged[0],
            pairs: 1,
        },
        Figure {
            what: "Linux bridge, offloads off, MTU 1400".into(),
            gbps: framed[0],
            pairs: 1,
        },
    ])
}

/// A container downloading through its gateway's SNAT, and the host downloading over
/// its own kernel link, from one server outside.
fn egress(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let host_ns = Netns::new("eh")?;
    let inet = Netns::new("ei")?;
    let mut host = Host {
        ns: host_ns,
        dir: TempDir::new("docklet-egress")?,
        tenetd: None,
        first_address: 100,
    };
    veth_between(&host.ns, "uplink", &inet, "outside")?;
    veth_between(&host.ns, "own", &inet, "own")?;
    inet.ip(&["addr", "add", "198.18.0.254/24", "dev", "outside"])?;
    inet.ip(&["addr", "add", "198.19.0.254/24", "dev", "own"])?;
    inet.ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"])?;
    host.ns
        .ip(&["addr", "add", "198.19.0.1/24", "dev", "own"])?;
    host.ns
        .ip(&["route", "add", "203.0.113.10/32", "via", "198.19.0.254"])?;
    for (ns, dev) in [(&host.ns, "uplink"), (&inet, "outside")] {
        ns.ip(&["link", "set", dev, "mtu", "9000"])?;
        let _ = ns.exec(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
        );
    }
    // The outside stands in for a network behind a NIC, which fills in checksums; a
    // veth leaves them to a NIC that is not there.
    inet.exec("ethtool", &["-K", "outside", "tx", "off"])?;
    let config = format!(
        "[dataplane]\nworkers = [1]\nmain_core = 0\nfile_prefix = \"tbdeg{pid}\"\nmemory_mb = 256\nmbufs = 16383\n\n\
         [switch]\nhost = \"h\"\nunderlay_gateway = \"198.18.0.254\"\n\n\
         [[host]]\nname = \"h\"\nunderlay_ip = \"198.18.0.1/24\"\n\n\
         [[tenant]]\nname = \"t0\"\nid = 100\nsubnets = [\"10.100.0.1/24\"]\ngateway_host = \"h\"\n\n\
         [[port]]\nname = \"underlay\"\nbackend = \"af-packet\"\ninterface = \"uplink\"\nrole = \"uplink\"\n\n\
         [control]\napi_socket = \"{0}/tenetd.sock\"\npersist = false\n",
        host.dir.path().display(),
        pid = std::process::id() % 10_000
    );
    start_tenetd(&mut host, &config, options, "egress.tenetd.log")?;
    let (c, _) = container(&host, 0, "ec", options)?;
    reach(&c, "203.0.113.10")?;
    let server = "203.0.113.10".to_owned();
    let through = iperf_pairs(&[(&inet, server.clone(), &c)], options.seconds, true)?;
    let own = iperf_pairs(&[(&inet, server, &host.ns)], options.seconds, true)?;
    Ok(vec![
        Figure {
            what: "container through its gateway (SNAT)".into(),
            gbps: through[0],
            pairs: 1,
        },
        Figure {
            what: "the host over its own kernel link".into(),
            gbps: own[0],
            pairs: 1,
        },
    ])
}

/// Runs every experiment and writes `containers.json` and `containers.txt`.
pub fn run(options: &Options, command: String) -> anyhow::Result<Results> {
    std::fs::create_dir_all(options.out.join("logs"))?;
    let mut results = Results {
        command,
        ..Results::default()
    };
    for design in ["dedicated", "shared"] {
        eprintln!("tenet-bench containers: internal bandwidth, {design}");
        let rates = tenant_pairs(design, 1, options)?;
        results.internal.push(Figure {
            what: format!("tenet across two hosts, {design} design (GRE)"),
            gbps: rates[0],
            pairs: 1,
        });
    }
    eprintln!("tenet-bench containers: internal bandwidth, one host");
    results.internal.push(Figure {
        what: "tenet, two containers on one host".into(),
        gbps: same_host_pair(options)?,
        pairs: 1,
    });
    results.internal.extend(kernel_baselines(options)?);
    for &n in &options.counts {
        for design in ["shared", "dedicated"] {
            eprintln!("tenet-bench containers: {n} tenants, {design}");
            let rates = tenant_pairs(design, n, options)?;
            results.designs.push(DesignPoint {
                design: design.to_owned(),
                tenants: n,
                gbps_per_tenant: average(&rates),
                gbps_min: rates.iter().copied().fold(f64::MAX, f64::min),
                gbps_total: rates.iter().sum(),
            });
        }
    }
    eprintln!("tenet-bench containers: egress");
    results.egress = egress(options)?;
    std::fs::write(
        options.out.join("containers.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(options.out.join("containers.txt"), table(&results))?;
    Ok(results)
}

/// The results as text.
pub fn table(r: &Results) -> String {
    let mut t = format!(
        "# {}\n\nInternal TCP bandwidth between two containers of one tenant (iperf3):\n",
        r.command
    );
    for f in &r.internal {
        t.push_str(&format!("  {:<48} {:>7.2} Gbit/s\n", f.what, f.gbps));
    }
    t.push_str("\nAll tenants' pairs at once, average per tenant (Gbit/s; slowest; total):\n");
    t.push_str(&format!(
        "  {:>7}  {:>28}  {:>28}\n",
        "tenants", "shared (VLAN, GRE star)", "dedicated (GRE key)"
    ));
    let mut counts: Vec<usize> = r.designs.iter().map(|d| d.tenants).collect();
    counts.dedup();
    for n in counts {
        let cell = |design: &str| {
            r.designs
                .iter()
                .find(|d| d.tenants == n && d.design == design)
                .map_or("-".to_owned(), |d| {
                    format!(
                        "{:.2} ({:.2}; {:.2})",
                        d.gbps_per_tenant, d.gbps_min, d.gbps_total
                    )
                })
        };
        t.push_str(&format!(
            "  {n:>7}  {:>28}  {:>28}\n",
            cell("shared"),
            cell("dedicated")
        ));
    }
    t.push_str("\nDownload from an outside server:\n");
    for f in &r.egress {
        t.push_str(&format!("  {:<48} {:>7.2} Gbit/s\n", f.what, f.gbps));
    }
    t
}
