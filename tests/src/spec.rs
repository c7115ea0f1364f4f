//! `LabSpec` (what the user asks for) and the pure, deterministic plan (`LabSpec::plan`).
//!
//! Design note: every name and address of a lab is a function of the spec alone, so the plan
//! is computed without touching the system, unit-tested without root, and the same spec
//! always yields the same lab (the tracer's tests can hard-code `10.244.0.1` = n1p0).
//!
//! Address plan (mirrors Calico IPAM with /26 blocks):
//! - nodes: 10.10.0.{i}/24 on `eth0`, gateway 10.10.0.254 (owned by nobody, on purpose);
//! - node i owns the /22 region 10.244.(4*(i-1)).0/22 and uses its first
//!   `ceil((pods + 1) / 64)` /26 blocks (at most 16, so at most 1023 pods per node);
//! - address 0 of the region is the tunnel address (the VTEP's in `vxlan` mode, `tunl0`'s in
//!   `ipip` mode, as Calico puts the first address of the node's block on its tunnel device;
//!   kept unused in `none` mode), pod j gets j + 1;
//! - at most 64 nodes (64 regions of /22 fill the /16).
//!
//! Interface names are fixed and short (`eth0`, `br0`, `n{i}`, `vxlan.calico`, `tunl0`, `cali` + 11 hex
//! digits of the FNV-1a 64 hash of the pod netns name), so the prefix only shows up in
//! netns names and never hits the 15-character IFNAMSIZ limit.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::services::{self, ServicesSpec};
use crate::topology::{IpipTunnel, Node, Pod, Topology, Underlay, Vtep};

/// Cluster pod CIDR.
pub const POD_CIDR: Cidr = Cidr {
    addr: Ipv4Addr::new(10, 244, 0, 0),
    len: 16,
};
/// Node subnet on the underlay bridge.
pub const UNDERLAY_SUBNET: Cidr = Cidr {
    addr: Ipv4Addr::new(10, 10, 0, 0),
    len: 24,
};
/// Default gateway of every node: nobody answers ARP for it.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 254);
/// Calico's VXLAN VNI.
pub const VNI: u32 = 4096;
/// IANA VXLAN port, as used by Calico.
pub const VXLAN_PORT: u16 = 4789;
/// Name of the VXLAN device on every node.
pub const VXLAN_IFNAME: &str = "vxlan.calico";
/// Bridge in the underlay netns.
pub const BRIDGE: &str = "br0";
/// Node uplink and pod interface name.
pub const ETH0: &str = "eth0";
/// Uplink MTU.
pub const UPLINK_MTU: u32 = 1500;
/// VXLAN over IPv4 overhead (outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Name of the IPIP device on every node: the per-namespace fallback tunnel that loading the
/// `ipip` module creates (Calico uses it rather than creating its own).
pub const IPIP_IFNAME: &str = "tunl0";
/// IP-in-IP overhead (the outer IPv4 header).
pub const IPIP_OVERHEAD: u32 = 20;
/// MAC of every `cali*` device (Calico's).
pub const CALI_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The pods' (link-local) default gateway, answered by proxy ARP on the node's cali device.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// IPAM block prefix length.
pub const BLOCK_LEN: u8 = 26;
/// Addresses per block.
pub const BLOCK_SIZE: usize = 64;
/// Blocks in a node's /22 region.
pub const MAX_BLOCKS_PER_NODE: usize = 16;
/// Largest pod count per node (one address of the region is the VTEP's).
pub const MAX_PODS_PER_NODE: usize = MAX_BLOCKS_PER_NODE * BLOCK_SIZE - 1;
/// Largest node count (64 /22 regions in the /16).
pub const MAX_NODES: usize = 64;
/// Longest accepted prefix.
pub const MAX_PREFIX_LEN: usize = 64;

/// How pod traffic crosses nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// `vxlan.calico` tunnels (Calico VXLAN mode).
    #[default]
    Vxlan,
    /// Native routing: routes to remote blocks via the remote node IP (what BGP would program).
    None,
    /// `tunl0` IP-in-IP tunnels (Calico `ipipMode: Always`): remote blocks routed
    /// `via <remote node ip> dev tunl0 onlink`. Needs the kernel's `ipip` module.
    Ipip,
}

