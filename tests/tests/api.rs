//! tenetd driven the way a user drives it: through tenetctl and the HTTP/JSON API on its
//! Unix socket. Tenants and endpoints change while traffic flows, refused requests name
//! their field and change nothing, and everything survives a restart and a kill -9.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::{
    expected_frame, http, tenetctl, tenetctl_ok as ok, unique, Link, Netns, Receiver, TempDir,
    Tenetd,
};

fn http_get(socket: &Path, path: &str) -> String {
    http(socket, "GET", path, "").text()
}

/// One HTTP/1.1 request over plain TCP; the whole response.
fn plain_http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: tenet\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Prometheus' text exposition format, as its parser reads it: every sample line is
/// `name{labels} value` of a family announced by `# TYPE`, names in the metric
/// alphabet, counters ending in `_total`, values numbers.
fn check_exposition(text: &str) {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut types = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "a counter not named _total: {line}"
                );
            }
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            types.contains_key(name),
            "a sample of no announced family: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
                for pair in labels[1..labels.len() - 1].split(',') {
                    let (label, quoted) = pair.split_once('=').unwrap();
                    assert!(
                        name_ok(label) && quoted.starts_with('"') && quoted.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
    }
    assert!(!types.is_empty(), "no families: {text}");
}

fn refused(socket: &Path, args: &[&str], must_say: &str) {
    let out = tenetctl(socket, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "tenetctl {args:?}: {stderr}");
    assert!(
        stderr.contains(must_say),
        "tenetctl {args:?}: `{must_say}` not in {stderr}"
    );
}

fn config(dir: &Path, prefix: &str, a: &str, b: &str) -> String {
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

[[port]]
name = "c1"
backend = "af-packet"
interface = "{a}"
role = "access"
tenant = "red"

[[port]]
name = "c2"
backend = "af-packet"
interface = "{b}"
role = "access"
tenant = "red"
"#,
        dir = dir.display()
    )
}

