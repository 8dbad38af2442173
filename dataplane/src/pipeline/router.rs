//! The tenant router (step 3 of a packet's way, which [`super::dispatch`] runs): ARP
//! for the gateway addresses, IPv4 forwarding with TTL and incremental checksums,
//! longest-prefix match, neighbour resolution with a hold queue, SNAT toward the
//! uplink, port publishing (DNAT) from it, and rate-limited ICMP errors built in place
//! from the offending frame.
//!
//! Like the switch it allocates nothing, locks nothing and makes no system call; the
//! SNAT sessions are this core's own ([`super::nat`]).

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::packet::arp::{ArpOperation, ArpPacket};
use crate::packet::checksum;
use crate::packet::ethernet::{self, EtherType, EthernetFrame};
use crate::packet::frame::Frame;
use crate::packet::icmp::{self, Icmpv4Message, Icmpv4Packet, Icmpv4Repr};
use crate::packet::ipv4::{self, IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::packet::tcp::{self, TcpPacket};
use crate::packet::udp::UdpPacket;
use crate::packet::Mac;
use crate::table::routing::{
    longest_match, neighbor_key, published_inside_key, published_key, RouteTarget, Router,
};
use crate::table::{FlowTables, Location, TenantIdx};

use super::ahead::{Ahead, Hashed};
use super::fdb_cache::{FdbCache, Hop, Out, Unresolved};
use super::nat::{Flow, Inside, InsideKey, NatTable};
use super::resolve::resolve_in;
use super::stage::{tenant_id, Context, Exit, Ingress, Trace};

const ETH_LEN: usize = ethernet::HEADER_LEN;
const IP_LEN: usize = ipv4::MIN_HEADER_LEN;
/// TTL of the packets the router itself originates.
const OWN_TTL: u8 = 64;

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
/// router MAC is the same everywhere. Other broadcast ARP is flooded; other ARP sent
/// to the router MAC is not the router's to forward.
// Kept out of line: inlined into the dispatcher it bloats every path.
#[inline(never)]
pub(super) fn gateway_arp<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let Some(router) = tables.router(tenant) else {
        return cx.stop(DropReason::NoOutput);
    };
    let (operation, sender_mac, sender_ip, target_ip) = {
        let Some(arp) = frame
            .data()
            .get(ETH_LEN..)
            .and_then(|d| ArpPacket::new_checked(d).ok())
        else {
            return not_for_gateway(tenant, ingress, frame, cx);
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
        return not_for_gateway(tenant, ingress, frame, cx);
    }
    if ethernet::is_multicast(&sender_mac) {
        return cx.stop(DropReason::BadSourceMac);
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
            Exit::ToIngress(tenant, ingress, frame)
        }
        ArpOperation::Reply => {
            note!(cx, "ARP reply from {sender_ip}: neighbour of the router");
            cx.counters.add_punted();
            Exit::Done
        }
        // A gratuitous ARP claiming the gateway address, or a malformed operation.
        _ => cx.stop(DropReason::NotRoutable),
    }
}

/// ARP the gateway does not answer: flooded when broadcast, dropped when sent to the
/// router MAC.
fn not_for_gateway<F: Frame, T: Trace>(
    tenant: TenantIdx,
    ingress: Ingress,
    frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    match ethernet::macs_u64(frame.data()) {
        Some((dst, _)) if dst & ethernet::GROUP_BIT != 0 => {
            Exit::Output(tenant, ingress, Out::Flood, frame)
        }
        _ => cx.stop(DropReason::NotRoutable),
    }
}

