use std::net::Ipv4Addr;

use super::*;
use crate::state::{
    firewall::{parse_iptables_save, parse_nft},
    Addr, FdbEntry, Ipip, LinkState, Mac, Neighbour, Net, NodeState, RouteEntry, RouteType,
    RuleEntry, Vxlan, TABLE_LOCAL, TABLE_MAIN,
};

/// How the synthetic cluster encapsulates.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Vxlan,
    Ipip,
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn link(ifindex: u32, name: &str, kind: &str, mtu: u32) -> LinkState {
    LinkState {
        ifindex,
        name: name.into(),
        kind: kind.into(),
        mtu,
        mac: Some(Mac([0x52, 0, 0, 0, ifindex as u8, 1])),
        up: true,
        carrier: true,
        oper: "up".into(),
        ..LinkState::default()
    }
}

fn route(dst: &str, gw: Option<&str>, oif: u32, dev: &str) -> RouteEntry {
    RouteEntry {
        table: TABLE_MAIN,
        kind: RouteType::Unicast,
        dst: dst.parse().unwrap(),
        gateway: gw.map(ip),
        oif: Some(oif),
        dev: dev.into(),
        onlink: gw.is_some() && dev != "eth0",
        metric: 0,
        proto: "static".into(),
        prefsrc: None,
    }
}

fn underlay(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 10, 0, i)
}
fn block(i: u8) -> Net {
    Net::new(Ipv4Addr::new(10, 244, 4 * (i - 1), 0), 26)
}
fn vtep_addr(i: u8) -> Ipv4Addr {
    block(i).addr
}
fn vtep_mac(i: u8) -> Mac {
    Mac([0x66, 0, 0, 0, 0, i])
}
fn pod(i: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(block(i).addr) + 1)
}

/// Node `i` of `n` in a Calico-like cluster, as the state reader would return it.
fn node(i: u8, n: u8, mode: Mode) -> NodeState {
    let name = format!("node{i}");
    let mut s = NodeState {
        node: name,
        ..NodeState::default()
    };
    let (eth, tun, cali) = (2, 3, 4);
    s.links.push(link(1, "lo", "", 65536));
    s.links.push(link(eth, "eth0", "", 1500));
    let mut t = match mode {
        Mode::Vxlan => {
            let mut l = link(tun, "vxlan.calico", "vxlan", 1450);
            l.mac = Some(vtep_mac(i));
            l.vxlan = Some(Vxlan {
                vni: Some(4096),
                port: Some(4789),
                local: Some(underlay(i)),
                link: Some(eth),
                learning: false,
            });
            l
        }
        Mode::Ipip => {
            let mut l = link(tun, "tunl0", "ipip", 1480);
            l.ipip = Some(Ipip::default());
            l
        }
    };
    t.carrier = true;
    let tun_name = t.name.clone();
    s.links.push(t);
    s.links.push(link(cali, "cali0123456789a", "veth", 1450));
    s.addrs.push(Addr {
        ifindex: eth,
        dev: "eth0".into(),
        net: Net::new(underlay(i), 24),
        addr: underlay(i),
    });
    s.addrs.push(Addr {
        ifindex: tun,
        dev: tun_name.clone(),
        net: Net::host(vtep_addr(i)),
        addr: vtep_addr(i),
    });
    s.routes
        .push(route("0.0.0.0/0", Some("10.10.0.254"), eth, "eth0"));
    s.routes.push(route("10.10.0.0/24", None, eth, "eth0"));
    let mut bh = route(&block(i).to_string(), None, 0, "");
    bh.kind = RouteType::Blackhole;
    bh.oif = None;
    s.routes.push(bh);
    s.routes.push(route(
        &format!("{}/32", pod(i)),
        None,
        cali,
        "cali0123456789a",
    ));
    let mut local = route(&format!("{}/32", underlay(i)), None, eth, "eth0");
    local.kind = RouteType::Local;
    local.table = TABLE_LOCAL;
    s.routes.push(local);
    for j in (1..=n).filter(|j| *j != i) {
        match mode {
            Mode::Vxlan => {
                s.routes.push(route(
                    &block(j).to_string(),
                    Some(&vtep_addr(j).to_string()),
                    tun,
                    &tun_name,
                ));
                s.neighbours.push(Neighbour {
                    ifindex: tun,
                    dev: tun_name.clone(),
                    addr: vtep_addr(j),
                    lladdr: Some(vtep_mac(j)),
                    state: "permanent".into(),
                });
                s.fdb.push(FdbEntry {
                    ifindex: tun,
                    dev: tun_name.clone(),
                    mac: vtep_mac(j),
                    dst: Some(underlay(j)),
                    vni: None,
                    port: None,
                    state: "permanent".into(),
                });
            }
            Mode::Ipip => s.routes.push(route(
                &block(j).to_string(),
                Some(&underlay(j).to_string()),
                tun,
                &tun_name,
            )),
        }
    }
    for (prio, table) in [(0, TABLE_LOCAL), (32766, TABLE_MAIN), (32767, 253)] {
        s.rules.push(RuleEntry {
            priority: prio,
            action: "to-table".into(),
            table,
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
        });
    }
    let sys = |k: &str, v: &str| (k.to_string(), v.to_string());
    s.sysctls.extend([
        sys("net.ipv4.ip_forward", "1"),
        sys("net.ipv4.conf.all.rp_filter", "0"),
        sys("net.ipv4.conf.cali0123456789a.proxy_arp", "1"),
        sys("net.ipv4.conf.cali0123456789a.rp_filter", "1"),
        sys(&format!("net.ipv4.conf.{tun_name}.rp_filter"), "0"),
    ]);
    s
}

