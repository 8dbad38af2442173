//! `tenetd`: the host vswitch daemon.
//!
//! Exit status: 0 after a clean stop, 1 when something failed at run time, 2 when the
//! command line or the config was refused (nothing was started).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use control::config::{Config, ConfigError, EtcdPlan, Validated};
use control::daemon::{self, RunOptions};
use control::live::Live;
use control::model::Model;
use control::preflight;
use control::store::{journal, EtcdStore, FileStore, Store};

// The control plane rebuilds and frees large tables on every change; glibc's malloc
// spent a third of a change's time in its free lists (perf, 5,000 tenants). Workers
// allocate nothing, and DPDK's memory is its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// tenet's host vswitch daemon: a poll-mode DPDK dataplane driven by a config file.
#[derive(Debug, Parser)]
#[command(name = "tenetd", version)]
struct Args {
    /// TOML config; values may name environment variables as ${VAR}.
    #[arg(long, short, default_value = "/etc/tenet/tenetd.toml")]
    config: PathBuf,
    /// Print per-port and per-core rates every this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    stats_interval: Option<Duration>,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    /// Log filter (tracing syntax), e.g. `info`, `debug`, `dataplane=debug`.
    #[arg(long, default_value = "info", env = "TENET_LOG")]
    log: String,
    /// Log lines as text or as one JSON object each (for a log shipper).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Write tenetd's manual page into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--check`: the config is valid, and etcd, when it keeps the model, takes this host.
/// etcd not answering now is only a note: tenetd starts without it.
fn check(path: &std::path::Path, config: &Validated) -> ExitCode {
    if let Some(plan) = &config.etcd {
        match cluster_store(plan).check_access() {
            Ok(()) => println!("tenetd: etcd {} takes this host", plan.endpoints.join(",")),
            Err(e) => match e.downcast_ref::<ConfigError>() {
                Some(refused) => {
                    eprintln!("tenetd: {refused}");
                    return ExitCode::from(2);
                }
                None => println!(
                    "tenetd: note: {e:#}; tenetd would start on its local copy and join when etcd answers"
                ),
            },
        }
    }
    println!("tenetd: config {} is valid", path.display());
    ExitCode::SUCCESS
}

/// The cluster store `plan` describes.
fn cluster_store(plan: &EtcdPlan) -> EtcdStore {
    EtcdStore::with_lease(
        plan.endpoints.clone(),
        &plan.prefix,
        &plan.host,
        plan.lease_s,
    )
    .with_access(plan.access.clone())
    .placing_gateways_by(plan.gateway_placement)
    .watching(plan.watch)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err("must be between 0.1 and 3600 seconds".to_owned());
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    // Before any thread exists (the etcd client's runtime thread comes soon).
    let prepared = dataplane::dpdk::prepare_process();
    let args = Args::parse();
    if let Some(dir) = &args.man_pages {
        use clap::CommandFactory;
        return match control::manpages::write(Args::command(), dir) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tenetd: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let format = match args.log_format {
        LogFormat::Text => control::logging::Format::Text,
        LogFormat::Json => control::logging::Format::Json,
    };
    if let Err(e) = control::logging::install(&args.log, format) {
        eprintln!("tenetd: --log (or TENET_LOG): {e}");
        return ExitCode::from(2);
    }
    if let Some(note) = prepared {
        tracing::info!("{note}");
    }
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("tenetd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        return check(&args.config, &config);
    }
    // The file seeds the store; afterwards tenants, hosts and endpoints come from the
    // store, where the API keeps them (in etcd, where every host of the cluster does).
    let store = match (&config.etcd, &config.state_file) {
        (Some(plan), local) => {
            let mut etcd = cluster_store(plan);
            if let Some(path) = local {
                etcd = etcd.with_local_copy(path.clone());
            }
            // Registered before the first load, so this host counts itself alive and
            // the others add it as soon as they see the key (or as soon as etcd is
            // back, when it is away now).
            if let Err(e) = etcd.register() {
                eprintln!("tenetd: {e:#}");
                return ExitCode::from(1);
            }
            Some(Arc::new(Store::Etcd(Box::new(etcd))))
        }
        (None, Some(path)) => Some(Arc::new(Store::File(Box::new(FileStore::new(path))))),
        (None, None) => None,
    };
    let restored = match restore(&config, store.as_deref()) {
        Ok(restored) => restored,
        Err(e) => {
            eprintln!("tenetd: {e}");
            return ExitCode::from(2);
        }
    };
    let config = restored.config;
    let backends: Vec<_> = config.ports.iter().map(|p| &p.backend).collect();
    if let Err(missing) = preflight::check(config.eal.memory_mb, config.eal.in_memory, &backends) {
        eprintln!("tenetd: {missing}");
        return ExitCode::from(1);
    }
    let (mut live, done) = Live::new(restored.model, store, restored.running);
    live.unseeded = restored.unseeded;
    live.note_skipped(&restored.skipped);
    match daemon::run(
        config,
        live,
        done,
        RunOptions {
            stats_interval: args.stats_interval,
        },
    ) {
        Ok(summary) => {
            println!("{}", summary.result_line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tenetd: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What a start runs: the configuration, the live model, and what of it the store had.
struct Restored {
    config: Validated,
    model: Model,
    /// The view the tables run, in a cluster.
    running: Option<Model>,
    /// This host's own part could not be written to the cluster (etcd away).
    unseeded: bool,
    /// Stored records left out because they do not fit.
    skipped: Vec<control::model::Skipped>,
}

/// Takes the stored model over the config. A start always succeeds but for a config
/// that is wrong in itself: a stored record that does not fit is left out (named), a
/// damaged state file is set aside, and while etcd does not answer the host runs its
/// last own view (or its config) and catches up when etcd is back.
fn restore(config: &Validated, store: Option<&Store>) -> Result<Restored, ConfigError> {
    let seed = Model::of(&config.source);
    let fresh = |unseeded: bool| Restored {
        config: config.clone(),
        model: seed.clone(),
        running: None,
        unseeded,
        skipped: Vec::new(),
    };
    let Some(store) = store else {
        return Ok(fresh(false));
    };
    match (store.load(&seed), store) {
        (Ok(Some(mut model)), _) => {
            model.join(&seed);
            let effective = store.effective(&model);
            let (validated, skipped) = effective.validate_leniently(&config.source)?;
            tracing::info!(state = %store.describe(), tenants = model.tenants.len(), "restored the stored state");
            // A host new to the cluster adds its own settings and ports.
            let unseeded = match store.save(&model) {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not write this host's part of the state; trying again");
                    true
                }
            };
            store.keep_copy(&model);
            Ok(Restored {
                config: validated,
                running: Some(effective),
                model,
                unseeded,
                skipped,
            })
        }
        (Ok(None), _) => {
            let unseeded = match store.save(&seed) {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not write the state; trying again");
                    true
                }
            };
            let mut restored = fresh(unseeded);
            if let Store::Etcd(_) = store {
                // Hosts of the config not yet registered get no tunnels until they are.
                let effective = store.effective(&seed);
                let (validated, skipped) = effective.validate_leniently(&config.source)?;
                store.keep_copy(&seed);
                restored.running = Some(effective);
                restored.config = validated;
                restored.skipped = skipped;
            }
            Ok(restored)
        }
        (Err(e), Store::Etcd(etcd)) => {
            if let Some(refused) = e.downcast_ref::<ConfigError>() {
                tracing::error!(error = %refused, "etcd refuses this host: fix the config and restart; until then it runs its own view and keeps trying");
            }
            let copy = match etcd.restore_copy() {
                Ok(copy) => copy,
                Err(local) => {
                    tracing::warn!(error = %format!("{local:#}"), "the local copy of the cluster's model is damaged");
                    None
                }
            };
            let Some(model) = copy else {
                tracing::warn!(error = %format!("{e:#}"), "etcd does not answer and there is no local copy of the cluster's model: starting from the config; the cluster's state follows when etcd is back");
                return Ok(fresh(true));
            };
            tracing::warn!(error = %format!("{e:#}"), tenants = model.tenants.len(), "etcd does not answer: running the cluster's model as this host last kept it until it is back");
            let effective = store.effective(&model);
            let (validated, skipped) = effective.validate_leniently(&config.source)?;
            Ok(Restored {
                config: validated,
                running: Some(effective),
                model,
                unseeded: true,
                skipped,
            })
        }
        (Err(e), Store::File(_)) if e.downcast_ref::<journal::InUse>().is_some() => {
            // Another tenetd runs on this state: starting beside it would fight over
            // its ports and its state.
            Err(ConfigError::Invalid {
                field: "control.state_file".to_owned(),
                message: format!("{e:#}"),
            })
        }
        (Err(e), Store::File(file)) => {
            // A torn last record is repaired at open; a journal damaged elsewhere (by
            // hand, by the disk) is kept for the operator, and the switch runs its
            // config.
            match file.set_aside() {
                Ok(aside) => {
                    tracing::error!(error = %format!("{e:#}"), kept_as = %aside.display(), "the state journal is damaged; starting from the config")
                }
                Err(moved) => {
                    tracing::error!(error = %format!("{e:#}"), moving = %format!("{moved:#}"), "the state journal is damaged and could not be moved aside; starting from the config")
                }
            }
            let unseeded = store.save(&seed).is_err();
            Ok(fresh(unseeded))
        }
    }
}
