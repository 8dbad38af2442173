//! Ethernet ports: attach by devargs (hotplug) or open a kernel interface, configure
//! queues, start, stop, read counters, detach. A port's queues are handed out as values so that exactly one
//! worker polls each RX queue and transmits on each TX queue.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::error::DpdkError;
use super::mbuf::{Mbuf, MbufBatch, RX_L4_CKSUM_MASK, RX_L4_CKSUM_NONE, RX_LRO};
use super::mempool::Mempool;
use super::rss::{self, RssState};
use crate::kernel::{PacketPort, PacketRx, PacketTx};
use crate::packet::checksum;
use crate::packet::gso::{self, L4Checksum, Layout};
use crate::packet::ipv4::{IpProtocol, Ipv4Packet};
use crate::packet::tcp::{self, TcpPacket, FLAG_CWR};
use crate::packet::udp;

/// How to set a port up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    /// RX and TX queue pairs.
    pub queues: u16,
    /// RX ring size per queue (rounded to what the device accepts).
    pub rx_descriptors: u16,
    /// TX ring size per queue (rounded to what the device accepts).
    pub tx_descriptors: u16,
    /// MTU to set, if any (devices that cannot change it keep theirs, with a warning).
    pub mtu: Option<u16>,
    /// Hand large TCP/IPv4 segments to the device whole (TSO) when it advertises TCP
    /// segmentation, as a VF does. Off unless asked: TX offloads take some NICs off
    /// their vector TX paths, and every frame pays for that.
    pub tso: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu: None,
            tso: false,
        }
    }
}

/// Link state as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
}

/// The device's basic counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Packets the device dropped because its RX ring was full.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
    /// Large TCP segments (GSO) received whole.
    pub rx_large: u64,
    /// Large TCP segments transmitted: handed on whole, or cut by tenet.
    pub tx_large: u64,
}

/// What tenet itself counts on a DPDK device's queue (the device counts the rest).
/// Each field has one writer, the worker owning the queue end; all are cold paths.
#[derive(Default)]
struct QueueCounters {
    rx_large: AtomicU64,
    /// Frames the device handed over that tenet dropped: a chain no buffer holds, a
    /// large segment tenet cannot cut, a checksum it cannot finish.
    rx_dropped: AtomicU64,
    tx_large: AtomicU64,
}

impl QueueCounters {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// An attached Ethernet device, or a kernel interface tenet serves itself.
pub struct Port {
    id: u16,
    name: String,
    bus: &'static str,
    started: bool,
    /// Devices bonded under this one: detached after it.
    members: Vec<Port>,
    /// Set for a kernel interface behind packet sockets: no DPDK device then.
    packet: Option<PacketPort>,
    /// Set for a vhost-user device (`net_vhost`): its socket and its guest.
    vhost: Option<Vhost>,
    /// Per queue, what tenet counts beside the device (set by configure).
    counters: Vec<Arc<QueueCounters>>,
}

impl Port {
    /// Attaches a device by its devargs (`net_null0,no-rx=1`, `0000:3b:02.0`), probing
    /// it through EAL hotplug unless the EAL already probed it at init (PCI allow-list).
    pub fn attach(devargs: &str) -> Result<Self, DpdkError> {
        let name = devargs.split(',').next().unwrap_or(devargs).to_owned();
        let bus = if name.starts_with("net_") {
            "vdev"
        } else {
            "pci"
        };
        if let Some(id) = port_by_name(&name) {
            return Ok(Self::new(id, name, bus, devargs));
        }
        let c_args = CString::new(devargs)
            .map_err(|_| DpdkError::invalid("rte_dev_probe", devargs, "NUL in devargs"))?;
        // SAFETY: c_args is a valid C string for the call; DPDK copies what it keeps.
        let ret = unsafe { dpdk_sys::rte_dev_probe(c_args.as_ptr()) };
        if ret < 0 {
            return Err(DpdkError::new("rte_dev_probe", devargs, ret));
        }
        let id = port_by_name(&name).ok_or_else(|| {
            DpdkError::invalid(
                "rte_eth_dev_get_port_by_name",
                &name,
                "device probed but no Ethernet port appeared",
            )
        })?;
        Ok(Self::new(id, name, bus, devargs))
    }

    /// Opens kernel interface `interface` (a container's veth) through tenet's own
    /// packet sockets: it takes a port id above DPDK's and no DPDK device.
    pub fn open_interface(interface: &str) -> Result<Self, DpdkError> {
        let packet = PacketPort::open(interface)?;
        Ok(Self {
            id: packet.id(),
            name: format!("packet:{}", packet.interface()),
            bus: "",
            started: false,
            members: Vec::new(),
            packet: Some(packet),
            vhost: None,
            counters: Vec::new(),
        })
    }

    fn new(id: u16, name: String, bus: &'static str, devargs: &str) -> Self {
        Self {
            id,
            vhost: Vhost::from_devargs(id, &name, devargs),
            name,
            bus,
            started: false,
            members: Vec::new(),
            packet: None,
            counters: Vec::new(),
        }
    }

    /// Whether the port is a DPDK device (it holds one of DPDK's port slots).
    pub fn is_dpdk(&self) -> bool {
        self.packet.is_none()
    }

    /// Ties member devices (of a bond) to this port: they are detached after it.
    pub fn adopt_members(&mut self, members: Vec<Port>) {
        self.members.extend(members);
    }

