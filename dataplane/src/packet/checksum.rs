//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! [`sum`] gives a partial ones-complement sum that can be added to other partial sums
//! (a pseudo-header, another buffer) and then reduced with [`fold`]; [`checksum`] is the
//! complemented 16-bit value that goes into a header. A buffer of odd length is summed
//! as if padded with one zero byte, so partial sums only concatenate correctly when all
//! but the last buffer have even length. The `update_*` functions patch a stored
//! checksum after a field changed without touching the rest of the packet.

use std::net::Ipv4Addr;

/// Ones-complement partial sum of `data` as big-endian 16-bit words; result ≤ 0xffff.
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // 64-bit accumulator: no carry is lost below 2^48 words, far beyond any packet.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// [`sum`] of `src`, copying it into the front of `dst` on the way: a segmenter needs
/// both for every segment's payload, and one pass reads the bytes once instead of
/// twice. Only the bytes that fit in `dst` are copied and summed.
#[inline]
pub fn copy_and_sum(dst: &mut [u8], src: &[u8]) -> u32 {
    let len = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..len], &src[..len]);
    let mut to = dst.chunks_exact_mut(8);
    let mut from = src.chunks_exact(8);
    // Native-order 64-bit loads, summed as two 32-bit halves: the ones-complement sum
    // does not care about word size, and byte order only swaps the folded result
    // (RFC 1071 section 2). 2^31 chunks fit before the accumulator could overflow.
    let mut acc: u64 = 0;
    for (to, from) in (&mut to).zip(&mut from) {
        let mut word = [0u8; 8];
        word.copy_from_slice(from);
        to.copy_from_slice(&word);
        let word = u64::from_ne_bytes(word);
        acc += (word & 0xffff_ffff) + (word >> 32);
    }
    let tail = from.remainder();
    to.into_remainder().copy_from_slice(tail);
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    let body = if cfg!(target_endian = "little") {
        (acc as u16).swap_bytes()
    } else {
        acc as u16
    };
    // The tail starts at a multiple of 8, so its words line up with the body's.
    u32::from(fold(u32::from(body) + sum(tail)))
}

/// Whether an option-less IPv4 header's checksum is right, with three loads instead of
/// ten: the ones-complement sum does not care about word size or byte order as long as
/// the carries go around, and a right header sums to all ones.
#[inline(always)]
pub fn ipv4_header_ok(header: &[u8; 20]) -> bool {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    let mut tail = [0u8; 4];
    tail.copy_from_slice(&header[16..20]);
    let (sum, carry_a) = word(0).overflowing_add(word(8));
    let (sum, carry_b) = sum.overflowing_add(u64::from(u32::from_ne_bytes(tail)));
    let sum = u128::from(sum) + u128::from(carry_a) + u128::from(carry_b);
    let sum = ((sum & 0xffff_ffff_ffff_ffff) + (sum >> 64)) as u64;
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32) == 0xffff
}

/// Folds the carries of a partial sum into 16 bits (not complemented).
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    // Two rounds always suffice for 32 bits: the first leaves at most 0x1fffe, and
    // that folds to at most 0xffff. No loop, so no branch on the data.
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// The Internet checksum of `data`: the complemented folded sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header used by UDP and TCP checksums.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + u32::from(protocol) + u32::from(length)
}

