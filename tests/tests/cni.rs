//! tenet-cni as a container runtime drives it: ADD, CHECK and DEL with the `CNI_*`
//! environment and the network config on stdin, into namespaces made by `ip netns` as
//! the CNI test tools make them, against a running tenetd; conformance of results and
//! errors, no leftovers after failures, delegated IPAM, churn, and a DPDK container on
//! vhost-user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tests::{binary, iperf3_bits, tenetctl_ok, unique, wait_for_ping, Netns, TempDir, Tenetd};

/// A tenetd with tenants `red` and `blue`, both on 10.20.0.0/24 (tenants may overlap).
struct Switch {
    tenetd: Option<Tenetd>,
    config: String,
    dir: TempDir,
}

impl Switch {
    fn start() -> Self {
        let dir = TempDir::new("cni").unwrap();
        let config = format!(
            r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256

[[tenant]]
name = "red"
id = 100
subnets = ["10.20.0.1/24", "10.21.0.1/24"]

[[tenant]]
name = "blue"
id = 200
subnets = ["10.20.0.1/24"]

[[port]]
name = "spare"
backend = "null"

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/state.json"
"#,
            prefix = unique("cni"),
            dir = dir.path().display()
        );
        let tenetd = Some(Tenetd::serving(None, &config).unwrap());
        Self {
            tenetd,
            config,
            dir,
        }
    }

    /// Stops tenetd (its state kept) until [`Switch::resume`].
    fn pause(&mut self) {
        let stopped = self.tenetd.take().expect("running").stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }

    fn resume(&mut self) {
        self.tenetd = Some(Tenetd::serving(None, &self.config).unwrap());
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tenetd.sock")
    }

