//! Encapsulation functions, where the kernel allows fentry or kprobes: `vxlan_xmit`,
//! `iptunnel_xmit` and `vxlan_rcv`. Each entry emits the skb address and length, which places
//! the encapsulation step inside a node more precisely than the tc hops around it.
//!
//! Many kernels refuse these (lockdown forbids fentry; CONFIG_KPROBES may be off): user space
//! then warns once and relies on the tc hops on vxlan.calico / tunl0 and the tracepoints.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::{
    EventHeader, Func, FuncEvent, CTR_RINGBUF_FULL, EVENT_FUNC, FUNC_IPTUNNEL_XMIT, FUNC_VXLAN_RCV,
    FUNC_VXLAN_XMIT,
};

use crate::{
    kmem,
    maps::{count, skb_offset, EVENTS, RB_NO_WAKEUP},
};

#[fentry(function = "vxlan_xmit")]
pub fn fentry_vxlan_xmit(ctx: FEntryContext) -> i32 {
    emit(FUNC_VXLAN_XMIT, ctx.arg(0));
    0
}

#[fentry(function = "iptunnel_xmit")]
pub fn fentry_iptunnel_xmit(ctx: FEntryContext) -> i32 {
    // iptunnel_xmit(struct sock *sk, struct rtable *rt, struct sk_buff *skb, ...)
    emit(FUNC_IPTUNNEL_XMIT, ctx.arg(2));
    0
}

#[kprobe]
pub fn kprobe_vxlan_xmit(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(0) {
        emit(FUNC_VXLAN_XMIT, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_iptunnel_xmit(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(2) {
        emit(FUNC_IPTUNNEL_XMIT, skb);
    }
    0
}

#[kprobe]
pub fn kprobe_vxlan_rcv(ctx: ProbeContext) -> u32 {
    // vxlan_rcv(struct sock *sk, struct sk_buff *skb)
    if let Some(skb) = ctx.arg::<u64>(1) {
        emit(FUNC_VXLAN_RCV, skb);
    }
    0
}

#[inline(always)]
fn emit(func: u32, skb: u64) {
    let skb_len = if skb_offset(|l| &l.valid) != 0 {
        kmem::probe::<u32>(skb as *const u8, skb_offset(|l| &l.skb_len)).unwrap_or(0)
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<FuncEvent>(0) else {
        count(CTR_RINGBUF_FULL);
        return;
    };
    entry.write(FuncEvent {
        header: EventHeader {
            kind: EVENT_FUNC,
            len: core::mem::size_of::<FuncEvent>() as u16,
            // SAFETY: helpers without arguments, valid in tracing programs.
            cpu: unsafe { bpf_get_smp_processor_id() },
            ts_ns: unsafe { bpf_ktime_get_ns() },
            netns: 0,
            ifindex: 0,
        },
        func: Func { func, skb_len, skb },
    });
    entry.submit(RB_NO_WAKEUP);
}
