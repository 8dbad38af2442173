//! A change that named its tenants costs what it touched: slots, positions, statics,
//! learned MACs and gateways are brought up to date for those tenants alone, and the
//! tables are edited ([`crate::compile::delta`]) instead of compiled. The result is the
//! one [`Controller::reconfigure`] reaches from the same configs (the tests below hold
//! the two side by side).

use std::sync::Arc;

use hashbrown::HashSet;

use dataplane::packet::Mac;
use dataplane::table::edit::TableEdit;
use dataplane::table::routing::neighbor_key;
use dataplane::table::TenantIdx;

use super::{tenant_key, Controller};
use crate::compile::delta::{self, Side, Touched};
use crate::compile::tenant::Members;
use crate::compile::{Ids, PortInfo};
use crate::config::gateway::Placement;
use crate::config::grow::{placements_moved, Positions, Shift};
use crate::config::switching::EndpointAt;
use crate::config::Validated;

/// Whether tenant `old` of `before` is tenant `new` of `after`.
fn old_tenant_is(before: &Validated, after: &Validated, old: usize, new: usize) -> bool {
    let (was, is) = (&before.switching.tenants, &after.switching.tenants);
    was.get(old)
        .zip(is.get(new))
        .is_some_and(|(a, b)| a.name == b.name && a.id == b.id)
}

