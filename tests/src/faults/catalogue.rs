//! The fault catalogue: every way the lab can be broken, one [`Entry`] per fault. This is where
//! a fault is declared, and the only place.
//!
//! Design note: an entry says everything known about its fault: name and one-line doc, the
//! encapsulations it applies to, its plan (reads the state it changes from the kernel and
//! writes apply/undo steps with the engine's [`Plan`](super::engine::Plan) builder), its probe
//! (the traffic that then fails), the kernel drops that probe leads to (`skb:kfree_skb` on the
//! project's 6.18 kernel; checked by the ignored `drop_reasons` test), and, per encapsulation,
//! what the tracer must report for the probe ([`TracerReport`]: drop node, device, reason,
//! function prefix, verdict; measured with `tests/verdicts.rs`, which prints what the tracer
//! reports for a fault that lacks one). The `catalogue!` macro generates [`Fault`],
//! [`Fault::ALL`] and [`CATALOGUE`] from the entries, so adding a fault is adding one entry.
//! Everything else follows the catalogue or is checked against it: `tests/faults.rs` and
//! `tests/verdicts.rs` loop over it; unit tests fail when an entry lacks a tracer report for an
//! encapsulation it applies to, when the README's verdict table or `lab break` paragraph does
//! not name a fault (here), when the tracer has no synthetic verdict case for a fault or the
//! case disagrees with the catalogue (`tracer/src/verdict/tests`), and `cargo xtask lab break
//! --help` lists the names from here.
//!
//! Findings that shaped the plans are written next to the entries they explain (`missing-arp`,
//! `pod-cidr-overlap`, `wrong-tunnel-source`), or next to the plans too long to read inline
//! (`super::plans`). What an entry is made of and the queries over the catalogue are in
//! `entry`.

use std::net::Ipv4Addr;

use anyhow::{ensure, Context};
use serde::{Deserialize, Serialize};

use super::engine::{Planned, Step};
use super::nat;
use super::plans;
use super::state::{fdb_entry, pod, route_of, routes, show, vtep, word_after};
use crate::services::OUTSIDE;
use crate::spec::Encap;

mod entry;
pub use entry::{Entry, ExpectedDrop, KernelDrop, ProbeSpec, Target, TracerReport};

/// nftables table of `underlay-blocks-vxlan`.
pub const NFT_TABLE_UNDERLAY: &str = "tracer_lab_fault";
/// nftables table of `policy-drop`.
pub const NFT_TABLE_POLICY: &str = "tracer_lab_fault_policy";
/// TCP port of the `policy-drop` probe.
pub const POLICY_PORT: u16 = 8080;
/// MTU given to the tunnel (vxlan) or uplink (none) by `mtu`.
pub const FAULT_MTU: u32 = 1000;
/// ICMP payload of the `mtu` probe (1228-byte packets, sent with DF).
pub const MTU_PROBE_SIZE: usize = 1200;
/// Routing table of `pod-cidr-overlap`.
pub const OVERLAP_TABLE: u32 = 244;
/// Priority of the `pod-cidr-overlap` policy rule.
pub const OVERLAP_RULE_PREF: u32 = 100;
/// Second NIC of `wrong-tunnel-source` (with peer `eth1-peer`, both in the node netns).
pub const SECOND_NIC: &str = "eth1";
/// The interface the `rp-filter` fault (none mode) points the reverse route at.
pub const RPF_NIC: &str = "rpf0";

/// The default probe: one ping from n1p0 to n2p0.
const PING: ProbeSpec = ProbeSpec {
    from_pod: "n1p0",
    to: Target::Pod("n2p0"),
    proto: "icmp",
    port: None,
    size: None,
    df: false,
};

/// Reason and function of the kernel drops the faults lead to.
type DropAt = (&'static str, &'static str);
const NEIGH: DropAt = ("NEIGH_FAILED", "neigh_invalidate");
const NO_TX: DropAt = ("NO_TX_TARGET", "vxlan_xmit");
const NFT: DropAt = ("NETFILTER_DROP", "nft_do_chain");
const RPF: DropAt = ("IP_RPFILTER", "ip_rcv_finish_core");
const TOO_BIG: DropAt = ("PKT_TOO_BIG", "ip_forward");
const OTHERHOST: DropAt = ("OTHERHOST", "ip_rcv_core");
/// A route lookup that found a blackhole (`-EINVAL`): `ip_error` frees it without a reason.
const BLACKHOLE: DropAt = ("NOT_SPECIFIED", "ip_error");
const VNI_NOT_FOUND: DropAt = ("VXLAN_VNI_NOT_FOUND", "vxlan_rcv");
/// A UDP datagram to a port no socket listens on.
const NO_UDP_SOCKET: DropAt = ("NO_SOCKET", "__udp4_lib_rcv");
/// Input routing on a device that does not forward.
const NO_FORWARD: DropAt = ("IP_INADDRERRORS", "ip_error");

