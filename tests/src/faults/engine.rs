//! The fault engine: executes a fault's plan, records how to undo it, and undoes it.
//!
//! Design note: a plan (written by the fault's [`catalogue`](super::catalogue) entry with the
//! [`Plan`] builder) is a list of changes, each an `apply` [`Step`] and the `undo` step
//! that reverts it exactly. Undo steps are computed from the *kernel's* state read just before
//! breaking (the route, neighbour, FDB entry, MTU or sysctl value as it is), not from the
//! catalogue, so `heal` puts back what was there even if the lab had been modified. Steps are
//! plain data (`ip`/`bridge` batch lines, an `nft` script, a sysctl write, an
//! `iptables-nft-restore` script) executed in the right namespace; they are persisted with the
//! [`FaultInfo`] in `/run/tracer-lab/{prefix}.faults.json`, so `heal` works from another
//! process (a CLI, a test, the demo). A failing `break_lab` undoes what it had applied before
//! returning the error; a failing `heal` keeps the undo steps that failed so it can be retried.
//! Undo steps are idempotent where the tools allow it (`replace`). Everything runs under the
//! per-prefix lock, so faults never race with `up`/`down` of the same lab. Nothing here knows
//! a particular fault.

use std::fs;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::catalogue::{ExpectedDrop, Fault};
use super::probe::Probe;
use super::state::node;
use crate::netns::{exec_in, in_netns, run_batch};
use crate::spec::Encap;
use crate::status::{faults_path, lock_prefix, STATE_DIR};
use crate::topology::{Node, Topology};

/// What was broken, where, and what a test should expect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultInfo {
    /// The fault.
    pub fault: Fault,
    /// Node(s) whose state was changed, comma-separated (`"node1"`, `"node1,node2"`).
    pub node: String,
    /// One line: what exactly was changed.
    pub description: String,
    /// The traffic that now fails.
    pub probe: Probe,
    /// The drops the probe causes.
    pub expected_drops: Vec<ExpectedDrop>,
}

/// What a fault's plan is given: the lab, its nodes `node1` and `node2` (every fault is
/// between these two) and their first blocks.
pub struct Ctx<'a> {
    /// The whole lab.
    pub t: &'a Topology,
    /// `node1`, where the probe starts.
    pub n1: &'a Node,
    /// `node2`, where the probe goes.
    pub n2: &'a Node,
    /// node1's first block (`"10.244.0.0/26"`).
    pub block1: String,
    /// node2's first block.
    pub block2: String,
    /// Whether the lab uses VXLAN (else native routing).
    pub vxlan: bool,
}

impl<'a> Ctx<'a> {
    fn new(t: &'a Topology) -> Result<Self> {
        let (n1, n2) = (node(t, "node1")?, node(t, "node2")?);
        let block1 = n1.blocks.first().context("node1 has no block")?.to_string();
        let block2 = n2.blocks.first().context("node2 has no block")?.to_string();
        Ok(Ctx {
            t,
            n1,
            n2,
            block1,
            block2,
            vxlan: t.encap == Encap::Vxlan,
        })
    }
}

/// What a plan says about itself, for [`FaultInfo`].
pub struct Planned {
    /// Node(s) whose state the plan changes, comma-separated.
    pub node: String,
    /// One line: what exactly it changes.
    pub description: String,
}

/// A fault's plan: reads the state it changes from the kernel and pushes the changes to the
/// [`Plan`] in apply order.
pub type PlanFn = fn(&Ctx<'_>, &mut Plan) -> Result<Planned>;

/// One executable change of kernel state in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Step {
    /// `{tool} -netns NS -batch -` (`ip` or `bridge`).
    Batch {
        tool: String,
        netns: String,
        lines: Vec<String>,
    },
    /// `ip netns exec NS nft SCRIPT`.
    Nft { netns: String, script: String },
    /// Write `value` to `/proc/sys/{path}` inside NS.
    Sysctl {
        netns: String,
        path: String,
        value: String,
    },
    /// `iptables-nft-restore --noflush` of SCRIPT inside NS: rules as Calico writes them, through
    /// the nf_tables backend. With `drop_empty_table`, that table (`filter`) is deleted
    /// afterwards if nothing of it is left but empty built-in chains accepting by default:
    /// iptables-nft creates a table and its built-in chains on first use and never removes
    /// them, so an undo that only deletes its rules would leave them behind.
    Iptables {
        netns: String,
        script: String,
        drop_empty_table: Option<String>,
    },
    /// `ip netns exec NS ARGV...` (`ipset add|del`, `conntrack -D`): a change that another
    /// command reverts.
    Exec { netns: String, argv: Vec<String> },
    /// Fill NS's conntrack table to `nf_conntrack_max` with assured entries marked `mark`
    /// (see `faults::conntrack`); undone by `conntrack -D --mark`.
    ConntrackFill { netns: String, mark: u32 },
}

