//! A packet's way in one place: a burst's port role picks the first stage, and each
//! stage's verdict the one after it ([`Classified`] → switch or router, [`Switched`]
//! → router or output, [`Exit`] → out), until the frame leaves, waits or stops. Stages
//! never call one another; VPP's next-node idea without its graph machinery: each
//! verdict type names only the stages that may follow, and the first two stages
//! decide about a frame the dispatcher keeps, so their verdicts stay in registers.

use crate::counters::DropReason;
use crate::packet::frame::Frame;
use crate::packet::{ethernet, vlan};
use crate::table::{FlowTables, PortRole, TenantIdx};

use super::fdb_cache::{Out, Unresolved};
use super::stage::{
    self, Classified, Context, CoreState, Exit, Ingress, Sink, Switched, Trace, CONTROL_PORT,
    HANDOFF_PORT, UNDERLAY_PORT,
};
use super::{classify, output, router, switch};

/// FDB entries past which a burst prefetches its frames' FDB slots: 16-byte slots at
/// most half full, 256 KB, more than a core's L2 keeps beside everything else (below,
/// the second pass over the burst would cost more than the misses it saves).
const PREFETCH_FDB_PAST: usize = 8192;

/// Starts loading what the frames of a burst from `in_port` will look up: their FDB
/// slots and the core's cache slots for them (when the FDB outgrows the core's caches
/// and they miss often; a tunnelled frame's by its inner MACs, once its tenant is
/// found, which looks its tunnel up and keeps the decision in the core's cache, even
/// for a frame the decapsulation will drop), their route slots, and the SNAT slots of
/// those routed outside. The whole burst's slots start loading before the first frame
/// needs its own, so the misses of 32 frames overlap.
#[inline(always)]
pub fn prefetch_burst<'a>(
    tables: &FlowTables,
    state: &mut CoreState,
    in_port: u16,
    frames: impl Iterator<Item = &'a [u8]> + Clone,
) {
    let CoreState {
        cache,
        ahead,
        learner,
        router: router_state,
        ..
    } = state;
    ahead.start();
    // A big FDB whose busy MACs the core's cache holds gains nothing from the pass,
    // which costs more than a few misses (`l2-many` on 1,000 frames: 80 cycles a packet
    // with the pass, 72 without).
    let big_fdb = tables.fdb.len() > PREFETCH_FDB_PAST && cache.missing();
    match *tables.role(in_port) {
        PortRole::Trunk if big_fdb => {
            for (at, data) in frames.enumerate() {
                let keys = classify::trunk_tenant_ahead(tables, in_port, data)
                    .and_then(|tenant| cache.prefetch_fdb(tables, learner, tenant, data));
                ahead.keep_macs(at, keys);
            }
        }
        PortRole::Uplink if big_fdb => {
            for (at, data) in frames.enumerate() {
                let keys = classify::uplink_tenant_ahead(tables, cache, ahead, at, data)
                    .and_then(|(tenant, inner)| cache.prefetch_fdb(tables, learner, tenant, inner));
                ahead.keep_macs(at, keys);
            }
        }
        PortRole::Access { tenant, .. } => {
            if big_fdb {
                for (at, data) in frames.clone().enumerate() {
                    ahead.keep_macs(at, cache.prefetch_fdb(tables, learner, tenant, data));
                }
            }
            let Some(router) = tables.router(tenant) else {
                return;
            };
            for (at, data) in frames.clone().enumerate() {
                match cache.prefetch_route(tables, tenant, data) {
                    Some(route) => ahead.set_route(at, route),
                    None => ahead.skip_route(at),
                }
            }
            // Then the SNAT slots of the frames those routes send outside.
            if router.snat_ip.is_some() {
                for (at, data) in frames.enumerate() {
                    let nat = &router_state.nat;
                    let session =
                        router::prefetch_external(tables, cache, ahead, at, nat, tenant, data);
                    ahead.keep_session(at, session);
                }
            }
        }
        _ => {}
    }
}

/// Runs one frame received on `in_port` through the pipeline.
#[inline]
pub fn handle<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    handle_burst(tables, in_port, std::iter::once(frame), sink, cx);
}

/// Runs a burst of frames received on `in_port` through the pipeline; the port's role
/// is looked up once for all of them.
#[inline]
pub fn handle_burst<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frames: impl Iterator<Item = F>,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let in_port = match in_port {
        CONTROL_PORT => {
            return frames.for_each(|f| {
                let exit = router::from_control(tables, f, cx);
                leave(tables, exit, sink, cx);
            })
        }
        UNDERLAY_PORT => {
            return match tables.uplink {
                Some(up) => frames.for_each(|f| sink.send(up.port, f)),
                None => frames.for_each(|_| cx.drop(DropReason::NoOutput)),
            }
        }
        HANDOFF_PORT => match tables.uplink {
            Some(up) => {
                note!(
                    cx,
                    "handed over by another worker, as received on the uplink (port #{})",
                    up.port
                );
                return uplink_burst(tables, up.port, frames, sink, cx);
            }
            None => return frames.for_each(|_| cx.drop(DropReason::NoOutput)),
        },
        port => port,
    };
    note!(
        cx,
        "ingress port #{in_port}: {}",
        stage::Noted(tables, tables.role(in_port))
    );
    match *tables.role(in_port) {
        PortRole::Access { tenant, security } => {
            access_burst(tables, in_port, tenant, security, frames, sink, cx)
        }
        PortRole::Trunk => {
            for (at, frame) in frames.enumerate() {
                cx.at = at;
                let classified = classify::from_trunk(tables, in_port, &frame, cx);
                run(tables, frame, classified, sink, cx);
            }
        }
        PortRole::Uplink => match (cx.spread, tables.uplink) {
            (Some(spread), Some(up)) => {
                for (at, frame) in frames.enumerate() {
                    cx.at = at;
                    let Some(owner) = spread.elsewhere(frame.data(), up.ip) else {
                        uplink_frame(tables, in_port, frame, sink, cx);
                        continue;
                    };
                    match sink.hand_off(owner, frame) {
                        None => {
                            note!(cx, "GRE whose inner flow worker {owner} owns: handed over");
                            cx.counters.add_spread();
                        }
                        // No ring to that worker (a test's single core): switched here.
                        Some(frame) => uplink_frame(tables, in_port, frame, sink, cx),
                    }
                }
            }
            _ => uplink_burst(tables, in_port, frames, sink, cx),
        },
        PortRole::CrossConnect(peer) => frames.for_each(|f| sink.send(peer, f)),
        PortRole::Unused => frames.for_each(|_| cx.drop(DropReason::NoOutput)),
    }
}

