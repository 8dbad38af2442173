//! The DPDK layer and the worker on real virtual devices (`net_ring`, `net_null`,
//! `net_vhost`, with `net_virtio_user` guests). Needs root and free hugepages, like
//! tenetd itself. DPDK initialises once per process, so every test shares one EAL and
//! makes its own pool and ports.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dataplane::counters::DropReason;
use dataplane::dpdk::{
    Backend, DeviceNamer, Eal, EalOptions, Mbuf, MbufBatch, MbufRing, Mempool, Port, PortConfig,
    RxQueue, TxQueue, BURST,
};
use dataplane::pipeline::CrossConnect;
use dataplane::worker::{Backoff, Worker, WorkerPlan};

static EAL: OnceLock<Eal> = OnceLock::new();
static NAMER: Mutex<Option<DeviceNamer>> = Mutex::new(None);

fn eal() -> &'static Eal {
    EAL.get_or_init(|| {
        Eal::init(EalOptions {
            file_prefix: format!("tenet-dptest-{}", std::process::id()),
            memory_mb: 256,
            // Memory a vhost-user port can map: the virtio-user guests below need it.
            single_file_segments: true,
            ..EalOptions::default()
        })
        .expect("EAL init (root and free hugepages needed)")
    })
}

/// Attaches a port of `backend` with a fresh device name.
fn attach(backend: &Backend) -> Port {
    eal();
    let devargs = {
        let mut namer = NAMER.lock().unwrap();
        backend.devargs(1, namer.get_or_insert_with(DeviceNamer::default))
    };
    Port::attach(devargs.last().unwrap()).expect("attach")
}

/// A port of `backend` configured with one queue each way on `pool`, and started.
fn started(backend: &Backend, pool: &Mempool) -> (Port, RxQueue, TxQueue) {
    let mut port = attach(backend);
    let (mut rx, mut tx) = port.configure(&PortConfig::default(), pool).unwrap();
    port.start().unwrap();
    (port, rx.remove(0), tx.remove(0))
}

/// Waits up to 5 s for `worker` to have dropped `count` frames for `reason`.
fn wait_for_drops(worker: &Worker, reason: DropReason, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while worker.counters().snapshot().dropped(reason) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pool(label: &str, count: u32) -> Mempool {
    eal();
    Mempool::new(label, count, -1).expect("mempool")
}

/// A 64-byte Ethernet frame carrying `seq` so order and identity can be checked.
fn frame(seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0x0b, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x0a, 0x01]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    f
}

fn mbuf_with(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("alloc");
    assert!(m.set_data(bytes));
    m
}

fn receive(queue: &mut dataplane::dpdk::RxQueue, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut batch = MbufBatch::new();
    while got.len() < want && Instant::now() < deadline {
        if queue.rx_burst(&mut batch) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(batch.as_slice().iter().map(|m| m.data().to_vec()));
        batch.free_all();
    }
    got
}

#[test]
fn mempool_lends_and_takes_back() {
    let pool = pool("lend", 1023);
    let before = pool.available();
    assert_eq!(before, 1023);
    let m = mbuf_with(&pool, &frame(7));
    assert_eq!(m.len(), 64);
    assert_eq!(pool.available(), before - 1);
    drop(m);
    assert_eq!(pool.available(), before);
}

#[test]
fn mbuf_prepend_adjust_append() {
    let pool = pool("shape", 63);
    let mut m = mbuf_with(&pool, &frame(1));
    let head = m.headroom();
    assert!(m.prepend(42));
    assert_eq!((m.len(), m.headroom()), (106, head - 42));
    m.data_mut()[..2].copy_from_slice(&[0xaa, 0xbb]);
    assert!(m.adjust(42));
    assert_eq!(m.data(), frame(1).as_slice());
    assert!(
        !m.prepend(head + 1),
        "prepend past the headroom must refuse"
    );
    assert!(!m.adjust(65), "adjust past the frame must refuse");
    assert_eq!(m.len(), 64);
    assert!(m.append(10) && m.len() == 74);
    assert!(m.truncate(60) && m.len() == 60);
}

#[test]
fn a_leaked_drain_leaks_its_packets_but_never_frees_one_twice() {
    let pool = pool("drainleak", 63);
    let mut batch = MbufBatch::new();
    for seq in 0..4 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    let mut drain = batch.drain();
    let first = drain.next().unwrap();
    std::mem::forget(drain);
    drop(first);
    assert!(
        batch.is_empty(),
        "the batch gave its packets to the iterator"
    );
    drop(batch);
    assert_eq!(pool.available(), 63 - 3, "three leaked, none freed twice");
}

#[test]
fn chained_frames_are_joined_at_receive_or_dropped_when_too_long() {
    let pool = pool("chains", 63);
    let whole = frame(1);
    let mut short = mbuf_with(&pool, &whole[..40]);
    short.chain(mbuf_with(&pool, &whole[40..])).ok().unwrap();
    assert!(short.is_chained());
    let mut long = mbuf_with(&pool, &[0xab; 1500]);
    long.chain(mbuf_with(&pool, &[0xcd; 1500])).ok().unwrap();
    let mut batch = MbufBatch::new();
    batch.push(short).ok().unwrap();
    batch.push(mbuf_with(&pool, &frame(2))).ok().unwrap();
    batch.push(long).ok().unwrap();
    batch.push(mbuf_with(&pool, &frame(3))).ok().unwrap();
    assert_eq!(batch.join_segments(), (1, 1), "one joined, one too long");
    let got: Vec<Vec<u8>> = batch.as_slice().iter().map(|m| m.data().to_vec()).collect();
    assert_eq!(got, [whole, frame(2), frame(3)], "in order, whole");
    assert!(batch.as_slice().iter().all(|m| !m.is_chained()));
    drop(batch);
    assert_eq!(pool.available(), 63, "every segment went back");
}

