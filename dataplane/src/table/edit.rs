//! Small changes made to a copy of the tables in place, so that a change costs what it
//! changes rather than a whole compile: the control plane keeps a few snapshots workers
//! used before ([`super::publish::Spare`]), brings one no worker holds up to date with
//! the edits it missed, makes the new ones, and publishes it again (left-right). What
//! changes often (MACs learned and aged) and what one API change touches (a tenant's
//! entries, the port roles) both go this way. The result is exactly what the compiler
//! would build from the same facts.

use std::net::Ipv4Addr;

use super::routing::{Published, RouteTarget};
use super::{
    fdb_key, FastMap, FdbEntry, FlowTables, Location, PortRole, PortSecurity, TenantIdx,
    TenantTable,
};
use crate::packet::Mac;

/// One change to the tables that needs no compile. `None` in a keyed entry removes it.
#[derive(Debug, Clone, PartialEq)]
pub enum TableEdit {
    /// A MAC learned at `location`, or moved there (a static entry stays as it is, as
    /// when the compiler adds learned MACs after the static ones).
    Learn {
        /// Its tenant.
        tenant: TenantIdx,
        /// The MAC.
        mac: Mac,
        /// Where it was seen.
        location: Location,
    },
    /// A learned MAC forgotten (aged out); a static entry stays.
    Forget {
        /// Its tenant.
        tenant: TenantIdx,
        /// The MAC.
        mac: Mac,
    },
    /// A tenant's slot filled (or its table replaced) or emptied.
    Tenant(TenantIdx, Option<Box<TenantTable>>),
    /// A VLAN id given to a tenant, or to none ([`super::NO_TENANT`]).
    VlanTenant(u16, TenantIdx),
    /// A GRE key given to a tenant, or to none.
    KeyTenant(u32, Option<TenantIdx>),
    /// An FDB entry set whatever was there (static entries), or removed.
    Fdb(u64, Option<FdbEntry>),
    /// Whether a tunnel carries a tenant; see [`super::tunnel_tenant_key`].
    TunnelTenant(u64, bool),
    /// A route; see [`super::routing::route_key`].
    Route(u64, Option<RouteTarget>),
    /// A router neighbour; see [`super::routing::neighbor_key`].
    Neighbor(u64, Option<Mac>),
    /// A router MAC's tenant.
    RouterTenant(u64, Option<TenantIdx>),
    /// A published port by outside address; see [`super::routing::published_key`].
    Published(u64, Option<Published>),
    /// A published port by inside address; see
    /// [`super::routing::published_inside_key`].
    PublishedInside(u128, Option<Published>),
    /// Every port's role, MTU, security rules and trunk VLANs at once (a port came or
    /// went: they are few, and security rule indexes follow the port order).
    Ports(Box<PortTables>),
    /// The addresses answered on the uplink besides its own.
    UplinkIps(Vec<Ipv4Addr>),
    /// [`FlowTables::retired`].
    Retired(u64),
}

/// The tables indexed by port id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortTables {
    /// [`FlowTables::ports`].
    pub ports: Vec<PortRole>,
    /// [`FlowTables::port_mtu`].
    pub port_mtu: Vec<u16>,
    /// [`FlowTables::port_security`].
    pub port_security: Vec<PortSecurity>,
    /// [`FlowTables::trunk_vlans`].
    pub trunk_vlans: Vec<Option<Box<[u64; 64]>>>,
}

impl PortTables {
    /// The port tables of `tables`.
    pub fn of(tables: &FlowTables) -> Self {
        Self {
            ports: tables.ports.clone(),
            port_mtu: tables.port_mtu.clone(),
            port_security: tables.port_security.clone(),
            trunk_vlans: tables.trunk_vlans.clone(),
        }
    }

    /// Whether `tables` has these.
    pub fn in_force(&self, tables: &FlowTables) -> bool {
        self.ports == tables.ports
            && self.port_mtu == tables.port_mtu
            && self.port_security == tables.port_security
            && self.trunk_vlans == tables.trunk_vlans
    }
}

