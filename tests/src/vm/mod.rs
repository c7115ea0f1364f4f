//! The VM lab: the Calico-like lab with every node a qemu guest of its own kernel.
//!
//! Design note: a [`VmLab`] boots N guests of one cached Debian kernel ([`kernel`]) under qemu
//! ([`qemu`]), each with the host's root file system read-only over 9p and a project-built
//! initramfs ([`initramfs`]), so the tracer, the lab's own binary and every tool run in the
//! guest from the host's files with no image to build. The guests' `eth0`s share one L2
//! segment ([`hub`]) that exists only between them. Each guest runs a file-based agent
//! ([`agent`]) on a read-write share of the run dir, which the host uses to run commands
//! ([`VmLab::exec`], [`VmLab::spawn`]). Node i of the lab is then built *inside* guest i by the
//! same lab library as on the host ([`crate::Lab::up_node`], run through the `lab` binary):
//! the guest's root namespace is the node, pods are namespaces in it, and nothing of the
//! node's scripts exists twice.
//!
//! Lifetimes: the run dir (`<target>/vmlab/runs/<prefix>-<pid>-<n>/`), the hub and every qemu
//! belong to the `VmLab`; dropping it shuts the guests down (agent first, SIGKILL after a
//! grace period), stops the hub and removes the run dir, also on a failed boot. qemu cannot
//! outlive the driver process, even killed with SIGKILL (see [`qemu`]); a run dir whose
//! driver died that way is removed by the next boot.

pub mod agent;
pub mod cli;
pub mod hub;
pub mod initramfs;
pub mod kernel;
mod lab;
pub mod qemu;

use std::io;
use std::path::PathBuf;

pub use kernel::{Kernel, Series};
pub use lab::{
    clean_stale_runs, default_target_dir, guest_mac, qemu_processes, runs_dir, GuestProcess, VmLab,
    VmSpec,
};

/// What can go wrong with a VM lab.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The kernel of a series was never fetched.
    #[error(
        "kernel series {series} is not in {dir}: run `cargo xtask setup --vm` (it fetches the \
         Debian kernel packages)"
    )]
    KernelNotCached {
        /// The series asked for.
        series: String,
        /// The cache looked in.
        dir: PathBuf,
    },
    /// A host-side operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A host-side precondition does not hold (a tool missing, a bad file).
    #[error("{0}")]
    Host(String),
    /// The lab spec is invalid.
    #[error("lab spec: {0}")]
    Spec(String),
    /// A guest did not come up.
    #[error(
        "guest {node} did not boot: {reason}\n--- console of {node} (last lines) ---\n{console}"
    )]
    Boot {
        /// The guest.
        node: String,
        /// Why (timeout, qemu exited).
        reason: String,
        /// The end of its console.
        console: String,
    },
    /// A guest ended while the host was waiting for it.
    #[error("guest {node} is gone ({status}) while waiting for `{cmd}`\n--- console of {node} (last lines) ---\n{console}")]
    GuestGone {
        /// The guest.
        node: String,
        /// qemu's exit status.
        status: String,
        /// The command waited for.
        cmd: String,
        /// The end of its console.
        console: String,
    },
    /// A command did not finish in time (it was killed).
    #[error("`{cmd}` on {node} did not finish within {timeout_s} s (killed)\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")]
    Timeout {
        /// The guest.
        node: String,
        /// The command.
        cmd: String,
        /// The timeout.
        timeout_s: u64,
        /// Its stdout until then.
        stdout: String,
        /// Its stderr until then.
        stderr: String,
    },
    /// Building a node of the lab in its guest failed.
    #[error("building {node} of the lab in its guest failed (exit {code}):\n{stderr}")]
    LabBuild {
        /// The guest.
        node: String,
        /// The `lab up --node` exit status.
        code: i32,
        /// Its stderr.
        stderr: String,
    },
    /// No guest of that name.
    #[error("no guest named `{node}` (the guests are {known})")]
    NoSuchNode {
        /// The name asked for.
        node: String,
        /// The names there are.
        known: String,
    },
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> VmError {
        VmError::Io {
            what: what.into(),
            source,
        }
    }
}
