//! `tenet-bench run`: every scenario, frame size and round, tenet and its peers one
//! after the other on the same core and devices (the order rotating each round), so a
//! round's ratios compare runs seconds apart on a machine whose speed drifts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::generator;
use crate::peers::{self, Setup, Switch};
use crate::process::Proc;
use crate::scenario::{Scenario, Topology};
use crate::stats::LatencySummary;
use crate::telemetry;
use crate::template::Size;

/// What to run.
pub struct Options {
    /// Scenarios, in order.
    pub scenarios: Vec<&'static Scenario>,
    /// Topology.
    pub topology: Topology,
    /// Peers measured beside tenet.
    pub peers: Vec<Switch>,
    /// Rounds.
    pub rounds: usize,
    /// Measured seconds per test.
    pub duration: f64,
    /// Seconds before the window.
    pub warmup: f64,
    /// Frame sizes.
    pub sizes: Vec<Size>,
    /// Flows of the input (`None`: the scenario's default).
    pub flows: Option<usize>,
    /// The CPUs of each switch's dataplane cores.
    pub cpus: Vec<usize>,
    /// Tenant and endpoint changes a second made through tenet's API during the
    /// measured window (`None`: none).
    pub churn: Option<u32>,
    /// Packets a second the PVP generator offers (`None`: as many as come back; 0: none).
    pub rate: Option<f64>,
    /// Results directory.
    pub out: PathBuf,
    /// The tenetd binary.
    pub tenetd: PathBuf,
    /// tenet's bench configs.
    pub configs: PathBuf,
    /// The command line, for the record.
    pub command_line: String,
}

/// One measurement: a switch in a scenario, size and round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Round (from 1).
    pub round: usize,
    /// Scenario.
    pub scenario: String,
    /// Frame size (`64`, `imix`).
    pub size: String,
    /// Switch.
    pub switch: Switch,
    /// Packets per second forwarded, millions (`None`: the measurement failed).
    pub mpps: Option<f64>,
    /// On-the-wire bit rate of what was forwarded, Gbit/s.
    pub gbps: Option<f64>,
    /// Slowest and fastest second of the window, Mpps (replay).
    pub min_mpps: Option<f64>,
    /// See `min_mpps`.
    pub max_mpps: Option<f64>,
    /// Busy cycles per packet as the switch counts them.
    pub cycles_per_pkt: Option<f64>,
    /// Whether the switch did the scenario's work (`None`: not checked).
    pub check: Option<bool>,
    /// Frames lost (pvp: sent by the generator and not received back).
    pub lost: Option<u64>,
    /// Changes tenetd applied through its API during the window, a second (`--churn`).
    #[serde(default)]
    pub changes_per_s: Option<f64>,
    /// Latency of the probes (pvp).
    pub latency: Option<LatencySummary>,
    /// CPU use of the switch's busiest thread in the window, in cores (a poll-mode
    /// worker: 1.0 when it never rests).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Why a measurement failed or a check did not pass.
    pub note: String,
}

/// Where a run is.
struct Progress {
    done: usize,
    total: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn show(&self, what: &str) {
        let width = 30;
        let filled = width * self.done / self.total.max(1);
        let eta = if self.done > 0 {
            let per = self.started.elapsed().as_secs_f64() / self.done as f64;
            format!(
                " eta {}s",
                (per * (self.total - self.done) as f64).round() as u64
            )
        } else {
            String::new()
        };
        let bar = format!(
            "[{}{}] {}/{}{eta} {what}",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total
        );
        if self.tty {
            eprint!("\r\x1b[K{bar}");
        } else {
            eprintln!("{bar}");
        }
    }
}

