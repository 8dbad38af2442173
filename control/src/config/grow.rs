//! A record added or removed without validating the whole config again. A tenant
//! added is given whole validation's own checks of one more tenant at the end of the
//! list ([`switching::tenant_plan`], [`RouterChecker::router`]), run against what the
//! tenants before it took ([`Keys`]: names, ids, VLANs, router MACs, gateways per host,
//! endpoint MACs), kept from change to change; a tenant nothing refers to removed, the
//! positions after it shifted; a route or published port added, its own checks
//! against its tenant's router and the others; a route or published port removed,
//! none (nothing else depends on it); an endpoint added, its own checks against its
//! tenant's ports, endpoints and the routers' MACs; an endpoint removed, none (a
//! remote one, when its tenant's hosts stay as they are); a port attached or
//! detached, every port's own checks again (a host has few) and the new port's role
//! against the tenants it names. What these checks cannot settle alone (a refusal and
//! its reason, peers, a removal that moves an `auto` gateway, a model whose records
//! did not all fit) is left to whole validation.

use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use dataplane::packet::Mac;

use super::gateway::{
    validate_publish, validate_route, Placement, PublishPlan, PublishSpec, RouteSpec,
    RouterChecker, RouterKeys, AUTO,
};
use super::switching::{
    self, EndpointAt, EndpointSpec, Places, RoleName, RolePlan, TenantKeyring, TenantPlace,
    TenantSpec,
};
use super::{check_dataplane, eal_options, validate_cross_connects, validate_ports};
use super::{items, Field, PortSpec, Validated};
use crate::model::Model;

/// A tenant's position in the model by name: the caller's index where it has one
/// ([`walk`] otherwise).
pub type TenantAt<'a> = &'a dyn Fn(&str) -> Option<usize>;

/// [`TenantAt`] by a walk over the model's tenants.
pub fn walk(model: &Model) -> impl Fn(&str) -> Option<usize> + '_ {
    |name| model.tenants.iter().position(|t| t.name == name)
}

/// What the tenants of a validated model took that another tenant may not take again.
#[derive(Debug, Clone)]
pub struct Keys {
    names: HashSet<String>,
    ids: HashSet<u32>,
    vlans: HashSet<u16>,
    routers: RouterKeys,
    /// Endpoints per MAC (a router may not have one).
    endpoint_macs: HashMap<Mac, u32>,
    /// Tenants whose gateway is placed `auto`: by the gateways counted on each host
    /// before it in the list, which a tenant removed ahead of it changes.
    autos: usize,
    /// Tenants that list peers (a peer is named by position, which a removal moves).
    peering: usize,
}

/// Keys are the same whatever position each router MAC was first taken at (that only
/// names the tenant in a refusal, which whole validation makes).
impl PartialEq for Keys {
    fn eq(&self, other: &Self) -> bool {
        let macs = |k: &Self| k.routers.macs.keys().copied().collect::<HashSet<Mac>>();
        self.names == other.names
            && self.ids == other.ids
            && self.vlans == other.vlans
            && macs(self) == macs(other)
            && self.routers.gateways_on == other.routers.gateways_on
            && self.endpoint_macs == other.endpoint_macs
            && self.autos == other.autos
            && self.peering == other.peering
    }
}

impl TenantKeyring<'_> for Keys {
    fn take_name(&mut self, name: &str) -> bool {
        !self.names.contains(name) && self.names.insert(name.to_owned())
    }
    fn take_id(&mut self, id: u32) -> bool {
        self.ids.insert(id)
    }
    fn take_vlan(&mut self, vlan: u16) -> bool {
        self.vlans.insert(vlan)
    }
}

impl Keys {
    /// Tenants that list peers.
    pub fn peering(&self) -> usize {
        self.peering
    }

    /// What the tenants of `model` took, validated as `validated`; `None` when a record
    /// of the model did not fit (left out of `validated`: a tenant added may make it
    /// fit, which only whole validation sees).
    pub fn of(model: &Model, validated: &Validated) -> Option<Self> {
        if !fits(model, validated) {
            return None;
        }
        let mut keys = Self {
            names: HashSet::with_capacity(model.tenants.len()),
            ids: HashSet::with_capacity(model.tenants.len()),
            vlans: HashSet::new(),
            routers: RouterKeys {
                macs: HashMap::with_capacity(model.tenants.len()),
                gateways_on: vec![0; validated.switching.hosts.len()],
            },
            endpoint_macs: HashMap::new(),
            autos: 0,
            peering: 0,
        };
        for t in 0..model.tenants.len() {
            keys.tenant(model, validated, t, true);
        }
        for e in &validated.switching.endpoints {
            *keys.endpoint_macs.entry(e.mac).or_default() += 1;
        }
        Some(keys)
    }

