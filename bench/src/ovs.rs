//! A private Open vSwitch with DPDK for one measurement: its own database, sockets and
//! DPDK prefix under the run's work directory, both daemons children of the runner
//! (never systemd's), configured for the scenario as an OVS user would do it (the
//! shared harness's flows where it has them), and stopped by PID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::peers::Setup;
use crate::process::{self, Proc};
use crate::scenario::{self, Scenario, Topology};
use crate::template;
use dataplane::packet::MacText;

/// OVS's DPDK file prefix (its telemetry socket).
pub const PREFIX: &str = "tbovs";
/// The DPDK build of vswitchd (Debian's `ovs-vswitchd` alternative is the plain one).
pub const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
/// Bridge names; netdev bridges get a tap of the same name, removed on stop.
const BRIDGES: [&str; 3] = ["tb-br0", "tb-br-int", "tb-br-phy"];

/// A running private OVS.
pub struct Ovs {
    ctl: Ctl,
    db: Proc,
    vswitchd: Proc,
}

/// The control tools pointed at one instance's sockets.
struct Ctl {
    dir: PathBuf,
}

impl Ctl {
    fn wait_for_db(&self) -> anyhow::Result<()> {
        let sock = self.dir.join("db.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sock.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("ovsdb-server did not open {}", sock.display())
    }

    fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut all = vec![db.as_str(), "--timeout=30"];
        all.extend_from_slice(args);
        process::run("ovs-vsctl", &all)
    }

    fn ofctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ovs-ofctl")
            .env("OVS_RUNDIR", &self.dir)
            .args(args)
            .output()
            .context("running ovs-ofctl")?;
        if !out.status.success() {
            bail!(
                "ovs-ofctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn appctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let target = self.dir.join("ovs-vswitchd.ctl");
        let target = target.to_string_lossy();
        let mut all = vec!["-t", target.as_ref()];
        all.extend_from_slice(args);
        process::run("ovs-appctl", &all)
    }
}

/// Where a configured OVS takes input and gives output.
pub struct Ports {
    /// The sink device (replay).
    pub sink: String,
    /// vhost-user sockets the generator serves (pvp: OVS's ports are clients).
    pub vhost: Option<(PathBuf, PathBuf)>,
}

impl Ovs {
    /// Starts ovsdb-server and ovs-vswitchd (DPDK: main thread on CPU 0, a PMD on each
    /// of `cpus`, 512 MiB) and waits until DPDK is initialised.
    pub fn start(work: &Path, logs: &Path, cpus: &[usize]) -> anyhow::Result<Self> {
        let dir = work.join("ovs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(PREFIX));
        remove_taps();
        let conf = dir.join("conf.db");
        process::run(
            "ovsdb-tool",
            &[
                "create",
                &conf.to_string_lossy(),
                "/usr/share/openvswitch/vswitch.ovsschema",
            ],
        )?;
        let env = |c: &mut Command| {
            c.env("OVS_RUNDIR", &dir)
                .env("OVS_LOGDIR", &dir)
                .env("OVS_DBDIR", &dir);
        };
        let mut db = Command::new("taskset");
        db.args(["-c", "0", "ovsdb-server"])
            .arg(&conf)
            .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovsdb-server.log").display()
            ));
        env(&mut db);
        let mut db = Proc::spawn("ovsdb-server", db, &logs.join("ovs-console.log"))?;
        let ctl = Ctl { dir: dir.clone() };
        if let Err(e) = ctl.wait_for_db() {
            db.stop();
            return Err(e);
        }
        let configured = ctl.vsctl(&["--no-wait", "init"]).and_then(|_| {
            let mask = cpus
                .iter()
                .filter(|&&c| c < 64)
                .fold(0u64, |m, c| m | 1 << c);
            let pmd_mask = format!("other_config:pmd-cpu-mask={mask:#x}");
            ctl.vsctl(&[
                "--no-wait",
                "set",
                "Open_vSwitch",
                ".",
                "other_config:dpdk-init=true",
                "other_config:dpdk-lcore-mask=0x1",
                &pmd_mask,
                "other_config:dpdk-socket-mem=512",
                "other_config:dpdk-socket-limit=512",
                &format!("other_config:dpdk-extra=--file-prefix={PREFIX} --no-pci --in-memory"),
            ])
        });
        if let Err(e) = configured {
            db.stop();
            return Err(e);
        }
        let mut vswitchd = Command::new("taskset");
        vswitchd
            .args(["-c", "0", VSWITCHD])
            .arg(format!("unix:{}", dir.join("db.sock").display()))
            .arg(format!(
                "--unixctl={}",
                dir.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                dir.join("ovs-vswitchd.log").display()
            ));
        env(&mut vswitchd);
        let vswitchd = match Proc::spawn("ovs-vswitchd", vswitchd, &logs.join("ovs-console.log")) {
            Ok(p) => p,
            Err(e) => {
                db.stop();
                return Err(e);
            }
        };
        let ovs = Self { ctl, db, vswitchd };
        if let Err(e) = ovs
            .vsctl(&[
                "--timeout=60",
                "wait-until",
                "Open_vSwitch",
                ".",
                "dpdk_initialized=true",
            ])
            .context("OVS did not initialise DPDK")
        {
            ovs.stop();
            return Err(e);
        }
        Ok(ovs)
    }

