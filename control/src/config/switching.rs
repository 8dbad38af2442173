//! The switching part of the config: design, hosts, tenants, endpoints and port roles.
//! Checked as strictly as the rest: every reference must resolve, every id, VLAN, key,
//! name and address must be unique where the design needs it.

use std::fmt::Display;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use dataplane::packet::{Ipv4Cidr, Mac};
use dataplane::table::Design;
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError, Field, List, PortSpec};

/// `[switch]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchSection {
    /// `shared` (VLAN per tenant, star of tunnels to the egress host) or `dedicated`
    /// (GRE key per tenant, tunnels between hosts sharing a tenant).
    pub design: String,
    /// This host's name in `[[host]]`.
    pub host: Option<String>,
    /// Seconds a learned MAC lives without being seen.
    pub fdb_aging_s: u32,
    /// Learned MACs a tenant may have unless it says otherwise.
    pub max_macs_per_tenant: u32,
    /// Outer IPv4 TTL of tunnel packets.
    pub tunnel_ttl: u8,
    /// Outer IPv4 DF bit of tunnel packets.
    pub tunnel_dont_fragment: bool,
    /// Next hop for peers outside this host's underlay prefix, and the way out of the
    /// tenants' gateways.
    pub underlay_gateway: Option<Ipv4Addr>,
    /// Its MAC, when it is static (otherwise resolved by ARP).
    pub underlay_gateway_mac: Option<String>,
}

impl Default for SwitchSection {
    fn default() -> Self {
        Self {
            design: "dedicated".to_owned(),
            host: None,
            fdb_aging_s: 300,
            max_macs_per_tenant: 4096,
            tunnel_ttl: 64,
            tunnel_dont_fragment: true,
            underlay_gateway: None,
            underlay_gateway_mac: None,
        }
    }
}

/// `[[host]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Unique name.
    pub name: String,
    /// Underlay address, optionally with its prefix length (`192.168.50.1/24`).
    pub underlay_ip: String,
    /// The host's underlay MAC, if known (otherwise resolved by ARP).
    pub mac: Option<String>,
    /// The shared design's egress host (exactly one).
    #[serde(default)]
    pub egress: bool,
}

/// `[[tenant]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    /// Unique name.
    pub name: String,
    /// Unique id; the GRE key in the dedicated design.
    pub id: u32,
    /// VLAN on trunks (and on tunnels in the shared design, where it is required).
    pub vlan: Option<u16>,
    /// Cap on learned MACs.
    pub max_macs: Option<u32>,
    /// Other hosts where the tenant lives (tunnels in the dedicated design).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The gateway's address on each subnet, as `10.1.0.1/24`. A tenant with subnets
    /// has a router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Where the gateway runs: a host's name, or `central` (the egress host). Default:
    /// `central` when there is an egress host, else this host when there are no hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_host: Option<String>,
    /// Source address toward the outside (default: the gateway host's underlay IP, when
    /// `switch.underlay_gateway` names the way out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_ip: Option<Ipv4Addr>,
    /// The router's MAC (default: derived from the id, `02:7e:` and the id's 4 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_mac: Option<String>,
    /// Tenants this one consents to route with; routing happens only when both list
    /// each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// SNAT connections the tenant may hold per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// `[[endpoint]]`: a container's MAC, installed instead of learned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Its tenant.
    pub tenant: String,
    /// Its MAC.
    pub mac: Option<String>,
    /// Several endpoints at the same place, one per MAC.
    pub macs: Option<Vec<String>>,
    /// The local port it is behind.
    pub port: Option<String>,
    /// The other host it is on.
    pub host: Option<String>,
    /// Its IPv4 address (with one `mac`): the router's neighbour entry, no ARP needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// An address of a tenant's subnet claimed for a container (cluster-wide IPAM: one
/// record per address, so two hosts never hand out the same one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddressSpec {
    /// Its tenant.
    pub tenant: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// Who holds it, in the claimant's words (`cni:<network>:<container>:<ifname>`).
    pub owner: String,
    /// The other host that claimed it (none: this host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Port roles in the user's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleName {
    /// One tenant, untagged.
    Access,
    /// Tagged, VLAN picks the tenant.
    Trunk,
    /// The underlay.
    Uplink,
}