#[test]
fn a_ring_whose_consumer_left_first_frees_what_its_producer_sent_after() {
    let pool = pool("ringleft", 127);
    let (mut producer, consumer) = MbufRing::create("left", 64).unwrap();
    drop(consumer);
    let mut batch = MbufBatch::new();
    for seq in 0..8 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    assert_eq!(producer.enqueue_burst(&mut batch), 8);
    assert_eq!(pool.available(), 127 - 8);
    drop(producer);
    assert_eq!(pool.available(), 127, "the last end drained the ring");
}

#[test]
fn ring_port_loops_frames_back_in_order() {
    let pool = pool("ringloop", 2047);
    let (port, mut rx, mut tx) = started(&Backend::Ring, &pool);
    let mut batch = MbufBatch::new();
    for seq in 0..BURST as u32 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    assert_eq!(tx.tx_burst(&mut batch), BURST);
    let got = receive(&mut rx, BURST, Duration::from_secs(1));
    let want: Vec<Vec<u8>> = (0..BURST as u32).map(frame).collect();
    assert_eq!(got, want);
    let stats = port.stats();
    assert_eq!(
        (stats.tx_packets, stats.rx_packets),
        (BURST as u64, BURST as u64)
    );
}

#[test]
fn null_port_sinks_and_counts() {
    let pool = pool("nullsink", 1023);
    let mut port = attach(&Backend::Null {
        rx: false,
        packet_size: None,
    });
    assert!(port.name().starts_with("net_null"));
    let (_rx, mut tx) = port.configure(&PortConfig::default(), &pool).unwrap();
    port.start().unwrap();
    let mut batch = MbufBatch::new();
    for seq in 0..20 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    assert_eq!(tx[0].tx_burst(&mut batch), 20);
    assert_eq!(port.stats().tx_packets, 20);
    assert_eq!(pool.available(), 1023, "the sink freed every packet");
    let xstats = port.xstats().unwrap();
    assert!(xstats
        .iter()
        .any(|(name, value)| name == "tx_good_packets" && *value == 20));
    assert!(port.link().up);
}

#[test]
fn a_multi_queue_device_spreads_flows_over_every_queue_with_a_symmetric_key() {
    let pool = pool("rss", 1023);
    let mut port = attach(&Backend::Null {
        rx: false,
        packet_size: None,
    });
    // One queue: nothing to spread, and nothing asked of the device.
    port.configure(&PortConfig::default(), &pool).unwrap();
    let single = port.rss().expect("net_null reports its RSS");
    assert!(!single.symmetric(), "{single:?}");
    let config = PortConfig {
        queues: 3,
        ..PortConfig::default()
    };
    let (rx, _tx) = port.configure(&config, &pool).unwrap();
    port.start().unwrap();
    assert_eq!(rx.len(), 3);
    let rss = port.rss().expect("net_null reports its RSS");
    assert!(rss.symmetric(), "{rss:?}");
    assert_ne!(rss.hash_types, 0);
    assert!(!rss.table.is_empty());
    for queue in 0..3u16 {
        let share = rss.table.iter().filter(|&&q| q == queue).count();
        assert!(
            share.abs_diff(rss.table.len() / 3) <= 1,
            "queue {queue} has {share} of {} entries",
            rss.table.len()
        );
    }
    port.stop().unwrap();
}

/// Sends `count` frames into `into` (a ring port, so they come back on its RX side).
/// A worker on `core` polling `rx` and transmitting on `tx`, nothing else.
fn plan(core: usize, rx: Vec<RxQueue>, tx: Vec<TxQueue>) -> WorkerPlan {
    WorkerPlan {
        core,
        rx,
        tx,
        ..WorkerPlan::default()
    }
}

fn spawn(plan: WorkerPlan, pipeline: CrossConnect) -> Worker {
    Worker::spawn(plan, pipeline, Backoff::default()).unwrap()
}

fn inject(tx: &mut dataplane::dpdk::TxQueue, pool: &Mempool, seqs: std::ops::Range<u32>) {
    let mut batch = MbufBatch::new();
    for seq in seqs {
        if batch.push(mbuf_with(pool, &frame(seq))).is_err() {
            unreachable!("batch is flushed before it fills");
        }
        if batch.room() == 0 {
            assert_eq!(tx.tx_burst(&mut batch), BURST);
        }
    }
    let n = batch.len();
    assert_eq!(tx.tx_burst(&mut batch), n);
}

#[test]
fn worker_cross_connects_ports() {
    let pool = pool("xconnect", 4095);
    let (a, a_rx, mut a_tx) = started(&Backend::Ring, &pool);
    let (b, mut b_rx, b_tx) = started(&Backend::Ring, &pool);
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), b.id());
    // The worker polls a and transmits on b; the test plays the outside world.
    let worker = spawn(plan(0, vec![a_rx], vec![b_tx]), xc);
    inject(&mut a_tx, &pool, 0..500);
    let got = receive(&mut b_rx, 500, Duration::from_secs(5));
    let want: Vec<Vec<u8>> = (0..500).map(frame).collect();
    assert_eq!(got.len(), 500);
    assert!(got == want, "frames changed or reordered");
    let stats = worker.counters().snapshot();
    assert_eq!((stats.rx_packets, stats.tx_packets), (500, 500));
    assert_eq!(stats.dropped_total(), 0);
    assert!(stats.busy_cycles > 0);
    worker.stop();
}

