//! The control loop's answers to API commands: reads come from the live model, the
//! controller and the counters; a change is validated, written to the store, and only
//! then made live (a refused or unsaved change changes nothing).
//!
//! The store is never waited on in the control loop: a change's write and a read of the
//! cluster's model run on blocking threads and report back on [`Live::done`], while the
//! loop goes on learning, resolving and answering reads. Changes are written one at a
//! time, in the order they came.

use std::collections::VecDeque;
use std::sync::Arc;

use dataplane::counters::{CoreStats, DropReason};
use dataplane::packet::MacText;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::addresses;
use crate::api::{Command, Reply};
use crate::config::gateway::Placement;
use crate::config::grow::{self, Keys};
use crate::config::switching::RolePlan;
use crate::config::Validated;
use crate::controller::Controller;
use crate::model::{Change, Model, Place};
use crate::store::etcd::Touched;
use crate::store::{Conflict, LocalCopies, Store};
use crate::wiring::{Dataplane, NamedPort};

/// What a store call on a blocking thread reports.
pub enum Done {
    /// The change being written is kept (or not).
    Saved(anyhow::Result<()>),
    /// The cluster's model as read (with its floating gateways placed, when this host
    /// places them).
    Read(Box<Read>),
}

/// A read of the cluster's model.
pub struct Read {
    /// The model, `None` when nothing is stored; an error when etcd did not answer.
    model: anyhow::Result<Option<Model>>,
    /// Whether recording gateway placements failed for a reason other than another
    /// host writing first (tried again every second).
    placement_failed: bool,
    /// Whether this host's own part is in the cluster now.
    seeded: bool,
    /// The tenants whose records changed since the last read (`None`: anything may
    /// have).
    touched: Touched,
    /// Whether tenants a change names were held first.
    held: bool,
}

/// A change whose write is under way.
struct Saving {
    change: Change,
    /// Where it lands in `before`, when found ahead of the store, which looks
    /// otherwise.
    place: Option<Place>,
    /// The model the change was made on (shared, not copied: at a hundred thousand
    /// tenants a copy of the model costs more than the change).
    before: Arc<Model>,
    model: Arc<Model>,
    /// `None` for a change of claimed addresses alone: the tables stay as they are.
    validated: Option<Validated>,
    effective: Option<Model>,
    /// Whether the change was validated alone ([`crate::config::grow`]): the keys
    /// already took it.
    validated_alone: bool,
    reply: oneshot::Sender<Reply>,
}

/// The model as edited through the API, and where it is kept.
pub struct Live {
    /// The model in force.
    pub model: Arc<Model>,
    /// Its store (`None`: changes last until tenetd stops).
    pub store: Option<Arc<Store>>,
    /// The model the tables were last built from, with a cluster's dead hosts taken
    /// out (`None`: not yet known, or a single host, which runs the model itself).
    pub running: Option<Model>,
    /// Gateway placements this host (the placer) could not record: tried again on the
    /// next [`Live::retry_placements`] rather than at the next change in the cluster,
    /// which may be long in coming.
    pub placement_pending: bool,
    /// This host's own part (switch settings, ports) is not in the cluster yet: etcd
    /// was away when it started. Written at the first read that reaches etcd.
    pub unseeded: bool,
    /// Records of the stored model left out of the tables now because they do not fit
    /// (see [`Model::validate_leniently`]).
    skipped: std::collections::BTreeSet<String>,
    /// What the model's tenants took, for a tenant validated alone; followed from
    /// change to change (`None`: built again when next needed).
    keys: Option<Keys>,
    /// Where blocking store calls report (the loop hands it back to [`Live::finish`]).
    report: mpsc::UnboundedSender<Done>,
    saving: Option<Saving>,
    queued: VecDeque<(Change, oneshot::Sender<Reply>)>,
    reading: bool,
    read_again: bool,
    /// A cluster's local copy, written behind the changes (`None`: no store).
    copies: Option<LocalCopies>,
    /// The last read of the cluster was not taken (an error, a model that did not
    /// fit): the next is taken whole, whatever it says changed.
    read_missed: bool,
    /// The next change waits for a read that holds the tenants it names (a host
    /// watching its own tenants).
    holding: bool,
    /// Tenants to hold once the read under way is taken.
    hold_waiting: Option<Vec<String>>,
    /// The next change's tenants were held: it goes on with what was read.
    front_held: bool,
}

impl Live {
    /// The live model `model`, kept in `store`, that the tables were built from as
    /// `running`; and where its blocking store calls report, for the control loop.
    pub fn new(
        model: Model,
        store: Option<Arc<Store>>,
        running: Option<Model>,
    ) -> (Self, mpsc::UnboundedReceiver<Done>) {
        let (report, done) = mpsc::unbounded_channel();
        let copies = store.clone().map(LocalCopies::new);
        let live = Self {
            model: Arc::new(model),
            store,
            copies,
            read_missed: true,
            running,
            placement_pending: false,
            unseeded: false,
            skipped: Default::default(),
            keys: None,
            report,
            saving: None,
            queued: VecDeque::new(),
            reading: false,
            read_again: false,
            holding: false,
            hold_waiting: None,
            front_held: false,
        };
        (live, done)
    }

    /// Changes other hosts make to the cluster's model, when the model lives in etcd.
    pub fn watch(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match self.store.as_deref() {
            Some(Store::Etcd(etcd)) => Some(etcd.watch()),
            _ => None,
        }
    }

    /// Records the gateway placements a failed write left out, and writes this host's
    /// own part if etcd was away when it started.
    pub fn retry_placements(&mut self) {
        if self.placement_pending || self.unseeded {
            self.refresh();
        }
    }

    /// Hands the cluster the traffic this host's gateways send out (bits a second).
    pub fn report_egress(&self, bps: f64) {
        if let Some(Store::Etcd(etcd)) = self.store.as_deref() {
            etcd.report_egress(bps);
        }
    }

    /// Reads the cluster's model again (another host changed it), on a blocking
    /// thread; [`Live::finish`] takes it. A read asked for while one runs follows it.
    pub fn refresh(&mut self) {
        if self.store.is_none() {
            return;
        }
        if self.reading {
            self.read_again = true;
            return;
        }
        self.start_read(Vec::new());
    }

