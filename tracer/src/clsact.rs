//! tc programs through clsact and netlink, for kernels without tcx (before 6.6) or when asked
//! (`--tc-attach netlink`).
//!
//! Our filters come first: priority 1 on the clsact ingress and egress hooks (lower runs
//! earlier), direct action, and our programs return `TC_ACT_UNSPEC` on every path, so the next
//! filter (Calico's eBPF dataplane, another tool) still sees every packet. A filter is ours
//! when it is a `bpf` filter at that priority carrying one of our program names; its handle is
//! the PID of the tracer that attached it.
//!
//! Unlike tcx links, netlink filters outlive their process: a tracer killed with SIGKILL
//! leaves them. So every start looks at every interface of the traced namespaces and deletes
//! our filters whose owner is gone (no process with that PID runs a tracer), leaving a live
//! tracer's filters and everyone else's alone, and says how many it removed. A clean exit
//! removes its own ([`Owned`], dropped with the node's attachments; aya does not detach
//! netlink filters when its programs are dropped).

use std::{fs::File, os::fd::AsRawFd};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{
        tc::{qdisc_add_clsact, NlOptions, TcAttachOptions, TcHandle},
        SchedClassifier, TcAttachType,
    },
    Ebpf,
};

use crate::netlink::{
    delete_tc_filter, dump_links, tc_filters, TcFilter, CLSACT_EGRESS, CLSACT_INGRESS,
};

/// Priority of our filters: before everyone else's.
pub const PRIORITY: u16 = 1;

/// The names our tc programs carry in their filters.
pub const PROGRAM_NAMES: [&str; 4] = [
    "hop_ingress",
    "hop_egress",
    "hop_ingress_l3",
    "hop_egress_l3",
];

/// Whether a filter is one of ours (whoever attached it).
pub fn is_ours(f: &TcFilter) -> bool {
    f.kind == "bpf" && f.priority == PRIORITY && PROGRAM_NAMES.contains(&f.name.as_str())
}

/// Whether the tracer with PID `pid` (a filter's handle) is still running.
fn owner_alive(pid: u32) -> bool {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(mine)) => theirs == mine,
        _ => false,
    }
}

/// Deletes, in the calling thread's namespace, our filters whose tracer is gone; returns how
/// many were removed and on which interfaces.
pub fn remove_stale() -> Result<(usize, Vec<String>)> {
    let mut removed = 0;
    let mut where_ = Vec::new();
    for link in dump_links().context("listing interfaces for stale tc filters")? {
        let mut here = 0;
        for parent in [CLSACT_INGRESS, CLSACT_EGRESS] {
            for f in tc_filters(link.ifindex, parent)? {
                if is_ours(&f) && !owner_alive(f.handle) {
                    delete_tc_filter(link.ifindex, parent, f.priority, f.handle).with_context(
                        || format!("removing a stale tracer filter on {}", link.name),
                    )?;
                    here += 1;
                }
            }
        }
        if here > 0 {
            removed += here;
            where_.push(link.name);
        }
    }
    Ok((removed, where_))
}

/// The filters this process attached in one namespace, deleted when dropped.
pub struct Owned {
    /// The namespace (a duplicate of its descriptor).
    netns: File,
    /// `(ifindex, clsact hook)` of each filter.
    filters: Vec<(u32, u32)>,
}

impl Owned {
    pub fn new(netns: File) -> Owned {
        Owned {
            netns,
            filters: Vec::new(),
        }
    }

    /// Both filters of `ifindex` are ours.
    pub fn add(&mut self, ifindex: u32) {
        self.filters.push((ifindex, CLSACT_INGRESS));
        self.filters.push((ifindex, CLSACT_EGRESS));
    }

    /// `ifindex` is gone, and its filters with it.
    pub fn forget(&mut self, ifindex: u32) {
        self.filters.retain(|(i, _)| *i != ifindex);
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.filters.is_empty() {
            return;
        }
        let (fd, filters) = (self.netns.as_raw_fd(), std::mem::take(&mut self.filters));
        let handle = std::process::id();
        let done = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `fd` is an open netns file owned by `self`, alive for this scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error().to_string());
                }
                let mut failed = 0;
                for (ifindex, hook) in filters {
                    // A device that is gone took its filters along.
                    if let Err(e) = delete_tc_filter(ifindex, hook, PRIORITY, handle) {
                        if !matches!(&e, crate::netlink::NetlinkError::Reply(r)
                            if matches!(r.raw_os_error(), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)))
                        {
                            failed += 1;
                        }
                    }
                }
                if failed > 0 {
                    return Err(format!("{failed} filters could not be deleted"));
                }
                Ok(())
            })
            .join()
            .unwrap_or_else(|_| Err("the cleanup thread panicked".into()))
        });
        if let Err(e) = done {
            log::warn!("removing the tracer's tc filters: {e}; the next start removes them");
        }
    }
}

/// Attaches the pair `ingress`/`egress` to `ifname` through clsact (added if missing), first
/// in line, owned by this process.
pub fn attach_pair(ebpf: &mut Ebpf, ifname: &str, ingress: &str, egress: &str) -> Result<()> {
    // EEXIST when the interface already has a clsact qdisc: fine.
    let _ = qdisc_add_clsact(ifname);
    for (prog, dir) in [
        (ingress, TcAttachType::Ingress),
        (egress, TcAttachType::Egress),
    ] {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
            .try_into()?;
        let options = NlOptions {
            priority: PRIORITY,
            handle: TcHandle::from(std::process::id()),
            ..NlOptions::default()
        };
        p.attach_with_options(ifname, dir, TcAttachOptions::Netlink(options))
            .with_context(|| format!("attaching {prog} to {ifname} {dir:?} through clsact"))?;
    }
    Ok(())
}