#[test]
fn rings_carry_packets_to_the_core_that_owns_the_tx_queue() {
    let pool = pool("handoff", 4095);
    let (a, a_rx, mut a_tx) = started(&Backend::Ring, &pool);
    let (b, mut b_rx, b_tx) = started(&Backend::Ring, &pool);
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), b.id());
    let (producer, consumer) = MbufRing::create("handoff", 1024).unwrap();
    let receiver = spawn(
        WorkerPlan {
            outbound: vec![(b.id(), producer)],
            ..plan(0, vec![a_rx], vec![])
        },
        xc.clone(),
    );
    let transmitter = spawn(
        WorkerPlan {
            inbound: vec![(b.id(), consumer)],
            ..plan(1, vec![], vec![b_tx])
        },
        xc,
    );
    inject(&mut a_tx, &pool, 0..300);
    let got = receive(&mut b_rx, 300, Duration::from_secs(5));
    assert_eq!(got, (0..300).map(frame).collect::<Vec<_>>());
    let (r, t) = (
        receiver.counters().snapshot(),
        transmitter.counters().snapshot(),
    );
    assert_eq!((r.rx_packets, r.tx_packets), (300, 0));
    assert_eq!(t.tx_packets, 300);
    assert_eq!(r.dropped_total() + t.dropped_total(), 0);
    receiver.stop();
    transmitter.stop();
}

#[test]
fn refused_packets_are_freed_and_counted() {
    let pool = pool("refused", 2047);
    let (a, a_rx, mut a_tx) = started(&Backend::Ring, &pool);
    // A vhost-user server nobody connects to: its TX refuses everything.
    let sock = std::env::temp_dir().join(format!("tenet-refuse-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let (dead, _dead_rx, dead_tx) = started(
        &Backend::VhostUser {
            path: sock.clone(),
            client: false,
        },
        &pool,
    );
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), dead.id());
    let worker = spawn(plan(0, vec![a_rx], vec![dead_tx]), xc);
    let before = pool.available();
    inject(&mut a_tx, &pool, 0..100);
    wait_for_drops(&worker, DropReason::TxRefused, 100);
    let stats = worker.counters().snapshot();
    assert_eq!(stats.dropped(DropReason::TxRefused), 100);
    assert_eq!(stats.tx_packets, 0);
    assert_eq!(
        pool.available(),
        before,
        "refused packets went back to the pool"
    );
    worker.stop();
    drop(dead);
    assert!(
        !sock.exists(),
        "detaching a vhost-user server removes its socket"
    );
}

#[test]
fn no_output_is_a_counted_drop() {
    let pool = pool("nooutput", 1023);
    let (_a, a_rx, mut a_tx) = started(&Backend::Ring, &pool);
    let worker = spawn(plan(1, vec![a_rx], vec![]), CrossConnect::default());
    let before = pool.available();
    inject(&mut a_tx, &pool, 0..40);
    wait_for_drops(&worker, DropReason::NoOutput, 40);
    assert_eq!(
        worker.counters().snapshot().dropped(DropReason::NoOutput),
        40
    );
    assert_eq!(pool.available(), before);
    worker.stop();
}

#[test]
fn idle_worker_backs_off() {
    let pool = pool("idle", 255);
    let (_a, a_rx, _a_tx) = started(&Backend::Ring, &pool);
    let worker = spawn(plan(1, vec![a_rx], vec![]), CrossConnect::default());
    std::thread::sleep(Duration::from_millis(300));
    let sleeps = worker.counters().snapshot().idle_sleeps;
    // 300 ms of sleeps capped at 500 us: hundreds, not the millions of a busy spin.
    assert!((100..5000).contains(&sleeps), "idle sleeps: {sleeps}");
    worker.stop();
}

#[test]
fn bond_of_null_members_carries_traffic() {
    let pool = pool("bond", 2047);
    // net_ring cannot change its MAC, which a bond requires of its members; net_null
    // can, and as a generator it also feeds the bond's RX from the active member.
    let member = Backend::Null {
        rx: true,
        packet_size: Some(64),
    };
    let mut port = {
        eal();
        let devargs = {
            let mut namer = NAMER.lock().unwrap();
            Backend::Bond {
                mode: dataplane::dpdk::BondMode::ActiveBackup,
                members: vec![member.clone(), member],
            }
            .devargs(1, namer.get_or_insert_with(DeviceNamer::default))
        };
        let (own, members) = devargs.split_last().unwrap();
        let members: Vec<Port> = members.iter().map(|m| Port::attach(m).unwrap()).collect();
        let mut bond = Port::attach(own).expect("attach bond");
        bond.adopt_members(members);
        bond
    };
    assert!(port.name().starts_with("net_bonding"));
    let (mut rx, mut tx) = port.configure(&PortConfig::default(), &pool).unwrap();
    port.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !port.link().up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(port.link().up, "bond link up once a member is active");
    let mut batch = MbufBatch::new();
    for seq in 0..16 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    assert_eq!(tx[0].tx_burst(&mut batch), 16);
    assert_eq!(port.stats().tx_packets, 16, "the active member sent them");
    let got = receive(&mut rx[0], 32, Duration::from_secs(2));
    assert!(
        got.len() >= 32,
        "frames from the active member reach the bond's RX"
    );
    drop(rx);
    port.stop().unwrap();
}

