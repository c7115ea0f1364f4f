//! Synthetic topology and records shared by the unit tests of `correlate` and `render`.

use std::net::Ipv4Addr;

use crate::event::{DropRecord, HopRecord};
use crate::model::{Direction, Encap, EncapKind, PacketId};
use crate::topology::{Iface, IfaceKind, Link, Node, Topology};

pub const NS1: u32 = 4_026_532_001;
pub const NS2: u32 = 4_026_532_002;
pub const ETH0: u32 = 2;
pub const VXLAN: u32 = 3;
/// Pod A (10.244.0.1) and pod B (10.244.0.2) on node1, pod C (10.244.4.1) on node2.
pub const CALI_A: u32 = 10;
pub const CALI_B: u32 = 11;
pub const CALI_C: u32 = 10;

fn node(name: &str, netns: u32, addr: [u8; 4], cali: &[(u32, &str)]) -> Node {
    let ifaces = [(ETH0, "eth0"), (VXLAN, "vxlan.calico")].iter().chain(cali);
    let ifaces: Vec<Iface> = ifaces
        .map(|&(ifindex, name)| Iface {
            ifindex,
            name: name.into(),
            kind: match name {
                "eth0" => IfaceKind::Uplink,
                other => IfaceKind::from_name(other),
            },
        })
        .collect();
    let links = ifaces
        .iter()
        .map(|i| Link {
            ifindex: i.ifindex,
            name: i.name.clone(),
            mtu: match i.kind {
                IfaceKind::Uplink => 1500,
                _ => 1450,
            },
        })
        .collect();
    Node {
        name: name.into(),
        netns,
        addrs: vec![addr.into()],
        ifaces,
        links,
        default_gw: Some(std::net::Ipv4Addr::new(10, 10, 0, 254)),
        routes: Vec::new(),
        uplink_addrs: vec![addr.into()],
        pod_of: None,
    }
}

pub fn topology() -> Topology {
    let pods1 = [(CALI_A, "cali3f2a9b0c1d4"), (CALI_B, "cali77aa00bb11c")];
    let node1 = node("node1", NS1, [10, 10, 0, 1], &pods1);
    let node2 = node("node2", NS2, [10, 10, 0, 2], &[(CALI_C, "calie0e1e2e3e4f")]);
    Topology {
        nodes: vec![node1, node2],
        pods: Vec::new(),
    }
}

/// An ICMP echo request from pod A to pod C.
pub fn icmp(ip_id: u16) -> PacketId {
    PacketId {
        src: Ipv4Addr::new(10, 244, 0, 1),
        dst: Ipv4Addr::new(10, 244, 4, 1),
        proto: 1,
        sport: 0,
        dport: 0,
        ip_id,
        tcp_seq: 0,
        icmp_id: 1234,
        icmp_seq: 1,
    }
}

pub fn hop(packet: PacketId, netns: u32, ifindex: u32, dir: Direction, ts: u64) -> HopRecord {
    HopRecord {
        ts_ns: ts,
        netns,
        ifindex,
        dir,
        len: 84,
        packet,
        tcp_flags: 0,
        icmp_type: 8,
        encap: None,
        snap: None,
    }
}

pub fn vxlan_encap() -> Encap {
    Encap {
        kind: EncapKind::Vxlan,
        vni: 4096,
        outer_src: Ipv4Addr::new(10, 10, 0, 1),
        outer_dst: Ipv4Addr::new(10, 10, 0, 2),
        outer_sport: 51234,
        outer_dport: 4789,
        outer_ip_id: 7,
    }
}

/// The six hops of pod A -> pod C over VXLAN, starting at `t0`.
pub fn vxlan_path(packet: PacketId, t0: u64) -> Vec<HopRecord> {
    use Direction::{Egress, Ingress};
    let mut hops = vec![
        hop(packet, NS1, CALI_A, Ingress, t0),
        hop(packet, NS1, VXLAN, Egress, t0 + 8_412),
        hop(packet, NS1, ETH0, Egress, t0 + 11_920),
        hop(packet, NS2, ETH0, Ingress, t0 + 19_001),
        hop(packet, NS2, VXLAN, Ingress, t0 + 25_500),
        hop(packet, NS2, CALI_C, Egress, t0 + 31_250),
    ];
    for h in &mut hops[2..4] {
        (h.encap, h.len) = (Some(vxlan_encap()), 134);
    }
    hops
}

/// A drop of `p` on `(netns, ifindex)` at `ts_ns` (reason value 58, an echo request).
pub fn drop_of(p: PacketId, netns: u32, ifindex: u32, ts_ns: u64) -> DropRecord {
    DropRecord {
        ts_ns,
        netns,
        ifindex,
        location: 0xffff_ffff_8100_0000,
        skb: 0xffff_8880_0000_0000,
        reason: 58,
        len: 98,
        packet: p,
        icmp_type: 8,
        encap: None,
        snap: None,
    }
}
