//! The kernel's own sockets, used where they serve better than a DPDK driver. Like
//! [`crate::dpdk`], this is one of the places `unsafe` may live: every block states the
//! invariant it relies on, and nothing unsafe leaks out of it.

mod packet_socket;
mod vnet;

pub use packet_socket::interface_index;
pub(crate) use packet_socket::{PacketPort, PacketRx, PacketTx};
