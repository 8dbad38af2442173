//! `tenet-bench gen`: a DPDK traffic generator and reflector in one poll loop, like
//! testpmd's forwarding modes, on any port DPDK can attach (virtio-user toward a
//! vhost-user switch, AF_XDP or af_packet on a veth, pcap, ring, a VF).
//!
//! - `stream`: templates out of the TX ports, probes counted back on the RX ports
//!   (throughput, loss, reordering, latency);
//! - `txonly` / `rxonly`: one half of that;
//! - `io`: every frame received on port p leaves on port p^1 unchanged (with
//!   `tx_first`, a closed loop as in the PVP guides);
//! - `macswap`: every frame goes back out of its port with the MACs swapped.
//!
//! The loop runs on the EAL main thread, pinned to one core, in bursts of 32; nothing
//! in it allocates. A frame the device did not take is retried on the next pass, so a
//! sequence number is never spent on a frame that was not sent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dataplane::dpdk::{
    self, Eal, EalOptions, MbufBatch, Mempool, Port, PortConfig, RxQueue, TxQueue,
};
use serde::{Deserialize, Serialize};

use crate::probe::{self, Probe};
use crate::stats::{Histogram, LatencySummary, Sequence};
use crate::template::Template;

/// How the generator treats its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Send templates on the TX ports, count probes on the RX ports.
    Stream,
    /// Only send.
    Txonly,
    /// Only receive and count.
    Rxonly,
    /// Forward port p to port p^1 unchanged.
    Io,
    /// Send every frame back out of its port, MACs swapped.
    Macswap,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Device arguments of each port, in port order.
    pub ports: Vec<String>,
    /// Mode.
    pub mode: Mode,
    /// Ports (indexes into `ports`) that send in `stream`/`txonly` mode.
    pub tx: Vec<usize>,
    /// Ports that receive in `stream`/`rxonly` mode.
    pub rx: Vec<usize>,
    /// Queue pairs per port (flows spread over them; each queue its own stream).
    pub queues: u16,
    /// One frame per flow, sent in turn.
    pub templates: Vec<Template>,
    /// Packets per second per TX port; `None`: as fast as the ports take them.
    pub rate: Option<f64>,
    /// Send (or run) this long after the warm-up.
    pub duration: Duration,
    /// Run this long before the measured window starts.
    pub warmup: Duration,
    /// Stop sending after this many frames per TX port.
    pub count: Option<u64>,
    /// Keep receiving this long after sending stopped (stragglers are not loss).
    pub drain: Duration,
    /// Bursts of templates each port sends first in `io` mode (a closed loop).
    pub tx_first: u32,
    /// CPU the loop runs on.
    pub core: usize,
    /// DPDK file prefix (distinct per process).
    pub file_prefix: String,
    /// Hugepage memory, MiB.
    pub memory_mb: u32,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// A line per second on stderr.
    pub progress: bool,
}

/// One port's counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PortReport {
    /// Device name.
    pub name: String,
    /// Frames sent over the whole run.
    pub sent: u64,
    /// Frames received over the whole run.
    pub received: u64,
    /// Frames sent in the measured window.
    pub window_sent: u64,
    /// Frames received in the measured window.
    pub window_received: u64,
    /// Bytes received in the measured window (without FCS).
    pub window_received_bytes: u64,
    /// What the device says it dropped on receive (ring full).
    pub rx_missed: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Mode run.
    pub mode: Mode,
    /// Length of the measured window, seconds.
    pub window_s: f64,
    /// Frames per second sent in the window (all TX ports).
    pub tx_pps: f64,
    /// Frames per second received in the window (all RX ports).
    pub rx_pps: f64,
    /// Received bit rate in the window on the wire (frame + FCS + preamble + gap).
    pub rx_gbps: f64,
    /// Frames sent over the run.
    pub sent: u64,
    /// Frames received over the run.
    pub received: u64,
    /// Frames that carried a probe when received.
    pub probes: u64,
    /// Sent minus received (stream mode, after draining); 0 otherwise.
    pub lost: u64,
    /// Holes in the probes' sequences never filled.
    pub sequence_lost: u64,
    /// Probes that arrived after a later one of their stream.
    pub reordered: u64,
    /// Latency of the probes received in the window.
    pub latency: Option<LatencySummary>,
    /// Per port.
    pub ports: Vec<PortReport>,
}

