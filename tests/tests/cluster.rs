//! Hosts sharing one model through a real etcd: what one host writes through its API,
//! another host starting later has; each keeps its own ports; a write that collides
//! with another host's (a name or tenant id taken since it read the cluster) is
//! refused with the field and leaves the cluster as it was; restarts lose nothing.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tests::{tenetctl, tenetctl_ok, unique, Etcd, TempDir, Tenetd};

struct Host {
    tenetd: Tenetd,
    dir: TempDir,
}

impl Host {
    fn start(name: &str, etcd: &Etcd, tenants: &str) -> Self {
        let dir = TempDir::new(&format!("cluster-{name}")).unwrap();
        let config = format!(
            r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128

[switch]
host = "{name}"

[[host]]
name = "a"
underlay_ip = "192.0.2.1/24"

[[host]]
name = "b"
underlay_ip = "192.0.2.2/24"
{tenants}
[[port]]
name = "{name}-spare"
backend = "null"

[control]
api_socket = "{dir}/tenetd.sock"
etcd = ["{url}"]
"#,
            prefix = unique(&format!("cl{name}")),
            dir = dir.path().display(),
            url = etcd.url(),
        );
        let mut tenetd = Tenetd::start(&config, &[]).unwrap();
        tenetd
            .wait_for_line("API listening", Duration::from_secs(30))
            .unwrap();
        Self { tenetd, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tenetd.sock")
    }

    fn tenants(&self) -> Vec<(String, u64)> {
        let out = tenetctl_ok(&self.socket(), &["--json", "tenant", "list"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<(String, u64)> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap().to_owned(),
                    t["id"].as_u64().unwrap(),
                )
            })
            .collect();
        names.sort();
        names
    }

    fn ports(&self) -> Vec<String> {
        let out = tenetctl_ok(&self.socket(), &["--json", "port", "list"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

#[test]
fn hosts_share_one_model_through_etcd_and_collisions_are_refused() {
    let etcd = Etcd::start().unwrap();
    let a = Host::start("a", &etcd, "\n[[tenant]]\nname = \"red\"\nid = 100\n");
    tenetctl_ok(&a.socket(), &["tenant", "add", "green", "--id", "200"]);
    let keys: Vec<String> = etcd
        .get_prefix("/tenet/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for key in [
        "/tenet/hosts/a",
        "/tenet/tenants/red",
        "/tenet/tenants/green",
        "/tenet/unique/tenant-id/200",
        "/tenet/local/a/ports",
        "/tenet/local/a/switch",
    ] {
        assert!(keys.contains(&key.to_owned()), "{key} in {keys:?}");
    }

    // Host b's config names no tenant: it takes the cluster's, and keeps its own port.
    let b = Host::start("b", &etcd, "");
    assert_eq!(b.tenants(), pairs(&[("green", 200), ("red", 100)]));
    assert_eq!(b.ports(), ["b-spare"]);
    assert!(etcd
        .get_prefix("/tenet/local/b/ports")
        .unwrap()
        .iter()
        .any(|(_, v)| v.contains("b-spare")));

    // a writes after b read the cluster: b's writes that collide with it are refused.
    tenetctl_ok(&a.socket(), &["tenant", "add", "yellow", "--id", "300"]);
    let taken = tenetctl(&b.socket(), &["tenant", "add", "orange", "--id", "300"]);
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(!taken.status.success(), "{said}");
    assert!(
        said.contains("tenant id 300 is taken by tenant `yellow`") && said.contains("id"),
        "{said}"
    );
    let same_name = tenetctl(&b.socket(), &["tenant", "add", "yellow", "--id", "301"]);
    let said = String::from_utf8_lossy(&same_name.stderr);
    assert!(!same_name.status.success());
    assert!(said.contains("tenants/yellow"), "{said}");
    let stored = etcd.get_prefix("/tenet/tenants/yellow").unwrap();
    assert!(
        stored[0].1.contains("\"id\":300"),
        "a's yellow stands: {stored:?}"
    );
    assert!(etcd.get_prefix("/tenet/tenants/orange").unwrap().is_empty());
    assert!(
        b.tenants().iter().all(|(n, _)| n != "orange"),
        "b kept nothing"
    );

    // A write that collides with nothing goes through from b, and nothing is lost:
    // a restarted a has every tenant written through either host.
    tenetctl_ok(&b.socket(), &["tenant", "add", "purple", "--id", "400"]);
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let a = Host::start("a", &etcd, "");
    assert_eq!(
        a.tenants(),
        pairs(&[
            ("green", 200),
            ("purple", 400),
            ("red", 100),
            ("yellow", 300)
        ])
    );
    assert_eq!(a.ports(), ["a-spare"]);
    drop(b);
    drop(a);
}

#[test]
fn a_cluster_store_config_is_checked_field_by_field() {
    for (control, field) in [
        ("etcd = [\"127.0.0.1:2379\"]", "control.etcd[0]"),
        (
            "etcd = [\"http://127.0.0.1:2379\"]\netcd_prefix = \"tenet\"",
            "control.etcd_prefix",
        ),
        (
            "etcd = [\"http://127.0.0.1:2379\"]\npersist = false",
            "control.persist",
        ),
    ] {
        let config = format!(
            "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
             [[port]]\nname = \"p\"\nbackend = \"null\"\n[control]\n{control}\n"
        );
        let out = tests::tenetd_once(&config, &["--check"]).unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{control}");
        assert!(said.contains(field), "{control}: {said}");
    }
    let out = tests::tenetd_once(
        "[[port]]\nname = \"p\"\nbackend = \"null\"\n[control]\netcd = [\"http://127.0.0.1:2379\"]\n",
        &["--check"],
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("switch.host"));
}
