//! Golden tests of the tenant pipeline on byte buffers: each path's exact output bytes,
//! and each drop's reason.

use std::net::Ipv4Addr;

mod burst;
mod frames;

use dataplane::counters::DropReason;
use dataplane::packet::{arp, Mac};
use dataplane::pipeline::events::Event;
use dataplane::pipeline::offline::{Collect, Offline};
use dataplane::pipeline::stage::HANDOFF_PORT;
use dataplane::table::builder::TablesBuilder;
use dataplane::table::routing::{Interface, Router};
use dataplane::table::{Design, FlowTables, Location};
use frames::{gre_encapsulated, tagged};

const A_ID: u32 = 100;
const B_ID: u32 = 200;
const C1: Mac = [2, 0, 0, 0, 0x0a, 1]; // tenant A container on port 0
const C2: Mac = [2, 0, 0, 0, 0x0b, 1]; // tenant A container on port 1
const CB: Mac = [2, 0, 0, 0, 0x0b, 2]; // tenant B container on port 2
const REMOTE_A: Mac = [2, 0, 0, 0, 0x0b, 9]; // tenant A container on host 1
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0x0c, 1];
const NEXT_HOP_MAC: Mac = [2, 0, 0, 0, 0x0c, 2];
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 3);

const ACCESS_A0: u16 = 0;
const ACCESS_A1: u16 = 1;
const ACCESS_B: u16 = 2;
const TRUNK: u16 = 3;
const UPLINK: u16 = 4;

/// Tenants A (VLAN 100) and B (VLAN 200); A lives on host 1 too, B on host 2.
fn tables(design: Design, is_hub: bool) -> FlowTables {
    let mut b = TablesBuilder::new(design, is_hub);
    let a = b.tenant(A_ID, Some(100));
    let tb = b.tenant(B_ID, Some(200));
    b.access_port(ACCESS_A0, a, None);
    b.access_port(ACCESS_A1, a, None);
    b.access_port(ACCESS_B, tb, None);
    b.trunk_port(TRUNK, &[a, tb]);
    b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
    let t1 = b.tunnel(1, REMOTE_IP, Some(NEXT_HOP_MAC));
    let t2 = b.tunnel(2, OTHER_IP, Some(NEXT_HOP_MAC));
    match design {
        Design::Dedicated => {
            b.tunnel_carries(t1, a);
            b.tunnel_carries(t2, tb);
        }
        Design::Shared => {
            for t in [t1, t2] {
                b.tunnel_carries(t, a);
                b.tunnel_carries(t, tb);
            }
        }
    }
    b.static_mac(a, C1, Location::Port(ACCESS_A0));
    b.static_mac(a, C2, Location::Port(ACCESS_A1));
    b.static_mac(tb, CB, Location::Port(ACCESS_B));
    b.static_mac(a, REMOTE_A, Location::Host(1));
    b.build()
}

struct Run {
    out: Vec<(u16, Vec<u8>)>,
    core: Offline,
    events: Vec<Event>,
}

impl Run {
    fn dropped(&self, reason: DropReason) -> u64 {
        self.core.dropped(reason)
    }
}

fn run(tables: &FlowTables, in_port: u16, frame: &[u8]) -> Run {
    let mut core = Offline::default();
    let out = core.run(tables, in_port, frame).sent;
    let events = core.events();
    Run { out, core, events }
}

/// Ethernet + a 46-byte payload (IPv4 ethertype, payload bytes counting up).
fn eth(dst: Mac, src: Mac) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend(0x0800u16.to_be_bytes());
    f.extend((0..46).map(|i| i as u8));
    f
}

/// The outer headers tenet must write, built independently with etherparse.
/// `inner` as this host tunnels it to the remote host.
fn tunnelled_out(inner: &[u8], key: Option<u32>) -> Vec<u8> {
    gre_encapsulated(inner, LOCAL_IP, REMOTE_IP, key, UPLINK_MAC, NEXT_HOP_MAC)
}

/// `inner` as the remote host tunnels it to this one.
fn tunnelled_in(inner: &[u8], key: Option<u32>) -> Vec<u8> {
    gre_encapsulated(inner, REMOTE_IP, LOCAL_IP, key, NEXT_HOP_MAC, UPLINK_MAC)
}

#[test]
fn access_to_access_known_unicast_is_untouched() {
    let t = tables(Design::Dedicated, false);
    let frame = eth(C2, C1);
    let r = run(&t, ACCESS_A0, &frame);
    assert_eq!(r.out, vec![(ACCESS_A1, frame)]);
}

#[test]
fn access_to_trunk_pushes_the_tenant_vlan() {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, Some(100));
    b.access_port(ACCESS_A0, a, None);
    b.trunk_port(TRUNK, &[a]);
    b.static_mac(a, C2, Location::Port(TRUNK));
    let t = b.build();
    let frame = eth(C2, C1);
    let r = run(&t, ACCESS_A0, &frame);
    assert_eq!(r.out, vec![(TRUNK, tagged(&frame, 100))]);
}

