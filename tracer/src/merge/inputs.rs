//! The recordings a merge reads, and how their namespaces and nodes become one topology.
//!
//! An input is a file (read again for the second pass), a stream (a pipe, standard input,
//! `<(ssh node tracer record --write - ...)`: read once, as it arrives), or bytes in memory
//! (tests). With `--follow`, a file that has no end frame yet is waited on as it grows.
//!
//! Namespace inodes are unique only within one kernel: the initial namespace has the same
//! inode on every machine. Each recording's inodes keep their number unless another
//! recording, of another machine, already uses it; then a key below the range the kernel
//! hands out (inodes start at 0xF0000000) stands in for it. The same namespace of one machine
//! (same boot id) recorded twice keeps one key, so its duplicate hops are recognised as such.
//! Node names that two machines share get `@host` (or `#n`) appended.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    machine::Machine,
    signals::StopFlag,
    topology::{Node, Topology},
};

/// Where a recording comes from.
pub enum Input {
    /// A file: opened again for each pass.
    File(PathBuf),
    /// Read once, as it arrives (a pipe, standard input).
    Stream(String, Box<dyn Read + Send>),
    /// In memory (tests, fuzzing).
    Bytes(String, Vec<u8>),
}

impl Input {
    /// `-` is standard input; a FIFO or character device is a stream; anything else a file.
    pub fn from_arg(path: &Path) -> io::Result<Input> {
        if path.as_os_str() == "-" {
            return Ok(Input::Stream("-".into(), Box::new(io::stdin())));
        }
        let meta = std::fs::metadata(path)?;
        if meta.is_file() {
            Ok(Input::File(path.to_path_buf()))
        } else {
            let f = File::open(path)?;
            Ok(Input::Stream(path.display().to_string(), Box::new(f)))
        }
    }

    pub fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Stream(n, _) | Input::Bytes(n, _) => n.clone(),
        }
    }

    /// Whether the input can be read again from its start.
    pub fn rereadable(&self) -> bool {
        !matches!(self, Input::Stream(..))
    }

    /// A reader from the start: a file again, the stream itself (once), the bytes.
    pub fn open(&mut self, follow: Option<&StopFlag>) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Input::File(p) => {
                let f = File::open(&*p)?;
                Ok(match follow {
                    Some(stop) => Box::new(BufReader::with_capacity(
                        READ_BUFFER,
                        Follow {
                            inner: f,
                            stop: stop.clone(),
                        },
                    )),
                    None => Box::new(BufReader::with_capacity(READ_BUFFER, f)),
                })
            }
            Input::Stream(_, r) => Ok(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                std::mem::replace(r, Box::new(io::empty())),
            ))),
            Input::Bytes(_, b) => Ok(Box::new(io::Cursor::new(b.clone()))),
        }
    }
}

/// Reads are buffered: a frame is two reads (its header, its payload).
const READ_BUFFER: usize = 1 << 20;

/// A file that is still being written: at its end, wait for more until a stop request.
struct Follow {
    inner: File,
    stop: StopFlag,
}

