//! The part of the configuration that changes while tenetd runs: tenants, hosts,
//! endpoints and switching settings. The API edits it; the store keeps it; together
//! with the start-up file's dataplane and ports it makes a full [`Config`] that is
//! validated exactly like the file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::addresses::AddressRequest;
use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::{AddressSpec, EndpointSpec, HostSpec, SwitchSection, TenantSpec};
use crate::config::{items, Config, ConfigError, List, PortSpec, Validated};

/// The live model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Design and switching settings.
    pub switch: SwitchSection,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Tenants.
    pub tenants: List<Arc<TenantSpec>>,
    /// Endpoints.
    pub endpoints: List<EndpointSpec>,
    /// Ports, in order (those of the config file first, then those added live).
    pub ports: Vec<PortSpec>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Published container ports.
    #[serde(default)]
    pub published: Vec<PublishSpec>,
    /// In a cluster, where each floating gateway (`auto`, or whose host or egress host
    /// is down) was placed, by tenant: recorded once so that a tenant added, a host
    /// joining or a load changing moves no gateway that runs (see
    /// [`crate::placement`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placed: BTreeMap<String, String>,
    /// Addresses claimed for containers ([`crate::addresses`]). Like the placements,
    /// no part of a config: the tables never see them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressSpec>,
}

/// A change asked for through the API.
#[derive(Debug, Clone)]
pub enum Change {
    /// Add a tenant.
    AddTenant(TenantSpec),
    /// Remove a tenant by name (refused while a port or endpoint uses it).
    DeleteTenant(String),
    /// Add a host.
    AddHost(HostSpec),
    /// Remove a host by name.
    DeleteHost(String),
    /// Add an endpoint.
    AddEndpoint(EndpointSpec),
    /// Attach a port.
    AddPort(Box<PortSpec>),
    /// Detach a port by name.
    DeletePort(String),
    /// Remove an endpoint by tenant and MAC.
    DeleteEndpoint {
        /// Tenant name.
        tenant: String,
        /// MAC as written.
        mac: String,
    },
    /// Change a tenant's gateway settings (placement: gateway migration; peers).
    UpdateTenant(String, TenantPatch),
    /// Add a static route.
    AddRoute(RouteSpec),
    /// Remove a route by tenant and prefix.
    DeleteRoute {
        /// Tenant name.
        tenant: String,
        /// Prefix as written.
        prefix: String,
    },
    /// Publish a container port.
    AddPublish(PublishSpec),
    /// Withdraw a published port.
    DeletePublish {
        /// `tcp` or `udp`.
        protocol: String,
        /// The published port.
        host_port: u16,
    },
    /// Claim an address for a container.
    ClaimAddress(AddressRequest),
    /// Give a claimed address back.
    ReleaseAddress {
        /// Tenant name.
        tenant: String,
        /// The address.
        ip: std::net::Ipv4Addr,
        /// Only if this owner holds it (a late second release of the same container
        /// must not take the address from the next one that got it).
        owner: Option<String>,
    },
}

/// A record of the model by list and position ([`Model::place_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `tenants[i]`.
    Tenant(usize),
    /// `hosts[i]`.
    Host(usize),
    /// `endpoints[i]`.
    Endpoint(usize),
    /// `ports[i]`.
    Port(usize),
    /// `routes[i]`.
    Route(usize),
    /// `published[i]`.
    Publish(usize),
    /// `addresses[i]`.
    Address(usize),
}

/// The tenant settings a running switch may change; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New gateway placement (a host name or `central`).
    pub gateway_host: Option<String>,
    /// New peer list (consent to route with these tenants).
    pub peers: Option<Vec<String>>,
    /// New SNAT address.
    pub snat_ip: Option<std::net::Ipv4Addr>,
    /// New per-core SNAT connection cap.
    pub max_connections: Option<u32>,
}

/// A stored record left out because it does not fit.
#[derive(Debug)]
pub struct Skipped {
    /// Which record, in words (`tenant `blue``).
    pub record: String,
    /// Why.
    pub error: ConfigError,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.record, self.error)
    }
}

/// A refused change: HTTP status, the field at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The request field at fault.
    pub field: String,
    /// Why.
    pub message: String,
}

impl Refusal {
    fn not_found(field: &str, message: String) -> Self {
        Self {
            status: 404,
            field: field.to_owned(),
            message,
        }
    }
}

