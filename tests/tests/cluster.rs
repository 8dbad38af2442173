//! Hosts sharing one model through a real etcd: what one host writes through its API,
//! another host starting later has, and a running one follows through its watch; each
//! keeps its own ports; a write that collides with another host's is refused with the
//! field and leaves the cluster as it was; hosts ride out an etcd outage and converge
//! when it returns; restarts lose nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::config::switching::TenantSpec;
use control::store::EtcdStore;
use serde_json::Value;
use tests::{tenetctl, tenetctl_ok, unique, Etcd, TempDir, Tenetd};

struct Host {
    tenetd: Tenetd,
    dir: TempDir,
}

impl Host {
    fn start(name: &str, etcd: &Etcd, tenants: &str) -> Self {
        Self::start_in(
            TempDir::new(&format!("cluster-{name}")).unwrap(),
            name,
            etcd,
            tenants,
        )
    }

    /// Starts host `name` with `dir` for its socket and local copy (a restart keeps it).
    fn start_in(dir: TempDir, name: &str, etcd: &Etcd, tenants: &str) -> Self {
        Self::start_reaching(dir, name, &etcd.control_toml(), tenants)
    }

    /// The same, reaching etcd as `etcd` (`[control]` lines) says.
    fn start_reaching(dir: TempDir, name: &str, etcd: &str, tenants: &str) -> Self {
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
state_file = "{dir}/view.json"
{etcd}"#,
            prefix = unique(&format!("cl{name}")),
            dir = dir.path().display(),
        );
        let tenetd = Tenetd::serving(None, &config).unwrap();
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
        tests::port_names(&self.socket())
    }
}

