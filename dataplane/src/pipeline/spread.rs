//! Tunnelled traffic spread over the workers by its inner flow. A NIC's receive-side
//! scaling hashes the outer headers, so all GRE from one peer host (one address pair,
//! no ports) lands on one queue and one worker, however many containers talk through
//! it. The worker that receives a GRE frame hashes the tunnelled flow instead (the
//! tenant's key, the inner addresses and ports) and hands frames owned by another
//! worker over its ring; they run there as received on the uplink. A flow always hashes
//! to the same worker, so its frames keep their order.

use std::net::Ipv4Addr;

use crate::packet::ethernet::{self, EtherType, EthernetFrame};
use crate::packet::gre::GrePacket;
use crate::packet::ipv4::{IpProtocol, Ipv4Packet, MIN_HEADER_LEN as IP_LEN};
use crate::packet::vlan::{VlanTag, HEADER_LEN as TAG_LEN};

/// Where this worker stands among those that share tunnelled traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    worker: u16,
    workers: u16,
}

impl Spread {
    /// Worker `worker` of `workers`; `None` when there is nobody to share with.
    pub fn new(worker: u16, workers: u16) -> Option<Self> {
        (workers > 1 && worker < workers).then_some(Self { worker, workers })
    }

    /// The other worker that owns a frame received on the uplink: GRE to `our_ip`
    /// whose inner flow hashes there. `None`: this worker's, or not GRE to us (or too
    /// malformed to hash, which the decap stage then counts).
    #[inline(always)]
    pub fn elsewhere(&self, data: &[u8], our_ip: Ipv4Addr) -> Option<u16> {
        let hash = inner_flow_hash(data, our_ip)?;
        let owner = ((u64::from(hash) * u64::from(self.workers)) >> 32) as u16;
        (owner != self.worker).then_some(owner)
    }
}

