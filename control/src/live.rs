//! The control loop's answers to API commands: reads come from the live model, the
//! controller and the counters; a change is validated, written to the store, and only
//! then made live (a refused or unsaved change changes nothing).

use std::sync::Arc;

use dataplane::counters::{CoreStats, DropReason};
use dataplane::worker::Worker;
use serde_json::{json, Value};

use crate::api::{Command, Reply};
use crate::config::gateway::Placement;
use crate::config::switching::RolePlan;
use crate::controller::{fmt_mac, Controller};
use crate::model::{Change, Model};
use crate::store::{Conflict, Store};
use crate::wiring::{Dataplane, NamedPort};

/// The model as edited through the API, and where it is kept.
pub struct Live {
    /// The model in force.
    pub model: Model,
    /// Its store (`None`: changes last until tenetd stops).
    pub store: Option<Store>,
    /// The model the tables were last built from, with a cluster's dead hosts taken
    /// out (`None`: not yet known).
    pub running: Option<Value>,
    /// Gateway placements this host (the placer) could not record: tried again on the
    /// next [`Live::retry_placements`] rather than at the next change in the cluster,
    /// which may be long in coming.
    pub placement_pending: bool,
}

impl Live {
    /// Changes other hosts make to the cluster's model, when the model lives in etcd.
    pub fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match &self.store {
            Some(Store::Etcd(etcd)) => Some(etcd.watch()),
            _ => None,
        }
    }

    /// Records the gateway placements a failed write left out, if any.
    pub fn retry_placements(&mut self, controller: &mut Controller, dataplane: &Dataplane<'_>) {
        if self.placement_pending {
            self.refresh(controller, dataplane);
        }
    }

    /// Hands the cluster the traffic this host's gateways send out (bits a second).
    pub fn report_egress(&self, bps: f64) {
        if let Some(Store::Etcd(etcd)) = &self.store {
            etcd.report_egress(bps);
        }
    }

    /// Takes the cluster's model as it is now (after another host changed it): this
    /// host's tables follow it. A model that does not fit this host is logged and the
    /// tables in force stay.
    pub fn refresh(&mut self, controller: &mut Controller, dataplane: &Dataplane<'_>) {
        let Some(store) = &self.store else {
            return;
        };
        let model = match store.reload(&self.model) {
            Ok(Some(model)) => model,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the cluster's model; keeping the tables in force");
                return;
            }
        };
        let retrying = std::mem::take(&mut self.placement_pending);
        let model = match store.with_placements(&model) {
            // The record goes to every host through its watch, this one's too.
            Some(placed) => match store.save(&placed) {
                Ok(()) => placed,
                Err(e) if e.downcast_ref::<Conflict>().is_some() => {
                    tracing::info!(error = %e, "placing gateways: another host wrote first; taking its change next");
                    model
                }
                Err(e) => {
                    if !retrying {
                        tracing::warn!(error = %format!("{e:#}"), "could not record gateway placements; trying again every second");
                    }
                    self.placement_pending = true;
                    model
                }
            },
            None => model,
        };
        let effective = store.effective(&model);
        let same = serde_json::to_value(&model).ok() == serde_json::to_value(&self.model).ok()
            && serde_json::to_value(&effective).ok() == self.running;
        if same {
            return;
        }
        let base = controller.config().source.clone();
        match effective.over(&base).validate() {
            Ok(validated) => {
                tracing::info!(
                    tenants = model.tenants.len(),
                    hosts = model.hosts.len(),
                    endpoints = model.endpoints.len(),
                    "took the cluster's changes"
                );
                self.model = model;
                self.running = serde_json::to_value(&effective).ok();
                let ports = dataplane.port_info(&validated.ports);
                controller.reconfigure(Arc::new(validated), ports);
                controller.publish_if_changed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's model does not fit this host; keeping the tables in force");
            }
        }
    }

    /// Answers one command.
    pub fn answer(
        &mut self,
        command: Command,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) -> Reply {
        let (ports, workers) = (&dataplane.ports, &dataplane.workers);
        let dp = &*dataplane;
        match command {
            Command::ListTenants => Reply::ok(json!(self.model.tenants)),
            Command::ShowTenant(name) => match self.model.tenants.iter().find(|t| t.name == name) {
                Some(t) => {
                    let endpoints: Vec<_> = self
                        .model
                        .endpoints
                        .iter()
                        .filter(|e| e.tenant == name)
                        .collect();
                    let ports: Vec<&str> = ports_of(controller, &name);
                    let gateway_on = self.gateway_on(controller, &name);
                    Reply::ok(json!({
                        "tenant": t, "endpoints": endpoints, "ports": ports,
                        "gateway_on": gateway_on,
                    }))
                }
                None => Reply::error(404, "name", &format!("no tenant is named `{name}`")),
            },
            Command::ListHosts => Reply::ok(json!(self.model.hosts)),
            Command::ListEndpoints => Reply::ok(json!(self.model.endpoints)),
            Command::ListRoutes => Reply::ok(json!(self.model.routes)),
            Command::ListPublished => Reply::ok(json!(self.model.published)),
            Command::ListPorts => Reply::ok(ports_json(controller, dp)),
            Command::Stats => Reply::ok(stats_json(controller, dp)),
            Command::Show => Reply::ok(json!({
                "design": self.model.switch.design,
                "host": self.model.switch.host,
                "hosts": self.model.hosts,
                "tenants": self.model.tenants,
                "endpoints": self.model.endpoints,
                "routes": self.model.routes,
                "published": self.model.published,
                "ports": ports_json(controller, dp),
                "learned_macs": controller.learned(),
            })),
            Command::Change(change) => self.change(change, controller, dataplane),
            Command::Trace { port, frame } => trace(controller, ports, &port, frame),
            Command::Metrics => Reply::text(metrics(controller, ports, workers)),
            Command::OpenApi => Reply::ok(crate::api::openapi()),
            // Captures take time; the control loop runs them (see daemon::Capture).
            Command::Capture { .. } => {
                Reply::error(500, "", "capture is handled by the control loop")
            }
        }
    }

    /// The host `tenant`'s gateway runs on (`None`: it has none, or no living host
    /// can take it): in a cluster as placed among the living hosts, recorded or not;
    /// otherwise as this host's tables have it ("here" on a host without a name).
    fn gateway_on(&self, controller: &Controller, tenant: &str) -> Option<String> {
        if let Some(Store::Etcd(etcd)) = &self.store {
            return crate::placement::gateways(&self.model, &etcd.alive()).remove(tenant);
        }
        let config = controller.config();
        let switching = &config.switching;
        let index = switching.tenants.iter().position(|t| t.name == tenant)?;
        let router = config.gateway.routers.get(index)?.as_ref()?;
        let host = match router.placement {
            Placement::Here => switching.this_host,
            Placement::Host(h) => Some(h),
        };
        Some(host.map_or_else(|| "here".to_owned(), |h| switching.hosts[h].name.clone()))
    }

    fn change(
        &mut self,
        change: Change,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) -> Reply {
        let base = controller.config().source.clone();
        let (model, mut validated) = match self.model.apply(&change, &base) {
            Ok(next) => next,
            Err(refusal) => return Reply::error(refusal.status, &refusal.field, &refusal.message),
        };
        // In a cluster the tables leave out hosts counted dead.
        let effective = self.store.as_ref().map(|store| store.effective(&model));
        if let Some(Store::Etcd(_)) = &self.store {
            match effective.as_ref().map(|m| m.over(&base).validate()) {
                Some(Ok(v)) => validated = v,
                Some(Err(e)) => return Reply::error(400, "", &e.to_string()),
                None => {}
            }
        }
        // A new port's device must come up before the change is kept.
        if let Change::AddPort(_) = &change {
            let plan = validated.ports.last().expect("the new port is last");
            if let Err(e) = dataplane.hot_attach(plan, &validated) {
                return Reply::error(400, "backend", &format!("{e:#}"));
            }
        }
        if let Err(e) = self
            .store
            .as_ref()
            .map_or(Ok(()), |store| store.save(&model))
        {
            tracing::error!(error = %format!("{e:#}"), "could not save the state; change refused");
            if let Change::AddPort(spec) = &change {
                let name = validated.ports.last().map(|p| p.name.clone());
                if let Err(e) = dataplane.hot_detach(name.as_deref().unwrap_or_default()) {
                    tracing::error!(error = %format!("{e:#}"), port = ?spec.name, "detaching the refused port");
                }
            }
            if let Some(conflict) = e.downcast_ref::<Conflict>() {
                return Reply::error(409, &conflict.field, &conflict.message);
            }
            return Reply::error(500, "", &format!("could not save the state: {e:#}"));
        }
        tracing::info!(?change, "applied");
        self.running = effective.and_then(|m| serde_json::to_value(&m).ok());
        self.model = model;
        // Ports are paired with the config by name: a port the change removed has no
        // role in these tables, whether or not its device is detached yet.
        let ports = dataplane.port_info(&validated.ports);
        controller.reconfigure(Arc::new(validated), ports);
        if let Change::DeletePort(name) = &change {
            // Workers stop using the port only once tables without it are out.
            controller.publish_if_changed();
            if let Err(e) = dataplane.hot_detach(name) {
                tracing::error!(error = %format!("{e:#}"), port = %name, "detaching the port; it stays attached, unused, and is tried again");
                return Reply::error(500, "name", &format!("{e:#}"));
            }
            // What the workers queued about the port until they let go of it is
            // refused now, before a later port can take its id.
            controller.absorb(std::time::Instant::now());
        }
        let status = match change {
            Change::AddTenant(_)
            | Change::AddHost(_)
            | Change::AddEndpoint(_)
            | Change::AddRoute(_)
            | Change::AddPublish(_)
            | Change::AddPort(_) => 201,
            _ => 200,
        };
        Reply {
            status,
            body: json!({"status": status, "message": "applied"}),
            raw: None,
        }
    }
}

