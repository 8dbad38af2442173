//! What happens to a burst between RX and TX. A [`Pipeline`] takes the packets of one
//! RX burst and places each in the [`Outputs`] of the port it must leave on (or drops it,
//! naming the reason); the worker flushes the outputs once per burst.

/// Records a decision when the context traces (see [`stage::Trace`]); compiles to
/// nothing in the dataplane, whose tracer's `ON` is false.
macro_rules! note {
    ($cx:expr, $($arg:tt)*) => {
        if T::ON {
            $cx.tracer.note(format_args!($($arg)*));
        }
    };
}

pub mod ahead;
pub mod capture;
mod classify;
mod dispatch;
pub mod events;
pub mod fdb_cache;
pub mod live_trace;
pub mod nat;
pub mod offline;
mod output;
mod outputs;
mod resolve;
pub mod router;
pub mod spread;
pub mod stage;
mod switch;
mod xconnect;

pub use dispatch::{handle, handle_burst, release};

pub use outputs::Outputs;
pub use xconnect::CrossConnect;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::counters::{CoreCounters, DropReason};
use crate::dpdk::{Mbuf, MbufBatch};
use crate::packet::frame::Frame;
use crate::table::publish::TableReader;
use crate::table::{FlowTables, PortRole};
use events::{EventQueue, Learner};
use fdb_cache::{FdbCache, Unresolved};
use router::RouterState;
use spread::Spread;
use stage::{CoreState, Sink};

/// The per-burst packet decision. Runs on one worker; must not allocate, lock, log or
/// make system calls.
pub trait Pipeline: Send {
    /// Handles one RX burst from `in_port`, leaving `batch` empty.
    fn process(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    );

    /// Called when a poll found nothing to receive: work that waits on time or on the
    /// control plane rather than on a packet (held frames whose neighbour got resolved).
    /// Returns how many packets it moved; must be cheap when there is nothing to do.
    fn idle(&mut self, outputs: &mut Outputs, counters: &CoreCounters) -> usize {
        let _ = (outputs, counters);
        0
    }

    /// Up to `limit` of the SNAT sessions this core holds, for the control plane's view
    /// (asked between bursts, never per packet).
    fn nat_sessions(
        &self,
        limit: usize,
        tenant: Option<crate::table::TenantIdx>,
    ) -> Vec<nat::SessionView> {
        let _ = (limit, tenant);
        Vec::new()
    }

    /// Starts tracing the frames received on some ports (`None`: stops).
    fn set_live_trace(&mut self, trace: Option<live_trace::LiveTrace>) {
        let _ = trace;
    }
}

/// Routed frames a core keeps while their next hop is being resolved (Linux keeps 3
/// per neighbour; this is per core, over all neighbours).
pub const HOLD_QUEUE_LEN: usize = 64;

/// Where a worker is among its peers, and how much router state it keeps.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSlot {
    /// This worker's index.
    pub index: u16,
    /// Number of workers (SNAT port slices).
    pub count: u16,
    /// SNAT sessions this worker can hold.
    pub nat_sessions: usize,
    /// Whether GRE received here is shared with the other workers by its inner flow
    /// ([`spread`]).
    pub spread_tunnels: bool,
    /// Entries of each of this worker's caches ([`fdb_cache::FdbCache::new`]).
    pub cache_entries: usize,
}

/// Frames waiting for a neighbour: what they wait for, since when (seconds), the frame.
type HoldQueue<F> = VecDeque<(Unresolved, u32, F)>;

/// One core's forwarding state over frames of type `F` (mbufs in a worker, byte
/// buffers in tests, property tests and fuzzers): the tables it reads, what it tells
/// the control plane, its caches, its router state (SNAT sessions) and the frames it
/// holds for a neighbour. Everything a change of the tables retires goes before the
/// core forwards with them, and only then does the control plane hear it moved on.
pub struct Core<F> {
    tables: TableReader,
    state: CoreState,
    held: HoldQueue<F>,
    /// The [`crate::table::FlowTables::retired`] mark whose state this core dropped.
    retired: u64,
}

