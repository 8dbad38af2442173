//! `tenetctl apply -f FILE`: make tenetd hold the tenants, hosts, endpoints, routes and
//! published ports a file lists, like `kubectl apply`. The file has the `[[tenant]]`,
//! `[[host]]`, `[[endpoint]]`, `[[route]]` and `[[publish]]` tables of tenetd's config,
//! read into the config's own types.
//!
//! [`plan`] is a pure function of the records tenetd holds and the file's; only
//! [`Apply::run`] talks to tenetd. Nothing is written unless every difference can be
//! made: a record differing in a field tenetd cannot change in place (a tenant's id,
//! an endpoint's port) refuses the whole plan. tenetd still checks each record as it
//! comes; its refusal stops the run there, and the steps before it stay done (a second
//! run after fixing the file does the rest).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use control::client::{encode, Client};
use control::config::gateway::{PublishSpec, RouteSpec};
use control::config::switching::{EndpointSpec, HostSpec, TenantSpec};
use control::model::TenantPatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::exists::{differences, Difference};
use crate::{emit, refused, say, unanswered, Request, Status};

/// The records of a file, or those tenetd holds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
// A misspelt table (`[[tenants]]`) would otherwise be read as no records at all, and
// `--prune` would delete every one.
#[serde(deny_unknown_fields)]
pub struct Records {
    /// `[[tenant]]`.
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantSpec>,
    /// `[[host]]`.
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostSpec>,
    /// `[[endpoint]]`.
    #[serde(default, rename = "endpoint")]
    pub endpoints: Vec<EndpointSpec>,
    /// `[[route]]`.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteSpec>,
    /// `[[publish]]`.
    #[serde(default, rename = "publish")]
    pub published: Vec<PublishSpec>,
    /// The kinds a file lists at all (`tenant`, `host`, ...): `--prune` takes out only
    /// records of these, never the hosts that registered themselves or the endpoints
    /// the container plugins made because a file of tenants said nothing of them.
    #[serde(skip)]
    pub listed: std::collections::BTreeSet<String>,
}

/// Reads a file's records: `${VAR}` expanded as in tenetd's config, a fault named by
/// its field (`tenant[1].id`) and line.
pub fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Records, String> {
    let expanded = control::config::expand_variables(text, lookup).map_err(|e| e.to_string())?;
    let deserializer = toml::Deserializer::new(&expanded);
    let records: Records = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|span| {
                format!(
                    " (line {})",
                    expanded[..span.start].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        format!("{field}: {}{line}", inner.message())
    })?;
    for check in [one_mac_field, listed_once] {
        check(&records)?;
    }
    let mut records = records;
    records.listed = expanded
        .parse::<toml::Table>()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    Ok(records)
}

/// An endpoint names its MAC (`mac`) or its MACs (`macs`), one of the two: its identity.
fn one_mac_field(records: &Records) -> Result<(), String> {
    for (i, e) in records.endpoints.iter().enumerate() {
        match (&e.mac, &e.macs) {
            (Some(_), None) => {}
            (None, Some(macs)) if !macs.is_empty() => {}
            _ => {
                return Err(format!(
                    "endpoint[{i}].mac: give `mac` or `macs`, one of them"
                ))
            }
        }
    }
    Ok(())
}

/// A record is listed once: a second would be a second wish for the same record.
fn listed_once(records: &Records) -> Result<(), String> {
    fn once(kind: &str, keys: impl Iterator<Item = (usize, String)>) -> Result<(), String> {
        let mut seen = HashMap::new();
        for (i, key) in keys {
            if let Some(first) = seen.insert(key.clone(), i) {
                return Err(format!(
                    "{kind}[{i}]: {kind} {key} is listed already as {kind}[{first}]"
                ));
            }
        }
        Ok(())
    }
    fn keys<T: Record>(list: &[T]) -> impl Iterator<Item = (usize, String)> + '_ {
        list.iter().enumerate().map(|(i, r)| (i, r.key()))
    }
    once("tenant", keys(&records.tenants))?;
    once("host", keys(&records.hosts))?;
    let macs = records.endpoints.iter().enumerate().flat_map(|(i, e)| {
        singles(std::slice::from_ref(e))
            .into_iter()
            .map(move |single| (i, single.key()))
    });
    once("endpoint", macs)?;
    once("route", keys(&records.routes))?;
    once("publish", keys(&records.published))
}

