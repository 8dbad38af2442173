//! Golden tests of the tenant router on byte buffers: ARP for the gateway, routing
//! between subnets, TTL expiry, SNAT out and back (TCP, UDP, ICMP), published ports,
//! port exhaustion, held frames, peering consent and spoofing of the router.

use std::net::Ipv4Addr;

use dataplane::counters::DropReason;
use dataplane::packet::arp;
use dataplane::packet::frame::{BufFrame, Frame};
use dataplane::packet::icmp::Icmpv4Packet;
use dataplane::packet::ipv4::Ipv4Packet;
use dataplane::packet::tcp::TcpPacket;
use dataplane::packet::udp::UdpPacket;
use dataplane::packet::Mac;
use dataplane::pipeline::events::Event;
use dataplane::pipeline::offline::{Collect, Offline};
use dataplane::pipeline::router;
use dataplane::table::builder::TablesBuilder;
use dataplane::table::routing::{
    router_mac, Interface, NatSettings, Published, RouteTarget, Router,
};
use dataplane::table::{Design, FlowTables, Location};
use etherparse::PacketBuilder;
use proptest::prelude::*;

mod burst;

const A_ID: u32 = 100;
const B_ID: u32 = 200;
const C1: Mac = [2, 0, 0, 0, 0x0a, 1]; // tenant A, 10.1.0.5, port 0
const C2: Mac = [2, 0, 0, 0, 0x0a, 2]; // tenant A, 10.1.1.7, port 1
const CB: Mac = [2, 0, 0, 0, 0x0b, 1]; // tenant B, 10.2.0.5, port 2
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0x0c, 1];
const OUTSIDE_MAC: Mac = [2, 0, 0, 0, 0x0c, 0xfe];
const C1_IP: [u8; 4] = [10, 1, 0, 5];
const C2_IP: [u8; 4] = [10, 1, 1, 7];
const CB_IP: [u8; 4] = [10, 2, 0, 5];
const UNKNOWN_IP: [u8; 4] = [10, 1, 1, 99];
const GW_A: [u8; 4] = [10, 1, 0, 1];
const SERVER: [u8; 4] = [203, 0, 113, 10];
const UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SNAT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const OUTSIDE_HOP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);

const PORT_C1: u16 = 0;
const PORT_C2: u16 = 1;
const PORT_B: u16 = 2;
const UPLINK: u16 = 4;

fn mac_a() -> Mac {
    router_mac(A_ID)
}

fn mac_b() -> Mac {
    router_mac(B_ID)
}

#[derive(Default)]
struct Options {
    peered: bool,
    nat: NatSettings,
    /// (port, MTU) of ports whose device reports an MTU.
    mtus: Vec<(u16, u16)>,
}

/// Tenant A (10.1.0.1/24 and 10.1.1.1/24, SNAT) and B (10.2.0.1/24, SNAT), both routed
/// here; A publishes 10.1.0.5:80 as tcp/8080.
fn tables(options: &Options) -> FlowTables {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, None);
    let tb = b.tenant(B_ID, None);
    b.access_port(PORT_C1, a, None);
    b.access_port(PORT_C2, a, None);
    b.access_port(PORT_B, tb, None);
    b.uplink(UPLINK, UPLINK_MAC, UNDERLAY_IP);
    b.nat(options.nat);
    for &(port, mtu) in &options.mtus {
        b.port_mtu(port, mtu);
    }
    let router = |mac, interfaces: &[([u8; 4], u8)]| Router {
        mac,
        interfaces: interfaces
            .iter()
            .map(|&(ip, prefix)| Interface {
                ip: ip.into(),
                prefix,
            })
            .collect(),
        here: true,
        snat_ip: Some(SNAT_IP),
        route_lengths: 0,
        max_connections: 100,
    };
    b.router(
        a,
        router(mac_a(), &[(GW_A, 24), ([10, 1, 1, 1], 24)]),
        Location::Router,
    );
    b.router(
        tb,
        router(mac_b(), &[([10, 2, 0, 1], 24)]),
        Location::Router,
    );
    if options.peered {
        b.route(a, [10, 2, 0, 0].into(), 24, RouteTarget::Direct(tb));
        b.route(tb, [10, 1, 0, 0].into(), 24, RouteTarget::Direct(a));
    }
    b.static_mac(a, C1, Location::Port(PORT_C1));
    b.static_mac(a, C2, Location::Port(PORT_C2));
    b.static_mac(tb, CB, Location::Port(PORT_B));
    b.neighbor(a, C1_IP.into(), C1);
    b.neighbor(a, C2_IP.into(), C2);
    b.neighbor(tb, CB_IP.into(), CB);
    b.external(OUTSIDE_HOP, Some(OUTSIDE_MAC));
    b.publish(
        6,
        Published {
            tenant: a,
            ip: C1_IP.into(),
            port: 80,
            external_ip: SNAT_IP,
            external_port: 8080,
        },
    );
    b.build()
}

