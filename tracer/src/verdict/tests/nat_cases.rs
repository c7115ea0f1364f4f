//! The lab's NAT faults (a lab with Services, issue 14) as synthetic cases: the probe's trace
//! as the tracer reports it in the lab, and the nodes' state with kube-proxy's and Felix's
//! rules in the text `nft -a list ruleset`, `iptables-nft-save -c` and `ipset save` print for
//! them (taken from the lab's nodes), read the way the state reader reads them.

use super::*;
use crate::model::NatStep;
use crate::state::firewall::{
    merge_iptables_nft, parse_ipset_save, parse_iptables_save, parse_nft,
};
use crate::state::NodeState;

/// The DNS Service's cluster IP and the `default/web` Service's.
const DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const WEB_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
/// The machine outside the cluster, on the underlay.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 200);

/// Pod A's DNS query over UDP to `dst:53`.
fn dns_query(dst: Ipv4Addr) -> PacketId {
    PacketId {
        dst,
        proto: 17,
        sport: 41_533,
        dport: 53,
        icmp_id: 0,
        icmp_seq: 0,
        ..icmp(1)
    }
}

/// A TCP SYN from `src:sport` to `dst:dport`.
fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> PacketId {
    PacketId {
        src,
        dst,
        sport,
        dport,
        ..tcp()
    }
}

/// kube-proxy's nat table on a node of the lab, with the DNS Service's rules or without them
/// (`missing-service-rule`), and Felix's natOutgoing chain.
fn nat_table(with_dns: bool) -> (String, String) {
    let dns_nft = "\t\tmeta l4proto udp ip daddr 10.96.0.10  udp dport 53 counter packets 0 \
                   bytes 0 jump KUBE-SVC-TCOU7JCQXEZGVUNU # handle 10\n\
                   \t\tmeta l4proto tcp ip daddr 10.96.0.10  tcp dport 53 counter packets 0 \
                   bytes 0 jump KUBE-SVC-ERIFXISQEP7F7OF4 # handle 11\n";
    let dns_save = "[0:0] -A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment \
                    \"kube-system/kube-dns:dns cluster IP\" -m udp --dport 53 -j \
                    KUBE-SVC-TCOU7JCQXEZGVUNU\n\
                    [0:0] -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \
                    \"kube-system/kube-dns:dns-tcp cluster IP\" -m tcp --dport 53 -j \
                    KUBE-SVC-ERIFXISQEP7F7OF4\n";
    let nft = format!(
        "table ip nat {{ # handle 1\n\
         \tchain PREROUTING {{ # handle 1\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\t counter packets 212 bytes 14310 jump KUBE-SERVICES # handle 8\n\
         \t}}\n\
         \tchain POSTROUTING {{ # handle 2\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\t counter packets 40 bytes 2721 jump cali-POSTROUTING # handle 9\n\
         \t}}\n\
         \tchain KUBE-SERVICES {{ # handle 3\n{}\
         \t\tmeta l4proto tcp ip daddr 10.96.0.20  tcp dport 80 counter packets 0 bytes 0 \
         jump KUBE-SVC-LOLE4ISW44XBNF3G # handle 12\n\
         \t\tmeta l4proto tcp ip daddr 10.96.0.30  tcp dport 80 counter packets 0 bytes 0 \
         jump KUBE-SVC-U5SWBRKBN3AXPKVS # handle 13\n\
         \t}}\n\
         \tchain cali-POSTROUTING {{ # handle 6\n\
         \t\t counter packets 40 bytes 2721 jump cali-nat-outgoing # handle 14\n\
         \t}}\n\
         \tchain cali-nat-outgoing {{ # handle 7\n\
         \t\t xt match set xt match set counter packets 0 bytes 0 masquerade fully-random # \
         handle 15\n\
         \t}}\n\
         }}\n",
        if with_dns { dns_nft } else { "" }
    );
    let save = format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
         :cali-POSTROUTING - [0:0]\n:cali-nat-outgoing - [0:0]\n\
         [212:14310] -A PREROUTING -m comment --comment \"kubernetes service portals\" -j \
         KUBE-SERVICES\n\
         [40:2721] -A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j \
         cali-POSTROUTING\n{}\
         [0:0] -A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http \
         cluster IP\" -m tcp --dport 80 -j KUBE-SVC-LOLE4ISW44XBNF3G\n\
         [0:0] -A KUBE-SERVICES -d 10.96.0.30/32 -p tcp -m comment --comment \
         \"default/web-np:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-U5SWBRKBN3AXPKVS\n\
         [40:2721] -A cali-POSTROUTING -m comment --comment \"cali:Z-c7XtVd2Bq7s_hA\" -j \
         cali-nat-outgoing\n\
         [0:0] -A cali-nat-outgoing -m comment --comment \"cali:flqWnvo8yq4ULQLa\" -m set \
         --match-set cali40masq-ipam-pools src -m set ! --match-set cali40all-ipam-pools dst -j \
         MASQUERADE --random-fully\n\
         COMMIT\n",
        if with_dns { dns_save } else { "" }
    );
    (nft, save)
}

