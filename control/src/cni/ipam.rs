//! Addresses for containers: the plugin's own allocator over the tenant's subnet, or
//! the standard `host-local` plugin when the network config names it.
//!
//! The own allocator keeps one file per address in use under
//! `<data_dir>/<network>/` (host-local's layout: the file's name is the address, its
//! content the container id and interface), behind an exclusive lock on `lock`, so
//! concurrent ADDs never hand out one address twice and a crash loses nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dataplane::packet::Ipv4Cidr;
use serde_json::Value;

use super::{CniError, Env};

/// Where the allocator keeps its files by default.
pub const DATA_DIR: &str = "/var/lib/tenet/cni/networks";

/// A pool of addresses: the subnet's hosts but its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// The subnet.
    pub subnet: Ipv4Cidr,
    /// The gateway (never handed out).
    pub gateway: Option<Ipv4Addr>,
}

impl Pool {
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let base = u32::from(self.subnet.network());
        let size = 1u64 << (32 - u32::from(self.subnet.prefix));
        // The network and broadcast addresses are nobody's (a /31 or /32 has none).
        let (first, last) = if size > 2 {
            (1, size - 2)
        } else {
            (0, size - 1)
        };
        (first..=last)
            .map(move |i| Ipv4Addr::from(base + i as u32))
            .filter(move |ip| Some(*ip) != self.gateway)
    }

    /// Whether `ip` is in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
    }
}

/// The plugin's own allocator for one network.
pub struct Allocator {
    dir: PathBuf,
}

/// Holds `path` (made, with its directory, if missing) locked until the file is
/// dropped: plugin calls for several containers run at once.
pub(super) fn lock_file(path: &Path) -> Result<File, CniError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| CniError::io(dir, e))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| CniError::io(path, e))?;
    file.lock().map_err(|e| CniError::io(path, e))?;
    Ok(file)
}

/// Who holds an address: `container\nifname`.
fn owner(env: &Env) -> String {
    format!("{}\n{}", env.container_id, env.ifname)
}

impl Allocator {
    /// The allocator of network `name` under `data_dir`.
    pub fn new(data_dir: &Path, name: &str) -> Self {
        Self {
            dir: data_dir.join(name),
        }
    }

    fn lock(&self) -> Result<File, CniError> {
        lock_file(&self.dir.join("lock"))
    }

    /// The address `env`'s container holds, if any.
    pub fn held(&self, env: &Env) -> Result<Option<Ipv4Addr>, CniError> {
        let _lock = self.lock()?;
        Ok(self.find(env))
    }

    fn find(&self, env: &Env) -> Option<Ipv4Addr> {
        let me = owner(env);
        std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
            .find(|ip| {
                std::fs::read_to_string(self.dir.join(ip.to_string())).is_ok_and(|c| c.trim() == me)
            })
    }