fn role_name(role: &RolePlan, tenants: &[crate::config::switching::TenantPlan]) -> Value {
    match role {
        RolePlan::None => json!({"role": "cross-connect"}),
        RolePlan::Access { tenant, .. } => {
            json!({"role": "access", "tenant": tenants[*tenant].name})
        }
        RolePlan::Trunk(carried) => {
            json!({"role": "trunk", "tenants": carried.iter().map(|&t| &tenants[t].name).collect::<Vec<_>>()})
        }
        RolePlan::Uplink(_) => json!({"role": "uplink"}),
    }
}

fn ports_of<'a>(controller: &'a Controller, tenant: &str) -> Vec<&'a str> {
    let config = controller.config();
    let plan = &config.switching;
    config
        .ports
        .iter()
        .zip(&plan.roles)
        .filter(|(_, role)| match role {
            RolePlan::Access { tenant: t, .. } => plan.tenants[*t].name == tenant,
            RolePlan::Trunk(carried) => carried.iter().any(|&t| plan.tenants[t].name == tenant),
            _ => false,
        })
        .map(|(p, _)| p.name.as_str())
        .collect()
}

/// Every configured port, attached or down, and every port still detaching.
fn ports_json(controller: &Controller, dataplane: &Dataplane<'_>) -> Value {
    let config = controller.config();
    let mut list: Vec<Value> = config
        .ports
        .iter()
        .zip(&config.switching.roles)
        .map(|(plan, role)| {
            let role = role_name(role, &config.switching.tenants);
            match dataplane.port(&plan.name) {
                Some(port) => port_json(&plan.name, plan.backend.kind(), role, port),
                None => json!({
                    "name": plan.name,
                    "backend": plan.backend.kind(),
                    "state": "down",
                    "error": dataplane.down.get(&plan.name),
                    "role": role,
                    "link_up": false,
                }),
            }
        })
        .collect();
    for named in &dataplane.ports {
        if !config.ports.iter().any(|p| p.name == named.name) {
            let mut entry = port_json(&named.name, "", json!({"role": "none"}), &named.port);
            entry["state"] = json!("detaching");
            list.push(entry);
        }
    }
    json!(list)
}

