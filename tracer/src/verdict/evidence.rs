//! The evidence a verdict can draw on besides the trace itself: the live state of every node
//! (`crate::state`, by namespace key), the audit's findings over them (`crate::audit`), and
//! what changed in each node's firewall counters since the state was first read.
//!
//! Live, the capture hands in a [`StateSource`] and the state of a node whose packet just died
//! is read again (at most once a second per node), so a verdict sees the state at the time of
//! the failure and the firewall rule whose counter moved. On a recording the states written
//! when recording started are used as they are (no re-read is possible).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    audit::{self, Finding},
    state::{
        firewall::{Chain, Rule},
        NodeState,
    },
};

/// Reads a node's state again (live only).
pub trait StateSource: Send {
    /// The state of the node with namespace key `netns`, if it is one of the source's.
    fn read(&mut self, netns: u32) -> Option<NodeState>;
}

/// How often a node's state may be read again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Evidence {
    states: HashMap<u32, NodeState>,
    /// Each node's firewall as first read: the counters' starting point.
    first: HashMap<u32, NodeState>,
    findings: Vec<Finding>,
    source: Option<Box<dyn StateSource>>,
    refreshed: HashMap<u32, Instant>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence")
            .field("nodes", &self.states.len())
            .field("findings", &self.findings.len())
            .field("live", &self.source.is_some())
            .finish()
    }
}

/// A discarding rule whose counter moved since the state was first read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleHit<'a> {
    pub chain: &'a Chain,
    pub rule: &'a Rule,
    pub packets: u64,
}

impl Evidence {
    /// Evidence from nodes' states, with no way to read them again.
    #[cfg(test)]
    pub fn new(states: impl IntoIterator<Item = (u32, NodeState)>) -> Evidence {
        let mut e = Evidence::default();
        for (netns, s) in states {
            e.first.insert(netns, s.clone());
            e.states.insert(netns, s);
        }
        e.audit();
        e
    }

    /// Reads nodes' states again when their packets die.
    pub fn set_source(&mut self, source: Box<dyn StateSource>) {
        self.source = Some(source);
    }

    /// A node's state (a recording's state frame, or a live read).
    pub fn set(&mut self, netns: u32, state: NodeState) {
        self.first.entry(netns).or_insert_with(|| state.clone());
        self.states.insert(netns, state);
        self.audit();
    }

    fn audit(&mut self) {
        let mut all: Vec<NodeState> = self.states.values().cloned().collect();
        all.sort_by(|a, b| a.node.cmp(&b.node));
        self.findings = audit::audit(&all);
    }

    /// Reads node `netns` again if a source can and it was not read within the last second.
    pub fn refresh(&mut self, netns: u32) {
        let Some(src) = self.source.as_mut() else {
            return;
        };
        if self
            .refreshed
            .get(&netns)
            .is_some_and(|t| t.elapsed() < REFRESH_EVERY)
        {
            return;
        }
        self.refreshed.insert(netns, Instant::now());
        if let Some(s) = src.read(netns) {
            self.states.insert(netns, s);
            self.audit();
        }
    }

    /// A node's state as first read (at start, or the recording's).
    pub fn first_state(&self, netns: u32) -> Option<&NodeState> {
        self.first.get(&netns)
    }

    pub fn state(&self, netns: u32) -> Option<&NodeState> {
        self.states.get(&netns)
    }

    /// The state of the node called `name`.
    pub fn state_named(&self, name: &str) -> Option<&NodeState> {
        self.states.values().find(|s| s.node == name)
    }

    pub fn states(&self) -> impl Iterator<Item = &NodeState> {
        self.states.values()
    }

    /// The audit's findings that name node `name` anywhere.
    pub fn findings_about<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Finding> {
        self.findings
            .iter()
            .filter(move |f| f.nodes.iter().any(|n| n == name))
    }

    /// Discarding rules of node `netns` whose packet counter grew since the state was first
    /// read, most packets first.
    pub fn rule_hits(&self, netns: u32) -> Vec<RuleHit<'_>> {
        let (Some(now), Some(first)) = (self.states.get(&netns), self.first.get(&netns)) else {
            return Vec::new();
        };
        let mut hits = Vec::new();
        for chain in &now.firewall.chains {
            let before = first.firewall.chains.iter().find(|c| {
                c.source == chain.source
                    && c.family == chain.family
                    && c.table == chain.table
                    && c.name == chain.name
            });
            for rule in chain.rules.iter().filter(|r| r.verdict.discards()) {
                let Some(p) = rule.packets else { continue };
                let was = before
                    .and_then(|c| {
                        c.rules
                            .iter()
                            .find(|r| r.handle.is_some() && r.handle == rule.handle)
                            .or_else(|| {
                                c.rules
                                    .iter()
                                    .find(|r| r.handle.is_none() && r.text == rule.text)
                            })
                    })
                    .and_then(|r| r.packets)
                    .unwrap_or(0);
                if p > was {
                    hits.push(RuleHit {
                        chain,
                        rule,
                        packets: p - was,
                    });
                }
            }
        }
        hits.sort_by_key(|h| std::cmp::Reverse(h.packets));
        hits
    }
}
