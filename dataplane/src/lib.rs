//! tenet's dataplane: everything a packet touches.
//!
//! - [`dpdk`]: the only safe wrapper over `dpdk-sys` (EAL, mempools, ports, mbufs, rings).
//! - [`kernel`]: the kernel's packet sockets that serve container veths.
//! - [`counters`]: drop reasons as data and per-core counters.
//! - [`packet`]: zero-copy header views and the frame trait.
//! - [`table`]: the compiled flow tables and their RCU-style publication.
//! - [`pipeline`]: what happens to a burst between RX and TX.
//! - [`port_set`]: sets of port ids for the per-burst bookkeeping.
//! - [`worker`]: the per-core poll loop that drives ports through a pipeline.

pub mod counters;
#[allow(unsafe_code)]
pub mod dpdk;
#[allow(unsafe_code)]
pub mod kernel;
pub mod packet;
pub mod pipeline;
pub mod port_set;
pub mod table;
pub mod worker;

/// Port ids index fixed per-worker tables. DPDK devices take the ids below
/// [`MAX_DPDK_PORTS`]; the rest go to kernel interfaces tenet serves itself (container
/// veths), so a host is not limited to the 32 ports Debian's DPDK is built with.
pub const MAX_PORTS: usize = 256;

/// Ports DPDK itself can hold (its build's `RTE_MAX_ETHPORTS`).
pub const MAX_DPDK_PORTS: usize = dpdk_sys::RTE_MAX_ETHPORTS as usize;

/// Workers a switch may run: SNAT hands frames between any two of them, tracked in a
/// 64-bit mask.
pub const MAX_WORKERS: usize = 64;