impl Encap {
    /// MTU of the pods' veths: the uplink's minus the tunnel overhead.
    pub fn pod_mtu(self) -> u32 {
        match self {
            Encap::Vxlan => UPLINK_MTU - VXLAN_OVERHEAD,
            Encap::Ipip => UPLINK_MTU - IPIP_OVERHEAD,
            Encap::None => UPLINK_MTU,
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encap::Vxlan => "vxlan",
            Encap::None => "none",
            Encap::Ipip => "ipip",
        })
    }
}

impl FromStr for Encap {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "vxlan" => Ok(Encap::Vxlan),
            "none" => Ok(Encap::None),
            "ipip" => Ok(Encap::Ipip),
            other => bail!("unknown encapsulation `{other}` (expected `vxlan`, `ipip` or `none`)"),
        }
    }
}

/// What lab to build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabSpec {
    /// Name prefix of every netns (`[A-Za-z0-9_.-]`, not starting with `-` or `.`).
    pub prefix: String,
    /// Number of nodes, 2..=64.
    pub nodes: usize,
    /// Pods per node, 0..=1023.
    pub pods_per_node: usize,
    /// Cross-node transport.
    pub encap: Encap,
    /// Kubernetes Services, kube-proxy's and Calico's NAT, and a machine outside the cluster
    /// (see [`crate::services`]); `None`: a plain lab.
    pub services: Option<ServicesSpec>,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            prefix: "tlab".to_owned(),
            nodes: 2,
            pods_per_node: 1,
            encap: Encap::Vxlan,
            services: None,
        }
    }
}

impl LabSpec {
    /// The default spec (2 nodes x 1 pod, VXLAN) with another prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Check the spec's limits.
    pub fn validate(&self) -> Result<()> {
        validate_prefix(&self.prefix)?;
        ensure!(
            (2..=MAX_NODES).contains(&self.nodes),
            "nodes must be between 2 and {MAX_NODES}, got {}",
            self.nodes
        );
        ensure!(
            self.pods_per_node <= MAX_PODS_PER_NODE,
            "pods_per_node must be at most {MAX_PODS_PER_NODE} ({MAX_BLOCKS_PER_NODE} /26 blocks \
             of a node's /22, minus the VTEP address), got {}",
            self.pods_per_node
        );
        if self.services.is_some() {
            let max = MAX_PODS_PER_NODE - services::MAX_EXTRA_PODS;
            ensure!(
                self.pods_per_node <= max,
                "with Services, pods_per_node must be at most {max} (node2 also runs a web pod \
                 and the DNS pod), got {}",
                self.pods_per_node
            );
        }
        Ok(())
    }

