//! 802.1Q / 802.1ad tag: the 4 bytes that follow a 0x8100 or 0x88a8 ethertype.
//!
//! The view starts at the tag control information (TCI) and ends with the inner
//! ethertype; the payload is what that inner ethertype describes. The TCI holds the
//! priority code point (3 bits), the drop eligible indicator (1 bit) and the VLAN id
//! (12 bits). Ids 0 and 4095 are reserved; usable ids are [`VID_MIN`]..=[`VID_MAX`].

use super::ethernet::EtherType;
use super::frame::Frame;
use super::{Error, Result};

/// Length of a VLAN tag (after the outer ethertype).
pub const HEADER_LEN: usize = 4;

/// Lowest usable VLAN id.
pub const VID_MIN: u16 = 1;

/// Highest usable VLAN id.
pub const VID_MAX: u16 = 4094;

/// The 802.1Q tag protocol identifier (the ethertype before a tag).
pub const TPID: u16 = 0x8100;

const VID_MASK: u16 = 0x0fff;
const DEI_BIT: u16 = 0x1000;
const PCP_SHIFT: u32 = 13;

mod field {
    use core::ops::{Range, RangeFrom};

    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: RangeFrom<usize> = 4..;
}

/// A read/write view of a VLAN tag.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is too short.
    #[inline(always)]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// `Truncated` if the buffer is shorter than the tag.
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

    /// The whole tag control information word.
    #[inline(always)]
    pub fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// VLAN id (low 12 bits of the TCI).
    #[inline(always)]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// Priority code point (top 3 bits of the TCI).
    #[inline(always)]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> PCP_SHIFT) as u8
    }

    /// Drop eligible indicator.
    #[inline(always)]
    pub fn dei(&self) -> bool {
        self.tci() & DEI_BIT != 0
    }

    /// Ethertype of what follows the tag.
    #[inline(always)]
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        u16::from_be_bytes([b[0], b[1]]).into()
    }

    /// Bytes after the tag.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the whole tag control information word.
    #[inline(always)]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the VLAN id (only its low 12 bits are used), keeping PCP and DEI.
    #[inline(always)]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & !VID_MASK) | (vid & VID_MASK);
        self.set_tci(tci);
    }

    /// Sets the priority code point (only its low 3 bits are used).
    #[inline(always)]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & !(0x7 << PCP_SHIFT)) | (u16::from(pcp & 0x7) << PCP_SHIFT);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    #[inline(always)]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = if dei {
            self.tci() | DEI_BIT
        } else {
            self.tci() & !DEI_BIT
        };
        self.set_tci(tci);
    }

    /// Sets the inner ethertype.
    #[inline(always)]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }

    /// Bytes after the tag, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// An owned VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanRepr {
    /// VLAN id; only the low 12 bits are emitted.
    pub vid: u16,
    /// Priority code point; only the low 3 bits are emitted.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// Ethertype of what follows the tag.
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// Reads the tag of `tag`.
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Self> {
        tag.check_len()?;
        Ok(Self {
            vid: tag.vid(),
            pcp: tag.pcp(),
            dei: tag.dei(),
            ethertype: tag.ethertype(),
        })
    }

    /// Length of the tag [`emit`](Self::emit) writes.
    #[inline(always)]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the tag into the first [`HEADER_LEN`] bytes of `tag`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, tag: &mut VlanTag<T>) {
        let tci = (u16::from(self.pcp & 0x7) << PCP_SHIFT)
            | if self.dei { DEI_BIT } else { 0 }
            | (self.vid & VID_MASK);
        tag.set_tci(tci);
        tag.set_ethertype(self.ethertype);
    }
}

/// The destination and source MACs a tag goes behind.
const MACS_LEN: usize = 12;

/// Whether `frame` carries an 802.1Q tag behind its MACs (what adds 4 bytes to the
/// longest frame a port takes).
#[inline(always)]
pub fn is_tagged(frame: &[u8]) -> bool {
    frame.get(MACS_LEN..MACS_LEN + 2) == Some(&TPID.to_be_bytes()[..])
}

/// Inserts an 802.1Q tag (PCP 0) for `vid` after the MACs of `frame`; false when the
/// frame has no headroom for it.
#[inline(always)]
pub fn push_tag<F: Frame>(frame: &mut F, vid: u16) -> bool {
    if !frame.prepend(HEADER_LEN) {
        return false;
    }
    let data = frame.data_mut();
    // A fixed-size copy through a register-sized temporary inlines; copy_within of 12
    // bytes is a memmove call.
    let mut macs = [0u8; MACS_LEN];
    macs.copy_from_slice(&data[HEADER_LEN..HEADER_LEN + MACS_LEN]);
    data[..MACS_LEN].copy_from_slice(&macs);
    data[MACS_LEN..MACS_LEN + 2].copy_from_slice(&TPID.to_be_bytes());
    data[MACS_LEN + 2..MACS_LEN + 4].copy_from_slice(&(vid & VID_MASK).to_be_bytes());
    true
}

/// Sets the 802.1Q tag after the MACs of `frame` (the caller checked it is there) to
/// `vid` with PCP 0, as [`pop_tag`] and [`push_tag`] would leave it, without moving
/// the MACs twice.
#[inline(always)]
pub fn retag<F: Frame>(frame: &mut F, vid: u16) {
    let data = frame.data_mut();
    data[MACS_LEN + 2..MACS_LEN + 4].copy_from_slice(&(vid & VID_MASK).to_be_bytes());
}

