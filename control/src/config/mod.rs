//! tenetd's start-up configuration: TOML, with `${VAR}` naming environment variables.
//!
//! Everything is checked before anything starts: an unknown field, a bad value or a
//! dangling reference is refused with an error naming the field (`port[1].interface`).

pub mod etcd;
pub mod gateway;
pub mod grow;
pub mod switching;

/// A list whose copies share their records and most of their structure: a change
/// copies a few chunks of it, not the list, so it costs the same at 100 tenants as at
/// 100,000.
pub type List<T> = imbl::Vector<T>;

/// Every item of `list` in order, a chunk at a time: a tight loop over each chunk,
/// where the list's own iterator walks its tree for every item (a pass over 100,000
/// endpoints is what a change touching a tenant still makes).
pub fn items<T: Clone>(list: &List<T>) -> impl Iterator<Item = &T> {
    list.leaves().flatten()
}

use hashbrown::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dataplane::dpdk::{Backend, BondMode, EalOptions};
pub use etcd::{ClientIdentity, Credentials, EtcdAccess, EtcdPlan, Secret};
use gateway::{GatewayPlan, GatewaySection, PublishSpec, RouteSpec};
use serde::Deserialize;
use switching::{EndpointSpec, HostSpec, RoleName, SwitchPlan, SwitchSection, TenantSpec};

/// A refused configuration: which field and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `${VAR}` names an unset variable.
    #[error("config line {line}: environment variable `{var}` is not set")]
    UnsetVariable {
        /// 1-based line.
        line: usize,
        /// The variable.
        var: String,
    },
    /// Malformed TOML, an unknown field, or a value of the wrong type.
    #[error("config field `{field}`: {message}")]
    Syntax {
        /// Path of the field (`port[0].queues`), or `.` for the whole file.
        field: String,
        /// What the parser said.
        message: String,
    },
    /// A well-formed value that is not acceptable.
    #[error("config field `{field}`: {message}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// Why it is refused.
        message: String,
    },
}

pub(crate) fn invalid(field: impl std::fmt::Display, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Where a value sits in the config (`tenant[3].subnets[0]`), written out only when an
/// error names it: checking a valid record of a model of many formats nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    /// `list[index]`: a record.
    Item(&'static str, usize),
    /// `parent.name`.
    Member(&'a Field<'a>, &'static str),
    /// `parent.name[index]`.
    Entry(&'a Field<'a>, &'static str, usize),
}

impl<'a> Field<'a> {
    /// Its member `name`.
    pub(crate) fn member(&'a self, name: &'static str) -> Field<'a> {
        Field::Member(self, name)
    }

    /// Entry `index` of its list member `name`.
    pub(crate) fn entry(&'a self, name: &'static str, index: usize) -> Field<'a> {
        Field::Entry(self, name, index)
    }
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Item(list, index) => write!(f, "{list}[{index}]"),
            Field::Member(parent, name) => write!(f, "{parent}.{name}"),
            Field::Entry(parent, name, index) => write!(f, "{parent}.{name}[{index}]"),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Cores, memory and DPDK settings.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// Ports, in order (their DPDK port ids follow this order).
    #[serde(default, rename = "port")]
    pub ports: Vec<PortSpec>,
    /// Static cross-connects between ports.
    #[serde(default, rename = "cross_connect")]
    pub cross_connects: Vec<CrossConnectSpec>,
    /// Design and switching settings.
    #[serde(default)]
    pub switch: SwitchSection,
    /// Hosts of the cluster (this one included).
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    /// Tenants.
    #[serde(default, rename = "tenant")]
    pub tenants: List<Arc<TenantSpec>>,
    /// Known endpoints (static FDB entries).
    #[serde(default, rename = "endpoint")]
    pub endpoints: List<EndpointSpec>,
    /// SNAT limits and timeouts.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Static routes of the tenants' routers.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    /// Container ports published on the gateway hosts.
    #[serde(default, rename = "publish")]
    pub published: Vec<PublishSpec>,
    /// API socket and state file.
    #[serde(default)]
    pub control: ControlSection,
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Unix socket of the HTTP/JSON API.
    pub api_socket: PathBuf,
    /// Where tenants, hosts and endpoints changed through the API are kept: a journal
    /// in the directory `<state_file>.journal/`, each change appended and fsynced
    /// (a whole state file of an older tenet there is taken in once); restored from on
    /// start. Default: `/var/lib/tenet/<file_prefix>.json`. With `etcd`, this host's
    /// own view of the cluster's model is kept in the file itself (written
    /// atomically), for a start while etcd does not answer.
    pub state_file: Option<PathBuf>,
    /// Also serve the API on this TCP address (off by default: the Unix socket is
    /// root-only, a TCP port is reachable by anyone who can route to it). Only with
    /// TLS and client certificates: `api_tls_cert`, `api_tls_key` and `api_client_ca`.
    pub api_listen: Option<std::net::SocketAddr>,
    /// Serve `GET /metrics` (Prometheus text) on this TCP address, plain HTTP and
    /// nothing else: a scraper needs no credentials and can change nothing.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain the TCP API presents.
    pub api_tls_cert: Option<PathBuf>,
    /// PEM private key of `api_tls_cert`.
    pub api_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) whose client certificates the TCP API accepts; a client
    /// without one is refused at the handshake.
    pub api_client_ca: Option<PathBuf>,
    /// The directory files named through the API (a pcap port's `rx_file` and
    /// `tx_file`) must lie in: a client of the API writes no file as root elsewhere.
    pub files_dir: PathBuf,
    /// Keep API changes in the state file and restore them on start. Off for
    /// throw-away runs (benchmarks), where the config file alone must rule.
    pub persist: bool,
    /// etcd endpoints (`http://host:port`, or `https://host:port` with `etcd_ca`) of
    /// the cluster store; empty: the state file.
    pub etcd: Vec<String>,
    /// Key prefix of this cluster's model in etcd.
    pub etcd_prefix: String,
    /// Seconds after its last lease renewal that a host counts as gone.
    pub etcd_lease_s: u64,
    /// PEM CA certificate(s) etcd's server certificate must chain to (`https://`).
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate for an etcd that requires one (`--client-cert-auth`).
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of `etcd_cert`.
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with authentication on; its password comes from
    /// `etcd_password_file` or `etcd_password_env`, never from the config itself.
    pub etcd_user: Option<String>,
    /// File holding `etcd_user`'s password (a trailing newline is not part of it).
    pub etcd_password_file: Option<PathBuf>,
    /// Environment variable holding `etcd_user`'s password.
    pub etcd_password_env: Option<String>,
    /// What places a cluster's floating gateways: `tenants` (the host with the fewest)
    /// or `traffic` (the host whose gateways send out the least). The placer's, the
    /// first living host by name, is the one in force: set it alike on every host.
    pub gateway_placement: String,
    /// How much of the cluster this host follows: `all` (every tenant, the default;
    /// the egress host and the gateway placer) or `own` (the hosts and the tenants it
    /// holds: its endpoints', its claims', its gateways', its ports', their peers').
    pub etcd_watch: String,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            api_socket: PathBuf::from("/run/tenet/tenetd.sock"),
            state_file: None,
            api_listen: None,
            metrics_listen: None,
            api_tls_cert: None,
            api_tls_key: None,
            api_client_ca: None,
            files_dir: PathBuf::from("/var/lib/tenet/files"),
            persist: true,
            etcd: Vec::new(),
            etcd_prefix: "/tenet".to_owned(),
            etcd_lease_s: 10,
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_user: None,
            etcd_password_file: None,
            etcd_password_env: None,
            gateway_placement: "tenants".to_owned(),
            etcd_watch: "all".to_owned(),
        }
    }
}

