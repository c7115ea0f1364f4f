//! Verdicts about NAT: kube-proxy's Service rules, Calico's natOutgoing, conntrack. They come
//! before the generic rules (a packet to a Service address that nothing translated dies like
//! any packet to an unroutable address; a kube-proxy REJECT is a firewall drop), and each
//! returns `None` unless the trace and the node's state support it:
//!
//! - `asymmetric-snat`: the packet answers a flow a node DNATed (the trace's `answers`: its
//!   reversed tuple is a translated request's) and no node translated it back: the request
//!   reached the endpoint without SNAT, so the endpoint answered the client directly, from its
//!   own address;
//! - `no-service-rule`: nothing translated a packet to an address among the node's cluster IPs
//!   (the /16 of a `KUBE-SERVICES` rule's destination, or an address a `KUBE-SVC-*` chain still
//!   matches) that no traced node or pod owns;
//! - `service-port-not-served`: the same, but the node has rules for the address, none for the
//!   packet's protocol and port (a ping to a Service address, a port the Service lacks);
//! - `no-endpoints`: a REJECT of kube-proxy's filter chains (`KUBE-SERVICES`,
//!   `KUBE-EXTERNAL-SERVICES`, `... has no endpoints`) dropped it;
//! - `conntrack-full`: a netfilter drop with no discarding rule hit, on a node whose conntrack
//!   table is at `nf_conntrack_max`;
//! - `nat-outgoing-off`: a pod's packet left a node's uplink, unencapsulated, to an address
//!   outside the cluster with its pod source (no SNAT step), on a node with Calico's NAT
//!   (`cali-nat-outgoing`) whose masquerade set (Felix's `cali40masq-ipam-pools`) does not
//!   cover the pod (or was not read).

use std::net::Ipv4Addr;

use super::{evidence::Evidence, v};
use crate::{
    model::{Direction, DropPoint, NatStep, Outcome, Trace, Verdict},
    state::NodeState,
    topology::{IfaceKind, Topology},
};

/// Felix's ipset of the pools with natOutgoing.
const MASQ_SET: &str = "cali40masq-ipam-pools";

/// A NAT verdict for a dropped or lost trace, if the trace and the state support one.
pub fn judge(trace: &Trace, topo: &Topology, ev: &Evidence) -> Option<Verdict> {
    let drop = trace
        .drop
        .as_ref()
        .filter(|_| trace.outcome == Outcome::Dropped);
    if let Some(step) = &trace.answers {
        return Some(asymmetric_snat(trace, step, drop));
    }
    if let Some(d) = drop.filter(|d| d.reason == "NETFILTER_DROP" && d.encap.is_none()) {
        if let Some(v) = no_endpoints(trace, d, ev).or_else(|| conntrack_full(trace, d, ev)) {
            return Some(v);
        }
    }
    no_service_rule(trace, topo, ev, drop).or_else(|| nat_outgoing_off(trace, topo, ev))
}

fn where_died(trace: &Trace, drop: Option<&DropPoint>) -> String {
    match (drop, trace.hops.last()) {
        (Some(d), _) => format!(
            "{} dropped it on {} ({} in {})",
            d.node, d.ifname, d.reason, d.function
        ),
        (None, Some(h)) => format!("it left {} by {} and was not seen again", h.node, h.ifname),
        (None, None) => "it was lost".into(),
    }
}

fn endpoint(a: Ipv4Addr, port: u16) -> String {
    if port == 0 {
        a.to_string()
    } else {
        format!("{a}:{port}")
    }
}

