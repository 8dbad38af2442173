//! A change that touched a few tenants (adding or deleting one, its endpoints, routes
//! or published ports, a port of its own) costs what it touched: the touched tenants'
//! shares ([`super::tenant::entries`]) are laid as the config was and as it is, and
//! only the entries that differ become edits of the tables in force. The frame the
//! change may move with them (port tables, the addresses the uplink answers for) is
//! compared whole; when the change moved more (tunnels, the uplink, the way out), the
//! tables are compiled whole instead.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use dataplane::table::edit::TableEdit;
use dataplane::table::{fdb_key_parts, Design, FlowTables, TenantIdx, Uplink, NO_TENANT};

use super::tenant::{self, Members};
use super::{
    external_hop, extra_uplink_ips, port_tables, tunnel_hosts, underlay, Dynamic, Ids, PortInfo,
};
use crate::config::Validated;

/// The config and what it was compiled over, on one side of a change.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The config.
    pub config: &'a Validated,
    /// Ports parallel to its ports.
    pub ports: &'a [Option<PortInfo>],
    /// Slots by its plan positions.
    pub ids: &'a Ids,
    /// What belongs to the touched tenants on this side ([`Members::of`]).
    pub members: &'a Members,
}

/// A tenant a change touched: its plan position before and after (`None`: it was not
/// there, or is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touched {
    /// Position before the change.
    pub before: Option<usize>,
    /// Position after it.
    pub after: Option<usize>,
}

/// Which entry an edit sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Tenant(TenantIdx),
    Vlan(u16),
    Gre(u32),
    Fdb(u64),
    Tunnel(u64),
    Route(u64),
    Neighbor(u64),
    RouterTenant(u64),
    Published(u64),
    PublishedInside(u128),
}

fn key_of(edit: &TableEdit) -> Option<Key> {
    Some(match *edit {
        TableEdit::Tenant(slot, _) => Key::Tenant(slot),
        TableEdit::VlanTenant(vid, _) => Key::Vlan(vid),
        TableEdit::KeyTenant(key, _) => Key::Gre(key),
        TableEdit::Fdb(key, _) => Key::Fdb(key),
        TableEdit::TunnelTenant(key, _) => Key::Tunnel(key),
        TableEdit::Route(key, _) => Key::Route(key),
        TableEdit::Neighbor(key, _) => Key::Neighbor(key),
        TableEdit::RouterTenant(key, _) => Key::RouterTenant(key),
        TableEdit::Published(key, _) => Key::Published(key),
        TableEdit::PublishedInside(key, _) => Key::PublishedInside(key),
        _ => return None,
    })
}

/// What the tables hold at `key` once no tenant's share sets it: nothing, or what the
/// dataplane learned there (a MAC, a router's neighbour), as the compiler lays it.
fn unset(key: Key, dynamic: &Dynamic) -> TableEdit {
    match key {
        Key::Tenant(slot) => TableEdit::Tenant(slot, None),
        Key::Vlan(vid) => TableEdit::VlanTenant(vid, NO_TENANT),
        Key::Gre(key) => TableEdit::KeyTenant(key, None),
        Key::Fdb(key) => {
            let (tenant, mac) = fdb_key_parts(key);
            match dynamic.learned.get(&(tenant, mac)) {
                Some(learned) => TableEdit::Learn {
                    tenant,
                    mac,
                    location: learned.location,
                },
                None => TableEdit::Fdb(key, None),
            }
        }
        Key::Tunnel(key) => TableEdit::TunnelTenant(key, false),
        Key::Route(key) => TableEdit::Route(key, None),
        Key::Neighbor(key) => {
            let (tenant, ip) = ((key >> 32) as TenantIdx, Ipv4Addr::from(key as u32));
            let learned = dynamic
                .tenant_neighbors
                .get(&(tenant, ip))
                .map(|&(mac, _)| mac);
            TableEdit::Neighbor(key, learned)
        }
        Key::RouterTenant(key) => TableEdit::RouterTenant(key, None),
        Key::Published(key) => TableEdit::Published(key, None),
        Key::PublishedInside(key) => TableEdit::PublishedInside(key, None),
    }
}