#[test]
fn trunk_to_access_pops_the_tag() {
    let t = tables(Design::Dedicated, false);
    let frame = eth(C2, [2, 0, 0, 0, 0x0d, 1]);
    let r = run(&t, TRUNK, &tagged(&frame, 100));
    assert_eq!(r.out, vec![(ACCESS_A1, frame)]);
    // The same MAC in VLAN 200 is tenant B's business: unknown there, flooded in B only.
    let r = run(&t, TRUNK, &tagged(&eth(C2, [2, 0, 0, 0, 0x0d, 1]), 200));
    let ports: Vec<u16> = r.out.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![ACCESS_B, UPLINK]);
}

/// A frame between two trunks keeps its tag, rewritten (PCP cleared, as a pop and a
/// push leave it); back out of the trunk it came from is a hairpin.
#[test]
fn trunk_to_trunk_rewrites_the_tag_in_place() {
    const TRUNK2: u16 = 5;
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, Some(100));
    b.trunk_port(TRUNK, &[a]);
    b.trunk_port(TRUNK2, &[a]);
    b.static_mac(a, C2, Location::Port(TRUNK2));
    b.static_mac(a, C1, Location::Port(TRUNK));
    let t = b.build();
    let sender = [2, 0, 0, 0, 0x0d, 1];
    let frame = eth(C2, sender);
    let mut with_priority = tagged(&frame, 100);
    with_priority[14] |= 5 << 5;
    let r = run(&t, TRUNK, &with_priority);
    assert_eq!(r.out, vec![(TRUNK2, tagged(&frame, 100))]);
    let r = run(&t, TRUNK, &tagged(&eth(C1, sender), 100));
    assert!(r.out.is_empty());
    assert_eq!(r.dropped(DropReason::Hairpin), 1);
}

/// The router's ARP check reads the ethertype behind a trunk frame's tag: a tagged
/// request for the gateway is answered, tagged, out of the trunk.
#[test]
fn a_tagged_arp_for_the_gateway_is_answered_out_of_the_trunk() {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, Some(100));
    b.trunk_port(TRUNK, &[a]);
    let gateway = Ipv4Addr::new(10, 1, 0, 1);
    let router_mac = [2, 0, 0, 0, 0x0e, 1];
    b.router(
        a,
        Router {
            mac: router_mac,
            interfaces: vec![Interface {
                ip: gateway,
                prefix: 24,
            }],
            here: true,
            snat_ip: None,
            route_lengths: 0,
            max_connections: 100,
        },
        Location::Router,
    );
    let t = b.build();
    let asker_ip = Ipv4Addr::new(10, 1, 0, 5);
    let request = arp::request_frame(C1, asker_ip, gateway);
    let r = run(&t, TRUNK, &tagged(&request, 100));
    assert_eq!(r.out.len(), 1, "answered: {:?}", r.out);
    let (port, reply) = &r.out[0];
    assert_eq!(*port, TRUNK);
    assert_eq!(
        &reply[12..16],
        &[0x81, 0x00, 0, 100],
        "tagged with the tenant's VLAN"
    );
    assert_eq!(&reply[24..26], &[0, 2], "ARP reply");
    assert_eq!(&reply[26..32], &router_mac, "sender MAC = router");
}

#[test]
fn access_to_remote_host_is_gre_with_the_tenant_key() {
    let t = tables(Design::Dedicated, false);
    let frame = eth(REMOTE_A, C1);
    let r = run(&t, ACCESS_A0, &frame);
    let want = tunnelled_out(&frame, Some(A_ID));
    assert_eq!(r.out, vec![(UPLINK, want)]);
}

#[test]
fn shared_design_tunnels_tagged_frames_without_key() {
    let t = tables(Design::Shared, false);
    let frame = eth(REMOTE_A, C1);
    let r = run(&t, ACCESS_A0, &frame);
    let want = tunnelled_out(&tagged(&frame, 100), None);
    assert_eq!(r.out, vec![(UPLINK, want)]);
}

#[test]
fn gre_from_a_peer_is_decapsulated_into_its_tenant() {
    let t = tables(Design::Dedicated, false);
    let inner = eth(C2, REMOTE_A);
    let outer = tunnelled_in(&inner, Some(A_ID));
    let r = run(&t, UPLINK, &outer);
    assert_eq!(r.out, vec![(ACCESS_A1, inner.clone())]);
    // Shared design: the tenant comes from the inner tag, which is removed.
    let t = tables(Design::Shared, false);
    let outer = tunnelled_in(&tagged(&inner, 100), None);
    let r = run(&t, UPLINK, &outer);
    assert_eq!(r.out, vec![(ACCESS_A1, inner)]);
}