    /// DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// DPDK device name (`net_null0`, a PCI address), or `packet:<interface>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Configures `config.queues` RX/TX queue pairs filled from `pool`, and returns them
    /// for workers to own. The port is left stopped; call [`Port::start`].
    pub fn configure(
        &mut self,
        config: &PortConfig,
        pool: &Mempool,
    ) -> Result<(Vec<RxQueue>, Vec<TxQueue>), DpdkError> {
        if self.started {
            return Err(DpdkError::invalid(
                "rte_eth_dev_configure",
                &self.name,
                "port is started; stop it first",
            ));
        }
        if let Some(packet) = self.packet.as_mut() {
            let queues = config.queues.max(1);
            let (rx, tx) = packet.configure(
                queues,
                config.rx_descriptors,
                config.tx_descriptors,
                config.mtu,
                pool,
            )?;
            let id = self.id;
            let rx = rx
                .into_iter()
                .zip(0..)
                .map(|(packet, queue)| RxQueue {
                    port: id,
                    queue,
                    packet: Some(packet),
                    guest: None,
                })
                .collect();
            let tx = tx
                .into_iter()
                .zip(0..)
                .map(|(packet, queue)| TxQueue {
                    port: id,
                    queue,
                    packet: Some(packet),
                    cutter: None,
                })
                .collect();
            return Ok((rx, tx));
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-parameter; the port id is valid while self lives.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) };
        if ret < 0 {
            return Err(DpdkError::new("rte_eth_dev_info_get", &self.name, ret));
        }
        let queues = config.queues.max(1);
        if queues > info.max_rx_queues || queues > info.max_tx_queues {
            return Err(DpdkError::invalid(
                "rte_eth_dev_configure",
                &self.name,
                &format!(
                    "{queues} queues asked, device has at most {} RX / {} TX",
                    info.max_rx_queues, info.max_tx_queues
                ),
            ));
        }
        let mut conf = dpdk_sys::rte_eth_conf::default();
        let rss_types = if queues > 1 {
            rss::hash_types(&info)
        } else {
            0
        };
        if rss_types != 0 {
            rss::request(&mut conf, rss_types);
        } else if queues > 1 {
            // A vhost-user guest or a kernel socket picks its queues itself; a NIC
            // without RSS delivers everything to queue 0.
            tracing::info!(
                port = %self.name,
                queues,
                "no receive-side scaling to set up: the device decides each packet's queue"
            );
        }
        // What ethdev's TSO request needs of a device: segmentation and both checksums.
        const TSO: u64 = dpdk_sys::TENET_ETH_TX_OFFLOAD_TCP_TSO
            | dpdk_sys::TENET_ETH_TX_OFFLOAD_TCP_CKSUM
            | dpdk_sys::TENET_ETH_TX_OFFLOAD_IPV4_CKSUM;
        let device_tso = config.tso && self.vhost.is_none() && info.tx_offload_capa & TSO == TSO;
        // DPDK 22.11's tap compares a TSO segment with its Ethernet header against the
        // MTU (tap's pmd_tx_burst) and refuses a full one: its segments are fitted 14
        // bytes short.
        let tso_margin = if device_tso && !info.driver_name.is_null() {
            // SAFETY: the driver name is a static C string the PMD owns.
            let driver = unsafe { CStr::from_ptr(info.driver_name) };
            if driver.to_bytes() == b"net_tap" {
                14
            } else {
                0
            }
        } else {
            0
        };
        if device_tso {
            conf.txmode.offloads = TSO;
        } else if config.tso && self.vhost.is_none() {
            tracing::warn!(port = %self.name, "the device does not advertise TCP segmentation: large segments are cut for it");
        }
        if let Some(vhost) = self.vhost.as_mut() {
            // Without these the PMD finishes every partial checksum a guest sends in
            // software (its rx_sw_csum), a large segment's too; tenet finishes only
            // those of frames that owe no segmentation (RxQueue::rx_burst). Only a PMD
            // in DPDK's compliant offload mode (tenet's: no legacy-ol-flags) offers them.
            conf.rxmode.offloads = info.rx_offload_capa
                & (dpdk_sys::TENET_ETH_RX_OFFLOAD_TCP_CKSUM
                    | dpdk_sys::TENET_ETH_RX_OFFLOAD_UDP_CKSUM);
            vhost.watch_guest(self.id, &self.name);
        }
        // SAFETY: conf is a zeroed (all defaults) configuration valid for every PMD,
        // with at most offloads the device advertised added.
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(self.id, queues, queues, &conf) };
        if ret < 0 {
            return Err(DpdkError::new("rte_eth_dev_configure", &self.name, ret));
        }
        if let Some(vhost) = &self.vhost {
            // The PMD registered the socket in rte_eth_dev_configure: its features
            // can be changed only now.
            vhost.offer_features(pool.large_pool().is_some(), &self.name);
        }
        let mut rxd = config.rx_descriptors;
        let mut txd = config.tx_descriptors;
        // SAFETY: both out-parameters are valid u16s owned by this frame.
        let ret =
            unsafe { dpdk_sys::rte_eth_dev_adjust_nb_rx_tx_desc(self.id, &mut rxd, &mut txd) };
        if ret < 0 {
            return Err(DpdkError::new(
                "rte_eth_dev_adjust_nb_rx_tx_desc",
                &self.name,
                ret,
            ));
        }
        // SAFETY: plain query on a valid port id.
        let socket = unsafe { dpdk_sys::rte_eth_dev_socket_id(self.id) };
        let socket = u32::try_from(socket).unwrap_or(dpdk_sys::SOCKET_ID_ANY as u32);
        for queue in 0..queues {
            // SAFETY: the port is configured and stopped; a null rxconf asks for the
            // device defaults; the pool outlives the port (daemon drop order).
            let ret = unsafe {
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.id,
                    queue,
                    rxd,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            if ret < 0 {
                return Err(DpdkError::new("rte_eth_rx_queue_setup", &self.name, ret));
            }
            // SAFETY: as above; a null txconf asks for the device defaults.
            let ret = unsafe {
                dpdk_sys::rte_eth_tx_queue_setup(self.id, queue, txd, socket, std::ptr::null())
            };
            if ret < 0 {
                return Err(DpdkError::new("rte_eth_tx_queue_setup", &self.name, ret));
            }
        }
        if rss_types != 0 {
            // A device that keeps its own key or table still spreads, less evenly or
            // not symmetrically: worth a warning, not a port.
            match rss::spread(self.id, &self.name, &info, rss_types, queues) {
                Ok(symmetric) => tracing::info!(
                    port = %self.name,
                    queues,
                    symmetric,
                    "receive-side scaling spreads flows over the queues"
                ),
                Err(e) => {
                    tracing::warn!(port = %self.name, error = %e, "keeping the device's RSS key and table")
                }
            }
        }
        if let Some(mtu) = config.mtu {
            // SAFETY: plain setter on a valid, stopped port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if ret < 0 {
                let err = DpdkError::new("rte_eth_dev_set_mtu", &self.name, ret);
                tracing::warn!(port = %self.name, mtu, error = %err, "keeping the device's MTU");
            }
        }
        self.counters = (0..queues)
            .map(|_| Arc::new(QueueCounters::default()))
            .collect();
        let guest = self.vhost.as_ref().map(|v| Arc::clone(&v.guest));
        let rx = (0..queues)
            .map(|queue| RxQueue {
                port: self.id,
                queue,
                packet: None,
                guest: guest.as_ref().map(|_| GuestRx {
                    large: pool.large_pool().map(Mempool::as_ptr),
                    counters: Arc::clone(&self.counters[usize::from(queue)]),
                }),
            })
            .collect();
        let mut mtu = 1500;
        // SAFETY: plain query on a valid port id into a live u16.
        if unsafe { dpdk_sys::rte_eth_dev_get_mtu(self.id, &mut mtu) } < 0 {
            mtu = 1500;
        }
        let tx = (0..queues)
            .map(|queue| TxQueue {
                port: self.id,
                queue,
                packet: None,
                cutter: Some(Cutter {
                    pool: pool.as_ptr(),
                    // Segments go into the pool's buffers: a jumbo MTU is cut to what
                    // one holds (with room for a tag).
                    max_len: (usize::from(mtu) + 14).min(pool.data_room() - 4) - tso_margin,
                    device_tso,
                    guest: guest.clone(),
                    counters: Arc::clone(&self.counters[usize::from(queue)]),
                }),
            })
            .collect();
        Ok((rx, tx))
    }

    /// How the device spreads received flows over its queues, read back from it; `None`
    /// for a kernel packet port (its socket fanout spreads them) or a device without
    /// receive-side scaling.
    pub fn rss(&self) -> Option<RssState> {
        if self.packet.is_some() {
            return None;
        }
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: info is a valid out-parameter; the port id is valid while self lives.
        if unsafe { dpdk_sys::rte_eth_dev_info_get(self.id, &mut info) } < 0
            || info.flow_type_rss_offloads == 0
        {
            return None;
        }
        rss::query(self.id, &info)
    }

    /// Starts the device (and enables promiscuous mode, which a switch port needs).
    pub fn start(&mut self) -> Result<(), DpdkError> {
        if let Some(packet) = &self.packet {
            packet.start()?;
            self.started = true;
            return Ok(());
        }
        // SAFETY: the port is configured; start is idempotent in DPDK.
        let ret = unsafe { dpdk_sys::rte_eth_dev_start(self.id) };
        if ret < 0 {
            return Err(DpdkError::new("rte_eth_dev_start", &self.name, ret));
        }
        self.started = true;
        if let Some(vhost) = &self.vhost {
            // A guest that connected before the start had no queues to show it on,
            // and the PMD raises no link event when they appear.
            vhost.guest.refresh();
        }
        // Some virtual devices have no promiscuous switch (and need none).
        // SAFETY: plain setter on a valid, started port.
        let _ = unsafe { dpdk_sys::rte_eth_promiscuous_enable(self.id) };
        Ok(())
    }

    /// Stops the device. Workers must no longer poll its queues.
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        if !self.started {
            return Ok(());
        }
        if self.packet.is_some() {
            self.started = false;
            return Ok(());
        }
        // SAFETY: valid port id; the caller guarantees no worker uses its queues.
        let ret = unsafe { dpdk_sys::rte_eth_dev_stop(self.id) };
        self.started = false;
        if ret < 0 {
            return Err(DpdkError::new("rte_eth_dev_stop", &self.name, ret));
        }
        Ok(())
    }

    /// Whether the guest now connected to this vhost-user port takes large TCP/IPv4
    /// segments whole (it negotiated GUEST_TSO4 and GUEST_CSUM); `None` for any other
    /// port. Others get them cut.
    pub fn guest_takes_large(&self) -> Option<bool> {
        self.vhost.as_ref().map(|vhost| vhost.guest.takes_tso())
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        if let Some(packet) = &self.packet {
            return packet.mac();
        }
        let mut addr = dpdk_sys::rte_ether_addr::default();
        // SAFETY: addr is a valid out-parameter.
        let ret = unsafe { dpdk_sys::rte_eth_macaddr_get(self.id, &mut addr) };
        if ret < 0 {
            return [0; 6];
        }
        addr.addr_bytes
    }

    /// In an active-backup bond, moves the traffic to a member whose link is up when
    /// the member carrying it is down; the move made, as (from, to) member devices.
    ///
    /// DPDK's bond fails over on link events, and some members never raise one to it:
    /// a tap updates its link from the kernel's notifications without telling anyone,
    /// and the bond polls only members that cannot report. tenet watches the members
    /// itself, as OVS watches its bonds' carriers.
    pub fn keep_bond_on_a_live_member(&self) -> Option<(String, String)> {
        if self.members.is_empty() {
            return None;
        }
        // SAFETY: plain queries on this bond's port id, valid while self lives.
        let (mode, primary) = unsafe {
            (
                dpdk_sys::rte_eth_bond_mode_get(self.id),
                dpdk_sys::rte_eth_bond_primary_get(self.id),
            )
        };
        if mode != dpdk_sys::BONDING_MODE_ACTIVE_BACKUP as i32 {
            return None;
        }
        let carrying = self.members.iter().find(|m| i32::from(m.id) == primary)?;
        if carrying.link().up {
            return None;
        }
        let live = self.members.iter().find(|m| m.link().up)?;
        // SAFETY: both ids are live ports: this bond and one of its members.
        let ret = unsafe { dpdk_sys::rte_eth_bond_primary_set(self.id, live.id) };
        (ret == 0).then(|| (carrying.name.clone(), live.name.clone()))
    }

    /// Link state, without waiting for negotiation.
    pub fn link(&self) -> LinkStatus {
        if let Some(packet) = &self.packet {
            return packet.link();
        }
        let mut link = dpdk_sys::rte_eth_link::default();
        // SAFETY: link is a valid out-parameter.
        let ret = unsafe { dpdk_sys::rte_eth_link_get_nowait(self.id, &mut link) };
        if ret < 0 {
            return LinkStatus {
                up: false,
                speed_mbps: 0,
            };
        }
        LinkStatus {
            up: u32::from(link.link_status()) == dpdk_sys::RTE_ETH_LINK_UP,
            speed_mbps: link.link_speed,
        }
    }

    /// The device's MTU (the largest IP packet it sends), if it reports one.
    pub fn mtu(&self) -> Option<u16> {
        if let Some(packet) = &self.packet {
            return packet.mtu().ok().and_then(|mtu| u16::try_from(mtu).ok());
        }
        let mut mtu = 0;
        // SAFETY: plain query on a valid port id into a live u16.
        (unsafe { dpdk_sys::rte_eth_dev_get_mtu(self.id, &mut mtu) } == 0).then_some(mtu)
    }

    /// The device's counters. Safe to read while workers run (values may be a burst old).
    pub fn stats(&self) -> PortStats {
        if let Some(packet) = &self.packet {
            return packet.stats();
        }
        let mut s = dpdk_sys::rte_eth_stats::default();
        // SAFETY: s is a valid out-parameter; PMDs read their counters without locks.
        let ret = unsafe { dpdk_sys::rte_eth_stats_get(self.id, &mut s) };
        if ret < 0 {
            return PortStats::default();
        }
        let mut stats = PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            ..PortStats::default()
        };
        for c in &self.counters {
            stats.rx_large += c.rx_large.load(Ordering::Relaxed);
            stats.rx_errors += c.rx_dropped.load(Ordering::Relaxed);
            stats.tx_large += c.tx_large.load(Ordering::Relaxed);
        }
        stats
    }

    /// The device's extended counters, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        if self.packet.is_some() {
            let s = self.stats();
            return Ok([
                ("rx_good_packets", s.rx_packets),
                ("tx_good_packets", s.tx_packets),
                ("rx_good_bytes", s.rx_bytes),
                ("tx_good_bytes", s.tx_bytes),
                ("rx_missed_errors", s.rx_missed),
                ("rx_errors", s.rx_errors),
                ("tx_errors", s.tx_errors),
                ("rx_mbuf_allocation_errors", s.rx_nombuf),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect());
        }
        // SAFETY: a null array with size 0 asks only for the count.
        let count = unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        if count < 0 {
            return Err(DpdkError::new(
                "rte_eth_xstats_get_names",
                &self.name,
                count,
            ));
        }
        let n = count as usize;
        let mut names = vec![dpdk_sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![dpdk_sys::rte_eth_xstat::default(); n];
        // SAFETY: both arrays hold n elements, the size passed.
        let got =
            unsafe { dpdk_sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        if got < 0 {
            return Err(DpdkError::new("rte_eth_xstats_get_names", &self.name, got));
        }
        // SAFETY: as above.
        let got_values =
            unsafe { dpdk_sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32) };
        if got_values < 0 {
            return Err(DpdkError::new("rte_eth_xstats_get", &self.name, got_values));
        }
        let len = (got.min(got_values) as usize).min(n);
        Ok(values[..len]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                Some((c_chars_to_string(&name.name), v.value))
            })
            .collect())
    }

    fn close(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(port = %self.name, error = %e, "stop failed");
        }
        if self.packet.take().is_some() {
            return;
        }
        if let Some(vhost) = self.vhost.as_mut() {
            vhost.unwatch_guest(self.id, &self.name);
        }
        // SAFETY: the port is stopped and no queue is in use; close frees its queues.
        let ret = unsafe { dpdk_sys::rte_eth_dev_close(self.id) };
        if ret < 0 {
            tracing::warn!(port = %self.name, error = %DpdkError::new("rte_eth_dev_close", &self.name, ret), "close failed");
        }
        let (Ok(bus), Ok(dev)) = (CString::new(self.bus), CString::new(self.name.as_str())) else {
            return;
        };
        // SAFETY: both are valid C strings; removing an already-closed device releases
        // its resources (vhost sockets, AF_XDP programs, tap interfaces).
        let ret = unsafe { dpdk_sys::rte_eal_hotplug_remove(bus.as_ptr(), dev.as_ptr()) };
        if ret < 0 && ret != -libc::ENOENT {
            tracing::warn!(port = %self.name, error = %DpdkError::new("rte_eal_hotplug_remove", &self.name, ret), "detach failed");
        }
    }

    /// Stops, closes and removes the device (and then its bond members).
    pub fn detach(self) {
        drop(self);
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.close();
        for member in self.members.drain(..) {
            drop(member);
        }
    }
}