const BOTH: &[Encap] = &[Encap::Vxlan, Encap::None];
const NO_SOCKET: DropAt = ("NO_SOCKET", "tcp_v4_rcv");
const NF_HOOK: DropAt = ("NETFILTER_DROP", "nf_hook_slow");

/// The NAT faults' probe: a DNS query over UDP from n1p0 to the DNS Service.
const DNS_QUERY: ProbeSpec = ProbeSpec {
    from_pod: "n1p0",
    to: Target::Service("kube-system/kube-dns", "dns"),
    proto: "udp",
    port: None,
    size: None,
    df: false,
};

/// Why the NAT faults have no audit finding yet.
const NAT_RULES_UNREAD: &str = "the audit does not judge kube-proxy's and Calico's NAT \
     (Service rules, ipsets) nor the conntrack table's fill yet: the verdicts do, from the \
     trace and the node's state";
const VXLAN_ONLY: &[Encap] = &[Encap::Vxlan];

/// A kernel drop of `packet` on `node`.
const fn kernel(node: &'static str, d: DropAt, packet: &'static str, delayed: bool) -> KernelDrop {
    KernelDrop {
        node,
        reason: d.0,
        function: d.1,
        packet,
        delayed,
    }
}

/// The tracer's report in `encap`: dropped on `node` `device` with `d`, verdict `verdict`.
const fn traced(
    encap: Encap,
    node: &'static str,
    device: &'static str,
    d: DropAt,
    verdict: &'static str,
) -> TracerReport {
    TracerReport {
        encap,
        node,
        device,
        reason: d.0,
        function: d.1,
        verdict,
        audit: &[],
        outcome: "dropped",
        audit_exempt: None,
    }
}

/// The tracer's report in `encap` for a probe trace that is not dropped: its `outcome`
/// (`lost`, `incomplete`, `delivered`) and verdict (`""`: none).
const fn seen(encap: Encap, outcome: &'static str, verdict: &'static str) -> TracerReport {
    TracerReport {
        encap,
        node: "",
        device: "",
        reason: "",
        function: "",
        verdict,
        audit: &[],
        outcome,
        audit_exempt: None,
    }
}

/// Declares [`Fault`] (one variant per entry, documented with the entry's `doc`),
/// [`Fault::ALL`] and [`CATALOGUE`] from the entries, so that a fault is written once.
macro_rules! catalogue {
    ($(Entry {
        fault: $fault:ident,
        name: $name:literal,
        doc: $doc:literal,
        $($field:ident: $value:expr),* $(,)?
    }),* $(,)?) => {
        /// One way of breaking the lab; each is declared by its [`Entry`] in [`CATALOGUE`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum Fault {
            $(#[doc = $doc] $fault,)*
        }

        const COUNT: usize = [$($name),*].len();

        impl Fault {
            /// Every fault, in documentation order.
            pub const ALL: [Fault; COUNT] = [$(Fault::$fault),*];
        }

        /// Every fault's entry, in the order of [`Fault::ALL`].
        pub static CATALOGUE: [Entry; COUNT] = [$(Entry {
            fault: Fault::$fault,
            name: $name,
            doc: $doc,
            $($field: $value),*
        }),*];
    };
}

