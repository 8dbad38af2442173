//! EAL initialisation from a typed options struct, and registration of worker threads as
//! EAL threads (so they get an lcore id and with it the mempool's per-core cache).

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::DpdkError;

static INITIALISED: AtomicBool = AtomicBool::new(false);
static RUNTIME_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

extern "C" fn remove_runtime_dir_at_exit() {
    if let Some(dir) = RUNTIME_DIR.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What the EAL is started with. Devices are not listed here: ports are attached after
/// init through hotplug, one code path for the start-up config and for the API.
#[derive(Debug, Clone)]
pub struct EalOptions {
    /// CPU the EAL main thread (the control plane) is pinned to.
    pub main_core: usize,
    /// Names the runtime directory `/var/run/dpdk/<prefix>` (telemetry socket) and,
    /// without `in_memory`, the hugepage files. Distinct per process.
    pub file_prefix: String,
    /// Hugepage memory to reserve up front, in MiB.
    pub memory_mb: u32,
    /// Keep all memory anonymous: no hugepage files, nothing left behind by a crash.
    pub in_memory: bool,
    /// One memory file per segment list instead of one per page: with `in_memory`, the
    /// memory is then memfd-backed and a vhost-user peer can map it (what a virtio-user
    /// port needs).
    pub single_file_segments: bool,
    /// PCI devices (SR-IOV VFs) the EAL may probe; empty means no PCI bus scan at all.
    pub pci_allow: Vec<String>,
    /// DPDK log level (`--log-level`), e.g. `notice`, `debug`, `lib.eal:debug`.
    pub log_level: String,
}

impl Default for EalOptions {
    fn default() -> Self {
        Self {
            main_core: 0,
            file_prefix: "tenet".to_owned(),
            memory_mb: 512,
            in_memory: true,
            single_file_segments: false,
            pci_allow: Vec::new(),
            log_level: "notice".to_owned(),
        }
    }
}

impl EalOptions {
    /// The argument vector handed to `rte_eal_init`.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "tenetd".to_owned(),
            "--lcores".to_owned(),
            format!("0@{}", self.main_core),
            "--file-prefix".to_owned(),
            self.file_prefix.clone(),
            "-m".to_owned(),
            self.memory_mb.to_string(),
            "--log-level".to_owned(),
            self.log_level.clone(),
        ];
        if self.in_memory {
            args.push("--in-memory".to_owned());
        }
        if self.single_file_segments {
            args.push("--single-file-segments".to_owned());
        }
        if self.pci_allow.is_empty() {
            args.push("--no-pci".to_owned());
        }
        for pci in &self.pci_allow {
            args.push("-a".to_owned());
            args.push(pci.clone());
        }
        args
    }
}

/// The initialised EAL. At most one per process, ever: DPDK cannot re-initialise.
/// Dropping it runs `rte_eal_cleanup`, after which no DPDK object may be used.
pub struct Eal {
    options: EalOptions,
}

impl Eal {
    /// Starts the EAL. Fails if it was already started in this process.
    pub fn init(options: EalOptions) -> Result<Self, DpdkError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::invalid(
                "rte_eal_init",
                &options.file_prefix,
                "the EAL was already initialised in this process",
            ));
        }
        if needs_af_xdp_without_dispatcher() {
            tracing::warn!(
                "locked-memory limit too low for libxdp's dispatcher program and {DISPATCHER_VAR} unset: AF_XDP ports will fail to attach (call dpdk::prepare_process first)"
            );
        }
        super::log::route_to_tracing();
        let args = options.args();
        tracing::debug!(?args, "starting the EAL");
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                DpdkError::invalid("rte_eal_init", &options.file_prefix, "argument holds NUL")
            })?;
        // The EAL may keep pointers into argv (it stores some option strings), so the
        // strings and the array are leaked: one small allocation per process.
        let argv: &'static mut [*mut c_char] = Vec::leak(
            owned
                .into_iter()
                .map(|s| s.into_raw())
                .collect::<Vec<*mut c_char>>(),
        );
        let argc = i32::try_from(argv.len()).unwrap_or(i32::MAX);
        // SAFETY: argv holds argc valid, NUL-terminated, never-freed strings; the
        // INITIALISED flag guarantees this is the only call in the process.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            INITIALISED.store(false, Ordering::SeqCst);
            return Err(DpdkError::new("rte_eal_init", &options.file_prefix, ret));
        }
        let eal = Self { options };
        // A process that never drops its Eal (tests keep it in a static) still leaves
        // no runtime directory behind.
        if RUNTIME_DIR.set(eal.runtime_dir()).is_ok() {
            // SAFETY: registers a plain extern "C" function with no captured state.
            unsafe { libc::atexit(remove_runtime_dir_at_exit) };
        }
        Ok(eal)
    }

    /// The options the EAL was started with.
    pub fn options(&self) -> &EalOptions {
        &self.options
    }

    /// The runtime directory holding the telemetry socket.
    pub fn runtime_dir(&self) -> std::path::PathBuf {
        std::path::Path::new("/var/run/dpdk").join(&self.options.file_prefix)
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the Eal value is dropped last (the daemon drops ports, rings and
        // pools first); cleanup releases hugepage memory and EAL threads.
        let ret = unsafe { dpdk_sys::rte_eal_cleanup() };
        if ret < 0 {
            tracing::warn!(ret, "rte_eal_cleanup failed");
        }
        // The runtime directory (telemetry socket, config) and, without --in-memory, the
        // hugepage files outlive cleanup in 22.11 (kept for secondary processes); a
        // stopped switch leaves nothing behind.
        let dir = self.runtime_dir();
        if dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "could not remove DPDK runtime dir");
            }
        }
        if !self.options.in_memory {
            remove_hugepage_files(&self.options.file_prefix);
        }
    }
}

