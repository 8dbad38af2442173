//! What a capture copies, and how each copy says where and when it was taken.
//!
//! The worker that receives or sends a frame on a captured port checks it against the
//! capture's [`CaptureFilter`] and copies it to the control plane with a [`Stamp`]
//! (the TSC read once per copied burst, the port, the direction) written in front of
//! the frame, in the copy's headroom. The control plane turns the stamp into a pcapng
//! record; the frame itself is never touched.

use std::net::Ipv4Addr;

use crate::packet::arp::ArpPacket;
use crate::packet::ethernet::{self, EtherType, EthernetFrame};
use crate::packet::gre::GrePacket;
use crate::packet::ipv4::{IpProtocol, Ipv4Packet};
use crate::packet::vlan::{self, VlanTag};
use crate::packet::Mac;

/// Which way a frame crossed the port (pcapng's `epb_flags` direction values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the port.
    In = 1,
    /// Sent to the port.
    Out = 2,
}

/// A protocol a capture can be narrowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ARP.
    Arp,
    /// Any IPv4.
    Ip,
    /// IPv4 ICMP.
    Icmp,
    /// IPv4 TCP.
    Tcp,
    /// IPv4 UDP.
    Udp,
    /// IPv4 GRE (the tunnels themselves).
    Gre,
}

impl Protocol {
    /// Every protocol by its name.
    pub const ALL: [(&'static str, Protocol); 6] = [
        ("arp", Protocol::Arp),
        ("ip", Protocol::Ip),
        ("icmp", Protocol::Icmp),
        ("tcp", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("gre", Protocol::Gre),
    ];

    /// The protocol named `name`.
    pub fn named(name: &str) -> Option<Protocol> {
        Self::ALL
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p)| *p)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }
}

/// Which frames of the captured ports are copied: all that name `mac` as source or
/// destination, `ip` as source or destination (IPv4 or ARP), and are of `protocol`;
/// an unset field takes any. A GRE frame matches when its own headers do or, for a
/// tunnelled Ethernet frame, when the frame it carries does (a container's traffic is
/// found on the uplink by the container's addresses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// A MAC the frame is from or to.
    pub mac: Option<Mac>,
    /// An IPv4 address the packet is from or to.
    pub ip: Option<Ipv4Addr>,
    /// The protocol.
    pub protocol: Option<Protocol>,
}

/// The frame's addresses and protocol as a filter sees them.
struct Seen<'a> {
    src_mac: Mac,
    dst_mac: Mac,
    ethertype: EtherType,
    /// Source and destination (IPv4, or ARP's sender and target).
    ips: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The IPv4 protocol and its payload.
    ip_payload: Option<(u8, &'a [u8])>,
}

impl CaptureFilter {
    /// Copies every frame.
    pub const ANY: CaptureFilter = CaptureFilter {
        mac: None,
        ip: None,
        protocol: None,
    };

    /// Whether it takes every frame.
    pub fn is_any(&self) -> bool {
        *self == Self::ANY
    }

    /// Whether `frame` is copied.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.is_any() {
            return true;
        }
        let Some(seen) = Seen::of(frame) else {
            return false;
        };
        if self.takes(&seen) {
            return true;
        }
        // A tunnelled frame, by what it carries (never GRE in GRE again).
        match seen.ip_payload {
            Some((IpProtocol::GRE, gre)) => inner_frame(gre)
                .and_then(Seen::of)
                .is_some_and(|inner| self.takes(&inner)),
            _ => false,
        }
    }

    fn takes(&self, seen: &Seen) -> bool {
        let mac = self
            .mac
            .is_none_or(|m| seen.src_mac == m || seen.dst_mac == m);
        let ip = self
            .ip
            .is_none_or(|ip| seen.ips.is_some_and(|(s, d)| s == ip || d == ip));
        let protocol = self.protocol.is_none_or(|p| {
            let ip_protocol = seen.ip_payload.map(|(p, _)| p);
            match p {
                Protocol::Arp => seen.ethertype == EtherType::Arp,
                Protocol::Ip => seen.ethertype == EtherType::Ipv4,
                Protocol::Icmp => ip_protocol == Some(IpProtocol::ICMP),
                Protocol::Tcp => ip_protocol == Some(IpProtocol::TCP),
                Protocol::Udp => ip_protocol == Some(IpProtocol::UDP),
                Protocol::Gre => ip_protocol == Some(IpProtocol::GRE),
            }
        });
        mac && ip && protocol
    }
}

