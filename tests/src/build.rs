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

use crate::netns::{create_netns, delete_netns, run_batch, write_sysctls};
use crate::script;
use crate::spec::{validate_prefix, LabSpec};
use crate::status::{lab_netns, lock_prefix, remove_state, write_state};
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
        let topo = spec.plan()?;
        ensure_root()?;
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
        let result = build(&topo, &mut guard.created, timings).and_then(|()| write_state(&topo));
        if let Err(e) = result {
            let created = guard.created.len();
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
    delete_all(&names)?;
    remove_state(prefix)?;
    Ok(names.len())
}

fn teardown(t: &Topology) -> Result<()> {
    let _lock = lock_prefix(&t.prefix)?;
    let names: Vec<String> = t.netns_names().into_iter().map(str::to_owned).collect();
    delete_all(&names)?;
    remove_state(&t.prefix)
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
    let names: Vec<String> = t.netns_names().into_iter().map(str::to_owned).collect();
    let (made, result) = create_netns(&names);
    *created = made;
    result.context("create network namespaces")?;
    phase.done(&format!("create {} netns", names.len()));

    let mut sysctls = vec![(t.underlay.netns.clone(), script::leaf_sysctls())];
    sysctls.extend(
        t.nodes
            .iter()
            .map(|n| (n.netns.clone(), script::node_sysctls())),
    );
    sysctls.extend(
        t.pods
            .iter()
            .map(|p| (p.netns.clone(), script::leaf_sysctls())),
    );
    write_sysctls(sysctls)?;
    phase.done("base sysctls");

    run_batch("ip", &t.underlay.netns, &script::underlay_script(t))?;
    phase.done("underlay");

    run_pool(&t.nodes, |n| {
        run_batch("ip", &n.netns, &script::node_script(t, n))
    })?;
    phase.done("nodes");

    let jobs: Vec<Job<'_>> = t
        .nodes
        .iter()
        .flat_map(|n| [Job::Fdb(n), Job::CaliSysctls(n)])
        .chain(t.pods.iter().map(Job::Pod))
        .collect();
    run_pool(&jobs, |job| match job {
        Job::Fdb(n) => run_batch("bridge", &n.netns, &script::fdb_script(t, n)),
        Job::CaliSysctls(n) => write_sysctls(vec![(n.netns.clone(), script::cali_sysctls(t, n))]),
        Job::Pod(p) => run_batch("ip", &p.netns, &script::pod_script(p)),
    })?;
    phase.done(&format!("fdb, cali sysctls, {} pods", t.pods.len()));
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
