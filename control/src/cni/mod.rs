//! tenet's CNI plugin (`tenet-cni`, CNI up to 1.1): a container joins a tenant's
//! network.
//!
//! ADD makes a veth, moves one end into the container's namespace under `CNI_IFNAME`
//! with an address from the tenant's subnet and the gateway route, asks tenetd to
//! attach the host end as an access port of the tenant (AF_XDP, falling back to
//! af_packet; port security on the container's MAC and address) and registers the
//! endpoint, so the FDB entry is installed, not learned. With `"backend":
//! "vhost-user"` there is no veth: tenetd serves a vhost-user socket per endpoint for a
//! DPDK container, and the result names it (`socketPath`). DEL undoes all of it and
//! succeeds when there is nothing to undo, and when tenetd is down: the link and the
//! address go at once, the port is remembered and detached by the next call that
//! reaches tenetd (a pod's teardown never waits for the switch). CHECK verifies each
//! piece is in place. A retried ADD replaces what the first one left. STATUS says
//! whether tenetd and the tenant are there to take an ADD; GC detaches the
//! containers of this network the runtime no longer lists. The tenant is the
//! config's `tenant`, or per container `args.cni.tenant` (a Multus
//! NetworkAttachmentDefinition's `cni-args`) or `TENET_TENANT` in `CNI_ARGS`.
//!
//! Addresses come from tenetd (`POST /v1/addresses`), which hands each out once
//! across the cluster; a static one is asked for with the `ips` capability
//! (`runtimeConfig.ips`), `args.cni.ips` or `IP` in `CNI_ARGS`, and refused when taken.
//! A config naming an IPAM plugin (`host-local`) delegates to it instead.
//!
//! Everything a container gets is named from its network, container id and
//! interface, so DEL and CHECK find it again without state of their own: port and
//! host veth `tn<hash>`, the address claimed by `cni:<network>:<container>:<ifname>`.

pub mod ipam;

use std::net::Ipv4Addr;

use dataplane::packet::{Ipv4Cidr, MacText};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::Client;
use crate::containers::{self, Container};
use crate::netlink;

/// CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Error codes of the CNI specification, and the plugin's own (100 and up).
pub mod code {
    /// The config's `cniVersion` is not supported.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field the plugin does not support.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// The `CNI_*` environment is incomplete or wrong.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// An I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// The config could not be decoded.
    pub const DECODING_FAILURE: u32 = 6;
    /// The config is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient failure; the runtime should retry.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// tenetd refused the change.
    pub const TENETD_REFUSED: u32 = 100;
    /// The IPAM plugin failed.
    pub const IPAM_FAILED: u32 = 101;
    /// Making the container's link failed.
    pub const LINK_FAILED: u32 = 102;
    /// CHECK found something missing or different.
    pub const CHECK_FAILED: u32 = 103;
    /// STATUS: the plugin cannot take an ADD now (CNI 1.1).
    pub const NOT_AVAILABLE: u32 = 50;
}

/// A CNI error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// Its code.
    pub code: u32,
    /// What went wrong.
    pub msg: String,
    /// More, when there is.
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Self::new(code::IO_FAILURE, format!("{}: {e}", path.display()))
    }

    /// As the JSON the specification asks for.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

/// The `CNI_*` environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// ADD, DEL, CHECK or VERSION.
    pub command: String,
    /// The container.
    pub container_id: String,
    /// Its network namespace (a path).
    pub netns: String,
    /// The interface to make inside.
    pub ifname: String,
    /// Where plugins are (for delegated IPAM).
    pub path: String,
    /// `CNI_ARGS`: `KEY=value` pairs separated by `;`.
    pub args: String,
}

impl Env {
    /// Reads the environment through `var`; `VERSION` needs nothing else.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let need = |name: &str| {
            var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                CniError::new(code::INVALID_ENVIRONMENT, format!("{name} is not set"))
            })
        };
        let command = need("CNI_COMMAND")?;
        // These concern the network, not one container.
        if matches!(command.as_str(), "VERSION" | "STATUS" | "GC") {
            return Ok(Self {
                command,
                path: var("CNI_PATH").unwrap_or_default(),
                ..Self::default()
            });
        }
        if !matches!(command.as_str(), "ADD" | "DEL" | "CHECK") {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_COMMAND: `{command}` is not ADD, DEL, CHECK, STATUS, GC or VERSION"),
            ));
        }
        let ifname = need("CNI_IFNAME")?;
        if ifname.len() > 15 || ifname.contains('/') || ifname.contains(char::is_whitespace) {
            return Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_IFNAME: `{ifname}` is not an interface name"),
            ));
        }
        Ok(Self {
            container_id: need("CNI_CONTAINERID")?,
            // DEL may come after the namespace is gone.
            netns: if command == "DEL" {
                var("CNI_NETNS").unwrap_or_default()
            } else {
                need("CNI_NETNS")?
            },
            ifname,
            path: var("CNI_PATH").unwrap_or_default(),
            args: var("CNI_ARGS").unwrap_or_default(),
            command,
        })
    }

    /// The value of `key` in `CNI_ARGS`, if given.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from(crate::client::DEFAULT_SOCKET)
}

