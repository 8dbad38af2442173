//! Container links, made and removed through netlink (rtnetlink for links, addresses
//! and routes; ethtool's generic-netlink family for offloads), never by running `ip`.
//!
//! A container's link is a veth pair: the host end stays here for tenetd to attach, the
//! other end moves into the container's network namespace under the name the runtime
//! asked for, with its address and the gateway route. Work inside a namespace runs on a
//! thread of its own that entered it (`setns` changes only the calling thread), with a
//! netlink socket opened there.
//!
//! The container end sends with TX checksum offload off: a userspace switch reading
//! the host end (AF_XDP, AF_PACKET) gets frames whose checksum the kernel left for a
//! NIC to fill, and there is no NIC.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{bail, Context};
use dataplane::packet::Ipv4Cidr;
use futures_util::stream::TryStreamExt;
use netlink_packet_core::{
    DecodeError, Emitable, NetlinkMessage, NetlinkPayload, ParseableParametrized, NLM_F_ACK,
    NLM_F_REQUEST,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// A container's end of a veth, as the container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEnd {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its IPv4 addresses with prefix lengths.
    pub addresses: Vec<Ipv4Cidr>,
}

/// What to make: a veth whose host end is `host` and whose other end is `ifname` in the
/// namespace at `netns`, with `address` and a default route via `gateway` unless the
/// namespace has one (a second network beside the cluster's keeps that one).
#[derive(Debug, Clone)]
pub struct VethPlan<'a> {
    /// Host end's name.
    pub host: &'a str,
    /// The container's network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
    pub netns: &'a Path,
    /// The container end's name in there.
    pub ifname: &'a str,
    /// Its address and prefix length.
    pub address: Option<(Ipv4Addr, u8)>,
    /// Its default route's next hop.
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the netlink runtime")
}

fn connect() -> anyhow::Result<Handle> {
    let (connection, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Whether a netlink error says the thing exists already.
fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| c.get() == -libc::EEXIST))
}

/// Whether a netlink error says the thing does not exist.
fn not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.is_some_and(|c| c.get() == -libc::ENODEV || c.get() == -libc::ENOENT))
}

async fn index_of(handle: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

async fn mac_of(handle: &Handle, index: u32) -> anyhow::Result<[u8; 6]> {
    let mut links = handle.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await?
        .with_context(|| format!("link {index} vanished"))?;
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
            _ => None,
        })
        .context("link has no MAC")
}

/// Makes the veth pair `host`–`peer` here.
async fn add_veth(handle: &Handle, host: &str, peer: &str, mtu: Option<u32>) -> anyhow::Result<()> {
    handle
        .link()
        .add(with_mtu(LinkVeth::new(host, peer), mtu).build())
        .execute()
        .await
        .with_context(|| format!("creating veth {host}"))
}

fn with_mtu<T>(link: LinkMessageBuilder<T>, mtu: Option<u32>) -> LinkMessageBuilder<T> {
    match mtu {
        Some(mtu) => link.mtu(mtu),
        None => link,
    }
}

async fn set_link(handle: &Handle, link: LinkMessage) -> Result<(), rtnetlink::Error> {
    handle.link().set(link).execute().await
}

async fn bring_up(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    set_link(handle, LinkUnspec::new_with_index(index).up().build()).await
}

/// Runs `f` on a thread that entered the network namespace at `netns`.
fn in_netns<T: Send>(
    netns: &Path,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let file = File::open(netns)
        .with_context(|| format!("opening network namespace {}", netns.display()))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering network namespace {}", netns.display()))?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
    })
}

/// A veth made for a container.
#[derive(Debug, Clone, Copy)]
pub struct Made {
    /// The container end's MAC.
    pub mac: [u8; 6],
    /// Whether its default route is the one the plan gave (not one already there).
    pub default_route: bool,
}

