//! The compiled flow tables: an immutable snapshot of everything the pipeline needs to
//! decide a packet's way, built by the control plane and published RCU-style (see
//! [`publish`]). A worker reads one snapshot for a whole burst; nothing in here changes
//! while a worker holds it.

pub mod builder;
pub mod edit;
pub mod key_index;
pub mod publish;
pub mod routing;

use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use crate::packet::ethernet::{self, EtherType, EthernetFrame, EthernetRepr};
use crate::packet::gre::{self, GrePacket, GreRepr};
use crate::packet::ipv4::{self, IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::packet::{vlan, Mac};
use crate::MAX_PORTS;
use routing::{ExternalHop, NatSettings, Published, RouteTarget, Router};

/// Which Docklet design the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Design {
    /// Tenants are VLANs on one fabric; a star of un-keyed GRE tunnels to the egress
    /// host carries 802.1Q-tagged frames; the egress host relays between spokes.
    Shared,
    /// Each tenant its own network: GRE key = tenant id, tunnels only between hosts
    /// where the tenant lives, split horizon between tunnels.
    #[default]
    Dedicated,
}

/// A tenant's slot in this host's tables (not its id). The control plane gives each
/// tenant a slot for as long as it lives on this host and hands a freed slot out again
/// only after every worker has moved past the tables that used it and dropped the
/// state that named it (see [`FlowTables::retired`]). Slots run below [`NO_TENANT`]:
/// 17 bits, what a MAC leaves of an FDB key (see [`fdb_key`]).
pub type TenantIdx = u32;
/// Index into [`FlowTables::tunnels`].
pub type TunnelIdx = u16;
/// A host's slot, stable while the host is in the cluster (like [`TenantIdx`]).
pub type HostIdx = u16;

/// What a port is for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PortRole {
    /// Not switched (unknown port, or one being attached).
    #[default]
    Unused,
    /// Static cross-connect: everything goes to the peer port, untouched.
    CrossConnect(u16),
    /// One tenant, untagged. `security` indexes [`FlowTables::port_security`].
    Access {
        /// Its tenant.
        tenant: TenantIdx,
        /// Port security rules, if any.
        security: Option<u16>,
    },
    /// 802.1Q-tagged; the VLAN picks the tenant (see [`FlowTables::trunk_vlans`]).
    Trunk,
    /// The host's underlay: GRE tunnels and ARP for the underlay IP.
    Uplink,
}

/// Where a MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Behind a local port.
    Port(u16),
    /// Behind another host.
    Host(HostIdx),
    /// The tenant's router, on this host.
    Router,
}

/// The FDB: (tenant, MAC) keys ([`fdb_key`]) to entries, slots a burst can prefetch.
pub type Fdb = key_index::KeyIndex<u64, FdbEntry>;

/// The seed of every FDB of the process: a key hashes the same in every snapshot, so
/// what a core keeps by hash across snapshots (the learner's memo) stays where it is
/// looked for.
fn fdb_seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(key_index::random_seed)
}

/// No VLAN: 802.1Q's reserved 4095 never names a tenant.
const NO_VLAN: u16 = 0x0fff;

/// One forwarding entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// Where the MAC is.
    pub location: Location,
    /// Installed by the control plane for a known endpoint; learning never moves it and
    /// frames claiming its MAC from elsewhere are dropped.
    pub is_static: bool,
}

/// Port security of an access port: what a container may claim to be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortSecurity {
    /// Allowed source MACs (empty: any unicast MAC).
    pub macs: Vec<Mac>,
    /// Allowed source IPv4 addresses, also as ARP sender (empty: any).
    pub ips: Vec<Ipv4Addr>,
}

/// A tenant as the dataplane sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTable {
    /// The tenant id (GRE key in the dedicated design).
    pub id: u32,
    /// Its VLAN (shared design, and on trunks).
    pub vlan: Option<u16>,
    /// Local ports flooded to: access ports of the tenant and trunks carrying it.
    pub flood_ports: Vec<u16>,
    /// Tunnels flooded to from a local port.
    pub tunnels: Vec<TunnelIdx>,
    /// Its gateway, if it has one.
    pub router: Option<Router>,
}

/// A GRE tunnel to another host, with its outer headers prebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// The host at the other end.
    pub host: HostIdx,
    /// Its underlay IP.
    pub remote_ip: Ipv4Addr,
    /// Outer Ethernet + IPv4 + GRE headers; IPv4 total length and checksum are patched
    /// per packet, the key per tenant. `None` until the next hop's MAC is known.
    pub header: Option<OuterHeader>,
}

