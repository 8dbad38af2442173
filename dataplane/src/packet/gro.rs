//! Receive coalescing of TCP/IPv4 segments (what Linux's GRO and DPDK's rte_gro do):
//! consecutive frames of one TCP stream, as a sender's segmentation cut them, joined
//! back into one large segment that owes its segmentation again.
//!
//! A host that receives a tunnel's segment train hands its container one large segment
//! per train instead of one skb per frame, and runs the pipeline once for it. The frames
//! are the ones [`super::gso`] reads: Ethernet (at most one 802.1Q tag), IPv4 and TCP,
//! alone or carried in GRE. A [`Train`] follows the frames that may join its first one:
//! every header byte the same as the first's except the lengths, checksums and
//! identification of each IPv4 header and the TCP sequence number, flags and window;
//! the identification one more per frame, the sequence contiguous, every payload but the
//! last exactly the first's size (the segment size owed again), only ACK set (PSH ends
//! the train), nothing fragmented, padded or longer than its IPv4 length says. The
//! caller checks that each frame's TCP checksum was right before it joins: the joined
//! segment's checksums are made again wherever it leaves (see [`super::gso`]), so a bad
//! one would otherwise pass unnoticed.

use core::ops::Range;

use super::checksum;
use super::gso::{fill_ipv4_checksum, Layout};
use super::ipv4::{self, Ipv4Packet};
use super::tcp::{self, TcpPacket, FLAG_ACK, FLAG_PSH};

/// Frames shorter than this are never segments of a train worth joining (a pure ACK
/// with timestamps is 66 bytes): the 64-byte path stops at one length check.
pub const MIN_FRAME: usize = 128;

/// A run of frames of one TCP stream being joined, described by its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Train {
    layout: Layout,
    /// Payload bytes of every frame but the last (the first frame's).
    mss: usize,
    next_seq: u32,
    next_ident: u16,
    /// Bytes of the joined frame so far.
    len: usize,
    /// Longest joined frame allowed.
    max_len: usize,
    frames: usize,
    /// The last frame joined had less than `mss` bytes or PSH: nothing may follow.
    closed: bool,
    /// The last frame's PSH flag and window, which the joined segment carries.
    push: u16,
    window: u16,
}

/// The header fields that may differ between frames of a train, as ranges of the
/// header: each IPv4 header's total length, identification and checksum, the TCP
/// sequence number, flags, window and checksum.
fn varying(layout: &Layout) -> [Range<usize>; 8] {
    let ip_fields = |at: usize| {
        [
            at + ipv4::field::LENGTH.start..at + ipv4::field::IDENT.end,
            at + ipv4::field::CHECKSUM.start..at + ipv4::field::CHECKSUM.end,
        ]
    };
    // Without a tunnel the "outer" ranges repeat the inner ones.
    let [outer_len_ident, outer_checksum] =
        ip_fields(layout.outer_ip_offset().unwrap_or(layout.ip_offset()));
    let [len_ident, checksum] = ip_fields(layout.ip_offset());
    let tcp = layout.tcp_offset();
    [
        outer_len_ident,
        outer_checksum,
        len_ident,
        checksum,
        tcp + tcp::field::SEQ_NUM.start..tcp + tcp::field::SEQ_NUM.end,
        tcp + tcp::field::FLAGS.start..tcp + tcp::field::FLAGS.end,
        tcp + tcp::field::WIN_SIZE.start..tcp + tcp::field::WIN_SIZE.end,
        tcp + tcp::field::CHECKSUM.start..tcp + tcp::field::CHECKSUM.end,
    ]
}

