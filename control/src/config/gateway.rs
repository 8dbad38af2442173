//! The gateway part of the config: each tenant's router (subnets, placement, SNAT
//! address, MAC, peers), static routes, published ports, and the SNAT limits. Checked
//! against the already validated switching plan.

use std::fmt::Display;
use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane::packet::address::AddressError;
use dataplane::packet::{mask, Ipv4Cidr, Mac};
use dataplane::table::routing::{router_mac, NatSettings};
use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::switching::{parse_mac, SwitchPlan, SwitchSection, TenantIndex, TenantSpec, Tenants};
use super::{invalid, ConfigError, Field, List};
use crate::placement::{self, HostLoad};

/// `[gateway]`: SNAT limits and timeouts, the same for every tenant.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Lowest SNAT port.
    pub snat_port_min: u16,
    /// Highest SNAT port.
    pub snat_port_max: u16,
    /// Idle seconds of an established TCP connection.
    pub tcp_established_s: u32,
    /// Idle seconds of a TCP connection opening or closing.
    pub tcp_transitory_s: u32,
    /// Idle seconds of a UDP mapping.
    pub udp_s: u32,
    /// Idle seconds of an ICMP echo mapping.
    pub icmp_s: u32,
    /// SNAT connections a tenant may hold per core unless it says otherwise.
    pub max_connections_per_tenant: u32,
    /// SNAT connections each worker has room for.
    pub sessions_per_worker: u32,
}

impl Default for GatewaySection {
    fn default() -> Self {
        let nat = NatSettings::default();
        Self {
            snat_port_min: nat.port_min,
            snat_port_max: nat.port_max,
            tcp_established_s: nat.tcp_established_s,
            tcp_transitory_s: nat.tcp_transitory_s,
            udp_s: nat.udp_s,
            icmp_s: nat.icmp_s,
            max_connections_per_tenant: 10_000,
            sessions_per_worker: 65_536,
        }
    }
}

/// `[[route]]`: a static route of a tenant's router.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The tenant.
    pub tenant: String,
    /// Destination, as `10.9.0.0/16` (`0.0.0.0/0`: instead of the way out).
    pub prefix: String,
    /// Next hop: an address on one of the tenant's subnets, or a peer's.
    pub via: Ipv4Addr,
}

/// `[[publish]]`: a container port published on the gateway host (`docker run -p`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// The container's tenant.
    pub tenant: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port outside clients connect to.
    pub host_port: u16,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's port.
    pub port: u16,
}

/// Where a tenant's gateway runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On this host.
    Here,
    /// On another host (index into the host list).
    Host(usize),
}

/// A validated router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    /// Its MAC.
    pub mac: Mac,
    /// Gateway addresses with their prefix lengths.
    pub interfaces: Vec<(Ipv4Addr, u8)>,
    /// Where it runs.
    pub placement: Placement,
    /// SNAT address, when the tenant reaches the outside.
    pub snat_ip: Option<Ipv4Addr>,
    /// Mutually consenting peers (tenant indices).
    pub peers: Vec<usize>,
    /// SNAT connection cap per core.
    pub max_connections: u32,
}

/// A validated static route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePlan {
    /// Tenant index.
    pub tenant: usize,
    /// Destination network.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Next hop.
    pub via: Ipv4Addr,
    /// The tenant whose subnet holds the next hop (this one, or a peer).
    pub via_tenant: usize,
}

/// A validated published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishPlan {
    /// Tenant index.
    pub tenant: usize,
    /// IP protocol number.
    pub protocol: u8,
    /// Outside address (the tenant's SNAT address).
    pub external_ip: Ipv4Addr,
    /// Outside port.
    pub host_port: u16,
    /// Container address.
    pub ip: Ipv4Addr,
    /// Container port.
    pub port: u16,
}

/// Everything validated about gateways.
#[derive(Debug, Clone, Default)]
pub struct GatewayPlan {
    /// Router of each tenant (by tenant index), if it has one (shared with the plans a
    /// change derives from this one).
    pub routers: List<Option<Arc<RouterPlan>>>,
    /// Static routes.
    pub routes: Vec<RoutePlan>,
    /// Published ports.
    pub published: Vec<PublishPlan>,
    /// SNAT limits.
    pub nat: NatSettings,
    /// SNAT sessions per worker.
    pub sessions_per_worker: u32,
}

impl GatewayPlan {
    /// Whether `tenant`'s gateway runs on this host.
    pub fn is_here(&self, tenant: usize) -> bool {
        matches!(
            self.routers.get(tenant),
            Some(Some(router)) if router.placement == Placement::Here
        )
    }
}