    /// Reads the cluster's model on a blocking thread, holding `hold` first (a host
    /// watching its own tenants reads their records and follows them for a while).
    fn start_read(&mut self, hold: Vec<String>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        self.reading = true;
        let seed = Arc::clone(&self.model);
        let retrying = std::mem::take(&mut self.placement_pending);
        let unseeded = self.unseeded;
        let report = self.report.clone();
        tokio::task::spawn_blocking(move || {
            // Whatever happens there, the loop hears back: a read that never reports
            // would leave this host deaf to the cluster.
            let held = !hold.is_empty();
            let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let (Store::Etcd(etcd), true) = (&*store, held) {
                    if let Err(e) = etcd.hold(hold) {
                        tracing::warn!(error = %format!("{e:#}"), "could not read the tenants a change names; checking it against what this host holds");
                    }
                }
                read_cluster(&store, &seed, retrying, unseeded)
            }))
            .unwrap_or_else(|_| Read {
                model: Err(anyhow::anyhow!("reading the cluster's model failed")),
                placement_failed: retrying,
                seeded: false,
                touched: None,
                held: false,
            });
            let read = Read { held, ..read };
            let _ = report.send(Done::Read(Box::new(read)));
        });
    }

    /// Takes what a blocking store call reported.
    pub fn finish(
        &mut self,
        done: Done,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) {
        match done {
            Done::Saved(result) => {
                if let Some(saving) = self.saving.take() {
                    self.commit(saving, result, controller, dataplane);
                }
                self.next_change(controller, dataplane);
            }
            Done::Read(read) => {
                self.reading = false;
                let held = read.held;
                self.take_read(*read, controller, dataplane);
                if let Some(tenants) = self.hold_waiting.take() {
                    self.start_read(tenants);
                } else if std::mem::take(&mut self.read_again) {
                    self.refresh();
                }
                if held {
                    self.holding = false;
                    self.front_held = true;
                    self.next_change(controller, dataplane);
                }
            }
        }
    }

    /// Takes the cluster's model as read: this host's tables follow it. Records that
    /// do not fit this host are left out (and logged); a model whose own part does not
    /// fit is logged and the tables in force stay.
    fn take_read(&mut self, read: Read, controller: &mut Controller, dataplane: &Dataplane<'_>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        self.placement_pending |= read.placement_failed;
        if read.seeded && self.unseeded {
            tracing::info!("this host's part is in the cluster now");
            self.unseeded = false;
        }
        // A read not taken leaves changes the next one does not name: that one is
        // taken whole.
        let missed = std::mem::replace(&mut self.read_missed, true);
        let model = match read.model {
            Ok(Some(model)) => model,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the cluster's model; keeping the tables in force");
                return;
            }
        };
        // Most changes in a large cluster are other hosts' tenants': this host's view
        // stays as it is, and only the model is taken.
        if let (Some(names), Some(running), false, Store::Etcd(etcd)) =
            (&read.touched, &self.running, missed, &*store)
        {
            let alive = etcd.alive();
            let elsewhere = |tenant: &String| {
                crate::placement::surely_elsewhere(&model, &alive, etcd.host(), tenant, running)
            };
            if names.iter().all(elsewhere) {
                self.model = Arc::new(model);
                self.keep_copy();
                self.read_missed = false;
                return;
            }
        }
        let effective = store.effective(&model);
        // Compared as they are, not as JSON: every watch event at every host comes here.
        let same = model == *self.model && self.running.as_ref() == Some(&effective);
        if same {
            self.read_missed = false;
            return;
        }
        let base = controller.config().source.clone();
        match effective.validate_leniently(&base) {
            Ok((validated, skipped)) => {
                self.note_skipped(&skipped);
                tracing::info!(
                    tenants = model.tenants.len(),
                    hosts = model.hosts.len(),
                    endpoints = model.endpoints.len(),
                    "took the cluster's changes"
                );
                self.model = Arc::new(model);
                self.running = Some(effective);
                self.read_missed = false;
                self.keep_copy();
                let ports = dataplane.port_info(&validated.ports);
                controller.reconfigure(Arc::new(validated), ports);
                controller.publish_if_changed();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the cluster's model does not fit this host; keeping the tables in force");
            }
        }
    }

    /// Keeps the model where a restart finds it when the store does not answer (a
    /// cluster's local copy), off the control loop.
    fn keep_copy(&self) {
        if let Some(copies) = &self.copies {
            copies.keep(Arc::clone(&self.model));
        }
    }

    /// Takes note of the records left out of the tables now, logging the new ones.
    pub fn note_skipped(&mut self, skipped: &[crate::model::Skipped]) {
        for record in skipped {
            if !self.skipped.contains(&record.record) {
                tracing::warn!(%record, "a stored record does not fit; left out, the rest runs");
            }
        }
        self.skipped = skipped.iter().map(|s| s.record.clone()).collect();
    }

    /// Takes an API change: it is validated and written after the changes before it;
    /// the answer goes back on `reply` once it is live (or refused).
    pub fn submit(
        &mut self,
        change: Change,
        reply: oneshot::Sender<Reply>,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) {
        self.queued.push_back((change, reply));
        self.next_change(controller, dataplane);
    }

    /// Starts writing the next queued change, unless one is being written.
    fn next_change(&mut self, controller: &mut Controller, dataplane: &mut Dataplane<'_>) {
        while self.saving.is_none() && !self.holding {
            let Some((next, _)) = self.queued.front() else {
                return;
            };
            if !std::mem::take(&mut self.front_held) {
                if let Some(tenants) = self.not_held(next) {
                    self.holding = true;
                    match self.reading {
                        true => self.hold_waiting = Some(tenants),
                        false => self.start_read(tenants),
                    }
                    return;
                }
            }
            let Some((change, reply)) = self.queued.pop_front() else {
                return;
            };
            let saving = match self.prepare(change, reply, controller, dataplane) {
                Ok(saving) => saving,
                Err((reply, refusal)) => {
                    let _ = reply.send(refusal);
                    continue;
                }
            };
            let Some(store) = self.store.clone() else {
                self.commit(saving, Ok(()), controller, dataplane);
                continue;
            };
            let (change, place, before, model) = (
                saving.change.clone(),
                saving.place,
                Arc::clone(&saving.before),
                Arc::clone(&saving.model),
            );
            let report = self.report.clone();
            tokio::task::spawn_blocking(move || {
                // A write that never reports would hold every later change.
                let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.save_change(&change, place, &before, &model)
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("writing the change failed")));
                let _ = report.send(Done::Saved(saved));
            });
            self.saving = Some(saving);
        }
    }

    /// The tenants `change` names that this host, watching its own tenants, does not
    /// hold (`None`: none, or it watches everything).
    fn not_held(&self, change: &Change) -> Option<Vec<String>> {
        let Some(Store::Etcd(etcd)) = self.store.as_deref() else {
            return None;
        };
        if etcd.watches() != crate::store::Watch::Own {
            return None;
        }
        let missing: Vec<String> = change
            .tenants_named()
            .into_iter()
            .filter(|name| !self.model.tenants.iter().any(|t| t.name == *name))
            .map(str::to_owned)
            .collect();
        (!missing.is_empty()).then_some(missing)
    }

    /// Validates a change against the model in force and attaches a new port's device
    /// (it must come up before the change is kept).
    #[allow(clippy::result_large_err)]
    fn prepare(
        &mut self,
        change: Change,
        reply: oneshot::Sender<Reply>,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) -> Result<Saving, (oneshot::Sender<Reply>, Reply)> {
        if let Change::AddPort(spec) = &change {
            let dir = &controller.config().files_dir;
            for (field, path) in [("rx_file", &spec.rx_file), ("tx_file", &spec.tx_file)] {
                if let Some(Err(why)) = path.as_deref().map(|p| confined(p, dir)) {
                    return Err((reply, Reply::error(400, field, &why)));
                }
            }
        }
        if change.addresses_only() {
            return self.prepare_addresses(change, reply);
        }
        if let Change::AddEndpoint(spec) = &change {
            if let (Some(ip), Some(_)) = (spec.ip, &spec.port) {
                if let Err(refusal) = addresses::check_endpoint(&self.model, &spec.tenant, ip) {
                    let refused = Reply::error(refusal.status, &refusal.field, &refusal.message);
                    return Err((reply, refused));
                }
            }
        }
        let cluster = matches!(self.store.as_deref(), Some(Store::Etcd(_)));
        let place = place_of(&self.model, &change, controller);
        let alone = match cluster {
            false => self.validate_alone(&change, place, controller),
            true => None,
        };
        let validated_alone = alone.is_some();
        let (model, mut validated) = match alone {
            Some(next) => next,
            None => match self.model.apply(&change, &controller.config().source) {
                Ok(next) => next,
                Err(refusal) => {
                    let refused = Reply::error(refusal.status, &refusal.field, &refusal.message);
                    return Err((reply, refused));
                }
            },
        };
        let base = &controller.config().source;
        // In a cluster the tables leave out hosts counted dead; a single host runs
        // the model itself.
        let effective = match self.store.as_deref() {
            Some(store @ Store::Etcd(_)) => Some(store.effective(&model)),
            _ => None,
        };
        if let Some(effective) = &effective {
            // Records that were unfit before stay left out, as in the tables (the
            // change itself was checked whole above).
            match effective.validate_leniently(base) {
                Ok((v, _)) => validated = v,
                Err(e) => return Err((reply, Reply::error(400, "", &e.to_string()))),
            }
        }
        if let Change::AddPort(_) = &change {
            let plan = validated.ports.last().expect("the new port is last");
            if let Err(e) = dataplane.hot_attach(plan, &validated) {
                return Err((reply, Reply::error(400, "backend", &format!("{e:#}"))));
            }
        }
        Ok(Saving {
            change,
            place,
            before: Arc::clone(&self.model),
            model: Arc::new(model),
            validated: Some(validated),
            effective,
            validated_alone,
            reply,
        })
    }

    /// An address claimed or released ([`crate::addresses`]): checked against the
    /// model alone. A claim its owner already holds is answered at once.
    #[allow(clippy::result_large_err)]
    fn prepare_addresses(
        &mut self,
        change: Change,
        reply: oneshot::Sender<Reply>,
    ) -> Result<Saving, (oneshot::Sender<Reply>, Reply)> {
        let place = self.model.place_of(&change);
        match &change {
            Change::ClaimAddress(request) => {
                if let Some(held) = addresses::held(&self.model, request) {
                    return Err((reply, claimed(200, &held)));
                }
                if let Err(refusal) = addresses::resolve(&self.model, request) {
                    let refused = Reply::error(refusal.status, &refusal.field, &refusal.message);
                    return Err((reply, refused));
                }
            }
            Change::ReleaseAddress { .. } if place.is_none() => {
                let refusal = crate::model::nothing_to_change(&change);
                let refused = Reply::error(refusal.status, &refusal.field, &refusal.message);
                return Err((reply, refused));
            }
            _ => {}
        }
        Ok(Saving {
            model: Arc::new(self.model.made(&change, place)),
            change,
            place,
            before: Arc::clone(&self.model),
            validated: None,
            effective: None,
            validated_alone: true,
            reply,
        })
    }

    /// The model with `change` made and its validation, the changed record checked
    /// alone ([`grow`]); `None` when the whole model must be validated (to refuse the
    /// change with the reason, among others).
    fn validate_alone(
        &mut self,
        change: &Change,
        place: Option<Place>,
        controller: &Controller,
    ) -> Option<(Model, Validated)> {
        let (before, validated) = (&self.model, controller.config());
        // The controller runs this model's plan (`fits` holds whenever a record is
        // validated alone): its index gives a tenant's position, checked by name.
        let tenant_at = |name: &str| tenant_in(before, controller, name);
        // Built when first needed, then followed from change to change.
        let keys = |kept: &mut Option<Keys>| {
            if kept.is_none() {
                *kept = Keys::of(before, validated);
            }
        };
        let next = match change {
            Change::AddTenant(spec) => {
                keys(&mut self.keys);
                let next = grow::add_tenant(validated, before, spec, self.keys.as_mut()?);
                if next.is_none() {
                    // They may have taken part of the tenant.
                    self.keys = None;
                }
                next?
            }
            Change::AddEndpoint(spec) => {
                keys(&mut self.keys);
                grow::add_endpoint(validated, before, spec, self.keys.as_mut()?, &tenant_at)?
            }
            Change::DeleteEndpoint { .. } => {
                let Place::Endpoint(at) = place? else {
                    return None;
                };
                keys(&mut self.keys);
                grow::delete_endpoint(validated, before, at, self.keys.as_mut()?)?
            }
            Change::DeleteTenant(name) => {
                let Place::Tenant(at) = place? else {
                    return None;
                };
                keys(&mut self.keys);
                let keys = self.keys.as_mut()?;
                match keys.peering() {
                    0 => before.check_tenant_unused_but_as_peer(name).ok()?,
                    _ => before.check_tenant_unused(name).ok()?,
                }
                grow::delete_tenant(validated, before, at, keys)?
            }
            Change::AddRoute(spec) => grow::add_route(validated, before, spec, &tenant_at)?,
            Change::AddPublish(spec) => grow::add_publish(validated, before, spec, &tenant_at)?,
            Change::DeletePublish { .. } => match place? {
                Place::Publish(at) => grow::delete_publish(validated, before, at)?,
                _ => return None,
            },
            Change::DeleteRoute { .. } => match place? {
                Place::Route(at) => grow::delete_route(validated, before, at)?,
                _ => return None,
            },
            Change::AddPort(spec) => grow::add_port(validated, before, spec, &tenant_at)?,
            Change::DeletePort(name) => {
                before.check_port_unused(name, &validated.source).ok()?;
                match place? {
                    Place::Port(at) => grow::delete_port(validated, before, at)?,
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some((before.made(change, place), next))
    }

    /// Makes a written change live, or undoes what preparing it did when the write
    /// failed; answers the change.
    fn commit(
        &mut self,
        saving: Saving,
        saved: anyhow::Result<()>,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) {
        let Saving {
            change,
            model,
            validated,
            effective,
            validated_alone,
            reply,
            ..
        } = saving;
        let Some(validated) = validated else {
            let answer = match self.settle_addresses(change, model, saved) {
                Ok(answer) => answer,
                // Another host took the address first: chosen again without it.
                Err(again) => {
                    self.queued.push_front((Change::ClaimAddress(again), reply));
                    return;
                }
            };
            let _ = reply.send(answer);
            return;
        };
        let answer = self.make_live(
            change,
            model,
            (validated, validated_alone),
            effective,
            saved,
            controller,
            dataplane,
        );
        let _ = reply.send(answer);
    }

    /// A written claim or release in force (the tables do not change), or its
    /// refusal; `Err` gives back a claim to ask again, its address taken by another
    /// host whose claim this host has not seen yet.
    fn settle_addresses(
        &mut self,
        change: Change,
        model: Arc<Model>,
        saved: anyhow::Result<()>,
    ) -> Result<Reply, addresses::AddressRequest> {
        /// A claim that collided on something other than its address (a record gone
        /// again before the conflict was explained) is chosen again this many times.
        const TRIES: usize = 8;
        /// One that lost its address to another host, this many times (each try is a
        /// round trip to etcd ahead of the changes queued behind it).
        const ADDRESS_TRIES: usize = 256;
        let claimed_now = match (&change, model.addresses.last()) {
            (Change::ClaimAddress(_), Some(spec)) => Some(spec.clone()),
            _ => None,
        };
        if let Err(e) = saved {
            if let (Some(conflict), Change::ClaimAddress(request), Some(spec)) =
                (e.downcast_ref::<Conflict>(), &change, &claimed_now)
            {
                // A chosen address another host took is chosen again without it: every
                // try avoids one more address, so a small subnet runs out (and says so)
                // before the tries do.
                let tries = if conflict.field == "ip" {
                    ADDRESS_TRIES
                } else {
                    TRIES
                };
                if request.ip.is_none() && request.avoid.len() < tries {
                    let mut again = request.clone();
                    again.avoid.push(spec.ip);
                    return Err(again);
                }
                return Ok(Reply::error(409, &conflict.field, &conflict.message));
            }
            tracing::error!(error = %format!("{e:#}"), "could not save the state; change refused");
            return Ok(match e.downcast_ref::<Conflict>() {
                Some(conflict) => Reply::error(409, &conflict.field, &conflict.message),
                None => Reply::error(500, "", &format!("could not save the state: {e:#}")),
            });
        }
        tracing::info!(?change, "applied");
        // The tables' view carries the claims too: the next read of the cluster
        // must not find it different for them.
        if let Some(running) = &mut self.running {
            running.addresses = model.addresses.clone();
        }
        self.model = model;
        self.keep_copy();
        Ok(match claimed_now {
            Some(spec) => match addresses::subnet_of(&self.model, &spec.tenant, spec.ip) {
                Some(subnet) => claimed(201, &addresses::Resolved { spec, subnet }),
                None => Reply::error(500, "", "the claimed address left its tenant's subnets"),
            },
            None => Reply {
                status: 200,
                body: json!({"status": 200, "message": "applied"}),
                raw: None,
                stream: None,
            },
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn make_live(
        &mut self,
        change: Change,
        model: Arc<Model>,
        (validated, validated_alone): (Validated, bool),
        effective: Option<Model>,
        saved: anyhow::Result<()>,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) -> Reply {
        if let Err(e) = saved {
            // They may have taken what the refused change brought.
            self.keys = None;
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
        let touched = change.tenants_touched(&self.model);
        if !validated_alone {
            self.keys = match (self.keys.take(), &touched) {
                (Some(keys), Some(names)) => keys.follow(
                    (&self.model, controller.config()),
                    (&model, &validated),
                    names,
                ),
                _ => None,
            };
        }
        self.running = effective;
        self.model = model;
        self.keep_copy();
        // Ports are paired with the config by name: a port the change removed has no
        // role in these tables, whether or not its device is detached yet.
        let ports = dataplane.port_info(&validated.ports);
        // A cluster's view may move other tenants with any change (hosts counted dead,
        // gateways placed): taken whole.
        match touched.filter(|_| self.running.is_none()) {
            Some(names) => {
                controller.reconfigure_touching(Arc::new(validated), ports, &names, validated_alone)
            }
            None => controller.reconfigure(Arc::new(validated), ports),
        }
        controller.publish_if_changed();
        if let Change::DeletePort(name) = &change {
            dataplane.down.remove(name);
            // Workers stop using the port only once tables without it are out.
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
            stream: None,
        }
    }

    /// Answers one command.
    pub fn answer(
        &mut self,
        command: Command,
        controller: &mut Controller,
        dataplane: &mut Dataplane<'_>,
    ) -> Reply {
        let ports = &dataplane.ports;
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
            Command::ListAddresses => Reply::ok(json!(self.model.addresses)),
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
            Command::Fdb => Reply::ok(controller.fdb_view(std::time::Instant::now())),
            Command::Neighbors => Reply::ok(controller.neighbors_view(std::time::Instant::now())),
            Command::Tunnels => Reply::ok(controller.tunnels_view()),
            Command::Nat(Some(name)) if !self.model.tenants.iter().any(|t| t.name == name) => {
                Reply::error(404, "tenant", &format!("no tenant is named `{name}`"))
            }
            Command::Nat(tenant) => nat_view(controller, dp, tenant.as_deref()),
            // Changes are written off the loop (see Live::submit).
            Command::Change(_) => Reply::error(500, "", "changes are handled by the control loop"),
            Command::Trace { port, frame } => trace(controller, ports, &port, frame),
            Command::Metrics => Reply::text(
                metrics(controller, dp) + &self.store_metrics() + &self.tenant_metrics(controller),
            ),
            Command::OpenApi => Reply::ok(crate::api::openapi()),
            Command::ShowLog => match crate::logging::current() {
                Some(filter) => Reply::ok(json!({ "filter": filter })),
                None => Reply::error(503, "", "this process's log filter cannot be changed"),
            },
            Command::SetLog(filter) => match crate::logging::set(&filter) {
                Ok(()) => Reply::ok(json!({ "filter": filter })),
                Err(why) => Reply::error(400, "filter", &why),
            },
            // Captures and live traces take time; the control loop runs them.
            Command::Capture(_) | Command::LiveTrace { .. } => Reply::error(
                500,
                "",
                "capture and live trace are run by the control loop",
            ),
        }
    }

    /// Prometheus text of the store's health: what was skipped, what waits.
    fn store_metrics(&self) -> String {
        let (skipped_keys, events) = match self.store.as_deref() {
            Some(Store::Etcd(etcd)) => (etcd.skipped_keys(), etcd.events_received()),
            _ => (0, 0),
        };
        let cluster = match self.store.as_deref() {
            Some(Store::Etcd(etcd)) => etcd_metrics(etcd),
            _ => String::new(),
        };
        cluster + &format!(
            "# HELP tenet_store_skipped_keys Keys of the cluster store that do not hold what their place says, skipped.\n\
             # TYPE tenet_store_skipped_keys gauge\n\
             tenet_store_skipped_keys {skipped_keys}\n\
             # HELP tenet_store_skipped_records Stored records left out of the tables because they do not fit.\n\
             # TYPE tenet_store_skipped_records gauge\n\
             tenet_store_skipped_records {}\n\
             # HELP tenet_store_unseeded Whether this host's own part is not yet in the cluster store (etcd away at start).\n\
             # TYPE tenet_store_unseeded gauge\n\
             tenet_store_unseeded {}\n\
             # HELP tenet_store_events_total Watch events this host received from the cluster store.\n\
             # TYPE tenet_store_events_total counter\n\
             tenet_store_events_total {events}\n",
            self.skipped.len(),
            u8::from(self.unseeded)
        )
    }

    /// Prometheus text of the tenants in the model and in this host's tables (in a
    /// cluster, the ones it hosts).
    fn tenant_metrics(&self, controller: &Controller) -> String {
        format!(
            "# HELP tenet_tenants Tenants in the model (a cluster's: every host's, or the ones this host holds when it watches its own).\n\
             # TYPE tenet_tenants gauge\n\
             tenet_tenants {}\n\
             # HELP tenet_tenants_running Tenants in this host's tables.\n\
             # TYPE tenet_tenants_running gauge\n\
             tenet_tenants_running {}\n",
            self.model.tenants.len(),
            controller.config().switching.tenants.len()
        )
    }

    /// The host `tenant`'s gateway runs on (`None`: it has none, or no living host
    /// can take it): in a cluster as placed among the living hosts, recorded or not;
    /// otherwise as this host's tables have it ("here" on a host without a name).
    fn gateway_on(&self, controller: &Controller, tenant: &str) -> Option<String> {
        if let Some(Store::Etcd(etcd)) = self.store.as_deref() {
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
}

/// Where `change` lands in `model`: a tenant by the controller's index of the
/// tenants it runs (checked against the model: in a cluster it runs a view), else
/// by [`Model::place_of`].
fn place_of(model: &Model, change: &Change, controller: &Controller) -> Option<Place> {
    if let Change::DeleteTenant(name) | Change::UpdateTenant(name, _) = change {
        if let Some(at) = tenant_in(model, controller, name) {
            return Some(Place::Tenant(at));
        }
    }
    model.place_of(change)
}

/// Tenant `name`'s position in `model` by the controller's index, when the tenant it
/// runs there is that one (in a cluster it runs a view, positioned otherwise).
fn tenant_in(model: &Model, controller: &Controller, name: &str) -> Option<usize> {
    controller
        .tenant_position(name)
        .filter(|&at| model.tenants.get(at).is_some_and(|t| t.name == name))
}

/// The answer to a claim: the address, its prefix length and gateway.
fn claimed(status: u16, resolved: &addresses::Resolved) -> Reply {
    let spec = &resolved.spec;
    Reply {
        status,
        body: json!({
            "status": status,
            "tenant": spec.tenant,
            "owner": spec.owner,
            "ip": spec.ip,
            "prefix": resolved.subnet.prefix,
            "gateway": resolved.subnet.ip,
        }),
        raw: None,
        stream: None,
    }
}

/// Whether `path`, named by a client of the API, lies in `dir` (made if missing, root's
/// alone): tenetd runs as root, and a pcap port's file is written wherever it points.
/// No `..`, no symbolic link as the file, and the real directory holding it inside
/// `dir`'s real path.
fn confined(path: &std::path::Path, dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let outside = || {
        format!(
            "`{}` is not a file in {} (control.files_dir), where files named through the API must be",
            path.display(),
            dir.display()
        )
    };
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(outside());
    }
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let real_dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let real_parent = path
        .parent()
        .and_then(|p| p.canonicalize().ok())
        .ok_or_else(outside)?;
    if !real_parent.starts_with(&real_dir) {
        return Err(outside());
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "`{}` is a symbolic link; name the file itself",
            path.display()
        ));
    }
    Ok(())
}

/// Reads the cluster's model from `store` (on a blocking thread), writes this host's
/// own part when it is not in yet, and records floating gateways' places when this host
/// is the placer.
fn read_cluster(store: &Store, seed: &Model, retrying: bool, unseeded: bool) -> Read {
    let mut seeded = false;
    let (model, mut touched) = match store.reload(seed) {
        Ok((Some(mut model), _)) if unseeded => {
            model.join(seed);
            (model, None)
        }
        Ok((Some(model), touched)) => (model, touched),
        // The cluster holds nothing yet: this host's part starts it.
        Ok((None, _)) if unseeded => (seed.clone(), None),
        other => {
            return Read {
                model: other.map(|(model, _)| model),
                placement_failed: retrying,
                seeded,
                touched: None,
                held: false,
            }
        }
    };
    if unseeded {
        match store.save(&model) {
            Ok(()) => seeded = true,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not write this host's part to the cluster; trying again every second")
            }
        }
    }
    let mut placement_failed = false;
    let model = match store.with_placements(&model) {
        // The record goes to every host through its watch, this one's too.
        Some(placed) => match store.save_placements(&model, &placed) {
            Ok(()) => {
                touched = None;
                placed
            }
            Err(e) if e.downcast_ref::<Conflict>().is_some() => {
                tracing::info!(error = %e, "placing gateways: another host wrote first; taking its change next");
                model
            }
            Err(e) => {
                if !retrying {
                    tracing::warn!(error = %format!("{e:#}"), "could not record gateway placements; trying again every second");
                }
                placement_failed = true;
                model
            }
        },
        None => model,
    };
    Read {
        model: Ok(Some(model)),
        placement_failed,
        seeded,
        touched,
        held: false,
    }
}

fn role_name(
    role: &RolePlan,
    tenants: &crate::config::List<Arc<crate::config::switching::TenantPlan>>,
) -> Value {
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
                Some(port) => {
                    let mut entry = port_json(&plan.name, plan.backend.kind(), role, port);
                    if let Some(named) = dataplane.ports.iter().find(|p| p.name == plan.name) {
                        entry["drops"] = port_drops_json(&dataplane.drops_of(named));
                    }
                    entry
                }
                None => json!({
                    "name": plan.name,
                    "backend": plan.backend.kind(),
                    "state": "down",
                    "error": dataplane.down.get(&plan.name).map(|d| d.reason.as_str()),
                    "role": role,
                    "link_up": false,
                }),
            }
        })
        .collect();
    for named in &dataplane.ports {
        if dataplane.detaching.contains(&named.name) {
            let mut entry = port_json(&named.name, "", json!({"role": "none"}), &named.port);
            entry["state"] = json!("detaching");
            list.push(entry);
        }
    }
    json!(list)
}