#[test]
fn tap_port_creates_and_removes_its_interface() {
    let pool = pool("tap", 1023);
    let name = format!("tnt{}", std::process::id() % 100_000);
    let iface = std::path::Path::new("/sys/class/net").join(&name);
    let mut port = attach(&Backend::Tap {
        interface: name.clone(),
    });
    let (_rx, _tx) = port.configure(&PortConfig::default(), &pool).unwrap();
    port.start().unwrap();
    assert!(iface.exists(), "tap interface {name} exists while attached");
    port.detach();
    // The tap PMD closes the device's file on detach; the kernel unregisters the
    // interface after the last reference to it goes, which can take a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while iface.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!iface.exists(), "tap interface {name} removed on detach");
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ip {args:?}: {out:?}");
}

/// A veth pair in this namespace, removed on drop.
struct VethPair(String, String);

impl VethPair {
    fn new(tag: &str) -> Self {
        let a = format!("{tag}a{}", std::process::id() % 100_000);
        let b = format!("{tag}b{}", std::process::id() % 100_000);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        for end in [&a, &b] {
            // Neighbour discovery would add frames of the kernel's own.
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            ip(&["link", "set", end, "up"]);
        }
        Self(a, b)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

/// `frame(seq)` behind `tags` (TPID, VID), outermost first.
fn tagged_frame(seq: u32, tags: &[(u16, u16)]) -> Vec<u8> {
    let plain = frame(seq);
    let mut f = plain[..12].to_vec();
    for (tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&plain[12..]);
    f
}

#[test]
fn packet_ports_carry_frames_with_their_vlan_tags_outside_dpdks_port_table() {
    let pool = pool("pkt", 2047);
    let veth = VethPair::new("tp");
    let mut a = Port::open_interface(&veth.0).unwrap();
    let mut b = Port::open_interface(&veth.1).unwrap();
    assert!(!a.is_dpdk());
    assert!(usize::from(a.id()) >= dataplane::MAX_DPDK_PORTS && a.id() != b.id());
    let sys_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.0)).unwrap();
    let mac: Vec<String> = a.mac().iter().map(|x| format!("{x:02x}")).collect();
    assert_eq!(mac.join(":"), sys_mac.trim());
    let config = PortConfig {
        mtu: Some(1500),
        ..PortConfig::default()
    };
    let (mut a_rx, a_tx) = a.configure(&config, &pool).unwrap();
    let (_b_rx, mut b_tx) = b.configure(&config, &pool).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    assert!(a.link().up);

    // Untagged, one tag, a spoofed double tag (the kernel lifts the outer one off the
    // frame; the switch must see it again), and one frame too big for the link.
    let mut full_size_tagged = tagged_frame(5, &[(0x8100, 300)]);
    full_size_tagged.resize(1500 + 14 + 4, 0);
    let frames = [
        tagged_frame(1, &[]),
        tagged_frame(2, &[(0x8100, 200)]),
        tagged_frame(3, &[(0x88a8, 100), (0x8100, 200)]),
        tagged_frame(4, &[(0x8100, 0x2000 | 7)]),
        full_size_tagged,
    ];
    // Over the MTU without a tag: the kernel would drop it unseen; tenet counts it.
    let mut oversized = frame(6);
    oversized.resize(1500 + 14 + 1, 0);
    let mut batch = MbufBatch::new();
    for f in frames.iter().chain([&oversized]) {
        batch.push(mbuf_with(&pool, f)).ok().unwrap();
    }
    assert_eq!(b_tx[0].tx_burst(&mut batch), frames.len());
    assert!(batch.is_empty(), "the oversized frame is freed, not kept");
    let got = receive(&mut a_rx[0], frames.len(), Duration::from_secs(5));
    assert_eq!(got, frames.to_vec());
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.rx_packets, sb.tx_packets, sb.tx_errors), (5, 5, 1));

    // A full burst, several times over: nothing lost, nothing out of order.
    for round in 0..8u32 {
        let mut batch = MbufBatch::new();
        for i in 0..BURST as u32 {
            batch
                .push(mbuf_with(&pool, &frame(round * 100 + i)))
                .ok()
                .unwrap();
        }
        assert_eq!(b_tx[0].tx_burst(&mut batch), BURST);
        let got = receive(&mut a_rx[0], BURST, Duration::from_secs(5));
        let want: Vec<Vec<u8>> = (0..BURST as u32).map(|i| frame(round * 100 + i)).collect();
        assert_eq!(got, want);
    }
    // While the link is down the kernel sends nothing and the TX ring fills up; once
    // it is up again, the next burst gets everything waiting out.
    ip(&["link", "set", &veth.1, "down"]);
    let mut queued = 0;
    for round in 0..40u32 {
        let mut batch = MbufBatch::new();
        for i in 0..BURST as u32 {
            batch
                .push(mbuf_with(&pool, &frame(10_000 + round * 100 + i)))
                .ok()
                .unwrap();
        }
        queued += b_tx[0].tx_burst(&mut batch);
    }
    assert!(
        (BURST..40 * BURST).contains(&queued),
        "ring filled: {queued}"
    );
    ip(&["link", "set", &veth.1, "up"]);
    std::thread::sleep(Duration::from_millis(200));
    let mut last = MbufBatch::new();
    last.push(mbuf_with(&pool, &frame(99_999))).ok().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < queued + 1 && Instant::now() < deadline {
        if !last.is_empty() {
            b_tx[0].tx_burst(&mut last);
        }
        got.extend(receive(
            &mut a_rx[0],
            queued + 1 - got.len(),
            Duration::from_millis(50),
        ));
    }
    assert_eq!(
        got.len(),
        queued + 1,
        "what waited in the ring, then the new frame"
    );
    assert_eq!(got.last(), Some(&frame(99_999)));

    let id = a.id();
    a.detach();
    assert_ne!(
        Port::open_interface(&veth.0).unwrap().id(),
        id,
        "a queue end still holds the id"
    );
    drop((a_rx, a_tx));
    // The id is free again for the next interface.
    let again = Port::open_interface(&veth.0).unwrap();
    assert_eq!(again.id(), id);
}

