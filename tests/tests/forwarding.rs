//! tenetd forwarding real traffic between containers (network namespaces) and between
//! vhost-user peers, on the cross-connect pipeline.

use std::time::Duration;

use tests::{expected_frame, send_frames, unique, Link, Netns, Receiver, TempDir, Tenetd};

fn xconnect_config(prefix: &str, a: &str, b: &str) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191

[[port]]
name = "a"
{a}

[[port]]
name = "b"
{b}

[[cross_connect]]
ports = ["a", "b"]
"#
    )
}

/// Two containers on one tenetd: frames cross byte for byte and in order, and real
/// ICMP (with ARP) works both ways.
fn containers_talk_through(backend: &str) {
    let ns1 = Netns::new("c1-").unwrap();
    let ns2 = Netns::new("c2-").unwrap();
    let link1 = Link::new(&ns1, Some("10.77.0.1/24")).unwrap();
    let link2 = Link::new(&ns2, Some("10.77.0.2/24")).unwrap();
    let config = xconnect_config(
        &unique("fwd"),
        &format!("backend = \"{backend}\"\ninterface = \"{}\"", link1.host),
        &format!("backend = \"{backend}\"\ninterface = \"{}\"", link2.host),
    );
    let mut tenetd = Tenetd::start(&config, &[]).unwrap();
    tenetd.wait_ready(Duration::from_secs(30)).unwrap();

    const COUNT: usize = 300;
    let tag = 0x7e5e_0001;
    let receiver = Receiver::start(&ns2, "eth0", COUNT, tag).unwrap();
    send_frames(&ns1, "eth0", COUNT, tag, &link1.mac, &link2.mac, None).unwrap();
    let got = receiver.collect(COUNT, Duration::from_secs(15));
    let want: Vec<Vec<u8>> = (0..COUNT as u32)
        .map(|seq| expected_frame(&link1.mac, &link2.mac, tag, seq, 64))
        .collect();
    assert_eq!(got.len(), COUNT, "frames lost crossing tenetd ({backend})");
    for (seq, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "frame {seq} changed crossing tenetd ({backend})");
    }

    ns1.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"])
        .expect("ping from container 1 to container 2");
    ns2.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", "10.77.0.1"])
        .expect("ping from container 2 to container 1");

    let stopped = tenetd.stop().unwrap();
    assert!(
        stopped.status.success(),
        "tenetd failed: {}",
        stopped.stderr
    );
    let result = stopped
        .stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .expect("RESULT line");
    let pkts: u64 = result
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pkts="))
        .and_then(|n| n.parse().ok())
        .expect("pkts= in RESULT");
    assert!(
        pkts >= (COUNT + 12) as u64,
        "tenetd forwarded {pkts} packets"
    );
}

#[test]
fn af_packet_cross_connect_carries_frames_and_ping() {
    containers_talk_through("af-packet");
}

#[test]
fn af_xdp_cross_connect_carries_frames_and_ping() {
    containers_talk_through("af-xdp");
}

/// A vhost-user pair driven by dpdk-testpmd with virtio-user ports, as a DPDK
/// container or VM would attach: testpmd's io loop runs through tenetd both ways.
#[test]
fn vhost_user_pair_with_testpmd() {
    let dir = TempDir::new("vhost").unwrap();
    let sock0 = dir.path().join("vhu0.sock");
    let sock1 = dir.path().join("vhu1.sock");
    let config = xconnect_config(
        &unique("vhu"),
        &format!("backend = \"vhost-user\"\npath = \"{}\"", sock0.display()),
        &format!("backend = \"vhost-user\"\npath = \"{}\"", sock1.display()),
    );
    let mut tenetd = Tenetd::start(&config, &[]).unwrap();
    tenetd.wait_ready(Duration::from_secs(30)).unwrap();
    assert!(
        sock0.exists() && sock1.exists(),
        "vhost-user server sockets"
    );

    let rx = tests::testpmd_virtio_pair(&sock0, &sock1, false, 6);
    assert!(rx.len() >= 2, "no per-port statistics from testpmd");
    assert!(
        rx[0] > 1000 && rx[1] > 1000,
        "testpmd received {rx:?} through tenetd"
    );
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        !sock0.exists() && !sock1.exists(),
        "vhost sockets removed at stop"
    );
}

/// Two workers: each container port belongs to another worker, so every frame crosses
/// from the worker that received it to the one that owns the output's TX queue through
/// their ring, in both directions, and arrives whole and in order.
#[test]
fn two_workers_hand_frames_over_through_rings() {
    let ns1 = Netns::new("w1-").unwrap();
    let ns2 = Netns::new("w2-").unwrap();
    let link1 = Link::new(&ns1, Some("10.78.0.1/24")).unwrap();
    let link2 = Link::new(&ns2, Some("10.78.0.2/24")).unwrap();
    let config = format!(
        r#"
[dataplane]
workers = [0, 1]
file_prefix = "{prefix}"
memory_mb = 256
mbufs = 8191
flow_cache = 256

[[tenant]]
name = "red"
id = 1

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
        prefix = unique("w2"),
        a = link1.host,
        b = link2.host
    );
    let mut tenetd = Tenetd::start(&config, &[]).unwrap();
    tenetd.wait_ready(Duration::from_secs(30)).unwrap();
    for (from, to, src, dst, tag) in [
        (&ns1, &ns2, &link1.mac, &link2.mac, 0x2a0_0001u32),
        (&ns2, &ns1, &link2.mac, &link1.mac, 0x2a0_0002u32),
    ] {
        let receiver = Receiver::start(to, "eth0", 200, tag).unwrap();
        send_frames(from, "eth0", 200, tag, src, dst, None).unwrap();
        let got = receiver.collect(200, Duration::from_secs(10));
        let want: Vec<Vec<u8>> = (0..200)
            .map(|seq| expected_frame(src, dst, tag, seq, 64))
            .collect();
        assert_eq!(
            got, want,
            "frames lost, changed or reordered between workers"
        );
    }
    ns1.exec("ping", &["-c", "2", "-W", "2", "10.78.0.2"])
        .expect("ping across workers");
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        !stopped.stdout.contains("drop ring-full"),
        "{}",
        stopped.stdout
    );
    // The workers' caches are the size the config gave (the fewest entries it may).
    assert!(
        stopped.stderr.contains("flow_cache=256"),
        "{}",
        stopped.stderr
    );
}
