//! The pcap-ng file: one interface block per (node, interface, link type), then the packets in
//! time order, each with a comment and the hop's JSON in a custom option.
//!
//! Written with the `pcap-file` crate (3.0 pre-release, pinned exactly), not by hand. Every
//! interface block states nanosecond timestamps (`if_tsresol` 9: without it readers assume
//! microseconds and show times 1000x off). The link type is what the captured bytes start with:
//! Ethernet for tc on Ethernet-like devices (veths, `vxlan.calico`, the uplink), raw IP
//! (`LINKTYPE_RAW`) for tc on L3 devices (`tunl0`) and for the drop hook, which reads from the
//! network header (where a packet dies the Ethernet header may not be built yet, or be a stale
//! one of another device). One device can therefore have two blocks, both named
//! `node/ifname`, told apart by their description.

use std::{borrow::Cow, collections::BTreeMap, io::Write, sync::Arc, time::Duration};

use pcap_file::{
    pcapng::{
        blocks::{
            custom::CustomUtf8Option,
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{
                InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
            },
            opt_common::CommonOption,
        },
        PcapNgWriter,
    },
    DataLink,
};
use thiserror::Error;
use tracer_common::SNAPLEN_MAX;

use crate::model::{Captured, LinkType};

/// The Private Enterprise Number of the custom option that carries each packet's JSON. Not
/// registered with IANA (as Retis does with its own): readers that do not know it skip the
/// option; Wireshark shows it as a custom option with this number.
pub const TRACER_PEN: u32 = 70_001;

/// Which hook saw the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hook {
    /// A tc program on the device.
    Tc,
    /// The `kfree_skb` drop hook (bytes from the network header).
    Drop,
}

/// One interface block: the device and what its packets' bytes start with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Iface {
    pub node: String,
    pub ifname: String,
    pub link: LinkType,
    pub hook: Hook,
}

impl Iface {
    /// `node/ifname`, the block's name.
    pub fn name(&self) -> String {
        format!("{}/{}", self.node, self.ifname)
    }

    fn description(&self) -> String {
        let bytes = match self.link {
            LinkType::Ethernet => "from the Ethernet header",
            LinkType::Ipv4 => "from the IPv4 header",
        };
        match self.hook {
            Hook::Tc => format!(
                "tracer: tc hook on {} of node {}, bytes {bytes}",
                self.ifname, self.node
            ),
            Hook::Drop => format!(
                "tracer: kfree_skb drop hook, skb on {} of node {}, bytes {bytes} (the network header)",
                self.ifname, self.node
            ),
        }
    }
}

/// One packet to write.
#[derive(Clone, Debug)]
pub struct Packet {
    pub iface: Iface,
    /// Nanoseconds since the Unix epoch (or, without clock samples, the monotonic clock).
    pub ts_ns: i128,
    pub snap: Arc<Captured>,
    pub comment: String,
    pub json: String,
}

#[derive(Debug, Error)]
pub enum PcapError {
    #[error("writing the pcap-ng file: {0}")]
    Write(#[from] pcap_file::pcapng::PcapNgWriteError),
}

/// What was written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub interfaces: usize,
    pub packets: usize,
}

fn datalink(link: LinkType) -> DataLink {
    match link {
        LinkType::Ethernet => DataLink::ETHERNET,
        LinkType::Ipv4 => DataLink::RAW,
    }
}

/// Writes `packets` (sorted here by time, stable) to `out` as one pcap-ng section.
pub fn write<W: Write>(out: W, mut packets: Vec<Packet>) -> Result<(W, Written), PcapError> {
    packets.sort_by_key(|p| p.ts_ns);
    let mut ids: BTreeMap<Iface, u32> = BTreeMap::new();
    for p in &packets {
        let n = ids.len() as u32;
        ids.entry(p.iface.clone()).or_insert(n);
    }
    let mut w = PcapNgWriter::new(out)?;
    // Blocks in id order (ids were handed out in the packets' time order).
    let mut order: Vec<(&Iface, u32)> = ids.iter().map(|(i, &id)| (i, id)).collect();
    order.sort_by_key(|&(_, id)| id);
    for (iface, _) in &order {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: datalink(iface.link),
            snaplen: SNAPLEN_MAX as u32,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(iface.name())),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(iface.description())),
                InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
            ],
        })?;
    }
    for p in &packets {
        let ts = u64::try_from(p.ts_ns.max(0)).unwrap_or(u64::MAX);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: ids[&p.iface],
            timestamp: Duration::from_nanos(ts),
            original_len: p.snap.orig_len.max(p.snap.data.len() as u32),
            data: Cow::Borrowed(&p.snap.data),
            options: vec![
                EnhancedPacketOption::Common(CommonOption::Comment(Cow::Borrowed(&p.comment))),
                EnhancedPacketOption::Common(CommonOption::CustomUtf8Copiable(CustomUtf8Option {
                    pen: TRACER_PEN,
                    value: Cow::Borrowed(&p.json),
                })),
            ],
        })?;
    }
    let written = Written {
        interfaces: ids.len(),
        packets: packets.len(),
    };
    Ok((w.into_inner(), written))
}
