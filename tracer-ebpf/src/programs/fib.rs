//! Route lookups: `fib_table_lookup`, so "no route" and "wrong route" cases show the lookup
//! that decided the packet's fate (table, result, output device, gateway).
//!
//! `tp_btf/fib_table_lookup` (args: tb_id, flowi4, fib_nh_common, err) where the kernel allows
//! it: no trace record is built, which matters because this fires on every route lookup of the
//! machine. Fields are loaded directly through the typed argument pointers at offsets user space
//! resolved from BTF and patched in as read-only globals (the verifier knows them, so each load
//! is one instruction, not a probe-read helper call); a lookup that found a device carries that
//! device's namespace. Else the classic `fib:fib_table_lookup`
//! tracepoint, whose record has no namespace (user space then matches lookups to packets by
//! addresses and time); its layout is the one of the format file, checked by user space.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use tracer_common::{filter::FilterInput, Fib, CTR_FILTERED};

use crate::{
    kmem::{load, probe},
    maps::{count, emit, fib_offset, FIB_SEEN, FIB_SEEN_SLOTS},
};

/// Report a successful lookup of the same (source, destination) at most this often.
const FIB_EVERY_NS: u64 = 100_000_000;

/// Offsets in the tracepoint record (see /sys/kernel/tracing/events/fib/fib_table_lookup/format;
/// user space verifies them against the running kernel and does not attach if they differ).
const TB_ID: usize = 8;
const ERR: usize = 12;
const OIF: usize = 16;
const IIF: usize = 20;
const PROTO: usize = 24;
const SCOPE: usize = 26;
const SRC: usize = 28;
const DST: usize = 32;
const GW4: usize = 36;
const SPORT: usize = 56;
const DPORT: usize = 58;
const NAME: usize = 60;

const AF_INET: u8 = 2;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[tracepoint(category = "fib", name = "fib_table_lookup")]
pub fn fib_lookup(ctx: TracePointContext) -> i32 {
    let _ = try_fib_lookup(&ctx);
    0
}

#[btf_tracepoint(function = "fib_table_lookup")]
pub fn fib_lookup_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = try_fib_lookup_btf(&ctx);
    0
}

/// A direct, aligned load from the tracepoint record (cheaper than a probe read; the verifier
/// checks the offset against the record).
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    // SAFETY: `off` is a field offset of this tracepoint's record (checked by user space against
    // the format file before attaching), aligned to the field's size.
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(off).cast::<T>()) }
}

/// Whether the lookup concerns a traced flow (counted as filtered when not). Lookups carry no
/// ICMP detail: the filter sees addresses, protocol and ports.
#[inline(always)]
fn wanted(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> bool {
    let input = FilterInput {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(dst),
        proto,
        sport,
        dport,
    };
    let ok = crate::filter::wanted(&input);
    if !ok {
        count(CTR_FILTERED);
    }
    ok
}

/// A successful lookup reported recently for this pair says nothing new. Keyed by input
/// interface too, so that each node's lookup of a forwarded pair counts. (The coarse clock
/// would do for the limit and cost less, but tracing programs may not call it.)
#[inline(always)]
fn seen_recently(src: [u8; 4], dst: [u8; 4], iif: u32, now: u64) -> bool {
    let pair = ((u64::from(u32::from_ne_bytes(src)) << 32) | u64::from(u32::from_ne_bytes(dst)))
        ^ (u64::from(iif) << 48);
    // Fibonacci hashing of the pair to a slot.
    let slot = (pair.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FIB_SEEN_SLOTS.ilog2())) as u32;
    let Some(seen) = FIB_SEEN.get_ptr_mut(slot) else {
        return false;
    };
    // SAFETY: a slot of an array map, index below its size; a concurrent update of the same
    // slot at worst reports one lookup more.
    let seen = unsafe { &mut *seen };
    if seen.pair == pair && now.wrapping_sub(seen.at) < FIB_EVERY_NS {
        return true;
    }
    seen.pair = pair;
    seen.at = now;
    false
}