impl Read for Follow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() || self.stop.is_set() {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The lowest inode the kernel gives a namespace (`PROC_DYNAMIC_FIRST`): keys made up for
/// colliding namespaces stay below it.
const FIRST_INODE: u32 = 0xF000_0000;

/// Each recording's namespace keys and node names, and the merged topology.
pub struct Placed {
    /// Per recording: inode -> key (only where they differ).
    pub keys: Vec<HashMap<u32, u32>>,
    /// Per recording: its nodes' names in the merged topology, by node index.
    pub node_names: Vec<Vec<String>>,
    /// Per recording: its nodes' namespace inodes, by node index.
    pub node_netns: Vec<Vec<u32>>,
    pub topology: Topology,
    /// Per recording, the namespace keys of its nodes: the machine of each key.
    pub machine_of: HashMap<u32, usize>,
    /// Recordings of one machine that cover the same namespaces: `(first, second)`.
    pub same_namespaces: Vec<(usize, usize)>,
}

/// Gives every namespace of every recording its key and every node a unique name.
pub fn place(topologies: &[&Topology], machines: &[Machine]) -> Placed {
    // key -> (recording, boot id) of the namespace that holds it.
    let mut owner: HashMap<u32, (usize, String)> = HashMap::new();
    let mut next_synthetic = 1u32;
    let mut keys = vec![HashMap::new(); topologies.len()];
    let mut node_names = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut pods: Vec<Node> = Vec::new();
    let mut machine_of = HashMap::new();
    let mut same_namespaces = Vec::new();
    for (k, topo) in topologies.iter().enumerate() {
        let boot = &machines[k].boot_id;
        let mut names = Vec::new();
        // Pods' namespaces get keys as nodes do (their drops carry the same inodes).
        let all = topo.nodes.iter().map(|n| (n, false));
        for (node, is_pod) in all.chain(topo.pods.iter().map(|n| (n, true))) {
            let key = match owner.get(&node.netns) {
                None => node.netns,
                Some((j, b)) if !boot.is_empty() && b == boot => {
                    if !same_namespaces.contains(&(*j, k)) {
                        same_namespaces.push((*j, k));
                    }
                    node.netns
                }
                Some(_) => {
                    while owner.contains_key(&next_synthetic) {
                        next_synthetic += 1;
                    }
                    debug_assert!(next_synthetic < FIRST_INODE);
                    next_synthetic
                }
            };
            owner.entry(key).or_insert((k, boot.clone()));
            if key != node.netns {
                keys[k].insert(node.netns, key);
            }
            machine_of.entry(key).or_insert(k);
            let mut name = node.name.clone();
            let list = if is_pod { &mut pods } else { &mut nodes };
            if list.iter().any(|n| n.name == name && n.netns != key) {
                let host = &machines[k].hostname;
                name = if host.is_empty() || list.iter().any(|n| n.name == format!("{name}@{host}"))
                {
                    format!("{name}#{}", k + 1)
                } else {
                    format!("{name}@{host}")
                };
            }
            if let (true, Some(of)) = (is_pod, &node.pod_of) {
                // The pod's node as it is named in the merge.
                let host_name = topo
                    .nodes
                    .iter()
                    .position(|n| n.name == of.node)
                    .and_then(|i| names.get(i).cloned());
                if !list.iter().any(|n| n.netns == key) {
                    let mut pod = Node {
                        name,
                        netns: key,
                        ..node.clone()
                    };
                    if let (Some(h), Some(p)) = (host_name, pod.pod_of.as_mut()) {
                        p.node = h;
                    }
                    list.push(pod);
                }
                continue;
            }
            names.push(name.clone());
            if !list.iter().any(|n| n.netns == key) {
                list.push(Node {
                    name,
                    netns: key,
                    ..node.clone()
                });
            }
        }
        node_names.push(names);
    }
    Placed {
        keys,
        node_names,
        node_netns: topologies
            .iter()
            .map(|t| t.nodes.iter().map(|n| n.netns).collect())
            .collect(),
        topology: Topology { nodes, pods },
        machine_of,
        same_namespaces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(names: &[(&str, u32)]) -> Topology {
        Topology {
            nodes: names
                .iter()
                .map(|&(name, netns)| Node {
                    name: name.into(),
                    netns,
                    addrs: Vec::new(),
                    ifaces: Vec::new(),
                    links: Vec::new(),
                    default_gw: None,
                    routes: Vec::new(),
                    uplink_addrs: Vec::new(),
                    pod_of: None,
                })
                .collect(),
            pods: Vec::new(),
        }
    }

    fn machine(host: &str, boot: &str) -> Machine {
        Machine {
            hostname: host.into(),
            boot_id: boot.into(),
            ..Machine::default()
        }
    }

    #[test]
    fn colliding_namespaces_of_two_machines_get_keys_of_their_own() {
        const INIT: u32 = 0xF000_0000;
        let (a, b) = (topo(&[("worker", INIT)]), topo(&[("worker", INIT)]));
        let p = place(
            &[&a, &b],
            &[machine("n1", "boot-a"), machine("n2", "boot-b")],
        );
        assert!(p.keys[0].is_empty());
        let key = p.keys[1][&INIT];
        assert!(key < INIT && key != 0);
        let names: Vec<&str> = p.topology.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["worker", "worker@n2"]);
        assert_eq!(p.node_names, [vec!["worker"], vec!["worker@n2"]]);
        assert_eq!((p.machine_of[&INIT], p.machine_of[&key]), (0, 1));
    }

    #[test]
    fn one_machine_recorded_twice_keeps_its_keys() {
        // The lab: one recorder per node namespace of one kernel, plus a second recording of
        // node1 by mistake.
        let n1 = topo(&[("node1", 0xF000_0100)]);
        let n2 = topo(&[("node2", 0xF000_0200)]);
        let m = machine("host", "boot");
        let p = place(&[&n1, &n2, &n1], &[m.clone(), m.clone(), m]);
        assert!(p.keys.iter().all(HashMap::is_empty));
        assert_eq!(p.topology.nodes.len(), 2);
        assert_eq!(p.same_namespaces, [(0, 2)]);
    }
}
