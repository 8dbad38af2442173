//! IPv4 header (RFC 791).
//!
//! [`Ipv4Packet::new_checked`] accepts a buffer that holds a version-4 header of at
//! least [`MIN_HEADER_LEN`] bytes, its options, and the `total_len` bytes the header
//! declares; bytes past `total_len` (Ethernet padding) are allowed and are not part of
//! [`Ipv4Packet::payload`]. The header checksum is not checked on construction: call
//! [`Ipv4Packet::verify_checksum`]. Options are readable but not interpreted.

use std::net::Ipv4Addr;

use super::checksum;
use super::{read_u16, write_u16, Error, Result};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// An IP protocol number; values tenet does not handle are kept as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 1.
    Icmp,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// 47.
    Gre,
    /// Any other value, kept as is.
    Unknown(u8),
}

impl IpProtocol {
    /// ICMP's protocol number, to match a raw protocol byte against.
    pub const ICMP: u8 = 1;
    /// TCP's protocol number.
    pub const TCP: u8 = 6;
    /// UDP's protocol number.
    pub const UDP: u8 = 17;
    /// GRE's protocol number.
    pub const GRE: u8 = 47;
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            47 => IpProtocol::Gre,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Gre => 47,
            IpProtocol::Unknown(other) => other,
        }
    }
}

pub(crate) mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
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

    /// Checks the header is IPv4 and that the buffer holds the header and `total_len`.
    ///
    /// `Truncated` when the buffer is shorter than 20 bytes, than `header_len` or than
    /// `total_len`; `Malformed` when the version is not 4, IHL is below 5, or
    /// `total_len` is below `header_len`.
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline(always)]
    fn read_ipv4(&self, range: core::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[range];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// IP version (4 once checked).
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN byte (former type of service).
    #[inline(always)]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length of header and payload in bytes.
    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline(always)]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't fragment flag.
    #[inline(always)]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// More fragments flag.
    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the 13-bit field × 8).
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & OFFSET_MASK) << 3
    }

    /// Whether this is a datagram's fragment (more fragments follow, or an offset):
    /// one test of the flags and offset together.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Whether this is version 4 with the 20-byte header of no options (the common
    /// case, checked with one compare).
    #[inline(always)]
    pub fn is_plain(&self) -> bool {
        self.buffer.as_ref()[field::VER_IHL] == 0x45
    }

    /// The protocol's raw number (see [`IpProtocol`]'s constants).
    #[inline(always)]
    pub fn protocol_number(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Time to live.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline(always)]
    pub fn protocol(&self) -> IpProtocol {
        self.buffer.as_ref()[field::PROTOCOL].into()
    }

    /// Header checksum as stored.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_ipv4(field::SRC_ADDR)
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_ipv4(field::DST_ADDR)
    }

    /// Whether the header checksum (over `header_len` bytes) is correct.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..self.header_len()];
        match <&[u8; MIN_HEADER_LEN]>::try_from(header) {
            // Nearly every header has no options: three loads instead of ten.
            Ok(plain) => checksum::ipv4_header_ok(plain),
            Err(_) => checksum::checksum(header) == 0,
        }
    }

    /// Option bytes between the fixed header and `header_len`.
    #[inline(always)]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[MIN_HEADER_LEN..self.header_len()]
    }

    /// Bytes from `header_len` to `total_len`.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline(always)]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (stored as `len / 4`; must be ≤ 60).
    #[inline(always)]
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP and ECN byte.
    #[inline(always)]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    #[inline(always)]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    /// Sets the identification.
    #[inline(always)]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, value);
    }

    #[inline(always)]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let raw = read_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        let raw = if on { raw | flag } else { raw & !flag };
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, raw);
    }

    /// Sets the don't fragment flag.
    #[inline(always)]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(FLAG_DF, value);
    }

    /// Sets the more fragments flag.
    #[inline(always)]
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(FLAG_MF, value);
    }

    /// Sets the fragment offset in bytes (a multiple of 8 below 65536).
    #[inline(always)]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let raw = read_u16(self.buffer.as_ref(), field::FLG_OFF.start);
        write_u16(
            self.buffer.as_mut(),
            field::FLG_OFF.start,
            (raw & !OFFSET_MASK) | (offset >> 3),
        );
    }

    /// Sets the time to live (checksum untouched).
    #[inline(always)]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    #[inline(always)]
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into();
    }

    /// Sets the stored header checksum.
    #[inline(always)]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the source address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the header checksum over `header_len` bytes.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let sum = checksum::checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(sum);
    }

    /// Lowers the TTL by one and patches the checksum (RFC 1624); returns the new TTL.
    ///
    /// Callers check for an expiring TTL first; a TTL of 0 is left unchanged and 0 returned.
    #[inline(always)]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let protocol = self.buffer.as_ref()[field::PROTOCOL];
        let old = u16::from_be_bytes([ttl, protocol]);
        let new = u16::from_be_bytes([ttl - 1, protocol]);
        let sum = checksum::update_u16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(sum);
        ttl - 1
    }

    /// Option bytes, writable.
    #[inline(always)]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[MIN_HEADER_LEN..header_len]
    }

    /// Bytes from `header_len` to `total_len`, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// An owned IPv4 header without options.
