//! This host's membership: a key under a lease it keeps renewing (a host that stops
//! drops out when the lease runs out), and its gateways' traffic report under the same
//! lease, beside the prefix, for the placer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use super::client::{self, call_any, encode, first_message, integer};
use super::EtcdStore;
use crate::placement::TRAFFIC_STEP_BPS;

impl EtcdStore {
    /// Registers this host under a lease it renews on a thread of its own every third
    /// of the lease time; a host that stops renewing (killed, cut off) drops out of
    /// every other host's tunnels when the lease runs out. A lease lost while etcd was
    /// away is taken anew, and so is a first one etcd did not grant: the thread keeps
    /// asking (an error here is only a thread that did not start).
    pub fn register(&self) -> anyhow::Result<()> {
        let lease = Lease {
            endpoints: self.endpoints.clone(),
            key: format!("{}/alive/{}", self.prefix, self.host),
            report_key: format!("{}{}", self.load_prefix(), self.host),
            egress_bps: Arc::clone(&self.egress_bps),
            ttl: self.lease_ttl,
            stop: Arc::clone(&self.stop),
            current: Arc::clone(&self.lease),
        };
        let id = match lease.grant() {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not register in the cluster yet; trying again");
                None
            }
        };
        std::thread::Builder::new()
            .name("tenet-etcd-lease".to_owned())
            .spawn(move || lease.keep(id))
            .context("starting the lease thread")?;
        Ok(())
    }

    /// Sets the gateway egress this host reports (bits a second); the lease thread
    /// writes it when it has changed by a step or the lease is new.
    pub fn report_egress(&self, bps: f64) {
        self.egress_bps.store(bps.to_bits(), Ordering::Relaxed);
    }

    /// The gateway egress every living host reported last, by host.
    pub fn egress_reports(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let start = self.load_prefix();
        let (kvs, _) = client::range(&self.endpoints, &start)?;
        let mut reports = BTreeMap::new();
        for (key, value, _) in kvs {
            let host = key.strip_prefix(&start).unwrap_or_default();
            let bps = serde_json::from_str::<Value>(&value)
                .ok()
                .and_then(|report| report["egress_bps"].as_f64())
                .filter(|bps| bps.is_finite() && *bps >= 0.0);
            match bps {
                Some(bps) => {
                    reports.insert(host.to_owned(), bps);
                }
                // One host's garbled report must not cost the others theirs.
                None => {
                    tracing::warn!(%key, %value, "not a traffic report; that host counts as idle")
                }
            }
        }
        Ok(reports)
    }

    pub(super) fn load_prefix(&self) -> String {
        format!("{}-load/", self.prefix)
    }
}

/// This host's registration: a key under a lease, and its traffic report under the
/// same lease (both gone when the host is).
struct Lease {
    endpoints: Vec<String>,
    key: String,
    report_key: String,
    /// The egress to report (an `f64`'s bits).
    egress_bps: Arc<AtomicU64>,
    ttl: u64,
    stop: Arc<AtomicBool>,
    /// The lease granted last, shared with the store.
    current: Arc<Mutex<Option<String>>>,
}

impl Lease {
    /// A new lease with the key put under it; returns the lease id.
    fn grant(&self) -> anyhow::Result<String> {
        let granted = call_any(
            &self.endpoints,
            "/v3/lease/grant",
            &json!({"TTL": self.ttl.to_string()}),
        )?;
        let id = granted["ID"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| granted["ID"].as_i64().map(|n| n.to_string()))
            .context("etcd granted a lease without an id")?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        call_any(
            &self.endpoints,
            "/v3/kv/put",
            &json!({
                "key": encode(&self.key),
                "value": encode(json!({"since": since}).to_string()),
                "lease": id,
            }),
        )?;
        tracing::info!(key = %self.key, ttl_s = self.ttl, "registered in the cluster");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        Ok(id)
    }

    fn keep(self, mut id: Option<String>) {
        let period = Duration::from_millis((self.ttl * 1000 / 3).max(200));
        // The rate last reported; no report stands for none.
        let mut reported = 0.0;
        let mut warned = false;
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(period);
            let renewed = match &id {
                Some(current) => self.renew(current),
                None => Ok(false),
            };
            match renewed {
                Ok(true) => {}
                Ok(false) => match self.grant() {
                    Ok(new) => {
                        id = Some(new);
                        reported = 0.0;
                        warned = false;
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %format!("{e:#}"), "could not register again; trying every {period:?}");
                            warned = true;
                        }
                        continue;
                    }
                },
                // etcd away: the lease may outlive it; try again next period.
                Err(_) => continue,
            }
            let Some(id) = id.as_deref() else {
                continue;
            };
            // Written when it moved by a step or 5 %, whichever is more: a rate that
            // wanders around a step, or a busy host's, does not write every period.
            let bps = f64::from_bits(self.egress_bps.load(Ordering::Relaxed));
            if (bps - reported).abs() > TRAFFIC_STEP_BPS.max(reported * 0.05) {
                match self.report(id, bps) {
                    Ok(()) => reported = bps,
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "could not report traffic")
                    }
                }
            }
        }
    }

    /// Writes this host's gateway egress under its lease.
    fn report(&self, id: &str, bps: f64) -> anyhow::Result<()> {
        call_any(
            &self.endpoints,
            "/v3/kv/put",
            &json!({
                "key": encode(&self.report_key),
                "value": encode(json!({"egress_bps": bps}).to_string()),
                "lease": id,
            }),
        )?;
        Ok(())
    }

    /// Renews the lease; `false` when it had already run out.
    fn renew(&self, id: &str) -> anyhow::Result<bool> {
        let mut last = None;
        for endpoint in &self.endpoints {
            match first_message(endpoint, "/v3/lease/keepalive", &json!({"ID": id})) {
                Ok(reply) => {
                    let ttl = integer(&reply["result"]["TTL"]);
                    return Ok(ttl > 0);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no etcd endpoint")))
    }
}
