//! Verdict rules against synthetic traces of the lab faults: node1 sends from pod A
//! (10.244.0.1) to pod C (10.244.4.1) on node2 (see `correlate::fixtures`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::{block_of, is_noise, judge, Verdict};
use crate::correlate::fixtures::{
    self, icmp, vxlan_encap, vxlan_path, CALI_A, CALI_C, ETH0, NS1, NS2, VXLAN,
};
use crate::correlate::{DropPoint, Outcome, RouteLookup, Trace, TraceHop};
use crate::event::{
    Direction::{self, Egress, Ingress},
    Encap, EncapKind, HopRecord, PacketId,
};
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
                node,
                netns: r.netns,
                ifindex: r.ifindex,
                ifname,
                kind,
                dir: r.dir,
                ts_ns: r.ts_ns,
                len: r.len,
                encap: r.encap,
            });
        }
        self
    }

    /// The path of `vxlan_path` up to (excluding) hop `n`.
    fn vxlan_hops(self, n: usize) -> Self {
        let p = self.trace.packet;
        self.hops(&vxlan_path(p, 1_000)[..n])
    }

    /// Encapsulates every hop on an uplink (as on the wire) with `e`.
    fn wire_encap(mut self, e: Encap) -> Self {
        for h in &mut self.trace.hops {
            if h.ifname == "eth0" {
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

    /// A FIB lookup for the packet's destination that chose `dev` (via `gw`).
    fn route(mut self, dev: &str, gw: Option<&str>) -> Self {
        self.trace.routes.push(RouteLookup {
            ts_ns: self.ts(),
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
}

impl Case {
    fn new(topo: Topology, build: impl FnOnce(&Topology) -> Trace) -> Self {
        let trace = build(&topo);
        Case {
            topo,
            trace,
            want: "",
            facts: &[],
        }
    }

    fn expect(self, want: &'static str, facts: &'static [&'static str]) -> Self {
        Case {
            want,
            facts,
            ..self
        }
    }

    fn verdict(&self) -> Verdict {
        judge(&self.trace, &self.topo).expect("a verdict for a dropped or lost trace")
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

// ---- The lab faults ----

/// encap-never / missing-route: the pod route is missing, the default route sends the packet
/// to a gateway nobody owns, and neighbour resolution on eth0 gives up.
fn missing_route() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("eth0", Some("10.10.0.254"))
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "no-route",
        &[
            "node1 dropped it on eth0 (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "node1 has no route for 10.244.4.1, so it followed the default route",
            "dev eth0 via 10.10.0.254",
            "10.244.4.0/26",
            "vxlanMode",
            "ipipMode",
        ],
    )
}

/// The same without a route-lookup event (the tracepoint missed it): the routing table seen at
/// start-up says the longest match for the pod is the default route.
fn missing_route_from_the_table() -> Case {
    let mut t = topo();
    t.nodes[0].routes = vec![
        crate::topology::Route {
            dst: ip("0.0.0.0"),
            prefix_len: 0,
            gw: Some(ip("10.10.0.254")),
            dev: "eth0".into(),
        },
        crate::topology::Route {
            dst: ip("10.10.0.0"),
            prefix_len: 24,
            gw: None,
            dev: "eth0".into(),
        },
        crate::topology::Route {
            dst: ip("10.244.0.1"),
            prefix_len: 32,
            gw: None,
            dev: "cali3f2a9b0c1d4".into(),
        },
    ];
    Case::new(t, |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "no-route",
        &[
            "node1 has no route for 10.244.4.1, so it followed the default route",
            "vxlanMode",
        ],
    )
}

/// A forwarded packet whose lookup found no route at all: IP_INNOROUTES in ip_error.
fn out_no_routes() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .unroutable()
            .dropped(NS1, CALI_A, "IP_INNOROUTES", "ip_error+0x6f")
            .build()
    })
    .expect(
        "no-route",
        &[
            "node1 dropped it on cali3f2a9b0c1d4 (IP_INNOROUTES in ip_error+0x6f)",
            "node1 has no route for 10.244.4.1 (route lookup for 10.244.4.1 in table 254: no route, error -101)",
            "vxlanMode",
        ],
    )
}

/// NEIGH_FAILED on the uplink for a gateway that is not the default one (a native route via
/// node2 that does not answer ARP): a plain neighbour failure.
fn uplink_next_hop_silent() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("eth0", Some("10.10.0.2"))
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "no-neighbour",
        &[
            "node1 dropped it on eth0",
            "the next hop for 10.244.4.1 on eth0 did not answer ARP",
            "dev eth0 via 10.10.0.2",
            "ip neigh show dev eth0",
        ],
    )
}

fn missing_fdb() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "NO_TX_TARGET", "vxlan_xmit+0x2a1")
            .build()
    })
    .expect(
        "no-vxlan-fdb",
        &[
            "node1 dropped it on vxlan.calico (NO_TX_TARGET in vxlan_xmit+0x2a1)",
            "dev vxlan.calico via 10.244.4.0",
            "FDB",
            "bridge fdb show dev vxlan.calico",
            "calico-node (Felix) on node1",
        ],
    )
}

