//! `tenet-bench`: tenet measured the way testpmd and the OVS PVP guides measure a
//! switch, beside dpdk-testpmd and Open vSwitch with DPDK in the same run.
//!
//! - [`template`], [`probe`], [`stats`]: the frames of every scenario, the probe each
//!   carries, what a receiver learns from probes (pcap files through `control::pcap`);
//! - [`generator`]: the DPDK generator/reflector (`tenet-bench gen`);
//! - [`runner`]: scenarios ([`scenario`]) on tenet and its peers ([`peers`], [`ovs`])
//!   round by round, measured through DPDK telemetry ([`telemetry`]) or the generator,
//!   written up by [`report`] (`tenet-bench run`);
//! - [`churn`]: tenants and endpoints changed through the API while tenet forwards
//!   (`tenet-bench run --churn RATE`);
//! - [`control`]: the control plane's latency at 0 … 10,000 tenants beside OVS
//!   (`tenet-bench control`);
//! - [`docklet`]: the Docklet paper's container experiments with tenet-cni
//!   (`tenet-bench containers`);
//! - [`cluster`]: a large cluster's keys, views and tunnels from the real code, and
//!   convergence of agents on a real etcd (`tenet-bench cluster`);
//! - [`process`], [`lab`], [`machine`]: the processes it starts, the namespaces, veths,
//!   temporary directories and etcd it and the end-to-end tests build on, what it installs.
//!
//! Criterion micro-benchmarks of each pipeline path live in `benches/`.

pub mod churn;
pub mod cluster;
pub mod control;
pub mod docklet;
pub mod generator;
pub mod lab;
pub mod machine;
pub mod ovs;
pub mod peers;
pub mod probe;
pub mod process;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod telemetry;
pub mod template;
