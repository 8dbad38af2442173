//! Following the cluster: a task streams etcd's watch of the prefix into the key cache
//! and tells the control loop that something changed.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};

use super::built::{Built, Held, Touched};
use super::client::{misconfigured, revision, Etcd, KeyRange};
use super::interest::{Interest, Owner, Watch, TENANT_RANGES};
use super::keys::Record;
use super::EtcdStore;

/// How long a broken watch waits before it is opened again.
const RETRY: Duration = Duration::from_millis(500);
/// The largest watch message taken (a transaction's events come as one).
const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Keys under the prefix with their values and mod revisions, with every change up to
/// `revision` applied; read whole at revision `base` (a watch replaying older events
/// after a reconnection must not undo newer state). This host's own writes go in when
/// etcd takes them, before the watch brings them back.
pub(super) struct KeyCache {
    keys: BTreeMap<String, CachedKey>,
    pub(super) revision: i64,
    pub(super) base: i64,
    /// Keys put or deleted since the model was last brought up to date.
    dirty: BTreeSet<String>,
    /// What the model holds for a dirty key that was replaced or deleted since.
    stale: BTreeMap<String, Held>,
    /// Keys this host deleted at a revision the watch has not reached: an older put
    /// the watch brings meanwhile must not bring them back.
    deleted: BTreeMap<String, i64>,
    /// The model the keys build, as of the last read.
    built: Built,
    /// Read whole since the last read of the model: everything changed.
    fresh: bool,
}

/// A key's value and mod revision, and what the model holds for it.
struct CachedKey {
    value: String,
    revision: i64,
    /// `None` until the next read of the model parses it: the watch only stores.
    held: Option<Held>,
}

impl KeyCache {
    /// The keys read whole at `revision`: (key, value, mod revision).
    pub(super) fn read(keys: Vec<(String, String, i64)>, revision: i64) -> Self {
        let mut cache = Self {
            keys: BTreeMap::new(),
            revision,
            base: revision,
            dirty: BTreeSet::new(),
            stale: BTreeMap::new(),
            deleted: BTreeMap::new(),
            built: Built::default(),
            fresh: true,
        };
        for (key, value, revision) in keys {
            cache.put(key, value, revision);
        }
        cache
    }

    /// `key` holds `value` as of `revision` (older news than the cache has is
    /// ignored).
    pub(super) fn put(&mut self, key: String, value: String, revision: i64) {
        if self.deleted.get(&key).is_some_and(|&at| at >= revision) {
            return;
        }
        let old = match self.keys.get_mut(&key) {
            Some(cached) if cached.revision >= revision => return,
            Some(cached) => {
                cached.value = value;
                cached.revision = revision;
                cached.held.take()
            }
            None => {
                self.keys.insert(
                    key.clone(),
                    CachedKey {
                        value,
                        revision,
                        held: None,
                    },
                );
                None
            }
        };
        self.mark(key, old);
    }

    /// `key` was deleted at `revision`.
    pub(super) fn delete(&mut self, key: &str, revision: i64) {
        if self.keys.get(key).is_some_and(|c| c.revision > revision) {
            return;
        }
        if let Some(cached) = self.keys.remove(key) {
            self.mark(key.to_owned(), cached.held);
        }
    }

    /// This host wrote `key` (`None`: deleted it) at `revision`: in at once, unless
    /// the watch already went past it.
    pub(super) fn wrote(&mut self, key: &str, value: Option<&str>, revision: i64) {
        if revision <= self.revision {
            return;
        }
        match value {
            Some(value) => self.put(key.to_owned(), value.to_owned(), revision),
            None => {
                self.delete(key, revision);
                self.deleted.insert(key.to_owned(), revision);
            }
        }
    }

    /// Every change up to `revision` is in.
    pub(super) fn reached(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
        if !self.deleted.is_empty() {
            let now = self.revision;
            self.deleted.retain(|_, at| *at > now);
        }
    }

