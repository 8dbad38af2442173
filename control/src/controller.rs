//! The slow path's other end: drains the workers' event queues, keeps the learned MACs
//! (with per-tenant caps and aging) and the underlay neighbours, resolves tunnel next
//! hops by ARP, and publishes a new snapshot when anything changed.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{MbufBatch, Mempool, RingProducer};
use dataplane::packet::arp::{self, ArpOperation, ArpPacket, ArpRepr};
use dataplane::packet::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use dataplane::packet::Mac;
use dataplane::pipeline::events::{Event, EventQueue};
use dataplane::table::publish::TablePublisher;
use dataplane::table::{Location, TenantIdx};

use crate::compile::{self, Dynamic, Learned, PortInfo};
use crate::config::Validated;

/// How often unresolved next hops are asked for again.
const ARP_RETRY: Duration = Duration::from_secs(1);
/// How often resolved next hops are refreshed.
const ARP_REFRESH: Duration = Duration::from_secs(30);
/// How often learned MACs are aged.
const AGING_PERIOD: Duration = Duration::from_secs(1);

/// Counters of the control side of learning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ControlStats {
    /// Learn events applied.
    pub learned: u64,
    /// Learn events refused because the tenant reached its MAC cap.
    pub learn_refused: u64,
    /// Learned MACs aged out.
    pub aged: u64,
    /// Snapshots published.
    pub published: u64,
    /// ARP requests sent for next hops.
    pub arp_sent: u64,
    /// ARP requests the tenants' routers sent for their neighbours.
    pub router_arp_sent: u64,
    /// Gratuitous ARPs sent when a gateway was placed on this host.
    pub garp_sent: u64,
}

/// How many times a router asks for a neighbour before giving up (until the next miss).
const ROUTER_ARP_TRIES: u32 = 3;

/// The control plane's view of the running switch.
pub struct Controller {
    config: Arc<Validated>,
    ports: Vec<PortInfo>,
    dynamic: Dynamic,
    statics: HashSet<(TenantIdx, Mac)>,
    per_tenant: Vec<u32>,
    publisher: TablePublisher,
    queues: Vec<Arc<EventQueue>>,
    injector: Option<RingProducer>,
    router_injector: Option<RingProducer>,
    /// Router neighbours being asked for: (tenant, IP) → (last asked, tries).
    misses: HashMap<(TenantIdx, Ipv4Addr), (Option<Instant>, u32)>,
    /// Ids of the tenants whose gateway was announced here (gratuitous ARP).
    announced: HashSet<u32>,
    dirty: bool,
    last_aging: Instant,
    last_arp: Option<Instant>,
    last_refresh: Instant,
    stats: ControlStats,
}

impl Controller {
    /// A controller publishing to `publisher` the tables of `config` over `ports`.
    pub fn new(
        config: Arc<Validated>,
        ports: Vec<PortInfo>,
        publisher: TablePublisher,
        queues: Vec<Arc<EventQueue>>,
        injector: Option<RingProducer>,
        router_injector: Option<RingProducer>,
    ) -> Self {
        let statics = config
            .switching
            .endpoints
            .iter()
            .map(|e| (e.tenant as TenantIdx, e.mac))
            .collect();
        let per_tenant = vec![0; config.switching.tenants.len()];
        let now = Instant::now();
        Self {
            config,
            ports,
            dynamic: Dynamic::default(),
            statics,
            per_tenant,
            publisher,
            queues,
            injector,
            router_injector,
            misses: HashMap::new(),
            announced: HashSet::new(),
            dirty: false,
            last_aging: now,
            last_arp: None,
            last_refresh: now,
            stats: ControlStats::default(),
        }
    }

