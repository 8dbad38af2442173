//! RCU-style publication of [`FlowTables`] snapshots.
//!
//! The control plane swaps in a new `Arc<FlowTables>` and bumps a version; a worker
//! compares the version once per burst (one relaxed load) and only on a change takes the
//! new `Arc`, dropping its old one. A snapshot is freed when the last worker has moved
//! past it. A packet is handled entirely by one snapshot; publishing never stops or
//! drops traffic, and the per-packet path takes no lock and touches no refcount.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::FlowTables;

struct Shared {
    current: ArcSwap<FlowTables>,
    version: AtomicU64,
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
        TableReader {
            shared: Arc::clone(&self.shared),
            version: self.version(),
            tables: self.current(),
        }
    }
}

/// A worker's end: holds the snapshot it is using.
pub struct TableReader {
    shared: Arc<Shared>,
    version: u64,
    tables: Arc<FlowTables>,
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
}
