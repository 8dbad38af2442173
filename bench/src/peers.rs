//! The switches `tenet-bench run` measures, each started fresh for every measurement on
//! the same devices: tenetd, dpdk-testpmd (io forwarding: the zero-logic upper bound)
//! and Open vSwitch with DPDK set up for the same scenario ([`crate::ovs`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ovs::Ovs;
use crate::process::Proc;
use crate::scenario::{Scenario, Topology};
use crate::template::Size;

/// A switch under test.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// tenetd.
    Tenet,
    /// dpdk-testpmd, io forwarding.
    Testpmd,
    /// Open vSwitch with DPDK.
    Ovs,
}

impl Switch {
    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Switch::Tenet => "tenet",
            Switch::Testpmd => "testpmd",
            Switch::Ovs => "ovs",
        }
    }

    /// From the command line (`--peer testpmd,ovs`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "tenet" => Ok(Switch::Tenet),
            "testpmd" => Ok(Switch::Testpmd),
            "ovs" => Ok(Switch::Ovs),
            _ => Err(format!("peer `{text}`: one of testpmd, ovs")),
        }
    }
}

impl std::fmt::Display for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything a switch needs to be started for one measurement.
pub struct Setup<'a> {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// The topology.
    pub topology: Topology,
    /// Frame size.
    pub size: &'a Size,
    /// Flows of the input.
    pub flows: usize,
    /// The replay topology's input.
    pub pcap: &'a Path,
    /// A private directory for configs, sockets and databases.
    pub work: &'a Path,
    /// Where logs go.
    pub logs: &'a Path,
    /// Names this measurement's logs.
    pub tag: &'a str,
    /// tenet's configs (`configs/bench`).
    pub configs: &'a Path,
    /// The tenetd binary.
    pub tenetd: &'a Path,
    /// The dataplane cores' CPUs ([`check_cores`]).
    pub cpus: &'a [usize],
    /// tenet is changed through its API during the window ([`crate::churn`]).
    pub churn: bool,
}

impl Setup<'_> {
    /// Dataplane cores.
    pub fn cores(&self) -> usize {
        self.cpus.len()
    }

    fn log(&self, what: &str) -> PathBuf {
        self.logs.join(format!("{}.{what}.log", self.tag))
    }

    /// vhost-user sockets of the PVP topology, in the work directory.
    pub fn sockets(&self) -> (PathBuf, PathBuf) {
        (self.work.join("vhu0.sock"), self.work.join("vhu1.sock"))
    }
}

/// A switch running for one measurement.
pub struct Running {
    /// Which switch.
    pub switch: Switch,
    /// Its DPDK file prefix (the telemetry socket).
    pub prefix: String,
    /// The replay topology's sink device (its TX counter is the measurement).
    pub sink: String,
    /// The PVP topology's vhost-user sockets, for the generator's virtio-user ports.
    pub vhost: Option<(PathBuf, PathBuf)>,
    /// Whether the vhost-user sockets are the generator's to serve (OVS's client
    /// ports) rather than the switch's.
    pub generator_serves: bool,
    /// Where changes go during the window (tenet with `--churn`).
    churn_target: Option<crate::churn::Target>,
    /// The changes being made.
    pub churn: Option<crate::churn::Churn>,
    /// Each thread's CPU time when the window opened, and when that was.
    cpu_at_open: Option<(Instant, ThreadTimes)>,
    process: Option<Proc>,
    ovs: Option<Ovs>,
}

/// What a switch said about a measurement once stopped.
#[derive(Debug, Clone, Default)]
pub struct Afterwards {
    /// Busy cycles per packet, as the switch counts them.
    pub cycles_per_pkt: Option<f64>,
    /// CPU use of the switch's busiest thread in the window, in cores.
    pub cpu: Option<f64>,
    /// Whether the switch did the scenario's work (`None`: not checked).
    pub check: Option<bool>,
    /// Why the check failed.
    pub check_note: String,
}

