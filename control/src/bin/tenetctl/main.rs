//! `tenetctl`: the command line of a running tenetd, over its API socket.
//!
//! Exit status (also in `--help`):
//! - 0: done; also when stdout closes early (`tenetctl stats --watch | head`).
//! - 1: refused: tenetd said no (the message names the field at fault), the exchange
//!   with it broke off, the output could not be written, or `apply`'s file is unfit
//!   or asks for what tenetd cannot change in place.
//! - 2: usage: the command line is wrong (the message names the argument).
//! - 3: tenetd unreachable: nothing answers on the socket (the message names it).

mod apply;
mod exists;
mod flow;
mod rates;
mod render;
mod table;

use std::io::{ErrorKind, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use control::client::{encode, CallError, Client};
use serde_json::{json, Value};

use exists::Asked;
use rates::{rates, rates_text};
use render::{render, stats_text};

/// The exit status, for `--help`: scripts tell a refusal from a tenetd that is not
/// running.
const EXIT_STATUS: &str = "Exit status:
  0  done (also when stdout closes early, as in `| head`)
  1  refused: tenetd said no, the exchange with it broke off, the output could not be written,
     or apply's file is unfit or asks for what tenetd cannot change in place
  2  usage: the command line is wrong
  3  tenetd unreachable: nothing answers on the socket (--socket, TENET_SOCKET)";

/// Control a running tenetd.
#[derive(Debug, Parser)]
#[command(name = "tenetctl", version, after_help = EXIT_STATUS)]
struct Cli {
    /// tenetd's API socket.
    #[arg(
        long,
        default_value = "/run/tenet/tenetd.sock",
        env = "TENET_SOCKET",
        global = true
    )]
    socket: PathBuf,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Tenants: add, del, list, show.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Known endpoints (container MACs): add, del, list.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Static routes of the tenants' routers: add, del, list.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Container ports published on the gateway host: add, del, list.
    #[command(subcommand)]
    Publish(PublishCmd),
    /// Cluster hosts: add, del, list.
    #[command(subcommand)]
    Host(HostCmd),
    /// Ports with their role, link and counters.
    #[command(subcommand)]
    Port(PortCmd),
    /// Addresses claimed for containers, cluster-wide: list, claim, release.
    #[command(subcommand)]
    Address(AddressCmd),
    /// Make tenetd hold the tenants, hosts, endpoints, routes and published ports a file
    /// lists (like `kubectl apply`): adds what is missing, changes what can change in
    /// place, refuses the rest before changing anything.
    Apply(ApplyArgs),
    /// tenetd's log filter: show it, or `set` it while tenetd runs.
    Log {
        #[command(subcommand)]
        action: Option<LogCmd>,
    },
    /// Counters: per port, per core, drops by reason.
    Stats {
        /// Refresh every second until interrupted, showing rates per second.
        #[arg(long)]
        watch: bool,
    },
    /// The whole switch.
    Show,
    /// The FDB: each tenant's MACs, installed or learned, and where they lead.
    Fdb {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Neighbours: the underlay's next hops and the tenants' routers'.
    Neigh {
        /// Only this tenant's routers' (`-` for the underlay's).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// This host's GRE tunnels and the tenants each carries.
    Tunnel,
    /// The SNAT sessions of this host's gateways, by worker.
    Nat {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Run a frame through the pipeline with the live tables and print each decision:
    /// a flow (`--flow in_port=c1,tcp,nw_dst=10.1.0.3,tp_dst=80`, as ofproto/trace
    /// takes it), a port and the frame as hex, or (`--port c1 --live`) the next
    /// frames the port really receives, as the workers decide them (VPP's trace add).
    Trace {
        /// Ingress port (with --frame or --live).
        #[arg(long, requires = "what", conflicts_with = "flow")]
        port: Option<String>,
        /// The frame, as hex (with --port).
        #[arg(long, requires = "port", group = "what")]
        frame: Option<String>,
        /// The flow: in_port, dl_src, dl_dst, dl_vlan, dl_type, nw_src, nw_dst,
        /// nw_proto, nw_ttl, tp_src, tp_dst, arp_op; ip, icmp, tcp, udp, arp.
        #[arg(long, required_unless_present = "port")]
        flow: Option<String>,
        /// Trace real frames the port receives (with --port): the workers note their
        /// decisions for the next --count frames, waiting up to --seconds.
        #[arg(long, requires = "port", group = "what")]
        live: bool,
        /// With --live: frames to trace, 1 to 1000 [default: 10].
        #[arg(long, requires = "live", conflicts_with_all = ["frame", "flow"])]
        count: Option<usize>,
        /// With --live: the longest wait, in seconds, at most 590 [default: 10].
        #[arg(
            long,
            requires = "live",
            conflicts_with_all = ["frame", "flow"],
            value_parser = positive_seconds,
            allow_negative_numbers = true
        )]
        seconds: Option<f64>,
    },
    /// A pcapng of what ports send and receive, taken by the workers without
    /// stopping traffic: one interface per port, each frame's direction and the
    /// worker's timestamp; streamed as it is taken (`-w - | tcpdump -r -`).
    Capture {
        /// A port to capture (give it again for more; none: every port).
        #[arg(long = "port")]
        ports: Vec<String>,
        /// Frames to capture (0: as many as come within --seconds).
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Longest capture, in seconds (at most 590).
        #[arg(
            long,
            default_value_t = 10.0,
            value_parser = positive_seconds,
            allow_negative_numbers = true
        )]
        seconds: f64,
        /// Only frames from or to this MAC.
        #[arg(long)]
        mac: Option<String>,
        /// Only frames from or to this IPv4 address (ARP's sender or target too).
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Only frames of this protocol. A GRE frame is taken when the frame it
        /// carries matches too, so a container's traffic is found on the uplink.
        #[arg(long, value_parser = ["arp", "ip", "icmp", "tcp", "udp", "gre"])]
        protocol: Option<String>,
        /// The pcapng file to write; `-` for stdout (`-w - | tcpdump -r -`), `./-`
        /// for a file named `-`.
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
    },
    /// Shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages, tenetctl's and each subcommand's, into DIR (for
    /// packaging).
    #[command(hide = true)]
    ManPages {
        /// Where.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCmd {
    /// Add a tenant.
    Add(TenantAdd),
    /// Remove a tenant.
    Del {
        /// Its name.
        name: String,
        /// A missing tenant is no error.
        #[arg(long)]
        if_exists: bool,
    },
    /// List tenants.
    List,
    /// One tenant with its ports and endpoints.
    Show {
        /// Its name.
        name: String,
    },
    /// Change a running tenant's gateway: move it (`--gateway-host`), consent to
    /// peering (`--peer`), SNAT address and connection cap.
    Set {
        /// Its name.
        name: String,
        /// The host its gateway moves to, or `central`.
        #[arg(long)]
        gateway_host: Option<String>,
        /// Tenants it consents to route with (repeatable; replaces the list).
        #[arg(long = "peer")]
        peers: Option<Vec<String>>,
        /// Withdraw every peering consent.
        #[arg(long, conflicts_with = "peers")]
        no_peers: bool,
        /// SNAT address.
        #[arg(long)]
        snat_ip: Option<String>,
        /// SNAT connections per core.
        #[arg(long)]
        max_connections: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCmd {
    /// Add a static route.
    Add {
        /// The tenant.
        tenant: String,
        /// Destination, like 10.9.0.0/16.
        prefix: String,
        /// Next hop, on one of the tenant's subnets.
        #[arg(long)]
        via: String,
        /// A route of the tenant to this destination already there is no error (a
        /// warning names what differs; it is left as it is).
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove a route.
    Del {
        /// The tenant.
        tenant: String,
        /// Destination as added.
        prefix: String,
        /// A missing route is no error.
        #[arg(long)]
        if_exists: bool,
    },
    /// List routes.
    List,
}

#[derive(Debug, Subcommand)]
enum PublishCmd {
    /// Publish a container port (`docker run -p HOST_PORT:PORT`).
    Add {
        /// The container's tenant.
        tenant: String,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// Port on the gateway host's outside address.
        #[arg(long)]
        host_port: u16,
        /// The container's address.
        #[arg(long)]
        ip: String,
        /// The container's port.
        #[arg(long)]
        port: u16,
        /// This protocol's host port already published is no error (a warning names
        /// what differs; it is left as it is).
        #[arg(long)]
        may_exist: bool,
    },
    /// Withdraw a published port.
    Del {
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// The published port.
        #[arg(long)]
        host_port: u16,
        /// A port not published is no error.
        #[arg(long)]
        if_exists: bool,
    },
    /// List published ports.
    List,
}

#[derive(Debug, Args)]
struct TenantAdd {
    /// Unique name.
    name: String,
    /// Tenant id (the GRE key in the dedicated design).
    #[arg(long)]
    id: u32,
    /// VLAN (needed in the shared design).
    #[arg(long)]
    vlan: Option<u16>,
    /// Cap on learned MACs.
    #[arg(long)]
    max_macs: Option<u32>,
    /// Other hosts where it lives (repeatable).
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// The gateway's address on a subnet, like 10.1.0.1/24 (repeatable): gives the
    /// tenant a router.
    #[arg(long = "subnet")]
    subnets: Vec<String>,
    /// Where the gateway runs: a host's name, or `central`.
    #[arg(long)]
    gateway_host: Option<String>,
    /// SNAT address toward the outside.
    #[arg(long)]
    snat_ip: Option<String>,
    /// A tenant of this name already there is no error (a warning names what differs;
    /// it is left as it is).
    #[arg(long)]
    may_exist: bool,
}

#[derive(Debug, Subcommand)]
enum EndpointCmd {
    /// Add an endpoint.
    Add {
        /// Its tenant.
        #[arg(long)]
        tenant: String,
        /// Its MAC.
        #[arg(long)]
        mac: String,
        /// The local port it is behind.
        #[arg(long, conflicts_with = "host")]
        port: Option<String>,
        /// The other host it is on.
        #[arg(long)]
        host: Option<String>,
        /// Its IPv4 address (the tenant's router and ARP answers use it).
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// The tenant's endpoint of this MAC already there is no error (a warning
        /// names what differs; it is left as it is).
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove an endpoint.
    Del {
        /// Its tenant.
        #[arg(long)]
        tenant: String,
        /// Its MAC.
        #[arg(long)]
        mac: String,
        /// A missing endpoint is no error.
        #[arg(long)]
        if_exists: bool,
    },
    /// List endpoints.
    List,
}

#[derive(Debug, Subcommand)]
enum HostCmd {
    /// Add a host.
    Add {
        /// Unique name.
        name: String,
        /// Underlay address, optionally with /prefix.
        #[arg(long)]
        underlay_ip: String,
        /// Its underlay MAC, if known.
        #[arg(long)]
        mac: Option<String>,
        /// The shared design's egress host.
        #[arg(long)]
        egress: bool,
        /// A host of this name already there is no error (a warning names what
        /// differs; it is left as it is).
        #[arg(long)]
        may_exist: bool,
    },
    /// Remove a host.
    Del {
        /// Its name.
        name: String,
        /// A missing host is no error.
        #[arg(long)]
        if_exists: bool,
    },
    /// List hosts.
    List,
}

#[derive(Debug, Subcommand)]
enum PortCmd {
    /// List ports.
    List,
    /// Attach a port while the switch runs.
    Add(PortAdd),
    /// Detach a port.
    Del {
        /// Its name.
        name: String,
        /// A missing port is no error.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AddressCmd {
    /// List claimed addresses.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Claim an address of a tenant's subnet; the same owner asking again gets the
    /// same address.
    Claim {
        /// The tenant.
        tenant: String,
        /// Who holds it (`cni:<network>:<container>:<ifname>`, or any name).
        #[arg(long)]
        owner: String,
        /// This address (a static one) rather than any free one.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Which of the tenant's subnets (default: its first).
        #[arg(long)]
        subnet: Option<String>,
    },
    /// Release a claimed address.
    Release {
        /// The tenant.
        tenant: String,
        /// The address.
        ip: std::net::Ipv4Addr,
        /// Only if this owner holds it (a late second release must not take the address
        /// from whoever got it next).
        #[arg(long)]
        owner: Option<String>,
        /// An address not claimed is no error.
        #[arg(long)]
        if_exists: bool,
    },
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// The file: TOML with the `[[tenant]]`, `[[host]]`, `[[endpoint]]`, `[[route]]` and
    /// `[[publish]]` tables of tenetd's config (`${VAR}` expanded); `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    file: PathBuf,
    /// Also delete the tenants, hosts, endpoints, routes and published ports the file
    /// does not list.
    #[arg(long)]
    prune: bool,
    /// Print what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum LogCmd {
    /// Set the filter, as `TENET_LOG` takes it (`info,control=debug`).
    Set {
        /// The filter.
        filter: String,
    },
}

#[derive(Debug, Args)]
struct PortAdd {
    /// Unique name.
    name: String,
    /// null, ring, tap, pcap, af-packet, af-xdp, vhost-user, vf.
    #[arg(long)]
    backend: String,
    /// Kernel interface (tap, af-packet, af-xdp).
    #[arg(long)]
    interface: Option<String>,
    /// First interface queue (af-xdp).
    #[arg(long)]
    queue: Option<u32>,
    /// Socket path (vhost-user).
    #[arg(long)]
    path: Option<String>,
    /// Client mode (vhost-user).
    #[arg(long)]
    client: bool,
    /// PCI address (vf).
    #[arg(long)]
    pci: Option<String>,
    /// Queue pairs.
    #[arg(long)]
    queues: Option<u16>,
    /// access, trunk or uplink.
    #[arg(long)]
    role: Option<String>,
    /// Tenant of an access port.
    #[arg(long)]
    tenant: Option<String>,
    /// Tenants of a trunk (repeatable).
    #[arg(long = "trunk-tenant")]
    tenants: Vec<String>,
    /// A port of this name already there is no error (a warning names a backend or
    /// role that differs; it is left as it is).
    #[arg(long)]
    may_exist: bool,
}

/// An API request: method, path and JSON body.
type Request = (&'static str, String, Option<Value>);

/// How tenetctl ends; the numbers are its exit status (2, usage, is clap's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Done, or stdout closed early (`| head`).
    Done = 0,
    /// tenetd said no, the exchange with it broke off, or the output could not be
    /// written.
    Refused = 1,
    /// Nothing answers on the socket.
    Unreachable = 3,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let status = run(&cli, terminal, &mut stdout.lock(), &mut std::io::stderr());
    ExitCode::from(status as u8)
}

/// Runs the command, writing its output to `out` and its complaints to `err`; `terminal`
/// says whether `out` is one (`stats --watch` clears it between screens).
fn run(cli: &Cli, terminal: bool, out: &mut dyn Write, err: &mut dyn Write) -> Status {
    let (method, path, body): Request = match &cli.command {
        Cmd::Completions { shell } => return emit(&completions(*shell), out, err),
        Cmd::ManPages { dir } => return man_pages(dir, err),
        Cmd::Tenant(cmd) => tenant_request(cmd),
        Cmd::Route(cmd) => route_request(cmd),
        Cmd::Publish(cmd) => publish_request(cmd),
        Cmd::Endpoint(cmd) => endpoint_request(cmd),
        Cmd::Host(cmd) => host_request(cmd),
        Cmd::Port(cmd) => port_request(cmd),
        Cmd::Address(cmd) => address_request(cmd),
        Cmd::Log { action } => log_request(action.as_ref()),
        Cmd::Apply(a) => {
            let apply = apply::Apply {
                client: &Client::new(&cli.socket),
                file: &a.file,
                prune: a.prune,
                dry_run: a.dry_run,
                json: cli.json,
            };
            return apply.run(out, err);
        }
        Cmd::Stats { .. } => ("GET", "/v1/stats".into(), None),
        Cmd::Capture {
            ports,
            count,
            seconds,
            mac,
            ip,
            protocol,
            file,
        } => {
            let mut body = json!({"ports": ports, "count": count, "seconds": seconds});
            for (key, value) in [
                ("mac", mac.clone()),
                ("ip", ip.map(|ip| ip.to_string())),
                ("protocol", protocol.clone()),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            let client = Client::new(&cli.socket);
            return match client.stream("POST", "/v1/capture", Some(&body)) {
                Ok(response) if response.is_json() => {
                    let mut whole = Vec::new();
                    let mut response = response;
                    if let Err(e) = std::io::Read::read_to_end(&mut response, &mut whole) {
                        return broke_off(&e, err);
                    }
                    let body: Value = serde_json::from_slice(&whole).unwrap_or(Value::Null);
                    refused(&body, cli.json, out, err)
                }
                Ok(response) => write_capture(file, response, out, err),
                Err(e) => unanswered(&e, err),
            };
        }
        Cmd::Trace {
            port: Some(port),
            live: true,
            count,
            seconds,
            ..
        } => (
            "POST",
            "/v1/trace/live".into(),
            Some(json!({
                "port": port,
                "count": count.unwrap_or(10),
                "seconds": seconds.unwrap_or(10.0),
            })),
        ),
        Cmd::Trace {
            port, frame, flow, ..
        } => {
            let (port, frame) = match (flow, port, frame) {
                (Some(flow), ..) => match flow::parse(flow) {
                    Ok(flow) => (flow.port, flow::hex(&flow.frame)),
                    Err(why) => {
                        let _ = writeln!(err, "tenetctl: --flow: {why}");
                        return Status::Refused;
                    }
                },
                (None, Some(port), Some(frame)) => (port.clone(), frame.clone()),
                _ => unreachable!("clap requires --flow, or --port with --frame"),
            };
            (
                "POST",
                "/v1/trace".into(),
                Some(json!({"port": port, "frame": frame})),
            )
        }
        Cmd::Show => ("GET", "/v1/show".into(), None),
        Cmd::Fdb { .. } => ("GET", "/v1/fdb".into(), None),
        Cmd::Neigh { .. } => ("GET", "/v1/neighbors".into(), None),
        Cmd::Tunnel => ("GET", "/v1/tunnels".into(), None),
        Cmd::Nat { tenant: None } => ("GET", "/v1/nat".into(), None),
        Cmd::Nat {
            tenant: Some(tenant),
        } => ("GET", format!("/v1/nat/{}", encode(tenant)), None),
    };
    let client = Client::new(&cli.socket);
    let asked = Asked::of(&cli.command, body.as_ref());
    if let Some(asked) = &asked {
        match held(&client, asked, err) {
            Ok(Some(differences)) => return warn(asked, &differences, err),
            Ok(None) => {}
            Err(status) => return status,
        }
    }
    if let Cmd::Stats { watch: true } = &cli.command {
        let watch = Watch {
            client: &client,
            path: &path,
            every: Duration::from_secs(1),
            terminal,
        };
        return watch.run(out, err);
    }
    let answer = match client.call(method, &path, body.as_ref()) {
        Ok(answer) => answer,
        Err(e) => return unanswered(&e, err),
    };
    if !answer.ok() {
        if exists::if_exists(&cli.command) && exists::missing(answer.status, &answer.body) {
            return Status::Done;
        }
        // Added by another meanwhile: as if it had been there. Should tenetd not tell,
        // its refusal of the add is what is worth saying.
        if let Some(asked) = &asked {
            if let Ok(Some(differences)) = held(&client, asked, &mut std::io::sink()) {
                return warn(asked, &differences, err);
            }
        }
        return refused(&answer.body, cli.json, out, err);
    }
    let text = if cli.json {
        serde_json::to_string_pretty(&answer.body).unwrap_or_default() + "\n"
    } else {
        render(&cli.command, &answer.body)
    };
    emit(text.as_bytes(), out, err)
}

/// For `add --may-exist`: how the record tenetd holds differs from the one asked for
/// (empty: it does not), or `None` when tenetd holds none; `Err` when it could not tell.
fn held(
    client: &Client,
    asked: &Asked,
    err: &mut dyn Write,
) -> Result<Option<Vec<exists::Difference>>, Status> {
    let answer = match client.call("GET", asked.list, None) {
        Ok(answer) => answer,
        Err(e) => return Err(unanswered(&e, err)),
    };
    if !answer.ok() {
        return Err(refused(&answer.body, false, &mut std::io::sink(), err));
    }
    Ok(asked.find(&answer.body).map(|have| asked.differences(have)))
}

/// The end of an `add --may-exist` whose record is there: done, with a warning naming
/// each field it differs in, as ovs-vsctl gives.
fn warn(asked: &Asked, differences: &[exists::Difference], err: &mut dyn Write) -> Status {
    if !differences.is_empty() {
        let said: Vec<String> = differences.iter().map(ToString::to_string).collect();
        say(
            err,
            format_args!(
                "{} exists: {}; left as it is",
                asked.record,
                said.join("; ")
            ),
        );
    }
    Status::Done
}

/// Writes `bytes` to `out`. A reader that has had enough (`| head`) is a normal end.
fn emit(bytes: &[u8], out: &mut dyn Write, err: &mut dyn Write) -> Status {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Status::Done,
        Err(e) => unwritten(&e, err),
    }
}

/// How a failed write to stdout ends tenetctl. Rust ignores SIGPIPE, so a closed pipe
/// comes back as an error; it means the reader has had enough (`| head`), not that
/// anything went wrong.
fn unwritten(e: &std::io::Error, err: &mut dyn Write) -> Status {
    if e.kind() == ErrorKind::BrokenPipe {
        return Status::Done;
    }
    say(err, format_args!("writing to stdout: {e}"));
    Status::Refused
}

/// A line to stderr. If stderr is gone too there is no one left to tell.
fn say(err: &mut dyn Write, message: std::fmt::Arguments<'_>) {
    let _ = writeln!(err, "tenetctl: {message}");
}

/// Why no answer came.
fn unanswered(e: &CallError, err: &mut dyn Write) -> Status {
    say(err, format_args!("{e}"));
    match e {
        CallError::Unreachable { .. } => Status::Unreachable,
        CallError::Protocol(_) => Status::Refused,
    }
}

/// The API's refusal, `{"field", "message"}`: as it is with `--json`, else as a line
/// naming the field.
fn refused(body: &Value, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> Status {
    if json {
        emit(format!("{body}\n").as_bytes(), out, err);
        return Status::Refused;
    }
    let field = body["field"].as_str().unwrap_or("");
    let message = body["message"].as_str().unwrap_or("refused");
    if field.is_empty() {
        say(err, format_args!("{message}"));
    } else {
        say(err, format_args!("{field}: {message}"));
    }
    Status::Refused
}

/// The completion script, whole: clap_complete panics on a write error, so it writes
/// to memory and [`emit`] writes to stdout.
fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let full = Cli::command();
    // clap_complete offers hidden subcommands too: packaging's `man-pages` stays out.
    let mut cmd = clap::Command::new("tenetctl")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tenetctl", &mut script);
    script
}

/// `man-pages DIR`.
fn man_pages(dir: &Path, err: &mut dyn Write) -> Status {
    use clap::CommandFactory;
    match control::manpages::write(Cli::command(), dir) {
        Ok(_) => Status::Done,
        Err(e) => {
            say(err, format_args!("{e:#}"));
            Status::Refused
        }
    }
}

/// `stats --watch`.
struct Watch<'a> {
    client: &'a Client,
    path: &'a str,
    every: Duration,
    terminal: bool,
}

impl Watch<'_> {
    /// Asks every `every` and shows the rates since the previous answer (the first
    /// screen, with nothing to compare, shows the totals) until tenetd stops answering
    /// or stdout closes.
    fn run(&self, out: &mut dyn Write, err: &mut dyn Write) -> Status {
        let mut previous: Option<(Value, Instant)> = None;
        loop {
            let answer = match self.client.call("GET", self.path, None) {
                Ok(answer) => answer,
                Err(e) => return unanswered(&e, err),
            };
            if !answer.ok() {
                return refused(&answer.body, false, out, err);
            }
            let now = Instant::now();
            let screen = match &previous {
                Some((before, at)) => rates_text(&rates(
                    before,
                    &answer.body,
                    now.duration_since(*at).as_secs_f64(),
                )),
                None => format!(
                    "totals since start; per second from the next screen\n\n{}",
                    stats_text(&answer.body)
                ),
            };
            // Clear the screen and home the cursor, like watch(1); escapes would be
            // litter in a pipe, where a blank line parts the screens.
            let parting = match (self.terminal, &previous) {
                (true, _) => "\x1b[2J\x1b[H",
                (false, None) => "",
                (false, Some(_)) => "\n",
            };
            let text = format!("{parting}{screen}");
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                return unwritten(&e, err);
            }
            previous = Some((answer.body, now));
            std::thread::sleep(self.every);
        }
    }
}

/// Writes the capture tenetd streams to `file`, or to stdout when it is `-` (for
/// `| tcpdump -r -`), as it comes, and says how many frames it holds and how many
/// were lost: on stdout after a file, on stderr after the capture itself.
fn write_capture(
    file: &Path,
    mut response: impl std::io::Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Status {
    use control::pcapng::{next_block, Block};
    let mut first = vec![0u8; 64 * 1024];
    let mut file_out;
    let (target, shown): (&mut dyn Write, String) = if file.as_os_str() == "-" {
        (&mut *out, "stdout".to_owned())
    } else {
        match std::fs::File::create(file) {
            Ok(f) => {
                file_out = std::io::BufWriter::new(f);
                (&mut file_out, file.display().to_string())
            }
            Err(e) => {
                say(err, format_args!("writing {}: {e}", file.display()));
                return Status::Refused;
            }
        }
    };
    let (mut packets, mut lost) = (0u64, 0u64);
    let mut pending: Vec<u8> = Vec::new();
    let mut counting = true;
    loop {
        let filled = match response.read(&mut first) {
            Ok(n) => n,
            Err(e) => return broke_off(&e, err),
        };
        if filled == 0 {
            break;
        }
        let chunk = &first[..filled];
        if let Err(e) = target.write_all(chunk).and_then(|()| target.flush()) {
            // tcpdump gone early: a normal end (tenetd stops when the stream closes).
            if e.kind() == ErrorKind::BrokenPipe {
                return Status::Done;
            }
            say(err, format_args!("writing {shown}: {e}"));
            return Status::Refused;
        }
        if !counting {
            continue;
        }
        pending.extend_from_slice(chunk);
        let mut used = 0;
        loop {
            match next_block(&pending[used..]) {
                Ok(Some((block, n))) => {
                    match block {
                        Block::Packet(_) => packets += 1,
                        Block::Statistics { lost: l, .. } => lost += l,
                        _ => {}
                    }
                    used += n;
                }
                Ok(None) => break,
                // Not what tenetd writes: passed on as it is, no longer counted.
                Err(_) => {
                    counting = false;
                    break;
                }
            }
        }
        pending.drain(..used);
        if !counting {
            pending = Vec::new();
        }
    }
    let lost = match lost {
        0 => String::new(),
        n => format!(" ({n} lost: the workers or this reader fell behind)"),
    };
    let told = format!("{packets} packets written to {shown}{lost}");
    if file.as_os_str() == "-" {
        say(err, format_args!("{told}"));
        return Status::Done;
    }
    emit(format!("{told}\n").as_bytes(), out, err)
}

/// The exchange with tenetd ended before its answer did.
fn broke_off(e: &std::io::Error, err: &mut dyn Write) -> Status {
    say(err, format_args!("talking to tenetd: {e}"));
    Status::Refused
}

fn tenant_request(cmd: &TenantCmd) -> Request {
    match cmd {
        TenantCmd::Add(t) => (
            "POST",
            "/v1/tenants".into(),
            Some(
                json!({"name": t.name, "id": t.id, "vlan": t.vlan, "max_macs": t.max_macs, "hosts": t.hosts,
                       "subnets": t.subnets, "gateway_host": t.gateway_host, "snat_ip": t.snat_ip}),
            ),
        ),
        TenantCmd::Del { name, .. } => ("DELETE", format!("/v1/tenants/{name}"), None),
        TenantCmd::List => ("GET", "/v1/tenants".into(), None),
        TenantCmd::Show { name } => ("GET", format!("/v1/tenants/{name}"), None),
        TenantCmd::Set {
            name,
            gateway_host,
            peers,
            no_peers,
            snat_ip,
            max_connections,
        } => {
            let mut patch = serde_json::Map::new();
            if let Some(host) = gateway_host {
                patch.insert("gateway_host".into(), json!(host));
            }
            if let Some(peers) = peers {
                patch.insert("peers".into(), json!(peers));
            }
            if *no_peers {
                patch.insert("peers".into(), json!([]));
            }
            if let Some(ip) = snat_ip {
                patch.insert("snat_ip".into(), json!(ip));
            }
            if let Some(n) = max_connections {
                patch.insert("max_connections".into(), json!(n));
            }
            (
                "PATCH",
                format!("/v1/tenants/{name}"),
                Some(Value::Object(patch)),
            )
        }
    }
}

fn route_request(cmd: &RouteCmd) -> Request {
    match cmd {
        RouteCmd::Add {
            tenant,
            prefix,
            via,
            ..
        } => (
            "POST",
            "/v1/routes".into(),
            Some(json!({"tenant": tenant, "prefix": prefix, "via": via})),
        ),
        RouteCmd::Del { tenant, prefix, .. } => {
            ("DELETE", format!("/v1/routes/{tenant}/{prefix}"), None)
        }
        RouteCmd::List => ("GET", "/v1/routes".into(), None),
    }
}

fn publish_request(cmd: &PublishCmd) -> Request {
    match cmd {
        PublishCmd::Add {
            tenant,
            protocol,
            host_port,
            ip,
            port,
            ..
        } => (
            "POST",
            "/v1/published".into(),
            Some(
                json!({"tenant": tenant, "protocol": protocol, "host_port": host_port, "ip": ip, "port": port}),
            ),
        ),
        PublishCmd::Del {
            protocol,
            host_port,
            ..
        } => (
            "DELETE",
            format!("/v1/published/{protocol}/{host_port}"),
            None,
        ),
        PublishCmd::List => ("GET", "/v1/published".into(), None),
    }
}

fn endpoint_request(cmd: &EndpointCmd) -> Request {
    match cmd {
        EndpointCmd::Add {
            tenant,
            mac,
            port,
            host,
            ip,
            ..
        } => (
            "POST",
            "/v1/endpoints".into(),
            Some(json!({"tenant": tenant, "mac": mac, "port": port, "host": host, "ip": ip})),
        ),
        EndpointCmd::Del { tenant, mac, .. } => (
            "DELETE",
            format!("/v1/endpoints/{tenant}/{}", encode(mac)),
            None,
        ),
        EndpointCmd::List => ("GET", "/v1/endpoints".into(), None),
    }
}

fn host_request(cmd: &HostCmd) -> Request {
    match cmd {
        HostCmd::Add {
            name,
            underlay_ip,
            mac,
            egress,
            ..
        } => (
            "POST",
            "/v1/hosts".into(),
            Some(json!({"name": name, "underlay_ip": underlay_ip, "mac": mac, "egress": egress})),
        ),
        HostCmd::Del { name, .. } => ("DELETE", format!("/v1/hosts/{name}"), None),
        HostCmd::List => ("GET", "/v1/hosts".into(), None),
    }
}

fn port_request(cmd: &PortCmd) -> Request {
    match cmd {
        PortCmd::List => ("GET", "/v1/ports".into(), None),
        PortCmd::Add(p) => ("POST", "/v1/ports".into(), Some(port_spec(p))),
        PortCmd::Del { name, .. } => ("DELETE", format!("/v1/ports/{name}"), None),
    }
}

fn address_request(cmd: &AddressCmd) -> Request {
    match cmd {
        AddressCmd::List { .. } => ("GET", "/v1/addresses".into(), None),
        AddressCmd::Claim {
            tenant,
            owner,
            ip,
            subnet,
        } => (
            "POST",
            "/v1/addresses".into(),
            Some(json!({"tenant": tenant, "owner": owner, "ip": ip, "subnet": subnet})),
        ),
        AddressCmd::Release {
            tenant, ip, owner, ..
        } => (
            "DELETE",
            format!("/v1/addresses/{tenant}/{ip}"),
            owner.as_ref().map(|owner| json!({ "owner": owner })),
        ),
    }
}

fn log_request(action: Option<&LogCmd>) -> Request {
    match action {
        None => ("GET", "/v1/log".into(), None),
        Some(LogCmd::Set { filter }) => {
            ("PUT", "/v1/log".into(), Some(json!({ "filter": filter })))
        }
    }
}

/// The port's JSON, with only the options given.
fn port_spec(p: &PortAdd) -> Value {
    let mut spec = json!({"name": p.name, "backend": p.backend});
    for (key, value) in [
        ("interface", p.interface.clone().map(Value::from)),
        ("queue", p.queue.map(Value::from)),
        ("path", p.path.clone().map(Value::from)),
        ("client", p.client.then_some(Value::from(true))),
        ("pci", p.pci.clone().map(Value::from)),
        ("queues", p.queues.map(Value::from)),
        ("role", p.role.clone().map(Value::from)),
        ("tenant", p.tenant.clone().map(Value::from)),
        (
            "tenants",
            (!p.tenants.is_empty()).then(|| Value::from(p.tenants.clone())),
        ),
    ] {
        if let Some(value) = value {
            spec[key] = value;
        }
    }
    spec
}

/// `--seconds`: a number of seconds above zero. NaN and infinity would reach tenetd as
/// JSON `null` and be refused in words about types.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err("not a number of seconds above zero".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixListener;
    use std::sync::mpsc;

    /// A directory of this test's own, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("tenetctl-test-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A stand-in for tenetd on `dir/tenetd.sock`: answers one connection per
    /// `(status, body)`, then stops listening and removes its socket. Sends each
    /// request's line (`GET /v1/stats`) on the channel.
    fn fake_tenetd(dir: &Path, answers: Vec<(u16, Value)>) -> (PathBuf, mpsc::Receiver<String>) {
        let socket = dir.join("tenetd.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let (sent, requests) = mpsc::channel();
        let path = socket.clone();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header == "\r\n" {
                        break;
                    }
                    if let Some(n) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = n.trim().parse().unwrap();
                    }
                }
                reader.read_exact(&mut vec![0; length]).unwrap();
                let _ = sent.send(line.trim_end().to_owned());
                let body = body.to_string();
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            drop(listener);
            let _ = std::fs::remove_file(path);
        });
        (socket, requests)
    }

    /// A stdout that takes `writes` writes, then behaves as a pipe whose reader left.
    struct Pipe {
        taken: Vec<u8>,
        writes: usize,
    }

    impl Pipe {
        fn closed_after(writes: usize) -> Self {
            Self {
                taken: Vec::new(),
                writes,
            }
        }
    }

    impl Write for Pipe {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.writes == 0 {
                return Err(ErrorKind::BrokenPipe.into());
            }
            self.writes -= 1;
            self.taken.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("tenetctl").chain(args.iter().copied())).unwrap()
    }

    /// Runs tenetctl with `args` on stdout `out`; returns its status and stderr.
    fn run_with(args: &[&str], out: &mut dyn Write) -> (Status, String) {
        let mut err = Vec::new();
        let status = run(&cli(args), false, out, &mut err);
        (status, String::from_utf8(err).unwrap())
    }

    fn stats(rx: u64) -> Value {
        json!({
            "ports": [{"name": "c1", "backend": "ring", "state": "up", "link_up": true,
                       "role": {"role": "uplink"}, "rx_packets": rx, "tx_packets": 0,
                       "rx_bytes": rx * 100, "tx_bytes": 0, "rx_missed": 0}],
            "cores": [], "drops": {}, "control": {"learned_macs": 0},
        })
    }

    #[test]
    fn exit_statuses_are_the_documented_ones() {
        assert_eq!(Status::Done as u8, 0);
        assert_eq!(Status::Refused as u8, 1);
        assert_eq!(Status::Unreachable as u8, 3);
        use clap::CommandFactory;
        let help = Cli::command().render_help().to_string();
        for line in ["0  done", "1  refused", "2  usage", "3  tenetd unreachable"] {
            assert!(help.contains(line), "{line} not in {help}");
        }
    }

    #[test]
    fn an_unreachable_tenetd_is_status_3_naming_the_socket() {
        let scratch = Scratch::new("unreachable");
        // No socket at all.
        let missing = scratch.0.join("nothing.sock");
        let missing = missing.to_str().unwrap();
        let (status, said) = run_with(&["--socket", missing, "tenant", "list"], &mut Vec::new());
        assert_eq!(status, Status::Unreachable);
        assert!(said.contains(missing), "{said}");
        // A socket nobody listens on any more: connection refused.
        let stale = scratch.0.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let stale = stale.to_str().unwrap();
        let mut out = Vec::new();
        let (status, said) = run_with(&["--socket", stale, "stats", "--watch"], &mut out);
        assert_eq!(status, Status::Unreachable);
        assert!(said.contains(stale), "{said}");
        assert!(out.is_empty());
    }

    #[test]
    fn a_refusal_is_status_1_naming_the_field() {
        let scratch = Scratch::new("refused");
        let refusal =
            json!({"status": 404, "field": "name", "message": "no tenant is named `red`"});
        let (socket, requests) = fake_tenetd(&scratch.0, vec![(404, refusal)]);
        let mut out = Vec::new();
        let (status, said) = run_with(
            &[
                "--socket",
                socket.to_str().unwrap(),
                "tenant",
                "show",
                "red",
            ],
            &mut out,
        );
        assert_eq!(requests.recv().unwrap(), "GET /v1/tenants/red HTTP/1.1");
        assert_eq!(status, Status::Refused);
        assert_eq!(said, "tenetctl: name: no tenant is named `red`\n");
        assert!(out.is_empty());
    }

    /// Runs tenetctl with `args` against a stand-in tenetd giving `answers`; returns
    /// its status, stdout, stderr and the requests it made.
    fn against(args: &[&str], answers: Vec<(u16, Value)>) -> (Status, String, String, Vec<String>) {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let scratch = Scratch::new(&format!("against-{run}"));
        let (socket, requests) = fake_tenetd(&scratch.0, answers);
        let full: Vec<&str> = ["--socket", socket.to_str().unwrap()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        let mut out = Vec::new();
        let (status, said) = run_with(&full, &mut out);
        let made = requests.try_iter().collect();
        (status, String::from_utf8(out).unwrap(), said, made)
    }

    #[test]
    fn add_may_exist_reads_the_list_and_adds_nothing_when_the_record_is_there() {
        let red = json!([{"name": "red", "id": 100, "vlan": null, "hosts": []}]);
        let (status, out, said, made) = against(
            &["tenant", "add", "red", "--id", "100", "--may-exist"],
            vec![(200, red.clone())],
        );
        assert_eq!(
            (status, out.as_str(), said.as_str()),
            (Status::Done, "", "")
        );
        assert_eq!(made, ["GET /v1/tenants HTTP/1.1"]);
        let (status, _, said, made) = against(
            &[
                "tenant",
                "add",
                "red",
                "--id",
                "5",
                "--vlan",
                "7",
                "--may-exist",
            ],
            vec![(200, red)],
        );
        assert_eq!(status, Status::Done);
        assert_eq!(
            said,
            "tenetctl: tenant red exists: id is 100, not 5; vlan is -, not 7; left as it is\n"
        );
        assert_eq!(made.len(), 1);
        // Not there: added.
        let (status, out, _, made) = against(
            &[
                "host",
                "add",
                "c",
                "--underlay-ip",
                "10.0.0.3",
                "--may-exist",
            ],
            vec![
                (200, json!([])),
                (201, json!({"status": 201, "message": "applied"})),
            ],
        );
        assert_eq!((status, out.as_str()), (Status::Done, "applied\n"));
        assert_eq!(made, ["GET /v1/hosts HTTP/1.1", "POST /v1/hosts HTTP/1.1"]);
    }

    #[test]
    fn del_if_exists_takes_a_missing_record_as_done_but_not_an_unknown_path() {
        let missing = json!({"status": 404, "field": "prefix", "message": "tenant `red` has no route to 10.9.0.0/16"});
        let (status, out, said, _) = against(
            &["route", "del", "red", "10.9.0.0/16", "--if-exists"],
            vec![(404, missing.clone())],
        );
        assert_eq!(
            (status, out.as_str(), said.as_str()),
            (Status::Done, "", "")
        );
        let (status, _, said, _) = against(
            &["route", "del", "red", "10.9.0.0/16"],
            vec![(404, missing)],
        );
        assert_eq!(status, Status::Refused);
        assert!(said.contains("prefix: tenant `red` has no route"), "{said}");
        let unknown = json!({"status": 404, "field": "path", "message": "no resource DELETE /v1/routes/red/10.9.0.0"});
        let (status, _, _, _) = against(
            &["route", "del", "red", "10.9.0.0", "--if-exists"],
            vec![(404, unknown)],
        );
        assert_eq!(status, Status::Refused);
    }

    #[test]
    fn log_shows_and_sets_the_filter_and_a_bad_one_is_refused_naming_it() {
        let filter = json!({"filter": "info,control=debug"});
        let (status, out, _, made) = against(&["log"], vec![(200, filter.clone())]);
        assert_eq!(
            (status, out.as_str()),
            (Status::Done, "info,control=debug\n")
        );
        assert_eq!(made, ["GET /v1/log HTTP/1.1"]);
        let (status, out, _, made) =
            against(&["log", "set", "info,control=debug"], vec![(200, filter)]);
        assert_eq!(
            (status, out.as_str()),
            (Status::Done, "info,control=debug\n")
        );
        assert_eq!(made, ["PUT /v1/log HTTP/1.1"]);
        let bad = json!({"status": 400, "field": "filter", "message": "invalid filter directive"});
        let (status, out, said, _) = against(&["log", "set", "info,=x=y"], vec![(400, bad)]);
        assert_eq!((status, out.as_str()), (Status::Refused, ""));
        assert_eq!(said, "tenetctl: filter: invalid filter directive\n");
    }

    #[test]
    fn tenant_show_prints_what_tenetd_answers() {
        let scratch = Scratch::new("show");
        let answer = json!({"tenant": {"name": "red", "id": 100}, "endpoints": [],
                            "ports": ["r1"], "gateway_on": null});
        let (socket, _) = fake_tenetd(&scratch.0, vec![(200, answer)]);
        let mut out = Vec::new();
        let (status, said) = run_with(
            &[
                "--socket",
                socket.to_str().unwrap(),
                "tenant",
                "show",
                "red",
            ],
            &mut out,
        );
        assert_eq!((status, said.as_str()), (Status::Done, ""));
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("name             red\nid               100\n"),
            "{out}"
        );
    }

    #[test]
    fn a_closed_stdout_ends_quietly() {
        for args in [
            &["completions", "bash"][..],
            &["--socket", "/nonexistent", "completions", "zsh"],
        ] {
            let (status, said) = run_with(args, &mut Pipe::closed_after(0));
            assert_eq!((status, said.as_str()), (Status::Done, ""), "{args:?}");
        }
        let mut err = Vec::new();
        assert_eq!(
            emit(b"x", &mut Pipe::closed_after(0), &mut err),
            Status::Done
        );
        assert!(err.is_empty());
        // Any other failure to write is one, and said.
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(emit(b"x", &mut Full, &mut err), Status::Refused);
        assert!(String::from_utf8(err)
            .unwrap()
            .starts_with("tenetctl: writing to stdout: "));
    }

    #[test]
    fn watch_shows_rates_and_ends_quietly_when_stdout_closes() {
        let scratch = Scratch::new("watch");
        // Counters far above what moves between answers, so the totals cannot pass
        // for rates.
        let answers = (0..3)
            .map(|i| (200, stats(1_000_000_000_000 + 1_000 * i)))
            .collect();
        let (socket, requests) = fake_tenetd(&scratch.0, answers);
        let client = Client::new(&socket);
        let watch = Watch {
            client: &client,
            path: "/v1/stats",
            every: Duration::from_millis(20),
            terminal: false,
        };
        // Two screens, then the reader leaves (`| head`).
        let mut out = Pipe::closed_after(2);
        let mut err = Vec::new();
        assert_eq!(watch.run(&mut out, &mut err), Status::Done);
        assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
        assert_eq!(requests.iter().take(3).count(), 3);
        let shown = String::from_utf8(out.taken).unwrap();
        let (totals, rates) = shown.split_once("\nper second over the last ").unwrap();
        assert!(totals.starts_with("totals since start"), "{shown}");
        assert!(!totals.contains('\x1b'), "escapes in a pipe: {shown:?}");
        assert!(rates.contains("rx pkt/s"), "{shown}");
        // 1,000 packets in 20 ms or more: at most 50,000 a second, not the trillion
        // counted since start.
        let row = rates.lines().find(|l| l.starts_with("c1")).unwrap();
        let rx = row.split_whitespace().nth(1).unwrap();
        assert!(rx != "-" && !rx.ends_with('T'), "{row}");
    }

    #[test]
    fn watch_ends_with_status_3_when_tenetd_goes() {
        let scratch = Scratch::new("watch-gone");
        let (socket, _) = fake_tenetd(&scratch.0, vec![(200, stats(1))]);
        let client = Client::new(&socket);
        let watch = Watch {
            client: &client,
            path: "/v1/stats",
            every: Duration::from_millis(50),
            terminal: true,
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        assert_eq!(watch.run(&mut out, &mut err), Status::Unreachable);
        assert!(out.starts_with(b"\x1b[2J\x1b[Htotals since start"));
        let said = String::from_utf8(err).unwrap();
        assert!(said.contains(socket.to_str().unwrap()), "{said}");
    }

    /// A pcap of `packets` frames of 60 bytes.
    fn pcapng(packets: usize, lost: u64) -> Vec<u8> {
        use control::pcapng::*;
        let mut file = section("test");
        push_interface(&mut file, "c1");
        for i in 0..packets {
            let direction = dataplane::pipeline::capture::Direction::In;
            push_packet(&mut file, 0, i as u64, direction, &[0xab; 60]);
        }
        push_statistics(&mut file, 0, 9, packets as u64, lost);
        file
    }

    /// A stream that hands out a few bytes per read, as a socket may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn capture_to_dash_streams_the_capture_to_stdout_and_talks_on_stderr() {
        let raw = pcapng(2, 0);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            write_capture(Path::new("-"), Trickle(&raw), &mut out, &mut err),
            Status::Done
        );
        assert_eq!(out, raw);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "tenetctl: 2 packets written to stdout\n"
        );
        assert!(!Path::new("-").exists());
        // tcpdump gone early: a normal end, nothing said.
        let mut err = Vec::new();
        assert_eq!(
            write_capture(
                Path::new("-"),
                &raw[..],
                &mut Pipe::closed_after(0),
                &mut err
            ),
            Status::Done
        );
        assert!(err.is_empty());
    }

    #[test]
    fn capture_to_a_file_writes_it_and_says_so_on_stdout() {
        let scratch = Scratch::new("capture");
        let file = scratch.0.join("c.pcapng");
        let raw = pcapng(3, 2);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            write_capture(&file, &raw[..], &mut out, &mut err),
            Status::Done
        );
        assert_eq!(std::fs::read(&file).unwrap(), raw);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "3 packets written to {} (2 lost: the workers or this reader fell behind)\n",
                file.display()
            )
        );
        assert!(err.is_empty());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let nowhere = scratch.0.join("no-such-dir/c.pcapng");
        assert_eq!(
            write_capture(&nowhere, &raw[..], &mut out, &mut err),
            Status::Refused
        );
        assert!(String::from_utf8(err)
            .unwrap()
            .contains("no-such-dir/c.pcapng"));
    }

    #[test]
    fn capture_seconds_must_be_a_number_above_zero() {
        for bad in ["nan", "inf", "0", "-1", "soon"] {
            let e = Cli::try_parse_from([
                "tenetctl",
                "capture",
                "--port",
                "p",
                "--seconds",
                bad,
                "-w",
                "-",
            ])
            .unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("--seconds"), "{e}");
        }
        let ok = cli(&["capture", "--port", "p", "--seconds", "0.5", "-w", "-"]);
        assert!(matches!(ok.command, Cmd::Capture { seconds, .. } if seconds == 0.5));
        // Several ports, a filter; a protocol it does not know is refused by name.
        let ok = cli(&[
            "capture",
            "--port",
            "a",
            "--port",
            "b",
            "--ip",
            "10.1.0.2",
            "--protocol",
            "icmp",
            "-w",
            "-",
        ]);
        assert!(
            matches!(&ok.command, Cmd::Capture { ports, protocol: Some(p), .. }
            if ports == &["a", "b"] && p == "icmp")
        );
        let e = Cli::try_parse_from(["tenetctl", "capture", "--protocol", "sctp", "-w", "-"])
            .unwrap_err();
        assert!(e.to_string().contains("--protocol"), "{e}");
    }

    #[test]
    fn trace_takes_a_frame_a_flow_or_live_frames_of_a_port() {
        let live = cli(&["trace", "--port", "c1", "--live", "--count", "3"]);
        assert!(matches!(
            live.command,
            Cmd::Trace {
                live: true,
                count: Some(3),
                ..
            }
        ));
        for bad in [
            &["trace", "--port", "c1"][..],
            &["trace", "--live"],
            &["trace", "--port", "c1", "--frame", "00", "--live"],
            &["trace", "--port", "c1", "--frame", "00", "--count", "3"],
        ] {
            let mut args = vec!["tenetctl"];
            args.extend(bad);
            assert!(Cli::try_parse_from(&args).is_err(), "{bad:?}");
        }
    }
}
