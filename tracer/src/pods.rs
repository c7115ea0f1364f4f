//! The pods' network namespaces, found from their host-side veths, so that drops inside a pod
//! (its ARP for the gateway 169.254.1.1 unanswered, no route in the pod, the pod's own MTU)
//! belong to the trace: the drop hook reports the pods' namespaces too, and the topology
//! names them.
//!
//! A pod veth (`cali*`, or a veth carrying a `/32` route) knows its peer's namespace only as
//! an id local to the node (`IFLA_LINK_NETNSID`). Candidate namespaces are the files under
//! `/run/netns` (the CNI's and `ip netns`' names) and `/proc/<pid>/ns/net` (a pod's pause
//! process), one per inode; the node's kernel is asked the id it gives each
//! (`RTM_GETNSID` with `NETNSA_FD`), and the veths' peer ids are looked up among them. Nothing
//! is attached inside a pod and nothing in it is changed.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::{
    nsid::{NsidAttribute, NsidMessage},
    RouteNetlinkMessage,
};

use crate::{
    netns::Netns,
    state::read::{dump_addrs, dump_links, exchange},
    topology::{Link, Node},
};

/// Candidate namespace files, one per inode, except `skip` (the node's own).
fn candidates(skip: u32) -> Vec<(String, PathBuf, u32)> {
    let mut out: Vec<(String, PathBuf, u32)> = Vec::new();
    let mut seen = std::collections::HashSet::from([skip]);
    let mut add = |name: String, path: PathBuf| {
        if let Ok(m) = std::fs::metadata(&path) {
            let ino = m.ino() as u32;
            if seen.insert(ino) {
                out.push((name, path, ino));
            }
        }
    };
    for dir in ["/run/netns", "/var/run/netns"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                add(e.file_name().to_string_lossy().into_owned(), e.path());
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            add(
                format!("pid:{pid}({})", comm.trim()),
                e.path().join("ns/net"),
            );
        }
    }
    out
}

/// The id the current namespace gives the namespace open as `fd`, if any.
fn nsid_of(fd: i32) -> Option<i32> {
    let mut req = NsidMessage::default();
    req.attributes.push(NsidAttribute::Fd(fd as u32));
    let reply = exchange("nsid", RouteNetlinkMessage::GetNsId(req), NLM_F_ACK).ok()?;
    reply.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewNsId(m) => m.attributes.iter().find_map(|a| match a {
            NsidAttribute::Id(id) if *id >= 0 => Some(*id),
            _ => None,
        }),
        _ => None,
    })
}

/// The pods of `node` (its namespace `node_ns`) as topology entries (`pod_of` = the node):
/// for each pod veth, its peer's namespace, named after its file (`/run/netns/<name>`) or its
/// process, with the pod's addresses and links. Pods whose namespace cannot be found are left out (their host side is still traced).
pub fn find(node_ns: &Netns, node: &Node) -> Vec<Node> {
    let node_name = node.name.clone();
    let routed: Vec<(u32, Ipv4Addr)> = node
        .routes
        .iter()
        .filter(|r| r.prefix_len == 32 && r.gw.is_none())
        .filter_map(|r| node.link(&r.dev).map(|l| (l.ifindex, r.dst)))
        .collect();
    let found = node_ns.run(move || {
        let links = dump_links().map_err(anyhow::Error::from)?;
        let veths: Vec<_> = links
            .iter()
            .filter(|l| {
                l.kind == "veth"
                    && l.peer_netnsid.is_some()
                    && (l.name.starts_with("cali") || routed.iter().any(|(i, _)| *i == l.ifindex))
            })
            .cloned()
            .collect();
        if veths.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_id: HashMap<i32, (String, PathBuf)> = HashMap::new();
        for (name, path, _) in candidates(node_ns_inode()) {
            let Ok(f) = std::fs::File::open(&path) else {
                continue;
            };
            if let Some(id) = nsid_of(std::os::fd::AsRawFd::as_raw_fd(&f)) {
                by_id.entry(id).or_insert((name, path));
            }
        }
        Ok(veths
            .into_iter()
            .filter_map(|v| {
                let (name, path) = by_id.get(&v.peer_netnsid?)?.clone();
                let addrs: Vec<Ipv4Addr> = routed
                    .iter()
                    .filter(|(i, _)| *i == v.ifindex)
                    .map(|(_, a)| *a)
                    .collect();
                Some((name, path, v.name, addrs))
            })
            .collect::<Vec<_>>())
    });
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            log::warn!(
                "{node_name}: pods' namespaces not found ({e:#}); drops inside pods are not traced"
            );
            return Vec::new();
        }
    };
    found
        .into_iter()
        .filter_map(|(name, path, veth, addrs)| {
            let netns = Netns::open_path(name.clone(), path).ok()?;
            let links = netns
                .run(|| {
                    let links = dump_links().map_err(anyhow::Error::from)?;
                    let addrs = dump_addrs().map_err(anyhow::Error::from)?;
                    Ok((links, addrs))
                })
                .ok();
            let (links, pod_addrs) = links.unwrap_or_default();
            let mut all_addrs: Vec<Ipv4Addr> = pod_addrs
                .iter()
                .map(|a| a.addr)
                .filter(|a| !a.is_loopback())
                .collect();
            for a in addrs {
                if !all_addrs.contains(&a) {
                    all_addrs.push(a);
                }
            }
            let node = Node {
                name,
                netns: netns.inode,
                addrs: all_addrs,
                ifaces: Vec::new(),
                links: links
                    .iter()
                    .map(|l| Link {
                        ifindex: l.ifindex,
                        name: l.name.clone(),
                        mtu: l.mtu,
                    })
                    .collect(),
                default_gw: None,
                routes: Vec::new(),
                uplink_addrs: Vec::new(),
                pod_of: Some(crate::topology::PodOf {
                    node: node_name.clone(),
                    veth,
                }),
            };
            Some(node)
        })
        .collect()
}

/// The inode of the namespace the calling thread is in.
fn node_ns_inode() -> u32 {
    std::fs::metadata(Path::new("/proc/thread-self/ns/net"))
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}