/// The GRE header of a dedicated design's tunnel (the longest tenet sends).
const GRE_KEYED: GreRepr = GreRepr {
    protocol: EtherType::TransparentEthernetBridging,
    checksum: false,
    key: Some(0),
    seq: None,
};

/// Bytes a dedicated design's tunnel adds around a tenant's IPv4 packet: outer IPv4,
/// keyed GRE, inner Ethernet.
const TUNNEL_OVERHEAD_KEYED: usize = OuterHeader::MAX_LEN;
/// The same for the shared design: outer IPv4, GRE without a key, inner Ethernet with
/// the tenant's VLAN tag.
const TUNNEL_OVERHEAD_TAGGED: usize = OuterHeader::UNKEYED_LEN + vlan::HEADER_LEN;

/// Prebuilt outer headers of a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    /// Ethernet (14) + IPv4 (20) + GRE (4, or 8 with a key).
    pub bytes: [u8; OuterHeader::MAX_LEN],
    /// Bytes used.
    pub len: u8,
    /// IPv4 header checksum computed with total length 0.
    pub checksum_base: u16,
}

impl OuterHeader {
    /// Largest outer header: Ethernet + IPv4 + GRE with key.
    pub const MAX_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + GRE_KEYED.buffer_len();
    /// Outer header without a GRE key (the shared design's).
    pub const UNKEYED_LEN: usize =
        ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + gre::MIN_HEADER_LEN;
    /// Offset of the IPv4 total length field.
    pub const IP_TOTAL_LEN: usize = ethernet::HEADER_LEN + ipv4::field::LENGTH.start;
    /// Offset of the IPv4 header checksum.
    pub const IP_CHECKSUM: usize = ethernet::HEADER_LEN + ipv4::field::CHECKSUM.start;
    /// Offset of the GRE key, when present (the header has no checksum field).
    pub const GRE_KEY: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + gre::field::OPTIONAL;

    /// Builds the outer headers of a tunnel from `src` to `dst` (MAC and IP), with a key
    /// field when `keyed` (written per packet). Total length and checksum are patched per
    /// packet from `checksum_base`.
    pub fn build(
        src_mac: Mac,
        dst_mac: Mac,
        src_ip: Ipv4Addr,
        dst_ip: Ipv4Addr,
        ttl: u8,
        dont_fragment: bool,
        keyed: bool,
    ) -> Self {
        let mut b = [0u8; Self::MAX_LEN];
        EthernetRepr {
            src_addr: src_mac,
            dst_addr: dst_mac,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut b[..]));
        let (ip_bytes, gre_bytes) = b[ethernet::HEADER_LEN..].split_at_mut(ipv4::MIN_HEADER_LEN);
        let mut ip = Ipv4Packet::new_unchecked(ip_bytes);
        Ipv4Repr {
            src_addr: src_ip,
            dst_addr: dst_ip,
            protocol: IpProtocol::Gre,
            payload_len: 0,
            ttl,
            dscp_ecn: 0,
            ident: 0,
            dont_frag: dont_fragment,
        }
        .emit(&mut ip);
        // The base the per-packet checksum is patched from: total length 0, and the
        // stored checksum 0 (both written per packet).
        ip.set_total_len(0);
        ip.fill_checksum();
        let checksum_base = ip.checksum();
        ip.set_checksum(0);
        let gre = GreRepr {
            protocol: EtherType::TransparentEthernetBridging,
            checksum: false,
            key: keyed.then_some(0),
            seq: None,
        };
        gre.emit(&mut GrePacket::new_unchecked(gre_bytes));
        Self {
            bytes: b,
            len: (ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + gre.buffer_len()) as u8,
            checksum_base,
        }
    }
}

/// The uplink: the host's own underlay identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// Port id.
    pub port: u16,
    /// Our underlay MAC.
    pub mac: Mac,
    /// Our underlay IP.
    pub ip: Ipv4Addr,
}

/// Sentinel for "no tenant" in [`FlowTables::vlan_tenant`], and the largest slot
/// value: tenants take slots `0..NO_TENANT` (131,071 on one host).
pub const NO_TENANT: TenantIdx = (1 << 17) - 1;

