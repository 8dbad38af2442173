//! The compiler: validated config + what the dataplane learned (MACs, neighbours) →
//! one immutable [`FlowTables`] snapshot. Pure: the same inputs give the same tables.

pub mod delta;
pub mod tenant;

use hashbrown::HashMap;
use std::net::Ipv4Addr;
use std::time::Instant;

use dataplane::packet::{Ipv4Cidr, Mac};
use dataplane::table::builder::TablesBuilder;
use dataplane::table::edit::{PortTables, TableEdit};
use dataplane::table::routing::{neighbor_key, ExternalHop};
use dataplane::table::{Design, FlowTables, HostIdx, Location, PortSecurity, TenantIdx};

use crate::config::gateway::Placement;
use crate::config::switching::{RolePlan, SwitchPlan};
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
    /// The port ids being captured and which of their frames, if any.
    pub capture: Option<(Vec<u16>, dataplane::pipeline::capture::CaptureFilter)>,
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
/// is down, so it has no role); `ids` gives each tenant and host its slot. The tables
/// are the frame ([`frame`]) with every tenant's entries ([`tenant::entries`]) in it,
/// then what the dataplane learned: exactly what [`delta::edits`] brings tables to
/// when a change touched a few tenants.
pub fn compile(
    config: &Validated,
    ports: &[Option<PortInfo>],
    ids: &Ids,
    dynamic: &Dynamic,
) -> FlowTables {
    let plan = &config.switching;
    let mut tables = frame(config, ports, ids, dynamic);
    tables
        .fdb
        .reserve(plan.endpoints.len() + plan.tenants.len() + dynamic.learned.len());
    let members = tenant::Members::of(config, ports, |_| true);
    for t in 0..plan.tenants.len() {
        for edit in tenant::entries(config, ports, ids, &tables, &members, t) {
            tables.apply(&edit);
        }
    }
    for (&(tenant, mac), learned) in &dynamic.learned {
        tables.apply(&TableEdit::Learn {
            tenant,
            mac,
            location: learned.location,
        });
    }
    // Known endpoints first: an ARP claiming an endpoint's address never wins over it.
    for (&(tenant, ip), &(mac, _)) in &dynamic.tenant_neighbors {
        tables
            .neighbors
            .entry(neighbor_key(tenant, ip))
            .or_insert(mac);
    }
    tables
}

/// The tables without any tenant's entries: ports, tunnels, the uplink and the way
/// out, the addresses answered on the uplink, capture and NAT settings.
fn frame(
    config: &Validated,
    ports: &[Option<PortInfo>],
    ids: &Ids,
    dynamic: &Dynamic,
) -> FlowTables {
    let plan = &config.switching;
    let mut b = TablesBuilder::new(plan.design, plan.is_hub());
    b.tunnel_ip_options(plan.tunnel_ttl, plan.tunnel_dont_fragment);
    b.retired(dynamic.retired);
    lay_ports(&mut b, config, ports, ids);
    let underlay = underlay(config, ports);
    if underlay.is_some() {
        lay_tunnels(&mut b, plan, ids, dynamic);
    }
    b.uplink_ips(extra_uplink_ips(config, ids, underlay.map(|u| u.ip)));
    if let Some((ports, filter)) = &dynamic.capture {
        b.capture(ports.iter().copied(), *filter);
    }
    b.nat(config.gateway.nat);
    if let Some(hop) = external_hop(config, ids, dynamic) {
        b.external(hop.ip, hop.mac);
    }
    b.build()
}

/// Every port's role, MTU, security rules and trunk VLANs, and the uplink.
fn lay_ports(b: &mut TablesBuilder, config: &Validated, ports: &[Option<PortInfo>], ids: &Ids) {
    let plan = &config.switching;
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
                b.access_role(port.id, slot, security);
            }
            RolePlan::Trunk(tenants) => {
                let vids: Vec<u16> = tenants
                    .iter()
                    .filter(|&&t| ids.tenant(t).is_some())
                    .filter_map(|&t| plan.tenants[t].vlan)
                    .collect();
                b.trunk_role(port.id, &vids);
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
    }
}

/// The port tables `config` over `ports` compiles to.
pub fn port_tables(config: &Validated, ports: &[Option<PortInfo>], ids: &Ids) -> PortTables {
    let plan = &config.switching;
    let mut b = TablesBuilder::new(plan.design, plan.is_hub());
    lay_ports(&mut b, config, ports, ids);
    PortTables::of(&b.build())
}

/// A tunnel to each host this one keeps one to, and the hosts reached through each.
fn lay_tunnels(b: &mut TablesBuilder, plan: &SwitchPlan, ids: &Ids, dynamic: &Dynamic) {
    let mut hub_tunnel = None;
    for host in tunnel_hosts(plan) {
        let tunnel = b.tunnel(
            ids.host(host),
            plan.hosts[host].ip,
            next_hop_mac(plan, host, dynamic),
        );
        if plan.design == Design::Shared && !plan.is_hub() {
            hub_tunnel = Some(tunnel);
        }
    }
    // A spoke reaches every other host through the hub.
    if let (Some(tunnel), Some(me)) = (hub_tunnel, plan.this_host) {
        for host in (0..plan.hosts.len()).filter(|&h| h != me) {
            b.host_via(ids.host(host), tunnel);
        }
    }
}

/// The addresses this host answers for on the uplink besides `underlay_ip`: the SNAT
/// addresses of the gateways here, and the outside addresses of their published ports.
pub fn extra_uplink_ips(
    config: &Validated,
    ids: &Ids,
    underlay_ip: Option<Ipv4Addr>,
) -> Vec<Ipv4Addr> {
    let gateway = &config.gateway;
    let snat = gateway
        .routers
        .iter()
        .enumerate()
        .filter(|&(t, _)| ids.tenant(t).is_some())
        .filter_map(|(_, r)| r.as_ref().filter(|r| r.placement == Placement::Here))
        .filter_map(|r| r.snat_ip);
    let published = gateway
        .published
        .iter()
        .filter(|p| gateway.is_here(p.tenant) && ids.tenant(p.tenant).is_some())
        .map(|p| p.external_ip);
    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for ip in snat.chain(published) {
        if Some(ip) != underlay_ip && !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips
}

/// The next hop of traffic to the outside world, when a gateway here translates.
pub fn external_hop(config: &Validated, ids: &Ids, dynamic: &Dynamic) -> Option<ExternalHop> {
    let plan = &config.switching;
    let hop = plan.underlay_gateway?;
    let snat_here = config.gateway.routers.iter().enumerate().any(|(t, r)| {
        matches!(r, Some(r) if r.placement == Placement::Here && r.snat_ip.is_some())
            && ids.tenant(t).is_some()
    });
    snat_here.then(|| ExternalHop {
        ip: hop,
        mac: plan
            .underlay_gateway_mac
            .or_else(|| dynamic.neighbors.get(&hop).copied()),
    })
}
