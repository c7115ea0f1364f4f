//! End-to-end: the tracer on a two-node lab traces ICMP, TCP and UDP between pods, in both
//! directions, with the exact hop sequence for VXLAN and for native routing; traffic outside
//! the filter is not reported; a same-node pair gives a two-hop trace. Everything is torn down
//! by RAII guards, also when an assertion fails.

mod common;

use std::net::Ipv4Addr;

use common::{hop_path, require_root, Tracer};
use lab::{traffic, Encap, Pod, Topology};
use serde_json::Value;

type Path = Vec<(String, String, String)>;

fn hop(node: &str, ifname: &str, dir: &str) -> (String, String, String) {
    (node.to_string(), ifname.to_string(), dir.to_string())
}

/// The hops a packet from `src` to `dst` (pods on different nodes) must show.
fn cross_node_path(topo: &Topology, src: &Pod, dst: &Pod) -> Path {
    let sn = topo.node(&src.node).expect("src node");
    let dn = topo.node(&dst.node).expect("dst node");
    match topo.encap {
        Encap::Vxlan | Encap::Ipip => {
            let tunnel = if topo.encap == Encap::Vxlan {
                "vxlan.calico"
            } else {
                "tunl0"
            };
            vec![
                hop(&sn.netns, &src.cali, "ingress"),
                hop(&sn.netns, tunnel, "egress"),
                hop(&sn.netns, &sn.uplink, "egress"),
                hop(&dn.netns, &dn.uplink, "ingress"),
                hop(&dn.netns, tunnel, "ingress"),
                hop(&dn.netns, &dst.cali, "egress"),
            ]
        }
        Encap::None => vec![
            hop(&sn.netns, &src.cali, "ingress"),
            hop(&sn.netns, &sn.uplink, "egress"),
            hop(&dn.netns, &dn.uplink, "ingress"),
            hop(&dn.netns, &dst.cali, "egress"),
        ],
    }
}

fn same_node_path(topo: &Topology, src: &Pod, dst: &Pod) -> Path {
    let n = topo.node(&src.node).expect("node");
    vec![
        hop(&n.netns, &src.cali, "ingress"),
        hop(&n.netns, &dst.cali, "egress"),
    ]
}

fn ip_of(v: &Value) -> Ipv4Addr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// Traces of packets from `src` to `dst` with protocol `proto` (and optional dport / sport).
fn select<'a>(
    traces: &'a [Value],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: &str,
    port: Option<(&str, u16)>,
) -> Vec<&'a Value> {
    traces
        .iter()
        .filter(|t| {
            let p = &t["packet"];
            ip_of(&p["src"]) == src
                && ip_of(&p["dst"]) == dst
                && p["proto"] == proto
                && port.is_none_or(|(k, n)| p[k].as_u64() == Some(n as u64))
        })
        .collect()
}

/// Every selected trace must exist, be delivered and show exactly `want`; encapsulated hops
/// must carry the VXLAN outer header between the two nodes.
fn assert_paths(what: &str, traces: &[&Value], want: &Path, topo: &Topology, src: &Pod, dst: &Pod) {
    assert!(!traces.is_empty(), "{what}: no trace found");
    let sn = topo.node(&src.node).expect("src node");
    let dn = topo.node(&dst.node).expect("dst node");
    for t in traces {
        assert_eq!(&hop_path(t), want, "{what}: hop sequence of {t}");
        assert_eq!(t["outcome"], "delivered", "{what}: outcome of {t}");
        let hops = t["hops"].as_array().expect("hops");
        let mut last = 0;
        for h in hops {
            let ts = h["ts_ns"].as_u64().expect("ts_ns");
            assert!(ts >= last, "{what}: hops out of time order in {t}");
            last = ts;
            let on_uplink = h["ifname"] == sn.uplink.as_str() || h["ifname"] == dn.uplink.as_str();
            let crosses = src.node != dst.node;
            match (&topo.encap, on_uplink && crosses) {
                (Encap::Vxlan, true) => {
                    let e = &h["encap"];
                    assert_eq!(e["type"], "vxlan", "{what}: encap of {h}");
                    assert_eq!(e["vni"], topo.vni, "{what}: VNI of {h}");
                    assert_eq!(ip_of(&e["outer_src"]), sn.ip, "{what}: outer src of {h}");
                    assert_eq!(ip_of(&e["outer_dst"]), dn.ip, "{what}: outer dst of {h}");
                    assert_eq!(
                        e["outer_dport"], topo.vxlan_port,
                        "{what}: outer dport of {h}"
                    );
                    assert!(
                        e["outer_sport"].as_u64().is_some_and(|p| p > 0),
                        "{what}: outer sport of {h}"
                    );
                }
                _ => assert!(h["encap"].is_null(), "{what}: unexpected encap on {h}"),
            }
        }
    }
}

