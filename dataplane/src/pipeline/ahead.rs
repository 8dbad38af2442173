//! What a burst's prefetch pass learned about each frame (its FDB keys and its route
//! key, each with its hash), kept for the stages, so a frame's keys are hashed once:
//! the pass hashes them to find what to prefetch, and the switch and the router take
//! the same hashes for their lookups (VPP's bihash passes a key's hash from its
//! prefetch to its search the same way).

use crate::dpdk::BURST;
use crate::table::FlowTables;

/// A key with its hash: made only by hashing the key, so a lookup given one never
/// searches with another key's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub(crate) key: u64,
    /// The FDB's hash of the key (every FDB of the process hashes alike): its low bits
    /// are the key's slot in the table, its top bits in a per-core cache.
    pub(crate) hash: u64,
}

impl Hashed {
    /// An FDB key ([`crate::table::fdb_key`]) with its hash.
    #[inline(always)]
    pub fn fdb(tables: &FlowTables, key: u64) -> Self {
        Self {
            key,
            hash: tables.fdb.hash(key),
        }
    }

    /// A route key ([`crate::table::routing::neighbor_key`]) with its hash, the FDB's
    /// hash too: seeded, so no tenant can choose destinations whose route slots push
    /// another tenant's out of a core's cache.
    #[inline(always)]
    pub fn route(tables: &FlowTables, key: u64) -> Self {
        Self::fdb(tables, key)
    }
}

/// No key: the broadcast MAC's FDB key, which no lookup uses (a group destination is
/// flooded and a group source dropped before theirs), and no route key (those keep
/// their top 16 bits clear).
const NONE: Hashed = Hashed {
    key: u64::MAX,
    hash: 0,
};

/// One burst's keys by the frame's place in it: its destination and source MACs' FDB
/// keys, and its IPv4 destination's route key. A place the pass skipped holds no key,
/// and a stage that finds another key than its own (a frame the classifier saw
/// differently, a frame of a burst the pass did not see) hashes its own: a wrong hash
/// is never used. Places past a burst's 32 wrap around (never in a worker), which the
/// key check makes harmless too.
pub struct Ahead {
    macs: [(Hashed, Hashed); BURST],
    macs_len: usize,
    routes: [Hashed; BURST],
    routes_len: usize,
}

impl Default for Ahead {
    fn default() -> Self {
        Self {
            macs: [(NONE, NONE); BURST],
            macs_len: 0,
            routes: [NONE; BURST],
            routes_len: 0,
        }
    }
}

impl Ahead {
    /// A new burst: nothing known of its frames yet.
    #[inline(always)]
    pub fn start(&mut self) {
        self.macs_len = 0;
        self.routes_len = 0;
    }

    /// Keeps the MAC keys of the frame at `at` (in order: every earlier place was set).
    #[inline(always)]
    pub fn set_macs(&mut self, at: usize, dst: Hashed, src: Hashed) {
        self.macs[at % BURST] = (dst, src);
        self.macs_len = at + 1;
    }

    /// Keeps the MAC keys the pass found for the frame at `at`, if it found them.
    #[inline(always)]
    pub fn keep_macs(&mut self, at: usize, keys: Option<(Hashed, Hashed)>) {
        match keys {
            Some((dst, src)) => self.set_macs(at, dst, src),
            None => self.skip_macs(at),
        }
    }

    /// Marks the frame at `at` as one whose MACs the pass did not look at.
    #[inline(always)]
    pub fn skip_macs(&mut self, at: usize) {
        self.set_macs(at, NONE, NONE);
    }

    /// Keeps the route key of the frame at `at` (in order, as [`Ahead::set_macs`]).
    #[inline(always)]
    pub fn set_route(&mut self, at: usize, route: Hashed) {
        self.routes[at % BURST] = route;
        self.routes_len = at + 1;
    }

    /// Marks the frame at `at` as one without a route key.
    #[inline(always)]
    pub fn skip_route(&mut self, at: usize) {
        self.set_route(at, NONE);
    }

