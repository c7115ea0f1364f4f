//! Verdict rules against synthetic traces of the lab faults: node1 sends from pod A
//! (10.244.0.1) to pod C (10.244.4.1) on node2 (see `correlate::fixtures`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use lab::{Encap as LabEncap, Fault};

use super::{block_of, judge, Evidence};
use crate::event::HopRecord;
use crate::fixtures::{self, icmp, vxlan_encap, vxlan_path, CALI_A, CALI_C, ETH0, NS1, NS2, VXLAN};
use crate::model::{
    Direction::{self, Egress, Ingress},
    DropPoint, Encap, EncapKind, Outcome, PacketId, RouteLookup, Trace, TraceHop, Verdict,
};
use crate::names::is_noise;
use crate::topology::{Link, Topology};

const TUNL0: u32 = 4;
/// node2's second address, not on its uplink (wrong-tunnel-source).
const NODE2_OTHER: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);
/// An address no traced node owns.
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 9);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// The fixture topology with every address a node really has (discovery collects all of
/// them): the VTEP address on vxlan.calico and loopback besides the uplink address.
fn topo() -> Topology {
    let mut t = fixtures::topology();
    for (node, vtep) in t.nodes.iter_mut().zip(["10.244.0.0", "10.244.4.0"]) {
        node.addrs.extend([ip(vtep), Ipv4Addr::LOCALHOST]);
    }
    t
}

/// The fixture topology of a native-routing lab: no vxlan.calico (and no VTEP address), pods
/// with the uplink's MTU.
fn native_topo() -> Topology {
    let mut t = fixtures::topology();
    for node in &mut t.nodes {
        node.ifaces.retain(|i| i.ifindex != VXLAN);
        node.links.retain(|l| l.ifindex != VXLAN);
        for l in &mut node.links {
            l.mtu = 1500;
        }
        node.addrs.push(Ipv4Addr::LOCALHOST);
    }
    t
}

/// Pod A -> pod C over TCP to port 8080.
fn tcp() -> PacketId {
    PacketId {
        proto: 6,
        sport: 40_000,
        dport: 8080,
        tcp_seq: 1,
        icmp_id: 0,
        icmp_seq: 0,
        ..icmp(1)
    }
}

fn to(dst: Ipv4Addr) -> PacketId {
    PacketId { dst, ..icmp(1) }
}

fn encap_to(outer_dst: Ipv4Addr) -> Encap {
    Encap {
        outer_dst,
        ..vxlan_encap()
    }
}

fn ipip_encap() -> Encap {
    Encap {
        kind: EncapKind::Ipip,
        vni: 0,
        outer_sport: 0,
        outer_dport: 0,
        ..vxlan_encap()
    }
}

/// Builds a finished trace, resolving names through the topology the way the correlator does.
struct TraceBuilder<'a> {
    topo: &'a Topology,
    trace: Trace,
}

fn trace(topo: &Topology, packet: PacketId) -> TraceBuilder<'_> {
    TraceBuilder {
        topo,
        trace: Trace {
            packet,
            tcp_flags: 0,
            icmp_type: if packet.proto == 1 { 8 } else { 0 },
            hops: Vec::new(),
            outcome: Outcome::Incomplete,
            drop: None,
            routes: Vec::new(),
            verdict: None,
            tracer_loss: false,
            nat: Vec::new(),
            names: Vec::new(),
            answers: None,
        },
    }
}

