//! Classic libpcap files (Ethernet, microsecond timestamps): tenetd's captures, the
//! replay topology's input, and what tests read back to check what was sent.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

const MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65535;

/// The file header: microsecond timestamps, Ethernet.
pub fn header() -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend(MAGIC.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend(0i32.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.extend(SNAPLEN.to_le_bytes());
    out.extend(LINKTYPE_ETHERNET.to_le_bytes());
    out
}

/// Appends one record of `frame` (kept whole, however long) taken at `stamp` since
/// the epoch.
pub fn push_record(out: &mut Vec<u8>, stamp: Duration, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend((stamp.as_secs() as u32).to_le_bytes());
    out.extend(stamp.subsec_micros().to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend(len.to_le_bytes());
    out.extend(frame);
}

/// Writes `frames` (without FCS) to `path`, one record each, timestamps 1 µs apart.
pub fn write(
    path: &Path,
    frames: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> anyhow::Result<()> {
    let mut out = header();
    for (i, frame) in frames.into_iter().enumerate() {
        push_record(&mut out, Duration::from_micros(i as u64), frame.as_ref());
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(&out)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The frames of a pcap file (either byte order, micro- or nanosecond timestamps).
pub fn read(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a pcap file", path.display()))
}

/// The frames of pcap file contents.
pub fn parse(bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    if bytes.len() < 24 {
        bail!("shorter than a pcap header");
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into()?);
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => bail!("bad magic {magic:#x}"),
    };
    let u32_at = |at: usize| -> anyhow::Result<u32> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .context("truncated record header")?
            .try_into()?;
        Ok(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let captured = u32_at(at + 8)? as usize;
        let start = at + 16;
        let frame = bytes
            .get(start..start + captured)
            .context("truncated record")?;
        frames.push(frame.to_vec());
        at = start + captured;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let dir = std::env::temp_dir().join(format!("tenet-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.pcap");
        let frames = vec![vec![1u8; 60], vec![2u8; 1514], vec![]];
        write(&path, &frames).unwrap();
        assert_eq!(read(&path).unwrap(), frames);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(parse(&[0; 10]).is_err());
        assert!(parse(&[0; 24]).unwrap_err().to_string().contains("magic"));
    }
}