#[test]
fn a_multi_queue_packet_port_spreads_flows_without_duplicates() {
    let pool = pool("pktmq", 4095);
    let veth = VethPair::new("tq");
    let mut a = Port::open_interface(&veth.0).unwrap();
    let mut b = Port::open_interface(&veth.1).unwrap();
    let two = PortConfig {
        queues: 2,
        ..PortConfig::default()
    };
    let (mut a_rx, _a_tx) = a.configure(&two, &pool).unwrap();
    let (_b_rx, mut b_tx) = b.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    assert_eq!(a_rx.len(), 2);
    // IPv4/UDP frames of 64 flows, so the fanout hash has something to spread.
    let flow_frame = |flow: u8| {
        let mut f = frame(u32::from(flow));
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, flow, 10, 0, 1, 1,
        ]);
        f[34..38].copy_from_slice(&[0x30, flow, 0x30, 0x39]);
        f
    };
    let mut sent = Vec::new();
    for chunk in 0..2u8 {
        let mut batch = MbufBatch::new();
        for i in 0..BURST as u8 {
            let f = flow_frame(chunk * BURST as u8 + i);
            sent.push(f.clone());
            batch.push(mbuf_with(&pool, &f)).ok().unwrap();
        }
        assert_eq!(b_tx[0].tx_burst(&mut batch), BURST);
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut got = Vec::new();
    let mut per_queue = Vec::new();
    for q in a_rx.iter_mut() {
        let frames = receive(q, sent.len(), Duration::from_millis(300));
        per_queue.push(frames.len());
        got.extend(frames);
    }
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every frame once, over {per_queue:?}");
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both queues used: {per_queue:?}"
    );
}

/// A TCP/IPv4 frame of `payload` bytes from 10.0.0.1:40000 to 10.0.0.2:5201, as a
/// container's kernel hands over a large segment (the TCP checksum left partial).
fn large_segment(payload: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(|i| (i * 7 + 3) as u8).collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 5201, 1000, 64240)
        .ack(1)
        .write(&mut frame, &data)
        .unwrap();
    let at = 14 + 20;
    dataplane::packet::gso::make_partial(&mut frame, 14).unwrap();
    assert_eq!(frame.len(), at + 20 + payload);
    frame
}

#[test]
fn a_large_segment_is_cut_for_a_port_that_cannot_take_it() {
    let pool = pool("cut", 1023).with_large(Mempool::large("cutlarge", 64, -1).unwrap());
    let (_a, mut a_rx, a_tx) = started(&Backend::Ring, &pool);
    let large = large_segment(20_000);
    let mut mbuf = pool.large_pool().unwrap().alloc().unwrap();
    assert!(mbuf.append(large.len()));
    mbuf.data_mut().copy_from_slice(&large);
    mbuf.set_gso_size(1448);
    let counters = dataplane::counters::CoreCounters::default();
    let mut outputs = dataplane::pipeline::Outputs::new(vec![a_tx], vec![]);
    outputs.push(a_rx.port(), mbuf, &counters);
    outputs.flush(&counters);
    let got = receive(&mut a_rx, 14, Duration::from_secs(2));
    // 20,000 bytes at 1,448 a segment: 13 full ones and 1,176 bytes.
    assert_eq!(got.len(), 14, "{:?}", counters.snapshot());
    check_segments(&got, &large, 1448);
    assert_eq!(counters.snapshot().tx_packets, 14);
}

/// Checks that `got` are the segments of `large` (plain TCP/IPv4 with 54 bytes of
/// headers, cut at `mss` bytes) in order: checksums, sequence numbers, sizes, payload.
fn check_segments(got: &[Vec<u8>], large: &[u8], mss: usize) {
    let mut payload = Vec::new();
    for (i, segment) in got.iter().enumerate() {
        let packet = etherparse::SlicedPacket::from_ethernet(segment).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            panic!("segment {i} is not IPv4");
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = &packet.transport else {
            panic!("segment {i} is not TCP");
        };
        let header = ip.header().to_header();
        assert_eq!(
            header.header_checksum,
            header.calc_header_checksum(),
            "IPv4 checksum of segment {i}"
        );
        assert_eq!(tcp.sequence_number(), 1000 + (i * mss) as u32);
        assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap(),
            "TCP checksum of segment {i}"
        );
        assert!(segment.len() <= 1514);
        payload.extend_from_slice(tcp.payload());
    }
    assert_eq!(payload, large[54..], "the payload, in order");
}