    /// The keys of `range`, with their values.
    pub(super) fn values_in<'a>(
        &'a self,
        range: &KeyRange,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let end = range.end.clone();
        self.keys
            .range::<str, _>((Bound::Included(range.start.as_str()), Bound::Unbounded))
            .take_while(move |(key, _)| key.as_bytes() < end.as_slice())
            .map(|(key, cached)| (key.as_str(), cached.value.as_str()))
    }

    /// The value of `key`, if the cache has it.
    pub(super) fn value(&self, key: &str) -> Option<&str> {
        self.keys.get(key).map(|cached| cached.value.as_str())
    }

    /// Takes `range` as read at `revision` (`kvs`, each with its mod revision): a key
    /// the cache has there from before that revision and the read lacks was deleted
    /// meanwhile.
    pub(super) fn take_range(
        &mut self,
        range: &KeyRange,
        kvs: Vec<(String, String, i64)>,
        revision: i64,
    ) {
        let read: BTreeSet<&str> = kvs.iter().map(|(k, _, _)| k.as_str()).collect();
        let gone: Vec<String> = self
            .keys
            .range::<str, _>((Bound::Included(range.start.as_str()), Bound::Unbounded))
            .take_while(|(key, _)| key.as_bytes() < range.end.as_slice())
            .filter(|(key, cached)| cached.revision <= revision && !read.contains(key.as_str()))
            .map(|(key, _)| key.clone())
            .collect();
        drop(read);
        for key in gone {
            self.delete(&key, revision);
        }
        for (key, value, at) in kvs {
            self.put(key, value, at);
        }
    }

    /// Drops the keys of `range`: this host follows them no more (they are not
    /// deleted in the cluster; if followed again, they are read again).
    pub(super) fn forget(&mut self, range: &KeyRange) {
        let keys: Vec<String> = self.values_in(range).map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            if let Some(cached) = self.keys.remove(&key) {
                self.mark(key, cached.held);
            }
        }
    }

    fn mark(&mut self, key: String, applied: Option<Held>) {
        if let Some(held) = applied {
            self.stale.entry(key.clone()).or_insert(held);
        }
        self.dirty.insert(key);
    }

    /// Brings the model up to date with the keys changed since the last call (`parse`
    /// parses each once) and `seen` with what they hold: (value, mod revision) of each
    /// key the model takes. Returns the model and what changed in it.
    pub(super) fn build(
        &mut self,
        parse: impl Fn(&str, &str) -> Record,
        seen: &mut BTreeMap<String, (String, i64)>,
    ) -> (&Built, Touched) {
        let mut touched = (!std::mem::take(&mut self.fresh)).then(BTreeSet::new);
        for key in std::mem::take(&mut self.dirty) {
            if let Some(old) = self.stale.remove(&key) {
                self.built.remove(&key, &old, &mut touched);
            }
            let Some(cached) = self.keys.get_mut(&key) else {
                seen.remove(&key);
                continue;
            };
            let record = parse(&key, &cached.value);
            let held = cached
                .held
                .insert(self.built.insert(&key, record, &mut touched));
            if held.is_taken() {
                match seen.get_mut(&key) {
                    Some(held) if held.1 == cached.revision && held.0 == cached.value => {}
                    Some(held) => *held = (cached.value.clone(), cached.revision),
                    None => {
                        seen.insert(key, (cached.value.clone(), cached.revision));
                    }
                }
            } else {
                seen.remove(&key);
            }
        }
        (&self.built, touched)
    }
}

/// How long a tenant named by a change through this host's API stays held by a host
/// watching its own tenants: the next changes an operator makes to it find it here.
const HOLD_FOR: Duration = Duration::from_secs(60);
/// How often tenants held on demand are looked at for expiry.
const HOLD_CHECK: Duration = Duration::from_secs(5);

/// Tenants a change through the API names, to be held before it is checked; `done`
/// says they are in the cache.
pub(super) struct Demand {
    pub(super) tenants: Vec<String>,
    pub(super) done: tokio::sync::oneshot::Sender<()>,
}

impl EtcdStore {
    /// Follows every change this host follows ([`super::interest`]) after the last
    /// load, in a task of its own, and says so on the returned channel (several changes
    /// may come as one message; the receiver reloads). When the stream breaks the task
    /// watches again from the revision after the last one each watch saw (etcd's
    /// progress notifications move that on while a range is quiet), so no change is
    /// missed; if etcd compacted that away, the next message makes the receiver reload
    /// all. Without a first load (etcd was away at start) it follows from when etcd
    /// answers, and says so at once: the receiver's reload reads everything then.
    pub fn watch(&self) -> tokio::sync::mpsc::Receiver<()> {
        let (changed, receiver) = tokio::sync::mpsc::channel(1);
        let (demands, demanded) = tokio::sync::mpsc::channel(16);
        *self.demands.lock().unwrap_or_else(|e| e.into_inner()) = Some(demands);
        let loaded_at = self.loaded_at.load(Ordering::Relaxed);
        let start = if loaded_at > 0 { loaded_at + 1 } else { 0 };
        let interest = self.interest();
        let mut watches = BTreeMap::new();
        for (id, range) in (1..).zip(interest.cluster_ranges()) {
            watches.insert(
                id,
                Following {
                    owner: Owner::Cluster,
                    range,
                    next_revision: start,
                },
            );
        }
        let follower = Follower {
            cache: Arc::clone(&self.cache),
            etcd: Arc::clone(&self.etcd),
            next_id: watches.len() as i64 + 1,
            watches,
            interest,
            reconciled_base: None,
            demands: demanded,
            demands_open: true,
            held: BTreeMap::new(),
            events: Arc::clone(&self.events),
            following: Arc::clone(&self.following),
            changed,
        };
        match self.runtime() {
            Ok(runtime) => {
                runtime.spawn(follower.run());
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not start the etcd watch")
            }
        }
        receiver
    }

