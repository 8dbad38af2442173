//! Static cross-connect: everything received on a port leaves on its peer, unmodified.
//! The baseline pipeline (and testpmd's io forwarding in tenet's terms).

use super::{Outputs, Pipeline};
use crate::counters::{CoreCounters, DropReason};
use crate::dpdk::MbufBatch;
use crate::MAX_PORTS;

const NONE: u16 = u16::MAX;

/// Port → peer port table.
#[derive(Debug, Clone)]
pub struct CrossConnect {
    peer: [u16; MAX_PORTS],
}

impl Default for CrossConnect {
    fn default() -> Self {
        Self {
            peer: [NONE; MAX_PORTS],
        }
    }
}

impl CrossConnect {
    /// Sends what arrives on `from` out of `to` (one direction).
    pub fn connect_one_way(&mut self, from: u16, to: u16) {
        if let Some(slot) = self.peer.get_mut(usize::from(from)) {
            *slot = to;
        }
    }

    /// Connects two ports both ways.
    pub fn connect(&mut self, a: u16, b: u16) {
        self.connect_one_way(a, b);
        self.connect_one_way(b, a);
    }

    /// Where packets from `port` go.
    pub fn peer(&self, port: u16) -> Option<u16> {
        match self.peer.get(usize::from(port)) {
            Some(&NONE) | None => None,
            Some(&p) => Some(p),
        }
    }
}

impl Pipeline for CrossConnect {
    #[inline]
    fn process(
        &mut self,
        in_port: u16,
        batch: &mut MbufBatch,
        outputs: &mut Outputs,
        counters: &CoreCounters,
    ) {
        // The whole burst came from one port, so one decision serves all of it.
        match self.peer(in_port) {
            Some(out) => outputs.push_batch(out, batch, counters),
            None => counters.add_drop(DropReason::NoOutput, batch.free_all()),
        }
    }
}
