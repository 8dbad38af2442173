//! Changes through tenetd's API while it forwards (`tenet-bench run --churn RATE`):
//! tenants and endpoints added and deleted at a steady rate during the measured window,
//! each one a new snapshot of the tables, so a run shows whether publishing tables
//! costs traffic (the row's check counts every drop, the PVP loop every lost frame).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::client::Client;

/// Where the changes go: a tenant of the scenario's `sink` port gets endpoints there
/// (when the sink carries one: an uplink carries none, and then tenants alone change).
pub struct Target {
    /// tenetd's API socket.
    pub socket: PathBuf,
    /// A tenant the port `sink` carries.
    pub tenant: Option<String>,
}

/// What a churn did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Done {
    /// Changes tenetd applied.
    pub applied: u64,
    /// Changes it refused or that failed (the first reason is logged).
    pub failed: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

/// A churn running on a thread of its own until [`Churn::finish`].
pub struct Churn {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Done>,
}

impl Churn {
    /// Starts changing at `rate` changes a second (as many as the API takes, when it
    /// cannot keep up).
    pub fn start(target: Target, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || run(&target, rate, &stop)
        });
        Self { stop, thread }
    }

    /// Stops it and says what it did.
    pub fn finish(self) -> Done {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The changes of step `k`: a tenant added, an endpoint added to the target tenant,
/// both deleted again. Ids and MACs are far from any scenario's.
fn changes(target: &Target, k: u64) -> Vec<(&'static str, String, String)> {
    let name = format!("churn{k}");
    let mac = format!(
        "02:c4:{:02x}:{:02x}:{:02x}:{:02x}",
        (k >> 24) & 0xff,
        (k >> 16) & 0xff,
        (k >> 8) & 0xff,
        k & 0xff
    );
    let tenant = (
        "POST",
        "/v1/tenants".to_owned(),
        format!(r#"{{"name":"{name}","id":{}}}"#, 3_000_000_000u64 + k),
    );
    let untenant = ("DELETE", format!("/v1/tenants/{name}"), String::new());
    let Some(owner) = &target.tenant else {
        return vec![tenant, untenant];
    };
    vec![
        tenant,
        (
            "POST",
            "/v1/endpoints".to_owned(),
            format!(r#"{{"tenant":"{owner}","mac":"{mac}","port":"sink"}}"#),
        ),
        (
            "DELETE",
            format!("/v1/endpoints/{owner}/{}", mac.replace(':', "%3A")),
            String::new(),
        ),
        untenant,
    ]
}

fn run(target: &Target, rate: u32, stop: &AtomicBool) -> Done {
    let client = Client::new(&target.socket);
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut done = Done::default();
    let mut next = started;
    let mut step = 0u64;
    'steps: while !stop.load(Ordering::Relaxed) {
        for (method, path, body) in changes(target, step) {
            if stop.load(Ordering::Relaxed) {
                break 'steps;
            }
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += interval;
            match client.send(method, &path, body.as_bytes()) {
                Ok(answer) if answer.ok() => done.applied += 1,
                outcome => {
                    if done.failed == 0 {
                        let why = match outcome {
                            Ok(answer) => answer.refusal(),
                            Err(e) => format!("{e:#}"),
                        };
                        eprintln!("tenet-bench churn: {method} {path}: {why}");
                    }
                    done.failed += 1;
                }
            }
        }
        step += 1;
    }
    done.seconds = started.elapsed().as_secs_f64();
    done
}

/// The config `text` with its API on `socket`: the `[control]` table the bench configs
/// end with gets `api_socket`.
pub fn with_api(text: &str, socket: &Path) -> anyhow::Result<String> {
    let line = format!("api_socket = \"{}\"", socket.display());
    anyhow::ensure!(
        text.lines().any(|l| l.trim() == "[control]"),
        "the config has no [control] table to put the API in"
    );
    Ok(text
        .lines()
        .flat_map(|l| {
            let extra = (l.trim() == "[control]").then(|| line.clone());
            std::iter::once(l.to_owned()).chain(extra)
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// A tenant the config's `sink` port carries (an access port's, a trunk's first).
pub fn sink_tenant(text: &str) -> Option<String> {
    let mut in_sink = false;
    let mut in_port = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_port = line == "[[port]]";
            in_sink = false;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "name" if in_port => in_sink = value == "\"sink\"",
            "tenant" if in_sink => return Some(value.trim_matches('"').to_owned()),
            "tenants" if in_sink => {
                let first = value.trim_start_matches('[').split(',').next()?;
                return Some(first.trim().trim_matches(['"', ']', ' ']).to_owned());
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_goes_into_the_control_table_and_the_sinks_tenant_is_found() {
        let text = "[[tenant]]\nname = \"in\"\n\n[[port]]\nname = \"replay\"\ntenant = \"in\"\n\n\
                    [[port]]\nname = \"sink\"\nrole = \"access\"\ntenant = \"out\"\n\n[control]\npersist = false\n";
        let with = with_api(text, Path::new("/tmp/a.sock")).unwrap();
        assert!(with.contains("[control]\napi_socket = \"/tmp/a.sock\"\npersist = false"));
        assert_eq!(sink_tenant(text).as_deref(), Some("out"));
        let trunk = "[[port]]\nname = \"sink\"\nrole = \"trunk\"\ntenants = [\"t0\", \"t1\"]\n";
        assert_eq!(sink_tenant(trunk).as_deref(), Some("t0"));
        assert!(with_api("[[tenant]]\n", Path::new("/x")).is_err());
        assert_eq!(
            sink_tenant("[[port]]\nname = \"p\"\ntenant = \"a\"\n"),
            None
        );
    }

    #[test]
    fn each_step_adds_and_deletes_the_same_tenant_and_endpoint() {
        let mut target = Target {
            socket: PathBuf::from("/x"),
            tenant: Some("bench".into()),
        };
        let steps = changes(&target, 0x0102);
        let [tenant, endpoint, unendpoint, untenant] = &steps[..] else {
            panic!("four changes a step");
        };
        assert!(tenant.2.contains("\"churn258\"") && untenant.1.ends_with("/churn258"));
        assert!(endpoint.2.contains("02:c4:00:00:01:02"));
        assert_eq!(
            unendpoint.1,
            "/v1/endpoints/bench/02%3Ac4%3A00%3A00%3A01%3A02"
        );
        target.tenant = None;
        assert_eq!(
            changes(&target, 1).len(),
            2,
            "tenants alone without a sink tenant"
        );
    }
}
