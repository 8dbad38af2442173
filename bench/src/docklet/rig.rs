//! The rig the container experiments run on: hosts (network namespaces each running
//! tenetd) plugged into one underlay, a Linux bridge in a namespace of its own that
//! also stands in for the outside (the underlay's router and a server behind it), and
//! containers attached by tenet-cni run in their host's namespace, as a kubelet there
//! would, addressed by host-local from their host's own slice of the tenant's subnet.
//!
//! The rig itself is set up with `ip`: it stands in for machines and wires, and only
//! the switches and the containers' attachment are tenet's.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use control::client::Client;
use serde_json::{json, Value};

use super::Options;
use crate::lab::{unique, veth_between, veth_to_bridge, Netns, TempDir};
use crate::process::Proc;

/// The server outside, behind the underlay's router.
pub const SERVER: &str = "203.0.113.10";
/// The underlay's router (the way out), on the bridge.
const ROUTER: &str = "192.168.77.254";
/// The host that is the shared design's egress host (the star's hub), and the
/// dedicated design's central gateway host.
pub const EGRESS_HOST: usize = 0;
/// Hugepages each host's tenetd takes.
pub const TENETD_MEMORY_MB: u64 = 256;
/// Addresses host-local hands out in a tenant's /24, split between the hosts
/// (from .10 on: below are the gateway and spares).
const ADDRESSES: u32 = 240;

/// The two designs of the Docklet paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// One fabric: a VLAN per tenant, a GRE star to the egress host, which holds
    /// every tenant's gateway.
    Shared,
    /// A GRE key per tenant, tunnels only between hosts sharing a tenant, gateways
    /// anywhere.
    Dedicated,
}

impl Design {
    /// As tenetd's config names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Dedicated => "dedicated",
        }
    }
}

/// Where a tenant's gateway runs, as `gateway_host` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// On the egress host.
    Central,
    /// On this host.
    On(usize),
}

impl Gateway {
    fn config(self) -> String {
        match self {
            Self::Central => "central".to_owned(),
            Self::On(h) => host_name(h),
        }
    }

    /// The host it runs on.
    pub fn host(self) -> usize {
        match self {
            Self::Central => EGRESS_HOST,
            Self::On(h) => h,
        }
    }
}

/// Where a tenant lives in the rig.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    /// Every host it is on: its containers' and each its gateway runs on at some
    /// point of the run (a dedicated host's tunnels carry only the tenants that list
    /// the host at their other end).
    pub hosts: Vec<usize>,
    /// Where its gateway runs at first.
    pub gateway: Gateway,
}

fn host_name(h: usize) -> String {
    format!("h{h}")
}

/// tenant `t`'s subnet, without the last byte.
fn subnet(t: usize) -> String {
    format!("10.{}.{}", 100 + t / 256, t % 256)
}

/// A host: its tenetd (stopped first, on drop), its namespace and directory.
pub struct Host {
    _tenetd: Proc,
    /// Its namespace.
    pub ns: Netns,
    dir: TempDir,
}

impl Host {
    fn socket(&self) -> PathBuf {
        api_socket(self.dir.path())
    }
}

/// The API socket of the tenetd whose directory is `dir`.
fn api_socket(dir: &Path) -> PathBuf {
    dir.join("tenetd.sock")
}

/// A container: its namespace and the address host-local gave it.
pub struct Container {
    /// Its namespace.
    pub ns: Netns,
    /// Its address.
    pub address: String,
}

/// Hosts on one underlay bridge, with the outside behind it.
pub struct Rig {
    /// The hosts (dropped, so stopped, before the bridge they hang on goes).
    pub hosts: Vec<Host>,
    /// The underlay bridge, its router out and the server behind it.
    pub outside: Netns,
}

