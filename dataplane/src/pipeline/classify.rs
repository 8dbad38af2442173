//! The first stage (step 1 of a packet's way, which [`super::dispatch`] runs): a frame
//! is classified to a tenant by the role of the port it came in on (an access port's
//! tenant, a trunk's VLAN, a tunnel's GRE key or inner VLAN), checked (port security,
//! tags, the outer headers), and handed to the switch; the uplink's ARP and the
//! outside's SNAT replies go to the underlay and the router.

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::packet::arp::{ArpOperation, ArpPacket};
use crate::packet::ethernet::{self, EtherType, EthernetFrame, HEADER_LEN as ETH_LEN};
use crate::packet::frame::Frame;
use crate::packet::gre::GrePacket;
use crate::packet::ipv4::{IpProtocol, Ipv4Packet, MIN_HEADER_LEN as IP_LEN};
use crate::packet::vlan::{self, VlanTag, HEADER_LEN as TAG_LEN};
use crate::packet::Mac;
use crate::table::{Design, FlowTables, PortSecurity, TenantIdx, TunnelIdx, NO_TENANT};

use super::ahead::{Ahead, Hashed};
use super::fdb_cache::{FdbCache, TunnelMemo};
use super::stage::{tenant_id, Classified, Context, Ingress, Trace};

#[inline(always)]
pub(super) fn from_access<F: Frame, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    tenant: TenantIdx,
    security: Option<u16>,
    frame: &F,
    cx: &mut Context<'_, T>,
) -> Classified {
    let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
        return cx.stop(DropReason::Malformed);
    };
    if matches!(eth.ethertype(), EtherType::Vlan | EtherType::QinQ) {
        return cx.stop(DropReason::TaggedOnAccess);
    }
    if let Some(rules) = security.and_then(|i| tables.port_security.get(usize::from(i))) {
        if let Err(reason) = check_port_security(rules, &eth) {
            return cx.stop(reason);
        }
    }
    note!(cx, "access port: tenant #{}", tenant_id(tables, tenant));
    Classified::Switch(tenant, Ingress::Port(in_port))
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

#[inline(always)]
pub(super) fn from_trunk<F: Frame, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frame: &F,
    cx: &mut Context<'_, T>,
) -> Classified {
    let tenant = match tagged_tenant(frame.data(), |vid| tables.trunk_tenant(in_port, vid)) {
        Ok(tenant) => tenant,
        Err(reason) => return cx.stop(reason),
    };
    note!(cx, "trunk: VLAN of tenant #{}", tenant_id(tables, tenant));
    Classified::SwitchTagged(tenant, Ingress::Port(in_port))
}

/// The tenant a frame from trunk `in_port` will be switched in if its tag is valid,
/// for prefetching its lookups ahead ([`from_trunk`] decides).
#[inline(always)]
pub(super) fn trunk_tenant_ahead(
    tables: &FlowTables,
    in_port: u16,
    data: &[u8],
) -> Option<TenantIdx> {
    tagged_tenant(data, |vid| tables.trunk_tenant(in_port, vid)).ok()
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

#[inline(always)]
pub(super) fn from_uplink<F: Frame, T: Trace>(
    tables: &FlowTables,
    in_port: u16,
    frame: &mut F,
    cx: &mut Context<'_, T>,
) -> Classified {
    let Some(uplink) = tables.uplink else {
        return cx.stop(DropReason::NoOutput);
    };
    let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
        return cx.stop(DropReason::Malformed);
    };
    let dst = eth.dst_addr();
    if dst != uplink.mac && !ethernet::is_broadcast(&dst) {
        return cx.stop(DropReason::NotForUs);
    }
    match eth.ethertype() {
        EtherType::Arp => underlay_arp(tables, uplink.mac, in_port, frame, cx),
        EtherType::Ipv4 if dst == uplink.mac => gre_decap(tables, uplink.ip, frame, cx),
        _ => cx.stop(DropReason::NotForUs),
    }
}

