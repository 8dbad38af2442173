//! What happens to a burst between RX and TX. A [`Pipeline`] takes the packets of one
//! RX burst and places each in the [`Outputs`] of the port it must leave on (or drops it,
//! naming the reason); the worker flushes the outputs once per burst.

pub mod events;
pub mod fdb_cache;
mod outputs;
pub mod switch;
mod xconnect;

pub use outputs::Outputs;
pub use xconnect::CrossConnect;

use std::sync::Arc;

use crate::counters::CoreCounters;
use crate::dpdk::{Mbuf, MbufBatch};
use crate::table::publish::TableReader;
use crate::table::PortRole;
use events::{EventQueue, Learner};
use fdb_cache::FdbCache;
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
}

/// The tenant switch as a worker's pipeline: picks up the newest flow tables at the top
/// of each burst and runs every frame through [`switch::handle`].
pub struct SwitchPipeline {
    tables: TableReader,
    learner: Learner,
    cache: FdbCache,
    tsc_hz: u64,
}

impl SwitchPipeline {
    /// A pipeline reading `tables` and reporting to `events`.
    pub fn new(tables: TableReader, events: Arc<EventQueue>, tsc_hz: u64) -> Self {
        Self {
            tables,
            learner: Learner::new(events),
            cache: FdbCache::default(),
            tsc_hz: tsc_hz.max(1),
        }
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
}

impl Pipeline for SwitchPipeline {
    #[inline]
    fn process(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    ) {
        if self.tables.refresh() {
            self.cache.clear();
        }
        self.learner.now = (crate::dpdk::tsc() / self.tsc_hz) as u32;
        let tables = self.tables.tables();
        outputs.set_capture_mask(tables.capture);
        outputs.capture_rx(in_port, batch);
        if let PortRole::CrossConnect(peer) = *tables.role(in_port) {
            return outputs.push_batch(peer, batch, counters);
        }
        let mut sink = TxSink { outputs, counters };
        let mut cx = Context {
            counters,
            learner: &mut self.learner,
            cache: &mut self.cache,
            tracer: switch::NoTrace,
        };
        switch::handle_burst(tables, in_port, batch.drain(), &mut sink, &mut cx);
    }
}