/// Routes a frame addressed to `tenant`'s router MAC on the gateway host.
// Kept out of line: inlined into the dispatcher it bloats every path.
#[inline(never)]
pub(super) fn route<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let (dst, ttl, len) = match frame.data().get(ethernet::ETHERTYPE_AT) {
        Some(t) if t == EtherType::IPV4_BYTES => match valid_ipv4(frame.data()) {
            Some(header) => header,
            None => return cx.stop(DropReason::Ipv4Invalid),
        },
        Some(t) if t == EtherType::ARP_BYTES => {
            return gateway_arp(tables, tenant, ingress, frame, cx)
        }
        Some(_) => return cx.stop(DropReason::NotRoutable),
        None => return cx.stop(DropReason::Malformed),
    };
    let key = cx.ahead.route(tables, cx.at, neighbor_key(tenant, dst));
    let hop = cx.cache.route(key, || match tables.router(tenant) {
        Some(router) => decide(tables, tenant, router, dst),
        None => Ok(Hop::NoRoute),
    });
    note!(
        cx,
        "route {dst} in tenant #{}: {hop:?}",
        tenant_id(tables, tenant)
    );
    // The common case first, as a plain branch rather than a jump table.
    if let (
        Ok(Hop::Deliver {
            mac,
            src,
            out,
            tenant: to,
            mtu,
        }),
        2..,
    ) = (hop, ttl)
    {
        if fits(len, mtu, &frame) {
            let data = frame.data_mut();
            decrement_ttl(data);
            ethernet::set_addresses(data, mac, src);
            return Exit::Output(to, Ingress::Router, out, frame);
        }
    }
    let Some(router) = tables.router(tenant) else {
        return cx.stop(DropReason::NoOutput);
    };
    if ttl <= 1 && hop != Ok(Hop::Gateway) {
        return icmp_error(
            tables,
            tenant,
            router,
            frame,
            Icmpv4Repr::TTL_EXCEEDED,
            DropReason::TtlExceeded,
            cx,
        );
    }
    match hop {
        Ok(Hop::Deliver { mtu, .. }) => too_big(tables, tenant, router, frame, mtu, cx),
        Ok(Hop::Gateway) => to_gateway(tables, tenant, frame, cx),
        Ok(Hop::External) => external(tables, tenant, router, frame, cx),
        Ok(Hop::NoRoute) => icmp_error(
            tables,
            tenant,
            router,
            frame,
            Icmpv4Repr::NET_UNREACHABLE,
            DropReason::NoRoute,
            cx,
        ),
        Err(pending) => {
            decrement_ttl(frame.data_mut());
            hold(pending, frame, cx)
        }
    }
}

/// The common routed packet decided from the core's caches alone, VPP-style, before
/// the full pipeline: an untagged IPv4 frame from an access port's last checked source
/// to `router_mac` (`router`'s, on this host), valid and with TTL to spare, whose
/// destination the route cache already delivers to a local port or sends outside.
/// It leaves exactly as [`route`] would send it. Any other frame comes back untouched
/// (`Err`), nothing counted or cached, for the full pipeline to run from the start.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn fast_route<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    router_mac: u64,
    in_port: u16,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Result<Exit<F>, F> {
    let data = frame.data();
    let Some(head) = data.get(..ETH_LEN) else {
        return Err(frame);
    };
    let Some((dst, src)) = ethernet::macs_u64(data) else {
        return Err(frame);
    };
    if dst != router_mac
        || head[ethernet::ETHERTYPE_AT] != EtherType::IPV4_BYTES
        || !cx.cache.same_source(
            crate::table::fdb_key_of(tenant, src),
            Location::Port(in_port),
            cx.learner.now,
        )
    {
        return Err(frame);
    }
    let Some((ip, 2.., len)) = valid_ipv4(data) else {
        return Err(frame);
    };
    match cx
        .cache
        .peek_route(cx.ahead.route(tables, cx.at, neighbor_key(tenant, ip)))
    {
        Some(Hop::Deliver {
            mac,
            src,
            out: Out::Port(port),
            mtu,
            ..
        }) if fits(len, mtu, &frame) => {
            note!(cx, "fast path: route {ip} cached, to port #{port}");
            let data = frame.data_mut();
            decrement_ttl(data);
            ethernet::set_addresses(data, mac, src);
            Ok(Exit::Send(port, frame))
        }
        Some(Hop::External) => {
            note!(cx, "fast path: route {ip} cached, outside");
            Ok(external(tables, tenant, router, frame, cx))
        }
        _ => Err(frame),
    }
}

