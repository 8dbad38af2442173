//! `[control]`'s cluster store: where etcd is, and how this host proves itself to it
//! (the CA its server certificate must chain to, a client certificate, a user and a
//! password). Every file and variable named is read here, so a bad one is refused at
//! `--check` with its field, not found out at the first connection.
//!
//! An `https://` etcd needs `etcd_ca`: a cluster's etcd has a private CA that no system
//! store holds, and trusting every public CA for it would be wrong; an etcd with a
//! public certificate names the system bundle as its CA. The password is never in the
//! config text: it comes from a file or an environment variable, and neither it nor
//! the client key appear in a `Debug` print.

use std::path::Path;
use std::sync::Arc;

use super::{invalid, Config, ConfigError};

/// Where a cluster keeps its model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPlan {
    /// `http://host:port` or `https://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Key prefix (`/tenet`).
    pub prefix: String,
    /// This host's name, under which its own settings and ports are kept.
    pub host: String,
    /// Lease time of this host's registration, in seconds.
    pub lease_s: u64,
    /// What places floating gateways when this host is the placer.
    pub gateway_placement: crate::placement::GatewayPlacement,
    /// How much of the cluster this host follows.
    pub watch: crate::store::Watch,
    /// The TLS and credentials etcd is reached with.
    pub access: EtcdAccess,
}

/// What this host shows etcd, as read from the files and the variable the config names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EtcdAccess {
    /// PEM certificates etcd's server certificate must chain to; set for `https://`.
    pub ca: Option<String>,
    /// A client certificate, for an etcd that requires one.
    pub identity: Option<ClientIdentity>,
    /// A user etcd authenticates, for an etcd with authentication on.
    pub user: Option<Credentials>,
}

/// A PEM client certificate chain and its key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain.
    pub cert: String,
    /// Its private key.
    pub key: Secret,
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user's name.
    pub name: String,
    /// Its password.
    pub password: Secret,
    /// The config field the password came from, for an error that names it.
    pub password_field: &'static str,
}

/// Text kept out of every print of the config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself, for the one place that hands it to etcd.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Debug for EtcdAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAccess")
            .field("ca", &self.ca.is_some())
            .field("client_cert", &self.identity.is_some())
            .field("user", &self.user.as_ref().map(|user| &user.name))
            .finish()
    }
}

