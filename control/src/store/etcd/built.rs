//! The model the cluster's keys build, kept up to date key by key: a watch event puts
//! or removes the one record its key holds (a binary search in the list of that
//! record's kind, kept in key order), so a read after a change costs what the change
//! touched, not the size of the cloud. The long lists are persistent, so handing the
//! model out shares them.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::AddressSpec;
use crate::config::switching::{EndpointSpec, HostSpec, SwitchSection};
use crate::config::{List, PortSpec};
use crate::model::Model;

use super::interest::Watch;
use super::keys::Record;

/// A model's list kept in its keys' order, with the keys beside it.
#[derive(Default)]
struct Keyed {
    keys: List<Arc<str>>,
}

/// A list a record can be put into or taken out of at a position.
trait Positioned<T> {
    fn insert_at(&mut self, at: usize, item: T);
    fn remove_at(&mut self, at: usize) -> T;
}

impl<T> Positioned<T> for Vec<T> {
    fn insert_at(&mut self, at: usize, item: T) {
        self.insert(at, item);
    }
    fn remove_at(&mut self, at: usize) -> T {
        self.remove(at)
    }
}

impl<T: Clone> Positioned<T> for List<T> {
    fn insert_at(&mut self, at: usize, item: T) {
        self.insert(at, item);
    }
    fn remove_at(&mut self, at: usize) -> T {
        self.remove(at)
    }
}

impl Keyed {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.keys.binary_search_by(|k| k.as_ref().cmp(key))
    }

    fn insert<T>(&mut self, list: &mut impl Positioned<T>, key: &str, item: T) {
        // A key holds one record: it is taken out before its new one goes in.
        if let Err(at) = self.find(key) {
            self.keys.insert(at, key.into());
            list.insert_at(at, item);
        }
    }

    fn remove<T>(&mut self, list: &mut impl Positioned<T>, key: &str) -> Option<T> {
        let at = self.find(key).ok()?;
        self.keys.remove(at);
        Some(list.remove_at(at))
    }
}

/// The model the keys read so far build, with what a read hands out besides it.
pub(super) struct Built {
    /// Hosts, tenants, endpoints, routes, published ports and placements; the switch
    /// settings and ports are this host's records, or the seed's when it has none.
    model: Model,
    hosts: Keyed,
    tenants: Keyed,
    endpoints: Keyed,
    routes: Keyed,
    published: Keyed,
    addresses: Keyed,
    switch: Option<SwitchSection>,
    ports: Option<Vec<PortSpec>>,
    /// Records of the cluster's shared part (not this host's own): none means the
    /// cluster stored nothing yet.
    shared: usize,
    /// Hosts holding a live lease.
    pub(super) alive: BTreeSet<String>,
    /// Those of them watching their own tenants only (they do not place gateways).
    pub(super) watching_own: BTreeSet<String>,
    /// Keys that do not hold what their place says.
    pub(super) skipped: BTreeSet<String>,
}

impl Default for Built {
    fn default() -> Self {
        Self {
            model: Model::bare(SwitchSection::default(), Vec::new()),
            hosts: Keyed::default(),
            tenants: Keyed::default(),
            endpoints: Keyed::default(),
            routes: Keyed::default(),
            published: Keyed::default(),
            addresses: Keyed::default(),
            switch: None,
            ports: None,
            shared: 0,
            alive: BTreeSet::new(),
            watching_own: BTreeSet::new(),
            skipped: BTreeSet::new(),
        }
    }
}

/// What the model holds for a key: enough to take it out again (the record itself is
/// in the model, not kept twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Held {
    Host,
    Tenant,
    Endpoint,
    Route,
    Published,
    Address,
    Placed(String),
    Unique,
    Switch,
    Ports,
    Alive(String),
    Elsewhere,
    Garbled,
}

impl Held {
    /// Whether the key is part of the model this host keeps (and so compared on its
    /// writes): not a lease, not another host's business, not garbled.
    pub(super) fn is_taken(&self) -> bool {
        !matches!(self, Held::Alive(_) | Held::Elsewhere | Held::Garbled)
    }

    /// Whether the key is part of the cluster's shared model.
    fn is_shared(&self) -> bool {
        self.is_taken() && !matches!(self, Held::Switch | Held::Ports)
    }
}

