//! Drop reasons as data (one table of name and help text, one counter each) and the
//! per-core counters a worker writes and anyone may read.
//!
//! Each counter has a single writer, its worker, which updates it with a plain load and
//! store (no locked instruction); readers see values at most a burst old.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::MAX_PORTS;

/// The port of a frame that came from none (a held frame released, the router's own):
/// its drops count for the core only.
pub const NO_PORT: u16 = u16::MAX;

macro_rules! drop_reasons {
    ($($variant:ident = $name:literal : $help:literal,)*) => {
        /// Why a packet was dropped. Every drop names one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Short stable name (metrics label, stats key).
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One sentence for operators.
            pub const fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)* }
            }
        }
    };
}

drop_reasons! {
    NoOutput = "no-output": "the pipeline has no output for the packet (unconfigured port, or nowhere to flood)",
    TxRefused = "tx-refused": "the output device did not accept the packet (TX ring full or link down)",
    RingFull = "ring-full": "the ring to the core that owns the output's TX queue was full",
    Malformed = "malformed": "a header is truncated or invalid",
    TaggedOnAccess = "tagged-on-access": "an access port received an 802.1Q/802.1ad tagged frame (VLAN hopping attempt)",
    UntaggedOnTrunk = "untagged-on-trunk": "a trunk port received an untagged frame",
    DoubleTagged = "double-tagged": "a frame carried two VLAN tags or an 802.1ad outer tag",
    UnknownVlan = "unknown-vlan": "the VLAN maps to no tenant on this port or tunnel",
    BadSourceMac = "bad-source-mac": "the source MAC is multicast or broadcast",
    PortSecurityMac = "port-security-mac": "the source MAC is not one the access port allows",
    PortSecurityIp = "port-security-ip": "the source IP (or ARP sender) is not one the access port allows",
    MacSpoof = "mac-spoof": "the source MAC belongs to a known endpoint elsewhere",
    NotForUs = "not-for-us": "an underlay frame not addressed to this host",
    Ipv4Invalid = "ipv4-invalid": "an IPv4 header is malformed or its checksum is wrong",
    Fragment = "fragment": "an underlay IPv4 fragment (tunnels do not reassemble)",
    UplinkNotGre = "uplink-not-gre": "an underlay IPv4 packet for this host that is not GRE",
    GreUnknownPeer = "gre-unknown-peer": "GRE from an address that is no tunnel peer of this host",
    GreMalformed = "gre-malformed": "a GRE header with bad flags, version or protocol",
    GreBadChecksum = "gre-bad-checksum": "a GRE checksum that does not match",
    GreUnknownKey = "gre-unknown-key": "a GRE key (or its absence) that names no tenant this tunnel carries",
    ForeignPort = "foreign-port": "the destination is a port of another tenant (a stale forwarding entry); never sent",
    Hairpin = "hairpin": "the destination is where the frame came from (same port, or tunnel to tunnel)",
    NeighborUnresolved = "neighbor-unresolved": "the next hop's MAC (tunnel, router or outside) is not resolved yet, or the hold queue is full",
    NoHeadroom = "no-headroom": "no room in front of the frame for a tag or tunnel header",
    CopyFailed = "copy-failed": "no packet buffer for a flooded copy",
    NotRoutable = "not-routable": "a frame for the router that is neither IPv4 nor ARP, or not for its addresses",
    TtlExceeded = "ttl-exceeded": "the TTL ran out at the router (an ICMP time-exceeded went back, rate permitting)",
    NoRoute = "no-route": "the router has no route to the destination (an ICMP unreachable went back, rate permitting)",
    NatNoSession = "nat-no-session": "a TCP segment of no known SNAT connection (answered with a reset), or an outside packet nothing expects",
    NatUnsupported = "nat-unsupported": "a packet SNAT cannot translate: not TCP, UDP or ICMP echo, or a fragment",
    NatPortsExhausted = "nat-ports-exhausted": "no free SNAT port toward that destination on this core",
    NatTenantCap = "nat-tenant-cap": "the tenant holds as many SNAT connections as it may",
    NatTableFull = "nat-table-full": "the core's SNAT connection table is full",
    NatForeignCore = "nat-foreign-core": "an outside packet whose SNAT session is on another core, and no ring leads there (no uplink configured at start)",
    SegmentsTooLong = "segments-too-long": "a frame received in several segments that together do not fit one packet buffer",
    Uncuttable = "uncuttable": "a large TCP segment tenet could not cut for a port that cannot take it whole (not TCP/IPv4, an MTU too small, or no buffer free)",
    FragmentationNeeded = "fragmentation-needed": "a routed packet larger than the next hop's MTU, with DF set (an ICMP fragmentation-needed went back, rate permitting)",
    TooBig = "too-big": "a routed packet larger than the next hop's MTU that no ICMP error answers: without DF (tenet does not fragment), or found too large after waiting for its neighbour",
    Retired = "retired": "a frame waited for a neighbour of a tenant (or gateway) that was removed from this host meanwhile",
}

