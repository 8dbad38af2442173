//! systemd's service notifications (`sd_notify`), spoken over `$NOTIFY_SOCKET` without
//! libsystemd: `READY=1` once tenetd forwards and its API answers (a `Type=notify`
//! unit's dependents start only then), `WATCHDOG=1` while its control loop runs
//! (`WatchdogSec=`: a control loop stuck for that long gets tenetd restarted, and
//! restarts lose nothing), `STOPPING=1` when it stops. Outside systemd, nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, if it does.
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment systemd gives a `Type=notify` service; `None` without it
    /// (or when the socket cannot be made, said in the log).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let address = match address_of(&path) {
            Ok(address) => address,
            Err(e) => {
                tracing::warn!(socket = ?path, error = %e, "NOTIFY_SOCKET unusable: systemd will not hear from tenetd");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!(error = %e, "no socket for systemd's notifications");
                return None;
            }
        };
        // Pings twice per period, as sd_watchdog_enabled's callers are told to.
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0)
            .map(|usec| Duration::from_micros(usec / 2));
        Some(Self {
            socket,
            address,
            watchdog,
        })
    }

    /// How often to say `WATCHDOG=1`, if systemd watches.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (`READY=1`, ...); a lost notification is logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::warn!(state, error = %e, "systemd notification not sent");
        }
    }
}

/// A path, or an abstract socket name when it starts with `@`.
fn address_of(path: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    match bytes.split_first() {
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name)
        }
        _ => std::os::unix::net::SocketAddr::from_pathname(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_told_apart() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name =
            address_of(std::ffi::OsStr::new("@/org/freedesktop/systemd1/notify")).unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        let path = address_of(std::ffi::OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
