//! Building and tearing down a lab: [`Lab::up`], [`Lab::down`], [`down_prefix`].
//!
//! Design note: `up` executes the scripts of [`crate::script`] in dependency order, with as
//! few processes as possible so that 2 x 500 pods take seconds, not minutes:
//! 1. all namespaces are created in-process (no fork, see [`crate::netns`]);
//! 2. base sysctls of every namespace, in-process from one thread that `setns`es in turn;
//! 3. one `ip -batch` for the underlay (the bridge and every node uplink veth);
//! 4. one `ip -batch` per node (in parallel): uplink address, every cali veth created with
//!    its peer directly in the pod netns, host routes, blackholes, VTEP, remote routes;
//! 5. in a small worker pool: one `bridge -batch` per node (FDB), the cali sysctls per node,
//!    and one `ip -batch` per pod (address + routes).
//!
//! [`Lab::up_node`] builds one node of the same plan on the current machine (a VM lab guest,
//! see [`crate::vm`]): the current network namespace *is* the node (attached under the node's
//! netns name, like `ip netns attach NAME 1`, so `ip -netns NAME`, the faults' executors and
//! `tracer --netns NAME` address it as on the host), the uplink is the machine's own NIC
//! (`eth0`), and only this node's pods are created; steps 2-5 run unchanged for that subset
//! (no underlay script). IPIP labs check first that the kernel has `ipip` (loading the
//! module), so a kernel without it fails in one line before anything is built.
//!
//! Failure anywhere removes every namespace this call created (also on panic, via a guard)
//! before the error is returned. `up` refuses to run over existing namespaces of the same
//! prefix, and `up`/`down` of one prefix are serialized by a lock file. Teardown only unmounts
//! namespaces; the kernel destroys their devices asynchronously. Set `TRACER_LAB_TIMINGS=1`
//! to get per-phase durations on stderr.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::netns::{
    attach_current_netns, create_netns, delete_netns, run_batch, run_batch_force, write_sysctls,
};
use crate::script;
use crate::spec::{validate_prefix, Encap, LabSpec};
use crate::status::{lab_netns, lock_prefix, read_state, remove_state, write_state};
use crate::topology::{Node, Pod, Topology};

/// A running lab. Dropping it tears it down (errors become a warning on stderr); use
/// [`Lab::down`] to see errors, or [`Lab::keep`] to leave it running.
#[derive(Debug)]
pub struct Lab {
    topo: Topology,
    armed: bool,
}

impl Lab {
    /// Build the lab described by `spec`. Needs root. On error, everything created so far
    /// has been removed. Refuses if namespaces of `spec.prefix` already exist.
    pub fn up(spec: &LabSpec) -> Result<Lab> {
        Self::up_planned(spec.plan()?)
    }

    /// Build node `index` (1-based) of `spec` on this machine: the current network namespace
    /// becomes the node, attached as `{prefix}-node{index}`, its uplink the existing `eth0`;
    /// only this node's pods are created. Peers are programmed from the plan (their
    /// addresses and VTEP MACs are deterministic), so each machine builds its node alone.
    /// Dropping the lab deletes the pods, undoes the node's configuration and detaches the
    /// name.
    pub fn up_node(spec: &LabSpec, index: usize) -> Result<Lab> {
        if spec.services.is_some() {
            bail!("Services are not available in VM labs yet (no one machine holds every node)");
        }
        let mut topo = spec.plan()?;
        let node = topo
            .nodes
            .get(index.wrapping_sub(1))
            .with_context(|| format!("node index {index} out of range 1..={}", spec.nodes))?;
        topo.local_node = Some(node.name.clone());
        Self::up_planned(topo)
    }

    fn up_planned(topo: Topology) -> Result<Lab> {
        ensure_root()?;
        if topo.encap == Encap::Ipip {
            ensure_ipip()?;
        }
        let prefix = &topo.prefix;
        let _lock = lock_prefix(prefix)?;
        let existing = lab_netns(prefix)?;
        if !existing.is_empty() {
            bail!(
                "a lab with prefix `{prefix}` already exists ({} network namespaces, e.g. `{}`); \
                 run `cargo xtask lab down --prefix {prefix}` first",
                existing.len(),
                existing[0]
            );
        }
        let mut guard = Partial {
            created: Vec::new(),
            armed: true,
        };
        let timings = std::env::var_os("TRACER_LAB_TIMINGS").is_some_and(|v| v != "0");
        let started = Instant::now();
        let result = build(&topo, &mut guard.created, timings)
            .and_then(|()| match topo.services {
                Some(_) => crate::services::start(&topo, &mut guard.created),
                None => Ok(()),
            })
            .and_then(|()| write_state(&topo));
        if let Err(e) = result {
            let created = guard.created.len();
            let _ = crate::services::stop_prefix(prefix);
            let cleanup = guard.cleanup();
            let _ = remove_state(prefix);
            return Err(e.context(match cleanup {
                Ok(()) => format!(
                    "lab `{prefix}` up failed (the {created} namespaces it had created are removed)"
                ),
                Err(c) => format!(
                    "lab `{prefix}` up failed, and so did its cleanup ({c:#}); run \
                     `cargo xtask lab down --prefix {prefix}`"
                ),
            }));
        }
        guard.armed = false;
        if timings {
            eprintln!("lab {prefix}: up total {:?}", started.elapsed());
        }
        Ok(Lab { topo, armed: true })
    }

