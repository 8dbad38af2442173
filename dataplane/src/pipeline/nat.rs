//! SNAT connection tracking of one core (VPP NAT44-ED style): a session per
//! (tenant, protocol, inside address and port, remote address and port), translated to
//! (SNAT address, port), and found again from the outside by the translated 5-tuple.
//!
//! Tables are per core and never shared: each worker hands out ports only from its own
//! slice of the port range, so a return packet's destination port names the core that
//! owns its session ([`NatTable::owner`]), and a packet that arrives elsewhere is handed
//! to that core. No lock, no atomic, no allocation after start: sessions live in a
//! fixed slab, the two indexes are fixed-size [`KeyIndex`]es, and expired sessions are
//! swept a few per burst.
//!
//! An established outbound packet touches two things: its index slot, which a burst
//! prefetches ([`NatTable::prefetch_outbound`]), and its session's 8-byte activity
//! record (timestamp, state, outside port) in a dense array that stays in cache for
//! the flows in use. The rest of a session (its keys and inside address) is read only
//! by replies, new connections and the sweep.

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::packet::ipv4::IpProtocol;
use crate::table::key_index::KeyIndex;
use crate::table::routing::NatSettings;
use crate::table::{TenantIdx, NO_TENANT};

/// One direction of a connection as a packet shows it. For ICMP echo the identifier
/// is the inside "port" (`src_port` outbound, `dst_port` inbound) and the other port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// IP protocol.
    pub protocol: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port (or echo identifier).
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (or echo identifier).
    pub dst_port: u16,
}

/// A session's inside key (the tenant and the flow as its container sends it) with
/// its hash in one core's table: the burst's prefetch pass hashes it to prefetch the
/// session's slot and [`NatTable::outbound`] looks it up with the same hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsideKey {
    key: u128,
    hash: u64,
}

impl InsideKey {
    /// Whether it is the key of `flow` sent by a container of `tenant`.
    #[inline(always)]
    pub fn is_of(&self, tenant: TenantIdx, flow: &Flow) -> bool {
        self.key == inside_key(tenant, flow)
    }
}

/// What the inside of a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inside {
    /// Its tenant.
    pub tenant: TenantIdx,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's port (or echo identifier).
    pub port: u16,
}

const SEEN_OUT: u8 = 1;
const SEEN_IN: u8 = 2;
const FIN_OUT: u8 = 4;
const FIN_IN: u8 = 8;
const RESET: u8 = 16;

/// What identifies a session, read off the per-packet path.
#[derive(Debug, Clone, Copy)]
struct Session {
    inside_key: u128,
    outside_key: u128,
    inside: Inside,
}

const DEAD: Session = Session {
    inside_key: 0,
    outside_key: 0,
    inside: Inside {
        tenant: 0,
        ip: Ipv4Addr::UNSPECIFIED,
        port: 0,
    },
};

/// What every packet of a session reads or writes.
#[derive(Debug, Clone, Copy)]
struct Activity {
    last_seen: u32,
    outside_port: u16,
    protocol: u8,
    /// `SEEN_*`, `FIN_*`, `RESET`, and `LIVE` while the slot holds a session.
    state: u8,
}

const LIVE: u8 = 128;

const IDLE: Activity = Activity {
    last_seen: 0,
    outside_port: 0,
    protocol: 0,
    state: 0,
};

/// Sessions examined per burst by the background sweep.
const SWEEP_PER_BURST: usize = 8;
/// Sessions examined before a full table or tenant refuses a new connection.
const SWEEP_ON_PRESSURE: usize = 1024;
/// Ports tried for a new connection before it is refused.
const PORT_ATTEMPTS: usize = 256;

/// A session as an operator reads it (`tenetctl nat`): who, to whom, as what outside
/// address, and how long since its last packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The tenant's slot.
    pub tenant: TenantIdx,
    /// IP protocol number (6, 17, 1).
    pub protocol: u8,
    /// The container's address and port (echo id for ICMP).
    pub inside: (Ipv4Addr, u16),
    /// What the outside sees instead.
    pub outside: (Ipv4Addr, u16),
    /// The far end.
    pub remote: (Ipv4Addr, u16),
    /// Seconds since its last packet.
    pub idle_s: u32,
    /// `established`, `closing`, `reset` or `opening` (TCP); `active` otherwise.
    pub state: &'static str,
}