impl Running {
    /// Whether the switch process is still up.
    pub fn alive(&mut self) -> bool {
        match (&mut self.process, &mut self.ovs) {
            (Some(p), _) => p.alive(),
            (None, Some(o)) => o.alive(),
            (None, None) => false,
        }
    }

    /// Called when the measured window opens (OVS clears its PMD counters; tenet
    /// starts changing at `churn` changes a second, when asked).
    pub fn window_opens(&mut self, churn: Option<u32>) {
        self.cpu_at_open = self
            .process
            .as_ref()
            .map(|p| (Instant::now(), thread_times(p.pid())));
        if let Some(ovs) = &self.ovs {
            let _ = ovs.appctl(&["dpif-netdev/pmd-stats-clear"]);
        }
        if let (Some(rate), Some(target)) = (churn, self.churn_target.take()) {
            self.churn = Some(crate::churn::Churn::start(target, rate));
        }
    }

    /// Called when the window closes, before stopping: OVS's cycles and datapath check.
    pub fn window_closes(&mut self, setup: &Setup<'_>) -> Afterwards {
        let cpu = match (self.cpu_at_open.take(), &self.process) {
            (Some((opened, before)), Some(p)) => {
                busiest_thread(&before, &thread_times(p.pid()), opened.elapsed())
            }
            _ => None,
        };
        let Some(ovs) = &self.ovs else {
            return Afterwards {
                cpu,
                ..Afterwards::default()
            };
        };
        let stats = ovs
            .appctl(&["dpif-netdev/pmd-stats-show"])
            .unwrap_or_default();
        let _ = std::fs::write(setup.log("pmd-stats"), &stats);
        let flows = ovs.appctl(&["dpctl/dump-flows", "-m"]).unwrap_or_default();
        let _ = std::fs::write(setup.log("dp-flows"), &flows);
        let (check, note) = crate::ovs::check(setup.scenario, &flows);
        Afterwards {
            cpu,
            cycles_per_pkt: crate::ovs::cycles_per_packet(&stats),
            check: Some(check),
            check_note: note,
        }
    }

    /// Stops it and reads what it printed.
    pub fn stop(mut self, mut after: Afterwards) -> Afterwards {
        if let Some(mut p) = self.process.take() {
            p.stop();
            let log = p.log();
            after.cycles_per_pkt = after.cycles_per_pkt.or_else(|| cycles_from_log(&log));
            if self.switch == Switch::Tenet {
                let (ok, note) = tenet_check(&log);
                after.check = Some(ok);
                after.check_note = note;
            }
        }
        if let Some(ovs) = self.ovs.take() {
            ovs.stop();
        }
        // testpmd leaves its runtime directory behind.
        clear_runtime(&self.prefix);
        after
    }
}

/// Time on a CPU (ns) of each thread of a process, by thread id.
type ThreadTimes = std::collections::HashMap<u32, u64>;

/// Each thread's time on a CPU so far (threads that ended are missing), from the
/// scheduler's own account (`schedstat`, nanoseconds).
fn thread_times(pid: u32) -> ThreadTimes {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return ThreadTimes::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let tid: u32 = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, stat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The CPU use, in cores, of the thread that used the most between `before` and
/// `after`, `elapsed` apart: a poll-mode switch's worker.
fn busiest_thread(before: &ThreadTimes, after: &ThreadTimes, elapsed: Duration) -> Option<f64> {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return None;
    }
    after
        .iter()
        .filter_map(|(tid, &now)| Some(now.saturating_sub(*before.get(tid)?)))
        .max()
        .map(|ns| ns as f64 / 1e9 / seconds)
}

/// Starts `switch` for `setup`.
pub fn start(switch: Switch, setup: &Setup<'_>) -> anyhow::Result<Running> {
    match switch {
        Switch::Tenet => start_tenet(setup),
        Switch::Testpmd => start_testpmd(setup),
        Switch::Ovs => start_ovs(setup),
    }
}

