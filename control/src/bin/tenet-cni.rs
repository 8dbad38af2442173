//! `tenet-cni`: the CNI plugin that attaches containers to tenetd (see
//! `control::cni`). The runtime passes the command in `CNI_*` variables and the
//! network config on stdin; the result, or a CNI error object, goes to stdout.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use control::cni::{self, code, CniError, Env, NetConf};

/// What `--help` and the manual page say: a runtime runs the plugin, not a person.
const ABOUT: &str = "tenet's CNI plugin: attaches containers to tenetd.

A container runtime runs it as the plugin a network config's `type` names, with the \
command and the container in CNI_* environment variables and the network config on \
stdin; the result, or a CNI error object, goes to stdout. Run by hand it answers \
--help and --version only.

Environment: CNI_COMMAND (ADD, DEL, CHECK, STATUS, GC or VERSION), CNI_CONTAINERID, \
CNI_NETNS, CNI_IFNAME, CNI_ARGS (TENET_TENANT=<tenant> picks the tenant, IP=<address> \
a static address), CNI_PATH \
(where a delegated IPAM plugin is found).

Network config (CNI 0.3.0 to 1.1.0): `tenant`; `socket`, tenetd's API (default \
/run/tenet/tenetd.sock); `backend`, af-packet (default), af-xdp (falls back to \
af-packet) or vhost-user; `subnet`, which of the tenant's subnets; `mtu`; \
`portSecurity` (default true); `vhostDir` (default /run/tenet/vhost) and \
`vhostClient`; `dataDir`, where detaches that found tenetd down wait (default \
/var/lib/tenet/cni/networks); `ipam`, a delegated IPAM plugin's config (without one tenetd \
hands out the address, once across the cluster); `logFile`, \
where every call is logged.

Errors are CNI error objects: 4 the environment, 6 and 7 the config, 11 tenetd does \
not answer, 50 STATUS: tenetd or the tenant is not there, 100 and up tenetd's \
refusals and link failures.";

/// The command line a person may give; a runtime gives none.
#[derive(Debug, Parser)]
#[command(name = "tenet-cni", version, about = ABOUT.lines().next(), long_about = ABOUT)]
struct Cli {
    /// Write tenet-cni's manual page into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

fn run(env: &Env, input: &[u8]) -> Result<Option<serde_json::Value>, (CniError, String)> {
    let version_of = |bytes: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "1.0.0".to_owned())
    };
    if env.command == "VERSION" {
        return Ok(Some(cni::version()));
    }
    let version = version_of(input);
    let (conf, raw) = NetConf::parse(input).map_err(|e| (e, version.clone()))?;
    let conf = conf.with_args(env);
    start_log(conf.log_file.as_deref());
    let result = match env.command.as_str() {
        "ADD" => cni::add(env, &conf, &raw).map(Some),
        "DEL" => cni::del(env, &conf, &raw).map(|_| None),
        "CHECK" => cni::check(env, &conf).map(|_| None),
        "STATUS" => cni::status(&conf).map(|_| None),
        "GC" => cni::gc(&conf, &raw).map(|_| None),
        other => Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_COMMAND: `{other}` is not ADD, DEL, CHECK, STATUS, GC or VERSION"),
        )),
    };
    let tenant = conf.tenant.as_deref().unwrap_or("-");
    match &result {
        Ok(answer) => {
            let address = answer
                .as_ref()
                .and_then(|a| a["ips"][0]["address"].as_str())
                .unwrap_or("");
            tracing::info!(command = %env.command, network = %conf.name, tenant, container = %env.container_id, ifname = %env.ifname, address, "done");
        }
        Err(e) => {
            tracing::error!(command = %env.command, network = %conf.name, tenant, container = %env.container_id, code = e.code, "{}", e.msg);
        }
    }
    result.map_err(|e| (e, conf.cni_version))
}

/// Logs to `file` (appended, every call), else warnings and errors to stderr (the
/// runtime keeps a plugin's stderr). A file that cannot be opened is said on stderr.
fn start_log(file: Option<&std::path::Path>) {
    let opened = file.map(|path| {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("tenet-cni: logFile {}: {e}", path.display()))
    });
    let logs = tracing_subscriber::fmt().with_ansi(false);
    match opened {
        Some(Ok(file)) => logs.with_writer(std::sync::Mutex::new(file)).init(),
        Some(Err(e)) => {
            eprintln!("{e}");
            logs.with_writer(std::io::stderr)
                .with_max_level(tracing::Level::WARN)
                .init()
        }
        None => logs
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::WARN)
            .init(),
    }
}

fn main() -> ExitCode {
    // Runtimes pass nothing on the command line (CNI is environment and stdin), so
    // arguments without CNI_COMMAND are a person's.
    if std::env::args_os().len() > 1 && std::env::var_os("CNI_COMMAND").is_none() {
        let cli = Cli::parse();
        if let Some(dir) = &cli.man_pages {
            if let Err(e) = control::manpages::write(Cli::command(), dir) {
                eprintln!("tenet-cni: {e:#}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    let env = match Env::read(|k| std::env::var(k).ok()) {
        Ok(env) => env,
        Err(e) => {
            println!("{}", e.to_json("1.0.0"));
            return ExitCode::from(1);
        }
    };
    let mut input = Vec::new();
    if env.command != "VERSION" {
        if let Err(e) = std::io::stdin().read_to_end(&mut input) {
            let e = CniError::new(code::IO_FAILURE, format!("reading the network config: {e}"));
            println!("{}", e.to_json("1.0.0"));
            return ExitCode::from(1);
        }
    }
    match run(&env, &input) {
        Ok(Some(result)) => {
            println!("{result}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err((e, version)) => {
            println!("{}", e.to_json(&version));
            ExitCode::from(1)
        }
    }
}
