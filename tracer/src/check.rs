//! `tracer check`: the audit of the nodes' state (`crate::audit`), with no traffic at all.
//!
//! Live, it reads the state of every node given with `--netns` (or of the current namespace)
//! inside that namespace; from recordings (`tracer check REC...`), it takes the states the
//! recorders wrote when they started, so the nodes of several machines are audited against
//! each other on any machine. Text: one line per node read, then the findings (errors first),
//! then a summary; `--output json`: one object with the nodes and the findings (`--state`
//! adds every node's full state). Exits 1 when the audit finds an error.

use std::{io::Write, path::PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::{
    audit::{self, Finding, Severity},
    netns::Netns,
    recording::{Frame, Reader},
    render::Output,
    state::{read::read_node, NodeState},
};

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Node to read live: a network namespace (name in /run/netns or a path); repeat for
    /// several. Without it and without recordings: the current namespace.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    /// Recordings (`tracer record --write`) whose node states to audit together.
    #[arg(value_name = "RECORDING")]
    pub recordings: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// With `--output json`: include every node's full state (routes, neighbours, FDB,
    /// sysctls, firewall).
    #[arg(long)]
    pub state: bool,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let mut states = Vec::new();
    for path in &args.recordings {
        states.extend(states_of_recording(path)?);
    }
    if !args.netns.is_empty() || args.recordings.is_empty() {
        states.extend(read_live(&args.netns)?);
    }
    let findings = audit::audit(&states);
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let report = Report {
                nodes: states.iter().map(NodeSummary::of).collect(),
                findings: &findings,
                states: args.state.then_some(&states),
            };
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        }
        Output::Text => print_text(&mut out, &states, &findings)?,
    }
    out.flush()?;
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    if errors > 0 {
        bail!(
            "the audit found {errors} error{} (above)",
            if errors == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

/// Reads each namespace's state inside it.
pub fn read_live(netns: &[String]) -> Result<Vec<NodeState>> {
    let namespaces = if netns.is_empty() {
        vec![Netns::current()?]
    } else {
        netns
            .iter()
            .map(|n| Netns::open(n))
            .collect::<Result<Vec<_>>>()?
    };
    namespaces
        .iter()
        .map(|ns| {
            let name = ns.name.clone();
            ns.run(move || Ok(read_node(&name)))
        })
        .collect()
}

/// The node states a recording carries (none in recordings made before they were written).
fn states_of_recording(path: &PathBuf) -> Result<Vec<NodeState>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("opening recording {}", path.display()))?;
    let mut r = Reader::new(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    loop {
        match r.next_frame() {
            Ok(Some(Frame::State { state, .. })) => out.push(*state),
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                // What was read before the damage is still evidence.
                eprintln!(
                    "tracer: {}: {e}; using the node states before it",
                    path.display()
                );
                break;
            }
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no node state in this recording (made by an older tracer, or cut before the \
             states were written)",
            path.display()
        );
    }
    Ok(out)
}

#[derive(Serialize)]
struct Report<'a> {
    nodes: Vec<NodeSummary<'a>>,
    findings: &'a [Finding],
    #[serde(skip_serializing_if = "Option::is_none")]
    states: Option<&'a Vec<NodeState>>,
}

/// What was read of a node, in numbers.
#[derive(Serialize)]
struct NodeSummary<'a> {
    node: &'a str,
    links: usize,
    routes: usize,
    neighbours: usize,
    fdb: usize,
    firewall_rules: usize,
    unreadable: &'a [String],
}

impl<'a> NodeSummary<'a> {
    fn of(s: &'a NodeState) -> NodeSummary<'a> {
        NodeSummary {
            node: &s.node,
            links: s.links.len(),
            routes: s.routes.len(),
            neighbours: s.neighbours.len(),
            fdb: s.fdb.len(),
            firewall_rules: s.firewall.chains.iter().map(|c| c.rules.len()).sum(),
            unreadable: &s.unreadable,
        }
    }
}

fn print_text(out: &mut impl Write, states: &[NodeState], findings: &[Finding]) -> Result<()> {
    for s in states {
        let n = NodeSummary::of(s);
        let tunnels: Vec<String> = s
            .vteps()
            .map(|l| {
                let v = l.vxlan.clone().unwrap_or_default();
                format!(
                    "{} (vxlan vni {} port {} mtu {})",
                    l.name,
                    v.vni.map_or("-".into(), |x| x.to_string()),
                    v.port.map_or("-".into(), |x| x.to_string()),
                    l.mtu
                )
            })
            .chain(
                s.ipip_devs()
                    .map(|l| format!("{} (ipip mtu {})", l.name, l.mtu)),
            )
            .collect();
        writeln!(
            out,
            "{}: {} links, {} routes, {} neighbours, {} fdb entries, {} firewall rules; \
             blocks {}; tunnels {}",
            n.node,
            n.links,
            n.routes,
            n.neighbours,
            n.fdb,
            n.firewall_rules,
            list(s.blocks().iter().map(|b| b.to_string())),
            list(tunnels.into_iter()),
        )?;
        for u in &s.unreadable {
            writeln!(out, "  not read: {u}")?;
        }
    }
    for f in findings {
        writeln!(out, "{f}")?;
    }
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    writeln!(
        out,
        "audit of {} node{}: {errors} error{}, {} warning{}",
        states.len(),
        if states.len() == 1 { "" } else { "s" },
        if errors == 1 { "" } else { "s" },
        findings.len() - errors,
        if findings.len() - errors == 1 {
            ""
        } else {
            "s"
        },
    )?;
    Ok(())
}

fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
