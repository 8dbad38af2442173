//! `tenetctl`: the command line of a running tenetd, over its API socket.
//!
//! Exit status: 0 done, 1 refused (the API said no, or tenetd is unreachable), 2 usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use control::client::{encode, Client};
use serde_json::{json, Value};

/// Control a running tenetd.
#[derive(Debug, Parser)]
#[command(name = "tenetctl", version)]
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
    /// Counters: per port, per core, drops by reason.
    Stats {
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// The whole switch.
    Show,
    /// Run a frame through the pipeline with the live tables and print each decision.
    Trace {
        /// Ingress port.
        #[arg(long)]
        port: String,
        /// The frame, as hex.
        #[arg(long)]
        frame: String,
    },
    /// A pcap of what a port sends and receives, taken without stopping traffic.
    Capture {
        /// The port.
        #[arg(long)]
        port: String,
        /// Packets to capture.
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Longest capture, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// The pcap file to write.
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
    },
    /// Shell completions.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
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
    },
    /// Remove a route.
    Del {
        /// The tenant.
        tenant: String,
        /// Destination as added.
        prefix: String,
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
    },
    /// Withdraw a published port.
    Del {
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        protocol: String,
        /// The published port.
        #[arg(long)]
        host_port: u16,
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
    },
    /// Remove an endpoint.
    Del {
        /// Its tenant.
        #[arg(long)]
        tenant: String,
        /// Its MAC.
        #[arg(long)]
        mac: String,
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
    },
    /// Remove a host.
    Del {
        /// Its name.
        name: String,
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
}

/// An API request: method, path and JSON body.
type Request = (&'static str, String, Option<Value>);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (method, path, body): Request = match &cli.command {
        Cmd::Completions { shell } => {
            print_completions(*shell);
            return ExitCode::SUCCESS;
        }
        Cmd::Tenant(cmd) => tenant_request(cmd),
        Cmd::Route(cmd) => route_request(cmd),
        Cmd::Publish(cmd) => publish_request(cmd),
        Cmd::Endpoint(cmd) => endpoint_request(cmd),
        Cmd::Host(cmd) => host_request(cmd),
        Cmd::Port(cmd) => port_request(cmd),
        Cmd::Stats { .. } => ("GET", "/v1/stats".into(), None),
        Cmd::Capture {
            port,
            count,
            seconds,
            ..
        } => (
            "POST",
            "/v1/capture".into(),
            Some(json!({"port": port, "count": count, "seconds": seconds})),
        ),
        Cmd::Trace { port, frame } => (
            "POST",
            "/v1/trace".into(),
            Some(json!({"port": port, "frame": frame})),
        ),
        Cmd::Show => ("GET", "/v1/show".into(), None),
    };
    let client = Client::new(&cli.socket);
    if let Cmd::Stats { watch: true } = &cli.command {
        return watch(&client, &cli.command, (method, path, body));
    }
    let answer = match client.call(method, &path, body.as_ref()) {
        Ok(answer) => answer,
        Err(message) => {
            eprintln!("tenetctl: {message}");
            return ExitCode::from(1);
        }
    };
    if !(200..300).contains(&answer.status) {
        report_refusal(&answer.body, cli.json);
        return ExitCode::from(1);
    }
    if let Cmd::Capture { file, .. } = &cli.command {
        return write_capture(file, &answer.raw);
    }
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer.body).unwrap_or_default()
        );
    } else {
        print!("{}", render(&cli.command, &answer.body));
    }
    ExitCode::SUCCESS
}

fn print_completions(shell: clap_complete::Shell) {
    use clap::CommandFactory;
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "tenetctl",
        &mut std::io::stdout(),
    );
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
        TenantCmd::Del { name } => ("DELETE", format!("/v1/tenants/{name}"), None),
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
        } => (
            "POST",
            "/v1/routes".into(),
            Some(json!({"tenant": tenant, "prefix": prefix, "via": via})),
        ),
        RouteCmd::Del { tenant, prefix } => {
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
        } => (
            "POST",
            "/v1/endpoints".into(),
            Some(json!({"tenant": tenant, "mac": mac, "port": port, "host": host, "ip": ip})),
        ),
        EndpointCmd::Del { tenant, mac } => (
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
        } => (
            "POST",
            "/v1/hosts".into(),
            Some(json!({"name": name, "underlay_ip": underlay_ip, "mac": mac, "egress": egress})),
        ),
        HostCmd::Del { name } => ("DELETE", format!("/v1/hosts/{name}"), None),
        HostCmd::List => ("GET", "/v1/hosts".into(), None),
    }
}

