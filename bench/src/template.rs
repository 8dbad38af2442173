//! Packet templates: one frame per flow, for every scenario's input (plain L2, 802.1Q,
//! GRE as a remote host sends it, routed IPv4 UDP/TCP flows, many tenants and MACs).
//!
//! The flows follow the shared harness's `mkpcap.py` (flow i: source 10.0.0.1+i, UDP
//! 1024+i → 9, destination MAC 02:00:00:00:0b:(i mod macs)), so a switch configured for
//! one is configured for the other. Every frame ends in room for a [`crate::probe`]
//! when its payload is large enough; the L4 checksum is computed with the probe bytes
//! zero, and the generator patches it when it writes a probe.

use std::net::Ipv4Addr;

use dataplane::packet::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use dataplane::packet::gre::{GrePacket, GreRepr};
use dataplane::packet::ipv4::{self, IpProtocol, Ipv4Packet, Ipv4Repr};
use dataplane::packet::tcp::{self, TcpPacket, TcpRepr};
use dataplane::packet::udp::{self, UdpPacket, UdpRepr};
use dataplane::packet::vlan::{self, VlanRepr, VlanTag};

/// Source MAC of every plain frame.
pub const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0x0a, 0];
/// The router MAC routed frames are addressed to (replay.sh's `ROUTER_IN_MAC`).
pub const ROUTER_IN_MAC: [u8; 6] = [2, 0, 0, 0, 0x0b, 0];
/// The remote tunnel endpoint (outer source of GRE input), and our side.
pub const GRE_REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
/// Our tunnel endpoint: outer destination of GRE input, outer source of GRE output.
pub const GRE_LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
/// Outer destination MAC of GRE input (the switch's underlay MAC).
pub const GRE_LOCAL_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];
/// Outer source MAC of GRE input (the remote host).
pub const GRE_REMOTE_MAC: [u8; 6] = [2, 0, 0, 0, 0x0c, 2];
/// GRE key of the tunnelled tenant.
pub const GRE_KEY: u32 = 4242;
/// VLAN of the tagged input.
pub const VLAN_ID: u16 = 100;

/// Bytes a frame needs beyond its headers to carry a probe.
const PROBE_ROOM: usize = crate::probe::PROBE_LEN;
/// The 4-byte Ethernet FCS counted in frame sizes but not sent by software.
pub const FCS: usize = 4;

/// The shape of a scenario's input frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Ethernet / IPv4 / UDP.
    Plain,
    /// Ethernet / 802.1Q / IPv4 / UDP.
    Vlan,
    /// Ethernet / IPv4 / GRE (key) / a plain frame, from the remote host to us.
    Gre,
    /// Ethernet / IPv4 / TCP (ACK), addressed like plain frames.
    Tcp,
    /// 802.1Q frames of many tenants: VLAN 1 + (flow mod tenants), a distinct
    /// destination MAC per flow (the tenant's `macs` MACs).
    Tenants,
    /// [`Kind::Tenants`]' frames, untagged, in GRE from the remote host, each keyed by
    /// its tenant's id (the dedicated design's tunnel of many tenants from one peer).
    GreTenants,
}

/// Frame sizes, counted with the FCS as network testers count them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Size {
    /// Every frame this size (64..=1518; GRE: the inner frame).
    Fixed(usize),
    /// Simple IMIX: 64, 594 and 1518 bytes in the ratio 7:4:1, by flow.
    Imix,
}

impl Size {
    /// The size of flow `i`'s frame.
    pub fn of_flow(&self, i: usize) -> usize {
        match self {
            Size::Fixed(n) => *n,
            Size::Imix => match i % 12 {
                0..=6 => 64,
                7..=10 => 594,
                _ => 1518,
            },
        }
    }

    /// Mean frame size over flows.
    pub fn mean(&self) -> f64 {
        match self {
            Size::Fixed(n) => *n as f64,
            Size::Imix => (7.0 * 64.0 + 4.0 * 594.0 + 1518.0) / 12.0,
        }
    }

    /// As written on a command line: a number or `imix`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("imix") {
            return Ok(Size::Imix);
        }
        match text.parse::<usize>() {
            Ok(n) if (64..=1518).contains(&n) => Ok(Size::Fixed(n)),
            _ => Err(format!(
                "frame size `{text}`: a number from 64 to 1518, or imix"
            )),
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Fixed(n) => write!(f, "{n}"),
            Size::Imix => f.write_str("imix"),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Frame shape.
    pub kind: Kind,
    /// Frame sizes.
    pub size: Size,
    /// Flows (frames).
    pub flows: usize,
    /// Distinct destination MACs (per tenant for [`Kind::Tenants`] and
    /// [`Kind::GreTenants`]); 0 means every frame goes to [`ROUTER_IN_MAC`].
    pub macs: usize,
    /// Tenants ([`Kind::Tenants`] and [`Kind::GreTenants`] only).
    pub tenants: usize,
}