/// Parses `10.1.0.1/24` into address and prefix length, refused with `field`.
pub fn parse_cidr(field: impl Display, text: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let cidr: Ipv4Cidr = text
        .parse()
        .map_err(|e: AddressError| invalid(field, e.to_string()))?;
    Ok((cidr.ip, cidr.prefix))
}

/// Validates the gateway settings of `tenants` against the switching plan; may add the
/// gateway host to a tenant's hosts (its tunnel must carry the tenant).
pub(super) fn validate(
    section: &GatewaySection,
    switch: &SwitchSection,
    tenants: &Tenants,
    routes: &[RouteSpec],
    published: &[PublishSpec],
    plan: &mut SwitchPlan,
) -> Result<GatewayPlan, ConfigError> {
    check_limits(section)?;
    let (index, tenants) = (&tenants.index, tenants.specs);
    let mut routers: List<Option<Arc<RouterPlan>>> =
        RouterChecker::new(section, switch, tenants, index, plan)
            .check_all(plan)?
            .into_iter()
            .map(|r| r.map(Arc::new))
            .collect();
    settle_peering(&mut routers, tenants)?;
    let route_plans = validate_routes(routes, index, &routers)?;
    let publish_plans = validate_published(section, published, index, &routers)?;
    Ok(GatewayPlan {
        routers,
        routes: route_plans,
        published: publish_plans,
        nat: nat_settings(section),
        sessions_per_worker: section.sessions_per_worker,
    })
}

/// The SNAT port range, timeouts and session count of `[gateway]`.
fn check_limits(section: &GatewaySection) -> Result<(), ConfigError> {
    if section.snat_port_min == 0 || section.snat_port_min > section.snat_port_max {
        return Err(invalid(
            "gateway.snat_port_min",
            "must be at least 1 and at most snat_port_max",
        ));
    }
    for (name, value) in [
        ("tcp_established_s", section.tcp_established_s),
        ("tcp_transitory_s", section.tcp_transitory_s),
        ("udp_s", section.udp_s),
        ("icmp_s", section.icmp_s),
    ] {
        if value == 0 {
            return Err(invalid(format!("gateway.{name}"), "must be at least 1"));
        }
    }
    if !(1..=16_000_000).contains(&section.sessions_per_worker) {
        return Err(invalid(
            "gateway.sessions_per_worker",
            "must be between 1 and 16000000",
        ));
    }
    Ok(())
}

fn nat_settings(section: &GatewaySection) -> NatSettings {
    NatSettings {
        port_min: section.snat_port_min,
        port_max: section.snat_port_max,
        tcp_established_s: section.tcp_established_s,
        tcp_transitory_s: section.tcp_transitory_s,
        udp_s: section.udp_s,
        icmp_s: section.icmp_s,
    }
}

/// Checks the tenants' routers in order, keeping what one router takes from the next
/// (its MAC, a gateway slot on its host).
pub(crate) struct RouterChecker<'a> {
    section: &'a GatewaySection,
    switch: &'a SwitchSection,
    tenants: &'a List<Arc<TenantSpec>>,
    index: &'a TenantIndex<'a>,
    keys: RouterKeys,
}

/// The gateway host that asks for the least loaded host.
pub(crate) const AUTO: &str = "auto";

/// What the routers checked so far took from the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RouterKeys {
    /// The tenant whose router has each MAC (its position when it was checked).
    pub(crate) macs: HashMap<Mac, usize>,
    /// Gateways per host so far, for `auto` placement: every host validating the same
    /// model in the same order places the same way, so no host has to write it down.
    pub(crate) gateways_on: Vec<usize>,
}

impl<'a> RouterChecker<'a> {
    fn new(
        section: &'a GatewaySection,
        switch: &'a SwitchSection,
        tenants: &'a List<Arc<TenantSpec>>,
        index: &'a TenantIndex<'a>,
        plan: &SwitchPlan,
    ) -> Self {
        let keys = RouterKeys {
            macs: HashMap::with_capacity(tenants.len()),
            gateways_on: vec![0; plan.hosts.len()],
        };
        Self::resumed(section, switch, tenants, index, keys)
    }

    /// A checker going on after the routers that took `keys`.
    pub(crate) fn resumed(
        section: &'a GatewaySection,
        switch: &'a SwitchSection,
        tenants: &'a List<Arc<TenantSpec>>,
        index: &'a TenantIndex<'a>,
        keys: RouterKeys,
    ) -> Self {
        Self {
            section,
            switch,
            tenants,
            index,
            keys,
        }
    }

