//! Checks made before the EAL starts, so a missing prerequisite gets one clear sentence
//! and the command that fixes it, instead of a DPDK log dump.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use dataplane::dpdk::{Backend, PMD_DIR};

/// A missing prerequisite.
#[derive(Debug, thiserror::Error)]
#[error("{problem}\n  fix: {fix}")]
pub struct Missing {
    /// What is wrong.
    pub problem: String,
    /// The command that fixes it.
    pub fix: String,
}

/// Root, hugepages and the DPDK drivers the given backends need.
pub fn check(memory_mb: u32, in_memory: bool, backends: &[&Backend]) -> Result<(), Missing> {
    check_root()?;
    check_hugepages(memory_mb, in_memory)?;
    check_drivers(backends)
}

fn check_root() -> Result<(), Missing> {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid != 0 {
        return Err(Missing {
            problem: "tenetd needs root (hugepages, raw sockets, vhost sockets)".to_owned(),
            fix: "run it with sudo".to_owned(),
        });
    }
    Ok(())
}

/// Free hugepage memory in MiB, over all page sizes.
pub fn free_hugepages_mb() -> u64 {
    let Ok(dirs) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return 0;
    };
    dirs.filter_map(Result::ok)
        .filter_map(|dir| {
            let name = dir.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let free: u64 = std::fs::read_to_string(dir.path().join("free_hugepages"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some(free * kb / 1024)
        })
        .sum()
}

fn hugetlbfs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false)
}

const HUGEPAGE_FIX: &str = "echo 1024 > /proc/sys/vm/nr_hugepages && mkdir -p /dev/hugepages && (mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages)";

fn check_hugepages(memory_mb: u32, in_memory: bool) -> Result<(), Missing> {
    let free = free_hugepages_mb();
    if free < u64::from(memory_mb) {
        return Err(Missing {
            problem: format!(
                "not enough free hugepages: dataplane.memory_mb is {memory_mb} MiB, {free} MiB are free"
            ),
            fix: HUGEPAGE_FIX.to_owned(),
        });
    }
    if !in_memory && !hugetlbfs_mounted() {
        return Err(Missing {
            problem: "no hugetlbfs is mounted (needed with dataplane.in_memory = false)".to_owned(),
            fix: HUGEPAGE_FIX.to_owned(),
        });
    }
    Ok(())
}

fn check_drivers(backends: &[&Backend]) -> Result<(), Missing> {
    let fix = "apt-get install -y dpdk dpdk-dev libdpdk-dev".to_owned();
    if PMD_DIR.is_empty() || !Path::new(PMD_DIR).is_dir() {
        return Err(Missing {
            problem: format!(
                "DPDK's driver directory {PMD_DIR:?} is missing: DPDK is not installed"
            ),
            fix,
        });
    }
    for backend in backends {
        for file in backend.driver_files() {
            if !Path::new(PMD_DIR).join(file).exists() {
                return Err(Missing {
                    problem: format!(
                        "DPDK driver {file} for backend `{}` is not in {PMD_DIR}",
                        backend.kind()
                    ),
                    fix,
                });
            }
        }
    }
    Ok(())
}