/// A sink that keeps routed frames waiting for a neighbour in the core's hold queue.
struct Parking<'a, S, F> {
    sink: &'a mut S,
    held: &'a mut HoldQueue<F>,
    now: u32,
}

impl<F, S: Sink<F>> Sink<F> for Parking<'_, S, F> {
    #[inline(always)]
    fn send(&mut self, port: u16, frame: F) {
        self.sink.send(port, frame);
    }

    fn park(&mut self, next_hop: Unresolved, frame: F) -> Option<F> {
        if self.held.len() >= HOLD_QUEUE_LEN {
            return Some(frame);
        }
        self.held.push_back((next_hop, self.now, frame));
        None
    }

    #[inline]
    fn hand_off(&mut self, worker: u16, frame: F) -> Option<F> {
        self.sink.hand_off(worker, frame)
    }
}

impl<F: Frame> Core<F> {
    /// A core reading `tables`, reporting to `events`, as worker `slot`.
    pub fn new(tables: TableReader, events: Arc<EventQueue>, slot: WorkerSlot) -> Self {
        Self {
            tables,
            state: CoreState {
                learner: Learner::new(events, slot.cache_entries),
                cache: FdbCache::new(slot.cache_entries),
                router: RouterState::new(slot.nat_sessions, slot.index, slot.count),
                spread: if slot.spread_tunnels {
                    Spread::new(slot.index, slot.count)
                } else {
                    None
                },
                ahead: ahead::Ahead::default(),
            },
            held: VecDeque::with_capacity(HOLD_QUEUE_LEN),
            retired: 0,
        }
    }

    /// The tables in use.
    #[inline(always)]
    pub fn tables(&self) -> &FlowTables {
        self.tables.tables()
    }

    /// Frames held for a neighbour now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// SNAT sessions this core holds now.
    pub fn sessions(&self) -> usize {
        self.state.router.nat.len()
    }

    /// Starts a burst at `now` (seconds on the core's clock): moves to the newest
    /// tables, gives held frames their chance, sweeps a few expired SNAT sessions.
    #[inline]
    pub fn begin(&mut self, now: u32, sink: &mut impl Sink<F>, counters: &CoreCounters) {
        self.state.learner.now = now;
        if self.refresh(counters) || self.held_expired() {
            self.release_held(sink, counters);
        }
        let tables = self.tables.tables();
        self.state.router.nat.sweep_some(&tables.nat, now);
        counters.set_nat_sessions(self.state.router.nat.len());
    }