fn port_by_name(name: &str) -> Option<u16> {
    let c_name = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: c_name is a valid C string and id a valid out-parameter.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut id) };
    (ret == 0).then_some(id)
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The name DPDK knows a port by.
pub fn port_name(id: u16) -> Option<String> {
    let mut buf = [0 as c_char; dpdk_sys::RTE_ETH_NAME_MAX_LEN as usize];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN bytes, the size DPDK writes at most.
    let ret = unsafe { dpdk_sys::rte_eth_dev_get_name_by_port(id, buf.as_mut_ptr()) };
    if ret < 0 {
        return None;
    }
    // SAFETY: DPDK wrote a NUL-terminated name into buf.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A vhost-user device's socket, and its guest as tenet's TX sees it.
struct Vhost {
    socket: CString,
    guest: Arc<Guest>,
    /// Whether the link-change callback is registered with `guest` as its argument
    /// (this Arc keeps it alive until the callback is gone).
    watching: bool,
}

/// Feature bit `bit` of virtio-net.
const fn feature(bit: u32) -> u64 {
    1 << bit
}

/// Kinds of large segment a guest could send that tenet cannot cut: TCP/IPv6 (the
/// segmenter does IPv4), UDP fragmentation, and VIRTIO_NET_F_GSO, which a Linux guest
/// takes as TCP/IPv4 and TCP/IPv6 segmentation both. The same kinds tenet-cni turns
/// off on an af-packet container's interface.
const UNCUTTABLE: u64 = feature(dpdk_sys::VIRTIO_NET_F_GSO)
    | feature(dpdk_sys::VIRTIO_NET_F_HOST_TSO6)
    | feature(dpdk_sys::VIRTIO_NET_F_HOST_UFO);

/// What a guest must have negotiated to be handed a large TCP/IPv4 segment whole.
const GUEST_TAKES_TSO: u64 =
    feature(dpdk_sys::VIRTIO_NET_F_GUEST_TSO4) | feature(dpdk_sys::VIRTIO_NET_F_GUEST_CSUM);

impl Vhost {
    /// The vhost-user side of a device attached by `devargs`, if it is one.
    fn from_devargs(id: u16, name: &str, devargs: &str) -> Option<Self> {
        if !name.starts_with("net_vhost") {
            return None;
        }
        let path = devargs
            .split(',')
            .find_map(|arg| arg.strip_prefix("iface="))?;
        Some(Self {
            socket: CString::new(path).ok()?,
            guest: Arc::new(Guest {
                port: id,
                takes_tso: AtomicBool::new(false),
                refreshing: Mutex::new(()),
            }),
            watching: false,
        })
    }

    /// Sets the virtio-net features the socket offers: TCP/IPv4 segmentation from the
    /// guest when large buffers can hold what it sends, none of the kinds tenet cannot
    /// cut. The PMD's `tso=1` devarg would offer TCP/IPv6 with TCP/IPv4 (one switch
    /// for both) and before this call could take either back; without it TCP/IPv4 is
    /// added here, so a guest that negotiates in between (tenet as client connects
    /// inside rte_eth_dev_configure) misses an offload rather than gaining one tenet
    /// cannot carry. VIRTIO_NET_F_GSO and HOST_UFO the PMD offers either way; a guest
    /// that got them first is named by [`Guest::refresh`].
    fn offer_features(&self, large: bool, name: &str) {
        let tso4 = feature(dpdk_sys::VIRTIO_NET_F_HOST_TSO4);
        let (on, off) = if large {
            (tso4, UNCUTTABLE)
        } else {
            (0, UNCUTTABLE | tso4)
        };
        // SAFETY: the socket path is a valid C string for the calls; the vhost library
        // looks the socket up under its own lock and only changes its feature mask.
        let ret = unsafe {
            let off = dpdk_sys::rte_vhost_driver_disable_features(self.socket.as_ptr(), off);
            let on = match on {
                0 => 0,
                on => dpdk_sys::rte_vhost_driver_enable_features(self.socket.as_ptr(), on),
            };
            off.min(on)
        };
        if ret < 0 {
            tracing::warn!(port = %name, "could not set the vhost-user socket's offloads");
        }
    }

    /// Registers the callback that keeps the guest's state current (the PMD raises a
    /// link event when a guest comes, after storing its features, and when it goes).
    fn watch_guest(&mut self, id: u16, name: &str) {
        if self.watching {
            return;
        }
        // SAFETY: the callback reads only the Guest behind its argument, which this
        // Vhost keeps alive until unwatch_guest has unregistered it (or forever).
        let ret = unsafe {
            dpdk_sys::rte_eth_dev_callback_register(
                id,
                dpdk_sys::RTE_ETH_EVENT_INTR_LSC,
                Some(on_link_change),
                Arc::as_ptr(&self.guest).cast_mut().cast(),
            )
        };
        self.watching = ret == 0;
        if !self.watching {
            let err = DpdkError::new("rte_eth_dev_callback_register", name, ret);
            tracing::warn!(port = %name, error = %err, "large segments to this guest will be cut");
        }
    }

    /// Unregisters the link-change callback, waiting out a call in progress; should
    /// that never end, the guest state is leaked rather than freed under it.
    fn unwatch_guest(&mut self, id: u16, name: &str) {
        if !self.watching {
            return;
        }
        for _ in 0..100 {
            // SAFETY: the same registration watch_guest made; DPDK refuses (-EAGAIN)
            // while the callback runs, so after success it never runs again.
            let ret = unsafe {
                dpdk_sys::rte_eth_dev_callback_unregister(
                    id,
                    dpdk_sys::RTE_ETH_EVENT_INTR_LSC,
                    Some(on_link_change),
                    Arc::as_ptr(&self.guest).cast_mut().cast(),
                )
            };
            if ret != -libc::EAGAIN {
                self.watching = false;
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        tracing::warn!(port = %name, "link-change callback still running; its state is leaked");
        std::mem::forget(Arc::clone(&self.guest));
        self.watching = false;
    }
}

/// What the guest of a vhost-user device negotiated, as far as TX is concerned.
struct Guest {
    port: u16,
    /// Whether the guest takes a large TCP/IPv4 segment whole (GUEST_TSO4 and
    /// GUEST_CSUM): read by the TX queues without a lock, written on link changes.
    takes_tso: AtomicBool,
    /// Makes each refresh's read and store one step: the PMD's event thread and the
    /// control plane (at start) both refresh, and a stale read stored last would keep
    /// a guest's state wrong until it reconnects.
    refreshing: Mutex<()>,
}

/// `rte_eth_vhost_get_vid_from_port_id`, which lives in the net_vhost plugin the EAL
/// loaded (not in a library tenet links): looked up there once.
type VidOf = unsafe extern "C" fn(u16) -> c_int;

fn vid_of() -> Option<VidOf> {
    static LOOKUP: std::sync::OnceLock<Option<VidOf>> = std::sync::OnceLock::new();
    *LOOKUP.get_or_init(|| {
        let path = CString::new(format!("{}/librte_net_vhost.so", dpdk_sys::PMD_DIR)).ok()?;
        // SAFETY: RTLD_NOLOAD only returns the handle of the plugin already loaded (a
        // reference never closed, so the symbol stays valid); nothing is loaded or run.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            tracing::warn!(plugin = %path.to_string_lossy(), "net_vhost plugin not loaded: large segments to guests will be cut");
            return None;
        }
        // SAFETY: handle is a live library handle and the name a C string literal.
        let symbol = unsafe { libc::dlsym(handle, c"rte_eth_vhost_get_vid_from_port_id".as_ptr()) };
        // SAFETY: the symbol is the function rte_eth_vhost.h declares as
        // `int rte_eth_vhost_get_vid_from_port_id(uint16_t port_id)`.
        (!symbol.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, VidOf>(symbol) })
    })
}

impl Guest {
    #[inline(always)]
    fn takes_tso(&self) -> bool {
        self.takes_tso.load(Ordering::Relaxed)
    }

    /// Reads what the guest now connected negotiated (nothing when none is).
    fn refresh(&self) {
        let _one_at_a_time = self
            .refreshing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let features = vid_of().and_then(|vid_of| {
            // SAFETY: a plain lookup by port id in the PMD's own list, under its lock.
            let vid = unsafe { vid_of(self.port) };
            let mut features = 0u64;
            // SAFETY: a lookup of a device id the vhost library validates; features is
            // a valid out-parameter.
            let ret = (vid >= 0).then(|| unsafe {
                dpdk_sys::rte_vhost_get_negotiated_features(vid, &mut features)
            });
            (ret == Some(0)).then_some(features)
        });
        let features = features.unwrap_or(0);
        self.takes_tso.store(
            features & GUEST_TAKES_TSO == GUEST_TAKES_TSO,
            Ordering::Relaxed,
        );
        if features & UNCUTTABLE != 0 {
            tracing::warn!(
                port = self.port,
                features = format_args!("{:#x}", features & UNCUTTABLE),
                "guest negotiated segmentation offloads before tenet withdrew them: such segments from it are dropped until it reconnects"
            );
        }
    }
}

/// The PMD's link-change event: a guest came or went.
extern "C" fn on_link_change(
    _port: u16,
    _event: dpdk_sys::rte_eth_event_type,
    guest: *mut c_void,
    _detail: *mut c_void,
) -> c_int {
    // SAFETY: the argument registered is a Guest its Vhost keeps alive for as long as
    // the registration lasts (see unwatch_guest).
    let guest = unsafe { &*guest.cast::<Guest>() };
    guest.refresh();
    0
}

/// One RX queue of a port. Not clonable: its owner is the only poller.
pub struct RxQueue {
    port: u16,
    queue: u16,
    packet: Option<PacketRx>,
    /// Set on a vhost-user device: what its guest's frames owe is taken at receive.
    guest: Option<GuestRx>,
}

/// Takes what a vhost-user guest's frames owe, as the vhost library reports it in
/// DPDK's compliant offload flags.
struct GuestRx {
    /// Where chains that no packet buffer holds are joined (none: they are dropped).
    large: Option<*mut dpdk_sys::rte_mempool>,
    counters: Arc<QueueCounters>,
}

// SAFETY: the pool is a thread-safe DPDK mempool that outlives every port (daemon
// drop order); the RX queue belongs to one worker at a time.
unsafe impl Send for GuestRx {}

impl GuestRx {
    /// Takes what the frames from `from` on owe; returns how many of them stay.
    #[cold]
    fn take_offloads(&self, batch: &mut MbufBatch, from: usize) -> usize {
        let (mut large, mut dropped) = (0, 0);
        let kept = batch.retain_from(from, |mbuf| {
            let taken = take_guest_offloads(mbuf, self.large);
            match &taken {
                Some(m) if m.gso_size() > 0 => large += 1,
                Some(_) => {}
                None => dropped += 1,
            }
            taken
        });
        QueueCounters::add(&self.counters.rx_large, large);
        QueueCounters::add(&self.counters.rx_dropped, dropped);
        kept
    }
}

/// Takes what a guest's frame owes: a chain becomes one segment (in a large buffer
/// when no packet buffer holds it), a large TCP segment keeps its segment size (its
/// checksum, partial, is ignored until egress makes it again), a partial checksum of
/// a frame that owes no segmentation is finished now, as on af-packet ports. `None`
/// (the frame freed) for what tenet cannot carry: a chain no buffer holds, a large
/// segment other than TCP/IPv4, a partial checksum of neither TCP nor UDP.
fn take_guest_offloads(mbuf: Mbuf, large: Option<*mut dpdk_sys::rte_mempool>) -> Option<Mbuf> {
    let (flags, size) = mbuf.rx_offloads();
    let mut mbuf = mbuf.into_one_segment(large)?;
    mbuf.clear_offloads();
    if flags & RX_LRO != 0 {
        if size == 0 || Layout::parse(mbuf.data()).is_err() {
            return None;
        }
        mbuf.set_gso_size(size);
    } else if flags & RX_L4_CKSUM_MASK == RX_L4_CKSUM_NONE {
        let (start, l4) = mbuf.l4_header()?;
        let offset = match l4 {
            dpdk_sys::RTE_PTYPE_L4_TCP => tcp::CHECKSUM_AT,
            dpdk_sys::RTE_PTYPE_L4_UDP => udp::CHECKSUM_AT,
            _ => return None,
        };
        if !gso::complete_checksum(mbuf.data_mut(), start, offset) {
            return None;
        }
    }
    Some(mbuf)
}

impl RxQueue {
    /// Port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Receives up to the batch's free room; returns how many arrived.
    #[inline(always)]
    pub fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        if let Some(packet) = self.packet.as_mut() {
            return packet.rx_burst(batch);
        }
        let start = batch.len();
        let (slots, room) = batch.spare_raw();
        // SAFETY: slots has `room` writable entries; this RxQueue is the only poller of
        // (port, queue), which DPDK requires; the port is started before workers run.
        let n = unsafe { dpdk_sys::tenet_eth_rx_burst(self.port, self.queue, slots, room) };
        batch.filled(usize::from(n));
        if let Some(guest) = &self.guest {
            if batch.any_chained_or_flagged(start, RX_LRO | RX_L4_CKSUM_MASK) {
                return guest.take_offloads(batch, start);
            }
        }
        usize::from(n)
    }
}

