//! Drop points: `kfree_skb` with the kernel's drop reason and calling location.
//!
//! `tp_btf/kfree_skb` (args: skb, location, reason, rx_sk) where the kernel has BTF, the classic
//! `skb/kfree_skb` tracepoint otherwise (field offsets from its format file). Both read the skb
//! at offsets user space resolved from the running kernel's BTF (read-only globals, constants
//! to the verifier), parse the packet from its network header with probe reads (so a dropped
//! VXLAN or IPIP packet is matched to its inner flow), apply the flow filter, and report only
//! drops in traced namespaces.
//!
//! The hook fires for every drop on the machine, most of them in namespaces nobody traces, so
//! the namespace test comes first. Under `tp_btf` the skb, its device and the device's
//! namespace are typed pointers and that test is four direct loads; the classic tracepoint
//! hands over a bare address, read with `bpf_probe_read_kernel`.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, generated},
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    Drop, DropBytes, CTR_DROP_OTHER_NETNS, CTR_DROP_READ_ERR, CTR_FILTERED, CTR_MALFORMED,
    CTR_NOT_IPV4, LINK_IPV4, SNAPLEN_MAX,
};

use tracer_common::parse::{filter_input, parse, Skip};

use crate::{
    filter::wanted,
    kmem::{KernelBytes, Probed, SkbFields, Typed},
    maps::{
        count, emit, emit_snap, skb_offset, snaplen, verifier_bounded, vxlan_ports, TRACED_NETNS,
    },
};

/// SKB_DROP_REASON_NOT_SPECIFIED is 2 on every kernel that has reasons; anything below is
/// "not a drop" (SKB_NOT_DROPPED_YET = 0, SKB_CONSUMED = 1). Checked again by name in user space.
const FIRST_DROP_REASON: u32 = 2;

#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: *const u8 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    on_drop::<Typed>(skb, location, reason);
    0
}

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_tp(ctx: TracePointContext) -> i32 {
    // SAFETY: reads of the tracepoint record at offsets from its format file.
    let (skb, location, reason) = unsafe {
        (
            ctx.read_at::<u64>(skb_offset(|l| &l.tp_skbaddr) as usize),
            ctx.read_at::<u64>(skb_offset(|l| &l.tp_location) as usize),
            ctx.read_at::<u32>(skb_offset(|l| &l.tp_reason) as usize),
        )
    };
    if let (Ok(skb), Ok(location), Ok(reason)) = (skb, location, reason) {
        on_drop::<Probed>(skb as *const u8, location, reason);
    }
    0
}

#[inline(always)]
fn on_drop<F: SkbFields>(skb: *const u8, location: u64, reason: u32) {
    if reason < FIRST_DROP_REASON || skb.is_null() || skb_offset(|l| &l.valid) == 0 {
        return;
    }
    if report::<F>(skb, location, reason).is_none() {
        count(CTR_DROP_READ_ERR);
    }
}

