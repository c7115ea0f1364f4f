//! Verdicts: why a dropped or lost packet died, in the user's terms.
//!
//! Pure rules over one finished [`Trace`] (its hops, the kernel drop, the FIB lookups seen for
//! it), the [`Topology`] (node addresses, links and MTUs, default gateways, the pods' namespaces)
//! and the [`Evidence`]: the nodes' state read from the kernel and the audit's findings
//! (`context` interprets a drop with it first; the reason-only rules here decide when the state
//! does not explain the drop or was not read). Each verdict has a stable machine name, a
//! one-paragraph explanation naming the route, rule or entry involved and the Calico-level fix,
//! and its evidence (the state objects and audit findings it rests on). Reason names are the
//! running kernel's (`NETFILTER_DROP`, ...), so the rules compare names, never numbers.
//!
//! Names: `no-route`, `no-vxlan-fdb`, `no-neighbour`, `wrong-tunnel-endpoint`, `underlay-drop`,
//! `firewall-drop`, `policy-drop`, `conntrack-invalid`, `rp-filter`, `mtu`, `cidr-overlap`,
//! `vtep-mac-mismatch`, `wrong-destination-mac`, `vni-mismatch`, `vxlan-port-mismatch`,
//! `blackhole-route`, `no-such-pod`, `no-pod-route`, `pod-veth-down`, `link-down`,
//! `ip-forward-off`, `proxy-arp-off`, `pod-no-route`, `lost-on-node`, `no-listener`, the NAT
//! verdicts (`no-service-rule`, `service-port-not-served`, `no-endpoints`, `conntrack-full`,
//! `asymmetric-snat`, `nat-outgoing-off`), and
//! `kernel-drop` for a drop no rule explains (the reason, its meaning and location, and the
//! audit's findings for the node still say what happened). Drops by the destination's own
//! sockets (a full receive buffer, TCP's checks) are not verdicts: the pipeline counts them
//! apart (see is_receiver_drop in the names module).

use std::net::Ipv4Addr;

mod context;
pub mod evidence;
mod nat;

pub use evidence::{Evidence, StateSource};

use crate::{
    model::{DropPoint, EncapKind, Outcome, RouteLookup, Trace, Verdict},
    topology::{IfaceKind, Node, Topology},
};

/// VXLAN adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8), IPIP 20.
const VXLAN_OVERHEAD: u32 = 50;
const IPIP_OVERHEAD: u32 = 20;

/// The verdict for a dropped or lost trace; `None` for other outcomes. `ev` holds what is
/// known of the nodes' state (empty when nothing was read).
pub fn judge(trace: &Trace, topo: &Topology, ev: &Evidence) -> Option<Verdict> {
    let verdict = match trace.outcome {
        Outcome::Delivered | Outcome::Incomplete => None,
        // NAT first: a packet nothing translated dies like any other packet.
        _ => nat::judge(trace, topo, ev).or_else(|| match trace.outcome {
            Outcome::Dropped => trace.drop.as_ref().map(|d| {
                context::judge(trace, d, topo, ev).unwrap_or_else(|| judge_drop(trace, d, topo))
            }),
            _ => Some(judge_lost(trace, topo, ev)),
        }),
    }?;
    // The audit's findings on the node where the packet died, as further evidence.
    let node = match (&trace.drop, trace.hops.last()) {
        (Some(d), _) => topo
            .pod(d.netns)
            .and_then(|p| p.pod_of.as_ref().map(|o| o.node.clone()))
            .unwrap_or_else(|| d.node.clone()),
        (None, Some(h)) => h.node.to_string(),
        (None, None) => String::new(),
    };
    let findings: Vec<String> = ev
        .findings_about(&node)
        .take(3)
        .map(|f| {
            format!(
                "audit: {} {}: {}: found {}, expected {}",
                f.code,
                f.nodes.join(" -> "),
                f.object,
                f.found,
                f.expected
            )
        })
        .collect();
    Some(verdict.with_evidence(findings))
}

fn v(name: &'static str, explanation: String) -> Verdict {
    Verdict {
        name,
        explanation,
        evidence: Vec::new(),
    }
}

