//! A switch on one host, in memory, driven one operation at a time: the real
//! controller (tenant slots, learning, identities) and the real pipeline core over
//! byte frames, with container ports on port ids handed out lowest first (as the
//! kernel-socket ports are), and an oracle that checks every output: a frame carries
//! its tenant's mark, and none may leave through a port of another tenant; no SNAT
//! reply may reach anyone but the tenant whose session it answers.
//!
//! Shared by the property test (`churn_model.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/churn.rs`). Three tenants share one subnet (10.1.0.0/24), the
//! same gateway address and the same SNAT address, so nothing but the switch's
//! identities keeps them apart.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::compile::PortInfo;
use control::config::{Config, Validated};
use control::controller::Controller;
use dataplane::counters::CoreCounters;
use dataplane::packet::frame::BufFrame;
use dataplane::packet::Mac;
use dataplane::pipeline::events::EventQueue;
use dataplane::pipeline::offline::Collect;
use dataplane::pipeline::{Core, WorkerSlot};
use dataplane::table::publish::TablePublisher;
use dataplane::table::routing::router_mac;

/// Tenants there are.
pub const TENANTS: usize = 3;
/// Container ports there are.
pub const PORTS: usize = 6;
const UPLINK: u16 = 0;
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0xee, 0];
const OUTSIDE_MAC: Mac = [2, 0, 0, 0, 0xee, 1];
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const MARK: [u8; 4] = [0x7e, 0x57, 0x7e, 0x57];

/// One step: a change, traffic, or time.
#[derive(Debug, Clone)]
pub enum Op {
    AddPort { port: usize, tenant: usize },
    DeletePort { port: usize },
    DeleteTenant { tenant: usize },
    AddTenant { tenant: usize },
    Gateway { tenant: usize, on: bool },
    Send { port: usize, kind: u8, pick: u8 },
    Reply { pick: u8 },
    Tick { secs: u8 },
    Absorb,
}

impl Op {
    /// An operation from fuzzer bytes (`None` when they run out).
    pub fn decode(bytes: &mut impl Iterator<Item = u8>) -> Option<Op> {
        let kind = bytes.next()?;
        let mut next = || bytes.next().unwrap_or(0);
        let port = |b: u8| usize::from(b) % PORTS;
        let tenant = |b: u8| usize::from(b) % TENANTS;
        Some(match kind % 16 {
            0 | 1 => Op::AddPort {
                port: port(next()),
                tenant: tenant(next()),
            },
            2 => Op::DeletePort { port: port(next()) },
            3 => Op::DeleteTenant {
                tenant: tenant(next()),
            },
            4 => Op::AddTenant {
                tenant: tenant(next()),
            },
            5 => Op::Gateway {
                tenant: tenant(next()),
                on: next() & 1 == 1,
            },
            6..=11 => Op::Send {
                port: port(next()),
                kind: next() % 6,
                pick: next(),
            },
            12 | 13 => Op::Reply { pick: next() },
            14 => Op::Tick {
                secs: 1 + next() % 4,
            },
            _ => Op::Absorb,
        })
    }
}

