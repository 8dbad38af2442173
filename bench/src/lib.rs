//! tenet's benchmarks live in `benches/` (criterion micro-benchmarks of each pipeline
//! path on byte buffers: `cargo bench -p bench`) and in `run-peers.sh` (the switch
//! beside dpdk-testpmd and Open vSwitch with DPDK, through the shared harnesses).
