//! tenetd's life: start the EAL, attach and wire ports, run workers, report, and on
//! SIGINT/SIGTERM stop everything in the reverse order, leaving no socket or hugepage
//! file behind.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use dataplane::counters::{CoreStats, DropReason};
use dataplane::dpdk::{self, DeviceNamer, Eal, Mempool, PortStats};
use dataplane::worker::{Backoff, Worker};

use std::sync::Arc;

use dataplane::pipeline::events::{EventQueue, EVENT_QUEUE_LEN};
use dataplane::pipeline::{SwitchPipeline, WorkerSlot};
use dataplane::table::publish::TablePublisher;

use crate::api;
use crate::capture::Capture;
use crate::compile::PortInfo;
use crate::config::Validated;
use crate::controller::Controller;
use crate::live::Live;
use crate::wiring::{self, Dataplane, NamedPort};

/// How often the control plane folds slow-path events into a new snapshot.
const CONTROL_PERIOD: Duration = Duration::from_millis(10);

/// How often ports are checked: a vanished interface goes down, a down port whose
/// next try is due is tried.
const PORT_PERIOD: Duration = Duration::from_secs(1);

/// How often the gateways' egress is measured for a cluster's placement.
const EGRESS_PERIOD: Duration = Duration::from_secs(1);
/// Time constant of the measured egress: a burst moves it little, traffic that lasts
/// seconds moves it most of the way.
const EGRESS_SMOOTHING: Duration = Duration::from_secs(4);

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Print per-port rates this often.
    pub stats_interval: Option<Duration>,
}

/// What a run did, reported when it stops.
#[derive(Debug, Clone)]
pub struct Summary {
    /// All cores' counters summed.
    pub total: CoreStats,
    /// Time the workers ran.
    pub elapsed: Duration,
    /// TSC frequency, for cycles per packet.
    pub tsc_hz: u64,
}

impl Summary {
    /// The line benchmark harnesses read: `RESULT pkts=N seconds=S cycles_per_pkt=C`.
    pub fn result_line(&self) -> String {
        format!(
            "RESULT pkts={} seconds={:.3} cycles_per_pkt={:.1}",
            self.total.tx_packets,
            self.elapsed.as_secs_f64(),
            self.total.cycles_per_packet()
        )
    }
}

/// Runs the switch until SIGINT or SIGTERM; `live` is the model as stored (the API
/// edits it), `config` the same model validated over the start-up file.
pub fn run(
    config: Validated,
    live: Live,
    done: StoreDone,
    options: RunOptions,
) -> anyhow::Result<Summary> {
    let eal = Eal::init(config.eal.clone()).context("starting DPDK")?;
    let result = run_with_eal(&config, live, done, &options);
    drop(eal);
    result
}

/// Where the live model's blocking store calls report (see [`Live::new`]).
pub type StoreDone = tokio::sync::mpsc::UnboundedReceiver<crate::live::Done>;