    /// The frame at `at`'s destination key `key` with its hash, hashed now unless the
    /// pass did.
    #[inline(always)]
    pub fn destination(&self, tables: &FlowTables, at: usize, key: u64) -> Hashed {
        kept_or_hashed(tables, self.macs[at % BURST].0, at < self.macs_len, key)
    }

    /// The frame at `at`'s source key `key` with its hash, hashed now unless the pass
    /// did.
    #[inline(always)]
    pub fn source(&self, tables: &FlowTables, at: usize, key: u64) -> Hashed {
        kept_or_hashed(tables, self.macs[at % BURST].1, at < self.macs_len, key)
    }

    /// The frame at `at`'s route key with its hash, hashed now unless the pass did
    /// (route keys take the FDB's hash, [`Hashed::route`]).
    #[inline(always)]
    pub fn route(&self, tables: &FlowTables, at: usize, key: u64) -> Hashed {
        kept_or_hashed(tables, self.routes[at % BURST], at < self.routes_len, key)
    }
}

/// `kept` if the pass set it (`set`) for this very `key`, else `key` hashed now.
#[inline(always)]
fn kept_or_hashed(tables: &FlowTables, kept: Hashed, set: bool, key: u64) -> Hashed {
    if set && kept.key == key {
        return kept;
    }
    Hashed::fdb(tables, key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::fdb_key;

    #[test]
    fn a_frame_gets_the_hashes_kept_for_its_own_keys_only() {
        let tables = FlowTables::default();
        let key = |last| fdb_key(1, &[2, 0, 0, 0, 0, last]);
        let mut ahead = Ahead::default();
        ahead.start();
        // A hash that is not the key's: handed out only if the keys are checked wrong.
        let planted = |k| Hashed { key: k, hash: 7 };
        ahead.set_macs(0, planted(key(1)), planted(key(2)));
        ahead.skip_macs(1);
        ahead.set_macs(2, planted(key(5)), planted(key(6)));
        assert_eq!(ahead.destination(&tables, 0, key(1)), planted(key(1)));
        assert_eq!(ahead.source(&tables, 0, key(2)), planted(key(2)));
        // Lookups whose kept key is not their own: hashed afresh.
        let fresh = |k| Hashed::fdb(&tables, k);
        for (got, k, why) in [
            (ahead.destination(&tables, 0, key(2)), key(2), "a source's"),
            (ahead.source(&tables, 0, key(1)), key(1), "a destination's"),
            (ahead.destination(&tables, 1, key(1)), key(1), "skipped"),
            (ahead.destination(&tables, 2, key(1)), key(1), "another's"),
            (ahead.source(&tables, 3, key(6)), key(6), "past the end"),
        ] {
            assert_eq!(got, fresh(k), "{why}");
        }
        assert_eq!(ahead.destination(&tables, 2, key(5)), planted(key(5)));
        ahead.start();
        assert_eq!(
            ahead.destination(&tables, 0, key(1)),
            fresh(key(1)),
            "a new burst"
        );

        ahead.set_route(0, Hashed { key: 9, hash: 7 });
        ahead.skip_route(1);
        assert_eq!(ahead.route(&tables, 0, 9).hash, 7);
        let route = |k| Hashed::route(&tables, k);
        assert_eq!(ahead.route(&tables, 0, 10), route(10));
        assert_eq!(ahead.route(&tables, 1, 9), route(9));
        assert_eq!(ahead.route(&tables, BURST, 9), route(9), "past the pass");
    }

    #[test]
    fn every_fdb_hashes_a_key_alike() {
        // The learner's memo is indexed by FDB hashes and outlives snapshots.
        let key = fdb_key(3, &[2, 0, 0, 0, 0, 1]);
        assert_eq!(
            Hashed::fdb(&FlowTables::default(), key),
            Hashed::fdb(&FlowTables::default(), key)
        );
    }
}