/// Makes the veth of `plan`. On failure nothing is left behind.
pub fn create_veth(plan: &VethPlan<'_>) -> anyhow::Result<Made> {
    let ns = File::open(plan.netns)
        .with_context(|| format!("opening network namespace {}", plan.netns.display()))?;
    // A temporary name for the container end while it is still in our namespace.
    let temporary = format!("{}p", &plan.host[..plan.host.len().min(14)]);
    runtime()?.block_on(async {
        let handle = connect()?;
        add_veth(&handle, plan.host, &temporary, plan.mtu).await?;
        let moved = async {
            let peer = index_of(&handle, &temporary)
                .await?
                .context("the new veth has no peer")?;
            use std::os::fd::AsRawFd;
            set_link(
                &handle,
                LinkUnspec::new_with_index(peer)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .await
            .context("moving the veth into the namespace")?;
            let host = index_of(&handle, plan.host)
                .await?
                .context("host end vanished")?;
            bring_up(&handle, host)
                .await
                .context("bringing the host end up")?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = moved {
            let _ = delete_with(&handle, plan.host).await;
            return Err(e);
        }
        anyhow::Ok(())
    })?;
    let inside = in_netns(plan.netns, || {
        runtime()?.block_on(async {
            let handle = connect()?;
            let index = index_of(&handle, &temporary)
                .await?
                .context("the veth did not arrive in the namespace")?;
            // The MTU given at creation is the host end's; the container end's is its
            // own, and a frame larger than the host end's is dropped on the way out.
            let rename = LinkUnspec::new_with_index(index).name(plan.ifname.to_owned());
            set_link(&handle, with_mtu(rename, plan.mtu).build())
                .await
                .with_context(|| format!("naming the container end {}", plan.ifname))?;
            disable_tx_checksum(plan.ifname).await?;
            if let Some((ip, prefix)) = plan.address {
                handle
                    .address()
                    .add(index, IpAddr::V4(ip), prefix)
                    .execute()
                    .await
                    .with_context(|| format!("adding {ip}/{prefix}"))?;
            }
            for link in [index, index_of(&handle, "lo").await?.unwrap_or(index)] {
                bring_up(&handle, link)
                    .await
                    .context("bringing the container end up")?;
            }
            let mut default_route = false;
            if let Some(gateway) = plan.gateway {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
                    .gateway(gateway)
                    .output_interface(index)
                    .build();
                match handle.route().add(route).execute().await {
                    Ok(()) => default_route = true,
                    Err(e) if exists(&e) => {}
                    Err(e) => {
                        return Err(anyhow::Error::new(e)
                            .context(format!("adding the default route via {gateway}")))
                    }
                }
            }
            Ok(Made {
                mac: mac_of(&handle, index).await?,
                default_route,
            })
        })
    });
    if inside.is_err() {
        // The host end takes the container end with it.
        let _ = delete_link(plan.host);
    }
    inside
}

/// Makes a veth with both ends here (the Docker plugin's: Docker moves `peer` into
/// the container itself); returns `peer`'s MAC.
pub fn create_veth_here(
    host: &str,
    peer: &str,
    mac: Option<[u8; 6]>,
    mtu: Option<u32>,
) -> anyhow::Result<[u8; 6]> {
    runtime()?.block_on(async {
        let handle = connect()?;
        add_veth(&handle, host, peer, mtu).await?;
        let made = async {
            let peer_index = index_of(&handle, peer)
                .await?
                .context("the new veth has no peer")?;
            let mut peer_set = LinkUnspec::new_with_index(peer_index);
            if let Some(mac) = mac {
                peer_set = peer_set.address(mac.to_vec());
            }
            if mac.is_some() || mtu.is_some() {
                set_link(&handle, with_mtu(peer_set, mtu).build())
                    .await
                    .context("setting the container end's MAC and MTU")?;
            }
            // Offload settings move with the device into the container.
            disable_tx_checksum(peer).await?;
            for name in [host, peer] {
                let index = index_of(&handle, name)
                    .await?
                    .context("veth end vanished")?;
                bring_up(&handle, index)
                    .await
                    .with_context(|| format!("bringing {name} up"))?;
            }
            mac_of(&handle, peer_index).await
        }
        .await;
        if made.is_err() {
            let _ = delete_with(&handle, host).await;
        }
        made
    })
}

async fn delete_with(handle: &Handle, name: &str) -> anyhow::Result<bool> {
    let Some(index) = index_of(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("deleting link {name}")),
    }
}

/// Deletes link `name` here (a veth takes its peer along); false if there was none.
pub fn delete_link(name: &str) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        let handle = connect()?;
        delete_with(&handle, name).await
    })
}

/// Whether link `name` exists here.
pub fn link_exists(name: &str) -> anyhow::Result<bool> {
    runtime()?.block_on(async {
        let handle = connect()?;
        Ok(index_of(&handle, name).await?.is_some())
    })
}

