//! DPDK's own log lines (the EAL's, the PMDs') through tenet's log, with their level
//! and target `dpdk`: one format for everything tenetd says (text on a terminal, JSON
//! for a log shipper), instead of DPDK writing plain lines into the same stderr.

use std::sync::Mutex;

/// Bytes of a line DPDK has not finished yet (its stream is line-buffered, so this
/// holds only what one long message left over).
static PARTIAL: Mutex<Vec<u8>> = Mutex::new(Vec::new());

// RTE_LOG_* levels (rte_log.h): EMERG 1 ... DEBUG 8.
const RTE_LOG_ERR: i32 = 4;
const RTE_LOG_WARNING: i32 = 5;
const RTE_LOG_INFO: i32 = 7;

extern "C" fn take_line(level: i32, bytes: *const std::ffi::c_char, len: usize) {
    if bytes.is_null() {
        return;
    }
    // SAFETY: the shim passes the stream's buffer and its length, valid for this call.
    let bytes = unsafe { std::slice::from_raw_parts(bytes.cast::<u8>(), len) };
    let Ok(mut partial) = PARTIAL.lock() else {
        return;
    };
    partial.extend_from_slice(bytes);
    while let Some(end) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..end]);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        match level {
            l if l <= RTE_LOG_ERR => tracing::error!(target: "dpdk", "{text}"),
            RTE_LOG_WARNING => tracing::warn!(target: "dpdk", "{text}"),
            l if l <= RTE_LOG_INFO => tracing::info!(target: "dpdk", "{text}"),
            _ => tracing::debug!(target: "dpdk", "{text}"),
        }
    }
}

/// Sends DPDK's log into tenet's from now on (before the EAL starts, so its first
/// words go there too). DPDK keeps writing to stderr if the stream cannot be made.
pub(super) fn route_to_tracing() {
    // SAFETY: take_line matches the shim's sink type and lives as long as the process.
    if unsafe { dpdk_sys::tenet_log_to(Some(take_line)) } != 0 {
        tracing::warn!("DPDK's log could not be redirected: it writes to stderr itself");
    }
}
