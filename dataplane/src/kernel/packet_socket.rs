//! Kernel interfaces (container veths) served by tenet's own PACKET_MMAP sockets, with
//! TPACKET_V2 RX and TX rings, instead of DPDK's af_packet driver. Such a port takes no
//! slot in DPDK's port table, which Debian builds with 32 (`RTE_MAX_ETHPORTS`), so a
//! host attaches as many containers as the switch has port ids; and the kernel picks
//! the fanout group id, where DPDK 22.11 derives one from pid and ifindex that another
//! af_packet user of the namespace may already hold.
//!
//! Frames are copied between the rings and mbufs, as the af_packet driver does; the
//! only system call on the fast path is one `sendto` per TX burst that kicks the ring.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::vnet::{self, VnetHeader};
use crate::dpdk::{DpdkError, LinkStatus, Mbuf, MbufBatch, Mempool, PortStats};
use crate::packet::gro::{self, Train};
use crate::packet::gso::{self, L4Checksum, Layout};
use crate::packet::{tcp, vlan};
use crate::port_set::PortSet;
use crate::{MAX_DPDK_PORTS, MAX_PORTS};

use libc::{
    packet_mreq, tpacket2_hdr, tpacket_req, tpacket_stats, ETH_P_ALL, PACKET_ADD_MEMBERSHIP,
    PACKET_FANOUT, PACKET_FANOUT_FLAG_UNIQUEID, PACKET_FANOUT_HASH, PACKET_IGNORE_OUTGOING,
    PACKET_LOSS, PACKET_MR_PROMISC, PACKET_OUTGOING, PACKET_QDISC_BYPASS, PACKET_RX_RING,
    PACKET_STATISTICS, PACKET_TX_RING, PACKET_VERSION, TPACKET_ALIGNMENT, TP_STATUS_KERNEL,
    TP_STATUS_SENDING, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
};

/// `PACKET_VNET_HDR` (if_packet.h): every frame in and out carries a virtio-net header.
const PACKET_VNET_HDR: libc::c_int = 15;
/// `PACKET_COPY_THRESH`: a frame too large for a ring frame is also queued whole on the
/// socket (ring frame marked `TP_STATUS_COPY`), to be read with `recvmsg`.
const PACKET_COPY_THRESH: libc::c_int = 7;
/// `TP_STATUS_COPY`.
const TP_STATUS_COPY: u32 = 1 << 1;
/// Socket buffer for the frames queued whole (a 64 KiB segment costs about twice that
/// in the kernel's accounting): room for a few dozen in flight.
const LARGE_SOCKET_BUFFER: libc::c_int = 8 << 20;

/// libc has `TPACKET_ALIGN` only as an unsafe, non-const fn.
const fn tpacket_align(x: usize) -> usize {
    (x + TPACKET_ALIGNMENT - 1) & !(TPACKET_ALIGNMENT - 1)
}

/// Where a TX frame's bytes start: right after the aligned header (no sockaddr_ll, no
/// PACKET_TX_HAS_OFF).
const TX_DATA_OFFSET: usize = tpacket_align(std::mem::size_of::<tpacket2_hdr>());
/// Where the kernel puts a received frame at the latest: header, sockaddr_ll, and the
/// alignment of the network header.
const RX_DATA_OFFSET: usize = tpacket_align(
    tpacket_align(std::mem::size_of::<tpacket2_hdr>())
        + std::mem::size_of::<libc::sockaddr_ll>()
        + 16,
);
/// Where a received frame's sll_pkttype is: in the sockaddr_ll after the aligned
/// header, behind sll_family, sll_protocol, sll_ifindex and sll_hatype.
const SLL_PKTTYPE_OFFSET: usize = tpacket_align(std::mem::size_of::<tpacket2_hdr>()) + 10;
/// Ethernet header plus two VLAN tags: the most a frame carries beyond the MTU.
const L2_OVERHEAD: usize = 14 + 8;

/// Port ids handed to kernel interfaces: above DPDK's, below [`MAX_PORTS`].
static TAKEN_IDS: Mutex<PortSet> = Mutex::new(PortSet::EMPTY);

/// A port id held until the port and every queue end of it are gone: mbufs stamped
/// with the id must never be mistaken for another port's.
struct PortId(u16);

impl PortId {
    fn take() -> Option<Self> {
        let mut taken = TAKEN_IDS.lock().unwrap_or_else(|e| e.into_inner());
        let id = (MAX_DPDK_PORTS..MAX_PORTS).find(|&id| !taken.contains(id))?;
        taken.insert(id);
        u16::try_from(id).ok().map(Self)
    }
}

impl Drop for PortId {
    fn drop(&mut self) {
        let mut taken = TAKEN_IDS.lock().unwrap_or_else(|e| e.into_inner());
        taken.remove(usize::from(self.0));
    }
}

/// A kernel interface the switch reads and writes through packet sockets.
/// The index of kernel interface `name` in this network namespace, if it exists now.
pub fn interface_index(name: &str) -> Option<u32> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: c_name is a valid C string for the call; no other effect.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    (index != 0).then_some(index)
}

pub(crate) struct PacketPort {
    id: Arc<PortId>,
    interface: String,
    ifindex: libc::c_int,
    /// A socket that receives nothing, for the interface ioctls.
    control: OwnedFd,
    queues: Vec<Arc<Queue>>,
    /// Ring overflows the kernel reported so far (reading them resets its count).
    dropped: AtomicU64,
}

