//! pcapng, the format of tenetd's captures: one section, an interface per captured
//! port (named as the port, nanosecond timestamps), an enhanced packet block per frame
//! carrying its direction, and each interface's statistics at the end. Written in this
//! host's (little-endian) byte order; read back block by block, so a stream can be
//! followed while it arrives.

use anyhow::{bail, Context};
use dataplane::pipeline::capture::Direction;

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const INTERFACE: u32 = 1;
const STATISTICS: u32 = 5;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;

const OPT_END: u16 = 0;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const ISB_OSDROP: u16 = 7;
const ISB_USRDELIV: u16 = 8;

/// A block's header and trailer: type, length, ..., length.
const FRAMING: usize = 12;

fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

fn push_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend(code.to_le_bytes());
    body.extend((value.len() as u16).to_le_bytes());
    body.extend(value);
    body.resize(body.len() + padded(value.len()) - value.len(), 0);
}

fn push_block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let total = (FRAMING + padded(body.len())) as u32;
    out.extend(kind.to_le_bytes());
    out.extend(total.to_le_bytes());
    out.extend(body);
    out.resize(out.len() + padded(body.len()) - body.len(), 0);
    out.extend(total.to_le_bytes());
}

/// The section header: what starts every capture.
pub fn section(application: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(BYTE_ORDER_MAGIC.to_le_bytes());
    body.extend(1u16.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend((-1i64).to_le_bytes());
    push_option(&mut body, SHB_USERAPPL, application.as_bytes());
    push_option(&mut body, OPT_END, &[]);
    let mut out = Vec::new();
    push_block(&mut out, SECTION_HEADER, &body);
    out
}

/// Describes the next interface (numbered from 0 in the order described): an
/// Ethernet port named `name`, timestamps in nanoseconds.
pub fn push_interface(out: &mut Vec<u8>, name: &str) {
    let mut body = Vec::new();
    body.extend(LINKTYPE_ETHERNET.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend(0u32.to_le_bytes());
    push_option(&mut body, IF_NAME, name.as_bytes());
    push_option(&mut body, IF_TSRESOL, &[9]);
    push_option(&mut body, OPT_END, &[]);
    push_block(out, INTERFACE, &body);
}

/// One frame seen on `interface` at `ns` nanoseconds since the epoch.
pub fn push_packet(out: &mut Vec<u8>, interface: u32, ns: u64, direction: Direction, frame: &[u8]) {
    let len = frame.len() as u32;
    let mut body = Vec::with_capacity(32 + padded(frame.len()) + 12);
    body.extend(interface.to_le_bytes());
    body.extend(((ns >> 32) as u32).to_le_bytes());
    body.extend((ns as u32).to_le_bytes());
    body.extend(len.to_le_bytes());
    body.extend(len.to_le_bytes());
    body.extend(frame);
    body.resize(body.len() + padded(frame.len()) - frame.len(), 0);
    push_option(&mut body, EPB_FLAGS, &(direction as u32).to_le_bytes());
    push_option(&mut body, OPT_END, &[]);
    push_block(out, ENHANCED_PACKET, &body);
}

/// What `interface` delivered and lost by `ns`.
pub fn push_statistics(out: &mut Vec<u8>, interface: u32, ns: u64, delivered: u64, lost: u64) {
    let mut body = Vec::new();
    body.extend(interface.to_le_bytes());
    body.extend(((ns >> 32) as u32).to_le_bytes());
    body.extend((ns as u32).to_le_bytes());
    push_option(&mut body, ISB_USRDELIV, &delivered.to_le_bytes());
    push_option(&mut body, ISB_OSDROP, &lost.to_le_bytes());
    push_option(&mut body, OPT_END, &[]);
    push_block(out, STATISTICS, &body);
}

/// A frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The interface's number.
    pub interface: u32,
    /// Nanoseconds since the epoch.
    pub ns: u64,
    /// Which way it went, if the block says.
    pub direction: Option<Direction>,
    /// The frame.
    pub frame: Vec<u8>,
}

/// One block read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// The start of a section.
    Section,
    /// An interface and its name.
    Interface(String),
    /// A frame.
    Packet(Packet),
    /// An interface's statistics: delivered, lost.
    Statistics {
        /// Its number.
        interface: u32,
        /// Frames written for it.
        delivered: u64,
        /// Frames lost.
        lost: u64,
    },
    /// A kind this reader does not use.
    Other(u32),
}

