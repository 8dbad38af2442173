//! Golden tests of large TCP segments through every path of the pipeline: what a
//! container's stack hands a port with TSO (a 60,000-byte TCP/IPv4 segment owing its
//! segmentation, checksum partial as Linux leaves it) switched between access ports,
//! tunnelled out and in (both designs), routed, SNATed out and back and published in.
//! Each frame leaves still owing its segmentation; it is then cut as egress cuts it,
//! and each segment is parsed with etherparse: headers, lengths, IP identification
//! sequence, checksums (outer and inner) and the payload bytes in order.

mod frames;

use std::net::Ipv4Addr;

use dataplane::packet::frame::{BufFrame, Frame};
use dataplane::packet::gso::{self, L4Checksum, Layout};
use dataplane::packet::Mac;
use dataplane::pipeline::offline::Offline;
use dataplane::table::builder::TablesBuilder;
use dataplane::table::routing::{router_mac, Interface, Published, Router};
use dataplane::table::{Design, FlowTables, Location};
use etherparse::{Ipv4HeaderSlice, PacketBuilder, SlicedPacket, TransportSlice};
use frames::{gre_encapsulated, tagged};

const A_ID: u32 = 100;
const A_VLAN: u16 = 100;
const C1: Mac = [2, 0, 0, 0, 0x0a, 1]; // 10.1.0.5 on port 0
const C2: Mac = [2, 0, 0, 0, 0x0a, 2]; // 10.1.1.7 on port 1, the other subnet
const REMOTE: Mac = [2, 0, 0, 0, 0x0a, 9]; // 10.1.0.9 on host 1
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0x0c, 1];
const NEXT_HOP_MAC: Mac = [2, 0, 0, 0, 0x0c, 2];
const C1_IP: [u8; 4] = [10, 1, 0, 5];
const C2_IP: [u8; 4] = [10, 1, 1, 7];
const REMOTE_IP_IN: [u8; 4] = [10, 1, 0, 9];
const SERVER: [u8; 4] = [203, 0, 113, 10];
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
const OUTSIDE_HOP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);

const PORT_C1: u16 = 0;
const PORT_C2: u16 = 1;
const UPLINK: u16 = 4;

/// The segment size the sender's stack asked for.
const MSS: u16 = 1448;
/// TCP payload of the large segment.
const PAYLOAD: usize = 60_000;
const IDENT: u16 = 0xfff0; // wraps within the segments
const SEQ: u32 = 0xffff_0000; // wraps within the segments

/// Tenant A: two access ports on two subnets, a container on host 1 behind a tunnel,
/// its gateway here with SNAT through the uplink and 10.1.0.5:80 published as 8080.
fn tables(design: Design) -> FlowTables {
    let mut b = TablesBuilder::new(design, false);
    let a = b.tenant(A_ID, Some(A_VLAN));
    b.access_port(PORT_C1, a, None);
    b.access_port(PORT_C2, a, None);
    b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
    let tunnel = b.tunnel(1, REMOTE_IP, Some(NEXT_HOP_MAC));
    b.tunnel_carries(tunnel, a);
    b.static_mac(a, C1, Location::Port(PORT_C1));
    b.static_mac(a, C2, Location::Port(PORT_C2));
    b.static_mac(a, REMOTE, Location::Host(1));
    b.router(
        a,
        Router {
            mac: router_mac(A_ID),
            interfaces: vec![
                Interface {
                    ip: [10, 1, 0, 1].into(),
                    prefix: 24,
                },
                Interface {
                    ip: [10, 1, 1, 1].into(),
                    prefix: 24,
                },
            ],
            here: true,
            snat_ip: Some(LOCAL_IP),
            route_lengths: 0,
            max_connections: 100,
        },
        Location::Router,
    );
    b.neighbor(a, C1_IP.into(), C1);
    b.neighbor(a, C2_IP.into(), C2);
    b.external(OUTSIDE_HOP, Some(NEXT_HOP_MAC));
    b.publish(
        6,
        Published {
            tenant: a,
            ip: C1_IP.into(),
            port: 80,
            external_ip: LOCAL_IP,
            external_port: 8080,
        },
    );
    b.build()
}

