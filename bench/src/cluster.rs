//! `tenet-bench cluster`: what a large cluster costs, from the real code, and how fast
//! hosts converge, measured.
//!
//! On paper: a synthetic cluster (hosts, tenants with containers spread over random
//! hosts, one tenant in ten with an `auto` gateway) is turned into etcd keys by the
//! cluster store's own key layout, and a sample of hosts into the model each runs by
//! the placement code; each view is validated as tenetd validates it, and its tunnels
//! are the hosts its tenants reach. Watch events follow from the layout: every host
//! watches the whole prefix.
//!
//! Measured: agents (hosts without dataplanes: a cluster store with its watch and
//! lease, reloading on every change, as tenetd does) on a real etcd; one more host
//! adds tenants one at a time, and the time until every agent has each one is taken.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use control::config::switching::TenantSpec;
use control::config::Config;
use control::model::{Change, Model};
use control::placement::{self, GatewayPlacement};
use control::store::{EtcdStore, Watch};
use dataplane::packet::MacText;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::lab::Etcd;

/// What to run.
pub struct Options {
    /// Hosts of the synthetic cluster.
    pub hosts: usize,
    /// Its tenants.
    pub tenants: usize,
    /// Containers per tenant.
    pub containers: usize,
    /// Hosts whose view is computed.
    pub sample: usize,
    /// Agents in the convergence run (0: none).
    pub agents: usize,
    /// Tenants added one at a time in it.
    pub writes: usize,
    /// Tenants (with two containers each) the cluster holds before the agents start.
    pub preload: usize,
    /// How long the agents follow the cluster before the first write.
    pub settle: Duration,
    /// A tenetd (this binary) that joins the cluster as one more host and is timed
    /// like the agents, through its API.
    pub follower: Option<PathBuf>,
    /// What agents and the follower watch: everything, or their own tenants.
    pub watch: Watch,
    /// Results directory.
    pub out: PathBuf,
}

/// A distribution over the sampled hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Spread {
    /// Smallest.
    pub min: usize,
    /// Median.
    pub median: usize,
    /// Largest.
    pub max: usize,
}