/// Full bursts one receive port may take in one pass of the loop.
const RX_BURSTS_PER_PASS: usize = 4;

struct Queue {
    rx: RxQueue,
    tx: TxQueue,
    /// Frames built (or received for forwarding) but not yet taken by the device.
    pending: MbufBatch,
    /// Queue q of Q sends flows q, q+Q, q+2Q, ...: a flow stays on one queue, so a
    /// switch that keeps a queue's order keeps the flow's.
    next_flow: usize,
    next_seq: u32,
    budget: f64,
}

struct Lane {
    port: Port,
    queues: Vec<Queue>,
    report: PortReport,
}

/// Runs the generator until its time is up or `stop` is set; the EAL lives for the
/// call.
pub fn run(options: &Options, stop: Arc<AtomicBool>) -> anyhow::Result<Report> {
    validate(options)?;
    let eal = Eal::init(EalOptions {
        main_core: options.core,
        file_prefix: options.file_prefix.clone(),
        memory_mb: options.memory_mb,
        in_memory: true,
        // virtio-user ports share the pool with their vhost-user peer.
        single_file_segments: true,
        pci_allow: options
            .ports
            .iter()
            .filter(|p| !p.starts_with("net_"))
            .map(|p| p.split(',').next().unwrap_or(p).to_owned())
            .collect(),
        log_level: "notice".to_owned(),
    })
    .context("starting DPDK")?;
    let pool = Mempool::new("gen", options.mbufs, -1).context("packet pool")?;
    // Frames longer than a standard MTU (tunnelled full-size frames) need a larger one.
    let longest = options
        .templates
        .iter()
        .map(|t| t.bytes.len())
        .max()
        .unwrap_or(0);
    let config = PortConfig {
        queues: options.queues,
        mtu: (longest > 1514).then_some(9000),
        ..PortConfig::default()
    };
    let mut lanes = Vec::with_capacity(options.ports.len());
    for devargs in &options.ports {
        let mut port = Port::attach(devargs).with_context(|| format!("attaching {devargs}"))?;
        let (rx, tx) = port
            .configure(&config, &pool)
            .with_context(|| format!("configuring {devargs}"))?;
        port.start()
            .with_context(|| format!("starting {devargs}"))?;
        let name = port.name().to_owned();
        let queues = rx
            .into_iter()
            .zip(tx)
            .enumerate()
            .map(|(q, (rx, tx))| Queue {
                rx,
                tx,
                pending: MbufBatch::new(),
                next_flow: q,
                next_seq: 0,
                budget: 0.0,
            })
            .collect();
        lanes.push(Lane {
            port,
            queues,
            report: PortReport {
                name,
                ..PortReport::default()
            },
        });
    }
    wait_for_links(&lanes, &stop);
    let report = poll(options, &mut lanes, &pool, &stop);
    for lane in &mut lanes {
        for queue in &mut lane.queues {
            queue.pending.free_all();
        }
        lane.report.rx_missed = lane.port.stats().rx_missed;
        let _ = lane.port.stop();
    }
    let report = report?;
    drop(lanes);
    drop(pool);
    drop(eal);
    Ok(report)
}

