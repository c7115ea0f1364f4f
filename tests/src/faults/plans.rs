//! The plans of the catalogue entries that take more than a few lines (the faults of issue 13):
//! each reads what it changes from the kernel and writes apply/undo steps with the engine's
//! [`Plan`] builder, like the plans written inline in the catalogue. Why a plan is shaped the
//! way it is (what the kernel does on the way) is written here, next to the code; what the
//! fault is and what it leads to stays in its catalogue entry.

use anyhow::{ensure, Context, Result};

use super::catalogue::POLICY_PORT;
use super::engine::{Ctx, Plan, Planned, Step};
use super::felix::{self, Policy, Workload};
use super::state::{
    conf_devices, link_mac, permanent_neighbours, pod, route_of, routes, show, vtep, word_after,
};
use crate::topology::Node;

/// The Kubernetes namespace of the lab's pods in the Calico-style chains.
pub const POD_NAMESPACE: &str = "default";
/// The Calico NetworkPolicy of `calico-policy-drop` (tier `default`): denies TCP to
/// [`POLICY_PORT`], allows the rest.
pub const CALICO_POLICY: &str = "deny-8080";

/// `vtep-mac-changed`: node2's VTEP gets another MAC (as when calico-node re-creates
/// vxlan.calico); every other node keeps the neighbour and FDB entries of the old one.
///
/// Changing a device's MAC flushes its neighbour table, permanent entries included, so node2
/// would also lose its own entries for the other VTEPs (and its replies): Felix on node2
/// re-programs them, and so does the plan, on break and again on heal.
pub fn vtep_mac_changed(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let (n2, t) = (c.n2, c.t);
    let dev = vtep(n2)?.ifname.clone();
    let old = link_mac(n2, &dev)?;
    let new = other_mac(&old)?;
    ensure!(
        !t.nodes
            .iter()
            .any(|n| n.vtep.as_ref().is_some_and(|v| v.mac == new)),
        "{new} is another node's VTEP MAC"
    );
    let neighbours = permanent_neighbours(n2, &dev)?;
    let set = |mac: &str| {
        let mut v = vec![format!("link set dev {dev} address {mac}")];
        v.extend(neighbours.iter().cloned());
        v
    };
    p.ip(&n2.netns, set(&new), set(&old));
    let others: Vec<&str> = t
        .nodes
        .iter()
        .filter(|n| n.name != n2.name)
        .map(|n| n.name.as_str())
        .collect();
    let description = format!(
        "{}'s {dev} MAC {old} -> {new} (its {} permanent neighbour entries re-programmed, as \
         Felix does); the other nodes ({}) keep their neighbour and FDB entries for {old}",
        n2.name,
        neighbours.len(),
        others.join(", ")
    );
    Ok(Planned {
        node: n2.name.clone(),
        description,
    })
}

/// `old` with its fourth byte inverted: still locally administered unicast, never the same.
fn other_mac(old: &str) -> Result<String> {
    let mut bytes: Vec<u8> = old
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("not a MAC: {old}"))?;
    ensure!(bytes.len() == 6, "not a MAC: {old}");
    bytes[3] ^= 0xff;
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// `stale-block-blackhole`: node1 blackholes node2's block instead of routing it (node1
/// still holds the block's IPAM affinity, so Felix installs the blackhole it installs for its
/// own blocks).
pub fn stale_block_blackhole(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let (n1, block) = (c.n1, &c.block2);
    let line = route_of(n1, block)?;
    p.ip(
        &n1.netns,
        [format!("route replace blackhole {block}")],
        [format!("route replace {line}")],
    );
    Ok(Planned {
        node: n1.name.clone(),
        description: format!(
            "on {}: route {line} replaced by blackhole {block} ({}'s block, a stale IPAM \
             affinity)",
            n1.name, c.n2.name
        ),
    })
}

