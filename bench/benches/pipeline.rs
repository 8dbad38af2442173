//! Nanoseconds per packet of each pipeline path, on byte buffers (no DPDK): the cost of
//! tenet's own logic without any device. One frame is recycled through the pipeline so
//! the loop allocates nothing.

use std::net::Ipv4Addr;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::counters::CoreCounters;
use dataplane::packet::frame::BufFrame;
use dataplane::packet::Mac;
use dataplane::pipeline::ahead::Ahead;
use dataplane::pipeline::events::{EventQueue, Learner};
use dataplane::pipeline::fdb_cache::{FdbCache, DEFAULT_ENTRIES};
use dataplane::pipeline::handle;
use dataplane::pipeline::router::RouterState;
use dataplane::pipeline::stage::{CoreState, NoTrace, Sink};
use dataplane::table::builder::TablesBuilder;
use dataplane::table::routing::{Interface, RouteTarget, Router};
use dataplane::table::{Design, FlowTables, Location};

const ACCESS_IN: u16 = 0;
const ACCESS_OUT: u16 = 1;
const TRUNK: u16 = 2;
const UPLINK: u16 = 3;
const SRC: Mac = [2, 0, 0, 0, 0x0a, 0];
const LOCAL_DST: Mac = [2, 0, 0, 0, 0x0b, 0];
const TRUNK_DST: Mac = [2, 0, 0, 0, 0x0b, 1];
const REMOTE_DST: Mac = [2, 0, 0, 0, 0x0b, 2];
const UPLINK_MAC: Mac = [2, 0, 0, 0, 0x0c, 1];
const PEER_MAC: Mac = [2, 0, 0, 0, 0x0c, 2];
const LOCAL_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
const KEY: u32 = 4242;
const VLAN: u16 = 100;
const ROUTER_MAC: Mac = [2, 0, 0, 0, 0x0d, 1];
const NEXT_HOP_MAC: Mac = [2, 0, 0, 0, 0x0d, 2];
const OUTSIDE_MAC: Mac = [2, 0, 0, 0, 0x0c, 0xfe];

fn tables() -> FlowTables {
    let mut b = TablesBuilder::new(Design::Dedicated, false);
    let t = b.tenant(KEY, Some(VLAN));
    b.access_port(ACCESS_IN, t, None);
    b.access_port(ACCESS_OUT, t, None);
    b.trunk_port(TRUNK, &[t]);
    b.uplink(UPLINK, UPLINK_MAC, LOCAL_IP);
    let tunnel = b.tunnel(1, PEER_IP, Some(PEER_MAC));
    b.tunnel_carries(tunnel, t);
    b.static_mac(t, LOCAL_DST, Location::Port(ACCESS_OUT));
    b.static_mac(t, TRUNK_DST, Location::Port(TRUNK));
    b.static_mac(t, REMOTE_DST, Location::Host(1));
    b.learned_mac(t, SRC, Location::Port(ACCESS_IN));
    // The tenant's router: 10.1.0.0/16 via 10.2.0.2 behind ACCESS_OUT; the rest by SNAT.
    let interface = |ip: [u8; 4], prefix| Interface {
        ip: ip.into(),
        prefix,
    };
    b.router(
        t,
        Router {
            mac: ROUTER_MAC,
            interfaces: vec![interface([10, 0, 0, 254], 24), interface([10, 2, 0, 1], 24)],
            here: true,
            snat_ip: Some(LOCAL_IP),
            route_lengths: 0,
            max_connections: u32::MAX,
        },
        Location::Router,
    );
    b.route(
        t,
        [10, 1, 0, 0].into(),
        16,
        RouteTarget::Via(t, [10, 2, 0, 2].into()),
    );
    b.neighbor(t, [10, 2, 0, 2].into(), NEXT_HOP_MAC);
    b.static_mac(t, NEXT_HOP_MAC, Location::Port(ACCESS_OUT));
    b.external(PEER_IP, Some(OUTSIDE_MAC));
    b.build()
}

/// A 64-byte Ethernet/IPv4/UDP frame (60 bytes without FCS).
fn udp(dst: Mac, src: Mac) -> Vec<u8> {
    udp_to(dst, src, [10, 1, 0, 1])
}

fn udp_to(dst: Mac, src: Mac, ip: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(src, dst)
        .ipv4([10, 0, 0, 1], ip, 64)
        .udp(1024, 9)
        .write(&mut out, &[0u8; 18])
        .expect("frame");
    out
}

fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend(0x8100u16.to_be_bytes());
    f.extend(vid.to_be_bytes());
    f.extend(&frame[12..]);
    f
}

fn gre(inner: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(UPLINK_MAC);
    f.extend(PEER_MAC);
    f.extend(0x0800u16.to_be_bytes());
    let total = (20 + 8 + inner.len()) as u16;
    let mut ip = etherparse::Ipv4Header::new(
        total - 20,
        64,
        etherparse::IpNumber(47),
        PEER_IP.octets(),
        LOCAL_IP.octets(),
    )
    .expect("ipv4");
    ip.header_checksum = ip.calc_header_checksum();
    f.extend(ip.to_bytes());
    f.extend([0x20, 0x00, 0x65, 0x58]);
    f.extend(KEY.to_be_bytes());
    f.extend(inner);
    f
}

