//! Software TCP segmentation of IPv4 frames (what Linux's GSO and DPDK's rte_gso do).
//!
//! A container's kernel hands over one large TCP segment (up to about 64 KiB, one
//! buffer) with the segment size it wants on the wire; when the egress port cannot cut
//! it itself, tenet does. The frame is Ethernet (at most one 802.1Q tag), IPv4 and TCP,
//! either alone or carried in GRE (transparent Ethernet bridging, optionally keyed)
//! behind an outer Ethernet and IPv4 header.
//!
//! The large frame's IPv4 total lengths and checksums and its TCP checksum are not
//! trusted: the kernel leaves a partial pseudo-header sum in the TCP field, its lengths
//! describe the unsegmented packet, and the pipeline may have patched addresses
//! incrementally into all of them. [`Layout::write_segment`] recomputes every one for
//! each segment, so nothing is read from them; the payload runs to the end of the frame.
//!
//! Nothing here allocates or panics on any input: [`Layout::parse`] validates every
//! offset once, and [`Layout::write_segment`] checks its buffers against them.
//!
//! [`make_partial`] and [`complete_checksum`] are the two halves of Linux's
//! CHECKSUM_PARTIAL (a virtio-net header's NEEDS_CSUM): leave the pseudo-header sum in
//! the field, then finish it over the L4 bytes.

use core::fmt;

use super::checksum;
use super::ethernet::{self, EtherType, EthernetFrame};
use super::gre::GrePacket;
use super::ipv4::{self, IpProtocol, Ipv4Packet};
use super::tcp::{self, TcpPacket, FLAG_CWR, FLAG_FIN, FLAG_PSH};
use super::udp;
use super::vlan::{self, VlanTag};
use super::write_u16;

/// Why a frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsegmentable {
    /// The frame ends inside a header.
    Truncated,
    /// A header is not one we can read: IPv4 version or IHL, TCP data offset, GRE
    /// reserved bits or version.
    Malformed,
    /// An Ethernet header (outer or inner) carries something other than IPv4, directly
    /// or behind one 802.1Q tag (802.1ad and stacked tags included).
    NotIpv4,
    /// The IPv4 packet is neither TCP nor (outside a tunnel) GRE.
    NotTcp,
    /// An IPv4 fragment: its payload is not a whole TCP segment.
    Fragment,
    /// GRE that carries something other than Ethernet.
    GreNotEthernet,
    /// GRE with a checksum or sequence number: each would have to be recomputed or
    /// renumbered per segment, and tenet never sends either.
    GreChecksumOrSeq,
}

impl fmt::Display for Unsegmentable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsegmentable::Truncated => "truncated frame",
            Unsegmentable::Malformed => "malformed header",
            Unsegmentable::NotIpv4 => "not IPv4",
            Unsegmentable::NotTcp => "not TCP",
            Unsegmentable::Fragment => "IPv4 fragment",
            Unsegmentable::GreNotEthernet => "GRE not carrying Ethernet",
            Unsegmentable::GreChecksumOrSeq => "GRE with checksum or sequence number",
        })
    }
}

impl std::error::Error for Unsegmentable {}

impl From<super::Error> for Unsegmentable {
    fn from(error: super::Error) -> Self {
        match error {
            super::Error::Truncated => Unsegmentable::Truncated,
            super::Error::Malformed => Unsegmentable::Malformed,
        }
    }
}

/// The smallest segment size tenet cuts to: anything less means an MTU that leaves no
/// room for data behind the headers.
pub const MIN_SEGMENT: usize = 256;

/// The smallest segment size a frame may owe (Linux's `TCP_MIN_MSS`).
pub const MIN_OWED_SEGMENT: usize = 88;

/// What a segment's TCP checksum field gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// The full checksum (the segment goes on a wire as is).
    Complete,
    /// Only the folded pseudo-header sum, not complemented (Linux's CHECKSUM_PARTIAL: a
    /// virtio-net header with NEEDS_CSUM tells the kernel or NIC to finish it), which
    /// spares the pass over the payload.
    Partial,
}

/// Where the TCP/IPv4 packet a large frame carries sits, and whether it is tunnelled.
///
/// Only [`Layout::parse`] makes one, so every offset in it lies inside the frame it
/// parsed; [`Layout::write_segment`] refuses a frame of any other length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The outer IPv4 header and its length, for GRE.
    outer_ip: Option<(usize, usize)>,
    ip: usize,
    ip_header_len: usize,
    tcp: usize,
    tcp_header_len: usize,
    payload_len: usize,
}

/// Offset of the IPv4 header behind the Ethernet header at `at`, which may carry one
/// 802.1Q tag.
#[inline]
fn behind_ethernet(frame: &[u8], at: usize) -> Result<usize, Unsegmentable> {
    let eth = EthernetFrame::new_checked(frame.get(at..).unwrap_or_default())?;
    let (ethertype, ip) = match eth.ethertype() {
        EtherType::Vlan => {
            let tag = VlanTag::new_checked(eth.payload())?;
            (
                tag.ethertype(),
                at + ethernet::HEADER_LEN + vlan::HEADER_LEN,
            )
        }
        other => (other, at + ethernet::HEADER_LEN),
    };
    if ethertype == EtherType::Ipv4 {
        Ok(ip)
    } else {
        Err(Unsegmentable::NotIpv4)
    }
}

/// The IPv4 header at `at`: its length and protocol number. `Ipv4Packet::new_checked`
/// would check the total length, which a large frame's is not to be trusted with.
#[inline]
fn ipv4_header(frame: &[u8], at: usize) -> Result<(usize, u8), Unsegmentable> {
    let bytes = frame.get(at..).unwrap_or_default();
    if bytes.len() < ipv4::MIN_HEADER_LEN {
        return Err(Unsegmentable::Truncated);
    }
    let ip = Ipv4Packet::new_unchecked(bytes);
    let header_len = ip.header_len();
    if ip.version() != 4 || header_len < ipv4::MIN_HEADER_LEN {
        return Err(Unsegmentable::Malformed);
    }
    if header_len > bytes.len() {
        return Err(Unsegmentable::Truncated);
    }
    if ip.is_fragment() {
        return Err(Unsegmentable::Fragment);
    }
    Ok((header_len, ip.protocol_number()))
}

