//! RCU-style publication of [`FlowTables`] snapshots.
//!
//! The control plane swaps in a new `Arc<FlowTables>` and bumps a version; a worker
//! compares the version once per burst (one relaxed load) and only on a change takes the
//! new `Arc`, dropping its old one. A snapshot is freed when the last worker has moved
//! past it. A packet is handled entirely by one snapshot; publishing never stops or
//! drops traffic, and the per-packet path takes no lock and touches no refcount.
//!
//! Each reader also posts the version it moved to, so the control plane can tell when
//! every reader is past a snapshot ([`TablePublisher::oldest_in_use`]): only then may an
//! identity that snapshot retired (a tenant's slot) be given to something else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;

use super::FlowTables;

struct Shared {
    current: ArcSwap<FlowTables>,
    version: AtomicU64,
    /// The version each live reader uses (a reader dropped leaves a dead `Weak`).
    readers: Mutex<Vec<Weak<AtomicU64>>>,
}

/// The control plane's end: publishes new snapshots.
#[derive(Clone)]
pub struct TablePublisher {
    shared: Arc<Shared>,
}

impl TablePublisher {
    /// Starts with `initial` as version 1.
    pub fn new(initial: FlowTables) -> Self {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(initial),
                version: AtomicU64::new(1),
                readers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Makes `tables` the snapshot every worker picks up at its next burst.
    pub fn publish(&self, tables: FlowTables) {
        self.shared.current.store(Arc::new(tables));
        self.shared.version.fetch_add(1, Ordering::Release);
    }

    /// The snapshot published last.
    pub fn current(&self) -> Arc<FlowTables> {
        self.shared.current.load_full()
    }

    /// Version of the snapshot published last.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }

    /// A reader for a worker.
    pub fn reader(&self) -> TableReader {
        let mut readers = self.lock_readers();
        // Read under the lock: a publish racing with this registration is either seen
        // here or counted by oldest_in_use as this reader's next refresh.
        let version = self.version();
        let posted = Arc::new(AtomicU64::new(version));
        readers.retain(|r| r.strong_count() > 0);
        readers.push(Arc::downgrade(&posted));
        TableReader {
            shared: Arc::clone(&self.shared),
            version,
            tables: self.current(),
            posted,
        }
    }

    /// The oldest version any reader still uses (the newest published when there is no
    /// reader). Everything a snapshot older than this retired is out of every reader's
    /// hands.
    pub fn oldest_in_use(&self) -> u64 {
        let newest = self.version();
        self.lock_readers()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|v| v.load(Ordering::Acquire))
            .fold(newest, u64::min)
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Weak<AtomicU64>>> {
        self.shared
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A worker's end: holds the snapshot it is using.
pub struct TableReader {
    shared: Arc<Shared>,
    version: u64,
    tables: Arc<FlowTables>,
    posted: Arc<AtomicU64>,
}

impl TableReader {
    /// Moves to the newest snapshot if there is one; true when it did. Call at the top
    /// of a burst.
    #[inline(always)]
    pub fn refresh(&mut self) -> bool {
        let published = self.shared.version.load(Ordering::Acquire);
        if published == self.version {
            return false;
        }
        self.tables = self.shared.current.load_full();
        self.version = published;
        true
    }

    /// Tells the control plane this reader is done with every snapshot before the one
    /// it holds now. Call after the state the older snapshots named is dropped.
    #[inline]
    pub fn post(&self) {
        self.posted.store(self.version, Ordering::Release);
    }

    /// The snapshot in use.
    #[inline(always)]
    pub fn tables(&self) -> &FlowTables {
        &self.tables
    }

    /// Version of the snapshot in use.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Design;

    #[test]
    fn readers_move_to_new_snapshots_and_old_ones_are_freed() {
        let publisher = TablePublisher::new(FlowTables::default());
        let mut reader = publisher.reader();
        let first = Arc::downgrade(&publisher.current());
        assert_eq!(reader.tables().design, Design::Dedicated);
        publisher.publish(FlowTables {
            design: Design::Shared,
            ..FlowTables::default()
        });
        assert_eq!(
            reader.tables().design,
            Design::Dedicated,
            "until the next burst"
        );
        assert!(
            first.upgrade().is_some(),
            "the reader still holds the old snapshot"
        );
        reader.refresh();
        assert_eq!(reader.tables().design, Design::Shared);
        assert!(
            first.upgrade().is_none(),
            "freed once every reader moved on"
        );
    }

    #[test]
    fn the_oldest_version_in_use_waits_for_every_reader_to_post() {
        let publisher = TablePublisher::new(FlowTables::default());
        assert_eq!(publisher.oldest_in_use(), 1, "no reader: the newest");
        let mut a = publisher.reader();
        let mut b = publisher.reader();
        publisher.publish(FlowTables::default());
        assert_eq!(publisher.oldest_in_use(), 1);
        a.refresh();
        a.post();
        assert_eq!(publisher.oldest_in_use(), 1, "b still holds version 1");
        b.refresh();
        assert_eq!(publisher.oldest_in_use(), 1, "moved, but not yet posted");
        b.post();
        assert_eq!(publisher.oldest_in_use(), 2);
        drop(a);
        drop(b);
        publisher.publish(FlowTables::default());
        assert_eq!(publisher.oldest_in_use(), 3, "dropped readers hold nothing");
    }
}