#[inline(always)]
fn try_fib_lookup(ctx: &TracePointContext) -> Result<(), i32> {
    // This tracepoint fires on every route lookup of the machine: decide with direct loads
    // before anything else.
    let src = field::<u32>(ctx, SRC).to_ne_bytes();
    let dst = field::<u32>(ctx, DST).to_ne_bytes();
    let proto = field::<u8>(ctx, PROTO);
    let sport = field::<u16>(ctx, SPORT);
    let dport = field::<u16>(ctx, DPORT);
    if !wanted(src, dst, proto, sport, dport) {
        return Ok(());
    }
    // SAFETY: helper without arguments, valid in tracepoint programs.
    let now = unsafe { bpf_ktime_get_ns() };
    let err = field::<i32>(ctx, ERR);
    let iif = field::<u32>(ctx, IIF);
    if err == 0 && seen_recently(src, dst, iif, now) {
        return Ok(());
    }
    let fib = Fib {
        table: field::<u32>(ctx, TB_ID),
        err,
        oif: field::<u32>(ctx, OIF),
        iif,
        src,
        dst,
        gw: field::<u32>(ctx, GW4).to_ne_bytes(),
        proto,
        scope: field::<u8>(ctx, SCOPE),
        _pad: 0,
        sport,
        dport,
        // SAFETY: a probe read of the record (the 16-byte name is not 8-byte aligned).
        dev: unsafe { ctx.read_at::<[u8; 16]>(NAME)? },
        _pad_end: 0,
    };
    emit(now, 0, fib.oif, fib);
    Ok(())
}

#[inline(always)]
fn try_fib_lookup_btf(ctx: &BtfTracePointContext) -> Option<()> {
    if fib_offset(|l| &l.valid) == 0 {
        return None;
    }
    let flp: *const u8 = ctx.arg(1);
    let src = load::<u32>(flp, fib_offset(|l| &l.flow_saddr)).to_ne_bytes();
    let dst = load::<u32>(flp, fib_offset(|l| &l.flow_daddr)).to_ne_bytes();
    let proto = load::<u8>(flp, fib_offset(|l| &l.flow_proto));
    // As the classic record: host order, and only for TCP and UDP.
    let (sport, dport) = if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        (
            u16::from_be(load::<u16>(flp, fib_offset(|l| &l.flow_sport))),
            u16::from_be(load::<u16>(flp, fib_offset(|l| &l.flow_dport))),
        )
    } else {
        (0, 0)
    };
    if !wanted(src, dst, proto, sport, dport) {
        return Some(());
    }
    // SAFETY: helper without arguments, valid in tracing programs.
    let now = unsafe { bpf_ktime_get_ns() };
    let err: i32 = ctx.arg(3);
    let iif = load::<u32>(flp, fib_offset(|l| &l.flow_iif));
    if err == 0 && seen_recently(src, dst, iif, now) {
        return Some(());
    }
    let nhc: *const u8 = ctx.arg(2);
    let mut gw = [0u8; 4];
    let mut dev = [0u8; 16];
    dev[0] = b'-';
    let mut netns = 0;
    if !nhc.is_null() {
        if load::<u8>(nhc, fib_offset(|l| &l.nhc_gw_family)) == AF_INET {
            gw = load::<u32>(nhc, fib_offset(|l| &l.nhc_gw)).to_ne_bytes();
        }
        let devp = load::<u64>(nhc, fib_offset(|l| &l.nhc_dev)) as *const u8;
        if !devp.is_null() {
            if let Some(name) = probe::<[u8; 16]>(devp, fib_offset(|l| &l.dev_name)) {
                dev = name;
            }
            let net = load::<u64>(devp, fib_offset(|l| &l.dev_nd_net)) as *const u8;
            if !net.is_null() {
                netns = load::<u32>(net, fib_offset(|l| &l.net_ns_inum));
            }
        }
    }
    let fib = Fib {
        table: ctx.arg(0),
        err,
        oif: load::<u32>(flp, fib_offset(|l| &l.flow_oif)),
        iif,
        src,
        dst,
        gw,
        proto,
        scope: load::<u8>(flp, fib_offset(|l| &l.flow_scope)),
        _pad: 0,
        sport,
        dport,
        dev,
        _pad_end: 0,
    };
    emit(now, netns, fib.oif, fib);
    Some(())
}
