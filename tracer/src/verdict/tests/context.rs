//! Cases whose verdict comes from the nodes' state (`verdict::context`): the fixture's two
//! nodes as the state reader would see them, changed the way the faults change them.

use std::net::Ipv4Addr;

use super::*;
use crate::state::{
    firewall::parse_nft, Addr, FdbEntry, LinkState, Mac, Neighbour, Net, NodeState, RouteEntry,
    RouteType, Vxlan, TABLE_MAIN,
};
use crate::topology::{Node, PodOf};

fn mac(i: u8) -> Mac {
    Mac([0x66, 0, 0, 0, 0, i])
}

fn link(ifindex: u32, name: &str, kind: &str) -> LinkState {
    LinkState {
        ifindex,
        name: name.into(),
        kind: kind.into(),
        mtu: if kind.is_empty() { 1500 } else { 1450 },
        up: true,
        carrier: true,
        oper: "up".into(),
        ..LinkState::default()
    }
}

fn route(dst: &str, gw: Option<&str>, oif: Option<(u32, &str)>, kind: RouteType) -> RouteEntry {
    RouteEntry {
        table: TABLE_MAIN,
        kind,
        dst: dst.parse().expect("prefix"),
        gateway: gw.map(ip),
        oif: oif.map(|o| o.0),
        dev: oif.map(|o| o.1.to_string()).unwrap_or_default(),
        onlink: gw.is_some() && oif.is_some_and(|o| o.1 != "eth0"),
        metric: 0,
        proto: "static".into(),
        prefsrc: None,
    }
}

/// Node `i` (1 or 2) of the fixture as the state reader returns it.
pub(super) fn node_state(i: u8) -> NodeState {
    let (cali, pod, block, peer_block, peer_vtep) = if i == 1 {
        (
            "cali3f2a9b0c1d4",
            "10.244.0.1",
            "10.244.0.0/26",
            "10.244.4.0/26",
            "10.244.4.0",
        )
    } else {
        (
            "calie0e1e2e3e4f",
            "10.244.4.1",
            "10.244.4.0/26",
            "10.244.0.0/26",
            "10.244.0.0",
        )
    };
    let me = Ipv4Addr::new(10, 10, 0, i);
    let peer = Ipv4Addr::new(10, 10, 0, 3 - i);
    let mut vx = link(VXLAN, "vxlan.calico", "vxlan");
    vx.mac = Some(mac(i));
    vx.vxlan = Some(Vxlan {
        vni: Some(4096),
        port: Some(4789),
        local: Some(me),
        link: Some(ETH0),
        learning: false,
    });
    let vtep: Net = block.parse().expect("block");
    let mut s = NodeState {
        node: format!("node{i}"),
        links: vec![link(ETH0, "eth0", ""), vx, link(CALI_A, cali, "veth")],
        addrs: vec![
            Addr {
                ifindex: ETH0,
                dev: "eth0".into(),
                net: Net::new(me, 24),
                addr: me,
            },
            Addr {
                ifindex: VXLAN,
                dev: "vxlan.calico".into(),
                net: Net::new(vtep.addr, 32),
                addr: vtep.addr,
            },
        ],
        routes: vec![
            route(
                "0.0.0.0/0",
                Some("10.10.0.254"),
                Some((ETH0, "eth0")),
                RouteType::Unicast,
            ),
            route(block, None, None, RouteType::Blackhole),
            route(
                &format!("{pod}/32"),
                None,
                Some((CALI_A, cali)),
                RouteType::Unicast,
            ),
            route(
                peer_block,
                Some(peer_vtep),
                Some((VXLAN, "vxlan.calico")),
                RouteType::Unicast,
            ),
        ],
        neighbours: vec![Neighbour {
            ifindex: VXLAN,
            dev: "vxlan.calico".into(),
            addr: ip(peer_vtep),
            lladdr: Some(mac(3 - i)),
            state: "permanent".into(),
        }],
        fdb: vec![FdbEntry {
            ifindex: VXLAN,
            dev: "vxlan.calico".into(),
            mac: mac(3 - i),
            dst: Some(peer),
            vni: None,
            port: None,
            state: "permanent".into(),
        }],
        ..NodeState::default()
    };
    for (k, v) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
    ] {
        s.sysctls.insert(k.into(), v.into());
    }
    s.sysctls
        .insert(format!("net.ipv4.conf.{cali}.proxy_arp"), "1".into());
    s
}