fn judge_drop(trace: &Trace, d: &DropPoint, topo: &Topology) -> Verdict {
    let p = &trace.packet;
    let node = topo.node(d.netns);
    let at = format!(
        "{} dropped it on {} ({} in {})",
        d.node, d.ifname, d.reason, d.function
    );
    let route = last_route(trace, d.netns)
        .map(describe_route)
        .unwrap_or_default();

    // Pod-to-node traffic that entered the overlay: the pod CIDR overlaps the node network.
    // Only for a node's underlay address: its tunnel (VTEP) address is routed through the
    // overlay by design (host-to-remote-pod traffic uses it as source, so replies go there).
    if let Some(owner) = topo.owner_of(p.dst).filter(|o| is_uplink_addr(o, p.dst)) {
        let is_tunnel =
            |kind: Option<IfaceKind>| matches!(kind, Some(IfaceKind::Vxlan | IfaceKind::Ipip));
        let drop_kind = node
            .and_then(|n| n.ifaces.iter().find(|i| i.ifindex == d.ifindex))
            .map(|i| i.kind);
        let tunnel = trace
            .hops
            .iter()
            .find(|h| is_tunnel(h.kind))
            .map(|h| (h.node.clone(), h.ifname.clone()))
            .or_else(|| {
                is_tunnel(drop_kind).then(|| (d.node.as_str().into(), d.ifname.as_str().into()))
            });
        if let Some((tnode, tif)) = tunnel {
            return v(
                "cidr-overlap",
                format!(
                    "{} is the address of node {}, but {} routed the packet into the overlay ({}){}; {at}. \
                     The pod CIDR (or an IPAM block route) overlaps the node network, so traffic from \
                     pods to node addresses is captured by the overlay and lost, while pod-to-pod \
                     traffic still works. Fix: give the IP pool a CIDR that does not overlap the \
                     nodes' subnet (and remove the overlapping blocks/routes), then restart the \
                     affected pods.",
                    p.dst, owner.name, tnode, tif, route
                ),
            );
        }
    }

    match d.reason.as_str() {
        // VXLAN_NO_REMOTE: the same vxlan_xmit drop, named so before Linux 6.14.
        "NO_TX_TARGET" | "VXLAN_NO_REMOTE" => v(
            "no-vxlan-fdb",
            format!(
                "{at}: vxlan.calico has no forwarding entry (FDB) for the remote VTEP the route points \
                 at{route}, so the VXLAN device has no underlay destination for the frame. Felix \
                 programs one permanent FDB entry per remote node (`bridge fdb show dev vxlan.calico`: \
                 `<remote VTEP MAC> dst <remote node IP>`). Fix: check calico-node (Felix) on {} and \
                 the remote Node's projectcalico.org/IPv4VXLANTunnelAddr and VXLAN MAC; restarting \
                 calico-node reprograms the entry.",
                d.node
            ),
        ),
        "IP_RPFILTER" => v(
            "rp-filter",
            format!(
                "{at}: the packet from {} arrived on {} but the route back to {} leaves by another \
                 interface, and strict reverse-path filtering (rp_filter=1) rejects such asymmetric \
                 paths{route}. Fix: set net.ipv4.conf.all.rp_filter and net.ipv4.conf.{}.rp_filter to \
                 2 (loose) or 0 on {}, or make the return route symmetric (check `ip route get {} from \
                 <node ip>` on {}).",
                p.src,
                d.ifname,
                p.src,
                // sysctl keys write a dot inside a device name as '/' (vxlan.calico -> vxlan/calico).
                d.ifname.replace('.', "/"),
                d.node,
                p.src,
                d.node
            ),
        ),
        "PKT_TOO_BIG" => judge_mtu(trace, d, node, &at),
        // Tunnel packets on the wrong port are `context`'s (vxlan-port-mismatch).
        "NO_SOCKET" => v(
            "no-listener",
            format!(
                "{at}: nothing listens on {} port {} at {}: the packet reached its destination \
                 and no socket took it (the TCP connection is refused, the UDP datagram answered \
                 with ICMP port unreachable). Fix: check that the server in the destination pod \
                 runs and listens on that port and address (`ss -lntu` in the pod), and that a \
                 Service's targetPort matches it.",
                crate::model::proto_name(p.proto),
                p.dport,
                p.dst
            ),
        ),
        "IP_INNOROUTES" | "IP_OUTNOROUTES" => no_route(trace, d, node, &at, &route),
        "NEIGH_FAILED" | "NEIGH_QUEUEFULL" | "NEIGH_DEAD" | "NEIGH_CREATEFAIL" => {
            judge_neigh(trace, d, node, topo, &at, &route)
        }
        "NETFILTER_DROP" => match d.encap {
            Some(e) => v(
                "underlay-drop",
                format!(
                    "{at}: a firewall rule on {} dropped the encapsulated packet ({} {} -> {}{}) before \
                     it was decapsulated. The receiving node (or the underlay) blocks Calico's {} \
                     traffic. Fix: allow {} between the nodes (host firewall, nftables/iptables, \
                     cloud security groups).",
                    d.node,
                    e.kind.as_str(),
                    e.outer_src,
                    e.outer_dst,
                    if e.kind == EncapKind::Vxlan { format!(" UDP {}", e.outer_dport) } else { String::new() },
                    e.kind.as_str(),
                    if e.kind == EncapKind::Vxlan { format!("UDP port {}", e.outer_dport) } else { "IP protocol 4".into() },
                ),
            ),
            None => v(
                "firewall-drop",
                format!(
                    "{at}: an iptables/nftables rule on {} dropped the packet from {} to {} \
                     ({}{}){}. In Calico this is usually a network policy (a deny rule, or no allow \
                     rule for this port) enforced on the pod's cali interface. Fix: inspect the policies \
                     selecting the destination pod (`calicoctl get networkpolicy,globalnetworkpolicy -o \
                     wide`) or the node's ruleset (`nft list ruleset`, `iptables-save`).",
                    d.node,
                    p.src,
                    p.dst,
                    crate::model::proto_name(p.proto),
                    if p.dport != 0 { format!(" port {}", p.dport) } else { String::new() },
                    route
                ),
            ),
        },
        _ => v(
            "kernel-drop",
            format!(
                "{at}{route}: {}. No rule of this tracer interprets this reason in context; the \
                 reason and location are the kernel's own words, and the evidence below is what the \
                 nodes' state shows.",
                crate::names::reason_docs::doc(&d.reason).unwrap_or(
                    "a reason this tracer has no description of (a newer kernel's): the function \
                     names where it happened"
                )
            ),
        ),
    }
}