/// A device that segments (a VF; here a tap, whose driver cuts in software) is handed a
/// large segment whole when its port asks for TSO: one frame leaves tenet, and what
/// reaches the wire are the segments tenet would have cut.
#[test]
fn a_large_segment_goes_whole_to_a_device_that_segments() {
    let wire_pool = pool("tsowire", 1023);
    let pool = pool("tso", 1023).with_large(Mempool::large("tsolarge", 64, -1).unwrap());
    let name = format!("tso{}", std::process::id() % 100_000);
    let mut tap = attach(&Backend::Tap {
        interface: name.clone(),
    });
    let config = PortConfig {
        tso: true,
        ..PortConfig::default()
    };
    let (_tap_rx, mut tap_tx) = tap.configure(&config, &pool).unwrap();
    tap.start().unwrap();
    // The kernel's end of the tap, read through tenet's own packet socket (from a pool
    // without large buffers: nothing is joined again on the way in).
    ip(&["link", "set", &name, "up"]);
    let mut wire = Port::open_interface(&name).unwrap();
    let (mut wire_rx, _wire_tx) = wire.configure(&PortConfig::default(), &wire_pool).unwrap();
    wire.start().unwrap();
    let large = large_segment(20_000);
    let mut mbuf = pool.large_pool().unwrap().alloc().unwrap();
    assert!(mbuf.append(large.len()));
    mbuf.data_mut().copy_from_slice(&large);
    mbuf.set_gso_size(1448);
    let counters = dataplane::counters::CoreCounters::default();
    let mut outputs = dataplane::pipeline::Outputs::new(vec![tap_tx.remove(0)], vec![]);
    outputs.push(tap.id(), mbuf, &counters);
    outputs.flush(&counters);
    assert_eq!(
        counters.snapshot().tx_packets,
        1,
        "handed on whole: {:?}",
        counters.snapshot()
    );
    assert_eq!(tap.stats().tx_large, 1);
    // Cut at 1,446 bytes, not the sender's 1,448: the tap's driver takes segments only
    // 14 bytes short of its MTU (see Port::configure).
    let got = receive(&mut wire_rx[0], 14, Duration::from_secs(2));
    assert_eq!(got.len(), 14);
    check_segments(&got, &large, 1446);
    wire.detach();
    tap.detach();
}

use dataplane::dpdk::virtio_guest as guest;

use guest::{Guest, Offload};

fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Holds the other vhost-user tests off until this one is done: two test threads
/// probing and removing vhost-user and virtio-user devices at once hung or crashed the
/// process (DPDK's hotplug and the vhost library's socket handling expect one thread
/// to do it, as tenetd's control thread alone does).
fn one_vhost_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A vhost-user server port of tenet's at a fresh socket, configured and started.
fn vhost_port(tag: &str, pool: &Mempool) -> (Port, RxQueue, TxQueue, std::path::PathBuf) {
    let sock = std::env::temp_dir().join(format!("tenet-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let (port, rx, tx) = started(
        &Backend::VhostUser {
            path: sock.clone(),
            client: false,
        },
        pool,
    );
    (port, rx, tx, sock)
}

/// Waits up to 5 s for `port`'s guest to be there (the PMD raises the link) and, when
/// it `takes_large` segments, for tenet to know (the PMD says so just after).
fn wait_for_guest(port: &Port, takes_large: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = || port.link().up && port.guest_takes_large() == Some(takes_large);
    while !ready() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(port.link().up, "guest connected");
    assert_eq!(port.guest_takes_large(), Some(takes_large));
}

/// Frames the queue receives until `want` came or 5 s passed, whole.
fn receive_mbufs(queue: &mut RxQueue, want: usize) -> Vec<Mbuf> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut batch = MbufBatch::new();
    while got.len() < want && Instant::now() < deadline {
        if queue.rx_burst(&mut batch) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        got.extend(batch.drain());
    }
    got
}

/// A plain TCP/IPv4 frame carrying `payload` bytes (a pattern from `seed`), with
/// full checksums.
fn tcp_frame(payload: usize, seed: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(|i| (i * 13 + seed) as u8).collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4([10, 0, 1, 3], [10, 0, 1, 4], 64)
        .tcp(33000, 80, 7000, 64240)
        .ack(9)
        .write(&mut frame, &data)
        .unwrap();
    frame
}

/// The TCP header and payload of a TCP/IPv4 frame, checked to be well formed, and
/// its IPv4 header (checksum verified).
fn tcp_parts(frame: &[u8]) -> (etherparse::Ipv4Header, etherparse::TcpHeader, Vec<u8>) {
    let packet = etherparse::SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
        panic!("not IPv4");
    };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = &packet.transport else {
        panic!("not TCP");
    };
    let header = ip.header().to_header();
    assert_eq!(header.header_checksum, header.calc_header_checksum());
    assert_eq!(usize::from(header.total_len), frame.len() - 14);
    (header, tcp.to_header(), tcp.payload().to_vec())
}

fn tcp_checksum_ok(frame: &[u8]) -> bool {
    let (ip, tcp, payload) = tcp_parts(frame);
    tcp.checksum == tcp.calc_checksum_ipv4(&ip, &payload).unwrap()
}

