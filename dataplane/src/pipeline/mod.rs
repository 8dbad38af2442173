//! What happens to a burst between RX and TX. A [`Pipeline`] takes the packets of one
//! RX burst and places each in the [`Outputs`] of the port it must leave on (or drops it,
//! naming the reason); the worker flushes the outputs once per burst.

/// Records a decision when the context traces (see [`switch::Trace`]); compiles to
/// nothing in the dataplane, whose tracer's `ON` is false.
macro_rules! note {
    ($cx:expr, $($arg:tt)*) => {
        if T::ON {
            $cx.tracer.note(format_args!($($arg)*));
        }
    };
}

pub mod events;
pub mod fdb_cache;
pub mod nat;
mod outputs;
pub mod router;
pub mod switch;
mod xconnect;

pub use outputs::Outputs;
pub use xconnect::CrossConnect;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::counters::{CoreCounters, DropReason};
use crate::dpdk::{Mbuf, MbufBatch};
use crate::table::publish::TableReader;
use crate::table::PortRole;
use events::{EventQueue, Learner};
use fdb_cache::{FdbCache, Unresolved};
use router::RouterState;
use switch::{Context, Sink};

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
}

/// Frames waiting for a neighbour: what they wait for, since when (seconds), the frame.
type HoldQueue = VecDeque<(Unresolved, u32, Mbuf)>;

/// The tenant switch as a worker's pipeline: picks up the newest flow tables at the top
/// of each burst and runs every frame through [`switch::handle`].
pub struct SwitchPipeline {
    tables: TableReader,
    learner: Learner,
    cache: FdbCache,
    router: RouterState,
    held: HoldQueue,
    tsc_hz: u64,
    /// The [`crate::table::FlowTables::retired`] mark whose state this core dropped.
    retired: u64,
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
            tables,
            learner: Learner::new(events),
            cache: FdbCache::default(),
            router: RouterState::new(slot.nat_sessions, slot.index, slot.count),
            held: VecDeque::with_capacity(HOLD_QUEUE_LEN),
            tsc_hz: tsc_hz.max(1),
            retired: 0,
        }
    }

    /// Moves to the newest tables, if there are any; true when it did. State that
    /// names what the new tables retired goes first, then the control plane hears
    /// that this core is done with the old tables (and may reuse their identities).
    fn refresh(&mut self, counters: &CoreCounters) -> bool {
        if !self.tables.refresh() {
            return false;
        }
        self.cache.clear();
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
        self.router.nat.retain(|tenant, outside| {
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
        self.learner.forget();
    }

    /// Gives held frames their next chance with newer tables; drops the ones whose
    /// neighbour stayed unresolved too long.
    fn release_held(&mut self, outputs: &mut Outputs, counters: &CoreCounters) -> usize {
        let before = self.held.len();
        let tables = self.tables.tables();
        let now = self.learner.now;
        let mut sink = TxSink {
            outputs,
            counters,
            held: None,
        };
        let mut cx = Context {
            counters,
            learner: &mut self.learner,
            cache: &mut self.cache,
            router: &mut self.router,
            tracer: switch::NoTrace,
        };
        for _ in 0..self.held.len() {
            let Some((pending, since, frame)) = self.held.pop_front() else {
                break;
            };
            if let Err(frame) = router::release(tables, pending, frame, &mut sink, &mut cx) {
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

struct TxSink<'a> {
    outputs: &'a mut Outputs,
    counters: &'a CoreCounters,
    held: Option<(&'a mut HoldQueue, u32)>,
}

impl Sink<Mbuf> for TxSink<'_> {
    #[inline(always)]
    fn send(&mut self, port: u16, frame: Mbuf) {
        self.outputs.push(port, frame, self.counters);
    }

    fn park(&mut self, next_hop: Unresolved, frame: Mbuf) -> Option<Mbuf> {
        match self.held.as_mut() {
            Some((queue, now)) if queue.len() < HOLD_QUEUE_LEN => {
                queue.push_back((next_hop, *now, frame));
                None
            }
            _ => Some(frame),
        }
    }

    #[inline]
    fn hand_off(&mut self, worker: u16, frame: Mbuf) -> Option<Mbuf> {
        self.outputs.hand_off(worker, frame, self.counters).err()
    }
}

impl Pipeline for SwitchPipeline {
    fn idle(&mut self, outputs: &mut Outputs, counters: &CoreCounters) -> usize {
        // An idle core moves to new tables too: it frees the old ones, and the control
        // plane may reuse what they retired only once every core has moved. A held frame
        // waits for the snapshot that resolves its neighbour, which may come when no
        // other packet does.
        let moved = self.refresh(counters);
        if self.held.is_empty() {
            return 0;
        }
        self.learner.now = (crate::dpdk::tsc() / self.tsc_hz) as u32;
        let expired = self
            .held
            .front()
            .is_some_and(|h| self.learner.now.wrapping_sub(h.1) >= router::HOLD_SECS);
        if !moved && !expired {
            return 0;
        }
        self.release_held(outputs, counters)
    }

    #[inline]
    fn process(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    ) {
        self.learner.now = (crate::dpdk::tsc() / self.tsc_hz) as u32;
        if self.refresh(counters) {
            if !self.held.is_empty() {
                self.release_held(outputs, counters);
            }
        } else if self
            .held
            .front()
            .is_some_and(|h| self.learner.now.wrapping_sub(h.1) >= router::HOLD_SECS)
        {
            self.release_held(outputs, counters);
        }
        let tables = self.tables.tables();
        let in_port = match (in_port, tables.uplink) {
            (switch::HANDOFF_PORT, Some(up)) => up.port,
            (port, _) => port,
        };
        self.router.nat.sweep_some(&tables.nat, self.learner.now);
        outputs.set_capture_mask(&tables.capture);
        outputs.capture_rx(in_port, batch);
        match *tables.role(in_port) {
            PortRole::CrossConnect(peer) => return outputs.push_batch(peer, batch, counters),
            // Routed traffic: the whole burst's route slots start loading before the first
            // frame needs its own (many flows spread them over more than L1 holds).
            PortRole::Access { tenant, .. } => {
                if let Some(router) = tables.router(tenant) {
                    for mbuf in batch.as_slice() {
                        self.cache.prefetch_route(tenant, mbuf.data());
                    }
                    // Then the SNAT slots of the frames those routes send outside.
                    if router.snat_ip.is_some() {
                        for mbuf in batch.as_slice() {
                            let data = mbuf.data();
                            router::prefetch_external(&self.cache, &self.router.nat, tenant, data);
                        }
                    }
                }
            }
            _ => {}
        }
        let now = self.learner.now;
        let mut sink = TxSink {
            outputs,
            counters,
            held: Some((&mut self.held, now)),
        };
        let mut cx = Context {
            counters,
            learner: &mut self.learner,
            cache: &mut self.cache,
            router: &mut self.router,
            tracer: switch::NoTrace,
        };
        switch::handle_burst(tables, in_port, batch.drain(), &mut sink, &mut cx);
    }
}
