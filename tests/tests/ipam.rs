//! Addresses handed out across a cluster: two hosts sharing a tenant through a real
//! etcd claim addresses at the same time, through the API and through tenet-cni, and
//! never hand out one address twice; a static address another host holds is refused
//! naming the field; a full subnet says so; claims survive a restart; a released
//! address can be claimed by the other host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tests::{binary, http, unique, Etcd, Netns, TempDir, Tenetd};

struct Host {
    tenetd: Tenetd,
    dir: TempDir,
}

impl Host {
    fn start(name: &str, etcd: &Etcd, dir: TempDir) -> Self {
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

[[tenant]]
name = "red"
id = 100
subnets = ["10.30.0.1/27", "10.31.0.1/24"]
gateway_host = "a"

[[port]]
name = "{name}-spare"
backend = "null"

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/view.json"
{etcd}"#,
            prefix = unique(&format!("ipam{name}")),
            dir = dir.path().display(),
            etcd = etcd.control_toml(),
        );
        let tenetd = Tenetd::serving(None, &config).unwrap();
        Self { tenetd, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tenetd.sock")
    }

    fn stop(self) -> TempDir {
        let stopped = self.tenetd.stop().unwrap();
        assert!(stopped.status.success(), "{}", stopped.stderr);
        self.dir
    }
}

/// Claims an address of red for `owner`: (HTTP status, answer).
fn claim(socket: &Path, owner: &str, extra: Value) -> (u16, Value) {
    let mut request = json!({"tenant": "red", "owner": owner});
    request
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let answer = http(socket, "POST", "/v1/addresses", &request.to_string());
    (answer.status, answer.body)
}

