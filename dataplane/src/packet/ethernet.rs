//! Ethernet II frame header: destination MAC, source MAC, ethertype.
//!
//! [`EthernetFrame::new_checked`] accepts any buffer of at least [`HEADER_LEN`] bytes;
//! the payload is everything after the header (including any trailing padding, which
//! the inner protocol's own length field tells apart). No FCS is expected.

use super::{Error, Mac, Result};

/// Length of an Ethernet II header.
pub const HEADER_LEN: usize = 14;

/// The broadcast address ff:ff:ff:ff:ff:ff.
pub const BROADCAST: Mac = [0xff; 6];

/// Whether `mac` is the broadcast address.
#[inline]
pub fn is_broadcast(mac: &Mac) -> bool {
    *mac == BROADCAST
}

/// Whether `mac` has the group bit set (multicast, including broadcast).
#[inline]
pub fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 0x01 != 0
}

/// An ethertype; values tenet does not handle are kept as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x0806.
    Arp,
    /// 0x8100, an 802.1Q tag follows.
    Vlan,
    /// 0x88a8, an 802.1ad service tag follows.
    QinQ,
    /// 0x86dd.
    Ipv6,
    /// 0x6558, an Ethernet frame follows (what GRE carries for tenet).
    TransparentEthernetBridging,
    /// Any other value, kept as is.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            0x6558 => EtherType::TransparentEthernetBridging,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::TransparentEthernetBridging => 0x6558,
            EtherType::Unknown(other) => other,
        }
    }
}

impl EtherType {
    /// IPv4's ethertype as it stands in a frame, for the pipeline's fast checks of the
    /// raw bytes.
    pub const IPV4_BYTES: [u8; 2] = [0x08, 0x00];
    /// ARP's, likewise.
    pub const ARP_BYTES: [u8; 2] = [0x08, 0x06];
}

/// Both MACs of `frame` as integers (in their low 48 bits: destination, source),
/// from two overlapping 8-byte loads; `None` when the frame is shorter than an
/// Ethernet header. The pipeline compares and hashes MACs this way.
#[inline(always)]
pub fn macs_u64(frame: &[u8]) -> Option<(u64, u64)> {
    let (Some(head), Some(mid)) = (frame.get(..8), frame.get(4..12)) else {
        return None;
    };
    if frame.len() < HEADER_LEN {
        return None;
    }
    let head = u64::from_be_bytes(head.try_into().unwrap_or([0; 8]));
    let mid = u64::from_be_bytes(mid.try_into().unwrap_or([0; 8]));
    Some((head >> 16, mid & 0xffff_ffff_ffff))
}

/// The I/G (group) bit of a MAC held as [`macs_u64`] gives it.
pub const GROUP_BIT: u64 = 1 << 40;

/// `mac` as an integer the way [`macs_u64`] gives a frame's MACs.
#[inline(always)]
pub fn mac_u64(mac: &Mac) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

/// Readdresses `frame` in place: a routed frame's next hop and the MAC it leaves as.
#[inline(always)]
pub fn set_addresses(frame: &mut [u8], dst: Mac, src: Mac) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
}

/// Where a frame's ethertype stands (for fast checks of its raw bytes).
pub const ETHERTYPE_AT: core::ops::Range<usize> = field::ETHERTYPE;

mod field {
    use core::ops::{Range, RangeFrom};

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

#[inline]
pub(crate) fn read_mac(bytes: &[u8]) -> Mac {
    let mut mac = [0; 6];
    mac.copy_from_slice(bytes);
    mac
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is too short.
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// `Truncated` if the buffer is shorter than the header.
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
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

    /// Destination MAC address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::DST])
    }

