//! `tenet-bench`: the generator, the scenario runner and the control-plane benchmark.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bench::generator::{self, Mode};
use bench::peers::{self, Switch};
use bench::scenario::{self, Topology};
use bench::template::{self, Kind, Size, Spec};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "tenet-bench",
    version,
    about = "tenet measured beside dpdk-testpmd and Open vSwitch with DPDK"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A DPDK generator/reflector (testpmd's txonly, rxonly, io and macswap, with
    /// probes for loss, reordering and latency).
    Gen(GenArgs),
    /// Measures tenet beside its peers, scenario by scenario, round by round.
    Run(RunArgs),
    /// Times the control plane (tenant add, port attach, route add) at growing tenant
    /// counts, beside OVS doing the same with ovs-vsctl and ovs-ofctl.
    Control(ControlArgs),
    /// The Docklet experiments (the paper's Table 2): containers attached by tenet-cni
    /// on hosts sharing a bridge, beside a plain veth and a Linux bridge; both designs
    /// with growing tenant counts; egress through central and distributed gateways.
    Containers(ContainersArgs),
    /// A large cluster on paper (etcd keys, watch events, tenants and tunnels per host,
    /// from the real placement code) and agents converging on a real etcd
    Cluster(ClusterArgs),
    /// Writes a scenario's input frames to a pcap file.
    Pcap(PcapArgs),
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Hosts of the synthetic cluster.
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Its tenants.
    #[arg(long, default_value_t = 100_000)]
    tenants: usize,
    /// Containers per tenant, each on a random host.
    #[arg(long, default_value_t = 2)]
    containers: usize,
    /// Hosts whose view is computed and validated.
    #[arg(long, default_value_t = 20)]
    sample: usize,
    /// Agents (hosts without dataplanes) in the convergence run; 0 skips it.
    #[arg(long, default_value_t = 100)]
    agents: usize,
    /// Tenants written one at a time while the agents follow.
    #[arg(long, default_value_t = 20)]
    writes: usize,
    /// Tenants (two containers each) in the cluster before the agents start: every
    /// agent reloads the model on a change, so this is what a change costs it.
    #[arg(long, default_value_t = 1000)]
    preload: usize,
    /// Seconds the agents follow the cluster before the first write: all of them start
    /// at once on this machine's cores, and for a few seconds after the last one
    /// follows, their start-up still competes with the writes.
    #[arg(long, default_value_t = 15.0)]
    settle: f64,
    /// Results directory (default: bench/results/<stamp>-cluster).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run a tenetd as one more host of the cluster, timed like the agents.
    #[arg(long)]
    follower: bool,
    /// The tenetd binary for --follower (default: beside tenet-bench).
    #[arg(long)]
    tenetd: Option<PathBuf>,
    /// What each agent (and the follower) watches: `all` (the whole cluster: every
    /// write is awaited at every agent) or `own` (its own tenants: the preloaded
    /// tenants' containers are spread over all --hosts, and a write, a tenant with a
    /// container on one agent's host and one on any host, is awaited where it lives).
    #[arg(long, default_value = "all", value_parser = parse_watch)]
    watch: control::store::Watch,
}

fn parse_watch(word: &str) -> Result<control::store::Watch, String> {
    control::store::Watch::parse(word).ok_or_else(|| format!("`{word}` is not `all` or `own`"))
}

#[derive(clap::Args)]
struct ContainersArgs {
    /// Tenant counts for the two designs and for egress through central and
    /// distributed gateways.
    #[arg(long, default_value = "1,5,10,20,50")]
    counts: String,
    /// Hosts (network namespaces each running tenetd) on the underlay bridge; the
    /// first is the egress host.
    #[arg(long, default_value_t = 4)]
    hosts: usize,
    /// Seconds each iperf3 runs.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Container port backend, as tenet-cni's config names it: af-packet (its default)
    /// or af-xdp (falling back to af-packet).
    #[arg(long, default_value = "af-packet", value_parser = ["af-xdp", "af-packet"])]
    backend: String,
    /// Results directory (default: bench/results/<stamp>-containers).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The tenetd binary (default: beside tenet-bench).
    #[arg(long)]
    tenetd: Option<PathBuf>,
    /// Where CNI plugins are (host-local).
    #[arg(long, default_value = "/usr/lib/cni:/opt/cni/bin")]
    cni_path: String,
}