impl Change {
    /// Whether it removes a record.
    pub fn removes(&self) -> bool {
        matches!(
            self,
            Change::DeletePort(_)
                | Change::DeleteTenant(_)
                | Change::DeleteHost(_)
                | Change::DeleteEndpoint { .. }
                | Change::DeleteRoute { .. }
                | Change::DeletePublish { .. }
                | Change::ReleaseAddress { .. }
        )
    }

    /// Whether it claims or releases an address: the tables do not change.
    pub fn addresses_only(&self) -> bool {
        matches!(
            self,
            Change::ClaimAddress(_) | Change::ReleaseAddress { .. }
        )
    }

    /// The tenants this change touches, by name, given the model `before` it: all
    /// that a change of them alone moves in the tables (ports are compared anyway);
    /// `None` for a change that may move any tenant (hosts, gateway placement,
    /// peering).
    pub fn tenants_touched(&self, before: &Model) -> Option<Vec<String>> {
        match self {
            Change::AddPort(_) | Change::DeletePort(_) => Some(Vec::new()),
            Change::AddHost(_) | Change::DeleteHost(_) | Change::UpdateTenant(..) => None,
            _ => self.tenant_edited(before).map(|name| vec![name]),
        }
    }

    /// Every tenant this change names: the one it edits (or adds), the peers it
    /// lists, a port's tenants. A host holding only its own tenants reads these first.
    pub fn tenants_named(&self) -> Vec<&str> {
        fn one(name: &str) -> Vec<&str> {
            vec![name]
        }
        match self {
            Change::AddTenant(t) => {
                let mut names = one(&t.name);
                names.extend(t.peers.iter().map(String::as_str));
                names
            }
            Change::DeleteTenant(name) => one(name),
            Change::UpdateTenant(name, patch) => {
                let mut names = one(name);
                names.extend(patch.peers.iter().flatten().map(String::as_str));
                names
            }
            Change::AddEndpoint(e) => one(&e.tenant),
            Change::DeleteEndpoint { tenant, .. } | Change::DeleteRoute { tenant, .. } => {
                one(tenant)
            }
            Change::AddRoute(r) => one(&r.tenant),
            Change::AddPublish(p) => one(&p.tenant),
            Change::ClaimAddress(a) => one(&a.tenant),
            Change::ReleaseAddress { tenant, .. } => one(tenant),
            Change::AddPort(port) => port
                .tenant
                .iter()
                .chain(port.tenants.iter().flatten())
                .map(String::as_str)
                .collect(),
            Change::DeletePublish { .. }
            | Change::DeletePort(_)
            | Change::AddHost(_)
            | Change::DeleteHost(_) => Vec::new(),
        }
    }

    /// The tenant whose records this change edits, given the model `before` it;
    /// `None` for a change of a host or a port, or one that names nothing there.
    pub fn tenant_edited(&self, before: &Model) -> Option<String> {
        Some(match self {
            Change::AddTenant(t) => t.name.clone(),
            Change::DeleteTenant(name) | Change::UpdateTenant(name, _) => name.clone(),
            Change::AddEndpoint(e) => e.tenant.clone(),
            Change::DeleteEndpoint { tenant, .. } | Change::DeleteRoute { tenant, .. } => {
                tenant.clone()
            }
            Change::AddRoute(r) => r.tenant.clone(),
            Change::AddPublish(p) => p.tenant.clone(),
            Change::ClaimAddress(a) => a.tenant.clone(),
            Change::ReleaseAddress { tenant, .. } => tenant.clone(),
            Change::DeletePublish { .. } => match before.place_of(self)? {
                Place::Publish(i) => before.published[i].tenant.clone(),
                _ => return None,
            },
            Change::AddPort(_)
            | Change::DeletePort(_)
            | Change::AddHost(_)
            | Change::DeleteHost(_) => return None,
        })
    }
}

impl Model {
    /// The model part of a configuration.
    pub fn of(config: &Config) -> Self {
        Self {
            switch: config.switch.clone(),
            hosts: config.hosts.clone(),
            tenants: config.tenants.clone(),
            endpoints: config.endpoints.clone(),
            ports: config.ports.clone(),
            routes: config.routes.clone(),
            published: config.published.clone(),
            placed: BTreeMap::new(),
            addresses: Vec::new(),
        }
    }