#[test]
fn gre_decap_ignores_ethernet_padding() {
    let t = tables(Design::Dedicated, false);
    let inner = eth(C2, REMOTE_A);
    let mut outer = tunnelled_in(&inner, Some(A_ID));
    outer.extend([0u8; 8]);
    let r = run(&t, UPLINK, &outer);
    assert_eq!(r.out, vec![(ACCESS_A1, inner)]);
}

/// A container's UDP datagram (ports `sport` → 53) inside an Ethernet frame.
fn udp_frame(dst: Mac, src: Mac, sport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 1, 0, 2], [10, 1, 0, 3], 64)
        .udp(sport, 53)
        .write(&mut f, &[7; 18])
        .unwrap();
    f
}

#[test]
fn gre_from_one_peer_is_shared_by_inner_flow_between_two_workers() {
    for (design, key) in [(Design::Dedicated, Some(A_ID)), (Design::Shared, None)] {
        let t = tables(design, false);
        let mut first = Offline::worker(0, 2).spreading_tunnels();
        let mut second = Offline::worker(1, 2).spreading_tunnels();
        let mut kept_by = [0usize; 2];
        for sport in 1000..1200u16 {
            let inner = udp_frame(C2, REMOTE_A, sport);
            let on_wire = match design {
                Design::Dedicated => inner.clone(),
                Design::Shared => tagged(&inner, 100),
            };
            let outer = tunnelled_in(&on_wire, key);
            // Whichever worker's queue receives it, one of them switches it.
            let at_first = first.run_into(&t, UPLINK, &outer, Collect::with_workers());
            let at_second = second.run_into(&t, UPLINK, &outer, Collect::with_workers());
            let handed_by_first = at_first.handed.clone().unwrap();
            let handed_by_second = at_second.handed.clone().unwrap();
            let owner = if handed_by_first.is_empty() {
                assert_eq!(handed_by_second, vec![(0, outer.clone())], "{design:?}");
                assert_eq!(at_first.sent, vec![(ACCESS_A1, inner.clone())]);
                assert!(at_second.sent.is_empty());
                0
            } else {
                assert_eq!(handed_by_first, vec![(1, outer.clone())], "{design:?}");
                assert!(handed_by_second.is_empty(), "{design:?}: both handed over");
                assert_eq!(at_second.sent, vec![(ACCESS_A1, inner.clone())]);
                assert!(at_first.sent.is_empty());
                1
            };
            kept_by[owner] += 1;
            // Handed over, it is switched there and never passed on again.
            let worker = if owner == 0 { &mut first } else { &mut second };
            let there = worker.run_into(&t, HANDOFF_PORT, &outer, Collect::with_workers());
            assert_eq!(there.sent, vec![(ACCESS_A1, inner.clone())]);
            assert_eq!(there.handed, Some(Vec::new()));
        }
        assert!(
            kept_by.iter().all(|&n| (60..=140).contains(&n)),
            "{design:?}: 200 flows split {kept_by:?}"
        );
        assert_eq!(first.stats().spread, kept_by[1] as u64);
        assert_eq!(second.stats().spread, kept_by[0] as u64);
        assert_eq!(
            first.stats().dropped_total() + second.stats().dropped_total(),
            0
        );
    }
}

#[test]
fn broadcast_floods_the_tenant_with_split_horizon() {
    let t = tables(Design::Dedicated, false);
    let bcast = eth([0xff; 6], C1);
    let r = run(&t, ACCESS_A0, &bcast);
    let ports: Vec<u16> = r.out.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        ports,
        vec![ACCESS_A1, TRUNK, UPLINK],
        "A's ports, the trunk and A's tunnel; never B's"
    );
    assert_eq!(r.out[1].1, tagged(&bcast, 100));
    assert_eq!(r.out[2].1, tunnelled_out(&bcast, Some(A_ID)));
    // From a tunnel: local ports only, never back into the mesh.
    let from_remote = eth([0xff; 6], REMOTE_A);
    let outer = tunnelled_in(&from_remote, Some(A_ID));
    let r = run(&t, UPLINK, &outer);
    let ports: Vec<u16> = r.out.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![ACCESS_A0, ACCESS_A1, TRUNK]);
}

#[test]
fn shared_hub_relays_between_spokes_but_not_back() {
    let t = tables(Design::Shared, true);
    let from_spoke = tagged(&eth([0xff; 6], [2, 0, 0, 0, 0x0e, 1]), 100);
    let outer = tunnelled_in(&from_spoke, None);
    let r = run(&t, UPLINK, &outer);
    let ports: Vec<u16> = r.out.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![ACCESS_A0, ACCESS_A1, TRUNK, UPLINK]);
    let relayed = &r.out[3].1;
    assert_eq!(
        &relayed[30..34],
        &OTHER_IP.octets(),
        "relayed to the other spoke only"
    );
}