impl PacketPort {
    /// Opens `interface`, which must exist in this network namespace.
    pub(crate) fn open(interface: &str) -> Result<Self, DpdkError> {
        let c_name = CString::new(interface)
            .map_err(|_| DpdkError::invalid("if_nametoindex", interface, "NUL in name"))?;
        // SAFETY: c_name is a valid C string for the call.
        let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if ifindex == 0 {
            return Err(DpdkError::os("if_nametoindex", interface));
        }
        let control = packet_socket(0, interface)?;
        let id = PortId::take().ok_or_else(|| {
            DpdkError::invalid(
                "packet port",
                interface,
                &format!("all {MAX_PORTS} port ids are in use"),
            )
        })?;
        Ok(Self {
            id: Arc::new(id),
            interface: interface.to_owned(),
            ifindex: ifindex as libc::c_int,
            control,
            queues: Vec::new(),
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn id(&self) -> u16 {
        self.id.0
    }

    pub(crate) fn interface(&self) -> &str {
        &self.interface
    }

    /// Opens one socket per queue (joined in a fanout group that hashes flows over
    /// them), each with `descriptors` frames per ring sized for the MTU, and hands out
    /// the queue ends. Reconfiguring closes the previous sockets.
    pub(crate) fn configure(
        &mut self,
        queues: u16,
        rx_descriptors: u16,
        tx_descriptors: u16,
        mtu: Option<u16>,
        pool: &Mempool,
    ) -> Result<(Vec<PacketRx>, Vec<PacketTx>), DpdkError> {
        self.queues.clear();
        // A packet socket on a down interface receives nothing and cannot join a
        // fanout group; DPDK's af_packet driver brings it up too.
        self.bring_up()?;
        if let Some(mtu) = mtu {
            if let Err(e) = self.set_mtu(mtu) {
                tracing::warn!(interface = %self.interface, mtu, error = %e, "keeping the interface's MTU");
            }
        }
        let mtu = usize::try_from(self.mtu()?).unwrap_or(1500);
        // Ring frames hold a whole frame of the MTU, both ways: a jumbo underlay's frames
        // are read off the ring (into large buffers, where a train of them is joined)
        // rather than one system call each, and the segments tenet cuts for it go out
        // through the ring. Without large buffers a frame larger than a packet buffer
        // cannot be kept anyway: the RX ring stays at a packet buffer's size. A
        // container's 64 KiB segment is read whole from the socket.
        let rx_room = match pool.large_pool() {
            Some(_) => mtu + L2_OVERHEAD,
            None => (mtu + L2_OVERHEAD).min(pool.data_room()),
        };
        let rx_frame_size = (RX_DATA_OFFSET + vnet::LEN + rx_room).next_power_of_two();
        let tx_frame_size = (TX_DATA_OFFSET + vnet::LEN + mtu + L2_OVERHEAD).next_power_of_two();
        let mut fanout_id = None;
        let mut rx = Vec::with_capacity(usize::from(queues));
        let mut tx = Vec::with_capacity(usize::from(queues));
        for _ in 0..queues.max(1) {
            let queue = Arc::new(Queue::open(
                self,
                ring_request(rx_frame_size, usize::from(rx_descriptors)),
                ring_request(tx_frame_size, usize::from(tx_descriptors)),
            )?);
            let mut first = 0;
            if queues > 1 {
                fanout_id = Some(queue.join_fanout(fanout_id, &self.interface)?);
                // Before joining, the socket saw every frame; those are the others'.
                first = queue.discard_received();
            }
            rx.push(PacketRx {
                queue: Arc::clone(&queue),
                next: first,
                port: self.id(),
                pool: pool.as_ptr(),
                large_pool: pool.large_pool().map(Mempool::as_ptr),
                small_room: pool.data_room(),
                large_room: pool.large_pool().map_or(0, Mempool::data_room),
            });
            let header = if queue.vnet { vnet::LEN } else { 0 };
            tx.push(PacketTx {
                queue: Arc::clone(&queue),
                ring: TxRing {
                    // The kernel's own limit: the MTU plus the Ethernet header (and a
                    // 802.1Q tag when the frame carries one).
                    max_len: mtu + 14,
                    room: tx_frame_size - TX_DATA_OFFSET - header,
                    next: 0,
                    pending: false,
                },
            });
            self.queues.push(queue);
        }
        Ok((rx, tx))
    }

    /// Makes the interface pass every frame up, not just those for its own MAC (the
    /// kernel undoes it when the socket closes).
    pub(crate) fn start(&self) -> Result<(), DpdkError> {
        let request = packet_mreq {
            mr_ifindex: self.ifindex,
            mr_type: PACKET_MR_PROMISC as libc::c_ushort,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_option(
            &self.control,
            PACKET_ADD_MEMBERSHIP,
            &request,
            &self.interface,
        )
    }

    pub(crate) fn mac(&self) -> [u8; 6] {
        let mut request = self.ifreq();
        if self
            .ioctl(libc::SIOCGIFHWADDR, "SIOCGIFHWADDR", &mut request)
            .is_err()
        {
            return [0; 6];
        }
        // SAFETY: SIOCGIFHWADDR wrote the hardware address variant of the union.
        let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
        std::array::from_fn(|i| data[i] as u8)
    }

    pub(crate) fn link(&self) -> LinkStatus {
        let up = self
            .flags()
            .is_ok_and(|flags| flags & libc::IFF_RUNNING != 0);
        LinkStatus { up, speed_mbps: 0 }
    }

    pub(crate) fn stats(&self) -> PortStats {
        let mut stats = PortStats::default();
        for queue in &self.queues {
            let c = &queue.counters;
            stats.rx_packets += c.rx_packets.load(Ordering::Relaxed);
            stats.rx_bytes += c.rx_bytes.load(Ordering::Relaxed);
            stats.rx_errors += c.rx_errors.load(Ordering::Relaxed);
            stats.rx_nombuf += c.rx_nombuf.load(Ordering::Relaxed);
            stats.tx_packets += c.tx_packets.load(Ordering::Relaxed);
            stats.tx_bytes += c.tx_bytes.load(Ordering::Relaxed);
            stats.tx_errors += c.tx_errors.load(Ordering::Relaxed);
            let mut kernel = tpacket_stats {
                tp_packets: 0,
                tp_drops: 0,
            };
            stats.rx_large += c.rx_large.load(Ordering::Relaxed);
            stats.tx_large += c.tx_large.load(Ordering::Relaxed);
            if get_option(&queue.fd, PACKET_STATISTICS, &mut kernel).is_ok() {
                self.dropped
                    .fetch_add(u64::from(kernel.tp_drops), Ordering::Relaxed);
            }
        }
        stats.rx_missed = self.dropped.load(Ordering::Relaxed);
        stats
    }

    fn ifreq(&self) -> libc::ifreq {
        // SAFETY: ifreq is plain old data; all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request
            .ifr_name
            .iter_mut()
            .zip(self.interface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *dst = src as libc::c_char;
        }
        request
    }

    /// Runs interface request `code` with `request` (which names the interface).
    fn ioctl(
        &self,
        code: libc::c_ulong,
        call: &'static str,
        request: &mut libc::ifreq,
    ) -> Result<(), DpdkError> {
        // SAFETY: request is a valid ifreq naming the interface; the interface
        // requests used here read or write one variant of its union in place.
        let ret =
            unsafe { libc::ioctl(self.control.as_raw_fd(), code, request as *mut libc::ifreq) };
        if ret < 0 {
            return Err(DpdkError::os(call, self.interface.as_str()));
        }
        Ok(())
    }

    fn flags(&self) -> Result<libc::c_int, DpdkError> {
        let mut request = self.ifreq();
        self.ioctl(libc::SIOCGIFFLAGS, "SIOCGIFFLAGS", &mut request)?;
        // SAFETY: SIOCGIFFLAGS wrote the flags variant.
        Ok(libc::c_int::from(unsafe { request.ifr_ifru.ifru_flags }))
    }

    pub(crate) fn mtu(&self) -> Result<libc::c_int, DpdkError> {
        let mut request = self.ifreq();
        self.ioctl(libc::SIOCGIFMTU, "SIOCGIFMTU", &mut request)?;
        // SAFETY: SIOCGIFMTU wrote the MTU variant.
        Ok(unsafe { request.ifr_ifru.ifru_mtu })
    }

    fn bring_up(&self) -> Result<(), DpdkError> {
        let flags = self.flags()?;
        if flags & libc::IFF_UP != 0 {
            return Ok(());
        }
        let mut request = self.ifreq();
        request.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
        self.ioctl(libc::SIOCSIFFLAGS, "SIOCSIFFLAGS", &mut request)
    }

    fn set_mtu(&self, mtu: u16) -> Result<(), DpdkError> {
        let mut request = self.ifreq();
        request.ifr_ifru.ifru_mtu = i32::from(mtu);
        self.ioctl(libc::SIOCSIFMTU, "SIOCSIFMTU", &mut request)
    }
}

/// Per-queue counters, each written only by the queue end that owns it.
#[derive(Default)]
struct QueueCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_errors: AtomicU64,
    rx_nombuf: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_errors: AtomicU64,
    rx_large: AtomicU64,
    tx_large: AtomicU64,
}

/// Adds to a counter only this thread writes: no locked instruction needed.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// One socket and its mapped rings: the RX ring first, the TX ring right after.
struct Queue {
    _id: Arc<PortId>,
    fd: OwnedFd,
    /// Frames carry a virtio-net header (the kernel took `PACKET_VNET_HDR`).
    vnet: bool,
    /// A socket without rings, for the large segments no ring frame holds; receives
    /// nothing (protocol 0). `None` without `vnet`.
    large_tx: Option<OwnedFd>,
    map: *mut u8,
    map_len: usize,
    rx_frame_size: usize,
    tx_frame_size: usize,
    /// Where the TX ring starts in the map.
    tx_base: usize,
    rx_frames: usize,
    tx_frames: usize,
    counters: QueueCounters,
}

// SAFETY: the mapping is shared memory with the kernel; the RX half is touched only by
// the one PacketRx and the TX half only by the one PacketTx of this queue, each owned by
// a single worker, and frame ownership passes through the status word with
// acquire/release ordering.
unsafe impl Send for Queue {}
// SAFETY: as above; the shared parts (fd, counters) are thread-safe.
unsafe impl Sync for Queue {}

impl Queue {
    fn open(port: &PacketPort, rx: tpacket_req, tx: tpacket_req) -> Result<Self, DpdkError> {
        let name = port.interface.as_str();
        let fd = packet_socket(0, name)?;
        set_option(
            &fd,
            PACKET_VERSION,
            &(libc::tpacket_versions::TPACKET_V2 as libc::c_int),
            name,
        )?;
        // Frames go straight to the driver: the qdisc would only queue them again.
        set_option(&fd, PACKET_QDISC_BYPASS, &1i32, name)?;
        // A malformed TX frame is skipped instead of stopping the ring.
        set_option(&fd, PACKET_LOSS, &1i32, name)?;
        // What the kernel itself sends out of the interface is not the container's.
        set_option(&fd, PACKET_IGNORE_OUTGOING, &1i32, name)?;
        // Large segments and partial checksums pass whole (the header says what they
        // owe); only possible before the rings exist. A kernel that refuses leaves the
        // port as it was: frames one by one, large ones dropped.
        let vnet = set_option(&fd, PACKET_VNET_HDR, &1i32, name).is_ok();
        if vnet {
            if set_option(&fd, PACKET_COPY_THRESH, &1i32, name).is_err() {
                tracing::warn!(
                    interface = name,
                    "PACKET_COPY_THRESH refused: frames larger than a ring frame are dropped"
                );
            }
            // Without room, a large frame would arrive cut short (counted, dropped).
            // The ring's frames and the large ones leave through two sockets: neither
            // may run out of send buffer before the other, or the stream reorders.
            let _ = set_socket_option(&fd, libc::SO_SNDBUFFORCE, LARGE_SOCKET_BUFFER);
            if set_socket_option(&fd, libc::SO_RCVBUFFORCE, LARGE_SOCKET_BUFFER).is_err() {
                tracing::warn!(
                    interface = name,
                    "large frames may be dropped: SO_RCVBUFFORCE refused"
                );
            }
        } else {
            tracing::warn!(
                interface = name,
                "PACKET_VNET_HDR refused: large TCP segments are not taken whole"
            );
        }
        let large_tx = if vnet {
            Some(large_sender(port, name)?)
        } else {
            None
        };
        set_option(&fd, PACKET_RX_RING, &rx, name)?;
        set_option(&fd, PACKET_TX_RING, &tx, name)?;
        let rx_len = rx.tp_block_size as usize * rx.tp_block_nr as usize;
        let map_len = rx_len + tx.tp_block_size as usize * tx.tp_block_nr as usize;
        // SAFETY: maps the rings just configured on fd, shared with the kernel; the
        // mapping is unmapped in Drop, before fd closes.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(DpdkError::os("mmap", name));
        }
        let queue = Self {
            _id: Arc::clone(&port.id),
            fd,
            vnet,
            large_tx,
            map: map.cast(),
            map_len,
            rx_frame_size: rx.tp_frame_size as usize,
            tx_frame_size: tx.tp_frame_size as usize,
            tx_base: rx_len,
            rx_frames: rx.tp_frame_nr as usize,
            tx_frames: tx.tp_frame_nr as usize,
            counters: QueueCounters::default(),
        };
        bind(&queue.fd, ETH_P_ALL as u16, port.ifindex, name)?;
        Ok(queue)
    }

    /// Joins the fanout group `id`, or has the kernel pick a free one; returns it.
    fn join_fanout(&self, id: Option<u16>, name: &str) -> Result<u16, DpdkError> {
        let value: u32 = match id {
            Some(id) => u32::from(id) | (PACKET_FANOUT_HASH << 16),
            None => (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
        };
        set_option(&self.fd, PACKET_FANOUT, &value, name)?;
        if let Some(id) = id {
            return Ok(id);
        }
        let mut got: u32 = 0;
        get_option(&self.fd, PACKET_FANOUT, &mut got)
            .map_err(|()| DpdkError::os("getsockopt(PACKET_FANOUT)", name))?;
        Ok((got & 0xffff) as u16)
    }

    /// Hands back what the kernel filled so far (from the ring's start, in order) and
    /// returns where it will fill next.
    fn discard_received(&self) -> usize {
        let mut next = 0;
        while next < self.rx_frames {
            let status = self.status(self.rx_frame(next));
            let value = status.load(Ordering::Acquire);
            if value & TP_STATUS_USER == 0 {
                break;
            }
            if value & TP_STATUS_COPY != 0 {
                // Its whole copy waits on the socket: it goes too, or every later
                // large frame would be read in another's place.
                self.drop_queued();
            }
            status.store(TP_STATUS_KERNEL, Ordering::Release);
            next += 1;
        }
        next % self.rx_frames
    }

    /// Reads and drops the next frame queued whole on the socket.
    fn drop_queued(&self) {
        let mut header = [0u8; vnet::LEN];
        // SAFETY: the buffer is live and writable for its length; the call takes one
        // queued frame and keeps what fits (the header), dropping the rest.
        unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                header.as_mut_ptr().cast(),
                header.len(),
                libc::MSG_DONTWAIT,
            )
        };
    }

    #[inline(always)]
    fn rx_frame(&self, index: usize) -> *mut u8 {
        // SAFETY: index < rx_frames, so the frame lies inside the RX half of the map.
        unsafe { self.map.add(index * self.rx_frame_size) }
    }

    #[inline(always)]
    fn tx_frame(&self, index: usize) -> *mut u8 {
        // SAFETY: index < tx_frames, so the frame lies inside the TX half of the map.
        unsafe { self.map.add(self.tx_base + index * self.tx_frame_size) }
    }

    /// The frame's status word, through which it passes between kernel and switch.
    #[inline(always)]
    fn status(&self, frame: *mut u8) -> &AtomicU32 {
        // SAFETY: every frame starts with a 16-byte aligned tpacket2_hdr whose first
        // field is the u32 status the kernel also accesses atomically.
        unsafe { &*frame.cast::<AtomicU32>() }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: map/map_len are the mapping made in open; no queue end is left (they
        // hold this Queue through Arc), so nothing reads it any more.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

/// Binds packet socket `fd` to interface `ifindex` for `protocol` (0: sends only).
fn bind(fd: &OwnedFd, protocol: u16, ifindex: libc::c_int, name: &str) -> Result<(), DpdkError> {
    // SAFETY: sockaddr_ll is plain old data; zero is valid before the fields are set.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = ifindex;
    // SAFETY: address is a valid sockaddr_ll of the given length.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(DpdkError::os("bind", name));
    }
    Ok(())
}

/// The ring-less socket large segments leave through: a socket with a TX ring sends
/// only from the ring, whose frames are sized for the MTU.
fn large_sender(port: &PacketPort, name: &str) -> Result<OwnedFd, DpdkError> {
    let fd = packet_socket(0, name)?;
    set_option(&fd, PACKET_VNET_HDR, &1i32, name)?;
    // No PACKET_QDISC_BYPASS here: only through the qdisc layer does the kernel ready
    // the headers its own segmentation needs (an interface without TSO cuts the
    // segment in software; bypassing, the kernel drops it).
    // Best effort: the default buffer holds about three 64 KiB segments.
    let _ = set_socket_option(&fd, libc::SO_SNDBUFFORCE, LARGE_SOCKET_BUFFER);
    bind(&fd, 0, port.ifindex, name)?;
    Ok(fd)
}

/// Sets socket-level option `option` to `value`.
fn set_socket_option(fd: &OwnedFd, option: libc::c_int, value: libc::c_int) -> Result<(), ()> {
    // SAFETY: value points to a live c_int of the size passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(());
    }
    Ok(())
}

/// A packet socket bound to nothing yet (protocol 0 receives nothing).
fn packet_socket(protocol: u16, name: &str) -> Result<OwnedFd, DpdkError> {
    // SAFETY: plain socket creation; the descriptor is owned right below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::c_int::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(DpdkError::os("socket(AF_PACKET)", name));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_option<T>(
    fd: &OwnedFd,
    option: libc::c_int,
    value: &T,
    name: &str,
) -> Result<(), DpdkError> {
    // SAFETY: value points to a live T of the size passed.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(DpdkError::os(option_name(option), name));
    }
    Ok(())
}

/// Reads a packet-socket option into `value`; `Err` with errno left set.
fn get_option<T>(fd: &OwnedFd, option: libc::c_int, value: &mut T) -> Result<(), ()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: value points to a live, writable T of the size passed.
    let ret = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (value as *mut T).cast(),
            &mut len,
        )
    };
    if ret < 0 {
        return Err(());
    }
    Ok(())
}

