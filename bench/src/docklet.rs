//! `tenet-bench containers`: the Docklet paper's Table 2 on this machine, on the rig's
//! hosts (network namespaces each running tenetd, plugged into one Linux bridge with
//! the outside behind it), containers attached by tenet-cni, traffic iperf3 TCP:
//!
//! - internal: two containers of a tenant on different hosts in each design, two on
//!   the same host, beside two namespaces over a plain veth and over a Linux bridge
//!   (Docker's default) with and without its offloads;
//! - designs: N tenants, two containers each on different hosts spread over every
//!   host, all pairs at once, bandwidth per tenant (in the shared design a pair whose
//!   ends are both off the egress host crosses it: the star);
//! - egress: N tenants with a container each downloading from a server outside through
//!   its gateway's SNAT, all at once, with the gateways spread over the hosts
//!   (distributed), then moved through tenetd's API onto the egress host (central);
//!   beside the host downloading from the same server over its own kernel link.

mod rig;

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::lab::{veth_between, veth_to_bridge, Netns};
use rig::{reach, Container, Design, Gateway, Rig, TenantPlan, EGRESS_HOST, SERVER};

pub use rig::TENETD_MEMORY_MB;

/// Most hosts a run takes: each host's tenetd takes [`TENETD_MEMORY_MB`] of the 2 GiB
/// of hugepages the run reserves.
pub const MAX_HOSTS: usize = 8;

/// What to run.
pub struct Options {
    /// Tenant counts for the designs and egress experiments.
    pub counts: Vec<usize>,
    /// Hosts (2 to [`MAX_HOSTS`]).
    pub hosts: usize,
    /// Seconds each iperf3 runs.
    pub seconds: u32,
    /// Results directory.
    pub out: PathBuf,
    /// tenetd.
    pub tenetd: PathBuf,
    /// tenet-cni.
    pub cni: PathBuf,
    /// Where host-local is.
    pub cni_path: String,
    /// The containers' port backend as tenet-cni's config names it (`af-xdp` falls
    /// back to `af-packet` where AF_XDP or DPDK's port table gives out).
    pub backend: String,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    pub what: String,
    /// Gbit/s per pair (the average over pairs running at once).
    pub gbps: f64,
    /// Pairs running at once.
    pub pairs: usize,
}

/// Tenants' bandwidths measured at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spread {
    /// Average Gbit/s per tenant.
    pub gbps_per_tenant: f64,
    /// The slowest tenant's.
    pub gbps_min: f64,
    /// All tenants' together.
    pub gbps_total: f64,
}

impl Spread {
    fn of(rates: &[f64]) -> Self {
        let total: f64 = rates.iter().sum();
        Self {
            gbps_per_tenant: total / rates.len().max(1) as f64,
            gbps_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            gbps_total: total,
        }
    }
}

/// A design's internal bandwidth at one tenant count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DesignPoint {
    /// `shared` or `dedicated`.
    pub design: String,
    /// Tenants (pairs running at once).
    pub tenants: usize,
    /// Their bandwidths.
    #[serde(flatten)]
    pub rates: Spread,
}

/// Egress bandwidth under one gateway placement at one tenant count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayPoint {
    /// `central` (every gateway on the egress host) or `distributed` (round-robin
    /// over the hosts).
    pub placement: String,
    /// Tenants (downloads running at once).
    pub tenants: usize,
    /// Their bandwidths.
    #[serde(flatten)]
    pub rates: Spread,
}

/// Everything measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Hosts in the rig.
    pub hosts: usize,
    /// Internal bandwidth: tenet across hosts and on one, veth, Linux bridge.
    pub internal: Vec<Figure>,
    /// Both designs at each tenant count.
    pub designs: Vec<DesignPoint>,
    /// Egress: a container through its gateway, the host itself.
    pub egress: Vec<Figure>,
    /// Egress under central and distributed gateways at each tenant count.
    pub gateways: Vec<GatewayPoint>,
}