#[test]
fn arp_for_the_underlay_ip_is_answered_in_place() {
    let t = tables(Design::Dedicated, false);
    let asker: Mac = [2, 0, 0, 0, 0x0c, 7];
    let asker_ip = Ipv4Addr::new(198, 19, 255, 7);
    let req = arp::request_frame(asker, asker_ip, LOCAL_IP);
    let r = run(&t, UPLINK, &req);
    let mut reply = Vec::new();
    reply.extend(asker);
    reply.extend(UPLINK_MAC);
    reply.extend(0x0806u16.to_be_bytes());
    reply.extend([0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend(UPLINK_MAC);
    reply.extend(LOCAL_IP.octets());
    reply.extend(asker);
    reply.extend(asker_ip.octets());
    reply.extend([0; 18]);
    assert_eq!(r.out, vec![(UPLINK, reply.clone())]);
    assert!(
        r.events.is_empty(),
        "a request teaches nothing: anyone may ask in anyone's name"
    );
    // A reply (to our own request, the control plane checks) is reported.
    let mut answer = reply;
    answer[..6].copy_from_slice(&UPLINK_MAC);
    answer[6..12].copy_from_slice(&asker);
    answer[22..28].copy_from_slice(&asker);
    answer[28..32].copy_from_slice(&asker_ip.octets());
    answer[32..38].copy_from_slice(&UPLINK_MAC);
    answer[38..42].copy_from_slice(&LOCAL_IP.octets());
    let r = run(&t, UPLINK, &answer);
    assert!(r.out.is_empty());
    assert_eq!(
        r.events,
        vec![Event::Neighbor {
            ip: asker_ip,
            mac: asker
        }]
    );
    // ARP for someone else's IP is not ours to answer.
    let mut other = req.clone();
    other[38..42].copy_from_slice(&[198, 19, 255, 99]);
    let r = run(&t, UPLINK, &other);
    assert!(r.out.is_empty());
    assert_eq!(r.dropped(DropReason::NotForUs), 1);
}

#[test]
fn unknown_sources_are_learned_through_events() {
    let t = tables(Design::Dedicated, false);
    let newcomer: Mac = [2, 0, 0, 0, 0x0a, 0x77];
    let r = run(&t, ACCESS_A0, &eth(C2, newcomer));
    assert_eq!(r.out.len(), 1);
    assert_eq!(
        r.events,
        vec![Event::Learn {
            tenant: 0,
            mac: newcomer,
            location: Location::Port(ACCESS_A0)
        }]
    );
}

#[test]
fn a_report_lost_to_a_full_queue_is_made_on_the_senders_next_frame() {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, None);
    b.access_port(ACCESS_A0, a, None);
    b.access_port(ACCESS_B, a, None);
    b.static_mac(a, C2, Location::Port(ACCESS_B));
    let t = b.build();
    let mut core = Offline::default();
    let lost = |core: &Offline| core.counters.snapshot().events_lost;
    // Senders never seen fill the learner's queue until a report is lost.
    let mut i = 0u16;
    while lost(&core) == 0 {
        let [hi, lo] = i.to_be_bytes();
        core.run(&t, ACCESS_A0, &eth(C2, [2, 0, 0, 0x0e, hi, lo]));
        i += 1;
        assert!(i < 10_000, "the queue never filled");
    }
    let sender: Mac = [2, 0, 0, 0, 0x0a, 0x20];
    core.run(&t, ACCESS_A0, &eth(C2, sender));
    assert_eq!(lost(&core), 2, "the sender's report is lost too");
    // Once the control plane took the queue, the sender's very next frame is
    // reported, though it comes straight after the one whose report was lost.
    core.events();
    core.run(&t, ACCESS_A0, &eth(C2, sender));
    assert_eq!(
        core.events(),
        vec![Event::Learn {
            tenant: 0,
            mac: sender,
            location: Location::Port(ACCESS_A0),
        }]
    );
}

#[test]
fn a_learned_source_is_reported_again_for_aging_and_at_once_when_it_moves() {
    use dataplane::pipeline::events::REFRESH_SECS;
    // Two sources learned on one port, interleaved: each frame asks the core's cache
    // for its source, which tells the learner once a second.
    let (l, m): (Mac, Mac) = ([2, 0, 0, 0, 0x0a, 0x10], [2, 0, 0, 0, 0x0a, 0x11]);
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, None);
    b.access_port(ACCESS_A0, a, None);
    b.access_port(ACCESS_A1, a, None);
    // The destination on a third port, so frames from either leave.
    b.access_port(ACCESS_B, a, None);
    b.static_mac(a, C2, Location::Port(ACCESS_B));
    b.learned_mac(a, l, Location::Port(ACCESS_A0));
    b.learned_mac(a, m, Location::Port(ACCESS_A0));
    let t = b.build();
    let learn = |mac, port| Event::Learn {
        tenant: 0,
        mac,
        location: Location::Port(port),
    };
    let mut core = Offline::default();
    let at = |core: &mut Offline, now: u32, port: u16, macs: &[Mac]| {
        core.set_now(now);
        for _ in 0..10 {
            for &mac in macs {
                assert_eq!(core.run(&t, port, &eth(C2, mac)).sent.len(), 1);
            }
        }
        core.events()
    };
    // Reported once each (the control plane's aging hears they live), then quiet.
    let both = [l, m];
    assert_eq!(
        at(&mut core, 0, ACCESS_A0, &both),
        vec![learn(l, ACCESS_A0), learn(m, ACCESS_A0)]
    );
    assert_eq!(at(&mut core, 1, ACCESS_A0, &both), vec![]);
    assert_eq!(at(&mut core, REFRESH_SECS - 1, ACCESS_A0, &both), vec![]);
    assert_eq!(
        at(&mut core, REFRESH_SECS, ACCESS_A0, &both),
        vec![learn(l, ACCESS_A0), learn(m, ACCESS_A0)],
        "reported again for aging"
    );
    // A move is reported at once, and so is the way back within the same second.
    let now = REFRESH_SECS;
    assert_eq!(
        at(&mut core, now, ACCESS_A1, &[l]),
        vec![learn(l, ACCESS_A1)]
    );
    assert_eq!(
        at(&mut core, now, ACCESS_A0, &both),
        vec![learn(l, ACCESS_A0)]
    );
    assert_eq!(at(&mut core, now + 1, ACCESS_A0, &both), vec![]);
}

