//! The model as etcd keys and back: one key per object under the prefix, this host's
//! own part under `local/<host>/`, ids and VLANs claimed under `unique/`, and an index
//! of the hosts each tenant lives on under `member/<host>/<tenant>` (a tenant's
//! endpoints' hosts, the hosts it claims, its gateway's), written with the tenant's
//! records (one index key per record, see [`member_key`]), so that a host watching its
//! own tenants ([`super::interest`]) learns of a tenant that comes to it.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::{AddressSpec, EndpointSpec, HostSpec, SwitchSection, TenantSpec};
use crate::config::PortSpec;
use crate::model::{Change, Model};

use super::interest::Watch;
use super::EtcdStore;

/// What one key holds for this host, parsed once (when it is read, or the watch brings
/// it), so that building the model after a change parses only the keys that changed.
#[derive(Debug, Clone)]
pub(super) enum Record {
    Host(HostSpec),
    Tenant(TenantSpec),
    /// As this host sees it ([`EtcdStore::as_seen_here`]).
    Endpoint(EndpointSpec),
    Route(RouteSpec),
    Published(PublishSpec),
    /// A claimed address, as this host sees it (its own claims name no host).
    Address(AddressSpec),
    /// Where a tenant's floating gateway was placed.
    Placed {
        tenant: String,
        host: String,
    },
    /// A claimed tenant id or VLAN, or a host's membership of a tenant: no part of
    /// the model, but compared on writes.
    Unique,
    /// This host's own switch settings.
    Switch(SwitchSection),
    /// This host's own ports.
    Ports(Vec<PortSpec>),
    /// A host holding a live lease, and how much of the cluster it follows.
    Alive(String, Watch),
    /// None of this host's business: outside the prefix, another host's own part,
    /// another host's view of an endpoint here, a kind this version does not know.
    Elsewhere,
    /// Not what its place says (not JSON, not the record kind): why.
    Garbled(String),
}