/// Destination, TTL and total length of the IPv4 header after the Ethernet header, if
/// it is valid and its checksum right (RFC 1812 5.2.2). The usual option-less header
/// is checked with fixed-size reads the compiler unrolls.
#[inline(always)]
fn valid_ipv4(data: &[u8]) -> Option<(Ipv4Addr, u8, u16)> {
    let header: &[u8; IP_LEN] = data.get(ETH_LEN..ETH_LEN + IP_LEN)?.try_into().ok()?;
    let plain = Ipv4Packet::new_unchecked(header);
    if plain.is_plain() {
        let total = usize::from(plain.total_len());
        if total < IP_LEN || total > data.len() - ETH_LEN || !checksum::ipv4_header_ok(header) {
            return None;
        }
        return Some((plain.dst_addr(), plain.ttl(), plain.total_len()));
    }
    let ip = Ipv4Packet::new_checked(&data[ETH_LEN..]).ok()?;
    ip.verify_checksum()
        .then(|| (ip.dst_addr(), ip.ttl(), ip.total_len()))
}

/// The IPv4 total length of a frame whose IPv4 header was validated.
#[inline(always)]
fn ip_total_len(data: &[u8]) -> u16 {
    Ipv4Packet::new_unchecked(&data[ETH_LEN..]).total_len()
}

/// The largest IPv4 packet `out` sends: its port's MTU, or for a tunnel the underlay's
/// less the headers around the packet. A flood is not limited here (each port's TX
/// refuses what it cannot send).
#[inline(always)]
fn ip_mtu(tables: &FlowTables, out: Out) -> u16 {
    match out {
        Out::Port(port) | Out::TaggedPort(port, _) => tables.port_mtu(port),
        Out::Tunnel(_) => tables.tunnel_mtu(),
        Out::Flood | Out::Drop(_) | Out::Route => u16::MAX,
    }
}

/// Whether a packet of IPv4 length `len` may leave through a way of `mtu`. A large TCP
/// segment always may: it is cut to fit where it leaves.
#[inline(always)]
fn fits<F: Frame>(len: u16, mtu: u16, frame: &F) -> bool {
    len <= mtu || frame.gso_size() != 0
}

/// A routed packet larger than the way out (`mtu`): refused with ICMP "fragmentation
/// needed" naming the MTU when its sender forbade fragmenting (path MTU discovery,
/// RFC 1191), dropped otherwise (tenet does not fragment).
fn too_big<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    frame: F,
    mtu: u16,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    if !Ipv4Packet::new_unchecked(&frame.data()[ETH_LEN..]).dont_frag() {
        return cx.stop(DropReason::TooBig);
    }
    icmp_error(
        tables,
        tenant,
        router,
        frame,
        Icmpv4Repr::fragmentation_needed(mtu),
        DropReason::FragmentationNeeded,
        cx,
    )
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
    let out = resolve_in(tables, to, &mac);
    Ok(Hop::Deliver {
        tenant: to,
        mac,
        src,
        out,
        mtu: ip_mtu(tables, out),
    })
}

/// Sends a routed packet (TTL already lowered) into `tenant` toward `mac`.
#[inline(always)]
fn deliver<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mac: Mac,
    out: Out,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let Some(router) = tables.router(tenant) else {
        return cx.stop(DropReason::NoOutput);
    };
    let data = frame.data_mut();
    ethernet::set_addresses(data, mac, router.mac);
    Exit::Output(tenant, Ingress::Router, out, frame)
}