/// Runs everything and writes the results; returns the rows.
pub fn run(options: &Options) -> anyhow::Result<Vec<Row>> {
    let logs = options.out.join("logs");
    let pcaps = options.out.join("pcaps");
    let work = std::env::temp_dir().join(format!("tenet-bench-{}", std::process::id()));
    for dir in [&logs, &pcaps, &work] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(options.out.join("env.txt"), environment(options))?;
    let mut switches = vec![Switch::Tenet];
    switches.extend(options.peers.iter().copied());
    let mut progress = Progress {
        done: 0,
        total: options.scenarios.len() * options.sizes.len() * options.rounds * switches.len(),
        started: Instant::now(),
        tty: std::io::stderr().is_terminal(),
    };
    let mut rows = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for scenario in &options.scenarios {
            for size in &options.sizes {
                let flows = options.flows.unwrap_or(scenario.default_flows);
                let pcap = pcaps.join(format!("{}-{size}-{flows}.pcap", scenario.name));
                let templates = crate::template::build(&scenario.spec(size, flows))
                    .map_err(anyhow::Error::msg)?;
                control::pcap::write(&pcap, templates.iter().map(|t| &t.bytes))?;
                for round in 1..=options.rounds {
                    // Rotate who goes first, so no switch always meets a cold or a warm
                    // machine.
                    let mut order = switches.clone();
                    let turn = (round - 1) % order.len();
                    order.rotate_left(turn);
                    for switch in order {
                        progress.show(&format!("{} {size} round {round} {switch}", scenario.name));
                        let tag = format!("r{round}-{}-{size}-{switch}", scenario.name);
                        let setup = Setup {
                            scenario,
                            topology: options.topology,
                            size,
                            flows,
                            pcap: &pcap,
                            work: &work,
                            logs: &logs,
                            tag: &tag,
                            configs: &options.configs,
                            tenetd: &options.tenetd,
                            cpus: &options.cpus,
                            churn: options.churn.is_some(),
                        };
                        let row = measure(switch, &setup, options, round);
                        progress.done += 1;
                        let said = match row.mpps {
                            Some(m) => format!("{switch}: {m:.2} Mpps"),
                            None => format!("{switch}: failed ({})", row.note),
                        };
                        progress.show(&format!("{} {size} round {round} {said}", scenario.name));
                        rows.push(row);
                        crate::report::write_rows(&options.out, &rows)?;
                    }
                }
            }
        }
        Ok(())
    })();
    if progress.tty {
        eprintln!();
    }
    let _ = std::fs::remove_dir_all(&work);
    result?;
    crate::report::write_all(&options.out, &rows, options)?;
    Ok(rows)
}

fn measure(switch: Switch, setup: &Setup<'_>, options: &Options, round: usize) -> Row {
    let mut row = Row {
        round,
        scenario: setup.scenario.name.to_owned(),
        size: setup.size.to_string(),
        switch,
        mpps: None,
        gbps: None,
        min_mpps: None,
        max_mpps: None,
        cycles_per_pkt: None,
        check: None,
        lost: None,
        changes_per_s: None,
        latency: None,
        cpu: None,
        note: String::new(),
    };
    let outcome = match setup.topology {
        Topology::Replay => measure_replay(switch, setup, options, &mut row),
        Topology::Pvp => measure_pvp(switch, setup, options, &mut row),
    };
    if let Err(e) = outcome {
        row.note = format!("{e:#}");
        row.mpps = None;
    }
    row
}

fn wire_gbps(pps: f64, size: &Size) -> f64 {
    // Each frame also occupies preamble, start delimiter and inter-frame gap (20 B).
    pps * (size.mean() + 20.0) * 8.0 / 1e9
}

/// Starts the switch, measures with `measure`, and stops the switch whether that
/// succeeded or not; a successful measurement's row gets what the switch said of it
/// (its cycles and datapath check).
fn with_switch<T>(
    switch: Switch,
    setup: &Setup<'_>,
    row: &mut Row,
    measure: impl FnOnce(&mut peers::Running) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut running = peers::start(switch, setup)?;
    let measured = measure(&mut running);
    let churned = running.churn.take().map(crate::churn::Churn::finish);
    let after = running.window_closes(setup);
    let after = running.stop(after);
    let measured = measured?;
    row.cycles_per_pkt = after.cycles_per_pkt;
    row.cpu = after.cpu;
    row.check = after.check;
    row.note = after.check_note;
    if let Some(done) = churned {
        row.changes_per_s = Some(done.applied as f64 / done.seconds.max(1e-9));
        if done.failed > 0 {
            row.check = Some(false);
            row.note = format!(
                "{} changes failed (the first is in the run's output); {}",
                done.failed, row.note
            );
        }
    }
    Ok(measured)
}

fn measure_replay(
    switch: Switch,
    setup: &Setup<'_>,
    options: &Options,
    row: &mut Row,
) -> anyhow::Result<()> {
    let window = with_switch(switch, setup, row, |running| {
        let sink = running.sink.clone();
        let prefix = running.prefix.clone();
        let (mut tel, port) =
            telemetry::wait_for_port(&prefix, &sink, Duration::from_secs(60), || running.alive())?;
        std::thread::sleep(Duration::from_secs_f64(options.warmup));
        running.window_opens(options.churn);
        telemetry::sample(
            &mut tel,
            port,
            "opackets",
            options.duration,
            Duration::from_secs(1),
        )
    })?;
    row.mpps = Some(window.pps / 1e6);
    row.gbps = Some(wire_gbps(window.pps, setup.size));
    row.min_mpps = Some(window.min_pps / 1e6);
    row.max_mpps = Some(window.max_pps / 1e6);
    Ok(())
}

