//! A per-core exact-match cache in front of the FDB and the routes (OVS's EMC, VPP's
//! one-entry caches): direct-mapped arrays answer most lookups with one probe instead
//! of a hash table walk (destinations with their resolved output, routing decisions,
//! the tunnel and tenant of GRE by peer and key; sources apart from them, in sets of
//! four to a cache line), and a memo of the last source skips learning work for
//! back-to-back frames of one sender. Valid for one snapshot: cleared whenever the
//! worker moves to a new one.

use std::net::Ipv4Addr;

use super::ahead::Hashed;
use super::events::Learner;
use crate::counters::DropReason;
use crate::packet::ethernet::{self, EtherType, GROUP_BIT};
use crate::packet::ipv4::{self, Ipv4Packet};
use crate::packet::Mac;
use crate::table::key_index::HashSlots;
use crate::table::{fdb_key_of, FdbEntry, FlowTables, Location, TenantIdx, TunnelIdx};

/// What to do with a frame for a destination, resolved once per cache fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Unknown destination: flood the tenant.
    Flood,
    /// Out of an access port, as is.
    Port(u16),
    /// Out of a trunk, tagged with the VLAN.
    TaggedPort(u16, u16),
    /// Into a tunnel.
    Tunnel(TunnelIdx),
    /// Nowhere, for this reason.
    Drop(DropReason),
    /// To the tenant's router on this host.
    Route,
}

/// What routing decided for a destination, resolved once per cache fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Into `tenant`, to `mac`, through `out`.
    Deliver {
        /// The tenant the packet enters (its own, or a peer's).
        tenant: TenantIdx,
        /// The next hop's MAC.
        mac: Mac,
        /// The router MAC it leaves with (that tenant's).
        src: Mac,
        /// How that MAC is reached.
        out: Out,
        /// The largest IPv4 packet that way takes (path MTU, checked per packet).
        mtu: u16,
    },
    /// For one of the router's own addresses.
    Gateway,
    /// Out of the uplink, through SNAT.
    External,
    /// Nowhere.
    NoRoute,
}

/// A next hop whose MAC is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unresolved {
    /// Its tenant.
    pub tenant: TenantIdx,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// Entries of each of a worker's caches (destinations, sources, routes, GRE decisions,
/// learning) unless the config says otherwise: 4,096 destinations, as many sources and
/// as many GRE decisions in 64 KiB each, the routes in 128 KiB, which a core's L2 holds
/// beside the frames in flight.
pub const DEFAULT_ENTRIES: usize = 4096;

/// The fewest and most entries a worker's caches may be given: they are rewritten
/// whole whenever the worker takes a new snapshot (a learned MAC makes one), 5 MiB at
/// most, a fraction of a millisecond.
pub const ENTRIES_RANGE: std::ops::RangeInclusive<usize> = 256..=1 << 16;

/// Lookups over which [`FdbCache::missing`] judges the cache: a full burst's
/// destinations and sources.
pub const MISS_WINDOW: u32 = 64;

#[derive(Clone, Copy)]
struct RouteSlot {
    key: u64,
    hop: Hop,
}

/// A key no lookup uses: route keys keep their top 16 bits clear.
const EMPTY_ROUTE: RouteSlot = RouteSlot {
    key: u64::MAX,
    hop: Hop::NoRoute,
};

#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    out: Out,
}

/// A source's FDB entry (what its checks need; a source is never resolved), and the
/// second (the worker's, its low 16 bits) in which the learner last knew of it at the
/// place that entry names ([`FdbCache::told`]).
#[derive(Clone, Copy)]
struct SourceSlot {
    key: u64,
    entry: Option<FdbEntry>,
    heard: u16,
}

impl SourceSlot {
    /// Whether the entry is one learning may refresh, at `here`.
    #[inline(always)]
    fn learned_at(&self, here: Location) -> bool {
        matches!(self.entry, Some(e) if !e.is_static && e.location == here)
    }
}

/// A key no source has: the broadcast MAC's, and a group source is dropped before its
/// lookup.
const EMPTY_SOURCE: SourceSlot = SourceSlot {
    key: u64::MAX,
    entry: None,
    heard: 0,
};