impl Layout {
    /// Parses `frame`; the IPv4 total lengths in it are not trusted (the payload runs to
    /// the end of the frame), since the kernel wrote them for the unsegmented packet.
    pub fn parse(frame: &[u8]) -> Result<Layout, Unsegmentable> {
        let mut ip = behind_ethernet(frame, 0)?;
        let (mut ip_header_len, mut protocol) = ipv4_header(frame, ip)?;
        let mut outer_ip = None;
        if protocol == IpProtocol::GRE {
            let gre_at = ip + ip_header_len;
            let gre = GrePacket::new_checked(frame.get(gre_at..).unwrap_or_default())?;
            if gre.checksum_present() || gre.seq_present() {
                return Err(Unsegmentable::GreChecksumOrSeq);
            }
            if gre.protocol() != EtherType::TransparentEthernetBridging {
                return Err(Unsegmentable::GreNotEthernet);
            }
            outer_ip = Some((ip, ip_header_len));
            ip = behind_ethernet(frame, gre_at + gre.header_len())?;
            (ip_header_len, protocol) = ipv4_header(frame, ip)?;
        }
        if protocol != IpProtocol::TCP {
            return Err(Unsegmentable::NotTcp);
        }
        let tcp = ip + ip_header_len;
        let segment = TcpPacket::new_checked(frame.get(tcp..).unwrap_or_default())?;
        let tcp_header_len = segment.header_len();
        Ok(Layout {
            outer_ip,
            ip,
            ip_header_len,
            tcp,
            tcp_header_len,
            payload_len: frame.len() - tcp - tcp_header_len,
        })
    }

    /// Header bytes in front of the payload (copied into every segment).
    #[inline]
    pub fn header_len(&self) -> usize {
        self.tcp + self.tcp_header_len
    }

    /// TCP payload bytes in the large frame.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Offset of the outer IPv4 header when the frame is GRE-tunnelled.
    #[inline]
    pub fn outer_ip_offset(&self) -> Option<usize> {
        self.outer_ip.map(|(at, _)| at)
    }

    /// Offset of the IPv4 header of the TCP packet (the inner one in a tunnel).
    #[inline]
    pub fn ip_offset(&self) -> usize {
        self.ip
    }

    /// Offset of the TCP header: a virtio-net header's csum_start for a segment written
    /// with [`L4Checksum::Partial`] (its csum_offset is [`tcp::CHECKSUM_AT`]).
    #[inline]
    pub fn tcp_offset(&self) -> usize {
        self.tcp
    }

    /// The segment size to cut at for a port that takes frames of at most `max_len`
    /// bytes (its MTU plus the Ethernet header; one 802.1Q tag on `frame` may add 4).
    /// A segment, plain or tunnelled, is cut where its sender asked (`owed`), or smaller
    /// when that would not fit: never larger, since the sender's size answers the MSS
    /// its peer announced, which the peer's MTU bounds (a tunnel's segments filled to a
    /// jumbo underlay reached a container behind a 1,400-byte MTU cut again to the
    /// host end's 1,500, and were dropped there). The far end joins the tunnel's frames
    /// again (`packet::gro`). `None` when less than [`MIN_SEGMENT`] bytes fit (an MTU too
    /// small to carry the headers sensibly), or the sender asked for less than
    /// [`MIN_OWED_SEGMENT`].
    pub fn fitted_mss(&self, frame: &[u8], owed: usize, max_len: usize) -> Option<usize> {
        let max_len = max_len
            + if vlan::is_tagged(frame) {
                vlan::HEADER_LEN
            } else {
                0
            };
        let fits = max_len
            .checked_sub(self.header_len())
            .filter(|&f| f >= MIN_SEGMENT)?;
        // A sender's own size is honoured down to the smallest MSS Linux sends with:
        // a peer may ask for small segments, but a frame owing 1-byte ones is an attack.
        Some(owed.min(fits)).filter(|&m| m >= MIN_OWED_SEGMENT)
    }

    /// Whether the TCP checksum of `frame` (the frame parsed) is right: what came off a
    /// wire is checked before tenet cuts it or hands it on with a checksum still owed,
    /// which the receiver would trust unchecked.
    pub fn tcp_checksum_ok(&self, frame: &[u8]) -> bool {
        if frame.len() != self.header_len() + self.payload_len {
            return false;
        }
        let ip = Ipv4Packet::new_unchecked(&frame[self.ip..]);
        let Ok(tcp_len) = u16::try_from(frame.len() - self.tcp) else {
            return false;
        };
        let pseudo =
            checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), IpProtocol::TCP, tcp_len);
        checksum::fold(pseudo + checksum::sum(&frame[self.tcp..])) == 0xffff
    }

    /// How many segments a segment size of `mss` payload bytes makes: at least 1, since
    /// a frame without payload still goes out (as its headers). An `mss` of 0 counts as
    /// 1 segment, which [`write_segment`](Self::write_segment) then refuses.
    #[inline]
    pub fn segments(&self, mss: usize) -> usize {
        if mss == 0 || self.payload_len == 0 {
            1
        } else {
            self.payload_len.div_ceil(mss)
        }
    }

    /// Payload bytes of segment `index`, or `None` when there is no such segment (or
    /// `mss` is 0).
    #[inline]
    pub fn segment_payload_len(&self, mss: usize, index: usize) -> Option<usize> {
        if mss == 0 {
            return None;
        }
        let start = index.checked_mul(mss)?;
        if start < self.payload_len {
            Some(mss.min(self.payload_len - start))
        } else if start == 0 {
            Some(0)
        } else {
            None
        }
    }

    /// Bytes segment `index` takes (what `out` of [`write_segment`](Self::write_segment)
    /// must hold), or `None` when there is no such segment.
    #[inline]
    pub fn segment_len(&self, mss: usize, index: usize) -> Option<usize> {
        Some(self.header_len() + self.segment_payload_len(mss, index)?)
    }

    /// Writes segment `index` of `frame` (cut at `mss` payload bytes) into the front of
    /// `out` and returns its length ([`segment_len`](Self::segment_len)).
    ///
    /// Every segment gets the headers, then its own inner IPv4 total length,
    /// identification (the original plus `index`, wrapping, as Linux numbers them),
    /// header checksum, TCP sequence number (the original plus `index × mss`, wrapping)
    /// and TCP checksum per `checksum`. PSH and FIN stay only on the last segment, since
    /// they mark the end of what the sender wrote; CWR only on the first, since it
    /// answers one ECN echo. In a tunnel the outer total length and header checksum are
    /// rewritten too; the outer identification is left as is (tenet sends 0 with DF).
    ///
    /// `None` (and `out` unspecified) when `frame` is not as long as the frame parsed,
    /// `mss` is 0, `index` is past the last segment, `out` is too short, or a segment's
    /// IPv4 total length would not fit in 16 bits.
    pub fn write_segment(
        &self,
        frame: &[u8],
        mss: usize,
        index: usize,
        checksum: L4Checksum,
        out: &mut [u8],
    ) -> Option<usize> {
        let header_len = self.header_len();
        if frame.len() != header_len + self.payload_len {
            return None;
        }
        let payload_len = self.segment_payload_len(mss, index)?;
        // No overflow: segment_payload_len checked index × mss.
        let start = header_len + index * mss;
        let len = header_len + payload_len;
        let ip_total = u16::try_from(len - self.ip).ok()?;
        let out = out.get_mut(..len)?;
        let (header, payload) = out.split_at_mut(header_len);
        header.copy_from_slice(&frame[..header_len]);

        if let Some((at, outer_len)) = self.outer_ip {
            let outer_total = u16::try_from(len - at).ok()?;
            let mut outer = Ipv4Packet::new_unchecked(&mut header[at..at + outer_len]);
            outer.set_total_len(outer_total);
            fill_ipv4_checksum(&mut header[at..at + outer_len]);
        }

        let ip_bytes = &mut header[self.ip..self.ip + self.ip_header_len];
        let mut ip = Ipv4Packet::new_unchecked(&mut *ip_bytes);
        ip.set_total_len(ip_total);
        // Truncating the index is the wrapping the identification wants.
        ip.set_ident(ip.ident().wrapping_add(index as u16));
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        fill_ipv4_checksum(ip_bytes);

        let mut tcp = TcpPacket::new_unchecked(&mut header[self.tcp..]);
        // Truncating the offset is the wrapping the sequence space wants.
        tcp.set_seq_number(tcp.seq_number().wrapping_add((index * mss) as u32));
        let mut flags = tcp.flags();
        if index > 0 {
            flags &= !FLAG_CWR;
        }
        if index + 1 < self.segments(mss) {
            flags &= !(FLAG_PSH | FLAG_FIN);
        }
        tcp.set_flags(flags);
        tcp.set_checksum(0);

        let segment_bytes = &frame[start..start + payload_len];
        // Fits: it is part of the inner total length checked above.
        let tcp_len = (self.tcp_header_len + payload_len) as u16;
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, tcp_len);
        let value = match checksum {
            L4Checksum::Complete => {
                // The TCP header's length is a multiple of 4, so summing it and the
                // payload apart gives the sum of the two together.
                let sum = pseudo
                    + checksum::sum(&header[self.tcp..])
                    + checksum::copy_and_sum(payload, segment_bytes);
                !checksum::fold(sum)
            }
            L4Checksum::Partial => {
                payload.copy_from_slice(segment_bytes);
                checksum::fold(pseudo)
            }
        };
        TcpPacket::new_unchecked(&mut header[self.tcp..]).set_checksum(value);
        Some(len)
    }
}