/// Answers ARP for the underlay IP (and the SNAT and publishing addresses) in place,
/// and tells the control plane about every neighbour that answers.
// Rare (ARP): kept out of line so the uplink's GRE path stays compact.
#[inline(never)]
fn underlay_arp<F: Frame, T: Trace>(
    tables: &FlowTables,
    our_mac: Mac,
    in_port: u16,
    frame: &mut F,
    cx: &mut Context<'_, T>,
) -> Classified {
    let (operation, sender_mac, sender_ip, our_ip) = {
        let data = frame.data();
        let Ok(arp) = ArpPacket::new_checked(&data[ETH_LEN..]) else {
            return cx.stop(DropReason::Malformed);
        };
        let target = arp.target_protocol_addr();
        if !tables.owns_uplink_ip(target) {
            return cx.stop(DropReason::NotForUs);
        }
        (
            arp.operation(),
            arp.sender_hardware_addr(),
            arp.sender_protocol_addr(),
            target,
        )
    };
    if ethernet::is_multicast(&sender_mac) {
        return cx.stop(DropReason::BadSourceMac);
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
            Classified::Send(in_port)
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
            Classified::Done
        }
        _ => cx.stop(DropReason::Malformed),
    }
}

/// The tunnel GRE from `peer` with `key` arrives on, and the tenant the key names (the
/// dedicated design; the shared design's frames name theirs by inner VLAN, `NO_TENANT`
/// here), from the core's cache when it holds the decision; `hashed` gives the cache
/// key of peer and key ([`Hashed::tunnel`]), asked only when the one-entry memo misses.
#[inline(always)]
fn gre_tunnel(
    tables: &FlowTables,
    cache: &mut FdbCache,
    peer: u32,
    key: Option<u32>,
    hashed: impl FnOnce() -> Hashed,
) -> Result<(TunnelIdx, TenantIdx), DropReason> {
    let keyed = tables.design == Design::Dedicated;
    // Only a frame with a key where the design takes one (and without one where it
    // takes none) has a decision to keep.
    let slot = if key.is_some() == keyed {
        match cache.tunnel(peer, key.unwrap_or(0), hashed) {
            Ok(memo) => return Ok((memo.tunnel, memo.tenant)),
            Err(slot) => Some(slot),
        }
    } else {
        None
    };
    let Some(&tunnel) = tables.peer_tunnel.get(&peer) else {
        return Err(DropReason::GreUnknownPeer);
    };
    let tenant = match (tables.design, key) {
        (Design::Dedicated, Some(key)) => match tables.key_tenant.get(&key) {
            Some(&tenant) if tables.tunnel_carries(tunnel, tenant) => tenant,
            _ => return Err(DropReason::GreUnknownKey),
        },
        (Design::Shared, None) => NO_TENANT,
        _ => return Err(DropReason::GreUnknownKey),
    };
    let memo = TunnelMemo {
        peer,
        key: key.unwrap_or(0),
        tunnel,
        tenant,
    };
    if let Some(slot) = slot {
        cache.set_tunnel(slot, memo);
    }
    Ok((tunnel, tenant))
}

/// The tenant whose frames the shared design's tunnels carry tagged `vid`.
#[inline(always)]
fn vlan_tenant(tables: &FlowTables, vid: u16) -> Option<TenantIdx> {
    match tables.vlan_tenant[usize::from(vid)] {
        NO_TENANT => None,
        t => Some(t),
    }
}

/// A GRE frame's peer, key and the frame it carries, for the burst's prefetch pass:
/// only what finding them needs is checked (the decapsulation checks the rest).
#[inline(always)]
fn gre_ahead(data: &[u8]) -> Option<(u32, Option<u32>, &[u8])> {
    let eth = EthernetFrame::new_checked(data).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != IpProtocol::Gre {
        return None;
    }
    let gre = GrePacket::new_checked(ip.payload()).ok()?;
    let inner = data.get(ETH_LEN + ip.header_len() + gre.header_len()..)?;
    Some((u32::from(ip.src_addr()), gre.key(), inner))
}

