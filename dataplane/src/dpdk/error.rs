//! DPDK failures as values: which call failed, on what, and DPDK's (or the kernel's)
//! own words for why.

use std::ffi::CStr;

/// A failed DPDK call.
#[derive(Debug, thiserror::Error)]
#[error("{call}({subject}) failed: {reason} (errno {errno})")]
pub struct DpdkError {
    /// The DPDK function that failed.
    pub call: &'static str,
    /// What it was called on (a port, a device string, a pool name).
    pub subject: String,
    /// The positive errno DPDK reported.
    pub errno: i32,
    /// `rte_strerror(errno)`.
    pub reason: String,
}

impl DpdkError {
    /// Builds an error from a negative return code (`-errno`) or, when the call returns
    /// a null pointer or zero instead, from `rte_errno`.
    pub(crate) fn new(call: &'static str, subject: impl Into<String>, code: i32) -> Self {
        let errno = if code < 0 { -code } else { rte_errno() };
        Self {
            call,
            subject: subject.into(),
            errno,
            reason: strerror(errno),
        }
    }

    /// An error that DPDK did not report through errno (a precondition tenet checks).
    pub(crate) fn invalid(call: &'static str, subject: impl Into<String>, reason: &str) -> Self {
        Self {
            call,
            subject: subject.into(),
            errno: libc::EINVAL,
            reason: reason.to_owned(),
        }
    }
}

impl DpdkError {
    /// A failed system call made for a port tenet serves itself, with the kernel's
    /// errno (read right after the call).
    pub(crate) fn os(call: &'static str, subject: impl Into<String>) -> Self {
        let err = std::io::Error::last_os_error();
        Self {
            call,
            subject: subject.into(),
            errno: err.raw_os_error().unwrap_or(0),
            reason: err.to_string(),
        }
    }
}

pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads DPDK's thread-local errno through the shim; no preconditions.
    unsafe { dpdk_sys::tenet_errno() }
}

fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
    // string that stays valid until the next call on this thread; it is copied at once.
    let text = unsafe { CStr::from_ptr(dpdk_sys::rte_strerror(errno)) };
    text.to_string_lossy().into_owned()
}