/// Removes `<prefix>map_N` files from every hugetlbfs mount.
fn remove_hugepage_files(prefix: &str) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let pattern = format!("{prefix}map_");
    for mount in mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        .filter_map(|l| l.split_whitespace().nth(1))
    {
        let Ok(entries) = std::fs::read_dir(mount) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_ours = name
                .strip_prefix(&pattern)
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            if is_ours {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove hugepage file");
                }
            }
        }
    }
}

/// What libxdp reads to skip its dispatcher program.
const DISPATCHER_VAR: &str = "LIBXDP_SKIP_DISPATCHER";

/// Sets up the process environment DPDK's drivers read, and says what it did (to be
/// logged once logging runs). Call first thing in `main`, before any thread starts:
/// changing the environment races with any thread that reads it.
///
/// libxdp loads a dispatcher program that needs more locked memory than container
/// hosts usually grant (8 MiB here, not raisable without CAP_SYS_RESOURCE); its load
/// then fails and with it every AF_XDP port. Without the dispatcher libxdp attaches the
/// PMD's program directly, which is all tenet needs (one program per interface).
pub fn prepare_process() -> Option<String> {
    if !needs_af_xdp_without_dispatcher() {
        return None;
    }
    std::env::set_var(DISPATCHER_VAR, "1");
    Some(format!(
        "locked-memory limit {} KiB too low for libxdp's dispatcher program; set {DISPATCHER_VAR}=1 so AF_XDP ports attach their program directly",
        memlock_limit() / 1024
    ))
}

/// Whether AF_XDP needs libxdp's dispatcher skipped and nobody said so yet.
fn needs_af_xdp_without_dispatcher() -> bool {
    const DISPATCHER_NEEDS: u64 = 64 << 20;
    if std::env::var_os(DISPATCHER_VAR).is_some() {
        return false;
    }
    let limit = memlock_limit();
    limit != libc::RLIM_INFINITY && limit < DISPATCHER_NEEDS
}

fn memlock_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit we own; no other effect.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return 0;
    }
    limit.rlim_cur
}

/// Registers the calling (non-EAL) thread with the EAL so it gets an lcore id, and with
/// it the mempool's lock-free per-core cache. Returns the lcore id.
pub fn register_thread() -> Result<u32, DpdkError> {
    // SAFETY: the EAL is initialised (a Port or Mempool exists before workers start);
    // registering a thread only touches EAL-internal lcore bookkeeping.
    let ret = unsafe { dpdk_sys::rte_thread_register() };
    if ret < 0 {
        return Err(DpdkError::new("rte_thread_register", "worker", ret));
    }
    // SAFETY: reads this thread's lcore id from DPDK's thread-local storage.
    Ok(unsafe { dpdk_sys::tenet_lcore_id() })
}

/// Releases the calling thread's lcore id; call before the thread exits.
pub fn unregister_thread() {
    // SAFETY: releases the lcore registered by register_thread on this thread (a no-op
    // for threads that never registered).
    unsafe { dpdk_sys::rte_thread_unregister() };
}
