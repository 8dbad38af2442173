//! The port manager: attaches the configured ports, sets their queues up, and hands each
//! RX/TX queue to exactly one worker, with rings where a worker must reach a port whose
//! TX queue another worker owns.

use std::collections::HashMap;

use anyhow::Context;
use dataplane::dpdk::{DeviceNamer, MbufRing, Mempool, Port, PortConfig};
use dataplane::pipeline::CrossConnect;
use dataplane::worker::WorkerPlan;

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

/// Configures and starts every port, assigns queues to workers and builds the
/// cross-connect. Returns one plan per worker CPU, in config order.
pub fn wire(
    config: &Validated,
    pool: &Mempool,
    ports: &mut [NamedPort],
) -> anyhow::Result<(Vec<WorkerPlan>, CrossConnect)> {
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
    // Which worker owns (port id, queue 0)'s TX queue, and which workers own any queue
    // of a port: round-robin over every (port, queue) pair.
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
    let mut cross_connect = CrossConnect::default();
    for &(from, to) in &config.cross_connects {
        let (from_id, to_id) = (ports[from].port.id(), ports[to].port.id());
        cross_connect.connect_one_way(from_id, to_id);
        // Every worker that receives from `from` must reach `to`.
        let Some(&owner) = tx_owner.get(&to_id) else {
            continue;
        };
        let receivers = owners.get(&from_id).cloned().unwrap_or_default();
        for worker in receivers {
            let reaches = owners.get(&to_id).is_some_and(|o| o.contains(&worker))
                || plans[worker].outbound.iter().any(|(p, _)| *p == to_id);
            if reaches {
                continue;
            }
            let (producer, consumer) =
                MbufRing::create(&format!("w{worker}p{to_id}"), HANDOFF_RING_SIZE)
                    .context("creating a handoff ring")?;
            plans[worker].outbound.push((to_id, producer));
            plans[owner].inbound.push((to_id, consumer));
        }
    }
    Ok((plans, cross_connect))
}
