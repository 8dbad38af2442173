//! The only safe layer over `dpdk-sys`. Everything outside this module (and `bindings/`)
//! is safe Rust; every `unsafe` block here states the invariant it relies on.
//!
//! Ownership model: [`Eal`] is initialised once per process; [`Mempool`]s and [`Port`]s
//! live until dropped; each queue of a port is a value ([`RxQueue`], [`TxQueue`]) that
//! exactly one worker owns, so "one thread per queue" is enforced by moves, not by
//! convention. [`Mbuf`] owns its packet and frees it on drop.

mod backend;
mod eal;
mod error;
mod log;
mod mbuf;
mod mempool;
mod port;
mod ring;
mod rss;
mod time;
#[doc(hidden)]
pub mod virtio_guest;

pub use backend::{Backend, BondMode, DeviceNamer};
pub use eal::{prepare_process, register_thread, unregister_thread, Eal, EalOptions};
pub use error::DpdkError;
pub use mbuf::{Drain, Mbuf, MbufBatch, BURST};
pub use mempool::Mempool;
pub use port::{port_name, Cut, LinkStatus, Port, PortConfig, PortStats, RxQueue, TxQueue};
pub use ring::{MbufRing, RingConsumer, RingProducer};
pub use rss::RssState;
pub(crate) use time::prefetch_addr;
pub use time::{prefetch, tsc, tsc_hz};

/// Directory the EAL loads PMD plugins from (empty if unknown at build time).
pub const PMD_DIR: &str = dpdk_sys::PMD_DIR;
