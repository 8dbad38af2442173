//! A DPDK application on a virtio-user port: the guest (a DPDK container) at the other
//! end of a vhost-user port, driven with DPDK directly rather than through tenet's port
//! code, so what it sees checks tenet's side instead of mirroring it. Test support for
//! the vhost-user port's offloads (`dataplane/tests/dpdk.rs`); tenetd never uses it.

use std::ffi::CString;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// What the guest sets on a frame it sends, beside its bytes.
#[derive(Clone, Copy, Default)]
pub struct Offload {
    pub flags: u64,
    /// Ethernet, IP and L4 header lengths.
    pub lens: (u64, u64, u64),
    pub tso_segsz: u16,
}

/// A frame the guest received, with what its RX path reported.
pub struct Received {
    pub bytes: Vec<u8>,
    pub ol_flags: u64,
    pub tso_segsz: u16,
    pub segments: u16,
}

pub struct Guest {
    pub port: u16,
    name: String,
    rx_pool: *mut dpdk_sys::rte_mempool,
    tx_pool: *mut dpdk_sys::rte_mempool,
}

fn pool(name: &str, count: u32, room: u16) -> *mut dpdk_sys::rte_mempool {
    let c_name = CString::new(name).unwrap();
    // SAFETY: a valid name; DPDK copies it.
    let pool = unsafe { dpdk_sys::rte_pktmbuf_pool_create(c_name.as_ptr(), count, 0, 0, room, -1) };
    assert!(!pool.is_null(), "guest pool {name}");
    pool
}