/// One core's SNAT sessions.
pub struct NatTable {
    sessions: Vec<Session>,
    activity: Vec<Activity>,
    free: Vec<u32>,
    by_inside: KeyIndex<u128, u32>,
    by_outside: KeyIndex<u128, u32>,
    per_tenant: Vec<u32>,
    cursor: usize,
    worker: u16,
    workers: u16,
}

impl NatTable {
    /// Room for `capacity` sessions on worker `worker` of `workers`.
    pub fn new(capacity: usize, worker: u16, workers: u16) -> Self {
        let capacity = capacity.clamp(1, (u32::MAX - 1) as usize);
        Self {
            sessions: vec![DEAD; capacity],
            activity: vec![IDLE; capacity],
            free: (0..capacity as u32).rev().collect(),
            by_inside: KeyIndex::new(capacity),
            by_outside: KeyIndex::new(capacity),
            per_tenant: vec![0; NO_TENANT as usize + 1],
            cursor: 0,
            worker,
            workers: workers.max(1),
        }
    }

    /// Up to `limit` live sessions as of `now` (of `tenant` only, if given), for the
    /// control plane (called between bursts, on its request, never per packet).
    pub fn view(&self, now: u32, limit: usize, tenant: Option<TenantIdx>) -> Vec<SessionView> {
        let endpoint = |key: u128, at: u32| {
            (
                Ipv4Addr::from((key >> at) as u32),
                (key >> (at - 16)) as u16,
            )
        };
        self.sessions
            .iter()
            .zip(&self.activity)
            .filter(|(s, a)| a.state & LIVE != 0 && tenant.is_none_or(|t| s.inside.tenant == t))
            .take(limit)
            .map(|(s, a)| SessionView {
                tenant: s.inside.tenant,
                protocol: a.protocol,
                inside: (s.inside.ip, s.inside.port),
                outside: endpoint(s.outside_key, 64),
                remote: (
                    Ipv4Addr::from((s.outside_key >> 16) as u32),
                    s.outside_key as u16,
                ),
                idle_s: now.wrapping_sub(a.last_seen),
                state: match (a.protocol == IpProtocol::TCP, a.state) {
                    (false, _) => "active",
                    (true, st) if st & RESET != 0 => "reset",
                    (true, st) if st & (FIN_OUT | FIN_IN) != 0 => "closing",
                    (true, st) if st & (SEEN_OUT | SEEN_IN) == SEEN_OUT | SEEN_IN => "established",
                    (true, _) => "opening",
                },
            })
            .collect()
    }

