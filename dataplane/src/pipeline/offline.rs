//! The pipeline outside a worker, one frame at a time on byte buffers: what
//! `tenetctl trace`, the tests and the fuzzers run. The per-core state a worker keeps
//! across bursts (counters, learner, caches, SNAT sessions) is kept here across calls,
//! so a sequence of frames behaves as it would on one core; each frame is prefetched
//! for as a worker's burst is, so whatever runs here runs that too.

use std::sync::Arc;

use super::dispatch::{handle, prefetch_burst};
use super::events::{Event, EventQueue, Learner};
use super::fdb_cache::{self, FdbCache, Unresolved};
use super::router::RouterState;
use super::spread::Spread;
use super::stage::{Context, CoreState, NoTrace, Sink, Trace};
use crate::counters::{CoreCounters, CoreStats, DropReason};
use crate::packet::frame::{BufFrame, Frame};
use crate::table::FlowTables;

/// What the frames of a run went to: transmissions, frames held for an unresolved
/// next hop, and (when the sink has rings to other workers) frames handed over.
#[derive(Debug, Default)]
pub struct Collect {
    /// (port, frame) in the order sent.
    pub sent: Vec<(u16, Vec<u8>)>,
    /// The segment size each sent frame owes ([`Frame::gso_size`], 0: none), in the
    /// same order.
    pub owed: Vec<u16>,
    /// Frames held until their next hop resolves.
    pub parked: Vec<(Unresolved, Vec<u8>)>,
    /// (worker, frame) handed over; `None`: this sink has no other workers.
    pub handed: Option<Vec<(u16, Vec<u8>)>>,
}

impl Collect {
    /// A sink that can hand frames to other workers.
    pub fn with_workers() -> Self {
        Self {
            handed: Some(Vec::new()),
            ..Self::default()
        }
    }
}

impl Sink<BufFrame> for Collect {
    fn send(&mut self, port: u16, frame: BufFrame) {
        self.sent.push((port, frame.data().to_vec()));
        self.owed.push(frame.gso_size());
    }

    fn park(&mut self, next_hop: Unresolved, frame: BufFrame) -> Option<BufFrame> {
        self.parked.push((next_hop, frame.data().to_vec()));
        None
    }

    fn hand_off(&mut self, worker: u16, frame: BufFrame) -> Option<BufFrame> {
        match self.handed.as_mut() {
            Some(handed) => {
                handed.push((worker, frame.data().to_vec()));
                None
            }
            None => Some(frame),
        }
    }
}

/// One core's state, kept across the frames run on it.
pub struct Offline {
    /// Its counters.
    pub counters: CoreCounters,
    queue: Arc<EventQueue>,
    state: CoreState,
    fast_path: bool,
}

impl Default for Offline {
    /// A single worker with room for 1024 SNAT sessions.
    fn default() -> Self {
        Self::with(RouterState::default())
    }
}

impl Offline {
    /// Worker `index` of `count` (each has its own slice of SNAT ports), with room
    /// for 64 SNAT sessions.
    pub fn worker(index: u16, count: u16) -> Self {
        Self::with(RouterState::new(64, index, count))
    }

    /// Shares GRE it receives with the other workers by inner flow, as a worker with
    /// `spread_tunnels` does.
    pub fn spreading_tunnels(mut self) -> Self {
        let (index, count) = self.state.router.nat.worker();
        self.state.spread = Spread::new(index, count);
        self
    }

    fn with(router: RouterState) -> Self {
        let queue = Arc::new(EventQueue::new(1024));
        Self {
            counters: CoreCounters::default(),
            state: CoreState {
                learner: Learner::new(Arc::clone(&queue), fdb_cache::DEFAULT_ENTRIES),
                cache: FdbCache::default(),
                router,
                spread: None,
                ahead: Default::default(),
            },
            queue,
            fast_path: true,
        }
    }

    /// The same core, never taking the router's fast path (to check that path against
    /// the whole pipeline).
    pub fn without_fast_path(mut self) -> Self {
        self.fast_path = false;
        self
    }