const TENET_PREFIX: &str = "tbtenet";
const TESTPMD_PREFIX: &str = "tbtestpmd";

fn clear_runtime(prefix: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

fn start_tenet(setup: &Setup<'_>) -> anyhow::Result<Running> {
    clear_runtime(TENET_PREFIX);
    let mut text =
        setup
            .scenario
            .tenet_config(setup.configs, setup.topology, setup.cpus, setup.size)?;
    if setup.topology == Topology::Replay {
        text = crate::scenario::with_replay_pool(&text, setup.flows, setup.cpus.len());
    }
    let config = setup
        .work
        .join(format!("tenet-{}.toml", setup.scenario.name));
    let churn_target = match setup.churn {
        true => Some(crate::churn::Target {
            socket: setup.work.join("tenet-api.sock"),
            tenant: crate::churn::sink_tenant(&text),
        }),
        false => None,
    };
    let text = match &churn_target {
        Some(target) => crate::churn::with_api(&text, &target.socket)?,
        None => text,
    };
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let mut command = Command::new(setup.tenetd);
    command.arg("--config").arg(&config);
    for (key, value) in setup.scenario.environment(1, TENET_PREFIX) {
        command.env(key, value);
    }
    let (vhu0, vhu1) = setup.sockets();
    let _ = std::fs::remove_file(&vhu0);
    let _ = std::fs::remove_file(&vhu1);
    command
        .env("PCAP", setup.pcap)
        .env("VHU0", &vhu0)
        .env("VHU1", &vhu1)
        .env("FRAME_SIZE", setup.size.to_string());
    let process = Proc::spawn("tenetd", command, &setup.log("switch"))?;
    Ok(Running {
        cpu_at_open: None,
        switch: Switch::Tenet,
        prefix: TENET_PREFIX.to_owned(),
        // tenetd names virtual devices per driver in config order: the one null port.
        sink: "net_null0".to_owned(),
        vhost: (setup.topology == Topology::Pvp).then_some((vhu0, vhu1)),
        generator_serves: false,
        churn_target,
        churn: None,
        process: Some(process),
        ovs: None,
    })
}

fn start_testpmd(setup: &Setup<'_>) -> anyhow::Result<Running> {
    clear_runtime(TESTPMD_PREFIX);
    let (vhu0, vhu1) = setup.sockets();
    let command = testpmd_command(setup, &vhu0, &vhu1);
    if setup.topology == Topology::Pvp {
        let _ = std::fs::remove_file(&vhu0);
        let _ = std::fs::remove_file(&vhu1);
    }
    let process = Proc::spawn("dpdk-testpmd", command, &setup.log("switch"))?;
    Ok(Running {
        cpu_at_open: None,
        switch: Switch::Testpmd,
        prefix: TESTPMD_PREFIX.to_owned(),
        sink: "net_null0".to_owned(),
        vhost: (setup.topology == Topology::Pvp).then_some((vhu0, vhu1)),
        generator_serves: false,
        churn_target: None,
        churn: None,
        process: Some(process),
        ovs: None,
    })
}

/// testpmd io forwarding between the scenario's two ports, a core and a queue pair per
/// port for each dataplane core.
fn testpmd_command(setup: &Setup<'_>, vhu0: &Path, vhu1: &Path) -> Command {
    let queues = setup.cores();
    let (rx, tx) = match setup.topology {
        Topology::Replay => (
            format!(
                "net_pcap0,{}infinite_rx=1",
                format!("rx_pcap={},", setup.pcap.display()).repeat(queues)
            ),
            "net_null0,no-rx=1".to_owned(),
        ),
        Topology::Pvp => (
            format!("net_vhost0,iface={},queues={queues}", vhu0.display()),
            format!("net_vhost1,iface={},queues={queues}", vhu1.display()),
        ),
    };
    // The main lcore on CPU 0 (it sleeps), a forwarding lcore on each dataplane CPU.
    let lcores: Vec<String> = std::iter::once(0)
        .chain(setup.cpus.iter().copied())
        .enumerate()
        .map(|(lcore, cpu)| format!("{lcore}@{cpu}"))
        .collect();
    let mut command = Command::new("dpdk-testpmd");
    command.args([
        "--lcores",
        &lcores.join(","),
        "--no-pci",
        "--in-memory",
        "--file-prefix",
        TESTPMD_PREFIX,
        "-m",
        "512",
        "--vdev",
        &rx,
        "--vdev",
        &tx,
        "--",
        "--forward-mode=io",
        "--port-topology=chained",
        &format!("--nb-cores={}", setup.cores()),
        &format!("--rxq={queues}"),
        &format!("--txq={queues}"),
        "--auto-start",
        "--stats-period=3600",
        "--record-core-cycles",
        // The pcap's frames stay allocated (infinite_rx keeps a copy of each, per queue).
        &format!(
            "--total-num-mbufs={}",
            crate::scenario::replay_pool(setup.flows, queues)
        ),
    ]);
    if setup.scenario.needs_jumbo(setup.size) {
        command.arg("--max-pkt-len=9000");
    }
    command
}

fn start_ovs(setup: &Setup<'_>) -> anyhow::Result<Running> {
    let ovs = Ovs::start(setup.work, setup.logs, setup.cpus)?;
    let ports = match ovs.configure(setup) {
        Ok(ports) => ports,
        Err(e) => {
            ovs.stop();
            return Err(e);
        }
    };
    Ok(Running {
        cpu_at_open: None,
        switch: Switch::Ovs,
        prefix: crate::ovs::PREFIX.to_owned(),
        sink: ports.sink,
        generator_serves: ports.vhost.is_some(),
        vhost: ports.vhost,
        churn_target: None,
        churn: None,
        process: None,
        ovs: Some(ovs),
    })
}

/// Cycles per packet from testpmd's `CPU cycles/packet=C` or tenetd's `RESULT ...
/// cycles_per_pkt=C`.
fn cycles_from_log(log: &str) -> Option<f64> {
    log.lines().rev().find_map(|line| {
        let value = line
            .split_once("CPU cycles/packet=")
            .or_else(|| {
                line.starts_with("RESULT ")
                    .then(|| line.split_once("cycles_per_pkt="))
                    .flatten()
            })?
            .1;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// tenetd did the scenario's work when it dropped nothing for a reason of its own (it
/// prints every drop reason with a count when it stops). A full output ring is the
/// receiver's pace, not a decision: that loss shows in the `lost` column instead.
fn tenet_check(log: &str) -> (bool, String) {
    let drops: Vec<&str> = log
        .lines()
        .filter(|l| l.trim_start().starts_with("drop "))
        .filter(|l| !l.contains("tx-refused") && !l.contains("ring-full"))
        .collect();
    if !log.lines().any(|l| l.starts_with("RESULT ")) {
        return (false, "tenetd did not stop cleanly".to_owned());
    }
    if drops.is_empty() {
        (true, String::new())
    } else {
        (false, drops.join("; "))
    }
}

/// The CPUs of `cores` dataplane cores on this machine, or why it cannot give them.
pub fn check_cores(cores: usize, pvp: bool) -> anyhow::Result<Vec<usize>> {
    let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
    dataplane_cpus(cores, pvp, machine)
}

/// CPUs 1 to `cores` while CPU 0 is free for the control threads (and, in the PVP
/// topology, the generator). Replay has no generator: it may take every CPU, the first
/// worker then sharing CPU 0 with the control threads, which sleep, as testpmd's main
/// lcore does beside its first forwarding core.
fn dataplane_cpus(cores: usize, pvp: bool, machine: usize) -> anyhow::Result<Vec<usize>> {
    if cores == 0 {
        bail!("cores: at least 1");
    }
    if cores < machine {
        return Ok((1..=cores).collect());
    }
    if cores == machine && !pvp {
        return Ok((0..cores).collect());
    }
    bail!(
        "cores: {cores} dataplane cores need {} CPUs (CPU 0 keeps the {}); this machine has {machine}",
        if pvp { cores + 1 } else { cores },
        if pvp { "generator" } else { "control threads" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_thread_is_the_one_that_spun() {
        let before = thread_times(std::process::id());
        let opened = Instant::now();
        let (spun, measured) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
        let after = std::thread::scope(|scope| {
            scope.spawn(|| {
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                spun.wait();
                measured.wait();
            });
            spun.wait();
            let after = thread_times(std::process::id());
            measured.wait();
            after
        });
        // The spinner began after `before`: it counts from zero.
        let mut before = before;
        for tid in after.keys() {
            before.entry(*tid).or_insert(0);
        }
        let cpu = busiest_thread(&before, &after, opened.elapsed()).unwrap();
        assert!((0.3..=1.1).contains(&cpu), "{cpu}");
    }

    #[test]
    fn cycles_are_read_from_either_switch() {
        assert_eq!(
            cycles_from_log("x\nCPU cycles/packet=33.71 (total cycles=1)\n"),
            Some(33.71)
        );
        assert_eq!(
            cycles_from_log("RESULT pkts=5 seconds=1 cycles_per_pkt=68.9\n"),
            Some(68.9)
        );
        assert_eq!(cycles_from_log("nothing"), None);
    }

    #[test]
    fn testpmd_gets_a_core_and_queue_per_dataplane_core() {
        let scenario = crate::scenario::find("l2").unwrap();
        let size = Size::Fixed(64);
        let setup = Setup {
            scenario,
            topology: Topology::Replay,
            size: &size,
            flows: 256,
            pcap: Path::new("/tmp/in.pcap"),
            work: Path::new("/tmp"),
            logs: Path::new("/tmp"),
            tag: "t",
            configs: Path::new("/tmp"),
            tenetd: Path::new("/bin/true"),
            cpus: &[1, 2],
            churn: false,
        };
        let args: Vec<String> = testpmd_command(&setup, Path::new("a"), Path::new("b"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let has = |a: &str| args.iter().any(|x| x == a);
        assert!(has("0@0,1@1,2@2") && has("--nb-cores=2") && has("--rxq=2") && has("--txq=2"));
        assert!(has(
            "net_pcap0,rx_pcap=/tmp/in.pcap,rx_pcap=/tmp/in.pcap,infinite_rx=1"
        ));
        let two = Setup {
            cpus: &[0, 1],
            ..setup
        };
        let args: Vec<String> = testpmd_command(&two, Path::new("a"), Path::new("b"))
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().any(|x| x == "0@0,1@0,2@1"), "{args:?}");
    }

    #[test]
    fn cores_take_cpus_after_the_first_unless_replay_takes_them_all() {
        assert_eq!(dataplane_cpus(1, false, 2).unwrap(), vec![1]);
        assert_eq!(dataplane_cpus(2, false, 2).unwrap(), vec![0, 1]);
        assert_eq!(dataplane_cpus(2, false, 4).unwrap(), vec![1, 2]);
        assert!(dataplane_cpus(0, false, 2).is_err());
        let e = dataplane_cpus(2, true, 2).unwrap_err().to_string();
        assert!(e.contains("need 3 CPUs") && e.contains("generator"), "{e}");
        assert!(dataplane_cpus(3, false, 2)
            .unwrap_err()
            .to_string()
            .contains("this machine has 2"));
    }

    #[test]
    fn tenet_is_checked_by_its_drop_counters() {
        assert!(tenet_check("RESULT pkts=1 seconds=1 cycles_per_pkt=1\n").0);
        let (ok, note) = tenet_check("  drop no-output 12\nRESULT pkts=1\n");
        assert!(!ok && note.contains("no-output"));
        assert!(tenet_check("drop tx-refused 9\nRESULT pkts=1\n").0);
        assert!(!tenet_check("killed").0);
    }
}
