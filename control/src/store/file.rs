//! One host's model kept in a [`Journal`] beside the configured state file
//! (`<state_file>.journal/`): each record of the model is one key, so a change writes
//! the record it touches (an fsynced append) instead of the whole model, however many
//! tenants there are. A state file of an older tenet is taken in at the first start
//! and kept as `<state_file>.migrated`.
//!
//! Keys: `switch` and `ports` (small, written whole), and one key per tenant, host,
//! endpoint, route, published port, claimed address (`tenant/<seq>`, ...) and gateway placement
//! (`placed/<tenant>`). `<seq>` numbers a list's records in the order they were added
//! (zero-padded, so the journal's key order is the model's): a restart gives the lists
//! back in the order the API built them, which positions-dependent choices (an `auto`
//! gateway's host) rely on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::journal::{Journal, Write};
use crate::model::{Change, Model, Place};

/// A model kept in a journal.
pub struct FileStore {
    path: PathBuf,
    kept: Mutex<Option<Kept>>,
}

/// The open journal and, for each list of the model, the sequence number of each of
/// its records in model order.
struct Kept {
    journal: Journal,
    order: Order,
}

#[derive(Default)]
struct Order {
    tenants: Vec<u64>,
    hosts: Vec<u64>,
    endpoints: Vec<u64>,
    routes: Vec<u64>,
    published: Vec<u64>,
    addresses: Vec<u64>,
    next: u64,
}

/// The lists keyed by sequence, by key prefix.
const TENANT: &str = "tenant";
const HOST: &str = "host";
const ENDPOINT: &str = "endpoint";
const ROUTE: &str = "route";
const PUBLISH: &str = "publish";
const ADDRESS: &str = "address";
const PLACED: &str = "placed";
const SWITCH: &str = "switch";
const PORTS: &str = "ports";

fn key(list: &str, seq: u64) -> String {
    format!("{list}/{seq:020}")
}

fn text<T: Serialize>(value: &T) -> anyhow::Result<String> {
    serde_json::to_string(value).context("encoding a record")
}

/// How a change moves one list's sequence numbers once it is written.
enum Reorder {
    None,
    Push(fn(&mut Order) -> &mut Vec<u64>, u64),
    Remove(fn(&mut Order) -> &mut Vec<u64>, usize),
}

impl FileStore {
    /// A store for the state file `path` (its journal directory is made on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kept: Mutex::new(None),
        }
    }

    /// The configured state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The journal's directory.
    pub fn journal_dir(&self) -> PathBuf {
        let mut dir = self.path.clone().into_os_string();
        dir.push(".journal");
        dir.into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Kept>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stored model, or `None` when nothing was stored yet.
    pub fn load(&self) -> anyhow::Result<Option<Model>> {
        let mut kept = self.lock();
        let kept = self.open(&mut kept)?;
        if kept.journal.records().is_empty() {
            return Ok(None);
        }
        let (model, order) = model_of(kept.journal.records())
            .with_context(|| format!("{} is not a tenet state", self.journal_dir().display()))?;
        kept.order = order;
        Ok(Some(model))
    }

    /// The journal, opened (and an older tenet's state file taken in) on first use.
    fn open<'a>(&self, kept: &'a mut Option<Kept>) -> anyhow::Result<&'a mut Kept> {
        if kept.is_none() {
            let dir = self.journal_dir();
            let (journal, records) = Journal::open(&dir)?;
            let mut opened = Kept {
                journal,
                order: Order::default(),
            };
            if records.is_empty() && self.path.is_file() {
                self.migrate(&mut opened)?;
            }
            *kept = Some(opened);
        }
        Ok(kept.as_mut().expect("opened above"))
    }

    /// Takes in the whole-model JSON file an older tenet wrote at `path`.
    fn migrate(&self, kept: &mut Kept) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.path)
            .with_context(|| format!("reading {}", self.path.display()))?;
        let model: Model = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a tenet state file", self.path.display()))?;
        replace(kept, &model)?;
        let mut migrated = self.path.clone().into_os_string();
        migrated.push(".migrated");
        std::fs::rename(&self.path, &migrated)
            .with_context(|| format!("setting {} aside", self.path.display()))?;
        tracing::info!(from = %self.path.display(), to = %self.journal_dir().display(), "took the state file into the journal");
        Ok(())
    }

    /// Replaces the stored model whole (a first start, a model read elsewhere).
    pub fn save(&self, model: &Model) -> anyhow::Result<()> {
        let mut kept = self.lock();
        replace(self.open(&mut kept)?, model)
    }

    /// Keeps `change`, made to `before` at `place` ([`Model::place_of`], found here
    /// when `None`) giving `after`: only the records it touches are written.
    pub fn save_change(
        &self,
        change: &Change,
        place: Option<Place>,
        before: &Model,
        after: &Model,
    ) -> anyhow::Result<()> {
        let mut kept = self.lock();
        let kept = self.open(&mut kept)?;
        let Some(place) = place.or_else(|| before.place_of(change)) else {
            return replace(kept, after);
        };
        let (mut writes, reorder) = writes_of(place, after, &kept.order)?;
        writes.extend(placement_writes(change, before, after)?);
        kept.journal.append(&writes)?;
        match reorder {
            Reorder::None => {}
            Reorder::Push(list, seq) => {
                list(&mut kept.order).push(seq);
                kept.order.next = seq + 1;
            }
            Reorder::Remove(list, at) => {
                list(&mut kept.order).remove(at);
            }
        }
        Ok(())
    }

    /// Moves a journal that cannot be read out of the way (kept for the operator as
    /// `<journal>.damaged`); returns where it went.
    pub fn set_aside(&self) -> anyhow::Result<PathBuf> {
        *self.lock() = None;
        let dir = self.journal_dir();
        let mut aside = dir.clone().into_os_string();
        aside.push(".damaged");
        let aside = PathBuf::from(aside);
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(&dir, &aside).with_context(|| format!("moving {} aside", dir.display()))?;
        Ok(aside)
    }
}