/// Tenant A's and B's router tables and a fresh single worker to run frames on.
fn one_core() -> (FlowTables, Offline) {
    (tables(&Options::default()), Offline::worker(0, 1))
}

/// The one frame a run sent, with its port (a run that sent none or several fails).
fn only(run: Collect) -> (u16, Vec<u8>) {
    let mut sent = run.sent;
    assert_eq!(sent.len(), 1, "one frame sent, not {}", sent.len());
    sent.remove(0)
}

fn tcp(src: (Mac, [u8; 4], u16), dst: (Mac, [u8; 4], u16), ttl: u8, syn: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, ttl)
        .tcp(src.2, dst.2, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(5000) };
    let mut out = Vec::new();
    b.write(&mut out, b"hello").unwrap();
    out
}

fn udp(src: (Mac, [u8; 4], u16), dst: (Mac, [u8; 4], u16), ttl: u8) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, ttl)
        .udp(src.2, dst.2)
        .write(&mut out, b"datagram")
        .unwrap();
    out
}

fn ping(src: (Mac, [u8; 4]), dst: (Mac, [u8; 4]), id: u16, reply: bool) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0).ipv4(src.1, dst.1, 64);
    let b = if reply {
        b.icmpv4_echo_reply(id, 1)
    } else {
        b.icmpv4_echo_request(id, 1)
    };
    let mut out = Vec::new();
    b.write(&mut out, b"ping").unwrap();
    out
}

/// A TCP/IPv4 frame whose IPv4 packet is `total` bytes long, DF set as asked.
fn tcp_sized(
    src: (Mac, [u8; 4], u16),
    dst: (Mac, [u8; 4], u16),
    total: usize,
    df: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(src.1, dst.1, 64)
        .tcp(src.2, dst.2, 1000, 64240)
        .ack(5000)
        .write(&mut out, &vec![0x5a; total - 40])
        .unwrap();
    let mut ip = Ipv4Packet::new_unchecked(&mut out[14..]);
    ip.set_dont_frag(df);
    ip.fill_checksum();
    out
}

/// The ICMP error `frame` is: (type, code, rest of header), checked, and the quoted
/// original (its IP header and 8 bytes).
fn icmp_error_of(frame: &[u8]) -> ((u8, u8, u32), Vec<u8>) {
    let outer = ip(frame);
    let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    (
        (
            u8::from(icmp.msg_type()),
            icmp.msg_code(),
            icmp.rest_of_header(),
        ),
        icmp.payload().to_vec(),
    )
}

fn ip(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    ip
}

fn tcp_of(frame: &[u8]) -> (u16, u16) {
    let ip = ip(frame);
    let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(
        tcp.verify_checksum(ip.src_addr(), ip.dst_addr()),
        "TCP checksum"
    );
    (tcp.src_port(), tcp.dst_port())
}

fn udp_of(frame: &[u8]) -> (u16, u16) {
    let ip = ip(frame);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(
        udp.verify_checksum(ip.src_addr(), ip.dst_addr()),
        "UDP checksum"
    );
    (udp.src_port(), udp.dst_port())
}

fn arp_request(sender: Mac, sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    arp::request_frame(sender, sender_ip.into(), target_ip.into())
}