fn cluster(n: u8, mode: Mode) -> Vec<NodeState> {
    (1..=n).map(|i| node(i, n, mode)).collect()
}

fn codes(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.code).collect()
}

#[test]
fn healthy_clusters_have_no_findings() {
    for mode in [Mode::Vxlan, Mode::Ipip] {
        for n in 1..=4 {
            let f = audit(&cluster(n, mode));
            assert!(f.is_empty(), "{n} nodes: {f:#?}");
        }
    }
}

#[test]
fn a_changed_vtep_mac_is_named_with_both_values() {
    let mut c = cluster(3, Mode::Vxlan);
    // node2's vxlan.calico re-created with a new MAC; node1 and node3 keep the old one.
    c[1].links[2].mac = Some(Mac([0x66, 0, 0, 0, 0, 0x99]));
    let f = audit(&c);
    let hits: Vec<&Finding> = f.iter().filter(|f| f.code == "vtep-mac-mismatch").collect();
    assert_eq!(hits.len(), 2, "{f:#?}");
    let h = hits[0];
    assert_eq!(h.nodes, ["node1", "node2"]);
    assert_eq!(h.object, "neighbour 10.244.4.0 dev vxlan.calico");
    assert!(h.found.contains("66:00:00:00:00:02"), "{h}");
    assert!(h.expected.contains("66:00:00:00:00:99"), "{h}");
    assert!(h.fix.contains("VXLANTunnelMACAddr"), "{h}");
    // The FDB still points the old MAC at node2; nothing for the new MAC.
    assert!(!codes(&f).contains(&"fdb-wrong-underlay"), "{f:#?}");
}

#[test]
fn a_blackhole_for_a_remote_block_is_a_stale_affinity() {
    let mut c = cluster(2, Mode::Vxlan);
    // node1 lost its route to node2's block and blackholes it instead.
    c[0].routes.retain(|r| r.dst != block(2));
    let mut bh = route(&block(2).to_string(), None, 0, "");
    bh.kind = RouteType::Blackhole;
    bh.oif = None;
    c[0].routes.push(bh);
    let f = audit(&c);
    assert_eq!(codes(&f), ["block-claimed-twice"], "{f:#?}");
    assert!(f[0].fix.contains("affinity"));
    // A blackhole for a larger prefix that covers the block: the route is the finding.
    let mut c = cluster(2, Mode::Vxlan);
    c[0].routes.retain(|r| r.dst != block(2));
    let mut bh = route("10.244.0.0/16", None, 0, "");
    bh.kind = RouteType::Blackhole;
    bh.oif = None;
    c[0].routes.push(bh);
    let f = audit(&c);
    assert_eq!(codes(&f), ["blackhole-for-remote-block"], "{f:#?}");
    assert_eq!(f[0].nodes, ["node1", "node2"]);
    assert!(
        f[0].expected
            .contains("via 10.244.4.0 dev vxlan.calico onlink"),
        "{}",
        f[0]
    );
}

