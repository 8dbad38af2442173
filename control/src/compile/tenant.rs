//! One tenant's share of the tables: its slot's table (flood ports, tunnels, router),
//! its VLAN and GRE key, its router's MAC and routes, its endpoints' MACs and
//! addresses, its published ports. The compiler lays every tenant's share; a change
//! that touched a few tenants lays only theirs ([`super::delta`]).

use hashbrown::HashMap;

use dataplane::table::edit::TableEdit;
use dataplane::table::routing::{
    neighbor_key, published_inside_key, published_key, route_key, Interface, Published,
    RouteTarget, Router,
};
use dataplane::table::{
    fdb_key, tunnel_tenant_key, Design, FdbEntry, FlowTables, Location, TenantTable, TunnelIdx,
};

use super::{Ids, PortInfo};
use crate::config::gateway::Placement;
use crate::config::switching::{EndpointAt, RolePlan};
use crate::config::{items, Validated};

/// What of the config's lists belongs to which tenants (by plan position): gathered in
/// one pass over each list, for every tenant or for the few a change touched.
#[derive(Debug, Default)]
pub struct Members {
    /// Ids of the ports that flood to each tenant, in port order.
    flood: HashMap<usize, Vec<u16>>,
    /// Each tenant's endpoints (positions in the plan's list).
    endpoints: HashMap<usize, Vec<usize>>,
    /// Each tenant's static routes.
    routes: HashMap<usize, Vec<usize>>,
    /// Each tenant's published ports.
    published: HashMap<usize, Vec<usize>>,
}

impl Members {
    /// Positions in the plan's list of tenant `t`'s endpoints (`t` among those
    /// gathered).
    pub fn endpoints_of(&self, t: usize) -> &[usize] {
        self.endpoints.get(&t).map_or(&[], Vec::as_slice)
    }

    /// The members of the tenants `wanted` says yes to.
    pub fn of(
        config: &Validated,
        ports: &[Option<PortInfo>],
        wanted: impl Fn(usize) -> bool,
    ) -> Self {
        let plan = &config.switching;
        let gateway = &config.gateway;
        let mut members = Self::default();
        for (role, port) in plan.roles.iter().zip(ports) {
            let Some(port) = port else {
                continue;
            };
            match role {
                RolePlan::Access { tenant, .. } if wanted(*tenant) => {
                    members.flood.entry(*tenant).or_default().push(port.id);
                }
                RolePlan::Trunk(tenants) => {
                    for &t in tenants {
                        if wanted(t) && plan.tenants[t].vlan.is_some() {
                            members.flood.entry(t).or_default().push(port.id);
                        }
                    }
                }
                _ => {}
            }
        }
        fn by_tenant(
            list: &mut HashMap<usize, Vec<usize>>,
            tenants: impl Iterator<Item = usize>,
            wanted: &impl Fn(usize) -> bool,
        ) {
            for (i, t) in tenants.enumerate() {
                if wanted(t) {
                    list.entry(t).or_default().push(i);
                }
            }
        }
        let endpoints = items(&plan.endpoints).map(|e| e.tenant);
        by_tenant(&mut members.endpoints, endpoints, &wanted);
        let routes = gateway.routes.iter().map(|r| r.tenant);
        by_tenant(&mut members.routes, routes, &wanted);
        let published = gateway.published.iter().map(|p| p.tenant);
        by_tenant(&mut members.published, published, &wanted);
        members
    }

    fn of_tenant<T>(list: &HashMap<usize, Vec<T>>, t: usize) -> &[T] {
        list.get(&t).map_or(&[], Vec::as_slice)
    }
}

