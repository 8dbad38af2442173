//! ICMPv4 messages (RFC 792): the 8-byte header common to the messages tenet sends
//! and answers (echo, destination unreachable, time exceeded).
//!
//! The view covers the whole ICMP message (give it the IPv4 payload), since the
//! checksum covers header and data. The last 4 header bytes are the echo identifier and
//! sequence number for echo messages and "rest of header" (unused, or next-hop MTU for
//! fragmentation needed) for the others. Unknown types parse as
//! [`Icmpv4Message::Unknown`].

use super::checksum;
use super::{read_u16, write_u16, Error, Result};

/// Length of the ICMPv4 header.
pub const HEADER_LEN: usize = 8;

/// An ICMPv4 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Message {
    /// 0.
    EchoReply,
    /// 3.
    DstUnreachable,
    /// 8.
    EchoRequest,
    /// 11.
    TimeExceeded,
    /// Any other value, kept as is.
    Unknown(u8),
}

impl From<u8> for Icmpv4Message {
    fn from(value: u8) -> Self {
        match value {
            0 => Icmpv4Message::EchoReply,
            3 => Icmpv4Message::DstUnreachable,
            8 => Icmpv4Message::EchoRequest,
            11 => Icmpv4Message::TimeExceeded,
            other => Icmpv4Message::Unknown(other),
        }
    }
}

impl From<Icmpv4Message> for u8 {
    fn from(value: Icmpv4Message) -> Self {
        match value {
            Icmpv4Message::EchoReply => 0,
            Icmpv4Message::DstUnreachable => 3,
            Icmpv4Message::EchoRequest => 8,
            Icmpv4Message::TimeExceeded => 11,
            Icmpv4Message::Unknown(other) => other,
        }
    }
}

mod field {
    use core::ops::{Range, RangeFrom};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
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

    /// Message type.
    #[inline(always)]
    pub fn msg_type(&self) -> Icmpv4Message {
        self.buffer.as_ref()[field::TYPE].into()
    }

    /// Message code.
    #[inline(always)]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for echo request and reply).
    #[inline(always)]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (meaningful for echo request and reply).
    #[inline(always)]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// The last 4 header bytes as one word, whatever the type.
    #[inline(always)]
    pub fn rest_of_header(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::REST];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Whether the checksum over the whole message is correct.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Bytes after the 8-byte header.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    #[inline(always)]
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Sets the message code.
    #[inline(always)]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the stored checksum.
    #[inline(always)]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the echo identifier.
    #[inline(always)]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, value);
    }

    /// Sets the echo sequence number.
    #[inline(always)]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, value);
    }

    /// Sets the last 4 header bytes as one word.
    #[inline(always)]
    pub fn set_rest_of_header(&mut self, value: u32) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&value.to_be_bytes());
    }

    /// Computes the checksum over the whole message and stores it.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum);
    }

    /// Bytes after the 8-byte header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// An owned ICMPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Repr {
    /// Message type.
    pub msg_type: Icmpv4Message,
    /// Message code.
    pub msg_code: u8,
    /// The last 4 header bytes: ident << 16 | seq_no for echo, see [`Self::echo`].
    pub rest_of_header: u32,
}

impl Icmpv4Repr {
    /// An echo request or reply header.
    #[inline(always)]
    pub const fn echo(msg_type: Icmpv4Message, ident: u16, seq_no: u16) -> Self {
        Self {
            msg_type,
            msg_code: 0,
            rest_of_header: ((ident as u32) << 16) | seq_no as u32,
        }
    }

    /// Destination unreachable, network unreachable (code 0): no route.
    pub const NET_UNREACHABLE: Self = Self {
        msg_type: Icmpv4Message::DstUnreachable,
        msg_code: 0,
        rest_of_header: 0,
    };

    /// Time exceeded in transit (code 0).
    pub const TTL_EXCEEDED: Self = Self {
        msg_type: Icmpv4Message::TimeExceeded,
        msg_code: 0,
        rest_of_header: 0,
    };

    /// Destination unreachable, fragmentation needed and DF set (code 4), with the next
    /// hop's MTU in the low half of the rest of the header (RFC 1191 section 4).
    #[inline(always)]
    pub const fn fragmentation_needed(next_hop_mtu: u16) -> Self {
        Self {
            msg_type: Icmpv4Message::DstUnreachable,
            msg_code: 4,
            rest_of_header: next_hop_mtu as u32,
        }
    }

