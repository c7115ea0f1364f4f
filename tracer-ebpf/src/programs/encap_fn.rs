//! Encapsulation and decapsulation, where the kernel allows fentry or kprobes: each packet of a
//! traced flow is reported at the moment it gets its outer header and at the moment it arrives
//! in one, with its inner identity and that outer header, so the trace binds the two inside the
//! node and shows the kernel function as a hop.
//!
//! - `iptunnel_xmit(sk, rt, skb, src, dst, proto, ...)` (vmlinux): every IPv4 tunnel hands the
//!   packet to IP here. The outer addresses and protocol are arguments; the UDP and VXLAN
//!   headers (VXLAN) are at `skb->data`; the inner IPv4 header is where the tunnel marked it
//!   (`skb->inner_network_header`). fentry where the kernel allows it, else a kprobe.
//! - `vxlan_rcv(sk, skb)` and `ipip_rcv(skb)` (modules: kprobes only): the whole encapsulated
//!   packet is still there from `skb->network_header`, parsed like a dropped one.
//!
//! Many kernels refuse these (lockdown forbids fentry; CONFIG_KPROBES may be off): user space
//! then says so once and relies on the tc hops on vxlan.calico / tunl0 and the uplink.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{
    parse::{filter_input, parse, Packet, Parsed, Skip},
    Encap, Func, CTR_DROP_OTHER_NETNS, CTR_FILTERED, CTR_MALFORMED, CTR_NOT_IPV4, DIR_EGRESS,
    DIR_INGRESS, ENCAP_IPIP, ENCAP_VXLAN, FUNC_IPIP_RCV, FUNC_IPTUNNEL_XMIT, FUNC_VXLAN_RCV,
};

use crate::{
    filter::wanted,
    kmem,
    maps::{count, emit, skb_offset, vxlan_ports, TRACED_NETNS},
};

const IPPROTO_IPIP: u8 = 4;
const IPPROTO_UDP: u8 = 17;

/// Packet bytes read from kernel memory.
struct KernelBytes(*const u8);

impl Packet for KernelBytes {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        kmem::probe(self.0, off as u32)
    }
}

#[fentry(function = "iptunnel_xmit")]
pub fn fentry_iptunnel_xmit(ctx: FEntryContext) -> i32 {
    let skb: u64 = ctx.arg(2);
    let (src, dst, proto): (u32, u32, u8) = (ctx.arg(3), ctx.arg(4), ctx.arg(5));
    let _ = xmit(skb as *const u8, src, dst, proto);
    0
}

#[kprobe]
pub fn kprobe_iptunnel_xmit(ctx: ProbeContext) -> u32 {
    if let (Some(skb), Some(src), Some(dst), Some(proto)) = (
        ctx.arg::<u64>(2),
        ctx.arg::<u32>(3),
        ctx.arg::<u32>(4),
        ctx.arg::<u8>(5),
    ) {
        let _ = xmit(skb as *const u8, src, dst, proto);
    }
    0
}

#[kprobe]
pub fn kprobe_vxlan_rcv(ctx: ProbeContext) -> u32 {
    // vxlan_rcv(struct sock *sk, struct sk_buff *skb)
    if let Some(skb) = ctx.arg::<u64>(1) {
        let _ = rcv(FUNC_VXLAN_RCV, skb as *const u8);
    }
    0
}

#[kprobe]
pub fn kprobe_ipip_rcv(ctx: ProbeContext) -> u32 {
    // ipip_rcv(struct sk_buff *skb)
    if let Some(skb) = ctx.arg::<u64>(0) {
        let _ = rcv(FUNC_IPIP_RCV, skb as *const u8);
    }
    0
}

/// The namespace and index of `skb->dev`, when it is in a traced namespace.
#[inline(always)]
fn traced_dev(skb: *const u8) -> Option<(u32, u32)> {
    let dev: u64 = kmem::probe(skb, skb_offset(|l| &l.skb_dev))?;
    if dev == 0 {
        return None;
    }
    let dev = dev as *const u8;
    let ifindex: u32 = kmem::probe(dev, skb_offset(|l| &l.dev_ifindex))?;
    let net: u64 = kmem::probe(dev, skb_offset(|l| &l.dev_nd_net))?;
    let netns: u32 = kmem::probe(net as *const u8, skb_offset(|l| &l.net_ns_inum))?;
    // SAFETY: a map lookup with a key on the stack.
    if unsafe { TRACED_NETNS.get(netns) }.is_none() {
        count(CTR_DROP_OTHER_NETNS);
        return None;
    }
    Some((netns, ifindex))
}