impl TraceBuilder<'_> {
    fn names(&self, netns: u32, ifindex: u32) -> (String, String) {
        let node = self.topo.node(netns).expect("fixture netns");
        let ifname = node.link_name(ifindex).expect("fixture link");
        (node.name.clone(), ifname.to_string())
    }

    fn ts(&self) -> u64 {
        1_000 + 10_000 * self.trace.hops.len() as u64
    }

    fn hop(self, netns: u32, ifindex: u32, dir: Direction) -> Self {
        let rec = fixtures::hop(self.trace.packet, netns, ifindex, dir, self.ts());
        self.hops(&[rec])
    }

    /// Hops from fixture records (e.g. a prefix of `vxlan_path`).
    fn hops(mut self, recs: &[HopRecord]) -> Self {
        for r in recs {
            let (node, ifname) = self.names(r.netns, r.ifindex);
            let kind = self.topo.node(r.netns).and_then(|n| {
                n.ifaces
                    .iter()
                    .find(|i| i.ifindex == r.ifindex)
                    .map(|i| i.kind)
            });
            self.trace.hops.push(TraceHop {
                node: node.into(),
                netns: r.netns,
                ifindex: r.ifindex,
                ifname: ifname.into(),
                kind,
                dir: r.dir,
                ts_ns: r.ts_ns,
                len: r.len,
                encap: r.encap,
                translated: false,
                snap: None,
            });
        }
        self
    }

    /// The path of `vxlan_path` up to (excluding) hop `n`.
    fn vxlan_hops(self, n: usize) -> Self {
        let p = self.trace.packet;
        self.hops(&vxlan_path(p, 1_000)[..n])
    }

    /// The native-routing path of pod A -> pod C (pod A's veth, both uplinks, pod C's veth) up
    /// to (excluding) hop `n`.
    fn native_hops(self, n: usize) -> Self {
        let path = [
            (NS1, CALI_A, Ingress),
            (NS1, ETH0, Egress),
            (NS2, ETH0, Ingress),
            (NS2, CALI_C, Egress),
        ];
        path[..n]
            .iter()
            .fold(self, |b, &(netns, ifindex, dir)| b.hop(netns, ifindex, dir))
    }

    /// Encapsulates every hop on an uplink (as on the wire) with `e`.
    fn wire_encap(mut self, e: Encap) -> Self {
        for h in &mut self.trace.hops {
            if &*h.ifname == "eth0" {
                h.encap = Some(e);
            }
        }
        self
    }

    fn dropped(mut self, netns: u32, ifindex: u32, reason: &str, function: &str) -> Self {
        let (node, ifname) = self.names(netns, ifindex);
        self.trace.outcome = Outcome::Dropped;
        self.trace.drop = Some(DropPoint {
            node,
            netns,
            ifindex,
            ifname,
            ts_ns: self.ts(),
            reason: reason.into(),
            reason_code: 0,
            function: function.into(),
            location: 0xffff_ffff_8100_0000,
            len: 84,
            encap: None,
            snap: None,
        });
        self
    }

    fn drop_len(mut self, len: u32) -> Self {
        self.trace.drop.as_mut().expect("dropped first").len = len;
        self
    }

    fn drop_encap(mut self, e: Encap) -> Self {
        self.trace.drop.as_mut().expect("dropped first").encap = Some(e);
        self
    }

    /// A FIB lookup for the packet's destination that chose `dev` (via `gw`), in an unknown
    /// namespace (the classic tracepoint).
    fn route(self, dev: &str, gw: Option<&str>) -> Self {
        self.route_in(0, dev, gw)
    }

    /// The same, made in namespace `netns` (tp_btf with a route found).
    fn route_in(mut self, netns: u32, dev: &str, gw: Option<&str>) -> Self {
        self.trace.routes.push(RouteLookup {
            ts_ns: self.ts(),
            netns,
            table: 254,
            err: 0,
            src: self.trace.packet.src,
            dst: self.trace.packet.dst,
            oif: 0,
            iif: 0,
            dev: dev.into(),
            gw: gw.map(ip),
        });
        self
    }

    /// A FIB lookup for the packet's destination that found nothing (-ENETUNREACH).
    fn unroutable(mut self) -> Self {
        self = self.route("", None);
        self.trace.routes.last_mut().expect("just pushed").err = -101;
        self
    }

    fn outcome(mut self, outcome: Outcome) -> Self {
        self.trace.outcome = outcome;
        self
    }

    fn build(self) -> Trace {
        self.trace
    }
}

/// One fault: the trace, the topology it is judged against, and what the verdict must say.
struct Case {
    topo: Topology,
    trace: Trace,
    want: &'static str,
    facts: &'static [&'static str],
    /// The nodes' state (empty: the verdict from the trace alone).
    ev: Evidence,
}

impl Case {
    fn new(topo: Topology, build: impl FnOnce(&Topology) -> Trace) -> Self {
        let trace = build(&topo);
        Case {
            topo,
            trace,
            want: "",
            facts: &[],
            ev: Evidence::default(),
        }
    }

    fn with(self, ev: Evidence) -> Self {
        Case { ev, ..self }
    }

    fn expect(self, want: &'static str, facts: &'static [&'static str]) -> Self {
        Case {
            want,
            facts,
            ..self
        }
    }

    /// [`Case::expect`] with the verdict the lab's fault catalogue declares for `fault` in a lab
    /// of `encap`.
    fn expect_fault(self, fault: Fault, encap: LabEncap, facts: &'static [&'static str]) -> Self {
        let want = fault.tracer_report(encap).map_or("", |r| r.verdict);
        self.expect(want, facts)
    }

