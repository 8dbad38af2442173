//! The last stage (step 4 of a packet's way, which [`super::dispatch`] runs): a
//! decided frame leaves the way its [`Out`] says: as is on an access port of its
//! tenant, tagged on a trunk, GRE-encapsulated toward another host, or flooded to them
//! all, each port checked against the frame's tenant ([`super::resolve`]) on the way
//! out.

use crate::counters::DropReason;
use crate::packet::checksum;
use crate::packet::ethernet::HEADER_LEN as ETH_LEN;
use crate::packet::frame::Frame;
use crate::packet::vlan;
use crate::table::{Design, FlowTables, OuterHeader, TenantIdx, TunnelIdx};

use super::fdb_cache::Out;
use super::resolve::port_out;
use super::stage::{tenant_id, Context, Ingress, Sink, Trace};

/// Sends a frame of `tenant` that entered at `ingress` the way `out` says.
#[inline(always)]
pub(crate) fn output<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    out: Out,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match out {
        Out::Port(port) => {
            if ingress == Ingress::Port(port) {
                return cx.drop(DropReason::Hairpin);
            }
            sink.send(port, frame);
        }
        Out::TaggedPort(port, vid) => {
            if ingress == Ingress::Port(port) {
                return cx.drop(DropReason::Hairpin);
            }
            if !vlan::push_tag(&mut frame, vid) {
                return cx.drop(DropReason::NoHeadroom);
            }
            sink.send(port, frame);
        }
        Out::Tunnel(tunnel) => {
            if let Ingress::Tunnel(from) = ingress {
                if !relays(tables, from, tunnel) {
                    return cx.drop(DropReason::Hairpin);
                }
            }
            to_tunnel(tables, tenant, tunnel, frame, sink, cx);
        }
        Out::Flood => flood(tables, tenant, ingress, frame, sink, cx),
        Out::Drop(reason) => cx.drop(reason),
        // The switch routes before it outputs; a routed frame is never routed again.
        Out::Route => cx.drop(DropReason::NotRoutable),
    }
}

/// A frame from a trunk that leaves through trunk `port` as `vid`: its tag, still on,
/// is rewritten in place.
#[inline(always)]
pub(crate) fn retagged<F: Frame, S: Sink<F>, T: Trace>(
    ingress: Ingress,
    port: u16,
    vid: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    if ingress == Ingress::Port(port) {
        return cx.drop(DropReason::Hairpin);
    }
    vlan::retag(&mut frame, vid);
    sink.send(port, frame);
}

/// Back where a frame came from (a port, tagged if a trunk, or its tunnel).
pub(crate) fn to_ingress<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match ingress {
        Ingress::Port(port) => to_port(tables, tenant, port, frame, sink, cx),
        Ingress::Tunnel(tunnel) => to_tunnel(tables, tenant, tunnel, frame, sink, cx),
        Ingress::Router => cx.drop(DropReason::NoOutput),
    }
}

/// Tunnel-to-tunnel forwarding: only the shared design's hub relays between spokes; a
/// dedicated mesh never does (split horizon).
#[inline(always)]
pub(crate) fn relays(tables: &FlowTables, from: TunnelIdx, to: TunnelIdx) -> bool {
    tables.design == Design::Shared && tables.is_hub && from != to
}

#[derive(Clone, Copy)]
enum Target {
    Port(u16),
    Tunnel(TunnelIdx),
}