fn asymmetric_snat(trace: &Trace, step: &NatStep, drop: Option<&DropPoint>) -> Verdict {
    let p = &trace.packet;
    let (cs, csp, cd, cdp) = step.from;
    let out = trace
        .hops
        .iter()
        .rev()
        .find(|h| h.dir == Direction::Egress && h.kind == Some(IfaceKind::Uplink));
    // Where it went: out of another node's uplink, then dropped or not seen again.
    let fate = match (out, drop) {
        (Some(h), None) => format!(
            "it left {} by {}, not through {}, and was not seen again",
            h.node, h.ifname, step.node
        ),
        (Some(h), Some(_)) => format!(
            "it left {} by {}, not through {}; {}",
            h.node,
            h.ifname,
            step.node,
            where_died(trace, drop)
        ),
        (None, _) => where_died(trace, drop),
    };
    v(
        "asymmetric-snat",
        format!(
            "this packet ({} -> {}) answers the request {} -> {}, which {} translated ({}) \
             without changing its source, so the endpoint answered the client directly with its \
             own address instead of going back through {} to be translated back: the client \
             expects an answer from {} and drops or resets this one; {fate}. kube-proxy \
             masquerades NodePort and external traffic (`externalTrafficPolicy: Cluster`: \
             KUBE-EXT-<hash> jumps to KUBE-MARK-MASQ, KUBE-POSTROUTING masquerades the mark) so \
             that replies return through the node that translated the request. Fix: check on \
             {} that the Service's KUBE-EXT/KUBE-SVC chain marks the traffic (`iptables-save -t \
             nat | grep -e KUBE-MARK-MASQ -e KUBE-EXT`) and that KUBE-POSTROUTING masquerades \
             that mark (kube-proxy's --masquerade-bit against any other agent using it), or use \
             `externalTrafficPolicy: Local` with endpoints on the nodes that receive the traffic.",
            endpoint(p.src, p.sport),
            endpoint(p.dst, p.dport),
            endpoint(cs, csp),
            endpoint(cd, cdp),
            step.node,
            step.text(),
            step.node,
            endpoint(cd, cdp),
            step.node,
        ),
    )
    .with_evidence(vec![format!(
        "{}: {} (the request's only translation; no node translated this reply back)",
        step.node,
        step.text()
    )])
}

/// The node state of the node the packet entered first.
fn first_node<'a>(trace: &Trace, ev: &'a Evidence) -> Option<&'a NodeState> {
    trace.hops.iter().find_map(|h| ev.state(h.netns))
}

/// `ip daddr A` of an nft rule's text.
fn daddr(text: &str) -> Option<Ipv4Addr> {
    let mut w = text.split_whitespace();
    while let Some(x) = w.next() {
        if x == "daddr" {
            return w.next()?.split('/').next()?.parse().ok();
        }
    }
    None
}

fn no_service_rule(
    trace: &Trace,
    topo: &Topology,
    ev: &Evidence,
    drop: Option<&DropPoint>,
) -> Option<Verdict> {
    let p = &trace.packet;
    if trace.nat.iter().any(|s| s.kind.contains("DNAT")) || topo.owner_of(p.dst).is_some() {
        return None;
    }
    if drop.is_some_and(|d| d.reason == "NETFILTER_DROP") {
        return None;
    }
    let st = first_node(trace, ev)?;
    let services = st.firewall.chain("nat", "KUBE-SERVICES")?;
    let cluster_ips: Vec<Ipv4Addr> = services
        .rules
        .iter()
        .filter_map(|r| daddr(&r.text))
        .collect();
    if cluster_ips.contains(&p.dst) {
        // Rules exist for the address: not this verdict, unless none is for this protocol
        // and port (a ping to a Service address, a port the Service does not have).
        return port_not_served(trace, st, services, drop);
    }
    // A KUBE-SVC chain that still matches the address: kube-proxy's rules are half there.
    let orphan = st.firewall.chains.iter().find_map(|c| {
        let r = c
            .rules
            .iter()
            .find(|r| c.name.starts_with("KUBE-SVC-") && daddr(&r.text) == Some(p.dst))?;
        Some((c, r))
    });
    let same16 = |a: &Ipv4Addr| a.octets()[..2] == p.dst.octets()[..2];
    if orphan.is_none() && !cluster_ips.iter().any(same16) {
        return None;
    }
    let mut near: Vec<String> = cluster_ips
        .iter()
        .filter(|a| same16(a))
        .map(Ipv4Addr::to_string)
        .collect();
    near.dedup();
    let mut evidence = vec![format!(
        "{}: table ip nat chain KUBE-SERVICES translates {} ({} rule{}) and has no rule for {}",
        st.node,
        if near.is_empty() {
            "no address near it".into()
        } else {
            near.join(", ")
        },
        services.rules.len(),
        if services.rules.len() == 1 { "" } else { "s" },
        p.dst
    )];
    let service = orphan.map(|(c, r)| {
        let name = r
            .comment
            .as_deref()
            .map(|c| c.trim_end_matches(" cluster IP").to_string());
        evidence.push(format!(
            "{}: chain {} still matches {}{}, but no rule jumps to it",
            st.node,
            c.name,
            p.dst,
            name.as_deref()
                .map(|n| format!(" (Service port {n})"))
                .unwrap_or_default()
        ));
        name
    });
    let what = match service.flatten() {
        Some(n) => format!("the cluster IP of Service port {n}"),
        None => "a Service (cluster) IP by its neighbours in kube-proxy's rules".into(),
    };
    let lost = match drop {
        Some(_) => where_died(trace, drop),
        None => where_died(trace, None),
    };
    Some(
        v(
            "no-service-rule",
            format!(
                "no DNAT happened: {}{} is {what}, but {} has no kube-proxy rule for it, so the \
                 packet kept the Service address and was routed like any other (the default \
                 route) where nothing owns it; {lost}. kube-proxy writes one `KUBE-SERVICES` rule \
                 per Service port (`-d <cluster IP> --dport <port> -j KUBE-SVC-<hash>`). Fix: \
                 check that kube-proxy runs and is synced on {} (its logs, `iptables-save -t nat \
                 | grep {}`); restarting it rewrites every rule.",
                p.dst,
                if p.dport != 0 {
                    format!(" port {}", p.dport)
                } else {
                    String::new()
                },
                st.node,
                st.node,
                p.dst
            ),
        )
        .with_evidence(evidence),
    )
}