/// `[dataplane]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneConfig {
    /// CPUs that run poll-mode workers, one worker each.
    pub workers: Vec<usize>,
    /// CPU for the EAL main thread and the control plane (default: the first CPU that
    /// runs no worker).
    pub main_core: Option<usize>,
    /// Hugepage memory in MiB.
    pub memory_mb: u32,
    /// Anonymous hugepage memory: no hugepage files.
    pub in_memory: bool,
    /// DPDK file prefix (runtime directory `/var/run/dpdk/<prefix>`).
    pub file_prefix: String,
    /// Packet buffers in the pool.
    pub mbufs: u32,
    /// 64 KiB buffers for the large TCP segments containers hand over (GSO) and jumbo
    /// frames; 0 drops every frame larger than a packet buffer.
    pub jumbo_mbufs: u32,
    /// RX descriptors per queue.
    pub rx_descriptors: u16,
    /// TX descriptors per queue.
    pub tx_descriptors: u16,
    /// DPDK's own log level.
    pub dpdk_log_level: String,
    /// The longest a worker with (next to) nothing to do sleeps between polls, in
    /// microseconds: the most latency a packet after a lull meets. 0: workers never
    /// sleep and each keeps its core busy (OVS's and VPP's default).
    pub max_idle_sleep_us: u32,
    /// With several workers, the one that receives GRE hands each frame to the worker
    /// its inner flow hashes to (a NIC's RSS puts all of one peer host's tunnel on one
    /// queue). Off by default: every handed frame's buffer crosses between the cores
    /// twice, which costs more than it saves where that is slow (measured on a 2-vCPU
    /// VM: half the rate of one worker decapsulating everything).
    pub spread_tunnels: bool,
    /// Entries of each of a worker's exact-match caches in front of the tables
    /// (destination MACs, source MACs, routes, GRE decisions by peer and key, sources
    /// reported for learning): more keep more busy flows at one probe, fewer leave the
    /// core's cache to the packets.
    pub flow_cache: usize,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        let defaults = EalOptions::default();
        Self {
            workers: vec![1],
            main_core: None,
            memory_mb: defaults.memory_mb,
            in_memory: defaults.in_memory,
            file_prefix: defaults.file_prefix,
            mbufs: 32767,
            jumbo_mbufs: 511,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            dpdk_log_level: defaults.log_level,
            max_idle_sleep_us: 500,
            spread_tunnels: false,
            flow_cache: dataplane::pipeline::fdb_cache::DEFAULT_ENTRIES,
        }
    }
}

/// Kinds of port backend, in the user's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Sink or generator.
    Null,
    /// Loopback DPDK ring.
    Ring,
    /// Kernel tap interface.
    Tap,
    /// pcap file replay/record.
    Pcap,
    /// Kernel interface through PACKET_MMAP.
    AfPacket,
    /// Kernel interface through AF_XDP.
    AfXdp,
    /// vhost-user socket.
    VhostUser,
    /// SR-IOV virtual function.
    Vf,
    /// Bond of other backends.
    Bond,
}

/// `[[port]]`, and also each entry of a bond's `members` (which take no name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Unique name (members have none).
    pub name: Option<String>,
    /// Backend kind.
    pub backend: BackendKind,
    /// Queue pairs (members take the bond's).
    pub queues: Option<u16>,
    /// MTU to set on the device.
    pub mtu: Option<u16>,
    /// Hand large TCP segments to the device whole when it advertises TCP segmentation
    /// (`vf`, `tap`, `bond`); off by default, like OVS's `userspace-tso-enable`.
    pub tso: Option<bool>,
    /// Kernel interface (`tap`, `af-packet`, `af-xdp`).
    pub interface: Option<String>,
    /// First interface queue (`af-xdp`).
    pub queue: Option<u32>,
    /// Socket path (`vhost-user`).
    pub path: Option<PathBuf>,
    /// Client mode (`vhost-user`).
    pub client: Option<bool>,
    /// PCI address (`vf`).
    pub pci: Option<String>,
    /// `active-backup` or `balance` (`bond`).
    pub mode: Option<String>,
    /// Bonded backends (`bond`).
    pub members: Option<Vec<PortSpec>>,
    /// File to replay (`pcap`).
    pub rx_file: Option<PathBuf>,
    /// File to record (`pcap`).
    pub tx_file: Option<PathBuf>,
    /// Replay forever (`pcap`).
    pub repeat: Option<bool>,
    /// Generate frames (`null`).
    pub rx: Option<bool>,
    /// Generated frame size (`null`).
    pub packet_size: Option<u32>,
    /// What the port is for: `access`, `trunk` or `uplink` (none: cross-connected).
    pub role: Option<RoleName>,
    /// The tenant of an access port.
    pub tenant: Option<String>,
    /// The tenants a trunk carries.
    pub tenants: Option<Vec<String>>,
    /// Port security: source MACs an access port accepts.
    pub allowed_macs: Option<Vec<String>>,
    /// Port security: source IPs (and ARP senders) an access port accepts.
    pub allowed_ips: Option<Vec<Ipv4Addr>>,
    /// The MAC an uplink answers to instead of the device's.
    pub mac: Option<String>,
}

/// `[[cross_connect]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossConnectSpec {
    /// The two ports joined: everything from one leaves on the other.
    pub ports: [String; 2],
    /// Only from the first port to the second.
    #[serde(default)]
    pub one_way: bool,
}

/// A validated port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    /// Its name.
    pub name: String,
    /// Its backend.
    pub backend: Backend,
    /// Queue pairs.
    pub queues: u16,
    /// MTU, if set.
    pub mtu: Option<u16>,
    /// Whether large TCP segments go to the device whole (TSO).
    pub tso: bool,
}

