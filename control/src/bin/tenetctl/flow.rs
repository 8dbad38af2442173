//! A frame from a flow written as `ovs-appctl ofproto/trace` takes it
//! (`in_port=c1,tcp,dl_src=02:00:00:00:0a:01,nw_dst=10.1.0.3,tp_dst=80`), for
//! `tenetctl trace --flow`: what a person means is a flow, not 60 bytes of hex.
//!
//! Fields: `in_port` (the port's name, required), `dl_src`, `dl_dst`, `dl_vlan`,
//! `dl_type`, `nw_src`, `nw_dst`, `nw_proto`, `nw_ttl`, `tp_src`, `tp_dst`, `arp_op`;
//! the shorthands `ip`, `icmp`, `tcp`, `udp` and `arp`. What is not given takes a
//! default that makes a valid frame: a unicast source, broadcast destination, TTL 64,
//! an ICMP echo request for bare `ip`.

use std::net::Ipv4Addr;

use dataplane::packet::parse_mac;
use etherparse::PacketBuilder;

/// A flow to trace: the ingress port's name and the frame it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// `in_port`.
    pub port: String,
    /// The frame, as it would arrive.
    pub frame: Vec<u8>,
}

#[derive(Debug, Default)]
struct Fields {
    port: Option<String>,
    src: Option<[u8; 6]>,
    dst: Option<[u8; 6]>,
    vlan: Option<u16>,
    ether_type: Option<u16>,
    nw_src: Option<Ipv4Addr>,
    nw_dst: Option<Ipv4Addr>,
    proto: Option<u8>,
    ttl: Option<u8>,
    tp_src: Option<u16>,
    tp_dst: Option<u16>,
    arp_op: Option<u16>,
}

const IPV4: u16 = 0x0800;
const ARP: u16 = 0x0806;
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// A number in decimal or `0x` hex.
fn number(field: &str, text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{field}: `{text}` is not a number"))
}

fn bounded<T: TryFrom<u64>>(field: &str, text: &str) -> Result<T, String> {
    T::try_from(number(field, text)?).map_err(|_| format!("{field}: {text} is out of range"))
}

fn address(field: &str, text: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("{field}: `{text}` is not an IPv4 address"))
}

/// Parses `text`; refused naming the field at fault.
pub fn parse(text: &str) -> Result<Flow, String> {
    let mut f = Fields::default();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        let need = || value.ok_or_else(|| format!("{key}: needs a value ({key}=...)"));
        match key {
            "ip" => f.ether_type = Some(IPV4),
            "arp" => f.ether_type = Some(ARP),
            "icmp" | "tcp" | "udp" => {
                f.ether_type = Some(IPV4);
                f.proto = Some(match key {
                    "icmp" => ICMP,
                    "tcp" => TCP,
                    _ => UDP,
                });
            }
            "in_port" => f.port = Some(need()?.to_owned()),
            "dl_src" | "dl_dst" => {
                let mac = parse_mac(need()?).map_err(|e| format!("{key}: {e}"))?;
                *(if key == "dl_src" {
                    &mut f.src
                } else {
                    &mut f.dst
                }) = Some(mac);
            }
            "dl_vlan" => {
                let vid: u16 = bounded(key, need()?)?;
                if !(1..=4094).contains(&vid) {
                    return Err(format!("dl_vlan: {vid} is not a VLAN id (1-4094)"));
                }
                f.vlan = Some(vid);
            }
            "dl_type" => f.ether_type = Some(bounded(key, need()?)?),
            "nw_src" | "nw_dst" | "arp_spa" | "arp_tpa" => {
                let ip = Some(address(key, need()?)?);
                // ARP's addresses make an ARP frame, as in ofproto/trace.
                if key.starts_with("arp") {
                    f.ether_type.get_or_insert(ARP);
                }
                *(if key.ends_with("src") || key == "arp_spa" {
                    &mut f.nw_src
                } else {
                    &mut f.nw_dst
                }) = ip;
            }
            "nw_proto" => f.proto = Some(bounded(key, need()?)?),
            "nw_ttl" => f.ttl = Some(bounded(key, need()?)?),
            "tp_src" => f.tp_src = Some(bounded(key, need()?)?),
            "tp_dst" => f.tp_dst = Some(bounded(key, need()?)?),
            "arp_op" => {
                f.arp_op = Some(bounded(key, need()?)?);
                f.ether_type.get_or_insert(ARP);
            }
            other => return Err(format!("{other}: not a flow field tenetctl knows")),
        }
    }
    let port = f
        .port
        .clone()
        .ok_or("in_port: missing (the port the frame comes in on)")?;
    // A port number means TCP or UDP: never silently another protocol's frame.
    for (field, given) in [("tp_src", f.tp_src), ("tp_dst", f.tp_dst)] {
        if given.is_some() && !matches!(f.proto, Some(TCP | UDP)) {
            return Err(format!("{field}: needs tcp or udp (or nw_proto=6 or 17)"));
        }
    }
    Ok(Flow {
        port,
        frame: frame(&f)?,
    })
}