/// kube-proxy's filter rule for `default/web` without endpoints, having rejected `packets`.
fn no_endpoints_filter(packets: u64) -> (String, String) {
    let nft = format!(
        "table ip filter {{ # handle 2\n\
         \tchain FORWARD {{ # handle 1\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state new  counter packets 3 bytes 180 jump KUBE-SERVICES # handle 5\n\
         \t}}\n\
         \tchain KUBE-SERVICES {{ # handle 3\n\
         \t\tmeta l4proto tcp ip daddr 10.96.0.20  tcp dport 80 counter packets {packets} \
         bytes {} reject # handle 6\n\
         \t}}\n\
         }}\n",
        packets * 60
    );
    let save = format!(
        "*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n\
         [3:180] -A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes \
         service portals\" -j KUBE-SERVICES\n\
         [{packets}:{}] -A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \
         \"default/web:http has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with \
         icmp-port-unreachable\n\
         COMMIT\n",
        packets * 60
    );
    (nft, save)
}

/// The sets Felix keeps: every pool, and the pools natOutgoing masquerades from.
fn felix_sets(masq: &[&str]) -> String {
    let mut s = String::from(
        "create cali40all-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576\n\
         add cali40all-ipam-pools 10.244.0.0/16\n\
         create cali40masq-ipam-pools hash:net family inet hashsize 1024 maxelem 1048576\n",
    );
    for m in masq {
        s.push_str(&format!("add cali40masq-ipam-pools {m}\n"));
    }
    s
}

/// `n`'s firewall as the state reader builds it from the three listings.
fn read_firewall(n: &mut NodeState, tables: &[(String, String)], sets: &str) {
    let nft: String = tables.iter().map(|t| t.0.as_str()).collect();
    let save: String = tables.iter().map(|t| t.1.as_str()).collect();
    let mut chains = parse_nft(&nft);
    merge_iptables_nft(&mut chains, &parse_iptables_save(&save));
    n.firewall.chains = chains;
    n.firewall.sets = parse_ipset_save(sets);
}

/// Both nodes of a lab with Services: kube-proxy's rules (`with_dns`: the DNS Service's too)
/// and natOutgoing on; `first` and `now` change the state first read and read at the failure.
fn services_evidence(
    with_dns: bool,
    first: impl Fn(&mut NodeState),
    now: impl Fn(&mut NodeState),
) -> Evidence {
    let state = |i: u8, change: &dyn Fn(&mut NodeState)| {
        let mut s = node_state(i);
        read_firewall(
            &mut s,
            &[nat_table(with_dns)],
            &felix_sets(&["10.244.0.0/16"]),
        );
        s.sysctls
            .insert("net.netfilter.nf_conntrack_max".into(), "262144".into());
        s.sysctls
            .insert("net.netfilter.nf_conntrack_count".into(), "23".into());
        if i == 1 {
            change(&mut s);
        }
        s
    };
    let mut ev = Evidence::new([(NS1, state(1, &first)), (NS2, state(2, &first))]);
    ev.set(NS1, state(1, &now));
    ev.set(NS2, state(2, &now));
    ev
}

/// `missing-service-rule`: node1 has no KUBE-SERVICES rule for 10.96.0.10; the query follows
/// the default route out of eth0 towards a gateway that does not answer ARP.
pub(super) fn lab_missing_service_rule() -> Case {
    Case::new(topo(), |t| {
        trace(t, dns_query(DNS_IP))
            .hop(NS1, CALI_A, Ingress)
            .route_in(NS1, "eth0", Some("10.10.0.254"))
            .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
            .build()
    })
    .with(services_evidence(false, |_| {}, |_| {}))
    .expect_fault(
        Fault::MissingServiceRule,
        LabEncap::Vxlan,
        &[
            "no DNAT happened: 10.96.0.10 port 53",
            "node1 has no kube-proxy rule for it",
            "node1 dropped it on eth0 (NEIGH_FAILED in neigh_invalidate+0x8c)",
            "iptables-save -t nat | grep 10.96.0.10",
        ],
    )
}

