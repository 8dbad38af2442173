//! Isolation under change, fuzzed: the input is a sequence of operations (ports added,
//! deleted and re-added on reused ids, tenants gone and back, gateways switched, frames
//! and SNAT replies, time) run through the real controller and pipeline core; any
//! panic is a finding, and so is any frame or SNAT reply reaching another tenant's
//! port (the oracle of `control/tests/churn/world.rs`, shared with the property test).
#![no_main]

#[path = "../../control/tests/churn/world.rs"]
#[allow(dead_code)]
mod world;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut world = world::World::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = world::Op::decode(&mut bytes) {
        world.apply(&op);
    }
});
