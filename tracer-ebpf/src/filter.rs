//! The flow filter as one global BPF function: the verifier checks it once, on its own, with
//! arguments it knows nothing about, instead of once per call site and path of every program
//! that calls it. The DNF walk (`FilterProgram::matches`, up to 8 clauses of 8 terms) is the
//! part of each program whose verification grows fastest on older kernels (6.1's verifier
//! gave up on the tc programs with it inlined twice); the call costs a few instructions.
//!
//! A packet the filter does not match still passes when its flow is in `NAT_FOLLOW`: the NAT
//! hook puts there the flows that matching packets were translated into (a Service address's
//! packets on their way to the endpoint, and the endpoint's answers). That hash lookup is
//! made only once the hook has followed a flow (`NAT_FOLLOWING`), so that without NAT a
//! rejected packet costs the clauses' walk and an array load.
//!
//! The symbol is exported by the linker (`build.rs`: `--export=tracer_filter`), so that it
//! stays global in BTF, which is what makes the kernel verify it apart.

use tracer_common::filter::{FilterInput, FollowKey};

use crate::maps::{FILTER, NAT_FOLLOW, NAT_FOLLOWING};

/// 1 when the packet with these fields passes the filter (or there is none), else 0. Ports
/// in host order; addresses as their wire bytes read as a native `u32`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_filter(saddr: u32, daddr: u32, proto: u32, sport: u32, dport: u32) -> u32 {
    let input = FilterInput {
        saddr,
        daddr,
        proto: proto as u8,
        sport: sport as u16,
        dport: dport as u16,
    };
    match FILTER.get(0) {
        Some(f) if f.matches(&input) => 1,
        // A flow a matching packet was translated into by NAT (see `programs::nat`), looked
        // up only once there is one.
        Some(_) if NAT_FOLLOWING.get(0).is_some_and(|n| *n != 0) => {
            // SAFETY: a map lookup with a key on the stack.
            u32::from(unsafe { NAT_FOLLOW.get(FollowKey::of(&input)) }.is_some())
        }
        Some(_) => 0,
        None => 1,
    }
}

/// Whether the flow filter keeps a packet with these fields.
#[inline(always)]
pub fn wanted(input: &FilterInput) -> bool {
    tracer_filter(
        input.saddr,
        input.daddr,
        u32::from(input.proto),
        u32::from(input.sport),
        u32::from(input.dport),
    ) != 0
}
