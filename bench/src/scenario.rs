//! The scenarios `tenet-bench run` measures: each one's input frames, the tenetd config
//! that forwards them from the input port to the output port, and the environment
//! that config reads.
//!
//! tenetd's configs are the files the shared harness runs (`configs/bench/replay-*.toml`:
//! pcap input, null sink). The PVP topology runs the same files with both ports turned
//! into vhost-user servers, so a scenario's tenants, endpoints and routes are written
//! once. `l2-many` and `gre-many` (1,000 tenants, 100,000 MACs) are written out here:
//! no one lists 100,000 endpoints by hand.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};

use crate::template::{self, Kind, Size, Spec};
use dataplane::packet::MacText;

/// Where the switch's input comes from and its output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Topology {
    /// One core: a pcap replayed forever into the switch, a null sink out of it.
    Replay,
    /// The generator on the other core, its two virtio-user ports on the switch's two
    /// vhost-user ports (physical → virtual → physical, as in the OVS PVP guides).
    Pvp,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::Replay => "replay",
            Topology::Pvp => "pvp",
        })
    }
}

/// A scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it exercises, for the report.
    pub about: &'static str,
    /// The tenetd config (`configs/bench/replay-<config>.toml`), or `None` when it is
    /// generated.
    config: Option<&'static str>,
    kind: Kind,
    /// Destination MACs of the input (0: the router MAC).
    macs: usize,
    tenants: usize,
    /// Flows of the input unless the command line says otherwise.
    pub default_flows: usize,
}

/// Every scenario, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "xconnect",
        about: "port to port, no lookup",
        config: Some("p2p"),
        kind: Kind::Plain,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "l2",
        about: "one tenant, known MACs (access to access)",
        config: Some("normal"),
        kind: Kind::Plain,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "l2-many",
        about: "1,000 tenants on a trunk, 100,000 MACs",
        config: None,
        kind: Kind::Tenants,
        macs: 100,
        tenants: 1000,
        default_flows: 100_000,
    },
    Scenario {
        name: "l2-million",
        about: "1,000 tenants on a trunk, 1,000,000 MACs (the input to 100,000 of them)",
        config: None,
        kind: Kind::Tenants,
        macs: 1000,
        tenants: 1000,
        default_flows: 100_000,
    },
    Scenario {
        name: "vlan",
        about: "802.1Q tag pushed (access to trunk)",
        config: Some("vlan-push"),
        kind: Kind::Plain,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "vlan-pop",
        about: "802.1Q tag popped (trunk to access)",
        config: Some("vlan-pop"),
        kind: Kind::Vlan,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "gre-encap",
        about: "GRE with the tenant's key toward another host",
        config: Some("gre-encap"),
        kind: Kind::Plain,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "gre-decap",
        about: "GRE from another host, key to tenant",
        config: Some("gre-decap"),
        kind: Kind::Gre,
        macs: 4,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "gre-many",
        about: "GRE of 1,000 tenants from one peer, keyed by tenant, 100,000 MACs",
        config: None,
        kind: Kind::GreTenants,
        macs: 100,
        tenants: 1000,
        default_flows: 100_000,
    },
    Scenario {
        name: "route",
        about: "tenant router: LPM, TTL, MAC rewrite",
        config: Some("route"),
        kind: Kind::Plain,
        macs: 0,
        tenants: 1,
        default_flows: 256,
    },
    Scenario {
        name: "snat",
        about: "tenant router with SNAT of established UDP flows",
        config: Some("snat"),
        kind: Kind::Plain,
        macs: 0,
        tenants: 1,
        default_flows: 256,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> anyhow::Result<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        format!("scenario `{name}`: not one of {}", names.join(", "))
    })
}