    /// The pods node `i` (1-based) runs: the regular ones, then (with Services) its service
    /// pods, with their roles.
    fn pods_of_node(&self, i: usize) -> Vec<Option<&'static str>> {
        let extra = match self.services {
            Some(_) => services::extra_pods(i),
            None => &[],
        };
        std::iter::repeat_n(None, self.pods_per_node)
            .chain(extra.iter().map(|&r| Some(r)))
            .collect()
    }

    /// The full, deterministic topology of this spec.
    pub fn plan(&self) -> Result<Topology> {
        self.validate()?;
        let extra = match self.services {
            Some(_) => services::MAX_EXTRA_PODS,
            None => 0,
        };
        let n_blocks = blocks_needed(self.pods_per_node + extra)?;
        let vxlan = self.encap == Encap::Vxlan;
        let pod_mtu = self.encap.pod_mtu();
        let mut nodes = Vec::with_capacity(self.nodes);
        let mut pods = Vec::with_capacity(self.nodes * self.pods_per_node);
        // (node, role, pod, address) of the service pods.
        let mut roles = Vec::new();
        for i in 1..=self.nodes {
            let region = node_region(i)?;
            let blocks = (0..n_blocks)
                .map(|k| Cidr::new(addr_at(region, k * BLOCK_SIZE), BLOCK_LEN))
                .collect::<Result<Vec<_>>>()?;
            let name = format!("node{i}");
            let vtep = vxlan.then(|| Vtep {
                ifname: VXLAN_IFNAME.to_owned(),
                ip: region.addr,
                mac: vtep_mac(i),
                mtu: UPLINK_MTU - VXLAN_OVERHEAD,
            });
            let ipip = (self.encap == Encap::Ipip).then(|| IpipTunnel {
                ifname: IPIP_IFNAME.to_owned(),
                ip: region.addr,
                mtu: UPLINK_MTU - IPIP_OVERHEAD,
            });
            let mut calis = HashSet::with_capacity(self.pods_per_node);
            for (j, role) in self.pods_of_node(i).into_iter().enumerate() {
                let pod_name = format!("n{i}p{j}");
                let netns = format!("{}-{pod_name}", self.prefix);
                let cali = cali_name(&netns);
                ensure!(
                    calis.insert(cali.clone()),
                    "cali name collision on {name} ({cali}); pick another prefix"
                );
                if let Some(role) = role {
                    roles.push((i, role, pod_name.clone(), addr_at(region, j + 1)));
                }
                pods.push(Pod {
                    name: pod_name,
                    ip: addr_at(region, j + 1),
                    netns,
                    node: name.clone(),
                    cali,
                    ifname: ETH0.to_owned(),
                    mtu: pod_mtu,
                });
            }
            nodes.push(Node {
                netns: format!("{}-{name}", self.prefix),
                name,
                uplink: ETH0.to_owned(),
                underlay_port: format!("n{i}"),
                ip: node_ip(i)?,
                mtu: UPLINK_MTU,
                vtep,
                ipip,
                blocks,
            });
        }
        let services = match &self.services {
            None => None,
            Some(spec) => Some(services::plan(
                spec,
                &self.prefix,
                POD_CIDR,
                (UNDERLAY_SUBNET, UNDERLAY_GATEWAY),
                |node, role| {
                    roles
                        .iter()
                        .find(|r| r.0 == node && r.1 == role)
                        .map(|r| (r.2.clone(), r.3))
                },
            )?),
        };
        Ok(Topology {
            prefix: self.prefix.clone(),
            encap: self.encap,
            pod_cidr: POD_CIDR,
            vni: VNI,
            vxlan_port: VXLAN_PORT,
            underlay: Underlay {
                netns: underlay_netns(&self.prefix),
                bridge: BRIDGE.to_owned(),
                subnet: UNDERLAY_SUBNET,
                gateway: UNDERLAY_GATEWAY,
            },
            nodes,
            pods,
            local_node: None,
            services,
        })
    }
}

/// Reject prefixes that would make odd file names or collide with option syntax.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    ensure!(!prefix.is_empty(), "the lab prefix must not be empty");
    ensure!(
        prefix.len() <= MAX_PREFIX_LEN,
        "the lab prefix must be at most {MAX_PREFIX_LEN} characters"
    );
    ensure!(
        prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
        "the lab prefix `{prefix}` may only contain ASCII letters, digits, `-`, `_` and `.`"
    );
    ensure!(
        !prefix.starts_with(['-', '.']),
        "the lab prefix `{prefix}` must not start with `-` or `.`"
    );
    Ok(())
}

/// Name of the underlay netns.
pub fn underlay_netns(prefix: &str) -> String {
    format!("{prefix}-underlay")
}

/// Whether `name` is a netns that a lab with `prefix` creates: `{prefix}-underlay`,
/// `{prefix}-outside` (with Services), `{prefix}-node<N>` or `{prefix}-n<N>p<M>`. Stricter
/// than `{prefix}-*` so that removing lab `a` never touches lab `a-b`.
pub fn is_lab_netns(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if rest == "underlay" || rest == "outside" {
        return true;
    }
    if let Some(n) = rest.strip_prefix("node") {
        return digits(n);
    }
    if let Some((n, p)) = rest.strip_prefix('n').and_then(|r| r.split_once('p')) {
        return digits(n) && digits(p);
    }
    false
}

/// Number of /26 blocks a node needs for `pods` pods plus its VTEP address.
pub fn blocks_needed(pods: usize) -> Result<usize> {
    let n = (pods + 1).div_ceil(BLOCK_SIZE);
    ensure!(
        n <= MAX_BLOCKS_PER_NODE,
        "{pods} pods need {n} /26 blocks, more than the {MAX_BLOCKS_PER_NODE} of a node's /22"
    );
    Ok(n)
}