/// `(protocol, destination port)` of a kube-proxy `KUBE-SERVICES` rule in nft's text
/// (`meta l4proto udp ip daddr 10.96.0.10 udp dport 53 ...`).
fn rule_port(text: &str) -> Option<(u8, u16)> {
    let w: Vec<&str> = text.split_whitespace().collect();
    w.windows(3).find_map(|x| {
        let proto = match x[0] {
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            _ => return None,
        };
        (x[1] == "dport").then(|| Some((proto, x[2].parse().ok()?)))?
    })
}

/// A packet to a cluster IP whose Service has rules, none of them for this protocol and port:
/// kube-proxy translates only the Service's ports, so the packet kept the Service address.
fn port_not_served(
    trace: &Trace,
    st: &NodeState,
    services: &crate::state::firewall::Chain,
    drop: Option<&DropPoint>,
) -> Option<Verdict> {
    let p = &trace.packet;
    let rules: Vec<_> = services
        .rules
        .iter()
        .filter(|r| daddr(&r.text) == Some(p.dst))
        .collect();
    let served: Vec<(u8, u16)> = rules.iter().filter_map(|r| rule_port(&r.text)).collect();
    if served.is_empty() || served.contains(&(p.proto, p.dport)) {
        return None;
    }
    let name = |pr: u8| match pr {
        1 => "ICMP".to_string(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        n => format!("protocol {n}"),
    };
    let ports: Vec<String> = served
        .iter()
        .map(|(pr, port)| format!("{}/{port}", name(*pr).to_lowercase()))
        .collect();
    let service = rules
        .iter()
        .find_map(|r| r.comment.as_deref())
        .map(|c| c.trim_end_matches(" cluster IP").to_string());
    let what = match p.proto {
        1 => "ICMP (a ping)".to_string(),
        pr => format!("{} port {}", name(pr), p.dport),
    };
    let probe = served
        .first()
        .map(|(pr, port)| {
            format!(
                "`tracer diagnose --to {} --proto {} --port {port}`",
                p.dst,
                name(*pr).to_lowercase()
            )
        })
        .unwrap_or_default();
    let mut evidence = vec![format!(
        "{}: table ip nat chain KUBE-SERVICES translates {} only for {}",
        st.node,
        p.dst,
        ports.join(", ")
    )];
    evidence.extend(
        rules
            .iter()
            .map(|r| format!("{}: {}", st.node, r.text.trim())),
    );
    Some(
        v(
            "service-port-not-served",
            format!(
                "{} is the cluster IP of {}, which kube-proxy translates only for {}; {what} to \
                 a Service address is never translated, so the packet kept the Service address \
                 and was routed by the default route where nothing owns it; {}. Nothing is \
                 broken if the Service is meant to serve only those ports: probe one of them \
                 ({probe}); else add the port to the Service's spec.",
                p.dst,
                service
                    .map(|s| format!("Service port {s}"))
                    .unwrap_or_else(|| "a Service".into()),
                ports.join(", "),
                where_died(trace, drop),
            ),
        )
        .with_evidence(evidence),
    )
}

fn no_endpoints(trace: &Trace, d: &DropPoint, ev: &Evidence) -> Option<Verdict> {
    let st = ev.state(d.netns)?;
    let hits = ev.rule_hits(d.netns);
    let hit = hits.iter().find(|h| {
        let kube = matches!(
            h.chain.name.as_str(),
            "KUBE-SERVICES" | "KUBE-EXTERNAL-SERVICES" | "KUBE-NODEPORTS"
        );
        let comment = h.rule.comment.as_deref().unwrap_or("");
        h.rule.verdict == crate::state::firewall::RuleVerdict::Reject
            && (comment.ends_with("has no endpoints") || kube)
    })?;
    let comment = hit.rule.comment.as_deref();
    let service = comment
        .and_then(|c| c.strip_suffix(" has no endpoints"))
        .map(str::to_string);
    let p = &trace.packet;
    let svc = service
        .clone()
        .unwrap_or_else(|| format!("the Service at {}", endpoint(p.dst, p.dport)));
    let rule = hit.rule.iptables.as_deref().unwrap_or(&hit.rule.text);
    let (ns, name) = service
        .as_deref()
        .and_then(|s| s.split(':').next())
        .and_then(|s| s.split_once('/'))
        .unwrap_or(("<namespace>", "<service>"));
    Some(
        v(
            "no-endpoints",
            format!(
                "{} dropped it on {} ({} in {}): {svc} has no endpoints, and kube-proxy rejects \
                 traffic to it (ICMP port unreachable to the client; TCP connections are refused) \
                 with {} {} rule: `{rule}`. No DNAT happened because there is no pod to send it \
                 to. Fix: make the Service's pods ready, or its selector match them (`kubectl get \
                 endpointslices -n {ns} -l kubernetes.io/service-name={name}`, `kubectl describe \
                 service -n {ns} {name}`).",
                d.node,
                d.ifname,
                d.reason,
                d.function,
                hit.chain.path(),
                hit.rule
                    .handle
                    .map_or(format!("#{}", hit.rule.position), |h| format!("handle {h}")),
            ),
        )
        .with_evidence(vec![format!(
            "{}: {} `{rule}`{}, +{} packet{} since the tracer started",
            st.node,
            hit.chain.path(),
            comment
                .map(|c| format!(" (comment \"{c}\")"))
                .unwrap_or_default(),
            hit.packets,
            if hit.packets == 1 { "" } else { "s" }
        )]),
    )
}

fn conntrack_full(trace: &Trace, d: &DropPoint, ev: &Evidence) -> Option<Verdict> {
    let st = ev.state(d.netns)?;
    if !ev.rule_hits(d.netns).is_empty() {
        return None; // a rule dropped it
    }
    let num = |k: &str| st.sysctl(k).and_then(|v| v.parse::<u64>().ok());
    let (count, max) = (
        num("net.netfilter.nf_conntrack_count")?,
        num("net.netfilter.nf_conntrack_max")?,
    );
    // The count read a moment after the drop: entries may have expired meanwhile.
    if max == 0 || count < max - max / 64 {
        return None;
    }
    let p = &trace.packet;
    Some(
        v(
            "conntrack-full",
            format!(
                "{} dropped it on {} ({} in {}): {}'s conntrack table is full ({count} entries, \
                 nf_conntrack_max {max}), so conntrack could not track the new flow {} -> {} and \
                 dropped its first packet (the kernel logs `nf_conntrack: table full, dropping \
                 packet`); no firewall rule dropped it. Established flows still pass; new ones \
                 fail until entries expire. Fix: raise net.netfilter.nf_conntrack_max (and \
                 nf_conntrack_buckets) on {}, find what fills the table (`conntrack -L | cut -d' ' \
                 -f1 | sort | uniq -c` by protocol: many short UDP flows such as DNS), and shorten \
                 its timeouts (nf_conntrack_udp_timeout).",
                d.node,
                d.ifname,
                d.reason,
                d.function,
                d.node,
                endpoint(p.src, p.sport),
                endpoint(p.dst, p.dport),
                d.node
            ),
        )
        .with_evidence(vec![format!(
            "{}: net.netfilter.nf_conntrack_count = {count}, nf_conntrack_max = {max}",
            st.node
        )]),
    )
}

/// Whether `cidr` (`a.b.c.d/n`) contains `ip`.
fn cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let (a, len) = cidr.split_once('/').unwrap_or((cidr, "32"));
    let (Ok(a), Ok(len)) = (a.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from(a) & mask == u32::from(ip) & mask
}

/// Whether `a` is a cluster address: a traced node's, in an IP pool (Felix's set of all
/// pools, where read), or routed by a node to another node, a pod veth or a tunnel.
fn in_cluster(a: Ipv4Addr, topo: &Topology, ev: &Evidence) -> bool {
    let pools = ev
        .states()
        .filter_map(|s| s.firewall.set("cali40all-ipam-pools"))
        .any(|set| set.members.iter().any(|m| cidr_contains(m, a)));
    let routed = topo.nodes.iter().any(|n| {
        n.route_for(a).is_some_and(|r| {
            r.gw.is_some_and(|g| topo.owner_of(g).is_some())
                || n.ifaces.iter().any(|i| {
                    i.name == r.dev
                        && matches!(
                            i.kind,
                            IfaceKind::PodVeth | IfaceKind::Vxlan | IfaceKind::Ipip
                        )
                })
        })
    });
    topo.owner_of(a).is_some() || pools || routed
}

fn nat_outgoing_off(trace: &Trace, topo: &Topology, ev: &Evidence) -> Option<Verdict> {
    let p = &trace.packet;
    if !trace.nat.is_empty() || in_cluster(p.dst, topo, ev) {
        return None;
    }
    let first = trace.hops.first()?;
    let from_pod = first.kind == Some(IfaceKind::PodVeth) && first.dir == Direction::Ingress;
    let out = trace.hops.iter().rev().find(|h| {
        h.kind == Some(IfaceKind::Uplink) && h.dir == Direction::Egress && h.encap.is_none()
    })?;
    if !from_pod || trace.hops.last().map(|h| h.netns) != Some(out.netns) {
        return None;
    }
    // Only where the node's state shows Calico's NAT (its natOutgoing chain): elsewhere a pod
    // address leaving the node may be routed by the network (BGP) on purpose.
    let st = ev.state(out.netns)?;
    st.firewall.chain("nat", "cali-nat-outgoing")?;
    let st = Some(st);
    let set = st.and_then(|s| s.firewall.set(MASQ_SET));
    if set.is_some_and(|s| s.members.iter().any(|m| cidr_contains(m, p.src))) {
        return None; // natOutgoing covers the pod: something else kept its source
    }
    let evidence = match (st, set) {
        (Some(s), Some(set)) => vec![format!(
            "{}: ipset {MASQ_SET} (the pools Felix masquerades from) = [{}], without {}",
            s.node,
            set.members.join(", "),
            p.src
        )],
        (Some(s), None) => vec![format!(
            "{}: no ipset {MASQ_SET} (Felix's natOutgoing set) was read",
            s.node
        )],
        _ => Vec::new(),
    };
    Some(
        v(
            "nat-outgoing-off",
            format!(
                "the packet from pod address {} left {} by {} to {}, outside the cluster, with its \
                 pod address as source: no SNAT happened, and nothing outside the cluster routes \
                 the pod CIDR back, so no reply returns. Calico masquerades such traffic to the \
                 node's address when the pod's IP pool has `natOutgoing: true` (Felix's \
                 cali-nat-outgoing chain and its {MASQ_SET} ipset). Fix: set natOutgoing: true \
                 on the IP pool (`calicoctl get ippool -o yaml`), or make the network route the \
                 pod CIDR to the nodes (BGP peering) if pods are meant to keep their addresses.",
                p.src, out.node, out.ifname, p.dst
            ),
        )
        .with_evidence(evidence),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_addresses_and_cidrs() {
        assert_eq!(
            daddr("meta l4proto udp ip daddr 10.96.0.10 udp dport 53 jump KUBE-SVC-X"),
            Some(Ipv4Addr::new(10, 96, 0, 10))
        );
        assert_eq!(daddr("ip saddr != 10.244.0.0/16 jump KUBE-MARK-MASQ"), None);
        assert!(cidr_contains("10.244.0.0/16", Ipv4Addr::new(10, 244, 4, 2)));
        assert!(!cidr_contains(
            "10.244.0.0/16",
            Ipv4Addr::new(10, 245, 0, 1)
        ));
        assert!(cidr_contains("0.0.0.0/0", Ipv4Addr::new(1, 2, 3, 4)));
    }
}