/// Reports a parsed packet unless the filter rejects it.
#[inline(always)]
fn report(func: u32, dir: u8, skb: *const u8, at: (u32, u32), p: Parsed, encap: Encap) {
    if !wanted(&filter_input(&p.pkt)) {
        count(CTR_FILTERED);
        return;
    }
    let skb_len = kmem::probe::<u32>(skb, skb_offset(|l| &l.skb_len)).unwrap_or(0);
    // SAFETY: a helper without arguments, valid in tracing programs.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(
        ts_ns,
        at.0,
        at.1,
        Func {
            func,
            skb_len,
            skb: skb as u64,
            dir,
            flags: p.flags,
            _pad: [0; 6],
            encap,
            pkt: p.pkt,
        },
    );
}

fn count_skip(s: Skip) {
    count(match s {
        Skip::NotIpv4 => CTR_NOT_IPV4,
        Skip::Malformed => CTR_MALFORMED,
    });
}

/// Encapsulation: the inner packet where the tunnel marked it, the outer header from the
/// arguments (and, for VXLAN, the UDP and VXLAN headers the tunnel already pushed).
#[inline(always)]
fn xmit(skb: *const u8, src: u32, dst: u32, proto: u8) -> Option<()> {
    if skb_offset(|l| &l.valid) == 0 || skb.is_null() {
        return None;
    }
    let at = traced_dev(skb)?;
    let head: u64 = kmem::probe(skb, skb_offset(|l| &l.skb_head))?;
    let inner: u16 = kmem::probe(skb, skb_offset(|l| &l.skb_inner_network_header))?;
    let data: u64 = kmem::probe(skb, skb_offset(|l| &l.skb_data))?;
    let mut encap = Encap {
        saddr: src.to_ne_bytes(),
        daddr: dst.to_ne_bytes(),
        ..Encap::default()
    };
    match proto {
        IPPROTO_UDP => {
            // UDP then VXLAN at `data`: ports, and the VNI when the I flag is set.
            let udp: [u8; 4] = kmem::probe(data as *const u8, 0)?;
            let vx: [u8; 8] = kmem::probe(data as *const u8, 8)?;
            if vx[0] & 0x08 == 0 {
                return None;
            }
            encap.kind = ENCAP_VXLAN;
            encap.sport = u16::from_be_bytes([udp[0], udp[1]]);
            encap.dport = u16::from_be_bytes([udp[2], udp[3]]);
            encap.vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
        }
        IPPROTO_IPIP => encap.kind = ENCAP_IPIP,
        _ => return None,
    }
    let bytes = KernelBytes((head as *const u8).wrapping_add(inner as usize));
    match parse(&bytes, false, vxlan_ports()) {
        Ok(p) => report(FUNC_IPTUNNEL_XMIT, DIR_EGRESS, skb, at, p, encap),
        Err(s) => count_skip(s),
    }
    Some(())
}

/// Decapsulation: the packet as it arrived, outer header first, parsed whole.
#[inline(always)]
fn rcv(func: u32, skb: *const u8) -> Option<()> {
    if skb_offset(|l| &l.valid) == 0 || skb.is_null() {
        return None;
    }
    let at = traced_dev(skb)?;
    let head: u64 = kmem::probe(skb, skb_offset(|l| &l.skb_head))?;
    let nh: u16 = kmem::probe(skb, skb_offset(|l| &l.skb_network_header))?;
    let bytes = KernelBytes((head as *const u8).wrapping_add(nh as usize));
    match parse(&bytes, false, vxlan_ports()) {
        Ok(p) => {
            let encap = p.encap;
            report(func, DIR_INGRESS, skb, at, p, encap)
        }
        Err(s) => count_skip(s),
    }
    Some(())
}
