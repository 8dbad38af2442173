//! The addresses tenet names in text: a MAC and an IPv4 prefix, each with the one
//! parser and the one printer that config, the API, CNI, Docker and the tables share.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv4Addr;

/// An Ethernet MAC address, in wire order.
pub type Mac = [u8; 6];

/// Text that is not the address it should be; says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError {
    text: String,
    expected: &'static str,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not {}", self.text, self.expected)
    }
}

impl std::error::Error for AddressError {}

/// Parses `02:00:00:00:0a:01` (six pairs of hex digits, either case).
pub fn parse_mac(text: &str) -> Result<Mac, AddressError> {
    let bad = || AddressError {
        text: text.to_owned(),
        expected: "a MAC address like 02:00:00:00:0a:01",
    };
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        // from_str_radix alone would take a sign: `+1`.
        let part = parts
            .next()
            .filter(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(bad)?;
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    match parts.next() {
        None => Ok(mac),
        Some(_) => Err(bad()),
    }
}

/// Prints a MAC as [`parse_mac`] reads it: `format!("{}", MacText(mac))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacText(pub Mac);

impl fmt::Display for MacText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The IPv4 netmask of a prefix length (lengths over 32 count as 32).
#[inline(always)]
pub fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

/// An IPv4 address with a prefix length, `10.1.0.1/24`: an interface's address and
/// its subnet, or (with no host bits) a route's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address as written (host bits kept).
    pub ip: Ipv4Addr,
    /// The prefix length, 0 to 32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The netmask.
    #[inline(always)]
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }

    /// The address with its host bits cleared.
    #[inline(always)]
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ip) & self.mask())
    }

    /// The address's host bits.
    #[inline(always)]
    pub fn host_bits(&self) -> u32 {
        u32::from(self.ip) & !self.mask()
    }

    /// Whether `ip` is in the subnet.
    #[inline(always)]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.ip) & self.mask()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = AddressError;

    /// Parses `10.1.0.1/24`; the prefix length is required.
    fn from_str(text: &str) -> Result<Self, AddressError> {
        let bad = || AddressError {
            text: text.to_owned(),
            expected: "an IPv4 address with a prefix length, like 10.1.0.1/24",
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let ip = addr.parse().map_err(|_| bad())?;
        let prefix = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
        Ok(Self { ip, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_round_trip_and_refuse_what_is_not_one() {
        let mac = parse_mac("02:00:00:0A:0b:ff").unwrap();
        assert_eq!(mac, [2, 0, 0, 0x0a, 0x0b, 0xff]);
        assert_eq!(MacText(mac).to_string(), "02:00:00:0a:0b:ff");
        for bad in [
            "",
            "02:00:00:00:0a",
            "02:00:00:00:0a:01:02",
            "2:00:00:00:0a:01",
            "02:00:00:00:0a:0g",
            "02-00-00-00-0a-01",
            "02:00:00:00:0a:+1",
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert!(e.to_string().contains("is not a MAC address"), "{bad}: {e}");
        }
    }

    #[test]
    fn prefixes_parse_print_and_contain() {
        let c: Ipv4Cidr = "10.1.0.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.0.7/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(c.host_bits(), 7);
        assert!(c.contains(Ipv4Addr::new(10, 1, 0, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 1, 1, 1)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        for bad in [
            "10.1.0.1",
            "10.1.0.1/33",
            "10.1.0/24",
            "10.1.0.1/",
            "/24",
            "x/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert_eq!(mask(0), 0);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
    }
}
