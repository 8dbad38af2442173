//! Human-readable output of the API's answers (`--json` prints them as they are).

use serde_json::Value;

use crate::table::{Align, Table};
use crate::{AddressCmd, Cmd, EndpointCmd, HostCmd, PortCmd, PublishCmd, RouteCmd, TenantCmd};

/// The answer to `command`, as text.
pub fn render(command: &Cmd, body: &Value) -> String {
    match command {
        Cmd::Tenant(TenantCmd::List) => tenants_table(body),
        Cmd::Tenant(TenantCmd::Show { .. }) => tenant_text(body),
        Cmd::Endpoint(EndpointCmd::List) => endpoints_table(body),
        Cmd::Host(HostCmd::List) => hosts_table(body),
        Cmd::Port(PortCmd::List) => ports_table(body),
        Cmd::Route(RouteCmd::List) => routes_table(body),
        Cmd::Publish(PublishCmd::List) => published_table(body),
        Cmd::Trace { live: true, .. } => live_trace_text(body),
        Cmd::Trace { .. } => trace_text(body),
        Cmd::Stats { .. } => stats_text(body),
        Cmd::Show => show_text(body),
        Cmd::Fdb { tenant } => fdb_table(&only_tenant(body, tenant.as_deref())),
        Cmd::Neigh { tenant } => neighbors_table(&only_tenant(body, tenant.as_deref())),
        Cmd::Tunnel => tunnels_table(body),
        Cmd::Nat { .. } => nat_table(body),
        Cmd::Address(AddressCmd::List { tenant }) => {
            addresses_table(&only_tenant(body, tenant.as_deref()))
        }
        Cmd::Address(AddressCmd::Claim { .. }) => claim_text(body),
        Cmd::Log { .. } => format!("{}\n", text(&body["filter"])),
        _ => message_text(body),
    }
}

/// A change's answer is `{"status", "message"}`; anything else is shown whole rather
/// than as a lone `-`.
fn message_text(body: &Value) -> String {
    match body {
        Value::Object(map) => match map.get("message") {
            Some(Value::String(message)) => format!("{message}\n"),
            _ => {
                let mut t = Table::plain(&[Align::Left, Align::Left]);
                for (key, value) in map {
                    t.row(vec![key.clone(), text(value)]);
                }
                t.render()
            }
        },
        Value::Null => String::new(),
        other => format!("{}\n", text(other)),
    }
}

/// A JSON value as a cell: strings unquoted, null as `-`, lists joined by commas
/// (empty as `-`).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// An endpoint's MAC, or its MACs when it stands for several.
fn macs(e: &Value) -> String {
    match &e["mac"] {
        Value::Null => text(&e["macs"]),
        mac => text(mac),
    }
}

fn tenants_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("name", Align::Left),
        ("id", Align::Right),
        ("vlan", Align::Right),
        ("max_macs", Align::Right),
        ("hosts", Align::Left),
    ]);
    for tenant in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&tenant["name"]),
            text(&tenant["id"]),
            text(&tenant["vlan"]),
            text(&tenant["max_macs"]),
            text(&tenant["hosts"]),
        ]);
    }
    t.render()
}

/// The tenant's fields the API always knows of, in the order `tenant add` takes them;
/// fields it adds later are shown after these.
const TENANT_FIELDS: [&str; 11] = [
    "name",
    "id",
    "vlan",
    "max_macs",
    "hosts",
    "subnets",
    "gateway_host",
    "snat_ip",
    "router_mac",
    "peers",
    "max_connections",
];