/// A port's drops by reason name, the reasons it has none of left out.
fn port_drops_json(drops: &[u64]) -> Value {
    let named: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .zip(drops)
        .filter(|(_, &n)| n > 0)
        .map(|(r, &n)| (r.name().to_owned(), json!(n)))
        .collect();
    Value::Object(named)
}

/// The tenant of access port `name`, for metric labels.
fn port_tenant<'a>(controller: &'a Controller, name: &str) -> Option<&'a str> {
    let config = controller.config();
    let at = config.ports.iter().position(|p| p.name == name)?;
    match config.switching.roles.get(at)? {
        RolePlan::Access { tenant, .. } => config
            .switching
            .tenants
            .get(*tenant)
            .map(|t| t.name.as_str()),
        _ => None,
    }
}

fn port_json(name: &str, backend: &str, role: Value, port: &dataplane::dpdk::Port) -> Value {
    let s = port.stats();
    json!({
        "name": name,
        "backend": backend,
        "state": "up",
        "device": port.name(),
        "port_id": port.id(),
        "mac": MacText(port.mac()).to_string(),
        "link_up": port.link().up,
        "mtu": port.mtu(),
        "role": role,
        "rx_packets": s.rx_packets,
        "tx_packets": s.tx_packets,
        "rx_bytes": s.rx_bytes,
        "tx_bytes": s.tx_bytes,
        "rx_missed": s.rx_missed,
        "rx_errors": s.rx_errors,
        "tx_errors": s.tx_errors,
        "rx_large": s.rx_large,
        "tx_large": s.tx_large,
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
            "spread": s.spread,
            "events_lost": s.events_lost,
            "gateway_egress_bytes": s.gateway_egress_bytes,
            "joined_segments": s.joined_segments,
            "capture_missed": s.capture_missed,
            "nat_sessions": s.nat_sessions,
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
            "arp_refused": control.arp_refused,
            "learn_stale": control.learn_stale,
        },
    })
}