/// Unknown unicast and broadcast: every local port of the tenant but the ingress, and
/// its tunnels when the frame came from a local port (or, at the shared hub, from
/// another spoke).
pub(crate) fn flood<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Some(t) = tables.tenant(tenant) else {
        return cx.drop(DropReason::NoOutput);
    };
    let ports = t
        .flood_ports
        .iter()
        .filter(move |&&p| ingress != Ingress::Port(p))
        .map(|&p| Target::Port(p));
    let tunnels = t
        .tunnels
        .iter()
        .filter(move |&&tn| match ingress {
            Ingress::Port(_) | Ingress::Router => true,
            Ingress::Tunnel(from) => relays(tables, from, tn),
        })
        .map(|&tn| Target::Tunnel(tn));
    let targets = ports.chain(tunnels);
    let count = targets.clone().count();
    note!(
        cx,
        "flood in tenant #{} to {count} outputs",
        tenant_id(tables, tenant)
    );
    if count == 0 {
        return cx.drop(DropReason::NoOutput);
    }
    let mut original = Some(frame);
    for (i, target) in targets.enumerate() {
        let copy = if i + 1 == count {
            original.take()
        } else {
            original.as_ref().and_then(Frame::duplicate)
        };
        let Some(copy) = copy else {
            cx.drop(DropReason::CopyFailed);
            continue;
        };
        match target {
            Target::Port(p) => to_port(tables, tenant, p, copy, sink, cx),
            Target::Tunnel(tn) => to_tunnel(tables, tenant, tn, copy, sink, cx),
        }
    }
}

/// Out of a local port, tagged on a trunk.
#[inline(always)]
fn to_port<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    port: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match port_out(tables, tenant, port) {
        Out::Port(port) => sink.send(port, frame),
        Out::TaggedPort(port, vid) => {
            if !vlan::push_tag(&mut frame, vid) {
                return cx.drop(DropReason::NoHeadroom);
            }
            sink.send(port, frame);
        }
        Out::Drop(reason) => cx.drop(reason),
        Out::Flood | Out::Tunnel(_) | Out::Route => cx.drop(DropReason::NoOutput),
    }
}

/// GRE-encapsulates toward another host: the tenant's VLAN tag inside in the shared
/// design, its id as the key in the dedicated one.
#[inline(always)]
fn to_tunnel<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    tunnel: TunnelIdx,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let (Some(uplink), Some(t)) = (tables.uplink, tables.tenant(tenant)) else {
        return cx.drop(DropReason::NoOutput);
    };
    let Some(header) = tables.tunnels[usize::from(tunnel)].header.as_ref() else {
        return cx.drop(DropReason::NeighborUnresolved);
    };
    if tables.design == Design::Shared {
        let Some(vid) = t.vlan else {
            return cx.drop(DropReason::UnknownVlan);
        };
        if !vlan::push_tag(&mut frame, vid) {
            return cx.drop(DropReason::NoHeadroom);
        }
    }
    let inner_len = frame.len();
    let len = usize::from(header.len);
    if !frame.prepend(len) {
        return cx.drop(DropReason::NoHeadroom);
    }
    let data = frame.data_mut();
    // Constant-size copies inline; a copy of run-time length is a memcpy call.
    const KEYED: usize = OuterHeader::MAX_LEN;
    const UNKEYED: usize = OuterHeader::UNKEYED_LEN;
    if len == KEYED {
        data[..KEYED].copy_from_slice(&header.bytes[..KEYED]);
    } else {
        data[..UNKEYED].copy_from_slice(&header.bytes[..UNKEYED]);
    }
    let total = (inner_len + len - ETH_LEN) as u16;
    data[OuterHeader::IP_TOTAL_LEN..OuterHeader::IP_TOTAL_LEN + 2]
        .copy_from_slice(&total.to_be_bytes());
    let csum = checksum::update_u16(header.checksum_base, 0, total);
    data[OuterHeader::IP_CHECKSUM..OuterHeader::IP_CHECKSUM + 2]
        .copy_from_slice(&csum.to_be_bytes());
    if tables.design == Design::Dedicated {
        data[OuterHeader::GRE_KEY..OuterHeader::GRE_KEY + 4].copy_from_slice(&t.id.to_be_bytes());
    }
    note!(
        cx,
        "GRE encapsulated toward {} on tunnel #{tunnel}",
        tables.tunnels[usize::from(tunnel)].remote_ip
    );
    sink.send(uplink.port, frame);
}
