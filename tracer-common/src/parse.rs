//! Bounded, verifier-friendly header parsing: Ethernet (one optional VLAN tag), IPv4, TCP, UDP,
//! ICMP, and the two encapsulations Calico uses: VXLAN (outer IPv4/UDP + VXLAN header + inner
//! Ethernet/IPv4) and IPIP (outer IPv4 with protocol 4 + inner IPv4).
//!
//! Parsing reads through the [`Packet`] trait so that the same code serves tc (direct packet
//! access with a `bpf_skb_load_bytes` fallback) and, later, hooks that read an skb from kernel
//! memory. Nothing here writes to the packet.

use crate::{
    filter::FilterInput, Encap, Ipv4Packet, ENCAP_IPIP, ENCAP_VXLAN, HOP_F_FRAGMENT,
    HOP_F_L4_TRUNCATED,
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const UDP_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;

/// Read access to a packet's bytes, relative to the start of the frame (or of the IP header on
/// devices without a link-layer header).
pub trait Packet {
    fn read<T: Copy>(&self, off: usize) -> Option<T>;
}

/// Why a packet yields no event.
pub enum Skip {
    /// Not IPv4, or an encapsulation of something that is not IPv4.
    NotIpv4,
    /// A header is truncated or malformed.
    Malformed,
}

/// The result of parsing one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub pkt: Ipv4Packet,
    pub encap: Encap,
    pub flags: u8,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    proto: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Reads the EtherType at `off` (after the MAC addresses), skipping one VLAN tag. Returns the
/// EtherType and the offset of the L3 header.
#[inline(always)]
fn ethertype<P: Packet>(p: &P, off: usize) -> Result<(u16, usize), Skip> {
    let proto: [u8; 2] = p.read(off + 12).ok_or(Skip::Malformed)?;
    let proto = be16(proto);
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let inner: [u8; 2] = p.read(off + 16).ok_or(Skip::Malformed)?;
        return Ok((be16(inner), off + ETH_HLEN + 4));
    }
    Ok((proto, off + ETH_HLEN))
}

