//! The tenant router (DESIGN.md "A packet's way", step 3): ARP for the gateway
//! addresses, IPv4 forwarding with TTL and incremental checksums, longest-prefix match,
//! neighbour resolution with a hold queue, SNAT toward the uplink, port publishing
//! (DNAT) from it, and rate-limited ICMP errors built in place from the offending frame.
//!
//! Like the switch it allocates nothing, locks nothing and makes no system call; the
//! SNAT sessions are this core's own ([`super::nat`]).

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::packet::arp::{ArpOperation, ArpPacket};
use crate::packet::checksum;
use crate::packet::ethernet::{self, EthernetFrame};
use crate::packet::frame::Frame;
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::{read_u16, read_u32, write_u16, write_u32, Mac};
use crate::table::routing::{
    longest_match, neighbor_key, published_inside_key, published_key, RouteTarget, Router,
};
use crate::table::{FlowTables, Location, TenantIdx};

use super::fdb_cache::{FdbCache, Hop, Out, Unresolved};
use super::nat::{Flow, Inside, NatTable, ICMP, TCP, UDP};
use super::switch::{
    flood_from_router, output, resolve_in, tenant_id, to_ingress, Context, Ingress, Sink, Trace,
};

const ETH_LEN: usize = 14;
const IP_CHECKSUM: usize = ETH_LEN + 10;
const IP_SRC: usize = ETH_LEN + 12;
const IP_DST: usize = ETH_LEN + 16;
const IP_TTL: usize = ETH_LEN + 8;
/// TTL of the packets the router itself originates.
const OWN_TTL: u8 = 64;

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_UNREACHABLE: u8 = 3;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// ICMP errors one core sends per second at most (RFC 1812 4.3.2.8 asks for a limit).
pub const ICMP_ERRORS_PER_SECOND: u32 = 100;

/// Frames waiting for a neighbour are dropped after this many seconds.
pub const HOLD_SECS: u32 = 3;

/// A core's router state: its SNAT sessions and its ICMP error budget.
pub struct RouterState {
    /// SNAT sessions of this core.
    pub nat: NatTable,
    icmp_budget: u32,
    icmp_second: u32,
}

impl RouterState {
    /// State for worker `worker` of `workers`, with room for `sessions` SNAT sessions.
    pub fn new(sessions: usize, worker: u16, workers: u16) -> Self {
        Self {
            nat: NatTable::new(sessions, worker, workers),
            icmp_budget: ICMP_ERRORS_PER_SECOND,
            icmp_second: 0,
        }
    }

    #[inline]
    fn icmp_allowed(&mut self, now: u32) -> bool {
        if now != self.icmp_second {
            self.icmp_second = now;
            self.icmp_budget = ICMP_ERRORS_PER_SECOND;
        }
        if self.icmp_budget == 0 {
            return false;
        }
        self.icmp_budget -= 1;
        true
    }
}

impl Default for RouterState {
    /// A small single-worker state, for traces and tests.
    fn default() -> Self {
        Self::new(1024, 0, 1)
    }
}