    /// Live sessions (expired ones count until swept).
    pub fn len(&self) -> usize {
        self.sessions.len() - self.free.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions of `tenant` on this core.
    pub fn tenant_sessions(&self, tenant: TenantIdx) -> u32 {
        self.per_tenant[tenant as usize]
    }

    /// The worker whose slice of the range holds `port`, if any.
    #[inline(always)]
    pub fn owner(settings: &NatSettings, workers: u16, port: u16) -> Option<u16> {
        let span = slice_len(settings, workers);
        let offset = port.checked_sub(settings.port_min)?;
        let owner = offset / span;
        (owner < workers.max(1)).then_some(owner)
    }

    /// This table's worker index and the number of workers.
    pub fn worker(&self) -> (u16, u16) {
        (self.worker, self.workers)
    }

    /// The key of the session of `flow` sent by a container of `tenant`, hashed.
    #[inline(always)]
    pub fn inside(&self, tenant: TenantIdx, flow: &Flow) -> InsideKey {
        let key = inside_key(tenant, flow);
        InsideKey {
            key,
            hash: self.by_inside.hash(key),
        }
    }

    /// Starts loading the index slot of the session `key`, for [`NatTable::outbound`]
    /// a little later.
    #[inline(always)]
    pub fn prefetch_outbound(&self, key: InsideKey) {
        self.by_inside.prefetch_hashed(key.hash);
    }

    /// The outside port of an outbound packet (`flow` as sent by the container of
    /// `tenant`, whose session key [`NatTable::inside`] gave as `key`), creating a
    /// session on `snat_ip` if there is none. A TCP segment other than a SYN opens no
    /// session (its connection belongs to another gateway or is long gone):
    /// [`DropReason::NatNoSession`], and the caller answers with a reset.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn outbound(
        &mut self,
        settings: &NatSettings,
        key: InsideKey,
        tenant: TenantIdx,
        max_per_tenant: u32,
        snat_ip: Ipv4Addr,
        flow: &Flow,
        tcp_flags: u16,
        now: u32,
    ) -> Result<u16, DropReason> {
        debug_assert!(key.is_of(tenant, flow), "another flow's session key");
        let inside_key = key.key;
        if let Some(i) = self.by_inside.get_hashed(inside_key, key.hash) {
            let a = &mut self.activity[i as usize];
            if !expired(a, settings, now) {
                a.last_seen = now;
                a.state |= SEEN_OUT | tcp_state(flow.protocol, tcp_flags, FIN_OUT);
                return Ok(a.outside_port);
            }
            self.release(i);
        }
        if flow.protocol == IpProtocol::TCP && tcp_flags & (SYN | ACK | RST) != SYN {
            return Err(DropReason::NatNoSession);
        }
        if self.per_tenant[tenant as usize] >= max_per_tenant {
            self.sweep(settings, now, SWEEP_ON_PRESSURE);
            if self.per_tenant[tenant as usize] >= max_per_tenant {
                return Err(DropReason::NatTenantCap);
            }
        }
        if self.free.is_empty() {
            self.sweep(settings, now, SWEEP_ON_PRESSURE);
        }
        let Some(&slot) = self.free.last() else {
            return Err(DropReason::NatTableFull);
        };
        let port = self
            .pick_port(settings, snat_ip, flow, inside_key, now)
            .ok_or(DropReason::NatPortsExhausted)?;
        self.free.pop();
        let outside_key = outside_key(flow.protocol, snat_ip, port, flow.dst, flow.dst_port);
        self.sessions[slot as usize] = Session {
            inside_key,
            outside_key,
            inside: Inside {
                tenant,
                ip: flow.src,
                port: flow.src_port,
            },
        };
        self.activity[slot as usize] = Activity {
            last_seen: now,
            outside_port: port,
            protocol: flow.protocol,
            state: LIVE | SEEN_OUT | tcp_state(flow.protocol, tcp_flags, FIN_OUT),
        };
        // Both indexes hold as many keys as there are sessions, and a free slot means
        // one of each is unused.
        let indexed = self
            .by_inside
            .insert_hashed(inside_key, key.hash, slot)
            .is_ok()
            && self.by_outside.insert(outside_key, slot).is_ok();
        debug_assert!(indexed);
        self.per_tenant[tenant as usize] += 1;
        Ok(port)
    }

    /// The inside of an inbound packet (`flow` as received on the uplink), if a live
    /// session of this core expects it.
    #[inline]
    pub fn inbound(
        &mut self,
        settings: &NatSettings,
        flow: &Flow,
        tcp_flags: u16,
        now: u32,
    ) -> Option<Inside> {
        let key = outside_key(
            flow.protocol,
            flow.dst,
            flow.dst_port,
            flow.src,
            flow.src_port,
        );
        let i = self.by_outside.get(key)?;
        let a = &mut self.activity[i as usize];
        if expired(a, settings, now) {
            self.release(i);
            return None;
        }
        a.last_seen = now;
        a.state |= SEEN_IN | tcp_state(flow.protocol, tcp_flags, FIN_IN);
        Some(self.sessions[i as usize].inside)
    }

    /// Frees up to `budget` expired sessions, continuing where the last sweep ended.
    pub fn sweep(&mut self, settings: &NatSettings, now: u32, budget: usize) {
        let n = self.sessions.len();
        for _ in 0..budget.min(n) {
            self.cursor = (self.cursor + 1) % n;
            let a = &self.activity[self.cursor];
            if a.state & LIVE != 0 && expired(a, settings, now) {
                self.release(self.cursor as u32);
            }
        }
    }

    /// The background share of sweeping, once per burst.
    #[inline(always)]
    pub fn sweep_some(&mut self, settings: &NatSettings, now: u32) {
        if !self.is_empty() {
            self.sweep(settings, now, SWEEP_PER_BURST);
        }
    }

