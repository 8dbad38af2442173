//! Assembles [`FlowTables`] from model-level facts (tenants, port roles, tunnels, MACs),
//! keeping the derived parts (flood lists, VLAN and key maps) consistent. The control
//! plane's compiler drives it; tests build tables with it directly.

use std::net::Ipv4Addr;

use super::routing::{
    neighbor_key, published_inside_key, published_key, route_key, ExternalHop, NatSettings,
    Published, RouteTarget, Router,
};
use super::{
    fdb_key, tunnel_tenant_key, Design, FdbEntry, FlowTables, HostIdx, Location, OuterHeader,
    PortRole, PortSecurity, TenantIdx, TenantTable, Tunnel, TunnelIdx, Uplink,
};
use crate::packet::Mac;

/// Underlay IPv4 TTL of tunnel packets unless configured.
pub const DEFAULT_TTL: u8 = 64;

/// Builds one snapshot.
pub struct TablesBuilder {
    tables: FlowTables,
    ttl: u8,
    dont_fragment: bool,
}

impl TablesBuilder {
    /// Empty tables for `design`; `is_hub` marks the shared design's egress host.
    pub fn new(design: Design, is_hub: bool) -> Self {
        Self {
            tables: FlowTables {
                design,
                is_hub,
                ..FlowTables::default()
            },
            ttl: DEFAULT_TTL,
            dont_fragment: true,
        }
    }

    /// Outer IPv4 TTL and DF bit of tunnels added after this call.
    pub fn tunnel_ip_options(&mut self, ttl: u8, dont_fragment: bool) -> &mut Self {
        self.ttl = ttl;
        self.dont_fragment = dont_fragment;
        self
    }

    /// Adds a tenant in the next unused slot; `vlan` maps it on trunks (and on tunnels
    /// in the shared design).
    pub fn tenant(&mut self, id: u32, vlan: Option<u16>) -> TenantIdx {
        let slot = self.tables.tenants.len() as TenantIdx;
        self.tenant_in(slot, id, vlan)
    }

    /// Adds a tenant in `slot` (the control plane's stable slot for it).
    pub fn tenant_in(&mut self, slot: TenantIdx, id: u32, vlan: Option<u16>) -> TenantIdx {
        let table = TenantTable {
            id,
            vlan,
            flood_ports: Vec::new(),
            tunnels: Vec::new(),
            router: None,
        };
        self.tables.set_tenant(slot, Some(table));
        if let Some(vid) = vlan {
            self.tables.vlan_tenant[usize::from(vid & 0x0fff)] = slot;
        }
        self.tables.key_tenant.insert(id, slot);
        slot
    }

    /// Marks the snapshot as the first without something the previous ones had
    /// ([`FlowTables::retired`]).
    pub fn retired(&mut self, epoch: u64) -> &mut Self {
        self.tables.retired = epoch;
        self
    }

    fn tenant_mut(&mut self, slot: TenantIdx) -> &mut TenantTable {
        self.tables.tenants[slot as usize]
            .as_mut()
            .expect("a tenant is added before its ports, tunnels and router")
    }

    /// The index of the tenant with `id`.
    pub fn tenant_index(&self, id: u32) -> Option<TenantIdx> {
        self.tables.key_tenant.get(&id).copied()
    }

    /// An untagged port of one tenant, with optional port security.
    pub fn access_port(&mut self, port: u16, tenant: TenantIdx, security: Option<PortSecurity>) {
        self.access_role(port, tenant, security);
        self.tenant_mut(tenant).flood_ports.push(port);
    }

    /// [`TablesBuilder::access_port`]'s role alone: the tenant's flood list is left to
    /// whoever builds the tenant's table.
    pub fn access_role(&mut self, port: u16, tenant: TenantIdx, security: Option<PortSecurity>) {
        let security = security.map(|rules| {
            self.tables.port_security.push(rules);
            (self.tables.port_security.len() - 1) as u16
        });
        self.set_role(port, PortRole::Access { tenant, security });
    }