/// Answers ARP for a gateway address in place (back where it came from) and reports
/// the sender as a neighbour of the router. Any host with the tenant answers: the
/// router MAC is the same everywhere. Other ARP is given back for switching.
// Kept out of line: inlined into the switch it bloats every path.
#[inline(never)]
pub(super) fn gateway_arp<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    ingress: Ingress,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) -> Option<F> {
    let (operation, sender_mac, sender_ip, target_ip) = {
        let Some(arp) = frame
            .data()
            .get(ETH_LEN..)
            .and_then(|d| ArpPacket::new_checked(d).ok())
        else {
            return Some(frame);
        };
        (
            arp.operation(),
            arp.sender_hardware_addr(),
            arp.sender_protocol_addr(),
            arp.target_protocol_addr(),
        )
    };
    // The router's own announcements (gratuitous ARP from the gateway host, whose
    // source the switch already checked against the router MAC's place) are flooded.
    if !router.owns(target_ip) || sender_mac == router.mac {
        return Some(frame);
    }
    if ethernet::is_multicast(&sender_mac) {
        cx.drop(DropReason::BadSourceMac);
        return None;
    }
    if !sender_ip.is_unspecified() {
        cx.learner
            .tenant_neighbor(tenant, sender_ip, sender_mac, cx.counters);
    }
    match operation {
        ArpOperation::Request if sender_ip != target_ip => {
            let data = frame.data_mut();
            let mut eth = EthernetFrame::new_unchecked(&mut *data);
            eth.set_dst_addr(sender_mac);
            eth.set_src_addr(router.mac);
            let mut arp = ArpPacket::new_unchecked(&mut data[ETH_LEN..]);
            arp.set_operation(ArpOperation::Reply);
            arp.set_target_hardware_addr(sender_mac);
            arp.set_target_protocol_addr(sender_ip);
            arp.set_sender_hardware_addr(router.mac);
            arp.set_sender_protocol_addr(target_ip);
            note!(cx, "ARP request for gateway {target_ip}: answered in place");
            to_ingress(tables, tenant, ingress, frame, sink, cx);
        }
        ArpOperation::Reply => {
            note!(cx, "ARP reply from {sender_ip}: neighbour of the router");
            cx.counters.add_punted();
        }
        // A gratuitous ARP claiming the gateway address, or a malformed operation.
        _ => cx.drop(DropReason::NotRoutable),
    }
    None
}

/// Routes a frame addressed to `tenant`'s router MAC on the gateway host.
// Kept out of line: inlined into the switch it bloats every path.
#[inline(never)]
pub(super) fn route<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let (dst, ttl) = match frame.data().get(12..14) {
        Some([0x08, 0x00]) => match valid_ipv4(frame.data()) {
            Some(header) => header,
            None => return cx.drop(DropReason::Ipv4Invalid),
        },
        Some([0x08, 0x06]) => {
            let Some(router) = tables.router(tenant) else {
                return cx.drop(DropReason::NoOutput);
            };
            if let Some(_other) = gateway_arp(tables, tenant, router, ingress, frame, sink, cx) {
                cx.drop(DropReason::NotRoutable);
            }
            return;
        }
        Some(_) => return cx.drop(DropReason::NotRoutable),
        None => return cx.drop(DropReason::Malformed),
    };
    let hop = cx
        .cache
        .route(neighbor_key(tenant, dst), || match tables.router(tenant) {
            Some(router) => decide(tables, tenant, router, dst),
            None => Ok(Hop::NoRoute),
        });
    note!(
        cx,
        "route {dst} in tenant {}: {hop:?}",
        tenant_id(tables, tenant)
    );
    // The common case first, as a plain branch rather than a jump table.
    if let (
        Ok(Hop::Deliver {
            mac,
            src,
            out,
            tenant: to,
        }),
        2..,
    ) = (hop, ttl)
    {
        let data = frame.data_mut();
        decrement_ttl(data);
        data[0..6].copy_from_slice(&mac);
        data[6..12].copy_from_slice(&src);
        return output(tables, to, Ingress::Router, out, frame, sink, cx);
    }
    let Some(router) = tables.router(tenant) else {
        return cx.drop(DropReason::NoOutput);
    };
    if ttl <= 1 && hop != Ok(Hop::Gateway) {
        return icmp_error(
            tables,
            tenant,
            router,
            frame,
            (ICMP_TIME_EXCEEDED, 0),
            DropReason::TtlExceeded,
            sink,
            cx,
        );
    }
    match hop {
        Ok(Hop::Deliver { .. }) => cx.drop(DropReason::TtlExceeded),
        Ok(Hop::Gateway) => to_gateway(tables, tenant, frame, sink, cx),
        Ok(Hop::External) => external(tables, tenant, router, frame, sink, cx),
        Ok(Hop::NoRoute) => icmp_error(
            tables,
            tenant,
            router,
            frame,
            (ICMP_UNREACHABLE, 0),
            DropReason::NoRoute,
            sink,
            cx,
        ),
        Err(pending) => {
            decrement_ttl(frame.data_mut());
            hold(pending, frame, sink, cx);
        }
    }
}