impl Spread {
    fn of(mut values: Vec<usize>) -> Self {
        values.sort_unstable();
        Self {
            min: values.first().copied().unwrap_or(0),
            median: values.get(values.len() / 2).copied().unwrap_or(0),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The command line.
    pub command: String,
    /// Cluster size.
    pub hosts: usize,
    /// Tenants.
    pub tenants: usize,
    /// Containers (endpoints).
    pub containers: usize,
    /// etcd keys of the whole cluster.
    pub keys: usize,
    /// Their bytes (keys and values).
    pub bytes: usize,
    /// Watch events every host receives when one container is added anywhere.
    pub events_per_container_add: usize,
    /// Hosts sampled.
    pub sampled: usize,
    /// Tenants a sampled host programs.
    pub tenants_per_host: Spread,
    /// Endpoints a sampled host programs (its own and remote).
    pub endpoints_per_host: Spread,
    /// Tunnels a sampled host has.
    pub tunnels_per_host: Spread,
    /// Seconds to compute and validate one host's view.
    pub view_seconds: f64,
    /// Agents in the convergence run.
    pub agents: usize,
    /// Tenants the cluster held in it before the writes.
    pub preloaded: usize,
    /// Milliseconds from a write until every agent had it, per write.
    pub convergence_ms: Vec<f64>,
    /// Milliseconds from a write of a tenant on other hosts until the follower's API
    /// had it.
    #[serde(default)]
    pub follower_elsewhere_ms: Vec<f64>,
    /// The same for a tenant that claims the follower's host (its tables change).
    #[serde(default)]
    pub follower_here_ms: Vec<f64>,
    /// What the agents watched (`all` or `own`).
    #[serde(default)]
    pub watch: String,
    /// Agents each write was awaited at (all of them, or the ones it lives on).
    #[serde(default)]
    pub awaited_per_write: Vec<usize>,
    /// Watch events each agent received from its start to the end of the run.
    #[serde(default)]
    pub events_per_agent: Spread,
    /// Tenants each agent held at the end of the run.
    #[serde(default)]
    pub tenants_per_agent: Spread,
    /// Seconds from the agents' start until every one of them followed the cluster.
    #[serde(default)]
    pub agents_start_s: f64,
    /// Seconds from then until etcd had caught up every watch the agents made (its
    /// slow watchers, created behind the current revision, all synced).
    #[serde(default)]
    pub etcd_settle_s: f64,
    /// Seconds the agents followed the cluster before the first write.
    #[serde(default)]
    pub settle_s: f64,
}

/// A small deterministic generator (xorshift64*): the same cluster on every run.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

fn host_name(i: usize) -> String {
    format!("h{i:05}")
}

/// The cluster as the store keeps it: every endpoint at its host.
fn synthetic(options: &Options) -> anyhow::Result<(Model, Vec<(usize, usize)>)> {
    let mut text = String::from("[switch]\nhost = \"h00000\"\n");
    for h in 0..options.hosts {
        let ip = Ipv4Addr::from(0x0a00_0000u32 + h as u32 + 1);
        text.push_str(&format!(
            "[[host]]\nname = \"{}\"\nunderlay_ip = \"{ip}/8\"\n",
            host_name(h)
        ));
    }
    let mut model = Model::of(&Config::parse(&text, |_| None).context("synthetic hosts")?);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let mut placed = Vec::with_capacity(options.tenants * options.containers);
    for t in 0..options.tenants {
        let id = t as u32 + 1;
        let mut tenant = json!({"name": format!("t{t:06}"), "id": id});
        if t % 10 == 0 {
            let net = Ipv4Addr::from(0x6400_0000u32 + (id << 8) + 1);
            tenant["subnets"] = json!([format!("{net}/24")]);
            tenant["gateway_host"] = json!("auto");
        }
        model.tenants.push_back(serde_json::from_value(tenant)?);
        for c in 0..options.containers {
            let host = random.below(options.hosts);
            let n = t * options.containers + c;
            let mac = numbered_mac(0x02, n as u64).to_string();
            model.endpoints.push_back(serde_json::from_value(json!({
                "tenant": format!("t{t:06}"), "mac": mac, "host": host_name(host),
            }))?);
            placed.push((t, host));
        }
    }
    Ok((model, placed))
}

/// Host `me`'s model: its containers behind ports of its own, everyone else's at
/// their hosts.
fn as_seen_by(model: &Model, me: usize, placed: &[(usize, usize)]) -> anyhow::Result<Model> {
    let name = host_name(me);
    let mut mine = model.clone();
    mine.switch.host = Some(name.clone());
    for (endpoint, &(t, host)) in mine.endpoints.iter_mut().zip(placed) {
        if host == me {
            let port =
                format!("c{}", &endpoint.mac.as_deref().unwrap_or_default()[3..]).replace(':', "");
            mine.ports.push(serde_json::from_value(json!({
                "name": port, "backend": "af-packet", "interface": port,
                "role": "access", "tenant": format!("t{t:06}"),
            }))?);
            endpoint.host = None;
            endpoint.port = Some(port);
        }
    }
    Ok(mine)
}

/// Keys, views and tunnels from the real code.
fn on_paper(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let (mut model, placed) = synthetic(options)?;
    let alive: BTreeSet<String> = (0..options.hosts).map(host_name).collect();
    // The placer's records of the floating gateways, as the cluster keeps them.
    model.placed = placement::records(&model, &alive, GatewayPlacement::Tenants, &BTreeMap::new());
    let base = Config::parse("", |_| None)?;
    let store = EtcdStore::new(Vec::new(), "/tenet", &host_name(0));
    let keys = store.keys_of(&model)?;
    // Each host adds its own two keys, its registration and, at most, its traffic
    // report (beside the prefix, so no host watches it; idle hosts write none).
    let per_host_keys = 4;
    results.keys = keys.len() - 2 + options.hosts * per_host_keys;
    results.bytes = keys.iter().map(|(k, v)| k.len() + v.len()).sum();
    // A container added: its endpoint and its host's port list change; every host
    // watches the whole prefix.
    results.events_per_container_add = 2;
    let step = (options.hosts / options.sample.max(1)).max(1);
    let (mut tenants, mut endpoints, mut tunnels) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for me in (0..options.hosts).step_by(step).take(options.sample) {
        let mine = as_seen_by(&model, me, &placed)?;
        let view = placement::view(&mine, &alive, &host_name(me));
        let validated = view
            .over(&base)
            .validate()
            .with_context(|| format!("host {me}'s view"))?;
        let reached: BTreeSet<usize> = validated
            .switching
            .tenants
            .iter()
            .flat_map(|t| t.hosts.iter().copied())
            .collect();
        tenants.push(view.tenants.len());
        endpoints.push(view.endpoints.len());
        tunnels.push(reached.len());
    }
    results.sampled = tenants.len();
    results.view_seconds = started.elapsed().as_secs_f64() / results.sampled.max(1) as f64;
    results.tenants_per_host = Spread::of(tenants);
    results.endpoints_per_host = Spread::of(endpoints);
    results.tunnels_per_host = Spread::of(tunnels);
    Ok(())
}

/// Agents follow one writer; the time until all of them (or, watching their own
/// tenants, the ones a write lives on) have each write.
fn convergence(options: &Options, results: &mut Results) -> anyhow::Result<()> {
    let etcd = Etcd::start()?;
    let prefix = "/converge";
    let own = options.watch == Watch::Own;
    let follower_host = host_name(options.agents + 1);
    // Watching their own tenants, agents are some of many hosts: the cluster's
    // containers are spread over all of them.
    let simulated = match own {
        true => options.hosts.max(options.agents + 2),
        false => options.agents + 1 + usize::from(options.follower.is_some()),
    };
    let hosts: String = (0..simulated)
        .map(|h| {
            let ip = Ipv4Addr::from(0x0a00_0000u32 + h as u32 + 1);
            format!(
                "[[host]]\nname = \"{}\"\nunderlay_ip = \"{ip}/8\"\n",
                host_name(h)
            )
        })
        .collect();
    let seed_for = |h: usize| -> anyhow::Result<Model> {
        let text = format!("[switch]\nhost = \"{}\"\n{hosts}", host_name(h));
        Ok(Model::of(&Config::parse(&text, |_| None)?))
    };
    let writer = EtcdStore::new(vec![etcd.url().to_owned()], prefix, &host_name(0));
    let mut model = seed_for(0)?;
    writer.load(&model)?;
    // The cluster as it stands before: tenants with containers on the agents' hosts
    // (on any host, when agents watch their own).
    let mut random = Random(0x2545_f491_4f6c_dd1d);
    let container_host = |random: &mut Random| match own {
        true => random.below(simulated),
        false => 1 + random.below(options.agents.max(1)),
    };
    for t in 0..options.preload {
        model.tenants.push_back(serde_json::from_value(
            json!({"name": format!("p{t:06}"), "id": 100_000 + t}),
        )?);
        for c in 0..2 {
            let n = t * 2 + c;
            model.endpoints.push_back(serde_json::from_value(json!({
                "tenant": format!("p{t:06}"),
                "mac": numbered_mac(0x02, 0xaa << 32 | (n as u64 & 0xffff_ffff)).to_string(),
                "host": host_name(container_host(&mut random)),
            }))?);
        }
    }
    writer.save(&model)?;
    results.preloaded = options.preload;
    // Each write: a tenant with a container on one agent's host and one on any host;
    // the agents it is awaited at (all of them, or those it lives on).
    let mut plan = Vec::with_capacity(options.writes);
    for _ in 0..options.writes {
        let on = vec![
            1 + random.below(options.agents.max(1)),
            random.below(simulated),
        ];
        let awaited: Vec<bool> = (0..options.agents)
            .map(|a| !own || on.contains(&(a + 1)))
            .collect();
        plan.push((on, awaited));
    }
    results.awaited_per_write = plan
        .iter()
        .map(|(_, awaited)| awaited.iter().filter(|a| **a).count())
        .collect();
    let follower = match &options.follower {
        Some(tenetd) => Some(Follower::start(
            tenetd,
            &Cluster {
                etcd: etcd.url(),
                prefix,
                watch: options.watch,
            },
            &follower_host,
            &hosts,
            &options.out,
            // Watching its own tenants, it holds none of the preloaded ones.
            (!own).then(|| format!("p{:06}", options.preload.saturating_sub(1))),
        )?),
        None => None,
    };
    // Per agent, the instant it first had each tenant.
    let seen: Arc<Mutex<Vec<Vec<Option<Instant>>>>> =
        Arc::new(Mutex::new(vec![vec![None; options.writes]; options.agents]));
    // Tenants each agent held at its last read.
    let held: Arc<Mutex<Vec<usize>>> = Arc::new(Mutex::new(vec![0; options.agents]));
    // Agents report when they follow the cluster (or why they could not); an agent
    // that failed must not leave the others waiting, so all of them give up once
    // `abort` is set. Agents stay until `finished`, so each one's events are counted
    // over the whole run.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let abort = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut agents = Vec::new();
    let started = Instant::now();
    for a in 0..options.agents {
        let (seen, held) = (Arc::clone(&seen), Arc::clone(&held));
        let (ready, abort, finished) =
            (ready_tx.clone(), Arc::clone(&abort), Arc::clone(&finished));
        let seed = seed_for(a + 1)?;
        let awaited: Vec<bool> = plan.iter().map(|(_, awaited)| awaited[a]).collect();
        let agent = Arc::new(
            EtcdStore::with_lease(vec![etcd.url().to_owned()], prefix, &host_name(a + 1), 10)
                .watching(options.watch),
        );
        agents.push(Arc::clone(&agent));
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let setup = agent
                .register()
                .and_then(|()| agent.load(&seed))
                .map(|model| {
                    held.lock().unwrap_or_else(|e| e.into_inner())[a] =
                        model.map_or(0, |m| m.tenants.len());
                });
            if setup.is_err() {
                let _ = ready.send(setup);
                return Ok(());
            }
            let mut changes = agent.watch();
            // Started once its watch follows all it holds.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !agent.is_following() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = ready.send(match agent.is_following() {
                true => Ok(()),
                false => Err(anyhow::anyhow!(
                    "agent {a}: the watch did not follow the cluster"
                )),
            });
            let awaiting = awaited.iter().filter(|a| **a).count();
            let mut have = 0;
            while !finished.load(Ordering::Relaxed) {
                // Past the writes it awaits, an agent only keeps following.
                let change = match have < awaiting {
                    true => changes.blocking_recv().map(|()| true),
                    false => {
                        std::thread::sleep(Duration::from_millis(20));
                        Some(changes.try_recv().is_ok())
                    }
                };
                match change {
                    None => bail!("agent {a}: the watch ended"),
                    Some(false) => continue,
                    Some(true) => {}
                }
                if abort.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let now = Instant::now();
                let Some(model) = agent.load_cached(&seed)? else {
                    continue;
                };
                held.lock().unwrap_or_else(|e| e.into_inner())[a] = model.tenants.len();
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                // The model's tenants are in key order: each awaited one is looked up,
                // as a host finds a tenant, rather than every tenant walked.
                for (w, at) in seen[a].iter_mut().enumerate() {
                    let name = format!("w{w}");
                    let found = model
                        .tenants
                        .binary_search_by(|t| t.name.as_str().cmp(&name))
                        .is_ok();
                    if found && at.is_none() && awaited[w] {
                        *at = Some(now);
                        have += 1;
                    }
                }
            }
            Ok(())
        }));
    }
    drop(ready_tx);
    // Every agent reads what it follows at start, all of them at once on however few
    // cores: the wait grows with the cluster.
    let start_within =
        Duration::from_secs(120 + (options.preload * options.agents / 10_000) as u64);
    let stop = |model: &mut Model| {
        abort.store(true, Ordering::Relaxed);
        finished.store(true, Ordering::Relaxed);
        // One more write wakes the agents that wait for changes, to see the abort.
        model.hosts.pop();
        let _ = writer.save(model);
    };
    for _ in 0..options.agents {
        let setup = ready_rx
            .recv_timeout(start_within)
            .map_err(|_| anyhow::anyhow!("an agent did not start within {start_within:?}"))
            .and_then(|r| r);
        if let Err(e) = setup {
            stop(&mut model);
            return Err(e.context("starting the agents"));
        }
    }
    results.agents_start_s = started.elapsed().as_secs_f64();
    // A watch made behind etcd's revision (agents registered meanwhile) is caught up a
    // few hundred at a time, every 100 ms: writes are timed once etcd has none left,
    // as a cluster runs after its hosts started, and the wait is reported.
    let settling = Instant::now();
    loop {
        let slow = etcd.metric("etcd_debugging_mvcc_slow_watcher_total");
        let late = settling.elapsed() > Duration::from_secs(300);
        match slow {
            Ok(n) if n <= 0.0 => break,
            Ok(_) if !late => std::thread::sleep(Duration::from_millis(100)),
            // The agents are told to stop before the run ends, however it ends.
            Ok(_) => {
                stop(&mut model);
                bail!("etcd did not catch its watches up within 300 s");
            }
            Err(e) => {
                stop(&mut model);
                return Err(e.context("reading etcd's slow watchers"));
            }
        }
    }
    results.etcd_settle_s = settling.elapsed().as_secs_f64();
    results.settle_s = options.settle.as_secs_f64();
    // The last agents' registrations reach the others, and their start-up is over,
    // before the events are counted and the writes timed.
    std::thread::sleep(options.settle);
    let events_before: Vec<u64> = agents.iter().map(|a| a.events_received()).collect();
    let mut written = Vec::with_capacity(options.writes);
    for (w, (on, _)) in plan.iter().enumerate() {
        std::thread::sleep(Duration::from_millis(200));
        // One write in four claims the follower's host: its tables take that one.
        let here = w % 4 == 3;
        let claim: Vec<&str> = if here { vec![&follower_host] } else { vec![] };
        let name = format!("w{w}");
        let tenant: TenantSpec =
            serde_json::from_value(json!({"name": name, "id": 10_000 + w, "hosts": claim}))?;
        let before = model.clone();
        model.tenants.push_back(Arc::new(tenant.clone()));
        for (c, host) in on.iter().enumerate() {
            model.endpoints.push_back(serde_json::from_value(json!({
                "tenant": name,
                "mac": numbered_mac(0x02, 0xbb << 32 | (w * 2 + c) as u64).to_string(),
                "host": host_name(*host),
            }))?);
        }
        let at = Instant::now();
        // As tenetd writes an API change: the records it touches, not the whole model.
        writer.save_made(&Change::AddTenant(tenant), &before, &model)?;
        written.push(at);
        if let Some(follower) = &follower {
            // Watching its own tenants, it never holds one on other hosts.
            if here || !own {
                let took = follower.until_it_has(&name, at)?;
                match here {
                    true => results.follower_here_ms.push(took),
                    false => results.follower_elsewhere_ms.push(took),
                }
            }
        }
    }
    // Agents that miss a write give up after a while rather than hang the run.
    let deadline = Instant::now() + Duration::from_secs(60);
    let all_in = || {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        (0..options.agents)
            .all(|a| (0..options.writes).all(|w| !plan[w].1[a] || seen[a][w].is_some()))
    };
    while !all_in() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let events: Vec<usize> = agents
        .iter()
        .zip(&events_before)
        .map(|(a, before)| (a.events_received() - before) as usize)
        .collect();
    stop(&mut model);
    for (a, thread) in threads.into_iter().enumerate() {
        match thread.join() {
            Ok(result) => result.with_context(|| format!("agent {a}"))?,
            Err(_) => bail!("agent {a} panicked"),
        }
    }
    drop(agents);
    results.events_per_agent = Spread::of(events);
    results.tenants_per_agent = Spread::of(held.lock().unwrap_or_else(|e| e.into_inner()).clone());
    anyhow::ensure!(all_in(), "an agent missed a write it hosts");
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    results.agents = options.agents;
    results.convergence_ms = (0..options.writes)
        .map(|w| {
            let last = (0..options.agents)
                .filter(|a| plan[w].1[*a])
                .filter_map(|a| seen[a][w])
                .max()
                .unwrap_or(written[w]);
            last.saturating_duration_since(written[w]).as_secs_f64() * 1e3
        })
        .collect();
    Ok(())
}

