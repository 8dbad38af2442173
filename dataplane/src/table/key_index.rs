//! An open-addressing map from integer keys to small copyable values, for what the
//! packet path looks up a burst at a time: the FDB (64-bit keys, a snapshot's, grown by
//! the control plane) and the per-core SNAT sessions (128-bit 5-tuple keys, sized once).
//!
//! Unlike a general hash map it tells where a key's slot is before the lookup, so a
//! burst can prefetch every frame's slot ahead of the first one needing it (VPP's
//! bihash prefetch), and one slot holds both key and value and never straddles two
//! cache lines, so a hit touches one line. Linear probing with backward-shift deletion
//! keeps probe runs short without tombstones; the table is at most half full. A fixed
//! index never grows, so nothing on the packet path allocates; a growing one doubles
//! when an insert would pass half (only the control plane inserts there). The hash is
//! seeded (per SNAT table; once per process for every FDB, whose hashes per-core caches
//! keep across snapshots), so a tenant who picks its own MACs, addresses and ports
//! cannot predict which of them share a probe run or a cache slot.

use std::hash::{BuildHasher, Hasher};

/// A key of a [`KeyIndex`].
pub trait IndexKey: Copy + Eq + Default + std::fmt::Debug {
    /// A zero-sized field whose alignment is the slot's size, so that a slot never
    /// straddles two cache lines.
    type SlotAlign: Copy + Default;

    /// The key's hash under `seed`.
    fn hash(self, seed: u64) -> u64;
}

/// Aligns a 16-byte slot.
#[derive(Clone, Copy, Default)]
#[repr(align(16))]
pub struct Align16;

/// Aligns a 32-byte slot.
#[derive(Clone, Copy, Default)]
#[repr(align(32))]
pub struct Align32;

/// A per-core direct-mapped cache's slots, a power of two of them (sized at start),
/// each key's slot the top bits of its hash: a table leaves those to caches (its own
/// slot comes from the low bits), so one hash serves both.
pub struct HashSlots<T> {
    slots: Box<[T]>,
    shift: u32,
}

impl<T: Copy> HashSlots<T> {
    /// `len` slots holding `empty`; `len` is a power of two of at least 2 (checked
    /// where it is configured).
    pub fn new(len: usize, empty: T) -> Self {
        assert!(len.is_power_of_two() && len > 1, "{len} cache slots");
        Self {
            slots: vec![empty; len].into_boxed_slice(),
            shift: 64 - len.trailing_zeros(),
        }
    }

    /// How many slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never: there are at least two slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot of the key hashed to `hash`.
    #[inline(always)]
    pub fn at(&self, hash: u64) -> &T {
        &self.slots[(hash >> self.shift) as usize]
    }

    /// The slot of the key hashed to `hash`, to change.
    #[inline(always)]
    pub fn at_mut(&mut self, hash: u64) -> &mut T {
        &mut self.slots[(hash >> self.shift) as usize]
    }