/// af-packet: the container's kernel hands it 64 KiB segments with checksums still
/// owed, as it does a bridge (AF_XDP takes frames one by one, checksums finished).
fn default_backend() -> String {
    "af-packet".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_vhost_dir() -> PathBuf {
    PathBuf::from("/run/tenet/vhost")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(ipam::DATA_DIR)
}

/// The network configuration a runtime passes on stdin.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// Version of the config's format.
    pub cni_version: String,
    /// The network's name.
    pub name: String,
    /// The plugin (`tenet`).
    #[serde(rename = "type")]
    pub plugin: String,
    /// The tenant the container joins.
    pub tenant: Option<String>,
    /// tenetd's API socket.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// How tenetd attaches the container: `af-packet` (the default), `af-xdp` (falls
    /// back to `af-packet`), or `vhost-user`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// The tenant subnet to take the address from (default: its first).
    pub subnet: Option<String>,
    /// MTU of the container's link.
    pub mtu: Option<u32>,
    /// Port security: the container may only send as its MAC and address.
    #[serde(default = "default_true", rename = "portSecurity")]
    pub port_security: bool,
    /// vhost-user: tenetd connects to a socket the container serves, instead of
    /// serving one.
    #[serde(default, rename = "vhostClient")]
    pub vhost_client: bool,
    /// vhost-user: where the sockets are.
    #[serde(default = "default_vhost_dir", rename = "vhostDir")]
    pub vhost_dir: PathBuf,
    /// Where the plugin remembers what DEL could not undo while tenetd was down.
    #[serde(default = "default_data_dir", rename = "dataDir")]
    pub data_dir: PathBuf,
    /// A static address asked for this container: where (`runtimeConfig.ips`,
    /// `args.cni.ips`, `IP` in `CNI_ARGS`) and as given. Read on ADD only: a bad one
    /// must not hold up a DEL.
    #[serde(skip)]
    pub requested_ip: Option<(&'static str, String)>,
    /// Delegated IPAM (`{"type": "host-local", ...}`); none: the plugin's own.
    pub ipam: Option<Value>,
    /// The result of the previous plugin of a chain, or of ADD (CHECK, DEL).
    pub prev_result: Option<Value>,
    /// A file every call is logged to (appended); without it only warnings and
    /// errors go to stderr, which the runtime keeps.
    #[serde(rename = "logFile")]
    pub log_file: Option<PathBuf>,
}

impl NetConf {
    /// Parses and checks the config.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Value), CniError> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("network config: {e}")))?;
        let mut conf: NetConf = serde_json::from_value(raw.clone())
            .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("network config: {e}")))?;
        // Per container (Multus passes a NetworkAttachmentDefinition's `cni-args`
        // here): the tenant may differ from the network's.
        if let Some(tenant) = raw["args"]["cni"]["tenant"].as_str() {
            conf.tenant = Some(tenant.to_owned());
        }
        // The first IPv4 entry: a dual-stack runtime may list an IPv6 one too.
        for (field, ips) in [
            ("runtimeConfig.ips", &raw["runtimeConfig"]["ips"]),
            ("args.cni.ips", &raw["args"]["cni"]["ips"]),
        ] {
            let first = ips
                .as_array()
                .into_iter()
                .flatten()
                .map(|ip| ip.as_str().unwrap_or_default())
                .find(|ip| !ip.contains(':'));
            if let Some(first) = first {
                conf.requested_ip = Some((field, first.to_owned()));
                break;
            }
        }
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "cniVersion: `{}` is not one of {}",
                    conf.cni_version,
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        if !matches!(conf.backend.as_str(), "af-xdp" | "af-packet" | "vhost-user") {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!(
                    "backend: `{}` is not af-xdp, af-packet or vhost-user",
                    conf.backend
                ),
            ));
        }
        if conf.name.is_empty() || conf.name.contains('/') || conf.name.starts_with('.') {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("name: `{}` cannot name a network", conf.name),
            ));
        }
        Ok((conf, raw))
    }

    /// `TENET_TENANT` in `CNI_ARGS` chooses the tenant of this container, `IP` its
    /// address.
    pub fn with_args(mut self, env: &Env) -> Self {
        if let Some(tenant) = env.arg("TENET_TENANT") {
            self.tenant = Some(tenant.to_owned());
        }
        if let Some(ip) = env.arg("IP") {
            self.requested_ip = Some(("CNI_ARGS IP", ip.to_owned()));
        }
        self
    }

    /// The static address asked for, if any, refused naming where it came from when
    /// it is not one.
    fn static_ip(&self) -> Result<Option<Ipv4Addr>, CniError> {
        let Some((field, text)) = &self.requested_ip else {
            return Ok(None);
        };
        let address = text.split('/').next().unwrap_or_default();
        address.parse().map(Some).map_err(|_| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("{field}: `{text}` is not an IPv4 address"),
            )
        })
    }

    fn tenant(&self) -> Result<&str, CniError> {
        self.tenant
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CniError::new(code::INVALID_CONFIG, "tenant: missing (the tenant to join)")
            })
    }
}