impl<'a> Seen<'a> {
    /// Reads up to two VLAN tags deep through the packet views; `None` for what is not
    /// Ethernet. An IPv4 packet or ARP message that does not check out has no
    /// addresses to match.
    fn of(frame: &'a [u8]) -> Option<Seen<'a>> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        let (dst_mac, src_mac, mut ethertype) = (eth.dst_addr(), eth.src_addr(), eth.ethertype());
        let mut payload = &frame[ethernet::HEADER_LEN..];
        for _ in 0..2 {
            if !matches!(ethertype, EtherType::Vlan | EtherType::QinQ) {
                break;
            }
            ethertype = VlanTag::new_checked(payload).ok()?.ethertype();
            payload = &payload[vlan::HEADER_LEN..];
        }
        let (ips, ip_payload) = match ethertype {
            EtherType::Ipv4 => match Ipv4Packet::new_checked(payload) {
                Ok(ip) => {
                    let (start, end) = (ip.header_len(), usize::from(ip.total_len()));
                    (
                        Some((ip.src_addr(), ip.dst_addr())),
                        Some((ip.protocol_number(), &payload[start..end])),
                    )
                }
                Err(_) => (None, None),
            },
            EtherType::Arp => (
                ArpPacket::new_checked(payload)
                    .ok()
                    .map(|arp| (arp.sender_protocol_addr(), arp.target_protocol_addr())),
                None,
            ),
            _ => (None, None),
        };
        Some(Seen {
            src_mac,
            dst_mac,
            ethertype,
            ips,
            ip_payload,
        })
    }
}

/// The Ethernet frame a GRE packet carries, if it carries one.
fn inner_frame(packet: &[u8]) -> Option<&[u8]> {
    let gre = GrePacket::new_checked(packet).ok()?;
    (gre.protocol() == EtherType::TransparentEthernetBridging)
        .then(|| packet.get(gre.header_len()..))
        .flatten()
}

/// Where and when a copy was taken, in the [`STAMP_LEN`] bytes before its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The worker's TSC when it copied the burst.
    pub tsc: u64,
    /// The DPDK port.
    pub port: u16,
    /// Received or sent.
    pub direction: Direction,
}

/// Bytes a [`Stamp`] takes in front of a copied frame.
pub const STAMP_LEN: usize = 16;

/// What the first bytes of a stamp hold, so a copy without one is never misread.
const STAMP_MARK: [u8; 4] = *b"tcap";

impl Stamp {
    /// The bytes written in front of the frame.
    pub fn bytes(&self) -> [u8; STAMP_LEN] {
        let mut out = [0; STAMP_LEN];
        out[0..4].copy_from_slice(&STAMP_MARK);
        out[4..12].copy_from_slice(&self.tsc.to_le_bytes());
        out[12..14].copy_from_slice(&self.port.to_le_bytes());
        out[14] = self.direction as u8;
        out
    }