/// Runs `frame` through the pipeline as if received on `port`, with the live tables,
/// and reports every decision and every output. Nothing is transmitted or learned.
fn trace(controller: &Controller, ports: &[NamedPort], port: &str, frame: Vec<u8>) -> Reply {
    let Some(ingress) = ports.iter().find(|p| p.name == port) else {
        return Reply::error(404, "port", &format!("no port is named `{port}`"));
    };
    let mut core = dataplane::pipeline::offline::Offline::default();
    let (sink, decisions) = core.trace(&controller.tables(), ingress.port.id(), &frame);
    let name_of = |id: u16| {
        ports
            .iter()
            .find(|p| p.port.id() == id)
            .map_or_else(|| id.to_string(), |p| p.name.clone())
    };
    let outputs: Vec<Value> = sink
        .sent
        .iter()
        .map(|(id, bytes)| {
            json!({
                "port": name_of(*id),
                "frame": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })
        })
        .collect();
    let decisions = name_notes(controller, ports, &decisions);
    Reply::ok(
        json!({"decisions": decisions, "outputs": outputs, "drops": drops_json(&core.stats())}),
    )
}

/// Trace notes with what they number named as the operator named it ([`named`]).
pub(crate) fn name_notes(
    controller: &Controller,
    ports: &[NamedPort],
    notes: &[String],
) -> Vec<String> {
    let tables = controller.tables();
    let config = controller.config();
    let name = |kind: &str, number: u64| -> Option<String> {
        match kind {
            "port" => {
                let id = u16::try_from(number).ok()?;
                ports
                    .iter()
                    .find(|p| p.port.id() == id)
                    .map(|p| p.name.clone())
            }
            "tunnel" => {
                let tunnel = tables.tunnels.get(usize::try_from(number).ok()?)?;
                Some(format!("to {}", controller.host_named(tunnel.host)?))
            }
            "host" => controller
                .host_named(u16::try_from(number).ok()?)
                .map(str::to_owned),
            "tenant" => config
                .switching
                .tenants
                .iter()
                .find(|t| u64::from(t.id) == number)
                .map(|t| t.name.clone()),
            _ => None,
        }
    };
    notes.iter().map(|d| named(d, &name)).collect()
}