impl Rig {
    /// `hosts` hosts of `design` with `tenants`, each host's tenetd logging to
    /// `logs/<tag>-h<i>.tenetd.log`.
    pub fn new(
        design: Design,
        hosts: usize,
        tenants: &[TenantPlan],
        tag: &str,
        options: &Options,
    ) -> anyhow::Result<Self> {
        let outside = Netns::new("out")?;
        outside.ip(&["link", "add", "br0", "type", "bridge"])?;
        // A fixed MAC, as a router has: a bridge takes its lowest port's, which
        // changes as hosts are plugged in, and the hosts' resolved next hop would go
        // stale.
        outside.ip(&["link", "set", "br0", "address", "02:fa:b0:00:00:01"])?;
        outside.ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", "br0"])?;
        outside.ip(&["link", "set", "br0", "up"])?;
        outside.ip(&["addr", "add", &format!("{SERVER}/32"), "dev", "lo"])?;
        // The outside stands in for a network behind a NIC, which fills in checksums;
        // a veth leaves them to a NIC that is not there.
        outside.exec("ethtool", &["-K", "br0", "tx", "off"])?;
        let mut rig = Self {
            hosts: Vec::new(),
            outside,
        };
        for h in 0..hosts {
            let ns = Netns::new(&format!("h{h}-"))?;
            let port = host_name(h);
            veth_to_bridge(&ns, "under", &rig.outside, &port, "br0")?;
            for (ns, dev) in [(&ns, "under"), (&rig.outside, port.as_str())] {
                ns.ip(&["link", "set", dev, "mtu", "9000"])?;
                let _ = ns.exec(
                    "sysctl",
                    &["-qw", &format!("net.ipv6.conf.{dev}.disable_ipv6=1")],
                );
            }
            let dir = TempDir::new(&format!("docklet-h{h}"))?;
            let config = tenetd_config(design, h, hosts, tenants, dir.path());
            let tenetd = start_tenetd(&ns, &dir, &config, options, &format!("{tag}-h{h}"))?;
            rig.hosts.push(Host {
                _tenetd: tenetd,
                ns,
                dir,
            });
        }
        rig.outside.ip(&["link", "set", "br0", "mtu", "9000"])?;
        // The egress host's own kernel link to the outside, beside tenet's uplink.
        let own = &rig.hosts[EGRESS_HOST].ns;
        veth_between(own, "own", &rig.outside, "own")?;
        rig.outside
            .ip(&["addr", "add", "198.19.0.254/24", "dev", "own"])?;
        own.ip(&["addr", "add", "198.19.0.1/24", "dev", "own"])?;
        own.ip(&[
            "route",
            "add",
            &format!("{SERVER}/32"),
            "via",
            "198.19.0.254",
        ])?;
        Ok(rig)
    }

    /// A container of tenant `tenant` on host `host`, attached by tenet-cni.
    pub fn attach(
        &self,
        host: usize,
        tenant: usize,
        options: &Options,
    ) -> anyhow::Result<Container> {
        let ns = Netns::new(&format!("c{tenant}-"))?;
        let on = &self.hosts[host];
        let net = subnet(tenant);
        let slice = ADDRESSES / self.hosts.len() as u32;
        let start = 10 + host as u32 * slice;
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": format!("t{tenant}"),
            "type": "tenet",
            "tenant": format!("t{tenant}"),
            "socket": on.socket(),
            "backend": options.backend,
            "mtu": 1400,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("{net}.0/24"), "gateway": format!("{net}.1"),
                             "rangeStart": format!("{net}.{start}"),
                             "rangeEnd": format!("{net}.{}", start + slice - 1)}]],
                "dataDir": on.dir.path().join("ipam"),
            },
        });
        let mut child = on
            .ns
            .command(&options.cni.to_string_lossy())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", ns.name())
            .env("CNI_NETNS", ns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &options.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(conf.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        let result: Value =
            serde_json::from_slice(&out.stdout).context("tenet-cni answered no JSON")?;
        if !out.status.success() {
            bail!("tenet-cni ADD: {}", result["msg"]);
        }
        let address = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .context("no address in the result")?
            .to_owned();
        Ok(Container { ns, address })
    }

    /// Moves tenant `tenant`'s gateway through every host's API, as an operator
    /// without a cluster store does: the new gateway host first, so the old one stops
    /// routing only once there is a gateway to forward to.
    pub fn move_gateway(&self, tenant: usize, to: Gateway) -> anyhow::Result<()> {
        let first = to.host();
        let order = std::iter::once(first).chain((0..self.hosts.len()).filter(|&h| h != first));
        let patch = json!({ "gateway_host": to.config() });
        for h in order {
            let path = format!("/v1/tenants/t{tenant}");
            let answer = Client::new(self.hosts[h].socket()).call("PATCH", &path, Some(&patch))?;
            if !answer.ok() {
                bail!("PATCH {path} on {}: {}", host_name(h), answer.refusal());
            }
        }
        Ok(())
    }
}

