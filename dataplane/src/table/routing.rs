//! The tenant routers' part of the flow tables (what [`crate::pipeline::router`]
//! reads): each tenant's gateway addresses and router MAC, its longest-prefix-match
//! routes, the neighbours the router may send to, port publishing (DNAT), and the SNAT
//! settings.
//!
//! Routes live in one hash map keyed by (tenant, prefix length, masked address); a
//! lookup probes only the prefix lengths the tenant uses, longest first. Tenants have a
//! handful of lengths (their subnets, a few static routes), so that is a few probes,
//! and the per-core route cache answers repeated destinations with one.

use std::net::Ipv4Addr;

use super::{FastMap, TenantIdx};
use crate::packet::{mask, Mac};

/// A gateway address of a tenant's router: its IP on one connected subnet, and the
/// subnet's prefix length.
pub type Interface = crate::packet::Ipv4Cidr;

/// A tenant's virtual router as one host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Its MAC (derived from the tenant id unless configured).
    pub mac: Mac,
    /// Gateway addresses, one per connected subnet.
    pub interfaces: Vec<Interface>,
    /// Whether this host holds the gateway. Every host with the tenant answers ARP for
    /// the gateway addresses (the MAC is the same everywhere); only this one routes,
    /// the others send frames for the router MAC to the gateway host.
    pub here: bool,
    /// Source address of SNAT toward the uplink; `None`: no external access.
    pub snat_ip: Option<Ipv4Addr>,
    /// Bit `l` set: the tenant has a route of prefix length `l` (0..=32).
    pub route_lengths: u64,
    /// SNAT connections the tenant may hold on one core.
    pub max_connections: u32,
}

impl Router {
    /// The interface whose subnet holds `ip`, else the first.
    pub fn interface_for(&self, ip: Ipv4Addr) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.contains(ip))
            .or(self.interfaces.first())
    }

    /// Whether `ip` is one of the gateway addresses.
    #[inline(always)]
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.interfaces.iter().any(|i| i.ip == ip)
    }
}

/// Where a route sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// To the destination itself, in `tenant` (a connected subnet, or a peered
    /// tenant's subnet).
    Direct(TenantIdx),
    /// To a next hop in `tenant`.
    Via(TenantIdx, Ipv4Addr),
    /// Out of the uplink, through SNAT.
    External,
}

/// A published container port (`docker run -p`): `external ip:port` ↔ `ip:port` in
/// `tenant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The tenant of the container.
    pub tenant: TenantIdx,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's port.
    pub port: u16,
    /// The address the port is published on.
    pub external_ip: Ipv4Addr,
    /// The published port.
    pub external_port: u16,
}

/// SNAT limits and timeouts, the same on every core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSettings {
    /// Lowest port handed out.
    pub port_min: u16,
    /// Highest port handed out.
    pub port_max: u16,
    /// Seconds an established TCP connection lives idle.
    pub tcp_established_s: u32,
    /// Seconds a TCP connection lives idle while opening or closing.
    pub tcp_transitory_s: u32,
    /// Seconds a UDP mapping lives idle.
    pub udp_s: u32,
    /// Seconds an ICMP echo mapping lives idle.
    pub icmp_s: u32,
}

impl Default for NatSettings {
    fn default() -> Self {
        // VPP NAT44-ED's defaults.
        Self {
            port_min: 1024,
            port_max: 65535,
            tcp_established_s: 7440,
            tcp_transitory_s: 240,
            udp_s: 300,
            icmp_s: 60,
        }
    }
}

/// Where routed traffic leaves for the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalHop {
    /// The next hop's IP on the underlay.
    pub ip: Ipv4Addr,
    /// Its MAC, once resolved.
    pub mac: Option<Mac>,
}

/// Key of a route: tenant, prefix length and the masked address.
#[inline(always)]
pub fn route_key(tenant: TenantIdx, prefix: u8, ip: Ipv4Addr) -> u64 {
    u64::from(tenant) << 40 | u64::from(prefix) << 32 | u64::from(u32::from(ip) & mask(prefix))
}

/// Key of a neighbour: tenant and address.
#[inline(always)]
pub fn neighbor_key(tenant: TenantIdx, ip: Ipv4Addr) -> u64 {
    u64::from(tenant) << 32 | u64::from(u32::from(ip))
}

/// Key of a published port by its outside: protocol, address, port.
#[inline(always)]
pub fn published_key(protocol: u8, ip: Ipv4Addr, port: u16) -> u64 {
    u64::from(protocol) << 48 | u64::from(port) << 32 | u64::from(u32::from(ip))
}

/// Key of a published port by its inside: tenant, protocol, address, port.
#[inline(always)]
pub fn published_inside_key(tenant: TenantIdx, protocol: u8, ip: Ipv4Addr, port: u16) -> u128 {
    u128::from(tenant) << 56
        | u128::from(protocol) << 48
        | u128::from(port) << 32
        | u128::from(u32::from(ip))
}

/// The longest-prefix match of `ip` among `tenant`'s routes (`lengths`: the router's
/// [`Router::route_lengths`]).
#[inline]
pub fn longest_match(
    routes: &FastMap<u64, RouteTarget>,
    tenant: TenantIdx,
    lengths: u64,
    ip: Ipv4Addr,
) -> Option<RouteTarget> {
    let mut left = lengths & ((1u64 << 33) - 1);
    while left != 0 {
        let prefix = 63 - left.leading_zeros() as u8;
        left &= !(1u64 << prefix);
        if let Some(&target) = routes.get(&route_key(tenant, prefix, ip)) {
            return Some(target);
        }
    }
    None
}

/// The router MAC of a tenant that has none configured: locally administered, with the
/// tenant id in the low four bytes, so it is the same on every host.
pub fn router_mac(tenant_id: u32) -> Mac {
    let id = tenant_id.to_be_bytes();
    [0x02, 0x7e, id[0], id[1], id[2], id[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_tenants_stay_apart() {
        let mut routes = FastMap::default();
        let a = 0;
        let b = 1;
        let net = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        routes.insert(route_key(a, 16, net("10.1.0.0")), RouteTarget::Direct(a));
        routes.insert(
            route_key(a, 17, net("10.1.128.0")),
            RouteTarget::Via(a, net("10.2.0.3")),
        );
        routes.insert(route_key(a, 0, net("0.0.0.0")), RouteTarget::External);
        routes.insert(route_key(b, 24, net("10.1.200.0")), RouteTarget::Direct(b));
        let lengths = 1 << 16 | 1 << 17 | 1;
        assert_eq!(
            longest_match(&routes, a, lengths, net("10.1.200.9")),
            Some(RouteTarget::Via(a, net("10.2.0.3")))
        );
        assert_eq!(
            longest_match(&routes, a, lengths, net("10.1.5.9")),
            Some(RouteTarget::Direct(a))
        );
        assert_eq!(
            longest_match(&routes, a, lengths, net("192.0.2.1")),
            Some(RouteTarget::External)
        );
        assert_eq!(
            longest_match(&routes, b, 1 << 24, net("10.1.5.9")),
            None,
            "tenant B has no route to A's subnet"
        );
    }

    #[test]
    fn router_macs_and_interfaces() {
        assert_eq!(router_mac(0x0102_0304), [2, 0x7e, 1, 2, 3, 4]);
        let i = Interface {
            ip: Ipv4Addr::new(10, 1, 0, 1),
            prefix: 24,
        };
        assert!(i.contains(Ipv4Addr::new(10, 1, 0, 77)));
        assert!(!i.contains(Ipv4Addr::new(10, 1, 1, 77)));
    }
}
