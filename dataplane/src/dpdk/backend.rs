//! Port backends in the user's words, turned into DPDK device arguments. A config says
//! `af-packet` on `veth-c1`; DPDK wants `net_af_packet0,iface=veth-c1,qpairs=1`.

use std::collections::HashMap;
use std::path::PathBuf;

/// How a bond spreads traffic over its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    /// One member carries everything; the next takes over when its link drops.
    ActiveBackup,
    /// Flows are spread over all members by an L3/L4 hash.
    Balance,
}

/// Where a port's packets come from and go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Discards what it is sent; optionally generates frames of `packet_size` bytes.
    Null {
        /// Whether the port produces frames (a source) or only sinks them.
        rx: bool,
        /// Size of generated frames.
        packet_size: Option<u32>,
    },
    /// A DPDK ring pair that loops what is sent back to the receive side.
    Ring,
    /// A kernel tap interface.
    Tap {
        /// Name of the tap interface to create.
        interface: String,
    },
    /// Frames from/to pcap files.
    Pcap {
        /// File replayed as received frames.
        rx_file: Option<PathBuf>,
        /// File transmitted frames are written to.
        tx_file: Option<PathBuf>,
        /// Replay `rx_file` forever instead of once.
        repeat: bool,
    },
    /// A kernel interface (a veth whose peer is in a container) via PACKET_MMAP.
    AfPacket {
        /// The host-side interface.
        interface: String,
    },
    /// A kernel interface via AF_XDP sockets.
    AfXdp {
        /// The host-side interface.
        interface: String,
        /// First queue of the interface to bind.
        queue: u32,
    },
    /// A vhost-user socket to a VM or a DPDK container (virtio-user).
    VhostUser {
        /// Socket path.
        path: PathBuf,
        /// Connect to the peer's socket (reconnecting when it restarts) instead of
        /// listening on ours.
        client: bool,
    },
    /// An SR-IOV virtual function (or any PCI NIC), by PCI address.
    Vf {
        /// `0000:3b:02.0`.
        pci: String,
    },
    /// Several ports bonded into one (typically VFs on two NICs).
    Bond {
        /// Spreading policy.
        mode: BondMode,
        /// The members, each itself a backend.
        members: Vec<Backend>,
    },
}

/// Gives each virtual device a unique name per driver (`net_null0`, `net_null1`, ...).
#[derive(Debug, Default)]
pub struct DeviceNamer {
    next: HashMap<&'static str, u32>,
}

impl DeviceNamer {
    fn name(&mut self, driver: &'static str) -> String {
        let n = self.next.entry(driver).or_insert(0);
        let name = format!("{driver}{n}");
        *n += 1;
        name
    }
}

impl Backend {
    /// The existing kernel interface the port serves (a container's veth), if any:
    /// its disappearance takes the port down.
    pub fn kernel_interface(&self) -> Option<&str> {
        match self {
            Backend::AfPacket { interface } | Backend::AfXdp { interface, .. } => Some(interface),
            _ => None,
        }
    }