/// Prometheus text of this host's standing in the cluster: whether it is registered
/// and follows the cluster, how many hosts are alive, how its writes ended.
fn etcd_metrics(etcd: &crate::store::etcd::EtcdStore) -> String {
    use crate::store::etcd::WriteEnd;
    let writes: String = WriteEnd::ALL
        .iter()
        .map(|(end, label)| {
            format!(
                "tenet_store_writes_total{{result=\"{label}\"}} {}\n",
                etcd.writes(*end)
            )
        })
        .collect();
    format!(
        "# HELP tenet_store_registered Whether this host holds its lease in etcd (registered as alive).\n\
         # TYPE tenet_store_registered gauge\n\
         tenet_store_registered {}\n\
         # HELP tenet_store_following Whether the etcd watch follows everything this host holds.\n\
         # TYPE tenet_store_following gauge\n\
         tenet_store_following {}\n\
         # HELP tenet_store_hosts_alive Hosts with a live lease at the last read, this one included.\n\
         # TYPE tenet_store_hosts_alive gauge\n\
         tenet_store_hosts_alive {}\n\
         # HELP tenet_store_writes_total Writes of this host to etcd, by how they ended (a conflict: another host got there first).\n\
         # TYPE tenet_store_writes_total counter\n\
         {writes}",
        u8::from(etcd.registered()),
        u8::from(etcd.is_following()),
        etcd.alive().len(),
    )
}