fn port_json(name: &str, backend: &str, role: Value, port: &dataplane::dpdk::Port) -> Value {
    let s = port.stats();
    json!({
        "name": name,
        "backend": backend,
        "state": "up",
        "device": port.name(),
        "port_id": port.id(),
        "mac": fmt_mac(&port.mac()),
        "link_up": port.link().up,
        "role": role,
        "rx_packets": s.rx_packets,
        "tx_packets": s.tx_packets,
        "rx_bytes": s.rx_bytes,
        "tx_bytes": s.tx_bytes,
        "rx_missed": s.rx_missed,
        "rx_errors": s.rx_errors,
        "tx_errors": s.tx_errors,
    })
}

fn drops_json(stats: &CoreStats) -> Value {
    let map: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_owned(), json!(stats.dropped(*r))))
        .collect();
    Value::Object(map)
}

fn stats_json(controller: &Controller, dataplane: &Dataplane<'_>) -> Value {
    let workers = &dataplane.workers;
    let cores: Vec<CoreStats> = workers.iter().map(|w| w.counters().snapshot()).collect();
    let total = CoreStats::sum(&cores);
    let control = controller.stats();
    json!({
        "ports": ports_json(controller, dataplane),
        "cores": workers.iter().zip(&cores).map(|(w, s)| json!({
            "core": w.core(),
            "rx_packets": s.rx_packets,
            "tx_packets": s.tx_packets,
            "busy_cycles": s.busy_cycles,
            "cycles_per_packet": s.cycles_per_packet(),
            "idle_sleeps": s.idle_sleeps,
            "punted": s.punted,
            "handed_off": s.handed_off,
            "events_lost": s.events_lost,
            "gateway_egress_bytes": s.gateway_egress_bytes,
            "drops": drops_json(s),
        })).collect::<Vec<_>>(),
        "drops": drops_json(&total),
        "drop_reasons": DropReason::ALL.iter().map(|r| json!({"name": r.name(), "help": r.help()})).collect::<Vec<_>>(),
        "control": {
            "learned_macs": controller.learned(),
            "learned": control.learned,
            "learn_refused": control.learn_refused,
            "aged": control.aged,
            "published": control.published,
            "arp_sent": control.arp_sent,
        },
    })
}