fn judge_mtu(trace: &Trace, d: &DropPoint, node: Option<&Node>, at: &str) -> Verdict {
    let out_dev = last_route(trace, d.netns)
        .map(|r| r.dev.clone())
        .unwrap_or_default();
    let out_mtu = node.and_then(|n| n.link(&out_dev)).map(|l| l.mtu);
    let uplink_mtu = node
        .and_then(|n| n.uplink())
        .and_then(|u| node.and_then(|n| n.link(&u.name)))
        .map(|l| l.mtu);
    let overhead = if out_dev == "tunl0" {
        IPIP_OVERHEAD
    } else {
        VXLAN_OVERHEAD
    };
    let advice = match uplink_mtu {
        Some(m) => format!(
            "set the tunnel MTU to {} (uplink {m} - {overhead}) and the same veth MTU for pods \
             (Calico: FelixConfiguration vxlanMtu/ipipMtu, or the installation's MTU / calico-config \
             veth_mtu), then restart the pods",
            m.saturating_sub(overhead)
        ),
        None => "make the pod (veth) MTU no larger than the tunnel MTU (uplink MTU - 50 for VXLAN, - 20 for IPIP)".into(),
    };
    v(
        "mtu",
        format!(
            "{at}: the {}-byte packet (DF set) does not fit {}{}. The pods' MTU is larger than the \
             path through the tunnel, so large packets with DF are dropped (and the sender gets \
             ICMP fragmentation-needed, which some stacks ignore). Fix: {advice}.",
            d.len,
            if out_dev.is_empty() { "the next hop".to_string() } else { out_dev.clone() },
            out_mtu.map(|m| format!(" (MTU {m})")).unwrap_or_default()
        ),
    )
}