impl EtcdStore {
    /// What `value`, at `key`, is to this host.
    pub(super) fn parse(&self, key: &str, value: &str) -> Record {
        let Some(path) = key.strip_prefix(&format!("{}/", self.prefix)) else {
            return Record::Elsewhere;
        };
        if let Some(host) = path.strip_prefix("alive/") {
            // A registration says whether the host watches its own tenants only (an
            // older tenet's says nothing: it watches everything).
            let watch = serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| v["watch"].as_str().and_then(Watch::parse))
                .unwrap_or_default();
            return Record::Alive(host.to_owned(), watch);
        }
        let kind = path.split('/').next().unwrap_or_default();
        let parsed = (|| -> serde_json::Result<Record> {
            Ok(match kind {
                "hosts" => Record::Host(serde_json::from_str(value)?),
                "tenants" => Record::Tenant(serde_json::from_str(value)?),
                // Another host's view of an endpoint here, without its port: this
                // host's own record is the one that counts.
                "endpoints" => match self.as_seen_here(serde_json::from_str(value)?) {
                    Some(endpoint) => Record::Endpoint(endpoint),
                    None => Record::Elsewhere,
                },
                "routes" => Record::Route(serde_json::from_str(value)?),
                "published" => Record::Published(serde_json::from_str(value)?),
                "addresses" => {
                    let mut address: AddressSpec = serde_json::from_str(value)?;
                    // A claim under another claim's key could never be released.
                    let place = format!("addresses/{}/{}", address.tenant, address.ip);
                    if path != place {
                        return Ok(Record::Garbled(format!("a claim of {place} at {path}")));
                    }
                    if address.host.as_deref() == Some(self.host.as_str()) {
                        address.host = None;
                    }
                    Record::Address(address)
                }
                "placed" => Record::Placed {
                    tenant: path.strip_prefix("placed/").unwrap_or_default().to_owned(),
                    host: serde_json::from_str(value)?,
                },
                "unique" | "member" => Record::Unique,
                "local" if path == self.local("switch") => {
                    Record::Switch(serde_json::from_str(value)?)
                }
                "local" if path == self.local("ports") => {
                    Record::Ports(serde_json::from_str(value)?)
                }
                _ => Record::Elsewhere,
            })
        })();
        parsed.unwrap_or_else(|e| Record::Garbled(e.to_string()))
    }

    /// An endpoint as the cluster keeps it: a local one (at a port of this host) also
    /// names this host, so the others know where it is.
    pub(super) fn as_stored(&self, endpoint: &EndpointSpec) -> EndpointSpec {
        let mut stored = endpoint.clone();
        if stored.port.is_some() && stored.host.is_none() {
            stored.host = Some(self.host.clone());
        }
        stored
    }

    /// A stored endpoint as this host sees it: at its port when it is here, at its host
    /// otherwise; `None` for a record of an endpoint here that names no port.
    pub(super) fn as_seen_here(&self, mut stored: EndpointSpec) -> Option<EndpointSpec> {
        match (&stored.host, &stored.port) {
            (Some(host), Some(_)) if *host == self.host => stored.host = None,
            (Some(host), None) if *host == self.host => return None,
            (Some(_), Some(_)) => stored.port = None,
            _ => {}
        }
        Some(stored)
    }

    pub(super) fn local(&self, what: &str) -> String {
        format!("local/{}/{what}", self.host)
    }

    /// The model as keys and values. An endpoint of another host is kept as that host
    /// stored it (with its port) unless this host changed it.
    pub(super) fn keys(
        &self,
        model: &Model,
        seen: &BTreeMap<String, (String, i64)>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        self.keys_in(model, seen, &Scope::All)
    }

    /// The keys and values of the records `scope` covers: a change's keys are found
    /// among its tenant's records, without writing out the whole model.
    pub(super) fn keys_in(
        &self,
        model: &Model,
        seen: &BTreeMap<String, (String, i64)>,
        scope: &Scope,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let p = &self.prefix;
        let mut out = BTreeMap::new();
        let mut put = |key: String, value: String| {
            out.insert(key, value);
        };
        let of = |tenant: &str| scope.covers(tenant);
        if scope.hosts() {
            for host in &model.hosts {
                put(format!("{p}/hosts/{}", host.name), text(host)?);
            }
        }
        let hosts: BTreeSet<&str> = model.hosts.iter().map(|h| h.name.as_str()).collect();
        for tenant in crate::config::items(&model.tenants).filter(|t| of(&t.name)) {
            put(format!("{p}/tenants/{}", tenant.name), text(tenant)?);
            for host in &tenant.hosts {
                put(member_key(p, host, &tenant.name, "claim"), String::new());
            }
            // A gateway on the egress host (`central`, or none named) needs no key:
            // the egress host holds every tenant's gateway and watches everything.
            if let Some(host) = tenant.gateway_host.as_deref().filter(|h| hosts.contains(h)) {
                put(member_key(p, host, &tenant.name, "gateway"), String::new());
            }
            put(
                format!("{p}/unique/tenant-id/{}", tenant.id),
                text(&tenant.name)?,
            );
            if let Some(vlan) = tenant.vlan {
                put(format!("{p}/unique/vlan/{vlan}"), text(&tenant.name)?);
            }
        }
        for (i, endpoint) in crate::config::items(&model.endpoints).enumerate() {
            if !of(&endpoint.tenant) {
                continue;
            }
            let mac = endpoint
                .mac
                .clone()
                .or_else(|| endpoint.macs.as_ref().and_then(|m| m.first().cloned()));
            let id = match (mac, endpoint.ip) {
                (Some(mac), _) => mac.to_ascii_lowercase(),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => format!("#{i}"),
            };
            let key = format!("{p}/endpoints/{}/{id}", endpoint.tenant);
            let stored = self.as_stored(endpoint);
            if let Some(host) = &stored.host {
                let why = format!("endpoint-{id}");
                put(member_key(p, host, &endpoint.tenant, &why), String::new());
            }
            let mine = text(&stored)?;
            let theirs = seen.get(&key).and_then(|(raw, _)| {
                let stored = serde_json::from_str(raw).ok()?;
                let here = text(&self.as_seen_here(stored)?).ok()?;
                (here == text(endpoint).ok()?).then(|| raw.clone())
            });
            put(key, theirs.unwrap_or(mine));
        }
        for route in model.routes.iter().filter(|r| of(&r.tenant)) {
            let prefix = route.prefix.replace('/', "_");
            put(
                format!("{p}/routes/{}/{prefix}", route.tenant),
                text(route)?,
            );
        }
        for publish in model.published.iter().filter(|p| of(&p.tenant)) {
            put(
                format!(
                    "{p}/published/{}/{}-{}",
                    publish.tenant, publish.protocol, publish.host_port
                ),
                text(publish)?,
            );
        }
        for address in model.addresses.iter().filter(|a| of(&a.tenant)) {
            // Stored naming the host that claimed it, which the others see.
            let host = address.host.clone().unwrap_or_else(|| self.host.clone());
            let why = format!("address-{}", address.ip);
            put(member_key(p, &host, &address.tenant, &why), String::new());
            let stored = AddressSpec {
                host: Some(host),
                ..address.clone()
            };
            put(
                format!("{p}/addresses/{}/{}", address.tenant, address.ip),
                text(&stored)?,
            );
        }
        for (tenant, host) in model.placed.iter().filter(|(t, _)| of(t)) {
            put(format!("{p}/placed/{tenant}"), text(host)?);
            put(member_key(p, host, tenant, "placed"), String::new());
        }

        if scope.local() {
            put(
                format!("{p}/{}", self.local("switch")),
                text(&model.switch)?,
            );
            put(format!("{p}/{}", self.local("ports")), text(&model.ports)?);
        }
        Ok(out)
    }
}