fn option_name(option: libc::c_int) -> &'static str {
    match option {
        PACKET_ADD_MEMBERSHIP => "setsockopt(PACKET_ADD_MEMBERSHIP)",
        PACKET_RX_RING => "setsockopt(PACKET_RX_RING)",
        PACKET_VERSION => "setsockopt(PACKET_VERSION)",
        PACKET_TX_RING => "setsockopt(PACKET_TX_RING)",
        PACKET_LOSS => "setsockopt(PACKET_LOSS)",
        PACKET_FANOUT => "setsockopt(PACKET_FANOUT)",
        PACKET_QDISC_BYPASS => "setsockopt(PACKET_QDISC_BYPASS)",
        PACKET_IGNORE_OUTGOING => "setsockopt(PACKET_IGNORE_OUTGOING)",
        PACKET_VNET_HDR => "setsockopt(PACKET_VNET_HDR)",
        PACKET_COPY_THRESH => "setsockopt(PACKET_COPY_THRESH)",
        _ => "setsockopt",
    }
}

/// A ring of at least `frames` frames of `frame_size` (a power of two), in blocks of
/// whole pages that hold whole frames, so frame i sits at `i * frame_size`.
fn ring_request(frame_size: usize, frames: usize) -> tpacket_req {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // Both are powers of two: the larger is a multiple of the other.
    let block_size = frame_size.max(page);
    let per_block = block_size / frame_size;
    let blocks = frames.max(1).div_ceil(per_block);
    tpacket_req {
        tp_block_size: block_size as u32,
        tp_block_nr: blocks as u32,
        tp_frame_size: frame_size as u32,
        tp_frame_nr: (blocks * per_block) as u32,
    }
}