/// A ping to the DNS Service's cluster IP, whose rules serve only udp/53 and tcp/53: not
/// translated (kube-proxy has no rule for ICMP), it follows the default route and dies in
/// neighbour resolution. Not a fault: the verdict says so and names the ports to probe.
pub(super) fn ping_to_a_service_address() -> Case {
    Case::new(topo(), |t| {
        trace(
            t,
            PacketId {
                dst: DNS_IP,
                ..icmp(3)
            },
        )
        .hop(NS1, CALI_A, Ingress)
        .route_in(NS1, "eth0", Some("10.10.0.254"))
        .dropped(NS1, ETH0, "NEIGH_FAILED", "neigh_invalidate+0x8c")
        .build()
    })
    .with(services_evidence(true, |_| {}, |_| {}))
    .expect(
        "service-port-not-served",
        &[
            "10.96.0.10 is the cluster IP of Service port kube-system/kube-dns:dns",
            "translates only for udp/53, tcp/53",
            "ICMP (a ping) to a Service address is never translated",
            "tracer diagnose --to 10.96.0.10 --proto udp --port 53",
        ],
    )
}

/// `service-no-endpoints`: kube-proxy's filter KUBE-SERVICES rejects the connection to
/// `default/web` on node1, in the forward hook, as the pod's SYN comes in.
pub(super) fn lab_service_no_endpoints() -> Case {
    let with = |packets: u64| {
        move |n: &mut NodeState| {
            let tables = [nat_table(true), no_endpoints_filter(packets)];
            read_firewall(n, &tables, &felix_sets(&["10.244.0.0/16"]));
        }
    };
    Case::new(topo(), |t| {
        trace(t, syn(ip("10.244.0.1"), 40_000, WEB_IP, 80))
            .hop(NS1, CALI_A, Ingress)
            .dropped(NS1, CALI_A, "NETFILTER_DROP", "nft_do_chain+0x46f")
            .build()
    })
    .with(services_evidence(true, with(0), with(1)))
    .expect_fault(
        Fault::ServiceNoEndpoints,
        LabEncap::Vxlan,
        &[
            "default/web:http has no endpoints",
            "table ip filter chain KUBE-SERVICES handle 6",
            "-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp",
            "kubernetes.io/service-name=web",
        ],
    )
}

/// `conntrack-full`: node1's table is at nf_conntrack_max; conntrack drops the query's first
/// packet in nf_hook_slow (no rule counted it).
pub(super) fn lab_conntrack_full() -> Case {
    let full = |n: &mut NodeState| {
        for k in [
            "net.netfilter.nf_conntrack_max",
            "net.netfilter.nf_conntrack_count",
        ] {
            n.sysctls.insert(k.into(), "4096".into());
        }
    };
    Case::new(topo(), |t| {
        trace(t, dns_query(DNS_IP))
            .hop(NS1, CALI_A, Ingress)
            .dropped(NS1, CALI_A, "NETFILTER_DROP", "nf_hook_slow+0xd2")
            .build()
    })
    .with(services_evidence(true, full, full))
    .expect_fault(
        Fault::ConntrackFull,
        LabEncap::Vxlan,
        &[
            "node1's conntrack table is full (4096 entries, nf_conntrack_max 4096)",
            "10.244.0.1:41533 -> 10.96.0.10:53",
            "no firewall rule dropped it",
        ],
    )
}

/// `nodeport-no-snat`: node1 DNATed the outside client's SYN to its node port to pod C on
/// node2 without masquerading it, so pod C's SYN-ACK goes from node2's uplink straight to the
/// client (which resets it, unseen): the reply is lost, un-translated.
pub(super) fn lab_nodeport_no_snat(encap: LabEncap) -> Case {
    let (t, via) = match encap {
        LabEncap::Vxlan => (topo(), "vxlan.calico"),
        _ => (native_topo(), "eth0"),
    };
    let pod_c = ip("10.244.4.1");
    let reply = PacketId {
        tcp_seq: 77_001,
        ..syn(pod_c, 8080, OUTSIDE, 40_412)
    };
    Case::new(t, |t| {
        let mut tr = trace(t, reply)
            .hop(NS2, CALI_C, Ingress)
            .hop(NS2, ETH0, Egress)
            .outcome(Outcome::Lost)
            .build();
        tr.tcp_flags = 0x12;
        tr.answers = Some(NatStep {
            ts_ns: 500,
            node: "node1".into(),
            netns: NS1,
            ifname: via.into(),
            kind: "DNAT",
            proto: 6,
            from: (OUTSIDE, 40_412, ip("10.10.0.1"), 30_080),
            to: (OUTSIDE, 40_412, pod_c, 8080),
        });
        tr
    })
    .with(services_evidence(true, |_| {}, |_| {}))
    .expect_fault(
        Fault::NodeportNoSnat,
        encap,
        &[
            "this packet (10.244.4.1:8080 -> 10.10.0.200:40412) answers the request \
             10.10.0.200:40412 -> 10.10.0.1:30080",
            "(DNAT dst 10.10.0.1:30080 -> 10.244.4.1:8080)",
            "it left node2 by eth0, not through node1, and was not seen again.",
        ],
    )
}

