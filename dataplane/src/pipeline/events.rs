//! The slow path: what a worker tells the control plane (a MAC learned or seen again,
//! a neighbour's MAC), over one bounded lock-free queue per core. Pushing never blocks
//! or allocates; a full queue loses the event and counts it (learning retries on the
//! next frame).

use std::net::Ipv4Addr;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::ahead::Hashed;
use crate::counters::CoreCounters;
use crate::packet::Mac;
use crate::table::key_index::HashSlots;
use crate::table::{fdb_key, fdb_key_parts, Location, TenantIdx};

/// One slow-path event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `mac` of `tenant` was seen at `location`.
    Learn {
        /// The tenant.
        tenant: TenantIdx,
        /// The source MAC.
        mac: Mac,
        /// Where it came from.
        location: Location,
    },
    /// An underlay neighbour answered an ARP request for it.
    Neighbor {
        /// Its IP.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: Mac,
    },
    /// A neighbour of a tenant's router announced itself (ARP to the gateway).
    TenantNeighbor {
        /// The tenant.
        tenant: TenantIdx,
        /// Its IP.
        ip: Ipv4Addr,
        /// Its MAC.
        mac: Mac,
    },
    /// A router needs the MAC of `ip` in `tenant` (frames wait in the hold queue).
    NeighborMiss {
        /// The tenant.
        tenant: TenantIdx,
        /// The address to resolve.
        ip: Ipv4Addr,
    },
}

/// Events from one core, drained by the control plane.
pub type EventQueue = ArrayQueue<Event>;

/// Events a core queues before it starts losing them.
pub const EVENT_QUEUE_LEN: usize = 4096;

/// Seconds after which a MAC still in use is reported again, so the control plane's
/// aging sees it alive.
pub const REFRESH_SECS: u32 = 10;

/// Sources a set holds: with one slot per set, two busy sources whose keys share it
/// evict each other on every frame, and each frame then makes an event (a direct-mapped
/// 4,096 slots did that for a fifth of 1,000 sources); four ways keep them both.
const WAYS: usize = 4;
/// A key no source has: the broadcast MAC's FDB key (a group source is dropped before
/// it could learn).
const NO_KEY: u64 = u64::MAX;

/// Up to [`WAYS`] sources reported lately: where each was and when (the worker's
/// seconds), in one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Reported {
    keys: [u64; WAYS],
    at: [u32; WAYS],
    locations: [Location; WAYS],
}

const _: () = assert!(
    std::mem::size_of::<Reported>() == 64,
    "a set is one cache line"
);

const NOTHING_REPORTED: Reported = Reported {
    keys: [NO_KEY; WAYS],
    at: [0; WAYS],
    locations: [Location::Router; WAYS],
};

/// The hash that picks a source's set: the FDB's hash turned half round, so its sets
/// take other bits than the core cache's sets of sources, which take its top bits (at
/// most 14 of them; these at most the 14 below bit 32). With the same bits, five busy
/// senders that overflow a cache set (missing it on every frame, and asking here)
/// would overflow their set here too and make an event every few frames.
#[inline(always)]
fn set_hash(source: Hashed) -> u64 {
    source.hash.rotate_left(32)
}

/// A core's learning front end: reports each (tenant, MAC, location) once per
/// [`REFRESH_SECS`], remembered in a small set-associative cache so a busy flow costs
/// one cache line per packet and no event.
pub struct Learner {
    events: Arc<EventQueue>,
    /// Sets of sources, as many sources in all as the worker's caches hold entries.
    reported: HashSlots<Reported>,
    /// The last neighbour reported or asked for, and when: a burst of frames to one
    /// unresolved (or chatty) neighbour makes one event.
    last_neighbor: Option<(u64, u32)>,
    /// Seconds on the worker's clock, set once per burst.
    pub now: u32,
}