/// Frames the uplink received, or another worker handed over (those are never
/// spread again).
#[inline(always)]
fn uplink_burst<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frames: impl Iterator<Item = F>,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    for (at, frame) in frames.enumerate() {
        cx.at = at;
        uplink_frame(tables, in_port, frame, sink, cx);
    }
}

/// A frame from the uplink, at its place in the burst ([`Context::at`]).
#[inline(always)]
fn uplink_frame<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let classified = classify::from_uplink(tables, in_port, &mut frame, cx);
    run(tables, frame, classified, sink, cx);
}

/// An access port's burst. Routed frames from a port without per-packet rules may take
/// the router's fast path first (traces too: they show the way a real packet takes).
#[inline(always)]
fn access_burst<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    tenant: TenantIdx,
    security: Option<u16>,
    frames: impl Iterator<Item = F>,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let fast = match tables.router(tenant) {
        Some(r) if r.here && security.is_none() && cx.fast_path => {
            Some((r, ethernet::mac_u64(&r.mac)))
        }
        _ => None,
    };
    for (at, frame) in frames.enumerate() {
        cx.at = at;
        let frame = match fast {
            Some((router, mac)) => {
                match router::fast_route(tables, tenant, router, mac, in_port, frame, cx) {
                    Ok(exit) => {
                        leave(tables, exit, sink, cx);
                        continue;
                    }
                    Err(frame) => frame,
                }
            }
            None => frame,
        };
        let classified = classify::from_access(tables, in_port, tenant, security, &frame, cx);
        run(tables, frame, classified, sink, cx);
    }
}

/// A held frame's second chance, with newer tables: sent on if its neighbour is known
/// now, given back otherwise.
pub fn release<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    pending: Unresolved,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) -> Result<(), F> {
    let exit = router::release(tables, pending, frame, cx)?;
    leave(tables, exit, sink, cx);
    Ok(())
}

/// Runs a classified frame the rest of its way: the switch, then the router or the
/// output stage (or straight to the router from the outside). Each way ends in its own
/// call, so nothing a stage decided passes through memory.
#[inline(always)]
fn run<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    mut frame: F,
    classified: Classified,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match classified {
        Classified::Switch(tenant, ingress) => {
            let switched = switch::switch(tables, tenant, ingress, &frame, 0, cx);
            switched_way(tables, tenant, ingress, switched, frame, sink, cx);
        }
        Classified::SwitchTagged(tenant, ingress) => {
            let switched = switch::switch(tables, tenant, ingress, &frame, vlan::HEADER_LEN, cx);
            if let Switched::Output(Out::TaggedPort(port, vid)) = switched {
                note!(cx, "VLAN tag rewritten to {vid}");
                return output::retagged(ingress, port, vid, frame, sink, cx);
            }
            note!(cx, "VLAN tag removed");
            vlan::pop_tag(&mut frame);
            switched_way(tables, tenant, ingress, switched, frame, sink, cx);
        }
        Classified::FromOutside => {
            let exit = router::from_outside(tables, frame, cx);
            leave(tables, exit, sink, cx);
        }
        Classified::Send(port) => sink.send(port, frame),
        Classified::Done => {}
    }
}

/// The way after the switch: the output stage or the router.
#[inline(always)]
fn switched_way<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    switched: Switched,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match switched {
        Switched::Output(out) => output::output(tables, tenant, ingress, out, frame, sink, cx),
        Switched::Route => {
            let exit = router::route(tables, tenant, ingress, frame, cx);
            leave(tables, exit, sink, cx);
        }
        Switched::GatewayArp => {
            let exit = router::gateway_arp(tables, tenant, ingress, frame, cx);
            leave(tables, exit, sink, cx);
        }
        Switched::Done => {}
    }
}

/// The end of every way: out through the output stage or a port, held, handed to
/// another worker, or nothing.
#[inline(always)]
fn leave<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    exit: Exit<F>,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match exit {
        Exit::Output(tenant, ingress, out, frame) => {
            output::output(tables, tenant, ingress, out, frame, sink, cx)
        }
        Exit::ToIngress(tenant, ingress, frame) => {
            output::to_ingress(tables, tenant, ingress, frame, sink, cx)
        }
        Exit::Send(port, frame) => sink.send(port, frame),
        Exit::Park(pending, frame) => {
            if sink.park(pending, frame).is_some() {
                cx.drop(DropReason::NeighborUnresolved);
            }
        }
        Exit::HandOff(worker, frame) => match sink.hand_off(worker, frame) {
            None => {
                note!(cx, "session on worker {worker}: handed off");
                cx.counters.add_handed_off();
            }
            Some(_) => cx.drop(DropReason::NatForeignCore),
        },
        Exit::Done => {}
    }
}
