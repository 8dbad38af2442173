//! The Kubernetes path as an operator deploys it (`configs/kubernetes/`): every
//! manifest checked offline against the Kubernetes API's schemas (kubernetes-validate,
//! which bundles them; `scripts/setup` installs it) and the NetworkAttachmentDefinition
//! against the schema of Multus's CRD; then what the manifests carry is run for real.
//! The ConfigMap's tenetd.toml, with the environment the DaemonSet gives it, passes
//! `tenetd --check` against an etcd that requires TLS, a client certificate and a user
//! (the files the tenet-etcd Secret mounts), and runs as a node's tenetd; the
//! DaemonSet's probes answer against it; the example pod joins tenant blue through the
//! network's config as Multus hands it to tenet-cni (its `cni-args` and `ips`), as a
//! second interface beside a cluster network's eth0, and a pod left to the network's
//! default tenant cannot reach it.
//!
//! The manifests name the node's paths (`/run/tenet`, `/var/lib/tenet`, ...): the test
//! moves those into a temporary directory, and names DPDK's runtime directory apart,
//! so it shares nothing with a tenet installed on this machine. Nothing else changes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tests::{binary, tenetctl_ok, unique, wait_for_ping, Etcd, Link, Netns, TempDir, Tenetd};

/// Kubernetes releases the manifests must suit: an older one still common, and a
/// recent one.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30", "1.33"];

/// Where `scripts/setup` installs kubernetes-validate and its Python (with PyYAML and
/// jsonschema, which the test uses too).
const VALIDATOR: &str = "/opt/tenet/kubernetes-validate/bin";

/// The NetworkAttachmentDefinition's `openAPIV3Schema` from Multus's CRD
/// (`deployments/multus-daemonset.yml`, descriptions left out): the API server checks
/// a NetworkAttachmentDefinition against this, and kubernetes-validate has no CRDs.
const MULTUS_NAD_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "apiVersion": { "type": "string" },
    "kind": { "type": "string" },
    "metadata": { "type": "object" },
    "spec": {
      "type": "object",
      "properties": { "config": { "type": "string" } }
    }
  }
}"#;

/// Variables of tenetd.toml that `/etc/tenet/node.env` sets on each node (the
/// DaemonSet sources it), as opposed to those the DaemonSet's own env gives.
const NODE_ENV: [&str; 2] = ["TENET_UNDERLAY_IP", "TENET_UPLINK"];

fn manifests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/kubernetes")
}

fn validator(program: &str) -> PathBuf {
    let path = Path::new(VALIDATOR).join(program);
    assert!(
        path.exists(),
        "{} is missing: scripts/setup installs kubernetes-validate",
        path.display()
    );
    path
}

/// The manifest files, in name order.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .expect("configs/kubernetes")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in configs/kubernetes");
    files
}

/// Every document of every manifest, with its file name.
fn documents() -> Vec<(String, Value)> {
    // PyYAML from kubernetes-validate's own environment: the test needs no YAML crate.
    const LOAD: &str = "import json, sys, yaml\n\
        print(json.dumps([[p, d] for p in sys.argv[1:] \
        for d in yaml.safe_load_all(open(p)) if d is not None]))";
    let out = Command::new(validator("python"))
        .args(["-c", LOAD])
        .args(manifest_files())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<(String, Value)> = serde_json::from_slice(&out.stdout).expect("JSON");
    all.into_iter()
        .map(|(path, doc)| {
            let name = Path::new(&path)
                .file_name()
                .expect("a file")
                .to_string_lossy();
            (name.into_owned(), doc)
        })
        .collect()
}

/// The one document of `kind`.
fn document(docs: &[(String, Value)], kind: &str) -> Value {
    let found: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} in configs/kubernetes");
    found[0].clone()
}

/// Whether `name` is a DNS-1123 subdomain, as the API server wants every object's.
fn dns_subdomain(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label_ok)
}

