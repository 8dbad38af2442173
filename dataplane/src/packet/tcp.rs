//! TCP header (RFC 9293) over IPv4, enough to read ports and flags, clamp options and
//! fix checksums.
//!
//! The view covers the whole segment (give it the IPv4 payload): the checksum covers
//! header and data, and the segment length in the pseudo-header is the buffer length.
//! [`TcpPacket::new_checked`] accepts a buffer holding a header whose data offset is at
//! least 5 words and fits in the buffer. Options are exposed as raw bytes.

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// FIN flag.
pub const FLAG_FIN: u16 = 0x001;
/// SYN flag.
pub const FLAG_SYN: u16 = 0x002;
/// RST flag.
pub const FLAG_RST: u16 = 0x004;
/// PSH flag.
pub const FLAG_PSH: u16 = 0x008;
/// ACK flag.
pub const FLAG_ACK: u16 = 0x010;
/// URG flag.
pub const FLAG_URG: u16 = 0x020;
/// ECE flag.
pub const FLAG_ECE: u16 = 0x040;
/// CWR flag.
pub const FLAG_CWR: u16 = 0x080;
/// NS flag (historic, RFC 3540).
pub const FLAG_NS: u16 = 0x100;

const FLAGS_MASK: u16 = 0x01ff;

/// Where the checksum stands in the header, for patching it in place.
pub const CHECKSUM_AT: usize = field::CHECKSUM.start;

pub(crate) mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const FLAGS: Range<usize> = 12..14;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is too short.
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than 20 bytes or than `header_len`;
    /// `Malformed` if the data offset is below 5.
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            Err(Error::Malformed)
        } else if header_len > len {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Sequence number.
    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment number (meaningful when ACK is set).
    #[inline(always)]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::FLAGS.start] >> 4) * 4
    }

    /// All nine flag bits (see the `FLAG_*` constants).
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS.start) & FLAGS_MASK
    }

    /// FIN flag.
    #[inline(always)]
    pub fn fin(&self) -> bool {
        self.flags() & FLAG_FIN != 0
    }

    /// SYN flag.
    #[inline(always)]
    pub fn syn(&self) -> bool {
        self.flags() & FLAG_SYN != 0
    }

    /// RST flag.
    #[inline(always)]
    pub fn rst(&self) -> bool {
        self.flags() & FLAG_RST != 0
    }

    /// PSH flag.
    #[inline(always)]
    pub fn psh(&self) -> bool {
        self.flags() & FLAG_PSH != 0
    }

    /// ACK flag.
    #[inline(always)]
    pub fn ack(&self) -> bool {
        self.flags() & FLAG_ACK != 0
    }

    /// URG flag.
    #[inline(always)]
    pub fn urg(&self) -> bool {
        self.flags() & FLAG_URG != 0
    }

    /// ECE flag.
    #[inline(always)]
    pub fn ece(&self) -> bool {
        self.flags() & FLAG_ECE != 0
    }

    /// CWR flag.
    #[inline(always)]
    pub fn cwr(&self) -> bool {
        self.flags() & FLAG_CWR != 0
    }

    /// Window size (unscaled).
    #[inline(always)]
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// Checksum as stored.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline(always)]
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// Option bytes between the fixed header and `header_len`.
    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Partial sum of pseudo-header and segment, for verify and fill.
    #[inline(always)]
    fn full_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let data = self.buffer.as_ref();
        // Segments never exceed an IPv4 payload; clamp rather than wrap if misused.
        let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
        checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp.into(), len) + checksum::sum(data)
    }

    /// Whether the checksum over pseudo-header and the whole buffer is correct.
    #[inline(always)]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::fold(self.full_sum(src, dst)) == 0xffff
    }

    /// Bytes after the header.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Puts `port` in the source (`source`) or destination port; returns the port it
    /// replaced (what a NAT rewrite patches the checksum with).
    #[inline(always)]
    pub fn replace_port(&mut self, source: bool, port: u16) -> u16 {
        let range = if source {
            field::SRC_PORT
        } else {
            field::DST_PORT
        };
        let old = read_u16(self.buffer.as_ref(), range.start);
        write_u16(self.buffer.as_mut(), range.start, port);
        old
    }

    /// Sets the source port.
    #[inline(always)]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value);
    }

    /// Sets the destination port.
    #[inline(always)]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value);
    }

    /// Sets the sequence number.
    #[inline(always)]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM.start, value);
    }

    /// Sets the acknowledgment number.
    #[inline(always)]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM.start, value);
    }

    /// Sets the header length in bytes (stored as `len / 4`; must be ≤ 60).
    #[inline(always)]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::FLAGS.start];
        *b = (*b & 0x0f) | (((len / 4) as u8) << 4);
    }

    /// Sets all nine flag bits, keeping the data offset (reserved bits cleared).
    #[inline(always)]
    pub fn set_flags(&mut self, flags: u16) {
        let raw = read_u16(self.buffer.as_ref(), field::FLAGS.start);
        write_u16(
            self.buffer.as_mut(),
            field::FLAGS.start,
            (raw & 0xf000) | (flags & FLAGS_MASK),
        );
    }

    #[inline(always)]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let flags = self.flags();
        self.set_flags(if on { flags | flag } else { flags & !flag });
    }

    /// Sets FIN.
    #[inline(always)]
    pub fn set_fin(&mut self, on: bool) {
        self.set_flag(FLAG_FIN, on);
    }

    /// Sets SYN.
    #[inline(always)]
    pub fn set_syn(&mut self, on: bool) {
        self.set_flag(FLAG_SYN, on);
    }

    /// Sets RST.
    #[inline(always)]
    pub fn set_rst(&mut self, on: bool) {
        self.set_flag(FLAG_RST, on);
    }

    /// Sets PSH.
    #[inline(always)]
    pub fn set_psh(&mut self, on: bool) {
        self.set_flag(FLAG_PSH, on);
    }

    /// Sets ACK.
    #[inline(always)]
    pub fn set_ack(&mut self, on: bool) {
        self.set_flag(FLAG_ACK, on);
    }

    /// Sets the window size.
    #[inline(always)]
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE.start, value);
    }

    /// Sets the stored checksum.
    #[inline(always)]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the urgent pointer.
    #[inline(always)]
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value);
    }

    /// Computes and stores the checksum over pseudo-header and the whole buffer.
    #[inline(always)]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let sum = !checksum::fold(self.full_sum(src, dst));
        self.set_checksum(sum);
    }

    /// Option bytes, writable.
    #[inline(always)]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..header_len]
    }

    /// Bytes after the header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

