//! What node A must agree with node B about, for traffic from A's pods to B's: A's route for
//! each of B's blocks and its next hop, A's neighbour entry for B's VTEP against B's VTEP MAC,
//! A's FDB entry for that MAC against B's underlay address, the VNI and UDP port both VXLAN
//! ends must share, B's end of an IPIP tunnel, MTUs along the path, and the reverse path
//! (strict `rp_filter` where B's packets arrive on another device than A's route back).

use std::net::Ipv4Addr;

use super::node::pod_veths;
use super::{finding, Finding, Severity};
use crate::state::{LinkState, Net, NodeState, Resolution, RouteEntry, RouteType, TunnelKind};

/// An address inside a block to look up (the first host address).
fn probe_addr(b: &Net) -> Ipv4Addr {
    if b.len >= 31 {
        b.addr
    } else {
        Ipv4Addr::from(u32::from(b.addr) + 1)
    }
}

/// B's blocks: its blackhole routes, else the `/32`s of its pods.
fn blocks(b: &NodeState) -> Vec<Net> {
    let mut v = b.blocks();
    if v.is_empty() {
        v = b.pod_routes().map(|r| r.dst).collect();
    }
    v
}

fn vtep(n: &NodeState) -> Option<(&LinkState, Option<Ipv4Addr>)> {
    let l = n.vteps().next()?;
    Some((l, n.addrs_of(l.ifindex).next()))
}

/// Which node among `all` owns `addr`, to name a wrong next hop: ` (node3's)`.
fn describe_owner(addr: Ipv4Addr, a: &NodeState, all: &[NodeState]) -> String {
    match all.iter().find(|n| n.owns(addr)) {
        Some(n) if n.node == a.node => format!(" ({}'s own)", n.node),
        Some(n) => format!(" ({}'s)", n.node),
        None => String::new(),
    }
}

pub fn check(
    a: &NodeState,
    b: &NodeState,
    all: &[NodeState],
    first_of_pair: bool,
    out: &mut Vec<Finding>,
) {
    let (an, bn) = (a.node.as_str(), b.node.as_str());
    let b_blocks = blocks(b);
    let a_blocks = a.blocks();
    for blk in &b_blocks {
        if a_blocks.contains(blk) {
            if first_of_pair {
                out.push(finding(
                    Severity::Error,
                    "block-claimed-twice",
                    &[an, bn],
                    format!("blackhole {blk}"),
                    format!("both {an} and {bn} claim block {blk}"),
                    "one owner per IPAM block",
                    "two nodes hold an affinity for the same IPAM block (typically a node \
                     re-created under another name): each drops the other's pods of the block. \
                     `calicoctl ipam check`, then release the stale node's affinity \
                     (`calicoctl ipam release` / delete its BlockAffinity) so Felix removes its \
                     blackhole",
                ));
            }
            continue;
        }
        let probe = probe_addr(blk);
        match a.resolve(probe) {
            Resolution::Nothing => out.push(finding(
                Severity::Error,
                "no-route-to-block",
                &[an, bn],
                format!("route to {blk} ({bn}'s block)"),
                "no route",
                expected_route(a, b, blk),
                "this node has no route for another node's IPAM block: Felix (VXLAN) or BIRD \
                 (BGP/IPIP) installs one per remote block; check calico-node on this node \
                 (Felix's route sync, BIRD's BGP session to the other node)",
            )),
            Resolution::Rule(r) => out.push(finding(
                Severity::Error,
                "rule-discards-block",
                &[an, bn],
                format!("rule priority {} ({})", r.priority, r.action),
                format!("{} for {blk}", r.action),
                expected_route(a, b, blk),
                "a policy routing rule discards traffic to another node's pods: remove the rule \
                 (`ip rule del priority N`) and find what added it",
            )),
            Resolution::Route(r) if r.kind.discards() => out.push(finding(
                Severity::Error,
                "blackhole-for-remote-block",
                &[an, bn],
                format!("route {r}"),
                format!("{} route for {bn}'s block {blk}", r.kind.as_str()),
                expected_route(a, b, blk),
                format!(
                    "{an} drops traffic to {bn}'s pods: a {} route covers {bn}'s block. A blackhole \
                     for a block is what a node installs for a block it owns: {an} still holds an \
                     IPAM affinity for it (stale, e.g. after the block moved to {bn}). \
                     `calicoctl ipam check`; release {an}'s stale affinity so Felix removes the \
                     route",
                    r.kind.as_str()
                ),
            )),
            Resolution::Route(r) => check_next_hop(a, b, all, blk, r, out),
        }
    }
    check_overlay_covers_node(a, b, all, out);
    if first_of_pair {
        check_shared_params(a, b, out);
    }
}