    /// The lab's topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Leave the lab running (no teardown on drop) and return its topology.
    pub fn keep(mut self) -> Topology {
        self.armed = false;
        self.topo.clone()
    }

    /// Tear the lab down, reporting errors.
    pub fn down(mut self) -> Result<()> {
        self.armed = false;
        teardown(&self.topo)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = teardown(&self.topo) {
                eprintln!(
                    "warning: teardown of lab `{}` failed: {e:#} (run `cargo xtask lab down \
                     --prefix {}`)",
                    self.topo.prefix, self.topo.prefix
                );
            }
        }
    }
}

/// Remove every network namespace of lab `prefix` (`{prefix}-underlay`, `{prefix}-node<N>`,
/// `{prefix}-n<N>p<M>`) and its state file, whether or not `up` finished. Returns how many
/// namespaces were removed.
pub fn down_prefix(prefix: &str) -> Result<usize> {
    validate_prefix(prefix)?;
    ensure_root()?;
    let _lock = lock_prefix(prefix)?;
    let names = lab_netns(prefix)?;
    // One node of a VM lab: its configuration of the namespace that stays is undone too.
    let state = read_state(prefix).ok().flatten();
    if let Some((t, n)) = state.as_ref().and_then(|t| local_node(t).map(|n| (t, n))) {
        if names.contains(&n.netns) {
            if let Err(e) = undo_local_node(t, n) {
                eprintln!("warning: lab `{prefix}`: {e:#}");
            }
        }
    }
    let servers = crate::services::stop_prefix(prefix);
    delete_all(&names)?;
    servers?;
    remove_state(prefix)?;
    Ok(names.len())
}

fn teardown(t: &Topology) -> Result<()> {
    let _lock = lock_prefix(&t.prefix)?;
    let names: Vec<String> = t
        .local_netns_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let undo = match local_node(t) {
        // Best effort: a half-built node lacks some of what the script removes.
        Some(n) => undo_local_node(t, n),
        None => Ok(()),
    };
    let servers = crate::services::stop_prefix(&t.prefix);
    delete_all(&names)?;
    undo?;
    servers?;
    remove_state(&t.prefix)
}

/// Undo the node script in the namespace that stays (`ip -force`: past lines that fail
/// because a half-built node lacks them).
fn undo_local_node(t: &Topology, n: &Node) -> Result<()> {
    run_batch_force("ip", &n.netns, &script::local_node_teardown(t, n))
        .context("undo the node's configuration")
}

/// The node this machine is, in a VM lab guest.
fn local_node(t: &Topology) -> Option<&Node> {
    t.local_node.as_deref().and_then(|name| t.node(name))
}

/// IPIP needs the kernel's `ipip` module (or `CONFIG_NET_IPIP=y`): try to load it and fail in
/// one line naming the feature when the kernel has none.
fn ensure_ipip() -> Result<()> {
    let present = || std::path::Path::new("/sys/module/ipip").exists();
    if present() {
        return Ok(());
    }
    let out = std::process::Command::new("modprobe").arg("ipip").output();
    if present() {
        return Ok(());
    }
    let why = match out {
        Ok(o) => String::from_utf8_lossy(&o.stderr)
            .lines()
            .next()
            .unwrap_or("no output")
            .trim()
            .to_owned(),
        Err(e) => format!("cannot run modprobe: {e}"),
    };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    bail!(
        "encapsulation ipip needs the kernel's IPIP tunnel (CONFIG_NET_IPIP, module `ipip`), \
         which kernel {} does not have (`modprobe ipip`: {why}); use --encap vxlan|none, or \
         a VM lab (`cargo xtask vmlab`)",
        release.trim()
    )
}

