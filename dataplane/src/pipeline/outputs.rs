//! Per-port TX buffers of one worker, and where each port's packets go when flushed: the
//! worker's own TX queue on that port, or the ring to the core that owns it.

use super::capture::{CaptureFilter, Direction, Stamp, STAMP_LEN};
use crate::counters::{CoreCounters, DropReason};
use crate::dpdk::{Cut, Mbuf, MbufBatch, RingConsumer, RingProducer, TxQueue};
use crate::port_set::PortSet;
use crate::MAX_PORTS;

enum Sink {
    /// No route to this port from this worker.
    None,
    /// Index into `queues`.
    Queue(usize),
    /// Index into `rings`.
    Ring(usize),
}

/// A worker's outputs: one buffer per port, flushed once per burst.
pub struct Outputs {
    buffers: Box<[MbufBatch; MAX_PORTS]>,
    /// Ports whose buffer holds packets.
    dirty: PortSet,
    sinks: [Sink; MAX_PORTS],
    queues: Vec<Option<TxQueue>>,
    rings: Vec<Option<RingProducer>>,
    /// Ports whose sent and received packets are copied to `capture`, and which of
    /// their frames.
    capture_mask: PortSet,
    capture_filter: CaptureFilter,
    capture: Option<RingProducer>,
    /// By worker index: frames to run on that worker, and the ring to it.
    handoffs: Vec<(MbufBatch, Option<RingProducer>)>,
    /// Bit w set: the handoff buffer for worker w holds frames.
    handoff_dirty: u64,
}

impl Outputs {
    /// Outputs over the TX queues this worker owns and the rings to the owners of the
    /// other ports' TX queues (`(destination port, producer)`).
    pub fn new(queues: Vec<TxQueue>, rings: Vec<(u16, RingProducer)>) -> Self {
        let mut outputs = Self {
            buffers: Box::new(std::array::from_fn(|_| MbufBatch::new())),
            dirty: PortSet::EMPTY,
            sinks: std::array::from_fn(|_| Sink::None),
            queues: Vec::new(),
            rings: Vec::new(),
            capture_mask: PortSet::EMPTY,
            capture_filter: CaptureFilter::ANY,
            capture: None,
            handoffs: Vec::new(),
            handoff_dirty: 0,
        };
        outputs.attach(queues, rings);
        outputs
    }

    /// The ring copies of captured packets go to.
    pub fn set_capture_ring(&mut self, ring: Option<RingProducer>) {
        self.capture = ring;
    }

    /// The rings to the other workers (`(worker index, producer)`), for frames whose
    /// state another worker holds.
    pub fn set_handoff_rings(&mut self, rings: Vec<(u16, RingProducer)>) {
        let count = rings
            .iter()
            .map(|(w, _)| usize::from(*w) + 1)
            .max()
            .unwrap_or(0);
        const _: () = assert!(crate::MAX_WORKERS <= 64, "handoff mask is a u64");
        self.handoffs = (0..count.min(crate::MAX_WORKERS))
            .map(|_| (MbufBatch::new(), None))
            .collect();
        for (worker, ring) in rings {
            if let Some(slot) = self.handoffs.get_mut(usize::from(worker)) {
                slot.1 = Some(ring);
            }
        }
    }

    /// Queues `mbuf` for worker `worker`; gives it back when there is no ring there.
    #[inline]
    pub fn hand_off(
        &mut self,
        worker: u16,
        mbuf: Mbuf,
        counters: &CoreCounters,
    ) -> Result<(), Mbuf> {
        let w = usize::from(worker);
        let Some((buffer, Some(_))) = self.handoffs.get_mut(w) else {
            return Err(mbuf);
        };
        if let Err(back) = buffer.push(mbuf) {
            self.flush_handoff(w, counters);
            if self.handoffs[w].0.push(back).is_err() {
                counters.add_drop(DropReason::RingFull, 1);
            }
        }
        self.handoff_dirty |= 1 << w;
        Ok(())
    }

    #[cold]
    fn flush_handoffs(&mut self, counters: &CoreCounters) {
        let mut dirty = self.handoff_dirty;
        while dirty != 0 {
            let w = dirty.trailing_zeros() as usize;
            dirty &= dirty - 1;
            self.flush_handoff(w, counters);
        }
        self.handoff_dirty = 0;
    }