#[test]
fn manifests_match_the_kubernetes_api_schemas() {
    let docs = documents();
    for version in KUBERNETES_VERSIONS {
        let out = Command::new(validator("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(manifest_files())
            .output()
            .expect("kubernetes-validate runs");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "Kubernetes {version}:\n{said}");
        // Each document of a built-in kind passed; only the CRD's has no schema here.
        for (file, doc) in &docs {
            let kind = doc["kind"].as_str().expect("a kind");
            let name = doc["metadata"]["name"].as_str().expect("a name");
            if kind == "NetworkAttachmentDefinition" {
                continue;
            }
            let passed = format!("{file} passed for resource {}/{name}", kind.to_lowercase());
            assert!(said.contains(&passed), "{passed}:\n{said}");
        }
        assert_eq!(
            said.matches("WARN").count(),
            1,
            "the NetworkAttachmentDefinition's is the only kind without a schema:\n{said}"
        );
    }

    // The NetworkAttachmentDefinition, against Multus's CRD.
    let nad = document(&docs, "NetworkAttachmentDefinition");
    assert_eq!(nad["apiVersion"], "k8s.cni.cncf.io/v1");
    let name = nad["metadata"]["name"].as_str().expect("a name");
    assert!(dns_subdomain(name), "`{name}` is not a DNS-1123 subdomain");
    const CHECK: &str = "import json, sys, jsonschema\n\
        jsonschema.validate(json.loads(sys.argv[2]), json.loads(sys.argv[1]))";
    let out = Command::new(validator("python"))
        .args(["-c", CHECK, MULTUS_NAD_SCHEMA, &nad.to_string()])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the NetworkAttachmentDefinition against Multus's CRD: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its config is the ConfigMap's network, which the other test runs.
    let config: Value = serde_json::from_str(nad["spec"]["config"].as_str().expect("config"))
        .expect("the NetworkAttachmentDefinition's config is JSON");
    assert_eq!(
        config,
        network(&docs),
        "the NetworkAttachmentDefinition's config is tenet.conflist"
    );
    assert_eq!(config["name"], name, "Multus finds the network by its name");
}

/// The ConfigMap's tenet.conflist.
fn network(docs: &[(String, Value)]) -> Value {
    let map = document(docs, "ConfigMap");
    serde_json::from_str(
        map["data"]["tenet.conflist"]
            .as_str()
            .expect("tenet.conflist"),
    )
    .expect("tenet.conflist is JSON")
}

/// The `${VAR}` names in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(var, _)| var.trim_end_matches(":list").to_owned())
        .collect()
}

/// `text` with the node's paths moved to this test's: each `(from, to)` prefix.
fn moved(text: &str, paths: &[(&str, PathBuf)]) -> String {
    paths.iter().fold(text.to_owned(), |text, (from, to)| {
        text.replace(from, &format!("{}/", to.display()))
    })
}

/// What libcni (in Multus) hands the network's one plugin for `pod`'s attachment
/// `selection` (an element of its k8s.v1.cni.cncf.io/networks annotation): the plugin's
/// config with the list's name and version, the `ips` the plugin's capability asks
/// for, and the `cni-args` Multus adds as `args.cni`.
fn plugin_config(network: &Value, selection: &Value) -> Value {
    let plugins = network["plugins"].as_array().expect("a plugin list");
    assert_eq!(plugins.len(), 1, "tenet alone");
    let mut conf = plugins[0].clone();
    conf["name"] = network["name"].clone();
    conf["cniVersion"] = network["cniVersion"].clone();
    if conf["capabilities"]["ips"] == true && selection["ips"].is_array() {
        conf["runtimeConfig"] = json!({"ips": selection["ips"]});
    }
    if selection["cni-args"].is_object() {
        conf["args"] = json!({"cni": selection["cni-args"]});
    }
    conf
}

/// Runs tenet-cni as the runtime does; whether it succeeded, and its JSON.
fn cni(command: &str, env: &[(&str, &str)], conf: &Value) -> (bool, Value) {
    let mut cmd = Command::new(binary("tenet-cni"));
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/usr/lib/cni:/opt/cni/bin")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("tenet-cni runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())
        .expect("the config written");
    let out = child.wait_with_output().expect("tenet-cni ends");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (out.status.success(), value)
}

/// A pod's sandbox: its namespace with the cluster network's eth0 and default route
/// already there, as the cluster network's plugin leaves them before Multus calls
/// the next; `attach` is the CNI environment of an attachment to it, with the
/// kubelet's `CNI_ARGS` Multus passes on.
struct Pod {
    ns: Netns,
    _eth0: Link,
    id: String,
    args: String,
}

impl Pod {
    fn new(name: &str, cluster_ip: &str) -> Self {
        let ns = Netns::new("kpod").unwrap();
        let eth0 = Link::new(&ns, Some(&format!("{cluster_ip}/24"))).unwrap();
        ns.exec("ip", &["route", "add", "default", "via", "10.244.1.1"])
            .unwrap();
        let id = unique("k8s-sandbox");
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID={id}"
        );
        Self {
            ns,
            _eth0: eth0,
            id,
            args,
        }
    }

    fn attach<'a>(&'a self, ifname: &'a str, netns: &'a str) -> [(&'a str, &'a str); 4] {
        [
            ("CNI_CONTAINERID", self.id.as_str()),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", self.args.as_str()),
        ]
    }
}

