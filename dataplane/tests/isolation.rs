//! Tenant isolation as a property: whatever arrives on tenant A's ports (hostile frames
//! included: spoofed and double tags, foreign addresses, ARP lies, truncated and
//! oversized headers) leaves only on A's ports, on A's VLAN, or in a tunnel labelled as
//! A; and nothing arriving anywhere makes the pipeline panic.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use dataplane::packet::Mac;
use dataplane::pipeline::offline::Offline;
use dataplane::table::builder::TablesBuilder;
use dataplane::table::{Design, FlowTables, Location};
use proptest::prelude::*;

const A_ID: u32 = 100;
const B_ID: u32 = 200;
const A_VLAN: u16 = 100;
const B_VLAN: u16 = 200;
const A_PORTS: [u16; 2] = [0, 1];
const B_PORT: u16 = 2;
const A_TRUNK: u16 = 3; // carries A only
const SHARED_TRUNK: u16 = 5; // carries A and B
const UPLINK: u16 = 4;
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0x0c, 1];
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2); // shares A
const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 3); // shares B
const STALE_MAC: Mac = [2, 0, 0, 0, 0xa, 9];

fn tables(design: Design, is_hub: bool) -> FlowTables {
    let mut b = TablesBuilder::new(design, is_hub);
    let a = b.tenant(A_ID, Some(A_VLAN));
    let tb = b.tenant(B_ID, Some(B_VLAN));
    for p in A_PORTS {
        b.access_port(p, a, None);
    }
    b.access_port(B_PORT, tb, None);
    b.trunk_port(A_TRUNK, &[a]);
    b.trunk_port(SHARED_TRUNK, &[a, tb]);
    b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
    let ta = b.tunnel(1, HOST_A, Some([2, 0, 0, 0, 0x0c, 2]));
    let tbb = b.tunnel(2, HOST_B, Some([2, 0, 0, 0, 0x0c, 3]));
    match design {
        Design::Dedicated => {
            b.tunnel_carries(ta, a);
            b.tunnel_carries(tbb, tb);
        }
        Design::Shared => {
            for t in [ta, tbb] {
                b.tunnel_carries(t, a);
                b.tunnel_carries(t, tb);
            }
        }
    }
    // Known MACs of both tenants everywhere, so unicast to B's MACs is tried.
    b.static_mac(a, [2, 0, 0, 0, 0xa, 1], Location::Port(0));
    b.static_mac(a, [2, 0, 0, 0, 0xa, 2], Location::Host(1));
    b.static_mac(tb, [2, 0, 0, 0, 0xb, 1], Location::Port(B_PORT));
    b.static_mac(tb, [2, 0, 0, 0, 0xb, 2], Location::Host(2));
    b.static_mac(tb, [2, 0, 0, 0, 0xb, 3], Location::Port(SHARED_TRUNK));
    // A's MAC learned on a port that B has now: what a port id reused by another
    // tenant's new port leaves behind until the control plane drops it.
    b.learned_mac(a, STALE_MAC, Location::Port(B_PORT));
    b.build()
}

/// [`tables`] with 10,000 more MACs in each tenant: far more keys than the core's FDB
/// cache has slots, so entries of both tenants keep evicting each other there.
fn big_tables(design: Design) -> &'static FlowTables {
    static TABLES: [OnceLock<FlowTables>; 2] = [OnceLock::new(), OnceLock::new()];
    TABLES[usize::from(design == Design::Shared)].get_or_init(|| {
        let mut t = tables(design, false);
        let mut b = TablesBuilder::new(design, false);
        for (slot, port) in [(0, A_PORTS[1]), (1, B_PORT)] {
            for i in 0..10_000u32 {
                let [_, x, y, z] = i.to_be_bytes();
                b.static_mac(slot, [2, 1, slot as u8, x, y, z], Location::Port(port));
            }
        }
        for (key, entry) in b.build().fdb.iter() {
            t.fdb.insert(key, entry).expect("the FDB grows");
        }
        t
    })
}

fn run(t: &FlowTables, port: u16, frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
    Offline::default().run(t, port, frame).sent
}

fn vid_of(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 16 && frame[12..14] == [0x81, 0x00])
        .then(|| u16::from_be_bytes([frame[14], frame[15]]) & 0xfff)
}

/// Whether an output of a frame that entered on tenant A's side belongs to A.
fn belongs_to_a(design: Design, port: u16, frame: &[u8]) -> bool {
    match port {
        p if A_PORTS.contains(&p) => vid_of(frame).is_none(),
        A_TRUNK | SHARED_TRUNK => vid_of(frame) == Some(A_VLAN),
        UPLINK => {
            if frame.len() < 42 || frame[23] != 47 {
                return false;
            }
            let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
            match design {
                Design::Dedicated => {
                    dst == HOST_A
                        && frame[34..36] == [0x20, 0x00]
                        && frame[38..42] == A_ID.to_be_bytes()
                }
                Design::Shared => vid_of(&frame[38..]) == Some(A_VLAN),
            }
        }
        _ => false,
    }
}

