//! ARP for IPv4 over Ethernet (RFC 826), the only kind tenet answers or forwards.
//!
//! [`ArpPacket::new_checked`] accepts a buffer of at least [`HEADER_LEN`] bytes whose
//! hardware type is Ethernet (1), protocol type IPv4 (0x0800) and address lengths 6 and
//! 4; anything else is `Malformed`. Bytes past [`HEADER_LEN`] (Ethernet padding) are
//! ignored. Unknown operations parse as [`ArpOperation::Unknown`].

use std::net::Ipv4Addr;

use super::ethernet::{self, read_mac, EtherType, EthernetFrame, EthernetRepr};
use super::{read_u16, Error, Mac, Result};

/// Length of an Ethernet/IPv4 ARP packet.
pub const HEADER_LEN: usize = 28;

/// Hardware type for Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;

/// Protocol type for IPv4.
pub const PTYPE_IPV4: u16 = 0x0800;

/// An ARP operation code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1.
    Request,
    /// 2.
    Reply,
    /// Any other value, kept as is.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> Self {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is too short.
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len) and
    /// [`check_format`](Self::check_format).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        packet.check_format()?;
        Ok(packet)
    }

    /// `Truncated` if the buffer is shorter than [`HEADER_LEN`].
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// `Malformed` unless this is Ethernet/IPv4 ARP; call after `check_len`.
    #[inline(always)]
    pub fn check_format(&self) -> Result<()> {
        if self.hardware_type() == HTYPE_ETHERNET
            && self.protocol_type() == PTYPE_IPV4
            && self.hardware_len() == 6
            && self.protocol_len() == 4
        {
            Ok(())
        } else {
            Err(Error::Malformed)
        }
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

    /// Hardware type (1 for Ethernet).
    #[inline(always)]
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// Protocol type (0x0800 for IPv4).
    #[inline(always)]
    pub fn protocol_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PTYPE.start)
    }

    /// Hardware address length.
    #[inline(always)]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline(always)]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline(always)]
    pub fn operation(&self) -> ArpOperation {
        read_u16(self.buffer.as_ref(), field::OPER.start).into()
    }

    /// Sender hardware address.
    #[inline(always)]
    pub fn sender_hardware_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    #[inline(always)]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        self.read_ipv4(field::SPA)
    }

    /// Target hardware address.
    #[inline(always)]
    pub fn target_hardware_addr(&self) -> Mac {
        read_mac(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    #[inline(always)]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        self.read_ipv4(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    #[inline(always)]
    pub fn set_hardware_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the protocol type.
    #[inline(always)]
    pub fn set_protocol_type(&mut self, value: u16) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the hardware address length.
    #[inline(always)]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    #[inline(always)]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    #[inline(always)]
    pub fn set_operation(&mut self, value: ArpOperation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&u16::from(value).to_be_bytes());
    }

    /// Sets the sender hardware address.
    #[inline(always)]
    pub fn set_sender_hardware_addr(&mut self, addr: Mac) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr);
    }

    /// Sets the sender protocol address.
    #[inline(always)]
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    #[inline(always)]
    pub fn set_target_hardware_addr(&mut self, addr: Mac) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr);
    }

    /// Sets the target protocol address.
    #[inline(always)]
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