/// Whether the large segment `frame` (laid out as `layout`) can be handed on whole to
/// be cut at `mss`: plain TCP/IPv4 (the guest cannot undo GRE) that makes more than
/// one segment, without CWR (the vhost library never marks a segment ECN, so the
/// guest would copy CWR into every segment it cuts).
fn goes_whole(frame: &[u8], layout: &Layout, mss: usize) -> bool {
    layout.outer_ip_offset().is_none()
        && layout.segments(mss) > 1
        && TcpPacket::new_unchecked(&frame[layout.tcp_offset()..]).flags() & FLAG_CWR == 0
}

/// `large` as a frame asking the device for TSO at `mss`, its headers as ethdev asks:
/// the IPv4 total length of the whole packet (the pipeline may have kept the sender's
/// or a tunnel's), its checksum 0 for the device to fill, and the TCP checksum field
/// the pseudo-header sum without the length. The vhost library rewrites that field
/// the same way (rte_net_intel_cksum_prepare) before it builds the guest's header.
fn tso_request(large: &Mbuf, layout: &Layout, mss: usize) -> Mbuf {
    let mut whole = large.share();
    let (ip, tcp_at) = (layout.ip_offset(), layout.tcp_offset());
    let data = whole.data_mut();
    // Fits: one buffer holds at most 65,535 bytes.
    let total = (data.len() - ip) as u16;
    let mut header = Ipv4Packet::new_unchecked(&mut data[ip..tcp_at]);
    header.set_total_len(total);
    header.set_checksum(0);
    let pseudo =
        checksum::pseudo_header_v4(header.src_addr(), header.dst_addr(), IpProtocol::TCP, 0);
    TcpPacket::new_unchecked(&mut data[tcp_at..]).set_checksum(checksum::fold(pseudo));
    // Fits: fitted_mss is below the port's frame length.
    let mss = mss as u16;
    whole.request_tso(ip, tcp_at - ip, layout.header_len() - tcp_at, mss);
    whole
}