    /// Where [`HashSlots::at`] finds `hash`'s slot.
    pub fn index(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Every slot to `value`.
    pub fn fill(&mut self, value: T) {
        self.slots.fill(value);
    }
}

/// A seed no one outside the process can predict.
pub(crate) fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[inline(always)]
fn mix(low: u64, high: u64, seed: u64) -> u64 {
    let x = (low ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let y = (high ^ x.rotate_left(31)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    y ^ y >> 29
}

impl IndexKey for u64 {
    type SlotAlign = Align16;

    /// One multiplication, folded (the full 128-bit product's halves XORed, as aHash
    /// and wyhash do), so both the low bits the table takes and the top bits the
    /// per-core caches take depend on every bit of the key: the FDB's keys are hashed
    /// once a frame even where no table lookup follows (a cache hit). The seeded key's
    /// high bits are shifted into its low ones first: an FDB key holds its tenant in
    /// the top 17 bits, and without the shift one seed in eight crowded 1,000 tenants'
    /// senders and destinations into a per-core cache's slots (up to 1,170 of 2,000
    /// sharing a slot, where random slots share about 770).
    #[inline(always)]
    fn hash(self, seed: u64) -> u64 {
        let x = self ^ seed;
        let product = u128::from(x ^ x >> 29) * 0x9e37_79b9_7f4a_7c15;
        (product as u64) ^ (product >> 64) as u64
    }
}

impl IndexKey for u128 {
    type SlotAlign = Align32;

    #[inline(always)]
    fn hash(self, seed: u64) -> u64 {
        mix(self as u64, (self >> 64) as u64, seed)
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot<K: IndexKey, V> {
    key: K,
    /// `None`: vacant.
    value: Option<V>,
    _align: K::SlotAlign,
}

impl<K: IndexKey, V: Copy> Slot<K, V> {
    fn vacant() -> Self {
        Self {
            key: K::default(),
            value: None,
            _align: K::SlotAlign::default(),
        }
    }
}

/// A map of at most [`KeyIndex::capacity`] entries (a fixed index), or of any number
/// (a growing one).
#[derive(Clone)]
pub struct KeyIndex<K: IndexKey, V> {
    slots: Box<[Slot<K, V>]>,
    mask: usize,
    seed: u64,
    len: usize,
    /// `None`: grows.
    capacity: Option<usize>,
}

impl<K: IndexKey, V: Copy> KeyIndex<K, V> {
    /// Room for `capacity` entries, never more.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX - 1) as usize);
        Self::with_slots(
            (capacity * 2).next_power_of_two(),
            Some(capacity),
            random_seed(),
        )
    }

    /// Room for any number of entries: inserts grow it.
    pub fn growing() -> Self {
        Self::with_slots(16, None, random_seed())
    }

    /// Like [`KeyIndex::growing`], hashing under `seed`: indexes made with one seed
    /// give a key the same [`KeyIndex::hash`], so a cache of hashes outlives each.
    pub fn growing_with_seed(seed: u64) -> Self {
        Self::with_slots(16, None, seed)
    }

    fn with_slots(slots: usize, capacity: Option<usize>, seed: u64) -> Self {
        let slots = slots.max(16);
        Self {
            slots: vec![Slot::vacant(); slots].into_boxed_slice(),
            mask: slots - 1,
            seed,
            len: 0,
            capacity,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries it can hold without growing.
    pub fn capacity(&self) -> usize {
        self.capacity.unwrap_or(self.slots.len() / 2)
    }

    /// `key`'s hash, which [`KeyIndex::get_hashed`] and [`KeyIndex::prefetch_hashed`]
    /// take so that a burst hashes each key once; its top bits are free for per-core
    /// caches ([`HashSlots`]).
    #[inline(always)]
    pub fn hash(&self, key: K) -> u64 {
        key.hash(self.seed)
    }

    #[inline(always)]
    fn home(&self, key: K) -> usize {
        self.hash(key) as usize & self.mask
    }

    /// Starts loading `key`'s slot into the cache, for a lookup a little later.
    #[inline(always)]
    pub fn prefetch(&self, key: K) {
        self.prefetch_hashed(self.hash(key));
    }

    /// Starts loading the slot of the key whose [`KeyIndex::hash`] is `hash`.
    #[inline(always)]
    pub fn prefetch_hashed(&self, hash: u64) {
        crate::dpdk::prefetch(&self.slots[hash as usize & self.mask]);
    }

    /// The value of `key`.
    #[inline(always)]
    pub fn get(&self, key: K) -> Option<V> {
        self.get_hashed(key, self.hash(key))
    }

    /// The value of `key`, whose [`KeyIndex::hash`] is `hash`.
    #[inline(always)]
    pub fn get_hashed(&self, key: K, hash: u64) -> Option<V> {
        debug_assert_eq!(hash, self.hash(key), "a hash of another key or seed");
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &self.slots[i];
            match slot.value {
                None => return None,
                Some(value) if slot.key == key => return Some(value),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`, returning the value it had; a fixed index refuses a new
    /// key when it holds its capacity, a growing one doubles past half full.
    pub fn insert(&mut self, key: K, value: V) -> Result<Option<V>, Full> {
        self.insert_hashed(key, self.hash(key), value)
    }

    /// [`KeyIndex::insert`] of `key`, whose [`KeyIndex::hash`] is `hash`.
    pub fn insert_hashed(&mut self, key: K, hash: u64, value: V) -> Result<Option<V>, Full> {
        debug_assert_eq!(hash, self.hash(key), "a hash of another key or seed");
        let mut i = hash as usize & self.mask;
        loop {
            let slot = &mut self.slots[i];
            match slot.value {
                None => break,
                Some(old) if slot.key == key => {
                    slot.value = Some(value);
                    return Ok(Some(old));
                }
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        match self.capacity {
            Some(capacity) if self.len >= capacity => return Err(Full),
            None if (self.len + 1) * 2 > self.slots.len() => {
                self.reserve(1);
                return self.insert_hashed(key, hash, value);
            }
            _ => {}
        }
        self.slots[i] = Slot {
            key,
            value: Some(value),
            _align: K::SlotAlign::default(),
        };
        self.len += 1;
        Ok(None)
    }

    /// Room for `more` entries beyond those held without growing again (a fixed index
    /// keeps its size).
    pub fn reserve(&mut self, more: usize) {
        let want = ((self.len + more) * 2).next_power_of_two();
        if self.capacity.is_some() || want <= self.slots.len() {
            return;
        }
        let old = std::mem::replace(
            &mut self.slots,
            vec![Slot::vacant(); want].into_boxed_slice(),
        );
        self.mask = want - 1;
        self.len = 0;
        for slot in old.iter() {
            if let Some(value) = slot.value {
                let _ = self.insert(slot.key, value);
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: K) -> Option<V> {
        let mut hole = self.home(key);
        loop {
            let slot = &self.slots[hole];
            match slot.value {
                None => return None,
                Some(_) if slot.key == key => break,
                Some(_) => hole = (hole + 1) & self.mask,
            }
        }
        let value = self.slots[hole].value;
        // Backward shift: every later entry of the run that may live at the hole moves
        // there, so no lookup ever stops early at a vacancy in front of its key.
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let slot = self.slots[next];
            if slot.value.is_none() {
                break;
            }
            let home = self.home(slot.key);
            // Distance from home to `next` vs. to the hole, around the ring.
            if next.wrapping_sub(home) & self.mask >= next.wrapping_sub(hole) & self.mask {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = Slot::vacant();
        self.len -= 1;
        value
    }

    /// Every entry, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + '_ {
        self.slots
            .iter()
            .filter_map(|slot| slot.value.map(|value| (slot.key, value)))
    }
}

/// Equal when they hold the same entries (whatever their seeds and sizes).
impl<K: IndexKey, V: Copy + PartialEq> PartialEq for KeyIndex<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: IndexKey, V: Copy + std::fmt::Debug> std::fmt::Debug for KeyIndex<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The index holds as many entries as it was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn slots_fill_their_share_of_a_cache_line_and_never_straddle_two() {
        // An FDB entry: a 64-bit key and a location, four to a line.
        type Fdb = Slot<u64, crate::table::FdbEntry>;
        assert_eq!(std::mem::size_of::<Fdb>(), 16);
        assert_eq!(std::mem::align_of::<Fdb>(), 16);
        // A SNAT session's: a 5-tuple key and a session number, two to a line.
        assert_eq!(std::mem::size_of::<Slot<u128, u32>>(), 32);
        assert_eq!(std::mem::align_of::<Slot<u128, u32>>(), 32);
    }

    /// Random inserts and removes of `keys` distinct keys, checked against a map after
    /// every step; `full` says whether an insert must be refused.
    fn against_a_map<K: IndexKey + std::hash::Hash>(
        index: &mut KeyIndex<K, u32>,
        keys: impl Fn(u64) -> K,
        count: u64,
        capacity: Option<usize>,
    ) {
        let mut model = HashMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = keys(x % count);
            if x.is_multiple_of(3) {
                assert_eq!(index.remove(key), model.remove(&key), "step {step}");
            } else {
                let full = capacity.is_some_and(|c| model.len() >= c) && !model.contains_key(&key);
                match index.insert(key, step) {
                    Err(Full) => assert!(full, "step {step}: refused"),
                    Ok(old) => {
                        assert!(!full, "step {step}: taken past capacity");
                        assert_eq!(old, model.insert(key, step), "step {step}");
                    }
                }
            }
            assert_eq!(index.len(), model.len());
            for k in 0..count {
                let key = keys(k);
                assert_eq!(index.get(key), model.get(&key).copied(), "step {step}");
            }
        }
        let mut listed: Vec<(K, u32)> = index.iter().collect();
        assert_eq!(listed.len(), model.len(), "every entry listed once");
        listed.retain(|(k, v)| model.get(k) != Some(v));
        assert!(listed.is_empty(), "listed as held: {listed:?}");
    }

    #[test]
    fn a_fixed_index_behaves_like_a_map_through_inserts_and_removes() {
        // A tiny table makes long probe runs that wrap around the end, where backward
        // shifting is easiest to get wrong.
        let mut index = KeyIndex::new(8);
        against_a_map(
            &mut index,
            |k| u128::from(k % 12) << 70 | u128::from(k / 12),
            60,
            Some(8),
        );
        assert_eq!(index.slots.len(), 16, "never grew");
    }

    #[test]
    fn a_growing_index_behaves_like_a_map_and_grows_only_past_half() {
        let mut index = KeyIndex::growing();
        against_a_map(&mut index, |k| k << 47 | 0x0200_0000_0001, 300, None);
        assert!(index.len() * 2 <= index.slots.len());
        assert!(index.slots.len() <= 1024, "300 keys fit in 1024 slots");
        let mut copy = index.clone();
        assert_eq!(copy, index);
        copy.reserve(10_000);
        assert_eq!(copy, index, "equal whatever their sizes");
        let some = index.iter().next().map(|(k, _)| k).unwrap_or_default();
        copy.insert(some, u32::MAX).unwrap();
        assert_ne!(copy, index);
    }

    #[test]
    fn a_full_index_refuses_new_keys_but_updates_old_ones() {
        let mut index = KeyIndex::<u128, u32>::new(2);
        assert_eq!(index.insert(1, 10), Ok(None));
        assert_eq!(index.insert(2, 20), Ok(None));
        assert_eq!(index.insert(3, 30), Err(Full));
        assert_eq!(index.insert(1, 11), Ok(Some(10)));
        assert_eq!(index.get(1), Some(11));
        assert_eq!(index.remove(2), Some(20));
        assert_eq!(index.insert(3, 30), Ok(None));
    }
}
