//! Hosts of one cluster as the Docklet design has them: network namespaces each running
//! tenetd, on one underlay (a bridge) and one management network where etcd runs. Only
//! the first host's config names the tenant; every container is attached and
//! registered through its own host's API; the others learn where it is from the
//! cluster's model and tunnel to it. A host joining later is reached the same way; a
//! host killed drops out when its lease runs out, and its gateways are placed again;
//! while etcd is away, traffic flows on and hosts converge when it is back; a gateway
//! moved through one host's API is followed by all. Gateways placed by traffic keep
//! off the host whose gateways send the most to the outside (a server address in the
//! fabric, behind the underlay's next hop).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tests::{
    tenant_add, tenetctl_ok, underlay_end, unique, wait_for_ping, Etcd, Link, Netns, TempDir,
    Tenetd,
};

/// The outside server, in the fabric behind the underlay's next hop.
const SERVER: &str = "203.0.113.10";

/// The underlay bridge with the next hop out (192.168.80.254) and the management
/// bridge (etcd at 10.99.0.1).
struct Fabric {
    ns: Netns,
}

impl Fabric {
    fn new() -> Self {
        let ns = Netns::new("fab").unwrap();
        let bridges = [
            ("br0", Some("192.168.80.254/24")),
            ("mg0", Some("10.99.0.1/24")),
        ];
        for (bridge, address) in bridges {
            ns.exec("ip", &["link", "add", bridge, "type", "bridge"])
                .unwrap();
            // A fixed MAC, as a router has: a bridge takes its lowest port's, which
            // changes as hosts join, and the hosts' resolved next hop would go stale.
            let mac = if bridge == "br0" {
                "02:fa:b0:00:00:01"
            } else {
                "02:fa:b0:00:00:02"
            };
            ns.exec("ip", &["link", "set", bridge, "address", mac])
                .unwrap();
            if let Some(address) = address {
                ns.exec("ip", &["addr", "add", address, "dev", bridge])
                    .unwrap();
            }
            ns.exec("ip", &["link", "set", bridge, "up"]).unwrap();
        }
        ns.exec("ip", &["link", "set", "lo", "up"]).unwrap();
        ns.exec("ip", &["addr", "add", &format!("{SERVER}/32"), "dev", "lo"])
            .unwrap();
        // The server's frames leave complete, as from a NIC: no checksum left for an
        // offload to fill in.
        ns.exec("ethtool", &["-K", "br0", "tx", "off"]).unwrap();
        Self { ns }
    }

    /// Plugs `ns` into `bridge` through a veth whose name there (returned) starts
    /// with `prefix`; that end is left down.
    fn plug(&self, ns: &Netns, bridge: &str, prefix: &str) -> String {
        let (near, far) = (unique(&format!("{prefix}h")), unique(&format!("{prefix}f")));
        tests::run(
            "ip",
            &["link", "add", &near, "type", "veth", "peer", "name", &far],
        )
        .unwrap();
        tests::run("ip", &["link", "set", &near, "netns", ns.name()]).unwrap();
        tests::run("ip", &["link", "set", &far, "netns", self.ns.name()]).unwrap();
        self.ns
            .exec("ip", &["link", "set", &far, "master", bridge, "up"])
            .unwrap();
        near
    }

    /// Links `host` to both bridges; returns its underlay interface. Its management
    /// address is 10.99.0.<10 + index>.
    fn attach(&self, host: &Netns, index: u8) -> String {
        let mut underlay = String::new();
        for bridge in ["br0", "mg0"] {
            let near = self.plug(host, bridge, "f");
            if bridge == "br0" {
                underlay_end(host, &near).unwrap();
                underlay = near;
            } else {
                let address = format!("10.99.0.{}/24", 10 + index);
                host.exec("ip", &["addr", "add", &address, "dev", &near])
                    .unwrap();
                host.exec("ip", &["link", "set", &near, "up"]).unwrap();
            }
        }
        underlay
    }
}

struct Host {
    name: String,
    ns: Netns,
    tenetd: Tenetd,
    socket: std::path::PathBuf,
    containers: Vec<(Netns, Link)>,
    _dir: TempDir,
}