/// One TX queue of a port. Not clonable: its owner is the only transmitter.
pub struct TxQueue {
    port: u16,
    queue: u16,
    packet: Option<PacketTx>,
    /// How large TCP segments are cut for a device that cannot take them whole (a
    /// kernel interface's queue takes them itself).
    cutter: Option<Cutter>,
}

/// How far [`TxQueue::cut`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Every segment is in the batch.
    Done,
    /// The batch is full; go on from this segment once it is sent.
    More(usize),
    /// The frame cannot be cut (not TCP/IPv4, MTU too small, no buffer free).
    Failed,
}

/// Cuts large TCP segments for a DPDK device, into fresh buffers of the port's pool,
/// or hands them on whole to a device or vhost-user guest that takes them.
struct Cutter {
    pool: *mut dpdk_sys::rte_mempool,
    /// The MTU plus the Ethernet header.
    max_len: usize,
    /// The device takes TSO requests (configured with TX segmentation offload).
    device_tso: bool,
    /// The guest of a vhost-user device.
    guest: Option<Arc<Guest>>,
    counters: Arc<QueueCounters>,
}

// SAFETY: the pool is a thread-safe DPDK mempool that outlives every port (daemon
// drop order); the TX queue and its cutter belong to one worker at a time.
unsafe impl Send for Cutter {}

