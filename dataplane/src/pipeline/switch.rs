//! The tenant pipeline (DESIGN.md "A packet's way", steps 1, 2 and 4): classify a frame
//! to a tenant by the role of the port it came in on, switch it inside that tenant, and
//! hand it to its outputs with the tag or tunnel header the output needs.
//!
//! Generic over [`Frame`] and [`Sink`], so the same code runs on mbufs in a worker and on
//! byte buffers in tests, property tests and fuzzers. It reads one [`FlowTables`]
//! snapshot, allocates nothing, takes no lock and makes no system call; every frame it
//! does not forward is counted under a [`DropReason`].

use std::net::Ipv4Addr;

use crate::counters::{CoreCounters, DropReason};
use crate::packet::arp::{ArpOperation, ArpPacket};
use crate::packet::checksum;
use crate::packet::ethernet::{self, EtherType, EthernetFrame};
use crate::packet::frame::Frame;
use crate::packet::gre::GrePacket;
use crate::packet::ipv4::{IpProtocol, Ipv4Packet};
use crate::packet::vlan::VlanTag;
use crate::packet::{Mac, MacText};
use crate::table::{
    Design, FlowTables, Location, OuterHeader, PortRole, PortSecurity, TenantIdx, TunnelIdx,
    NO_TENANT,
};

use super::events::Learner;
use super::fdb_cache::{FdbCache, Out, TunnelMemo, Unresolved};
use super::router::{self, RouterState};

const ETH_LEN: usize = 14;
const TAG_LEN: usize = 4;
const TPID_8021Q: u16 = 0x8100;

/// The input port id of frames the control plane sends as a tenant's router (ARP
/// requests for its neighbours, gratuitous ARP): no device has it.
pub const CONTROL_PORT: u16 = u16::MAX;

/// The input port id of frames the control plane sends out of the uplink, whichever
/// port that is now (ARP requests for the underlay's next hops).
pub const UNDERLAY_PORT: u16 = u16::MAX - 1;

/// The input port id of frames another core handed over (SNAT replies whose session
/// is here): they run as if received on the uplink, whichever port that is now.
pub const HANDOFF_PORT: u16 = u16::MAX - 2;

/// Where a pipeline sends a frame.
pub trait Sink<F> {
    /// Queues `frame` for transmission on `port`.
    fn send(&mut self, port: u16, frame: F);

    /// Keeps a routed frame until `next_hop` is resolved; gives it back when there is
    /// no room (the caller drops it). Without a hold queue nothing is kept.
    fn park(&mut self, next_hop: Unresolved, frame: F) -> Option<F> {
        let _ = next_hop;
        Some(frame)
    }

    /// Passes `frame` to worker `worker`, which holds its state, to run there as if it
    /// had arrived on the same port; gives it back when there is no way there.
    fn hand_off(&mut self, worker: u16, frame: F) -> Option<F> {
        let _ = worker;
        Some(frame)
    }
}

/// Where a traced run writes its decisions. The untraced pipeline uses [`NoTrace`],
/// whose `ON` is false, so every note compiles away.
pub trait Trace {
    /// Whether notes are taken at all.
    const ON: bool;
    /// Records one decision.
    fn note(&mut self, text: std::fmt::Arguments<'_>);
}

/// No tracing (the dataplane).
pub struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
    #[inline(always)]
    fn note(&mut self, _: std::fmt::Arguments<'_>) {}
}

impl Trace for Vec<String> {
    const ON: bool = true;
    fn note(&mut self, text: std::fmt::Arguments<'_>) {
        self.push(text.to_string());
    }
}

/// What the pipeline needs besides the tables: counters, the slow-path front end, the
/// FDB cache and the tracer.
pub struct Context<'a, T: Trace = NoTrace> {
    /// The core's counters.
    pub counters: &'a CoreCounters,
    /// Learning and neighbour reports.
    pub learner: &'a mut Learner,
    /// The core's FDB cache (cleared by the caller on a new snapshot).
    pub cache: &'a mut FdbCache,
    /// The core's router state (SNAT sessions, ICMP budget).
    pub router: &'a mut RouterState,
    /// Decision recorder.
    pub tracer: T,
}

impl<T: Trace> Context<'_, T> {
    #[inline(always)]
    pub(super) fn drop(&mut self, reason: DropReason) {
        self.counters.add_drop(reason, 1);
        note!(self, "drop: {} ({})", reason.name(), reason.help());
    }
}

