//! The probe every generated frame carries in its last bytes: a magic naming the
//! stream (the sending port), the stream's sequence number and the TSC at
//! transmission. At the receiver it gives loss,
//! reordering and latency without any per-flow state in the switch's way.
//!
//! The probe sits at the end of the frame, so it survives whatever a switch does to
//! the headers in front (tags pushed or popped, tunnels added or removed, addresses
//! translated). A receiver that finds padding after it looks a little further back.

use dataplane::packet::checksum;

/// Bytes of a probe: magic and stream (2), sequence (4), TSC (8).
pub const PROBE_LEN: usize = 14;
const MAGIC: u8 = 0xbe;
/// The second byte: these two bits set as below, the stream in the other six.
const STREAM_MARK: u8 = 0x40;
/// Streams a probe can name.
pub const STREAMS: usize = 64;
/// How far back from the end a receiver looks for a probe (padding to 60 bytes after a
/// tag was removed from a short frame).
const SEARCH: usize = 64;

/// A probe as read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The stream's sequence number.
    pub seq: u32,
    /// TSC when it was sent.
    pub tsc: u64,
}

/// Writes a probe of `stream` (below [`STREAMS`]) into the last bytes of `frame` (which
/// must have the room) and patches the L4 checksum at `checksum_at`, computed with
/// those bytes zero.
#[inline]
pub fn write(frame: &mut [u8], checksum_at: Option<usize>, stream: usize, probe: Probe) {
    let at = frame.len() - PROBE_LEN;
    let mut bytes = [0u8; PROBE_LEN];
    bytes[0] = MAGIC;
    bytes[1] = STREAM_MARK | (stream % STREAMS) as u8;
    bytes[2..6].copy_from_slice(&probe.seq.to_be_bytes());
    bytes[6..].copy_from_slice(&probe.tsc.to_be_bytes());
    frame[at..].copy_from_slice(&bytes);
    if let Some(c) = checksum_at {
        let old = u16::from_be_bytes([frame[c], frame[c + 1]]);
        // The probe starts at an even offset from the L4 header only if the frame's
        // L4 start and end line up; add its words in the frame's own alignment.
        let parity = (at - c) % 2;
        let added = if parity == 0 {
            checksum::sum(&bytes)
        } else {
            let mut shifted = [0u8; PROBE_LEN + 1];
            shifted[1..].copy_from_slice(&bytes);
            checksum::sum(&shifted)
        };
        let mut sum = !checksum::fold(u32::from(!old) + added);
        // UDP sends a computed zero as all ones (zero means "no checksum").
        if sum == 0 {
            sum = 0xffff;
        }
        frame[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The stream and probe of a received frame, if it has one.
#[inline]
pub fn read(frame: &[u8]) -> Option<(usize, Probe)> {
    let last = frame.len().checked_sub(PROBE_LEN)?;
    let first = last.saturating_sub(SEARCH);
    (first..=last)
        .rev()
        .find(|&at| frame[at] == MAGIC && frame[at + 1] & 0xc0 == STREAM_MARK)
        .map(|at| {
            let b = &frame[at..at + PROBE_LEN];
            let probe = Probe {
                seq: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
                tsc: u64::from_be_bytes([b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13]]),
            };
            (usize::from(b[1] & 0x3f), probe)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{build, l4_checksum_is_right, Kind, Size, Spec};
    use etherparse::SlicedPacket;

    #[test]
    fn probes_round_trip_and_keep_checksums_right() {
        for kind in [Kind::Plain, Kind::Vlan, Kind::Gre, Kind::Tcp] {
            for size in [Size::Fixed(64), Size::Fixed(65), Size::Fixed(1518)] {
                for t in build(&Spec::new(kind, size.clone(), 3, 1)).unwrap() {
                    if !t.probe {
                        continue;
                    }
                    let mut f = t.bytes.clone();
                    let probe = Probe {
                        seq: 0xdead_beef,
                        tsc: 0x0123_4567_89ab_cdef,
                    };
                    write(&mut f, t.l4_checksum, 5, probe);
                    assert_eq!(read(&f), Some((5, probe)));
                    let inner = if kind == Kind::Gre { &f[42..] } else { &f[..] };
                    let p = SlicedPacket::from_ethernet(inner).unwrap();
                    assert!(l4_checksum_is_right(&p), "{kind:?} {size}");
                }
            }
        }
    }

    #[test]
    fn a_probe_is_found_behind_padding_and_not_invented() {
        let mut f = vec![0u8; 56];
        write(&mut f, None, 63, Probe { seq: 7, tsc: 9 });
        f.resize(60, 0);
        assert_eq!(read(&f), Some((63, Probe { seq: 7, tsc: 9 })));
        assert_eq!(read(&[0u8; 60]), None);
        assert_eq!(read(&[0u8; 3]), None);
    }
}