/// Keeps the frame that came out, to be recycled; counts what did.
#[derive(Default)]
struct Recycle {
    frame: Option<BufFrame>,
    sent: u64,
}

impl Sink<BufFrame> for Recycle {
    fn send(&mut self, _port: u16, frame: BufFrame) {
        self.sent += 1;
        self.frame = Some(frame);
    }
}

/// One core's pipeline state against the benchmark's tables.
struct Core {
    tables: FlowTables,
    counters: CoreCounters,
    state: CoreState,
    sink: Recycle,
}

impl Core {
    fn new(router: RouterState) -> Self {
        Self {
            tables: tables(),
            counters: CoreCounters::default(),
            state: CoreState {
                learner: Learner::new(Arc::new(EventQueue::new(1024)), DEFAULT_ENTRIES),
                cache: FdbCache::default(),
                router,
                spread: None,
                ahead: Ahead::default(),
            },
            sink: Recycle::default(),
        }
    }

    fn handle(&mut self, in_port: u16, frame: BufFrame) {
        let mut cx = self.state.context(&self.counters, NoTrace, true);
        cx.in_port = in_port;
        handle(&self.tables, in_port, frame, &mut self.sink, &mut cx);
    }
}

fn path(c: &mut Criterion, name: &str, in_port: u16, template: Vec<u8>) {
    let mut core = Core::new(RouterState::default());
    let mut spare = BufFrame::new(&template);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut frame = core.sink.frame.take().unwrap_or_else(|| spare.clone());
            frame.reset(&template);
            core.handle(in_port, frame);
        })
    });
    group.finish();
    // Every frame either comes out or is counted as dropped; neither means the path was
    // filtered out of this run.
    let dropped = core.counters.snapshot().dropped_total();
    if core.sink.sent + dropped > 0 {
        assert!(core.sink.sent > 0, "{name}: nothing came out");
        assert_eq!(dropped, 0, "{name}: drops");
    }
    spare.reset(&template);
}

fn paths(c: &mut Criterion) {
    let plain = udp(LOCAL_DST, SRC);
    path(c, "access-to-access", ACCESS_IN, plain);
    path(
        c,
        "access-to-trunk (vlan push)",
        ACCESS_IN,
        udp(TRUNK_DST, SRC),
    );
    path(
        c,
        "trunk-to-access (vlan pop)",
        TRUNK,
        tagged(&udp(LOCAL_DST, [2, 0, 0, 0, 0x0d, 0]), VLAN),
    );
    path(c, "access-to-gre (encap)", ACCESS_IN, udp(REMOTE_DST, SRC));
    path(
        c,
        "gre-to-access (decap)",
        UPLINK,
        gre(&udp(LOCAL_DST, [2, 0, 0, 0, 0x0e, 0])),
    );
    path(
        c,
        "route (lpm, ttl, rewrite)",
        ACCESS_IN,
        udp(ROUTER_MAC, SRC),
    );
    path(
        c,
        "snat (established udp)",
        ACCESS_IN,
        udp_to(ROUTER_MAC, SRC, [203, 0, 113, 10]),
    );
    path(
        c,
        "broadcast flood (3 outputs)",
        ACCESS_IN,
        udp([0xff; 6], SRC),
    );
}

/// New SNAT connections: every frame opens a UDP session to another remote (source port
/// and destination address from a counter), so each pays port allocation and two index
/// inserts. The table is emptied before it fills.
fn snat_new_connections(c: &mut Criterion) {
    use dataplane::packet::checksum;
    use dataplane::packet::frame::Frame;

    const SESSIONS: usize = 1 << 20;
    let mut core = Core::new(RouterState::new(SESSIONS, 0, 1));
    let mut template = udp_to(ROUTER_MAC, SRC, [203, 0, 0, 0]);
    // UDP over IPv4 may go without a checksum; the IP header's is patched per frame.
    template[40..42].copy_from_slice(&[0, 0]);
    let base_checksum = u16::from_be_bytes([template[24], template[25]]);
    let mut n: u32 = 0;
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.bench_function("snat new connection (udp)", |b| {
        b.iter(|| {
            if core.state.router.nat.len() >= SESSIONS - 1 {
                core.state.router.nat.clear();
            }
            n = n.wrapping_add(1);
            let mut frame = core
                .sink
                .frame
                .take()
                .unwrap_or_else(|| BufFrame::new(&template));
            frame.reset(&template);
            let data = frame.data_mut();
            let dst = u32::from_be_bytes([203, 0, 0, 0]) | (n >> 6) & 0xffff;
            data[30..34].copy_from_slice(&dst.to_be_bytes());
            let sum = checksum::update_u32(base_checksum, u32::from_be_bytes([203, 0, 0, 0]), dst);
            data[24..26].copy_from_slice(&sum.to_be_bytes());
            data[34..36].copy_from_slice(&(1024 + (n & 63) as u16).to_be_bytes());
            core.handle(ACCESS_IN, frame);
        })
    });
    group.finish();
    assert_eq!(
        core.counters.snapshot().dropped_total(),
        0,
        "new connections dropped"
    );
}

criterion_group!(benches, paths, snat_new_connections);
criterion_main!(benches);