    /// Whether both daemons still run.
    pub fn alive(&mut self) -> bool {
        self.db.alive() && self.vswitchd.alive()
    }

    /// `ovs-vsctl` against this instance.
    pub fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ctl.vsctl(args)
    }

    /// `ovs-ofctl` against this instance's bridges.
    pub fn ofctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ctl.ofctl(args)
    }

    /// `ovs-appctl` to this vswitchd.
    pub fn appctl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.ctl.appctl(args)
    }

    /// Adds a userspace-datapath (DPDK) bridge, `extra` being more `bridge` settings;
    /// it starts with OVS's default flow (normal switching).
    pub fn add_netdev_bridge(&self, name: &str, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = vec![
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=netdev",
        ];
        args.extend_from_slice(extra);
        self.vsctl(&args)?;
        Ok(())
    }

    fn add_bridge(&self, name: &str, extra: &[&str]) -> anyhow::Result<()> {
        self.add_netdev_bridge(name, extra)?;
        self.ofctl(&["del-flows", name])?;
        Ok(())
    }

    fn add_port(
        &self,
        bridge: &str,
        port: &str,
        ofport: u16,
        kind: PortKind,
        mtu: bool,
    ) -> anyhow::Result<()> {
        let ofport = format!("ofport_request={ofport}");
        let mut args = vec!["add-port", bridge, port, "--", "set", "Interface", port];
        let (kind, option) = match kind {
            PortKind::Dpdk(devargs) => ("type=dpdk", format!("options:dpdk-devargs=\"{devargs}\"")),
            PortKind::VhostClient(path) => (
                "type=dpdkvhostuserclient",
                format!("options:vhost-server-path={}", path.display()),
            ),
        };
        args.extend([kind, option.as_str()]);
        args.push(&ofport);
        if mtu {
            args.push("mtu_request=2000");
        }
        self.vsctl(&args)?;
        Ok(())
    }

    fn flow(&self, bridge: &str, flow: &str) -> anyhow::Result<()> {
        self.ofctl(&["add-flow", bridge, flow])?;
        Ok(())
    }

    /// Sets up bridges, ports and flows for `setup`'s scenario. The input port is added
    /// last: a pcap port replays from the moment it exists, and the first upcalls must
    /// see the whole setup (the shared harness's lesson: stale ukeys otherwise).
    pub fn configure(&self, setup: &Setup<'_>) -> anyhow::Result<Ports> {
        let jumbo = setup.scenario.needs_jumbo(setup.size);
        let (vhu0, vhu1) = setup.sockets();
        let (input, output, sink, vhost) = match setup.topology {
            Topology::Replay => (
                PortKind::Dpdk(format!(
                    "net_pcap1,rx_pcap={},infinite_rx=1",
                    setup.pcap.display()
                )),
                PortKind::Dpdk("net_null1,no-rx=1".to_owned()),
                "net_null1".to_owned(),
                None,
            ),
            Topology::Pvp => {
                let _ = std::fs::remove_file(&vhu0);
                let _ = std::fs::remove_file(&vhu1);
                (
                    PortKind::VhostClient(vhu0.clone()),
                    PortKind::VhostClient(vhu1.clone()),
                    String::new(),
                    Some((vhu0.clone(), vhu1.clone())),
                )
            }
        };
        let input_bridge = match setup.scenario.name {
            "gre-encap" => {
                self.tunnel_bridges(&template::GRE_KEY.to_string())?;
                self.add_port("tb-br-phy", "out0", 1, output, jumbo)?;
                self.flow("tb-br-int", "in_port=1,actions=output:2")?;
                self.flow("tb-br-phy", "in_port=LOCAL,actions=output:1")?;
                self.tunnel_underlay()?;
                "tb-br-int"
            }
            "gre-decap" | "gre-many" => {
                let many = setup.scenario.name == "gre-many";
                // gre-many: the tunnel port takes every key, the flows tell tenants apart.
                let key = if many {
                    "flow".to_owned()
                } else {
                    template::GRE_KEY.to_string()
                };
                self.tunnel_bridges(&key)?;
                self.add_port("tb-br-int", "out0", 1, output, jumbo)?;
                self.flow("tb-br-phy", "in_port=1,actions=output:LOCAL")?;
                if many {
                    let spec = setup.scenario.spec(setup.size, setup.flows);
                    self.many_tenant_flows("tb-br-int", &spec, true)?;
                } else {
                    self.flow("tb-br-int", "in_port=2,actions=output:1")?;
                }
                self.tunnel_underlay()?;
                "tb-br-phy"
            }
            _ => {
                self.add_bridge("tb-br0", &[])?;
                self.add_port("tb-br0", "out0", 2, output, jumbo)?;
                self.single_bridge_flows(setup)?;
                "tb-br0"
            }
        };
        self.add_port(input_bridge, "in0", 1, input, jumbo)?;
        Ok(Ports { sink, vhost })
    }

    fn single_bridge_flows(&self, setup: &Setup<'_>) -> anyhow::Result<()> {
        let br = "tb-br0";
        let scenario = setup.scenario;
        let spec = scenario.spec(setup.size, setup.flows);
        match scenario.name {
            "xconnect" => self.flow(br, "in_port=1,actions=output:2"),
            "l2" => {
                self.flow(br, "actions=NORMAL")?;
                // The sink never sends, so its MACs cannot be learned; unknown unicast
                // would be flooded to the bridge's tap too. Static entries, as a user
                // would add for known containers.
                for mac in template::dst_macs(spec.macs) {
                    self.appctl(&["fdb/add", br, "out0", "0", &MacText(mac).to_string()])?;
                }
                Ok(())
            }
            "vlan" => self.flow(
                br,
                &format!(
                    "in_port=1,dl_vlan=0xffff,actions=mod_vlan_vid:{},output:2",
                    template::VLAN_ID
                ),
            ),
            "vlan-pop" => self.flow(
                br,
                &format!(
                    "in_port=1,dl_vlan={},actions=strip_vlan,output:2",
                    template::VLAN_ID
                ),
            ),
            "route" => {
                self.flow(
                    br,
                    "table=0,priority=10,in_port=1,ip,dl_dst=02:00:00:00:00:00/ff:ff:ff:ff:00:00,actions=goto_table:1",
                )?;
                for (i, (prefix, mac)) in scenario::ROUTES.iter().enumerate() {
                    self.flow(
                        br,
                        &format!(
                            "table=1,priority={},ip,nw_dst={prefix},actions=dec_ttl,mod_dl_src:{},mod_dl_dst:{mac},output:2",
                            16 + i,
                            scenario::ROUTER_MAC
                        ),
                    )?;
                }
                Ok(())
            }
            "snat" => self.snat_flows(br),
            "l2-many" | "l2-million" => self.many_tenant_flows(br, &spec, false),
            other => bail!("no OVS setup for scenario {other}"),
        }
    }

    /// Source NAT through the userspace conntrack, in one stage: every packet is
    /// committed with the translation to 198.18.0.1 (tenet's SNAT address in its config)
    /// and recirculated once; TTL and MACs as in routing. One-way UDP never becomes
    /// `+est`, so the second pass matches `+trk` (a two-stage `+new`/`+est` split costs a
    /// third pass per packet).
    fn snat_flows(&self, br: &str) -> anyhow::Result<()> {
        self.flow(
            br,
            "table=0,priority=100,in_port=1,ip,dl_dst=02:00:00:00:00:00/ff:ff:ff:ff:00:00,actions=ct(commit,zone=1,nat(src=198.18.0.1:1024-65535),table=1)",
        )?;
        self.flow(
            br,
            &format!(
                "table=1,priority=100,ip,ct_state=+trk,ct_zone=1,actions=dec_ttl,mod_dl_src:{},mod_dl_dst:{},output:2",
                scenario::ROUTER_MAC,
                scenario::ROUTES[0].1
            ),
        )?;
        Ok(())
    }

    /// Tenants as VLANs on a trunk: one exact-match rule per (VLAN, MAC), tag kept as
    /// tenet's trunk-to-trunk keeps it, installed from a file in one bundle (a
    /// `fdb/add` each would take a quarter of an hour, unbundled flow-mods minutes).
    /// `tunnelled` (gre-many): per (GRE key, MAC) from the tunnel port, tagged with the
    /// tenant's VLAN on the way out, as tenet's decapsulation to a trunk does.
    fn many_tenant_flows(
        &self,
        br: &str,
        spec: &template::Spec,
        tunnelled: bool,
    ) -> anyhow::Result<()> {
        let mut text = String::from("priority=0,actions=drop\n");
        for i in 0..spec.flows {
            let tenant = i % spec.tenants;
            let mac = template::tenant_mac(tenant, (i / spec.tenants) % spec.macs.max(1));
            let vlan = template::tenant_vlan(tenant);
            text.push_str(&if tunnelled {
                format!(
                    "priority=10,in_port=2,tun_id={},dl_dst={},actions=mod_vlan_vid:{vlan},output:1\n",
                    template::tenant_id(tenant),
                    MacText(mac)
                )
            } else {
                format!(
                    "priority=10,in_port=1,dl_vlan={vlan},dl_dst={},actions=output:2\n",
                    MacText(mac)
                )
            });
        }
        let file = self.ctl.dir.join("many-tenants.flows");
        std::fs::write(&file, text)?;
        self.ofctl(&["--bundle", "add-flows", br, &file.to_string_lossy()])?;
        Ok(())
    }

    /// The integration bridge with a GRE port to the remote host taking `key` (a
    /// number, or `flow`: any, matched as `tun_id`), and the physical one.
    fn tunnel_bridges(&self, key: &str) -> anyhow::Result<()> {
        self.add_bridge("tb-br-int", &[])?;
        let hwaddr = format!("other_config:hwaddr={}", MacText(template::GRE_LOCAL_MAC));
        self.add_bridge("tb-br-phy", &[&hwaddr])?;
        self.vsctl(&[
            "add-port",
            "tb-br-int",
            "gre0",
            "--",
            "set",
            "Interface",
            "gre0",
            "type=gre",
            "ofport_request=2",
            &format!("options:remote_ip={}", template::GRE_REMOTE_IP),
            &format!("options:local_ip={}", template::GRE_LOCAL_IP),
            &format!("options:key={key}"),
        ])?;
        Ok(())
    }

    /// The tunnel endpoint IP on br-phy's tap and a static neighbour for the remote;
    /// waits until OVS routes the remote through br-phy.
    fn tunnel_underlay(&self) -> anyhow::Result<()> {
        let _ = process::run("sysctl", &["-qw", "net.ipv6.conf.tb-br-phy.disable_ipv6=1"]);
        process::run(
            "ip",
            &[
                "addr",
                "replace",
                &format!("{}/24", template::GRE_LOCAL_IP),
                "dev",
                "tb-br-phy",
            ],
        )?;
        process::run("ip", &["link", "set", "tb-br-phy", "up"])?;
        self.appctl(&[
            "tnl/neigh/set",
            "tb-br-phy",
            &template::GRE_REMOTE_IP.to_string(),
            &MacText(template::GRE_REMOTE_MAC).to_string(),
        ])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self
                .appctl(&["ovs/route/show"])?
                .contains("198.19.255.0/24 dev tb-br-phy")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("OVS did not learn the route to the tunnel's remote through tb-br-phy")
    }

    /// Deletes the bridges (their taps would outlive vswitchd) and stops both daemons.
    pub fn stop(mut self) {
        if self.vswitchd.alive() {
            if let Ok(list) = self.vsctl(&["--timeout=5", "list-br"]) {
                for br in list.lines() {
                    let _ = self.vsctl(&["--timeout=5", "del-br", br]);
                }
            }
        }
        if let Ok(log) = std::fs::read_to_string(self.ctl.dir.join("ovs-vswitchd.log")) {
            let console = self.vswitchd.log_path().to_owned();
            let _ = std::fs::OpenOptions::new()
                .append(true)
                .open(console)
                .and_then(|mut f| std::io::Write::write_all(&mut f, log.as_bytes()));
        }
        self.vswitchd.stop();
        self.db.stop();
        remove_taps();
        let _ = std::fs::remove_dir_all(&self.ctl.dir);
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(PREFIX));
    }
}

