//! What a receiver learns from probes: per stream, how many arrived, how many came
//! after a later one (reordered) and how many never came (holes in the sequence); and a
//! latency histogram. Both are fixed-size and allocation-free on update, so the
//! generator's receive loop can run them per packet.

use serde::Serialize;

/// One stream's sequence numbers as they arrive.
#[derive(Debug, Clone, Default)]
pub struct Sequence {
    highest: Option<u32>,
    received: u64,
    reordered: u64,
    holes: i64,
}

impl Sequence {
    /// Records sequence number `seq`.
    #[inline]
    pub fn see(&mut self, seq: u32) {
        self.received += 1;
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return;
        };
        // Serial-number arithmetic: the sequence wraps at 2^32.
        let ahead = seq.wrapping_sub(highest) as i32;
        if ahead > 0 {
            self.holes += i64::from(ahead - 1);
            self.highest = Some(seq);
        } else {
            // Late (or repeated): it fills one hole it left earlier.
            self.reordered += 1;
            self.holes -= 1;
        }
    }

    /// Probes received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Probes that arrived after one sent later.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Sequence numbers skipped and never filled: the probes lost between the first and
    /// the last one received.
    pub fn lost(&self) -> u64 {
        self.holes.max(0) as u64
    }
}

/// Latencies in nanoseconds, log-linear buckets: 16 per power of two, so any quantile
/// is within about 3% of the truth, from 1 ns to about 34 seconds.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max: u64,
}

const SUB: u32 = 4; // 2^4 buckets per power of two
const BUCKETS: usize = 32 << SUB;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    #[inline]
    fn bucket(ns: u64) -> usize {
        if ns < 1 << SUB {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        let mantissa = (ns >> (exp - SUB)) & ((1 << SUB) - 1);
        (((exp - SUB + 1) << SUB) as u64 + mantissa).min(BUCKETS as u64 - 1) as usize
    }

    /// The smallest value of bucket `b`.
    fn floor(b: usize) -> u64 {
        let b = b as u64;
        if b < 1 << SUB {
            return b;
        }
        let exp = (b >> SUB) + u64::from(SUB) - 1;
        let mantissa = b & ((1 << SUB) - 1);
        (1 << exp) | (mantissa << (exp - u64::from(SUB)))
    }

    /// Records one latency.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The value below which fraction `q` of the values lie (the bucket's middle).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let low = Self::floor(b);
                let high = Self::floor(b + 1).max(low + 1);
                return Some(((low + high) / 2).min(self.max));
            }
        }
        Some(self.max)
    }

    /// p50, p99, p99.9 and the maximum.
    pub fn summary(&self) -> Option<LatencySummary> {
        Some(LatencySummary {
            samples: self.total,
            p50_ns: self.quantile(0.5)?,
            p99_ns: self.quantile(0.99)?,
            p999_ns: self.quantile(0.999)?,
            max_ns: self.max,
        })
    }
}

/// Latency quantiles of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Probes measured.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orderly_stream_has_no_loss_and_no_reordering() {
        let mut s = Sequence::default();
        for seq in u32::MAX - 5..=u32::MAX {
            s.see(seq);
        }
        for seq in 0..10 {
            s.see(seq);
        }
        assert_eq!((s.received(), s.lost(), s.reordered()), (16, 0, 0));
    }

    #[test]
    fn holes_and_late_arrivals_are_told_apart() {
        let mut s = Sequence::default();
        // 0 1 3 2 5 6 9: 2 is late, 4, 7 and 8 never come.
        for seq in [0, 1, 3, 2, 5, 6, 9] {
            s.see(seq);
        }
        assert_eq!(s.received(), 7);
        assert_eq!(s.reordered(), 1);
        assert_eq!(s.lost(), 3);
    }

    #[test]
    fn quantiles_are_within_the_bucket_precision() {
        let mut h = Histogram::default();
        for ns in 1..=100_000u64 {
            h.record(ns);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.summary().unwrap().max_ns, 100_000);
        assert_eq!(Histogram::default().summary(), None);
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for ns in (0..1_000_000u64).chain([u64::MAX / 2, u64::MAX]) {
            let b = Histogram::bucket(ns);
            assert!(b >= last && b < BUCKETS, "{ns}");
            last = b;
            if b + 1 < BUCKETS {
                assert!(
                    Histogram::floor(b) <= ns && ns < Histogram::floor(b + 1),
                    "{ns}"
                );
            }
        }
    }
}
