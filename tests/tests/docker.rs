//! tenet-docker, driven as Docker drives a network plugin: the libnetwork remote
//! driver calls over the plugin socket, with this test doing what the Docker engine
//! does between them (moving the interface into the container and addressing it).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control::client::Client;
use serde_json::{json, Value};
use tests::{binary, tenetctl_ok, unique, wait_for_ping, Netns, TempDir, Tenetd};

struct Plugin {
    child: Child,
}

impl Plugin {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("tenet.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(binary("tenet-docker"))
            .arg("--socket")
            .arg(&socket)
            .arg("--tenetd")
            .arg(dir.join("tenetd.sock"))
            .arg("--state-file")
            .arg(dir.join("docker.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("plugin.log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One driver call, as Docker makes it.
fn call(dir: &Path, path: &str, body: Value) -> Value {
    let answer = Client::new(dir.join("tenet.sock"))
        .call("POST", path, Some(&body))
        .unwrap();
    assert_eq!(answer.status, 200, "{path}");
    serde_json::from_slice(&answer.raw).unwrap()
}

/// What the Docker engine does on Join: the interface into the container, renamed,
/// addressed, with the gateway route.
fn move_into(ns: &Netns, src: &str, address: &str, gateway: &str) {
    tests::run("ip", &["link", "set", src, "netns", ns.name()]).unwrap();
    ns.exec("ip", &["link", "set", src, "name", "eth0"])
        .unwrap();
    ns.exec("ip", &["addr", "add", address, "dev", "eth0"])
        .unwrap();
    ns.exec("ip", &["link", "set", "eth0", "up"]).unwrap();
    ns.exec("ip", &["route", "add", "default", "via", gateway])
        .unwrap();
}

#[test]
fn docker_networks_and_endpoints_become_tenants_and_ports() {
    let dir = TempDir::new("docker").unwrap();
    // The outside: a namespace behind tenetd's uplink, where published ports are
    // reached from.
    let inet = Netns::new("dkinet").unwrap();
    let uplink = unique("dkup");
    tests::run(
        "ip",
        &[
            "link",
            "add",
            &uplink,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            inet.name(),
        ],
    )
    .unwrap();
    tests::underlay_end(&inet, "eth0").unwrap();
    inet.exec("ip", &["addr", "add", "198.18.0.254/24", "dev", "eth0"])
        .unwrap();
    tests::run("ip", &["link", "set", &uplink, "up"]).unwrap();
    let config = format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{}"
memory_mb = 256

[switch]
design = "dedicated"
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
subnets = ["10.40.0.1/24"]
gateway_host = "h"

[[port]]
name = "spare"
backend = "null"

[[port]]
name = "underlay"
backend = "af-packet"
interface = "{uplink}"
role = "uplink"

[control]
api_socket = "{1}/tenetd.sock"
state_file = "{1}/state.json"
"#,
        unique("dock"),
        dir.path().display()
    );
    let mut tenetd = Tenetd::start(&config, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    let mut plugin = Plugin::start(dir.path());
    let d = dir.path();

    assert_eq!(
        call(d, "/Plugin.Activate", json!({})),
        json!({"Implements": ["NetworkDriver", "IpamDriver"]})
    );
    assert_eq!(
        call(d, "/NetworkDriver.GetCapabilities", json!({}))["Scope"],
        "local"
    );
    // docker network create --ipam-driver tenet --ipam-opt tenant=red: the pool is
    // one of red's subnets, its gateway red's router, container addresses tenetd's.
    let ipam_refused = call(
        d,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "tenet", "Pool": "10.41.0.0/24", "Options": {"tenant": "red"}, "V6": false}),
    );
    assert!(
        ipam_refused["Err"].as_str().unwrap().starts_with("Pool"),
        "{ipam_refused}"
    );
    let pool = call(
        d,
        "/IpamDriver.RequestPool",
        json!({"AddressSpace": "tenet", "Pool": "", "Options": {"tenant": "red"}, "V6": false}),
    );
    assert_eq!(pool["Pool"], "10.40.0.0/24", "red's first subnet: {pool}");
    let pool_id = pool["PoolID"].as_str().unwrap().to_owned();
    let gateway = call(
        d,
        "/IpamDriver.RequestAddress",
        json!({"PoolID": pool_id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    assert_eq!(gateway["Address"], "10.40.0.1/24", "{gateway}");
    // The driver asks for each endpoint's MAC: Docker sends it with the request.
    let capabilities = call(d, "/IpamDriver.GetCapabilities", json!({}));
    assert_eq!(capabilities["RequiresMACAddress"], true);
    let address_for = |asked: &str, mac: &str| {
        call(
            d,
            "/IpamDriver.RequestAddress",
            json!({"PoolID": pool_id, "Address": asked,
                   "Options": {"com.docker.network.endpoint.macaddress": mac}}),
        )
    };
    let e1_address = address_for("", "02:00:00:40:00:02")["Address"]
        .as_str()
        .unwrap()
        .to_owned();
    let e1_ip = e1_address.split('/').next().unwrap().to_owned();
    assert!(
        e1_address.ends_with("/24") && e1_ip != "10.40.0.1",
        "{e1_address}"
    );
    assert_eq!(
        address_for("", "02:00:00:40:00:02")["Address"],
        e1_address.as_str(),
        "a retried request for the same endpoint gets the same address"
    );
    assert_eq!(
        address_for("10.40.0.3", "02:00:00:40:00:03")["Address"],
        "10.40.0.3/24",
        "docker run --ip"
    );
    let taken = address_for(&e1_ip, "02:00:00:40:00:09");
    assert!(
        taken["Err"].as_str().unwrap().contains("ip: ")
            && taken["Err"].as_str().unwrap().contains("already claimed"),
        "{taken}"
    );

    let network = |tenant: &str, gateway: &str| {
        json!({
            "NetworkID": "n-red",
            "Options": {"com.docker.network.generic": {"tenant": tenant}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.40.0.0/24", "Gateway": gateway}],
            "IPv6Data": [],
        })
    };
    let refused = call(
        d,
        "/NetworkDriver.CreateNetwork",
        network("green", "10.40.0.1/24"),
    );
    assert!(
        refused["Err"].as_str().unwrap().contains("green"),
        "{refused}"
    );
    let refused = call(
        d,
        "/NetworkDriver.CreateNetwork",
        network("red", "10.40.0.254/24"),
    );
    assert!(
        refused["Err"].as_str().unwrap().starts_with("gateway"),
        "{refused}"
    );
    assert_eq!(
        call(
            d,
            "/NetworkDriver.CreateNetwork",
            network("red", "10.40.0.1/24")
        ),
        json!({})
    );

    let endpoint = |id: &str, address: &str, mac: &str| {
        json!({
            "NetworkID": "n-red",
            "EndpointID": id,
            "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": mac},
            "Options": {},
        })
    };
    let e1 = call(
        d,
        "/NetworkDriver.CreateEndpoint",
        endpoint("e1", &e1_address, ""),
    );
    assert!(e1["Interface"]["MacAddress"].as_str().is_some(), "{e1}");
    let e2 = call(
        d,
        "/NetworkDriver.CreateEndpoint",
        endpoint("e2", "10.40.0.3/24", "02:00:00:40:00:03"),
    );
    assert_eq!(e2, json!({}), "Docker's MAC is kept, nothing to tell");
    let (c1, c2) = (Netns::new("dk1").unwrap(), Netns::new("dk2").unwrap());
    for (id, ns, address) in [
        ("e1", &c1, e1_address.as_str()),
        ("e2", &c2, "10.40.0.3/24"),
    ] {
        let join = call(
            d,
            "/NetworkDriver.Join",
            json!({"NetworkID": "n-red", "EndpointID": id, "SandboxKey": "/var/run/docker/netns/x", "Options": {}}),
        );
        assert_eq!(join["InterfaceName"]["DstPrefix"], "eth");
        assert_eq!(join["Gateway"], "10.40.0.1");
        move_into(
            ns,
            join["InterfaceName"]["SrcName"].as_str().unwrap(),
            address,
            "10.40.0.1",
        );
    }
    assert_eq!(
        c2.exec("cat", &["/sys/class/net/eth0/address"])
            .unwrap()
            .trim(),
        "02:00:00:40:00:03"
    );
    wait_for_ping(&c1, "10.40.0.3");
    wait_for_ping(&c1, "10.40.0.1");

    // docker run -p 18080:5201: published on red's gateway, reached from outside.
    let portmap = |mappings: Value| {
        json!({"NetworkID": "n-red", "EndpointID": "e1",
               "Options": {"com.docker.network.portmap": mappings}})
    };
    assert_eq!(
        call(
            d,
            "/NetworkDriver.ProgramExternalConnectivity",
            portmap(json!([{"Proto": 6, "IP": "", "Port": 5201, "HostIP": "", "HostPort": 18080}]))
        ),
        json!({})
    );
    let published = tenetctl_ok(&d.join("tenetd.sock"), &["publish", "list"]);
    assert!(
        published.contains("18080") && published.contains(&e1_ip),
        "{published}"
    );
    let server = c1
        .command("iperf3")
        .args(["-s", "-1", "-B", &e1_ip, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    inet.exec("iperf3", &["-c", "198.18.0.1", "-p", "18080", "-t", "1"])
        .expect("the published port reached from outside");
    let _ = server.wait_with_output();
    // A mapping tenet cannot publish is refused whole: nothing of it stays.
    let refused = call(
        d,
        "/NetworkDriver.ProgramExternalConnectivity",
        portmap(json!([
            {"Proto": 17, "Port": 53, "HostPort": 18053},
            {"Proto": 1, "Port": 0, "HostPort": 0},
        ])),
    );
    assert!(
        refused["Err"].as_str().unwrap().contains("Proto"),
        "{refused}"
    );
    let published = tenetctl_ok(&d.join("tenetd.sock"), &["publish", "list"]);
    assert!(!published.contains("18053"), "{published}");
    assert_eq!(
        call(
            d,
            "/NetworkDriver.RevokeExternalConnectivity",
            json!({"NetworkID": "n-red", "EndpointID": "e1"})
        ),
        json!({})
    );
    let published = tenetctl_ok(&d.join("tenetd.sock"), &["publish", "list"]);
    assert!(!published.contains("18080"), "revoked: {published}");

    // A restarted plugin still knows its networks and endpoints.
    drop(plugin);
    plugin = Plugin::start(d);
    let info = call(
        d,
        "/NetworkDriver.EndpointOperInfo",
        json!({"NetworkID": "n-red", "EndpointID": "e1"}),
    );
    assert_eq!(info["Value"]["ip"], e1_ip.as_str(), "{info}");
    let busy = call(
        d,
        "/NetworkDriver.DeleteNetwork",
        json!({"NetworkID": "n-red"}),
    );
    assert!(busy["Err"].is_string(), "a network with endpoints stays");
    // Its log (stderr: the journal under systemd) has each call, refusals with why.
    let log = std::fs::read_to_string(d.join("plugin.log")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("INFO")
            && l.contains("/NetworkDriver.CreateEndpoint")
            && l.contains("done")),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("/NetworkDriver.DeleteNetwork")
            && l.contains("refused")),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "no colour codes in a file: {log}");

    for id in ["e1", "e2"] {
        assert_eq!(
            call(
                d,
                "/NetworkDriver.Leave",
                json!({"NetworkID": "n-red", "EndpointID": id})
            ),
            json!({})
        );
        assert_eq!(
            call(
                d,
                "/NetworkDriver.DeleteEndpoint",
                json!({"NetworkID": "n-red", "EndpointID": id})
            ),
            json!({})
        );
    }
    assert_eq!(
        call(
            d,
            "/NetworkDriver.DeleteNetwork",
            json!({"NetworkID": "n-red"})
        ),
        json!({})
    );
    // Docker gives the addresses back, the gateway's too (nobody's claim).
    for address in [e1_address.as_str(), "10.40.0.3/24", "10.40.0.1/24"] {
        assert_eq!(
            call(
                d,
                "/IpamDriver.ReleaseAddress",
                json!({"PoolID": pool_id, "Address": address})
            ),
            json!({})
        );
    }
    assert_eq!(
        call(d, "/IpamDriver.ReleasePool", json!({"PoolID": pool_id})),
        json!({})
    );
    let claims = tests::http(&d.join("tenetd.sock"), "GET", "/v1/addresses", "");
    assert_eq!(claims.body, json!([]), "every claim given back");
    let ports: Value = serde_json::from_str(&tenetctl_ok(
        &d.join("tenetd.sock"),
        &["--json", "port", "list"],
    ))
    .unwrap();
    let names: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["spare", "underlay"],
        "only the configured ports: {ports}"
    );
    assert!(
        c1.exec("ip", &["link", "show", "eth0"]).is_err(),
        "the veth went with its host end"
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(d.join("docker.json")).unwrap()).unwrap();
    assert_eq!(state, json!({"networks": {}, "endpoints": {}}));
    drop(plugin);
}