#[test]
fn a_vhost_user_port_offers_only_the_segmentation_tenet_can_cut() {
    let _alone = one_vhost_test_at_a_time();
    let with_large = pool("offer", 1023).with_large(Mempool::large("offerlarge", 8, -1).unwrap());
    let (_port, _rx, _tx, sock) = vhost_port("offer", &with_large);
    let offered = guest::offered(&sock);
    for (feature, name) in [
        (dpdk_sys::VIRTIO_NET_F_HOST_TSO4, "HOST_TSO4"),
        (dpdk_sys::VIRTIO_NET_F_CSUM, "CSUM"),
        (dpdk_sys::VIRTIO_NET_F_GUEST_TSO4, "GUEST_TSO4"),
        (dpdk_sys::VIRTIO_NET_F_GUEST_TSO6, "GUEST_TSO6"),
        (dpdk_sys::VIRTIO_NET_F_GUEST_CSUM, "GUEST_CSUM"),
    ] {
        assert_ne!(offered & bit(feature), 0, "{name} offered");
    }
    for (feature, name) in [
        (dpdk_sys::VIRTIO_NET_F_HOST_TSO6, "HOST_TSO6"),
        (dpdk_sys::VIRTIO_NET_F_HOST_UFO, "HOST_UFO"),
        (dpdk_sys::VIRTIO_NET_F_GSO, "GSO"),
    ] {
        assert_eq!(offered & bit(feature), 0, "{name} withheld");
    }
    // What a DPDK guest makes of it: it may ask for LRO, not for TSO.
    let guest = Guest::probe(&sock);
    let info = guest.info();
    assert_ne!(
        info.rx_offload_capa & dpdk_sys::TENET_ETH_RX_OFFLOAD_TCP_LRO,
        0
    );
    assert_eq!(
        info.tx_offload_capa & dpdk_sys::TENET_ETH_TX_OFFLOAD_TCP_TSO,
        0
    );
    drop(guest);

    // No large buffers to take them into: no large segments from the guest either.
    let without = pool("offernone", 1023);
    let (_port, _rx, _tx, sock) = vhost_port("offernone", &without);
    assert_eq!(
        guest::offered(&sock) & bit(dpdk_sys::VIRTIO_NET_F_HOST_TSO4),
        0
    );
    let (ring, _rx, _tx) = started(&Backend::Ring, &without);
    assert_eq!(ring.guest_takes_large(), None, "not a vhost-user port");
}