/// Writes `model` whole: every record, and the removal of every key it no longer has.
fn replace(kept: &mut Kept, model: &Model) -> anyhow::Result<()> {
    let mut order = Order::default();
    let mut records = vec![
        (SWITCH.to_owned(), text(&model.switch)?),
        (PORTS.to_owned(), text(&model.ports)?),
    ];
    fn list<'a, T: Serialize + 'a>(
        records: &mut Vec<(String, String)>,
        order: &mut Order,
        name: &str,
        items: impl IntoIterator<Item = &'a T>,
        seqs: fn(&mut Order) -> &mut Vec<u64>,
    ) -> anyhow::Result<()> {
        for item in items {
            let seq = order.next;
            order.next += 1;
            records.push((key(name, seq), text(item)?));
            seqs(order).push(seq);
        }
        Ok(())
    }
    list(&mut records, &mut order, TENANT, &model.tenants, |o| {
        &mut o.tenants
    })?;
    list(&mut records, &mut order, HOST, &model.hosts, |o| {
        &mut o.hosts
    })?;
    list(&mut records, &mut order, ENDPOINT, &model.endpoints, |o| {
        &mut o.endpoints
    })?;
    list(&mut records, &mut order, ROUTE, &model.routes, |o| {
        &mut o.routes
    })?;
    list(&mut records, &mut order, PUBLISH, &model.published, |o| {
        &mut o.published
    })?;
    list(&mut records, &mut order, ADDRESS, &model.addresses, |o| {
        &mut o.addresses
    })?;
    for (tenant, host) in &model.placed {
        records.push((format!("{PLACED}/{tenant}"), text(host)?));
    }
    let kept_keys: std::collections::HashSet<&str> =
        records.iter().map(|(k, _)| k.as_str()).collect();
    let mut writes: Vec<Write> = kept
        .journal
        .records()
        .keys()
        .filter(|k| !kept_keys.contains(k.as_str()))
        .map(|k| Write::Delete(k.clone()))
        .collect();
    writes.extend(records.into_iter().map(|(k, v)| Write::Put(k, v)));
    kept.journal.append(&writes)?;
    kept.order = order;
    Ok(())
}