catalogue![
    Entry {
        fault: EncapNever,
        name: "encap-never",
        doc: "The IP pool's vxlanMode/ipipMode are Never: no node has routes to remote blocks.",
        encaps: BOTH,
        probe: PING,
        plan: |c, p| {
            let t = c.t;
            let mut touched = Vec::new();
            for n in &t.nodes {
                let remote_block = |l: &String| {
                    let first = l.split_whitespace().next().unwrap_or_default();
                    let remote = t.nodes.iter().filter(|r| r.name != n.name);
                    remote
                        .flat_map(|r| &r.blocks)
                        .any(|b| b.to_string() == first)
                };
                let remote: Vec<String> = routes(n)?.into_iter().filter(remote_block).collect();
                if !remote.is_empty() {
                    let verb =
                        |v: &'static str| remote.iter().map(move |l| format!("route {v} {l}"));
                    p.ip(&n.netns, verb("del"), verb("replace"));
                    touched.push(n.name.as_str());
                }
            }
            ensure!(!touched.is_empty(), "no node has routes to remote blocks");
            let kind = if c.vxlan { "VTEP" } else { "native" };
            let gw = t.underlay.gateway;
            let description = format!(
                "removed the {kind} routes to remote blocks on {} (encapsulation Never, nothing \
                 programs them): cross-node traffic takes the default route via {gw}",
                touched.join(", ")
            );
            Ok(Planned {
                node: touched.join(","),
                description,
            })
        },
        kernel_drops: &[kernel("node1", NEIGH, "probe", true)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "eth0", NEIGH, "no-route").audit(&["no-route-to-block"]),
            traced(Encap::None, "node1", "eth0", NEIGH, "no-route").audit(&["no-route-to-block"]),
        ],
    },
    Entry {
        fault: MissingRoute,
        name: "missing-route",
        doc: "Node1 lacks the route to node2's first block.",
        encaps: BOTH,
        probe: PING,
        plan: |c, p| {
            let line = route_of(c.n1, &c.block2)?;
            p.ip(
                &c.n1.netns,
                [format!("route del {line}")],
                [format!("route replace {line}")],
            );
            Ok(Planned {
                node: c.n1.name.clone(),
                description: format!("removed route {line} on {}", c.n1.name),
            })
        },
        kernel_drops: &[kernel("node1", NEIGH, "probe", true)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "eth0", NEIGH, "no-route").audit(&["no-route-to-block"]),
            traced(Encap::None, "node1", "eth0", NEIGH, "no-route").audit(&["no-route-to-block"]),
        ],
    },
    Entry {
        fault: MissingFdb,
        name: "missing-fdb",
        doc: "Node1 lacks the FDB entry for node2's VTEP MAC.",
        encaps: VXLAN_ONLY,
        probe: PING,
        plan: |c, p| {
            let (dev, mac) = (&vtep(c.n1)?.ifname, &vtep(c.n2)?.mac);
            let rest = fdb_entry(c.n1, dev, mac)?;
            let dst = rest
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            p.bridge(
                &c.n1.netns,
                format!("fdb del {mac} dev {dev} {dst} self"),
                format!("fdb replace {mac} dev {dev} {rest}"),
            );
            let what = format!("FDB entry {mac} dev {dev} {rest} (node2's VTEP)");
            Ok(Planned {
                node: c.n1.name.clone(),
                description: format!("removed {what} on {}", c.n1.name),
            })
        },
        kernel_drops: &[kernel("node1", NO_TX, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "vxlan.calico", NO_TX, "no-vxlan-fdb",)
                .audit(&["no-vtep-fdb"])
        ],
    },
    Entry {
        fault: MissingArp,
        name: "missing-arp",
        doc: "Node1 lacks the neighbour entry for node2's VTEP.",
        encaps: VXLAN_ONLY,
        probe: PING,
        // The VTEP is `nolearning` and Calico programs no all-zeros FDB entry, so the ARP
        // broadcast for the remote VTEP never leaves node1 (`NO_TX_TARGET` in `vxlan_xmit`);
        // the queued probe dies `NEIGH_FAILED` ~3 s later. Node2 needs no change.
        plan: |c, p| {
            let (dev, v2, name1) = (&vtep(c.n1)?.ifname, vtep(c.n2)?, &c.n1.name);
            let ip = v2.ip.to_string();
            let neigh = show("ip", &c.n1.netns, &["neigh", "show", "to", &ip, "dev", dev])?;
            let mac = word_after(&neigh, "lladdr")
                .with_context(|| format!("{name1} has no neighbour entry for {ip}"))?;
            p.ip(
                &c.n1.netns,
                [format!("neigh del {ip} dev {dev}")],
                [format!(
                    "neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
                )],
            );
            let description = format!(
                "removed the permanent neighbour {ip} lladdr {mac} dev {dev} (node2's VTEP) on \
                 {name1}; its ARP broadcasts have no FDB target (nolearning, no all-zeros entry)"
            );
            Ok(Planned {
                node: name1.clone(),
                description,
            })
        },
        kernel_drops: &[
            kernel("node1", NO_TX, "arp", false),
            kernel("node1", NEIGH, "probe", true),
        ],
        tracer: &[
            traced(Encap::Vxlan, "node1", "vxlan.calico", NEIGH, "no-neighbour",)
                .audit(&["no-vtep-neighbour"])
        ],
    },
    Entry {
        fault: UnderlayBlocksVxlan,
        name: "underlay-blocks-vxlan",
        doc: "Node2 drops incoming VXLAN (`udp dport 4789 drop`).",
        encaps: VXLAN_ONLY,
        probe: PING,
        plan: |c, p| {
            let rule = format!("udp dport {} drop", c.t.vxlan_port);
            p.nft_table(&c.n2.netns, NFT_TABLE_UNDERLAY, "input", &rule);
            let what = format!("table ip {NFT_TABLE_UNDERLAY}, input hook: `{rule}`");
            Ok(Planned {
                node: c.n2.name.clone(),
                description: format!("nftables on {}: {what}", c.n2.name),
            })
        },
        kernel_drops: &[kernel("node2", NFT, "outer", false)],
        tracer: &[traced(Encap::Vxlan, "node2", "eth0", NFT, "underlay-drop")
            .audit(&["firewall-blocks-vxlan"])],
    },
    Entry {
        fault: PolicyDrop,
        name: "policy-drop",
        doc: "A network policy on node2 drops traffic to pod n2p0.",
        encaps: BOTH,
        probe: ProbeSpec {
            proto: "tcp",
            port: Some(POLICY_PORT),
            ..PING
        },
        plan: |c, p| {
            let p2 = pod(c.t, "n2p0")?;
            let rule = format!("oifname \"{}\" ip daddr {} drop", p2.cali, p2.ip);
            p.nft_table(&c.n2.netns, NFT_TABLE_POLICY, "forward", &rule);
            let what = format!("table ip {NFT_TABLE_POLICY}, forward hook: `{rule}`");
            Ok(Planned {
                node: c.n2.name.clone(),
                description: format!("nftables on {}: {what}", c.n2.name),
            })
        },
        kernel_drops: &[kernel("node2", NFT, "probe", false)],
        // The forward hook runs before the packet has an output device: the drop is on the
        // device it came in on.
        tracer: &[
            traced(Encap::Vxlan, "node2", "vxlan.calico", NFT, "firewall-drop")
                .audit(&["firewall-drops-pod-traffic"]),
            traced(Encap::None, "node2", "eth0", NFT, "firewall-drop")
                .audit(&["firewall-drops-pod-traffic"]),
        ],
    },
    Entry {
        fault: RpFilter,
        name: "rp-filter",
        doc: "Strict reverse-path filtering on node2 with an asymmetric return route.",
        encaps: BOTH,
        probe: PING,
        plan: |c, p| {
            let (n1, n2, block1) = (c.n1, c.n2, &c.block1);
            let old = route_of(n2, block1)?;
            let (rx_dev, new) = if c.vxlan {
                // CrossSubnet-like asymmetry: node1 encapsulates, node2 routes back natively.
                (
                    vtep(n2)?.ifname.as_str(),
                    format!("{block1} via {} dev {}", n1.ip, n2.uplink),
                )
            } else {
                // A second NIC on node2 that the return route points out of.
                p.veth(&n2.netns, RPF_NIC, None);
                (n2.uplink.as_str(), format!("{block1} dev {RPF_NIC}"))
            };
            p.ip(
                &n2.netns,
                [format!("route replace {new}")],
                [format!("route replace {old}")],
            );
            p.sysctl(&n2.netns, "net/ipv4/conf/all/rp_filter", "1")?;
            p.sysctl(&n2.netns, &format!("net/ipv4/conf/{rx_dev}/rp_filter"), "1")?;
            let description = format!(
                "on {}: rp_filter=1 (all, {rx_dev}) and route {old} replaced by {new}: \
                 packets from {block1} arrive on {rx_dev}, the reverse route leaves elsewhere",
                n2.name
            );
            Ok(Planned {
                node: n2.name.clone(),
                description,
            })
        },
        kernel_drops: &[kernel("node2", RPF, "probe", false)],
        // The drop is on the device the packet came in on.
        tracer: &[
            traced(Encap::Vxlan, "node2", "vxlan.calico", RPF, "rp-filter")
                .audit(&["rp-filter-asymmetric"]),
            traced(Encap::None, "node2", "eth0", RPF, "rp-filter").audit(&["rp-filter-asymmetric"]),
        ],
    },
    Entry {
        fault: Mtu,
        name: "mtu",
        doc: "The tunnel (or uplink) MTU is below the pods' MTU.",
        encaps: BOTH,
        probe: ProbeSpec {
            size: Some(MTU_PROBE_SIZE),
            df: true,
            ..PING
        },
        plan: |c, p| {
            let n1 = c.n1;
            let dev = if c.vxlan {
                &vtep(n1)?.ifname
            } else {
                &n1.uplink
            };
            let link = show("ip", &n1.netns, &["-o", "link", "show", "dev", dev])?;
            let old = word_after(&link, "mtu").with_context(|| format!("no mtu: {link}"))?;
            // Pods cache a learned path MTU: flush it on break (no stale result from before)
            // and on heal, after the MTU is back (undo runs in reverse order).
            for pod in c.t.pods_on(&n1.name) {
                let flush = || Step::sysctl(&pod.netns, "net/ipv4/route/flush", "1");
                p.push(flush(), flush());
            }
            p.ip(
                &n1.netns,
                [format!("link set dev {dev} mtu {FAULT_MTU}")],
                [format!("link set dev {dev} mtu {old}")],
            );
            let pod_mtu = pod(c.t, "n1p0")?.mtu;
            let what = format!("{dev} MTU {old} -> {FAULT_MTU} (pods keep {pod_mtu})");
            Ok(Planned {
                node: n1.name.clone(),
                description: format!("on {}: {what}", n1.name),
            })
        },
        kernel_drops: &[kernel("node1", TOO_BIG, "probe", false)],
        // ip_forward drops it before it leaves: on the pod's veth it came in on.
        tracer: &[
            traced(Encap::Vxlan, "node1", "cali", TOO_BIG, "mtu")
                .audit(&["pod-mtu-above-tunnel", "tunnel-mtu-mismatch"]),
            traced(Encap::None, "node1", "cali", TOO_BIG, "mtu").audit(&["pod-mtu-above-uplink"]),
        ],
    },
    Entry {
        fault: PodCidrOverlap,
        name: "pod-cidr-overlap",
        doc: "The pod CIDR overlaps the node network: pod-to-node traffic is captured by the \
              overlay.",
        encaps: VXLAN_ONLY,
        probe: ProbeSpec {
            to: Target::Node("node2"),
            ..PING
        },
        // Routing pod-to-node traffic into the overlay towards node2's VTEP does *not* fail
        // (node2 decapsulates it and accepts its own address), so the overlapping block is
        // routed towards its own (never programmed) VTEP address, the first address of the
        // node subnet, as Calico would for a block whose VTEP Felix does not know. A policy
        // rule `from <pod cidr>` confines it to pod traffic, so node-to-node and the VXLAN
        // outer packets keep working.
        plan: |c, p| {
            let (n1, t) = (c.n1, c.t);
            let (dev, subnet) = (&vtep(n1)?.ifname, t.underlay.subnet);
            let (tbl, nexthop) = (OVERLAP_TABLE, subnet.addr);
            let rule = format!("from {} lookup {tbl} pref {OVERLAP_RULE_PREF}", t.pod_cidr);
            let route = format!("{subnet} via {nexthop} dev {dev} onlink table {tbl}");
            p.ip(
                &n1.netns,
                [format!("rule add {rule}")],
                [format!("rule del {rule}")],
            );
            p.ip(
                &n1.netns,
                [format!("route add {route}")],
                [
                    format!("route del {route}"),
                    format!("neigh flush to {nexthop} dev {dev}"),
                ],
            );
            let description = format!(
                "on {}: rule {rule} + route {route}: an IPAM block overlapping the node \
                 network, routed into the overlay towards a VTEP nobody programmed; pod-to-node \
                 traffic is lost, pod-to-pod and node-to-node keep working",
                n1.name
            );
            Ok(Planned {
                node: n1.name.clone(),
                description,
            })
        },
        kernel_drops: &[
            kernel("node1", NO_TX, "arp", false),
            kernel("node1", NEIGH, "probe", true),
        ],
        tracer: &[
            traced(Encap::Vxlan, "node1", "vxlan.calico", NEIGH, "cidr-overlap",)
                .audit(&["overlay-covers-node-address"])
        ],
    },
    Entry {
        fault: WrongTunnelSource,
        name: "wrong-tunnel-source",
        doc: "Node1's FDB points at an address of node2's wrong interface (bad IP \
              autodetection).",
        encaps: VXLAN_ONLY,
        probe: PING,
        // There is no `dummy` link type on this kernel: the second NIC is a veth pair whose
        // peer stays in node2's namespace.
        plan: |c, p| {
            let (n1, n2) = (c.n1, c.n2);
            let (dev, mac) = (&vtep(n1)?.ifname, &vtep(n2)?.mac);
            let rest = fdb_entry(n1, dev, mac)?;
            let wrong = Ipv4Addr::new(10, 20, 0, n2.ip.octets()[3]);
            p.veth(&n2.netns, SECOND_NIC, Some(format!("{wrong}/24")));
            p.bridge(
                &n1.netns,
                format!("fdb replace {mac} dev {dev} dst {wrong} self permanent"),
                format!("fdb replace {mac} dev {dev} {rest}"),
            );
            let description = format!(
                "added {SECOND_NIC} {wrong}/24 on {} and pointed {}'s FDB entry for \
                 {mac} at it (was {rest}): VXLAN packets go to the unreachable default gateway",
                n2.name, n1.name
            );
            Ok(Planned {
                node: format!("{},{}", n1.name, n2.name),
                description,
            })
        },
        kernel_drops: &[kernel("node1", NEIGH, "outer", true)],
        tracer: &[traced(
            Encap::Vxlan,
            "node1",
            "eth0",
            NEIGH,
            "wrong-tunnel-endpoint",
        )
        .audit(&["fdb-wrong-underlay"])],
    },
    Entry {
        fault: VtepMacChanged,
        name: "vtep-mac-changed",
        doc: "Node2's VTEP MAC changed; node1 keeps the neighbour and FDB entries of the old \
              one.",
        encaps: VXLAN_ONLY,
        probe: PING,
        // Node1 still sends to the old MAC, which node2's FDB entry still maps to node2:
        // node2 decapsulates a frame for a MAC that is not its own (PACKET_OTHERHOST).
        plan: plans::vtep_mac_changed,
        kernel_drops: &[kernel("node2", OTHERHOST, "probe", false)],
        tracer: &[traced(
            Encap::Vxlan,
            "node2",
            "vxlan.calico",
            OTHERHOST,
            "vtep-mac-mismatch"
        )
        .audit(&["vtep-mac-mismatch"]),],
    },
    Entry {
        fault: StaleBlockBlackhole,
        name: "stale-block-blackhole",
        doc: "Node1 blackholes node2's block (a stale IPAM block affinity).",
        encaps: BOTH,
        probe: PING,
        plan: plans::stale_block_blackhole,
        kernel_drops: &[kernel("node1", BLACKHOLE, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "cali", BLACKHOLE, "blackhole-route")
                .audit(&["block-claimed-twice"]),
            traced(Encap::None, "node1", "cali", BLACKHOLE, "blackhole-route")
                .audit(&["block-claimed-twice"]),
        ],
    },
    Entry {
        fault: IpForwardOff,
        name: "ip-forward-off",
        doc: "Node2 does not forward (`net.ipv4.ip_forward=0`).",
        encaps: BOTH,
        probe: PING,
        // Node2 still decapsulates (the outer packet is for itself) and drops the inner
        // packet in input routing; node1 forwarding off would drop it on the pod's veth.
        plan: plans::ip_forward_off,
        kernel_drops: &[kernel("node2", NO_FORWARD, "probe", false)],
        tracer: &[
            traced(
                Encap::Vxlan,
                "node2",
                "vxlan.calico",
                NO_FORWARD,
                "ip-forward-off"
            )
            .audit(&["ip-forward-off"]),
            traced(Encap::None, "node2", "eth0", NO_FORWARD, "ip-forward-off")
                .audit(&["ip-forward-off"]),
        ],
    },
    Entry {
        fault: ProxyArpOff,
        name: "proxy-arp-off",
        doc: "Proxy ARP is off on the probe pod's veth: the pod cannot resolve its gateway.",
        encaps: BOTH,
        probe: PING,
        // The pod's ARP requests for 169.254.1.1 reach node1's veth and go unanswered; the
        // probe dies in the pod's own namespace (NEIGH_FAILED on its eth0), which the tracer
        // finds from the veth.
        plan: plans::proxy_arp_off,
        kernel_drops: &[kernel("node1", NEIGH, "probe", true)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "pod", NEIGH, "proxy-arp-off").audit(&["proxy-arp-off"]),
            traced(Encap::None, "node1", "pod", NEIGH, "proxy-arp-off").audit(&["proxy-arp-off"]),
        ],
    },
    Entry {
        fault: PodVethDown,
        name: "pod-veth-down",
        doc: "The destination pod's host-side veth on node2 is down.",
        encaps: BOTH,
        probe: PING,
        // The pod's route goes with its device, so node2's own blackhole for its block
        // catches the packet.
        plan: plans::pod_veth_down,
        kernel_drops: &[kernel("node2", BLACKHOLE, "probe", false)],
        tracer: &[
            traced(
                Encap::Vxlan,
                "node2",
                "vxlan.calico",
                BLACKHOLE,
                "pod-veth-down"
            )
            .audit(&["pod-veth-down"]),
            traced(Encap::None, "node2", "eth0", BLACKHOLE, "pod-veth-down")
                .audit(&["pod-veth-down"]),
        ],
    },
    Entry {
        fault: ForwardDropCali,
        name: "forward-drop-cali",
        doc: "An iptables rule on node2 drops everything forwarded to the pods \
              (`-A FORWARD -o cali+ -j DROP`).",
        encaps: BOTH,
        probe: PING,
        plan: plans::forward_drop_cali,
        kernel_drops: &[kernel("node2", NFT, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node2", "vxlan.calico", NFT, "firewall-drop")
                .audit(&["firewall-drops-pod-traffic"]),
            traced(Encap::None, "node2", "eth0", NFT, "firewall-drop")
                .audit(&["firewall-drops-pod-traffic"]),
        ],
    },
    Entry {
        fault: CalicoPolicyDrop,
        name: "calico-policy-drop",
        doc: "A Calico NetworkPolicy denies TCP port 8080 to pod n2p0, in Felix-style chains \
              on node2.",
        encaps: BOTH,
        probe: ProbeSpec {
            proto: "tcp",
            port: Some(POLICY_PORT),
            ..PING
        },
        plan: plans::calico_policy_drop,
        kernel_drops: &[kernel("node2", NFT, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node2", "vxlan.calico", NFT, "policy-drop")
                .audit(&["policy-drops-pod-traffic"]),
            traced(Encap::None, "node2", "eth0", NFT, "policy-drop")
                .audit(&["policy-drops-pod-traffic"]),
        ],
    },
    Entry {
        fault: ConntrackInvalid,
        name: "conntrack-invalid",
        doc: "Node2's conntrack does not pick up connections it lost \
              (`nf_conntrack_tcp_loose=0`) and Calico drops ctstate INVALID.",
        encaps: BOTH,
        // A segment of a connection node2 has no entry for (conntrack lost it): without the
        // fault conntrack picks it up and the pod answers with a reset.
        probe: ProbeSpec {
            proto: "tcp-midflow",
            port: Some(POLICY_PORT),
            ..PING
        },
        plan: plans::conntrack_invalid,
        kernel_drops: &[kernel("node2", NFT, "probe", false)],
        tracer: &[
            traced(
                Encap::Vxlan,
                "node2",
                "vxlan.calico",
                NFT,
                "conntrack-invalid"
            )
            .audit(&["conntrack-loose-off"]),
            traced(Encap::None, "node2", "eth0", NFT, "conntrack-invalid")
                .audit(&["conntrack-loose-off"]),
        ],
    },
    Entry {
        fault: VniMismatch,
        name: "vni-mismatch",
        doc: "Node2's VXLAN device uses another VNI than node1's.",
        encaps: VXLAN_ONLY,
        probe: PING,
        // A VNI cannot be changed on a live device: node2's is re-created (same index, MAC,
        // addresses, neighbours, routes and FDB entries) with the lab's VNI + 1. Node1's
        // frames reach node2's VXLAN socket, which has no device for their VNI.
        plan: plans::vni_mismatch,
        kernel_drops: &[kernel("node2", VNI_NOT_FOUND, "outer", false)],
        tracer: &[
            traced(Encap::Vxlan, "node2", "eth0", VNI_NOT_FOUND, "vni-mismatch")
                .audit(&["vni-mismatch"]),
        ],
    },
    Entry {
        fault: VxlanPortMismatch,
        name: "vxlan-port-mismatch",
        doc: "Node1's VXLAN device uses another UDP port (8472) than node2's.",
        encaps: VXLAN_ONLY,
        probe: PING,
        // Re-created like vni-mismatch's. Node1 encapsulates to node2's address on port
        // 8472, where node2 has no socket: the outer datagram is dropped on node2's uplink
        // (and node2 answers ICMP port unreachable). Seen there only because the tracer
        // decodes VXLAN on every traced device's port (before, it called the packet lost on
        // the underlay and advised opening UDP 8472, the wrong fix).
        plan: plans::vxlan_port_mismatch,
        kernel_drops: &[kernel("node2", NO_UDP_SOCKET, "outer", false)],
        tracer: &[traced(
            Encap::Vxlan,
            "node2",
            "eth0",
            NO_UDP_SOCKET,
            "vxlan-port-mismatch",
        )
        .audit(&["vxlan-port-mismatch"])],
    },
    // ---- A lab with Services (`lab up --services`): kube-proxy's and Calico's NAT ----
    Entry {
        fault: MissingServiceRule,
        name: "missing-service-rule",
        doc: "Node1's kube-proxy lost the DNS Service's rules: its address is not translated.",
        encaps: BOTH,
        probe: DNS_QUERY,
        plan: nat::missing_service_rule,
        kernel_drops: &[kernel("node1", NEIGH, "probe", true)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "eth0", NEIGH, "no-service-rule")
                .audit_exempt(NAT_RULES_UNREAD),
            traced(Encap::None, "node1", "eth0", NEIGH, "no-service-rule")
                .audit_exempt(NAT_RULES_UNREAD),
        ],
    },
    Entry {
        fault: ServiceNoEndpoints,
        name: "service-no-endpoints",
        doc: "A Service has no endpoints: kube-proxy rejects its cluster IP.",
        encaps: BOTH,
        probe: ProbeSpec {
            to: Target::Service("default/web", "http"),
            proto: "tcp",
            ..DNS_QUERY
        },
        plan: nat::service_no_endpoints,
        kernel_drops: &[kernel("node1", NFT, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "cali", NFT, "no-endpoints")
                .audit_exempt(NAT_RULES_UNREAD),
            traced(Encap::None, "node1", "cali", NFT, "no-endpoints")
                .audit_exempt(NAT_RULES_UNREAD),
        ],
    },
    Entry {
        fault: ConntrackFull,
        name: "conntrack-full",
        doc: "Node1's conntrack table is full: new flows through it are dropped.",
        encaps: BOTH,
        probe: DNS_QUERY,
        plan: nat::conntrack_full,
        kernel_drops: &[kernel("node1", NF_HOOK, "probe", false)],
        tracer: &[
            traced(Encap::Vxlan, "node1", "cali", NF_HOOK, "conntrack-full")
                .audit_exempt(NAT_RULES_UNREAD),
            traced(Encap::None, "node1", "cali", NF_HOOK, "conntrack-full")
                .audit_exempt(NAT_RULES_UNREAD),
        ],
    },
    Entry {
        fault: NodeportNoSnat,
        name: "nodeport-no-snat",
        doc: "Node1 does not masquerade NodePort traffic: the reply leaves from the pod's address.",
        encaps: BOTH,
        probe: ProbeSpec {
            from_pod: OUTSIDE,
            to: Target::NodePort("node1", "default/web-np"),
            proto: "tcp",
            ..DNS_QUERY
        },
        plan: nat::nodeport_no_snat,
        kernel_drops: &[kernel("outside", NO_SOCKET, "reply", false)],
        tracer: &[
            seen(Encap::Vxlan, "lost", "asymmetric-snat").audit_exempt(NAT_RULES_UNREAD),
            seen(Encap::None, "lost", "asymmetric-snat").audit_exempt(NAT_RULES_UNREAD),
        ],
    },
    Entry {
        fault: NatOutgoingOff,
        name: "nat-outgoing-off",
        doc: "The IP pool's natOutgoing is off: pod traffic leaves the cluster unmasqueraded.",
        encaps: BOTH,
        probe: ProbeSpec {
            to: Target::Outside,
            proto: "tcp",
            ..DNS_QUERY
        },
        plan: nat::nat_outgoing_off,
        kernel_drops: &[kernel("outside", NEIGH, "reply", true)],
        tracer: &[
            seen(Encap::Vxlan, "lost", "nat-outgoing-off").audit_exempt(NAT_RULES_UNREAD),
            seen(Encap::None, "lost", "nat-outgoing-off").audit_exempt(NAT_RULES_UNREAD),
        ],
    },
];

#[cfg(test)]
mod tests;