/// A validated configuration, ready to start.
#[derive(Debug, Clone)]
pub struct Validated {
    /// DPDK settings.
    pub eal: EalOptions,
    /// Worker CPUs.
    pub workers: Vec<usize>,
    /// Pool size.
    pub mbufs: u32,
    /// The longest a worker sleeps when there is (next to) nothing to do; zero: never.
    pub max_idle_sleep: std::time::Duration,
    /// Whether GRE is shared between the workers by its inner flow.
    pub spread_tunnels: bool,
    /// Entries of each of a worker's caches.
    pub flow_cache: usize,
    /// Large-buffer pool size (0: none).
    pub jumbo_mbufs: u32,
    /// Descriptors per RX queue.
    pub rx_descriptors: u16,
    /// Descriptors per TX queue.
    pub tx_descriptors: u16,
    /// Ports in order.
    pub ports: Vec<PortPlan>,
    /// `(from, to)` indices into `ports`: packets from `from` leave on `to`.
    pub cross_connects: Vec<(usize, usize)>,
    /// Tenants, hosts, endpoints and port roles.
    pub switching: SwitchPlan,
    /// Routers, routes, published ports, SNAT limits.
    pub gateway: GatewayPlan,
    /// API socket path.
    pub api_socket: PathBuf,
    /// Optional TCP address of the API.
    pub api_tcp: Option<TcpApi>,
    /// Optional TCP address of the read-only metrics listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where files named through the API must lie.
    pub files_dir: PathBuf,
    /// State file path, `None` when nothing persists. With etcd keeping the state, the
    /// local copy of this host's view (what it runs while etcd does not answer).
    pub state_file: Option<PathBuf>,
    /// The cluster store, when the model lives in etcd.
    pub etcd: Option<EtcdPlan>,
    /// The configuration this was validated from (the API derives changed ones from
    /// it); after an API change its model lists are the live model's, kept there and
    /// not here.
    pub source: Config,
}

impl Config {
    /// Reads, expands and parses a config file (not yet validated).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, |var| std::env::var(var).ok())
    }

    /// Parses config text, expanding `${VAR}` through `lookup`.
    pub fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let expanded = expand_variables(text, lookup)?;
        let deserializer = toml::Deserializer::new(&expanded);
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().to_owned();
            if let Some(span) = inner.span() {
                let line = expanded[..span.start].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
            }
            ConfigError::Syntax { field, message }
        })
    }

    /// Reads and validates.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        Self::read(path)?.into_validated()
    }

    /// Checks every value and reference; nothing is started.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let mut validated = self.check()?;
        validated.source = self.clone();
        Ok(validated)
    }

    /// [`Config::validate`], keeping this config in the result without a copy (a
    /// model of many tenants costs more to copy than to check).
    pub fn into_validated(self) -> Result<Validated, ConfigError> {
        self.checked().map_err(|refused| refused.0)
    }

    /// [`Config::into_validated`], the config handed back with the error.
    pub fn checked(self) -> Result<Validated, Box<(ConfigError, Config)>> {
        match self.check() {
            Ok(mut validated) => {
                validated.source = self;
                Ok(validated)
            }
            Err(error) => Err(Box::new((error, self))),
        }
    }

    /// The checks and plans of [`Config::validate`], the source left empty.
    fn check(&self) -> Result<Validated, ConfigError> {
        let dp = &self.dataplane;
        let main_core = check_dataplane(dp)?;
        let ports = validate_ports(&self.ports)?;
        let cross_connects = validate_cross_connects(&self.cross_connects, &ports)?;
        let port_names: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
        let cross_connected: HashSet<usize> =
            cross_connects.iter().flat_map(|&(a, b)| [a, b]).collect();
        let tenants = switching::Tenants::of(&self.tenants);
        let mut switching = switching::validate(
            &self.switch,
            &self.hosts,
            &tenants,
            &self.endpoints,
            &self.ports,
            &port_names,
            &cross_connected,
        )?;
        if self.control.etcd.is_empty() {
            switching::check_tenant_count(switching.tenants.len())?;
        }
        let gateway = gateway::validate(
            &self.gateway,
            &self.switch,
            &tenants,
            &self.routes,
            &self.published,
            &mut switching,
        )?;
        Ok(Validated {
            eal: eal_options(dp, main_core, &ports),
            workers: dp.workers.clone(),
            mbufs: dp.mbufs,
            max_idle_sleep: std::time::Duration::from_micros(u64::from(dp.max_idle_sleep_us)),
            spread_tunnels: dp.spread_tunnels,
            flow_cache: dp.flow_cache,
            jumbo_mbufs: dp.jumbo_mbufs,
            rx_descriptors: dp.rx_descriptors,
            tx_descriptors: dp.tx_descriptors,
            ports,
            cross_connects,
            switching,
            gateway,
            api_socket: self.control.api_socket.clone(),
            api_tcp: self.tcp_api()?,
            metrics_listen: self.control.metrics_listen,
            files_dir: self.control.files_dir.clone(),
            etcd: self.etcd_plan()?,
            state_file: self.state_file(),
            source: Config::default(),
        })
    }

    /// Where the model persists, `None` when nothing does.
    fn state_file(&self) -> Option<PathBuf> {
        self.control.persist.then(|| {
            self.control.state_file.clone().unwrap_or_else(|| {
                PathBuf::from(format!(
                    "/var/lib/tenet/{}.json",
                    self.dataplane.file_prefix
                ))
            })
        })
    }
}

/// The ports in order, each checked, then what they share.
pub(crate) fn validate_ports(specs: &[PortSpec]) -> Result<Vec<PortPlan>, ConfigError> {
    if specs.is_empty() {
        return Err(invalid("port", "at least one [[port]] is needed"));
    }
    if specs.len() > dataplane::MAX_PORTS {
        return Err(invalid(
            "port",
            format!("at most {} ports", dataplane::MAX_PORTS),
        ));
    }
    let mut ports = Vec::with_capacity(specs.len());
    let mut names = HashSet::new();
    for (i, spec) in specs.iter().enumerate() {
        ports.push(spec.plan(&format!("port[{i}]"), &mut names)?);
    }
    check_unique_resources(&ports)?;
    check_dpdk_devices(&ports)?;
    Ok(ports)
}

/// `(from, to)` pairs, both ways unless one-way; a port sends to one port at most.
pub(crate) fn validate_cross_connects(
    specs: &[CrossConnectSpec],
    ports: &[PortPlan],
) -> Result<Vec<(usize, usize)>, ConfigError> {
    let index = |field: &str, name: &str| {
        ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| invalid(field, format!("no port is named `{name}`")))
    };
    let mut cross_connects = Vec::new();
    let mut sources = HashSet::new();
    for (i, xc) in specs.iter().enumerate() {
        let a = index(&format!("cross_connect[{i}].ports[0]"), &xc.ports[0])?;
        let b = index(&format!("cross_connect[{i}].ports[1]"), &xc.ports[1])?;
        if a == b {
            return Err(invalid(
                format!("cross_connect[{i}].ports"),
                "a port cannot be connected to itself",
            ));
        }
        let mut pairs = vec![(a, b)];
        if !xc.one_way {
            pairs.push((b, a));
        }
        for (from, to) in pairs {
            if !sources.insert(from) {
                return Err(invalid(
                    format!("cross_connect[{i}].ports"),
                    format!("port `{}` already sends to another port", ports[from].name),
                ));
            }
            cross_connects.push((from, to));
        }
    }
    Ok(cross_connects)
}

/// Checks `[dataplane]` and returns the main core.
pub(crate) fn check_dataplane(dp: &DataplaneConfig) -> Result<usize, ConfigError> {
    let cpus = online_cpus();
    check_workers(dp, cpus)?;
    let main_core = main_core(dp, cpus)?;
    check_dataplane_sizes(dp)?;
    Ok(main_core)
}