    /// A tagged port carrying `tenants` (each by its VLAN).
    pub fn trunk_port(&mut self, port: u16, tenants: &[TenantIdx]) {
        let mut vids = Vec::new();
        for &tenant in tenants {
            let t = self.tenant_mut(tenant);
            if let Some(vid) = t.vlan {
                vids.push(vid);
                t.flood_ports.push(port);
            }
        }
        self.trunk_role(port, &vids);
    }

    /// [`TablesBuilder::trunk_port`]'s role alone, by the VLANs it carries.
    pub fn trunk_role(&mut self, port: u16, vids: &[u16]) {
        self.set_role(port, PortRole::Trunk);
        let mut set = Box::new([0u64; 64]);
        for &vid in vids {
            let vid = usize::from(vid & 0x0fff);
            set[vid / 64] |= 1 << (vid % 64);
        }
        if let Some(slot) = self.tables.trunk_vlans.get_mut(usize::from(port)) {
            *slot = Some(set);
        }
    }

    /// A port whose frames all go to `peer`, untouched.
    pub fn cross_connect(&mut self, port: u16, peer: u16) {
        self.set_role(port, PortRole::CrossConnect(peer));
    }

    /// The underlay port and this host's identity on it.
    pub fn uplink(&mut self, port: u16, mac: Mac, ip: Ipv4Addr) {
        self.set_role(port, PortRole::Uplink);
        self.tables.uplink = Some(Uplink { port, mac, ip });
    }

    /// The largest IPv4 packet `port` sends (its device MTU).
    pub fn port_mtu(&mut self, port: u16, mtu: u16) {
        if let Some(slot) = self.tables.port_mtu.get_mut(usize::from(port)) {
            *slot = mtu;
        }
    }

    /// A tunnel to `host` at `remote_ip`; `next_hop_mac` is the resolved MAC of the next
    /// hop toward it (`None` while unresolved: encapsulation then drops and counts).
    /// Needs the uplink first.
    pub fn tunnel(
        &mut self,
        host: HostIdx,
        remote_ip: Ipv4Addr,
        next_hop_mac: Option<Mac>,
    ) -> TunnelIdx {
        let header = match (self.tables.uplink, next_hop_mac) {
            (Some(up), Some(mac)) => Some(OuterHeader::build(
                up.mac,
                mac,
                up.ip,
                remote_ip,
                self.ttl,
                self.dont_fragment,
                self.tables.design == Design::Dedicated,
            )),
            _ => None,
        };
        let idx = self.tables.tunnels.len() as TunnelIdx;
        self.tables.tunnels.push(Tunnel {
            host,
            remote_ip,
            header,
        });
        self.tables.peer_tunnel.insert(u32::from(remote_ip), idx);
        self.host_via(host, idx);
        idx
    }

    /// `host` is reached through `tunnel` (a spoke reaches every host through the hub).
    pub fn host_via(&mut self, host: HostIdx, tunnel: TunnelIdx) {
        let h = usize::from(host);
        if self.tables.host_tunnel.len() <= h {
            self.tables.host_tunnel.resize(h + 1, None);
        }
        self.tables.host_tunnel[h] = Some(tunnel);
    }

    /// `tunnel` carries `tenant`: accepted from it and flooded to it.
    pub fn tunnel_carries(&mut self, tunnel: TunnelIdx, tenant: TenantIdx) {
        if self
            .tables
            .tunnel_tenants
            .insert(tunnel_tenant_key(tunnel, tenant), ())
            .is_none()
        {
            self.tenant_mut(tenant).tunnels.push(tunnel);
        }
    }

    /// A known endpoint's MAC; learning never moves it.
    pub fn static_mac(&mut self, tenant: TenantIdx, mac: Mac, location: Location) {
        let entry = FdbEntry {
            location,
            is_static: true,
        };
        self.tables.set_fdb(fdb_key(tenant, &mac), entry);
    }

    /// A learned MAC (ignored where a static entry exists).
    pub fn learned_mac(&mut self, tenant: TenantIdx, mac: Mac, location: Location) {
        let key = fdb_key(tenant, &mac);
        if !self.tables.fdb.contains_key(key) {
            let entry = FdbEntry {
                location,
                is_static: false,
            };
            self.tables.set_fdb(key, entry);
        }
    }

