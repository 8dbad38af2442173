//! Isolation and soundness under change, on a real switch: two tenants with the same
//! subnet, gateway address and SNAT address; containers ping each other and a server
//! outside (through SNAT) all along, every packet marked with its tenant, while for a
//! minute their ports are detached and attached again (under names and port ids the
//! other tenant had a moment before), a tenant is deleted and created again, and the
//! gateways' SNAT address moves. A trunk carries both tenants (VLANs 10 and 20) to a
//! namespace that sends each tenant's marked frames, broadcast and to each container,
//! and sees what the containers flood (marked broadcast pings); its frames keep their
//! tag through the switch and have it rewritten or taken off at the output. A sniffer
//! in every container, and on the trunk, sees every frame that reaches it: none may be
//! the other tenant's, and on the trunk every frame carries its own tenant's tag. And a thousand hot attach/detach
//! cycles under flooding traffic on two workers leave the packet pool as it was.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use tests::sniff::{judge, mac_bytes, mark, ping_marked, router_mac, Sniffer};
use tests::{
    frames_tool, http, tenant_add, tenetctl, tenetctl_ok as ok, underlay, unique, Link, Netns,
    TempDir, Tenetd,
};

const SERVER: &str = "203.0.113.10";
const TENANTS: [(&str, u32); 2] = [("red", 100), ("blue", 200)];
const VLANS: [u16; 2] = [10, 20];

struct Container {
    tenant: usize,
    ns: Netns,
    link: Link,
    ip: String,
    port: Option<String>,
    pings: Vec<Child>,
    sniffer: Option<Sniffer>,
}

impl Container {
    fn new(host: &Netns, tenant: usize, ip: &str) -> Self {
        let ns = Netns::new(&format!("ch{}-", TENANTS[tenant].0)).unwrap();
        let link = Link::between(Some(host), &ns, Some(&format!("{ip}/24"))).unwrap();
        ns.exec("ip", &["route", "add", "default", "via", "10.1.0.1"])
            .unwrap();
        let sniffer = Some(Sniffer::start(&ns));
        Self {
            tenant,
            ns,
            link,
            ip: ip.to_owned(),
            port: None,
            pings: Vec::new(),
            sniffer,
        }
    }

    fn ping(&mut self, target: &str, interval: &str) {
        let child = ping_marked(&self.ns, self.tenant, target, interval);
        self.pings.push(child);
    }

    fn stop_pings(&mut self) {
        for mut ping in self.pings.drain(..) {
            let _ = ping.kill();
            let _ = ping.wait();
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.stop_pings();
    }
}

/// A small deterministic generator (the seed is printed, so a failing run can be
/// repeated).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % below as u64) as usize
    }
}

