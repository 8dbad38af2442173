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

/// Data room of a large buffer: the most a `u16` buffer length allows, so one
/// contiguous buffer holds a 64 KiB TCP segment (65,407 bytes after the headroom).
const LARGE_DATA_ROOM: u16 = u16::MAX;

/// Per-lcore cache of large buffers: few are in flight at once, and a cache of the
/// small pools' size would strand most of the pool.
const LARGE_CACHE_SIZE: u32 = 16;

/// A pool of packet buffers. Ports' RX queues fill from it; dropping it while a port
/// still uses it is prevented by the daemon's drop order (ports first). It may carry a
/// pool of large buffers beside it ([`Mempool::with_large`]) for frames no packet
/// buffer holds, so wherever the pool goes, so do they.
pub struct Mempool {
    raw: NonNull<dpdk_sys::rte_mempool>,
    name: String,
    capacity: u32,
    large: Option<Box<Mempool>>,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many lcores; the pointer
// is only used through thread-safe DPDK calls.
unsafe impl Send for Mempool {}
// SAFETY: as above: all access goes through DPDK's multi-thread-safe mempool API.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with the default data room (2048 B + headroom).
    pub fn new(label: &str, count: u32, socket: i32) -> Result<Self, DpdkError> {
        let room = dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
        Self::create(label, count, CACHE_SIZE.min(count / 2), room, socket)
    }

    /// Creates a pool of `count` 64 KiB mbufs, for [`Mempool::with_large`].
    pub fn large(label: &str, count: u32, socket: i32) -> Result<Self, DpdkError> {
        let cache = LARGE_CACHE_SIZE.min(count / 2);
        Self::create(label, count, cache, LARGE_DATA_ROOM, socket)
    }

    /// This pool with `large` beside it, owned with it.
    pub fn with_large(mut self, large: Mempool) -> Self {
        self.large = Some(Box::new(large));
        self
    }

    /// The large buffers beside this pool, if it has any.
    pub fn large_pool(&self) -> Option<&Mempool> {
        self.large.as_deref()
    }

    fn create(
        label: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self, DpdkError> {
        let seq = NEXT_POOL.fetch_add(1, Ordering::Relaxed);
        // Pool names are global in DPDK and limited to 26 bytes.
        let name: String = format!("{seq}-{label}").chars().take(24).collect();
        let c_name = CString::new(name.clone())
            .map_err(|_| DpdkError::invalid("rte_pktmbuf_pool_create", label, "NUL in name"))?;
        // SAFETY: c_name is a valid C string for the duration of the call; sizes are
        // plain integers DPDK validates.
        let raw = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(c_name.as_ptr(), count, cache, 0, data_room, socket)
        };
        let raw =
            NonNull::new(raw).ok_or_else(|| DpdkError::new("rte_pktmbuf_pool_create", &name, 0))?;
        Ok(Self {
            raw,
            name,
            capacity: count,
            large: None,
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

    /// The frame bytes one of its mbufs holds.
    pub fn data_room(&self) -> usize {
        // SAFETY: the pool is alive; the private data of a pktmbuf pool is its
        // rte_pktmbuf_pool_private, written once at creation.
        usize::from(unsafe { dpdk_sys::tenet_pktmbuf_data_room_size(self.raw.as_ptr()) })
            - dpdk_sys::RTE_PKTMBUF_HEADROOM as usize
    }

    /// Allocates one mbuf, reset and empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        Mbuf::alloc_from(self.raw.as_ptr())
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