const HOSTS: [&str; 4] = ["a", "b", "c", "d"];
/// Lease time of the hosts' registrations.
const LEASE_S: u64 = 2;

impl Host {
    /// Host `index` of [`HOSTS`], placing floating gateways by `placement` when it
    /// is the placer.
    fn start(fabric: &Fabric, etcd: &Etcd, index: u8, placement: &str) -> Self {
        let name = HOSTS[usize::from(index)].to_owned();
        let ns = Netns::new(&format!("h{name}-")).unwrap();
        let uplink = fabric.attach(&ns, index);
        let hosts: String = HOSTS
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[[host]]\nname = \"{h}\"\nunderlay_ip = \"192.168.80.{}/24\"\n\n",
                    i + 1
                )
            })
            .collect();
        // Only the first host seeds the tenant; the others take it from the cluster.
        let tenant = if index == 0 {
            "[[tenant]]\nname = \"red\"\nid = 100\n"
        } else {
            ""
        };
        let dir = TempDir::new(&format!("clh-{name}")).unwrap();
        let socket = dir.path().join("tenetd.sock");
        let prefix = unique(&format!("clh{name}"));
        let config = format!(
            r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 192
mbufs = 4095

[switch]
design = "dedicated"
host = "{name}"
underlay_gateway = "192.168.80.254"

{hosts}{tenant}
[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"

[control]
api_socket = "{socket}"
state_file = "{view}"
etcd = ["{url}"]
etcd_lease_s = {LEASE_S}
gateway_placement = "{placement}"
"#,
            prefix = prefix,
            socket = socket.display(),
            view = socket.with_file_name("view.json").display(),
            url = etcd.url(),
        );
        let tenetd = Tenetd::serving(Some(&ns), &config).unwrap();
        Self {
            name,
            ns,
            tenetd,
            socket,
            containers: Vec::new(),
            _dir: dir,
        }
    }

    /// A container of tenant red at 10.1.0.<number>, attached and registered here.
    fn container(&mut self, number: u8) {
        self.container_of("red", &format!("10.1.0.{number}"));
    }

    /// A container of `tenant` at `address` (/24), attached and registered here.
    fn container_of(&mut self, tenant: &str, address: &str) {
        let ctr = Netns::new(&format!("c{}-", self.name)).unwrap();
        let link = Link::between(Some(&self.ns), &ctr, Some(&format!("{address}/24"))).unwrap();
        ctr.exec("ip", &["link", "set", "eth0", "mtu", "1400"])
            .unwrap();
        let port = format!("{tenant}-{}", address.rsplit('.').next().unwrap());
        let attach = [
            "port",
            "add",
            &port,
            "--backend",
            "af-packet",
            "--interface",
            &link.host,
            "--role",
            "access",
            "--tenant",
            tenant,
        ];
        tenetctl_ok(&self.socket, &attach);
        let register = [
            "endpoint", "add", "--tenant", tenant, "--mac", &link.mac, "--port", &port, "--ip",
            address,
        ];
        tenetctl_ok(&self.socket, &register);
        self.containers.push((ctr, link));
    }
}