/// A validated host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// Name.
    pub name: String,
    /// Underlay IP.
    pub ip: Ipv4Addr,
    /// Underlay prefix length (32: every peer is reached directly).
    pub prefix: u8,
    /// Static underlay MAC.
    pub mac: Option<Mac>,
    /// Egress host of the shared design.
    pub egress: bool,
}

/// A validated tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlan {
    /// Name.
    pub name: String,
    /// Id (GRE key).
    pub id: u32,
    /// VLAN.
    pub vlan: Option<u16>,
    /// Learned-MAC cap.
    pub max_macs: u32,
    /// Other hosts it lives on (indices into the host list), from `hosts` and from its
    /// remote endpoints.
    pub hosts: Vec<usize>,
}

/// Where an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointAt {
    /// Behind a local port (index into the port list).
    Port(usize),
    /// On another host (index into the host list).
    Host(usize),
}

/// A validated endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    /// Tenant index.
    pub tenant: usize,
    /// MAC.
    pub mac: Mac,
    /// Location.
    pub at: EndpointAt,
    /// Its IPv4 address, if known.
    pub ip: Option<Ipv4Addr>,
}

/// A validated port role.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RolePlan {
    /// Cross-connected (or unused).
    #[default]
    None,
    /// Access port of a tenant, with optional port security.
    Access {
        /// Tenant index.
        tenant: usize,
        /// Allowed source MACs (empty: any).
        allowed_macs: Vec<Mac>,
        /// Allowed source IPs (empty: any).
        allowed_ips: Vec<Ipv4Addr>,
    },
    /// Trunk carrying tenants (indices).
    Trunk(Vec<usize>),
    /// Uplink, with a MAC to use instead of the device's.
    Uplink(Option<Mac>),
}

/// Everything validated about switching.
#[derive(Debug, Clone)]
pub struct SwitchPlan {
    /// Design.
    pub design: Design,
    /// This host (index into `hosts`), if hosts are configured.
    pub this_host: Option<usize>,
    /// Hosts.
    pub hosts: Vec<HostPlan>,
    /// Tenants (shared with the plans a change derives from this one).
    pub tenants: List<Arc<TenantPlan>>,
    /// Endpoints.
    pub endpoints: List<EndpointPlan>,
    /// Role of each port (by port index).
    pub roles: Vec<RolePlan>,
    /// Learned MAC lifetime.
    pub fdb_aging: Duration,
    /// Tunnel TTL.
    pub tunnel_ttl: u8,
    /// Tunnel DF bit.
    pub tunnel_dont_fragment: bool,
    /// Underlay gateway.
    pub underlay_gateway: Option<Ipv4Addr>,
    /// Its static MAC.
    pub underlay_gateway_mac: Option<Mac>,
}

impl SwitchPlan {
    /// Whether this host is the shared design's hub.
    pub fn is_hub(&self) -> bool {
        self.design == Design::Shared && self.this_host.is_some_and(|h| self.hosts[h].egress)
    }

    /// Index of the egress host.
    pub fn egress_host(&self) -> Option<usize> {
        self.hosts.iter().position(|h| h.egress)
    }
}

/// Parses `02:00:00:00:0a:01`, refused with `field`.
pub fn parse_mac(field: impl Display, text: &str) -> Result<Mac, ConfigError> {
    dataplane::packet::parse_mac(text).map_err(|e| invalid(field, e.to_string()))
}

fn parse_unicast_mac(field: impl Display + Copy, text: &str) -> Result<Mac, ConfigError> {
    let mac = parse_mac(field, text)?;
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return Err(invalid(field, format!("`{text}` is not a unicast MAC")));
    }
    Ok(mac)
}