impl Spec {
    /// `flows` frames of `kind` and `size` to `macs` destination MACs.
    pub fn new(kind: Kind, size: Size, flows: usize, macs: usize) -> Self {
        Self {
            kind,
            size,
            flows,
            macs,
            tenants: 1,
        }
    }
}

/// One flow's frame, ready to copy into a packet buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The frame without FCS, probe bytes zero.
    pub bytes: Vec<u8>,
    /// Whether the frame has room for a probe at its end.
    pub probe: bool,
    /// Offset of the L4 checksum to patch for the probe (UDP and TCP), if any.
    pub l4_checksum: Option<usize>,
}

/// The destination MAC of flow `i` among `macs` (`mkpcap.py`'s).
pub fn dst_mac(i: usize, macs: usize) -> [u8; 6] {
    if macs == 0 {
        return ROUTER_IN_MAC;
    }
    let j = i % macs;
    [2, 0, 0, 0, 0x0b + (j >> 8) as u8, j as u8]
}

/// The `macs` destination MACs, as a switch must know them (`DST_MACS`).
pub fn dst_macs(macs: usize) -> Vec<[u8; 6]> {
    (0..macs).map(|i| dst_mac(i, macs)).collect()
}

/// The destination MAC of flow `i` of tenant `t` in a [`Kind::Tenants`] spec: unique
/// over all tenants (02:01:tt:tt:mm:mm).
pub fn tenant_mac(tenant: usize, i: usize) -> [u8; 6] {
    let t = tenant as u16;
    let m = i as u16;
    [2, 1, (t >> 8) as u8, t as u8, (m >> 8) as u8, m as u8]
}

/// The VLAN of tenant `t` (0-based) in a [`Kind::Tenants`] spec.
pub fn tenant_vlan(tenant: usize) -> u16 {
    1 + tenant as u16
}

/// The id of tenant `t` (0-based) in a [`Kind::Tenants`] spec, its GRE key in a
/// [`Kind::GreTenants`] one.
pub fn tenant_id(tenant: usize) -> u32 {
    1 + tenant as u32
}

/// Source MAC of tenant `t`'s frames (one sender per tenant).
pub fn tenant_src_mac(tenant: usize) -> [u8; 6] {
    let t = tenant as u16;
    [2, 2, (t >> 8) as u8, t as u8, 0, 1]
}

/// Builds every flow's frame.
pub fn build(spec: &Spec) -> Result<Vec<Template>, String> {
    if spec.flows == 0 || spec.flows > 1 << 20 {
        return Err(format!("flows: {} is not in 1..=1048576", spec.flows));
    }
    let many = matches!(spec.kind, Kind::Tenants | Kind::GreTenants);
    if many && !(1..=4094).contains(&spec.tenants) {
        return Err(format!("tenants: {} is not in 1..=4094", spec.tenants));
    }
    if spec.macs > 65536 {
        return Err(format!("macs: {} is more than 65536", spec.macs));
    }
    (0..spec.flows)
        .map(|i| flow(spec, i, spec.size.of_flow(i) - FCS))
        .collect()
}

fn flow(spec: &Spec, i: usize, len: usize) -> Result<Template, String> {
    match spec.kind {
        Kind::Plain => Ok(l2(
            i,
            len,
            dst_mac(i, spec.macs),
            SRC_MAC,
            None,
            IpProtocol::Udp,
        )),
        Kind::Tcp => Ok(l2(
            i,
            len,
            dst_mac(i, spec.macs),
            SRC_MAC,
            None,
            IpProtocol::Tcp,
        )),
        Kind::Vlan => Ok(l2(
            i,
            len,
            dst_mac(i, spec.macs),
            SRC_MAC,
            Some(VLAN_ID),
            IpProtocol::Udp,
        )),
        Kind::Tenants | Kind::GreTenants => {
            let tenant = i % spec.tenants;
            let index = (i / spec.tenants) % spec.macs.max(1);
            let dst = tenant_mac(tenant, index);
            let src = tenant_src_mac(tenant);
            if spec.kind == Kind::GreTenants {
                let inner = l2(i, len, dst, src, None, IpProtocol::Udp);
                return Ok(gre(inner, tenant_id(tenant)));
            }
            let vlan = Some(tenant_vlan(tenant));
            Ok(l2(i, len, dst, src, vlan, IpProtocol::Udp))
        }
        Kind::Gre => {
            let inner = l2(
                i,
                len,
                dst_mac(i, spec.macs),
                SRC_MAC,
                None,
                IpProtocol::Udp,
            );
            Ok(gre(inner, GRE_KEY))
        }
    }
}

