//! The kernel's own sockets, used where they serve better than a DPDK driver. Like
//! [`crate::dpdk`], this is one of the places `unsafe` may live: every block states the
//! invariant it relies on, and nothing unsafe leaks out of it.

mod packet_socket;
mod vnet;

pub use packet_socket::interface_index;
pub(crate) use packet_socket::{PacketPort, PacketRx, PacketTx};

/// Lets the calling thread's short sleeps end on time: the kernel otherwise lets a
/// sleep run up to 50 us late to batch wake-ups, which dwarfs a poll loop's 10 us
/// naps and the packets waiting on them. Best effort: false when refused.
pub fn precise_sleeps() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) == 0 }
}