/// Sources whose hashes share a set.
const SOURCE_WAYS: usize = 4;

/// [`SOURCE_WAYS`] sources in one cache line, the newest first. Direct-mapped, 1,000
/// senders in 4,096 slots lost a fifth of theirs to one another on every round
/// (`l2-many`); in sets of four, about one in fifty-seven shares its set with four
/// others.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct SourceSet([SourceSlot; SOURCE_WAYS]);

const _: () = assert!(std::mem::size_of::<SourceSet>() == 64, "a set is one line");

const EMPTY_SOURCES: SourceSet = SourceSet([EMPTY_SOURCE; SOURCE_WAYS]);

impl SourceSet {
    /// The way holding `key`: every way compared, without a branch on which one
    /// matched (a set of several busy senders holds them in every order).
    #[inline(always)]
    fn find(&self, key: u64) -> Option<usize> {
        let mut found = SOURCE_WAYS;
        for (way, slot) in self.0.iter().enumerate().rev() {
            if slot.key == key {
                found = way;
            }
        }
        (found < SOURCE_WAYS).then_some(found)
    }

    /// Puts `slot` first; the oldest source leaves.
    #[inline(always)]
    fn insert(&mut self, slot: SourceSlot) -> &mut SourceSlot {
        self.0.copy_within(..SOURCE_WAYS - 1, 1);
        self.0[0] = slot;
        &mut self.0[0]
    }
}

/// A key no lookup uses (the `NO_TENANT` slot, where group MACs go; frames to them are
/// flooded before any lookup).
const EMPTY_SLOT: Slot = Slot {
    key: u64::MAX,
    out: Out::Flood,
};

/// A [`TunnelMemo`] in 16 bytes (an `Option` of one takes 20).
#[derive(Clone, Copy)]
struct TunnelSlot {
    peer: u32,
    key: u32,
    tenant: TenantIdx,
    tunnel: TunnelIdx,
    full: bool,
}

impl From<TunnelMemo> for TunnelSlot {
    #[inline(always)]
    fn from(memo: TunnelMemo) -> Self {
        Self {
            peer: memo.peer,
            key: memo.key,
            tenant: memo.tenant,
            tunnel: memo.tunnel,
            full: true,
        }
    }
}

impl From<TunnelSlot> for TunnelMemo {
    #[inline(always)]
    fn from(slot: TunnelSlot) -> Self {
        Self {
            peer: slot.peer,
            key: slot.key,
            tunnel: slot.tunnel,
            tenant: slot.tenant,
        }
    }
}

const EMPTY_TUNNEL: TunnelSlot = TunnelSlot {
    peer: 0,
    key: 0,
    tenant: 0,
    tunnel: 0,
    full: false,
};

/// The cache of one worker, rewritten whole only when a snapshot changes.
pub struct FdbCache {
    slots: HashSlots<Slot>,
    /// Sources in their own sets: in slots shared with the destinations, 100,000
    /// one-off destinations evicted the few busy senders on every pass (with slots
    /// spread evenly, 1,000 senders lost theirs most of the time: 157 → 192 cycles a
    /// packet in `l2-many`).
    sources: HashSlots<SourceSet>,
    /// Destination and source lookups in the current window, and those that missed;
    /// the source lookups among them, and their misses.
    lookups: u32,
    misses: u32,
    source_lookups: u32,
    source_misses: u32,
    /// Whether a quarter or more of the last full window's source lookups missed (new
    /// senders, a flood of made-up source MACs): the pass then prefetches what a missed
    /// source reads, its FDB slot and the learner's set.
    sources_missing: bool,
    /// Whether a quarter or more of the last full window's lookups missed (or none was
    /// full since the cache was cleared, when everything will miss).
    missing: bool,
    last_source: Option<(u64, Location, u32)>,
    /// The last decapsulation decision, asked first: most GRE comes in runs of one
    /// peer and key, and its compare costs less than a hash (gre-decap, one key: 0.40
    /// of testpmd with the slots alone, 0.42-0.43 with the memo in front, as before
    /// the slots).
    last_tunnel: Option<TunnelMemo>,
    /// Decapsulation decisions by (peer, key): GRE of many tenants from one peer
    /// interleaves their keys, which the memo alone missed on nearly every frame (three
    /// hash-map lookups each).
    tunnels: HashSlots<TunnelSlot>,
    /// As many as destinations, though a route slot is twice the size: routed traffic
    /// has one entry per destination address, not per MAC, and a direct-mapped cache
    /// of N slots loses most of N flows to collisions (256 flows in 256 slots missed
    /// 63% of lookups).
    routes: HashSlots<RouteSlot>,
}

