//! Finds, inside one network namespace, the interfaces Calico's data path uses: the pod veths
//! (`cali*`), `vxlan.calico`, `tunl0`, and the uplink (the device the tunnel is bound to or
//! sources from, else the default route's device). `--iface` adds interfaces; a named
//! interface that does not exist is an error. Runs inside the namespace (see `netns::Netns::run`).

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{bail, Result};

use tracer_common::filter::FilterProgram;

use crate::{
    filter::may_involve,
    netlink::{dump_links, Link},
    topology::{Iface, IfaceKind, Node, Route},
};

/// Where to attach, and how.
#[derive(Clone, Debug)]
pub struct AttachTarget {
    pub ifindex: u32,
    pub name: String,
    pub kind: IfaceKind,
    /// The device carries Ethernet frames (else the programs start at the IP header).
    pub l2: bool,
}

impl AttachTarget {
    /// The interface as the topology describes it.
    pub fn iface(&self) -> Iface {
        Iface {
            ifindex: self.ifindex,
            name: self.name.clone(),
            kind: self.kind,
        }
    }
}

/// What was found in one namespace.
#[derive(Clone, Debug)]
pub struct NodePlan {
    pub node: Node,
    pub targets: Vec<AttachTarget>,
    /// UDP port that marks VXLAN on this node (from vxlan.calico, default 4789).
    pub vxlan_port: u16,
    /// Things worth telling the user (no uplink found, ...).
    pub notes: Vec<String>,
    /// Pod veths left out because the filter cannot concern their pods.
    pub pods_left_out: usize,
    /// Interfaces named with `--iface` that this namespace does not have (an error only when
    /// no traced namespace has them).
    pub missing_ifaces: Vec<String>,
    /// Filters a killed tracer had left (netlink, kernels without tcx), removed at start: how
    /// many, and on which interfaces.
    pub stale_filters: (usize, Vec<String>),
}

impl NodePlan {
    /// Leaves out the pod veths of pods the filter cannot concern (`filter::may_involve` on
    /// every address routed to the veth): a packet on a pod's veth has the pod's address as
    /// source or destination. Veths named with `--iface`, and veths with no /32 route (no known
    /// pod address), stay. On a node with many pods and a filter naming a few, this is most of
    /// the attach time and of the per-packet cost for everyone else's traffic.
    pub fn leave_out_unconcerned_pods(&mut self, filter: &FilterProgram, named: &[String]) {
        let routes = &self.node.routes;
        // An address the filter names that is no pod's (a Service's cluster IP, a machine
        // outside the cluster) may be translated to any pod's on the way (DNAT, or the reply
        // of an SNATed flow): then every pod can carry a matching packet.
        let is_pod = |a: Ipv4Addr| {
            routes.iter().any(|r| {
                r.contains(a)
                    && r.prefix_len >= 16
                    && matches!(
                        IfaceKind::from_name(&r.dev),
                        IfaceKind::PodVeth | IfaceKind::Vxlan | IfaceKind::Ipip
                    )
            })
        };
        if crate::filter::named_addresses(filter)
            .into_iter()
            .any(|a| !is_pod(a) && may_involve(filter, a))
        {
            self.pods_left_out = 0;
            return;
        }
        let concerned = |name: &str| {
            let mut addrs = routes
                .iter()
                .filter(|r| r.dev == name && r.prefix_len == 32)
                .map(|r| r.dst)
                .peekable();
            addrs.peek().is_none() || addrs.any(|a| may_involve(filter, a))
        };
        let before = self.targets.len();
        self.targets.retain(|t| {
            t.kind != IfaceKind::PodVeth || named.contains(&t.name) || concerned(&t.name)
        });
        self.pods_left_out = before - self.targets.len();
        let targets = &self.targets;
        self.node
            .ifaces
            .retain(|i| targets.iter().any(|t| t.ifindex == i.ifindex));
    }
}