/// The common routed packet decided from the core's caches alone, VPP-style, before
/// the full pipeline: an untagged IPv4 frame from an access port's last checked source
/// to `router_mac` (`router`'s, on this host), valid and with TTL to spare, whose
/// destination the route cache already delivers to a local port or sends outside.
/// It leaves exactly as [`route`] would send it. Any other frame comes back untouched,
/// nothing counted or cached, for the full pipeline to run from the start.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn fast_route<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    router_mac: u64,
    in_port: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) -> Option<F> {
    let data = frame.data();
    let Some(head) = data.get(..ETH_LEN) else {
        return Some(frame);
    };
    let dst = u64::from(read_u32(head, 0)) << 16 | u64::from(read_u16(head, 4));
    let src = u64::from(read_u16(head, 6)) << 32 | u64::from(read_u32(head, 8));
    if dst != router_mac
        || head[12..14] != [0x08, 0x00]
        || !cx.cache.same_source(
            u64::from(tenant) << 48 | src,
            Location::Port(in_port),
            cx.learner.now,
        )
    {
        return Some(frame);
    }
    let Some((ip, 2..)) = valid_ipv4(data) else {
        return Some(frame);
    };
    match cx.cache.peek_route(neighbor_key(tenant, ip)) {
        Some(Hop::Deliver {
            mac,
            src,
            out: Out::Port(port),
            ..
        }) => {
            let data = frame.data_mut();
            decrement_ttl(data);
            data[0..6].copy_from_slice(&mac);
            data[6..12].copy_from_slice(&src);
            sink.send(port, frame);
        }
        Some(Hop::External) => external(tables, tenant, router, frame, sink, cx),
        _ => return Some(frame),
    }
    None
}

/// Destination and TTL of the IPv4 header after the Ethernet header, if it is valid
/// and its checksum right (RFC 1812 5.2.2). The usual option-less header is checked
/// with fixed-size reads the compiler unrolls.
#[inline(always)]
fn valid_ipv4(data: &[u8]) -> Option<(Ipv4Addr, u8)> {
    let header: &[u8; 20] = data.get(ETH_LEN..ETH_LEN + 20)?.try_into().ok()?;
    if header[0] == 0x45 {
        let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if total < 20 || total > data.len() - ETH_LEN || !checksum::ipv4_header_ok(header) {
            return None;
        }
        let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
        return Some((dst, header[8]));
    }
    let ip = Ipv4Packet::new_checked(&data[ETH_LEN..]).ok()?;
    ip.verify_checksum().then(|| (ip.dst_addr(), ip.ttl()))
}

/// Where the router sends a packet for `dst`: into which tenant and to which MAC.
fn decide(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    dst: Ipv4Addr,
) -> Result<Hop, Unresolved> {
    if router.owns(dst) {
        return Ok(Hop::Gateway);
    }
    let (to, next) = match longest_match(&tables.routes, tenant, router.route_lengths, dst) {
        Some(RouteTarget::Direct(t)) => (t, dst),
        Some(RouteTarget::Via(t, hop)) => (t, hop),
        Some(RouteTarget::External) => return Ok(Hop::External),
        None if router.snat_ip.is_some() => return Ok(Hop::External),
        None => return Ok(Hop::NoRoute),
    };
    let Some(&mac) = tables.neighbors.get(&neighbor_key(to, next)) else {
        return Err(Unresolved {
            tenant: to,
            ip: next,
        });
    };
    let Some(src) = tables.router(to).map(|r| r.mac) else {
        return Ok(Hop::NoRoute);
    };
    Ok(Hop::Deliver {
        tenant: to,
        mac,
        src,
        out: resolve_in(tables, to, &mac),
    })
}

