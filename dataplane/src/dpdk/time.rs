//! The time-stamp counter, for cycles-per-packet accounting once per burst.

/// Current TSC value.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: RDTSC has no memory effects and exists on every x86_64 CPU DPDK supports.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second as measured by the EAL. Only meaningful after EAL init.
pub fn tsc_hz() -> u64 {
    // SAFETY: a plain getter of a value the EAL computed at init.
    unsafe { dpdk_sys::rte_get_tsc_hz() }
}

/// Asks the CPU to bring the cache line holding `value` into L1, without waiting
/// (DPDK's `rte_prefetch0`): a burst's next lookup is started while this one runs.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    prefetch_addr((value as *const T).cast::<u8>());
}

/// Like [`prefetch`], for any address: a prefetch never faults, so it may name memory
/// no reference covers (the next line of a descriptor).
#[inline(always)]
pub(crate) fn prefetch_addr(address: *const u8) {
    // SAFETY: PREFETCHT0 is a hint with no architectural effect, valid on any address
    // (it never faults), and SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
            address.cast::<i8>(),
        )
    }
}
