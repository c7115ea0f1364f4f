//! tcx attachment with `BPF_LINK_CREATE`, by ifindex, from a thread inside the node's network
//! namespace: one syscall per link (aya's attach by name costs several more).
//!
//! Each tcx attach (and each detach) waits for an RCU grace period in the kernel while holding
//! the RTNL lock (the mprog entry is swapped), about 9 ms here: attaches do not overlap, even from
//! several threads (measured), so this is what bounds start-up with hundreds of pods. Every link
//! is an fd owned by this process: closing it, or exiting however we exit, detaches the program.

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// Attaches `prog_fd` to `ifindex` (in the calling thread's namespace), after the programs
/// already there, and returns the link.
pub fn link_create(prog_fd: RawFd, ifindex: u32, egress: bool) -> io::Result<OwnedFd> {
    // union bpf_attr, link_create: prog_fd, target_ifindex, attach_type, flags, then the tcx
    // part (relative_fd, expected_revision) left zero: append, whatever the revision.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    let attach_type = if egress {
        BPF_TCX_EGRESS
    } else {
        BPF_TCX_INGRESS
    };
    attr[8..12].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: bpf(2) reads `attr.len()` initialised bytes; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_ptr(), attr.len()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
