//! Frames the dataplane tests build the way a peer on the wire would: one definition
//! each, shared by the test files (`mod frames;`).

use std::net::Ipv4Addr;

use dataplane::packet::Mac;

/// `frame` with an 802.1Q tag of `vid` after its MAC addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend(0x8100u16.to_be_bytes());
    f.extend(vid.to_be_bytes());
    f.extend(&frame[12..]);
    f
}

/// `inner` in GRE (transparent Ethernet bridging, keyed or not) behind IPv4 with DF set
/// and Ethernet, from `src` to `dst`, as a tunnel peer sends it.
pub fn gre_encapsulated(
    inner: &[u8],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    key: Option<u32>,
    src: Mac,
    dst: Mac,
) -> Vec<u8> {
    let mut gre = Vec::new();
    gre.extend(if key.is_some() { 0x2000u16 } else { 0 }.to_be_bytes());
    gre.extend(0x6558u16.to_be_bytes());
    if let Some(k) = key {
        gre.extend(k.to_be_bytes());
    }
    let payload_len = (gre.len() + inner.len()) as u16;
    let mut ip = etherparse::Ipv4Header::new(
        payload_len,
        64,
        etherparse::IpNumber(47),
        src_ip.octets(),
        dst_ip.octets(),
    )
    .unwrap();
    ip.dont_fragment = true;
    ip.header_checksum = ip.calc_header_checksum();
    let mut f = Vec::new();
    f.extend(dst);
    f.extend(src);
    f.extend(0x0800u16.to_be_bytes());
    f.extend(ip.to_bytes());
    f.extend(gre);
    f.extend(inner);
    f
}