/// The frame after `index` in a ring of `frames` (a compare, not a division, per
/// packet).
#[inline(always)]
fn next_frame(index: usize, frames: usize) -> usize {
    if index + 1 == frames {
        0
    } else {
        index + 1
    }
}

/// The receive side of one queue: owned by the worker that polls it.
pub(crate) struct PacketRx {
    queue: Arc<Queue>,
    next: usize,
    port: u16,
    pool: *mut dpdk_sys::rte_mempool,
    /// Where frames larger than a packet buffer go (none: they are dropped).
    large_pool: Option<*mut dpdk_sys::rte_mempool>,
    /// The frame bytes a buffer of `pool` holds.
    small_room: usize,
    /// The frame bytes a buffer of `large_pool` holds.
    large_room: usize,
}

/// A train of TCP segments being joined as a burst is read off the ring (see
/// [`crate::packet::gro`]): its first frame sits in the batch at `slot`, in a packet
/// buffer until a second frame joins, then in a large one that grows by each payload.
struct OpenTrain {
    train: Train,
    slot: usize,
    in_large: bool,
    /// Whether the first frame's TCP checksum is known right (the kernel's header said
    /// so, or the frame came from this host's own stack with the checksum owed).
    first_trusted: bool,
}

// SAFETY: the pool pointer refers to a thread-safe DPDK mempool that outlives every
// port (daemon drop order); the queue's RX half belongs to this value alone.
unsafe impl Send for PacketRx {}