/// What a step does to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Adds it.
    Create,
    /// Changes fields tenetd changes in place.
    Update,
    /// Removes it (`--prune`).
    Delete,
    /// Leaves it: it is as the file says.
    Keep,
}

impl Verb {
    /// The word for it done.
    fn done(self) -> &'static str {
        match self {
            Verb::Create => "created",
            Verb::Update => "updated",
            Verb::Delete => "deleted",
            Verb::Keep => "unchanged",
        }
    }
}

/// When a step runs: removals first, dependants before what they depend on (an
/// endpoint before its tenant, a tenant before its host), freeing names and ids the
/// file may give to others; then additions, what is depended on first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Peers a tenant loses, before a tenant they name is deleted.
    Unpeer,
    DeleteEndpoint,
    DeleteRoute,
    DeletePublish,
    DeleteTenant,
    DeleteHost,
    Host,
    Tenant,
    /// After every tenant exists: peers name other tenants, maybe new ones.
    TenantPatch,
    Endpoint,
    Route,
    Publish,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    phase: Phase,
    /// The record in words (`route red 10.9.0.0/16`).
    pub record: String,
    /// What happens to it.
    pub verb: Verb,
    /// The fields an update changes.
    pub fields: Vec<String>,
    /// The request that does it; none to keep.
    pub request: Option<Request>,
    /// Whether it has a line of its own (a new tenant's peers, set once every tenant
    /// exists, belong to its `created`).
    shown: bool,
}

impl Step {
    /// Its line: `tenant red: updated (peers)`.
    pub fn line(&self) -> String {
        match self.fields.is_empty() {
            true => format!("{}: {}", self.record, self.verb.done()),
            false => format!(
                "{}: {} ({})",
                self.record,
                self.verb.done(),
                self.fields.join(", ")
            ),
        }
    }
}

/// A difference tenetd cannot make in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The record in words.
    pub record: String,
    /// How it differs.
    pub difference: Difference,
    /// Why tenetd cannot make it, and what to do instead.
    pub why: &'static str,
}

/// Why most conflicts are.
const NOT_IN_PLACE: &str =
    "tenetd cannot change it in place (delete the record first, or keep its value)";

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = &self.difference;
        write!(
            f,
            "{}: {}: {} in tenetd, {} in the file; {}",
            self.record,
            d.field,
            crate::render::text(&d.have),
            crate::render::text(&d.want),
            self.why
        )
    }
}

/// A kind of record `apply` manages.
trait Record: Serialize + Clone {
    /// Its name in words and in the file (`tenant`).
    const KIND: &'static str;
    /// Where tenetd lists and adds them.
    const LIST: &'static str;
    /// The fields naming a record; compared through [`Record::key`] instead.
    const KEYS: &'static [&'static str];
    /// The fields `PATCH` changes in place; an unset one there is left as it is
    /// (tenetd's patch sets, never unsets), except lists, whose empty is a value.
    const PATCHABLE: &'static [&'static str] = &[];
    const CREATE: Phase;
    const DELETE: Phase;

    /// The words naming it after its kind (`red 10.9.0.0/16`).
    fn key(&self) -> String;

    /// The path that removes it.
    fn path(&self) -> String;

    /// The body that adds it, and a patch to send once every record of its kind exists.
    fn create(&self) -> (Value, Option<Value>) {
        (json!(self), None)
    }
}

impl Record for TenantSpec {
    const KIND: &'static str = "tenant";
    const LIST: &'static str = "/v1/tenants";
    const KEYS: &'static [&'static str] = &["name"];
    const PATCHABLE: &'static [&'static str] =
        &["gateway_host", "peers", "snat_ip", "max_connections"];
    const CREATE: Phase = Phase::Tenant;
    const DELETE: Phase = Phase::DeleteTenant;

    fn key(&self) -> String {
        self.name.clone()
    }

    fn path(&self) -> String {
        format!("/v1/tenants/{}", self.name)
    }

    /// Without its peers, which may name tenants yet to come; they follow as a patch.
    fn create(&self) -> (Value, Option<Value>) {
        if self.peers.is_empty() {
            return (json!(self), None);
        }
        let alone = TenantSpec {
            peers: Vec::new(),
            ..self.clone()
        };
        let patch = TenantPatch {
            peers: Some(self.peers.clone()),
            ..TenantPatch::default()
        };
        (json!(alone), Some(json!(patch)))
    }
}