/// Validates the switching sections against the (already validated) port names.
pub(super) fn validate(
    section: &SwitchSection,
    hosts: &[HostSpec],
    tenants: &Tenants,
    endpoints: &List<EndpointSpec>,
    ports: &[PortSpec],
    port_names: &[String],
    cross_connected: &HashSet<usize>,
) -> Result<SwitchPlan, ConfigError> {
    let design = check_switch_section(section)?;
    let host_plans = validate_hosts(hosts)?;
    let this_host = find_this_host(section, &host_plans)?;
    check_egress(design, &host_plans)?;
    let mut tenant_plans: List<Arc<TenantPlan>> =
        validate_tenants(section, design, tenants.specs, &host_plans, this_host)?
            .into_iter()
            .map(Arc::new)
            .collect();
    let index = &tenants.index;
    let roles = validate_roles(ports, cross_connected, &tenant_plans, index, this_host)?;
    let places = Places {
        port_names,
        roles: &roles,
        hosts: &host_plans,
        this_host,
    };
    let endpoint_plans = validate_endpoints(endpoints.iter(), &places, index, &mut tenant_plans)?;
    let underlay_gateway_mac = underlay_gateway_mac(section)?;
    Ok(SwitchPlan {
        design,
        this_host,
        hosts: host_plans,
        tenants: tenant_plans,
        endpoints: endpoint_plans.into_iter().collect(),
        roles,
        fdb_aging: Duration::from_secs(u64::from(section.fdb_aging_s)),
        tunnel_ttl: section.tunnel_ttl,
        tunnel_dont_fragment: section.tunnel_dont_fragment,
        underlay_gateway: section.underlay_gateway,
        underlay_gateway_mac,
    })
}

/// The design, tunnel TTL and FDB aging of `[switch]`.
fn check_switch_section(section: &SwitchSection) -> Result<Design, ConfigError> {
    let design = match section.design.as_str() {
        "dedicated" => Design::Dedicated,
        "shared" => Design::Shared,
        other => {
            return Err(invalid(
                "switch.design",
                format!("`{other}` is not a design (shared or dedicated)"),
            ))
        }
    };
    if !(1..=64).contains(&section.tunnel_ttl) {
        return Err(invalid("switch.tunnel_ttl", "must be between 1 and 64"));
    }
    if section.fdb_aging_s < 10 {
        return Err(invalid("switch.fdb_aging_s", "at least 10 seconds"));
    }
    Ok(design)
}

fn validate_hosts(hosts: &[HostSpec]) -> Result<Vec<HostPlan>, ConfigError> {
    let mut host_plans = Vec::with_capacity(hosts.len());
    let (mut names, mut ips) = (HashSet::new(), HashSet::new());
    for (i, h) in hosts.iter().enumerate() {
        let field = format!("host[{i}]");
        check_name(format_args!("{field}.name"), &h.name)?;
        if !names.insert(h.name.clone()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("host `{}` is defined twice", h.name),
            ));
        }
        let (ip, prefix) = parse_underlay(&field, h)?;
        if !ips.insert(ip) {
            return Err(invalid(
                format!("{field}.underlay_ip"),
                format!("{ip} is used by another host"),
            ));
        }
        let mac = match &h.mac {
            Some(text) => Some(parse_unicast_mac(&format!("{field}.mac"), text)?),
            None => None,
        };
        host_plans.push(HostPlan {
            name: h.name.clone(),
            ip,
            prefix,
            mac,
            egress: h.egress,
        });
    }
    Ok(host_plans)
}

/// A host's unicast underlay address and prefix length (32 when not given).
fn parse_underlay(field: &str, h: &HostSpec) -> Result<(Ipv4Addr, u8), ConfigError> {
    let underlay = if h.underlay_ip.contains('/') {
        h.underlay_ip.parse::<Ipv4Cidr>().ok()
    } else {
        h.underlay_ip
            .parse()
            .ok()
            .map(|ip| Ipv4Cidr { ip, prefix: 32 })
    };
    let Some(Ipv4Cidr { ip, prefix }) = underlay.filter(|u| u.prefix >= 1) else {
        return Err(invalid(
            format!("{field}.underlay_ip"),
            format!(
                "`{}` is not an IPv4 address (optionally /prefix)",
                h.underlay_ip
            ),
        ));
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(invalid(
            format!("{field}.underlay_ip"),
            "must be a unicast address",
        ));
    }
    Ok((ip, prefix))
}

fn host_index(hosts: &[HostPlan], field: impl Display, name: &str) -> Result<usize, ConfigError> {
    hosts
        .iter()
        .position(|h| h.name == name)
        .ok_or_else(|| invalid(field, format!("no host is named `{name}`")))
}

/// The tenants' positions by name.
pub(super) type TenantIndex<'a> = HashMap<&'a str, usize>;

/// The tenants as validation takes them: in order, and by name.
pub(super) struct Tenants<'a> {
    pub(super) specs: &'a List<Arc<TenantSpec>>,
    /// Positions by name (the first of a name given twice: validation refuses the
    /// second). Built once: every reference to a tenant by name is looked up here.
    pub(super) index: TenantIndex<'a>,
}

