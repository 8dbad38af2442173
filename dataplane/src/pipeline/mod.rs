//! What happens to a burst between RX and TX. A [`Pipeline`] takes the packets of one
//! RX burst and places each in the [`Outputs`] of the port it must leave on (or drops it,
//! naming the reason); the worker flushes the outputs once per burst.

mod outputs;
mod xconnect;

pub use outputs::Outputs;
pub use xconnect::CrossConnect;

use crate::counters::CoreCounters;
use crate::dpdk::MbufBatch;

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