/// Parks a frame until its next hop is resolved, and asks the control plane for it.
fn hold<F: Frame, T: Trace>(pending: Unresolved, frame: F, cx: &mut Context<'_, T>) -> Exit<F> {
    cx.learner
        .neighbor_miss(pending.tenant, pending.ip, cx.counters);
    note!(cx, "neighbour {} unresolved: held, ARP asked", pending.ip);
    Exit::Park(pending, frame)
}

/// A held frame's second chance, with newer tables: delivered if its neighbour is known
/// now, given back otherwise.
pub(super) fn release<F: Frame, T: Trace>(
    tables: &FlowTables,
    pending: Unresolved,
    frame: F,
    cx: &mut Context<'_, T>,
) -> Result<Exit<F>, F> {
    let Some(&mac) = tables
        .neighbors
        .get(&neighbor_key(pending.tenant, pending.ip))
    else {
        return Err(frame);
    };
    let out = resolve_in(tables, pending.tenant, &mac);
    if !fits(ip_total_len(frame.data()), ip_mtu(tables, out), &frame) {
        // Its sender's tenant is no longer known here to answer in: its next try
        // gets the ICMP error.
        return Ok(cx.stop(DropReason::TooBig));
    }
    Ok(deliver(tables, pending.tenant, mac, out, frame, cx))
}

/// A packet for one of the gateway's own addresses: ping is answered, the rest dropped.
fn to_gateway<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let data = frame.data_mut();
    let requester = EthernetFrame::new_unchecked(&*data).src_addr();
    let mut ip = Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]);
    let ihl = ip.header_len();
    let is_echo = ip.protocol_number() == IpProtocol::ICMP
        && !ip.is_fragment()
        && ip.payload_mut().len() >= icmp::HEADER_LEN
        && Icmpv4Packet::new_unchecked(ip.payload_mut()).msg_type() == Icmpv4Message::EchoRequest;
    if !is_echo {
        return cx.stop(DropReason::NotRoutable);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(OWN_TTL);
    ip.fill_checksum();
    let mut echo = Icmpv4Packet::new_unchecked(&mut ip.into_inner()[ihl..]);
    echo.set_msg_type(Icmpv4Message::EchoReply);
    let sum = checksum::update_u16(
        echo.checksum(),
        u16::from(u8::from(Icmpv4Message::EchoRequest)) << 8,
        u16::from(u8::from(Icmpv4Message::EchoReply)) << 8,
    );
    echo.set_checksum(sum);
    note!(cx, "echo request to the gateway: answered");
    let out = resolve_in(tables, tenant, &requester);
    deliver(tables, tenant, requester, out, frame, cx)
}

/// Starts loading the SNAT session slot of a frame of `tenant` whose destination the
/// route cache already sends out of the uplink (harmless for any other frame); gives
/// the session key it hashed.
#[inline(always)]
pub(super) fn prefetch_external(
    tables: &FlowTables,
    cache: &FdbCache,
    ahead: &Ahead,
    at: usize,
    nat: &NatTable,
    tenant: TenantIdx,
    data: &[u8],
) -> Option<InsideKey> {
    let header = data.get(ETH_LEN..ETH_LEN + IP_LEN)?;
    let dst = Ipv4Packet::new_unchecked(header).dst_addr();
    let key = ahead.route(tables, at, neighbor_key(tenant, dst));
    if cache.peek_route(key) != Some(Hop::External) {
        return None;
    }
    let (flow, _, _) = l4_flow(data, Direction::Out)?;
    let session = nat.inside(tenant, &flow);
    nat.prefetch_outbound(session);
    Some(session)
}

