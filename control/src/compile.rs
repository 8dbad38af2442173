//! The compiler: validated config + what the dataplane learned (MACs, neighbours) →
//! one immutable [`FlowTables`] snapshot. Pure: the same inputs give the same tables.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use dataplane::packet::Mac;
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
}

/// A MAC the dataplane learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Where it was seen last.
    pub location: Location,
    /// When.
    pub seen: Instant,
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

/// This host's uplink identity.
pub fn underlay(config: &Validated, ports: &[PortInfo]) -> Option<Underlay> {
    let plan = &config.switching;
    let host = &plan.hosts[plan.this_host?];
    plan.roles
        .iter()
        .zip(ports)
        .find_map(|(role, port)| match role {
            RolePlan::Uplink(mac) => Some(Underlay {
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
    let mask = u32::MAX << (32 - u32::from(me.prefix));
    let on_link = u32::from(me.ip) & mask == u32::from(target) & mask;
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

/// Builds the snapshot.
pub fn compile(config: &Validated, ports: &[PortInfo], dynamic: &Dynamic) -> FlowTables {
    let plan = &config.switching;
    let mut b = TablesBuilder::new(plan.design, plan.is_hub());
    b.tunnel_ip_options(plan.tunnel_ttl, plan.tunnel_dont_fragment);
    for t in &plan.tenants {
        b.tenant(t.id, t.vlan);
    }
    for (i, (role, port)) in plan.roles.iter().zip(ports).enumerate() {
        match role {
            RolePlan::None => {}
            RolePlan::Access {
                tenant,
                allowed_macs,
                allowed_ips,
            } => {
                let security =
                    (!allowed_macs.is_empty() || !allowed_ips.is_empty()).then(|| PortSecurity {
                        macs: allowed_macs.clone(),
                        ips: allowed_ips.clone(),
                    });
                b.access_port(port.id, *tenant as TenantIdx, security);
            }
            RolePlan::Trunk(tenants) => {
                let carried: Vec<TenantIdx> = tenants.iter().map(|&t| t as TenantIdx).collect();
                b.trunk_port(port.id, &carried);
            }
            RolePlan::Uplink(_) => {}
        }
        let _ = i;
    }
    for &(from, to) in &config.cross_connects {
        b.cross_connect(ports[from].id, ports[to].id);
    }
    if let Some(up) = underlay(config, ports) {
        b.uplink(up.port, up.mac, up.ip);
        let mut hub_tunnel = None;
        for host in tunnel_hosts(plan) {
            let tunnel = b.tunnel(
                host as HostIdx,
                plan.hosts[host].ip,
                next_hop_mac(plan, host, dynamic),
            );
            match plan.design {
                Design::Dedicated => {
                    for (t, tenant) in plan.tenants.iter().enumerate() {
                        if tenant.hosts.contains(&host) {
                            b.tunnel_carries(tunnel, t as TenantIdx);
                        }
                    }
                }
                Design::Shared => {
                    for t in 0..plan.tenants.len() {
                        b.tunnel_carries(tunnel, t as TenantIdx);
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
                b.host_via(host as HostIdx, tunnel);
            }
        }
    }
    if let Some(port) = dynamic.capture {
        b.capture(port);
    }
    b.reserve_macs(plan.endpoints.len() + dynamic.learned.len());
    for e in &plan.endpoints {
        let location = match e.at {
            EndpointAt::Port(p) => Location::Port(ports[p].id),
            EndpointAt::Host(h) => Location::Host(h as HostIdx),
        };
        b.static_mac(e.tenant as TenantIdx, e.mac, location);
    }
    for (&(tenant, mac), learned) in &dynamic.learned {
        b.learned_mac(tenant, mac, learned.location);
    }
    routing(config, &mut b, dynamic);
    b.build()
}

/// The routers, their routes and neighbours, published ports and the way out.
fn routing(config: &Validated, b: &mut TablesBuilder, dynamic: &Dynamic) {
    let plan = &config.switching;
    let gateway = &config.gateway;
    b.nat(gateway.nat);
    let mut snat_here = false;
    for (t, router) in gateway.routers.iter().enumerate() {
        let Some(r) = router else {
            continue;
        };
        let here = r.placement == Placement::Here;
        let location = match r.placement {
            Placement::Here => Location::Router,
            Placement::Host(h) => Location::Host(h as HostIdx),
        };
        snat_here |= here && r.snat_ip.is_some();
        b.router(
            t as TenantIdx,
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
            for &(ip, prefix) in gateway.routers[p].iter().flat_map(|o| &o.interfaces) {
                b.route(
                    t as TenantIdx,
                    ip,
                    prefix,
                    RouteTarget::Direct(p as TenantIdx),
                );
            }
        }
    }
    for route in &gateway.routes {
        if gateway.is_here(route.tenant) {
            let t = route.tenant as TenantIdx;
            let via = route.via_tenant as TenantIdx;
            b.route(t, route.ip, route.prefix, RouteTarget::Via(via, route.via));
        }
    }
    for p in &gateway.published {
        if gateway.is_here(p.tenant) {
            b.publish(
                p.protocol,
                Published {
                    tenant: p.tenant as TenantIdx,
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
        if let Some(ip) = e.ip {
            b.neighbor(e.tenant as TenantIdx, ip, e.mac);
        }
    }
    if let (true, Some(hop)) = (snat_here, plan.underlay_gateway) {
        let mac = plan
            .underlay_gateway_mac
            .or_else(|| dynamic.neighbors.get(&hop).copied());
        b.external(hop, mac);
    }
}