    /// The stamp at the start of `copy` and the frame after it.
    pub fn read(copy: &[u8]) -> Option<(Stamp, &[u8])> {
        let (head, frame) = copy.split_at_checked(STAMP_LEN)?;
        if head[0..4] != STAMP_MARK {
            return None;
        }
        let direction = match head[14] {
            1 => Direction::In,
            2 => Direction::Out,
            _ => return None,
        };
        let stamp = Stamp {
            tsc: u64::from_le_bytes(head[4..12].try_into().ok()?),
            port: u16::from_le_bytes(head[12..14].try_into().ok()?),
            direction,
        };
        Some((stamp, frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::gre::FLAG_K;

    fn ipv4_frame(src: [u8; 4], dst: [u8; 4], protocol: u8, tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if let Some(vid) = tag {
            f.extend([0x81, 0x00]);
            f.extend(vid.to_be_bytes());
        }
        f.extend([0x08, 0x00, 0x45, 0, 0, 28, 0, 0, 0, 0, 64, protocol, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend([0; 8]);
        f
    }

    #[test]
    fn a_filter_takes_frames_by_mac_ip_and_protocol_through_tags() {
        let icmp = ipv4_frame([10, 1, 0, 2], [10, 1, 0, 3], 1, Some(10));
        let filter = |mac, ip, protocol| CaptureFilter { mac, ip, protocol };
        assert!(CaptureFilter::ANY.matches(&icmp));
        assert!(filter(None, Some(Ipv4Addr::new(10, 1, 0, 3)), None).matches(&icmp));
        assert!(!filter(None, Some(Ipv4Addr::new(10, 1, 0, 4)), None).matches(&icmp));
        assert!(filter(Some([2, 0, 0, 0, 0, 1]), None, Some(Protocol::Icmp)).matches(&icmp));
        assert!(!filter(Some([2, 0, 0, 0, 0, 9]), None, None).matches(&icmp));
        assert!(!filter(None, None, Some(Protocol::Tcp)).matches(&icmp));
        assert!(filter(None, None, Some(Protocol::Ip)).matches(&icmp));
        assert!(!filter(None, None, Some(Protocol::Arp)).matches(&icmp));
        // Too short to be anything: only the filter that takes all takes it.
        assert!(!filter(None, None, Some(Protocol::Ip)).matches(&[0; 10]));
        assert!(CaptureFilter::ANY.matches(&[0; 10]));
    }

    #[test]
    fn a_tunnelled_frame_is_found_by_what_it_carries() {
        let inner = ipv4_frame([10, 1, 0, 2], [10, 1, 0, 3], 6, None);
        let mut outer = ipv4_frame([192, 168, 0, 1], [192, 168, 0, 2], 47, None);
        outer.truncate(ethernet::HEADER_LEN + 20);
        outer.extend(FLAG_K.to_be_bytes());
        outer.extend(0x6558u16.to_be_bytes());
        outer.extend(7u32.to_be_bytes());
        outer.extend(&inner);
        let total = (outer.len() - ethernet::HEADER_LEN) as u16;
        outer[ethernet::HEADER_LEN + 2..ethernet::HEADER_LEN + 4]
            .copy_from_slice(&total.to_be_bytes());
        let by_inner = CaptureFilter {
            ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
            protocol: Some(Protocol::Tcp),
            ..CaptureFilter::ANY
        };
        assert!(by_inner.matches(&outer));
        let gre = CaptureFilter {
            protocol: Some(Protocol::Gre),
            ..CaptureFilter::ANY
        };
        assert!(gre.matches(&outer));
        let elsewhere = CaptureFilter {
            ip: Some(Ipv4Addr::new(10, 1, 0, 9)),
            ..CaptureFilter::ANY
        };
        assert!(!elsewhere.matches(&outer));
        // Cut off inside the GRE header: no match, no panic.
        assert!(!by_inner.matches(&outer[..ethernet::HEADER_LEN + 22]));
        // An IPv4 header that claims 60 bytes in a 20-byte packet: no match, no panic.
        let mut lying = ipv4_frame([10, 1, 0, 2], [10, 1, 0, 3], 47, None);
        lying.truncate(ethernet::HEADER_LEN + 20);
        lying[ethernet::HEADER_LEN] = 0x4f;
        assert!(!by_inner.matches(&lying));
        lying[ethernet::HEADER_LEN] = 0x41;
        assert!(!by_inner.matches(&lying));
    }

    #[test]
    fn arp_is_taken_by_its_sender_or_target() {
        let frame = crate::packet::arp::request_frame(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::new(10, 1, 0, 1),
        );
        for ip in [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 1)] {
            let f = CaptureFilter {
                ip: Some(ip),
                protocol: Some(Protocol::Arp),
                ..CaptureFilter::ANY
            };
            assert!(f.matches(&frame), "{ip}");
        }
    }

    #[test]
    fn a_stamp_reads_back_and_nothing_else_reads_as_one() {
        let stamp = Stamp {
            tsc: 0x0123_4567_89ab_cdef,
            port: 7,
            direction: Direction::Out,
        };
        let mut copy = stamp.bytes().to_vec();
        copy.extend([1, 2, 3]);
        assert_eq!(Stamp::read(&copy), Some((stamp, &[1u8, 2, 3][..])));
        assert_eq!(Stamp::read(&copy[1..]), None);
        assert_eq!(Stamp::read(&[0; 40]), None);
        assert_eq!(Stamp::read(&[]), None);
        assert_eq!(Protocol::named("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::Gre.name(), "gre");
    }
}
