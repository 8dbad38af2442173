//! A restart always succeeds: after a crash (kill -9) with a container's veth gone,
//! tenetd comes back, the other tenants forward, the missing port is reported down and
//! is attached again when the veth returns; a veth deleted under a running tenetd
//! takes its port down the same way and back up when it returns.

use std::path::Path;
use std::time::{Duration, Instant};

use tests::{tenetctl_ok as ok, unique, wait_for_ping, Link, Netns, TempDir, Tenetd};

fn config(dir: &Path, prefix: &str, links: &[&Link; 4]) -> String {
    let port = |name: &str, link: &Link, tenant: &str| {
        format!(
            "[[port]]\nname = \"{name}\"\nbackend = \"af-packet\"\ninterface = \"{}\"\nrole = \"access\"\ntenant = \"{tenant}\"\n\n",
            link.host
        )
    };
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/state.json"

[[tenant]]
name = "red"
id = 100

[[tenant]]
name = "blue"
id = 200

{}{}{}{}"#,
        port("r1", links[0], "red"),
        port("r2", links[1], "red"),
        port("b1", links[2], "blue"),
        port("b2", links[3], "blue"),
        dir = dir.display()
    )
}

/// The state `tenetctl port list` reports for `port`.
fn port_state(socket: &Path, port: &str) -> String {
    let list: serde_json::Value =
        serde_json::from_str(&ok(socket, &["--json", "port", "list"])).expect("JSON");
    list.as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == port)
        .and_then(|p| p["state"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

fn wait_for_state(socket: &Path, port: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if port_state(socket, port) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "port {port} is {} after 20 s, not {want}",
        port_state(socket, port)
    );
}

#[test]
fn a_restart_without_a_containers_veth_succeeds_and_the_port_comes_back_with_it() {
    let dir = TempDir::new("restart").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let ns: Vec<Netns> = ["rr1-", "rr2-", "rb1-", "rb2-"]
        .iter()
        .map(|t| Netns::new(t).unwrap())
        .collect();
    let addresses = ["10.1.0.1/24", "10.1.0.2/24", "10.1.0.1/24", "10.1.0.2/24"];
    let mut links: Vec<Option<Link>> = ns
        .iter()
        .zip(addresses)
        .map(|(n, a)| Some(Link::new(n, Some(a)).unwrap()))
        .collect();
    let names: Vec<String> = links.iter().flatten().map(|l| l.host.clone()).collect();
    let text = {
        let l: Vec<&Link> = links.iter().flatten().collect();
        config(dir.path(), &unique("rs"), &[l[0], l[1], l[2], l[3]])
    };
    let tenetd = Tenetd::serving(None, &text).unwrap();
    wait_for_ping(&ns[0], "10.1.0.2");
    wait_for_ping(&ns[2], "10.1.0.2");

    // A crash, and one of red's containers goes away with its veth meanwhile.
    tenetd.kill().unwrap();
    links[1] = None;
    let tenetd = Tenetd::serving(None, &text).unwrap();
    assert_eq!(port_state(&socket, "r2"), "down");
    assert_eq!(port_state(&socket, "r1"), "up");
    let listed = ok(&socket, &["port", "list"]);
    assert!(listed.contains("r2") && listed.contains("down"), "{listed}");
    let metrics = tests::http(&socket, "GET", "/metrics", "").text();
    assert!(
        metrics.contains("tenet_port_up{port=\"r2\"} 0")
            && metrics.contains("tenet_port_up{port=\"r1\"} 1"),
        "{metrics}"
    );
    // Blue never noticed.
    wait_for_ping(&ns[2], "10.1.0.2");

    // The container is back under its old interface name: so is the port.
    links[1] = Some(Link::named(None, &ns[1], &names[1], Some("10.1.0.2/24")).unwrap());
    // A new container has a new MAC: its peer forgets the old one.
    ns[0].exec("ip", &["neigh", "flush", "all"]).unwrap();
    wait_for_state(&socket, "r2", "up");
    wait_for_ping(&ns[0], "10.1.0.2");

    // A veth deleted under the running switch takes its port down; back, it is up.
    links[3] = None;
    wait_for_state(&socket, "b2", "down");
    assert_eq!(
        ns[2].exec("ping", &["-c", "1", "-W", "1", "10.1.0.2"]).ok(),
        None,
        "blue's other container is gone"
    );
    links[3] = Some(Link::named(None, &ns[3], &names[3], Some("10.1.0.2/24")).unwrap());
    ns[2].exec("ip", &["neigh", "flush", "all"]).unwrap();
    wait_for_state(&socket, "b2", "up");
    wait_for_ping(&ns[2], "10.1.0.2");
    wait_for_ping(&ns[0], "10.1.0.2");

    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("port down; trying again"),
        "{}",
        stopped.stderr
    );
}