/// Out of the uplink: source translated (a published port, or a SNAT session), MACs
/// of the uplink and the outside next hop.
fn external<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let (Some(up), Some(snat_ip), Some(hop)) = (tables.uplink, router.snat_ip, tables.external)
    else {
        return icmp_error(
            tables,
            tenant,
            router,
            frame,
            Icmpv4Repr::NET_UNREACHABLE,
            DropReason::NoRoute,
            cx,
        );
    };
    let Some(hop_mac) = hop.mac else {
        return cx.stop(DropReason::NeighborUnresolved);
    };
    let mtu = tables.port_mtu(up.port);
    if !fits(ip_total_len(frame.data()), mtu, &frame) {
        return too_big(tables, tenant, router, frame, mtu, cx);
    }
    let Some((flow, flags, ihl)) = l4_flow(frame.data(), Direction::Out) else {
        return cx.stop(DropReason::NatUnsupported);
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
            let session = cx.ahead.session(&cx.router.nat, cx.at, tenant, &flow);
            match cx.router.nat.outbound(
                &tables.nat,
                session,
                tenant,
                router.max_connections,
                snat_ip,
                &flow,
                flags,
                now,
            ) {
                Ok(port) => (snat_ip, port),
                Err(DropReason::NatNoSession) => return tcp_reset(tables, tenant, frame, cx),
                Err(reason) => return cx.stop(reason),
            }
        }
    };
    let data = frame.data_mut();
    rewrite(data, ihl, flow.protocol, Side::Source, ip, port);
    decrement_ttl(data);
    ethernet::set_addresses(data, hop_mac, up.mac);
    note!(
        cx,
        "SNAT {}:{} -> {ip}:{port}, out of the uplink",
        flow.src,
        flow.src_port
    );
    cx.counters.add_gateway_egress(frame.data().len());
    Exit::Send(up.port, frame)
}

/// A packet from the outside for one of this host's SNAT or publishing addresses: back
/// into its tenant through its session, or to a published port.
// Kept out of line: inlined into the dispatcher it bloats every path.
#[inline(never)]
pub(super) fn from_outside<F: Frame, T: Trace>(
    tables: &FlowTables,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    match Ipv4Packet::new_checked(&frame.data()[ETH_LEN..]) {
        Ok(ip) if ip.verify_checksum() => {
            if !tables.owns_uplink_ip(ip.dst_addr()) {
                return cx.stop(DropReason::NotForUs);
            }
        }
        _ => return cx.stop(DropReason::Ipv4Invalid),
    }
    let Some((flow, flags, ihl)) = l4_flow(frame.data(), Direction::In) else {
        return cx.stop(DropReason::NatUnsupported);
    };
    if Ipv4Packet::new_unchecked(&frame.data()[ETH_LEN..]).ttl() <= 1 {
        return cx.stop(DropReason::TtlExceeded);
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
                    Some(owner) if owner != me => Exit::HandOff(owner, frame),
                    _ => cx.stop(DropReason::NatNoSession),
                };
            }
        },
    };
    let Some(router) = tables.router(inside.tenant).filter(|r| r.here) else {
        // The gateway moved away; its old sessions lead nowhere from here.
        return cx.stop(DropReason::NatNoSession);
    };
    let key = Hashed::route(tables, neighbor_key(inside.tenant, inside.ip));
    let hop = cx
        .cache
        .route(key, || decide(tables, inside.tenant, router, inside.ip));
    if let Ok(Hop::Deliver { mtu, .. }) = hop {
        if !fits(ip_total_len(frame.data()), mtu, &frame) {
            return too_big_from_outside(tables, frame, mtu, cx);
        }
    }
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
        "outside {}:{} -> {}:{} in tenant #{}",
        flow.dst,
        flow.dst_port,
        inside.ip,
        inside.port,
        tenant_id(tables, inside.tenant)
    );
    match hop {
        Ok(Hop::Deliver {
            tenant, mac, out, ..
        }) => deliver(tables, tenant, mac, out, frame, cx),
        Ok(_) => cx.stop(DropReason::NoRoute),
        Err(pending) => hold(pending, frame, cx),
    }
}

