//! The per-core poll loop: RX bursts through the pipeline into per-port TX buffers,
//! flushed once per burst; packets for TX queues other cores own go through rings.
//!
//! A worker is pinned to its core and registered with the EAL (so the mempool's
//! per-core cache serves it). When idle it backs off with growing sleeps, and returns to
//! busy polling at the first packet, so a 2-core machine can run two switches and a
//! traffic source at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::counters::{CoreCounters, DropReason};
use crate::dpdk::{self, MbufBatch, RingConsumer, RingProducer, RxQueue, TxQueue};
use crate::pipeline::{Outputs, Pipeline};

/// What one worker owns.
#[derive(Default)]
pub struct WorkerPlan {
    /// CPU to pin to.
    pub core: usize,
    /// RX queues it polls.
    pub rx: Vec<RxQueue>,
    /// TX queues it transmits on.
    pub tx: Vec<TxQueue>,
    /// Rings from other workers carrying packets for `port` (whose TX queue is ours).
    pub inbound: Vec<(u16, RingConsumer)>,
    /// Rings to the workers that own `port`'s TX queue.
    pub outbound: Vec<(u16, RingProducer)>,
    /// Where copies of captured packets go (to the control plane).
    pub capture: Option<RingProducer>,
    /// Rings whose packets run through the pipeline as if received on `port` (frames
    /// the control plane sends as a tenant's router come in on
    /// [`crate::pipeline::stage::CONTROL_PORT`]).
    pub reprocess: Vec<(u16, RingConsumer)>,
    /// Rings to the other workers (`(worker index, producer)`) for frames whose state
    /// they hold; each arrives there on a `reprocess` ring.
    pub handoff: Vec<(u16, RingProducer)>,
}

/// Idle backoff: spin a while, then sleep, doubling up to a ceiling. A round of polls
/// that brings fewer than [`LIGHT_ROUND`] packets counts as idle too: a trickle
/// (a few thousand packets a second) would otherwise keep the core spinning at every
/// packet's heels. While packets still trickle in, naps stay at `trickle_sleep` or
/// shorter, so a packet waits at most that long; only silence lets them grow to
/// `max_sleep`. A round that brings more returns to busy polling.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Light polls before the first sleep.
    pub spin_polls: u32,
    /// First sleep.
    pub min_sleep: Duration,
    /// Longest sleep (the worst added latency for the first packet after a lull);
    /// zero: never sleep (busy polling, as OVS's and VPP's workers do by default).
    pub max_sleep: Duration,
    /// Longest sleep after a round that brought packets.
    pub trickle_sleep: Duration,
}

/// Packets a round of polls brings below which the worker counts it as light: a
/// quarter burst. At a steady rate the sleeps settle where a round brings about this
/// many, so the core's use follows the load instead of jumping to a full core at the
/// first packet.
pub const LIGHT_ROUND: usize = 8;

impl Default for Backoff {
    fn default() -> Self {
        Self {
            spin_polls: 1024,
            min_sleep: Duration::from_micros(10),
            max_sleep: Duration::from_micros(500),
            trickle_sleep: Duration::from_micros(50),
        }
    }
}

/// A change to what a running worker owns, sent by the control plane.
pub enum WorkerCommand {
    /// Start using a newly attached port: its queues this worker owns, and the rings
    /// that reach or come from its owner.
    Attach {
        /// RX queues to poll.
        rx: Vec<RxQueue>,
        /// TX queues to transmit on.
        tx: Vec<TxQueue>,
        /// Rings from other workers for ports whose TX queue is now ours.
        inbound: Vec<(u16, RingConsumer)>,
        /// Rings to the owner of the new port's TX queue.
        outbound: Vec<(u16, RingProducer)>,
    },
    /// Stop using `port` (its queues and rings are dropped after a last flush); the
    /// worker answers on `done` once nothing of it is in use.
    Detach {
        /// DPDK port id.
        port: u16,
        /// Acknowledgement.
        done: std::sync::mpsc::Sender<()>,
    },
    /// Trace the frames received on some ports (`None`: stop).
    Trace(Option<crate::pipeline::live_trace::LiveTrace>),
    /// Tell up to `limit` of the SNAT sessions this worker holds.
    NatSessions {
        /// The most to tell.
        limit: usize,
        /// Only this tenant's.
        tenant: Option<crate::table::TenantIdx>,
        /// Where the answer goes.
        reply: std::sync::mpsc::Sender<Vec<crate::pipeline::nat::SessionView>>,
    },
}

/// Commands a worker has not yet taken.
const COMMAND_QUEUE_LEN: usize = 64;