impl Step {
    /// Write `value` to `/proc/sys/{path}` in `netns`.
    pub fn sysctl(netns: &str, path: &str, value: &str) -> Step {
        Step::Sysctl {
            netns: netns.to_owned(),
            path: path.to_owned(),
            value: value.to_owned(),
        }
    }
}

/// A step and the step that reverts it.
struct Change {
    apply: Step,
    undo: Step,
}

/// The changes of one fault, built up in apply order.
#[derive(Default)]
pub struct Plan {
    changes: Vec<Change>,
}

impl Plan {
    /// A step and the step that reverts it.
    pub fn push(&mut self, apply: Step, undo: Step) {
        self.changes.push(Change { apply, undo });
    }

    /// `ip -batch` lines, and the lines that revert them.
    pub fn ip<A, U>(&mut self, netns: &str, apply: A, undo: U)
    where
        A: IntoIterator<Item = String>,
        U: IntoIterator<Item = String>,
    {
        let batch = |lines: Vec<String>| Step::Batch {
            tool: "ip".into(),
            netns: netns.to_owned(),
            lines,
        };
        let (apply, undo) = (apply.into_iter().collect(), undo.into_iter().collect());
        self.push(batch(apply), batch(undo));
    }

    /// A `bridge -batch` line, and the line that reverts it.
    pub fn bridge(&mut self, netns: &str, apply: String, undo: String) {
        let batch = |line: String| Step::Batch {
            tool: "bridge".into(),
            netns: netns.to_owned(),
            lines: vec![line],
        };
        self.push(batch(apply), batch(undo));
    }

    /// A table with one base chain on `hook` holding `rule`; undo deletes the table.
    pub fn nft_table(&mut self, netns: &str, table: &str, hook: &str, rule: &str) {
        let nft = |script: String| Step::Nft {
            netns: netns.to_owned(),
            script,
        };
        self.push(
            nft(format!(
                "create table ip {table}; add chain ip {table} {hook} {{ type filter hook {hook} \
                 priority filter; policy accept; }}; add rule ip {table} {hook} {rule}"
            )),
            nft(format!("delete table ip {table}")),
        );
    }

    /// Set a sysctl; undo restores its current value.
    pub fn sysctl(&mut self, netns: &str, path: &str, value: &str) -> Result<()> {
        let (file, ns) = (format!("/proc/sys/{path}"), netns.to_owned());
        let old = in_netns(netns, move || fs::read_to_string(&file))?
            .with_context(|| format!("read /proc/sys/{path} in `{ns}`"))?;
        self.push(
            Step::sysctl(netns, path, value),
            Step::sysctl(netns, path, old.trim()),
        );
        Ok(())
    }

    /// Restore a sysctl's current value on undo (apply rewrites it unchanged): for values that
    /// another step of the plan changes as a side effect (writing `ip_forward` sets every
    /// device's `forwarding`).
    pub fn keep_sysctl(&mut self, netns: &str, path: &str) -> Result<()> {
        let (file, ns) = (format!("/proc/sys/{path}"), netns.to_owned());
        let old = in_netns(netns, move || fs::read_to_string(&file))?
            .with_context(|| format!("read /proc/sys/{path} in `{ns}`"))?;
        let step = Step::sysctl(netns, path, old.trim());
        self.push(step.clone(), step);
        Ok(())
    }

    /// iptables rules (an `iptables-restore` script of `table`), and the script that removes
    /// them; when `table` does not exist yet, the undo also deletes it once it is empty again.
    pub fn iptables(
        &mut self,
        netns: &str,
        table: &str,
        apply: String,
        undo: String,
    ) -> Result<()> {
        let exists = exec_in(netns, &["nft", "list", "table", "ip", table])
            .context("run nft (is nftables installed?)")?
            .status
            .success();
        let step = |script: String, drop: bool| Step::Iptables {
            netns: netns.to_owned(),
            script,
            drop_empty_table: drop.then(|| table.to_owned()),
        };
        self.push(step(apply, false), step(undo, !exists));
        Ok(())
    }

