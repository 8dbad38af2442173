//! The part of the configuration that changes while tenetd runs: tenants, hosts,
//! endpoints and switching settings. The API edits it; the store keeps it; together
//! with the start-up file's dataplane and ports it makes a full [`Config`] that is
//! validated exactly like the file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::gateway::{PublishSpec, RouteSpec};
use crate::config::switching::{EndpointSpec, HostSpec, SwitchSection, TenantSpec};
use crate::config::{Config, ConfigError, PortSpec, Validated};

/// The live model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Design and switching settings.
    pub switch: SwitchSection,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Tenants.
    pub tenants: Vec<TenantSpec>,
    /// Endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// Ports, in order (those of the config file first, then those added live).
    pub ports: Vec<PortSpec>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Published container ports.
    #[serde(default)]
    pub published: Vec<PublishSpec>,
    /// In a cluster, where each floating gateway (`auto`, or whose host or egress host
    /// is down) was placed, by tenant: recorded once so that a tenant added, a host
    /// joining or a load changing moves no gateway that runs (see
    /// [`crate::placement`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub placed: BTreeMap<String, String>,
}

/// A change asked for through the API.
#[derive(Debug, Clone)]
pub enum Change {
    /// Add a tenant.
    AddTenant(TenantSpec),
    /// Remove a tenant by name (refused while a port or endpoint uses it).
    DeleteTenant(String),
    /// Add a host.
    AddHost(HostSpec),
    /// Remove a host by name.
    DeleteHost(String),
    /// Add an endpoint.
    AddEndpoint(EndpointSpec),
    /// Attach a port.
    AddPort(Box<PortSpec>),
    /// Detach a port by name.
    DeletePort(String),
    /// Remove an endpoint by tenant and MAC.
    DeleteEndpoint {
        /// Tenant name.
        tenant: String,
        /// MAC as written.
        mac: String,
    },
    /// Change a tenant's gateway settings (placement: gateway migration; peers).
    UpdateTenant(String, TenantPatch),
    /// Add a static route.
    AddRoute(RouteSpec),
    /// Remove a route by tenant and prefix.
    DeleteRoute {
        /// Tenant name.
        tenant: String,
        /// Prefix as written.
        prefix: String,
    },
    /// Publish a container port.
    AddPublish(PublishSpec),
    /// Withdraw a published port.
    DeletePublish {
        /// `tcp` or `udp`.
        protocol: String,
        /// The published port.
        host_port: u16,
    },
}

/// The tenant settings a running switch may change; absent fields stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// New gateway placement (a host name or `central`).
    pub gateway_host: Option<String>,
    /// New peer list (consent to route with these tenants).
    pub peers: Option<Vec<String>>,
    /// New SNAT address.
    pub snat_ip: Option<std::net::Ipv4Addr>,
    /// New per-core SNAT connection cap.
    pub max_connections: Option<u32>,
}

/// A refused change: HTTP status, the field at fault, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// The request field at fault.
    pub field: String,
    /// Why.
    pub message: String,
}

impl Refusal {
    fn not_found(field: &str, message: String) -> Self {
        Self {
            status: 404,
            field: field.to_owned(),
            message,
        }
    }
}

impl Model {
    /// The model part of a configuration.
    pub fn of(config: &Config) -> Self {
        Self {
            switch: config.switch.clone(),
            hosts: config.hosts.clone(),
            tenants: config.tenants.clone(),
            endpoints: config.endpoints.clone(),
            ports: config.ports.clone(),
            routes: config.routes.clone(),
            published: config.published.clone(),
            placed: BTreeMap::new(),
        }
    }

    /// `base` (dataplane, ports, control) with this model.
    pub fn over(&self, base: &Config) -> Config {
        Config {
            switch: self.switch.clone(),
            hosts: self.hosts.clone(),
            tenants: self.tenants.clone(),
            endpoints: self.endpoints.clone(),
            ports: self.ports.clone(),
            routes: self.routes.clone(),
            published: self.published.clone(),
            ..base.clone()
        }
    }

