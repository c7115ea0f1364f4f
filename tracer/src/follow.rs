//! Pods that come and go while a capture runs: every traced namespace has a netlink socket
//! subscribed to its link changes; a pod veth (`cali*`) that appears is attached within one
//! drain cycle (50 ms), and one that disappears is released (its links closed). Each change is
//! handed on as a [`LinkChange`] (the pipeline learns the interface's name and role; a
//! recording writes it in the stream, so a replay or a merge knows it too).
//!
//! New pod veths are attached whatever the filter (a new pod's address is not known yet when
//! its veth appears); a kernel whose events overflow the socket's buffer gets its links listed
//! again and reconciled.

use anyhow::Result;

use crate::{
    attach::AttachedNode,
    discover::AttachTarget,
    model::LinkChange,
    netlink::{dump_links, Link, LinkEvent, LinkMonitor},
    netns::Netns,
    topology::{IfaceKind, Link as TopoLink},
};

/// The link monitors of every traced namespace.
pub struct Follower {
    /// By node; `None` where the subscription failed (warned once at start).
    monitors: Vec<Option<LinkMonitor>>,
}

impl Follower {
    /// Subscribes in every namespace.
    pub fn start(namespaces: &[Netns]) -> Follower {
        let monitors = namespaces
            .iter()
            .map(|ns| match ns.run(|| Ok(LinkMonitor::open()?)) {
                Ok(m) => Some(m),
                Err(e) => {
                    log::warn!(
                        "{}: cannot follow link changes ({e:#}): pods created from now on are \
                         not traced",
                        ns.name
                    );
                    None
                }
            })
            .collect();
        Follower { monitors }
    }

    /// Attaches to the pod veths that appeared and releases those that went since the last
    /// call; returns the changes by node index.
    pub fn poll(
        &self,
        nodes: &mut [AttachedNode],
        namespaces: &[Netns],
    ) -> Vec<(usize, LinkChange)> {
        let mut out = Vec::new();
        for (i, (node, ns)) in nodes.iter_mut().zip(namespaces).enumerate() {
            let Some(monitor) = &self.monitors[i] else {
                continue;
            };
            let events = match monitor.poll() {
                Ok(e) => e,
                Err(e) => {
                    log::warn!("{}: reading link changes: {e}", ns.name);
                    continue;
                }
            };
            for ev in events {
                match ev {
                    LinkEvent::New(link) => out.extend(appeared(node, ns, &link).map(|c| (i, c))),
                    LinkEvent::Del(link) => out.extend(gone(node, link.ifindex).map(|c| (i, c))),
                    LinkEvent::Overrun => {
                        out.extend(reconcile(node, ns).into_iter().map(|c| (i, c)))
                    }
                }
            }
        }
        out
    }
}

fn is_pod_veth(link: &Link) -> bool {
    IfaceKind::from_name(&link.name) == IfaceKind::PodVeth
}

/// A link appeared (or changed): attach if it is a new pod veth.
fn appeared(node: &mut AttachedNode, ns: &Netns, link: &Link) -> Option<LinkChange> {
    if !is_pod_veth(link) || node.traces(link.ifindex) {
        return None;
    }
    let target = AttachTarget {
        ifindex: link.ifindex,
        name: link.name.clone(),
        kind: IfaceKind::PodVeth,
        l2: link.has_ethernet_header(),
    };
    let iface = target.iface();
    match node.attach_more(ns, target) {
        Ok(()) => {
            let link = TopoLink {
                ifindex: link.ifindex,
                name: link.name.clone(),
                mtu: link.mtu,
            };
            node.plan.node.links.retain(|l| l.ifindex != link.ifindex);
            node.plan.node.links.push(link.clone());
            Some(LinkChange::Added { iface, link })
        }
        Err(e) => {
            // Most often the pod was deleted again before we got to it.
            log::debug!("{}: {} not attached: {e:#}", ns.name, link.name);
            None
        }
    }
}

/// A link is gone: release it if it was traced.
fn gone(node: &mut AttachedNode, ifindex: u32) -> Option<LinkChange> {
    node.release(ifindex).map(|t| LinkChange::Removed {
        ifindex,
        name: t.name,
    })
}

/// Events were lost: list the links and bring the traced pod veths in line with them.
fn reconcile(node: &mut AttachedNode, ns: &Netns) -> Vec<LinkChange> {
    let links: Result<Vec<Link>> = ns.run(|| Ok(dump_links()?));
    let Ok(links) = links else {
        log::warn!("{}: cannot list links after lost link events", ns.name);
        return Vec::new();
    };
    let mut out = Vec::new();
    let stale: Vec<u32> = node
        .plan
        .targets
        .iter()
        .filter(|t| t.kind == IfaceKind::PodVeth)
        .filter(|t| !links.iter().any(|l| l.ifindex == t.ifindex))
        .map(|t| t.ifindex)
        .collect();
    out.extend(stale.into_iter().filter_map(|i| gone(node, i)));
    out.extend(links.iter().filter_map(|l| appeared(node, ns, l)));
    out
}
