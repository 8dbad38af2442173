//! Port capture without stopping traffic. The control plane marks the ports and a
//! filter in the flow tables; the workers copy the matching frames they receive and
//! send there into their capture rings, each stamped with the worker's TSC, the port
//! and the direction ([`dataplane::pipeline::capture`]); this module drains the rings
//! every control tick into pcapng blocks and streams them to the client as they come,
//! until enough packets or time have passed or the client goes away.
//!
//! Memory stays bounded whatever the client does: at most [`CHUNKS`] chunks of about
//! [`CHUNK_BYTES`] wait for a slow reader; what does not fit is counted as lost, as
//! are the copies the workers could not make, and the statistics at the end say how
//! many.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::dpdk::{MbufBatch, RingConsumer};
use dataplane::pipeline::capture::{CaptureFilter, Stamp};
use dataplane::worker::Worker;
use hyper::body::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::api::Reply;
use crate::controller::Controller;
use crate::pcapng;
use crate::wiring::NamedPort;

/// Chunks of the stream tenetd keeps for a reader that falls behind.
pub const CHUNKS: usize = 32;
/// A chunk is sent once it holds this much.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Longest capture or live trace: it must end, statistics and all, before its API
/// connection does (ten minutes).
pub const MAX_SECONDS: f64 = 590.0;

/// What to capture (`POST /v1/capture`).
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureRequest {
    /// Port names; none: every port.
    pub ports: Vec<String>,
    /// Frames to capture (0: as many as come in `seconds`).
    pub count: usize,
    /// Longest capture.
    pub seconds: f64,
    /// Which frames.
    pub filter: CaptureFilter,
}