fn run_with_eal(
    config: &Validated,
    mut live: Live,
    mut done: StoreDone,
    options: &RunOptions,
) -> anyhow::Result<Summary> {
    let mut pool = Mempool::new("pkt", config.mbufs, -1).context("creating the packet pool")?;
    if config.jumbo_mbufs > 0 {
        // Without them the switch still runs: containers' large segments and jumbo
        // frames are dropped (counted as RX errors), everything else goes as before.
        match Mempool::large("jumbo", config.jumbo_mbufs, -1) {
            Ok(large) => pool = pool.with_large(large),
            Err(e) => tracing::warn!(
                error = %e,
                jumbo_mbufs = config.jumbo_mbufs,
                "no large buffers (raise dataplane.memory_mb or lower dataplane.jumbo_mbufs): large TCP segments and jumbo frames are dropped"
            ),
        }
    }
    let mut namer = DeviceNamer::default();
    let (mut ports, mut down) = wiring::attach_ports(&config.ports, &mut namer);
    let mut wiring = wiring::wire(config, &pool, &mut ports, &mut down)?;
    let wiring_captures = std::mem::take(&mut wiring.captures);
    let port_info: Vec<Option<PortInfo>> = config
        .ports
        .iter()
        .map(|plan| {
            let named = ports.iter().find(|p| p.name == plan.name)?;
            Some(PortInfo::of(&named.port))
        })
        .collect();
    for (name, d) in &down {
        tracing::warn!(port = %name, error = %d.reason, "starting without this port; it is tried again until its device is back");
    }
    let queues: Vec<Arc<EventQueue>> = wiring
        .plans
        .iter()
        .map(|_| Arc::new(EventQueue::new(EVENT_QUEUE_LEN)))
        .collect();
    let config = Arc::new(config.clone());
    // The controller publishes the first real tables before any worker starts.
    let publisher = TablePublisher::new(Default::default());
    let nat_sessions = config.gateway.sessions_per_worker as usize;
    let max_sleep = config.max_idle_sleep;
    let spread_tunnels = config.spread_tunnels;
    let cache_entries = config.flow_cache;
    let mut controller = Controller::new(
        config,
        port_info,
        publisher.clone(),
        queues.clone(),
        Some(wiring.uplink_injector),
        Some(wiring.router_injector),
    );
    let started = Instant::now();
    let mut workers = Vec::with_capacity(wiring.plans.len());
    let tsc_hz = dpdk::tsc_hz();
    let count = wiring.plans.len() as u16;
    for (index, (plan, queue)) in wiring.plans.into_iter().zip(queues).enumerate() {
        let core = plan.core;
        let slot = WorkerSlot {
            index: index as u16,
            count,
            nat_sessions,
            spread_tunnels,
            cache_entries,
        };
        let pipeline = SwitchPipeline::new(publisher.reader(), queue, tsc_hz, slot);
        workers.push(
            Worker::spawn(
                plan,
                pipeline,
                Backoff {
                    max_sleep,
                    ..Backoff::default()
                },
            )
            .with_context(|| format!("starting the worker on CPU {core}"))?,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    // Before anything says the switch is up: a SIGINT sent on "tenetd forwarding" must
    // stop it cleanly, not kill it by the default action.
    let stop_signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _runtime = runtime.enter();
        let interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        (interrupt, terminate)
    };
    tracing::info!(
        ports = ports.len(),
        workers = workers.len(),
        flow_cache = cache_entries,
        "tenetd forwarding; stop with Ctrl-C"
    );
    let mut dataplane = Dataplane {
        ports,
        workers,
        pool: &pool,
        namer,
        down,
        detaching: Default::default(),
    };
    let api_socket = controller.config().api_socket.clone();
    let mut capture = Capture::new(wiring_captures);
    runtime.block_on(wait_for_stop(
        &mut dataplane,
        &mut capture,
        options.stats_interval,
        &mut controller,
        (&mut live, &mut done),
        &api_socket,
        stop_signals,
    ))?;
    // A store call still under way (etcd slow to answer) may finish or not; the
    // change it carries was not answered as applied either way.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let Dataplane { ports, workers, .. } = dataplane;
    let capture_rings = capture;
    let _ = std::fs::remove_file(&api_socket);
    let elapsed = started.elapsed();
    let mut core_stats = Vec::with_capacity(workers.len());
    for worker in workers {
        let counters = std::sync::Arc::clone(worker.counters());
        worker.stop();
        core_stats.push(counters.snapshot());
    }
    // Captured copies still in flight go back to the pool while it exists.
    drop(capture_rings);
    let total = CoreStats::sum(&core_stats);
    print!("{}", final_report(&ports, &core_stats));
    drop(ports);
    drop(pool);
    Ok(Summary {
        total,
        elapsed,
        tsc_hz: dpdk::tsc_hz(),
    })
}

async fn wait_for_stop(
    dataplane: &mut Dataplane<'_>,
    capture: &mut Capture,
    interval: Option<Duration>,
    controller: &mut Controller,
    (live, done): (&mut Live, &mut StoreDone),
    api_socket: &std::path::Path,
    stop_signals: (tokio::signal::unix::Signal, tokio::signal::unix::Signal),
) -> anyhow::Result<()> {
    let (mut interrupt, mut terminate) = stop_signals;
    let listener = api::bind(api_socket)?;
    let (calls_tx, mut calls) = tokio::sync::mpsc::channel::<api::Call>(64);
    let api = api::Server::new(calls_tx.clone());
    let tcp = match controller.config().api_tcp.clone() {
        Some(tcp) => {
            let tls = api::tls_acceptor(&tcp.cert, &tcp.key, &tcp.client_ca)?;
            let listener = tokio::net::TcpListener::bind(tcp.listen)
                .await
                .with_context(|| format!("binding the API to {}", tcp.listen))?;
            tracing::info!(addr = %tcp.listen, "API listening on TCP too (TLS, client certificates)");
            Some(tokio::spawn(api.clone().serve_tls(listener, tls)))
        }
        None => None,
    };
    // A scraper's port taken by something else costs the metrics, not the switch.
    let metrics = match controller.config().metrics_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "metrics listening (GET /metrics only)");
                // Its own connection budget: scrapers, who need no credentials, cannot
                // take the API's connections away from root.
                let scrapers = api::Server::new(calls_tx.clone());
                Some(tokio::spawn(scrapers.serve_metrics(listener)))
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "metrics listener not started: control.metrics_listen");
                None
            }
        },
        None => None,
    };
    let server = tokio::spawn(api.serve(listener));
    tracing::info!(socket = %api_socket.display(), "API listening");
    let systemd = crate::notify::Notifier::from_env();
    if let Some(systemd) = &systemd {
        systemd.send("READY=1\nSTATUS=forwarding");
    }
    let mut watchdog = tokio::time::interval(
        systemd
            .as_ref()
            .and_then(crate::notify::Notifier::watchdog_period)
            .unwrap_or(Duration::from_secs(3600)),
    );
    let mut ticker = tokio::time::interval(interval.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    let mut previous = Snapshot::take(&dataplane.ports, &dataplane.workers);
    let mut packet_trace = crate::packet_trace::PacketTrace::default();
    let mut control_tick = tokio::time::interval(CONTROL_PERIOD);
    control_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut port_tick = tokio::time::interval(PORT_PERIOD);
    port_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cluster = live.watch();
    let mut egress = EgressMeter::new(&dataplane.workers);
    let mut egress_tick = tokio::time::interval(EGRESS_PERIOD);
    egress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    if cluster.is_some() {
        // Whatever changed while this host started (placements to make included).
        live.refresh();
    }
    loop {
        tokio::select! {
            Some(()) = async { match cluster.as_mut() {
                Some(changes) => changes.recv().await,
                None => std::future::pending().await,
            } } => {
                live.refresh();
            }
            Some(finished) = done.recv() => live.finish(finished, controller, dataplane),
            _ = egress_tick.tick(), if cluster.is_some() => {
                live.report_egress(egress.sample(&dataplane.workers));
                live.retry_placements();
            }
            _ = control_tick.tick() => {
                dataplane.tend_bonds();
                controller.step(Instant::now(), dataplane.pool);
                capture.poll(Instant::now(), controller, &dataplane.workers);
                packet_trace.poll(Instant::now(), controller, &dataplane.ports, &dataplane.workers);
            }
            _ = port_tick.tick() => tend_ports(dataplane, controller),
            Some((command, reply)) = calls.recv() => {
                if let api::Command::Capture(request) = command {
                    capture.start(request, reply, controller, &dataplane.ports, &dataplane.workers);
                    continue;
                }
                if let api::Command::LiveTrace { port, count, seconds } = command {
                    packet_trace.start((port, count, seconds), reply, &dataplane.ports, &dataplane.workers);
                    continue;
                }
                if let api::Command::Change(change) = command {
                    live.submit(change, reply, controller, dataplane);
                    continue;
                }
                let answer = live.answer(command, controller, dataplane);
                // A change takes effect now, not at the next tick.
                controller.publish_if_changed();
                let _ = reply.send(answer);
            }
            _ = watchdog.tick(), if systemd.as_ref().is_some_and(|s| s.watchdog_period().is_some()) => {
                if let Some(systemd) = &systemd {
                    systemd.send("WATCHDOG=1");
                }
            }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = ticker.tick(), if interval.is_some() => {
                let now = Snapshot::take(&dataplane.ports, &dataplane.workers);
                // A port attached or detached since the last tick has no rate yet.
                if now.ports.len() == previous.ports.len() {
                    print!("{}", rates(&dataplane.ports, &previous, &now));
                }
                previous = now;
            }
        }
    }
    if let Some(systemd) = &systemd {
        systemd.send("STOPPING=1");
    }
    server.abort();
    for listener in [tcp, metrics].into_iter().flatten() {
        listener.abort();
    }
    Ok(())
}

