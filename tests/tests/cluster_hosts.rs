//! Hosts of one cluster as the Docklet design has them: network namespaces each running
//! tenetd, on one underlay (a bridge) and one management network where etcd runs. Only
//! the first host's config names the tenant; every container is attached and
//! registered through its own host's API; the others learn where it is from the
//! cluster's model and tunnel to it. A host joining later is reached the same way; a
//! host killed drops out when its lease runs out, and its gateways are placed again;
//! while etcd is away, traffic flows on and hosts converge when it is back; a gateway
//! moved through one host's API is followed by all.

use std::time::Duration;

use tests::{tenetctl_ok, underlay_end, unique, wait_for_ping, Etcd, Link, Netns, TempDir, Tenetd};

/// The underlay bridge and the management bridge (etcd at 10.99.0.1).
struct Fabric {
    ns: Netns,
}

impl Fabric {
    fn new() -> Self {
        let ns = Netns::new("fab").unwrap();
        for (bridge, address) in [("br0", None), ("mg0", Some("10.99.0.1/24"))] {
            ns.exec("ip", &["link", "add", bridge, "type", "bridge"])
                .unwrap();
            if let Some(address) = address {
                ns.exec("ip", &["addr", "add", address, "dev", bridge])
                    .unwrap();
            }
            ns.exec("ip", &["link", "set", bridge, "up"]).unwrap();
        }
        Self { ns }
    }

    /// Links `host` to both bridges; returns its underlay interface. Its management
    /// address is 10.99.0.<10 + index>.
    fn attach(&self, host: &Netns, index: u8) -> String {
        let mut underlay = String::new();
        for bridge in ["br0", "mg0"] {
            let (near, far) = (unique("fh"), unique("ff"));
            tests::run(
                "ip",
                &["link", "add", &near, "type", "veth", "peer", "name", &far],
            )
            .unwrap();
            tests::run("ip", &["link", "set", &near, "netns", host.name()]).unwrap();
            tests::run("ip", &["link", "set", &far, "netns", self.ns.name()]).unwrap();
            self.ns
                .exec("ip", &["link", "set", &far, "master", bridge, "up"])
                .unwrap();
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
    fn start(fabric: &Fabric, etcd: &Etcd, index: u8) -> Self {
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

{hosts}{tenant}
[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"

[control]
api_socket = "{socket}"
etcd = ["{url}"]
etcd_lease_s = {LEASE_S}
"#,
            prefix = prefix,
            socket = socket.display(),
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
    let mut hosts: Vec<Host> = (0..3).map(|i| Host::start(&fabric, &etcd, i)).collect();
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
    hosts.push(Host::start(&fabric, &etcd, 3));
    hosts[3].container(4);
    wait_for_ping(&hosts[3].containers[0].0, "10.1.0.1");
    wait_for_ping(&hosts[0].containers[0].0, "10.1.0.4");
    wait_for_ping(&hosts[2].containers[0].0, "10.1.0.4");

    // etcd goes away while a steady ping runs: forwarding goes on with
    // the tables in force; once etcd is back, a change made through a reaches d.
    etcd.kill();
    let during = hosts[0].containers[0]
        .0
        .exec("ping", &["-c", "20", "-i", "0.1", "-W", "1", "10.1.0.2"])
        .expect("forwarding goes on without etcd");
    assert!(during.contains(" 0% packet loss"), "{during}");
    etcd.resume().unwrap();
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
    let blue = [
        "tenant",
        "add",
        "blue",
        "--id",
        "200",
        "--subnet",
        "10.2.0.1/24",
        "--gateway-host",
        "c",
    ];
    tenetctl_ok(&hosts[0].socket, &blue);
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

    for host in hosts {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}