    fn verdict(&self) -> Verdict {
        judge(&self.trace, &self.topo, &self.ev).expect("a verdict for a dropped or lost trace")
    }

    /// Judges the case and checks the name and facts; returns the verdict for further checks.
    #[track_caller]
    fn check(self) -> Verdict {
        let v = self.verdict();
        assert_eq!(v.name, self.want, "{}", v.explanation);
        for fact in self.facts {
            assert!(
                v.explanation.contains(fact),
                "{}: explanation lacks {fact:?}: {}",
                v.name,
                v.explanation
            );
        }
        v
    }
}

/// Every case, with its name for messages.
mod cases;
mod context;
mod lab_shapes;
mod nat_cases;
use cases::*;
use context::*;
use lab_shapes::*;
use nat_cases::*;

fn all_cases() -> Vec<(&'static str, Case)> {
    macro_rules! cases {
        ($($f:ident),* $(,)?) => { vec![$((stringify!($f), $f())),*] };
    }
    cases![
        missing_route,
        missing_route_from_the_table,
        out_no_routes,
        uplink_next_hop_silent,
        missing_fdb,
        missing_fdb_6_13,
        vni_not_found,
        missing_arp,
        underlay_blocks_vxlan,
        underlay_blocks_ipip,
        policy_drop,
        policy_drop_forward,
        policy_drop_native,
        rp_filter,
        rp_filter_native,
        mtu,
        mtu_native,
        mtu_ipip,
        mtu_without_route,
        cidr_overlap,
        cidr_overlap_tunnel_hop,
        reply_to_vtep_address,
        vtep_address_no_arp,
        pod_to_node_firewall,
        wrong_tunnel_source,
        underlay_neighbour_failed,
        encap_to_stranger_neighbour_failed,
        lost_encap_to_node,
        lost_ipip_to_node,
        lost_encap_to_stranger,
        lost_encap_to_non_uplink_address,
        lost_native,
        unknown_reason,
        pod_proxy_arp_off,
        pod_ip_forward_off,
        pod_side_veth_down,
        pod_without_route,
        vtep_mac_changed,
        otherhost_on_uplink,
        vni_mismatch,
        stale_block_blackhole,
        no_such_pod,
        destination_veth_down,
        destination_route_removed,
        forwarding_off,
        uplink_down,
        calico_policy_drop,
        conntrack_invalid,
        host_rule_named,
        lost_on_a_port_nobody_listens,
        lost_after_arriving,
        nothing_listens,
        lab_stale_block_blackhole_native,
        lab_pod_veth_down_native,
        lab_vxlan_port_mismatch,
        lab_missing_service_rule,
        ping_to_a_service_address,
        lab_service_no_endpoints,
        lab_conntrack_full,
        lab_nodeport_no_snat_vxlan,
        lab_nat_outgoing_off,
    ]
}