impl PacketRx {
    /// Copies up to the batch's free room of waiting frames into fresh mbufs.
    #[inline(always)]
    pub(crate) fn rx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let q = &*self.queue;
        let room = batch.room();
        let mut ready = 0;
        let mut index = self.next;
        while ready < room {
            if q.status(q.rx_frame(index)).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            ready += 1;
            index = next_frame(index, q.rx_frames);
        }
        if ready == 0 {
            return 0;
        }
        let start = batch.len();
        let (slots, _) = batch.spare_raw();
        // SAFETY: slots has room for `ready` <= room pointers; the pool is alive.
        let ret = unsafe { dpdk_sys::tenet_pktmbuf_alloc_bulk(self.pool, slots, ready as u32) };
        if ret != 0 {
            // No buffers: leave the frames in the ring; the kernel drops what no longer
            // fits, as a NIC would. One failure counted per failed burst.
            bump(&q.counters.rx_nombuf, 1);
            return 0;
        }
        batch.filled(ready);
        let mut kept = start;
        let mut bytes = 0u64;
        let mut errors = 0u64;
        let mut open: Option<OpenTrain> = None;
        let mut joined = 0u64;
        for i in 0..ready {
            let frame = q.rx_frame(self.next);
            self.next = next_frame(self.next, q.rx_frames);
            // SAFETY: the status said TP_STATUS_USER: the kernel finished the header and
            // data, and does not touch the frame until it is handed back below.
            let header = unsafe { &*frame.cast::<tpacket2_hdr>() };
            let status = header.tp_status;
            let (snap, full, offset) = (
                header.tp_snaplen as usize,
                header.tp_len as usize,
                usize::from(header.tp_mac),
            );
            // The kernel moved the outermost VLAN tag to the header: put it back, since
            // the tag (a spoofed one included) is the switch's to judge.
            let tag = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    header.tp_vlan_tpid
                } else {
                    0x8100
                };
                (tpid, header.tp_vlan_tci)
            });
            // With several sockets in a fanout group, the kernel's PACKET_IGNORE_OUTGOING
            // no longer applies: what the host itself sends out is dropped here.
            // SAFETY: the sockaddr_ll follows the aligned header inside the frame.
            let outgoing = unsafe { *frame.add(SLL_PKTTYPE_OFFSET) } == PACKET_OUTGOING;
            if status & TP_STATUS_COPY != 0 {
                if let Some(train) = open.take() {
                    self.close(train, batch);
                }
                // Too large for the ring: the whole frame waits on the socket, in the
                // ring's order. Read it now (dropped or not) to stay in step.
                let large = if outgoing {
                    q.drop_queued();
                    None
                } else {
                    self.receive_large(tag, full)
                };
                q.status(frame).store(TP_STATUS_KERNEL, Ordering::Release);
                match large {
                    Some(large) => {
                        bytes += large.len() as u64;
                        batch.as_mut_slice()[start + i] = large;
                        batch.as_mut_slice().swap(kept, start + i);
                        kept += 1;
                    }
                    None if !outgoing => errors += 1,
                    None => {}
                }
                continue;
            }
            let owed = match offset.checked_sub(vnet::LEN) {
                Some(at) if q.vnet && offset <= q.rx_frame_size => {
                    // SAFETY: with PACKET_VNET_HDR the kernel writes the header right
                    // in front of the frame's bytes; the offset was checked to put all
                    // of it inside this ring frame.
                    VnetHeader::read(unsafe { &*frame.add(at).cast() })
                }
                _ => VnetHeader::default(),
            };
            let fits = snap == full && offset + snap <= q.rx_frame_size && snap >= 12 && !outgoing;
            let len = snap + if tag.is_some() { 4 } else { 0 };
            if let Some(mut train) = open.take() {
                // SAFETY: as for the copy below: offset + snap <= frame_size.
                let src = unsafe { std::slice::from_raw_parts(frame.add(offset), snap) };
                let joins = fits
                    && tag.is_none()
                    && owed.gso_kind() == vnet::GSO_NONE
                    && self.join(&mut train, batch, src, owed);
                if joins {
                    q.status(frame).store(TP_STATUS_KERNEL, Ordering::Release);
                    joined += 1;
                    bytes += snap as u64;
                    open = Some(train);
                    continue;
                }
                self.close(train, batch);
            }
            if len > self.small_room {
                // In the ring (a jumbo MTU's frames may be), but larger than a packet
                // buffer: a large one takes it.
                if let Some(large) = self.large_pool.and_then(Mbuf::alloc_from) {
                    batch.as_mut_slice()[start + i] = large;
                }
            }
            let mbuf = &mut batch.as_mut_slice()[start + i];
            let copied =
                fits && match mbuf.receive(len, self.port) {
                    Some(data) => {
                        // SAFETY: offset + snap <= frame_size: the bytes lie in this frame.
                        let src = unsafe { std::slice::from_raw_parts(frame.add(offset), snap) };
                        match tag {
                            None => data.copy_from_slice(src),
                            Some((tpid, tci)) => {
                                data[..12].copy_from_slice(&src[..12]);
                                data[12..14].copy_from_slice(&tpid.to_be_bytes());
                                data[14..16].copy_from_slice(&tci.to_be_bytes());
                                data[16..].copy_from_slice(&src[12..]);
                            }
                        }
                        true
                    }
                    None => false,
                } && (owed == VnetHeader::default() || take_owed(mbuf, owed, tag.is_some(), q));
            q.status(frame).store(TP_STATUS_KERNEL, Ordering::Release);
            if copied {
                batch.as_mut_slice().swap(kept, start + i);
                kept += 1;
                bytes += len as u64;
                if tag.is_none() && owed.gso_kind() == vnet::GSO_NONE && len >= gro::MIN_FRAME {
                    open = self.start_train(batch, kept - 1, owed);
                }
            } else if !outgoing {
                errors += 1;
            }
        }
        if let Some(train) = open {
            self.close(train, batch);
        }
        // Frames cut short, too big for an mbuf or sent by the host sit at the end.
        while batch.len() > kept {
            drop(batch.pop());
        }
        let got = kept - start;
        // The wire's frames, joined or not.
        bump(&q.counters.rx_packets, got as u64 + joined);
        bump(&q.counters.rx_bytes, bytes);
        if errors > 0 {
            bump(&q.counters.rx_errors, errors);
        }
        got
    }
}