/// A decapsulation decision: (peer IP, GRE key or 0) → (tunnel, tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelMemo {
    /// Outer source IP.
    pub peer: u32,
    /// GRE key (0 when absent).
    pub key: u32,
    /// The tunnel it arrived on.
    pub tunnel: TunnelIdx,
    /// The tenant the key named (dedicated design).
    pub tenant: crate::table::TenantIdx,
}

impl Default for FdbCache {
    fn default() -> Self {
        Self::new(DEFAULT_ENTRIES)
    }
}

impl FdbCache {
    /// A cache of `entries` destinations, as many sources, routes and GRE decisions (a
    /// power of two in [`ENTRIES_RANGE`], checked where it is configured).
    pub fn new(entries: usize) -> Self {
        Self {
            slots: HashSlots::new(entries, EMPTY_SLOT),
            sources: HashSlots::new(entries / SOURCE_WAYS, EMPTY_SOURCES),
            lookups: 0,
            misses: 0,
            source_lookups: 0,
            source_misses: 0,
            sources_missing: true,
            missing: true,
            last_source: None,
            last_tunnel: None,
            tunnels: HashSlots::new(entries, EMPTY_TUNNEL),
            routes: HashSlots::new(entries, EMPTY_ROUTE),
        }
    }

    /// How many destinations (and sources, routes and GRE decisions) it holds.
    pub fn entries(&self) -> usize {
        self.slots.len()
    }

    /// Forgets everything (a new snapshot is in use).
    pub fn clear(&mut self) {
        self.slots.fill(EMPTY_SLOT);
        self.sources.fill(EMPTY_SOURCES);
        self.lookups = 0;
        self.misses = 0;
        self.source_lookups = 0;
        self.source_misses = 0;
        self.sources_missing = true;
        self.missing = true;
        self.last_source = None;
        self.last_tunnel = None;
        self.tunnels.fill(EMPTY_TUNNEL);
        self.routes.fill(EMPTY_ROUTE);
    }

    /// Starts loading the route slot of the IPv4 destination of `frame` in `tenant`,
    /// for a lookup one frame later (harmless if the frame is not routed); gives the
    /// route key it hashed.
    #[inline(always)]
    pub fn prefetch_route(
        &self,
        tables: &FlowTables,
        tenant: TenantIdx,
        frame: &[u8],
    ) -> Option<Hashed> {
        let ethertype = frame.get(ethernet::ETHERTYPE_AT)?;
        let header =
            frame.get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN)?;
        if ethertype != EtherType::IPV4_BYTES {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(header).dst_addr();
        let key = Hashed::route(tables, crate::table::routing::neighbor_key(tenant, ip));
        crate::dpdk::prefetch(self.routes.at(key.hash));
        Some(key)
    }

