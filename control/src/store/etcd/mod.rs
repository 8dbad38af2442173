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
//! The store's parts: [`client`] speaks to etcd, [`keys`] maps the model to keys and
//! records, [`built`] keeps the model those records build up to date key by key,
//! [`watch`] follows the cluster, [`lease`] keeps this host registered and reports its
//! traffic; placement itself is [`crate::placement`]'s.
//!
//! The store's methods wait for etcd: tenetd calls them on blocking threads, never in
//! its runtime's async tasks. They wait in a small runtime of the store's own (two
//! threads, started at the first call), where the watch and the lease run as tasks.
//! No lock is held while etcd is waited on: the watch task takes the cache's lock, a
//! read holding it waits for `seen`, and a write holding `seen` through its etcd call
//! would wait for an answer that thread is to deliver. The second thread keeps answers
//! coming while the watch waits for a long read of the cache.

mod built;
mod client;
mod handshake;
mod interest;
mod keys;
mod lease;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use crate::config::switching::AddressSpec;
use crate::config::EtcdAccess;
use crate::model::{Change, Model};
use crate::placement::{self, GatewayPlacement};

use client::{revision, Etcd, KeyRange};
use keys::Scope;
use watch::KeyCache;

pub use built::Touched;
pub use interest::Watch;

/// Operations per etcd transaction (etcd refuses more than 128).
const MAX_TXN_OPS: usize = 64;

/// This host's own writes not yet seen through the watch: (value or `None` for a
/// delete, revision) by key.
type OwnWrites = BTreeMap<String, (Option<String>, i64)>;

/// What a host keeps of the cluster for a start without etcd.
#[derive(serde::Serialize, serde::Deserialize)]
struct LocalCopy {
    model: Model,
    alive: BTreeSet<String>,
}