/// Waits until `host` lists tenant `name`.
fn wait_for_tenant(host: &Host, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < within {
        if host.tenants().iter().any(|(n, _)| n == name) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "tenant {name} did not reach the host within {within:?}: {}",
        host.tenetd.stderr_text()
    );
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

#[test]
fn hosts_share_one_model_through_etcd_and_collisions_are_refused() {
    let mut etcd = Etcd::start_secure().unwrap();
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

    // What a writes, b follows through its watch.
    tenetctl_ok(&a.socket(), &["tenant", "add", "cyan", "--id", "250"]);
    let took = wait_for_tenant(&b, "cyan", Duration::from_secs(5));
    eprintln!("b had a's new tenant after {took:?}");
    tenetctl_ok(&a.socket(), &["tenant", "del", "cyan"]);

    // A write from b that collides with a's is refused whether b's watch brought a's
    // write in already (b's own check) or not yet (etcd's transaction), and the
    // cluster keeps a's.
    tenetctl_ok(&a.socket(), &["tenant", "add", "yellow", "--id", "300"]);
    let taken = tenetctl(&b.socket(), &["tenant", "add", "orange", "--id", "300"]);
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(!taken.status.success(), "{said}");
    assert!(said.contains("300"), "{said}");
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

    // etcd goes away: both hosts keep their tables and answer; a write is refused and
    // changes nothing; when etcd is back, writes flow and b follows again.
    etcd.kill();
    assert!(b.tenants().iter().any(|(n, _)| n == "yellow"));
    let refused = tenetctl(&a.socket(), &["tenant", "add", "lime", "--id", "500"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && said.contains("etcd"), "{said}");
    assert!(a.tenants().iter().all(|(n, _)| n != "lime"));
    etcd.resume().unwrap();
    tenetctl_ok(&a.socket(), &["tenant", "add", "lime", "--id", "500"]);
    wait_for_tenant(&b, "lime", Duration::from_secs(10));

    // A write that collides with nothing goes through from b, and nothing is lost:
    // a restarted a has every tenant written through either host.
    tenetctl_ok(&b.socket(), &["tenant", "add", "purple", "--id", "400"]);
    assert_eq!(etcd.get_prefix("/tenet/alive/a").unwrap().len(), 1);
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // A host that stops leaves the cluster at once (its lease is revoked).
    assert!(etcd.get_prefix("/tenet/alive/a").unwrap().is_empty());
    let a = Host::start("a", &etcd, "");
    assert_eq!(
        a.tenants(),
        pairs(&[
            ("green", 200),
            ("lime", 500),
            ("purple", 400),
            ("red", 100),
            ("yellow", 300)
        ])
    );
    assert_eq!(a.ports(), ["a-spare"]);
    for host in [a, b] {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

fn metric(host: &Host, name: &str) -> Option<u64> {
    let text = tests::http(&host.socket(), "GET", "/metrics", "").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

/// Waits until `host`'s metric `name` reads `value`; what it read last.
fn metric_becomes(host: &Host, name: &str, value: u64) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(host, name);
        if now == Some(value) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A host takes other hosts' tenants into its model but not its tables, and a tenant
/// that comes to it (a claim on it) into both, while the rest of the cluster keeps
/// changing: a change of tenants elsewhere leaves the host's view as it was, a change
/// that brings a tenant here or takes it away rebuilds it.
#[test]
fn a_host_runs_its_own_tenants_while_other_hosts_change_theirs() {
    let etcd = Etcd::start_secure().unwrap();
    let a = Host::start("a", &etcd, "");
    let b = Host::start("b", &etcd, "");
    let base = metric(&a, "tenet_tenants_running").unwrap();
    let b_runs = metric(&b, "tenet_tenants_running").unwrap();
    for round in 0..3u32 {
        for t in 0..10u32 {
            let id = (1000 + round * 100 + t).to_string();
            tenetctl_ok(
                &b.socket(),
                &["tenant", "add", &format!("far{round}-{t}"), "--id", &id],
            );
            if t == 5 {
                // One comes to a in the middle of the others.
                let id = (5000 + round).to_string();
                let name = format!("near{round}");
                tenetctl_ok(
                    &b.socket(),
                    &["tenant", "add", &name, "--id", &id, "--host", "a"],
                );
            }
        }
        let expected = base + u64::from(round) + 1;
        let total = metric(&b, "tenet_tenants").unwrap();
        assert_eq!(
            metric_becomes(&a, "tenet_tenants", total),
            Some(total),
            "a has every tenant in its model"
        );
        assert_eq!(
            metric_becomes(&a, "tenet_tenants_running", expected),
            Some(expected),
            "a runs its own tenants only (round {round})"
        );
        assert_eq!(
            metric(&b, "tenet_tenants_running"),
            Some(b_runs),
            "none of them is b's"
        );
    }
    // Taken away again, among others' changes: a's tables drop it, b's are unmoved.
    tenetctl_ok(&b.socket(), &["tenant", "del", "far0-0"]);
    tenetctl_ok(&b.socket(), &["tenant", "del", "near1"]);
    tenetctl_ok(&b.socket(), &["tenant", "del", "far0-1"]);
    let total = metric(&b, "tenet_tenants").unwrap();
    assert_eq!(metric_becomes(&a, "tenet_tenants", total), Some(total));
    assert_eq!(
        metric_becomes(&a, "tenet_tenants_running", base + 2),
        Some(base + 2)
    );
    assert_eq!(metric(&b, "tenet_tenants_running"), Some(b_runs));
}

/// A host watching its own tenants (`etcd_watch = "own"`) holds the tenants that come
/// to it (an endpoint there, a claim on it) and no others, drops them when they leave,
/// takes them again when they come back, receives fewer events than a host watching
/// everything, and still changes any tenant through its API (read when named). It
/// does not place gateways: the host watching everything does, though its name comes
/// later.
#[test]
fn a_host_watching_its_own_tenants_holds_only_them() {
    let etcd = Etcd::start_secure().unwrap();
    let b = Host::start("b", &etcd, "");
    for t in 0..10u32 {
        let id = (1000 + t).to_string();
        tenetctl_ok(
            &b.socket(),
            &["tenant", "add", &format!("far{t}"), "--id", &id],
        );
    }
    tenetctl_ok(
        &b.socket(),
        &["tenant", "add", "near", "--id", "2000", "--host", "a"],
    );
    assert_eq!(metric_becomes(&b, "tenet_tenants", 11), Some(11));
    // a joins the cluster: it writes its own part and holds its claim only.
    let dir = TempDir::new("cluster-a").unwrap();
    let own = format!("{}etcd_watch = \"own\"\n", etcd.control_toml());
    let a = Host::start_reaching(dir, "a", &own, "");
    assert_eq!(metric_becomes(&a, "tenet_store_unseeded", 0), Some(0));
    assert!(!etcd.get_prefix("/tenet/local/a/ports").unwrap().is_empty());
    assert_eq!(
        metric_becomes(&a, "tenet_tenants", 1),
        Some(1),
        "a holds its claim only"
    );
    assert_eq!(metric_becomes(&a, "tenet_tenants_running", 1), Some(1));

    // An endpoint another host places on a brings its tenant into a's model (a runs
    // it once a port of its own is behind it); removed, the tenant goes; back, it
    // comes.
    let endpoint = ["--tenant", "far3", "--mac", "02:00:00:00:03:01"];
    for round in 0..2 {
        let mut add = vec!["endpoint", "add"];
        add.extend(endpoint);
        add.extend(["--host", "a"]);
        tenetctl_ok(&b.socket(), &add);
        assert_eq!(
            metric_becomes(&a, "tenet_tenants", 2),
            Some(2),
            "round {round}"
        );
        let mut del = vec!["endpoint", "del"];
        del.extend(endpoint);
        tenetctl_ok(&b.socket(), &del);
        assert_eq!(
            metric_becomes(&a, "tenet_tenants", 1),
            Some(1),
            "round {round}"
        );
        assert_eq!(metric(&a, "tenet_tenants_running"), Some(1));
    }
    // A claim taken away and given again, with the same id.
    tenetctl_ok(&b.socket(), &["tenant", "del", "near"]);
    assert_eq!(metric_becomes(&a, "tenet_tenants", 0), Some(0));
    assert_eq!(metric_becomes(&a, "tenet_tenants_running", 0), Some(0));
    tenetctl_ok(
        &b.socket(),
        &["tenant", "add", "near", "--id", "2000", "--host", "a"],
    );
    assert_eq!(metric_becomes(&a, "tenet_tenants_running", 1), Some(1));

    // The placer is b, the host watching everything, though `a` comes first by name.
    tenetctl_ok(
        &b.socket(),
        &[
            "tenant",
            "add",
            "gw",
            "--id",
            "3000",
            "--subnet",
            "10.77.0.1/24",
            "--gateway-host",
            "auto",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while etcd.get_prefix("/tenet/placed/gw").unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let placed = etcd.get_prefix("/tenet/placed/gw").unwrap();
    assert_eq!(placed.len(), 1, "b placed the floating gateway");
    // Placed on a, a holds and runs it (its gateway is there).
    let running = match placed[0].1.as_str() {
        "\"a\"" => 2,
        _ => 1,
    };
    assert_eq!(
        metric_becomes(&a, "tenet_tenants_running", running),
        Some(running)
    );

    // A port of a's own for a tenant it does not hold, through its API: the tenant
    // is read when the change names it, and runs.
    tenetctl_ok(
        &a.socket(),
        &[
            "port",
            "add",
            "a-far4",
            "--backend",
            "null",
            "--role",
            "access",
            "--tenant",
            "far4",
        ],
    );
    assert_eq!(
        metric_becomes(&a, "tenet_tenants_running", running + 1),
        Some(running + 1)
    );
    tenetctl_ok(&a.socket(), &["port", "del", "a-far4"]);
    assert_eq!(
        metric_becomes(&a, "tenet_tenants_running", running),
        Some(running)
    );
    // Through a's API: a tenant a does not hold is read when a change names it.
    let total = metric(&b, "tenet_tenants").unwrap();
    tenetctl_ok(&a.socket(), &["tenant", "del", "far6"]);
    assert_eq!(
        metric_becomes(&b, "tenet_tenants", total - 1),
        Some(total - 1)
    );
    // A name taken elsewhere is refused as taken, naming the field.
    let taken = tenetctl(&a.socket(), &["tenant", "add", "far7", "--id", "4000"]);
    assert!(!taken.status.success());
    let said = String::from_utf8_lossy(&taken.stderr);
    assert!(said.contains("name"), "{said}");

    // a received its own tenants' events, not the cloud's.
    let a_events = metric(&a, "tenet_store_events_total").unwrap();
    let b_events = metric(&b, "tenet_store_events_total").unwrap();
    assert!(
        a_events * 2 < b_events,
        "a received {a_events} events, b {b_events}"
    );
}

#[test]
fn garbage_in_etcd_is_skipped_and_a_host_starts_while_etcd_is_away() {
    let mut etcd = Etcd::start_secure().unwrap();
    let a = Host::start("a", &etcd, "\n[[tenant]]\nname = \"red\"\nid = 100\n");
    tenetctl_ok(&a.socket(), &["tenant", "add", "green", "--id", "200"]);

    // Keys a buggy writer or a hand edit left: not JSON, the wrong shape, a record
    // that does not fit (a VLAN out of range). Each costs itself, nothing else.
    etcd.put("/tenet/tenants/broken", "{not json").unwrap();
    etcd.put("/tenet/tenants/shape", r#"{"name":"shape","id":"x"}"#)
        .unwrap();
    etcd.put(
        "/tenet/tenants/unfit",
        r#"{"name":"unfit","id":900,"vlan":5000,"hosts":["a"]}"#,
    )
    .unwrap();
    tenetctl_ok(&a.socket(), &["tenant", "add", "blue", "--id", "300"]);
    wait_for_tenant(&a, "blue", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&a, "tenet_store_skipped_keys") != Some(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&a, "tenet_store_skipped_keys"), Some(2));
    assert!(metric(&a, "tenet_store_skipped_records") >= Some(1));
    // A restart with the garbage still there succeeds.
    let dir = a.dir;
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let a = Host::start_in(dir, "a", &etcd, "");
    let listed: Vec<String> = a.tenants().into_iter().map(|(n, _)| n).collect();
    assert!(
        ["blue", "green", "red"]
            .iter()
            .all(|t| listed.contains(&t.to_string())),
        "{listed:?}"
    );

    // etcd away at start: a runs its last view from its local copy.
    let dir = a.dir;
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    etcd.kill();
    let a = Host::start_in(dir, "a", &etcd, "");
    let listed: Vec<String> = a.tenants().into_iter().map(|(n, _)| n).collect();
    assert!(
        ["blue", "green", "red"]
            .iter()
            .all(|t| listed.contains(&t.to_string())),
        "{listed:?}"
    );
    assert_eq!(metric(&a, "tenet_store_unseeded"), Some(1));
    assert_eq!(metric(&a, "tenet_store_registered"), Some(0));
    assert_eq!(metric(&a, "tenet_store_following"), Some(0));
    let refused = tenetctl(&a.socket(), &["tenant", "add", "lime", "--id", "500"]);
    assert!(!refused.status.success(), "no write while etcd is away");
    let made = "tenet_store_writes_total{result=\"made\"}";
    let made_before = metric(&a, made).unwrap();

    // etcd is back: a registers, writes its part and follows the cluster again.
    etcd.resume().unwrap();
    let b = Host::start("b", &etcd, "");
    tenetctl_ok(&b.socket(), &["tenant", "add", "cyan", "--id", "600"]);
    wait_for_tenant(&a, "cyan", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while (metric(&a, "tenet_store_unseeded") != Some(0)
        || etcd.get_prefix("/tenet/alive/a").unwrap().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&a, "tenet_store_unseeded"), Some(0));
    assert_eq!(etcd.get_prefix("/tenet/alive/a").unwrap().len(), 1);
    assert_eq!(metric_becomes(&a, "tenet_store_registered", 1), Some(1));
    assert_eq!(metric_becomes(&a, "tenet_store_following", 1), Some(1));
    assert_eq!(metric_becomes(&a, "tenet_store_hosts_alive", 2), Some(2));
    tenetctl_ok(&a.socket(), &["tenant", "add", "lime", "--id", "500"]);
    assert!(metric(&a, made) > Some(made_before), "the write counted");
    wait_for_tenant(&b, "lime", Duration::from_secs(10));
    for host in [a, b] {
        let stopped = host.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}

/// Writes through a host's API while another writer keeps the host's watch busy:
/// every write is answered. A write once waited forever when the watch brought a
/// change while the write was in flight (the write held a lock through its etcd call
/// that a read of the cache, and through it the watch, waited for).
#[test]
fn every_write_is_answered_while_the_watch_brings_changes() {
    let etcd = Etcd::start_secure().unwrap();
    let a = Host::start("a", &etcd, "");
    let stop = AtomicBool::new(false);
    let unanswered = std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                etcd.put("/tenet/tenants/noise", &format!("{{not json {round}"))
                    .unwrap();
            }
        });
        let unanswered = (0..80).find_map(|i| {
            let (name, id) = (format!("t{}", i / 2), (1000 + i / 2).to_string());
            let args: Vec<String> = if i % 2 == 0 {
                ["tenant", "add", &name, "--id", &id]
                    .map(str::to_owned)
                    .into()
            } else {
                ["tenant", "del", &name].map(str::to_owned).into()
            };
            let (sent, answer) = mpsc::channel();
            let socket = a.socket();
            std::thread::spawn(move || {
                let _ = sent.send(tenetctl(&socket, &args));
            });
            match answer.recv_timeout(Duration::from_secs(40)) {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(format!(
                    "write {i} refused: {}",
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(_) => Some(format!("write {i} unanswered after 40 s")),
            }
        });
        stop.store(true, Ordering::Relaxed);
        unanswered
    });
    if let Some(why) = unanswered {
        panic!("{why}: {}", a.tenetd.stderr_text());
    }
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
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
        (
            "etcd = [\"http://127.0.0.1:2379\"]\netcd_watch = \"mine\"",
            "control.etcd_watch",
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
    // The egress host holds every tenant's gateway: it cannot watch its own only.
    let out = tests::tenetd_once(
        "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\negress = true\n\
         [[port]]\nname = \"p\"\nbackend = \"null\"\n[control]\n\
         etcd = [\"http://127.0.0.1:2379\"]\netcd_watch = \"own\"\n",
        &["--check"],
    )
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("control.etcd_watch"),
        "{said}"
    );
}

/// A host etcd does not take is told the field to fix: a wrong password, a CA that did
/// not sign etcd's certificate, no client certificate for an etcd that requires one.
/// `tenetd --check` refuses such a config; a tenetd started with one logs it and runs
/// its own config meanwhile, as it does while etcd is away.
#[test]
fn a_host_that_etcd_refuses_is_told_which_field_to_fix() {
    let etcd = Etcd::start_secure().unwrap();
    let tls = etcd.tls().unwrap();
    let good = etcd.control_toml();
    let path = |p: PathBuf| p.display().to_string();
    let wrong_password = good.replace(&path(tls.password_file()), &path(tls.wrong_password_file()));
    let wrong_ca = good.replace(&path(tls.ca()), &path(tls.other_ca()));
    let no_cert: String = good
        .lines()
        .filter(|l| !l.starts_with("etcd_cert") && !l.starts_with("etcd_key"))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = |control: &str| {
        format!(
            "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
             [[port]]\nname = \"p\"\nbackend = \"null\"\n[control]\n{control}"
        )
    };
    let out = tests::tenetd_once(&config(&good), &["--check"]).unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("takes this host"), "{said}");
    for (control, field, why) in [
        (
            &wrong_password,
            "control.etcd_password_file",
            "wrong password",
        ),
        (&wrong_ca, "control.etcd_ca", "not trusted"),
        (
            &no_cert,
            "control.etcd_cert",
            "requires a client certificate",
        ),
    ] {
        let out = tests::tenetd_once(&config(control), &["--check"]).unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{field}: {said}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            said.contains(field) && said.contains(why),
            "{field}: {said}"
        );
        assert!(
            !said.contains("tenet-test-password") && !said.contains("not-the-password"),
            "passwords stay out of the output: {said}"
        );
    }

    // The store itself says the same, as a config error.
    let mut access = etcd.access();
    access.user.as_mut().unwrap().password = control::config::Secret::new("not-it");
    let store = EtcdStore::new(vec![etcd.url().to_owned()], "/tenet", "a").with_access(access);
    let refused = store.load(&seed("")).unwrap_err();
    let config_error = refused
        .downcast_ref::<control::config::ConfigError>()
        .unwrap_or_else(|| panic!("not a config error: {refused:#}"));
    assert!(
        config_error
            .to_string()
            .contains("control.etcd_password_file"),
        "{config_error}"
    );

    // A tenetd with the wrong password starts on its config and says why it is not in
    // the cluster; the right one joins.
    let a = Host::start_reaching(TempDir::new("cluster-a").unwrap(), "a", &wrong_password, "");
    let logs = a.tenetd.stderr_text();
    assert!(
        logs.contains("control.etcd_password_file") && logs.contains("etcd refuses this host"),
        "{logs}"
    );
    assert!(!logs.contains("not-the-password"), "{logs}");
    assert!(etcd.get_prefix("/tenet/alive/a").unwrap().is_empty());
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let a = Host::start("a", &etcd, "");
    assert_eq!(etcd.get_prefix("/tenet/alive/a").unwrap().len(), 1);
    let stopped = a.tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Hosts a and b of one cluster, under `prefix` in `etcd`.
fn hosts_a_and_b(etcd: &Etcd, prefix: &str) -> (EtcdStore, EtcdStore) {
    let host =
        |name| EtcdStore::new(vec![etcd.url().to_owned()], prefix, name).with_access(etcd.access());
    (host("a"), host("b"))
}

/// The model of a config's text, as a host seeds the cluster store with it.
fn seed(config: &str) -> control::model::Model {
    control::model::Model::of(&control::config::Config::parse(config, |_| None).unwrap())
}

#[test]
fn a_write_racing_another_hosts_is_refused_by_etcd_with_the_field() {
    use control::store::Conflict;
    let etcd = Etcd::start_secure().unwrap();
    let seed = seed(
        "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
         [[tenant]]\nname = \"red\"\nid = 100\nvlan = 10\n",
    );
    let (a, b) = hosts_a_and_b(&etcd, "/race");
    assert!(a.load(&seed).unwrap().is_none(), "an empty cluster");
    a.save(&seed).unwrap();
    let mut seen_by_b = b.load(&seed).unwrap().expect("b reads a's cluster");
    assert_eq!(seen_by_b.tenants.len(), 1);

    // a adds blue (id 200, VLAN 20); b, not having read it, adds green with the same id.
    let mut from_a = seed.clone();
    let mut blue = TenantSpec::clone(&from_a.tenants[0]);
    (blue.name, blue.id, blue.vlan) = ("blue".to_owned(), 200, Some(20));
    from_a.tenants.push_back(Arc::new(blue.clone()));
    a.save(&from_a).unwrap();
    let mut green = blue.clone();
    (green.name, green.vlan) = ("green".to_owned(), Some(30));
    seen_by_b.tenants.push_back(Arc::new(green.clone()));
    let e = b.save(&seen_by_b).unwrap_err();
    let conflict = e.downcast_ref::<Conflict>().expect("a conflict");
    assert_eq!(conflict.field, "id");
    assert!(
        conflict.message.contains("taken by tenant `blue`"),
        "{conflict}"
    );
    assert!(etcd.get_prefix("/race/tenants/green").unwrap().is_empty());

    // The same VLAN under another id: the VLAN is what collides.
    let last = Arc::make_mut(seen_by_b.tenants.back_mut().unwrap());
    (last.id, last.vlan) = (300, Some(20));
    let e = b.save(&seen_by_b).unwrap_err();
    assert_eq!(e.downcast_ref::<Conflict>().unwrap().field, "vlan");

    // b changing red, which a has not touched since b read it, goes through.
    seen_by_b.tenants.pop_back();
    Arc::make_mut(&mut seen_by_b.tenants[0]).max_macs = Some(10);
    b.save(&seen_by_b).unwrap();
    // a changing red again from its older read collides with b's write.
    Arc::make_mut(&mut from_a.tenants[0]).max_macs = Some(20);
    let e = a.save(&from_a).unwrap_err();
    let conflict = e.downcast_ref::<Conflict>().unwrap();
    assert!(conflict.message.contains("tenants/red"), "{conflict}");
}

/// The watch may bring another host's write in after the model a change was checked
/// against was built: the change is still compared with what it started from, so the
/// other host's claim stands.
#[test]
fn a_change_checked_against_an_older_model_than_the_hosts_last_read_is_refused() {
    use control::store::Conflict;
    let etcd = Etcd::start_secure().unwrap();
    let seed = seed(
        "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
         [[tenant]]\nname = \"red\"\nid = 100\n",
    );
    let (a, b) = hosts_a_and_b(&etcd, "/late");
    a.save(&seed).unwrap();
    let before = b.load(&seed).unwrap().expect("b reads a's cluster");

    // a claims id 300; b reads the cluster again (as its watch would) but checks its
    // change against the model it had.
    let mut from_a = before.clone();
    let mut yellow = TenantSpec::clone(&from_a.tenants[0]);
    (yellow.name, yellow.id) = ("yellow".to_owned(), 300);
    from_a.tenants.push_back(Arc::new(yellow.clone()));
    a.save(&from_a).unwrap();
    b.load(&seed).unwrap();
    let mut after = before.clone();
    let mut orange = yellow;
    orange.name = "orange".to_owned();
    after.tenants.push_back(Arc::new(orange));
    let e = b.save_change(&before, &after).unwrap_err();
    assert!(e.downcast_ref::<Conflict>().is_some(), "{e:#}");
    let claim = etcd.get_prefix("/late/unique/tenant-id/300").unwrap();
    assert!(claim[0].1.contains("yellow"), "a's claim stands: {claim:?}");
    assert!(etcd.get_prefix("/late/tenants/orange").unwrap().is_empty());
}

#[test]
fn only_a_registered_placer_records_gateways_and_a_record_never_blocks_a_change() {
    let etcd = Etcd::start_secure().unwrap();
    let seed = seed(
        "[switch]\nhost = \"a\"\n\
         [[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
         [[host]]\nname = \"b\"\nunderlay_ip = \"192.0.2.2/24\"\n\
         [[tenant]]\nname = \"blue\"\nid = 200\nsubnets = [\"10.2.0.1/24\"]\n\
         gateway_host = \"auto\"\n",
    );
    let store = |host: &str| {
        EtcdStore::with_lease(vec![etcd.url().to_owned()], "/place", host, 5)
            .with_access(etcd.access())
    };
    let (a, b) = (store("a"), store("b"));
    a.register().unwrap();
    b.register().unwrap();
    a.load(&seed).unwrap();
    a.save(&seed).unwrap();

    // "0" comes first by name but never registered: it sees itself as the placer and
    // places nothing; a, first of the registered hosts, does.
    let unregistered = store("0");
    let model = unregistered.load(&seed).unwrap().unwrap();
    assert!(unregistered.with_placements(&model).is_none());
    let model = b.load(&seed).unwrap().unwrap();
    assert!(b.with_placements(&model).is_none(), "b is not the placer");
    let model = a.load(&seed).unwrap().unwrap();
    let placed = a.with_placements(&model).expect("a places blue");
    assert_eq!(
        placed.placed["blue"], "a",
        "a and b hold none: a, first by name"
    );
    a.save(&placed).unwrap();
    assert!(a.with_placements(&placed).is_none(), "recorded once");

    // b pins blue to itself from what it read; meanwhile the placer rewrote the record.
    let mut pinned = b.load(&seed).unwrap().unwrap();
    assert_eq!(pinned.placed["blue"], "a");
    let mut moved = placed.clone();
    moved.placed.insert("blue".to_owned(), "b".to_owned());
    a.save(&moved).unwrap();
    Arc::make_mut(&mut pinned.tenants[0]).gateway_host = Some("b".to_owned());
    pinned.placed.remove("blue");
    b.save(&pinned)
        .expect("a record the placer rewrote does not block a change that drops it");
    assert!(etcd.get_prefix("/place/placed/").unwrap().is_empty());
}

#[test]
fn a_host_reloading_before_its_watch_brings_its_own_write_can_write_again() {
    let etcd = Etcd::start_secure().unwrap();
    let seed = seed(
        "[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n\
         [[tenant]]\nname = \"red\"\nid = 100\n",
    );
    let a = EtcdStore::new(vec![etcd.url().to_owned()], "/own", "a").with_access(etcd.access());
    assert!(a.load(&seed).unwrap().is_none(), "an empty cluster");
    a.save(&seed).unwrap();
    // No watch runs: the store's copy of the keys is what the first load read.
    let mut model = a.load_cached(&seed).unwrap().expect("its own write");
    Arc::make_mut(&mut model.tenants[0]).max_macs = Some(10);
    a.save(&model)
        .expect("a write over this host's own earlier one is no conflict");
    let again = a.load_cached(&seed).unwrap().unwrap();
    assert_eq!(again.tenants[0].max_macs, Some(10));
}

#[test]
fn a_cluster_of_more_keys_than_a_page_is_read_whole() {
    let etcd = Etcd::start_secure().unwrap();
    let mut seed =
        seed("[switch]\nhost = \"a\"\n[[host]]\nname = \"a\"\nunderlay_ip = \"192.0.2.1/24\"\n");
    let (a, b) = hosts_a_and_b(&etcd, "/paged");
    assert!(a.load(&seed).unwrap().is_none(), "an empty cluster");
    // Two keys a tenant (its record and its id's claim): several pages of keys.
    for t in 0..1_500u32 {
        seed.tenants.push_back(
            serde_json::from_value(
                serde_json::json!({"name": format!("t{t:05}"), "id": 1_000 + t}),
            )
            .unwrap(),
        );
    }
    a.save(&seed).unwrap();
    let mut read = b.load(&seed).unwrap().expect("b reads a's cluster");
    assert_eq!(read.tenants.len(), 1_500);
    assert_eq!(read.tenants, seed.tenants);
    // Every key's revision was read with it: a change of the last page goes through.
    Arc::make_mut(read.tenants.back_mut().unwrap()).max_macs = Some(10);
    b.save(&read).expect("b's read is current");
}

/// A node new to the cluster (a DaemonSet's next node) registers itself from its
/// config's own host record, instead of being refused for naming a host the cluster
/// does not know; the others learn of it through their watch.
#[test]
fn a_host_new_to_the_cluster_registers_itself() {
    let etcd = Etcd::start().unwrap();
    let a = Host::start("a", &etcd, "\n[[tenant]]\nname = \"red\"\nid = 100\n");
    let dir = TempDir::new("cluster-c").unwrap();
    let config = format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128

[switch]
host = "c"

[[host]]
name = "c"
underlay_ip = "192.0.2.3/24"

[[port]]
name = "c-spare"
backend = "null"

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/view.json"
{etcd}"#,
        prefix = unique("clc"),
        dir = dir.path().display(),
        etcd = etcd.control_toml(),
    );
    let c = Tenetd::serving(None, &config).unwrap();
    let stored = etcd.get_prefix("/tenet/hosts/c").unwrap();
    assert_eq!(stored.len(), 1, "c registered itself: {stored:?}");
    assert!(stored[0].1.contains("192.0.2.3"), "{stored:?}");
    let hosts_of = |socket: &std::path::Path| {
        let listed: Value =
            serde_json::from_str(&tenetctl_ok(socket, &["--json", "host", "list"])).unwrap();
        let mut names: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let socket_c = dir.path().join("tenetd.sock");
    assert_eq!(
        hosts_of(&socket_c),
        ["a", "b", "c"],
        "c has the cluster's hosts and itself"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while hosts_of(&a.socket()) != ["a", "b", "c"] {
        assert!(Instant::now() < deadline, "a never learned of c");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c.stderr_text().contains("joining the cluster"),
        "{}",
        c.stderr_text()
    );
    for tenetd in [c, a.tenetd] {
        let stopped = tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
    }
}
