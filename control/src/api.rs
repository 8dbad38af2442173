//! The HTTP/JSON API on a Unix socket (root's alone) and, when asked, on TCP with TLS
//! and client certificates. This module only speaks HTTP: it turns requests into
//! [`Command`]s, hands them to the daemon's control loop (which owns all state) and
//! writes back what the loop answers. Errors are JSON: `{status, field, message}`.
//!
//! Whoever reaches the API gets bounded resources, never more: a body larger than
//! [`MAX_BODY`] is refused with 413 before it is read, at most [`MAX_CONNECTIONS`]
//! connections are served at once, and a client has [`READ_TIME`] to send a request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};

use crate::addresses::AddressRequest;
use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::{EndpointSpec, HostSpec, TenantSpec};
use crate::config::PortSpec;
use crate::model::{Change, TenantPatch};

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
    /// All static routes.
    ListRoutes,
    /// All published ports.
    ListPublished,
    /// All claimed addresses.
    ListAddresses,
    /// Ports with role, device, link and counters.
    ListPorts,
    /// Per-port, per-core and per-reason counters.
    Stats,
    /// Everything, like `ovs-vsctl show`.
    Show,
    /// The FDB by tenant and MAC: installed and learned entries, where they lead.
    Fdb,
    /// The underlay's and the tenants' routers' neighbours.
    Neighbors,
    /// This host's tunnels and the tenants each carries.
    Tunnels,
    /// The SNAT sessions the workers hold (of one tenant, if named).
    Nat(Option<String>),
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
    /// The log filter in force.
    ShowLog,
    /// Put a log filter in force.
    SetLog(String),
    /// This API's OpenAPI document.
    OpenApi,
    /// A pcapng stream of what ports send and receive, for `count` packets or
    /// `seconds`.
    Capture(crate::capture::CaptureRequest),
    /// The decisions the workers take for the next `count` frames a port receives
    /// (or those that come within `seconds`).
    LiveTrace {
        /// Port name.
        port: String,
        /// Frames to trace.
        count: usize,
        /// Longest wait.
        seconds: f64,
    },
}

/// Body of `POST /v1/capture`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    /// Port names (none: every port).
    #[serde(default)]
    ports: Vec<String>,
    #[serde(default = "default_capture_count")]
    count: usize,
    #[serde(default = "default_seconds")]
    seconds: f64,
    /// A MAC the frames are from or to.
    mac: Option<String>,
    /// An IPv4 address they are from or to.
    ip: Option<std::net::Ipv4Addr>,
    /// arp, ip, icmp, tcp, udp or gre.
    protocol: Option<String>,
}

fn default_capture_count() -> usize {
    100
}

fn default_seconds() -> f64 {
    10.0
}

/// Body of `POST /v1/trace/live`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveTraceBody {
    port: String,
    #[serde(default = "default_trace_count")]
    count: usize,
    #[serde(default = "default_seconds")]
    seconds: f64,
}

fn default_trace_count() -> usize {
    10
}

/// The most frames one live trace records (VPP's default is 50 per thread).
pub const MAX_TRACED: usize = 1000;

/// Body of `DELETE /v1/addresses/{tenant}/{ip}`, optional: the release happens only if
/// this owner holds the address.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    owner: String,
}

/// Body of `PUT /v1/log`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRequest {
    /// `info,control=debug`: tracing's filter syntax.
    filter: String,
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
    /// A non-JSON body instead, with its content type (metrics, pcap).
    pub raw: Option<(Vec<u8>, &'static str)>,
    /// A body sent as it comes (a capture), with its content type.
    pub stream: Option<(mpsc::Receiver<Bytes>, &'static str)>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            raw: None,
            stream: None,
        }
    }

    /// 200 with a Prometheus text body.
    pub fn text(text: String) -> Self {
        Self {
            status: 200,
            body: Value::Null,
            raw: Some((text.into_bytes(), "text/plain; version=0.0.4")),
            stream: None,
        }
    }

    /// 200 with a body streamed from `chunks` until its sender is dropped.
    pub fn stream(chunks: mpsc::Receiver<Bytes>, content_type: &'static str) -> Self {
        Self {
            status: 200,
            body: Value::Null,
            raw: None,
            stream: Some((chunks, content_type)),
        }
    }

    /// An error reply naming the field at fault.
    pub fn error(status: u16, field: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({"status": status, "field": field, "message": message}),
            raw: None,
            stream: None,
        }
    }
}

