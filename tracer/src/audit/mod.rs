//! The audit: what Felix programs on every node, checked for consistency, without traffic.
//!
//! Felix programs each node from the same datastore, so most broken clusters are nodes that
//! disagree with each other or with themselves: a route for another node's block that points
//! to a blackhole or to the wrong VTEP, a neighbour entry with a VTEP MAC that has since
//! changed, an FDB entry with an old underlay address, a VNI or port one end does not share,
//! MTUs that do not leave room for the encapsulation, a sysctl a node needs turned off, a
//! firewall rule dropping the tunnel. Pure functions of [`NodeState`]s (`crate::state`): the
//! same audit runs on live namespaces (`tracer check --netns ...`) and on the node states a
//! recording carries (`tracer check REC...`).
//!
//! - `node`: what one node must agree with itself about (its routes, neighbours, FDB,
//!   sysctls, MTUs, devices, firewall);
//! - `pairs`: what every ordered pair of nodes must agree about (A's route, neighbour and FDB
//!   entry for B against B's blocks, VTEP MAC and underlay address; shared tunnel parameters;
//!   MTUs; the reverse path).
//!
//! A finding names the node(s), the object, the value found, the value expected, and the fix
//! in Calico's terms. Nothing here assumes the lab's names: a VXLAN device is any `vxlan`
//! link, a node's blocks are its blackhole routes, its pods the `/32` routes through veths.

mod node;
mod pairs;
#[cfg(test)]
mod tests;

use std::fmt;

use serde::Serialize;

use crate::state::NodeState;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Packets of some pods cannot get through.
    Error,
    /// Likely to hurt some traffic (large packets, one direction, a policy).
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable machine name (`vtep-mac-mismatch`, `no-route-to-block`, ...).
    pub code: &'static str,
    /// The node the object is on, then the node it concerns (for a pair).
    pub nodes: Vec<String>,
    /// What is wrong, as the kernel would list it (`neighbour 10.244.4.0 dev vxlan.calico`).
    pub object: String,
    pub found: String,
    pub expected: String,
    /// The fix, in Calico's terms.
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: {}: found {}, expected {}\n  fix: {}",
            self.severity.as_str(),
            self.code,
            self.nodes.join(" -> "),
            self.object,
            self.found,
            self.expected,
            self.fix
        )
    }
}

/// Audits the nodes: each one alone, then every ordered pair.
pub fn audit(nodes: &[NodeState]) -> Vec<Finding> {
    let mut out = Vec::new();
    for n in nodes {
        node::check(n, &mut out);
    }
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            if i != j {
                pairs::check(a, b, nodes, i < j, &mut out);
            }
        }
    }
    out.sort_by_key(|f| f.severity);
    out
}

/// A finding about one node.
fn finding(
    severity: Severity,
    code: &'static str,
    nodes: &[&str],
    object: impl Into<String>,
    found: impl Into<String>,
    expected: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        code,
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        object: object.into(),
        found: found.into(),
        expected: expected.into(),
        fix: fix.into(),
    }
}