#[test]
fn hostile_frames_are_dropped_with_their_reason() {
    let t = tables(Design::Dedicated, false);
    let cases: Vec<(&str, u16, Vec<u8>, DropReason)> = vec![
        (
            "tag on access (VLAN hop to B)",
            ACCESS_A0,
            tagged(&eth(CB, C1), 200),
            DropReason::TaggedOnAccess,
        ),
        (
            "802.1ad on access",
            ACCESS_A0,
            {
                let mut f = tagged(&eth(CB, C1), 200);
                f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
                f
            },
            DropReason::TaggedOnAccess,
        ),
        (
            "double tag on trunk",
            TRUNK,
            tagged(&tagged(&eth(CB, C1), 200), 100),
            DropReason::DoubleTagged,
        ),
        (
            "untagged on trunk",
            TRUNK,
            eth(CB, C1),
            DropReason::UntaggedOnTrunk,
        ),
        (
            "VLAN the trunk does not carry",
            TRUNK,
            tagged(&eth(CB, C1), 300),
            DropReason::UnknownVlan,
        ),
        ("runt", ACCESS_A0, vec![0xff; 10], DropReason::Malformed),
        (
            "multicast source",
            ACCESS_A0,
            eth(C2, [3, 0, 0, 0, 0, 1]),
            DropReason::BadSourceMac,
        ),
        (
            "B's static MAC from A's port",
            ACCESS_A0,
            eth(C2, C1)
                .iter()
                .enumerate()
                .map(|(i, &b)| if (6..12).contains(&i) { C2[i - 6] } else { b })
                .collect(),
            DropReason::MacSpoof,
        ),
        (
            "A's MAC spoofed on another A port",
            ACCESS_A1,
            eth(REMOTE_A, C1),
            DropReason::MacSpoof,
        ),
        (
            "foreign GRE key",
            UPLINK,
            tunnelled_in(&eth(C2, REMOTE_A), Some(B_ID)),
            DropReason::GreUnknownKey,
        ),
        (
            "unknown GRE key",
            UPLINK,
            tunnelled_in(&eth(C2, REMOTE_A), Some(999)),
            DropReason::GreUnknownKey,
        ),
        (
            "GRE without key",
            UPLINK,
            tunnelled_in(&eth(C2, REMOTE_A), None),
            DropReason::GreUnknownKey,
        ),
        (
            "GRE from a stranger",
            UPLINK,
            gre_encapsulated(
                &eth(C2, REMOTE_A),
                Ipv4Addr::new(10, 9, 9, 9),
                LOCAL_IP,
                Some(A_ID),
                NEXT_HOP_MAC,
                UPLINK_MAC,
            ),
            DropReason::GreUnknownPeer,
        ),
        (
            "GRE for another IP",
            UPLINK,
            gre_encapsulated(
                &eth(C2, REMOTE_A),
                REMOTE_IP,
                OTHER_IP,
                Some(A_ID),
                NEXT_HOP_MAC,
                UPLINK_MAC,
            ),
            DropReason::NotForUs,
        ),
        (
            "underlay frame for another MAC",
            UPLINK,
            gre_encapsulated(
                &eth(C2, REMOTE_A),
                REMOTE_IP,
                LOCAL_IP,
                Some(A_ID),
                NEXT_HOP_MAC,
                [2, 9, 9, 9, 9, 9],
            ),
            DropReason::NotForUs,
        ),
        (
            "bad outer checksum",
            UPLINK,
            {
                let mut f = tunnelled_in(&eth(C2, REMOTE_A), Some(A_ID));
                f[24] ^= 0xff;
                f
            },
            DropReason::Ipv4Invalid,
        ),
        (
            "truncated GRE",
            UPLINK,
            tunnelled_in(&eth(C2, REMOTE_A), Some(A_ID))[..40].to_vec(),
            DropReason::Ipv4Invalid,
        ),
        (
            "known unicast back to its port",
            ACCESS_A1,
            eth(C2, [2, 0, 0, 0, 0x0a, 0x55]),
            DropReason::Hairpin,
        ),
    ];
    for (what, port, frame, reason) in cases {
        let r = run(&t, port, &frame);
        assert!(r.out.is_empty(), "{what}: forwarded {:?}", r.out);
        assert_eq!(
            r.dropped(reason),
            1,
            "{what}: counters {:?}",
            r.core.stats()
        );
        assert_eq!(r.core.stats().dropped_total(), 1, "{what}: one reason only");
    }
}