fn port_request(cmd: &PortCmd) -> Request {
    match cmd {
        PortCmd::List => ("GET", "/v1/ports".into(), None),
        PortCmd::Add(p) => ("POST", "/v1/ports".into(), Some(port_spec(p))),
        PortCmd::Del { name } => ("DELETE", format!("/v1/ports/{name}"), None),
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

/// `stats --watch`: asks every second until tenetd stops answering.
fn watch(client: &Client, command: &Cmd, (method, path, body): Request) -> ExitCode {
    loop {
        match client.call(method, &path, body.as_ref()) {
            Ok(answer) if (200..300).contains(&answer.status) => {
                // Clear the screen and home the cursor, like watch(1).
                print!("\x1b[2J\x1b[H{}", render(command, &answer.body));
                let _ = std::io::stdout().flush();
            }
            Ok(_) | Err(_) => {
                eprintln!("tenetctl: tenetd stopped answering");
                return ExitCode::from(1);
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn report_refusal(body: &Value, json: bool) {
    let field = body["field"].as_str().unwrap_or("");
    let message = body["message"].as_str().unwrap_or("refused");
    if json {
        println!("{body}");
    } else if field.is_empty() {
        eprintln!("tenetctl: {message}");
    } else {
        eprintln!("tenetctl: {field}: {message}");
    }
}

/// Writes the capture's pcap to `file` and says how many packets it holds.
fn write_capture(file: &Path, raw: &[u8]) -> ExitCode {
    // A pcap: 24-byte header, then 16 bytes and the frame per packet.
    let mut packets = 0;
    let mut at = 24;
    while at + 16 <= raw.len() {
        let len = u32::from_le_bytes([raw[at + 8], raw[at + 9], raw[at + 10], raw[at + 11]]);
        at += 16 + len as usize;
        packets += 1;
    }
    if let Err(e) = std::fs::write(file, raw) {
        eprintln!("tenetctl: writing {}: {e}", file.display());
        return ExitCode::from(1);
    }
    println!("{packets} packets written to {}", file.display());
    ExitCode::SUCCESS
}

/// Human-readable output: one line per item, aligned.
fn render(command: &Cmd, body: &Value) -> String {
    match command {
        Cmd::Tenant(TenantCmd::List) => tenants_table(body),
        Cmd::Endpoint(EndpointCmd::List) => endpoints_table(body),
        Cmd::Host(HostCmd::List) => hosts_table(body),
        Cmd::Port(PortCmd::List) => ports_table(body),
        Cmd::Route(RouteCmd::List) => routes_table(body),
        Cmd::Publish(PublishCmd::List) => published_table(body),
        Cmd::Trace { .. } => trace_text(body),
        Cmd::Stats { .. } => stats_text(body),
        Cmd::Show => show_text(body),
        _ => format!("{}\n", text(&body["message"])),
    }
}

/// A JSON value as a table cell: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn tenants_table(body: &Value) -> String {
    let mut out = format!(
        "{:<20} {:>10} {:>6} {:>9}  hosts\n",
        "name", "id", "vlan", "max_macs"
    );
    for t in body.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:>10} {:>6} {:>9}  {}\n",
            text(&t["name"]),
            text(&t["id"]),
            text(&t["vlan"]),
            text(&t["max_macs"]),
            t["hosts"]
                .as_array()
                .map(|h| h.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        ));
    }
    out
}

fn endpoints_table(body: &Value) -> String {
    let mut out = format!("{:<20} {:<18} {:<14} host\n", "tenant", "mac", "port");
    for e in body.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:<18} {:<14} {}\n",
            text(&e["tenant"]),
            text(&e["mac"]),
            text(&e["port"]),
            text(&e["host"])
        ));
    }
    out
}

fn hosts_table(body: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<20} {:<18} egress\n",
        "name", "underlay_ip", "mac"
    );
    for h in body.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:<20} {:<18} {}\n",
            text(&h["name"]),
            text(&h["underlay_ip"]),
            text(&h["mac"]),
            text(&h["egress"])
        ));
    }
    out
}

