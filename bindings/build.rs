//! Finds the system DPDK with pkg-config, compiles the fast-path shim with DPDK's own
//! cflags and generates narrow bindings. Linking is dynamic: PMDs load as plugins from
//! DPDK's default plugin directory at EAL init.

use std::env;
use std::path::PathBuf;

const FUNCTIONS: &[&str] = &[
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_strerror",
    "rte_socket_id",
    "rte_thread_register",
    "rte_thread_unregister",
    "rte_get_tsc_hz",
    "rte_dev_probe",
    "rte_eal_hotplug_remove",
    "rte_pktmbuf_pool_create",
    "rte_pktmbuf_free_bulk",
    "__rte_pktmbuf_linearize",
    "rte_mempool_free",
    "rte_mempool_in_use_count",
    "rte_ring_create",
    "rte_ring_free",
    "rte_eth_dev_configure",
    "rte_eth_dev_info_get",
    "rte_eth_dev_adjust_nb_rx_tx_desc",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_set_mtu",
    "rte_eth_macaddr_get",
    "rte_eth_link_get_nowait",
    "rte_eth_promiscuous_enable",
    "rte_eth_stats_get",
    "rte_eth_stats_reset",
    "rte_eth_xstats_get",
    "rte_eth_xstats_get_names",
    "rte_eth_dev_get_mtu",
    "rte_eth_dev_rss_hash_update",
    "rte_eth_dev_rss_hash_conf_get",
    "rte_eth_dev_rss_reta_update",
    "rte_eth_dev_rss_reta_query",
    "rte_eth_dev_callback_register",
    "rte_eth_dev_callback_unregister",
    "rte_net_get_ptype",
    "rte_vhost_driver_enable_features",
    "rte_vhost_driver_disable_features",
    "rte_vhost_driver_get_features",
    "rte_vhost_get_negotiated_features",
    "rte_eth_bond_mode_get",
    "rte_eth_bond_primary_get",
    "rte_eth_bond_primary_set",
    "tenet_.*",
];

const TYPES: &[&str] = &[
    "rte_mbuf",
    "rte_mempool",
    "rte_ring",
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_eth_stats",
    "rte_eth_xstat",
    "rte_eth_xstat_name",
    "rte_eth_link",
    "rte_eth_rss_conf",
    "rte_eth_rss_reta_entry64",
    "rte_ether_addr",
    "rte_eth_event_type",
    "rte_net_hdr_lens",
];

const VARS: &[&str] = &[
    "RTE_MAX_ETHPORTS",
    "RTE_MAX_LCORE",
    "RTE_ETH_NAME_MAX_LEN",
    "RTE_ETH_XSTATS_NAME_SIZE",
    "RTE_MBUF_DEFAULT_BUF_SIZE",
    "RTE_PKTMBUF_HEADROOM",
    "RTE_RING_NAMESIZE",
    "RING_F_SP_ENQ",
    "RING_F_SC_DEQ",
    "SOCKET_ID_ANY",
    "LCORE_ID_ANY",
    "RTE_ETH_LINK_UP",
    "RTE_ETH_RETA_GROUP_SIZE",
    "RTE_PTYPE_L2_MASK",
    "RTE_PTYPE_L3_MASK",
    "RTE_PTYPE_L4_MASK",
    "RTE_PTYPE_L4_TCP",
    "RTE_PTYPE_L4_UDP",
    "VIRTIO_NET_F_.*",
    "BONDING_MODE_ACTIVE_BACKUP",
    "TENET_.*",
];

/// Packed structs that hold aligned ones (Rust E0588): opaque, tenet parses headers itself.
const OPAQUE: &[&str] = &[
    "rte_arp_hdr",
    "rte_arp_ipv4",
    "rte_l2tpv2_combined_msg_hdr",
    "rte_gtp_psc_generic_hdr",
    "rte_mempool",
    "rte_ring",
];

fn main() {
    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("DPDK 22.11 not found by pkg-config ({e}); install it: apt-get install -y dpdk dpdk-dev libdpdk-dev pkg-config")
        });

    // DPDK's cflags carry -include rte_config.h and its -march; use them as given.
    let mut build = cc::Build::new();
    build.file("shim/shim.c").opt_level(3).warnings(false);
    for path in &dpdk.include_paths {
        build.include(path);
    }
    let mut clang_args: Vec<String> = dpdk
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    for flag in pkg_cflags() {
        if !flag.starts_with("-I") {
            build.flag(&flag);
        }
        clang_args.push(flag);
    }
    build.compile("tenet_dpdk_shim");

    let mut builder = bindgen::Builder::default()
        .header("shim/wrapper.h")
        .clang_args(&clang_args)
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    for o in OPAQUE {
        builder = builder.opaque_type(o);
    }
    let bindings = builder
        .generate()
        .expect("bindgen failed on DPDK headers (is libclang-dev installed?)");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings");
    // Where the EAL loads PMD plugins from (libdir/dpdk/pmds-<ABI>), so tenetd can say
    // which driver package is missing instead of failing inside a probe.
    let libdir = pkg_config::get_variable("libdpdk", "libdir").unwrap_or_default();
    let pmd_dir = std::fs::read_dir(PathBuf::from(&libdir).join("dpdk"))
        .ok()
        .and_then(|entries| {
            entries.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pmds-"))
            })
        })
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=DPDK_PMD_DIR={pmd_dir}");
    // The bond's own API (tenet moves a bond's traffic off a member it sees down) lives
    // in the bond PMD, which pkg-config's list leaves out. Linked, it is loaded at
    // start; the EAL's later load of the same file as a plugin finds it loaded.
    println!("cargo:rustc-link-lib=dylib=rte_net_bond");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-changed=shim/wrapper.h");
}

/// DPDK's compile flags as pkg-config reports them (`--cflags`), without duplicates.
fn pkg_cflags() -> Vec<String> {
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("pkg-config --cflags libdpdk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags: Vec<String> = Vec::new();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-include" {
            if let Some(file) = words.next() {
                flags.push(format!("-include{file}"));
            }
        } else if !flags.iter().any(|f| f == word) {
            flags.push(word.to_owned());
        }
    }
    flags
}