#[derive(clap::Args)]
struct ControlArgs {
    /// Tenant counts at which operations are timed.
    #[arg(long, default_value = "0,10,100,1000,10000")]
    counts: String,
    /// Timed operations of each kind at each count.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Measure Open vSwitch too (`--peer ovs`).
    #[arg(long, value_delimiter = ',', value_parser = Switch::parse)]
    peer: Vec<Switch>,
    /// Stop growing OVS after this many seconds.
    #[arg(long, default_value_t = 1800)]
    ovs_budget: u64,
    /// Results directory (default: bench/results/<stamp>-control when run from the
    /// repository).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The tenetd binary (default: beside tenet-bench).
    #[arg(long)]
    tenetd: Option<PathBuf>,
    /// Keep tenetd's model in etcd (started for the run), as a host of a cluster does.
    #[arg(long)]
    etcd: bool,
    /// Fail instead of installing missing packages.
    #[arg(long)]
    no_install: bool,
}

/// Frame shapes on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TemplateArg {
    /// Ethernet / IPv4 / UDP.
    L2,
    /// 802.1Q-tagged (VLAN 100).
    Vlan,
    /// GRE (key 4242) from the remote host 198.19.255.2 to 198.19.255.1.
    Gre,
    /// IPv4 UDP flows to the router MAC 02:00:00:00:0b:00.
    Udp,
    /// IPv4 TCP (ACK) flows to the router MAC.
    Tcp,
    /// 802.1Q frames of many tenants (VLAN 1..=tenants), `--macs` MACs each.
    Tenants,
    /// The tenants' frames untagged in GRE from the remote host, keyed 1..=tenants.
    GreTenants,
}

#[derive(clap::Args)]
struct FramesArgs {
    /// A scenario's input frames (its shape and MACs; overrides --template and --macs).
    #[arg(long)]
    scenario: Option<String>,
    /// Frame shape.
    #[arg(long, value_enum, default_value = "l2")]
    template: TemplateArg,
    /// Frame size with FCS (64..1518; GRE: the inner frame), or imix.
    #[arg(long, default_value = "64", value_parser = Size::parse)]
    size: Size,
    /// Flows (distinct frames, sent in turn).
    #[arg(long, default_value_t = 256)]
    flows: usize,
    /// Destination MACs (per tenant with --template tenants or gre-tenants).
    #[arg(long, default_value_t = 4)]
    macs: usize,
    /// Tenants (--template tenants or gre-tenants).
    #[arg(long, default_value_t = 1000)]
    tenants: usize,
}

impl FramesArgs {
    fn spec(&self) -> anyhow::Result<Spec> {
        if let Some(name) = &self.scenario {
            return Ok(scenario::find(name)?.spec(&self.size, self.flows));
        }
        let (kind, macs) = match self.template {
            TemplateArg::L2 => (Kind::Plain, self.macs),
            TemplateArg::Vlan => (Kind::Vlan, self.macs),
            TemplateArg::Gre => (Kind::Gre, self.macs),
            TemplateArg::Udp => (Kind::Plain, 0),
            TemplateArg::Tcp => (Kind::Tcp, 0),
            TemplateArg::Tenants => (Kind::Tenants, self.macs),
            TemplateArg::GreTenants => (Kind::GreTenants, self.macs),
        };
        Ok(Spec {
            tenants: self.tenants,
            ..Spec::new(kind, self.size.clone(), self.flows, macs)
        })
    }
}