/// Turns worker TSC stamps into wall-clock nanoseconds, from one reading of both.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ns: u64,
    tsc: u64,
    hz: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            wall_ns: wall_ns(),
            tsc: dataplane::dpdk::tsc(),
            hz: dataplane::dpdk::tsc_hz().max(1),
        }
    }

    fn ns(&self, tsc: u64) -> u64 {
        let since = i128::from(tsc) - i128::from(self.tsc);
        let ns = since * 1_000_000_000 / i128::from(self.hz);
        (i128::from(self.wall_ns) + ns).max(0) as u64
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

struct Running {
    /// Port ids by interface number, and their names.
    interfaces: Vec<(u16, String)>,
    count: usize,
    got: usize,
    deadline: Instant,
    chunks: mpsc::Sender<Bytes>,
    clock: Clock,
    /// Frames written, by interface.
    delivered: Vec<u64>,
    /// Frames the reader was too slow for.
    lost: u64,
    /// The workers' missed copies when it started.
    missed_before: u64,
}

/// The capture side of the control loop.
pub struct Capture {
    rings: Vec<RingConsumer>,
    running: Option<Running>,
}

impl Capture {
    /// Over the workers' capture rings.
    pub fn new(rings: Vec<RingConsumer>) -> Self {
        Self {
            rings,
            running: None,
        }
    }

    /// Starts a capture and answers at once with its stream (or refuses it). One
    /// capture at a time.
    pub fn start(
        &mut self,
        request: CaptureRequest,
        reply: oneshot::Sender<Reply>,
        controller: &mut Controller,
        ports: &[NamedPort],
        workers: &[Worker],
    ) {
        if let Some(running) = &self.running {
            let names: Vec<&str> = running.interfaces.iter().map(|(_, n)| n.as_str()).collect();
            let message = format!("a capture of {} is running", names.join(", "));
            let _ = reply.send(Reply::error(409, "ports", &message));
            return;
        }
        let mut interfaces = Vec::new();
        for name in &request.ports {
            match ports.iter().find(|p| &p.name == name) {
                Some(p) if !interfaces.iter().any(|(id, _)| *id == p.port.id()) => {
                    interfaces.push((p.port.id(), p.name.clone()))
                }
                Some(_) => {}
                None => {
                    let message = format!("no port is named `{name}`");
                    let _ = reply.send(Reply::error(404, "ports", &message));
                    return;
                }
            }
        }
        if request.ports.is_empty() {
            interfaces = ports
                .iter()
                .map(|p| (p.port.id(), p.name.clone()))
                .collect();
        }
        // Copies a previous capture left behind are not this one's.
        self.drain(|_| {});
        let mut head = pcapng::section(&format!("tenetd {}", env!("CARGO_PKG_VERSION")));
        for (_, name) in &interfaces {
            pcapng::push_interface(&mut head, name);
        }
        let (chunks, stream) = mpsc::channel(CHUNKS);
        let _ = chunks.try_send(Bytes::from(head));
        controller.set_capture(Some((
            interfaces.iter().map(|(id, _)| *id).collect(),
            request.filter,
        )));
        controller.publish_if_changed();
        let names: Vec<&str> = interfaces.iter().map(|(_, n)| n.as_str()).collect();
        tracing::info!(ports = %names.join(","), count = request.count, seconds = request.seconds, filter = ?request.filter, "capture started");
        self.running = Some(Running {
            delivered: vec![0; interfaces.len()],
            interfaces,
            count: request.count,
            got: 0,
            deadline: Instant::now() + Duration::from_secs_f64(request.seconds),
            chunks,
            clock: Clock::now(),
            lost: 0,
            missed_before: missed(workers),
        });
        let _ = reply.send(Reply::stream(stream, "application/x-pcapng"));
    }

    /// Drains the rings into the stream; ends the capture when it has enough, its time
    /// is up, or its reader left.
    pub fn poll(&mut self, now: Instant, controller: &mut Controller, workers: &[Worker]) {
        let Some(mut running) = self.running.take() else {
            // Copies still in flight after a capture go back to the pool.
            self.drain(|_| {});
            return;
        };
        let mut chunk = Vec::new();
        let mut in_chunk = 0u64;
        self.drain(|frame| {
            let Some((stamp, frame)) = Stamp::read(frame) else {
                return;
            };
            if running.count != 0 && running.got >= running.count {
                return;
            }
            let Some(interface) = running
                .interfaces
                .iter()
                .position(|(id, _)| *id == stamp.port)
            else {
                return;
            };
            let ns = running.clock.ns(stamp.tsc);
            pcapng::push_packet(&mut chunk, interface as u32, ns, stamp.direction, frame);
            running.delivered[interface] += 1;
            running.got += 1;
            in_chunk += 1;
            if chunk.len() >= CHUNK_BYTES {
                running.send(std::mem::take(&mut chunk), in_chunk);
                in_chunk = 0;
            }
        });
        if !chunk.is_empty() {
            running.send(chunk, in_chunk);
        }
        let enough = running.count != 0 && running.got >= running.count;
        let gone = running.chunks.is_closed();
        if !(enough || gone || now >= running.deadline) {
            self.running = Some(running);
            return;
        }
        controller.set_capture(None);
        controller.publish_if_changed();
        let missed = missed(workers).saturating_sub(running.missed_before);
        let lost = running.lost + missed;
        tracing::info!(
            packets = running.got,
            lost,
            reader_gone = gone,
            "capture done"
        );
        let mut tail = Vec::new();
        let ns = wall_ns();
        for (i, delivered) in running.delivered.iter().enumerate() {
            // Lost copies are not told by port: all are counted on the first.
            let lost = if i == 0 { lost } else { 0 };
            pcapng::push_statistics(&mut tail, i as u32, ns, *delivered, lost);
        }
        // The last slot was kept for this.
        let _ = running.chunks.try_send(Bytes::from(tail));
    }

    /// Hands every copy waiting in the rings to `each`, then frees it.
    fn drain(&mut self, mut each: impl FnMut(&[u8])) {
        let mut batch = MbufBatch::new();
        for ring in &mut self.rings {
            while ring.dequeue_burst(&mut batch) > 0 {
                for mbuf in batch.as_slice() {
                    each(mbuf.data());
                }
                batch.free_all();
            }
        }
    }
}

impl Running {
    /// Queues a chunk of `packets` frames for the reader, or counts them lost when it
    /// is that far behind (one slot stays free for the statistics at the end).
    fn send(&mut self, chunk: Vec<u8>, packets: u64) {
        if self.chunks.capacity() > 1 && self.chunks.try_send(Bytes::from(chunk)).is_ok() {
            return;
        }
        self.lost += packets;
    }
}

/// Copies the workers could not make, so far.
fn missed(workers: &[Worker]) -> u64 {
    workers
        .iter()
        .map(|w| w.counters().snapshot().capture_missed)
        .sum()
}