    /// What the routers checked took.
    pub(crate) fn into_keys(self) -> RouterKeys {
        self.keys
    }

    /// The router of each tenant (`None` without subnets), then the endpoints' MACs
    /// against the routers'.
    fn check_all(mut self, plan: &mut SwitchPlan) -> Result<Vec<Option<RouterPlan>>, ConfigError> {
        let mut routers = Vec::with_capacity(self.tenants.len());
        for (i, t) in self.tenants.iter().enumerate() {
            routers.push(self.router(i, t, plan)?);
        }
        check_endpoint_macs(plan, &self.keys.macs)?;
        Ok(routers)
    }

    pub(crate) fn router(
        &mut self,
        i: usize,
        t: &TenantSpec,
        plan: &mut SwitchPlan,
    ) -> Result<Option<RouterPlan>, ConfigError> {
        let field = Field::Item("tenant", i);
        if t.subnets.is_empty() {
            refuse_gateway_settings(&field, t)?;
            return Ok(None);
        }
        let interfaces = parse_subnets(&field, t)?;
        let placement = place_gateway(&field, t, plan, &self.keys.gateways_on)?;
        self.record_placement(i, placement, plan);
        let snat_ip = self.snat_ip(&field, t, plan, placement)?;
        let mac = self.router_mac(&field, i, t)?;
        let max_connections = t
            .max_connections
            .unwrap_or(self.section.max_connections_per_tenant);
        if max_connections == 0 {
            return Err(invalid(
                format!("{field}.max_connections"),
                "must be at least 1",
            ));
        }
        let peers = self.peer_indices(&field, i, t)?;
        Ok(Some(RouterPlan {
            mac,
            interfaces,
            placement,
            snat_ip,
            peers,
            max_connections,
        }))
    }

    /// The gateway host carries the tenant, and counts one more gateway.
    fn record_placement(&mut self, i: usize, placement: Placement, plan: &mut SwitchPlan) {
        if let Placement::Host(h) = placement {
            if !plan.tenants[i].hosts.contains(&h) {
                Arc::make_mut(&mut plan.tenants[i]).hosts.push(h);
            }
        }
        let placed_on = match placement {
            Placement::Here => plan.this_host,
            Placement::Host(h) => Some(h),
        };
        if let Some(count) = placed_on.and_then(|h| self.keys.gateways_on.get_mut(h)) {
            *count += 1;
        }
    }

    fn snat_ip(
        &self,
        field: &Field,
        t: &TenantSpec,
        plan: &SwitchPlan,
        placement: Placement,
    ) -> Result<Option<Ipv4Addr>, ConfigError> {
        let gateway_ip = match placement {
            Placement::Here => plan.this_host.map(|h| plan.hosts[h].ip),
            Placement::Host(h) => Some(plan.hosts[h].ip),
        };
        Ok(match t.snat_ip {
            Some(ip) if self.switch.underlay_gateway.is_none() => {
                let _ = ip;
                return Err(invalid(
                    format!("{field}.snat_ip"),
                    "SNAT needs switch.underlay_gateway, the way out",
                ));
            }
            Some(ip) if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() => {
                return Err(invalid(
                    format!("{field}.snat_ip"),
                    "must be a unicast address",
                ))
            }
            Some(ip) => Some(ip),
            None => self.switch.underlay_gateway.and(gateway_ip),
        })
    }

    /// The router's MAC, given or derived from the id, unique among the routers.
    fn router_mac(&mut self, field: &Field, i: usize, t: &TenantSpec) -> Result<Mac, ConfigError> {
        let mac = match &t.router_mac {
            Some(text) => {
                let f = format!("{field}.router_mac");
                let mac = parse_mac(&f, text)?;
                if mac[0] & 1 == 1 || mac == [0; 6] {
                    return Err(invalid(f, format!("`{text}` is not a unicast MAC")));
                }
                mac
            }
            None => router_mac(t.id),
        };
        if let Some(other) = self.keys.macs.insert(mac, i) {
            let message = match self.tenants.get(other) {
                Some(other) => format!("tenant `{}` uses this router MAC", other.name),
                None => "another tenant uses this router MAC".to_owned(),
            };
            return Err(invalid(format!("{field}.router_mac"), message));
        }
        Ok(mac)
    }