/// The name of the port and host veth of `env`'s container: `tn` and 12 hex digits of
/// a hash of the container id and interface (15 bytes at most, as Linux wants).
pub fn port_name(env: &Env) -> String {
    format!(
        "tn{}",
        containers::short_hash(&[&env.container_id, &env.ifname])
    )
}

/// A locally administered MAC for a vhost-user container (its DPDK app uses it).
fn vhost_mac(name: &str) -> [u8; 6] {
    let hex = &name[2..];
    let n = u64::from_str_radix(hex, 16).unwrap_or(0);
    let b = n.to_be_bytes();
    [0x02, 0x7d, b[4], b[5], b[6], b[7]]
}

/// Who holds a container's address in tenetd.
fn owner(conf: &NetConf, env: &Env) -> String {
    format!("cni:{}:{}:{}", conf.name, env.container_id, env.ifname)
}

fn parse_cidr(field: &str, text: &str) -> Result<Ipv4Cidr, CniError> {
    text.parse()
        .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("{field}: {e}")))
}

/// tenetd's refusal as a CNI error: unreachable is worth a retry.
fn refused(e: containers::Refused) -> CniError {
    match e {
        containers::Refused::Unreachable(m) => CniError::new(code::TRY_AGAIN_LATER, m),
        containers::Refused::Refused(m) => CniError::new(code::TENETD_REFUSED, m),
    }
}

/// The address a container gets and how it routes out.
struct Addressing {
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
}

/// Chooses the container's address: delegated to the IPAM plugin the config names,
/// or claimed from tenetd on the tenant's subnet, with the tenant's gateway.
fn address(
    client: &Client,
    env: &Env,
    conf: &NetConf,
    raw: &Value,
    tenant: &str,
) -> Result<Addressing, CniError> {
    if let Some(ipam) = &conf.ipam {
        let plugin = ipam.get("type").and_then(Value::as_str).unwrap_or("");
        let result = ipam::delegate(env, plugin, raw)?;
        let first = result["ips"]
            .get(0)
            .ok_or_else(|| CniError::new(code::IPAM_FAILED, format!("{plugin} gave no address")))?;
        let address = parse_cidr("ipam result", first["address"].as_str().unwrap_or(""))?;
        let gateway = first["gateway"].as_str().and_then(|g| g.parse().ok());
        return Ok(Addressing {
            ip: address.ip,
            prefix: address.prefix,
            gateway,
        });
    }
    let claimed = containers::claim_address(
        client,
        tenant,
        &owner(conf, env),
        conf.static_ip()?,
        conf.subnet.as_deref(),
    )
    .map_err(refused)?;
    Ok(Addressing {
        ip: claimed.ip,
        prefix: claimed.prefix,
        gateway: Some(claimed.gateway),
    })
}

/// Gives the container's address back: tenetd's claim, or the delegated plugin's DEL.
fn release(client: &Client, env: &Env, conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    match &conf.ipam {
        Some(ipam) => {
            let plugin = ipam.get("type").and_then(Value::as_str).unwrap_or("");
            let del = Env {
                command: "DEL".to_owned(),
                ..env.clone()
            };
            ipam::delegate(&del, plugin, raw).map(|_| ())
        }
        None => containers::release_addresses(client, &owner(conf, env)).map_err(refused),
    }
}