/// Every fault of the lab's catalogue, in every encapsulation it applies to, has a synthetic
/// case whose verdict is the catalogue's and whose drop is where the catalogue says the tracer
/// finds it (node, device, reason, function).
#[test]
fn every_lab_fault_has_a_case_with_the_catalogues_verdict() {
    let mut problems = Vec::new();
    for (fault, encap) in Fault::cases() {
        let what = format!("{fault} ({encap})");
        let Some(want) = fault.tracer_report(encap) else {
            problems.push(format!("{what}: no tracer report in the lab's catalogue"));
            continue;
        };
        let Some(case) = lab_fault_case(fault, encap) else {
            problems.push(format!(
                "{what}: no synthetic case (add one to `lab_fault_case` in cases.rs)"
            ));
            continue;
        };
        let v = case.verdict();
        if v.name != want.verdict {
            problems.push(format!(
                "{what}: the case gets `{}`, the catalogue says `{}`: {}",
                v.name, want.verdict, v.explanation
            ));
        }
        // A trace the catalogue says is not dropped (lost on the wire, say): its outcome.
        if want.outcome != "dropped" {
            if case.trace.outcome.as_str() != want.outcome || case.trace.drop.is_some() {
                problems.push(format!(
                    "{what}: the case is {} (drop {:?}), the catalogue says {} without a drop",
                    case.trace.outcome.as_str(),
                    case.trace.drop.as_ref().map(|d| &d.reason),
                    want.outcome
                ));
            }
        } else if let Some(d) = case.trace.drop.as_ref() {
            check_drop_point(&case, d, want, &what, &mut problems);
        } else {
            problems.push(format!("{what}: the case is not dropped"));
        }
        // The facts too.
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case.check())) {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            problems.push(format!("{what}: {msg}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether the case's drop is where the catalogue's report says.
fn check_drop_point(
    case: &Case,
    d: &DropPoint,
    want: &lab::TracerReport,
    what: &str,
    problems: &mut Vec<String>,
) {
    {
        // "pod": a drop in the namespace of a pod of the catalogue's node (named after it).
        let pod =
            case.topo.pods.iter().find(|p| {
                p.netns == d.netns && p.pod_of.as_ref().is_some_and(|o| o.node == want.node)
            });
        let (node, device) = match (want.device, pod) {
            ("cali", _) => (
                want.node,
                &*case.trace.hops.first().expect("the pod's hop").ifname,
            ),
            ("pod", Some(p)) => (p.name.as_str(), &*d.ifname),
            (dev, _) => (want.node, dev),
        };
        let got = (&*d.node, &*d.ifname, &*d.reason);
        if got != (node, device, want.reason) || !d.function.starts_with(want.function) {
            problems.push(format!(
                "{what}: the case drops on {got:?} in {}, the catalogue says {:?} in {}",
                d.function,
                (want.node, want.device, want.reason),
                want.function
            ));
        }
    }
}

#[test]
fn missing_route_is_no_route_via_the_default_gateway() {
    missing_route().check();
}

/// A later lookup on another node (known namespace) does not hide the dropping node's own.
#[test]
fn the_dropping_nodes_own_route_lookup_decides() {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route_in(NS1, "eth0", Some("10.10.0.254"))
            .route_in(NS2, "cali0123456789a", None)
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "no-route",
        &[
            "node1 has no route for 10.244.4.1, so it followed the default route",
            "dev eth0 via 10.10.0.254",
        ],
    )
    .check();
}

#[test]
fn failed_route_lookup_is_no_route() {
    let v = out_no_routes().check();
    assert!(
        !v.explanation.contains("default route"),
        "{}",
        v.explanation
    );
}

#[test]
fn silent_uplink_next_hop_is_no_neighbour() {
    uplink_next_hop_silent().check();
}

#[test]
fn missing_fdb_is_no_vxlan_fdb() {
    missing_fdb().check();
}

#[test]
fn vxlan_no_remote_is_no_vxlan_fdb() {
    missing_fdb_6_13().check();
}

#[test]
fn vni_not_found_is_not_blamed_on_the_fdb() {
    vni_not_found().check();
}

#[test]
fn missing_arp_is_no_neighbour() {
    missing_arp().check();
}

#[test]
fn firewall_on_encapsulated_packet_is_underlay_drop() {
    underlay_blocks_vxlan().check();
    underlay_blocks_ipip().check();
}

#[test]
fn firewall_on_inner_packet_is_firewall_drop() {
    policy_drop().check();
    policy_drop_forward().check();
    policy_drop_native().check();
}

#[test]
fn rp_filter_drop() {
    let v = rp_filter().check();
    // `net.ipv4.conf.vxlan.calico.rp_filter` is no sysctl key.
    assert!(
        !v.explanation.contains("conf.vxlan.calico."),
        "{}",
        v.explanation
    );
    rp_filter_native().check();
}

#[test]
fn mtu_recommends_uplink_minus_overhead() {
    mtu().check();
    mtu_native().check();
    mtu_ipip().check();
    mtu_without_route().check();
}

#[test]
fn pod_to_node_address_through_the_overlay_is_cidr_overlap() {
    cidr_overlap().check();
    cidr_overlap_tunnel_hop().check();
}

#[test]
fn tunnel_addresses_are_not_cidr_overlap() {
    reply_to_vtep_address().check();
    vtep_address_no_arp().check();
}

#[test]
fn pod_to_node_address_outside_the_overlay_is_not_cidr_overlap() {
    pod_to_node_firewall().check();
}

#[test]
fn encapsulated_to_non_uplink_address_is_wrong_tunnel_endpoint() {
    wrong_tunnel_source().check();
}

#[test]
fn encapsulated_neighbour_failures() {
    underlay_neighbour_failed().check();
    encap_to_stranger_neighbour_failed().check();
}

#[test]
fn lost_traces() {
    lost_encap_to_node().check();
    lost_ipip_to_node().check();
    lost_encap_to_stranger().check();
    lost_encap_to_non_uplink_address().check();
    lost_native().check();
}

#[test]
fn unknown_reason_is_kernel_drop() {
    unknown_reason().check();
}

#[test]
fn noise() {
    let echo = icmp(1);
    let udp = PacketId {
        proto: 17,
        sport: 53_000,
        dport: 53,
        ..tcp()
    };
    let cases: &[(&str, PacketId, u8, bool)] = &[
        ("NO_SOCKET", echo, 0, true),
        ("NO_SOCKET", echo, 8, false),
        ("NO_SOCKET", tcp(), 0, false),
        ("NO_SOCKET", udp, 0, false),
        ("CONSUMED", tcp(), 0, true),
        ("NOT_DROPPED_YET", udp, 0, true),
        ("NETFILTER_DROP", echo, 0, false),
        ("NEIGH_FAILED", tcp(), 0, false),
    ];
    for &(reason, packet, icmp_type, want) in cases {
        assert_eq!(
            is_noise(reason, &packet, icmp_type),
            want,
            "{reason} proto {} icmp type {icmp_type}",
            packet.proto
        );
    }
}

#[test]
fn no_verdict_for_delivered_or_incomplete_traces() {
    let t = topo();
    let delivered = trace(&t, icmp(1))
        .vxlan_hops(6)
        .outcome(Outcome::Delivered)
        .build();
    assert_eq!(judge(&delivered, &t, &Evidence::default()), None);
    let incomplete = trace(&t, icmp(1)).vxlan_hops(2).build();
    assert_eq!(incomplete.outcome, Outcome::Incomplete);
    assert_eq!(judge(&incomplete, &t, &Evidence::default()), None);
    // Even with a drop attached, only the outcome decides.
    let mut with_drop = missing_arp().trace;
    with_drop.outcome = Outcome::Incomplete;
    assert_eq!(judge(&with_drop, &t, &Evidence::default()), None);
}

#[test]
fn dropped_without_a_drop_point_has_no_verdict() {
    let t = topo();
    let tr = trace(&t, icmp(1))
        .hop(NS1, CALI_A, Ingress)
        .outcome(Outcome::Dropped)
        .build();
    assert_eq!(judge(&tr, &t, &Evidence::default()), None);
}

#[test]
fn block_of_is_the_26() {
    assert_eq!(block_of(ip("10.244.4.1")), "10.244.4.0/26");
    assert_eq!(block_of(ip("10.244.4.77")), "10.244.4.64/26");
    assert_eq!(block_of(ip("10.244.4.255")), "10.244.4.192/26");
}

/// The names listed in the `Names:` paragraph of the module documentation.
fn documented_names() -> BTreeSet<String> {
    let src = include_str!("../mod.rs");
    let doc: Vec<&str> = src.lines().map_while(|l| l.strip_prefix("//!")).collect();
    let start = doc
        .iter()
        .position(|l| l.trim_start().starts_with("Names:"))
        .expect("a `Names:` paragraph in the module docs");
    let para: Vec<&str> = doc[start..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .copied()
        .collect();
    para.join(" ")
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_verdict_name_is_documented_and_every_documented_name_is_produced() {
    let documented = documented_names();
    assert_eq!(documented.len(), 32, "{documented:?}");
    let mut produced = BTreeSet::new();
    for (case, c) in all_cases() {
        let v = c.verdict();
        assert_eq!(v.name, c.want, "{case}: {}", v.explanation);
        assert!(
            documented.contains(v.name),
            "{case}: `{}` is not in the module's list {documented:?}",
            v.name
        );
        produced.insert(v.name.to_string());
    }
    assert_eq!(
        produced, documented,
        "a documented verdict no case produces"
    );
}

#[test]
fn explanations_are_well_formed() {
    for (case, c) in all_cases() {
        let e = c.verdict().explanation;
        assert!(
            !e.contains(['{', '}']),
            "{case}: unformatted placeholder: {e}"
        );
        assert!(!e.contains("  "), "{case}: double space: {e}");
        assert!(!e.contains(" ."), "{case}: space before full stop: {e}");
        assert!(e.ends_with('.'), "{case}: not a sentence: {e}");
    }
}
