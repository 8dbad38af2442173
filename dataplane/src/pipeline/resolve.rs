//! Where a destination MAC in a tenant leads ([`Out`]): its FDB entry resolved to a
//! port of that tenant, a host's tunnel or the router, with the tenant check of ports
//! that is the last word on isolation. The switch, the router and the output stage
//! all ask here.

use crate::counters::DropReason;
use crate::packet::Mac;
use crate::table::{FdbEntry, FlowTables, Location, PortRole, TenantIdx};

use super::fdb_cache::Out;

/// How a frame to `mac` in `tenant` leaves, without the cache (routed frames cache
/// the whole decision themselves).
pub(crate) fn resolve_in(tables: &FlowTables, tenant: TenantIdx, mac: &Mac) -> Out {
    resolve(tables, tenant, tables.lookup(tenant, mac))
}

/// What a frame to a destination with FDB entry `entry` in `tenant` needs.
#[inline(always)]
pub(crate) fn resolve(tables: &FlowTables, tenant: TenantIdx, entry: Option<FdbEntry>) -> Out {
    let Some(entry) = entry else {
        return Out::Flood;
    };
    match entry.location {
        Location::Router => Out::Route,
        Location::Port(port) => port_out(tables, tenant, port),
        Location::Host(host) => {
            match tables.host_tunnel.get(usize::from(host)).copied().flatten() {
                Some(tunnel) => Out::Tunnel(tunnel),
                None => Out::Drop(DropReason::NoOutput),
            }
        }
    }
}

/// How a frame of `tenant` leaves `port`: as is on an access port of that tenant,
/// tagged on a trunk carrying it, nowhere else. The check is the last word on
/// isolation: whatever an FDB entry says (a MAC learned on a port whose id a
/// later port of another tenant took), a frame never leaves through another tenant's
/// port.
#[inline(always)]
pub(crate) fn port_out(tables: &FlowTables, tenant: TenantIdx, port: u16) -> Out {
    match tables.role(port) {
        PortRole::Access { tenant: owner, .. } if *owner == tenant => Out::Port(port),
        PortRole::Access { .. } => Out::Drop(DropReason::ForeignPort),
        PortRole::Trunk => match tables.tenant_vlan(tenant) {
            Some(vid) if tables.trunk_tenant(port, vid) == Some(tenant) => {
                Out::TaggedPort(port, vid)
            }
            _ => Out::Drop(DropReason::UnknownVlan),
        },
        _ => Out::Drop(DropReason::NoOutput),
    }
}
