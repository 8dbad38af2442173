//! tenet under systemd: the shipped units pass `systemd-analyze verify`, and tenetd
//! speaks the notify protocol a `Type=notify` unit with `WatchdogSec=` expects: READY
//! once it forwards and answers, WATCHDOG while its control loop runs, STOPPING on
//! the way out.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{binary, dpdk_leftovers, unique, TempDir};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let dir = TempDir::new("units").unwrap();
    for (unit, program) in [
        ("tenetd.service", "tenetd"),
        ("tenet-docker.service", "tenet-docker"),
    ] {
        let text = std::fs::read_to_string(format!("{REPO}/configs/systemd/{unit}")).unwrap();
        // As installed, with the binaries where this build has them.
        let installed = format!("/usr/local/bin/{program}");
        assert!(text.contains(&installed), "{unit} runs {installed}");
        let text = text.replace(&installed, &binary(program).display().to_string());
        let path = dir.path().join(unit);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze (systemd) is installed");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit}: {said}");
        assert!(!said.contains(unit), "{unit}: {said}");
    }
    let tenetd = std::fs::read_to_string(format!("{REPO}/configs/systemd/tenetd.service")).unwrap();
    for line in ["Type=notify", "WatchdogSec=", "LimitMEMLOCK=infinity"] {
        assert!(tenetd.contains(line), "tenetd.service: {line}");
    }
}

#[test]
fn tenetd_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = TempDir::new("notify").unwrap();
    let socket_path = dir.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let prefix = unique("notify");
    let config = format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095

[[port]]
name = "a"
backend = "null"

[[port]]
name = "b"
backend = "null"

[[cross_connect]]
ports = ["a", "b"]

[control]
api_socket = "{dir}/tenetd.sock"
persist = false
"#,
        dir = dir.path().display()
    );
    let config_path = dir.path().join("tenetd.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut tenetd = Command::new(binary("tenetd"))
        .arg("--config")
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut heard: Vec<String> = Vec::new();
    let mut listen_until = |done: &dyn Fn(&[String]) -> bool, within: Duration| {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 256];
        while !done(&heard) && Instant::now() < deadline {
            if let Ok(n) = systemd.recv(&mut buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        heard.clone()
    };
    let ready = |h: &[String]| h.iter().any(|m| m.lines().any(|l| l == "READY=1"));
    let heard_now = listen_until(&ready, Duration::from_secs(30));
    assert!(ready(&heard_now), "READY=1: {heard_now:?}");
    assert!(
        dir.path().join("tenetd.sock").exists(),
        "ready means the API answers"
    );
    // 200 ms watchdog: a ping every 100 ms.
    let pings = |h: &[String]| h.iter().filter(|m| *m == "WATCHDOG=1").count() >= 5;
    let heard_now = listen_until(&pings, Duration::from_secs(3));
    assert!(
        pings(&heard_now),
        "WATCHDOG=1 at half the period: {heard_now:?}"
    );
    Command::new("kill")
        .args(["-INT", &tenetd.id().to_string()])
        .status()
        .unwrap();
    let stopping = |h: &[String]| h.iter().any(|m| m == "STOPPING=1");
    let heard_now = listen_until(&stopping, Duration::from_secs(10));
    assert!(stopping(&heard_now), "STOPPING=1: {heard_now:?}");
    assert!(tenetd.wait().unwrap().success());
    assert!(dpdk_leftovers(&prefix).is_empty());
}