/// Takes down the ports whose kernel interface vanished (tables without them go out
/// first), lets go of ports the config dropped whose detach failed, and brings back the
/// down ones whose device is there again.
fn tend_ports(dataplane: &mut Dataplane<'_>, controller: &mut Controller) {
    let config = Arc::clone(controller.config());
    let gone = dataplane.vanished();
    if !gone.is_empty() {
        for name in &gone {
            dataplane.down.insert(
                name.clone(),
                wiring::Down::new("its interface vanished".to_owned()),
            );
        }
        let ports = dataplane.port_info(&config.ports);
        controller.reconfigure(Arc::clone(&config), ports);
        controller.publish_if_changed();
        dataplane.take_down(&gone, "its interface vanished");
        // What the workers queued about those ports until they let go is refused now.
        controller.absorb(Instant::now());
    }
    // A port whose detach failed (a worker did not answer) is still attached, without
    // a role: let go of it now.
    let stuck: Vec<String> = dataplane.detaching.iter().cloned().collect();
    for name in stuck {
        match dataplane.hot_detach(&name) {
            Ok(()) => controller.absorb(Instant::now()),
            Err(e) => tracing::warn!(port = %name, error = %format!("{e:#}"), "still detaching"),
        }
    }
    if !dataplane.retry_down(&config, Instant::now()).is_empty() {
        let ports = dataplane.port_info(&config.ports);
        controller.reconfigure(config, ports);
        controller.publish_if_changed();
    }
}