/// Sends a routed packet (TTL already lowered) into `tenant` toward `mac`.
#[inline(always)]
fn deliver<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mac: Mac,
    out: Out,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Some(router) = tables.router(tenant) else {
        return cx.drop(DropReason::NoOutput);
    };
    let data = frame.data_mut();
    data[0..6].copy_from_slice(&mac);
    data[6..12].copy_from_slice(&router.mac);
    output(tables, tenant, Ingress::Router, out, frame, sink, cx);
}

/// Parks a frame until its next hop is resolved, and asks the control plane for it.
fn hold<F: Frame, S: Sink<F>, T: Trace>(
    pending: Unresolved,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    cx.learner
        .neighbor_miss(pending.tenant, pending.ip, cx.counters);
    note!(cx, "neighbour {} unresolved: held, ARP asked", pending.ip);
    if sink.park(pending, frame).is_some() {
        cx.drop(DropReason::NeighborUnresolved);
    }
}

/// A held frame's second chance, with newer tables: delivered if its neighbour is known
/// now, given back otherwise.
pub fn release<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    pending: Unresolved,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) -> Result<(), F> {
    let Some(&mac) = tables
        .neighbors
        .get(&neighbor_key(pending.tenant, pending.ip))
    else {
        return Err(frame);
    };
    let out = resolve_in(tables, pending.tenant, &mac);
    deliver(tables, pending.tenant, mac, out, frame, sink, cx);
    Ok(())
}

/// A packet for one of the gateway's own addresses: ping is answered, the rest dropped.
fn to_gateway<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let data = frame.data_mut();
    let ihl = usize::from(data[ETH_LEN] & 0x0f) * 4;
    let l4 = ETH_LEN + ihl;
    let is_echo = data[ETH_LEN + 9] == ICMP
        && data.len() >= l4 + 8
        && data[l4] == ICMP_ECHO_REQUEST
        && read_u16(data, ETH_LEN + 6) & 0x3fff == 0;
    if !is_echo {
        return cx.drop(DropReason::NotRoutable);
    }
    let (src, dst) = (read_u32(data, IP_SRC), read_u32(data, IP_DST));
    write_u32(data, IP_SRC, dst);
    write_u32(data, IP_DST, src);
    data[IP_TTL] = OWN_TTL;
    Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]).fill_checksum();
    data[l4] = ICMP_ECHO_REPLY;
    let sum = checksum::update_u16(
        read_u16(data, l4 + 2),
        u16::from(ICMP_ECHO_REQUEST) << 8,
        u16::from(ICMP_ECHO_REPLY) << 8,
    );
    write_u16(data, l4 + 2, sum);
    let requester: Mac = data[6..12].try_into().unwrap_or([0; 6]);
    note!(cx, "echo request to the gateway: answered");
    let out = resolve_in(tables, tenant, &requester);
    deliver(tables, tenant, requester, out, frame, sink, cx);
}

/// Starts loading the SNAT session slot of a frame of `tenant` whose destination the
/// route cache already sends out of the uplink (harmless for any other frame).
#[inline(always)]
pub(super) fn prefetch_external(cache: &FdbCache, nat: &NatTable, tenant: TenantIdx, data: &[u8]) {
    let Some(dst) = data.get(IP_DST..IP_DST + 4) else {
        return;
    };
    let dst = Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]);
    if cache.peek_route(neighbor_key(tenant, dst)) != Some(Hop::External) {
        return;
    }
    if let Some((flow, _, _)) = l4_flow(data, Direction::Out) {
        nat.prefetch_outbound(tenant, &flow);
    }
}