/// A command with the channel its reply goes back on.
pub type Call = (Command, oneshot::Sender<Reply>);

/// The largest request body read: a frame to trace, a port to add, never more.
pub const MAX_BODY: u64 = 1 << 20;
/// Connections served at once over both listeners; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request's headers, and its body.
pub const READ_TIME: Duration = Duration::from_secs(10);
/// Longest life of one connection (a keep-alive one included).
const CONNECTION_LIFE: Duration = Duration::from_secs(600);

/// What both listeners share: the way to the control loop and the connection budget.
#[derive(Clone)]
pub struct Server {
    calls: mpsc::Sender<Call>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Server {
    /// A server handing requests to `calls`.
    pub fn new(calls: mpsc::Sender<Call>) -> Self {
        Self {
            calls,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    /// Accepts connections on the Unix socket forever.
    pub async fn serve(self, listener: UnixListener) {
        loop {
            let permit = self.permit().await;
            match listener.accept().await {
                Ok((stream, _)) => self.connection(stream, permit),
                Err(e) => tracing::warn!(error = %e, "API accept failed"),
            }
        }
    }

    /// The same API on TCP (`[control] api_listen`), for remote management: only a
    /// client presenting a certificate of the configured CA gets past the handshake.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: tokio_rustls::TlsAcceptor,
    ) {
        loop {
            let permit = self.permit().await;
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "API accept failed");
                    continue;
                }
            };
            let server = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(READ_TIME, tls.accept(stream)).await {
                    Ok(Ok(stream)) => server.connection(stream, permit),
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "API client refused at the TLS handshake")
                    }
                    Err(_) => tracing::info!(%peer, "API client too slow for the TLS handshake"),
                }
            });
        }
    }

    /// `GET /metrics` alone on plain TCP (`[control] metrics_listen`): what a Prometheus
    /// scraper needs, without credentials, and nothing that reads more or changes.
    pub async fn serve_metrics(self, listener: tokio::net::TcpListener) {
        loop {
            let permit = self.permit().await;
            match listener.accept().await {
                Ok((stream, _)) => self.serve_connection(stream, permit, Listener::Metrics),
                Err(e) => tracing::warn!(error = %e, "metrics accept failed"),
            }
        }
    }

    async fn permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the API's connection budget is never closed")
    }

    fn connection<S>(&self, stream: S, permit: tokio::sync::OwnedSemaphorePermit)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_connection(stream, permit, Listener::Api);
    }

    fn serve_connection<S>(
        &self,
        stream: S,
        permit: tokio::sync::OwnedSemaphorePermit,
        listener: Listener,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let calls = self.calls.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(req, calls.clone(), listener));
            let serving = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIME)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFE, serving).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "API connection ended"),
                Err(_) => tracing::debug!("API connection closed after its longest life"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

/// The TLS side of the TCP API: this server's certificate chain and key, and the CA
/// whose certificates clients must present (no certificate, no connection).
pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let certs = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let pem = read(path)?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{} holds no PEM certificate", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{} holds no PEM certificate",
            path.display()
        );
        Ok(certs)
    };
    let chain = certs(cert).context("control.api_tls_cert")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "control.api_tls_key: {} holds no PEM private key",
                key.display()
            )
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in certs(client_ca).context("control.api_client_ca")? {
        roots
            .add(ca)
            .context("control.api_client_ca: not a CA certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .context("control.api_client_ca")?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("control.api_tls_key: does not match control.api_tls_cert")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

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

/// Which listener a connection came through: the API takes every request, the metrics
/// listener only `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Api,
    Metrics,
}

async fn handle(
    req: Request<Incoming>,
    calls: mpsc::Sender<Call>,
    listener: Listener,
) -> Result<Response<Body>, hyper::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if listener == Listener::Metrics && !(method == Method::GET && path == "/metrics") {
        return Ok(respond(Reply::error(
            404,
            "path",
            &format!("the metrics listener serves GET /metrics only, not {method} {path}"),
        )));
    }
    let reply = match read_body(req).await {
        Ok(body) => answer(&method, &path, &body, &calls).await,
        Err(refused) => refused,
    };
    Ok(respond(reply))
}

/// The request's body, if it is small enough and comes in time.
async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "body",
            &format!("a request body may hold {MAX_BODY} bytes at most"),
        )
    };
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY as usize);
    match tokio::time::timeout(READ_TIME, limited.collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Reply::error(400, "body", &format!("reading the body: {e}"))),
        Err(_) => Err(Reply::error(
            408,
            "body",
            &format!("the body did not arrive within {READ_TIME:?}"),
        )),
    }
}

