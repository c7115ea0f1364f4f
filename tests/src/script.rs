//! The configuration of each namespace as `ip -batch` / `bridge -batch` lines and sysctl
//! writes, generated purely from a [`Topology`].
//!
//! Design note: the builder ([`crate::Lab::up`]) is a thin executor that feeds these scripts
//! to one `ip -netns NS -batch -` process per namespace; keeping the generation pure makes the
//! exact commands reviewable and unit-testable without root (routes per mode, MTUs, ...).
//! Order of execution (see `build.rs`): sysctls of every netns (so that IPv6 is already off and
//! forwarding on when devices appear), the underlay script (bridge + every node uplink veth,
//! peer created straight into the node netns), each node script (uplink address, cali veths
//! with their peers created straight into the pod netns, blackholes, VTEP, routes), each
//! node's FDB script and cali sysctls, and finally each pod script.
//!
//! This is what Calico's CNI plugin and Felix program on a real node: a /32 on the pod's
//! `eth0`, a link-local default gateway answered by proxy ARP on `cali*`, a host route per pod,
//! blackholes for the node's own blocks, and per remote block either a VXLAN route (onlink
//! via the remote VTEP, with static neighbour + FDB entries), an IPIP route (onlink via the
//! remote node's address out of `tunl0`, which carries the node's tunnel address), or a native
//! route via the remote node (what BGP would install).
//!
//! A node of a VM lab (one node per guest, see [`crate::Lab::up_node`]) runs the same node,
//! FDB, cali-sysctl and pod scripts in its guest: everything a node needs about its peers
//! (addresses, VTEP MACs) is a function of the spec, so no guest talks to another to build its
//! half. Its uplink is the guest's NIC, so instead of the underlay script it gets
//! [`local_node_teardown`] to undo the node script on the device it does not own.

use crate::spec::{CALI_MAC, POD_GATEWAY};
use crate::topology::{Node, Pod, Topology};
use crate::Encap;

/// One write under `/proc/sys`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// Path relative to `/proc/sys` (slashes, since interface names may contain dots).
    pub path: String,
    /// Value to write.
    pub value: &'static str,
    /// Skip silently if the file does not exist (IPv6 may be compiled out).
    pub optional: bool,
}

impl Sysctl {
    fn new(path: impl Into<String>, value: &'static str) -> Self {
        Self {
            path: path.into(),
            value,
            optional: false,
        }
    }

    fn optional(path: impl Into<String>, value: &'static str) -> Self {
        Self {
            optional: true,
            ..Self::new(path, value)
        }
    }
}

fn no_ipv6() -> Vec<Sysctl> {
    vec![
        Sysctl::optional("net/ipv6/conf/all/disable_ipv6", "1"),
        Sysctl::optional("net/ipv6/conf/default/disable_ipv6", "1"),
    ]
}

/// Sysctls of the underlay and pod namespaces, written before any device exists.
pub fn leaf_sysctls() -> Vec<Sysctl> {
    no_ipv6()
}

/// Sysctls of a node namespace, written before any device exists.
pub fn node_sysctls() -> Vec<Sysctl> {
    let mut v = no_ipv6();
    // Also flips conf/default/forwarding, so every device created later forwards.
    v.push(Sysctl::new("net/ipv4/ip_forward", "1"));
    v
}

/// Per-cali sysctls of a node, written once its cali devices exist: proxy ARP (answers the
/// pod's ARP for 169.254.1.1) without the default random delay of up to 0.8 s, as Felix does.
pub fn cali_sysctls(t: &Topology, node: &Node) -> Vec<Sysctl> {
    t.pods_on(&node.name)
        .into_iter()
        .flat_map(|p| {
            [
                Sysctl::new(format!("net/ipv4/conf/{}/proxy_arp", p.cali), "1"),
                Sysctl::new(format!("net/ipv4/neigh/{}/proxy_delay", p.cali), "0"),
            ]
        })
        .collect()
}

/// `ip -netns {underlay} -batch -`: the bridge and every node uplink.
pub fn underlay_script(t: &Topology) -> Vec<String> {
    let br = &t.underlay.bridge;
    let mut v = vec![
        "link set lo up".to_owned(),
        format!("link add {br} type bridge"),
        format!("link set {br} up"),
    ];
    for n in &t.nodes {
        v.push(format!(
            "link add {port} mtu {mtu} type veth peer name {up} netns {ns} mtu {mtu}",
            port = n.underlay_port,
            mtu = n.mtu,
            up = n.uplink,
            ns = n.netns,
        ));
        v.push(format!("link set {} master {br} up", n.underlay_port));
    }
    v
}