/// Claims from both hosts at once, `per_host` each, on `subnet`: the answers.
fn race(a: &Host, b: &Host, per_host: usize, subnet: &str) -> Vec<(u16, Value)> {
    let hosts = [("a", a.socket()), ("b", b.socket())];
    std::thread::scope(|s| {
        let runs: Vec<_> = hosts
            .iter()
            .map(|(name, socket)| {
                s.spawn(move || {
                    (0..per_host)
                        .map(|i| {
                            claim(
                                socket,
                                &format!("{name}-{subnet}-{i}"),
                                json!({"subnet": subnet}),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    })
}

fn stored_claims(etcd: &Etcd) -> Vec<Value> {
    etcd.get_prefix("/tenet/addresses/red/")
        .unwrap()
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v).unwrap())
        .collect()
}

/// tenet-cni ADD of `container` into `ns` through `socket`; the result.
fn cni_add(socket: &Path, dir: &Path, container: &str, ns: &Netns, extra: Value) -> (bool, Value) {
    let mut conf = json!({
        "cniVersion": "1.1.0", "name": "red-net", "type": "tenet", "tenant": "red",
        "subnet": "10.31.0.0/24", "socket": socket, "dataDir": dir.join("cni"),
    });
    conf.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut child = Command::new(binary("tenet-cni"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/var/run/netns/{}", ns.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), value)
}

fn cni_del(socket: &Path, dir: &Path, container: &str) {
    let conf = json!({
        "cniVersion": "1.1.0", "name": "red-net", "type": "tenet", "tenant": "red",
        "socket": socket, "dataDir": dir.join("cni"),
    });
    let mut child = Command::new(binary("tenet-cni"))
        .env_clear()
        .env("CNI_COMMAND", "DEL")
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "DEL {container}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn two_hosts_never_hand_out_one_address_twice() {
    let etcd = Etcd::start().unwrap();
    let a = Host::start("a", &etcd, TempDir::new("ipam-a").unwrap());
    let b = Host::start("b", &etcd, TempDir::new("ipam-b").unwrap());

    // 10.30.0.0/27: 29 addresses besides the gateway; 15 asked for from each host at
    // once. Every address goes to one owner only, and the one left without is told
    // the subnet is full.
    let answers = race(&a, &b, 15, "10.30.0.0/27");
    let granted: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .map(|(_, body)| body)
        .collect();
    let refused: Vec<&(u16, Value)> = answers.iter().filter(|(s, _)| *s != 201).collect();
    let distinct: BTreeSet<&str> = granted.iter().map(|g| g["ip"].as_str().unwrap()).collect();
    assert_eq!(granted.len(), 29, "refused: {refused:?}");
    assert_eq!(distinct.len(), 29, "every address once: {granted:?}");
    assert!(!distinct.contains("10.30.0.1"), "never the gateway");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, 409);
    assert_eq!(refused[0].1["field"], "subnet", "{refused:?}");
    assert!(granted
        .iter()
        .all(|g| g["gateway"] == "10.30.0.1" && g["prefix"] == 27));
    // etcd holds one key per claim, naming the host that made it.
    let stored = stored_claims(&etcd);
    assert_eq!(stored.len(), 29);
    for host in ["a", "b"] {
        assert!(stored.iter().any(|c| c["host"] == host), "{stored:?}");
    }
    // Asking again with the same owner gives the same address (a retried ADD).
    let first = granted[0];
    let owner = first["owner"].as_str().unwrap();
    let on = if owner.starts_with("a-") {
        a.socket()
    } else {
        b.socket()
    };
    let (status, again) = claim(&on, owner, json!({"subnet": "10.30.0.0/27"}));
    assert_eq!((status, &again["ip"]), (200, &first["ip"]));

    // Static addresses asked for from both hosts at once: each goes to one of them,
    // the other is refused naming `ip`.
    let statics: Vec<String> = (10..20).map(|h| format!("10.31.0.{h}")).collect();
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let runs: Vec<_> = [("a", a.socket()), ("b", b.socket())]
            .into_iter()
            .map(|(name, socket)| {
                let statics = &statics;
                s.spawn(move || {
                    statics
                        .iter()
                        .map(|ip| claim(&socket, &format!("static-{name}-{ip}"), json!({"ip": ip})))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        runs.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    for ip in &statics {
        let mine: Vec<&(u16, Value)> = answers
            .iter()
            .filter(|(status, body)| {
                body["ip"] == ip.as_str()
                    || (*status == 409
                        && body["message"].as_str().unwrap_or("").contains(ip.as_str()))
            })
            .collect();
        let won = mine.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(won, 1, "{ip}: {mine:?}");
        let lost: Vec<_> = mine.iter().filter(|(s, _)| *s != 201).collect();
        assert_eq!(lost.len(), 1, "{ip}: {mine:?}");
        assert_eq!(
            (lost[0].0, &lost[0].1["field"]),
            (409, &json!("ip")),
            "{ip}: {mine:?}"
        );
    }

    // An endpoint added by hand on b at an address a claimed is refused naming `ip`
    // (once b's watch has brought a's claim).
    let a_claim = stored_claims(&etcd)
        .into_iter()
        .find(|c| c["host"] == "a")
        .unwrap();
    let endpoint = json!({"tenant": "red", "mac": "02:00:00:00:77:01",
                          "ip": a_claim["ip"], "port": "b-spare"});
    let mut refused = http(&b.socket(), "POST", "/v1/endpoints", &endpoint.to_string());
    for _ in 0..100 {
        if refused.status == 409 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        refused = http(&b.socket(), "POST", "/v1/endpoints", &endpoint.to_string());
    }
    assert_eq!(
        (refused.status, &refused.body["field"]),
        (409, &json!("ip")),
        "{}",
        refused.body
    );

    // Containers through tenet-cni on both hosts: distinct addresses; a static one
    // another host's container holds is refused naming it.
    let (ns_a, ns_b, ns_c) = (
        Netns::new("ia").unwrap(),
        Netns::new("ib").unwrap(),
        Netns::new("ic").unwrap(),
    );
    let (ida, idb, idc) = (unique("ipam-a"), unique("ipam-b"), unique("ipam-c"));
    let (ok, ra) = cni_add(&a.socket(), a.dir.path(), &ida, &ns_a, json!({}));
    assert!(ok, "{ra}");
    let (ok, rb) = cni_add(&b.socket(), b.dir.path(), &idb, &ns_b, json!({}));
    assert!(ok, "{rb}");
    let address = |r: &Value| r["ips"][0]["address"].as_str().unwrap().to_owned();
    assert_ne!(address(&ra), address(&rb));
    let taken_on_a = address(&ra);
    let (ok, err) = cni_add(
        &b.socket(),
        b.dir.path(),
        &idc,
        &ns_c,
        json!({"runtimeConfig": {"ips": [taken_on_a]}}),
    );
    assert!(!ok);
    let said = err["msg"].as_str().unwrap_or_default();
    assert!(
        said.contains("ip: ") && said.contains("already claimed"),
        "{err}"
    );

    // A restarted host has every claim; a claim released on one host can be taken on
    // the other.
    let dir = a.stop();
    let a = Host::start("a", &etcd, dir);
    let listed = http(&a.socket(), "GET", "/v1/addresses", "");
    let listed = listed.body.as_array().unwrap();
    assert_eq!(listed.len(), stored_claims(&etcd).len());
    assert!(
        listed
            .iter()
            .any(|c| c["owner"].as_str().unwrap().starts_with("a-") && c["host"].is_null()),
        "a's own claims name no host: {listed:?}"
    );
    cni_del(&a.socket(), a.dir.path(), &ida);
    let ip_a = taken_on_a.split('/').next().unwrap().to_owned();
    let mut took = (0, Value::Null);
    for _ in 0..50 {
        took = claim(&b.socket(), "after-release", json!({"ip": ip_a}));
        if took.0 == 201 {
            break;
        }
        // b's watch has yet to bring a's release.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(took.0, 201, "{took:?}");
    cni_del(&b.socket(), b.dir.path(), &idb);
    assert!(
        stored_claims(&etcd)
            .iter()
            .all(|c| !c["owner"].as_str().unwrap().starts_with("cni:")),
        "the containers' claims are gone"
    );
    a.stop();
    b.stop();
}
