//! tenetctl's declarative and idempotent commands against a real tenetd: `apply -f`
//! (created, unchanged, updated in place, refused naming the field with nothing
//! changed, `--prune`, `--dry-run`, stdin), `add --may-exist` and `del --if-exists` as
//! ovs-vsctl has them, and an address claimed, listed and released.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tests::{tenetctl, tenetctl_ok as ok, unique, TempDir, Tenetd};

/// A switch with one tenant of its own (`base`, on port c1), which the files list too.
fn config(dir: &Path) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095

[[tenant]]
name = "base"
id = 1

[[port]]
name = "c1"
backend = "null"
role = "access"
tenant = "base"

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/state.json"
"#,
        prefix = unique("ctl"),
        dir = dir.display(),
    )
}

/// The file's records; `red_peers` and `red_id` vary between applies, `extra` adds
/// records.
fn file(red_id: u32, red_peers: &str, extra: &str) -> String {
    format!(
        r#"
[[tenant]]
name = "base"
id = 1

[[tenant]]
name = "red"
id = {red_id}
subnets = ["10.1.0.1/24"]
peers = [{red_peers}]

[[tenant]]
name = "blue"
id = 200
subnets = ["10.2.0.1/24"]
peers = ["red"]

[[endpoint]]
tenant = "base"
mac = "02:00:00:00:0a:01"
port = "c1"

[[route]]
tenant = "red"
prefix = "10.9.0.0/16"
via = "10.1.0.9"
{extra}"#
    )
}

const SECOND_ROUTE: &str = r#"
[[route]]
tenant = "red"
prefix = "10.8.0.0/16"
via = "10.1.0.8"
"#;

