//! Verdicts from a drop and the node's state: the same kernel reason means different things
//! depending on where it happened (inside a pod, after decapsulation, on the uplink) and on what
//! the node's routes, devices, sysctls and firewall say. Each rule here returns `None` when the
//! state does not support it, and the reason-only rules of `super` decide instead.
//!
//! - inside a pod: its gateway's ARP unanswered (host veth down, proxy ARP off, forwarding
//!   off), no route in the pod;
//! - `OTHERHOST` after decapsulation (the inner frame carried another VTEP MAC than the
//!   receiver's) or on the uplink;
//! - `VXLAN_VNI_NOT_FOUND` (the VNI of the packet against the receiver's device);
//! - `NO_SOCKET` of UDP to a VXLAN port the receiver does not use;
//! - route decisions: a blackhole/unreachable/prohibit route or rule (a remote node's block:
//!   stale IPAM affinity; the node's own block: no such pod), a route through a device that is
//!   down, forwarding off;
//! - `NETFILTER_DROP` named down to the rule (the rule whose counter moved), with the Calico
//!   policy or profile it belongs to, or conntrack's INVALID state.

use std::net::Ipv4Addr;

use super::{evidence::Evidence, v};
use crate::{
    model::{DropPoint, Trace, Verdict},
    state::{firewall::Chain, NodeState, Resolution, RouteEntry, TunnelKind},
    topology::{IfaceKind, Node, Topology},
};

/// A state-backed verdict for a drop, if the state explains it.
pub fn judge(trace: &Trace, d: &DropPoint, topo: &Topology, ev: &Evidence) -> Option<Verdict> {
    if let Some(pod) = topo.pod(d.netns) {
        return inside_pod(trace, d, pod, ev);
    }
    let st = ev.state(d.netns)?;
    let at = format!(
        "{} dropped it on {} ({} in {})",
        d.node, d.ifname, d.reason, d.function
    );
    match d.reason.as_str() {
        "OTHERHOST" => Some(otherhost(trace, d, st, ev, &at)),
        "VXLAN_VNI_NOT_FOUND" => vni(trace, d, st, &at),
        "NETFILTER_DROP" => netfilter(trace, d, st, ev, &at),
        "NO_SOCKET" => vxlan_port(trace, d, st, ev, &at),
        _ => route_decision(trace, d, st, topo, ev, &at),
    }
}

/// The node state of a pod's node.
fn node_of<'a>(pod: &Node, ev: &'a Evidence) -> Option<&'a NodeState> {
    ev.state_named(&pod.pod_of.as_ref()?.node)
}