fn mac_from(choice: u8, raw: [u8; 6]) -> Mac {
    const KNOWN: [Mac; 7] = [
        [2, 0, 0, 0, 0xa, 1],
        [2, 0, 0, 0, 0xa, 2],
        [2, 0, 0, 0, 0xb, 1],
        [2, 0, 0, 0, 0xb, 2],
        [2, 0, 0, 0, 0xb, 3],
        [0xff; 6],
        STALE_MAC,
    ];
    match choice % 9 {
        c @ 0..=6 => KNOWN[c as usize],
        7 => UPLINK_MAC,
        _ => raw,
    }
}

/// Frames shaped like the attacks: tags of either tenant (single, double, 802.1ad),
/// ARP with any sender, GRE-looking IPv4 with either key, and random tails of any
/// length, truncated anywhere.
fn hostile_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<[u8; 6]>(),
        any::<u8>(),
        any::<[u8; 6]>(),
        prop::sample::select(vec![
            0x0800u16, 0x0806, 0x8100, 0x88a8, 0x86dd, 0x6558, 0x1234,
        ]),
        prop::sample::select(vec![A_VLAN, B_VLAN, 0, 4095, 300]),
        prop::sample::select(vec![0u8, 1, 2]),
        prop::collection::vec(any::<u8>(), 0..200),
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(
            |(dc, draw, sc, sraw, ethertype, vid, tags, tail, cut, keyed_b)| {
                let mut f = Vec::new();
                f.extend(mac_from(dc, draw));
                f.extend(mac_from(sc, sraw));
                for i in 0..tags {
                    f.extend(
                        if i == 0 && ethertype == 0x88a8 {
                            0x88a8u16
                        } else {
                            0x8100
                        }
                        .to_be_bytes(),
                    );
                    f.extend(
                        if i == 0 {
                            vid
                        } else {
                            (A_VLAN + B_VLAN).wrapping_sub(vid) & 0xfff
                        }
                        .to_be_bytes(),
                    );
                }
                f.extend(ethertype.to_be_bytes());
                if ethertype == 0x0800 && tail.len() > 8 {
                    // Half-plausible IPv4/GRE carrying the other tenant's key.
                    f.extend([0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 47, 0, 0]);
                    f.extend(HOST_B.octets());
                    f.extend(LOCAL_IP.octets());
                    f.extend([0x20, 0, 0x65, 0x58]);
                    f.extend(if keyed_b { B_ID } else { A_ID }.to_be_bytes());
                }
                f.extend(&tail);
                let cut = usize::from(cut) % (f.len() + 8);
                f.truncate(cut.max(1));
                f
            },
        )
}

#[test]
fn a_stale_entry_never_sends_a_frame_out_of_another_tenants_port() {
    let t = tables(Design::Dedicated, false);
    let mut frame = vec![0u8; 64];
    frame[..6].copy_from_slice(&STALE_MAC);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0xa, 1]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut core = Offline::default();
    let sent = core.run(&t, A_PORTS[0], &frame).sent;
    assert!(sent.is_empty(), "sent to {sent:?}");
    assert_eq!(
        core.dropped(dataplane::counters::DropReason::ForeignPort),
        1
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn frames_from_tenant_a_never_reach_tenant_b(
        frame in hostile_frame(),
        port in prop::sample::select(vec![0u16, 1, A_TRUNK]),
        shared in any::<bool>(),
        hub in any::<bool>(),
    ) {
        let design = if shared { Design::Shared } else { Design::Dedicated };
        let t = tables(design, hub && shared);
        for (out_port, out) in run(&t, port, &frame) {
            prop_assert!(
                belongs_to_a(design, out_port, &out),
                "frame {:02x?} on port {} left on port {} as {:02x?}", frame, port, out_port, out
            );
        }
    }

    #[test]
    fn frames_from_tenant_a_never_reach_tenant_b_through_a_big_fdb(
        frame in hostile_frame(),
        port in prop::sample::select(vec![0u16, 1, A_TRUNK]),
        shared in any::<bool>(),
    ) {
        let design = if shared { Design::Shared } else { Design::Dedicated };
        let t = big_tables(design);
        for (out_port, out) in run(t, port, &frame) {
            prop_assert!(
                belongs_to_a(design, out_port, &out),
                "frame {:02x?} on port {} left on port {} as {:02x?}", frame, port, out_port, out
            );
        }
    }

    #[test]
    fn no_frame_on_any_port_panics(
        frame in prop::collection::vec(any::<u8>(), 0..300),
        shaped in hostile_frame(),
        port in 0u16..8,
        shared in any::<bool>(),
    ) {
        let design = if shared { Design::Shared } else { Design::Dedicated };
        let t = tables(design, shared);
        run(&t, port, &frame);
        run(&t, port, &shaped);
        // A burst's prefetch pass reads the frames first (the uplink's GRE headers
        // too), but only past a big FDB.
        run(big_tables(design), port, &frame);
        run(big_tables(design), port, &shaped);
    }
}