/// The first whole block of `bytes` and the bytes it takes; `Ok(None)` when `bytes`
/// holds only part of one (wait for more).
pub fn next_block(bytes: &[u8]) -> anyhow::Result<Option<(Block, usize)>> {
    let Some(header) = bytes.get(..8) else {
        return Ok(None);
    };
    let kind = u32::from_le_bytes(header[..4].try_into()?);
    let total = u32::from_le_bytes(header[4..8].try_into()?) as usize;
    if total < FRAMING || !total.is_multiple_of(4) {
        bail!("a block of {total} bytes");
    }
    let Some(block) = bytes.get(..total) else {
        return Ok(None);
    };
    let body = &block[8..total - 4];
    let u32_at = |at: usize| -> anyhow::Result<u32> {
        let b = body.get(at..at + 4).context("block cut short")?;
        Ok(u32::from_le_bytes(b.try_into()?))
    };
    let parsed = match kind {
        SECTION_HEADER => {
            if u32_at(0)? != BYTE_ORDER_MAGIC {
                bail!("not a little-endian pcapng section");
            }
            Block::Section
        }
        INTERFACE => {
            let name = options(body.get(8..).unwrap_or_default())?
                .into_iter()
                .find(|(code, _)| *code == IF_NAME)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            Block::Interface(name)
        }
        ENHANCED_PACKET => {
            let captured = u32_at(12)? as usize;
            let frame = body.get(20..20 + captured).context("packet cut short")?;
            let flags = options(&body[20 + padded(captured)..])?
                .into_iter()
                .find(|(code, _)| *code == EPB_FLAGS)
                .and_then(|(_, v)| Some(u32::from_le_bytes(v.try_into().ok()?)));
            Block::Packet(Packet {
                interface: u32_at(0)?,
                ns: (u64::from(u32_at(4)?) << 32) | u64::from(u32_at(8)?),
                direction: match flags.map(|f| f & 3) {
                    Some(1) => Some(Direction::In),
                    Some(2) => Some(Direction::Out),
                    _ => None,
                },
                frame: frame.to_vec(),
            })
        }
        STATISTICS => {
            let counter = |wanted: u16| -> anyhow::Result<u64> {
                Ok(options(body.get(12..).unwrap_or_default())?
                    .into_iter()
                    .find(|(code, _)| *code == wanted)
                    .and_then(|(_, v)| Some(u64::from_le_bytes(v.try_into().ok()?)))
                    .unwrap_or(0))
            };
            Block::Statistics {
                interface: u32_at(0)?,
                delivered: counter(ISB_USRDELIV)?,
                lost: counter(ISB_OSDROP)?,
            }
        }
        other => Block::Other(other),
    };
    Ok(Some((parsed, total)))
}

/// The options of a block body's tail, up to the end marker.
fn options(mut bytes: &[u8]) -> anyhow::Result<Vec<(u16, &[u8])>> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let code = u16::from_le_bytes([bytes[0], bytes[1]]);
        let len = usize::from(u16::from_le_bytes([bytes[2], bytes[3]]));
        if code == OPT_END {
            break;
        }
        let value = bytes.get(4..4 + len).context("an option cut short")?;
        found.push((code, value));
        bytes = bytes.get(4 + padded(len)..).unwrap_or_default();
    }
    Ok(found)
}

/// A whole capture read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Interface names, by number.
    pub interfaces: Vec<String>,
    /// The frames in order.
    pub packets: Vec<Packet>,
    /// Frames the statistics say were lost, over all interfaces.
    pub lost: u64,
}

/// Reads a whole capture.
pub fn parse(mut bytes: &[u8]) -> anyhow::Result<Capture> {
    let mut capture = Capture::default();
    if !matches!(next_block(bytes)?, Some((Block::Section, _))) {
        bail!("does not start with a pcapng section header");
    }
    while !bytes.is_empty() {
        let Some((block, used)) = next_block(bytes)? else {
            bail!("ends inside a block");
        };
        match block {
            Block::Interface(name) => capture.interfaces.push(name),
            Block::Packet(p) => capture.packets.push(p),
            Block::Statistics { lost, .. } => capture.lost += lost,
            Block::Section | Block::Other(_) => {}
        }
        bytes = &bytes[used..];
    }
    Ok(capture)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_reads_back_whole_and_block_by_block() {
        let mut out = section("tenetd test");
        push_interface(&mut out, "c1");
        push_interface(&mut out, "uplink");
        push_packet(
            &mut out,
            0,
            1_700_000_000_123_456_789,
            Direction::In,
            &[1; 61],
        );
        push_packet(
            &mut out,
            1,
            1_700_000_000_123_457_000,
            Direction::Out,
            &[2; 64],
        );
        push_statistics(&mut out, 0, 1_700_000_001_000_000_000, 1, 3);
        assert_eq!(out.len() % 4, 0);
        let capture = parse(&out).unwrap();
        assert_eq!(capture.interfaces, ["c1", "uplink"]);
        assert_eq!(capture.lost, 3);
        assert_eq!(
            capture.packets[0],
            Packet {
                interface: 0,
                ns: 1_700_000_000_123_456_789,
                direction: Some(Direction::In),
                frame: vec![1; 61],
            }
        );
        assert_eq!(capture.packets[1].direction, Some(Direction::Out));
        // A stream cut anywhere gives whole blocks or asks for more, never garbage.
        for cut in 0..out.len() {
            let mut at = 0;
            while let Some((_, used)) = next_block(&out[at..cut]).unwrap() {
                at += used;
            }
            assert!(at <= cut);
        }
        assert!(parse(&out[..out.len() - 2]).is_err());
        assert!(parse(&[0; 64]).is_err());
    }
}