/// A running worker thread.
pub struct Worker {
    core: usize,
    counters: Arc<CoreCounters>,
    stop: Arc<AtomicBool>,
    commands: Arc<crossbeam::queue::ArrayQueue<WorkerCommand>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker thread that runs `pipeline` over `plan` until stopped.
    pub fn spawn<P: Pipeline + 'static>(
        plan: WorkerPlan,
        pipeline: P,
        backoff: Backoff,
    ) -> std::io::Result<Self> {
        let counters = Arc::new(CoreCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let commands = Arc::new(crossbeam::queue::ArrayQueue::new(COMMAND_QUEUE_LEN));
        let core = plan.core;
        let handle = std::thread::Builder::new()
            .name(format!("tenet-worker-{core}"))
            .spawn({
                let counters = Arc::clone(&counters);
                let stop = Arc::clone(&stop);
                let commands = Arc::clone(&commands);
                move || run(plan, pipeline, backoff, &counters, &stop, &commands)
            })?;
        Ok(Self {
            core,
            counters,
            stop,
            commands,
            handle: Some(handle),
        })
    }

    /// The CPU the worker runs on.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Its counters, readable at any time.
    pub fn counters(&self) -> &Arc<CoreCounters> {
        &self.counters
    }

    /// Hands the worker a command; it takes it at its next loop. Gives the command back
    /// when the queue is full.
    pub fn command(&self, command: WorkerCommand) -> Result<(), WorkerCommand> {
        self.commands.push(command)
    }

    /// Asks the worker to stop and waits until it has.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!(core = self.core, "worker thread panicked");
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run<P: Pipeline>(
    plan: WorkerPlan,
    mut pipeline: P,
    backoff: Backoff,
    counters: &CoreCounters,
    stop: &AtomicBool,
    commands: &crossbeam::queue::ArrayQueue<WorkerCommand>,
) {
    let WorkerPlan {
        core,
        mut rx,
        tx,
        mut inbound,
        outbound,
        capture,
        mut reprocess,
        handoff,
    } = plan;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        tracing::warn!(core, "could not pin worker; it runs unpinned");
    }
    if !backoff.max_sleep.is_zero() && !crate::kernel::precise_sleeps() {
        tracing::warn!(core, "the worker's short sleeps may end up to 50 us late");
    }
    let lcore = match dpdk::register_thread() {
        Ok(lcore) => Some(lcore),
        Err(e) => {
            tracing::warn!(core, error = %e, "worker not registered with the EAL: no mempool cache");
            None
        }
    };
    tracing::info!(
        core,
        ?lcore,
        rx_queues = rx.len(),
        tx_queues = tx.len(),
        "worker started"
    );
    let mut outputs = Outputs::new(tx, outbound);
    outputs.set_capture_ring(capture);
    outputs.set_handoff_rings(handoff);
    let mut batch = MbufBatch::new();
    let mut idle_polls = 0u32;
    // A ceiling below the first nap is the ceiling.
    let first_sleep = backoff.min_sleep.min(backoff.max_sleep);
    let mut sleep = first_sleep;
    // One TSC read per iteration: an iteration's cost runs from the previous read.
    let mut last_tsc = dpdk::tsc();
    while !stop.load(Ordering::Relaxed) {
        if let Some(command) = commands.pop() {
            match command {
                WorkerCommand::Attach {
                    rx: new_rx,
                    tx: new_tx,
                    inbound: new_inbound,
                    outbound: new_outbound,
                } => {
                    rx.extend(new_rx);
                    inbound.extend(new_inbound);
                    outputs.attach(new_tx, new_outbound);
                }
                WorkerCommand::Detach { port, done } => {
                    rx.retain(|q| q.port() != port);
                    inbound.retain(|(p, _)| *p != port);
                    outputs.detach(port, counters);
                    let _ = done.send(());
                }
                WorkerCommand::NatSessions {
                    limit,
                    tenant,
                    reply,
                } => {
                    let _ = reply.send(pipeline.nat_sessions(limit, tenant));
                }
                WorkerCommand::Trace(trace) => pipeline.set_live_trace(trace),
            }
        }
        let mut moved = 0;
        for queue in rx.iter_mut() {
            let n = queue.rx_burst(&mut batch);
            if n == 0 {
                continue;
            }
            moved += n;
            counters.add_rx(n);
            let (joined, freed) = batch.join_segments();
            if joined + freed > 0 {
                counters.add_joined_segments(joined);
                counters.add_drop(DropReason::SegmentsTooLong, freed);
            }
            pipeline.process(queue.port(), &mut batch, &mut outputs, counters);
            outputs.flush(counters);
        }
        if !inbound.is_empty() {
            moved += outputs.drain_inbound(&mut inbound, &mut batch, counters);
            outputs.flush(counters);
        }
        for (port, ring) in reprocess.iter_mut() {
            let n = ring.dequeue_burst(&mut batch);
            if n > 0 {
                moved += n;
                batch.prefetch_from_another_core();
                pipeline.process(*port, &mut batch, &mut outputs, counters);
                outputs.flush(counters);
            }
        }
        if moved == 0 {
            moved = pipeline.idle(&mut outputs, counters);
            if moved > 0 {
                outputs.flush(counters);
            }
        }
        let now = dpdk::tsc();
        let spent = now.wrapping_sub(last_tsc);
        last_tsc = now;
        if moved > 0 {
            counters.add_busy_cycles(spent);
        }
        if moved >= LIGHT_ROUND || backoff.max_sleep.is_zero() {
            idle_polls = 0;
            sleep = first_sleep;
            continue;
        }
        idle_polls = idle_polls.saturating_add(1);
        if moved > 0 {
            sleep = sleep.min(backoff.trickle_sleep);
        }
        if idle_polls > backoff.spin_polls {
            counters.add_idle_sleep();
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(backoff.max_sleep);
            last_tsc = dpdk::tsc();
        }
    }
    drop(outputs);
    drop(inbound);
    if lcore.is_some() {
        dpdk::unregister_thread();
    }
    tracing::info!(core, "worker stopped");
}
