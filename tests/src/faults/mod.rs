//! Fault injection: break a running lab the way real Calico clusters break, and heal it.
//!
//! Design note: every fault is planned as a list of changes, each an `apply` step and the
//! `undo` step that reverts it exactly. Undo steps are computed from the *kernel's* state read
//! just before breaking (the route, neighbour, FDB entry, MTU or sysctl value as it is), not
//! from the plan, so `heal` puts back what was there even if the lab had been modified. Steps
//! are plain data (`ip`/`bridge` batch lines, an `nft` script, a sysctl write) executed in the
//! right namespace; they are persisted with the [`FaultInfo`] in
//! `/run/tracer-lab/{prefix}.faults.json`, so `heal` works from another process (a CLI, a
//! test, the demo). A failing `break_lab` undoes what it had applied before returning the
//! error; a failing `heal` keeps the undo steps that failed so it can be retried. Undo steps
//! are idempotent where the tools allow it (`replace`). Everything runs under the per-prefix
//! lock, so faults never race with `up`/`down` of the same lab.
//!
//! Each [`FaultInfo`] carries a [`Probe`] (the traffic that now fails, runnable with
//! [`Probe::run`]) and the kernel drops it leads to ([`ExpectedDrop`], as observed with the
//! `skb:kfree_skb` tracepoint on the project's 6.18 kernel). Notable findings:
//! - `missing-arp`: the VTEP is `nolearning` and Calico programs no all-zeros FDB entry, so
//!   the ARP broadcast for the remote VTEP never leaves node1 (`NO_TX_TARGET` in
//!   `vxlan_xmit`); the queued probe dies `NEIGH_FAILED` ~3 s later. Node2 needs no change.
//! - `pod-cidr-overlap`: routing pod-to-node traffic into the overlay towards node2's VTEP
//!   does *not* fail (node2 decapsulates it and accepts its own address), so the overlapping
//!   block is routed towards its own (never programmed) VTEP address, the first address of
//!   the node subnet, as Calico would for a block whose VTEP Felix does not know. A policy
//!   rule `from <pod cidr>` confines it to pod traffic, so node-to-node and the VXLAN outer
//!   packets keep working.
//! - there is no `dummy` link type on this kernel: second NICs are veth pairs whose peer
//!   stays in the same node namespace.

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::netns::{exec_in, in_netns, run_batch};
use crate::spec::Encap;
use crate::status::{faults_path, lock_prefix, STATE_DIR};
use crate::topology::{Node, Pod, Topology, Vtep};

/// nftables table of `underlay-blocks-vxlan`.
pub const NFT_TABLE_UNDERLAY: &str = "tracer_lab_fault";
/// nftables table of `policy-drop`.
pub const NFT_TABLE_POLICY: &str = "tracer_lab_fault_policy";
/// TCP port of the `policy-drop` probe.
pub const POLICY_PORT: u16 = 8080;
/// MTU given to the tunnel (vxlan) or uplink (none) by `mtu`.
pub const FAULT_MTU: u32 = 1000;
/// ICMP payload of the `mtu` probe (1228-byte packets, sent with DF).
pub const MTU_PROBE_SIZE: usize = 1200;
/// Routing table of `pod-cidr-overlap`.
pub const OVERLAP_TABLE: u32 = 244;
/// Priority of the `pod-cidr-overlap` policy rule.
pub const OVERLAP_RULE_PREF: u32 = 100;
/// Second NIC of `wrong-tunnel-source` (with peer `eth1-peer`, both in the node netns).
pub const SECOND_NIC: &str = "eth1";
/// The interface the `rp-filter` fault (none mode) points the reverse route at.
pub const RPF_NIC: &str = "rpf0";