/// An owned Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Operation.
    pub operation: ArpOperation,
    /// Sender hardware address.
    pub sender_hardware_addr: Mac,
    /// Sender protocol address.
    pub sender_protocol_addr: Ipv4Addr,
    /// Target hardware address.
    pub target_hardware_addr: Mac,
    /// Target protocol address.
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Reads `packet`, checking its length and format.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        packet.check_format()?;
        Ok(Self {
            operation: packet.operation(),
            sender_hardware_addr: packet.sender_hardware_addr(),
            sender_protocol_addr: packet.sender_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// Length of the packet [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the whole packet into the first [`HEADER_LEN`] bytes of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(HTYPE_ETHERNET);
        packet.set_protocol_type(PTYPE_IPV4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.sender_hardware_addr);
        packet.set_sender_protocol_addr(self.sender_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

/// A broadcast ARP request frame from (`mac`, `ip`) for `target`, padded to Ethernet's
/// 60-byte minimum: what the control plane sends to resolve a neighbour.
pub fn request_frame(mac: Mac, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 60];
    EthernetRepr {
        src_addr: mac,
        dst_addr: ethernet::BROADCAST,
        ethertype: EtherType::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    ArpRepr {
        operation: ArpOperation::Request,
        sender_hardware_addr: mac,
        sender_protocol_addr: ip,
        target_hardware_addr: [0; 6],
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(
        &mut frame[ethernet::HEADER_LEN..ethernet::HEADER_LEN + HEADER_LEN],
    ));
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    // Who has 10.0.0.2? Tell 10.0.0.1 (02:00:00:00:00:01).
    static REQUEST: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // sha
        0x0a, 0x00, 0x00, 0x01, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0x0a, 0x00, 0x00, 0x02, // tpa
    ];

    fn repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            sender_hardware_addr: [0x02, 0, 0, 0, 0, 0x01],
            sender_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            target_hardware_addr: [0; 6],
            target_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), 0x0800);
        assert_eq!(p.hardware_len(), 6);
        assert_eq!(p.protocol_len(), 4);
        assert_eq!(p.operation(), ArpOperation::Request);
        assert_eq!(p.sender_hardware_addr(), [0x02, 0, 0, 0, 0, 0x01]);
        assert_eq!(p.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hardware_addr(), [0; 6]);
        assert_eq!(p.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ArpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; HEADER_LEN];
        let r = repr();
        assert_eq!(r.buffer_len(), HEADER_LEN);
        r.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn setters_write_their_fields() {
        let mut buf = REQUEST;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        p.set_operation(ArpOperation::Reply);
        p.set_sender_hardware_addr([0x02, 0, 0, 0, 0, 0x02]);
        p.set_sender_protocol_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.set_target_hardware_addr([0x02, 0, 0, 0, 0, 0x01]);
        p.set_target_protocol_addr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            ArpRepr::parse(&p).unwrap(),
            ArpRepr {
                operation: ArpOperation::Reply,
                sender_hardware_addr: [0x02, 0, 0, 0, 0, 0x02],
                sender_protocol_addr: Ipv4Addr::new(10, 0, 0, 2),
                target_hardware_addr: [0x02, 0, 0, 0, 0, 0x01],
                target_protocol_addr: Ipv4Addr::new(10, 0, 0, 1),
            }
        );
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        // Ethernet padding after the packet is fine.
        let mut padded = [0u8; 46];
        padded[..HEADER_LEN].copy_from_slice(&REQUEST);
        let p = ArpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap(), repr());
    }

    #[test]
    fn rejects_other_address_families() {
        let cases: [(usize, u8); 6] = [
            (1, 6),    // htype IEEE 802
            (0, 1),    // htype 0x0101
            (2, 0x86), // ptype 0x8600
            (3, 0xdd), // ptype 0x08dd
            (4, 8),    // hlen 8
            (5, 16),   // plen 16
        ];
        for (at, value) in cases {
            let mut buf = REQUEST;
            buf[at] = value;
            assert_eq!(
                ArpPacket::new_checked(&buf[..]).err(),
                Some(Error::Malformed),
                "byte {at} = {value}"
            );
            assert_eq!(
                ArpRepr::parse(&ArpPacket::new_unchecked(&buf[..])).err(),
                Some(Error::Malformed)
            );
        }
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_unchecked(&REQUEST[..27])).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn unknown_operation_round_trips() {
        let mut buf = REQUEST;
        buf[6] = 0x12;
        buf[7] = 0x34;
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Unknown(0x1234));
        let r = ArpRepr::parse(&p).unwrap();
        let mut out = [0xa5u8; HEADER_LEN];
        r.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
        assert_eq!(out, buf);
        assert_eq!(ArpOperation::from(3), ArpOperation::Unknown(3));
        assert_eq!(u16::from(ArpOperation::Unknown(3)), 3);
        assert_eq!(u16::from(ArpOperation::Reply), 2);
    }

    // etherparse 0.16 has no ARP parser; cross-check what it does have: the Ethernet
    // framing and the hardware type constant, around an ARP we emit.
    #[test]
    fn agrees_with_etherparse_framing() {
        assert_eq!(etherparse::ArpHardwareId::ETHER.0, HTYPE_ETHERNET);
        assert_eq!(etherparse::EtherType::IPV4.0, PTYPE_IPV4);
        let mut buf = [0xa5u8; ethernet::HEADER_LEN + HEADER_LEN];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: [0x02, 0, 0, 0, 0, 0x01],
            dst_addr: ethernet::BROADCAST,
            ethertype: EtherType::Arp,
        }
        .emit(&mut eth);
        repr().emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));

        let (ep, rest) = etherparse::Ethernet2Header::from_slice(&buf).unwrap();
        assert_eq!(ep.ether_type, etherparse::EtherType::ARP);
        assert_eq!(ep.destination, ethernet::BROADCAST);
        assert_eq!(rest, &REQUEST[..]);
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(826);
        let mut buf = [0u8; 40];
        for i in 0..2000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= 6 {
                buf[..6].copy_from_slice(&REQUEST[..6]);
            }
            if let Ok(p) = ArpPacket::new_checked(&buf[..len]) {
                let r = ArpRepr::parse(&p).unwrap();
                let _ = (p.into_inner(), r);
            }
        }
    }

    #[test]
    fn a_request_frame_is_a_padded_broadcast_request() {
        let frame = request_frame(
            [2, 0, 0, 0, 0x0c, 1],
            Ipv4Addr::new(192, 168, 77, 1),
            Ipv4Addr::new(192, 168, 77, 2),
        );
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[..6], &[0xff; 6]);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "request");
        assert_eq!(&frame[38..42], &[192, 168, 77, 2], "target");
    }
}