    /// Starts loading what the frames of a burst from `in_port` will look up
    /// ([`dispatch::prefetch_burst`]).
    #[inline(always)]
    pub fn prefetch<'a>(&mut self, in_port: u16, frames: impl Iterator<Item = &'a [u8]> + Clone) {
        dispatch::prefetch_burst(self.tables.tables(), &mut self.state, in_port, frames);
    }

    /// Runs a burst of frames received on `in_port` (after [`Core::begin`]).
    #[inline]
    pub fn run(
        &mut self,
        in_port: u16,
        frames: impl Iterator<Item = F>,
        sink: &mut impl Sink<F>,
        counters: &CoreCounters,
    ) {
        let tables = self.tables.tables();
        let mut parking = Parking {
            sink,
            held: &mut self.held,
            now: self.state.learner.now,
        };
        let mut cx = self.state.context(counters, stage::NoTrace, true);
        cx.in_port = in_port;
        dispatch::handle_burst(tables, in_port, frames, &mut parking, &mut cx);
    }

    /// Runs one frame received on `in_port`, noting every decision and where the frame
    /// (and what it made) went: a live trace.
    #[cold]
    pub fn run_traced(
        &mut self,
        in_port: u16,
        frame: F,
        sink: &mut impl Sink<F>,
        counters: &CoreCounters,
    ) -> (Vec<String>, Vec<live_trace::TracedOutput>) {
        let tables = self.tables.tables();
        let mut outputs = Vec::new();
        let mut recording = live_trace::Recording {
            inner: Parking {
                sink,
                held: &mut self.held,
                now: self.state.learner.now,
            },
            outputs: &mut outputs,
        };
        let mut cx = self.state.context(counters, Vec::<String>::new(), true);
        cx.in_port = in_port;
        dispatch::handle(tables, in_port, frame, &mut recording, &mut cx);
        (cx.tracer, outputs)
    }

    /// What a core does when no packet came: moves to new tables (so it frees the old
    /// ones, and the control plane may reuse what they retired), and gives held frames
    /// the chance new tables may bring. Returns how many frames it moved; cheap when
    /// there is nothing to do.
    pub fn idle(&mut self, now: u32, sink: &mut impl Sink<F>, counters: &CoreCounters) -> usize {
        let moved = self.refresh(counters);
        if moved {
            // New tables may have taken sessions away (a gateway gone, a new address).
            counters.set_nat_sessions(self.state.router.nat.len());
        }
        if self.held.is_empty() {
            return 0;
        }
        self.state.learner.now = now;
        if !moved && !self.held_expired() {
            return 0;
        }
        self.release_held(sink, counters)
    }

    fn held_expired(&self) -> bool {
        self.held
            .front()
            .is_some_and(|h| self.state.learner.now.wrapping_sub(h.1) >= router::HOLD_SECS)
    }

    /// Moves to the newest tables, if there are any; true when it did. State that
    /// names what the new tables retired goes first, then the control plane hears
    /// that this core is done with the old tables (and may reuse their identities).
    fn refresh(&mut self, counters: &CoreCounters) -> bool {
        if !self.tables.refresh() {
            return false;
        }
        self.state.cache.clear();
        let retired = self.tables.tables().retired;
        if retired != self.retired {
            self.retired = retired;
            self.forget_retired(counters);
        }
        self.tables.post();
        true
    }

    /// Drops the SNAT sessions whose gateway is no longer here (or no longer on that
    /// address), the held frames of tenants that are gone, and the learning memos.
    #[cold]
    fn forget_retired(&mut self, counters: &CoreCounters) {
        let tables = self.tables.tables();
        self.state.router.nat.retain(|tenant, outside| {
            tables
                .router(tenant)
                .filter(|r| r.here)
                .and_then(|r| r.snat_ip)
                == Some(outside)
        });
        let before = self.held.len();
        self.held
            .retain(|(pending, _, _)| tables.tenant(pending.tenant).is_some());
        counters.add_drop(DropReason::Retired, before - self.held.len());
        self.state.learner.forget();
    }

    /// Gives held frames their next chance with the tables in use; drops the ones
    /// whose neighbour stayed unresolved too long. Returns how many left the queue.
    fn release_held(&mut self, sink: &mut impl Sink<F>, counters: &CoreCounters) -> usize {
        if self.held.is_empty() {
            return 0;
        }
        let before = self.held.len();
        let tables = self.tables.tables();
        let now = self.state.learner.now;
        let mut cx = self.state.context(counters, stage::NoTrace, true);
        for _ in 0..self.held.len() {
            let Some((pending, since, frame)) = self.held.pop_front() else {
                break;
            };
            if let Err(frame) = dispatch::release(tables, pending, frame, sink, &mut cx) {
                if now.wrapping_sub(since) < router::HOLD_SECS {
                    self.held.push_back((pending, since, frame));
                } else {
                    drop(frame);
                    counters.add_drop(DropReason::NeighborUnresolved, 1);
                }
            }
        }
        before - self.held.len()
    }
}

/// The tenant switch as a worker's pipeline: a [`Core`] over mbufs, sending to the
/// worker's per-port outputs.
pub struct SwitchPipeline {
    core: Core<Mbuf>,
    tsc_hz: u64,
    worker: u16,
    live: Option<live_trace::LiveTrace>,
}