/// ADD: the container joins the tenant; returns the CNI result.
pub fn add(env: &Env, conf: &NetConf, raw: &Value) -> Result<Value, CniError> {
    let tenant_name = conf.tenant()?;
    let client = Client::new(&conf.socket);
    containers::tenant(&client, tenant_name)
        .map_err(refused)?
        .ok_or_else(|| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("tenant: `{tenant_name}` does not exist in tenetd"),
            )
        })?;
    Pending::new(&conf.data_dir).settle(&client);
    let name = port_name(env);
    // A retried ADD (the runtime timed out on the first): what the first one made
    // goes, the address it took stays (the allocator hands it out again).
    let leftover_link = conf.backend != "vhost-user"
        && netlink::link_exists(&name)
            .map_err(|e| CniError::new(code::LINK_FAILED, format!("{e:#}")))?;
    if leftover_link
        || containers::find_port(&client, &name)
            .map_err(refused)?
            .is_some()
    {
        containers::detach(&client, Some(tenant_name), &name).map_err(refused)?;
        if leftover_link {
            netlink::delete_link(&name)
                .map_err(|e| CniError::new(code::LINK_FAILED, format!("{e:#}")))?;
        }
    }
    let addressing = address(&client, env, conf, raw, tenant_name)?;
    // From here each step undoes the ones before it when it fails.
    let undo_address = |e: CniError| {
        let _ = release(&client, env, conf, raw);
        e
    };
    let container = |mac: [u8; 6]| Container {
        port: &name,
        tenant: tenant_name,
        mac,
        ip: addressing.ip,
        port_security: conf.port_security,
    };
    // vhost-user: the container's DPDK app routes as it likes; a veth gets the
    // default route unless its namespace has one (a second network).
    let mut default_route = addressing.gateway.is_some();
    let interfaces = if conf.backend == "vhost-user" {
        let mac = vhost_mac(&name);
        let path = conf.vhost_dir.join(format!("{name}.sock"));
        std::fs::create_dir_all(&conf.vhost_dir)
            .map_err(|e| undo_address(CniError::io(&conf.vhost_dir, e)))?;
        let port = json!({"backend": "vhost-user", "path": path, "client": conf.vhost_client});
        containers::attach(&client, &container(mac), port).map_err(|e| undo_address(refused(e)))?;
        json!([{"name": env.ifname, "mac": MacText(mac).to_string(), "sandbox": env.netns, "socketPath": path}])
    } else {
        let made = netlink::create_veth(&netlink::VethPlan {
            host: &name,
            netns: Path::new(&env.netns),
            ifname: &env.ifname,
            address: Some((addressing.ip, addressing.prefix)),
            gateway: addressing.gateway,
            mtu: conf.mtu,
        })
        .map_err(|e| undo_address(CniError::new(code::LINK_FAILED, format!("{e:#}"))))?;
        let mac = made.mac;
        default_route = made.default_route;
        match containers::attach_veth(&client, &container(mac), &conf.backend) {
            Err(e) => {
                let _ = netlink::delete_link(&name);
                return Err(undo_address(refused(e)));
            }
            // The container's kernel may hand over 64 KiB segments with checksums
            // still owed: an af-packet port takes them whole (AF_XDP could not).
            Ok("af-packet") => {
                if let Err(e) = netlink::offload_container_end(Path::new(&env.netns), &env.ifname) {
                    tracing::warn!(error = %format!("{e:#}"), "the container keeps sending frame by frame");
                }
            }
            Ok(_) => {}
        }
        json!([{"name": name}, {"name": env.ifname, "mac": MacText(mac).to_string(), "sandbox": env.netns}])
    };
    let container_index = if conf.backend == "vhost-user" { 0 } else { 1 };
    let mut ip = json!({
        "address": format!("{}/{}", addressing.ip, addressing.prefix),
        "interface": container_index,
    });
    // Results before 1.0.0 name each address's IP version.
    if conf.cni_version.starts_with("0.") {
        ip["version"] = json!("4");
    }
    let mut routes = json!([]);
    if let Some(gw) = addressing.gateway {
        ip["gateway"] = json!(gw.to_string());
        if default_route {
            routes = json!([{"dst": "0.0.0.0/0", "gw": gw.to_string()}]);
        }
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": interfaces,
        "ips": [ip],
        "routes": routes,
        "dns": {},
    }))
}

