//! `tenetd`: the host vswitch daemon.
//!
//! Exit status: 0 after a clean stop, 1 when something failed at run time, 2 when the
//! command line or the config was refused (nothing was started).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use control::config::Config;
use control::daemon::{self, RunOptions};
use control::live::Live;
use control::model::Model;
use control::preflight;
use control::store::{EtcdStore, FileStore, Store};

/// tenet's host vswitch daemon: a poll-mode DPDK dataplane driven by a config file.
#[derive(Debug, Parser)]
#[command(name = "tenetd", version)]
struct Args {
    /// TOML config; values may name environment variables as ${VAR}.
    #[arg(long, short)]
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
    // Before any thread exists (the etcd lease and watch threads come soon).
    let prepared = dataplane::dpdk::prepare_process();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
        println!("tenetd: config {} is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    // The file seeds the store; afterwards tenants, hosts and endpoints come from the
    // store, where the API keeps them (in etcd, where every host of the cluster does).
    let store = match (&config.etcd, &config.state_file) {
        (Some(plan), _) => {
            let etcd = EtcdStore::with_lease(
                plan.endpoints.clone(),
                &plan.prefix,
                &plan.host,
                plan.lease_s,
            )
            .placing_gateways_by(plan.gateway_placement);
            // Registered before the first load, so this host counts itself alive and
            // the others add it as soon as they see the key.
            if let Err(e) = etcd.register() {
                eprintln!("tenetd: registering with the cluster: {e:#}");
                return ExitCode::from(1);
            }
            Some(Store::Etcd(etcd))
        }
        (None, Some(path)) => Some(Store::File(FileStore::new(path))),
        (None, None) => None,
    };
    let seed = Model::of(&config.source);
    let loaded = match store.as_ref().map(|s| s.load(&seed)).transpose() {
        Ok(loaded) => loaded.flatten(),
        Err(e) => {
            eprintln!("tenetd: {e:#}");
            return ExitCode::from(2);
        }
    };
    let (config, model) = match (loaded, &store) {
        (Some(model), Some(store)) => match store.effective(&model).over(&config.source).validate()
        {
            Ok(restored) => {
                tracing::info!(state = %store.describe(), tenants = model.tenants.len(), "restored the stored state");
                // A host new to the cluster adds its own settings and ports.
                if let Err(e) = store.save(&model) {
                    eprintln!("tenetd: {e:#}");
                    return ExitCode::from(1);
                }
                (restored, model)
            }
            Err(e) => {
                eprintln!(
                    "tenetd: the state in {} does not fit the config: {e}",
                    store.describe()
                );
                return ExitCode::from(2);
            }
        },
        (_, store) => {
            let model = seed;
            if let Some(Err(e)) = store.as_ref().map(|s| s.save(&model)) {
                eprintln!("tenetd: {e:#}");
                return ExitCode::from(1);
            }
            let config = match store {
                // Hosts of the config not yet registered get no tunnels until they are.
                Some(store @ Store::Etcd(_)) => {
                    match store.effective(&model).over(&config.source).validate() {
                        Ok(config) => config,
                        Err(e) => {
                            eprintln!("tenetd: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                _ => config,
            };
            (config, model)
        }
    };
    let backends: Vec<_> = config.ports.iter().map(|p| &p.backend).collect();
    if let Err(missing) = preflight::check(config.eal.memory_mb, config.eal.in_memory, &backends) {
        eprintln!("tenetd: {missing}");
        return ExitCode::from(1);
    }
    match daemon::run(
        config,
        Live {
            running: store
                .as_ref()
                .and_then(|s| serde_json::to_value(s.effective(&model)).ok()),
            model,
            store,
            placement_pending: false,
        },
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