/// `tenetctl apply ARGS -f -` with `text` on stdin.
fn apply(socket: &Path, text: &str, args: &[&str]) -> Output {
    let mut child = Command::new(tests::binary("tenetctl"))
        .arg("--socket")
        .arg(socket)
        .arg("apply")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// tenetd's records of one kind, as its API lists them.
fn listed(socket: &Path, kind: &str) -> Value {
    serde_json::from_str(&ok(socket, &["--json", kind, "list"])).unwrap()
}

#[test]
fn apply_is_declarative_and_adds_and_deletes_are_idempotent() {
    let dir = TempDir::new("tenetctl").unwrap();
    let socket = dir.path().join("tenetd.sock");
    let tenetd = Tenetd::serving(None, &config(dir.path())).unwrap();

    // A first apply creates, from a file given as a path.
    let path = dir.path().join("switch.toml");
    std::fs::write(&path, file(100, r#""blue""#, SECOND_ROUTE)).unwrap();
    let first = ok(&socket, &["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(
        first,
        "\
tenant base: unchanged
tenant red: created
tenant blue: created
endpoint base 02:00:00:00:0a:01: created
route red 10.9.0.0/16: created
route red 10.8.0.0/16: created
5 created, 0 updated, 0 deleted, 1 unchanged
"
    );
    let tenants = listed(&socket, "tenant");
    let red = tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "red")
        .unwrap();
    assert_eq!(red["peers"], serde_json::json!(["blue"]));

    // Again: nothing to do, and it says so.
    let again = apply(&socket, &file(100, r#""blue""#, SECOND_ROUTE), &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).ends_with("nothing to change: 6 unchanged\n"),
        "{}",
        stdout(&again)
    );

    // A peer withdrawn is changed in place.
    let updated = apply(&socket, &file(100, "", SECOND_ROUTE), &[]);
    assert!(updated.status.success(), "{}", stderr(&updated));
    assert!(
        stdout(&updated).contains("tenant red: updated (peers)\n"),
        "{}",
        stdout(&updated)
    );
    let tenants = listed(&socket, "tenant");
    let red = tenants
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "red")
        .unwrap();
    assert!(red["peers"].as_array().is_none_or(Vec::is_empty), "{red}");

    // A new id cannot be made in place: refused naming the field, and nothing of the
    // file applied, the route it adds neither.
    let before = (listed(&socket, "tenant"), listed(&socket, "route"));
    let new_route = "\n[[route]]\ntenant = \"red\"\nprefix = \"10.7.0.0/16\"\nvia = \"10.1.0.7\"\n";
    let refused = apply(
        &socket,
        &file(101, "", &format!("{SECOND_ROUTE}{new_route}")),
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("tenant red: id: 100 in tenetd, 101 in the file"),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("nothing applied"));
    assert_eq!(
        (listed(&socket, "tenant"), listed(&socket, "route")),
        before
    );

    // A dry run says what it would do and does nothing.
    let dry = apply(
        &socket,
        &file(100, "", &format!("{SECOND_ROUTE}{new_route}")),
        &["--dry-run"],
    );
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry).contains("route red 10.7.0.0/16: created (dry run)\n"),
        "{}",
        stdout(&dry)
    );
    assert!(stdout(&dry).contains("nothing changed"), "{}", stdout(&dry));
    assert_eq!(listed(&socket, "route"), before.1);

    // --prune takes out the route the file no longer lists; without it, it stays.
    let kept = apply(&socket, &file(100, "", ""), &[]);
    assert!(
        stdout(&kept).ends_with("nothing to change: 5 unchanged\n"),
        "{}",
        stdout(&kept)
    );
    assert_eq!(listed(&socket, "route").as_array().unwrap().len(), 2);
    let pruned = apply(&socket, &file(100, "", ""), &["--prune"]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    assert!(
        stdout(&pruned).contains("route red 10.8.0.0/16: deleted\n"),
        "{}",
        stdout(&pruned)
    );
    let routes = listed(&socket, "route");
    assert_eq!(routes.as_array().unwrap().len(), 1, "{routes}");
    assert_eq!(routes[0]["prefix"], "10.9.0.0/16");

    // tenetd's own refusal is printed with the record it was for, and ends the run.
    let off_subnet =
        "\n[[route]]\ntenant = \"red\"\nprefix = \"10.5.0.0/16\"\nvia = \"10.3.0.1\"\n";
    let stopped = apply(&socket, &file(100, "", off_subnet), &[]);
    assert_eq!(stopped.status.code(), Some(1), "{}", stderr(&stopped));
    assert!(
        stderr(&stopped).contains("tenetctl: route red 10.5.0.0/16: via: "),
        "{}",
        stderr(&stopped)
    );
    assert_eq!(listed(&socket, "route").as_array().unwrap().len(), 1);

    // add --may-exist: quiet when the same, a warning naming the field when not, and
    // the record left as it is.
    let add = [
        "tenant",
        "add",
        "red",
        "--id",
        "100",
        "--subnet",
        "10.1.0.1/24",
    ];
    let same = tenetctl(&socket, &[&add[..], &["--may-exist"]].concat());
    assert!(same.status.success(), "{}", stderr(&same));
    assert_eq!(stderr(&same), "");
    let different = tenetctl(
        &socket,
        &["tenant", "add", "red", "--id", "7", "--may-exist"],
    );
    assert!(different.status.success(), "{}", stderr(&different));
    assert!(
        stderr(&different).contains("tenant red exists: id is 100, not 7"),
        "{}",
        stderr(&different)
    );
    assert_eq!(tenetctl(&socket, &add).status.code(), Some(1));
    let route = [
        "route",
        "add",
        "red",
        "10.9.0.0/16",
        "--via",
        "10.1.0.9",
        "--may-exist",
    ];
    assert!(tenetctl(&socket, &route).status.success());

    // del --if-exists: a missing record is done; without the flag, refused.
    let missing = tenetctl(&socket, &["tenant", "del", "nosuch", "--if-exists"]);
    assert!(missing.status.success(), "{}", stderr(&missing));
    assert_eq!(stderr(&missing), "");
    assert_eq!(
        tenetctl(&socket, &["tenant", "del", "nosuch"])
            .status
            .code(),
        Some(1)
    );
    let route_gone = ["route", "del", "red", "10.6.0.0/16", "--if-exists"];
    assert!(tenetctl(&socket, &route_gone).status.success());

    // An address claimed, claimed again by its owner (the same), listed, released.
    let claimed = ok(&socket, &["address", "claim", "red", "--owner", "test-web"]);
    assert!(
        claimed.contains("/24 claimed for test-web (tenant red, gateway 10.1.0.1)"),
        "{claimed}"
    );
    let address = claimed.split('/').next().unwrap().to_owned();
    let held = ok(&socket, &["address", "claim", "red", "--owner", "test-web"]);
    assert!(
        held.starts_with(&format!("{address}/24 held already by test-web")),
        "{held}"
    );
    let list = ok(&socket, &["address", "list", "--tenant", "red"]);
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["red", &address, "test-web", "here"]),
        "{list}"
    );
    ok(&socket, &["address", "release", "red", &address]);
    assert!(!ok(&socket, &["address", "list"]).contains("test-web"));
    assert_eq!(
        tenetctl(&socket, &["address", "release", "red", &address])
            .status
            .code(),
        Some(1)
    );
    ok(
        &socket,
        &["address", "release", "red", &address, "--if-exists"],
    );

    // The log filter, shown and changed while tenetd runs; a bad one refused naming it.
    assert!(!ok(&socket, &["log"]).trim().is_empty());
    let filter = "info,control=debug";
    assert_eq!(ok(&socket, &["log", "set", filter]), format!("{filter}\n"));
    assert_eq!(ok(&socket, &["log"]), format!("{filter}\n"));
    let bad = tenetctl(&socket, &["log", "set", "info,control=loud"]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).starts_with("tenetctl: filter: "),
        "{}",
        stderr(&bad)
    );
    assert_eq!(ok(&socket, &["log"]), format!("{filter}\n"));

    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
