//! The port manager: attaches the configured ports, sets their queues up, and hands each
//! RX/TX queue to exactly one worker, with rings where a worker must reach a port whose
//! TX queue another worker owns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use dataplane::counters::DROP_REASON_COUNT;
use dataplane::dpdk::{
    DeviceNamer, MbufRing, Mempool, Port, PortConfig, RingConsumer, RingProducer,
};
use dataplane::worker::{Worker, WorkerCommand, WorkerPlan};

use crate::compile::PortInfo;

use crate::config::{PortPlan, Validated};

/// Packets a handoff ring holds: several bursts, so a briefly slow owner drops nothing.
const HANDOFF_RING_SIZE: u32 = 1024;
/// Captured copies a worker may have in flight to the control plane (10 ms of it).
const CAPTURE_RING_SIZE: u32 = 4096;

/// A configured port by name.
pub struct NamedPort {
    /// The name from the config.
    pub name: String,
    /// The attached device.
    pub port: Port,
    /// The kernel interface it serves, when it serves one, and its index then: another
    /// index under the same name (or none) means the interface is gone.
    pub kernel: Option<(String, u32)>,
    /// The workers' drop counts for its device id when it was attached: a port that
    /// takes the id of one detached before starts from nothing.
    pub drops_before: [u64; DROP_REASON_COUNT],
}

/// A configured port without a device: why, and when it is tried again.
#[derive(Debug, Clone)]
pub struct Down {
    /// What failed.
    pub reason: String,
    /// The next attempt.
    pub next_try: Instant,
    /// The wait after the next failure.
    pub backoff: Duration,
}

/// First wait before a down port is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between two attempts on a down port.
const RETRY_MAX: Duration = Duration::from_secs(30);

impl Down {
    /// Down for `reason`, tried again soon.
    pub fn new(reason: String) -> Self {
        Self {
            reason,
            next_try: Instant::now() + RETRY_FIRST,
            backoff: RETRY_FIRST,
        }
    }
}

/// Attaches every port of the config, in order (bond members before their bond). A
/// port whose device cannot be attached (a container's veth gone while tenetd was
/// down) does not stop the others: it is reported and comes back down, to be tried
/// again.
pub fn attach_ports(
    plans: &[PortPlan],
    namer: &mut DeviceNamer,
) -> (Vec<NamedPort>, HashMap<String, Down>) {
    let mut ports = Vec::with_capacity(plans.len());
    let mut down = HashMap::new();
    for plan in plans {
        match attach_port(plan, namer) {
            Ok(port) => ports.push(port),
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(port = %plan.name, error = %reason, "port down; trying again");
                down.insert(plan.name.clone(), Down::new(reason));
            }
        }
    }
    (ports, down)
}

/// Attaches one port's device (and its bond members) through DPDK hotplug.
pub fn attach_port(plan: &PortPlan, namer: &mut DeviceNamer) -> anyhow::Result<NamedPort> {
    if let dataplane::dpdk::Backend::VhostUser { path, .. } = &plan.backend {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("port `{}`: creating {}", plan.name, dir.display()))?;
        }
    }
    // A kernel interface needs no DPDK device: tenet's own packet sockets serve it,
    // outside DPDK's port table (bond members still go through DPDK's driver).
    if let dataplane::dpdk::Backend::AfPacket { interface } = &plan.backend {
        let kernel = dataplane::kernel::interface_index(interface).map(|i| (interface.clone(), i));
        let port = Port::open_interface(interface)
            .with_context(|| format!("port `{}` (af-packet backend)", plan.name))?;
        tracing::info!(port = %plan.name, device = %port.name(), id = port.id(), "attached");
        return Ok(NamedPort {
            name: plan.name.clone(),
            port,
            kernel,
            drops_before: [0; DROP_REASON_COUNT],
        });
    }
    let kernel = match plan.backend.kernel_interface() {
        Some(interface) => {
            let index = dataplane::kernel::interface_index(interface).ok_or_else(|| {
                anyhow::anyhow!("port `{}`: no interface `{interface}`", plan.name)
            })?;
            Some((interface.to_owned(), index))
        }
        None => None,
    };
    let mut devargs = plan.backend.devargs(plan.queues, namer);
    let own = devargs
        .pop()
        .expect("a backend has at least its own device");
    let mut members = Vec::with_capacity(devargs.len());
    for member in &devargs {
        members.push(
            Port::attach(member)
                .with_context(|| format!("port `{}`: attaching bond member", plan.name))?,
        );
    }
    let mut port = Port::attach(&own)
        .with_context(|| format!("port `{}` ({} backend)", plan.name, plan.backend.kind()))?;
    port.adopt_members(members);
    tracing::info!(port = %plan.name, device = %port.name(), id = port.id(), "attached");
    Ok(NamedPort {
        name: plan.name.clone(),
        port,
        kernel,
        drops_before: [0; DROP_REASON_COUNT],
    })
}