/// A container behind a port: whose it is, its port id, MAC and address.
#[derive(Debug, Clone, Copy)]
pub struct Container {
    /// Its tenant.
    pub tenant: usize,
    /// Its port's id.
    pub id: u16,
    /// Its MAC.
    pub mac: Mac,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A tenant: there or not, with its gateway or not.
#[derive(Debug, Clone, Copy)]
pub struct Tenant {
    present: bool,
    gateway: bool,
}

pub struct World {
    pub tenants: [Tenant; TENANTS],
    pub ports: [Option<Container>; PORTS],
    pub free_ids: BTreeSet<u16>,
    pub next_mac: u16,
    /// Every container MAC there ever was, and its tenant.
    pub macs: Vec<(Mac, usize)>,
    /// SNAT sessions seen leaving: (outside port, remote, remote port, tenant).
    pub sessions: Vec<(u16, Ipv4Addr, u16, usize)>,
    pub controller: Controller,
    pub core: Core<BufFrame>,
    pub counters: CoreCounters,
    pub start: Instant,
    pub now: u32,
}

impl World {
    /// Three tenants with gateways, no container ports yet.
    pub fn new() -> Self {
        let publisher = TablePublisher::new(Default::default());
        let queue = Arc::new(EventQueue::new(4096));
        let tenants = [Tenant {
            present: true,
            gateway: true,
        }; TENANTS];
        let config = config(&tenants, &[None; PORTS]);
        let controller = Controller::new(
            Arc::clone(&config),
            port_info(&config, &[None; PORTS]),
            publisher.clone(),
            vec![Arc::clone(&queue)],
            None,
            None,
        );
        let core = Core::new(
            publisher.reader(),
            queue,
            WorkerSlot {
                index: 0,
                count: 1,
                nat_sessions: 1024,
                spread_tunnels: false,
                // The fewest entries a config may give: churn meets evictions too.
                cache_entries: 256,
            },
        );
        Self {
            tenants,
            ports: [None; PORTS],
            free_ids: (1..64).collect(),
            next_mac: 0,
            macs: Vec::new(),
            sessions: Vec::new(),
            controller,
            core,
            counters: CoreCounters::default(),
            start: Instant::now(),
            now: 0,
        }
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_secs(u64::from(self.now))
    }

    /// Makes the current tenants and ports the running configuration.
    fn reconfigure(&mut self) {
        let config = config(&self.tenants, &self.ports);
        let ports = port_info(&config, &self.ports);
        self.controller.reconfigure(config, ports);
        self.controller.publish_if_changed();
    }

    /// What the daemon does after taking ports away: the core lets go (it takes the
    /// tables without them, as a worker acknowledges a detach), then what it queued
    /// meanwhile is drained; only then are the ids free for other ports.
    fn detach(&mut self, ids: &[u16]) {
        let mut sink = Collect::default();
        self.core.idle(self.now, &mut sink, &self.counters);
        self.check(&sink);
        self.controller.absorb(self.instant());
        self.free_ids.extend(ids);
    }

