//! Watching real traffic as an operator does, between two containers of one tenant:
//! `tenetctl capture -w - | tcpdump -r -` (pcapng streamed as the workers take it,
//! each frame with its port, direction and the worker's timestamp, a filter applied
//! in the workers) and `tenetctl trace --live` (the decisions the workers take for the
//! next frames a port receives), while the pings go on.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use control::pcapng;
use dataplane::pipeline::capture::Direction;
use serde_json::Value;
use tests::{binary, tenetctl, unique, wait_for_ping, Link, Netns, TempDir, Tenetd};

fn config(api: &Path, c1: &str, c2: &str) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095

[control]
api_socket = "{api}"

[[tenant]]
name = "red"
id = 100
subnets = ["10.1.0.1/24"]

[[port]]
name = "c1"
backend = "af-packet"
interface = "{c1}"
role = "access"
tenant = "red"

[[port]]
name = "c2"
backend = "af-packet"
interface = "{c2}"
role = "access"
tenant = "red"
"#,
        prefix = unique("obs"),
        api = api.display(),
    )
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The ICMP type of an untagged IPv4 frame, if it is ICMP.
fn icmp_type(frame: &[u8]) -> Option<u8> {
    (frame.get(12..14)? == [8, 0] && *frame.get(23)? == 1).then(|| frame.get(34).copied())?
}

