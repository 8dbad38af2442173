//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes) a packet socket with
//! `PACKET_VNET_HDR` puts in front of every frame it hands over or takes: how the
//! kernel and tenet tell each other that a frame is a large TCP segment still to be cut
//! (GSO) or that its L4 checksum is still to be finished (CHECKSUM_PARTIAL). Fields are
//! in the host's byte order (a packet socket's virtio is the modern, little-endian one
//! on every host tenet runs on, which is the host order).

/// Length of the header.
pub(crate) const LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds the pseudo-header sum;
/// the sum from `csum_start` to the end, folded, completes it.
pub(crate) const F_NEEDS_CSUM: u8 = 1;

/// `VIRTIO_NET_HDR_F_DATA_VALID`: the kernel (or the NIC) found the L4 checksum right.
pub(crate) const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub(crate) const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub(crate) const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN`: the segments carry ECN's CWR on the first only.
pub(crate) const GSO_ECN: u8 = 0x80;

/// A decoded virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    /// Bytes of headers in front of the payload (a hint; the kernel checks it).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed part starts (from the frame's first byte).
    pub csum_start: u16,
    /// Where the checksum field is (from `csum_start`).
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads the header from its 10 bytes.
    #[inline(always)]
    pub(crate) fn read(bytes: &[u8; LEN]) -> Self {
        let u16_at = |i: usize| u16::from_ne_bytes([bytes[i], bytes[i + 1]]);
        Self {
            flags: bytes[0],
            gso_type: bytes[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    /// Writes the header into its 10 bytes.
    #[inline(always)]
    pub(crate) fn write(&self, bytes: &mut [u8; LEN]) {
        bytes[0] = self.flags;
        bytes[1] = self.gso_type;
        bytes[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        bytes[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        bytes[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        bytes[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// The kind of segmentation the frame owes, without the ECN bit.
    #[inline(always)]
    pub(crate) fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_in_the_kernels_layout() {
        let header = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut bytes = [0u8; LEN];
        header.write(&mut bytes);
        // struct virtio_net_hdr { u8 flags; u8 gso_type; __virtio16 hdr_len, gso_size,
        // csum_start, csum_offset; } on a little-endian host.
        assert_eq!(bytes, [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHeader::read(&bytes), header);
        assert_eq!(header.gso_kind(), GSO_TCPV4);
    }
}
