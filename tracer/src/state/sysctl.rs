//! The sysctls a forwarded packet depends on, read from `/proc/sys` by a thread inside the
//! node's namespace (`/proc/sys/net` shows the namespace of the thread that opens it).
//!
//! Global: `net.ipv4.ip_forward`, and conntrack's table size and fill and whether it picks up
//! TCP connections it has no entry for (`nf_conntrack_tcp_loose`) where the module is loaded.
//! Per device (and `all`, `default`): `forwarding`, `rp_filter`, `proxy_arp`, `accept_local`,
//! `src_valid_mark`, and for veths `neigh.<dev>.proxy_delay`. Keys are the dotted names
//! (`net.ipv4.conf.eth0.rp_filter`).

use std::collections::BTreeMap;

/// Per-device settings read for every device and for `all` and `default`.
const CONF: [&str; 5] = [
    "forwarding",
    "rp_filter",
    "proxy_arp",
    "accept_local",
    "src_valid_mark",
];

/// Reads the sysctls of the current namespace for `devices`; the second value names the
/// global ones that could not be read.
pub fn read(devices: &[String]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    let mut get = |dotted: String, path: String, required: bool| match std::fs::read_to_string(
        format!("/proc/sys/{path}"),
    ) {
        Ok(v) => {
            out.insert(dotted, v.trim().to_string());
        }
        Err(e) if required => missing.push(format!("sysctl {dotted}: {e}")),
        Err(_) => {}
    };
    get(
        "net.ipv4.ip_forward".into(),
        "net/ipv4/ip_forward".into(),
        true,
    );
    for k in [
        "nf_conntrack_count",
        "nf_conntrack_max",
        "nf_conntrack_tcp_loose",
    ] {
        get(
            format!("net.netfilter.{k}"),
            format!("net/netfilter/{k}"),
            false,
        );
    }
    for dev in ["all", "default"]
        .into_iter()
        .chain(devices.iter().map(String::as_str))
    {
        // A device name cannot contain '/', but never build a path from one that does.
        if dev.contains('/') || dev == "." || dev == ".." {
            continue;
        }
        for k in CONF {
            get(
                format!("net.ipv4.conf.{dev}.{k}"),
                format!("net/ipv4/conf/{dev}/{k}"),
                dev == "all",
            );
        }
        get(
            format!("net.ipv4.neigh.{dev}.proxy_delay"),
            format!("net/ipv4/neigh/{dev}/proxy_delay"),
            false,
        );
    }
    (out, missing)
}