impl Record for HostSpec {
    const KIND: &'static str = "host";
    const LIST: &'static str = "/v1/hosts";
    const KEYS: &'static [&'static str] = &["name"];
    const CREATE: Phase = Phase::Host;
    const DELETE: Phase = Phase::DeleteHost;

    fn key(&self) -> String {
        self.name.clone()
    }

    fn path(&self) -> String {
        format!("/v1/hosts/{}", self.name)
    }
}

impl Record for EndpointSpec {
    const KIND: &'static str = "endpoint";
    const LIST: &'static str = "/v1/endpoints";
    const KEYS: &'static [&'static str] = &["tenant", "mac", "macs"];
    const CREATE: Phase = Phase::Endpoint;
    const DELETE: Phase = Phase::DeleteEndpoint;

    /// Of one MAC ([`singles`]); in lower case, as tenetd matches MACs.
    fn key(&self) -> String {
        let mac = self.mac.as_deref().unwrap_or("").to_ascii_lowercase();
        format!("{} {mac}", self.tenant)
    }

    fn path(&self) -> String {
        let mac = self.mac.as_deref().unwrap_or("");
        format!("/v1/endpoints/{}/{}", self.tenant, encode(mac))
    }
}

impl Record for RouteSpec {
    const KIND: &'static str = "route";
    const LIST: &'static str = "/v1/routes";
    const KEYS: &'static [&'static str] = &["tenant", "prefix"];
    const CREATE: Phase = Phase::Route;
    const DELETE: Phase = Phase::DeleteRoute;

    fn key(&self) -> String {
        format!("{} {}", self.tenant, self.prefix)
    }

    fn path(&self) -> String {
        format!("/v1/routes/{}/{}", self.tenant, self.prefix)
    }
}

impl Record for PublishSpec {
    const KIND: &'static str = "publish";
    const LIST: &'static str = "/v1/published";
    const KEYS: &'static [&'static str] = &["protocol", "host_port"];
    const CREATE: Phase = Phase::Publish;
    const DELETE: Phase = Phase::DeletePublish;

    fn key(&self) -> String {
        format!("{}/{}", self.protocol, self.host_port)
    }

    fn path(&self) -> String {
        format!("/v1/published/{}/{}", self.protocol, self.host_port)
    }
}

/// Endpoints one MAC each: tenetd removes them by MAC, and a file may list several at
/// once (`macs`). The flag says a MAC came from such a record.
fn singles(endpoints: &[EndpointSpec]) -> Vec<EndpointSpec> {
    singles_marked(endpoints)
        .into_iter()
        .map(|(e, _)| e)
        .collect()
}

fn singles_marked(endpoints: &[EndpointSpec]) -> Vec<(EndpointSpec, bool)> {
    let mut out = Vec::new();
    for e in endpoints {
        let (macs, several) = match (&e.mac, &e.macs) {
            (Some(mac), _) => (vec![mac.clone()], false),
            (None, Some(macs)) => (macs.clone(), true),
            (None, None) => (Vec::new(), false),
        };
        for mac in macs {
            let single = EndpointSpec {
                mac: Some(mac),
                macs: None,
                ..e.clone()
            };
            out.push((single, several));
        }
    }
    out
}