/// `ip -netns {node} -batch -`: everything of a node except FDB entries and sysctls.
pub fn node_script(t: &Topology, node: &Node) -> Vec<String> {
    let up = &node.uplink;
    let mut v = vec![
        "link set lo up".to_owned(),
        format!("addr add {}/{} dev {up}", node.ip, t.underlay.subnet.len),
        format!("link set {up} up"),
        format!("route add default via {} dev {up}", t.underlay.gateway),
    ];
    for p in t.pods_on(&node.name) {
        v.extend(cali_lines(p));
    }
    for b in &node.blocks {
        v.push(format!("route add blackhole {b}"));
    }
    if let Some(vtep) = &node.vtep {
        v.push(format!(
            "link add {dev} mtu {mtu} address {mac} type vxlan id {vni} dstport {port} \
             dev {up} local {ip} nolearning",
            dev = vtep.ifname,
            mtu = vtep.mtu,
            mac = vtep.mac,
            vni = t.vni,
            port = t.vxlan_port,
            ip = node.ip,
        ));
        v.push(format!("addr add {}/32 dev {}", vtep.ip, vtep.ifname));
        v.push(format!("link set {} up", vtep.ifname));
        for r in remote_nodes(t, node) {
            if let Some(rv) = &r.vtep {
                v.push(format!(
                    "neigh add {} lladdr {} dev {} nud permanent",
                    rv.ip, rv.mac, vtep.ifname
                ));
            }
        }
    }
    if let Some(tun) = &node.ipip {
        // The fallback tunnel exists once the `ipip` module is loaded (in every namespace).
        v.push(format!("addr add {}/32 dev {}", tun.ip, tun.ifname));
        v.push(format!("link set {} mtu {} up", tun.ifname, tun.mtu));
    }
    v.extend(remote_routes(t, node));
    v
}

/// `ip -netns {node} -batch -` lines that undo [`node_script`] in a namespace the lab does not
/// delete (a VM guest's root namespace): the routes to remote blocks, the blackholes, the
/// tunnel (VXLAN device deleted, `tunl0` cleared and down: it belongs to the kernel), the
/// uplink's address (with it the default route) and the uplink itself down. The cali veths go
/// with the pod namespaces.
pub fn local_node_teardown(t: &Topology, node: &Node) -> Vec<String> {
    let mut v: Vec<String> = remote_routes(t, node)
        .iter()
        .filter_map(|r| r.strip_prefix("route add "))
        .map(|r| format!("route del {r}"))
        .collect();
    v.extend(
        node.blocks
            .iter()
            .map(|b| format!("route del blackhole {b}")),
    );
    if let Some(vtep) = &node.vtep {
        v.push(format!("link del {}", vtep.ifname));
    }
    if let Some(tun) = &node.ipip {
        v.push(format!("addr flush dev {}", tun.ifname));
        v.push(format!("link set {} down", tun.ifname));
    }
    v.push(format!(
        "addr del {}/{} dev {}",
        node.ip, t.underlay.subnet.len, node.uplink
    ));
    v.push(format!("link set {} down", node.uplink));
    v
}

pub(crate) fn cali_lines(p: &Pod) -> [String; 3] {
    [
        format!(
            "link add {cali} mtu {mtu} address {CALI_MAC} type veth peer name {ifname} \
             netns {ns} mtu {mtu}",
            cali = p.cali,
            mtu = p.mtu,
            ifname = p.ifname,
            ns = p.netns,
        ),
        format!("link set {} up", p.cali),
        format!("route add {}/32 dev {} scope link", p.ip, p.cali),
    ]
}

fn remote_nodes<'a>(t: &'a Topology, node: &'a Node) -> impl Iterator<Item = &'a Node> + 'a {
    t.nodes.iter().filter(move |n| n.name != node.name)
}

/// The routes (as `ip -batch` lines) a node gets towards the other nodes' blocks.
pub fn remote_routes(t: &Topology, node: &Node) -> Vec<String> {
    let mut v = Vec::new();
    for r in remote_nodes(t, node) {
        for b in &r.blocks {
            match (t.encap, &node.vtep, &r.vtep, &node.ipip) {
                (Encap::Vxlan, Some(local), Some(remote), _) => v.push(format!(
                    "route add {b} via {} dev {} onlink",
                    remote.ip, local.ifname
                )),
                (Encap::Ipip, _, _, Some(tun)) => v.push(format!(
                    "route add {b} via {} dev {} onlink",
                    r.ip, tun.ifname
                )),
                _ => v.push(format!("route add {b} via {} dev {}", r.ip, node.uplink)),
            }
        }
    }
    v
}