impl Controller {
    /// [`Controller::reconfigure`] after a change that touched only the tenants
    /// `names` (as they were or are now) and the ports: what the change left alone is
    /// not looked at again. A config that is more than that change away is taken whole.
    /// `placements_kept`: the change is known to move no gateway (validated alone:
    /// [`crate::config::grow`]), which spares looking at every tenant after a removal.
    pub fn reconfigure_touching(
        &mut self,
        config: Arc<Validated>,
        ports: Vec<Option<PortInfo>>,
        names: &[String],
        placements_kept: bool,
    ) {
        let Some((shift, places)) = self.shift_to(&config, names, placements_kept) else {
            return self.reconfigure(config, ports);
        };
        let before = Arc::clone(&self.config);
        let ports_before = std::mem::replace(&mut self.ports, ports);
        let ids_before = self.ids.clone();
        let port_tenants_before = std::mem::take(&mut self.port_tenants);
        self.config = Arc::clone(&config);

        // Slots and positions.
        let version = self.publisher.version() + 1;
        let (old_plan, new_plan) = (&before.switching, &config.switching);
        let mut retired = false;
        for &old in shift.removed.iter().rev() {
            retired |= self
                .tenant_slots
                .retire(&tenant_key(&old_plan.tenants[old]), version)
                .is_some();
            self.ids.tenants.remove(old);
        }
        for &new in &shift.added {
            let tenant = &new_plan.tenants[new];
            let slot = self.tenant_slots.give(&tenant_key(tenant));
            if slot.is_none() {
                tracing::error!(tenant = %tenant.name, "no tenant slot left on this host; the tenant is left out of the tables");
            }
            self.ids.tenants.push(slot);
        }
        for &old in &shift.removed {
            if let Some(slot) = ids_before.tenant(old) {
                self.tenant_at.remove(&slot);
                self.named.remove(&old_plan.tenants[old].name);
            }
        }
        for &new in &shift.added {
            if let Some(slot) = self.ids.tenant(new) {
                self.named.insert(new_plan.tenants[new].name.clone(), slot);
            }
        }
        let moved_from = shift
            .removed
            .first()
            .copied()
            .unwrap_or(self.ids.tenants.len());
        let moved_from = shift
            .added
            .first()
            .map_or(moved_from, |&a| moved_from.min(a));
        for (t, slot) in self.ids.tenants.iter().enumerate().skip(moved_from) {
            if let Some(slot) = slot {
                self.tenant_at.insert(*slot, t);
            }
        }
        self.index_ports();

        // What the change touched, as positions before and after it.
        let mut touched: Vec<Touched> = Vec::new();
        let touch_before = |old: usize, touched: &mut Vec<Touched>| {
            let t = Touched {
                before: Some(old),
                after: shift.after(old),
            };
            if !touched.contains(&t) {
                touched.push(t);
            }
        };
        for &old in places.iter().filter_map(|(was, _)| was.as_ref()) {
            touch_before(old, &mut touched);
        }
        let touch_after = |new: usize, touched: &mut Vec<Touched>| {
            let t = Touched {
                before: shift.before(new),
                after: Some(new),
            };
            if !touched.contains(&t) {
                touched.push(t);
            }
        };
        for &new in &shift.added {
            touch_after(new, &mut touched);
        }
        // Ports whose device or carried tenants differ (came, went or changed role).
        let info = |ports: &[Option<PortInfo>], id: u16| {
            ports.iter().flatten().find(|p| p.id == id).copied()
        };
        let mut changed_ports: Vec<u16> = ports_before
            .iter()
            .chain(&self.ports)
            .flatten()
            .map(|p| p.id)
            .collect();
        changed_ports.sort_unstable();
        changed_ports.dedup();
        changed_ports.retain(|&id| {
            info(&ports_before, id) != info(&self.ports, id)
                || port_tenants_before.get(&id) != self.port_tenants.get(&id)
        });
        let ports_changed = !changed_ports.is_empty();
        for &id in &changed_ports {
            let carried = port_tenants_before
                .get(&id)
                .into_iter()
                .chain(self.port_tenants.get(&id));
            // A tenant the port carried that is gone was touched by name.
            for slot in carried.flatten() {
                if let Some(&new) = self.tenant_at.get(slot) {
                    touch_after(new, &mut touched);
                }
            }
        }
        if ports_changed {
            let at_changed = |ports: &[Option<PortInfo>], at: EndpointAt| {
                matches!(at, EndpointAt::Port(p)
                    if ports.get(p).copied().flatten().is_some_and(|p| changed_ports.contains(&p.id)))
            };
            for e in &old_plan.endpoints {
                if at_changed(&ports_before, e.at) {
                    touch_before(e.tenant, &mut touched);
                }
            }
            for e in &new_plan.endpoints {
                if at_changed(&self.ports, e.at) {
                    touch_after(e.tenant, &mut touched);
                }
            }
        }
        // A router's peers route to it: they are touched with it.
        for t in touched.clone() {
            let peers_before = t
                .before
                .and_then(|old| before.gateway.routers[old].as_ref());
            for &peer in peers_before.iter().flat_map(|r| &r.peers) {
                touch_before(peer, &mut touched);
            }
            let peers_after = t.after.and_then(|new| config.gateway.routers[new].as_ref());
            for &peer in peers_after.iter().flat_map(|r| &r.peers) {
                touch_after(peer, &mut touched);
            }
        }

        // What belongs to the touched tenants, gathered once a side.
        let positions = |at: fn(&Touched) -> Option<usize>| -> Vec<usize> {
            touched.iter().filter_map(at).collect()
        };
        let (was, is) = (positions(|t| t.before), positions(|t| t.after));
        let members_before = Members::of(&before, &ports_before, |t| was.contains(&t));
        let members_after = Members::of(&config, &self.ports, |t| is.contains(&t));

        // Statics, learned MACs and router neighbours of what was touched.
        let statics = |config: &Validated, members: &Members, ids: &Ids, t: usize| {
            let Some(slot) = ids.tenant(t) else {
                return Vec::new();
            };
            let endpoints = &config.switching.endpoints;
            (members.endpoints_of(t).iter())
                .map(|&e| (slot, endpoints[e].mac))
                .collect::<Vec<(TenantIdx, Mac)>>()
        };
        let mut new_statics = Vec::new();
        for t in &touched {
            for old in t
                .before
                .map(|old| statics(&before, &members_before, &ids_before, old))
                .into_iter()
                .flatten()
            {
                self.statics.remove(&old);
            }
            new_statics.extend(
                t.after
                    .map(|new| statics(&config, &members_after, &self.ids, new))
                    .into_iter()
                    .flatten(),
            );
        }
        self.statics.extend(new_statics.iter().copied());
        let mut edits = Vec::new();
        // A tenant on fewer hosts keeps no MAC learned behind the others.
        let hosts_changed = touched.iter().any(|t| match (t.before, t.after) {
            (Some(old), Some(new)) => old_plan.tenants[old].hosts != new_plan.tenants[new].hosts,
            _ => false,
        });
        let forgotten = if shift.removed.is_empty() && !ports_changed && !hosts_changed {
            // Nothing left that a MAC was learned on: only a new endpoint's MAC goes.
            let mut forgotten = Vec::new();
            for key in &new_statics {
                if self.dynamic.learned.remove(key).is_some() {
                    if let Some(count) = self.per_tenant.get_mut(&key.0) {
                        *count = count.saturating_sub(1);
                    }
                    forgotten.push(*key);
                }
            }
            forgotten
        } else {
            self.drop_disallowed_learned()
        };
        edits.extend(
            forgotten
                .iter()
                .map(|&(tenant, mac)| TableEdit::Forget { tenant, mac }),
        );
        if !shift.removed.is_empty() {
            let tenant_at = &self.tenant_at;
            self.dynamic.tenant_neighbors.retain(|&(tenant, ip), _| {
                let kept = tenant_at.contains_key(&tenant);
                if !kept {
                    edits.push(TableEdit::Neighbor(neighbor_key(tenant, ip), None));
                }
                kept
            });
        }
        self.misses.clear();

        // Gateways of what was touched.
        let gateway_here = |config: &Validated, ids: &Ids, t: usize| {
            let router = config.gateway.routers[t].as_ref()?;
            (router.placement == Placement::Here).then(|| {
                (
                    ids.tenant(t),
                    router.snat_ip,
                    config.switching.tenants[t].id,
                )
            })
        };
        let mut gateway_gone = false;
        let here_now: HashSet<(Option<TenantIdx>, Option<std::net::Ipv4Addr>)> = touched
            .iter()
            .filter_map(|t| gateway_here(&config, &self.ids, t.after?))
            .map(|(slot, snat, _)| (slot, snat))
            .collect();
        let ids_now: HashSet<u32> = touched
            .iter()
            .filter_map(|t| gateway_here(&config, &self.ids, t.after?))
            .map(|(_, _, id)| id)
            .collect();
        for t in &touched {
            let Some((slot, snat, id)) = t
                .before
                .and_then(|old| gateway_here(&before, &ids_before, old))
            else {
                continue;
            };
            gateway_gone |= slot.is_some() && !here_now.contains(&(slot, snat));
            if !ids_now.contains(&id) {
                self.announced.remove(&id);
            }
        }
        for t in &touched {
            if let Some(slot) = t.after.and_then(|new| self.ids.tenant(new)) {
                self.to_announce.add(slot);
            }
        }
        let port_gone = ports_before
            .iter()
            .flatten()
            .any(|p| !self.ports.iter().flatten().any(|q| q.id == p.id));
        if retired || port_gone || gateway_gone || !forgotten.is_empty() {
            self.dynamic.retired += 1;
        }

        // The tables: edited, unless a whole compile is due anyway or the change moved
        // more than the touched tenants' entries. Only the latter may bring a new
        // tunnel, whose next hop is asked for at once.
        if self.dirty {
            self.last_arp = None;
            return;
        }
        let tables = self.publisher.current();
        let old_side = Side {
            config: &before,
            ports: &ports_before,
            ids: &ids_before,
            members: &members_before,
        };
        let new_side = Side {
            config: &config,
            ports: &self.ports,
            ids: &self.ids,
            members: &members_after,
        };
        match delta::edits(
            old_side,
            new_side,
            &tables,
            &self.dynamic,
            &touched,
            ports_changed,
        ) {
            Some(delta) => {
                self.edits.extend(edits);
                self.edits.extend(delta);
                if tables.retired != self.dynamic.retired {
                    self.edits.push(TableEdit::Retired(self.dynamic.retired));
                }
            }
            None => {
                self.dirty = true;
                self.last_arp = None;
            }
        }
    }

