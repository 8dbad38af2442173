//! A burst run as a worker's core runs it (the prefetch pass over the whole burst, then
//! each frame with what the pass kept) against the same frames run one at a time on
//! an offline core: the two must agree on every frame sent, held and dropped, whatever
//! the caches' size (shared by the test files, `mod burst;`).

use std::sync::Arc;

use dataplane::counters::{CoreCounters, DropReason};
use dataplane::packet::frame::BufFrame;
use dataplane::pipeline::events::EventQueue;
use dataplane::pipeline::offline::{Collect, Offline};
use dataplane::pipeline::{Core, WorkerSlot};
use dataplane::table::publish::TablePublisher;
use dataplane::table::FlowTables;

/// Runs `bursts` received on `in_port` both ways, the core with caches of
/// `cache_entries`; a burst whose flag is false skips the prefetch pass (as a traced
/// port's frames do), so the core still holds the previous burst's keys. Returns the
/// drops by reason, which both ways agree on.
pub fn agrees_one_at_a_time(
    tables: FlowTables,
    in_port: u16,
    bursts: &[(&[Vec<u8>], bool)],
    cache_entries: usize,
) -> Vec<(DropReason, u64)> {
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

    let publisher = TablePublisher::new(tables);
    let slot = WorkerSlot {
        index: 0,
        count: 1,
        nat_sessions: 64,
        spread_tunnels: false,
        cache_entries,
    };
    let mut core = Core::new(publisher.reader(), Arc::new(EventQueue::new(1024)), slot);
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
    let drops = one_at_a_time.drops();
    for &(reason, count) in &drops {
        assert_eq!(stats.dropped(reason), count, "{reason:?}");
    }
    drops
}