#[test]
fn capture_streams_to_tcpdump_and_live_trace_follows_real_frames() {
    let dir = TempDir::new("observe").unwrap();
    let api = dir.path().join("tenetd.sock");
    let (ns1, ns2) = (Netns::new("obs1-").unwrap(), Netns::new("obs2-").unwrap());
    let l1 = Link::new(&ns1, Some("10.1.0.2/24")).unwrap();
    let l2 = Link::new(&ns2, Some("10.1.0.3/24")).unwrap();
    let mut tenetd = Tenetd::start(&config(&api, &l1.host, &l2.host), &[]).unwrap();
    tenetd
        .wait_for_line("API listening", Duration::from_secs(30))
        .unwrap();
    wait_for_ping(&ns1, "10.1.0.3");

    // Capture c1 and c2, ICMP to or from 10.1.0.3 only, piped into tcpdump as it
    // comes; pings to the gateway run beside and must not be taken.
    let file = dir.path().join("icmp.pcapng");
    let started = now_ns();
    let pipeline = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ctl} --socket {api} capture --port c1 --port c2 --protocol icmp --ip 10.1.0.3 \
             --count 8 --seconds 20 -w - | tee {file} | tcpdump -r - -n -e -tt",
            ctl = binary("tenetctl").display(),
            api = api.display(),
            file = file.display(),
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tenetd
        .wait_for_line("capture started", Duration::from_secs(10))
        .unwrap();
    // Another capture meanwhile is refused, naming what runs.
    let second = tenetctl(&api, &["capture", "--port", "c1", "-w", "-"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("ports: a capture of c1, c2 is running"),
        "{second:?}"
    );
    ns1.exec("ping", &["-c", "2", "-i", "0.2", "10.1.0.1"])
        .unwrap();
    ns1.exec("ping", &["-c", "2", "-i", "0.3", "10.1.0.3"])
        .unwrap();
    let out = pipeline.wait_with_output().unwrap();
    let ended = now_ns();
    let printed = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}\n{said}");
    assert!(said.contains("8 packets written to stdout"), "{said}");
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 8, "tcpdump read every frame: {printed}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("ICMP echo request"))
            .count(),
        4,
        "{printed}"
    );
    assert!(
        !printed.contains("10.1.0.1"),
        "the filter took a gateway ping: {printed}"
    );
    // Each frame in its port's interface, in and out, stamped by the worker: a request
    // leaves c2 after it came into c1, its reply comes later, and every stamp falls
    // within the capture.
    let capture = pcapng::parse(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(capture.interfaces, ["c1", "c2"]);
    assert_eq!(capture.lost, 0);
    let seen: Vec<(u32, Option<Direction>, Option<u8>)> = capture
        .packets
        .iter()
        .map(|p| (p.interface, p.direction, icmp_type(&p.frame)))
        .collect();
    let (c1, c2, request, reply) = (0, 1, Some(8), Some(0));
    let (inbound, outbound) = (Some(Direction::In), Some(Direction::Out));
    let round = [
        (c1, inbound, request),
        (c2, outbound, request),
        (c2, inbound, reply),
        (c1, outbound, reply),
    ];
    assert_eq!(seen, [round, round].concat(), "{seen:?}");
    let stamps: Vec<u64> = capture.packets.iter().map(|p| p.ns).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    assert!(
        stamps[0] >= started && stamps[7] <= ended,
        "{stamps:?} not in {started}..{ended}"
    );
    // A ping and its reply are stamped apart (they were one control-loop tick once).
    assert!(stamps[2] > stamps[1], "{stamps:?}");
    assert!(
        stamps[4] - stamps[0] >= 200_000_000,
        "0.3 s between pings: {stamps:?}"
    );

    // Live trace: the next two frames c1 receives, with the decisions taken.
    let trace = std::thread::spawn({
        let api = api.clone();
        move || tenetctl(&api, &["trace", "--port", "c1", "--live", "--count", "2"])
    });
    tenetd
        .wait_for_line("live trace started", Duration::from_secs(10))
        .unwrap();
    ns1.exec("ping", &["-c", "2", "-i", "0.2", "10.1.0.3"])
        .unwrap();
    let out = trace.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Packet 1: worker 0,") && text.contains("Packet 2: worker 0,"),
        "{text}"
    );
    assert!(!text.contains("Packet 3"), "{text}");
    assert!(
        text.contains("10.1.0.2 > 10.1.0.3, ICMP echo request"),
        "{text}"
    );
    assert!(
        text.contains("1. ingress port c1: access port of tenant red"),
        "{text}"
    );
    assert!(text.contains("out: port c2"), "{text}");
    assert!(!text.contains('#'), "every number named: {text}");

    // The same as JSON; the frames of a port nobody sends on never come.
    let trace = std::thread::spawn({
        let api = api.clone();
        move || {
            tenetctl(
                &api,
                &[
                    "--json",
                    "trace",
                    "--port",
                    "c1",
                    "--live",
                    "--count",
                    "1",
                    "--seconds",
                    "5",
                ],
            )
        }
    });
    tenetd
        .wait_for_line("live trace started", Duration::from_secs(10))
        .unwrap();
    ns1.exec("ping", &["-c", "1", "10.1.0.3"]).unwrap();
    let out = trace.join().unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["port"], "c1");
    assert_eq!(rows[0]["length"], 98, "{rows}");
    assert_eq!(rows[0]["outputs"][0], "port c2", "{rows}");
    assert!(rows[0]["head"]
        .as_str()
        .unwrap()
        .starts_with(&l2.mac.replace(':', "")));

    // A reader that goes away ends the capture (tenetd sees the stream closed at its
    // next chunk), and the next capture may start.
    let reader = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ctl} --socket {api} capture --port c1 --count 0 --seconds 60 -w - | head -c 64 >/dev/null",
            ctl = binary("tenetctl").display(),
            api = api.display(),
        ))
        .spawn()
        .unwrap();
    tenetd
        .wait_for_line("capture started", Duration::from_secs(10))
        .unwrap();
    let pinging = std::thread::spawn({
        let ns = ns1.name().to_owned();
        move || {
            Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-c", "40", "-i", "0.1", "10.1.0.3",
                ])
                .output()
        }
    });
    tenetd
        .wait_for_line("capture done", Duration::from_secs(10))
        .unwrap();
    assert!(tenetd.stderr_text().contains("reader_gone=true"));
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    pinging.join().unwrap().unwrap();

    // Refusals name the field and change nothing.
    for (args, says) in [
        (
            &["trace", "--port", "c9", "--live"][..],
            "port: no port is named `c9`",
        ),
        (
            &["trace", "--port", "c1", "--live", "--count", "0"],
            "count: must be between 1 and 1000",
        ),
        (
            &["capture", "--port", "c9", "-w", "-"],
            "ports: no port is named `c9`",
        ),
        (&["capture", "--mac", "nope", "-w", "-"], "mac:"),
        (
            &["capture", "--seconds", "591", "-w", "-"],
            "seconds: must be above 0 and at most 590",
        ),
    ] {
        let out = tenetctl(&api, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(says), "{args:?}: {said}");
    }
    wait_for_ping(&ns1, "10.1.0.3");
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