#[test]
fn containers_on_every_host_of_a_cluster_reach_each_other_and_a_new_host_joins() {
    let fabric = Fabric::new();
    let mut etcd = Etcd::start_in(&fabric.ns, "10.99.0.1").unwrap();
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| Host::start(&fabric, &etcd, i, "tenants"))
        .collect();
    for (i, host) in hosts.iter_mut().enumerate() {
        host.container(i as u8 + 1);
    }
    // Every pair, both ways round: each host tunnels to where the cluster says the
    // other containers are.
    for (i, from) in hosts.iter().enumerate() {
        for j in 0..hosts.len() {
            if i != j {
                wait_for_ping(&from.containers[0].0, &format!("10.1.0.{}", j + 1));
            }
        }
    }
    // The cluster knows each container at its host.
    let stored = etcd.get_prefix("/tenet/endpoints/red/").unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
    for (k, v) in &stored {
        assert!(v.contains("\"host\""), "{k}: {v}");
    }

    // A fourth host joins with nothing in its config but itself: it gets the tenant
    // and the others' containers, and they get its container.
    hosts.push(Host::start(&fabric, &etcd, 3, "tenants"));
    hosts[3].container(4);
    wait_for_ping(&hosts[3].containers[0].0, "10.1.0.1");
    wait_for_ping(&hosts[0].containers[0].0, "10.1.0.4");
    wait_for_ping(&hosts[2].containers[0].0, "10.1.0.4");

    // etcd goes away and comes back under load: a TCP stream from a's container to
    // b's runs throughout and no half second of it stalls, and a steady ping loses
    // nothing; forwarding goes on with the tables in force. Once etcd is back, a
    // change made through a reaches d.
    let _receiver = iperf_server(&hosts[1].containers[0].0, "10.1.0.2");
    // Capped, so the switches and etcd keep some of the two CPUs.
    let stream = hosts[0].containers[0]
        .0
        .command("iperf3")
        .args(["-c", "10.1.0.2", "-t", "6", "-i", "0.5", "-b", "200M", "-J"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    etcd.kill();
    let during = hosts[0].containers[0]
        .0
        .exec("ping", &["-c", "20", "-i", "0.1", "-W", "1", "10.1.0.2"])
        .expect("forwarding goes on without etcd");
    assert!(during.contains(" 0% packet loss"), "{during}");
    etcd.resume().unwrap();
    let report = stream.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let intervals: Vec<f64> = report["intervals"]
        .as_array()
        .expect("iperf3 intervals")
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap())
        .collect();
    assert!(intervals.len() >= 10, "{report}");
    assert!(
        intervals.iter().all(|bps| *bps > 1e6),
        "a stall while etcd was away or restarting: {intervals:?}"
    );
    tenetctl_ok(&hosts[0].socket, &["tenant", "add", "green", "--id", "300"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !tenetctl_ok(&hosts[3].socket, &["tenant", "list"]).contains("green") {
        assert!(
            std::time::Instant::now() < deadline,
            "d did not converge after etcd came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Tenant blue's gateway is pinned to c; a container of blue on a reaches it
    // through the tunnel to c.
    tenetctl_ok(
        &hosts[0].socket,
        &tenant_add("blue", 200, "10.2.0.1/24", "c"),
    );
    hosts[0].container_of("blue", "10.2.0.10");
    wait_for_ping(&hosts[0].containers[1].0, "10.2.0.1");

    // c is killed: when its lease runs out, the others drop it and place blue's
    // gateway again, on the host with the fewest gateways (a: none, first by name),
    // where the container reaches it again.
    let c = hosts.remove(2);
    let killed = std::time::Instant::now();
    tests::run("kill", &["-9", &c.tenetd.pid().to_string()]).unwrap();
    let blue_on_a = &hosts[0].containers[1].0;
    let mut back = None;
    while killed.elapsed() < Duration::from_secs(LEASE_S + 10) {
        if blue_on_a
            .exec("ping", &["-c", "1", "-W", "1", "10.2.0.1"])
            .is_ok()
        {
            back = Some(killed.elapsed());
            break;
        }
    }
    let back = back.expect("blue's gateway placed again after c's lease ran out");
    eprintln!("blue's gateway answered again {back:?} after c was killed (lease {LEASE_S} s)");
    assert!(back >= Duration::from_secs(LEASE_S) - Duration::from_millis(500));
    assert!(etcd.get_prefix("/tenet/alive/c").unwrap().is_empty());
    // The placer (a, first by name) recorded it, so it stays on a if c comes back
    // and as long as a lives.
    let recorded = etcd.get_prefix("/tenet/placed/").unwrap();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].1, "\"a\"", "{recorded:?}");
    // The other containers still reach each other.
    wait_for_ping(&hosts[0].containers[0].0, "10.1.0.2");
    wait_for_ping(&hosts[2].containers[0].0, "10.1.0.1");
    drop(c);

    // The gateway moved through another host's API: every host follows, and a sends
    // what its blue container addresses to the gateway through the tunnel to d.
    tenetctl_ok(
        &hosts[1].socket,
        &["tenant", "set", "blue", "--gateway-host", "d"],
    );
    let router = "027e000000c8"; // 02:7e and tenant id 200
    let src = hosts[0].containers[1].1.mac.replace(':', "");
    let frame = format!("{router}{src}08004500001400000000400100000a02000a0a020001");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let trace = tenetctl_ok(
            &hosts[0].socket,
            &["trace", "--port", "blue-10", "--frame", &frame],
        );
        if trace.contains("192.168.80.4") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not toward d:\n{trace}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_ping(&hosts[0].containers[1].0, "10.2.0.1");
    // Pinned to a living host, blue's gateway floats no more: its record goes.
    assert!(wait_until(|| etcd
        .get_prefix("/tenet/placed/")
        .unwrap()
        .is_empty()));

    for host in hosts {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

/// A process killed and reaped when dropped, even when a test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-test iperf3 server in `ns` on `address`, listening when this returns.
fn iperf_server(ns: &Netns, address: &str) -> Reaped {
    let server = ns
        .command("iperf3")
        .args(["-s", "-1", "-B", address])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    let listening = || {
        ns.exec("ss", &["-Hltn", &format!("src {address}:5201")])
            .is_ok_and(|out| out.contains("5201"))
    };
    assert!(
        wait_until(listening),
        "iperf3 is not listening on {address}"
    );
    server
}

/// Whether `done` came true within 10 s.
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The host a tenant's gateway runs on, as `host` reports it.
fn gateway_on(host: &Host, tenant: &str) -> serde_json::Value {
    let shown = tenetctl_ok(&host.socket, &["--json", "tenant", "show", tenant]);
    serde_json::from_str::<serde_json::Value>(&shown).unwrap()["gateway_on"].clone()
}

#[test]
fn gateways_placed_by_traffic_keep_off_the_host_that_sends_the_most() {
    let fabric = Fabric::new();
    let etcd = Etcd::start_in(&fabric.ns, "10.99.0.1").unwrap();
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| Host::start(&fabric, &etcd, i, "traffic"))
        .collect();
    // a holds two gateways, b one, c one: by count a new gateway would go to b.
    for (tenant, id, host) in [
        ("q1", 11, "a"),
        ("q2", 12, "a"),
        ("busy", 13, "b"),
        ("q3", 14, "c"),
    ] {
        let subnet = format!("10.{id}.0.1/24");
        tenetctl_ok(&hosts[2].socket, &tenant_add(tenant, id, &subnet, host));
    }
    // b's gateway sends 20 Mbit/s of UDP to the outside through SNAT.
    hosts[1].container_of("busy", "10.13.0.10");
    let sender = &hosts[1].containers[0].0;
    sender
        .exec("ip", &["route", "add", "default", "via", "10.13.0.1"])
        .unwrap();
    wait_for_ping(sender, SERVER);
    let _server = iperf_server(&fabric.ns, SERVER);
    let client = sender
        .command("iperf3")
        .args(["-c", SERVER, "-u", "-b", "20M", "-l", "1200", "-t", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Reaped)
        .unwrap();
    // b reports it: only b, and more than 10 Mbit/s once the rate has settled.
    let deadline = Instant::now() + Duration::from_secs(20);
    let reports = loop {
        let reports = etcd.get_prefix("/tenet-load/").unwrap();
        let busy = reports
            .iter()
            .find(|(k, _)| k.ends_with("/b"))
            .map(|(_, v)| {
                serde_json::from_str::<serde_json::Value>(v).unwrap()["egress_bps"]
                    .as_f64()
                    .unwrap()
            });
        if busy.is_some_and(|bps| bps > 10e6) {
            break reports;
        }
        if Instant::now() > deadline {
            let stats = tenetctl_ok(&hosts[1].socket, &["--json", "stats"]);
            panic!("b reported no traffic: {reports:?}\nb: {stats}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(reports.len(), 1, "idle hosts report nothing: {reports:?}");

    // A new tenant's gateway, placed through a's API: c (one quiet gateway), not b.
    tenetctl_ok(
        &hosts[0].socket,
        &tenant_add("fresh", 15, "10.15.0.1/24", "auto"),
    );
    assert!(
        wait_until(|| !etcd.get_prefix("/tenet/placed/fresh").unwrap().is_empty()),
        "the placer recorded no host for fresh"
    );
    assert_eq!(
        etcd.get_prefix("/tenet/placed/fresh").unwrap()[0].1,
        "\"c\""
    );
    for host in &hosts {
        assert!(
            wait_until(|| gateway_on(host, "fresh") == "c"),
            "{} sees fresh's gateway on {}",
            host.name,
            gateway_on(host, "fresh")
        );
    }
    // And it routes there: a container of fresh on a reaches its gateway on c.
    hosts[0].container_of("fresh", "10.15.0.10");
    wait_for_ping(&hosts[0].containers[0].0, "10.15.0.1");

    drop(client);
    for host in hosts {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

/// A container of the cluster churn test: its host, its tenant, what runs in it.
struct Churned {
    host: usize,
    tenant: usize,
    ns: Netns,
    link: Link,
    ip: String,
    port: Option<String>,
    pings: Vec<Reaped>,
    sniffer: Option<tests::sniff::Sniffer>,
}

const CHURN_TENANTS: [(&str, u32); 2] = [("red", 100), ("blue", 200)];

/// Runs tenetctl on `socket` until it succeeds (another host's change may take a
/// moment to arrive through etcd, and etcd is slow when the disk is busy) or 30 s
/// pass; whether it did.
fn eventually(
    socket: &std::path::Path,
    args: &[impl AsRef<std::ffi::OsStr> + std::fmt::Debug],
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = tests::tenetctl(socket, args);
        if out.status.success() {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!(
                "tenetctl {args:?} still refused after 30 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Churned {
    /// Attaches the container under its host's lowest free port name and registers it.
    fn attach(&mut self, hosts: &[Host], names: &mut [std::collections::BTreeSet<usize>]) {
        let taken = &mut names[self.host];
        let n = (0..).find(|n| !taken.contains(n)).unwrap();
        let name = format!("p{n}");
        let socket = &hosts[self.host].socket;
        let tenant = CHURN_TENANTS[self.tenant].0;
        let attach = [
            "port",
            "add",
            &name,
            "--backend",
            "af-packet",
            "--interface",
            &self.link.host,
            "--role",
            "access",
            "--tenant",
            tenant,
        ];
        if !eventually(socket, &attach) {
            return;
        }
        let register = [
            "endpoint",
            "add",
            "--tenant",
            tenant,
            "--mac",
            &self.link.mac,
            "--port",
            &name,
            "--ip",
            &self.ip,
        ];
        assert!(eventually(socket, &register), "registering {name}");
        taken.insert(n);
        self.port = Some(name);
    }

    fn detach(&mut self, hosts: &[Host], names: &mut [std::collections::BTreeSet<usize>]) {
        let Some(name) = self.port.take() else {
            return;
        };
        let socket = &hosts[self.host].socket;
        let tenant = CHURN_TENANTS[self.tenant].0;
        assert!(eventually(
            socket,
            &[
                "endpoint",
                "del",
                "--tenant",
                tenant,
                "--mac",
                &self.link.mac
            ]
        ));
        assert!(eventually(socket, &["port", "del", &name]));
        names[self.host].remove(&name[1..].parse::<usize>().unwrap());
    }
}

#[test]
fn a_minute_of_churn_across_three_hosts_never_lets_a_frame_cross_tenants() {
    use tests::sniff::{judge, mac_bytes, ping_marked, router_mac, Sniffer};
    let seconds: u64 = std::env::var("TENET_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut rng = std::process::id() as u64 * 0x9e37_79b9 + 7;
    eprintln!("cluster churn seed {rng}, {seconds} s");
    let mut next = |below: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % below as u64) as usize
    };
    let fabric = Fabric::new();
    let etcd = Etcd::start_in(&fabric.ns, "10.99.0.1").unwrap();
    let hosts: Vec<Host> = (0..3)
        .map(|i| Host::start(&fabric, &etcd, i, "tenants"))
        .collect();
    // Both tenants on one subnet, one gateway address, each gateway on its own host.
    let a = &hosts[0].socket;
    tenetctl_ok(a, &["tenant", "del", "red"]);
    for ((name, id), gateway) in CHURN_TENANTS.iter().zip(["a", "b"]) {
        tenetctl_ok(a, &tenant_add(name, *id, "10.1.0.1/24", gateway));
    }
    // A container of each tenant on each host, at the same address in both tenants.
    let mut names = vec![std::collections::BTreeSet::new(); hosts.len()];
    let mut containers: Vec<Churned> = Vec::new();
    for host in 0..hosts.len() {
        for (tenant, (name, _)) in CHURN_TENANTS.iter().enumerate() {
            let ns = Netns::new(&format!("k{name}{host}-")).unwrap();
            let ip = format!("10.1.0.{}", 11 + host);
            let link =
                Link::between(Some(&hosts[host].ns), &ns, Some(&format!("{ip}/24"))).unwrap();
            ns.exec("ip", &["link", "set", "eth0", "mtu", "1400"])
                .unwrap();
            ns.exec("ip", &["route", "add", "default", "via", "10.1.0.1"])
                .unwrap();
            let sniffer = Some(Sniffer::start(&ns));
            let mut c = Churned {
                host,
                tenant,
                ns,
                link,
                ip,
                port: None,
                pings: Vec::new(),
                sniffer,
            };
            c.attach(&hosts, &mut names);
            containers.push(c);
        }
    }
    for c in containers.iter_mut() {
        let peer = format!("10.1.0.{}", 11 + (c.host + 1) % hosts.len());
        c.pings
            .push(Reaped(ping_marked(&c.ns, c.tenant, &peer, "0.2")));
        c.pings
            .push(Reaped(ping_marked(&c.ns, c.tenant, SERVER, "0.3")));
    }

    let start = Instant::now();
    let (mut port_changes, mut moves, mut rebirths) = (0, 0, 0);
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200 + next(400) as u64));
        match next(20) {
            0..=11 => {
                let i = next(containers.len());
                if containers[i].port.is_some() {
                    containers[i].detach(&hosts, &mut names);
                } else {
                    containers[i].attach(&hosts, &mut names);
                }
                port_changes += 1;
            }
            12..=15 => {
                // A gateway moves, through any host's API.
                let tenant = CHURN_TENANTS[next(2)].0;
                let to = ["a", "b", "c", "auto"][next(4)];
                let via = &hosts[next(hosts.len())].socket;
                if eventually(via, &["tenant", "set", tenant, "--gateway-host", to]) {
                    moves += 1;
                }
            }
            16 => {
                // A tenant goes everywhere and comes back: a new tenant to every host.
                let t = next(2);
                for c in containers.iter_mut().filter(|c| c.tenant == t) {
                    c.detach(&hosts, &mut names);
                }
                let (name, id) = CHURN_TENANTS[t];
                assert!(eventually(a, &["tenant", "del", name]), "deleting {name}");
                let gateway = ["a", "b", "c"][next(3)];
                let add = tenant_add(name, id, "10.1.0.1/24", gateway);
                assert!(eventually(a, &add), "adding {name} again");
                for c in containers.iter_mut().filter(|c| c.tenant == t) {
                    c.attach(&hosts, &mut names);
                }
                rebirths += 1;
            }
            _ => {}
        }
    }
    for c in containers.iter_mut() {
        if c.port.is_none() {
            c.attach(&hosts, &mut names);
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    eprintln!("{port_changes} port changes, {moves} gateway moves, {rebirths} tenants deleted and re-created");

    let mut macs: Vec<Vec<[u8; 6]>> = CHURN_TENANTS
        .iter()
        .map(|(_, id)| vec![router_mac(*id)])
        .collect();
    for c in &containers {
        macs[c.tenant].push(mac_bytes(&c.link.mac));
    }
    for c in containers.iter_mut() {
        c.pings.clear();
        let frames = c.sniffer.take().unwrap().frames();
        let name = CHURN_TENANTS[c.tenant].0;
        let (inside, outside) = judge(&frames, c.tenant, 2, &macs[c.tenant], [203, 0, 113, 10])
            .unwrap_or_else(|leak| {
                panic!("{name} container {} on host {} got {leak}", c.ip, c.host)
            });
        eprintln!(
            "{name} {} on {}: {} frames, {inside} marked from inside, {outside} from outside",
            c.ip,
            HOSTS[c.host],
            frames.len()
        );
        assert!(inside > 10, "{name} {}: too little from its peer", c.ip);
        assert!(outside > 10, "{name} {}: too little from outside", c.ip);
    }
    for host in hosts {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

/// The MAC `host` answers to on the underlay.
fn uplink_mac(host: &Host) -> String {
    let ports: serde_json::Value =
        serde_json::from_str(&tenetctl_ok(&host.socket, &["--json", "port", "list"])).unwrap();
    ports
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "underlay")
        .and_then(|p| p["mac"].as_str())
        .unwrap()
        .to_owned()
}

#[test]
fn arp_in_another_hosts_name_does_not_move_a_tunnel() {
    let fabric = Fabric::new();
    let etcd = Etcd::start_in(&fabric.ns, "10.99.0.1").unwrap();
    let mut hosts: Vec<Host> = (0..2)
        .map(|i| Host::start(&fabric, &etcd, i, "tenants"))
        .collect();
    hosts[0].container(1);
    hosts[1].container(2);
    wait_for_ping(&hosts[0].containers[0].0, "10.1.0.2");
    let real = uplink_mac(&hosts[1]).replace(':', "");

    // A station on the underlay claims b's address: unasked replies and requests in
    // b's name (asking a, too), thousands a second, and an answer to every request for
    // b (a's refreshes every 30 s included).
    let attacker = Netns::new("atk-").unwrap();
    let near = fabric.plug(&attacker, "br0", "a");
    attacker.exec("ip", &["link", "set", &near, "up"]).unwrap();
    let poison = Reaped(
        attacker
            .command("python3")
            .arg(tests::frames_tool())
            .args([
                "poison",
                &near,
                "0",
                "--claim",
                "192.168.80.2",
                "--ask",
                "192.168.80.1",
            ])
            .args(["--src", "02:66:66:66:66:66", "--timeout", "40"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // What a would send b's container: its tunnel's next hop must stay b's MAC.
    let frame = format!(
        "{}{}08004500001400000000400100000a0100010a010002",
        hosts[1].containers[0].1.mac.replace(':', ""),
        hosts[0].containers[0].1.mac.replace(':', "")
    );
    let next_hop = || -> String {
        let trace: serde_json::Value = serde_json::from_str(&tenetctl_ok(
            &hosts[0].socket,
            &["--json", "trace", "--port", "red-1", "--frame", &frame],
        ))
        .unwrap();
        trace["outputs"][0]["frame"].as_str().unwrap_or_default()[..12].to_owned()
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(38) {
        assert_eq!(
            next_hop(),
            real,
            "a's tunnel to b moved after {:?}",
            started.elapsed()
        );
        hosts[0].containers[0]
            .0
            .exec("ping", &["-c", "1", "-W", "2", "10.1.0.2"])
            .expect("traffic to b goes on");
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(poison);
    let stats: serde_json::Value =
        serde_json::from_str(&tenetctl_ok(&hosts[0].socket, &["--json", "stats"])).unwrap();
    // Gratuitous ARP for someone else's address is not for this host (the dataplane
    // drops it); a request asking a in b's name is answered and teaches nothing; an
    // answer to a's own refresh in b's name is contested by b's and refused.
    let refused = stats["control"]["arp_refused"].as_u64().unwrap();
    let dropped = stats["drops"]["not-for-us"].as_u64().unwrap();
    let answered = stats["ports"][0]["tx_packets"].as_u64().unwrap();
    eprintln!("a dropped {dropped} forged ARP frames, answered {answered} requests in b's name and refused {refused} answers");
    assert!(dropped > 100 && answered > 100, "{stats}");
    for host in hosts {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}