/// A frame the control plane sends as a tenant's router (ARP requests for its
/// neighbours, gratuitous ARP on placement): flooded in the tenant whose router MAC is
/// its source.
// Kept out of line: inlined into the dispatcher it bloats every path.
#[inline(never)]
pub(super) fn from_control<F: Frame, T: Trace>(
    tables: &FlowTables,
    frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
        return cx.stop(DropReason::Malformed);
    };
    let src = eth.src_addr();
    let Some(&tenant) = tables.router_tenant.get(&crate::table::fdb_key(0, &src)) else {
        return cx.stop(DropReason::NoOutput);
    };
    Exit::Output(tenant, Ingress::Router, Out::Flood, frame)
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
    let ip = Ipv4Packet::new_unchecked(data.get(ETH_LEN..ETH_LEN + IP_LEN)?);
    if ip.is_fragment() {
        return None;
    }
    let ihl = ip.header_len();
    let l4 = data.get(ETH_LEN + ihl..ETH_LEN + usize::from(ip.total_len()))?;
    let protocol = ip.protocol_number();
    let (src_port, dst_port, flags) = match protocol {
        IpProtocol::TCP if l4.len() >= tcp::MIN_HEADER_LEN => {
            let segment = TcpPacket::new_unchecked(l4);
            (segment.src_port(), segment.dst_port(), segment.flags())
        }
        IpProtocol::UDP if l4.len() >= 8 => {
            let datagram = UdpPacket::new_unchecked(l4);
            (datagram.src_port(), datagram.dst_port(), 0)
        }
        IpProtocol::ICMP if l4.len() >= icmp::HEADER_LEN => {
            let message = Icmpv4Packet::new_unchecked(l4);
            let id = message.echo_ident();
            match (direction, message.msg_type()) {
                (Direction::Out, Icmpv4Message::EchoRequest) => (id, 0, 0),
                (Direction::In, Icmpv4Message::EchoReply) => (0, id, 0),
                _ => return None,
            }
        }
        _ => return None,
    };
    Some((
        Flow {
            protocol,
            src: ip.src_addr(),
            src_port,
            dst: ip.dst_addr(),
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
    let mut header = Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]);
    let old_ip = u32::from(match side {
        Side::Source => header.src_addr(),
        Side::Destination => header.dst_addr(),
    });
    let new_ip = u32::from(ip);
    match side {
        Side::Source => header.set_src_addr(ip),
        Side::Destination => header.set_dst_addr(ip),
    }
    header.set_checksum(checksum::update_u32(header.checksum(), old_ip, new_ip));
    let l4 = &mut data[ETH_LEN + ihl..];
    match protocol {
        IpProtocol::TCP => {
            let mut segment = TcpPacket::new_unchecked(l4);
            let old_port = segment.replace_port(side == Side::Source, port);
            let sum = checksum::update_u32(segment.checksum(), old_ip, new_ip);
            segment.set_checksum(checksum::update_u16(sum, old_port, port));
        }
        IpProtocol::UDP => {
            let mut datagram = UdpPacket::new_unchecked(l4);
            let old_port = datagram.replace_port(side == Side::Source, port);
            let old = datagram.checksum();
            // Zero means "no checksum" in UDP over IPv4; a computed zero is sent as ones.
            if old != 0 {
                let sum = checksum::update_u32(old, old_ip, new_ip);
                let sum = checksum::update_u16(sum, old_port, port);
                datagram.set_checksum(if sum == 0 { 0xffff } else { sum });
            }
        }
        // ICMP echo: the identifier stands for the port; no pseudo-header.
        _ => {
            let mut message = Icmpv4Packet::new_unchecked(l4);
            let old_port = message.echo_ident();
            message.set_echo_ident(port);
            message.set_checksum(checksum::update_u16(message.checksum(), old_port, port));
        }
    }
}

/// Lowers the TTL by one with an incremental checksum (the caller checked it is > 1).
#[inline(always)]
fn decrement_ttl(data: &mut [u8]) {
    Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]).decrement_ttl();
}

