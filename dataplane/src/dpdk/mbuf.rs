//! Owned packet buffers and fixed-size bursts of them.
//!
//! Per-packet accessors (data pointer, prepend, adj) are plain Rust over the `rte_mbuf`
//! fields so they inline; only whole-burst operations cross into C.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

/// Packets moved per RX/TX call and per pipeline pass.
pub const BURST: usize = 32;

/// DPDK's `RTE_MBUF_F_TX_TCP_SEG`. An mbuf owes segmentation when this flag says so:
/// receive paths set `ol_flags` whole but may leave a stale `tso_segsz` behind.
const TX_TCP_SEG: u64 = dpdk_sys::TENET_MBUF_F_TX_TCP_SEG;

/// What a receive path that parses virtio-net headers (net_vhost, net_virtio) sets on
/// a frame a guest sent as a large TCP segment: `tso_segsz` then holds its segment size.
pub(crate) const RX_LRO: u64 = dpdk_sys::TENET_MBUF_F_RX_LRO;

/// The two bits of the L4 checksum state a receive path reports.
pub(crate) const RX_L4_CKSUM_MASK: u64 = dpdk_sys::TENET_MBUF_F_RX_L4_CKSUM_MASK;

/// L4 checksum state "none": the field holds only the pseudo-header sum a sender left
/// for the device to finish (virtio-net's NEEDS_CSUM).
pub(crate) const RX_L4_CKSUM_NONE: u64 = dpdk_sys::TENET_MBUF_F_RX_L4_CKSUM_NONE;

/// Whether any frame of this process ever owed segmentation: until one does (a switch
/// whose ports never hand over a large segment never has one), a burst is not even
/// looked at for them.
static SEGMENTATION_OWED: AtomicBool = AtomicBool::new(false);

/// One packet, owned: dropped means freed back to its pool. Only the first segment's
/// data is visible, so a device that chains segments has its bursts joined at receive
/// ([`MbufBatch::join_segments`]; a vhost-user port joins what no packet buffer holds
/// into a large buffer) before any stage reads them.
#[repr(transparent)]
pub struct Mbuf(NonNull<dpdk_sys::rte_mbuf>);

// SAFETY: an mbuf has a single owner at a time; moving it to another thread moves that
// ownership, and DPDK's free path is safe from any lcore.
unsafe impl Send for Mbuf {}

impl Mbuf {
    pub(crate) fn from_raw(raw: NonNull<dpdk_sys::rte_mbuf>) -> Self {
        Self(raw)
    }

    /// A fresh, empty mbuf of `pool` (a live pool), or `None` when it has none free.
    #[inline]
    pub(crate) fn alloc_from(pool: *mut dpdk_sys::rte_mempool) -> Option<Mbuf> {
        let mut slot = [std::ptr::null_mut(); 1];
        // SAFETY: the caller's pool is alive (pools outlive every port and worker);
        // slot has room for the one pointer asked for.
        let ret = unsafe { dpdk_sys::tenet_pktmbuf_alloc_bulk(pool, slot.as_mut_ptr(), 1) };
        NonNull::new(slot[0])
            .filter(|_| ret == 0)
            .map(Mbuf::from_raw)
    }

    #[inline(always)]
    fn raw(&self) -> &dpdk_sys::rte_mbuf {
        // SAFETY: self owns a live mbuf for as long as it exists.
        unsafe { self.0.as_ref() }
    }

    #[inline(always)]
    fn raw_mut(&mut self) -> &mut dpdk_sys::rte_mbuf {
        // SAFETY: self owns the mbuf exclusively; &mut self rules out aliases.
        unsafe { self.0.as_mut() }
    }

    /// Bytes of the frame.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: [buf_addr + data_off, + data_len) lies inside the mbuf's data room,
        // which DPDK keeps consistent for every mbuf it hands out.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Bytes of the frame, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw_mut();
        // SAFETY: as in data(); exclusive access through &mut self.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// Frame length in bytes (first segment).
    #[inline(always)]
    pub fn len(&self) -> usize {
        usize::from(self.raw().data_len)
    }

    /// Whether the frame is empty.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The port the frame was received on.
    #[inline(always)]
    pub fn in_port(&self) -> u16 {
        self.raw().port
    }

