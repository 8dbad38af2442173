//! The slow path's other end: drains the workers' event queues, keeps the learned MACs
//! (with per-tenant caps and aging) and the underlay neighbours, resolves tunnel next
//! hops by ARP, and publishes a new snapshot when anything changed.

use hashbrown::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{MbufBatch, Mempool, RingProducer};
use dataplane::packet::arp;
use dataplane::packet::{Mac, MacText};
use dataplane::pipeline::events::{Event, EventQueue};
use dataplane::table::edit::TableEdit;
use dataplane::table::publish::{Spare, TablePublisher};
use dataplane::table::{Design, HostIdx, Location, TenantIdx};

use crate::compile::{self, Dynamic, Ids, Learned, PortInfo};
use crate::config::gateway::Placement;
use crate::config::switching::{RolePlan, TenantPlan};
use crate::config::{items, Validated};
use crate::slots::Slots;

mod touched;
mod views;

/// How often unresolved next hops are asked for again.
const ARP_RETRY: Duration = Duration::from_secs(1);
/// How often resolved next hops are refreshed.
const ARP_REFRESH: Duration = Duration::from_secs(30);
/// How often learned MACs are aged.
const AGING_PERIOD: Duration = Duration::from_secs(1);
/// How long after asking for a next hop's MAC a reply counts as its answer.
const ARP_ANSWER_WINDOW: Duration = Duration::from_secs(3);
/// The least time between two changes of a resolved next hop's MAC: a station on the
/// underlay that races the real one moves a tunnel at most this often (and is logged).
const NEIGHBOR_MOVE_LOCK: Duration = Duration::from_secs(10);
/// A next hop that answered none of our requests for this long is forgotten.
const NEIGHBOR_STALE: Duration = Duration::from_secs(3 * 30 + 5);

/// Counters of the control side of learning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ControlStats {
    /// Learn events applied.
    pub learned: u64,
    /// Learn events refused because the tenant reached its MAC cap.
    pub learn_refused: u64,
    /// Learn events refused because their port, host or tenant is gone (or the port
    /// now serves another tenant): queued before a change, applied after it.
    pub learn_stale: u64,
    /// Learned MACs aged out.
    pub aged: u64,
    /// Snapshots published.
    pub published: u64,
    /// Of those, snapshots made by editing the spare copy in place (learned MACs only
    /// changed) instead of compiling.
    pub published_edited: u64,
    /// ARP requests sent for next hops.
    pub arp_sent: u64,
    /// ARP requests the tenants' routers sent for their neighbours.
    pub router_arp_sent: u64,
    /// Gratuitous ARPs sent when a gateway was placed on this host.
    pub garp_sent: u64,
    /// Underlay ARP replies not taken: nobody asked (or not lately), a second answer
    /// to one request disagreed, or the next hop moved again too soon.
    pub arp_refused: u64,
}

/// What this host asked of an underlay next hop, and what it heard.
#[derive(Debug, Clone)]
struct Asked {
    /// When the request went out.
    at: Instant,
    /// The distinct MACs that answered it.
    answers: Vec<Mac>,
    /// Whether the first answer was taken at once (the next hop was unresolved).
    installed: bool,
}

/// Distinct answers to one request kept (a flood of forged ones counts as refused).
const MAX_ANSWERS: usize = 4;

/// A resolved underlay next hop's history.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    /// When its MAC last changed (or was first learned).
    changed: Instant,
    /// When it last answered.
    confirmed: Instant,
}

/// How many times a router asks for a neighbour before giving up (until the next miss).
const ROUTER_ARP_TRIES: u32 = 3;

/// Tenant slots a host can give out (the next value means "no tenant" in the tables).
const TENANT_SLOTS: u32 = dataplane::table::NO_TENANT;

/// Which gateways may wait for their announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Announce {
    /// None.
    Nothing,
    /// Any: look at every tenant.
    All,
    /// These tenants' (by slot).
    Tenants(Vec<TenantIdx>),
}

impl Announce {
    /// Also the gateway of `slot`.
    fn add(&mut self, slot: TenantIdx) {
        match self {
            Announce::All => {}
            Announce::Tenants(slots) if slots.contains(&slot) => {}
            Announce::Tenants(slots) => slots.push(slot),
            Announce::Nothing => *self = Announce::Tenants(vec![slot]),
        }
    }
}

/// The control plane's view of the running switch.
pub struct Controller {
    config: Arc<Validated>,
    /// Parallel to the config's ports; `None` while a port's device is down.
    ports: Vec<Option<PortInfo>>,
    tenant_slots: Slots<(u32, String)>,
    host_slots: Slots<String>,
    ids: Ids,
    /// Plan position of each tenant slot in use.
    tenant_at: PositionsBySlot,
    /// Slot of each tenant in use, by name.
    named: HashMap<String, TenantIdx>,
    /// Plan position of each host slot in use.
    host_at: HashMap<HostIdx, usize>,
    /// The tenants each port id carries (one for an access port, a trunk's VLANs).
    port_tenants: HashMap<u16, Vec<TenantIdx>>,
    dynamic: Dynamic,
    statics: HashSet<(TenantIdx, Mac)>,
    per_tenant: HashMap<TenantIdx, u32>,
    publisher: TablePublisher,
    queues: Vec<Arc<EventQueue>>,
    injector: Option<RingProducer>,
    router_injector: Option<RingProducer>,
    /// Router neighbours being asked for: (tenant, IP) → (last asked, tries).
    misses: HashMap<(TenantIdx, Ipv4Addr), (Option<Instant>, u32)>,
    /// Ids of the tenants whose gateway was announced here (gratuitous ARP).
    announced: HashSet<u32>,
    /// The gateways here that may not be announced yet, looked for at the next step
    /// (not at every step: that would cost a look at every tenant each time).
    to_announce: Announce,
    /// Underlay next hops asked for.
    asked: HashMap<Ipv4Addr, Asked>,
    /// Underlay next hops resolved.
    resolved: HashMap<Ipv4Addr, Resolved>,
    /// Something changed that needs the tables compiled whole.
    dirty: bool,
    /// Learned MACs changed since the last publish, made in place on the spare.
    edits: Vec<TableEdit>,
    spare: Spare,
    last_aging: Instant,
    last_arp: Option<Instant>,
    last_refresh: Instant,
    stats: ControlStats,
}