    /// The network config of `tenant` (own IPAM under the switch's directory).
    fn net(&self, name: &str, tenant: &str) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": name,
            "type": "tenet",
            "tenant": tenant,
            "socket": self.socket(),
            "dataDir": self.dir.path().join("ipam"),
            "logFile": self.log_file(),
        })
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("cni.log")
    }

    fn ports(&self) -> Vec<String> {
        tests::port_names(&self.socket())
    }

    fn endpoints(&self) -> Vec<Value> {
        let out = tenetctl_ok(&self.socket(), &["--json", "endpoint", "list"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The addresses tenetd has claimed for the containers of `network`.
    fn addresses_held(&self, network: &str) -> usize {
        let answer = tests::http(&self.socket(), "GET", "/v1/addresses", "");
        assert!(answer.ok(), "{}", answer.body);
        let ours = format!("cni:{network}:");
        answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["owner"].as_str().is_some_and(|o| o.starts_with(&ours)))
            .count()
    }
}

/// What the plugin answered: success, and its JSON (result or error object).
fn cni(command: &str, container: &str, ns: Option<&Netns>, conf: &Value) -> (bool, Value) {
    cni_env(command, &[("CNI_CONTAINERID", container)], ns, conf)
}

fn cni_env(
    command: &str,
    vars: &[(&str, &str)],
    ns: Option<&Netns>,
    conf: &Value,
) -> (bool, Value) {
    let mut cmd = Command::new(binary("tenet-cni"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
        .envs(vars.iter().copied());
    if let Some(ns) = ns {
        cmd.env("CNI_NETNS", format!("/var/run/netns/{}", ns.name()));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenet-cni runs");
    use std::io::Write;
    // The plugin may refuse before it reads its config (a bad environment): a closed
    // pipe is its answer, not the test's failure.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (out.status.success(), value)
}

/// The address a result gives the container, without its prefix length (checked to
/// be on red's and blue's subnet, not its gateway).
fn address_of(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    let (ip, prefix) = cidr.split_once('/').unwrap();
    assert_eq!(prefix, "24");
    assert!(ip.starts_with("10.20.0.") && ip != "10.20.0.1", "{cidr}");
    ip.to_owned()
}

fn add(conf: &Value, container: &str, ns: &Netns) -> Value {
    let (ok, result) = cni("ADD", container, Some(ns), conf);
    assert!(ok, "ADD {container} failed: {result}");
    result
}

/// The host end tenet-cni makes for `container`'s eth0, if it exists (other tests
/// make theirs at the same time).
fn host_link(container: &str) -> Option<String> {
    let env = control::cni::Env {
        container_id: container.to_owned(),
        ifname: "eth0".to_owned(),
        ..Default::default()
    };
    let name = control::cni::port_name(&env);
    Path::new("/sys/class/net")
        .join(&name)
        .exists()
        .then_some(name)
}

#[test]
fn add_check_del_is_a_full_round_trip() {
    let sw = Switch::start();
    let red = sw.net("red-net", "red");
    let blue = sw.net("blue-net", "blue");
    let (a, b, c) = (
        Netns::new("ca").unwrap(),
        Netns::new("cb").unwrap(),
        Netns::new("cc").unwrap(),
    );
    let (ida, idb, idc) = (unique("ctr-a"), unique("ctr-b"), unique("ctr-c"));

    let ra = add(&red, &ida, &a);
    assert_eq!(ra["cniVersion"], "1.0.0");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][1]["sandbox"],
        format!("/var/run/netns/{}", a.name())
    );
    let ip_a = address_of(&ra);
    assert_eq!(ra["ips"][0]["gateway"], "10.20.0.1");
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(
        ra["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.20.0.1"})
    );
    let rb = add(&red, &idb, &b);
    let ip_b = address_of(&rb);
    assert_ne!(ip_a, ip_b);
    // Blue's own pool: the same addresses, another tenant; blue's container takes
    // red's b's address, asked for as a static one.
    let static_b = json!({"runtimeConfig": {"ips": [format!("{ip_b}/24")]}});
    let mut blue_at_b = blue.clone();
    blue_at_b
        .as_object_mut()
        .unwrap()
        .extend(static_b.as_object().unwrap().clone());
    let rc = add(&blue_at_b, &idc, &c);
    assert_eq!(address_of(&rc), ip_b);
    // Red's a's address is taken in red: a static request for it is refused, naming
    // the address, and leaves nothing behind.
    let late = Netns::new("cl").unwrap();
    let mut red_at_a = red.clone();
    red_at_a.as_object_mut().unwrap().extend(
        json!({"args": {"cni": {"ips": [ip_a]}}})
            .as_object()
            .unwrap()
            .clone(),
    );
    let (ok, err) = cni("ADD", &unique("late"), Some(&late), &red_at_a);
    assert!(!ok);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("ip: {ip_a} is already claimed")),
        "{err}"
    );
    assert_eq!(sw.addresses_held("red-net"), 2);

    // The container is configured as the result says, and reaches its tenant.
    let route = a.exec("ip", &["route"]).unwrap();
    assert!(route.contains("default via 10.20.0.1 dev eth0"), "{route}");
    wait_for_ping(&a, &ip_b);
    wait_for_ping(&a, "10.20.0.1");
    // On its af-packet port the container keeps what a bridge would leave it: TCP
    // segments of up to 64 KiB (one large buffer's worth) and checksums handed over.
    let features = a.exec("ethtool", &["-k", "eth0"]).unwrap();
    for wanted in [
        "tx-checksum-ip-generic: on",
        "tx-tcp-segmentation: on",
        "tx-tcp6-segmentation: off",
        "tx-udp-segmentation: off",
    ] {
        assert!(features.contains(wanted), "{wanted}: {features}");
    }
    let link = a.exec("ip", &["-d", "link", "show", "eth0"]).unwrap();
    assert!(link.contains("gso_max_size 65000"), "{link}");
    let bits = iperf3_bits(&a, &b, &ip_b, 1);
    assert!(bits > 1e8, "TCP between the containers at {bits} bit/s");
    // A container sending from an address it was not given: port security drops it at
    // its port, and the drop is counted for that port and its tenant.
    let spoof = (2..255)
        .map(|h| format!("10.20.0.{h}"))
        .find(|ip| *ip != ip_a && *ip != ip_b)
        .unwrap();
    a.exec(
        "ip",
        &["addr", "add", &format!("{spoof}/32"), "dev", "eth0"],
    )
    .unwrap();
    let _ = a.exec("ping", &["-c", "2", "-W", "1", "-I", &spoof, &ip_b]);
    let port_a = host_link(&ida).expect("a's port");
    let wanted = format!(
        "tenet_port_drops_total{{port=\"{port_a}\",tenant=\"red\",reason=\"port-security-ip\"}}"
    );
    let metrics = tests::http(&sw.socket(), "GET", "/metrics", "").text();
    assert!(metrics.contains(&wanted), "{wanted} in {metrics}");
    let ports = tests::http(&sw.socket(), "GET", "/v1/ports", "").body;
    let dropped = ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port_a.as_str())
        .map(|p| p["drops"]["port-security-ip"].as_u64().unwrap_or(0));
    assert!(dropped.is_some_and(|n| n > 0), "{ports}");
    a.exec(
        "ip",
        &["addr", "del", &format!("{spoof}/32"), "dev", "eth0"],
    )
    .unwrap();
    // Installed, not learned: the endpoints carry the containers' MACs and addresses.
    let mac_a = ra["interfaces"][1]["mac"].as_str().unwrap();
    assert!(sw
        .endpoints()
        .iter()
        .any(|e| e["mac"] == mac_a && e["ip"] == ip_a.as_str() && e["tenant"] == "red"));
    // Blue reaches nothing of red's, though the addresses are the same.
    assert!(c.exec("ping", &["-c", "2", "-W", "1", &ip_a]).is_err());

    let check = json!({"prevResult": ra}).as_object().unwrap().clone();
    let mut with_prev = red.clone();
    with_prev.as_object_mut().unwrap().extend(check);
    let (ok, err) = cni("CHECK", &ida, Some(&a), &with_prev);
    assert!(ok, "CHECK: {err}");

    let (ok, err) = cni("DEL", &ida, Some(&a), &red);
    assert!(ok, "DEL: {err}");
    assert!(
        a.exec("ip", &["link", "show", "eth0"]).is_err(),
        "eth0 gone"
    );
    assert_eq!(sw.addresses_held("red-net"), 1, "a's address given back");
    assert_eq!(sw.ports().len(), 3, "spare, b's and c's");
    let (ok, _) = cni("DEL", &ida, Some(&a), &red);
    assert!(ok, "a repeated DEL succeeds");
    let (ok, _) = cni("DEL", "never-added", None, &red);
    assert!(ok, "DEL of what was never added succeeds");
    let (ok, err) = cni("CHECK", &ida, Some(&a), &with_prev);
    assert!(!ok);
    assert_eq!(err["code"], 103, "{err}");

    for (id, ns, conf) in [(&idb, &b, &red), (&idc, &c, &blue)] {
        assert!(cni("DEL", id, Some(ns), conf).0);
    }
    assert_eq!(sw.ports(), ["spare"]);
    assert!(sw.endpoints().is_empty());
    for id in [&ida, &idb, &idc] {
        assert_eq!(host_link(id), None);
    }
    drop(sw.tenetd);
}