/// Everything the pipeline reads, as one immutable value.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowTables {
    /// Cluster design.
    pub design: Design,
    /// Whether this host is the shared design's egress host (the star's hub).
    pub is_hub: bool,
    /// Role of each port id.
    pub ports: Vec<PortRole>,
    /// The largest IPv4 packet each port id sends (its MTU); `u16::MAX` where the
    /// device reports none.
    pub port_mtu: Vec<u16>,
    /// Port security rule sets.
    pub port_security: Vec<PortSecurity>,
    /// Tenants by slot; `None` where no tenant lives (a slot freed or not yet used).
    pub tenants: Vec<Option<TenantTable>>,
    /// Each slot's VLAN ([`NO_VLAN`] if none), beside `tenants`: a frame out of a trunk
    /// reads two bytes of a dense array, not a tenant's table (a cache miss apiece
    /// when thousands of tenants send).
    tenant_vlans: Vec<u16>,
    /// VLAN id → tenant (shared design tunnels and trunks), [`NO_TENANT`] if none.
    pub vlan_tenant: Vec<TenantIdx>,
    /// For each trunk port id, a 4096-bit set of the VLANs it carries.
    pub trunk_vlans: Vec<Option<Box<[u64; 64]>>>,
    /// GRE key → tenant (dedicated design).
    pub key_tenant: FastMap<u32, TenantIdx>,
    /// (tenant, MAC) → entry; see [`fdb_key`].
    pub fdb: Fdb,
    /// Tunnels by index.
    pub tunnels: Vec<Tunnel>,
    /// Host → the tunnel that reaches it (a spoke reaches every host through the hub).
    pub host_tunnel: Vec<Option<TunnelIdx>>,
    /// Underlay IP of a peer → the tunnel GRE from it arrives on.
    pub peer_tunnel: FastMap<u32, TunnelIdx>,
    /// Tenants each tunnel may carry (dedicated: hosts sharing the tenant), as
    /// `(tunnel, tenant)` pairs packed by [`tunnel_tenant_key`].
    pub tunnel_tenants: FastMap<u64, ()>,
    /// The underlay, if this host has one.
    pub uplink: Option<Uplink>,
    /// Ports being captured: workers copy what they send and
    /// receive there to the control plane.
    pub capture: crate::port_set::PortSet,
    /// Which of those frames are copied.
    pub capture_filter: crate::pipeline::capture::CaptureFilter,
    /// Routes of every tenant; see [`routing::route_key`].
    pub routes: FastMap<u64, RouteTarget>,
    /// Neighbours of the routers (endpoints and answers to the routers' ARP); see
    /// [`routing::neighbor_key`].
    pub neighbors: FastMap<u64, Mac>,
    /// Router MAC → tenant, for frames the control plane sends as a router.
    pub router_tenant: FastMap<u64, TenantIdx>,
    /// Published ports by outside (protocol, address, port); see
    /// [`routing::published_key`].
    pub published: FastMap<u64, Published>,
    /// Published ports by inside; see [`routing::published_inside_key`].
    pub published_inside: FastMap<u128, Published>,
    /// Addresses besides the underlay IP this host answers for on the uplink (SNAT
    /// and publishing addresses).
    pub uplink_ips: Vec<Ipv4Addr>,
    /// Next hop of traffic to the outside world.
    pub external: Option<ExternalHop>,
    /// SNAT limits and timeouts.
    pub nat: NatSettings,
    /// Grows whenever a tenant, a port or a gateway left this host's tables since the
    /// previous snapshot: a worker that sees it change drops the per-core state naming
    /// what is gone (SNAT sessions, held frames, learning memos) before it forwards
    /// with the new tables.
    pub retired: u64,
}

impl Default for FlowTables {
    fn default() -> Self {
        Self {
            design: Design::default(),
            is_hub: false,
            ports: vec![PortRole::Unused; MAX_PORTS],
            port_mtu: vec![u16::MAX; MAX_PORTS],
            port_security: Vec::new(),
            tenants: Vec::new(),
            tenant_vlans: Vec::new(),
            vlan_tenant: vec![NO_TENANT; 4096],
            trunk_vlans: vec![None; MAX_PORTS],
            key_tenant: FastMap::default(),
            fdb: Fdb::growing_with_seed(fdb_seed()),
            tunnels: Vec::new(),
            host_tunnel: Vec::new(),
            peer_tunnel: FastMap::default(),
            tunnel_tenants: FastMap::default(),
            uplink: None,
            capture: crate::port_set::PortSet::EMPTY,
            capture_filter: crate::pipeline::capture::CaptureFilter::ANY,
            routes: FastMap::default(),
            neighbors: FastMap::default(),
            router_tenant: FastMap::default(),
            published: FastMap::default(),
            published_inside: FastMap::default(),
            uplink_ips: Vec::new(),
            external: None,
            nat: NatSettings::default(),
            retired: 0,
        }
    }
}