/// What a tenant is, for its slot: deleted and created again under another name or
/// id, it is another tenant and gets another slot.
fn tenant_key(t: &TenantPlan) -> (u32, String) {
    (t.id, t.name.clone())
}

/// The plan position of each tenant slot in use, in an array by slot (slots are small
/// numbers): removing a tenant moves every later one a position, which rewrites
/// entries here in place.
#[derive(Debug, Default)]
pub(crate) struct PositionsBySlot(Vec<Option<usize>>);

impl PositionsBySlot {
    pub(crate) fn get(&self, slot: &TenantIdx) -> Option<&usize> {
        self.0.get(*slot as usize)?.as_ref()
    }

    pub(crate) fn contains_key(&self, slot: &TenantIdx) -> bool {
        self.get(slot).is_some()
    }

    pub(crate) fn insert(&mut self, slot: TenantIdx, position: usize) {
        let at = slot as usize;
        if at >= self.0.len() {
            self.0.resize(at + 1, None);
        }
        self.0[at] = Some(position);
    }

    pub(crate) fn remove(&mut self, slot: &TenantIdx) {
        if let Some(entry) = self.0.get_mut(*slot as usize) {
            *entry = None;
        }
    }
}

impl FromIterator<(TenantIdx, usize)> for PositionsBySlot {
    fn from_iter<I: IntoIterator<Item = (TenantIdx, usize)>>(pairs: I) -> Self {
        let mut positions = Self::default();
        for (slot, position) in pairs {
            positions.insert(slot, position);
        }
        positions
    }
}

/// The same positions, however far each array reaches.
impl PartialEq for PositionsBySlot {
    fn eq(&self, other: &Self) -> bool {
        let len = self.0.len().max(other.0.len());
        (0..len).all(|at| self.0.get(at).copied().flatten() == other.0.get(at).copied().flatten())
    }
}

impl Controller {
    /// A controller publishing to `publisher` the tables of `config` over `ports`
    /// (parallel to the config's ports, `None` where a device is down); it publishes
    /// the first tables at once.
    pub fn new(
        config: Arc<Validated>,
        ports: Vec<Option<PortInfo>>,
        publisher: TablePublisher,
        queues: Vec<Arc<EventQueue>>,
        injector: Option<RingProducer>,
        router_injector: Option<RingProducer>,
    ) -> Self {
        let now = Instant::now();
        let mut controller = Self {
            config: Arc::clone(&config),
            ports: Vec::new(),
            tenant_slots: Slots::new(TENANT_SLOTS),
            host_slots: Slots::new(u32::from(HostIdx::MAX)),
            ids: Ids::default(),
            tenant_at: PositionsBySlot::default(),
            named: HashMap::new(),
            host_at: HashMap::new(),
            port_tenants: HashMap::new(),
            dynamic: Dynamic::default(),
            statics: HashSet::new(),
            per_tenant: HashMap::new(),
            publisher,
            queues,
            injector,
            router_injector,
            misses: HashMap::new(),
            announced: HashSet::new(),
            to_announce: Announce::All,
            asked: HashMap::new(),
            resolved: HashMap::new(),
            dirty: false,
            edits: Vec::new(),
            spare: Spare::default(),
            last_aging: now,
            last_arp: None,
            last_refresh: now,
            stats: ControlStats::default(),
        };
        controller.take(config, ports);
        let tables = controller.compile();
        controller
            .publisher
            .publish_whole(tables, &mut controller.spare);
        controller
    }

    /// Switches to a changed configuration: every tenant and host keeps its slot,
    /// newcomers get free ones. What the change took away goes at once, not at aging:
    /// learned MACs and router neighbours of tenants that left, MACs learned on ports
    /// that are gone or now serve other tenants, or behind hosts that left; workers
    /// drop their SNAT sessions and held frames of it when they take the new tables.
    /// A new snapshot is published at the next step.
    pub fn reconfigure(&mut self, config: Arc<Validated>, ports: Vec<Option<PortInfo>>) {
        let gateways_before = self.gateways_here();
        let ports_before: HashSet<u16> = self.ports.iter().flatten().map(|p| p.id).collect();
        let retired = self.take(config, ports);
        let ports_now: HashSet<u16> = self.ports.iter().flatten().map(|p| p.id).collect();
        let port_gone = ports_before.difference(&ports_now).next().is_some();
        let gateway_gone = gateways_before
            .difference(&self.gateways_here())
            .next()
            .is_some();
        let forgot = !self.drop_disallowed_learned().is_empty();
        let tenant_at = &self.tenant_at;
        self.dynamic
            .tenant_neighbors
            .retain(|(tenant, _), _| tenant_at.contains_key(tenant));
        self.misses.clear();
        // A gateway that moved away is announced again when it comes back.
        let here: HashSet<u32> = self
            .config
            .gateway
            .routers
            .iter()
            .zip(&self.config.switching.tenants)
            .filter(|(r, _)| matches!(r, Some(r) if r.placement == Placement::Here))
            .map(|(_, t)| t.id)
            .collect();
        self.announced.retain(|id| here.contains(id));
        self.to_announce = Announce::All;
        if retired || port_gone || gateway_gone || forgot {
            self.dynamic.retired += 1;
        }
        // Next hops may have changed with the hosts: resolve now, not in a second.
        self.last_arp = None;
        self.dirty = true;
    }

