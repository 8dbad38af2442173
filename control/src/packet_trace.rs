//! The live trace of real packets (VPP's `trace add` and `show trace`): every worker
//! is told to trace what a port receives; the frames run through the pipeline with
//! each decision noted, until the shared record queue holds the packets asked for or
//! the time is up; then the workers are told to stop and the records are answered,
//! named as the operator named things.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use dataplane::packet::ethernet::EtherType;
use dataplane::packet::gre::GrePacket;
use dataplane::packet::MacText;
use dataplane::pipeline::live_trace::{LiveTrace, TracedOutput, TracedPacket};
use dataplane::port_set::PortSet;
use dataplane::worker::{Worker, WorkerCommand};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::api::Reply;
use crate::controller::Controller;
use crate::wiring::NamedPort;

struct Tracing {
    port: String,
    count: usize,
    deadline: Instant,
    records: Arc<ArrayQueue<TracedPacket>>,
    done: Arc<AtomicBool>,
    started_tsc: u64,
    reply: oneshot::Sender<Reply>,
}

/// The live-trace side of the control loop.
#[derive(Default)]
pub struct PacketTrace {
    running: Option<Tracing>,
    /// Workers still to be told to stop (their command queue was full).
    to_stop: Vec<usize>,
}

impl PacketTrace {
    /// Starts tracing the next `count` frames `port` receives, for at most `seconds`;
    /// the reply is sent when done. One trace at a time.
    pub fn start(
        &mut self,
        (port, count, seconds): (String, usize, f64),
        reply: oneshot::Sender<Reply>,
        ports: &[NamedPort],
        workers: &[Worker],
    ) {
        if let Some(t) = &self.running {
            let message = format!("a live trace of `{}` is running", t.port);
            let _ = reply.send(Reply::error(409, "port", &message));
            return;
        }
        let Some(named) = ports.iter().find(|p| p.name == port) else {
            let message = format!("no port is named `{port}`");
            let _ = reply.send(Reply::error(404, "port", &message));
            return;
        };
        let mut traced = PortSet::EMPTY;
        traced.insert(usize::from(named.port.id()));
        let trace = LiveTrace {
            ports: traced,
            records: Arc::new(ArrayQueue::new(count.max(1))),
            done: Arc::new(AtomicBool::new(false)),
        };
        for (i, worker) in workers.iter().enumerate() {
            if worker
                .command(WorkerCommand::Trace(Some(trace.clone())))
                .is_ok()
            {
                // Commands are taken in order: this one comes after a stop still owed.
                self.to_stop.retain(|&w| w != i);
            } else {
                // Those told already stop again, and trace nothing meanwhile.
                trace.done.store(true, Ordering::Relaxed);
                self.to_stop.extend(0..i);
                self.stop_workers(workers);
                let _ = reply.send(Reply::error(
                    503,
                    "",
                    "a worker's command queue is full; ask again",
                ));
                return;
            }
        }
        tracing::info!(%port, count, seconds, "live trace started");
        self.running = Some(Tracing {
            port,
            count,
            deadline: Instant::now() + Duration::from_secs_f64(seconds),
            records: trace.records,
            done: trace.done,
            started_tsc: dataplane::dpdk::tsc(),
            reply,
        });
    }

    /// Ends the trace when it has its frames or its time is up, and answers.
    pub fn poll(
        &mut self,
        now: Instant,
        controller: &Controller,
        ports: &[NamedPort],
        workers: &[Worker],
    ) {
        self.stop_workers(workers);
        let done = self.running.as_ref().is_some_and(|t| {
            t.records.len() >= t.count || now >= t.deadline || t.reply.is_closed()
        });
        if !done {
            return;
        }
        let Some(trace) = self.running.take() else {
            return;
        };
        trace.done.store(true, Ordering::Relaxed);
        self.to_stop.extend(0..workers.len());
        self.stop_workers(workers);
        let mut packets: Vec<TracedPacket> = std::iter::from_fn(|| trace.records.pop()).collect();
        packets.sort_by_key(|p| p.tsc);
        tracing::info!(port = %trace.port, packets = packets.len(), "live trace done");
        let hz = dataplane::dpdk::tsc_hz().max(1) as f64;
        let name_of = |id: u16| {
            ports
                .iter()
                .find(|p| p.port.id() == id)
                .map_or_else(|| format!("#{id}"), |p| p.name.clone())
        };
        let rows: Vec<Value> = packets
            .iter()
            .map(|p| {
                let outputs: Vec<String> = p
                    .outputs
                    .iter()
                    .map(|o| match *o {
                        TracedOutput::Port(id) => format!("port {}", name_of(id)),
                        TracedOutput::Worker(w) => format!("worker {w}"),
                        TracedOutput::Held => "held for its next hop".to_owned(),
                    })
                    .collect();
                json!({
                    "worker": p.worker,
                    "seconds": p.tsc.saturating_sub(trace.started_tsc) as f64 / hz,
                    "port": name_of(p.port),
                    "length": p.len,
                    "summary": summary(&p.head),
                    "head": p.head.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                    "decisions": crate::live::name_notes(controller, ports, &p.decisions),
                    "outputs": outputs,
                })
            })
            .collect();
        let _ = trace.reply.send(Reply::ok(Value::Array(rows)));
    }