impl<'a> Tenants<'a> {
    pub(super) fn of(specs: &'a List<Arc<TenantSpec>>) -> Self {
        let mut index = HashMap::with_capacity(specs.len());
        for (i, t) in specs.iter().enumerate() {
            index.entry(t.name.as_str()).or_insert(i);
        }
        Self { specs, index }
    }
}

fn tenant_index(
    index: &TenantIndex,
    field: impl Display,
    name: &str,
) -> Result<usize, ConfigError> {
    index
        .get(name)
        .copied()
        .ok_or_else(|| invalid(field, format!("no tenant is named `{name}`")))
}

/// `switch.host` among the hosts; required when there are hosts.
fn find_this_host(
    section: &SwitchSection,
    hosts: &[HostPlan],
) -> Result<Option<usize>, ConfigError> {
    Ok(match &section.host {
        Some(name) => Some(host_index(hosts, "switch.host", name)?),
        None if !hosts.is_empty() => {
            return Err(invalid(
                "switch.host",
                "name this host among the [[host]] entries",
            ))
        }
        None => None,
    })
}

fn check_egress(design: Design, hosts: &[HostPlan]) -> Result<(), ConfigError> {
    let egress: Vec<usize> = hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.egress)
        .map(|(i, _)| i)
        .collect();
    if design == Design::Shared && !hosts.is_empty() && egress.len() != 1 {
        return Err(invalid(
            "host",
            format!(
                "the shared design needs exactly one egress host, {} are marked",
                egress.len()
            ),
        ));
    }
    if design == Design::Dedicated && egress.len() > 1 {
        return Err(invalid(
            format!("host[{}].egress", egress[1]),
            "at most one egress host (the central gateway host)",
        ));
    }
    Ok(())
}

/// Where tenants' names, ids and VLANs are taken: by a whole validation as it goes
/// ([`TenantKeys`]), or kept between changes ([`crate::config::grow::Keys`]).
pub(crate) trait TenantKeyring<'a> {
    /// Takes `name`; false when it is taken.
    fn take_name(&mut self, name: &'a str) -> bool;
    /// Takes `id`; false when it is taken.
    fn take_id(&mut self, id: u32) -> bool;
    /// Takes `vlan`; false when it is taken.
    fn take_vlan(&mut self, vlan: u16) -> bool;
}

/// Names, ids and VLANs taken by the tenants checked so far.
struct TenantKeys<'a> {
    names: HashSet<&'a str>,
    ids: HashSet<u32>,
    vlans: HashSet<u16>,
}

impl<'a> TenantKeyring<'a> for TenantKeys<'a> {
    fn take_name(&mut self, name: &'a str) -> bool {
        self.names.insert(name)
    }
    fn take_id(&mut self, id: u32) -> bool {
        self.ids.insert(id)
    }
    fn take_vlan(&mut self, vlan: u16) -> bool {
        self.vlans.insert(vlan)
    }
}

fn validate_tenants(
    section: &SwitchSection,
    design: Design,
    tenants: &List<Arc<TenantSpec>>,
    hosts: &[HostPlan],
    this_host: Option<usize>,
) -> Result<Vec<TenantPlan>, ConfigError> {
    let mut tenant_plans: Vec<TenantPlan> = Vec::with_capacity(tenants.len());
    let mut keys = TenantKeys {
        names: HashSet::with_capacity(tenants.len()),
        ids: HashSet::with_capacity(tenants.len()),
        vlans: HashSet::new(),
    };
    for (i, t) in tenants.iter().enumerate() {
        let place = TenantPlace {
            section,
            design,
            hosts,
            this_host,
        };
        tenant_plans.push(tenant_plan(&place, i, t, &mut keys)?);
    }
    Ok(tenant_plans)
}

/// What a tenant is checked against besides the other tenants.
pub(crate) struct TenantPlace<'s> {
    pub(crate) section: &'s SwitchSection,
    pub(crate) design: Design,
    pub(crate) hosts: &'s [HostPlan],
    pub(crate) this_host: Option<usize>,
}

