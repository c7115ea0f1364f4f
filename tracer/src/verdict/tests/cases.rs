//! The verdict cases: one synthetic trace per situation, with the verdict and the facts its
//! explanation must contain. The cases of the lab's faults take their verdict name from the
//! lab's fault catalogue ([`Case::expect_fault`]), and [`lab_fault_case`] names the case of
//! each fault and encapsulation the catalogue declares (a unit test fails when one is missing).

use super::*;

/// The synthetic trace of `fault`'s probe in a lab of `encap`, shaped like the trace the tracer
/// reports there (the catalogue's drop node, device, reason and function); `None` if there is
/// none yet.
pub(super) fn lab_fault_case(fault: Fault, encap: LabEncap) -> Option<Case> {
    use Fault::*;
    use LabEncap::{None as Native, Vxlan};
    Some(match (fault, encap) {
        // The default route is taken the same way with or without a tunnel.
        (EncapNever | MissingRoute, _) => missing_route(),
        (MissingFdb, Vxlan) => missing_fdb(),
        (MissingArp, Vxlan) => missing_arp(),
        (UnderlayBlocksVxlan, Vxlan) => underlay_blocks_vxlan(),
        (PolicyDrop, Vxlan) => policy_drop_forward(),
        (PolicyDrop, Native) => policy_drop_native(),
        (RpFilter, Vxlan) => rp_filter(),
        (RpFilter, Native) => rp_filter_native(),
        (Mtu, Vxlan) => mtu(),
        (Mtu, Native) => mtu_native(),
        (PodCidrOverlap, Vxlan) => cidr_overlap(),
        (WrongTunnelSource, Vxlan) => wrong_tunnel_source(),
        // The faults of issue 13: mostly the cases of the verdicts from the nodes' state
        // (`context.rs`), and the lab's shapes they lack here.
        (VtepMacChanged, Vxlan) => vtep_mac_changed(),
        (StaleBlockBlackhole, Vxlan) => stale_block_blackhole(),
        (StaleBlockBlackhole, Native) => lab_stale_block_blackhole_native(),
        (IpForwardOff, Vxlan) => lab_ip_forward_off(topo(), VXLAN),
        (IpForwardOff, Native) => lab_ip_forward_off(native_topo(), ETH0),
        (ProxyArpOff, _) => pod_proxy_arp_off(),
        (PodVethDown, Vxlan) => destination_veth_down(),
        (PodVethDown, Native) => lab_pod_veth_down_native(),
        (ForwardDropCali, Vxlan) => host_rule_named(),
        (ForwardDropCali, Native) => lab_netfilter_native(
            "FORWARD",
            "oifname \"cali+\"",
            icmp(1),
            Fault::ForwardDropCali,
        ),
        (CalicoPolicyDrop, Vxlan) => calico_policy_drop(),
        (CalicoPolicyDrop, Native) => lab_netfilter_native(
            "cali-pi-_j-GxXDRjvl8seUeXzkb",
            "tcp dport 8080",
            tcp(),
            Fault::CalicoPolicyDrop,
        ),
        (ConntrackInvalid, Vxlan) => conntrack_invalid(),
        (ConntrackInvalid, Native) => lab_netfilter_native(
            "cali-tw-calie0e1e2e3e4f",
            "ct state invalid",
            tcp(),
            Fault::ConntrackInvalid,
        ),
        (VniMismatch, Vxlan) => vni_mismatch(),
        (VxlanPortMismatch, Vxlan) => lab_vxlan_port_mismatch(),
        // The NAT faults (a lab with Services) take the same path in both labs, but for the
        // node the un-DNATed reply would have come back through.
        (MissingServiceRule, _) => lab_missing_service_rule(),
        (ServiceNoEndpoints, _) => lab_service_no_endpoints(),
        (ConntrackFull, _) => lab_conntrack_full(),
        (NodeportNoSnat, e) => lab_nodeport_no_snat(e),
        (NatOutgoingOff, _) => lab_nat_outgoing_off(),
        _ => return None,
    })
}

// ---- The lab faults ----

