//! What the running tables hold, by name, for people (`tenetctl fdb`, `neigh` and
//! `tunnel`; `GET /v1/fdb`, `/v1/neighbors`, `/v1/tunnels`): tenants, ports and hosts
//! by their names, never by the slots and ids the dataplane uses, with ages.

use std::time::Instant;

use dataplane::packet::MacText;
use dataplane::table::{HostIdx, Location, TenantIdx};
use serde_json::{json, Value};

use super::Controller;

/// What the metrics say of one tenant this host runs.
pub struct TenantCounts {
    /// Its name.
    pub name: String,
    /// MACs learned in it, not aged out.
    pub learned: u32,
    /// This host's ports that carry it.
    pub ports: usize,
}

impl Controller {
    /// Each tenant this host runs with its learned MACs and ports, by name.
    pub fn tenant_counts(&self) -> Vec<TenantCounts> {
        let mut counts: Vec<TenantCounts> = self
            .named
            .iter()
            .map(|(name, slot)| TenantCounts {
                name: name.clone(),
                learned: self.per_tenant.get(slot).copied().unwrap_or(0),
                ports: self
                    .port_tenants
                    .values()
                    .filter(|carried| carried.contains(slot))
                    .count(),
            })
            .collect();
        counts.sort_by(|a, b| a.name.cmp(&b.name));
        counts
    }

    fn tenant_named(&self, slot: TenantIdx) -> Option<&str> {
        let at = *self.tenant_at.get(&slot)?;
        Some(self.config.switching.tenants.get(at)?.name.as_str())
    }

    pub(crate) fn host_named(&self, host: HostIdx) -> Option<&str> {
        let at = *self.host_at.get(&host)?;
        Some(self.config.switching.hosts.get(at)?.name.as_str())
    }

    /// Port names by id, made once per view (an FDB of a million MACs names its ports
    /// a million times).
    fn port_names(&self) -> hashbrown::HashMap<u16, &str> {
        self.ports
            .iter()
            .zip(&self.config.ports)
            .filter_map(|(info, plan)| Some((info.as_ref()?.id, plan.name.as_str())))
            .collect()
    }

    /// Where an FDB entry leads: `port NAME`, `host NAME` or `router`.
    fn place(&self, ports: &hashbrown::HashMap<u16, &str>, location: Location) -> String {
        match location {
            Location::Port(id) => format!("port {}", ports.get(&id).copied().unwrap_or("?")),
            Location::Host(host) => format!("host {}", self.host_named(host).unwrap_or("?")),
            Location::Router => "router".to_owned(),
        }
    }

    /// The FDB as the workers have it: installed entries (endpoints, routers) and
    /// learned ones with their age, by tenant and MAC.
    pub fn fdb_view(&self, now: Instant) -> Value {
        let tables = self.tables();
        let ports = self.port_names();
        let mut rows: Vec<(String, String, Value)> = Vec::new();
        // Installed: the endpoints, and each router's MAC in its tenant.
        let routers = self
            .named
            .values()
            .filter_map(|&slot| Some((slot, tables.router(slot)?.mac)));
        let installed: hashbrown::HashSet<(TenantIdx, dataplane::packet::Mac)> =
            self.statics.iter().copied().chain(routers).collect();
        for &(slot, mac) in &installed {
            let (Some(tenant), Some(entry)) = (self.tenant_named(slot), tables.lookup(slot, &mac))
            else {
                continue;
            };
            let mac = MacText(mac).to_string();
            let row = json!({"tenant": tenant, "mac": mac, "type": "static",
                             "at": self.place(&ports, entry.location), "age_s": null});
            rows.push((tenant.to_owned(), mac, row));
        }
        for (&(slot, mac), learned) in &self.dynamic.learned {
            let Some(tenant) = self.tenant_named(slot) else {
                continue;
            };
            let mac = MacText(mac).to_string();
            let row = json!({"tenant": tenant, "mac": mac, "type": "learned",
                             "at": self.place(&ports, learned.location),
                             "age_s": now.saturating_duration_since(learned.seen).as_secs()});
            rows.push((tenant.to_owned(), mac, row));
        }
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Value::Array(rows.into_iter().map(|(_, _, row)| row).collect())
    }

    /// Neighbours: the underlay's next hops (tenant `-`) and the tenants' routers'
    /// neighbours, with the time since each last answered or was heard.
    pub fn neighbors_view(&self, now: Instant) -> Value {
        let mut rows: Vec<(String, std::net::Ipv4Addr, Value)> = Vec::new();
        for (&ip, &mac) in &self.dynamic.neighbors {
            let age = self
                .resolved
                .get(&ip)
                .map(|r| now.saturating_duration_since(r.confirmed).as_secs());
            let row =
                json!({"tenant": null, "ip": ip, "mac": MacText(mac).to_string(), "age_s": age});
            rows.push((String::new(), ip, row));
        }
        for (&(slot, ip), &(mac, seen)) in &self.dynamic.tenant_neighbors {
            let Some(tenant) = self.tenant_named(slot) else {
                continue;
            };
            let row = json!({"tenant": tenant, "ip": ip, "mac": MacText(mac).to_string(),
                             "age_s": now.saturating_duration_since(seen).as_secs()});
            rows.push((tenant.to_owned(), ip, row));
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Value::Array(rows.into_iter().map(|(_, _, row)| row).collect())
    }

    /// This host's tunnels: the host at the other end, its underlay address, whether
    /// its next hop's MAC is known (frames go out) and the tenants it carries.
    pub fn tunnels_view(&self) -> Value {
        let tables = self.tables();
        let mut carried: Vec<Vec<&str>> = vec![Vec::new(); tables.tunnels.len()];
        for (name, &slot) in &self.named {
            for &tunnel in tables.tenant(slot).map_or(&[][..], |t| &t.tunnels[..]) {
                if let Some(list) = carried.get_mut(usize::from(tunnel)) {
                    list.push(name.as_str());
                }
            }
        }
        let rows = tables
            .tunnels
            .iter()
            .zip(carried)
            .map(|(tunnel, mut tenants)| {
                tenants.sort_unstable();
                json!({
                    "host": self.host_named(tunnel.host).unwrap_or("?"),
                    "remote_ip": tunnel.remote_ip,
                    "resolved": tunnel.header.is_some(),
                    "tenants": tenants,
                })
            })
            .collect();
        Value::Array(rows)
    }
}