fn inside_pod(trace: &Trace, d: &DropPoint, pod: &Node, ev: &Evidence) -> Option<Verdict> {
    let of = pod.pod_of.as_ref()?;
    let at = format!(
        "the packet died inside pod namespace {} on {} ({} in {})",
        pod.name, d.ifname, d.reason, d.function
    );
    let st = node_of(pod, ev);
    let veth = st.and_then(|s| s.links.iter().find(|l| l.name == of.veth));
    match d.reason.as_str() {
        r if r.starts_with("NEIGH_") => {
            let mut evidence = vec![format!(
                "the pod's next hop (its gateway, 169.254.1.1 in Calico) did not answer ARP on {}",
                d.ifname
            )];
            if let Some(l) = veth.filter(|l| !l.up || l.oper == "down") {
                evidence.push(format!("{}: link {} is {} ({})", of.node, l.name, l.oper, if l.up { "admin up" } else { "admin down" }));
                return Some(v(
                    "pod-veth-down",
                    format!(
                        "{at}: the host side of the pod's veth, {} on {}, is down, so nothing answers \
                         the pod's ARP and nothing reaches the pod. Fix: `ip link set dev {} up` on \
                         {}; Felix brings workload interfaces up when the CNI plugin creates them, so \
                         check calico-node's log for this endpoint.",
                        l.name, of.node, l.name, of.node
                    ),
                )
                .with_evidence(evidence));
            }
            let sysctl = |k: String| st.and_then(|s| s.sysctl(&k).map(str::to_string));
            if let Some(p) = sysctl(format!("net.ipv4.conf.{}.proxy_arp", of.veth)).filter(|p| p != "1") {
                evidence.push(format!("{}: net.ipv4.conf.{}.proxy_arp = {p}", of.node, of.veth));
                return Some(v(
                    "proxy-arp-off",
                    format!(
                        "{at}: Calico answers the pod's ARP for its gateway with proxy ARP on the host \
                         side of its veth, and proxy_arp is {p} on {} ({}). Fix: `sysctl -w \
                         net.ipv4.conf.{}.proxy_arp=1` on {}, and find what reset it (Felix sets it for \
                         every workload interface; a host tuning agent or sysctl.d file may undo it).",
                        of.veth, of.node, of.veth, of.node
                    ),
                )
                .with_evidence(evidence));
            }
            let fwd = sysctl("net.ipv4.ip_forward".into());
            let dev_fwd = sysctl(format!("net.ipv4.conf.{}.forwarding", of.veth));
            if let Some(f) = [fwd, dev_fwd].into_iter().flatten().find(|f| f != "1") {
                evidence.push(format!("{}: forwarding is {f} (net.ipv4.ip_forward / conf.{}.forwarding)", of.node, of.veth));
                return Some(v(
                    "ip-forward-off",
                    format!(
                        "{at}: {} does not forward IPv4 (forwarding {f}), and proxy ARP answers only \
                         on interfaces that forward, so the pod cannot even resolve its gateway. Fix: \
                         `sysctl -w net.ipv4.ip_forward=1` on {}, remove what disabled it (a sysctl.d \
                         file, a tuning agent), and restart calico-node.",
                        of.node, of.node
                    ),
                )
                .with_evidence(evidence));
            }
            None
        }
        "IP_OUTNOROUTES" | "IP_INNOROUTES" => Some(v(
            "pod-no-route",
            format!(
                "{at}: the pod has no route to {} (Calico's CNI plugin gives every pod `default via \
                 169.254.1.1 dev eth0`). Fix: check the pod's routes (`ip route` in the pod) and the \
                 CNI configuration that created it; recreate the pod.",
                trace.packet.dst
            ),
        )),
        _ => None,
    }
}

/// The trace's hop where the packet left a node into a VXLAN tunnel: (node, hop index).
fn tunnel_egress(trace: &Trace) -> Option<&str> {
    trace
        .hops
        .iter()
        .rev()
        .find(|h| h.kind == Some(IfaceKind::Vxlan) && h.dir == crate::model::Direction::Egress)
        .map(|h| &*h.node)
}

fn otherhost(trace: &Trace, d: &DropPoint, st: &NodeState, ev: &Evidence, at: &str) -> Verdict {
    let dev = st.link(d.ifindex);
    let Some(dev) = dev.filter(|l| st.tunnel_kind(l.ifindex) == Some(TunnelKind::Vxlan)) else {
        let mac = dev
            .and_then(|l| l.mac)
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        return v(
            "wrong-destination-mac",
            format!(
                "{at}: the frame was addressed to another MAC than {}'s{mac}: the sender (or a \
                 router on the underlay) used a stale ARP entry for this node, or the frame was \
                 flooded to it. Fix: check the sender's neighbour entry for this node (`ip neigh`) \
                 and the underlay's switching.",
                d.ifname
            ),
        );
    };
    let my_mac = dev.mac;
    let my_vtep: Option<Ipv4Addr> = st.addrs_of(dev.ifindex).next();
    let mut evidence = vec![format!(
        "{}: {} has MAC {} and address {}",
        d.node,
        dev.name,
        my_mac.map_or("-".into(), |m| m.to_string()),
        my_vtep.map_or("-".into(), |a| a.to_string())
    )];
    // What the sender believes the receiver's VTEP MAC is.
    let sender = tunnel_egress(trace).and_then(|n| ev.state_named(n));
    let mut fix_at = "the sending node".to_string();
    if let (Some(s), Some(vtep)) = (sender, my_vtep) {
        fix_at = s.node.clone();
        for t in s.vteps() {
            if let Some(n) = s.neighbour(t.ifindex, vtep) {
                evidence.push(format!(
                    "{}: neighbour {vtep} dev {} lladdr {} ({})",
                    s.node,
                    t.name,
                    n.lladdr.map_or("-".into(), |m| m.to_string()),
                    n.state
                ));
            }
        }
    }
    v(
        "vtep-mac-mismatch",
        format!(
            "{at}: after decapsulation the inner frame was addressed to another MAC than {}'s own \
             ({}), so {} is not its destination. The sender's permanent neighbour entry for this \
             VTEP holds an old MAC: {} changed its VTEP MAC (vxlan.calico re-created) and {fix_at} \
             kept the old one. Fix: make the Node resource's VXLANTunnelMACAddr of {} match `ip link \
             show {}` there, then restart calico-node on {fix_at} (or `ip neigh replace <VTEP> lladdr \
             <MAC> dev vxlan.calico nud permanent`).",
            dev.name,
            my_mac.map_or("-".into(), |m| m.to_string()),
            d.node,
            d.node,
            d.node,
            dev.name
        ),
    )
    .with_evidence(evidence)
}

