//! Where the live [`Model`] is kept: one host alone uses the file store (JSON replaced
//! atomically, readable by root alone: [`write_private`]); hosts of a cluster share it
//! in etcd ([`etcd`]), each keeping a local copy of its own view for a start while etcd
//! does not answer.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::model::Model;

pub mod etcd;
pub mod journal;

pub use etcd::{Conflict, EtcdStore};

/// The store a tenetd uses.
pub enum Store {
    /// One host's file.
    File(FileStore),
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

    /// The stored model again after a change was reported: a cluster store rebuilds it
    /// from what its watch delivered, without reading all of etcd.
    pub fn reload(&self, seed: &Model) -> anyhow::Result<Option<Model>> {
        match self {
            Store::File(file) => file.load(),
            Store::Etcd(etcd) => etcd.load_cached(seed),
        }
    }

    /// Keeps `model`; refused (nothing kept) on failure.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        match self {
            Store::File(file) => file.save(model),
            Store::Etcd(etcd) => etcd.save(model),
        }
    }

    /// Keeps the change from `before` to `after`: in a cluster only what the change
    /// touches is written, so a write of another host that arrived meanwhile stays.
    pub fn save_change(&self, before: &Model, after: &Model) -> anyhow::Result<()> {
        match self {
            Store::File(file) => file.save(after),
            Store::Etcd(etcd) => etcd.save_change(before, after),
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
            Store::File(file) => file.path().display().to_string(),
            Store::Etcd(etcd) => etcd.describe(),
        }
    }
}

/// A model kept in one file.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (its directory is created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored model, or `None` when nothing was stored yet.
    pub fn load(&self) -> anyhow::Result<Option<Model>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let model = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a tenet state file", self.path.display()))?;
        Ok(Some(model))
    }

    /// Replaces the stored model atomically.
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(model).context("encoding the model")?;
        write_private(&self.path, &bytes)
    }
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
    use crate::config::Config;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = std::env::temp_dir().join(format!("tenet-store-{}", std::process::id()));
        let store = FileStore::new(dir.join("state.json"));
        assert!(store.load().unwrap().is_none());
        let config = Config::parse("[[tenant]]\nname = \"red\"\nid = 7\n", |_| None).unwrap();
        store.save(&Model::of(&config)).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.tenants[0].name, "red");
        assert_eq!(back.tenants[0].id, 7);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "state is root's alone");
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left behind");
        fs::write(store.path(), b"{ torn").unwrap();
        assert!(
            store.load().is_err(),
            "a damaged file is refused, not silently emptied"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