    /// Switches to a changed configuration (same ports): learned MACs of tenants that
    /// remain are kept (re-indexed by tenant id), the rest forgotten; a new snapshot is
    /// published at the next step.
    pub fn reconfigure(&mut self, config: Arc<Validated>, ports: Vec<PortInfo>) {
        self.ports = ports;
        let old_ids: Vec<u32> = self.config.switching.tenants.iter().map(|t| t.id).collect();
        let new_index: std::collections::HashMap<u32, TenantIdx> = config
            .switching
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i as TenantIdx))
            .collect();
        let statics: HashSet<(TenantIdx, Mac)> = config
            .switching
            .endpoints
            .iter()
            .map(|e| (e.tenant as TenantIdx, e.mac))
            .collect();
        let mut per_tenant = vec![0u32; config.switching.tenants.len()];
        let learned = std::mem::take(&mut self.dynamic.learned);
        for ((tenant, mac), entry) in learned {
            let Some(&idx) = old_ids
                .get(usize::from(tenant))
                .and_then(|id| new_index.get(id))
            else {
                continue;
            };
            if statics.contains(&(idx, mac))
                || per_tenant[usize::from(idx)]
                    >= config.switching.tenants[usize::from(idx)].max_macs
            {
                continue;
            }
            per_tenant[usize::from(idx)] += 1;
            self.dynamic.learned.insert((idx, mac), entry);
        }
        let neighbors = std::mem::take(&mut self.dynamic.tenant_neighbors);
        for ((tenant, ip), entry) in neighbors {
            if let Some(&idx) = old_ids
                .get(usize::from(tenant))
                .and_then(|id| new_index.get(id))
            {
                self.dynamic.tenant_neighbors.insert((idx, ip), entry);
            }
        }
        self.misses.clear();
        // A gateway that moved away is announced again when it comes back.
        self.announced.retain(|id| {
            new_index
                .get(id)
                .is_some_and(|&t| config.gateway.is_here(usize::from(t)))
        });
        self.per_tenant = per_tenant;
        self.statics = statics;
        self.config = config;
        // Next hops may have changed with the hosts: resolve now, not in a second.
        self.last_arp = None;
        self.dirty = true;
    }

    /// Starts (`Some(port id)`) or stops capturing; takes effect with the next snapshot.
    pub fn set_capture(&mut self, port: Option<u16>) {
        if self.dynamic.capture != port {
            self.dynamic.capture = port;
            self.dirty = true;
        }
    }

    /// The snapshot the workers use now.
    pub fn tables(&self) -> Arc<dataplane::table::FlowTables> {
        self.publisher.current()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Validated> {
        &self.config
    }

    /// The tables for the current state (used for the first snapshot).
    pub fn compile(&self) -> dataplane::table::FlowTables {
        compile::compile(&self.config, &self.ports, &self.dynamic)
    }

    /// Control-side counters.
    pub fn stats(&self) -> ControlStats {
        self.stats
    }

    /// Learned MACs now.
    pub fn learned(&self) -> usize {
        self.dynamic.learned.len()
    }

    /// One round: apply events, age, resolve, publish if anything changed.
    pub fn step(&mut self, now: Instant, pool: &Mempool) {
        self.absorb(now);
        self.resolve(now, pool);
        self.publish_if_changed();
        self.announce(pool);
        self.ask_router_neighbors(now, pool);
    }

    /// Applies the workers' events and ages learned MACs.
    pub fn absorb(&mut self, now: Instant) {
        for i in 0..self.queues.len() {
            while let Some(event) = self.queues[i].pop() {
                self.apply(event, now);
            }
        }
        if now.duration_since(self.last_aging) >= AGING_PERIOD {
            self.age(now);
            self.last_aging = now;
        }
    }

    /// Publishes a new snapshot if anything changed since the last one.
    pub fn publish_if_changed(&mut self) {
        if self.dirty {
            self.publisher.publish(self.compile());
            self.stats.published += 1;
            self.dirty = false;
        }
    }

    fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::Learn {
                tenant,
                mac,
                location,
            } => self.learn(tenant, mac, location, now),
            Event::Neighbor { ip, mac } => {
                if self.dynamic.neighbors.insert(ip, mac) != Some(mac) {
                    tracing::info!(%ip, mac = %fmt_mac(&mac), "underlay neighbour resolved");
                    self.dirty = true;
                }
            }
            Event::TenantNeighbor { tenant, ip, mac } => self.tenant_neighbor(tenant, ip, mac, now),
            Event::NeighborMiss { tenant, ip } => {
                let known = self.dynamic.tenant_neighbors.contains_key(&(tenant, ip));
                if usize::from(tenant) < self.per_tenant.len() && !known {
                    self.misses.entry((tenant, ip)).or_insert((None, 0));
                }
            }
        }
    }

    /// A router's neighbour answered or asked: kept unless it claims a known
    /// endpoint's address (those are installed, not learned) or the tenant has as many
    /// neighbours as it may have MACs.
    fn tenant_neighbor(&mut self, tenant: TenantIdx, ip: Ipv4Addr, mac: Mac, now: Instant) {
        let t = usize::from(tenant);
        if t >= self.per_tenant.len() {
            return;
        }
        let plan = &self.config.switching;
        if plan
            .endpoints
            .iter()
            .any(|e| e.tenant == t && e.ip == Some(ip))
        {
            return;
        }
        self.misses.remove(&(tenant, ip));
        match self.dynamic.tenant_neighbors.get_mut(&(tenant, ip)) {
            Some(entry) => {
                if entry.0 != mac {
                    entry.0 = mac;
                    self.dirty = true;
                }
                entry.1 = now;
            }
            None => {
                let count = self
                    .dynamic
                    .tenant_neighbors
                    .keys()
                    .filter(|(x, _)| *x == tenant)
                    .count();
                if count as u32 >= plan.tenants[t].max_macs {
                    self.stats.learn_refused += 1;
                    return;
                }
                tracing::debug!(tenant = plan.tenants[t].id, %ip, mac = %fmt_mac(&mac), "router neighbour");
                self.dynamic
                    .tenant_neighbors
                    .insert((tenant, ip), (mac, now));
                self.dirty = true;
            }
        }
    }

    /// Sends each router's ARP requests for neighbours frames wait for: at once, then
    /// every second, [`ROUTER_ARP_TRIES`] times.
    fn ask_router_neighbors(&mut self, now: Instant, pool: &Mempool) {
        if self.misses.is_empty() {
            return;
        }
        let mut frames = Vec::new();
        let gateway = &self.config.gateway;
        self.misses.retain(|&(tenant, ip), (asked, tries)| {
            if asked.is_some_and(|t| now.duration_since(t) < ARP_RETRY) {
                return true;
            }
            if *tries >= ROUTER_ARP_TRIES {
                return false;
            }
            let Some(Some(router)) = gateway.routers.get(usize::from(tenant)) else {
                return false;
            };
            let Some(&(from, _)) = router
                .interfaces
                .iter()
                .find(|&&(gw, len)| {
                    let m = dataplane::table::routing::mask(len);
                    u32::from(gw) & m == u32::from(ip) & m
                })
                .or(router.interfaces.first())
            else {
                return false;
            };
            frames.push(arp_request(router.mac, from, ip));
            *asked = Some(now);
            *tries += 1;
            true
        });
        let sent = self.inject_as_router(pool, &frames);
        self.stats.router_arp_sent += sent;
    }

    /// Announces each gateway placed on this host with a gratuitous ARP per address,
    /// so containers and switches that knew the router MAC elsewhere learn where it is.
    fn announce(&mut self, pool: &Mempool) {
        let gateway = &self.config.gateway;
        let mut frames = Vec::new();
        let mut ids = Vec::new();
        for (t, router) in gateway.routers.iter().enumerate() {
            let Some(router) = router else {
                continue;
            };
            let id = self.config.switching.tenants[t].id;
            if router.placement != crate::config::gateway::Placement::Here
                || self.announced.contains(&id)
            {
                continue;
            }
            for &(ip, _) in &router.interfaces {
                frames.push(arp_request(router.mac, ip, ip));
            }
            ids.push(id);
        }
        if frames.is_empty() {
            return;
        }
        let sent = self.inject_as_router(pool, &frames);
        if sent == frames.len() as u64 {
            self.announced.extend(ids);
        }
        self.stats.garp_sent += sent;
    }

    /// Hands frames sourced from a router MAC to the worker that floods them in the
    /// router's tenant; returns how many went.
    fn inject_as_router(&mut self, pool: &Mempool, frames: &[Vec<u8>]) -> u64 {
        let Some(injector) = self.router_injector.as_mut() else {
            return 0;
        };
        let mut sent = 0;
        for frame in frames {
            let Some(mut mbuf) = pool.alloc() else {
                break;
            };
            if !mbuf.set_data(frame) {
                continue;
            }
            let mut batch = MbufBatch::new();
            if batch.push(mbuf).is_ok() && injector.enqueue_burst(&mut batch) == 1 {
                sent += 1;
            }
        }
        sent
    }

    fn learn(&mut self, tenant: TenantIdx, mac: Mac, location: Location, now: Instant) {
        let t = usize::from(tenant);
        if t >= self.per_tenant.len() || self.statics.contains(&(tenant, mac)) {
            return;
        }
        match self.dynamic.learned.get_mut(&(tenant, mac)) {
            Some(entry) => {
                if entry.location != location {
                    entry.location = location;
                    self.dirty = true;
                }
                entry.seen = now;
            }
            None => {
                let cap = self.config.switching.tenants[t].max_macs;
                if self.per_tenant[t] >= cap {
                    self.stats.learn_refused += 1;
                    return;
                }
                self.per_tenant[t] += 1;
                self.dynamic.learned.insert(
                    (tenant, mac),
                    Learned {
                        location,
                        seen: now,
                    },
                );
                self.dirty = true;
            }
        }
        self.stats.learned += 1;
    }

    fn age(&mut self, now: Instant) {
        let aging = self.config.switching.fdb_aging;
        let per_tenant = &mut self.per_tenant;
        let before = self.dynamic.learned.len();
        self.dynamic.learned.retain(|&(tenant, _), entry| {
            let keep = now.duration_since(entry.seen) < aging;
            if !keep {
                per_tenant[usize::from(tenant)] -= 1;
            }
            keep
        });
        let neighbors = self.dynamic.tenant_neighbors.len();
        self.dynamic
            .tenant_neighbors
            .retain(|_, (_, seen)| now.duration_since(*seen) < aging);
        if self.dynamic.tenant_neighbors.len() != neighbors {
            self.dirty = true;
        }
        let aged = before - self.dynamic.learned.len();
        if aged > 0 {
            self.stats.aged += aged as u64;
            self.dirty = true;
        }
    }

    /// Asks for every tunnel next hop without a MAC (every second), and refreshes the
    /// known ones now and then.
    fn resolve(&mut self, now: Instant, pool: &Mempool) {
        let Some(up) = compile::underlay(&self.config, &self.ports) else {
            return;
        };
        if self
            .last_arp
            .is_some_and(|t| now.duration_since(t) < ARP_RETRY)
        {
            return;
        }
        self.last_arp = Some(now);
        let refresh = now.duration_since(self.last_refresh) >= ARP_REFRESH;
        if refresh {
            self.last_refresh = now;
        }
        let plan = &self.config.switching;
        let mut targets: Vec<Ipv4Addr> = Vec::new();
        // The way out is resolved whether or not a gateway runs here now: one that moves
        // here must not lose its first packets to an unresolved next hop.
        if let (Some(hop), None) = (plan.underlay_gateway, plan.underlay_gateway_mac) {
            if !self.dynamic.neighbors.contains_key(&hop) || refresh {
                targets.push(hop);
            }
        }
        for host in compile::tunnel_hosts(plan) {
            let hop = compile::next_hop(plan, host);
            let static_mac = hop == plan.hosts[host].ip && plan.hosts[host].mac.is_some();
            let known = self.dynamic.neighbors.contains_key(&hop);
            if !static_mac && (!known || refresh) && !targets.contains(&hop) {
                targets.push(hop);
            }
        }
        let Some(injector) = self.injector.as_mut() else {
            return;
        };
        for target in targets {
            let Some(mut mbuf) = pool.alloc() else {
                return;
            };
            if !mbuf.set_data(&arp_request(up.mac, up.ip, target)) {
                continue;
            }
            let mut batch = MbufBatch::new();
            if batch.push(mbuf).is_ok() && injector.enqueue_burst(&mut batch) == 1 {
                self.stats.arp_sent += 1;
            }
        }
    }
}

