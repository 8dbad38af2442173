//! GRE header (RFC 2784 with the key and sequence number extensions of RFC 2890).
//!
//! The view covers the GRE header and its payload exactly (give it the IPv4 payload),
//! since the optional checksum covers both. The flags word holds C (checksum present),
//! K (key present), S (sequence number present) and the version; optional fields follow
//! the protocol type in that order, 4 bytes each, so the header is 4 to 16 bytes.
//!
//! [`GrePacket::new_checked`] rejects as `Malformed` any version other than 0 and any
//! other flag bit (routing present, strict source route, recursion control, reserved0:
//! mask 0x4ff8), so accepted headers never carry RFC 1701 routing; it rejects buffers
//! shorter than the header the flags announce as `Truncated`.

use super::checksum;
use super::ethernet::EtherType;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

/// Length of a header with no optional field.
pub const MIN_HEADER_LEN: usize = 4;

/// Length of a header with checksum, key and sequence number.
pub const MAX_HEADER_LEN: usize = 16;

/// Checksum present.
pub const FLAG_C: u16 = 0x8000;
/// Key present.
pub const FLAG_K: u16 = 0x2000;
/// Sequence number present.
pub const FLAG_S: u16 = 0x1000;
/// Bits that must be zero: routing, strict source route, recursion, reserved0.
pub const RESERVED_MASK: u16 = 0x4ff8;
/// Version bits.
pub const VERSION_MASK: u16 = 0x0007;

pub(crate) mod field {
    use core::ops::Range;

    pub const FLAGS: Range<usize> = 0..2;
    pub const PROTOCOL: Range<usize> = 2..4;
    /// Start of the optional fields.
    pub const OPTIONAL: usize = 4;
}

/// A read/write view of a GRE packet (header and payload).
#[derive(Debug, Clone)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
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

    /// `Truncated` if the buffer is shorter than the header its flags announce.
    #[inline(always)]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN || len < self.header_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// `Malformed` unless version is 0 and no reserved flag is set; call after
    /// `check_len`.
    #[inline(always)]
    pub fn check_format(&self) -> Result<()> {
        if self.flags() & (RESERVED_MASK | VERSION_MASK) != 0 {
            Err(Error::Malformed)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw flags and version word.
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLAGS.start)
    }

    /// Whether the checksum field is present (C).
    #[inline(always)]
    pub fn checksum_present(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    /// Whether the key field is present (K).
    #[inline(always)]
    pub fn key_present(&self) -> bool {
        self.flags() & FLAG_K != 0
    }

    /// Whether the sequence number field is present (S).
    #[inline(always)]
    pub fn seq_present(&self) -> bool {
        self.flags() & FLAG_S != 0
    }

    /// Version (0 once checked).
    #[inline(always)]
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION_MASK) as u8
    }

    /// Protocol type of the payload (0x6558 for Ethernet in tenet).
    #[inline(always)]
    pub fn protocol(&self) -> EtherType {
        read_u16(self.buffer.as_ref(), field::PROTOCOL.start).into()
    }

    /// Header length: 4 plus 4 for each of checksum, key and sequence number present.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        let flags = self.flags();
        MIN_HEADER_LEN
            + 4 * (usize::from(flags & FLAG_C != 0)
                + usize::from(flags & FLAG_K != 0)
                + usize::from(flags & FLAG_S != 0))
    }

    #[inline(always)]
    fn key_offset(&self) -> usize {
        field::OPTIONAL + if self.checksum_present() { 4 } else { 0 }
    }

    #[inline(always)]
    fn seq_offset(&self) -> usize {
        self.key_offset() + if self.key_present() { 4 } else { 0 }
    }

    /// The stored checksum, if present.
    #[inline(always)]
    pub fn checksum(&self) -> Option<u16> {
        if self.checksum_present() {
            Some(read_u16(self.buffer.as_ref(), field::OPTIONAL))
        } else {
            None
        }
    }

    /// The key, if present.
    #[inline(always)]
    pub fn key(&self) -> Option<u32> {
        if self.key_present() {
            Some(read_u32(self.buffer.as_ref(), self.key_offset()))
        } else {
            None
        }
    }

    /// The sequence number, if present.
    #[inline(always)]
    pub fn seq(&self) -> Option<u32> {
        if self.seq_present() {
            Some(read_u32(self.buffer.as_ref(), self.seq_offset()))
        } else {
            None
        }
    }

    /// Whether the checksum over header and payload is correct; true when absent.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// Bytes after the header.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the raw flags and version word.
    #[inline(always)]
    pub fn set_flags(&mut self, flags: u16) {
        write_u16(self.buffer.as_mut(), field::FLAGS.start, flags);
    }

    #[inline(always)]
    fn set_flag(&mut self, flag: u16, on: bool) {
        let flags = self.flags();
        self.set_flags(if on { flags | flag } else { flags & !flag });
    }

    /// Sets C; moves no bytes, so set flags before writing optional fields.
    #[inline(always)]
    pub fn set_checksum_present(&mut self, on: bool) {
        self.set_flag(FLAG_C, on);
    }

    /// Sets K; moves no bytes, so set flags before writing optional fields.
    #[inline(always)]
    pub fn set_key_present(&mut self, on: bool) {
        self.set_flag(FLAG_K, on);
    }

    /// Sets S; moves no bytes, so set flags before writing optional fields.
    #[inline(always)]
    pub fn set_seq_present(&mut self, on: bool) {
        self.set_flag(FLAG_S, on);
    }

    /// Sets the version (low 3 bits).
    #[inline(always)]
    pub fn set_version(&mut self, version: u8) {
        let flags = (self.flags() & !VERSION_MASK) | (u16::from(version) & VERSION_MASK);
        self.set_flags(flags);
    }

    /// Sets the protocol type.
    #[inline(always)]
    pub fn set_protocol(&mut self, protocol: EtherType) {
        write_u16(self.buffer.as_mut(), field::PROTOCOL.start, protocol.into());
    }

    /// Stores `value` as the checksum (and zeroes reserved1); no-op unless C is set.
    #[inline(always)]
    pub fn set_checksum(&mut self, value: u16) {
        debug_assert!(self.checksum_present());
        if self.checksum_present() {
            write_u16(self.buffer.as_mut(), field::OPTIONAL, value);
            write_u16(self.buffer.as_mut(), field::OPTIONAL + 2, 0);
        }
    }

    /// Stores the key; no-op unless K is set.
    #[inline(always)]
    pub fn set_key(&mut self, key: u32) {
        debug_assert!(self.key_present());
        if self.key_present() {
            let at = self.key_offset();
            write_u32(self.buffer.as_mut(), at, key);
        }
    }

    /// Stores the sequence number; no-op unless S is set.
    #[inline(always)]
    pub fn set_seq(&mut self, seq: u32) {
        debug_assert!(self.seq_present());
        if self.seq_present() {
            let at = self.seq_offset();
            write_u32(self.buffer.as_mut(), at, seq);
        }
    }

    /// Computes the checksum over header and payload and stores it; no-op unless C is
    /// set. Call once the payload is in place.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        if self.checksum_present() {
            self.set_checksum(0);
            let sum = checksum::checksum(self.buffer.as_ref());
            self.set_checksum(sum);
        }
    }

    /// Bytes after the header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        &mut self.buffer.as_mut()[header_len..]
    }
}

