//! A TLS handshake of the store's own with each etcd endpoint before the gRPC client
//! connects. gRPC's transport reports an etcd that refuses this host's client
//! certificate (or wants one) as a connection that broke: with TLS 1.3 the server
//! judges the client's certificate after the handshake, and its alert is lost when
//! the client writes first. Here the client reads etcd's first answer, so the alert
//! comes through and the field to fix can be named.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::EtcdAccess;

/// What an HTTP/2 client sends first (the preface and an empty SETTINGS frame): etcd
/// answers it, after judging the client's certificate.
const HTTP2_OPENING: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// How long the handshake and etcd's first answer may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// How a handshake with one endpoint went.
pub(super) enum Handshake {
    /// etcd answered: it takes this host's TLS.
    Taken,
    /// It failed with a TLS error (a certificate refused either way).
    Refused(rustls::Error),
    /// No answer, or none that says anything about TLS.
    Unknown(String),
}

/// Shakes hands with `endpoint` (`https://host:port`) as the gRPC client would.
pub(super) async fn shake_hands(endpoint: &str, access: &EtcdAccess) -> Handshake {
    match tokio::time::timeout(TIMEOUT, attempt(endpoint, access)).await {
        Ok(Ok(())) => Handshake::Taken,
        Ok(Err(e)) => match tls_error_of(&e) {
            Some(tls) => Handshake::Refused(tls.clone()),
            None => Handshake::Unknown(format!("{e:#}")),
        },
        Err(_) => Handshake::Unknown(format!("no answer within {TIMEOUT:?}")),
    }
}

async fn attempt(endpoint: &str, access: &EtcdAccess) -> anyhow::Result<()> {
    let authority = endpoint
        .strip_prefix("https://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())?;
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(access)?));
    let mut tls = connector.connect(name, tcp).await?;
    // etcd may have closed already when it refused the certificate: its alert is what
    // the read below brings, so a failed write is not the answer.
    let _ = tls.write_all(HTTP2_OPENING).await;
    let mut answer = [0u8; 64];
    match tls.read(&mut answer).await? {
        0 => anyhow::bail!("etcd closed the connection without a word"),
        _ => Ok(()),
    }
}

fn client_config(access: &EtcdAccess) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(access.ca.as_deref().unwrap_or_default())? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match &access.identity {
        Some(identity) => {
            let key = rustls_pemfile::private_key(&mut identity.key.expose().as_bytes())?
                .ok_or_else(|| anyhow::anyhow!("no private key"))?;
            builder.with_client_auth_cert(certificates(&identity.cert)?, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn certificates(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?)
}

/// The TLS error an I/O error carries, if any.
fn tls_error_of(error: &anyhow::Error) -> Option<&rustls::Error> {
    error.chain().find_map(super::client::tls_error)
}