impl TxQueue {
    /// Port id.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Queue index.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Whether the device takes large TCP segments whole (kernel interfaces do, and
    /// cut what the kernel cannot take); others need [`TxQueue::cut`] first.
    #[inline(always)]
    pub fn takes_large(&self) -> bool {
        self.cutter.is_none()
    }

    /// Cuts segments `from..` of the large TCP segment `large` into frames this
    /// device takes (fresh buffers of its pool, full checksums), appended to `out` in
    /// order until it is full. A device configured for TSO, or a vhost-user guest that
    /// negotiated TCP/IPv4 segmentation, is handed a plain segment whole instead, as one
    /// frame asking for TSO: the NIC cuts it, or the vhost library turns the request
    /// into the guest's virtio-net header.
    #[cold]
    pub fn cut(&self, large: &Mbuf, from: usize, out: &mut MbufBatch) -> Cut {
        let Some(cutter) = &self.cutter else {
            return Cut::Failed;
        };
        let (layout, mss, whole) = {
            let data = large.data();
            let Ok(layout) = Layout::parse(data) else {
                return Cut::Failed;
            };
            let owed = usize::from(large.gso_size());
            let Some(mss) = layout.fitted_mss(data, owed, cutter.max_len) else {
                return Cut::Failed;
            };
            let whole = from == 0
                && (cutter.device_tso
                    || cutter.guest.as_ref().is_some_and(|guest| guest.takes_tso()))
                && goes_whole(data, &layout, mss);
            (layout, mss, whole)
        };
        if whole {
            if out.room() == 0 {
                return Cut::More(0);
            }
            // No view of `large` is held from here: the shared handle rewrites it.
            let _ = out.push(tso_request(large, &layout, mss));
            QueueCounters::add(&cutter.counters.tx_large, 1);
            return Cut::Done;
        }
        let data = large.data();
        let count = layout.segments(mss);
        for index in from..count {
            if out.room() == 0 {
                return Cut::More(index);
            }
            let Some(mut segment) = Mbuf::alloc_from(cutter.pool) else {
                return Cut::Failed;
            };
            let room = segment.tailroom();
            let written = segment.receive(room, self.port).and_then(|bytes| {
                layout.write_segment(data, mss, index, L4Checksum::Complete, bytes)
            });
            let Some(len) = written else {
                return Cut::Failed;
            };
            segment.truncate(len);
            let _ = out.push(segment);
        }
        QueueCounters::add(&cutter.counters.tx_large, 1);
        Cut::Done
    }

    /// Transmits the batch; what the device refused stays in the batch, in order.
    /// Returns how many were sent.
    #[inline(always)]
    pub fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        if let Some(packet) = self.packet.as_mut() {
            return packet.tx_burst(batch);
        }
        let len = batch.len() as u16;
        // SAFETY: the batch's first len pointers are owned mbufs; DPDK takes ownership
        // of the first n it returns, which consume_front then forgets. This TxQueue is
        // the only transmitter on (port, queue).
        let n =
            unsafe { dpdk_sys::tenet_eth_tx_burst(self.port, self.queue, batch.raw_ptr(), len) };
        batch.consume_front(usize::from(n));
        usize::from(n)
    }
}
