//! Filling a node's conntrack table (`conntrack-full`).
//!
//! Design note: `nf_conntrack_max` is global: the kernel refuses to change it outside the
//! initial namespace (the sysctl is read-only there), so the lab cannot make one node's table
//! small. It can make it full: the limit is compared with each namespace's own count, so the
//! node's namespace gets as many entries as the limit allows (262,144 on a machine with 4 GiB
//! or more), inserted through ctnetlink with `conntrack -R` (about 2 s) and no packet sent,
//! after the node's own entries are flushed (one that expired later would make room again).
//! They are assured (the kernel's early drop only evicts unassured entries, so new flows find
//! no room), UDP between addresses of 198.18.0.0/15 (RFC 2544's benchmarking range, which
//! nothing in the lab uses) and carry a mark, by which heal deletes exactly them
//! (`conntrack -D --mark`). Other namespaces, the host's included, keep their room.

use std::fs;

use anyhow::{ensure, Context, Result};

use crate::netns::in_netns;
use crate::services::run_with_input;

/// How long the fill's entries live (the fault's heal removes them sooner).
const TIMEOUT_S: u32 = 86_400;

fn read(netns: &str, name: &'static str) -> Result<u64> {
    let path = format!("/proc/sys/net/netfilter/{name}");
    let ns = netns.to_owned();
    let text = in_netns(netns, move || fs::read_to_string(&path))?
        .with_context(|| format!("read {name} in `{ns}` (is conntrack in use there?)"))?;
    text.trim()
        .parse()
        .with_context(|| format!("{name} in `{netns}`: `{}`", text.trim()))
}

/// The conntrack limit a namespace sees.
pub fn max(netns: &str) -> Result<u64> {
    let max = read(netns, "nf_conntrack_max")?;
    ensure!(
        max > 0,
        "nf_conntrack_max is 0 (no limit) on this machine: a table cannot be filled"
    );
    Ok(max)
}

/// Fill `netns`'s conntrack table with assured entries marked `mark`: its own entries are
/// flushed first (entries that expire later would free room again), then it gets as many as
/// the limit allows. On failure nothing marked stays.
pub fn fill(netns: &str, mark: u32) -> Result<()> {
    let max = max(netns)?;
    let flush = crate::netns::exec_in(netns, &["conntrack", "-F"])
        .context("run conntrack (installed by `cargo xtask setup`?)")?;
    ensure!(
        flush.status.success(),
        "`conntrack -F` in `{netns}` failed: {}",
        String::from_utf8_lossy(&flush.stderr).trim()
    );
    // A few more than the limit: flows that arrive meanwhile take some room.
    let n = max + 64;
    let mut lines = String::with_capacity(n as usize * 110);
    for k in 0..n {
        // 198.18.0.0 + k/16 stays inside 198.18.0.0/15 for up to 2,097,152 entries.
        let src = std::net::Ipv4Addr::from(0xc612_0000u32 + (k >> 4) as u32);
        lines.push_str(&format!(
            "-I -p udp -s {src} -d 198.19.255.254 --sport {} --dport 9 -t {TIMEOUT_S} -u ASSURED \
             -m {mark:#x}\n",
            10_000 + (k & 15)
        ));
    }
    // The inserts past the limit fail; what counts is the table's count afterwards.
    let inserted = run_with_input(netns, &["conntrack", "-R", "-"], &lines);
    let now = read(netns, "nf_conntrack_count")?;
    if now < max {
        let _ = crate::netns::exec_in(netns, &["conntrack", "-D", "--mark", &format!("{mark:#x}")]);
        anyhow::bail!(
            "filled `{netns}`'s conntrack table to {now} of {max} entries only ({})",
            inserted
                .err()
                .map_or("conntrack -R succeeded".into(), |e| format!("{e:#}"))
        );
    }
    Ok(())
}