/// `--netns` for every node, `--filter FILTER`, JSON output, a short linger.
fn json_args(topo: &Topology, filter: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        filter.into(),
        "--output".into(),
        "json".into(),
    ]);
    args.extend(["--linger-ms".into(), "100".into()]);
    args
}

fn run_suite(encap: Encap, prefix: &str) {
    require_root();
    let lab = common::lab_up(prefix, 2, encap);
    let topo = lab.topology().clone();
    let pod = |n: &str| topo.pod(n).cloned().expect("pod");
    let (a, b, c, d) = (pod("n1p0"), pod("n1p1"), pod("n2p0"), pod("n2p1"));

    let tracer = Tracer::start(&json_args(&topo, &format!("host {}", a.ip)));

    traffic::ping(&a.netns, c.ip, 1, true).expect("ping across nodes");
    let tcp = traffic::tcp_exchange(&c.netns, c.ip, 8080, &a.netns, b"hello").expect("tcp");
    let udp = traffic::udp_exchange(&c.netns, c.ip, 5353, &a.netns, b"datagram").expect("udp");
    traffic::ping(&b.netns, d.ip, 1, true).expect("ping outside the filter");
    traffic::ping(&a.netns, b.ip, 1, true).expect("ping on the same node");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tracer.stop();
    assert!(
        out.status.success(),
        "tracer failed: {}\n{}",
        out.status,
        out.stderr
    );
    let traces = out.traces();

    let fwd = cross_node_path(&topo, &a, &c);
    let rev = cross_node_path(&topo, &c, &a);
    let icmp_req = select(&traces, a.ip, c.ip, "icmp", None);
    let icmp_rep = select(&traces, c.ip, a.ip, "icmp", None);
    assert_paths("ICMP echo request", &icmp_req, &fwd, &topo, &a, &c);
    assert_paths("ICMP echo reply", &icmp_rep, &rev, &topo, &c, &a);
    assert_eq!(icmp_req.len(), 1, "one echo request: {icmp_req:?}");
    assert_eq!(icmp_req[0]["packet"]["icmp_seq"], 1);

    let tcp_fwd = select(&traces, a.ip, c.ip, "tcp", Some(("dport", 8080)));
    let tcp_rev = select(&traces, c.ip, a.ip, "tcp", Some(("sport", 8080)));
    assert_paths("TCP client->server", &tcp_fwd, &fwd, &topo, &a, &c);
    assert_paths("TCP server->client", &tcp_rev, &rev, &topo, &c, &a);
    assert!(
        tcp_fwd
            .iter()
            .all(|t| t["packet"]["sport"] == tcp.client.port()),
        "TCP traces carry the client's port {}",
        tcp.client.port()
    );
    // SYN, data, FIN and ACKs: a connection is several packets each way.
    assert!(
        tcp_fwd.len() >= 3 && tcp_rev.len() >= 2,
        "TCP packets: {} fwd, {} rev",
        tcp_fwd.len(),
        tcp_rev.len()
    );

    let udp_fwd = select(&traces, a.ip, c.ip, "udp", Some(("dport", 5353)));
    let udp_rev = select(&traces, c.ip, a.ip, "udp", Some(("sport", 5353)));
    assert_paths("UDP request", &udp_fwd, &fwd, &topo, &a, &c);
    assert_paths("UDP reply", &udp_rev, &rev, &topo, &c, &a);
    assert_eq!(udp_fwd.len(), 1);
    assert_eq!(udp_fwd[0]["packet"]["sport"], udp.client.port());

    let same_req = select(&traces, a.ip, b.ip, "icmp", None);
    let same_rep = select(&traces, b.ip, a.ip, "icmp", None);
    assert_paths(
        "same-node request",
        &same_req,
        &same_node_path(&topo, &a, &b),
        &topo,
        &a,
        &b,
    );
    assert_paths(
        "same-node reply",
        &same_rep,
        &same_node_path(&topo, &b, &a),
        &topo,
        &b,
        &a,
    );

    for t in &traces {
        let p = &t["packet"];
        let ends = [ip_of(&p["src"]), ip_of(&p["dst"])];
        assert!(
            ends.contains(&a.ip),
            "a trace outside the filter was reported: {t}"
        );
        assert!(
            !ends.contains(&d.ip),
            "traffic between {} and {} was reported: {t}",
            b.name,
            d.name
        );
    }
    let summary = out.summary();
    assert_eq!(
        summary["lost_events"], 0,
        "the tracer lost events: {summary}"
    );
    assert_eq!(summary["decode_errors"], 0, "{summary}");

    healthy_under_load(&topo, &a, &c);
    lab.down().expect("lab down");
}

