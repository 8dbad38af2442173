//! A clean stop (SIGINT or SIGTERM) leaves no vhost socket, hugepage file or DPDK
//! runtime directory behind.

use std::time::Duration;

use tests::{dpdk_leftovers, unique, TempDir, Tenetd};

fn config(prefix: &str, sock: &std::path::Path) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095
in_memory = false

[[port]]
name = "vm"
backend = "vhost-user"
path = "{}"

[[port]]
name = "sink"
backend = "null"

[[cross_connect]]
ports = ["vm", "sink"]
"#,
        sock.display()
    )
}

fn stops_clean(signal: &str) {
    let dir = TempDir::new("life").unwrap();
    let sock = dir.path().join("vm.sock");
    let prefix = unique("life");
    let mut tenetd = Tenetd::start(&config(&prefix, &sock), &["--stats-interval", "0.5"]).unwrap();
    tenetd.wait_ready(Duration::from_secs(30)).unwrap();
    assert!(sock.exists(), "vhost-user socket while running");
    assert!(
        dpdk_leftovers(&prefix).len() >= 2,
        "runtime dir and hugepage files while running: {:?}",
        dpdk_leftovers(&prefix)
    );
    tenetd
        .wait_for_line("rx pkt/s", Duration::from_secs(5))
        .unwrap();
    let stopped = if signal == "INT" {
        tenetd.stop().unwrap()
    } else {
        tests::run("kill", &["-TERM", &tenetd.pid().to_string()]).unwrap();
        tenetd.stop().unwrap()
    };
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stdout.contains("RESULT pkts="),
        "{}",
        stopped.stdout
    );
    assert!(!sock.exists(), "vhost-user socket left behind");
    assert!(
        dpdk_leftovers(&prefix).is_empty(),
        "left behind: {:?}",
        dpdk_leftovers(&prefix)
    );
}

#[test]
fn sigint_stops_clean() {
    stops_clean("INT");
}

#[test]
fn sigterm_stops_clean() {
    stops_clean("TERM");
}