/// Returns None only when kernel memory could not be read.
#[inline(always)]
fn report<F: SkbFields>(skb: *const u8, location: u64, reason: u32) -> Option<()> {
    let dev: u64 = F::get(skb, skb_offset(|l| &l.skb_dev))?;
    let (netns, ifindex) = if dev != 0 {
        let dev = dev as *const u8;
        let ifindex: u32 = F::get(dev, skb_offset(|l| &l.dev_ifindex))?;
        let net: u64 = F::get(dev, skb_offset(|l| &l.dev_nd_net))?;
        let inum: u32 = if net != 0 {
            F::get(net as *const u8, skb_offset(|l| &l.net_ns_inum))?
        } else {
            0
        };
        (inum, ifindex)
    } else {
        (0, 0)
    };
    // SAFETY: a map lookup with a key on the stack.
    if unsafe { TRACED_NETNS.get(netns) }.is_none() {
        count(CTR_DROP_OTHER_NETNS);
        return Some(());
    }
    // `head` is probe-read whatever the hook: the packet bytes behind it are probe-read at a
    // variable offset, which the verifier allows only from a plain address.
    let head: u64 = Probed::get(skb, skb_offset(|l| &l.skb_head))?;
    let nh: u16 = F::get(skb, skb_offset(|l| &l.skb_network_header))?;
    if head == 0 || nh == u16::MAX {
        count(CTR_NOT_IPV4);
        return Some(());
    }
    let bytes = KernelBytes((head as *const u8).wrapping_add(nh as usize));
    let parsed = match parse(&bytes, false, vxlan_ports()) {
        Ok(p) => p,
        Err(Skip::NotIpv4) => {
            count(CTR_NOT_IPV4);
            return Some(());
        }
        Err(Skip::Malformed) => {
            count(CTR_MALFORMED);
            return Some(());
        }
    };
    // A packet conntrack translated before it died (SNAT in POSTROUTING, then a failed
    // neighbour resolution: it never reached `net_dev_queue`): the translation first, so that
    // user space follows the drop under the identity the packet entered with, and the filter
    // passes it as either.
    let nfct: u64 = F::get(skb, skb_offset(|l| &l.skb_nfct)).unwrap_or(0);
    let nat = if parsed.encap.kind == 0 {
        super::nat::translated(nfct, &parsed.pkt).flatten()
    } else {
        None
    };
    let passes = match &nat {
        Some(n) => super::nat::report(netns, ifindex, n),
        None => wanted(&filter_input(&parsed.pkt)),
    };
    if !passes {
        count(CTR_FILTERED);
        return Some(());
    }
    let skb_len: u32 = F::get(skb, skb_offset(|l| &l.skb_len))?;
    let mark: u32 = F::get(skb, skb_offset(|l| &l.skb_mark)).unwrap_or(0);
    // SAFETY: a helper without arguments, valid in tracing programs.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let drop = Drop {
        location,
        skb: skb as u64,
        reason,
        skb_len,
        flags: parsed.flags,
        _pad: [0; 3],
        mark,
        encap: parsed.encap,
        pkt: parsed.pkt,
    };
    // A frozen global: without `--snaplen` the bytes path is dead code to the verifier.
    let snaplen = snaplen();
    if snaplen == 0 {
        emit(ts_ns, netns, ifindex, drop);
        return Some(());
    }
    // The linear data ends at `tail`; the packet's length from its network header is
    // `len` counted from `data`, moved to the network header.
    let tail: u32 = F::get(skb, skb_offset(|l| &l.skb_tail)).unwrap_or(0);
    let data: u64 = Probed::get(skb, skb_offset(|l| &l.skb_data)).unwrap_or(head);
    let data_off = data.wrapping_sub(head) as i64;
    let orig_len = (i64::from(skb_len) + data_off - i64::from(nh)).clamp(0, i64::from(u32::MAX));
    let linear = tail.saturating_sub(u32::from(nh));
    let want = snaplen.min(linear).min(orig_len as u32);
    let from = (head as *const u8).wrapping_add(nh as usize);
    emit_snap::<DropBytes>(
        ts_ns,
        netns,
        ifindex,
        |b| {
            // SAFETY: `b` points into a reserved ring-buffer record (see `emit_snap`).
            unsafe {
                core::ptr::addr_of_mut!((*b).drop).write(drop);
                core::ptr::addr_of_mut!((*b).snap)
            }
        },
        LINK_IPV4,
        |to| (read_bytes(from, to, want), orig_len as u32),
    );
    Some(())
}

/// Copies `want` bytes (at most `SNAPLEN_MAX`) of kernel memory at `from` to `to`; returns how
/// many (0 when the read fails).
#[inline(always)]
fn read_bytes(from: *const u8, to: *mut u8, want: u32) -> u32 {
    let n = want.min(SNAPLEN_MAX as u32);
    if n == 0 {
        return 0;
    }
    let n = verifier_bounded(n);
    // SAFETY: `to` has room for `SNAPLEN_MAX` bytes and `n` is in 1..=SNAPLEN_MAX; the helper
    // copes with any source address.
    let r = unsafe { generated::bpf_probe_read_kernel(to.cast(), n, from.cast()) };
    if r < 0 {
        0
    } else {
        n
    }
}
