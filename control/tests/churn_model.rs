//! Isolation under change, as a property: random sequences of changes (container ports
//! added, deleted and re-added on reused port ids, tenants deleted and re-added,
//! gateways switched off and on) interleaved with traffic (frames to known, stale and
//! unknown MACs, broadcasts, ARP, routed and SNAT'd packets, and replies from the
//! outside to every SNAT session seen) run through the real control plane (the
//! controller, its tenant slots and learning) and the real pipeline core. Every frame
//! carries its tenant's mark; none may leave through a port of another tenant, and no
//! SNAT reply may reach anyone but the tenant whose session it answers.
//!
//! Three tenants share one subnet (10.1.0.0/24), the same gateway address and the
//! same SNAT address, so nothing but the switch's identities keeps them apart.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::compile::PortInfo;
use control::config::Config;
use control::controller::Controller;
use dataplane::counters::CoreCounters;
use dataplane::packet::frame::{BufFrame, Frame};
use dataplane::packet::Mac;
use dataplane::pipeline::events::EventQueue;
use dataplane::pipeline::switch::Sink;
use dataplane::pipeline::{Core, WorkerSlot};
use dataplane::table::publish::TablePublisher;
use dataplane::table::routing::router_mac;
use proptest::prelude::*;

const TENANTS: usize = 3;
const PORTS: usize = 6;
const UPLINK: u16 = 0;
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0xee, 0];
const OUTSIDE_MAC: Mac = [2, 0, 0, 0, 0xee, 1];
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const MARK: [u8; 4] = [0x7e, 0x57, 0x7e, 0x57];

#[derive(Debug, Clone)]
enum Op {
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

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PORTS, 0..TENANTS).prop_map(|(port, tenant)| Op::AddPort { port, tenant }),
        2 => (0..PORTS).prop_map(|port| Op::DeletePort { port }),
        1 => (0..TENANTS).prop_map(|tenant| Op::DeleteTenant { tenant }),
        1 => (0..TENANTS).prop_map(|tenant| Op::AddTenant { tenant }),
        1 => (0..TENANTS, any::<bool>()).prop_map(|(tenant, on)| Op::Gateway { tenant, on }),
        12 => (0..PORTS, 0u8..6, any::<u8>()).prop_map(|(port, kind, pick)| Op::Send { port, kind, pick }),
        4 => any::<u8>().prop_map(|pick| Op::Reply { pick }),
        1 => (1u8..5).prop_map(|secs| Op::Tick { secs }),
        2 => Just(Op::Absorb),
    ]
}

/// A container behind a port: whose it is, its port id, MAC and address.
#[derive(Debug, Clone, Copy)]
struct Container {
    tenant: usize,
    id: u16,
    mac: Mac,
    ip: Ipv4Addr,
}

#[derive(Debug, Clone, Copy)]
struct Tenant {
    present: bool,
    gateway: bool,
}

/// What the outputs of one step went to.
#[derive(Default)]
struct Collect(Vec<(u16, Vec<u8>)>);

impl Sink<BufFrame> for Collect {
    fn send(&mut self, port: u16, frame: BufFrame) {
        self.0.push((port, frame.data().to_vec()));
    }
}

struct World {
    tenants: [Tenant; TENANTS],
    ports: [Option<Container>; PORTS],
    free_ids: BTreeSet<u16>,
    next_mac: u16,
    /// Every container MAC there ever was, and its tenant.
    macs: Vec<(Mac, usize)>,
    /// SNAT sessions seen leaving: (outside port, remote, remote port, tenant).
    sessions: Vec<(u16, Ipv4Addr, u16, usize)>,
    controller: Controller,
    core: Core<BufFrame>,
    counters: CoreCounters,
    start: Instant,
    now: u32,
}

