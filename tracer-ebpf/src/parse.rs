//! Bounded, verifier-friendly header parsing: Ethernet (one optional VLAN tag), IPv4, TCP, UDP,
//! ICMP, and the two encapsulations Calico uses: VXLAN (outer IPv4/UDP + VXLAN header + inner
//! Ethernet/IPv4) and IPIP (outer IPv4 with protocol 4 + inner IPv4).
//!
//! Parsing reads through the [`Packet`] trait so that the same code serves tc (direct packet
//! access with a `bpf_skb_load_bytes` fallback) and, later, hooks that read an skb from kernel
//! memory. Nothing here writes to the packet.

use tracer_common::{
    Encap, Ipv4Packet, ENCAP_IPIP, ENCAP_VXLAN, HOP_F_FRAGMENT, HOP_F_L4_TRUNCATED,
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

/// Parses a frame starting at offset 0; `l2` says whether it begins with an Ethernet header
/// (tunl0 and other L3 devices start at the IP header). `vxlan_port` is the UDP port that
/// marks VXLAN.
#[inline(always)]
pub fn parse<P: Packet>(p: &P, l2: bool, vxlan_port: u16) -> Result<Parsed, Skip> {
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
        if dport == vxlan_port {
            let vx: [u8; 8] = p.read(l4 + UDP_HLEN).ok_or(Skip::Malformed)?;
            // The I flag says the VNI is valid (RFC 7348); anything else is not VXLAN to us.
            if vx[0] & 0x08 != 0 {
                let inner_eth = l4 + UDP_HLEN + VXLAN_HLEN;
                let (proto, inner_l3) = ethertype(p, inner_eth)?;
                if proto != ETH_P_IP {
                    return Err(Skip::NotIpv4);
                }
                let (inner, inner_l4) = ipv4(p, inner_l3)?;
                parsed.encap = outer_encap(&outer, ENCAP_VXLAN);
                parsed.encap.sport = be16([udp[0], udp[1]]);
                parsed.encap.dport = dport;
                parsed.encap.vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
                parsed.flags = fill_packet(p, &inner, inner_l4, &mut parsed.pkt);
                return Ok(parsed);
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