fn validate(options: &Options) -> anyhow::Result<()> {
    let n = options.ports.len();
    if n == 0 {
        bail!("ports: at least one --port is needed");
    }
    if !(1..=16).contains(&options.queues) {
        bail!("queues: must be between 1 and 16");
    }
    if n * usize::from(options.queues) > probe::STREAMS {
        bail!(
            "ports: {n} ports of {} queues are more streams than a probe names ({})",
            options.queues,
            probe::STREAMS
        );
    }
    if let Some(&p) = options.tx.iter().chain(&options.rx).find(|&&p| p >= n) {
        bail!("tx/rx: port {p} does not exist (there are {n})");
    }
    let sends = matches!(options.mode, Mode::Stream | Mode::Txonly)
        || (options.mode == Mode::Io && options.tx_first > 0);
    if sends && options.templates.is_empty() {
        bail!("template: the mode sends, but there are no frames");
    }
    if options.mode == Mode::Io && !n.is_multiple_of(2) {
        bail!("ports: io mode forwards port pairs (0->1, 1->0, ...); give an even number");
    }
    if let Some(rate) = options.rate {
        if rate.is_nan() || rate <= 0.0 {
            bail!("rate: must be above 0 packets per second");
        }
    }
    Ok(())
}

/// Virtual links come up when their peer connects (vhost-user): wait a little, so the
/// first seconds of the window are not spent on a dead link.
fn wait_for_links(lanes: &[Lane], stop: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if lanes.iter().all(|l| l.port.link().up) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sent(report: &mut PortReport, n: usize, in_window: bool) {
    report.sent += n as u64;
    if in_window {
        report.window_sent += n as u64;
    }
}

fn poll(
    options: &Options,
    lanes: &mut [Lane],
    pool: &Mempool,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let hz = dpdk::tsc_hz().max(1);
    let ns_per_tick = 1e9 / hz as f64;
    let ticks = |d: Duration| (d.as_secs_f64() * hz as f64) as u64;
    let queues = usize::from(options.queues);
    let start = dpdk::tsc();
    let window_start = start + ticks(options.warmup);
    let window_end = window_start + ticks(options.duration);
    let mut drain_end = u64::MAX;
    let mut in_window = false;
    let mut window_closed = false;
    let mut window_ticks = 0u64;
    let mut last_progress = start;
    let mut progress_counts = (0u64, 0u64);
    let mut sequences = vec![Sequence::default(); lanes.len() * queues];
    let mut latency = Histogram::default();
    let mut probes = 0u64;
    let mut batch = MbufBatch::new();
    let sending = matches!(options.mode, Mode::Stream | Mode::Txonly);
    let receiving = options.mode != Mode::Txonly;
    let tx_ports: Vec<usize> = if sending {
        options.tx.clone()
    } else {
        Vec::new()
    };
    let rx_ports: Vec<usize> = match options.mode {
        Mode::Stream | Mode::Rxonly => options.rx.clone(),
        Mode::Io | Mode::Macswap => (0..lanes.len()).collect(),
        Mode::Txonly => Vec::new(),
    };
    // Each queue's share of a port's rate.
    let queue_rate = options.rate.map(|r| r / queues as f64);
    if options.mode == Mode::Io {
        for (p, lane) in lanes.iter_mut().enumerate() {
            for (q, queue) in lane.queues.iter_mut().enumerate() {
                for _ in 0..options.tx_first {
                    fill(options, queue, p * queues + q, pool, dpdk::tsc(), 32);
                    let n = queue.tx.tx_burst(&mut queue.pending);
                    sent(&mut lane.report, n, false);
                }
            }
        }
    }
    let mut last_tsc = start;
    loop {
        let now = dpdk::tsc();
        let elapsed = now.wrapping_sub(last_tsc);
        last_tsc = now;
        if !in_window && !window_closed && now >= window_start {
            in_window = true;
            for lane in lanes.iter_mut() {
                lane.report.window_sent = 0;
                lane.report.window_received = 0;
                lane.report.window_received_bytes = 0;
            }
            latency = Histogram::default();
        }
        if in_window && now >= window_end {
            in_window = false;
            window_closed = true;
            window_ticks = now - window_start;
            drain_end = now + ticks(options.drain);
        }
        let all_sent = options
            .count
            .is_some_and(|c| tx_ports.iter().all(|&p| lanes[p].report.sent >= c));
        if stop.load(Ordering::Relaxed) || (all_sent && drain_end == u64::MAX) {
            if !window_closed {
                window_closed = true;
                window_ticks = now.saturating_sub(window_start.min(now));
            }
            drain_end = drain_end.min(now + ticks(options.drain));
        }
        if now >= drain_end {
            break;
        }
        if sending && drain_end == u64::MAX {
            for &p in &tx_ports {
                let lane = &mut lanes[p];
                // Frames still to build under --count: not yet sent, not yet pending.
                let pending: usize = lane.queues.iter().map(|q| q.pending.len()).sum();
                let mut left = options.count.map_or(usize::MAX, |c| {
                    (c.saturating_sub(lane.report.sent) as usize).saturating_sub(pending)
                });
                for (q, queue) in lane.queues.iter_mut().enumerate() {
                    let want = match queue_rate {
                        Some(rate) => {
                            queue.budget =
                                (queue.budget + rate * elapsed as f64 / hz as f64).min(64.0);
                            queue.budget as usize
                        }
                        None => 32,
                    };
                    let new = want.saturating_sub(queue.pending.len()).min(left);
                    if new > 0 {
                        let target = queue.pending.len() + new;
                        left -= fill(options, queue, p * queues + q, pool, now, target);
                    }
                    let n = queue.tx.tx_burst(&mut queue.pending);
                    if queue_rate.is_some() {
                        queue.budget -= n as f64;
                    }
                    sent(&mut lane.report, n, in_window);
                }
            }
        }
        if receiving {
            for &p in &rx_ports {
                for q in 0..queues {
                    match options.mode {
                        Mode::Stream | Mode::Rxonly => {
                            // Receiving must keep up with a switch as fast as the
                            // sending side: a few bursts per pass while they come full.
                            for _ in 0..RX_BURSTS_PER_PASS {
                                let lane = &mut lanes[p];
                                let n = lane.queues[q].rx.rx_burst(&mut batch);
                                if n == 0 {
                                    break;
                                }
                                count_received(&mut lane.report, batch.as_slice(), in_window);
                                let now = dpdk::tsc();
                                for m in batch.as_slice() {
                                    let Some((stream, probe)) = probe::read(m.data()) else {
                                        continue;
                                    };
                                    probes += 1;
                                    if let Some(s) = sequences.get_mut(stream) {
                                        s.see(probe.seq);
                                    }
                                    if in_window && options.mode == Mode::Stream {
                                        let ns = now.saturating_sub(probe.tsc) as f64 * ns_per_tick;
                                        latency.record(ns as u64);
                                    }
                                }
                                batch.free_all();
                                if n < 32 {
                                    break;
                                }
                            }
                        }
                        Mode::Io | Mode::Macswap => {
                            // Received straight into the output queue's pending batch,
                            // only as many as it has room for: a loop loses nothing
                            // here, what the peer refused waits for the next pass.
                            let out = if options.mode == Mode::Io { p ^ 1 } else { p };
                            let (rx, received, pending) = split(lanes, p, out, q);
                            let before = pending.len();
                            if rx.rx_burst(pending) > 0 {
                                count_received(received, &pending.as_slice()[before..], in_window);
                                if options.mode == Mode::Macswap {
                                    for m in &mut pending.as_mut_slice()[before..] {
                                        swap_macs(m.data_mut());
                                    }
                                }
                            }
                            let lane = &mut lanes[out];
                            let queue = &mut lane.queues[q];
                            let n = queue.tx.tx_burst(&mut queue.pending);
                            sent(&mut lane.report, n, in_window);
                        }
                        Mode::Txonly => {}
                    }
                }
            }
        }
        if options.progress && now.wrapping_sub(last_progress) >= hz {
            let sent: u64 = lanes.iter().map(|l| l.report.sent).sum();
            let received: u64 = lanes.iter().map(|l| l.report.received).sum();
            let secs = now.wrapping_sub(last_progress) as f64 / hz as f64;
            eprintln!(
                "gen: tx {:.3} Mpps  rx {:.3} Mpps{}",
                (sent - progress_counts.0) as f64 / secs / 1e6,
                (received - progress_counts.1) as f64 / secs / 1e6,
                if in_window { "" } else { "  (warm-up)" }
            );
            progress_counts = (sent, received);
            last_progress = now;
        }
    }
    let window_s = (window_ticks as f64 / hz as f64).max(f64::EPSILON);
    let sent: u64 = lanes.iter().map(|l| l.report.sent).sum();
    let received: u64 = lanes.iter().map(|l| l.report.received).sum();
    let window_sent: u64 = lanes.iter().map(|l| l.report.window_sent).sum();
    let window_received: u64 = rx_ports
        .iter()
        .map(|&p| lanes[p].report.window_received)
        .sum();
    let window_bytes: u64 = rx_ports
        .iter()
        .map(|&p| lanes[p].report.window_received_bytes)
        .sum();
    // On the wire each frame also has its FCS, preamble and inter-frame gap.
    let wire_bits = (window_bytes + window_received * (4 + 20)) * 8;
    Ok(Report {
        mode: options.mode,
        window_s,
        tx_pps: window_sent as f64 / window_s,
        rx_pps: window_received as f64 / window_s,
        rx_gbps: wire_bits as f64 / window_s / 1e9,
        sent,
        received,
        probes,
        lost: if options.mode == Mode::Stream {
            sent.saturating_sub(received)
        } else {
            0
        },
        sequence_lost: sequences.iter().map(Sequence::lost).sum(),
        reordered: sequences.iter().map(Sequence::reordered).sum(),
        latency: latency.summary(),
        ports: lanes.iter().map(|l| l.report.clone()).collect(),
    })
}

/// Tops the queue's pending batch up to `want` frames (at most a burst) from its
/// flows, each with a probe of `stream` when it has the room. Returns how many it
/// added.
#[inline]
fn fill(
    options: &Options,
    queue: &mut Queue,
    stream: usize,
    pool: &Mempool,
    now: u64,
    want: usize,
) -> usize {
    let want = want.min(32);
    let step = usize::from(options.queues);
    let before = queue.pending.len();
    while queue.pending.len() < want {
        let Some(mut mbuf) = pool.alloc() else {
            break;
        };
        let template = &options.templates[queue.next_flow % options.templates.len()];
        queue.next_flow = (queue.next_flow + step) % (options.templates.len() * step).max(1);
        if !mbuf.set_data(&template.bytes) {
            continue;
        }
        if template.probe {
            probe::write(
                mbuf.data_mut(),
                template.l4_checksum,
                stream,
                Probe {
                    seq: queue.next_seq,
                    tsc: now,
                },
            );
            queue.next_seq = queue.next_seq.wrapping_add(1);
        }
        if queue.pending.push(mbuf).is_err() {
            break;
        }
    }
    queue.pending.len() - before
}

fn count_received(report: &mut PortReport, frames: &[dataplane::dpdk::Mbuf], in_window: bool) {
    report.received += frames.len() as u64;
    if in_window {
        report.window_received += frames.len() as u64;
        report.window_received_bytes += frames.iter().map(|m| m.len() as u64).sum::<u64>();
    }
}

fn swap_macs(frame: &mut [u8]) {
    if frame.len() >= 12 {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&frame[6..12]);
        macs[6..].copy_from_slice(&frame[..6]);
        frame[..12].copy_from_slice(&macs);
    }
}

/// Queue `q` of lane `from`: its RX queue and the lane's counts; and queue `q`'s
/// pending batch of lane `to` (the same lane or another).
fn split(
    lanes: &mut [Lane],
    from: usize,
    to: usize,
    q: usize,
) -> (&mut RxQueue, &mut PortReport, &mut MbufBatch) {
    if from == to {
        let lane = &mut lanes[from];
        let queue = &mut lane.queues[q];
        return (&mut queue.rx, &mut lane.report, &mut queue.pending);
    }
    let (a, b) = if from < to {
        let (head, tail) = lanes.split_at_mut(to);
        (&mut head[from], &mut tail[0])
    } else {
        let (head, tail) = lanes.split_at_mut(from);
        (&mut tail[0], &mut head[to])
    };
    (&mut a.queues[q].rx, &mut a.report, &mut b.queues[q].pending)
}