/// Number of drop reasons.
pub const DROP_REASON_COUNT: usize = DropReason::ALL.len();

/// One worker's counters, on their own cache lines so the stats reader never slows it.
#[repr(align(64))]
#[derive(Debug)]
pub struct CoreCounters {
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    bursts: AtomicU64,
    busy_cycles: AtomicU64,
    idle_sleeps: AtomicU64,
    punted: AtomicU64,
    handed_off: AtomicU64,
    spread: AtomicU64,
    events_lost: AtomicU64,
    gateway_egress_bytes: AtomicU64,
    joined_segments: AtomicU64,
    capture_missed: AtomicU64,
    nat_sessions: AtomicU64,
    drops: [AtomicU64; DROP_REASON_COUNT],
    /// Drops by the port the frame came in on, then reason (`port * reasons + reason`):
    /// a `port-security-ip` drop is traced to the container that sent it. Touched only
    /// when a frame is dropped.
    port_drops: Box<[AtomicU64]>,
}

impl Default for CoreCounters {
    fn default() -> Self {
        Self {
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            bursts: AtomicU64::new(0),
            busy_cycles: AtomicU64::new(0),
            idle_sleeps: AtomicU64::new(0),
            punted: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            spread: AtomicU64::new(0),
            events_lost: AtomicU64::new(0),
            gateway_egress_bytes: AtomicU64::new(0),
            joined_segments: AtomicU64::new(0),
            capture_missed: AtomicU64::new(0),
            nat_sessions: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            port_drops: (0..MAX_PORTS * DROP_REASON_COUNT)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    // Single writer: a plain read-modify-write is enough and costs no lock prefix.
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl CoreCounters {
    /// Packets received by this core.
    #[inline(always)]
    pub fn add_rx(&self, n: usize) {
        bump(&self.rx_packets, n as u64);
        bump(&self.bursts, 1);
    }

    /// Packets handed to a device by this core.
    #[inline(always)]
    pub fn add_tx(&self, n: usize) {
        bump(&self.tx_packets, n as u64);
    }

    /// Cycles spent on iterations that moved packets.
    #[inline(always)]
    pub fn add_busy_cycles(&self, cycles: u64) {
        bump(&self.busy_cycles, cycles);
    }

    /// One idle sleep taken.
    #[inline(always)]
    pub fn add_idle_sleep(&self) {
        bump(&self.idle_sleeps, 1);
    }

    /// A packet consumed by the slow path (an ARP reply for this host, say).
    #[inline(always)]
    pub fn add_punted(&self) {
        bump(&self.punted, 1);
    }

    /// A packet passed to the core that holds its state (an SNAT reply whose session
    /// another core made).
    #[inline(always)]
    pub fn add_handed_off(&self) {
        bump(&self.handed_off, 1);
    }

    /// A GRE frame passed to the worker its inner flow hashes to.
    #[inline(always)]
    pub fn add_spread(&self) {
        bump(&self.spread, 1);
    }

    /// A slow-path event lost because the queue to the control plane was full.
    #[inline(always)]
    pub fn add_event_lost(&self) {
        bump(&self.events_lost, 1);
    }

    /// A frame of `bytes` a tenant's gateway sent out of the uplink (what a cluster
    /// weighs when it places gateways by traffic).
    #[inline(always)]
    pub fn add_gateway_egress(&self, bytes: usize) {
        bump(&self.gateway_egress_bytes, bytes as u64);
    }

    /// Frames received in several segments and joined into one.
    #[inline(always)]
    pub fn add_joined_segments(&self, n: usize) {
        bump(&self.joined_segments, n as u64);
    }

    /// Copies for a capture that found no buffer or no room in the ring: the capture
    /// misses them, the traffic does not.
    #[inline(always)]
    pub fn add_capture_missed(&self, n: usize) {
        bump(&self.capture_missed, n as u64);
    }

    /// The SNAT sessions the core holds now (a gauge, set at each burst).
    #[inline(always)]
    pub fn set_nat_sessions(&self, n: usize) {
        self.nat_sessions.store(n as u64, Ordering::Relaxed);
    }

    /// Packets dropped for `reason`.
    #[inline(always)]
    pub fn add_drop(&self, reason: DropReason, n: usize) {
        bump(&self.drops[reason as usize], n as u64);
    }

    /// A frame received on `port` dropped for `reason` (also counted by
    /// [`CoreCounters::add_drop`]); nothing for [`NO_PORT`]. Out of line: every drop
    /// site inlines the call, not the count.
    #[cold]
    #[inline(never)]
    pub fn add_port_drop(&self, port: u16, reason: DropReason) {
        if let Some(counter) = self
            .port_drops
            .get(usize::from(port) * DROP_REASON_COUNT + reason as usize)
        {
            bump(counter, 1);
        }
    }

    /// Drops of frames received on `port`, indexed by `DropReason as usize`.
    pub fn port_drops(&self, port: u16) -> [u64; DROP_REASON_COUNT] {
        let at = usize::from(port) * DROP_REASON_COUNT;
        let mut drops = [0; DROP_REASON_COUNT];
        if let Some(counters) = self.port_drops.get(at..at + DROP_REASON_COUNT) {
            for (slot, counter) in drops.iter_mut().zip(counters) {
                *slot = counter.load(Ordering::Relaxed);
            }
        }
        drops
    }

    /// Every counter back to zero (an offline core reused for the next input).
    pub fn clear(&self) {
        let all = [
            &self.rx_packets,
            &self.tx_packets,
            &self.bursts,
            &self.busy_cycles,
            &self.idle_sleeps,
            &self.punted,
            &self.handed_off,
            &self.spread,
            &self.events_lost,
            &self.gateway_egress_bytes,
            &self.joined_segments,
            &self.capture_missed,
            &self.nat_sessions,
        ];
        for counter in all.into_iter().chain(&self.drops).chain(&*self.port_drops) {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> CoreStats {
        let mut drops = [0; DROP_REASON_COUNT];
        for (slot, counter) in drops.iter_mut().zip(&self.drops) {
            *slot = counter.load(Ordering::Relaxed);
        }
        CoreStats {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            bursts: self.bursts.load(Ordering::Relaxed),
            busy_cycles: self.busy_cycles.load(Ordering::Relaxed),
            idle_sleeps: self.idle_sleeps.load(Ordering::Relaxed),
            punted: self.punted.load(Ordering::Relaxed),
            handed_off: self.handed_off.load(Ordering::Relaxed),
            spread: self.spread.load(Ordering::Relaxed),
            events_lost: self.events_lost.load(Ordering::Relaxed),
            gateway_egress_bytes: self.gateway_egress_bytes.load(Ordering::Relaxed),
            joined_segments: self.joined_segments.load(Ordering::Relaxed),
            capture_missed: self.capture_missed.load(Ordering::Relaxed),
            nat_sessions: self.nat_sessions.load(Ordering::Relaxed),
            drops,
        }
    }
}

/// A read copy of one core's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted (accepted by a device).
    pub tx_packets: u64,
    /// Non-empty RX bursts.
    pub bursts: u64,
    /// TSC cycles spent in iterations that moved packets.
    pub busy_cycles: u64,
    /// Idle sleeps taken.
    pub idle_sleeps: u64,
    /// Packets consumed by the slow path.
    pub punted: u64,
    /// Packets passed to the core that holds their state.
    pub handed_off: u64,
    /// GRE frames passed to the worker their inner flow hashes to.
    pub spread: u64,
    /// Slow-path events lost to a full queue: reports tried, not sources (a sender
    /// whose report is lost tries again on each of its frames until one is taken).
    pub events_lost: u64,
    /// Bytes tenants' gateways sent out of the uplink.
    pub gateway_egress_bytes: u64,
    /// Frames received in several segments, joined into one.
    pub joined_segments: u64,
    /// Capture copies lost (no buffer, or the ring to the control plane full).
    pub capture_missed: u64,
    /// SNAT sessions held (as of the last burst).
    pub nat_sessions: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; DROP_REASON_COUNT],
}

impl Default for CoreStats {
    fn default() -> Self {
        Self {
            rx_packets: 0,
            tx_packets: 0,
            bursts: 0,
            busy_cycles: 0,
            idle_sleeps: 0,
            punted: 0,
            handed_off: 0,
            spread: 0,
            events_lost: 0,
            gateway_egress_bytes: 0,
            joined_segments: 0,
            capture_missed: 0,
            nat_sessions: 0,
            drops: [0; DROP_REASON_COUNT],
        }
    }
}

impl CoreStats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Busy cycles per received packet (0 before the first packet).
    pub fn cycles_per_packet(&self) -> f64 {
        if self.rx_packets == 0 {
            0.0
        } else {
            self.busy_cycles as f64 / self.rx_packets as f64
        }
    }

    /// Sum of several cores' counters.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a CoreStats>) -> CoreStats {
        let mut total = CoreStats::default();
        for s in all {
            total.rx_packets += s.rx_packets;
            total.tx_packets += s.tx_packets;
            total.bursts += s.bursts;
            total.busy_cycles += s.busy_cycles;
            total.idle_sleeps += s.idle_sleeps;
            total.punted += s.punted;
            total.handed_off += s.handed_off;
            total.spread += s.spread;
            total.events_lost += s.events_lost;
            total.gateway_egress_bytes += s.gateway_egress_bytes;
            total.joined_segments += s.joined_segments;
            total.capture_missed += s.capture_missed;
            total.nat_sessions += s.nat_sessions;
            for (t, d) in total.drops.iter_mut().zip(&s.drops) {
                *t += d;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_unique_names_and_help() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DROP_REASON_COUNT);
        assert!(DropReason::ALL.iter().all(|r| !r.help().is_empty()));
    }

    #[test]
    fn counts_by_reason_and_sums() {
        let c = CoreCounters::default();
        c.add_rx(32);
        c.add_rx(5);
        c.add_tx(30);
        c.add_drop(DropReason::TxRefused, 7);
        c.add_port_drop(3, DropReason::PortSecurityIp);
        c.add_port_drop(3, DropReason::PortSecurityIp);
        c.add_port_drop(NO_PORT, DropReason::PortSecurityIp);
        assert_eq!(c.port_drops(3)[DropReason::PortSecurityIp as usize], 2);
        assert_eq!(c.port_drops(2), [0; DROP_REASON_COUNT]);
        assert_eq!(c.port_drops(NO_PORT), [0; DROP_REASON_COUNT]);
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.tx_packets, s.bursts), (37, 30, 2));
        assert_eq!(s.dropped(DropReason::TxRefused), 7);
        assert_eq!(s.dropped(DropReason::RingFull), 0);
        let total = CoreStats::sum([&s, &s]);
        assert_eq!(total.rx_packets, 74);
        assert_eq!(total.dropped_total(), 14);
    }
}
