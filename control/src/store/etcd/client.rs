//! etcd as this host reaches it: one gRPC client (the `etcd-client` crate), connected
//! at first use and kept (its channel reconnects by itself, a user's token is renewed
//! when it runs out), over TLS with the CA, client certificate and user the config
//! names. A refusal that only the config can fix (a password, a CA, a client
//! certificate) comes back as a [`ConfigError`] naming the field; over TLS, a handshake
//! of the store's own ([`super::handshake`]) finds those before the client connects.

use std::time::Duration;

use anyhow::Context;
use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions, Txn, TxnOp,
    TxnOpResponse,
};

use super::handshake::{shake_hands, Handshake};
use crate::config::{ConfigError, EtcdAccess};

/// How long connecting to an etcd endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take: reading a large cluster's whole prefix takes etcd
/// seconds when many hosts start at once. Streams (watch, keepalives) run past it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings on a quiet connection, so a watch over a dead one (etcd's host gone
/// without closing it) is noticed and resumed elsewhere.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// The largest reply taken: gRPC's default of 4 MiB may be short of a page of large
/// values (hosts' ports).
const MAX_REPLY_BYTES: usize = 1 << 30;
/// Ranges read in one transaction (etcd takes at most 128 operations in one).
pub(super) const RANGES_PER_READ: usize = 64;
/// Keys per reply when the whole prefix is read: a large cluster comes in pages, each
/// far below gRPC's message limits, with memory bounded per call.
const PAGE_KEYS: i64 = 1_000;

