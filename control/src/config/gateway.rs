//! The gateway part of the config: each tenant's router (subnets, placement, SNAT
//! address, MAC, peers), static routes, published ports, and the SNAT limits. Checked
//! against the already validated switching plan.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use dataplane::packet::Mac;
use dataplane::table::routing::{mask, router_mac, NatSettings};
use serde::{Deserialize, Serialize};

use super::switching::{parse_mac, SwitchPlan, SwitchSection, TenantSpec};
use super::{invalid, ConfigError};

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
    /// Next hop: an address on one of the tenant's subnets.
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
    /// Router of each tenant (by tenant index), if it has one.
    pub routers: Vec<Option<RouterPlan>>,
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
            Some(Some(RouterPlan {
                placement: Placement::Here,
                ..
            }))
        )
    }
}

/// Parses `10.1.0.1/24` into address and prefix length.
pub fn parse_cidr(field: &str, text: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    let bad = || {
        invalid(
            field,
            format!("`{text}` is not an IPv4 address with a prefix length, like 10.1.0.1/24"),
        )
    };
    let (ip, len) = text.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((ip, len))
}

/// Validates the gateway settings of `tenants` against the switching plan; may add the
/// gateway host to a tenant's hosts (its tunnel must carry the tenant).
pub(super) fn validate(
    section: &GatewaySection,
    switch: &SwitchSection,
    tenants: &[TenantSpec],
    routes: &[RouteSpec],
    published: &[PublishSpec],
    plan: &mut SwitchPlan,
) -> Result<GatewayPlan, ConfigError> {
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
    let index: HashMap<&str, usize> = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut routers = Vec::with_capacity(tenants.len());
    let mut macs: HashMap<Mac, usize> = HashMap::new();
    for (i, t) in tenants.iter().enumerate() {
        let field = format!("tenant[{i}]");
        if t.subnets.is_empty() {
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
            routers.push(None);
            continue;
        }
        let mut interfaces: Vec<(Ipv4Addr, u8)> = Vec::new();
        for (j, text) in t.subnets.iter().enumerate() {
            let f = format!("{field}.subnets[{j}]");
            let (ip, prefix) = parse_cidr(&f, text)?;
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
        let placement = match (t.gateway_host.as_deref(), plan.this_host) {
            (_, None) => match t.gateway_host.as_deref() {
                None | Some("central") => Placement::Here,
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
        };
        if let Placement::Host(h) = placement {
            if !plan.tenants[i].hosts.contains(&h) {
                plan.tenants[i].hosts.push(h);
            }
        }
        let gateway_ip = match placement {
            Placement::Here => plan.this_host.map(|h| plan.hosts[h].ip),
            Placement::Host(h) => Some(plan.hosts[h].ip),
        };
        let snat_ip = match t.snat_ip {
            Some(ip) if switch.underlay_gateway.is_none() => {
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
            None => switch.underlay_gateway.and(gateway_ip),
        };
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
        if let Some(other) = macs.insert(mac, i) {
            return Err(invalid(
                format!("{field}.router_mac"),
                format!("tenant `{}` uses this router MAC", tenants[other].name),
            ));
        }
        let max_connections = t
            .max_connections
            .unwrap_or(section.max_connections_per_tenant);
        if max_connections == 0 {
            return Err(invalid(
                format!("{field}.max_connections"),
                "must be at least 1",
            ));
        }
        let mut peers = Vec::new();
        for (j, name) in t.peers.iter().enumerate() {
            let Some(&p) = index.get(name.as_str()) else {
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
        routers.push(Some(RouterPlan {
            mac,
            interfaces,
            placement,
            snat_ip,
            peers,
            max_connections,
        }));
    }
    for (e, endpoint) in plan.endpoints.iter().enumerate() {
        if macs.contains_key(&endpoint.mac) {
            return Err(invalid(
                format!("endpoint[{e}].mac"),
                "this MAC is a tenant router's",
            ));
        }
    }
    // Consent is mutual; a one-sided request waits for the other side. Peers route
    // through each other's router, so both gateways must run on one host.
    for i in 0..routers.len() {
        let Some(r) = routers[i].clone() else {
            continue;
        };
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
            for &(ip, prefix) in &r.interfaces {
                if let Some((o, l)) = other.interfaces.iter().find(|(o, l)| {
                    let m = mask(prefix.min(*l));
                    u32::from(*o) & m == u32::from(ip) & m
                }) {
                    return Err(invalid(
                        format!("tenant[{i}].peers"),
                        format!(
                            "{ip}/{prefix} overlaps {o}/{l} of peer `{}`",
                            tenants[p].name
                        ),
                    ));
                }
            }
            mutual.push(p);
        }
        if let Some(r) = routers[i].as_mut() {
            r.peers = mutual;
        }
    }

    let mut route_plans = Vec::with_capacity(routes.len());
    let mut seen = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        let field = format!("route[{i}]");
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
        let (ip, prefix) = parse_cidr(&format!("{field}.prefix"), &r.prefix)?;
        if u32::from(ip) & !mask(prefix) != 0 {
            return Err(invalid(
                format!("{field}.prefix"),
                format!("`{}` has host bits set", r.prefix),
            ));
        }
        if !router.interfaces.iter().any(|&(gw, len)| {
            u32::from(gw) & mask(len) == u32::from(r.via) & mask(len) && gw != r.via
        }) {
            return Err(invalid(
                format!("{field}.via"),
                format!("{} is on none of the tenant's subnets", r.via),
            ));
        }
        if !seen.insert((tenant, ip, prefix)) {
            return Err(invalid(
                format!("{field}.prefix"),
                format!("tenant `{}` already has a route to {}", r.tenant, r.prefix),
            ));
        }
        route_plans.push(RoutePlan {
            tenant,
            ip,
            prefix,
            via: r.via,
        });
    }

    let mut publish_plans = Vec::with_capacity(published.len());
    let mut taken = HashSet::new();
    for (i, p) in published.iter().enumerate() {
        let field = format!("publish[{i}]");
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
        let inside = routers[tenant].as_ref().is_some_and(|r| {
            r.interfaces.iter().any(|&(gw, len)| {
                u32::from(gw) & mask(len) == u32::from(p.ip) & mask(len) && gw != p.ip
            })
        });
        if !inside {
            return Err(invalid(
                format!("{field}.ip"),
                format!("{} is on none of the tenant's subnets", p.ip),
            ));
        }
        if !taken.insert((protocol, external_ip, p.host_port)) {
            return Err(invalid(
                format!("{field}.host_port"),
                format!(
                    "{}/{} on {external_ip} is already published",
                    p.host_port, p.protocol
                ),
            ));
        }
        publish_plans.push(PublishPlan {
            tenant,
            protocol,
            external_ip,
            host_port: p.host_port,
            ip: p.ip,
            port: p.port,
        });
    }

    Ok(GatewayPlan {
        routers,
        routes: route_plans,
        published: publish_plans,
        nat: NatSettings {
            port_min: section.snat_port_min,
            port_max: section.snat_port_max,
            tcp_established_s: section.tcp_established_s,
            tcp_transitory_s: section.tcp_transitory_s,
            udp_s: section.udp_s,
            icmp_s: section.icmp_s,
        },
        sessions_per_worker: section.sessions_per_worker,
    })
}