/// What it takes to turn `have` (tenetd's records) into `want` (the file's): the
/// steps in the order they run, or every difference that cannot be made in place.
/// With `prune`, records of these kinds the file does not list are removed.
pub fn plan(have: &Records, want: &Records, prune: bool) -> Result<Vec<Step>, Vec<Conflict>> {
    let mut steps = Vec::new();
    let mut conflicts = Vec::new();
    let prune_kind = |kind: &str| prune && want.listed.contains(kind);
    plan_kind(
        &have.tenants,
        &want.tenants,
        prune_kind("tenant"),
        &mut steps,
        &mut conflicts,
    );
    unpeer_first(have, want, &mut steps);
    plan_kind(
        &have.hosts,
        &want.hosts,
        prune_kind("host"),
        &mut steps,
        &mut conflicts,
    );
    let have_endpoints = singles_marked(&have.endpoints);
    let plain: Vec<EndpointSpec> = have_endpoints.iter().map(|(e, _)| e.clone()).collect();
    plan_kind(
        &plain,
        &singles(&want.endpoints),
        prune_kind("endpoint"),
        &mut steps,
        &mut conflicts,
    );
    // tenetd removes endpoints by one MAC, and only those added alone.
    for (e, several) in &have_endpoints {
        let record = format!("endpoint {}", e.key());
        if *several
            && steps
                .iter()
                .any(|s| s.record == record && s.verb == Verb::Delete)
        {
            conflicts.push(Conflict {
                record,
                difference: Difference {
                    field: "macs".into(),
                    have: json!(e.mac),
                    want: Value::Null,
                },
                why: "tenetd removes an endpoint by its MAC only when it was added alone; \
                      list every MAC of its record, or none",
            });
        }
    }
    plan_kind(
        &have.routes,
        &want.routes,
        prune_kind("route"),
        &mut steps,
        &mut conflicts,
    );
    plan_kind(
        &have.published,
        &want.published,
        prune_kind("publish"),
        &mut steps,
        &mut conflicts,
    );
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    steps.sort_by_key(|s| s.phase);
    Ok(steps)
}

/// A tenant whose peers the file narrows drops the ones it loses before anything is
/// deleted: tenetd refuses to delete a tenant another still peers with.
fn unpeer_first(have: &Records, want: &Records, steps: &mut Vec<Step>) {
    for w in &want.tenants {
        let Some(h) = have.tenants.iter().find(|h| h.name == w.name) else {
            continue;
        };
        let kept: Vec<&String> = h.peers.iter().filter(|p| w.peers.contains(p)).collect();
        if kept.len() == h.peers.len() {
            continue;
        }
        steps.push(Step {
            phase: Phase::Unpeer,
            record: format!("tenant {}", w.name),
            verb: Verb::Update,
            fields: Vec::new(),
            request: Some(("PATCH", w.path(), Some(json!({ "peers": kept })))),
            shown: false,
        });
    }
}

/// The steps for one kind of record: in the file's order, then removals in tenetd's.
fn plan_kind<T: Record>(
    have: &[T],
    want: &[T],
    prune: bool,
    steps: &mut Vec<Step>,
    conflicts: &mut Vec<Conflict>,
) {
    let held: HashMap<String, &T> = have.iter().map(|r| (r.key(), r)).collect();
    let step = |phase, record: &String, verb, fields, request| Step {
        phase,
        record: record.clone(),
        verb,
        fields,
        request,
        shown: true,
    };
    for w in want {
        let record = format!("{} {}", T::KIND, w.key());
        let Some(h) = held.get(&w.key()) else {
            let (body, then) = w.create();
            steps.push(step(
                T::CREATE,
                &record,
                Verb::Create,
                Vec::new(),
                Some(("POST", T::LIST.to_owned(), Some(body))),
            ));
            if let Some(patch) = then {
                steps.push(Step {
                    shown: false,
                    ..step(
                        Phase::TenantPatch,
                        &record,
                        Verb::Create,
                        Vec::new(),
                        Some(("PATCH", w.path(), Some(patch))),
                    )
                });
            }
            continue;
        };
        let want_json = json!(w);
        let mut patch = serde_json::Map::new();
        for d in differences(&json!(h), &want_json, T::KEYS, false) {
            let patchable = T::PATCHABLE.contains(&d.field.as_str());
            match (patchable, &d.want) {
                // An empty list is a value (no peers), and the file lists none.
                (true, Value::Null) if d.have.is_array() => {
                    patch.insert(d.field.clone(), json!([]));
                }
                // tenetd's patch cannot unset it, and the file does not care.
                (true, Value::Null) => {}
                (true, want) => {
                    patch.insert(d.field.clone(), want.clone());
                }
                (false, _) => conflicts.push(Conflict {
                    record: record.clone(),
                    difference: d,
                    why: NOT_IN_PLACE,
                }),
            }
        }
        if patch.is_empty() {
            steps.push(step(T::CREATE, &record, Verb::Keep, Vec::new(), None));
        } else {
            let fields = patch.keys().cloned().collect();
            steps.push(step(
                Phase::TenantPatch,
                &record,
                Verb::Update,
                fields,
                Some(("PATCH", w.path(), Some(Value::Object(patch)))),
            ));
        }
    }
    if !prune {
        return;
    }
    let wanted: std::collections::HashSet<String> = want.iter().map(|r| r.key()).collect();
    for h in have.iter().filter(|h| !wanted.contains(&h.key())) {
        let record = format!("{} {}", T::KIND, h.key());
        steps.push(step(
            T::DELETE,
            &record,
            Verb::Delete,
            Vec::new(),
            Some(("DELETE", h.path(), None)),
        ));
    }
}

