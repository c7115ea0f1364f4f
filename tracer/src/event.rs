//! Typed, owned events decoded from ring-buffer records.
//!
//! The decode stage of the pipeline (see `pipeline`). Every record is an `Event<T>` of
//! `tracer_common`: [`decode`] reads the header once, checks its kind and length, then the
//! body of that kind. Decoding never panics: a short record, a record whose `len` disagrees
//! with its kind, or an unknown kind is a [`DecodeError`], counted by the caller and reported,
//! never silently dropped. Only what a later stage reads is decoded: the kernel's fixed-size
//! records also carry the CPU, `skb->mark`, the TTL, the IP total length and parser flags,
//! which no stage uses yet.

use std::{net::Ipv4Addr, sync::Arc};

use thiserror::Error;
use tracer_common::{
    Drop, DropBytes, Event as WireEvent, EventBody, EventHeader, Fib, Func, Hop, HopBytes, Nat,
    Snap, DIR_EGRESS, DIR_INGRESS, ENCAP_IPIP, ENCAP_NONE, ENCAP_VXLAN, EVENT_DROP,
    EVENT_DROP_BYTES, EVENT_FIB, EVENT_FUNC, EVENT_HOP, EVENT_HOP_BYTES, EVENT_NAT,
    FUNC_IFINDEX_BASE, FUNC_IPIP_RCV, FUNC_IPTUNNEL_XMIT, FUNC_VXLAN_RCV, LINK_ETHERNET, LINK_IPV4,
    SNAPLEN_MAX,
};

use crate::model::{Captured, Direction, Encap, EncapKind, LinkType, PacketId};

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
    #[error("record with unknown encapsulation {0}")]
    BadEncap(u8),
    #[error("function record with unknown function {0}")]
    BadFunc(u32),
    #[error("record kind {kind} of {got} bytes cannot hold its {cap_len} packet bytes")]
    BadSnap {
        kind: u16,
        got: usize,
        cap_len: usize,
    },
    #[error("packet bytes with unknown link type {0}")]
    BadLink(u8),
}

/// One packet seen by one tc program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopRecord {
    /// CLOCK_MONOTONIC of the producing node, ns.
    pub ts_ns: u64,
    /// Network namespace inode of the hop (identifies the node).
    pub netns: u32,
    pub ifindex: u32,
    pub dir: Direction,
    /// `skb->len`.
    pub len: u32,
    pub packet: PacketId,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub encap: Option<Encap>,
    /// The packet's first bytes (`record --snaplen`).
    pub snap: Option<Arc<Captured>>,
}

/// A packet that left a device translated by conntrack (`nat_dev_queue`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatRecord {
    pub ts_ns: u64,
    pub netns: u32,
    pub ifindex: u32,
    /// The packet as it left (its addresses now).
    pub packet: PacketId,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// How it entered the node: source, destination, and their ports (for ICMP the echo id
    /// as source port).
    pub entered: NatTuple,
    /// The connection's reply direction.
    pub reply: bool,
}

/// Addresses and ports of a packet as conntrack tracks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NatTuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl NatTuple {
    /// A packet's tuple (ICMP: the echo id as source port).
    pub fn of(p: &PacketId) -> NatTuple {
        let (sport, dport) = if p.proto == 1 {
            (p.icmp_id, 0)
        } else {
            (p.sport, p.dport)
        };
        NatTuple {
            src: p.src,
            dst: p.dst,
            proto: p.proto,
            sport,
            dport,
        }
    }

    /// `p` with this tuple's addresses and ports.
    pub fn apply(&self, p: &PacketId) -> PacketId {
        let mut q = *p;
        q.src = self.src;
        q.dst = self.dst;
        if p.proto == 1 {
            q.icmp_id = self.sport;
        } else {
            q.sport = self.sport;
            q.dport = self.dport;
        }
        q
    }
}