#[test]
fn missing_routes_neighbours_and_fdb_entries() {
    let mut c = cluster(2, Mode::Vxlan);
    c[0].routes.retain(|r| r.dst != block(2));
    c[0].routes.retain(|r| r.dst.len != 0);
    assert_eq!(codes(&audit(&c)), ["no-route-to-block"]);

    let mut c = cluster(2, Mode::Vxlan);
    c[0].neighbours.clear();
    assert_eq!(codes(&audit(&c)), ["no-vtep-neighbour"]);

    let mut c = cluster(2, Mode::Vxlan);
    c[0].fdb.clear();
    assert_eq!(codes(&audit(&c)), ["no-vtep-fdb"]);

    let mut c = cluster(2, Mode::Vxlan);
    c[0].fdb[0].port = Some(8472);
    assert_eq!(codes(&audit(&c)), ["fdb-wrong-port"]);

    let mut c = cluster(2, Mode::Vxlan);
    c[0].fdb[0].dst = Some(ip("10.10.0.77"));
    let f = audit(&c);
    assert_eq!(codes(&f), ["fdb-wrong-underlay"]);
    assert!(f[0].expected.contains("10.10.0.2"));
}

#[test]
fn tunnel_parameters_both_ends_share() {
    let mut c = cluster(2, Mode::Vxlan);
    c[1].links[2].vxlan.as_mut().unwrap().vni = Some(4097);
    assert_eq!(codes(&audit(&c)), ["vni-mismatch"]);
    let mut c = cluster(2, Mode::Vxlan);
    c[1].links[2].vxlan.as_mut().unwrap().port = Some(8472);
    assert_eq!(codes(&audit(&c)), ["vxlan-port-mismatch"]);
    let mut c = cluster(2, Mode::Vxlan);
    c[1].links[2].mtu = 1400;
    c[1].links[3].mtu = 1400;
    assert_eq!(codes(&audit(&c)), ["tunnel-mtu-mismatch"]);
    // A pod above its node's tunnel MTU.
    c[1].links[3].mtu = 1450;
    assert_eq!(
        codes(&audit(&c)),
        ["pod-mtu-above-tunnel", "tunnel-mtu-mismatch"]
    );
    let mut c = cluster(2, Mode::Vxlan);
    c[0].links[1].mtu = 1480;
    assert_eq!(codes(&audit(&c)), ["tunnel-mtu-overhead"]);
}

#[test]
fn node_sysctls_and_devices() {
    let mut c = cluster(2, Mode::Ipip);
    c[1].sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    let f = audit(&c);
    assert_eq!(codes(&f), ["ip-forward-off"]);
    assert_eq!(f[0].nodes, ["node2"]);

    let mut c = cluster(2, Mode::Ipip);
    c[0].sysctls
        .insert("net.ipv4.conf.cali0123456789a.proxy_arp".into(), "0".into());
    assert_eq!(codes(&audit(&c)), ["proxy-arp-off"]);

    let mut c = cluster(2, Mode::Ipip);
    c[0].links[3].up = false;
    c[0].links[3].oper = "down".into();
    assert_eq!(codes(&audit(&c)), ["pod-veth-down"]);

    let mut c = cluster(2, Mode::Vxlan);
    c[0].links[2].up = false;
    assert_eq!(codes(&audit(&c)), ["tunnel-down"]);
}

#[test]
fn native_routing_pods_above_the_uplink_mtu() {
    let mut c = cluster(2, Mode::Ipip);
    for n in &mut c {
        n.links.retain(|l| l.kind != "ipip");
        for r in &mut n.routes {
            if r.oif == Some(3) {
                *r = route(
                    &r.dst.to_string(),
                    r.gateway.map(|_| "").and(None),
                    2,
                    "eth0",
                );
            }
        }
    }
    // Routes via the peers' underlay addresses, as BGP installs them.
    for (i, n) in c.iter_mut().enumerate() {
        let peer = if i == 0 { 2 } else { 1 };
        let r = n.routes.iter_mut().find(|r| r.dst == block(peer)).unwrap();
        r.gateway = Some(underlay(peer));
    }
    assert!(audit(&c).is_empty(), "{:#?}", audit(&c));
    c[0].links[1].mtu = 1000;
    let f = audit(&c);
    assert_eq!(codes(&f), ["pod-mtu-above-uplink"], "{f:#?}");
}