/// One way of breaking the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The IP pool's vxlanMode/ipipMode are Never: no node has routes to remote blocks.
    EncapNever,
    /// Node1 lacks the route to node2's first block.
    MissingRoute,
    /// Node1 lacks the FDB entry for node2's VTEP MAC.
    MissingFdb,
    /// Node1 lacks the neighbour entry for node2's VTEP.
    MissingArp,
    /// Node2 drops incoming VXLAN (`udp dport 4789 drop`).
    UnderlayBlocksVxlan,
    /// A network policy on node2 drops traffic to pod n2p0.
    PolicyDrop,
    /// Strict reverse-path filtering on node2 with an asymmetric return route.
    RpFilter,
    /// The tunnel (or uplink) MTU is below the pods' MTU.
    Mtu,
    /// The pod CIDR overlaps the node network: pod-to-node traffic is captured by the overlay.
    PodCidrOverlap,
    /// Node1's FDB points at an address of node2's wrong interface (bad IP autodetection).
    WrongTunnelSource,
}

impl Fault {
    /// Every fault, in documentation order.
    pub const ALL: [Fault; 10] = [
        Fault::EncapNever,
        Fault::MissingRoute,
        Fault::MissingFdb,
        Fault::MissingArp,
        Fault::UnderlayBlocksVxlan,
        Fault::PolicyDrop,
        Fault::RpFilter,
        Fault::Mtu,
        Fault::PodCidrOverlap,
        Fault::WrongTunnelSource,
    ];

    /// Kebab-case name (`"encap-never"`), as in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Fault::EncapNever => "encap-never",
            Fault::MissingRoute => "missing-route",
            Fault::MissingFdb => "missing-fdb",
            Fault::MissingArp => "missing-arp",
            Fault::UnderlayBlocksVxlan => "underlay-blocks-vxlan",
            Fault::PolicyDrop => "policy-drop",
            Fault::RpFilter => "rp-filter",
            Fault::Mtu => "mtu",
            Fault::PodCidrOverlap => "pod-cidr-overlap",
            Fault::WrongTunnelSource => "wrong-tunnel-source",
        }
    }

    /// Whether the fault exists in a lab of this encapsulation (the VXLAN-only faults make
    /// no sense without a tunnel). None is planned for IPIP labs yet: their nodes only exist
    /// as VM guests (this machine's kernel has no `ipip`), where no one process sees both
    /// nodes, which every fault's plan reads.
    pub fn applies_to(self, encap: Encap) -> bool {
        match (self, encap) {
            (_, Encap::Ipip) => false,
            (
                Fault::MissingFdb
                | Fault::MissingArp
                | Fault::UnderlayBlocksVxlan
                | Fault::PodCidrOverlap
                | Fault::WrongTunnelSource,
                _,
            ) => encap == Encap::Vxlan,
            _ => true,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| {
                let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault `{s}` (valid: {})", names.join(", "))
            })
    }
}

/// Traffic that a fault makes fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Sending pod (`"n1p0"`).
    pub from_pod: String,
    /// Destination: a pod or node address of the lab.
    pub to: Ipv4Addr,
    /// `"icmp"`, `"tcp"` or `"udp"`.
    pub proto: String,
    /// Destination port (tcp/udp).
    pub port: Option<u16>,
    /// Payload size (ICMP `-s`, UDP datagram); `None` = small default.
    pub size: Option<usize>,
    /// Don't fragment (ICMP `-M do`, UDP `IP_PMTUDISC_DO`; TCP always sets DF).
    pub df: bool,
}

/// A kernel drop that a fault leads to (reason and function as `skb:kfree_skb` reports them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedDrop {
    /// Node whose network namespace frees the packet.
    pub node: String,
    /// `enum skb_drop_reason` name without `SKB_DROP_REASON_` (`"NEIGH_FAILED"`).
    pub reason: String,
    /// Kernel function of the drop location (`"neigh_invalidate"`).
    pub function: String,
    /// What is dropped: `"probe"` (the probe packet itself), `"outer"` (its VXLAN
    /// encapsulation) or `"arp"` (ARP requests of the neighbour resolution it triggers).
    pub packet: String,
    /// Only after neighbour resolution gives up (about 3 s after sending), not at once.
    pub delayed: bool,
}

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

/// One executable change of kernel state in one namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Step {
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
}

