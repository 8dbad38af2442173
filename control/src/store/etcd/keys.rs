//! The model as etcd keys and back: one key per object under the prefix, this host's
//! own part under `local/<host>/`, ids and VLANs claimed under `unique/`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::{EndpointSpec, HostSpec, SwitchSection, TenantSpec};
use crate::config::PortSpec;
use crate::model::Model;

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
    /// Where a tenant's floating gateway was placed.
    Placed {
        tenant: String,
        host: String,
    },
    /// A claimed tenant id or VLAN: no part of the model, but compared on writes.
    Unique,
    /// This host's own switch settings.
    Switch(SwitchSection),
    /// This host's own ports.
    Ports(Vec<PortSpec>),
    /// A host holding a live lease.
    Alive(String),
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
            return Record::Alive(host.to_owned());
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
                "placed" => Record::Placed {
                    tenant: path.strip_prefix("placed/").unwrap_or_default().to_owned(),
                    host: serde_json::from_str(value)?,
                },
                "unique" => Record::Unique,
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

    /// The model (and what this host has seen) from the keys under the prefix, in key
    /// order: (key, value, mod revision, what it holds). `None` when the cluster holds
    /// nothing shared yet.
    pub(super) fn build<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str, i64, &'a Record)>,
        seed: &Model,
    ) -> Option<Model> {
        let mut seen = self.lock_seen();
        // Updated in place rather than built again: at every watch event nearly every
        // key is as the last read left it, and copying them all is what a read cost.
        let mut taken: Vec<&str> = Vec::with_capacity(seen.len());
        let mut model = Model::bare(seed.switch.clone(), seed.ports.clone());
        let mut shared = false;
        let mut alive = BTreeSet::new();
        let mut skipped = BTreeSet::new();
        let mut skipped_keys = self.skipped_keys.lock().unwrap_or_else(|e| e.into_inner());
        for (key, value, revision, record) in keys {
            match record {
                Record::Host(host) => model.hosts.push(host.clone()),
                Record::Tenant(tenant) => {
                    model.tenants.push_back(std::sync::Arc::new(tenant.clone()))
                }
                Record::Endpoint(endpoint) => model.endpoints.push_back(endpoint.clone()),
                Record::Route(route) => model.routes.push(route.clone()),
                Record::Published(publish) => model.published.push(publish.clone()),
                Record::Placed { tenant, host } => {
                    model.placed.insert(tenant.clone(), host.clone());
                }
                Record::Unique => {}
                Record::Switch(switch) => model.switch = switch.clone(),
                Record::Ports(ports) => model.ports = ports.clone(),
                Record::Alive(host) => {
                    alive.insert(host.clone());
                    continue;
                }
                Record::Elsewhere => continue,
                // One garbled key (a bug elsewhere, a hand edit) costs that record
                // only; it stays in etcd untouched (never in `seen`, so never
                // rewritten or deleted from here).
                Record::Garbled(error) => {
                    if !skipped_keys.contains(key) {
                        tracing::warn!(%key, %error, "an etcd key does not hold what its place says; skipped");
                    }
                    skipped.insert(key.to_owned());
                    continue;
                }
            }
            shared |= !matches!(record, Record::Switch(_) | Record::Ports(_));
            taken.push(key);
            match seen.get_mut(key) {
                Some(held) if held.1 == revision && held.0 == value => {}
                Some(held) => *held = (value.to_owned(), revision),
                None => {
                    seen.insert(key.to_owned(), (value.to_owned(), revision));
                }
            }
        }
        // `taken` is in key order, and every key in it is in `seen`.
        if seen.len() != taken.len() {
            seen.retain(|key, _| taken.binary_search(&key.as_str()).is_ok());
        }
        *self.lock_alive() = alive;
        *skipped_keys = skipped;
        shared.then_some(model)
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
        let p = &self.prefix;
        let mut out = BTreeMap::new();
        let mut put = |key: String, value: String| {
            out.insert(key, value);
        };
        for host in &model.hosts {
            put(format!("{p}/hosts/{}", host.name), text(host)?);
        }
        for tenant in &model.tenants {
            put(format!("{p}/tenants/{}", tenant.name), text(tenant)?);
            put(
                format!("{p}/unique/tenant-id/{}", tenant.id),
                text(&tenant.name)?,
            );
            if let Some(vlan) = tenant.vlan {
                put(format!("{p}/unique/vlan/{vlan}"), text(&tenant.name)?);
            }
        }
        for (i, endpoint) in model.endpoints.iter().enumerate() {
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
            let mine = text(&self.as_stored(endpoint))?;
            let theirs = seen.get(&key).and_then(|(raw, _)| {
                let stored = serde_json::from_str(raw).ok()?;
                let here = text(&self.as_seen_here(stored)?).ok()?;
                (here == text(endpoint).ok()?).then(|| raw.clone())
            });
            put(key, theirs.unwrap_or(mine));
        }
        for route in &model.routes {
            let prefix = route.prefix.replace('/', "_");
            put(
                format!("{p}/routes/{}/{prefix}", route.tenant),
                text(route)?,
            );
        }
        for publish in &model.published {
            put(
                format!(
                    "{p}/published/{}/{}-{}",
                    publish.tenant, publish.protocol, publish.host_port
                ),
                text(publish)?,
            );
        }
        for (tenant, host) in &model.placed {
            put(format!("{p}/placed/{tenant}"), text(host)?);
        }
        put(
            format!("{p}/{}", self.local("switch")),
            text(&model.switch)?,
        );
        put(format!("{p}/{}", self.local("ports")), text(&model.ports)?);
        Ok(out)
    }
}