#[test]
fn tenetctl_changes_the_running_switch_and_state_survives_restarts() {
    let dir = TempDir::new("api").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let state = dir.path().join("state.json");
    let (ns1, ns2) = (Netns::new("ac1-").unwrap(), Netns::new("ac2-").unwrap());
    let (l1, l2) = (
        Link::new(&ns1, None).unwrap(),
        Link::new(&ns2, None).unwrap(),
    );
    let prefix = unique("api");
    // A free port for the read-only metrics listener (taken back just before tenetd
    // binds it).
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = config(dir.path(), &prefix, &l1.host, &l2.host).replace(
        "[control]\n",
        &format!("[control]\nmetrics_listen = \"{metrics_addr}\"\n"),
    );
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd.wait_ready(Duration::from_secs(30)).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(10))
        .unwrap();

    // Reads.
    assert!(ok(&socket, &["tenant", "list"]).contains("red"));
    let ports: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "port", "list"])).unwrap();
    assert_eq!(ports[0]["role"]["tenant"], "red");

    // Traffic between the containers flows while tenants are added.
    let tag = 0x0a91_0001;
    let rx = Receiver::start(&ns2, "eth0", 200, tag).unwrap();
    let sender = std::thread::spawn({
        let (ns1_name, src, dst) = (ns1.name().to_owned(), l1.mac.clone(), l2.mac.clone());
        move || {
            Command::new("ip")
                .args(["netns", "exec", &ns1_name, "python3"])
                .arg(tests::frames_tool())
                .args([
                    "send",
                    "eth0",
                    "200",
                    "--tag",
                    &tag.to_string(),
                    "--src",
                    &src,
                    "--dst",
                    &dst,
                    "--gap",
                    "0.002",
                ])
                .status()
                .unwrap()
        }
    });
    for i in 0..20 {
        ok(
            &socket,
            &[
                "tenant",
                "add",
                &format!("t{i}"),
                "--id",
                &(1000 + i).to_string(),
            ],
        );
    }
    assert!(sender.join().unwrap().success());
    let got = rx.collect(200, Duration::from_secs(10));
    assert_eq!(got.len(), 200, "frames lost while the tables changed");
    assert_eq!(got[199], expected_frame(&l1.mac, &l2.mac, tag, 199, 64));

    // An endpoint installs an FDB entry; refused requests name the field.
    ok(
        &socket,
        &[
            "endpoint", "add", "--tenant", "red", "--mac", &l2.mac, "--port", "c2",
        ],
    );
    refused(
        &socket,
        &["tenant", "add", "dup", "--id", "100"],
        "id: id 100 is used by another tenant",
    );
    refused(
        &socket,
        &["tenant", "add", "t0", "--id", "5"],
        "name: tenant `t0` is defined twice",
    );
    refused(
        &socket,
        &["tenant", "add", "bad", "--id", "6", "--vlan", "5000"],
        "vlan: must be between 1 and 4094",
    );
    refused(
        &socket,
        &["tenant", "del", "red"],
        "tenant `red` is used by port `c1`",
    );
    refused(
        &socket,
        &["tenant", "del", "nosuch"],
        "no tenant is named `nosuch`",
    );
    refused(
        &socket,
        &[
            "endpoint",
            "add",
            "--tenant",
            "red",
            "--mac",
            "ff:ff:ff:ff:ff:ff",
            "--port",
            "c2",
        ],
        "mac",
    );
    let usage = tenetctl(&socket, &["tenant", "add"]);
    assert_eq!(
        usage.status.code(),
        Some(2),
        "missing arguments are a usage error"
    );
    ok(&socket, &["tenant", "del", "t19"]);
    assert!(
        state.with_extension("json.journal").join("log").exists(),
        "changes are kept in the state journal beside the configured file"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "stats"])).unwrap();
    assert!(stats["cores"][0]["rx_packets"].as_u64().unwrap() >= 200);
    assert!(ok(&socket, &["show"]).contains("tenant t18"));

    // Trace: a frame from c1 to c2's MAC, then one with a forged VLAN tag.
    let hex = |mac: &str| mac.replace(':', "");
    let frame = format!("{}{}0800{}", hex(&l2.mac), hex(&l1.mac), "00".repeat(46));
    let traced: serde_json::Value = serde_json::from_str(&ok(
        &socket,
        &["--json", "trace", "--port", "c1", "--frame", &frame],
    ))
    .unwrap();
    assert_eq!(traced["outputs"][0]["port"], "c2", "{traced}");
    assert_eq!(traced["outputs"][0]["frame"], frame);
    let decisions = traced["decisions"].to_string();
    assert!(
        decisions.contains("ingress port c1: access port of tenant red")
            && decisions.contains("destination"),
        "{decisions}"
    );
    // The same as a flow, as ofproto/trace takes one: the frame built, checksums and all.
    let flow = format!(
        "in_port=c1,tcp,dl_src={},dl_dst={},nw_src=10.9.0.1,nw_dst=10.9.0.2,tp_dst=443",
        l1.mac, l2.mac
    );
    let traced: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "trace", "--flow", &flow])).unwrap();
    assert_eq!(traced["outputs"][0]["port"], "c2", "{traced}");
    let sent = traced["outputs"][0]["frame"].as_str().unwrap();
    assert!(
        sent.starts_with(&format!("{}{}0800", hex(&l2.mac), hex(&l1.mac))),
        "{sent}"
    );
    assert!(
        traced["decisions"]
            .to_string()
            .contains(&format!("destination {}: port c2", l2.mac)),
        "{traced}"
    );
    let bad = tenetctl(&socket, &["trace", "--flow", "in_port=c1,nw_dst=10.9.0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nw_dst"));
    let tagged = format!(
        "{}{}8100006408 00{}",
        hex(&l2.mac),
        hex(&l1.mac),
        "00".repeat(46)
    )
    .replace(' ', "");
    let traced = ok(&socket, &["trace", "--port", "c1", "--frame", &tagged]);
    assert!(
        traced.contains("drop: tagged-on-access") && traced.contains("no output"),
        "{traced}"
    );
    refused(
        &socket,
        &["trace", "--port", "nope", "--frame", &frame],
        "port",
    );
    // Prometheus metrics.
    let metrics = http_get(&socket, "/metrics");
    assert!(
        metrics.contains("# TYPE tenet_port_rx_packets_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenet_drops_total{core=\"1\",reason=\"tagged-on-access\"}"),
        "{metrics}"
    );
    // The same on the metrics listener, in Prometheus' text format, with no
    // credentials; it takes nothing else.
    let scraped = plain_http(metrics_addr, "GET", "/metrics", "");
    let (status, body) = scraped.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{scraped}");
    check_exposition(body);
    assert!(
        body.contains("tenet_core_spread_total{core=\"1\"}"),
        "{body}"
    );
    // Per tenant, per port errors, CPU time in seconds, the build.
    for series in [
        "tenet_tenant_ports{tenant=\"red\"} 2",
        "tenet_tenant_learned_macs{tenant=\"red\"}",
        "tenet_port_rx_errors_total{port=\"c1\"}",
        "tenet_port_tx_errors_total{port=\"c1\"}",
        "tenet_core_busy_seconds_total{core=\"1\"}",
        "tenet_build_info{version=",
    ] {
        assert!(body.contains(series), "{series}: {body}");
    }
    let write = plain_http(
        metrics_addr,
        "POST",
        "/v1/tenants",
        r#"{"name":"scraped","id":901}"#,
    );
    assert!(write.starts_with("HTTP/1.1 404"), "{write}");
    assert!(plain_http(metrics_addr, "GET", "/v1/tenants", "").starts_with("HTTP/1.1 404"));
    assert!(!ok(&socket, &["tenant", "list"]).contains("scraped"));

    // Capture c2 while traffic flows, frames from or to ns1's MAC: what c2 transmits
    // lands in a pcapng, traffic goes on.
    let pcap = dir.path().join("c2.pcapng");
    let capture = std::thread::spawn({
        let (socket, pcap, mac) = (socket.clone(), pcap.clone(), l1.mac.clone());
        move || {
            tenetctl(
                &socket,
                &[
                    "capture",
                    "--mac",
                    &mac,
                    "--port",
                    "c2",
                    "--count",
                    "20",
                    "--seconds",
                    "10",
                    "-w",
                    &pcap.to_string_lossy(),
                ],
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let ctag = 0x0a91_0002;
    let rx = Receiver::start(&ns2, "eth0", 40, ctag).unwrap();
    tests::send_frames(&ns1, "eth0", 40, ctag, &l1.mac, &l2.mac, None).unwrap();
    assert_eq!(
        rx.collect(40, Duration::from_secs(10)).len(),
        40,
        "capture disturbed traffic"
    );
    let out = capture.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let capture = control::pcapng::parse(&std::fs::read(&pcap).unwrap()).unwrap();
    assert_eq!(capture.interfaces, ["c2"]);
    // What c2 sends (the frames from ns1), not what it receives.
    let records: Vec<Vec<u8>> = capture
        .packets
        .into_iter()
        .filter(|p| p.direction == Some(dataplane::pipeline::capture::Direction::Out))
        .map(|p| p.frame)
        .collect();
    assert_eq!(
        records.len(),
        20,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(records[0], expected_frame(&l1.mac, &l2.mac, ctag, 0, 64));
    assert_eq!(records[19], expected_frame(&l1.mac, &l2.mac, ctag, 19, 64));

    let doc = http_get(&socket, "/v1/openapi.json");
    assert!(
        doc.contains("\"openapi\": \"3.0.3\"") && doc.contains("/v1/tenants/{name}"),
        "{doc}"
    );

    // Restart: everything is as it was.
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(!socket.exists(), "API socket removed at stop");
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    let list = ok(&socket, &["tenant", "list"]);
    assert!(list.contains("t18") && !list.contains("t19"), "{list}");
    assert!(ok(&socket, &["endpoint", "list"]).contains(&l2.mac));

    // kill -9 in the middle of a burst of writes: every acknowledged change is kept,
    // and at most the one in flight besides.
    let writer = std::thread::spawn({
        let socket = socket.clone();
        move || {
            for i in 0..200 {
                let out = tenetctl(
                    &socket,
                    &[
                        "tenant",
                        "add",
                        &format!("k{i}"),
                        "--id",
                        &(5000 + i).to_string(),
                    ],
                );
                if !out.status.success() {
                    return i;
                }
            }
            200
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    tests::run("kill", &["-9", &tenetd.pid().to_string()]).unwrap();
    let written = writer.join().unwrap();
    drop(tenetd);
    // A killed process cleans nothing; the test removes what it leaves.
    tests::remove_dpdk_runtime(&prefix);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .count();
    assert_eq!(leftovers, 0, "a journal leaves no temporary file");
    // And it restarts from it.
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    let tenants: serde_json::Value =
        serde_json::from_str(&ok(&socket, &["--json", "tenant", "list"])).unwrap();
    let kept = tenants
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with('k'))
        .count();
    assert!(
        kept >= written && kept <= written + 1,
        "acknowledged {written} writes, state has {kept}"
    );
    assert!(ok(&socket, &["tenant", "list"]).contains("t18"));
    tenetd.stop().unwrap();
}

/// A container attached while another container pair's traffic flows, reached at once,
/// kept across a restart, and detached again without loss for the others.
#[test]
fn ports_attach_and_detach_while_traffic_flows() {
    let dir = TempDir::new("hot").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let (ns1, ns2, ns3) = (
        Netns::new("hc1-").unwrap(),
        Netns::new("hc2-").unwrap(),
        Netns::new("hc3-").unwrap(),
    );
    let (l1, l2, l3) = (
        Link::new(&ns1, None).unwrap(),
        Link::new(&ns2, None).unwrap(),
        Link::new(&ns3, None).unwrap(),
    );
    let text = config(dir.path(), &unique("hot"), &l1.host, &l2.host);
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    // Endpoints make c1 -> c2 a known unicast that never floods to the new port.
    ok(
        &socket,
        &[
            "endpoint", "add", "--tenant", "red", "--mac", &l2.mac, "--port", "c2",
        ],
    );

    let steady = |count: usize, tag: u32, around: &dyn Fn()| {
        let rx = Receiver::start(&ns2, "eth0", count, tag).unwrap();
        let sender = std::thread::spawn({
            let (ns, src, dst) = (ns1.name().to_owned(), l1.mac.clone(), l2.mac.clone());
            move || {
                Command::new("ip")
                    .args(["netns", "exec", &ns, "python3"])
                    .arg(tests::frames_tool())
                    .args([
                        "send",
                        "eth0",
                        &count.to_string(),
                        "--tag",
                        &tag.to_string(),
                    ])
                    .args(["--src", &src, "--dst", &dst, "--gap", "0.003"])
                    .status()
                    .unwrap()
            }
        });
        around();
        assert!(sender.join().unwrap().success());
        assert_eq!(
            rx.collect(count, Duration::from_secs(10)).len(),
            count,
            "c1 -> c2 lost frames"
        );
    };

    steady(300, 0x40700001, &|| {
        ok(
            &socket,
            &[
                "port",
                "add",
                "c3",
                "--backend",
                "af-packet",
                "--interface",
                &l3.host,
                "--role",
                "access",
                "--tenant",
                "red",
            ],
        );
    });
    let ports = ok(&socket, &["port", "list"]);
    assert!(
        ports.contains("c3") && ports.contains("access:red"),
        "{ports}"
    );
    // The new container is switched at once (a broadcast from it reaches c2).
    let rx = Receiver::start(&ns2, "eth0", 20, 0x40700002).unwrap();
    tests::send_frames(
        &ns3,
        "eth0",
        20,
        0x40700002,
        &l3.mac,
        "ff:ff:ff:ff:ff:ff",
        None,
    )
    .unwrap();
    assert_eq!(
        rx.collect(20, Duration::from_secs(5)).len(),
        20,
        "c3 attached but not switched"
    );
    refused(
        &socket,
        &[
            "port",
            "add",
            "c4",
            "--backend",
            "af-packet",
            "--interface",
            "tenet-none0",
            "--role",
            "access",
            "--tenant",
            "red",
        ],
        "backend",
    );
    refused(
        &socket,
        &[
            "port",
            "add",
            "c5",
            "--backend",
            "af-packet",
            "--interface",
            &l3.host,
            "--role",
            "access",
            "--tenant",
            "red",
        ],
        "used by another port",
    );
    assert!(
        !ok(&socket, &["port", "list"]).contains("c4"),
        "a failed attach changes nothing"
    );

    // Restart: the attached port comes back.
    tenetd.stop().unwrap();
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    assert!(ok(&socket, &["port", "list"]).contains("c3"));

    steady(300, 0x40700003, &|| {
        std::thread::sleep(Duration::from_millis(200));
        ok(&socket, &["port", "del", "c3"]);
    });
    assert!(!ok(&socket, &["port", "list"]).contains("c3"));
    refused(&socket, &["port", "del", "c2"], "has endpoints");
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// vhost-user ports attached live in client mode: a DPDK container behind them is
/// switched at once, and after the container restarts tenetd reconnects by itself.
#[test]
fn vhost_user_client_ports_attach_live_and_reconnect() {
    let dir = TempDir::new("vhc").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let (sock0, sock1) = (dir.path().join("ctr0.sock"), dir.path().join("ctr1.sock"));
    let text = format!(
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

[[port]]
name = "sink"
backend = "null"
role = "access"
tenant = "red"
"#,
        prefix = unique("vhc"),
        dir = dir.path().display()
    );
    let mut tenetd = Tenetd::start(&text, &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    for (name, sock) in [("v0", &sock0), ("v1", &sock1)] {
        ok(
            &socket,
            &[
                "port",
                "add",
                name,
                "--backend",
                "vhost-user",
                "--path",
                &sock.to_string_lossy(),
                "--client",
                "--role",
                "access",
                "--tenant",
                "red",
            ],
        );
    }
    let first = tests::testpmd_virtio_pair(&sock0, &sock1, true, 6);
    assert!(
        first.len() >= 2 && first[0] > 1000 && first[1] > 1000,
        "first container run: {first:?}"
    );
    // The container restarts; tenetd's client ports reconnect without being told.
    let second = tests::testpmd_virtio_pair(&sock0, &sock1, true, 8);
    assert!(
        second.len() >= 2 && second[0] > 1000 && second[1] > 1000,
        "after the restart: {second:?}"
    );
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// A request with a JSON body on the API socket; returns the raw HTTP answer.
/// The backends the live-port test above does not cover: a tap device, an AF_XDP socket
/// on a container's veth, and a bond of two members, each attached through the API,
/// listed with its device, and detached again, while the switch keeps forwarding.
#[test]
fn tap_af_xdp_and_bond_ports_attach_and_detach_live() {
    let dir = TempDir::new("hotb").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let (ns1, ns2, ns3) = (
        Netns::new("hb1-").unwrap(),
        Netns::new("hb2-").unwrap(),
        Netns::new("hb3-").unwrap(),
    );
    let (l1, l2, l3) = (
        Link::new(&ns1, Some("10.77.0.1/24")).unwrap(),
        Link::new(&ns2, Some("10.77.0.2/24")).unwrap(),
        Link::new(&ns3, None).unwrap(),
    );
    let mut tenetd = Tenetd::start(
        &config(dir.path(), &unique("hotb"), &l1.host, &l2.host),
        &[],
    )
    .unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    let tap = unique("tt");
    let ports = [
        (
            "t1",
            format!(r#"{{"name":"t1","backend":"tap","interface":"{tap}","role":"access","tenant":"red"}}"#),
            "net_tap",
        ),
        (
            "x1",
            format!(
                r#"{{"name":"x1","backend":"af-xdp","interface":"{}","role":"access","tenant":"red"}}"#,
                l3.host
            ),
            "net_af_xdp",
        ),
        (
            "b1",
            r#"{"name":"b1","backend":"bond","mode":"active-backup","members":[{"backend":"null"},{"backend":"null"}],"role":"access","tenant":"red"}"#
                .to_owned(),
            "net_bonding",
        ),
    ];
    for (name, body, driver) in &ports {
        let answer = http(&socket, "POST", "/v1/ports", body);
        assert_eq!(answer.status, 201, "{name}: {answer}");
        let listed = http_get(&socket, "/v1/ports");
        assert!(
            listed.contains(&format!("\"{name}\"")) && listed.contains(driver),
            "{name} not listed with {driver}: {listed}"
        );
        // The switch still forwards between the containers it had.
        tests::wait_for_ping(&ns1, "10.77.0.2");
    }
    if let Ok(out) = Command::new("ip").args(["link", "show", &tap]).output() {
        assert!(out.status.success(), "the tap device exists while attached");
    }
    for (name, _, _) in &ports {
        let answer = http(&socket, "DELETE", &format!("/v1/ports/{name}"), "");
        assert_eq!(answer.status, 200, "{name}: {answer}");
    }
    let listed = http_get(&socket, "/v1/ports");
    for (name, _, _) in &ports {
        assert!(
            !listed.contains(&format!("\"{name}\"")),
            "{name} still listed"
        );
    }
    let gone = Command::new("ip")
        .args(["link", "show", &tap])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the tap device outlived its port");
    tests::wait_for_ping(&ns1, "10.77.0.2");
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// The log filter changes while tenetd runs (`PUT /v1/log`): at `warn` a change's
/// `applied` line is not logged, back at `info` it is; a bad filter is refused naming
/// the field and leaves the one in force.
#[test]
fn the_log_filter_changes_while_tenetd_runs() {
    let dir = TempDir::new("log").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let config = format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{}"
memory_mb = 128

[[port]]
name = "p0"
backend = "null"

[control]
api_socket = "{}"
"#,
        unique("log"),
        socket.display()
    );
    let tenetd = Tenetd::serving(None, &config).unwrap();
    let shown = http(&socket, "GET", "/v1/log", "");
    assert_eq!(shown.body["filter"], "info", "{}", shown.body);
    let bad = http(&socket, "PUT", "/v1/log", r#"{"filter":"info,=["}"#);
    assert_eq!(
        (bad.status, &bad.body["field"]),
        (400, &serde_json::json!("filter")),
        "{}",
        bad.body
    );
    assert_eq!(http(&socket, "GET", "/v1/log", "").body["filter"], "info");

    let quiet = http(&socket, "PUT", "/v1/log", r#"{"filter":"warn"}"#);
    assert!(quiet.ok(), "{}", quiet.body);
    ok(&socket, &["tenant", "add", "hushed", "--id", "7"]);
    let wait_logged = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !tenetd.stderr_text().contains(needle) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    assert!(http(&socket, "PUT", "/v1/log", r#"{"filter":"info"}"#).ok());
    ok(&socket, &["tenant", "add", "heard", "--id", "8"]);
    assert!(wait_logged("\"heard\""), "{}", tenetd.stderr_text());
    let logs = tenetd.stderr_text();
    assert!(!logs.contains("\"hushed\""), "logged at warn: {logs}");
    assert!(logs.contains("log filter changed"), "{logs}");
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