impl PacketRx {
    /// A train that starts with the frame just kept at `slot`, if it may start one.
    #[inline]
    fn start_train(&self, batch: &MbufBatch, slot: usize, owed: VnetHeader) -> Option<OpenTrain> {
        self.large_pool?;
        let train = Train::start(batch.as_slice()[slot].data(), self.large_room)?;
        Some(OpenTrain {
            train,
            slot,
            in_large: false,
            first_trusted: owed.flags & (vnet::F_NEEDS_CSUM | vnet::F_DATA_VALID) != 0,
        })
    }

    /// Appends the payload of the ring frame `src` to the train if the frame continues
    /// it and its TCP checksum is right (or owed by this host's own stack, which the
    /// joined segment's way out makes anyway): false, and nothing changed, otherwise.
    fn join(
        &self,
        open: &mut OpenTrain,
        batch: &mut MbufBatch,
        src: &[u8],
        owed: VnetHeader,
    ) -> bool {
        let mut train = open.train;
        let Some(payload) = train.join(batch.as_slice()[open.slot].data(), src) else {
            return false;
        };
        let checked = |frame: &[u8]| Layout::parse(frame).is_ok_and(|l| l.tcp_checksum_ok(frame));
        if owed.flags & (vnet::F_NEEDS_CSUM | vnet::F_DATA_VALID) == 0 && !checked(src) {
            return false;
        }
        if !open.in_large {
            let first = batch.as_slice()[open.slot].data();
            if !open.first_trusted && !checked(first) {
                return false;
            }
            let Some(mut large) = self.large_pool.and_then(Mbuf::alloc_from) else {
                return false;
            };
            let Some(data) = large.receive(first.len(), self.port) else {
                return false;
            };
            data.copy_from_slice(first);
            batch.as_mut_slice()[open.slot] = large;
            open.in_large = true;
        }
        let large = &mut batch.as_mut_slice()[open.slot];
        let at = large.len();
        if !large.append(payload.len()) {
            return false;
        }
        large.data_mut()[at..].copy_from_slice(&src[payload]);
        open.train = train;
        true
    }

    /// Ends a train: with more than one frame joined, its first frame's headers are made
    /// those of the whole, which now owes its segmentation.
    fn close(&self, open: OpenTrain, batch: &mut MbufBatch) {
        if open.train.frames() < 2 {
            return;
        }
        let large = &mut batch.as_mut_slice()[open.slot];
        open.train.finish(large.data_mut());
        large.set_gso_size(open.train.mss() as u16);
        bump(&self.queue.counters.rx_large, 1);
    }