#[test]
fn bad_requests_are_refused_with_cni_errors_and_leave_nothing() {
    let sw = Switch::start();
    let ns = Netns::new("cx").unwrap();
    let id = unique("ctr-x");

    let (ok, e) = cni("VERSION", &id, None, &json!({}));
    assert!(
        ok && e["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0"))
    );

    let (ok, e) = cni("ADD", &id, Some(&ns), &sw.net("x-net", "green"));
    assert!(!ok);
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(7), Some("1.0.0"))
    );
    assert!(e["msg"].as_str().unwrap().contains("green"), "{e}");

    let mut no_tenant = sw.net("x-net", "red");
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let (_, e) = cni("ADD", &id, Some(&ns), &no_tenant);
    assert_eq!(e["code"], 7);
    assert!(e["msg"].as_str().unwrap().starts_with("tenant"), "{e}");

    let mut old = sw.net("x-net", "red");
    old["cniVersion"] = json!("0.1.0");
    assert_eq!(cni("ADD", &id, Some(&ns), &old).1["code"], 1);
    let mut tap = sw.net("x-net", "red");
    tap["backend"] = json!("tap");
    assert_eq!(cni("ADD", &id, Some(&ns), &tap).1["code"], 7);
    let (_, e) = cni_env("ADD", &[], Some(&ns), &sw.net("x-net", "red"));
    assert_eq!(e["code"], 4);
    assert!(
        e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{e}"
    );
    let (_, e) = cni("ADD", &id, Some(&ns), &json!("not a config"));
    assert!(matches!(e["code"].as_u64(), Some(6) | Some(7)), "{e}");
    let mut nowhere = sw.net("x-net", "red");
    nowhere["socket"] = json!("/tmp/no-tenetd-here.sock");
    assert_eq!(cni("ADD", &id, Some(&ns), &nowhere).1["code"], 11);

    // A namespace that is not there: the link fails after the address was taken.
    let gone = Command::new(binary("tenet-cni"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &id)
        .env("CNI_NETNS", "/var/run/netns/no-such-namespace")
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let gone = {
        let mut gone = gone;
        use std::io::Write;
        gone.stdin
            .take()
            .unwrap()
            .write_all(sw.net("x-net", "red").to_string().as_bytes())
            .unwrap();
        gone.wait_with_output().unwrap()
    };
    let e: Value = serde_json::from_slice(&gone.stdout).unwrap();
    assert_eq!(e["code"], 102, "{e}");

    // Nothing of any of them remains.
    assert_eq!(host_link(&id), None);
    assert_eq!(sw.ports(), ["spare"]);
    assert!(sw.endpoints().is_empty());
    assert_eq!(sw.addresses_held("x-net"), 0);
    assert!(ns.exec("ip", &["link", "show", "eth0"]).is_err());
}

