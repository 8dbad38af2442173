//! Receive-side scaling: a device with several RX queues spreads flows over them by a
//! Toeplitz hash of their addresses and ports, through a redirection table (RETA) whose
//! entries name queues. tenet asks for IPv4/IPv6, TCP and UDP hashing with a symmetric
//! key (both directions of a flow land on one queue, as a session table wants) and fills
//! the table round-robin, so each queue, and the worker that polls it, takes an equal
//! share of the flows.

use super::error::DpdkError;

/// A Toeplitz key whose 16-bit period makes the hash symmetric: swapping source and
/// destination (addresses, ports) leaves it unchanged (Woo and Park, "Scalable TCP
/// Session Monitoring with Symmetric Receive-side Scaling"). Long enough for any
/// device's key (40 bytes on most NICs, 52 on Intel's 40G and later); each takes a
/// prefix.
static SYMMETRIC_KEY: [u8; 64] = {
    let mut key = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        key[i] = if i % 2 == 0 { 0x6d } else { 0x5a };
        i += 1;
    }
    key
};

/// What a device's RSS does, read back from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RssState {
    /// Hash types (`RTE_ETH_RSS_*` bits) the device hashes.
    pub hash_types: u64,
    /// The Toeplitz key.
    pub key: Vec<u8>,
    /// Queue of each redirection table entry.
    pub table: Vec<u16>,
}

impl RssState {
    /// Whether the device hashes with tenet's symmetric key.
    pub fn symmetric(&self) -> bool {
        !self.key.is_empty() && SYMMETRIC_KEY.starts_with(&self.key)
    }
}

/// The hash types tenet wants that `info`'s device offers; zero when it has no RSS.
pub(super) fn hash_types(info: &dpdk_sys::rte_eth_dev_info) -> u64 {
    (dpdk_sys::TENET_ETH_RSS_IP | dpdk_sys::TENET_ETH_RSS_TCP | dpdk_sys::TENET_ETH_RSS_UDP)
        & info.flow_type_rss_offloads
}

/// Asks for RSS in a configuration about to be applied (`rte_eth_dev_configure`).
pub(super) fn request(conf: &mut dpdk_sys::rte_eth_conf, types: u64) {
    conf.rxmode.mq_mode = dpdk_sys::RTE_ETH_MQ_RX_RSS;
    // The key is set after configure (`spread`), where every PMD takes it; here a null
    // key leaves the device's own until then.
    conf.rx_adv_conf.rss_conf.rss_key = std::ptr::null_mut();
    conf.rx_adv_conf.rss_conf.rss_hf = types;
}

/// The key length a device takes: what it reports, or (for devices that report none,
/// as `net_null` does) the 40 bytes of most NICs' Toeplitz key.
fn key_len(info: &dpdk_sys::rte_eth_dev_info) -> u8 {
    match info.hash_key_size {
        0 => 40,
        size => size,
    }
}

/// Sets the symmetric key (where the device's key has its size) and a redirection
/// table spreading its entries over `queues` queues, on a configured port. Returns
/// whether the key is the symmetric one.
pub(super) fn spread(
    port: u16,
    name: &str,
    info: &dpdk_sys::rte_eth_dev_info,
    types: u64,
    queues: u16,
) -> Result<bool, DpdkError> {
    let mut symmetric = usize::from(key_len(info)) <= SYMMETRIC_KEY.len();
    let mut conf = dpdk_sys::rte_eth_rss_conf {
        // The device copies the key and never writes through this pointer.
        rss_key: SYMMETRIC_KEY.as_ptr().cast_mut(),
        rss_key_len: key_len(info),
        rss_hf: types,
    };
    let mut ret = -1;
    if symmetric {
        // SAFETY: valid port id; conf and the static key it points to outlive the call.
        ret = unsafe { dpdk_sys::rte_eth_dev_rss_hash_update(port, &mut conf) };
    }
    if ret < 0 {
        // Some devices take no key (or not this one): hash types alone, their own key.
        symmetric = false;
        conf.rss_key = std::ptr::null_mut();
        conf.rss_key_len = 0;
        // SAFETY: valid port id; conf outlives the call.
        ret = unsafe { dpdk_sys::rte_eth_dev_rss_hash_update(port, &mut conf) };
    }
    if ret < 0 {
        return Err(DpdkError::new("rte_eth_dev_rss_hash_update", name, ret));
    }
    let size = usize::from(info.reta_size);
    if size == 0 {
        // A device without a table spreads over all its queues by itself.
        return Ok(symmetric);
    }
    let mut table = reta_groups(size);
    for (i, queue) in (0..size).zip((0..queues).cycle()) {
        let group = &mut table[i / GROUP];
        group.mask |= 1 << (i % GROUP);
        group.reta[i % GROUP] = queue;
    }
    // SAFETY: table holds reta_size entries in groups of 64, as the call reads them.
    let ret =
        unsafe { dpdk_sys::rte_eth_dev_rss_reta_update(port, table.as_mut_ptr(), info.reta_size) };
    if ret < 0 {
        return Err(DpdkError::new("rte_eth_dev_rss_reta_update", name, ret));
    }
    Ok(symmetric)
}