fn packet_vni(trace: &Trace, d: &DropPoint) -> Option<(u32, u16)> {
    d.encap
        .or_else(|| trace.hops.iter().rev().find_map(|h| h.encap))
        .map(|e| (e.vni, e.outer_dport))
}

fn vni(trace: &Trace, d: &DropPoint, st: &NodeState, at: &str) -> Option<Verdict> {
    let (vni, port) = packet_vni(trace, d)?;
    let devs: Vec<String> = st
        .vteps()
        .map(|l| {
            let x = l.vxlan.clone().unwrap_or_default();
            format!(
                "{} vni {} port {}",
                l.name,
                x.vni.map_or("-".into(), |v| v.to_string()),
                x.port.map_or("-".into(), |p| p.to_string())
            )
        })
        .collect();
    Some(
        v(
            "vni-mismatch",
            format!(
                "{at}: the packet carries VNI {vni} (UDP port {port}) and no VXLAN device of {} has \
                 it ({}). Every node must use the same VNI. Fix: set one vxlanVNI for all nodes \
                 (FelixConfiguration; Calico's default is 4096) and let Felix recreate vxlan.calico.",
                d.node,
                if devs.is_empty() { "none".into() } else { devs.join(", ") }
            ),
        )
        .with_evidence(vec![format!("packet VNI {vni}, port {port}"), format!("{}: {}", d.node, devs.join(", "))]),
    )
}

fn vxlan_port(
    trace: &Trace,
    d: &DropPoint,
    st: &NodeState,
    ev: &Evidence,
    at: &str,
) -> Option<Verdict> {
    let p = &trace.packet;
    if p.proto != 17 {
        return None;
    }
    // The destination port is VXLAN if the packet is a tunnel's, or a traced node sends VXLAN
    // there.
    let port = packet_vni(trace, d).map(|(_, port)| port).or_else(|| {
        ev.states()
            .flat_map(|s| s.vteps())
            .filter_map(|l| l.vxlan.as_ref()?.port)
            .find(|port| *port == p.dport)
    })?;
    let mine: Vec<u16> = st.vteps().filter_map(|l| l.vxlan.as_ref()?.port).collect();
    if mine.contains(&port) {
        return None;
    }
    Some(
        v(
            "vxlan-port-mismatch",
            format!(
                "{at}: the VXLAN packet was sent to UDP port {port}, but {}'s VXLAN device listens \
                 on {}: nothing receives it there. Every node must use the same port. Fix: set one \
                 vxlanPort for all nodes (FelixConfiguration; Calico's default is 4789) and let \
                 Felix recreate vxlan.calico.",
                d.node,
                if mine.is_empty() { "no port (no VXLAN device)".into() } else { format!("{mine:?}") }
            ),
        )
        .with_evidence(vec![format!("packet to UDP port {port}; {} listens on {mine:?}", d.node)]),
    )
}

