//! The whole pipeline under libFuzzer: the first input byte picks the ingress port, the
//! design and the FDB's size (a big one, 20,000 MACs, makes each burst's prefetch pass
//! read the frame first), the rest is the frame. Any panic is a finding, and so is a
//! frame from tenant A's ports leaving toward tenant B. The tables are built once per
//! process; each input gets fresh per-core state.
#![no_main]

use std::net::Ipv4Addr;

use dataplane::pipeline::offline::Offline;
use dataplane::table::builder::TablesBuilder;
use dataplane::table::{Design, FlowTables, Location};
use libfuzzer_sys::fuzz_target;

const UPLINK: u16 = 4;
const HOST_A: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 2);
const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 3);

fn tables(design: Design, hub: bool, big: bool) -> FlowTables {
    let mut b = TablesBuilder::new(design, hub);
    let a = b.tenant(100, Some(100));
    let tb = b.tenant(200, Some(200));
    b.access_port(0, a, None);
    b.access_port(1, a, None);
    b.access_port(2, tb, None);
    b.trunk_port(3, &[a]);
    b.trunk_port(5, &[a, tb]);
    b.uplink(UPLINK, [2, 0, 0, 0, 0x0c, 1], Ipv4Addr::new(198, 19, 255, 1));
    let ta = b.tunnel(1, HOST_A, Some([2, 0, 0, 0, 0x0c, 2]));
    let tbb = b.tunnel(2, HOST_B, Some([2, 0, 0, 0, 0x0c, 3]));
    b.tunnel_carries(ta, a);
    b.tunnel_carries(tbb, tb);
    if design == Design::Shared {
        b.tunnel_carries(ta, tb);
        b.tunnel_carries(tbb, a);
    }
    b.static_mac(a, [2, 0, 0, 0, 0xa, 1], Location::Port(0));
    b.static_mac(tb, [2, 0, 0, 0, 0xb, 1], Location::Port(2));
    b.static_mac(tb, [2, 0, 0, 0, 0xb, 2], Location::Host(2));
    if big {
        for (tenant, port) in [(a, 1), (tb, 2)] {
            for i in 0..10_000u32 {
                let [_, x, y, z] = i.to_be_bytes();
                b.static_mac(tenant, [2, 1, tenant as u8, x, y, z], Location::Port(port));
            }
        }
    }
    b.build()
}

fn vid(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 16 && frame[12..14] == [0x81, 0]).then(|| u16::from_be_bytes([frame[14], frame[15]]) & 0xfff)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let port = u16::from(selector % 6);
    let design = if selector & 0x40 != 0 { Design::Shared } else { Design::Dedicated };
    let hub = selector & 0x80 != 0 && design == Design::Shared;
    let big = selector & 0x20 != 0;
    static BUILT: std::sync::OnceLock<Vec<FlowTables>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        [false, true]
            .into_iter()
            .flat_map(|big| {
                [
                    tables(Design::Dedicated, false, big),
                    tables(Design::Shared, false, big),
                    tables(Design::Shared, true, big),
                ]
            })
            .collect()
    });
    let tables = &built[usize::from(big) * 3
        + match (design, hub) {
            (Design::Dedicated, _) => 0,
            (Design::Shared, false) => 1,
            (Design::Shared, true) => 2,
        }];
    // Per-core state made once and reset per input: cheaper than building it anew.
    thread_local! {
        static CORE: std::cell::RefCell<Offline> = std::cell::RefCell::new(Offline::default());
    }
    let sent = CORE.with(|core| {
        let mut core = core.borrow_mut();
        core.reset();
        core.run(tables, port, frame).sent
    });
    // Isolation: what entered on tenant A's own ports (0, 1, A-only trunk 3) stays in A.
    if matches!(port, 0 | 1 | 3) {
        for (out, bytes) in &sent {
            let ok = match *out {
                0 | 1 => vid(bytes).is_none(),
                3 | 5 => vid(bytes) == Some(100),
                UPLINK if design == Design::Dedicated => bytes.len() >= 42 && bytes[38..42] == 100u32.to_be_bytes(),
                UPLINK => bytes.len() >= 54 && vid(&bytes[38..]) == Some(100),
                _ => false,
            };
            assert!(ok, "tenant A frame left on port {out} as {bytes:02x?}");
        }
    }
});