    /// Reads the next frame queued whole on the socket into a large buffer, with the
    /// ring's VLAN tag put back, and takes what its header says it owes; `None` (the
    /// frame dropped) without a large buffer, for a frame that does not fit one, or for
    /// one not `expected` bytes long (not the frame the ring slot announced).
    #[cold]
    fn receive_large(&self, tag: Option<(u16, u16)>, expected: usize) -> Option<Mbuf> {
        let q = &*self.queue;
        let mut header = [0u8; vnet::LEN];
        let mut large = self.large_pool.and_then(Mbuf::alloc_from);
        let shift = if tag.is_some() { 4 } else { 0 };
        let room = large.as_ref().map_or(0, |m| m.tailroom());
        let data = match large.as_mut() {
            Some(m) => m.receive(room, self.port).unwrap_or(&mut []),
            None => &mut [],
        };
        let data = data.get_mut(shift..).unwrap_or(&mut []);
        let mut iov = [
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            },
        ];
        // SAFETY: msghdr is plain old data; zero is valid before the fields are set.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs point at live, writable buffers of the lengths given; the
        // call reads one queued frame (dropping it if no buffer was given).
        let got = unsafe { libc::recvmsg(q.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        let mut large = large?;
        let len = usize::try_from(got)
            .ok()
            .and_then(|n| n.checked_sub(vnet::LEN))
            .filter(|&n| n >= 14 && n == expected && msg.msg_flags & libc::MSG_TRUNC == 0)?;
        large.truncate(len + shift);
        if let Some((tpid, tci)) = tag {
            let data = large.data_mut();
            data.copy_within(4..16, 0);
            data[12..14].copy_from_slice(&tpid.to_be_bytes());
            data[14..16].copy_from_slice(&tci.to_be_bytes());
        }
        let owed = VnetHeader::read(&header);
        take_owed(&mut large, owed, tag.is_some(), q).then_some(large)
    }
}

/// Takes what a received frame's virtio-net header says it owes: a large TCP segment
/// keeps its segment size (the egress cuts it, with fresh checksums), a partial
/// checksum is finished now (nothing after RX trusts a checksum field it did not
/// write). False for what tenet cannot carry (segments of IPv6 or UDP, a checksum
/// outside the frame): dropped and counted.
#[cold]
fn take_owed(mbuf: &mut Mbuf, owed: VnetHeader, tagged: bool, q: &Queue) -> bool {
    match owed.gso_kind() {
        vnet::GSO_NONE => {}
        vnet::GSO_TCPV4 if owed.gso_size > 0 => {
            mbuf.set_gso_size(owed.gso_size);
            bump(&q.counters.rx_large, 1);
            return true;
        }
        _ => return false,
    }
    if owed.flags & vnet::F_NEEDS_CSUM == 0 {
        return true;
    }
    // The kernel counted from the frame without the tag it moved to the ring header.
    let start = usize::from(owed.csum_start) + if tagged { 4 } else { 0 };
    gso::complete_checksum(mbuf.data_mut(), start, usize::from(owed.csum_offset))
}

/// The transmit side of one queue: owned by the worker that transmits on it.
pub(crate) struct PacketTx {
    queue: Arc<Queue>,
    ring: TxRing,
}

/// Where the transmit side is in its ring, and what the interface takes.
struct TxRing {
    next: usize,
    /// Longest untagged frame the interface takes (a 802.1Q tag may add 4).
    max_len: usize,
    /// Bytes a ring frame holds (behind its virtio-net header, if any).
    room: usize,
    /// The last kick failed (no buffer, link down): frames still wait in the ring.
    pending: bool,
}
/// What became of a large segment.
enum Large {
    /// On its way (whole, or cut into ring frames).
    Sent,
    /// No room now (socket buffer or ring full): it stays in the batch.
    NoRoom,
    /// Not a TCP/IPv4 segment tenet can cut, or cut smaller than any wire takes.
    Refused,
}

impl TxRing {
    /// The longest `data` may be to leave through the ring as it is (its tag may add
    /// 4 bytes to the MTU); a longer one leaves whole through the ring-less socket,
    /// or is cut.
    #[inline(always)]
    fn limit_for(&self, data: &[u8]) -> usize {
        self.max_len
            + if vlan::is_tagged(data) {
                vlan::HEADER_LEN
            } else {
                0
            }
    }