    /// Starts loading what the lookups of a frame's destination and source MACs in
    /// `tenant` will read a few frames later: the destination's slot here and in the
    /// FDB, the source's set here and, while sources miss often
    /// ([`FdbCache::sources_missing`]), its FDB slot and the learner's set; gives the
    /// keys it hashed (destination, source).
    ///
    /// A source the cache holds without an FDB entry (not learned yet) gets no learner
    /// prefetch while sources hit: it asks the learner on each frame the memo of the
    /// last sender misses, a demand load for as long as it stays unlearned.
    ///
    /// Nothing here is read: asking whether the cache holds a key first stalled the
    /// pass on each slot's line (8% of `l2-many`'s time on 100,000 frames in the burst
    /// bench) to spare prefetches that cost next to nothing where the pass runs, a
    /// cache that misses often.
    #[inline(always)]
    pub fn prefetch_fdb(
        &self,
        tables: &FlowTables,
        learner: &Learner,
        tenant: TenantIdx,
        frame: &[u8],
    ) -> Option<(Hashed, Hashed)> {
        let (dst, src) = ethernet::macs_u64(frame)?;
        let dst_key = Hashed::fdb(tables, fdb_key_of(tenant, dst));
        // A group destination is flooded, never looked up.
        if dst & GROUP_BIT == 0 {
            crate::dpdk::prefetch(self.slots.at(dst_key.hash));
            tables.fdb.prefetch_hashed(dst_key.hash);
        }
        let src_key = Hashed::fdb(tables, fdb_key_of(tenant, src));
        crate::dpdk::prefetch(self.sources.at(src_key.hash));
        // A group source is dropped, never looked up.
        if self.sources_missing && src & GROUP_BIT == 0 {
            tables.fdb.prefetch_hashed(src_key.hash);
            learner.prefetch(src_key);
        }
        Some((dst_key, src_key))
    }

    /// The cached routing decision for `key`, if there is one (nothing is decided).
    #[inline(always)]
    pub fn peek_route(&self, key: Hashed) -> Option<Hop> {
        let slot = self.routes.at(key.hash);
        (slot.key == key.key).then_some(slot.hop)
    }

    /// The routing decision for `key` (a [`crate::table::routing::neighbor_key`] of
    /// tenant and destination); `decide` runs on a miss, and only a resolved decision
    /// is kept (an unresolved neighbour is asked again on the next packet).
    #[inline(always)]
    pub fn route(
        &mut self,
        key: Hashed,
        decide: impl FnOnce() -> Result<Hop, Unresolved>,
    ) -> Result<Hop, Unresolved> {
        let slot = self.routes.at_mut(key.hash);
        if slot.key != key.key {
            let hop = decide()?;
            *slot = RouteSlot { key: key.key, hop };
        }
        Ok(slot.hop)
    }

    /// The decapsulation decision for `peer` and `key`, if one is kept: the memo's, or
    /// the one in the slot of `hashed()` ([`Hashed::tunnel`] of the two, hashed only
    /// when the memo misses); else that key, for [`FdbCache::set_tunnel`].
    #[inline(always)]
    pub fn tunnel(
        &mut self,
        peer: u32,
        key: u32,
        hashed: impl FnOnce() -> Hashed,
    ) -> Result<TunnelMemo, Hashed> {
        if let Some(memo) = self.last_tunnel.filter(|m| m.peer == peer && m.key == key) {
            return Ok(memo);
        }
        let hashed = hashed();
        let slot = *self.tunnels.at(hashed.hash);
        if slot.full && slot.peer == peer && slot.key == key {
            let memo = slot.into();
            self.last_tunnel = Some(memo);
            return Ok(memo);
        }
        Err(hashed)
    }

    /// Remembers a decapsulation decision in the slot of `hashed` (its peer and key,
    /// [`Hashed::tunnel`]).
    #[inline(always)]
    pub fn set_tunnel(&mut self, hashed: Hashed, memo: TunnelMemo) {
        debug_assert_eq!(hashed.key, super::ahead::tunnel_key(memo.peer, memo.key));
        *self.tunnels.at_mut(hashed.hash) = memo.into();
        self.last_tunnel = Some(memo);
    }

    /// What a frame to the destination `key` in `tenant` needs
    /// ([`super::resolve::resolve`] of its FDB entry, which runs on a miss only), from
    /// the cache when possible. Resolved here rather than by a closure the caller
    /// passes: LLVM kept such a closure out of line (a call and its spills on every
    /// miss).
    #[inline(always)]
    pub fn destination(&mut self, tables: &FlowTables, key: Hashed, tenant: TenantIdx) -> Out {
        self.lookups = self.lookups.saturating_add(1);
        let slot = self.slots.at_mut(key.hash);
        if slot.key != key.key {
            self.misses = self.misses.saturating_add(1);
            *slot = Slot {
                key: key.key,
                out: super::resolve::resolve(
                    tables,
                    tenant,
                    tables.fdb.get_hashed(key.key, key.hash),
                ),
            };
        }
        slot.out
    }