impl Guest {
    /// A virtio-user port on `socket` (tenet's vhost-user server). With `offloads`
    /// it asks for what a guest that takes and sends large segments asks for: LRO
    /// and TCP/UDP checksums on RX (GUEST_TSO4/6, GUEST_CSUM), TSO and checksums on
    /// TX (HOST_TSO4/6, CSUM). Not started: see [`Guest::start`]. The EAL must be
    /// up (it is once tenet's side of the socket is attached).
    pub fn probe(socket: &Path) -> Guest {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("net_virtio_user{n}");
        let args = CString::new(format!("{name},path={},queues=1", socket.display())).unwrap();
        // SAFETY: a valid devargs string; DPDK copies what it keeps.
        let ret = unsafe { dpdk_sys::rte_dev_probe(args.as_ptr()) };
        assert_eq!(ret, 0, "probe {name}");
        let c_name = CString::new(name.as_str()).unwrap();
        let mut port = 0;
        // SAFETY: valid name and out-parameter.
        let ret = unsafe { dpdk_sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port) };
        assert_eq!(ret, 0);
        Guest {
            port,
            rx_pool: pool(&format!("g{n}rx"), 2047, 2048 + 128),
            tx_pool: pool(&format!("g{n}tx"), 15, u16::MAX),
            name,
        }
    }

    pub fn info(&self) -> dpdk_sys::rte_eth_dev_info {
        let mut info = dpdk_sys::rte_eth_dev_info::default();
        // SAFETY: valid port and out-parameter.
        let ret = unsafe { dpdk_sys::rte_eth_dev_info_get(self.port, &mut info) };
        assert_eq!(ret, 0);
        info
    }

    pub fn start(&self, offloads: bool) {
        let mut conf = dpdk_sys::rte_eth_conf::default();
        if offloads {
            conf.rxmode.offloads = dpdk_sys::TENET_ETH_RX_OFFLOAD_TCP_LRO
                | dpdk_sys::TENET_ETH_RX_OFFLOAD_TCP_CKSUM
                | dpdk_sys::TENET_ETH_RX_OFFLOAD_UDP_CKSUM;
            conf.txmode.offloads = dpdk_sys::TENET_ETH_TX_OFFLOAD_TCP_TSO
                | dpdk_sys::TENET_ETH_TX_OFFLOAD_TCP_CKSUM
                | dpdk_sys::TENET_ETH_TX_OFFLOAD_UDP_CKSUM
                | dpdk_sys::TENET_ETH_TX_OFFLOAD_MULTI_SEGS;
        }
        // SAFETY: a stopped port, a valid conf, queues on a live pool.
        unsafe {
            assert_eq!(
                dpdk_sys::rte_eth_dev_configure(self.port, 1, 1, &conf),
                0,
                "configure {}",
                self.name
            );
            assert_eq!(
                dpdk_sys::rte_eth_rx_queue_setup(
                    self.port,
                    0,
                    1024,
                    0,
                    std::ptr::null(),
                    self.rx_pool
                ),
                0
            );
            assert_eq!(
                dpdk_sys::rte_eth_tx_queue_setup(self.port, 0, 1024, 0, std::ptr::null()),
                0
            );
            assert_eq!(dpdk_sys::rte_eth_dev_start(self.port), 0);
        }
    }

    /// Sends `bytes` in one mbuf with `offload` set on it; true when the device
    /// took it.
    pub fn send(&self, bytes: &[u8], offload: Offload) -> bool {
        let mut m = std::ptr::null_mut();
        // SAFETY: the pool is live, `m` a slot for one pointer; the mbuf is ours
        // until the burst takes it, its data room (64 KiB) holds `bytes`.
        unsafe {
            assert_eq!(
                dpdk_sys::tenet_pktmbuf_alloc_bulk(self.tx_pool, &mut m, 1),
                0
            );
            let mbuf = &mut *m;
            let at = (mbuf.buf_addr as *mut u8).add(usize::from(mbuf.data_off));
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
            mbuf.data_len = bytes.len() as u16;
            mbuf.pkt_len = bytes.len() as u32;
            mbuf.ol_flags = offload.flags;
            let lens = &mut mbuf.__bindgen_anon_3.__bindgen_anon_1;
            lens.set_l2_len(offload.lens.0);
            lens.set_l3_len(offload.lens.1);
            lens.set_l4_len(offload.lens.2);
            lens.set_tso_segsz(u64::from(offload.tso_segsz));
            if dpdk_sys::tenet_eth_tx_burst(self.port, 0, &mut m, 1) == 1 {
                return true;
            }
            dpdk_sys::tenet_pktmbuf_free(m);
        }
        false
    }

    /// Receives until `want` frames came or `timeout` passed.
    pub fn receive(&self, want: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            let mut slots = [std::ptr::null_mut(); 32];
            // SAFETY: slots has room for 32 pointers; this thread alone polls.
            let n = unsafe { dpdk_sys::tenet_eth_rx_burst(self.port, 0, slots.as_mut_ptr(), 32) };
            if n == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            for &head in &slots[..usize::from(n)] {
                // SAFETY: the burst handed over owned chains of live mbufs; each
                // segment's data lies in its data room; freed once read.
                unsafe {
                    let first = &*head;
                    let mut bytes = Vec::with_capacity(first.pkt_len as usize);
                    let mut segment = head;
                    while !segment.is_null() {
                        let m = &*segment;
                        bytes.extend_from_slice(std::slice::from_raw_parts(
                            (m.buf_addr as *const u8).add(usize::from(m.data_off)),
                            usize::from(m.data_len),
                        ));
                        segment = m.next;
                    }
                    got.push(Received {
                        bytes,
                        ol_flags: first.ol_flags,
                        tso_segsz: first.__bindgen_anon_3.__bindgen_anon_1.tso_segsz() as u16,
                        segments: first.nb_segs,
                    });
                    dpdk_sys::tenet_pktmbuf_free(head);
                }
            }
        }
        got
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let bus = CString::new("vdev").unwrap();
        let name = CString::new(self.name.as_str()).unwrap();
        // SAFETY: the port and pools are this guest's; nothing polls them any more.
        unsafe {
            dpdk_sys::rte_eth_dev_stop(self.port);
            dpdk_sys::rte_eth_dev_close(self.port);
            dpdk_sys::rte_eal_hotplug_remove(bus.as_ptr(), name.as_ptr());
            dpdk_sys::rte_mempool_free(self.rx_pool);
            dpdk_sys::rte_mempool_free(self.tx_pool);
        }
    }
}

/// The virtio-net features tenet's vhost-user socket at `socket` offers.
pub fn offered(socket: &Path) -> u64 {
    let path = CString::new(socket.to_str().unwrap()).unwrap();
    let mut features = 0;
    // SAFETY: a valid path and out-parameter.
    let ret = unsafe { dpdk_sys::rte_vhost_driver_get_features(path.as_ptr(), &mut features) };
    assert_eq!(ret, 0);
    features
}

/// Also offers TCP/IPv6 segmentation on tenet's socket: DPDK's virtio-user
/// advertises TX TSO only when both TCP/IPv4 and TCP/IPv6 are offered (a Linux
/// guest takes each alone), so without this a DPDK guest cannot send tenet a
/// large segment at all. Only the IPv4 kind is sent here.
pub fn offer_tso6(socket: &Path) {
    let path = CString::new(socket.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; only the socket's feature mask changes.
    let ret = unsafe {
        dpdk_sys::rte_vhost_driver_enable_features(
            path.as_ptr(),
            1 << dpdk_sys::VIRTIO_NET_F_HOST_TSO6,
        )
    };
    assert_eq!(ret, 0);
}
