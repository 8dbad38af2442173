//! Processes the runner starts (switches, generators, OVS daemons): each in its own
//! process group with its output in a log file, stopped the way the shared harnesses
//! stop a switch (SIGINT, then SIGTERM, then SIGKILL to the group), by the PID the
//! runner started, never by name.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A running child process.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` as `name`, stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
            log: log.to_owned(),
        })
    }

    /// Its PID (also its process group).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of its log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops it: SIGINT to its group, SIGTERM after 5 s, SIGKILL after 3 more.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let pid = self.pid();
        self.child.as_ref()?;
        for (signal, grace) in [("INT", 5), ("TERM", 3), ("KILL", 2)] {
            signal_group(pid, signal);
            if let Some(status) = self.wait_for_exit(Duration::from_secs(grace)) {
                self.child = None;
                return Some(status);
            }
            eprintln!("tenet-bench: {} (pid {pid}) ignored SIG{signal}", self.name);
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}

/// Sends `signal` to process group `pgid` with kill(1): no unsafe code here, and the
/// group is one this runner made.
fn signal_group(pgid: u32, signal: &str) {
    if pgid == 0 {
        return;
    }
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Runs a command to completion, failing with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