    /// An address from `pool` for `env`'s container (the one it holds already, after
    /// a retried ADD), starting after the last one handed out.
    pub fn allocate(&self, env: &Env, pool: &Pool) -> Result<Ipv4Addr, CniError> {
        let _lock = self.lock()?;
        if let Some(ip) = self.find(env) {
            return Ok(ip);
        }
        let last_path = self.dir.join("last_reserved_ip");
        let last: Option<Ipv4Addr> = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let hosts: Vec<Ipv4Addr> = pool.hosts().collect();
        let start = last
            .and_then(|l| hosts.iter().position(|h| *h == l))
            .map_or(0, |i| i + 1);
        // The lease is written whole aside, then linked into place: the link takes the
        // address or finds it taken, and a crash never leaves a lease without its
        // holder (an address nobody could give back).
        let claim = self.dir.join(format!(".claim-{}", std::process::id()));
        {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&claim)
                .map_err(|e| CniError::io(&claim, e))?;
            file.write_all(owner(env).as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| CniError::io(&claim, e))?;
        }
        let claimed = (|| {
            for ip in hosts.iter().cycle().skip(start).take(hosts.len()) {
                let path = self.dir.join(ip.to_string());
                // An empty lease is what an older tenet-cni left when it crashed
                // between creating and writing one: nobody holds that address.
                if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                    let _ = std::fs::remove_file(&path);
                }
                match std::fs::hard_link(&claim, &path) {
                    Ok(()) => return Ok(Some(*ip)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(CniError::io(&path, e)),
                }
            }
            Ok(None)
        })();
        let _ = std::fs::remove_file(&claim);
        if let Some(ip) = claimed? {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| CniError::io(&self.dir, e))?;
            crate::store::write_private(&last_path, ip.to_string().as_bytes())
                .map_err(|e| CniError::new(super::code::IO_FAILURE, format!("{e:#}")))?;
            return Ok(ip);
        }
        Err(CniError::new(
            super::code::TRY_AGAIN_LATER,
            format!(
                "no free address in {} (every one is allocated)",
                pool.subnet
            ),
        ))
    }

    /// Gives back what `env`'s container holds (nothing held is fine).
    pub fn release(&self, env: &Env) -> Result<(), CniError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let _lock = self.lock()?;
        if let Some(ip) = self.find(env) {
            let path = self.dir.join(ip.to_string());
            std::fs::remove_file(&path).map_err(|e| CniError::io(&path, e))?;
        }
        Ok(())
    }

    /// The containers (id, interface) holding an address.
    pub fn holders(&self) -> Result<Vec<(String, String)>, CniError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(Vec::new());
        };
        Ok(entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
            })
            .filter_map(|e| {
                let text = std::fs::read_to_string(e.path()).ok()?;
                let (container, ifname) = text.trim().split_once('\n')?;
                Some((container.to_owned(), ifname.to_owned()))
            })
            .collect())
    }

    /// Addresses in use.
    pub fn in_use(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

/// Runs the IPAM plugin the config names (`host-local`) for `env`'s command, with the
/// whole config on stdin, as a runtime would; returns its result.
pub fn delegate(env: &Env, plugin: &str, config: &Value) -> Result<Value, CniError> {
    if plugin.contains('/') || plugin.is_empty() {
        return Err(CniError::new(
            super::code::INVALID_CONFIG,
            format!("ipam.type: `{plugin}` is not a plugin name"),
        ));
    }
    let binary = env
        .path
        .split(':')
        .map(|dir| Path::new(dir).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                super::code::INVALID_CONFIG,
                format!(
                    "ipam.type: plugin `{plugin}` not found in CNI_PATH ({})",
                    env.path
                ),
            )
        })?;
    let mut child = Command::new(&binary)
        .env("CNI_COMMAND", &env.command)
        .env("CNI_CONTAINERID", &env.container_id)
        .env("CNI_NETNS", &env.netns)
        .env("CNI_IFNAME", &env.ifname)
        .env("CNI_PATH", &env.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(&binary, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(config.to_string().as_bytes())
            .map_err(|e| CniError::io(&binary, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(&binary, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A plugin's error object passes through with its code.
        return Err(serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                Some(CniError::new(
                    v.get("code")?.as_u64()? as u32,
                    format!("{plugin}: {}", v.get("msg")?.as_str()?),
                ))
            })
            .unwrap_or_else(|| {
                CniError::new(
                    super::code::IPAM_FAILED,
                    format!(
                        "{plugin} failed: {}{}",
                        text.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                )
            }));
    }
    if env.command == "DEL" || text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| {
        CniError::new(
            super::code::IPAM_FAILED,
            format!("{plugin} answered no JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str) -> Env {
        Env {
            command: "ADD".to_owned(),
            container_id: id.to_owned(),
            netns: String::new(),
            ifname: "eth0".to_owned(),
            ..Env::default()
        }
    }

    #[test]
    fn hands_out_each_address_once_and_takes_them_back() {
        let dir = std::env::temp_dir().join(format!("tenet-ipam-{}", std::process::id()));
        let a = Allocator::new(&dir, "net");
        let pool = Pool {
            subnet: Ipv4Cidr {
                ip: Ipv4Addr::new(10, 1, 0, 0),
                prefix: 29,
            },
            gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
        };
        // A /29 has 6 hosts; the gateway takes one.
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| a.allocate(&env(&format!("c{i}")), &pool).unwrap())
            .collect();
        assert_eq!(got[0], Ipv4Addr::new(10, 1, 0, 2));
        assert!(!got.contains(&Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(
            a.allocate(&env("c0"), &pool).unwrap(),
            got[0],
            "a retried ADD keeps its address"
        );
        let full = a.allocate(&env("c9"), &pool).unwrap_err();
        assert_eq!(full.code, super::super::code::TRY_AGAIN_LATER);
        a.release(&env("c2")).unwrap();
        a.release(&env("never")).unwrap();
        assert_eq!(a.allocate(&env("c9"), &pool).unwrap(), got[2]);
        assert_eq!(a.in_use(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