/// Delete every namespace, continuing past failures; report the first failure.
fn delete_all(names: &[String]) -> Result<()> {
    let mut failures = names.iter().filter_map(|n| delete_netns(n).err());
    let first = failures.next();
    let more = failures.count();
    match first {
        None => Ok(()),
        Some(e) if more == 0 => Err(e),
        Some(e) => Err(e.context(format!("and {more} more namespaces failed to delete"))),
    }
}

fn ensure_root() -> Result<()> {
    // SAFETY: geteuid has no failure modes.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (it creates network namespaces and mounts them under /run/netns)"
        );
    }
    Ok(())
}

/// Namespaces created by a failing `up`, removed on drop (also on panic).
struct Partial {
    created: Vec<String>,
    armed: bool,
}

impl Partial {
    fn cleanup(&mut self) -> Result<()> {
        self.armed = false;
        delete_all(&std::mem::take(&mut self.created))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.cleanup() {
                eprintln!("warning: cleanup of a half-built lab failed: {e:#}");
            }
        }
    }
}

struct Phases {
    enabled: bool,
    prefix: String,
    last: Instant,
}

impl Phases {
    fn done(&mut self, what: &str) {
        if self.enabled {
            eprintln!("lab {}: {what} {:?}", self.prefix, self.last.elapsed());
        }
        self.last = Instant::now();
    }
}

fn build(t: &Topology, created: &mut Vec<String>, timings: bool) -> Result<()> {
    let mut phase = Phases {
        enabled: timings,
        prefix: t.prefix.clone(),
        last: Instant::now(),
    };
    // The nodes and pods built here: all of them, or one node and its pods in a VM guest.
    let local = local_node(t);
    let nodes: Vec<&Node> = t
        .nodes
        .iter()
        .filter(|n| local.is_none_or(|l| l.name == n.name))
        .collect();
    let pods: Vec<&Pod> = t
        .pods
        .iter()
        .filter(|p| nodes.iter().any(|n| n.name == p.node))
        .collect();
    let mut names: Vec<String> = Vec::new();
    if let Some(n) = local {
        attach_current_netns(&n.netns)?;
        created.push(n.netns.clone());
    } else {
        names.push(t.underlay.netns.clone());
        names.extend(nodes.iter().map(|n| n.netns.clone()));
    }
    names.extend(pods.iter().map(|p| p.netns.clone()));
    let (made, result) = create_netns(&names);
    created.extend(made);
    result.context("create network namespaces")?;
    phase.done(&format!("create {} netns", names.len()));

    let mut sysctls = Vec::new();
    if local.is_none() {
        sysctls.push((t.underlay.netns.clone(), script::leaf_sysctls()));
    }
    sysctls.extend(
        nodes
            .iter()
            .map(|n| (n.netns.clone(), script::node_sysctls())),
    );
    sysctls.extend(
        pods.iter()
            .map(|p| (p.netns.clone(), script::leaf_sysctls())),
    );
    write_sysctls(sysctls)?;
    phase.done("base sysctls");

    if local.is_none() {
        run_batch("ip", &t.underlay.netns, &script::underlay_script(t))?;
        phase.done("underlay");
    }

    run_pool(&nodes, |n| {
        run_batch("ip", &n.netns, &script::node_script(t, n))
    })?;
    phase.done("nodes");

    let jobs: Vec<Job<'_>> = nodes
        .iter()
        .flat_map(|&n| [Job::Fdb(n), Job::CaliSysctls(n)])
        .chain(pods.iter().map(|&p| Job::Pod(p)))
        .collect();
    run_pool(&jobs, |job| match job {
        Job::Fdb(n) => run_batch("bridge", &n.netns, &script::fdb_script(t, n)),
        Job::CaliSysctls(n) => write_sysctls(vec![(n.netns.clone(), script::cali_sysctls(t, n))]),
        Job::Pod(p) => run_batch("ip", &p.netns, &script::pod_script(p)),
    })?;
    phase.done(&format!("fdb, cali sysctls, {} pods", pods.len()));
    Ok(())
}

enum Job<'a> {
    Fdb(&'a Node),
    CaliSysctls(&'a Node),
    Pod(&'a Pod),
}

/// Run `f` over `items` on a few threads; stop handing out work after the first error and
/// return it.
fn run_pool<J: Sync>(items: &[J], f: impl Fn(&J) -> Result<()> + Sync) -> Result<()> {
    let workers = thread::available_parallelism()
        .map_or(2, |n| n.get())
        .saturating_mul(2)
        .clamp(2, 16)
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        failed.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