    /// The tenants `t` asks to peer with, by index (consent is settled later).
    fn peer_indices(
        &self,
        field: &Field,
        i: usize,
        t: &TenantSpec,
    ) -> Result<Vec<usize>, ConfigError> {
        let mut peers = Vec::new();
        for (j, name) in t.peers.iter().enumerate() {
            let Some(&p) = self.index.get(name.as_str()) else {
                return Err(invalid(
                    format!("{field}.peers[{j}]"),
                    format!("no tenant is named `{name}`"),
                ));
            };
            if p == i {
                return Err(invalid(
                    format!("{field}.peers[{j}]"),
                    "a tenant does not peer with itself",
                ));
            }
            peers.push(p);
        }
        Ok(peers)
    }
}

/// Refuses router settings on a tenant without subnets.
fn refuse_gateway_settings(field: &Field, t: &TenantSpec) -> Result<(), ConfigError> {
    for (set, name) in [
        (t.gateway_host.is_some(), "gateway_host"),
        (t.snat_ip.is_some(), "snat_ip"),
        (t.router_mac.is_some(), "router_mac"),
        (!t.peers.is_empty(), "peers"),
        (t.max_connections.is_some(), "max_connections"),
    ] {
        if set {
            return Err(invalid(
                format!("{field}.{name}"),
                "needs subnets (a tenant without subnets has no gateway)",
            ));
        }
    }
    Ok(())
}

/// The gateway's address and prefix on each subnet; subnets of a tenant do not overlap.
fn parse_subnets(field: &Field, t: &TenantSpec) -> Result<Vec<(Ipv4Addr, u8)>, ConfigError> {
    let mut interfaces: Vec<(Ipv4Addr, u8)> = Vec::with_capacity(t.subnets.len());
    for (j, text) in t.subnets.iter().enumerate() {
        let f = field.entry("subnets", j);
        let (ip, prefix) = parse_cidr(f, text)?;
        let host_bits = u32::from(ip) & !mask(prefix);
        if !(1..=30).contains(&prefix) || host_bits == 0 || host_bits == !mask(prefix) {
            return Err(invalid(
                f,
                format!("`{text}` must be the gateway's address in its subnet (like 10.1.0.1/24, prefix 1 to 30)"),
            ));
        }
        if let Some((other, len)) = interfaces.iter().find(|(o, l)| {
            let m = mask(prefix.min(*l));
            u32::from(*o) & m == u32::from(ip) & m
        }) {
            return Err(invalid(
                f,
                format!("overlaps {other}/{len} of the same tenant"),
            ));
        }
        interfaces.push((ip, prefix));
    }
    Ok(interfaces)
}

/// Where `t`'s gateway runs, from its `gateway_host` and the hosts.
fn place_gateway(
    field: &Field,
    t: &TenantSpec,
    plan: &SwitchPlan,
    gateways_on: &[usize],
) -> Result<Placement, ConfigError> {
    Ok(match (t.gateway_host.as_deref(), plan.this_host) {
        (_, None) => match t.gateway_host.as_deref() {
            None | Some("central") | Some(AUTO) => Placement::Here,
            Some(name) => {
                return Err(invalid(
                    format!("{field}.gateway_host"),
                    format!("no host is named `{name}` (no [[host]] entries)"),
                ))
            }
        },
        (None | Some("central"), Some(me)) => match plan.egress_host() {
            Some(h) if h == me => Placement::Here,
            Some(h) => Placement::Host(h),
            None => {
                return Err(invalid(
                    format!("{field}.gateway_host"),
                    "name the gateway's host, or mark an egress host for `central`",
                ))
            }
        },
        (Some(AUTO), Some(me)) => place_automatically(plan, gateways_on, me),
        (Some(name), Some(me)) => match plan.hosts.iter().position(|h| h.name == name) {
            Some(h) if h == me => Placement::Here,
            Some(h) => Placement::Host(h),
            None => {
                return Err(invalid(
                    format!("{field}.gateway_host"),
                    format!("no host is named `{name}`"),
                ))
            }
        },
    })
}

fn place_automatically(plan: &SwitchPlan, gateways_on: &[usize], me: usize) -> Placement {
    // The placer's rule, by gateway count (a static cluster reports no traffic).
    let load = plan
        .hosts
        .iter()
        .zip(gateways_on)
        .map(|(h, &gateways)| (h.name.as_str(), HostLoad { gateways, bps: 0.0 }))
        .collect();
    let least = placement::least_loaded(&load)
        .and_then(|name| plan.hosts.iter().position(|h| h.name == name))
        .unwrap_or(me);
    if least == me {
        Placement::Here
    } else {
        Placement::Host(least)
    }
}

