//! What one node must agree with itself about: forwarding on, pod veths up and answering
//! ARP for the pods' gateway (proxy ARP), tunnel devices up with room for their overhead in
//! the underlay's MTU, every route through a VXLAN device backed by a neighbour entry and an
//! FDB entry, no firewall rule (outside Calico's own chains) dropping pod or tunnel traffic,
//! the deny rules of Calico's policy chains named (a warning: a policy may mean it), and
//! conntrack picking up connections it lost where Calico drops what conntrack calls invalid.

use std::net::Ipv4Addr;

use super::{finding, Finding, Severity};
use crate::state::firewall::{Chain, Rule};
use crate::state::{LinkState, NodeState, RouteType, TunnelKind};

/// VXLAN adds 50 bytes (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8), IPIP 20.
pub const VXLAN_OVERHEAD: u32 = 50;
pub const IPIP_OVERHEAD: u32 = 20;

/// The pod veths: veths named `cali*` (Calico's convention) or carrying a `/32` pod route.
pub fn pod_veths(n: &NodeState) -> Vec<&LinkState> {
    let routed: Vec<u32> = n.pod_routes().filter_map(|r| r.oif).collect();
    n.links
        .iter()
        .filter(|l| l.kind == "veth" && (l.name.starts_with("cali") || routed.contains(&l.ifindex)))
        .collect()
}

/// Whether the node looks like a Calico node (pods or a tunnel): the node checks assume it.
fn is_pod_node(n: &NodeState) -> bool {
    !pod_veths(n).is_empty() || n.vteps().next().is_some() || n.ipip_devs().next().is_some()
}