impl Config {
    pub(super) fn etcd_plan(&self) -> Result<Option<EtcdPlan>, ConfigError> {
        let control = &self.control;
        let Some(gateway_placement) =
            crate::placement::GatewayPlacement::parse(&control.gateway_placement)
        else {
            return Err(invalid(
                "control.gateway_placement",
                format!(
                    "`{}` is not `tenants` or `traffic`",
                    control.gateway_placement
                ),
            ));
        };
        let Some(watch) = crate::store::Watch::parse(&control.etcd_watch) else {
            return Err(invalid(
                "control.etcd_watch",
                format!("`{}` is not `all` or `own`", control.etcd_watch),
            ));
        };
        let egress = self
            .hosts
            .iter()
            .any(|h| h.egress && Some(&h.name) == self.switch.host.as_ref());
        if watch == crate::store::Watch::Own && egress {
            return Err(invalid(
                "control.etcd_watch",
                "this is the egress host, which holds every tenant's gateway: it watches `all`",
            ));
        }
        if control.etcd.is_empty() {
            if let Some(field) = self.etcd_access_fields().first() {
                return Err(invalid(*field, "has no use without control.etcd"));
            }
            return Ok(None);
        }
        if !control.persist {
            return Err(invalid(
                "control.persist",
                "a cluster store (control.etcd) keeps every change; persist = false cannot go with it",
            ));
        }
        let tls = self.etcd_uses_tls()?;
        let prefix = &control.etcd_prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            return Err(invalid(
                "control.etcd_prefix",
                "must start with `/`, name something, and not end with `/`",
            ));
        }
        if !(2..=3600).contains(&control.etcd_lease_s) {
            return Err(invalid(
                "control.etcd_lease_s",
                "must be between 2 and 3600 seconds",
            ));
        }
        let Some(host) = self.switch.host.clone() else {
            return Err(invalid(
                "switch.host",
                "a cluster store keeps each host's ports under its name: set switch.host",
            ));
        };
        Ok(Some(EtcdPlan {
            endpoints: control.etcd.clone(),
            prefix: prefix.clone(),
            host,
            lease_s: control.etcd_lease_s,
            gateway_placement,
            watch,
            access: self.etcd_access(tls)?,
        }))
    }

    /// The etcd TLS and credential fields set, by name.
    fn etcd_access_fields(&self) -> Vec<&'static str> {
        let control = &self.control;
        [
            ("control.etcd_ca", control.etcd_ca.is_some()),
            ("control.etcd_cert", control.etcd_cert.is_some()),
            ("control.etcd_key", control.etcd_key.is_some()),
            ("control.etcd_user", control.etcd_user.is_some()),
            (
                "control.etcd_password_file",
                control.etcd_password_file.is_some(),
            ),
            (
                "control.etcd_password_env",
                control.etcd_password_env.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(field, set)| set.then_some(field))
        .collect()
    }

    /// Whether the endpoints are `https://` (all of them) rather than `http://` (all).
    fn etcd_uses_tls(&self) -> Result<bool, ConfigError> {
        let mut schemes = Vec::new();
        for (i, endpoint) in self.control.etcd.iter().enumerate() {
            let (scheme, authority) = endpoint.split_once("://").unwrap_or_default();
            let port_ok = authority
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            let field = format!("control.etcd[{i}]");
            if !matches!(scheme, "http" | "https") || !port_ok || authority.contains('/') {
                return Err(invalid(
                    field,
                    format!("`{endpoint}` is not http://host:port or https://host:port"),
                ));
            }
            if schemes.first().is_some_and(|first| *first != scheme) {
                return Err(invalid(
                    field,
                    "mixes http:// and https://: the members of one etcd are reached alike",
                ));
            }
            schemes.push(scheme);
        }
        Ok(schemes.first() == Some(&"https"))
    }

    fn etcd_access(&self, tls: bool) -> Result<EtcdAccess, ConfigError> {
        let control = &self.control;
        if !tls {
            let tls_field = [
                ("control.etcd_ca", &control.etcd_ca),
                ("control.etcd_cert", &control.etcd_cert),
                ("control.etcd_key", &control.etcd_key),
            ]
            .into_iter()
            .find(|(_, path)| path.is_some());
            if let Some((field, _)) = tls_field {
                return Err(invalid(
                    field,
                    "TLS needs https:// endpoints in control.etcd",
                ));
            }
        }
        let ca = match &control.etcd_ca {
            Some(path) => {
                let pem = read_text("control.etcd_ca", path)?;
                certificates("control.etcd_ca", path, &pem)?;
                Some(pem)
            }
            None if tls => {
                return Err(invalid(
                    "control.etcd_ca",
                    "https:// endpoints need the CA that signed etcd's certificate (a private CA is in no system store; for a public one name the system bundle, /etc/ssl/certs/ca-certificates.crt)",
                ))
            }
            None => None,
        };
        let identity =
            match (&control.etcd_cert, &control.etcd_key) {
                (Some(cert), Some(key)) => Some(client_identity(cert, key)?),
                (Some(_), None) => {
                    return Err(invalid(
                        "control.etcd_key",
                        "control.etcd_cert needs its private key: set control.etcd_key",
                    ))
                }
                (None, Some(_)) => return Err(invalid(
                    "control.etcd_cert",
                    "control.etcd_key has no use without its certificate: set control.etcd_cert",
                )),
                (None, None) => None,
            };
        Ok(EtcdAccess {
            ca,
            identity,
            user: self.etcd_credentials()?,
        })
    }

    fn etcd_credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let control = &self.control;
        let (field, password) =
            match (&control.etcd_password_file, &control.etcd_password_env) {
                (Some(_), Some(_)) => return Err(invalid(
                    "control.etcd_password_env",
                    "set one of control.etcd_password_file and control.etcd_password_env, not both",
                )),
                (Some(path), None) => {
                    let field = "control.etcd_password_file";
                    // The newline an editor or `echo` leaves is not part of the password.
                    let text = read_text(field, path)?;
                    (field, Some(text.trim_end_matches(['\n', '\r']).to_owned()))
                }
                (None, Some(var)) => {
                    let field = "control.etcd_password_env";
                    let Ok(text) = std::env::var(var) else {
                        return Err(invalid(
                            field,
                            format!("environment variable `{var}` is not set"),
                        ));
                    };
                    (field, Some(text))
                }
                (None, None) => ("", None),
            };
        match (&control.etcd_user, password) {
            (Some(name), Some(password)) => {
                if name.is_empty() {
                    return Err(invalid("control.etcd_user", "is empty"));
                }
                if password.is_empty() {
                    return Err(invalid(field, "the password is empty"));
                }
                Ok(Some(Credentials {
                    name: name.clone(),
                    password: Secret(password),
                    password_field: field,
                }))
            }
            (Some(_), None) => Err(invalid(
                "control.etcd_user",
                "needs a password: set control.etcd_password_file or control.etcd_password_env",
            )),
            (None, Some(_)) => Err(invalid(field, "has no use without control.etcd_user")),
            (None, None) => Ok(None),
        }
    }
}