/// The writes of a change at `place` and how the lists' sequence numbers move.
fn writes_of(place: Place, after: &Model, order: &Order) -> anyhow::Result<(Vec<Write>, Reorder)> {
    fn one<T: Serialize>(
        name: &str,
        at: usize,
        (len, item): (usize, Option<&T>),
        seqs: &[u64],
        next: u64,
        list: fn(&mut Order) -> &mut Vec<u64>,
    ) -> anyhow::Result<(Vec<Write>, Reorder)> {
        // The list after the change is one shorter than its sequence numbers: a removal.
        if len < seqs.len() {
            let seq = *seqs.get(at).context("the journal lost track of a record")?;
            return Ok((
                vec![Write::Delete(key(name, seq))],
                Reorder::Remove(list, at),
            ));
        }
        let item = item.context("the changed record is missing")?;
        Ok(match seqs.get(at) {
            Some(&seq) => (vec![Write::Put(key(name, seq), text(item)?)], Reorder::None),
            None => (
                vec![Write::Put(key(name, next), text(item)?)],
                Reorder::Push(list, next),
            ),
        })
    }
    let next = order.next;
    match place {
        Place::Tenant(at) => one(
            TENANT,
            at,
            (after.tenants.len(), after.tenants.get(at)),
            &order.tenants,
            next,
            |o| &mut o.tenants,
        ),
        Place::Host(at) => one(
            HOST,
            at,
            (after.hosts.len(), after.hosts.get(at)),
            &order.hosts,
            next,
            |o| &mut o.hosts,
        ),
        Place::Endpoint(at) => one(
            ENDPOINT,
            at,
            (after.endpoints.len(), after.endpoints.get(at)),
            &order.endpoints,
            next,
            |o| &mut o.endpoints,
        ),
        Place::Route(at) => one(
            ROUTE,
            at,
            (after.routes.len(), after.routes.get(at)),
            &order.routes,
            next,
            |o| &mut o.routes,
        ),
        Place::Publish(at) => one(
            PUBLISH,
            at,
            (after.published.len(), after.published.get(at)),
            &order.published,
            next,
            |o| &mut o.published,
        ),
        Place::Address(at) => one(
            ADDRESS,
            at,
            (after.addresses.len(), after.addresses.get(at)),
            &order.addresses,
            next,
            |o| &mut o.addresses,
        ),
        Place::Port(_) => Ok((
            vec![Write::Put(PORTS.to_owned(), text(&after.ports)?)],
            Reorder::None,
        )),
    }
}

/// A tenant's recorded gateway placement, when the change dropped or set it.
fn placement_writes(change: &Change, before: &Model, after: &Model) -> anyhow::Result<Vec<Write>> {
    let name = match change {
        Change::DeleteTenant(name) | Change::UpdateTenant(name, _) => name,
        _ => return Ok(Vec::new()),
    };
    let key = format!("{PLACED}/{name}");
    Ok(match (before.placed.get(name), after.placed.get(name)) {
        (Some(_), None) => vec![Write::Delete(key)],
        (was, Some(now)) if was != Some(now) => vec![Write::Put(key, text(now)?)],
        _ => Vec::new(),
    })
}