/// The bytes of payload byte `i`: no two neighbouring segments alike.
fn payload() -> Vec<u8> {
    (0..PAYLOAD).map(|i| (i % 251) as u8).collect()
}

/// Ethernet, IPv4 and TCP addresses of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ends {
    macs: (Mac, Mac),
    ips: ([u8; 4], [u8; 4]),
    ports: (u16, u16),
}

/// The large segment `ends` describes (source first), TTL 64, DF, with the TCP
/// checksum partial (the pseudo-header sum only, as the kernel hands it over).
fn large(ends: Ends) -> Vec<u8> {
    let mut frame = Vec::new();
    let mut builder = PacketBuilder::ethernet2(ends.macs.0, ends.macs.1)
        .ipv4(ends.ips.0, ends.ips.1, 64)
        .tcp(ends.ports.0, ends.ports.1, SEQ, 502);
    builder = builder.ack(7).psh();
    builder.write(&mut frame, &payload()).unwrap();
    let ip = &mut frame[14..34];
    ip[4..6].copy_from_slice(&IDENT.to_be_bytes());
    ip[6] |= 0x40;
    ip[10..12].fill(0);
    let sum = ipv4_header_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    gso::make_partial(&mut frame, 14).unwrap();
    frame
}

fn ipv4_header_checksum(header: &[u8]) -> u16 {
    Ipv4HeaderSlice::from_slice(header)
        .unwrap()
        .to_header()
        .calc_header_checksum()
}

/// What the segments of a frame that left must show.
struct Expect {
    port: u16,
    /// Outer source, destination and GRE key, for a tunnelled frame.
    outer: Option<(Ipv4Addr, Ipv4Addr, Option<u32>)>,
    /// The 802.1Q tag of the (inner) Ethernet header.
    vlan: Option<u16>,
    ends: Ends,
    ttl: u8,
}

/// Runs the large segment `frame` in on `in_port` and checks the one frame that leaves:
/// where, that it still owes its segmentation, and every segment it is cut into.
fn check_path(tables: &FlowTables, core: &mut Offline, in_port: u16, frame: &[u8], want: Expect) {
    let mut input = BufFrame::new(frame);
    input.set_gso_size(MSS);
    let run = core.run_frame(tables, in_port, input);
    assert_eq!(run.sent.len(), 1, "one frame out: {:?}", core.drops());
    let (port, out) = &run.sent[0];
    assert_eq!(*port, want.port);
    assert_eq!(run.owed, [MSS], "the segmentation is still owed");
    check_segments(out, &want);
}

/// Cuts `frame` as egress does (full checksums, the sender's MSS) and checks each
/// segment with etherparse.
fn check_segments(frame: &[u8], want: &Expect) {
    let layout = Layout::parse(frame).unwrap();
    let mss = usize::from(MSS);
    let count = layout.segments(mss);
    assert_eq!(count, PAYLOAD.div_ceil(mss));
    let mut buffer = vec![0u8; layout.header_len() + mss];
    let mut joined = Vec::with_capacity(PAYLOAD);
    for i in 0..count {
        let len = layout
            .write_segment(frame, mss, i, L4Checksum::Complete, &mut buffer)
            .unwrap();
        let segment = &buffer[..len];
        let inner = match want.outer {
            Some((src, dst, key)) => check_outer(segment, src, dst, key),
            None => segment,
        };
        let packet = SlicedPacket::from_ethernet(inner).unwrap();
        let link = packet.link.as_ref().unwrap().to_header().unwrap();
        let eth = link.ethernet2().unwrap();
        assert_eq!((eth.destination, eth.source), want.ends.macs);
        let vlan = packet.vlan.as_ref().map(|v| match v.to_header() {
            etherparse::VlanHeader::Single(tag) => tag.vlan_id.value(),
            etherparse::VlanHeader::Double(_) => panic!("segment {i}: two tags"),
        });
        assert_eq!(vlan, want.vlan);
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("segment {i}: no IPv4");
        };
        let header = ip.header().to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "inner IPv4 checksum of segment {i}"
        );
        assert_eq!((header.source, header.destination), want.ends.ips);
        assert_eq!(
            usize::from(header.total_len),
            inner.len() - 14 - 4 * usize::from(want.vlan.is_some())
        );
        assert_eq!(header.identification, IDENT.wrapping_add(i as u16));
        assert_eq!(
            (header.time_to_live, header.dont_fragment),
            (want.ttl, true)
        );
        let Some(TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("segment {i}: no TCP");
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), want.ends.ports);
        assert_eq!(tcp.sequence_number(), SEQ.wrapping_add((i * mss) as u32));
        assert_eq!(tcp.psh(), i + 1 == count, "PSH only on the last segment");
        let sum = tcp
            .to_header()
            .calc_checksum_ipv4(&header, tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), sum, "TCP checksum of segment {i}");
        joined.extend_from_slice(tcp.payload());
    }
    assert!(joined == payload(), "the payload, in order");
}