pub fn check(n: &NodeState, out: &mut Vec<Finding>) {
    if !is_pod_node(n) {
        return;
    }
    let name = n.node.as_str();
    if let Some(v) = n.sysctl("net.ipv4.ip_forward").filter(|v| *v != "1") {
        out.push(finding(
            Severity::Error,
            "ip-forward-off",
            &[name],
            "sysctl net.ipv4.ip_forward",
            v,
            "1",
            "the node does not forward: no pod traffic crosses it. calico-node turns forwarding \
             on at start; something on the host (a sysctl.d file, a tuning agent) turned it off: \
             `sysctl -w net.ipv4.ip_forward=1`, remove what disabled it, restart calico-node",
        ));
    }
    for l in pod_veths(n) {
        if !l.up || l.oper == "down" {
            out.push(finding(
                Severity::Error,
                "pod-veth-down",
                &[name],
                format!("link {}", l.name),
                format!(
                    "state {} ({})",
                    l.oper,
                    if l.up { "admin up" } else { "admin down" }
                ),
                "up",
                "the pod's host-side veth is down: nothing reaches the pod. Felix brings workload \
                 interfaces up when the CNI plugin creates them; `ip link set dev <veth> up`, and \
                 check calico-node's log for this workload endpoint",
            ));
        }
        let proxy = n.sysctl(&format!("net.ipv4.conf.{}.proxy_arp", l.name));
        if let Some(v) = proxy.filter(|v| *v != "1") {
            out.push(finding(
                Severity::Error,
                "proxy-arp-off",
                &[name],
                format!("sysctl net.ipv4.conf.{}.proxy_arp", l.name),
                v,
                "1",
                "the pod's gateway (169.254.1.1) is answered by proxy ARP on its host-side veth: \
                 with it off the pod cannot resolve its gateway and sends nothing. Felix sets it \
                 per workload interface; `sysctl -w net.ipv4.conf.<veth>.proxy_arp=1` and find \
                 what reset it",
            ));
        }
    }
    let uplink = n.uplink();
    for t in n.vteps().chain(n.ipip_devs()) {
        if !t.up {
            out.push(finding(
                Severity::Error,
                "tunnel-down",
                &[name],
                format!("link {}", t.name),
                "admin down",
                "up",
                "the tunnel device is down: traffic to other nodes' pods through it is dropped. \
                 Felix keeps it up; `ip link set dev <tunnel> up` and check calico-node's log",
            ));
        }
        let (overhead, what) = match n.tunnel_kind(t.ifindex) {
            Some(TunnelKind::Vxlan) => (VXLAN_OVERHEAD, "VXLAN"),
            _ => (IPIP_OVERHEAD, "IPIP"),
        };
        let under = t
            .vxlan
            .as_ref()
            .and_then(|v| v.link)
            .or(t.ipip.as_ref().and_then(|i| i.link))
            .and_then(|i| n.link(i))
            .or(uplink);
        if let Some(u) = under.filter(|u| u.mtu > 0 && t.mtu + overhead > u.mtu) {
            out.push(finding(
                Severity::Warning,
                "tunnel-mtu-overhead",
                &[name],
                format!("link {} mtu", t.name),
                format!("{} (+{overhead} {what} = {})", t.mtu, t.mtu + overhead),
                format!(
                    "<= {} ({} mtu {} - {overhead})",
                    u.mtu - overhead.min(u.mtu),
                    u.name,
                    u.mtu
                ),
                "encapsulated packets larger than the underlay's MTU are dropped or fragmented: \
                 set Calico's MTU (FelixConfiguration vxlanMTU / ipipMTU, or the installation's \
                 calicoNetwork.mtu) to the underlay MTU minus the overhead, then restart the pods",
            ));
        }
        // Pods' veths above the tunnel's MTU: their full-size packets cannot enter the tunnel.
        for l in pod_veths(n).into_iter().filter(|l| l.mtu > t.mtu) {
            out.push(finding(
                Severity::Warning,
                "pod-mtu-above-tunnel",
                &[name],
                format!("link {} mtu", l.name),
                l.mtu.to_string(),
                format!("<= {} ({} mtu)", t.mtu, t.name),
                "pods send packets the tunnel cannot carry (dropped with DF set, else fragmented): \
                 the pods' MTU comes from Calico's MTU setting when the pod is created; fix the \
                 setting and recreate the pods",
            ));
        }
    }
    // Native routing: the pods' packets go out on the uplink as they are.
    if n.vteps().next().is_none() && n.ipip_devs().next().is_none() {
        if let Some(u) = uplink.filter(|u| u.mtu > 0) {
            for l in pod_veths(n).into_iter().filter(|l| l.mtu > u.mtu) {
                out.push(finding(
                    Severity::Warning,
                    "pod-mtu-above-uplink",
                    &[name],
                    format!("link {} mtu", l.name),
                    l.mtu.to_string(),
                    format!("<= {} ({} mtu)", u.mtu, u.name),
                    "pods send packets larger than the node's uplink carries (dropped with DF \
                     set, else fragmented): set Calico's MTU (installation calicoNetwork.mtu) \
                     to the underlay's and recreate the pods, or raise the uplink's MTU",
                ));
            }
        }
    }
    check_vxlan_routes(n, out);
    check_firewall(n, out);
    check_policy_rules(n, out);
    check_conntrack(n, out);
}