fn no_route(trace: &Trace, d: &DropPoint, node: Option<&Node>, at: &str, route: &str) -> Verdict {
    let via_default = took_default_route(trace, node);
    let how = if via_default {
        format!(
            "{} has no route for {}, so it followed the default route{route}",
            d.node, trace.packet.dst
        )
    } else {
        format!("{} has no route for {}{route}", d.node, trace.packet.dst)
    };
    v(
        "no-route",
        format!(
            "{at}: {how}. Calico routes each remote node's /26 block explicitly: `<block> via <remote \
             VTEP> dev vxlan.calico onlink` (VXLAN), `<block> via <node IP> dev tunl0 onlink` (IPIP), \
             or a BGP route `via <node IP>`. If every remote block is missing, the IP pool has \
             vxlanMode and ipipMode Never and no BGP programs routes: set vxlanMode: Always (or \
             ipipMode: Always) on the IP pool, or run BGP (calico_backend: bird). If only this block \
             is missing, Felix/BIRD on {} has not programmed it: check `ip route | grep {}` and the \
             calico-node logs.",
            d.node,
            block_of(trace.packet.dst)
        ),
    )
}

fn judge_neigh(
    trace: &Trace,
    d: &DropPoint,
    node: Option<&Node>,
    topo: &Topology,
    at: &str,
    route: &str,
) -> Verdict {
    let dev_kind = node
        .and_then(|n| n.ifaces.iter().find(|i| i.ifindex == d.ifindex))
        .map(|i| i.kind);
    if let Some(e) = d.encap {
        // The encapsulated packet could not reach its outer destination.
        let known = topo.nodes.iter().find(|n| n.addrs.contains(&e.outer_dst));
        return match known {
            Some(peer) if peer.uplink().is_some() && !is_uplink_addr(peer, e.outer_dst) => v(
                "wrong-tunnel-endpoint",
                format!(
                    "{at}: the {} packet was sent to {}, an address of {} that is not on its underlay \
                     interface, and {} could not reach it{route}. The tunnel endpoint of {} was taken \
                     from the wrong interface (IP autodetection picked the wrong NIC). Fix: set \
                     IP_AUTODETECTION_METHOD on calico-node (e.g. interface=eth0, can-reach=<peer>, or \
                     kubernetes-internal-ip) so that the Node's IPv4Address is the underlay address.",
                    e.kind.as_str(), e.outer_dst, peer.name, d.node, peer.name
                ),
            ),
            Some(peer) => v(
                "underlay-drop",
                format!(
                    "{at}: {} could not resolve the underlay neighbour for {} ({}) to send the {} \
                     packet{route}. The nodes cannot reach each other on the underlay. Fix: check \
                     the link and ARP between the nodes (`ip neigh`, `ping {}` from {}).",
                    d.node, e.outer_dst, peer.name, e.kind.as_str(), e.outer_dst, d.node
                ),
            ),
            None => v(
                "wrong-tunnel-endpoint",
                format!(
                    "{at}: the {} packet was sent to {}, which is no traced node's address, and {} \
                     could not reach it{route}. The remote VTEP's FDB entry (VXLAN) or route (IPIP) \
                     points at the wrong address, typically because IP autodetection on the remote \
                     node picked the wrong NIC. Fix: set IP_AUTODETECTION_METHOD on calico-node \
                     (interface=..., can-reach=..., kubernetes-internal-ip) and check `bridge fdb \
                     show dev vxlan.calico` on {}.",
                    e.kind.as_str(), e.outer_dst, d.node, d.node
                ),
            ),
        };
    }
    if matches!(dev_kind, Some(IfaceKind::Vxlan | IfaceKind::Ipip)) {
        let gw = last_route(trace, d.netns)
            .and_then(|r| r.gw)
            .map(|g| g.to_string())
            .unwrap_or_else(|| "the remote VTEP".into());
        return v(
            "no-neighbour",
            format!(
                "{at}: {} has no neighbour (ARP) entry for {gw} on {}{route}. Felix programs a \
                 permanent ARP entry for every remote VTEP (`ip neigh show dev {}`: `<VTEP IP> lladdr \
                 <VTEP MAC> PERMANENT`); the VTEPs never answer ARP themselves. Fix: check calico-node \
                 (Felix) on {}; restarting it reprograms the entry.",
                d.node, d.ifname, d.ifname, d.node
            ),
        );
    }
    let via_default = took_default_route(trace, node);
    let pod_dst = topo.owner_of(trace.packet.dst).is_none();
    if via_default && pod_dst {
        return no_route(trace, d, node, at, route);
    }
    v(
        "no-neighbour",
        format!(
            "{at}: the next hop for {} on {} did not answer ARP{route}. Fix: check that the next hop \
             exists and is reachable from {} (`ip neigh show dev {}`).",
            trace.packet.dst, d.ifname, d.node, d.ifname
        ),
    )
}