/// Removes the 802.1Q tag after the MACs of `frame` (the caller checked it is there).
#[inline(always)]
pub fn pop_tag<F: Frame>(frame: &mut F) {
    let data = frame.data_mut();
    let mut macs = [0u8; MACS_LEN];
    macs.copy_from_slice(&data[..MACS_LEN]);
    data[HEADER_LEN..HEADER_LEN + MACS_LEN].copy_from_slice(&macs);
    frame.adjust(HEADER_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ethernet::{self, EthernetFrame};
    use crate::packet::ipv4::Ipv4Packet;
    use crate::packet::testutil::XorShift;
    use crate::packet::udp::UdpPacket;

    // pcp 5, dei 1, vid 0x123, inner IPv4.
    static TAG: [u8; 6] = [0xb1, 0x23, 0x08, 0x00, 0xde, 0xad];

    fn repr() -> VlanRepr {
        VlanRepr {
            vid: 0x123,
            pcp: 5,
            dei: true,
            ethertype: EtherType::Ipv4,
        }
    }

    #[test]
    fn parses_golden_bytes() {
        let t = VlanTag::new_checked(&TAG[..]).unwrap();
        assert_eq!(t.tci(), 0xb123);
        assert_eq!(t.vid(), 0x123);
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.ethertype(), EtherType::Ipv4);
        assert_eq!(t.payload(), &[0xde, 0xad]);
        assert_eq!(VlanRepr::parse(&t).unwrap(), repr());
    }

    #[test]
    fn emits_golden_bytes() {
        let mut buf = [0xa5u8; 6];
        let r = repr();
        assert_eq!(r.buffer_len(), HEADER_LEN);
        let mut t = VlanTag::new_unchecked(&mut buf[..]);
        r.emit(&mut t);
        t.payload_mut().copy_from_slice(&[0xde, 0xad]);
        assert_eq!(buf, TAG);
    }

    #[test]
    fn rejects_every_truncation() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                VlanTag::new_checked(&TAG[..len]).err(),
                Some(Error::Truncated),
                "len {len}"
            );
        }
        assert!(VlanTag::new_checked(&TAG[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn setters_touch_only_their_bits() {
        let mut buf = TAG;
        let mut t = VlanTag::new_checked(&mut buf[..]).unwrap();
        t.set_vid(VID_MAX);
        assert_eq!((t.vid(), t.pcp(), t.dei()), (VID_MAX, 5, true));
        t.set_vid(0xffff);
        assert_eq!((t.vid(), t.pcp(), t.dei()), (0xfff, 5, true), "masked");
        t.set_vid(VID_MIN);
        t.set_pcp(2);
        assert_eq!((t.vid(), t.pcp(), t.dei()), (VID_MIN, 2, true));
        t.set_dei(false);
        assert_eq!((t.vid(), t.pcp(), t.dei()), (VID_MIN, 2, false));
        t.set_pcp(0xff);
        assert_eq!((t.vid(), t.pcp(), t.dei()), (VID_MIN, 7, false), "masked");
        t.set_ethertype(EtherType::Unknown(0x4242));
        assert_eq!(t.ethertype(), EtherType::Unknown(0x4242));
        assert_eq!(buf, [0xe0, 0x01, 0x42, 0x42, 0xde, 0xad]);
    }

    #[test]
    fn agrees_with_etherparse_builder() {
        let vid = etherparse::VlanId::try_new(100).unwrap();
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(vid)
            .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 32)
            .udp(4789, 53);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, b"payload").unwrap();

        let eth = EthernetFrame::new_checked(&bytes[..]).unwrap();
        assert_eq!(eth.ethertype(), EtherType::Vlan);
        let tag = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.pcp(), 0);
        assert!(!tag.dei());
        assert_eq!(tag.ethertype(), EtherType::Ipv4);
        let ip = Ipv4Packet::new_checked(tag.payload()).unwrap();
        assert!(ip.verify_checksum());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (4789, 53));
        assert_eq!(udp.payload(), b"payload");
        assert_eq!(
            ethernet::HEADER_LEN + HEADER_LEN + 20 + 8 + 7,
            bytes.len(),
            "no bytes unaccounted for"
        );
    }

    #[test]
    fn agrees_with_etherparse_header() {
        let mut rng = XorShift::new(8021);
        for _ in 0..500 {
            let vid = rng.next_u16() & 0xfff;
            let pcp = (rng.next_u16() & 7) as u8;
            let dei = rng.next_u16() & 1 == 1;
            let ethertype = rng.next_u16();
            let ep = etherparse::SingleVlanHeader {
                pcp: etherparse::VlanPcp::try_new(pcp).unwrap(),
                drop_eligible_indicator: dei,
                vlan_id: etherparse::VlanId::try_new(vid).unwrap(),
                ether_type: etherparse::EtherType(ethertype),
            };
            let bytes = ep.to_bytes();
            let t = VlanTag::new_checked(&bytes[..]).unwrap();
            assert_eq!((t.vid(), t.pcp(), t.dei()), (vid, pcp, dei));
            assert_eq!(u16::from(t.ethertype()), ethertype);

            let mut buf = [0xa5u8; HEADER_LEN];
            VlanRepr {
                vid,
                pcp,
                dei,
                ethertype: ethertype.into(),
            }
            .emit(&mut VlanTag::new_unchecked(&mut buf[..]));
            assert_eq!(buf, bytes);
        }
    }
}