impl Built {
    /// Takes out what `key` held, noting in `touched` what that changes.
    pub(super) fn remove(&mut self, key: &str, held: &Held, touched: &mut Touched) {
        let model = &mut self.model;
        let tenant = match held {
            Held::Host => {
                self.hosts.remove::<HostSpec>(&mut model.hosts, key);
                None
            }
            Held::Tenant => self
                .tenants
                .remove(&mut model.tenants, key)
                .map(|t| t.name.clone()),
            Held::Endpoint => self
                .endpoints
                .remove::<EndpointSpec>(&mut model.endpoints, key)
                .map(|e| e.tenant),
            Held::Route => self
                .routes
                .remove::<RouteSpec>(&mut model.routes, key)
                .map(|r| r.tenant),
            Held::Published => self
                .published
                .remove::<PublishSpec>(&mut model.published, key)
                .map(|p| p.tenant),
            Held::Address => {
                // A claim moves nothing in the tables.
                self.addresses
                    .remove::<AddressSpec>(&mut model.addresses, key);
                None
            }
            Held::Placed(tenant) => {
                model.placed.remove(tenant);
                Some(tenant.clone())
            }
            Held::Switch => {
                self.switch = None;
                None
            }
            Held::Ports => {
                self.ports = None;
                None
            }
            Held::Alive(host) => {
                self.alive.remove(host);
                self.watching_own.remove(host);
                None
            }
            Held::Garbled => {
                self.skipped.remove(key);
                None
            }
            Held::Unique | Held::Elsewhere => None,
        };
        match (tenant, held) {
            (Some(tenant), _) => note(touched, tenant),
            (None, Held::Unique | Held::Elsewhere | Held::Address) => {}
            (None, _) => *touched = None,
        }
        if held.is_shared() {
            self.shared -= 1;
        }
    }

    /// Puts in what `key` holds now, noting in `touched` what that changes; what the
    /// model holds for it.
    pub(super) fn insert(&mut self, key: &str, record: Record, touched: &mut Touched) -> Held {
        record.touches(touched);
        let model = &mut self.model;
        let held = match record {
            Record::Host(host) => {
                self.hosts.insert(&mut model.hosts, key, host);
                Held::Host
            }
            Record::Tenant(tenant) => {
                self.tenants
                    .insert(&mut model.tenants, key, Arc::new(tenant));
                Held::Tenant
            }
            Record::Endpoint(endpoint) => {
                self.endpoints.insert(&mut model.endpoints, key, endpoint);
                Held::Endpoint
            }
            Record::Route(route) => {
                self.routes.insert(&mut model.routes, key, route);
                Held::Route
            }
            Record::Published(publish) => {
                self.published.insert(&mut model.published, key, publish);
                Held::Published
            }
            Record::Address(address) => {
                self.addresses.insert(&mut model.addresses, key, address);
                Held::Address
            }
            Record::Placed { tenant, host } => {
                model.placed.insert(tenant.clone(), host);
                Held::Placed(tenant)
            }
            Record::Unique => Held::Unique,
            Record::Switch(switch) => {
                self.switch = Some(switch);
                Held::Switch
            }
            Record::Ports(ports) => {
                self.ports = Some(ports);
                Held::Ports
            }
            Record::Alive(host, watch) => {
                self.alive.insert(host.clone());
                if watch == Watch::Own {
                    self.watching_own.insert(host.clone());
                }
                Held::Alive(host)
            }
            Record::Elsewhere => Held::Elsewhere,
            Record::Garbled(error) => {
                // One garbled key (a bug elsewhere, a hand edit) costs that record
                // only; it stays in etcd untouched (never in `seen`, so never
                // rewritten or deleted from here).
                tracing::warn!(%key, %error, "an etcd key does not hold what its place says; skipped");
                self.skipped.insert(key.to_owned());
                Held::Garbled
            }
        };
        if held.is_shared() {
            self.shared += 1;
        }
        held
    }

    /// The model, with this host's own settings and ports from `seed` where the
    /// cluster holds none; `None` when the cluster stored nothing shared yet.
    pub(super) fn model(&self, seed: &Model) -> Option<Model> {
        if self.shared == 0 {
            return None;
        }
        let mut model = self.model.clone();
        model.switch = self.switch.clone().unwrap_or_else(|| seed.switch.clone());
        model.ports = self.ports.clone().unwrap_or_else(|| seed.ports.clone());
        Some(model)
    }
}

/// What a read changed: the tenants whose records came, changed or went; `None` when
/// anything else did (hosts, leases, this host's own part, a garbled key) or the read
/// was of everything.
pub type Touched = Option<BTreeSet<String>>;

impl Record {
    /// Notes in `touched` what this record's coming changes.
    fn touches(&self, touched: &mut Touched) {
        let tenant = match self {
            Record::Tenant(tenant) => &tenant.name,
            Record::Endpoint(endpoint) => &endpoint.tenant,
            Record::Route(route) => &route.tenant,
            Record::Published(publish) => &publish.tenant,
            Record::Placed { tenant, .. } => tenant,
            Record::Unique | Record::Elsewhere | Record::Address(_) => return,
            Record::Host(_)
            | Record::Switch(_)
            | Record::Ports(_)
            | Record::Alive(..)
            | Record::Garbled(_) => {
                *touched = None;
                return;
            }
        };
        if touched
            .as_ref()
            .is_some_and(|names| !names.contains(tenant))
        {
            note(touched, tenant.clone());
        }
    }
}

/// Notes that `tenant`'s records changed.
fn note(touched: &mut Touched, tenant: String) {
    if let Some(names) = touched {
        names.insert(tenant);
    }
}