/// The edits that take `tables` (compiled from `before`, with `dynamic` learned) to
/// what `after` compiles to, when the change between them touched only `touched` and,
/// if `ports_changed`, the ports; `None` when it moved more than that (compile whole).
pub fn edits(
    before: Side<'_>,
    after: Side<'_>,
    tables: &FlowTables,
    dynamic: &Dynamic,
    touched: &[Touched],
    ports_changed: bool,
) -> Option<Vec<TableEdit>> {
    let uplink = underlay(after.config, after.ports).map(|u| Uplink {
        port: u.port,
        mac: u.mac,
        ip: u.ip,
    });
    if uplink != tables.uplink {
        return None;
    }
    let has_hosts = |side: &Side<'_>, t: Option<usize>| {
        t.is_some_and(|t| !side.config.switching.tenants[t].hosts.is_empty())
    };
    let hosts_touched = touched
        .iter()
        .any(|t| has_hosts(&before, t.before) || has_hosts(&after, t.after));
    if uplink.is_some() && hosts_touched && tunnels_move(&before, &after, tables, touched) {
        return None;
    }
    let reaches_out = |side: &Side<'_>, t: Option<usize>| {
        t.is_some_and(|t| {
            let gateway = &side.config.gateway;
            gateway.routers[t]
                .as_ref()
                .is_some_and(|r| r.snat_ip.is_some())
                || gateway.published.iter().any(|p| p.tenant == t)
        })
    };
    let mut edits = Vec::new();
    if touched
        .iter()
        .any(|t| reaches_out(&before, t.before) || reaches_out(&after, t.after))
    {
        if external_hop(after.config, after.ids, dynamic) != tables.external {
            return None;
        }
        let ips = extra_uplink_ips(after.config, after.ids, uplink.map(|u| u.ip));
        if ips != tables.uplink_ips {
            edits.push(TableEdit::UplinkIps(ips));
        }
    }
    if ports_changed {
        let ports = port_tables(after.config, after.ports, after.ids);
        if !ports.in_force(tables) {
            edits.push(TableEdit::Ports(Box::new(ports)));
        }
    }
    let shares = |side: Side<'_>, positions: Vec<usize>| {
        let mut share: HashMap<Key, TableEdit> = HashMap::new();
        for &t in &positions {
            for edit in tenant::entries(side.config, side.ports, side.ids, tables, side.members, t)
            {
                if let Some(key) = key_of(&edit) {
                    share.insert(key, edit);
                }
            }
        }
        share
    };
    let was = shares(before, touched.iter().filter_map(|t| t.before).collect());
    let now = shares(after, touched.iter().filter_map(|t| t.after).collect());
    // What goes first: a key another touched tenant takes now is set after.
    edits.extend(
        was.keys()
            .filter(|key| !now.contains_key(*key))
            .map(|&key| unset(key, dynamic)),
    );
    edits.extend(
        now.into_iter()
            .filter(|(key, edit)| was.get(key) != Some(edit))
            .map(|(_, edit)| edit),
    );
    Some(edits)
}

/// Whether the hosts this one keeps tunnels to differ after the change. Only the
/// dedicated design ties them to the tenants (the union of their hosts), and there
/// only the touched tenants differ: a host they gained is new when no tunnel of
/// `tables` reaches it; a host they lost may have been the last tenant's, which takes
/// a walk over every tenant (a tenant leaving a host: rare).
fn tunnels_move(
    before: &Side<'_>,
    after: &Side<'_>,
    tables: &FlowTables,
    touched: &[Touched],
) -> bool {
    let (plan_before, plan_after) = (&before.config.switching, &after.config.switching);
    if plan_after.design != Design::Dedicated {
        return tunnel_hosts(plan_before) != tunnel_hosts(plan_after);
    }
    let hosts = |side: &Side<'_>, at: fn(&Touched) -> Option<usize>| {
        let tenants = &side.config.switching.tenants;
        let mut hosts: Vec<usize> = touched
            .iter()
            .filter_map(at)
            .flat_map(|t| tenants[t].hosts.iter().copied())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        hosts
    };
    let (had, has) = (hosts(before, |t| t.before), hosts(after, |t| t.after));
    if had.iter().any(|h| !has.contains(h)) {
        return tunnel_hosts(plan_before) != tunnel_hosts(plan_after);
    }
    has.iter().filter(|h| !had.contains(h)).any(|&h| {
        let slot = after.ids.host(h);
        !tables.tunnels.iter().any(|tunnel| tunnel.host == slot)
    })
}
