//! The HTTP/JSON API on a Unix socket. This module only speaks HTTP: it turns requests
//! into [`Command`]s, hands them to the daemon's control loop (which owns all state)
//! and writes back what the loop answers. Errors are JSON: `{status, field, message}`.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::config::switching::{EndpointSpec, HostSpec, TenantSpec};
use crate::config::PortSpec;
use crate::model::Change;

/// What a request asks of the control loop.
#[derive(Debug)]
pub enum Command {
    /// All tenants.
    ListTenants,
    /// One tenant, with its endpoints.
    ShowTenant(String),
    /// All hosts.
    ListHosts,
    /// All endpoints.
    ListEndpoints,
    /// Ports with role, device, link and counters.
    ListPorts,
    /// Per-port, per-core and per-reason counters.
    Stats,
    /// Everything, like `ovs-vsctl show`.
    Show,
    /// A change of the model.
    Change(Change),
    /// Run a frame through the pipeline with the live tables and report each decision.
    Trace {
        /// Ingress port name.
        port: String,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Prometheus text exposition.
    Metrics,
}

/// Body of `POST /v1/trace`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceRequest {
    port: String,
    /// The frame as hex.
    frame: String,
}

/// The control loop's answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// A plain-text body instead (Prometheus metrics).
    pub text: Option<String>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            text: None,
        }
    }

    /// 200 with a plain-text body.
    pub fn text(text: String) -> Self {
        Self {
            status: 200,
            body: Value::Null,
            text: Some(text),
        }
    }

    /// An error reply naming the field at fault.
    pub fn error(status: u16, field: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({"status": status, "field": field, "message": message}),
            text: None,
        }
    }
}

/// A command with the channel its reply goes back on.
pub type Call = (Command, oneshot::Sender<Reply>);

/// Binds the API socket (replacing a stale one) with owner-only permissions.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!(
            "another tenetd serves {}; stop it or set [control] api_socket",
            path.display()
        );
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections forever, forwarding each request to the control loop.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "API accept failed");
                continue;
            }
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, calls.clone()));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "API connection ended");
            }
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    calls: mpsc::Sender<Call>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let reply = match route(&method, &path, &body) {
        Ok(command) => {
            let (tx, rx) = oneshot::channel();
            if calls.send((command, tx)).await.is_err() {
                Reply::error(503, "", "tenetd is stopping")
            } else {
                rx.await
                    .unwrap_or_else(|_| Reply::error(503, "", "tenetd is stopping"))
            }
        }
        Err(reply) => reply,
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (bytes, content_type) = match reply.text {
        Some(text) => (text.into_bytes(), "text/plain; version=0.0.4"),
        None => {
            let mut text = serde_json::to_vec_pretty(&reply.body).unwrap_or_default();
            text.push(b'\n');
            (text, "application/json")
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    Ok(response)
}

/// Maps a request to a command, or to the error reply for a bad request.
pub fn route(method: &Method, path: &str, body: &[u8]) -> Result<Command, Reply> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || Reply::error(404, "path", &format!("no resource {method} {path}"));
    if method == Method::GET && parts == ["metrics"] {
        return Ok(Command::Metrics);
    }
    if parts.first() != Some(&"v1") {
        return Err(not_found());
    }
    let decoded = |s: &str| s.replace("%3A", ":").replace("%3a", ":");
    match (method, &parts[1..]) {
        (&Method::GET, ["tenants"]) => Ok(Command::ListTenants),
        (&Method::POST, ["tenants"]) => Ok(Command::Change(Change::AddTenant(
            parse::<TenantSpec>(body)?,
        ))),
        (&Method::GET, ["tenants", name]) => Ok(Command::ShowTenant((*name).to_owned())),
        (&Method::DELETE, ["tenants", name]) => {
            Ok(Command::Change(Change::DeleteTenant((*name).to_owned())))
        }
        (&Method::GET, ["hosts"]) => Ok(Command::ListHosts),
        (&Method::POST, ["hosts"]) => {
            Ok(Command::Change(Change::AddHost(parse::<HostSpec>(body)?)))
        }
        (&Method::DELETE, ["hosts", name]) => {
            Ok(Command::Change(Change::DeleteHost((*name).to_owned())))
        }
        (&Method::GET, ["endpoints"]) => Ok(Command::ListEndpoints),
        (&Method::POST, ["endpoints"]) => Ok(Command::Change(Change::AddEndpoint(parse::<
            EndpointSpec,
        >(body)?))),
        (&Method::DELETE, ["endpoints", tenant, mac]) => {
            Ok(Command::Change(Change::DeleteEndpoint {
                tenant: (*tenant).to_owned(),
                mac: decoded(mac),
            }))
        }
        (&Method::GET, ["ports"]) => Ok(Command::ListPorts),
        (&Method::POST, ["ports"]) => {
            Ok(Command::Change(Change::AddPort(Box::new(
                parse::<PortSpec>(body)?,
            ))))
        }
        (&Method::DELETE, ["ports", name]) => {
            Ok(Command::Change(Change::DeletePort((*name).to_owned())))
        }
        (&Method::GET, ["stats"]) => Ok(Command::Stats),
        (&Method::GET, ["show"]) => Ok(Command::Show),
        (&Method::POST, ["trace"]) => {
            let request = parse::<TraceRequest>(body)?;
            let frame = decode_hex(&request.frame)
                .ok_or_else(|| Reply::error(400, "frame", "not an even number of hex digits"))?;
            Ok(Command::Trace {
                port: request.port,
                frame,
            })
        }
        _ => Err(not_found()),
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !text.len().is_multiple_of(2) || text.is_empty() {
        return None;
    }
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

/// Decodes a JSON body, naming the field at fault when it does not fit.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Reply> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        Reply::error(
            400,
            if field == "." { "" } else { &field },
            &e.into_inner().to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_refuses() {
        assert!(matches!(
            route(&Method::GET, "/v1/tenants", b""),
            Ok(Command::ListTenants)
        ));
        let add = route(
            &Method::POST,
            "/v1/tenants",
            br#"{"name":"red","id":5,"hosts":[]}"#,
        );
        assert!(matches!(add, Ok(Command::Change(Change::AddTenant(t))) if t.id == 5));
        let bad = route(
            &Method::POST,
            "/v1/tenants",
            br#"{"name":"red","id":"five"}"#,
        )
        .unwrap_err();
        assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("id")));
        let unknown = route(
            &Method::POST,
            "/v1/tenants",
            br#"{"name":"red","id":5,"colour":1}"#,
        )
        .unwrap_err();
        assert!(unknown.body["message"].as_str().unwrap().contains("colour"));
        let del = route(
            &Method::DELETE,
            "/v1/endpoints/red/02%3A00%3A00%3A00%3A0a%3A01",
            b"",
        );
        assert!(
            matches!(del, Ok(Command::Change(Change::DeleteEndpoint { mac, .. })) if mac == "02:00:00:00:0a:01")
        );
        assert_eq!(route(&Method::GET, "/v2/x", b"").unwrap_err().status, 404);
    }
}
