//! What the container integrations (the CNI plugin, the Docker network plugin) ask of
//! tenetd: an access port of a tenant for a container's host link, with port security
//! on the container's MAC and address, and the endpoint that installs the container in
//! the FDB; and their removal, which succeeds when there is nothing left to remove.

use std::net::Ipv4Addr;

use dataplane::packet::{Ipv4Cidr, MacText};

use serde_json::{json, Value};

use crate::client::{encode, Answer, CallError, Client};

/// Why tenetd did not do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No tenetd answers: worth retrying later.
    Unreachable(String),
    /// tenetd answered no.
    Refused(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Unreachable(m) | Refused::Refused(m) => f.write_str(m),
        }
    }
}

/// A call whose failure to reach tenetd is a [`Refused::Unreachable`].
pub fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Answer, Refused> {
    client.call(method, path, body).map_err(|e| match e {
        CallError::Unreachable { .. } => Refused::Unreachable(e.to_string()),
        CallError::Protocol(_) => Refused::Refused(e.to_string()),
    })
}

/// The tenant `name` as tenetd has it (`None`: no such tenant).
pub fn tenant(client: &Client, name: &str) -> Result<Option<Value>, Refused> {
    let answer = call(client, "GET", &format!("/v1/tenants/{name}"), None)?;
    match answer.status {
        404 => Ok(None),
        _ if answer.ok() => Ok(Some(answer.body["tenant"].clone())),
        _ => Err(Refused::Refused(answer.refusal())),
    }
}

/// The tenant's subnets: its gateway's address with the prefix length.
pub fn subnets(tenant: &Value) -> Vec<Ipv4Cidr> {
    tenant["subnets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A container to attach: its port (and host link) name, its tenant, MAC and address.
pub struct Container<'a> {
    /// Port name (the host end's name for a veth).
    pub port: &'a str,
    /// Its tenant.
    pub tenant: &'a str,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its address.
    pub ip: Ipv4Addr,
    /// Whether it may only send as `mac` and `ip`.
    pub port_security: bool,
}

/// Attaches `port` (a port spec without name, role or tenant) for `container` and
/// registers its endpoint; when the endpoint is refused the port goes again.
pub fn attach(client: &Client, container: &Container<'_>, mut port: Value) -> Result<(), Refused> {
    port["name"] = json!(container.port);
    port["role"] = json!("access");
    port["tenant"] = json!(container.tenant);
    if container.port_security {
        port["allowed_macs"] = json!([MacText(container.mac).to_string()]);
        port["allowed_ips"] = json!([container.ip.to_string()]);
    }
    let answer = call(client, "POST", "/v1/ports", Some(&port))?;
    if !answer.ok() {
        return Err(Refused::Refused(format!(
            "attaching port {}: {}",
            container.port,
            answer.refusal()
        )));
    }
    let endpoint = json!({
        "tenant": container.tenant,
        "mac": MacText(container.mac).to_string(),
        "ip": container.ip.to_string(),
        "port": container.port,
    });
    let answer = call(client, "POST", "/v1/endpoints", Some(&endpoint))?;
    if !answer.ok() {
        let _ = call(
            client,
            "DELETE",
            &format!("/v1/ports/{}", container.port),
            None,
        );
        return Err(Refused::Refused(format!(
            "registering the endpoint: {}",
            answer.refusal()
        )));
    }
    Ok(())
}

/// Attaches a container's veth host end `interface`: AF_XDP where the kernel and
/// driver take it, af_packet otherwise (or only `backend` when it names one). Returns
/// the backend it attached with.
pub fn attach_veth<'b>(
    client: &Client,
    container: &Container<'_>,
    backend: &'b str,
) -> Result<&'b str, Refused> {
    let port = |backend: &str| json!({"backend": backend, "interface": container.port});
    match backend {
        "af-xdp" => match attach(client, container, port("af-xdp")) {
            Ok(()) => Ok("af-xdp"),
            Err(Refused::Refused(_)) => {
                attach(client, container, port("af-packet")).map(|()| "af-packet")
            }
            Err(e) => Err(e),
        },
        other => attach(client, container, port(other)).map(|()| other),
    }
}

/// An address tenetd handed out: the container's address, prefix length and gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its subnet's prefix length.
    pub prefix: u8,
    /// The tenant's router on that subnet.
    pub gateway: Ipv4Addr,
}