    /// Does `op`, checking every output it causes.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::AddPort { port, tenant } => {
                if self.ports[port].is_some() || !self.tenants[tenant].present {
                    return;
                }
                let Some(id) = self.free_ids.pop_first() else {
                    return;
                };
                self.next_mac += 1;
                let mac = [
                    2,
                    0,
                    0x0c,
                    tenant as u8,
                    (self.next_mac >> 8) as u8,
                    self.next_mac as u8,
                ];
                self.macs.push((mac, tenant));
                self.ports[port] = Some(Container {
                    tenant,
                    id,
                    mac,
                    // Overlapping addresses: ports 0 and 3 (1 and 4, ...) share one.
                    ip: Ipv4Addr::new(10, 1, 0, 10 + (port % 3) as u8),
                });
                self.reconfigure();
            }
            Op::DeletePort { port } => {
                let Some(gone) = self.ports[port].take() else {
                    return;
                };
                self.reconfigure();
                self.detach(&[gone.id]);
            }
            Op::DeleteTenant { tenant } => {
                if !self.tenants[tenant].present {
                    return;
                }
                // A tenant goes with its ports.
                let mut ids = Vec::new();
                for slot in self.ports.iter_mut() {
                    if slot.is_some_and(|c| c.tenant == tenant) {
                        ids.push(slot.take().map(|c| c.id).unwrap_or_default());
                    }
                }
                self.tenants[tenant].present = false;
                self.reconfigure();
                self.detach(&ids);
            }
            Op::AddTenant { tenant } => {
                if self.tenants[tenant].present {
                    return;
                }
                self.tenants[tenant].present = true;
                self.reconfigure();
            }
            Op::Gateway { tenant, on } => {
                if self.tenants[tenant].gateway == on {
                    return;
                }
                self.tenants[tenant].gateway = on;
                self.reconfigure();
            }
            Op::Send { port, kind, pick } => {
                let Some(from) = self.ports[port] else {
                    return;
                };
                let frame = self.frame(from, kind, pick);
                self.run(from.id, frame);
            }
            Op::Reply { pick } => {
                if self.sessions.is_empty() {
                    return;
                }
                let (port, remote, remote_port, tenant) =
                    self.sessions[usize::from(pick) % self.sessions.len()];
                let frame = udp(
                    UPLINK_MAC,
                    OUTSIDE_MAC,
                    (remote, remote_port),
                    (SNAT, port),
                    tenant,
                );
                self.run(UPLINK, frame);
            }
            Op::Tick { secs } => {
                self.now += u32::from(secs);
                self.controller.absorb(self.instant());
                self.controller.publish_if_changed();
                let mut sink = Collect::default();
                self.core.idle(self.now, &mut sink, &self.counters);
                self.check(&sink);
            }
            Op::Absorb => {
                self.controller.absorb(self.instant());
                self.controller.publish_if_changed();
            }
        }
    }

    fn frame(&self, from: Container, kind: u8, pick: u8) -> Vec<u8> {
        let gateway_mac = router_mac(100 + from.tenant as u32);
        match kind {
            // Unicast to any MAC there ever was: known, stale, another tenant's.
            0 if !self.macs.is_empty() => {
                let (to, _) = self.macs[usize::from(pick) % self.macs.len()];
                l2(to, from.mac, from.tenant)
            }
            1 => l2([0xff; 6], from.mac, from.tenant),
            // ARP for the gateway: the container becomes the router's neighbour.
            2 => arp(from.mac, from.ip, GATEWAY, from.tenant),
            // Out through SNAT.
            3 => udp(
                gateway_mac,
                from.mac,
                (from.ip, 40000 + u16::from(pick % 8)),
                (Ipv4Addr::new(203, 0, 113, 1 + pick % 4), 53),
                from.tenant,
            ),
            // Routed to another container of the tenant (or nobody).
            4 => udp(
                gateway_mac,
                from.mac,
                (from.ip, 5000),
                (Ipv4Addr::new(10, 1, 0, 10 + pick % 4), 5000),
                from.tenant,
            ),
            // To the gateway's MAC of another tenant.
            _ => udp(
                router_mac(100 + u32::from(pick) % TENANTS as u32),
                from.mac,
                (from.ip, 5000),
                (Ipv4Addr::new(10, 1, 0, 10 + pick % 4), 5000),
                from.tenant,
            ),
        }
    }

    /// Runs `frame` in from `in_port`, checking every output.
    pub fn run(&mut self, in_port: u16, frame: Vec<u8>) {
        let mut sink = Collect::default();
        self.core.begin(self.now, &mut sink, &self.counters);
        self.core.run(
            in_port,
            std::iter::once(BufFrame::new(&frame)),
            &mut sink,
            &self.counters,
        );
        self.check(&sink);
    }

    /// Every output must belong to the tenant of the port it leaves by; SNAT'd ones
    /// leaving by the uplink are remembered for replies.
    fn check(&mut self, sink: &Collect) {
        for (port, frame) in &sink.sent {
            if *port == UPLINK {
                self.remember_session(frame);
                continue;
            }
            let Some(to) = self.ports.iter().flatten().find(|c| c.id == *port) else {
                // A port id nobody has now: no device would send it.
                continue;
            };
            let owner = self.owner(frame);
            assert!(
                owner == Some(to.tenant),
                "a frame of tenant {owner:?} left through a port of tenant {}: {frame:02x?}",
                to.tenant
            );
        }
    }

    /// The tenant a frame belongs to: its mark, or (for what the router writes anew,
    /// an ICMP error) its source MAC.
    fn owner(&self, frame: &[u8]) -> Option<usize> {
        if frame.len() >= 6 && frame[frame.len() - 6..frame.len() - 2] == MARK {
            return Some(usize::from(frame[frame.len() - 1]));
        }
        let src: Mac = frame.get(6..12)?.try_into().ok()?;
        if let Some(&(_, tenant)) = self.macs.iter().find(|(m, _)| *m == src) {
            return Some(tenant);
        }
        (0..TENANTS).find(|&t| router_mac(100 + t as u32) == src)
    }

    fn remember_session(&mut self, frame: &[u8]) {
        // IPv4 UDP from our SNAT address: its outside port is the session's.
        if frame.len() < 42 || frame[12..14] != [8, 0] || frame[23] != 17 {
            return;
        }
        let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
        let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
        let sport = u16::from_be_bytes([frame[34], frame[35]]);
        let dport = u16::from_be_bytes([frame[36], frame[37]]);
        assert_eq!(src, SNAT, "left the uplink untranslated");
        let Some(tenant) = self.owner(frame) else {
            return;
        };
        // The outside answers the translated address and port, whoever holds them
        // now: a tuple a gone tenant's session had may be another tenant's today.
        match self
            .sessions
            .iter_mut()
            .find(|s| (s.0, s.1, s.2) == (sport, dst, dport))
        {
            Some(known) => known.3 = tenant,
            None => self.sessions.push((sport, dst, dport, tenant)),
        }
    }
}