/// Ethernet (optionally tagged) / IPv4 / UDP or TCP of `len` bytes (no FCS).
fn l2(
    i: usize,
    len: usize,
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    proto: IpProtocol,
) -> Template {
    let ip_at = ethernet::HEADER_LEN + vlan.map_or(0, |_| vlan::HEADER_LEN);
    let l4_at = ip_at + ipv4::MIN_HEADER_LEN;
    let l4_len = match proto {
        IpProtocol::Tcp => tcp::MIN_HEADER_LEN,
        _ => udp::HEADER_LEN,
    };
    // The shortest frame still holds its headers; larger sizes pad the payload.
    let total = len.max(l4_at + l4_len);
    let payload = total - l4_at - l4_len;
    let mut f = vec![0u8; total];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: if vlan.is_some() {
            EtherType::Vlan
        } else {
            EtherType::Ipv4
        },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    if let Some(vid) = vlan {
        VlanRepr {
            vid,
            pcp: 0,
            dei: false,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut VlanTag::new_unchecked(&mut f[ethernet::HEADER_LEN..]));
    }
    let src_ip = Ipv4Addr::from(0x0a00_0001u32.wrapping_add(i as u32));
    let dst_ip = Ipv4Addr::new(10, 1, (i % 256) as u8, ((i / 256) % 254 + 1) as u8);
    ipv4_header(src_ip, dst_ip, proto, l4_len + payload)
        .emit(&mut Ipv4Packet::new_unchecked(&mut f[ip_at..]));
    let sport = (1024 + i % 60000) as u16;
    let l4 = &mut f[l4_at..];
    let sum_at = match proto {
        IpProtocol::Tcp => {
            let mut segment = TcpPacket::new_unchecked(l4);
            TcpRepr {
                src_port: sport,
                dst_port: 80,
                seq_number: 1,
                ack_number: 1,
                flags: tcp::FLAG_ACK,
                window_len: 64240,
                urgent_at: 0,
            }
            .emit(&mut segment);
            segment.fill_checksum(src_ip, dst_ip);
            tcp::CHECKSUM_AT
        }
        _ => {
            let mut datagram = UdpPacket::new_unchecked(l4);
            UdpRepr {
                src_port: sport,
                dst_port: 9,
                payload_len: payload,
            }
            .emit(&mut datagram);
            datagram.fill_checksum(src_ip, dst_ip);
            udp::CHECKSUM_AT
        }
    };
    Template {
        probe: payload >= PROBE_ROOM,
        l4_checksum: Some(l4_at + sum_at),
        bytes: f,
    }
}

/// A plain frame as GRE from the remote host to us, keyed `key` (outer headers of 42
/// bytes).
fn gre(inner: Template, key: u32) -> Template {
    let gre = GreRepr {
        protocol: EtherType::TransparentEthernetBridging,
        checksum: false,
        key: Some(key),
        seq: None,
    };
    let ip_at = ethernet::HEADER_LEN;
    let gre_at = ip_at + ipv4::MIN_HEADER_LEN;
    let outer = gre_at + gre.buffer_len();
    let mut f = vec![0u8; outer];
    EthernetRepr {
        src_addr: GRE_REMOTE_MAC,
        dst_addr: GRE_LOCAL_MAC,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    ipv4_header(
        GRE_REMOTE_IP,
        GRE_LOCAL_IP,
        IpProtocol::Gre,
        gre.buffer_len() + inner.bytes.len(),
    )
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[ip_at..]));
    gre.emit(&mut GrePacket::new_unchecked(&mut f[gre_at..]));
    f.extend(&inner.bytes);
    Template {
        bytes: f,
        probe: inner.probe,
        l4_checksum: inner.l4_checksum.map(|at| at + outer),
    }
}

/// An option-less IPv4 header, don't-fragment, TTL 64, as the shared harness writes it.
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, payload_len: usize) -> Ipv4Repr {
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    }
}