    /// Drops every session (the gateway left this host, or the tables changed shape).
    pub fn clear(&mut self) {
        for i in 0..self.sessions.len() {
            if self.activity[i].state & LIVE != 0 {
                self.release(i as u32);
            }
        }
    }

    /// Drops every session `keep` refuses, given its tenant and its outside (SNAT)
    /// address: what a change of the tables took away (a tenant gone, a gateway moved
    /// off this host, a new SNAT address) must not answer for anyone any more.
    pub fn retain(&mut self, mut keep: impl FnMut(TenantIdx, Ipv4Addr) -> bool) {
        for i in 0..self.sessions.len() {
            if self.activity[i].state & LIVE == 0 {
                continue;
            }
            let s = &self.sessions[i];
            let outside_ip = Ipv4Addr::from((s.outside_key >> 64) as u32);
            if !keep(s.inside.tenant, outside_ip) {
                self.release(i as u32);
            }
        }
    }

    fn release(&mut self, i: u32) {
        let a = std::mem::replace(&mut self.activity[i as usize], IDLE);
        if a.state & LIVE == 0 {
            return;
        }
        let s = std::mem::replace(&mut self.sessions[i as usize], DEAD);
        self.by_inside.remove(s.inside_key);
        self.by_outside.remove(s.outside_key);
        let count = &mut self.per_tenant[s.inside.tenant as usize];
        *count = count.saturating_sub(1);
        self.free.push(i);
    }