#[test]
fn unresolved_next_hop_is_a_counted_drop() {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, None);
    b.access_port(ACCESS_A0, a, None);
    b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
    let tn = b.tunnel(1, REMOTE_IP, None);
    b.tunnel_carries(tn, a);
    b.static_mac(a, REMOTE_A, Location::Host(1));
    let r = run(&b.build(), ACCESS_A0, &eth(REMOTE_A, C1));
    assert!(r.out.is_empty());
    assert_eq!(r.dropped(DropReason::NeighborUnresolved), 1);
}

#[test]
fn port_security_pins_mac_and_ip_including_arp() {
    use dataplane::table::PortSecurity;
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let a = b.tenant(A_ID, None);
    let ip = Ipv4Addr::new(10, 0, 0, 5);
    b.access_port(
        ACCESS_A0,
        a,
        Some(PortSecurity {
            macs: vec![C1],
            ips: vec![ip],
        }),
    );
    b.access_port(ACCESS_A1, a, None);
    let t = b.build();
    let udp = |src_mac: Mac, src_ip: Ipv4Addr| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(src_mac, C2)
            .ipv4(src_ip.octets(), [10, 0, 0, 6], 64)
            .udp(1000, 2000)
            .write(&mut out, &[1, 2, 3])
            .unwrap();
        out
    };
    assert_eq!(run(&t, ACCESS_A0, &udp(C1, ip)).out.len(), 1);
    assert_eq!(
        run(&t, ACCESS_A0, &udp([2, 0, 0, 0, 0x0a, 9], ip)).dropped(DropReason::PortSecurityMac),
        1
    );
    assert_eq!(
        run(&t, ACCESS_A0, &udp(C1, Ipv4Addr::new(10, 0, 0, 99)))
            .dropped(DropReason::PortSecurityIp),
        1
    );
    // The Ethernet source stays the port's own MAC; only the ARP sender lies.
    let arp = |sender_mac: Mac, sender_ip: Ipv4Addr| {
        let mut f = arp::request_frame(sender_mac, sender_ip, Ipv4Addr::new(10, 0, 0, 6));
        f[6..12].copy_from_slice(&C1);
        f
    };
    assert_eq!(run(&t, ACCESS_A0, &arp(C1, ip)).out.len(), 1);
    assert_eq!(
        run(&t, ACCESS_A0, &arp(C1, Ipv4Addr::new(10, 0, 0, 6)))
            .dropped(DropReason::PortSecurityIp),
        1,
        "ARP claiming another IP"
    );
    assert_eq!(
        run(&t, ACCESS_A0, &arp(C2, ip)).dropped(DropReason::PortSecurityIp),
        1,
        "ARP claiming another MAC"
    );
}