/// The same vxlan_xmit drop on Linux 6.13, before NO_TX_TARGET was renamed.
fn missing_fdb_6_13() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "VXLAN_NO_REMOTE", "vxlan_xmit+0x2a1")
            .build()
    })
    .expect("no-vxlan-fdb", &["VXLAN_NO_REMOTE", "bridge fdb show"])
}

/// vxlan_rcv on the receiver found no device for the VNI: not an FDB problem of the sender.
fn vni_not_found() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "VXLAN_VNI_NOT_FOUND", "vxlan_rcv+0x1b3")
            .drop_encap(vxlan_encap())
            .build()
    })
    .expect(
        "kernel-drop",
        &["node2 dropped it on eth0 (VXLAN_VNI_NOT_FOUND in vxlan_rcv+0x1b3)"],
    )
}

fn missing_arp() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "no-neighbour",
        &[
            "node1 dropped it on vxlan.calico (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "node1 has no neighbour (ARP) entry for 10.244.4.0 on vxlan.calico",
            "dev vxlan.calico via 10.244.4.0",
            "ip neigh show dev vxlan.calico",
            "PERMANENT",
            "calico-node (Felix) on node1",
        ],
    )
}

fn underlay_blocks_vxlan() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x3f2")
            .drop_encap(vxlan_encap())
            .build()
    })
    .expect(
        "underlay-drop",
        &[
            "node2 dropped it on eth0 (NETFILTER_DROP in nft_do_chain+0x3f2)",
            "firewall rule on node2",
            "vxlan 10.10.0.1 -> 10.10.0.2 UDP 4789",
            "blocks Calico's vxlan traffic",
            "UDP port 4789",
        ],
    )
}

fn underlay_blocks_ipip() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x3f2")
            .drop_encap(ipip_encap())
            .build()
    })
    .expect(
        "underlay-drop",
        &["ipip 10.10.0.1 -> 10.10.0.2)", "IP protocol 4"],
    )
}

fn policy_drop() -> Case {
    Case::new(topo(), |t| {
        trace(t, tcp())
            .vxlan_hops(5)
            .dropped(NS2, CALI_C, "NETFILTER_DROP", "nft_do_chain+0x3f2")
            .build()
    })
    .expect(
        "firewall-drop",
        &[
            "node2 dropped it on calie0e1e2e3e4f (NETFILTER_DROP in nft_do_chain+0x3f2)",
            "rule on node2 dropped the packet from 10.244.0.1 to 10.244.4.1 (tcp port 8080)",
            "network policy",
            "calicoctl get networkpolicy",
        ],
    )
}

fn rp_filter() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "IP_RPFILTER", "ip_rcv_finish_core+0x2b4")
            .build()
    })
    .expect(
        "rp-filter",
        &[
            "node2 dropped it on vxlan.calico (IP_RPFILTER in ip_rcv_finish_core+0x2b4)",
            "the packet from 10.244.0.1 arrived on vxlan.calico",
            "rp_filter=1",
            "net.ipv4.conf.all.rp_filter",
            // A dot inside a device name is written '/' in a sysctl key.
            "net.ipv4.conf.vxlan/calico.rp_filter",
            "on node2",
        ],
    )
}

/// vxlan.calico has MTU 1000 while the uplink has 1500 and the pods send 1400-byte packets.
fn mtu() -> Case {
    let mut topo = topo();
    let node1 = &mut topo.nodes[0];
    node1
        .links
        .iter_mut()
        .find(|l| l.name == "vxlan.calico")
        .expect("fixture link")
        .mtu = 1000;
    Case::new(topo, |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, CALI_A, "PKT_TOO_BIG", "ip_forward+0x1c6")
            .drop_len(1400)
            .build()
    })
    .expect(
        "mtu",
        &[
            "node1 dropped it on cali3f2a9b0c1d4 (PKT_TOO_BIG in ip_forward+0x1c6)",
            "the 1400-byte packet (DF set) does not fit vxlan.calico (MTU 1000)",
            "set the tunnel MTU to 1450 (uplink 1500 - 50)",
            "vxlanMtu",
        ],
    )
}

