//! Ethernet ports: attach by devargs (hotplug) or open a kernel interface, configure
//! queues, start, stop, read counters, detach. A port's queues are handed out as values so that exactly one
//! worker polls each RX queue and transmits on each TX queue.

use std::ffi::{c_char, CStr, CString};

use super::error::DpdkError;
use super::mbuf::{Mbuf, MbufBatch};
use super::mempool::Mempool;
use crate::kernel::{PacketPort, PacketRx, PacketTx};
use crate::packet::gso::{L4Checksum, Layout};

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
}

impl Default for PortConfig {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            mtu: None,
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
            return Ok(Self::new(id, name, bus));
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
        Ok(Self::new(id, name, bus))
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
        })
    }

    fn new(id: u16, name: String, bus: &'static str) -> Self {
        Self {
            id,
            name,
            bus,
            started: false,
            members: Vec::new(),
            packet: None,
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
        let conf = dpdk_sys::rte_eth_conf::default();
        // SAFETY: conf is a zeroed (all defaults) configuration valid for every PMD.
        let ret = unsafe { dpdk_sys::rte_eth_dev_configure(self.id, queues, queues, &conf) };
        if ret < 0 {
            return Err(DpdkError::new("rte_eth_dev_configure", &self.name, ret));
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
        if let Some(mtu) = config.mtu {
            // SAFETY: plain setter on a valid, stopped port.
            let ret = unsafe { dpdk_sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if ret < 0 {
                let err = DpdkError::new("rte_eth_dev_set_mtu", &self.name, ret);
                tracing::warn!(port = %self.name, mtu, error = %err, "keeping the device's MTU");
            }
        }
        let rx = (0..queues)
            .map(|queue| RxQueue {
                port: self.id,
                queue,
                packet: None,
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
                    max_len: (usize::from(mtu) + 14).min(pool.data_room() - 4),
                }),
            })
            .collect();
        Ok((rx, tx))
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
        PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            // A DPDK device is handed no large segments: they are cut before it.
            ..PortStats::default()
        }
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

/// One RX queue of a port. Not clonable: its owner is the only poller.
pub struct RxQueue {
    port: u16,
    queue: u16,
    packet: Option<PacketRx>,
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
        let (slots, room) = batch.spare_raw();
        // SAFETY: slots has `room` writable entries; this RxQueue is the only poller of
        // (port, queue), which DPDK requires; the port is started before workers run.
        let n = unsafe { dpdk_sys::tenet_eth_rx_burst(self.port, self.queue, slots, room) };
        batch.filled(usize::from(n));
        usize::from(n)
    }
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

/// Cuts large TCP segments for a DPDK device, into fresh buffers of the port's pool.
struct Cutter {
    pool: *mut dpdk_sys::rte_mempool,
    /// The MTU plus the Ethernet header.
    max_len: usize,
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
    /// order until it is full.
    #[cold]
    pub fn cut(&self, large: &Mbuf, from: usize, out: &mut MbufBatch) -> Cut {
        let Some(cutter) = &self.cutter else {
            return Cut::Failed;
        };
        let data = large.data();
        let Ok(layout) = Layout::parse(data) else {
            return Cut::Failed;
        };
        let Some(mss) = layout.fitted_mss(data, usize::from(large.gso_size()), cutter.max_len)
        else {
            return Cut::Failed;
        };
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
