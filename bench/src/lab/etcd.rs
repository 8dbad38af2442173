//! A real etcd (Debian's `etcd-server`) with its own data directory, killed and removed
//! on drop: plain, or as a production etcd runs, with TLS, client certificates and
//! authentication on (a CA, server and client certificates made with `openssl`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use control::config::{ClientIdentity, Credentials, EtcdAccess, Secret};

use super::{Netns, TempDir};
use crate::process::run;

/// A real etcd with its own data directory; killed and removed on drop.
pub struct Etcd {
    child: Option<Child>,
    client_url: String,
    peer_url: String,
    data: TempDir,
    /// The namespace it runs in (`None`: this one).
    ns: Option<String>,
    /// Its certificates and users, when it requires them.
    tls: Option<EtcdTls>,
}

/// What a secured etcd asks of a client, in files: the CA of its certificate, a client
/// certificate it accepts, and user [`EtcdTls::USER`]'s password.
pub struct EtcdTls {
    dir: TempDir,
    /// Whether authentication is on yet (etcdctl then signs in as root).
    auth: bool,
}

fn free_loopback_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Etcd {
    /// Starts etcd on loopback and waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        let (client, peer) = (free_loopback_port()?, free_loopback_port()?);
        Self::launch(None, "127.0.0.1", client, peer, false)
    }

    /// Starts etcd on loopback as a production etcd runs: clients reach it over TLS
    /// with a client certificate signed by its CA, and sign in as a user (user
    /// [`EtcdTls::USER`] may read and write every key under `/`).
    pub fn start_secure() -> anyhow::Result<Self> {
        let (client, peer) = (free_loopback_port()?, free_loopback_port()?);
        Self::launch(None, "127.0.0.1", client, peer, true)
    }

    /// Starts etcd inside `ns`, listening on `address` (one of the namespace's), as a
    /// cluster's etcd on its management network.
    pub fn start_in(ns: &Netns, address: &str) -> anyhow::Result<Self> {
        Self::launch(Some(ns.name().to_owned()), address, 2379, 2380, false)
    }

    fn launch(
        ns: Option<String>,
        address: &str,
        client: u16,
        peer: u16,
        secure: bool,
    ) -> anyhow::Result<Self> {
        let scheme = if secure { "https" } else { "http" };
        let mut etcd = Self {
            child: None,
            client_url: format!("{scheme}://{address}:{client}"),
            peer_url: format!("http://{address}:{peer}"),
            data: TempDir::new("etcd")?,
            ns,
            tls: secure.then(|| EtcdTls::make(address)).transpose()?,
        };
        etcd.resume()?;
        if etcd.tls.is_some() {
            etcd.enable_auth()?;
        }
        Ok(etcd)
    }

    fn command(&self, program: &str) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Kills etcd (its data stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on its data and addresses, and waits until it answers.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let mut command = self.command("etcd");
        command
            .args(["--name", "tenet-test", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args([
                "--initial-cluster",
                &format!("tenet-test={}", self.peer_url),
            ]);
        if let Some(tls) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(tls.ca())
                .arg("--cert-file")
                .arg(tls.file("server.pem"))
                .arg("--key-file")
                .arg(tls.file("server.key"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (apt-get install etcd-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.get_prefix("/").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("etcd did not come up at {}", self.client_url)
    }

    /// Users root and [`EtcdTls::USER`] (read and write under `/`), then authentication
    /// on.
    fn enable_auth(&mut self) -> anyhow::Result<()> {
        let password = EtcdTls::PASSWORD;
        for args in [
            vec!["user", "add", &format!("root:{}", EtcdTls::ROOT_PASSWORD)],
            vec!["user", "grant-role", "root", "root"],
            vec!["user", "add", &format!("{}:{password}", EtcdTls::USER)],
            vec!["role", "add", EtcdTls::USER],
            vec![
                "role",
                "grant-permission",
                EtcdTls::USER,
                "--prefix=true",
                "readwrite",
                "/",
            ],
            vec!["user", "grant-role", EtcdTls::USER, EtcdTls::USER],
            vec!["auth", "enable"],
        ] {
            self.etcdctl(&args)?;
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.auth = true;
        }
        Ok(())
    }

    /// `http://address:port`, or `https://` when secured.
    pub fn url(&self) -> &str {
        &self.client_url
    }

    /// The value of gauge or counter `name` on etcd's `/metrics` (plain etcd only).
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        use std::io::{Read, Write};
        let address = self
            .client_url
            .strip_prefix("http://")
            .context("metrics are read from a plain (http) etcd")?;
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        text.lines()
            .find_map(|line| {
                let (metric, value) = line.split_once(' ')?;
                (metric == name).then(|| value.trim().parse::<f64>().ok())?
            })
            .with_context(|| format!("etcd's /metrics has no {name}"))
    }

    /// Its certificates and credentials, when secured.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// The lines of a tenetd's `[control]` that reach this etcd: the endpoint, and
    /// when secured the CA, a client certificate, the user and its password file.
    pub fn control_toml(&self) -> String {
        let mut lines = format!("etcd = [\"{}\"]\n", self.client_url);
        if let Some(tls) = &self.tls {
            lines.push_str(&format!(
                "etcd_ca = \"{}\"\netcd_cert = \"{}\"\netcd_key = \"{}\"\n\
                 etcd_user = \"{}\"\netcd_password_file = \"{}\"\n",
                tls.ca().display(),
                tls.client_cert().display(),
                tls.client_key().display(),
                EtcdTls::USER,
                tls.password_file().display(),
            ));
        }
        lines
    }

    /// What a store shows this etcd to be taken (nothing when plain).
    pub fn access(&self) -> EtcdAccess {
        let Some(tls) = &self.tls else {
            return EtcdAccess::default();
        };
        let read = |path: PathBuf| std::fs::read_to_string(path).expect("the test's own files");
        EtcdAccess {
            ca: Some(read(tls.ca())),
            identity: Some(ClientIdentity {
                cert: read(tls.client_cert()),
                key: Secret::new(read(tls.client_key())),
            }),
            user: Some(Credentials {
                name: EtcdTls::USER.to_owned(),
                password: Secret::new(EtcdTls::PASSWORD),
                password_field: "control.etcd_password_file",
            }),
        }
    }

    /// etcdctl's output for `args`, against this etcd (as root once authentication is
    /// on).
    fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.command("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.client_url]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(tls.ca())
                .arg("--cert")
                .arg(tls.client_cert())
                .arg("--key")
                .arg(tls.client_key());
            if tls.auth {
                command.args(["--user", &format!("root:{}", EtcdTls::ROOT_PASSWORD)]);
            }
        }
        let out = command.args(args).output().context("running etcdctl")?;
        anyhow::ensure!(
            out.status.success(),
            "etcdctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Puts `value` at `key`, through etcdctl (what a buggy writer or a hand edit
    /// leaves).
    pub fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.etcdctl(&["put", key, value])?;
        Ok(())
    }

    /// Keys and values under `prefix`, through etcdctl.
    pub fn get_prefix(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let text = self.etcdctl(&["get", "--prefix", prefix])?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines
            .chunks(2)
            .map(|kv| (kv[0].to_owned(), kv.get(1).unwrap_or(&"").to_string()))
            .collect())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

impl EtcdTls {
    /// The user a tenetd signs in as.
    pub const USER: &'static str = "tenet";
    const PASSWORD: &'static str = "tenet-test-password";
    const ROOT_PASSWORD: &'static str = "root-test-password";

    /// A CA, a server certificate for `address` and a client certificate it signed,
    /// another CA that signed nothing of this etcd's, and the user's password file.
    fn make(address: &str) -> anyhow::Result<Self> {
        let tls = Self {
            dir: TempDir::new("etcd-tls")?,
            auth: false,
        };
        tls.authority("ca")?;
        tls.authority("other-ca")?;
        tls.signed(
            "server",
            &format!("subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )?;
        tls.signed("client", "extendedKeyUsage=clientAuth\n")?;
        std::fs::write(tls.password_file(), format!("{}\n", Self::PASSWORD))?;
        std::fs::write(tls.file("wrong-password"), "not-the-password\n")?;
        Ok(tls)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_arg(&self, name: &str) -> String {
        self.file(name).to_string_lossy().into_owned()
    }

    /// A self-signed CA `<name>.pem` with its key `<name>.key`.
    fn authority(&self, name: &str) -> anyhow::Result<()> {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=tenet-test-{name}"),
                "-keyout",
                &self.path_arg(&format!("{name}.key")),
                "-out",
                &self.path_arg(&format!("{name}.pem")),
            ],
        )?;
        Ok(())
    }

    /// `<name>.pem` and `<name>.key`, signed by `ca` with `extensions`.
    fn signed(&self, name: &str, extensions: &str) -> anyhow::Result<()> {
        let (csr, ext) = (format!("{name}.csr"), format!("{name}.ext"));
        std::fs::write(self.file(&ext), extensions)?;
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=tenet-test-{name}"),
                "-keyout",
                &self.path_arg(&format!("{name}.key")),
                "-out",
                &self.path_arg(&csr),
            ],
        )?;
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &self.path_arg(&csr),
                "-CA",
                &self.path_arg("ca.pem"),
                "-CAkey",
                &self.path_arg("ca.key"),
                "-CAcreateserial",
                "-extfile",
                &self.path_arg(&ext),
                "-out",
                &self.path_arg(&format!("{name}.pem")),
            ],
        )?;
        Ok(())
    }

    /// The CA that signed etcd's certificate and the client's.
    pub fn ca(&self) -> PathBuf {
        self.file("ca.pem")
    }

    /// A CA that signed nothing of this etcd's.
    pub fn other_ca(&self) -> PathBuf {
        self.file("other-ca.pem")
    }

    /// A client certificate etcd accepts.
    pub fn client_cert(&self) -> PathBuf {
        self.file("client.pem")
    }

    /// Its key.
    pub fn client_key(&self) -> PathBuf {
        self.file("client.key")
    }

    /// The file holding [`EtcdTls::USER`]'s password.
    pub fn password_file(&self) -> PathBuf {
        self.file("password")
    }

    /// A file holding a password that is not the user's.
    pub fn wrong_password_file(&self) -> PathBuf {
        self.file("wrong-password")
    }
}