/// An owned GRE header (version 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreRepr {
    /// Protocol type of the payload.
    pub protocol: EtherType,
    /// Whether the checksum field is present.
    pub checksum: bool,
    /// Key, if present.
    pub key: Option<u32>,
    /// Sequence number, if present.
    pub seq: Option<u32>,
}

impl GreRepr {
    /// Reads the header of `packet`, checking length and format (not the checksum).
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<Self> {
        packet.check_len()?;
        packet.check_format()?;
        Ok(Self {
            protocol: packet.protocol(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            seq: packet.seq(),
        })
    }

    /// Length of the header [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
            + 4 * (self.checksum as usize
                + self.key.is_some() as usize
                + self.seq.is_some() as usize)
    }

    /// Writes the header into the start of `packet`; a present checksum is written as
    /// zero, to be filled with [`GrePacket::fill_checksum`] once the payload is there.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GrePacket<T>) {
        let mut flags = 0;
        if self.checksum {
            flags |= FLAG_C;
        }
        if self.key.is_some() {
            flags |= FLAG_K;
        }
        if self.seq.is_some() {
            flags |= FLAG_S;
        }
        packet.set_flags(flags);
        packet.set_protocol(self.protocol);
        if self.checksum {
            packet.set_checksum(0);
        }
        if let Some(key) = self.key {
            packet.set_key(key);
        }
        if let Some(seq) = self.seq {
            packet.set_seq(seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    // Plain: no optional field, Ethernet payload.
    static PLAIN: [u8; 8] = [0x00, 0x00, 0x65, 0x58, 0xde, 0xad, 0xbe, 0xef];

    // Key only (K), key 1000.
    static KEYED: [u8; 12] = [
        0x20, 0x00, 0x65, 0x58, // K, TEB
        0x00, 0x00, 0x03, 0xe8, // key
        0xde, 0xad, 0xbe, 0xef,
    ];

    // C, K and S, the checksum covering header and payload.
    static FULL: [u8; 20] = [
        0xb0, 0x00, 0x65, 0x58, // C K S, version 0, TEB
        0x48, 0xfc, 0x00, 0x00, // checksum, reserved1
        0x01, 0x02, 0x03, 0x04, // key
        0x00, 0x00, 0x00, 0x07, // seq
        0xde, 0xad, 0xbe, 0xef, // payload
    ];

    fn full_repr() -> GreRepr {
        GreRepr {
            protocol: EtherType::TransparentEthernetBridging,
            checksum: true,
            key: Some(0x0102_0304),
            seq: Some(7),
        }
    }

    #[test]
    fn parses_plain() {
        let p = GrePacket::new_checked(&PLAIN[..]).unwrap();
        assert!(!p.checksum_present() && !p.key_present() && !p.seq_present());
        assert_eq!(p.version(), 0);
        assert_eq!(p.protocol(), EtherType::TransparentEthernetBridging);
        assert_eq!(p.header_len(), 4);
        assert_eq!((p.checksum(), p.key(), p.seq()), (None, None, None));
        assert!(p.verify_checksum(), "absent checksum verifies");
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            GreRepr::parse(&p).unwrap(),
            GreRepr {
                protocol: EtherType::TransparentEthernetBridging,
                checksum: false,
                key: None,
                seq: None,
            }
        );
    }

    #[test]
    fn parses_keyed() {
        let p = GrePacket::new_checked(&KEYED[..]).unwrap();
        assert!(p.key_present() && !p.checksum_present() && !p.seq_present());
        assert_eq!(p.header_len(), 8);
        assert_eq!(p.key(), Some(1000));
        assert_eq!((p.checksum(), p.seq()), (None, None));
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn parses_full() {
        let p = GrePacket::new_checked(&FULL[..]).unwrap();
        assert!(p.checksum_present() && p.key_present() && p.seq_present());
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.checksum(), Some(0x48fc));
        assert_eq!(p.key(), Some(0x0102_0304));
        assert_eq!(p.seq(), Some(7));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(GreRepr::parse(&p).unwrap(), full_repr());

        // Recompute the checksum independently: sum with the field zeroed.
        let mut zeroed = FULL;
        zeroed[4] = 0;
        zeroed[5] = 0;
        assert_eq!(checksum::checksum(&zeroed), 0x48fc);

        // A flipped payload bit is caught.
        let mut bad = FULL;
        bad[19] ^= 0x10;
        assert!(!GrePacket::new_checked(&bad[..]).unwrap().verify_checksum());
    }

    #[test]
    fn checksum_and_seq_without_key() {
        let mut buf = [0xa5u8; 12 + 3];
        let r = GreRepr {
            protocol: EtherType::Ipv4,
            checksum: true,
            key: None,
            seq: Some(0xffff_fffe),
        };
        assert_eq!(r.buffer_len(), 12);
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&[1, 2, 3]);
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(&buf[..4], &[0x90, 0x00, 0x08, 0x00]);
        assert_eq!(&buf[6..12], &[0x00, 0x00, 0xff, 0xff, 0xff, 0xfe]);
        let p = GrePacket::new_checked(&buf[..]).unwrap();
        assert_eq!(GreRepr::parse(&p).unwrap(), r);
        assert_eq!(p.key(), None);
        assert_eq!(p.seq(), Some(0xffff_fffe));
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 20];
        let r = full_repr();
        assert_eq!(r.buffer_len(), 16);
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum();
        assert_eq!(buf, FULL);