/// The model in `records`, and each list's sequence numbers.
fn model_of(records: &BTreeMap<String, String>) -> anyhow::Result<(Model, Order)> {
    fn parse<T: DeserializeOwned>(key: &str, value: &str) -> anyhow::Result<T> {
        serde_json::from_str(value).with_context(|| format!("record `{key}`"))
    }
    let switch = records.get(SWITCH).context("no `switch` record")?;
    let ports = records.get(PORTS).context("no `ports` record")?;
    let mut model = Model::bare(parse(SWITCH, switch)?, parse(PORTS, ports)?);
    let mut order = Order::default();
    for (key, value) in records {
        let Some((list, rest)) = key.split_once('/') else {
            continue;
        };
        if list == PLACED {
            model.placed.insert(rest.to_owned(), parse(key, value)?);
            continue;
        }
        // One record that cannot be read costs that record (logged; the next whole
        // save drops its key), not the host's state.
        let taken = (|| -> anyhow::Result<()> {
            let seq: u64 = rest.parse().context("not a sequence number")?;
            match list {
                TENANT => (
                    model.tenants.push_back(parse(key, value)?),
                    order.tenants.push(seq),
                ),
                HOST => (model.hosts.push(parse(key, value)?), order.hosts.push(seq)),
                ENDPOINT => (
                    model.endpoints.push_back(parse(key, value)?),
                    order.endpoints.push(seq),
                ),
                ROUTE => (
                    model.routes.push(parse(key, value)?),
                    order.routes.push(seq),
                ),
                PUBLISH => (
                    model.published.push(parse(key, value)?),
                    order.published.push(seq),
                ),
                ADDRESS => (
                    model.addresses.push(parse(key, value)?),
                    order.addresses.push(seq),
                ),
                other => anyhow::bail!("`{other}` is no list of the model"),
            };
            order.next = order.next.max(seq + 1);
            Ok(())
        })();
        if let Err(e) = taken {
            tracing::warn!(record = %key, error = %format!("{e:#}"), "a stored record cannot be read; left out, the rest runs");
        }
    }
    Ok((model, order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gateway::RouteSpec;
    use crate::config::switching::TenantSpec;
    use crate::config::Config;
    use crate::model::TenantPatch;
    use proptest::prelude::*;

    const BASE: &str =
        "[switch]\nhost = \"h\"\n\n[[host]]\nname = \"h\"\nunderlay_ip = \"198.18.0.1/24\"\n\n\
        [[port]]\nname = \"up\"\nbackend = \"null\"\nrole = \"uplink\"\n\n\
        [[tenant]]\nname = \"base\"\nid = 1\nsubnets = [\"10.255.0.1/24\"]\ngateway_host = \"h\"\n";

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        Dir(std::env::temp_dir().join(format!("tenet-file-{name}-{}-{n}", std::process::id())))
    }

    fn tenant(i: u32) -> TenantSpec {
        serde_json::from_value(serde_json::json!({
            "name": format!("t{i}"), "id": i + 2,
            "subnets": [format!("10.{}.{}.1/24", (i >> 8) & 0xff, i & 0xff)], "gateway_host": "h"
        }))
        .unwrap()
    }

    fn route(tenant: &str, n: u8) -> RouteSpec {
        serde_json::from_value(serde_json::json!({
            "tenant": tenant, "prefix": format!("10.200.{n}.0/24"), "via": "10.255.0.9"
        }))
        .unwrap()
    }

    /// Makes `change` the way tenetd does: checked against the model, then kept.
    fn make(store: &FileStore, model: &mut Model, base: &Config, change: Change) -> bool {
        match model.apply(&change, base) {
            Ok((after, _)) => {
                store.save_change(&change, None, model, &after).unwrap();
                *model = after;
                true
            }
            Err(_) => false,
        }
    }

    fn same(a: &Model, b: &Model) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    #[test]
    fn changes_come_back_in_order_after_a_restart_and_cost_what_they_touch() {
        let dir = dir("order");
        let base = Config::parse(BASE, |_| None).unwrap();
        let state = dir.0.join("state.json");
        let store = FileStore::new(&state);
        assert!(store.load().unwrap().is_none());
        let mut model = Model::of(&base);
        store.save(&model).unwrap();
        for i in 0..300 {
            assert!(make(
                &store,
                &mut model,
                &base,
                Change::AddTenant(tenant(i))
            ));
        }
        let log = |store: &FileStore| store.lock().as_ref().unwrap().journal.log_len();
        let grown = log(&store);
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::AddTenant(tenant(1000))
        ));
        assert!(
            log(&store) - grown < 512,
            "a tenant added writes its own record, not the model"
        );
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::DeleteTenant("t7".into())
        ));
        let patch = TenantPatch {
            max_connections: Some(77),
            ..TenantPatch::default()
        };
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::UpdateTenant("t3".into(), patch)
        ));
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::AddRoute(route("base", 1))
        ));
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::AddRoute(route("base", 2))
        ));
        let gone = Change::DeleteRoute {
            tenant: "base".into(),
            prefix: "10.200.1.0/24".into(),
        };
        assert!(make(&store, &mut model, &base, gone));
        drop(store);
        let back = FileStore::new(&state).load().unwrap().unwrap();
        assert!(
            same(&back, &model),
            "the model as the API left it, in its order"
        );
        assert_eq!(back.tenants[4].name, "t3");
        assert_eq!(back.tenants[4].max_connections, Some(77));
    }

    #[test]
    fn an_older_state_file_is_taken_in_once() {
        let dir = dir("migrate");
        let base = Config::parse(BASE, |_| None).unwrap();
        let state = dir.0.join("state.json");
        let mut model = Model::of(&base);
        model.tenants.push_back(std::sync::Arc::new(tenant(5)));
        std::fs::create_dir_all(&dir.0).unwrap();
        std::fs::write(&state, serde_json::to_vec(&model).unwrap()).unwrap();
        let loaded = FileStore::new(&state).load().unwrap().unwrap();
        assert!(same(&loaded, &model));
        assert!(!state.exists(), "the old file is set aside");
        assert!(dir.0.join("state.json.migrated").exists());
        let again = FileStore::new(&state).load().unwrap().unwrap();
        assert!(same(&again, &model), "the journal holds it now");
    }

    #[test]
    fn a_record_that_cannot_be_read_costs_that_record_only() {
        let dir = dir("bad");
        let base = Config::parse(BASE, |_| None).unwrap();
        let state = dir.0.join("state.json");
        let store = FileStore::new(&state);
        let mut model = Model::of(&base);
        store.save(&model).unwrap();
        assert!(make(
            &store,
            &mut model,
            &base,
            Change::AddTenant(tenant(1))
        ));
        {
            let mut kept = store.lock();
            let kept = kept.as_mut().unwrap();
            kept.journal
                .append(&[Write::Put(key(TENANT, 999), "{ not json".into())])
                .unwrap();
        }
        drop(store);
        let back = FileStore::new(&state).load().unwrap().unwrap();
        assert!(same(&back, &model), "the rest loads");
    }

    #[test]
    fn a_journal_another_store_holds_is_in_use_not_damaged() {
        let dir = dir("in-use");
        let base = Config::parse(BASE, |_| None).unwrap();
        let state = dir.0.join("state.json");
        let first = FileStore::new(&state);
        first.save(&Model::of(&base)).unwrap();
        let error = FileStore::new(&state).load().unwrap_err();
        assert!(
            error
                .downcast_ref::<super::super::journal::InUse>()
                .is_some(),
            "{error:#}"
        );
        assert!(first.load().unwrap().is_some(), "the holder's state stays");
    }

    #[derive(Debug, Clone)]
    enum Step {
        Add(u32),
        Delete(u32),
        Update(u32, u32),
        Route(u8),
        Unroute(u8),
        Reopen,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u32..40).prop_map(Step::Add),
            (0u32..40).prop_map(Step::Delete),
            (0u32..40, 1u32..1000).prop_map(|(t, n)| Step::Update(t, n)),
            (0u8..10).prop_map(Step::Route),
            (0u8..10).prop_map(Step::Unroute),
            Just(Step::Reopen),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the API did, a restart finds the model it left.
        #[test]
        fn a_restart_finds_the_model_the_changes_left(steps in proptest::collection::vec(step(), 1..60)) {
            let dir = dir("prop");
            let base = Config::parse(BASE, |_| None).unwrap();
            let state = dir.0.join("state.json");
            let mut store = FileStore::new(&state);
            let mut model = Model::of(&base);
            store.save(&model).unwrap();
            for step in steps {
                let change = match step {
                    Step::Add(i) => Change::AddTenant(tenant(i)),
                    Step::Delete(i) => Change::DeleteTenant(format!("t{i}")),
                    Step::Update(i, n) => Change::UpdateTenant(
                        format!("t{i}"),
                        TenantPatch { max_connections: Some(n), ..TenantPatch::default() },
                    ),
                    Step::Route(n) => Change::AddRoute(route("base", n)),
                    Step::Unroute(n) => Change::DeleteRoute {
                        tenant: "base".into(),
                        prefix: format!("10.200.{n}.0/24"),
                    },
                    Step::Reopen => {
                        drop(store);
                        store = FileStore::new(&state);
                        let back = store.load().unwrap().unwrap();
                        prop_assert!(same(&back, &model));
                        continue;
                    }
                };
                make(&store, &mut model, &base, change);
            }
            drop(store);
            let back = FileStore::new(&state).load().unwrap().unwrap();
            prop_assert!(same(&back, &model));
        }
    }
}