#[derive(clap::Args)]
struct GenArgs {
    /// A port by its DPDK devargs (`net_virtio_user0,path=/tmp/vhu0.sock`,
    /// `net_af_xdp0,iface=veth0`, `net_pcap0,tx_pcap=out.pcap`, `net_ring0`, a PCI
    /// address); repeat for more.
    #[arg(long = "port", required = true)]
    ports: Vec<String>,
    /// What to do with the ports.
    #[arg(long, value_enum, default_value = "stream")]
    mode: Mode,
    /// Ports that send (stream, txonly), by index; default: the first.
    #[arg(long, value_delimiter = ',')]
    tx: Vec<usize>,
    /// Ports that receive (stream, rxonly), by index; default: the last.
    #[arg(long, value_delimiter = ',')]
    rx: Vec<usize>,
    /// Queue pairs per port (flows spread over them, one stream of probes each).
    #[arg(long, default_value_t = 1)]
    queues: u16,
    #[command(flatten)]
    frames: FramesArgs,
    /// Packets per second per sending port (default: as fast as the port takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Frames to send per port, then stop.
    #[arg(long)]
    count: Option<u64>,
    /// Seconds to keep receiving after sending stopped.
    #[arg(long, default_value_t = 0.5)]
    drain: f64,
    /// Bursts each port sends first in io mode (a closed loop, like testpmd's tx_first).
    #[arg(long, default_value_t = 0)]
    tx_first: u32,
    /// CPU to run on.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// DPDK file prefix (the runtime directory, the telemetry socket).
    #[arg(long, default_value = "tenet-gen")]
    file_prefix: String,
    /// Hugepage memory, MiB.
    #[arg(long, default_value_t = 256)]
    memory_mb: u32,
    /// Packet buffers.
    #[arg(long, default_value_t = 16383)]
    mbufs: u32,
    /// A line of rates per second on stderr.
    #[arg(long)]
    progress: bool,
    /// Writes the report here as JSON too (it always goes to stdout).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TopologyArg {
    /// One core: a pcap replayed into the switch, a null sink (the steadier figure).
    Replay,
    /// vhost-user: the generator on the other core through virtio-user.
    Pvp,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenarios (default: all): xconnect l2 l2-many l2-million vlan vlan-pop gre-encap
    /// gre-decap gre-many route snat.
    scenarios: Vec<String>,
    /// Topology.
    #[arg(long, value_enum, default_value = "replay")]
    topology: TopologyArg,
    /// Peers measured in the same run: testpmd, ovs (comma-separated; none: tenet alone).
    #[arg(long, value_delimiter = ',', value_parser = Switch::parse)]
    peer: Vec<Switch>,
    /// Rounds (each runs every switch once, the order rotating).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds measured per test.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Seconds before the measured window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Frame sizes with FCS, comma-separated (64..1518, imix).
    #[arg(long, value_delimiter = ',', default_value = "64", value_parser = Size::parse)]
    sizes: Vec<Size>,
    /// Flows of the input (default: each scenario's, 256; l2-many 100,000).
    #[arg(long)]
    flows: Option<usize>,
    /// Dataplane cores for each switch: CPUs 1 to N, or (replay, N = every CPU) 0 to
    /// N-1 with the control threads beside the first, as testpmd's main lcore is.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Change tenet through its API during the measured window: tenants and endpoints
    /// added and deleted, this many a second (each a new snapshot of the tables).
    #[arg(long)]
    churn: Option<u32>,
    /// Packets a second the PVP generator offers (default: as many as come back); 0
    /// offers none, to measure the switch idle. Each row reports the switch's busiest
    /// thread's CPU use in the window.
    #[arg(long)]
    rate: Option<f64>,
    /// Results directory (default: bench/results/<stamp>-<topology> when run from the
    /// repository, else tenet-bench-<stamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The tenetd binary (default: beside tenet-bench).
    #[arg(long)]
    tenetd: Option<PathBuf>,
    /// tenet's bench configs (default: configs/bench of the repository).
    #[arg(long)]
    configs: Option<PathBuf>,
    /// Fail instead of installing missing packages.
    #[arg(long)]
    no_install: bool,
}

#[derive(clap::Args)]
struct PcapArgs {
    /// File to write.
    out: PathBuf,
    #[command(flatten)]
    frames: FramesArgs,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && value >= 0.0,
        "{name}: must be a number of seconds, 0 or more"
    );
    Ok(Duration::from_secs_f64(value))
}