/// `bridge -netns {node} -batch -`: one FDB entry per remote VTEP (empty in `none` mode).
pub fn fdb_script(t: &Topology, node: &Node) -> Vec<String> {
    let Some(vtep) = &node.vtep else {
        return Vec::new();
    };
    remote_nodes(t, node)
        .filter_map(|r| {
            r.vtep.as_ref().map(|rv| {
                format!(
                    "fdb add {} dev {} dst {} self permanent",
                    rv.mac, vtep.ifname, r.ip
                )
            })
        })
        .collect()
}

/// `ip -netns {pod} -batch -`: address and routes of a pod.
pub fn pod_script(p: &Pod) -> Vec<String> {
    let eth = &p.ifname;
    vec![
        "link set lo up".to_owned(),
        format!("addr add {}/32 dev {eth}", p.ip),
        format!("link set {eth} up"),
        format!("route add {POD_GATEWAY} dev {eth} scope link"),
        format!("route add default via {POD_GATEWAY} dev {eth}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabSpec;

    fn plan(pods: usize, encap: Encap) -> Topology {
        LabSpec {
            prefix: "tlab".into(),
            nodes: 3,
            pods_per_node: pods,
            encap,
            services: None,
        }
        .plan()
        .unwrap()
    }

    fn has(lines: &[String], line: &str) -> bool {
        lines.iter().any(|l| l == line)
    }

    #[test]
    fn vxlan_node_routes() {
        let t = plan(100, Encap::Vxlan);
        let n1 = t.node("node1").unwrap();
        let s = node_script(&t, n1);
        assert!(has(&s, "route add default via 10.10.0.254 dev eth0"));
        assert!(has(&s, "addr add 10.10.0.1/24 dev eth0"));
        assert!(has(&s, "route add blackhole 10.244.0.0/26"));
        assert!(has(&s, "route add blackhole 10.244.0.64/26"));
        assert!(has(
            &s,
            "link add vxlan.calico mtu 1450 address 66:00:00:00:00:01 type vxlan id 4096 \
             dstport 4789 dev eth0 local 10.10.0.1 nolearning"
        ));
        assert!(has(&s, "addr add 10.244.0.0/32 dev vxlan.calico"));
        assert!(has(
            &s,
            "neigh add 10.244.4.0 lladdr 66:00:00:00:00:02 dev vxlan.calico nud permanent"
        ));
        assert!(has(
            &s,
            "route add 10.244.4.0/26 via 10.244.4.0 dev vxlan.calico onlink"
        ));
        assert!(has(
            &s,
            "route add 10.244.4.64/26 via 10.244.4.0 dev vxlan.calico onlink"
        ));
        assert!(has(
            &s,
            "route add 10.244.8.64/26 via 10.244.8.0 dev vxlan.calico onlink"
        ));
        let routes = remote_routes(&t, n1);
        assert_eq!(routes.len(), 4, "2 remote nodes x 2 blocks: {routes:?}");
        assert!(routes
            .iter()
            .all(|r| r.ends_with("dev vxlan.calico onlink")));
        let p = t.pod("n1p0").unwrap();
        assert!(has(
            &s,
            &format!(
                "link add {} mtu 1450 address ee:ee:ee:ee:ee:ee type veth peer name eth0 \
                 netns tlab-n1p0 mtu 1450",
                p.cali
            )
        ));
        assert!(has(
            &s,
            &format!("route add 10.244.0.1/32 dev {} scope link", p.cali)
        ));
        // Pods of other nodes are not created here.
        assert!(!s.iter().any(|l| l.contains("tlab-n2p0")));
        let fdb = fdb_script(&t, n1);
        assert_eq!(
            fdb,
            vec![
                "fdb add 66:00:00:00:00:02 dev vxlan.calico dst 10.10.0.2 self permanent",
                "fdb add 66:00:00:00:00:03 dev vxlan.calico dst 10.10.0.3 self permanent",
            ]
        );
    }

    #[test]
    fn none_node_routes() {
        let t = plan(1, Encap::None);
        let n2 = t.node("node2").unwrap();
        let s = node_script(&t, n2);
        assert!(!s.iter().any(|l| l.contains("vxlan")));
        assert!(!s.iter().any(|l| l.starts_with("neigh")));
        assert!(has(&s, "route add blackhole 10.244.4.0/26"));
        assert_eq!(
            remote_routes(&t, n2),
            vec![
                "route add 10.244.0.0/26 via 10.10.0.1 dev eth0",
                "route add 10.244.8.0/26 via 10.10.0.3 dev eth0",
            ]
        );
        assert!(fdb_script(&t, n2).is_empty());
        let p = t.pod("n2p0").unwrap();
        assert!(s
            .iter()
            .any(|l| l.starts_with(&format!("link add {} mtu 1500 ", p.cali))));
    }

    #[test]
    fn ipip_node_routes() {
        let t = plan(65, Encap::Ipip);
        let n2 = t.node("node2").unwrap();
        let s = node_script(&t, n2);
        assert!(has(&s, "addr add 10.244.4.0/32 dev tunl0"));
        assert!(has(&s, "link set tunl0 mtu 1480 up"));
        assert!(has(&s, "route add blackhole 10.244.4.0/26"));
        assert!(has(&s, "route add default via 10.10.0.254 dev eth0"));
        assert!(!s
            .iter()
            .any(|l| l.contains("vxlan") || l.starts_with("neigh")));
        // The tunnel address is set before the routes that leave through the tunnel.
        let addr = s.iter().position(|l| l.contains("dev tunl0")).unwrap();
        let route = s
            .iter()
            .position(|l| l.ends_with("dev tunl0 onlink"))
            .unwrap();
        assert!(addr < route);
        assert_eq!(
            remote_routes(&t, n2),
            vec![
                "route add 10.244.0.0/26 via 10.10.0.1 dev tunl0 onlink",
                "route add 10.244.0.64/26 via 10.10.0.1 dev tunl0 onlink",
                "route add 10.244.8.0/26 via 10.10.0.3 dev tunl0 onlink",
                "route add 10.244.8.64/26 via 10.10.0.3 dev tunl0 onlink",
            ]
        );
        assert!(fdb_script(&t, n2).is_empty());
        let p = t.pod("n2p0").unwrap();
        assert_eq!(p.mtu, 1480);
        assert!(s
            .iter()
            .any(|l| l.starts_with(&format!("link add {} mtu 1480 ", p.cali))));
    }

    #[test]
    fn local_teardown_undoes_the_node_script() {
        for encap in [Encap::Vxlan, Encap::Ipip, Encap::None] {
            let t = plan(1, encap);
            let n1 = t.node("node1").unwrap();
            let down = local_node_teardown(&t, n1);
            for r in remote_routes(&t, n1) {
                let del = r.replacen("route add", "route del", 1);
                assert!(has(&down, &del), "{encap}: {del} in {down:?}");
            }
            assert!(has(&down, "route del blackhole 10.244.0.0/26"));
            assert!(has(&down, "addr del 10.10.0.1/24 dev eth0"));
            assert_eq!(down.last().unwrap(), "link set eth0 down");
            assert_eq!(has(&down, "link del vxlan.calico"), encap == Encap::Vxlan);
            assert_eq!(has(&down, "addr flush dev tunl0"), encap == Encap::Ipip);
            let p = &t.pod("n1p0").unwrap().cali;
            assert!(
                !down.iter().any(|l| l.contains(p.as_str())),
                "pods go with their netns"
            );
        }
    }

    #[test]
    fn pod_and_underlay_scripts() {
        let t = plan(2, Encap::Vxlan);
        let p = t.pod("n3p1").unwrap();
        assert_eq!(
            pod_script(p),
            vec![
                "link set lo up",
                "addr add 10.244.8.2/32 dev eth0",
                "link set eth0 up",
                "route add 169.254.1.1 dev eth0 scope link",
                "route add default via 169.254.1.1 dev eth0",
            ]
        );
        let u = underlay_script(&t);
        assert!(has(&u, "link add br0 type bridge"));
        assert!(has(
            &u,
            "link add n2 mtu 1500 type veth peer name eth0 netns tlab-node2 mtu 1500"
        ));
        assert!(has(&u, "link set n3 master br0 up"));
    }

    #[test]
    fn sysctls() {
        let t = plan(3, Encap::Vxlan);
        assert!(node_sysctls()
            .iter()
            .any(|s| s.path == "net/ipv4/ip_forward" && s.value == "1"));
        assert!(leaf_sysctls()
            .iter()
            .all(|s| s.path.starts_with("net/ipv6/") && s.optional));
        let n1 = t.node("node1").unwrap();
        let c = cali_sysctls(&t, n1);
        assert_eq!(c.len(), 6);
        let cali = &t.pod("n1p2").unwrap().cali;
        assert!(c
            .iter()
            .any(|s| s.path == format!("net/ipv4/conf/{cali}/proxy_arp") && s.value == "1"));
    }
}