fn set<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(value) => {
            map.insert(key, value);
        }
        None => {
            map.remove(&key);
        }
    }
}

impl FlowTables {
    /// Makes `edit`.
    pub fn apply(&mut self, edit: &TableEdit) {
        match edit {
            &TableEdit::Learn {
                tenant,
                mac,
                location,
            } => {
                let key = fdb_key(tenant, &mac);
                if !self.fdb.get(key).is_some_and(|e| e.is_static) {
                    let learned = FdbEntry {
                        location,
                        is_static: false,
                    };
                    self.set_fdb(key, learned);
                }
            }
            &TableEdit::Forget { tenant, mac } => {
                let key = fdb_key(tenant, &mac);
                if self.fdb.get(key).is_some_and(|e| !e.is_static) {
                    self.fdb.remove(key);
                }
            }
            TableEdit::Tenant(slot, table) => self.set_tenant(*slot, table.as_deref().cloned()),
            &TableEdit::VlanTenant(vid, tenant) => {
                self.vlan_tenant[usize::from(vid & 0x0fff)] = tenant;
            }
            &TableEdit::KeyTenant(key, tenant) => set(&mut self.key_tenant, key, tenant),
            &TableEdit::Fdb(key, entry) => match entry {
                Some(entry) => self.set_fdb(key, entry),
                None => {
                    self.fdb.remove(key);
                }
            },
            &TableEdit::TunnelTenant(key, carried) => {
                set(&mut self.tunnel_tenants, key, carried.then_some(()))
            }
            &TableEdit::Route(key, target) => set(&mut self.routes, key, target),
            &TableEdit::Neighbor(key, mac) => set(&mut self.neighbors, key, mac),
            &TableEdit::RouterTenant(key, tenant) => set(&mut self.router_tenant, key, tenant),
            &TableEdit::Published(key, entry) => set(&mut self.published, key, entry),
            &TableEdit::PublishedInside(key, entry) => set(&mut self.published_inside, key, entry),
            TableEdit::Ports(ports) => {
                self.ports.clone_from(&ports.ports);
                self.port_mtu.clone_from(&ports.port_mtu);
                self.port_security.clone_from(&ports.port_security);
                self.trunk_vlans.clone_from(&ports.trunk_vlans);
            }
            TableEdit::UplinkIps(ips) => self.uplink_ips.clone_from(ips),
            &TableEdit::Retired(retired) => self.retired = retired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::builder::TablesBuilder;
    use crate::table::Design;

    #[test]
    fn learning_never_moves_a_static_entry_and_forgetting_never_removes_one() {
        let mut b = TablesBuilder::new(Design::Dedicated, false);
        let t = b.tenant(7, None);
        b.static_mac(t, [2, 0, 0, 0, 0, 1], Location::Port(1));
        let mut tables = b.build();
        let fixed = [2, 0, 0, 0, 0, 1];
        let roaming = [2, 0, 0, 0, 0, 2];
        for edit in [
            TableEdit::Learn {
                tenant: t,
                mac: fixed,
                location: Location::Port(3),
            },
            TableEdit::Learn {
                tenant: t,
                mac: roaming,
                location: Location::Port(3),
            },
            TableEdit::Learn {
                tenant: t,
                mac: roaming,
                location: Location::Port(4),
            },
            TableEdit::Forget {
                tenant: t,
                mac: fixed,
            },
        ] {
            tables.apply(&edit);
        }
        let at = |tables: &FlowTables, mac: &Mac| tables.fdb.get(fdb_key(t, mac));
        assert_eq!(
            at(&tables, &fixed),
            Some(FdbEntry {
                location: Location::Port(1),
                is_static: true
            })
        );
        assert_eq!(
            at(&tables, &roaming),
            Some(FdbEntry {
                location: Location::Port(4),
                is_static: false
            })
        );
        tables.apply(&TableEdit::Forget {
            tenant: t,
            mac: roaming,
        });
        assert_eq!(at(&tables, &roaming), None);
    }
}