    /// The context a stage runs with, untraced (for calling a stage directly).
    pub fn context(&mut self) -> Context<'_, NoTrace> {
        self.context_with(NoTrace)
    }

    fn context_with<T: Trace>(&mut self, tracer: T) -> Context<'_, T> {
        self.state.context(&self.counters, tracer, self.fast_path)
    }

    /// Runs `frame` as received on `in_port`.
    pub fn run(&mut self, tables: &FlowTables, in_port: u16, frame: &[u8]) -> Collect {
        self.run_into(tables, in_port, frame, Collect::default())
    }

    /// Runs `frame` as received on `in_port`, with what it owes (a large segment's
    /// [`Frame::gso_size`]).
    pub fn run_frame(&mut self, tables: &FlowTables, in_port: u16, frame: BufFrame) -> Collect {
        let mut sink = Collect::default();
        prefetch_burst(
            tables,
            &mut self.state,
            in_port,
            std::iter::once(frame.data()),
        );
        let mut cx = self.context();
        cx.in_port = in_port;
        handle(tables, in_port, frame, &mut sink, &mut cx);
        sink
    }

    /// Like [`Offline::run`], into `sink`.
    pub fn run_into(
        &mut self,
        tables: &FlowTables,
        in_port: u16,
        frame: &[u8],
        mut sink: Collect,
    ) -> Collect {
        prefetch_burst(tables, &mut self.state, in_port, std::iter::once(frame));
        let mut cx = self.context();
        cx.in_port = in_port;
        handle(tables, in_port, BufFrame::new(frame), &mut sink, &mut cx);
        sink
    }

    /// Like [`Offline::run`], noting every decision.
    pub fn trace(
        &mut self,
        tables: &FlowTables,
        in_port: u16,
        frame: &[u8],
    ) -> (Collect, Vec<String>) {
        let mut sink = Collect::default();
        prefetch_burst(tables, &mut self.state, in_port, std::iter::once(frame));
        let mut cx = self.context_with(Vec::<String>::new());
        cx.in_port = in_port;
        handle(tables, in_port, BufFrame::new(frame), &mut sink, &mut cx);
        (sink, cx.tracer)
    }

    /// The counters so far.
    pub fn stats(&self) -> CoreStats {
        self.counters.snapshot()
    }

    /// How many frames were dropped for `reason` so far.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.stats().dropped(reason)
    }

    /// Every drop reason with its count so far.
    pub fn drops(&self) -> Vec<(DropReason, u64)> {
        let stats = self.stats();
        DropReason::ALL
            .iter()
            .map(|&r| (r, stats.dropped(r)))
            .collect()
    }

    /// The SNAT sessions this core holds.
    pub fn sessions(&self) -> usize {
        self.state.router.nat.len()
    }

    /// The learning and neighbour reports queued so far (taken).
    pub fn events(&self) -> Vec<Event> {
        std::iter::from_fn(|| self.queue.pop()).collect()
    }

    /// Sets the core's clock (seconds), as a worker's burst does.
    pub fn set_now(&mut self, now: u32) {
        self.state.learner.now = now;
    }

    /// Forgets everything a run left (fuzzing starts every input afresh; cheaper than
    /// a new core).
    pub fn reset(&mut self) {
        while self.queue.pop().is_some() {}
        self.state.learner.forget();
        self.state.cache.clear();
        self.state.router.nat.clear();
        self.counters.clear();
    }
}

/// Runs each of `frames` as received on `in_port`, in order, on one fresh core.
pub fn run_frames<'a>(
    tables: &FlowTables,
    in_port: u16,
    frames: impl IntoIterator<Item = &'a [u8]>,
) -> (Collect, Offline) {
    let mut core = Offline::default();
    let mut sink = Collect::default();
    for frame in frames {
        sink = core.run_into(tables, in_port, frame, sink);
    }
    (sink, core)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::builder::TablesBuilder;
    use crate::table::{Design, Location};

    #[test]
    fn a_big_fdbs_prefetch_pass_runs_only_while_the_core_cache_misses() {
        // One tenant's 10,000 MACs behind port 1: past the pass's FDB size.
        let mut b = TablesBuilder::new(Design::Dedicated, false);
        let t = b.tenant(1, None);
        b.access_port(0, t, None);
        b.access_port(1, t, None);
        let mac = |i: u32| {
            let [_, x, y, z] = i.to_be_bytes();
            [2, 1, 0, x, y, z]
        };
        for i in 0..10_000 {
            b.static_mac(t, mac(i), Location::Port(1));
        }
        let tables = b.build();
        let frame = |i: u32| {
            let mut f = mac(i).to_vec();
            f.extend([2, 0, 0, 0, 0, 1, 0x08, 0x00]);
            f.resize(60, 0);
            f
        };
        let burst = |from: u32| (from..from + 32).map(frame).collect::<Vec<_>>();
        let mut core = Offline::default();
        let pass = |core: &mut Offline, frames: &[Vec<u8>]| {
            prefetch_burst(
                &tables,
                &mut core.state,
                0,
                frames.iter().map(Vec::as_slice),
            );
            core.state.ahead.macs_kept()
        };
        let run = |core: &mut Offline, frames: &[Vec<u8>]| {
            for f in frames {
                assert_eq!(core.run(&tables, 0, f).sent.len(), 1);
            }
        };
        assert_eq!(pass(&mut core, &burst(0)), 32, "a new core's cache misses");
        // Windows of 64 lookups: the last full one all hits (or nearly: two of 32 MACs
        // may share a slot).
        for _ in 0..5 {
            run(&mut core, &burst(0));
        }
        assert_eq!(
            pass(&mut core, &burst(0)),
            0,
            "the MACs in the core's cache"
        );
        for from in [1000, 2000, 3000] {
            run(&mut core, &burst(from));
        }
        assert_eq!(
            pass(&mut core, &burst(5000)),
            32,
            "the core's cache missing"
        );
        for _ in 0..5 {
            run(&mut core, &burst(1000));
        }
        assert_eq!(pass(&mut core, &burst(1000)), 0);
        core.reset();
        assert_eq!(pass(&mut core, &burst(1000)), 32, "a cleared cache");
    }
}