/// The SNAT sessions each worker holds (of `tenant` only, if named), asked of the
/// workers between their bursts (up to [`NAT_VIEW_LIMIT`] each), by tenant name.
fn nat_view(controller: &Controller, dataplane: &Dataplane<'_>, tenant: Option<&str>) -> Reply {
    let slot = match tenant {
        Some(name) => {
            let slot = controller
                .tenant_position(name)
                .and_then(|at| controller.ids().tenant(at));
            match slot {
                Some(slot) => Some(slot),
                // A tenant of the cluster this host does not run has no sessions here.
                None => {
                    return Reply::ok(
                        json!({"sessions": [], "limit": NAT_VIEW_LIMIT, "truncated": []}),
                    )
                }
            }
        }
        None => None,
    };
    let mut asked = Vec::new();
    for worker in &dataplane.workers {
        let (reply, answer) = std::sync::mpsc::channel();
        // One more than shown tells whether the worker holds more.
        let command = dataplane::worker::WorkerCommand::NatSessions {
            limit: NAT_VIEW_LIMIT + 1,
            tenant: slot,
            reply,
        };
        if worker.command(command).is_err() {
            return Reply::error(503, "", "a worker's command queue is full; ask again");
        }
        asked.push((worker.core(), answer));
    }
    let tables = controller.tables();
    let config = controller.config();
    let tenant_name = |slot| {
        let id = tables.tenant(slot).map(|t| t.id)?;
        config
            .switching
            .tenants
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.name.clone())
    };
    let mut rows = Vec::new();
    let mut truncated = Vec::new();
    for (core, answer) in asked {
        let Ok(mut sessions) = answer.recv_timeout(std::time::Duration::from_secs(2)) else {
            return Reply::error(503, "", &format!("the worker on CPU {core} did not answer"));
        };
        if sessions.len() > NAT_VIEW_LIMIT {
            sessions.truncate(NAT_VIEW_LIMIT);
            truncated.push(core);
        }
        for s in sessions {
            rows.push(json!({
                "core": core,
                "tenant": tenant_name(s.tenant),
                "protocol": match s.protocol { 6 => "tcp", 17 => "udp", 1 => "icmp", _ => "other" },
                "inside": format!("{}:{}", s.inside.0, s.inside.1),
                "outside": format!("{}:{}", s.outside.0, s.outside.1),
                "remote": format!("{}:{}", s.remote.0, s.remote.1),
                "idle_s": s.idle_s,
                "state": s.state,
            }));
        }
    }
    Reply::ok(json!({"sessions": rows, "limit": NAT_VIEW_LIMIT, "truncated": truncated}))
}