/// The tenant of a GRE frame received on the uplink and the frame it carries, for the
/// burst's prefetch pass ([`gre_ahead`]); the decision by peer and key is kept in the
/// core's cache, where the decapsulation finds it with the hash kept in `ahead` for
/// the frame at `at`.
#[inline(always)]
pub(super) fn uplink_tenant_ahead<'a>(
    tables: &FlowTables,
    cache: &mut FdbCache,
    ahead: &mut Ahead,
    at: usize,
    data: &'a [u8],
) -> Option<(TenantIdx, &'a [u8])> {
    let Some((peer, key, inner)) = gre_ahead(data) else {
        ahead.keep_tunnel(at, None);
        return None;
    };
    // Hashed only if the memo misses, and then kept for the decapsulation.
    let mut hashed = None;
    let decided = gre_tunnel(tables, cache, peer, key, || {
        *hashed.insert(Hashed::tunnel(tables, peer, key.unwrap_or(0)))
    });
    ahead.keep_tunnel(at, hashed);
    let (_, tenant) = decided.ok()?;
    let tenant = match tables.design {
        Design::Dedicated => tenant,
        Design::Shared => tagged_tenant(inner, |vid| vlan_tenant(tables, vid)).ok()?,
    };
    Some((tenant, inner))
}

/// Terminates GRE from a known peer: checks the outer headers, finds the tenant (by key
/// in the dedicated design, by inner VLAN in the shared one), strips the outer headers.
#[inline(always)]
fn gre_decap<F: Frame, T: Trace>(
    tables: &FlowTables,
    our_ip: Ipv4Addr,
    frame: &mut F,
    cx: &mut Context<'_, T>,
) -> Classified {
    if tables.external.is_some() && !is_gre_to(frame.data(), our_ip) {
        // SNAT return traffic and published ports; GRE to the underlay IP stays here.
        return Classified::FromOutside;
    }
    let decided = {
        let data = frame.data();
        let Ok(ip) = Ipv4Packet::new_checked(&data[ETH_LEN..]) else {
            return cx.stop(DropReason::Ipv4Invalid);
        };
        if !ip.verify_checksum() {
            return cx.stop(DropReason::Ipv4Invalid);
        }
        if ip.dst_addr() != our_ip {
            return cx.stop(DropReason::NotForUs);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return cx.stop(DropReason::Fragment);
        }
        if ip.protocol() != IpProtocol::Gre {
            return cx.stop(DropReason::UplinkNotGre);
        }
        let peer = u32::from(ip.src_addr());
        let Ok(gre) = GrePacket::new_checked(ip.payload()) else {
            return cx.stop(DropReason::GreMalformed);
        };
        if gre.protocol() != EtherType::TransparentEthernetBridging {
            return cx.stop(DropReason::GreMalformed);
        }
        if !gre.verify_checksum() {
            return cx.stop(DropReason::GreBadChecksum);
        }
        let key = gre.key();
        let hashed = || cx.ahead.tunnel(tables, cx.at, peer, key.unwrap_or(0));
        let (tunnel, tenant) = match gre_tunnel(tables, cx.cache, peer, key, hashed) {
            Ok(decided) => decided,
            Err(reason) => return cx.stop(reason),
        };
        let header_len = ip.header_len();
        let outer = ETH_LEN + header_len + gre.header_len();
        let end = ETH_LEN + usize::from(ip.total_len());
        if end < outer + ETH_LEN {
            return cx.stop(DropReason::Malformed);
        }
        (tunnel, tenant, outer, end)
    };
    let (tunnel, mut tenant, outer, end) = decided;
    // Ethernet padding of short frames is not part of the tunnelled frame.
    frame.truncate(end);
    frame.adjust(outer);
    if tables.design == Design::Shared {
        tenant = match tagged_tenant(frame.data(), |vid| vlan_tenant(tables, vid)) {
            Ok(t) if tables.tunnel_carries(tunnel, t) => t,
            Ok(_) => return cx.stop(DropReason::UnknownVlan),
            Err(reason) => return cx.stop(reason),
        };
        vlan::pop_tag(frame);
    }
    note!(
        cx,
        "GRE from tunnel #{tunnel} decapsulated ({outer} bytes), tenant #{}",
        tenant_id(tables, tenant)
    );
    Classified::Switch(tenant, Ingress::Tunnel(tunnel))
}

/// Whether an underlay IPv4 frame is GRE to `ip`, from two header bytes (the checks
/// follow in [`gre_decap`]).
#[inline(always)]
fn is_gre_to(data: &[u8], ip: Ipv4Addr) -> bool {
    data.get(ETH_LEN..ETH_LEN + IP_LEN)
        .map(Ipv4Packet::new_unchecked)
        .is_some_and(|h| h.protocol_number() == IpProtocol::GRE && h.dst_addr() == ip)
}
