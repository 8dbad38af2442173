//! Where the live [`Model`] is kept: one host alone uses the file store (a journal
//! each change appends its records to, readable by root alone: [`file`]); hosts of a
//! cluster share it in etcd ([`etcd`]), each keeping a local copy of its own view for a
//! start while etcd does not answer.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use crate::model::{Change, Model, Place};

pub mod etcd;
pub mod file;
pub mod journal;

pub use etcd::{Conflict, EtcdStore, Watch};
pub use file::FileStore;

/// The store a tenetd uses.
pub enum Store {
    /// One host's file.
    File(Box<FileStore>),
    /// The cluster's etcd.
    Etcd(Box<EtcdStore>),
}

impl Store {
    /// The stored model, or `None` when nothing was stored yet; `seed` (the config's
    /// model) gives a host new to a cluster its own settings and ports.
    pub fn load(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        match self {
            Store::File(file) => file.load(),
            Store::Etcd(etcd) => etcd.load(seed),
        }
    }

    /// The stored model again after a change was reported, with what changed since
    /// the last read (`None`: anything may have): a cluster store brings it up to date
    /// with what its watch delivered, without reading all of etcd.
    pub fn reload(&self, seed: &Model) -> anyhow::Result<(Option<Model>, etcd::Touched)> {
        match self {
            Store::File(file) => Ok((file.load()?, None)),
            Store::Etcd(etcd) => etcd.load_changes(seed),
        }
    }

    /// Keeps `model`; refused (nothing kept) on failure.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        match self {
            Store::File(file) => file.save(model),
            Store::Etcd(etcd) => etcd.save(model),
        }
    }

    /// Keeps the change from `before` to `after` that this host made as gateway
    /// placer (a cluster's: a single host places nothing, and keeps `after` whole).
    pub fn save_placements(&self, before: &Model, after: &Model) -> anyhow::Result<()> {
        match self {
            Store::File(file) => file.save(after),
            Store::Etcd(etcd) => etcd.save_change(before, after),
        }
    }

    /// Keeps `change`, made to `before` giving `after`: only what the change touches
    /// is written (one host's journal record; in a cluster, so that a write of another
    /// host that arrived meanwhile stays).
    pub fn save_change(
        &self,
        change: &Change,
        place: Option<Place>,
        before: &Model,
        after: &Model,
    ) -> anyhow::Result<()> {
        match self {
            Store::File(file) => file.save_change(change, place, before, after),
            Store::Etcd(etcd) => etcd.save_made(change, before, after),
        }
    }

    /// The model as this host runs it: in a cluster, the tenants it hosts, without the
    /// hosts counted dead, gateways placed ([`crate::placement::view`]). A single host
    /// runs it all.
    pub fn effective(&self, model: &Model) -> Model {
        match self {
            Store::File(_) => model.clone(),
            Store::Etcd(etcd) => crate::placement::view(model, &etcd.alive(), etcd.host()),
        }
    }

    /// Keeps a copy of the cluster's model where a start finds it when etcd does not
    /// answer; a single host's file is the model itself.
    pub fn keep_copy(&self, model: &Model) {
        if let Store::Etcd(etcd) = self {
            if let Err(e) = etcd.keep_copy(model) {
                tracing::warn!(error = %format!("{e:#}"), "could not keep the local copy of the cluster's model");
            }
        }
    }

    /// `model` with its floating gateways' records brought up to date, when this host
    /// places them for a cluster and they are not ([`EtcdStore::with_placements`]).
    pub fn with_placements(&self, model: &Model) -> Option<Model> {
        match self {
            Store::File(_) => None,
            Store::Etcd(etcd) => etcd.with_placements(model),
        }
    }

    /// Where, for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Store::File(file) => file.journal_dir().display().to_string(),
            Store::Etcd(etcd) => etcd.describe(),
        }
    }
}

/// How often a cluster host writes its local copy at most.
const COPY_EVERY: Duration = Duration::from_secs(1);

/// Writes a cluster's local copy off the control loop, at most once every
/// [`COPY_EVERY`] and the latest model each time: every watch event brings a model,
/// and writing out the whole cloud's at each costs more than taking the event. What
/// is pending when tenetd stops is written then; a crash may leave the copy that
/// long behind, which a start while etcd is away runs until etcd answers again.
pub struct LocalCopies {
    store: Arc<Store>,
    pending: Arc<Mutex<Option<Arc<Model>>>>,
    /// A task is writing or waiting to write what is pending.
    scheduled: Arc<AtomicBool>,
    /// Held while a copy is written: the last one, at stop, must not race the task's.
    writing: Arc<Mutex<()>>,
}

impl LocalCopies {
    /// Copies of `store`'s model (nothing is written for a single host's file store).
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            pending: Arc::default(),
            scheduled: Arc::default(),
            writing: Arc::default(),
        }
    }

    /// Keeps `model` as the copy to write next. Called in tenetd's runtime.
    pub fn keep(&self, model: Arc<Model>) {
        if !matches!(*self.store, Store::Etcd(_)) {
            return;
        }
        *lock(&self.pending) = Some(model);
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, pending) = (Arc::clone(&self.store), Arc::clone(&self.pending));
        let (scheduled, writing) = (Arc::clone(&self.scheduled), Arc::clone(&self.writing));
        tokio::spawn(async move {
            loop {
                let next = lock(&pending).take();
                let Some(model) = next else {
                    scheduled.store(false, Ordering::Release);
                    // A model kept between the take and the store saw a task running.
                    if lock(&pending).is_some() && !scheduled.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    return;
                };
                let (store, writing) = (Arc::clone(&store), Arc::clone(&writing));
                let _ = tokio::task::spawn_blocking(move || {
                    let _held = lock(&writing);
                    store.keep_copy(&model);
                })
                .await;
                tokio::time::sleep(COPY_EVERY).await;
            }
        });
    }
}

impl Drop for LocalCopies {
    fn drop(&mut self) {
        if let Some(model) = lock(&self.pending).take() {
            let _held = lock(&self.writing);
            self.store.keep_copy(&model);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one,
/// never a torn one: a temporary file (mode 0600: state names tenants, addresses and
/// ports) written and fsynced, renamed over `path`, and the directory fsynced so the
/// rename itself survives. The directory is made (0700) if missing.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().context("fsync of the new file")?;
        fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("fsync of {}", dir.display()))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_file_is_replaced_whole_and_readable_by_root_alone() {
        let dir = std::env::temp_dir().join(format!("tenet-private-{}", std::process::id()));
        let path = dir.join("sub").join("copy.json");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "state is root's alone");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