/// Parses an IPv4 header at `off`. Returns the header and the offset of the L4 header.
#[inline(always)]
fn ipv4<P: Packet>(p: &P, off: usize) -> Result<(Ipv4Hdr, usize), Skip> {
    let ip: Ipv4Hdr = p.read(off).ok_or(Skip::Malformed)?;
    if ip.ver_ihl >> 4 != 4 {
        return Err(Skip::NotIpv4);
    }
    let ihl = ((ip.ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    Ok((ip, off + ihl))
}

/// Fills the identity fields of `out` from the IPv4 header and the first bytes of L4.
#[inline(always)]
fn fill_packet<P: Packet>(p: &P, ip: &Ipv4Hdr, l4: usize, out: &mut Ipv4Packet) -> u8 {
    out.saddr = ip.saddr;
    out.daddr = ip.daddr;
    out.proto = ip.proto;
    out.ttl = ip.ttl;
    out.ip_id = be16(ip.id);
    out.tot_len = be16(ip.tot_len);
    let frag = be16(ip.frag_off);
    out.frag_off = frag;
    if frag & 0x1fff != 0 {
        // A non-first fragment carries no L4 header.
        return HOP_F_FRAGMENT;
    }
    match ip.proto {
        IPPROTO_TCP => {
            // ports (4), seq (4), ack (4), data offset (1), flags (1)
            let Some(h) = p.read::<[u8; 14]>(l4) else {
                return HOP_F_L4_TRUNCATED;
            };
            out.sport = be16([h[0], h[1]]);
            out.dport = be16([h[2], h[3]]);
            out.tcp_seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            out.tcp_flags = h[13];
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let Some(h) = p.read::<[u8; 4]>(l4) else {
                return HOP_F_L4_TRUNCATED;
            };
            out.sport = be16([h[0], h[1]]);
            out.dport = be16([h[2], h[3]]);
        }
        IPPROTO_ICMP => {
            // type, code, checksum, then id/seq for echo request/reply
            let Some(h) = p.read::<[u8; 8]>(l4) else {
                return HOP_F_L4_TRUNCATED;
            };
            out.icmp_type = h[0];
            if h[0] == 0 || h[0] == 8 {
                out.icmp_id = be16([h[4], h[5]]);
                out.icmp_seq = be16([h[6], h[7]]);
            }
        }
        _ => {}
    }
    0
}

/// The UDP ports that mark VXLAN: those of every traced node's VXLAN device (0: unused).
/// A packet to another port is VXLAN too when it carries a well-formed VXLAN header (see
/// [`well_formed_vxlan`]), so a node that sends to the wrong port is still seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VxlanPorts(pub [u16; 4]);

impl VxlanPorts {
    /// Only `port`.
    pub const fn one(port: u16) -> VxlanPorts {
        VxlanPorts([port, 0, 0, 0])
    }

    #[inline(always)]
    pub fn contains(&self, port: u16) -> bool {
        port != 0
            && (self.0[0] == port || self.0[1] == port || self.0[2] == port || self.0[3] == port)
    }
}

/// A VXLAN header exactly as RFC 7348 writes it: only the I flag, reserved bits zero. Other
/// UDP payloads almost never look like this followed by an IPv4 Ethernet frame.
#[inline(always)]
fn well_formed_vxlan(vx: &[u8; 8]) -> bool {
    vx[0] == 0x08 && vx[1] == 0 && vx[2] == 0 && vx[3] == 0 && vx[7] == 0
}

/// The inner IPv4 header of a VXLAN packet whose VXLAN header is at `vx_off`.
#[inline(always)]
fn vxlan_inner<P: Packet>(p: &P, vx_off: usize) -> Result<(Ipv4Hdr, usize), Skip> {
    let (proto, inner_l3) = ethertype(p, vx_off + VXLAN_HLEN)?;
    if proto != ETH_P_IP {
        return Err(Skip::NotIpv4);
    }
    ipv4(p, inner_l3)
}

/// Parses a frame starting at offset 0; `l2` says whether it begins with an Ethernet header
/// (tunl0 and other L3 devices start at the IP header). UDP to one of `ports` with the I flag
/// is VXLAN (and an error if its inner frame is not IPv4); to any other port, only with a
/// well-formed VXLAN header and an IPv4 inner frame (else it is plain UDP).
#[inline(always)]
pub fn parse<P: Packet>(p: &P, l2: bool, ports: VxlanPorts) -> Result<Parsed, Skip> {
    let l3 = if l2 {
        let (proto, l3) = ethertype(p, 0)?;
        if proto != ETH_P_IP {
            return Err(Skip::NotIpv4);
        }
        l3
    } else {
        0
    };
    let (outer, l4) = ipv4(p, l3)?;
    let mut parsed = Parsed {
        pkt: Ipv4Packet::default(),
        encap: Encap::default(),
        flags: 0,
    };
    let first_fragment = be16(outer.frag_off) & 0x1fff == 0;

    if first_fragment && outer.proto == IPPROTO_UDP {
        let udp: [u8; 4] = p.read(l4).ok_or(Skip::Malformed)?;
        let dport = be16([udp[2], udp[3]]);
        let configured = ports.contains(dport);
        let vx: Option<[u8; 8]> = p.read(l4 + UDP_HLEN);
        if configured && vx.is_none() {
            return Err(Skip::Malformed);
        }
        if let Some(vx) = vx {
            // On a VXLAN port the I flag says the VNI is valid (RFC 7348); elsewhere only a
            // well-formed header counts.
            let strict = configured && vx[0] & 0x08 != 0;
            if strict || (!configured && well_formed_vxlan(&vx)) {
                match vxlan_inner(p, l4 + UDP_HLEN) {
                    Ok((inner, inner_l4)) => {
                        parsed.encap = outer_encap(&outer, ENCAP_VXLAN);
                        parsed.encap.sport = be16([udp[0], udp[1]]);
                        parsed.encap.dport = dport;
                        parsed.encap.vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
                        parsed.flags = fill_packet(p, &inner, inner_l4, &mut parsed.pkt);
                        return Ok(parsed);
                    }
                    Err(e) if strict => return Err(e),
                    Err(_) => {}
                }
            }
        }
    } else if first_fragment && outer.proto == IPPROTO_IPIP {
        let (inner, inner_l4) = ipv4(p, l4)?;
        parsed.encap = outer_encap(&outer, ENCAP_IPIP);
        parsed.flags = fill_packet(p, &inner, inner_l4, &mut parsed.pkt);
        return Ok(parsed);
    }
    parsed.flags = fill_packet(p, &outer, l4, &mut parsed.pkt);
    Ok(parsed)
}

#[inline(always)]
fn outer_encap(outer: &Ipv4Hdr, kind: u8) -> Encap {
    Encap {
        kind,
        _pad: [0; 3],
        vni: 0,
        saddr: outer.saddr,
        daddr: outer.daddr,
        sport: 0,
        dport: 0,
        ip_id: be16(outer.id),
        tot_len: be16(outer.tot_len),
    }
}

/// The headers [`quick_parse`] and [`quick_filter_input`] read, located at fixed offsets.
struct QuickHeaders {
    outer: Ipv4Hdr,
    /// The first four bytes of the outer L4 header (ports for UDP).
    ports: [u8; 4],
    /// The VXLAN header when the packet is VXLAN.
    vxlan: Option<[u8; 8]>,
    /// The header the packet is identified by (the inner one for VXLAN), and where its L4
    /// starts.
    ip: Ipv4Hdr,
    ip_l4: usize,
}

/// Locates the headers of the common case (see [`quick_parse`]); `None` for anything else.
/// Inlined into each caller, which then loads only the bytes it uses.
#[inline(always)]
fn quick_headers(p: &Linear, l2: bool, vx_ports: VxlanPorts) -> Option<QuickHeaders> {
    let l3 = if l2 { ETH_HLEN } else { 0 };
    if p.data + l3 + QUICK_SPAN > p.end {
        return None;
    }
    if l2 && p.read::<[u8; 2]>(12)? != [0x08, 0x00] {
        return None;
    }
    let outer = ipv4_fixed(p, l3)?;
    let l4 = l3 + 20;
    let ports: [u8; 4] = p.read(l4)?;
    // Outer UDP (8) + VXLAN (8) + inner Ethernet (14), then the inner IPv4 header.
    let inner_eth = l4 + UDP_HLEN + VXLAN_HLEN;
    let inner_l3 = inner_eth + ETH_HLEN;
    let vxlan = outer.proto == IPPROTO_UDP && {
        if vx_ports.contains(be16([ports[2], ports[3]])) {
            true
        } else {
            // Another port: VXLAN only with a well-formed header; where the linear area
            // cannot tell, the full parser decides.
            if p.data + inner_eth > p.end {
                return None;
            }
            well_formed_vxlan(&p.read(l4 + UDP_HLEN)?)
        }
    };
    if vxlan {
        if p.data + inner_l3 + QUICK_SPAN > p.end {
            return None;
        }
        let vx: [u8; 8] = p.read(l4 + UDP_HLEN)?;
        if vx[0] & 0x08 == 0 || p.read::<[u8; 2]>(inner_eth + 12)? != [0x08, 0x00] {
            return None;
        }
        let inner = ipv4_fixed(p, inner_l3)?;
        return Some(QuickHeaders {
            outer,
            ports,
            vxlan: Some(vx),
            ip: inner,
            ip_l4: inner_l3 + 20,
        });
    }
    Some(QuickHeaders {
        outer,
        ports,
        vxlan: None,
        ip: outer,
        ip_l4: l4,
    })
}

/// [`parse`] for the common case only, from fixed offsets in the linear area: no VLAN tag,
/// IPv4 headers without options, not a non-first fragment, at least [`QUICK_SPAN`] bytes from
/// the (inner) IPv4 header, and for VXLAN an inner Ethernet/IPv4 header right behind the VXLAN
/// header; not IPIP. `None` means "not that case": the caller runs the full [`parse`].
/// Whenever this returns `Some`, `parse` returns the same value (property-tested below). The tc
/// programs take this path for nearly every packet; it has no helper calls and few branches,
/// which keeps both the per-packet cost and the verifier's work small.
#[inline(always)]
pub fn quick_parse(data: usize, end: usize, l2: bool, ports: VxlanPorts) -> Option<Parsed> {
    let p = Linear { data, end };
    let h = quick_headers(&p, l2, ports)?;
    let encap = match h.vxlan {
        Some(vx) => Encap {
            sport: be16([h.ports[0], h.ports[1]]),
            dport: be16([h.ports[2], h.ports[3]]),
            vni: u32::from_be_bytes([0, vx[4], vx[5], vx[6]]),
            ..outer_encap(&h.outer, ENCAP_VXLAN)
        },
        None => Encap::default(),
    };
    let mut parsed = Parsed {
        encap,
        ..Parsed::default()
    };
    parsed.flags = fill_packet(&p, &h.ip, h.ip_l4, &mut parsed.pkt);
    Some(parsed)
}

/// What [`quick_parse`] would hand the filter (`filter_input(&quick_parse(..)?.pkt)`, property
/// tested below), without building the rest: the tc programs decide on this, and a packet the
/// filter rejects (most packets on a busy node) costs only these loads.
#[inline(always)]
pub fn quick_filter_input(
    data: usize,
    end: usize,
    l2: bool,
    ports: VxlanPorts,
) -> Option<FilterInput> {
    let p = Linear { data, end };
    let h = quick_headers(&p, l2, ports)?;
    let (sport, dport) = if crate::filter::has_ports(h.ip.proto) {
        // QUICK_SPAN guarantees the 14 bytes of L4 that fill_packet may read.
        let l4: [u8; 4] = p.read(h.ip_l4)?;
        (be16([l4[0], l4[1]]), be16([l4[2], l4[3]]))
    } else {
        (0, 0)
    };
    Some(FilterInput {
        saddr: u32::from_ne_bytes(h.ip.saddr),
        daddr: u32::from_ne_bytes(h.ip.daddr),
        proto: h.ip.proto,
        sport,
        dport,
    })
}

/// Bytes from an IPv4 header that [`quick_parse`] needs in the linear area: the header without
/// options and the 14 bytes of L4 that `parse` reads for TCP (ports, sequence, flags). With
/// less, `parse` reports a truncated L4 header, which the quick path leaves to it.
pub const QUICK_SPAN: usize = 20 + 14;

/// The linear area `[data, end)` of a packet: each read is bounds-checked (one comparison that
/// the verifier also needs), never falls back to a helper.
pub struct Linear {
    data: usize,
    end: usize,
}

impl Linear {
    /// `data`/`data_end` of a tc context (or any readable `[data, end)`).
    #[inline(always)]
    pub fn new(data: usize, end: usize) -> Linear {
        Linear { data, end }
    }
}

impl Packet for Linear {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let at = self.data + off;
        if at + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: `at .. at + size_of::<T>()` lies within the linear area, checked just above.
        Some(unsafe { core::ptr::read_unaligned(at as *const T) })
    }
}

/// An IPv4 header without options that is neither IPIP nor a non-first fragment.
#[inline(always)]
fn ipv4_fixed(p: &Linear, l3: usize) -> Option<Ipv4Hdr> {
    let ip: Ipv4Hdr = p.read(l3)?;
    if ip.ver_ihl != 0x45 || ip.frag_off[0] & 0x1f != 0 || ip.frag_off[1] != 0 {
        return None;
    }
    if ip.proto == IPPROTO_IPIP {
        return None;
    }
    Some(ip)
}

/// What the flow filter looks at in a parsed packet.
#[inline(always)]
pub fn filter_input(p: &Ipv4Packet) -> FilterInput {
    FilterInput {
        saddr: u32::from_ne_bytes(p.saddr),
        daddr: u32::from_ne_bytes(p.daddr),
        proto: p.proto,
        sport: p.sport,
        dport: p.dport,
    }
}

#[cfg(test)]
mod tests {
    //! The quick filter path must agree with the full parser wherever it answers.
    extern crate std;
    use std::{vec, vec::Vec};

    use super::*;

    /// A packet in a byte slice, read like the tc programs read the linear area.
    struct Bytes<'a>(&'a [u8]);

    impl Packet for Bytes<'_> {
        fn read<T: Copy>(&self, off: usize) -> Option<T> {
            let end = off.checked_add(core::mem::size_of::<T>())?;
            let b = self.0.get(off..end)?;
            // SAFETY: `b` holds exactly size_of::<T>() bytes; T is plain data here.
            Some(unsafe { core::ptr::read_unaligned(b.as_ptr() as *const T) })
        }
    }

    const VX: u16 = 4789;
    const PORTS: VxlanPorts = VxlanPorts::one(VX);

    fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let len = (20 + payload.len()) as u16;
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn eth(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0xee; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }

    fn ports(sport: u16, dport: u16, rest: usize) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.resize(4 + rest, 0xab);
        l4
    }

    fn vxlan(inner: &[u8]) -> Vec<u8> {
        vxlan_on(VX, inner)
    }

    fn vxlan_on(port: u16, inner: &[u8]) -> Vec<u8> {
        let mut udp = ports(40000, port, 4);
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0x10, 0, 0]);
        udp.extend_from_slice(&eth(inner));
        eth(&ipv4(17, [10, 10, 0, 1], [10, 10, 0, 2], &udp))
    }

    /// VXLAN on a port no traced node uses is still VXLAN when its header is well formed;
    /// other UDP payloads on other ports stay plain UDP.
    #[test]
    fn well_formed_vxlan_on_any_port() {
        let (a, b) = ([10, 244, 0, 1], [10, 244, 4, 1]);
        let inner = ipv4(6, a, b, &ports(43070, 5201, 16));
        let on_8472 = vxlan_on(8472, &inner);
        for r in [full(&on_8472, true), quick(&on_8472, true)] {
            let r = r.expect("parsed");
            assert_eq!(
                (r.encap.kind, r.encap.dport, r.pkt.saddr),
                (ENCAP_VXLAN, 8472, a)
            );
        }
        // Several configured ports.
        let two = VxlanPorts([4789, 8472, 0, 0]);
        let data = on_8472.as_ptr() as usize;
        assert_eq!(
            quick_parse(data, data + on_8472.len(), true, two).map(|p| p.encap.kind),
            Some(ENCAP_VXLAN)
        );
        // Not well formed on another port (a G flag, reserved bits): plain UDP.
        for (at, byte) in [
            (14 + 20 + 8, 0x88u8),
            (14 + 20 + 8 + 2, 1),
            (14 + 20 + 8 + 7, 1),
        ] {
            let mut f = on_8472.clone();
            f[at] = byte;
            for r in [full(&f, true), quick(&f, true)] {
                let r = r.expect("parsed");
                assert_eq!(
                    (r.encap.kind, r.pkt.proto, r.pkt.dport),
                    (0, 17, 8472),
                    "{at}"
                );
            }
        }
        // A well-formed header whose inner frame is not IPv4: plain UDP elsewhere, an error
        // on a VXLAN port.
        let mut arp = on_8472.clone();
        arp[14 + 20 + 16 + 12..14 + 20 + 16 + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(full(&arp, true).map(|r| r.encap.kind), Some(0));
        assert!(matches!(
            parse(&Bytes(&arp), true, VxlanPorts::one(8472)),
            Err(Skip::NotIpv4)
        ));
        // A DNS query is not mistaken for VXLAN.
        let mut dns = ports(5353, 53, 4);
        dns.extend_from_slice(&[
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'w', b'w',
        ]);
        dns.resize(60, 0);
        let dns = eth(&ipv4(17, a, b, &dns));
        assert_eq!(quick(&dns, true).map(|r| r.encap.kind), Some(0));
    }

    fn full(frame: &[u8], l2: bool) -> Option<Parsed> {
        parse(&Bytes(frame), l2, PORTS).ok()
    }

    fn quick(frame: &[u8], l2: bool) -> Option<Parsed> {
        let data = frame.as_ptr() as usize;
        quick_parse(data, data + frame.len(), l2, PORTS)
    }

    /// The common cases take the quick path and agree with the parser.
    #[test]
    fn quick_path_answers_the_common_cases() {
        let (a, b) = ([10, 244, 0, 1], [10, 244, 4, 1]);
        let tcp = ipv4(6, a, b, &ports(43070, 5201, 16));
        let udp = ipv4(17, a, b, &ports(5353, 53, 16));
        let mut echo = vec![8, 0, 0, 0, 0x04, 0xd2, 0, 1];
        echo.resize(64, 0x5a);
        let icmp = ipv4(1, a, b, &echo);
        for ip in [&tcp, &udp, &icmp] {
            for (frame, l2) in [(eth(ip), true), (vxlan(ip), true), (ip.clone(), false)] {
                let q = quick(&frame, l2).expect("quick path");
                assert_eq!(Some(q), full(&frame, l2));
                assert_eq!((q.pkt.saddr, q.pkt.daddr), (a, b));
            }
        }
        let q = filter_input(&quick(&eth(&tcp), true).unwrap().pkt);
        assert_eq!((q.proto, q.sport, q.dport), (6, 43070, 5201));
        let v = quick(&vxlan(&tcp), true).unwrap();
        assert_eq!(
            (v.encap.kind, v.encap.vni, v.encap.dport),
            (ENCAP_VXLAN, 0x1000, VX)
        );
        let i = quick(&eth(&icmp), true).unwrap().pkt;
        assert_eq!((i.dport, i.icmp_id, i.icmp_seq), (0, 1234, 1));
    }

    /// Anything unusual goes to the full parser.
    #[test]
    fn quick_path_declines_the_unusual() {
        let (a, b) = ([10, 244, 0, 1], [10, 244, 4, 1]);
        let tcp = ipv4(6, a, b, &ports(1, 2, 16));
        let mut vlan = eth(&tcp);
        vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let mut options = tcp.clone();
        options[0] = 0x46;
        options.splice(20..20, [1, 1, 1, 1]);
        let mut fragment = tcp.clone();
        fragment[7] = 0x10;
        let ipip = ipv4(4, [10, 10, 0, 1], [10, 10, 0, 2], &tcp);
        let mut not_vxlan = vxlan(&tcp);
        not_vxlan[14 + 20 + 8] = 0;
        for (frame, l2) in [
            (vlan, true),
            (eth(&options), true),
            (eth(&fragment), true),
            (eth(&ipip), true),
            (ipip, false),
            (not_vxlan, true),
            (eth(&tcp[..24]), true),
        ] {
            assert_eq!(quick(&frame, l2), None, "{frame:x?}");
        }
    }

    /// Whatever the bytes, a quick answer is the parser's answer.
    #[test]
    fn quick_path_agrees_with_the_parser_on_mutated_packets() {
        let (a, b) = ([10, 244, 0, 1], [10, 244, 4, 1]);
        let seeds = [
            eth(&ipv4(6, a, b, &ports(43070, 5201, 16))),
            eth(&ipv4(17, a, b, &ports(5353, 53, 16))),
            vxlan(&ipv4(6, a, b, &ports(43070, 5201, 16))),
            vxlan(&ipv4(1, a, b, &[0, 0, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0])),
            vxlan_on(8472, &ipv4(6, a, b, &ports(43070, 5201, 16))),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut answered = 0;
        for i in 0..200_000 {
            let mut f = seeds[i % seeds.len()].clone();
            for _ in 0..(next() % 3 + 1) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            let cut = f.len() - (next() as usize % 8).min(f.len());
            let f = &f[..cut];
            for l2 in [true, false] {
                let data = f.as_ptr() as usize;
                let input = quick_filter_input(data, data + f.len(), l2, PORTS);
                assert_eq!(
                    input,
                    quick(f, l2).map(|q| filter_input(&q.pkt)),
                    "{f:x?} l2={l2}"
                );
                if let Some(q) = quick(f, l2) {
                    answered += 1;
                    assert_eq!(Some(q), full(f, l2), "{f:x?} l2={l2}");
                }
            }
        }
        assert!(
            answered > 10_000,
            "the quick path answered only {answered} times"
        );
    }
}