    /// Takes (or gives back) what tenant `t` holds, but its endpoints' MACs.
    fn tenant(&mut self, model: &Model, validated: &Validated, t: usize, take: bool) {
        let spec = &model.tenants[t];
        let router = validated.gateway.routers[t].as_ref();
        let placed_on = router.and_then(|r| match r.placement {
            Placement::Here => validated.switching.this_host,
            Placement::Host(h) => Some(h),
        });
        if spec.gateway_host.as_deref() == Some(AUTO) {
            self.autos = if take { self.autos + 1 } else { self.autos - 1 };
        }
        if !spec.peers.is_empty() {
            self.peering = if take {
                self.peering + 1
            } else {
                self.peering - 1
            };
        }
        if take {
            self.names.insert(spec.name.clone());
            self.ids.insert(spec.id);
            self.vlans.extend(spec.vlan);
            if let Some(r) = router {
                self.routers.macs.insert(r.mac, t);
            }
        } else {
            self.names.remove(&spec.name);
            self.ids.remove(&spec.id);
            if let Some(vlan) = spec.vlan {
                self.vlans.remove(&vlan);
            }
            if let Some(r) = router {
                self.routers.macs.remove(&r.mac);
            }
        }
        if let Some(count) = placed_on.and_then(|h| self.routers.gateways_on.get_mut(h)) {
            *count = if take {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
        }
    }

    /// Follows a change that touched only the tenants `names` (as [`Keys::of`] would
    /// find them after it): what they held before is given back, what they hold now
    /// is taken. `None` when the change moved more (a gateway placed elsewhere, a
    /// record that no longer fits): build them again.
    pub fn follow(
        mut self,
        before: (&Model, &Validated),
        after: (&Model, &Validated),
        names: &[String],
    ) -> Option<Self> {
        if !fits(after.0, after.1) {
            return None;
        }
        let at = |model: &Model, name: &String| model.tenants.iter().position(|t| &t.name == name);
        let places: Positions = names
            .iter()
            .map(|name| (at(before.0, name), at(after.0, name)))
            .collect();
        let shift = Shift::of(&places, after.0.tenants.len());
        if placements_moved(before.1, after.1, &shift) {
            return None;
        }
        // All given back before any is taken: one may take what another gave back.
        for (side, take) in [(before, false), (after, true)] {
            let (model, validated) = side;
            for &(was, is) in &places {
                let Some(t) = (if take { is } else { was }) else {
                    continue;
                };
                self.tenant(model, validated, t, take);
                for e in items(&validated.switching.endpoints).filter(|e| e.tenant == t) {
                    let count = self.endpoint_macs.entry(e.mac).or_default();
                    if take {
                        *count += 1;
                    } else {
                        *count = count.saturating_sub(1);
                    }
                    if *count == 0 {
                        self.endpoint_macs.remove(&e.mac);
                    }
                }
            }
        }
        Some(self)
    }
}

/// Whether every record of `model` is in `validated` (none was left out).
fn fits(model: &Model, validated: &Validated) -> bool {
    model.tenants.len() == validated.switching.tenants.len()
        && model.ports.len() == validated.ports.len()
        && model.routes.len() == validated.gateway.routes.len()
        && model.published.len() == validated.gateway.published.len()
        && model.hosts.len() == validated.switching.hosts.len()
        && validated.switching.endpoints.len()
            == items(&model.endpoints)
                .map(|e| e.macs.as_ref().map_or(1, Vec::len))
                .sum::<usize>()
}

/// Where each tenant a change touched is before and after it (`None`: not there).
pub(crate) type Positions = Vec<(Option<usize>, Option<usize>)>;

/// How the tenants of a plan before a change map onto those after it: the same list
/// with `removed` (old positions, ascending) taken out and `added` (new positions, at
/// its end) put in.
#[derive(Debug)]
pub(crate) struct Shift {
    pub(crate) removed: Vec<usize>,
    pub(crate) added: Vec<usize>,
    pub(crate) len_after: usize,
}

impl Shift {
    /// The shift of a change that touched tenants at `places` (each its position before
    /// and after, `None` where it is not) to a list of `len_after`.
    pub(crate) fn of(places: &[(Option<usize>, Option<usize>)], len_after: usize) -> Self {
        let mut removed: Vec<usize> = places
            .iter()
            .filter_map(|&p| match p {
                (Some(was), None) => Some(was),
                _ => None,
            })
            .collect();
        let mut added: Vec<usize> = places
            .iter()
            .filter_map(|&p| match p {
                (None, Some(is)) => Some(is),
                _ => None,
            })
            .collect();
        removed.sort_unstable();
        removed.dedup();
        added.sort_unstable();
        added.dedup();
        Self {
            removed,
            added,
            len_after,
        }
    }