impl World {
    fn new() -> Self {
        let publisher = TablePublisher::new(Default::default());
        let queue = Arc::new(EventQueue::new(4096));
        let tenants = [Tenant {
            present: true,
            gateway: true,
        }; TENANTS];
        let config = Arc::new(config(&tenants, &[None; PORTS]));
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
        let config = Arc::new(config(&self.tenants, &self.ports));
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

    fn apply(&mut self, op: &Op) {
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

    fn run(&mut self, in_port: u16, frame: Vec<u8>) {
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
        for (port, frame) in &sink.0 {
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
        if !self
            .sessions
            .iter()
            .any(|s| *s == (sport, dst, dport, tenant))
        {
            self.sessions.push((sport, dst, dport, tenant));
        }
    }
}

fn config(
    tenants: &[Tenant; TENANTS],
    ports: &[Option<Container>; PORTS],
) -> control::config::Validated {
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
    Config::parse(&text, |_| None)
        .and_then(|c| c.validate())
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The port ids the "devices" have: the uplink's, and each container port's.
fn port_info(
    config: &control::config::Validated,
    ports: &[Option<Container>; PORTS],
) -> Vec<Option<PortInfo>> {
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

fn l2(dst: Mac, src: Mac, tenant: usize) -> Vec<u8> {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_frame_and_no_snat_reply_crosses_tenants_whatever_changes(ops in prop::collection::vec(op(), 10..120)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
    }
}

/// The sequence that used to leak, by hand: red's port learns a MAC, goes, and blue's
/// new port gets its id; red's frame to that MAC must not reach blue.
#[test]
fn a_reused_port_id_carries_nothing_of_its_old_tenant() {
    let mut world = World::new();
    for op in [
        Op::AddPort { port: 0, tenant: 0 },
        Op::AddPort { port: 1, tenant: 0 },
        Op::Send {
            port: 1,
            kind: 1,
            pick: 0,
        },
        Op::Absorb,
        Op::DeletePort { port: 1 },
        Op::AddPort { port: 2, tenant: 1 },
    ] {
        world.apply(&op);
    }
    assert_eq!(
        world.ports[2].map(|c| c.id),
        Some(2),
        "blue took red's old id"
    );
    let red_mac = world.macs[1].0;
    let frame = l2(red_mac, world.ports[0].unwrap().mac, 0);
    world.run(world.ports[0].unwrap().id, frame);
}

/// SNAT sessions of a tenant that went answer nobody, even once another tenant has
/// taken its slot in the tables and a container at the same address.
#[test]
fn snat_replies_of_a_tenant_that_left_reach_nobody_else() {
    let mut world = World::new();
    for op in [
        Op::AddPort { port: 0, tenant: 0 },
        Op::Send {
            port: 0,
            kind: 2,
            pick: 0,
        },
        Op::Absorb,
        Op::Send {
            port: 0,
            kind: 3,
            pick: 1,
        },
    ] {
        world.apply(&op);
    }
    assert_eq!(world.sessions.len(), 1, "tenant 0's session went out");
    assert_eq!(world.core.sessions(), 1);
    world.apply(&Op::DeleteTenant { tenant: 0 });
    assert_eq!(
        world.core.sessions(),
        0,
        "dropped at the change, not at aging"
    );
    // Tenant 2 goes and comes back: it is a new tenant to the tables, and takes the
    // freed slot, with a container at tenant 0's old address.
    world.apply(&Op::DeleteTenant { tenant: 2 });
    world.apply(&Op::Tick { secs: 1 });
    world.apply(&Op::AddTenant { tenant: 2 });
    assert_eq!(
        world.controller.ids().tenant(1),
        Some(0),
        "tenant 2 got tenant 0's old slot"
    );
    for op in [
        Op::AddPort { port: 3, tenant: 2 },
        Op::Send {
            port: 3,
            kind: 2,
            pick: 0,
        },
        Op::Absorb,
        Op::Reply { pick: 0 },
    ] {
        world.apply(&op);
    }
}