/// A connection to the etcd cluster, shared by the store and its watch and lease tasks.
pub(super) struct Etcd {
    endpoints: Vec<String>,
    access: EtcdAccess,
    /// The client once connected; connecting again only after a failed first try.
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Etcd {
    pub(super) fn new(endpoints: Vec<String>, access: EtcdAccess) -> Self {
        Self {
            endpoints,
            access,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The client, connecting (and authenticating) first if this is the first call
    /// that reached etcd.
    pub(super) async fn client(&self) -> anyhow::Result<Client> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        if self.access.ca.is_some() {
            self.check_tls().await?;
        }
        let client = Client::connect(&self.endpoints, Some(self.options()))
            .await
            .map_err(|e| self.explain(e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Refused when every endpoint that answers refuses this host's TLS (see
    /// [`handshake`]); etcd not answering is left to the client to find.
    async fn check_tls(&self) -> anyhow::Result<()> {
        let mut refusal = None;
        for endpoint in &self.endpoints {
            match shake_hands(endpoint, &self.access).await {
                Handshake::Taken => return Ok(()),
                Handshake::Refused(tls) => refusal = refusal.or(self.refused_tls(&tls)),
                Handshake::Unknown(why) => {
                    tracing::debug!(%endpoint, %why, "no TLS handshake with etcd")
                }
            }
        }
        match refusal {
            Some(refused) => Err(refused.into()),
            None => Ok(()),
        }
    }

    /// Signs in again: etcd voids its tokens when it restarts, and a watch refused for
    /// that is not retried by the client itself.
    pub(super) async fn renew_token(&self) -> anyhow::Result<()> {
        self.client()
            .await?
            .refresh_token()
            .await
            .map_err(|e| self.explain(e))
    }

    /// The KV client, taking replies as large as a whole cluster's prefix.
    pub(super) async fn kv(&self) -> anyhow::Result<KvClient> {
        Ok(self
            .client()
            .await?
            .kv_client()
            .max_decoding_message_size(MAX_REPLY_BYTES))
    }

    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(ANSWER_TIMEOUT)
            .with_keep_alive(PING_INTERVAL, CONNECT_TIMEOUT)
            // etcd's tokens run out (5 minutes by default) and die with a restart.
            .with_auto_token_refresh(true);
        if let Some(ca) = &self.access.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(identity) = &self.access.identity {
                tls = tls.identity(Identity::from_pem(&identity.cert, identity.key.expose()));
            }
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.access.user {
            options = options.with_user(&user.name, user.password.expose());
        }
        options
    }

    /// Every key under `prefix`: (key, value, mod revision), and the revision they were
    /// read at. Read in pages of `PAGE_KEYS`, all at the first page's revision (one
    /// consistent snapshot), so that no one reply holds a whole large cluster.
    #[allow(clippy::type_complexity)]
    pub(super) async fn range(
        &self,
        prefix: &str,
    ) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
        self.range_at(&KeyRange::prefix(prefix), 0).await
    }

    /// The keys of `range` as they were at revision `at` (0: now), with the revision
    /// read at; paged as [`Etcd::range`] is.
    #[allow(clippy::type_complexity)]
    pub(super) async fn range_at(
        &self,
        range: &KeyRange,
        mut at: i64,
    ) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
        let end = range.end.clone();
        let mut kv = self.kv().await?;
        let mut out = Vec::new();
        let mut from = range.start.as_bytes().to_vec();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_KEYS)
                .with_revision(at);
            let reply = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(|e| self.explain(e))?;
            if at == 0 {
                at = revision(reply.header());
            }
            for kv in reply.kvs() {
                let key = kv.key_str().context("etcd sent a key that is not UTF-8")?;
                let value = kv
                    .value_str()
                    .with_context(|| format!("etcd sent a value of {key} that is not UTF-8"))?;
                out.push((key.to_owned(), value.to_owned(), kv.mod_revision()));
            }
            match reply.kvs().last() {
                Some(last) if reply.more() => {
                    // The smallest key after the last one read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((out, at)),
            }
        }
    }

    /// The keys of each of `ranges` (at most [`RANGES_PER_READ`]), read in one
    /// transaction: one round trip, one revision, which comes back with them.
    #[allow(clippy::type_complexity)]
    pub(super) async fn read_ranges(
        &self,
        ranges: &[KeyRange],
    ) -> anyhow::Result<(Vec<Vec<(String, String, i64)>>, i64)> {
        let ops: Vec<TxnOp> = ranges
            .iter()
            .map(|range| {
                let options = GetOptions::new().with_range(range.end.clone());
                TxnOp::get(range.start.as_str(), Some(options))
            })
            .collect();
        let reply = self
            .kv()
            .await?
            .txn(Txn::new().and_then(ops))
            .await
            .map_err(|e| self.explain(e))?;
        let mut out = Vec::with_capacity(ranges.len());
        for answer in reply.op_responses() {
            let TxnOpResponse::Get(got) = answer else {
                anyhow::bail!("etcd answered a read with something else");
            };
            let mut kvs = Vec::with_capacity(got.kvs().len());
            for kv in got.kvs() {
                let key = kv.key_str().context("etcd sent a key that is not UTF-8")?;
                let value = kv
                    .value_str()
                    .with_context(|| format!("etcd sent a value of {key} that is not UTF-8"))?;
                kvs.push((key.to_owned(), value.to_owned(), kv.mod_revision()));
            }
            out.push(kvs);
        }
        Ok((out, revision(reply.header())))
    }

    /// Says what went wrong with a call in words an operator acts on: a refusal the
    /// config can fix names its field; anything else is etcd not answering.
    pub(super) fn explain(&self, error: etcd_client::Error) -> anyhow::Error {
        let refusal = match &error {
            etcd_client::Error::GRpcStatus(status) => {
                use std::error::Error;
                self.refused_credentials(status.message()).or_else(|| {
                    let tls = status.source().and_then(tls_error)?;
                    self.refused_tls(tls)
                })
            }
            etcd_client::Error::TransportError(e) => {
                tls_error(e).and_then(|tls| self.refused_tls(tls))
            }
            etcd_client::Error::IoError(e) => tls_error(e).and_then(|tls| self.refused_tls(tls)),
            _ => None,
        };
        match refusal {
            Some(config) => config.into(),
            None => anyhow::anyhow!(
                "etcd at {} did not answer: {error}",
                self.endpoints.join(",")
            ),
        }
    }

    /// A user or password etcd refused.
    fn refused_credentials(&self, said: &str) -> Option<ConfigError> {
        let user = self.access.user.as_ref();
        if said.contains("authentication failed") {
            let (field, name) = user.map_or(("control.etcd_user", ""), |user| {
                (user.password_field, user.name.as_str())
            });
            return Some(refused(
                field,
                format!("etcd refused user `{name}`: wrong password, or no such user ({said})"),
            ));
        }
        if said.contains("user name is empty") {
            return Some(refused(
                "control.etcd_user",
                format!("etcd has authentication on: set control.etcd_user and its password, or a client certificate named for an etcd user ({said})"),
            ));
        }
        if said.contains("permission denied") {
            let (field, who) = match (user, &self.access.identity) {
                (Some(user), _) => ("control.etcd_user", format!("user `{}`", user.name)),
                (None, Some(_)) => (
                    "control.etcd_cert",
                    "the user the client certificate names".to_owned(),
                ),
                (None, None) => ("control.etcd_user", "this host".to_owned()),
            };
            return Some(refused(
                field,
                format!("etcd denies {who} the cluster's keys: grant its role readwrite on the prefix (etcdctl role grant-permission --prefix) ({said})"),
            ));
        }
        None
    }

    /// A TLS handshake that failed for want of the right CA or client certificate.
    fn refused_tls(&self, tls: &rustls::Error) -> Option<ConfigError> {
        match tls {
            rustls::Error::InvalidCertificate(why) => {
                let field = match why {
                    rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. } => "control.etcd",
                    _ => "control.etcd_ca",
                };
                Some(refused(
                    field,
                    format!("etcd's server certificate is not trusted: {tls} (is control.etcd_ca the CA that signed it, and does it name the host of control.etcd?)"),
                ))
            }
            rustls::Error::AlertReceived(alert) => {
                use rustls::AlertDescription::*;
                if !matches!(
                    alert,
                    BadCertificate
                        | CertificateRequired
                        | UnknownCA
                        | CertificateUnknown
                        | UnsupportedCertificate
                        | CertificateExpired
                        | CertificateRevoked
                        | AccessDenied
                ) {
                    return None;
                }
                let message = match self.access.identity {
                    Some(_) => format!("etcd does not accept this host's client certificate ({tls}): is it signed by the CA etcd trusts (--trusted-ca-file), for client authentication, and still valid?"),
                    None => format!("etcd requires a client certificate ({tls}): set control.etcd_cert and control.etcd_key"),
                };
                Some(refused("control.etcd_cert", message))
            }
            _ => None,
        }
    }
}

