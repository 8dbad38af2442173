//! The switch (DESIGN.md "A packet's way", step 2): inside one tenant, a frame's
//! source is learned (or checked against a static entry) and its destination looked
//! up in the core's FDB cache; frames for the tenant's router go to the router, the
//! rest to the output stage.

use crate::counters::DropReason;
use crate::packet::ethernet::{self, EtherType};
use crate::packet::frame::Frame;
use crate::packet::{Mac, MacText};
use crate::table::{FlowTables, Location, TenantIdx};

use super::fdb_cache::Out;
use super::output::{flood, output, resolve};
use super::router;
use super::stage::{Context, Ingress, Sink, Trace};

/// Switches a frame inside `tenant`: learns its source, then unicasts or floods it.
#[inline(always)]
pub(crate) fn switch<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Some((dst, src)) = ethernet::macs_u64(frame.data()) else {
        return cx.drop(DropReason::Malformed);
    };
    if src & GROUP_BIT != 0 {
        return cx.drop(DropReason::BadSourceMac);
    }
    let tenant_bits = u64::from(tenant) << 48;
    let here = match ingress {
        Ingress::Port(port) => Location::Port(port),
        Ingress::Tunnel(tunnel) => Location::Host(tables.tunnels[usize::from(tunnel)].host),
        Ingress::Router => Location::Router,
    };
    let src_key = tenant_bits | src;
    let now = cx.learner.now;
    if !cx.cache.same_source(src_key, here, now) {
        match cx
            .cache
            .lookup(tables, src_key, |e| resolve(tables, tenant, e))
            .0
        {
            Some(entry) if entry.is_static => {
                if !reaches_through(tables, entry.location, ingress) {
                    return cx.drop(DropReason::MacSpoof);
                }
            }
            _ => cx.learner.learn(tenant, mac_bytes(src), here, cx.counters),
        }
        cx.cache.set_source(src_key, here, now);
    }
    note!(cx, "source {} seen at {here:?}", MacText(mac_bytes(src)));
    if dst & GROUP_BIT != 0 {
        if let Some(router) = tables.router(tenant) {
            if frame.data().get(ethernet::ETHERTYPE_AT) == Some(&EtherType::ARP_BYTES[..]) {
                match router::gateway_arp(tables, tenant, router, ingress, frame, sink, cx) {
                    Some(other) => frame = other,
                    None => return,
                }
            }
        }
        return flood(tables, tenant, ingress, frame, sink, cx);
    }
    let out = cx
        .cache
        .lookup(tables, tenant_bits | dst, |e| resolve(tables, tenant, e))
        .1;
    note!(cx, "destination {}: {out:?}", MacText(mac_bytes(dst)));
    if out == Out::Route {
        return router::route(tables, tenant, ingress, frame, sink, cx);
    }
    output(tables, tenant, ingress, out, frame, sink, cx);
}

/// Whether a frame from `ingress` may claim to come from `location` (a static entry).
#[inline(always)]
fn reaches_through(tables: &FlowTables, location: Location, ingress: Ingress) -> bool {
    match (location, ingress) {
        (Location::Port(p), Ingress::Port(q)) => p == q,
        (Location::Host(h), Ingress::Tunnel(t)) => {
            tables.host_tunnel.get(usize::from(h)).copied().flatten() == Some(t)
        }
        // Nobody but the router sends as the router.
        _ => false,
    }
}

/// The I/G bit of a MAC held in the low 48 bits of a u64.
const GROUP_BIT: u64 = 1 << 40;

/// A MAC as the low 48 bits of an integer, as [`switch`] compares them.
pub(crate) fn mac_u64(mac: &Mac) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

fn mac_bytes(mac: u64) -> Mac {
    let b = mac.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}
