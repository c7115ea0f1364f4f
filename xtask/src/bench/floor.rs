//! The floor of `BPF_PROG_TEST_RUN` on this machine: an empty tc program (`r0 = -1; exit`,
//! pass-through) run on the same frame, the same number of times, as the tracer's programs.
//!
//! Design note: the test run's own loop (per run: the call through the program's dispatcher,
//! the timer's checks, the skb reset) costs tens of ns on these VMs (33 ns on the 2-core 6.18
//! VM, 1 December 2026), which a per-program figure of 50-120 ns includes. A program's own cost
//! is its figure minus this floor, measured next to it. The program is loaded with a raw
//! `bpf(2)` call (two instructions need no object file) and closed on drop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;

/// `bpf_attr` as a zeroed buffer larger than every member the calls below use; the kernel
/// accepts a larger attribute when the bytes it does not know are zero.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
    fn call(&mut self, cmd: libc::c_long) -> std::io::Result<libc::c_long> {
        // SAFETY: `self.0` is a valid, writable bpf_attr of the size passed.
        let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, self.0.as_mut_ptr(), self.0.len()) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
}

/// A loaded pass-through tc program.
pub struct EmptyProgram(OwnedFd);

impl EmptyProgram {
    pub fn load() -> Result<EmptyProgram> {
        // mov64 r0, -1 (TC_ACT_UNSPEC); exit. Each instruction: opcode, registers, offset
        // (2 bytes), immediate (4 bytes: -1 is the same bytes in either byte order).
        let insns: [[u8; 8]; 2] = [
            [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            [0x95, 0, 0, 0, 0, 0, 0, 0],
        ];
        let license = c"GPL";
        let mut attr = Attr::new();
        attr.u32(0, BPF_PROG_TYPE_SCHED_CLS)
            .u32(4, insns.len() as u32)
            .u64(8, insns.as_ptr() as u64)
            .u64(16, license.as_ptr() as u64);
        let fd = match attr.call(BPF_PROG_LOAD) {
            Ok(fd) => fd,
            Err(e) => bail!("loading an empty tc program (BPF_PROG_LOAD): {e}"),
        };
        // SAFETY: the syscall returned a new file descriptor that nothing else owns.
        Ok(EmptyProgram(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Average ns per run of `repeat` runs on `frame` (the kernel's own figure, as bpftool's).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<f64> {
        let mut attr = Attr::new();
        attr.u32(0, self.0.as_raw_fd() as u32)
            .u32(8, frame.len() as u32)
            .u64(16, frame.as_ptr() as u64)
            .u32(32, repeat);
        if let Err(e) = attr.call(BPF_PROG_TEST_RUN) {
            bail!("BPF_PROG_TEST_RUN of an empty tc program: {e}");
        }
        let retval = attr.get_u32(4);
        if retval != u32::MAX {
            bail!("the empty program returned {retval}, not TC_ACT_UNSPEC");
        }
        Ok(f64::from(attr.get_u32(36)))
    }
}
