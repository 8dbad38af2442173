//! Isolation under change, as a property: random sequences of changes (container ports
//! added, deleted and re-added on reused port ids, tenants deleted and re-added,
//! gateways switched off and on) interleaved with traffic (frames to known, stale and
//! unknown MACs, broadcasts, ARP, routed and SNAT'd packets, and replies from the
//! outside to every SNAT session seen) run through the real control plane (the
//! controller, its tenant slots and learning) and the real pipeline core. Every frame
//! carries its tenant's mark; none may leave through a port of another tenant, and no
//! SNAT reply may reach anyone but the tenant whose session it answers.
//!
//! Three tenants share one subnet (10.1.0.0/24), the same gateway address and the
//! same SNAT address, so nothing but the switch's identities keeps them apart.

#[path = "churn/world.rs"]
mod world;

use proptest::prelude::*;
use world::{l2, Op, World, PORTS, TENANTS};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PORTS, 0..TENANTS).prop_map(|(port, tenant)| Op::AddPort { port, tenant }),
        2 => (0..PORTS).prop_map(|port| Op::DeletePort { port }),
        1 => (0..TENANTS).prop_map(|tenant| Op::DeleteTenant { tenant }),
        1 => (0..TENANTS).prop_map(|tenant| Op::AddTenant { tenant }),
        1 => (0..TENANTS, any::<bool>()).prop_map(|(tenant, on)| Op::Gateway { tenant, on }),
        12 => (0..PORTS, 0u8..6, any::<u8>()).prop_map(|(port, kind, pick)| Op::Send { port, kind, pick }),
        4 => any::<u8>().prop_map(|pick| Op::Reply { pick }),
        1 => (1u8..5).prop_map(|secs| Op::Tick { secs }),
        2 => Just(Op::Absorb),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_frame_and_no_snat_reply_crosses_tenants_whatever_changes(ops in prop::collection::vec(op(), 10..120)) {
        let mut world = World::new();
        for op in &ops {
            world.apply(op);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    /// The fuzz target's input, decoded the same way.
    #[test]
    fn any_bytes_decode_to_operations_that_keep_tenants_apart(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut world = World::new();
        let mut bytes = bytes.into_iter();
        while let Some(op) = Op::decode(&mut bytes) {
            world.apply(&op);
        }
    }
}

/// The sequence that used to leak, by hand: red's port learns a MAC, goes, and blue's
/// new port gets its id; red's frame to that MAC must not reach blue.
#[test]
fn a_reused_port_id_carries_nothing_of_its_old_tenant() {
    let mut world = World::new();
    for op in [
        Op::AddPort { port: 0, tenant: 0 },
        Op::AddPort { port: 1, tenant: 0 },
        Op::Send {
            port: 1,
            kind: 1,
            pick: 0,
        },
        Op::Absorb,
        Op::DeletePort { port: 1 },
        Op::AddPort { port: 2, tenant: 1 },
    ] {
        world.apply(&op);
    }
    assert_eq!(
        world.ports[2].map(|c| c.id),
        Some(2),
        "blue took red's old id"
    );
    let red_mac = world.macs[1].0;
    let frame = l2(red_mac, world.ports[0].unwrap().mac, 0);
    world.run(world.ports[0].unwrap().id, frame);
}

/// A container of `tenant` on `port` that its gateway knows: it asked for the gateway's
/// MAC (ARP) and the controller took it in as a neighbour.
fn gateways_neighbour(port: usize, tenant: usize) -> [Op; 3] {
    [
        Op::AddPort { port, tenant },
        Op::Send {
            port,
            kind: 2,
            pick: 0,
        },
        Op::Absorb,
    ]
}

/// SNAT sessions of a tenant that went answer nobody, even once another tenant has
/// taken its slot in the tables and a container at the same address.
#[test]
fn snat_replies_of_a_tenant_that_left_reach_nobody_else() {
    let mut world = World::new();
    for op in gateways_neighbour(0, 0) {
        world.apply(&op);
    }
    world.apply(&Op::Send {
        port: 0,
        kind: 3,
        pick: 1,
    });
    assert_eq!(world.sessions.len(), 1, "tenant 0's session went out");
    assert_eq!(world.core.sessions(), 1);
    world.apply(&Op::DeleteTenant { tenant: 0 });
    assert_eq!(
        world.core.sessions(),
        0,
        "dropped at the change, not at aging"
    );
    // Tenant 2 goes and comes back: it is a new tenant to the tables, and takes the
    // freed slot, with a container at tenant 0's old address.
    world.apply(&Op::DeleteTenant { tenant: 2 });
    world.apply(&Op::Tick { secs: 1 });
    world.apply(&Op::AddTenant { tenant: 2 });
    assert_eq!(
        world.controller.ids().tenant(1),
        Some(0),
        "tenant 2 got tenant 0's old slot"
    );
    for op in gateways_neighbour(3, 2) {
        world.apply(&op);
    }
    world.apply(&Op::Reply { pick: 0 });
}
