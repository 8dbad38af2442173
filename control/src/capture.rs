//! Port capture without stopping traffic: the control plane marks one port in the flow
//! tables, workers copy what it sends and receives into their capture rings, and this
//! module drains the rings into a pcap until enough packets or time have passed.
//! Timestamps are taken when the control loop drains (10 ms granularity).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dataplane::dpdk::{MbufBatch, RingConsumer};
use tokio::sync::oneshot;

use crate::api::Reply;
use crate::controller::Controller;
use crate::pcap;
use crate::wiring::NamedPort;

struct Pending {
    port: String,
    count: usize,
    got: usize,
    deadline: Instant,
    file: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// The capture side of the control loop.
pub struct Capture {
    rings: Vec<RingConsumer>,
    pending: Option<Pending>,
}

impl Capture {
    /// Over the workers' capture rings.
    pub fn new(rings: Vec<RingConsumer>) -> Self {
        Self {
            rings,
            pending: None,
        }
    }

    /// Starts capturing `port` for `count` packets or `seconds`; the reply is sent when
    /// done. One capture at a time.
    pub fn start(
        &mut self,
        port: String,
        count: usize,
        seconds: f64,
        reply: oneshot::Sender<Reply>,
        controller: &mut Controller,
        ports: &[NamedPort],
    ) {
        if let Some(p) = &self.pending {
            let _ = reply.send(Reply::error(
                409,
                "port",
                &format!("a capture of `{}` is running", p.port),
            ));
            return;
        }
        let Some(named) = ports.iter().find(|p| p.name == port) else {
            let _ = reply.send(Reply::error(
                404,
                "port",
                &format!("no port is named `{port}`"),
            ));
            return;
        };
        controller.set_capture(Some(named.port.id()));
        controller.publish_if_changed();
        tracing::info!(%port, count, seconds, "capture started");
        self.pending = Some(Pending {
            port,
            count,
            got: 0,
            deadline: Instant::now() + Duration::from_secs_f64(seconds),
            file: pcap::header(),
            reply,
        });
    }

    /// Drains the rings; finishes the capture when it has enough or its time is up.
    pub fn poll(&mut self, now: Instant, controller: &mut Controller) {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut batch = MbufBatch::new();
        for ring in &mut self.rings {
            while ring.dequeue_burst(&mut batch) > 0 {
                if let Some(p) = self.pending.as_mut() {
                    for mbuf in batch.as_slice() {
                        if p.got < p.count {
                            pcap::push_record(&mut p.file, stamp, mbuf.data());
                            p.got += 1;
                        }
                    }
                }
                batch.free_all();
            }
        }
        let done = self
            .pending
            .as_ref()
            .is_some_and(|p| p.got >= p.count || now >= p.deadline);
        if done {
            if let Some(p) = self.pending.take() {
                controller.set_capture(None);
                controller.publish_if_changed();
                tracing::info!(port = %p.port, packets = p.got, "capture done");
                let _ = p.reply.send(Reply::pcap(p.file));
            }
        }
    }
}
