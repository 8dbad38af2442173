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