/// Whether the UDP or TCP checksum of `packet` (IPv4) is right; panics on any other
/// packet, as no template makes one.
#[cfg(test)]
pub(crate) fn l4_checksum_is_right(packet: &etherparse::SlicedPacket<'_>) -> bool {
    use etherparse::{NetSlice, TransportSlice};
    let Some(NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("not IPv4: {:?}", packet.net)
    };
    let h = ip.header().to_header();
    match &packet.transport {
        Some(TransportSlice::Udp(u)) => {
            u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap() == u.checksum()
        }
        Some(TransportSlice::Tcp(t)) => {
            t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap() == t.checksum()
        }
        other => panic!("neither UDP nor TCP: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn parse(frame: &[u8]) -> SlicedPacket<'_> {
        SlicedPacket::from_ethernet(frame).expect("parses")
    }

    #[test]
    fn plain_frames_follow_the_shared_harness() {
        let t = build(&Spec::new(Kind::Plain, Size::Fixed(64), 300, 4)).unwrap();
        assert_eq!(t.len(), 300);
        let f = &t[257].bytes;
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0x0b, 1]);
        assert_eq!(&f[6..12], &SRC_MAC);
        let p = parse(f);
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("IPv4")
        };
        assert_eq!(ip.header().source(), [10, 0, 1, 2]);
        assert_eq!(ip.header().destination(), [10, 1, 1, 2]);
        let Some(TransportSlice::Udp(udp)) = p.transport else {
            panic!("UDP")
        };
        assert_eq!(udp.source_port(), 1024 + 257);
        assert_eq!(udp.destination_port(), 9);
        assert!(t[257].probe);
    }

    #[test]
    fn checksums_are_right_for_every_kind_and_size() {
        for kind in [Kind::Plain, Kind::Vlan, Kind::Gre, Kind::Tcp] {
            for size in [Size::Fixed(64), Size::Fixed(1518), Size::Imix] {
                let spec = Spec::new(kind, size.clone(), 24, 2);
                for (i, t) in build(&spec).unwrap().iter().enumerate() {
                    let inner = if kind == Kind::Gre {
                        &t.bytes[42..]
                    } else {
                        &t.bytes[..]
                    };
                    let want = size.of_flow(i) - FCS;
                    assert_eq!(
                        inner.len(),
                        want.max(if kind == Kind::Tcp { 54 } else { 0 })
                    );
                    let p = parse(inner);
                    let Some(NetSlice::Ipv4(ip)) = &p.net else {
                        panic!("IPv4 in {kind:?}")
                    };
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "{kind:?}");
                    let payload = ip.payload().payload;
                    assert!(
                        l4_checksum_is_right(&p),
                        "{kind:?} {size} flow {i}: L4 checksum ({} bytes)",
                        payload.len()
                    );
                }
            }
        }
    }

    #[test]
    fn gre_input_comes_from_the_remote_host_with_the_key() {
        let t = build(&Spec::new(Kind::Gre, Size::Fixed(64), 1, 1)).unwrap();
        let f = &t[0].bytes;
        assert_eq!(f.len(), 42 + 60);
        assert_eq!(&f[0..6], &GRE_LOCAL_MAC);
        assert_eq!(&f[26..30], &GRE_REMOTE_IP.octets());
        assert_eq!(&f[30..34], &GRE_LOCAL_IP.octets());
        assert_eq!(&f[34..38], &[0x20, 0, 0x65, 0x58]);
        assert_eq!(&f[38..42], &GRE_KEY.to_be_bytes());
        assert_eq!(t[0].l4_checksum, Some(42 + 34 + 6));
    }

    #[test]
    fn many_tenants_in_gre_are_keyed_by_tenant_and_carry_their_frames_untagged() {
        let spec = |kind| Spec {
            tenants: 1000,
            ..Spec::new(kind, Size::Fixed(64), 3000, 100)
        };
        let tagged = build(&spec(Kind::Tenants)).unwrap();
        let tunnelled = build(&spec(Kind::GreTenants)).unwrap();
        for (i, (t, g)) in tagged.iter().zip(&tunnelled).enumerate() {
            let g = &g.bytes;
            assert_eq!(&g[26..30], &GRE_REMOTE_IP.octets());
            assert_eq!(&g[38..42], &tenant_id(i % 1000).to_be_bytes());
            // The same MACs as the tagged frame's, untagged, as long.
            let (t, inner) = (&t.bytes, &g[42..]);
            assert_eq!(&inner[..12], &t[..12]);
            assert_eq!(&inner[12..14], &[0x08, 0x00]);
            assert_eq!(inner.len(), t.len());
        }
    }

    #[test]
    fn many_tenants_use_distinct_vlans_and_macs() {
        let spec = Spec {
            tenants: 1000,
            ..Spec::new(Kind::Tenants, Size::Fixed(64), 100_000, 100)
        };
        let t = build(&spec).unwrap();
        let mut seen = std::collections::HashSet::new();
        for f in &t {
            let vid = u16::from_be_bytes([f.bytes[14], f.bytes[15]]);
            assert!((1..=1000).contains(&vid));
            assert!(seen.insert((vid, <[u8; 6]>::try_from(&f.bytes[0..6]).unwrap())));
        }
        assert_eq!(seen.len(), 100_000);
        // 60-byte tagged frames keep exactly the probe's room.
        assert!(t[0].probe);
    }

    #[test]
    fn bad_specs_are_refused_with_the_field() {
        assert!(build(&Spec::new(Kind::Plain, Size::Fixed(64), 0, 1))
            .unwrap_err()
            .starts_with("flows"));
        assert!(Size::parse("63").unwrap_err().contains("64 to 1518"));
        assert_eq!(Size::parse("IMIX"), Ok(Size::Imix));
    }
}
