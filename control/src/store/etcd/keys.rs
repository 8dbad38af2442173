//! The model as etcd keys and back: one key per object under the prefix, this host's
//! own part under `local/<host>/`, ids and VLANs claimed under `unique/`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::switching::EndpointSpec;
use crate::model::Model;

use super::EtcdStore;

impl EtcdStore {
    /// The model (and what this host has seen) from the keys under the prefix.
    pub(super) fn build(
        &self,
        kvs: Vec<(String, String, i64)>,
        seed: &Model,
    ) -> anyhow::Result<Option<Model>> {
        let mut seen = self.lock_seen();
        seen.clear();
        let mut model = Model {
            switch: seed.switch.clone(),
            ports: seed.ports.clone(),
            hosts: Vec::new(),
            tenants: Vec::new(),
            endpoints: Vec::new(),
            routes: Vec::new(),
            published: Vec::new(),
            placed: BTreeMap::new(),
        };
        let mut shared = false;
        let mut alive = BTreeSet::new();
        let mut skipped = BTreeSet::new();
        for (key, value, revision) in kvs {
            let Some(path) = key.strip_prefix(&format!("{}/", self.prefix)) else {
                continue;
            };
            if let Some(host) = path.strip_prefix("alive/") {
                alive.insert(host.to_owned());
                continue;
            }
            let kind = path.split('/').next().unwrap_or_default();
            let taken = (|| -> anyhow::Result<bool> {
                match kind {
                    "hosts" => model.hosts.push(serde_json::from_str(&value)?),
                    "tenants" => model.tenants.push(serde_json::from_str(&value)?),
                    "endpoints" => {
                        let stored: EndpointSpec = serde_json::from_str(&value)?;
                        match self.as_seen_here(stored) {
                            Some(endpoint) => model.endpoints.push(endpoint),
                            // Another host's view of an endpoint here, without its
                            // port: this host's own record is the one that counts.
                            None => return Ok(false),
                        }
                    }
                    "routes" => model.routes.push(serde_json::from_str(&value)?),
                    "published" => model.published.push(serde_json::from_str(&value)?),
                    "placed" => {
                        let tenant = path.strip_prefix("placed/").unwrap_or_default();
                        model
                            .placed
                            .insert(tenant.to_owned(), serde_json::from_str(&value)?);
                    }
                    "unique" => {}
                    "local" if path == self.local("switch") => {
                        model.switch = serde_json::from_str(&value)?;
                    }
                    "local" if path == self.local("ports") => {
                        model.ports = serde_json::from_str(&value)?;
                    }
                    _ => return Ok(false),
                }
                Ok(true)
            })();
            match taken {
                Ok(true) => {}
                Ok(false) => continue,
                // One garbled key (a bug elsewhere, a hand edit) costs that record
                // only; it stays in etcd untouched (never in `seen`, so never
                // rewritten or deleted from here).
                Err(e) => {
                    let known = self
                        .skipped_keys
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains(&key);
                    if !known {
                        tracing::warn!(%key, error = %e, "an etcd key does not hold what its place says; skipped");
                    }
                    skipped.insert(key);
                    continue;
                }
            }
            shared |= kind != "local";
            seen.insert(key, (value, revision));
        }
        *self.lock_alive() = alive;
        *self.skipped_keys.lock().unwrap_or_else(|e| e.into_inner()) = skipped;
        Ok(shared.then_some(model))
    }

    /// An endpoint as the cluster keeps it: a local one (at a port of this host) also
    /// names this host, so the others know where it is.
    pub(super) fn as_stored(&self, endpoint: &EndpointSpec) -> EndpointSpec {
        let mut stored = endpoint.clone();
        if stored.port.is_some() && stored.host.is_none() {
            stored.host = Some(self.host.clone());
        }
        stored
    }

    /// A stored endpoint as this host sees it: at its port when it is here, at its host
    /// otherwise; `None` for a record of an endpoint here that names no port.
    pub(super) fn as_seen_here(&self, mut stored: EndpointSpec) -> Option<EndpointSpec> {
        match (&stored.host, &stored.port) {
            (Some(host), Some(_)) if *host == self.host => stored.host = None,
            (Some(host), None) if *host == self.host => return None,
            (Some(_), Some(_)) => stored.port = None,
            _ => {}
        }
        Some(stored)
    }

    pub(super) fn local(&self, what: &str) -> String {
        format!("local/{}/{what}", self.host)
    }

    /// The model as keys and values. An endpoint of another host is kept as that host
    /// stored it (with its port) unless this host changed it.
    pub(super) fn keys(
        &self,
        model: &Model,
        seen: &BTreeMap<String, (String, i64)>,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let p = &self.prefix;
        let mut out = BTreeMap::new();
        let mut put = |key: String, value: String| {
            out.insert(key, value);
        };
        for host in &model.hosts {
            put(format!("{p}/hosts/{}", host.name), text(host)?);
        }
        for tenant in &model.tenants {
            put(format!("{p}/tenants/{}", tenant.name), text(tenant)?);
            put(
                format!("{p}/unique/tenant-id/{}", tenant.id),
                text(&tenant.name)?,
            );
            if let Some(vlan) = tenant.vlan {
                put(format!("{p}/unique/vlan/{vlan}"), text(&tenant.name)?);
            }
        }
        for (i, endpoint) in model.endpoints.iter().enumerate() {
            let mac = endpoint
                .mac
                .clone()
                .or_else(|| endpoint.macs.as_ref().and_then(|m| m.first().cloned()));
            let id = match (mac, endpoint.ip) {
                (Some(mac), _) => mac.to_ascii_lowercase(),
                (None, Some(ip)) => ip.to_string(),
                (None, None) => format!("#{i}"),
            };
            let key = format!("{p}/endpoints/{}/{id}", endpoint.tenant);
            let mine = text(&self.as_stored(endpoint))?;
            let theirs = seen.get(&key).and_then(|(raw, _)| {
                let stored = serde_json::from_str(raw).ok()?;
                let here = text(&self.as_seen_here(stored)?).ok()?;
                (here == text(endpoint).ok()?).then(|| raw.clone())
            });
            put(key, theirs.unwrap_or(mine));
        }
        for route in &model.routes {
            let prefix = route.prefix.replace('/', "_");
            put(
                format!("{p}/routes/{}/{prefix}", route.tenant),
                text(route)?,
            );
        }
        for publish in &model.published {
            put(
                format!(
                    "{p}/published/{}/{}-{}",
                    publish.tenant, publish.protocol, publish.host_port
                ),
                text(publish)?,
            );
        }
        for (tenant, host) in &model.placed {
            put(format!("{p}/placed/{tenant}"), text(host)?);
        }
        put(
            format!("{p}/{}", self.local("switch")),
            text(&model.switch)?,
        );
        put(format!("{p}/{}", self.local("ports")), text(&model.ports)?);
        Ok(out)
    }
}

fn text<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}
