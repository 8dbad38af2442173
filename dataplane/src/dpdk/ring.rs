//! Single-producer/single-consumer rings of mbufs between two cores: a worker hands
//! packets to the core that owns the destination's TX queue. Creating one yields the two
//! ends as separate values, so each side has exactly one owner.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::error::DpdkError;
use super::mbuf::MbufBatch;

static NEXT_RING: AtomicU32 = AtomicU32::new(0);

struct RawRing(NonNull<dpdk_sys::rte_ring>);

// SAFETY: an SP/SC rte_ring is built for one producer and one consumer on different
// threads; the split into RingProducer/RingConsumer keeps it to one of each.
unsafe impl Send for RawRing {}
// SAFETY: shared only between the two ends, which use disjoint halves of the ring.
unsafe impl Sync for RawRing {}

impl Drop for RawRing {
    fn drop(&mut self) {
        // The consumer's Drop drained the ring, but a producer that outlived it (a
        // worker that had not yet let go of a detached port) may have filled it again.
        let mut batch = MbufBatch::new();
        loop {
            let (slots, room) = batch.spare_raw();
            // SAFETY: both ends are gone, so this is the ring's only user; every object
            // in it is an owned mbuf, and slots has room writable entries.
            let n = unsafe {
                dpdk_sys::tenet_ring_sc_dequeue_burst(
                    self.0.as_ptr(),
                    slots.cast(),
                    u32::from(room),
                )
            };
            if n == 0 {
                break;
            }
            batch.filled(n as usize);
            batch.free_all();
        }
        // SAFETY: the last end was dropped and the ring is empty; nothing else points
        // at it.
        unsafe { dpdk_sys::rte_ring_free(self.0.as_ptr()) };
    }
}

/// Constructor for a ring's two ends.
pub struct MbufRing;

impl MbufRing {
    /// Creates a ring with room for `capacity - 1` packets (`capacity` a power of two).
    pub fn create(label: &str, capacity: u32) -> Result<(RingProducer, RingConsumer), DpdkError> {
        let seq = NEXT_RING.fetch_add(1, Ordering::Relaxed);
        let name: String = format!("{seq}-{label}").chars().take(28).collect();
        let c_name = CString::new(name.clone())
            .map_err(|_| DpdkError::invalid("rte_ring_create", label, "NUL in name"))?;
        if !capacity.is_power_of_two() {
            return Err(DpdkError::invalid(
                "rte_ring_create",
                &name,
                "capacity must be a power of two",
            ));
        }
        // SAFETY: c_name is valid for the call; flags ask for single-producer and
        // single-consumer, which the split ends guarantee.
        let raw = unsafe {
            dpdk_sys::rte_ring_create(
                c_name.as_ptr(),
                capacity,
                dpdk_sys::SOCKET_ID_ANY,
                dpdk_sys::RING_F_SP_ENQ | dpdk_sys::RING_F_SC_DEQ,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::new("rte_ring_create", &name, 0))?;
        let shared = Arc::new(RawRing(raw));
        Ok((
            RingProducer {
                ring: Arc::clone(&shared),
            },
            RingConsumer { ring: shared },
        ))
    }
}

/// The sending end. One owner (a worker).
pub struct RingProducer {
    ring: Arc<RawRing>,
}

impl RingProducer {
    /// Moves as many packets as fit into the ring; what did not fit stays in the batch.
    /// Returns how many moved.
    #[inline(always)]
    pub fn enqueue_burst(&mut self, batch: &mut MbufBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let len = batch.len() as u32;
        // SAFETY: the batch's first len slots are owned mbufs; the ring takes the first
        // n, which consume_front forgets. This is the ring's only producer.
        let n = unsafe {
            dpdk_sys::tenet_ring_sp_enqueue_burst(self.ring.0.as_ptr(), batch.raw_ptr().cast(), len)
        };
        batch.consume_front(n as usize);
        n as usize
    }
}

/// The receiving end. One owner (the worker that owns the TX queue).
pub struct RingConsumer {
    ring: Arc<RawRing>,
}

impl RingConsumer {
    /// Takes up to the batch's free room from the ring; returns how many.
    #[inline(always)]
    pub fn dequeue_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let (slots, room) = batch.spare_raw();
        // SAFETY: slots has room writable entries; this is the ring's only consumer and
        // every object in the ring is an owned mbuf put there by the producer.
        let n = unsafe {
            dpdk_sys::tenet_ring_sc_dequeue_burst(
                self.ring.0.as_ptr(),
                slots.cast(),
                u32::from(room),
            )
        };
        batch.filled(n as usize);
        n as usize
    }

    /// Packets waiting in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: a racy read of the ring's head/tail, fine for a count.
        unsafe { dpdk_sys::tenet_ring_count(self.ring.0.as_ptr()) as usize }
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for RingConsumer {
    fn drop(&mut self) {
        let mut batch = MbufBatch::new();
        while self.dequeue_burst(&mut batch) > 0 {
            batch.free_all();
        }
    }
}
