//! Following the cluster: a task streams etcd's watch of the prefix into the key cache
//! and tells the control loop that something changed.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use etcd_client::{EventType, WatchOptions, WatchResponse};

use super::client::{misconfigured, revision, Etcd};
use super::keys::Record;
use super::EtcdStore;

/// How long a broken watch waits before it is opened again.
const RETRY: Duration = Duration::from_millis(500);
/// The largest watch message taken (a transaction's events come as one).
const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// Keys under the prefix with their values and mod revisions, with every change up to
/// `revision` applied; read whole at revision `base` (a watch replaying older events
/// after a reconnection must not undo newer state).
pub(super) struct KeyCache {
    keys: BTreeMap<String, CachedKey>,
    pub(super) revision: i64,
    pub(super) base: i64,
}

/// A key's value and mod revision, and what it holds once parsed.
struct CachedKey {
    value: String,
    revision: i64,
    /// `None` until the next read of the model parses it: the watch only stores.
    record: Option<Record>,
}

impl KeyCache {
    /// The keys read whole at `revision`: (key, value, mod revision).
    pub(super) fn read(keys: Vec<(String, String, i64)>, revision: i64) -> Self {
        let mut cache = Self {
            keys: BTreeMap::new(),
            revision,
            base: revision,
        };
        for (key, value, revision) in keys {
            cache.put(key, value, revision);
        }
        cache
    }

    pub(super) fn put(&mut self, key: String, value: String, revision: i64) {
        let record = None;
        self.keys.insert(
            key,
            CachedKey {
                value,
                revision,
                record,
            },
        );
    }

    pub(super) fn delete(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Every key, in order, as (key, value, mod revision, what it holds); `parse`
    /// parses only the keys put since the last call.
    pub(super) fn records(
        &mut self,
        parse: impl Fn(&str, &str) -> Record,
    ) -> impl Iterator<Item = (&str, &str, i64, &Record)> {
        for (key, cached) in &mut self.keys {
            if cached.record.is_none() {
                cached.record = Some(parse(key, &cached.value));
            }
        }
        self.keys.iter().filter_map(|(key, cached)| {
            let record = cached.record.as_ref()?;
            Some((key.as_str(), cached.value.as_str(), cached.revision, record))
        })
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
                cache.revision = cache.revision.max(revision);
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
            cache.revision = cache.revision.max(revision);
            if event.event_type() == EventType::Delete {
                cache.delete(key);
            } else {
                let value = kv.value_str().unwrap_or_default();
                cache.put(key.to_owned(), value.to_owned(), revision);
            }
        }
        drop(cache);
        if !events.is_empty() {
            let _ = self.changed.try_send(());
        }
        Ok(())
    }
}