    /// Free bytes in front of the frame.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        usize::from(self.raw().data_off)
    }

    /// Free bytes behind the frame.
    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        let m = self.raw();
        usize::from(m.buf_len) - usize::from(m.data_off) - usize::from(m.data_len)
    }

    /// Grows the frame at the front by `len` bytes (for encapsulation). False, and
    /// nothing changed, when the headroom is too small.
    #[inline(always)]
    pub fn prepend(&mut self, len: usize) -> bool {
        let Ok(len16) = u16::try_from(len) else {
            return false;
        };
        let m = self.raw_mut();
        if len16 > m.data_off {
            return false;
        }
        m.data_off -= len16;
        m.data_len += len16;
        m.pkt_len += u32::from(len16);
        true
    }

    /// Removes `len` bytes from the front (decapsulation). False, and nothing changed,
    /// when the frame is shorter.
    #[inline(always)]
    pub fn adjust(&mut self, len: usize) -> bool {
        let Ok(len16) = u16::try_from(len) else {
            return false;
        };
        let m = self.raw_mut();
        if len16 > m.data_len {
            return false;
        }
        m.data_off += len16;
        m.data_len -= len16;
        m.pkt_len -= u32::from(len16);
        true
    }

    /// Grows the frame at the end by `len` bytes. False when the tailroom is too small.
    #[inline(always)]
    pub fn append(&mut self, len: usize) -> bool {
        if len > self.tailroom() {
            return false;
        }
        let len16 = len as u16; // fits: tailroom < buf_len <= u16::MAX
        let m = self.raw_mut();
        m.data_len += len16;
        m.pkt_len += u32::from(len16);
        true
    }

    /// Shortens the frame to `len` bytes. False when it is shorter already.
    #[inline(always)]
    pub fn truncate(&mut self, len: usize) -> bool {
        let current = self.len();
        if len > current {
            return false;
        }
        let cut = (current - len) as u16;
        let m = self.raw_mut();
        m.data_len -= cut;
        m.pkt_len -= u32::from(cut);
        true
    }

    /// Replaces the frame's bytes with `bytes`. False when they do not fit.
    pub fn set_data(&mut self, bytes: &[u8]) -> bool {
        let current = self.len();
        if bytes.len() > current && !self.append(bytes.len() - current) {
            return false;
        }
        if bytes.len() < current {
            self.truncate(bytes.len());
        }
        self.data_mut().copy_from_slice(bytes);
        true
    }

    /// A copy in a fresh mbuf of the same pool, with the same headroom, or `None` when
    /// the pool is empty.
    #[inline]
    pub fn duplicate(&self) -> Option<Mbuf> {
        let m = self.raw();
        let mut copy = Mbuf::alloc_from(m.pool)?;
        let len = self.len();
        let c = copy.raw_mut();
        // Same pool, so same buffer size: the original's offset fits.
        c.data_off = m.data_off;
        c.data_len = m.data_len;
        c.pkt_len = u32::from(m.data_len);
        c.port = m.port;
        copy.data_mut()[..len].copy_from_slice(self.data());
        copy.set_gso_size(self.gso_size());
        Some(copy)
    }

    /// The TCP segment size the frame is owed (0: none); see
    /// [`crate::packet::frame::Frame::gso_size`].
    #[inline(always)]
    pub fn gso_size(&self) -> u16 {
        let m = self.raw();
        if m.ol_flags & TX_TCP_SEG == 0 {
            return 0;
        }
        // SAFETY: both views of the union are plain integers over the same 8 bytes.
        unsafe { m.__bindgen_anon_3.__bindgen_anon_1.tso_segsz() as u16 }
    }

    /// Marks the frame as owing segmentation at `size` (0: none).
    #[inline(always)]
    pub fn set_gso_size(&mut self, size: u16) {
        let m = self.raw_mut();
        if size == 0 {
            m.ol_flags &= !TX_TCP_SEG;
            return;
        }
        m.ol_flags |= TX_TCP_SEG;
        if !SEGMENTATION_OWED.load(Ordering::Relaxed) {
            SEGMENTATION_OWED.store(true, Ordering::Relaxed);
        }
        // SAFETY: as in gso_size().
        unsafe {
            m.__bindgen_anon_3
                .__bindgen_anon_1
                .set_tso_segsz(u64::from(size))
        };
    }

    /// Makes a fresh mbuf hold `len` bytes received on `port` and returns them to be
    /// filled; `None` when they do not fit its data room.
    #[inline(always)]
    pub(crate) fn receive(&mut self, len: usize, port: u16) -> Option<&mut [u8]> {
        let m = self.raw_mut();
        if len > usize::from(m.buf_len) - usize::from(m.data_off) {
            return None;
        }
        m.data_len = len as u16; // fits: checked against buf_len, a u16
        m.pkt_len = len as u32;
        m.port = port;
        Some(self.data_mut())
    }

    /// Whether the frame spans several segments.
    #[inline(always)]
    pub fn is_chained(&self) -> bool {
        self.raw().nb_segs > 1
    }

    /// What the receive path reported in `ol_flags`, and the segment size it stored
    /// (meaningful with [`RX_LRO`]).
    #[inline]
    pub(crate) fn rx_offloads(&self) -> (u64, u16) {
        let m = self.raw();
        // SAFETY: both views of the union are plain integers over the same 8 bytes.
        let size = unsafe { m.__bindgen_anon_3.__bindgen_anon_1.tso_segsz() } as u16;
        (m.ol_flags, size)
    }

    /// Forgets every offload flag: what the receive path reported is taken, and from
    /// here `ol_flags` says only what tenet sets ([`Mbuf::set_gso_size`]).
    #[inline]
    pub(crate) fn clear_offloads(&mut self) {
        self.raw_mut().ol_flags = 0;
    }

    /// Where the L4 header starts and which L4 protocol it is (`RTE_PTYPE_L4_*`), as
    /// DPDK's own parser finds them (any VLAN stacking, IPv4 options, IPv6 extension
    /// headers): the parser a virtio-net receive path used to judge the checksum
    /// partial, so both agree on where it lies. `None` for a frame with no L4 header it
    /// knows.
    pub(crate) fn l4_header(&self) -> Option<(usize, u32)> {
        let mut lens = dpdk_sys::rte_net_hdr_lens::default();
        let layers =
            dpdk_sys::RTE_PTYPE_L2_MASK | dpdk_sys::RTE_PTYPE_L3_MASK | dpdk_sys::RTE_PTYPE_L4_MASK;
        // SAFETY: the mbuf is live and owned; the parser only reads its data (through
        // rte_pktmbuf_read, which stays inside pkt_len) and writes `lens`.
        let ptype = unsafe { dpdk_sys::rte_net_get_ptype(self.0.as_ptr(), &mut lens, layers) };
        let l4 = ptype & dpdk_sys::RTE_PTYPE_L4_MASK;
        (l4 != 0).then(|| (usize::from(lens.l2_len) + usize::from(lens.l3_len), l4))
    }

    /// A second handle on this very mbuf (its reference count raised): what a device
    /// is handed while the caller's handle is still borrowed. Both see the same bytes,
    /// so the caller writes through one only once it no longer reads the other; the
    /// buffer goes back to its pool when both are dropped.
    #[inline]
    pub(crate) fn share(&self) -> Mbuf {
        // SAFETY: self owns a live mbuf; raising its reference count makes the second
        // handle an owner in its own right (each drop lowers it by one).
        unsafe { dpdk_sys::tenet_mbuf_refcnt_update(self.0.as_ptr(), 1) };
        Mbuf(self.0)
    }

    /// Asks the device to cut this TCP/IPv4 frame into segments of `mss` payload bytes
    /// and to fill in every IPv4 header checksum (ethdev's TSO request): `l2`, `l3` and
    /// `l4` are the lengths of its Ethernet (with any tag), IPv4 and TCP headers. The
    /// caller prepares the headers as ethdev asks: IPv4 checksum 0, TCP checksum the
    /// pseudo-header sum without the length.
    #[inline]
    pub(crate) fn request_tso(&mut self, l2: usize, l3: usize, l4: usize, mss: u16) {
        self.set_gso_size(mss);
        let m = self.raw_mut();
        m.ol_flags |= dpdk_sys::TENET_MBUF_F_TX_IPV4 | dpdk_sys::TENET_MBUF_F_TX_IP_CKSUM;
        // SAFETY: as in gso_size(); the setters mask each value to its field's width.
        let lens = unsafe { &mut m.__bindgen_anon_3.__bindgen_anon_1 };
        lens.set_l2_len(l2 as u64);
        lens.set_l3_len(l3 as u64);
        lens.set_l4_len(l4 as u64);
    }

    /// This frame in one segment: a chain is joined into its first segment when that
    /// holds it all, else copied into a fresh buffer of `large` (a pool of larger
    /// buffers) with its offload metadata. `None`, and the frame freed, when neither
    /// holds it (or the chain's lengths disagree).
    #[cold]
    pub(crate) fn into_one_segment(
        mut self,
        large: Option<*mut dpdk_sys::rte_mempool>,
    ) -> Option<Mbuf> {
        if !self.is_chained() || self.join() {
            return Some(self);
        }
        let mut whole = large.and_then(Mbuf::alloc_from)?;
        let (len, port) = (self.raw().pkt_len as usize, self.raw().port);
        let out = whole.receive(len, port)?;
        let mut at = 0;
        let mut segment = Some(self.0);
        while let Some(raw) = segment {
            // SAFETY: self owns every segment of its chain and keeps it alive here;
            // each segment's [buf_addr + data_off, + data_len) lies in its data room.
            let bytes = unsafe {
                let m = raw.as_ref();
                segment = NonNull::new(m.next);
                std::slice::from_raw_parts(
                    (m.buf_addr as *const u8).add(usize::from(m.data_off)),
                    usize::from(m.data_len),
                )
            };
            out.get_mut(at..at + bytes.len())?.copy_from_slice(bytes);
            at += bytes.len();
        }
        if at != len {
            return None;
        }
        let (from, to) = (self.raw(), whole.raw_mut());
        to.ol_flags = from.ol_flags;
        to.__bindgen_anon_1 = from.__bindgen_anon_1;
        to.__bindgen_anon_3 = from.__bindgen_anon_3;
        Some(whole)
    }

    /// Appends `tail`'s segments after this frame's last one: a frame larger than
    /// one buffer, as a vhost-user guest sends it. Hands `tail` back when the chain
    /// would hold more segments than DPDK counts.
    pub fn chain(&mut self, tail: Mbuf) -> Result<(), Mbuf> {
        let (segs, len) = (tail.raw().nb_segs, tail.raw().pkt_len);
        let Some(total) = self.raw().nb_segs.checked_add(segs) else {
            return Err(tail);
        };
        let mut last = self.0;
        // SAFETY: self owns every segment of its chain, so walking `next` reaches only
        // live mbufs, and linking `tail` there hands its ownership to the chain.
        unsafe {
            while let Some(next) = NonNull::new(last.as_ref().next) {
                last = next;
            }
            last.as_mut().next = tail.into_raw();
        }
        let m = self.raw_mut();
        m.nb_segs = total;
        m.pkt_len += len;
        Ok(())
    }

    /// Copies every later segment into the first one and frees them; false, and the
    /// chain left as it was, when the first segment's tailroom is too small.
    #[cold]
    fn join(&mut self) -> bool {
        // SAFETY: self owns the whole chain; DPDK's linearize moves the data into the
        // first segment only when it fits and frees the unchained segments itself.
        unsafe { dpdk_sys::__rte_pktmbuf_linearize(self.0.as_ptr()) == 0 }
    }

    fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let raw = self.0.as_ptr();
        std::mem::forget(self);
        raw
    }
}