#[test]
fn the_shipped_config_and_network_run_on_a_node() {
    let docs = documents();
    let map = document(&docs, "ConfigMap");
    let daemonset = document(&docs, "DaemonSet");
    let secret = document(&docs, "Secret");
    let pod = document(&docs, "Pod");
    let nad = document(&docs, "NetworkAttachmentDefinition");
    let toml = map["data"]["tenetd.toml"].as_str().expect("tenetd.toml");
    let network = network(&docs);
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "tenetd");

    // The node is this machine's network namespace (etcd listens on its loopback),
    // with an uplink of its own.
    let uplink = Uplink::new();
    let etcd = Etcd::start_secure().unwrap();
    let secret_files = etcd.tls().expect("secured").ca();
    let secret_files = secret_files.parent().expect("the TLS directory");

    // The environment tenetd gets: the DaemonSet's env (the node's name from
    // Kubernetes, etcd's endpoints from the Secret) and the node's node.env.
    let node_name = unique("k8s-node");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for var in container["env"].as_array().expect("env") {
        let name = var["name"].as_str().expect("a name").to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            value.to_owned()
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            node_name.clone()
        } else {
            let from = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(from["name"], secret["metadata"]["name"], "{var}");
            let key = from["key"].as_str().expect("a key");
            assert!(
                secret["stringData"][key].is_string(),
                "the Secret has {key}"
            );
            assert_eq!(key, "endpoints", "{var}");
            etcd.url().to_owned()
        };
        env.insert(name, value);
    }
    let given: BTreeSet<String> = env
        .keys()
        .cloned()
        .chain(NODE_ENV.map(str::to_owned))
        .collect();
    assert_eq!(
        variables(toml),
        given,
        "tenetd.toml's variables are the DaemonSet's env and node.env's"
    );
    env.insert("TENET_UNDERLAY_IP".to_owned(), "198.51.100.1/24".to_owned());
    env.insert("TENET_UPLINK".to_owned(), uplink.0.clone());
    // The Secret's files, mounted where the config names them.
    for (key, _) in secret["stringData"].as_object().expect("stringData") {
        if key != "endpoints" {
            assert!(
                toml.contains(&format!("/etc/tenet/etcd/{key}")),
                "tenetd.toml names {key}"
            );
            assert!(secret_files.join(key).exists(), "{key}");
        }
    }

    let dir = TempDir::new("k8s").unwrap();
    let paths = [
        ("/run/tenet/", dir.path().join("run")),
        ("/var/lib/tenet/", dir.path().join("lib")),
        ("/var/log/tenet/", dir.path().join("log")),
        ("/etc/tenet/etcd/", secret_files.to_owned()),
    ];
    let prefix = unique("k8s");
    let toml = moved(toml, &paths).replacen(
        "[dataplane]\n",
        &format!("[dataplane]\nfile_prefix = \"{prefix}\"\n"),
        1,
    );
    let config = dir.path().join("tenetd.toml");
    std::fs::write(&config, &toml).unwrap();

    // --check connects: etcd takes this node's CA, client certificate and user.
    let out = Command::new(binary("tenetd"))
        .arg("--check")
        .arg("--config")
        .arg(&config)
        .envs(&env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("etcd {} takes this host", etcd.url())),
        "{said}"
    );
    assert!(!said.contains("note:"), "etcd answered: {said}");

    // The same file runs as the node's tenetd (its variables expanded as tenetd would).
    let expanded = control::config::expand_variables(&toml, |var| env.get(var).cloned()).unwrap();
    let tenetd = Tenetd::serving(None, &expanded).unwrap();
    let socket = dir.path().join("run/tenetd.sock");
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let argv = container[probe]["exec"]["command"].as_array().expect(probe);
        assert_eq!(argv[0], "tenetctl", "{probe}");
        let out = Command::new(binary("tenetctl"))
            .args(argv[1..].iter().map(|a| a.as_str().expect("an argument")))
            .env("TENET_SOCKET", &socket)
            .output()
            .unwrap();
        assert!(out.status.success(), "{probe}: {out:?}");
    }

    // The example pod, attached as Multus attaches it.
    let annotation = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
        .as_str()
        .expect("the pod's networks");
    let selections: Value = serde_json::from_str(annotation).expect("JSON networks");
    let selection = &selections[0];
    assert_eq!(selection["name"], nad["metadata"]["name"]);
    assert_eq!(pod["metadata"]["namespace"], nad["metadata"]["namespace"]);
    let tenant = selection["cni-args"]["tenant"].as_str().expect("a tenant");
    assert_ne!(Some(tenant), network["plugins"][0]["tenant"].as_str());
    let ifname = selection["interface"].as_str().expect("an interface");
    let address = selection["ips"][0].as_str().expect("an address");
    let pod_name = pod["metadata"]["name"].as_str().expect("a name");
    let blue = Pod::new(pod_name, "10.244.1.5");
    let blue_netns = blue.ns.path();
    let blue_attach = blue.attach(ifname, &blue_netns);
    let conf = moved_json(&plugin_config(&network, selection), &paths);
    let (ok, result) = cni("ADD", &blue_attach, &conf);
    assert!(ok, "ADD: {result}");
    assert_eq!(result["ips"][0]["address"], address, "{result}");
    let routes = blue.ns.exec("ip", &["route", "show", "default"]).unwrap();
    assert!(
        routes.contains("dev eth0") && !routes.contains(ifname),
        "the cluster network keeps the default route: {routes}"
    );
    let mac = result["interfaces"][1]["mac"].as_str().expect("a MAC");
    let endpoints: Value =
        serde_json::from_str(&tenetctl_ok(&socket, &["--json", "endpoint", "list"])).unwrap();
    assert!(
        endpoints
            .as_array()
            .expect("endpoints")
            .iter()
            .any(|e| e["mac"] == mac && e["tenant"] == tenant),
        "the pod is in {tenant}: {endpoints}"
    );
    // Its tenant's gateway answers on the tenant's network.
    wait_for_ping(&blue.ns, "10.64.0.1");

    // A pod without cni-args joins the network's own tenant, which cannot reach blue.
    let red = Pod::new("red-app", "10.244.1.6");
    let red_netns = red.ns.path();
    let red_attach = red.attach(ifname, &red_netns);
    // It names no address: tenetd hands one out of red's subnet.
    let red_selection = json!({"name": selection["name"]});
    let red_conf = moved_json(&plugin_config(&network, &red_selection), &paths);
    let (ok, result) = cni("ADD", &red_attach, &red_conf);
    assert!(ok, "ADD: {result}");
    let red_address = result["ips"][0]["address"].as_str().unwrap_or_default();
    assert!(
        red_address.starts_with("10.64.") && red_address.ends_with("/16"),
        "{result}"
    );
    assert!(
        result["routes"].as_array().is_some_and(|r| r.is_empty()),
        "no default route via tenet: {result}"
    );
    wait_for_ping(&red.ns, "10.64.0.1");
    let bare = address.split('/').next().expect("an address");
    assert!(
        red.ns.exec("ping", &["-c", "2", "-W", "1", bare]).is_err(),
        "another tenant's pod is out of reach"
    );
    let (ok, status) = cni("STATUS", &[], &red_conf);
    assert!(ok, "STATUS: {status}");

    for (attach, conf) in [(&blue_attach, &conf), (&red_attach, &red_conf)] {
        let (ok, err) = cni("DEL", attach, conf);
        assert!(ok, "DEL: {err}");
    }
    assert!(blue.ns.exec("ip", &["link", "show", ifname]).is_err());
    assert_eq!(tests::port_names(&socket), ["uplink"]);
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The probes fail once tenetd is gone (tenetctl: 3, nothing answers).
    let out = Command::new(binary("tenetctl"))
        .args(["port", "list"])
        .env("TENET_SOCKET", &socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(tests::dpdk_leftovers(&prefix).is_empty());
}

/// A veth pair whose first end is a node's uplink; deleted on drop.
struct Uplink(String);

impl Uplink {
    fn new() -> Self {
        let (near, far) = (unique("kup"), unique("kuf"));
        tests::add_veth(&near, &far).unwrap();
        for dev in [&near, &far] {
            tests::run("ip", &["link", "set", dev, "up"]).unwrap();
        }
        Self(near)
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        // Deleting one end deletes both.
        let _ = tests::run("ip", &["link", "del", &self.0]);
    }
}

/// [`moved`] for a JSON config.
fn moved_json(conf: &Value, paths: &[(&str, PathBuf)]) -> Value {
    serde_json::from_str(&moved(&conf.to_string(), paths)).expect("still JSON")
}