    /// Source MAC address.
    #[inline(always)]
    pub fn src_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::SRC])
    }

    /// The ethertype of the payload.
    #[inline(always)]
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]]).into()
    }

    /// Bytes after the header.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, addr: Mac) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, addr: Mac) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Sets the ethertype.
    #[inline(always)]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }

    /// Bytes after the header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// An owned Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source MAC address.
    pub src_addr: Mac,
    /// Destination MAC address.
    pub dst_addr: Mac,
    /// Ethertype of the payload.
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// Reads the header of `frame`.
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    static FRAME: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // dst
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    fn repr() -> EthernetRepr {
        EthernetRepr {
            dst_addr: [0x01, 0x02, 0x03, 0x04, 0x05, 0x06],
            src_addr: [0x11, 0x12, 0x13, 0x14, 0x15, 0x16],
            ethertype: EtherType::Ipv4,
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(f.src_addr(), [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(EthernetRepr::parse(&f).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 18];
        let r = repr();
        assert_eq!(r.buffer_len(), HEADER_LEN);
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        r.emit(&mut f);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        let f = EthernetFrame::new_checked(&FRAME[..HEADER_LEN]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn ethertypes_round_trip() {
        let known = [
            (0x0800, EtherType::Ipv4),
            (0x0806, EtherType::Arp),
            (0x8100, EtherType::Vlan),
            (0x88a8, EtherType::QinQ),
            (0x86dd, EtherType::Ipv6),
            (0x6558, EtherType::TransparentEthernetBridging),
        ];
        for (v, t) in known {
            assert_eq!(EtherType::from(v), t);
            assert_eq!(u16::from(t), v);
        }
        for v in [0u16, 0x0801, 0x1234, 0x9100, 0xffff] {
            assert_eq!(EtherType::from(v), EtherType::Unknown(v));
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        let mut buf = FRAME;
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_ethertype(EtherType::Unknown(0x1234));
        assert_eq!(f.ethertype(), EtherType::Unknown(0x1234));
        assert_eq!(&buf[12..14], &[0x12, 0x34]);
    }

    #[test]
    fn address_classes() {
        assert!(is_broadcast(&BROADCAST));
        assert!(is_multicast(&BROADCAST));
        assert!(is_multicast(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]));
        assert!(is_multicast(&[0x33, 0x33, 0x00, 0x00, 0x00, 0x01]));
        assert!(!is_broadcast(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0x01]));
        assert!(!is_multicast(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]));
        assert!(!is_broadcast(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]));
    }

    #[test]
    fn agrees_with_etherparse() {
        let builder = etherparse::PacketBuilder::ethernet2(
            [0x02, 0, 0, 0, 0, 0x0a],
            [0x02, 0, 0, 0, 0, 0x0b],
        )
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, 2000);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, b"hello").unwrap();
        let f = EthernetFrame::new_checked(&bytes[..]).unwrap();
        let ep = etherparse::Ethernet2Header::from_slice(&bytes).unwrap().0;
        assert_eq!(f.src_addr(), ep.source);
        assert_eq!(f.dst_addr(), ep.destination);
        assert_eq!(u16::from(f.ethertype()), ep.ether_type.0);
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload().len(), bytes.len() - HEADER_LEN);

        // And etherparse reads what we emit.
        let mut buf = [0xa5u8; HEADER_LEN];
        EthernetRepr {
            src_addr: [1, 2, 3, 4, 5, 6],
            dst_addr: BROADCAST,
            ethertype: EtherType::Arp,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
        let ep = etherparse::Ethernet2Header::from_slice(&buf).unwrap().0;
        assert_eq!(ep.source, [1, 2, 3, 4, 5, 6]);
        assert_eq!(ep.destination, BROADCAST);
        assert_eq!(ep.ether_type, etherparse::EtherType::ARP);
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(14);
        let mut buf = [0u8; 32];
        for _ in 0..1000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if let Ok(f) = EthernetFrame::new_checked(&buf[..len]) {
                let r = EthernetRepr::parse(&f).unwrap();
                let _ = (f.payload(), r);
            }
        }
    }
}