fn mtu_ipip() -> Case {
    let mut topo = topo();
    topo.nodes[0].links.push(Link {
        ifindex: TUNL0,
        name: "tunl0".into(),
        mtu: 1000,
    });
    Case::new(topo, |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("tunl0", Some("10.10.0.2"))
            .dropped(NS1, CALI_A, "PKT_TOO_BIG", "ip_forward+0x1c6")
            .drop_len(1400)
            .build()
    })
    .expect(
        "mtu",
        &[
            "does not fit tunl0 (MTU 1000)",
            "set the tunnel MTU to 1480 (uplink 1500 - 20)",
            "ipipMtu",
        ],
    )
}

/// No lookup was seen: the advice still follows from the uplink MTU.
fn mtu_without_route() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .dropped(NS1, CALI_A, "PKT_TOO_BIG", "ip_forward+0x1c6")
            .drop_len(1400)
            .build()
    })
    .expect(
        "mtu",
        &["does not fit the next hop.", "1450 (uplink 1500 - 50)"],
    )
}

/// pod -> node2's address is routed into the overlay and dies there.
fn cidr_overlap() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.10.0.2")))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", None)
            .dropped(NS1, VXLAN, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect(
        "cidr-overlap",
        &[
            "10.10.0.2 is the address of node node2, but node1 routed the packet into the overlay (vxlan.calico)",
            "node1 dropped it on vxlan.calico (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "overlaps the node network",
            "IP pool",
        ],
    )
}

/// The same overlap, with the tunnel hop seen and the drop elsewhere.
fn cidr_overlap_tunnel_hop() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.10.0.2")))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .dropped(NS1, VXLAN, "NO_TX_TARGET", "vxlan_xmit+0x2a1")
            .build()
    })
    .expect(
        "cidr-overlap",
        &["routed the packet into the overlay (vxlan.calico)"],
    )
}

/// A reply from pod C to node1's VTEP address (host-to-remote-pod traffic uses it as source)
/// goes through the overlay by design: a missing FDB entry on node2 is no CIDR overlap.
fn reply_to_vtep_address() -> Case {
    Case::new(topo(), |t| {
        let p = PacketId {
            src: ip("10.244.4.1"),
            dst: ip("10.244.0.0"),
            ..icmp(1)
        };
        trace(t, p)
            .hop(NS2, CALI_C, Ingress)
            .hop(NS2, VXLAN, Egress)
            .route("vxlan.calico", Some("10.244.0.0"))
            .dropped(NS2, VXLAN, "NO_TX_TARGET", "vxlan_xmit+0x2a1")
            .build()
    })
    .expect(
        "no-vxlan-fdb",
        &["node2 dropped it on vxlan.calico", "on node2"],
    )
}

/// pod -> node2's VTEP address with node1's ARP entry for it missing.
fn vtep_address_no_arp() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.244.4.0")))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect("no-neighbour", &["no neighbour (ARP) entry for 10.244.4.0"])
}

/// pod -> node2's address over the underlay, blocked by node2's host firewall: no overlay.
fn pod_to_node_firewall() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.10.0.2")))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, ETH0, Egress)
            .hop(NS2, ETH0, Ingress)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x3f2")
            .build()
    })
    .expect("firewall-drop", &["from 10.244.0.1 to 10.10.0.2 (icmp)"])
}

/// The VTEP of node2 was autodetected on a NIC that is not its uplink.
fn wrong_tunnel_source() -> Case {
    let mut topo = topo();
    topo.nodes[1].addrs.push(NODE2_OTHER);
    Case::new(topo, |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .drop_encap(encap_to(NODE2_OTHER))
            .build()
    })
    .expect(
        "wrong-tunnel-endpoint",
        &[
            "node1 dropped it on eth0 (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "the vxlan packet was sent to 10.20.0.2, an address of node2 that is not on its underlay interface",
            "IP_AUTODETECTION_METHOD",
        ],
    )
}

/// Encapsulated to node2's underlay address, and node1 cannot resolve it.
fn underlay_neighbour_failed() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .drop_encap(vxlan_encap())
            .build()
    })
    .expect(
        "underlay-drop",
        &[
            "node1 could not resolve the underlay neighbour for 10.10.0.2 (node2)",
            "ping 10.10.0.2",
        ],
    )
}