/// Claims an address of `tenant` for `owner` (the one asked for, or a free one on
/// `subnet`, default the tenant's first): unique across the cluster, and the same
/// again when `owner` asks again.
pub fn claim_address(
    client: &Client,
    tenant: &str,
    owner: &str,
    ip: Option<Ipv4Addr>,
    subnet: Option<&str>,
) -> Result<Claimed, Refused> {
    let mut request = json!({"tenant": tenant, "owner": owner});
    if let Some(ip) = ip {
        request["ip"] = json!(ip.to_string());
    }
    if let Some(subnet) = subnet {
        request["subnet"] = json!(subnet);
    }
    let answer = call(client, "POST", "/v1/addresses", Some(&request))?;
    if !answer.ok() {
        return Err(Refused::Refused(format!(
            "claiming an address: {}",
            answer.refusal()
        )));
    }
    let body = &answer.body;
    let parsed = (|| {
        Some(Claimed {
            ip: body["ip"].as_str()?.parse().ok()?,
            prefix: u8::try_from(body["prefix"].as_u64()?).ok()?,
            gateway: body["gateway"].as_str()?.parse().ok()?,
        })
    })();
    parsed.ok_or_else(|| Refused::Refused(format!("tenetd answered a claim with {body}")))
}

/// The addresses claimed through this host's tenetd (not another host's) whose owner
/// starts with `owner_prefix`: (tenant, address, owner).
pub fn claimed_here(
    client: &Client,
    owner_prefix: &str,
) -> Result<Vec<(String, Ipv4Addr, String)>, Refused> {
    Ok(list(client, "/v1/addresses")?
        .into_iter()
        .filter(|a| a["host"].is_null())
        .filter_map(|a| {
            let owner = a["owner"].as_str()?;
            owner.starts_with(owner_prefix).then(|| {
                Some((
                    a["tenant"].as_str()?.to_owned(),
                    a["ip"].as_str()?.parse().ok()?,
                    owner.to_owned(),
                ))
            })?
        })
        .collect())
}

/// An owner name no other claim has: a caller (Docker's IPAM) that gives no name of
/// its own for what an address is for.
pub fn unique_owner() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLAIMS: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        now.as_nanos(),
        CLAIMS.fetch_add(1, Ordering::Relaxed)
    )
}

/// Gives back every address `owner` holds here; none held is fine.
pub fn release_addresses(client: &Client, owner: &str) -> Result<(), Refused> {
    for (tenant, ip, held_by) in claimed_here(client, owner)? {
        if held_by == owner {
            release_address(client, &tenant, ip, Some(owner))?;
        }
    }
    Ok(())
}

/// Gives `ip` of `tenant` back, if `owner` (when named) still holds it: what is not
/// claimed any more is fine.
pub fn release_address(
    client: &Client,
    tenant: &str,
    ip: Ipv4Addr,
    owner: Option<&str>,
) -> Result<(), Refused> {
    let body = owner.map(|owner| json!({ "owner": owner }));
    let path = format!("/v1/addresses/{tenant}/{ip}");
    let answer = call(client, "DELETE", &path, body.as_ref())?;
    if !answer.ok() && answer.status != 404 {
        return Err(Refused::Refused(format!(
            "releasing {ip}: {}",
            answer.refusal()
        )));
    }
    Ok(())
}

/// The records a listing such as `/v1/ports` answers.
fn list(client: &Client, path: &str) -> Result<Vec<Value>, Refused> {
    let answer = call(client, "GET", path, None)?;
    if !answer.ok() {
        return Err(Refused::Refused(answer.refusal()));
    }
    match answer.body {
        Value::Array(records) => Ok(records),
        _ => Ok(Vec::new()),
    }
}

/// The endpoints of `tenant` behind port `name`.
pub fn endpoints_of(client: &Client, tenant: &str, name: &str) -> Result<Vec<Value>, Refused> {
    let mut endpoints = list(client, "/v1/endpoints")?;
    endpoints.retain(|e| e["tenant"] == tenant && e["port"] == name);
    Ok(endpoints)
}

/// Removes port `name` and, when `tenant` is known, its endpoints; what is already
/// gone is skipped.
pub fn detach(client: &Client, tenant: Option<&str>, name: &str) -> Result<(), Refused> {
    if let Some(tenant) = tenant {
        for endpoint in endpoints_of(client, tenant, name)? {
            let mac = endpoint["mac"].as_str().unwrap_or_default();
            let answer = call(
                client,
                "DELETE",
                &format!("/v1/endpoints/{tenant}/{}", encode(mac)),
                None,
            )?;
            if !answer.ok() && answer.status != 404 {
                return Err(Refused::Refused(answer.refusal()));
            }
        }
    }
    let answer = call(client, "DELETE", &format!("/v1/ports/{name}"), None)?;
    if !answer.ok() && answer.status != 404 {
        return Err(Refused::Refused(format!(
            "detaching port {name}: {}",
            answer.refusal()
        )));
    }
    Ok(())
}

/// The port tenetd has named `name`, if any.
pub fn find_port(client: &Client, name: &str) -> Result<Option<Value>, Refused> {
    Ok(list(client, "/v1/ports")?
        .into_iter()
        .find(|p| p["name"] == name))
}

/// A stable 12-hex-digit name part from `parts` (FNV-1a: the same on every host and
/// build, unlike std's hasher).
pub fn short_hash(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:012x}", h & 0xffff_ffff_ffff)
}