/// Checks the outer Ethernet, IPv4 and GRE headers of a tunnelled segment and returns
/// the inner frame.
fn check_outer(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr, key: Option<u32>) -> &[u8] {
    assert_eq!(&segment[..6], &NEXT_HOP_MAC);
    assert_eq!(&segment[6..12], &UPLINK_MAC);
    let outer = Ipv4HeaderSlice::from_slice(&segment[14..]).unwrap();
    assert_eq!((outer.source_addr(), outer.destination_addr()), (src, dst));
    assert_eq!(outer.protocol(), etherparse::IpNumber::GRE);
    assert_eq!(usize::from(outer.total_len()), segment.len() - 14);
    assert_eq!(
        outer.header_checksum(),
        outer.to_header().calc_header_checksum(),
        "outer IPv4 checksum"
    );
    let gre = &segment[34..];
    assert_eq!(&gre[2..4], &[0x65, 0x58], "Ethernet over GRE");
    match key {
        Some(k) => {
            assert_eq!(gre[0], 0x20, "keyed");
            assert_eq!(&gre[4..8], &k.to_be_bytes());
            &gre[8..]
        }
        None => {
            assert_eq!(gre[0], 0, "no key");
            &gre[4..]
        }
    }
}

fn from_c1_to(mac: Mac, ip: [u8; 4], port: u16) -> Ends {
    Ends {
        macs: (C1, mac),
        ips: (C1_IP, ip),
        ports: (40000, port),
    }
}

#[test]
fn access_to_access() {
    let t = tables(Design::Dedicated);
    let ends = from_c1_to(C2, C2_IP, 80);
    let want = Expect {
        port: PORT_C2,
        outer: None,
        vlan: None,
        ends: Ends {
            macs: (C2, C1),
            ..ends
        },
        ttl: 64,
    };
    check_path(&t, &mut Offline::default(), PORT_C1, &large(ends), want);
}

#[test]
fn encapsulated_to_another_host_in_both_designs() {
    let ends = from_c1_to(REMOTE, REMOTE_IP_IN, 80);
    let arriving = Ends {
        macs: (REMOTE, C1),
        ..ends
    };
    for (design, key, vlan) in [
        (Design::Dedicated, Some(A_ID), None),
        (Design::Shared, None, Some(A_VLAN)),
    ] {
        let want = Expect {
            port: UPLINK,
            outer: Some((LOCAL_IP, REMOTE_IP, key)),
            vlan,
            ends: arriving,
            ttl: 64,
        };
        check_path(
            &tables(design),
            &mut Offline::default(),
            PORT_C1,
            &large(ends),
            want,
        );
    }
}

#[test]
fn decapsulated_from_another_host_in_both_designs() {
    let ends = Ends {
        macs: (REMOTE, C1),
        ips: (REMOTE_IP_IN, C1_IP),
        ports: (80, 40000),
    };
    let inner = large(ends);
    for (design, key, tag) in [
        (Design::Dedicated, Some(A_ID), None),
        (Design::Shared, None, Some(A_VLAN)),
    ] {
        let inner = match tag {
            Some(vid) => tagged(&inner, vid),
            None => inner.clone(),
        };
        let want = Expect {
            port: PORT_C1,
            outer: None,
            vlan: None,
            ends: Ends {
                macs: (C1, REMOTE),
                ..ends
            },
            ttl: 64,
        };
        let frame = gre_encapsulated(&inner, REMOTE_IP, LOCAL_IP, key, NEXT_HOP_MAC, UPLINK_MAC);
        check_path(
            &tables(design),
            &mut Offline::default(),
            UPLINK,
            &frame,
            want,
        );
    }
}

