//! What every stage of the pipeline speaks: what stages decide ([`Classified`], [`Switched`], [`Exit`]), where
//! frames go ([`Sink`]), what a stage runs with ([`Context`]), where a frame entered
//! ([`Ingress`]), traces, and the input ports no device has.

use crate::counters::{CoreCounters, DropReason};
use crate::table::{FlowTables, Location, PortRole, TenantIdx, TunnelIdx};

use super::ahead::Ahead;
use super::events::Learner;
use super::fdb_cache::{FdbCache, Out, Unresolved};
use super::router::RouterState;
use super::spread::Spread;

/// The input port id of frames the control plane sends as a tenant's router (ARP
/// requests for its neighbours, gratuitous ARP): no device has it.
pub const CONTROL_PORT: u16 = u16::MAX;

/// The input port id of frames the control plane sends out of the uplink, whichever
/// port that is now (ARP requests for the underlay's next hops).
pub const UNDERLAY_PORT: u16 = u16::MAX - 1;

/// The input port id of frames another core handed over (SNAT replies whose session
/// is here): they run as if received on the uplink, whichever port that is now.
pub const HANDOFF_PORT: u16 = u16::MAX - 2;

/// How a frame leaves the router (and every way's end): the router takes frames by
/// value, since it may keep them (held, handed over) or rebuild them (answers, ICMP
/// errors).
pub(crate) enum Exit<F> {
    /// Leaves inside `tenant` the way `Out` says (the output stage).
    Output(TenantIdx, Ingress, Out, F),
    /// Back where it came from (answers built in place).
    ToIngress(TenantIdx, Ingress, F),
    /// Out of a port as it is (the uplink, the underlay, the router's fast path).
    Send(u16, F),
    /// Held until its next hop is resolved.
    Park(Unresolved, F),
    /// To the worker that holds its SNAT session.
    HandOff(u16, F),
    /// Nothing more: dropped (and counted), punted or consumed.
    Done,
}

/// What classification decided about a frame it kept (and may have changed) in place:
/// the tenant to switch it in, the router for traffic from the outside, or a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Classified {
    /// Inside `tenant`: learn the source, look up the destination (the switch).
    Switch(TenantIdx, Ingress),
    /// The same for a frame from a trunk whose 802.1Q tag is still on: it comes off
    /// after the switch, unless the frame leaves through a trunk, which only rewrites
    /// it (the MACs are read before anything moves them, and moved at most once).
    SwitchTagged(TenantIdx, Ingress),
    /// From the outside to one of the uplink's SNAT or publishing addresses.
    FromOutside,
    /// Out of a port as it is (answered in place).
    Send(u16),
    /// Nothing more: dropped (and counted) or punted.
    Done,
}

/// What the switch decided about a frame it only read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switched {
    /// Leaves the way `Out` says (the output stage).
    Output(Out),
    /// Addressed to the tenant's router MAC.
    Route,
    /// A broadcast ARP in a tenant with a router: the router answers for its
    /// addresses, the rest is flooded.
    GatewayArp,
    /// Nothing more: dropped (and counted).
    Done,
}

/// A stage's verdict type; [`Context::stop`] gives its "dropped" value.
pub(crate) trait Verdict {
    /// Nothing more to do with the frame.
    fn done() -> Self;
}

impl<F> Verdict for Exit<F> {
    #[inline(always)]
    fn done() -> Self {
        Exit::Done
    }
}

impl Verdict for Classified {
    #[inline(always)]
    fn done() -> Self {
        Classified::Done
    }
}

impl Verdict for Switched {
    #[inline(always)]
    fn done() -> Self {
        Switched::Done
    }
}

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
    /// Whether routed frames may take the router's fast path (off only to check it
    /// against the whole pipeline).
    pub fast_path: bool,
    /// Whether (and with whom) this core shares tunnelled traffic by its inner flow.
    pub spread: Option<Spread>,
    /// The port the frames came in on, whose drops are counted for it too
    /// ([`crate::counters::NO_PORT`]: none).
    pub in_port: u16,
    /// The keys the burst's prefetch pass hashed.
    pub ahead: &'a Ahead,
    /// The frame's place in its burst, where [`Context::ahead`] keeps its keys.
    pub at: usize,
}

