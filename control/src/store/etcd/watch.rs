//! Following the cluster: a task streams etcd's watch of the prefix into the key cache
//! and tells the control loop that something changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use etcd_client::{EventType, WatchOptions, WatchResponse};

use super::built::{Built, Held, Touched};
use super::client::{misconfigured, revision, Etcd};
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

impl EtcdStore {
    /// Follows every change under the prefix after the last load, in a task of its
    /// own, and says so on the returned channel (several changes may come as one
    /// message; the receiver reloads). When the stream breaks the task watches again
    /// from the revision after the last one it saw (etcd's progress notifications move
    /// that on while the prefix is quiet), so no change is missed; if etcd compacted
    /// that away, the next message makes the receiver reload all. Without a first load
    /// (etcd was away at start) it follows from when etcd answers, and says so at once:
    /// the receiver's reload reads everything then.
    pub fn watch(&self) -> tokio::sync::mpsc::Receiver<()> {
        let (changed, receiver) = tokio::sync::mpsc::channel(1);
        let loaded_at = self.loaded_at.load(Ordering::Relaxed);
        let follower = Follower {
            cache: Arc::clone(&self.cache),
            etcd: Arc::clone(&self.etcd),
            start: format!("{}/", self.prefix),
            next_revision: if loaded_at > 0 { loaded_at + 1 } else { 0 },
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
}

/// The watch task's state.
struct Follower {
    cache: Arc<Mutex<Option<KeyCache>>>,
    etcd: Arc<Etcd>,
    start: String,
    /// The first revision not seen yet; 0: from whenever the watch starts.
    next_revision: i64,
    changed: tokio::sync::mpsc::Sender<()>,
}

impl Follower {
    async fn run(mut self) {
        let mut lost = false;
        while !self.changed.is_closed() {
            match self.follow(&mut lost).await {
                Ok(()) => return,
                Err(e) => {
                    if !lost {
                        if misconfigured(&e) {
                            tracing::error!(error = %format!("{e:#}"), "etcd refused this host's watch; forwarding goes on with the last tables");
                        } else {
                            tracing::warn!(error = %format!("{e:#}"), resume_at = self.next_revision, "etcd watch lost; forwarding goes on with the last tables");
                        }
                        lost = true;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Streams the watch until it breaks (an error) or nobody listens any more (`Ok`).
    async fn follow(&mut self, lost: &mut bool) -> anyhow::Result<()> {
        let etcd = Arc::clone(&self.etcd);
        let mut signed_in_again = false;
        loop {
            let mut options = WatchOptions::new().with_prefix().with_progress_notify();
            // Revision 0: from now on (there was no first load to go on from).
            if self.next_revision > 0 {
                options = options.with_start_revision(self.next_revision);
            }
            let mut stream = etcd
                .client()
                .await?
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .watch(self.start.as_str(), Some(options))
                .await
                .map_err(|e| etcd.explain(e))?;
            loop {
                let message = tokio::select! {
                    message = stream.message() => message.map_err(|e| etcd.explain(e))?,
                    () = self.changed.closed() => return Ok(()),
                };
                let Some(message) = message else {
                    bail!("etcd closed the watch");
                };
                // etcd voids its tokens when it restarts; the client signs in again
                // for its calls, not for a watch refused on its stream.
                if message.canceled()
                    && message.cancel_reason().contains("auth token")
                    && !std::mem::replace(&mut signed_in_again, true)
                {
                    etcd.renew_token().await?;
                    break;
                }
                self.take(&message)?;
                if message.created() {
                    if std::mem::take(lost) {
                        tracing::info!(from = self.next_revision, "etcd watch resumed");
                    }
                    // Nothing read yet (etcd was away at start, or compacted what the
                    // cache missed): the receiver reads everything now that etcd
                    // answers.
                    if self.lock_cache().is_none() {
                        let _ = self.changed.try_send(());
                    }
                }
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<KeyCache>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&mut self, message: &WatchResponse) -> anyhow::Result<()> {
        let compacted = message.compact_revision();
        if compacted > 0 {
            // What happened before is gone: reload everything, follow from now on.
            self.next_revision = compacted;
            *self.lock_cache() = None;
            let _ = self.changed.try_send(());
            bail!("etcd compacted the history to revision {compacted}");
        }
        if message.canceled() {
            bail!("etcd ended the watch: {}", message.cancel_reason());
        }
        let events = message.events();
        if events.is_empty() && !message.created() {
            // A progress notification: every change up to its revision was sent.
            let revision = revision(message.header());
            self.next_revision = self.next_revision.max(revision + 1);
            if let Some(cache) = self.lock_cache().as_mut() {
                cache.reached(revision);
            }
            return Ok(());
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let Some(kv) = event.kv() else {
                continue;
            };
            let revision = kv.mod_revision();
            self.next_revision = self.next_revision.max(revision + 1);
            let (Some(cache), Ok(key)) = (cache.as_mut(), kv.key_str()) else {
                continue;
            };
            if revision <= cache.base {
                continue;
            }
            if event.event_type() == EventType::Delete {
                cache.delete(key, revision);
            } else {
                let value = kv.value_str().unwrap_or_default();
                cache.put(key.to_owned(), value.to_owned(), revision);
            }
            cache.reached(revision);
        }
        drop(cache);
        if !events.is_empty() {
            let _ = self.changed.try_send(());
        }
        Ok(())
    }
}