/// The `ConfigError` of a refusal, for the caller to tell from etcd being away.
fn refused(field: &str, message: String) -> ConfigError {
    crate::config::invalid(field, message)
}

/// Whether `error` is etcd refusing this host's config (not etcd being away).
pub(super) fn misconfigured(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ConfigError>().is_some()
}

/// The TLS error somewhere in a chain of causes. An I/O error's `source` skips what it
/// wraps, so that is looked into too.
pub(super) fn tls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref()) {
                return Some(tls);
            }
        }
        next = error.source();
    }
    None
}

/// Keys from `start` up to, not including, `end`: every key under a prefix, or one key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct KeyRange {
    pub(super) start: String,
    pub(super) end: Vec<u8>,
}

impl KeyRange {
    /// Every key starting with `prefix`.
    pub(super) fn prefix(prefix: &str) -> Self {
        Self {
            start: prefix.to_owned(),
            end: prefix_end(prefix.as_bytes()),
        }
    }

    /// The key `key` alone.
    pub(super) fn key(key: &str) -> Self {
        let mut end = key.as_bytes().to_vec();
        end.push(0);
        Self {
            start: key.to_owned(),
            end,
        }
    }

    /// Whether `key` is in the range.
    pub(super) fn holds(&self, key: &str) -> bool {
        key >= self.start.as_str() && key.as_bytes() < self.end.as_slice()
    }
}

/// The end of the range of keys starting with `prefix` (the first key after them all).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // A prefix of 0xff bytes alone: every key from it on.
    vec![0]
}

/// A reply's revision (0 without a header).
pub(super) fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |header| header.revision())
}