/// Tenant `t`, the `i`th: checked, its keys taken from `keys`.
pub(crate) fn tenant_plan<'a>(
    place: &TenantPlace<'_>,
    i: usize,
    t: &'a TenantSpec,
    keys: &mut impl TenantKeyring<'a>,
) -> Result<TenantPlan, ConfigError> {
    let field = Field::Item("tenant", i);
    check_tenant_keys(&field, t, place.design, keys)?;
    let max_macs = t.max_macs.unwrap_or(place.section.max_macs_per_tenant);
    if !(1..=1_000_000).contains(&max_macs) {
        return Err(invalid(
            format!("{field}.max_macs"),
            "must be between 1 and 1000000",
        ));
    }
    Ok(TenantPlan {
        name: t.name.clone(),
        id: t.id,
        vlan: t.vlan,
        max_macs,
        hosts: tenant_hosts(&field, t, place.hosts, place.this_host)?,
    })
}

/// A host's tables have a slot per tenant, one value meaning none. A cluster's model
/// holds the cloud's tenants, and each host's tables only those it hosts (a host out of
/// slots leaves the rest out of its tables, and says so): checked for one host alone.
pub(crate) fn check_tenant_count(tenants: usize) -> Result<(), ConfigError> {
    if tenants > dataplane::table::NO_TENANT as usize {
        return Err(invalid(
            "tenant",
            format!("at most {} tenants per host", dataplane::table::NO_TENANT),
        ));
    }
    Ok(())
}

/// The tenant's name, id and VLAN: well-formed and not taken (`keys` takes them).
fn check_tenant_keys<'a>(
    field: &Field,
    t: &'a TenantSpec,
    design: Design,
    keys: &mut impl TenantKeyring<'a>,
) -> Result<(), ConfigError> {
    check_name(field.member("name"), &t.name)?;
    if !keys.take_name(&t.name) {
        return Err(invalid(
            format!("{field}.name"),
            format!("tenant `{}` is defined twice", t.name),
        ));
    }
    if !keys.take_id(t.id) {
        return Err(invalid(
            format!("{field}.id"),
            format!("id {} is used by another tenant", t.id),
        ));
    }
    match t.vlan {
        Some(vlan) if !(1..=4094).contains(&vlan) => {
            return Err(invalid(
                format!("{field}.vlan"),
                "must be between 1 and 4094",
            ))
        }
        Some(vlan) if !keys.take_vlan(vlan) => {
            return Err(invalid(
                format!("{field}.vlan"),
                format!("VLAN {vlan} is used by another tenant"),
            ))
        }
        None if design == Design::Shared => {
            return Err(invalid(
                format!("{field}.vlan"),
                "the shared design needs a VLAN per tenant",
            ))
        }
        _ => {}
    }
    Ok(())
}

/// The other hosts the tenant lists, by index, each once.
fn tenant_hosts(
    field: &Field,
    t: &TenantSpec,
    hosts: &[HostPlan],
    this_host: Option<usize>,
) -> Result<Vec<usize>, ConfigError> {
    let mut on = Vec::new();
    for (j, name) in t.hosts.iter().enumerate() {
        let h = host_index(hosts, field.entry("hosts", j), name)?;
        if Some(h) == this_host {
            return Err(invalid(
                field.entry("hosts", j),
                "list other hosts, not this one",
            ));
        }
        if !on.contains(&h) {
            on.push(h);
        }
    }
    Ok(on)
}

pub(super) fn validate_roles(
    ports: &[PortSpec],
    cross_connected: &HashSet<usize>,
    tenants: &List<Arc<TenantPlan>>,
    index: &TenantIndex,
    this_host: Option<usize>,
) -> Result<Vec<RolePlan>, ConfigError> {
    let mut roles = Vec::with_capacity(ports.len());
    let mut uplinks = 0;
    for (i, spec) in ports.iter().enumerate() {
        let field = format!("port[{i}]");
        let role = match spec.role {
            None => {
                if let Some((_, name)) = role_options(spec).into_iter().find(|(set, _)| *set) {
                    return Err(invalid(format!("{field}.{name}"), "needs a role"));
                }
                RolePlan::None
            }
            Some(role) if cross_connected.contains(&i) => {
                let _ = role;
                return Err(invalid(
                    format!("{field}.role"),
                    "a cross-connected port takes no role",
                ));
            }
            Some(RoleName::Access) => access_role(&field, spec, index)?,
            Some(RoleName::Trunk) => trunk_role(&field, spec, tenants, index)?,
            Some(RoleName::Uplink) => {
                only(&field, spec, &["mac"])?;
                uplinks += 1;
                uplink_role(&field, spec, uplinks, this_host)?
            }
        };
        roles.push(role);
    }
    Ok(roles)
}

