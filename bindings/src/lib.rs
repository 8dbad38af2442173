//! Raw bindings to the system DPDK 22.11 and the shim that exports its `static inline`
//! per-burst calls (`tenet_*`). Nothing here is safe to call casually: the only caller is
//! `dataplane::dpdk`, which wraps each call with the invariants it needs.
#![allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code
)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Directory the EAL loads PMD plugins from, as found at build time (empty if unknown).
pub const PMD_DIR: &str = env!("DPDK_PMD_DIR");
