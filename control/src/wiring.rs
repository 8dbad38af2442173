//! The port manager: attaches the configured ports, sets their queues up, and hands each
//! RX/TX queue to exactly one worker, with rings where a worker must reach a port whose
//! TX queue another worker owns.

use std::collections::HashMap;

use anyhow::Context;
use dataplane::dpdk::{DeviceNamer, MbufRing, Mempool, Port, PortConfig, RingProducer};
use dataplane::worker::WorkerPlan;

use crate::config::switching::RolePlan;
use crate::config::{PortPlan, Validated};

/// Packets a handoff ring holds: several bursts, so a briefly slow owner drops nothing.
const HANDOFF_RING_SIZE: u32 = 1024;

/// A configured port by name.
pub struct NamedPort {
    /// The name from the config.
    pub name: String,
    /// The attached device.
    pub port: Port,
}

/// Attaches every port of the config, in order (bond members before their bond).
pub fn attach_ports(plans: &[PortPlan]) -> anyhow::Result<Vec<NamedPort>> {
    let mut namer = DeviceNamer::default();
    let mut ports = Vec::with_capacity(plans.len());
    for plan in plans {
        if let dataplane::dpdk::Backend::VhostUser { path, .. } = &plan.backend {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("port `{}`: creating {}", plan.name, dir.display()))?;
            }
        }
        let mut devargs = plan.backend.devargs(plan.queues, &mut namer);
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
        ports.push(NamedPort {
            name: plan.name.clone(),
            port,
        });
    }
    Ok(ports)
}

/// What wiring hands the daemon: one plan per worker CPU (config order), and the ring
/// through which the control plane transmits on the uplink.
pub struct Wiring {
    /// Worker plans.
    pub plans: Vec<WorkerPlan>,
    /// Control plane → owner of the uplink's TX queue.
    pub uplink_injector: Option<RingProducer>,
}

/// Configures and starts every port and hands each RX/TX queue pair to one worker
/// (round-robin over all pairs). A worker reaches ports whose TX queue it does not own
/// through a ring to the owner, since flooding may send anywhere.
pub fn wire(config: &Validated, pool: &Mempool, ports: &mut [NamedPort]) -> anyhow::Result<Wiring> {
    let mut plans: Vec<WorkerPlan> = config
        .workers
        .iter()
        .map(|&core| WorkerPlan {
            core,
            rx: Vec::new(),
            tx: Vec::new(),
            inbound: Vec::new(),
            outbound: Vec::new(),
        })
        .collect();
    let mut tx_owner: HashMap<u16, usize> = HashMap::new();
    let mut owners: HashMap<u16, Vec<usize>> = HashMap::new();
    let mut next = 0usize;
    for (named, plan) in ports.iter_mut().zip(&config.ports) {
        let port_config = PortConfig {
            queues: plan.queues,
            rx_descriptors: config.rx_descriptors,
            tx_descriptors: config.tx_descriptors,
            mtu: plan.mtu,
        };
        let (rx, tx) = named
            .port
            .configure(&port_config, pool)
            .with_context(|| format!("port `{}`", named.name))?;
        named
            .port
            .start()
            .with_context(|| format!("port `{}`", named.name))?;
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
    let port_ids: Vec<u16> = ports.iter().map(|p| p.port.id()).collect();
    for worker in 0..plans.len() {
        for &id in &port_ids {
            let owns = owners.get(&id).is_some_and(|o| o.contains(&worker));
            let Some(&owner) = tx_owner.get(&id) else {
                continue;
            };
            if owns || plans[worker].rx.is_empty() {
                continue;
            }
            let (producer, consumer) =
                MbufRing::create(&format!("w{worker}p{id}"), HANDOFF_RING_SIZE)
                    .context("creating a handoff ring")?;
            plans[worker].outbound.push((id, producer));
            plans[owner].inbound.push((id, consumer));
        }
    }
    let uplink = config
        .switching
        .roles
        .iter()
        .position(|r| matches!(r, RolePlan::Uplink(_)))
        .map(|i| ports[i].port.id());
    let uplink_injector = match uplink.and_then(|id| Some((id, *tx_owner.get(&id)?))) {
        Some((id, owner)) => {
            let (producer, consumer) =
                MbufRing::create("ctl-uplink", 256).context("creating the control ring")?;
            plans[owner].inbound.push((id, consumer));
            Some(producer)
        }
        None => None,
    };
    Ok(Wiring {
        plans,
        uplink_injector,
    })
}
