//! The lab tenet-bench and the end-to-end tests build on: network namespaces standing
//! in for containers and hosts, veth pairs between them, temporary directories, and a
//! real etcd. Everything made here is removed when its guard drops, also when a run or
//! a test fails. Processes are [`crate::process`]'s.

mod etcd;

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;

pub use etcd::{Etcd, EtcdTls};

/// A short name unique to this process and call, for namespaces, interfaces and file
/// prefixes (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{tag}{pid}{seq}")
}

/// A network namespace standing in for a container or a host.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace with loopback up.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let name = unique(tag);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, as CNI's `CNI_NETNS` names it.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside, failing on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `ip` inside.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        self.exec("ip", args)
    }

    /// A command inside, to spawn or run as the caller likes.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Creates a veth pair whose first end has a random interface index.
///
/// DPDK 22.11's af_packet PMD names its fanout group `getpid() ^ ifindex`, and a group
/// is per network namespace: two tenetd processes started a moment apart (consecutive
/// pids) on interfaces made a moment apart (consecutive indexes) pick the same group
/// for different interfaces, and the second attach fails with EINVAL. Random indexes
/// make that a one-in-65536 chance per pair of ports instead of a likely one.
pub fn add_veth(first: &str, second: &str) -> anyhow::Result<()> {
    use std::hash::{BuildHasher, Hasher};
    let mut last = None;
    for _ in 0..8 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let index = (1000 + random % 60_000).to_string();
        let args = [
            "link", "add", first, "index", &index, "type", "veth", "peer", "name", second,
        ];
        match run("ip", &args) {
            Ok(_) => return Ok(()),
            // The index is taken: draw another.
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// A veth from `a` (as `name_a`) to `b` (as `name_b`), both ends up, offloads as the
/// kernel sets them.
pub fn veth_between(a: &Netns, name_a: &str, b: &Netns, name_b: &str) -> anyhow::Result<()> {
    let (ta, tb) = (unique("lva"), unique("lvb"));
    add_veth(&ta, &tb)?;
    run("ip", &["link", "set", &ta, "netns", a.name()])?;
    run("ip", &["link", "set", &tb, "netns", b.name()])?;
    a.ip(&["link", "set", &ta, "name", name_a])?;
    b.ip(&["link", "set", &tb, "name", name_b])?;
    a.ip(&["link", "set", name_a, "up"])?;
    b.ip(&["link", "set", name_b, "up"])?;
    Ok(())
}

/// A veth from `a` (as `name_a`) to the bridge `bridge` in `b`, where its end (`name_b`)
/// becomes a port of the bridge; both ends up.
pub fn veth_to_bridge(
    a: &Netns,
    name_a: &str,
    b: &Netns,
    name_b: &str,
    bridge: &str,
) -> anyhow::Result<()> {
    veth_between(a, name_a, b, name_b)?;
    b.ip(&["link", "set", name_b, "master", bridge])?;
    Ok(())
}

/// A temporary directory removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates it under /tmp.
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(unique(&format!("tenet-{tag}-")));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