    /// How `config`'s tenants follow from the ones in force when a change touched only
    /// `names`, and where each of those is before and after; `None` when more than that
    /// changed (hosts, another tenant).
    fn shift_to(
        &self,
        config: &Validated,
        names: &[String],
        placements_kept: bool,
    ) -> Option<(Shift, Positions)> {
        let (old, new) = (&self.config.switching, &config.switching);
        if old.hosts != new.hosts
            || old.design != new.design
            || old.this_host != new.this_host
            || self.ids.tenants.len() != old.tenants.len()
        {
            return None;
        }
        let mut places = Vec::with_capacity(names.len());
        for name in names {
            let was = self.position(old, name);
            let is = match was {
                // Where it was (a change of one tenant moves no other), or gone.
                Some(was) => new
                    .tenants
                    .get(was)
                    .filter(|t| &t.name == name)
                    .map(|_| was),
                // Added at the end.
                None => new
                    .tenants
                    .last()
                    .filter(|t| &t.name == name)
                    .map(|_| new.tenants.len() - 1),
            };
            if let (Some(was), Some(is)) = (was, is) {
                if old.tenants[was].id != new.tenants[is].id {
                    return None;
                }
            }
            places.push((was, is));
        }
        let len_after = new.tenants.len();
        let shift = Shift::of(&places, len_after);
        let follows = |new: usize| {
            let old = shift.before(new);
            old.is_none_or(|old| old_tenant_is(&self.config, config, old, new))
        };
        // The lists must be the same but for what was named: checked at the seams.
        let seams = shift
            .removed
            .iter()
            .flat_map(|&r| [r.checked_sub(1), Some(r)])
            .flatten()
            .filter(|&new| new < len_after);
        if old.tenants.len() - shift.removed.len() + shift.added.len() != len_after
            || shift
                .added
                .iter()
                .any(|&a| a < len_after - shift.added.len())
            || !seams.chain([0, len_after.saturating_sub(1)]).all(follows)
            || (!placements_kept && placements_moved(&self.config, config, &shift))
        {
            return None;
        }
        Some((shift, places))
    }

