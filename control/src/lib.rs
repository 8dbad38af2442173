//! tenet's control plane: configuration, the port manager that turns it into attached
//! DPDK ports and worker plans, and the `tenetd` daemon around them.

// The API's OpenAPI document is one `json!` literal, deeper than the default limit.
#![recursion_limit = "256"]

pub mod addresses;
pub mod api;
pub mod capture;
pub mod client;
pub mod cni;
pub mod compile;
pub mod config;
pub mod containers;
pub mod controller;
pub mod daemon;
pub mod docker;
pub mod live;
pub mod logging;
pub mod manpages;
pub mod model;
pub mod netlink;
pub mod notify;
pub mod packet_trace;
pub mod pcap;
pub mod pcapng;
pub mod placement;
pub mod preflight;
pub mod slots;
pub mod store;
pub mod wiring;