    /// Asks the kernel to transmit the frames marked SEND_REQUEST; a failed kick is
    /// retried with the next burst.
    #[inline(always)]
    fn kick(&mut self, q: &Queue) {
        // SAFETY: a zero-length send with no address asks the kernel to transmit the
        // frames marked SEND_REQUEST; it reads nothing of ours.
        let ret = unsafe {
            libc::sendto(
                q.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        self.pending = ret < 0;
    }

    /// Sends a large TCP segment: whole to the kernel with a virtio-net header saying
    /// what it owes (its segments fitted to the interface), when it is plain TCP/IPv4
    /// (the kernel, the NIC or the container's stack cuts it, or takes it whole);
    /// otherwise (tunnelled) cut here into ring frames.
    #[cold]
    fn send_large(&mut self, q: &Queue, mbuf: &mut Mbuf) -> Large {
        let data = mbuf.data();
        let owed = usize::from(mbuf.gso_size());
        let Ok(layout) = Layout::parse(data) else {
            return Large::Refused;
        };
        // Larger than this port's MTU without owing segmentation: a wire's jumbo frame
        // (or another jumbo port's). Checked first: cut
        // or handed on with the checksum owed, it would be trusted unchecked.
        if owed == 0 && !layout.tcp_checksum_ok(data) {
            return Large::Refused;
        }
        let asked = if owed == 0 { usize::MAX } else { owed };
        let Some(mss) = layout.fitted_mss(data, asked, self.max_len) else {
            return Large::Refused;
        };
        // Whole at the fitted size even where that is below the sender's: segments of
        // any size make the same stream, and the receiver's kernel takes one skb.
        let whole =
            q.large_tx.is_some() && layout.outer_ip_offset().is_none() && layout.segments(mss) > 1;
        if !whole {
            return self.send_cut(q, data, &layout, mss);
        }
        let Some((csum_start, csum_offset)) =
            gso::make_partial(mbuf.data_mut(), layout.ip_offset())
        else {
            return Large::Refused;
        };
        let header = VnetHeader {
            flags: vnet::F_NEEDS_CSUM,
            gso_type: vnet::GSO_TCPV4,
            hdr_len: layout.header_len() as u16,
            gso_size: mss as u16,
            csum_start: csum_start as u16,
            csum_offset: csum_offset as u16,
        };
        let sent = self.send_whole(q, mbuf, header);
        if matches!(sent, Large::NoRoom) && owed == 0 {
            // It stays in the batch as it came: with its checksum whole.
            gso::complete_checksum(mbuf.data_mut(), csum_start, csum_offset);
        }
        sent
    }

    /// Hands the frame to the kernel whole through the ring-less socket, with `header`
    /// saying what it owes.
    fn send_whole(&mut self, q: &Queue, mbuf: &mut Mbuf, header: VnetHeader) -> Large {
        if !mbuf.prepend(vnet::LEN) {
            return Large::Refused;
        }
        let Some(bytes) = mbuf.data_mut().first_chunk_mut::<{ vnet::LEN }>() else {
            return Large::Refused;
        };
        header.write(bytes);
        let Some(fd) = q.large_tx.as_ref() else {
            return Large::Refused;
        };
        let data = mbuf.data();
        // SAFETY: data is a live buffer of the length given; the socket is bound to
        // the interface, so no address is needed.
        let ret = unsafe {
            libc::send(
                fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_DONTWAIT,
            )
        };
        mbuf.adjust(vnet::LEN);
        if ret < 0 {
            let error = std::io::Error::last_os_error().raw_os_error();
            if matches!(error, Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                return Large::NoRoom;
            }
            return Large::Refused;
        }
        bump(&q.counters.tx_large, 1);
        Large::Sent
    }

    /// Cuts the segment at `mss` into free ring frames (all of them or none), each with
    /// its TCP checksum left for the kernel to finish where the header can say so.
    fn send_cut(&mut self, q: &Queue, data: &[u8], layout: &Layout, mss: usize) -> Large {
        let count = layout.segments(mss);
        if count > q.tx_frames {
            return Large::Refused;
        }
        let busy = TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING;
        let mut index = self.next;
        for _ in 0..count {
            if q.status(q.tx_frame(index)).load(Ordering::Acquire) & busy != 0 {
                return Large::NoRoom;
            }
            index = next_frame(index, q.tx_frames);
        }
        let (header, checksum) = if q.vnet {
            (vnet::LEN, L4Checksum::Partial)
        } else {
            (0, L4Checksum::Complete)
        };
        let owed = VnetHeader {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: layout.tcp_offset() as u16,
            csum_offset: tcp::CHECKSUM_AT as u16,
            ..VnetHeader::default()
        };
        for i in 0..count {
            let frame = q.tx_frame(self.next);
            // SAFETY: the frame is AVAILABLE (checked above) and ours until marked for
            // sending; the slice covers its data area and no more.
            let area = unsafe {
                std::slice::from_raw_parts_mut(frame.add(TX_DATA_OFFSET), header + self.room)
            };
            let (head, out) = area.split_at_mut(header);
            let Some(len) = layout.write_segment(data, mss, i, checksum, out) else {
                // Cannot happen for a layout parsed from this frame with segments that
                // fit; what was written so far still goes.
                self.kick(q);
                return Large::Refused;
            };
            if let Some(head) = head.first_chunk_mut::<{ vnet::LEN }>() {
                owed.write(head);
            }
            // SAFETY: as above; the header is the frame's own.
            unsafe { (*frame.cast::<tpacket2_hdr>()).tp_len = (header + len) as u32 };
            q.status(frame)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.next = next_frame(self.next, q.tx_frames);
        }
        self.kick(q);
        bump(&q.counters.tx_large, 1);
        Large::Sent
    }
}

impl PacketTx {
    /// Copies the batch into free TX frames and kicks the kernel once; what finds no
    /// free frame stays in the batch. Returns how many were sent (frames the interface
    /// cannot carry are freed and counted as TX errors).
    #[inline(always)]
    pub(crate) fn tx_burst(&mut self, batch: &mut MbufBatch) -> usize {
        let (q, ring) = (&*self.queue, &mut self.ring);
        let mut taken = 0;
        let mut sent = 0u64;
        let mut bytes = 0u64;
        let mut ring_full = false;
        let header = if q.vnet { vnet::LEN } else { 0 };
        let mut kicked = 0;
        for mbuf in batch.as_mut_slice() {
            if mbuf.gso_size() != 0
                || (mbuf.len() > ring.max_len && mbuf.len() > ring.limit_for(mbuf.data()))
            {
                // The ring's frames so far leave first: the stream keeps its order.
                if sent > kicked || ring.pending {
                    ring.kick(q);
                    kicked = sent;
                }
                match ring.send_large(q, mbuf) {
                    Large::Sent => {
                        taken += 1;
                        sent += 1;
                        kicked = sent;
                        bytes += mbuf.len() as u64;
                        continue;
                    }
                    Large::NoRoom => {
                        ring_full = true;
                        break;
                    }
                    Large::Refused => {
                        taken += 1;
                        continue;
                    }
                }
            }
            let frame = q.tx_frame(ring.next);
            let status = q.status(frame);
            if status.load(Ordering::Acquire) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING) != 0 {
                ring_full = true;
                break;
            }
            taken += 1;
            let data = mbuf.data();
            let limit = ring.limit_for(data).min(ring.room);
            if data.len() < 14 || data.len() > limit {
                continue;
            }
            // SAFETY: the frame is AVAILABLE (ours until marked for sending) and
            // TX_DATA_OFFSET + header + limit <= tx_frame_size. A frame that owes nothing
            // has an all-zero virtio-net header.
            unsafe {
                let at = frame.add(TX_DATA_OFFSET);
                std::ptr::write_bytes(at, 0, header);
                std::ptr::copy_nonoverlapping(data.as_ptr(), at.add(header), data.len());
                (*frame.cast::<tpacket2_hdr>()).tp_len = (header + data.len()) as u32;
            }
            status.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            ring.next = next_frame(ring.next, q.tx_frames);
            sent += 1;
            bytes += data.len() as u64;
        }
        // Frames a failed kick left in the ring (they block it when it is full) go
        // with the next burst's kick.
        if sent > kicked || ring_full || ring.pending {
            ring.kick(q);
        }
        batch.free_front(taken);
        bump(&q.counters.tx_packets, sent);
        bump(&q.counters.tx_bytes, bytes);
        let malformed = taken as u64 - sent;
        if malformed > 0 {
            bump(&q.counters.tx_errors, malformed);
        }
        sent as usize
    }
}
