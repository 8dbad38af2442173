//! tenet as a Docker network driver (libnetwork's remote driver protocol, served by
//! `tenet-docker` on `/run/docker/plugins/tenet.sock`), so that
//! `docker network create -d tenet -o tenant=red --subnet 10.1.0.0/24 --gateway 10.1.0.1 red`
//! and `docker run --network red` put a container on tenant `red`.
//!
//! A network is a tenant (its subnet must be one of the tenant's, and Docker's gateway
//! the tenant's router). An endpoint is a veth: its host end attached to tenetd as an
//! access port (AF_XDP, af_packet fallback) with port security and an installed
//! endpoint, its other end handed to Docker on Join, which moves it into the container
//! and gives it the address Docker's IPAM chose. What the driver knows is kept in a
//! state file, so a restart of the plugin forgets no network.
//!
//! The plugin is also an IPAM driver (`--ipam-driver tenet --ipam-opt tenant=red`):
//! then container addresses come from tenetd, which hands each out once across the
//! cluster ([`crate::addresses`]) where Docker's default IPAM counts per host; a pool
//! is one of the tenant's subnets (its first when `--subnet` names none), its gateway
//! the tenant's router, and `docker run --ip` a static claim, refused when another
//! container anywhere holds the address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dataplane::packet::{parse_mac, Ipv4Cidr, MacText};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::Client;
use crate::containers::{self, Container};
use crate::netlink;

/// A network Docker made with this driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The tenant it is.
    pub tenant: String,
    /// Its gateway (the tenant's router on the subnet).
    pub gateway: Option<Ipv4Addr>,
}

/// An endpoint of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Its network.
    pub network: String,
    /// The host end of its veth (the port's name).
    pub host: String,
    /// The end Docker moves into the container.
    pub peer: String,
    /// The container's MAC.
    pub mac: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// Everything the driver keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// By network id.
    pub networks: BTreeMap<String, Network>,
    /// By endpoint id.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// The driver.
pub struct Driver {
    client: Client,
    state_file: PathBuf,
    state: State,
    backend: String,
}

/// A failed request, answered as `{"Err": ...}`.
pub type Failure = String;

/// Where Docker puts an endpoint's MAC in a request for its address.
const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";

/// The address space the IPAM driver's pools are in.
const ADDRESS_SPACE: &str = "tenet";

/// The tenant and subnet a `PoolID` (`red/10.1.0.0/24`) names.
fn pool_of(request: &Value) -> Result<(&str, Ipv4Cidr), Failure> {
    let id = field(request, "PoolID")?;
    id.split_once('/')
        .and_then(|(tenant, pool)| Some((tenant, pool.parse().ok()?)))
        .ok_or_else(|| format!("PoolID: `{id}` is not a tenet pool"))
}

fn field<'a>(request: &'a Value, name: &str) -> Result<&'a str, Failure> {
    request[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{name}: missing"))
}

impl Driver {
    /// A driver talking to tenetd at `socket`, keeping its state in `state_file`
    /// (loaded if it exists), attaching ports with `backend`.
    pub fn open(socket: &Path, state_file: &Path, backend: &str) -> anyhow::Result<Self> {
        let state = match std::fs::read(state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a tenet-docker state file: {e}",
                    state_file.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", state_file.display())),
        };
        Ok(Self {
            client: Client::new(socket),
            state_file: state_file.to_owned(),
            state,
            backend: backend.to_owned(),
        })
    }

    /// What it knows.
    pub fn state(&self) -> &State {
        &self.state
    }

    fn save(&self) -> Result<(), Failure> {
        let text = serde_json::to_vec_pretty(&self.state).map_err(|e| e.to_string())?;
        // A crash leaves the old state or the new, and the new one survives a power cut.
        crate::store::write_private(&self.state_file, &text)
            .map_err(|e| format!("saving {}: {e:#}", self.state_file.display()))
    }