/// The bits a second tenants' gateways send out of the uplink, smoothed.
struct EgressMeter {
    at: Instant,
    bytes: u64,
    bps: f64,
}

impl EgressMeter {
    fn new(workers: &[Worker]) -> Self {
        Self {
            at: Instant::now(),
            bytes: Self::total(workers),
            bps: 0.0,
        }
    }

    fn total(workers: &[Worker]) -> u64 {
        workers
            .iter()
            .map(|w| w.counters().snapshot().gateway_egress_bytes)
            .sum()
    }

    fn sample(&mut self, workers: &[Worker]) -> f64 {
        let (now, bytes) = (Instant::now(), Self::total(workers));
        let elapsed = now.duration_since(self.at).as_secs_f64();
        if elapsed > 0.0 {
            let rate = bytes.saturating_sub(self.bytes) as f64 * 8.0 / elapsed;
            let weight = 1.0 - (-elapsed / EGRESS_SMOOTHING.as_secs_f64()).exp();
            self.bps += (rate - self.bps) * weight;
        }
        (self.at, self.bytes) = (now, bytes);
        self.bps
    }
}

struct Snapshot {
    at: Instant,
    ports: Vec<PortStats>,
    cores: Vec<(usize, CoreStats)>,
}

impl Snapshot {
    fn take(ports: &[NamedPort], workers: &[Worker]) -> Self {
        Self {
            at: Instant::now(),
            ports: ports.iter().map(|p| p.port.stats()).collect(),
            cores: workers
                .iter()
                .map(|w| (w.core(), w.counters().snapshot()))
                .collect(),
        }
    }
}

fn rates(ports: &[NamedPort], before: &Snapshot, now: &Snapshot) -> String {
    let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "port", "rx pkt/s", "tx pkt/s", "rx Mbit/s", "tx Mbit/s", "rx missed"
    );
    for ((named, a), b) in ports.iter().zip(&before.ports).zip(&now.ports) {
        let _ = writeln!(
            out,
            "{:<12} {:>12.0} {:>12.0} {:>10.1} {:>10.1} {:>10}",
            named.name,
            rate(a.rx_packets, b.rx_packets),
            rate(a.tx_packets, b.tx_packets),
            rate(a.rx_bytes, b.rx_bytes) * 8.0 / 1e6,
            rate(a.tx_bytes, b.tx_bytes) * 8.0 / 1e6,
            b.rx_missed,
        );
    }
    for ((core, a), (_, b)) in before.cores.iter().zip(&now.cores) {
        let busy = b.busy_cycles.saturating_sub(a.busy_cycles);
        let packets = b.rx_packets.saturating_sub(a.rx_packets);
        let cpp = if packets == 0 {
            0.0
        } else {
            busy as f64 / packets as f64
        };
        let _ = writeln!(
            out,
            "core {core:<7} {:>12.0} {:>12.0} drops {:>8} cycles/pkt {cpp:.1}",
            rate(a.rx_packets, b.rx_packets),
            rate(a.tx_packets, b.tx_packets),
            b.dropped_total().saturating_sub(a.dropped_total()),
        );
    }
    out
}

fn final_report(ports: &[NamedPort], cores: &[CoreStats]) -> String {
    let mut out = String::new();
    for named in ports {
        let s = named.port.stats();
        let _ = writeln!(
            out,
            "port {:<12} rx {:>12} tx {:>12} missed {:>8} rx-errors {:>6} tx-errors {:>6}",
            named.name, s.rx_packets, s.tx_packets, s.rx_missed, s.rx_errors, s.tx_errors
        );
    }
    let total = CoreStats::sum(cores);
    for reason in DropReason::ALL {
        let n = total.dropped(*reason);
        if n > 0 {
            let _ = writeln!(
                out,
                "drop {:<14} {n:>12}  ({})",
                reason.name(),
                reason.help()
            );
        }
    }
    out
}