impl FlowTables {
    /// The role of a port id.
    #[inline(always)]
    pub fn role(&self, port: u16) -> &PortRole {
        self.ports
            .get(usize::from(port))
            .unwrap_or(&PortRole::Unused)
    }

    /// The largest IPv4 packet `port` sends.
    #[inline(always)]
    pub fn port_mtu(&self, port: u16) -> u16 {
        self.port_mtu
            .get(usize::from(port))
            .copied()
            .unwrap_or(u16::MAX)
    }

    /// The largest IPv4 packet of a tenant that a tunnel carries: the uplink's MTU less
    /// the outer IPv4 and GRE headers and the inner Ethernet header (and, in the shared
    /// design, the tenant's VLAN tag inside).
    #[inline(always)]
    pub fn tunnel_mtu(&self) -> u16 {
        let Some(up) = self.uplink else {
            return u16::MAX;
        };
        let inner = match self.design {
            Design::Dedicated => TUNNEL_OVERHEAD_KEYED,
            Design::Shared => TUNNEL_OVERHEAD_TAGGED,
        };
        self.port_mtu(up.port).saturating_sub(inner as u16)
    }

    /// The tenant a trunk port's VLAN maps to, if the trunk carries it.
    #[inline(always)]
    pub fn trunk_tenant(&self, port: u16, vid: u16) -> Option<TenantIdx> {
        let set = self.trunk_vlans.get(usize::from(port))?.as_ref()?;
        let vid = usize::from(vid & 0x0fff);
        if set[vid / 64] & (1 << (vid % 64)) == 0 {
            return None;
        }
        match self.vlan_tenant[vid] {
            NO_TENANT => None,
            t => Some(t),
        }
    }

    /// Whether `tunnel` may carry `tenant`.
    #[inline(always)]
    pub fn tunnel_carries(&self, tunnel: TunnelIdx, tenant: TenantIdx) -> bool {
        self.tunnel_tenants
            .contains_key(&tunnel_tenant_key(tunnel, tenant))
    }

    /// The tenant in `slot`, if one lives there.
    #[inline(always)]
    pub fn tenant(&self, slot: TenantIdx) -> Option<&TenantTable> {
        self.tenants.get(slot as usize)?.as_ref()
    }

    /// The VLAN of the tenant in `slot`, if it has one.
    #[inline(always)]
    pub fn tenant_vlan(&self, slot: TenantIdx) -> Option<u16> {
        match self.tenant_vlans.get(slot as usize) {
            Some(&NO_VLAN) | None => None,
            Some(&vid) => Some(vid),
        }
    }

    /// Puts `table` in `slot` (`None` frees it); the list ends at the last slot in use.
    pub fn set_tenant(&mut self, slot: TenantIdx, table: Option<TenantTable>) {
        let at = slot as usize;
        if self.tenants.len() <= at {
            self.tenants.resize(at + 1, None);
            self.tenant_vlans.resize(at + 1, NO_VLAN);
        }
        self.tenant_vlans[at] = table.as_ref().and_then(|t| t.vlan).unwrap_or(NO_VLAN);
        self.tenants[at] = table;
        while self.tenants.last().is_some_and(Option::is_none) {
            self.tenants.pop();
            self.tenant_vlans.pop();
        }
    }

    /// The router of a tenant.
    #[inline(always)]
    pub fn router(&self, tenant: TenantIdx) -> Option<&Router> {
        self.tenant(tenant)?.router.as_ref()
    }

    /// Whether the uplink answers for `ip` (the underlay IP or a SNAT address).
    #[inline(always)]
    pub fn owns_uplink_ip(&self, ip: Ipv4Addr) -> bool {
        self.uplink.is_some_and(|u| u.ip == ip) || self.uplink_ips.contains(&ip)
    }

    /// Sets an FDB entry.
    pub fn set_fdb(&mut self, key: u64, entry: FdbEntry) {
        // The FDB grows (only the control plane writes it): it takes every key.
        let _ = self.fdb.insert(key, entry);
    }

    /// Looks a MAC up in a tenant.
    #[inline(always)]
    pub fn lookup(&self, tenant: TenantIdx, mac: &Mac) -> Option<FdbEntry> {
        self.fdb.get(fdb_key(tenant, mac))
    }
}

/// Packs (tenant, MAC) into one u64 FDB key.
#[inline(always)]
pub fn fdb_key(tenant: TenantIdx, mac: &Mac) -> u64 {
    fdb_key_of(tenant, ethernet::mac_u64(mac))
}