#[test]
fn addresses_can_come_from_host_local() {
    let host_local = Path::new("/usr/lib/cni/host-local");
    assert!(
        host_local.exists(),
        "scripts/setup installs containernetworking-plugins"
    );
    let sw = Switch::start();
    let ns = Netns::new("ch").unwrap();
    let data = sw.dir.path().join("host-local");
    let mut conf = sw.net("hl-net", "red");
    conf["ipam"] = json!({
        "type": "host-local",
        "ranges": [[{"subnet": "10.21.0.0/24", "gateway": "10.21.0.1", "rangeStart": "10.21.0.50"}]],
        "dataDir": data,
    });
    let id = unique("ctr-h");
    let r = add(&conf, &id, &ns);
    assert_eq!(r["ips"][0]["address"], "10.21.0.50/24");
    assert!(
        data.join("hl-net").join("10.21.0.50").exists(),
        "host-local keeps it"
    );
    wait_for_ping(&ns, "10.21.0.1");
    assert!(cni("DEL", &id, Some(&ns), &conf).0);
    assert!(
        !data.join("hl-net").join("10.21.0.50").exists(),
        "host-local gave it back"
    );
    assert_eq!(sw.ports(), ["spare"]);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

#[test]
fn two_hundred_containers_come_and_go_without_leaks() {
    let sw = Switch::start();
    let red = sw.net("churn-net", "red");
    let ns = Netns::new("cch").unwrap();
    let mut rss = Vec::new();
    for i in 0..200 {
        let id = format!("churn-{i}");
        let r = add(&red, &id, &ns);
        assert!(
            r["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.20.0."),
            "{r}"
        );
        let (ok, e) = cni("DEL", &id, Some(&ns), &red);
        assert!(ok, "DEL {i}: {e}");
        if i == 19 || i == 199 {
            rss.push(rss_kib(sw.tenetd.as_ref().unwrap().pid()));
        }
    }
    assert_eq!(sw.ports(), ["spare"]);
    assert!(sw.endpoints().is_empty());
    assert_eq!(sw.addresses_held("churn-net"), 0);
    assert!((0..200).all(|i| host_link(&format!("churn-{i}")).is_none()));
    assert!(ns.exec("ip", &["link", "show", "eth0"]).is_err());
    // 180 more containers after the first 20 cost tenetd less than 8 MiB.
    let grown = rss[1].saturating_sub(rss[0]);
    assert!(
        grown < 8 * 1024,
        "tenetd grew {grown} KiB over 180 containers ({rss:?})"
    );
    eprintln!(
        "tenetd RSS after 20 containers {} KiB, after 200 {} KiB",
        rss[0], rss[1]
    );
}

#[test]
fn more_containers_than_dpdk_has_ports_attach_at_once() {
    // Debian's DPDK holds 32 devices: the first containers get AF_XDP ports (DPDK
    // devices); the rest fall back to af-packet, which tenet serves outside DPDK.
    const COUNT: usize = 50;
    let sw = Switch::start();
    let mut red = sw.net("many-net", "red");
    red["backend"] = json!("af-xdp");
    let containers: Vec<(String, Netns)> = (0..COUNT)
        .map(|i| (unique(&format!("many-{i}")), Netns::new("cm").unwrap()))
        .collect();
    let addresses: Vec<String> = containers
        .iter()
        .map(|(id, ns)| {
            let r = add(&red, id, ns);
            let cidr = r["ips"][0]["address"].as_str().unwrap();
            cidr.split('/').next().unwrap().to_owned()
        })
        .collect();
    let out = tenetctl_ok(&sw.socket(), &["--json", "port", "list"]);
    let ports: Value = serde_json::from_str(&out).unwrap();
    let backends: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != "spare")
        .map(|p| p["backend"].as_str().unwrap())
        .collect();
    assert_eq!(backends.len(), COUNT, "{ports}");
    assert!(backends.contains(&"af-xdp"), "{backends:?}");
    assert!(
        backends.iter().filter(|b| **b == "af-packet").count() >= COUNT - 31,
        "{backends:?}"
    );
    // The first and the last containers, and every tenth, reach each other.
    let first = &containers[0].1;
    let last = &containers[COUNT - 1].1;
    wait_for_ping(first, &addresses[COUNT - 1]);
    wait_for_ping(last, &addresses[0]);
    for i in (10..COUNT).step_by(10) {
        wait_for_ping(&containers[i].1, &addresses[i - 1]);
    }
    for (id, ns) in &containers {
        let (ok, e) = cni("DEL", id, Some(ns), &red);
        assert!(ok, "DEL {id}: {e}");
    }
    assert_eq!(sw.ports(), ["spare"]);
    assert!(sw.endpoints().is_empty());
    assert_eq!(sw.addresses_held("many-net"), 0);
}

