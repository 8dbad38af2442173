//! UDP header (RFC 768) over IPv4.
//!
//! [`UdpPacket::new_checked`] accepts a buffer holding the 8-byte header and the
//! `len` bytes the header declares (at least 8); bytes past `len` are not part of the
//! payload. A zero checksum means "none" over IPv4: it verifies, and a computed zero is
//! sent as 0xffff. Checksums need the IPv4 addresses for the pseudo-header.

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{read_u16, write_u16, Error, Result};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Where the checksum stands in the header, for patching it in place.
pub const CHECKSUM_AT: usize = field::CHECKSUM.start;

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
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

    /// `Truncated` if the buffer is shorter than the header or than `len`;
    /// `Malformed` if `len` is below 8.
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            Err(Error::Malformed)
        } else if len > buffer_len {
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

    /// Length of header and payload, as the header declares it.
    #[inline(always)]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum as stored (0: none).
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Whether the checksum is correct for these IPv4 addresses; true when it is 0.
    #[inline(always)]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let sum =
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp.into(), len) + checksum::sum(data);
        checksum::fold(sum) == 0xffff
    }

    /// Bytes from the end of the header to `len`.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
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

    /// Sets the length field.
    #[inline(always)]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    /// Sets the stored checksum.
    #[inline(always)]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes and stores the checksum over the first `len` bytes and the
    /// pseudo-header; a result of 0 is stored as 0xffff.
    #[inline(always)]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        let sum =
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp.into(), len) + checksum::sum(data);
        let sum = !checksum::fold(sum);
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// Bytes from the end of the header to `len`, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }
}

/// An owned UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes (at most 65535 − 8).
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads the header of `packet` after checking its length (not the checksum).
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with checksum 0 (none); call [`UdpPacket::fill_checksum`]
    /// once the payload is in place to add one.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut UdpPacket<T>) {
        debug_assert!(self.payload_len <= usize::from(u16::MAX) - HEADER_LEN);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((HEADER_LEN + self.payload_len) as u16);
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_port_gives_back_the_port_it_replaced() {
        let mut bytes = [0u8; 8];
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.set_src_port(1000);
        packet.set_dst_port(2000);
        assert_eq!(packet.replace_port(true, 1111), 1000);
        assert_eq!(packet.replace_port(false, 2222), 2000);
        assert_eq!((packet.src_port(), packet.dst_port()), (1111, 2222));
    }
    use crate::packet::ethernet::EthernetFrame;
    use crate::packet::ipv4::Ipv4Packet;
    use crate::packet::testutil::XorShift;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    // 1234 -> 53, 4 bytes "abcd", checksum for SRC -> DST.
    static DATAGRAM: [u8; 12] = [
        0x04, 0xd2, 0x00, 0x35, 0x00, 0x0c, 0xb3, 0xef, b'a', b'b', b'c', b'd',
    ];

    fn repr() -> UdpRepr {
        UdpRepr {
            src_port: 1234,
            dst_port: 53,
            payload_len: 4,
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 1234);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0xb3ef);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(DST, Ipv4Addr::new(192, 168, 0, 2)));
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(UdpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 12];
        let r = repr();
        assert_eq!(r.buffer_len(), HEADER_LEN);
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        assert_eq!(p.checksum(), 0);
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut buf = DATAGRAM;
        buf[6] = 0;
        buf[7] = 0;
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        assert!(p.verify_checksum(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Pick the payload word so that the whole sum folds to 0xffff.
        let mut buf = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 2,
        }
        .emit(&mut p);
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(10, 0, 0, 2);
        let partial = checksum::fold(
            checksum::pseudo_header_v4(src, dst, 17, 10) + checksum::sum(&[0, 1, 0, 2, 0, 10]),
        );
        p.payload_mut().copy_from_slice(&(!partial).to_be_bytes());
        p.fill_checksum(src, dst);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(src, dst));
    }

    #[test]
    fn rejects_every_bad_length() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&DATAGRAM[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        for len in HEADER_LEN..DATAGRAM.len() {
            assert_eq!(
                UdpPacket::new_checked(&DATAGRAM[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        for field_len in 0u16..8 {
            let mut b = DATAGRAM;
            b[4..6].copy_from_slice(&field_len.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "len field {field_len}"
            );
            assert_eq!(
                UdpRepr::parse(&UdpPacket::new_unchecked(&b[..])).err(),
                Some(Error::Malformed)
            );
        }
        // A shorter len field than the buffer: the rest is not payload.
        let mut b = DATAGRAM;
        b[4..6].copy_from_slice(&9u16.to_be_bytes());
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"a");
        assert_eq!(UdpRepr::parse(&p).unwrap().payload_len, 1);
    }

    #[test]
    fn setters_write_their_fields() {
        let mut buf = DATAGRAM;
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_src_port(4789);
        p.set_dst_port(4790);
        p.set_len(10);
        p.fill_checksum(SRC, DST);
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (4789, 4790, 10));
        assert_eq!(p.payload(), b"ab");
        p.set_checksum(0x1234);
        assert!(!p.verify_checksum(SRC, DST));
    }

    #[test]
    fn agrees_with_etherparse() {
        let mut rng = XorShift::new(768);
        for round in 0..300 {
            let src = rng.next_u32().to_be_bytes();
            let dst = rng.next_u32().to_be_bytes();
            let (sp, dp) = (rng.next_u16(), rng.next_u16());
            let mut payload = vec![0u8; rng.below(50)];
            rng.fill(&mut payload);
            let builder =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(src, dst, 64)
                    .udp(sp, dp);
            let mut bytes = Vec::new();
            builder.write(&mut bytes, &payload).unwrap();

            let eth = EthernetFrame::new_checked(&bytes[..]).unwrap();
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            assert!(ip.verify_checksum());
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            assert_eq!((udp.src_port(), udp.dst_port()), (sp, dp));
            assert_eq!(usize::from(udp.len()), HEADER_LEN + payload.len());
            assert_eq!(udp.payload(), &payload[..]);
            assert!(udp.verify_checksum(src, dst), "round {round}");
            let ep = etherparse::UdpHeader::from_slice(ip.payload()).unwrap().0;
            assert_eq!(udp.checksum(), ep.checksum);

            // Our emitter plus fill_checksum gives the same bytes.
            let mut out = vec![0xa5u8; udp.len().into()];
            let mut q = UdpPacket::new_unchecked(&mut out[..]);
            UdpRepr::parse(&udp).unwrap().emit(&mut q);
            q.payload_mut().copy_from_slice(&payload);
            q.fill_checksum(src, dst);
            assert_eq!(&out[..], ip.payload());
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(17);
        let mut buf = [0u8; 32];
        for i in 0..5000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= 6 {
                buf[4] = 0;
                buf[5] %= len as u8 + 1;
            }
            if let Ok(mut p) = UdpPacket::new_checked(&mut buf[..len]) {
                let _ = UdpRepr::parse(&p).unwrap();
                let _ = (p.verify_checksum(SRC, DST), p.payload().len());
                p.fill_checksum(SRC, DST);
                assert!(p.verify_checksum(SRC, DST));
                p.payload_mut();
            }
        }
    }
}
