//! The DPDK layer and the worker on real virtual devices (`net_ring`, `net_null`,
//! `net_vhost`). Needs root and free hugepages, like tenetd itself. DPDK initialises
//! once per process, so every test shares one EAL and makes its own pool and ports.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dataplane::counters::DropReason;
use dataplane::dpdk::{
    Backend, DeviceNamer, Eal, EalOptions, Mbuf, MbufBatch, MbufRing, Mempool, Port, PortConfig,
    BURST,
};
use dataplane::pipeline::CrossConnect;
use dataplane::worker::{Backoff, Worker, WorkerPlan};

static EAL: OnceLock<Eal> = OnceLock::new();
static NAMER: std::sync::Mutex<Option<DeviceNamer>> = std::sync::Mutex::new(None);

fn eal() -> &'static Eal {
    EAL.get_or_init(|| {
        Eal::init(EalOptions {
            file_prefix: format!("tenet-dptest-{}", std::process::id()),
            memory_mb: 256,
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
fn ring_port_loops_frames_back_in_order() {
    let pool = pool("ringloop", 2047);
    let mut port = attach(&Backend::Ring);
    let (mut rx, mut tx) = port.configure(&PortConfig::default(), &pool).unwrap();
    port.start().unwrap();
    let mut batch = MbufBatch::new();
    for seq in 0..BURST as u32 {
        batch.push(mbuf_with(&pool, &frame(seq))).ok().unwrap();
    }
    assert_eq!(tx[0].tx_burst(&mut batch), BURST);
    let got = receive(&mut rx[0], BURST, Duration::from_secs(1));
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

/// Sends `count` frames into `into` (a ring port, so they come back on its RX side).
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
    let mut a = attach(&Backend::Ring);
    let mut b = attach(&Backend::Ring);
    let (mut a_rx, mut a_tx) = a.configure(&PortConfig::default(), &pool).unwrap();
    let (mut b_rx, mut b_tx) = b.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), b.id());
    // The worker polls a and transmits on b; the test plays the outside world.
    let worker = Worker::spawn(
        WorkerPlan {
            core: 0,
            rx: vec![a_rx.remove(0)],
            tx: vec![b_tx.remove(0)],
            inbound: vec![],
            outbound: vec![],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        xc,
        Backoff::default(),
    )
    .unwrap();
    inject(&mut a_tx[0], &pool, 0..500);
    let got = receive(&mut b_rx[0], 500, Duration::from_secs(5));
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
    let mut a = attach(&Backend::Ring);
    let mut b = attach(&Backend::Ring);
    let (mut a_rx, mut a_tx) = a.configure(&PortConfig::default(), &pool).unwrap();
    let (mut b_rx, mut b_tx) = b.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    b.start().unwrap();
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), b.id());
    let (producer, consumer) = MbufRing::create("handoff", 1024).unwrap();
    let receiver = Worker::spawn(
        WorkerPlan {
            core: 0,
            rx: vec![a_rx.remove(0)],
            tx: vec![],
            inbound: vec![],
            outbound: vec![(b.id(), producer)],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        xc.clone(),
        Backoff::default(),
    )
    .unwrap();
    let transmitter = Worker::spawn(
        WorkerPlan {
            core: 1,
            rx: vec![],
            tx: vec![b_tx.remove(0)],
            inbound: vec![(b.id(), consumer)],
            outbound: vec![],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        xc,
        Backoff::default(),
    )
    .unwrap();
    inject(&mut a_tx[0], &pool, 0..300);
    let got = receive(&mut b_rx[0], 300, Duration::from_secs(5));
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
    let mut a = attach(&Backend::Ring);
    // A vhost-user server nobody connects to: its TX refuses everything.
    let sock = std::env::temp_dir().join(format!("tenet-refuse-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut dead = attach(&Backend::VhostUser {
        path: sock.clone(),
        client: false,
    });
    let (mut a_rx, mut a_tx) = a.configure(&PortConfig::default(), &pool).unwrap();
    let (_dead_rx, mut dead_tx) = dead.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    dead.start().unwrap();
    let mut xc = CrossConnect::default();
    xc.connect_one_way(a.id(), dead.id());
    let worker = Worker::spawn(
        WorkerPlan {
            core: 0,
            rx: vec![a_rx.remove(0)],
            tx: vec![dead_tx.remove(0)],
            inbound: vec![],
            outbound: vec![],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        xc,
        Backoff::default(),
    )
    .unwrap();
    let before = pool.available();
    inject(&mut a_tx[0], &pool, 0..100);
    let deadline = Instant::now() + Duration::from_secs(5);
    while worker.counters().snapshot().dropped(DropReason::TxRefused) < 100
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
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
    let mut a = attach(&Backend::Ring);
    let (mut a_rx, mut a_tx) = a.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    let worker = Worker::spawn(
        WorkerPlan {
            core: 1,
            rx: vec![a_rx.remove(0)],
            tx: vec![],
            inbound: vec![],
            outbound: vec![],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        CrossConnect::default(),
        Backoff::default(),
    )
    .unwrap();
    let before = pool.available();
    inject(&mut a_tx[0], &pool, 0..40);
    let deadline = Instant::now() + Duration::from_secs(5);
    while worker.counters().snapshot().dropped(DropReason::NoOutput) < 40
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
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
    let mut a = attach(&Backend::Ring);
    let (mut a_rx, _a_tx) = a.configure(&PortConfig::default(), &pool).unwrap();
    a.start().unwrap();
    let worker = Worker::spawn(
        WorkerPlan {
            core: 1,
            rx: vec![a_rx.remove(0)],
            tx: vec![],
            inbound: vec![],
            outbound: vec![],
            capture: None,
            reprocess: Vec::new(),
            handoff: Vec::new(),
        },
        CrossConnect::default(),
        Backoff::default(),
    )
    .unwrap();
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
    assert!(!iface.exists(), "tap interface {name} removed on detach");
}
