//! Small changes made to a copy of the tables in place, so that what changes often
//! (MACs learned and aged) costs what it changes rather than a whole compile: the
//! control plane keeps the snapshot workers used before the last publish
//! ([`super::publish::Spare`]), brings it up to date with the edits it missed, makes
//! the new ones, and publishes it again (left-right). The result is exactly what the
//! compiler would build from the same facts.

use super::{fdb_key, FdbEntry, FlowTables, Location, TenantIdx};
use crate::packet::Mac;

/// One change to the tables that needs no compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl FlowTables {
    /// Makes `edit`.
    pub fn apply(&mut self, edit: &TableEdit) {
        match *edit {
            TableEdit::Learn {
                tenant,
                mac,
                location,
            } => {
                let entry = self.fdb.entry(fdb_key(tenant, &mac)).or_insert(FdbEntry {
                    location,
                    is_static: false,
                });
                if !entry.is_static {
                    entry.location = location;
                }
            }
            TableEdit::Forget { tenant, mac } => {
                let key = fdb_key(tenant, &mac);
                if self.fdb.get(&key).is_some_and(|e| !e.is_static) {
                    self.fdb.remove(&key);
                }
            }
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
        let at = |tables: &FlowTables, mac: &Mac| tables.fdb.get(&fdb_key(t, mac)).copied();
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