fn routes_table(body: &Value) -> String {
    let mut out = format!("{:<20} {:<20} via\n", "tenant", "prefix");
    for r in body.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:<20} {}\n",
            text(&r["tenant"]),
            text(&r["prefix"]),
            text(&r["via"])
        ));
    }
    out
}

fn published_table(body: &Value) -> String {
    let mut out = format!(
        "{:<20} {:<8} {:>9}  to\n",
        "tenant", "protocol", "host_port"
    );
    for p in body.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:<8} {:>9}  {}:{}\n",
            text(&p["tenant"]),
            text(&p["protocol"]),
            text(&p["host_port"]),
            text(&p["ip"]),
            text(&p["port"])
        ));
    }
    out
}

fn trace_text(body: &Value) -> String {
    let mut out = String::new();
    for (i, d) in body["decisions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.push_str(&format!("{:>2}. {}\n", i + 1, text(d)));
    }
    for o in body["outputs"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "out {}: {}\n",
            text(&o["port"]),
            text(&o["frame"])
        ));
    }
    if body["outputs"].as_array().is_none_or(|o| o.is_empty()) {
        out.push_str("no output\n");
    }
    out
}

fn stats_text(body: &Value) -> String {
    let mut out = ports_table(&body["ports"]);
    for c in body["cores"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "core {:<3} rx {:>14} tx {:>14} cycles/pkt {:>8.1} handed off {:>10}\n",
            text(&c["core"]),
            text(&c["rx_packets"]),
            text(&c["tx_packets"]),
            c["cycles_per_packet"].as_f64().unwrap_or(0.0),
            text(&c["handed_off"])
        ));
    }
    if let Some(drops) = body["drops"].as_object() {
        for (name, n) in drops.iter().filter(|(_, n)| n.as_u64().unwrap_or(0) > 0) {
            out.push_str(&format!("drop {name:<22} {n:>14}\n"));
        }
    }
    out.push_str(&format!(
        "learned MACs {}\n",
        text(&body["control"]["learned_macs"])
    ));
    out
}

fn show_text(body: &Value) -> String {
    let mut out = format!(
        "design {}  host {}\n",
        text(&body["design"]),
        text(&body["host"])
    );
    for t in body["tenants"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  tenant {} (id {}, vlan {})\n",
            text(&t["name"]),
            text(&t["id"]),
            text(&t["vlan"])
        ));
    }
    for h in body["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  host {} {}\n",
            text(&h["name"]),
            text(&h["underlay_ip"])
        ));
    }
    out.push_str(&ports_table(&body["ports"]));
    out.push_str(&format!("learned MACs {}\n", text(&body["learned_macs"])));
    out
}

fn ports_table(ports: &Value) -> String {
    let mut out = format!(
        "{:<14} {:<11} {:<9} {:<16} {:<5} {:>5} {:<22} {:>12} {:>12}\n",
        "port", "backend", "state", "device", "link", "mtu", "role", "rx", "tx"
    );
    for p in ports.as_array().into_iter().flatten() {
        let role = &p["role"];
        let role_text = match role["role"].as_str() {
            Some("access") => format!("access:{}", role["tenant"].as_str().unwrap_or("")),
            Some("trunk") => format!(
                "trunk:{}",
                role["tenants"]
                    .as_array()
                    .map(|t| t
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","))
                    .unwrap_or_default()
            ),
            Some(other) => other.to_owned(),
            None => "-".to_owned(),
        };
        let count = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
        out.push_str(&format!(
            "{:<14} {:<11} {:<9} {:<16} {:<5} {:>5} {:<22} {:>12} {:>12}\n",
            p["name"].as_str().unwrap_or(""),
            p["backend"].as_str().unwrap_or(""),
            p["state"].as_str().unwrap_or("up"),
            p["device"].as_str().unwrap_or("-"),
            if p["link_up"].as_bool().unwrap_or(false) {
                "up"
            } else {
                "down"
            },
            count(&p["mtu"]),
            role_text,
            count(&p["rx_packets"]),
            count(&p["tx_packets"])
        ));
        if let Some(error) = p["error"].as_str() {
            out.push_str(&format!("  {error}\n"));
        }
    }
    out
}