#[test]
fn ipip_routes_to_the_wrong_node_or_a_node_without_tunnel() {
    let mut c = cluster(3, Mode::Ipip);
    let r = c[0].routes.iter_mut().find(|r| r.dst == block(2)).unwrap();
    r.gateway = Some(underlay(3));
    let f = audit(&c);
    assert_eq!(codes(&f), ["route-wrong-ipip-endpoint"]);
    assert!(f[0].found.contains("(node3's)"), "{}", f[0]);
    let mut c = cluster(2, Mode::Ipip);
    c[1].links.retain(|l| l.kind != "ipip");
    assert!(codes(&audit(&c)).contains(&"no-ipip-on-peer"));
}

#[test]
fn strict_rp_filter_with_asymmetric_encapsulation() {
    // node2 reaches node1's pods without encapsulation (route via the underlay), node1 answers
    // through its VXLAN device; with strict rp_filter on eth0, node1 drops node2's packets.
    let mut c = cluster(2, Mode::Vxlan);
    let r = c[1].routes.iter_mut().find(|r| r.dst == block(1)).unwrap();
    *r = route(
        &block(1).to_string(),
        Some(&underlay(1).to_string()),
        2,
        "eth0",
    );
    c[0].sysctls
        .insert("net.ipv4.conf.eth0.rp_filter".into(), "1".into());
    let f = audit(&c);
    assert_eq!(codes(&f), ["rp-filter-asymmetric"], "{f:#?}");
    assert_eq!(f[0].nodes, ["node1", "node2"]);
    // Loose mode lets it through.
    c[0].sysctls
        .insert("net.ipv4.conf.eth0.rp_filter".into(), "2".into());
    assert!(audit(&c).is_empty());
}

#[test]
fn host_firewall_rules_against_the_tunnel_or_the_pods() {
    let mut c = cluster(2, Mode::Vxlan);
    c[1].firewall.chains = parse_nft(
        "table ip vmf { # handle 1\n chain input { # handle 1\n  type filter hook input priority filter; policy accept;\n  udp dport 4789 counter packets 3 bytes 300 drop # handle 2\n }\n}\n",
    );
    let f = audit(&c);
    assert_eq!(codes(&f), ["firewall-blocks-vxlan"]);
    assert_eq!(
        f[0].object,
        "table ip vmf chain input rule handle 2 (hook input)"
    );
    assert!(f[0].found.contains("3 packets"), "{}", f[0]);

    // A FORWARD drop toward cali+ is a host firewall error; a deny rule of Calico's own
    // policy chains is only a warning, of another kind.
    let mut c = cluster(2, Mode::Vxlan);
    c[0].firewall.chains = parse_nft(
        "table ip filter {\n chain FORWARD {\n  type filter hook forward priority filter; policy accept;\n  oifname \"cali+\" counter packets 0 bytes 0 drop # handle 9\n }\n chain cali-pi-_deny {\n  counter packets 0 bytes 0 drop # handle 10\n }\n}\n",
    );
    assert_eq!(
        codes(&audit(&c)),
        ["firewall-drops-pod-traffic", "policy-drops-pod-traffic"]
    );
}

/// Felix's chains as iptables-nft writes them (what `nft` shows: no comments) and as
/// iptables-save shows them (comments, so the policy is named).
const FELIX_NFT: &str = "table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy accept;
		 counter packets 5 bytes 420 jump cali-FORWARD # handle 3
	}
	chain cali-tw-cali0123456789a {
		 ct state related,established counter packets 0 bytes 0 accept # handle 10
		 ct state invalid counter packets 0 bytes 0 drop # handle 11
		 meta mark & 0x00020000 == 0x00000000 counter packets 0 bytes 0 drop # handle 16
	}
	chain cali-pi-_j-GxXDRjvl8seUeXzkb {
		meta l4proto tcp   tcp dport 8080 counter packets 2 bytes 120 drop # handle 17
		  counter packets 0 bytes 0 meta mark set mark or 0x10000 # handle 18
	}
}
";