        let mut buf = [0xa5u8; 12];
        let r = GreRepr {
            protocol: EtherType::TransparentEthernetBridging,
            checksum: false,
            key: Some(1000),
            seq: None,
        };
        assert_eq!(r.buffer_len(), 8);
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        p.fill_checksum(); // no-op without C
        assert_eq!(buf, KEYED);

        let mut buf = [0xa5u8; 8];
        let r = GreRepr {
            protocol: EtherType::TransparentEthernetBridging,
            checksum: false,
            key: None,
            seq: None,
        };
        assert_eq!(r.buffer_len(), 4);
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, PLAIN);
    }

    #[test]
    fn setters_rewrite_fields() {
        let mut buf = FULL;
        let mut p = GrePacket::new_checked(&mut buf[..]).unwrap();
        p.set_key(0xcafe_f00d);
        p.set_seq(8);
        p.set_protocol(EtherType::Unknown(0x88be));
        assert!(!p.verify_checksum(), "stale checksum");
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.key(), Some(0xcafe_f00d));
        assert_eq!(p.seq(), Some(8));
        assert_eq!(p.protocol(), EtherType::Unknown(0x88be));
        p.set_version(0);
        assert!(GrePacket::new_checked(&buf[..]).is_ok());
    }

    #[test]
    fn rejects_truncation_at_every_boundary() {
        for len in 0..MIN_HEADER_LEN {
            for bytes in [&PLAIN[..], &KEYED[..], &FULL[..]] {
                assert_eq!(
                    GrePacket::new_checked(&bytes[..len]).err(),
                    Some(Error::Truncated),
                    "len {len}"
                );
            }
        }
        for len in MIN_HEADER_LEN..8 {
            assert_eq!(
                GrePacket::new_checked(&KEYED[..len]).err(),
                Some(Error::Truncated)
            );
        }
        for len in MIN_HEADER_LEN..16 {
            assert_eq!(
                GrePacket::new_checked(&FULL[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
            assert_eq!(
                GreRepr::parse(&GrePacket::new_unchecked(&FULL[..len])).err(),
                Some(Error::Truncated)
            );
        }
        // A header with no payload is fine.
        assert!(GrePacket::new_checked(&PLAIN[..4]).is_ok());
        assert!(GrePacket::new_checked(&KEYED[..8]).is_ok());
        assert!(GrePacket::new_checked(&FULL[..16]).is_ok());
    }

    #[test]
    fn rejects_versions_and_reserved_bits() {
        for version in 1u16..8 {
            let mut b = KEYED;
            b[1] |= version as u8;
            let p = GrePacket::new_checked(&b[..]);
            assert_eq!(p.err(), Some(Error::Malformed), "version {version}");
            assert_eq!(GrePacket::new_unchecked(&b[..]).version(), version as u8);
        }
        for bit in 0..16 {
            let flag = 1u16 << bit;
            if flag & RESERVED_MASK == 0 {
                continue;
            }
            let mut b = FULL;
            let flags = u16::from_be_bytes([b[0], b[1]]) | flag;
            b[..2].copy_from_slice(&flags.to_be_bytes());
            assert_eq!(
                GrePacket::new_checked(&b[..]).err(),
                Some(Error::Malformed),
                "flag {flag:#06x}"
            );
            assert_eq!(
                GreRepr::parse(&GrePacket::new_unchecked(&b[..])).err(),
                Some(Error::Malformed)
            );
        }
        // Routing present (RFC 1701) in particular.
        let b = [0x40, 0x00, 0x65, 0x58, 0, 0, 0, 0];
        assert_eq!(GrePacket::new_checked(&b[..]).err(), Some(Error::Malformed));
        // The mask is exactly what is left besides C, K, S and the version.
        assert_eq!(
            RESERVED_MASK | FLAG_C | FLAG_K | FLAG_S | VERSION_MASK,
            0xffff
        );
        assert_eq!(RESERVED_MASK & (FLAG_C | FLAG_K | FLAG_S | VERSION_MASK), 0);
    }

    #[test]
    fn unknown_protocol_round_trips() {
        let mut b = PLAIN;
        b[2] = 0x12;
        b[3] = 0x34;
        let p = GrePacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.protocol(), EtherType::Unknown(0x1234));
        let mut out = [0xa5u8; 8];
        let mut q = GrePacket::new_unchecked(&mut out[..]);
        GreRepr::parse(&p).unwrap().emit(&mut q);
        q.payload_mut().copy_from_slice(&b[4..]);
        assert_eq!(out, b);
    }

    #[test]
    fn checksum_matches_recomputation() {
        let mut rng = XorShift::new(2784);
        for _ in 0..500 {
            let r = GreRepr {
                protocol: EtherType::from(rng.next_u16()),
                checksum: true,
                key: (rng.next_u16() & 1 == 1).then(|| rng.next_u32()),
                seq: (rng.next_u16() & 1 == 1).then(|| rng.next_u32()),
            };
            let payload_len = rng.below(100);
            let mut buf = vec![0u8; r.buffer_len() + payload_len];
            let mut p = GrePacket::new_unchecked(&mut buf[..]);
            r.emit(&mut p);
            rng.fill(p.payload_mut());
            p.fill_checksum();
            assert!(p.verify_checksum());
            let stored = p.checksum().unwrap();
            buf[4] = 0;
            buf[5] = 0;
            assert_eq!(checksum::checksum(&buf), stored);
        }
    }

    #[test]
    fn random_buffers_never_panic() {
        let mut rng = XorShift::new(47);
        let mut buf = [0u8; 24];
        for i in 0..5000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            if i % 2 == 0 && len >= 2 {
                buf[0] &= 0xb0;
                buf[1] = 0;
            }
            if let Ok(mut p) = GrePacket::new_checked(&mut buf[..len]) {
                let r = GreRepr::parse(&p).unwrap();
                assert_eq!(r.buffer_len(), p.header_len());
                let _ = (p.checksum(), p.key(), p.seq(), p.verify_checksum());
                let _ = p.payload().len();
                p.fill_checksum();
                assert!(p.verify_checksum());
                if let Some(k) = r.key {
                    p.set_key(k);
                }
                if let Some(s) = r.seq {
                    p.set_seq(s);
                }
            }
        }
    }
}
