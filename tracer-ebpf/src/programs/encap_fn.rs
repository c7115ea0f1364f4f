//! Encapsulation functions, where the kernel allows fentry or kprobes: `vxlan_xmit`,
//! `iptunnel_xmit` and `vxlan_rcv`. Each entry emits the skb address and length, which places
//! the encapsulation step inside a node more precisely than the tc hops around it.
//!
//! Many kernels refuse these (lockdown forbids fentry; CONFIG_KPROBES may be off): user space
//! then warns once and relies on the tc hops on vxlan.calico / tunl0 and the tracepoints.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{Func, FUNC_IPTUNNEL_XMIT, FUNC_VXLAN_RCV, FUNC_VXLAN_XMIT};

use crate::{
    kmem,
    maps::{emit, skb_offset},
};

#[fentry(function = "vxlan_xmit")]
pub fn fentry_vxlan_xmit(ctx: FEntryContext) -> i32 {
    report(FUNC_VXLAN_XMIT, ctx.arg(0));
    0
}

#[fentry(function = "iptunnel_xmit")]
pub fn fentry_iptunnel_xmit(ctx: FEntryContext) -> i32 {
    // iptunnel_xmit(struct sock *sk, struct rtable *rt, struct sk_buff *skb, ...)
    report(FUNC_IPTUNNEL_XMIT, ctx.arg(2));
    0
}

#[kprobe]
pub fn kprobe_vxlan_xmit(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(0) {
        report(FUNC_VXLAN_XMIT, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_iptunnel_xmit(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(2) {
        report(FUNC_IPTUNNEL_XMIT, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_vxlan_rcv(ctx: ProbeContext) -> u32 {
    // vxlan_rcv(struct sock *sk, struct sk_buff *skb)
    if let Some(skb) = ctx.arg::<u64>(1) {
        report(FUNC_VXLAN_RCV, skb);
    }
    0
}

#[inline(always)]
fn report(func: u32, skb: u64) {
    let skb_len = if skb_offset(|l| &l.valid) != 0 {
        kmem::probe::<u32>(skb as *const u8, skb_offset(|l| &l.skb_len)).unwrap_or(0)
    } else {
        0
    };
    // SAFETY: a helper without arguments, valid in tracing programs.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    emit(ts_ns, 0, 0, Func { func, skb_len, skb });
}