#[test]
fn a_64k_tcp_segment_crosses_a_vhost_user_port_whole_both_ways() {
    let _alone = one_vhost_test_at_a_time();
    let pool = pool("vtso", 4095).with_large(Mempool::large("vtsolarge", 16, -1).unwrap());
    let (port, mut rx, tx, sock) = vhost_port("vtso", &pool);
    guest::offer_tso6(&sock);
    let guest = Guest::probe(&sock);
    guest.start(true);
    wait_for_guest(&port, true);

    // The guest sends one 65,000-byte segment asking for TSO at an MSS of 1448: its
    // TCP checksum partial (the pseudo-header with the length, as virtio wants it).
    let mut sent = tcp_frame(65_000, 1);
    dataplane::packet::gso::make_partial(&mut sent, 14).unwrap();
    let tso = Offload {
        flags: dpdk_sys::TENET_MBUF_F_TX_TCP_SEG | dpdk_sys::TENET_MBUF_F_TX_IPV4,
        lens: (14, 20, 20),
        tso_segsz: 1448,
    };
    assert!(guest.send(&sent, tso));
    let got = receive_mbufs(&mut rx, 1);
    assert_eq!(got.len(), 1, "one frame, not {} pieces", got.len());
    let frame = &got[0];
    assert!(!frame.is_chained(), "in one buffer");
    assert_eq!(frame.len(), sent.len());
    assert_eq!(frame.gso_size(), 1448, "the guest's MSS");
    assert_eq!(frame.data(), sent.as_slice(), "every byte as sent");
    assert_eq!(port.stats().rx_large, 1);
    drop(got);

    // And back: tenet hands a large segment on whole, the guest's RX presents it as
    // the LRO frame it negotiated.
    let back = tcp_frame(60_000, 2);
    let mut mbuf = pool.large_pool().unwrap().alloc().unwrap();
    assert!(mbuf.set_data(&back));
    mbuf.set_gso_size(1448);
    let counters = dataplane::counters::CoreCounters::default();
    let mut outputs = dataplane::pipeline::Outputs::new(vec![tx], vec![]);
    outputs.push(port.id(), mbuf, &counters);
    outputs.flush(&counters);
    let got = guest.receive(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{:?}", counters.snapshot());
    let frame = &got[0];
    assert_eq!(frame.bytes.len(), back.len(), "whole");
    assert!(frame.segments > 1, "in the guest's 2 KiB buffers");
    assert_ne!(frame.ol_flags & dpdk_sys::TENET_MBUF_F_RX_LRO, 0, "LRO");
    assert_eq!(
        frame.ol_flags & dpdk_sys::TENET_MBUF_F_RX_L4_CKSUM_MASK,
        dpdk_sys::TENET_MBUF_F_RX_L4_CKSUM_NONE,
        "checksum left to the guest"
    );
    assert_eq!(frame.tso_segsz, 1448);
    let (ip, tcp, payload) = tcp_parts(&frame.bytes);
    let (want_ip, want_tcp, want_payload) = tcp_parts(&back);
    assert_eq!(
        (ip.source, ip.destination),
        (want_ip.source, want_ip.destination)
    );
    assert_eq!(
        (tcp.source_port, tcp.destination_port, tcp.sequence_number),
        (
            want_tcp.source_port,
            want_tcp.destination_port,
            want_tcp.sequence_number
        )
    );
    assert_eq!(payload, want_payload);
    // DPDK's vhost library seeds the field as for a NIC (rte_net_intel_cksum_prepare):
    // the pseudo-header without the length.
    let seed = dataplane::packet::checksum::pseudo_header_v4(
        ip.source.into(),
        ip.destination.into(),
        6,
        0,
    );
    assert_eq!(tcp.checksum, dataplane::packet::checksum::fold(seed));
    assert_eq!(counters.snapshot().tx_packets, 1);
    assert_eq!(port.stats().tx_large, 1);

    // Gone, the guest takes nothing whole any more: the next one may not.
    drop(guest);
    let deadline = Instant::now() + Duration::from_secs(5);
    while port.guest_takes_large() != Some(false) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(port.guest_takes_large(), Some(false));
}

#[test]
fn a_guest_without_tso_gets_the_segment_cut_with_full_checksums() {
    let _alone = one_vhost_test_at_a_time();
    let pool = pool("vcut", 4095).with_large(Mempool::large("vcutlarge", 16, -1).unwrap());
    let (port, _rx, tx, sock) = vhost_port("vcut", &pool);
    let guest = Guest::probe(&sock);
    guest.start(false);
    wait_for_guest(&port, false);
    let large = tcp_frame(20_000, 3);
    let mut mbuf = pool.large_pool().unwrap().alloc().unwrap();
    assert!(mbuf.set_data(&large));
    mbuf.set_gso_size(1448);
    let counters = dataplane::counters::CoreCounters::default();
    let mut outputs = dataplane::pipeline::Outputs::new(vec![tx], vec![]);
    outputs.push(port.id(), mbuf, &counters);
    outputs.flush(&counters);
    // 20,000 bytes at 1,448 a segment: 13 full ones and 1,176 bytes.
    let got = guest.receive(14, Duration::from_secs(5));
    assert_eq!(got.len(), 14, "{:?}", counters.snapshot());
    let mut payload = Vec::new();
    for (i, frame) in got.iter().enumerate() {
        assert_eq!(frame.ol_flags & dpdk_sys::TENET_MBUF_F_RX_LRO, 0);
        assert!(frame.bytes.len() <= 1514);
        assert!(tcp_checksum_ok(&frame.bytes), "TCP checksum of segment {i}");
        let (_, tcp, data) = tcp_parts(&frame.bytes);
        assert_eq!(tcp.sequence_number, 7000 + (i * 1448) as u32);
        payload.extend_from_slice(&data);
    }
    assert_eq!(payload, tcp_parts(&large).2, "the payload, in order");
    assert_eq!(port.stats().tx_large, 1);
}

#[test]
fn a_guests_partial_checksums_are_finished_and_long_frames_joined() {
    let _alone = one_vhost_test_at_a_time();
    let pool = pool("vcsum", 4095).with_large(Mempool::large("vcsumlarge", 16, -1).unwrap());
    let (port, mut rx, _tx, sock) = vhost_port("vcsum", &pool);
    guest::offer_tso6(&sock);
    let guest = Guest::probe(&sock);
    guest.start(true);
    wait_for_guest(&port, true);

    // TCP and UDP left for the device to finish, as a guest with CSUM sends them.
    let mut tcp = tcp_frame(300, 4);
    dataplane::packet::gso::make_partial(&mut tcp, 14).unwrap();
    let mut udp = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4([10, 0, 1, 3], [10, 0, 1, 4], 64)
        .udp(5000, 53)
        .write(&mut udp, &[0x5a; 101])
        .unwrap();
    dataplane::packet::gso::make_partial(&mut udp, 14).unwrap();
    // A jumbo frame: more than a packet buffer, so the vhost library chains it.
    let mut jumbo = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4([10, 0, 1, 3], [10, 0, 1, 4], 64)
        .udp(5001, 9)
        .write(&mut jumbo, &[0xa5; 8972])
        .unwrap();
    // A TCP/IPv6 large segment tenet cannot cut: dropped and counted.
    let mut tcp6 = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .tcp(33000, 80, 1, 64240)
        .write(&mut tcp6, &[0x11; 20_000])
        .unwrap();
    let csum = |l4: u64, l4_len| Offload {
        flags: l4 | dpdk_sys::TENET_MBUF_F_TX_IPV4,
        lens: (14, 20, l4_len),
        tso_segsz: 0,
    };
    assert!(guest.send(&tcp, csum(dpdk_sys::TENET_MBUF_F_TX_TCP_CKSUM, 20)));
    assert!(guest.send(
        &tcp6,
        Offload {
            flags: dpdk_sys::TENET_MBUF_F_TX_TCP_SEG | dpdk_sys::TENET_MBUF_F_TX_IPV6,
            lens: (14, 40, 20),
            tso_segsz: 1428,
        }
    ));
    assert!(guest.send(&udp, csum(dpdk_sys::TENET_MBUF_F_TX_UDP_CKSUM, 8)));
    assert!(guest.send(&jumbo, Offload::default()));

    let got = receive_mbufs(&mut rx, 3);
    let got: Vec<Vec<u8>> = got.iter().map(|m| m.data().to_vec()).collect();
    assert_eq!(got.len(), 3);
    assert!(tcp_checksum_ok(&got[0]), "TCP checksum finished");
    assert_eq!(got[0][..50], tcp[..50], "headers otherwise as sent");
    assert_eq!(got[0][52..], tcp[52..], "payload as sent");
    let udp_got = etherparse::SlicedPacket::from_ethernet(&got[1]).unwrap();
    let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(datagram))) =
        (&udp_got.net, &udp_got.transport)
    else {
        panic!("not UDP/IPv4");
    };
    assert_eq!(
        datagram.checksum(),
        datagram
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), datagram.payload())
            .unwrap(),
        "UDP checksum finished"
    );
    assert_eq!(got[2], jumbo, "the jumbo frame whole, in one buffer");
    let stats = port.stats();
    assert_eq!(
        (stats.rx_errors, stats.rx_large),
        (1, 0),
        "the IPv6 segment"
    );
}