/// A step and the step that reverts it.
struct Change {
    apply: Step,
    undo: Step,
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
        fault.applies_to(topo.encap),
        "fault `{fault}` {}; lab `{prefix}` uses encapsulation `{}`",
        if topo.encap == Encap::Ipip {
            "is not implemented for IPIP labs"
        } else {
            "needs a VXLAN lab"
        },
        topo.encap
    );
    let (node, description, plan) =
        plan(topo, fault).with_context(|| format!("plan fault `{fault}`"))?;
    let info = FaultInfo {
        fault,
        node,
        description,
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
    }
}

// ---------------------------------------------------------------------------------------------
// Planning: read the current state, decide the changes.

impl Fault {
    /// The traffic this fault makes fail in `t` (n1p0 -> n2p0 ICMP unless said otherwise).
    pub fn probe(self, t: &Topology) -> Result<Probe> {
        let (p1, p2, n2) = (pod(t, "n1p0")?, pod(t, "n2p0")?, node(t, "node2")?);
        let mut probe = Probe {
            from_pod: p1.name.clone(),
            to: p2.ip,
            proto: "icmp".into(),
            port: None,
            size: None,
            df: false,
        };
        match self {
            Fault::PolicyDrop => (probe.proto, probe.port) = ("tcp".into(), Some(POLICY_PORT)),
            Fault::Mtu => (probe.size, probe.df) = (Some(MTU_PROBE_SIZE), true),
            Fault::PodCidrOverlap => probe.to = n2.ip,
            _ => {}
        }
        Ok(probe)
    }

    /// The kernel drops the probe leads to, as observed with `skb:kfree_skb` on 6.18 (the
    /// same in both encapsulations where the fault applies to both).
    pub fn expected_drops(self) -> Vec<ExpectedDrop> {
        const NEIGH: (&str, &str) = ("NEIGH_FAILED", "neigh_invalidate");
        const NO_TX: (&str, &str) = ("NO_TX_TARGET", "vxlan_xmit");
        const NFT: (&str, &str) = ("NETFILTER_DROP", "nft_do_chain");
        let drops: &[(&str, (&str, &str), &str, bool)] = match self {
            Fault::EncapNever | Fault::MissingRoute => &[("node1", NEIGH, "probe", true)],
            Fault::MissingFdb => &[("node1", NO_TX, "probe", false)],
            Fault::MissingArp | Fault::PodCidrOverlap => &[
                ("node1", NO_TX, "arp", false),
                ("node1", NEIGH, "probe", true),
            ],
            Fault::UnderlayBlocksVxlan => &[("node2", NFT, "outer", false)],
            Fault::PolicyDrop => &[("node2", NFT, "probe", false)],
            Fault::RpFilter => &[(
                "node2",
                ("IP_RPFILTER", "ip_rcv_finish_core"),
                "probe",
                false,
            )],
            Fault::Mtu => &[("node1", ("PKT_TOO_BIG", "ip_forward"), "probe", false)],
            Fault::WrongTunnelSource => &[("node1", NEIGH, "outer", true)],
        };
        drops
            .iter()
            .map(
                |&(node, (reason, function), packet, delayed)| ExpectedDrop {
                    node: node.into(),
                    reason: reason.into(),
                    function: function.into(),
                    packet: packet.into(),
                    delayed,
                },
            )
            .collect()
    }
}

/// The changes of one fault, built up in apply order.
#[derive(Default)]
struct Plan {
    changes: Vec<Change>,
}

impl Plan {
    fn push(&mut self, apply: Step, undo: Step) {
        self.changes.push(Change { apply, undo });
    }

    /// `ip -batch` lines, and the lines that revert them.
    fn ip<A, U>(&mut self, netns: &str, apply: A, undo: U)
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
    fn bridge(&mut self, netns: &str, apply: String, undo: String) {
        let batch = |line: String| Step::Batch {
            tool: "bridge".into(),
            netns: netns.to_owned(),
            lines: vec![line],
        };
        self.push(batch(apply), batch(undo));
    }

