//! What a burst's prefetch pass learned about each frame (its FDB keys, its route key,
//! its GRE tunnel key and its SNAT session key, each with its hash), kept for the
//! stages, so a frame's keys are hashed once: the pass hashes them to find what to
//! prefetch, and the switch, the decapsulation and the router take the same hashes for
//! their lookups (VPP's bihash passes a key's hash from its prefetch to its search the
//! same way).

use super::nat::{Flow, InsideKey, NatTable};
use crate::dpdk::BURST;
use crate::table::{FlowTables, TenantIdx};

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

    /// The key of GRE from `peer` with GRE key `key` (0 for none) in a core's cache of
    /// decapsulation decisions, with the FDB's hash too: seeded, so no sender can pick
    /// keys that push a tenant's decision out.
    #[inline(always)]
    pub fn tunnel(tables: &FlowTables, peer: u32, key: u32) -> Self {
        Self::fdb(tables, tunnel_key(peer, key))
    }
}

/// GRE's peer and key in one cache key.
#[inline(always)]
pub(crate) fn tunnel_key(peer: u32, key: u32) -> u64 {
    u64::from(peer) << 32 | u64::from(key)
}

/// No key: the broadcast MAC's FDB key, which no lookup uses (a group destination is
/// flooded and a group source dropped before theirs), and no route key (those keep
/// their top 16 bits clear).
const NONE: Hashed = Hashed {
    key: u64::MAX,
    hash: 0,
};

/// One burst's keys by the frame's place in it: its destination and source MACs' FDB
/// keys, its IPv4 destination's route key, its GRE peer and key, its SNAT session's
/// inside key. A place the pass skipped holds no key, and a stage that finds another
/// key than its own (a frame the classifier saw differently) hashes its own: a wrong
/// hash is never used. A frame run without a pass of its own (traced, or held and let
/// go) may meet the last pass's keys, and takes a hash only for its very key, which
/// every snapshot hashes alike (the FDB's seed is the process's, a SNAT table's its
/// core's, made once). Places past a burst's 32 wrap around (never in a worker), which
/// the key check makes harmless too.
pub struct Ahead {
    macs: [(Hashed, Hashed); BURST],
    macs_len: usize,
    routes: [Hashed; BURST],
    routes_len: usize,
    tunnels: [Hashed; BURST],
    tunnels_len: usize,
    sessions: [Option<InsideKey>; BURST],
    sessions_len: usize,
}

impl Default for Ahead {
    fn default() -> Self {
        Self {
            macs: [(NONE, NONE); BURST],
            macs_len: 0,
            routes: [NONE; BURST],
            routes_len: 0,
            tunnels: [NONE; BURST],
            tunnels_len: 0,
            sessions: [None; BURST],
            sessions_len: 0,
        }
    }
}

impl Ahead {
    /// A new burst: nothing known of its frames yet.
    #[inline(always)]
    pub fn start(&mut self) {
        self.macs_len = 0;
        self.routes_len = 0;
        self.tunnels_len = 0;
        self.sessions_len = 0;
    }

    /// Keeps the MAC keys of the frame at `at` (in order: every earlier place was set).
    #[inline(always)]
    pub fn set_macs(&mut self, at: usize, dst: Hashed, src: Hashed) {
        self.macs[at % BURST] = (dst, src);
        self.macs_len = at + 1;
    }

