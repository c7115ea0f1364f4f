//! Typed, owned events decoded from ring-buffer records.
//!
//! Stage 2 of the pipeline (collect -> **decode** -> correlate -> render). Decoding never
//! panics: a short record, a record whose `len` disagrees with its kind, or an unknown kind is
//! a [`DecodeError`], counted by the caller and reported, never silently dropped.

use std::net::Ipv4Addr;

use thiserror::Error;
use tracer_common::{
    EventHeader, HopEvent, DIR_EGRESS, DIR_INGRESS, ENCAP_IPIP, ENCAP_NONE, ENCAP_VXLAN, EVENT_HOP,
};

/// Why a record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte event header")]
    ShortHeader { got: usize, need: usize },
    #[error("record kind {kind} declares {declared} bytes but {got} were read")]
    LengthMismatch {
        kind: u16,
        declared: usize,
        got: usize,
    },
    #[error("record kind {kind} has {got} bytes, expected {need}")]
    BadBodyLength { kind: u16, got: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("hop record with invalid direction {0}")]
    BadDirection(u8),
    #[error("hop record with unknown encapsulation {0}")]
    BadEncap(u8),
}

/// Direction of a tc hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Encapsulation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncapKind {
    Vxlan,
    Ipip,
}

impl EncapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EncapKind::Vxlan => "vxlan",
            EncapKind::Ipip => "ipip",
        }
    }
}

/// Outer headers of an encapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Encap {
    pub kind: EncapKind,
    /// VXLAN network identifier; 0 for IPIP.
    pub vni: u32,
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    /// Outer UDP ports (VXLAN); 0 for IPIP.
    pub outer_sport: u16,
    pub outer_dport: u16,
    pub outer_ip_id: u16,
}

/// The (inner) packet's identity: the same value at every hop of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP/UDP ports; 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
    /// TCP sequence number; 0 otherwise.
    pub tcp_seq: u32,
    /// ICMP echo identifier and sequence; 0 otherwise.
    pub icmp_id: u16,
    pub icmp_seq: u16,
}

/// The 5-tuple of a flow (what a per-flow summary groups by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl PacketId {
    pub fn flow(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// One packet seen by one tc program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopRecord {
    /// CLOCK_MONOTONIC of the producing node, ns.
    pub ts_ns: u64,
    pub cpu: u32,
    /// Network namespace inode of the hop (identifies the node).
    pub netns: u32,
    pub ifindex: u32,
    pub dir: Direction,
    /// `skb->len`.
    pub len: u32,
    pub mark: u32,
    /// `HOP_F_*` bits.
    pub flags: u8,
    pub packet: PacketId,
    pub ttl: u8,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub ip_len: u16,
    pub encap: Option<Encap>,
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Hop(HopRecord),
}

fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked, `read_unaligned` copes with any alignment, and `T` is
    // one of the plain-old-data wire types of `tracer_common` for which any bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read_pod(bytes).ok_or(DecodeError::ShortHeader {
        got: bytes.len(),
        need: std::mem::size_of::<EventHeader>(),
    })?;
    let declared = header.len as usize;
    if declared > bytes.len() {
        return Err(DecodeError::LengthMismatch {
            kind: header.kind,
            declared,
            got: bytes.len(),
        });
    }
    let record = &bytes[..declared];
    match header.kind {
        EVENT_HOP => decode_hop(record).map(Event::Hop),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn decode_hop(record: &[u8]) -> Result<HopRecord, DecodeError> {
    let need = std::mem::size_of::<HopEvent>();
    if record.len() != need {
        return Err(DecodeError::BadBodyLength {
            kind: EVENT_HOP,
            got: record.len(),
            need,
        });
    }
    let ev: HopEvent = read_pod(record).ok_or(DecodeError::BadBodyLength {
        kind: EVENT_HOP,
        got: record.len(),
        need,
    })?;
    let dir = match ev.hop.dir {
        DIR_INGRESS => Direction::Ingress,
        DIR_EGRESS => Direction::Egress,
        other => return Err(DecodeError::BadDirection(other)),
    };
    let e = &ev.hop.encap;
    let encap = match e.kind {
        ENCAP_NONE => None,
        ENCAP_VXLAN | ENCAP_IPIP => Some(Encap {
            kind: if e.kind == ENCAP_VXLAN {
                EncapKind::Vxlan
            } else {
                EncapKind::Ipip
            },
            vni: e.vni,
            outer_src: Ipv4Addr::from(e.saddr),
            outer_dst: Ipv4Addr::from(e.daddr),
            outer_sport: e.sport,
            outer_dport: e.dport,
            outer_ip_id: e.ip_id,
        }),
        other => return Err(DecodeError::BadEncap(other)),
    };
    let p = &ev.hop.pkt;
    Ok(HopRecord {
        ts_ns: ev.header.ts_ns,
        cpu: ev.header.cpu,
        netns: ev.header.netns,
        ifindex: ev.header.ifindex,
        dir,
        len: ev.hop.skb_len,
        mark: ev.hop.mark,
        flags: ev.hop.flags,
        packet: PacketId {
            src: Ipv4Addr::from(p.saddr),
            dst: Ipv4Addr::from(p.daddr),
            proto: p.proto,
            sport: p.sport,
            dport: p.dport,
            ip_id: p.ip_id,
            tcp_seq: p.tcp_seq,
            icmp_id: p.icmp_id,
            icmp_seq: p.icmp_seq,
        },
        ttl: p.ttl,
        tcp_flags: p.tcp_flags,
        icmp_type: p.icmp_type,
        ip_len: p.tot_len,
        encap,
    })
}

/// Human name of an IP protocol number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}