fn access_role(field: &str, spec: &PortSpec, index: &TenantIndex) -> Result<RolePlan, ConfigError> {
    let name = spec
        .tenant
        .as_deref()
        .ok_or_else(|| invalid(format!("{field}.tenant"), "an access port needs a tenant"))?;
    only(field, spec, &["tenant", "allowed_macs", "allowed_ips"])?;
    let tenant = tenant_index(index, format!("{field}.tenant"), name)?;
    let allowed_macs = spec
        .allowed_macs
        .iter()
        .flatten()
        .enumerate()
        .map(|(j, m)| parse_unicast_mac(format_args!("{field}.allowed_macs[{j}]"), m))
        .collect::<Result<_, _>>()?;
    Ok(RolePlan::Access {
        tenant,
        allowed_macs,
        allowed_ips: spec.allowed_ips.clone().unwrap_or_default(),
    })
}

fn trunk_role(
    field: &str,
    spec: &PortSpec,
    tenants: &List<Arc<TenantPlan>>,
    index: &TenantIndex,
) -> Result<RolePlan, ConfigError> {
    only(field, spec, &["tenants"])?;
    let names = spec
        .tenants
        .as_deref()
        .ok_or_else(|| invalid(format!("{field}.tenants"), "a trunk port needs its tenants"))?;
    let mut carried = Vec::new();
    for (j, name) in names.iter().enumerate() {
        let f = format!("{field}.tenants[{j}]");
        let t = tenant_index(index, &f, name)?;
        if tenants[t].vlan.is_none() {
            return Err(invalid(
                f,
                format!("tenant `{name}` has no VLAN to carry on a trunk"),
            ));
        }
        carried.push(t);
    }
    Ok(RolePlan::Trunk(carried))
}

/// The uplink role of a port, the `uplinks`th uplink seen.
fn uplink_role(
    field: &str,
    spec: &PortSpec,
    uplinks: usize,
    this_host: Option<usize>,
) -> Result<RolePlan, ConfigError> {
    if uplinks > 1 {
        return Err(invalid(
            format!("{field}.role"),
            "a host has one uplink (bond VFs for two)",
        ));
    }
    if this_host.is_none() {
        return Err(invalid(
            format!("{field}.role"),
            "an uplink needs [[host]] entries and switch.host",
        ));
    }
    let mac = match &spec.mac {
        Some(text) => Some(parse_unicast_mac(&format!("{field}.mac"), text)?),
        None => None,
    };
    Ok(RolePlan::Uplink(mac))
}

/// Where endpoints can be: the local ports with their roles, and the hosts.
pub(crate) struct Places<'a> {
    pub(crate) port_names: &'a [String],
    pub(crate) roles: &'a [RolePlan],
    pub(crate) hosts: &'a [HostPlan],
    pub(crate) this_host: Option<usize>,
}

/// The endpoints, one per MAC; a remote endpoint adds its host to its tenant's.
pub(crate) fn validate_endpoints<'e>(
    endpoints: impl ExactSizeIterator<Item = &'e EndpointSpec>,
    places: &Places,
    index: &TenantIndex,
    tenant_plans: &mut List<Arc<TenantPlan>>,
) -> Result<Vec<EndpointPlan>, ConfigError> {
    let mut endpoint_plans = Vec::with_capacity(endpoints.len());
    let mut seen = HashSet::with_capacity(endpoints.len());
    let mut addresses = HashSet::new();
    for (i, e) in endpoints.enumerate() {
        let field = Field::Item("endpoint", i);
        let tenant = tenant_index(index, field.member("tenant"), &e.tenant)?;
        let macs = endpoint_macs(&field, e)?;
        let at = locate_endpoint(&field, e, tenant, places, tenant_plans)?;
        if e.ip.is_some() && e.macs.is_some() {
            return Err(invalid(
                field.member("ip"),
                "an address belongs to one MAC: give mac, not macs",
            ));
        }
        if let Some(ip) = e.ip {
            if !addresses.insert((tenant, ip)) {
                return Err(invalid(
                    field.member("ip"),
                    format!("{ip} is already the address of another endpoint of the tenant"),
                ));
            }
        }
        for (j, text) in macs.iter().enumerate() {
            let mfield = match e.macs {
                Some(_) => field.entry("macs", j),
                None => field.member("mac"),
            };
            let mac = parse_unicast_mac(mfield, text)?;
            if !seen.insert((tenant, mac)) {
                return Err(invalid(
                    mfield,
                    "this MAC is already an endpoint of the tenant",
                ));
            }
            endpoint_plans.push(EndpointPlan {
                tenant,
                mac,
                at,
                ip: e.ip,
            });
        }
    }
    Ok(endpoint_plans)
}