/// encap-never / missing-route: the pod route is missing, the default route sends the packet
/// to a gateway nobody owns, and neighbour resolution on eth0 gives up.
pub(super) fn missing_route() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("eth0", Some("10.10.0.254"))
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect_fault(
        Fault::MissingRoute,
        LabEncap::Vxlan,
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
pub(super) fn missing_route_from_the_table() -> Case {
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
pub(super) fn out_no_routes() -> Case {
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
pub(super) fn uplink_next_hop_silent() -> Case {
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

pub(super) fn missing_fdb() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, VXLAN, Egress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "NO_TX_TARGET", "vxlan_xmit+0x2a1")
            .build()
    })
    .expect_fault(
        Fault::MissingFdb,
        LabEncap::Vxlan,
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
pub(super) fn missing_fdb_6_13() -> Case {
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
pub(super) fn vni_not_found() -> Case {
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

pub(super) fn missing_arp() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", Some("10.244.4.0"))
            .dropped(NS1, VXLAN, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect_fault(
        Fault::MissingArp,
        LabEncap::Vxlan,
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

pub(super) fn underlay_blocks_vxlan() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x3f2")
            .drop_encap(vxlan_encap())
            .build()
    })
    .expect_fault(
        Fault::UnderlayBlocksVxlan,
        LabEncap::Vxlan,
        &[
            "node2 dropped it on eth0 (NETFILTER_DROP in nft_do_chain+0x3f2)",
            "firewall rule on node2",
            "vxlan 10.10.0.1 -> 10.10.0.2 UDP 4789",
            "blocks Calico's vxlan traffic",
            "UDP port 4789",
        ],
    )
}

pub(super) fn underlay_blocks_ipip() -> Case {
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

pub(super) fn policy_drop() -> Case {
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

/// The lab's `policy-drop` over VXLAN: the forward hook drops the decapsulated packet, before
/// it has an output device, so the drop is on vxlan.calico.
pub(super) fn policy_drop_forward() -> Case {
    Case::new(topo(), |t| {
        trace(t, tcp())
            .vxlan_hops(5)
            .route_in(NS1, "vxlan.calico", Some("10.244.4.0"))
            .route_in(NS2, "calie0e1e2e3e4f", None)
            .dropped(NS2, VXLAN, "NETFILTER_DROP", "nft_do_chain+0x46f")
            .build()
    })
    .expect_fault(
        Fault::PolicyDrop,
        LabEncap::Vxlan,
        &[
            "node2 dropped it on vxlan.calico (NETFILTER_DROP in nft_do_chain+0x46f)",
            "rule on node2 dropped the packet from 10.244.0.1 to 10.244.4.1 (tcp port 8080)",
            "network policy",
        ],
    )
}

/// The lab's `policy-drop` with native routing: dropped on node2's uplink it came in on.
pub(super) fn policy_drop_native() -> Case {
    Case::new(native_topo(), |t| {
        trace(t, tcp())
            .native_hops(3)
            .route_in(NS1, "eth0", Some("10.10.0.2"))
            .route_in(NS2, "calie0e1e2e3e4f", None)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x46f")
            .build()
    })
    .expect_fault(
        Fault::PolicyDrop,
        LabEncap::None,
        &[
            "node2 dropped it on eth0 (NETFILTER_DROP in nft_do_chain+0x46f)",
            "rule on node2 dropped the packet from 10.244.0.1 to 10.244.4.1 (tcp port 8080)",
            "network policy",
        ],
    )
}

pub(super) fn rp_filter() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "IP_RPFILTER", "ip_rcv_finish_core+0x2b4")
            .build()
    })
    .expect_fault(
        Fault::RpFilter,
        LabEncap::Vxlan,
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

/// The lab's `rp-filter` with native routing: the packet arrives on node2's uplink, the route
/// back leaves by another NIC.
pub(super) fn rp_filter_native() -> Case {
    Case::new(native_topo(), |t| {
        trace(t, icmp(1))
            .native_hops(3)
            .route_in(NS1, "eth0", Some("10.10.0.2"))
            .route_in(NS2, "calie0e1e2e3e4f", None)
            .dropped(NS2, ETH0, "IP_RPFILTER", "ip_rcv_finish_core+0x25b")
            .build()
    })
    .expect_fault(
        Fault::RpFilter,
        LabEncap::None,
        &[
            "node2 dropped it on eth0 (IP_RPFILTER in ip_rcv_finish_core+0x25b)",
            "the packet from 10.244.0.1 arrived on eth0",
            "rp_filter=1",
            "net.ipv4.conf.eth0.rp_filter",
            "on node2",
        ],
    )
}

/// vxlan.calico has MTU 1000 while the uplink has 1500 and the pods send 1400-byte packets.
pub(super) fn mtu() -> Case {
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
    .expect_fault(
        Fault::Mtu,
        LabEncap::Vxlan,
        &[
            "node1 dropped it on cali3f2a9b0c1d4 (PKT_TOO_BIG in ip_forward+0x1c6)",
            "the 1400-byte packet (DF set) does not fit vxlan.calico (MTU 1000)",
            "set the tunnel MTU to 1450 (uplink 1500 - 50)",
            "vxlanMtu",
        ],
    )
}

/// The lab's `mtu` with native routing: node1's uplink has MTU 1000, the pods 1500, and the
/// probe (1228 bytes, DF) is dropped by ip_forward on the pod's veth it came in on.
pub(super) fn mtu_native() -> Case {
    let mut topo = native_topo();
    topo.nodes[0]
        .links
        .iter_mut()
        .find(|l| l.name == "eth0")
        .expect("fixture link")
        .mtu = 1000;
    Case::new(topo, |t| {
        trace(t, icmp(1))
            .hop(NS1, CALI_A, Ingress)
            .route_in(NS1, "eth0", Some("10.10.0.2"))
            .dropped(NS1, CALI_A, "PKT_TOO_BIG", "ip_forward+0x2c0")
            .drop_len(1228)
            .build()
    })
    .expect_fault(
        Fault::Mtu,
        LabEncap::None,
        &[
            "node1 dropped it on cali3f2a9b0c1d4 (PKT_TOO_BIG in ip_forward+0x2c0)",
            "the 1228-byte packet (DF set) does not fit eth0 (MTU 1000)",
        ],
    )
}

pub(super) fn mtu_ipip() -> Case {
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
pub(super) fn mtu_without_route() -> Case {
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
pub(super) fn cidr_overlap() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.10.0.2")))
            .hop(NS1, CALI_A, Ingress)
            .route("vxlan.calico", None)
            .dropped(NS1, VXLAN, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .expect_fault(
        Fault::PodCidrOverlap,
        LabEncap::Vxlan,
        &[
            "10.10.0.2 is the address of node node2, but node1 routed the packet into the overlay (vxlan.calico)",
            "node1 dropped it on vxlan.calico (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "overlaps the node network",
            "IP pool",
        ],
    )
}

/// The same overlap, with the tunnel hop seen and the drop elsewhere.
pub(super) fn cidr_overlap_tunnel_hop() -> Case {
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
pub(super) fn reply_to_vtep_address() -> Case {
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
pub(super) fn vtep_address_no_arp() -> Case {
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
pub(super) fn pod_to_node_firewall() -> Case {
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
pub(super) fn wrong_tunnel_source() -> Case {
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
    .expect_fault(
        Fault::WrongTunnelSource,
        LabEncap::Vxlan,
        &[
            "node1 dropped it on eth0 (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "the vxlan packet was sent to 10.20.0.2, an address of node2 that is not on its underlay interface",
            "IP_AUTODETECTION_METHOD",
        ],
    )
}

/// Encapsulated to node2's underlay address, and node1 cannot resolve it.
pub(super) fn underlay_neighbour_failed() -> Case {
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

pub(super) fn encap_to_stranger_neighbour_failed() -> Case {
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

pub(super) fn lost_encap_to_node() -> Case {
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

pub(super) fn lost_ipip_to_node() -> Case {
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

pub(super) fn lost_encap_to_stranger() -> Case {
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
pub(super) fn lost_encap_to_non_uplink_address() -> Case {
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

pub(super) fn lost_native() -> Case {
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

pub(super) fn unknown_reason() -> Case {
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
