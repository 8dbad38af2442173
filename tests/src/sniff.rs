//! Whose frames reach a container: a sniffer on its interface, pings that carry their
//! tenant's mark, and the judgement of what the sniffer saw.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{frames_tool, Netns};

/// The mark tenant `tenant` (0, 1, ...) puts in its pings' payload.
pub fn mark(tenant: usize) -> [u8; 4] {
    [0x7e, 0x57, 0x00, 0xa0 + tenant as u8]
}

/// A tenant's router MAC as tenet derives it from the tenant id.
pub fn router_mac(id: u32) -> [u8; 6] {
    let b = id.to_be_bytes();
    [0x02, 0x7e, b[0], b[1], b[2], b[3]]
}

/// `aa:bb:...` as bytes.
pub fn mac_bytes(text: &str) -> [u8; 6] {
    dataplane::packet::parse_mac(text).expect("a MAC")
}

/// Pings `target` from `ns` every `interval` seconds, the payload marked with
/// `tenant`'s mark; runs until the child is killed.
pub fn ping_marked(ns: &Netns, tenant: usize, target: &str, interval: &str) -> Child {
    let pattern: String = mark(tenant).iter().map(|b| format!("{b:02x}")).collect();
    ns.command("ping")
        .args(["-i", interval, "-W", "1", "-p", &pattern, target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ping runs")
}

/// Every frame a container's `eth0` receives.
pub struct Sniffer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sniffer {
    /// Starts sniffing `eth0` in `ns`; returns once it listens.
    pub fn start(ns: &Netns) -> Self {
        let mut child = ns
            .command("python3")
            .arg(frames_tool())
            .args(["sniff", "eth0", "0", "--timeout", "900"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sniffer runs");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready, started) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line == "ready" {
                    let _ = ready.send(());
                    continue;
                }
                sink.lock().expect("sniffer lines").push(line);
            }
        });
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("sniffer ready");
        Self { child, lines }
    }

    /// Stops and returns what it saw.
    pub fn frames(mut self) -> Vec<Vec<u8>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().expect("sniffer lines").clone();
        lines.iter().map(|hex| crate::decode_hex(hex)).collect()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a container of `tenant` received, judged: every frame carries the tenant's
/// mark, or comes from one of `own_macs` (its tenant's containers and router); a frame
/// with another tenant's mark (of `tenants`) or from anyone else is a leak, returned
/// as an error. Otherwise the marked frames counted: (from inside, from `outside`).
pub fn judge(
    frames: &[Vec<u8>],
    tenant: usize,
    tenants: usize,
    own_macs: &[[u8; 6]],
    outside: [u8; 4],
) -> Result<(usize, usize), String> {
    let (mut inside, mut from_outside) = (0, 0);
    for f in frames {
        let has = |m: [u8; 4]| f.windows(4).any(|w| w == m);
        if let Some(other) = (0..tenants).find(|&t| t != tenant && has(mark(t))) {
            return Err(format!("a packet of tenant {other}: {f:02x?}"));
        }
        if has(mark(tenant)) {
            if f.len() > 30 && f[26..30] == outside {
                from_outside += 1;
            } else {
                inside += 1;
            }
            continue;
        }
        let src: [u8; 6] = f
            .get(6..12)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("a runt frame: {f:02x?}"))?;
        if !own_macs.contains(&src) {
            return Err(format!("a frame from {src:02x?}: {f:02x?}"));
        }
    }
    Ok((inside, from_outside))
}
