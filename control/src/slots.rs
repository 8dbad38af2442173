//! Stable slots for the identities the dataplane holds: a tenant's or a host's slot is
//! its index in the flow tables, and workers keep it in state that outlives a snapshot
//! (SNAT sessions, held frames, learn events on their way to the control plane).
//!
//! A key keeps its slot for as long as it is configured, whatever else comes and goes
//! (positions in the model's lists shift; slots do not). A key that leaves retires its
//! slot; the slot is handed out again only after every worker has moved to tables
//! without it (and so dropped the state that named it) and the events those workers
//! queued before have been drained. Until then nothing can confuse the old owner's
//! leftovers with a new owner.

use std::collections::BTreeSet;
use std::hash::Hash;

use hashbrown::HashMap;

/// Slots of one kind of identity.
#[derive(Debug)]
pub struct Slots<K> {
    by_key: HashMap<K, u32>,
    /// Slots free for reuse, lowest first.
    free: BTreeSet<u32>,
    /// Slots never handed out start here.
    fresh: u32,
    /// How many slots there are: `0..limit`.
    limit: u32,
    /// Retired slots and the first table version published without them.
    retiring: Vec<(u32, u64)>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// Slots `0..limit`.
    pub fn new(limit: u32) -> Self {
        Self {
            by_key: HashMap::new(),
            free: BTreeSet::new(),
            fresh: 0,
            limit,
            retiring: Vec::new(),
        }
    }

    /// The slot of each of `keys`, in order: the one it had, or a free one for a key
    /// new here (`None` when every slot is taken or still retiring). Keys held before
    /// and missing from `keys` retire their slots as of table version `version` (the
    /// first that will not have them); returns those slots too.
    pub fn assign(&mut self, keys: &[K], version: u64) -> (Vec<Option<u32>>, Vec<u32>) {
        let wanted: hashbrown::HashSet<&K> = keys.iter().collect();
        let gone: Vec<K> = self
            .by_key
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        let retired = gone
            .iter()
            .filter_map(|key| self.retire(key, version))
            .collect();
        let slots = keys.iter().map(|key| self.give(key)).collect();
        (slots, retired)
    }

    /// The slot of `key`: the one it has, or a free one (`None` when every slot is
    /// taken or still retiring).
    pub fn give(&mut self, key: &K) -> Option<u32> {
        if let Some(&slot) = self.by_key.get(key) {
            return Some(slot);
        }
        let slot = self.take()?;
        self.by_key.insert(key.clone(), slot);
        Some(slot)
    }

    /// Retires the slot of `key` (gone) as of table version `version`; the slot, if
    /// it had one.
    pub fn retire(&mut self, key: &K, version: u64) -> Option<u32> {
        let slot = self.by_key.remove(key)?;
        self.retiring.push((slot, version));
        Some(slot)
    }

    /// Frees the retired slots every reader is past: `oldest_in_use` is the oldest
    /// table version a worker still holds, read before the events queued until then
    /// were drained.
    pub fn release(&mut self, oldest_in_use: u64) {
        let free = &mut self.free;
        self.retiring.retain(|&(slot, version)| {
            let done = version <= oldest_in_use;
            if done {
                free.insert(slot);
            }
            !done
        });
    }

    /// The slot `key` holds now.
    pub fn slot(&self, key: &K) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    /// Slots waiting for the workers before they may be reused.
    pub fn retiring(&self) -> usize {
        self.retiring.len()
    }

    fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop_first() {
            return Some(slot);
        }
        if self.fresh < self.limit {
            self.fresh += 1;
            return Some(self.fresh - 1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_key_keeps_its_slot_while_others_come_and_go() {
        let mut slots = Slots::new(100);
        let (first, _) = slots.assign(&names(&["a", "b", "c"]), 2);
        assert_eq!(first, [Some(0), Some(1), Some(2)]);
        // "a" leaves, "d" arrives ahead of the others: positions shift, slots do not.
        let (next, retired) = slots.assign(&names(&["d", "b", "c"]), 3);
        assert_eq!(retired, [0]);
        assert_eq!(
            next,
            [Some(3), Some(1), Some(2)],
            "a's slot is not reused yet"
        );
    }

    #[test]
    fn a_retired_slot_returns_only_after_every_reader_passed_its_version() {
        let mut slots = Slots::new(100);
        slots.assign(&names(&["red", "blue"]), 1);
        let (_, retired) = slots.assign(&names(&["blue"]), 5);
        assert_eq!(retired, [0]);
        slots.release(4);
        assert_eq!(slots.retiring(), 1, "a reader still holds version 4");
        let (again, _) = slots.assign(&names(&["blue", "red"]), 6);
        assert_eq!(again, [Some(1), Some(2)], "red comes back in a new slot");
        slots.release(5);
        assert_eq!(slots.retiring(), 0);
        let (later, _) = slots.assign(&names(&["blue", "red", "green"]), 7);
        assert_eq!(
            later,
            [Some(1), Some(2), Some(0)],
            "the freed slot is reused"
        );
    }

    #[test]
    fn running_out_of_slots_leaves_the_newcomer_without_one() {
        let mut slots = Slots::new(2);
        let (got, _) = slots.assign(&names(&["a", "b", "c"]), 1);
        assert_eq!(got, [Some(0), Some(1), None]);
        let (got, _) = slots.assign(&names(&["b", "c"]), 2);
        assert_eq!(got, [Some(1), None], "a's slot is still retiring");
        slots.release(2);
        let (got, _) = slots.assign(&names(&["b", "c"]), 3);
        assert_eq!(got, [Some(1), Some(0)]);
    }
}