/// The interface `ifname` inside the namespace at `netns`, if it is there.
pub fn container_end(netns: &Path, ifname: &str) -> anyhow::Result<Option<ContainerEnd>> {
    in_netns(netns, || {
        runtime()?.block_on(async {
            let handle = connect()?;
            let Some(index) = index_of(&handle, ifname).await? else {
                return Ok(None);
            };
            let mac = mac_of(&handle, index).await?;
            let mut addresses = Vec::new();
            let mut dump = handle
                .address()
                .get()
                .set_link_index_filter(index)
                .execute();
            while let Some(message) = dump.try_next().await? {
                let prefix = message.header.prefix_len;
                for attribute in &message.attributes {
                    if let AddressAttribute::Address(IpAddr::V4(ip)) = attribute {
                        addresses.push(Ipv4Cidr { ip: *ip, prefix });
                    }
                }
            }
            Ok(Some(ContainerEnd { mac, addresses }))
        })
    })
}

/// Turns TX checksum offload off on `ifname` in the calling thread's namespace
/// (`ethtool -K ifname tx off`), and with it every segmentation offload: what an AF_XDP
/// socket sees carries no word of a checksum still owed.
pub async fn disable_tx_checksum(ifname: &str) -> anyhow::Result<()> {
    set_features(ifname, &[], &["tx-checksum-ip-generic"]).await
}

/// Offloads tenet's packet sockets carry whole: partial checksums and TCP/IPv4
/// segments up to 64 KiB.
const CARRIED_OFFLOADS: &[&str] = &[
    "tx-checksum-ip-generic",
    "tx-scatter-gather",
    "tx-tcp-segmentation",
];

/// Segmentation kinds tenet cannot cut: the kernel cuts those before they leave.
const UNCARRIED_OFFLOADS: &[&str] = &[
    "tx-tcp6-segmentation",
    "tx-udp-segmentation",
    "tx-gso-list",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
    "tx-sctp-segmentation",
];

/// The most a container end may hand over at once: a 64 KiB segment with its headers
/// must fit one of tenet's large buffers (65,407 bytes).
const GSO_MAX_SIZE: u32 = 65_000;

/// Readies a container end whose host end an af-packet port serves (in the calling
/// thread's namespace): checksums and TCP/IPv4 segmentation left to tenet, the kinds
/// it cannot cut done by the kernel, segments capped to fit a large buffer.
async fn offload_to_packet_socket(ifname: &str) -> anyhow::Result<()> {
    let handle = connect()?;
    let index = index_of(&handle, ifname)
        .await?
        .with_context(|| format!("no interface {ifname}"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .append_extra_attribute(LinkAttribute::GsoMaxSize(GSO_MAX_SIZE))
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("capping {ifname}'s segments at {GSO_MAX_SIZE} bytes"))?;
    set_features(ifname, CARRIED_OFFLOADS, UNCARRIED_OFFLOADS).await
}

/// [`offload_to_packet_socket`] for the container end `ifname` in the namespace at
/// `netns` (tenet-cni's containers).
pub fn offload_container_end(netns: &Path, ifname: &str) -> anyhow::Result<()> {
    in_netns(netns, || {
        runtime()?.block_on(offload_to_packet_socket(ifname))
    })
}

/// [`offload_to_packet_socket`] for `ifname` here (the Docker plugin's container end,
/// before Docker moves it; its settings move with it).
pub fn offload_here(ifname: &str) -> anyhow::Result<()> {
    runtime()?.block_on(offload_to_packet_socket(ifname))
}

/// Sets ethtool features of `ifname` by name, `on` and `off`, through ethtool's
/// generic-netlink family (`ethtool -K`).
async fn set_features(ifname: &str, on: &[&str], off: &[&str]) -> anyhow::Result<()> {
    let (connection, mut handle, _) =
        genetlink::new_connection().context("opening generic netlink")?;
    tokio::spawn(connection);
    let mut message =
        NetlinkMessage::from(GenlMessage::from_payload(SetFeatures::new(ifname, on, off)));
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut answers = handle
        .request(message)
        .await
        .context("asking ethtool's netlink family")?;
    use futures_util::StreamExt;
    while let Some(answer) = answers.next().await {
        let answer = answer.context("ethtool's answer")?;
        if let NetlinkPayload::Error(e) = answer.payload {
            if let Some(code) = e.code {
                bail!(
                    "setting offloads of {ifname} (on: {on:?}, off: {off:?}): {}",
                    std::io::Error::from_raw_os_error(-code.get())
                );
            }
        }
    }
    Ok(())
}

/// `ETHTOOL_MSG_FEATURES_SET` of some named features: the header names the device, the
/// wanted bitset lists each feature, with a value flag when it is to be on (listed
/// without one: off).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetFeatures {
    attributes: Vec<u8>,
}