impl Learner {
    /// A learner feeding `events`, remembering up to `sources` reported sources (a
    /// power of two of at least 8, as the worker's caches are configured).
    pub fn new(events: Arc<EventQueue>, sources: usize) -> Self {
        assert!(
            sources.is_power_of_two() && sources >= 2 * WAYS,
            "{sources} learner sources"
        );
        Self {
            events,
            reported: HashSlots::new(sources / WAYS, NOTHING_REPORTED),
            last_neighbor: None,
            now: 0,
        }
    }

    /// Starts loading what [`Learner::learn`] reads for the source with FDB key `key`.
    #[inline(always)]
    pub fn prefetch(&self, key: Hashed) {
        crate::dpdk::prefetch(self.reported.at(set_hash(key)));
    }

    /// The source with FDB key `source` (a [`fdb_key`] of tenant and MAC) was seen at
    /// `location`. False when its report was due and the queue was full (counted; the
    /// next frame tries again).
    #[inline(always)]
    pub fn learn(&mut self, source: Hashed, location: Location, counters: &CoreCounters) -> bool {
        let key = source.key;
        let set = self.reported.at_mut(set_hash(source));
        let way = set.keys.iter().position(|&k| k == key);
        if let Some(w) = way {
            if set.locations[w] == location && self.now.wrapping_sub(set.at[w]) < REFRESH_SECS {
                return true;
            }
        }
        let (tenant, mac) = fdb_key_parts(key);
        if self
            .events
            .push(Event::Learn {
                tenant,
                mac,
                location,
            })
            .is_err()
        {
            counters.add_event_lost();
            return false;
        }
        // A new source takes the way reported longest ago (an empty one first: its
        // key is no source's, and nothing is older than never).
        let now = self.now;
        let w = way.unwrap_or_else(|| {
            (0..WAYS)
                .max_by_key(|&w| match set.keys[w] {
                    NO_KEY => u32::MAX,
                    _ => now.wrapping_sub(set.at[w]),
                })
                .unwrap_or(0)
        });
        set.keys[w] = key;
        set.locations[w] = location;
        set.at[w] = now;
        true
    }

    /// Forgets what was reported: after tenants or ports were removed, every source
    /// is reported afresh, so the control plane relearns MACs it dropped with them.
    pub fn forget(&mut self) {
        self.reported.fill(NOTHING_REPORTED);
        self.last_neighbor = None;
    }

    /// An underlay neighbour announced `ip` at `mac`.
    #[inline]
    pub fn neighbor(&mut self, ip: Ipv4Addr, mac: Mac, counters: &CoreCounters) {
        self.push(Event::Neighbor { ip, mac }, counters);
    }

    /// A neighbour of `tenant`'s router announced `ip` at `mac`.
    #[inline]
    pub fn tenant_neighbor(
        &mut self,
        tenant: TenantIdx,
        ip: Ipv4Addr,
        mac: Mac,
        counters: &CoreCounters,
    ) {
        let key = crate::table::routing::neighbor_key(tenant, ip) ^ fdb_key(0, &mac);
        if self.last_neighbor == Some((key, self.now)) {
            return;
        }
        self.last_neighbor = Some((key, self.now));
        self.push(Event::TenantNeighbor { tenant, ip, mac }, counters);
    }

    /// `tenant`'s router has frames for `ip` and no MAC for it.
    #[inline]
    pub fn neighbor_miss(&mut self, tenant: TenantIdx, ip: Ipv4Addr, counters: &CoreCounters) {
        let key = crate::table::routing::neighbor_key(tenant, ip) | 1 << 63;
        if self.last_neighbor == Some((key, self.now)) {
            return;
        }
        self.last_neighbor = Some((key, self.now));
        self.push(Event::NeighborMiss { tenant, ip }, counters);
    }

