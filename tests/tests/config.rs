//! Bad configs and missing prerequisites are refused before anything starts, with a
//! message naming the field, and exit status 2 (1 for what fails at run time). A
//! device missing at run time is not a bad config: its port starts down.

use tests::{dpdk_leftovers, tenetd_once, unique};

fn config(prefix: &str, extra_port_line: &str) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095

[[port]]
name = "a"
backend = "ring"
{extra_port_line}

[[port]]
name = "sink"
backend = "null"

[[cross_connect]]
ports = ["a", "sink"]
"#
    )
}

fn refused(config: &str, status: i32, must_say: &[&str]) {
    let out = tenetd_once(config, &[]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "stderr: {stderr}");
    for needle in must_say {
        assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    }
}

#[test]
fn unknown_field_names_the_field() {
    let prefix = unique("cfg");
    refused(
        &config(&prefix, "colour = \"blue\""),
        2,
        &["`port[0].colour`", "unknown field"],
    );
    assert!(dpdk_leftovers(&prefix).is_empty(), "nothing may start");
}

#[test]
fn option_of_another_backend_names_the_field() {
    refused(
        &config(&unique("cfg"), "interface = \"eth0\""),
        2,
        &["`port[0].interface`", "not an option of backend `ring`"],
    );
}

#[test]
fn bad_value_names_the_field() {
    refused(
        &config(&unique("cfg"), "queues = 0"),
        2,
        &["`port[0].queues`", "between 1 and 16"],
    );
    refused(
        &config(&unique("cfg"), "queues = \"many\""),
        2,
        &["`port[0].queues`", "invalid type"],
    );
}

#[test]
fn unset_environment_variable_is_named() {
    let text =
        config(&unique("cfg"), "").replace("workers = [1]", "workers = [${TENET_TEST_UNSET_CORE}]");
    refused(&text, 2, &["TENET_TEST_UNSET_CORE", "is not set"]);
}

#[test]
fn check_accepts_a_valid_config() {
    let out = tenetd_once(&config(&unique("cfg"), ""), &["--check"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_command_line_is_a_usage_error() {
    let out = tenetd_once(&config(&unique("cfg"), ""), &["--stats-interval", "soon"]).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stats-interval"));
}

#[test]
fn missing_hugepages_say_how_to_fix() {
    let text = config(&unique("cfg"), "").replace("memory_mb = 128", "memory_mb = 10000000");
    refused(&text, 1, &["not enough free hugepages", "nr_hugepages"]);
}

#[test]
fn a_missing_interface_starts_its_port_down_and_the_switch_runs() {
    let prefix = unique("cfg");
    let text = config(&prefix, "").replace(
        "backend = \"ring\"",
        "backend = \"af-packet\"\ninterface = \"tenet-nope0\"",
    );
    let tenetd = tests::Tenetd::serving(None, &text).unwrap();
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("starting without this port")
            && stopped.stderr.contains("tenet-nope0"),
        "{}",
        stopped.stderr
    );
    assert!(
        dpdk_leftovers(&prefix).is_empty(),
        "left behind: {:?}",
        dpdk_leftovers(&prefix)
    );
}

#[test]
fn a_bad_log_filter_is_refused_before_anything_starts() {
    let prefix = unique("cfg");
    let out = tenetd_once(&config(&prefix, ""), &["--log", "dataplane=loudest"]).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--log") && stderr.contains("dataplane=loudest"),
        "{stderr}"
    );
    assert!(dpdk_leftovers(&prefix).is_empty(), "nothing may start");
}

#[test]
fn without_a_config_argument_the_system_config_is_read() {
    let default = std::path::Path::new("/etc/tenet/tenetd.toml");
    if default.exists() {
        // A machine with tenet installed: its own config is not ours to judge.
        return;
    }
    let out = std::process::Command::new(tests::binary("tenetd"))
        .arg("--check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("/etc/tenet/tenetd.toml"), "{stderr}");
}