fn gen(args: GenArgs) -> anyhow::Result<()> {
    let templates = template::build(&args.frames.spec()?).map_err(anyhow::Error::msg)?;
    let last = args.ports.len().saturating_sub(1);
    let options = generator::Options {
        mode: args.mode,
        tx: if args.tx.is_empty() { vec![0] } else { args.tx },
        rx: if args.rx.is_empty() {
            vec![last]
        } else {
            args.rx
        },
        queues: args.queues,
        ports: args.ports,
        templates,
        rate: args.rate,
        duration: seconds("duration", args.duration)?,
        warmup: seconds("warmup", args.warmup)?,
        count: args.count,
        drain: seconds("drain", args.drain)?,
        tx_first: args.tx_first,
        core: args.core,
        file_prefix: args.file_prefix,
        memory_mb: args.memory_mb,
        mbufs: args.mbufs,
        progress: args.progress,
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).context("signal handler")?;
    }
    let report = generator::run(&options, stop)?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(path) = args.json {
        std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{text}");
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenarios.is_empty() {
        scenario::SCENARIOS.iter().collect()
    } else {
        args.scenarios
            .iter()
            .map(|s| scenario::find(s))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    anyhow::ensure!(args.rounds >= 1, "rounds: at least 1");
    anyhow::ensure!(args.duration >= 1.0, "duration: at least 1 second");
    seconds("warmup", args.warmup)?;
    if let Some(flows) = args.flows {
        anyhow::ensure!(
            (1..=1 << 20).contains(&flows),
            "flows: {flows} is not in 1..=1048576"
        );
    }
    let cpus = peers::check_cores(args.cores, matches!(args.topology, TopologyArg::Pvp))?;
    if let Some(rate) = args.churn {
        anyhow::ensure!(
            (1..=100_000).contains(&rate),
            "churn: {rate} is not in 1..=100000 changes a second"
        );
    }
    if let Some(rate) = args.rate {
        anyhow::ensure!(
            rate.is_finite() && rate >= 0.0,
            "rate: {rate} is not a number of packets a second (0 or more)"
        );
        anyhow::ensure!(
            matches!(args.topology, TopologyArg::Pvp),
            "rate: only the pvp topology's generator takes a rate (replay sends a capture as fast as it goes)"
        );
    }
    let mut peer = Vec::new();
    for p in args.peer {
        anyhow::ensure!(p != Switch::Tenet, "peer: tenet is always measured");
        if !peer.contains(&p) {
            peer.push(p);
        }
    }
    let exe = std::env::current_exe()?;
    let beside = |name: &str| exe.parent().map(|d| d.join(name));
    let tenetd = tenetd_beside(args.tenetd)?;
    let configs = args
        .configs
        .or_else(|| {
            let here = PathBuf::from("configs/bench");
            here.is_dir().then_some(here)
        })
        .or_else(|| beside("../../configs/bench"))
        .filter(|p| p.is_dir())
        .context("configs: configs/bench not found; run from the repository or give --configs")?;
    let topology = match args.topology {
        TopologyArg::Replay => Topology::Replay,
        TopologyArg::Pvp => Topology::Pvp,
    };
    let out = results_dir(args.out, &topology.to_string())?;
    let pages = match topology {
        Topology::Replay => 256,
        Topology::Pvp => 384,
    };
    bench::machine::prepare(!args.no_install, peer.contains(&Switch::Ovs), pages)?;
    let options = bench::runner::Options {
        scenarios,
        topology,
        peers: peer,
        rounds: args.rounds,
        duration: args.duration,
        warmup: args.warmup,
        sizes: args.sizes,
        flows: args.flows,
        cpus,
        churn: args.churn,
        rate: args.rate,
        out: out.clone(),
        tenetd,
        configs,
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let rows = bench::runner::run(&options)?;
    print!("{}", bench::report::table(&bench::report::summarize(&rows)));
    println!("results in {}", out.display());
    Ok(())
}

fn tenetd_beside(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    given
        .or_else(|| exe.parent().map(|d| d.join("tenetd")))
        .filter(|p| p.exists())
        .context("tenetd: not found beside tenet-bench; build it (cargo build --release) or give --tenetd")
}

fn results_dir(given: Option<PathBuf>, what: &str) -> anyhow::Result<PathBuf> {
    let stamp = bench::process::run("date", &["+%Y%m%d-%H%M"])?
        .trim()
        .to_owned();
    Ok(given.unwrap_or_else(|| {
        if std::path::Path::new("bench/results").is_dir() {
            PathBuf::from(format!("bench/results/{stamp}-{what}"))
        } else {
            PathBuf::from(format!("tenet-bench-{stamp}-{what}"))
        }
    }))
}

fn control(args: ControlArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.samples >= 1, "samples: at least 1");
    let counts = bench::control::parse_counts(&args.counts).map_err(anyhow::Error::msg)?;
    for p in &args.peer {
        anyhow::ensure!(
            *p == Switch::Ovs,
            "peer: only ovs has a control plane to compare"
        );
    }
    let ovs = args.peer.contains(&Switch::Ovs);
    bench::machine::prepare(!args.no_install, ovs, 128)?;
    let options = bench::control::Options {
        counts,
        samples: args.samples,
        ovs,
        ovs_budget: Duration::from_secs(args.ovs_budget),
        out: results_dir(args.out, "control")?,
        tenetd: tenetd_beside(args.tenetd)?,
        etcd: args.etcd,
    };
    anyhow::ensure!(
        !(options.etcd && options.ovs),
        "etcd: OVS keeps no cluster model to compare with"
    );
    let results = bench::control::run(&options, std::env::args().collect::<Vec<_>>().join(" "))?;
    print!("{}", bench::control::table(&results));
    println!("results in {}", options.out.display());
    Ok(())
}

fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.hosts >= 1, "hosts: at least 1");
    anyhow::ensure!(args.sample >= 1, "sample: at least 1");
    anyhow::ensure!(
        args.agents == 0 || args.writes >= 1,
        "writes: at least 1 when agents run"
    );
    anyhow::ensure!(
        args.tenants * args.containers / args.hosts < dataplane::MAX_PORTS,
        "containers: {} per host on average is more ports than a host holds ({})",
        args.tenants * args.containers / args.hosts,
        dataplane::MAX_PORTS
    );
    if args.agents > 0 {
        bench::machine::ensure(&["etcd-server"], true)?;
    }
    anyhow::ensure!(
        !args.follower || args.agents > 0,
        "follower: it follows the agents' run; give --agents"
    );
    let follower = match args.follower {
        true => {
            bench::machine::prepare(true, false, 128)?;
            Some(tenetd_beside(args.tenetd)?)
        }
        false => None,
    };
    let options = bench::cluster::Options {
        hosts: args.hosts,
        tenants: args.tenants,
        containers: args.containers,
        sample: args.sample,
        agents: args.agents,
        writes: args.writes,
        preload: args.preload,
        settle: seconds("settle", args.settle)?,
        follower,
        watch: args.watch,
        out: results_dir(args.out, "cluster")?,
    };
    let results = bench::cluster::run(&options, std::env::args().collect::<Vec<_>>().join(" "))?;
    print!("{}", bench::cluster::table(&results));
    println!("results in {}", options.out.display());
    Ok(())
}