    /// Reads the header of `packet` after checking its length (not the checksum).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv4Packet<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(Self {
            msg_type: packet.msg_type(),
            msg_code: packet.msg_code(),
            rest_of_header: packet.rest_of_header(),
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header with a zero checksum; call [`Icmpv4Packet::fill_checksum`]
    /// once the payload is in place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        packet.set_msg_type(self.msg_type);
        packet.set_msg_code(self.msg_code);
        packet.set_checksum(0);
        packet.set_rest_of_header(self.rest_of_header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    // Echo request, ident 0x1234, seq 1, data "abcd".
    static ECHO: [u8; 12] = [
        0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn parses_golden_bytes() {
        let p = Icmpv4Packet::new_checked(&ECHO[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0x2104);
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.rest_of_header(), 0x1234_0001);
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), b"abcd");
        assert_eq!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::echo(Icmpv4Message::EchoRequest, 0x1234, 1)
        );
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 12];
        let r = Icmpv4Repr::echo(Icmpv4Message::EchoRequest, 0x1234, 1);
        assert_eq!(r.buffer_len(), HEADER_LEN);
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        assert_eq!(p.checksum(), 0, "emit leaves the checksum for later");
        p.payload_mut().copy_from_slice(b"abcd");
        p.fill_checksum();
        assert_eq!(buf, ECHO);
    }

    #[test]
    fn turns_a_request_into_a_reply() {
        let mut buf = ECHO;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(Icmpv4Message::EchoReply);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0x2904);
        p.set_echo_ident(7);
        p.set_echo_seq_no(9);
        p.set_msg_code(1);
        assert!(!p.verify_checksum());
        assert_eq!((p.echo_ident(), p.echo_seq_no(), p.msg_code()), (7, 9, 1));
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
            assert_eq!(
                Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&ECHO[..len])).err(),
                Some(Error::Truncated)
            );
        }
        let p = Icmpv4Packet::new_checked(&ECHO[..HEADER_LEN]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn types_round_trip() {
        for (v, t) in [
            (0u8, Icmpv4Message::EchoReply),
            (3, Icmpv4Message::DstUnreachable),
            (8, Icmpv4Message::EchoRequest),
            (11, Icmpv4Message::TimeExceeded),
        ] {
            assert_eq!(Icmpv4Message::from(v), t);
            assert_eq!(u8::from(t), v);
        }
        for v in [1u8, 5, 12, 13, 255] {
            assert_eq!(Icmpv4Message::from(v), Icmpv4Message::Unknown(v));
            assert_eq!(u8::from(Icmpv4Message::from(v)), v);
        }
    }

    #[test]
    fn agrees_with_etherparse() {
        use etherparse::{icmpv4, IcmpEchoHeader, Icmpv4Header, Icmpv4Type};
        let payload = b"0123456789abcdefXYZ"; // odd length on purpose
        let cases = [
            (
                Icmpv4Type::EchoRequest(IcmpEchoHeader {
                    id: 0xbeef,
                    seq: 42,
                }),
                Icmpv4Repr::echo(Icmpv4Message::EchoRequest, 0xbeef, 42),
            ),
            (
                Icmpv4Type::EchoReply(IcmpEchoHeader { id: 1, seq: 0xffff }),
                Icmpv4Repr::echo(Icmpv4Message::EchoReply, 1, 0xffff),
            ),
            (
                Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
                Icmpv4Repr {
                    msg_type: Icmpv4Message::TimeExceeded,
                    msg_code: 0,
                    rest_of_header: 0,
                },
            ),
            (
                Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 },
                ),
                Icmpv4Repr {
                    msg_type: Icmpv4Message::DstUnreachable,
                    msg_code: 4,
                    rest_of_header: 1450,
                },
            ),
        ];
        for (ep_type, repr) in cases {
            let h = Icmpv4Header::with_checksum(ep_type, payload);
            let mut bytes = h.to_bytes().to_vec();
            bytes.extend_from_slice(payload);

            let p = Icmpv4Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
            assert_eq!(p.checksum(), h.checksum);
            assert!(p.verify_checksum());
            assert_eq!(p.payload(), payload);

            let mut out = vec![0xa5u8; bytes.len()];
            let mut q = Icmpv4Packet::new_unchecked(&mut out[..]);
            repr.emit(&mut q);
            q.payload_mut().copy_from_slice(payload);
            q.fill_checksum();
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(792);
        let mut buf = [0u8; 20];
        for _ in 0..2000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if let Ok(mut p) = Icmpv4Packet::new_checked(&mut buf[..len]) {
                let _ = Icmpv4Repr::parse(&p).unwrap();
                let _ = (p.verify_checksum(), p.payload().len());
                p.fill_checksum();
                assert!(p.verify_checksum());
            }
        }
    }
}