#[test]
fn a_dpdk_container_joins_through_vhost_user() {
    let sw = Switch::start();
    let mut fast = sw.net("fast-net", "red");
    fast["backend"] = json!("vhost-user");
    fast["vhostDir"] = json!(sw.dir.path().join("vhost"));
    let dpdk_ns = Netns::new("cv").unwrap();
    let id = unique("ctr-v");
    let r = add(&fast, &id, &dpdk_ns);
    let socket = PathBuf::from(r["interfaces"][0]["socketPath"].as_str().unwrap());
    assert!(socket.exists(), "tenetd serves {}", socket.display());
    let mac = r["interfaces"][0]["mac"].as_str().unwrap().to_owned();
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    // The DPDK container: testpmd answering ARP and ping as the address CNI gave it.
    let prefix = unique("tpv");
    let mut testpmd = tests::testpmd(20, "0@0,1@1", &prefix)
        .arg(format!(
            "--vdev=net_virtio_user0,path={},queues=1,mac={mac}",
            socket.display()
        ))
        .args([
            "--",
            "--forward-mode=icmpecho",
            "--auto-start",
            "--stats-period",
            "1",
            "--nb-cores=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let veth_ns = Netns::new("cw").unwrap();
    add(&sw.net("red-net", "red"), &unique("ctr-w"), &veth_ns);
    wait_for_ping(&veth_ns, &ip);
    let _ = Command::new("kill")
        .args(["-INT", &testpmd.id().to_string()])
        .status();
    let _ = testpmd.wait();
    tests::remove_dpdk_runtime(&prefix);

    assert!(cni("DEL", &id, Some(&dpdk_ns), &fast).0);
    assert!(!socket.exists(), "the socket went with the port");
    assert_eq!(
        sw.ports().len(),
        2,
        "the spare port and the veth container's are left"
    );
}

/// The network config of `sw`'s `tenant` at CNI 1.1.
fn net_1_1(sw: &Switch, name: &str, tenant: &str) -> Value {
    let mut conf = sw.net(name, tenant);
    conf["cniVersion"] = json!("1.1.0");
    conf
}

fn network_call(command: &str, conf: &Value) -> (bool, Value) {
    cni_env(command, &[], None, conf)
}

/// CNI 1.1 as a runtime drives it: VERSION lists 1.1.0, STATUS says the network can
/// take an ADD, a retried ADD replaces what the first left (same address), CHECK
/// passes, GC detaches the containers the runtime no longer lists and keeps the rest,
/// and the tenant may come per container from `CNI_ARGS` or `args.cni`.
#[test]
fn cni_1_1_status_gc_retried_add_and_tenant_per_container() {
    let sw = Switch::start();
    let red = net_1_1(&sw, "red11", "red");
    let (ok, version) = network_call("VERSION", &red);
    assert!(
        ok && version["supportedVersions"].to_string().contains("1.1.0"),
        "{version}"
    );
    let (ok, status) = network_call("STATUS", &red);
    assert!(ok, "STATUS: {status}");
    let (ok, status) = network_call("STATUS", &net_1_1(&sw, "green11", "green"));
    assert!(!ok);
    assert_eq!(
        status["code"], 50,
        "no such tenant: not available: {status}"
    );

    let (a, b) = (Netns::new("ga").unwrap(), Netns::new("gb").unwrap());
    let (ida, idb) = (unique("gc-a"), unique("gc-b"));
    let first = add(&red, &ida, &a);
    assert_eq!(first["cniVersion"], "1.1.0");
    let again = add(&red, &ida, &a);
    assert_eq!(
        again["ips"], first["ips"],
        "a retried ADD keeps the address"
    );
    assert_ne!(
        again["interfaces"][1]["mac"], first["interfaces"][1]["mac"],
        "a fresh link"
    );
    let mut with_prev = red.clone();
    with_prev["prevResult"] = again.clone();
    let (ok, err) = cni("CHECK", &ida, Some(&a), &with_prev);
    assert!(ok, "CHECK after a retried ADD: {err}");
    add(&red, &idb, &b);
    assert_eq!(
        sw.ports().len(),
        3,
        "spare and one port each: {:?}",
        sw.ports()
    );
    wait_for_ping(&a, "10.20.0.1");

    let mut gc = red.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": idb, "ifname": "eth0"}]);
    let (ok, err) = network_call("GC", &gc);
    assert!(ok, "GC: {err}");
    assert_eq!(host_link(&ida), None, "a's link collected");
    assert!(host_link(&idb).is_some(), "b's kept");
    assert_eq!(sw.ports().len(), 2, "a's port collected: {:?}", sw.ports());
    assert_eq!(sw.addresses_held("red11"), 1, "a's address given back");
    let (ok, err) = cni("CHECK", &idb, Some(&b), &red);
    assert!(ok, "b untouched: {err}");
    assert!(cni("DEL", &idb, Some(&b), &red).0);

    // The tenant per container: blue, though the network says red.
    let (c, d) = (Netns::new("gc").unwrap(), Netns::new("gd").unwrap());
    let (idc, idd) = (unique("gc-c"), unique("gc-d"));
    let (ok, result) = cni_env(
        "ADD",
        &[
            ("CNI_CONTAINERID", &idc),
            ("CNI_ARGS", "IgnoreUnknown=1;TENET_TENANT=blue"),
        ],
        Some(&c),
        &red,
    );
    assert!(ok, "ADD with CNI_ARGS: {result}");
    let mut by_args = red.clone();
    by_args["args"] = json!({"cni": {"tenant": "blue"}});
    let rd = add(&by_args, &idd, &d);
    let blue_macs: Vec<Value> = sw
        .endpoints()
        .into_iter()
        .filter(|e| e["tenant"] == "blue")
        .map(|e| e["mac"].clone())
        .collect();
    assert_eq!(blue_macs.len(), 2, "both in blue: {:?}", sw.endpoints());
    let d_address = rd["ips"][0]["address"].as_str().unwrap();
    assert_ne!(result["ips"][0]["address"], d_address);
    wait_for_ping(&c, d_address.split('/').next().unwrap());
    assert!(
        cni_env(
            "DEL",
            &[("CNI_CONTAINERID", &idc), ("CNI_ARGS", "TENET_TENANT=blue")],
            Some(&c),
            &red
        )
        .0
    );
    assert!(cni("DEL", &idd, Some(&d), &by_args).0);
    assert_eq!(sw.ports(), ["spare"]);
    assert!(sw.endpoints().is_empty());

    // A result before 1.0.0 names each address's version.
    let mut old = red.clone();
    old["cniVersion"] = json!("0.4.0");
    let e = Netns::new("ge").unwrap();
    let ide = unique("gc-e");
    let result = add(&old, &ide, &e);
    assert_eq!(result["cniVersion"], "0.4.0");
    assert_eq!(result["ips"][0]["version"], "4", "{result}");
    assert!(cni("DEL", &ide, Some(&e), &old).0);

    // Every call is in the log file, refusals with their code.
    let log = std::fs::read_to_string(sw.log_file()).unwrap();
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("command=ADD")
            && l.contains(&format!("container={ide}"))
            && l.contains("address=")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("command=STATUS") && l.contains("code=50")),
        "{log}"
    );
}

