//! This host's membership: a key under a lease kept alive on etcd's keepalive stream (a
//! host that stops renewing drops out when the lease runs out), and its gateways'
//! traffic report under the same lease, beside the prefix, for the placer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::PutOptions;
use serde_json::{json, Value};

use super::client::{misconfigured, Etcd};
use super::EtcdStore;
use crate::placement::TRAFFIC_STEP_BPS;

impl EtcdStore {
    /// Registers this host under a lease renewed every third of the lease time by a
    /// task of its own; a host that stops renewing (killed, cut off) drops out of every
    /// other host's tunnels when the lease runs out. A lease lost while etcd was away
    /// is taken anew, and so is a first one etcd did not grant: the task keeps asking
    /// (an error here is only a task that did not start).
    pub fn register(&self) -> anyhow::Result<()> {
        let lease = Lease {
            etcd: Arc::clone(&self.etcd),
            key: format!("{}/alive/{}", self.prefix, self.host),
            report_key: format!("{}{}", self.load_prefix(), self.host),
            egress_bps: Arc::clone(&self.egress_bps),
            ttl: self.lease_ttl,
            watch: self.watch,
            current: Arc::clone(&self.lease),
            renewed: Arc::clone(&self.renewed),
        };
        let id = match self.block_on(lease.grant()) {
            Ok(id) => Some(id),
            Err(e) if misconfigured(&e) => {
                tracing::error!(error = %format!("{e:#}"), "etcd refused this host; it runs its own view until the config is fixed");
                None
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not register in the cluster yet; trying again");
                None
            }
        };
        let task = self.runtime()?.spawn(lease.keep(id));
        *self.lease_task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(())
    }

    /// Sets the gateway egress this host reports (bits a second); the lease task
    /// writes it when it has changed by a step or the lease is new.
    pub fn report_egress(&self, bps: f64) {
        self.egress_bps.store(bps.to_bits(), Ordering::Relaxed);
    }

    /// The gateway egress every living host reported last, by host.
    pub fn egress_reports(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let start = self.load_prefix();
        let (kvs, _) = self.block_on(self.etcd.range(&start))?;
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
    etcd: Arc<Etcd>,
    key: String,
    report_key: String,
    /// The egress to report (an `f64`'s bits).
    egress_bps: Arc<AtomicU64>,
    ttl: u64,
    /// How much of the cluster this host follows: a host watching its own tenants
    /// is not chosen to place gateways.
    watch: super::Watch,
    /// The lease granted last, shared with the store.
    current: Arc<Mutex<Option<i64>>>,
    /// When etcd last confirmed it (ms since the epoch), shared with the store.
    renewed: Arc<AtomicU64>,
}

/// How a keepalive stream ended.
enum Ended {
    /// The lease ran out (etcd was away longer than its time): a new one is needed.
    Lost,
    /// The stream broke (etcd away): the lease may outlive it.
    Broken(anyhow::Error),
}

impl Lease {
    /// A new lease with the key put under it; returns the lease id.
    async fn grant(&self) -> anyhow::Result<i64> {
        let etcd = &self.etcd;
        let mut leases = etcd.client().await?.lease_client();
        let ttl = i64::try_from(self.ttl).unwrap_or(i64::MAX);
        let id = leases
            .grant(ttl, None)
            .await
            .map_err(|e| etcd.explain(e))?
            .id();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.put_under(
            id,
            &self.key,
            json!({ "since": since, "watch": self.watch }),
        )
        .await?;
        tracing::info!(key = %self.key, ttl_s = self.ttl, "registered in the cluster");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        self.confirmed();
        Ok(id)
    }

    /// etcd holds the lease now.
    fn confirmed(&self) {
        self.renewed.store(super::epoch_ms(), Ordering::Relaxed);
    }

    async fn keep(self, mut id: Option<i64>) {
        let period = Duration::from_millis((self.ttl * 1000 / 3).max(200));
        // The rate last reported; no report stands for none.
        let mut reported = 0.0;
        let mut warned = false;
        loop {
            let current = match id {
                Some(current) => current,
                None => match self.grant().await {
                    Ok(new) => {
                        reported = 0.0;
                        warned = false;
                        new
                    }
                    Err(e) => {
                        if !warned {
                            if misconfigured(&e) {
                                tracing::error!(error = %format!("{e:#}"), "etcd refused this host; trying again every {period:?}");
                            } else {
                                tracing::warn!(error = %format!("{e:#}"), "could not register again; trying every {period:?}");
                            }
                            warned = true;
                        }
                        tokio::time::sleep(period).await;
                        continue;
                    }
                },
            };
            id = Some(current);
            match self.renew(current, period, &mut reported).await {
                Ended::Lost => {
                    id = None;
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Ended::Broken(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "the lease's keepalive stream broke; opening another");
                    tokio::time::sleep(period).await;
                }
            }
        }
    }

    /// Renews lease `id` on one keepalive stream every `period`, reporting traffic
    /// between renewals, until the stream ends.
    async fn renew(&self, id: i64, period: Duration, reported: &mut f64) -> Ended {
        let etcd = &self.etcd;
        let client = match etcd.client().await {
            Ok(client) => client,
            Err(e) => return Ended::Broken(e),
        };
        // Opening the stream renews the lease once, or finds it gone.
        let (mut keeper, mut replies) = match client.lease_client().keep_alive(id).await {
            Ok(stream) => {
                self.confirmed();
                stream
            }
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ended::Lost,
            Err(e) => return Ended::Broken(etcd.explain(e)),
        };
        loop {
            self.report_if_moved(id, reported).await;
            tokio::time::sleep(period).await;
            if let Err(e) = keeper.keep_alive().await {
                return Ended::Broken(etcd.explain(e));
            }
            match replies.message().await {
                Ok(Some(reply)) if reply.ttl() > 0 => self.confirmed(),
                Ok(Some(_)) => return Ended::Lost,
                Ok(None) => {
                    return Ended::Broken(anyhow::anyhow!("etcd closed the keepalive stream"))
                }
                Err(e) => return Ended::Broken(etcd.explain(e)),
            }
        }
    }

    /// Writes this host's gateway egress under its lease when it moved by a step or 5 %,
    /// whichever is more: a rate that wanders around a step, or a busy host's, does
    /// not write every period.
    async fn report_if_moved(&self, id: i64, reported: &mut f64) {
        let bps = f64::from_bits(self.egress_bps.load(Ordering::Relaxed));
        if (bps - *reported).abs() <= TRAFFIC_STEP_BPS.max(*reported * 0.05) {
            return;
        }
        match self
            .put_under(id, &self.report_key, json!({ "egress_bps": bps }))
            .await
        {
            Ok(()) => *reported = bps,
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "could not report traffic"),
        }
    }

    /// Puts `value` at `key` under lease `id`.
    async fn put_under(&self, id: i64, key: &str, value: Value) -> anyhow::Result<()> {
        let etcd = &self.etcd;
        let options = PutOptions::new().with_lease(id);
        etcd.kv()
            .await?
            .put(key, value.to_string(), Some(options))
            .await
            .map_err(|e| etcd.explain(e))?;
        Ok(())
    }
}