/// A healthy lab under load (iperf3 TCP and UDP across the nodes, 100 Mbit/s for a second each) gives
/// no fault verdict: no trace is dropped or lost (packets the tracer could not follow because
/// it lost events are `incomplete`, never a fault).
fn healthy_under_load(topo: &Topology, a: &Pod, c: &Pod) {
    // `stats` correlates every packet as `trace` does and prints only the summary (parsing
    // tens of thousands of trace lines would be most of this test's time).
    let tracer = Tracer::start_cmd(
        "stats",
        &json_args(topo, &format!("host {} and host {}", a.ip, c.ip)),
    );
    for udp in [false, true] {
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &c.netns, "iperf3", "-s", "-1", "-B"])
            .arg(c.ip.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("iperf3 server (apt install iperf3)");
        let _server = common::KillOnDrop(server);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut client = vec!["-c".to_string(), c.ip.to_string(), "-t".into(), "2".into()];
        if udp {
            client.extend([
                "-u".into(),
                "-b".into(),
                "200M".into(),
                "-l".into(),
                "1200".into(),
            ]);
        }
        let out = lab::exec_in(
            &a.netns,
            &std::iter::once("iperf3")
                .chain(client.iter().map(String::as_str))
                .collect::<Vec<_>>(),
        )
        .expect("iperf3 client");
        assert!(
            out.status.success(),
            "iperf3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let summary = out.summary();
    assert!(
        summary["dropped"] == 0 && summary["lost"] == 0,
        "a healthy lab under load got fault verdicts (dropped and lost traces): {summary}"
    );
    assert!(summary["traces"].as_u64().unwrap_or(0) > 1000, "{summary}");
}

#[test]
fn vxlan_pod_to_pod_hops() {
    run_suite(Encap::Vxlan, "tt-vx");
}

#[test]
fn native_routing_pod_to_pod_hops() {
    run_suite(Encap::None, "tt-nr");
}

/// A filter naming two pods leaves the other pods' veths unattached (they cannot see a
/// matching packet), says so at start-up, and still traces the pair across nodes.
#[test]
fn a_pair_filter_leaves_the_other_pods_veths_out() {
    require_root();
    let lab = common::lab_up("tt-pair", 2, Encap::Vxlan);
    let topo = lab.topology().clone();
    let pod = |n: &str| topo.pod(n).cloned().expect("pod");
    let (a, b, c, d) = (pod("n1p0"), pod("n1p1"), pod("n2p0"), pod("n2p1"));
    let tracer = Tracer::start(&json_args(
        &topo,
        &format!("host {} and host {}", a.ip, c.ip),
    ));
    traffic::ping(&a.netns, c.ip, 2, true).expect("ping across nodes");
    traffic::ping(&b.netns, d.ip, 1, true).expect("ping between the other pods");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    for (node, kept, left) in [("node1", &a, &b), ("node2", &c, &d)] {
        let netns = &topo.node(node).expect("node").netns;
        let line = out
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("tracer: {netns}:")))
            .unwrap_or_else(|| panic!("no start-up line for {netns}:\n{}", out.stderr));
        assert!(line.contains(&kept.cali), "{line}");
        assert!(!line.contains(&left.cali), "{line}");
        assert!(line.contains("1 pod veths left out"), "{line}");
    }
    let traces = out.traces();
    let req = select(&traces, a.ip, c.ip, "icmp", None);
    let rep = select(&traces, c.ip, a.ip, "icmp", None);
    assert_eq!((req.len(), rep.len()), (2, 2), "{}", out.stdout);
    assert_paths(
        "request",
        &req,
        &cross_node_path(&topo, &a, &c),
        &topo,
        &a,
        &c,
    );
    assert_paths(
        "reply",
        &rep,
        &cross_node_path(&topo, &c, &a),
        &topo,
        &c,
        &a,
    );
    lab.down().expect("lab down");
}