/// Every entry tenant `t` (a plan position) puts in the tables, as edits that set
/// them, in the order the compiler lays them (a later one of the same key wins). None
/// for a tenant without a slot. `tables` gives the tunnels ([`super::frame`]).
pub fn entries(
    config: &Validated,
    ports: &[Option<PortInfo>],
    ids: &Ids,
    tables: &FlowTables,
    members: &Members,
    t: usize,
) -> Vec<TableEdit> {
    let plan = &config.switching;
    let gateway = &config.gateway;
    let Some(slot) = ids.tenant(t) else {
        return Vec::new();
    };
    let tenant = &plan.tenants[t];
    let mut edits = Vec::new();
    if let Some(vid) = tenant.vlan {
        edits.push(TableEdit::VlanTenant(vid, slot));
    }
    edits.push(TableEdit::KeyTenant(tenant.id, Some(slot)));
    let tunnels = tunnels_of(plan.design, tables, ids, &tenant.hosts);
    for &tunnel in &tunnels {
        edits.push(TableEdit::TunnelTenant(
            tunnel_tenant_key(tunnel, slot),
            true,
        ));
    }
    let router = gateway.routers[t].as_ref().map(|r| {
        let here = r.placement == Placement::Here;
        let location = match r.placement {
            Placement::Here => Location::Router,
            Placement::Host(h) => Location::Host(ids.host(h)),
        };
        edits.push(static_mac(slot, r.mac, location));
        edits.push(TableEdit::RouterTenant(fdb_key(0, &r.mac), Some(slot)));
        let mut route_lengths = 0u64;
        let mut route = |ip, prefix: u8, target| {
            let prefix = prefix.min(32);
            route_lengths |= 1 << prefix;
            edits.push(TableEdit::Route(route_key(slot, prefix, ip), Some(target)));
        };
        for &(ip, prefix) in &r.interfaces {
            route(ip, prefix, RouteTarget::Direct(slot));
        }
        if here {
            for &p in &r.peers {
                let Some(peer) = ids.tenant(p) else {
                    continue;
                };
                for &(ip, prefix) in gateway.routers[p].iter().flat_map(|o| &o.interfaces) {
                    route(ip, prefix, RouteTarget::Direct(peer));
                }
            }
            for &i in Members::of_tenant(&members.routes, t) {
                let r = &gateway.routes[i];
                if let Some(via) = ids.tenant(r.via_tenant) {
                    route(r.ip, r.prefix, RouteTarget::Via(via, r.via));
                }
            }
        }
        Router {
            mac: r.mac,
            interfaces: r
                .interfaces
                .iter()
                .map(|&(ip, prefix)| Interface { ip, prefix })
                .collect(),
            here,
            snat_ip: r.snat_ip.filter(|_| here),
            route_lengths,
            max_connections: r.max_connections,
        }
    });
    edits.push(TableEdit::Tenant(
        slot,
        Some(Box::new(TenantTable {
            id: tenant.id,
            vlan: tenant.vlan,
            flood_ports: Members::of_tenant(&members.flood, t).to_vec(),
            tunnels,
            router,
        })),
    ));
    for &i in Members::of_tenant(&members.endpoints, t) {
        let e = &plan.endpoints[i];
        let location = match e.at {
            EndpointAt::Port(p) => ports
                .get(p)
                .copied()
                .flatten()
                .map(|p| Location::Port(p.id)),
            EndpointAt::Host(h) => Some(Location::Host(ids.host(h))),
        };
        if let Some(location) = location {
            edits.push(static_mac(slot, e.mac, location));
        }
        if let Some(ip) = e.ip {
            edits.push(TableEdit::Neighbor(neighbor_key(slot, ip), Some(e.mac)));
        }
    }
    if gateway.is_here(t) {
        for &i in Members::of_tenant(&members.published, t) {
            let p = &gateway.published[i];
            let published = Published {
                tenant: slot,
                ip: p.ip,
                port: p.port,
                external_ip: p.external_ip,
                external_port: p.host_port,
            };
            edits.push(TableEdit::Published(
                published_key(p.protocol, p.external_ip, p.host_port),
                Some(published),
            ));
            edits.push(TableEdit::PublishedInside(
                published_inside_key(slot, p.protocol, p.ip, p.port),
                Some(published),
            ));
        }
    }
    edits
}

fn static_mac(
    slot: dataplane::table::TenantIdx,
    mac: dataplane::packet::Mac,
    location: Location,
) -> TableEdit {
    TableEdit::Fdb(
        fdb_key(slot, &mac),
        Some(FdbEntry {
            location,
            is_static: true,
        }),
    )
}

/// The tunnels that carry a tenant on `hosts` (other hosts, plan positions), lowest
/// first: in the shared design every tunnel carries every tenant.
fn tunnels_of(design: Design, tables: &FlowTables, ids: &Ids, hosts: &[usize]) -> Vec<TunnelIdx> {
    let mut tunnels: Vec<TunnelIdx> = match design {
        Design::Shared => (0..tables.tunnels.len() as TunnelIdx).collect(),
        Design::Dedicated => hosts
            .iter()
            .filter_map(|&h| {
                let slot = usize::from(ids.host(h));
                tables.host_tunnel.get(slot).copied().flatten()
            })
            .collect(),
    };
    tunnels.sort_unstable();
    tunnels.dedup();
    tunnels
}