#[test]
fn arp_for_the_gateway_is_answered_in_place() {
    let (t, mut core) = one_core();
    let (port, reply) = &only(core.run(&t, PORT_C1, &arp_request(C1, C1_IP, GW_A)));
    assert_eq!(*port, PORT_C1);
    assert_eq!(&reply[0..6], &C1);
    assert_eq!(&reply[6..12], &mac_a());
    assert_eq!(&reply[20..22], &[0, 2], "ARP reply");
    assert_eq!(&reply[22..28], &mac_a(), "sender MAC = router");
    assert_eq!(&reply[28..32], &GW_A, "sender IP = gateway");
    assert_eq!(&reply[38..42], &C1_IP);
    assert!(core.events().contains(&Event::TenantNeighbor {
        tenant: 0,
        ip: C1_IP.into(),
        mac: C1
    }));
    // ARP for another container's address is switched as usual (flooded).
    let out = core.run(&t, PORT_C1, &arp_request(C1, C1_IP, C2_IP)).sent;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PORT_C2);
}

/// A trace shows the way a real packet takes: once the route is cached, a routed frame
/// takes the router's fast path, traced or not, and leaves the same way.
#[test]
fn a_trace_follows_the_fast_path_real_frames_take() {
    let (t, mut core) = one_core();
    let sent = tcp((C1, C1_IP, 40000), (mac_a(), C2_IP, 80), 64, true);
    let (first, notes) = core.trace(&t, PORT_C1, &sent);
    assert!(
        notes.iter().all(|n| !n.contains("fast path")),
        "nothing cached yet: {notes:?}"
    );
    let (second, notes) = core.trace(&t, PORT_C1, &sent);
    assert!(
        notes.iter().any(|n| n.contains("fast path")),
        "cached: {notes:?}"
    );
    assert_eq!(first.sent, second.sent);
    assert_eq!(second.sent[0].0, PORT_C2);
}