/// The frame's layout if it is a segment a train may hold: payload, no padding (each
/// IPv4 length says exactly what follows it) and a right checksum on each IPv4 header
/// (the joined one gets new ones: a wrong one must not pass), and only ACK set, or ACK
/// and PSH.
fn segment_of(frame: &[u8]) -> Option<Layout> {
    if frame.len() < MIN_FRAME {
        return None;
    }
    let layout = Layout::parse(frame).ok()?;
    let exact = |at: usize| {
        let ip = Ipv4Packet::new_unchecked(&frame[at..]);
        usize::from(ip.total_len()) == frame.len() - at
            && checksum::checksum(&frame[at..at + ip.header_len()]) == 0
    };
    let flags = TcpPacket::new_unchecked(&frame[layout.tcp_offset()..]).flags();
    (layout.payload_len() > 0
        && exact(layout.ip_offset())
        && layout.outer_ip_offset().is_none_or(exact)
        && flags & !FLAG_PSH == FLAG_ACK)
        .then_some(layout)
}

impl Train {
    /// A train that starts with `frame`, joined frames to be at most `max_len` bytes
    /// (a large buffer's room; the IPv4 lengths cap it at 64 KiB). `None` if the frame
    /// cannot be part of one.
    pub fn start(frame: &[u8], max_len: usize) -> Option<Train> {
        let layout = segment_of(frame)?;
        let ip = Ipv4Packet::new_unchecked(&frame[layout.ip_offset()..]);
        let tcp = TcpPacket::new_unchecked(&frame[layout.tcp_offset()..]);
        let outer = layout.outer_ip_offset().unwrap_or(layout.ip_offset());
        Some(Train {
            layout,
            mss: layout.payload_len(),
            next_seq: tcp.seq_number().wrapping_add(layout.payload_len() as u32),
            next_ident: ip.ident().wrapping_add(1),
            len: frame.len(),
            max_len: max_len.min(outer + usize::from(u16::MAX)),
            frames: 1,
            closed: tcp.flags() & FLAG_PSH != 0,
            push: tcp.flags() & FLAG_PSH,
            window: tcp.window_len(),
        })
    }

    /// Frames in the train.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// The segment size the joined frame owes: the first frame's payload.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// Bytes of the joined frame.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the train holds only headers (never: every frame carries payload).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes `frame` into the train if it continues the stream of `first` (the train's
    /// first frame) exactly, and returns the part of it to append: its payload. `None`,
    /// and the train unchanged, otherwise.
    pub fn join(&mut self, first: &[u8], frame: &[u8]) -> Option<Range<usize>> {
        if self.closed || frame.len() < self.layout.header_len() {
            return None;
        }
        let layout = segment_of(frame)?;
        let header_len = self.layout.header_len();
        let payload = layout.payload_len();
        if layout.header_len() != header_len
            || layout.ip_offset() != self.layout.ip_offset()
            || payload > self.mss
            || self.len + payload > self.max_len
        {
            return None;
        }
        let mut same_until = 0;
        for range in sorted(varying(&self.layout)) {
            let until = range.start.max(same_until);
            if first[same_until..until] != frame[same_until..until] {
                return None;
            }
            same_until = same_until.max(range.end);
        }
        if first[same_until..header_len] != frame[same_until..header_len] {
            return None;
        }
        let ip = Ipv4Packet::new_unchecked(&frame[layout.ip_offset()..]);
        let tcp = TcpPacket::new_unchecked(&frame[layout.tcp_offset()..]);
        if ip.ident() != self.next_ident || tcp.seq_number() != self.next_seq {
            return None;
        }
        self.next_ident = self.next_ident.wrapping_add(1);
        self.next_seq = self.next_seq.wrapping_add(payload as u32);
        self.len += payload;
        self.frames += 1;
        self.push = tcp.flags() & FLAG_PSH;
        self.window = tcp.window_len();
        self.closed = payload < self.mss || self.push != 0;
        Some(header_len..frame.len())
    }