/// The running dataplane the control loop changes: attached ports, workers, the packet
/// pool and the device namer (names are never reused).
pub struct Dataplane<'a> {
    /// Attached ports, found by name (a configured port whose device is down has none;
    /// a port the config dropped stays here until the workers let go of it).
    pub ports: Vec<NamedPort>,
    /// Workers.
    pub workers: Vec<Worker>,
    /// Packet pool.
    pub pool: &'a Mempool,
    /// Device names handed out so far.
    pub namer: DeviceNamer,
    /// Configured ports without a device (it could not be attached, or it vanished).
    pub down: HashMap<String, Down>,
    /// Ports whose detach failed (a worker did not answer): still attached, unused by
    /// the tables, tried again.
    pub detaching: std::collections::BTreeSet<String>,
}

impl Dataplane<'_> {
    /// What the compiler needs of each configured port, in config order: `None` for
    /// a port that is down.
    pub fn port_info(&self, plans: &[PortPlan]) -> Vec<Option<PortInfo>> {
        plans
            .iter()
            .map(|plan| self.port(&plan.name).map(PortInfo::of))
            .collect()
    }

    /// The attached port named `name` (none while it is down).
    pub fn port(&self, name: &str) -> Option<&Port> {
        if self.down.contains_key(name) {
            return None;
        }
        self.ports.iter().find(|p| p.name == name).map(|p| &p.port)
    }

    /// Moves each active-backup bond's traffic off a member whose link went down (see
    /// [`Port::keep_bond_on_a_live_member`]).
    pub fn tend_bonds(&self) {
        for named in &self.ports {
            if let Some((from, to)) = named.port.keep_bond_on_a_live_member() {
                tracing::warn!(port = %named.name, from = %from, to = %to, "bond member link down; traffic moved to another member");
            }
        }
    }

    /// Attached ports whose kernel interface is gone (a container deleted with its
    /// veth, or a new veth under the old name): they must go down.
    pub fn vanished(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| !self.down.contains_key(&p.name))
            .filter_map(|p| {
                let (interface, index) = p.kernel.as_ref()?;
                (dataplane::kernel::interface_index(interface) != Some(*index))
                    .then(|| p.name.clone())
            })
            .collect()
    }

    /// Takes ports down whose tables are out already: each worker lets go, the device
    /// is closed, and the port waits in [`Dataplane::down`] for its next try.
    pub fn take_down(&mut self, names: &[String], reason: &str) {
        for name in names {
            self.down.insert(name.clone(), Down::new(reason.to_owned()));
            if let Err(e) = self.hot_detach(name) {
                tracing::error!(port = %name, error = %format!("{e:#}"), "detaching a port gone down");
            }
            tracing::warn!(port = %name, reason, "port down; trying again");
        }
    }

    /// Tries the down ports whose next try is due; returns the ones that came up.
    pub fn retry_down(&mut self, config: &Validated, now: Instant) -> Vec<String> {
        let due: Vec<String> = self
            .down
            .iter()
            .filter(|(_, d)| d.next_try <= now)
            .map(|(name, _)| name.clone())
            .collect();
        let mut up = Vec::new();
        for name in due {
            let Some(plan) = config.ports.iter().find(|p| p.name == name) else {
                // The config dropped it meanwhile.
                self.down.remove(&name);
                continue;
            };
            // An interface that is not there yet is not worth a device probe.
            let absent = plan
                .backend
                .kernel_interface()
                .is_some_and(|i| dataplane::kernel::interface_index(i).is_none());
            // A port still attached (its detach failed) must let go first.
            let stuck = self.ports.iter().any(|p| p.name == name);
            let result = if absent {
                Err(anyhow::anyhow!("interface missing"))
            } else if stuck {
                self.hot_detach(&name)
                    .and_then(|()| self.hot_attach(plan, config))
            } else {
                self.hot_attach(plan, config)
            };
            match result {
                Ok(()) => {
                    tracing::info!(port = %name, "port up again");
                    self.down.remove(&name);
                    up.push(name);
                }
                Err(e) => {
                    if let Some(d) = self.down.get_mut(&name) {
                        if !absent {
                            d.reason = format!("{e:#}");
                        }
                        d.next_try = now + d.backoff;
                        d.backoff = (d.backoff * 2).min(RETRY_MAX);
                    }
                }
            }
        }
        up
    }

    /// Attaches a port while traffic flows: probe, configure, start, then hand its
    /// queues to the workers (queue i to worker i mod N; the worker of queue 0 owns
    /// the TX path the others reach through rings).
    pub fn hot_attach(&mut self, plan: &PortPlan, config: &Validated) -> anyhow::Result<()> {
        let mut named = attach_port(plan, &mut self.namer)?;
        let port_config = PortConfig {
            queues: plan.queues,
            rx_descriptors: config.rx_descriptors,
            tx_descriptors: config.tx_descriptors,
            mtu: plan.mtu,
            tso: plan.tso,
        };
        let (rx, tx) = named
            .port
            .configure(&port_config, self.pool)
            .with_context(|| format!("port `{}`", plan.name))?;
        named
            .port
            .start()
            .with_context(|| format!("port `{}`", plan.name))?;
        let id = named.port.id();
        let n = self.workers.len();
        let mut commands: Vec<WorkerCommand> = (0..n)
            .map(|_| WorkerCommand::Attach {
                rx: Vec::new(),
                tx: Vec::new(),
                inbound: Vec::new(),
                outbound: Vec::new(),
            })
            .collect();
        for (i, (rxq, txq)) in rx.into_iter().zip(tx).enumerate() {
            if let WorkerCommand::Attach { rx, tx, .. } = &mut commands[i % n] {
                if plan.backend.receives() {
                    rx.push(rxq);
                }
                tx.push(txq);
            }
        }
        // Queue 0 went to worker 0: it owns the TX path the other workers reach by ring.
        let owner = 0;
        for worker in 0..n {
            let owns =
                matches!(&commands[worker], WorkerCommand::Attach { tx, .. } if !tx.is_empty());
            if owns {
                continue;
            }
            let (producer, consumer) =
                MbufRing::create(&format!("w{worker}p{id}"), HANDOFF_RING_SIZE)
                    .context("creating a handoff ring")?;
            if let WorkerCommand::Attach { outbound, .. } = &mut commands[worker] {
                outbound.push((id, producer));
            }
            if let WorkerCommand::Attach { inbound, .. } = &mut commands[owner] {
                inbound.push((id, consumer));
            }
        }
        named.drops_before = self.drops_at(id);
        for (worker, command) in self.workers.iter().zip(commands) {
            send(worker, command)?;
        }
        self.ports.push(named);
        Ok(())
    }

    /// The workers' drops of frames received on device `id`, by reason, ever.
    fn drops_at(&self, id: u16) -> [u64; DROP_REASON_COUNT] {
        let mut sum = [0; DROP_REASON_COUNT];
        for worker in &self.workers {
            for (total, n) in sum.iter_mut().zip(worker.counters().port_drops(id)) {
                *total += n;
            }
        }
        sum
    }

    /// Drops of frames `port` received, by reason, since it was attached.
    pub fn drops_of(&self, port: &NamedPort) -> [u64; DROP_REASON_COUNT] {
        let mut drops = self.drops_at(port.port.id());
        for (n, before) in drops.iter_mut().zip(&port.drops_before) {
            *n = n.saturating_sub(*before);
        }
        drops
    }

    /// Detaches the port named `name`: every worker lets go of it (after the caller
    /// has published tables that no longer use it), then the device is closed and
    /// removed. When a worker does not answer, the port stays attached (and unused by
    /// the tables) for a later try.
    pub fn hot_detach(&mut self, name: &str) -> anyhow::Result<()> {
        let detached = self.try_detach(name);
        if detached.is_err() {
            self.detaching.insert(name.to_owned());
        } else {
            self.detaching.remove(name);
        }
        detached
    }

    fn try_detach(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(index) = self.ports.iter().position(|p| p.name == name) else {
            return Ok(());
        };
        let id = self.ports[index].port.id();
        let (done, acks) = std::sync::mpsc::channel();
        for worker in &self.workers {
            send(
                worker,
                WorkerCommand::Detach {
                    port: id,
                    done: done.clone(),
                },
            )?;
        }
        for _ in 0..self.workers.len() {
            acks.recv_timeout(std::time::Duration::from_secs(5))
                .context("a worker did not let go of the port")?;
        }
        let named = self.ports.remove(index);
        tracing::info!(port = %named.name, device = %named.port.name(), "detached");
        named.port.detach();
        Ok(())
    }
}

