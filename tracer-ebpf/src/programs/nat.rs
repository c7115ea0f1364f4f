//! NAT: a packet that leaves a device with other addresses or ports than it entered the node
//! with (kube-proxy's DNAT to a Service endpoint, a NodePort's SNAT, Calico's natOutgoing,
//! and the replies un-NATed on their way back).
//!
//! `tp_btf/net_dev_queue` fires for every packet queued to a device, after netfilter and after
//! the tc egress hook. Conntrack's entry hangs on the skb (`_nfct`): when the connection has
//! NAT set up (`IPS_SRC_NAT | IPS_DST_NAT` in its status), the tuple of the packet's direction
//! (the original tuple for the connection's first direction, the reply tuple for answers) is
//! how the packet entered this node; when it differs from the packet's headers now, the hook
//! reports both. User space then follows the packet under one identity (see the pipeline's NAT
//! table). Offsets come from the running kernel's BTF (`CT_OFFSETS`); a kernel without
//! conntrack gets no `valid` layout and the hook does nothing.
//!
//! The hook fires for every transmitted packet of the machine: the conntrack test (two loads)
//! comes first, then the namespace test; only NATed packets are parsed. The outer packet of a
//! tunnel is skipped (its inner one was reported on the tunnel device). The flow filter passes
//! the packet when either view matches it.
//!
//! The drop hook asks the same question ([`translated`], [`report`]) of a packet conntrack
//! translated that dies before it is queued to a device (Calico's natOutgoing masquerades a
//! packet in POSTROUTING, then neighbour resolution fails): its NAT record comes first.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use tracer_common::{
    filter::{FilterInput, FollowKey},
    parse::{filter_input, parse},
    Ipv4Packet, Nat, CTR_FILTERED, IPS_NAT_MASK, IP_CT_IS_REPLY,
};

use crate::{
    filter::wanted,
    kmem::{probe, KernelBytes, Probed, SkbFields, Typed},
    maps::{
        count, ct_offset, emit, skb_offset, vxlan_ports, NAT_FOLLOW, NAT_FOLLOWING, TRACED_NETNS,
    },
};

const IPPROTO_ICMP: u8 = 1;

#[btf_tracepoint(function = "net_dev_queue")]
pub fn nat_dev_queue(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    if !skb.is_null() && ct_offset(|l| &l.valid) != 0 && skb_offset(|l| &l.valid) != 0 {
        let _ = on_queue(skb);
    }
    0
}

#[inline(always)]
fn on_queue(skb: *const u8) -> Option<()> {
    let nfct: u64 = Typed::get(skb, skb_offset(|l| &l.skb_nfct))?;
    let ct = nfct & !7;
    if ct == 0 {
        return Some(());
    }
    let status: u64 = probe(ct as *const u8, ct_offset(|l| &l.ct_status))?;
    if status & IPS_NAT_MASK == 0 {
        return Some(());
    }
    let dev: u64 = Typed::get(skb, skb_offset(|l| &l.skb_dev))?;
    if dev == 0 {
        return Some(());
    }
    let dev = dev as *const u8;
    let ifindex: u32 = Typed::get(dev, skb_offset(|l| &l.dev_ifindex))?;
    let net: u64 = Typed::get(dev, skb_offset(|l| &l.dev_nd_net))?;
    if net == 0 {
        return Some(());
    }
    let netns: u32 = Typed::get(net as *const u8, skb_offset(|l| &l.net_ns_inum))?;
    // SAFETY: a map lookup with a key on the stack.
    if unsafe { TRACED_NETNS.get(netns) }.is_none() {
        return Some(());
    }
    let head: u64 = Probed::get(skb, skb_offset(|l| &l.skb_head))?;
    let nh: u16 = Typed::get(skb, skb_offset(|l| &l.skb_network_header))?;
    if head == 0 || nh == u16::MAX {
        return Some(());
    }
    let bytes = KernelBytes((head as *const u8).wrapping_add(nh as usize));
    let parsed = parse(&bytes, false, vxlan_ports()).ok()?;
    if parsed.encap.kind != 0 {
        return Some(());
    }
    let pkt = parsed.pkt;
    let Some(nat) = translated(nfct, &pkt)? else {
        return Some(());
    };
    if !report(netns, ifindex, &nat) {
        count(CTR_FILTERED);
    }
    Some(())
}

