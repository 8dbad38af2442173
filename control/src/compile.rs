//! The compiler: validated config + what the dataplane learned (MACs, neighbours) →
//! one immutable [`FlowTables`] snapshot. Pure: the same inputs give the same tables.

use hashbrown::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use dataplane::packet::{Ipv4Cidr, Mac};
use dataplane::table::builder::TablesBuilder;
use dataplane::table::routing::{Interface, Published, RouteTarget, Router};
use dataplane::table::{Design, FlowTables, HostIdx, Location, PortSecurity, TenantIdx};

use crate::config::gateway::Placement;
use crate::config::switching::{EndpointAt, RolePlan, SwitchPlan};
use crate::config::Validated;

/// A started port as the compiler needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortInfo {
    /// DPDK port id.
    pub id: u16,
    /// The device's MAC.
    pub mac: Mac,
    /// The device's MTU, if it reports one: routed packets larger than it are refused
    /// with ICMP (path MTU discovery) instead of being lost at its TX queue.
    pub mtu: Option<u16>,
}

impl PortInfo {
    /// What the compiler needs of a started port.
    pub fn of(port: &dataplane::dpdk::Port) -> Self {
        Self {
            id: port.id(),
            mac: port.mac(),
            mtu: port.mtu(),
        }
    }
}

/// A MAC the dataplane learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Where it was seen last.
    pub location: Location,
    /// When.
    pub seen: Instant,
}

/// Where the configured tenants and hosts sit in the tables: their stable slots
/// ([`crate::slots`]) by position in the plan's lists. A tenant without a slot (every
/// slot taken) is left out of the tables.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ids {
    /// Slot of each `plan.tenants[i]`.
    pub tenants: Vec<Option<TenantIdx>>,
    /// Slot of each `plan.hosts[i]`.
    pub hosts: Vec<HostIdx>,
}

impl Ids {
    /// Slots in plan order (0, 1, 2, ...): what a switch that never changes needs
    /// (tests, benchmarks, the first tables of a fresh start).
    pub fn dense(plan: &SwitchPlan) -> Self {
        Self {
            tenants: (0..plan.tenants.len())
                .map(|t| Some(t as TenantIdx))
                .collect(),
            hosts: (0..plan.hosts.len()).map(|h| h as HostIdx).collect(),
        }
    }

    /// The slot of tenant `t` (a plan position).
    pub fn tenant(&self, t: usize) -> Option<TenantIdx> {
        self.tenants.get(t).copied().flatten()
    }

    /// The slot of host `h` (a plan position).
    pub fn host(&self, h: usize) -> HostIdx {
        self.hosts.get(h).copied().unwrap_or(HostIdx::MAX)
    }
}

/// What the control plane knows beyond the config.
#[derive(Debug, Default, Clone)]
pub struct Dynamic {
    /// Learned MACs by (tenant index, MAC).
    pub learned: HashMap<(TenantIdx, Mac), Learned>,
    /// Underlay neighbours by IP.
    pub neighbors: HashMap<Ipv4Addr, Mac>,
    /// Neighbours of the tenants' routers, by (tenant index, IP), and when last heard.
    pub tenant_neighbors: HashMap<(TenantIdx, Ipv4Addr), (Mac, Instant)>,
    /// The port id being captured, if any.
    pub capture: Option<u16>,
    /// The tables' [`FlowTables::retired`] mark.
    pub retired: u64,
}

/// The underlay facts of this host, if it has an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// Uplink port id.
    pub port: u16,
    /// MAC the uplink answers to.
    pub mac: Mac,
    /// This host's underlay IP.
    pub ip: Ipv4Addr,
}

/// This host's uplink identity (none while the uplink's device is down).
pub fn underlay(config: &Validated, ports: &[Option<PortInfo>]) -> Option<Underlay> {
    let plan = &config.switching;
    let host = &plan.hosts[plan.this_host?];
    plan.roles
        .iter()
        .zip(ports)
        .find_map(|(role, port)| match (role, port) {
            (RolePlan::Uplink(mac), Some(port)) => Some(Underlay {
                port: port.id,
                mac: mac.unwrap_or(port.mac),
                ip: host.ip,
            }),
            _ => None,
        })
}