    fn flush_handoff(&mut self, w: usize, counters: &CoreCounters) {
        let (buffer, ring) = &mut self.handoffs[w];
        if let Some(ring) = ring.as_mut() {
            ring.enqueue_burst(buffer);
        }
        if !buffer.is_empty() {
            counters.add_drop(DropReason::RingFull, buffer.free_all());
        }
    }

    /// Which ports to capture and which of their frames, from the current flow tables.
    #[inline(always)]
    pub fn set_capture(&mut self, mask: &PortSet, filter: &CaptureFilter) {
        self.capture_mask = *mask;
        if !mask.is_empty() {
            self.capture_filter = *filter;
        }
    }

    /// Copies a burst received on `port` to the capture ring if `port` is being
    /// captured.
    #[inline(always)]
    pub fn capture_rx(&mut self, port: u16, batch: &MbufBatch, counters: &CoreCounters) {
        if self.capture_mask.contains(usize::from(port)) {
            let stamp = Stamp {
                tsc: crate::dpdk::tsc(),
                port,
                direction: Direction::In,
            };
            copy_to(
                &mut self.capture,
                batch,
                stamp,
                &self.capture_filter,
                counters,
            );
        }
    }

    /// Adds TX queues this worker now owns and rings to the owners of other new ports.
    pub fn attach(&mut self, queues: Vec<TxQueue>, rings: Vec<(u16, RingProducer)>) {
        for q in queues {
            if let Some(slot) = self.sinks.get_mut(usize::from(q.port())) {
                *slot = Sink::Queue(self.queues.len());
                self.queues.push(Some(q));
            }
        }
        for (port, ring) in rings {
            if let Some(slot @ Sink::None) = self.sinks.get_mut(usize::from(port)) {
                *slot = Sink::Ring(self.rings.len());
                self.rings.push(Some(ring));
            }
        }
    }

    /// Stops reaching `port`: what is buffered for it goes out first, then its queue or
    /// ring is released.
    pub fn detach(&mut self, port: u16, counters: &CoreCounters) {
        let p = usize::from(port);
        if p >= MAX_PORTS {
            return;
        }
        self.flush_port(p, counters);
        self.dirty.remove(p);
        match std::mem::replace(&mut self.sinks[p], Sink::None) {
            Sink::Queue(i) => self.queues[i] = None,
            Sink::Ring(i) => self.rings[i] = None,
            Sink::None => {}
        }
    }

    /// Ports this worker can reach.
    pub fn reaches(&self, port: u16) -> bool {
        !matches!(self.sinks.get(usize::from(port)), None | Some(Sink::None))
    }

    /// Queues one packet for `port`.
    #[inline(always)]
    pub fn push(&mut self, port: u16, mbuf: Mbuf, counters: &CoreCounters) {
        let p = usize::from(port);
        if p >= MAX_PORTS {
            drop(mbuf);
            counters.add_drop(DropReason::NoOutput, 1);
            return;
        }
        if let Err(back) = self.buffers[p].push(mbuf) {
            // Full only when one burst fanned out more than a burst to one port.
            self.flush_port(p, counters);
            if self.buffers[p].push(back).is_err() {
                counters.add_drop(DropReason::TxRefused, 1);
            }
        }
        self.dirty.insert(p);
    }

    /// Queues a whole batch for `port`, leaving `batch` empty.
    #[inline(always)]
    pub fn push_batch(&mut self, port: u16, batch: &mut MbufBatch, counters: &CoreCounters) {
        let p = usize::from(port);
        if p >= MAX_PORTS {
            counters.add_drop(DropReason::NoOutput, batch.free_all());
            return;
        }
        while !batch.is_empty() {
            if self.buffers[p].append(batch) == 0 {
                self.flush_port(p, counters);
            }
        }
        self.dirty.insert(p);
    }

    /// Hands every buffered packet to its device or ring; frees and counts what they
    /// refuse.
    #[inline(always)]
    pub fn flush(&mut self, counters: &CoreCounters) {
        let dirty = self.dirty.take();
        for p in dirty.iter() {
            self.flush_port(p, counters);
        }
        if self.handoff_dirty != 0 {
            self.flush_handoffs(counters);
        }
    }

