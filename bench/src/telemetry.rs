//! A client of DPDK's telemetry socket (`/var/run/dpdk/<prefix>/dpdk_telemetry.v2`),
//! which testpmd, OVS with DPDK and tenetd all expose: the runner reads every switch's
//! sink counter the same way, from outside the switch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};

/// A connection to one process's telemetry socket.
pub struct Telemetry {
    socket: Socket,
    path: PathBuf,
    buf: Vec<u8>,
}

impl Telemetry {
    /// Connects and reads the greeting.
    pub fn connect(path: &Path) -> anyhow::Result<Self> {
        let socket = Socket::new(Domain::UNIX, Type::SEQPACKET, None)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket
            .connect(&SockAddr::unix(path)?)
            .with_context(|| format!("connecting to {}", path.display()))?;
        let mut t = Self {
            socket,
            path: path.to_owned(),
            buf: vec![0; 1 << 16],
        };
        t.receive().context("telemetry greeting")?;
        Ok(t)
    }

    /// The telemetry socket of the DPDK process with file prefix `prefix`.
    pub fn path_of(prefix: &str) -> PathBuf {
        Path::new("/var/run/dpdk")
            .join(prefix)
            .join("dpdk_telemetry.v2")
    }

    fn receive(&mut self) -> anyhow::Result<Value> {
        let n = std::io::Read::read(&mut &self.socket, &mut self.buf)
            .with_context(|| format!("reading {}", self.path.display()))?;
        serde_json::from_slice(&self.buf[..n]).context("telemetry answer is not JSON")
    }

    /// Runs `command` (`/ethdev/stats,1`) and returns its value.
    pub fn query(&mut self, command: &str) -> anyhow::Result<Value> {
        std::io::Write::write_all(&mut &self.socket, command.as_bytes())
            .with_context(|| format!("writing to {}", self.path.display()))?;
        let mut answer = self.receive()?;
        let key = command.split(',').next().unwrap_or(command);
        Ok(answer.get_mut(key).map(Value::take).unwrap_or(Value::Null))
    }

    /// The port id of the started device `name` (or, with a name ending in `*`, the
    /// first started device whose name starts with the rest).
    pub fn started_port(&mut self, name: &str) -> anyhow::Result<Option<u64>> {
        let ports = self.query("/ethdev/list")?;
        for id in ports
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
        {
            let info = self.query(&format!("/ethdev/info,{id}"))?;
            let dev = info.get("name").and_then(Value::as_str).unwrap_or("");
            let matches = match name.strip_suffix('*') {
                Some(prefix) => dev.starts_with(prefix),
                None => dev == name,
            };
            if matches && info.get("dev_started").and_then(Value::as_u64) == Some(1) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// A counter (`opackets`, `ipackets`, ...) of port `id`.
    pub fn counter(&mut self, id: u64, counter: &str) -> anyhow::Result<u64> {
        self.query(&format!("/ethdev/stats,{id}"))?
            .get(counter)
            .and_then(Value::as_u64)
            .with_context(|| format!("no {counter} in the stats of port {id}"))
    }
}

/// Waits until the process with file prefix `prefix` serves telemetry and has started
/// the device `name`; gives up after `timeout` or when `alive` says the process ended.
pub fn wait_for_port(
    prefix: &str,
    name: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> anyhow::Result<(Telemetry, u64)> {
    let path = Telemetry::path_of(prefix);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if !alive() {
            bail!("the switch exited before its port {name} started");
        }
        match Telemetry::connect(&path).and_then(|mut t| Ok((t.started_port(name)?, t))) {
            Ok((Some(id), t)) => return Ok((t, id)),
            Ok((None, _)) => last = Some(format!("{name} not started yet")),
            Err(e) => last = Some(format!("{e:#}")),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "no started port {name} behind {} within {timeout:?} ({})",
        path.display(),
        last.unwrap_or_default()
    )
}

/// Packet rates of a counter over a window, sampled every `interval`.
#[derive(Debug, Clone)]
pub struct Window {
    /// Mean rate over the window, packets per second.
    pub pps: f64,
    /// The lowest and highest rate of one interval.
    pub min_pps: f64,
    /// See `min_pps`.
    pub max_pps: f64,
    /// Packets counted in the window.
    pub packets: u64,
    /// Window length, seconds.
    pub seconds: f64,
}

/// Samples `counter` of port `id` for `seconds`, once per `interval`.
pub fn sample(
    telemetry: &mut Telemetry,
    id: u64,
    counter: &str,
    seconds: f64,
    interval: Duration,
) -> anyhow::Result<Window> {
    let read = |t: &mut Telemetry| -> anyhow::Result<(Instant, u64)> {
        let before = Instant::now();
        let value = t.counter(id, counter)?;
        let after = Instant::now();
        Ok((before + (after - before) / 2, value))
    };
    let (t0, c0) = read(telemetry)?;
    let (mut tp, mut cp) = (t0, c0);
    let steps = ((seconds / interval.as_secs_f64()).round() as u32).max(1);
    let (mut min, mut max) = (f64::MAX, 0f64);
    for k in 1..=steps {
        let at = t0 + interval * k;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (t, c) = read(telemetry)?;
        let rate = c.saturating_sub(cp) as f64 / (t - tp).as_secs_f64();
        min = min.min(rate);
        max = max.max(rate);
        (tp, cp) = (t, c);
    }
    let secs = (tp - t0).as_secs_f64();
    Ok(Window {
        pps: cp.saturating_sub(c0) as f64 / secs,
        min_pps: min,
        max_pps: max,
        packets: cp.saturating_sub(c0),
        seconds: secs,
    })
}