    /// A command and the command that reverts it, in `netns`.
    pub fn exec(&mut self, netns: &str, apply: Vec<String>, undo: Vec<String>) {
        let step = |argv| Step::Exec {
            netns: netns.to_owned(),
            argv,
        };
        self.push(step(apply), step(undo));
    }

    /// Fill `netns`'s conntrack table with entries marked `mark`; undo deletes exactly them.
    pub fn conntrack_fill(&mut self, netns: &str, mark: u32) {
        self.push(
            Step::ConntrackFill {
                netns: netns.to_owned(),
                mark,
            },
            Step::Exec {
                netns: netns.to_owned(),
                argv: ["conntrack", "-D", "--mark", &format!("{mark:#x}")]
                    .map(str::to_owned)
                    .to_vec(),
            },
        );
    }

    /// A veth `name` (peer `name-peer`, both in `netns`), up, with an optional address.
    pub fn veth(&mut self, netns: &str, name: &str, addr: Option<String>) {
        let peer = format!("{name}-peer");
        let mut lines = vec![format!("link add {name} type veth peer name {peer}")];
        lines.extend(addr.map(|a| format!("addr add {a} dev {name}")));
        lines.extend([format!("link set {peer} up"), format!("link set {name} up")]);
        self.ip(netns, lines, [format!("link del {name}")]);
    }
}

/// An active fault as persisted: what it is, and its undo steps in execution order.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    info: FaultInfo,
    undo: Vec<Step>,
}

/// Break `topo`'s (running) lab with `fault`; refuses if that fault is already active or does
/// not apply to the lab's encapsulation. On error nothing stays changed.
pub fn break_lab(topo: &Topology, fault: Fault) -> Result<FaultInfo> {
    let prefix = &topo.prefix;
    let _lock = lock_prefix(prefix)?;
    ensure!(
        crate::status(prefix)?.is_some(),
        "lab `{prefix}` is not running (no state file in {STATE_DIR})"
    );
    ensure!(
        topo.local_node.is_none(),
        "faults read and change several nodes at once; lab `{prefix}` has only one node on \
         this machine (a VM lab guest)"
    );
    let mut records = load(prefix)?;
    ensure!(
        !records.iter().any(|r| r.info.fault == fault),
        "fault `{fault}` is already active on lab `{prefix}`; heal it first"
    );
    ensure!(
        !fault.needs_services() || topo.services.is_some(),
        "fault `{fault}` needs a lab with Services (`lab up --services`)"
    );
    ensure!(
        fault.applies_to(topo.encap),
        "fault `{fault}` {}; lab `{prefix}` uses encapsulation `{}`",
        if topo.encap == Encap::Ipip {
            "is not implemented for IPIP labs"
        } else {
            "needs a VXLAN lab"
        },
        topo.encap
    );
    let mut plan = Plan::default();
    let planned = Ctx::new(topo)
        .and_then(|ctx| (fault.entry().plan)(&ctx, &mut plan))
        .with_context(|| format!("plan fault `{fault}`"))?;
    let info = FaultInfo {
        fault,
        node: planned.node,
        description: planned.description,
        probe: fault.probe(topo)?,
        expected_drops: fault.expected_drops(),
    };
    let changes = plan.changes;
    let mut undo = Vec::with_capacity(changes.len());
    for change in changes {
        if let Err(e) = run_step(&change.apply) {
            let rollback = run_undo(undo.iter().rev().cloned().collect());
            return Err(e.context(match rollback {
                Ok(()) => format!("break `{fault}` failed (rolled back)"),
                Err((_, re)) => format!(
                    "break `{fault}` failed, and so did its rollback ({re:#}): run `cargo xtask \
                     lab down --prefix {prefix}`"
                ),
            }));
        }
        undo.push(change.undo);
    }
    undo.reverse();
    records.push(Record {
        info: info.clone(),
        undo,
    });
    save(prefix, &records)?;
    Ok(info)
}

/// Revert `fault` exactly (it must be active).
pub fn heal(topo: &Topology, fault: Fault) -> Result<()> {
    let _lock = lock_prefix(&topo.prefix)?;
    heal_locked(&topo.prefix, fault)
}