const GROUP: usize = dpdk_sys::RTE_ETH_RETA_GROUP_SIZE as usize;

fn reta_groups(size: usize) -> Vec<dpdk_sys::rte_eth_rss_reta_entry64> {
    (0..size.div_ceil(GROUP))
        .map(|_| dpdk_sys::rte_eth_rss_reta_entry64 {
            mask: 0,
            reta: [0; GROUP],
        })
        .collect()
}

/// Reads a port's RSS back: hash types, key and redirection table. `None` when the
/// device does not report them.
pub(super) fn query(port: u16, info: &dpdk_sys::rte_eth_dev_info) -> Option<RssState> {
    let mut key = vec![0u8; usize::from(key_len(info))];
    let mut conf = dpdk_sys::rte_eth_rss_conf {
        rss_key: key.as_mut_ptr(),
        rss_key_len: key_len(info),
        rss_hf: 0,
    };
    // SAFETY: valid port id; the key buffer holds rss_key_len bytes, as the call writes.
    if unsafe { dpdk_sys::rte_eth_dev_rss_hash_conf_get(port, &mut conf) } < 0 {
        return None;
    }
    let size = usize::from(info.reta_size);
    let mut groups = reta_groups(size);
    for (i, group) in groups.iter_mut().enumerate() {
        let entries = (size - i * GROUP).min(GROUP);
        group.mask = if entries == GROUP {
            u64::MAX
        } else {
            (1 << entries) - 1
        };
    }
    let table = if size == 0 {
        Vec::new()
    } else {
        // SAFETY: groups holds reta_size entries in groups of 64, as the call writes.
        let ret = unsafe {
            dpdk_sys::rte_eth_dev_rss_reta_query(port, groups.as_mut_ptr(), info.reta_size)
        };
        if ret < 0 {
            return None;
        }
        (0..size)
            .map(|i| groups[i / GROUP].reta[i % GROUP])
            .collect()
    };
    Some(RssState {
        hash_types: conf.rss_hf,
        key,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Toeplitz hash of `input` under `key` (the device's, in software).
    fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
        let mut hash = 0u32;
        let bit = |i: usize| (key[i / 8] >> (7 - i % 8)) & 1;
        for (byte_index, byte) in input.iter().enumerate() {
            for b in 0..8 {
                if byte & (0x80 >> b) != 0 {
                    let start = byte_index * 8 + b;
                    let window = (0..32).fold(0u32, |w, j| (w << 1) | u32::from(bit(start + j)));
                    hash ^= window;
                }
            }
        }
        hash
    }

    #[test]
    fn the_key_hashes_both_directions_of_a_flow_alike() {
        let tuple = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| {
            let mut v = Vec::new();
            v.extend_from_slice(&src);
            v.extend_from_slice(&dst);
            v.extend_from_slice(&sport.to_be_bytes());
            v.extend_from_slice(&dport.to_be_bytes());
            v
        };
        let there = tuple([10, 0, 0, 1], [192, 168, 7, 9], 40000, 443);
        let back = tuple([192, 168, 7, 9], [10, 0, 0, 1], 443, 40000);
        assert_eq!(
            toeplitz(&SYMMETRIC_KEY, &there),
            toeplitz(&SYMMETRIC_KEY, &back)
        );
        let other = tuple([10, 0, 0, 2], [192, 168, 7, 9], 40000, 443);
        assert_ne!(
            toeplitz(&SYMMETRIC_KEY, &there),
            toeplitz(&SYMMETRIC_KEY, &other)
        );
    }
}