/// How many records `steps` create, update, delete and keep.
fn counts(steps: &[Step]) -> [usize; 4] {
    let count = |verb| steps.iter().filter(|s| s.shown && s.verb == verb).count();
    [Verb::Create, Verb::Update, Verb::Delete, Verb::Keep].map(count)
}

fn counts_text([created, updated, deleted, kept]: [usize; 4]) -> String {
    format!("{created} created, {updated} updated, {deleted} deleted, {kept} unchanged")
}

/// The counts of a plan's steps, as its last line.
pub fn summary(steps: &[Step], dry_run: bool) -> String {
    let [created, updated, deleted, kept] = counts(steps);
    if created + updated + deleted == 0 {
        return format!("nothing to change: {kept} unchanged");
    }
    let counts = counts_text([created, updated, deleted, kept]);
    match dry_run {
        true => format!("dry run: {counts}; nothing changed"),
        false => counts,
    }
}

/// `apply`, run against a tenetd.
pub struct Apply<'a> {
    /// tenetd.
    pub client: &'a Client,
    /// The file, `-` for stdin.
    pub file: &'a Path,
    /// Remove what the file does not list.
    pub prune: bool,
    /// Print the plan only.
    pub dry_run: bool,
    /// Print JSON instead of lines.
    pub json: bool,
}