/// Where a cluster lives and how its hosts watch it.
#[derive(Clone, Copy)]
struct Cluster<'a> {
    /// etcd's URL.
    etcd: &'a str,
    /// The cluster's key prefix.
    prefix: &'a str,
    watch: Watch,
}

/// A tenetd that joins the cluster as one more host.
struct Follower {
    tenetd: crate::process::Proc,
    client: control::client::Client,
    _work: crate::lab::TempDir,
}

impl Follower {
    /// Starts `tenetd` as `host` of `cluster` (hosts as `hosts` lists them), and waits
    /// until it runs the cluster's model (it has tenant `last`).
    fn start(
        tenetd: &std::path::Path,
        cluster: &Cluster<'_>,
        host: &str,
        hosts: &str,
        out: &std::path::Path,
        last: Option<String>,
    ) -> anyhow::Result<Self> {
        let Cluster {
            etcd,
            prefix,
            watch,
        } = *cluster;
        let work = crate::lab::TempDir::new("tenet-bench-follower")?;
        let socket = work.path().join("tenetd.sock");
        let config = work.path().join("tenetd.toml");
        std::fs::write(
            &config,
            format!(
                "[dataplane]\nworkers = [1]\nmain_core = 0\nfile_prefix = \"tbfollow\"\nmemory_mb = 256\n\n\
                 [switch]\nhost = \"{host}\"\n\n{hosts}\n\
                 [[port]]\nname = \"up\"\nbackend = \"null\"\nrole = \"uplink\"\n\n\
                 [control]\napi_socket = \"{}\"\nstate_file = \"{}\"\netcd = [\"{etcd}\"]\netcd_prefix = \"{prefix}\"\netcd_watch = \"{}\"\n",
                socket.display(),
                work.path().join("view.json").display(),
                format!("{watch:?}").to_lowercase(),
            ),
        )?;
        let _ = std::fs::remove_dir_all("/var/run/dpdk/tbfollow");
        let mut command = std::process::Command::new(tenetd);
        command.arg("--config").arg(&config);
        std::fs::create_dir_all(out.join("logs"))?;
        let proc =
            crate::process::Proc::spawn("tenetd", command, &out.join("logs").join("follower.log"))?;
        let follower = Self {
            tenetd: proc,
            client: control::client::Client::new(&socket),
            _work: work,
        };
        match last {
            Some(last) => follower.until_it_has(&last, Instant::now())?,
            None => follower.until_it_answers()?,
        };
        Ok(follower)
    }