/// The route A should have for B's block `blk`, as `ip route` prints it.
fn expected_route(a: &NodeState, b: &NodeState, blk: &Net) -> String {
    if let (Some((av, _)), Some((_, Some(bv)))) = (vtep(a), vtep(b)) {
        return format!("{blk} via {bv} dev {} onlink", av.name);
    }
    match (a.ipip_devs().next(), b.underlay_addr()) {
        (Some(t), Some(u)) => format!("{blk} via {u} dev {} onlink", t.name),
        (None, Some(u)) => format!(
            "{blk} via {u}{}",
            a.uplink()
                .map(|l| format!(" dev {}", l.name))
                .unwrap_or_default()
        ),
        _ => format!("a route for {blk} toward {}", b.node),
    }
}

fn check_next_hop(
    a: &NodeState,
    b: &NodeState,
    all: &[NodeState],
    blk: &Net,
    r: &RouteEntry,
    out: &mut Vec<Finding>,
) {
    let (an, bn) = (a.node.as_str(), b.node.as_str());
    let Some(oif) = r.oif else { return };
    match a.tunnel_kind(oif) {
        Some(TunnelKind::Vxlan) => {
            let Some((bv, Some(b_vtep_addr))) = vtep(b) else {
                out.push(finding(
                    Severity::Error,
                    "no-vtep-on-peer",
                    &[an, bn],
                    format!("route {r}"),
                    format!("{bn} has no VXLAN device with an address"),
                    format!("{bn}'s VXLAN device up with its tunnel address"),
                    "the route sends to a VXLAN tunnel the other node does not have: Calico's \
                     encapsulation differs between the nodes (IPPool vxlanMode) or calico-node \
                     has not created vxlan.calico there",
                ));
                return;
            };
            let Some(gw) = r.gateway else { return };
            if gw != b_vtep_addr {
                out.push(finding(
                    Severity::Error,
                    "route-wrong-vtep",
                    &[an, bn],
                    format!("route {r}"),
                    format!("next hop {gw}{}", describe_owner(gw, a, all)),
                    format!("{b_vtep_addr} ({bn}'s VTEP on {})", bv.name),
                    "the route for another node's block points to a VTEP that is not that \
                     node's: the block's affinity or the node's tunnel address changed and this \
                     node kept the old route; check `calicoctl ipam show --show-blocks` and the \
                     Node resources' IPv4VXLANTunnelAddr, then restart calico-node here",
                ));
                return;
            }
            let Some(bmac) = bv.mac else { return };
            if let Some(e) = a.neighbour(oif, gw) {
                if let Some(found) = e.lladdr.filter(|m| *m != bmac) {
                    out.push(finding(
                        Severity::Error,
                        "vtep-mac-mismatch",
                        &[an, bn],
                        format!("neighbour {gw} dev {}", e.dev),
                        format!("lladdr {found} ({})", e.state),
                        format!("{bmac} ({bn}'s {} MAC)", bv.name),
                        format!(
                            "{bn}'s VTEP MAC changed (its vxlan.calico was re-created) and {an} \
                             kept the old one: {bn} drops the frames (wrong destination MAC). \
                             Felix takes the MAC from {bn}'s Node resource (VXLANTunnelMACAddr): \
                             check it matches `ip link show {}` on {bn}, then restart calico-node \
                             on {an} (or `ip neigh replace {gw} lladdr {bmac} dev {} nud permanent`)",
                            bv.name, e.dev
                        ),
                    ));
                }
            }
            let b_under = b.underlay_addr();
            let fdb: Vec<_> = a.fdb_for(oif, bmac).collect();
            // A per-entry port overrides the device's: it must be the one B listens on.
            let b_port = bv.vxlan.as_ref().and_then(|x| x.port);
            if let Some(f) = fdb
                .iter()
                .find(|f| f.port.is_some() && b_port.is_some() && f.port != b_port)
            {
                out.push(finding(
                    Severity::Error,
                    "fdb-wrong-port",
                    &[an, bn],
                    format!("fdb {bmac} dev {}", f.dev),
                    format!("port {}", f.port.unwrap_or(0)),
                    format!("port {} ({bn}'s {} dstport)", b_port.unwrap_or(0), bv.name),
                    format!(
                        "{an} sends {bn}'s VXLAN frames to a UDP port {bn} does not listen on: \
                         remove the entry's port override (`bridge fdb replace {bmac} dev {} dst \
                         <{bn}'s address> self permanent`) and find what set it; Calico writes \
                         entries without one",
                        f.dev
                    ),
                ));
            }
            if let (Some(want), false) = (b_under, fdb.is_empty()) {
                if let Some(f) = fdb.iter().find(|f| f.dst.is_some_and(|d| d != want)) {
                    let dst = f.dst.expect("checked");
                    out.push(finding(
                        Severity::Error,
                        "fdb-wrong-underlay",
                        &[an, bn],
                        format!("fdb {bmac} dev {}", f.dev),
                        format!("dst {dst}{}", describe_owner(dst, a, all)),
                        format!("dst {want} ({bn}'s underlay address)"),
                        format!(
                            "{an} sends {bn}'s VXLAN frames to an old or wrong underlay address: \
                             {bn}'s address changed or its Node resource is stale; check the Node \
                             resource's address, then restart calico-node on {an}"
                        ),
                    ));
                }
            }
        }
        Some(TunnelKind::Ipip) => {
            let want = b.underlay_addr();
            if b.ipip_devs().next().is_none() {
                out.push(finding(
                    Severity::Error,
                    "no-ipip-on-peer",
                    &[an, bn],
                    format!("route {r}"),
                    format!("{bn} has no IPIP device"),
                    format!("tunl0 on {bn}"),
                    "the route sends IPIP to a node that cannot decapsulate it: the IPPool's \
                     ipipMode is not applied on both nodes (calico-node creates tunl0)",
                ));
            } else if let (Some(gw), Some(want)) = (r.gateway, want) {
                if gw != want {
                    out.push(finding(
                        Severity::Error,
                        "route-wrong-ipip-endpoint",
                        &[an, bn],
                        format!("route {r}"),
                        format!("next hop {gw}{}", describe_owner(gw, a, all)),
                        format!("{want} ({bn}'s underlay address)"),
                        "the IPIP route for another node's block points to another address than \
                         that node's: BIRD learnt a stale next hop; check the BGP peerings \
                         (`calicoctl node status`) and the Node resources' addresses",
                    ));
                }
            }
        }
        None => {
            let Some(l) = a.link(oif) else { return };
            if pod_veths(a).iter().any(|p| p.ifindex == l.ifindex) {
                out.push(finding(
                    Severity::Error,
                    "remote-block-routed-to-pod",
                    &[an, bn],
                    format!("route {r}"),
                    format!("{bn}'s block {blk} routed to local pod veth {}", l.name),
                    expected_route(a, b, blk),
                    "an address of another node's block is also a pod on this node (overlapping \
                     IPAM allocation): `calicoctl ipam check` and recreate the duplicate pod",
                ));
            } else if r.dst.len == 0 {
                // Only the default route: with a tunnel on the node, Felix or BIRD should
                // have installed a route per remote block; without one the underlay may
                // route pod CIDRs itself (cloud route tables), so it is only a warning.
                let tunnels = a.vteps().next().is_some() || a.ipip_devs().next().is_some();
                out.push(finding(
                    if tunnels {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    "no-route-to-block",
                    &[an, bn],
                    format!("route to {blk} ({bn}'s block)"),
                    if tunnels {
                        format!("only the default route `{r}`: packets leave unencapsulated to the gateway")
                    } else {
                        format!("only the default route `{r}`: packets go to the gateway")
                    },
                    expected_route(a, b, blk),
                    "this node has no route for another node's IPAM block: Felix (VXLAN) or BIRD \
                     (BGP/IPIP) installs one per remote block; check calico-node on this node \
                     (Felix's route sync, BIRD's BGP session to the other node)",
                ));
            }
        }
    }
}

/// A route into a tunnel that covers B's underlay address: traffic to the node itself is
/// sent into the overlay (the pod CIDR overlaps the node network).
fn check_overlay_covers_node(
    a: &NodeState,
    b: &NodeState,
    all: &[NodeState],
    out: &mut Vec<Finding>,
) {
    let (an, bn) = (a.node.as_str(), b.node.as_str());
    let Some(under) = b.underlay_addr() else {
        return;
    };
    let vteps: Vec<Ipv4Addr> = all
        .iter()
        .filter_map(|n| vtep(n).and_then(|(_, a)| a))
        .collect();
    let covering = a.routes.iter().find(|r| {
        r.kind == RouteType::Unicast
            && r.dst.len > 0
            && r.dst.contains(under)
            && r.oif.is_some_and(|i| a.tunnel_kind(i).is_some())
            && !(r.dst.len == 32 && vteps.contains(&r.dst.addr))
    });
    if let Some(r) = covering {
        out.push(finding(
            Severity::Error,
            "overlay-covers-node-address",
            &[an, bn],
            format!("route {r}"),
            format!("{bn}'s underlay address {under} routed into the tunnel"),
            format!(
                "{under} reached through the underlay ({})",
                a.uplink().map_or("the uplink", |l| l.name.as_str())
            ),
            "the pod network overlaps the node network: traffic to the nodes themselves (kubelet, \
             the API server, NodePorts) goes into the overlay and dies. Choose an IPPool CIDR \
             disjoint from the nodes' subnet (a new IPPool, migrate the pods, disable the old one)",
        ));
    }
}

/// Parameters both ends of a tunnel must share, and MTUs (once per unordered pair).
fn check_shared_params(a: &NodeState, b: &NodeState, out: &mut Vec<Finding>) {
    let (an, bn) = (a.node.as_str(), b.node.as_str());
    if let (Some((av, _)), Some((bv, _))) = (vtep(a), vtep(b)) {
        let (ax, bx) = (
            av.vxlan.clone().unwrap_or_default(),
            bv.vxlan.clone().unwrap_or_default(),
        );
        if ax.vni != bx.vni {
            out.push(finding(
                Severity::Error,
                "vni-mismatch",
                &[an, bn],
                format!("{} vni", av.name),
                format!("{an}: {:?}, {bn}: {:?}", ax.vni, bx.vni),
                "the same VNI on every node (Calico: FelixConfiguration vxlanVNI, 4096)",
                "a VXLAN device drops frames of another VNI (VXLAN_VNI_NOT_FOUND): set the same \
                 vxlanVNI for all nodes (FelixConfiguration) and let Felix recreate the device",
            ));
        }
        if ax.port != bx.port {
            out.push(finding(
                Severity::Error,
                "vxlan-port-mismatch",
                &[an, bn],
                format!("{} dstport", av.name),
                format!("{an}: {:?}, {bn}: {:?}", ax.port, bx.port),
                "the same UDP port on every node (Calico: FelixConfiguration vxlanPort, 4789)",
                "each node sends to its own port and listens on it: packets reach the other \
                 node on a port nothing listens on (NO_SOCKET / port unreachable). Set one \
                 vxlanPort for all nodes",
            ));
        }
        if av.mtu != bv.mtu {
            out.push(finding(
                Severity::Warning,
                "tunnel-mtu-mismatch",
                &[an, bn],
                format!("{} mtu", av.name),
                format!("{an}: {}, {bn}: {}", av.mtu, bv.mtu),
                "the same tunnel MTU on both ends",
                "large packets pass one way and not the other: set Calico's MTU once \
                 (installation calicoNetwork.mtu or FelixConfiguration vxlanMTU)",
            ));
        }
    }
    check_reverse_path(a, b, out);
    check_reverse_path(b, a, out);
}

/// Where B's pods' packets arrive on A, against A's route back to them: strict reverse-path
/// filtering drops them when the two differ.
fn check_reverse_path(a: &NodeState, b: &NodeState, out: &mut Vec<Finding>) {
    let (an, bn) = (a.node.as_str(), b.node.as_str());
    let a_blocks = blocks(a);
    let Some(a_blk) = a_blocks.first() else {
        return;
    };
    let Some(b_to_a) = b.lookup(probe_addr(a_blk)) else {
        return;
    };
    // The device B's packets arrive on at A: A's device of the same encapsulation.
    let arrive = match b_to_a.oif.and_then(|i| b.tunnel_kind(i)) {
        Some(TunnelKind::Vxlan) => a.vteps().next(),
        Some(TunnelKind::Ipip) => a.ipip_devs().next(),
        None => a.uplink(),
    };
    let Some(arrive) = arrive else { return };
    for blk in blocks(b) {
        let Some(back) = a.lookup(probe_addr(&blk)) else {
            continue;
        };
        if back.kind.discards() || back.oif == Some(arrive.ifindex) {
            continue;
        }
        if a.rp_filter(&arrive.name) == Some(1) {
            out.push(finding(
                Severity::Error,
                "rp-filter-asymmetric",
                &[an, bn],
                format!("sysctl net.ipv4.conf.{{all,{}}}.rp_filter", arrive.name),
                format!(
                    "1 (strict), while {bn}'s pods' packets arrive on {} and the route back is \
                     `{back}`",
                    arrive.name
                ),
                format!("routes back through {} or rp_filter 0/2 on it", arrive.name),
                format!(
                    "strict reverse-path filtering drops {bn}'s packets on {an} (IP_RPFILTER) \
                     because {an} would answer through another device: make the encapsulation \
                     the same both ways (IPPool vxlanMode/ipipMode), or set rp_filter to 2 \
                     (loose) on {}",
                    arrive.name
                ),
            ));
            return;
        }
    }
}
