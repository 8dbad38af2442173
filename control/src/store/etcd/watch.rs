//! Following the cluster: a thread streams etcd's watch of the prefix into the key
//! cache and tells the control loop that something changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::client::{decode, encode, integer, open_post, prefix_end, revision_of};
use super::EtcdStore;

/// Keys under the prefix with their values and mod revisions, with every change up to
/// `revision` applied; read whole at revision `base` (a watch replaying older events
/// after a reconnection must not undo newer state).
pub(super) struct KeyCache {
    pub(super) keys: BTreeMap<String, (String, i64)>,
    pub(super) revision: i64,
    pub(super) base: i64,
}

impl EtcdStore {
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
            "key": encode(&self.start),
            "range_end": encode(prefix_end(&self.start)),
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
            let text = |field: &str| decode(&kv[field]);
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