/// Where a frame entered the tenant's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ingress {
    /// A local port.
    Port(u16),
    /// A tunnel from another host.
    Tunnel(TunnelIdx),
    /// The tenant's router (routed, or sent by the control plane as the router).
    Router,
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
        CONTROL_PORT => return frames.for_each(|f| router::from_control(tables, f, sink, cx)),
        UNDERLAY_PORT => {
            return match tables.uplink {
                Some(up) => frames.for_each(|f| sink.send(up.port, f)),
                None => frames.for_each(|_| cx.drop(DropReason::NoOutput)),
            }
        }
        HANDOFF_PORT => match tables.uplink {
            Some(up) => up.port,
            None => return frames.for_each(|_| cx.drop(DropReason::NoOutput)),
        },
        port => port,
    };
    note!(cx, "ingress port {in_port}: {:?}", tables.role(in_port));
    match *tables.role(in_port) {
        PortRole::Access { tenant, security } => {
            // Routed frames from a port without per-packet rules may take the router's
            // fast path; traces always see the whole pipeline.
            let router = match tables.router(tenant) {
                Some(r) if r.here && security.is_none() && !T::ON => Some((r, mac_u64(&r.mac))),
                _ => None,
            };
            for frame in frames {
                let frame = match router {
                    Some((r, mac)) => {
                        match router::fast_route(tables, tenant, r, mac, in_port, frame, sink, cx) {
                            Some(frame) => frame,
                            None => continue,
                        }
                    }
                    None => frame,
                };
                from_access(tables, in_port, tenant, security, frame, sink, cx);
            }
        }
        PortRole::Trunk => frames.for_each(|f| from_trunk(tables, in_port, f, sink, cx)),
        PortRole::Uplink => frames.for_each(|f| from_uplink(tables, in_port, f, sink, cx)),
        PortRole::CrossConnect(peer) => frames.for_each(|f| sink.send(peer, f)),
        PortRole::Unused => frames.for_each(|_| cx.drop(DropReason::NoOutput)),
    }
}

fn from_access<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    tenant: TenantIdx,
    security: Option<u16>,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
        return cx.drop(DropReason::Malformed);
    };
    if matches!(eth.ethertype(), EtherType::Vlan | EtherType::QinQ) {
        return cx.drop(DropReason::TaggedOnAccess);
    }
    if let Some(rules) = security.and_then(|i| tables.port_security.get(usize::from(i))) {
        if let Err(reason) = check_port_security(rules, &eth) {
            return cx.drop(reason);
        }
    }
    note!(cx, "access port: tenant {}", tenant_id(tables, tenant));
    switch(tables, tenant, Ingress::Port(in_port), frame, sink, cx);
}

/// A tenant's id for trace notes.
pub(super) fn tenant_id(tables: &FlowTables, tenant: TenantIdx) -> u32 {
    tables.tenant(tenant).map_or(u32::MAX, |t| t.id)
}

/// A container may only send as the MAC and IPs its port allows, ARP included.
fn check_port_security(rules: &PortSecurity, eth: &EthernetFrame<&[u8]>) -> Result<(), DropReason> {
    if !rules.macs.is_empty() && !rules.macs.contains(&eth.src_addr()) {
        return Err(DropReason::PortSecurityMac);
    }
    if rules.ips.is_empty() {
        return Ok(());
    }
    let allowed = |ip: Ipv4Addr| rules.ips.contains(&ip);
    match eth.ethertype() {
        EtherType::Ipv4 => match Ipv4Packet::new_checked(eth.payload()) {
            Ok(ip) if allowed(ip.src_addr()) => Ok(()),
            Ok(_) => Err(DropReason::PortSecurityIp),
            Err(_) => Err(DropReason::Malformed),
        },
        EtherType::Arp => match ArpPacket::new_checked(eth.payload()) {
            Ok(arp)
                if allowed(arp.sender_protocol_addr())
                    && arp.sender_hardware_addr() == eth.src_addr() =>
            {
                Ok(())
            }
            Ok(_) => Err(DropReason::PortSecurityIp),
            Err(_) => Err(DropReason::Malformed),
        },
        // With IP security on, nothing but IPv4 and ARP may leave the container.
        _ => Err(DropReason::PortSecurityIp),
    }
}

fn from_trunk<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let tenant = match tagged_tenant(frame.data(), |vid| tables.trunk_tenant(in_port, vid)) {
        Ok(tenant) => tenant,
        Err(reason) => return cx.drop(reason),
    };
    note!(
        cx,
        "trunk: VLAN tag removed, tenant {}",
        tenant_id(tables, tenant)
    );
    pop_vlan(&mut frame);
    switch(tables, tenant, Ingress::Port(in_port), frame, sink, cx);
}

