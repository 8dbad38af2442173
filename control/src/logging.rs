//! tenetd's log lines and their filter, which an operator changes while tenetd runs
//! (`PUT /v1/log`, `tenetctl log set`) to look closer at one module without a restart
//! that would drop the state being looked at.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Text for people.
    Text,
    /// One JSON object per line, for a log shipper.
    Json,
}

/// The filter in force, and the handle that swaps it.
struct Live {
    handle: reload::Handle<EnvFilter, Registry>,
    filter: Mutex<String>,
}

static LIVE: OnceLock<Live> = OnceLock::new();

/// Checks `filter` (`info,control=debug`), naming the fault.
pub fn parse(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("`{filter}` is not a log filter: {e}"))
}

/// Sends this process's log lines to stderr through `filter`, changeable later with
/// [`set`]. Colour codes only for a person at a terminal, never a file or the journal.
pub fn install(filter: &str, format: Format) -> Result<(), String> {
    let (layer, handle) = reload::Layer::new(parse(filter)?);
    let lines = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(layer);
    let installed = match format {
        Format::Text => registry.with(lines).try_init(),
        Format::Json => registry.with(lines.json()).try_init(),
    };
    installed.map_err(|e| format!("installing the log: {e}"))?;
    let _ = LIVE.set(Live {
        handle,
        filter: Mutex::new(filter.to_owned()),
    });
    Ok(())
}

/// The filter in force (`None`: this process's log is not [`install`]ed).
pub fn current() -> Option<String> {
    let live = LIVE.get()?;
    Some(
        live.filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    )
}

/// Puts `filter` in force; refused, naming why, when it is no filter (or there is no
/// installed log to change).
pub fn set(filter: &str) -> Result<(), String> {
    let parsed = parse(filter)?;
    let live = LIVE
        .get()
        .ok_or("this process's log filter cannot be changed")?;
    live.handle
        .reload(parsed)
        .map_err(|e| format!("changing the log filter: {e}"))?;
    // Records of crates that log through `log` (netlink's) were capped at the filter
    // tenetd started with; the filter in force decides now.
    log::set_max_level(log::LevelFilter::Trace);
    *live.filter.lock().unwrap_or_else(|e| e.into_inner()) = filter.to_owned();
    tracing::info!(filter, "log filter changed");
    Ok(())
}
