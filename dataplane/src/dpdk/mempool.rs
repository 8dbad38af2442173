//! Packet buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::error::DpdkError;
use super::mbuf::Mbuf;

static NEXT_POOL: AtomicU32 = AtomicU32::new(0);

/// Per-lcore cache of free mbufs: the fast path allocates and frees from it without
/// touching the shared ring.
const CACHE_SIZE: u32 = 256;

/// A pool of packet buffers. Ports' RX queues fill from it; dropping it while a port
/// still uses it is prevented by the daemon's drop order (ports first).
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    capacity: u32,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many lcores; the pointer
// is only used through thread-safe DPDK calls.
unsafe impl Send for Mempool {}
// SAFETY: as above: all access goes through DPDK's multi-thread-safe mempool API.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with the default data room (2048 B + headroom).
    pub fn new(label: &str, count: u32, socket: i32) -> Result<Self, DpdkError> {
        let seq = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        // Pool names are global in DPDK and limited to 26 bytes.
        let name: String = format!("{seq}-{label}").chars().take(24).collect();
        let c_name = CString::new(name.clone())
            .map_err(|_| DpdkError::invalid("rte_pktmbuf_pool_create", label, "NUL in name"))?;
        let cache = CACHE_SIZE.min(count / 2);
        // SAFETY: c_name is a valid C string for the duration of the call; sizes are
        // plain integers DPDK validates.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                count,
                cache,
                0,
                dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        let raw =
            NonNull::new(raw).ok_or_else(|| DpdkError::new("rte_pktmbuf_pool_create", &name, 0))?;
        Ok(Self {
            raw,
            name,
            capacity: count,
        })
    }

    /// The pool's DPDK name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many mbufs the pool was created with.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Free mbufs (in the shared ring plus every lcore cache).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive; the count is a racy snapshot by design.
        unsafe { dpdk_sys::tenet_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Allocates one mbuf, reset and empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        let mut slot = [std::ptr::null_mut(); 1];
        // SAFETY: the pool is alive and slot has room for the one pointer requested.
        let ret =
            unsafe { dpdk_sys::tenet_pktmbuf_alloc_bulk(self.raw.as_ptr(), slot.as_mut_ptr(), 1) };
        if ret != 0 {
            return None;
        }
        NonNull::new(slot[0]).map(Mbuf::from_raw)
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: nothing references the pool any more: ports using it were stopped
        // and closed first, and every Mbuf borrowed from it was freed.
        unsafe { dpdk_sys::rte_mempool_free(self.raw.as_ptr()) };
    }
}