/// The tenant of an 802.1Q-tagged frame; refuses untagged, 802.1ad and double tags.
#[inline(always)]
fn tagged_tenant(
    data: &[u8],
    tenant_of: impl Fn(u16) -> Option<TenantIdx>,
) -> Result<TenantIdx, DropReason> {
    let eth = EthernetFrame::new_checked(data).map_err(|_| DropReason::Malformed)?;
    match eth.ethertype() {
        EtherType::Vlan => {}
        EtherType::QinQ => return Err(DropReason::DoubleTagged),
        _ => return Err(DropReason::UntaggedOnTrunk),
    }
    let tag = VlanTag::new_checked(eth.payload()).map_err(|_| DropReason::Malformed)?;
    if matches!(tag.ethertype(), EtherType::Vlan | EtherType::QinQ) {
        return Err(DropReason::DoubleTagged);
    }
    if data.len() < ETH_LEN + TAG_LEN {
        return Err(DropReason::Malformed);
    }
    tenant_of(tag.vid()).ok_or(DropReason::UnknownVlan)
}

fn from_uplink<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let Some(uplink) = tables.uplink else {
        return cx.drop(DropReason::NoOutput);
    };
    let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
        return cx.drop(DropReason::Malformed);
    };
    let dst = eth.dst_addr();
    if dst != uplink.mac && !ethernet::is_broadcast(&dst) {
        return cx.drop(DropReason::NotForUs);
    }
    match eth.ethertype() {
        EtherType::Arp => underlay_arp(tables, uplink.mac, in_port, frame, sink, cx),
        EtherType::Ipv4 if dst == uplink.mac => gre_decap(tables, uplink.ip, frame, sink, cx),
        _ => cx.drop(DropReason::NotForUs),
    }
}

/// Answers ARP for the underlay IP (and the SNAT and publishing addresses) in place,
/// and tells the control plane about every neighbour that answers.
fn underlay_arp<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    our_mac: Mac,
    in_port: u16,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let (operation, sender_mac, sender_ip, our_ip) = {
        let data = frame.data();
        let Ok(arp) = ArpPacket::new_checked(&data[ETH_LEN..]) else {
            return cx.drop(DropReason::Malformed);
        };
        let target = arp.target_protocol_addr();
        if !tables.owns_uplink_ip(target) {
            return cx.drop(DropReason::NotForUs);
        }
        (
            arp.operation(),
            arp.sender_hardware_addr(),
            arp.sender_protocol_addr(),
            target,
        )
    };
    if ethernet::is_multicast(&sender_mac) {
        return cx.drop(DropReason::BadSourceMac);
    }
    match operation {
        ArpOperation::Request => {
            let data = frame.data_mut();
            let mut eth = EthernetFrame::new_unchecked(&mut *data);
            eth.set_dst_addr(sender_mac);
            eth.set_src_addr(our_mac);
            let mut arp = ArpPacket::new_unchecked(&mut data[ETH_LEN..]);
            arp.set_operation(ArpOperation::Reply);
            arp.set_target_hardware_addr(sender_mac);
            arp.set_target_protocol_addr(sender_ip);
            arp.set_sender_hardware_addr(our_mac);
            arp.set_sender_protocol_addr(our_ip);
            note!(
                cx,
                "ARP request for our underlay IP {our_ip}: answered in place"
            );
            sink.send(in_port, frame);
        }
        // Only replies are reported (and only answers to our own requests count
        // there): a request teaches nothing, so nobody moves a tunnel by asking.
        ArpOperation::Reply => {
            cx.learner.neighbor(sender_ip, sender_mac, cx.counters);
            note!(
                cx,
                "ARP reply from {sender_ip}: neighbour reported to the control plane"
            );
            cx.counters.add_punted();
        }
        _ => cx.drop(DropReason::Malformed),
    }
}