    /// A table with one base chain on `hook` holding `rule`; undo deletes the table.
    fn nft_table(&mut self, netns: &str, table: &str, hook: &str, rule: &str) {
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
    fn sysctl(&mut self, netns: &str, path: &str, value: &str) -> Result<()> {
        let (file, ns) = (format!("/proc/sys/{path}"), netns.to_owned());
        let old = in_netns(netns, move || fs::read_to_string(&file))?
            .with_context(|| format!("read /proc/sys/{path} in `{ns}`"))?;
        self.push(sysctl(netns, path, value), sysctl(netns, path, old.trim()));
        Ok(())
    }

    /// A veth `name` (peer `name-peer`, both in `netns`), up, with an optional address.
    fn veth(&mut self, netns: &str, name: &str, addr: Option<String>) {
        let peer = format!("{name}-peer");
        let mut lines = vec![format!("link add {name} type veth peer name {peer}")];
        lines.extend(addr.map(|a| format!("addr add {a} dev {name}")));
        lines.extend([format!("link set {peer} up"), format!("link set {name} up")]);
        self.ip(netns, lines, [format!("link del {name}")]);
    }
}

fn sysctl(netns: &str, path: &str, value: &str) -> Step {
    Step::Sysctl {
        netns: netns.to_owned(),
        path: path.to_owned(),
        value: value.to_owned(),
    }
}

/// Output of a read-only `ip`/`bridge` command inside `netns`.
fn show(tool: &str, netns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(["-netns", netns])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("run `{tool}`"))?;
    ensure!(
        out.status.success(),
        "`{tool} -netns {netns} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Main-table routes of `node` as `ip route` prints them (usable after `route replace`).
fn routes(node: &Node) -> Result<Vec<String>> {
    let text = show("ip", &node.netns, &["-o", "route", "show", "table", "main"])?;
    Ok(text
        .lines()
        .map(|l| l.trim().replace(" linkdown", ""))
        .collect())
}

/// The main-table route for exactly `prefix` on `node`.
fn route_of(node: &Node, prefix: &str) -> Result<String> {
    routes(node)?
        .into_iter()
        .find(|l| l.split_whitespace().next() == Some(prefix))
        .with_context(|| format!("{} has no route to {prefix} (another fault?)", node.name))
}

/// `{rest}` of the FDB entry `{mac} dev {dev} {rest}` on `node` (`dst 10.10.0.2 self permanent`).
fn fdb_entry(node: &Node, dev: &str, mac: &str) -> Result<String> {
    show("bridge", &node.netns, &["fdb", "show", "dev", dev])?
        .lines()
        .find_map(|l| l.trim().strip_prefix(mac))
        .map(|r| r.trim().to_owned())
        .with_context(|| format!("{} has no FDB entry for {mac}", node.name))
}

/// The word after `key` in `text`.
fn word_after(text: &str, key: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .map(|w| w[1].to_owned())
}

fn node<'a>(t: &'a Topology, name: &str) -> Result<&'a Node> {
    t.node(name)
        .with_context(|| format!("the lab has no {name} (faults need 2 nodes)"))
}

fn pod<'a>(t: &'a Topology, name: &str) -> Result<&'a Pod> {
    t.pod(name)
        .with_context(|| format!("the lab has no pod {name} (faults need a pod per node)"))
}

fn vtep(n: &Node) -> Result<&Vtep> {
    n.vtep.as_ref().context("no VTEP in none mode")
}