/// Out of the uplink: source translated (a published port, or a SNAT session), MACs
/// of the uplink and the outside next hop.
fn external<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let (Some(up), Some(snat_ip), Some(hop)) = (tables.uplink, router.snat_ip, tables.external)
    else {
        return icmp_error(
            tables,
            tenant,
            router,
            frame,
            (ICMP_UNREACHABLE, 0),
            DropReason::NoRoute,
            sink,
            cx,
        );
    };
    let Some(hop_mac) = hop.mac else {
        return cx.drop(DropReason::NeighborUnresolved);
    };
    let Some((flow, flags, ihl)) = l4_flow(frame.data(), Direction::Out) else {
        return cx.drop(DropReason::NatUnsupported);
    };
    // Most hosts publish nothing: skip the hash of a lookup that cannot hit.
    let published = if tables.published_inside.is_empty() {
        None
    } else {
        tables
            .published_inside
            .get(&published_inside_key(
                tenant,
                flow.protocol,
                flow.src,
                flow.src_port,
            ))
            .map(|p| (p.external_ip, p.external_port))
    };
    let (ip, port) = match published {
        Some(outside) => outside,
        None => {
            let now = cx.learner.now;
            match cx.router.nat.outbound(
                &tables.nat,
                tenant,
                router.max_connections,
                snat_ip,
                &flow,
                flags,
                now,
            ) {
                Ok(port) => (snat_ip, port),
                Err(DropReason::NatNoSession) => return tcp_reset(tables, tenant, frame, sink, cx),
                Err(reason) => return cx.drop(reason),
            }
        }
    };
    let data = frame.data_mut();
    rewrite(data, ihl, flow.protocol, Side::Source, ip, port);
    decrement_ttl(data);
    data[0..6].copy_from_slice(&hop_mac);
    data[6..12].copy_from_slice(&up.mac);
    note!(
        cx,
        "SNAT {}:{} -> {ip}:{port}, out of the uplink",
        flow.src,
        flow.src_port
    );
    cx.counters.add_gateway_egress(frame.data().len());
    sink.send(up.port, frame);
}

/// A packet from the outside for one of this host's SNAT or publishing addresses: back
/// into its tenant through its session, or to a published port.
// Kept out of line: inlined into the switch it bloats every path.
#[inline(never)]
pub(super) fn from_outside<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    match Ipv4Packet::new_checked(&frame.data()[ETH_LEN..]) {
        Ok(ip) if ip.verify_checksum() => {
            if !tables.owns_uplink_ip(ip.dst_addr()) {
                return cx.drop(DropReason::NotForUs);
            }
        }
        _ => return cx.drop(DropReason::Ipv4Invalid),
    }
    let Some((flow, flags, ihl)) = l4_flow(frame.data(), Direction::In) else {
        return cx.drop(DropReason::NatUnsupported);
    };
    if frame.data()[IP_TTL] <= 1 {
        return cx.drop(DropReason::TtlExceeded);
    }
    let now = cx.learner.now;
    let inside = match cx.router.nat.inbound(&tables.nat, &flow, flags, now) {
        Some(inside) => inside,
        None => match tables
            .published
            .get(&published_key(flow.protocol, flow.dst, flow.dst_port))
        {
            Some(p) => Inside {
                tenant: p.tenant,
                ip: p.ip,
                port: p.port,
            },
            None => {
                // Each core allocates from its own port slice, so the port names the
                // core whose table holds the session.
                let (me, workers) = cx.router.nat.worker();
                return match NatTable::owner(&tables.nat, workers, flow.dst_port) {
                    Some(owner) if owner != me => match sink.hand_off(owner, frame) {
                        None => {
                            note!(cx, "session on worker {owner}: handed off");
                            cx.counters.add_handed_off();
                        }
                        Some(_) => cx.drop(DropReason::NatForeignCore),
                    },
                    _ => cx.drop(DropReason::NatNoSession),
                };
            }
        },
    };
    let Some(router) = tables.router(inside.tenant).filter(|r| r.here) else {
        // The gateway moved away; its old sessions lead nowhere from here.
        return cx.drop(DropReason::NatNoSession);
    };
    let data = frame.data_mut();
    rewrite(
        data,
        ihl,
        flow.protocol,
        Side::Destination,
        inside.ip,
        inside.port,
    );
    decrement_ttl(data);
    note!(
        cx,
        "outside {}:{} -> {}:{} in tenant {}",
        flow.dst,
        flow.dst_port,
        inside.ip,
        inside.port,
        tenant_id(tables, inside.tenant)
    );
    match cx.cache.route(neighbor_key(inside.tenant, inside.ip), || {
        decide(tables, inside.tenant, router, inside.ip)
    }) {
        Ok(Hop::Deliver {
            tenant, mac, out, ..
        }) => deliver(tables, tenant, mac, out, frame, sink, cx),
        Ok(_) => cx.drop(DropReason::NoRoute),
        Err(pending) => hold(pending, frame, sink, cx),
    }
}

