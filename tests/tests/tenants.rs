//! Two hosts (network namespaces each running tenetd) joined by a veth underlay, two
//! tenants with a container on each host, in both Docklet designs: real TCP between a
//! tenant's containers across hosts, and no frame crossing tenants, even though both
//! tenants use the same IP addresses. Host b runs two workers: the underlay's one RX
//! queue belongs to the first, which shares the GRE from host a with the second by
//! inner flow.

use std::path::Path;
use std::time::Duration;

use tests::{
    iperf3_bits, iperf3_streams, send_frames, tenetctl_ok, underlay, unique, wait_for_ping, Link,
    Netns, Receiver, TempDir, Tenetd,
};

struct Host {
    ns: Netns,
    uplink: String,
    red: Link,
    blue: Link,
    red_ns: Netns,
    blue_ns: Netns,
}

fn host(ns: Netns, uplink: String) -> Host {
    let red_ns = Netns::new("red-").unwrap();
    let blue_ns = Netns::new("blue-").unwrap();
    Host {
        red: Link::between(Some(&ns), &red_ns, None).unwrap(),
        blue: Link::between(Some(&ns), &blue_ns, None).unwrap(),
        ns,
        uplink,
        red_ns,
        blue_ns,
    }
}

fn config(design: &str, me: &str, h: &Host, api: &Path) -> String {
    let egress = |name: &str| {
        if design == "shared" && name == "a" {
            "egress = true"
        } else {
            ""
        }
    };
    let other = if me == "a" { "b" } else { "a" };
    // Ports go round-robin: red and the underlay to the first worker, blue to the second.
    let workers = if me == "b" {
        "[0, 1]\nspread_tunnels = true"
    } else {
        "[1]"
    };
    format!(
        r#"
[dataplane]
workers = {workers}
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[control]
api_socket = "{api}"

[switch]
design = "{design}"
host = "{me}"

[[host]]
name = "a"
underlay_ip = "192.168.77.1/24"
{ea}

[[host]]
name = "b"
underlay_ip = "192.168.77.2/24"
{eb}

[[tenant]]
name = "red"
id = 100
vlan = 100
hosts = ["{other}"]

[[tenant]]
name = "blue"
id = 200
vlan = 200
hosts = ["{other}"]

[[port]]
name = "red"
backend = "af-packet"
interface = "{red}"
role = "access"
tenant = "red"

[[port]]
name = "blue"
backend = "af-packet"
interface = "{blue}"
role = "access"
tenant = "blue"

[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"
"#,
        prefix = unique("tn"),
        ea = egress("a"),
        eb = egress("b"),
        red = h.red.host,
        blue = h.blue.host,
        uplink = h.uplink,
        api = api.display(),
    )
}

fn two_tenants_across_two_hosts(design: &str) {
    let (na, nb) = (Netns::new("ha-").unwrap(), Netns::new("hb-").unwrap());
    let (ua, ub) = underlay(&na, &nb).unwrap();
    let a = host(na, ua);
    let b = host(nb, ub);
    // Both tenants use the same addresses: only the switch keeps them apart.
    for h in [&a, &b] {
        let ip = if std::ptr::eq(h, &a) {
            "10.1.0.1/24"
        } else {
            "10.1.0.2/24"
        };
        for ns in [&h.red_ns, &h.blue_ns] {
            ns.exec("ip", &["addr", "add", ip, "dev", "eth0"]).unwrap();
            ns.exec("ip", &["link", "set", "eth0", "mtu", "1400"])
                .unwrap();
        }
    }
    let dir = TempDir::new("tn").unwrap();
    let (api_a, api_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    // Host a logs JSON (a log shipper's format), host b text; neither into a terminal.
    let mut ta = Tenetd::start_in(
        Some(&a.ns),
        &config(design, "a", &a, &api_a),
        &["--log-format", "json"],
    )
    .unwrap();
    let mut tb = Tenetd::start_in(Some(&b.ns), &config(design, "b", &b, &api_b), &[]).unwrap();
    ta.wait_ready(Duration::from_secs(30)).unwrap();
    tb.wait_ready(Duration::from_secs(30)).unwrap();

    wait_for_ping(&a.red_ns, "10.1.0.2");
    wait_for_ping(&a.blue_ns, "10.1.0.2");

    // Real TCP across the hosts, in each tenant.
    for (client, server) in [(&a.red_ns, &b.red_ns), (&b.blue_ns, &a.blue_ns)] {
        let bits = iperf3_bits(client, server, server_ip(server), 2);
        assert!(bits > 1e6, "{design}: TCP across hosts at {bits} bit/s");
    }

    // Many TCP connections from one peer host: one outer address pair, one RX queue
    // on b; the first worker hands the connections the second owns over its ring.
    let bits = iperf3_streams(&a.red_ns, &b.red_ns, server_ip(&b.red_ns), 2, 16);
    assert!(bits > 1e6, "{design}: 16 connections at {bits} bit/s");
    let stats: serde_json::Value =
        serde_json::from_str(&tenetctl_ok(&api_b, &["--json", "stats"])).unwrap();
    let cores = stats["cores"].as_array().unwrap();
    assert_eq!(cores.len(), 2, "{stats}");
    // Packets per connection vary too much to expect half of them: that half the
    // connections (their handshakes and teardowns alone) went over is what is sure.
    let spread = cores[0]["spread"].as_u64().unwrap();
    assert!(
        spread >= 16 && cores[1]["spread"] == 0,
        "{design}: the underlay's worker shares GRE by inner flow: {stats}"
    );
    assert_eq!(stats["drops"]["ring-full"], 0, "{stats}");
    // tenetctl's views by name: b's one tunnel leads to a, resolved, carrying both
    // tenants; red's container on a is learned behind host a.
    let tunnels = tenetctl_ok(&api_b, &["tunnel"]);
    assert!(
        tunnels.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words == ["a", "192.168.77.1", "resolved", "blue,red"]
        }),
        "{design}: {tunnels}"
    );
    let fdb = tenetctl_ok(&api_b, &["fdb", "--tenant", "red"]);
    assert!(
        fdb.lines()
            .any(|l| l.contains("learned") && l.contains("host a")),
        "{design}: {fdb}"
    );
    assert!(fdb.lines().skip(1).all(|l| l.starts_with("red ")), "{fdb}");

    // Isolation: broadcasts from red on host a reach red on b, never blue, also when
    // red forges blue's VLAN tag.
    let red_rx = Receiver::start(&b.red_ns, "eth0", 50, 0xbeef).unwrap();
    let blue_rx = Receiver::start(&b.blue_ns, "eth0", 1, 0xbeef).unwrap();
    let blue_rx_tagged = Receiver::start(&a.blue_ns, "eth0", 1, 0xbeef).unwrap();
    let bcast = "ff:ff:ff:ff:ff:ff";
    send_frames(&a.red_ns, "eth0", 50, 0xbeef, &a.red.mac, bcast, None).unwrap();
    send_frames(&a.red_ns, "eth0", 50, 0xbeef, &a.red.mac, bcast, Some(200)).unwrap();
    send_frames(&a.red_ns, "eth0", 50, 0xbeef, &a.red.mac, bcast, Some(100)).unwrap();
    assert_eq!(
        red_rx.collect(50, Duration::from_secs(5)).len(),
        50,
        "{design}: red to red"
    );
    assert!(
        blue_rx.collect(1, Duration::from_secs(2)).is_empty(),
        "{design}: red reached blue on b"
    );
    assert!(
        blue_rx_tagged.collect(1, Duration::from_secs(1)).is_empty(),
        "{design}: red reached blue on a"
    );

    let sa = ta.stop().unwrap();
    let sb = tb.stop().unwrap();
    assert!(
        sa.status.success() && sb.status.success(),
        "{}\n{}",
        sa.stderr,
        sb.stderr
    );
    assert!(
        sa.stdout.contains("drop tagged-on-access"),
        "tagged frames counted:\n{}",
        sa.stdout
    );
    // The underlay next hops were resolved by the switches' own ARP.
    assert!(
        sa.stderr.contains("underlay neighbour resolved"),
        "{}",
        sa.stderr
    );
    for line in sa.stderr.lines().filter(|l| !l.trim().is_empty()) {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{design}: a log line that is not JSON ({e}): {line}"));
        assert!(
            record["level"].is_string() && record["fields"].is_object(),
            "{line}"
        );
    }
    assert!(
        sb.stderr.contains("INFO") && !sb.stderr.contains('\u{1b}'),
        "{design}: colour codes in a log that goes to a pipe: {}",
        sb.stderr
    );
}

fn server_ip(ns: &Netns) -> &'static str {
    let out = ns
        .exec("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    if out.contains("10.1.0.1/") {
        "10.1.0.1"
    } else {
        "10.1.0.2"
    }
}

#[test]
fn dedicated_design_two_hosts_two_tenants() {
    two_tenants_across_two_hosts("dedicated");
}

#[test]
fn shared_design_two_hosts_two_tenants() {
    two_tenants_across_two_hosts("shared");
}