///
/// Parsing keeps neither options, the MF flag nor the fragment offset; callers that
/// must not treat fragments as whole packets check them on the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: IpProtocol,
    /// Payload length in bytes (at most 65535 − 20).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub dscp_ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't fragment flag.
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Reads the header of `packet` after checking its length; the checksum is not
    /// checked (see [`Ipv4Packet::verify_checksum`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes a 20-byte header with a correct checksum into the start of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX) - MIN_HEADER_LEN);
        packet.set_version(4);
        packet.set_header_len(MIN_HEADER_LEN);
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len((MIN_HEADER_LEN + self.payload_len) as u16);
        packet.set_ident(self.ident);
        write_u16(
            packet.buffer.as_mut(),
            field::FLG_OFF.start,
            if self.dont_frag { FLAG_DF } else { 0 },
        );
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    // The classic example: 192.168.0.1 -> 192.168.0.199, UDP, DF, TTL 64, 115 bytes.
    static HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, // version 4, ihl 5, tos 0, total 115
        0x00, 0x00, 0x40, 0x00, // ident 0, DF, offset 0
        0x40, 0x11, 0xb8, 0x61, // ttl 64, UDP, checksum
        0xc0, 0xa8, 0x00, 0x01, // src
        0xc0, 0xa8, 0x00, 0xc7, // dst
    ];
    const PAYLOAD_LEN: usize = 115 - 20;

    fn packet_bytes() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend((0..PAYLOAD_LEN).map(|i| i as u8));
        v
    }

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(192, 168, 0, 199),
            protocol: IpProtocol::Udp,
            payload_len: PAYLOAD_LEN,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: true,
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let bytes = packet_bytes();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 115);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.checksum(), 0xb861);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert!(p.verify_checksum());
        assert!(p.options().is_empty());
        assert_eq!(p.payload(), &bytes[20..]);
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 20];
        let r = repr();
        assert_eq!(r.buffer_len(), MIN_HEADER_LEN);
        r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER);
    }

    #[test]
    fn emit_clears_fragment_bits() {
        let mut buf = [0xffu8; 20];
        Ipv4Repr {
            dont_frag: false,
            ..repr()
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[6..8], &[0, 0]);
        assert_eq!(&buf[0..2], &[0x45, 0x00]);
    }

    #[test]
    fn rejects_every_bad_length_and_version() {
        let bytes = packet_bytes();
        for len in 0..MIN_HEADER_LEN {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        // total_len larger than the buffer, at every length short of it.
        for len in MIN_HEADER_LEN..bytes.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&bytes[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        assert!(Ipv4Packet::new_checked(&bytes[..]).is_ok());

        for version in [0u8, 1, 5, 6, 15] {
            let mut b = bytes.clone();
            b[0] = (version << 4) | 5;
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "version {version}"
            );
        }
        for ihl in 0u8..5 {
            let mut b = bytes.clone();
            b[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "ihl {ihl}"
            );
        }
        // IHL 15 (60 bytes) with a 24-byte buffer: the header does not fit.
        let mut b = bytes[..24].to_vec();
        b[0] = 0x4f;
        b[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::Truncated)
        );
        // total_len below header_len.
        for total in [0u16, 19] {
            let mut b = bytes.clone();
            b[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                Ipv4Packet::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "total {total}"
            );
        }
        let mut b = bytes.clone();
        b[0] = 0x46;
        b[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).err(),
            Some(Error::Malformed)
        );
        // Repr::parse runs the same checks on an unchecked view.
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_unchecked(&bytes[..30])).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn padding_is_not_payload() {
        let mut bytes = packet_bytes();
        bytes.extend([0xee; 7]);
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload().len(), PAYLOAD_LEN);
        assert_eq!(Ipv4Repr::parse(&p).unwrap().payload_len, PAYLOAD_LEN);
    }

    #[test]
    fn options_are_skipped() {
        // IHL 6 with a 4-byte option (router alert), 4 payload bytes.
        let mut b = vec![
            0x46, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x20, 0x03, 0x01, 0x02, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 0x94, 0x04, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd,
        ];
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(p.more_frags());
        assert!(!p.dont_frag());
        assert_eq!(p.frag_offset(), 3 * 8);
        assert_eq!(p.protocol(), IpProtocol::Unknown(2));
        p.options_mut()[3] = 1;
        p.payload_mut()[0] = 0;
        assert_eq!(&b[23..25], &[1, 0]);
    }

    #[test]
    fn setters_write_their_fields() {
        let mut bytes = packet_bytes();
        let mut p = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_dscp_ecn(0xb8);
        p.set_ident(0xbeef);
        p.set_dont_frag(false);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        p.set_ttl(3);
        p.set_protocol(IpProtocol::Gre);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        p.set_total_len(40);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.dscp_ecn(), 0xb8);
        assert_eq!(p.ident(), 0xbeef);
        assert!(!p.dont_frag());
        assert!(p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.ttl(), 3);
        assert_eq!(p.protocol(), IpProtocol::Gre);
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(5, 6, 7, 8));
        assert_eq!(p.payload().len(), 20);
        p.set_checksum(p.checksum() ^ 1);
        assert!(!p.verify_checksum());
    }

    #[test]
    fn protocols_round_trip() {
        for (v, p) in [
            (1u8, IpProtocol::Icmp),
            (6, IpProtocol::Tcp),
            (17, IpProtocol::Udp),
            (47, IpProtocol::Gre),
        ] {
            assert_eq!(IpProtocol::from(v), p);
            assert_eq!(u8::from(p), v);
        }
        for v in [0u8, 2, 41, 255] {
            assert_eq!(IpProtocol::from(v), IpProtocol::Unknown(v));
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut rng = XorShift::new(791);
        for round in 0..2000 {
            let mut b = packet_bytes();
            rng.fill(&mut b[1..20]);
            b[2..4].copy_from_slice(&115u16.to_be_bytes());
            if round % 3 == 0 {
                b[8] = 1;
            }
            let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            let ttl = p.ttl();
            if ttl == 0 {
                continue;
            }
            assert_eq!(p.decrement_ttl(), ttl - 1);
            assert_eq!(p.ttl(), ttl - 1);
            assert!(p.verify_checksum(), "round {round}");
            let incremental = p.checksum();
            p.fill_checksum();
            assert_eq!(incremental, p.checksum(), "round {round}");
        }
        // The golden header: 64 -> 63 moves the checksum up by 0x100.
        let mut b = packet_bytes();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.decrement_ttl(), 63);
        assert_eq!(p.checksum(), 0xb961);
        // TTL 0 is left alone.
        p.set_ttl(0);
        p.fill_checksum();
        let sum = p.checksum();
        assert_eq!(p.decrement_ttl(), 0);
        assert_eq!((p.ttl(), p.checksum()), (0, sum));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut rng = XorShift::new(0x0800);
        for _ in 0..500 {
            let payload_len = rng.below(64);
            let mut h = etherparse::Ipv4Header::new(
                payload_len as u16,
                (rng.next_u16() >> 8) as u8,
                etherparse::IpNumber((rng.next_u16() >> 8) as u8),
                rng.next_u32().to_be_bytes(),
                rng.next_u32().to_be_bytes(),
            )
            .unwrap();
            h.dscp = etherparse::Ipv4Dscp::try_new((rng.next_u16() & 0x3f) as u8).unwrap();
            h.ecn = etherparse::Ipv4Ecn::try_new((rng.next_u16() & 3) as u8).unwrap();
            h.identification = rng.next_u16();
            h.dont_fragment = rng.next_u16() & 1 == 1;
            h.more_fragments = rng.next_u16() & 1 == 1;
            h.fragment_offset = etherparse::IpFragOffset::try_new(rng.next_u16() & 0x1fff).unwrap();
            if rng.next_u16() & 1 == 1 {
                h.options =
                    etherparse::Ipv4Options::try_from(&[0x94, 0x04, 0x00, 0x00][..]).unwrap();
                h.set_payload_len(payload_len).unwrap();
            }
            h.header_checksum = h.calc_header_checksum();
            let mut bytes = h.to_bytes().to_vec();
            bytes.extend((0..payload_len).map(|i| i as u8));

            let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(p.header_len(), h.header_len());
            assert_eq!(p.dscp_ecn(), (h.dscp.value() << 2) | h.ecn.value());
            assert_eq!(p.total_len(), h.total_len);
            assert_eq!(p.ident(), h.identification);
            assert_eq!(p.dont_frag(), h.dont_fragment);
            assert_eq!(p.more_frags(), h.more_fragments);
            assert_eq!(p.frag_offset(), h.fragment_offset.byte_offset());
            assert_eq!(p.ttl(), h.time_to_live);
            assert_eq!(u8::from(p.protocol()), h.protocol.0);
            assert_eq!(p.checksum(), h.header_checksum);
            assert_eq!(p.src_addr().octets(), h.source);
            assert_eq!(p.dst_addr().octets(), h.destination);
            assert_eq!(p.options(), h.options.as_slice());
            assert!(p.verify_checksum());
            assert_eq!(p.payload().len(), payload_len);

            // Our emitter writes what etherparse writes for a plain header.
            if h.options.is_empty() && !h.more_fragments && h.fragment_offset.value() == 0 {
                let mut out = [0xa5u8; 20];
                Ipv4Repr::parse(&p)
                    .unwrap()
                    .emit(&mut Ipv4Packet::new_unchecked(&mut out[..]));
                assert_eq!(&out[..], &bytes[..20]);
            }
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(4);
        let mut buf = [0u8; 80];
        for i in 0..5000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= 4 {
                buf[0] = 0x40 | (buf[0] & 0x0f);
                buf[2] = 0;
                buf[3] %= len as u8 + 1;
            }
            if let Ok(mut p) = Ipv4Packet::new_checked(&mut buf[..len]) {
                let _ = (p.verify_checksum(), p.options().len(), p.payload().len());
                let _ = Ipv4Repr::parse(&p).unwrap();
                p.fill_checksum();
                p.decrement_ttl();
                assert!(p.verify_checksum());
                p.payload_mut();
                p.options_mut();
            }
        }
    }
}