/// The /22 pod region of node `i` (1-based).
pub fn node_region(i: usize) -> Result<Cidr> {
    ensure!((1..=MAX_NODES).contains(&i), "node index {i} out of range");
    let third = u8::try_from(4 * (i - 1))?;
    Cidr::new(Ipv4Addr::new(10, 244, third, 0), 22)
}

/// Underlay address of node `i` (1-based).
pub fn node_ip(i: usize) -> Result<Ipv4Addr> {
    ensure!((1..=MAX_NODES).contains(&i), "node index {i} out of range");
    Ok(Ipv4Addr::new(10, 10, 0, u8::try_from(i)?))
}

/// Deterministic locally administered unicast MAC of node `i`'s VTEP.
pub fn vtep_mac(i: usize) -> String {
    format!("66:00:00:00:{:02x}:{:02x}", (i >> 8) & 0xff, i & 0xff)
}

/// `cali` + the first 11 hex digits of the FNV-1a 64 hash of the pod's netns name.
pub fn cali_name(pod_netns: &str) -> String {
    let hex = format!("{:016x}", fnv1a64(pod_netns.as_bytes()));
    format!("cali{}", &hex[..11])
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn addr_at(region: Cidr, offset: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(region.addr) + offset as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(nodes: usize, pods: usize, encap: Encap) -> LabSpec {
        LabSpec {
            prefix: "tlab".into(),
            nodes,
            pods_per_node: pods,
            encap,
            services: None,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn default_plan_addresses() {
        let t = LabSpec::default().plan().unwrap();
        assert_eq!(t.prefix, "tlab");
        assert_eq!(t.encap, Encap::Vxlan);
        assert_eq!(t.underlay.netns, "tlab-underlay");
        assert_eq!(t.underlay.gateway, ip("10.10.0.254"));
        assert_eq!(t.nodes.len(), 2);
        let n1 = t.node("node1").unwrap();
        let n2 = t.node("node2").unwrap();
        assert_eq!(n1.netns, "tlab-node1");
        assert_eq!(n1.ip, ip("10.10.0.1"));
        assert_eq!(n2.ip, ip("10.10.0.2"));
        assert_eq!(n1.underlay_port, "n1");
        assert_eq!(n1.mtu, 1500);
        let v1 = n1.vtep.as_ref().unwrap();
        assert_eq!(v1.ip, ip("10.244.0.0"));
        assert_eq!(v1.mtu, 1450);
        assert_eq!(v1.mac, "66:00:00:00:00:01");
        assert_eq!(n2.vtep.as_ref().unwrap().ip, ip("10.244.4.0"));
        assert_eq!(n1.blocks, vec!["10.244.0.0/26".parse().unwrap()]);
        assert_eq!(n2.blocks, vec!["10.244.4.0/26".parse().unwrap()]);
        let p = t.pod("n1p0").unwrap();
        assert_eq!(p.netns, "tlab-n1p0");
        assert_eq!(p.ip, ip("10.244.0.1"));
        assert_eq!(p.node, "node1");
        assert_eq!(p.ifname, "eth0");
        assert_eq!(p.mtu, 1450);
        assert_eq!(t.pod("n2p0").unwrap().ip, ip("10.244.4.1"));
        assert_eq!(t.pods_on("node2").len(), 1);
        assert_eq!(t.pod_by_ip(ip("10.244.4.1")).unwrap().name, "n2p0");
        assert_eq!(t.netns_names().len(), 5);
    }

    #[test]
    fn none_mode_keeps_numbering_without_vtep() {
        let v = spec(3, 5, Encap::Vxlan).plan().unwrap();
        let n = spec(3, 5, Encap::None).plan().unwrap();
        for (a, b) in v.pods.iter().zip(&n.pods) {
            assert_eq!(a.ip, b.ip);
            assert_eq!(a.cali, b.cali);
            assert_eq!(b.mtu, 1500);
        }
        assert!(n.nodes.iter().all(|node| node.vtep.is_none()));
        assert_eq!(
            n.node("node3").unwrap().blocks[0].to_string(),
            "10.244.8.0/26"
        );
    }

    #[test]
    fn ipip_plan() {
        let t = spec(3, 2, Encap::Ipip).plan().unwrap();
        for (i, n) in t.nodes.iter().enumerate() {
            assert!(n.vtep.is_none());
            let tun = n.ipip.as_ref().unwrap();
            assert_eq!(tun.ifname, "tunl0");
            assert_eq!(tun.mtu, 1480);
            assert_eq!(
                tun.ip, n.blocks[0].addr,
                "first address of the node's block"
            );
            assert_eq!(tun.ip, ip(&format!("10.244.{}.0", 4 * i)));
        }
        assert!(t.pods.iter().all(|p| p.mtu == 1480));
        let v = spec(3, 2, Encap::Vxlan).plan().unwrap();
        for (a, b) in v.pods.iter().zip(&t.pods) {
            assert_eq!(
                (a.ip, &a.cali),
                (b.ip, &b.cali),
                "same numbering in every mode"
            );
        }
        assert!(v.nodes.iter().all(|n| n.ipip.is_none()));
        let j: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(j["encap"], "ipip");
        assert_eq!(j["nodes"][1]["ipip"]["ip"], "10.244.4.0");
        assert_eq!(j["nodes"][1]["ipip"]["mtu"], 1480);
        assert!(
            j.get("local_node").is_none(),
            "absent unless one node is local"
        );
    }

    #[test]
    fn block_math() {
        for (pods, blocks) in [
            (0, 1),
            (1, 1),
            (63, 1),
            (64, 2),
            (127, 2),
            (128, 3),
            (500, 8),
        ] {
            assert_eq!(blocks_needed(pods).unwrap(), blocks, "{pods} pods");
        }
        assert_eq!(blocks_needed(1023).unwrap(), 16);
        assert!(blocks_needed(1024).is_err());

        let t = spec(2, 63, Encap::Vxlan).plan().unwrap();
        assert_eq!(t.node("node1").unwrap().blocks.len(), 1);
        assert_eq!(t.pod("n1p62").unwrap().ip, ip("10.244.0.63"));

        let t = spec(2, 64, Encap::Vxlan).plan().unwrap();
        assert_eq!(
            t.node("node1").unwrap().blocks,
            vec![
                "10.244.0.0/26".parse().unwrap(),
                "10.244.0.64/26".parse().unwrap()
            ]
        );
        assert_eq!(t.pod("n1p63").unwrap().ip, ip("10.244.0.64"));

        let t = spec(2, 500, Encap::Vxlan).plan().unwrap();
        let n2 = t.node("node2").unwrap();
        assert_eq!(n2.blocks.len(), 8);
        assert_eq!(n2.blocks[7].to_string(), "10.244.5.192/26");
        assert_eq!(t.pod("n2p499").unwrap().ip, ip("10.244.5.244"));
        // Every pod address lies in one of its node's blocks, and none is the VTEP's.
        for p in &t.pods {
            let node = t.node_of(p).unwrap();
            assert!(node.blocks.iter().any(|b| b.contains(p.ip)), "{}", p.name);
            assert_ne!(Some(p.ip), node.vtep.as_ref().map(|v| v.ip));
        }
        let ips: HashSet<_> = t.pods.iter().map(|p| p.ip).collect();
        assert_eq!(ips.len(), 1000);
    }

    #[test]
    fn limits() {
        assert!(spec(1, 1, Encap::Vxlan).plan().is_err());
        assert!(spec(65, 1, Encap::Vxlan).plan().is_err());
        assert!(spec(64, 1, Encap::Vxlan).plan().is_ok());
        assert!(spec(2, 1024, Encap::Vxlan).plan().is_err());
        assert!(spec(2, 1023, Encap::Vxlan).plan().is_ok());
        let t = spec(64, 0, Encap::None).plan().unwrap();
        assert_eq!(t.nodes[63].blocks[0].to_string(), "10.244.252.0/26");
        assert_eq!(t.nodes[63].ip, ip("10.10.0.64"));
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(LabSpec::with_prefix(bad).plan().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cali_names() {
        let t = spec(2, 500, Encap::Vxlan).plan().unwrap();
        let mut seen = HashSet::new();
        for p in &t.pods {
            assert_eq!(p.cali.len(), 15, "{}", p.cali);
            assert!(p.cali.starts_with("cali"));
            assert!(p.cali[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(seen.insert(p.cali.clone()), "duplicate {}", p.cali);
            assert_eq!(p.cali, cali_name(&p.netns));
        }
        // FNV-1a 64 of "" is the offset basis.
        assert_eq!(cali_name(""), "calicbf29ce4842");
        // Deterministic across plans.
        assert_eq!(t, spec(2, 500, Encap::Vxlan).plan().unwrap());
    }

    #[test]
    fn vtep_macs_are_local_unicast() {
        for i in 1..=MAX_NODES {
            let mac = vtep_mac(i);
            let first = u8::from_str_radix(&mac[..2], 16).unwrap();
            assert_eq!(first & 0b11, 0b10, "{mac}");
            assert_eq!(mac.len(), 17);
        }
        assert_ne!(vtep_mac(1), vtep_mac(2));
    }

    #[test]
    fn lab_netns_matching() {
        assert!(is_lab_netns("tlab", "tlab-underlay"));
        assert!(is_lab_netns("tlab", "tlab-node12"));
        assert!(is_lab_netns("tlab", "tlab-n2p499"));
        assert!(is_lab_netns("tlab", "tlab-outside"));
        assert!(!is_lab_netns("tlab", "tlab-outside2"));
        assert!(!is_lab_netns("tlab", "tlab-x-node1"));
        assert!(!is_lab_netns("tlab", "tlab2-node1"));
        assert!(!is_lab_netns("tlab", "tlab-node"));
        assert!(!is_lab_netns("tlab", "tlab-n1p"));
        assert!(!is_lab_netns("tlab", "tlab-np1"));
        assert!(!is_lab_netns("tl-lab-t1", "tl-lab-t10-node1"));
        assert!(is_lab_netns("tl-lab-t1", "tl-lab-t1-node1"));
    }

    #[test]
    fn encap_serde_and_parse() {
        assert_eq!(serde_json::to_string(&Encap::Vxlan).unwrap(), "\"vxlan\"");
        assert_eq!(serde_json::to_string(&Encap::None).unwrap(), "\"none\"");
        assert_eq!("none".parse::<Encap>().unwrap(), Encap::None);
        assert_eq!(Encap::Vxlan.to_string(), "vxlan");
        assert_eq!("ipip".parse::<Encap>().unwrap(), Encap::Ipip);
        assert_eq!(serde_json::to_string(&Encap::Ipip).unwrap(), "\"ipip\"");
        assert!("gre".parse::<Encap>().is_err());
        let s: LabSpec = serde_json::from_str(r#"{"pods_per_node":3,"encap":"none"}"#).unwrap();
        assert_eq!(s.prefix, "tlab");
        assert_eq!(s.nodes, 2);
        assert_eq!(s.pods_per_node, 3);
        assert_eq!(s.encap, Encap::None);
    }

    #[test]
    fn topology_json_shape() {
        let t = LabSpec::default().plan().unwrap();
        let v: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(v["pod_cidr"], "10.244.0.0/16");
        assert_eq!(v["vni"], 4096);
        assert_eq!(v["vxlan_port"], 4789);
        assert_eq!(v["underlay"]["subnet"], "10.10.0.0/24");
        assert_eq!(v["underlay"]["gateway"], "10.10.0.254");
        assert_eq!(v["nodes"][0]["ip"], "10.10.0.1");
        assert_eq!(v["nodes"][0]["vtep"]["ifname"], "vxlan.calico");
        assert_eq!(v["nodes"][0]["blocks"][0], "10.244.0.0/26");
        assert_eq!(v["pods"][0]["ip"], "10.244.0.1");
        assert_eq!(v["encap"], "vxlan");
        let none = spec(2, 1, Encap::None).plan().unwrap();
        let v: serde_json::Value = serde_json::to_value(&none).unwrap();
        assert!(v["nodes"][0]["vtep"].is_null());
        assert_eq!(Topology::from_json(&t.to_json()).unwrap(), t);
    }
}