/// An skb freed with a drop reason (kfree_skb).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropRecord {
    pub ts_ns: u64,
    /// Namespace and device of `skb->dev` (0 when the skb had no device).
    pub netns: u32,
    pub ifindex: u32,
    /// Kernel text address that freed the skb.
    pub location: u64,
    /// The skb's address: a hint within one node.
    pub skb: u64,
    /// Raw `enum skb_drop_reason` value of the running kernel.
    pub reason: u32,
    pub len: u32,
    pub packet: PacketId,
    pub icmp_type: u8,
    pub encap: Option<Encap>,
    /// The packet's first bytes from its network header (`record --snaplen`).
    pub snap: Option<Arc<Captured>>,
}

/// One IPv4 FIB lookup (fib:fib_table_lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibRecord {
    pub ts_ns: u64,
    /// Namespace of the lookup's output device, when the hook could read it (tp_btf and a
    /// route found); 0 when unknown (the classic tracepoint has no namespace).
    pub netns: u32,
    pub table: u32,
    /// 0 when a route was found, else a negative errno.
    pub err: i32,
    pub oif: u32,
    pub iif: u32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub gw: Option<Ipv4Addr>,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// Output device name.
    pub dev: [u8; 16],
}

impl FibRecord {
    pub fn dev_name(&self) -> &str {
        std::str::from_utf8(self.dev_bytes()).unwrap_or("?")
    }