async fn answer(method: &Method, path: &str, body: &[u8], calls: &mpsc::Sender<Call>) -> Reply {
    match route(method, path, body) {
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
    }
}

/// A response's body: whole, or streamed as it comes.
type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

fn respond(reply: Reply) -> Response<Body> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (body, content_type) = match (reply.stream, reply.raw) {
        (Some((chunks, content_type)), _) => {
            let frames = futures_util::stream::unfold(chunks, |mut chunks| async move {
                let chunk = chunks.recv().await?;
                Some((Ok(hyper::body::Frame::data(chunk)), chunks))
            });
            (StreamBody::new(frames).boxed_unsync(), content_type)
        }
        (None, Some((bytes, content_type))) => {
            (Full::new(Bytes::from(bytes)).boxed_unsync(), content_type)
        }
        (None, None) => {
            let mut text = serde_json::to_vec_pretty(&reply.body).unwrap_or_default();
            text.push(b'\n');
            (
                Full::new(Bytes::from(text)).boxed_unsync(),
                "application/json",
            )
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The OpenAPI 3 document of this API.
pub fn openapi() -> Value {
    let error = json!({"$ref": "#/components/schemas/Error"});
    let list = |what: &str, schema: &str| json!({"get": {"summary": format!("List {what}"), "responses": {"200": {"description": what, "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": format!("#/components/schemas/{schema}")}}}}}}}});
    let add = |schema: &str| {
        json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
               "responses": {"201": {"description": "applied"}, "400": {"description": "refused", "content": {"application/json": {"schema": error}}}, "409": {"description": "conflict", "content": {"application/json": {"schema": error}}}}})
    };
    let delete = json!({"delete": {"responses": {"200": {"description": "applied"}, "404": {"description": "no such item", "content": {"application/json": {"schema": error}}}, "409": {"description": "in use", "content": {"application/json": {"schema": error}}}}}});
    let merge = |mut a: Value, key: &str, b: Value| {
        a[key] = b;
        a
    };
    let string = json!({"type": "string"});
    let integer = json!({"type": "integer"});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "tenetd", "version": env!("CARGO_PKG_VERSION"), "description": "tenet's host vswitch daemon: tenants, hosts, endpoints, ports, counters and tracing."},
        "paths": {
            "/v1/tenants": merge(list("tenants", "Tenant"), "post", add("Tenant")),
            "/v1/tenants/{name}": merge(merge(delete.clone(), "get", json!({"responses": {"200": {"description": "the tenant with its endpoints and ports"}, "404": {"description": "no such tenant"}}})), "patch", add("TenantPatch")),
            "/v1/routes": merge(list("routes", "Route"), "post", add("Route")),
            "/v1/routes/{tenant}/{ip}/{len}": delete.clone(),
            "/v1/published": merge(list("published ports", "Publish"), "post", add("Publish")),
            "/v1/published/{protocol}/{port}": delete.clone(),
            "/v1/addresses": merge(list("claimed addresses", "Address"), "post", json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AddressRequest"}}}},
                "responses": {"201": {"description": "claimed: ip, prefix, gateway"}, "200": {"description": "the owner holds it already"}, "400": {"description": "a field is invalid", "content": {"application/json": {"schema": error}}}, "404": {"description": "no such tenant", "content": {"application/json": {"schema": error}}}, "409": {"description": "the address is taken, or the subnet full", "content": {"application/json": {"schema": error}}}}})),
            "/v1/addresses/{tenant}/{ip}": delete.clone(),
            "/v1/hosts": merge(list("hosts", "Host"), "post", add("Host")),
            "/v1/hosts/{name}": delete.clone(),
            "/v1/endpoints": merge(list("endpoints", "Endpoint"), "post", add("Endpoint")),
            "/v1/endpoints/{tenant}/{mac}": delete.clone(),
            "/v1/ports": merge(list("ports", "PortStatus"), "post", add("Port")),
            "/v1/ports/{name}": delete,
            "/v1/stats": {"get": {"responses": {"200": {"description": "per-port, per-core and per-reason counters"}}}},
            "/v1/show": {"get": {"responses": {"200": {"description": "the whole switch"}}}},
            "/v1/fdb": {"get": {"responses": {"200": {"description": "the FDB: tenant, MAC, static or learned, where it leads (port, host or router), age"}}}},
            "/v1/neighbors": {"get": {"responses": {"200": {"description": "the underlay's next hops and the tenants' routers' neighbours: tenant, IP, MAC, age"}}}},
            "/v1/tunnels": {"get": {"responses": {"200": {"description": "this host's tunnels: far host, its underlay IP, next hop resolved, tenants carried"}}}},
            "/v1/nat": {"get": {"responses": {"200": {"description": "{sessions, limit, truncated}: SNAT sessions by worker (tenant, protocol, inside, outside and remote address and port, idle seconds, state), at most `limit` per worker; `truncated` lists the CPUs of workers that hold more"}}}},
            "/v1/nat/{tenant}": {"get": {"responses": {"200": {"description": "the same, of one tenant (filtered in the workers)"}, "404": {"description": "no such tenant", "content": {"application/json": {"schema": error}}}}}},
            "/v1/trace": {"post": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TraceRequest"}}}},
                                   "responses": {"200": {"description": "decisions and outputs"}, "404": {"description": "no such port"}}}},
            "/v1/trace/live": {"post": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LiveTraceRequest"}}}},
                                        "responses": {"200": {"description": "the frames traced: worker, time, port, length, head (hex), summary, decisions, outputs"}, "404": {"description": "no such port"}, "409": {"description": "another live trace runs"}}}},
            "/v1/openapi.json": {"get": {"responses": {"200": {"description": "this document"}}}},
            "/v1/log": {"get": {"responses": {"200": {"description": "the log filter in force: {filter}"}}},
                        "put": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["filter"], "additionalProperties": false, "properties": {"filter": {"type": "string", "description": "like info,control=debug"}}}}}},
                                "responses": {"200": {"description": "in force: {filter}"}, "400": {"description": "not a filter", "content": {"application/json": {"schema": error}}}}}},
            "/v1/capture": {"post": {"requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CaptureRequest"}}}},
                                     "responses": {"200": {"description": "pcapng stream of the ports' frames, both directions (interface per port, direction in epb_flags, worker timestamps in ns, statistics at the end)", "content": {"application/x-pcapng": {}}}, "404": {"description": "no such port"}, "409": {"description": "another capture runs"}}}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text exposition", "content": {"text/plain": {}}}}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["status", "field", "message"], "properties": {"status": integer, "field": string, "message": string}},
            "Tenant": {"type": "object", "required": ["name", "id"], "additionalProperties": false, "properties": {
                "name": string, "id": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                "vlan": {"type": "integer", "minimum": 1, "maximum": 4094, "nullable": true},
                "max_macs": {"type": "integer", "nullable": true}, "hosts": {"type": "array", "items": string},
                "subnets": {"type": "array", "items": string, "description": "the gateway's address on each subnet, like 10.1.0.1/24"},
                "gateway_host": {"type": "string", "description": "a host's name, or central"}, "snat_ip": string, "router_mac": string,
                "peers": {"type": "array", "items": string}, "max_connections": integer}},
            "TenantPatch": {"type": "object", "additionalProperties": false, "properties": {
                "gateway_host": string, "peers": {"type": "array", "items": string}, "snat_ip": string, "max_connections": integer}},
            "Route": {"type": "object", "required": ["tenant", "prefix", "via"], "additionalProperties": false, "properties": {
                "tenant": string, "prefix": string, "via": string}},
            "Publish": {"type": "object", "required": ["tenant", "protocol", "host_port", "ip", "port"], "additionalProperties": false, "properties": {
                "tenant": string, "protocol": {"type": "string", "enum": ["tcp", "udp"]}, "host_port": integer, "ip": string, "port": integer}},
            "AddressRequest": {"type": "object", "required": ["tenant", "owner"], "additionalProperties": false, "properties": {
                "tenant": string, "owner": {"type": "string", "description": "who holds it; the same owner asking again gets the same address"},
                "ip": {"type": "string", "description": "a particular (static) address"}, "subnet": {"type": "string", "description": "one of the tenant's subnets (default: its first)"}}},
            "Address": {"type": "object", "required": ["tenant", "ip", "owner"], "properties": {
                "tenant": string, "ip": string, "owner": string, "host": {"type": "string", "description": "the host that claimed it; none: this one"}}},
            "Host": {"type": "object", "required": ["name", "underlay_ip"], "additionalProperties": false, "properties": {
                "name": string, "underlay_ip": string, "mac": {"type": "string", "nullable": true}, "egress": {"type": "boolean"}}},
            "Endpoint": {"type": "object", "required": ["tenant"], "additionalProperties": false, "properties": {
                "tenant": string, "mac": {"type": "string", "nullable": true}, "macs": {"type": "array", "items": string, "nullable": true},
                "port": {"type": "string", "nullable": true}, "host": {"type": "string", "nullable": true}, "ip": string}},
            "Port": {"type": "object", "required": ["name", "backend"], "properties": {
                "name": string, "backend": {"type": "string", "enum": ["null", "ring", "tap", "pcap", "af-packet", "af-xdp", "vhost-user", "vf", "bond"]},
                "queues": integer, "interface": string, "queue": integer, "path": string, "client": {"type": "boolean"}, "pci": string,
                "role": {"type": "string", "enum": ["access", "trunk", "uplink"]}, "tenant": string, "tenants": {"type": "array", "items": string},
                "allowed_macs": {"type": "array", "items": string}, "allowed_ips": {"type": "array", "items": string}, "mac": string}},
            "PortStatus": {"type": "object"},
            "CaptureRequest": {"type": "object", "additionalProperties": false, "properties": {"ports": {"type": "array", "items": string, "description": "none: every port"}, "count": {"type": "integer", "default": 100, "description": "0: as many as come in `seconds`"}, "seconds": {"type": "number", "default": 10, "maximum": 590}, "mac": string, "ip": string, "protocol": {"type": "string", "enum": ["arp", "ip", "icmp", "tcp", "udp", "gre"]}}},
            "LiveTraceRequest": {"type": "object", "required": ["port"], "additionalProperties": false, "properties": {"port": string, "count": {"type": "integer", "default": 10, "maximum": MAX_TRACED}, "seconds": {"type": "number", "default": 10, "maximum": 590}}},
            "TraceRequest": {"type": "object", "required": ["port", "frame"], "properties": {"port": string, "frame": {"type": "string", "description": "the frame as hex"}}},
        }},
    })
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
        (&Method::PATCH, ["tenants", name]) => Ok(Command::Change(Change::UpdateTenant(
            (*name).to_owned(),
            parse::<TenantPatch>(body)?,
        ))),
        (&Method::GET, ["routes"]) => Ok(Command::ListRoutes),
        (&Method::POST, ["routes"]) => {
            Ok(Command::Change(Change::AddRoute(parse::<RouteSpec>(body)?)))
        }
        (&Method::DELETE, ["routes", tenant, ip, len]) => {
            Ok(Command::Change(Change::DeleteRoute {
                tenant: (*tenant).to_owned(),
                prefix: format!("{ip}/{len}"),
            }))
        }
        (&Method::GET, ["published"]) => Ok(Command::ListPublished),
        (&Method::POST, ["published"]) => Ok(Command::Change(Change::AddPublish(parse::<
            PublishSpec,
        >(body)?))),
        (&Method::DELETE, ["published", protocol, port]) => match port.parse::<u16>() {
            Ok(host_port) => Ok(Command::Change(Change::DeletePublish {
                protocol: (*protocol).to_owned(),
                host_port,
            })),
            Err(_) => Err(Reply::error(400, "host_port", "not a port number")),
        },
        (&Method::GET, ["addresses"]) => Ok(Command::ListAddresses),
        (&Method::POST, ["addresses"]) => {
            Ok(Command::Change(Change::ClaimAddress(parse::<
                AddressRequest,
            >(body)?)))
        }
        (&Method::DELETE, ["addresses", tenant, ip]) => match ip.parse() {
            Ok(ip) => Ok(Command::Change(Change::ReleaseAddress {
                tenant: (*tenant).to_owned(),
                ip,
                owner: match body.is_empty() {
                    true => None,
                    false => Some(parse::<ReleaseRequest>(body)?.owner),
                },
            })),
            Err(_) => Err(Reply::error(
                400,
                "ip",
                &format!("`{ip}` is not an IPv4 address"),
            )),
        },
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
        (&Method::GET, ["fdb"]) => Ok(Command::Fdb),
        (&Method::GET, ["neighbors"]) => Ok(Command::Neighbors),
        (&Method::GET, ["tunnels"]) => Ok(Command::Tunnels),
        (&Method::GET, ["nat"]) => Ok(Command::Nat(None)),
        (&Method::GET, ["nat", tenant]) => Ok(Command::Nat(Some(decoded(tenant)))),
        (&Method::GET, ["openapi.json"]) => Ok(Command::OpenApi),
        (&Method::GET, ["log"]) => Ok(Command::ShowLog),
        (&Method::PUT, ["log"]) => Ok(Command::SetLog(parse::<LogRequest>(body)?.filter)),
        (&Method::POST, ["capture"]) => capture_request(parse::<CaptureBody>(body)?),
        (&Method::POST, ["trace", "live"]) => {
            let r = parse::<LiveTraceBody>(body)?;
            if !(1..=MAX_TRACED).contains(&r.count) {
                let message = format!("must be between 1 and {MAX_TRACED}");
                return Err(Reply::error(400, "count", &message));
            }
            check_seconds(r.seconds)?;
            Ok(Command::LiveTrace {
                port: r.port,
                count: r.count,
                seconds: r.seconds,
            })
        }
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