    /// Gives `tenant` a router. Its MAC becomes a static entry at `location`
    /// ([`Location::Router`] where the gateway is this host, else the gateway host), its
    /// subnets connected routes. `router.here` follows from `location`: the fast path
    /// trusts it to mean the router MAC's entry is [`Location::Router`].
    pub fn router(&mut self, tenant: TenantIdx, mut router: Router, location: Location) {
        router.here = location == Location::Router;
        self.static_mac(tenant, router.mac, location);
        self.tables
            .router_tenant
            .insert(super::fdb_key(0, &router.mac), tenant);
        if let Some(ip) = router.snat_ip {
            if !self.tables.uplink_ips.contains(&ip) {
                self.tables.uplink_ips.push(ip);
            }
        }
        let interfaces = router.interfaces.clone();
        self.tenant_mut(tenant).router = Some(router);
        for i in interfaces {
            self.route(tenant, i.ip, i.prefix, RouteTarget::Direct(tenant));
        }
    }

    /// A route of `tenant`'s router (after [`Self::router`]). A later route to the same
    /// prefix replaces an earlier one.
    pub fn route(&mut self, tenant: TenantIdx, ip: Ipv4Addr, prefix: u8, target: RouteTarget) {
        let prefix = prefix.min(32);
        self.tables
            .routes
            .insert(route_key(tenant, prefix, ip), target);
        if let Some(r) = self.tenant_mut(tenant).router.as_mut() {
            r.route_lengths |= 1 << prefix;
        }
    }

    /// The MAC of `ip` in `tenant`, for its router.
    pub fn neighbor(&mut self, tenant: TenantIdx, ip: Ipv4Addr, mac: Mac) {
        self.tables.neighbors.insert(neighbor_key(tenant, ip), mac);
    }

    /// A published container port.
    pub fn publish(&mut self, protocol: u8, p: Published) {
        self.tables
            .published
            .insert(published_key(protocol, p.external_ip, p.external_port), p);
        self.tables
            .published_inside
            .insert(published_inside_key(p.tenant, protocol, p.ip, p.port), p);
        if !self.tables.uplink_ips.contains(&p.external_ip) {
            self.tables.uplink_ips.push(p.external_ip);
        }
    }

    /// The addresses answered on the uplink besides its own, in place of those the
    /// routers and published ports added.
    pub fn uplink_ips(&mut self, ips: Vec<Ipv4Addr>) {
        self.tables.uplink_ips = ips;
    }

    /// The next hop toward the outside world, and its MAC once resolved.
    pub fn external(&mut self, ip: Ipv4Addr, mac: Option<Mac>) {
        self.tables.external = Some(ExternalHop { ip, mac });
    }

    /// SNAT limits and timeouts.
    pub fn nat(&mut self, settings: NatSettings) {
        self.tables.nat = settings;
    }

    /// Copies of what `ports` send and receive, as far as `filter` takes them, go to
    /// the control plane.
    pub fn capture(
        &mut self,
        ports: impl IntoIterator<Item = u16>,
        filter: crate::pipeline::capture::CaptureFilter,
    ) {
        for port in ports {
            self.tables.capture.insert(usize::from(port));
        }
        self.tables.capture_filter = filter;
    }

    /// Room for `n` more FDB entries without rehashing.
    pub fn reserve_macs(&mut self, n: usize) {
        self.tables.fdb.reserve(n);
    }

    /// The finished snapshot.
    pub fn build(mut self) -> FlowTables {
        // The underlay IP is answered anyway; keep the extra list to the extras.
        if let Some(up) = self.tables.uplink {
            self.tables.uplink_ips.retain(|&ip| ip != up.ip);
        }
        self.tables
    }

    fn set_role(&mut self, port: u16, role: PortRole) {
        if let Some(slot) = self.tables.ports.get_mut(usize::from(port)) {
            *slot = role;
        }
    }
}
