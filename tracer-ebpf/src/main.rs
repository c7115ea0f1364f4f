//! Kernel side of the tracer: tc programs on the pod veths, the tunnel devices and the uplink.
//!
//! Design notes:
//! - One file per hook under `programs/`; the shared bounded parser is `tracer_common::parse`
//!   (also unit-tested on the host); maps, globals and the one `emit` helper that writes every
//!   record (`Event<T>`: header, then body) in `maps.rs`; reads of kernel objects at BTF
//!   offsets in `kmem.rs`.
//! - Every tc program returns `TC_ACT_UNSPEC` (tcx: "next"), on every path, errors included:
//!   the tracer never changes what happens to a packet, nor skips another tcx program.
//! - Settings that differ per load (netns inode, VXLAN port) are read-only globals that user
//!   space sets before loading; the flow filter lives in a map.
#![no_std]
#![no_main]

mod aggregate;
mod filter;
mod kmem;
mod maps;
mod programs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