fn text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}

#[cfg(test)]
mod tests {
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
        /// Another host puts a key (the watch brings it).
        Put(usize, usize),
        Delete(usize),
        /// This host writes: seen at once, brought by the watch at the next change.
        OwnPut(usize, usize),
        OwnDelete(usize),
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
        }
    }

    type Built = (
        Option<Model>,
        BTreeMap<String, (String, i64)>,
        BTreeSet<String>,
        BTreeSet<String>,
    );

    fn outcome(store: &EtcdStore, model: Option<Model>) -> Built {
        let skipped = store.skipped_keys.lock().unwrap().clone();
        (model, store.lock_seen().clone(), store.alive(), skipped)
    }

    /// The model built afresh from every key, each parsed now.
    fn from_scratch(keys: &BTreeMap<String, (String, i64)>) -> Built {
        let store = EtcdStore::new(Vec::new(), "/t", HERE);
        let records: Vec<Record> = keys.iter().map(|(k, (v, _))| store.parse(k, v)).collect();
        let all = keys
            .iter()
            .zip(&records)
            .map(|((k, (v, r)), record)| (k.as_str(), v.as_str(), *r, record));
        let model = store.build(all, &seed());
        outcome(&store, model)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        /// Watch events applied one by one to the parsed cache, with this host's own
        /// writes laid over it, build the model that every key parsed afresh builds.
        #[test]
        fn the_cache_builds_what_the_keys_build(ops in prop::collection::vec(op(), 1..80)) {
            let store = EtcdStore::new(Vec::new(), "/t", HERE);
            *store.lock_cache() = Some(KeyCache::read(Vec::new(), 1));
            // What etcd holds, and this host's writes the watch has not brought yet.
            let mut etcd: BTreeMap<String, (String, i64)> = BTreeMap::new();
            let mut unwatched: Vec<(String, Option<String>, i64)> = Vec::new();
            let mut revision = 1;
            let value = |p: usize, v: usize| PLACES[p].1[v % PLACES[p].1.len()].to_owned();
            for op in ops.iter().chain([&Op::Read]) {
                let (place, put, own) = match op {
                    Op::Read => {
                        let built = store.load_cached(&seed()).unwrap();
                        prop_assert_eq!(outcome(&store, built), from_scratch(&etcd));
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
                revision += 1;
                match &put {
                    Some(value) => etcd.insert(key.clone(), (value.clone(), revision)),
                    None => etcd.remove(&key),
                };
                if own {
                    store.own_writes.lock().unwrap().insert(key.clone(), (put.clone(), revision));
                }
                unwatched.push((key, put, revision));
                if !own {
                    // The watch brings events in order: this host's earlier writes first.
                    let mut guard = store.lock_cache();
                    let cache = guard.as_mut().unwrap();
                    for (key, put, revision) in unwatched.drain(..) {
                        match put {
                            Some(value) => cache.put(key, value, revision),
                            None => cache.delete(&key),
                        }
                        cache.revision = revision;
                    }
                }
            }
        }
    }
}