/// Stores the checksum of the IPv4 header that is exactly `header` (the view's
/// `fill_checksum` would trust the IHL in the bytes, which belong to the caller's frame).
#[inline]
pub(super) fn fill_ipv4_checksum(header: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut *header);
    ip.set_checksum(0);
    let value = checksum::checksum(header);
    Ipv4Packet::new_unchecked(header).set_checksum(value);
}

/// Finishes the checksum of a frame whose field holds the partial pseudo-header sum:
/// sums from `start` (the L4 header) to the end and stores the complemented fold at
/// `start + offset` (virtio-net's csum_start and csum_offset, RFC 1071). A UDP result
/// of 0 is stored as 0xffff, since 0 means "no checksum" to UDP (RFC 768); a TCP one
/// stays 0, as [`Layout::write_segment`] and every other TCP stack write it (the two are
/// the same ones-complement value to a receiver). False (frame unchanged) when `start`
/// and `offset` do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let field = start.checked_add(offset);
    let Some(at) = field.filter(|&at| frame.len() >= 2 && at <= frame.len() - 2) else {
        return false;
    };
    let value = !checksum::fold(checksum::sum(&frame[start..]));
    let value = if value == 0 && offset == udp::CHECKSUM_AT {
        0xffff
    } else {
        value
    };
    write_u16(frame, at, value);
    true
}

