//! A set of port ids as a fixed bitmap: what a worker must flush, which ports are
//! captured. Copyable and allocation-free, so the hot path can keep one per burst.

use crate::MAX_PORTS;

const WORDS: usize = MAX_PORTS.div_ceil(64);

/// Port ids below [`MAX_PORTS`]; larger ids are never members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortSet([u64; WORDS]);

impl PortSet {
    /// The empty set.
    pub const EMPTY: Self = Self([0; WORDS]);

    /// Adds `port` (ignored when out of range).
    #[inline(always)]
    pub fn insert(&mut self, port: usize) {
        if let Some(word) = self.0.get_mut(port / 64) {
            *word |= 1 << (port % 64);
        }
    }

    /// Removes `port`.
    #[inline(always)]
    pub fn remove(&mut self, port: usize) {
        if let Some(word) = self.0.get_mut(port / 64) {
            *word &= !(1 << (port % 64));
        }
    }

    /// Whether `port` is in the set.
    #[inline(always)]
    pub fn contains(&self, port: usize) -> bool {
        self.0
            .get(port / 64)
            .is_some_and(|word| word & (1 << (port % 64)) != 0)
    }

    /// Whether no port is in the set.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&word| word == 0)
    }

    /// Empties the set, returning what it held.
    #[inline(always)]
    pub fn take(&mut self) -> Self {
        std::mem::take(self)
    }

    /// The members, in increasing order.
    #[inline(always)]
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut left = word;
            std::iter::from_fn(move || {
                if left == 0 {
                    return None;
                }
                let bit = left.trailing_zeros() as usize;
                left &= left - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_across_words_in_order() {
        let mut set = PortSet::EMPTY;
        assert!(set.is_empty());
        for p in [0, 63, 64, 200, MAX_PORTS - 1] {
            set.insert(p);
        }
        set.insert(MAX_PORTS);
        assert!(set.contains(64) && !set.contains(65) && !set.contains(MAX_PORTS));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![0, 63, 64, 200, MAX_PORTS - 1]
        );
        set.remove(63);
        let taken = set.take();
        assert!(set.is_empty());
        assert_eq!(taken.iter().count(), 4);
    }
}