fn check_endpoint_macs(plan: &SwitchPlan, macs: &HashMap<Mac, usize>) -> Result<(), ConfigError> {
    for (e, endpoint) in plan.endpoints.iter().enumerate() {
        if macs.contains_key(&endpoint.mac) {
            return Err(invalid(
                format!("endpoint[{e}].mac"),
                "this MAC is a tenant router's",
            ));
        }
    }
    Ok(())
}

/// Keeps the mutual peers of each router. Consent is mutual; a one-sided request waits
/// for the other side. Peers route through each other's router, so both gateways must
/// run on one host.
fn settle_peering(
    routers: &mut List<Option<Arc<RouterPlan>>>,
    tenants: &List<Arc<TenantSpec>>,
) -> Result<(), ConfigError> {
    for i in 0..routers.len() {
        let mutual = match &routers[i] {
            Some(r) if !r.peers.is_empty() => mutual_peers(i, r, routers, tenants)?,
            _ => continue,
        };
        if let Some(r) = routers[i].as_mut() {
            Arc::make_mut(r).peers = mutual;
        }
    }
    Ok(())
}

/// The peers of router `i` (`r`) that consent in turn.
fn mutual_peers(
    i: usize,
    r: &RouterPlan,
    routers: &List<Option<Arc<RouterPlan>>>,
    tenants: &List<Arc<TenantSpec>>,
) -> Result<Vec<usize>, ConfigError> {
    let mut mutual = Vec::new();
    for &p in &r.peers {
        let Some(other) = &routers[p] else {
            return Err(invalid(
                format!("tenant[{i}].peers"),
                format!("tenant `{}` has no subnets to route to", tenants[p].name),
            ));
        };
        if !other.peers.contains(&i) {
            continue;
        }
        if other.placement != r.placement {
            return Err(invalid(
                format!("tenant[{i}].gateway_host"),
                format!(
                    "peered tenant `{}` has its gateway elsewhere; peers share a gateway host",
                    tenants[p].name
                ),
            ));
        }
        check_peer_overlap(i, r, other, &tenants[p].name)?;
        mutual.push(p);
    }
    Ok(mutual)
}

fn check_peer_overlap(
    i: usize,
    r: &RouterPlan,
    other: &RouterPlan,
    other_name: &str,
) -> Result<(), ConfigError> {
    for &(ip, prefix) in &r.interfaces {
        if let Some((o, l)) = other.interfaces.iter().find(|(o, l)| {
            let m = mask(prefix.min(*l));
            u32::from(*o) & m == u32::from(ip) & m
        }) {
            return Err(invalid(
                format!("tenant[{i}].peers"),
                format!("{ip}/{prefix} overlaps {o}/{l} of peer `{other_name}`"),
            ));
        }
    }
    Ok(())
}

/// Whether `ip` is on one of `router`'s subnets, and not the gateway's own address.
fn on_subnet_of(router: Option<&RouterPlan>, ip: Ipv4Addr) -> bool {
    router.is_some_and(|r| {
        r.interfaces
            .iter()
            .any(|&(gw, len)| u32::from(gw) & mask(len) == u32::from(ip) & mask(len) && gw != ip)
    })
}

fn validate_routes(
    routes: &[RouteSpec],
    index: &TenantIndex,
    routers: &List<Option<Arc<RouterPlan>>>,
) -> Result<Vec<RoutePlan>, ConfigError> {
    let mut route_plans = Vec::with_capacity(routes.len());
    let mut seen = HashSet::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        let field = Field::Item("route", i);
        let plan = validate_route(&field, r, index, routers)?;
        if !seen.insert((plan.tenant, plan.ip, plan.prefix)) {
            return Err(invalid(
                format!("{field}.prefix"),
                format!("tenant `{}` already has a route to {}", r.tenant, r.prefix),
            ));
        }
        route_plans.push(plan);
    }
    Ok(route_plans)
}

