//! The planned (and, once built, running) shape of a lab: what `lab status --json` prints.
//!
//! Design note: `Topology` is plain data produced by [`crate::LabSpec::plan`]; the builder
//! reads everything it needs from it (names, addresses, MTUs, blocks), the state file under
//! `/run/tracer-lab/` is its JSON form, and tests deserialize it back. Field order follows the
//! documented JSON layout. Lookups are linear scans: even a 64 x 1023 lab is small.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
use crate::services::Services;
use crate::spec::Encap;

/// A whole lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Name prefix of every network namespace of the lab.
    pub prefix: String,
    /// How pod traffic crosses nodes.
    pub encap: Encap,
    /// The cluster pod CIDR (10.244.0.0/16).
    pub pod_cidr: Cidr,
    /// VXLAN network identifier of `vxlan.calico` (Calico's 4096).
    pub vni: u32,
    /// VXLAN UDP destination port (4789).
    pub vxlan_port: u16,
    /// The L2 segment joining the nodes.
    pub underlay: Underlay,
    /// Nodes, in order node1, node2, ...
    pub nodes: Vec<Node>,
    /// Pods, grouped by node, in order n1p0, n1p1, ..., n2p0, ...
    pub pods: Vec<Pod>,
    /// In a VM lab, the one node that this machine is (its root namespace, attached under the
    /// node's netns name); only that node and its pods exist here. Absent when every node is a
    /// namespace of this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_node: Option<String>,
    /// Kubernetes Services, their NAT, and the machine outside the cluster (`lab up
    /// --services`); absent in a plain lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Services>,
}

/// The underlay: a netns holding a Linux bridge that every node uplink is plugged into.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    /// Network namespace (`{prefix}-underlay`).
    pub netns: String,
    /// Bridge device in that netns (`br0`).
    pub bridge: String,
    /// Node subnet (10.10.0.0/24).
    pub subnet: Cidr,
    /// Default gateway of the nodes; deliberately owned by nobody.
    pub gateway: Ipv4Addr,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// `node{i}`, 1-based.
    pub name: String,
    /// `{prefix}-node{i}`.
    pub netns: String,
    /// Uplink device in the node netns (`eth0`).
    pub uplink: String,
    /// Name of the uplink's veth peer in the underlay netns (`n{i}`, a port of the bridge).
    pub underlay_port: String,
    /// Node address on the uplink (10.10.0.{i}/24).
    pub ip: Ipv4Addr,
    /// Uplink MTU.
    pub mtu: u32,
    /// The VXLAN tunnel endpoint (`None` unless `vxlan` mode).
    pub vtep: Option<Vtep>,
    /// The IPIP tunnel device (`None` unless `ipip` mode).
    #[serde(default)]
    pub ipip: Option<IpipTunnel>,
    /// The /26 IPAM blocks owned by this node.
    pub blocks: Vec<Cidr>,
}

/// A node's `vxlan.calico` device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vtep {
    /// `vxlan.calico`.
    pub ifname: String,
    /// Tunnel address (first address of the node's first block), a /32 on the device.
    pub ip: Ipv4Addr,
    /// Deterministic locally administered MAC, `66:..`.
    pub mac: String,
    /// Device MTU (uplink - 50).
    pub mtu: u32,
}

/// A node's `tunl0` device (Calico `ipipMode: Always`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpipTunnel {
    /// `tunl0`.
    pub ifname: String,
    /// Tunnel address (first address of the node's first block), a /32 on the device.
    pub ip: Ipv4Addr,
    /// Device MTU (uplink - 20).
    pub mtu: u32,
}

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// `n{i}p{j}` (node 1-based, pod 0-based).
    pub name: String,
    /// `{prefix}-n{i}p{j}`.
    pub netns: String,
    /// Pod address (a /32 on the pod's `eth0`).
    pub ip: Ipv4Addr,
    /// Name of the node the pod runs on.
    pub node: String,
    /// Node-side veth (`cali` + 11 hex digits).
    pub cali: String,
    /// Pod-side veth (`eth0`).
    pub ifname: String,
    /// MTU of both veth ends.
    pub mtu: u32,
}

impl Topology {
    /// The node called `name` (`"node1"`).
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The pod called `name` (`"n1p0"`).
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// The pods on node `node` (`"node1"`), in pod order.
    pub fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// The pod owning address `ip`.
    pub fn pod_by_ip(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| p.ip == ip)
    }

    /// The node a pod runs on.
    pub fn node_of(&self, pod: &Pod) -> Option<&Node> {
        self.node(&pod.node)
    }

    /// The network namespaces of the lab that exist on this machine: [`Self::netns_names`],
    /// or only the local node's and its pods' when [`Self::local_node`] is set (a VM guest).
    pub fn local_netns_names(&self) -> Vec<&str> {
        let Some(local) = &self.local_node else {
            return self.netns_names();
        };
        self.nodes
            .iter()
            .filter(|n| &n.name == local)
            .map(|n| n.netns.as_str())
            .chain(
                self.pods
                    .iter()
                    .filter(|p| &p.node == local)
                    .map(|p| p.netns.as_str()),
            )
            .collect()
    }

    /// Every network namespace of the lab: underlay, the outside machine (with Services),
    /// nodes, then pods.
    pub fn netns_names(&self) -> Vec<&str> {
        std::iter::once(self.underlay.netns.as_str())
            .chain(self.services.iter().map(|s| s.outside.netns.as_str()))
            .chain(self.nodes.iter().map(|n| n.netns.as_str()))
            .chain(self.pods.iter().map(|p| p.netns.as_str()))
            .collect()
    }

    /// Pretty JSON (what `lab status --json` prints).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a Topology always serializes")
    }

    /// Parse the JSON form back.
    pub fn from_json(s: &str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(s)?)
    }
}