/// `ip-forward-off`: node2 stops forwarding. Writing `net.ipv4.ip_forward` (which is
/// `conf/all/forwarding`) sets every device's `forwarding` (and `default`'s) too, so each
/// one's value is kept and restored after `ip_forward` on heal.
pub fn ip_forward_off(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let n2 = c.n2;
    for dev in conf_devices(&n2.netns)?.iter().filter(|d| *d != "all") {
        p.keep_sysctl(&n2.netns, &format!("net/ipv4/conf/{dev}/forwarding"))?;
    }
    p.sysctl(&n2.netns, "net/ipv4/ip_forward", "0")?;
    Ok(Planned {
        node: n2.name.clone(),
        description: format!(
            "on {}: net.ipv4.ip_forward=0 (every device's forwarding off)",
            n2.name
        ),
    })
}

/// `proxy-arp-off`: the probe pod's veth stops answering the pod's ARP for its gateway.
/// The pod's cached entry for the gateway is flushed (on break and on heal), so the next
/// packet needs a fresh answer.
pub fn proxy_arp_off(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let (n1, p1) = (c.n1, pod(c.t, "n1p0")?);
    p.sysctl(
        &n1.netns,
        &format!("net/ipv4/conf/{}/proxy_arp", p1.cali),
        "0",
    )?;
    let flush = format!("neigh flush dev {}", p1.ifname);
    p.ip(&p1.netns, [flush.clone()], [flush]);
    Ok(Planned {
        node: n1.name.clone(),
        description: format!(
            "on {}: proxy_arp=0 on {} ({}'s veth): nobody answers {}'s ARP for its gateway \
             169.254.1.1",
            n1.name, p1.cali, p1.name, p1.name
        ),
    })
}

/// `pod-veth-down`: the destination pod's host-side veth is set down. An interface going
/// down takes its routes with it, so the pod's `/32` route goes too (what Felix does for a
/// workload interface that is not up); heal puts both back.
pub fn pod_veth_down(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let (n2, p2) = (c.n2, pod(c.t, "n2p0")?);
    let route = route_of(n2, &p2.ip.to_string())?;
    p.ip(
        &n2.netns,
        [format!("link set dev {} down", p2.cali)],
        [
            format!("link set dev {} up", p2.cali),
            format!("route replace {route}"),
        ],
    );
    Ok(Planned {
        node: n2.name.clone(),
        description: format!(
            "on {}: {} ({}'s veth) down, its route {route} gone with it",
            n2.name, p2.cali, p2.name
        ),
    })
}

/// `forward-drop-cali`: a host firewall rule (iptables, nf_tables backend) drops whatever
/// node2 forwards to its pods.
pub fn forward_drop_cali(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let n2 = c.n2;
    let rule = "FORWARD -o cali+ -j DROP";
    p.iptables(
        &n2.netns,
        "filter",
        format!("*filter\n-A {rule}\nCOMMIT\n"),
        format!("*filter\n-D {rule}\nCOMMIT\n"),
    )?;
    Ok(Planned {
        node: n2.name.clone(),
        description: format!("iptables-nft on {}: `-A {rule}`", n2.name),
    })
}

/// Felix's chains on node2 for its pods (see [`felix`]), with `policy` on the probe's
/// destination pod; returns the chains' description.
fn felix_chains(c: &Ctx<'_>, p: &mut Plan, policy: Option<&Policy>) -> Result<String> {
    let n2 = c.n2;
    let target = pod(c.t, "n2p0")?;
    let pods = c.t.pods_on(&n2.name);
    let workloads: Vec<Workload<'_>> = pods
        .iter()
        .map(|p| Workload {
            iface: &p.cali,
            namespace: POD_NAMESPACE,
        })
        .collect();
    let chains = felix::chains(
        &workloads,
        &target.cali,
        policy,
        c.vxlan.then_some(c.t.vxlan_port),
    );
    p.iptables(&n2.netns, "filter", chains.apply, chains.undo)?;
    Ok(match (&chains.policy_chain, policy) {
        (Some(chain), Some(pol)) => format!(
            "Calico's filter chains on {} (iptables-nft, {} workloads): policy {} selects {} \
             in {chain} (denies tcp port {}), jumped to from {}",
            n2.name,
            workloads.len(),
            pol.id(),
            target.name,
            pol.deny_tcp_port,
            chains.target_chain
        ),
        _ => format!(
            "Calico's filter chains on {} (iptables-nft, {} workloads; {} drops ctstate \
             INVALID)",
            n2.name,
            workloads.len(),
            chains.target_chain
        ),
    })
}