/// Runs `frame` through the pipeline as if received on `port`, with the live tables,
/// and reports every decision and every output. Nothing is transmitted or learned.
fn trace(controller: &Controller, ports: &[NamedPort], port: &str, frame: Vec<u8>) -> Reply {
    use dataplane::counters::CoreCounters;
    use dataplane::packet::frame::{BufFrame, Frame};
    use dataplane::pipeline::events::{EventQueue, Learner};
    use dataplane::pipeline::fdb_cache::FdbCache;
    use dataplane::pipeline::router::RouterState;
    use dataplane::pipeline::switch::{handle, Context, Sink};

    struct Collect(Vec<(u16, Vec<u8>)>);
    impl Sink<BufFrame> for Collect {
        fn send(&mut self, port: u16, frame: BufFrame) {
            self.0.push((port, frame.data().to_vec()));
        }
    }

    let Some(ingress) = ports.iter().find(|p| p.name == port) else {
        return Reply::error(404, "port", &format!("no port is named `{port}`"));
    };
    let tables = controller.tables();
    let counters = CoreCounters::default();
    let mut learner = Learner::new(Arc::new(EventQueue::new(16)));
    let mut cache = FdbCache::default();
    let mut router = RouterState::default();
    let mut sink = Collect(Vec::new());
    let mut cx = Context {
        counters: &counters,
        learner: &mut learner,
        cache: &mut cache,
        router: &mut router,
        tracer: Vec::<String>::new(),
    };
    handle(
        &tables,
        ingress.port.id(),
        BufFrame::new(&frame),
        &mut sink,
        &mut cx,
    );
    let decisions = cx.tracer;
    let name_of = |id: u16| {
        ports
            .iter()
            .find(|p| p.port.id() == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    let outputs: Vec<Value> = sink
        .0
        .iter()
        .map(|(id, bytes)| {
            json!({
                "port": name_of(*id),
                "frame": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    Reply::ok(
        json!({"decisions": decisions, "outputs": outputs, "drops": drops_json(&counters.snapshot())}),
    )
}

/// Prometheus text exposition of the counters.
fn metrics(controller: &Controller, ports: &[NamedPort], workers: &[Worker]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let port_stats: Vec<_> = ports
        .iter()
        .map(|p| (p.name.clone(), p.port.stats()))
        .collect();
    let per_port = |f: fn(&dataplane::dpdk::PortStats) -> u64| -> Vec<(String, u64)> {
        port_stats
            .iter()
            .map(|(n, s)| (format!("{{port=\"{n}\"}}"), f(s)))
            .collect()
    };
    family(
        "tenet_port_rx_packets_total",
        "Packets received by the port.",
        "counter",
        per_port(|s| s.rx_packets),
    );
    family(
        "tenet_port_tx_packets_total",
        "Packets transmitted by the port.",
        "counter",
        per_port(|s| s.tx_packets),
    );
    family(
        "tenet_port_rx_bytes_total",
        "Bytes received by the port.",
        "counter",
        per_port(|s| s.rx_bytes),
    );
    family(
        "tenet_port_tx_bytes_total",
        "Bytes transmitted by the port.",
        "counter",
        per_port(|s| s.tx_bytes),
    );
    family(
        "tenet_port_rx_missed_total",
        "Packets the device dropped for want of RX descriptors.",
        "counter",
        per_port(|s| s.rx_missed),
    );
    let cores: Vec<(usize, CoreStats)> = workers
        .iter()
        .map(|w| (w.core(), w.counters().snapshot()))
        .collect();
    let per_core = |f: fn(&CoreStats) -> u64| -> Vec<(String, u64)> {
        cores
            .iter()
            .map(|(c, s)| (format!("{{core=\"{c}\"}}"), f(s)))
            .collect()
    };
    family(
        "tenet_core_rx_packets_total",
        "Packets received by the worker.",
        "counter",
        per_core(|s| s.rx_packets),
    );
    family(
        "tenet_core_tx_packets_total",
        "Packets the worker handed to devices.",
        "counter",
        per_core(|s| s.tx_packets),
    );
    family(
        "tenet_core_busy_cycles_total",
        "TSC cycles of loop iterations that moved packets.",
        "counter",
        per_core(|s| s.busy_cycles),
    );
    family(
        "tenet_core_gateway_egress_bytes_total",
        "Bytes tenants' gateways sent out of the uplink.",
        "counter",
        per_core(|s| s.gateway_egress_bytes),
    );
    let mut drops = Vec::new();
    for (core, s) in &cores {
        for reason in DropReason::ALL {
            drops.push((
                format!("{{core=\"{core}\",reason=\"{}\"}}", reason.name()),
                s.dropped(*reason),
            ));
        }
    }
    family(
        "tenet_drops_total",
        "Packets dropped, by reason.",
        "counter",
        drops,
    );
    family(
        "tenet_learned_macs",
        "MACs learned and not aged out.",
        "gauge",
        vec![(String::new(), controller.learned() as u64)],
    );
    out
}
