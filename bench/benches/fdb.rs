//! The FDB's lookups at the size of DPDK's own hash table benchmark (`dpdk-test`'s
//! `hash_perf_autotest`: 2^19 entries, three quarters of them filled, added keys looked
//! up in random order), one at a time and a burst of 32 at a time (every slot
//! prefetched, then each looked up, as the worker does), so that a lookup's cost can be
//! set beside `rte_hash_lookup` and `rte_hash_lookup_bulk` on the same machine
//! (`bench/README.md` has both).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::dpdk::BURST;
use dataplane::table::{fdb_key, Fdb, FdbEntry, Location};

/// `hash_perf_autotest`'s table: 2^19 entries, 75% of them added.
const ADDED: u32 = (1 << 19) * 3 / 4;
/// Lookups prepared ahead, so the loop spends nothing on choosing keys.
const LOOKUPS: usize = 1 << 20;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `ADDED` MACs over 1,000 tenants, and the keys to look up (each an added one).
fn table() -> (Fdb, Vec<u64>) {
    let mut fdb = Fdb::growing();
    let mut keys = Vec::with_capacity(ADDED as usize);
    for i in 0..ADDED {
        let [_, a, b, c] = i.to_be_bytes();
        let key = fdb_key(i % 1000, &[2, 0, a, b, c, 1]);
        let entry = FdbEntry {
            location: Location::Port((i % 8) as u16),
            is_static: false,
        };
        fdb.insert(key, entry)
            .expect("a growing FDB takes every key");
        keys.push(key);
    }
    let mut x = 0x9e37_79b9_7f4a_7c15;
    let lookups = (0..LOOKUPS)
        .map(|_| keys[(xorshift(&mut x) % u64::from(ADDED)) as usize])
        .collect();
    (fdb, lookups)
}

fn lookups(c: &mut Criterion) {
    let (fdb, keys) = table();
    let mut group = c.benchmark_group("fdb");
    group.throughput(Throughput::Elements(BURST as u64));
    let mut at = 0;
    group.bench_function("lookup one at a time (393,216 of 2^19)", |b| {
        b.iter(|| {
            let burst = &keys[at..at + BURST];
            at = (at + BURST) % LOOKUPS;
            let mut found = 0;
            for &key in burst {
                found += usize::from(fdb.get(black_box(key)).is_some());
            }
            assert_eq!(found, BURST);
        })
    });
    group.bench_function("lookup a burst of 32 (393,216 of 2^19)", |b| {
        b.iter(|| {
            let burst = &keys[at..at + BURST];
            at = (at + BURST) % LOOKUPS;
            let mut hashes = [0u64; BURST];
            for (hash, &key) in hashes.iter_mut().zip(burst) {
                *hash = fdb.hash(black_box(key));
                fdb.prefetch_hashed(*hash);
            }
            let mut found = 0;
            for (&hash, &key) in hashes.iter().zip(burst) {
                found += usize::from(fdb.get_hashed(key, hash).is_some());
            }
            assert_eq!(found, BURST);
        })
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
