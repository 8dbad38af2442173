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

use super::edit::TableEdit;
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
        drop(self.swap(tables));
    }

    /// [`Self::publish`], forgetting the snapshots kept in `spare`: edits cannot bring
    /// them up to date any more.
    pub fn publish_whole(&self, tables: FlowTables, spare: &mut Spare) {
        spare.kept.clear();
        drop(self.swap(tables));
    }

    /// Publishes the snapshot in force with `edits` made: a snapshot published before,
    /// once no worker holds it, brought up to date and edited in place (the cost of
    /// the edits); otherwise a copy of the snapshot in force. Whether a kept snapshot
    /// was free.
    pub fn publish_edits(&self, edits: Vec<TableEdit>, spare: &mut Spare) -> bool {
        let edits = Arc::new(edits);
        // Oldest first: a napping worker holds the one it took last.
        let free = spare
            .kept
            .iter_mut()
            .position(|k| Arc::get_mut(&mut k.tables).is_some())
            .map(|at| spare.kept.remove(at));
        let (mut tables, reused) = match free.map(|k| (Arc::try_unwrap(k.tables), k.behind)) {
            Some((Ok(mut tables), behind)) => {
                for edit in behind.iter().flat_map(|edits| edits.iter()) {
                    tables.apply(edit);
                }
                (tables, true)
            }
            _ => (FlowTables::clone(&self.current()), false),
        };
        for edit in edits.iter() {
            tables.apply(edit);
        }
        let replaced = self.swap(tables);
        for kept in &mut spare.kept {
            kept.behind.push(Arc::clone(&edits));
        }
        spare.kept.push(Kept {
            tables: replaced,
            behind: vec![edits],
        });
        if spare.kept.len() > KEPT {
            // The one furthest behind goes (whoever holds it frees it).
            spare.kept.remove(0);
        }
        reused
    }

    fn swap(&self, tables: FlowTables) -> Arc<FlowTables> {
        let old = self.shared.current.swap(Arc::new(tables));
        self.shared.version.fetch_add(1, Ordering::Release);
        old
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

/// How many snapshots published before the one in force [`Spare`] keeps: each worker
/// holds at most one of them (the one it took before a nap), so with a few workers one
/// is nearly always free.
const KEPT: usize = 3;

/// Snapshots published before the one in force, which workers let go of within a
/// burst: [`TablePublisher::publish_edits`] makes the next small change to one of them
/// instead of compiling or copying the tables.
#[derive(Default)]
pub struct Spare {
    /// Oldest first.
    kept: Vec<Kept>,
}

struct Kept {
    tables: Arc<FlowTables>,
    /// The edits, publish by publish, the snapshot in force has and `tables` has not.
    behind: Vec<Arc<Vec<TableEdit>>>,
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
    fn edits_reuse_a_snapshot_no_reader_holds_and_always_land() {
        use crate::table::fdb_key;
        use crate::table::Location;
        let learn = |last: u8, port: u16| TableEdit::Learn {
            tenant: 0,
            mac: [2, 0, 0, 0, 0, last],
            location: Location::Port(port),
        };
        let publisher = TablePublisher::new(FlowTables::default());
        let mut spare = Spare::default();
        let mut reader = publisher.reader();
        publisher.publish_whole(FlowTables::default(), &mut spare);
        reader.refresh();
        assert!(
            !publisher.publish_edits(vec![learn(1, 1)], &mut spare),
            "after a whole publish nothing kept can catch up: a copy is edited"
        );
        assert!(
            !publisher.publish_edits(vec![learn(2, 1)], &mut spare),
            "the reader still holds the one kept"
        );
        assert!(
            publisher.publish_edits(vec![learn(1, 5)], &mut spare),
            "the reader napped through the last one: it is free"
        );
        reader.refresh();
        assert!(
            publisher.publish_edits(vec![learn(3, 1)], &mut spare),
            "the reader let go of the oldest, three publishes behind"
        );
        reader.refresh();
        let fdb = &reader.tables().fdb;
        let at = |last: u8| {
            fdb.get(fdb_key(0, &[2, 0, 0, 0, 0, last]))
                .map(|e| e.location)
        };
        assert_eq!(
            (at(1), at(2), at(3)),
            (
                Some(Location::Port(5)),
                Some(Location::Port(1)),
                Some(Location::Port(1))
            ),
            "every edit made once, in order, whichever copy took it"
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
