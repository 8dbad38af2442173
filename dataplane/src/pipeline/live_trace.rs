//! Tracing real packets (VPP's `trace add`): while a [`LiveTrace`] is given to a
//! worker, the frames it receives on the traced ports run one at a time with every
//! decision noted, until the shared record queue is full; then the worker runs them
//! untraced again. Only traced frames pay for it: the untraced path checks one
//! `Option` per burst.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::fdb_cache::Unresolved;
use super::stage::Sink;
use crate::port_set::PortSet;

/// Bytes of a traced frame kept with its decisions (its headers, as VPP keeps them).
pub const TRACE_HEAD: usize = 128;

/// A trace the control plane hands every worker: which ports, and where the records
/// go (its capacity is the number of packets to trace, shared by all workers).
#[derive(Clone)]
pub struct LiveTrace {
    /// Ports whose received frames are traced.
    pub ports: PortSet,
    /// The records; full means done.
    pub records: Arc<ArrayQueue<TracedPacket>>,
    /// Set by the control plane before it takes the records: a worker that has not yet
    /// heard it must stop must not trace again into the emptied queue.
    pub done: Arc<AtomicBool>,
}

impl LiveTrace {
    /// Whether the worker traces the next frame.
    pub fn wants_more(&self) -> bool {
        !self.records.is_full() && !self.done.load(Ordering::Relaxed)
    }
}

/// Where a traced frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracedOutput {
    /// Sent to a port.
    Port(u16),
    /// Handed to another worker, which holds its state.
    Worker(u16),
    /// Held until its next hop resolves.
    Held,
}

/// One traced frame.
#[derive(Debug, Clone)]
pub struct TracedPacket {
    /// The worker that ran it.
    pub worker: u16,
    /// Its TSC when the frame started.
    pub tsc: u64,
    /// The port it came in on.
    pub port: u16,
    /// Its length.
    pub len: usize,
    /// Its first [`TRACE_HEAD`] bytes, as received.
    pub head: Vec<u8>,
    /// What the pipeline decided, in order (notes naming `port #N`, `tenant #id`, ...).
    pub decisions: Vec<String>,
    /// Where it and the frames it made (flood copies) went.
    pub outputs: Vec<TracedOutput>,
}

/// A sink that writes down where each frame goes, then lets `inner` take it.
pub(crate) struct Recording<'a, S> {
    pub(crate) inner: S,
    pub(crate) outputs: &'a mut Vec<TracedOutput>,
}

impl<F, S: Sink<F>> Sink<F> for Recording<'_, S> {
    fn send(&mut self, port: u16, frame: F) {
        self.outputs.push(TracedOutput::Port(port));
        self.inner.send(port, frame);
    }

    fn park(&mut self, next_hop: Unresolved, frame: F) -> Option<F> {
        let back = self.inner.park(next_hop, frame);
        if back.is_none() {
            self.outputs.push(TracedOutput::Held);
        }
        back
    }

    fn hand_off(&mut self, worker: u16, frame: F) -> Option<F> {
        let back = self.inner.hand_off(worker, frame);
        if back.is_none() {
            self.outputs.push(TracedOutput::Worker(worker));
        }
        back
    }
}