fn judge_lost(trace: &Trace, topo: &Topology, ev: &Evidence) -> Verdict {
    let last = trace.hops.last();
    let encap = trace.hops.iter().rev().find_map(|h| h.encap);
    let from = last
        .map(|h| format!("{} {}", h.node, h.ifname))
        .unwrap_or_default();
    // The packet reached a node (its last hop is an uplink's ingress): the wire delivered it,
    // so nothing about the underlay or its firewalls may be advised.
    if let Some(h) = last
        .filter(|h| h.kind == Some(IfaceKind::Uplink) && h.dir == crate::model::Direction::Ingress)
    {
        return arrived_then_lost(trace, h, encap, ev);
    }
    let peer = encap.and_then(|e| topo.owner_of(e.outer_dst));
    match (encap, peer) {
        (Some(e), None) => v(
            "wrong-tunnel-endpoint",
            format!(
                "the {} packet left {from} for {}, which is no traced node, and was not seen again. \
                 The remote VTEP's FDB entry or route points at the wrong address (IP autodetection \
                 picked the wrong NIC on the remote node?). Fix: set IP_AUTODETECTION_METHOD on \
                 calico-node and check `bridge fdb show dev vxlan.calico`.",
                e.kind.as_str(),
                e.outer_dst
            ),
        ),
        // As for a drop (judge_neigh): an address of a traced node that is not on its uplink.
        (Some(e), Some(peer)) if peer.uplink().is_some() && !is_uplink_addr(peer, e.outer_dst) => {
            v(
                "wrong-tunnel-endpoint",
                format!(
                    "the {} packet left {from} for {}, an address of {} that is not on its underlay \
                     interface, and was not seen again. The tunnel endpoint of that node was taken \
                     from the wrong interface (IP autodetection picked the wrong NIC). Fix: set \
                     IP_AUTODETECTION_METHOD on calico-node (e.g. interface=eth0, can-reach=<peer>, \
                     or kubernetes-internal-ip) so that the Node's IPv4Address is the underlay address.",
                    e.kind.as_str(),
                    e.outer_dst,
                    peer.name,
                ),
            )
        }
        (Some(e), Some(_)) => v(
            "underlay-drop",
            format!(
                "the {} packet left {from} for {} but never reached that node's uplink, and no \
                 traced node dropped it: the underlay lost it. Fix: allow {} between the nodes in \
                 the network between them (cloud security groups, firewalls, switch ACLs).",
                e.kind.as_str(),
                e.outer_dst,
                if e.kind == EncapKind::Vxlan { format!("UDP port {}", e.outer_dport) } else { "IP protocol 4".into() }
            ),
        ),
        (None, _) => v(
            "underlay-drop",
            format!(
                "the packet left {from} for {} but was not seen again and no traced node dropped \
                 it: the underlay (or an untraced router) lost it. With native routing the \
                 underlay must route the pod CIDR blocks to the nodes (BGP); otherwise use \
                 encapsulation (vxlanMode: Always).",
                trace.packet.dst
            ),
        ),
    }
}