    /// How many frames of the burst the pass found MAC keys for.
    #[cfg(test)]
    pub(crate) fn macs_kept(&self) -> usize {
        self.macs[..self.macs_len.min(BURST)]
            .iter()
            .filter(|(dst, _)| *dst != NONE)
            .count()
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

    /// Keeps the GRE tunnel key of the frame at `at` (in order, as [`Ahead::set_macs`];
    /// `None`: not hashed, as the pass saw it).
    #[inline(always)]
    pub fn keep_tunnel(&mut self, at: usize, tunnel: Option<Hashed>) {
        self.tunnels[at % BURST] = tunnel.unwrap_or(NONE);
        self.tunnels_len = at + 1;
    }

    /// Keeps the SNAT session key of the frame at `at` (in order, as
    /// [`Ahead::set_macs`]; `None`: not routed outside as the pass saw it).
    #[inline(always)]
    pub fn keep_session(&mut self, at: usize, session: Option<InsideKey>) {
        self.sessions[at % BURST] = session;
        self.sessions_len = at + 1;
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

    /// The frame at `at`'s GRE tunnel key (from `peer` with GRE key `key`, 0 for none)
    /// with its hash, hashed now unless the pass did.
    #[inline(always)]
    pub fn tunnel(&self, tables: &FlowTables, at: usize, peer: u32, key: u32) -> Hashed {
        let kept = self.tunnels[at % BURST];
        if at < self.tunnels_len && kept.key == tunnel_key(peer, key) {
            return kept;
        }
        Hashed::tunnel(tables, peer, key)
    }

    /// The frame at `at`'s SNAT session key in `nat` for `flow` sent by a container of
    /// `tenant`, hashed now unless the pass did. `nat` must be the table the pass
    /// hashed with (the core's, which lives as long as the core): another table's seed
    /// would put the key in the wrong probe run.
    #[inline(always)]
    pub fn session(&self, nat: &NatTable, at: usize, tenant: TenantIdx, flow: &Flow) -> InsideKey {
        match self.sessions[at % BURST] {
            Some(kept) if at < self.sessions_len && kept.is_of(tenant, flow) => kept,
            _ => nat.inside(tenant, flow),
        }
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
    fn a_frame_gets_the_tunnel_and_session_keys_kept_for_its_own_only() {
        let tables = FlowTables::default();
        let mut ahead = Ahead::default();
        ahead.start();
        let planted = |k| Hashed { key: k, hash: 7 };
        let (peer, key) = (0x0a00_0002, 42);
        ahead.keep_tunnel(0, Some(planted(tunnel_key(peer, key))));
        ahead.keep_tunnel(1, None);
        assert_eq!(ahead.tunnel(&tables, 0, peer, key).hash, 7);
        let fresh = |peer, key| Hashed::tunnel(&tables, peer, key);
        for (at, p, k, why) in [
            (0, peer, key + 1, "another key"),
            (0, peer + 1, key, "another peer"),
            (0, peer, 0, "no key"),
            (1, peer, key, "not GRE to the pass"),
            (2, peer, key, "past the pass"),
        ] {
            assert_eq!(ahead.tunnel(&tables, at, p, k), fresh(p, k), "{why}");
        }

        // A session key is hashed under its core's table's seed: one kept from table
        // `a` is told apart from `b`'s own by its hash.
        let (a, b) = (NatTable::new(16, 0, 1), NatTable::new(16, 0, 1));
        let flow = |src_port| Flow {
            protocol: 17,
            src: [10, 1, 0, 5].into(),
            src_port,
            dst: [192, 0, 2, 1].into(),
            dst_port: 53,
        };
        assert_ne!(
            a.inside(1, &flow(1000)),
            b.inside(1, &flow(1000)),
            "one seed"
        );
        ahead.keep_session(0, Some(a.inside(1, &flow(1000))));
        ahead.keep_session(1, None);
        assert_eq!(
            ahead.session(&b, 0, 1, &flow(1000)),
            a.inside(1, &flow(1000))
        );
        for (at, tenant, port, why) in [
            (0, 1, 1001, "another flow"),
            (0, 2, 1000, "another tenant"),
            (1, 1, 1000, "not routed outside to the pass"),
            (2, 1, 1000, "past the pass"),
        ] {
            let got = ahead.session(&b, at, tenant, &flow(port));
            assert_eq!(got, b.inside(tenant, &flow(port)), "{why}");
        }
        ahead.start();
        assert_eq!(
            ahead.tunnel(&tables, 0, peer, key),
            fresh(peer, key),
            "a new burst"
        );
        let got = ahead.session(&b, 0, 1, &flow(1000));
        assert_eq!(got, b.inside(1, &flow(1000)), "a new burst");
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