/// tenetd's config for host `me` of `hosts`: every host on the underlay, host 0 the
/// egress host, the tenants with their subnets and gateways.
pub(super) fn tenetd_config(
    design: Design,
    me: usize,
    hosts: usize,
    tenants: &[TenantPlan],
    dir: &Path,
) -> String {
    // Each host's worker on a CPU of its own while there are CPUs, then round the CPUs
    // again: busy-polling workers sharing a CPU take turns by scheduler time slices,
    // which tenetd's idle backoff keeps short for the hosts without traffic.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let core = me % cpus;
    let mut t = format!(
        "[dataplane]\nworkers = [{core}]\nmain_core = {core}\nfile_prefix = \"{prefix}\"\n\
         memory_mb = {TENETD_MEMORY_MB}\nmbufs = 16383\n\n\
         [switch]\ndesign = \"{design}\"\nhost = \"{me}\"\nunderlay_gateway = \"{ROUTER}\"\n\n",
        prefix = unique("tbd"),
        design = design.name(),
        me = host_name(me),
    );
    for h in 0..hosts {
        t.push_str(&format!(
            "[[host]]\nname = \"{}\"\nunderlay_ip = \"192.168.77.{}/24\"\n{}\n",
            host_name(h),
            h + 1,
            if h == EGRESS_HOST {
                "egress = true\n"
            } else {
                ""
            },
        ));
    }
    for (i, tenant) in tenants.iter().enumerate() {
        let others: Vec<String> = tenant
            .hosts
            .iter()
            .filter(|&&h| h != me)
            .map(|&h| format!("\"{}\"", host_name(h)))
            .collect();
        t.push_str(&format!(
            "[[tenant]]\nname = \"t{i}\"\nid = {id}\nvlan = {id}\nhosts = [{}]\n\
             subnets = [\"{}.1/24\"]\ngateway_host = \"{}\"\n\n",
            others.join(", "),
            subnet(i),
            tenant.gateway.config(),
            id = 100 + i,
        ));
    }
    t.push_str(&format!(
        "[[port]]\nname = \"underlay\"\nbackend = \"af-packet\"\ninterface = \"under\"\nrole = \"uplink\"\n\n\
         [control]\napi_socket = \"{}\"\npersist = false\n",
        api_socket(dir).display()
    ));
    t
}

/// Starts tenetd in `ns` on `config` and waits for its API socket in `dir`.
fn start_tenetd(
    ns: &Netns,
    dir: &TempDir,
    config: &str,
    options: &Options,
    tag: &str,
) -> anyhow::Result<Proc> {
    let path = dir.path().join("tenetd.toml");
    std::fs::write(&path, config)?;
    let mut command = ns.command(&options.tenetd.to_string_lossy());
    command.arg("--config").arg(&path);
    let log = format!("{tag}.tenetd.log");
    let mut p = Proc::spawn("tenetd", command, &options.out.join("logs").join(&log))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api_socket(dir.path()).exists() {
        if Instant::now() > deadline || !p.alive() {
            bail!("tenetd in {} did not start: see logs/{log}", ns.name());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(p)
}

/// Pings until `to` answers (learning and ARP across hosts take a moment).
pub fn reach(from: &Netns, to: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if from.exec("ping", &["-c", "1", "-W", "1", to]).is_ok() {
            return Ok(());
        }
    }
    bail!("{to} never answered a ping from {}", from.name())
}
