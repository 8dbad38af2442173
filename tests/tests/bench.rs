//! tenet-bench as a user runs it: the generator's frames checked in a capture, its
//! counts through a loopback, its loss and reordering detection on a capture damaged
//! in known places; the runner beside dpdk-testpmd and Open vSwitch with DPDK, in the
//! replay and PVP topologies.

use std::path::Path;
use std::process::Command;

use bench::probe;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde_json::Value;
use tests::{binary, unique, TempDir};

/// Runs `tenet-bench gen` with `args` on core 1 and returns its report.
fn gen(dir: &Path, args: &[&str]) -> Value {
    let json = dir.join(unique("gen-")).with_extension("json");
    let prefix = unique("tbg");
    let out = Command::new(binary("tenet-bench"))
        .arg("gen")
        .args(args)
        .args(["--core", "1", "--file-prefix", &prefix, "--json"])
        .arg(&json)
        .output()
        .expect("tenet-bench runs");
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&prefix));
    assert!(
        out.status.success(),
        "tenet-bench gen {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn n(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

#[test]
fn the_generator_sends_what_its_templates_say() {
    let dir = TempDir::new("gen").unwrap();
    for (template, size) in [
        ("l2", "64"),
        ("vlan", "64"),
        ("gre", "64"),
        ("udp", "1518"),
        ("tcp", "128"),
        ("tenants", "64"),
    ] {
        let capture = dir.path().join(format!("{template}.pcap"));
        let port = format!("net_pcap0,tx_pcap={}", capture.display());
        let report = gen(
            dir.path(),
            &[
                "--port",
                &port,
                "--mode",
                "txonly",
                "--template",
                template,
                "--size",
                size,
                "--flows",
                "16",
                "--count",
                "64",
                "--warmup",
                "0",
                "--duration",
                "5",
            ],
        );
        assert_eq!(n(&report, "sent"), 64, "{template}");
        let frames = control::pcap::read(&capture).unwrap();
        assert_eq!(
            frames.len(),
            64,
            "{template}: the capture holds every frame sent"
        );
        let size: usize = size.parse().unwrap();
        for (i, frame) in frames.iter().enumerate() {
            // GRE frames carry the sized frame inside 42 bytes of outer headers.
            let (outer, inner) = if template == "gre" {
                (&frame[..42], &frame[42..])
            } else {
                (&frame[..0], &frame[..])
            };
            assert_eq!(
                inner.len(),
                size - 4,
                "{template} frame {i}: size without FCS"
            );
            if template == "gre" {
                assert_eq!(&outer[23..24], &[47], "outer protocol GRE");
                assert_eq!(&outer[38..42], &4242u32.to_be_bytes(), "GRE key");
            }
            let parsed = SlicedPacket::from_ethernet(inner)
                .unwrap_or_else(|e| panic!("{template} frame {i}: {e}"));
            let Some(NetSlice::Ipv4(ip)) = &parsed.net else {
                panic!("{template} frame {i}: IPv4")
            };
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            let flow = i % 16;
            assert_eq!(
                header.source,
                [10, 0, 0, 1 + flow as u8],
                "{template} frame {i}: flow"
            );
            let checksum_ok = match &parsed.transport {
                Some(TransportSlice::Udp(u)) => {
                    u.to_header()
                        .calc_checksum_ipv4(&header, u.payload())
                        .unwrap()
                        == u.checksum()
                }
                Some(TransportSlice::Tcp(t)) => {
                    t.to_header()
                        .calc_checksum_ipv4(&header, t.payload())
                        .unwrap()
                        == t.checksum()
                }
                _ => panic!("{template} frame {i}: UDP or TCP"),
            };
            assert!(
                checksum_ok,
                "{template} frame {i}: L4 checksum with the probe in"
            );
            match template {
                "vlan" => assert_eq!(&frame[12..16], &[0x81, 0, 0, 100]),
                "tenants" => {
                    assert_eq!(&frame[12..14], &[0x81, 0]);
                    assert_eq!(u16::from_be_bytes([frame[14], frame[15]]), 1 + flow as u16);
                }
                "udp" | "tcp" => assert_eq!(&inner[..6], &[2, 0, 0, 0, 0x0b, 0], "router MAC"),
                _ => assert_eq!(&inner[..6], &[2, 0, 0, 0, 0x0b, (flow % 4) as u8]),
            }
            let (stream, p) = probe::read(frame).expect("every frame carries a probe");
            assert_eq!(
                (stream, p.seq),
                (0, i as u32),
                "{template} frame {i}: probe"
            );
        }
    }
}

#[test]
fn the_generator_counts_what_comes_back() {
    let dir = TempDir::new("gen").unwrap();
    // A ring port hands back everything sent on it.
    let report = gen(
        dir.path(),
        &["--port", "net_ring0", "--duration", "1", "--warmup", "0.2"],
    );
    let sent = n(&report, "sent");
    assert!(sent > 100_000, "{report}");
    assert_eq!(n(&report, "received"), sent);
    assert_eq!(n(&report, "probes"), sent);
    assert_eq!(n(&report, "lost"), 0);
    assert_eq!(n(&report, "sequence_lost"), 0);
    assert_eq!(n(&report, "reordered"), 0);
    assert!(report["rx_pps"].as_f64().unwrap() > 0.0);
    assert!(
        report["latency"]["samples"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["latency"]["p99_ns"].as_u64().unwrap()
            >= report["latency"]["p50_ns"].as_u64().unwrap()
    );
}

#[test]
fn the_generator_finds_the_frames_a_link_lost_or_swapped() {
    let dir = TempDir::new("gen").unwrap();
    let sent = dir.path().join("sent.pcap");
    gen(
        dir.path(),
        &[
            "--port",
            &format!("net_pcap0,tx_pcap={}", sent.display()),
            "--mode",
            "txonly",
            "--count",
            "1000",
            "--warmup",
            "0",
            "--duration",
            "5",
        ],
    );
    // The link: ten frames from the 100th lost, two pairs delivered the wrong way round.
    let mut frames = control::pcap::read(&sent).unwrap();
    assert_eq!(frames.len(), 1000);
    frames.swap(500, 501);
    frames.swap(200, 201);
    frames.drain(100..110);
    let damaged = dir.path().join("damaged.pcap");
    control::pcap::write(&damaged, &frames).unwrap();
    let report = gen(
        dir.path(),
        &[
            "--port",
            &format!("net_pcap0,rx_pcap={}", damaged.display()),
            "--mode",
            "rxonly",
            "--rx",
            "0",
            "--warmup",
            "0",
            "--duration",
            "1",
        ],
    );
    assert_eq!(n(&report, "received"), 990, "{report}");
    assert_eq!(n(&report, "sequence_lost"), 10, "{report}");
    assert_eq!(n(&report, "reordered"), 2, "{report}");
}

/// One runner at a time: each starts its switches on the same core, under the same
/// DPDK prefixes and OVS bridge names.
static RUNNER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `tenet-bench run ARGS` beside testpmd and OVS, one short round, into a fresh
/// directory and returns its results.
fn run_one_round_beside_peers(args: &[&str]) -> Value {
    let _one = RUNNER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("run").unwrap();
    let out = dir.path().join("results");
    let output = Command::new(binary("tenet-bench"))
        .arg("run")
        .args(args)
        .args([
            "--peer",
            "testpmd,ovs",
            "--rounds",
            "1",
            "--duration",
            "2",
            "--warmup",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("tenet-bench runs");
    assert!(
        output.status.success(),
        "tenet-bench run {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for file in ["results.csv", "summary.txt", "chart.svg", "env.txt"] {
        assert!(out.join(file).exists(), "{file} written");
    }
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

fn summary<'a>(results: &'a Value, scenario: &str, switch: &str) -> &'a Value {
    results["summary"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == scenario && s["switch"] == switch)
        .unwrap_or_else(|| panic!("no {scenario}/{switch} in {results}"))
}

#[test]
fn the_runner_measures_tenet_beside_testpmd_and_ovs() {
    let results = run_one_round_beside_peers(&["l2", "route"]);
    for scenario in ["l2", "route"] {
        for switch in ["tenet", "testpmd", "ovs"] {
            let s = summary(&results, scenario, switch);
            assert!(
                s["mpps"].as_f64().unwrap() > 0.1,
                "{scenario} {switch}: {s}"
            );
            assert!(
                s["cycles_per_pkt"].as_f64().unwrap() > 0.0,
                "{scenario} {switch}: {s}"
            );
        }
        // tenet forwarded without a drop; OVS's datapath did the scenario's work.
        assert_eq!(
            summary(&results, scenario, "tenet")["checks"],
            serde_json::json!([1, 1])
        );
        assert_eq!(
            summary(&results, scenario, "ovs")["checks"],
            serde_json::json!([1, 1])
        );
        assert!(
            summary(&results, scenario, "tenet")["vs_ovs"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(
            summary(&results, scenario, "tenet")["vs_testpmd"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
}

#[test]
fn the_runner_measures_gre_of_many_tenants_beside_testpmd_and_ovs() {
    // 1,000 tenants' keys from one peer, 2,000 of their 100,000 MACs in the input.
    let results = run_one_round_beside_peers(&["gre-many", "--flows", "2000"]);
    for switch in ["tenet", "testpmd", "ovs"] {
        let s = summary(&results, "gre-many", switch);
        assert!(s["mpps"].as_f64().unwrap() > 0.1, "{switch}: {s}");
    }
    // tenet decapsulated every key without a drop; OVS's datapath popped the tunnel.
    for switch in ["tenet", "ovs"] {
        assert_eq!(
            summary(&results, "gre-many", switch)["checks"],
            serde_json::json!([1, 1]),
            "{switch}"
        );
    }
}

#[test]
fn the_runner_loops_vhost_user_through_each_switch() {
    let results = run_one_round_beside_peers(&["vlan", "--topology", "pvp"]);
    for switch in ["tenet", "testpmd", "ovs"] {
        let s = summary(&results, "vlan", switch);
        assert!(s["mpps"].as_f64().unwrap() > 0.05, "{switch}: {s}");
        assert!(
            s["p99_ns"].as_u64().unwrap() > 0,
            "{switch}: latency measured: {s}"
        );
    }
    for row in results["rows"].as_array().unwrap() {
        assert_ne!(row["check"], false, "{row}");
    }
}