/// Lost after arriving on a node's uplink: what the node's state says about why nothing took
/// the packet further.
fn arrived_then_lost(
    trace: &Trace,
    h: &crate::model::TraceHop,
    encap: Option<crate::model::Encap>,
    ev: &Evidence,
) -> Verdict {
    let st = ev.state(h.netns);
    if let (Some(e), Some(st)) = (encap.filter(|e| e.kind == EncapKind::Vxlan), st) {
        let ports: Vec<u16> = st.vteps().filter_map(|l| l.vxlan.as_ref()?.port).collect();
        if !ports.is_empty() && !ports.contains(&e.outer_dport) {
            return v(
                "vxlan-port-mismatch",
                format!(
                    "the VXLAN packet reached {} on {} addressed to UDP port {}, but its VXLAN \
                     device listens on {:?}: nothing decapsulates it there. Every node must use the \
                     same port. Fix: set one vxlanPort for all nodes (FelixConfiguration; Calico's \
                     default is 4789).",
                    h.node, h.ifname, e.outer_dport, ports
                ),
            )
            .with_evidence(vec![format!(
                "{}: VXLAN ports {ports:?}; packet to {}",
                h.node, e.outer_dport
            )]);
        }
        let vnis: Vec<u32> = st.vteps().filter_map(|l| l.vxlan.as_ref()?.vni).collect();
        if !vnis.is_empty() && !vnis.contains(&e.vni) {
            return v(
                "vni-mismatch",
                format!(
                    "the VXLAN packet reached {} on {} with VNI {}, but its VXLAN device has VNI \
                     {:?}: it is not decapsulated. Fix: set one vxlanVNI for all nodes \
                     (FelixConfiguration; Calico's default is 4096).",
                    h.node, h.ifname, e.vni, vnis
                ),
            );
        }
    }
    v(
        "lost-on-node",
        format!(
            "the packet reached {} on {} and was neither seen on another traced interface nor \
             dropped by the kernel where the tracer sees drops: the node consumed or discarded it \
             out of sight (a local socket, a path without a drop reason, an untraced device). The \
             wire delivered it: the underlay is not at fault. Fix: look at {} itself: `{} {}` \
             there, and the interfaces the packet should have taken next.",
            h.node, h.ifname, h.node, "tracer check --netns", h.node,
        ),
    )
    .with_evidence(
        st.map(|s| {
            s.lookup(trace.packet.dst)
                .map(|r| vec![format!("{}: route for {}: `{r}`", s.node, trace.packet.dst)])
                .unwrap_or_default()
        })
        .unwrap_or_default(),
    )
}

fn is_uplink_addr(node: &Node, addr: Ipv4Addr) -> bool {
    node.uplink_addrs.contains(&addr)
}

/// Whether the packet followed the node's default route: from the route lookup seen for it,
/// else from the routing table seen at start-up (longest-prefix match).
fn took_default_route(trace: &Trace, node: Option<&Node>) -> bool {
    let Some(node) = node else {
        return false;
    };
    match last_route(trace, node.netns) {
        Some(r) => node.default_gw.is_some() && r.gw == node.default_gw,
        None => node
            .route_for(trace.packet.dst)
            .is_some_and(|r| r.prefix_len == 0),
    }
}

/// The newest lookup for the packet's destination made in namespace `netns` (or in an unknown
/// one: the classic tracepoint does not say).
fn last_route(trace: &Trace, netns: u32) -> Option<&RouteLookup> {
    trace
        .routes
        .iter()
        .rev()
        .find(|r| r.dst == trace.packet.dst && (r.netns == 0 || r.netns == netns))
}

fn describe_route(r: &RouteLookup) -> String {
    if r.err != 0 {
        return format!(
            " (route lookup for {} in table {}: no route, error {})",
            r.dst, r.table, r.err
        );
    }
    let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
    format!(
        " (route lookup for {} in table {}: dev {}{via})",
        r.dst, r.table, r.dev
    )
}

/// The /26 block of an address, as Calico allocates them.
fn block_of(addr: Ipv4Addr) -> String {
    let a = u32::from(addr) & !0x3f;
    format!("{}/26", Ipv4Addr::from(a))
}

#[cfg(test)]
mod tests;