fn measure_pvp(
    switch: Switch,
    setup: &Setup<'_>,
    options: &Options,
    row: &mut Row,
) -> anyhow::Result<()> {
    let report = with_switch(switch, setup, row, |running| {
        let (vhu0, vhu1) = running
            .vhost
            .clone()
            .context("the switch has no vhost-user ports")?;
        if !running.generator_serves {
            wait_for_sockets(&[&vhu0, &vhu1], Duration::from_secs(60), || running.alive())?;
        }
        if options.rate == Some(0.0) {
            // Nothing offered: the switch idles through the window.
            std::thread::sleep(Duration::from_secs_f64(options.warmup + 1.0));
            running.window_opens(options.churn);
            std::thread::sleep(Duration::from_secs_f64(options.duration));
            return Ok(None);
        }
        let server = if running.generator_serves {
            ",server=1"
        } else {
            ""
        };
        let json = setup.logs.join(format!("{}.gen.json", setup.tag));
        let mut command = Command::new(std::env::current_exe()?);
        command.args([
            "gen",
            "--scenario",
            setup.scenario.name,
            "--size",
            &setup.size.to_string(),
            "--flows",
            &setup.flows.to_string(),
            "--port",
            &format!(
                "net_virtio_user0,path={}{server},queues={}",
                vhu0.display(),
                setup.cores()
            ),
            "--port",
            &format!(
                "net_virtio_user1,path={}{server},queues={}",
                vhu1.display(),
                setup.cores()
            ),
            "--tx",
            "0",
            "--rx",
            "1",
            "--queues",
            &setup.cores().to_string(),
            "--duration",
            &options.duration.to_string(),
            "--warmup",
            &options.warmup.to_string(),
            "--core",
            "0",
            "--file-prefix",
            "tbgen",
            "--json",
        ]);
        command.arg(&json);
        if let Some(rate) = options.rate {
            command.args(["--rate", &rate.to_string()]);
        }
        let _ = std::fs::remove_file(&json);
        let mut gen = Proc::spawn(
            "tenet-bench gen",
            command,
            &setup.logs.join(format!("{}.gen.log", setup.tag)),
        )?;
        let started = Instant::now();
        let warmup = Duration::from_secs_f64(options.warmup);
        let mut opened = false;
        let limit = Duration::from_secs_f64(options.warmup + options.duration + 90.0);
        let status = loop {
            if let Some(status) = gen.wait_for_exit(Duration::from_millis(200)) {
                break status;
            }
            if !opened && started.elapsed() >= warmup + Duration::from_secs(1) {
                running.window_opens(options.churn);
                opened = true;
            }
            if started.elapsed() > limit {
                gen.stop();
                bail!("the generator did not finish within {limit:?}");
            }
        };
        if !status.success() {
            bail!("the generator failed: {}", last_line(&gen.log()));
        }
        let text = std::fs::read_to_string(&json)?;
        let report: generator::Report = serde_json::from_str(&text)?;
        anyhow::Ok(Some(report))
    })?;
    let Some(report) = report else {
        row.mpps = Some(0.0);
        return Ok(());
    };
    row.mpps = Some(report.rx_pps / 1e6);
    row.gbps = Some(report.rx_gbps);
    row.lost = Some(report.lost);
    row.latency = report.latency;
    if report.received == 0 {
        row.check = Some(false);
        row.note = "nothing came back to the generator".to_owned();
    }
    Ok(())
}

fn last_line(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

fn wait_for_sockets(
    paths: &[&Path],
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive() {
            bail!("the switch exited before it opened its vhost-user sockets");
        }
        if paths.iter().all(|p| p.exists()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the switch did not open its vhost-user sockets within {timeout:?}")
}

/// The record of what ran where.
fn environment(options: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let version = |pkg: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Version}", pkg])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let git = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "# tenet-bench run, {}\ncommand: {}\ncpu: {cpu} x {cpus}\nkernel: {}\ndpdk: {}\novs: {}\ntenet: {git}\n\
         topology: {} rounds: {} duration: {}s warmup: {}s cores: {} (CPUs {:?})\n",
        chrono_now(),
        options.command_line,
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        version("dpdk"),
        version("openvswitch-switch-dpdk"),
        options.topology,
        options.rounds,
        options.duration,
        options.warmup,
        options.cpus.len(),
        options.cpus,
    )
}

/// The current UTC time as `date -u` prints it.
fn chrono_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
