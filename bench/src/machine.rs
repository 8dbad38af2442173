//! What a benchmark run needs of the machine, installed when missing (as the shared
//! harnesses do): DPDK's testpmd, Open vSwitch with DPDK, 2 MiB hugepages.

use std::path::Path;

use anyhow::{bail, Context};

use crate::process;

fn installed(package: &str) -> bool {
    process::run("dpkg-query", &["-W", "-f=${Status}", package])
        .is_ok_and(|s| s.contains("install ok installed"))
}

/// Installs missing packages (unless `install` is false, then names them) and reserves
/// hugepages: `pages` of 2 MiB must be free (a switch takes 512 MiB, the PVP
/// generator 256 more).
pub fn prepare(install: bool, ovs: bool, pages: u64) -> anyhow::Result<()> {
    if process::run("id", &["-u"])
        .map(|s| s.trim() != "0")
        .unwrap_or(true)
    {
        bail!("tenet-bench run needs root (hugepages, vhost-user sockets, OVS)");
    }
    let mut wanted = vec!["dpdk"];
    if ovs {
        wanted.push("openvswitch-switch-dpdk");
    }
    ensure(&wanted, install)?;
    if ovs && !Path::new(crate::ovs::VSWITCHD).exists() {
        bail!(
            "{} is missing (package openvswitch-switch-dpdk)",
            crate::ovs::VSWITCHD
        );
    }
    hugepages(pages)
}

/// Installs what of `packages` is missing (Debian), or says what is when `install` is
/// off.
pub fn ensure(packages: &[&str], install: bool) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !install {
        bail!(
            "missing packages: {} (apt-get install -y {0}, or run without --no-install)",
            missing.join(" ")
        );
    }
    eprintln!("tenet-bench: installing {}", missing.join(" "));
    process::run("apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq"];
    args.extend(&missing);
    let out = std::process::Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .context("running apt-get")?;
    if !out.status.success() {
        bail!(
            "apt-get install {} failed: {}",
            missing.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn hugepages(pages: u64) -> anyhow::Result<()> {
    let nr = "/proc/sys/vm/nr_hugepages";
    let have: u64 = std::fs::read_to_string(nr)?.trim().parse().unwrap_or(0);
    if have < 1024 {
        std::fs::write(nr, "1024").context("reserving hugepages")?;
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/hugepages") && l.contains("hugetlbfs"))
    {
        std::fs::create_dir_all("/dev/hugepages")?;
        process::run("mount", &["-t", "hugetlbfs", "nodev", "/dev/hugepages"])?;
    }
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    if free < pages {
        bail!("only {free} free 2 MiB hugepages; the run needs {pages} (is another DPDK process running?)");
    }
    Ok(())
}