fn config(tenants: &[Tenant; TENANTS], ports: &[Option<Container>; PORTS]) -> Arc<Validated> {
    let mut text = String::from(
        r#"
[switch]
host = "h"
underlay_gateway = "198.18.0.254"
underlay_gateway_mac = "02:00:00:00:ee:01"

[gateway]
snat_port_min = 20000
snat_port_max = 20999

[[host]]
name = "h"
underlay_ip = "198.18.0.1/24"

[[port]]
name = "up"
backend = "ring"
role = "uplink"
mac = "02:00:00:00:ee:00"
"#,
    );
    for (t, tenant) in tenants.iter().enumerate() {
        if !tenant.present {
            continue;
        }
        text += &format!("\n[[tenant]]\nname = \"t{t}\"\nid = {}\n", 100 + t);
        if tenant.gateway {
            text += "subnets = [\"10.1.0.1/24\"]\ngateway_host = \"h\"\n";
        }
    }
    for (k, port) in ports.iter().enumerate() {
        if let Some(c) = port {
            text += &format!(
                "\n[[port]]\nname = \"c{k}\"\nbackend = \"ring\"\nrole = \"access\"\ntenant = \"t{}\"\n",
                c.tenant
            );
        }
    }
    // Parsed once per shape: a fuzzer meets the same few over and over.
    thread_local! {
        static PARSED: std::cell::RefCell<HashMap<String, Arc<Validated>>> = Default::default();
    }
    PARSED.with(|parsed| {
        let mut parsed = parsed.borrow_mut();
        if let Some(config) = parsed.get(&text) {
            return Arc::clone(config);
        }
        let config = Config::parse(&text, |_| None)
            .and_then(|c| c.validate())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let config = Arc::new(config);
        parsed.insert(text, Arc::clone(&config));
        config
    })
}

/// The port ids the "devices" have: the uplink's, and each container port's.
fn port_info(config: &Validated, ports: &[Option<Container>; PORTS]) -> Vec<Option<PortInfo>> {
    config
        .ports
        .iter()
        .map(|p| {
            let id = match p.name.strip_prefix('c') {
                Some(k) => ports[k.parse::<usize>().ok()?]?.id,
                None => UPLINK,
            };
            Some(PortInfo {
                id,
                mac: [2, 0, 0, 0, 0xdd, id as u8],
                mtu: None,
            })
        })
        .collect()
}

fn marked(mut frame: Vec<u8>, tenant: usize) -> Vec<u8> {
    let len = frame.len();
    frame[len - 6..len - 2].copy_from_slice(&MARK);
    frame[len - 2] = 0;
    frame[len - 1] = tenant as u8;
    frame
}

pub fn l2(dst: Mac, src: Mac, tenant: usize) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    marked(f, tenant)
}

fn arp(src: Mac, ip: Ipv4Addr, target: Ipv4Addr, tenant: usize) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&src);
    f[28..32].copy_from_slice(&ip.octets());
    f[38..42].copy_from_slice(&target.octets());
    marked(f, tenant)
}

fn udp(dst: Mac, src: Mac, from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), tenant: usize) -> Vec<u8> {
    let payload = 16;
    let mut f = vec![0u8; 14 + 20 + 8 + payload];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[8, 0]);
    let total = (20 + 8 + payload) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&from.0.octets());
    ip[16..20].copy_from_slice(&to.0.octets());
    let mut sum = 0u32;
    for pair in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f[34..36].copy_from_slice(&from.1.to_be_bytes());
    f[36..38].copy_from_slice(&to.1.to_be_bytes());
    f[38..40].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    marked(f, tenant)
}