    /// Answers one request of the protocol (`/NetworkDriver.Join`, ...).
    pub fn handle(&mut self, path: &str, request: &Value) -> Value {
        let answer = match path {
            "/Plugin.Activate" => Ok(json!({"Implements": ["NetworkDriver", "IpamDriver"]})),
            // The MAC names the endpoint an address is for: a retried request gets the
            // same claim, not a second one nobody releases.
            "/IpamDriver.GetCapabilities" => Ok(json!({"RequiresMACAddress": true})),
            "/IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE,
            })),
            "/IpamDriver.RequestPool" => self.request_pool(request),
            "/IpamDriver.ReleasePool" => Ok(json!({})),
            "/IpamDriver.RequestAddress" => self.request_address(request),
            "/IpamDriver.ReleaseAddress" => self.release_address(request),
            "/NetworkDriver.GetCapabilities" => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            "/NetworkDriver.CreateNetwork" => self.create_network(request),
            "/NetworkDriver.DeleteNetwork" => self.delete_network(request),
            "/NetworkDriver.CreateEndpoint" => self.create_endpoint(request),
            "/NetworkDriver.DeleteEndpoint" => self.delete_endpoint(request),
            "/NetworkDriver.EndpointOperInfo" => self.endpoint_info(request),
            "/NetworkDriver.Join" => self.join(request),
            "/NetworkDriver.Leave" => Ok(json!({})),
            "/NetworkDriver.ProgramExternalConnectivity" => self.publish(request),
            "/NetworkDriver.RevokeExternalConnectivity" => self.unpublish(request),
            "/NetworkDriver.DiscoverNew" | "/NetworkDriver.DiscoverDelete" => Ok(json!({})),
            other => Err(format!("{other}: not part of the network driver protocol")),
        };
        answer.unwrap_or_else(|e| json!({"Err": e}))
    }

    /// A pool: one of the tenant's subnets, named `<tenant>/<network>` for the calls
    /// that follow.
    fn request_pool(&self, request: &Value) -> Result<Value, Failure> {
        if request["V6"].as_bool() == Some(true) {
            return Err("V6: tenet hands out IPv4 addresses only".to_owned());
        }
        let tenant_name = request["Options"]["tenant"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("tenant: missing (--ipam-opt tenant=NAME)")?;
        let tenant = containers::tenant(&self.client, tenant_name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tenant: `{tenant_name}` does not exist in tenetd"))?;
        let subnets = containers::subnets(&tenant);
        let wanted = match request["Pool"].as_str().filter(|p| !p.is_empty()) {
            Some(text) => Some(
                text.parse::<Ipv4Cidr>()
                    .map_err(|e| format!("Pool: `{text}`: {e}"))?,
            ),
            None => None,
        };
        let router = subnets
            .iter()
            .find(|s| wanted.is_none_or(|w| w.prefix == s.prefix && w.contains(s.ip)))
            .ok_or_else(|| match wanted {
                Some(w) => format!("Pool: {w} is not one of tenant {tenant_name}'s subnets"),
                None => format!("tenant: `{tenant_name}` has no subnet to take addresses from"),
            })?;
        let pool = Ipv4Cidr {
            ip: router.network(),
            prefix: router.prefix,
        };
        Ok(json!({"PoolID": format!("{tenant_name}/{pool}"), "Pool": pool.to_string(), "Data": {}}))
    }

    /// An address of a pool from tenetd; the gateway's is the tenant's router.
    fn request_address(&self, request: &Value) -> Result<Value, Failure> {
        let (tenant, pool) = pool_of(request)?;
        let asked = match request["Address"].as_str().filter(|a| !a.is_empty()) {
            Some(text) => Some(
                text.parse::<Ipv4Addr>()
                    .map_err(|_| format!("Address: `{text}` is not an IPv4 address"))?,
            ),
            None => None,
        };
        if request["Options"]["RequestAddressType"] == "com.docker.network.gateway" {
            let tenant_value = containers::tenant(&self.client, tenant)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("tenant: `{tenant}` does not exist in tenetd"))?;
            let router = containers::subnets(&tenant_value)
                .into_iter()
                .find(|s| s.prefix == pool.prefix && pool.contains(s.ip))
                .ok_or_else(|| format!("PoolID: {pool} is no longer a subnet of {tenant}"))?;
            if asked.is_some_and(|a| a != router.ip) {
                return Err(format!(
                    "Address: tenant {tenant}'s router is {} on this subnet (--gateway {})",
                    router.ip, router.ip
                ));
            }
            return Ok(json!({"Address": router.to_string(), "Data": {}}));
        }
        let owner = match request["Options"][MAC_OPTION]
            .as_str()
            .filter(|m| !m.is_empty())
        {
            Some(mac) => format!("docker:{pool}:{}", mac.to_ascii_lowercase()),
            None => format!("docker:{}", containers::unique_owner()),
        };
        let claimed =
            containers::claim_address(&self.client, tenant, &owner, asked, Some(&pool.to_string()))
                .map_err(|e| e.to_string())?;
        Ok(json!({
            "Address": format!("{}/{}", claimed.ip, claimed.prefix),
            "Data": {},
        }))
    }

    /// Gives a container's address back to tenetd (the gateway's is nobody's).
    fn release_address(&self, request: &Value) -> Result<Value, Failure> {
        let (tenant, _) = pool_of(request)?;
        let address = field(request, "Address")?;
        let ip = address
            .split('/')
            .next()
            .and_then(|a| a.parse::<Ipv4Addr>().ok())
            .ok_or_else(|| format!("Address: `{address}` is not an IPv4 address"))?;
        containers::release_address(&self.client, tenant, ip, None).map_err(|e| e.to_string())?;
        Ok(json!({}))
    }

    fn create_network(&mut self, request: &Value) -> Result<Value, Failure> {
        let id = field(request, "NetworkID")?;
        let options = &request["Options"]["com.docker.network.generic"];
        let tenant_name = options["tenant"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or("tenant: missing (docker network create -d tenet -o tenant=NAME ...)")?;
        let tenant = containers::tenant(&self.client, tenant_name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("tenant: `{tenant_name}` does not exist in tenetd"))?;
        let subnets = containers::subnets(&tenant);
        let pool = request["IPv4Data"][0]["Pool"]
            .as_str()
            .and_then(|p| p.parse::<Ipv4Cidr>().ok());
        let gateway = request["IPv4Data"][0]["Gateway"].as_str().and_then(|g| {
            g.parse::<Ipv4Cidr>()
                .map(|c| c.ip)
                .ok()
                .or_else(|| g.parse().ok())
        });
        // Containers route through the tenant's router: Docker's gateway must be it.
        if let (Some(pool), false) = (pool, subnets.is_empty()) {
            let router = subnets
                .iter()
                .find(|s| s.prefix == pool.prefix && s.contains(pool.ip))
                .map(|s| s.ip)
                .ok_or_else(|| {
                    format!("subnet: {pool} is not one of tenant {tenant_name}'s subnets")
                })?;
            if gateway.is_some_and(|g| g != router) {
                return Err(format!(
                    "gateway: tenant {tenant_name}'s router is {router} on this subnet (--gateway {router})"
                ));
            }
        }
        self.state.networks.insert(
            id.to_owned(),
            Network {
                tenant: tenant_name.to_owned(),
                gateway,
            },
        );
        self.save()?;
        Ok(json!({}))
    }

    fn delete_network(&mut self, request: &Value) -> Result<Value, Failure> {
        let id = field(request, "NetworkID")?;
        if self.state.endpoints.values().any(|e| e.network == id) {
            return Err("the network still has endpoints".to_owned());
        }
        if self.state.networks.remove(id).is_some() {
            self.save()?;
        }
        Ok(json!({}))
    }

    fn create_endpoint(&mut self, request: &Value) -> Result<Value, Failure> {
        let network_id = field(request, "NetworkID")?;
        let id = field(request, "EndpointID")?;
        let network = self
            .state
            .networks
            .get(network_id)
            .cloned()
            .ok_or_else(|| format!("NetworkID: {network_id} is not a tenet network"))?;
        let interface = &request["Interface"];
        let ip = interface["Address"]
            .as_str()
            .and_then(|a| a.parse::<Ipv4Cidr>().ok())
            .map(|c| c.ip)
            .ok_or("Interface.Address: tenet endpoints need an IPv4 address")?;
        let given_mac = interface["MacAddress"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(|m| parse_mac(m).map_err(|e| format!("Interface.MacAddress: {e}")))
            .transpose()?;
        let hash = containers::short_hash(&[id]);
        let (host, peer) = (format!("td{hash}"), format!("tp{hash}"));
        let mac = netlink::create_veth_here(&host, &peer, given_mac, None)
            .map_err(|e| format!("{e:#}"))?;
        let container = Container {
            port: &host,
            tenant: &network.tenant,
            mac,
            ip,
            port_security: true,
        };
        match containers::attach_veth(&self.client, &container, &self.backend) {
            Err(e) => {
                let _ = netlink::delete_link(&host);
                return Err(e.to_string());
            }
            // As tenet-cni does: an af-packet port takes 64 KiB segments whole.
            Ok("af-packet") => {
                if let Err(e) = netlink::offload_here(&peer) {
                    tracing::warn!(error = %format!("{e:#}"), "the container keeps sending frame by frame");
                }
            }
            Ok(_) => {}
        }
        self.state.endpoints.insert(
            id.to_owned(),
            Endpoint {
                network: network_id.to_owned(),
                host: host.clone(),
                peer,
                mac: MacText(mac).to_string(),
                ip,
            },
        );
        self.save()?;
        // Docker wants back only what it did not give.
        Ok(if given_mac.is_some() {
            json!({})
        } else {
            json!({"Interface": {"MacAddress": MacText(mac).to_string()}})
        })
    }

    fn delete_endpoint(&mut self, request: &Value) -> Result<Value, Failure> {
        let id = field(request, "EndpointID")?;
        let Some(endpoint) = self.state.endpoints.get(id).cloned() else {
            return Ok(json!({}));
        };
        let tenant = self
            .state
            .networks
            .get(&endpoint.network)
            .map(|n| n.tenant.clone());
        containers::detach(&self.client, tenant.as_deref(), &endpoint.host)
            .map_err(|e| e.to_string())?;
        netlink::delete_link(&endpoint.host).map_err(|e| format!("{e:#}"))?;
        self.state.endpoints.remove(id);
        self.save()?;
        Ok(json!({}))
    }

    /// The endpoint the request's `EndpointID` names, which must exist.
    fn known_endpoint(&self, request: &Value) -> Result<&Endpoint, Failure> {
        let id = field(request, "EndpointID")?;
        self.state
            .endpoints
            .get(id)
            .ok_or_else(|| format!("EndpointID: {id} is unknown"))
    }

    /// `docker run -p HOST_PORT:PORT`: each of the endpoint's port mappings becomes a
    /// port published on the tenant's gateway (DNAT from its outside address), all or
    /// none.
    fn publish(&self, request: &Value) -> Result<Value, Failure> {
        let endpoint = self.known_endpoint(request)?;
        let tenant = self.tenant_of(endpoint)?;
        let mappings = request["Options"]["com.docker.network.portmap"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut published: Vec<(String, u64)> = Vec::new();
        for mapping in &mappings {
            let result = publish_one(&self.client, tenant, endpoint.ip, mapping);
            match result {
                Ok(done) => published.push(done),
                Err(e) => {
                    for (protocol, host_port) in published {
                        let _ = unpublish_one(&self.client, &protocol, host_port);
                    }
                    return Err(e);
                }
            }
        }
        Ok(json!({}))
    }

    /// Takes back what [`Driver::publish`] published for the endpoint: every port the
    /// tenant publishes to its address.
    fn unpublish(&self, request: &Value) -> Result<Value, Failure> {
        let endpoint = self.known_endpoint(request)?;
        let tenant = self.tenant_of(endpoint)?;
        let answer = containers::call(&self.client, "GET", "/v1/published", None)
            .map_err(|e| e.to_string())?;
        if !answer.ok() {
            return Err(answer.refusal());
        }
        let ip = endpoint.ip.to_string();
        for p in answer.body.as_array().into_iter().flatten() {
            if p["tenant"] == tenant && p["ip"] == ip.as_str() {
                let protocol = p["protocol"].as_str().unwrap_or("tcp");
                unpublish_one(&self.client, protocol, p["host_port"].as_u64().unwrap_or(0))?;
            }
        }
        Ok(json!({}))
    }

    fn tenant_of(&self, endpoint: &Endpoint) -> Result<&str, Failure> {
        self.state
            .networks
            .get(&endpoint.network)
            .map(|n| n.tenant.as_str())
            .ok_or_else(|| format!("NetworkID: {} is unknown", endpoint.network))
    }

    fn endpoint_info(&self, request: &Value) -> Result<Value, Failure> {
        let endpoint = self.known_endpoint(request)?;
        Ok(
            json!({"Value": {"host_interface": endpoint.host, "mac": endpoint.mac, "ip": endpoint.ip}}),
        )
    }

    fn join(&self, request: &Value) -> Result<Value, Failure> {
        let endpoint = self.known_endpoint(request)?;
        let mut answer = json!({
            "InterfaceName": {"SrcName": endpoint.peer, "DstPrefix": "eth"},
            "StaticRoutes": [],
        });
        if let Some(gateway) = self
            .state
            .networks
            .get(&endpoint.network)
            .and_then(|n| n.gateway)
        {
            answer["Gateway"] = json!(gateway.to_string());
        }
        Ok(answer)
    }
}

/// One of Docker's port mappings (`{"Proto": 6, "Port": 80, "HostPort": 8080, ...}`)
/// published for the container at `ip`; returns (protocol, host port).
fn publish_one(
    client: &Client,
    tenant: &str,
    ip: Ipv4Addr,
    mapping: &Value,
) -> Result<(String, u64), Failure> {
    let protocol = match mapping["Proto"].as_u64() {
        Some(6) => "tcp",
        Some(17) => "udp",
        other => {
            return Err(format!(
                "portmap Proto: {} is neither TCP (6) nor UDP (17)",
                other.map_or("missing".to_owned(), |p| p.to_string())
            ))
        }
    };
    let port = mapping["Port"].as_u64().filter(|p| (1..=65535).contains(p));
    let host_port = mapping["HostPort"]
        .as_u64()
        .filter(|p| (1..=65535).contains(p));
    let (Some(port), Some(host_port)) = (port, host_port) else {
        return Err(format!(
            "portmap: {mapping} needs a container Port and a HostPort (docker run -p HOST_PORT:PORT)"
        ));
    };
    let body = json!({"tenant": tenant, "protocol": protocol, "host_port": host_port,
                      "ip": ip.to_string(), "port": port});
    let answer = containers::call(client, "POST", "/v1/published", Some(&body))
        .map_err(|e| e.to_string())?;
    if !answer.ok() {
        return Err(format!(
            "publishing {protocol}/{host_port}: {}",
            answer.refusal()
        ));
    }
    Ok((protocol.to_owned(), host_port))
}

fn unpublish_one(client: &Client, protocol: &str, host_port: u64) -> Result<(), Failure> {
    let answer = containers::call(
        client,
        "DELETE",
        &format!("/v1/published/{protocol}/{host_port}"),
        None,
    )
    .map_err(|e| e.to_string())?;
    if !answer.ok() && answer.status != 404 {
        return Err(format!(
            "unpublishing {protocol}/{host_port}: {}",
            answer.refusal()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_outside_the_protocol_or_without_ids_are_errors() {
        let dir = std::env::temp_dir().join(format!("tenet-docker-{}", std::process::id()));
        let mut d = Driver::open(
            Path::new("/nonexistent.sock"),
            &dir.join("state.json"),
            "af-packet",
        )
        .unwrap();
        assert_eq!(
            d.handle("/Plugin.Activate", &json!({})),
            json!({"Implements": ["NetworkDriver", "IpamDriver"]})
        );
        let e = d.handle("/IpamDriver.RequestAddress", &json!({"PoolID": "red"}));
        assert!(e["Err"].as_str().unwrap().starts_with("PoolID"), "{e}");
        let e = d.handle("/IpamDriver.RequestPool", &json!({"V6": true}));
        assert!(e["Err"].as_str().unwrap().starts_with("V6"), "{e}");
        let e = d.handle("/IpamDriver.RequestPool", &json!({"Options": {}}));
        assert!(e["Err"].as_str().unwrap().starts_with("tenant"), "{e}");
        let e = d.handle("/NetworkDriver.Teleport", &json!({}));
        assert!(e["Err"].as_str().unwrap().contains("Teleport"));
        let e = d.handle("/NetworkDriver.CreateNetwork", &json!({"Options": {}}));
        assert_eq!(e["Err"], "NetworkID: missing");
        let e = d.handle(
            "/NetworkDriver.CreateNetwork",
            &json!({"NetworkID": "n1", "Options": {}}),
        );
        assert!(
            e["Err"].as_str().unwrap().starts_with("tenant: missing"),
            "{e}"
        );
        let e = d.handle(
            "/NetworkDriver.CreateEndpoint",
            &json!({"NetworkID": "n9", "EndpointID": "e1"}),
        );
        assert!(
            e["Err"].as_str().unwrap().contains("not a tenet network"),
            "{e}"
        );
        assert_eq!(
            d.handle(
                "/NetworkDriver.DeleteEndpoint",
                &json!({"EndpointID": "gone"})
            ),
            json!({})
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
