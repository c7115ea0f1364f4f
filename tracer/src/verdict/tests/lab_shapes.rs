//! The lab's faults of the nodes' state (issue 13) in the shapes `context.rs` has no case
//! for: native routing, node2's forwarding off, a NO_SOCKET drop on a port nobody listens on.
//! Named by [`lab_fault_case`](super::cases::lab_fault_case) with the catalogue's verdicts.

use super::*;

/// Both nodes' state as the state reader returns it (`context::node_state`), after `change`.
fn lab_evidence(change: impl FnOnce(&mut [crate::state::NodeState; 2])) -> super::Evidence {
    let mut ev = super::Evidence::new([(NS1, node_state(1)), (NS2, node_state(2))]);
    let mut now = [node_state(1), node_state(2)];
    change(&mut now);
    let [a, b] = now;
    ev.set(NS1, a);
    ev.set(NS2, b);
    ev
}

/// `stale-block-blackhole` with native routing: node1 blackholes node2's block; the packet
/// dies on the pod's veth it came in on.
pub(super) fn lab_stale_block_blackhole_native() -> Case {
    Case::new(native_topo(), |t| {
        trace(t, icmp(1))
            .native_hops(1)
            .dropped(NS1, CALI_A, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(lab_evidence(|n| {
        n[0].routes.retain(|r| r.dst.to_string() != "10.244.4.0/26");
        let mut bh = n[0].routes[1].clone();
        bh.dst = "10.244.4.0/26".parse().expect("block");
        n[0].routes.push(bh);
    }))
    .expect_fault(
        Fault::StaleBlockBlackhole,
        LabEncap::None,
        &["node2's IPAM block", "stale block affinity"],
    )
}

/// `ip-forward-off` on node2: input routing of the arriving packet (on `dev`) fails.
pub(super) fn lab_ip_forward_off(topo: Topology, dev: u32) -> Case {
    let encap = if dev == VXLAN {
        LabEncap::Vxlan
    } else {
        LabEncap::None
    };
    Case::new(topo, |t| {
        let b = trace(t, icmp(1));
        let b = if dev == VXLAN {
            b.vxlan_hops(5)
        } else {
            b.native_hops(3)
        };
        b.dropped(NS2, dev, "IP_INADDRERRORS", "ip_error+0x94")
            .build()
    })
    .with(lab_evidence(|n| {
        n[1].sysctls
            .insert("net.ipv4.ip_forward".into(), "0".into());
    }))
    .expect_fault(
        Fault::IpForwardOff,
        encap,
        &["net.ipv4.ip_forward = 0", "node2"],
    )
}

/// `pod-veth-down` with native routing: the destination pod's veth and its route are gone.
pub(super) fn lab_pod_veth_down_native() -> Case {
    Case::new(native_topo(), |t| {
        trace(t, icmp(1))
            .native_hops(3)
            .dropped(NS2, ETH0, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(lab_evidence(|n| {
        n[1].links[2].up = false;
        n[1].links[2].oper = "down".into();
        n[1].routes.retain(|r| r.dst.len != 32);
    }))
    .expect_fault(
        Fault::PodVethDown,
        LabEncap::None,
        &["calie0e1e2e3e4f, which is down"],
    )
}

/// A NETFILTER_DROP on node2's uplink (native routing) by the rule `rule` of `chain`, whose
/// counter moved since the start.
pub(super) fn lab_netfilter_native(
    chain: &'static str,
    rule: &'static str,
    p: PacketId,
    fault: Fault,
) -> Case {
    let hook = if chain == "FORWARD" {
        "type filter hook forward priority filter; policy accept;"
    } else {
        ""
    };
    let with = move |n: &mut crate::state::NodeState, packets: u64| {
        n.firewall.chains = crate::state::firewall::parse_nft(&format!(
            "table ip filter {{\n chain {chain} {{\n  {hook}\n  {rule} counter packets \
             {packets} bytes 0 drop # handle 7\n }}\n}}\n"
        ));
    };
    let mut ev = super::Evidence::default();
    let mut first = node_state(2);
    with(&mut first, 0);
    ev.set(NS1, node_state(1));
    ev.set(NS2, first);
    let mut now = node_state(2);
    with(&mut now, 1);
    ev.set(NS2, now);
    Case::new(native_topo(), |t| {
        trace(t, p)
            .native_hops(3)
            .dropped(NS2, ETH0, "NETFILTER_DROP", "nft_do_chain+0x46f")
            .build()
    })
    .with(ev)
    .expect_fault(
        fault,
        LabEncap::None,
        &["node2 dropped it on eth0 (NETFILTER_DROP in nft_do_chain+0x46f)"],
    )
}

/// `vxlan-port-mismatch`: node1 sends to UDP port 8472, where node2 has no socket; decoded on
/// that port, the packet is seen to arrive and die there.
pub(super) fn lab_vxlan_port_mismatch() -> Case {
    let e = Encap {
        outer_dport: 8472,
        ..vxlan_encap()
    };
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .wire_encap(e)
            .dropped(NS2, ETH0, "NO_SOCKET", "__udp4_lib_rcv+0x4bc")
            .drop_encap(e)
            .build()
    })
    .with(lab_evidence(|n| {
        n[0].links[1].vxlan.as_mut().expect("vxlan").port = Some(8472);
    }))
    .expect_fault(Fault::VxlanPortMismatch, LabEncap::Vxlan, &["8472"])
}
