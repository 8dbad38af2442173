//! The cluster store: the model in etcd under a key prefix, one key per object, so
//! hosts share hosts, tenants, endpoints, routes and published ports, while each keeps
//! its switch settings and ports under `local/<its name>/`. Tenant ids and VLANs are
//! also claimed under `unique/`.
//!
//! A write is one etcd transaction that compares every key it touches with the
//! revision this host last saw (a key it creates must not exist yet), so a write that
//! races another host's, or takes a tenant id or VLAN another host holds, is refused
//! with the key it collided on, never merged.
//!
//! Floating gateways' hosts are recorded under `placed/` by the cluster's placer
//! ([`crate::placement`]). Each host reports the traffic its gateways send out under
//! `<prefix>-load/<host>`, beside the prefix rather than under it: reports change all
//! the time, only the placer reads them, and the hosts' watches need not carry them.
//!
//! etcd is reached through its v3 JSON gateway over HTTP/1.0: no gRPC stack, and a
//! reply is read to the end of the connection.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use crate::config::switching::EndpointSpec;
use crate::model::Model;
use crate::placement::{self, GatewayPlacement, TRAFFIC_STEP_BPS};

/// Operations per etcd transaction (etcd refuses more than 128).
const MAX_TXN_OPS: usize = 64;

/// How long connecting to an etcd endpoint, or sending to it, may take before the
/// next endpoint is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take: reading a large cluster's whole prefix takes etcd
/// seconds when many hosts start at once.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys under the prefix with their values and mod revisions, with every change up to
/// `revision` applied; read whole at revision `base` (a watch replaying older events
/// after a reconnection must not undo newer state).
struct KeyCache {
    keys: BTreeMap<String, (String, i64)>,
    revision: i64,
    base: i64,
}

/// This host's own writes not yet seen through the watch: (value or `None` for a
/// delete, revision) by key.
type OwnWrites = BTreeMap<String, (Option<String>, i64)>;

/// What a host keeps of the cluster for a start without etcd.
#[derive(serde::Serialize, serde::Deserialize)]
struct LocalCopy {
    model: Model,
    alive: BTreeSet<String>,
}

/// A write refused because another host changed what it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The API field the colliding key stands for (`name`, `id`, `vlan`, ...).
    pub field: String,
    /// What collided, in words.
    pub message: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Conflict {}

