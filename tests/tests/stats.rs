//! Latency statistics on the lab: for a ping flow across nodes, both the user-space mode
//! (`tracer stats`) and the in-kernel aggregation (`tracer stats --kernel-agg`) report every
//! segment of the VXLAN path with plausible values: counts match the packets sent, every value
//! is positive, percentiles are monotone, and the whole path takes longer than any of its parts.

mod common;

use common::{require_root, Tracer};
use lab::Encap;
use serde_json::Value;

const SEGMENTS: [&str; 6] = ["node-tx", "encap", "wire", "decap", "node-rx", "total"];
const PINGS: u64 = 20;

fn run(prefix: &str, extra: &[&str]) -> Value {
    run_from(prefix, extra, false)
}

/// A pod added to node1 by hand whose veth has an ifindex above the tracer's role array
/// (`ROLE_ARRAY_LEN`), wired as Felix wires pods; its namespace (and with it the veth pair) is
/// deleted on drop.
struct HighIndexPod {
    netns: String,
    ip: std::net::Ipv4Addr,
}

const HIGH_IFINDEX: &str = "70000";

impl HighIndexPod {
    fn add(node_ns: &str, prefix: &str) -> HighIndexPod {
        let netns = format!("{prefix}-n1hi");
        let ip: std::net::Ipv4Addr = "10.244.0.60".parse().expect("address");
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .output();
        let pod = HighIndexPod { netns, ip };
        let cali = "calihighindex0";
        let sh = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .expect("ip");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(&["netns", "add", &pod.netns]);
        sh(&[
            "-n",
            node_ns,
            "link",
            "add",
            cali,
            "index",
            HIGH_IFINDEX,
            "address",
            "ee:ee:ee:ee:ee:ee",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &pod.netns,
        ]);
        sh(&["-n", node_ns, "link", "set", cali, "up"]);
        let ip32 = format!("{ip}/32");
        sh(&[
            "-n", node_ns, "route", "add", &ip32, "dev", cali, "scope", "link",
        ]);
        // Proxy ARP without delay, as the lab does for its own pods (written from inside the
        // node's namespace: /proc/sys/net is per namespace).
        lab::in_netns(node_ns, move || {
            for (path, value) in [
                (format!("/proc/sys/net/ipv4/conf/{cali}/proxy_arp"), "1"),
                (format!("/proc/sys/net/ipv4/neigh/{cali}/proxy_delay"), "0"),
            ] {
                std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
            }
        })
        .expect("node namespace");
        sh(&["-n", &pod.netns, "link", "set", "lo", "up"]);
        sh(&["-n", &pod.netns, "addr", "add", &ip32, "dev", "eth0"]);
        sh(&["-n", &pod.netns, "link", "set", "eth0", "up"]);
        sh(&[
            "-n",
            &pod.netns,
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        sh(&[
            "-n",
            &pod.netns,
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        pod
    }
}

impl Drop for HighIndexPod {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

fn run_from(prefix: &str, extra: &[&str], high_index: bool) -> Value {
    require_root();
    let lab = common::lab_up(prefix, 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let mut a = topo.pod("n1p0").expect("n1p0").clone();
    let c = topo.pod("n2p0").expect("n2p0").clone();
    let _extra_pod = high_index.then(|| {
        let node1 = &topo.node("node1").expect("node1").netns;
        let pod = HighIndexPod::add(node1, prefix);
        (a.netns, a.ip) = (pod.netns.clone(), pod.ip);
        pod
    });
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        format!("host {} and icmp", a.ip),
        "--output".into(),
        "json".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let tracer = Tracer::start_cmd("stats", &args);
    let out = lab::exec_in(
        &a.netns,
        &[
            "ping",
            "-q",
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.05",
            &c.ip.to_string(),
        ],
    )
    .expect("ping");
    assert!(
        out.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.traces().is_empty(),
        "stats mode prints no per-packet lines"
    );
    let stats = out
        .json_lines()
        .into_iter()
        .rev()
        .find_map(|v| v.get("stats").cloned())
        .unwrap_or_else(|| panic!("no stats line in:\n{}", out.stdout));
    lab.down().expect("lab down");
    stats
}

fn check_segments(stats: &Value, min_count: u64) {
    assert_eq!(stats["clock"], "shared-kernel", "{stats}");
    let segs = &stats["total"]["segments"];
    let mut total_p50 = 0;
    let mut largest_part_p50 = 0;
    for name in SEGMENTS {
        let s = &segs[name];
        let count = s["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("segment {name} missing: {stats}"));
        // Echo requests and replies both cross the path.
        assert!(count >= min_count, "{name}: {count} < {min_count}: {stats}");
        let vals: Vec<u64> = ["min_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "max_ns"]
            .iter()
            .map(|k| s[*k].as_u64().unwrap_or_else(|| panic!("{name}.{k}: {s}")))
            .collect();
        assert!(vals[0] > 0, "{name}: min must be > 0: {s}");
        assert!(
            vals.windows(2).all(|w| w[0] <= w[1]),
            "{name}: percentiles not monotone: {s}"
        );
        assert!(
            vals[5] < 1_000_000_000,
            "{name}: max over a second is implausible: {s}"
        );
        if name == "total" {
            total_p50 = vals[1];
        } else {
            largest_part_p50 = largest_part_p50.max(vals[1]);
        }
    }
    assert!(
        total_p50 >= largest_part_p50,
        "the whole path is shorter than a part: {stats}"
    );
}

#[test]
fn user_space_stats_cover_every_vxlan_segment() {
    let stats = run("ts-us", &[]);
    check_segments(&stats, 2 * PINGS);
    let flows = stats["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 2, "request and reply flows: {stats}");
}

#[test]
fn kernel_aggregation_covers_every_vxlan_segment() {
    let stats = run("ts-ka", &["--kernel-agg"]);
    check_segments(&stats, 2 * PINGS);
}

/// The same with the sending pod's veth above the role array: its role comes from the hash
/// map, so node-tx (which starts at a pod veth) is still measured.
#[test]
fn kernel_aggregation_with_a_pod_veth_above_the_role_array() {
    let stats = run_from("ts-kh", &["--kernel-agg"], true);
    check_segments(&stats, 2 * PINGS);
}
