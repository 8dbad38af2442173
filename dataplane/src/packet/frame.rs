//! The one interface the pipeline needs from a packet buffer, so the same code runs on
//! DPDK mbufs in production and on plain byte buffers in unit tests, property tests,
//! fuzzers and benchmarks.

/// A frame with room to grow at the front (encapsulation) and to shrink (decapsulation).
pub trait Frame {
    /// The frame's bytes.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame by `len` bytes at the front; false (nothing changed) when the
    /// headroom is too small.
    fn prepend(&mut self, len: usize) -> bool;
    /// Removes `len` bytes from the front; false (nothing changed) when the frame is
    /// shorter.
    fn adjust(&mut self, len: usize) -> bool;
    /// Shortens the frame to `len` bytes; false when it is shorter already.
    fn truncate(&mut self, len: usize) -> bool;
    /// A copy of the frame in a new buffer (for flooding), or `None` when no buffer is
    /// free.
    fn duplicate(&self) -> Option<Self>
    where
        Self: Sized;
    /// The TCP segment size a large frame is owed, 0 for a frame as it goes on a wire:
    /// a container's kernel hands over up to 64 KiB of one TCP stream in one frame
    /// (GSO), and the egress cuts it at this size (or has the port do it).
    fn gso_size(&self) -> u16;
    /// Marks the frame as owing segmentation at `size` bytes of TCP payload (0: none).
    fn set_gso_size(&mut self, size: u16);
    /// Length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Headroom a [`BufFrame`] keeps in front of the frame, as an mbuf does.
pub const DEFAULT_HEADROOM: usize = 128;

/// A frame in an owned byte buffer with headroom, for everything that is not DPDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufFrame {
    buf: Vec<u8>,
    start: usize,
    gso_size: u16,
}

impl BufFrame {
    /// Copies `bytes` behind [`DEFAULT_HEADROOM`] bytes of headroom.
    pub fn new(bytes: &[u8]) -> Self {
        Self::with_headroom(bytes, DEFAULT_HEADROOM)
    }

    /// Copies `bytes` behind `headroom` bytes of headroom.
    pub fn with_headroom(bytes: &[u8], headroom: usize) -> Self {
        let mut buf = vec![0; headroom + bytes.len()];
        buf[headroom..].copy_from_slice(bytes);
        Self {
            buf,
            start: headroom,
            gso_size: 0,
        }
    }

    /// Free bytes in front of the frame.
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Replaces the frame with `bytes` behind [`DEFAULT_HEADROOM`], reusing the buffer
    /// (no allocation once it is large enough): for benchmarks and fuzzers that recycle
    /// one frame.
    pub fn reset(&mut self, bytes: &[u8]) {
        self.buf.clear();
        self.buf.resize(DEFAULT_HEADROOM, 0);
        self.buf.extend_from_slice(bytes);
        self.start = DEFAULT_HEADROOM;
        self.gso_size = 0;
    }
}

impl Frame for BufFrame {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    fn prepend(&mut self, len: usize) -> bool {
        if len > self.start {
            return false;
        }
        self.start -= len;
        true
    }

    fn adjust(&mut self, len: usize) -> bool {
        if len > self.buf.len() - self.start {
            return false;
        }
        self.start += len;
        true
    }

    fn truncate(&mut self, len: usize) -> bool {
        if len > self.buf.len() - self.start {
            return false;
        }
        self.buf.truncate(self.start + len);
        true
    }

    fn duplicate(&self) -> Option<Self> {
        Some(self.clone())
    }

    fn gso_size(&self) -> u16 {
        self.gso_size
    }

    fn set_gso_size(&mut self, size: u16) {
        self.gso_size = size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_shrinks_within_its_headroom() {
        let mut f = BufFrame::with_headroom(&[1, 2, 3, 4], 8);
        assert!(f.prepend(8));
        assert_eq!(f.len(), 12);
        assert!(!f.prepend(1), "no headroom left");
        assert!(f.adjust(10));
        assert_eq!(f.data(), &[3, 4]);
        assert!(!f.adjust(3));
        assert!(f.truncate(1));
        assert_eq!(f.data(), &[3]);
        assert!(!f.truncate(2));
    }
}