fn read_text(field: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))
}

fn certificates(
    field: &str,
    path: &Path,
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(invalid(
            field,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The client certificate and key, checked to belong together.
fn client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, ConfigError> {
    let cert_pem = read_text("control.etcd_cert", cert)?;
    let chain = certificates("control.etcd_cert", cert, &cert_pem)?;
    let key_pem = read_text("control.etcd_key", key)?;
    let Some(der) = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .ok()
        .flatten()
    else {
        return Err(invalid(
            "control.etcd_key",
            format!("{} holds no PEM private key", key.display()),
        ));
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::sign::CertifiedKey::from_der(chain, der, &provider).map_err(|e| {
        invalid(
            "control.etcd_key",
            format!("is not the key of control.etcd_cert ({e})"),
        )
    })?;
    Ok(ClientIdentity {
        cert: cert_pem,
        key: Secret(key_pem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of PEM files for a test: a certificate and its key, another key,
    /// a password file, and a file that is no PEM at all.
    struct Files(std::path::PathBuf);

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("tenet-etcd-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            for (name, text) in [
                ("cert.pem", made.cert.pem()),
                ("key.pem", made.key_pair.serialize_pem()),
                ("other.key", other.serialize_pem()),
                ("password", "s3cret\n".to_owned()),
                ("junk", "not pem\n".to_owned()),
            ] {
                std::fs::write(dir.join(name), text).unwrap();
            }
            Self(dir)
        }

        fn path(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn plan(control: &str) -> Result<Option<EtcdPlan>, ConfigError> {
        let text = format!("[switch]\nhost = \"a\"\n[control]\n{control}\n");
        Config::parse(&text, |_| None)?.etcd_plan()
    }

    fn refused(control: &str) -> String {
        plan(control).expect_err("must be refused").to_string()
    }

    #[test]
    fn tls_and_a_user_are_read_from_files_and_kept_out_of_prints() {
        let files = Files::new("good");
        let control = format!(
            "etcd = [\"https://127.0.0.1:2379\", \"https://10.0.0.2:2379\"]\n\
             etcd_ca = \"{cert}\"\netcd_cert = \"{cert}\"\netcd_key = \"{key}\"\n\
             etcd_user = \"tenet\"\netcd_password_file = \"{password}\"",
            cert = files.path("cert.pem"),
            key = files.path("key.pem"),
            password = files.path("password"),
        );
        let plan = plan(&control).unwrap().unwrap();
        let user = plan.access.user.as_ref().unwrap();
        assert_eq!(
            user.password.expose(),
            "s3cret",
            "the file's newline is not part of it"
        );
        assert_eq!(user.password_field, "control.etcd_password_file");
        assert!(plan
            .access
            .ca
            .as_deref()
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        let printed = format!("{plan:?}");
        assert!(
            !printed.contains("s3cret") && !printed.contains("PRIVATE KEY"),
            "{printed}"
        );
    }

    #[test]
    fn the_password_comes_from_an_environment_variable_too() {
        let var = format!("TENET_TEST_ETCD_PASSWORD_{}", std::process::id());
        std::env::set_var(&var, "from-env");
        let control = format!(
            "etcd = [\"http://127.0.0.1:2379\"]\netcd_user = \"tenet\"\netcd_password_env = \"{var}\""
        );
        let plan = plan(&control).unwrap().unwrap();
        assert_eq!(plan.access.user.unwrap().password.expose(), "from-env");
        std::env::remove_var(&var);
        let e = refused(&control);
        assert!(
            e.contains("control.etcd_password_env") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn bad_tls_and_credentials_are_refused_with_the_field() {
        let files = Files::new("bad");
        let (cert, key, other, password, junk) = (
            files.path("cert.pem"),
            files.path("key.pem"),
            files.path("other.key"),
            files.path("password"),
            files.path("junk"),
        );
        let https = "etcd = [\"https://127.0.0.1:2379\"]";
        let http = "etcd = [\"http://127.0.0.1:2379\"]";
        for (control, field, why) in [
            (https.to_owned(), "control.etcd_ca", "https:// endpoints need the CA"),
            (
                format!("{https}\netcd_ca = \"/nonexistent/ca.pem\""),
                "control.etcd_ca",
                "cannot read",
            ),
            (format!("{https}\netcd_ca = \"{junk}\""), "control.etcd_ca", "no PEM certificate"),
            (
                format!("{https}\netcd_ca = \"{cert}\"\netcd_cert = \"{cert}\""),
                "control.etcd_key",
                "needs its private key",
            ),
            (
                format!("{https}\netcd_ca = \"{cert}\"\netcd_key = \"{key}\""),
                "control.etcd_cert",
                "no use without its certificate",
            ),
            (
                format!("{https}\netcd_ca = \"{cert}\"\netcd_cert = \"{cert}\"\netcd_key = \"{junk}\""),
                "control.etcd_key",
                "no PEM private key",
            ),
            (
                format!("{https}\netcd_ca = \"{cert}\"\netcd_cert = \"{cert}\"\netcd_key = \"{other}\""),
                "control.etcd_key",
                "is not the key of control.etcd_cert",
            ),
            (format!("{http}\netcd_ca = \"{cert}\""), "control.etcd_ca", "needs https://"),
            (
                format!("{http}\netcd_cert = \"{cert}\"\netcd_key = \"{key}\""),
                "control.etcd_cert",
                "needs https://",
            ),
            (
                "etcd = [\"https://127.0.0.1:2379\", \"http://10.0.0.2:2379\"]".to_owned(),
                "control.etcd[1]",
                "mixes http:// and https://",
            ),
            (
                "etcd = [\"ftp://127.0.0.1:2379\"]".to_owned(),
                "control.etcd[0]",
                "is not http://host:port or https://host:port",
            ),
            (format!("{http}\netcd_user = \"tenet\""), "control.etcd_user", "needs a password"),
            (
                format!("{http}\netcd_password_file = \"{password}\""),
                "control.etcd_password_file",
                "no use without control.etcd_user",
            ),
            (
                format!(
                    "{http}\netcd_user = \"tenet\"\netcd_password_file = \"{password}\"\netcd_password_env = \"X\""
                ),
                "control.etcd_password_env",
                "not both",
            ),
            (
                format!("{http}\netcd_user = \"tenet\"\netcd_password_file = \"/nonexistent\""),
                "control.etcd_password_file",
                "cannot read",
            ),
            (format!("etcd_ca = \"{cert}\""), "control.etcd_ca", "no use without control.etcd"),
        ] {
            let e = refused(&control);
            assert!(e.contains(&format!("`{field}`")) && e.contains(why), "{control}: {e}");
        }
    }
}