/// Whether a route entry is an IPAM block of another node (its blackhole there).
fn owner_of_block<'a>(r: &RouteEntry, ev: &'a Evidence, me: &str) -> Option<&'a NodeState> {
    ev.states().find(|s| {
        s.node != me
            && s.blocks()
                .iter()
                .any(|b| r.dst.contains(b.addr) || b.contains(r.dst.addr))
    })
}

fn route_decision(
    trace: &Trace,
    d: &DropPoint,
    st: &NodeState,
    topo: &Topology,
    ev: &Evidence,
    at: &str,
) -> Option<Verdict> {
    let dst = trace.packet.dst;
    let routing_drop = d.function.starts_with("ip_error")
        || d.function.starts_with("dst_discard")
        || d.function.starts_with("ip_forward")
        || matches!(
            d.reason.as_str(),
            "IP_INNOROUTES" | "IP_OUTNOROUTES" | "IP_INADDRERRORS" | "BLACKHOLE"
        );
    let veth_drop = d.function.starts_with("__dev_forward_skb")
        || d.function.starts_with("veth_xmit")
        || d.reason == "DEV_READY";
    if !routing_drop && !veth_drop {
        return None;
    }
    // Forwarding off: nothing is routed through the node.
    if !st.owns(dst) {
        if let Some(f) = st.sysctl("net.ipv4.ip_forward").filter(|f| *f != "1") {
            return Some(
                v(
                    "ip-forward-off",
                    format!(
                        "{at}: {} does not forward IPv4 (net.ipv4.ip_forward = {f}), so the packet for \
                         {dst} could not be routed on. Fix: `sysctl -w net.ipv4.ip_forward=1` on {}, \
                         remove what disabled it, and restart calico-node.",
                        d.node, d.node
                    ),
                )
                .with_evidence(vec![format!("{}: net.ipv4.ip_forward = {f}", d.node)]),
            );
        }
    }
    match st.resolve(dst) {
        Resolution::Rule(r) => Some(
            v(
                "blackhole-route",
                format!(
                    "{at}: policy routing rule {} ({}) on {} discards traffic to {dst}. Fix: remove the \
                     rule (`ip rule del priority {}`) and find what added it.",
                    r.priority, r.action, d.node, r.priority
                ),
            )
            .with_evidence(vec![format!("{}: rule priority {} {}", d.node, r.priority, r.action)]),
        ),
        Resolution::Route(r) if r.kind.discards() => {
            let evidence = vec![format!("{}: route `{r}`", d.node)];
            if let Some(owner) = owner_of_block(r, ev, &st.node) {
                return Some(
                    v(
                        "blackhole-route",
                        format!(
                            "{at}: {} has `{r}`, a {} route that covers {dst}, an address of {}'s IPAM \
                             block: {} still holds an affinity for that block (stale, e.g. after the \
                             block moved to {}). Fix: `calicoctl ipam check`, then release {}'s stale \
                             block affinity so that Felix removes the route and installs one toward {}.",
                            d.node,
                            r.kind.as_str(),
                            owner.node,
                            d.node,
                            owner.node,
                            d.node,
                            owner.node
                        ),
                    )
                    .with_evidence(evidence),
                );
            }
            if st.blocks().contains(&r.dst) {
                // The pod's host route is gone: was there a pod, and is its veth down?
                if let Some(v) = pod_gone(dst, d, st, topo, ev, at) {
                    return Some(v);
                }
                return Some(
                    v(
                        "no-such-pod",
                        format!(
                            "{at}: {dst} is in {}'s own IPAM block {} but no pod on {} has it, so the \
                             block's blackhole route drops it. The pod was deleted or moved, and the \
                             sender uses a stale address (DNS, a Service endpoint, a cached \
                             connection). Fix: find who still sends to {dst}.",
                            d.node, r.dst, d.node
                        ),
                    )
                    .with_evidence(evidence),
                );
            }
            Some(
                v(
                    "blackhole-route",
                    format!(
                        "{at}: {} has `{r}`, which discards traffic to {dst}. Fix: remove the route (`ip \
                         route del {}`) if nothing should discard this traffic, and find what installed \
                         it (proto {}).",
                        d.node, r.dst, r.proto
                    ),
                )
                .with_evidence(evidence),
            )
        }
        Resolution::Route(r) => {
            let dev = r.oif.and_then(|i| st.link(i))?;
            if dev.up && dev.oper != "down" {
                return None;
            }
            let name = if dev.kind == "veth" && dev.name.starts_with("cali") {
                "pod-veth-down"
            } else {
                "link-down"
            };
            Some(
                v(
                    name,
                    format!(
                        "{at}: the route for {dst} goes through {} (`{r}`), which is down ({}), so the \
                         packet cannot leave. Fix: `ip link set dev {} up` on {}{}.",
                        dev.name,
                        if dev.up { dev.oper.clone() } else { "admin down".into() },
                        dev.name,
                        d.node,
                        if name == "pod-veth-down" {
                            "; Felix brings workload interfaces up, so check calico-node's log for this endpoint"
                        } else {
                            ""
                        }
                    ),
                )
                .with_evidence(vec![format!("{}: link {} {} ({})", d.node, dev.name, dev.oper, if dev.up { "admin up" } else { "admin down" })]),
            )
        }
        Resolution::Nothing => None,
    }
}

