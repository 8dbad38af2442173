//! Who may control the switch, and what a client can make it do: the Unix socket is
//! root's alone, the TCP API takes only clients with a certificate of its CA (and is
//! refused at config time without TLS), files named through the API stay in the files
//! directory, and oversized or idle requests cost tenetd no memory.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tests::{http, tenetd_once, unique, TempDir, Tenetd};

fn config(dir: &Path, extra_control: &str) -> String {
    format!(
        r#"
[dataplane]
workers = [1]
main_core = 0
file_prefix = "{prefix}"
memory_mb = 128
mbufs = 4095

[[tenant]]
name = "red"
id = 100

[[port]]
name = "c1"
backend = "null"
role = "access"
tenant = "red"

[control]
api_socket = "{dir}/tenetd.sock"
state_file = "{dir}/state.json"
files_dir = "{dir}/files"
{extra_control}
"#,
        prefix = unique("sec"),
        dir = dir.display(),
    )
}

/// A CA, and a certificate it signs for `names` (a server's address, a client's name).
struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Self { ca, ca_key }
    }

    /// Writes `<stem>.pem` and `<stem>.key` for a certificate of `names` into `dir`.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str], purpose: ExtendedKeyUsagePurpose) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }

    fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.ca.pem()).unwrap();
    }
}

/// `curl` against the TCP API: the HTTP status, or `None` when no HTTP answer came
/// (the TLS handshake failed).
fn curl(port: u16, dir: &Path, client: Option<&str>) -> Option<u16> {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--cacert")
        .arg(dir.join("ca.pem"));
    if let Some(stem) = client {
        command
            .arg("--cert")
            .arg(dir.join(format!("{stem}.pem")))
            .arg("--key")
            .arg(dir.join(format!("{stem}.key")));
    }
    let out = command
        .arg(format!("https://127.0.0.1:{port}/v1/tenants"))
        .output()
        .expect("curl runs (apt-get install curl)");
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && code != 0).then_some(code)
}

#[test]
fn the_tcp_api_takes_only_clients_with_a_certificate_of_its_ca() {
    let dir = TempDir::new("tls").unwrap();
    let port = 21000 + (std::process::id() % 20000) as u16;
    // Without TLS the TCP API is refused before anything starts, the field named.
    let plain = config(dir.path(), &format!("api_listen = \"127.0.0.1:{port}\""));
    let out = tenetd_once(&plain, &["--check"]).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("control.api_listen") && said.contains("client certificates"),
        "{said}"
    );

    let pki = Pki::new("tenet test CA");
    pki.write_ca(&dir.path().join("ca.pem"));
    pki.issue(
        dir.path(),
        "server",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    pki.issue(
        dir.path(),
        "operator",
        &["operator"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    // A certificate from another CA is no better than none.
    Pki::new("someone else").issue(
        dir.path(),
        "stranger",
        &["stranger"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let tls = format!(
        "api_listen = \"127.0.0.1:{port}\"\napi_tls_cert = \"{0}/server.pem\"\napi_tls_key = \"{0}/server.key\"\napi_client_ca = \"{0}/ca.pem\"",
        dir.path().display()
    );
    let tenetd = Tenetd::serving(None, &config(dir.path(), &tls)).unwrap();
    assert_eq!(curl(port, dir.path(), Some("operator")), Some(200));
    assert_eq!(curl(port, dir.path(), None), None, "no certificate");
    assert_eq!(
        curl(port, dir.path(), Some("stranger")),
        None,
        "another CA's"
    );
    // Plain HTTP on the TLS port gets nothing either.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(raw, "GET /v1/tenants HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("red"));
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

#[test]
fn a_user_other_than_root_cannot_reach_the_api() {
    let dir = TempDir::new("nonroot").unwrap();
    let tenetd = Tenetd::serving(None, &config(dir.path(), "")).unwrap();
    let socket = dir.path().join("tenetd.sock");
    let connect = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('{}'); print('connected')",
        socket.display()
    );
    let as_root = Command::new("python3")
        .args(["-c", &connect])
        .output()
        .unwrap();
    assert!(as_root.status.success(), "root connects");
    let as_nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", &connect])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&as_nobody.stderr);
    assert!(!as_nobody.status.success(), "nobody connected");
    assert!(said.contains("PermissionError"), "{said}");
    drop(tenetd);
}

#[test]
fn files_named_through_the_api_stay_in_the_files_directory() {
    let dir = TempDir::new("files").unwrap();
    let tenetd = Tenetd::serving(None, &config(dir.path(), "")).unwrap();
    let socket = dir.path().join("tenetd.sock");
    let files = dir.path().join("files");
    let add = |name: &str, field: &str, path: &Path| {
        http(
            &socket,
            "POST",
            "/v1/ports",
            &format!(
                r#"{{"name":"{name}","backend":"pcap","{field}":"{}"}}"#,
                path.display()
            ),
        )
    };
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    for (name, field, path) in [
        ("p1", "tx_file", victim.clone()),
        ("p2", "tx_file", files.join("../victim")),
        ("p3", "rx_file", Path::new("etc/shadow").to_path_buf()),
    ] {
        let answer = add(name, field, &path);
        assert_eq!(answer.status, 400, "{path:?}: {answer}");
        assert!(
            answer.text().contains(&format!("\"field\": \"{field}\"")),
            "{answer}"
        );
    }
    // A link planted in the directory does not lead out of it either.
    std::fs::create_dir_all(&files).unwrap();
    std::os::unix::fs::symlink(&victim, files.join("link.pcap")).unwrap();
    let answer = add("p4", "tx_file", &files.join("link.pcap"));
    assert_eq!(answer.status, 400, "{answer}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // Inside it, the port is made and writes its file there.
    let answer = add("p5", "tx_file", &files.join("out.pcap"));
    assert_eq!(answer.status, 201, "{answer}");
    let ports = http(&socket, "GET", "/v1/ports", "").text();
    assert!(
        ports.contains("\"p5\"") && !ports.contains("\"p1\""),
        "{ports}"
    );
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(files.join("out.pcap").exists());
}

/// tenetd's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn oversized_bodies_and_idle_connections_cost_tenetd_nothing() {
    let dir = TempDir::new("bounds").unwrap();
    let tenetd = Tenetd::serving(None, &config(dir.path(), "")).unwrap();
    let socket = dir.path().join("tenetd.sock");
    let pid = tenetd.pid();
    let before = rss_kib(pid);
    let chunk = vec![b'a'; 1 << 20];
    // Declared too large: refused at once.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        stream,
        "POST /v1/trace HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        32 << 20
    )
    .unwrap();
    let _ = stream.write_all(&chunk);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Not declared (chunked): read up to the bound, then refused.
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write!(
        stream,
        "POST /v1/trace HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..32 {
        if write!(stream, "{:x}\r\n", chunk.len()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Many idle connections: held to a budget, and closed when they send nothing.
    let idle: Vec<_> = (0..100)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let during = rss_kib(pid);
    // A new client waits for a slot: the idle ones go after the read time.
    let started = Instant::now();
    let answer = http(&socket, "GET", "/v1/tenants", "");
    assert_eq!(answer.status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(25));
    drop(idle);
    let after = rss_kib(pid);
    eprintln!("tenetd RSS: {before} KiB before, {during} KiB with 100 idle connections, {after} KiB after 64 MiB of refused bodies");
    assert!(
        during.max(after) < before + 16 * 1024,
        "RSS grew from {before} KiB to {during}/{after} KiB"
    );
    let stopped = tenetd.stop().unwrap();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}
