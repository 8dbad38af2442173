//! `tenet-docker`: tenet's Docker network plugin (libnetwork's remote driver protocol
//! over HTTP on a Unix socket; see `control::docker`). Docker finds it by the socket's
//! place, `/run/docker/plugins/tenet.sock`; `docker network create -d tenet` uses it.

use std::path::PathBuf;
use std::sync::mpsc;

use clap::Parser;
use control::docker::Driver;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

/// Serve tenet as a Docker network driver.
#[derive(Debug, Parser)]
#[command(name = "tenet-docker", version)]
struct Cli {
    /// The plugin socket Docker looks for.
    #[arg(long, default_value = "/run/docker/plugins/tenet.sock")]
    socket: PathBuf,
    /// tenetd's API socket.
    #[arg(long, default_value = control::client::DEFAULT_SOCKET, env = "TENET_SOCKET")]
    tenetd: PathBuf,
    /// Where the driver keeps its networks and endpoints.
    #[arg(long, default_value = "/var/lib/tenet/docker.json")]
    state_file: PathBuf,
    /// How containers are attached: af-packet (large TCP segments pass whole) or
    /// af-xdp (falls back to af-packet).
    #[arg(long, default_value = "af-packet", value_parser = ["af-xdp", "af-packet"])]
    backend: String,
    /// Log filter (tracing syntax); lines go to stderr (the journal under systemd).
    #[arg(long, default_value = "info", env = "TENET_LOG")]
    log: String,
    /// Write tenet-docker's manual page into DIR and exit (for packaging).
    #[arg(long, value_name = "DIR", hide = true)]
    man_pages: Option<PathBuf>,
}

type Job = (String, Value, oneshot::Sender<Value>);

async fn handle(
    req: Request<Incoming>,
    jobs: mpsc::Sender<Job>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let request: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let (tx, rx) = oneshot::channel();
    let answer = if jobs.send((path, request, tx)).is_ok() {
        rx.await
            .unwrap_or_else(|_| serde_json::json!({"Err": "the driver stopped"}))
    } else {
        serde_json::json!({"Err": "the driver stopped"})
    };
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1.2+json"),
    );
    Ok(response)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.man_pages {
        use clap::CommandFactory;
        return match control::manpages::write(Cli::command(), dir) {
            Ok(_) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tenet-docker: {e:#}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!(
                "tenet-docker: --log: `{}` is not a log filter: {e}",
                cli.log
            );
            return std::process::ExitCode::from(2);
        }
    };
    {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
    let driver = match Driver::open(&cli.tenetd, &cli.state_file, &cli.backend) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tenet-docker: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    // The driver makes links through netlink runtimes of its own and blocks on
    // tenetd's API: it works on a plain thread, one request at a time, in order.
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::spawn(move || {
        let mut driver = driver;
        for (path, request, reply) in queue {
            let answer = driver.handle(&path, &request);
            let network = request["NetworkID"].as_str().unwrap_or("");
            let endpoint = request["EndpointID"].as_str().unwrap_or("");
            match answer["Err"].as_str().filter(|e| !e.is_empty()) {
                Some(err) => tracing::warn!(%path, network, endpoint, "refused: {err}"),
                None => tracing::info!(%path, network, endpoint, "done"),
            }
            let _ = reply.send(answer);
        }
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tenet-docker: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let served = runtime.block_on(async {
        let listener = control::api::bind(&cli.socket)?;
        tracing::info!(socket = %cli.socket.display(), "tenet-docker serving");
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let jobs = jobs.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(req, jobs.clone()));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
            }
        }
        let _ = std::fs::remove_file(&cli.socket);
        anyhow::Ok(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenet-docker: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