/// One key a write puts or deletes: its new value (`None`: deleted), what etcd must
/// find first, and the request.
struct Operation {
    key: String,
    value: Option<String>,
    compare: Option<Compare>,
    /// The key must not exist yet (a record or claim this write creates).
    creates: bool,
    request: TxnOp,
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

/// How long a stopping host tries to leave the cluster before its lease is left to run
/// out, and how long `tenetd --check` waits for etcd.
const SHORT_WAIT: Duration = Duration::from_secs(5);

/// A model kept in etcd.
pub struct EtcdStore {
    etcd: Arc<Etcd>,
    prefix: String,
    host: String,
    /// Every key of ours as last read or written: its value and mod revision.
    seen: Mutex<BTreeMap<String, (String, i64)>>,
    /// The cluster's revision at the last load: a watch goes on from there.
    loaded_at: AtomicI64,
    /// Hosts holding a live lease at the last load.
    alive: Mutex<BTreeSet<String>>,
    /// Those of them watching their own tenants only.
    watching_own: Mutex<BTreeSet<String>>,
    /// Every key under the prefix, as the last load read them and the watch has
    /// changed them since (`None`: to be read from etcd).
    cache: Arc<Mutex<Option<KeyCache>>>,
    /// What this host wrote that the watch has not brought back yet. The cache takes
    /// each write at once; a read of all of etcd begun before a write was taken lays
    /// them over what it read, so it does not take older revisions for current (the
    /// next write would be refused as a conflict with this host itself).
    own_writes: Mutex<OwnWrites>,
    /// Seconds a host stays alive without renewing its lease.
    lease_ttl: u64,
    /// Where etcd is waited on, and the watch and lease run; started at the first call.
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// The task keeping the lease, ended before the lease is revoked.
    lease_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The lease this host is registered under, revoked when it stops.
    lease: Arc<Mutex<Option<i64>>>,
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
    /// How much of the cluster this host follows ([`interest`]).
    watch: Watch,
    /// Where [`EtcdStore::hold`] asks the watch for tenants (`None`: no watch yet).
    demands: Mutex<Option<tokio::sync::mpsc::Sender<watch::Demand>>>,
    /// Watch events received.
    events: Arc<AtomicU64>,
    /// Whether the watch follows everything this host holds.
    following: Arc<std::sync::atomic::AtomicBool>,
    /// Writes made, refused for a conflict, and failed (etcd away), for the metrics.
    writes: [AtomicU64; 3],
    /// When etcd last confirmed this host's lease (ms since the epoch).
    renewed: Arc<AtomicU64>,
}

/// Milliseconds since the epoch.
fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a write to etcd ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteEnd {
    /// Made.
    Made = 0,
    /// Refused: another host changed what it compared.
    Conflict = 1,
    /// etcd could not be reached or refused it otherwise.
    Failed = 2,
}

impl WriteEnd {
    /// Each end with its metric label.
    pub const ALL: [(WriteEnd, &'static str); 3] = [
        (WriteEnd::Made, "made"),
        (WriteEnd::Conflict, "conflict"),
        (WriteEnd::Failed, "failed"),
    ];
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (`http://host:port`; `https://` with
    /// [`EtcdStore::with_access`]), under `prefix`, for host `host`.
    pub fn new(endpoints: Vec<String>, prefix: &str, host: &str) -> Self {
        Self::with_lease(endpoints, prefix, host, 10)
    }

    /// The same, with hosts counted dead `lease_ttl` seconds after their last renewal.
    pub fn with_lease(endpoints: Vec<String>, prefix: &str, host: &str, lease_ttl: u64) -> Self {
        Self {
            alive: Mutex::new(BTreeSet::new()),
            watching_own: Mutex::new(BTreeSet::new()),
            cache: Arc::new(Mutex::new(None)),
            own_writes: Mutex::new(BTreeMap::new()),
            lease_ttl,
            etcd: Arc::new(Etcd::new(endpoints, EtcdAccess::default())),
            prefix: prefix.trim_end_matches('/').to_owned(),
            host: host.to_owned(),
            seen: Mutex::new(BTreeMap::new()),
            loaded_at: AtomicI64::new(0),
            runtime: OnceLock::new(),
            lease_task: Mutex::new(None),
            lease: Arc::new(Mutex::new(None)),
            gateway_placement: GatewayPlacement::Tenants,
            egress_bps: Arc::new(AtomicU64::new(0f64.to_bits())),
            local_copy: None,
            skipped_keys: Mutex::new(BTreeSet::new()),
            watch: Watch::All,
            demands: Mutex::new(None),
            events: Arc::new(AtomicU64::new(0)),
            following: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            writes: std::array::from_fn(|_| AtomicU64::new(0)),
            renewed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Writes that ended `end` so far.
    pub fn writes(&self, end: WriteEnd) -> u64 {
        self.writes[end as usize].load(Ordering::Relaxed)
    }

    /// Whether this host is registered as alive: it holds a lease etcd confirmed
    /// within the lease's time to live (etcd away for longer has let it go).
    pub fn registered(&self) -> bool {
        let held = self
            .lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let since = epoch_ms().saturating_sub(self.renewed.load(Ordering::Relaxed));
        held && since <= self.lease_ttl * 1000
    }

    /// The same, following `watch` of the cluster: everything, or this host's own
    /// tenants ([`interest`]).
    pub fn watching(mut self, watch: Watch) -> Self {
        self.watch = watch;
        self
    }

    /// What this host follows of the cluster.
    pub fn watches(&self) -> Watch {
        self.watch
    }

    /// `key` without the prefix.
    fn path_of<'k>(&self, key: &'k str) -> &'k str {
        key.strip_prefix(self.prefix.as_str())
            .and_then(|k| k.strip_prefix('/'))
            .unwrap_or(key)
    }

    /// The same, reaching etcd with `access`: the CA of its TLS certificate, a client
    /// certificate, a user.
    pub fn with_access(mut self, access: EtcdAccess) -> Self {
        self.etcd = Arc::new(Etcd::new(self.etcd.endpoints().to_vec(), access));
        self
    }

    /// Whether etcd takes this host: connects, authenticates and reads the prefix once.
    /// A refusal the config can fix is a [`crate::config::ConfigError`] naming the
    /// field; etcd not answering is any other error.
    pub fn check_access(&self) -> anyhow::Result<()> {
        let prefix = format!("{}/", self.prefix);
        let etcd = &self.etcd;
        let read = async {
            let mut kv = etcd.kv().await?;
            kv.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| etcd.explain(e))
        };
        self.block_on(async {
            tokio::time::timeout(SHORT_WAIT, read).await.map_err(|_| {
                anyhow::anyhow!(
                    "etcd at {} did not answer within {SHORT_WAIT:?}",
                    etcd.endpoints().join(",")
                )
            })?
        })?;
        Ok(())
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
        let bytes = serde_json::to_vec(&copy).context("encoding the local copy")?;
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

    /// `model` with its floating gateways' records brought up to date, when this host
    /// is the cluster's placer and they are not; `None` otherwise. Traffic reports are
    /// read only when a gateway has to be placed.
    pub fn with_placements(&self, model: &Model) -> Option<Model> {
        // Hosts watching their own tenants do not see the others' to place them.
        let placing = {
            let alive = self.lock_alive();
            let own = self.lock_watching_own();
            let can_place: BTreeSet<String> = alive.difference(&own).cloned().collect();
            self.watch == Watch::All
                && alive.contains(&self.host)
                && placement::placer(&can_place) == Some(self.host.as_str())
        };
        placement::update(
            model,
            &self.alive(),
            placing,
            self.gateway_placement,
            || {
                self.egress_reports().unwrap_or_else(|e| {
                    tracing::warn!(error = %format!("{e:#}"), "no traffic reports; placing gateways by tenant count");
                    BTreeMap::new()
                })
            },
        )
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

    /// Hosts registered at the last load as watching their own tenants only.
    fn lock_watching_own(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.watching_own.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hosts registered at the last load, as etcd has them.
    fn lock_alive(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.alive.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the model is kept, for logs.
    pub fn describe(&self) -> String {
        format!(
            "etcd {} under {}/",
            self.etcd.endpoints().join(","),
            self.prefix
        )
    }

    /// The cluster's model with this host's own part, or `None` when the cluster has
    /// stored nothing yet. A host new to the cluster takes its switch settings and
    /// ports from `seed` (its config).
    pub fn load(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        let read = match self.watch {
            Watch::All => {
                let (kvs, revision) = self.range()?;
                KeyCache::read(kvs, revision)
            }
            Watch::Own => self.block_on(self.read_own())?,
        };
        self.loaded_at.store(read.base, Ordering::Relaxed);
        // The cache is in place before the model is built: the watch adds what it
        // brings from now on.
        let mut guard = self.lock_cache();
        let cache = guard.insert(read);
        // Read whole: what this host has seen is what the read holds, and its own
        // writes the read may have missed (a read begun before one was taken), of
        // what it follows.
        self.lock_seen().clear();
        let interest = self.interest();
        let followed = interest.followed(cache, []);
        for (key, (value, at)) in self.lock_own_writes().iter() {
            if interest.follows(key, &followed) {
                cache.wrote(key, value.as_deref(), *at);
            }
        }
        Ok(self.build(cache, seed).0)
    }

    /// What a host watching its own tenants follows, read at one revision: the
    /// cluster's ranges, then the records of the tenants they make it hold (and of
    /// those tenants' peers).
    async fn read_own(&self) -> anyhow::Result<KeyCache> {
        let interest = self.interest();
        let mut at = 0;
        let mut kvs = Vec::new();
        for range in interest.cluster_ranges() {
            let (read, revision) = self.etcd.range_at(&range, at).await?;
            at = revision;
            kvs.extend(read);
        }
        let mut cache = KeyCache::read(kvs, at);
        let mut read = BTreeSet::new();
        loop {
            let wanted = interest.followed(&cache, []);
            let new: Vec<String> = wanted.difference(&read).cloned().collect();
            if new.is_empty() {
                return Ok(cache);
            }
            for tenant in new {
                for range in interest.tenant_ranges(&tenant) {
                    let (kvs, _) = self.etcd.range_at(&range, at).await?;
                    for (key, value, revision) in kvs {
                        cache.put(key, value, revision);
                    }
                }
                read.insert(tenant);
            }
        }
    }

    /// The model from the keys the watch has kept up to date, without asking etcd;
    /// from etcd itself when there are none (before the first load, or after etcd
    /// compacted away changes the watch had not seen). Only the keys changed since the
    /// last read are parsed and put into the model.
    pub fn load_cached(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        Ok(self.load_changes(seed)?.0)
    }

    /// [`EtcdStore::load_cached`], with what changed since the last read.
    pub fn load_changes(&self, seed: &Model) -> anyhow::Result<(Option<Model>, Touched)> {
        let mut guard = self.lock_cache();
        let Some(cache) = guard.as_mut() else {
            drop(guard);
            return Ok((self.load(seed)?, None));
        };
        let revision = cache.revision;
        self.lock_own_writes().retain(|_, (_, at)| *at > revision);
        Ok(self.build(cache, seed))
    }

    /// The model `cache` builds and what changed in it, with what this host has seen,
    /// the hosts alive and the keys skipped brought up to date.
    fn build(&self, cache: &mut KeyCache, seed: &Model) -> (Option<Model>, Touched) {
        let (built, touched) = cache.build(|k, v| self.parse(k, v), &mut self.lock_seen());
        let mut alive = self.lock_alive();
        if *alive != built.alive {
            alive.clone_from(&built.alive);
        }
        let mut own = self.lock_watching_own();
        if *own != built.watching_own {
            own.clone_from(&built.watching_own);
        }
        drop(own);
        let mut skipped = self.skipped_keys.lock().unwrap_or_else(|e| e.into_inner());
        if *skipped != built.skipped {
            skipped.clone_from(&built.skipped);
        }
        (built.model(seed), touched)
    }

    fn lock_own_writes(&self) -> std::sync::MutexGuard<'_, OwnWrites> {
        self.own_writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<KeyCache>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what changed since the last load or save in one transaction; refused
    /// (nothing written) with a [`Conflict`] when another host got there first.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        let seen = self.lock_seen();
        let mut desired = self.keys(model, &seen)?;
        if self.watch == Watch::Own {
            // Claims and other hosts' index keys of a tenant this host holds are in
            // the cluster, though not followed here: they are left as they are.
            desired.retain(|key, value| {
                seen.contains_key(key) || !self.kept_unseen(key, value, &seen)
            });
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|key| !desired.contains_key(*key))
            .cloned()
            .collect();
        let ops = self.operations(&seen, &desired, &gone, None);
        drop(seen);
        self.write(ops, &desired, &gone)
    }

    /// Writes what turned `before` into `after`, and nothing else, in one transaction
    /// compared with what this host read: a key the change does not touch is left as
    /// the cluster has it, even when this host's `before` is older than its last read
    /// (another host's write that arrived while the change was prepared stays).
    pub fn save_change(&self, before: &Model, after: &Model) -> anyhow::Result<()> {
        self.save_within(&Scope::All, before, after)
    }

    /// The same for `change`, which made `after` from `before`: only the records it may
    /// touch are written out and compared (one tenant's, the hosts, or this host's
    /// own), so a change costs what it touches, not the size of the cloud.
    pub fn save_made(&self, change: &Change, before: &Model, after: &Model) -> anyhow::Result<()> {
        self.save_within(&Scope::of(change, before), before, after)
    }

    fn save_within(&self, scope: &Scope, before: &Model, after: &Model) -> anyhow::Result<()> {
        let seen = self.lock_seen();
        let was = self.keys_in(before, &seen, scope)?;
        let now = self.keys_in(after, &seen, scope)?;
        // A key this host never saw is not deleted (it may not exist), except what
        // goes with a record of the change: its index keys, and its claims, which a
        // host watching its own tenants does not follow.
        let goes_with_a_record = |key: &str| {
            let path = self.path_of(key);
            keys::is_member(path) || (self.watch == Watch::Own && path.starts_with("unique/"))
        };
        let gone: Vec<String> = was
            .keys()
            .filter(|key| {
                !now.contains_key(*key) && (seen.contains_key(*key) || goes_with_a_record(key))
            })
            .cloned()
            .collect();
        let desired: BTreeMap<String, String> = now
            .into_iter()
            .filter(|(key, value)| was.get(key) != Some(value))
            .collect();
        let ops = self.operations(&seen, &desired, &gone, Some(&was));
        drop(seen);
        self.write(ops, &desired, &gone)
    }

    /// The operations that put `desired` and delete `gone`, each compared with what
    /// the change started from: the values in `expected` when given (a key it lacks
    /// must not exist yet), else the revision this host saw. The watch may have brought
    /// another host's write into `seen` after the model a change was checked against
    /// was built; comparing with `seen` then would overwrite that write (a tenant id
    /// claimed twice).
    fn operations(
        &self,
        seen: &BTreeMap<String, (String, i64)>,
        desired: &BTreeMap<String, String>,
        gone: &[String],
        expected: Option<&BTreeMap<String, String>>,
    ) -> Vec<Operation> {
        let absent = |key: &str| Compare::create_revision(key, CompareOp::Equal, 0);
        let holds = |key: &str, value: &str| Compare::value(key, CompareOp::Equal, value);
        let unchanged_since =
            |key: &str, revision: i64| Compare::mod_revision(key, CompareOp::Equal, revision);
        // An index key rides on its record's comparison: written or deleted with it
        // whatever it holds (a cluster written before the index has none).
        let indexed = |key: &str| keys::is_member(self.path_of(key));
        let mut ops = Vec::new();
        for (key, value) in desired {
            let (compare, creates) = match (seen.get(key), expected) {
                (Some((old, _)), _) if old == value => continue,
                _ if indexed(key) => (None, false),
                (_, Some(expected)) => match expected.get(key) {
                    Some(old) => (Some(holds(key, old)), false),
                    None => (Some(absent(key)), true),
                },
                (Some((_, revision)), None) => (Some(unchanged_since(key, *revision)), false),
                (None, None) => (Some(absent(key)), true),
            };
            ops.push(Operation {
                key: key.clone(),
                value: Some(value.clone()),
                compare,
                creates,
                request: TxnOp::put(key.as_str(), value.as_str(), None),
            });
        }
        let record = format!("{}/placed/", self.prefix);
        for key in gone {
            // A placement record may go whatever the placer wrote meanwhile: the
            // placer places the tenant again from what the change leaves.
            let compare = (!key.starts_with(&record) && !indexed(key)).then(|| {
                match (
                    expected.and_then(|expected| expected.get(key)),
                    seen.get(key),
                ) {
                    (Some(old), _) => holds(key, old),
                    (None, Some((_, revision))) => unchanged_since(key, *revision),
                    (None, None) => absent(key),
                }
            });
            ops.push(Operation {
                key: key.clone(),
                value: None,
                compare,
                creates: false,
                request: TxnOp::delete(key.as_str(), None),
            });
        }
        ops
    }

    /// Sends `ops` to etcd and keeps what they wrote as seen; `seen` is taken only
    /// after etcd answered (see the module's note on locks).
    fn write(
        &self,
        ops: Vec<Operation>,
        desired: &BTreeMap<String, String>,
        gone: &[String],
    ) -> anyhow::Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let written = self.write_chunks(ops, desired, gone);
        let end = match &written {
            Ok(()) => WriteEnd::Made,
            Err(e) if e.downcast_ref::<Conflict>().is_some() => WriteEnd::Conflict,
            Err(_) => WriteEnd::Failed,
        };
        self.writes[end as usize].fetch_add(1, Ordering::Relaxed);
        written
    }

    fn write_chunks(
        &self,
        ops: Vec<Operation>,
        desired: &BTreeMap<String, String>,
        gone: &[String],
    ) -> anyhow::Result<()> {
        // etcd takes 128 operations per transaction: a larger change (a cluster seeded
        // from a big config) goes in several, each all or nothing.
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let compare: Vec<Compare> = chunk.iter().filter_map(|op| op.compare.clone()).collect();
            let success: Vec<TxnOp> = chunk.iter().map(|op| op.request.clone()).collect();
            let txn = Txn::new().when(compare).and_then(success);
            let etcd = &self.etcd;
            let reply = self.block_on(async {
                let mut kv = etcd.kv().await?;
                kv.txn(txn).await.map_err(|e| etcd.explain(e))
            })?;
            if !reply.succeeded() {
                return Err(self.explain_conflict(chunk, desired, gone).into());
            }
            let revision = revision(reply.header());
            if self.watch == Watch::Own {
                self.hold_written(chunk);
            }
            let mut cache = self.lock_cache();
            let mut seen = self.lock_seen();
            let mut own = self.lock_own_writes();
            for op in chunk {
                if let Some(cache) = cache.as_mut() {
                    cache.wrote(&op.key, op.value.as_deref(), revision);
                }
                own.insert(op.key.clone(), (op.value.clone(), revision));
                match &op.value {
                    Some(value) => {
                        seen.insert(op.key.clone(), (value.clone(), revision));
                    }
                    None => {
                        seen.remove(&op.key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `key` (holding `value`) goes with a tenant already in the cluster but is
    /// not followed by this host (a host watching its own tenants): the tenant's claims
    /// and other hosts' index keys.
    fn kept_unseen(&self, key: &str, value: &str, seen: &BTreeMap<String, (String, i64)>) -> bool {
        let path = self.path_of(key);
        let tenant = if path.starts_with("unique/") {
            serde_json::from_str::<String>(value).ok()
        } else if let Some(rest) = path.strip_prefix("member/") {
            rest.split('/').nth(1).map(str::to_owned)
        } else {
            None
        };
        tenant.is_some_and(|t| seen.contains_key(&format!("{}/tenants/{t}", self.prefix)))
    }

    /// A host watching its own tenants follows, for a while, the tenants it wrote (it
    /// keeps its own writes in the cache; the watch keeps them current), without
    /// waiting for the watch to read them.
    fn hold_written(&self, ops: &[Operation]) {
        let tenants: BTreeSet<String> = ops
            .iter()
            .filter_map(|op| keys::tenant_of(self.path_of(&op.key)))
            .map(str::to_owned)
            .collect();
        let sender = self
            .demands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let (Some(sender), false) = (sender, tenants.is_empty()) {
            let (done, _) = tokio::sync::oneshot::channel();
            let _ = sender.try_send(watch::Demand {
                tenants: tenants.into_iter().collect(),
                done,
            });
        }
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, i64)>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says which key another host changed (read back after the refused write).
    fn explain_conflict(
        &self,
        refused: &[Operation],
        desired: &BTreeMap<String, String>,
        gone: &[String],
    ) -> Conflict {
        // Read before `seen` is locked: no lock is held while etcd is waited on. Only
        // the keys the write touched, not the cluster.
        // A key the write was to create that exists now collided, whether or not the
        // watch has brought it into `seen` since the refusal.
        let created: Vec<&str> = refused
            .iter()
            .filter(|op| op.creates)
            .map(|op| op.key.as_str())
            .collect();
        // Index keys are written whatever they hold: never what collided.
        let asked: Vec<String> = {
            let seen = self.lock_seen();
            desired
                .iter()
                .filter(|(k, _)| !keys::is_member(self.path_of(k)))
                .filter(|(k, v)| {
                    created.contains(&k.as_str()) || seen.get(*k).map(|s| &s.0) != Some(*v)
                })
                .map(|(k, _)| k.clone())
                .chain(gone.iter().cloned())
                .collect()
        };
        let now: BTreeMap<String, (String, i64)> = self
            .block_on(async {
                let mut now = BTreeMap::new();
                for key in asked {
                    let (kvs, _) = self.etcd.range_at(&KeyRange::key(&key), 0).await?;
                    now.extend(kvs.into_iter().map(|(k, v, r)| (k, (v, r))));
                }
                Ok(now)
            })
            .unwrap_or_default();
        let seen = self.lock_seen();
        let touched = desired
            .iter()
            .filter(|(k, v)| {
                created.contains(&k.as_str()) || seen.get(*k).map(|s| &s.0) != Some(*v)
            })
            .map(|(k, _)| k)
            .chain(gone)
            .filter(|k| !keys::is_member(self.path_of(k)));
        for key in touched {
            let changed = match (seen.get(key), now.get(key)) {
                (_, Some(_)) if created.contains(&key.as_str()) => true,
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
                (&["addresses", tenant, ip], Some(claim)) => (
                    "ip",
                    match serde_json::from_str::<AddressSpec>(&claim) {
                        Ok(a) => format!(
                            "{ip} is already claimed by `{}` on host `{}` (tenant `{tenant}`, written by another host)",
                            a.owner,
                            a.host.unwrap_or_default()
                        ),
                        Err(_) => format!("{ip} of tenant `{tenant}` is already claimed by another host"),
                    },
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
        self.block_on(self.etcd.range(&format!("{}/", self.prefix)))
    }

    /// Waits for `call` on this thread, in the store's runtime (started now if this is
    /// the first call): the caller is a blocking thread, not an async task.
    fn block_on<T>(
        &self,
        call: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        self.runtime()?.block_on(call)
    }

    /// The store's runtime, started at the first call that needs it: a store that never
    /// reaches etcd (keys for a benchmark, a test of the mapping) starts no thread.
    fn runtime(&self) -> anyhow::Result<&tokio::runtime::Runtime> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tenet-etcd")
            .enable_all()
            .build()
            .context("starting the etcd client's runtime")?;
        // Two first calls at once: one runtime stays, the other goes without blocking
        // (a runtime dropped in place would wait for its thread).
        if let Err(spare) = self.runtime.set(runtime) {
            spare.shutdown_background();
        }
        self.runtime
            .get()
            .context("the etcd client's runtime did not start")
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let lease_task = self
            .lease_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let lease = Arc::clone(&self.lease);
        let etcd = &self.etcd;
        // A host that stops leaves the cluster now, not when its lease runs out. The
        // lease task ends first, so it cannot register the host again meanwhile. On a
        // thread of its own: a store may be dropped inside an async task, where waiting
        // in another runtime is refused.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                runtime.block_on(async {
                    if let Some(task) = lease_task {
                        task.abort();
                        let _ = task.await;
                    }
                    let id = lease.lock().unwrap_or_else(|e| e.into_inner()).take();
                    let Some(id) = id else {
                        return;
                    };
                    let revoke = async {
                        let mut leases = etcd.client().await?.lease_client();
                        leases.revoke(id).await.map_err(|e| etcd.explain(e))
                    };
                    let left = tokio::time::timeout(SHORT_WAIT, revoke)
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("etcd did not answer")));
                    if let Err(e) = left {
                        tracing::warn!(error = %format!("{e:#}"), "could not leave the cluster; the lease will run out");
                    }
                });
            });
        });
        runtime.shutdown_background();
    }
}
