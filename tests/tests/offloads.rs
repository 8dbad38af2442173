//! Containers hand tenet what their kernel hands Docker's bridge: TCP segments of up to
//! 64 KiB and checksums still owed (GSO, CHECKSUM_PARTIAL), through af-packet ports
//! with virtio-net headers. Between containers of one host the segments pass whole; to
//! another host they are cut to the underlay's frames inside the tunnel, and the
//! receiving host joins the frames of a train back into large segments (GRO) for its
//! container; what it cannot join reaches the container with checksums its kernel
//! verifies.

use std::time::Duration;

use serde_json::Value;
use tests::{
    iperf3_bits, offload_container_end, tenetctl_ok, underlay, unique, wait_for_ping, Link, Netns,
    TempDir, Tenetd,
};

/// A host namespace with its tenetd's directory and red containers.
struct Host {
    ns: Netns,
    uplink: String,
    dir: TempDir,
    containers: Vec<(Netns, Link)>,
}

impl Host {
    fn new(ns: Netns, uplink: String, addresses: &[&str]) -> Self {
        let containers = addresses
            .iter()
            .map(|address| {
                let container = Netns::new("oc-").unwrap();
                let link = Link::between(Some(&ns), &container, Some(address)).unwrap();
                offload_container_end(&container).unwrap();
                (container, link)
            })
            .collect();
        Self {
            ns,
            uplink,
            dir: TempDir::new("offloads").unwrap(),
            containers,
        }
    }

    fn config(&self, me: &str) -> String {
        let other = if me == "a" { "b" } else { "a" };
        let ports: String = self
            .containers
            .iter()
            .enumerate()
            .map(|(i, (_, link))| {
                format!(
                    "[[port]]\nname = \"c{i}\"\nbackend = \"af-packet\"\ninterface = \"{}\"\nrole = \"access\"\ntenant = \"red\"\n\n",
                    link.host
                )
            })
            .collect();
        format!(
            r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[switch]
design = "dedicated"
host = "{me}"

[[host]]
name = "a"
underlay_ip = "192.168.78.1/24"

[[host]]
name = "b"
underlay_ip = "192.168.78.2/24"

[[tenant]]
name = "red"
id = 100
hosts = ["{other}"]

{ports}
[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"

[control]
api_socket = "{dir}/tenetd.sock"
persist = false
"#,
            prefix = unique("off"),
            uplink = self.uplink,
            dir = self.dir.path().display(),
        )
    }

    /// The port `name`'s counters, as `tenetctl port list` shows them.
    fn port(&self, name: &str) -> Value {
        let socket = self.dir.path().join("tenetd.sock");
        let out = tenetctl_ok(&socket, &["--json", "port", "list"]);
        let ports: Value = serde_json::from_str(&out).unwrap();
        ports
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port {name}: {out}"))
    }
}

/// The kernel's count of TCP segments that failed their checksum in `ns`.
fn tcp_checksum_errors(ns: &Netns) -> u64 {
    let out = ns.exec("nstat", &["-az", "TcpInCsumErrors"]).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("TcpInCsumErrors"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nstat: {out}"))
}

#[test]
fn large_segments_pass_whole_between_containers_and_are_cut_for_the_tunnel() {
    let (na, nb) = (Netns::new("oa-").unwrap(), Netns::new("ob-").unwrap());
    let (ua, ub) = underlay(&na, &nb).unwrap();
    let a = Host::new(na, ua, &["10.1.0.1/24", "10.1.0.2/24"]);
    let b = Host::new(nb, ub, &["10.1.0.3/24"]);
    let mut ta = Tenetd::start_in(Some(&a.ns), &a.config("a"), &[]).unwrap();
    let mut tb = Tenetd::start_in(Some(&b.ns), &b.config("b"), &[]).unwrap();
    ta.wait_ready(Duration::from_secs(30)).unwrap();
    tb.wait_ready(Duration::from_secs(30)).unwrap();
    let (c0, c1, c2) = (&a.containers[0].0, &a.containers[1].0, &b.containers[0].0);
    wait_for_ping(c0, "10.1.0.2");
    wait_for_ping(c0, "10.1.0.3");

    // One host: the sender's 64 KiB segments reach the receiver whole.
    let bits = iperf3_bits(c0, c1, "10.1.0.2", 2);
    assert!(
        bits > 1e8,
        "TCP between containers of a host at {bits} bit/s"
    );
    let (sender, receiver) = (a.port("c0"), a.port("c1"));
    assert!(sender["rx_large"].as_u64().unwrap() > 0, "{sender}");
    assert!(receiver["tx_large"].as_u64().unwrap() > 0, "{receiver}");
    assert_eq!(sender["rx_errors"], 0, "{sender}");

    // Across hosts: cut into wire-size frames inside the tunnel, each with checksums the
    // receiving kernel checks (it takes them as plain frames, nothing owed).
    let errors_before = tcp_checksum_errors(c2);
    // Pings cross the same tunnel during the stream: frames of other flows between
    // the segments of a train must pass too.
    let pinger = c0
        .command("sh")
        .args(["-c", "sleep 0.7; ping -c 10 -i 0.1 -W 1 10.1.0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let bits = iperf3_bits(c0, c2, "10.1.0.3", 2);
    let pinged = pinger.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&pinged.stdout);
    assert!(
        said.contains(" 0% packet loss"),
        "pings during the stream: {said}"
    );
    assert!(
        bits > 1e7,
        "TCP across hosts at {bits} bit/s; a: {} {}; b: {} {}",
        a.port("underlay"),
        a.port("c0"),
        b.port("underlay"),
        b.port("c0")
    );
    assert_eq!(
        tcp_checksum_errors(c2),
        errors_before,
        "bad TCP checksums arrived"
    );
    let (uplink_a, uplink_b) = (a.port("underlay"), b.port("underlay"));
    assert!(uplink_a["tx_large"].as_u64().unwrap() > 0, "{uplink_a}");
    let count = |port: &Value, what: &str| port[what].as_u64().unwrap();
    assert!(
        count(&uplink_b, "rx_bytes")
            <= (count(&uplink_b, "mtu") + 14) * count(&uplink_b, "rx_packets"),
        "nothing larger than the underlay's MTU on the wire: {uplink_b}"
    );
    assert_eq!(uplink_b["rx_errors"], 0, "{uplink_b}");
    // The receiving host joins each train of frames back into a large segment, which
    // its container takes whole.
    let receiver = b.port("c0");
    assert!(count(&uplink_b, "rx_large") > 0, "{uplink_b}");
    assert!(count(&receiver, "tx_large") > 0, "{receiver}");
    eprintln!("across hosts at {bits} bit/s; b: {uplink_b} {receiver}");

    let (sa, sb) = (ta.stop().unwrap(), tb.stop().unwrap());
    assert!(
        sa.status.success() && sb.status.success(),
        "{}\n{}",
        sa.stderr,
        sb.stderr
    );
    for summary in [&sa.stdout, &sb.stdout] {
        assert!(!summary.contains("drop uncuttable"), "{summary}");
    }
    assert!(
        !sa.stderr.contains("PACKET_VNET_HDR refused"),
        "{}",
        sa.stderr
    );
}