/// `calico-policy-drop`: a Calico NetworkPolicy denies the probe's port to its destination
/// pod, in chains shaped as Felix writes them.
pub fn calico_policy_drop(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let policy = Policy {
        namespace: POD_NAMESPACE.into(),
        tier: "default".into(),
        name: CALICO_POLICY.into(),
        deny_tcp_port: POLICY_PORT,
    };
    let description = felix_chains(c, p, Some(&policy))?;
    Ok(Planned {
        node: c.n2.name.clone(),
        description,
    })
}

/// `conntrack-invalid`: node2's conntrack no longer picks up TCP connections it has no entry
/// for (`nf_conntrack_tcp_loose=0`), and Calico's chains drop what conntrack calls `INVALID`:
/// a mid-connection segment whose entry is gone (conntrack flushed or full, a failover, a
/// restarted node) is dropped instead of resuming the connection.
pub fn conntrack_invalid(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let n2 = c.n2;
    let chains = felix_chains(c, p, None)?;
    p.sysctl(&n2.netns, "net/netfilter/nf_conntrack_tcp_loose", "0")?;
    Ok(Planned {
        node: n2.name.clone(),
        description: format!("{chains}; net.netfilter.nf_conntrack_tcp_loose=0"),
    })
}

/// A node's VXLAN device as the kernel has it: enough to re-create it exactly (same index,
/// name, MAC, MTU, parameters) with everything that goes with it (addresses, permanent
/// neighbours, routes through it, FDB entries).
struct VxlanDevice {
    ifindex: String,
    name: String,
    mtu: String,
    mac: String,
    vni: String,
    port: String,
    underlay: String,
    local: String,
    learning: bool,
    addrs: Vec<String>,
    neighbours: Vec<String>,
    routes: Vec<String>,
    fdb: Vec<String>,
}

impl VxlanDevice {
    fn read(node: &Node, dev: &str) -> Result<VxlanDevice> {
        let link = show("ip", &node.netns, &["-d", "-o", "link", "show", "dev", dev])?;
        let get = |k: &str| word_after(&link, k).with_context(|| format!("no {k} in: {link}"));
        let ifindex = link
            .split(':')
            .next()
            .map(str::trim)
            .filter(|i| i.parse::<u32>().is_ok())
            .with_context(|| format!("no index in: {link}"))?;
        let addrs = show("ip", &node.netns, &["-o", "-4", "addr", "show", "dev", dev])?
            .lines()
            .filter_map(|l| word_after(l, "inet"))
            .map(|a| format!("addr add {a} dev {dev}"))
            .collect();
        let through = format!(" dev {dev} ");
        let routes = routes(node)?
            .into_iter()
            .filter(|r| format!("{r} ").contains(&through))
            .map(|r| format!("route replace {r}"))
            .collect();
        let fdb = show("bridge", &node.netns, &["fdb", "show", "dev", dev])?
            .lines()
            .filter(|l| l.contains(" dst "))
            .filter_map(|l| {
                let (mac, rest) = l.trim().split_once(' ')?;
                Some(format!("fdb replace {mac} dev {dev} {}", rest.trim()))
            })
            .collect();
        Ok(VxlanDevice {
            ifindex: ifindex.to_owned(),
            name: dev.to_owned(),
            mtu: get("mtu")?,
            mac: get("link/ether")?,
            vni: get("id")?,
            port: get("dstport")?,
            underlay: get("dev")?,
            local: get("local")?,
            learning: !link.split_whitespace().any(|w| w == "nolearning"),
            addrs,
            neighbours: permanent_neighbours(node, dev)?,
            routes,
            fdb,
        })
    }