fn check_workers(dp: &DataplaneConfig, cpus: usize) -> Result<(), ConfigError> {
    if dp.workers.is_empty() {
        return Err(invalid(
            "dataplane.workers",
            "at least one worker CPU is needed",
        ));
    }
    if dp.workers.len() > dataplane::MAX_WORKERS {
        return Err(invalid(
            "dataplane.workers",
            format!("at most {} workers are supported", dataplane::MAX_WORKERS),
        ));
    }
    let mut seen_cores = HashSet::new();
    for (i, &core) in dp.workers.iter().enumerate() {
        if core >= cpus {
            return Err(invalid(
                format!("dataplane.workers[{i}]"),
                format!("CPU {core} does not exist (this machine has {cpus})"),
            ));
        }
        if !seen_cores.insert(core) {
            return Err(invalid(
                format!("dataplane.workers[{i}]"),
                format!("CPU {core} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// The main core given, or the first CPU that runs no worker.
fn main_core(dp: &DataplaneConfig, cpus: usize) -> Result<usize, ConfigError> {
    Ok(match dp.main_core {
        Some(core) if core >= cpus => {
            return Err(invalid(
                "dataplane.main_core",
                format!("CPU {core} does not exist (this machine has {cpus})"),
            ))
        }
        Some(core) => core,
        None => (0..cpus).find(|c| !dp.workers.contains(c)).unwrap_or(0),
    })
}

/// Memory, file prefix, buffers and descriptors.
fn check_dataplane_sizes(dp: &DataplaneConfig) -> Result<(), ConfigError> {
    if dp.memory_mb < 64 {
        return Err(invalid("dataplane.memory_mb", "at least 64 MiB are needed"));
    }
    if dp.file_prefix.is_empty()
        || !dp
            .file_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(
            "dataplane.file_prefix",
            "use letters, digits, '-' and '_' only, at least one",
        ));
    }
    if dp.mbufs < 1024 {
        return Err(invalid(
            "dataplane.mbufs",
            "at least 1024 packet buffers are needed",
        ));
    }
    if dp.jumbo_mbufs != 0 && !(64..=65535).contains(&dp.jumbo_mbufs) {
        return Err(invalid(
            "dataplane.jumbo_mbufs",
            "0 (no large frames) or 64 to 65535 large buffers",
        ));
    }
    for (field, value) in [
        ("dataplane.rx_descriptors", dp.rx_descriptors),
        ("dataplane.tx_descriptors", dp.tx_descriptors),
    ] {
        if !(64..=16384).contains(&value) {
            return Err(invalid(field, "must be between 64 and 16384"));
        }
    }
    if dp.max_idle_sleep_us > 10_000 {
        return Err(invalid(
            "dataplane.max_idle_sleep_us",
            "at most 10000 (10 ms); 0 keeps the workers polling",
        ));
    }
    let cache = dataplane::pipeline::fdb_cache::ENTRIES_RANGE;
    if !dp.flow_cache.is_power_of_two() || !cache.contains(&dp.flow_cache) {
        return Err(invalid(
            "dataplane.flow_cache",
            format!("a power of two from {} to {}", cache.start(), cache.end()),
        ));
    }
    Ok(())
}

fn check_dpdk_devices(ports: &[PortPlan]) -> Result<(), ConfigError> {
    let devices: usize = ports.iter().map(|p| p.backend.dpdk_devices()).sum();
    if devices > dataplane::MAX_DPDK_PORTS {
        return Err(invalid(
            "port",
            format!(
                "these ports need {devices} DPDK devices, DPDK holds at most {} \
                 (RTE_MAX_ETHPORTS); af-packet ports need none",
                dataplane::MAX_DPDK_PORTS
            ),
        ));
    }
    Ok(())
}

pub(crate) fn eal_options(
    dp: &DataplaneConfig,
    main_core: usize,
    ports: &[PortPlan],
) -> EalOptions {
    let pci_allow = ports
        .iter()
        .flat_map(|p| p.backend.pci_addresses())
        .collect();
    EalOptions {
        main_core,
        file_prefix: dp.file_prefix.clone(),
        memory_mb: dp.memory_mb,
        in_memory: dp.in_memory,
        single_file_segments: false,
        pci_allow,
        log_level: dp.dpdk_log_level.clone(),
    }
}

/// The API on TCP: where, and the TLS it requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpApi {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// Certificate chain presented.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// CA of the client certificates accepted.
    pub client_ca: PathBuf,
}

impl Config {
    /// The TCP API, refused without TLS and client certificates: a TCP port reaches
    /// further than root's Unix socket, and whoever talks to the API controls the
    /// switch.
    fn tcp_api(&self) -> Result<Option<TcpApi>, ConfigError> {
        let control = &self.control;
        let files = [
            ("control.api_tls_cert", &control.api_tls_cert),
            ("control.api_tls_key", &control.api_tls_key),
            ("control.api_client_ca", &control.api_client_ca),
        ];
        let Some(listen) = control.api_listen else {
            if let Some((field, _)) = files.iter().find(|(_, f)| f.is_some()) {
                return Err(invalid(*field, "has no use without control.api_listen"));
            }
            return Ok(None);
        };
        let mut paths = Vec::with_capacity(3);
        for (field, file) in files {
            let Some(path) = file else {
                return Err(invalid(
                    "control.api_listen",
                    format!("the API on TCP requires TLS with client certificates: set {field} (and the other two of control.api_tls_cert, api_tls_key, api_client_ca)"),
                ));
            };
            if !path.is_file() {
                return Err(invalid(
                    field,
                    format!("{} is not a readable file", path.display()),
                ));
            }
            paths.push(path.clone());
        }
        let [cert, key, client_ca] = <[PathBuf; 3]>::try_from(paths).expect("three paths");
        Ok(Some(TcpApi {
            listen,
            cert,
            key,
            client_ca,
        }))
    }
}

impl PortSpec {
    /// The options this spec sets, by field name.
    fn set_fields(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let mut mark = |present: bool, name: &'static str| {
            if present {
                set.push(name);
            }
        };
        mark(self.interface.is_some(), "interface");
        mark(self.queue.is_some(), "queue");
        mark(self.path.is_some(), "path");
        mark(self.client.is_some(), "client");
        mark(self.pci.is_some(), "pci");
        mark(self.mode.is_some(), "mode");
        mark(self.members.is_some(), "members");
        mark(self.rx_file.is_some(), "rx_file");
        mark(self.tx_file.is_some(), "tx_file");
        mark(self.repeat.is_some(), "repeat");
        mark(self.rx.is_some(), "rx");
        mark(self.packet_size.is_some(), "packet_size");
        set
    }

    /// Checks the port at `field` (`port[0]`); `names` holds the names taken so far.
    fn plan(&self, field: &str, names: &mut HashSet<String>) -> Result<PortPlan, ConfigError> {
        let name = self.checked_name(field, names)?;
        let queues = self.queues.unwrap_or(1);
        if !(1..=16).contains(&queues) {
            return Err(invalid(
                format!("{field}.queues"),
                "must be between 1 and 16",
            ));
        }
        if let Some(mtu) = self.mtu {
            if !(68..=9600).contains(&mtu) {
                return Err(invalid(
                    format!("{field}.mtu"),
                    "must be between 68 and 9600",
                ));
            }
        }
        let backend = self.backend(field)?;
        let tso = self.tso.unwrap_or(false);
        if tso
            && !matches!(
                self.backend,
                BackendKind::Vf | BackendKind::Tap | BackendKind::Bond
            )
        {
            return Err(invalid(
                format!("{field}.tso"),
                "only for devices that segment (vf, tap, bond); af-packet ports hand large \
                 segments to the kernel whole and vhost-user guests negotiate it themselves",
            ));
        }
        if let Backend::Pcap {
            tx_file: Some(_), ..
        } = &backend
        {
            if queues > 1 {
                return Err(invalid(
                    format!("{field}.queues"),
                    "a pcap port writing tx_file has one queue (several would write \
                     over each other's file)",
                ));
            }
        }
        Ok(PortPlan {
            name,
            backend,
            queues,
            mtu: self.mtu,
            tso,
        })
    }

    /// The port's name, well-formed and not in `names` (where it is added).
    fn checked_name(
        &self,
        field: &str,
        names: &mut HashSet<String>,
    ) -> Result<String, ConfigError> {
        let name = match &self.name {
            None => return Err(invalid(format!("{field}.name"), "every port needs a name")),
            Some(name) => name.clone(),
        };
        if name.is_empty()
            || name.len() > 32
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                format!("{field}.name"),
                "1 to 32 letters, digits, '-' or '_'",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("port `{name}` is defined twice"),
            ));
        }
        Ok(name)
    }

    /// Turns the spec into a backend, refusing options the backend does not take.
    fn backend(&self, field: &str) -> Result<Backend, ConfigError> {
        self.check_backend_options(field)?;
        Ok(match self.backend {
            BackendKind::Null => self.null_backend(field)?,
            BackendKind::Ring => Backend::Ring,
            BackendKind::Tap => Backend::Tap {
                interface: self.interface(field)?,
            },
            BackendKind::AfPacket => Backend::AfPacket {
                interface: self.interface(field)?,
            },
            BackendKind::AfXdp => Backend::AfXdp {
                interface: self.interface(field)?,
                queue: self.queue.unwrap_or(0),
            },
            BackendKind::Pcap => self.pcap_backend(field)?,
            BackendKind::VhostUser => self.vhost_user_backend(field)?,
            BackendKind::Vf => self.vf_backend(field)?,
            BackendKind::Bond => self.bond_backend(field)?,
        })
    }

    fn check_backend_options(&self, field: &str) -> Result<(), ConfigError> {
        let allowed: &[&str] = match self.backend {
            BackendKind::Null => &["rx", "packet_size"],
            BackendKind::Ring => &[],
            BackendKind::Tap | BackendKind::AfPacket => &["interface"],
            BackendKind::AfXdp => &["interface", "queue"],
            BackendKind::Pcap => &["rx_file", "tx_file", "repeat"],
            BackendKind::VhostUser => &["path", "client"],
            BackendKind::Vf => &["pci"],
            BackendKind::Bond => &["mode", "members"],
        };
        if let Some(extra) = self.set_fields().into_iter().find(|f| !allowed.contains(f)) {
            return Err(invalid(
                format!("{field}.{extra}"),
                format!(
                    "not an option of backend `{}` (it takes: {})",
                    backend_name(self.backend),
                    list_or_none(allowed)
                ),
            ));
        }
        Ok(())
    }

    /// The kernel interface a tap, af-packet or af-xdp port needs.
    fn interface(&self, field: &str) -> Result<String, ConfigError> {
        let name = self.interface.clone().ok_or_else(|| {
            invalid(
                format!("{field}.interface"),
                format!(
                    "backend `{}` needs an interface",
                    backend_name(self.backend)
                ),
            )
        })?;
        check_interface_name(&format!("{field}.interface"), &name)?;
        Ok(name)
    }

    fn null_backend(&self, field: &str) -> Result<Backend, ConfigError> {
        Ok(Backend::Null {
            rx: self.rx.unwrap_or(false),
            packet_size: match self.packet_size {
                Some(size) if !(60..=9000).contains(&size) => {
                    return Err(invalid(
                        format!("{field}.packet_size"),
                        "must be between 60 and 9000",
                    ))
                }
                other => other,
            },
        })
    }

    fn pcap_backend(&self, field: &str) -> Result<Backend, ConfigError> {
        if self.rx_file.is_none() && self.tx_file.is_none() {
            return Err(invalid(
                format!("{field}.rx_file"),
                "backend `pcap` needs rx_file, tx_file or both",
            ));
        }
        if self.repeat.is_some() && self.rx_file.is_none() {
            return Err(invalid(
                format!("{field}.repeat"),
                "repeat needs an rx_file",
            ));
        }
        for (name, path) in [("rx_file", &self.rx_file), ("tx_file", &self.tx_file)] {
            if let Some(path) = path {
                check_devarg_path(&format!("{field}.{name}"), path)?;
            }
        }
        if let Some(rx) = &self.rx_file {
            if !rx.is_file() {
                return Err(invalid(
                    format!("{field}.rx_file"),
                    format!("{} is not a readable file", rx.display()),
                ));
            }
        }
        Ok(Backend::Pcap {
            rx_file: self.rx_file.clone(),
            tx_file: self.tx_file.clone(),
            repeat: self.repeat.unwrap_or(false),
        })
    }

    fn vhost_user_backend(&self, field: &str) -> Result<Backend, ConfigError> {
        let path = self.path.clone().ok_or_else(|| {
            invalid(
                format!("{field}.path"),
                "backend `vhost-user` needs a socket path",
            )
        })?;
        check_devarg_path(&format!("{field}.path"), &path)?;
        if !path.is_absolute() {
            return Err(invalid(
                format!("{field}.path"),
                "use an absolute socket path",
            ));
        }
        Ok(Backend::VhostUser {
            path,
            client: self.client.unwrap_or(false),
        })
    }

    fn vf_backend(&self, field: &str) -> Result<Backend, ConfigError> {
        let pci = self
            .pci
            .clone()
            .ok_or_else(|| invalid(format!("{field}.pci"), "backend `vf` needs a PCI address"))?;
        if !is_pci_address(&pci) {
            return Err(invalid(
                format!("{field}.pci"),
                format!("`{pci}` is not a PCI address like 0000:3b:02.0"),
            ));
        }
        Ok(Backend::Vf { pci })
    }

    fn bond_backend(&self, field: &str) -> Result<Backend, ConfigError> {
        let mode = match self.mode.as_deref() {
            None | Some("active-backup") => BondMode::ActiveBackup,
            Some("balance") => BondMode::Balance,
            Some(other) => {
                return Err(invalid(
                    format!("{field}.mode"),
                    format!("`{other}` is not a bond mode (active-backup or balance)"),
                ))
            }
        };
        let specs = self.members.as_deref().unwrap_or(&[]);
        if specs.len() < 2 {
            return Err(invalid(
                format!("{field}.members"),
                "a bond needs at least two members",
            ));
        }
        let mut members = Vec::with_capacity(specs.len());
        for (j, member) in specs.iter().enumerate() {
            members.push(member.bond_member(&format!("{field}.members[{j}]"))?);
        }
        Ok(Backend::Bond { mode, members })
    }

    /// A bond member (at `mfield`) is a backend only: the rest is set on the bond.
    fn bond_member(&self, mfield: &str) -> Result<Backend, ConfigError> {
        for (present, name) in [
            (self.name.is_some(), "name"),
            (self.queues.is_some(), "queues"),
            (self.mtu.is_some(), "mtu"),
            (self.tso.is_some(), "tso"),
            (self.role.is_some(), "role"),
            (self.tenant.is_some(), "tenant"),
            (self.tenants.is_some(), "tenants"),
            (self.allowed_macs.is_some(), "allowed_macs"),
            (self.allowed_ips.is_some(), "allowed_ips"),
            (self.mac.is_some(), "mac"),
        ] {
            if present {
                return Err(invalid(
                    format!("{mfield}.{name}"),
                    "set on the bond, not on its members",
                ));
            }
        }
        if self.backend == BackendKind::Bond {
            return Err(invalid(format!("{mfield}.backend"), "bonds do not nest"));
        }
        self.backend(mfield)
    }
}

