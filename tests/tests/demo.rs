//! The demo a new user runs first (`scripts/demo`), in its checks-only form: two
//! tenants with the same subnet on one host, red's containers reaching each other,
//! red never reaching blue, both reaching a server outside through their gateways;
//! afterwards nothing it made is left (namespaces, veths, tenetd, hugepage files).

use std::process::Command;

use tests::{binary, dpdk_leftovers};

#[test]
fn the_demo_shows_two_isolated_tenants_with_gateways_and_cleans_up() {
    let bin = binary("tenetd");
    let dir = bin.parent().expect("target directory");
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(format!("{repo}/scripts/demo"))
        .arg("--once")
        .env("TENET_BIN", dir)
        .output()
        .expect("scripts/demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for check in [
        "ok    red1 -> red2",
        "ok    red1 -> blue1 (tenant blue, same subnet): isolated",
        "ok    red1 -> red's gateway",
        "ok    red1 -> 203.0.113.10 outside",
        "ok    blue1 -> 203.0.113.10 outside",
    ] {
        assert!(stdout.contains(check), "`{check}` missing:\n{stdout}");
    }
    assert!(stdout.contains("tenant red") && stdout.contains("tenant blue"));
    // tenetctl's views name what the tables hold: red1's MAC learned on its port,
    // each gateway's router MAC installed, the underlay's next hop and red's
    // neighbour 10.1.0.2 (red1 used its gateway) with their MACs.
    let has_line = |words: &[&str]| {
        stdout
            .lines()
            .any(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w)))
    };
    assert!(has_line(&["red", "learned", "red1"]), "{stdout}");
    assert!(has_line(&["blue", "learned", "blue1"]), "{stdout}");
    assert!(has_line(&["red", "static", "router"]), "{stdout}");
    assert!(has_line(&["-", "198.18.0.254"]), "{stdout}");
    assert!(has_line(&["red", "10.1.0.2"]), "{stdout}");
    assert!(stdout.contains("demo: cleaned up"));
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(!netns.contains("tenet-demo"), "namespaces left: {netns}");
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains("tdemo-"), "veths left: {links}");
    assert!(
        dpdk_leftovers("tenet-demo").is_empty(),
        "hugepage files left"
    );
}