    #[inline(always)]
    fn flush_port(&mut self, p: usize, counters: &CoreCounters) {
        let buffer = &mut self.buffers[p];
        if buffer.is_empty() {
            return;
        }
        // Taken by the worker that switched the frame, whether it sends it or hands it
        // to the TX queue's owner (which does not take it again).
        if self.capture_mask.contains(p) {
            let stamp = Stamp {
                tsc: crate::dpdk::tsc(),
                port: p as u16, // below MAX_PORTS
                direction: Direction::Out,
            };
            copy_to(
                &mut self.capture,
                buffer,
                stamp,
                &self.capture_filter,
                counters,
            );
        }
        match self.sinks[p] {
            Sink::Queue(i) => {
                if let Some(queue) = self.queues[i].as_mut() {
                    if !queue.takes_large() && buffer.owes_segmentation() {
                        cut_and_send(queue, buffer, counters);
                    } else {
                        counters.add_tx(queue.tx_burst(buffer));
                    }
                }
                if !buffer.is_empty() {
                    counters.add_drop(DropReason::TxRefused, buffer.free_all());
                }
            }
            Sink::Ring(i) => {
                if let Some(ring) = self.rings[i].as_mut() {
                    ring.enqueue_burst(buffer);
                }
                if !buffer.is_empty() {
                    counters.add_drop(DropReason::RingFull, buffer.free_all());
                }
            }
            Sink::None => counters.add_drop(DropReason::NoOutput, buffer.free_all()),
        }
    }

    /// Transmits what other cores handed over for ports whose TX queue this worker owns.
    /// Returns how many packets came in.
    #[inline(always)]
    pub fn drain_inbound(
        &mut self,
        inbound: &mut [(u16, RingConsumer)],
        scratch: &mut MbufBatch,
        counters: &CoreCounters,
    ) -> usize {
        let mut moved = 0;
        // The senders took their capture copies already.
        let mask = std::mem::replace(&mut self.capture_mask, PortSet::EMPTY);
        for (port, ring) in inbound.iter_mut() {
            if ring.dequeue_burst(scratch) == 0 {
                continue;
            }
            moved += scratch.len();
            self.push_batch(*port, scratch, counters);
        }
        if moved > 0 {
            self.flush(counters);
        }
        self.capture_mask = mask;
        moved
    }
}

/// Sends `batch` through `queue` with its large TCP segments cut into frames the
/// device takes, in order; frees and counts what cannot be cut or is refused.
#[cold]
fn cut_and_send(queue: &mut TxQueue, batch: &mut MbufBatch, counters: &CoreCounters) {
    let mut out = MbufBatch::new();
    for frame in batch.drain() {
        if frame.gso_size() == 0 {
            if let Err(frame) = out.push(frame) {
                transmit(queue, &mut out, counters);
                let _ = out.push(frame);
            }
            continue;
        }
        let mut from = 0;
        loop {
            match queue.cut(&frame, from, &mut out) {
                Cut::Done => break,
                Cut::More(next) => {
                    transmit(queue, &mut out, counters);
                    from = next;
                }
                Cut::Failed => {
                    counters.add_drop(DropReason::Uncuttable, 1);
                    break;
                }
            }
        }
    }
    transmit(queue, &mut out, counters);
}

/// Sends `out` through `queue`; frees and counts what the device refuses.
fn transmit(queue: &mut TxQueue, out: &mut MbufBatch, counters: &CoreCounters) {
    counters.add_tx(queue.tx_burst(out));
    if !out.is_empty() {
        counters.add_drop(DropReason::TxRefused, out.free_all());
    }
}

/// Copies the packets of `batch` that `filter` takes into the capture ring, each with
/// `stamp` in front; copies that find no buffer, no headroom or no room in the ring
/// are counted as missed, never the traffic itself.
#[cold]
fn copy_to(
    ring: &mut Option<RingProducer>,
    batch: &MbufBatch,
    stamp: Stamp,
    filter: &CaptureFilter,
    counters: &CoreCounters,
) {
    let Some(ring) = ring.as_mut() else {
        return;
    };
    let stamp = stamp.bytes();
    let mut copies = MbufBatch::new();
    let mut missed = 0;
    for mbuf in batch.as_slice() {
        if !filter.matches(mbuf.data()) {
            continue;
        }
        let Some(mut copy) = mbuf.duplicate() else {
            missed += 1;
            continue;
        };
        if !copy.prepend(STAMP_LEN) {
            missed += 1;
            continue;
        }
        copy.data_mut()[..STAMP_LEN].copy_from_slice(&stamp);
        if copies.push(copy).is_err() {
            missed += 1;
        }
    }
    ring.enqueue_burst(&mut copies);
    missed += copies.free_all();
    if missed > 0 {
        counters.add_capture_missed(missed);
    }
}