fn backend_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Null => "null",
        BackendKind::Ring => "ring",
        BackendKind::Tap => "tap",
        BackendKind::Pcap => "pcap",
        BackendKind::AfPacket => "af-packet",
        BackendKind::AfXdp => "af-xdp",
        BackendKind::VhostUser => "vhost-user",
        BackendKind::Vf => "vf",
        BackendKind::Bond => "bond",
    }
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "no options".to_owned()
    } else {
        items.join(", ")
    }
}

/// CPUs the machine has online. Not `available_parallelism`, which follows this
/// process's affinity mask: started under `taskset -c 1`, tenetd may still place its
/// control thread on CPU 0.
fn online_cpus() -> usize {
    let fallback = || std::thread::available_parallelism().map_or(1, usize::from);
    let Ok(text) = std::fs::read_to_string("/sys/devices/system/cpu/online") else {
        return fallback();
    };
    // "0-1,4-7": the highest CPU number plus one.
    text.trim()
        .split(',')
        .filter_map(|range| range.rsplit('-').next()?.parse::<usize>().ok())
        .max()
        .map_or_else(fallback, |max| max + 1)
}

/// Linux interface names: 1 to 15 bytes, no '/', ':' or whitespace.
fn check_interface_name(field: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 15
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == ',' || c.is_whitespace())
    {
        return Err(invalid(field, format!("`{name}` is not a valid interface name (1-15 characters, no '/', ':', ',' or spaces)")));
    }
    Ok(())
}