/// DEL: undoes ADD; whatever is already gone is skipped.
pub fn del(env: &Env, conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let name = port_name(env);
    let client = Client::new(&conf.socket);
    let tenant = conf.tenant.as_deref().filter(|t| !t.is_empty());
    let pending = Pending::new(&conf.data_dir);
    // tenetd's claim, unless an IPAM plugin gave the address.
    let claim = conf.ipam.is_none().then(|| owner(conf, env));
    let undone = containers::detach(&client, tenant, &name).and_then(|()| match &claim {
        Some(owner) => containers::release_addresses(&client, owner),
        None => Ok(()),
    });
    match undone {
        Ok(()) => pending.settle(&client),
        // tenetd down must not hold a pod's teardown: the port is detached and the
        // address given back later.
        Err(containers::Refused::Unreachable(m)) => {
            tracing::warn!(port = %name, reason = %m, "tenetd unreachable: the port is detached by a later call");
            pending.remember(tenant, &name, claim.as_deref())?;
        }
        Err(e) => return Err(refused(e)),
    }
    if conf.backend == "vhost-user" {
        let _ = std::fs::remove_file(conf.vhost_dir.join(format!("{name}.sock")));
    } else {
        netlink::delete_link(&name)
            .map_err(|e| CniError::new(code::LINK_FAILED, format!("{e:#}")))?;
    }
    match conf.ipam {
        Some(_) => release(&client, env, conf, raw),
        None => Ok(()),
    }
}

/// CHECK: the container's link, address, port and endpoint are all in place.
pub fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let tenant = conf.tenant()?;
    let name = port_name(env);
    let client = Client::new(&conf.socket);
    let failed = |what: String| Err(CniError::new(code::CHECK_FAILED, what));
    let Some(port) = containers::find_port(&client, &name).map_err(refused)? else {
        return failed(format!("tenetd has no port {name} for this container"));
    };
    if port["role"]["tenant"] != tenant {
        return failed(format!("port {name} is not in tenant {tenant}"));
    }
    let endpoints = containers::endpoints_of(&client, tenant, &name).map_err(refused)?;
    if endpoints.is_empty() {
        return failed(format!(
            "tenant {tenant} has no endpoint behind port {name}"
        ));
    }
    let expected_ip = conf.prev_result.as_ref().and_then(|r| {
        let address = r["ips"].get(0)?["address"].as_str()?;
        parse_cidr("prevResult", address).ok()
    });
    if conf.backend == "vhost-user" {
        return Ok(());
    }
    if !netlink::link_exists(&name)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("{e:#}")))?
    {
        return failed(format!("the host end {name} is gone"));
    }
    let inside = netlink::container_end(Path::new(&env.netns), &env.ifname)
        .map_err(|e| CniError::new(code::UNKNOWN_CONTAINER, format!("{e:#}")))?;
    let Some(inside) = inside else {
        return failed(format!("{} is gone from the container", env.ifname));
    };
    if !endpoints
        .iter()
        .any(|e| e["mac"] == MacText(inside.mac).to_string())
    {
        return failed(format!(
            "{} has MAC {}, not the endpoint's",
            env.ifname,
            MacText(inside.mac)
        ));
    }
    if let Some(ip) = expected_ip {
        if !inside.addresses.contains(&ip) {
            return failed(format!("{} lost its address {ip}", env.ifname));
        }
    }
    Ok(())
}

/// STATUS (CNI 1.1): whether an ADD could succeed now: tenetd answers and has the
/// tenant.
pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let tenant = conf.tenant()?;
    let client = Client::new(&conf.socket);
    match containers::tenant(&client, tenant) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(CniError::new(
            code::NOT_AVAILABLE,
            format!("tenant `{tenant}` does not exist in tenetd"),
        )),
        Err(e) => Err(CniError::new(code::NOT_AVAILABLE, e.to_string())),
    }
}