fn config(dir: &Path, uplink: &str, trunk: &str) -> String {
    format!(
        r#"
[dataplane]
workers = [0, 1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[switch]
host = "h"
underlay_gateway = "198.18.0.254"

[gateway]
snat_port_min = 20000
snat_port_max = 29999

[[host]]
name = "h"
underlay_ip = "198.18.0.1/24"

[[tenant]]
name = "red"
id = 100
vlan = 10
subnets = ["10.1.0.1/24"]
gateway_host = "h"

[[tenant]]
name = "blue"
id = 200
vlan = 20
subnets = ["10.1.0.1/24"]
gateway_host = "h"

[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"

[[port]]
name = "trunk"
backend = "af-packet"
interface = "{trunk}"
role = "trunk"
tenants = ["red", "blue"]

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/state.json"
"#,
        prefix = unique("churn"),
        dir = dir.display(),
    )
}

/// Attaches a container under the lowest port name no port has now: names (and the
/// port ids under them) go from one tenant to the other as containers come and go.
fn attach(socket: &Path, c: &mut Container, names: &mut BTreeSet<usize>) {
    let n = (0..).find(|n| !names.contains(n)).unwrap();
    let name = format!("p{n}");
    let out = tenetctl(
        socket,
        &[
            "port",
            "add",
            &name,
            "--backend",
            "af-packet",
            "--interface",
            &c.link.host,
            "--role",
            "access",
            "--tenant",
            TENANTS[c.tenant].0,
        ],
    );
    if out.status.success() {
        names.insert(n);
        c.port = Some(name);
    }
}

/// The trunk port again, carrying both tenants (after a tenant was re-created).
fn attach_trunk(socket: &Path, interface: &str) {
    ok(
        socket,
        &[
            "port",
            "add",
            "trunk",
            "--backend",
            "af-packet",
            "--interface",
            interface,
            "--role",
            "trunk",
            "--trunk-tenant",
            TENANTS[0].0,
            "--trunk-tenant",
            TENANTS[1].0,
        ],
    );
}

/// What the trunk received, judged: every frame tagged with one tenant's VLAN, none
/// with another tenant's mark or from another tenant's container or router. The
/// marked frames counted by tenant.
fn judge_trunk(frames: &[Vec<u8>], macs: &[Vec<[u8; 6]>; 2]) -> Result<[usize; 2], String> {
    let mut marked = [0; 2];
    for f in frames {
        if f.len() < 18 || f[12..14] != [0x81, 0x00] {
            return Err(format!("an untagged frame on the trunk: {f:02x?}"));
        }
        let vid = u16::from_be_bytes([f[14], f[15]]) & 0x0fff;
        let tenant = VLANS
            .iter()
            .position(|&v| v == vid)
            .ok_or_else(|| format!("VLAN {vid} on the trunk: {f:02x?}"))?;
        let other = 1 - tenant;
        if f.windows(4).any(|w| w == mark(other)) {
            return Err(format!("tenant {other}'s packet tagged {vid}: {f:02x?}"));
        }
        let src: [u8; 6] = f[6..12].try_into().unwrap();
        if macs[other].contains(&src) {
            return Err(format!(
                "tenant {other}'s {src:02x?} tagged {vid}: {f:02x?}"
            ));
        }
        if f.windows(4).any(|w| w == mark(tenant)) {
            marked[tenant] += 1;
        }
    }
    Ok(marked)
}

/// Frames from the trunk's side: `tenant`'s mark, on its VLAN, to `dst`, ten a second.
fn trunk_sender(ns: &Netns, tenant: usize, dst: &str, seconds: u64) -> Child {
    let tag = u32::from_be_bytes(mark(tenant)).to_string();
    let count = (seconds * 10 + 200).to_string();
    let src = format!("02:00:00:7a:00:{:02x}", VLANS[tenant]);
    let vlan = VLANS[tenant].to_string();
    ns.command("python3")
        .arg(frames_tool())
        .args([
            "send", "eth0", &count, "--src", &src, "--dst", dst, "--tag", &tag, "--vlan", &vlan,
            "--size", "80", "--gap", "0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sender runs")
}

fn detach(socket: &Path, c: &mut Container, names: &mut BTreeSet<usize>) {
    if let Some(name) = c.port.take() {
        ok(socket, &["port", "del", &name]);
        names.remove(&name[1..].parse::<usize>().unwrap());
    }
}

#[test]
fn a_minute_of_churn_never_lets_a_frame_cross_tenants() {
    let seconds: u64 = std::env::var("TENET_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::process::id() as u64 * 0x9e37_79b9 + 1;
    eprintln!("churn seed {seed}, {seconds} s");
    let mut rng = Rng(seed);

    let host = Netns::new("chh-").unwrap();
    let inet = Netns::new("chi-").unwrap();
    let (uplink, outside) = underlay(&host, &inet).unwrap();
    inet.exec("ip", &["addr", "add", "198.18.0.254/24", "dev", &outside])
        .unwrap();
    inet.exec("ip", &["link", "set", "lo", "up"]).unwrap();
    inet.exec("ip", &["addr", "add", &format!("{SERVER}/32"), "dev", "lo"])
        .unwrap();
    let trunk_ns = Netns::new("cht-").unwrap();
    let trunk = Link::between(Some(&host), &trunk_ns, None).unwrap();
    let dir = TempDir::new("churn").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let tenetd =
        Tenetd::start_in(Some(&host), &config(dir.path(), &uplink, &trunk.host), &[]).unwrap();
    let mut tenetd = tenetd;
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();

    // Two containers a tenant, at the same two addresses in both.
    let mut containers: Vec<Container> = [
        (0, "10.1.0.11"),
        (0, "10.1.0.12"),
        (1, "10.1.0.11"),
        (1, "10.1.0.12"),
    ]
    .iter()
    .map(|&(t, ip)| Container::new(&host, t, ip))
    .collect();
    let mut names = BTreeSet::new();
    for c in containers.iter_mut() {
        attach(&socket, c, &mut names);
    }
    for c in containers.iter_mut() {
        let peer = if c.ip.ends_with(".11") {
            "10.1.0.12"
        } else {
            "10.1.0.11"
        };
        c.ping(peer, "0.2");
        c.ping(SERVER, "0.3");
        // Flooded: the tenant's other container and the trunk see it.
        let pattern: String = mark(c.tenant).iter().map(|b| format!("{b:02x}")).collect();
        let flood =
            c.ns.command("ping")
                .args(["-b", "-i", "0.5", "-p", &pattern, "10.1.0.255"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("ping runs");
        c.pings.push(flood);
    }
    let trunk_sniffer = Sniffer::start(&trunk_ns);
    let mut senders: Vec<Child> = (0..2)
        .map(|t| trunk_sender(&trunk_ns, t, "ff:ff:ff:ff:ff:ff", seconds))
        .chain(
            containers
                .iter()
                .map(|c| trunk_sender(&trunk_ns, c.tenant, &c.link.mac, seconds)),
        )
        .collect();

    let start = Instant::now();
    let mut snat_moves = 0;
    let mut tenant_rebirths = 0;
    let mut port_changes = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(200 + rng.next(300) as u64));
        match rng.next(20) {
            0..=11 => {
                let c = &mut containers[rng.next(4)];
                if c.port.is_some() {
                    detach(&socket, c, &mut names);
                } else {
                    attach(&socket, c, &mut names);
                }
                port_changes += 1;
            }
            12..=13 => {
                // A tenant goes (its ports first) and comes back under the same
                // name and id: a new tenant to the tables.
                let t = rng.next(2);
                for c in containers.iter_mut().filter(|c| c.tenant == t) {
                    detach(&socket, c, &mut names);
                }
                ok(&socket, &["port", "del", "trunk"]);
                let (name, id) = TENANTS[t];
                ok(&socket, &["tenant", "del", name]);
                let mut add = tenant_add(name, id, "10.1.0.1/24", "h");
                add.extend(["--vlan".to_owned(), VLANS[t].to_string()]);
                ok(&socket, &add);
                attach_trunk(&socket, &trunk.host);
                for c in containers.iter_mut().filter(|c| c.tenant == t) {
                    attach(&socket, c, &mut names);
                }
                tenant_rebirths += 1;
            }
            14..=16 => {
                let t = rng.next(2);
                let address = ["198.18.0.1", "198.18.0.2"][rng.next(2)];
                ok(
                    &socket,
                    &["tenant", "set", TENANTS[t].0, "--snat-ip", address],
                );
                snat_moves += 1;
            }
            _ => {}
        }
    }
    // Everyone attached again, a last round of traffic.
    for c in containers.iter_mut() {
        if c.port.is_none() {
            attach(&socket, c, &mut names);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("{port_changes} port changes, {tenant_rebirths} tenants deleted and re-created, {snat_moves} SNAT moves");

    let mut macs: [Vec<[u8; 6]>; 2] = [
        vec![router_mac(TENANTS[0].1)],
        vec![router_mac(TENANTS[1].1)],
    ];
    for c in &containers {
        macs[c.tenant].push(mac_bytes(&c.link.mac));
    }
    let stats = ok(&socket, &["--json", "stats"]);
    for sender in &mut senders {
        let _ = sender.kill();
        let _ = sender.wait();
    }
    let marked = judge_trunk(&trunk_sniffer.frames(), &macs)
        .unwrap_or_else(|leak| panic!("the trunk got {leak}\n{stats}\n{}", tenetd.stderr_text()));
    eprintln!("trunk: {} red, {} blue marked frames", marked[0], marked[1]);
    assert!(
        marked.iter().all(|&n| n > 10),
        "too little flooded to the trunk: {marked:?}"
    );
    for c in containers.iter_mut() {
        c.stop_pings();
        let frames = c.sniffer.take().unwrap().frames();
        let name = TENANTS[c.tenant].0;
        let (from_peer, from_outside) = judge(
            &frames,
            c.tenant,
            TENANTS.len(),
            &macs[c.tenant],
            [203, 0, 113, 10],
        )
        .unwrap_or_else(|leak| panic!("{name} container {} got {leak}\n{stats}", c.ip));
        eprintln!(
            "{name} {}: {} frames, {from_peer} marked from its peer, {from_outside} from outside",
            c.ip,
            frames.len()
        );
        // Traffic flowed, inside the tenant and through SNAT: the test saw something.
        assert!(from_peer > 10, "{}: too little from its peer", c.ip);
        assert!(from_outside > 10, "{}: too little from outside", c.ip);
    }
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// tenetd's packet buffers out of the pool now.
fn in_use(socket: &Path) -> u64 {
    http(socket, "GET", "/metrics", "")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("tenet_mempool_in_use ")?.trim().parse().ok())
        .expect("tenet_mempool_in_use")
}

#[test]
fn a_thousand_hot_attach_detach_cycles_under_traffic_leak_no_buffer() {
    let cycles: usize = std::env::var("TENET_HOTPLUG_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let host = Netns::new("lkh-").unwrap();
    let dir = TempDir::new("leak").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let ns: Vec<Netns> = (0..3)
        .map(|i| Netns::new(&format!("lk{i}-")).unwrap())
        .collect();
    let links: Vec<Link> = ns
        .iter()
        .map(|n| Link::between(Some(&host), n, None).unwrap())
        .collect();
    let text = format!(
        r#"
[dataplane]
workers = [0, 1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[[tenant]]
name = "red"
id = 100

[[port]]
name = "c0"
backend = "af-packet"
interface = "{c0}"
role = "access"
tenant = "red"

[[port]]
name = "c1"
backend = "af-packet"
interface = "{c1}"
role = "access"
tenant = "red"

[control]
api_socket = "{dir}/tenetd.sock"
# What is measured is the pool, not the disk: no state file to fsync per change.
persist = false
"#,
        prefix = unique("leak"),
        c0 = links[0].host,
        c1 = links[1].host,
        dir = dir.path().display(),
    );
    let mut tenetd = Tenetd::start_in(Some(&host), &text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = in_use(&socket);
    // Broadcasts flood to every port, the one that comes and goes too, from both
    // workers (c0 and c1 are polled by one each; the new port's TX queue is one
    // worker's, the other reaches it by ring).
    let mut floods: Vec<Guard> = (0..2)
        .map(|i| {
            let child = ns[i]
                .command("python3")
                .arg(frames_tool())
                .args(["send", "eth0", "10000000", "--src", &links[i].mac])
                .args(["--dst", "ff:ff:ff:ff:ff:ff", "--gap", "0.0002"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            Guard(child)
        })
        .collect();
    let port = format!(
        r#"{{"name":"hot","backend":"af-packet","interface":"{}","role":"access","tenant":"red"}}"#,
        links[2].host
    );
    let started = Instant::now();
    for i in 0..cycles {
        let added = http(&socket, "POST", "/v1/ports", &port);
        assert_eq!(added.status, 201, "cycle {i}: {added}");
        let gone = http(&socket, "DELETE", "/v1/ports/hot", "");
        assert_eq!(gone.status, 200, "cycle {i}: {gone}");
    }
    let took = started.elapsed();
    floods.clear();
    std::thread::sleep(Duration::from_secs(1));
    let after = in_use(&socket);
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "stats"])).unwrap();
    let received: u64 = stats["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rx_packets"].as_u64().unwrap())
        .sum();
    eprintln!("{cycles} attach/detach cycles in {took:?} under {received} flooded frames; packet buffers in use {before} before, {after} after");
    assert!(received > 1000, "the flood ran: {stats}");
    assert!(
        after <= before + 64,
        "packet buffers leaked: {before} in use before, {after} after {cycles} cycles"
    );
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Kills the child when dropped (a failed assertion must not leave a flood running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