/// The destination had a pod on this node (a host route at start, or a traced pod's address)
/// whose route is gone: its veth went down (the kernel removes the routes of a device that
/// goes down), or Felix removed the route.
fn pod_gone(
    dst: Ipv4Addr,
    d: &DropPoint,
    st: &NodeState,
    topo: &Topology,
    ev: &Evidence,
    at: &str,
) -> Option<Verdict> {
    let (veth, how) = ev
        .first_state(d.netns)
        .and_then(|f| {
            f.pod_routes()
                .find(|r| r.dst.contains(dst))
                .map(|r| r.dev.clone())
        })
        .map(|veth| {
            let how = format!("{dst} was routed to {veth} when the tracer started");
            (veth, how)
        })
        .or_else(|| {
            topo.pods
                .iter()
                .filter(|p| p.addrs.contains(&dst))
                .find_map(|p| {
                    let veth = p.pod_of.as_ref()?.veth.clone();
                    let how = format!("{dst} is the address of pod namespace {} on {veth}", p.name);
                    Some((veth, how))
                })
        })?;
    let link = st.links.iter().find(|l| l.name == veth);
    let mut evidence = vec![format!("{}: {how}; no route for it now", d.node)];
    match link {
        Some(l) if !l.up || l.oper == "down" => {
            evidence.push(format!(
                "{}: link {} is {} ({})",
                d.node,
                l.name,
                l.oper,
                if l.up { "admin up" } else { "admin down" }
            ));
            Some(
                v(
                    "pod-veth-down",
                    format!(
                        "{at}: the pod {dst} hangs on {veth}, which is down, so the kernel removed its \
                         route and the block's blackhole caught the packet. Fix: `ip link set dev \
                         {veth} up` on {}; Felix brings workload interfaces up, so check calico-node's \
                         log for this endpoint.",
                        d.node
                    ),
                )
                .with_evidence(evidence),
            )
        }
        Some(_) => Some(
            v(
                "no-pod-route",
                format!(
                    "{at}: the pod {dst} hangs on {veth}, which is up, but its host route (`{dst} dev \
                     {veth} scope link`) is gone, so the block's blackhole caught the packet. Felix \
                     programs this route for every local workload. Fix: check calico-node's log on \
                     {} (the workload endpoint of this pod); restarting calico-node reprograms it.",
                    d.node
                ),
            )
            .with_evidence(evidence),
        ),
        None => None,
    }
}