    /// Milliseconds until the follower's API answers.
    fn until_it_answers(&self) -> anyhow::Result<f64> {
        let since = Instant::now();
        let deadline = since + Duration::from_secs(120);
        while self.client.send("GET", "/v1/tenants", b"").is_err() {
            if Instant::now() > deadline {
                bail!("the follower tenetd did not answer: {}", self.tenetd.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(since.elapsed().as_secs_f64() * 1e3)
    }

    /// Milliseconds from `since` until the follower's API answers for `tenant`.
    fn until_it_has(&self, tenant: &str, since: Instant) -> anyhow::Result<f64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let path = format!("/v1/tenants/{tenant}");
        loop {
            if let Ok(answer) = self.client.send("GET", &path, b"") {
                if answer.ok() {
                    return Ok(since.elapsed().as_secs_f64() * 1e3);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the follower tenetd did not take tenant {tenant}: {}",
                    self.tenetd.log()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Runs both parts and writes `cluster.txt` and `cluster.json`.
pub fn run(options: &Options, command: String) -> anyhow::Result<Results> {
    std::fs::create_dir_all(&options.out)?;
    let mut results = Results {
        command,
        hosts: options.hosts,
        tenants: options.tenants,
        containers: options.tenants * options.containers,
        watch: format!("{:?}", options.watch).to_lowercase(),
        ..Results::default()
    };
    eprintln!("tenet-bench cluster: keys and views of the synthetic cluster");
    on_paper(options, &mut results)?;
    if options.agents > 0 {
        eprintln!("tenet-bench cluster: {} agents on etcd", options.agents);
        convergence(options, &mut results)?;
    }
    std::fs::write(
        options.out.join("cluster.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    std::fs::write(options.out.join("cluster.txt"), table(&results))?;
    Ok(results)
}

/// The results as text.
pub fn table(r: &Results) -> String {
    let mut out = format!("# {}\n\n", r.command);
    out.push_str(&format!(
        "Cluster: {} hosts, {} tenants, {} containers (one tenant in ten with an auto-placed gateway)\n",
        r.hosts, r.tenants, r.containers
    ));
    out.push_str(&format!(
        "  etcd keys                          {:>12}  ({:.1} MiB of keys and values)\n",
        r.keys,
        r.bytes as f64 / (1 << 20) as f64
    ));
    match r.watch.as_str() {
        "own" => out.push_str(
            "  watch events per container added: 2 at its host (its endpoint, its index key), 1 at each other host holding its tenant, none elsewhere\n",
        ),
        _ => out.push_str(&format!(
            "  watch events at every host per container added anywhere: {} (one prefix watch)\n",
            r.events_per_container_add
        )),
    }
    out.push_str(&format!(
        "Per host ({} sampled; min / median / max):\n",
        r.sampled
    ));
    for (what, s) in [
        ("tenants programmed", &r.tenants_per_host),
        ("endpoints programmed", &r.endpoints_per_host),
        ("tunnels", &r.tunnels_per_host),
    ] {
        out.push_str(&format!(
            "  {what:<22} {:>8} / {:>8} / {:>8}\n",
            s.min, s.median, s.max
        ));
    }
    out.push_str(&format!(
        "  view computed and validated in {:.2} s per host\n",
        r.view_seconds
    ));
    if r.agents > 0 {
        let mut sorted = r.convergence_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        let max = sorted.last().copied().unwrap_or(0.0);
        let p99 = sorted
            .get((sorted.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let whom = match r.watch.as_str() {
            "own" => "every agent it lives on",
            _ => "every agent",
        };
        out.push_str(&format!(
            "Convergence: {} agents (watching {}) on one etcd holding {} tenants, {} writes: {whom} had a write after {:.1} ms (median), {:.1} ms (p99), {:.1} ms (slowest)\n",
            r.agents,
            if r.watch.is_empty() { "all" } else { r.watch.as_str() },
            r.preloaded,
            r.convergence_ms.len(),
            median,
            p99,
            max
        ));
        if !r.awaited_per_write.is_empty() {
            let awaited: usize = r.awaited_per_write.iter().sum();
            out.push_str(&format!(
                "  agents awaited per write: {:.1} on average; agents started (each read and watches what it follows) in {:.1} s, etcd caught their watches up {:.1} s later; writes began {:.0} s after\n",
                awaited as f64 / r.awaited_per_write.len() as f64,
                r.agents_start_s,
                r.etcd_settle_s,
                r.settle_s
            ));
            for (what, s) in [
                (
                    "watch events received during the writes",
                    &r.events_per_agent,
                ),
                ("tenants held at the end", &r.tenants_per_agent),
            ] {
                out.push_str(&format!(
                    "  per agent, {what} (min / median / max): {} / {} / {}\n",
                    s.min, s.median, s.max
                ));
            }
        }
        for (what, taken) in [
            ("on other hosts", &r.follower_elsewhere_ms),
            ("claiming its host", &r.follower_here_ms),
        ] {
            if taken.is_empty() {
                continue;
            }
            let mut sorted = taken.clone();
            sorted.sort_by(f64::total_cmp);
            out.push_str(&format!(
                "  a tenetd of the cluster had a tenant {what} after {:.1} ms (median), {:.1} ms (slowest) of {}\n",
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1],
                sorted.len()
            ));
        }
    }
    out
}

/// The locally administered MAC `first:` followed by the low 40 bits of `n`.
fn numbered_mac(first: u8, n: u64) -> MacText {
    let b = n.to_be_bytes();
    MacText([first, b[3], b[4], b[5], b[6], b[7]])
}
