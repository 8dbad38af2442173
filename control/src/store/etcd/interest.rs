//! What a host follows of the cluster. A host watching everything (`control.etcd_watch
//! = "all"`, the default) follows the whole prefix. A host watching its own tenants
//! (`"own"`) follows the hosts, the leases, its own part and its entries of the member
//! index (`member/<host>/`), and the records of the tenants it holds: those the index
//! names (an endpoint, a claim, a gateway here), those its own ports name, those a
//! change through its API names (held on demand for a while), and their peers. It
//! receives the events of its own tenants, not the whole cloud's, and holds only
//! their records. The egress host and the gateway placer need every tenant: they
//! watch everything.

use std::collections::BTreeSet;

use crate::config::switching::TenantSpec;
use crate::config::PortSpec;

use super::client::KeyRange;
use super::watch::KeyCache;
use super::EtcdStore;

/// How much of the cluster a host follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Watch {
    /// Every key under the prefix.
    #[default]
    All,
    /// The hosts, the leases, its own part and the tenants it holds.
    Own,
}

impl Watch {
    /// The mode a config word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "all" => Some(Watch::All),
            "own" => Some(Watch::Own),
            _ => None,
        }
    }
}

/// Ranges of one tenant's records.
pub(super) const TENANT_RANGES: usize = 6;

/// What a watch follows: the cluster's own ranges, or one tenant's records.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Owner {
    Cluster,
    Tenant(String),
}

/// What decides the ranges a host follows: its prefix, its name, its mode.
#[derive(Debug, Clone)]
pub(super) struct Interest {
    pub(super) prefix: String,
    pub(super) host: String,
    pub(super) watch: Watch,
}

impl EtcdStore {
    pub(super) fn interest(&self) -> Interest {
        Interest {
            prefix: self.prefix.clone(),
            host: self.host.clone(),
            watch: self.watch,
        }
    }
}

impl Interest {
    /// The ranges this host follows whatever tenants it holds.
    pub(super) fn cluster_ranges(&self) -> Vec<KeyRange> {
        let p = &self.prefix;
        match self.watch {
            Watch::All => vec![KeyRange::prefix(&format!("{p}/"))],
            Watch::Own => vec![
                KeyRange::prefix(&format!("{p}/hosts/")),
                KeyRange::prefix(&format!("{p}/alive/")),
                KeyRange::prefix(&format!("{p}/local/{}/", self.host)),
                KeyRange::prefix(&format!("{p}/member/{}/", self.host)),
            ],
        }
    }

    /// The ranges of one tenant's records (its claimed id and VLAN are left out: only
    /// a write compares them, with the values its own records give).
    pub(super) fn tenant_ranges(&self, tenant: &str) -> [KeyRange; TENANT_RANGES] {
        let p = &self.prefix;
        [
            KeyRange::key(&format!("{p}/tenants/{tenant}")),
            KeyRange::prefix(&format!("{p}/endpoints/{tenant}/")),
            KeyRange::prefix(&format!("{p}/routes/{tenant}/")),
            KeyRange::prefix(&format!("{p}/published/{tenant}/")),
            KeyRange::prefix(&format!("{p}/addresses/{tenant}/")),
            KeyRange::key(&format!("{p}/placed/{tenant}")),
        ]
    }

    /// Whether this host follows `key` while it holds `followed`.
    pub(super) fn follows(&self, key: &str, followed: &BTreeSet<String>) -> bool {
        let path = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|k| k.strip_prefix('/'));
        match (self.watch, path) {
            (_, None) => false,
            (Watch::All, Some(_)) => true,
            (Watch::Own, Some(path)) => {
                self.cluster_ranges().iter().any(|r| r.holds(key))
                    || super::keys::tenant_of(path).is_some_and(|t| followed.contains(t))
            }
        }
    }

    /// Whether an event at `key` may change the tenants a host watching its own
    /// holds: its index, its ports, a tenant's record (its peers).
    pub(super) fn may_move(&self, key: &str) -> bool {
        let Some(path) = key
            .strip_prefix(self.prefix.as_str())
            .and_then(|k| k.strip_prefix('/'))
        else {
            return false;
        };
        path.starts_with("tenants/")
            || path
                .strip_prefix("member/")
                .and_then(|rest| rest.strip_prefix(self.host.as_str()))
                .is_some_and(|rest| rest.starts_with('/'))
            || path
                .strip_prefix("local/")
                .and_then(|rest| rest.strip_prefix(self.host.as_str()))
                .is_some_and(|rest| rest == "/ports")
    }

    /// The tenants a host watching its own holds, as `cache` has the index, its ports
    /// and the tenants' records, with `demanded` (held on demand): those named, and
    /// their peers.
    pub(super) fn followed(
        &self,
        cache: &KeyCache,
        demanded: impl IntoIterator<Item = String>,
    ) -> BTreeSet<String> {
        let p = &self.prefix;
        let mut held: BTreeSet<String> = demanded.into_iter().collect();
        let index = format!("{p}/member/{}/", self.host);
        for (key, _) in cache.values_in(&KeyRange::prefix(&index)) {
            let rest = &key[index.len()..];
            if let Some((tenant, _why)) = rest.split_once('/') {
                held.insert(tenant.to_owned());
            }
        }
        let ports = format!("{p}/local/{}/ports", self.host);
        if let Some(ports) = cache
            .value(&ports)
            .and_then(|v| serde_json::from_str::<Vec<PortSpec>>(v).ok())
        {
            for port in ports {
                held.extend(port.tenant);
                held.extend(port.tenants.into_iter().flatten());
            }
        }
        // A tenant's peers route with it: their records come too (one step: a
        // peer's own peers are its business).
        let peers: Vec<String> = held
            .iter()
            .filter_map(|t| cache.value(&format!("{p}/tenants/{t}")))
            .filter_map(|v| serde_json::from_str::<TenantSpec>(v).ok())
            .flat_map(|t| t.peers)
            .collect();
        held.extend(peers);
        held
    }
}