    /// Applies `change` and validates the result against `base`; on refusal nothing
    /// changes.
    pub fn apply(&self, change: &Change, base: &Config) -> Result<(Model, Validated), Refusal> {
        if let Change::DeletePort(name) = change {
            if let Some(e) = self
                .endpoints
                .iter()
                .find(|e| e.port.as_deref() == Some(name.as_str()))
            {
                return Err(Refusal {
                    status: 409,
                    field: "name".to_owned(),
                    message: format!(
                        "port `{name}` has endpoints of tenant `{}`; delete them first",
                        e.tenant
                    ),
                });
            }
            if base
                .cross_connects
                .iter()
                .any(|x| x.ports.iter().any(|p| p == name))
            {
                return Err(Refusal {
                    status: 409,
                    field: "name".to_owned(),
                    message: format!("port `{name}` is cross-connected in the config file"),
                });
            }
        }
        if let Change::DeleteTenant(name) = change {
            if let Some(port) = self.ports.iter().find(|p| {
                p.tenant.as_deref() == Some(name.as_str())
                    || p.tenants.iter().flatten().any(|t| t == name)
            }) {
                return Err(Refusal {
                    status: 409,
                    field: "name".to_owned(),
                    message: format!(
                        "tenant `{name}` is used by port `{}`",
                        port.name.as_deref().unwrap_or("?")
                    ),
                });
            }
            if self.endpoints.iter().any(|e| &e.tenant == name) {
                return Err(Refusal {
                    status: 409,
                    field: "name".to_owned(),
                    message: format!("tenant `{name}` has endpoints; delete them first"),
                });
            }
            let used = self.routes.iter().any(|r| &r.tenant == name)
                || self.published.iter().any(|p| &p.tenant == name)
                || self.tenants.iter().any(|t| t.peers.contains(name));
            if used {
                return Err(Refusal {
                    status: 409,
                    field: "name".to_owned(),
                    message: format!(
                        "tenant `{name}` has routes, published ports or peers; remove them first"
                    ),
                });
            }
        }
        let mut next = self.clone();
        // Errors about the new item are reported by its own field names.
        let (prefix, ok) = match change {
            Change::AddTenant(t) => {
                next.tenants.push(t.clone());
                (format!("tenant[{}].", next.tenants.len() - 1), true)
            }
            Change::AddHost(h) => {
                next.hosts.push(h.clone());
                (format!("host[{}].", next.hosts.len() - 1), true)
            }
            Change::AddEndpoint(e) => {
                next.endpoints.push(e.clone());
                (format!("endpoint[{}].", next.endpoints.len() - 1), true)
            }
            Change::AddPort(p) => {
                next.ports.push((**p).clone());
                (format!("port[{}].", next.ports.len() - 1), true)
            }
            Change::DeletePort(name) => {
                let before = next.ports.len();
                next.ports
                    .retain(|p| p.name.as_deref() != Some(name.as_str()));
                (String::new(), next.ports.len() < before)
            }
            Change::DeleteTenant(name) => {
                let before = next.tenants.len();
                next.tenants.retain(|t| &t.name != name);
                next.placed.remove(name);
                (String::new(), next.tenants.len() < before)
            }
            Change::DeleteHost(name) => {
                let before = next.hosts.len();
                next.hosts.retain(|h| &h.name != name);
                (String::new(), next.hosts.len() < before)
            }
            Change::DeleteEndpoint { tenant, mac } => {
                let before = next.endpoints.len();
                next.endpoints.retain(|e| {
                    !(&e.tenant == tenant
                        && e.mac
                            .as_deref()
                            .is_some_and(|m| m.eq_ignore_ascii_case(mac)))
                });
                (String::new(), next.endpoints.len() < before)
            }
            Change::UpdateTenant(name, patch) => {
                match next.tenants.iter().position(|t| &t.name == name) {
                    Some(i) => {
                        let t = &mut next.tenants[i];
                        if let Some(host) = &patch.gateway_host {
                            t.gateway_host = Some(host.clone());
                            // Set again, even to `auto`: placed afresh.
                            next.placed.remove(name);
                        }
                        if let Some(peers) = &patch.peers {
                            t.peers = peers.clone();
                        }
                        if let Some(ip) = patch.snat_ip {
                            t.snat_ip = Some(ip);
                        }
                        if let Some(n) = patch.max_connections {
                            t.max_connections = Some(n);
                        }
                        (format!("tenant[{i}]."), true)
                    }
                    None => (String::new(), false),
                }
            }
            Change::AddRoute(r) => {
                next.routes.push(r.clone());
                (format!("route[{}].", next.routes.len() - 1), true)
            }
            Change::DeleteRoute { tenant, prefix } => {
                let before = next.routes.len();
                next.routes
                    .retain(|r| !(&r.tenant == tenant && &r.prefix == prefix));
                (String::new(), next.routes.len() < before)
            }
            Change::AddPublish(p) => {
                next.published.push(p.clone());
                (format!("publish[{}].", next.published.len() - 1), true)
            }
            Change::DeletePublish {
                protocol,
                host_port,
            } => {
                let before = next.published.len();
                next.published
                    .retain(|p| !(&p.protocol == protocol && p.host_port == *host_port));
                (String::new(), next.published.len() < before)
            }
        };
        if !ok {
            return Err(match change {
                Change::DeleteTenant(name) => {
                    Refusal::not_found("name", format!("no tenant is named `{name}`"))
                }
                Change::DeleteHost(name) => {
                    Refusal::not_found("name", format!("no host is named `{name}`"))
                }
                Change::DeleteEndpoint { tenant, mac } => {
                    Refusal::not_found("mac", format!("tenant `{tenant}` has no endpoint {mac}"))
                }
                Change::UpdateTenant(name, _) => {
                    Refusal::not_found("name", format!("no tenant is named `{name}`"))
                }
                Change::DeleteRoute { tenant, prefix } => Refusal::not_found(
                    "prefix",
                    format!("tenant `{tenant}` has no route to {prefix}"),
                ),
                Change::DeletePublish {
                    protocol,
                    host_port,
                } => Refusal::not_found(
                    "host_port",
                    format!("{host_port}/{protocol} is not published"),
                ),
                _ => Refusal::not_found("", "nothing to change".to_owned()),
            });
        }
        let validated = next
            .over(base)
            .validate()
            .map_err(|e| refusal(e, &prefix))?;
        Ok((next, validated))
    }
}

fn refusal(error: ConfigError, prefix: &str) -> Refusal {
    match error {
        ConfigError::Invalid { field, message } | ConfigError::Syntax { field, message } => {
            Refusal {
                status: if message.contains("used by")
                    || message.contains("twice")
                    || message.contains("already")
                {
                    409
                } else {
                    400
                },
                field: field
                    .strip_prefix(prefix)
                    .map(str::to_owned)
                    .unwrap_or(field),
                message,
            }
        }
        other => Refusal {
            status: 400,
            field: String::new(),
            message: other.to_string(),
        },
    }
}