impl Apply<'_> {
    /// Reads the file and tenetd's records, plans, and runs the plan, a line per step
    /// as it is done.
    pub fn run(&self, out: &mut dyn Write, err: &mut dyn Write) -> Status {
        let want = match self.read() {
            Ok(want) => want,
            Err(message) => {
                say(err, format_args!("{}: {message}", self.file.display()));
                return Status::Refused;
            }
        };
        let have = match self.current(out, err) {
            Ok(have) => have,
            Err(status) => return status,
        };
        let steps = match plan(&have, &want, self.prune) {
            Ok(steps) => steps,
            Err(conflicts) => {
                for c in &conflicts {
                    say(err, format_args!("{c}"));
                }
                say(err, format_args!("nothing applied"));
                return Status::Refused;
            }
        };
        let mut done = Vec::new();
        for step in &steps {
            if let (false, Some((method, path, body))) = (self.dry_run, &step.request) {
                let answer = match self.client.call(method, path, body.as_ref()) {
                    Ok(answer) => answer,
                    Err(e) => return unanswered(&e, err),
                };
                if !answer.ok() {
                    say(err, format_args!("{}: {}", step.record, answer.refusal()));
                    let before = counts_text(counts(&done));
                    say(err, format_args!("stopped there; done before: {before}"));
                    return Status::Refused;
                }
            }
            done.push(step.clone());
            if step.shown && !self.json {
                let dry = if self.dry_run && step.verb != Verb::Keep {
                    " (dry run)"
                } else {
                    ""
                };
                let status = emit(format!("{}{dry}\n", step.line()).as_bytes(), out, err);
                if status != Status::Done {
                    return status;
                }
            }
        }
        if self.json {
            let steps: Vec<Value> = done
                .iter()
                .filter(|s| s.shown)
                .map(|s| json!({"record": s.record, "action": s.verb, "fields": s.fields}))
                .collect();
            let text = json!({"dry_run": self.dry_run, "steps": steps});
            return emit(format!("{text:#}\n").as_bytes(), out, err);
        }
        emit(
            format!("{}\n", summary(&done, self.dry_run)).as_bytes(),
            out,
            err,
        )
    }

    fn read(&self) -> Result<Records, String> {
        let mut text = String::new();
        let read = if self.file.as_os_str() == "-" {
            std::io::stdin().read_to_string(&mut text)
        } else {
            std::fs::File::open(self.file).and_then(|mut f| f.read_to_string(&mut text))
        };
        read.map_err(|e| e.to_string())?;
        parse(&text, |var| std::env::var(var).ok())
    }

    /// The records tenetd holds.
    fn current(&self, out: &mut dyn Write, err: &mut dyn Write) -> Result<Records, Status> {
        Ok(Records {
            tenants: self.list::<TenantSpec>(out, err)?,
            hosts: self.list::<HostSpec>(out, err)?,
            endpoints: self.list::<EndpointSpec>(out, err)?,
            routes: self.list::<RouteSpec>(out, err)?,
            published: self.list::<PublishSpec>(out, err)?,
            listed: Default::default(),
        })
    }

    fn list<T: Record + DeserializeOwned>(
        &self,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<Vec<T>, Status> {
        let answer = match self.client.call("GET", T::LIST, None) {
            Ok(answer) => answer,
            Err(e) => return Err(unanswered(&e, err)),
        };
        if !answer.ok() {
            return Err(refused(&answer.body, false, out, err));
        }
        serde_json::from_value(answer.body).map_err(|e| {
            say(err, format_args!("reading tenetd's {}s: {e}", T::KIND));
            Status::Refused
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[host]]
name = "b"
underlay_ip = "192.168.77.2/24"

[[tenant]]
name = "red"
id = 100
subnets = ["10.1.0.1/24"]
peers = ["blue"]

[[tenant]]
name = "blue"
id = 200
subnets = ["10.2.0.1/24"]
peers = ["red"]

[[endpoint]]
tenant = "red"
macs = ["02:00:00:00:0a:01", "02:00:00:00:0A:02"]
host = "b"

[[route]]
tenant = "red"
prefix = "10.9.0.0/16"
via = "10.1.0.9"

[[publish]]
tenant = "red"
protocol = "tcp"
host_port = 8080
ip = "10.1.0.5"
port = 80
"#;

    fn file() -> Records {
        parse(FILE, |_| None).unwrap()
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().filter(|s| s.shown).map(Step::line).collect()
    }

    fn requests(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| s.request.as_ref())
            .map(|(method, path, body)| match body {
                Some(body) => format!("{method} {path} {body}"),
                None => format!("{method} {path}"),
            })
            .collect()
    }

    #[test]
    fn the_file_reads_into_the_configs_own_records() {
        let records = file();
        assert_eq!(records.tenants[1].peers, ["red"]);
        assert_eq!(records.endpoints[0].macs.as_ref().unwrap().len(), 2);
        assert_eq!(records.routes[0].via, std::net::Ipv4Addr::new(10, 1, 0, 9));
        assert_eq!(records.published[0].host_port, 8080);
        let expanded = parse(
            "[[host]]\nname = \"${H}\"\nunderlay_ip = \"10.0.0.1\"\n",
            |v| (v == "H").then(|| "c".to_owned()),
        )
        .unwrap();
        assert_eq!(expanded.hosts[0].name, "c");
    }

    #[test]
    fn an_unfit_file_is_refused_naming_the_field_and_line() {
        let refused = |text: &str| parse(text, |_| None).unwrap_err();
        assert_eq!(
            refused("[[tenant]]\nname = \"red\"\nid = \"x\"\n"),
            "tenant[0].id: invalid type: string \"x\", expected u32 (line 3)"
        );
        assert!(refused("[[tenants]]\nname = \"red\"\n").contains("unknown field `tenants`"));
        assert_eq!(
            refused("[[tenant]]\nname = \"a\"\nid = 1\n[[tenant]]\nname = \"a\"\nid = 2\n"),
            "tenant[1]: tenant a is listed already as tenant[0]"
        );
        assert_eq!(
            refused("[[endpoint]]\ntenant = \"red\"\nport = \"c1\"\n"),
            "endpoint[0].mac: give `mac` or `macs`, one of them"
        );
        assert!(refused("[[host]]\nname = \"${NOPE}\"\n").contains("`NOPE` is not set"));
    }

    #[test]
    fn a_first_apply_creates_what_is_depended_on_first_and_peers_last() {
        let steps = plan(&Records::default(), &file(), false).unwrap();
        assert_eq!(
            lines(&steps),
            [
                "host b: created",
                "tenant red: created",
                "tenant blue: created",
                "endpoint red 02:00:00:00:0a:01: created",
                "endpoint red 02:00:00:00:0a:02: created",
                "route red 10.9.0.0/16: created",
                "publish tcp/8080: created",
            ]
        );
        let sent: Vec<&Request> = steps.iter().filter_map(|s| s.request.as_ref()).collect();
        assert_eq!(
            sent[0],
            &(
                "POST",
                "/v1/hosts".to_owned(),
                Some(
                    json!({"name": "b", "underlay_ip": "192.168.77.2/24", "mac": null, "egress": false})
                )
            )
        );
        // Each tenant alone first, then the peers, which name each other.
        assert_eq!(
            sent[1],
            &(
                "POST",
                "/v1/tenants".to_owned(),
                Some(
                    json!({"name": "red", "id": 100, "vlan": null, "max_macs": null, "hosts": [],
                            "subnets": ["10.1.0.1/24"]})
                )
            )
        );
        assert_eq!(
            sent[3],
            &(
                "PATCH",
                "/v1/tenants/red".to_owned(),
                Some(
                    json!({"gateway_host": null, "peers": ["blue"], "snat_ip": null, "max_connections": null})
                )
            )
        );
        assert_eq!(
            (sent[4].0, sent[4].1.as_str()),
            ("PATCH", "/v1/tenants/blue")
        );
        let endpoint = sent[5].2.as_ref().unwrap();
        assert_eq!(
            (&endpoint["mac"], &endpoint["macs"], &endpoint["host"]),
            (&json!("02:00:00:00:0a:01"), &Value::Null, &json!("b"))
        );
        assert_eq!(
            summary(&steps, false),
            "7 created, 0 updated, 0 deleted, 0 unchanged"
        );
        assert_eq!(
            summary(&steps, true),
            "dry run: 7 created, 0 updated, 0 deleted, 0 unchanged; nothing changed"
        );
    }

    #[test]
    fn a_second_apply_changes_nothing() {
        let mut have = file();
        // tenetd answers with MACs as it holds them, in another case.
        have.endpoints[0].macs = Some(vec!["02:00:00:00:0A:01".into(), "02:00:00:00:0a:02".into()]);
        let steps = plan(&have, &file(), true).unwrap();
        assert!(steps
            .iter()
            .all(|s| s.verb == Verb::Keep && s.request.is_none()));
        assert_eq!(summary(&steps, false), "nothing to change: 7 unchanged");
    }

    #[test]
    fn a_patchable_difference_updates_and_an_unset_one_is_left() {
        let mut have = file();
        have.tenants[0].peers = vec![];
        have.tenants[0].gateway_host = Some("b".into());
        let steps = plan(&have, &file(), false).unwrap();
        let update: Vec<&Step> = steps.iter().filter(|s| s.verb == Verb::Update).collect();
        assert!(lines(&steps).contains(&"tenant red: updated (peers)".to_owned()));
        assert_eq!(update.len(), 1);
        assert_eq!(
            update[0].request,
            Some((
                "PATCH",
                "/v1/tenants/red".into(),
                Some(json!({"peers": ["blue"]}))
            ))
        );
    }

    #[test]
    fn what_cannot_change_in_place_refuses_the_whole_plan_naming_each_field() {
        let mut have = file();
        have.tenants[0].id = 101;
        have.tenants[1].subnets = vec!["10.3.0.1/24".into()];
        have.routes[0].via = "10.1.0.8".parse().unwrap();
        // Besides a change that could be made: still nothing is.
        have.tenants[1].peers = vec![];
        let said: Vec<String> = plan(&have, &file(), false)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(
            said[0].starts_with(
                "tenant red: id: 101 in tenetd, 100 in the file; tenetd cannot change it in place"
            ),
            "{}",
            said[0]
        );
        assert!(
            said[1].starts_with(
                "tenant blue: subnets: 10.3.0.1/24 in tenetd, 10.2.0.1/24 in the file"
            ),
            "{}",
            said[1]
        );
        assert!(
            said[2].starts_with(
                "route red 10.9.0.0/16: via: 10.1.0.8 in tenetd, 10.1.0.9 in the file"
            ),
            "{}",
            said[2]
        );
    }

    #[test]
    fn prune_removes_dependants_first_and_only_with_the_flag() {
        let mut have = file();
        have.tenants.push(TenantSpec {
            name: "green".into(),
            id: 300,
            vlan: None,
            max_macs: None,
            hosts: vec![],
            subnets: vec!["10.4.0.1/24".into()],
            gateway_host: None,
            snat_ip: None,
            router_mac: None,
            peers: vec![],
            max_connections: None,
        });
        have.routes.push(RouteSpec {
            tenant: "green".into(),
            prefix: "10.8.0.0/16".into(),
            via: "10.4.0.9".parse().unwrap(),
        });
        have.endpoints.push(EndpointSpec {
            tenant: "green".into(),
            mac: Some("02:00:00:00:0c:01".into()),
            macs: None,
            port: Some("c3".into()),
            host: None,
            ip: None,
        });
        assert!(plan(&have, &file(), false)
            .unwrap()
            .iter()
            .all(|s| s.verb == Verb::Keep));
        let steps = plan(&have, &file(), true).unwrap();
        let deleted: Vec<String> = steps
            .iter()
            .filter(|s| s.verb == Verb::Delete)
            .map(Step::line)
            .collect();
        assert_eq!(
            deleted,
            [
                "endpoint green 02:00:00:00:0c:01: deleted",
                "route green 10.8.0.0/16: deleted",
                "tenant green: deleted",
            ]
        );
        assert_eq!(
            requests(&steps),
            [
                "DELETE /v1/endpoints/green/02%3A00%3A00%3A00%3A0c%3A01",
                "DELETE /v1/routes/green/10.8.0.0/16",
                "DELETE /v1/tenants/green",
            ]
        );
        assert_eq!(
            summary(&steps, false),
            "0 created, 0 updated, 3 deleted, 7 unchanged"
        );
    }

    #[test]
    fn prune_keeps_kinds_the_file_does_not_list_and_unpeers_before_deleting() {
        let have = file();
        // A file of tenants alone: the hosts, endpoints, routes and published ports
        // tenetd holds are none of its business, even with --prune.
        let tenants_only = parse(
            "[[tenant]]\nname = \"red\"\nid = 100\nsubnets = [\"10.1.0.1/24\"]\n",
            |_| None,
        )
        .unwrap();
        let steps = plan(&have, &tenants_only, true).unwrap();
        let deleted: Vec<String> = steps
            .iter()
            .filter(|s| s.verb == Verb::Delete)
            .map(Step::line)
            .collect();
        assert!(
            deleted.iter().all(|d| d.starts_with("tenant ")),
            "{deleted:?}"
        );
        // red peers with a tenant the file drops: the peer goes before the tenant.
        let requests = requests(&steps);
        let unpeer = requests
            .iter()
            .position(|r| r.starts_with("PATCH /v1/tenants/red"));
        let delete = requests
            .iter()
            .position(|r| r.starts_with("DELETE /v1/tenants/"));
        assert!(
            matches!((unpeer, delete), (Some(u), Some(d)) if u < d),
            "{requests:?}"
        );
    }

    #[test]
    fn prune_cannot_take_one_mac_out_of_several() {
        let mut want = file();
        want.endpoints[0].macs = Some(vec!["02:00:00:00:0a:01".into()]);
        let said = plan(&file(), &want, true).unwrap_err();
        assert_eq!(said.len(), 1);
        assert_eq!(said[0].record, "endpoint red 02:00:00:00:0a:02");
        assert_eq!(said[0].difference.field, "macs");
    }
}