/// Runs iperf3 servers in each `(server, address)` and clients from the matching
/// `client` at once for `seconds`; returns each pair's received Gbit/s.
fn iperf_pairs(
    pairs: &[(&Netns, String, &Netns)],
    seconds: u32,
    reverse: bool,
) -> anyhow::Result<Vec<f64>> {
    /// Servers and clients still running are killed, also when a pair fails.
    struct Running(Vec<Child>);
    impl Drop for Running {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut servers = Running(Vec::new());
    for (i, (server, address, _)) in pairs.iter().enumerate() {
        servers.0.push(
            server
                .command("iperf3")
                .args(["-s", "-1", "-B", address, "-p", &(5201 + i).to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut clients = Vec::new();
    for (i, (_, address, client)) in pairs.iter().enumerate() {
        let mut c = client.command("iperf3");
        c.args([
            "-c",
            address,
            "-p",
            &(5201 + i).to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        if reverse {
            c.arg("-R");
        }
        clients.push(c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?);
    }
    let outputs: Vec<_> = clients.into_iter().map(Child::wait_with_output).collect();
    let mut rates = Vec::new();
    for out in outputs {
        let v: Value = serde_json::from_slice(&out?.stdout).context("iperf3 JSON")?;
        let bits = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .with_context(|| format!("iperf3 failed: {}", v["error"]))?;
        rates.push(bits / 1e9);
    }
    drop(servers);
    Ok(rates)
}

/// Tenant `t`'s two containers: on hosts 2t+1 and 2t+2 (modulo the hosts), so two
/// tenants use four hosts and the shared design's first pair crosses the egress host
/// without ending there.
fn pair_hosts(t: usize, hosts: usize) -> [usize; 2] {
    [(2 * t + 1) % hosts, (2 * t + 2) % hosts]
}

/// Tenant `t`'s gateway host when gateways are distributed: round-robin.
fn spread_gateway(t: usize, hosts: usize) -> usize {
    t % hosts
}

/// Tenant `t`'s downloading container: the host after its distributed gateway's,
/// skipping the egress host, so that under either placement the container reaches its
/// gateway through a tunnel (with two hosts, a tenant whose gateway is host 1 can only
/// have its container on the egress host).
fn egress_container(t: usize, hosts: usize) -> usize {
    let gateway = spread_gateway(t, hosts);
    (1..hosts)
        .map(|k| (gateway + k) % hosts)
        .find(|&h| h != EGRESS_HOST)
        .unwrap_or(EGRESS_HOST)
}

/// `hosts` each once, in ascending order.
fn distinct(hosts: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut all: Vec<usize> = hosts.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// The tenants of the pairs experiment: gateways central in the shared design, spread
/// in the dedicated one.
fn pairs_plan(design: Design, tenants: usize, hosts: usize) -> Vec<TenantPlan> {
    (0..tenants)
        .map(|t| {
            let gateway = match design {
                Design::Shared => Gateway::Central,
                Design::Dedicated => Gateway::On(spread_gateway(t, hosts)),
            };
            TenantPlan {
                hosts: distinct(pair_hosts(t, hosts).into_iter().chain([gateway.host()])),
                gateway,
            }
        })
        .collect()
}

/// The tenants of the egress experiment: gateways spread, each tenant also on the
/// egress host, where its gateway moves.
fn egress_plan(tenants: usize, hosts: usize) -> Vec<TenantPlan> {
    (0..tenants)
        .map(|t| TenantPlan {
            hosts: distinct([
                egress_container(t, hosts),
                spread_gateway(t, hosts),
                EGRESS_HOST,
            ]),
            gateway: Gateway::On(spread_gateway(t, hosts)),
        })
        .collect()
}

/// Where the same-host pair is: where the pairs' first container is, off the egress
/// host.
const SAME_HOST: usize = 1;

/// The one tenant of the same-host pair, its gateway beside it.
fn same_host_plan() -> Vec<TenantPlan> {
    vec![TenantPlan {
        hosts: vec![SAME_HOST],
        gateway: Gateway::On(SAME_HOST),
    }]
}

/// `tenants` tenants' pairs across hosts, all at once: per-tenant Gbit/s.
fn tenant_pairs(design: Design, tenants: usize, options: &Options) -> anyhow::Result<Vec<f64>> {
    let hosts = options.hosts;
    let plan = pairs_plan(design, tenants, hosts);
    let tag = format!("{}-{tenants}", design.name());
    let rig = Rig::new(design, hosts, &plan, &tag, options)?;
    let mut made: Vec<(Container, Container)> = Vec::new();
    for t in 0..tenants {
        let [a, b] = pair_hosts(t, hosts);
        made.push((rig.attach(a, t, options)?, rig.attach(b, t, options)?));
    }
    for (a, b) in &made {
        reach(&a.ns, &b.address)?;
    }
    let pairs: Vec<(&Netns, String, &Netns)> = made
        .iter()
        .map(|(a, b)| (&b.ns, b.address.clone(), &a.ns))
        .collect();
    iperf_pairs(&pairs, options.seconds, false)
}

/// The first table's name for one tenant's pair across hosts in `design`.
fn pair_label(design: Design, hosts: usize) -> String {
    match design {
        Design::Dedicated => {
            "tenet, two containers of a tenant on different hosts, dedicated (GRE key)".to_owned()
        }
        Design::Shared => {
            let [a, b] = pair_hosts(0, hosts);
            let through = if a != EGRESS_HOST && b != EGRESS_HOST {
                ", through the egress host"
            } else {
                ""
            };
            format!("tenet, the same, shared (VLAN in a GRE star{through})")
        }
    }
}

/// Two containers of one tenant on one host: tenet's ports alone, no tunnel between.
fn same_host_pair(options: &Options) -> anyhow::Result<f64> {
    let rig = Rig::new(
        Design::Dedicated,
        options.hosts,
        &same_host_plan(),
        "same-host",
        options,
    )?;
    let client = rig.attach(SAME_HOST, 0, options)?;
    let server = rig.attach(SAME_HOST, 0, options)?;
    reach(&client.ns, &server.address)?;
    let rates = iperf_pairs(
        &[(&server.ns, server.address.clone(), &client.ns)],
        options.seconds,
        false,
    )?;
    Ok(rates[0])
}

/// What the egress experiment measured at one tenant count.
struct Downloads {
    distributed: Vec<f64>,
    central: Vec<f64>,
    /// The egress host's own download, when asked for.
    own: Option<f64>,
}

/// `tenants` tenants (dedicated design) with a container each downloading from the
/// server outside through its gateway's SNAT, all at once: first with the gateways
/// spread over the hosts, then with every gateway moved onto the egress host through
/// tenetd's API. With `own`, the egress host's own download over its kernel link too.
fn gateway_egress(tenants: usize, own: bool, options: &Options) -> anyhow::Result<Downloads> {
    let hosts = options.hosts;
    let rig = Rig::new(
        Design::Dedicated,
        hosts,
        &egress_plan(tenants, hosts),
        &format!("egress-{tenants}"),
        options,
    )?;
    let containers = (0..tenants)
        .map(|t| rig.attach(egress_container(t, hosts), t, options))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let download = || -> anyhow::Result<Vec<f64>> {
        for c in &containers {
            reach(&c.ns, SERVER)?;
        }
        let pairs: Vec<(&Netns, String, &Netns)> = containers
            .iter()
            .map(|c| (&rig.outside, SERVER.to_owned(), &c.ns))
            .collect();
        iperf_pairs(&pairs, options.seconds, true)
    };
    let distributed = download()?;
    // Where round-robin already put every gateway on the egress host (one tenant), the
    // central placement is the same one: measured once.
    let central = if (0..tenants).all(|t| spread_gateway(t, hosts) == EGRESS_HOST) {
        distributed.clone()
    } else {
        for t in 0..tenants {
            rig.move_gateway(t, Gateway::Central)?;
        }
        download()?
    };
    let own = if own {
        let host = &rig.hosts[EGRESS_HOST].ns;
        Some(
            iperf_pairs(
                &[(&rig.outside, SERVER.to_owned(), host)],
                options.seconds,
                true,
            )?[0],
        )
    } else {
        None
    };
    Ok(Downloads {
        distributed,
        central,
        own,
    })
}

/// Two namespaces over a plain veth and over a Linux bridge, with and without its
/// offloads.
fn kernel_baselines(options: &Options) -> anyhow::Result<Vec<Figure>> {
    let (c1, c2) = (Netns::new("k1")?, Netns::new("k2")?);
    veth_between(&c1, "eth0", &c2, "eth0")?;
    c1.ip(&["addr", "add", "10.250.0.1/24", "dev", "eth0"])?;
    c2.ip(&["addr", "add", "10.250.0.2/24", "dev", "eth0"])?;
    let plain = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    drop((c1, c2));
    let (bridge, c1, c2) = (Netns::new("kb")?, Netns::new("k3")?, Netns::new("k4")?);
    bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
    bridge.ip(&["link", "set", "br0", "up"])?;
    veth_to_bridge(&c1, "eth0", &bridge, "p1", "br0")?;
    veth_to_bridge(&c2, "eth0", &bridge, "p2", "br0")?;
    c1.ip(&["addr", "add", "10.250.0.1/24", "dev", "eth0"])?;
    c2.ip(&["addr", "add", "10.250.0.2/24", "dev", "eth0"])?;
    let bridged = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    // The same bridge frame by frame, as a switch outside the kernel sees the traffic:
    // no 64 KiB segments handed through (TSO/GSO off), the containers' MTU.
    for c in [&c1, &c2] {
        c.exec(
            "ethtool",
            &[
                "-K", "eth0", "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ],
        )?;
        c.ip(&["link", "set", "eth0", "mtu", "1400"])?;
    }
    let framed = iperf_pairs(
        &[(&c2, "10.250.0.2".to_owned(), &c1)],
        options.seconds,
        false,
    )?;
    Ok(vec![
        Figure {
            what: "two namespaces over a plain veth (kernel, TSO/GSO)".into(),
            gbps: plain[0],
            pairs: 1,
        },
        Figure {
            what: "over a Linux bridge, Docker's default (kernel, TSO/GSO)".into(),
            gbps: bridged[0],
            pairs: 1,
        },
        Figure {
            what: "over that bridge frame by frame (offloads off, MTU 1400)".into(),
            gbps: framed[0],
            pairs: 1,
        },
    ])
}

/// Runs every experiment and writes `containers.json` and `containers.txt`.
pub fn run(options: &Options, command: String) -> anyhow::Result<Results> {
    std::fs::create_dir_all(options.out.join("logs"))?;
    let mut results = Results {
        command,
        hosts: options.hosts,
        ..Results::default()
    };
    // One tenant alone is also the first table's figure for its design: measured once.
    let sizes = distinct(options.counts.iter().copied().chain([1]));
    let mut designs = Vec::new();
    for &n in &sizes {
        for design in [Design::Dedicated, Design::Shared] {
            eprintln!("tenet-bench containers: {n} tenants, {}", design.name());
            let rates = tenant_pairs(design, n, options)?;
            if n == 1 {
                results.internal.push(Figure {
                    what: pair_label(design, options.hosts),
                    gbps: rates[0],
                    pairs: 1,
                });
            }
            designs.push(DesignPoint {
                design: design.name().to_owned(),
                tenants: n,
                rates: Spread::of(&rates),
            });
        }
    }
    eprintln!("tenet-bench containers: two containers on one host");
    results.internal.push(Figure {
        what: "tenet, two containers of a tenant on the same host".into(),
        gbps: same_host_pair(options)?,
        pairs: 1,
    });
    eprintln!("tenet-bench containers: kernel baselines");
    results.internal.extend(kernel_baselines(options)?);
    for &n in &sizes {
        eprintln!("tenet-bench containers: egress, {n} tenants, distributed and central gateways");
        let d = gateway_egress(n, n == 1, options)?;
        if let Some(own) = d.own {
            results.egress.push(Figure {
                what:
                    "a container downloading through its gateway's SNAT (gateway on another host)"
                        .into(),
                gbps: d.distributed[0],
                pairs: 1,
            });
            results.egress.push(Figure {
                what: "the host downloading from the same server over its own kernel link".into(),
                gbps: own,
                pairs: 1,
            });
        }
        if options.counts.contains(&n) {
            for (placement, rates) in [("central", &d.central), ("distributed", &d.distributed)] {
                results.gateways.push(GatewayPoint {
                    placement: placement.to_owned(),
                    tenants: n,
                    rates: Spread::of(rates),
                });
            }
        }
    }
    results.designs = designs
        .into_iter()
        .filter(|d| options.counts.contains(&d.tenants))
        .collect();
    std::fs::write(
        options.out.join("containers.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(options.out.join("containers.txt"), table(&results))?;
    Ok(results)
}

/// `Gbit/s per tenant (slowest; all tenants)`.
fn spread_cell(s: Option<&Spread>) -> String {
    s.map_or("-".to_owned(), |s| {
        format!(
            "{:.2} ({:.2}; {:.2})",
            s.gbps_per_tenant, s.gbps_min, s.gbps_total
        )
    })
}

/// The results as markdown.
pub fn table(r: &Results) -> String {
    let mut t = format!(
        "# {}\n\n{} hosts (network namespaces each running tenetd) on a Linux bridge, \
         containers (MTU 1400) attached by tenet-cni, iperf3 TCP.\n\n\
         | setup | Gbit/s |\n|---|---|\n",
        r.command, r.hosts
    );
    for f in r.internal.iter().chain(&r.egress) {
        t.push_str(&format!("| {} | {:.2} |\n", f.what, f.gbps));
    }
    t.push_str(
        "\nInternal: every tenant's two containers on different hosts, all pairs at once; \
         Gbit/s per tenant (slowest; all tenants):\n\n\
         | tenants | shared (VLAN, GRE star) | dedicated (GRE key) |\n|---|---|---|\n",
    );
    let mut counts: Vec<usize> = r.designs.iter().map(|d| d.tenants).collect();
    counts.dedup();
    for n in counts {
        let cell = |design: &str| {
            spread_cell(
                r.designs
                    .iter()
                    .find(|d| d.tenants == n && d.design == design)
                    .map(|d| &d.rates),
            )
        };
        t.push_str(&format!(
            "| {n} | {} | {} |\n",
            cell("shared"),
            cell("dedicated")
        ));
    }
    t.push_str(&format!(
        "\nEgress: every tenant's container downloading from the server outside at once, \
         through its gateway's SNAT (dedicated design); Gbit/s per tenant (slowest; all \
         tenants):\n\n\
         | tenants | central (every gateway on h{EGRESS_HOST}) | distributed (round-robin over {} hosts) | distributed / central, all tenants |\n\
         |---|---|---|---|\n",
        r.hosts
    ));
    let mut counts: Vec<usize> = r.gateways.iter().map(|g| g.tenants).collect();
    counts.dedup();
    for n in counts {
        let point = |placement: &str| {
            r.gateways
                .iter()
                .find(|g| g.tenants == n && g.placement == placement)
                .map(|g| &g.rates)
        };
        let (central, distributed) = (point("central"), point("distributed"));
        let ratio = match (central, distributed) {
            (Some(c), Some(d)) if c.gbps_total > 0.0 => {
                format!("{:.2}", d.gbps_total / c.gbps_total)
            }
            _ => "-".to_owned(),
        };
        t.push_str(&format!(
            "| {n} | {} | {} | {ratio} |\n",
            spread_cell(central),
            spread_cell(distributed)
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_span_two_hosts_and_two_tenants_use_four() {
        for hosts in 2..=MAX_HOSTS {
            for t in 0..3 * hosts {
                let [a, b] = pair_hosts(t, hosts);
                assert!(a != b && a < hosts && b < hosts, "{hosts} hosts, t{t}");
            }
        }
        assert_eq!(
            distinct((0..2).flat_map(|t| pair_hosts(t, 4))),
            [0, 1, 2, 3]
        );
        assert!(!pair_hosts(0, 4).contains(&EGRESS_HOST));
    }

    #[test]
    fn downloads_reach_their_gateway_through_a_tunnel_under_either_placement() {
        for hosts in 3..=MAX_HOSTS {
            let gateways = distinct((0..hosts).map(|t| spread_gateway(t, hosts)));
            assert_eq!(gateways.len(), hosts, "distributed: every host has one");
            for t in 0..3 * hosts {
                let c = egress_container(t, hosts);
                assert!(c != EGRESS_HOST && c != spread_gateway(t, hosts) && c < hosts);
            }
        }
        // Two hosts leave no choice for the tenant whose gateway is on the other one.
        assert_eq!(egress_container(0, 2), 1);
        assert_eq!(egress_container(1, 2), EGRESS_HOST);
    }

    #[test]
    fn every_hosts_config_of_every_experiment_validates() {
        let dir = std::env::temp_dir();
        for hosts in [2, 4, MAX_HOSTS] {
            let plans = [
                (Design::Shared, pairs_plan(Design::Shared, 5, hosts)),
                (Design::Dedicated, pairs_plan(Design::Dedicated, 5, hosts)),
                (Design::Dedicated, egress_plan(5, hosts)),
                (Design::Dedicated, same_host_plan()),
            ];
            for (design, plan) in &plans {
                for me in 0..hosts {
                    let text = rig::tenetd_config(*design, me, hosts, plan, &dir);
                    let parsed =
                        control::config::Config::parse(&text, |_| None).and_then(|c| c.validate());
                    assert!(parsed.is_ok(), "{parsed:?}\n{text}");
                }
            }
        }
    }

    #[test]
    fn a_spread_is_the_average_the_slowest_and_the_sum() {
        let s = Spread::of(&[1.0, 3.0, 2.0]);
        assert_eq!(
            (s.gbps_per_tenant, s.gbps_min, s.gbps_total),
            (2.0, 1.0, 6.0)
        );
    }
}