    /// Takes `config` and `ports` and gives every tenant and host its slot; true when
    /// a tenant or host left (its slot retires).
    fn take(&mut self, config: Arc<Validated>, ports: Vec<Option<PortInfo>>) -> bool {
        let plan = &config.switching;
        // The first tables without what leaves carry the next version.
        let version = self.publisher.version() + 1;
        let keys: Vec<(u32, String)> = plan.tenants.iter().map(|t| tenant_key(t)).collect();
        let (tenants, retired_tenants) = self.tenant_slots.assign(&keys, version);
        for (t, slot) in plan.tenants.iter().zip(&tenants) {
            if slot.is_none() {
                tracing::error!(tenant = %t.name, "no tenant slot left on this host; the tenant is left out of the tables");
            }
        }
        let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
        let (hosts, retired_hosts) = self.host_slots.assign(&names, version);
        self.ids = Ids {
            tenants,
            hosts: hosts
                .into_iter()
                .map(|h| {
                    h.and_then(|h| HostIdx::try_from(h).ok())
                        .unwrap_or(HostIdx::MAX)
                })
                .collect(),
        };
        self.tenant_at = self
            .ids
            .tenants
            .iter()
            .enumerate()
            .filter_map(|(t, slot)| Some(((*slot)?, t)))
            .collect();
        self.named = plan
            .tenants
            .iter()
            .zip(&self.ids.tenants)
            .filter_map(|(t, slot)| Some((t.name.clone(), (*slot)?)))
            .collect();
        self.host_at = self
            .ids
            .hosts
            .iter()
            .enumerate()
            .map(|(h, &slot)| (slot, h))
            .collect();
        self.statics = items(&plan.endpoints)
            .filter_map(|e| Some((self.ids.tenant(e.tenant)?, e.mac)))
            .collect();
        self.ports = ports;
        self.config = config;
        self.index_ports();
        !retired_tenants.is_empty() || !retired_hosts.is_empty()
    }

    /// Which tenants each started port carries now.
    fn index_ports(&mut self) {
        self.port_tenants = HashMap::new();
        let roles = &self.config.switching.roles;
        for (role, port) in roles.iter().zip(&self.ports) {
            let Some(port) = port else {
                continue;
            };
            let carried: Vec<TenantIdx> = match role {
                RolePlan::Access { tenant, .. } => self.ids.tenant(*tenant).into_iter().collect(),
                RolePlan::Trunk(tenants) => {
                    tenants.iter().filter_map(|&t| self.ids.tenant(t)).collect()
                }
                RolePlan::None | RolePlan::Uplink(_) => Vec::new(),
            };
            self.port_tenants.insert(port.id, carried);
        }
    }

    /// Forgets the learned MACs the configuration no longer allows (their tenant or
    /// port gone, the port serving another tenant, the MAC now an endpoint's, the
    /// tenant over its cap) and counts the rest per tenant; the forgotten ones.
    fn drop_disallowed_learned(&mut self) -> Vec<(TenantIdx, Mac)> {
        let mut per_tenant: HashMap<TenantIdx, u32> = HashMap::new();
        let mut forgotten = Vec::new();
        let mut learned = std::mem::take(&mut self.dynamic.learned);
        learned.retain(|&(tenant, mac), entry| {
            let allowed = self.may_learn(tenant, entry.location)
                && !self.statics.contains(&(tenant, mac))
                && {
                    let count = per_tenant.entry(tenant).or_default();
                    *count += 1;
                    *count <= self.max_macs(tenant)
                };
            if !allowed {
                forgotten.push((tenant, mac));
            }
            allowed
        });
        self.dynamic.learned = learned;
        self.per_tenant = per_tenant;
        forgotten
    }

    /// The gateways running here, with their SNAT addresses.
    fn gateways_here(&self) -> HashSet<(TenantIdx, Option<Ipv4Addr>)> {
        self.config
            .gateway
            .routers
            .iter()
            .enumerate()
            .filter_map(|(t, r)| match r {
                Some(r) if r.placement == Placement::Here => Some((self.ids.tenant(t)?, r.snat_ip)),
                _ => None,
            })
            .collect()
    }

    /// Whether `tenant` (a slot) may have a MAC at `location` now: a tenant in use, on
    /// a port that carries it or behind a host that shares it. Learn events queued
    /// before a change are checked again here, so none brings back what it removed.
    fn may_learn(&self, tenant: TenantIdx, location: Location) -> bool {
        let Some(&t) = self.tenant_at.get(&tenant) else {
            return false;
        };
        match location {
            Location::Port(port) => self
                .port_tenants
                .get(&port)
                .is_some_and(|carried| carried.contains(&tenant)),
            Location::Host(host) => {
                let plan = &self.config.switching;
                self.host_at.get(&host).is_some_and(|&h| {
                    plan.design == Design::Shared || plan.tenants[t].hosts.contains(&h)
                })
            }
            // The router's MAC is installed, never learned.
            Location::Router => false,
        }
    }

    /// The MAC cap of a tenant (a slot in use).
    fn max_macs(&self, tenant: TenantIdx) -> u32 {
        self.tenant_at
            .get(&tenant)
            .map_or(0, |&t| self.config.switching.tenants[t].max_macs)
    }