/// A broadcast ARP request from (`mac`, `ip`) for `target`, padded to 60 bytes.
pub fn arp_request(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 60];
    EthernetRepr {
        src_addr: mac,
        dst_addr: ethernet::BROADCAST,
        ethertype: EtherType::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    ArpRepr {
        operation: ArpOperation::Request,
        sender_hardware_addr: mac,
        sender_protocol_addr: ip,
        target_hardware_addr: [0; 6],
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(
        &mut frame[ethernet::HEADER_LEN..ethernet::HEADER_LEN + arp::HEADER_LEN],
    ));
    frame
}

/// `02:00:00:00:0a:01`.
pub fn fmt_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
[switch]
fdb_aging_s = 60

[[tenant]]
name = "red"
id = 100
max_macs = 2

[[port]]
name = "c1"
backend = "ring"
role = "access"
tenant = "red"

[[port]]
name = "c2"
backend = "ring"
role = "access"
tenant = "red"

[[endpoint]]
tenant = "red"
mac = "02:00:00:00:0a:01"
port = "c1"
"#;

    fn controller() -> (Controller, Arc<EventQueue>, TablePublisher) {
        let config = Arc::new(Config::parse(CONFIG, |_| None).unwrap().validate().unwrap());
        let ports = vec![
            PortInfo {
                id: 0,
                mac: [2, 0, 0, 0, 0, 1],
            },
            PortInfo {
                id: 1,
                mac: [2, 0, 0, 0, 0, 2],
            },
        ];
        let queue = Arc::new(EventQueue::new(64));
        let publisher = TablePublisher::new(compile::compile(&config, &ports, &Dynamic::default()));
        let c = Controller::new(
            config,
            ports,
            publisher.clone(),
            vec![Arc::clone(&queue)],
            None,
            None,
        );
        (c, queue, publisher)
    }

    fn learn(queue: &EventQueue, last: u8, port: u16) {
        queue
            .push(Event::Learn {
                tenant: 0,
                mac: [2, 0, 0, 0, 0x0b, last],
                location: Location::Port(port),
            })
            .unwrap();
    }

    #[test]
    fn learning_respects_the_tenant_cap_and_reaches_the_tables() {
        let (mut c, queue, publisher) = controller();
        let version = publisher.version();
        for last in 1..=3 {
            learn(&queue, last, 1);
        }
        c.absorb(Instant::now());
        c.publish_if_changed();
        assert_eq!(c.learned(), 2);
        assert_eq!(
            c.stats().learn_refused,
            1,
            "a tenant cannot exhaust the table"
        );
        assert!(
            publisher.version() > version,
            "a new snapshot was published"
        );
        let tables = publisher.current();
        let entry = tables
            .lookup(0, &[2, 0, 0, 0, 0x0b, 1])
            .expect("learned MAC in the tables");
        assert_eq!(entry.location, Location::Port(1));
        assert!(!entry.is_static);
        assert!(tables.lookup(0, &[2, 0, 0, 0, 0x0b, 3]).is_none());
    }

    #[test]
    fn static_endpoints_are_not_relearned_and_moves_are_followed() {
        let (mut c, queue, publisher) = controller();
        queue
            .push(Event::Learn {
                tenant: 0,
                mac: [2, 0, 0, 0, 0x0a, 1],
                location: Location::Port(1),
            })
            .unwrap();
        learn(&queue, 7, 0);
        c.absorb(Instant::now());
        learn(&queue, 7, 1);
        c.absorb(Instant::now());
        c.publish_if_changed();
        let tables = publisher.current();
        let endpoint = tables.lookup(0, &[2, 0, 0, 0, 0x0a, 1]).unwrap();
        assert!(endpoint.is_static && endpoint.location == Location::Port(0));
        assert_eq!(
            tables.lookup(0, &[2, 0, 0, 0, 0x0b, 7]).unwrap().location,
            Location::Port(1)
        );
    }

    #[test]
    fn unseen_macs_age_out_and_free_the_cap() {
        let (mut c, queue, _publisher) = controller();
        let start = Instant::now();
        learn(&queue, 1, 1);
        learn(&queue, 2, 1);
        c.absorb(start);
        assert_eq!(c.learned(), 2);
        c.absorb(start + Duration::from_secs(61));
        assert_eq!(c.learned(), 0);
        assert_eq!(c.stats().aged, 2);
        learn(&queue, 3, 1);
        c.absorb(start + Duration::from_secs(62));
        assert_eq!(c.learned(), 1, "the cap counts only live MACs");
    }

    #[test]
    fn arp_request_is_well_formed() {
        let frame = arp_request(
            [2, 0, 0, 0, 0x0c, 1],
            Ipv4Addr::new(192, 168, 77, 1),
            Ipv4Addr::new(192, 168, 77, 2),
        );
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "request");
        assert_eq!(&frame[38..42], &[192, 168, 77, 2], "target");
    }
}