/// Turns a packet the router cannot forward into the ICMP error about it, in place (see
/// [`make_icmp_error`]), and sends it back to its sender in `tenant`. The original
/// counts as dropped under `reason`; the error goes back only within the rate limit.
fn icmp_error<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    router: &Router,
    mut frame: F,
    error: Icmpv4Repr,
    reason: DropReason,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    cx.drop(reason);
    let Some((src_mac, src_ip)) = error_recipient(frame.data()) else {
        return Exit::Done;
    };
    if !cx.router.icmp_allowed(cx.learner.now) {
        return Exit::Done;
    }
    let from = router
        .interface_for(src_ip)
        .map_or(Ipv4Addr::UNSPECIFIED, |i| i.ip);
    if !make_icmp_error(&mut frame, from, src_ip, error) {
        return Exit::Done;
    }
    note!(cx, "ICMP {error:?} sent back to {src_ip}");
    let out = resolve_in(tables, tenant, &src_mac);
    deliver(tables, tenant, src_mac, out, frame, cx)
}

/// An outside packet too large for the way into its tenant: refused as [`too_big`]
/// refuses an inside one, the ICMP error going back out of the uplink from the address
/// the packet was sent to (before any translation, so the sender recognises its own
/// header in it).
fn too_big_from_outside<F: Frame, T: Trace>(
    tables: &FlowTables,
    mut frame: F,
    mtu: u16,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    let ip = Ipv4Packet::new_unchecked(&frame.data()[ETH_LEN..]);
    if !ip.dont_frag() {
        return cx.stop(DropReason::TooBig);
    }
    let to_us = ip.dst_addr();
    cx.drop(DropReason::FragmentationNeeded);
    let (Some(up), Some((src_mac, src_ip))) = (tables.uplink, error_recipient(frame.data())) else {
        return Exit::Done;
    };
    if !cx.router.icmp_allowed(cx.learner.now)
        || !make_icmp_error(
            &mut frame,
            to_us,
            src_ip,
            Icmpv4Repr::fragmentation_needed(mtu),
        )
    {
        return Exit::Done;
    }
    ethernet::set_addresses(frame.data_mut(), src_mac, up.mac);
    note!(
        cx,
        "ICMP fragmentation needed ({mtu}) sent back out to {src_ip}"
    );
    Exit::Send(up.port, frame)
}

/// Who an ICMP error about this IPv4 frame goes to (its source MAC and IP), if anyone:
/// never about an ICMP error, a fragment past the first or a non-unicast source
/// (RFC 1812 4.3.2.7).
fn error_recipient(data: &[u8]) -> Option<(Mac, Ipv4Addr)> {
    let ip = Ipv4Packet::new_unchecked(&data[ETH_LEN..]);
    let src_ip = ip.src_addr();
    let about_error = ip.protocol_number() == IpProtocol::ICMP
        && !matches!(
            data.get(ETH_LEN + ip.header_len())
                .map(|&t| Icmpv4Message::from(t)),
            Some(Icmpv4Message::EchoRequest | Icmpv4Message::EchoReply)
        );
    if about_error
        || ip.frag_offset() != 0
        || src_ip.is_broadcast()
        || src_ip.is_multicast()
        || src_ip.is_unspecified()
    {
        return None;
    }
    Some((EthernetFrame::new_unchecked(data).src_addr(), src_ip))
}