/// Evidence of both nodes, after `change` (the state read again at the failure), with `first`
/// as it was first read.
fn evidence(change: impl FnOnce(&mut [NodeState; 2])) -> Evidence {
    let mut ev = Evidence::new([(NS1, node_state(1)), (NS2, node_state(2))]);
    let mut now = [node_state(1), node_state(2)];
    change(&mut now);
    let [a, b] = now;
    ev.set(NS1, a);
    ev.set(NS2, b);
    ev
}

/// The fixture topology with pod A's namespace as a traced pod.
const POD_NS: u32 = 4_026_532_101;
fn topo_with_pod() -> Topology {
    let mut t = topo();
    t.pods.push(Node {
        name: "pod-a".into(),
        netns: POD_NS,
        addrs: vec![ip("10.244.0.1")],
        ifaces: Vec::new(),
        links: vec![Link {
            ifindex: 2,
            name: "eth0".into(),
            mtu: 1450,
        }],
        default_gw: None,
        routes: Vec::new(),
        uplink_addrs: Vec::new(),
        pod_of: Some(PodOf {
            node: "node1".into(),
            veth: "cali3f2a9b0c1d4".into(),
        }),
    });
    t
}

/// Pod A's packet dropped inside its own namespace (its gateway's ARP failed).
fn dropped_in_pod(topo: &Topology) -> Trace {
    let mut t = trace(topo, icmp(1)).build();
    t.outcome = Outcome::Dropped;
    t.drop = Some(DropPoint {
        node: "pod-a".into(),
        netns: POD_NS,
        ifindex: 2,
        ifname: "eth0".into(),
        ts_ns: 5_000,
        reason: "NEIGH_FAILED".into(),
        reason_code: 0,
        function: "neigh_invalidate+0x7e".into(),
        location: 0,
        len: 84,
        encap: None,
        snap: None,
    });
    t
}

pub(super) fn pod_proxy_arp_off() -> Case {
    Case::new(topo_with_pod(), dropped_in_pod)
        .with(evidence(|n| {
            n[0].sysctls
                .insert("net.ipv4.conf.cali3f2a9b0c1d4.proxy_arp".into(), "0".into());
        }))
        .expect(
            "proxy-arp-off",
            &["proxy_arp is 0 on cali3f2a9b0c1d4", "node1"],
        )
}

pub(super) fn pod_ip_forward_off() -> Case {
    Case::new(topo_with_pod(), dropped_in_pod)
        .with(evidence(|n| {
            n[0].sysctls
                .insert("net.ipv4.ip_forward".into(), "0".into());
        }))
        .expect(
            "ip-forward-off",
            &["proxy ARP answers only on interfaces that forward"],
        )
}

pub(super) fn pod_side_veth_down() -> Case {
    Case::new(topo_with_pod(), dropped_in_pod)
        .with(evidence(|n| {
            n[0].links[2].up = false;
            n[0].links[2].oper = "down".into();
        }))
        .expect("pod-veth-down", &["cali3f2a9b0c1d4 on node1, is down"])
}

pub(super) fn pod_without_route() -> Case {
    Case::new(topo_with_pod(), |t| {
        let mut tr = dropped_in_pod(t);
        tr.drop.as_mut().expect("drop").reason = "IP_OUTNOROUTES".into();
        tr
    })
    .with(evidence(|_| {}))
    .expect("pod-no-route", &["default via 169.254.1.1"])
}

