//! Nanoseconds per packet of switching at scale, a burst of 32 at a time on byte
//! buffers: the worker's own per-burst sequence ([`Core::begin`], [`Core::prefetch`],
//! [`Core::run`]) over `xconnect`'s tables (no lookup: the harness's own cost), `l2`'s
//! and `l2-many`'s (1,000 tenants on trunks, 100,000 endpoints) and `l2-million`'s
//! (1,000,000), with the replay scenarios' frames.
//!
//! The replay (`tenet-bench run`) measures these through a pcap PMD that copies each
//! frame out of its own buffer, 100,000 buffers for `l2-many`: those copies miss the
//! cache as the FDB's lines do, and cost tenet more than testpmd beside it. Here the
//! burst's 32 buffers are rewritten in place, as a NIC writes its descriptors' buffers,
//! so what `l2-many` costs over `l2` is the switch's own: the tables, the trunk's
//! tenants, the core's caches and the learner. The worker's clock stands still (second
//! 0), so the learner's once-a-second question about each sender is not in the
//! figures.

use std::sync::Arc;

use bench::template::{
    self, dst_macs, tenant_mac, tenant_src_mac, tenant_vlan, Kind, Size, Spec, SRC_MAC,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::counters::CoreCounters;
use dataplane::packet::frame::{BufFrame, Frame};
use dataplane::packet::Mac;
use dataplane::pipeline::events::EventQueue;
use dataplane::pipeline::fdb_cache::DEFAULT_ENTRIES;
use dataplane::pipeline::stage::Sink;
use dataplane::pipeline::{Core, WorkerSlot};
use dataplane::table::builder::TablesBuilder;
use dataplane::table::publish::TablePublisher;
use dataplane::table::{Design, FlowTables, Location};

const BURST: usize = 32;
const IN: u16 = 0;
const OUT: u16 = 1;
const TENANTS: usize = 1000;

/// Takes back every frame that came out, to be rewritten for the next burst; counts
/// those sent to the output port.
struct Recycle {
    back: Vec<BufFrame>,
    sent: u64,
}

impl Sink<BufFrame> for Recycle {
    #[inline(always)]
    fn send(&mut self, port: u16, frame: BufFrame) {
        self.sent += u64::from(port == OUT);
        self.back.push(frame);
    }
}

/// A scenario's frames: flow `i`'s destination and source MACs and VLAN.
#[derive(Clone, Copy)]
enum Input {
    /// `l2`: untagged, one sender, destinations 0..4 of `dst_macs(4)`.
    Plain,
    /// `l2-many`: tagged, tenant `i % 1000`, destination `(i / 1000) % 100` of it.
    Tenants,
}

impl Input {
    /// The replay's first frame of the scenario (64 bytes with FCS), whose MACs and
    /// VLAN each burst rewrites.
    fn template(self) -> Vec<u8> {
        let (kind, macs) = match self {
            Input::Plain => (Kind::Plain, 4),
            Input::Tenants => (Kind::Tenants, 100),
        };
        let mut spec = Spec::new(kind, Size::Fixed(64), 1, macs);
        spec.tenants = TENANTS;
        template::build(&spec).expect("template").remove(0).bytes
    }

    fn write(self, i: usize, data: &mut [u8], plain_dsts: &[Mac]) {
        let (dst, src) = match self {
            Input::Plain => (plain_dsts[i % plain_dsts.len()], SRC_MAC),
            Input::Tenants => {
                let tenant = i % TENANTS;
                let vid = tenant_vlan(tenant).to_be_bytes();
                data[14..16].copy_from_slice(&vid);
                (
                    tenant_mac(tenant, (i / TENANTS) % 100),
                    tenant_src_mac(tenant),
                )
            }
        };
        data[..6].copy_from_slice(&dst);
        data[6..12].copy_from_slice(&src);
    }
}

/// `l2`'s tables: one tenant, two access ports, its 4 destinations behind the second,
/// the sender learned on the first.
fn plain_tables() -> FlowTables {
    let mut b = TablesBuilder::new(Design::Shared, false);
    let t = b.tenant(1, None);
    b.access_port(IN, t, None);
    b.access_port(OUT, t, None);
    for mac in dst_macs(4) {
        b.static_mac(t, mac, Location::Port(OUT));
    }
    b.learned_mac(t, SRC_MAC, Location::Port(IN));
    b.build()
}

/// `l2-many`'s tables with `macs` endpoints per tenant behind the output trunk; each
/// tenant's sender learned on the input trunk, as after the replay's warm-up.
fn tenant_tables(macs: usize) -> FlowTables {
    let mut b = TablesBuilder::new(Design::Shared, false);
    b.reserve_macs(TENANTS * (macs + 1));
    let tenants: Vec<_> = (0..TENANTS)
        .map(|t| b.tenant(1 + t as u32, Some(tenant_vlan(t))))
        .collect();
    b.trunk_port(IN, &tenants);
    b.trunk_port(OUT, &tenants);
    for (i, &t) in tenants.iter().enumerate() {
        for m in 0..macs {
            b.static_mac(t, tenant_mac(i, m), Location::Port(OUT));
        }
        b.learned_mac(t, tenant_src_mac(i), Location::Port(IN));
    }
    b.build()
}

fn run(c: &mut Criterion, name: &str, tables: FlowTables, input: Input, flows: usize) {
    let fdb = tables.fdb.len();
    let publisher = TablePublisher::new(tables);
    let slot = WorkerSlot {
        index: 0,
        count: 1,
        nat_sessions: 1024,
        spread_tunnels: false,
        cache_entries: DEFAULT_ENTRIES,
    };
    let mut core = Core::new(publisher.reader(), Arc::new(EventQueue::new(1024)), slot);
    let counters = CoreCounters::default();
    let template = input.template();
    let plain_dsts = dst_macs(4);
    let mut frames: Vec<BufFrame> = (0..BURST).map(|_| BufFrame::new(&template)).collect();
    let mut sink = Recycle {
        back: Vec::with_capacity(BURST),
        sent: 0,
    };
    let mut flow = 0;
    let mut bursts = 0u64;
    let mut group = c.benchmark_group("burst");
    group.throughput(Throughput::Elements(BURST as u64));
    group.bench_function(name, |b| {
        b.iter(|| {
            for frame in frames.iter_mut() {
                // Switching leaves these frames as they came (a trunk's tag is
                // rewritten in place), so only what a flow changes is written.
                if frame.len() != template.len() {
                    frame.reset(&template);
                }
                input.write(flow, frame.data_mut(), &plain_dsts);
                flow = (flow + 1) % flows;
            }
            core.begin(0, &mut sink, &counters);
            core.prefetch(IN, frames.iter().map(|f| f.data()));
            core.run(IN, frames.drain(..), &mut sink, &counters);
            std::mem::swap(&mut frames, &mut sink.back);
            bursts += 1;
            // A frame that did not come out fails the case below; until then the
            // bursts stay full.
            while frames.len() < BURST {
                frames.push(BufFrame::new(&template));
            }
        })
    });
    group.finish();
    // Every frame of every burst left through the output port (none when the case was
    // filtered out of this run).
    let dropped = counters.snapshot().dropped_total();
    assert_eq!(dropped, 0, "{name}: drops ({fdb} FDB entries)");
    assert_eq!(sink.sent, bursts * BURST as u64, "{name}: frames lost");
}

/// `xconnect`'s tables: the input port wired to the output, no lookup: what the
/// harness itself costs (frames written, handed through the dispatcher, taken back),
/// as testpmd's io forwarding is the replay's zero.
fn cross_connect_tables() -> FlowTables {
    let mut b = TablesBuilder::new(Design::Shared, false);
    b.cross_connect(IN, OUT);
    b.build()
}

fn scale(c: &mut Criterion) {
    run(
        c,
        "xconnect (256 frames)",
        cross_connect_tables(),
        Input::Plain,
        256,
    );
    run(
        c,
        "l2 (4 MACs, 256 frames)",
        plain_tables(),
        Input::Plain,
        256,
    );
    let many = tenant_tables(100);
    run(
        c,
        "l2-many (100,000 MACs, 256 frames)",
        many.clone(),
        Input::Tenants,
        256,
    );
    run(
        c,
        "l2-many (100,000 MACs, 10,000 frames)",
        many.clone(),
        Input::Tenants,
        10_000,
    );
    run(
        c,
        "l2-many (100,000 MACs, 100,000 frames)",
        many,
        Input::Tenants,
        100_000,
    );
    run(
        c,
        "l2-million (1,000,000 MACs, 100,000 frames)",
        tenant_tables(1000),
        Input::Tenants,
        100_000,
    );
}

criterion_group!(benches, scale);
criterion_main!(benches);