impl crate::packet::frame::Frame for Mbuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        Mbuf::data(self)
    }

    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        Mbuf::data_mut(self)
    }

    #[inline(always)]
    fn prepend(&mut self, len: usize) -> bool {
        Mbuf::prepend(self, len)
    }

    #[inline(always)]
    fn adjust(&mut self, len: usize) -> bool {
        Mbuf::adjust(self, len)
    }

    #[inline(always)]
    fn truncate(&mut self, len: usize) -> bool {
        Mbuf::truncate(self, len)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        Mbuf::len(self)
    }

    #[inline]
    fn duplicate(&self) -> Option<Self> {
        Mbuf::duplicate(self)
    }

    #[inline(always)]
    fn gso_size(&self) -> u16 {
        Mbuf::gso_size(self)
    }

    #[inline(always)]
    fn set_gso_size(&mut self, size: u16) {
        Mbuf::set_gso_size(self, size)
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf; after this it is never touched again.
        unsafe { dpdk_sys::tenet_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// Up to [`BURST`] owned mbufs in a fixed array: no allocation, ever. Dropping the batch
/// frees what it still holds with one bulk call.
pub struct MbufBatch {
    slots: [*mut dpdk_sys::rte_mbuf; BURST],
    len: usize,
}

// SAFETY: the batch owns its mbufs exactly as Mbuf does.
unsafe impl Send for MbufBatch {}

impl Default for MbufBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        Self {
            slots: [std::ptr::null_mut(); BURST],
            len: 0,
        }
    }

    /// Number of packets held.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds nothing.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free slots left.
    #[inline(always)]
    pub fn room(&self) -> usize {
        BURST - self.len
    }

    /// Adds a packet; hands it back when the batch is full.
    #[inline(always)]
    pub fn push(&mut self, mbuf: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(mbuf);
        }
        self.slots[self.len] = mbuf.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Removes the last packet.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        NonNull::new(self.slots[self.len]).map(Mbuf::from_raw)
    }

    /// Starts loading every packet's descriptor (both its cache lines: the second holds
    /// what freeing reads) and then its first bytes. Packets another core received sit
    /// in that core's cache; loaded one by one, each costs a few round trips between
    /// the cores, and a burst's overlap.
    #[inline(always)]
    pub fn prefetch_from_another_core(&self) {
        for mbuf in self.as_slice() {
            let descriptor = mbuf.0.as_ptr().cast::<u8>();
            super::prefetch_addr(descriptor);
            super::prefetch_addr(descriptor.wrapping_add(64));
        }
        for mbuf in self.as_slice() {
            super::prefetch_addr(mbuf.data().as_ptr());
        }
    }

    /// The packets, for reading.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is repr(transparent) over NonNull<rte_mbuf>, which has the layout
        // of *mut rte_mbuf; the first `len` slots hold owned, non-null mbufs.
        unsafe { std::slice::from_raw_parts(self.slots.as_ptr().cast::<Mbuf>(), self.len) }
    }

    /// The packets, for rewriting in place.
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in as_slice; &mut self gives exclusive access to the slots.
        unsafe { std::slice::from_raw_parts_mut(self.slots.as_mut_ptr().cast::<Mbuf>(), self.len) }
    }

    /// Moves as many packets from `other` as fit (all of them when there is room),
    /// keeping order. Returns how many moved.
    #[inline(always)]
    pub fn append(&mut self, other: &mut MbufBatch) -> usize {
        let moved = other.len.min(self.room());
        self.slots[self.len..self.len + moved].copy_from_slice(&other.slots[..moved]);
        self.len += moved;
        other.consume_front(moved);
        moved
    }

    /// Takes the packets out in order, leaving the batch empty (what the iterator does
    /// not yield is freed when it drops; if the iterator is leaked instead, so are they,
    /// never freed twice).
    #[inline(always)]
    pub fn drain(&mut self) -> Drain<'_> {
        // The batch forgets its packets first: from here the iterator alone owns them.
        let end = std::mem::replace(&mut self.len, 0);
        Drain {
            batch: self,
            next: 0,
            end,
        }
    }

    /// Makes every packet of the batch one segment: a chain is joined into its first
    /// segment when it fits there, and freed otherwise. Returns (joined, freed).
    #[inline]
    pub fn join_segments(&mut self) -> (usize, usize) {
        // One pass without a branch per packet: any count above one shows in the OR.
        let segments = self
            .as_slice()
            .iter()
            .fold(0u16, |all, m| all | (m.raw().nb_segs - 1));
        if segments == 0 {
            return (0, 0);
        }
        self.join_chains()
    }

    #[cold]
    fn join_chains(&mut self) -> (usize, usize) {
        let (mut joined, mut freed) = (0, 0);
        self.retain_from(0, |mut mbuf| {
            if !mbuf.is_chained() {
                return Some(mbuf);
            }
            if mbuf.join() {
                joined += 1;
                Some(mbuf)
            } else {
                freed += 1;
                None
            }
        });
        (joined, freed)
    }

    /// Whether a packet from `from` on spans several segments or carries any of
    /// `flags`: one pass without a branch per packet, as in join_segments.
    #[inline(always)]
    pub(crate) fn any_chained_or_flagged(&self, from: usize, flags: u64) -> bool {
        let (segments, seen) = self.as_slice()[from.min(self.len)..].iter().fold(
            (0u16, 0u64),
            |(segments, seen), m| {
                let m = m.raw();
                (segments | (m.nb_segs - 1), seen | m.ol_flags)
            },
        );
        segments != 0 || seen & flags != 0
    }

    /// Hands each packet from `from` on to `keep`, and keeps, in order, those it hands
    /// back (the others it dropped, or freed by dropping them). Returns how many of
    /// them stayed.
    pub(crate) fn retain_from(
        &mut self,
        from: usize,
        mut keep: impl FnMut(Mbuf) -> Option<Mbuf>,
    ) -> usize {
        let from = from.min(self.len);
        let end = std::mem::replace(&mut self.len, from);
        for i in from..end {
            // SAFETY: slot i (from <= i < end) holds an owned, non-null mbuf the batch
            // no longer counts (len was lowered to `from` first, so a panic in `keep`
            // leaks the rest instead of freeing any twice); what comes back goes to
            // slot len (<= i), the rest is gone.
            let mbuf = Mbuf::from_raw(unsafe { NonNull::new_unchecked(self.slots[i]) });
            if let Some(mbuf) = keep(mbuf) {
                self.slots[self.len] = mbuf.into_raw();
                self.len += 1;
            }
        }
        self.len - from
    }

    /// Whether any packet of the batch is a large TCP segment still to be cut.
    #[inline(always)]
    pub fn owes_segmentation(&self) -> bool {
        if !SEGMENTATION_OWED.load(Ordering::Relaxed) {
            return false;
        }
        // One pass without a branch per packet, as in join_segments.
        self.as_slice()
            .iter()
            .fold(0, |all, m| all | m.raw().ol_flags)
            & TX_TCP_SEG
            != 0
    }

    /// Frees every packet held; returns how many.
    #[inline]
    pub fn free_all(&mut self) -> usize {
        let n = self.len;
        if n > 0 {
            // SAFETY: the first n slots hold owned mbufs, forgotten by setting len 0.
            unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), n as u32) };
            self.len = 0;
        }
        n
    }

    /// Forgets the first `n` packets (they were handed to DPDK, which owns them now)
    /// and moves the rest to the front.
    #[inline(always)]
    pub(crate) fn consume_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        self.slots.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// Frees the first `n` packets (copied out, as to a kernel ring) and moves the rest
    /// to the front.
    #[inline(always)]
    pub(crate) fn free_front(&mut self, n: usize) {
        let n = n.min(self.len);
        if n == 0 {
            return;
        }
        // SAFETY: the first n slots hold owned mbufs; consume_front forgets them.
        unsafe { dpdk_sys::rte_pktmbuf_free_bulk(self.slots.as_mut_ptr(), n as u32) };
        self.consume_front(n);
    }

    /// Raw slots from `len` on, for a burst call to fill; follow with `filled`.
    #[inline(always)]
    pub(crate) fn spare_raw(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, u16) {
        // SAFETY: len <= BURST, so the pointer stays within (or one past) the array.
        let ptr = unsafe { self.slots.as_mut_ptr().add(self.len) };
        (ptr, (BURST - self.len) as u16)
    }

    /// Records that a burst call wrote `n` mbufs into the spare slots.
    #[inline(always)]
    pub(crate) fn filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST);
        self.len += n;
    }

    /// The held packets as raw pointers, for a burst call to consume.
    #[inline(always)]
    pub(crate) fn raw_ptr(&mut self) -> *mut *mut dpdk_sys::rte_mbuf {
        self.slots.as_mut_ptr()
    }
}

/// Iterator of [`MbufBatch::drain`]: owns the packets `next..end` of the batch's slots
/// (the batch itself already counts none).
pub struct Drain<'a> {
    batch: &'a mut MbufBatch,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline(always)]
    fn next(&mut self) -> Option<Mbuf> {
        if self.next >= self.end {
            return None;
        }
        let raw = self.batch.slots[self.next];
        self.next += 1;
        NonNull::new(raw).map(Mbuf::from_raw)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        let left = self.end - self.next;
        if left > 0 {
            // SAFETY: slots next..end still hold owned mbufs that were not yielded, and
            // the batch (len 0) does not count them.
            unsafe {
                dpdk_sys::rte_pktmbuf_free_bulk(
                    self.batch.slots.as_mut_ptr().add(self.next),
                    left as u32,
                )
            };
        }
    }
}

impl Drop for MbufBatch {
    fn drop(&mut self) {
        self.free_all();
    }
}