/// GC (CNI 1.1): every container of this host that this network claimed an address
/// for and the runtime no longer lists in `cni.dev/valid-attachments` loses its port,
/// link and address (with delegated IPAM the network's containers cannot be told
/// from other networks' of the tenant, so only remembered detaches are settled).
pub fn gc(conf: &NetConf, raw: &Value) -> Result<(), CniError> {
    let client = Client::new(&conf.socket);
    let pending = Pending::new(&conf.data_dir);
    pending.settle(&client);
    if conf.ipam.is_some() {
        return Ok(());
    }
    let valid: Vec<(String, String)> = raw["cni.dev/valid-attachments"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    Some((
                        a["containerID"].as_str()?.to_owned(),
                        a["ifname"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let ours = format!("cni:{}:", conf.name);
    let held = containers::claimed_here(&client, &ours).map_err(refused)?;
    let holders = held.iter().filter_map(|(_, _, owner)| {
        let (container, ifname) = owner.strip_prefix(&ours)?.rsplit_once(':')?;
        Some((container.to_owned(), ifname.to_owned()))
    });
    for (container_id, ifname) in holders {
        if valid
            .iter()
            .any(|(c, i)| *c == container_id && *i == ifname)
        {
            continue;
        }
        let env = Env {
            command: "DEL".to_owned(),
            container_id,
            ifname,
            ..Env::default()
        };
        del(&env, conf, raw)?;
    }
    Ok(())
}

/// Ports whose DEL came while tenetd was down, detached (and their addresses given
/// back) by the next call that reaches it: `tenant<TAB>port<TAB>owner` lines.
struct Pending {
    path: PathBuf,
}

impl Pending {
    fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("pending-detach"),
        }
    }

    fn lock(&self) -> Result<std::fs::File, CniError> {
        ipam::lock_file(&self.path.with_extension("lock"))
    }

    fn remember(
        &self,
        tenant: Option<&str>,
        port: &str,
        owner: Option<&str>,
    ) -> Result<(), CniError> {
        let _lock = self.lock()?;
        let mut text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.push_str(&format!(
            "{}\t{port}\t{}\n",
            tenant.unwrap_or(""),
            owner.unwrap_or("")
        ));
        crate::store::write_private(&self.path, text.as_bytes())
            .map_err(|e| CniError::new(code::IO_FAILURE, format!("{e:#}")))
    }

    /// Detaches what is remembered, keeping what tenetd could not take yet.
    fn settle(&self, client: &Client) {
        if !self.path.exists() {
            return;
        }
        let Ok(_lock) = self.lock() else {
            return;
        };
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut left = String::new();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(tenant), Some(port)) = (fields.next(), fields.next()) else {
                continue;
            };
            let owner = fields.next().filter(|o| !o.is_empty());
            let tenant = Some(tenant).filter(|t| !t.is_empty());
            let undone = containers::detach(client, tenant, port).and_then(|()| match owner {
                Some(owner) => containers::release_addresses(client, owner),
                None => Ok(()),
            });
            match undone {
                Ok(()) => tracing::info!(port, "detached after tenetd came back"),
                Err(e) => {
                    tracing::warn!(port, reason = %e, "still not detached");
                    left.push_str(line);
                    left.push('\n');
                }
            }
        }
        let _ = if left.is_empty() {
            std::fs::remove_file(&self.path)
        } else {
            crate::store::write_private(&self.path, left.as_bytes()).map_err(std::io::Error::other)
        };
    }
}

/// VERSION's answer.
pub fn version() -> Value {
    json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        Env::read(|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_environment_is_checked_naming_the_variable() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("CNI_CONTAINERID"), "{e:?}");
        let e = env(&[("CNI_COMMAND", "GET")]).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND"));
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            "VERSION"
        );
        let del = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert!(del.netns.is_empty(), "DEL without a namespace is fine");
        for command in ["STATUS", "GC"] {
            let e = env(&[("CNI_COMMAND", command)]).unwrap();
            assert_eq!(e.command, command, "a network's command needs no container");
        }
        let args = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1; TENET_TENANT = blue;K8S_POD_NAME=p",
            ),
        ])
        .unwrap();
        assert_eq!(args.arg("TENET_TENANT"), Some("blue"));
        assert_eq!(args.arg("K8S_POD_NAMESPACE"), None);
    }

    #[test]
    fn configs_are_checked_naming_the_field() {
        let e = NetConf::parse(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODING_FAILURE);
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"tenet"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"tenet","backend":"tap"}"#)
                .unwrap_err();
        assert!(e.msg.starts_with("backend"));
        let (c, _) =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"tenet"}"#).unwrap();
        assert_eq!(c.tenant().unwrap_err().code, code::INVALID_CONFIG);
        assert_eq!(c.backend, "af-packet");
    }

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = Env {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            ..Env::default()
        };
        let b = Env {
            container_id: "abc".into(),
            ifname: "eth1".into(),
            ..Env::default()
        };
        assert_eq!(port_name(&a), port_name(&a.clone()));
        assert_ne!(port_name(&a), port_name(&b));
        assert_eq!(port_name(&a).len(), 14);
        assert_eq!(
            vhost_mac(&port_name(&a))[0] & 3,
            2,
            "locally administered unicast"
        );
    }
}