/// What Calico's chain name says about who dropped.
fn calico_owner(chain: &Chain) -> Option<String> {
    let n = chain.name.as_str();
    let (what, rest) = [
        ("cali-pi-", "ingress rules of network policy"),
        ("cali-po-", "egress rules of network policy"),
        ("cali-pri-", "ingress rules of profile"),
        ("cali-pro-", "egress rules of profile"),
        ("cali-tw-", "the ingress of workload interface"),
        ("cali-fw-", "the egress of workload interface"),
    ]
    .into_iter()
    .find_map(|(p, what)| n.strip_prefix(p).map(|r| (what, r)))?;
    let name = if let Some(hashed) = rest.strip_prefix('_') {
        format!(
            "{rest} (Felix's hash of a long name: `iptables-save | grep {hashed}` shows its rules)"
        )
    } else {
        rest.to_string()
    };
    Some(format!("{what} {name}"))
}

fn netfilter(
    trace: &Trace,
    d: &DropPoint,
    st: &NodeState,
    ev: &Evidence,
    at: &str,
) -> Option<Verdict> {
    let hits = ev.rule_hits(d.netns);
    let hit = hits.first()?;
    let (c, r) = (hit.chain, hit.rule);
    let rule_id = r.handle.map_or(format!("rule #{}", r.position), |h| {
        format!("rule handle {h}")
    });
    let comment = r
        .comment
        .as_deref()
        .map(|c| format!(" (comment \"{c}\")"))
        .unwrap_or_default();
    let named = format!("{} {rule_id}: `{}`{comment}", c.path(), r.text);
    let mut evidence = vec![format!(
        "{}: {named}, +{} packet{} since the tracer started",
        st.node,
        hit.packets,
        if hit.packets == 1 { "" } else { "s" }
    )];
    evidence.extend(hits.iter().skip(1).take(2).map(|h| {
        format!(
            "{}: also {} `{}`, +{}",
            st.node,
            h.chain.path(),
            h.rule.text,
            h.packets
        )
    }));
    let p = &trace.packet;
    let text = r.text.to_lowercase();
    if text.contains("ct state invalid")
        || text.contains("ctstate invalid")
        || text.contains("--ctstate invalid")
    {
        return Some(
            v(
                "conntrack-invalid",
                format!(
                    "{at}: {named} dropped it because conntrack considers the packet INVALID: it fits \
                     no connection conntrack knows (the connection's start went another way, an \
                     asymmetric route, the entry expired or the table was flushed, or a TCP packet \
                     outside the window). Fix: make both directions of the flow cross the same node \
                     (symmetric routing), check `conntrack -S` for insert failures and the table's \
                     size (net.netfilter.nf_conntrack_max); Calico drops INVALID packets on purpose.",
                ),
            )
            .with_evidence(evidence),
        );
    }
    if let Some(owner) = calico_owner(c) {
        return Some(
            v(
                "policy-drop",
                format!(
                    "{at}: Calico policy dropped it: {named}, in {owner}. The packet ({} {} -> {}{}) \
                     is denied by policy, or allowed by none (Calico drops what no policy allows once \
                     a policy selects the pod). Fix: if this traffic should pass, add an allow rule to \
                     the policy selecting the destination pod (`calicoctl get \
                     networkpolicy,globalnetworkpolicy -o wide`, `kubectl get networkpolicy -A`).",
                    crate::model::proto_name(p.proto),
                    p.src,
                    p.dst,
                    if p.dport != 0 { format!(":{}", p.dport) } else { String::new() }
                ),
            )
            .with_evidence(evidence),
        );
    }
    let (name, what) = match d.encap {
        Some(e) => (
            "underlay-drop",
            format!(
                "the encapsulated packet ({} {} -> {}) before it was decapsulated: the node's firewall \
                 blocks Calico's tunnel. Fix: allow {} from the other nodes before this rule.",
                e.kind.as_str(),
                e.outer_src,
                e.outer_dst,
                if e.kind == crate::model::EncapKind::Vxlan {
                    format!("UDP port {}", e.outer_dport)
                } else {
                    "IP protocol 4".into()
                }
            ),
        ),
        None => (
            "firewall-drop",
            "the packet: a host firewall rule, not one of Calico's chains. Fix: allow this traffic \
             before the rule or remove it; Calico's own policy belongs in NetworkPolicy."
                .to_string(),
        ),
    };
    Some(v(name, format!("{at}: {named} dropped {what}")).with_evidence(evidence))
}