#[test]
fn deny_rules_of_calico_policies_are_named_warnings() {
    let mut c = cluster(2, Mode::Vxlan);
    c[1].firewall.chains = parse_nft(FELIX_NFT);
    let f = audit(&c);
    // Only the policy's deny rule: the workload chain's drops are Calico's machinery.
    assert_eq!(codes(&f), ["policy-drops-pod-traffic"], "{f:#?}");
    let h = &f[0];
    assert_eq!(h.severity, Severity::Warning);
    assert_eq!(h.nodes, ["node2"]);
    assert_eq!(
        h.object,
        "table ip filter chain cali-pi-_j-GxXDRjvl8seUeXzkb rule handle 17"
    );
    assert!(h.found.contains("tcp dport 8080 drop"), "{h}");
    assert!(h.found.contains("2 packets so far"), "{h}");
    assert!(
        h.found.contains("chain cali-pi-_j-GxXDRjvl8seUeXzkb"),
        "{h}"
    );
    // With comments (iptables-save of legacy iptables), the policy's name.
    let mut c = cluster(2, Mode::Vxlan);
    c[1].firewall.chains = parse_iptables_save(
        "*filter\n:cali-pi-_j-GxXDRjvl8seUeXzkb - [0:0]\n[3:180] -A cali-pi-_j-GxXDRjvl8seUeXzkb -p tcp -m comment --comment \"cali:Ab3_d9-QrT5xYz0K\" -m comment --comment \"Policy default/default.deny-8080 ingress\" -m multiport --dports 8080 -j DROP\nCOMMIT\n",
    );
    let f = audit(&c);
    assert_eq!(codes(&f), ["policy-drops-pod-traffic"], "{f:#?}");
    assert!(
        f[0].found.contains(
            "Calico policy default/default.deny-8080 (chain cali-pi-_j-GxXDRjvl8seUeXzkb)"
        ),
        "{}",
        f[0]
    );
    assert!(f[0].fix.contains("calicoctl"), "{}", f[0]);
}

#[test]
fn conntrack_not_picking_up_lost_connections_where_calico_drops_invalid() {
    let with = |loose: &str, rules: &str| {
        let mut c = cluster(2, Mode::Vxlan);
        c[1].sysctls
            .insert("net.netfilter.nf_conntrack_tcp_loose".into(), loose.into());
        c[1].firewall.chains = parse_nft(rules);
        audit(&c)
    };
    let f = with("0", FELIX_NFT);
    let hit: Vec<&Finding> = f
        .iter()
        .filter(|f| f.code == "conntrack-loose-off")
        .collect();
    assert_eq!(hit.len(), 1, "{f:#?}");
    assert_eq!(hit[0].nodes, ["node2"]);
    assert_eq!(hit[0].severity, Severity::Warning);
    assert!(
        hit[0]
            .found
            .contains("chain cali-tw-cali0123456789a rule handle 11"),
        "{}",
        hit[0]
    );
    // Loose pickup on, or no rule dropping INVALID: nothing to say.
    assert!(!codes(&with("1", FELIX_NFT)).contains(&"conntrack-loose-off"));
    assert!(with("0", "").is_empty());
}

#[test]
fn a_wrong_vtep_next_hop_names_the_node_it_belongs_to() {
    let mut c = cluster(3, Mode::Vxlan);
    let r = c[0].routes.iter_mut().find(|r| r.dst == block(2)).unwrap();
    r.gateway = Some(vtep_addr(3));
    let f = audit(&c);
    assert!(codes(&f).contains(&"route-wrong-vtep"), "{f:#?}");
    let h = f.iter().find(|f| f.code == "route-wrong-vtep").unwrap();
    assert!(h.expected.contains("10.244.4.0"), "{h}");
}

#[test]
fn findings_are_errors_first_and_display_on_two_lines() {
    let mut c = cluster(2, Mode::Vxlan);
    c[1].links[2].mtu = 1400;
    c[0].neighbours.clear();
    let f = audit(&c);
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f.last().unwrap().severity, Severity::Warning);
    let text = f[0].to_string();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.starts_with("error no-vtep-neighbour: node1: "),
        "{text}"
    );
}
