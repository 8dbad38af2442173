//! The part of the configuration that changes while tenetd runs: tenants, hosts,
//! endpoints and switching settings. The API edits it; the store keeps it; together
//! with the start-up file's dataplane and ports it makes a full [`Config`] that is
//! validated exactly like the file.

use serde::{Deserialize, Serialize};

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