    /// `tables.fdb[key]` for a frame's source seen at `here` in second `now`, from the
    /// cache when possible, and whether the learner already knows of it there this
    /// second ([`FdbCache::told`]), so it need not be told again. A source the FDB has
    /// as learned where it was seen needs the learner only for its aging report, once
    /// per [`super::events::REFRESH_SECS`]: told once a second, it keeps the learner's
    /// sets (64 bytes per four sources) out of each frame's way, where 1,000
    /// interleaved senders spent a tenth of `l2-many`'s cycles.
    #[inline(always)]
    pub fn source(
        &mut self,
        tables: &FlowTables,
        key: Hashed,
        here: Location,
        now: u32,
    ) -> (Option<FdbEntry>, bool) {
        self.lookups = self.lookups.saturating_add(1);
        self.source_lookups = self.source_lookups.saturating_add(1);
        let sources = self.sources.at_mut(key.hash);
        let second = now as u16;
        let slot = match sources.find(key.key) {
            Some(way) => &mut sources.0[way],
            None => {
                self.misses = self.misses.saturating_add(1);
                self.source_misses = self.source_misses.saturating_add(1);
                sources.insert(SourceSlot {
                    key: key.key,
                    entry: tables.fdb.get_hashed(key.key, key.hash),
                    heard: second.wrapping_sub(1),
                })
            }
        };
        let heard = slot.heard == second;
        if !slot.learned_at(here) {
            // Seen elsewhere (moving) or not learned: back where the FDB has it, it is
            // told at once, so a move and its return in one second both reach the
            // learner.
            if heard {
                slot.heard = second.wrapping_sub(1);
            }
            return (slot.entry, false);
        }
        (slot.entry, heard)
    }

    /// The learner knows of the source `key` at `here` in second `now` (it took the
    /// report, or had it): [`FdbCache::source`] answers so for the rest of the second
    /// if the FDB has the source learned there. A report lost to a full queue is not
    /// told, so the next frame tries again.
    #[inline(always)]
    pub fn told(&mut self, key: Hashed, here: Location, now: u32) {
        let sources = self.sources.at_mut(key.hash);
        let Some(way) = sources.find(key.key) else {
            return;
        };
        // Told where the FDB does not have it (a move), the way back must be told too.
        let slot = &mut sources.0[way];
        if slot.learned_at(here) {
            slot.heard = now as u16;
        }
    }

    /// Whether the cache misses often: a quarter or more of the destination and source
    /// lookups of the last full window of [`MISS_WINDOW`] missed, or none was full
    /// since it was cleared. A window spans bursts (of any port) until it holds that
    /// many lookups, so bursts without lookups or with a few neither reset it nor
    /// decide alone.
    #[inline(always)]
    pub fn missing(&mut self) -> bool {
        if self.lookups >= MISS_WINDOW {
            self.missing = self.misses.saturating_mul(4) >= self.lookups;
            self.sources_missing = self.source_misses > 0
                && self.source_misses.saturating_mul(4) >= self.source_lookups;
            self.lookups = 0;
            self.misses = 0;
            self.source_lookups = 0;
            self.source_misses = 0;
        }
        self.missing
    }