/// Read the state the fault changes and plan the changes; returns (nodes, description, plan).
fn plan(t: &Topology, fault: Fault) -> Result<(String, String, Plan)> {
    let (n1, n2) = (node(t, "node1")?, node(t, "node2")?);
    let vxlan = t.encap == Encap::Vxlan;
    let block1 = n1.blocks.first().context("node1 has no block")?.to_string();
    let block2 = n2.blocks.first().context("node2 has no block")?.to_string();
    let (name1, name2) = (n1.name.clone(), n2.name.clone());
    let mut p = Plan::default();
    let (nodes, description) = match fault {
        Fault::EncapNever => {
            let mut touched = Vec::new();
            for n in &t.nodes {
                let remote_block = |l: &String| {
                    let first = l.split_whitespace().next().unwrap_or_default();
                    let remote = t.nodes.iter().filter(|r| r.name != n.name);
                    remote
                        .flat_map(|r| &r.blocks)
                        .any(|b| b.to_string() == first)
                };
                let remote: Vec<String> = routes(n)?.into_iter().filter(remote_block).collect();
                if !remote.is_empty() {
                    let verb =
                        |v: &'static str| remote.iter().map(move |l| format!("route {v} {l}"));
                    p.ip(&n.netns, verb("del"), verb("replace"));
                    touched.push(n.name.as_str());
                }
            }
            ensure!(!touched.is_empty(), "no node has routes to remote blocks");
            let kind = if vxlan { "VTEP" } else { "native" };
            let gw = t.underlay.gateway;
            let description = format!(
                "removed the {kind} routes to remote blocks on {} (encapsulation Never, nothing \
                 programs them): cross-node traffic takes the default route via {gw}",
                touched.join(", ")
            );
            (touched.join(","), description)
        }
        Fault::MissingRoute => {
            let line = route_of(n1, &block2)?;
            p.ip(
                &n1.netns,
                [format!("route del {line}")],
                [format!("route replace {line}")],
            );
            (name1.clone(), format!("removed route {line} on {name1}"))
        }
        Fault::MissingFdb => {
            let (dev, mac) = (&vtep(n1)?.ifname, &vtep(n2)?.mac);
            let rest = fdb_entry(n1, dev, mac)?;
            let dst = rest
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            p.bridge(
                &n1.netns,
                format!("fdb del {mac} dev {dev} {dst} self"),
                format!("fdb replace {mac} dev {dev} {rest}"),
            );
            let what = format!("FDB entry {mac} dev {dev} {rest} (node2's VTEP)");
            (name1.clone(), format!("removed {what} on {name1}"))
        }
        Fault::MissingArp => {
            let (dev, v2) = (&vtep(n1)?.ifname, vtep(n2)?);
            let ip = v2.ip.to_string();
            let neigh = show("ip", &n1.netns, &["neigh", "show", "to", &ip, "dev", dev])?;
            let mac = word_after(&neigh, "lladdr")
                .with_context(|| format!("{name1} has no neighbour entry for {ip}"))?;
            p.ip(
                &n1.netns,
                [format!("neigh del {ip} dev {dev}")],
                [format!(
                    "neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
                )],
            );
            let description = format!(
                "removed the permanent neighbour {ip} lladdr {mac} dev {dev} (node2's VTEP) on \
                 {name1}; its ARP broadcasts have no FDB target (nolearning, no all-zeros entry)"
            );
            (name1.clone(), description)
        }
        Fault::UnderlayBlocksVxlan => {
            let rule = format!("udp dport {} drop", t.vxlan_port);
            p.nft_table(&n2.netns, NFT_TABLE_UNDERLAY, "input", &rule);
            let what = format!("table ip {NFT_TABLE_UNDERLAY}, input hook: `{rule}`");
            (name2.clone(), format!("nftables on {name2}: {what}"))
        }
        Fault::PolicyDrop => {
            let p2 = pod(t, "n2p0")?;
            let rule = format!("oifname \"{}\" ip daddr {} drop", p2.cali, p2.ip);
            p.nft_table(&n2.netns, NFT_TABLE_POLICY, "forward", &rule);
            let what = format!("table ip {NFT_TABLE_POLICY}, forward hook: `{rule}`");
            (name2.clone(), format!("nftables on {name2}: {what}"))
        }
        Fault::RpFilter => {
            let old = route_of(n2, &block1)?;
            let (rx_dev, new) = if vxlan {
                // CrossSubnet-like asymmetry: node1 encapsulates, node2 routes back natively.
                (
                    vtep(n2)?.ifname.as_str(),
                    format!("{block1} via {} dev {}", n1.ip, n2.uplink),
                )
            } else {
                // A second NIC on node2 that the return route points out of.
                p.veth(&n2.netns, RPF_NIC, None);
                (n2.uplink.as_str(), format!("{block1} dev {RPF_NIC}"))
            };
            p.ip(
                &n2.netns,
                [format!("route replace {new}")],
                [format!("route replace {old}")],
            );
            p.sysctl(&n2.netns, "net/ipv4/conf/all/rp_filter", "1")?;
            p.sysctl(&n2.netns, &format!("net/ipv4/conf/{rx_dev}/rp_filter"), "1")?;
            let description = format!(
                "on {name2}: rp_filter=1 (all, {rx_dev}) and route {old} replaced by {new}: \
                 packets from {block1} arrive on {rx_dev}, the reverse route leaves elsewhere"
            );
            (name2.clone(), description)
        }
        Fault::Mtu => {
            let dev = if vxlan { &vtep(n1)?.ifname } else { &n1.uplink };
            let link = show("ip", &n1.netns, &["-o", "link", "show", "dev", dev])?;
            let old = word_after(&link, "mtu").with_context(|| format!("no mtu: {link}"))?;
            // Pods cache a learned path MTU: flush it on break (no stale result from before)
            // and on heal, after the MTU is back (undo runs in reverse order).
            for pod in t.pods_on(&n1.name) {
                let flush = || sysctl(&pod.netns, "net/ipv4/route/flush", "1");
                p.push(flush(), flush());
            }
            p.ip(
                &n1.netns,
                [format!("link set dev {dev} mtu {FAULT_MTU}")],
                [format!("link set dev {dev} mtu {old}")],
            );
            let pod_mtu = pod(t, "n1p0")?.mtu;
            let what = format!("{dev} MTU {old} -> {FAULT_MTU} (pods keep {pod_mtu})");
            (name1.clone(), format!("on {name1}: {what}"))
        }
        Fault::PodCidrOverlap => {
            let (dev, subnet) = (&vtep(n1)?.ifname, t.underlay.subnet);
            let (tbl, nexthop) = (OVERLAP_TABLE, subnet.addr);
            let rule = format!("from {} lookup {tbl} pref {OVERLAP_RULE_PREF}", t.pod_cidr);
            let route = format!("{subnet} via {nexthop} dev {dev} onlink table {tbl}");
            p.ip(
                &n1.netns,
                [format!("rule add {rule}")],
                [format!("rule del {rule}")],
            );
            p.ip(
                &n1.netns,
                [format!("route add {route}")],
                [
                    format!("route del {route}"),
                    format!("neigh flush to {nexthop} dev {dev}"),
                ],
            );
            let description = format!(
                "on {name1}: rule {rule} + route {route}: an IPAM block overlapping the node \
                 network, routed into the overlay towards a VTEP nobody programmed; pod-to-node \
                 traffic is lost, pod-to-pod and node-to-node keep working"
            );
            (name1.clone(), description)
        }
        Fault::WrongTunnelSource => {
            let (dev, mac) = (&vtep(n1)?.ifname, &vtep(n2)?.mac);
            let rest = fdb_entry(n1, dev, mac)?;
            let wrong = Ipv4Addr::new(10, 20, 0, n2.ip.octets()[3]);
            p.veth(&n2.netns, SECOND_NIC, Some(format!("{wrong}/24")));
            p.bridge(
                &n1.netns,
                format!("fdb replace {mac} dev {dev} dst {wrong} self permanent"),
                format!("fdb replace {mac} dev {dev} {rest}"),
            );
            let description = format!(
                "added {SECOND_NIC} {wrong}/24 on {name2} and pointed {name1}'s FDB entry for \
                 {mac} at it (was {rest}): VXLAN packets go to the unreachable default gateway"
            );
            (format!("{name1},{name2}"), description)
        }
    };
    Ok((nodes, description, p))
}

mod probe;
