//! Reading kernel objects at offsets user space resolved from the running kernel's BTF.
//!
//! Two ways, chosen by what the verifier knows about the pointer:
//! - [`load`]: a typed (BTF) pointer, from a `tp_btf` argument or loaded through one, with an
//!   offset that is a constant to the verifier (a read-only global). One instruction, which the
//!   kernel makes fault-tolerant (a NULL or bad pointer reads as 0).
//! - [`probe`]: any address (a classic tracepoint's or a kprobe's bare pointer, or a variable
//!   offset): `bpf_probe_read_kernel`, failure reported as `None`.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use tracer_common::parse::Packet;

/// A direct load of the field at `off` of the kernel object `base` points to. `base` must be a
/// typed pointer and `off` a verifier-known constant that starts a member of exactly `T`'s
/// size: the verifier checks both against BTF.
#[inline(always)]
pub fn load<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: see above; the kernel handles faults of BTF pointer loads.
    unsafe { core::ptr::read_volatile(base.add(off as usize).cast::<T>()) }
}

/// A probe read of kernel memory at `base + off`.
#[inline(always)]
pub fn probe<T: Copy>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }.ok()
}

/// Packet bytes read from kernel memory, starting at the skb's network header.
pub struct KernelBytes(pub *const u8);

impl Packet for KernelBytes {
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        probe(self.0, off as u32)
    }
}

/// How the skb's own fields are read: the two hooks differ only in this.
pub trait SkbFields {
    fn get<T: Copy>(base: *const u8, off: u32) -> Option<T>;
}

/// `tp_btf`: `base` is a typed (BTF) pointer and `off` a constant to the verifier that starts a
/// member of exactly `T`'s size, so this is one fault-tolerant load (a bad pointer reads 0).
pub struct Typed;

impl SkbFields for Typed {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        Some(load(base, off))
    }
}

/// The classic tracepoint: `base` is a bare address, probe-read.
pub struct Probed;

impl SkbFields for Probed {
    #[inline(always)]
    fn get<T: Copy>(base: *const u8, off: u32) -> Option<T> {
        probe(base, off)
    }
}
