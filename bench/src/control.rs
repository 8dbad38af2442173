//! `tenet-bench control`: how long a user waits for the control plane at 0 … 10,000
//! tenants (the Docklet paper's Table 3), beside Open vSwitch doing the same with its
//! own tools: a tenant is added (`POST /v1/tenants` / `ovs-vsctl add-br`), a port
//! attached and detached (`POST`/`DELETE /v1/ports` / `ovs-vsctl add-port`/`del-port`
//! of a DPDK null device) and a route added and removed (`POST`/`DELETE /v1/routes` /
//! `ovs-ofctl add-flow`/`del-flows`). tenetd keeps its state file on (every change is
//! written and fsynced before the answer), as in production.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use control::client::Client;

use crate::lab::Etcd;
use crate::ovs::Ovs;
use crate::process::Proc;

/// What to run.
pub struct Options {
    /// Tenant counts at which operations are timed (ascending).
    pub counts: Vec<usize>,
    /// Timed operations of each kind at each count.
    pub samples: usize,
    /// Measure OVS too.
    pub ovs: bool,
    /// Give up growing OVS past this much time (its bridges slow down as they grow).
    pub ovs_budget: Duration,
    /// Results directory.
    pub out: PathBuf,
    /// The tenetd binary.
    pub tenetd: PathBuf,
    /// Keep tenetd's model in an etcd started for the run, as one host of a cluster
    /// does (every change a transaction, read back through the watch).
    pub etcd: bool,
}