/// Revert every active fault, the most recent first.
pub fn heal_all(topo: &Topology) -> Result<()> {
    let _lock = lock_prefix(&topo.prefix)?;
    let mut first_error = None;
    for r in load(&topo.prefix)?.iter().rev() {
        if let Err(e) = heal_locked(&topo.prefix, r.info.fault) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The active faults of lab `topo_prefix`, in the order they were broken.
pub fn active(topo_prefix: &str) -> Result<Vec<Fault>> {
    Ok(load(topo_prefix)?.iter().map(|r| r.info.fault).collect())
}

/// The [`FaultInfo`]s of the active faults of lab `prefix`.
pub fn active_info(prefix: &str) -> Result<Vec<FaultInfo>> {
    Ok(load(prefix)?.into_iter().map(|r| r.info).collect())
}

fn heal_locked(prefix: &str, fault: Fault) -> Result<()> {
    let mut records = load(prefix)?;
    let Some(i) = records.iter().position(|r| r.info.fault == fault) else {
        bail!("fault `{fault}` is not active on lab `{prefix}`");
    };
    let mut record = records.remove(i);
    if let Err((failed, e)) = run_undo(std::mem::take(&mut record.undo)) {
        let n = failed.len();
        record.undo = failed;
        records.insert(i, record);
        save(prefix, &records)?;
        return Err(e.context(format!(
            "heal `{fault}`: {n} undo step(s) failed; they stay recorded for another heal"
        )));
    }
    save(prefix, &records)
}

/// Run every step (continuing past failures); on failure return the failed steps and the
/// first error.
fn run_undo(steps: Vec<Step>) -> Result<(), (Vec<Step>, anyhow::Error)> {
    let mut failed = Vec::new();
    let mut first = None;
    for s in steps {
        if let Err(e) = run_step(&s) {
            first.get_or_insert(e);
            failed.push(s);
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err((failed, e)),
    }
}

fn load(prefix: &str) -> Result<Vec<Record>> {
    let path = faults_path(prefix);
    match fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).context(format!("read {}", path.display())),
    }
}

fn save(prefix: &str, records: &[Record]) -> Result<()> {
    let path = faults_path(prefix);
    if records.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(e).context(format!("remove {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(records)?;
    fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))
}

fn run_step(step: &Step) -> Result<()> {
    match step {
        Step::Batch { tool, netns, lines } => run_batch(tool, netns, lines),
        Step::Nft { netns, script } => {
            let out =
                exec_in(netns, &["nft", script]).context("run nft (is nftables installed?)")?;
            ensure!(
                out.status.success(),
                "`nft {script}` in `{netns}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        }
        Step::Sysctl { netns, path, value } => {
            let (file, v) = (format!("/proc/sys/{path}"), value.clone());
            in_netns(netns, move || fs::write(&file, v))?
                .with_context(|| format!("write /proc/sys/{path} = {value} in `{netns}`"))
        }
        Step::Iptables {
            netns,
            script,
            drop_empty_table,
        } => {
            iptables_restore(netns, script)?;
            match drop_empty_table {
                Some(table) => drop_table_if_empty(netns, table),
                None => Ok(()),
            }
        }
        Step::Exec { netns, argv } => {
            let args: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = exec_in(netns, &args)?;
            ensure!(
                out.status.success(),
                "`{}` in `{netns}` failed: {}",
                argv.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(())
        }
        Step::ConntrackFill { netns, mark } => super::conntrack::fill(netns, *mark),
    }
}

/// `iptables-nft-restore --noflush` of `script` in `netns`.
fn iptables_restore(netns: &str, script: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "iptables-nft-restore", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run iptables-nft-restore (is iptables installed?)")?;
    child
        .stdin
        .take()
        .context("stdin of iptables-nft-restore")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "iptables-nft-restore in `{netns}` failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Deletes iptables-nft's table `table` in `netns` if all it holds is its built-in chains,
/// empty and accepting.
fn drop_table_if_empty(netns: &str, table: &str) -> Result<()> {
    let out = exec_in(netns, &["iptables-nft-save", "-t", table])?;
    ensure!(
        out.status.success(),
        "iptables-nft-save -t {table} in `{netns}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let empty = text.lines().all(|l| {
        let builtin = |c: &str| l.starts_with(&format!(":{c} ACCEPT "));
        l.starts_with('#')
            || l.starts_with('*')
            || l == "COMMIT"
            || ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"]
                .iter()
                .any(|c| builtin(c))
    });
    let exists = exec_in(netns, &["nft", "list", "table", "ip", table])?
        .status
        .success();
    if empty && exists {
        run_step(&Step::Nft {
            netns: netns.to_owned(),
            script: format!("delete table ip {table}"),
        })?;
    }
    Ok(())
}
