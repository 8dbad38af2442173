//! A fixed-size open-addressing map from 128-bit keys to 32-bit values, for the per-core
//! state the packet path looks up by 5-tuple (the SNAT sessions).
//!
//! Unlike a general hash map it tells where a key's slot is before the lookup, so a
//! burst can prefetch every frame's slot ahead of the first one needing it (VPP's
//! bihash prefetch), and one 32-byte slot holds both key and value, so a hit touches
//! one cache line. Linear probing with backward-shift deletion keeps probe runs short
//! without tombstones; the table is sized once (at most half full) and never grows, so
//! nothing on the packet path allocates. The hash is seeded per table, so a tenant who
//! picks its own addresses and ports cannot predict which flows share a probe run.

use std::hash::{BuildHasher, Hasher};

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    key: u128,
    value: u32,
}

/// A value no entry has: marks a vacant slot.
const VACANT: u32 = u32::MAX;

const EMPTY: Slot = Slot {
    key: 0,
    value: VACANT,
};

/// A map of at most [`KeyIndex::capacity`] entries.
pub struct KeyIndex {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
    len: usize,
    capacity: usize,
}

impl KeyIndex {
    /// Room for `capacity` entries (values below `u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX - 1) as usize);
        let slots = (capacity * 2).next_power_of_two().max(16);
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            slots: vec![EMPTY; slots].into_boxed_slice(),
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

    /// Entries it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline(always)]
    fn home(&self, key: u128) -> usize {
        let x = (key as u64 ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let y = ((key >> 64) as u64 ^ x.rotate_left(31)).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        (y ^ y >> 29) as usize & self.mask
    }

    /// Starts loading `key`'s slot into the cache, for a lookup a little later.
    #[inline(always)]
    pub fn prefetch(&self, key: u128) {
        crate::dpdk::prefetch(&self.slots[self.home(key)]);
    }

    /// The value of `key`.
    #[inline(always)]
    pub fn get(&self, key: u128) -> Option<u32> {
        let mut i = self.home(key);
        loop {
            let slot = &self.slots[i];
            if slot.value == VACANT {
                return None;
            }
            if slot.key == key {
                return Some(slot.value);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Sets `key` to `value` (which must not be `u32::MAX`); refuses a new key when
    /// the index holds its capacity.
    pub fn insert(&mut self, key: u128, value: u32) -> Result<(), Full> {
        debug_assert!(value != VACANT);
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if slot.value == VACANT {
                if self.len >= self.capacity {
                    return Err(Full);
                }
                *slot = Slot { key, value };
                self.len += 1;
                return Ok(());
            }
            if slot.key == key {
                slot.value = value;
                return Ok(());
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: u128) -> Option<u32> {
        let mut hole = self.home(key);
        loop {
            let slot = self.slots[hole];
            if slot.value == VACANT {
                return None;
            }
            if slot.key == key {
                break;
            }
            hole = (hole + 1) & self.mask;
        }
        let value = self.slots[hole].value;
        // Backward shift: every later entry of the run that may live at the hole moves
        // there, so no lookup ever stops early at a vacancy in front of its key.
        let mut next = hole;
        loop {
            next = (next + 1) & self.mask;
            let slot = self.slots[next];
            if slot.value == VACANT {
                break;
            }
            let home = self.home(slot.key);
            // Distance from home to `next` vs. to the hole, around the ring.
            if next.wrapping_sub(home) & self.mask >= next.wrapping_sub(hole) & self.mask {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        Some(value)
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
    fn slots_are_half_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn behaves_like_a_map_through_inserts_and_removes() {
        // A tiny table makes long probe runs that wrap around the end, where backward
        // shifting is easiest to get wrong.
        let mut index = KeyIndex::new(8);
        let mut model = HashMap::new();
        let mut x = 0x1234_5678_9abc_def0u64;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = u128::from(x % 12) << 70 | u128::from(x % 5);
            if x.is_multiple_of(3) {
                assert_eq!(index.remove(key), model.remove(&key), "step {step}");
            } else {
                let full = model.len() >= 8 && !model.contains_key(&key);
                assert_eq!(index.insert(key, step).is_err(), full, "step {step}");
                if !full {
                    model.insert(key, step);
                }
            }
            assert_eq!(index.len(), model.len());
            for k in 0..12u128 {
                for l in 0..5u128 {
                    let key = k << 70 | l;
                    assert_eq!(index.get(key), model.get(&key).copied(), "step {step}");
                }
            }
        }
    }

    #[test]
    fn a_full_index_refuses_new_keys_but_updates_old_ones() {
        let mut index = KeyIndex::new(2);
        assert_eq!(index.insert(1, 10), Ok(()));
        assert_eq!(index.insert(2, 20), Ok(()));
        assert_eq!(index.insert(3, 30), Err(Full));
        assert_eq!(index.insert(1, 11), Ok(()));
        assert_eq!(index.get(1), Some(11));
        assert_eq!(index.remove(2), Some(20));
        assert_eq!(index.insert(3, 30), Ok(()));
    }
}
