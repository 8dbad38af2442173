//! The switch (step 2 of a packet's way, which [`super::dispatch`] runs): inside one
//! tenant, a frame's source is learned (or checked against a static entry) and its
//! destination looked up in the core's FDB cache; frames for the tenant's router go to
//! the router, the rest to the output stage.

use crate::counters::DropReason;
use crate::packet::ethernet::{self, EtherType, GROUP_BIT};
use crate::packet::frame::Frame;
use crate::packet::{Mac, MacText};
use crate::table::{fdb_key_of, FlowTables, Location, TenantIdx};

use super::fdb_cache::Out;
use super::stage::{Context, Ingress, Noted, Switched, Trace};

/// Switches a frame inside `tenant`: learns its source, then decides where it goes
/// (a port, a tunnel, everywhere, or the router). `tag_len` is the length of the
/// 802.1Q tag still behind its MACs (0 or [`crate::packet::vlan::HEADER_LEN`]).
#[inline(always)]
pub(crate) fn switch<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    frame: &F,
    tag_len: usize,
    cx: &mut Context<'_, T>,
) -> Switched {
    let Some((dst, src)) = ethernet::macs_u64(frame.data()) else {
        return cx.stop(DropReason::Malformed);
    };
    if src & GROUP_BIT != 0 {
        return cx.stop(DropReason::BadSourceMac);
    }
    let here = match ingress {
        Ingress::Port(port) => Location::Port(port),
        Ingress::Tunnel(tunnel) => Location::Host(tables.tunnels[usize::from(tunnel)].host),
        Ingress::Router => Location::Router,
    };
    let src_key = fdb_key_of(tenant, src);
    let now = cx.learner.now;
    if !cx.cache.same_source(src_key, here, now) {
        let source = cx.ahead.source(tables, cx.at, src_key);
        let settled = match cx.cache.source(tables, source, here, now) {
            (Some(entry), _) if entry.is_static => {
                if !reaches_through(tables, entry.location, ingress) {
                    return cx.stop(DropReason::MacSpoof);
                }
                true
            }
            (_, true) => true,
            (_, false) => {
                let taken = cx.learner.learn(source, here, cx.counters);
                if taken {
                    cx.cache.told(source, here, now);
                }
                taken
            }
        };
        // A report lost to a full queue is not settled: the sender's next frame, even
        // straight after, tries again.
        if settled {
            cx.cache.set_source(src_key, here, now);
        }
    }
    note!(
        cx,
        "source {} seen at {}",
        MacText(mac_bytes(src)),
        Noted(tables, here)
    );
    if dst & GROUP_BIT != 0 {
        if tables.router(tenant).is_some()
            && frame
                .data()
                .get(ethernet::ETHERTYPE_AT.start + tag_len..ethernet::ETHERTYPE_AT.end + tag_len)
                == Some(&EtherType::ARP_BYTES[..])
        {
            return Switched::GatewayArp;
        }
        return Switched::Output(Out::Flood);
    }
    let destination = cx.ahead.destination(tables, cx.at, fdb_key_of(tenant, dst));
    let out = cx.cache.destination(tables, destination, tenant);
    note!(
        cx,
        "destination {}: {}",
        MacText(mac_bytes(dst)),
        Noted(tables, out)
    );
    if out == Out::Route {
        return Switched::Route;
    }
    Switched::Output(out)
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

/// A MAC held as [`ethernet::macs_u64`] gives it, as bytes (for notes and learning).
fn mac_bytes(mac: u64) -> Mac {
    let b = mac.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}