/// A model kept in etcd.
pub struct EtcdStore {
    endpoints: Vec<String>,
    prefix: String,
    host: String,
    /// Every key of ours as last read or written: its value and mod revision.
    seen: Mutex<BTreeMap<String, (String, i64)>>,
    /// The cluster's revision at the last load: a watch goes on from there.
    loaded_at: AtomicI64,
    /// Hosts holding a live lease at the last load.
    alive: Mutex<BTreeSet<String>>,
    /// Every key under the prefix, as the last load read them and the watch has
    /// changed them since (`None`: to be read from etcd).
    cache: Arc<Mutex<Option<KeyCache>>>,
    /// What this host wrote that the cache may not hold yet: a reload before the watch
    /// brings it must not take the older revisions for current (the next write would
    /// be refused as a conflict with this host itself).
    own_writes: Mutex<OwnWrites>,
    /// Seconds a host stays alive without renewing its lease.
    lease_ttl: u64,
    /// Tells the watch and lease threads to end.
    stop: Arc<AtomicBool>,
    /// The lease this host is registered under, revoked when it stops.
    lease: Arc<Mutex<Option<String>>>,
    /// What places floating gateways when this host is the placer.
    gateway_placement: GatewayPlacement,
    /// Bits a second this host's gateways send out (an `f64`'s bits), reported with
    /// the lease.
    egress_bps: Arc<AtomicU64>,
    /// Where this host keeps its own view of the model for a start without etcd.
    local_copy: Option<PathBuf>,
    /// Keys under the prefix that are not what their place says (not JSON, not the
    /// record kind), skipped at the last read.
    skipped_keys: Mutex<BTreeSet<String>>,
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port`), under `prefix`,
    /// for host `host`.
    pub fn new(endpoints: Vec<String>, prefix: &str, host: &str) -> Self {
        Self::with_lease(endpoints, prefix, host, 10)
    }

    /// The same, with hosts counted dead `lease_ttl` seconds after their last renewal.
    pub fn with_lease(endpoints: Vec<String>, prefix: &str, host: &str, lease_ttl: u64) -> Self {
        Self {
            alive: Mutex::new(BTreeSet::new()),
            cache: Arc::new(Mutex::new(None)),
            own_writes: Mutex::new(BTreeMap::new()),
            lease_ttl,
            endpoints,
            prefix: prefix.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            seen: Mutex::new(BTreeMap::new()),
            loaded_at: AtomicI64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            lease: Arc::new(Mutex::new(None)),
            gateway_placement: GatewayPlacement::Tenants,
            egress_bps: Arc::new(AtomicU64::new(0f64.to_bits())),
            local_copy: None,
            skipped_keys: Mutex::new(BTreeSet::new()),
        }
    }

    /// The same, keeping this host's view of the model at `path` (see
    /// [`EtcdStore::keep_view`]).
    pub fn with_local_copy(mut self, path: PathBuf) -> Self {
        self.local_copy = Some(path);
        self
    }

    /// Writes the model and the hosts alive now to the local copy: what this host
    /// runs, for a start while etcd does not answer.
    pub fn keep_copy(&self, model: &Model) -> anyhow::Result<()> {
        let Some(path) = &self.local_copy else {
            return Ok(());
        };
        let copy = LocalCopy {
            model: model.clone(),
            alive: self.lock_alive().clone(),
        };
        let bytes = serde_json::to_vec_pretty(&copy).context("encoding the local copy")?;
        crate::store::write_private(path, &bytes)
    }

    /// The model as this host last kept it, with the hosts then alive taken as alive
    /// again, for a start while etcd does not answer (`None`: no copy).
    pub fn restore_copy(&self) -> anyhow::Result<Option<Model>> {
        let Some(path) = &self.local_copy else {
            return Ok(None);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let copy: LocalCopy = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a local copy of a cluster's model",
                path.display()
            )
        })?;
        *self.lock_alive() = copy.alive;
        Ok(Some(copy.model))
    }

    /// Keys skipped at the last read because they do not hold what their place says.
    pub fn skipped_keys(&self) -> usize {
        self.skipped_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The same, placing floating gateways `by` count or traffic when this host is the placer.
    pub fn placing_gateways_by(mut self, by: GatewayPlacement) -> Self {
        self.gateway_placement = by;
        self
    }

    /// Sets the gateway egress this host reports (bits a second); the lease thread
    /// writes it when it has changed by a step or the lease is new.
    pub fn report_egress(&self, bps: f64) {
        self.egress_bps.store(bps.to_bits(), Ordering::Relaxed);
    }

    /// The gateway egress every living host reported last, by host.
    pub fn egress_reports(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let start = self.load_prefix();
        let (kvs, _) = self.range_of(&start)?;
        let mut reports = BTreeMap::new();
        for (key, value, _) in kvs {
            let host = key.strip_prefix(&start).unwrap_or_default();
            let bps = serde_json::from_str::<Value>(&value)
                .ok()
                .and_then(|report| report["egress_bps"].as_f64())
                .filter(|bps| bps.is_finite() && *bps >= 0.0);
            match bps {
                Some(bps) => {
                    reports.insert(host.to_owned(), bps);
                }
                // One host's garbled report must not cost the others theirs.
                None => {
                    tracing::warn!(%key, %value, "not a traffic report; that host counts as idle")
                }
            }
        }
        Ok(reports)
    }

    fn load_prefix(&self) -> String {
        format!("{}-load/", self.prefix)
    }

    /// `model` with its floating gateways' records brought up to date, when this host
    /// is the cluster's placer and they are not; `None` otherwise. Traffic reports are
    /// read only when a gateway has to be placed.
    pub fn with_placements(&self, model: &Model) -> Option<Model> {
        // A host whose own registration has lapsed sees itself alone; were it to place,
        // every host cut off the same way (etcd slow to renew all leases at once) would
        // overwrite the others' records in turn until they are registered again.
        let registered = self.lock_alive().contains(&self.host);
        let alive = self.alive();
        if !registered || placement::placer(&alive) != Some(self.host.as_str()) {
            return None;
        }
        let none = BTreeMap::new();
        let mut records = placement::records(model, &alive, GatewayPlacement::Tenants, &none);
        if records == model.placed {
            return None;
        }
        if self.gateway_placement == GatewayPlacement::Traffic {
            let reports = self.egress_reports().unwrap_or_else(|e| {
                tracing::warn!(error = %format!("{e:#}"), "no traffic reports; placing gateways by tenant count");
                none
            });
            records = placement::records(model, &alive, GatewayPlacement::Traffic, &reports);
        }
        for (tenant, host) in &records {
            if model.placed.get(tenant) != Some(host) {
                tracing::info!(tenant = %tenant, host = %host, by = ?self.gateway_placement, "placed a gateway");
            }
        }
        let mut placed = model.clone();
        placed.placed = records;
        Some(placed)
    }

    /// Follows every change under the prefix after the last load, on a thread of its
    /// own, and says so on the returned channel (several changes may come as one
    /// message; the receiver reloads). When etcd goes away the thread reconnects and
    /// resumes from the revision after the last one it saw, so no change is missed;
    /// if etcd compacted that away, the next message makes the receiver reload all.
    /// Without a first load (etcd was away at start) it follows from when etcd
    /// answers, and says so at once: the receiver's reload reads everything then.
    pub fn watch(&self) -> tokio::sync::mpsc::Receiver<()> {
        let (changed, receiver) = tokio::sync::mpsc::channel(1);
        let loaded_at = self.loaded_at.load(Ordering::Relaxed);
        let follower = Follower {
            cache: Arc::clone(&self.cache),
            endpoints: self.endpoints.clone(),
            start: format!("{}/", self.prefix),
            next_revision: if loaded_at > 0 { loaded_at + 1 } else { 0 },
            changed,
            stop: Arc::clone(&self.stop),
        };
        let spawned = std::thread::Builder::new()
            .name("tenet-etcd-watch".to_owned())
            .spawn(move || follower.run());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the etcd watch");
        }
        receiver
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The keys and values `model` takes in etcd (this host's own part included).
    pub fn keys_of(&self, model: &Model) -> anyhow::Result<BTreeMap<String, String>> {
        self.keys(model, &BTreeMap::new())
    }

    /// Hosts alive at the last load (this one always among them).
    pub fn alive(&self) -> BTreeSet<String> {
        let mut alive = self.lock_alive().clone();
        alive.insert(self.host.clone());
        alive
    }

    /// Hosts registered at the last load, as etcd has them.
    fn lock_alive(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.alive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers this host under a lease it renews on a thread of its own every third
    /// of the lease time; a host that stops renewing (killed, cut off) drops out of
    /// every other host's tunnels when the lease runs out. A lease lost while etcd was
    /// away is taken anew, and so is a first one etcd did not grant: the thread keeps
    /// asking (an error here is only a thread that did not start).
    pub fn register(&self) -> anyhow::Result<()> {
        let lease = Lease {
            endpoints: self.endpoints.clone(),
            key: format!("{}/alive/{}", self.prefix, self.host),
            report_key: format!("{}{}", self.load_prefix(), self.host),
            egress_bps: Arc::clone(&self.egress_bps),
            ttl: self.lease_ttl,
            stop: Arc::clone(&self.stop),
            current: Arc::clone(&self.lease),
        };
        let id = match lease.grant() {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not register in the cluster yet; trying again");
                None
            }
        };
        std::thread::Builder::new()
            .name("tenet-etcd-lease".to_owned())
            .spawn(move || lease.keep(id))
            .context("starting the lease thread")?;
        Ok(())
    }

    /// Where the model is kept, for logs.
    pub fn describe(&self) -> String {
        format!("etcd {} under {}/", self.endpoints.join(","), self.prefix)
    }

    /// The cluster's model with this host's own part, or `None` when the cluster has
    /// stored nothing yet. A host new to the cluster takes its switch settings and
    /// ports from `seed` (its config).
    pub fn load(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        let (kvs, revision) = self.range()?;
        self.loaded_at.store(revision, Ordering::Relaxed);
        *self.lock_cache() = Some(KeyCache {
            keys: kvs
                .iter()
                .map(|(k, v, r)| (k.clone(), (v.clone(), *r)))
                .collect(),
            revision,
            base: revision,
        });
        self.build(kvs, seed)
    }

    /// The model from the keys the watch has kept up to date, without asking etcd;
    /// from etcd itself when there are none (before the first load, or after etcd
    /// compacted away changes the watch had not seen).
    pub fn load_cached(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        let cached: Option<Vec<(String, String, i64)>> = self.lock_cache().as_ref().map(|c| {
            let mut own = self.own_writes.lock().unwrap_or_else(|e| e.into_inner());
            own.retain(|_, (_, revision)| *revision > c.revision);
            if own.is_empty() {
                return c
                    .keys
                    .iter()
                    .map(|(k, (v, r))| (k.clone(), v.clone(), *r))
                    .collect();
            }
            let mut keys = c.keys.clone();
            for (key, (value, revision)) in own.iter() {
                match value {
                    Some(value) => keys.insert(key.clone(), (value.clone(), *revision)),
                    None => keys.remove(key),
                };
            }
            keys.into_iter().map(|(k, (v, r))| (k, v, r)).collect()
        });
        match cached {
            Some(kvs) => self.build(kvs, seed),
            None => self.load(seed),
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<KeyCache>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The model (and what this host has seen) from the keys under the prefix.
    fn build(
        &self,
        kvs: Vec<(String, String, i64)>,
        seed: &Model,
    ) -> anyhow::Result<Option<Model>> {
        let mut seen = self.lock_seen();
        seen.clear();
        let mut model = Model {
            switch: seed.switch.clone(),
            ports: seed.ports.clone(),
            hosts: Vec::new(),
            tenants: Vec::new(),
            endpoints: Vec::new(),
            routes: Vec::new(),
            published: Vec::new(),
            placed: BTreeMap::new(),
        };
        let mut shared = false;
        let mut alive = BTreeSet::new();
        let mut skipped = BTreeSet::new();
        for (key, value, revision) in kvs {
            let Some(path) = key.strip_prefix(&format!("{}/", self.prefix)) else {
                continue;
            };
            if let Some(host) = path.strip_prefix("alive/") {
                alive.insert(host.to_owned());
                continue;
            }
            let kind = path.split('/').next().unwrap_or_default();
            let taken = (|| -> anyhow::Result<bool> {
                match kind {
                    "hosts" => model.hosts.push(serde_json::from_str(&value)?),
                    "tenants" => model.tenants.push(serde_json::from_str(&value)?),
                    "endpoints" => {
                        let stored: EndpointSpec = serde_json::from_str(&value)?;
                        match self.as_seen_here(stored) {
                            Some(endpoint) => model.endpoints.push(endpoint),
                            // Another host's view of an endpoint here, without its
                            // port: this host's own record is the one that counts.
                            None => return Ok(false),
                        }
                    }
                    "routes" => model.routes.push(serde_json::from_str(&value)?),
                    "published" => model.published.push(serde_json::from_str(&value)?),
                    "placed" => {
                        let tenant = path.strip_prefix("placed/").unwrap_or_default();
                        model
                            .placed
                            .insert(tenant.to_owned(), serde_json::from_str(&value)?);
                    }
                    "unique" => {}
                    "local" if path == self.local("switch") => {
                        model.switch = serde_json::from_str(&value)?;
                    }
                    "local" if path == self.local("ports") => {
                        model.ports = serde_json::from_str(&value)?;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            })();
            match taken {
                Ok(true) => {}
                Ok(false) => continue,
                // One garbled key (a bug elsewhere, a hand edit) costs that record
                // only; it stays in etcd untouched (never in `seen`, so never
                // rewritten or deleted from here).
                Err(e) => {
                    let known = self
                        .skipped_keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&key);
                    if !known {
                        tracing::warn!(%key, error = %e, "an etcd key does not hold what its place says; skipped");
                    }
                    skipped.insert(key);
                    continue;
                }
            }
            shared |= kind != "local";
            seen.insert(key, (value, revision));
        }
        *self.lock_alive() = alive;
        *self.skipped_keys.lock().unwrap_or_else(|e| e.into_inner()) = skipped;
        Ok(shared.then_some(model))
    }

    /// Writes what changed since the last load or save in one transaction; refused
    /// (nothing written) with a [`Conflict`] when another host got there first.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        let seen = self.lock_seen();
        let desired = self.keys(model, &seen)?;
        let gone: Vec<String> = seen
            .keys()
            .filter(|key| !desired.contains_key(*key))
            .cloned()
            .collect();
        self.write(seen, desired, gone)
    }

    /// Writes what turned `before` into `after`, and nothing else, in one transaction
    /// compared with what this host read: a key the change does not touch is left as
    /// the cluster has it, even when this host's `before` is older than its last read
    /// (another host's write that arrived while the change was prepared stays).
    pub fn save_change(&self, before: &Model, after: &Model) -> anyhow::Result<()> {
        let seen = self.lock_seen();
        let was = self.keys(before, &seen)?;
        let now = self.keys(after, &seen)?;
        let gone: Vec<String> = was
            .keys()
            .filter(|key| !now.contains_key(*key) && seen.contains_key(*key))
            .cloned()
            .collect();
        let desired: BTreeMap<String, String> = now
            .into_iter()
            .filter(|(key, value)| was.get(key) != Some(value))
            .collect();
        self.write(seen, desired, gone)
    }

    /// Puts `desired` and deletes `gone`, each compared with the revision this host
    /// saw (a key it puts anew must not exist yet).
    fn write(
        &self,
        mut seen: std::sync::MutexGuard<'_, BTreeMap<String, (String, i64)>>,
        desired: BTreeMap<String, String>,
        gone: Vec<String>,
    ) -> anyhow::Result<()> {
        // (key, new value or None to delete, compare if any, request)
        let mut ops: Vec<(String, Option<String>, Option<Value>, Value)> = Vec::new();
        for (key, value) in &desired {
            let compare = match seen.get(key) {
                Some((old, _)) if old == value => continue,
                Some((_, revision)) => json!({
                    "key": BASE64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": revision.to_string(),
                }),
                None => json!({
                    "key": BASE64.encode(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0",
                }),
            };
            let compare = Some(compare);
            let put = json!({"request_put": {
                "key": BASE64.encode(key), "value": BASE64.encode(value),
            }});
            ops.push((key.clone(), Some(value.clone()), compare, put));
        }
        let record = format!("{}/placed/", self.prefix);
        for key in &gone {
            // A placement record may go whatever the placer wrote meanwhile: the
            // placer places the tenant again from what the change leaves.
            let compare = (!key.starts_with(&record)).then(|| {
                json!({
                    "key": BASE64.encode(key), "target": "MOD", "result": "EQUAL",
                    "mod_revision": seen[key].1.to_string(),
                })
            });
            let delete = json!({"request_delete_range": {"key": BASE64.encode(key)}});
            ops.push((key.clone(), None, compare, delete));
        }
        // etcd takes 128 operations per transaction: a larger change (a cluster seeded
        // from a big config) goes in several, each all or nothing.
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let compare: Vec<&Value> = chunk.iter().filter_map(|op| op.2.as_ref()).collect();
            let success: Vec<&Value> = chunk.iter().map(|op| &op.3).collect();
            let reply = self.call(
                "/v3/kv/txn",
                &json!({"compare": compare, "success": success}),
            )?;
            if reply["succeeded"] != json!(true) {
                drop(seen);
                return Err(self.explain_conflict(&desired, &gone).into());
            }
            let revision = revision_of(&reply["header"]);
            let mut own = self.own_writes.lock().unwrap_or_else(|e| e.into_inner());
            for (key, value, _, _) in chunk {
                own.insert(key.clone(), (value.clone(), revision));
                match value {
                    Some(value) => {
                        seen.insert(key.clone(), (value.clone(), revision));
                    }
                    None => {
                        seen.remove(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, i64)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An endpoint as the cluster keeps it: a local one (at a port of this host) also
    /// names this host, so the others know where it is.
    fn as_stored(&self, endpoint: &EndpointSpec) -> EndpointSpec {
        let mut stored = endpoint.clone();
        if stored.port.is_some() && stored.host.is_none() {
            stored.host = Some(self.host.clone());
        }
        stored
    }

    /// A stored endpoint as this host sees it: at its port when it is here, at its host
    /// otherwise; `None` for a record of an endpoint here that names no port.
    fn as_seen_here(&self, mut stored: EndpointSpec) -> Option<EndpointSpec> {
        match (&stored.host, &stored.port) {
            (Some(host), Some(_)) if *host == self.host => stored.host = None,
            (Some(host), None) if *host == self.host => return None,
            (Some(_), Some(_)) => stored.port = None,
            _ => {}
        }
        Some(stored)
    }

    fn local(&self, what: &str) -> String {
        format!("local/{}/{what}", self.host)
    }

    /// The model as keys and values. An endpoint of another host is kept as that host
    /// stored it (with its port) unless this host changed it.
    fn keys(
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

    /// Says which key another host changed (read back after the refused write).
    fn explain_conflict(&self, desired: &BTreeMap<String, String>, gone: &[String]) -> Conflict {
        let seen = self.lock_seen();
        let now: BTreeMap<String, (String, i64)> = self
            .range()
            .map(|(kvs, _)| kvs.into_iter().map(|(k, v, r)| (k, (v, r))).collect())
            .unwrap_or_default();
        let touched = desired
            .iter()
            .filter(|(k, v)| seen.get(*k).map(|s| &s.0) != Some(*v))
            .map(|(k, _)| k)
            .chain(gone);
        for key in touched {
            let changed = match (seen.get(key), now.get(key)) {
                (None, None) => false,
                (Some(a), Some(b)) => a.1 != b.1,
                _ => true,
            };
            if !changed {
                continue;
            }
            let path = key
                .strip_prefix(&format!("{}/", self.prefix))
                .unwrap_or(key);
            let holder = now.get(key).map(|(v, _)| v.trim_matches('"').to_owned());
            let parts: Vec<&str> = path.split('/').collect();
            let (field, message) = match (parts.as_slice(), holder) {
                (&["unique", "tenant-id", id], Some(name)) => (
                    "id",
                    format!("tenant id {id} is taken by tenant `{name}` (written by another host)"),
                ),
                (&["unique", "vlan", vlan], Some(name)) => (
                    "vlan",
                    format!("VLAN {vlan} is taken by tenant `{name}` (written by another host)"),
                ),
                _ => (
                    "name",
                    format!("`{path}` was changed by another host since this host read it"),
                ),
            };
            return Conflict {
                field: field.to_owned(),
                message,
            };
        }
        Conflict {
            field: String::new(),
            message: "the cluster changed under this write; nothing was written".to_owned(),
        }
    }

    /// Every key under the prefix, (key, value, mod revision), and the revision they
    /// were read at.
    #[allow(clippy::type_complexity)]
    fn range(&self) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
        self.range_of(&format!("{}/", self.prefix))
    }

    /// Every key under `start`, as [`Self::range`].
    #[allow(clippy::type_complexity)]
    fn range_of(&self, start: &str) -> anyhow::Result<(Vec<(String, String, i64)>, i64)> {
        let reply = self.call(
            "/v3/kv/range",
            &json!({"key": BASE64.encode(start), "range_end": BASE64.encode(prefix_end(start))}),
        )?;
        let mut out = Vec::new();
        for kv in reply["kvs"].as_array().into_iter().flatten() {
            let decode = |field: &str| -> anyhow::Result<String> {
                let text = kv[field].as_str().unwrap_or_default();
                let bytes = BASE64
                    .decode(text)
                    .with_context(|| format!("etcd sent a {field} that is not base64"))?;
                String::from_utf8(bytes).context("etcd sent a key or value that is not UTF-8")
            };
            out.push((decode("key")?, decode("value")?, revision_of(kv)));
        }
        Ok((out, revision_of(&reply["header"])))
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    fn call(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        call_any(&self.endpoints, path, body)
    }
}

/// This host's registration: a key under a lease, and its traffic report under the
/// same lease (both gone when the host is).
struct Lease {
    endpoints: Vec<String>,
    key: String,
    report_key: String,
    /// The egress to report (an `f64`'s bits).
    egress_bps: Arc<AtomicU64>,
    ttl: u64,
    stop: Arc<AtomicBool>,
    /// The lease granted last, shared with the store.
    current: Arc<Mutex<Option<String>>>,
}

impl Lease {
    /// A new lease with the key put under it; returns the lease id.
    fn grant(&self) -> anyhow::Result<String> {
        let granted = call_any(
            &self.endpoints,
            "/v3/lease/grant",
            &json!({"TTL": self.ttl.to_string()}),
        )?;
        let id = granted["ID"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| granted["ID"].as_i64().map(|n| n.to_string()))
            .context("etcd granted a lease without an id")?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        call_any(
            &self.endpoints,
            "/v3/kv/put",
            &json!({
                "key": BASE64.encode(&self.key),
                "value": BASE64.encode(json!({"since": since}).to_string()),
                "lease": id,
            }),
        )?;
        tracing::info!(key = %self.key, ttl_s = self.ttl, "registered in the cluster");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        Ok(id)
    }

    fn keep(self, mut id: Option<String>) {
        let period = Duration::from_millis((self.ttl * 1000 / 3).max(200));
        // The rate last reported; no report stands for none.
        let mut reported = 0.0;
        let mut warned = false;
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(period);
            let renewed = match &id {
                Some(current) => self.renew(current),
                None => Ok(false),
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => match self.grant() {
                    Ok(new) => {
                        id = Some(new);
                        reported = 0.0;
                        warned = false;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %format!("{e:#}"), "could not register again; trying every {period:?}");
                            warned = true;
                        }
                        continue;
                    }
                },
                // etcd away: the lease may outlive it; try again next period.
                Err(_) => continue,
            }
            let Some(id) = id.as_deref() else {
                continue;
            };
            // Written when it moved by a step or 5 %, whichever is more: a rate that
            // wanders around a step, or a busy host's, does not write every period.
            let bps = f64::from_bits(self.egress_bps.load(Ordering::Relaxed));
            if (bps - reported).abs() > TRAFFIC_STEP_BPS.max(reported * 0.05) {
                match self.report(id, bps) {
                    Ok(()) => reported = bps,
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "could not report traffic")
                    }
                }
            }
        }
    }

    /// Writes this host's gateway egress under its lease.
    fn report(&self, id: &str, bps: f64) -> anyhow::Result<()> {
        call_any(
            &self.endpoints,
            "/v3/kv/put",
            &json!({
                "key": BASE64.encode(&self.report_key),
                "value": BASE64.encode(json!({"egress_bps": bps}).to_string()),
                "lease": id,
            }),
        )?;
        Ok(())
    }

    /// Renews the lease; `false` when it had already run out.
    fn renew(&self, id: &str) -> anyhow::Result<bool> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match first_message(endpoint, "/v3/lease/keepalive", &json!({"ID": id})) {
                Ok(reply) => {
                    let ttl = integer(&reply["result"]["TTL"]);
                    return Ok(ttl > 0);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
    }
}

/// The first JSON message of a streaming reply (the keepalive stream stays open).
fn first_message(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut stream = open_post(endpoint, path, body)?;
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            bail!("etcd closed the stream");
        }
        reply.extend_from_slice(&buffer[..n]);
        let Some(head_end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let body = &reply[head_end + 4..];
        if let Some(end) = body.iter().position(|&b| b == b'\n') {
            return Ok(serde_json::from_slice(&body[..end])?);
        }
    }
}

/// POSTs `body` to `path` on the first of `endpoints` that answers.
fn call_any(endpoints: &[String], path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match post(endpoint, path, body) {
            Ok(reply) => return Ok(reply),
            Err(e) => failures.push(format!("{endpoint}: {e:#}")),
        }
    }
    bail!("no etcd endpoint answered ({})", failures.join("; "))
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A host that stops leaves the cluster now, not when its lease runs out.
        let lease = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(id) = lease {
            if let Err(e) = call_any(&self.endpoints, "/v3/lease/revoke", &json!({"ID": id})) {
                tracing::warn!(error = %format!("{e:#}"), "could not leave the cluster; the lease will run out");
            }
        }
    }
}

/// The watch thread's state.
struct Follower {
    cache: Arc<Mutex<Option<KeyCache>>>,
    endpoints: Vec<String>,
    start: String,
    next_revision: i64,
    changed: tokio::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn run(mut self) {
        let mut reported_down = false;
        while !self.stop.load(Ordering::Relaxed) {
            for endpoint in self.endpoints.clone() {
                match self.follow(&endpoint) {
                    Ok(()) => return,
                    Err(e) => {
                        if !reported_down {
                            tracing::warn!(%endpoint, error = %format!("{e:#}"), resume_at = self.next_revision, "etcd watch lost; forwarding goes on with the last tables");
                            reported_down = true;
                        }
                    }
                }
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(500));
            // Reconnected or not, the last tables stay; a new stream says it resumed.
            reported_down = false;
        }
    }

    /// Streams the watch from one endpoint until it breaks (an error) or tenetd stops
    /// (`Ok`).
    fn follow(&mut self, endpoint: &str) -> anyhow::Result<()> {
        let mut request = json!({
            "key": BASE64.encode(&self.start),
            "range_end": BASE64.encode(prefix_end(&self.start)),
        });
        // Revision 0: from now on (there was no first load to go on from).
        if self.next_revision > 0 {
            request["start_revision"] = json!(self.next_revision.to_string());
        }
        let body = json!({ "create_request": request });
        let mut stream = open_post(endpoint, "/v3/watch", &body)?;
        // Short reads, so a stop is noticed while the stream is quiet.
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        let mut pending: Vec<u8> = Vec::new();
        let mut header_done = false;
        let mut buffer = [0u8; 16384];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match stream.read(&mut buffer) {
                Ok(0) => bail!("etcd closed the watch"),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e.into()),
            };
            pending.extend_from_slice(&buffer[..n]);
            if !header_done {
                let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                if head.split(' ').nth(1) != Some("200") {
                    bail!("etcd refused the watch: {head}");
                }
                pending.drain(..end + 4);
                header_done = true;
                // Nothing read yet (etcd was away at start, or compacted what the
                // cache missed): the receiver reads everything now that etcd answers.
                if self
                    .cache
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none()
                {
                    let _ = self.changed.try_send(());
                }
            }
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                self.take(&message)?;
            }
        }
    }

    fn take(&mut self, message: &Value) -> anyhow::Result<()> {
        let result = &message["result"];
        if let Some(error) = message.get("error") {
            bail!("etcd ended the watch: {error}");
        }
        let compacted = integer(&result["compact_revision"]);
        if compacted > 0 {
            // What happened before is gone: reload everything, follow from now on.
            self.next_revision = compacted;
            *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let _ = self.changed.try_send(());
            bail!("etcd compacted the history to revision {compacted}");
        }
        let events = result["events"].as_array().map_or(&[][..], Vec::as_slice);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let kv = &event["kv"];
            let revision = revision_of(kv);
            self.next_revision = self.next_revision.max(revision + 1);
            let text = |field: &str| -> Option<String> {
                let bytes = BASE64.decode(kv[field].as_str().unwrap_or_default()).ok()?;
                String::from_utf8(bytes).ok()
            };
            let (Some(cache), Some(key)) = (cache.as_mut(), text("key")) else {
                continue;
            };
            if revision <= cache.base {
                continue;
            }
            cache.revision = cache.revision.max(revision);
            if event["type"] == "DELETE" {
                cache.keys.remove(&key);
            } else {
                cache
                    .keys
                    .insert(key, (text("value").unwrap_or_default(), revision));
            }
        }
        drop(cache);
        if !events.is_empty() {
            let _ = self.changed.try_send(());
        }
        Ok(())
    }
}

/// Opens a connection and sends one HTTP/1.0 POST of JSON; the reply is the caller's
/// to read.
fn open_post(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<TcpStream> {
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, CALL_TIMEOUT)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(stream)
}

/// One HTTP/1.0 POST of JSON, the reply read to the end.
fn post(endpoint: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
    let mut stream = open_post(endpoint, path, body)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .context("etcd's reply has no body")?;
    let status = head.split(' ').nth(1).unwrap_or_default();
    let value: Value = serde_json::from_str(payload)
        .with_context(|| format!("etcd's reply is not JSON (HTTP {status})"))?;
    if status != "200" {
        bail!(
            "etcd refused {path} (HTTP {status}): {}",
            value["message"].as_str().unwrap_or(payload)
        );
    }
    Ok(value)
}

/// A key's mod revision, or a header's revision.
fn revision_of(value: &Value) -> i64 {
    match value.get("mod_revision") {
        Some(revision) => integer(revision),
        None => integer(&value["revision"]),
    }
}

/// A 64-bit number as etcd's JSON gateway writes it (a string), or plain; 0 if absent.
fn integer(field: &Value) -> i64 {
    field
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| field.as_i64())
        .unwrap_or(0)
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_range_ends_after_every_key_under_it() {
        assert_eq!(prefix_end("/tenet/"), b"/tenet0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn revisions_come_as_strings_or_numbers() {
        assert_eq!(revision_of(&json!({"mod_revision": "42"})), 42);
        assert_eq!(revision_of(&json!({"revision": 7})), 7);
        assert_eq!(revision_of(&json!({})), 0);
    }
}