/// Discovers the interfaces of the calling thread's namespace.
pub fn discover(name: &str, netns: u32, extra_ifaces: &[String]) -> Result<NodePlan> {
    let links = dump_links()?;
    let addrs = local_addrs()?;
    let by_name: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut notes = Vec::new();
    let mut chosen: BTreeMap<u32, (IfaceKind, &Link)> = BTreeMap::new();

    let mut vxlan_port = tracer_common::VXLAN_PORT;
    let mut uplink: Option<&Link> = None;
    for link in &links {
        let kind = IfaceKind::from_name(&link.name);
        match kind {
            IfaceKind::PodVeth | IfaceKind::Vxlan | IfaceKind::Ipip => {
                chosen.insert(link.ifindex, (kind, link));
            }
            _ => continue,
        }
        if kind == IfaceKind::Vxlan {
            if let Some(port) = link.vxlan_port {
                vxlan_port = port;
            }
        }
        if matches!(kind, IfaceKind::Vxlan | IfaceKind::Ipip) && uplink.is_none() {
            uplink = tunnel_uplink(link, &links, &addrs);
        }
    }
    if uplink.is_none() {
        if let Some((dev, _)) = default_route()? {
            uplink = by_name.get(dev.as_str()).copied();
        }
    }
    match uplink {
        Some(link) => {
            chosen.insert(link.ifindex, (IfaceKind::Uplink, link));
        }
        None => notes.push(format!(
            "{name}: no uplink found (no tunnel bound to a device, no default route); \
             use --iface to name it"
        )),
    }
    let mut missing_ifaces = Vec::new();
    for want in extra_ifaces {
        let Some(link) = by_name.get(want.as_str()) else {
            missing_ifaces.push(want.clone());
            continue;
        };
        let kind = match IfaceKind::from_name(&link.name) {
            IfaceKind::Other if uplink.is_some_and(|u| u.ifindex == link.ifindex) => {
                IfaceKind::Uplink
            }
            k => k,
        };
        chosen.insert(link.ifindex, (kind, link));
    }
    if chosen.is_empty() {
        bail!(
            "{name}: no interface to trace (no cali*, vxlan.calico, tunl0 or uplink); use --iface"
        );
    }

    let targets: Vec<AttachTarget> = chosen
        .values()
        .map(|(kind, link)| AttachTarget {
            ifindex: link.ifindex,
            name: link.name.clone(),
            kind: *kind,
            l2: link.has_ethernet_header(),
        })
        .collect();
    let default_gw = default_route()?.and_then(|(_, gw)| gw);
    let routes = routes()?;
    let node = Node {
        name: name.to_string(),
        netns,
        links: links
            .iter()
            .map(|l| crate::topology::Link {
                ifindex: l.ifindex,
                name: l.name.clone(),
                mtu: l.mtu,
            })
            .collect(),
        default_gw,
        routes,
        uplink_addrs: addrs
            .iter()
            .filter(|(dev, _)| uplink.is_some_and(|u| &u.name == dev))
            .map(|(_, a)| *a)
            .collect(),
        pod_of: None,
        addrs: addrs.iter().map(|(_, a)| *a).collect(),
        ifaces: targets.iter().map(AttachTarget::iface).collect(),
    };
    Ok(NodePlan {
        node,
        targets,
        vxlan_port,
        notes,
        pods_left_out: 0,
        missing_ifaces,
        stale_filters: (0, Vec::new()),
    })
}

/// The device a tunnel sends through: its bound device, else the device holding its local
/// address.
fn tunnel_uplink<'a>(
    tunnel: &Link,
    links: &'a [Link],
    addrs: &[(String, Ipv4Addr)],
) -> Option<&'a Link> {
    if tunnel.tunnel_link != 0 {
        return links.iter().find(|l| l.ifindex == tunnel.tunnel_link);
    }
    let local = tunnel.tunnel_local?;
    let (dev, _) = addrs.iter().find(|(_, a)| *a == local)?;
    links.iter().find(|l| &l.name == dev)
}

/// IPv4 addresses of the calling thread's namespace, with their device names.
pub fn local_addrs() -> Result<Vec<(String, Ipv4Addr)>> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list returned by getifaddrs, which stays valid until freed.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it declares.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: family is AF_INET, so the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                // SAFETY: ifa_name is a NUL-terminated string owned by the list.
                let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
                out.push((
                    name.to_string_lossy().into_owned(),
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                ));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing the list obtained above, exactly once.
    unsafe { libc::freeifaddrs(ifap) };
    Ok(out)
}

/// Device and gateway of the IPv4 default route, from the calling thread's
/// `/proc/thread-self/net/route`.
fn default_route() -> Result<Option<(String, Option<Ipv4Addr>)>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route")?;
    Ok(parse_default_route(&text))
}

fn parse_default_route(text: &str) -> Option<(String, Option<Ipv4Addr>)> {
    parse_routes(text)
        .into_iter()
        .find(|r| r.prefix_len == 0)
        .map(|r| (r.dev, r.gw))
}

/// The main table's IPv4 routes, from the calling thread's `/proc/thread-self/net/route`.
pub fn routes() -> Result<Vec<Route>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/route")?;
    Ok(parse_routes(&text))
}