/// A static MAC the control plane moves to another port is checked where it now is as
/// soon as the core takes the new tables: the per-core caches hold one snapshot's
/// entries, sources' included.
#[test]
fn a_moved_static_mac_is_checked_at_its_new_port() {
    let with_c1_on = |port: u16| {
        let mut b = TablesBuilder::new(Design::Shared, false);
        let a = b.tenant(A_ID, Some(100));
        // Port 2 is one of A's here, C2's.
        for p in [ACCESS_A0, ACCESS_A1, 2] {
            b.access_port(p, a, None);
        }
        b.static_mac(a, C1, Location::Port(port));
        b.static_mac(a, C2, Location::Port(2));
        b.build()
    };
    let (before, after) = (with_c1_on(ACCESS_A0), with_c1_on(ACCESS_A1));
    let mut core = Offline::default();
    let from_a1 = eth(C2, C1);
    // Known on A0: its frames from A1 are spoofed, and keep being so (cached).
    for _ in 0..2 {
        assert!(core.run(&before, ACCESS_A1, &from_a1).sent.is_empty());
    }
    assert_eq!(core.dropped(DropReason::MacSpoof), 2);
    assert_eq!(core.run(&before, ACCESS_A0, &from_a1).sent.len(), 1);
    // Moved to A1: a worker clears its caches when it takes new tables.
    core.reset();
    let sent = core.run(&after, ACCESS_A1, &from_a1).sent;
    assert_eq!(sent, vec![(2, from_a1.clone())]);
    assert!(core.run(&after, ACCESS_A0, &from_a1).sent.is_empty());
    assert_eq!(core.dropped(DropReason::MacSpoof), 1);
}

#[test]
fn a_trunk_burst_over_a_big_fdb_goes_as_its_frames_one_at_a_time() {
    // Each frame's tenant is read from its tag ahead of the switch too.
    let families = [
        (0, 0xa, Location::Port(ACCESS_A1)),
        (1, 0xb, Location::Port(ACCESS_B)),
    ];
    let tables = burst::with_bulk_macs(tables(Design::Dedicated, false), &families, 5_000);
    let bulk = burst::bulk_mac;
    // Both tenants' VLANs, one carried by no trunk, double and missing tags, a MAC of
    // one tenant asked for in the other's VLAN, a static MAC claimed from the trunk, a
    // tagged frame too short to hold its MACs.
    let sender: Mac = [2, 0, 0, 0, 0x0d, 1];
    let mut frames = Vec::new();
    for i in 0..32u32 {
        let frame = match i % 8 {
            0 => tagged(&eth(bulk(0xa, i * 97), sender), 100),
            1 => tagged(&eth(bulk(0xb, i * 89), sender), 200),
            2 => tagged(&eth(bulk(0xb, i), sender), 100),
            3 => tagged(&eth(C2, sender), 300),
            4 => tagged(&tagged(&eth(C2, sender), 200), 100),
            5 => eth(bulk(0xa, i), sender),
            6 => tagged(&eth(bulk(0xa, i), C2), 100),
            _ => tagged(&eth(REMOTE_A, CB), 200)[..16].to_vec(),
        };
        frames.push(frame);
    }
    let stats = burst::agrees_one_at_a_time(tables, TRUNK, &frames);
    for reason in [
        DropReason::UnknownVlan,
        DropReason::DoubleTagged,
        DropReason::UntaggedOnTrunk,
        DropReason::MacSpoof,
        DropReason::Malformed,
    ] {
        assert!(stats.dropped(reason) > 0, "{reason:?}");
    }
}