/// `nodeport-no-snat` in the VXLAN lab.
pub(super) fn lab_nodeport_no_snat_vxlan() -> Case {
    lab_nodeport_no_snat(LabEncap::Vxlan)
}

/// `nat-outgoing-off`: Felix's masquerade set is empty, so pod A's SYN to the outside machine
/// leaves node1's uplink with its pod address and no answer comes back.
pub(super) fn lab_nat_outgoing_off() -> Case {
    let off = |n: &mut NodeState| {
        n.firewall.sets = parse_ipset_save(&felix_sets(&[]));
    };
    Case::new(topo(), |t| {
        trace(t, syn(ip("10.244.0.1"), 40_000, OUTSIDE, 8080))
            .hop(NS1, CALI_A, Ingress)
            .hop(NS1, ETH0, Egress)
            .outcome(Outcome::Lost)
            .build()
    })
    .with(services_evidence(true, off, off))
    .expect_fault(
        Fault::NatOutgoingOff,
        LabEncap::Vxlan,
        &[
            "the packet from pod address 10.244.0.1 left node1 by eth0 to 10.10.0.200",
            "no SNAT happened",
        ],
    )
}

/// The state the NAT verdicts rest on is named in their evidence, read from the listings.
#[test]
fn nat_verdicts_name_the_rules_and_sets_they_rest_on() {
    let cases: [(Case, &str); 4] = [
        (
            lab_missing_service_rule(),
            "node1: table ip nat chain KUBE-SERVICES translates 10.96.0.20, 10.96.0.30 (2 \
             rules) and has no rule for 10.96.0.10",
        ),
        (
            lab_service_no_endpoints(),
            "(comment \"default/web:http has no endpoints\"), +1 packet since the tracer started",
        ),
        (
            lab_conntrack_full(),
            "node1: net.netfilter.nf_conntrack_count = 4096, nf_conntrack_max = 4096",
        ),
        (
            lab_nat_outgoing_off(),
            "node1: ipset cali40masq-ipam-pools (the pools Felix masquerades from) = [], \
             without 10.244.0.1",
        ),
    ];
    for (case, want) in cases {
        let v = case.check();
        assert!(
            v.evidence.iter().any(|e| e.contains(want)),
            "{}: evidence lacks {want:?}: {:?}",
            v.name,
            v.evidence
        );
    }
}

/// With the DNS Service's rules in place, natOutgoing on, the table not full or no rule
/// counted, the same traces get no NAT verdict: each case's state is what decides.
#[test]
fn nat_verdicts_need_their_state() {
    let mut c = lab_missing_service_rule();
    c.ev = services_evidence(true, |_| {}, |_| {});
    assert_ne!(c.verdict().name, "no-service-rule");
    let mut c = lab_conntrack_full();
    c.ev = services_evidence(true, |_| {}, |_| {});
    assert_ne!(c.verdict().name, "conntrack-full");
    let mut c = lab_service_no_endpoints();
    let same = |n: &mut NodeState| {
        let tables = [nat_table(true), no_endpoints_filter(1)];
        read_firewall(n, &tables, &felix_sets(&["10.244.0.0/16"]));
    };
    c.ev = services_evidence(true, same, same);
    assert_ne!(c.verdict().name, "no-endpoints");
    let mut c = lab_nat_outgoing_off();
    c.ev = services_evidence(true, |_| {}, |_| {});
    assert_ne!(c.verdict().name, "nat-outgoing-off");
    let mut c = lab_nodeport_no_snat(LabEncap::Vxlan);
    c.trace.answers = None;
    assert_ne!(c.verdict().name, "asymmetric-snat");
}