fn containers(args: ContainersArgs) -> anyhow::Result<()> {
    let counts = bench::control::parse_counts(&args.counts).map_err(anyhow::Error::msg)?;
    // Each container is a port of its host's tenetd, and the uplink is one more.
    let most = dataplane::MAX_PORTS - 1;
    anyhow::ensure!(
        counts.iter().all(|&n| (1..=most).contains(&n)),
        "counts: each between 1 and {most} tenants: a host attaches a port per container \
         and tenetd holds {} ports, one of them the uplink",
        dataplane::MAX_PORTS
    );
    anyhow::ensure!(args.seconds >= 1, "seconds: at least 1");
    let most = bench::docklet::MAX_HOSTS;
    anyhow::ensure!(
        (2..=most).contains(&args.hosts),
        "hosts: between 2 and {most}: containers of a tenant on different hosts need two, \
         and each host's tenetd takes {} MiB of the 2 GiB of hugepages the run reserves",
        bench::docklet::TENETD_MEMORY_MB
    );
    let tenetd = tenetd_beside(args.tenetd)?;
    let cni = tenetd.with_file_name("tenet-cni");
    anyhow::ensure!(
        cni.exists(),
        "tenet-cni: not found beside tenetd ({})",
        cni.display()
    );
    let pages = args.hosts as u64 * bench::docklet::TENETD_MEMORY_MB / 2;
    bench::machine::prepare(true, false, pages)?;
    let options = bench::docklet::Options {
        counts,
        hosts: args.hosts,
        seconds: args.seconds,
        out: results_dir(args.out, "containers")?,
        tenetd,
        cni,
        cni_path: args.cni_path,
        backend: args.backend,
    };
    let results = bench::docklet::run(&options, std::env::args().collect::<Vec<_>>().join(" "))?;
    print!("{}", bench::docklet::table(&results));
    println!("results in {}", options.out.display());
    Ok(())
}

fn main() {
    // Before any thread starts: the generator's ports may be AF_XDP.
    if let Some(note) = dataplane::dpdk::prepare_process() {
        eprintln!("tenet-bench: {note}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gen(args) => gen(args),
        Command::Run(args) => run(args),
        Command::Control(args) => control(args),
        Command::Containers(args) => containers(args),
        Command::Cluster(args) => cluster(args),
        Command::Pcap(args) => args.frames.spec().and_then(|spec| {
            let t = template::build(&spec).map_err(anyhow::Error::msg)?;
            control::pcap::write(&args.out, t.iter().map(|t| &t.bytes))
        }),
    };
    if let Err(e) = result {
        eprintln!("tenet-bench: {e:#}");
        std::process::exit(1);
    }
}