/// What a core keeps across bursts for its stages: the learner, the FDB cache, the
/// router state, whom it spreads tunnels to, and the keys its last prefetch pass
/// hashed. One owner, so the worker's core and the offline core lend them to a
/// [`Context`] the same way.
pub struct CoreState {
    /// Learning and neighbour reports.
    pub learner: Learner,
    /// The core's FDB cache.
    pub cache: FdbCache,
    /// SNAT sessions and the ICMP budget.
    pub router: RouterState,
    /// Whether (and with whom) this core shares tunnelled traffic by its inner flow.
    pub spread: Option<Spread>,
    /// The keys the last burst's prefetch pass hashed.
    pub ahead: Ahead,
}

impl CoreState {
    /// The context a burst (or one offline frame) runs with.
    #[inline(always)]
    pub fn context<'a, T: Trace>(
        &'a mut self,
        counters: &'a CoreCounters,
        tracer: T,
        fast_path: bool,
    ) -> Context<'a, T> {
        Context {
            counters,
            learner: &mut self.learner,
            cache: &mut self.cache,
            router: &mut self.router,
            tracer,
            fast_path,
            spread: self.spread,
            in_port: crate::counters::NO_PORT,
            ahead: &self.ahead,
            at: 0,
        }
    }
}

impl<T: Trace> Context<'_, T> {
    #[inline(always)]
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.counters.add_drop(reason, 1);
        self.counters.add_port_drop(self.in_port, reason);
        note!(self, "drop: {} ({})", reason.name(), reason.help());
    }

    /// Drops and counts a frame: the verdict of a stage that stops it.
    #[inline(always)]
    pub(crate) fn stop<V: Verdict>(&mut self, reason: DropReason) -> V {
        self.drop(reason);
        V::done()
    }
}

/// Where a frame entered the tenant's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// A local port.
    Port(u16),
    /// A tunnel from another host.
    Tunnel(TunnelIdx),
    /// The tenant's router (routed, or sent by the control plane as the router).
    Router,
}

/// A tenant's id for trace notes.
pub(crate) fn tenant_id(tables: &FlowTables, tenant: TenantIdx) -> u32 {
    tables.tenant(tenant).map_or(u32::MAX, |t| t.id)
}

/// What trace notes call what the tables hold: `port #3`, `tunnel #1`, `host #2`,
/// `tenant #100` (its id, not its slot), which the control plane replaces with names.
pub(crate) struct Noted<'a, X>(pub(crate) &'a FlowTables, pub(crate) X);

impl std::fmt::Display for Noted<'_, Location> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Location::Port(port) => write!(f, "port #{port}"),
            Location::Host(host) => write!(f, "host #{host}"),
            Location::Router => f.write_str("the router"),
        }
    }
}

impl std::fmt::Display for Noted<'_, Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Out::Flood => f.write_str("unknown: flooded"),
            Out::Port(port) => write!(f, "port #{port}"),
            Out::TaggedPort(port, vid) => write!(f, "port #{port}, tagged {vid}"),
            Out::Tunnel(tunnel) => write!(f, "tunnel #{tunnel}"),
            Out::Drop(reason) => write!(f, "dropped ({})", reason.name()),
            Out::Route => f.write_str("the router"),
        }
    }
}

impl std::fmt::Display for Noted<'_, &PortRole> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self.1 {
            PortRole::Unused => f.write_str("unused"),
            PortRole::CrossConnect(peer) => write!(f, "cross-connected to port #{peer}"),
            PortRole::Access { tenant, security } => {
                write!(f, "access port of tenant #{}", tenant_id(self.0, tenant))?;
                match security {
                    Some(_) => f.write_str(", port security on"),
                    None => Ok(()),
                }
            }
            PortRole::Trunk => f.write_str("trunk"),
            PortRole::Uplink => f.write_str("uplink"),
        }
    }
}