enum PortKind {
    Dpdk(String),
    VhostClient(PathBuf),
}

/// Taps OVS made for bridges of an earlier run that ended without deleting them.
fn remove_taps() {
    for dev in BRIDGES {
        if std::path::Path::new("/sys/class/net").join(dev).exists() {
            let _ = process::run("ip", &["link", "del", dev]);
        }
    }
}

/// "avg processing cycles per packet" from `dpif-netdev/pmd-stats-show`.
pub fn cycles_per_packet(stats: &str) -> Option<f64> {
    stats.lines().find_map(|line| {
        let (_, rest) = line.split_once("avg processing cycles per packet:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Whether the datapath flows hold the action the scenario is about (the shared
/// harness's check): one output and no flood, a tag pushed or popped, a tunnel header
/// pushed or popped, the TTL lowered, a NAT.
pub fn check(scenario: &Scenario, flows: &str) -> (bool, String) {
    let ok = match scenario.name {
        _ if flows.trim().is_empty() => false,
        // Exactly one output action: no flood to several ports (`-m` names the port).
        "xconnect" | "l2" | "l2-many" | "l2-million" => flows.lines().any(|l| {
            l.rsplit_once("actions:").is_some_and(|(_, a)| {
                let a = a.split(", dp-extra-info").next().unwrap_or(a).trim();
                !a.is_empty() && a != "drop" && !a.contains(',')
            })
        }),
        "vlan" => flows.contains("push_vlan(vid=100"),
        "vlan-pop" => flows.contains("pop_vlan"),
        "gre-encap" => flows.contains("tnl_push(tnl_port"),
        "gre-decap" | "gre-many" => flows.contains("tnl_pop("),
        "route" => flows.contains("ttl=63"),
        "snat" => flows.contains("ct(") && flows.contains("nat"),
        _ => false,
    };
    let note = if ok {
        String::new()
    } else {
        format!("the datapath flows lack the {} action", scenario.name)
    };
    (ok, note)
}