    /// Where the tenant at `old` (a position before) is after the change.
    pub(crate) fn after(&self, old: usize) -> Option<usize> {
        if self.removed.binary_search(&old).is_ok() {
            return None;
        }
        Some(old - self.removed.partition_point(|&r| r < old))
    }

    /// Where the tenant at `new` (a position after) was before the change.
    pub(crate) fn before(&self, new: usize) -> Option<usize> {
        if new >= self.len_after.checked_sub(self.added.len())? {
            return None;
        }
        let mut old = new;
        for &r in &self.removed {
            if r <= old {
                old += 1;
            }
        }
        Some(old)
    }
}

/// Whether a gateway of a tenant on both sides of `shift` runs elsewhere after it
/// (`auto` placement follows the order of the tenants, which a removal shifts).
pub(crate) fn placements_moved(before: &Validated, after: &Validated, shift: &Shift) -> bool {
    if shift.removed.is_empty() {
        return false;
    }
    let placement = |v: &Validated, t: usize| v.gateway.routers[t].as_ref().map(|r| r.placement);
    (0..shift.len_after).any(|new| {
        shift
            .before(new)
            .is_some_and(|old| placement(before, old) != placement(after, new))
    })
}

/// `validated` (the model `model` validated, wholly: see [`Keys::of`]) with tenant
/// `spec` added at the end, as whole validation of the model with it would have it;
/// `None` when whole validation must decide (it is refused, or has peers). `keys`
/// take the tenant's (build them again after `None`).
pub fn add_tenant(
    validated: &Validated,
    model: &Model,
    spec: &TenantSpec,
    keys: &mut Keys,
) -> Option<Validated> {
    if !spec.peers.is_empty() || !fits(model, validated) {
        return None;
    }
    let i = model.tenants.len();
    let mut next = validated.clone();
    let plan = &mut next.switching;
    let place = TenantPlace {
        section: &model.switch,
        design: plan.design,
        hosts: &plan.hosts,
        this_host: plan.this_host,
    };
    let tenant = switching::tenant_plan(&place, i, spec, keys).ok()?;
    switching::check_tenant_count(i + 1).ok()?;
    plan.tenants.push_back(std::sync::Arc::new(tenant));
    let index = HashMap::new();
    let mut checker = RouterChecker::resumed(
        &validated.source.gateway,
        &model.switch,
        &model.tenants,
        &index,
        std::mem::take(&mut keys.routers),
    );
    let router = checker.router(i, spec, plan);
    keys.routers = checker.into_keys();
    let router = router.ok()?;
    if router
        .as_ref()
        .is_some_and(|r| keys.endpoint_macs.contains_key(&r.mac))
    {
        return None;
    }
    next.gateway
        .routers
        .push_back(router.map(std::sync::Arc::new));
    Some(next)
}

/// `validated` (the model `model` validated, wholly) without its `at`th tenant (the
/// model's checks say whether it may go: nothing refers to it), every later tenant a
/// position nearer; `None` when whole validation must decide (its gateway counted on
/// a host that an `auto` gateway is placed by). `keys` give back what it took.
pub fn delete_tenant(
    validated: &Validated,
    model: &Model,
    at: usize,
    keys: &mut Keys,
) -> Option<Validated> {
    if !fits(model, validated) || at >= model.tenants.len() {
        return None;
    }
    let own_auto = model.tenants[at].gateway_host.as_deref() == Some(AUTO);
    if validated.gateway.routers[at].is_some() && keys.autos > usize::from(own_auto) {
        return None;
    }
    let mut next = validated.clone();
    next.switching.tenants.remove(at);
    next.gateway.routers.remove(at);
    let moved = |t: &mut usize| {
        if *t > at {
            *t -= 1;
        }
    };
    // Edited only where a tenant moves: the list is shared with the plan in force.
    let later: Vec<usize> = (items(&next.switching.endpoints).enumerate())
        .filter(|(_, e)| e.tenant > at)
        .map(|(i, _)| i)
        .collect();
    for i in later {
        moved(&mut next.switching.endpoints[i].tenant);
    }
    for role in &mut next.switching.roles {
        match role {
            RolePlan::Access { tenant, .. } => moved(tenant),
            RolePlan::Trunk(tenants) => tenants.iter_mut().for_each(moved),
            RolePlan::None | RolePlan::Uplink(_) => {}
        }
    }
    for route in &mut next.gateway.routes {
        moved(&mut route.tenant);
        moved(&mut route.via_tenant);
    }
    for publish in &mut next.gateway.published {
        moved(&mut publish.tenant);
    }
    // A router has peers only when its tenant lists some: looked for only then, and
    // copied only where a peer moves (the list is shared with the plan in force).
    if keys.peering > 0 {
        let peering: Vec<usize> = (next.gateway.routers.iter().enumerate())
            .filter(|(_, r)| r.as_ref().is_some_and(|r| r.peers.iter().any(|&p| p > at)))
            .map(|(t, _)| t)
            .collect();
        for t in peering {
            if let Some(router) = next.gateway.routers[t].as_mut() {
                Arc::make_mut(router).peers.iter_mut().for_each(moved);
            }
        }
    }
    keys.tenant(model, validated, at, false);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) with route `spec` added at the
/// end, as whole validation would have it; `None` when whole validation must decide.
pub fn add_route(
    validated: &Validated,
    model: &Model,
    spec: &RouteSpec,
    tenant_at: TenantAt<'_>,
) -> Option<Validated> {
    if !fits(model, validated) {
        return None;
    }
    let tenant = tenant_at(&spec.tenant)?;
    let index = HashMap::from([(spec.tenant.as_str(), tenant)]);
    let field = Field::Item("route", model.routes.len());
    let route = validate_route(&field, spec, &index, &validated.gateway.routers).ok()?;
    let taken = validated
        .gateway
        .routes
        .iter()
        .any(|r| (r.tenant, r.ip, r.prefix) == (route.tenant, route.ip, route.prefix));
    if taken {
        return None;
    }
    let mut next = validated.clone();
    next.gateway.routes.push(route);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) without its `at`th route.
pub fn delete_route(validated: &Validated, model: &Model, at: usize) -> Option<Validated> {
    if !fits(model, validated) || at >= validated.gateway.routes.len() {
        return None;
    }
    let mut next = validated.clone();
    next.gateway.routes.remove(at);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) with published port `spec` added
/// at the end, as whole validation would have it; `None` when whole validation must
/// decide.
pub fn add_publish(
    validated: &Validated,
    model: &Model,
    spec: &PublishSpec,
    tenant_at: TenantAt<'_>,
) -> Option<Validated> {
    if !fits(model, validated) {
        return None;
    }
    let tenant = tenant_at(&spec.tenant)?;
    let index = HashMap::from([(spec.tenant.as_str(), tenant)]);
    let field = Field::Item("publish", model.published.len());
    let gateway = &validated.gateway;
    let section = &validated.source.gateway;
    let publish = validate_publish(&field, spec, section, &index, &gateway.routers).ok()?;
    let key = |p: &PublishPlan| (p.protocol, p.external_ip, p.host_port);
    if gateway.published.iter().any(|p| key(p) == key(&publish)) {
        return None;
    }
    let mut next = validated.clone();
    next.gateway.published.push(publish);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) without its `at`th published port.
pub fn delete_publish(validated: &Validated, model: &Model, at: usize) -> Option<Validated> {
    if !fits(model, validated) || at >= validated.gateway.published.len() {
        return None;
    }
    let mut next = validated.clone();
    next.gateway.published.remove(at);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) with endpoint `spec` added at the
/// end; `None` when whole validation must decide (a refusal, or a remote endpoint on a
/// host its tenant is not on yet: where that host goes in the tenant's list is whole
/// validation's). `keys` take its MACs.
pub fn add_endpoint(
    validated: &Validated,
    model: &Model,
    spec: &EndpointSpec,
    keys: &mut Keys,
    tenant_at: TenantAt<'_>,
) -> Option<Validated> {
    if !fits(model, validated) {
        return None;
    }
    let tenant = tenant_at(&spec.tenant)?;
    let index: HashMap<&str, usize> = HashMap::from_iter([(spec.tenant.as_str(), tenant)]);
    let plan = &validated.switching;
    let port_names: Vec<String> = validated.ports.iter().map(|p| p.name.clone()).collect();
    let places = Places {
        port_names: &port_names,
        roles: &plan.roles,
        hosts: &plan.hosts,
        this_host: plan.this_host,
    };
    let mut next = validated.clone();
    let endpoints = switching::validate_endpoints(
        std::iter::once(spec),
        &places,
        &index,
        &mut next.switching.tenants,
    )
    .ok()?;
    if !Arc::ptr_eq(&next.switching.tenants[tenant], &plan.tenants[tenant]) {
        return None;
    }
    // A MAC or address another endpoint of the tenant has: whole validation names it.
    let taken = |mac: &Mac| {
        keys.routers.macs.contains_key(mac)
            || items(&plan.endpoints).any(|e| {
                e.tenant == tenant && (e.mac == *mac || (e.ip.is_some() && e.ip == spec.ip))
            })
    };
    if endpoints.iter().any(|e| taken(&e.mac)) {
        return None;
    }
    for e in endpoints {
        *keys.endpoint_macs.entry(e.mac).or_default() += 1;
        next.switching.endpoints.push_back(e);
    }
    Some(next)
}

/// `validated` (the model `model` validated, wholly) without its `at`th endpoint;
/// `None` when whole validation must decide (a remote one whose tenant's hosts would
/// change without it). `keys` give back its MACs.
pub fn delete_endpoint(
    validated: &Validated,
    model: &Model,
    at: usize,
    keys: &mut Keys,
) -> Option<Validated> {
    let spec = model.endpoints.get(at)?;
    if !fits(model, validated) {
        return None;
    }
    let macs = |e: &EndpointSpec| e.macs.as_ref().map_or(1, Vec::len);
    let first = items(&model.endpoints).take(at).map(macs).sum::<usize>();
    if spec.host.is_some() {
        let tenant = validated.switching.endpoints.get(first)?.tenant;
        let hosts = hosts_but(model, validated, tenant, at)?;
        if hosts != validated.switching.tenants[tenant].hosts {
            return None;
        }
    }
    let mut next = validated.clone();
    for e in next.switching.endpoints.slice(first..first + macs(spec)) {
        if let Some(count) = keys.endpoint_macs.get_mut(&e.mac) {
            *count -= 1;
            if *count == 0 {
                keys.endpoint_macs.remove(&e.mac);
            }
        }
    }
    Some(next)
}

/// The hosts of tenant `t` as whole validation lists them without endpoint `but`: the
/// tenant's own, then those its remote endpoints name, in the order first named.
fn hosts_but(model: &Model, validated: &Validated, t: usize, but: usize) -> Option<Vec<usize>> {
    let plan = &validated.switching;
    let host = |name: &String| plan.hosts.iter().position(|h| &h.name == name);
    let tenant = &model.tenants[t];
    let mut hosts = Vec::new();
    let remote = (items(&model.endpoints).enumerate())
        .filter(|&(i, e)| i != but && e.tenant == tenant.name && e.port.is_none())
        .filter_map(|(_, e)| e.host.as_ref());
    for name in tenant.hosts.iter().chain(remote) {
        let h = host(name)?;
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    Some(hosts)
}

/// `validated` (the model `model` validated, wholly) with port `spec` attached at the
/// end; `None` when whole validation must decide (an uplink among them: there may be
/// one).
pub fn add_port(
    validated: &Validated,
    model: &Model,
    spec: &PortSpec,
    tenant_at: TenantAt<'_>,
) -> Option<Validated> {
    if !fits(model, validated) || spec.role == Some(RoleName::Uplink) {
        return None;
    }
    let mut specs = model.ports.clone();
    specs.push(spec.clone());
    let mut next = with_ports(validated, &specs)?;
    let at = specs.len() - 1;
    if next.cross_connects.iter().any(|&(a, b)| a == at || b == at) {
        return None;
    }
    let mut index = HashMap::new();
    for name in spec.tenant.iter().chain(spec.tenants.iter().flatten()) {
        let t = tenant_at(name)?;
        index.insert(name.as_str(), t);
    }
    let plan = &validated.switching;
    let mut roles = switching::validate_roles(
        std::slice::from_ref(spec),
        &Default::default(),
        &plan.tenants,
        &index,
        plan.this_host,
    )
    .ok()?;
    next.switching.roles.push(roles.pop()?);
    Some(next)
}

/// `validated` (the model `model` validated, wholly) without its `at`th port (the
/// model's checks say whether it may go: [`Model::check_port_unused`]).
pub fn delete_port(validated: &Validated, model: &Model, at: usize) -> Option<Validated> {
    if !fits(model, validated) || at >= model.ports.len() {
        return None;
    }
    let mut specs = model.ports.clone();
    specs.remove(at);
    let mut next = with_ports(validated, &specs)?;
    next.switching.roles.remove(at);
    for e in &mut next.switching.endpoints {
        if let EndpointAt::Port(p) = &mut e.at {
            match (*p).cmp(&at) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return None,
                std::cmp::Ordering::Greater => *p -= 1,
            }
        }
    }
    Some(next)
}

/// `validated` with the ports `specs`, each checked, and what follows from them (the
/// cross-connects, the EAL's devices); the roles are left to the caller.
fn with_ports(validated: &Validated, specs: &[PortSpec]) -> Option<Validated> {
    let source = &validated.source;
    let ports = validate_ports(specs).ok()?;
    let cross_connects = validate_cross_connects(&source.cross_connects, &ports).ok()?;
    let main_core = check_dataplane(&source.dataplane).ok()?;
    let mut next = validated.clone();
    next.eal = eal_options(&source.dataplane, main_core, &ports);
    next.ports = ports;
    next.cross_connects = cross_connects;
    Some(next)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;
    use crate::model::Change;

    /// A host's config with a few hosts, ports and one tenant, for changes to grow.
    pub(crate) const BASE: &str = r#"
[switch]
host = "h1"
underlay_gateway = "198.18.0.254"

[[host]]
name = "h1"
underlay_ip = "198.18.0.1/24"

[[host]]
name = "h2"
underlay_ip = "198.18.0.2/24"
egress = true

[[host]]
name = "h3"
underlay_ip = "198.18.0.3/24"

[[port]]
name = "p0"
backend = "ring"
role = "uplink"

[[port]]
name = "p1"
backend = "ring"
role = "trunk"
tenants = ["t0"]

[[tenant]]
name = "t0"
id = 1
vlan = 1
"#;

    /// A tenant as a user may ask for one: often one that clashes with another, or
    /// is wrong on its own.
    fn tenant() -> impl Strategy<Value = TenantSpec> {
        let gateway = prop_oneof![
            Just(None),
            Just(Some("h1")),
            Just(Some("h2")),
            Just(Some("auto")),
            Just(Some("central")),
            Just(Some("nowhere")),
        ];
        (
            (0..6usize, 0..8u32, proptest::option::of(0..6u16)),
            (proptest::option::of(0..4u8), gateway, any::<bool>()),
            (
                proptest::option::of(0..3u8),
                proptest::option::of(0..3u32),
                0..4usize,
                any::<bool>(),
            ),
        )
            .prop_map(
                |((name, id, vlan), (subnet, gateway, snat), (mac, max_macs, hosts, peer))| {
                    TenantSpec {
                        name: format!("t{name}"),
                        id,
                        vlan,
                        max_macs: max_macs.map(|m| m * 5),
                        hosts: [vec![], vec!["h2"], vec!["h1"], vec!["h3", "h3"]][hosts]
                            .iter()
                            .map(|h| h.to_string())
                            .collect(),
                        subnets: subnet
                            .map(|s| vec![format!("10.{s}.0.1/24")])
                            .unwrap_or_default(),
                        gateway_host: gateway.map(str::to_owned),
                        snat_ip: snat.then(|| std::net::Ipv4Addr::new(198, 18, 0, 100)),
                        router_mac: mac.map(|m| format!("02:00:00:00:0a:0{m}")),
                        peers: if peer { vec!["t1".to_owned()] } else { vec![] },
                        max_connections: None,
                    }
                },
            )
    }

    /// A change as a user may ask for one, right or wrong.
    pub(crate) fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => tenant().prop_map(Change::AddTenant),
            2 => (0..6usize).prop_map(|t| Change::DeleteTenant(format!("t{t}"))),
            2 => (0..6usize, 0..3u8).prop_map(|(t, m)| Change::AddEndpoint(serde_json::from_str(&format!(
                r#"{{"tenant":"t{t}","mac":"02:00:00:00:0a:0{m}","host":"h2"}}"#
            )).unwrap())),
            2 => (0..6usize, 0..3u8, any::<bool>()).prop_map(|(t, m, local)| Change::DeleteEndpoint {
                tenant: format!("t{t}"),
                mac: format!("02:00:00:00:{}:0{m}", if local { "0c" } else { "0a" }),
            }),
            4 => (0..6usize, 0..3u8, 0..3u8, 0..4u8).prop_map(|(t, r, host, s)| {
                Change::AddRoute(RouteSpec {
                    tenant: format!("t{t}"),
                    prefix: format!("172.16.{r}.{}/24", host / 2),
                    via: std::net::Ipv4Addr::new(10, s, 0, 9),
                })
            }),
            2 => (0..6usize, 0..3u8).prop_map(|(t, r)| Change::DeleteRoute {
                tenant: format!("t{t}"),
                prefix: format!("172.16.{r}.0/24"),
            }),
            3 => (2..5u8, 0..4u8, 0..6usize).prop_map(|(p, kind, t)| {
                let role = match kind {
                    0 => format!(r#""role":"access","tenant":"t{t}""#),
                    1 => format!(r#""role":"access","tenant":"t{t}","allowed_macs":["02:00:00:00:0b:01"]"#),
                    2 => format!(r#""role":"trunk","tenants":["t0","t{t}"]"#),
                    _ => r#""role":"uplink""#.to_owned(),
                };
                Change::AddPort(Box::new(serde_json::from_str(&format!(
                    r#"{{"name":"p{p}","backend":"ring",{role}}}"#
                )).unwrap()))
            }),
            2 => (0..5u8).prop_map(|p| Change::DeletePort(format!("p{p}"))),
            // Mostly the routed tenants' (with an outside address), on their subnets.
            3 => (0..4usize, prop_oneof![4 => Just("tcp"), 4 => Just("udp"), 1 => Just("sctp")], 0..3u16)
                .prop_map(|(t, protocol, host_port)| Change::AddPublish(PublishSpec {
                    tenant: format!("t{}", t.min(2)),
                    protocol: protocol.to_owned(),
                    host_port,
                    ip: std::net::Ipv4Addr::new(10, t as u8, 0, 5),
                    port: 80,
                })),
            1 => (prop_oneof![Just("tcp"), Just("udp")], 0..3u16).prop_map(|(protocol, host_port)| {
                Change::DeletePublish { protocol: protocol.to_owned(), host_port }
            }),
            2 => (0..6usize, 0..3u8, 1..5u8).prop_map(|(t, m, p)| Change::AddEndpoint(serde_json::from_str(&format!(
                r#"{{"tenant":"t{t}","mac":"02:00:00:00:0c:0{m}","port":"p{p}"}}"#
            )).unwrap())),
        ]
    }

    /// A gateway placed `auto` goes to the host with the fewest gateways before it in
    /// the list: removing one ahead of it may move it, which only whole validation
    /// settles.
    #[test]
    fn a_removal_ahead_of_an_auto_gateway_is_left_to_whole_validation() {
        let config = Config::parse(BASE, |_| None).unwrap().validate().unwrap();
        let base = config.source.clone();
        let (mut model, mut validated) = (Model::of(&base), config);
        for (name, id, host) in [("ta", 20, "h1"), ("tb", 21, "auto")] {
            let spec = serde_json::from_str(&format!(
                r#"{{"name":"{name}","id":{id},"subnets":["10.{id}.0.1/24"],"gateway_host":"{host}"}}"#
            ))
            .unwrap();
            (model, validated) = model.apply(&Change::AddTenant(spec), &base).unwrap();
        }
        let delete = Change::DeleteTenant("ta".to_owned());
        let Some(crate::model::Place::Tenant(at)) = model.place_of(&delete) else {
            panic!("ta is in the model");
        };
        let (_, whole) = model.apply(&delete, &base).unwrap();
        let placement = |v: &Validated| {
            v.gateway
                .routers
                .last()
                .cloned()
                .flatten()
                .map(|r| r.placement)
        };
        assert_ne!(
            placement(&whole),
            placement(&validated),
            "the case at hand: tb's gateway moves"
        );
        let mut keys = Keys::of(&model, &validated).unwrap();
        assert!(delete_tenant(&validated, &model, at, &mut keys).is_none());
        assert_eq!(
            Some(keys),
            Keys::of(&model, &validated),
            "nothing given back"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// A tenant validated alone against the keys the others took is the tenant the
        /// whole model's validation has, in the same validated whole; the keys, followed
        /// from change to change, are the ones the model holds.
        #[test]
        fn a_tenant_validated_alone_is_the_one_whole_validation_makes(
            changes in proptest::collection::vec(change(), 1..40),
        ) {
            let config = Config::parse(BASE, |_| None).unwrap().validate().unwrap();
            let base = config.source.clone();
            let mut model = Model::of(&base);
            let mut validated = config;
            let mut keys = Keys::of(&model, &validated);
            prop_assert!(keys.is_some());
            let routed = (1..3).map(|t| {
                Change::AddTenant(serde_json::from_str(&format!(
                    r#"{{"name":"t{t}","id":{t}0,"subnets":["10.{t}.0.1/24"],"gateway_host":"h1","snat_ip":"198.18.0.10{t}"}}"#
                )).unwrap())
            });
            let attached = [
                Change::AddPort(Box::new(serde_json::from_str(
                    r#"{"name":"p4","backend":"ring","role":"access","tenant":"t1"}"#,
                ).unwrap())),
                Change::AddEndpoint(serde_json::from_str(
                    r#"{"tenant":"t1","macs":["02:00:00:00:0c:01","02:00:00:00:0c:02"],"port":"p4"}"#,
                ).unwrap()),
                Change::AddEndpoint(serde_json::from_str(
                    r#"{"tenant":"t1","mac":"02:00:00:00:0c:00","port":"p4"}"#,
                ).unwrap()),
            ];
            for change in routed.chain(attached).chain(changes) {
                let whole = model.apply(&change, &base);
                if let Change::AddTenant(spec) = &change {
                    let mut taken = Keys::of(&model, &validated).unwrap();
                    if let Some(keys) = &keys {
                        prop_assert_eq!(keys, &taken);
                    }
                    if let Some(alone) = add_tenant(&validated, &model, spec, &mut taken) {
                        let Ok((_, whole)) = &whole else {
                            return Err(TestCaseError::fail(format!("{spec:?} refused whole, taken alone")));
                        };
                        prop_assert_eq!(format!("{:?}", alone.switching), format!("{:?}", whole.switching));
                        prop_assert_eq!(format!("{:?}", alone.gateway), format!("{:?}", whole.gateway));
                    }
                }
                let alone = match &change {
                    Change::AddEndpoint(spec) => {
                        let mut taken = Keys::of(&model, &validated).unwrap();
                        let alone = add_endpoint(&validated, &model, spec, &mut taken, &walk(&model));
                        if let (Some(_), Ok((next, next_validated))) = (&alone, &whole) {
                            let fresh = Keys::of(next, next_validated);
                            prop_assert_eq!(Some(&taken), fresh.as_ref());
                        }
                        Some(alone)
                    }
                    Change::DeleteEndpoint { .. } => match model.place_of(&change) {
                        Some(crate::model::Place::Endpoint(at)) => {
                            let mut taken = Keys::of(&model, &validated).unwrap();
                            let alone = delete_endpoint(&validated, &model, at, &mut taken);
                            if let (Some(_), Ok((next, next_validated))) = (&alone, &whole) {
                                let fresh = Keys::of(next, next_validated);
                                prop_assert_eq!(Some(&taken), fresh.as_ref());
                            }
                            Some(alone)
                        }
                        _ => None,
                    },
                    Change::AddPort(spec) => Some(add_port(&validated, &model, spec, &walk(&model))),
                    Change::DeletePort(name) => match model.place_of(&change) {
                        Some(crate::model::Place::Port(at)) => Some(
                            model
                                .check_port_unused(name, &validated.source)
                                .ok()
                                .and_then(|()| delete_port(&validated, &model, at)),
                        ),
                        _ => None,
                    },
                    Change::DeleteTenant(name) => match model.place_of(&change) {
                        Some(crate::model::Place::Tenant(at)) if model.check_tenant_unused(name).is_ok() => {
                            let mut taken = Keys::of(&model, &validated).unwrap();
                            let alone = delete_tenant(&validated, &model, at, &mut taken);
                            if let (Some(_), Ok((next, next_validated))) = (&alone, &whole) {
                                let fresh = Keys::of(next, next_validated);
                                prop_assert_eq!(Some(&taken), fresh.as_ref());
                            }
                            Some(alone)
                        }
                        _ => None,
                    },
                    Change::AddRoute(spec) => Some(add_route(&validated, &model, spec, &walk(&model))),
                    Change::AddPublish(spec) => Some(add_publish(&validated, &model, spec, &walk(&model))),
                    Change::DeletePublish { .. } => match model.place_of(&change) {
                        Some(crate::model::Place::Publish(at)) => Some(delete_publish(&validated, &model, at)),
                        _ => None,
                    },
                    Change::DeleteRoute { .. } => match model.place_of(&change) {
                        Some(crate::model::Place::Route(at)) => Some(delete_route(&validated, &model, at)),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(Some(alone)) = alone {
                    let Ok((_, whole)) = &whole else {
                        return Err(TestCaseError::fail(format!("{change:?} refused whole, taken alone")));
                    };
                    prop_assert_eq!(format!("{:?}", alone.gateway), format!("{:?}", whole.gateway));
                    prop_assert_eq!(format!("{:?}", alone.switching), format!("{:?}", whole.switching));
                    prop_assert_eq!(format!("{:?}", alone.ports), format!("{:?}", whole.ports));
                    prop_assert_eq!(&alone.cross_connects, &whole.cross_connects);
                    prop_assert_eq!(format!("{:?}", alone.eal), format!("{:?}", whole.eal));
                }
                let Ok((next, next_validated)) = whole else {
                    continue;
                };
                let names = change.tenants_touched(&model).unwrap();
                keys = match keys {
                    Some(k) => k.follow((&model, &validated), (&next, &next_validated), &names),
                    // Built again, as the live model does at its next tenant.
                    None => Keys::of(&next, &next_validated),
                };
                model = next;
                validated = next_validated;
                if let Some(keys) = &keys {
                    let fresh = Keys::of(&model, &validated);
                    prop_assert_eq!(Some(keys), fresh.as_ref());
                }
            }
        }
    }
}