/// DPDK device arguments are comma-separated, so a path cannot hold a comma.
fn check_devarg_path(field: &str, path: &Path) -> Result<(), ConfigError> {
    let text = path.to_string_lossy();
    if text.is_empty() || text.contains(',') {
        return Err(invalid(field, "path must be non-empty and hold no comma"));
    }
    Ok(())
}

fn is_pci_address(text: &str) -> bool {
    let bytes = text.as_bytes();
    // DDDD:BB:DD.F
    bytes.len() == 12
        && bytes[4] == b':'
        && bytes[7] == b':'
        && bytes[10] == b'.'
        && bytes
            .iter()
            .enumerate()
            .filter(|(i, _)| ![4, 7, 10].contains(i))
            .all(|(_, b)| b.is_ascii_hexdigit())
        && (b'0'..=b'7').contains(&bytes[11])
}

/// Two ports cannot share an interface, a socket or a PCI device.
fn check_unique_resources(ports: &[PortPlan]) -> Result<(), ConfigError> {
    fn resources(backend: &Backend, out: &mut Vec<String>) {
        match backend {
            Backend::Tap { interface }
            | Backend::AfPacket { interface }
            | Backend::AfXdp { interface, .. } => {
                out.push(format!("interface `{interface}`"));
            }
            Backend::VhostUser { path, .. } => out.push(format!("socket `{}`", path.display())),
            Backend::Vf { pci } => out.push(format!("PCI device `{pci}`")),
            Backend::Bond { members, .. } => members.iter().for_each(|m| resources(m, out)),
            Backend::Null { .. } | Backend::Ring | Backend::Pcap { .. } => {}
        }
    }
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let mut used = Vec::new();
        resources(&port.backend, &mut used);
        for resource in used {
            if !seen.insert(resource.clone()) {
                return Err(invalid(
                    format!("port[{i}]"),
                    format!("{resource} is used by another port"),
                ));
            }
        }
    }
    Ok(())
}