    /// A model of `switch` settings and `ports` alone, its lists empty (to be filled
    /// from a store's records).
    pub fn bare(switch: SwitchSection, ports: Vec<PortSpec>) -> Self {
        Self {
            switch,
            ports,
            hosts: Vec::new(),
            tenants: List::new(),
            endpoints: List::new(),
            routes: Vec::new(),
            published: Vec::new(),
            placed: BTreeMap::new(),
            addresses: Vec::new(),
        }
    }

    /// Adds this host's own record from its config (`seed`) when this model (the
    /// cluster's) has none: a node new to the cluster, as a DaemonSet starts them,
    /// joins with it (written with its own settings and ports) instead of being
    /// refused for naming an unknown host.
    pub fn join(&mut self, seed: &Model) {
        let Some(name) = seed.switch.host.as_deref() else {
            return;
        };
        let Some(me) = seed.hosts.iter().find(|h| h.name == name) else {
            return;
        };
        if let Some(known) = self.hosts.iter().find(|h| h.name == name) {
            if known != me {
                tracing::warn!(host = %name, cluster = ?known, config = ?me, "the cluster's record of this host differs from its config; the cluster's stands (change it through the API)");
            }
            return;
        }
        let address = |h: &HostSpec| {
            h.underlay_ip
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        if let Some(other) = self.hosts.iter().find(|h| address(h) == address(me)) {
            tracing::error!(host = %name, underlay_ip = %me.underlay_ip, other = %other.name, "not joining the cluster: another host has this underlay address");
            return;
        }
        tracing::info!(host = %me.name, underlay_ip = %me.underlay_ip, "joining the cluster: this host's record comes from its config");
        self.hosts.push(me.clone());
    }

    /// `base` (dataplane, ports, control) with this model.
    pub fn over(&self, base: &Config) -> Config {
        self.clone().into_config(base)
    }

    /// [`Model::over`], the model's lists moved in rather than copied (only `base`'s
    /// own sections are copied: its lists may be a whole model too). The gateway
    /// placements stay behind: a config has none.
    pub fn into_config(self, base: &Config) -> Config {
        Config {
            dataplane: base.dataplane.clone(),
            cross_connects: base.cross_connects.clone(),
            gateway: base.gateway.clone(),
            control: base.control.clone(),
            switch: self.switch,
            hosts: self.hosts,
            tenants: self.tenants,
            endpoints: self.endpoints,
            ports: self.ports,
            routes: self.routes,
            published: self.published,
        }
    }

    /// The model a config holds, its lists moved out (left empty), with the
    /// model's own records (`placed`, `addresses`).
    fn taken_from(
        config: &mut Config,
        (placed, addresses): (BTreeMap<String, String>, Vec<AddressSpec>),
    ) -> Self {
        Self {
            switch: std::mem::take(&mut config.switch),
            hosts: std::mem::take(&mut config.hosts),
            tenants: std::mem::take(&mut config.tenants),
            endpoints: std::mem::take(&mut config.endpoints),
            ports: std::mem::take(&mut config.ports),
            routes: std::mem::take(&mut config.routes),
            published: std::mem::take(&mut config.published),
            placed,
            addresses,
        }
    }

    /// Validates this model over `base` the way a store's model must be taken: a
    /// record that does not fit (a tenant, host, endpoint, route or published port
    /// another host wrote, or an older tenet accepted) is left out, with the reason,
    /// and the rest runs. Only a fault of this host's own part (its switch settings,
    /// its ports) refuses the whole.
    pub fn validate_leniently(
        &self,
        base: &Config,
    ) -> Result<(Validated, Vec<Skipped>), ConfigError> {
        let mut model = self.clone();
        let mut skipped = Vec::new();
        loop {
            let error = match model.over(base).into_validated() {
                Ok(validated) => return Ok((validated, skipped)),
                Err(error) => error,
            };
            let field = match &error {
                ConfigError::Invalid { field, .. } | ConfigError::Syntax { field, .. } => field,
                _ => return Err(error),
            };
            let Some(record) = model.take_record(field) else {
                return Err(error);
            };
            skipped.push(Skipped { record, error });
        }
    }

    /// Removes the record a config field path (`tenant[3].subnets`) points into;
    /// names it, or `None` when the field is no record's.
    fn take_record(&mut self, field: &str) -> Option<String> {
        let (list, rest) = field.split_once('[')?;
        let index: usize = rest.split_once(']')?.0.parse().ok()?;
        fn take<T>(list: &mut Vec<T>, index: usize, name: impl Fn(&T) -> String) -> Option<String> {
            (index < list.len()).then(|| name(&list.remove(index)))
        }
        match list {
            "tenant" => (index < self.tenants.len())
                .then(|| format!("tenant `{}`", self.tenants.remove(index).name)),
            "host" => take(&mut self.hosts, index, |h| format!("host `{}`", h.name)),
            "endpoint" => (index < self.endpoints.len()).then(|| {
                let e = self.endpoints.remove(index);
                format!("an endpoint of tenant `{}`", e.tenant)
            }),
            "route" => take(&mut self.routes, index, |r| {
                format!("route {} of tenant `{}`", r.prefix, r.tenant)
            }),
            "publish" => take(&mut self.published, index, |p| {
                format!(
                    "published {} port {} of tenant `{}`",
                    p.protocol, p.host_port, p.tenant
                )
            }),
            _ => None,
        }
    }

    /// Applies `change` and validates the result against `base`; on refusal nothing
    /// changes.
    pub fn apply(&self, change: &Change, base: &Config) -> Result<(Model, Validated), Refusal> {
        match change {
            Change::DeletePort(name) => self.check_port_unused(name, base)?,
            Change::DeleteTenant(name) => self.check_tenant_unused(name)?,
            _ => {}
        }
        let mut next = self.clone();
        // Errors about the new item are reported by its own field names.
        let (prefix, ok) = next.edit(change);
        if !ok {
            return Err(nothing_to_change(change));
        }
        // The model is copied once: its lists go into the config validated and come
        // back out of it (the plan keeps the config's own sections as its base).
        let own = (
            std::mem::take(&mut next.placed),
            std::mem::take(&mut next.addresses),
        );
        match next.into_config(base).checked() {
            Ok(mut validated) => {
                let next = Self::taken_from(&mut validated.source, own);
                Ok((next, validated))
            }
            Err(refused) => {
                let (error, mut config) = *refused;
                let next = Self::taken_from(&mut config, own);
                let validated = self.validate_leniently_after(error, &next, base, &prefix)?;
                Ok((next, validated))
            }
        }
    }

    /// This model with `change`, at `place` ([`Model::place_of`]), made, unchecked
    /// (the caller checked it).
    pub fn made(&self, change: &Change, place: Option<Place>) -> Model {
        let mut next = self.clone();
        match place {
            Some(place) if change.removes() => {
                next.remove_at(change, place);
            }
            _ => {
                next.edit(change);
            }
        }
        next
    }

    /// A port with endpoints, or cross-connected in the config file, stays.
    pub fn check_port_unused(&self, name: &str, base: &Config) -> Result<(), Refusal> {
        if let Some(e) = items(&self.endpoints).find(|e| e.port.as_deref() == Some(name)) {
            return Err(in_use(format!(
                "port `{name}` has endpoints of tenant `{}`; delete them first",
                e.tenant
            )));
        }
        if base
            .cross_connects
            .iter()
            .any(|x| x.ports.iter().any(|p| p == name))
        {
            return Err(in_use(format!(
                "port `{name}` is cross-connected in the config file"
            )));
        }
        Ok(())
    }

    /// A tenant a port, an endpoint, a route, a published port or a peer uses stays.
    pub fn check_tenant_unused(&self, name: &String) -> Result<(), Refusal> {
        self.check_tenant_unused_but_as_peer(name)?;
        if self.tenants.iter().any(|t| t.peers.contains(name)) {
            return Err(peered(name));
        }
        Ok(())
    }

    /// [`Model::check_tenant_unused`] but for the walk over every tenant's peers, for a
    /// caller that knows no tenant lists peers.
    pub fn check_tenant_unused_but_as_peer(&self, name: &String) -> Result<(), Refusal> {
        if let Some(port) = self.ports.iter().find(|p| {
            p.tenant.as_deref() == Some(name.as_str())
                || p.tenants.iter().flatten().any(|t| t == name)
        }) {
            return Err(in_use(format!(
                "tenant `{name}` is used by port `{}`",
                port.name.as_deref().unwrap_or("?")
            )));
        }
        if items(&self.endpoints).any(|e| &e.tenant == name) {
            return Err(in_use(format!(
                "tenant `{name}` has endpoints; delete them first"
            )));
        }
        if self.routes.iter().any(|r| &r.tenant == name)
            || self.published.iter().any(|p| &p.tenant == name)
        {
            return Err(peered(name));
        }
        if let Some(a) = self.addresses.iter().find(|a| &a.tenant == name) {
            return Err(in_use(format!(
                "tenant `{name}` has claimed addresses ({} held by `{}`); release them first",
                a.ip, a.owner
            )));
        }
        Ok(())
    }

    /// Makes `change`: the field prefix of the record it adds or changes (empty for a
    /// removal), and whether there was anything to change.
    fn edit(&mut self, change: &Change) -> (String, bool) {
        match change {
            Change::AddTenant(t) => {
                self.tenants.push_back(Arc::new(t.clone()));
                (format!("tenant[{}].", self.tenants.len() - 1), true)
            }
            Change::AddHost(h) => {
                self.hosts.push(h.clone());
                (format!("host[{}].", self.hosts.len() - 1), true)
            }
            Change::AddEndpoint(e) => {
                self.endpoints.push_back(e.clone());
                (format!("endpoint[{}].", self.endpoints.len() - 1), true)
            }
            Change::AddPort(p) => {
                self.ports.push((**p).clone());
                (format!("port[{}].", self.ports.len() - 1), true)
            }
            Change::AddRoute(r) => {
                self.routes.push(r.clone());
                (format!("route[{}].", self.routes.len() - 1), true)
            }
            Change::AddPublish(p) => {
                self.published.push(p.clone());
                (format!("publish[{}].", self.published.len() - 1), true)
            }
            Change::UpdateTenant(name, patch) => self.update_tenant(name, patch),
            Change::ClaimAddress(request) => match crate::addresses::resolve(self, request) {
                Ok(resolved) => {
                    self.addresses.push(resolved.spec);
                    (format!("address[{}].", self.addresses.len() - 1), true)
                }
                Err(_) => (String::new(), false),
            },
            Change::DeletePort(_)
            | Change::DeleteTenant(_)
            | Change::DeleteHost(_)
            | Change::DeleteEndpoint { .. }
            | Change::DeleteRoute { .. }
            | Change::DeletePublish { .. }
            | Change::ReleaseAddress { .. } => (String::new(), self.remove(change)),
        }
    }

    /// Removes what a deleting `change` names; whether there was any (never for
    /// another change).
    fn remove(&mut self, change: &Change) -> bool {
        match self.place_of(change) {
            Some(place) => self.remove_at(change, place),
            None => false,
        }
    }

    fn remove_at(&mut self, change: &Change, place: Place) -> bool {
        match (change, place) {
            (Change::DeletePort(_), Place::Port(i)) => drop(self.ports.remove(i)),
            (Change::DeleteTenant(name), Place::Tenant(i)) => {
                self.tenants.remove(i);
                self.placed.remove(name);
            }
            (Change::DeleteHost(_), Place::Host(i)) => drop(self.hosts.remove(i)),
            (Change::DeleteEndpoint { .. }, Place::Endpoint(i)) => drop(self.endpoints.remove(i)),
            (Change::DeleteRoute { .. }, Place::Route(i)) => drop(self.routes.remove(i)),
            (Change::DeletePublish { .. }, Place::Publish(i)) => drop(self.published.remove(i)),
            (Change::ReleaseAddress { .. }, Place::Address(i)) => drop(self.addresses.remove(i)),
            _ => return false,
        }
        true
    }

    /// Where `change` lands in this model (the model before it): the record it
    /// changes or removes, or the position a record it adds takes at the end of its
    /// list; `None` when it names nothing here.
    pub fn place_of(&self, change: &Change) -> Option<Place> {
        let tenant_named = |name: &str| self.tenants.iter().position(|t| t.name == name);
        Some(match change {
            Change::AddTenant(_) => Place::Tenant(self.tenants.len()),
            Change::AddHost(_) => Place::Host(self.hosts.len()),
            Change::AddEndpoint(_) => Place::Endpoint(self.endpoints.len()),
            Change::AddPort(_) => Place::Port(self.ports.len()),
            Change::AddRoute(_) => Place::Route(self.routes.len()),
            Change::AddPublish(_) => Place::Publish(self.published.len()),
            Change::ClaimAddress(_) => Place::Address(self.addresses.len()),
            Change::ReleaseAddress { tenant, ip, owner } => {
                Place::Address(self.addresses.iter().position(|a| {
                    &a.tenant == tenant
                        && a.ip == *ip
                        && owner.as_ref().is_none_or(|o| *o == a.owner)
                })?)
            }
            Change::UpdateTenant(name, _) | Change::DeleteTenant(name) => {
                Place::Tenant(tenant_named(name)?)
            }
            Change::DeletePort(name) => Place::Port(
                self.ports
                    .iter()
                    .position(|p| p.name.as_deref() == Some(name.as_str()))?,
            ),
            Change::DeleteHost(name) => {
                Place::Host(self.hosts.iter().position(|h| &h.name == name)?)
            }
            Change::DeleteEndpoint { tenant, mac } => {
                Place::Endpoint(items(&self.endpoints).position(|e| {
                    &e.tenant == tenant
                        && e.mac
                            .as_deref()
                            .is_some_and(|m| m.eq_ignore_ascii_case(mac))
                })?)
            }
            Change::DeleteRoute { tenant, prefix } => Place::Route(
                self.routes
                    .iter()
                    .position(|r| &r.tenant == tenant && &r.prefix == prefix)?,
            ),
            Change::DeletePublish {
                protocol,
                host_port,
            } => Place::Publish(
                self.published
                    .iter()
                    .position(|p| &p.protocol == protocol && p.host_port == *host_port)?,
            ),
        })
    }

    fn update_tenant(&mut self, name: &String, patch: &TenantPatch) -> (String, bool) {
        let Some(i) = self.tenants.iter().position(|t| &t.name == name) else {
            return (String::new(), false);
        };
        let t = Arc::make_mut(&mut self.tenants[i]);
        if let Some(host) = &patch.gateway_host {
            t.gateway_host = Some(host.clone());
            // Set again, even to `auto`: placed afresh.
            self.placed.remove(name);
        }
        if let Some(peers) = &patch.peers {
            t.peers = peers.clone();
        }
        if let Some(ip) = patch.snat_ip {
            t.snat_ip = Some(ip);
        }
        if let Some(n) = patch.max_connections {
            t.max_connections = Some(n);
        }
        (format!("tenant[{i}]."), true)
    }

    /// `next`, this model changed, failed validation with `error`: taken with its unfit
    /// records left out, unless the change itself brings one (`prefix` names the
    /// changed record).
    fn validate_leniently_after(
        &self,
        error: ConfigError,
        next: &Model,
        base: &Config,
        prefix: &str,
    ) -> Result<Validated, Refusal> {
        // The model may hold a record that was unfit before this change (another host
        // wrote it): it stays left out, as in the tables. Only a fault the change
        // brings refuses it.
        let Ok((validated, after)) = next.validate_leniently(base) else {
            return Err(refusal(error, prefix));
        };
        let before: hashbrown::HashSet<String> = self
            .validate_leniently(base)
            .map(|(_, skipped)| skipped.into_iter().map(|s| s.record).collect())
            .unwrap_or_default();
        if let Some(new) = after.into_iter().find(|s| !before.contains(&s.record)) {
            return Err(refusal(at_change(new.error, prefix), prefix));
        }
        Ok(validated)
    }
}

/// A 409 on the `name` field: what is deleted is still in use.
fn peered(name: &str) -> Refusal {
    in_use(format!(
        "tenant `{name}` has routes, published ports or peers; remove them first"
    ))
}

fn in_use(message: String) -> Refusal {
    Refusal {
        status: 409,
        field: "name".to_owned(),
        message,
    }
}

/// The refusal of a change that found nothing to change.
pub(crate) fn nothing_to_change(change: &Change) -> Refusal {
    match change {
        Change::DeleteTenant(name) => {
            Refusal::not_found("name", format!("no tenant is named `{name}`"))
        }
        Change::DeleteHost(name) => {
            Refusal::not_found("name", format!("no host is named `{name}`"))
        }
        Change::DeleteEndpoint { tenant, mac } => {
            Refusal::not_found("mac", format!("tenant `{tenant}` has no endpoint {mac}"))
        }
        Change::UpdateTenant(name, _) => {
            Refusal::not_found("name", format!("no tenant is named `{name}`"))
        }
        Change::DeleteRoute { tenant, prefix } => Refusal::not_found(
            "prefix",
            format!("tenant `{tenant}` has no route to {prefix}"),
        ),
        Change::DeletePublish {
            protocol,
            host_port,
        } => Refusal::not_found(
            "host_port",
            format!("{host_port}/{protocol} is not published"),
        ),
        Change::ReleaseAddress { tenant, ip, owner } => Refusal::not_found(
            "ip",
            match owner {
                Some(owner) => format!("`{owner}` holds no {ip} in tenant `{tenant}`"),
                None => format!("{ip} is not claimed in tenant `{tenant}`"),
            },
        ),
        _ => Refusal::not_found("", "nothing to change".to_owned()),
    }
}

/// An error found with unfit records left out names its record by a position in the
/// shorter list: give it the changed record's position again (`prefix`, `tenant[2].`).
fn at_change(error: ConfigError, prefix: &str) -> ConfigError {
    let list = prefix.split('[').next().unwrap_or_default();
    let rebase = |field: String| match field.split_once("].") {
        Some((head, rest)) if !list.is_empty() && head.split('[').next() == Some(list) => {
            format!("{prefix}{rest}")
        }
        _ => field,
    };
    match error {
        ConfigError::Invalid { field, message } => ConfigError::Invalid {
            field: rebase(field),
            message,
        },
        ConfigError::Syntax { field, message } => ConfigError::Syntax {
            field: rebase(field),
            message,
        },
        other => other,
    }
}

fn refusal(error: ConfigError, prefix: &str) -> Refusal {
    match error {
        ConfigError::Invalid { field, message } | ConfigError::Syntax { field, message } => {
            Refusal {
                status: if message.contains("used by")
                    || message.contains("twice")
                    || message.contains("already")
                {
                    409
                } else {
                    400
                },
                field: field
                    .strip_prefix(prefix)
                    .map(str::to_owned)
                    .unwrap_or(field),
                message,
            }
        }
        other => Refusal {
            status: 400,
            field: String::new(),
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_that_do_not_fit_are_left_out_and_named_and_the_rest_runs() {
        let base = Config::parse(
            r#"
[[tenant]]
name = "red"
id = 100
subnets = ["10.1.0.1/24"]

[[port]]
name = "c1"
backend = "ring"
role = "access"
tenant = "red"
"#,
            |_| None,
        )
        .unwrap();
        let mut model = Model::of(&base);
        let mut bad: TenantSpec = serde_json::from_value(serde_json::json!({
            "name": "blue", "id": 200, "subnets": ["10.2.0.1/99"],
        }))
        .unwrap();
        model.tenants.push_back(Arc::new(bad.clone()));
        model.endpoints.push_back(
            serde_json::from_value(serde_json::json!({
                "tenant": "blue", "mac": "02:00:00:00:0b:01", "port": "c1",
            }))
            .unwrap(),
        );
        let (validated, skipped) = model.validate_leniently(&base).unwrap();
        assert_eq!(validated.switching.tenants.len(), 1);
        assert!(validated.switching.endpoints.is_empty());
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped.iter().any(|s| s.record == "tenant `blue`"),
            "{skipped:?}"
        );
        assert!(
            skipped.iter().any(|s| s
                .to_string()
                .starts_with("an endpoint of tenant `blue`: config field `endpoint[0].port`")),
            "{skipped:?}"
        );
        // A change goes through beside the unfit records; one that is unfit itself
        // is refused with its own field.
        let green: TenantSpec =
            serde_json::from_value(serde_json::json!({"name": "green", "id": 300})).unwrap();
        let (next, validated) = model.apply(&Change::AddTenant(green), &base).unwrap();
        assert_eq!(next.tenants.len(), 3);
        assert_eq!(validated.switching.tenants.len(), 2);
        let unfit: TenantSpec = serde_json::from_value(
            serde_json::json!({"name": "grey", "id": 400, "subnets": ["nonsense"]}),
        )
        .unwrap();
        let refused = model.apply(&Change::AddTenant(unfit), &base).unwrap_err();
        assert_eq!(refused.field, "subnets[0]", "{refused:?}");
        // A fault of this host's own part refuses the whole.
        bad.name = "green".to_owned();
        model.ports[0].tenant = Some("nobody".to_owned());
        assert!(model.validate_leniently(&base).is_err());
    }
}