pub(crate) fn validate_route(
    field: &Field,
    r: &RouteSpec,
    index: &TenantIndex,
    routers: &List<Option<Arc<RouterPlan>>>,
) -> Result<RoutePlan, ConfigError> {
    let Some(&tenant) = index.get(r.tenant.as_str()) else {
        return Err(invalid(
            format!("{field}.tenant"),
            format!("no tenant is named `{}`", r.tenant),
        ));
    };
    let Some(router) = &routers[tenant] else {
        return Err(invalid(
            format!("{field}.tenant"),
            format!("tenant `{}` has no subnets (no router)", r.tenant),
        ));
    };
    let (ip, prefix) = parse_cidr(field.member("prefix"), &r.prefix)?;
    if u32::from(ip) & !mask(prefix) != 0 {
        return Err(invalid(
            format!("{field}.prefix"),
            format!("`{}` has host bits set", r.prefix),
        ));
    }
    let Some(via_tenant) = std::iter::once(tenant)
        .chain(router.peers.iter().copied())
        .find(|&t| on_subnet_of(routers[t].as_deref(), r.via))
    else {
        return Err(invalid(
            format!("{field}.via"),
            format!(
                "{} is on none of the subnets of the tenant or its peers",
                r.via
            ),
        ));
    };
    Ok(RoutePlan {
        tenant,
        ip,
        prefix,
        via: r.via,
        via_tenant,
    })
}

fn validate_published(
    section: &GatewaySection,
    published: &[PublishSpec],
    index: &TenantIndex,
    routers: &List<Option<Arc<RouterPlan>>>,
) -> Result<Vec<PublishPlan>, ConfigError> {
    let mut publish_plans = Vec::with_capacity(published.len());
    let mut taken = HashSet::with_capacity(published.len());
    for (i, p) in published.iter().enumerate() {
        let field = Field::Item("publish", i);
        let plan = validate_publish(&field, p, section, index, routers)?;
        if !taken.insert((plan.protocol, plan.external_ip, p.host_port)) {
            return Err(invalid(
                format!("{field}.host_port"),
                format!(
                    "{}/{} on {} is already published",
                    p.host_port, p.protocol, plan.external_ip
                ),
            ));
        }
        publish_plans.push(plan);
    }
    Ok(publish_plans)
}

pub(crate) fn validate_publish(
    field: &Field,
    p: &PublishSpec,
    section: &GatewaySection,
    index: &TenantIndex,
    routers: &List<Option<Arc<RouterPlan>>>,
) -> Result<PublishPlan, ConfigError> {
    let Some(&tenant) = index.get(p.tenant.as_str()) else {
        return Err(invalid(
            format!("{field}.tenant"),
            format!("no tenant is named `{}`", p.tenant),
        ));
    };
    let protocol = match p.protocol.as_str() {
        "tcp" => 6,
        "udp" => 17,
        other => {
            return Err(invalid(
                format!("{field}.protocol"),
                format!("`{other}` is not tcp or udp"),
            ))
        }
    };
    let Some(external_ip) = routers[tenant].as_ref().and_then(|r| r.snat_ip) else {
        return Err(invalid(
            format!("{field}.tenant"),
            format!(
                "tenant `{}` has no outside address (subnets and switch.underlay_gateway)",
                p.tenant
            ),
        ));
    };
    if p.host_port == 0 || p.port == 0 {
        return Err(invalid(
            format!("{field}.host_port"),
            "ports are 1 to 65535",
        ));
    }
    if (section.snat_port_min..=section.snat_port_max).contains(&p.host_port) {
        return Err(invalid(
            format!("{field}.host_port"),
            format!(
                "inside the SNAT port range {}-{}",
                section.snat_port_min, section.snat_port_max
            ),
        ));
    }
    if !on_subnet_of(routers[tenant].as_deref(), p.ip) {
        return Err(invalid(
            format!("{field}.ip"),
            format!("{} is on none of the tenant's subnets", p.ip),
        ));
    }
    Ok(PublishPlan {
        tenant,
        protocol,
        external_ip,
        host_port: p.host_port,
        ip: p.ip,
        port: p.port,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Config, Validated};
    use super::*;

    fn harness(var: &str) -> Option<String> {
        let value = match var {
            "SWITCH_CORE" => "1",
            "DPDK_PREFIX" => "rpcustom",
            "PCAP" => concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            "DST_MACS" => "02:00:00:00:0b:00 02:00:00:00:0b:01",
            "VLAN_ID" => "100",
            "GRE_KEY" => "4242",
            "GRE_LOCAL_IP" => "198.19.255.1",
            "GRE_REMOTE_IP" => "198.19.255.2",
            "GRE_LOCAL_MAC" => "02:00:00:00:0c:01",
            "GRE_REMOTE_MAC" => "02:00:00:00:0c:02",
            "ROUTER_IN_MAC" => "02:00:00:00:0b:00",
            "ROUTER_MAC" => "02:00:00:00:0d:01",
            "NEXT_HOP_1" => "02:00:00:00:0d:02",
            "NEXT_HOP_2" => "02:00:00:00:0d:03",
            "VHU0" => "/tmp/vhu0",
            "VHU1" => "/tmp/vhu1",
            "DEMO_RED1" => "tdemo-red1",
            "DEMO_RED2" => "tdemo-red2",
            "DEMO_BLUE1" => "tdemo-blue1",
            "DEMO_UPLINK" => "tdemo-up",
            "RED_C1_IF" => "veth-red1",
            "BLUE_C1_IF" => "veth-blue1",
            "VF_NIC1" => "0000:3b:02.0",
            "VF_NIC2" => "0000:5e:02.0",
            "TRUNK_VF" => "0000:3b:02.1",
            "UPLINK_VF" => "0000:3b:02.2",
            "UPLINK_IF" => "eth1",
            _ => return None,
        };
        Some(value.to_owned())
    }

    fn parse(text: &str) -> Result<Validated, ConfigError> {
        Config::parse(text, harness)?.validate()
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("config must be refused").to_string()
    }

    #[test]
    fn every_shipped_config_validates() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
        let mut checked = 0;
        for dir in [
            root.to_owned(),
            format!("{root}/bench"),
            format!("{root}/examples"),
        ] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    if let Err(e) = parse(&text) {
                        panic!("{}: {e}", path.display());
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 13, "{checked} configs");
    }

    #[test]
    fn the_route_benchmark_routes_through_a_peer() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/bench/replay-route.toml"
        ))
        .unwrap();
        let v = parse(&text).unwrap();
        let routers = &v.gateway.routers;
        assert_eq!(routers[0].as_ref().unwrap().peers, [1]);
        assert_eq!(routers[0].as_ref().unwrap().mac, [2, 0, 0, 0, 0x0b, 0]);
        assert_eq!(v.gateway.routes[1].prefix, 17);
        assert_eq!(v.gateway.routes[1].via_tenant, 1, "next hop in the peer");
    }

    const BASE: &str = r#"