/// A frame the control plane sends as a tenant's router (ARP requests for its
/// neighbours, gratuitous ARP on placement): flooded in the tenant whose router MAC is
/// its source.
// Kept out of line: inlined into the switch it bloats every path.
#[inline(never)]
pub(super) fn from_control<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Some(src) = frame.data().get(6..12) else {
        return cx.drop(DropReason::Malformed);
    };
    let src: Mac = src.try_into().unwrap_or([0; 6]);
    let Some(&tenant) = tables.router_tenant.get(&crate::table::fdb_key(0, &src)) else {
        return cx.drop(DropReason::NoOutput);
    };
    flood_from_router(tables, tenant, frame, sink, cx);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Out,
    In,
}

/// The SNAT view of an IPv4 packet: its flow, TCP flags and IP header length. `None`
/// for what SNAT cannot translate (fragments, other protocols, ICMP other than echo).
/// The caller has validated the IPv4 header (version, IHL, total length within the
/// frame), so the fields are read at fixed offsets.
#[inline(always)]
fn l4_flow(data: &[u8], direction: Direction) -> Option<(Flow, u16, usize)> {
    let ip = data.get(ETH_LEN..ETH_LEN + 20)?;
    // The more-fragments flag or an offset: not a whole datagram.
    if read_u16(ip, 6) & 0x3fff != 0 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let l4 = data.get(ETH_LEN + ihl..ETH_LEN + usize::from(read_u16(ip, 2)))?;
    let protocol = ip[9];
    let (src_port, dst_port, flags) = match protocol {
        TCP if l4.len() >= 20 => (read_u16(l4, 0), read_u16(l4, 2), read_u16(l4, 12) & 0x1ff),
        UDP if l4.len() >= 8 => (read_u16(l4, 0), read_u16(l4, 2), 0),
        ICMP if l4.len() >= 8 => {
            let id = read_u16(l4, 4);
            match (direction, l4[0]) {
                (Direction::Out, ICMP_ECHO_REQUEST) => (id, 0, 0),
                (Direction::In, ICMP_ECHO_REPLY) => (0, id, 0),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some((
        Flow {
            protocol,
            src: Ipv4Addr::from(read_u32(ip, 12)),
            src_port,
            dst: Ipv4Addr::from(read_u32(ip, 16)),
            dst_port,
        },
        flags,
        ihl,
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

/// Rewrites one side's address and port (ICMP: the echo identifier), patching the IP
/// and L4 checksums incrementally.
#[inline(always)]
fn rewrite(data: &mut [u8], ihl: usize, protocol: u8, side: Side, ip: Ipv4Addr, port: u16) {
    let ip_at = if side == Side::Source { IP_SRC } else { IP_DST };
    let old_ip = read_u32(data, ip_at);
    let new_ip = u32::from(ip);
    write_u32(data, ip_at, new_ip);
    let sum = checksum::update_u32(read_u16(data, IP_CHECKSUM), old_ip, new_ip);
    write_u16(data, IP_CHECKSUM, sum);
    let l4 = ETH_LEN + ihl;
    let port_at = match (protocol, side) {
        (ICMP, _) => l4 + 4,
        (_, Side::Source) => l4,
        (_, Side::Destination) => l4 + 2,
    };
    let old_port = read_u16(data, port_at);
    write_u16(data, port_at, port);
    match protocol {
        TCP => {
            let at = l4 + 16;
            let sum = checksum::update_u32(read_u16(data, at), old_ip, new_ip);
            write_u16(data, at, checksum::update_u16(sum, old_port, port));
        }
        UDP => {
            let at = l4 + 6;
            let old = read_u16(data, at);
            // Zero means "no checksum" in UDP over IPv4; a computed zero is sent as ones.
            if old != 0 {
                let sum = checksum::update_u32(old, old_ip, new_ip);
                let sum = checksum::update_u16(sum, old_port, port);
                write_u16(data, at, if sum == 0 { 0xffff } else { sum });
            }
        }
        _ => {
            let at = l4 + 2;
            let sum = checksum::update_u16(read_u16(data, at), old_port, port);
            write_u16(data, at, sum);
        }
    }
}

/// Lowers the TTL by one with an incremental checksum (the caller checked it is > 1).
#[inline(always)]
fn decrement_ttl(data: &mut [u8]) {
    let ttl = data[IP_TTL];
    let protocol = data[IP_TTL + 1];
    data[IP_TTL] = ttl.wrapping_sub(1);
    let sum = checksum::update_u16(
        read_u16(data, IP_CHECKSUM),
        u16::from_be_bytes([ttl, protocol]),
        u16::from_be_bytes([ttl.wrapping_sub(1), protocol]),
    );
    write_u16(data, IP_CHECKSUM, sum);
}

/// Turns a packet the router cannot forward into the ICMP error about it, in place:
/// the new IPv4 and ICMP headers go in front of the original IP header, which stays
/// where it is with the first 8 bytes of its payload (RFC 792). The original counts as
/// dropped under `reason`; the error goes back only within the rate limit and never
/// about an ICMP error, a fragment or a non-unicast source.
#[allow(clippy::too_many_arguments)]
fn icmp_error<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    mut frame: F,
    (icmp_type, code): (u8, u8),
    reason: DropReason,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    cx.drop(reason);
    let (src_mac, src_ip, keep) = {
        let data = frame.data();
        let ihl = usize::from(data[ETH_LEN] & 0x0f) * 4;
        let src_ip = Ipv4Addr::from(read_u32(data, IP_SRC));
        let protocol = data[ETH_LEN + 9];
        let first_fragment = read_u16(data, ETH_LEN + 6) & 0x1fff == 0;
        let about_error = protocol == ICMP
            && !matches!(
                data.get(ETH_LEN + ihl),
                Some(&ICMP_ECHO_REQUEST) | Some(&ICMP_ECHO_REPLY)
            );
        if about_error
            || !first_fragment
            || src_ip.is_broadcast()
            || src_ip.is_multicast()
            || src_ip.is_unspecified()
        {
            return;
        }
        let src_mac: Mac = data[6..12].try_into().unwrap_or([0; 6]);
        (src_mac, src_ip, (data.len() - ETH_LEN).min(ihl + 8))
    };
    if !cx.router.icmp_allowed(cx.learner.now) {
        return;
    }
    const NEW: usize = 20 + 8;
    if !frame.prepend(NEW) || !frame.truncate(ETH_LEN + NEW + keep) {
        return;
    }
    let from = router
        .interface_for(src_ip)
        .map_or(Ipv4Addr::UNSPECIFIED, |i| i.ip);
    let data = frame.data_mut();
    data[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut data[ETH_LEN..ETH_LEN + 20];
    ip.fill(0);
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((NEW + keep) as u16).to_be_bytes());
    ip[8] = OWN_TTL;
    ip[9] = ICMP;
    ip[12..16].copy_from_slice(&from.octets());
    ip[16..20].copy_from_slice(&src_ip.octets());
    Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]).fill_checksum();
    let icmp = &mut data[ETH_LEN + 20..];
    icmp[..8].fill(0);
    icmp[0] = icmp_type;
    icmp[1] = code;
    let sum = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    note!(
        cx,
        "ICMP type {icmp_type} code {code} sent back to {src_ip}"
    );
    let out = resolve_in(tables, tenant, &src_mac);
    deliver(tables, tenant, src_mac, out, frame, sink, cx);
}

/// Answers a TCP segment that opens no SNAT session with a reset to its sender, in
/// place, so an application whose connection belonged to a gateway that moved (or to a
/// session that expired) learns it at once instead of retransmitting into nothing.
fn tcp_reset<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    cx.drop(DropReason::NatNoSession);
    if !cx.router.icmp_allowed(cx.learner.now) {
        return;
    }
    let data = frame.data();
    // Only option-less headers: the reset is built in the original's place.
    let ihl = usize::from(data[ETH_LEN] & 0x0f) * 4;
    let l4 = ETH_LEN + ihl;
    if ihl != 20 || data.len() < l4 + 20 {
        return;
    }
    let flags = read_u16(data, l4 + 12);
    if flags & crate::packet::tcp::FLAG_RST != 0 {
        return;
    }
    let total = usize::from(read_u16(data, ETH_LEN + 2));
    let tcp_len = total.saturating_sub(ihl);
    let header_len = usize::from(data[l4 + 12] >> 4) * 4;
    let payload = tcp_len.saturating_sub(header_len) as u32;
    let syn_fin = u32::from(flags & 0x3 != 0);
    let (seq, ack) = (read_u32(data, l4 + 4), read_u32(data, l4 + 8));
    let requester: Mac = data[6..12].try_into().unwrap_or([0; 6]);
    if !frame.truncate(l4 + 20) {
        return;
    }
    let data = frame.data_mut();
    let (src, dst) = (read_u32(data, IP_SRC), read_u32(data, IP_DST));
    write_u32(data, IP_SRC, dst);
    write_u32(data, IP_DST, src);
    write_u16(data, ETH_LEN + 2, 40);
    data[IP_TTL] = OWN_TTL;
    Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]).fill_checksum();
    let (sport, dport) = (read_u16(data, l4), read_u16(data, l4 + 2));
    write_u16(data, l4, dport);
    write_u16(data, l4 + 2, sport);
    let ack_flag = flags & crate::packet::tcp::FLAG_ACK != 0;
    // RFC 793 reset generation: seq from the segment's ACK if it had one.
    let (rst_seq, rst_ack, rst_flags) = if ack_flag {
        (ack, 0, crate::packet::tcp::FLAG_RST)
    } else {
        (
            0,
            seq.wrapping_add(payload + syn_fin),
            crate::packet::tcp::FLAG_RST | crate::packet::tcp::FLAG_ACK,
        )
    };
    write_u32(data, l4 + 4, rst_seq);
    write_u32(data, l4 + 8, rst_ack);
    write_u16(data, l4 + 12, 5 << 12 | rst_flags);
    write_u16(data, l4 + 14, 0);
    write_u16(data, l4 + 16, 0);
    write_u16(data, l4 + 18, 0);
    let (s, d) = (Ipv4Addr::from(dst), Ipv4Addr::from(src));
    let sum = !checksum::fold(
        checksum::pseudo_header_v4(s, d, TCP, 20) + checksum::sum(&data[l4..l4 + 20]),
    );
    write_u16(data, l4 + 16, sum);
    note!(cx, "TCP segment of no SNAT connection: reset sent back");
    let out = resolve_in(tables, tenant, &requester);
    deliver(tables, tenant, requester, out, frame, sink, cx);
}
