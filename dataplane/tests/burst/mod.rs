//! A burst run as a worker's core runs it (the prefetch pass over the whole burst, then
//! each frame with what the pass kept) against the same frames run one at a time on
//! an offline core: the two must agree on every frame sent, held and dropped, whatever
//! the caches' size (shared by the test files, `mod burst;`).

use std::sync::Arc;

use dataplane::counters::{CoreCounters, CoreStats};
use dataplane::packet::frame::BufFrame;
use dataplane::packet::Mac;
use dataplane::pipeline::events::EventQueue;
use dataplane::pipeline::offline::{Collect, Offline};
use dataplane::pipeline::{Core, WorkerSlot};
use dataplane::table::builder::TablesBuilder;
use dataplane::table::publish::TablePublisher;
use dataplane::table::{Design, FlowTables, Location, TenantIdx};

/// The `i`th MAC of the family `tag`.
pub fn bulk_mac(tag: u8, i: u32) -> Mac {
    let [_, x, y, z] = i.to_be_bytes();
    [2, tag, 0, x, y, z]
}

/// `tables` with `count` more static MACs ([`bulk_mac`]) for each (tenant, family,
/// location): past the FDB size at which a burst's keys are hashed and prefetched
/// ahead of it.
pub fn with_bulk_macs(
    mut tables: FlowTables,
    families: &[(TenantIdx, u8, Location)],
    count: u32,
) -> FlowTables {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    for &(tenant, tag, location) in families {
        for i in 0..count {
            b.static_mac(tenant, bulk_mac(tag, i), location);
        }
    }
    for (key, entry) in b.build().fdb.iter() {
        tables.fdb.insert(key, entry).expect("the FDB grows");
    }
    tables
}

/// A worker's core (the only one, caches of 256 entries) on `publisher`'s tables: it
/// takes each new snapshot at its next burst, as a worker does.
pub fn worker_core(publisher: &TablePublisher) -> Core<BufFrame> {
    let slot = WorkerSlot {
        index: 0,
        count: 1,
        nat_sessions: 64,
        spread_tunnels: false,
        cache_entries: 256,
    };
    Core::new(publisher.reader(), Arc::new(EventQueue::new(1024)), slot)
}

/// Runs `frames` received on `in_port` both ways, the core with caches of 256 entries
/// (the offline core's hold 4,096): twice (the second burst finds the first one's keys
/// in the core's caches), then reversed without the prefetch pass, as a traced port's
/// frames run, so the keys the core holds are the last burst's, other frames' at most
/// places, and must not be taken for these. Returns the core's counters, whose drops
/// the offline core's match. The first burst must send something: agreeing on nothing
/// proves nothing.
pub fn agrees_one_at_a_time(tables: FlowTables, in_port: u16, frames: &[Vec<u8>]) -> CoreStats {
    let reversed: Vec<Vec<u8>> = frames.iter().rev().cloned().collect();
    let bursts = [(frames, true), (frames, true), (&reversed[..], false)];
    let mut one_at_a_time = Offline::worker(0, 1);
    let expected: Vec<Collect> = bursts
        .iter()
        .map(|(frames, _)| {
            let mut sink = Collect::default();
            for frame in frames.iter() {
                sink = one_at_a_time.run_into(&tables, in_port, frame, sink);
            }
            sink
        })
        .collect();
    assert!(
        !expected[0].sent.is_empty(),
        "the first burst sends nothing"
    );

    let publisher = TablePublisher::new(tables);
    let mut core = worker_core(&publisher);
    let counters = CoreCounters::default();
    for (round, ((frames, prefetch), expected)) in bursts.iter().zip(&expected).enumerate() {
        let mut sink = Collect::default();
        core.begin(0, &mut sink, &counters);
        if *prefetch {
            core.prefetch(in_port, frames.iter().map(Vec::as_slice));
        }
        let burst = frames.iter().map(|f| BufFrame::new(f));
        core.run(in_port, burst, &mut sink, &counters);
        assert_eq!(sink.sent, expected.sent, "burst {round}: sent");
        assert_eq!(sink.parked, expected.parked, "burst {round}: held");
    }
    let stats = counters.snapshot();
    for (reason, count) in one_at_a_time.drops() {
        assert_eq!(stats.dropped(reason), count, "{reason:?}");
    }
    stats
}