fn encap_to_stranger_neighbour_failed() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .drop_encap(encap_to(STRANGER))
            .build()
    })
    .expect(
        "wrong-tunnel-endpoint",
        &[
            "sent to 10.30.0.9, which is no traced node's address",
            "IP_AUTODETECTION_METHOD",
        ],
    )
}

// ---- Lost traces: the last hop is an uplink egress ----

fn lost_encap_to_node() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(3)
            .outcome(Outcome::Lost)
            .build()
    })
    .expect(
        "underlay-drop",
        &[
            "the vxlan packet left node1 eth0 for 10.10.0.2 but never reached that node's uplink",
            "UDP port 4789",
        ],
    )
}

fn lost_ipip_to_node() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(3)
            .wire_encap(ipip_encap())
            .outcome(Outcome::Lost)
            .build()
    })
    .expect(
        "underlay-drop",
        &["the ipip packet left node1 eth0", "IP protocol 4"],
    )
}

fn lost_encap_to_stranger() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(3)
            .wire_encap(encap_to(STRANGER))
            .outcome(Outcome::Lost)
            .build()
    })
    .expect(
        "wrong-tunnel-endpoint",
        &[
            "the vxlan packet left node1 eth0 for 10.30.0.9, which is no traced node",
            "IP_AUTODETECTION_METHOD",
            "bridge fdb show dev vxlan.calico",
        ],
    )
}

/// Sent to node2's address that is not on its uplink, and never seen again: as for the drop.
fn lost_encap_to_non_uplink_address() -> Case {
    let mut topo = topo();
    topo.nodes[1].addrs.push(NODE2_OTHER);
    Case::new(topo, |t| {
        trace(t, icmp(1))
            .vxlan_hops(3)
            .wire_encap(encap_to(NODE2_OTHER))
            .outcome(Outcome::Lost)
            .build()
    })
    .expect(
        "wrong-tunnel-endpoint",
        &[
            "left node1 eth0 for 10.20.0.2, an address of node2 that is not on its underlay interface",
            "IP_AUTODETECTION_METHOD",
        ],
    )
}

fn lost_native() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, ETH0, Egress)
            .outcome(Outcome::Lost)
            .build()
    })
    .expect(
        "underlay-drop",
        &[
            "the packet left node1 eth0 for 10.244.4.1",
            "BGP",
            "vxlanMode: Always",
        ],
    )
}

fn unknown_reason() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "TC_EGRESS", "tcf_classify+0x55")
            .build()
    })
    .expect(
        "kernel-drop",
        &[
            "node1 dropped it on vxlan.calico (TC_EGRESS in tcf_classify+0x55)",
            "dev vxlan.calico via 10.244.4.0",
            "No rule",
        ],
    )
}

/// Every case, with its name for messages.
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
        rp_filter,
        mtu,
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
    ]
}

#[test]
fn missing_route_is_no_route_via_the_default_gateway() {
    missing_route().check();
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
}

#[test]
fn mtu_recommends_uplink_minus_overhead() {
    mtu().check();
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
    assert_eq!(judge(&delivered, &t), None);
    let incomplete = trace(&t, icmp(1)).vxlan_hops(2).build();
    assert_eq!(incomplete.outcome, Outcome::Incomplete);
    assert_eq!(judge(&incomplete, &t), None);
    // Even with a drop attached, only the outcome decides.
    let mut with_drop = missing_arp().trace;
    with_drop.outcome = Outcome::Incomplete;
    assert_eq!(judge(&with_drop, &t), None);
}

#[test]
fn dropped_without_a_drop_point_has_no_verdict() {
    let t = topo();
    let tr = trace(&t, icmp(1))
        .hop(NS1, CALI_A, Ingress)
        .outcome(Outcome::Dropped)
        .build();
    assert_eq!(judge(&tr, &t), None);
}

#[test]
fn block_of_is_the_26() {
    assert_eq!(block_of(ip("10.244.4.1")), "10.244.4.0/26");
    assert_eq!(block_of(ip("10.244.4.77")), "10.244.4.64/26");
    assert_eq!(block_of(ip("10.244.4.255")), "10.244.4.192/26");
}

/// The names listed in the `Names:` paragraph of the module documentation.
fn documented_names() -> BTreeSet<String> {
    let src = include_str!("mod.rs");
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
    assert_eq!(documented.len(), 10, "{documented:?}");
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