/// The skb's conntrack entry (`nfct`, `skb->_nfct`) says the packet `pkt` (inner, parsed at
/// its network header) entered the node with other addresses or ports: the record to report.
/// `Some(None)` when it did not (no entry, no NAT, the same tuple); `None` when kernel memory
/// could not be read.
#[inline(always)]
pub fn translated(nfct: u64, pkt: &Ipv4Packet) -> Option<Option<Nat>> {
    let ct = nfct & !7;
    if ct == 0 || ct_offset(|l| &l.valid) == 0 {
        return Some(None);
    }
    let ct = ct as *const u8;
    let status: u64 = probe(ct, ct_offset(|l| &l.ct_status))?;
    if status & IPS_NAT_MASK == 0 {
        return Some(None);
    }
    // How the packet entered the node: the tuple of its direction.
    let reply = nfct & 7 >= IP_CT_IS_REPLY;
    let hash = ct_offset(|l| &l.ct_tuplehash)
        + if reply {
            ct_offset(|l| &l.tuplehash_size)
        } else {
            0
        };
    let e_src: [u8; 4] = probe(ct, hash + ct_offset(|l| &l.src_ip))?;
    let e_sport: u16 = u16::from_be(probe(ct, hash + ct_offset(|l| &l.src_port))?);
    let e_dst: [u8; 4] = probe(ct, hash + ct_offset(|l| &l.dst_ip))?;
    let e_dport: u16 = u16::from_be(probe(ct, hash + ct_offset(|l| &l.dst_port))?);
    let proto: u8 = probe(ct, hash + ct_offset(|l| &l.protonum))?;
    if pkt.proto != proto {
        return Some(None);
    }
    // ICMP's "ports" in conntrack: the echo identifier, and nothing.
    let (sport, dport, e_dport) = if proto == IPPROTO_ICMP {
        (pkt.icmp_id, 0, 0)
    } else {
        (pkt.sport, pkt.dport, e_dport)
    };
    if pkt.saddr == e_src && pkt.daddr == e_dst && sport == e_sport && dport == e_dport {
        return Some(None);
    }
    Some(Some(Nat {
        pkt: *pkt,
        entered_saddr: e_src,
        entered_daddr: e_dst,
        entered_sport: e_sport,
        entered_dport: e_dport,
        reply: u8::from(reply),
        _pad: [0; 3],
    }))
}

/// Reports `nat` (seen on `ifindex` of `netns`) when the flow filter wants the packet as it
/// is or as it entered, and lets the translated flow and its replies pass every program's
/// filter from now on; false when the filter wants neither.
#[inline(always)]
pub fn report(netns: u32, ifindex: u32, nat: &Nat) -> bool {
    let proto = nat.pkt.proto;
    let entered = FilterInput {
        saddr: u32::from_ne_bytes(nat.entered_saddr),
        daddr: u32::from_ne_bytes(nat.entered_daddr),
        proto,
        sport: if proto == IPPROTO_ICMP {
            0
        } else {
            nat.entered_sport
        },
        dport: nat.entered_dport,
    };
    let now = filter_input(&nat.pkt);
    if !wanted(&now) && !wanted(&entered) {
        return false;
    }
    let key = FollowKey::of(&now);
    let _ = NAT_FOLLOW.insert(key, 1, 0);
    let _ = NAT_FOLLOW.insert(key.reverse(), 1, 0);
    if let Some(following) = NAT_FOLLOWING.get_ptr_mut(0) {
        // SAFETY: the one slot of an array map; written once, when still 0 (no store, and no
        // cache line taken from the other CPUs, for every later translated packet).
        unsafe {
            if *following == 0 {
                *following = 1;
            }
        }
    }
    // SAFETY: a helper without arguments, valid in tracing programs.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(ts_ns, netns, ifindex, *nat);
    true
}