#[test]
fn routes_between_subnets_of_a_tenant() {
    let (t, mut core) = one_core();
    let sent = tcp((C1, C1_IP, 40000), (mac_a(), C2_IP, 80), 64, true);
    let (port, got) = &only(core.run(&t, PORT_C1, &sent));
    assert_eq!(*port, PORT_C2);
    assert_eq!(&got[0..6], &C2, "to the neighbour's MAC");
    assert_eq!(&got[6..12], &mac_a(), "from the router");
    assert_eq!(ip(got).ttl(), 63);
    assert_eq!(tcp_of(got), (40000, 80), "ports untouched");
    assert_eq!(&got[14 + 20..], &sent[14 + 20..], "payload untouched");
    // The gateway answers ping.
    let out = core
        .run(&t, PORT_C1, &ping((C1, C1_IP), (mac_a(), GW_A), 7, false))
        .sent;
    assert_eq!(out[0].0, PORT_C1);
    let reply = ip(&out[0].1);
    assert_eq!(reply.src_addr(), Ipv4Addr::from(GW_A));
    let icmp = Icmpv4Packet::new_checked(reply.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(u8::from(icmp.msg_type()), 0);
}

#[test]
fn ttl_expiry_sends_time_exceeded_with_the_original_header() {
    let (t, mut core) = one_core();
    let sent = udp((C1, C1_IP, 5000), (mac_a(), C2_IP, 53), 1);
    let out = core.run(&t, PORT_C1, &sent).sent;
    assert_eq!(core.dropped(DropReason::TtlExceeded), 1);
    assert_eq!(out.len(), 1);
    let (port, got) = &out[0];
    assert_eq!(*port, PORT_C1, "back to the sender");
    assert_eq!(&got[0..6], &C1);
    let outer = ip(got);
    assert_eq!(outer.src_addr(), Ipv4Addr::from(GW_A));
    assert_eq!(outer.dst_addr(), Ipv4Addr::from(C1_IP));
    let icmp = Icmpv4Packet::new_checked(outer.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((u8::from(icmp.msg_type()), icmp.msg_code()), (11, 0));
    assert_eq!(
        icmp.payload(),
        &sent[14..14 + 28],
        "the original IP header and 8 bytes"
    );
}

#[test]
fn icmp_errors_are_rate_limited() {
    let (t, mut core) = one_core();
    let sent = udp((C1, C1_IP, 5000), (mac_a(), C2_IP, 53), 1);
    let answered: usize = (0..router::ICMP_ERRORS_PER_SECOND + 50)
        .map(|_| core.run(&t, PORT_C1, &sent).sent.len())
        .sum();
    assert_eq!(answered as u32, router::ICMP_ERRORS_PER_SECOND);
    assert_eq!(
        core.dropped(DropReason::TtlExceeded),
        u64::from(router::ICMP_ERRORS_PER_SECOND) + 50
    );
}

#[test]
fn snat_tcp_out_and_back() {
    let (t, mut core) = one_core();
    let (port, got) = &only(core.run(
        &t,
        PORT_C1,
        &tcp((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 64, true),
    ));
    assert_eq!(*port, UPLINK);
    assert_eq!(&got[0..6], &OUTSIDE_MAC);
    assert_eq!(&got[6..12], &UPLINK_MAC);
    assert_eq!(ip(got).src_addr(), SNAT_IP);
    assert_eq!(ip(got).ttl(), 63);
    let (sport, dport) = tcp_of(got);
    assert_eq!(dport, 443);
    let back = tcp(
        (OUTSIDE_MAC, SERVER, 443),
        (UPLINK_MAC, SNAT_IP.octets(), sport),
        60,
        false,
    );
    let (port, got) = &only(core.run(&t, UPLINK, &back));
    assert_eq!(*port, PORT_C1);
    assert_eq!(&got[0..6], &C1);
    assert_eq!(&got[6..12], &mac_a());
    assert_eq!(ip(got).dst_addr(), Ipv4Addr::from(C1_IP));
    assert_eq!(tcp_of(got), (443, 40000));
    // Another remote port of the server is no session.
    let stray = tcp(
        (OUTSIDE_MAC, SERVER, 444),
        (UPLINK_MAC, SNAT_IP.octets(), sport),
        60,
        false,
    );
    assert!(core.run(&t, UPLINK, &stray).sent.is_empty());
    assert_eq!(core.dropped(DropReason::NatNoSession), 1);
}

#[test]
fn snat_reply_on_another_core_is_handed_to_the_session_owner() {
    let t = tables(&Options::default());
    let mut uplink_core = Offline::worker(0, 2);
    let mut container_core = Offline::worker(1, 2);
    let out = container_core
        .run(
            &t,
            PORT_C1,
            &tcp((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 64, true),
        )
        .sent;
    let (_, sent) = &out[0];
    let (sport, _) = tcp_of(sent);
    let back = tcp(
        (OUTSIDE_MAC, SERVER, 443),
        (UPLINK_MAC, SNAT_IP.octets(), sport),
        60,
        false,
    );
    // Without rings between the cores the reply is a counted drop.
    assert!(uplink_core.run(&t, UPLINK, &back).sent.is_empty());
    assert_eq!(uplink_core.dropped(DropReason::NatForeignCore), 1);
    let with_rings = Collect::with_workers();
    let handed = uplink_core
        .run_into(&t, UPLINK, &back, with_rings)
        .handed
        .unwrap();
    assert_eq!(handed, vec![(1, back.clone())], "unchanged, to worker 1");
    assert_eq!(uplink_core.counters.snapshot().handed_off, 1);
    let out = container_core.run(&t, UPLINK, &handed[0].1).sent;
    assert_eq!(out.len(), 1);
    let (port, got) = &out[0];
    assert_eq!(*port, PORT_C1);
    assert_eq!(ip(got).dst_addr(), Ipv4Addr::from(C1_IP));
    assert_eq!(tcp_of(got), (443, 40000));
    // A port of the receiving core's own slice with no session is not passed on.
    let own_slice = Collect::with_workers();
    let mine = NatSettings::default().port_min;
    let stray = tcp(
        (OUTSIDE_MAC, SERVER, 443),
        (UPLINK_MAC, SNAT_IP.octets(), mine),
        60,
        false,
    );
    let sink = uplink_core.run_into(&t, UPLINK, &stray, own_slice);
    assert!(sink.handed.unwrap().is_empty() && sink.sent.is_empty());
    assert_eq!(uplink_core.dropped(DropReason::NatNoSession), 1);
}

#[test]
fn snat_udp_and_icmp_out_and_back() {
    let (t, mut core) = one_core();
    let out = core
        .run(
            &t,
            PORT_C1,
            &udp((C1, C1_IP, 5353), (mac_a(), SERVER, 53), 64),
        )
        .sent;
    let (sport, _) = udp_of(&out[0].1);
    let out = core
        .run(
            &t,
            UPLINK,
            &udp(
                (OUTSIDE_MAC, SERVER, 53),
                (UPLINK_MAC, SNAT_IP.octets(), sport),
                60,
            ),
        )
        .sent;
    assert_eq!(out[0].0, PORT_C1);
    assert_eq!(udp_of(&out[0].1), (53, 5353));

    let out = core
        .run(
            &t,
            PORT_C1,
            &ping((C1, C1_IP), (mac_a(), SERVER), 0x1234, false),
        )
        .sent;
    assert_eq!(out[0].0, UPLINK);
    let sent = ip(&out[0].1);
    assert_eq!(sent.src_addr(), SNAT_IP);
    let icmp = Icmpv4Packet::new_checked(sent.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let id = icmp.echo_ident();
    let out = core
        .run(
            &t,
            UPLINK,
            &ping(
                (OUTSIDE_MAC, SERVER),
                (UPLINK_MAC, SNAT_IP.octets()),
                id,
                true,
            ),
        )
        .sent;
    assert_eq!(out[0].0, PORT_C1);
    let back = ip(&out[0].1);
    assert_eq!(back.dst_addr(), Ipv4Addr::from(C1_IP));
    let icmp = Icmpv4Packet::new_checked(back.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.echo_ident(), 0x1234);
}

#[test]
fn published_port_in_and_back() {
    let (t, mut core) = one_core();
    let client = [192, 0, 2, 50];
    let out = core
        .run(
            &t,
            UPLINK,
            &tcp(
                (OUTSIDE_MAC, client, 33000),
                (UPLINK_MAC, SNAT_IP.octets(), 8080),
                60,
                true,
            ),
        )
        .sent;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PORT_C1);
    assert_eq!(ip(&out[0].1).dst_addr(), Ipv4Addr::from(C1_IP));
    assert_eq!(tcp_of(&out[0].1), (33000, 80));
    let out = core
        .run(
            &t,
            PORT_C1,
            &tcp((C1, C1_IP, 80), (mac_a(), client, 33000), 64, false),
        )
        .sent;
    assert_eq!(out[0].0, UPLINK);
    assert_eq!(ip(&out[0].1).src_addr(), SNAT_IP);
    assert_eq!(tcp_of(&out[0].1), (8080, 33000), "the published port");
}

#[test]
fn port_exhaustion_is_a_counted_drop() {
    let options = Options {
        nat: NatSettings {
            port_min: 2000,
            port_max: 2001,
            ..NatSettings::default()
        },
        ..Options::default()
    };
    let t = tables(&options);
    let mut core = Offline::worker(0, 1);
    for sport in [50000, 50001, 50002] {
        core.run(
            &t,
            PORT_C1,
            &udp((C1, C1_IP, sport), (mac_a(), SERVER, 53), 64),
        );
    }
    assert_eq!(core.dropped(DropReason::NatPortsExhausted), 1);
    assert_eq!(core.sessions(), 2);
}

#[test]
fn mid_stream_tcp_without_session_is_reset() {
    let (t, mut core) = one_core();
    let out = core
        .run(
            &t,
            PORT_C1,
            &tcp((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 64, false),
        )
        .sent;
    assert_eq!(core.dropped(DropReason::NatNoSession), 1);
    assert_eq!(out.len(), 1, "a reset goes back");
    let (port, got) = &out[0];
    assert_eq!(*port, PORT_C1);
    assert_eq!(tcp_of(got), (443, 40000));
    let header = ip(got);
    let tcp = TcpPacket::new_checked(header.payload()).unwrap();
    assert!(tcp.rst());
    assert_eq!(tcp.seq_number(), 5000, "the segment's ACK");
}

#[test]
fn unresolved_neighbour_holds_and_asks() {
    let (t, mut core) = one_core();
    let sink = core.run(
        &t,
        PORT_C1,
        &udp((C1, C1_IP, 1), (mac_a(), UNKNOWN_IP, 2), 64),
    );
    assert!(sink.sent.is_empty());
    assert_eq!(sink.parked.len(), 1);
    let pending = sink.parked[0].0;
    assert_eq!(pending.ip, Ipv4Addr::from(UNKNOWN_IP));
    assert!(core.events().contains(&Event::NeighborMiss {
        tenant: 0,
        ip: UNKNOWN_IP.into()
    }));
    // Newer tables know it: the held frame goes out.
    let mut newer = tables(&Options::default());
    let late: Mac = [2, 0, 0, 0, 0x0a, 0x99];
    newer.neighbors.insert(
        dataplane::table::routing::neighbor_key(0, UNKNOWN_IP.into()),
        late,
    );
    newer
        .fdb
        .insert(
            dataplane::table::fdb_key(0, &late),
            dataplane::table::FdbEntry {
                location: Location::Port(PORT_C2),
                is_static: false,
            },
        )
        .expect("the FDB grows");
    let mut out = Collect::default();
    let mut cx = core.context();
    let held = BufFrame::new(&sink.parked[0].1);
    assert!(dataplane::pipeline::release(&newer, pending, held, &mut out, &mut cx).is_ok());
    assert_eq!(out.sent[0].0, PORT_C2);
    assert_eq!(&out.sent[0].1[0..6], &late);
    assert_eq!(ip(&out.sent[0].1).ttl(), 63);
}

#[test]
fn tenants_route_to_each_other_only_when_peered() {
    let mut core = Offline::worker(0, 1);
    let to_a = udp((CB, CB_IP, 1), (mac_b(), C1_IP, 2), 64);
    let apart = tables(&Options::default());
    let out = core.run(&apart, PORT_B, &to_a).sent;
    assert!(
        out.iter().all(|(p, _)| *p == UPLINK),
        "without consent B's packet for A's subnet can only leave by the uplink: {out:?}"
    );
    let peered = tables(&Options {
        peered: true,
        ..Options::default()
    });
    let mut core = Offline::worker(0, 1);
    let out = core.run(&peered, PORT_B, &to_a).sent;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, PORT_C1);
    assert_eq!(&out[0].1[6..12], &mac_a(), "enters A from A's router");
}

#[test]
fn nobody_sends_as_the_router() {
    let (t, mut core) = one_core();
    let forged = udp((mac_a(), C1_IP, 1), (C2, C2_IP, 2), 64);
    assert!(core.run(&t, PORT_C1, &forged).sent.is_empty());
    assert_eq!(core.dropped(DropReason::MacSpoof), 1);
    // A gratuitous ARP claiming the gateway address is refused, not flooded.
    let garp = arp_request(C1, GW_A, GW_A);
    assert!(core.run(&t, PORT_C1, &garp).sent.is_empty());
    assert_eq!(core.dropped(DropReason::NotRoutable), 1);
    // Another tenant's router MAC is just an unknown MAC in B: flooded in B, never routed
    // by A.
    let cross = udp((CB, CB_IP, 1), (mac_a(), C1_IP, 2), 64);
    let out = core.run(&t, PORT_B, &cross).sent;
    assert!(out.iter().all(|(p, _)| *p == PORT_B || *p == UPLINK));
}

/// A frame a container on port C1 might send toward its router, mostly well formed,
/// sometimes from a source it may not use, with a bad checksum, no TTL to spare, IP
/// options, a fragment, or cut short.
fn routed_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![C1, C1, C1, C2, [2, 0, 0, 0, 0x0a, 9]]),
        prop::sample::select(vec![mac_a(), mac_a(), mac_a(), mac_b(), C2]),
        prop::sample::select(vec![C2_IP, CB_IP, UNKNOWN_IP, SERVER, GW_A]),
        0u8..4,
        prop::sample::select(vec![0u8, 1, 2, 64]),
        0u16..3,
        0u8..8,
        0usize..80,
    )
        .prop_map(|(src, dst_mac, dst_ip, kind, ttl, port, damage, cut)| {
            let from = (src, C1_IP, 40000 + port);
            let to = (dst_mac, dst_ip, 80);
            let mut f = match kind {
                0 => udp(from, to, ttl),
                1 => tcp(from, to, ttl, true),
                2 => tcp(from, to, ttl, false),
                _ => ping((src, C1_IP), (dst_mac, dst_ip), port, false),
            };
            match damage {
                0 => f[24] ^= 0x40, // IPv4 checksum
                1 => f[20] |= 0x20, // more fragments
                2 => f[14] = 0x46,  // IHL 6, checksum now wrong
                3 => f.truncate(cut.min(f.len())),
                4 => f[12..14].copy_from_slice(&[0x86, 0xdd]),
                _ => {}
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// The router's fast path changes nothing: the same frames through a core that
    /// takes it (untraced) and through one that never does (traced) leave the same
    /// way, with the same drops, held frames and SNAT sessions.
    #[test]
    fn the_fast_path_agrees_with_the_whole_pipeline(
        frames in prop::collection::vec(routed_frame(), 1..48),
    ) {
        let t = tables(&Options::default());
        let mut fast = Offline::worker(0, 1);
        let mut whole = Offline::worker(0, 1).without_fast_path();
        for frame in &frames {
            let a = fast.run(&t, PORT_C1, frame);
            let b = whole.run(&t, PORT_C1, frame);
            prop_assert_eq!(a.sent, b.sent, "frame {:02x?}", frame);
            prop_assert_eq!(a.parked, b.parked);
        }
        prop_assert_eq!(fast.drops(), whole.drops());
        prop_assert_eq!(fast.sessions(), whole.sessions());
        prop_assert_eq!(fast.events(), whole.events());
    }
}

/// C2's port takes IPv4 packets of 1,400 bytes; the uplink 1,300.
fn small_mtus() -> FlowTables {
    tables(&Options {
        mtus: vec![(PORT_C2, 1400), (UPLINK, 1300)],
        ..Options::default()
    })
}

/// Path MTU discovery (RFC 1191): a packet larger than the next hop's MTU, DF set, is
/// answered with "fragmentation needed" naming that MTU, whether the route was cached
/// (the fast path) or not; one that fits passes.
#[test]
fn too_big_for_the_next_hop_with_df_gets_fragmentation_needed() {
    let t = small_mtus();
    for mut core in [
        Offline::worker(0, 1),
        Offline::worker(0, 1).without_fast_path(),
    ] {
        let fits = tcp_sized((C1, C1_IP, 40000), (mac_a(), C2_IP, 80), 1400, true);
        for _ in 0..2 {
            assert_eq!(only(core.run(&t, PORT_C1, &fits)).0, PORT_C2);
        }
        let sent = tcp_sized((C1, C1_IP, 40000), (mac_a(), C2_IP, 80), 1401, true);
        let (port, got) = only(core.run(&t, PORT_C1, &sent));
        assert_eq!(port, PORT_C1, "back to the sender");
        assert_eq!(&got[0..6], &C1);
        assert_eq!(&got[6..12], &mac_a());
        assert_eq!(ip(&got).src_addr(), Ipv4Addr::from(GW_A));
        assert_eq!(ip(&got).dst_addr(), Ipv4Addr::from(C1_IP));
        let (kind, quoted) = icmp_error_of(&got);
        assert_eq!(kind, (3, 4, 1400), "fragmentation needed, MTU 1400");
        assert_eq!(
            quoted,
            &sent[14..14 + 28],
            "the original IP header and 8 bytes"
        );
        assert_eq!(core.dropped(DropReason::FragmentationNeeded), 1);
    }
}

/// Without DF a packet too large is dropped and counted: tenet does not fragment.
#[test]
fn too_big_without_df_is_dropped() {
    let t = small_mtus();
    let (_, mut core) = one_core();
    let sent = tcp_sized((C1, C1_IP, 40000), (mac_a(), C2_IP, 80), 1401, false);
    assert!(core.run(&t, PORT_C1, &sent).sent.is_empty());
    assert_eq!(core.dropped(DropReason::TooBig), 1);
    assert_eq!(core.dropped(DropReason::FragmentationNeeded), 0);
}

/// A large TCP segment owes its segmentation: it is cut to fit where it leaves, so the
/// MTU does not refuse it.
#[test]
fn a_large_segment_is_routed_whatever_the_mtu() {
    let t = small_mtus();
    let (_, mut core) = one_core();
    let mut frame = BufFrame::new(&tcp_sized(
        (C1, C1_IP, 40000),
        (mac_a(), C2_IP, 80),
        20_000,
        true,
    ));
    frame.set_gso_size(1360);
    let run = core.run_frame(&t, PORT_C1, frame);
    assert_eq!(run.sent.len(), 1);
    assert_eq!(run.sent[0].0, PORT_C2);
    assert_eq!(run.owed, [1360], "still owed");
    assert_eq!(ip(&run.sent[0].1).ttl(), 63);
}

/// Toward the outside the uplink's MTU counts, before any SNAT session is made.
#[test]
fn too_big_for_the_uplink_is_refused_before_snat() {
    let t = small_mtus();
    let (_, mut core) = one_core();
    let sent = tcp_sized((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 1301, true);
    let (port, got) = only(core.run(&t, PORT_C1, &sent));
    assert_eq!(port, PORT_C1);
    assert_eq!(icmp_error_of(&got).0, (3, 4, 1300));
    assert_eq!(
        core.sessions(),
        0,
        "no session for a packet that never left"
    );
    let open = tcp((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 64, true);
    assert_eq!(only(core.run(&t, PORT_C1, &open)).0, UPLINK);
    let fits = tcp_sized((C1, C1_IP, 40000), (mac_a(), SERVER, 443), 1300, true);
    assert_eq!(only(core.run(&t, PORT_C1, &fits)).0, UPLINK);
    // A tunnel carries what the uplink does less GRE, outer IPv4 and inner Ethernet.
    assert_eq!(t.tunnel_mtu(), 1300 - 42);
}

/// From the outside (a published port here) the error goes back out of the uplink to
/// the sender, from the address it sent to, quoting the header it sent.
#[test]
fn too_big_from_outside_is_answered_out_of_the_uplink() {
    let t = tables(&Options {
        mtus: vec![(PORT_C1, 1400)],
        ..Options::default()
    });
    let (_, mut core) = one_core();
    let client = [192, 0, 2, 50];
    let sent = tcp_sized(
        (OUTSIDE_MAC, client, 33000),
        (UPLINK_MAC, SNAT_IP.octets(), 8080),
        1401,
        true,
    );
    let (port, got) = only(core.run(&t, UPLINK, &sent));
    assert_eq!(port, UPLINK);
    assert_eq!(&got[0..6], &OUTSIDE_MAC);
    assert_eq!(&got[6..12], &UPLINK_MAC);
    assert_eq!(ip(&got).src_addr(), SNAT_IP);
    assert_eq!(ip(&got).dst_addr(), Ipv4Addr::from(client));
    let (kind, quoted) = icmp_error_of(&got);
    assert_eq!(kind, (3, 4, 1400));
    assert_eq!(
        quoted,
        &sent[14..14 + 28],
        "the header as the sender sent it"
    );
    assert_eq!(core.dropped(DropReason::FragmentationNeeded), 1);
}

#[test]
fn a_burst_over_a_big_fdb_goes_as_its_frames_one_at_a_time() {
    let families = [(0, 1, Location::Port(PORT_C2))];
    let tables = burst::with_bulk_macs(tables(&Options::default()), &families, 10_000);
    let bulk = |i| burst::bulk_mac(1, i);
    // Every way a frame from a container takes: known, bulk, unknown and group
    // destinations, new and spoofed sources, routed inside, outside (SNAT) and to a
    // tenant not peered, a frame too short to read: each key beside other frames' keys.
    let learned: Mac = [2, 0, 0, 0, 0x0a, 0x77];
    let mut frames = Vec::new();
    for i in 0..32u32 {
        let frame = match i % 8 {
            0 => udp((C1, C1_IP, 1000), (C2, C2_IP, 53), 64),
            1 => udp((C1, C1_IP, 1000), (bulk(i * 311), C2_IP, 53), 64),
            2 => udp((learned, C1_IP, 1000), (bulk(i), C2_IP, 53), 64),
            3 => udp((C1, C1_IP, 1000 + i as u16), (mac_a(), C2_IP, 53), 64),
            4 => tcp(
                (C1, C1_IP, 2000 + i as u16),
                (mac_a(), SERVER, 443),
                64,
                true,
            ),
            5 => udp((C2, C2_IP, 1000), (bulk(i), C1_IP, 53), 64),
            6 => match i {
                6 => arp_request(C1, C1_IP, GW_A),
                14 => udp((C1, C1_IP, 1000), ([2, 9, 9, 9, 9, 9], C2_IP, 53), 64),
                22 => udp((C1, C1_IP, 1000), (mac_a(), CB_IP, 53), 64),
                _ => vec![0xff; 9],
            },
            _ => udp((C1, C1_IP, 1000), (bulk(9_999 - i), C2_IP, 53), 64),
        };
        frames.push(frame);
    }
    let stats = burst::agrees_one_at_a_time(tables, PORT_C1, &frames);
    assert!(stats.dropped(DropReason::MacSpoof) > 0);
    assert!(stats.dropped(DropReason::Malformed) > 0);
}