pub(super) fn vtep_mac_changed() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "OTHERHOST", "ip_rcv_core+0x22c")
            .build()
    })
    .with(evidence(|n| n[1].links[1].mac = Some(mac(0x99))))
    .expect(
        "vtep-mac-mismatch",
        &["66:00:00:00:00:99", "node1 kept the old one"],
    )
}

pub(super) fn otherhost_on_uplink() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "OTHERHOST", "ip_rcv_core+0x22c")
            .build()
    })
    .with(evidence(|_| {}))
    .expect("wrong-destination-mac", &["stale ARP entry"])
}

pub(super) fn vni_mismatch() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .dropped(NS2, ETH0, "VXLAN_VNI_NOT_FOUND", "vxlan_rcv+0x1f0")
            .build()
    })
    .with(evidence(|n| {
        n[1].links[1].vxlan.as_mut().expect("vxlan").vni = Some(4097);
    }))
    .expect("vni-mismatch", &["VNI 4096", "vni 4097"])
}

pub(super) fn stale_block_blackhole() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(1)
            .dropped(NS1, CALI_A, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|n| {
        n[0].routes.retain(|r| r.dst.to_string() != "10.244.4.0/26");
        n[0].routes
            .push(route("10.244.4.0/26", None, None, RouteType::Blackhole));
    }))
    .expect(
        "blackhole-route",
        &["node2's IPAM block", "stale block affinity"],
    )
}

pub(super) fn no_such_pod() -> Case {
    Case::new(topo(), |t| {
        trace(t, to(ip("10.244.4.9")))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|_| {}))
    .expect("no-such-pod", &["no pod on node2 has it"])
}

pub(super) fn destination_veth_down() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|n| {
        // The kernel removes a device's routes when it goes down.
        n[1].links[2].up = false;
        n[1].links[2].oper = "down".into();
        n[1].routes.retain(|r| r.dst.len != 32);
    }))
    .expect("pod-veth-down", &["calie0e1e2e3e4f, which is down"])
}

pub(super) fn destination_route_removed() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(5)
            .dropped(NS2, VXLAN, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|n| n[1].routes.retain(|r| r.dst.len != 32)))
    .expect("no-pod-route", &["host route", "is gone"])
}

pub(super) fn forwarding_off() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(1)
            .dropped(NS1, CALI_A, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|n| {
        n[0].sysctls
            .insert("net.ipv4.ip_forward".into(), "0".into());
    }))
    .expect("ip-forward-off", &["net.ipv4.ip_forward = 0"])
}

pub(super) fn uplink_down() -> Case {
    Case::new(native_topo(), |t| {
        trace(t, icmp(1))
            .native_hops(1)
            .dropped(NS1, CALI_A, "NOT_SPECIFIED", "ip_error+0x94")
            .build()
    })
    .with(evidence(|n| {
        n[0].routes.retain(|r| r.dst.to_string() != "10.244.4.0/26");
        n[0].routes.push(route(
            "10.244.4.0/26",
            Some("10.10.0.2"),
            Some((ETH0, "eth0")),
            RouteType::Unicast,
        ));
        n[0].links[0].up = false;
    }))
    .expect("link-down", &["eth0", "admin down"])
}

/// A firewall whose rule `rule` in chain `chain` counted `packets` since the start.
fn with_rule(n: &mut NodeState, chain: &str, hook: &str, rule: &str, packets: u64) {
    n.firewall.chains = parse_nft(&format!(
        "table ip filter {{\n chain {chain} {{\n  {hook}\n  {rule} counter packets {packets} bytes 0 drop # handle 7\n }}\n}}\n"
    ));
}

fn dropped_by_netfilter(t: &Topology) -> Trace {
    trace(t, tcp())
        .vxlan_hops(5)
        .dropped(NS2, VXLAN, "NETFILTER_DROP", "nft_do_chain+0x46f")
        .build()
}

