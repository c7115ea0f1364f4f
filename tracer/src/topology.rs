//! What the tracer knows about the nodes it traces: for each traced network namespace, a node
//! name, its local addresses and the interfaces the programs were attached to.
//!
//! Built by the loader (attach side) and handed to the correlator and the renderers, which use
//! it only to turn `(netns, ifindex)` into names and roles. Pure data: no I/O here.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The role of an interface in Calico's data path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IfaceKind {
    /// Host side of a pod's veth (`cali*`).
    PodVeth,
    /// The VXLAN VTEP (`vxlan.calico`).
    Vxlan,
    /// The IPIP tunnel (`tunl0`).
    Ipip,
    /// The node's uplink (the underlay NIC).
    Uplink,
    /// Anything added with `--iface` that is none of the above.
    Other,
    /// Not an interface: a kernel function probed with fentry/kprobe (an encapsulation
    /// probe), on a pseudo-interface index of its own.
    Function,
}

impl IfaceKind {
    /// Kebab-case name, as in the JSON output (same as the `Serialize` form).
    pub fn as_str(self) -> &'static str {
        match self {
            IfaceKind::PodVeth => "pod-veth",
            IfaceKind::Vxlan => "vxlan",
            IfaceKind::Ipip => "ipip",
            IfaceKind::Uplink => "uplink",
            IfaceKind::Other => "other",
            IfaceKind::Function => "function",
        }
    }

    /// Classifies an interface by Calico's naming conventions.
    pub fn from_name(name: &str) -> IfaceKind {
        if name.starts_with("cali") {
            IfaceKind::PodVeth
        } else if name == "vxlan.calico" {
            IfaceKind::Vxlan
        } else if name == "tunl0" {
            IfaceKind::Ipip
        } else {
            IfaceKind::Other
        }
    }
}

/// One traced interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iface {
    pub ifindex: u32,
    pub name: String,
    pub kind: IfaceKind,
}

/// One traced node (network namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Display name: the netns name, or the host name when tracing the current namespace.
    pub name: String,
    /// Network namespace inode.
    pub netns: u32,
    /// IPv4 addresses configured on the node (any interface).
    pub addrs: Vec<Ipv4Addr>,
    /// The traced interfaces.
    pub ifaces: Vec<Iface>,
    /// Every interface of the node (index, name, MTU), traced or not, for naming drops and
    /// explaining verdicts.
    pub links: Vec<Link>,
    /// The node's IPv4 default gateway, if it has a default route.
    pub default_gw: Option<Ipv4Addr>,
    /// The main routing table when tracing started: a fallback for verdicts when no route
    /// lookup of the packet was seen.
    pub routes: Vec<Route>,
    /// The addresses on the uplink (the node's underlay addresses).
    pub uplink_addrs: Vec<Ipv4Addr>,
    /// For a pod's namespace (in [`Topology::pods`]): the node and host-side veth it hangs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_of: Option<PodOf>,
}

/// Where a pod's namespace hangs on its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodOf {
    /// The node's name.
    pub node: String,
    /// The host side of the pod's veth.
    pub veth: String,
}

/// One route of a node's main table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix_len: u8,
    pub gw: Option<Ipv4Addr>,
    pub dev: String,
}

impl Route {
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(addr) & mask == u32::from(self.dst) & mask
    }
}

/// Any interface of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mtu: u32,
}

impl Node {
    /// Name of any interface of the node.
    pub fn link_name(&self, ifindex: u32) -> Option<&str> {
        self.links
            .iter()
            .find(|l| l.ifindex == ifindex)
            .map(|l| l.name.as_str())
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The longest-prefix match for `addr` in the routing table seen at start-up.
    pub fn route_for(&self, addr: Ipv4Addr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.contains(addr))
            .max_by_key(|r| r.prefix_len)
    }

    /// The uplink, if one was found.
    pub fn uplink(&self) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.kind == IfaceKind::Uplink)
    }
}

/// All traced nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub nodes: Vec<Node>,
    /// The pods' namespaces whose drops are traced (no program is attached inside a pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<Node>,
}

impl Topology {
    pub fn node(&self, netns: u32) -> Option<&Node> {
        self.nodes.iter().find(|n| n.netns == netns)
    }

    /// A pod's namespace.
    pub fn pod(&self, netns: u32) -> Option<&Node> {
        self.pods.iter().find(|n| n.netns == netns)
    }

    /// A node or a pod's namespace, to name what happened in it.
    pub fn node_or_pod(&self, netns: u32) -> Option<&Node> {
        self.node(netns).or_else(|| self.pod(netns))
    }

    /// The node that owns `addr`, if it is one of the traced nodes.
    pub fn owner_of(&self, addr: Ipv4Addr) -> Option<&Node> {
        self.nodes.iter().find(|n| n.addrs.contains(&addr))
    }
}