    /// `ip -batch` lines that replace the device with one of VNI `vni` and UDP port `port`
    /// (neither can be changed on a live device), with its addresses, neighbours and routes.
    fn recreate(&self, vni: &str, port: &str) -> Vec<String> {
        let dev = &self.name;
        let mut v = vec![
            format!("link del {dev}"),
            format!(
                "link add {dev} index {} mtu {} address {} type vxlan id {vni} dstport {port} \
                 dev {} local {}{}",
                self.ifindex,
                self.mtu,
                self.mac,
                self.underlay,
                self.local,
                if self.learning { "" } else { " nolearning" }
            ),
        ];
        v.extend(self.addrs.iter().cloned());
        v.push(format!("link set {dev} up"));
        v.extend(self.neighbours.iter().cloned());
        v.extend(self.routes.iter().cloned());
        v
    }
}

/// Re-creates `node`'s VXLAN device with `vni` / `port` (the device's own where `None`): the
/// FDB entries (a `bridge` batch) are written again after every re-creation, on break and on
/// heal, so their change is pushed around the device's (an undo runs in reverse order).
fn recreate_vtep(p: &mut Plan, node: &Node, vni: Option<u32>, port: Option<u16>) -> Result<String> {
    let dev = vtep(node)?.ifname.clone();
    let d = VxlanDevice::read(node, &dev)?;
    let (new_vni, new_port) = (
        vni.map_or(d.vni.clone(), |v| v.to_string()),
        port.map_or(d.port.clone(), |p| p.to_string()),
    );
    let batch = |tool: &str, lines: Vec<String>| Step::Batch {
        tool: tool.into(),
        netns: node.netns.clone(),
        lines,
    };
    // Harmless on the device it finds (the entries are there); needed after a re-creation.
    let fdb = || batch("bridge", d.fdb.clone());
    p.push(fdb(), fdb());
    p.push(
        batch("ip", d.recreate(&new_vni, &new_port)),
        batch("ip", d.recreate(&d.vni, &d.port)),
    );
    p.push(fdb(), fdb());
    Ok(format!(
        "{}'s {dev} re-created with VNI {new_vni} (was {}) and UDP port {new_port} (was {}), \
         its address, {} neighbour, {} route and {} FDB entries put back",
        node.name,
        d.vni,
        d.port,
        d.neighbours.len(),
        d.routes.len(),
        d.fdb.len()
    ))
}

/// `vni-mismatch`: node2's VXLAN device uses another VNI than the others (a per-node
/// FelixConfiguration with its own `vxlanVNI`).
pub fn vni_mismatch(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let description = recreate_vtep(p, c.n2, Some(c.t.vni + 1), None)?;
    Ok(Planned {
        node: c.n2.name.clone(),
        description,
    })
}

/// The UDP port `vxlan-port-mismatch` gives node1's VXLAN device (the kernel's own default,
/// also Flannel's).
pub const OTHER_VXLAN_PORT: u16 = 8472;

/// `vxlan-port-mismatch`: node1's VXLAN device uses another UDP port than the others (a
/// per-node FelixConfiguration with its own `vxlanPort`): node1 sends to that port on node2,
/// where nothing listens.
pub fn vxlan_port_mismatch(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    ensure!(
        c.t.vxlan_port != OTHER_VXLAN_PORT,
        "the lab already uses {OTHER_VXLAN_PORT}"
    );
    let description = recreate_vtep(p, c.n1, None, Some(OTHER_VXLAN_PORT))?;
    Ok(Planned {
        node: c.n1.name.clone(),
        description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_mac_differs_in_one_byte() {
        assert_eq!(other_mac("66:00:00:00:00:02").unwrap(), "66:00:00:ff:00:02");
        assert_eq!(other_mac("66:00:00:ff:00:02").unwrap(), "66:00:00:00:00:02");
        assert!(other_mac("66:00:00").is_err());
        assert!(other_mac("zz:00:00:00:00:00").is_err());
    }
}