    /// Makes `joined` (the first frame with every joined payload behind it) one valid
    /// large segment: IPv4 lengths and header checksums for its length, and the last
    /// frame's PSH and window. Its TCP checksum is left as the first frame's: wherever a
    /// large segment leaves, it is made again.
    pub fn finish(&self, joined: &mut [u8]) {
        if joined.len() != self.len {
            return;
        }
        let fix_ip = |joined: &mut [u8], at: usize| {
            let header_len = Ipv4Packet::new_unchecked(&joined[at..]).header_len();
            Ipv4Packet::new_unchecked(&mut joined[at..]).set_total_len((self.len - at) as u16);
            fill_ipv4_checksum(&mut joined[at..at + header_len]);
        };
        if let Some(outer) = self.layout.outer_ip_offset() {
            fix_ip(joined, outer);
        }
        fix_ip(joined, self.layout.ip_offset());
        let mut tcp = TcpPacket::new_unchecked(&mut joined[self.layout.tcp_offset()..]);
        tcp.set_flags(tcp.flags() | self.push);
        tcp.set_window_len(self.window);
    }
}

/// `ranges` in order of their starts (the outer ones come first when tunnelled).
fn sorted<const N: usize>(mut ranges: [Range<usize>; N]) -> [Range<usize>; N] {
    ranges.sort_unstable_by_key(|r| r.start);
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::gso::L4Checksum;
    use etherparse::PacketBuilder;

    const MSS: usize = 1400;

    /// The segments a sender's stack cuts from `payload` (ident counting up from
    /// 0xfffe, sequence from 0xffff_f000: both wrap), PSH on the last, optionally GRE-
    /// tunnelled with a key.
    fn train(payload: &[u8], gre: bool) -> Vec<Vec<u8>> {
        let mut large = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 0xffff_f000, 512)
            .ack(77)
            .psh()
            .write(&mut large, payload)
            .unwrap();
        large[18..20].copy_from_slice(&0xfffeu16.to_be_bytes());
        if gre {
            let mut outer = Vec::new();
            outer.extend([2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 0x08, 0x00]);
            let mut ip = etherparse::Ipv4Header::new(
                0,
                64,
                etherparse::IpNumber::GRE,
                [198, 19, 0, 1],
                [198, 19, 0, 2],
            )
            .unwrap();
            ip.dont_fragment = true;
            outer.extend(ip.to_bytes());
            outer.extend([0x20, 0, 0x65, 0x58, 0, 0, 0, 100]);
            outer.extend(&large);
            large = outer;
        }
        let layout = Layout::parse(&large).unwrap();
        let mut out = vec![0; layout.header_len() + MSS];
        (0..layout.segments(MSS))
            .map(|i| {
                let len = layout
                    .write_segment(&large, MSS, i, L4Checksum::Complete, &mut out)
                    .unwrap();
                out[..len].to_vec()
            })
            .collect()
    }

    /// Joins `frames` as the receive path does: the train of the first, each next one
    /// while it fits; returns the joined frame and how many it took.
    fn join_all(frames: &[Vec<u8>], max_len: usize) -> (Vec<u8>, usize) {
        let mut t = Train::start(&frames[0], max_len).unwrap();
        let mut joined = frames[0].clone();
        for f in &frames[1..] {
            match t.join(&frames[0], f) {
                Some(range) => joined.extend_from_slice(&f[range]),
                None => break,
            }
        }
        t.finish(&mut joined);
        assert_eq!(joined.len(), t.len());
        (joined, t.frames())
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// Cut, joined and cut again: the same frames, byte for byte (plain and in GRE).
    #[test]
    fn a_train_joins_back_into_the_segment_it_was_cut_from() {
        for gre in [false, true] {
            let data = payload(10 * MSS + 123);
            let frames = train(&data, gre);
            assert_eq!(frames.len(), 11);
            let (joined, count) = join_all(&frames, 65_000);
            assert_eq!(count, 11);
            let layout = Layout::parse(&joined).unwrap();
            assert_eq!(layout.payload_len(), data.len());
            let mut ip = Ipv4Packet::new_unchecked(&joined[layout.ip_offset()..]);
            assert!(ip.verify_checksum());
            assert_eq!(
                usize::from(ip.total_len()),
                joined.len() - layout.ip_offset()
            );
            ip = Ipv4Packet::new_unchecked(&joined[layout.outer_ip_offset().unwrap_or(0)..]);
            if gre {
                assert!(ip.verify_checksum(), "outer");
                assert_eq!(usize::from(ip.total_len()), joined.len() - 14);
            }
            let tcp = TcpPacket::new_unchecked(&joined[layout.tcp_offset()..]);
            assert_eq!(tcp.flags(), FLAG_ACK | FLAG_PSH, "the last one's PSH");
            let mut out = vec![0; layout.header_len() + MSS];
            for (i, frame) in frames.iter().enumerate() {
                let len = layout
                    .write_segment(&joined, MSS, i, L4Checksum::Complete, &mut out)
                    .unwrap();
                assert_eq!(&out[..len], &frame[..], "segment {i} again");
            }
        }
    }

    #[test]
    fn a_train_stops_where_the_stream_does() {
        let frames = train(&payload(6 * MSS), false);
        // Each change comes with a right IPv4 header checksum, but for the last.
        let refused = |mutate: &dyn Fn(&mut Vec<u8>), at: usize| {
            let mut frames = frames.clone();
            mutate(&mut frames[at]);
            fill_ipv4_checksum(&mut frames[at][14..34]);
            join_all(&frames, 65_000).1
        };
        // A gap in the sequence, a repeated identification, another port, another TTL,
        // an option, a SYN: each ends the train before that frame.
        assert_eq!(refused(&|f| f[38] ^= 1, 3), 3, "sequence");
        assert_eq!(refused(&|f| f[19] ^= 1, 2), 2, "identification");
        assert_eq!(refused(&|f| f[35] ^= 1, 4), 4, "port");
        assert_eq!(refused(&|f| f[22] ^= 1, 1), 1, "TTL");
        assert_eq!(refused(&|f| f[47] |= 0x02, 5), 5, "SYN");
        // A short frame may end a train: it joins, nothing after it does.
        let mut short = frames.clone();
        let cut = short[2].len() - 100;
        short[2].truncate(cut);
        let total = u16::from_be_bytes([short[2][16], short[2][17]]) - 100;
        short[2][16..18].copy_from_slice(&total.to_be_bytes());
        fill_ipv4_checksum(&mut short[2][14..34]);
        assert_eq!(join_all(&short, 65_000).1, 3);
        // PSH in the middle: that frame joins, nothing after it.
        let mut pushed = frames.clone();
        pushed[1][47] |= 0x08;
        assert_eq!(join_all(&pushed, 65_000).1, 2);
        // The room of the buffer.
        assert_eq!(join_all(&frames, frames[0].len() + 2 * MSS).1, 3);
        // A wrong IPv4 header checksum (the joined frame's would be made anew).
        let mut wrong = frames.clone();
        wrong[2][24] ^= 1;
        assert_eq!(join_all(&wrong, 65_000).1, 2, "IPv4 checksum");
        // Padding behind the IPv4 packet.
        let mut padded = frames.clone();
        padded[1].push(0);
        assert_eq!(join_all(&padded, 65_000).1, 1);
    }

    #[test]
    fn what_is_no_segment_starts_no_train() {
        let frames = train(&payload(MSS), false);
        assert!(Train::start(&frames[0][..60], 65_000).is_none(), "short");
        let mut syn = frames[0].clone();
        syn[47] = 0x02;
        assert!(Train::start(&syn, 65_000).is_none());
        let mut headers_only = frames[0].clone();
        headers_only.truncate(54);
        headers_only[16..18].copy_from_slice(&40u16.to_be_bytes());
        assert!(Train::start(&headers_only, 65_000).is_none(), "no payload");
        let mut rng = crate::packet::testutil::XorShift::new(7);
        for _ in 0..2000 {
            let mut junk = frames[0].clone();
            for _ in 0..4 {
                let at = rng.below(junk.len());
                junk[at] = rng.next_u16() as u8;
            }
            let cut = rng.below(junk.len());
            junk.truncate(cut);
            if let Some(mut t) = Train::start(&junk, 65_000) {
                let _ = t.join(&junk, &frames[0]);
                let _ = t.join(&junk, &junk);
            }
        }
    }
}