/// Rewrites an IPv4 frame into `error` about it, from `from` to `to`: the new IPv4 and
/// ICMP headers go in front of the original IP header, which stays where it is with the
/// first 8 bytes of its payload (RFC 792). The Ethernet addresses are left to the
/// caller. False (the frame unchanged or not worth sending) if there is no room.
fn make_icmp_error<F: Frame>(
    frame: &mut F,
    from: Ipv4Addr,
    to: Ipv4Addr,
    error: Icmpv4Repr,
) -> bool {
    let keep = {
        let data = frame.data();
        let ihl = Ipv4Packet::new_unchecked(&data[ETH_LEN..]).header_len();
        (data.len() - ETH_LEN).min(ihl + 8)
    };
    const NEW: usize = IP_LEN + icmp::HEADER_LEN;
    if !frame.prepend(NEW) || !frame.truncate(ETH_LEN + NEW + keep) {
        return false;
    }
    let data = frame.data_mut();
    EthernetFrame::new_unchecked(&mut *data).set_ethertype(ethernet::EtherType::Ipv4);
    Ipv4Repr {
        src_addr: from,
        dst_addr: to,
        protocol: IpProtocol::Icmp,
        payload_len: icmp::HEADER_LEN + keep,
        ttl: OWN_TTL,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]));
    let mut message = Icmpv4Packet::new_unchecked(&mut data[ETH_LEN + IP_LEN..]);
    error.emit(&mut message);
    message.fill_checksum();
    // Built in the place of a frame that may have owed segmentation; this one owes none.
    frame.set_gso_size(0);
    true
}

/// Answers a TCP segment that opens no SNAT session with a reset to its sender, in
/// place, so an application whose connection belonged to a gateway that moved (or to a
/// session that expired) learns it at once instead of retransmitting into nothing.
fn tcp_reset<F: Frame, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    mut frame: F,
    cx: &mut Context<'_, T>,
) -> Exit<F> {
    cx.drop(DropReason::NatNoSession);
    if !cx.router.icmp_allowed(cx.learner.now) {
        return Exit::Done;
    }
    let data = frame.data();
    let ip = Ipv4Packet::new_unchecked(&data[ETH_LEN..]);
    // Only option-less headers: the reset is built in the original's place.
    let ihl = ip.header_len();
    let l4 = ETH_LEN + ihl;
    if ihl != IP_LEN || data.len() < l4 + tcp::MIN_HEADER_LEN {
        return Exit::Done;
    }
    let segment = TcpPacket::new_unchecked(&data[l4..]);
    let flags = segment.flags();
    if flags & tcp::FLAG_RST != 0 {
        return Exit::Done;
    }
    let tcp_len = usize::from(ip.total_len()).saturating_sub(ihl);
    let payload = tcp_len.saturating_sub(segment.header_len()) as u32;
    let syn_fin = u32::from(flags & (tcp::FLAG_SYN | tcp::FLAG_FIN) != 0);
    let (seq, ack) = (segment.seq_number(), segment.ack_number());
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (sport, dport) = (segment.src_port(), segment.dst_port());
    let requester = EthernetFrame::new_unchecked(data).src_addr();
    if !frame.truncate(l4 + tcp::MIN_HEADER_LEN) {
        return Exit::Done;
    }
    let data = frame.data_mut();
    let mut ip = Ipv4Packet::new_unchecked(&mut data[ETH_LEN..]);
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_total_len((IP_LEN + tcp::MIN_HEADER_LEN) as u16);
    ip.set_ttl(OWN_TTL);
    ip.fill_checksum();
    let mut reset = TcpPacket::new_unchecked(&mut data[l4..]);
    reset.set_src_port(dport);
    reset.set_dst_port(sport);
    // RFC 793 reset generation: seq from the segment's ACK if it had one.
    let (rst_seq, rst_ack, rst_flags) = if flags & tcp::FLAG_ACK != 0 {
        (ack, 0, tcp::FLAG_RST)
    } else {
        (
            0,
            seq.wrapping_add(payload + syn_fin),
            tcp::FLAG_RST | tcp::FLAG_ACK,
        )
    };
    reset.set_seq_number(rst_seq);
    reset.set_ack_number(rst_ack);
    reset.set_header_len(tcp::MIN_HEADER_LEN);
    reset.set_flags(rst_flags);
    reset.set_window_len(0);
    reset.set_urgent_at(0);
    reset.fill_checksum(dst, src);
    note!(cx, "TCP segment of no SNAT connection: reset sent back");
    frame.set_gso_size(0);
    let out = resolve_in(tables, tenant, &requester);
    deliver(tables, tenant, requester, out, frame, cx)
}