/// `tenant show`: `{"tenant": {..}, "endpoints": [..], "ports": [..], "gateway_on"}`
/// as a key/value block, then its endpoints as a table.
fn tenant_text(body: &Value) -> String {
    let tenant = &body["tenant"];
    let mut block = Table::plain(&[Align::Left, Align::Left]);
    for key in TENANT_FIELDS {
        block.row(vec![key.to_owned(), text(&tenant[key])]);
    }
    for (key, value) in tenant.as_object().into_iter().flatten() {
        if !TENANT_FIELDS.contains(&key.as_str()) {
            block.row(vec![key.clone(), text(value)]);
        }
    }
    block.row(vec!["gateway_on".to_owned(), text(&body["gateway_on"])]);
    block.row(vec!["ports".to_owned(), text(&body["ports"])]);
    let endpoints = body["endpoints"].as_array().map_or(&[][..], Vec::as_slice);
    if endpoints.is_empty() {
        block.row(vec!["endpoints".to_owned(), "-".to_owned()]);
        return block.render();
    }
    let mut t = Table::new(&[
        ("mac", Align::Left),
        ("port", Align::Left),
        ("host", Align::Left),
        ("ip", Align::Left),
    ]);
    for e in endpoints {
        t.row(vec![
            macs(e),
            text(&e["port"]),
            text(&e["host"]),
            text(&e["ip"]),
        ]);
    }
    format!("{}\nendpoints\n{}", block.render(), t.render())
}

fn endpoints_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("mac", Align::Left),
        ("port", Align::Left),
        ("host", Align::Left),
    ]);
    for e in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&e["tenant"]),
            macs(e),
            text(&e["port"]),
            text(&e["host"]),
        ]);
    }
    t.render()
}

/// The rows of `tenant` alone (`-`: those of no tenant), or all.
fn only_tenant(body: &Value, tenant: Option<&str>) -> Value {
    let Some(tenant) = tenant else {
        return body.clone();
    };
    let wanted = |row: &&Value| match &row["tenant"] {
        Value::Null => tenant == "-",
        name => name == tenant,
    };
    Value::Array(
        body.as_array()
            .into_iter()
            .flatten()
            .filter(wanted)
            .cloned()
            .collect(),
    )
}

fn fdb_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("mac", Align::Left),
        ("type", Align::Left),
        ("at", Align::Left),
        ("age_s", Align::Right),
    ]);
    for e in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&e["tenant"]),
            text(&e["mac"]),
            text(&e["type"]),
            text(&e["at"]),
            text(&e["age_s"]),
        ]);
    }
    t.render()
}

fn neighbors_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("ip", Align::Left),
        ("mac", Align::Left),
        ("age_s", Align::Right),
    ]);
    for n in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&n["tenant"]),
            text(&n["ip"]),
            text(&n["mac"]),
            text(&n["age_s"]),
        ]);
    }
    t.render()
}

/// `nat`: the sessions, and which workers hold more than were shown.
fn nat_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("proto", Align::Left),
        ("inside", Align::Left),
        ("outside", Align::Left),
        ("remote", Align::Left),
        ("state", Align::Left),
        ("idle_s", Align::Right),
        ("core", Align::Right),
    ]);
    for s in body["sessions"].as_array().into_iter().flatten() {
        t.row(vec![
            text(&s["tenant"]),
            text(&s["protocol"]),
            text(&s["inside"]),
            text(&s["outside"]),
            text(&s["remote"]),
            text(&s["state"]),
            text(&s["idle_s"]),
            text(&s["core"]),
        ]);
    }
    let mut out = t.render();
    for core in body["truncated"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "the worker on CPU {} holds more: its first {} shown\n",
            text(core),
            text(&body["limit"])
        ));
    }
    out
}

fn tunnels_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("host", Align::Left),
        ("remote_ip", Align::Left),
        ("next_hop", Align::Left),
        ("tenants", Align::Left),
    ]);
    for n in body.as_array().into_iter().flatten() {
        let resolved = if n["resolved"].as_bool().unwrap_or(false) {
            "resolved"
        } else {
            "unresolved"
        };
        t.row(vec![
            text(&n["host"]),
            text(&n["remote_ip"]),
            resolved.to_owned(),
            text(&n["tenants"]),
        ]);
    }
    t.render()
}