    /// The position of tenant `name` in the plan in force, if it has a slot (found
    /// without a walk over the tenants).
    pub fn tenant_position(&self, name: &str) -> Option<usize> {
        let slot = self.named.get(name)?;
        self.tenant_at.get(slot).copied()
    }

    /// The position of tenant `name` in `plan` (the plan in force), if it has a slot;
    /// else found by walking the list, which only a tenant left without a slot needs
    /// (a new tenant's name is in no list yet).
    fn position(&self, plan: &crate::config::switching::SwitchPlan, name: &str) -> Option<usize> {
        match self
            .named
            .get(name)
            .and_then(|slot| self.tenant_at.get(slot))
        {
            Some(&t) => Some(t),
            None if self.named.len() == plan.tenants.len() => None,
            None => plan.tenants.iter().position(|t| t.name == name),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;
    use crate::model::{Change, Model};
    use dataplane::pipeline::events::{Event, EventQueue};
    use dataplane::table::publish::TablePublisher;
    use dataplane::table::Location;

    /// One host of two, an uplink, a way out: tenants may reach the other host, SNAT
    /// and publish.
    const BASE: &str = r#"
[switch]
host = "h1"
underlay_gateway = "198.18.0.254"
underlay_gateway_mac = "02:00:00:00:fe:fe"

[[host]]
name = "h1"
underlay_ip = "198.18.0.1/24"

[[host]]
name = "h2"
underlay_ip = "198.18.0.2/24"

[[port]]
name = "p0"
backend = "ring"
role = "uplink"
"#;

    const NAMES: [&str; 4] = ["red", "blue", "green", "gold"];

    fn add_tenant(t: usize, snat: bool, remote: bool) -> Change {
        let snat = if snat {
            format!(r#","snat_ip":"198.18.0.{}""#, 100 + t)
        } else {
            String::new()
        };
        let hosts = if remote { r#","hosts":["h2"]"# } else { "" };
        Change::AddTenant(serde_json::from_str(&format!(
            r#"{{"name":"{}","id":{},"subnets":["10.{t}.0.1/24"],"gateway_host":"h1"{snat}{hosts}}}"#,
            NAMES[t], 100 + t
        )).unwrap())
    }

    /// A change as a user makes them through the API (many refused: that is taken as
    /// the API takes it).
    fn change() -> impl Strategy<Value = Change> {
        let tenant = 0..NAMES.len();
        prop_oneof![
            3 => (tenant.clone(), any::<bool>(), any::<bool>()).prop_map(|(t, snat, remote)| add_tenant(t, snat, remote)),
            2 => tenant.clone().prop_map(|t| Change::DeleteTenant(NAMES[t].to_owned())),
            3 => (1..5u16, tenant.clone(), any::<bool>()).prop_map(|(p, t, secure)| {
                let security = if secure { r#","allowed_macs":["02:00:00:00:0a:01"]"# } else { "" };
                Change::AddPort(Box::new(serde_json::from_str(&format!(
                    r#"{{"name":"p{p}","backend":"ring","role":"access","tenant":"{}"{security}}}"#,
                    NAMES[t]
                )).unwrap()))
            }),
            2 => (1..5u16).prop_map(|p| Change::DeletePort(format!("p{p}"))),
            3 => (tenant.clone(), 1..4u8, 0..5u16).prop_map(|(t, m, p)| {
                let at = if p == 0 { r#""host":"h2""#.to_owned() } else { format!(r#""port":"p{p}""#) };
                Change::AddEndpoint(serde_json::from_str(&format!(
                    r#"{{"tenant":"{}","mac":"02:00:00:00:0a:0{m}",{at},"ip":"10.{t}.0.{}"}}"#,
                    NAMES[t], 10 + m
                )).unwrap())
            }),
            2 => (tenant.clone(), 1..4u8).prop_map(|(t, m)| Change::DeleteEndpoint {
                tenant: NAMES[t].to_owned(),
                mac: format!("02:00:00:00:0a:0{m}"),
            }),
            2 => (tenant.clone(), 1..3u8).prop_map(|(t, r)| Change::AddRoute(serde_json::from_str(&format!(
                r#"{{"tenant":"{}","prefix":"172.16.{r}.0/24","via":"10.{t}.0.9"}}"#, NAMES[t]
            )).unwrap())),
            1 => (tenant.clone(), 1..3u8).prop_map(|(t, r)| Change::DeleteRoute {
                tenant: NAMES[t].to_owned(),
                prefix: format!("172.16.{r}.0/24"),
            }),
            2 => (tenant.clone(), 1..3u16).prop_map(|(t, p)| Change::AddPublish(serde_json::from_str(&format!(
                r#"{{"tenant":"{}","protocol":"tcp","host_port":{},"ip":"10.{t}.0.11","port":80}}"#,
                NAMES[t], 80 + p
            )).unwrap())),
            1 => (1..3u16).prop_map(|p| Change::DeletePublish { protocol: "tcp".to_owned(), host_port: 80 + p }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Step {
        Change(Change),
        /// A MAC (last byte) of a tenant (position) learned on a port id, or behind the
        /// other host (port 0).
        Learn(usize, u8, u16),
        /// A router neighbour of a tenant (position) heard.
        Neighbor(usize, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => change().prop_map(Step::Change),
            2 => (0..NAMES.len(), 1..6u8, 0..5u16).prop_map(|(t, m, p)| Step::Learn(t, m, p)),
            1 => (0..NAMES.len(), 10..14u8).prop_map(|(t, last)| Step::Neighbor(t, last)),
        ]
    }

    fn ports_of(config: &Validated) -> Vec<Option<PortInfo>> {
        config
            .ports
            .iter()
            .map(|p| {
                let id: u16 = p.name[1..].parse().unwrap();
                Some(PortInfo {
                    id,
                    mac: [2, 0, 0, 0, 0, id as u8 + 1],
                    mtu: Some(1500),
                })
            })
            .collect()
    }

    struct Twin {
        controller: Controller,
        queue: Arc<EventQueue>,
        publisher: TablePublisher,
    }

    impl Twin {
        fn new(config: &Arc<Validated>) -> Self {
            let queue = Arc::new(EventQueue::new(256));
            let publisher = TablePublisher::new(Default::default());
            let controller = Controller::new(
                Arc::clone(config),
                ports_of(config),
                publisher.clone(),
                vec![Arc::clone(&queue)],
                None,
                None,
            );
            Self {
                controller,
                queue,
                publisher,
            }
        }

        fn tell(&mut self, event: Event) {
            self.queue.push(event).unwrap();
            self.controller.absorb(Instant::now());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever tenants, ports, endpoints, routes and published ports come and go,
        /// and whatever is learned meanwhile, a controller that edits for what each
        /// change touched publishes the tables one that takes every change whole
        /// does, and keeps the same slots, statics and learned MACs.
        #[test]
        fn editing_for_what_a_change_touched_is_taking_it_whole(
            tenants in proptest::array::uniform4((any::<bool>(), any::<bool>())),
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let config = Arc::new(Config::parse(BASE, |_| None).unwrap().validate().unwrap());
            let base = config.source.clone();
            let mut model = Model::of(&base);
            let mut touching = Twin::new(&config);
            let mut whole = Twin::new(&config);
            let first = tenants.iter().enumerate().map(|(t, &(snat, remote))| Step::Change(add_tenant(t, snat, remote)));
            for step in first.chain(steps) {
                match step {
                    Step::Change(change) => {
                        let Ok((next, validated)) = model.apply(&change, &base) else {
                            continue;
                        };
                        let validated = Arc::new(validated);
                        let ports = ports_of(&validated);
                        match change.tenants_touched(&model) {
                            Some(names) => touching.controller.reconfigure_touching(Arc::clone(&validated), ports.clone(), &names, false),
                            None => touching.controller.reconfigure(Arc::clone(&validated), ports.clone()),
                        }
                        whole.controller.reconfigure(validated, ports);
                        model = next;
                    }
                    Step::Learn(t, last, port) => {
                        let Some(slot) = whole.controller.ids().tenant(t) else {
                            continue;
                        };
                        let location = match port {
                            0 => Location::Host(whole.controller.ids().host(1)),
                            port => Location::Port(port),
                        };
                        for twin in [&mut touching, &mut whole] {
                            twin.tell(Event::Learn {
                                tenant: slot,
                                mac: [2, 0, 0, 0, 0x0a, last],
                                location,
                            });
                        }
                    }
                    Step::Neighbor(t, last) => {
                        let Some(slot) = whole.controller.ids().tenant(t) else {
                            continue;
                        };
                        for twin in [&mut touching, &mut whole] {
                            twin.tell(Event::TenantNeighbor {
                                tenant: slot,
                                ip: std::net::Ipv4Addr::new(10, t as u8, 0, last),
                                mac: [2, 0, 0, 0, 0x0c, last],
                            });
                        }
                    }
                }
                touching.controller.publish_if_changed();
                whole.controller.publish_if_changed();
                let (a, b) = (&touching.controller, &whole.controller);
                prop_assert_eq!(a.ids(), b.ids());
                prop_assert_eq!(&a.statics, &b.statics);
                prop_assert_eq!(&a.port_tenants, &b.port_tenants);
                prop_assert_eq!(&a.tenant_at, &b.tenant_at);
                prop_assert_eq!(&a.named, &b.named);
                prop_assert_eq!(&a.announced, &b.announced);
                let mut learned_a: Vec<_> = a.dynamic.learned.iter().map(|(k, l)| (*k, l.location)).collect();
                let mut learned_b: Vec<_> = b.dynamic.learned.iter().map(|(k, l)| (*k, l.location)).collect();
                learned_a.sort_by_key(|(k, _)| *k);
                learned_b.sort_by_key(|(k, _)| *k);
                prop_assert_eq!(learned_a, learned_b);
                prop_assert_eq!(a.dynamic.retired, b.dynamic.retired);
                prop_assert_eq!(&*touching.publisher.current(), &*whole.publisher.current());
            }
        }
    }
}