    fn push(&mut self, event: Event, counters: &CoreCounters) {
        if self.events.push(event).is_err() {
            counters.add_event_lost();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::FlowTables;

    fn source(tenant: TenantIdx, mac: &Mac) -> Hashed {
        Hashed::fdb(&FlowTables::default(), fdb_key(tenant, mac))
    }

    #[test]
    fn reports_once_until_moved_or_stale() {
        let queue = Arc::new(EventQueue::new(16));
        let counters = CoreCounters::default();
        let mut learner = Learner::new(Arc::clone(&queue), 4096);
        let mac = [2, 0, 0, 0, 0, 1];
        for _ in 0..100 {
            learner.learn(source(0, &mac), Location::Port(1), &counters);
        }
        assert_eq!(queue.len(), 1, "a busy source is reported once");
        learner.learn(source(0, &mac), Location::Port(2), &counters);
        assert_eq!(queue.len(), 2, "a move is reported at once");
        learner.now += REFRESH_SECS;
        learner.learn(source(0, &mac), Location::Port(2), &counters);
        assert_eq!(queue.len(), 3, "a live MAC is reported again for aging");
        learner.learn(source(1, &mac), Location::Port(2), &counters);
        assert_eq!(queue.len(), 4, "tenants are separate");
    }

    #[test]
    fn sources_sharing_a_set_do_not_evict_each_other() {
        let queue = Arc::new(EventQueue::new(1024));
        let counters = CoreCounters::default();
        let mut learner = Learner::new(Arc::clone(&queue), 4096);
        // Five MACs of tenant 0 whose keys land in one set.
        let first = [2, 0, 0, 0, 0, 0];
        let set = learner.reported.index(set_hash(source(0, &first)));
        let macs: Vec<Mac> = (0u32..)
            .map(|i| {
                let b = i.to_be_bytes();
                [2, 0, b[0], b[1], b[2], b[3]]
            })
            .filter(|mac| learner.reported.index(set_hash(source(0, mac))) == set)
            .take(WAYS + 1)
            .collect();
        learner.learn(source(0, &macs[0]), Location::Port(1), &counters);
        learner.now += 1;
        for _ in 0..100 {
            for mac in &macs[..WAYS] {
                learner.learn(source(0, mac), Location::Port(1), &counters);
            }
        }
        assert_eq!(queue.len(), WAYS, "each of a full set is reported once");
        // A fifth takes the place of the one reported longest ago...
        learner.learn(source(0, &macs[WAYS]), Location::Port(1), &counters);
        assert_eq!(queue.len(), WAYS + 1);
        for mac in &macs[1..] {
            learner.learn(source(0, mac), Location::Port(1), &counters);
        }
        assert_eq!(queue.len(), WAYS + 1, "the newer ones stay");
        // ...which is reported again when it comes back.
        learner.learn(source(0, &macs[0]), Location::Port(1), &counters);
        assert_eq!(queue.len(), WAYS + 2);
        // A source of the full set that moves is reported once, in its own way: the
        // others stay.
        for _ in 0..10 {
            learner.learn(source(0, &macs[1]), Location::Port(2), &counters);
        }
        assert_eq!(queue.len(), WAYS + 3);
        for mac in [macs[0], macs[2], macs[3]] {
            learner.learn(source(0, &mac), Location::Port(1), &counters);
        }
        assert_eq!(queue.len(), WAYS + 3, "a move evicts nobody");
    }

    #[test]
    fn full_queue_counts_the_loss_and_retries() {
        let queue = Arc::new(EventQueue::new(1));
        let counters = CoreCounters::default();
        let mut learner = Learner::new(Arc::clone(&queue), 4096);
        learner.learn(source(0, &[2, 0, 0, 0, 0, 1]), Location::Port(1), &counters);
        learner.learn(source(0, &[2, 0, 0, 0, 0, 2]), Location::Port(1), &counters);
        assert_eq!(counters.snapshot().events_lost, 1);
        queue.pop();
        learner.learn(source(0, &[2, 0, 0, 0, 0, 2]), Location::Port(1), &counters);
        assert_eq!(queue.len(), 1, "the lost report is retried");
    }
}
