//! tc (tcx) programs: one hop event per matching packet on ingress and egress of the pod veths,
//! `vxlan.calico`, `tunl0` and the uplink.
//!
//! Four entry points differ only in direction and in whether the device has an Ethernet header
//! (`*_l3` for tunl0-like devices). All return `TC_ACT_UNSPEC` (tcx "next") on every path.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    helpers::{bpf_ktime_get_ns, bpf_skb_load_bytes},
    macros::classifier,
    programs::TcContext,
};
use tracer_common::{
    Hop, HopBytes, CTR_FILTERED, CTR_MALFORMED, CTR_NOT_IPV4, CTR_SAMPLED_OUT, DIR_EGRESS,
    DIR_INGRESS, LINK_ETHERNET, LINK_IPV4, MODE_AGGREGATE, MODE_EVENTS, SNAPLEN_MAX,
};

use tracer_common::parse::{
    filter_input, parse, quick_filter_input, quick_parse, Linear, Packet, Skip,
};

use crate::{
    aggregate,
    filter::wanted,
    maps::{
        count, emit, emit_snap, mode, netns_ino, sample_every, snaplen, verifier_bounded,
        vxlan_ports,
    },
};

/// Direct packet access when the bytes are in the linear area, `bpf_skb_load_bytes` otherwise.
struct Skb<'a>(&'a TcContext);

impl Packet for Skb<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        Linear::new(self.0.data(), self.0.data_end())
            .read(off)
            .or_else(|| self.0.load::<T>(off).ok())
    }
}

#[classifier]
pub fn hop_ingress(ctx: TcContext) -> i32 {
    hop(&ctx, DIR_INGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn hop_egress(ctx: TcContext) -> i32 {
    hop(&ctx, DIR_EGRESS, true);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn hop_ingress_l3(ctx: TcContext) -> i32 {
    hop(&ctx, DIR_INGRESS, false);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn hop_egress_l3(ctx: TcContext) -> i32 {
    hop(&ctx, DIR_EGRESS, false);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn hop(ctx: &TcContext, dir: u8, l2: bool) {
    // Nearly every packet has its headers at fixed offsets in the linear area: the filter then
    // decides on the few fields it looks at, loaded from there, before anything else is built
    // (a rejected packet costs only those loads). Anything unusual (VLAN, IP options, IPIP,
    // non-linear headers) goes through the full parser first. The filter is called from both
    // paths, so the verifier checks its loop twice per program (part of the ~89k instructions
    // it verifies for each, against ~54k with the filter after a full parse).
    let port = vxlan_ports();
    let parsed = match quick_filter_input(ctx.data(), ctx.data_end(), l2, port) {
        Some(input) => {
            if !wanted(&input) {
                return count(CTR_FILTERED);
            }
            // The same checks on the same bytes: `quick_filter_input` answers exactly when
            // `quick_parse` does (property-tested), so `None` cannot happen; it is counted
            // rather than sent through a second inlined copy of the full parser. Walking the
            // headers again is deliberate: keeping the located headers across the filter call
            // instead gave no measurable gain (BPF_PROG_TEST_RUN) and 2.8x the verifier's work
            // (246k instructions per program against 89k).
            match quick_parse(ctx.data(), ctx.data_end(), l2, port) {
                Some(p) => p,
                None => return count(CTR_MALFORMED),
            }
        }
        None => {
            let p = match parse(&Skb(ctx), l2, port) {
                Ok(p) => p,
                Err(Skip::NotIpv4) => return count(CTR_NOT_IPV4),
                Err(Skip::Malformed) => return count(CTR_MALFORMED),
            };
            if !wanted(&filter_input(&p.pkt)) {
                return count(CTR_FILTERED);
            }
            p
        }
    };
    let pkt = &parsed.pkt;
    // SAFETY: `skb` is the context pointer the kernel handed to this program.
    let skb = unsafe { &*ctx.skb.skb };
    // SAFETY: helper without arguments, valid in tc programs.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let mode = mode();
    if mode & MODE_AGGREGATE != 0 {
        aggregate::hop(pkt, skb.ifindex, dir, netns_ino(), ts_ns);
    }
    if mode & MODE_EVENTS == 0 {
        return;
    }
    let every = sample_every();
    if every > 1 && !aggregate::identity_hash(&aggregate::key_of(pkt)).is_multiple_of(every) {
        return count(CTR_SAMPLED_OUT);
    }
    let hop = Hop {
        dir,
        flags: parsed.flags,
        _pad: 0,
        skb_len: skb.len,
        mark: skb.mark,
        gso_segs: skb.gso_segs,
        encap: parsed.encap,
        pkt: parsed.pkt,
    };
    // Emitted events are not counted here (a map update per event); user space counts them.
    // `SNAPLEN` is a frozen global: without `--snaplen` the verifier knows this branch is never
    // taken and neither verifies nor keeps the bytes path.
    let snaplen = snaplen();
    if snaplen == 0 {
        return emit(ts_ns, netns_ino(), skb.ifindex, hop);
    }
    let skb_len = skb.len;
    emit_snap::<HopBytes>(
        ts_ns,
        netns_ino(),
        skb.ifindex,
        |b| {
            // SAFETY: `b` points into a reserved ring-buffer record (see `emit_snap`).
            unsafe {
                core::ptr::addr_of_mut!((*b).hop).write(hop);
                core::ptr::addr_of_mut!((*b).snap)
            }
        },
        if l2 { LINK_ETHERNET } else { LINK_IPV4 },
        |to| (load_bytes(ctx, to, snaplen.min(skb_len)), skb_len),
    );
}

/// Copies the packet's first `want` bytes (from `skb->data`: the Ethernet header on an
/// Ethernet device, the IPv4 header on an L3 one) to `to`, at most `SNAPLEN_MAX`; returns how
/// many (0 when the helper fails).
#[inline(always)]
fn load_bytes(ctx: &TcContext, to: *mut u8, want: u32) -> u32 {
    let n = want.min(SNAPLEN_MAX as u32);
    if n == 0 {
        return 0;
    }
    let n = verifier_bounded(n);
    // SAFETY: `to` has room for `SNAPLEN_MAX` bytes, and `n` is in 1..=SNAPLEN_MAX, which the
    // verifier sees; the helper checks the offsets against the skb.
    let r = unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, to.cast(), n) };
    if r < 0 {
        0
    } else {
        n
    }
}