/// The most SNAT sessions a worker tells in one view.
const NAT_VIEW_LIMIT: usize = 10_000;

/// A trace note with its `port #3`, `tunnel #1`, `host #2` and `tenant #100` (what the
/// dataplane knows them by) named as the operator named them: `port c1`, `tunnel to
/// b`, `host b`, `tenant red`; what has no name keeps its number.
fn named(note: &str, name: &dyn Fn(&str, u64) -> Option<String>) -> String {
    let mut out = String::with_capacity(note.len());
    let mut rest = note;
    while let Some(at) = rest.find(" #") {
        let (before, after) = rest.split_at(at);
        let kind = before
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        let digits = after[2..].bytes().take_while(u8::is_ascii_digit).count();
        let number = after[2..2 + digits].parse::<u64>().ok();
        match number.and_then(|n| name(kind, n)) {
            Some(named) => {
                out.push_str(before);
                out.push(' ');
                out.push_str(&named);
            }
            None => out.push_str(&rest[..at + 2 + digits]),
        }
        rest = &after[2 + digits..];
    }
    out.push_str(rest);
    out
}

/// Prometheus text exposition of the counters.
fn metrics(controller: &Controller, dataplane: &Dataplane<'_>) -> String {
    let (ports, workers, down) = (&dataplane.ports, &dataplane.workers, &dataplane.down);
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let pool = dataplane.pool;
    family(
        "tenet_mempool_in_use",
        "Packet buffers out of the pool (in flight, queued, or leaked).",
        "gauge",
        vec![(
            String::new(),
            u64::from(pool.capacity().saturating_sub(pool.available())),
        )],
    );
    family(
        "tenet_mempool_capacity",
        "Packet buffers the pool holds in all.",
        "gauge",
        vec![(String::new(), u64::from(pool.capacity()))],
    );
    let configured = &controller.config().ports;
    family(
        "tenet_port_up",
        "Whether the configured port has its device (0: down, retried until it is back).",
        "gauge",
        configured
            .iter()
            .map(|p| {
                let up = ports.iter().any(|n| n.name == p.name) && !down.contains_key(&p.name);
                (format!("{{port=\"{}\"}}", p.name), u64::from(up))
            })
            .collect(),
    );
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
    type PortField = fn(&dataplane::dpdk::PortStats) -> u64;
    let port_counters: [(&str, &str, PortField); 10] = [
        ("rx_packets", "Packets received by the port.", |s| {
            s.rx_packets
        }),
        ("tx_packets", "Packets transmitted by the port.", |s| {
            s.tx_packets
        }),
        ("rx_bytes", "Bytes received by the port.", |s| s.rx_bytes),
        ("tx_bytes", "Bytes transmitted by the port.", |s| s.tx_bytes),
        (
            "rx_missed",
            "Packets the device dropped for want of RX descriptors.",
            |s| s.rx_missed,
        ),
        (
            "rx_errors",
            "Erroneous packets the device received (bad checksum, runt, ...).",
            |s| s.rx_errors,
        ),
        ("tx_errors", "Packets the device failed to transmit.", |s| {
            s.tx_errors
        }),
        (
            "rx_nombuf",
            "Packets the device dropped for want of a packet buffer.",
            |s| s.rx_nombuf,
        ),
        (
            "rx_large",
            "Large TCP segments (up to 64 KiB, GSO) the port received whole.",
            |s| s.rx_large,
        ),
        (
            "tx_large",
            "Large TCP segments the port transmitted whole or cut by tenet.",
            |s| s.tx_large,
        ),
    ];
    for (name, help, field) in port_counters {
        family(
            &format!("tenet_port_{name}_total"),
            help,
            "counter",
            per_port(field),
        );
    }
    let mut port_drops = Vec::new();
    for named in ports {
        let tenant = port_tenant(controller, &named.name)
            .map_or(String::new(), |t| format!(",tenant=\"{t}\""));
        for (reason, n) in DropReason::ALL.iter().zip(dataplane.drops_of(named)) {
            if n > 0 {
                let labels = format!(
                    "{{port=\"{}\"{tenant},reason=\"{}\"}}",
                    named.name,
                    reason.name()
                );
                port_drops.push((labels, n));
            }
        }
    }
    family(
        "tenet_port_drops_total",
        "Frames the port received that the pipeline dropped, by reason (and the access port's tenant).",
        "counter",
        port_drops,
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
    type CoreField = fn(&CoreStats) -> u64;
    let core_counters: [(&str, &str, CoreField); 8] = [
        ("rx_packets", "Packets received by the worker.", |s| {
            s.rx_packets
        }),
        ("tx_packets", "Packets the worker handed to devices.", |s| {
            s.tx_packets
        }),
        (
            "busy_cycles",
            "TSC cycles of loop iterations that moved packets.",
            |s| s.busy_cycles,
        ),
        (
            "handed_off",
            "Packets passed to the worker that holds their SNAT session.",
            |s| s.handed_off,
        ),
        (
            "spread",
            "GRE frames passed to the worker their inner flow hashes to.",
            |s| s.spread,
        ),
        (
            "gateway_egress_bytes",
            "Bytes tenants' gateways sent out of the uplink.",
            |s| s.gateway_egress_bytes,
        ),
        (
            "joined_segments",
            "Frames received in several segments and joined into one.",
            |s| s.joined_segments,
        ),
        (
            "capture_missed",
            "Copies a capture lost (no buffer, or the ring to tenetd full); traffic is not affected.",
            |s| s.capture_missed,
        ),
    ];
    for (name, help, field) in core_counters {
        family(
            &format!("tenet_core_{name}_total"),
            help,
            "counter",
            per_core(field),
        );
    }
    family(
        "tenet_core_nat_sessions",
        "SNAT connections the worker holds (each lives on one core).",
        "gauge",
        per_core(|s| s.nat_sessions),
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
    let control = controller.stats();
    family(
        "tenet_underlay_arp_refused_total",
        "Underlay ARP replies not taken: unasked, contested, or a next hop moving again too soon.",
        "counter",
        vec![(String::new(), control.arp_refused)],
    );
    family(
        "tenet_learn_stale_total",
        "Learn events refused because their port, host or tenant went (or changed) before they were applied.",
        "counter",
        vec![(String::new(), control.learn_stale)],
    );
    family(
        "tenet_learned_macs",
        "MACs learned and not aged out.",
        "gauge",
        vec![(String::new(), controller.learned() as u64)],
    );
    let tenants = controller.tenant_counts();
    family(
        "tenet_tenant_learned_macs",
        "MACs learned in the tenant and not aged out.",
        "gauge",
        tenants
            .iter()
            .map(|t| (format!("{{tenant=\"{}\"}}", t.name), u64::from(t.learned)))
            .collect(),
    );
    family(
        "tenet_tenant_ports",
        "Ports of this host that carry the tenant (access ports and trunks).",
        "gauge",
        tenants
            .iter()
            .map(|t| (format!("{{tenant=\"{}\"}}", t.name), t.ports as u64))
            .collect(),
    );
    family(
        "tenet_build_info",
        "The running tenetd's version (always 1).",
        "gauge",
        vec![(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
    );
    // Seconds, as Prometheus wants time: busy cycles over the TSC's rate.
    let tsc_hz = dataplane::dpdk::tsc_hz().max(1) as f64;
    let _ = writeln!(
        out,
        "# HELP tenet_core_busy_seconds_total Time the worker spent in loop iterations that moved packets.\n\
         # TYPE tenet_core_busy_seconds_total counter"
    );
    for (core, s) in &cores {
        let _ = writeln!(
            out,
            "tenet_core_busy_seconds_total{{core=\"{core}\"}} {:.6}",
            s.busy_cycles as f64 / tsc_hz
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn trace_notes_name_ports_tunnels_and_tenants() {
        let name = |kind: &str, n: u64| match (kind, n) {
            ("port", 3) => Some("c1".to_owned()),
            ("tunnel", 0) => Some("to b".to_owned()),
            ("tenant", 100) => Some("red".to_owned()),
            _ => None,
        };
        assert_eq!(
            super::named("ingress port #3: access port of tenant #100", &name),
            "ingress port c1: access port of tenant red"
        );
        assert_eq!(
            super::named("destination 02:00:00:00:0b:01: tunnel #0", &name),
            "destination 02:00:00:00:0b:01: tunnel to b"
        );
        assert_eq!(
            super::named("port #9, tagged 10; #x", &name),
            "port #9, tagged 10; #x"
        );
        assert_eq!(
            super::named("the uplink (port #3)", &name),
            "the uplink (port c1)"
        );
    }
}