fn counted(chain: &'static str, hook: &'static str, rule: &'static str) -> Evidence {
    let mut ev = Evidence::default();
    for (ns, i) in [(NS1, 1), (NS2, 2)] {
        let mut s = node_state(i);
        if i == 2 {
            with_rule(&mut s, chain, hook, rule, 0);
        }
        ev.set(ns, s);
    }
    let mut now = node_state(2);
    with_rule(&mut now, chain, hook, rule, 3);
    ev.set(NS2, now);
    ev
}

pub(super) fn calico_policy_drop() -> Case {
    Case::new(topo(), dropped_by_netfilter)
        .with(counted("cali-pi-_Ab3dE9fGh", "", "tcp dport 8080"))
        .expect(
            "policy-drop",
            &["cali-pi-_Ab3dE9fGh", "ingress rules of network policy"],
        )
}

pub(super) fn conntrack_invalid() -> Case {
    Case::new(topo(), dropped_by_netfilter)
        .with(counted(
            "cali-FORWARD",
            "type filter hook forward priority filter; policy accept;",
            "ct state invalid",
        ))
        .expect("conntrack-invalid", &["INVALID", "symmetric routing"])
}

pub(super) fn host_rule_named() -> Case {
    Case::new(topo(), dropped_by_netfilter)
        .with(counted(
            "FORWARD",
            "type filter hook forward priority filter; policy accept;",
            "oifname \"cali+\"",
        ))
        .expect(
            "firewall-drop",
            &["table ip filter chain FORWARD rule handle 7"],
        )
}

pub(super) fn lost_on_a_port_nobody_listens() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .wire_encap(Encap {
                outer_dport: 8472,
                ..vxlan_encap()
            })
            .outcome(Outcome::Lost)
            .build()
    })
    .with(evidence(|_| {}))
    .expect("vxlan-port-mismatch", &["UDP port 8472", "[4789]"])
}

pub(super) fn lost_after_arriving() -> Case {
    Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .outcome(Outcome::Lost)
            .build()
    })
    .with(evidence(|_| {}))
    .expect("lost-on-node", &["the underlay is not at fault"])
}

pub(super) fn nothing_listens() -> Case {
    Case::new(topo(), |t| {
        trace(t, tcp())
            .vxlan_hops(6)
            .dropped(NS2, CALI_C, "NO_SOCKET", "tcp_v4_rcv+0x1a2")
            .build()
    })
    .with(evidence(|_| {}))
    .expect(
        "no-listener",
        &["nothing listens on tcp port 8080 at 10.244.4.1"],
    )
}

/// A NETFILTER_DROP without counters keeps the reason-only verdict; a lost packet that
/// reached its node is never blamed on the underlay, with or without state.
#[test]
fn without_counters_or_state_the_reason_rules_decide() {
    let mut c = Case::new(topo(), dropped_by_netfilter).with(evidence(|_| {}));
    c.want = "firewall-drop";
    let v = c.check();
    assert!(!v.explanation.contains("rule handle"), "{}", v.explanation);
    let lost = Case::new(topo(), |t| {
        trace(t, icmp(1))
            .vxlan_hops(4)
            .outcome(Outcome::Lost)
            .build()
    });
    let v = lost.verdict();
    assert_eq!(v.name, "lost-on-node");
    assert!(
        !v.explanation.to_lowercase().contains("firewall"),
        "{}",
        v.explanation
    );
}

/// Audit findings about the node where the packet died are part of the evidence.
#[test]
fn audit_findings_are_evidence() {
    let v = vtep_mac_changed().verdict();
    assert!(
        v.evidence
            .iter()
            .any(|e| e.starts_with("audit: vtep-mac-mismatch node1 -> node2")),
        "{:#?}",
        v.evidence
    );
    assert!(
        v.evidence.iter().any(|e| e
            == "node1: neighbour 10.244.4.0 dev vxlan.calico lladdr 66:00:00:00:00:02 (permanent)"),
        "{:#?}",
        v.evidence
    );
}