/// The IP to resolve to reach `host`: the host itself when on-link, else the gateway.
pub fn next_hop(plan: &SwitchPlan, host: usize) -> Ipv4Addr {
    let target = plan.hosts[host].ip;
    let Some(me) = plan.this_host.map(|h| &plan.hosts[h]) else {
        return target;
    };
    if me.prefix == 32 {
        return target;
    }
    let on_link = Ipv4Cidr {
        ip: me.ip,
        prefix: me.prefix,
    }
    .contains(target);
    match plan.underlay_gateway {
        Some(gateway) if !on_link => gateway,
        _ => target,
    }
}

/// The resolved MAC of the next hop toward `host`, if known.
fn next_hop_mac(plan: &SwitchPlan, host: usize, dynamic: &Dynamic) -> Option<Mac> {
    let hop = next_hop(plan, host);
    if hop == plan.hosts[host].ip {
        if let Some(mac) = plan.hosts[host].mac {
            return Some(mac);
        }
    }
    if Some(hop) == plan.underlay_gateway && plan.underlay_gateway_mac.is_some() {
        return plan.underlay_gateway_mac;
    }
    dynamic.neighbors.get(&hop).copied()
}

/// Hosts this host keeps a tunnel to: those sharing a tenant (dedicated), every other
/// host (shared hub) or the hub (shared spoke).
pub fn tunnel_hosts(plan: &SwitchPlan) -> Vec<usize> {
    let Some(me) = plan.this_host else {
        return Vec::new();
    };
    let mut hosts: Vec<usize> = match plan.design {
        Design::Dedicated => plan
            .tenants
            .iter()
            .flat_map(|t| t.hosts.iter().copied())
            .collect(),
        Design::Shared if plan.is_hub() => (0..plan.hosts.len()).filter(|&h| h != me).collect(),
        Design::Shared => plan
            .egress_host()
            .into_iter()
            .filter(|&h| h != me)
            .collect(),
    };
    hosts.sort_unstable();
    hosts.dedup();
    hosts
}

/// Builds the snapshot. `ports` runs parallel to the config's ports (`None`: its device
/// is down, so it has no role); `ids` gives each tenant and host its slot.
pub fn compile(
    config: &Validated,
    ports: &[Option<PortInfo>],
    ids: &Ids,
    dynamic: &Dynamic,
) -> FlowTables {
    let plan = &config.switching;
    let mut b = TablesBuilder::new(plan.design, plan.is_hub());
    b.tunnel_ip_options(plan.tunnel_ttl, plan.tunnel_dont_fragment);
    b.retired(dynamic.retired);
    for (t, tenant) in plan.tenants.iter().enumerate() {
        if let Some(slot) = ids.tenant(t) {
            b.tenant_in(slot, tenant.id, tenant.vlan);
        }
    }
    for (role, port) in plan.roles.iter().zip(ports) {
        let Some(port) = port else {
            continue;
        };
        if let Some(mtu) = port.mtu {
            b.port_mtu(port.id, mtu);
        }
        match role {
            RolePlan::None | RolePlan::Uplink(_) => {}
            RolePlan::Access {
                tenant,
                allowed_macs,
                allowed_ips,
            } => {
                let Some(slot) = ids.tenant(*tenant) else {
                    continue;
                };
                let security =
                    (!allowed_macs.is_empty() || !allowed_ips.is_empty()).then(|| PortSecurity {
                        macs: allowed_macs.clone(),
                        ips: allowed_ips.clone(),
                    });
                b.access_port(port.id, slot, security);
            }
            RolePlan::Trunk(tenants) => {
                let carried: Vec<TenantIdx> =
                    tenants.iter().filter_map(|&t| ids.tenant(t)).collect();
                b.trunk_port(port.id, &carried);
            }
        }
    }
    for &(from, to) in &config.cross_connects {
        if let (Some(Some(from)), Some(Some(to))) = (ports.get(from), ports.get(to)) {
            b.cross_connect(from.id, to.id);
        }
    }
    if let Some(up) = underlay(config, ports) {
        b.uplink(up.port, up.mac, up.ip);
        let mut hub_tunnel = None;
        for host in tunnel_hosts(plan) {
            let tunnel = b.tunnel(
                ids.host(host),
                plan.hosts[host].ip,
                next_hop_mac(plan, host, dynamic),
            );
            match plan.design {
                Design::Dedicated => {
                    for (t, tenant) in plan.tenants.iter().enumerate() {
                        if let (true, Some(slot)) = (tenant.hosts.contains(&host), ids.tenant(t)) {
                            b.tunnel_carries(tunnel, slot);
                        }
                    }
                }
                Design::Shared => {
                    for slot in (0..plan.tenants.len()).filter_map(|t| ids.tenant(t)) {
                        b.tunnel_carries(tunnel, slot);
                    }
                    if !plan.is_hub() {
                        hub_tunnel = Some(tunnel);
                    }
                }
            }
        }
        // A spoke reaches every other host through the hub.
        if let (Some(tunnel), Some(me)) = (hub_tunnel, plan.this_host) {
            for host in (0..plan.hosts.len()).filter(|&h| h != me) {
                b.host_via(ids.host(host), tunnel);
            }
        }
    }
    if let Some(port) = dynamic.capture {
        b.capture(port);
    }
    b.reserve_macs(plan.endpoints.len() + dynamic.learned.len());
    for e in &plan.endpoints {
        let Some(slot) = ids.tenant(e.tenant) else {
            continue;
        };
        let location = match e.at {
            EndpointAt::Port(p) => match ports.get(p).copied().flatten() {
                Some(port) => Location::Port(port.id),
                None => continue,
            },
            EndpointAt::Host(h) => Location::Host(ids.host(h)),
        };
        b.static_mac(slot, e.mac, location);
    }
    for (&(tenant, mac), learned) in &dynamic.learned {
        b.learned_mac(tenant, mac, learned.location);
    }
    routing(config, &mut b, ids, dynamic);
    b.build()
}