fn check_seconds(seconds: f64) -> Result<(), Reply> {
    let most = crate::capture::MAX_SECONDS;
    if seconds > 0.0 && seconds <= most {
        return Ok(());
    }
    let message = format!("must be above 0 and at most {most} (an API connection's life)");
    Err(Reply::error(400, "seconds", &message))
}

fn capture_request(body: CaptureBody) -> Result<Command, Reply> {
    use dataplane::pipeline::capture::{CaptureFilter, Protocol};
    if body.count > 1_000_000 {
        let message = "must be at most 1000000 (0: as many as come in `seconds`)";
        return Err(Reply::error(400, "count", message));
    }
    check_seconds(body.seconds)?;
    let mac = match body.mac.as_deref().map(dataplane::packet::parse_mac) {
        Some(Ok(mac)) => Some(mac),
        Some(Err(e)) => return Err(Reply::error(400, "mac", &e.to_string())),
        None => None,
    };
    let protocol = match body.protocol.as_deref() {
        Some(name) => Some(Protocol::named(name).ok_or_else(|| {
            let names: Vec<&str> = Protocol::ALL.iter().map(|(n, _)| *n).collect();
            let message = format!("`{name}` is not one of {}", names.join(", "));
            Reply::error(400, "protocol", &message)
        })?),
        None => None,
    };
    Ok(Command::Capture(crate::capture::CaptureRequest {
        ports: body.ports,
        count: body.count,
        seconds: body.seconds,
        filter: CaptureFilter {
            mac,
            ip: body.ip,
            protocol,
        },
    }))
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

    #[test]
    fn openapi_describes_every_route_there_is() {
        let doc = openapi();
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 12);
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                let concrete = path
                    .replace("{name}", "x")
                    .replace("{tenant}", "t")
                    .replace("{mac}", "02%3A00%3A00%3A00%3A00%3A01")
                    .replace("{ip}", "10.9.0.0")
                    .replace("{len}", "16")
                    .replace("{protocol}", "tcp")
                    .replace("{port}", "8080");
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let body: &[u8] = match (method.as_str(), path.as_str()) {
                    ("post", "/v1/trace") => br#"{"port":"p","frame":"00"}"#,
                    ("post", "/v1/tenants") => br#"{"name":"n","id":1}"#,
                    ("post", "/v1/hosts") => br#"{"name":"n","underlay_ip":"10.0.0.1"}"#,
                    ("post", "/v1/endpoints") => {
                        br#"{"tenant":"t","mac":"02:00:00:00:00:01","port":"p"}"#
                    }
                    ("post", "/v1/ports") => br#"{"name":"n","backend":"ring"}"#,
                    ("post", "/v1/capture") => br#"{"ports":["p"]}"#,
                    ("post", "/v1/trace/live") => br#"{"port":"p"}"#,
                    ("post", "/v1/routes") => br#"{"tenant":"t","prefix":"10.9.0.0/16","via":"10.1.0.9"}"#,
                    ("post", "/v1/published") => {
                        br#"{"tenant":"t","protocol":"tcp","host_port":80,"ip":"10.1.0.5","port":80}"#
                    }
                    ("patch", "/v1/tenants/{name}") => br#"{"gateway_host":"b"}"#,
                    ("post", "/v1/addresses") => br#"{"tenant":"t","owner":"o"}"#,
                    ("put", "/v1/log") => br#"{"filter":"info"}"#,
                    _ => b"",
                };
                assert!(
                    route(&m, &concrete, body).is_ok(),
                    "documented {method} {path} is not served"
                );
            }
        }
    }
}