/// The router's routes in the `route` scenario (replay.sh's `ROUTES`), and the MAC its
/// routed frames leave with.
pub const ROUTES: [(&str, &str); 2] = [
    ("10.1.0.0/16", "02:00:00:00:0d:02"),
    ("10.1.128.0/17", "02:00:00:00:0d:03"),
];
/// Source MAC of routed frames (replay.sh's `ROUTER_MAC`).
pub const ROUTER_MAC: &str = "02:00:00:00:0d:01";

impl Scenario {
    /// The input frames for `size` and `flows`.
    pub fn spec(&self, size: &Size, flows: usize) -> Spec {
        Spec {
            tenants: self.tenants,
            ..Spec::new(self.kind, size.clone(), flows, self.macs)
        }
    }

    /// The generator template of this scenario's input, for `tenet-bench gen`.
    pub fn template_name(&self) -> &'static str {
        match (self.kind, self.macs) {
            (Kind::Plain, 0) => "udp",
            (Kind::Plain, _) => "l2",
            (Kind::Vlan, _) => "vlan",
            (Kind::Gre, _) => "gre",
            (Kind::Tcp, _) => "tcp",
            (Kind::Tenants, _) => "tenants",
            (Kind::GreTenants, _) => "gre-tenants",
        }
    }

    /// Whether frames of `size` grow past a standard MTU on the way (tunnel headers).
    pub fn needs_jumbo(&self, size: &Size) -> bool {
        let largest = match size {
            Size::Fixed(n) => *n,
            Size::Imix => 1518,
        };
        largest + 42 > 1518 && matches!(self.name, "gre-encap" | "gre-decap" | "gre-many")
            || largest > 1500 && self.name == "vlan"
    }

    /// The environment tenetd's config reads (besides the ports'), as replay.sh and
    /// `bench/tenetd-replay.sh` set it.
    pub fn environment(&self, core: usize, prefix: &str) -> Vec<(String, String)> {
        let macs = template::dst_macs(self.macs)
            .into_iter()
            .map(|m| MacText(m).to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let vars = [
            ("SWITCH_CORE", core.to_string()),
            ("DPDK_PREFIX", prefix.to_owned()),
            ("VLAN_ID", template::VLAN_ID.to_string()),
            ("GRE_KEY", template::GRE_KEY.to_string()),
            ("GRE_LOCAL_IP", template::GRE_LOCAL_IP.to_string()),
            ("GRE_REMOTE_IP", template::GRE_REMOTE_IP.to_string()),
            (
                "GRE_LOCAL_MAC",
                MacText(template::GRE_LOCAL_MAC).to_string(),
            ),
            (
                "GRE_REMOTE_MAC",
                MacText(template::GRE_REMOTE_MAC).to_string(),
            ),
            ("DST_MACS", macs),
            ("ROUTER_MAC", ROUTER_MAC.to_owned()),
            (
                "ROUTER_IN_MAC",
                MacText(template::ROUTER_IN_MAC).to_string(),
            ),
            ("NEXT_HOP_1", ROUTES[0].1.to_owned()),
            ("NEXT_HOP_2", ROUTES[1].1.to_owned()),
            (
                "ROUTES",
                ROUTES
                    .iter()
                    .map(|(p, m)| format!("{p}={m}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// tenetd's config for `topology` with workers on `cpus`: the input
    /// port reads `PCAP` (replay) or serves vhost-user at `VHU0` (pvp); the output port
    /// is a null sink or serves at `VHU1`; with more cores each port has a queue per
    /// core.
    pub fn tenet_config(
        &self,
        configs: &Path,
        topology: Topology,
        cpus: &[usize],
        size: &Size,
    ) -> anyhow::Result<String> {
        let text = match self.config {
            Some(file) => {
                let path = configs.join(format!("replay-{file}.toml"));
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading tenet's config {}", path.display()))?
            }
            None => many_tenants_config(self.tenants, self.macs, self.kind == Kind::GreTenants),
        };
        let mut text = rewrite_ports(
            &text,
            &PortRewrite {
                vhost: topology == Topology::Pvp,
                queues: cpus.len(),
                jumbo: topology == Topology::Pvp && self.needs_jumbo(size),
            },
        )?;
        if cpus != [1] {
            let list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
            text = text.replace(
                "workers = [${SWITCH_CORE}]",
                &format!("workers = [{}]", list.join(", ")),
            );
        }
        Ok(text)
    }
}

/// Packet buffers a switch needs to replay `flows` frames on `queues` queues: the
/// pcap PMD keeps a buffer for each frame on each queue (and refuses the port without
/// them), plus room for the packets in flight. testpmd's `--total-num-mbufs` too.
pub fn replay_pool(flows: usize, queues: usize) -> usize {
    flows * queues + 16384
}

/// `text` (a tenetd config) with a packet pool the replayed pcap fits in
/// ([`replay_pool`]): the buffers it lacks are added, and the hugepage memory they take
/// (2.5 KB each) on top of what the config reserved.
pub fn with_replay_pool(text: &str, flows: usize, queues: usize) -> String {
    let needed = replay_pool(flows, queues);
    let configured = text
        .lines()
        .find_map(|l| l.strip_prefix("mbufs = ")?.trim().parse::<usize>().ok())
        .unwrap_or(control::config::DataplaneConfig::default().mbufs as usize);
    if needed <= configured {
        return text.to_owned();
    }
    let extra_mb = (needed - configured) * 2560 / (1 << 20) + 1;
    let mut out = String::with_capacity(text.len() + 32);
    for line in text.lines() {
        if line.starts_with("mbufs = ") {
            continue;
        }
        match line
            .strip_prefix("memory_mb = ")
            .and_then(|mb| mb.trim().parse::<usize>().ok())
        {
            Some(mb) => {
                let _ = write!(out, "memory_mb = {}", mb + extra_mb);
            }
            None => out.push_str(line),
        }
        out.push('\n');
        if line == "[dataplane]" {
            let _ = writeln!(out, "mbufs = {needed}");
        }
    }
    out
}

/// The `l2-many` config: tenants 1..=n with VLANs 1..=n on a trunk input, each with
/// `macs` endpoint MACs behind a trunk output. `tunnelled` (`gre-many`): the input is
/// the uplink instead, where the tenants come in GRE from the remote host, keyed by
/// their ids (the dedicated design).
fn many_tenants_config(tenants: usize, macs: usize, tunnelled: bool) -> String {
    let mut t = String::from(if tunnelled {
        "# tenet-bench gre-many: tenants in GRE from one peer, their MACs behind a trunk.\n"
    } else {
        "# tenet-bench l2-many: tenants on a trunk, their MACs behind another trunk.\n"
    });
    t.push_str(
        "[dataplane]\nworkers = [${SWITCH_CORE}]\nmain_core = 0\n\
         file_prefix = \"${DPDK_PREFIX}\"\nmemory_mb = 768\n\
         # The replayed pcap keeps a buffer per frame: 100,000 of them.\n\
         mbufs = 131071\n\n\
         [switch]\nmax_macs_per_tenant = 4096\n",
    );
    if tunnelled {
        t.push_str(
            "design = \"dedicated\"\nhost = \"local\"\n\n\
             [[host]]\nname = \"local\"\nunderlay_ip = \"${GRE_LOCAL_IP}\"\n\n\
             [[host]]\nname = \"remote\"\nunderlay_ip = \"${GRE_REMOTE_IP}\"\n\
             mac = \"${GRE_REMOTE_MAC}\"\n",
        );
    }
    t.push('\n');
    for i in 0..tenants {
        let _ = writeln!(
            t,
            "[[tenant]]\nname = \"t{i}\"\nid = {}\nvlan = {}{}\n",
            template::tenant_id(i),
            template::tenant_vlan(i),
            if tunnelled {
                "\nhosts = [\"remote\"]"
            } else {
                ""
            }
        );
    }
    let names: Vec<String> = (0..tenants).map(|i| format!("\"t{i}\"")).collect();
    let list = names.join(", ");
    let input = if tunnelled {
        "role = \"uplink\"\nmac = \"${GRE_LOCAL_MAC}\"".to_owned()
    } else {
        format!("role = \"trunk\"\ntenants = [{list}]")
    };
    let _ = writeln!(
        t,
        "[[port]]\nname = \"replay\"\nbackend = \"pcap\"\nrx_file = \"${{PCAP}}\"\nrepeat = true\n\
         {input}\n\n\
         [[port]]\nname = \"sink\"\nbackend = \"null\"\nrole = \"trunk\"\ntenants = [{list}]\n",
    );
    for i in 0..tenants {
        let list: Vec<String> = (0..macs)
            .map(|m| format!("\"{}\"", MacText(template::tenant_mac(i, m))))
            .collect();
        let _ = writeln!(
            t,
            "[[endpoint]]\ntenant = \"t{i}\"\nport = \"sink\"\nmacs = [{}]\n",
            list.join(", ")
        );
    }
    t.push_str("[control]\npersist = false\n");
    t
}

/// How the runner changes the replay config's two ports (`replay`: pcap input,
/// `sink`: null output).
pub struct PortRewrite {
    /// Make both vhost-user servers at `${VHU0}` and `${VHU1}`.
    pub vhost: bool,
    /// Queues per port (one per dataplane core).
    pub queues: usize,
    /// A jumbo MTU, for tunnelled full-size frames.
    pub jumbo: bool,
}

/// Rewrites the `replay` and `sink` ports of a replay config as `how` says, keeping
/// their roles and everything else.
pub fn rewrite_ports(text: &str, how: &PortRewrite) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut port: Option<&str> = None;
    let mut found = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            port = None;
        }
        if let Some(name) = trimmed
            .strip_prefix("name = \"")
            .and_then(|r| r.strip_suffix('"'))
        {
            port = match name {
                "replay" => Some("${VHU0}"),
                "sink" => Some("${VHU1}"),
                _ => None,
            };
        }
        let Some(path) = port else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if trimmed.starts_with("backend") {
            found += 1;
            if how.vhost {
                let _ = writeln!(out, "backend = \"vhost-user\"\npath = \"{path}\"");
            } else {
                let _ = writeln!(out, "{line}");
            }
            if how.queues > 1 {
                let _ = writeln!(out, "queues = {}", how.queues);
            }
            if how.jumbo {
                out.push_str("mtu = 9000\n");
            }
            continue;
        }
        let pcap_or_null = ["rx_file", "tx_file", "repeat", "rx =", "packet_size"]
            .iter()
            .any(|k| trimmed.starts_with(k));
        if !(how.vhost && pcap_or_null) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if found != 2 {
        bail!("the config has no `replay` and `sink` ports to run the benchmark through");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bench")
    }

    #[test]
    fn a_big_replay_gets_a_pool_it_fits_in() {
        let l2 = SCENARIOS.iter().find(|s| s.name == "l2").unwrap();
        let text = l2
            .tenet_config(&configs(), Topology::Replay, &[1], &Size::Fixed(64))
            .unwrap();
        assert_eq!(with_replay_pool(&text, 256, 1), text);
        let big = with_replay_pool(&text, 100_000, 2);
        assert!(big.contains("[dataplane]\nmbufs = 216384\n"), "{big}");
        // 512 MB reserved, and 183,617 more buffers.
        assert!(big.contains("memory_mb = 961\n"), "{big}");
        assert_eq!(big.matches("mbufs = ").count(), 1);
        // l2-many names its own pool, big enough for its 100,000 frames on one queue.
        let many = SCENARIOS.iter().find(|s| s.name == "l2-many").unwrap();
        let text = many
            .tenet_config(&configs(), Topology::Replay, &[1], &Size::Fixed(64))
            .unwrap();
        assert_eq!(with_replay_pool(&text, 100_000, 1), text);
        assert!(with_replay_pool(&text, 100_000, 2).contains("mbufs = 216384\n"));
    }

    #[test]
    fn every_scenario_has_a_config_for_both_topologies() {
        for s in SCENARIOS {
            let replay = s
                .tenet_config(&configs(), Topology::Replay, &[1], &Size::Fixed(64))
                .unwrap();
            assert!(replay.contains("${PCAP}"), "{}", s.name);
            let pvp = s
                .tenet_config(&configs(), Topology::Pvp, &[1], &Size::Fixed(64))
                .unwrap();
            assert!(pvp.contains("path = \"${VHU0}\""), "{}", s.name);
            assert!(pvp.contains("path = \"${VHU1}\""), "{}", s.name);
            assert!(
                !pvp.contains("backend = \"pcap\"") && !pvp.contains("backend = \"null\""),
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn tenetd_accepts_every_config_of_both_topologies() {
        let pcap = std::env::temp_dir().join(format!("tenet-bench-{}.pcap", std::process::id()));
        control::pcap::write(&pcap, [[0u8; 60]]).unwrap();
        let pcap_path = pcap.to_string_lossy().into_owned();
        // l2-million is l2-many's config with ten times the MACs: the same generator,
        // too big to validate six times in a debug build.
        for s in SCENARIOS.iter().filter(|s| s.name != "l2-million") {
            let env = s.environment(1, "bench");
            let lookup = |var: &str| -> Option<String> {
                env.iter()
                    .find(|(k, _)| k == var)
                    .map(|(_, v)| v.clone())
                    .or_else(|| {
                        Some(match var {
                            "PCAP" => pcap_path.clone(),
                            "VHU0" => "/tmp/vhu0.sock".to_owned(),
                            "VHU1" => "/tmp/vhu1.sock".to_owned(),
                            _ => return None,
                        })
                    })
            };
            for topology in [Topology::Replay, Topology::Pvp] {
                // Two cores and full-size frames: a queue per core, a jumbo MTU.
                for (cpus, size) in [
                    (&[1][..], Size::Fixed(64)),
                    (&[1], Size::Fixed(1518)),
                    (&[1, 2], Size::Fixed(1518)),
                    (&[0, 1], Size::Fixed(64)),
                ] {
                    let cores = cpus.len();
                    let text = s.tenet_config(&configs(), topology, cpus, &size).unwrap();
                    let config = control::config::Config::parse(&text, lookup)
                        .unwrap_or_else(|e| panic!("{} {topology}: {e}", s.name));
                    if cores > 1 {
                        let workers = format!("workers = [{}, {}]", cpus[0], cpus[1]);
                        assert!(text.contains(&workers), "{} {topology}", s.name);
                        assert_eq!(text.matches("queues = 2").count(), 2, "{}", s.name);
                    }
                    // tenetd refuses workers on CPUs the machine lacks.
                    let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
                    if cpus.iter().all(|&c| c < machine) {
                        match config.validate() {
                            Ok(v) => {
                                assert_eq!(v.workers.len(), cores, "{} {topology}", s.name);
                                assert!(v.ports.iter().all(|p| usize::from(p.queues) == cores));
                            }
                            Err(e) => panic!("{} {topology} {cores} cores: {e}", s.name),
                        }
                    }
                }
            }
        }
        std::fs::remove_file(&pcap).unwrap();
    }

    #[test]
    fn unknown_scenarios_are_named() {
        let e = find("l3").unwrap_err().to_string();
        assert!(e.contains("`l3`") && e.contains("route"), "{e}");
    }

    #[test]
    fn the_many_tenants_config_lists_every_mac_once() {
        let text = many_tenants_config(3, 5, false);
        assert_eq!(text.matches("[[tenant]]").count(), 3);
        assert_eq!(text.matches("\"02:01:00:02:00:04\"").count(), 1);
    }
}
