//! Route lookups: the `fib:fib_table_lookup` tracepoint, so "no route" and "wrong route" cases
//! show the lookup that decided the packet's fate (table, result, output device, gateway).
//! The record has no namespace: user space matches lookups to packets by addresses and time.
//! The record layout is the one of the format file, checked by user space before attaching.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use tracer_common::{
    filter::FilterInput, EventHeader, Fib, FibEvent, CTR_FILTERED, CTR_RINGBUF_FULL, EVENT_FIB,
};

use crate::maps::{count, EVENTS, FIB_SEEN, FILTER, RB_NO_WAKEUP};

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

#[tracepoint(category = "fib", name = "fib_table_lookup")]
pub fn fib_lookup(ctx: TracePointContext) -> i32 {
    let _ = try_fib_lookup(&ctx);
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

#[inline(always)]
fn try_fib_lookup(ctx: &TracePointContext) -> Result<(), i32> {
    // This tracepoint fires on every route lookup of the machine: decide with direct loads
    // before anything else.
    let src = field::<u32>(ctx, SRC).to_ne_bytes();
    let dst = field::<u32>(ctx, DST).to_ne_bytes();
    let proto = field::<u8>(ctx, PROTO);
    let sport = field::<u16>(ctx, SPORT);
    let dport = field::<u16>(ctx, DPORT);
    if let Some(filter) = FILTER.get(0) {
        // Lookups carry no ICMP/port detail for every caller: match on addresses and protocol.
        let input = FilterInput {
            saddr: u32::from_ne_bytes(src),
            daddr: u32::from_ne_bytes(dst),
            proto,
            sport,
            dport,
        };
        if !filter.matches(&input) {
            count(CTR_FILTERED);
            return Ok(());
        }
    }
    // SAFETY: helper without arguments, valid in tracepoint programs.
    let now = unsafe { bpf_ktime_get_ns() };
    let err = field::<i32>(ctx, ERR);
    if err == 0 {
        // A successful lookup that was reported recently for this pair says nothing new.
        // Keyed by input interface too, so that each node's lookup of a forwarded pair counts.
        let iif = u64::from(field::<u32>(ctx, IIF));
        let pair = ((u64::from(u32::from_ne_bytes(src)) << 32)
            | u64::from(u32::from_ne_bytes(dst)))
            ^ (iif << 48);
        // SAFETY: map lookup with a key on the stack.
        if let Some(&last) = unsafe { FIB_SEEN.get(pair) } {
            if now.wrapping_sub(last) < FIB_EVERY_NS {
                return Ok(());
            }
        }
        let _ = FIB_SEEN.insert(pair, now, 0);
    }
    let fib = Fib {
        table: field::<u32>(ctx, TB_ID),
        err,
        oif: field::<u32>(ctx, OIF),
        iif: field::<u32>(ctx, IIF),
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
    };
    let Some(mut entry) = EVENTS.reserve::<FibEvent>(0) else {
        count(CTR_RINGBUF_FULL);
        return Ok(());
    };
    entry.write(FibEvent {
        header: EventHeader {
            kind: EVENT_FIB,
            len: core::mem::size_of::<FibEvent>() as u16,
            // SAFETY: helper without arguments, valid in tracepoint programs.
            cpu: unsafe { bpf_get_smp_processor_id() },
            ts_ns: now,
            netns: 0,
            ifindex: fib.oif,
        },
        fib,
        _pad: 0,
    });
    entry.submit(RB_NO_WAKEUP);
    Ok(())
}