    /// The user-facing name of the backend kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Null { .. } => "null",
            Backend::Ring => "ring",
            Backend::Tap { .. } => "tap",
            Backend::Pcap { .. } => "pcap",
            Backend::AfPacket { .. } => "af-packet",
            Backend::AfXdp { .. } => "af-xdp",
            Backend::VhostUser { .. } => "vhost-user",
            Backend::Vf { .. } => "vf",
            Backend::Bond { .. } => "bond",
        }
    }

    /// Whether the port can ever receive. Ports that cannot (a sink, a record-only
    /// pcap) are not polled, which saves a driver call per loop.
    pub fn receives(&self) -> bool {
        match self {
            Backend::Null { rx, .. } => *rx,
            Backend::Pcap { rx_file, .. } => rx_file.is_some(),
            _ => true,
        }
    }

    /// DPDK devices the backend takes, bond members included. A plain af-packet port
    /// takes none: tenet serves the interface through its own packet sockets.
    pub fn dpdk_devices(&self) -> usize {
        match self {
            Backend::AfPacket { .. } => 0,
            Backend::Bond { members, .. } => {
                1 + members
                    .iter()
                    .map(|m| m.dpdk_devices().max(1))
                    .sum::<usize>()
            }
            _ => 1,
        }
    }

    /// The DPDK driver plugin files this backend needs (PCI NIC drivers vary by card and
    /// are not listed).
    pub fn driver_files(&self) -> Vec<&'static str> {
        match self {
            Backend::Null { .. } => vec!["librte_net_null.so"],
            Backend::Ring => vec!["librte_net_ring.so"],
            Backend::Tap { .. } => vec!["librte_net_tap.so"],
            Backend::Pcap { .. } => vec!["librte_net_pcap.so"],
            Backend::AfPacket { .. } => vec!["librte_net_af_packet.so"],
            Backend::AfXdp { .. } => vec!["librte_net_af_xdp.so"],
            Backend::VhostUser { .. } => vec!["librte_net_vhost.so"],
            Backend::Vf { .. } => Vec::new(),
            Backend::Bond { members, .. } => {
                let mut files = vec!["librte_net_bond.so"];
                files.extend(members.iter().flat_map(Backend::driver_files));
                files
            }
        }
    }

    /// PCI addresses the EAL must be allowed to probe for this backend.
    pub fn pci_addresses(&self) -> Vec<String> {
        match self {
            Backend::Vf { pci } => vec![pci.clone()],
            Backend::Bond { members, .. } => {
                members.iter().flat_map(Backend::pci_addresses).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Device arguments to attach, in order: bond members first, the port itself last.
    pub fn devargs(&self, queues: u16, namer: &mut DeviceNamer) -> Vec<String> {
        let queues = queues.max(1);
        let own = match self {
            Backend::Null { rx, packet_size } => {
                let mut args = namer.name("net_null");
                if !rx {
                    args.push_str(",no-rx=1");
                }
                if let Some(size) = packet_size {
                    args.push_str(&format!(",size={size}"));
                }
                args
            }
            Backend::Ring => namer.name("net_ring"),
            Backend::Tap { interface } => format!("{},iface={interface}", namer.name("net_tap")),
            Backend::Pcap {
                rx_file,
                tx_file,
                repeat,
            } => {
                let mut args = namer.name("net_pcap");
                // The PMD makes one RX queue per file argument: each replays the file.
                if let Some(rx) = rx_file {
                    for _ in 0..queues {
                        args.push_str(&format!(",rx_pcap={}", rx.display()));
                    }
                    if *repeat {
                        args.push_str(",infinite_rx=1");
                    }
                }
                // One writer per file (the config refuses more queues with a tx_file).
                if let Some(tx) = tx_file {
                    args.push_str(&format!(",tx_pcap={}", tx.display()));
                }
                args
            }
            Backend::AfPacket { interface } => {
                format!(
                    "{},iface={interface},qpairs={queues}",
                    namer.name("net_af_packet")
                )
            }
            Backend::AfXdp { interface, queue } => format!(
                "{},iface={interface},start_queue={queue},queue_count={queues}",
                namer.name("net_af_xdp")
            ),
            // No `tso=1`: it offers TCP/IPv6 segmentation with TCP/IPv4, which tenet
            // cannot cut; the port offers TCP/IPv4 alone once the PMD has registered the
            // socket (Port::configure).
            Backend::VhostUser { path, client } => format!(
                "{},iface={},queues={queues},client={}",
                namer.name("net_vhost"),
                path.display(),
                u8::from(*client)
            ),
            Backend::Vf { pci } => pci.clone(),
            Backend::Bond { mode, members } => {
                let mut all: Vec<String> = Vec::new();
                let mut member_names = Vec::new();
                for member in members {
                    let member_args = member.devargs(queues, namer);
                    if let Some(last) = member_args.last() {
                        member_names.push(last.split(',').next().unwrap_or(last).to_owned());
                    }
                    all.extend(member_args);
                }
                let mut args = namer.name("net_bonding");
                match mode {
                    BondMode::ActiveBackup => args.push_str(",mode=1"),
                    BondMode::Balance => args.push_str(",mode=2,xmit_policy=l34"),
                }
                for name in &member_names {
                    args.push_str(&format!(",slave={name}"));
                }
                all.push(args);
                return all;
            }
        };
        vec![own]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_count_per_driver() {
        let mut namer = DeviceNamer::default();
        let sink = Backend::Null {
            rx: false,
            packet_size: None,
        };
        assert_eq!(sink.devargs(1, &mut namer), vec!["net_null0,no-rx=1"]);
        assert_eq!(sink.devargs(1, &mut namer), vec!["net_null1,no-rx=1"]);
        let veth = Backend::AfPacket {
            interface: "veth-a".into(),
        };
        assert_eq!(
            veth.devargs(2, &mut namer),
            vec!["net_af_packet0,iface=veth-a,qpairs=2"]
        );
    }

    #[test]
    fn pcap_replay_and_vhost_client() {
        let mut namer = DeviceNamer::default();
        let replay = Backend::Pcap {
            rx_file: Some("/tmp/a.pcap".into()),
            tx_file: None,
            repeat: true,
        };
        assert_eq!(
            replay.devargs(1, &mut namer),
            vec!["net_pcap0,rx_pcap=/tmp/a.pcap,infinite_rx=1"]
        );
        // A queue per worker: each replays the same file.
        assert_eq!(
            replay.devargs(2, &mut namer),
            vec!["net_pcap1,rx_pcap=/tmp/a.pcap,rx_pcap=/tmp/a.pcap,infinite_rx=1"]
        );
        let vhost = Backend::VhostUser {
            path: "/tmp/v.sock".into(),
            client: true,
        };
        assert_eq!(
            vhost.devargs(1, &mut namer),
            vec!["net_vhost0,iface=/tmp/v.sock,queues=1,client=1"]
        );
    }

    #[test]
    fn bond_lists_members_before_itself() {
        let mut namer = DeviceNamer::default();
        let bond = Backend::Bond {
            mode: BondMode::ActiveBackup,
            members: vec![
                Backend::Vf {
                    pci: "0000:3b:02.0".into(),
                },
                Backend::Vf {
                    pci: "0000:5e:02.0".into(),
                },
            ],
        };
        assert_eq!(
            bond.devargs(1, &mut namer),
            vec![
                "0000:3b:02.0",
                "0000:5e:02.0",
                "net_bonding0,mode=1,slave=0000:3b:02.0,slave=0000:5e:02.0"
            ]
        );
        assert_eq!(bond.pci_addresses(), vec!["0000:3b:02.0", "0000:5e:02.0"]);
    }
}