    /// Whether a quarter or more of the source lookups of the last full window
    /// [`FdbCache::missing`] judged missed (or none was full since the cache was
    /// cleared).
    #[inline(always)]
    pub fn sources_missing(&self) -> bool {
        self.sources_missing
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::key_index::IndexKey;

    /// The key of tenant 1's MAC number `i`, hashed.
    fn numbered(tables: &FlowTables, i: u16) -> Hashed {
        let [hi, lo] = i.to_be_bytes();
        Hashed::fdb(tables, crate::table::fdb_key(1, &[2, 0, 0, 0, hi, lo]))
    }

    #[test]
    fn many_tenants_spread_over_the_slots() {
        // The bench's l2-many keys: tenant t's one sender and one destination.
        let mut keys = Vec::new();
        for t in 0..1000u32 {
            let [hi, lo] = (t as u16).to_be_bytes();
            for mac in [[2, 2, hi, lo, 0, 1], [2, 1, hi, lo, 0, 0]] {
                keys.push(crate::table::fdb_key(t + 1, &mac));
            }
        }
        let cache = FdbCache::default();
        // Whatever the process's seed: 256 of them, fixed, so the test says the same
        // every run.
        let mut seed = 0u64;
        let mut total = 0;
        for _ in 0..256 {
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut per_slot = vec![0u32; cache.entries()];
            for &k in &keys {
                per_slot[cache.slots.index(IndexKey::hash(k, seed))] += 1;
            }
            let shared: u32 = per_slot.iter().filter(|&&n| n > 1).sum();
            // Random slots would share about 770 of 2,000 keys; a plain multiply
            // shared 1,638, and one without its shift more than 900 for one seed in
            // eight.
            assert!(
                shared < 900,
                "{shared} of 2,000 keys share a slot (seed {seed:#x})"
            );
            total += shared;
        }
        assert!(total / 256 < 800, "{} share a slot on average", total / 256);
    }

    #[test]
    fn the_cache_misses_often_while_a_quarter_of_a_window_misses() {
        let tables = FlowTables::default();
        let mut cache = FdbCache::new(256);
        assert!(cache.missing(), "a new cache misses everything");
        // One destination, which hits after its first lookup, and sources never seen
        // before, which miss (apart from the destinations, so they evict nothing of
        // it whatever the process's seed).
        let key = |i: u16| numbered(&tables, i);
        let mut fresh = 1u16;
        let mut look = |cache: &mut FdbCache, hits: usize, misses: usize| {
            for _ in 0..hits {
                cache.destination(&tables, key(0), 1);
            }
            for _ in 0..misses {
                cache.source(&tables, key(fresh), Location::Port(1), 0);
                fresh += 1;
            }
        };
        // 16 of 64 missed (the destination's first lookup and 15 sources): a quarter.
        look(&mut cache, 49, 15);
        assert!(cache.missing());
        look(&mut cache, 64, 0);
        assert!(!cache.missing());
        look(&mut cache, 49, 15);
        assert!(!cache.missing(), "15 of 64");
        // A window not full yet decides nothing: 63 lookups, all missed.
        look(&mut cache, 0, 63);
        assert!(!cache.missing());
        look(&mut cache, 0, 1);
        assert!(cache.missing());
        look(&mut cache, 64, 0);
        assert!(!cache.missing());
        cache.clear();
        assert!(cache.missing(), "cleared");
    }

    #[test]
    fn a_learned_source_is_known_for_the_rest_of_the_second_once_told() {
        let mut b = crate::table::builder::TablesBuilder::new(crate::table::Design::Shared, false);
        let t = b.tenant(1, None);
        let (learned, fixed, unknown) =
            ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]);
        b.learned_mac(t, learned, Location::Port(1));
        b.static_mac(t, fixed, Location::Port(1));
        let tables = b.build();
        let key = |mac: Mac| Hashed::fdb(&tables, crate::table::fdb_key(t, &mac));
        let mut cache = FdbCache::new(256);
        let (here, elsewhere) = (Location::Port(1), Location::Port(2));
        let heard = |cache: &mut FdbCache, mac, at, now| cache.source(&tables, key(mac), at, now).1;
        // Not before it is told, then for the rest of that second only.
        assert!(!heard(&mut cache, learned, here, 7));
        assert!(
            !heard(&mut cache, learned, here, 7),
            "not told yet (a lost report)"
        );
        cache.told(key(learned), here, 7);
        assert!(heard(&mut cache, learned, here, 7));
        assert!(!heard(&mut cache, learned, here, 8), "a new second");
        cache.told(key(learned), here, 8);
        // Seen elsewhere and told there (a move): not known here any more.
        assert!(!heard(&mut cache, learned, elsewhere, 8));
        cache.told(key(learned), elsewhere, 8);
        assert!(!heard(&mut cache, learned, here, 8), "back from a move");
        assert!(!heard(&mut cache, learned, elsewhere, 8));
        // Static and unknown sources are never known this way.
        for mac in [fixed, unknown] {
            cache.told(key(mac), here, 8);
            assert!(!heard(&mut cache, mac, here, 8));
        }
        // A cleared cache (a new snapshot) knows nothing.
        cache.told(key(learned), here, 8);
        cache.clear();
        assert!(!heard(&mut cache, learned, here, 8));
    }

    /// Tables of 4,096 senders of one tenant, each learned behind its own port, and
    /// the FDB keys of five of them whose hashes pick one set of a cache of 256.
    fn five_in_a_set() -> (FlowTables, Vec<(Hashed, Location)>) {
        let mut b = crate::table::builder::TablesBuilder::new(crate::table::Design::Shared, false);
        let t = b.tenant(1, None);
        let senders: Vec<(Mac, Location)> = (0..4096u16)
            .map(|i| {
                let [hi, lo] = i.to_be_bytes();
                ([2, 0, 0, 0, hi, lo], Location::Port(i))
            })
            .collect();
        for &(mac, at) in &senders {
            b.learned_mac(t, mac, at);
        }
        let tables = b.build();
        let key = |mac: &Mac| Hashed::fdb(&tables, crate::table::fdb_key(t, mac));
        let cache = FdbCache::new(256);
        let set = cache.sources.index(key(&senders[0].0).hash);
        let five: Vec<(Hashed, Location)> = senders
            .iter()
            .map(|(mac, at)| (key(mac), *at))
            .filter(|(k, _)| cache.sources.index(k.hash) == set)
            .take(SOURCE_WAYS + 1)
            .collect();
        assert_eq!(five.len(), SOURCE_WAYS + 1);
        (tables, five)
    }

    #[test]
    fn sources_sharing_a_set_keep_their_places_until_a_fifth_comes() {
        let (tables, same) = five_in_a_set();
        let mut cache = FdbCache::new(256);
        let held = |cache: &FdbCache, k: Hashed| cache.sources.at(k.hash).find(k.key).is_some();
        for (i, &(k, at)) in same[..SOURCE_WAYS].iter().enumerate() {
            cache.source(&tables, k, at, 3);
            // Each keeps its place as the next ones come.
            assert!(same[..=i].iter().all(|&(k, _)| held(&cache, k)));
        }
        // Two are told, each where the FDB has it; each answers with its own entry,
        // and only those two as known, whichever way they moved to.
        cache.told(same[1].0, same[1].1, 3);
        cache.told(same[3].0, same[3].1, 3);
        let answers = |cache: &mut FdbCache, range: std::ops::Range<usize>| {
            range
                .map(|i| {
                    let (entry, heard) = cache.source(&tables, same[i].0, same[i].1, 3);
                    (entry.map(|e| e.location), heard)
                })
                .collect::<Vec<_>>()
        };
        let told = |i: usize| i == 1 || i == 3;
        let expected = |range: std::ops::Range<usize>| {
            range
                .map(|i| (Some(same[i].1), told(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            answers(&mut cache, 0..SOURCE_WAYS),
            expected(0..SOURCE_WAYS)
        );
        // A fifth takes the place of the one that came first; the others keep theirs
        // and what they were told.
        cache.source(&tables, same[SOURCE_WAYS].0, same[SOURCE_WAYS].1, 3);
        assert!(!held(&cache, same[0].0));
        assert!(same[1..].iter().all(|&(k, _)| held(&cache, k)));
        assert_eq!(
            answers(&mut cache, 1..SOURCE_WAYS),
            expected(1..SOURCE_WAYS)
        );
    }

    #[test]
    fn senders_that_overflow_a_set_here_are_not_reported_again_and_again() {
        // Five senders taking turns in one set of four: each misses the cache on every
        // frame and asks the learner, which must still know it (its sets take other
        // bits of the hash), so each is reported once.
        let (tables, same) = five_in_a_set();
        let mut cache = FdbCache::new(256);
        let queue = std::sync::Arc::new(super::super::events::EventQueue::new(1024));
        let mut learner = Learner::new(std::sync::Arc::clone(&queue), 256);
        let counters = crate::counters::CoreCounters::default();
        for _ in 0..100 {
            for &(k, at) in &same {
                let (_, heard) = cache.source(&tables, k, at, 0);
                if !heard && learner.learn(k, at, &counters) {
                    cache.told(k, at, 0);
                }
            }
        }
        assert_eq!(queue.len(), same.len(), "each sender reported once");
    }

    #[test]
    fn sources_miss_often_while_a_quarter_of_them_misses() {
        let tables = FlowTables::default();
        let mut cache = FdbCache::new(256);
        assert!(cache.sources_missing(), "a new cache misses everything");
        let key = |i: u16| numbered(&tables, i);
        let here = Location::Port(1);
        // The same source over and over, beside destinations that all miss: the
        // sources do not.
        cache.source(&tables, key(0), here, 0);
        for i in 0..64 {
            cache.source(&tables, key(0), here, 0);
            cache.destination(&tables, key(1000 + i), 1);
        }
        assert!(cache.missing());
        assert!(!cache.sources_missing());
        // New senders, one in four of the window's sources.
        for i in 0..64u16 {
            let sender = if i % 4 == 0 { key(2000 + i) } else { key(0) };
            cache.source(&tables, sender, here, 0);
        }
        cache.missing();
        assert!(cache.sources_missing());
        // A window without a source lookup: no source missed.
        for i in 0..64 {
            cache.destination(&tables, key(3000 + i), 1);
        }
        cache.missing();
        assert!(!cache.sources_missing());
        cache.clear();
        assert!(cache.sources_missing(), "cleared");
    }

    #[test]
    fn cache_slots_stay_small() {
        // Two route slots per cache line: the default cache's 4,096 in 128 KiB.
        assert!(std::mem::size_of::<RouteSlot>() <= 32);
        assert!(std::mem::size_of::<Out>() <= 6);
        // Four destination slots per line, and a set of four sources: 4,096 of each
        // in 64 KiB.
        assert!(std::mem::size_of::<Slot>() <= 16);
        assert!(std::mem::size_of::<SourceSlot>() <= 16);
        // Four tunnel decisions per line too.
        assert!(std::mem::size_of::<TunnelSlot>() <= 16);
    }

    #[test]
    fn a_tunnel_decision_is_given_only_for_its_own_peer_and_key() {
        let tables = FlowTables::default();
        // Fewer slots than decisions: some share one, and the later one wins it.
        let mut cache = FdbCache::new(256);
        let memo = |peer: u32, key: u32| TunnelMemo {
            peer,
            key,
            tunnel: (key % 7) as TunnelIdx,
            tenant: key + 1,
        };
        let peers = [0x0a00_0001, 0x0a00_0002];
        let ask = |cache: &mut FdbCache, peer, key| {
            cache
                .tunnel(peer, key, || Hashed::tunnel(&tables, peer, key))
                .ok()
        };
        // An empty slot answers nobody, not even the peer and key it holds.
        assert_eq!(ask(&mut cache, 0, 0), None);
        for key in 0..1000 {
            for peer in peers {
                cache.set_tunnel(Hashed::tunnel(&tables, peer, key), memo(peer, key));
            }
        }
        let mut kept = 0;
        for key in 0..1000 {
            for peer in peers {
                if let Some(found) = ask(&mut cache, peer, key) {
                    assert_eq!(found, memo(peer, key));
                    kept += 1;
                }
                // Nobody else's: another key of the peer, the key from another peer.
                assert_eq!(ask(&mut cache, peer, key + 1000), None);
                assert_eq!(ask(&mut cache, peer + 2, key), None);
            }
        }
        assert!((100..=256).contains(&kept), "{kept} kept in 256 slots");
        cache.clear();
        assert!((0..1000).all(|key| ask(&mut cache, peers[0], key).is_none()));
        assert_eq!(ask(&mut cache, 0, 0), None);
    }
}