/// Every route through a VXLAN device needs the gateway's MAC (neighbour) and that MAC's
/// underlay address (FDB): Felix programs all three together.
fn check_vxlan_routes(n: &NodeState, out: &mut Vec<Finding>) {
    let name = n.node.as_str();
    let mut seen: Vec<(u32, Ipv4Addr)> = Vec::new();
    for r in n.routes.iter().filter(|r| r.kind == RouteType::Unicast) {
        let (Some(oif), Some(gw)) = (r.oif, r.gateway) else {
            continue;
        };
        if n.tunnel_kind(oif) != Some(TunnelKind::Vxlan) || seen.contains(&(oif, gw)) {
            continue;
        }
        seen.push((oif, gw));
        let neigh = n
            .neighbour(oif, gw)
            .filter(|e| e.lladdr.is_some() && e.state != "failed" && e.state != "incomplete");
        let Some(mac) = neigh.and_then(|e| e.lladdr) else {
            out.push(finding(
                Severity::Error,
                "no-vtep-neighbour",
                &[name],
                format!("neighbour {gw} dev {}", r.dev),
                match n.neighbour(oif, gw) {
                    Some(e) => format!("state {} without a MAC", e.state),
                    None => "no entry".into(),
                },
                format!("a permanent entry with the remote VTEP's MAC (route {r})"),
                "VXLAN devices do not resolve remote VTEPs by ARP; Felix writes a permanent \
                 neighbour entry per remote VTEP from the node's VXLANTunnelMACAddr. It is \
                 missing: check that the remote Node resource has its VTEP MAC and address, \
                 and calico-node's log on this node",
            ));
            continue;
        };
        let fdb: Vec<_> = n.fdb_for(oif, mac).collect();
        if !fdb.iter().any(|f| f.dst.is_some()) {
            out.push(finding(
                Severity::Error,
                "no-vtep-fdb",
                &[name],
                format!("fdb {mac} dev {}", r.dev),
                "no entry with a destination",
                format!("an entry with the underlay address of the VTEP {gw}"),
                "the VXLAN device knows the remote VTEP's MAC but not where to send it: Felix \
                 writes one FDB entry per remote VTEP; check the remote Node resource's \
                 IPv4VXLANTunnelAddr/underlay address and calico-node's log on this node",
            ));
        }
    }
}

/// Discarding rules outside Calico's own chains that hit pod or tunnel traffic.
fn check_firewall(n: &NodeState, out: &mut Vec<Finding>) {
    let name = n.node.as_str();
    let vxlan_ports: Vec<u16> = n
        .vteps()
        .map(|l| l.vxlan.as_ref().and_then(|v| v.port).unwrap_or(4789))
        .collect();
    let has_ipip = n.ipip_devs().next().is_some();
    for (c, r) in n.firewall.discarding_rules() {
        if !c.sees_ipv4() || c.name.starts_with("cali") {
            continue;
        }
        let text = r.text.as_str();
        let pods = text.contains("\"cali")
            || text.contains(" cali+")
            || text.contains("-o cali")
            || text.contains("-i cali");
        let port_hit = vxlan_ports.iter().find(|p| {
            let p = p.to_string();
            text.contains(&format!("dport {p}")) || text.contains(&format!("--dport {p}"))
        });
        let ipip_hit = has_ipip
            && (text.contains("protocol 4 ")
                || text.ends_with("protocol 4")
                || text.contains("protocol ipip")
                || text.contains("-p 4 ")
                || text.contains("-p ipencap"));
        let (code, what) = if let Some(p) = port_hit {
            ("firewall-blocks-vxlan", format!("VXLAN's UDP port {p}"))
        } else if ipip_hit {
            ("firewall-blocks-ipip", "IPIP (IP protocol 4)".to_string())
        } else if pods {
            (
                "firewall-drops-pod-traffic",
                "traffic of the pod veths".to_string(),
            )
        } else {
            continue;
        };
        let counted = r
            .packets
            .map(|p| format!(", {p} packets so far"))
            .unwrap_or_default();
        out.push(finding(
            Severity::Error,
            code,
            &[name],
            rule_object(c, r),
            format!("`{text}`{counted}"),
            format!("no rule outside Calico's chains dropping {what}"),
            "a host firewall rule (not Calico's) drops the cluster's traffic: allow it before \
             the rule (for the tunnel: from the other nodes' addresses), or remove the rule; \
             Calico's own policy belongs in NetworkPolicy / GlobalNetworkPolicy",
        ));
    }
}

/// `table ip filter chain FORWARD rule handle 7 (hook forward)`.
fn rule_object(c: &Chain, r: &Rule) -> String {
    format!(
        "{} rule {}{}",
        c.path(),
        r.handle
            .map_or(format!("#{}", r.position), |h| format!("handle {h}")),
        c.hook
            .as_deref()
            .map(|h| format!(" (hook {h})"))
            .unwrap_or_default()
    )
}