/// Stored checksum after a 16-bit word changed from `old` to `new` (RFC 1624 eqn. 3).
#[inline(always)]
pub fn update_u16(checksum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

/// Stored checksum after a 32-bit, 16-bit aligned field changed from `old` to `new`.
#[inline(always)]
pub fn update_u32(checksum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!checksum)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::testutil::XorShift;

    #[test]
    fn wide_header_check_agrees_with_the_plain_sum() {
        let mut rng = XorShift::new(7);
        for i in 0..20_000 {
            let mut h = [0u8; 20];
            rng.fill(&mut h);
            h[10] = 0;
            h[11] = 0;
            if i % 2 == 0 {
                let c = checksum(&h);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            assert_eq!(ipv4_header_ok(&h), checksum(&h) == 0, "{h:02x?}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_vector() {
        // The classic example header, checksum b861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10] = 0xb8;
        hdr[11] = 0x61;
        assert_eq!(checksum(&hdr), 0, "a correct header sums to all ones");
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        assert_eq!(sum(&[]), 0);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn sum_wraps_carries() {
        assert_eq!(sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(sum(&[0xff; 4]), 0xffff);
        // A large buffer must not lose carries.
        let big = vec![0xffu8; 200_000];
        assert_eq!(sum(&big), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
        assert_eq!(fold(0x0002_0001), 0x0003);
    }

    #[test]
    fn partial_sums_concatenate() {
        let a = [1u8, 2, 3, 4];
        let b = [5u8, 6, 7];
        let whole = [1u8, 2, 3, 4, 5, 6, 7];
        assert_eq!(fold(sum(&a) + sum(&b)), fold(sum(&whole)));
    }

    #[test]
    fn copy_and_sum_copies_and_agrees_with_sum() {
        let mut rng = XorShift::new(0xc0b1);
        for round in 0..3000 {
            let len = if round < 40 { round } else { rng.below(3000) };
            let mut src = vec![0u8; len];
            if round % 3 == 0 {
                src.fill(0xff);
            } else {
                rng.fill(&mut src);
            }
            let slack = rng.below(3);
            let mut dst = vec![0xa5u8; len + slack];
            assert_eq!(
                fold(copy_and_sum(&mut dst, &src)),
                fold(sum(&src)),
                "len {len}"
            );
            assert!(copy_and_sum(&mut dst, &src) <= 0xffff);
            assert_eq!(&dst[..len], &src[..]);
            assert!(
                dst[len..].iter().all(|&b| b == 0xa5),
                "nothing past the copy"
            );
            // A short destination takes (and sums) only what fits.
            let short = len / 2;
            let mut dst = vec![0u8; short];
            assert_eq!(fold(copy_and_sum(&mut dst, &src)), fold(sum(&src[..short])));
            assert_eq!(&dst[..], &src[..short]);
        }
    }

    #[test]
    fn pseudo_header_matches_bytes() {
        let src = Ipv4Addr::new(192, 168, 0, 1);
        let dst = Ipv4Addr::new(10, 255, 3, 4);
        let bytes = [192, 168, 0, 1, 10, 255, 3, 4, 0, 17, 0x01, 0x23];
        assert_eq!(
            fold(pseudo_header_v4(src, dst, 17, 0x0123)),
            fold(sum(&bytes))
        );
    }

    /// A buffer with a nonzero word, so its folded sum is never the ambiguous zero.
    fn random_words(rng: &mut XorShift, n: usize) -> Vec<u16> {
        let mut w: Vec<u16> = (0..n).map(|_| rng.next_u16()).collect();
        w[0] |= 1;
        w
    }

    fn words_checksum(words: &[u16]) -> u16 {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        checksum(&bytes)
    }

    #[test]
    fn update_u16_equals_recomputation() {
        let mut rng = XorShift::new(0x1624);
        for round in 0..2000 {
            let n = 2 + rng.below(30);
            let mut words = random_words(&mut rng, n);
            let before = words_checksum(&words);
            let i = 1 + rng.below(n - 1);
            let old = words[i];
            let new = match round % 4 {
                0 => 0,
                1 => 0xffff,
                _ => rng.next_u16(),
            };
            words[i] = new;
            assert_eq!(update_u16(before, old, new), words_checksum(&words));
        }
    }

    #[test]
    fn update_u32_equals_recomputation() {
        let mut rng = XorShift::new(0xfeed);
        for round in 0..2000 {
            let n = 3 + rng.below(30);
            let mut words = random_words(&mut rng, n);
            let before = words_checksum(&words);
            let i = 1 + rng.below(n - 2);
            let old = (u32::from(words[i]) << 16) | u32::from(words[i + 1]);
            let new = match round % 4 {
                0 => 0,
                1 => 0xffff_ffff,
                _ => rng.next_u32(),
            };
            words[i] = (new >> 16) as u16;
            words[i + 1] = new as u16;
            assert_eq!(update_u32(before, old, new), words_checksum(&words));
        }
    }

    #[test]
    fn update_with_no_change_is_identity() {
        assert_eq!(update_u16(0xb861, 0x4011, 0x4011), 0xb861);
        assert_eq!(update_u32(0x1234, 0xc0a8_0001, 0xc0a8_0001), 0x1234);
    }
}
