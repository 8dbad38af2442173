//! Zero-copy views of the headers tenet reads and writes, smoltcp style: a checked
//! constructor on untrusted input, after which no accessor can panic; unchecked
//! construction when emitting into a buffer already sized; owned `Repr`s where a value
//! is needed.
//!
//! Every view is `XxxPacket<T: AsRef<[u8]>>` over the bytes starting at its header.
//! `new_checked` is the only constructor for bytes that came off the wire; accessors on
//! a view made with `new_unchecked` over a buffer that is too short may panic. Getters
//! return host-order values; setters take host-order values. Views never allocate.
//! Unknown protocol codes never fail a parse: they come back as `Unknown(n)` and
//! round-trip unchanged.

pub mod address;
pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod frame;
pub mod gre;
pub mod gro;
pub mod gso;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vlan;

use core::fmt;

/// Why a view refused a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer ends before the header (or the length it declares) does.
    Truncated,
    /// The header is long enough but its contents are not a valid header we handle.
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => f.write_str("truncated packet"),
            Error::Malformed => f.write_str("malformed packet"),
        }
    }
}

impl std::error::Error for Error {}

/// Result of parsing or checking a header.
pub type Result<T> = core::result::Result<T, Error>;

pub use address::{mask, parse_mac, Ipv4Cidr, Mac, MacText};

/// Shared helpers for the protocol modules' unit tests.
/// Big-endian u16 at byte `at` (the caller checked the length).
#[inline(always)]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Big-endian u32 at byte `at` (the caller checked the length).
#[inline(always)]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// Writes `value` big-endian at byte `at`.
#[inline(always)]
pub(crate) fn write_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Writes `value` big-endian at byte `at`.
#[inline(always)]
pub(crate) fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod testutil {
    /// A tiny deterministic xorshift generator, so randomized tests repeat exactly.
    pub struct XorShift(u64);

    impl XorShift {
        pub fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        pub fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }

        pub fn next_u16(&mut self) -> u16 {
            (self.next_u64() >> 48) as u16
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        pub fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = (self.next_u64() >> 56) as u8;
            }
        }
    }

    #[test]
    fn error_displays() {
        assert_eq!(super::Error::Truncated.to_string(), "truncated packet");
        assert_eq!(super::Error::Malformed.to_string(), "malformed packet");
    }
}