/// Replaces `${VAR}` with the variable's value; an unset variable is an error naming it.
pub fn expand_variables(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(ConfigError::Syntax {
                    field: ".".to_owned(),
                    message: format!("line {}: `${{` without a closing `}}`", n + 1),
                });
            };
            let (var, as_list) = match after[..end].strip_suffix(":list") {
                Some(var) => (var, true),
                None => (&after[..end], false),
            };
            let value = lookup(var).ok_or_else(|| ConfigError::UnsetVariable {
                line: n + 1,
                var: var.to_owned(),
            })?;
            if as_list {
                // "a b c" -> "a", "b", "c": a whitespace-separated variable as the
                // items of a TOML array of strings.
                let items: Vec<String> = value
                    .split_whitespace()
                    .map(|item| format!("{item:?}"))
                    .collect();
                out.push_str(&items.join(", "));
            } else {
                out.push_str(&value);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Validated, ConfigError> {
        Config::parse(text, |var| match var {
            "SINK" => Some("net".to_owned()),
            "CORE" => Some("1".to_owned()),
            _ => None,
        })?
        .validate()
    }

    const TWO_PORTS: &str = r#"
[dataplane]
workers = [${CORE}]

[[port]]
name = "a"
backend = "ring"

[[port]]
name = "b"
backend = "null"

[[cross_connect]]
ports = ["a", "b"]
"#;

    fn err(text: &str) -> String {
        parse(text).expect_err("config must be refused").to_string()
    }

    /// One host's tables hold 131,071 tenants; a cluster's model holds the cloud's, of
    /// which each host runs those it hosts.
    #[test]
    fn the_tenants_one_host_holds_are_counted_but_not_a_clouds() {
        let with_tenants = |control: &str, count: u32| {
            let mut config = Config::parse(&format!("{TWO_PORTS}\n{control}"), |var| {
                (var == "CORE").then(|| "1".to_owned())
            })
            .unwrap();
            for id in 1..=count {
                config.tenants.push_back(Arc::new(TenantSpec {
                    name: format!("t{id}"),
                    id,
                    ..serde_json::from_str(r#"{"name":"t","id":1}"#).unwrap()
                }));
            }
            config.validate()
        };
        let most = dataplane::table::NO_TENANT;
        let alone = "[control]\npersist = false";
        assert!(with_tenants(alone, most).is_ok());
        let refused = with_tenants(alone, most + 1).unwrap_err().to_string();
        assert!(
            refused.contains("tenant") && refused.contains("at most 131071 tenants per host"),
            "{refused}"
        );
        let cloud = with_tenants(
            r#"
[control]
etcd = ["http://127.0.0.1:2379"]

[switch]
host = "h1"

[[host]]
name = "h1"
underlay_ip = "198.18.0.1/24"
"#,
            most + 1,
        );
        assert!(cloud.is_ok(), "{:?}", cloud.err());
    }

    #[test]
    fn expands_variables_and_connects_both_ways() {
        let v = parse(TWO_PORTS).unwrap();
        assert_eq!(v.workers, vec![1]);
        assert_eq!(v.eal.main_core, 0);
        assert_eq!(v.cross_connects, vec![(0, 1), (1, 0)]);
        assert_eq!(
            v.ports[1].backend,
            Backend::Null {
                rx: false,
                packet_size: None
            }
        );
    }

    #[test]
    fn dpdk_devices_are_counted_but_af_packet_ports_are_not() {
        let ports = |n: usize, backend: &str| -> String {
            (0..n)
                .map(|i| {
                    format!("[[port]]\nname = \"p{i}\"\nbackend = \"{backend}\"\ninterface = \"veth{i}\"\n")
                })
                .collect()
        };
        let head = "[dataplane]\nworkers = [1]\n";
        let v = parse(&format!("{head}{}", ports(100, "af-packet"))).unwrap();
        assert_eq!(v.ports.len(), 100);
        assert!(parse(&format!(
            "{head}{}",
            ports(dataplane::MAX_DPDK_PORTS, "tap")
        ))
        .is_ok());
        let e = err(&format!(
            "{head}{}",
            ports(dataplane::MAX_DPDK_PORTS + 1, "tap")
        ));
        assert!(e.contains("`port`") && e.contains("33 DPDK devices"), "{e}");
        let e = err(&format!(
            "{head}{}",
            ports(dataplane::MAX_PORTS + 1, "af-packet")
        ));
        assert!(e.contains("at most 256 ports"), "{e}");
    }

    #[test]
    fn list_variables_expand_to_array_items() {
        let text =
            expand_variables("macs = [${M:list}]\n", |_| Some("a  b\tc".to_owned())).unwrap();
        assert_eq!(text, "macs = [\"a\", \"b\", \"c\"]\n");
    }

    #[test]
    fn unset_variable_is_named() {
        let e = err("[dataplane]\nworkers = [${NOPE}]\n");
        assert_eq!(e, "config line 2: environment variable `NOPE` is not set");
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let e = err(&TWO_PORTS.replace("backend = \"ring\"", "backend = \"ring\"\ncolour = 1"));
        assert!(e.starts_with("config field `port[0].colour`"), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_path() {
        let e = err(&TWO_PORTS.replace(
            "workers = [${CORE}]",
            "workers = [${CORE}]\nmemory_mb = \"lots\"",
        ));
        assert!(e.starts_with("config field `dataplane.memory_mb`"), "{e}");
    }

    #[test]
    fn a_worker_naps_at_most_ten_milliseconds_or_never() {
        let nap = |us: u32| {
            parse(&TWO_PORTS.replace(
                "workers = [${CORE}]",
                &format!("workers = [${{CORE}}]\nmax_idle_sleep_us = {us}"),
            ))
        };
        assert_eq!(nap(0).unwrap().max_idle_sleep, std::time::Duration::ZERO);
        assert_eq!(
            nap(10_000).unwrap().max_idle_sleep,
            std::time::Duration::from_millis(10)
        );
        let e = nap(10_001).unwrap_err().to_string();
        assert!(
            e.starts_with("config field `dataplane.max_idle_sleep_us`"),
            "{e}"
        );
    }

    #[test]
    fn a_flow_cache_is_a_power_of_two_in_range() {
        let cache = |entries: &str| {
            parse(&TWO_PORTS.replace(
                "workers = [${CORE}]",
                &format!("workers = [${{CORE}}]\nflow_cache = {entries}"),
            ))
        };
        assert_eq!(cache("256").unwrap().flow_cache, 256);
        assert_eq!(cache("65536").unwrap().flow_cache, 65536);
        for bad in ["0", "128", "5000", "131072", "-1"] {
            let e = cache(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("config field `dataplane.flow_cache`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_backend_is_refused() {
        let e = err(&TWO_PORTS.replace("\"ring\"", "\"carrier-pigeon\""));
        assert!(e.starts_with("config field `port[0].backend`"), "{e}");
    }

    #[test]
    fn option_of_another_backend_is_refused() {
        let e = err(&TWO_PORTS.replace(
            "backend = \"ring\"",
            "backend = \"ring\"\ninterface = \"eth0\"",
        ));
        assert!(
            e.starts_with("config field `port[0].interface`: not an option of backend `ring`"),
            "{e}"
        );
    }

    #[test]
    fn tso_is_for_devices_that_segment() {
        let e = err(&TWO_PORTS.replace("backend = \"ring\"", "backend = \"ring\"\ntso = true"));
        assert!(e.starts_with("config field `port[0].tso`"), "{e}");
        let tap = TWO_PORTS.replace(
            "backend = \"ring\"",
            "backend = \"tap\"\ninterface = \"tso0\"\ntso = true",
        );
        assert!(parse(&tap).unwrap().ports[0].tso);
        assert!(!parse(TWO_PORTS).unwrap().ports[0].tso, "off unless asked");
    }

    #[test]
    fn missing_interface_is_refused() {
        let e = err(&TWO_PORTS.replace("backend = \"ring\"", "backend = \"af-packet\""));
        assert!(e.starts_with("config field `port[0].interface`"), "{e}");
    }

    #[test]
    fn dangling_and_self_connections_are_refused() {
        let e = err(&TWO_PORTS.replace("ports = [\"a\", \"b\"]", "ports = [\"a\", \"c\"]"));
        assert_eq!(
            e,
            "config field `cross_connect[0].ports[1]`: no port is named `c`"
        );
        let e = err(&TWO_PORTS.replace("ports = [\"a\", \"b\"]", "ports = [\"a\", \"a\"]"));
        assert!(e.contains("cannot be connected to itself"), "{e}");
    }

    #[test]
    fn a_port_sends_to_one_peer_only() {
        let text = format!("{TWO_PORTS}\n[[port]]\nname = \"c\"\nbackend = \"ring\"\n\n[[cross_connect]]\nports = [\"a\", \"c\"]\n");
        let e = err(&text);
        assert!(e.contains("port `a` already sends to another port"), "{e}");
    }

    #[test]
    fn duplicate_names_and_shared_interfaces_are_refused() {
        let e = err(&TWO_PORTS.replace("name = \"b\"", "name = \"a\""));
        assert!(e.starts_with("config field `port[1].name`"), "{e}");
        let text = "[[port]]\nname = \"a\"\nbackend = \"af-packet\"\ninterface = \"veth0\"\n[[port]]\nname = \"b\"\nbackend = \"af-xdp\"\ninterface = \"veth0\"\n";
        let e = err(text);
        assert!(
            e.contains("interface `veth0` is used by another port"),
            "{e}"
        );
    }

    #[test]
    fn worker_cpu_must_exist() {
        let e = err(&TWO_PORTS.replace("workers = [${CORE}]", "workers = [4096]"));
        assert!(
            e.starts_with("config field `dataplane.workers[0]`: CPU 4096 does not exist"),
            "{e}"
        );
    }

    #[test]
    fn bond_members_are_backends_without_names() {
        let text = r#"
[[port]]
name = "uplink"
backend = "bond"
mode = "balance"
members = [ { backend = "vf", pci = "0000:3b:02.0" }, { backend = "vf", pci = "0000:5e:02.1" } ]
"#;
        let v = parse(text).unwrap();
        assert_eq!(v.eal.pci_allow, vec!["0000:3b:02.0", "0000:5e:02.1"]);
        let e = err(&text.replace("pci = \"0000:5e:02.1\"", "pci = \"5e:02.1\""));
        assert!(
            e.starts_with("config field `port[0].members[1].pci`"),
            "{e}"
        );
        let e = err(&text.replace("mode = \"balance\"", "mode = \"round-robin\""));
        assert!(e.starts_with("config field `port[0].mode`"), "{e}");
    }

    #[test]
    fn vhost_path_must_be_absolute() {
        let text = "[[port]]\nname = \"v\"\nbackend = \"vhost-user\"\npath = \"rel.sock\"\n";
        assert!(err(text).starts_with("config field `port[0].path`"));
    }

    const TENANTS: &str = r#"
[switch]
design = "dedicated"
host = "a"

[[host]]
name = "a"
underlay_ip = "192.168.77.1/24"

[[host]]
name = "b"
underlay_ip = "192.168.77.2/24"
mac = "02:00:00:00:0c:02"

[[tenant]]
name = "red"
id = 100
vlan = 100
hosts = ["b"]

[[tenant]]
name = "blue"
id = 200
vlan = 200

[[port]]
name = "c1"
backend = "ring"
role = "access"
tenant = "red"

[[port]]
name = "trunk"
backend = "ring"
role = "trunk"
tenants = ["red", "blue"]

[[port]]
name = "up"
backend = "ring"
role = "uplink"

[[endpoint]]
tenant = "red"
mac = "02:00:00:00:0a:01"
port = "c1"

[[endpoint]]
tenant = "blue"
macs = ["02:00:00:00:0b:01", "02:00:00:00:0b:02"]
host = "b"
"#;

    #[test]
    fn tenants_hosts_and_roles_validate() {
        use switching::{EndpointAt, RolePlan};
        let v = parse(TENANTS).unwrap();
        let sw = &v.switching;
        assert_eq!(sw.this_host, Some(0));
        assert_eq!(sw.hosts[1].mac, Some([2, 0, 0, 0, 0x0c, 2]));
        assert_eq!(sw.hosts[0].prefix, 24);
        assert_eq!(sw.roles[1], RolePlan::Trunk(vec![0, 1]));
        assert_eq!(sw.endpoints.len(), 3);
        assert_eq!(sw.endpoints[1].at, EndpointAt::Host(1));
        assert_eq!(
            sw.tenants[1].hosts,
            vec![1],
            "a remote endpoint puts its tenant on that host"
        );
    }

    #[test]
    fn switching_mistakes_name_their_field() {
        let cases = [
            (
                "design = \"dedicated\"",
                "design = \"mesh\"",
                "`switch.design`",
            ),
            (
                "vlan = 200",
                "vlan = 100",
                "`tenant[1].vlan`: VLAN 100 is used",
            ),
            (
                "vlan = 200",
                "vlan = 4095",
                "`tenant[1].vlan`: must be between 1 and 4094",
            ),
            ("id = 200", "id = 100", "`tenant[1].id`"),
            (
                "tenant = \"red\"\n\n[[port]]",
                "tenant = \"green\"\n\n[[port]]",
                "`port[0].tenant`: no tenant is named `green`",
            ),
            (
                "hosts = [\"b\"]",
                "hosts = [\"a\"]",
                "`tenant[0].hosts[0]`: list other hosts",
            ),
            (
                "hosts = [\"b\"]",
                "hosts = [\"z\"]",
                "`tenant[0].hosts[0]`: no host is named `z`",
            ),
            ("host = \"a\"", "host = \"q\"", "`switch.host`"),
            (
                "underlay_ip = \"192.168.77.2/24\"",
                "underlay_ip = \"192.168.77.1/24\"",
                "`host[1].underlay_ip`",
            ),
            (
                "underlay_ip = \"192.168.77.2/24\"",
                "underlay_ip = \"300.1.1.1\"",
                "`host[1].underlay_ip`",
            ),
            (
                "mac = \"02:00:00:00:0a:01\"",
                "mac = \"01:00:5e:00:00:01\"",
                "`endpoint[0].mac`: `01:00:5e:00:00:01` is not a unicast MAC",
            ),
            (
                "mac = \"02:00:00:00:0a:01\"\nport = \"c1\"",
                "mac = \"02:00:00:00:0a:01\"\nport = \"up\"",
                "`endpoint[0].port`: port `up` does not carry",
            ),
            (
                "tenants = [\"red\", \"blue\"]",
                "tenant = \"red\"",
                "`port[1].tenant`: not an option of this port's role",
            ),
        ];
        for (from, to, want) in cases {
            assert!(TENANTS.contains(from), "fixture lacks {from}");
            let e = err(&TENANTS.replacen(from, to, 1));
            assert!(e.contains(want), "{to}: {e}");
        }
    }

    #[test]
    fn shared_design_needs_vlans_and_one_egress() {
        let shared = TENANTS.replace("design = \"dedicated\"", "design = \"shared\"");
        let e = err(&shared);
        assert!(e.contains("exactly one egress host"), "{e}");
        let one = shared.replacen(
            "underlay_ip = \"192.168.77.1/24\"",
            "underlay_ip = \"192.168.77.1/24\"\negress = true",
            1,
        );
        assert!(parse(&one).unwrap().switching.is_hub());
        let e = err(&one.replace("vlan = 200\n", ""));
        assert!(
            e.contains("`tenant[1].vlan`: the shared design needs a VLAN"),
            "{e}"
        );
        // The dedicated design may name one egress host (the central gateway host).
        let central = TENANTS.replacen(
            "underlay_ip = \"192.168.77.1/24\"",
            "underlay_ip = \"192.168.77.1/24\"\negress = true",
            1,
        );
        assert!(parse(&central).is_ok());
        let e = err(&central.replacen(
            "underlay_ip = \"192.168.77.2/24\"",
            "underlay_ip = \"192.168.77.2/24\"\negress = true",
            1,
        ));
        assert!(e.contains("`host[1].egress`: at most one"), "{e}");
    }
}