const ETHTOOL_MSG_FEATURES_SET: u8 = 12;
const ETHTOOL_A_FEATURES_HEADER: u16 = 1;
const ETHTOOL_A_FEATURES_WANTED: u16 = 3;
const ETHTOOL_A_HEADER_DEV_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BITS: u16 = 3;
const ETHTOOL_A_BITSET_BITS_BIT: u16 = 1;
const ETHTOOL_A_BITSET_BIT_NAME: u16 = 2;
const ETHTOOL_A_BITSET_BIT_VALUE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

/// One netlink attribute: length, type, value, padding to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity((len + 3) & !3);
    out.extend((len as u16).to_ne_bytes());
    out.extend(kind.to_ne_bytes());
    out.extend(value);
    out.resize((len + 3) & !3, 0);
    out
}

fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

impl SetFeatures {
    fn new(ifname: &str, on: &[&str], off: &[&str]) -> Self {
        let header = nla(
            ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED,
            &nla(ETHTOOL_A_HEADER_DEV_NAME, &c_string(ifname)),
        );
        let bit = |name: &str, value: bool| {
            let mut bit = nla(ETHTOOL_A_BITSET_BIT_NAME, &c_string(name));
            if value {
                bit.extend(nla(ETHTOOL_A_BITSET_BIT_VALUE, &[]));
            }
            nla(ETHTOOL_A_BITSET_BITS_BIT | NLA_F_NESTED, &bit)
        };
        let bits: Vec<u8> = on
            .iter()
            .map(|f| bit(f, true))
            .chain(off.iter().map(|f| bit(f, false)))
            .flatten()
            .collect();
        let wanted = nla(
            ETHTOOL_A_FEATURES_WANTED | NLA_F_NESTED,
            &nla(ETHTOOL_A_BITSET_BITS | NLA_F_NESTED, &bits),
        );
        Self {
            attributes: [header, wanted].concat(),
        }
    }
}

impl GenlFamily for SetFeatures {
    fn family_name() -> &'static str {
        "ethtool"
    }

    fn command(&self) -> u8 {
        ETHTOOL_MSG_FEATURES_SET
    }

    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for SetFeatures {
    fn buffer_len(&self) -> usize {
        self.attributes.len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        buffer[..self.attributes.len()].copy_from_slice(&self.attributes);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for SetFeatures {
    fn parse_with_param(buf: &[u8], _header: GenlHeader) -> Result<Self, DecodeError> {
        // A set has no answer beyond the acknowledgement.
        Ok(Self {
            attributes: buf.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let a = nla(2, &c_string("eth0"));
        assert_eq!(a.len(), 12, "4 + 5 bytes, padded to 12");
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 9);
        let m = SetFeatures::new("eth0", &[], &["tx-checksum-ip-generic"]);
        let header_len = u16::from_ne_bytes([m.attributes[0], m.attributes[1]]) as usize;
        assert_eq!(header_len, 4 + 12);
        let kind = u16::from_ne_bytes([m.attributes[2], m.attributes[3]]);
        assert_eq!(kind, ETHTOOL_A_FEATURES_HEADER | NLA_F_NESTED);
        assert_eq!(m.buffer_len() % 4, 0);
    }

    #[test]
    fn a_feature_to_turn_on_carries_the_value_flag() {
        let off = SetFeatures::new("eth0", &[], &["tx-tcp-segmentation"]);
        let on = SetFeatures::new("eth0", &["tx-tcp-segmentation"], &[]);
        // The flag is an empty attribute: 4 more bytes in every enclosing nest.
        assert_eq!(on.attributes.len(), off.attributes.len() + 4);
        let flag = nla(ETHTOOL_A_BITSET_BIT_VALUE, &[]);
        assert!(on.attributes.windows(4).any(|w| w == flag.as_slice()));
        assert!(!off.attributes.windows(4).any(|w| w == flag.as_slice()));
    }
}
