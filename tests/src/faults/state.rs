//! Reading the kernel state a plan changes (routes, FDB and neighbour entries, links, sysctl
//! names) and the lab's named parts, so that undo steps restore what is there, not what the
//! catalogue expects.

use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::netns::in_netns;
use crate::topology::{Node, Pod, Topology, Vtep};

/// Output of a read-only `ip`/`bridge` command inside `netns`.
pub fn show(tool: &str, netns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(["-netns", netns])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("run `{tool}`"))?;
    ensure!(
        out.status.success(),
        "`{tool} -netns {netns} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Main-table routes of `node` as `ip route` prints them (usable after `route replace`).
pub fn routes(node: &Node) -> Result<Vec<String>> {
    let text = show("ip", &node.netns, &["-o", "route", "show", "table", "main"])?;
    Ok(text
        .lines()
        .map(|l| l.trim().replace(" linkdown", ""))
        .collect())
}

/// The main-table route for exactly `prefix` on `node`.
pub fn route_of(node: &Node, prefix: &str) -> Result<String> {
    routes(node)?
        .into_iter()
        .find(|l| l.split_whitespace().next() == Some(prefix))
        .with_context(|| format!("{} has no route to {prefix} (another fault?)", node.name))
}

/// `{rest}` of the FDB entry `{mac} dev {dev} {rest}` on `node` (`dst 10.10.0.2 self permanent`).
pub fn fdb_entry(node: &Node, dev: &str, mac: &str) -> Result<String> {
    show("bridge", &node.netns, &["fdb", "show", "dev", dev])?
        .lines()
        .find_map(|l| l.trim().strip_prefix(mac))
        .map(|r| r.trim().to_owned())
        .with_context(|| format!("{} has no FDB entry for {mac}", node.name))
}

/// The word after `key` in `text`.
pub fn word_after(text: &str, key: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .map(|w| w[1].to_owned())
}

/// Node `name` of the lab.
pub fn node<'a>(t: &'a Topology, name: &str) -> Result<&'a Node> {
    t.node(name)
        .with_context(|| format!("the lab has no {name} (faults need 2 nodes)"))
}

/// Pod `name` of the lab.
pub fn pod<'a>(t: &'a Topology, name: &str) -> Result<&'a Pod> {
    t.pod(name)
        .with_context(|| format!("the lab has no pod {name} (faults need a pod per node)"))
}

/// The VTEP of `n` (VXLAN labs only).
pub fn vtep(n: &Node) -> Result<&Vtep> {
    n.vtep.as_ref().context("no VTEP in none mode")
}

/// The MAC address of device `dev` on `node`.
pub fn link_mac(node: &Node, dev: &str) -> Result<String> {
    let link = show("ip", &node.netns, &["-o", "link", "show", "dev", dev])?;
    word_after(&link, "link/ether").with_context(|| format!("{dev} has no MAC: {link}"))
}

/// `ip -batch` lines that re-create the permanent neighbour entries of device `dev` on `node`
/// (`neigh replace IP lladdr MAC dev DEV nud permanent`).
pub fn permanent_neighbours(node: &Node, dev: &str) -> Result<Vec<String>> {
    let text = show(
        "ip",
        &node.netns,
        &["neigh", "show", "dev", dev, "nud", "permanent"],
    )?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let ip = l.split_whitespace().next()?;
            let mac = word_after(l, "lladdr")?;
            Some(format!(
                "neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
            ))
        })
        .collect())
}

/// The devices of `/proc/sys/net/ipv4/conf` in `netns` (with `all` and `default`).
pub fn conf_devices(netns: &str) -> Result<Vec<String>> {
    let names = in_netns(netns, || -> std::io::Result<Vec<String>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc/sys/net/ipv4/conf")? {
            v.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(v)
    })?
    .with_context(|| format!("list /proc/sys/net/ipv4/conf in `{netns}`"))?;
    let mut names = names;
    names.sort();
    Ok(names)
}