#[test]
fn an_uplink_burst_over_a_big_fdb_goes_as_its_frames_one_at_a_time() {
    // GRE of both tenants interleaved, decapsulated over an FDB past the size at which
    // the burst's inner MACs are hashed and prefetched ahead of it, and the decision
    // by peer and key taken from the core's cache: the core's caches (256 slots) and
    // the offline core's (4,096) must not change what happens to any frame.
    let families = [
        (0, 0xa, Location::Port(ACCESS_A1)),
        (1, 0xb, Location::Port(ACCESS_B)),
    ];
    let bulk = burst::bulk_mac;
    let stranger = Ipv4Addr::new(198, 19, 255, 9);
    for design in [Design::Dedicated, Design::Shared] {
        let tables = burst::with_bulk_macs(tables(design, false), &families, 5_000);
        // In the shared design a tenant is its inner tag; in the dedicated one its key.
        let from = |peer: Ipv4Addr, inner: &[u8], tenant_id: u32, vlan: u16| match design {
            Design::Dedicated => gre_encapsulated(
                inner,
                peer,
                LOCAL_IP,
                Some(tenant_id),
                NEXT_HOP_MAC,
                UPLINK_MAC,
            ),
            Design::Shared => gre_encapsulated(
                &tagged(inner, vlan),
                peer,
                LOCAL_IP,
                None,
                NEXT_HOP_MAC,
                UPLINK_MAC,
            ),
        };
        // Each tenant from its own peer, a tenant from a peer that does not carry it,
        // a stranger, a key where the design has none (or none where it needs one), an
        // unknown tenant, a static local MAC claimed from afar, a flood, a GRE header
        // announcing a key it is too short to hold, a cut frame.
        let sender = [2, 0, 0, 0, 0x0d, 1];
        let mut frames = Vec::new();
        for i in 0..32u32 {
            let frame = match i % 10 {
                0 => from(REMOTE_IP, &eth(bulk(0xa, i * 97), sender), A_ID, 100),
                1 => from(OTHER_IP, &eth(bulk(0xb, i * 89), sender), B_ID, 200),
                2 => from(REMOTE_IP, &eth(bulk(0xb, i), sender), B_ID, 200),
                3 => from(stranger, &eth(bulk(0xa, i), sender), A_ID, 100),
                4 => {
                    let key = match design {
                        Design::Dedicated => None,
                        Design::Shared => Some(A_ID),
                    };
                    let inner = eth(bulk(0xa, i), sender);
                    gre_encapsulated(&inner, REMOTE_IP, LOCAL_IP, key, NEXT_HOP_MAC, UPLINK_MAC)
                }
                5 => from(REMOTE_IP, &eth(bulk(0xa, i), sender), 999, 300),
                6 => from(REMOTE_IP, &eth(bulk(0xa, i), C1), A_ID, 100),
                7 => from(OTHER_IP, &eth([0xff; 6], sender), B_ID, 200),
                8 => {
                    let mut f =
                        gre_encapsulated(&[], REMOTE_IP, LOCAL_IP, None, NEXT_HOP_MAC, UPLINK_MAC);
                    f[34] |= 0x20;
                    f
                }
                _ => from(REMOTE_IP, &eth(bulk(0xa, i), sender), A_ID, 100)[..40].to_vec(),
            };
            frames.push(frame);
        }
        let stats = burst::agrees_one_at_a_time(tables, UPLINK, &frames);
        let refused = match design {
            Design::Dedicated => DropReason::GreUnknownKey,
            Design::Shared => DropReason::UnknownVlan,
        };
        for reason in [
            refused,
            DropReason::GreUnknownPeer,
            DropReason::MacSpoof,
            DropReason::GreMalformed,
            DropReason::Ipv4Invalid,
        ] {
            assert!(stats.dropped(reason) > 0, "{design:?}: {reason:?}");
        }
    }
}

#[test]
fn a_gre_key_follows_its_tenant_deleted_and_added_again() {
    // A worker's core keeps GRE decisions by (peer, key) across bursts. Tenant A is
    // deleted and added again in another slot behind another port, and tenant B takes
    // A's old slot behind A's old port, the same MAC in both: from the next snapshot
    // on, A's key must lead to A's new port, never to B's.
    let x: Mac = [2, 0, 0, 0, 0x0e, 1];
    let sender: Mac = [2, 0, 0, 0, 0x0d, 1];
    let before = {
        let mut b = TablesBuilder::new(Design::Dedicated, false);
        let a = b.tenant(A_ID, None);
        b.access_port(ACCESS_A0, a, None);
        b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
        let t1 = b.tunnel(1, REMOTE_IP, Some(NEXT_HOP_MAC));
        b.tunnel_carries(t1, a);
        b.static_mac(a, x, Location::Port(ACCESS_A0));
        b.build()
    };
    let after = {
        let mut b = TablesBuilder::new(Design::Dedicated, false);
        let tb = b.tenant_in(0, B_ID, None);
        let a = b.tenant_in(1, A_ID, None);
        b.access_port(ACCESS_A0, tb, None);
        b.access_port(ACCESS_A1, a, None);
        b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
        let t1 = b.tunnel(1, REMOTE_IP, Some(NEXT_HOP_MAC));
        b.tunnel_carries(t1, a);
        b.tunnel_carries(t1, tb);
        b.static_mac(tb, x, Location::Port(ACCESS_A0));
        b.static_mac(a, x, Location::Port(ACCESS_A1));
        b.build()
    };
    let inner = eth(x, sender);
    let from_a = tunnelled_in(&inner, Some(A_ID));
    let publisher = dataplane::table::publish::TablePublisher::new(before);
    let mut core = burst::worker_core(&publisher);
    let counters = dataplane::counters::CoreCounters::default();
    let mut run = |frame: &[u8]| {
        let mut sink = Collect::default();
        core.begin(0, &mut sink, &counters);
        let burst = std::iter::once(dataplane::packet::frame::BufFrame::new(frame));
        core.run(UPLINK, burst, &mut sink, &counters);
        sink.sent
    };
    assert_eq!(run(&from_a), vec![(ACCESS_A0, inner.clone())]);
    publisher.publish(after);
    assert_eq!(run(&from_a), vec![(ACCESS_A1, inner.clone())]);
    assert_eq!(run(&from_a), vec![(ACCESS_A1, inner.clone())]);
    // B's own key reaches B's port, which was A's.
    let from_b = tunnelled_in(&inner, Some(B_ID));
    assert_eq!(run(&from_b), vec![(ACCESS_A0, inner.clone())]);
    assert_eq!(run(&from_a), vec![(ACCESS_A1, inner)]);
}