/// Parses /proc/net/route: addresses are native-endian hex dumps of network-order words.
fn parse_routes(text: &str) -> Vec<Route> {
    let addr = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let mask = addr(f[7])?;
            Some(Route {
                dst: addr(f[1])?,
                prefix_len: u32::from(mask).count_ones() as u8,
                gw: addr(f[2]).filter(|g| !g.is_unspecified()),
                dev: f[0].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_from_proc() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\tFE000A0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t00000A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(
            parse_default_route(text),
            Some(("eth0".to_string(), Some(Ipv4Addr::new(10, 10, 0, 254))))
        );
        assert_eq!(parse_default_route("Iface\tDestination\n"), None);
        let routes = parse_routes(text);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            (routes[1].dst, routes[1].prefix_len, routes[1].gw),
            (Ipv4Addr::new(10, 10, 0, 0), 24, None)
        );
    }

    /// A node with pods A (10.244.0.1) and B (10.244.0.2), a veth without a pod route, the
    /// tunnel and the uplink.
    fn plan() -> NodePlan {
        let target = |ifindex, name: &str, kind| AttachTarget {
            ifindex,
            name: name.into(),
            kind,
            l2: true,
        };
        let targets = vec![
            target(2, "eth0", IfaceKind::Uplink),
            target(3, "vxlan.calico", IfaceKind::Vxlan),
            target(4, "caliaaaaaaaaaaa", IfaceKind::PodVeth),
            target(5, "calibbbbbbbbbbb", IfaceKind::PodVeth),
            target(6, "calixxxxxxxxxxx", IfaceKind::PodVeth),
        ];
        let route = |dst: &str, dev: &str| Route {
            dst: dst.parse().expect("address"),
            prefix_len: 32,
            gw: None,
            dev: dev.into(),
        };
        NodePlan {
            node: Node {
                name: "n".into(),
                netns: 1,
                addrs: Vec::new(),
                ifaces: targets.iter().map(AttachTarget::iface).collect(),
                links: Vec::new(),
                default_gw: None,
                routes: vec![
                    route("10.244.0.1", "caliaaaaaaaaaaa"),
                    route("10.244.0.2", "calibbbbbbbbbbb"),
                    // The remote node's block, through the tunnel.
                    Route {
                        prefix_len: 26,
                        ..route("10.244.4.0", "vxlan.calico")
                    },
                ],
                uplink_addrs: Vec::new(),
                pod_of: None,
            },
            targets,
            vxlan_port: 4789,
            notes: Vec::new(),
            pods_left_out: 0,
            missing_ifaces: Vec::new(),
            stale_filters: (0, Vec::new()),
        }
    }

    fn names(p: &NodePlan) -> Vec<&str> {
        p.targets.iter().map(|t| t.name.as_str()).collect()
    }

    fn program(expr: &str) -> FilterProgram {
        crate::filter::Filter::parse(expr)
            .expect("parse")
            .compile()
            .expect("compile")
    }

    #[test]
    fn pods_the_filter_cannot_concern_are_left_out() {
        let mut p = plan();
        p.leave_out_unconcerned_pods(&program("host 10.244.0.1 and host 10.244.4.1"), &[]);
        // B is left out; the veth with no known pod address stays, as do tunnel and uplink.
        assert_eq!(
            names(&p),
            ["eth0", "vxlan.calico", "caliaaaaaaaaaaa", "calixxxxxxxxxxx"]
        );
        assert_eq!(p.pods_left_out, 1);
        assert_eq!(p.node.ifaces.len(), 4);
        assert!(p.node.ifaces.iter().all(|i| i.name != "calibbbbbbbbbbb"));

        // Named with --iface: kept whatever the filter says.
        let mut p = plan();
        let named = ["calibbbbbbbbbbb".to_string()];
        p.leave_out_unconcerned_pods(&program("host 10.244.0.1 and host 10.244.4.1"), &named);
        assert_eq!(p.pods_left_out, 0);

        // A Service address (or anything that is no pod's): DNAT may turn it into any pod's,
        // so every pod veth stays; the same with it beside a pod's address.
        for expr in ["host 10.96.0.10", "host 10.244.0.1 and host 10.96.0.10"] {
            let mut p = plan();
            p.leave_out_unconcerned_pods(&program(expr), &[]);
            assert_eq!(p.pods_left_out, 0, "{expr:?}");
        }

        // One host, or no filter: any pod may talk to it, nothing is left out.
        for expr in ["host 10.244.4.1", ""] {
            let mut p = plan();
            p.leave_out_unconcerned_pods(&program(expr), &[]);
            assert_eq!(p.pods_left_out, 0, "{expr:?}");
            assert_eq!(p.targets.len(), 5);
        }
    }
}