/// Terminates GRE from a known peer: checks the outer headers, finds the tenant (by key
/// in the dedicated design, by inner VLAN in the shared one), strips the outer headers.
fn gre_decap<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    our_ip: Ipv4Addr,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    if tables.external.is_some() && !is_gre_to(frame.data(), our_ip) {
        // SNAT return traffic and published ports; GRE to the underlay IP stays here.
        return router::from_outside(tables, frame, sink, cx);
    }
    let decided = {
        let data = frame.data();
        let Ok(ip) = Ipv4Packet::new_checked(&data[ETH_LEN..]) else {
            return cx.drop(DropReason::Ipv4Invalid);
        };
        if !ip.verify_checksum() {
            return cx.drop(DropReason::Ipv4Invalid);
        }
        if ip.dst_addr() != our_ip {
            return cx.drop(DropReason::NotForUs);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return cx.drop(DropReason::Fragment);
        }
        if ip.protocol() != IpProtocol::Gre {
            return cx.drop(DropReason::UplinkNotGre);
        }
        let peer = u32::from(ip.src_addr());
        let Ok(gre) = GrePacket::new_checked(ip.payload()) else {
            return cx.drop(DropReason::GreMalformed);
        };
        if gre.protocol() != EtherType::TransparentEthernetBridging {
            return cx.drop(DropReason::GreMalformed);
        }
        if !gre.verify_checksum() {
            return cx.drop(DropReason::GreBadChecksum);
        }
        let key = gre.key();
        let (tunnel, tenant) = match cx.cache.tunnel(peer, key.unwrap_or(0)) {
            Some(memo) if key.is_some() == (tables.design == Design::Dedicated) => {
                (memo.tunnel, memo.tenant)
            }
            _ => {
                let Some(&tunnel) = tables.peer_tunnel.get(&peer) else {
                    return cx.drop(DropReason::GreUnknownPeer);
                };
                let tenant = match (tables.design, key) {
                    (Design::Dedicated, Some(key)) => match tables.key_tenant.get(&key) {
                        Some(&tenant) if tables.tunnel_carries(tunnel, tenant) => tenant,
                        _ => return cx.drop(DropReason::GreUnknownKey),
                    },
                    (Design::Shared, None) => NO_TENANT,
                    _ => return cx.drop(DropReason::GreUnknownKey),
                };
                cx.cache.set_tunnel(TunnelMemo {
                    peer,
                    key: key.unwrap_or(0),
                    tunnel,
                    tenant,
                });
                (tunnel, tenant)
            }
        };
        let header_len = ip.header_len();
        let outer = ETH_LEN + header_len + gre.header_len();
        let end = ETH_LEN + usize::from(ip.total_len());
        if end < outer + ETH_LEN {
            return cx.drop(DropReason::Malformed);
        }
        (tunnel, tenant, outer, end)
    };
    let (tunnel, mut tenant, outer, end) = decided;
    // Ethernet padding of short frames is not part of the tunnelled frame.
    frame.truncate(end);
    frame.adjust(outer);
    if tables.design == Design::Shared {
        tenant = match tagged_tenant(frame.data(), |vid| {
            match tables.vlan_tenant[usize::from(vid)] {
                NO_TENANT => None,
                t => Some(t),
            }
        }) {
            Ok(t) if tables.tunnel_carries(tunnel, t) => t,
            Ok(_) => return cx.drop(DropReason::UnknownVlan),
            Err(reason) => return cx.drop(reason),
        };
        pop_vlan(&mut frame);
    }
    note!(
        cx,
        "GRE from tunnel {tunnel} decapsulated ({outer} bytes), tenant {}",
        tenant_id(tables, tenant)
    );
    switch(tables, tenant, Ingress::Tunnel(tunnel), frame, sink, cx);
}

/// Whether an underlay IPv4 frame is GRE to `ip`, from two header bytes (the checks
/// follow in [`gre_decap`]).
#[inline(always)]
fn is_gre_to(data: &[u8], ip: Ipv4Addr) -> bool {
    data.get(ETH_LEN + 9) == Some(&47)
        && data.get(ETH_LEN + 16..ETH_LEN + 20) == Some(&ip.octets()[..])
}

