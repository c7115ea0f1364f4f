//! Pods that come and go on a running lab, as on a real node all day: created the way the CNI
//! plugin does (a namespace, a `cali` veth with the pod's /32 route on the node, proxy ARP, the
//! pod's address and routes), removed by deleting their namespace (the veth goes with it).
//!
//! Names follow the lab's (`{prefix}-n{node}p{j}`), so `lab down` removes any left behind;
//! addresses come from the node's first block, above the lab's own pods. [`ExtraPods`] removes
//! its pods when dropped, also when a test fails.

use anyhow::{ensure, Context, Result};

use crate::netns::{create_netns, delete_netns, run_batch, write_sysctls};
use crate::script::{cali_lines, cali_sysctls, leaf_sysctls, pod_script};
use crate::spec::{cali_name, ETH0};
use crate::topology::{Pod, Topology};

/// Pods added to a running lab; removed on drop.
#[derive(Debug)]
pub struct ExtraPods {
    pods: Vec<Pod>,
}

impl ExtraPods {
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Removes the pods (their namespaces, and with them their veths).
    pub fn remove(mut self) -> Result<()> {
        remove(std::mem::take(&mut self.pods))
    }
}

impl Drop for ExtraPods {
    fn drop(&mut self) {
        if let Err(e) = remove(std::mem::take(&mut self.pods)) {
            eprintln!("warning: removing extra pods: {e:#}");
        }
    }
}

fn remove(pods: Vec<Pod>) -> Result<()> {
    let mut first = None;
    for p in pods {
        if let Err(e) = delete_netns(&p.netns) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Adds `n` pods to `node` of the running lab `t`, numbered from `first` (`n{i}p{first}`, ...),
/// with addresses above the lab's own pods in the node's first block.
pub fn add_pods(t: &Topology, node: &str, first: usize, n: usize) -> Result<ExtraPods> {
    let nd = t
        .node(node)
        .with_context(|| format!("the lab has no {node}"))?;
    let block = *nd.blocks.first().context("the node has no block")?;
    let index: usize = node
        .strip_prefix("node")
        .and_then(|i| i.parse().ok())
        .context("node names are node<i>")?;
    let own = t.pods_on(node).len();
    // Address 0 is the VTEP, 1..=own the lab's pods; the block has 64 addresses.
    let base = own + 1 + first;
    ensure!(
        base + n <= 64,
        "{node}'s first block has room for {} more pods from {first}",
        64usize.saturating_sub(own + 1 + first)
    );
    let mtu = t.pods_on(node).first().map_or(nd.mtu, |p| p.mtu);
    let pods: Vec<Pod> = (0..n)
        .map(|k| {
            let j = 1000 + first + k;
            let netns = format!("{}-n{index}p{j}", t.prefix);
            Pod {
                name: format!("n{index}p{j}"),
                cali: cali_name(&netns),
                netns,
                ip: std::net::Ipv4Addr::from(u32::from(block.addr) + (base + k) as u32),
                node: node.to_string(),
                ifname: ETH0.to_string(),
                mtu,
            }
        })
        .collect();
    let names: Vec<String> = pods.iter().map(|p| p.netns.clone()).collect();
    let (created, result) = create_netns(&names);
    // From here on the guard removes what exists, whatever fails next.
    let guard = ExtraPods {
        pods: pods
            .iter()
            .filter(|p| created.contains(&p.netns))
            .cloned()
            .collect(),
    };
    result?;
    write_sysctls(
        pods.iter()
            .map(|p| (p.netns.clone(), leaf_sysctls()))
            .collect(),
    )?;
    let lines: Vec<String> = pods.iter().flat_map(cali_lines).collect();
    run_batch("ip", &nd.netns, &lines)?;
    let mut with_pods = t.clone();
    with_pods.pods = pods.clone();
    write_sysctls(vec![(nd.netns.clone(), cali_sysctls(&with_pods, nd))])?;
    for p in &pods {
        run_batch("ip", &p.netns, &pod_script(p))?;
    }
    Ok(guard)
}