fn hosts_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("name", Align::Left),
        ("underlay_ip", Align::Left),
        ("mac", Align::Left),
        ("egress", Align::Left),
    ]);
    for h in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&h["name"]),
            text(&h["underlay_ip"]),
            text(&h["mac"]),
            text(&h["egress"]),
        ]);
    }
    t.render()
}

fn routes_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("prefix", Align::Left),
        ("via", Align::Left),
    ]);
    for r in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&r["tenant"]),
            text(&r["prefix"]),
            text(&r["via"]),
        ]);
    }
    t.render()
}

fn published_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("protocol", Align::Left),
        ("host_port", Align::Right),
        ("to", Align::Left),
    ]);
    for p in body.as_array().into_iter().flatten() {
        t.row(vec![
            text(&p["tenant"]),
            text(&p["protocol"]),
            text(&p["host_port"]),
            format!("{}:{}", text(&p["ip"]), text(&p["port"])),
        ]);
    }
    t.render()
}

/// `address list`: the host that claimed each, `here` for this one (the API's none).
fn addresses_table(body: &Value) -> String {
    let mut t = Table::new(&[
        ("tenant", Align::Left),
        ("address", Align::Left),
        ("owner", Align::Left),
        ("host", Align::Left),
    ]);
    for a in body.as_array().into_iter().flatten() {
        let host = match &a["host"] {
            Value::Null => "here".to_owned(),
            host => text(host),
        };
        t.row(vec![
            text(&a["tenant"]),
            text(&a["ip"]),
            text(&a["owner"]),
            host,
        ]);
    }
    t.render()
}