    /// Holds `tenants` (a host watching its own tenants: reads their records and
    /// follows them for a while), so that a change through this host's API that names
    /// them finds them. A host watching everything holds them already; a host whose
    /// watch is not running goes without (the change is checked against what it has).
    pub fn hold(&self, tenants: Vec<String>) -> anyhow::Result<()> {
        if self.watch == Watch::All || tenants.is_empty() {
            return Ok(());
        }
        let sender = self
            .demands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(sender) = sender else {
            return Ok(());
        };
        let (done, held) = tokio::sync::oneshot::channel();
        self.block_on(async {
            let asked = async {
                sender
                    .send(Demand { tenants, done })
                    .await
                    .map_err(|_| anyhow::anyhow!("the etcd watch ended"))?;
                held.await
                    .map_err(|_| anyhow::anyhow!("the etcd watch did not read the tenants"))
            };
            tokio::time::timeout(super::SHORT_WAIT, asked)
                .await
                .map_err(|_| {
                    anyhow::anyhow!("etcd did not answer within {:?}", super::SHORT_WAIT)
                })?
        })
    }

    /// Watch events this host has received.
    pub fn events_received(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// Whether the watch follows everything this host holds: its stream is open and
    /// every tenant it holds is read and watched.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }
}

/// One watch: the range it follows, for what, and the first revision it has not seen.
struct Following {
    owner: Owner,
    range: KeyRange,
    /// 0: from whenever the watch starts.
    next_revision: i64,
}

impl Following {
    fn options(&self, id: i64) -> WatchOptions {
        let options = WatchOptions::new()
            .with_range(self.range.end.clone())
            .with_progress_notify()
            .with_watch_id(id);
        // Revision 0: from now on (there was no first load to go on from).
        match self.next_revision {
            0 => options,
            revision => options.with_start_revision(revision),
        }
    }
}

/// The watch task's state.
struct Follower {
    cache: Arc<Mutex<Option<KeyCache>>>,
    etcd: Arc<Etcd>,
    interest: Interest,
    /// Watches by id, on one stream.
    watches: BTreeMap<i64, Following>,
    /// The id the next watch takes: ids are never used twice, so an event of a watch
    /// cancelled a moment ago is told apart and dropped.
    next_id: i64,
    /// The cache's base revision when the tenants followed were last brought in line
    /// with it (`None`: not yet).
    reconciled_base: Option<i64>,
    demands: tokio::sync::mpsc::Receiver<Demand>,
    /// Whether the store can still send demands (a second watch of the store takes them).
    demands_open: bool,
    /// Tenants held on demand, until when.
    held: BTreeMap<String, Instant>,
    events: Arc<AtomicU64>,
    /// Set once the stream is open and the tenants held are followed; cleared when it
    /// breaks.
    following: Arc<AtomicBool>,
    changed: tokio::sync::mpsc::Sender<()>,
}

impl Follower {
    async fn run(mut self) {
        let mut lost = false;
        while !self.changed.is_closed() {
            let followed = self.follow(&mut lost).await;
            self.following.store(false, Ordering::Relaxed);
            match followed {
                Ok(()) => return,
                Err(e) => {
                    if !lost {
                        if misconfigured(&e) {
                            tracing::error!(error = %format!("{e:#}"), "etcd refused this host's watch; forwarding goes on with the last tables");
                        } else {
                            let resume_at = self.first_unseen();
                            tracing::warn!(error = %format!("{e:#}"), resume_at, "etcd watch lost; forwarding goes on with the last tables");
                        }
                        lost = true;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The first revision some watch has not seen.
    fn first_unseen(&self) -> i64 {
        self.watches
            .values()
            .map(|w| w.next_revision)
            .min()
            .unwrap_or(0)
    }

    /// Streams the watches until the stream breaks (an error) or nobody listens any
    /// more (`Ok`).
    async fn follow(&mut self, lost: &mut bool) -> anyhow::Result<()> {
        let etcd = Arc::clone(&self.etcd);
        let mut signed_in_again = false;
        let mut check = tokio::time::interval(HOLD_CHECK);
        loop {
            let mut stream = self.open().await?;
            // Whether etcd has answered this stream (its watches are on it).
            let mut created = false;
            loop {
                // A stream etcd answered before anything was read (etcd away at start)
                // follows once the read is done.
                if created && !self.following.load(Ordering::Relaxed) && self.lock_cache().is_some()
                {
                    self.following.store(
                        self.interest.watch == Watch::All || !self.reloaded(),
                        Ordering::Relaxed,
                    );
                }
                tokio::select! {
                    message = stream.message() => {
                        let message = message.map_err(|e| etcd.explain(e))?;
                        let Some(message) = message else {
                            bail!("etcd closed the watch");
                        };
                        // etcd voids its tokens when it restarts; the client signs in
                        // again for its calls, not for a watch refused on its stream.
                        if message.canceled()
                            && message.cancel_reason().contains("auth token")
                            && !std::mem::replace(&mut signed_in_again, true)
                        {
                            etcd.renew_token().await?;
                            break;
                        }
                        let moved = self.take(&message)?;
                        created |= message.created();
                        if message.created() {
                            if std::mem::take(lost) {
                                tracing::info!(from = self.first_unseen(), "etcd watch resumed");
                            }
                            // Nothing read yet (etcd was away at start, or compacted
                            // what the cache missed): the receiver reads everything
                            // now that etcd answers.
                            if self.lock_cache().is_none() {
                                let _ = self.changed.try_send(());
                            }
                        }
                        if moved || self.reloaded() {
                            self.reconcile(&mut stream).await?;
                        }
                        if message.created() && self.lock_cache().is_some() {
                            // Every watch asked for so far is on the stream (etcd
                            // answers in order): a host watching its own tenants
                            // reconciled above.
                            self.following.store(
                                self.interest.watch == Watch::All || !self.reloaded(),
                                Ordering::Relaxed,
                            );
                        }
                    }
                    demand = self.demands.recv(), if self.demands_open => {
                        let Some(demand) = demand else {
                            self.demands_open = false;
                            continue;
                        };
                        let until = Instant::now() + HOLD_FOR;
                        for tenant in demand.tenants {
                            self.held.insert(tenant, until);
                        }
                        self.reconcile(&mut stream).await?;
                        let _ = demand.done.send(());
                    }
                    _ = check.tick() => {
                        let now = Instant::now();
                        let before = self.held.len();
                        self.held.retain(|_, until| *until > now);
                        if self.held.len() != before || self.reloaded() {
                            self.reconcile(&mut stream).await?;
                        }
                    }
                    () = self.changed.closed() => return Ok(()),
                }
            }
        }
    }

    /// A stream with every watch on it, each from the first revision it has not seen.
    async fn open(&mut self) -> anyhow::Result<WatchStream> {
        let etcd = &self.etcd;
        let mut watches = self.watches.iter();
        let (id, first) = watches.next().context("nothing to watch")?;
        let mut stream = etcd
            .client()
            .await?
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .watch(first.range.start.as_str(), Some(first.options(*id)))
            .await
            .map_err(|e| etcd.explain(e))?;
        for (id, following) in watches {
            stream
                .watch(following.range.start.as_str(), Some(following.options(*id)))
                .await
                .map_err(|e| etcd.explain(e))?;
        }
        Ok(stream)
    }

    /// Whether the cache was read whole since the tenants followed were last brought
    /// in line with it (a host watching its own tenants).
    fn reloaded(&self) -> bool {
        self.interest.watch == Watch::Own
            && self.lock_cache().as_ref().map(|c| c.base) != self.reconciled_base
    }

    /// Follows the tenants this host holds now and no others: a tenant newly held is
    /// read (at one revision) into the cache and watched from the next; one no longer
    /// held is no longer watched, and its records leave the cache.
    async fn reconcile(&mut self, stream: &mut WatchStream) -> anyhow::Result<()> {
        if self.interest.watch == Watch::All {
            return Ok(());
        }
        let held = self.held.keys().cloned();
        let (wanted, base) = {
            let cache = self.lock_cache();
            let Some(cache) = cache.as_ref() else {
                return Ok(());
            };
            (self.interest.followed(cache, held), cache.base)
        };
        let followed: BTreeSet<String> = self
            .watches
            .values()
            .filter_map(|w| match &w.owner {
                Owner::Tenant(tenant) => Some(tenant.clone()),
                Owner::Cluster => None,
            })
            .collect();
        let mut moved = false;
        for tenant in followed.difference(&wanted) {
            let ids: Vec<i64> = self
                .watches
                .iter()
                .filter(|(_, w)| w.owner == Owner::Tenant(tenant.clone()))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                stream.cancel(id).await.map_err(|e| self.etcd.explain(e))?;
                if let Some(gone) = self.watches.remove(&id) {
                    if let Some(cache) = self.lock_cache().as_mut() {
                        cache.forget(&gone.range);
                    }
                }
            }
            moved = true;
        }
        // Each tenant newly held (or held since a whole read, which the cache has as of
        // an older revision) is read again now, a few at a time in one transaction,
        // and watched from the revision after: a watch from a revision etcd has passed
        // waits for etcd to catch it up, a few hundred watches at a time, which
        // delayed a starting host's events by seconds.
        let new: Vec<&String> = wanted.difference(&followed).collect();
        let per_read = super::client::RANGES_PER_READ / TENANT_RANGES;
        for tenants in new.chunks(per_read) {
            let ranges: Vec<KeyRange> = tenants
                .iter()
                .flat_map(|t| self.interest.tenant_ranges(t))
                .collect();
            let (read, at) = self.etcd.read_ranges(&ranges).await?;
            if let Some(cache) = self.lock_cache().as_mut() {
                for (range, kvs) in ranges.iter().zip(read) {
                    cache.take_range(range, kvs, at);
                }
            }
            for (i, range) in ranges.into_iter().enumerate() {
                let id = self.next_id;
                self.next_id += 1;
                let following = Following {
                    owner: Owner::Tenant(tenants[i / TENANT_RANGES].clone()),
                    range,
                    next_revision: at + 1,
                };
                stream
                    .watch(following.range.start.as_str(), Some(following.options(id)))
                    .await
                    .map_err(|e| self.etcd.explain(e))?;
                self.watches.insert(id, following);
            }
            moved = true;
        }
        self.reconciled_base = Some(base);
        if moved {
            let _ = self.changed.try_send(());
        }
        Ok(())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<KeyCache>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a message's events into the cache; whether they may change the tenants
    /// this host holds.
    fn take(&mut self, message: &WatchResponse) -> anyhow::Result<bool> {
        let compacted = message.compact_revision();
        if compacted > 0 {
            // What happened before is gone: reload everything, follow from now on.
            for following in self.watches.values_mut() {
                following.next_revision = following.next_revision.max(compacted);
            }
            *self.lock_cache() = None;
            let _ = self.changed.try_send(());
            bail!("etcd compacted the history to revision {compacted}");
        }
        let id = message.watch_id();
        if message.canceled() {
            // A watch this host cancelled ends quietly; any other ending is the
            // stream's.
            if !self.watches.contains_key(&id) {
                return Ok(false);
            }
            bail!("etcd ended the watch: {}", message.cancel_reason());
        }
        let events = message.events();
        if events.is_empty() && !message.created() {
            // A progress notification: every change up to its revision was sent (to
            // that watch, or to all of them).
            let revision = revision(message.header());
            for (_, following) in self.watches.iter_mut().filter(|(w, _)| id < 0 || **w == id) {
                following.next_revision = following.next_revision.max(revision + 1);
            }
            self.note_reached();
            return Ok(false);
        }
        // An event of a watch cancelled a moment ago: this host follows those keys no
        // more.
        let Some(following) = self.watches.get_mut(&id) else {
            return Ok(false);
        };
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut moved = false;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let Some(kv) = event.kv() else {
                continue;
            };
            let revision = kv.mod_revision();
            following.next_revision = following.next_revision.max(revision + 1);
            let (Some(cache), Ok(key)) = (cache.as_mut(), kv.key_str()) else {
                continue;
            };
            if revision <= cache.base {
                continue;
            }
            moved |= self.interest.watch == Watch::Own && self.interest.may_move(key);
            if event.event_type() == EventType::Delete {
                cache.delete(key, revision);
            } else {
                let value = kv.value_str().unwrap_or_default();
                cache.put(key.to_owned(), value.to_owned(), revision);
            }
        }
        drop(cache);
        self.note_reached();
        if !events.is_empty() {
            let _ = self.changed.try_send(());
        }
        Ok(moved)
    }

    /// Tells the cache every change up to the revision all watches have seen is in.
    fn note_reached(&self) {
        let reached = self.first_unseen() - 1;
        if reached > 0 {
            if let Some(cache) = self.lock_cache().as_mut() {
                cache.reached(reached);
            }
        }
    }
}