/// The key saying that `tenant` lives on `host` for the reason `why` (one record's:
/// an endpoint's id, `claim`, `gateway`, `placed`). Each goes with its record, written
/// and deleted in the record's transaction and guarded by its comparison, so the index
/// is never out of step with the records however hosts race.
pub(super) fn member_key(prefix: &str, host: &str, tenant: &str, why: &str) -> String {
    format!("{prefix}/member/{host}/{tenant}/{why}")
}

/// The tenant whose records `path` (under the prefix) is among.
pub(super) fn tenant_of(path: &str) -> Option<&str> {
    let (kind, rest) = path.split_once('/')?;
    match kind {
        "tenants" | "placed" => Some(rest),
        "endpoints" | "routes" | "published" | "addresses" => {
            rest.split_once('/').map(|(tenant, _)| tenant)
        }
        _ => None,
    }
}

/// Whether `path` (under the prefix) is a key of the member index.
pub(super) fn is_member(path: &str) -> bool {
    path.starts_with("member/")
}

/// The records a change may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The whole model.
    All,
    /// One tenant's records (its tenant, endpoints, routes, published ports, gateway
    /// placement and claimed id and VLAN).
    Tenant(String),
    /// The hosts.
    Hosts,
    /// This host's own switch settings and ports.
    Local,
}

impl Scope {
    /// What `change`, made to `before`, may touch: the records of the tenant it names,
    /// the hosts, or this host's own part.
    pub(crate) fn of(change: &Change, before: &Model) -> Self {
        match change {
            Change::AddHost(_) | Change::DeleteHost(_) => Scope::Hosts,
            // A change naming nothing here writes nothing of the shared model.
            _ => change
                .tenant_edited(before)
                .map_or(Scope::Local, Scope::Tenant),
        }
    }