#[test]
fn routed_between_subnets() {
    let t = tables(Design::Dedicated);
    let ends = from_c1_to(router_mac(A_ID), C2_IP, 80);
    let want = Expect {
        port: PORT_C2,
        outer: None,
        vlan: None,
        ends: Ends {
            macs: (C2, router_mac(A_ID)),
            ..ends
        },
        ttl: 63,
    };
    check_path(&t, &mut Offline::default(), PORT_C1, &large(ends), want);
}

/// Opens a TCP connection from `ends`' source with a SYN; returns the frame that left.
fn syn(t: &FlowTables, core: &mut Offline, in_port: u16, ends: Ends) -> (u16, Vec<u8>) {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(ends.macs.0, ends.macs.1)
        .ipv4(ends.ips.0, ends.ips.1, 64)
        .tcp(ends.ports.0, ends.ports.1, SEQ.wrapping_sub(1), 64240)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    let mut run = core.run(t, in_port, &frame);
    assert_eq!(run.sent.len(), 1, "the SYN passes: {:?}", core.drops());
    run.sent.remove(0)
}

#[test]
fn snat_out_and_back() {
    let t = tables(Design::Dedicated);
    let mut core = Offline::default();
    let ends = from_c1_to(router_mac(A_ID), SERVER, 443);
    let (_, opened) = syn(&t, &mut core, PORT_C1, ends);
    let snat_port = u16::from_be_bytes([opened[34], opened[35]]);
    let out = Ends {
        macs: (NEXT_HOP_MAC, UPLINK_MAC),
        ips: (LOCAL_IP.octets(), SERVER),
        ports: (snat_port, 443),
    };
    let want = Expect {
        port: UPLINK,
        outer: None,
        vlan: None,
        ends: out,
        ttl: 63,
    };
    check_path(&t, &mut core, PORT_C1, &large(ends), want);
    let back = Ends {
        macs: (NEXT_HOP_MAC, UPLINK_MAC),
        ips: (SERVER, LOCAL_IP.octets()),
        ports: (443, snat_port),
    };
    let want = Expect {
        port: PORT_C1,
        outer: None,
        vlan: None,
        ends: Ends {
            macs: (C1, router_mac(A_ID)),
            ips: (SERVER, C1_IP),
            ports: (443, 40000),
        },
        ttl: 63,
    };
    check_path(&t, &mut core, UPLINK, &large(back), want);
}

#[test]
fn published_port_in_and_back() {
    let t = tables(Design::Dedicated);
    let mut core = Offline::default();
    let client = [192, 0, 2, 50];
    let inbound = Ends {
        macs: (NEXT_HOP_MAC, UPLINK_MAC),
        ips: (client, LOCAL_IP.octets()),
        ports: (33000, 8080),
    };
    syn(&t, &mut core, UPLINK, inbound);
    let want = Expect {
        port: PORT_C1,
        outer: None,
        vlan: None,
        ends: Ends {
            macs: (C1, router_mac(A_ID)),
            ips: (client, C1_IP),
            ports: (33000, 80),
        },
        ttl: 63,
    };
    check_path(&t, &mut core, UPLINK, &large(inbound), want);
    let reply = Ends {
        macs: (C1, router_mac(A_ID)),
        ips: (C1_IP, client),
        ports: (80, 33000),
    };
    let want = Expect {
        port: UPLINK,
        outer: None,
        vlan: None,
        ends: Ends {
            macs: (NEXT_HOP_MAC, UPLINK_MAC),
            ips: (LOCAL_IP.octets(), client),
            ports: (8080, 33000),
        },
        ttl: 63,
    };
    check_path(&t, &mut core, PORT_C1, &large(reply), want);
}