/// Latencies of one kind of operation, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile (the largest but one in a hundred samples; with fewer, the
    /// largest).
    #[serde(default)]
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Some(Self {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// One switch at one tenant count.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    /// Tenants present.
    pub tenants: usize,
    /// Tenants added per second while growing to this count (`None` at the start).
    pub add_rate: Option<f64>,
    /// Adding one more tenant.
    pub tenant_add: Option<Latency>,
    /// Removing one of the first tenants (every later one moves up a position), or
    /// the one just added when there are none.
    #[serde(default)]
    pub tenant_del: Option<Latency>,
    /// Attaching a port.
    pub port_attach: Option<Latency>,
    /// Detaching it.
    pub port_detach: Option<Latency>,
    /// Adding a route.
    pub route_add: Option<Latency>,
    /// Removing it.
    pub route_del: Option<Latency>,
}

/// One count's samples of each operation, as taken.
#[derive(Default)]
struct Samples {
    adds: Vec<Duration>,
    deletes: Vec<Duration>,
    attaches: Vec<Duration>,
    detaches: Vec<Duration>,
    routes: Vec<Duration>,
    unroutes: Vec<Duration>,
}

impl Samples {
    fn point(self, tenants: usize, add_rate: Option<f64>) -> Point {
        Point {
            tenants,
            add_rate,
            tenant_add: Latency::of(self.adds),
            tenant_del: Latency::of(self.deletes),
            port_attach: Latency::of(self.attaches),
            port_detach: Latency::of(self.detaches),
            route_add: Latency::of(self.routes),
            route_del: Latency::of(self.unroutes),
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// tenet at each count.
    pub tenet: Vec<Point>,
    /// OVS at each count it reached.
    pub ovs: Vec<Point>,
    /// Why OVS stopped short, if it did.
    pub ovs_note: String,
}

fn timed<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

/// tenetd's API through tenetctl's own client, one connection per call.
struct Api {
    client: Client,
}

impl Api {
    fn call(&self, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
        let answer = self.client.send(method, path, body.as_bytes())?;
        if !answer.ok() {
            bail!("{method} {path}: {answer}");
        }
        Ok(())
    }
}

fn tenant(i: usize) -> String {
    // A router on a subnet of its own, so routes can be added to any tenant.
    format!(
        r#"{{"name":"t{i}","id":{},"subnets":["{}.{}.{}.1/24"],"gateway_host":"h"}}"#,
        i + 2,
        11 + (i >> 16),
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// Runs the whole benchmark.
pub fn run(options: &Options, command: String) -> anyhow::Result<Results> {
    std::fs::create_dir_all(options.out.join("logs"))?;
    let mut results = Results {
        command,
        ..Results::default()
    };
    results.tenet = run_tenet(options)?;
    if options.ovs {
        let (points, note) = run_ovs(options)?;
        results.ovs = points;
        results.ovs_note = note;
    }
    std::fs::write(
        options.out.join("control.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(options.out.join("control.txt"), table(&results))?;
    Ok(results)
}

fn run_tenet(options: &Options) -> anyhow::Result<Vec<Point>> {
    let work = std::env::temp_dir().join(format!("tenet-bench-control-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let socket = work.join("tenetd.sock");
    let config = work.join("tenetd.toml");
    std::fs::write(
        &config,
        format!(
            "[dataplane]\nworkers = [1]\nmain_core = 0\nfile_prefix = \"tbctl\"\nmemory_mb = 256\n\n\
             [switch]\nhost = \"h\"\n\n[[host]]\nname = \"h\"\nunderlay_ip = \"198.18.0.1/24\"\n\n\
             [[tenant]]\nname = \"base\"\nid = 1\nsubnets = [\"10.255.0.1/24\"]\ngateway_host = \"h\"\n\n\
             [[port]]\nname = \"up\"\nbackend = \"null\"\nrole = \"uplink\"\n\n\
             [control]\napi_socket = \"{}\"\nstate_file = \"{}\"\n",
            socket.display(),
            work.join("state.json").display()
        ),
    )?;
    // In a cluster the model lives in etcd: one host of one, its changes written as
    // transactions and followed through its watch.
    let etcd = options.etcd.then(Etcd::start).transpose()?;
    if let Some(etcd) = &etcd {
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("etcd = [\"{}\"]\n", etcd.url()));
        std::fs::write(&config, text)?;
    }
    let _ = std::fs::remove_dir_all("/var/run/dpdk/tbctl");
    let mut command = Command::new(&options.tenetd);
    command.arg("--config").arg(&config);
    let log = options.out.join("logs").join("tenetd.log");
    let mut tenetd = Proc::spawn("tenetd", command, &log)?;
    let points = (|| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline || !tenetd.alive() {
                bail!(
                    "tenetd did not open its API socket: {}",
                    last_lines(&tenetd.log())
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let api = Api {
            client: Client::new(&socket),
        };
        let mut points = Vec::new();
        let mut added = 0;
        for &count in &options.counts {
            let start = Instant::now();
            let grown = count.saturating_sub(added);
            while added < count {
                api.call("POST", "/v1/tenants", &tenant(added))?;
                added += 1;
            }
            let add_rate = (grown > 0).then(|| grown as f64 / start.elapsed().as_secs_f64());
            let mut taken = Samples::default();
            for s in 0..options.samples {
                let extra = 100_000 + s;
                taken
                    .adds
                    .push(timed(|| api.call("POST", "/v1/tenants", &tenant(extra)))?);
                let early = if s < added { s } else { extra };
                taken.deletes.push(timed(|| {
                    api.call("DELETE", &format!("/v1/tenants/t{early}"), "")
                })?);
                if early != extra {
                    api.call("DELETE", &format!("/v1/tenants/t{extra}"), "")?;
                    api.call("POST", "/v1/tenants", &tenant(early))?;
                }
                let port = format!(
                    r#"{{"name":"p{s}","backend":"null","role":"access","tenant":"base"}}"#
                );
                taken
                    .attaches
                    .push(timed(|| api.call("POST", "/v1/ports", &port))?);
                taken.detaches.push(timed(|| {
                    api.call("DELETE", &format!("/v1/ports/p{s}"), "")
                })?);
                let route =
                    format!(r#"{{"tenant":"base","prefix":"10.200.{s}.0/24","via":"10.255.0.9"}}"#);
                taken
                    .routes
                    .push(timed(|| api.call("POST", "/v1/routes", &route))?);
                taken.unroutes.push(timed(|| {
                    api.call("DELETE", &format!("/v1/routes/base/10.200.{s}.0/24"), "")
                })?);
            }
            let point = taken.point(count, add_rate);
            eprintln!("tenet-bench control: tenet at {count} tenants done");
            points.push(point);
        }
        Ok(points)
    })();
    tenetd.stop();
    let _ = std::fs::remove_dir_all(&work);
    points
}

fn run_ovs(options: &Options) -> anyhow::Result<(Vec<Point>, String)> {
    let work = std::env::temp_dir().join(format!("tenet-bench-control-ovs-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let ovs = Ovs::start(&work, &options.out.join("logs"), &[1])?;
    let result = grow_ovs(&ovs, options);
    // Bridges go in batches (one transaction each), or their taps would outlive OVS.
    if let Ok(list) = ovs.vsctl(&["list-br"]) {
        let bridges: Vec<&str> = list.lines().collect();
        for chunk in bridges.chunks(200) {
            let mut args = Vec::new();
            for br in chunk {
                args.extend(["--", "del-br", br]);
            }
            let _ = ovs.vsctl(&args);
        }
    }
    ovs.stop();
    remove_bench_taps();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn grow_ovs(ovs: &Ovs, options: &Options) -> anyhow::Result<(Vec<Point>, String)> {
    let started = Instant::now();
    let add_br = |name: &str| ovs.add_netdev_bridge(name, &[]);
    add_br("tbc-base")?;
    let mut points = Vec::new();
    let mut added = 0;
    let mut device = 0;
    for &count in &options.counts {
        let start = Instant::now();
        let grown = count.saturating_sub(added);
        while added < count {
            if started.elapsed() > options.ovs_budget {
                return Ok((
                    points,
                    format!(
                        "OVS reached {added} bridges in the {:?} budget (--ovs-budget)",
                        options.ovs_budget
                    ),
                ));
            }
            add_br(&format!("tbc{added}"))?;
            added += 1;
        }
        let add_rate = (grown > 0).then(|| grown as f64 / start.elapsed().as_secs_f64());
        let mut taken = Samples::default();
        for s in 0..options.samples {
            let name = format!("tbx{s}");
            taken.adds.push(timed(|| add_br(&name))?);
            let early = if s < added {
                format!("tbc{s}")
            } else {
                name.clone()
            };
            taken
                .deletes
                .push(timed(|| ovs.vsctl(&["del-br", &early]))?);
            if early != name {
                ovs.vsctl(&["del-br", &name])?;
                add_br(&early)?;
            }
            // A fresh device name each time: DPDK does not reuse a detached vdev's name
            // at once.
            device += 1;
            let port = format!("p{s}");
            let devargs = format!("options:dpdk-devargs=\"net_null{device},no-rx=1\"");
            taken.attaches.push(timed(|| {
                ovs.vsctl(&[
                    "add-port",
                    "tbc-base",
                    &port,
                    "--",
                    "set",
                    "Interface",
                    &port,
                    "type=dpdk",
                    &devargs,
                ])
            })?);
            taken
                .detaches
                .push(timed(|| ovs.vsctl(&["del-port", "tbc-base", &port]))?);
            let flow = format!("ip,nw_dst=10.200.{s}.0/24");
            taken.routes.push(timed(|| {
                ovs.ofctl(&[
                    "add-flow",
                    "tbc-base",
                    &format!("{flow},actions=dec_ttl,mod_dl_dst:02:00:00:00:0d:02,output:LOCAL"),
                ])
            })?);
            taken.unroutes.push(timed(|| {
                ovs.ofctl(&["--strict", "del-flows", "tbc-base", &flow])
            })?);
        }
        points.push(taken.point(count, add_rate));
        eprintln!("tenet-bench control: OVS at {count} bridges done");
    }
    Ok((points, String::new()))
}

/// Taps of benchmark bridges an interrupted run left behind.
fn remove_bench_taps() {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("tbc") || name.starts_with("tbx") {
            let _ = crate::process::run("ip", &["link", "del", &name]);
        }
    }
}

fn last_lines(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// The results as a table: one line per count, tenet then OVS.
pub fn table(results: &Results) -> String {
    let cell = |l: &Option<Latency>| {
        l.as_ref().map_or("-".to_owned(), |l| {
            format!("{:.1}/{:.1}", l.p50_ms, l.p99_ms)
        })
    };
    let mut t = format!(
        "# {}\n{:<8} {:<6} {:>10} {:>11} {:>11} {:>12} {:>12} {:>10} {:>10}\n",
        results.command,
        "tenants",
        "switch",
        "adds/s",
        "add ms",
        "del ms",
        "attach ms",
        "detach ms",
        "route ms",
        "unroute ms"
    );
    let rows = results
        .tenet
        .iter()
        .map(|p| ("tenet", p))
        .chain(results.ovs.iter().map(|p| ("ovs", p)));
    let mut rows: Vec<_> = rows.collect();
    rows.sort_by_key(|(s, p)| (p.tenants, *s != "tenet"));
    for (switch, p) in rows {
        t.push_str(&format!(
            "{:<8} {:<6} {:>10} {:>11} {:>11} {:>12} {:>12} {:>10} {:>10}\n",
            p.tenants,
            switch,
            p.add_rate.map_or("-".to_owned(), |r| format!("{r:.0}")),
            cell(&p.tenant_add),
            cell(&p.tenant_del),
            cell(&p.port_attach),
            cell(&p.port_detach),
            cell(&p.route_add),
            cell(&p.route_del),
        ));
    }
    if !results.ovs_note.is_empty() {
        t.push_str(&format!("\n{}\n", results.ovs_note));
    }
    t.push_str(
        "\nms: median/99th percentile latency of one operation as its caller sees it (tenet: \
         HTTP over the API socket, its state record fsynced, or with --etcd its etcd \
         transaction; OVS: one ovs-vsctl/ovs-ofctl run each).\n\
         del: removing one of the first tenants (bridges), every later one a position up; \
         added back untimed.\n\
         adds/s: tenants (OVS: bridges) added per second while growing to the count.\n",
    );
    t
}

/// Parses `--counts 0,100,1000`.
pub fn parse_counts(text: &str) -> Result<Vec<usize>, String> {
    let mut counts: Vec<usize> = text
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map_err(|_| format!("counts: `{c}` is not a number"))
        })
        .collect::<Result<_, _>>()?;
    // The base tenant and the one each sample adds take slots too.
    let most = dataplane::table::NO_TENANT as usize - 2;
    if counts.iter().any(|&c| c > most) {
        return Err(format!(
            "counts: at most {most} tenants (one host's tenant slots)"
        ));
    }
    counts.sort_unstable();
    counts.dedup();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_quantiles_of_the_samples() {
        let l = Latency::of((1..=10).map(Duration::from_millis).collect()).unwrap();
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (5.0, 9.0, 10.0, 10.0)
        );
        assert!(Latency::of(Vec::new()).is_none());
    }

    #[test]
    fn counts_are_sorted_and_checked() {
        assert_eq!(parse_counts("1000,0,100,100").unwrap(), [0, 100, 1000]);
        assert!(parse_counts("1,x").unwrap_err().contains("`x`"));
        assert!(parse_counts("100000").is_ok());
        assert!(parse_counts("200000").unwrap_err().contains("at most"));
    }
}