    fn covers(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Tenant(name) => name == tenant,
            Scope::Hosts | Scope::Local => false,
        }
    }

    fn hosts(&self) -> bool {
        matches!(self, Scope::All | Scope::Hosts)
    }

    fn local(&self) -> bool {
        matches!(self, Scope::All | Scope::Local)
    }
}

fn text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::store::etcd::watch::KeyCache;

    const HERE: &str = "h1";

    /// Keys of every kind `build` tells apart, each with values it may hold (the last
    /// one garbled).
    const PLACES: &[(&str, &[&str])] = &[
        (
            "/t/hosts/a",
            &[
                r#"{"name":"a","underlay_ip":"10.0.0.1"}"#,
                r#"{"name":"a","underlay_ip":"10.0.0.2","egress":true}"#,
                "{",
            ],
        ),
        (
            "/t/hosts/b",
            &[r#"{"name":"b","underlay_ip":"10.0.0.3"}"#, "[]"],
        ),
        (
            "/t/tenants/x",
            &[
                r#"{"name":"x","id":1}"#,
                r#"{"name":"x","id":1,"vlan":5}"#,
                "7",
            ],
        ),
        ("/t/tenants/y", &[r#"{"name":"y","id":2}"#, "not json"]),
        ("/t/endpoints/x/02:00:00:00:00:01", ENDPOINTS),
        ("/t/endpoints/y/02:00:00:00:00:02", ENDPOINTS),
        (
            "/t/routes/x/10.9.0.0_16",
            &[
                r#"{"tenant":"x","prefix":"10.9.0.0/16","via":"10.1.0.9"}"#,
                "{}",
            ],
        ),
        (
            "/t/published/x/tcp-80",
            &[
                r#"{"tenant":"x","protocol":"tcp","host_port":80,"ip":"10.1.0.5","port":8080}"#,
                "1",
            ],
        ),
        (
            "/t/addresses/x/10.1.0.7",
            &[
                r#"{"tenant":"x","ip":"10.1.0.7","owner":"cni:n:c1:eth0","host":"h1"}"#,
                r#"{"tenant":"x","ip":"10.1.0.7","owner":"cni:n:c2:eth0","host":"h2"}"#,
                r#"{"tenant":"x","ip":"10.1.0.8","owner":"elsewhere"}"#,
                r#"{"tenant":"x","ip":"nope","owner":"o"}"#,
            ],
        ),
        ("/t/placed/x", &[r#""h1""#, r#""h2""#, "h2"]),
        ("/t/unique/tenant-id/1", &[r#""x""#, "anything"]),
        ("/t/local/h1/switch", &[r#"{"design":"shared"}"#, "{}", "{"]),
        (
            "/t/local/h1/ports",
            &[r#"[{"name":"p0","backend":"null"}]"#, "[]", "{}"],
        ),
        ("/t/local/h2/switch", &["{}", "{"]),
        ("/t/alive/h1", &["", "1"]),
        ("/t/alive/h2", &[""]),
        ("/t/unknown/z", &["{}"]),
        (
            "/other/hosts/a",
            &[r#"{"name":"z","underlay_ip":"10.0.0.9"}"#],
        ),
    ];

    /// Here at a port, here without one (another host's view), elsewhere at a port,
    /// at no host, garbled.
    const ENDPOINTS: &[&str] = &[
        r#"{"tenant":"x","mac":"02:00:00:00:00:01","host":"h1","port":"p0"}"#,
        r#"{"tenant":"x","mac":"02:00:00:00:00:01","host":"h1","port":null}"#,
        r#"{"tenant":"x","mac":"02:00:00:00:00:01","host":"h2","port":"p9"}"#,
        r#"{"tenant":"x","mac":"02:00:00:00:00:01","host":null,"port":null}"#,
        r#"{"tenant":"x"}"#,
    ];

    #[derive(Debug, Clone)]
    enum Op {
        /// Another host puts a key (the watch brings it later).
        Put(usize, usize),
        Delete(usize),
        /// This host writes: in the cache at once, brought by the watch later.
        OwnPut(usize, usize),
        OwnDelete(usize),
        /// The watch brings up to this many of the changes it has not brought yet.
        Watch(usize),
        /// A read of the model from the cache.
        Read,
    }

    fn op() -> impl Strategy<Value = Op> {
        let place = 0..PLACES.len();
        prop_oneof![
            4 => (place.clone(), any::<usize>()).prop_map(|(p, v)| Op::Put(p, v)),
            2 => place.clone().prop_map(Op::Delete),
            1 => (place.clone(), any::<usize>()).prop_map(|(p, v)| Op::OwnPut(p, v)),
            1 => place.prop_map(Op::OwnDelete),
            3 => (1..6usize).prop_map(Op::Watch),
            3 => Just(Op::Read),
        ]
    }

    fn seed() -> Model {
        Model {
            switch: SwitchSection::default(),
            hosts: Vec::new(),
            tenants: Default::default(),
            endpoints: Default::default(),
            ports: Vec::new(),
            routes: Vec::new(),
            published: Vec::new(),
            placed: BTreeMap::new(),
            addresses: Vec::new(),
        }
    }

    type Outcome = (
        Option<Model>,
        BTreeMap<String, (String, i64)>,
        BTreeSet<String>,
        BTreeSet<String>,
    );

    fn outcome(store: &EtcdStore, model: Option<Model>) -> Outcome {
        let skipped = store.skipped_keys.lock().unwrap().clone();
        (model, store.lock_seen().clone(), store.alive(), skipped)
    }

    /// The records of every tenant but `touched`'s, as text.
    fn untouched(model: &Model, touched: &BTreeSet<String>) -> Vec<String> {
        let other = |tenant: &str| !touched.contains(tenant);
        let text = |v: &dyn erased::Text| v.text();
        let mut out: Vec<String> = Vec::new();
        out.extend(
            model
                .tenants
                .iter()
                .filter(|t| other(&t.name))
                .map(|t| text(&**t)),
        );
        out.extend(
            model
                .endpoints
                .iter()
                .filter(|e| other(&e.tenant))
                .map(|e| text(e)),
        );
        out.extend(
            model
                .routes
                .iter()
                .filter(|r| other(&r.tenant))
                .map(|r| text(r)),
        );
        out.extend(
            model
                .published
                .iter()
                .filter(|p| other(&p.tenant))
                .map(|p| text(p)),
        );
        out.extend(
            model
                .placed
                .iter()
                .filter(|(t, _)| other(t))
                .map(|(t, h)| format!("{t}={h}")),
        );
        out
    }

    mod erased {
        pub trait Text {
            fn text(&self) -> String;
        }
        impl<T: serde::Serialize> Text for T {
            fn text(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }

    /// What every key builds, each parsed now and pushed in key order: the reference
    /// the cache's model, kept key by key, is held to.
    fn from_scratch(keys: &BTreeMap<String, (String, i64)>) -> Outcome {
        let store = EtcdStore::new(Vec::new(), "/t", HERE);
        let mut model = seed();
        let mut seen = BTreeMap::new();
        let mut alive = BTreeSet::from([HERE.to_owned()]);
        let mut skipped = BTreeSet::new();
        let mut shared = false;
        for (key, (value, revision)) in keys {
            let record = store.parse(key, value);
            match &record {
                Record::Host(host) => model.hosts.push(host.clone()),
                Record::Tenant(tenant) => model.tenants.push_back(Arc::new(tenant.clone())),
                Record::Endpoint(endpoint) => model.endpoints.push_back(endpoint.clone()),
                Record::Route(route) => model.routes.push(route.clone()),
                Record::Published(publish) => model.published.push(publish.clone()),
                Record::Address(address) => model.addresses.push(address.clone()),
                Record::Placed { tenant, host } => {
                    model.placed.insert(tenant.clone(), host.clone());
                }
                Record::Unique => {}
                Record::Switch(switch) => model.switch = switch.clone(),
                Record::Ports(ports) => model.ports = ports.clone(),
                Record::Alive(host, _) => {
                    alive.insert(host.clone());
                    continue;
                }
                Record::Elsewhere => continue,
                Record::Garbled(_) => {
                    skipped.insert(key.clone());
                    continue;
                }
            }
            shared |= !matches!(record, Record::Switch(_) | Record::Ports(_));
            seen.insert(key.clone(), (value.clone(), *revision));
        }
        (shared.then_some(model), seen, alive, skipped)
    }

    /// A range read again (a tenant newly held) replaces what the cache had there as
    /// of the read: keys the read lacks were deleted meanwhile and go, what it has
    /// comes in, and a write of this host newer than the read stays.
    #[test]
    fn a_range_read_again_replaces_what_the_cache_had_there() {
        use crate::store::etcd::client::KeyRange;
        let kv = |k: &str, v: &str, r: i64| (k.to_owned(), v.to_owned(), r);
        let mut cache = KeyCache::read(
            vec![
                kv("/t/endpoints/x/1", "a", 5),
                kv("/t/endpoints/x/2", "b", 6),
                kv("/t/endpoints/xy/1", "other tenant", 6),
            ],
            6,
        );
        cache.wrote("/t/endpoints/x/4", Some("mine"), 12);
        let range = KeyRange::prefix("/t/endpoints/x/");
        cache.take_range(
            &range,
            vec![
                kv("/t/endpoints/x/1", "a", 5),
                kv("/t/endpoints/x/3", "c", 8),
            ],
            9,
        );
        let held: Vec<(&str, &str)> = cache
            .values_in(&KeyRange::prefix("/t/endpoints/"))
            .collect();
        assert_eq!(
            held,
            [
                ("/t/endpoints/x/1", "a"),
                ("/t/endpoints/x/3", "c"),
                ("/t/endpoints/x/4", "mine"),
                ("/t/endpoints/xy/1", "other tenant"),
            ]
        );
        cache.forget(&range);
        let held: Vec<&str> = cache
            .values_in(&KeyRange::prefix("/t/endpoints/"))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(held, ["/t/endpoints/xy/1"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// A change's keys written out within its scope differ, between the model
        /// before and after, exactly where the whole model's keys differ.
        #[test]
        fn a_changes_scope_holds_every_key_it_changes(
            changes in prop::collection::vec(crate::config::grow::tests::change(), 1..40),
        ) {
            use crate::config::grow::tests::BASE;
            let base = crate::config::Config::parse(BASE, |_| None).unwrap();
            let store = EtcdStore::new(Vec::new(), "/t", "h1");
            let mut model = Model::of(&base);
            for t in 0..6 {
                model.placed.insert(format!("t{t}"), "h2".to_owned());
            }
            let none = BTreeMap::new();
            let differ = |before: &Model, after: &Model, scope: &Scope| {
                let was = store.keys_in(before, &none, scope).unwrap();
                let now = store.keys_in(after, &none, scope).unwrap();
                let keys: BTreeSet<&String> = was.keys().chain(now.keys()).collect();
                keys.into_iter()
                    .filter(|k| was.get(*k) != now.get(*k))
                    .map(|k| (k.clone(), was.get(k).cloned(), now.get(k).cloned()))
                    .collect::<Vec<_>>()
            };
            for change in &changes {
                let Ok((after, _)) = model.apply(change, &base) else {
                    continue;
                };
                prop_assert_eq!(
                    differ(&model, &after, &Scope::of(change, &model)),
                    differ(&model, &after, &Scope::All),
                    "{:?}", change
                );
                model = after;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Watch events applied one by one to the cache, this host's own writes put
        /// in as etcd takes them, build at every read what the keys the watch brought
        /// build with this host's later writes laid over them, key by key as from
        /// scratch.
        #[test]
        fn the_cache_builds_what_the_keys_build(ops in prop::collection::vec(op(), 1..80)) {
            let store = EtcdStore::new(Vec::new(), "/t", HERE);
            *store.lock_cache() = Some(KeyCache::read(Vec::new(), 1));
            // Every change etcd took, in order: (key, value or deleted, revision, this
            // host's); the watch has brought the first `watched`.
            let mut log: Vec<(String, Option<String>, i64, bool)> = Vec::new();
            let mut watched = 0;
            let mut etcd: BTreeMap<String, String> = BTreeMap::new();
            let mut last_read: Option<Outcome> = None;
            let value = |p: usize, v: usize| PLACES[p].1[v % PLACES[p].1.len()].to_owned();
            for op in ops.iter().chain([&Op::Read]) {
                let (place, put, own) = match op {
                    Op::Read => {
                        let (built, touched) = store.load_changes(&seed()).unwrap();
                        let now = outcome(&store, built.clone());
                        // What the read says it touched is all that changed.
                        // (A model that comes or goes is taken whole.)
                        let models = last_read.as_ref().map(|last| (&last.0, &now.0));
                        if let (Some(names), Some((before @ Some(_), after @ Some(_))), Some(last)) = (&touched, models, &last_read) {
                            prop_assert_eq!(before.as_ref().map(|m| (&m.hosts, &m.switch, &m.ports)), after.as_ref().map(|m| (&m.hosts, &m.switch, &m.ports)));
                            prop_assert_eq!(&last.2, &now.2);
                            prop_assert_eq!(&last.3, &now.3);
                            let others = |m: &Option<Model>| m.as_ref().map(|m| untouched(m, names));
                            prop_assert_eq!(others(before), others(after));
                        }
                        let built = now.0.clone();
                        last_read = Some(now);
                        let mut expected: BTreeMap<String, (String, i64)> = BTreeMap::new();
                        let seen = log[..watched].iter();
                        let own_later = log[watched..].iter().filter(|change| change.3);
                        for (key, put, revision, _) in seen.chain(own_later) {
                            match put {
                                Some(value) => expected.insert(key.clone(), (value.clone(), *revision)),
                                None => expected.remove(key),
                            };
                        }
                        prop_assert_eq!(outcome(&store, built), from_scratch(&expected));
                        continue;
                    }
                    Op::Watch(n) => {
                        let mut guard = store.lock_cache();
                        let cache = guard.as_mut().unwrap();
                        let upto = (watched + n).min(log.len());
                        for (key, put, revision, _) in &log[watched..upto] {
                            match put {
                                Some(value) => cache.put(key.clone(), value.clone(), *revision),
                                None => cache.delete(key, *revision),
                            }
                            cache.reached(*revision);
                        }
                        watched = upto;
                        continue;
                    }
                    Op::Put(p, v) => (*p, Some(value(*p, *v)), false),
                    Op::Delete(p) => (*p, None, false),
                    Op::OwnPut(p, v) => (*p, Some(value(*p, *v)), true),
                    Op::OwnDelete(p) => (*p, None, true),
                };
                let key = PLACES[place].0.to_owned();
                // etcd has no event for deleting what is not there.
                if put.is_none() && !etcd.contains_key(&key) {
                    continue;
                }
                let revision = log.len() as i64 + 2;
                match &put {
                    Some(value) => etcd.insert(key.clone(), value.clone()),
                    None => etcd.remove(&key),
                };
                if own {
                    // What a write does once etcd took it (`EtcdStore::write`).
                    store.own_writes.lock().unwrap().insert(key.clone(), (put.clone(), revision));
                    let mut guard = store.lock_cache();
                    guard.as_mut().unwrap().wrote(&key, put.as_deref(), revision);
                    let mut seen = store.lock_seen();
                    match &put {
                        Some(value) => seen.insert(key.clone(), (value.clone(), revision)),
                        None => seen.remove(&key),
                    };
                }
                log.push((key, put, revision, own));
            }
        }
    }
}
