//! The IPAM plugin a network config names (`host-local`), run as a runtime would;
//! without one, addresses come from tenetd ([`crate::addresses`]). And the lock the
//! plugin's own files are kept under.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{CniError, Env};

/// Where the plugin keeps its files by default.
pub const DATA_DIR: &str = "/var/lib/tenet/cni/networks";

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