impl SwitchPipeline {
    /// A pipeline reading `tables` and reporting to `events`, as worker `slot`.
    pub fn new(
        tables: TableReader,
        events: Arc<EventQueue>,
        tsc_hz: u64,
        slot: WorkerSlot,
    ) -> Self {
        Self {
            worker: slot.index,
            core: Core::new(tables, events, slot),
            tsc_hz: tsc_hz.max(1),
            live: None,
        }
    }

    /// Runs a burst from a traced port one frame at a time, recording each until the
    /// trace has its packets; the rest run untraced.
    #[cold]
    #[inline(never)]
    fn process_traced(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    ) {
        let Some(live) = self.live.clone() else {
            return;
        };
        for frame in batch.drain() {
            let mut sink = TxSink { outputs, counters };
            if !live.wants_more() {
                self.core
                    .run(in_port, std::iter::once(frame), &mut sink, counters);
                continue;
            }
            let tsc = crate::dpdk::tsc();
            let data = frame.data();
            let (len, head) = (
                data.len(),
                data[..data.len().min(live_trace::TRACE_HEAD)].to_vec(),
            );
            let (decisions, went) = self.core.run_traced(in_port, frame, &mut sink, counters);
            // Another worker may have filled it meanwhile: this one is not kept.
            let _ = live.records.push(live_trace::TracedPacket {
                worker: self.worker,
                tsc,
                port: in_port,
                len,
                head,
                decisions,
                outputs: went,
            });
        }
    }

    fn now(&self) -> u32 {
        (crate::dpdk::tsc() / self.tsc_hz) as u32
    }
}

struct TxSink<'a> {
    outputs: &'a mut Outputs,
    counters: &'a CoreCounters,
}

impl Sink<Mbuf> for TxSink<'_> {
    #[inline(always)]
    fn send(&mut self, port: u16, frame: Mbuf) {
        self.outputs.push(port, frame, self.counters);
    }

    #[inline]
    fn hand_off(&mut self, worker: u16, frame: Mbuf) -> Option<Mbuf> {
        self.outputs.hand_off(worker, frame, self.counters).err()
    }
}

impl Pipeline for SwitchPipeline {
    fn nat_sessions(
        &self,
        limit: usize,
        tenant: Option<crate::table::TenantIdx>,
    ) -> Vec<nat::SessionView> {
        self.core.state.router.nat.view(self.now(), limit, tenant)
    }

    fn set_live_trace(&mut self, trace: Option<live_trace::LiveTrace>) {
        self.live = trace;
    }

    fn idle(&mut self, outputs: &mut Outputs, counters: &CoreCounters) -> usize {
        let now = self.now();
        let mut sink = TxSink { outputs, counters };
        let moved = self.core.idle(now, &mut sink, counters);
        // Held frames released now are captured (at the flush that follows) as the
        // tables the core just moved to say.
        let tables = self.core.tables();
        outputs.set_capture(&tables.capture, &tables.capture_filter);
        moved
    }

    #[inline]
    fn process(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    ) {
        let now = self.now();
        self.core
            .begin(now, &mut TxSink { outputs, counters }, counters);
        let tables = self.core.tables();
        let received = in_port;
        let in_port = match (in_port, tables.uplink) {
            (stage::HANDOFF_PORT, Some(up)) => up.port,
            (port, _) => port,
        };
        outputs.set_capture(&tables.capture, &tables.capture_filter);
        // A frame another worker handed over was captured and traced where it came in.
        if received != stage::HANDOFF_PORT {
            outputs.capture_rx(in_port, batch, counters);
            if self
                .live
                .as_ref()
                .is_some_and(|live| live.ports.contains(usize::from(in_port)))
            {
                return self.process_traced(in_port, batch, outputs, counters);
            }
        }
        if let PortRole::CrossConnect(peer) = *tables.role(in_port) {
            return outputs.push_batch(peer, batch, counters);
        }
        self.core
            .prefetch(in_port, batch.as_slice().iter().map(Mbuf::data));
        let mut sink = TxSink { outputs, counters };
        self.core.run(in_port, batch.drain(), &mut sink, counters);
    }
}