/// The routers, their routes and neighbours, published ports and the way out.
fn routing(config: &Validated, b: &mut TablesBuilder, ids: &Ids, dynamic: &Dynamic) {
    let plan = &config.switching;
    let gateway = &config.gateway;
    b.nat(gateway.nat);
    let mut snat_here = false;
    for (t, router) in gateway.routers.iter().enumerate() {
        let (Some(r), Some(slot)) = (router, ids.tenant(t)) else {
            continue;
        };
        let here = r.placement == Placement::Here;
        let location = match r.placement {
            Placement::Here => Location::Router,
            Placement::Host(h) => Location::Host(ids.host(h)),
        };
        snat_here |= here && r.snat_ip.is_some();
        b.router(
            slot,
            Router {
                mac: r.mac,
                interfaces: r
                    .interfaces
                    .iter()
                    .map(|&(ip, prefix)| Interface { ip, prefix })
                    .collect(),
                here,
                snat_ip: r.snat_ip.filter(|_| here),
                route_lengths: 0,
                max_connections: r.max_connections,
            },
            location,
        );
        if !here {
            continue;
        }
        for &p in &r.peers {
            let Some(peer) = ids.tenant(p) else {
                continue;
            };
            for &(ip, prefix) in gateway.routers[p].iter().flat_map(|o| &o.interfaces) {
                b.route(slot, ip, prefix, RouteTarget::Direct(peer));
            }
        }
    }
    for route in &gateway.routes {
        if let (true, Some(t), Some(via)) = (
            gateway.is_here(route.tenant),
            ids.tenant(route.tenant),
            ids.tenant(route.via_tenant),
        ) {
            b.route(t, route.ip, route.prefix, RouteTarget::Via(via, route.via));
        }
    }
    for p in &gateway.published {
        if let (true, Some(tenant)) = (gateway.is_here(p.tenant), ids.tenant(p.tenant)) {
            b.publish(
                p.protocol,
                Published {
                    tenant,
                    ip: p.ip,
                    port: p.port,
                    external_ip: p.external_ip,
                    external_port: p.host_port,
                },
            );
        }
    }
    // Known endpoints last: an ARP claiming an endpoint's address never wins over it.
    for (&(tenant, ip), &(mac, _)) in &dynamic.tenant_neighbors {
        b.neighbor(tenant, ip, mac);
    }
    for e in &plan.endpoints {
        if let (Some(ip), Some(slot)) = (e.ip, ids.tenant(e.tenant)) {
            b.neighbor(slot, ip, e.mac);
        }
    }
    if let (true, Some(hop)) = (snat_here, plan.underlay_gateway) {
        let mac = plan
            .underlay_gateway_mac
            .or_else(|| dynamic.neighbors.get(&hop).copied());
        b.external(hop, mac);
    }
}