[dataplane]
workers = [1]

[[port]]
name = "sink"
backend = "null"

[switch]
host = "a"
underlay_gateway = "198.18.0.254"

[[host]]
name = "a"
underlay_ip = "198.18.0.1/24"

[[host]]
name = "b"
underlay_ip = "198.18.0.2/24"

[[tenant]]
name = "red"
id = 1
subnets = ["10.1.0.1/24"]
gateway_host = "a"

[[tenant]]
name = "blue"
id = 2
subnets = ["10.2.0.1/24"]
gateway_host = "a"
"#;

    #[test]
    fn automatic_placement_spreads_gateways_the_same_way_on_every_host() {
        let auto = BASE.replace("gateway_host = \"a\"", "gateway_host = \"auto\"")
            + "\n[[tenant]]\nname = \"green\"\nid = 3\nsubnets = [\"10.3.0.1/24\"]\n\
               gateway_host = \"auto\"\n";
        let on_a = parse(&auto).unwrap();
        let on_b = parse(&auto.replace(
            "host = \"a\"\nunderlay_gateway",
            "host = \"b\"\nunderlay_gateway",
        ))
        .unwrap();
        let placed = |v: &Validated| -> Vec<Placement> {
            v.gateway
                .routers
                .iter()
                .map(|r| r.as_ref().unwrap().placement)
                .collect()
        };
        // Least loaded first, ties by host name: a, b, a — seen from a and from b.
        assert_eq!(
            placed(&on_a),
            [Placement::Here, Placement::Host(1), Placement::Here]
        );
        assert_eq!(
            placed(&on_b),
            [Placement::Host(0), Placement::Here, Placement::Host(0)]
        );
    }

    #[test]
    fn placement_snat_and_router_macs() {
        let v = parse(BASE).unwrap();
        let red = v.gateway.routers[0].as_ref().unwrap();
        assert_eq!(red.placement, Placement::Here);
        assert_eq!(red.snat_ip, Some(Ipv4Addr::new(198, 18, 0, 1)));
        assert_eq!(red.mac, router_mac(1));
        let moved =
            parse(&BASE.replacen("gateway_host = \"a\"", "gateway_host = \"b\"", 1)).unwrap();
        let red = moved.gateway.routers[0].as_ref().unwrap();
        assert_eq!(red.placement, Placement::Host(1));
        assert_eq!(
            red.snat_ip,
            Some(Ipv4Addr::new(198, 18, 0, 2)),
            "the gateway host's address"
        );
        assert!(
            moved.switching.tenants[0].hosts.contains(&1),
            "the tunnel to the gateway host carries the tenant"
        );
    }

    #[test]
    fn bad_gateway_settings_name_their_field() {
        let cases = [
            (
                BASE.replace("\"10.1.0.1/24\"", "\"10.1.0.1/24\", \"10.1.0.129/25\""),
                "`tenant[0].subnets[1]`: overlaps 10.1.0.1/24",
            ),
            (
                BASE.replace("10.1.0.1/24", "10.1.0.0/24"),
                "`tenant[0].subnets[0]`: `10.1.0.0/24` must be the gateway's address",
            ),
            (
                BASE.replace("10.1.0.1/24", "10.1.0.1"),
                "`tenant[0].subnets[0]`: `10.1.0.1` is not an IPv4 address with a prefix",
            ),
            (
                BASE.replacen("gateway_host = \"a\"", "gateway_host = \"c\"", 1),
                "`tenant[0].gateway_host`: no host is named `c`",
            ),
            (
                BASE.replacen("gateway_host = \"a\"", "gateway_host = \"central\"", 1),
                "`tenant[0].gateway_host`: name the gateway's host, or mark an egress host",
            ),
            (
                BASE.replace("underlay_gateway = \"198.18.0.254\"", "")
                    .replacen("gateway_host = \"a\"", "gateway_host = \"a\"\nsnat_ip = \"198.18.0.9\"", 1),
                "`tenant[0].snat_ip`: SNAT needs switch.underlay_gateway",
            ),
            (
                format!("{BASE}[[route]]\ntenant = \"red\"\nprefix = \"10.9.0.0/16\"\nvia = \"10.2.0.9\"\n"),
                "`route[0].via`: 10.2.0.9 is on none of the subnets",
            ),
            (
                format!("{BASE}[[route]]\ntenant = \"red\"\nprefix = \"10.9.0.1/16\"\nvia = \"10.1.0.9\"\n"),
                "`route[0].prefix`: `10.9.0.1/16` has host bits set",
            ),
            (
                format!("{BASE}[[publish]]\ntenant = \"red\"\nprotocol = \"tcp\"\nhost_port = 30000\nip = \"10.1.0.5\"\nport = 80\n"),
                "`publish[0].host_port`: inside the SNAT port range",
            ),
            (
                format!("{BASE}[[publish]]\ntenant = \"red\"\nprotocol = \"sctp\"\nhost_port = 80\nip = \"10.1.0.5\"\nport = 80\n"),
                "`publish[0].protocol`: `sctp` is not tcp or udp",
            ),
            (
                BASE.replacen("id = 2\n", "id = 2\nrouter_mac = \"02:7e:00:00:00:01\"\n", 1),
                "`tenant[1].router_mac`: tenant `red` uses this router MAC",
            ),
            (
                BASE.replace("subnets = [\"10.2.0.1/24\"]\ngateway_host = \"a\"", "peers = [\"red\"]"),
                "`tenant[1].peers`: needs subnets",
            ),
        ];
        for (text, expected) in cases {
            let e = err(&text);
            assert!(e.contains(expected), "`{expected}` not in `{e}`");
        }
    }

    #[test]
    fn peering_takes_both_sides_and_one_gateway_host() {
        let one_sided = BASE.replacen(
            "gateway_host = \"a\"\n",
            "gateway_host = \"a\"\npeers = [\"blue\"]\n",
            1,
        );
        let v = parse(&one_sided).unwrap();
        assert!(v.gateway.routers[0].as_ref().unwrap().peers.is_empty());
        let both = one_sided.replacen(
            "subnets = [\"10.2.0.1/24\"]\ngateway_host = \"a\"",
            "subnets = [\"10.2.0.1/24\"]\ngateway_host = \"a\"\npeers = [\"red\"]",
            1,
        );
        let v = parse(&both).unwrap();
        assert_eq!(v.gateway.routers[0].as_ref().unwrap().peers, [1]);
        assert_eq!(v.gateway.routers[1].as_ref().unwrap().peers, [0]);
        let apart = both.replace(
            "subnets = [\"10.2.0.1/24\"]\ngateway_host = \"a\"",
            "subnets = [\"10.2.0.1/24\"]\ngateway_host = \"b\"",
        );
        assert!(err(&apart).contains("peers share a gateway host"));
        let overlapping = both.replace("10.2.0.1/24", "10.1.0.129/25");
        let e = err(&overlapping);
        assert!(e.contains("overlaps 10.1.0.129/25 of peer `blue`"), "{e}");
    }
}