/// Calico's policy and profile chains: `cali-pi-` / `cali-po-` (policies, ingress and
/// egress), `cali-pri-` / `cali-pro-` (profiles).
fn is_policy_chain(name: &str) -> bool {
    ["cali-pi-", "cali-po-", "cali-pri-", "cali-pro-"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The policy a Calico chain belongs to, from the comment Felix puts on its first rule
/// (`Policy default/default.deny-8080 ingress`, `NetworkPolicy default/deny ingress`,
/// `Profile kns.default ingress`). Legacy iptables and Felix's nftables mode show comments;
/// `nft` does not show those iptables-nft stores as an xtables match.
fn policy_named(c: &Chain) -> Option<String> {
    // A rule's first comment is kept apart; iptables-save's text has every `--comment`.
    let mut comments = c.rules.iter().flat_map(|r| {
        let quoted = r.text.split("--comment \"").skip(1);
        r.comment
            .as_deref()
            .into_iter()
            .chain(quoted.filter_map(|q| q.split('"').next()))
    });
    comments.find_map(|t| {
        let t = t
            .strip_suffix(" ingress")
            .or_else(|| t.strip_suffix(" egress"))?;
        let (kind, name) = t.split_once(' ')?;
        (kind == "Policy" || kind == "Profile" || kind.ends_with("Policy")).then(|| name.into())
    })
}

/// Deny rules of Calico's policy chains: a warning that names the policy (a policy may mean
/// to deny, but it is where traffic to or from pods is dropped by design).
fn check_policy_rules(n: &NodeState, out: &mut Vec<Finding>) {
    let name = n.node.as_str();
    for (c, r) in n.firewall.discarding_rules() {
        if !c.sees_ipv4() || !is_policy_chain(&c.name) {
            continue;
        }
        let policy = policy_named(c).map_or_else(
            || format!("the Calico policy or profile of chain {}", c.name),
            |p| format!("Calico policy {p} (chain {})", c.name),
        );
        let counted = r
            .packets
            .map(|p| format!(", {p} packets so far"))
            .unwrap_or_default();
        out.push(finding(
            Severity::Warning,
            "policy-drops-pod-traffic",
            &[name],
            rule_object(c, r),
            format!("`{}`{counted}: a deny rule of {policy}", r.text),
            "traffic the pods need allowed by the policies that select them",
            format!(
                "{policy} drops the traffic this rule matches: if that traffic must pass, change \
                 the policy (`calicoctl get networkpolicy,globalnetworkpolicy -o wide`; \
                 `iptables-save -t filter | grep {}` shows the rules with their comments)",
                c.name
            ),
        ));
    }
}

/// With `nf_conntrack_tcp_loose=0`, a TCP segment of a connection conntrack has no entry for
/// (conntrack flushed or full, a failover, a restarted node) is `INVALID`, and Calico drops
/// `INVALID` packets: such connections die instead of resuming.
fn check_conntrack(n: &NodeState, out: &mut Vec<Finding>) {
    if n.sysctl("net.netfilter.nf_conntrack_tcp_loose") != Some("0") {
        return;
    }
    let drops_invalid = n.firewall.discarding_rules().find(|(c, r)| {
        c.sees_ipv4()
            && (r.text.contains("ct state invalid") || r.text.contains("--ctstate INVALID"))
    });
    let Some((c, r)) = drops_invalid else {
        return;
    };
    out.push(finding(
        Severity::Warning,
        "conntrack-loose-off",
        &[n.node.as_str()],
        "sysctl net.netfilter.nf_conntrack_tcp_loose",
        format!(
            "0, and {} drops ctstate INVALID (`{}`)",
            rule_object(c, r),
            r.text
        ),
        "1 (conntrack picks up established connections it has no entry for)",
        "with 0, every TCP connection whose conntrack entry is lost (conntrack table full or \
         flushed, a failover, a restart) is INVALID on this node and Calico's rule drops it: \
         set `sysctl -w net.netfilter.nf_conntrack_tcp_loose=1` and remove what set it to 0 (a \
         hardening profile, a sysctl.d file)",
    ));
}
