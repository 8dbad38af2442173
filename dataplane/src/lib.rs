//! tenet's dataplane: everything a packet touches.
//!
//! - [`dpdk`]: the only safe wrapper over `dpdk-sys` (EAL, mempools, ports, mbufs, rings).
//! - [`counters`]: drop reasons as data and per-core counters.
//! - [`packet`]: zero-copy header views and the frame trait.
//! - [`table`]: the compiled flow tables and their RCU-style publication.
//! - [`pipeline`]: what happens to a burst between RX and TX.
//! - [`worker`]: the per-core poll loop that drives ports through a pipeline.

pub mod counters;
pub mod dpdk;
pub mod packet;
pub mod pipeline;
pub mod table;
pub mod worker;

/// Port ids index fixed per-worker tables; DPDK is built with this many at most.
pub const MAX_PORTS: usize = dpdk_sys::RTE_MAX_ETHPORTS as usize;

/// Workers a switch may run: SNAT hands frames between any two of them, tracked in a
/// 64-bit mask.
pub const MAX_WORKERS: usize = 64;