fn frame(f: &Fields) -> Result<Vec<u8>, String> {
    let src = f.src.unwrap_or([0x02, 0, 0, 0, 0, 0x01]);
    let dst = f.dst.unwrap_or([0xff; 6]);
    let nw_src = f.nw_src.unwrap_or(Ipv4Addr::new(10, 0, 0, 1));
    let nw_dst = f.nw_dst.unwrap_or(Ipv4Addr::new(10, 0, 0, 2));
    let ether_type = f
        .ether_type
        .unwrap_or(if f.nw_src.is_some() || f.nw_dst.is_some() {
            IPV4
        } else {
            // Neither addresses nor a protocol: an Ethernet frame of the local
            // experimental type, which the switch forwards by its MACs alone.
            0x88b5
        });
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    if let Some(vid) = f.vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    match ether_type {
        IPV4 => {
            // etherparse writes the IPv4 and transport headers with their checksums.
            let ip = PacketBuilder::ethernet2(src, dst).ipv4(
                nw_src.octets(),
                nw_dst.octets(),
                f.ttl.unwrap_or(64),
            );
            let (sport, dport) = (f.tp_src.unwrap_or(40000), f.tp_dst.unwrap_or(80));
            let mut packet = Vec::new();
            let written = match f.proto.unwrap_or(ICMP) {
                TCP => ip.tcp(sport, dport, 1, 64240).syn().write(&mut packet, &[]),
                UDP => ip.udp(sport, dport).write(&mut packet, b"tenet"),
                ICMP => ip.icmpv4_echo_request(1, 1).write(&mut packet, b"tenet"),
                other => {
                    return Err(format!(
                        "nw_proto: {other}: tenetctl builds ICMP (1), TCP (6) or UDP (17)"
                    ))
                }
            };
            written.map_err(|e| format!("building the frame: {e}"))?;
            // The builder's Ethernet header, replaced by ours (which may carry a tag).
            out.extend_from_slice(&IPV4.to_be_bytes());
            out.extend_from_slice(&packet[14..]);
        }
        ARP => {
            out.extend_from_slice(&ARP.to_be_bytes());
            out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
            out.extend_from_slice(&f.arp_op.unwrap_or(1).to_be_bytes());
            out.extend_from_slice(&src);
            out.extend_from_slice(&nw_src.octets());
            out.extend_from_slice(&[0; 6]);
            out.extend_from_slice(&nw_dst.octets());
        }
        other => {
            out.extend_from_slice(&other.to_be_bytes());
            out.extend_from_slice(b"tenet trace");
        }
    }
    // Ethernet's minimum, as a NIC would pad it.
    if out.len() < 60 {
        out.resize(60, 0);
    }
    Ok(out)
}

/// `bytes` as hex, as the trace API takes a frame.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_flow_becomes_a_checksummed_syn() {
        let flow = parse(
            "in_port=c1, tcp, dl_src=02:00:00:00:0a:01, dl_dst=02:00:00:00:0a:02, \
             nw_src=10.1.0.2, nw_dst=10.1.0.3, tp_src=1234, tp_dst=0x50",
        )
        .unwrap();
        assert_eq!(flow.port, "c1");
        let f = &flow.frame;
        assert_eq!(hex(&f[..14]), "020000000a02020000000a010800");
        let ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
        assert_eq!(ip.protocol(), etherparse::IpNumber::TCP);
        assert_eq!(ip.to_header().calc_header_checksum(), ip.header_checksum());
        assert_eq!(
            (ip.source_addr(), ip.destination_addr()),
            ("10.1.0.2".parse().unwrap(), "10.1.0.3".parse().unwrap())
        );
        let tcp = etherparse::TcpHeaderSlice::from_slice(&f[34..]).unwrap();
        assert_eq!(
            (tcp.source_port(), tcp.destination_port(), tcp.syn()),
            (1234, 80, true)
        );
    }

    #[test]
    fn tags_arp_and_plain_frames() {
        let tagged = parse("in_port=t,dl_vlan=10,udp,nw_dst=10.1.0.3,tp_dst=53").unwrap();
        assert_eq!(hex(&tagged.frame[12..18]), "8100000a0800");
        assert_eq!(tagged.frame[14 + 4 + 9], UDP);
        let arp = parse("in_port=c1,arp_spa=10.1.0.2,arp_tpa=10.1.0.1").unwrap();
        assert_eq!(hex(&arp.frame[..14]), "ffffffffffff0200000000010806");
        assert_eq!(&arp.frame[38..42], &[10, 1, 0, 1]);
        assert_eq!(arp.frame.len(), 60);
        let plain = parse("in_port=c1,dl_dst=02:00:00:00:0b:01").unwrap();
        assert_eq!(hex(&plain.frame[12..14]), "88b5");
    }

    #[test]
    fn bad_flows_are_refused_naming_the_field() {
        for (flow, field) in [
            ("tcp,nw_dst=10.1.0.3", "in_port"),
            ("in_port=c1,nw_dst=10.1.0", "nw_dst"),
            ("in_port=c1,dl_vlan=4095", "dl_vlan"),
            ("in_port=c1,tp_dst=70000", "tp_dst"),
            ("in_port=c1,dl_src=zz", "dl_src"),
            ("in_port=c1,nw_proto=47,nw_dst=10.0.0.9", "nw_proto"),
            ("in_port=c1,frobnicate=1", "frobnicate"),
            ("in_port", "in_port"),
            ("in_port=c1,nw_dst=10.1.0.3,tp_dst=80", "tp_dst"),
        ] {
            let e = parse(flow).unwrap_err();
            assert!(e.starts_with(field), "{flow}: {e}");
        }
    }
}