    /// A port of this core's slice that no live session uses toward the same remote
    /// (endpoint-dependent mapping: one port serves many remotes). Tries the
    /// container's own port first, then a hash-chosen walk.
    fn pick_port(
        &mut self,
        settings: &NatSettings,
        snat_ip: Ipv4Addr,
        flow: &Flow,
        inside_key: u128,
        now: u32,
    ) -> Option<u16> {
        let span = slice_len(settings, self.workers);
        let base = settings.port_min + self.worker * span;
        let own = flow.src_port.wrapping_sub(base);
        let start = if own < span {
            own
        } else {
            let h =
                (inside_key as u64 ^ (inside_key >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            ((h >> 32) % u64::from(span)) as u16
        };
        for attempt in 0..usize::from(span).min(PORT_ATTEMPTS) {
            let port = base + ((usize::from(start) + attempt) % usize::from(span)) as u16;
            let key = outside_key(flow.protocol, snat_ip, port, flow.dst, flow.dst_port);
            match self.by_outside.get(key) {
                None => return Some(port),
                Some(i) if expired(&self.activity[i as usize], settings, now) => {
                    self.release(i);
                    return Some(port);
                }
                Some(_) => {}
            }
        }
        None
    }
}

use crate::packet::tcp::{FLAG_ACK as ACK, FLAG_FIN as FIN, FLAG_RST as RST, FLAG_SYN as SYN};

/// Ports in each worker's slice of the range.
#[inline(always)]
fn slice_len(settings: &NatSettings, workers: u16) -> u16 {
    let total = u32::from(settings.port_max.saturating_sub(settings.port_min)) + 1;
    (total / u32::from(workers.max(1))).clamp(1, u32::from(u16::MAX)) as u16
}

#[inline(always)]
fn tcp_state(protocol: u8, flags: u16, fin_bit: u8) -> u8 {
    if protocol != IpProtocol::TCP {
        return 0;
    }
    let mut state = 0;
    if flags & FIN != 0 {
        state |= fin_bit;
    }
    if flags & RST != 0 {
        state |= RESET;
    }
    state
}

#[inline(always)]
fn expired(s: &Activity, settings: &NatSettings, now: u32) -> bool {
    let timeout = match s.protocol {
        IpProtocol::TCP if s.state & RESET != 0 => settings.tcp_transitory_s,
        IpProtocol::TCP if s.state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN => {
            settings.tcp_transitory_s
        }
        IpProtocol::TCP if s.state & (SEEN_OUT | SEEN_IN) == SEEN_OUT | SEEN_IN => {
            settings.tcp_established_s
        }
        IpProtocol::TCP => settings.tcp_transitory_s,
        IpProtocol::UDP => settings.udp_s,
        _ => settings.icmp_s,
    };
    now.wrapping_sub(s.last_seen) > timeout
}

#[inline(always)]
fn inside_key(tenant: TenantIdx, flow: &Flow) -> u128 {
    u128::from(tenant) << 104
        | u128::from(flow.protocol) << 96
        | u128::from(u32::from(flow.src)) << 64
        | u128::from(flow.src_port) << 48
        | u128::from(u32::from(flow.dst)) << 16
        | u128::from(flow.dst_port)
}

#[inline(always)]
fn outside_key(protocol: u8, ip: Ipv4Addr, port: u16, remote: Ipv4Addr, remote_port: u16) -> u128 {
    u128::from(protocol) << 96
        | u128::from(u32::from(ip)) << 64
        | u128::from(port) << 48
        | u128::from(u32::from(remote)) << 16
        | u128::from(remote_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    fn flow(protocol: u8, src_port: u16) -> Flow {
        Flow {
            protocol,
            src: Ipv4Addr::new(10, 1, 0, 5),
            src_port,
            dst: SERVER,
            dst_port: 80,
        }
    }

    impl NatTable {
        /// [`NatTable::outbound`], the session key hashed here.
        #[allow(clippy::too_many_arguments)]
        fn send_out(
            &mut self,
            settings: &NatSettings,
            tenant: TenantIdx,
            max_per_tenant: u32,
            snat_ip: Ipv4Addr,
            flow: &Flow,
            tcp_flags: u16,
            now: u32,
        ) -> Result<u16, DropReason> {
            let key = self.inside(tenant, flow);
            self.outbound(
                settings,
                key,
                tenant,
                max_per_tenant,
                snat_ip,
                flow,
                tcp_flags,
                now,
            )
        }
    }

    fn back(protocol: u8, port: u16) -> Flow {
        Flow {
            protocol,
            src: SERVER,
            src_port: 80,
            dst: SNAT,
            dst_port: port,
        }
    }

    #[test]
    fn a_connection_keeps_its_port_and_comes_back() {
        let s = NatSettings::default();
        let mut t = NatTable::new(16, 0, 1);
        let p = t
            .send_out(&s, 3, 10, SNAT, &flow(IpProtocol::TCP, 40000), SYN, 0)
            .unwrap();
        assert_eq!(p, 40000, "the container's own port when free");
        assert_eq!(
            t.send_out(&s, 3, 10, SNAT, &flow(IpProtocol::TCP, 40000), ACK, 1),
            Ok(p)
        );
        let inside = t
            .inbound(&s, &back(IpProtocol::TCP, p), SYN | ACK, 1)
            .unwrap();
        assert_eq!(inside.tenant, 3);
        assert_eq!(inside.port, 40000);
        assert_eq!(
            t.inbound(&s, &back(IpProtocol::UDP, p), 0, 1),
            None,
            "other protocol"
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn retain_drops_the_sessions_of_what_is_gone() {
        let s = NatSettings::default();
        let other = Ipv4Addr::new(198, 18, 0, 2);
        let mut t = NatTable::new(16, 0, 1);
        let gone = t
            .send_out(&s, 1, 10, SNAT, &flow(IpProtocol::UDP, 1000), 0, 0)
            .unwrap();
        let moved = t
            .send_out(&s, 2, 10, other, &flow(IpProtocol::UDP, 1000), 0, 0)
            .unwrap();
        let stays = t
            .send_out(&s, 3, 10, SNAT, &flow(IpProtocol::UDP, 1000), 0, 0)
            .unwrap();
        t.retain(|tenant, ip| (tenant == 3 || tenant == 2) && ip == SNAT);
        assert_eq!(t.len(), 1);
        assert_eq!(t.tenant_sessions(1), 0);
        assert_eq!(t.tenant_sessions(2), 0, "its SNAT address changed");
        assert!(t.inbound(&s, &back(IpProtocol::UDP, gone), 0, 1).is_none());
        let back_other = Flow {
            dst: other,
            ..back(IpProtocol::UDP, moved)
        };
        assert!(t.inbound(&s, &back_other, 0, 1).is_none());
        assert_eq!(
            t.inbound(&s, &back(IpProtocol::UDP, stays), 0, 1)
                .unwrap()
                .tenant,
            3
        );
    }

    #[test]
    fn mid_stream_tcp_opens_nothing() {
        let s = NatSettings::default();
        let mut t = NatTable::new(16, 0, 1);
        assert_eq!(
            t.send_out(&s, 0, 10, SNAT, &flow(IpProtocol::TCP, 40000), ACK, 0),
            Err(DropReason::NatNoSession)
        );
        assert!(t.is_empty());
    }

    #[test]
    fn ports_run_out_and_come_back_after_expiry() {
        let s = NatSettings {
            port_min: 2000,
            port_max: 2003,
            udp_s: 5,
            ..NatSettings::default()
        };
        let mut t = NatTable::new(64, 0, 1);
        let mut ports = Vec::new();
        for i in 0..4 {
            ports.push(
                t.send_out(&s, 0, 100, SNAT, &flow(IpProtocol::UDP, 5000 + i), 0, 0)
                    .unwrap(),
            );
        }
        ports.sort_unstable();
        assert_eq!(ports, [2000, 2001, 2002, 2003]);
        assert_eq!(
            t.send_out(&s, 0, 100, SNAT, &flow(IpProtocol::UDP, 6000), 0, 1),
            Err(DropReason::NatPortsExhausted)
        );
        assert!(t
            .send_out(&s, 0, 100, SNAT, &flow(IpProtocol::UDP, 6000), 0, 10)
            .is_ok());
    }

    #[test]
    fn tenant_cap_and_table_size_hold() {
        let s = NatSettings::default();
        let mut t = NatTable::new(3, 0, 1);
        assert!(t
            .send_out(&s, 0, 2, SNAT, &flow(IpProtocol::UDP, 1), 0, 0)
            .is_ok());
        assert!(t
            .send_out(&s, 0, 2, SNAT, &flow(IpProtocol::UDP, 2), 0, 0)
            .is_ok());
        assert_eq!(
            t.send_out(&s, 0, 2, SNAT, &flow(IpProtocol::UDP, 3), 0, 0),
            Err(DropReason::NatTenantCap)
        );
        assert!(t
            .send_out(&s, 1, 2, SNAT, &flow(IpProtocol::UDP, 3), 0, 0)
            .is_ok());
        assert_eq!(
            t.send_out(&s, 2, 2, SNAT, &flow(IpProtocol::UDP, 4), 0, 0),
            Err(DropReason::NatTableFull)
        );
    }

    #[test]
    fn each_worker_owns_a_slice_of_the_ports() {
        let s = NatSettings {
            port_min: 1000,
            port_max: 1999,
            ..NatSettings::default()
        };
        for w in 0..4 {
            let mut t = NatTable::new(8, w, 4);
            let p = t
                .send_out(&s, 0, 10, SNAT, &flow(IpProtocol::UDP, 40000), 0, 0)
                .unwrap();
            assert_eq!(NatTable::owner(&s, 4, p), Some(w));
        }
        assert_eq!(NatTable::owner(&s, 4, 999), None);
        assert_eq!(NatTable::owner(&s, 4, 2000), None);
    }

    #[test]
    fn closed_tcp_expires_sooner_than_established() {
        let s = NatSettings {
            tcp_established_s: 100,
            tcp_transitory_s: 10,
            ..NatSettings::default()
        };
        let mut t = NatTable::new(8, 0, 1);
        let p = t
            .send_out(&s, 0, 10, SNAT, &flow(IpProtocol::TCP, 1), SYN, 0)
            .unwrap();
        t.inbound(&s, &back(IpProtocol::TCP, p), SYN | ACK, 0)
            .unwrap();
        assert!(
            t.inbound(&s, &back(IpProtocol::TCP, p), ACK, 50).is_some(),
            "established"
        );
        t.send_out(&s, 0, 10, SNAT, &flow(IpProtocol::TCP, 1), FIN | ACK, 50)
            .unwrap();
        t.inbound(&s, &back(IpProtocol::TCP, p), FIN | ACK, 50)
            .unwrap();
        assert_eq!(
            t.inbound(&s, &back(IpProtocol::TCP, p), ACK, 61),
            None,
            "closed"
        );
        t.sweep(&s, 61, 8);
        assert!(t.is_empty());
    }
}