    /// The output device's name up to its NUL (the bytes after it may be stale).
    pub fn dev_bytes(&self) -> &[u8] {
        let end = self
            .dev
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.dev.len());
        &self.dev[..end]
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Hop(HopRecord),
    Drop(DropRecord),
    Fib(FibRecord),
    Nat(NatRecord),
    /// A packet seen by an encapsulation function (fentry/kprobe), as a hop on the function's
    /// pseudo-interface (`FUNC_IFINDEX_BASE + func`).
    Func(HopRecord),
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
        EVENT_HOP => decode_hop(&header, body(record)?).map(Event::Hop),
        EVENT_DROP => decode_drop(&header, body(record)?).map(Event::Drop),
        EVENT_FIB => Ok(Event::Fib(decode_fib(&header, body(record)?))),
        EVENT_FUNC => decode_func(&header, body(record)?).map(Event::Func),
        EVENT_NAT => Ok(Event::Nat(decode_nat(&header, body(record)?))),
        EVENT_HOP_BYTES => {
            let (b, snap) = snap_body::<HopBytes>(record, |b| &b.snap)?;
            let mut hop = decode_hop(&header, b.hop)?;
            hop.snap = Some(snap);
            Ok(Event::Hop(hop))
        }
        EVENT_DROP_BYTES => {
            let (b, snap) = snap_body::<DropBytes>(record, |b| &b.snap)?;
            let mut drop = decode_drop(&header, b.drop)?;
            drop.snap = Some(snap);
            Ok(Event::Drop(drop))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The part of `bytes` its header declares: a record with packet bytes is cut there (the
/// ring buffer's slot is larger), which is what a recording keeps. Anything shorter than a
/// header, or declaring more than there is, is returned whole (decoding then says why).
pub fn declared(bytes: &[u8]) -> &[u8] {
    match read_pod::<EventHeader>(bytes) {
        Some(h)
            if (h.len as usize) <= bytes.len() && h.len as usize >= size_of::<EventHeader>() =>
        {
            &bytes[..h.len as usize]
        }
        _ => bytes,
    }
}

/// The body of a record with packet bytes: fixed up to the snap's data, then `cap_len` bytes
/// (the header's length counts them rounded up to 8; the slot's tail is not read).
fn snap_body<T: EventBody>(
    record: &[u8],
    snap: impl Fn(&T) -> &Snap,
) -> Result<(T, Arc<Captured>), DecodeError> {
    let full = size_of::<WireEvent<T>>();
    let fixed = full - SNAPLEN_MAX;
    if record.len() < fixed || record.len() > full {
        return Err(DecodeError::BadBodyLength {
            kind: T::KIND,
            got: record.len(),
            need: fixed,
        });
    }
    // Zero-extended to the full record, so that the wire type can be read whole.
    let mut buf = vec![0u8; full];
    buf[..record.len()].copy_from_slice(record);
    let ev = read_pod::<WireEvent<T>>(&buf).ok_or(DecodeError::BadBodyLength {
        kind: T::KIND,
        got: record.len(),
        need: fixed,
    })?;
    let s = snap(&ev.body);
    let cap_len = s.cap_len as usize;
    if cap_len > SNAPLEN_MAX || fixed + cap_len > record.len() {
        return Err(DecodeError::BadSnap {
            kind: T::KIND,
            got: record.len(),
            cap_len,
        });
    }
    let link = match s.link {
        LINK_ETHERNET => LinkType::Ethernet,
        LINK_IPV4 => LinkType::Ipv4,
        other => return Err(DecodeError::BadLink(other)),
    };
    let captured = Captured {
        link,
        orig_len: s.orig_len,
        data: s.data[..cap_len].into(),
    };
    Ok((ev.body, Arc::new(captured)))
}

/// The body of a record whose header said kind `T::KIND`: the record must be exactly an
/// `Event<T>`.
fn body<T: EventBody>(record: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<WireEvent<T>>();
    let bad = || DecodeError::BadBodyLength {
        kind: T::KIND,
        got: record.len(),
        need,
    };
    if record.len() != need {
        return Err(bad());
    }
    read_pod::<WireEvent<T>>(record)
        .map(|ev| ev.body)
        .ok_or_else(bad)
}

fn encap(e: &tracer_common::Encap) -> Result<Option<Encap>, DecodeError> {
    Ok(match e.kind {
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
    })
}

fn packet_id(p: &tracer_common::Ipv4Packet) -> PacketId {
    PacketId {
        src: Ipv4Addr::from(p.saddr),
        dst: Ipv4Addr::from(p.daddr),
        proto: p.proto,
        sport: p.sport,
        dport: p.dport,
        ip_id: p.ip_id,
        tcp_seq: p.tcp_seq,
        icmp_id: p.icmp_id,
        icmp_seq: p.icmp_seq,
    }
}

fn decode_hop(h: &EventHeader, hop: Hop) -> Result<HopRecord, DecodeError> {
    let dir = match hop.dir {
        DIR_INGRESS => Direction::Ingress,
        DIR_EGRESS => Direction::Egress,
        other => return Err(DecodeError::BadDirection(other)),
    };
    Ok(HopRecord {
        ts_ns: h.ts_ns,
        netns: h.netns,
        ifindex: h.ifindex,
        dir,
        len: hop.skb_len,
        packet: packet_id(&hop.pkt),
        tcp_flags: hop.pkt.tcp_flags,
        icmp_type: hop.pkt.icmp_type,
        encap: encap(&hop.encap)?,
        snap: None,
    })
}

fn decode_drop(h: &EventHeader, d: Drop) -> Result<DropRecord, DecodeError> {
    Ok(DropRecord {
        ts_ns: h.ts_ns,
        netns: h.netns,
        ifindex: h.ifindex,
        location: d.location,
        skb: d.skb,
        reason: d.reason,
        len: d.skb_len,
        packet: packet_id(&d.pkt),
        icmp_type: d.pkt.icmp_type,
        encap: encap(&d.encap)?,
        snap: None,
    })
}

fn decode_fib(h: &EventHeader, f: Fib) -> FibRecord {
    FibRecord {
        ts_ns: h.ts_ns,
        netns: h.netns,
        table: f.table,
        err: f.err,
        oif: f.oif,
        iif: f.iif,
        src: Ipv4Addr::from(f.src),
        dst: Ipv4Addr::from(f.dst),
        gw: (f.gw != [0; 4]).then(|| Ipv4Addr::from(f.gw)),
        proto: f.proto,
        sport: f.sport,
        dport: f.dport,
        dev: f.dev,
    }
}

fn decode_nat(h: &EventHeader, n: Nat) -> NatRecord {
    NatRecord {
        ts_ns: h.ts_ns,
        netns: h.netns,
        ifindex: h.ifindex,
        packet: packet_id(&n.pkt),
        tcp_flags: n.pkt.tcp_flags,
        icmp_type: n.pkt.icmp_type,
        entered: NatTuple {
            src: Ipv4Addr::from(n.entered_saddr),
            dst: Ipv4Addr::from(n.entered_daddr),
            proto: n.pkt.proto,
            sport: n.entered_sport,
            dport: n.entered_dport,
        },
        reply: n.reply != 0,
    }
}

fn decode_func(h: &EventHeader, f: Func) -> Result<HopRecord, DecodeError> {
    if !matches!(f.func, FUNC_IPTUNNEL_XMIT | FUNC_VXLAN_RCV | FUNC_IPIP_RCV) {
        return Err(DecodeError::BadFunc(f.func));
    }
    let dir = match f.dir {
        DIR_INGRESS => Direction::Ingress,
        DIR_EGRESS => Direction::Egress,
        other => return Err(DecodeError::BadDirection(other)),
    };
    Ok(HopRecord {
        ts_ns: h.ts_ns,
        netns: h.netns,
        ifindex: FUNC_IFINDEX_BASE + f.func,
        dir,
        len: f.skb_len,
        packet: packet_id(&f.pkt),
        tcp_flags: f.pkt.tcp_flags,
        icmp_type: f.pkt.icmp_type,
        encap: encap(&f.encap)?,
        snap: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{Encap as WireEncap, HopEvent, Ipv4Packet};

    fn record<T: Copy>(ev: &T) -> Vec<u8> {
        // SAFETY: the wire events are plain #[repr(C)] structs of integers without implicit
        // padding, so all their bytes are initialised.
        let bytes =
            unsafe { std::slice::from_raw_parts((ev as *const T).cast::<u8>(), size_of::<T>()) };
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
            body: Hop {
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
        let Ok(Event::Hop(h)) = decode(&record(&vxlan_hop())) else {
            panic!("decodes")
        };
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
    fn an_encapsulation_probe_is_a_hop_on_its_function() {
        let hop = vxlan_hop();
        let mut ev = tracer_common::FuncEvent {
            header: EventHeader {
                kind: EVENT_FUNC,
                len: size_of::<tracer_common::FuncEvent>() as u16,
                ..hop.header
            },
            body: Func {
                func: FUNC_VXLAN_RCV,
                skb_len: 134,
                skb: 0xffff_8880_0000_1000,
                dir: DIR_INGRESS,
                flags: 0,
                _pad: [0; 6],
                encap: hop.body.encap,
                pkt: hop.body.pkt,
            },
        };
        let Ok(Event::Func(h)) = decode(&record(&ev)) else {
            panic!("decodes")
        };
        assert_eq!(h.ifindex, FUNC_IFINDEX_BASE + FUNC_VXLAN_RCV);
        assert_eq!(
            (h.dir, h.len, h.netns),
            (Direction::Ingress, 134, 4026531993)
        );
        assert_eq!(h.packet.src, Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(
            h.encap.map(|e| (e.kind, e.vni)),
            Some((EncapKind::Vxlan, 4096))
        );
        ev.body.func = 9;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::BadFunc(9)));
        ev.body.func = FUNC_IPTUNNEL_XMIT;
        ev.body.dir = 7;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::BadDirection(7)));
    }

    #[test]
    fn decodes_a_plain_hop() {
        let mut ev = vxlan_hop();
        ev.body.encap = WireEncap::default();
        ev.body.dir = DIR_INGRESS;
        let Ok(Event::Hop(h)) = decode(&record(&ev)) else {
            panic!("decodes")
        };
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
        ev.body.dir = 9;
        assert_eq!(decode(&record(&ev)), Err(DecodeError::BadDirection(9)));
        let mut ev = vxlan_hop();
        ev.body.encap.kind = 5;
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