/// `address claim`: the address with its prefix, the gateway, and whether the owner
/// held it already (tenetd answers 200 then, 201 for a new claim).
fn claim_text(body: &Value) -> String {
    let how = if body["status"].as_u64() == Some(200) {
        "held already by"
    } else {
        "claimed for"
    };
    format!(
        "{}/{} {how} {} (tenant {}, gateway {})\n",
        text(&body["ip"]),
        text(&body["prefix"]),
        text(&body["owner"]),
        text(&body["tenant"]),
        text(&body["gateway"])
    )
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

/// `trace --live`: each frame as VPP's `show trace` shows it: when, where, what,
/// then the decisions in order and where it went.
fn live_trace_text(body: &Value) -> String {
    let packets = body.as_array().map(Vec::as_slice).unwrap_or_default();
    if packets.is_empty() {
        return "no frame came in time\n".to_owned();
    }
    let mut out = String::new();
    for (i, p) in packets.iter().enumerate() {
        out.push_str(&format!(
            "Packet {}: worker {}, {:.6} s, port {}, {} bytes\n  {}\n",
            i + 1,
            text(&p["worker"]),
            p["seconds"].as_f64().unwrap_or(0.0),
            text(&p["port"]),
            text(&p["length"]),
            text(&p["summary"]),
        ));
        for (n, d) in p["decisions"].as_array().into_iter().flatten().enumerate() {
            out.push_str(&format!("  {:>2}. {}\n", n + 1, text(d)));
        }
        let outputs: Vec<String> = p["outputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        match outputs.is_empty() {
            true => out.push_str("  out: none\n"),
            false => out.push_str(&format!("  out: {}\n", outputs.join(", "))),
        }
        out.push('\n');
    }
    out
}

/// `stats`: the ports, the cores, the drops by reason (those that happened) and the
/// control plane's learned MACs.
pub fn stats_text(body: &Value) -> String {
    let mut out = ports_table(&body["ports"]);
    let mut cores = Table::new(&[
        ("core", Align::Right),
        ("rx", Align::Right),
        ("tx", Align::Right),
        ("cycles/pkt", Align::Right),
        ("handed_off", Align::Right),
        ("spread", Align::Right),
    ]);
    for c in body["cores"].as_array().into_iter().flatten() {
        cores.row(vec![
            text(&c["core"]),
            text(&c["rx_packets"]),
            text(&c["tx_packets"]),
            format!("{:.1}", c["cycles_per_packet"].as_f64().unwrap_or(0.0)),
            text(&c["handed_off"]),
            text(&c["spread"]),
        ]);
    }
    if !cores.is_empty() {
        out.push('\n');
        out.push_str(&cores.render());
    }
    let mut drops = Table::new(&[("drop", Align::Left), ("packets", Align::Right)]);
    for (name, n) in body["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
    {
        drops.row(vec![name.clone(), text(n)]);
    }
    if !drops.is_empty() {
        out.push('\n');
        out.push_str(&drops.render());
    }
    out.push_str(&format!(
        "\nlearned MACs {}\n",
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

/// A port's role as one word: `access:red`, `trunk:red,blue`, `uplink`. A trunk of
/// more than [`TRUNK_TENANTS_SHOWN`] tenants names those and counts the rest
/// (`trunk:t0,t1,t2,t3,+996`), so the table keeps its shape; `--json` has them all.
fn role_text(role: &Value) -> String {
    match role["role"].as_str() {
        Some("access") => format!("access:{}", role["tenant"].as_str().unwrap_or("")),
        Some("trunk") => {
            let tenants: Vec<&str> = role["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let shown = tenants.len().min(TRUNK_TENANTS_SHOWN);
            let mut text = format!("trunk:{}", tenants[..shown].join(","));
            if tenants.len() > shown {
                text.push_str(&format!(",+{}", tenants.len() - shown));
            }
            text
        }
        Some(other) => other.to_owned(),
        None => "-".to_owned(),
    }
}

/// Tenants a trunk's role names in a table.
const TRUNK_TENANTS_SHOWN: usize = 4;

fn ports_table(ports: &Value) -> String {
    let mut t = Table::new(&[
        ("port", Align::Left),
        ("backend", Align::Left),
        ("state", Align::Left),
        ("device", Align::Left),
        ("link", Align::Left),
        ("mtu", Align::Right),
        ("role", Align::Left),
        ("rx", Align::Right),
        ("tx", Align::Right),
    ]);
    for p in ports.as_array().into_iter().flatten() {
        let count = |v: &Value| v.as_u64().map_or_else(|| "-".to_owned(), |n| n.to_string());
        t.row(vec![
            p["name"].as_str().unwrap_or("").to_owned(),
            p["backend"].as_str().unwrap_or("").to_owned(),
            p["state"].as_str().unwrap_or("up").to_owned(),
            p["device"].as_str().unwrap_or("-").to_owned(),
            if p["link_up"].as_bool().unwrap_or(false) {
                "up"
            } else {
                "down"
            }
            .to_owned(),
            count(&p["mtu"]),
            role_text(&p["role"]),
            count(&p["rx_packets"]),
            count(&p["tx_packets"]),
        ]);
        if let Some(error) = p["error"].as_str() {
            t.note(error.to_owned());
        }
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fdb_neighbour_and_tunnel_tables_name_everything_and_filter_by_tenant() {
        let fdb = json!([
            {"tenant": "blue", "mac": "02:00:00:00:0b:01", "type": "static", "at": "host b", "age_s": null},
            {"tenant": "red", "mac": "02:00:00:00:0a:01", "type": "learned", "at": "port red-c1", "age_s": 12},
            {"tenant": "red", "mac": "02:7e:00:00:00:64", "type": "static", "at": "router", "age_s": null},
        ]);
        assert_eq!(
            render(&Cmd::Fdb { tenant: None }, &fdb),
            "\
tenant  mac                type     at           age_s
blue    02:00:00:00:0b:01  static   host b           -
red     02:00:00:00:0a:01  learned  port red-c1     12
red     02:7e:00:00:00:64  static   router           -
"
        );
        assert_eq!(
            render(
                &Cmd::Fdb {
                    tenant: Some("blue".into())
                },
                &fdb
            ),
            "\
tenant  mac                type    at      age_s
blue    02:00:00:00:0b:01  static  host b      -
"
        );
        let neighbors = json!([
            {"tenant": null, "ip": "192.168.77.254", "mac": "02:00:00:00:0c:fe", "age_s": 3},
            {"tenant": "red", "ip": "10.1.0.5", "mac": "02:00:00:00:0a:01", "age_s": 40},
        ]);
        assert_eq!(
            render(
                &Cmd::Neigh {
                    tenant: Some("-".into())
                },
                &neighbors
            ),
            "\
tenant  ip              mac                age_s
-       192.168.77.254  02:00:00:00:0c:fe      3
"
        );
        let tunnels = json!([
            {"host": "b", "remote_ip": "192.168.77.2", "resolved": true, "tenants": ["blue", "red"]},
            {"host": "c", "remote_ip": "10.9.0.3", "resolved": false, "tenants": []},
        ]);
        assert_eq!(
            render(&Cmd::Tunnel, &tunnels),
            "\
host  remote_ip     next_hop    tenants
b     192.168.77.2  resolved    blue,red
c     10.9.0.3      unresolved  -
"
        );
        let sessions = json!({"limit": 10000, "truncated": [1], "sessions": [
            {"core": 1, "tenant": "red", "protocol": "tcp", "inside": "10.1.0.5:40112",
             "outside": "198.18.0.1:20007", "remote": "203.0.113.10:5201", "idle_s": 2,
             "state": "established"},
        ]});
        assert_eq!(
            render(
                &Cmd::Nat {
                    tenant: Some("red".into())
                },
                &sessions
            ),
            "\
tenant  proto  inside          outside           remote             state        idle_s  core
red     tcp    10.1.0.5:40112  198.18.0.1:20007  203.0.113.10:5201  established       2     1
the worker on CPU 1 holds more: its first 10000 shown
"
        );
    }

    fn show_red() -> Cmd {
        Cmd::Tenant(TenantCmd::Show { name: "red".into() })
    }

    #[test]
    fn tenant_show_prints_the_tenant_its_ports_and_endpoints() {
        // As tenetd's GET /v1/tenants/red answers.
        let answer = json!({
            "tenant": {"name": "red", "id": 100, "vlan": 10, "max_macs": null, "hosts": ["a", "b"],
                       "subnets": ["10.1.0.1/24", "10.2.0.1/24"], "gateway_host": "central",
                       "peers": ["blue"]},
            "endpoints": [
                {"tenant": "red", "mac": "02:00:00:00:0a:01", "macs": null, "port": "r1",
                 "host": null, "ip": "10.1.0.5"},
                {"tenant": "red", "mac": null, "macs": ["02:00:00:00:0b:01", "02:00:00:00:0b:02"],
                 "port": null, "host": "b"},
            ],
            "ports": ["r1", "r2"],
            "gateway_on": "a",
        });
        assert_eq!(
            render(&show_red(), &answer),
            "\
name             red
id               100
vlan             10
max_macs         -
hosts            a,b
subnets          10.1.0.1/24,10.2.0.1/24
gateway_host     central
snat_ip          -
router_mac       -
peers            blue
max_connections  -
gateway_on       a
ports            r1,r2

endpoints
mac                                  port  host  ip
02:00:00:00:0a:01                    r1    -     10.1.0.5
02:00:00:00:0b:01,02:00:00:00:0b:02  -     b     -
"
        );
    }

    #[test]
    fn tenant_show_without_endpoints_keeps_fields_it_does_not_know() {
        let answer = json!({
            "tenant": {"name": "blue", "id": 7, "vlan": null, "max_macs": 64, "hosts": [],
                       "snat_ip": "192.0.2.9", "max_connections": 500, "colour": "blue"},
            "endpoints": [],
            "ports": [],
            "gateway_on": null,
        });
        assert_eq!(
            render(&show_red(), &answer),
            "\
name             blue
id               7
vlan             -
max_macs         64
hosts            -
subnets          -
gateway_host     -
snat_ip          192.0.2.9
router_mac       -
peers            -
max_connections  500
colour           blue
gateway_on       -
ports            -
endpoints        -
"
        );
    }

    #[test]
    fn addresses_show_the_claiming_host_or_here_and_filter_by_tenant() {
        // As GET /v1/addresses answers: no host is this one.
        let addresses = json!([
            {"tenant": "red", "ip": "10.1.0.5", "owner": "cni:net:abc:eth0"},
            {"tenant": "blue", "ip": "10.2.0.17", "owner": "docker:e1", "host": "b"},
            {"tenant": "red", "ip": "10.1.0.6", "owner": "web", "host": null},
        ]);
        let list = |tenant: Option<&str>| {
            render(
                &Cmd::Address(AddressCmd::List {
                    tenant: tenant.map(str::to_owned),
                }),
                &addresses,
            )
        };
        assert_eq!(
            list(None),
            "\
tenant  address    owner             host
red     10.1.0.5   cni:net:abc:eth0  here
blue    10.2.0.17  docker:e1         b
red     10.1.0.6   web               here
"
        );
        assert_eq!(
            list(Some("blue")),
            "\
tenant  address    owner      host
blue    10.2.0.17  docker:e1  b
"
        );
        let claim = |status| {
            let body = json!({"status": status, "tenant": "red", "owner": "web", "ip": "10.1.0.6",
                              "prefix": 24, "gateway": "10.1.0.1"});
            let cmd = Cmd::Address(AddressCmd::Claim {
                tenant: "red".into(),
                owner: "web".into(),
                ip: None,
                subnet: None,
            });
            render(&cmd, &body)
        };
        assert_eq!(
            claim(201),
            "10.1.0.6/24 claimed for web (tenant red, gateway 10.1.0.1)\n"
        );
        assert_eq!(
            claim(200),
            "10.1.0.6/24 held already by web (tenant red, gateway 10.1.0.1)\n"
        );
    }

    #[test]
    fn log_prints_the_filter() {
        let filter = json!({"filter": "info,control=debug"});
        assert_eq!(
            render(&Cmd::Log { action: None }, &filter),
            "info,control=debug\n"
        );
    }

    #[test]
    fn a_change_prints_its_message() {
        let del = Cmd::Tenant(TenantCmd::Del {
            name: "red".into(),
            if_exists: false,
        });
        let answer = json!({"status": 200, "message": "applied"});
        assert_eq!(render(&del, &answer), "applied\n");
    }

    #[test]
    fn port_columns_fit_their_widest_cell_and_counters_keep_right() {
        let ports = json!([
            {"name": "uplink0", "backend": "vf", "state": "up", "device": "0000:3b:02.0",
             "link_up": true, "mtu": 9000, "role": {"role": "uplink"},
             "rx_packets": 123_456_789_012_u64, "tx_packets": 7},
            {"name": "red-container-with-a-long-name", "backend": "af-xdp", "state": "up",
             "device": "net_af_xdp0", "link_up": false, "mtu": 1500,
             "role": {"role": "trunk", "tenants": ["red", "blue"]},
             "rx_packets": 0, "tx_packets": 42},
            {"name": "gone", "backend": "tap", "state": "down", "error": "no device tap9",
             "role": {"role": "access", "tenant": "red"}, "link_up": false},
            {"name": "big", "backend": "vf", "state": "up", "device": "0000:3b:02.1",
             "link_up": true, "mtu": 1500,
             "role": {"role": "trunk", "tenants": ["t0", "t1", "t2", "t3", "t4", "t5"]},
             "rx_packets": 1, "tx_packets": 2},
        ]);
        assert_eq!(
            render(&Cmd::Port(PortCmd::List), &ports),
            "\
port                            backend  state  device        link   mtu  role                            rx  tx
uplink0                         vf       up     0000:3b:02.0  up    9000  uplink                123456789012   7
red-container-with-a-long-name  af-xdp   up     net_af_xdp0   down  1500  trunk:red,blue                   0  42
gone                            tap      down   -             down     -  access:red                       -   -
  no device tap9
big                             vf       up     0000:3b:02.1  up    1500  trunk:t0,t1,t2,t3,+2             1   2
"
        );
    }

    #[test]
    fn stats_align_cores_and_drops() {
        // As GET /v1/stats answers, cut to what the text shows.
        let stats = json!({
            "ports": [{"name": "c1", "backend": "af-packet", "state": "up", "device": "net_af_packet0",
                       "link_up": true, "mtu": 1500, "role": {"role": "access", "tenant": "red"},
                       "rx_packets": 1_000_000, "tx_packets": 999_999}],
            "cores": [
                {"core": 1, "rx_packets": 123_456_789, "tx_packets": 5, "cycles_per_packet": 87.25,
                 "handed_off": 0, "spread": 0, "drops": {}},
                {"core": 12, "rx_packets": 3, "tx_packets": 4_000_000_000_u64, "cycles_per_packet": 1234.0,
                 "handed_off": 17, "spread": 250_000, "drops": {}},
            ],
            "drops": {"no-route": 0, "tagged-on-access": 12_345_678, "ttl": 3},
            "control": {"learned_macs": 4},
        });
        assert_eq!(
            render(&Cmd::Stats { watch: false }, &stats),
            "\
port  backend    state  device          link   mtu  role             rx      tx
c1    af-packet  up     net_af_packet0  up    1500  access:red  1000000  999999

core         rx          tx  cycles/pkt  handed_off  spread
   1  123456789           5        87.2           0       0
  12          3  4000000000      1234.0          17  250000

drop               packets
tagged-on-access  12345678
ttl                      3

learned MACs 4
"
        );
    }

    #[test]
    fn every_list_is_a_table() {
        let endpoints = json!([
            {"tenant": "red", "mac": "02:00:00:00:0a:01", "port": "r1", "host": null},
            {"tenant": "a-long-tenant", "mac": null, "macs": ["02:00:00:00:0b:01", "02:00:00:00:0b:02"],
             "port": null, "host": "b"},
        ]);
        assert_eq!(
            render(&Cmd::Endpoint(EndpointCmd::List), &endpoints),
            "\
tenant         mac                                  port  host
red            02:00:00:00:0a:01                    r1    -
a-long-tenant  02:00:00:00:0b:01,02:00:00:00:0b:02  -     b
"
        );
        let tenants = json!([
            {"name": "red", "id": 100, "vlan": 10, "max_macs": null, "hosts": ["a", "b"]},
            {"name": "blue", "id": 4_000_000_000_u32, "vlan": null, "max_macs": 64, "hosts": []},
        ]);
        assert_eq!(
            render(&Cmd::Tenant(TenantCmd::List), &tenants),
            "\
name          id  vlan  max_macs  hosts
red          100    10         -  a,b
blue  4000000000     -        64  -
"
        );
        let hosts =
            json!([{"name": "a", "underlay_ip": "192.168.50.1/24", "mac": null, "egress": true}]);
        assert_eq!(
            render(&Cmd::Host(HostCmd::List), &hosts),
            "\
name  underlay_ip      mac  egress
a     192.168.50.1/24  -    true
"
        );
        let routes = json!([{"tenant": "red", "prefix": "10.9.0.0/16", "via": "10.1.0.9"}]);
        assert_eq!(
            render(&Cmd::Route(RouteCmd::List), &routes),
            "\
tenant  prefix       via
red     10.9.0.0/16  10.1.0.9
"
        );
        let published = json!([
            {"tenant": "red", "protocol": "tcp", "host_port": 8080, "ip": "10.1.0.5", "port": 80},
            {"tenant": "red", "protocol": "udp", "host_port": 53, "ip": "10.1.0.6", "port": 53},
        ]);
        assert_eq!(
            render(&Cmd::Publish(PublishCmd::List), &published),
            "\
tenant  protocol  host_port  to
red     tcp            8080  10.1.0.5:80
red     udp              53  10.1.0.6:53
"
        );
    }
}