    /// Tells the workers in `to_stop` to stop tracing; keeps those whose queue is
    /// full for the next tick.
    fn stop_workers(&mut self, workers: &[Worker]) {
        self.to_stop.sort_unstable();
        self.to_stop.dedup();
        self.to_stop.retain(|&i| {
            workers
                .get(i)
                .is_some_and(|w| w.command(WorkerCommand::Trace(None)).is_err())
        });
    }
}

/// A frame in one line, as tcpdump would say it: addresses, VLAN tags, protocol; a
/// GRE packet with the frame it carries.
pub fn summary(frame: &[u8]) -> String {
    let be16 = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let mac = |at: usize| -> String {
        frame
            .get(at..at + 6)
            .and_then(|b| <[u8; 6]>::try_from(b).ok())
            .map_or_else(|| "?".to_owned(), |m| MacText(m).to_string())
    };
    let ip = |at: usize| -> String {
        frame
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or_else(|| "?".to_owned(), |a| Ipv4Addr::from(a).to_string())
    };
    let Some(mut ethertype) = be16(12) else {
        return format!("{} bytes, shorter than an Ethernet header", frame.len());
    };
    let mut out = format!("{} > {}", mac(6), mac(0));
    let mut at = 14;
    while matches!(ethertype, 0x8100 | 0x88a8) {
        let (Some(tci), Some(inner)) = (be16(at), be16(at + 2)) else {
            return out + ", VLAN tag cut short";
        };
        out.push_str(&format!(", vlan {}", tci & 0x0fff));
        ethertype = inner;
        at += 4;
    }
    match ethertype {
        0x0806 => match be16(at + 6) {
            Some(1) => out + &format!(", ARP who-has {} tell {}", ip(at + 24), ip(at + 14)),
            Some(2) => out + &format!(", ARP {} is-at {}", ip(at + 14), mac(at + 8)),
            Some(op) => out + &format!(", ARP operation {op}"),
            None => out + ", ARP cut short",
        },
        0x0800 => {
            let Some(&version_ihl) = frame.get(at) else {
                return out + ", IPv4 cut short";
            };
            let l4 = at + usize::from(version_ihl & 0x0f) * 4;
            out.push_str(&format!(", {} > {}", ip(at + 12), ip(at + 16)));
            let l4_text = match frame.get(at + 9) {
                Some(6) | Some(17) => {
                    let name = if frame[at + 9] == 6 { "TCP" } else { "UDP" };
                    match (be16(l4), be16(l4 + 2)) {
                        (Some(s), Some(d)) => format!("{name} {s} > {d}"),
                        _ => format!("{name} cut short"),
                    }
                }
                Some(1) => match (frame.get(l4), frame.get(l4 + 1)) {
                    (Some(8), _) => "ICMP echo request".to_owned(),
                    (Some(0), _) => "ICMP echo reply".to_owned(),
                    (Some(t), Some(c)) => format!("ICMP type {t} code {c}"),
                    _ => "ICMP cut short".to_owned(),
                },
                Some(47) => {
                    let gre = frame.get(l4..).map(GrePacket::new_checked);
                    match gre {
                        Some(Ok(gre)) => {
                            let key = gre.key().map_or_else(String::new, |k| format!(" key {k}"));
                            let inner = frame.get(l4 + gre.header_len()..).unwrap_or_default();
                            match gre.protocol() {
                                EtherType::TransparentEthernetBridging => {
                                    format!("GRE{key}: {}", summary(inner))
                                }
                                _ => format!("GRE{key}"),
                            }
                        }
                        // Cut short, or a GRE tenet does not speak (not version 0).
                        _ => "GRE".to_owned(),
                    }
                }
                Some(p) => format!("IP protocol {p}"),
                None => "IPv4 cut short".to_owned(),
            };
            out + ", " + &l4_text
        }
        0x86dd => out + ", IPv6",
        other => out + &format!(", ethertype {other:#06x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_says_what_tcpdump_would() {
        let arp = dataplane::packet::arp::request_frame(
            [2, 0, 0, 0, 0, 1],
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::new(10, 1, 0, 1),
        );
        assert_eq!(
            summary(&arp),
            "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ARP who-has 10.1.0.1 tell 10.1.0.2"
        );
        let mut icmp = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 10, 8, 0];
        icmp.extend([
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 2, 10, 1, 0, 3,
        ]);
        icmp.extend([8, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            summary(&icmp),
            "02:00:00:00:00:01 > 02:00:00:00:00:02, vlan 10, 10.1.0.2 > 10.1.0.3, ICMP echo request"
        );
        for cut in 0..icmp.len() {
            summary(&icmp[..cut]);
        }
        // A tunnelled frame, with what it carries.
        let mut gre = vec![2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 8, 0];
        gre.extend([
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2,
        ]);
        gre.extend([0x20, 0, 0x65, 0x58, 0, 0, 0, 7]);
        gre.extend(&icmp);
        assert_eq!(
            summary(&gre),
            format!(
                "02:00:00:00:00:08 > 02:00:00:00:00:09, 192.168.0.1 > 192.168.0.2, GRE key 7: {}",
                summary(&icmp)
            )
        );
        for cut in 0..gre.len() {
            summary(&gre[..cut]);
        }
    }
}