/// An owned TCP header without options.
///
/// Parsing drops options; [`emit`](Self::emit) writes a 20-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// The nine flag bits (`FLAG_*`).
    pub flags: u16,
    /// Window size.
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
}

impl TcpRepr {
    /// Reads the header of `packet` after checking its length (not the checksum).
    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header with checksum 0; call [`TcpPacket::fill_checksum`]
    /// once the payload is in place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut TcpPacket<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        write_u16(
            packet.buffer.as_mut(),
            field::FLAGS.start,
            (((MIN_HEADER_LEN / 4) as u16) << 12) | (self.flags & FLAGS_MASK),
        );
        packet.set_window_len(self.window_len);
        packet.set_checksum(0);
        packet.set_urgent_at(self.urgent_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_port_gives_back_the_port_it_replaced() {
        let mut bytes = [0u8; 20];
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1000);
        packet.set_dst_port(2000);
        assert_eq!(packet.replace_port(true, 1111), 1000);
        assert_eq!(packet.replace_port(false, 2222), 2000);
        assert_eq!((packet.src_port(), packet.dst_port()), (1111, 2222));
    }
    use crate::packet::ethernet::EthernetFrame;
    use crate::packet::ipv4::Ipv4Packet;
    use crate::packet::testutil::XorShift;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // SYN 12345 -> 80, seq 0x01020304, window 29200, checksum for SRC -> DST.
    static SYN: [u8; 20] = [
        0x30, 0x39, 0x00, 0x50, // ports
        0x01, 0x02, 0x03, 0x04, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0x50, 0x02, 0x72, 0x10, // offset 5, SYN, window
        0xf5, 0x40, 0x00, 0x00, // checksum, urgent
    ];

    fn repr() -> TcpRepr {
        TcpRepr {
            src_port: 12345,
            dst_port: 80,
            seq_number: 0x0102_0304,
            ack_number: 0,
            flags: FLAG_SYN,
            window_len: 29200,
            urgent_at: 0,
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 12345);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x0102_0304);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 20);
        assert!(p.syn());
        assert!(!(p.fin() || p.rst() || p.psh() || p.ack() || p.urg() || p.ece() || p.cwr()));
        assert_eq!(p.flags(), FLAG_SYN);
        assert_eq!(p.window_len(), 29200);
        assert_eq!(p.checksum(), 0xf540);
        assert_eq!(p.urgent_at(), 0);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, Ipv4Addr::new(10, 0, 0, 9)));
        assert!(p.options().is_empty());
        assert!(p.payload().is_empty());
        assert_eq!(TcpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 20];
        let r = repr();
        assert_eq!(r.buffer_len(), MIN_HEADER_LEN);
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        assert_eq!(p.checksum(), 0);
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, SYN);
    }

    #[test]
    fn setters_write_their_fields() {
        let mut buf = [0u8; 24 + 3];
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        repr().emit(&mut p);
        p.set_header_len(24);
        p.options_mut().copy_from_slice(&[2, 4, 0x05, 0xb4]);
        p.payload_mut().copy_from_slice(b"xyz");
        p.set_syn(false);
        p.set_ack(true);
        p.set_psh(true);
        p.set_fin(true);
        p.set_rst(true);
        p.set_rst(false);
        p.set_ack_number(0xdead_beef);
        p.set_seq_number(7);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_window_len(3);
        p.set_urgent_at(4);
        p.fill_checksum(SRC, DST);
        let p = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[2, 4, 0x05, 0xb4]);
        assert_eq!(p.payload(), b"xyz");
        assert_eq!(p.flags(), FLAG_ACK | FLAG_PSH | FLAG_FIN);
        assert_eq!((p.seq_number(), p.ack_number()), (7, 0xdead_beef));
        assert_eq!((p.src_port(), p.dst_port()), (1, 2));
        assert_eq!((p.window_len(), p.urgent_at()), (3, 4));
        // Repr drops options.
        let r = TcpRepr::parse(&p).unwrap();
        assert_eq!(r.flags, FLAG_ACK | FLAG_PSH | FLAG_FIN);
        assert_eq!(r.buffer_len(), 20);
    }

    #[test]
    fn rejects_every_bad_length() {
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                TcpPacket::new_checked(&SYN[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        for offset in 0u8..5 {
            let mut b = SYN;
            b[12] = offset << 4;
            assert_eq!(
                TcpPacket::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "offset {offset}"
            );
            assert_eq!(
                TcpRepr::parse(&TcpPacket::new_unchecked(&b[..])).err(),
                Some(Error::Malformed)
            );
        }
        for offset in 6u8..16 {
            let mut b = SYN.to_vec();
            b[12] = offset << 4;
            let header_len = usize::from(offset) * 4;
            b.resize(header_len - 1, 0);
            assert_eq!(
                TcpPacket::new_checked(&b[..]).err(),
                Some(Error::Truncated),
                "offset {offset}"
            );
            b.push(0);
            assert!(TcpPacket::new_checked(&b[..]).is_ok());
        }
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut rng = XorShift::new(793);
        for round in 0..300 {
            let src = rng.next_u32().to_be_bytes();
            let dst = rng.next_u32().to_be_bytes();
            let mut payload = vec![0u8; rng.below(40)];
            rng.fill(&mut payload);
            let (sp, dp, seq, win, ackn) = (
                rng.next_u16(),
                rng.next_u16(),
                rng.next_u32(),
                rng.next_u16(),
                rng.next_u32(),
            );
            let mut hdr = etherparse::TcpHeader::new(sp, dp, seq, win);
            hdr.syn = round % 2 == 0;
            hdr.fin = round % 3 == 0;
            hdr.rst = round % 5 == 0;
            hdr.psh = round % 7 == 0;
            hdr.ece = round % 11 == 0;
            hdr.cwr = round % 13 == 0;
            hdr.ns = round % 17 == 0;
            if round % 4 != 0 {
                hdr.ack = true;
                hdr.acknowledgment_number = ackn;
            }
            if round % 6 == 0 {
                hdr.urg = true;
                hdr.urgent_pointer = 99;
            }
            if round % 2 == 1 {
                hdr.set_options(&[
                    etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                    etherparse::TcpOptionElement::Noop,
                    etherparse::TcpOptionElement::WindowScale(7),
                ])
                .unwrap();
            }
            let builder =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(src, dst, 64)
                    .tcp_header(hdr);
            let mut bytes = Vec::new();
            builder.write(&mut bytes, &payload).unwrap();

            let eth = EthernetFrame::new_checked(&bytes[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let ep = etherparse::TcpHeader::from_slice(ip.payload()).unwrap().0;
            assert_eq!((tcp.src_port(), tcp.dst_port()), (sp, dp));
            assert_eq!(tcp.seq_number(), seq);
            assert_eq!(tcp.ack_number(), ep.acknowledgment_number);
            assert_eq!(tcp.header_len(), ep.header_len());
            assert_eq!(tcp.options(), ep.options.as_slice());
            assert_eq!(
                (
                    tcp.syn(),
                    tcp.fin(),
                    tcp.rst(),
                    tcp.psh(),
                    tcp.ack(),
                    tcp.urg()
                ),
                (ep.syn, ep.fin, ep.rst, ep.psh, ep.ack, ep.urg)
            );
            assert_eq!((tcp.ece(), tcp.cwr()), (ep.ece, ep.cwr));
            assert_eq!(tcp.flags() & FLAG_NS != 0, ep.ns);
            assert_eq!(tcp.window_len(), win);
            assert_eq!(tcp.urgent_at(), ep.urgent_pointer);
            assert_eq!(tcp.checksum(), ep.checksum);
            assert!(
                tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
                "round {round}"
            );
            assert_eq!(tcp.payload(), &payload[..]);

            // Re-emitting an option-less header gives etherparse's bytes.
            if tcp.options().is_empty() {
                let mut out = vec![0xa5u8; ip.payload().len()];
                let mut q = TcpPacket::new_unchecked(&mut out[..]);
                TcpRepr::parse(&tcp).unwrap().emit(&mut q);
                q.payload_mut().copy_from_slice(&payload);
                q.fill_checksum(ip.src_addr(), ip.dst_addr());
                assert_eq!(&out[..], ip.payload());
            }
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(6);
        let mut buf = [0u8; 70];
        for _ in 0..5000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if let Ok(mut p) = TcpPacket::new_checked(&mut buf[..len]) {
                let _ = TcpRepr::parse(&p).unwrap();
                let _ = (p.options().len(), p.payload().len(), p.flags());
                p.fill_checksum(SRC, DST);
                assert!(p.verify_checksum(SRC, DST));
                p.options_mut();
                p.payload_mut();
            }
        }
    }
}