/// Switches a frame inside `tenant`: learns its source, then unicasts or floods it.
#[inline(always)]
fn switch<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    ingress: Ingress,
    mut frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    let (dst, src) = {
        let data = frame.data();
        let (Some(head), Some(mid)) = (data.get(..8), data.get(4..12)) else {
            return cx.drop(DropReason::Malformed);
        };
        if data.len() < ETH_LEN {
            return cx.drop(DropReason::Malformed);
        }
        // Both MACs as integers, from two overlapping 8-byte loads.
        let head = u64::from_be_bytes(head.try_into().unwrap_or([0; 8]));
        let mid = u64::from_be_bytes(mid.try_into().unwrap_or([0; 8]));
        (head >> 16, mid & MAC_MASK)
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
            if frame.data().get(12..14) == Some(&[0x08, 0x06]) {
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
    output(tables, tenant, ingress, out, frame, sink, cx);
}

/// Sends a frame of `tenant` that entered at `ingress` the way `out` says.
#[inline(always)]
pub(super) fn output<F: Frame, S: Sink<F>, T: Trace>(
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
            if !push_vlan(&mut frame, vid) {
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
        Out::Route if ingress == Ingress::Router => cx.drop(DropReason::NotRoutable),
        Out::Route => router::route(tables, tenant, ingress, frame, sink, cx),
    }
}

/// Back where a frame came from (a port, tagged if a trunk, or its tunnel).
pub(super) fn to_ingress<F: Frame, S: Sink<F>, T: Trace>(
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

/// How a frame to `mac` in `tenant` leaves, without the cache (routed frames cache
/// the whole decision themselves).
pub(super) fn resolve_in(tables: &FlowTables, tenant: TenantIdx, mac: &Mac) -> Out {
    resolve(tables, tenant, tables.lookup(tenant, mac).copied())
}

/// Floods a frame the router sends in `tenant` (to every local port and tunnel).
pub(super) fn flood_from_router<F: Frame, S: Sink<F>, T: Trace>(
    tables: &FlowTables,
    tenant: TenantIdx,
    frame: F,
    sink: &mut S,
    cx: &mut Context<'_, T>,
) {
    flood(tables, tenant, Ingress::Router, frame, sink, cx);
}

const MAC_MASK: u64 = 0xffff_ffff_ffff;
/// The I/G bit of a MAC held in the low 48 bits of a u64.
const GROUP_BIT: u64 = 1 << 40;

/// A MAC as the low 48 bits of an integer, as [`switch`] compares them.
fn mac_u64(mac: &Mac) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

fn mac_bytes(mac: u64) -> Mac {
    let b = mac.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// What a frame to a destination with FDB entry `entry` in `tenant` needs.
fn resolve(tables: &FlowTables, tenant: TenantIdx, entry: Option<crate::table::FdbEntry>) -> Out {
    let Some(entry) = entry else {
        return Out::Flood;
    };
    match entry.location {
        Location::Router => Out::Route,
        Location::Port(port) => port_out(tables, tenant, port),
        Location::Host(host) => {
            match tables.host_tunnel.get(usize::from(host)).copied().flatten() {
                Some(tunnel) => Out::Tunnel(tunnel),
                None => Out::Drop(DropReason::NoOutput),
            }
        }
    }
}

/// How a frame of `tenant` leaves `port`: as is on an access port of that tenant,
/// tagged on a trunk carrying it, nowhere else. The check is the last word on
/// isolation: whatever an FDB entry says (a MAC learned on a port whose id a
/// later port of another tenant took), a frame never leaves through another tenant's
/// port.
fn port_out(tables: &FlowTables, tenant: TenantIdx, port: u16) -> Out {
    match tables.role(port) {
        PortRole::Access { tenant: owner, .. } if *owner == tenant => Out::Port(port),
        PortRole::Access { .. } => Out::Drop(DropReason::ForeignPort),
        PortRole::Trunk => match tables.tenant(tenant).and_then(|t| t.vlan) {
            Some(vid) if tables.trunk_tenant(port, vid) == Some(tenant) => {
                Out::TaggedPort(port, vid)
            }
            _ => Out::Drop(DropReason::UnknownVlan),
        },
        _ => Out::Drop(DropReason::NoOutput),
    }
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

/// Tunnel-to-tunnel forwarding: only the shared design's hub relays between spokes; a
/// dedicated mesh never does (split horizon).
#[inline(always)]
fn relays(tables: &FlowTables, from: TunnelIdx, to: TunnelIdx) -> bool {
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
fn flood<F: Frame, S: Sink<F>, T: Trace>(
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
        "flood in tenant {} to {count} outputs",
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
            if !push_vlan(&mut frame, vid) {
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
        if !push_vlan(&mut frame, vid) {
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
    const UNKEYED: usize = OuterHeader::MAX_LEN - 4;
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
        "GRE encapsulated toward {} on tunnel {tunnel}",
        tables.tunnels[usize::from(tunnel)].remote_ip
    );
    sink.send(uplink.port, frame);
}

/// Inserts an 802.1Q tag (PCP 0) after the MACs.
#[inline(always)]
fn push_vlan<F: Frame>(frame: &mut F, vid: u16) -> bool {
    if !frame.prepend(TAG_LEN) {
        return false;
    }
    let data = frame.data_mut();
    // A fixed-size copy through a register-sized temporary inlines; copy_within of 12
    // bytes is a memmove call.
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&data[TAG_LEN..TAG_LEN + 12]);
    data[..12].copy_from_slice(&macs);
    data[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
    data[14..16].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
    true
}

/// Removes the 802.1Q tag after the MACs (the caller checked it is there).
#[inline(always)]
fn pop_vlan<F: Frame>(frame: &mut F) {
    let data = frame.data_mut();
    let mut macs = [0u8; 12];
    macs.copy_from_slice(&data[..12]);
    data[TAG_LEN..TAG_LEN + 12].copy_from_slice(&macs);
    frame.adjust(TAG_LEN);
}