/// A pod's teardown never waits for the switch: DEL with tenetd down succeeds at once
/// (link and address gone), STATUS says the network is unavailable meanwhile, and the
/// port tenetd kept across its restart is detached by the next call that reaches it.
#[test]
fn del_succeeds_while_tenetd_is_down_and_the_port_goes_when_it_is_back() {
    let mut sw = Switch::start();
    let red = net_1_1(&sw, "red-down", "red");
    let (a, b) = (Netns::new("da").unwrap(), Netns::new("db").unwrap());
    let (ida, idb) = (unique("down-a"), unique("down-b"));
    add(&red, &ida, &a);
    let port = host_link(&ida).expect("a's link");
    sw.pause();
    let (ok, status) = network_call("STATUS", &red);
    assert!(!ok);
    assert_eq!(status["code"], 50, "{status}");
    let (ok, err) = cni("DEL", &ida, Some(&a), &red);
    assert!(ok, "DEL with tenetd down: {err}");
    assert_eq!(host_link(&ida), None, "the link went at once");
    sw.resume();
    assert_eq!(sw.addresses_held("red-down"), 1, "tenetd kept the claim");
    assert!(
        sw.ports().contains(&port),
        "tenetd kept the port: {:?}",
        sw.ports()
    );
    add(&red, &idb, &b);
    assert!(
        !sw.ports().contains(&port),
        "detached by the next call: {:?}",
        sw.ports()
    );
    assert!(sw.endpoints().iter().all(|e| e["port"] != port.as_str()));
    assert_eq!(
        sw.addresses_held("red-down"),
        1,
        "a's address given back by the same call, b holds one"
    );
    assert!(cni("DEL", &idb, Some(&b), &red).0);
    assert_eq!(sw.ports(), ["spare"]);
}
