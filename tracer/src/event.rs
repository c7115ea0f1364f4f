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

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{Encap as WireEncap, Hop, Ipv4Packet};

    fn record(ev: &HopEvent) -> Vec<u8> {
        // SAFETY: HopEvent is a plain #[repr(C)] struct of integers without implicit padding.
        let bytes = unsafe {
            std::slice::from_raw_parts((ev as *const HopEvent).cast::<u8>(), size_of::<HopEvent>())
        };
        bytes.to_vec()
    }

    fn vxlan_hop() -> HopEvent {
        HopEvent {
            header: EventHeader {
                kind: EVENT_HOP,
                len: size_of::<HopEvent>() as u16,
                cpu: 1,
                ts_ns: 123_456,
                netns: 4026531993,
                ifindex: 2,
            },
            hop: Hop {
                dir: DIR_EGRESS,
                flags: 0,
                _pad: 0,
                skb_len: 148,
                mark: 0,
                gso_segs: 1,
                encap: WireEncap {
                    kind: ENCAP_VXLAN,
                    _pad: [0; 3],
                    vni: 4096,
                    saddr: [10, 10, 0, 1],
                    daddr: [10, 10, 0, 2],
                    sport: 40000,
                    dport: 4789,
                    ip_id: 7,
                    tot_len: 134,
                },
                pkt: Ipv4Packet {
                    saddr: [10, 244, 0, 1],
                    daddr: [10, 244, 4, 1],
                    proto: 1,
                    ip_id: 0x1234,
                    icmp_type: 8,
                    icmp_id: 99,
                    icmp_seq: 3,
                    tot_len: 84,
                    ttl: 64,
                    ..Ipv4Packet::default()
                },
            },
        }
    }

    #[test]
    fn decodes_an_encapsulated_hop() {
        let Event::Hop(h) = decode(&record(&vxlan_hop())).expect("decodes");
        assert_eq!(h.ts_ns, 123_456);
        assert_eq!(h.dir, Direction::Egress);
        assert_eq!(h.packet.src, Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(h.packet.dst, Ipv4Addr::new(10, 244, 4, 1));
        assert_eq!(
            (h.packet.icmp_id, h.packet.icmp_seq, h.packet.ip_id),
            (99, 3, 0x1234)
        );
        let e = h.encap.expect("encapsulated");
        assert_eq!(e.kind, EncapKind::Vxlan);
        assert_eq!(e.vni, 4096);
        assert_eq!(
            (e.outer_src, e.outer_dst),
            (Ipv4Addr::new(10, 10, 0, 1), Ipv4Addr::new(10, 10, 0, 2))
        );
        assert_eq!((e.outer_sport, e.outer_dport), (40000, 4789));
    }

    #[test]
    fn decodes_a_plain_hop() {
        let mut ev = vxlan_hop();
        ev.hop.encap = WireEncap::default();
        ev.hop.dir = DIR_INGRESS;
        let Event::Hop(h) = decode(&record(&ev)).expect("decodes");
        assert_eq!(h.encap, None);
        assert_eq!(h.dir, Direction::Ingress);
    }

    #[test]
    fn rejects_short_and_malformed_records() {
        let good = record(&vxlan_hop());
        for n in 0..size_of::<EventHeader>() {
            assert!(
                matches!(decode(&good[..n]), Err(DecodeError::ShortHeader { .. })),
                "{n} bytes"
            );
        }
        for n in size_of::<EventHeader>()..good.len() {
            assert!(
                decode(&good[..n]).is_err(),
                "a {n}-byte prefix must not decode"
            );
        }
        let mut ev = vxlan_hop();
        ev.header.kind = 77;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::UnknownKind(77)));
        let mut ev = vxlan_hop();
        ev.hop.dir = 9;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::BadDirection(9)));
        let mut ev = vxlan_hop();
        ev.hop.encap.kind = 5;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::BadEncap(5)));
        let mut ev = vxlan_hop();
        ev.header.len = 40;
        assert!(matches!(
            decode(&record(&ev)),
            Err(DecodeError::BadBodyLength { .. })
        ));
        // A record followed by ring-buffer padding decodes as the record it declares.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        assert!(decode(&padded).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x1234_5678_u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