/// Hands a command to a worker, waiting briefly while its queue is full.
fn send(worker: &Worker, mut command: WorkerCommand) -> anyhow::Result<()> {
    for _ in 0..1000 {
        match worker.command(command) {
            Ok(()) => return Ok(()),
            Err(back) => command = back,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    anyhow::bail!("worker on CPU {} does not take commands", worker.core())
}

/// What wiring hands the daemon: one plan per worker CPU (config order), and the ring
/// through which the control plane transmits on the uplink.
pub struct Wiring {
    /// Worker plans.
    pub plans: Vec<WorkerPlan>,
    /// Control plane → the first worker, frames sent out of the uplink.
    pub uplink_injector: RingProducer,
    /// Control plane → the first worker, frames sent as a tenant's router.
    pub router_injector: RingProducer,
    /// Workers → control plane: copies of captured packets.
    pub captures: Vec<RingConsumer>,
}

/// Rings between every two workers for outside frames whose SNAT session the other
/// holds: each core allocates translated ports from its own slice, and the uplink's RX
/// queue may belong to any core. A handed-off frame runs again as received on the
/// uplink, whichever port that is when it arrives (it may come and go).
fn connect_workers(plans: &mut [WorkerPlan]) -> anyhow::Result<()> {
    let uplink = dataplane::pipeline::stage::HANDOFF_PORT;
    for from in 0..plans.len() {
        for to in 0..plans.len() {
            if from == to {
                continue;
            }
            let (producer, consumer) =
                MbufRing::create(&format!("nat-w{from}w{to}"), HANDOFF_RING_SIZE)
                    .context("creating a SNAT handoff ring")?;
            plans[from].handoff.push((to as u16, producer));
            plans[to].reprocess.push((uplink, consumer));
        }
    }
    Ok(())
}

/// Configures and starts every port and hands each RX/TX queue pair to one worker
/// (round-robin over all pairs). A worker reaches ports whose TX queue it does not own
/// through a ring to the owner, since flooding may send anywhere. A port that does not
/// start is closed and put `down`, to be tried again; the others run.
pub fn wire(
    config: &Validated,
    pool: &Mempool,
    ports: &mut Vec<NamedPort>,
    down: &mut HashMap<String, Down>,
) -> anyhow::Result<Wiring> {
    let mut plans: Vec<WorkerPlan> = config
        .workers
        .iter()
        .map(|&core| WorkerPlan {
            core,
            rx: Vec::new(),
            tx: Vec::new(),
            inbound: Vec::new(),
            outbound: Vec::new(),
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        })
        .collect();
    let mut captures = Vec::with_capacity(plans.len());
    for (i, plan) in plans.iter_mut().enumerate() {
        let (producer, consumer) = MbufRing::create(&format!("cap-w{i}"), CAPTURE_RING_SIZE)
            .context("creating a capture ring")?;
        plan.capture = Some(producer);
        captures.push(consumer);
    }
    let mut tx_owner: HashMap<u16, usize> = HashMap::new();
    let mut owners: HashMap<u16, Vec<usize>> = HashMap::new();
    let mut next = 0usize;
    for named in ports.iter_mut() {
        let Some(plan) = config.ports.iter().find(|p| p.name == named.name) else {
            continue;
        };
        let port_config = PortConfig {
            queues: plan.queues,
            rx_descriptors: config.rx_descriptors,
            tx_descriptors: config.tx_descriptors,
            mtu: plan.mtu,
            tso: plan.tso,
        };
        let started = named
            .port
            .configure(&port_config, pool)
            .and_then(|queues| named.port.start().map(|()| queues));
        let (rx, tx) = match started {
            Ok(queues) => queues,
            Err(e) => {
                let reason = format!("port `{}`: {e}", named.name);
                tracing::warn!(port = %named.name, error = %reason, "port down; trying again");
                down.insert(named.name.clone(), Down::new(reason));
                continue;
            }
        };
        let id = named.port.id();
        for (rxq, txq) in rx.into_iter().zip(tx) {
            let worker = next % plans.len();
            next += 1;
            tx_owner.entry(id).or_insert(worker);
            owners.entry(id).or_default().push(worker);
            if plan.backend.receives() {
                plans[worker].rx.push(rxq);
            }
            plans[worker].tx.push(txq);
        }
    }
    ports.retain(|p| !down.contains_key(&p.name));
    let port_ids: Vec<u16> = ports.iter().map(|p| p.port.id()).collect();
    for worker in 0..plans.len() {
        for &id in &port_ids {
            let owns = owners.get(&id).is_some_and(|o| o.contains(&worker));
            let Some(&owner) = tx_owner.get(&id) else {
                continue;
            };
            if owns {
                continue;
            }
            let (producer, consumer) =
                MbufRing::create(&format!("w{worker}p{id}"), HANDOFF_RING_SIZE)
                    .context("creating a handoff ring")?;
            plans[worker].outbound.push((id, producer));
            plans[owner].inbound.push((id, consumer));
        }
    }
    // Whether or not an uplink is attached now: one may come (or come back) later.
    let (uplink_injector, consumer) =
        MbufRing::create("ctl-uplink", 256).context("creating the control ring")?;
    if let Some(first) = plans.first_mut() {
        first
            .reprocess
            .push((dataplane::pipeline::stage::UNDERLAY_PORT, consumer));
    }
    connect_workers(&mut plans)?;
    let (router_injector, consumer) =
        MbufRing::create("ctl-router", 256).context("creating the router ring")?;
    if let Some(first) = plans.first_mut() {
        first
            .reprocess
            .push((dataplane::pipeline::stage::CONTROL_PORT, consumer));
    }
    Ok(Wiring {
        plans,
        uplink_injector,
        router_injector,
        captures,
    })
}