/// The low 40 bits of a MAC as [`ethernet::mac_u64`] lays it out, below the group bit.
const BELOW_GROUP_BIT: u64 = ethernet::GROUP_BIT - 1;

/// Packs (tenant, MAC as [`ethernet::mac_u64`]) into one u64 FDB key. Only unicast
/// MACs are ever stored, so the key drops the group bit and gives the tenant 17 bits
/// (a 64-bit key, one multiplication to hash, where 128 bits would cost every packet
/// two and twice the cache lines). A group MAC maps to the [`NO_TENANT`] slot, which
/// holds no entry: it finds nothing in any tenant.
#[inline(always)]
pub fn fdb_key_of(tenant: TenantIdx, mac: u64) -> u64 {
    let slot = if mac & ethernet::GROUP_BIT == 0 {
        tenant
    } else {
        NO_TENANT
    };
    u64::from(slot) << 47 | (mac >> 41) << 40 | (mac & BELOW_GROUP_BIT)
}

/// Unpacks an FDB key of a unicast MAC.
pub fn fdb_key_parts(key: u64) -> (TenantIdx, Mac) {
    let mac = (key >> 40 & 0x7f) << 41 | (key & BELOW_GROUP_BIT);
    let b = mac.to_be_bytes();
    (
        (key >> 47) as TenantIdx,
        [b[2], b[3], b[4], b[5], b[6], b[7]],
    )
}

/// Packs (tunnel, tenant) into a key of [`FlowTables::tunnel_tenants`].
#[inline(always)]
pub fn tunnel_tenant_key(tunnel: TunnelIdx, tenant: TenantIdx) -> u64 {
    u64::from(tunnel) << 32 | u64::from(tenant)
}

/// A multiply-and-fold hasher for integer keys: one multiplication per lookup, and the
/// keys (MACs, IPs, GRE keys) are not attacker-chosen in a way a seedless hash must
/// resist beyond the per-tenant caps the control plane enforces.
#[derive(Default, Clone, Copy)]
pub struct IntHasher(u64);

impl Hasher for IntHasher {
    #[inline(always)]
    fn finish(&self) -> u64 {
        self.0
    }

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    #[inline(always)]
    fn write_u64(&mut self, n: u64) {
        let x = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = x ^ (x >> 29);
    }

    #[inline(always)]
    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }

    #[inline(always)]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline(always)]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

/// hashbrown map with [`IntHasher`].
pub type FastMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<IntHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Every (slot, unicast MAC) has a key of its own that gives both back, and a
        /// group MAC's key, in any tenant, is no stored entry's.
        #[test]
        fn fdb_keys_round_trip_and_never_meet(
            a in 0..NO_TENANT, b in 0..NO_TENANT, mac in proptest::prelude::any::<[u8; 6]>(),
            other in proptest::prelude::any::<[u8; 6]>(),
        ) {
            let unicast = |mut m: Mac| { m[0] &= !1; m };
            let (mac, other) = (unicast(mac), unicast(other));
            proptest::prop_assert_eq!(fdb_key_parts(fdb_key(a, &mac)), (a, mac));
            if (a, mac) != (b, other) {
                proptest::prop_assert_ne!(fdb_key(a, &mac), fdb_key(b, &other));
            }
            let mut group = other;
            group[0] |= 1;
            proptest::prop_assert_ne!(fdb_key(b, &group), fdb_key(a, &mac));
            proptest::prop_assert_eq!(fdb_key(b, &group) >> 47, u64::from(NO_TENANT));
        }
    }

    #[test]
    fn the_last_slot_and_the_last_mac_fit() {
        let last = NO_TENANT - 1;
        assert_eq!(fdb_key_parts(fdb_key(last, &[0xfe; 6])), (last, [0xfe; 6]));
        assert_ne!(
            fdb_key(last, &[0xfe; 6]),
            u64::MAX,
            "the FDB cache's empty key"
        );
    }

    #[test]
    fn trunk_carries_only_its_vlans() {
        let mut t = FlowTables::default();
        t.vlan_tenant[100] = 0;
        t.vlan_tenant[200] = 1;
        let mut set = Box::new([0u64; 64]);
        set[100 / 64] |= 1 << (100 % 64);
        t.trunk_vlans[3] = Some(set);
        assert_eq!(t.trunk_tenant(3, 100), Some(0));
        assert_eq!(t.trunk_tenant(3, 200), None, "VLAN not on this trunk");
        assert_eq!(t.trunk_tenant(4, 100), None, "not a trunk");
    }
}