/// Sets the TCP or UDP checksum field of the IPv4 packet at `ip_offset` in `frame` to
/// the partial pseudo-header sum Linux leaves for CHECKSUM_PARTIAL, from the addresses,
/// the protocol and the L4 length (to the end of the frame, the IPv4 total length not
/// being trusted), so a virtio-net peer or a NIC can finish it. Returns the
/// `(csum_start, csum_offset)` a virtio-net header needs, or `None` (frame unchanged)
/// for anything but an unfragmented TCP or UDP packet over IPv4 whose L4 header fits.
pub fn make_partial(frame: &mut [u8], ip_offset: usize) -> Option<(usize, usize)> {
    let (header_len, protocol) = ipv4_header(frame, ip_offset).ok()?;
    let (checksum_at, min_len) = match protocol {
        IpProtocol::TCP => (tcp::CHECKSUM_AT, tcp::MIN_HEADER_LEN),
        IpProtocol::UDP => (udp::CHECKSUM_AT, udp::HEADER_LEN),
        _ => return None,
    };
    let start = ip_offset + header_len;
    let l4_len = frame.len() - start;
    if l4_len < min_len {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(&frame[ip_offset..]);
    let pseudo = checksum::pseudo_header_v4(
        ip.src_addr(),
        ip.dst_addr(),
        protocol,
        u16::try_from(l4_len).ok()?,
    );
    write_u16(frame, start + checksum_at, checksum::fold(pseudo));
    Some((start, checksum_at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::gre::{FLAG_C, FLAG_K, FLAG_S};
    use crate::packet::tcp::{FLAG_ACK, FLAG_ECE, FLAG_SYN, FLAG_URG};
    use crate::packet::testutil::XorShift;
    use crate::packet::udp::UdpPacket;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const MAC_D: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0d];
    const OUTER_SRC: [u8; 4] = [192, 0, 2, 1];
    const OUTER_DST: [u8; 4] = [192, 0, 2, 2];
    const SRC: [u8; 4] = [10, 1, 2, 3];
    const DST: [u8; 4] = [10, 4, 5, 6];

    /// What a hand-built large frame looks like (its payload aside).
    #[derive(Debug, Clone)]
    struct Shape {
        vlan: Option<u16>,
        /// GRE with its key, if any.
        gre: Option<Option<u32>>,
        outer_ip_options: usize,
        inner_vlan: Option<u16>,
        ip_options: usize,
        tcp_options: usize,
        flags: u16,
        seq: u32,
        ident: u16,
    }

    impl Shape {
        fn plain() -> Self {
            Shape {
                vlan: None,
                gre: None,
                outer_ip_options: 0,
                inner_vlan: None,
                ip_options: 0,
                tcp_options: 0,
                flags: FLAG_ACK | FLAG_PSH,
                seq: 1000,
                ident: 7,
            }
        }

        fn gre(key: Option<u32>) -> Self {
            Shape {
                gre: Some(key),
                vlan: Some(10),
                inner_vlan: Some(20),
                ..Shape::plain()
            }
        }
    }

    fn push_ethernet(v: &mut Vec<u8>, dst: [u8; 6], src: [u8; 6], vlan: Option<u16>) {
        v.extend_from_slice(&dst);
        v.extend_from_slice(&src);
        if let Some(vid) = vlan {
            v.extend_from_slice(&vlan::TPID.to_be_bytes());
            v.extend_from_slice(&(0xa000 | vid).to_be_bytes());
        }
        v.extend_from_slice(&EtherType::IPV4_BYTES);
    }

    /// An IPv4 header whose total length and checksum are `garbage`.
    fn push_ipv4(
        v: &mut Vec<u8>,
        options: usize,
        ident: u16,
        protocol: u8,
        addrs: [[u8; 4]; 2],
        garbage: u16,
    ) {
        v.push(0x40 | (5 + options / 4) as u8);
        v.push(0x2a);
        v.extend_from_slice(&garbage.to_be_bytes());
        v.extend_from_slice(&ident.to_be_bytes());
        v.extend_from_slice(&0x4000u16.to_be_bytes());
        v.push(61);
        v.push(protocol);
        v.extend_from_slice(&garbage.rotate_left(3).to_be_bytes());
        v.extend_from_slice(&addrs[0]);
        v.extend_from_slice(&addrs[1]);
        v.extend((0..options).map(|i| if i + 1 == options { 0 } else { 1 }));
    }

    /// The frame `shape` describes around `payload`, with `garbage` in every length and
    /// checksum the segmenter is to recompute.
    fn build(shape: &Shape, payload: &[u8], garbage: u16) -> Vec<u8> {
        let mut v = Vec::with_capacity(200 + payload.len());
        if let Some(key) = shape.gre {
            push_ethernet(&mut v, MAC_A, MAC_B, shape.vlan);
            push_ipv4(
                &mut v,
                shape.outer_ip_options,
                0,
                IpProtocol::GRE,
                [OUTER_SRC, OUTER_DST],
                garbage,
            );
            let flags = if key.is_some() { FLAG_K } else { 0 };
            v.extend_from_slice(&flags.to_be_bytes());
            v.extend_from_slice(&u16::from(EtherType::TransparentEthernetBridging).to_be_bytes());
            if let Some(key) = key {
                v.extend_from_slice(&key.to_be_bytes());
            }
            push_ethernet(&mut v, MAC_C, MAC_D, shape.inner_vlan);
        } else {
            push_ethernet(&mut v, MAC_C, MAC_D, shape.vlan);
        }
        push_ipv4(
            &mut v,
            shape.ip_options,
            shape.ident,
            IpProtocol::TCP,
            [SRC, DST],
            garbage,
        );
        v.extend_from_slice(&40000u16.to_be_bytes());
        v.extend_from_slice(&443u16.to_be_bytes());
        v.extend_from_slice(&shape.seq.to_be_bytes());
        v.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        let offset = (5 + shape.tcp_options / 4) as u16;
        v.extend_from_slice(&((offset << 12) | shape.flags).to_be_bytes());
        v.extend_from_slice(&502u16.to_be_bytes());
        v.extend_from_slice(&garbage.rotate_left(7).to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        v.extend((0..shape.tcp_options).map(|_| 1));
        v.extend_from_slice(payload);
        v
    }

    /// Every segment of `frame` written with `mode`, after checking what each must hold;
    /// returns them concatenated with their lengths.
    fn check_segments(
        frame: &[u8],
        shape: &Shape,
        payload: &[u8],
        mss: usize,
        mode: L4Checksum,
    ) -> Vec<Vec<u8>> {
        let layout = Layout::parse(frame).unwrap();
        assert_eq!(layout.payload_len(), payload.len());
        assert_eq!(layout.header_len() + payload.len(), frame.len());
        let n = layout.segments(mss);
        assert_eq!(n, payload.len().div_ceil(mss).max(1));
        let mut out = vec![0xa5u8; layout.header_len() + mss];
        let mut joined = Vec::with_capacity(payload.len());
        let mut segments = Vec::with_capacity(n);
        for i in 0..n {
            let len = layout.write_segment(frame, mss, i, mode, &mut out).unwrap();
            assert_eq!(Some(len), layout.segment_len(mss, i));
            assert!(len <= layout.header_len() + mss);
            let seg = &out[..len];
            let ip_at = layout.ip_offset();
            if let Some(outer_at) = layout.outer_ip_offset() {
                assert!(shape.gre.is_some());
                assert_eq!(seg[..outer_at], frame[..outer_at]);
                let outer = Ipv4Packet::new_checked(&seg[outer_at..]).unwrap();
                assert_eq!(usize::from(outer.total_len()), len - outer_at);
                assert!(outer.verify_checksum(), "outer checksum of segment {i}");
                assert_eq!(outer.ident(), 0, "outer identification left alone");
                let gre_at = outer_at + outer.header_len();
                assert_eq!(seg[gre_at..ip_at], frame[gre_at..ip_at]);
            } else {
                assert!(shape.gre.is_none());
                assert_eq!(seg[..ip_at], frame[..ip_at]);
            }
            let ip = Ipv4Packet::new_checked(&seg[ip_at..]).unwrap();
            assert_eq!(usize::from(ip.total_len()), len - ip_at);
            assert!(ip.verify_checksum(), "inner checksum of segment {i}");
            assert_eq!(ip.ident(), shape.ident.wrapping_add(i as u16));
            assert_eq!((ip.ttl(), ip.dscp_ecn(), ip.dont_frag()), (61, 0x2a, true));
            assert_eq!(ip.options(), &frame[ip_at + 20..layout.tcp_offset()]);
            assert_eq!(ip.header_len(), layout.tcp_offset() - ip_at);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            assert_eq!((src, dst), (Ipv4Addr::from(SRC), Ipv4Addr::from(DST)));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(tcp.seq_number(), shape.seq.wrapping_add((i * mss) as u32));
            let mut flags = shape.flags;
            if i > 0 {
                flags &= !FLAG_CWR;
            }
            if i + 1 < n {
                flags &= !(FLAG_PSH | FLAG_FIN);
            }
            assert_eq!(tcp.flags(), flags, "flags of segment {i} of {n}");
            assert_eq!(
                tcp.options(),
                &frame[layout.tcp_offset() + 20..layout.header_len()]
            );
            assert_eq!(
                (tcp.src_port(), tcp.dst_port(), tcp.ack_number()),
                (40000, 443, 0x1234_5678)
            );
            match mode {
                L4Checksum::Complete => assert!(tcp.verify_checksum(src, dst), "segment {i}"),
                L4Checksum::Partial => {
                    let tcp_len = (len - layout.tcp_offset()) as u16;
                    let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, tcp_len);
                    assert_eq!(tcp.checksum(), checksum::fold(pseudo));
                }
            }
            joined.extend_from_slice(tcp.payload());
            segments.push(seg.to_vec());
        }
        assert_eq!(joined, payload, "the segments' payloads make the original");
        assert_eq!(layout.write_segment(frame, mss, n, mode, &mut out), None);
        assert_eq!(layout.segment_len(mss, n), None);
        segments
    }

    /// The etherparse reference for the plain (or VLAN) frame: headers as given, lengths
    /// and checksums computed by etherparse.
    fn reference(
        vlan: Option<u16>,
        ip: &etherparse::Ipv4Header,
        tcp: &etherparse::TcpHeader,
        payload: &[u8],
    ) -> Vec<u8> {
        let eth = etherparse::PacketBuilder::ethernet2(MAC_D, MAC_C);
        let ip = etherparse::IpHeaders::Ipv4(ip.clone(), Default::default());
        let mut bytes = Vec::new();
        match vlan {
            Some(vid) => eth
                .single_vlan(etherparse::VlanId::try_new(vid).unwrap())
                .ip(ip)
                .tcp_header(tcp.clone())
                .write(&mut bytes, payload),
            None => eth
                .ip(ip)
                .tcp_header(tcp.clone())
                .write(&mut bytes, payload),
        }
        .unwrap();
        bytes
    }

    /// `inner` wrapped in Ethernet, IPv4 (etherparse's, ident 0 with DF) and GRE.
    fn reference_gre(key: Option<u32>, inner: &[u8]) -> Vec<u8> {
        let mut gre = Vec::new();
        gre.extend_from_slice(&(if key.is_some() { FLAG_K } else { 0 }).to_be_bytes());
        gre.extend_from_slice(&[0x65, 0x58]);
        if let Some(key) = key {
            gre.extend_from_slice(&key.to_be_bytes());
        }
        let mut outer = etherparse::Ipv4Header::new(
            (gre.len() + inner.len()) as u16,
            64,
            etherparse::IpNumber::GRE,
            OUTER_SRC,
            OUTER_DST,
        )
        .unwrap();
        outer.identification = 0;
        let mut bytes = Vec::new();
        etherparse::Ethernet2Header {
            source: MAC_A,
            destination: MAC_B,
            ether_type: etherparse::EtherType::IPV4,
        }
        .write(&mut bytes)
        .unwrap();
        outer.write(&mut bytes).unwrap();
        bytes.extend_from_slice(&gre);
        bytes.extend_from_slice(inner);
        bytes
    }

    #[test]
    fn three_segments_match_etherparse_byte_for_byte() {
        let mut rng = XorShift::new(0x650);
        let mut payload = vec![0u8; 2500];
        rng.fill(&mut payload);
        let mss = 1000;
        let mut ip =
            etherparse::Ipv4Header::new(0, 61, etherparse::IpNumber::TCP, SRC, DST).unwrap();
        // Identification and sequence number both wrap within the three segments.
        ip.identification = 0xfffe;
        ip.dscp = etherparse::Ipv4Dscp::try_new(10).unwrap();
        ip.options = [1, 1, 1, 0].into();
        let mut tcp = etherparse::TcpHeader::new(40000, 443, 0xffff_fc00, 502);
        tcp.ack = true;
        tcp.acknowledgment_number = 0x1234_5678;
        (tcp.psh, tcp.fin, tcp.cwr, tcp.ece) = (true, true, true, true);
        tcp.set_options(&[
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Noop,
            etherparse::TcpOptionElement::Timestamp(0x0102_0304, 0x0506_0708),
        ])
        .unwrap();
        for (vlan, gre) in [
            (None, None),
            (Some(100), None),
            (None, Some(None)),
            (Some(7), Some(Some(0xfeed))),
        ] {
            let inner = reference(vlan, &ip, &tcp, &payload);
            let mut frame = match gre {
                Some(key) => reference_gre(key, &inner),
                None => inner,
            };
            // What the kernel hands over: the total lengths of the large packet or
            // anything, header checksums stale, the TCP field the pseudo-header sum.
            let layout = Layout::parse(&frame).unwrap();
            let ip_at = layout.ip_offset();
            write_u16(&mut frame, ip_at + 2, 0x4321);
            write_u16(&mut frame, ip_at + 10, 0xbeef);
            if let Some(outer) = layout.outer_ip_offset() {
                write_u16(&mut frame, outer + 2, 0x1111);
                write_u16(&mut frame, outer + 10, 0x2222);
            }
            assert_eq!(
                make_partial(&mut frame, ip_at),
                Some((layout.tcp_offset(), tcp::CHECKSUM_AT))
            );
            assert_eq!(Layout::parse(&frame), Ok(layout));
            assert_eq!(layout.segments(mss), 3);
            assert_eq!(layout.header_len(), ip_at + 24 + 32);

            let mut out = [0u8; 2000];
            let mut partial = [0u8; 2000];
            for i in 0..3 {
                let mut seg_ip = ip.clone();
                seg_ip.identification = ip.identification.wrapping_add(i as u16);
                let mut seg_tcp = tcp.clone();
                seg_tcp.sequence_number = tcp.sequence_number.wrapping_add(i * mss as u32);
                seg_tcp.cwr = i == 0;
                seg_tcp.psh = i == 2;
                seg_tcp.fin = i == 2;
                let part = &payload[i as usize * mss..((i as usize + 1) * mss).min(payload.len())];
                let inner = reference(vlan, &seg_ip, &seg_tcp, part);
                let expected = match gre {
                    Some(key) => reference_gre(key, &inner),
                    None => inner,
                };
                let len = layout
                    .write_segment(&frame, mss, i as usize, L4Checksum::Complete, &mut out)
                    .unwrap();
                assert_eq!(out[..len], expected[..], "segment {i} of {vlan:?} {gre:?}");

                // The same segment with the checksum left to the receiver, finished by
                // complete_checksum, is the same bytes.
                let plen = layout
                    .write_segment(&frame, mss, i as usize, L4Checksum::Partial, &mut partial)
                    .unwrap();
                assert_eq!(plen, len);
                assert_ne!(partial[..len], expected[..]);
                assert!(complete_checksum(
                    &mut partial[..len],
                    layout.tcp_offset(),
                    tcp::CHECKSUM_AT
                ));
                assert_eq!(partial[..len], expected[..]);
            }
        }
    }

    #[test]
    fn hand_built_frames_segment_correctly() {
        let mut rng = XorShift::new(3);
        let mut payload = vec![0u8; 4001];
        rng.fill(&mut payload);
        let shapes = [
            Shape::plain(),
            Shape {
                vlan: Some(5),
                ip_options: 40,
                tcp_options: 40,
                ..Shape::plain()
            },
            Shape::gre(None),
            Shape {
                outer_ip_options: 8,
                ..Shape::gre(Some(0xdead_beef))
            },
            Shape {
                vlan: None,
                inner_vlan: None,
                ..Shape::gre(Some(1))
            },
        ];
        for shape in &shapes {
            let frame = build(shape, &payload, 0x5555);
            for mss in [1, 2, 3, 536, 1448, 4000, 4001, 9000] {
                for mode in [L4Checksum::Complete, L4Checksum::Partial] {
                    check_segments(&frame, shape, &payload, mss, mode);
                }
            }
        }
    }

    #[test]
    fn a_frame_without_payload_is_one_segment_of_headers() {
        for shape in [
            Shape {
                flags: FLAG_ACK | FLAG_FIN | FLAG_CWR,
                ..Shape::plain()
            },
            Shape::gre(Some(3)),
        ] {
            let frame = build(&shape, &[], 0);
            let layout = Layout::parse(&frame).unwrap();
            assert_eq!(layout.payload_len(), 0);
            assert_eq!(layout.segments(1448), 1);
            assert_eq!(layout.segment_len(1448, 0), Some(frame.len()));
            let segs = check_segments(&frame, &shape, &[], 1448, L4Checksum::Complete);
            assert_eq!(segs[0].len(), frame.len());
        }
    }

    #[test]
    fn segments_are_fitted_to_the_port() {
        // Plain: 14 + 20 + 20 bytes of headers; the sender's size where it fits.
        let plain = build(&Shape::plain(), &[0; 4000], 0);
        let layout = Layout::parse(&plain).unwrap();
        assert_eq!(layout.fitted_mss(&plain, 1448, 1514), Some(1448));
        assert_eq!(
            layout.fitted_mss(&plain, 8948, 1514),
            Some(1460),
            "the MTU cuts"
        );
        assert_eq!(
            layout.fitted_mss(&plain, 536, 9014),
            Some(536),
            "a small MSS stands"
        );
        assert_eq!(
            layout.fitted_mss(&plain, 1, 1514),
            None,
            "1-byte segments refused"
        );
        assert_eq!(
            layout.fitted_mss(&plain, 1448, 200),
            None,
            "no room behind the headers"
        );
        // Tunnelled (outer tag, inner tag): the sender's size on a jumbo underlay, less
        // on a small one (the outer tag may add its 4 bytes).
        let tunnelled = build(&Shape::gre(Some(7)), &[0; 20000], 0);
        let layout = Layout::parse(&tunnelled).unwrap();
        assert_eq!(layout.fitted_mss(&tunnelled, 1448, 9014), Some(1448));
        let fits = 1514 + 4 - layout.header_len();
        assert_eq!(layout.fitted_mss(&tunnelled, 1448, 1514), Some(fits));
        assert_eq!(layout.fitted_mss(&tunnelled, 1, 9014), None);
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        let payload = [7u8; 3000];
        let frame = build(&Shape::gre(Some(9)), &payload, 0);
        let layout = Layout::parse(&frame).unwrap();
        let mut out = vec![0u8; 4000];
        let complete = L4Checksum::Complete;
        assert_eq!(layout.segments(0), 1);
        assert_eq!(
            layout.write_segment(&frame, 0, 0, complete, &mut out),
            None,
            "mss 0"
        );
        assert_eq!(layout.segment_len(0, 0), None);
        assert_eq!(
            layout.write_segment(&frame, 1000, 3, complete, &mut out),
            None,
            "past the end"
        );
        assert_eq!(
            layout.write_segment(&frame, 1000, usize::MAX, complete, &mut out),
            None
        );
        assert_eq!(
            layout.write_segment(&frame, usize::MAX, 1, complete, &mut out),
            None
        );
        let need = layout.segment_len(1000, 2).unwrap();
        assert_eq!(
            layout.write_segment(&frame, 1000, 2, complete, &mut out[..need - 1]),
            None
        );
        assert_eq!(
            layout.write_segment(&frame, 1000, 2, complete, &mut out[..need]),
            Some(need)
        );
        assert_eq!(
            layout.write_segment(&frame[1..], 1000, 0, complete, &mut out),
            None,
            "another frame"
        );
        let mut longer = frame.clone();
        longer.push(0);
        assert_eq!(
            layout.write_segment(&longer, 1000, 0, complete, &mut out),
            None
        );

        // More than 64 KiB in one frame is fine; a segment whose IPv4 packet would not
        // fit a 16-bit total length is not.
        let big = build(&Shape::plain(), &vec![1u8; 70_000], 0);
        let layout = Layout::parse(&big).unwrap();
        let mut out = vec![0u8; big.len()];
        assert_eq!(layout.segments(70_000), 1);
        assert_eq!(
            layout.write_segment(&big, 70_000, 0, complete, &mut out),
            None
        );
        let mss = 65_535 - 40;
        assert!(layout
            .write_segment(&big, mss, 0, complete, &mut out)
            .is_some());
        assert_eq!(
            layout.write_segment(&big, mss + 1, 0, complete, &mut out),
            None
        );
        assert_eq!(layout.segments(1448), 70_000usize.div_ceil(1448));
        check_segments(&big, &Shape::plain(), &vec![1u8; 70_000], 1448, complete);
    }

    #[test]
    fn refuses_frames_it_cannot_segment() {
        let payload = [0u8; 100];
        let parse = |f: &[u8]| Layout::parse(f).err();
        let plain = build(&Shape::plain(), &payload, 0);
        let tagged = build(
            &Shape {
                vlan: Some(3),
                ..Shape::plain()
            },
            &payload,
            0,
        );
        let gre = build(
            &Shape {
                vlan: None,
                ..Shape::gre(None)
            },
            &payload,
            0,
        );
        let ip = 14;
        let gre_at = 14 + 20;
        let inner_ip = gre_at + 4 + 14 + 4;

        for flag in [FLAG_C, FLAG_S, FLAG_C | FLAG_K, FLAG_S | FLAG_K] {
            let mut f = gre.clone();
            write_u16(&mut f, gre_at, flag);
            assert_eq!(
                parse(&f),
                Some(Unsegmentable::GreChecksumOrSeq),
                "{flag:#x}"
            );
        }
        let mut f = gre.clone();
        write_u16(&mut f, gre_at, 0x0001); // version 1 (PPTP)
        assert_eq!(parse(&f), Some(Unsegmentable::Malformed));
        let mut f = gre.clone();
        write_u16(&mut f, gre_at, 0x4000); // routing present
        assert_eq!(parse(&f), Some(Unsegmentable::Malformed));
        let mut f = gre.clone();
        f[gre_at + 2..gre_at + 4].copy_from_slice(&EtherType::IPV4_BYTES);
        assert_eq!(parse(&f), Some(Unsegmentable::GreNotEthernet));
        let mut f = gre.clone();
        f[inner_ip + 9] = IpProtocol::GRE;
        assert_eq!(parse(&f), Some(Unsegmentable::NotTcp), "GRE in GRE");
        let mut f = gre.clone();
        f[inner_ip - 2..inner_ip].copy_from_slice(&EtherType::ARP_BYTES);
        assert_eq!(
            parse(&f),
            Some(Unsegmentable::NotIpv4),
            "inner tag carries ARP"
        );

        for protocol in [IpProtocol::UDP, IpProtocol::ICMP, 0, 255] {
            let mut f = plain.clone();
            f[ip + 9] = protocol;
            assert_eq!(parse(&f), Some(Unsegmentable::NotTcp));
        }
        let mut f = plain.clone();
        f[12..14].copy_from_slice(&EtherType::ARP_BYTES);
        assert_eq!(parse(&f), Some(Unsegmentable::NotIpv4));
        let mut f = plain.clone();
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(parse(&f), Some(Unsegmentable::NotIpv4), "IPv6");
        let mut f = tagged.clone();
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(parse(&f), Some(Unsegmentable::NotIpv4), "802.1ad");
        let mut f = tagged.clone();
        f[16..18].copy_from_slice(&vlan::TPID.to_be_bytes());
        assert_eq!(parse(&f), Some(Unsegmentable::NotIpv4), "two tags");

        for (at, value, why) in [
            (ip, 0x44, "IHL 4"),
            (ip, 0x65, "version 6"),
            (ip, 0x05, "version 0"),
        ] {
            let mut f = plain.clone();
            f[at] = value;
            assert_eq!(parse(&f), Some(Unsegmentable::Malformed), "{why}");
        }
        let mut f = gre.clone();
        f[inner_ip] = 0x43;
        assert_eq!(parse(&f), Some(Unsegmentable::Malformed), "inner IHL 3");
        let mut f = plain.clone();
        f[ip + 20 + 12] = 0x40;
        assert_eq!(
            parse(&f),
            Some(Unsegmentable::Malformed),
            "TCP data offset 4"
        );
        let mut f = plain.clone();
        f[ip + 20 + 12] = 0xf0;
        assert_eq!(
            parse(&f[..ip + 20 + 59]),
            Some(Unsegmentable::Truncated),
            "TCP options past the end"
        );
        for flags in [0x2000u16, 0x0001, 0x6000, 0x1fff] {
            let mut f = plain.clone();
            write_u16(&mut f, ip + 6, flags);
            assert_eq!(parse(&f), Some(Unsegmentable::Fragment), "{flags:#x}");
            let mut f = gre.clone();
            write_u16(&mut f, ip + 6, flags);
            assert_eq!(parse(&f), Some(Unsegmentable::Fragment), "outer {flags:#x}");
        }

        // Cut anywhere in the headers, every one of these is truncated.
        for frame in [&plain, &tagged, &gre, &build(&Shape::gre(Some(1)), &[], 0)] {
            let header_len = Layout::parse(frame).unwrap().header_len();
            for len in 0..header_len {
                assert_eq!(
                    parse(&frame[..len]),
                    Some(Unsegmentable::Truncated),
                    "len {len}"
                );
            }
            assert_eq!(
                Layout::parse(&frame[..header_len]).unwrap().payload_len(),
                0
            );
        }
        assert_eq!(
            Unsegmentable::GreChecksumOrSeq.to_string(),
            "GRE with checksum or sequence number"
        );
    }

    #[test]
    fn flags_other_than_psh_fin_and_cwr_stay_on_every_segment() {
        let shape = Shape {
            flags: FLAG_ACK | FLAG_ECE | FLAG_URG | FLAG_SYN | tcp::FLAG_NS,
            ..Shape::plain()
        };
        let payload = [3u8; 300];
        let frame = build(&shape, &payload, 1);
        for seg in check_segments(&frame, &shape, &payload, 100, L4Checksum::Complete) {
            let ip = Ipv4Packet::new_checked(&seg[14..]).unwrap();
            assert_eq!(
                TcpPacket::new_checked(ip.payload()).unwrap().flags(),
                shape.flags
            );
        }
    }

    /// A frame of `l4_len` TCP or UDP bytes behind a VLAN tag, its checksum field random.
    fn l4_frame(rng: &mut XorShift, udp: bool, l4_len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        push_ethernet(&mut v, MAC_A, MAC_B, Some(42));
        let protocol = if udp {
            IpProtocol::UDP
        } else {
            IpProtocol::TCP
        };
        let src = rng.next_u32().to_be_bytes();
        let dst = rng.next_u32().to_be_bytes();
        push_ipv4(
            &mut v,
            4 * rng.below(3),
            rng.next_u16(),
            protocol,
            [src, dst],
            rng.next_u16(),
        );
        let start = v.len();
        v.resize(start + l4_len, 0);
        rng.fill(&mut v[start..]);
        if udp {
            write_u16(&mut v, start + 4, l4_len as u16);
        } else {
            v[start + 12] = 0x50;
        }
        v
    }

    #[test]
    fn make_partial_then_complete_equals_a_fresh_checksum() {
        let mut rng = XorShift::new(1071);
        for round in 0..4000 {
            let udp = round % 2 == 0;
            let min = if udp {
                udp::HEADER_LEN
            } else {
                tcp::MIN_HEADER_LEN
            };
            // Odd and even lengths alike, the short ones often.
            let l4_len = min
                + if round % 3 == 0 {
                    rng.below(8)
                } else {
                    rng.below(3000)
                };
            let mut frame = l4_frame(&mut rng, udp, l4_len);
            let ip_at = 18;
            let start = frame.len() - l4_len;
            let mut fresh = frame.clone();
            let (src, dst) = {
                let ip = Ipv4Packet::new_unchecked(&fresh[ip_at..]);
                (ip.src_addr(), ip.dst_addr())
            };
            let expected = if udp {
                let mut p = UdpPacket::new_checked(&mut fresh[start..]).unwrap();
                p.fill_checksum(src, dst);
                p.checksum()
            } else {
                let mut p = TcpPacket::new_checked(&mut fresh[start..]).unwrap();
                p.fill_checksum(src, dst);
                p.checksum()
            };
            let at = if udp {
                udp::CHECKSUM_AT
            } else {
                tcp::CHECKSUM_AT
            };
            assert_eq!(make_partial(&mut frame, ip_at), Some((start, at)));
            let field = u16::from_be_bytes([frame[start + at], frame[start + at + 1]]);
            let pseudo = checksum::pseudo_header_v4(src, dst, frame[ip_at + 9], l4_len as u16);
            assert_eq!(field, checksum::fold(pseudo));
            assert!(complete_checksum(&mut frame, start, at));
            assert_eq!(
                u16::from_be_bytes([frame[start + at], frame[start + at + 1]]),
                expected
            );
            write_u16(&mut fresh, start + at, expected);
            assert_eq!(frame, fresh, "round {round}: nothing else changed");
            if udp {
                assert!(UdpPacket::new_checked(&frame[start..])
                    .unwrap()
                    .verify_checksum(src, dst));
            } else {
                assert!(TcpPacket::new_checked(&frame[start..])
                    .unwrap()
                    .verify_checksum(src, dst));
            }
        }
    }

    #[test]
    fn make_partial_and_complete_refuse_what_does_not_fit() {
        let mut rng = XorShift::new(5);
        let frame = l4_frame(&mut rng, false, 40);
        let ip_at = 18;
        let start = frame.len() - 40;
        let check = |mut f: Vec<u8>, ip_at: usize| {
            let before = f.clone();
            assert_eq!(make_partial(&mut f, ip_at), None);
            assert_eq!(f, before, "unchanged");
        };
        check(frame[..start + 19].to_vec(), ip_at);
        check(frame.clone(), ip_at + 1);
        check(frame.clone(), frame.len() + 5);
        check(frame.clone(), usize::MAX);
        let mut icmp = frame.clone();
        icmp[ip_at + 9] = IpProtocol::ICMP;
        check(icmp, ip_at);
        let mut fragment = frame.clone();
        fragment[ip_at + 6] |= 0x20;
        check(fragment, ip_at);
        let udp = l4_frame(&mut rng, true, 8);
        assert!(make_partial(&mut udp.clone(), ip_at).is_some());
        check(udp[..udp.len() - 1].to_vec(), ip_at);

        for (s, o) in [
            (frame.len(), 0),
            (frame.len() - 1, 0),
            (start, 39),
            (usize::MAX, 2),
            (2, usize::MAX - 1),
            (0, frame.len() - 1),
        ] {
            let mut f = frame.clone();
            assert!(!complete_checksum(&mut f, s, o), "{s} {o}");
            assert_eq!(f, frame);
        }
        assert!(complete_checksum(&mut frame.clone(), frame.len() - 2, 0));
        assert!(complete_checksum(&mut frame.clone(), 0, frame.len() - 2));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift::new(0x9a9);
        let mut out = [0u8; 512];
        let mut buf = [0u8; 256];
        for round in 0..100_000 {
            let len = rng.below(buf.len() + 1);
            rng.fill(&mut buf[..len]);
            // Steer half the frames past the first checks, so the deep ones run too.
            if round % 2 == 0 && len >= 40 {
                buf[12..14].copy_from_slice(&EtherType::IPV4_BYTES);
                buf[14] = 0x45;
                buf[20] &= 0x80;
                buf[21] = 0;
                buf[23] = [IpProtocol::TCP, IpProtocol::GRE][rng.below(2)];
                buf[34] &= 0x3f;
                buf[35] = 0;
                buf[36..38].copy_from_slice(&[0x65, 0x58]);
            }
            let frame = &mut buf[..len];
            let _ = make_partial(frame, rng.below(40));
            let _ = complete_checksum(frame, rng.below(300), rng.below(300));
            if let Ok(layout) = Layout::parse(frame) {
                assert_eq!(layout.header_len() + layout.payload_len(), len);
                let mss = 1 + rng.below(100);
                for i in 0..layout.segments(mss) + 1 {
                    let end = rng.below(out.len() + 1);
                    let mode = [L4Checksum::Complete, L4Checksum::Partial][i % 2];
                    if let Some(n) = layout.write_segment(frame, mss, i, mode, &mut out[..end]) {
                        assert!(n <= end && n <= layout.header_len() + mss);
                    }
                }
            }
        }
    }

    fn shape_strategy() -> impl Strategy<Value = Shape> {
        (
            prop::option::of(1u16..4095),
            prop::option::of(prop::option::of(any::<u32>())),
            0usize..=10,
            prop::option::of(1u16..4095),
            0usize..=10,
            0usize..=10,
            0u16..0x200,
            any::<u32>(),
            any::<u16>(),
        )
            .prop_map(
                |(vlan, gre, outer_words, inner_vlan, ip_words, tcp_words, flags, seq, ident)| {
                    Shape {
                        vlan,
                        gre,
                        outer_ip_options: 4 * outer_words,
                        inner_vlan: gre.and(inner_vlan),
                        ip_options: 4 * ip_words,
                        tcp_options: 4 * tcp_words,
                        flags,
                        seq,
                        ident,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn segments_put_the_payload_back_together(
            shape in shape_strategy(),
            payload_len in 1usize..=65_000,
            mss in 500usize..=9000,
            seed in any::<u64>(),
            garbage in any::<[u16; 2]>(),
        ) {
            let mut payload = vec![0u8; payload_len];
            XorShift::new(seed).fill(&mut payload);
            let frame = build(&shape, &payload, garbage[0]);
            let complete = check_segments(&frame, &shape, &payload, mss, L4Checksum::Complete);
            let partial = check_segments(&frame, &shape, &payload, mss, L4Checksum::Partial);
            let tcp_at = Layout::parse(&frame).unwrap().tcp_offset();
            for (mut p, c) in partial.into_iter().zip(&complete) {
                prop_assert!(complete_checksum(&mut p, tcp_at, tcp::CHECKSUM_AT));
                prop_assert_eq!(&p, c);
            }
            // Whatever the lengths and checksums held, the segments are the same.
            let other = build(&shape, &payload, garbage[1]);
            let layout = Layout::parse(&other).unwrap();
            let mut out = vec![0u8; layout.header_len() + mss];
            for (i, c) in complete.iter().enumerate() {
                let n = layout.write_segment(&other, mss, i, L4Checksum::Complete, &mut out).unwrap();
                prop_assert_eq!(&out[..n], &c[..]);
            }
        }

        #[test]
        fn mangled_frames_never_panic(
            shape in shape_strategy(),
            payload_len in 0usize..300,
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            mss in 0usize..200,
            out_len in 0usize..600,
        ) {
            let mut frame = build(&shape, &vec![0x5au8; payload_len], 0);
            for (at, value) in edits {
                let i = at.index(frame.len());
                frame[i] = value;
            }
            let len = cut.index(frame.len() + 1);
            let frame = &mut frame[..len];
            let mut out = vec![0u8; out_len];
            if let Ok(layout) = Layout::parse(frame) {
                for i in 0..layout.segments(mss).min(50) + 1 {
                    let _ = layout.write_segment(frame, mss, i, L4Checksum::Complete, &mut out);
                    let _ = layout.write_segment(frame, mss, i, L4Checksum::Partial, &mut out);
                }
                // A layout used on some other frame of the same length.
                let mut other = vec![0u8; len];
                XorShift::new(len as u64).fill(&mut other);
                let _ = layout.write_segment(&other, mss.max(1), 0, L4Checksum::Complete, &mut out);
            }
            let _ = make_partial(frame, 14);
            let _ = make_partial(frame, 18);
            let _ = complete_checksum(frame, out_len, mss);
        }
    }
}