/// A hash of the flow a GRE frame to `our_ip` carries, the same for both directions:
/// its key (the tenant, in the dedicated design), and the inner IPv4 addresses and
/// TCP/UDP ports, or the inner MACs when it carries no IPv4. Reads only what the decap
/// stage reads after it.
#[inline(always)]
fn inner_flow_hash(data: &[u8], our_ip: Ipv4Addr) -> Option<u32> {
    let eth = EthernetFrame::new_checked(data).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let outer = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if outer.protocol_number() != IpProtocol::GRE || outer.dst_addr() != our_ip {
        return None;
    }
    let gre = GrePacket::new_checked(outer.payload()).ok()?;
    let key = gre.key().unwrap_or(0);
    let inner = EthernetFrame::new_checked(gre.payload()).ok()?;
    let (ethertype, l3) = match inner.ethertype() {
        EtherType::Vlan => {
            let tag = VlanTag::new_checked(inner.payload()).ok()?;
            (tag.ethertype(), inner.payload().get(TAG_LEN..)?)
        }
        other => (other, inner.payload()),
    };
    let flow = match ethertype {
        EtherType::Ipv4 if l3.len() >= IP_LEN => {
            let ip = Ipv4Packet::new_unchecked(l3);
            let addresses = u32::from(ip.src_addr()) ^ u32::from(ip.dst_addr());
            let ports = match ip.protocol_number() {
                IpProtocol::TCP | IpProtocol::UDP if !ip.more_frags() && ip.frag_offset() == 0 => {
                    l3.get(ip.header_len()..ip.header_len() + 4).map_or(0, |p| {
                        u16::from_be_bytes([p[0], p[1]]) ^ u16::from_be_bytes([p[2], p[3]])
                    })
                }
                _ => 0,
            };
            (u64::from(addresses) << 32) | (u64::from(ports) << 8) | u64::from(ip.protocol_number())
        }
        _ => ethernet::mac_u64(&inner.src_addr()) ^ ethernet::mac_u64(&inner.dst_addr()),
    };
    // Multiplicative mixing: the high half depends on every input bit.
    let mixed = (flow ^ (u64::from(key) << 17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Some((mixed >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// GRE (key `key`, or none) to `dst` carrying an Ethernet frame with `inner`
    /// after its MACs (ethertype onwards).
    fn gre(dst: Ipv4Addr, key: Option<u32>, inner_macs: [u8; 12], inner: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let gre_len = if key.is_some() { 8 } else { 4 };
        let total = 20 + gre_len + 12 + inner.len();
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            47,
            0,
            0,
        ]);
        f.extend_from_slice(&[198, 51, 100, 7]);
        f.extend_from_slice(&dst.octets());
        let flags: u16 = if key.is_some() { 0x2000 } else { 0 };
        f.extend_from_slice(&flags.to_be_bytes());
        f.extend_from_slice(&[0x65, 0x58]);
        if let Some(k) = key {
            f.extend_from_slice(&k.to_be_bytes());
        }
        f.extend_from_slice(&inner_macs);
        f.extend_from_slice(inner);
        f
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = vec![0x08, 0x00, 0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        v.extend_from_slice(&src);
        v.extend_from_slice(&dst);
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&[0; 16]);
        v
    }

    const MACS: [u8; 12] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];

    #[test]
    fn flows_from_one_peer_spread_evenly_and_each_stays_on_one_worker() {
        let spreads: Vec<Spread> = (0..4).map(|w| Spread::new(w, 4).unwrap()).collect();
        let mut share = [0usize; 4];
        for port in 0..4000u16 {
            let frame = gre(
                OUR_IP,
                Some(7),
                MACS,
                &tcp([10, 0, 0, 5], [10, 0, 0, 9], 1024 + port, 80),
            );
            // Exactly one worker keeps it; the others all name that one.
            let keepers: Vec<usize> = (0..4)
                .filter(|&w| spreads[w].elsewhere(&frame, OUR_IP).is_none())
                .collect();
            assert_eq!(keepers.len(), 1);
            let owner = keepers[0];
            for (w, spread) in spreads.iter().enumerate() {
                if w != owner {
                    assert_eq!(spread.elsewhere(&frame, OUR_IP), Some(owner as u16));
                }
            }
            share[owner] += 1;
        }
        for (w, &n) in share.iter().enumerate() {
            assert!(
                (800..1200).contains(&n),
                "worker {w} owns {n} of 4000 flows"
            );
        }
    }

    #[test]
    fn both_directions_of_a_flow_hash_alike_and_tenants_apart() {
        let there = gre(
            OUR_IP,
            Some(7),
            MACS,
            &tcp([10, 0, 0, 5], [10, 0, 0, 9], 40000, 80),
        );
        let back = gre(
            OUR_IP,
            Some(7),
            MACS,
            &tcp([10, 0, 0, 9], [10, 0, 0, 5], 80, 40000),
        );
        assert_eq!(
            inner_flow_hash(&there, OUR_IP),
            inner_flow_hash(&back, OUR_IP)
        );
        let other_tenant = gre(
            OUR_IP,
            Some(8),
            MACS,
            &tcp([10, 0, 0, 5], [10, 0, 0, 9], 40000, 80),
        );
        assert_ne!(
            inner_flow_hash(&there, OUR_IP),
            inner_flow_hash(&other_tenant, OUR_IP)
        );
    }

    #[test]
    fn tagged_and_non_ip_inner_frames_hash_and_the_rest_stays_put() {
        let mut tagged_inner = vec![0x81, 0x00, 0x00, 0x05];
        tagged_inner.extend_from_slice(&tcp([10, 0, 0, 5], [10, 0, 0, 9], 40000, 80));
        assert!(inner_flow_hash(&gre(OUR_IP, None, MACS, &tagged_inner), OUR_IP).is_some());
        let arp = [0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1];
        assert!(inner_flow_hash(&gre(OUR_IP, Some(7), MACS, &arp), OUR_IP).is_some());
        // Not to us, not GRE, truncated: the receiving worker keeps them.
        let elsewhere = gre(Ipv4Addr::new(192, 0, 2, 2), Some(7), MACS, &arp);
        assert!(inner_flow_hash(&elsewhere, OUR_IP).is_none());
        let whole = gre(OUR_IP, Some(7), MACS, &arp);
        for len in 0..34 + 8 + 14 {
            assert!(
                inner_flow_hash(&whole[..len], OUR_IP).is_none(),
                "{len} bytes"
            );
        }
        let spread = Spread::new(0, 2).unwrap();
        assert!(Spread::new(0, 1).is_none() && Spread::new(2, 2).is_none());
        for len in 0..whole.len() {
            let _ = spread.elsewhere(&whole[..len], OUR_IP);
        }
    }
}