/// The endpoint's MACs: `mac`, or the `macs` list.
fn endpoint_macs<'e>(field: &Field, e: &'e EndpointSpec) -> Result<&'e [String], ConfigError> {
    match (&e.mac, &e.macs) {
        (Some(mac), None) => Ok(std::slice::from_ref(mac)),
        (None, Some(macs)) if !macs.is_empty() => Ok(macs),
        _ => Err(invalid(
            field.member("mac"),
            "give mac, or a non-empty macs list",
        )),
    }
}

/// Behind a local port that carries the tenant, or on another host.
fn locate_endpoint(
    field: &Field,
    e: &EndpointSpec,
    tenant: usize,
    places: &Places,
    tenant_plans: &mut List<Arc<TenantPlan>>,
) -> Result<EndpointAt, ConfigError> {
    Ok(match (&e.port, &e.host) {
        (Some(port), None) => {
            let p = places
                .port_names
                .iter()
                .position(|n| n == port)
                .ok_or_else(|| {
                    invalid(
                        format!("{field}.port"),
                        format!("no port is named `{port}`"),
                    )
                })?;
            let fits = match &places.roles[p] {
                RolePlan::Access { tenant: t, .. } => *t == tenant,
                RolePlan::Trunk(carried) => carried.contains(&tenant),
                _ => false,
            };
            if !fits {
                return Err(invalid(
                    format!("{field}.port"),
                    format!("port `{port}` does not carry tenant `{}`", e.tenant),
                ));
            }
            EndpointAt::Port(p)
        }
        (None, Some(host)) => {
            let h = host_index(places.hosts, field.member("host"), host)?;
            if Some(h) == places.this_host {
                return Err(invalid(
                    format!("{field}.host"),
                    "a local endpoint names its port instead",
                ));
            }
            if !tenant_plans[tenant].hosts.contains(&h) {
                Arc::make_mut(&mut tenant_plans[tenant]).hosts.push(h);
            }
            EndpointAt::Host(h)
        }
        _ => {
            return Err(invalid(
                format!("{field}.port"),
                "give either port (local) or host (remote)",
            ))
        }
    })
}

fn underlay_gateway_mac(section: &SwitchSection) -> Result<Option<Mac>, ConfigError> {
    Ok(
        match (&section.underlay_gateway_mac, section.underlay_gateway) {
            (Some(_), None) => {
                return Err(invalid(
                    "switch.underlay_gateway_mac",
                    "needs switch.underlay_gateway",
                ))
            }
            (Some(text), Some(_)) => Some(parse_unicast_mac("switch.underlay_gateway_mac", text)?),
            (None, _) => None,
        },
    )
}

fn check_name(field: impl Display, name: &str) -> Result<(), ConfigError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(invalid(field, "1 to 64 letters, digits, '-', '_' or '.'"));
    }
    Ok(())
}

/// The role options a port spec sets, by field name.
fn role_options(spec: &PortSpec) -> [(bool, &'static str); 5] {
    [
        (spec.tenant.is_some(), "tenant"),
        (spec.tenants.is_some(), "tenants"),
        (spec.allowed_macs.is_some(), "allowed_macs"),
        (spec.allowed_ips.is_some(), "allowed_ips"),
        (spec.mac.is_some(), "mac"),
    ]
}

/// Refuses role options that belong to another role.
fn only(field: &str, spec: &PortSpec, allowed: &[&str]) -> Result<(), ConfigError> {
    match role_options(spec)
        .into_iter()
        .find(|(set, name)| *set && !allowed.contains(name))
    {
        Some((_, name)) => Err(invalid(
            format!("{field}.{name}"),
            "not an option of this port's role",
        )),
        None => Ok(()),
    }
}