    /// Where each tenant and host sits in the tables now.
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// Starts (`Some((port ids, filter))`) or stops capturing; takes effect with the
    /// next snapshot.
    pub fn set_capture(
        &mut self,
        capture: Option<(Vec<u16>, dataplane::pipeline::capture::CaptureFilter)>,
    ) {
        if self.dynamic.capture != capture {
            self.dynamic.capture = capture;
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
        compile::compile(&self.config, &self.ports, &self.ids, &self.dynamic)
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
        self.settle_next_hops(now);
        self.resolve(now, pool);
        self.publish_if_changed();
        self.announce(pool);
        self.ask_router_neighbors(now, pool);
    }

    /// Applies the workers' events and ages learned MACs; frees the slots every
    /// worker is done with. Also the barrier after a port's detach: what the workers
    /// queued about it until they let go is drained (and refused) here.
    pub fn absorb(&mut self, now: Instant) {
        // Read before draining: the events a worker queued before it moved past a
        // version are in the queues by the time it says so.
        let oldest = self.publisher.oldest_in_use();
        for i in 0..self.queues.len() {
            while let Some(event) = self.queues[i].pop() {
                self.apply(event, now);
            }
        }
        self.tenant_slots.release(oldest);
        self.host_slots.release(oldest);
        if now.duration_since(self.last_aging) >= AGING_PERIOD {
            self.age(now);
            self.last_aging = now;
        }
    }

    /// Publishes a new snapshot if anything changed since the last one: compiled
    /// whole after a change of configuration, neighbours or ports; with only learned
    /// MACs changed, the spare copy edited (what learning costs does not grow with the
    /// tables).
    pub fn publish_if_changed(&mut self) {
        if self.dirty {
            let tables = self.compile();
            self.publisher.publish_whole(tables, &mut self.spare);
            self.edits.clear();
            self.stats.published += 1;
            self.dirty = false;
        } else if !self.edits.is_empty() {
            let edits = std::mem::take(&mut self.edits);
            self.publisher.publish_edits(edits, &mut self.spare);
            self.stats.published += 1;
            self.stats.published_edited += 1;
        }
    }

    fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::Learn {
                tenant,
                mac,
                location,
            } => self.learn(tenant, mac, location, now),
            Event::Neighbor { ip, mac } => self.underlay_reply(ip, mac, now),
            Event::TenantNeighbor { tenant, ip, mac } => self.tenant_neighbor(tenant, ip, mac, now),
            Event::NeighborMiss { tenant, ip } => {
                let known = self.dynamic.tenant_neighbors.contains_key(&(tenant, ip));
                if self.tenant_at.contains_key(&tenant) && !known {
                    self.misses.entry((tenant, ip)).or_insert((None, 0));
                }
            }
        }
    }

    /// An ARP reply on the underlay. Only an answer to this host's own request counts
    /// (anyone on the segment can send one unasked). The first answer for a next hop
    /// not yet resolved is taken at once; whether a resolved one moves is decided when
    /// the request's window closes ([`Controller::settle_next_hops`]).
    fn underlay_reply(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) {
        let Some(ask) = self
            .asked
            .get_mut(&ip)
            .filter(|a| now.duration_since(a.at) < ARP_ANSWER_WINDOW)
        else {
            self.stats.arp_refused += 1;
            tracing::debug!(%ip, mac = %MacText(mac), "unsolicited underlay ARP reply ignored");
            return;
        };
        if !ask.answers.contains(&mac) {
            if ask.answers.len() >= MAX_ANSWERS {
                self.stats.arp_refused += 1;
                return;
            }
            ask.answers.push(mac);
        }
        if !self.dynamic.neighbors.contains_key(&ip) && ask.answers.len() == 1 {
            ask.installed = true;
            tracing::info!(%ip, mac = %MacText(mac), "underlay neighbour resolved");
            self.install_next_hop(ip, mac, now);
        }
    }

    /// Takes `mac` as the next hop `ip` from `now` on; a move is locked out from then.
    fn install_next_hop(&mut self, ip: Ipv4Addr, mac: Mac, now: Instant) {
        self.dynamic.neighbors.insert(ip, mac);
        self.resolved.insert(
            ip,
            Resolved {
                changed: now,
                confirmed: now,
            },
        );
        self.dirty = true;
    }

    /// Decides on the answers to each request whose window closed. One answer, the MAC
    /// in use: confirmed. One answer, another MAC: the next hop moved (at most once per
    /// [`NEIGHBOR_MOVE_LOCK`], logged). Disagreeing answers: somebody lies; the MAC in
    /// use stays, and a MAC taken from such a window is dropped and asked again.
    fn settle_next_hops(&mut self, now: Instant) {
        let closed: Vec<(Ipv4Addr, Asked)> = self
            .asked
            .iter()
            .filter(|(_, a)| now.duration_since(a.at) >= ARP_ANSWER_WINDOW)
            .map(|(&ip, a)| (ip, a.clone()))
            .collect();
        for (ip, ask) in closed {
            self.asked.remove(&ip);
            let Some(current) = self.dynamic.neighbors.get(&ip).copied() else {
                continue;
            };
            match ask.answers.as_slice() {
                [] => {}
                [only] if *only == current => {
                    if let Some(r) = self.resolved.get_mut(&ip) {
                        r.confirmed = now;
                    }
                }
                [moved] => {
                    let changed = self.resolved.get(&ip).map_or(now, |r| r.changed);
                    if now.duration_since(changed) < NEIGHBOR_MOVE_LOCK {
                        self.stats.arp_refused += 1;
                        tracing::warn!(%ip, old = %MacText(current), new = %MacText(*moved), "underlay next hop moved again too soon; keeping it where it was");
                        continue;
                    }
                    tracing::warn!(%ip, old = %MacText(current), new = %MacText(*moved), "underlay next hop moved");
                    self.install_next_hop(ip, *moved, now);
                }
                several => {
                    self.stats.arp_refused += 1;
                    let macs: Vec<String> =
                        several.iter().map(|m| MacText(*m).to_string()).collect();
                    if ask.installed {
                        tracing::warn!(%ip, answers = ?macs, "stations disagree on a new underlay next hop; asking again");
                        self.dynamic.neighbors.remove(&ip);
                        self.resolved.remove(&ip);
                        self.dirty = true;
                    } else {
                        tracing::warn!(%ip, answers = ?macs, kept = %MacText(current), "stations disagree on an underlay next hop; keeping the one in use");
                    }
                }
            }
        }
    }

    /// The underlay next hops this host needs: toward its tunnels' peers and the way
    /// out; none with a configured MAC.
    fn wanted_next_hops(&self) -> Vec<Ipv4Addr> {
        let plan = &self.config.switching;
        let mut hops: Vec<Ipv4Addr> = Vec::new();
        // The way out is resolved whether or not a gateway runs here now: one that moves
        // here must not lose its first packets to an unresolved next hop.
        if let (Some(hop), None) = (plan.underlay_gateway, plan.underlay_gateway_mac) {
            hops.push(hop);
        }
        for host in compile::tunnel_hosts(plan) {
            let hop = compile::next_hop(plan, host);
            let static_mac = hop == plan.hosts[host].ip && plan.hosts[host].mac.is_some();
            if !static_mac && !hops.contains(&hop) {
                hops.push(hop);
            }
        }
        hops
    }

    /// The next hops to ask for now: the unresolved ones (every second), all of them
    /// now and then to refresh; forgets the ones no longer needed and those that
    /// stopped answering. Records the requests as asked.
    fn due_next_hops(&mut self, now: Instant) -> Vec<Ipv4Addr> {
        if self
            .last_arp
            .is_some_and(|t| now.duration_since(t) < ARP_RETRY)
        {
            return Vec::new();
        }
        self.last_arp = Some(now);
        let refresh = now.duration_since(self.last_refresh) >= ARP_REFRESH;
        if refresh {
            self.last_refresh = now;
        }
        let wanted = self.wanted_next_hops();
        let resolved = &self.resolved;
        let before = self.dynamic.neighbors.len();
        self.dynamic.neighbors.retain(|ip, _| {
            wanted.contains(ip)
                && resolved
                    .get(ip)
                    .is_some_and(|r| now.duration_since(r.confirmed) < NEIGHBOR_STALE)
        });
        if self.dynamic.neighbors.len() != before {
            tracing::info!(
                forgotten = before - self.dynamic.neighbors.len(),
                "underlay next hops no longer needed or no longer answering forgotten"
            );
            self.dirty = true;
        }
        let neighbors = &self.dynamic.neighbors;
        self.resolved.retain(|ip, _| neighbors.contains_key(ip));
        self.asked.retain(|ip, _| wanted.contains(ip));
        let due: Vec<Ipv4Addr> = wanted
            .into_iter()
            .filter(|hop| refresh || !self.dynamic.neighbors.contains_key(hop))
            .collect();
        for &hop in &due {
            // A request still open with answers keeps them (they are weighed together).
            let open = self.asked.get(&hop).is_some_and(|a| !a.answers.is_empty());
            if !open {
                self.asked.insert(
                    hop,
                    Asked {
                        at: now,
                        answers: Vec::new(),
                        installed: false,
                    },
                );
            }
        }
        due
    }

    /// A router's neighbour answered or asked: kept unless it claims a known
    /// endpoint's address (those are installed, not learned) or the tenant has as many
    /// neighbours as it may have MACs.
    fn tenant_neighbor(&mut self, tenant: TenantIdx, ip: Ipv4Addr, mac: Mac, now: Instant) {
        let Some(&t) = self.tenant_at.get(&tenant) else {
            return;
        };
        let plan = &self.config.switching;
        if items(&plan.endpoints).any(|e| e.tenant == t && e.ip == Some(ip)) {
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
                tracing::debug!(tenant = plan.tenants[t].id, %ip, mac = %MacText(mac), "router neighbour");
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
        let tenant_at = &self.tenant_at;
        self.misses.retain(|&(tenant, ip), (asked, tries)| {
            if asked.is_some_and(|t| now.duration_since(t) < ARP_RETRY) {
                return true;
            }
            if *tries >= ROUTER_ARP_TRIES {
                return false;
            }
            let Some(Some(router)) = tenant_at.get(&tenant).and_then(|&t| gateway.routers.get(t))
            else {
                return false;
            };
            let Some(&(from, _)) = router
                .interfaces
                .iter()
                .find(|&&(gw, len)| {
                    let m = dataplane::packet::mask(len);
                    u32::from(gw) & m == u32::from(ip) & m
                })
                .or(router.interfaces.first())
            else {
                return false;
            };
            frames.push(arp::request_frame(router.mac, from, ip));
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
        let positions: Vec<usize> = match &self.to_announce {
            Announce::Nothing => return,
            Announce::All => (0..self.config.gateway.routers.len()).collect(),
            Announce::Tenants(slots) => slots
                .iter()
                .filter_map(|slot| self.tenant_at.get(slot).copied())
                .collect(),
        };
        let gateway = &self.config.gateway;
        let mut frames = Vec::new();
        let mut ids = Vec::new();
        for t in positions {
            let Some(router) = &gateway.routers[t] else {
                continue;
            };
            let id = self.config.switching.tenants[t].id;
            if router.placement != Placement::Here || self.announced.contains(&id) {
                continue;
            }
            for &(ip, _) in &router.interfaces {
                frames.push(arp::request_frame(router.mac, ip, ip));
            }
            ids.push(id);
        }
        if frames.is_empty() {
            self.to_announce = Announce::Nothing;
            return;
        }
        let sent = self.inject_as_router(pool, &frames);
        if sent == frames.len() as u64 {
            self.announced.extend(ids);
            self.to_announce = Announce::Nothing;
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
        if !self.may_learn(tenant, location) {
            self.stats.learn_stale += 1;
            return;
        }
        if self.statics.contains(&(tenant, mac)) {
            return;
        }
        let learned = TableEdit::Learn {
            tenant,
            mac,
            location,
        };
        match self.dynamic.learned.get_mut(&(tenant, mac)) {
            Some(entry) => {
                if entry.location != location {
                    entry.location = location;
                    self.edits.push(learned);
                }
                entry.seen = now;
            }
            None => {
                let cap = self.max_macs(tenant);
                let count = self.per_tenant.entry(tenant).or_default();
                if *count >= cap {
                    self.stats.learn_refused += 1;
                    return;
                }
                *count += 1;
                self.dynamic.learned.insert(
                    (tenant, mac),
                    Learned {
                        location,
                        seen: now,
                    },
                );
                self.edits.push(learned);
            }
        }
        self.stats.learned += 1;
    }

    fn age(&mut self, now: Instant) {
        let aging = self.config.switching.fdb_aging;
        let per_tenant = &mut self.per_tenant;
        let edits = &mut self.edits;
        let before = self.dynamic.learned.len();
        self.dynamic.learned.retain(|&(tenant, mac), entry| {
            let keep = now.duration_since(entry.seen) < aging;
            if !keep {
                if let Some(count) = per_tenant.get_mut(&tenant) {
                    *count = count.saturating_sub(1);
                }
                edits.push(TableEdit::Forget { tenant, mac });
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
        self.stats.aged += aged as u64;
    }

    /// Asks for every tunnel next hop without a MAC (every second), and refreshes the
    /// known ones now and then.
    fn resolve(&mut self, now: Instant, pool: &Mempool) {
        let Some(up) = compile::underlay(&self.config, &self.ports) else {
            return;
        };
        let targets = self.due_next_hops(now);
        let Some(injector) = self.injector.as_mut() else {
            return;
        };
        for target in targets {
            let Some(mut mbuf) = pool.alloc() else {
                return;
            };
            if !mbuf.set_data(&arp::request_frame(up.mac, up.ip, target)) {
                continue;
            }
            let mut batch = MbufBatch::new();
            if batch.push(mbuf).is_ok() && injector.enqueue_burst(&mut batch) == 1 {
                self.stats.arp_sent += 1;
            }
        }
    }
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

    fn validated(text: &str) -> Arc<Validated> {
        Arc::new(Config::parse(text, |_| None).unwrap().validate().unwrap())
    }

    fn port(id: u16) -> Option<PortInfo> {
        Some(PortInfo {
            id,
            mac: [2, 0, 0, 0, 0, id as u8 + 1],
            mtu: Some(1500),
        })
    }

    /// A controller of `config` with one worker queue, and the publisher it fills.
    fn controller_of(
        config: Arc<Validated>,
        ports: Vec<Option<PortInfo>>,
    ) -> (Controller, Arc<EventQueue>, TablePublisher) {
        let queue = Arc::new(EventQueue::new(64));
        let publisher = TablePublisher::new(Default::default());
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

    fn controller() -> (Controller, Arc<EventQueue>, TablePublisher) {
        controller_of(validated(CONFIG), vec![port(0), port(1)])
    }

    /// What a worker tells the controller when `mac` of `tenant` comes in on `port`.
    fn learn_mac(queue: &EventQueue, tenant: TenantIdx, mac: Mac, port: u16) {
        queue
            .push(Event::Learn {
                tenant,
                mac,
                location: Location::Port(port),
            })
            .unwrap();
    }

    fn learn(queue: &EventQueue, last: u8, port: u16) {
        learn_mac(queue, 0, [2, 0, 0, 0, 0x0b, last], port);
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
        learn_mac(&queue, 0, [2, 0, 0, 0, 0x0a, 1], 1);
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

    mod edited {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// MAC `n` (0 is the static endpoint's) seen on port id 0 or 1.
            Learn(u8, u16),
            /// Seconds pass (aging runs every ten).
            Wait(u64),
            /// The configuration is taken again: a whole compile.
            Reconfigure,
            /// A worker starts keeping the snapshot it has (the spare may be in its
            /// hands), or lets it go.
            Hold,
            Publish,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0u8..12, 0u16..2).prop_map(|(n, p)| Step::Learn(n, p)),
                1 => (0u64..40).prop_map(Step::Wait),
                1 => Just(Step::Reconfigure),
                1 => Just(Step::Hold),
                3 => Just(Step::Publish),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever is learned, moved and aged, and whichever copy takes the edits,
            /// the tables workers get are the ones a compile builds from the same facts.
            #[test]
            fn edited_tables_are_the_compiled_ones(steps in proptest::collection::vec(step(), 1..80)) {
                let text = CONFIG.replace("max_macs = 2", "max_macs = 8");
                let (mut c, queue, publisher) = controller_of(validated(&text), vec![port(0), port(1)]);
                let mut now = Instant::now();
                let mut held = None;
                for step in steps {
                    match step {
                        Step::Learn(0, port) => learn_mac(&queue, 0, [2, 0, 0, 0, 0x0a, 1], port),
                        Step::Learn(n, port) => learn(&queue, n, port),
                        Step::Wait(s) => now += Duration::from_secs(s),
                        Step::Reconfigure => {
                            let (config, ports) = (Arc::clone(c.config()), c.ports.clone());
                            c.reconfigure(config, ports);
                        }
                        Step::Hold => {
                            held = match held {
                                Some(_) => None,
                                None => Some(publisher.reader()),
                            }
                        }
                        Step::Publish => {
                            c.absorb(now);
                            c.publish_if_changed();
                            prop_assert_eq!(&publisher.current().fdb, &c.compile().fdb);
                        }
                    }
                }
                c.absorb(now);
                c.publish_if_changed();
                prop_assert_eq!(&publisher.current().fdb, &c.compile().fdb);
                prop_assert!(c.stats().published >= c.stats().published_edited);
                drop(held);
            }
        }
    }

    #[test]
    fn learning_edits_the_spare_instead_of_compiling() {
        let text = CONFIG.replace("max_macs = 2", "max_macs = 100");
        let (mut c, queue, publisher) = controller_of(validated(&text), vec![port(0), port(1)]);
        let mut reader = publisher.reader();
        for round in 0..4u8 {
            learn(&queue, round + 1, 1);
            c.absorb(Instant::now());
            c.publish_if_changed();
            reader.refresh();
        }
        assert_eq!(c.stats().published_edited, 4, "no compile for learned MACs");
        for last in 1..=4 {
            assert!(reader
                .tables()
                .lookup(0, &[2, 0, 0, 0, 0x0b, last])
                .is_some());
        }
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

    /// Two tenants, each with an access port: `p{n}` on port id `n`.
    fn two_tenants(red_ports: &[u16], blue_ports: &[u16], tenants_first: &[&str]) -> String {
        let mut text = String::new();
        for name in tenants_first {
            let id = if *name == "red" { 100 } else { 200 };
            text += &format!("[[tenant]]\nname = \"{name}\"\nid = {id}\n\n");
        }
        for (tenant, ports) in [("red", red_ports), ("blue", blue_ports)] {
            for p in ports {
                text += &format!(
                    "[[port]]\nname = \"p{p}\"\nbackend = \"ring\"\nrole = \"access\"\ntenant = \"{tenant}\"\n\n"
                );
            }
        }
        text
    }

    fn ports_of(config: &Validated) -> Vec<Option<PortInfo>> {
        config
            .ports
            .iter()
            .map(|p| port(p.name[1..].parse().unwrap()))
            .collect()
    }

    /// Red with its port p1 and blue with p2.
    fn red_and_blue_controller() -> (Controller, Arc<EventQueue>, TablePublisher) {
        let config = validated(&two_tenants(&[1], &[2], &["red", "blue"]));
        let ports = ports_of(&config);
        controller_of(config, ports)
    }

    fn reconfigure_to(c: &mut Controller, text: &str) {
        let config = validated(text);
        let ports = ports_of(&config);
        c.reconfigure(config, ports);
    }

    fn learn_in(queue: &EventQueue, tenant: TenantIdx, last: u8, port: u16) {
        learn_mac(queue, tenant, [2, 0, 0, 0, 0xaa, last], port);
    }

    #[test]
    fn a_mac_learned_on_a_deleted_port_dies_with_it_and_never_follows_its_id() {
        let (mut c, queue, publisher) = red_and_blue_controller();
        let red = c.ids().tenant(0).unwrap();
        let blue = c.ids().tenant(1).unwrap();
        learn_in(&queue, red, 1, 1);
        c.absorb(Instant::now());
        assert_eq!(c.learned(), 1);
        // Red's port p1 goes; an event about it was still queued.
        learn_in(&queue, red, 2, 1);
        reconfigure_to(&mut c, &two_tenants(&[], &[2], &["red", "blue"]));
        assert_eq!(c.learned(), 0, "dropped at the change, not at aging");
        // Blue's new port takes the id 1 the old one had.
        reconfigure_to(&mut c, &two_tenants(&[], &[2, 1], &["red", "blue"]));
        c.absorb(Instant::now());
        c.publish_if_changed();
        assert_eq!(c.learned(), 0, "the queued event is refused");
        assert_eq!(c.stats().learn_stale, 1);
        let tables = publisher.current();
        assert!(tables.lookup(red, &[2, 0, 0, 0, 0xaa, 1]).is_none());
        assert!(tables.lookup(red, &[2, 0, 0, 0, 0xaa, 2]).is_none());
        assert_eq!(
            tables.role(1),
            &dataplane::table::PortRole::Access {
                tenant: blue,
                security: None
            }
        );
        assert!(tables.retired > 0, "workers are told to drop their state");
    }

    #[test]
    fn tenants_keep_their_slots_while_others_come_and_go() {
        let (mut c, queue, publisher) = red_and_blue_controller();
        let (red, blue) = (c.ids().tenant(0).unwrap(), c.ids().tenant(1).unwrap());
        learn_in(&queue, blue, 7, 2);
        c.absorb(Instant::now());
        // Red leaves: blue moves to the first position of the list, not of the tables.
        reconfigure_to(&mut c, &two_tenants(&[], &[2], &["blue"]));
        assert_eq!(c.ids().tenant(0), Some(blue));
        assert_eq!(c.learned(), 1, "blue's MAC stays");
        // Red comes back before every worker has moved on: a new slot.
        let _reader = publisher.reader();
        c.publish_if_changed();
        reconfigure_to(&mut c, &two_tenants(&[1], &[2], &["red", "blue"]));
        let red_again = c.ids().tenant(0).unwrap();
        assert_ne!(red_again, red, "the old slot is still retiring");
        assert_ne!(red_again, blue);
        c.publish_if_changed();
        let tables = publisher.current();
        assert!(tables.tenant(red).is_none());
        assert_eq!(tables.tenant(red_again).map(|t| t.id), Some(100));
        assert_eq!(
            tables
                .lookup(blue, &[2, 0, 0, 0, 0xaa, 7])
                .unwrap()
                .location,
            Location::Port(2)
        );
    }

    #[test]
    fn a_port_given_to_another_tenant_takes_none_of_the_old_tenants_macs() {
        let (mut c, queue, _) = red_and_blue_controller();
        let red = c.ids().tenant(0).unwrap();
        learn_in(&queue, red, 1, 1);
        c.absorb(Instant::now());
        reconfigure_to(&mut c, &two_tenants(&[2], &[1], &["red", "blue"]));
        assert_eq!(c.learned(), 0);
        learn_in(&queue, red, 1, 1);
        c.absorb(Instant::now());
        assert_eq!(c.learned(), 0, "red's MAC on what is now blue's port");
        learn_in(&queue, red, 1, 2);
        c.absorb(Instant::now());
        assert_eq!(c.learned(), 1);
    }

    const UNDERLAY: &str = r#"
[switch]
host = "a"

[[host]]
name = "a"
underlay_ip = "192.168.77.1/24"

[[host]]
name = "b"
underlay_ip = "192.168.77.2/24"

[[tenant]]
name = "red"
id = 100
hosts = ["b"]

[[port]]
name = "up"
backend = "ring"
role = "uplink"
"#;

    const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
    const REAL: Mac = [2, 0, 0, 0, 0x77, 2];
    const LIAR: Mac = [2, 0, 0, 0, 0x66, 6];

    fn underlay_controller() -> (Controller, Arc<EventQueue>, TablePublisher) {
        controller_of(validated(UNDERLAY), vec![port(0)])
    }

    /// Instants by seconds after now.
    fn clock() -> impl Fn(f64) -> Instant {
        let t0 = Instant::now();
        move |s| t0 + Duration::from_secs_f64(s)
    }

    fn reply(queue: &EventQueue, mac: Mac) {
        queue.push(Event::Neighbor { ip: PEER, mac }).unwrap();
    }

    /// The MAC the tunnel to b is built toward, in the tables `c` publishes.
    fn tunnel_mac(c: &mut Controller, publisher: &TablePublisher) -> Option<Mac> {
        c.publish_if_changed();
        let tables = publisher.current();
        let header = tables.tunnels.first()?.header?;
        Some(header.bytes[..6].try_into().unwrap())
    }

    #[test]
    fn underlay_next_hops_are_learned_only_from_answers_to_our_requests() {
        let (mut c, queue, publisher) = underlay_controller();
        let at = clock();
        reply(&queue, LIAR);
        c.absorb(at(0.0));
        assert_eq!(c.dynamic.neighbors.get(&PEER), None, "nobody asked");
        assert_eq!(c.due_next_hops(at(0.0)), [PEER]);
        reply(&queue, REAL);
        c.absorb(at(0.1));
        assert_eq!(tunnel_mac(&mut c, &publisher), Some(REAL));
        // An unasked reply, long after the request: refused.
        reply(&queue, LIAR);
        c.absorb(at(5.0));
        c.settle_next_hops(at(5.0));
        // The refresh: the liar answers first, the real host too: the tunnel stays.
        assert_eq!(c.due_next_hops(at(31.0)), [PEER]);
        reply(&queue, LIAR);
        reply(&queue, REAL);
        c.absorb(at(31.1));
        c.settle_next_hops(at(34.5));
        assert_eq!(tunnel_mac(&mut c, &publisher), Some(REAL));
        assert_eq!(c.stats().arp_refused, 3);
        // A real move (only the new MAC answers) is taken once the window closes, and a
        // second move within the lock is refused.
        assert_eq!(c.due_next_hops(at(62.0)), [PEER]);
        reply(&queue, LIAR);
        c.absorb(at(62.1));
        assert_eq!(
            tunnel_mac(&mut c, &publisher),
            Some(REAL),
            "not before the window closes"
        );
        c.settle_next_hops(at(65.1));
        assert_eq!(tunnel_mac(&mut c, &publisher), Some(LIAR));
    }

    #[test]
    fn disagreeing_first_answers_leave_the_next_hop_unresolved_and_asked_again() {
        let (mut c, queue, publisher) = underlay_controller();
        let at = clock();
        assert_eq!(c.due_next_hops(at(0.0)), [PEER]);
        reply(&queue, LIAR);
        reply(&queue, REAL);
        c.absorb(at(0.1));
        c.settle_next_hops(at(3.1));
        assert_eq!(
            tunnel_mac(&mut c, &publisher),
            None,
            "no tunnel toward a contested MAC"
        );
        assert_eq!(c.due_next_hops(at(3.2)), [PEER], "asked again");
        reply(&queue, REAL);
        c.absorb(at(3.3));
        assert_eq!(tunnel_mac(&mut c, &publisher), Some(REAL));
    }

    #[test]
    fn next_hops_that_stop_answering_or_are_no_longer_needed_are_forgotten() {
        let (mut c, queue, _publisher) = underlay_controller();
        let at = clock();
        c.due_next_hops(at(0.0));
        reply(&queue, REAL);
        c.absorb(at(0.0));
        c.settle_next_hops(at(4.0));
        for s in [31.0, 62.0, 93.0] {
            assert_eq!(c.due_next_hops(at(s)), [PEER], "refresh at {s} s");
            c.settle_next_hops(at(s + 4.0));
        }
        assert_eq!(c.dynamic.neighbors.get(&PEER), Some(&REAL), "95 s not yet");
        c.due_next_hops(at(124.0));
        assert_eq!(c.dynamic.neighbors.get(&PEER), None, "silent for over 95 s");
        // A tenant no longer on b: its next hop goes, and is not asked for.
        c.due_next_hops(at(125.0));
        reply(&queue, REAL);
        c.absorb(at(125.0));
        let alone = validated(&UNDERLAY.replace("hosts = [\"b\"]", ""));
        c.reconfigure(alone, vec![port(0)]);
        assert!(c.due_next_hops(at(130.0)).is_empty());
        assert!(c.dynamic.neighbors.is_empty());
    }
}
