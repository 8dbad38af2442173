//! A per-core exact-match cache in front of the FDB (OVS's EMC, VPP's one-entry
//! caches): a direct-mapped array answers most lookups with one probe instead of a hash
//! table walk, and a memo of the last source skips learning work for back-to-back
//! frames of one sender. Valid for one snapshot: cleared whenever the worker moves to
//! a new one.

use crate::table::{FdbEntry, FlowTables, Location};

const SLOTS: usize = 256;
/// A key no lookup uses (tenant `NO_TENANT`, MAC ff:ff:ff:ff:ff:ff).
const EMPTY: u64 = u64::MAX;

/// The cache of one worker.
pub struct FdbCache {
    slots: Box<[(u64, Option<FdbEntry>); SLOTS]>,
    last_source: Option<(u64, Location, u32)>,
}

impl Default for FdbCache {
    fn default() -> Self {
        Self {
            slots: Box::new([(EMPTY, None); SLOTS]),
            last_source: None,
        }
    }
}

impl FdbCache {
    /// Forgets everything (a new snapshot is in use).
    pub fn clear(&mut self) {
        self.slots.fill((EMPTY, None));
        self.last_source = None;
    }

    /// `tables.fdb[key]`, from the cache when possible.
    #[inline(always)]
    pub fn lookup(&mut self, tables: &FlowTables, key: u64) -> Option<FdbEntry> {
        let slot = &mut self.slots[(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize];
        if slot.0 == key {
            return slot.1;
        }
        let found = tables.fdb.get(&key).copied();
        *slot = (key, found);
        found
    }

    /// Whether the previous frame came from the same source and place within the same
    /// second (so its checks and learning need not run again).
    #[inline(always)]
    pub fn same_source(&self, key: u64, here: Location, now: u32) -> bool {
        self.last_source == Some((key, here, now))
    }

    /// Remembers the source whose checks and learning just ran.
    #[inline(always)]
    pub fn set_source(&mut self, key: u64, here: Location, now: u32) {
        self.last_source = Some((key, here, now));
    }
}
