//! Pod names (issue 15): the tracer watches a stand-in Kubernetes API server (real Pod and
//! Service JSON, lists and watch streams over HTTP, `common::apiserver`) that gives the lab's
//! pods names, and the traces carry them: JSON (`names`) and text (`10.244.x.y (ns/name)`), a
//! Service address and its endpoint through NAT, and the change when a pod is deleted and its
//! address reused by a new pod (the new pod's name from then on) or left unused (no name). An
//! API server that cannot be reached is one warning and the traces go on without names; a
//! `--kubeconfig` that cannot be read is a one-line error.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::apiserver::ApiServer;
use common::{lab_up, run_tracer, Tracer};
use lab::{exec_in, Encap};
use serde_json::{json, Value};

const SERVICE: &str = "10.96.0.10";

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tpn-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nft(netns: &str, cmd: &str) {
    let out = exec_in(netns, &["nft", cmd]).expect("nft");
    assert!(
        out.status.success(),
        "nft {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ping(from: &str, to: &str) {
    lab::traffic::ping(from, to.parse().unwrap(), 1, true).expect("ping");
}

/// `--netns` of every node, then `extra`.
fn args(t: &lab::Topology, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    for n in &t.nodes {
        a.extend(["--netns".into(), n.netns.clone()]);
    }
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// The traces from `src` to `dst`, in the order they were printed.
fn between<'a>(traces: &'a [Value], src: &str, dst: &str) -> Vec<&'a Value> {
    traces
        .iter()
        .filter(|t| t["packet"]["src"] == src && t["packet"]["dst"] == dst)
        .collect()
}

fn pod(ns: &str, name: &str, node: &str) -> Value {
    json!({"kind": "pod", "namespace": ns, "name": name, "node": node})
}

#[test]
fn traces_carry_pod_and_service_names_and_follow_the_cluster() {
    let lab = lab_up("tpn", 2, Encap::Vxlan);
    let t = lab.topology().clone();
    let (a, c, d) = (
        t.pod("n1p0").unwrap().clone(),
        t.pod("n2p0").unwrap().clone(),
        t.pod("n2p1").unwrap().clone(),
    );
    let (n1, n2) = (
        t.node("node1").unwrap().netns.clone(),
        t.node("node2").unwrap().netns.clone(),
    );
    let (a_ip, c_ip, d_ip) = (a.ip.to_string(), c.ip.to_string(), d.ip.to_string());
    // A Service address DNATed to pod c on node1, as kube-proxy's rules would.
    nft(
        &n1,
        &format!(
            "add table ip tpn; add chain ip tpn pre {{ type nat hook prerouting priority dstnat; }}; \
             add rule ip tpn pre ip daddr {SERVICE} dnat to {c_ip}"
        ),
    );
    let api = ApiServer::start();
    let scratch = Scratch::new("names");
    let kubeconfig = api.kubeconfig(&scratch.0);
    let kc = kubeconfig.to_str().unwrap();
    api.add_pod(
        "shop",
        "web-a",
        "uid-web-a",
        &a_ip,
        &n1,
        "2026-11-30T10:00:00Z",
    );
    api.add_pod(
        "shop",
        "db-a",
        "uid-db-a",
        &c_ip,
        &n2,
        "2026-11-30T10:00:00Z",
    );
    api.add_pod(
        "shop",
        "cache-old",
        "uid-cache",
        &d_ip,
        &n2,
        "2026-11-30T10:00:00Z",
    );
    api.add_service("shop", "db", "uid-svc-db", SERVICE);

    // JSON, and the cluster changing under the tracer.
    let tracer = Tracer::start(&args(
        &t,
        &["--output", "json", "--linger-ms", "100", "--kubeconfig", kc],
    ));
    assert!(
        api.wait_watched(Duration::from_secs(10)),
        "the tracer lists and watches pods and services: {:#?}",
        api.requests()
    );
    ping(&a.netns, &c_ip);
    ping(&a.netns, &d_ip);
    ping(&a.netns, SERVICE);
    std::thread::sleep(Duration::from_millis(400));
    // db-a deleted and its address given to db-b; cache-old deleted, its address unused.
    api.delete_pod("uid-db-a");
    api.add_pod(
        "shop",
        "db-b",
        "uid-db-b",
        &c_ip,
        &n2,
        "2026-11-30T10:05:00Z",
    );
    api.delete_pod("uid-cache");
    std::thread::sleep(Duration::from_millis(400));
    ping(&a.netns, &c_ip);
    ping(&a.netns, &d_ip);
    std::thread::sleep(Duration::from_millis(400));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        !out.stderr.contains("pod names:"),
        "nothing to say about names when the API server answers: {}",
        out.stderr
    );
    let traces = out.traces();

    let to_c = between(&traces, &a_ip, &c_ip);
    assert_eq!(to_c.len(), 2, "two requests to pod c: {traces:#?}");
    assert_eq!(
        to_c[0]["names"][&a_ip],
        pod("shop", "web-a", &n1),
        "{}",
        to_c[0]
    );
    assert_eq!(
        to_c[0]["names"][&c_ip],
        pod("shop", "db-a", &n2),
        "{}",
        to_c[0]
    );
    assert_eq!(
        to_c[1]["names"][&c_ip],
        pod("shop", "db-b", &n2),
        "the address's new pod: {}",
        to_c[1]
    );
    // The replies to the pings of pod c (the Service's reply, un-DNATed, aside).
    let replies: Vec<&Value> = between(&traces, &c_ip, &a_ip)
        .into_iter()
        .filter(|r| r.get("nat").is_none())
        .collect();
    assert_eq!(replies.len(), 2, "{traces:#?}");
    assert_eq!(replies[0]["names"][&c_ip]["name"], "db-a");
    assert_eq!(replies[1]["names"][&c_ip]["name"], "db-b");

    let to_d = between(&traces, &a_ip, &d_ip);
    assert_eq!(to_d.len(), 2, "{traces:#?}");
    assert_eq!(to_d[0]["names"][&d_ip], pod("shop", "cache-old", &n2));
    assert!(
        to_d[1]["names"].get(&d_ip).is_none(),
        "a deleted pod's unused address has no name: {}",
        to_d[1]
    );
    assert_eq!(to_d[1]["names"][&a_ip]["name"], "web-a");

    let to_svc = between(&traces, &a_ip, SERVICE);
    assert_eq!(to_svc.len(), 1, "{traces:#?}");
    let s = to_svc[0];
    assert_eq!(
        s["names"][SERVICE],
        json!({"kind": "service", "namespace": "shop", "name": "db", "node": null}),
        "{s}"
    );
    assert_eq!(s["nat"][0]["to"]["dst"], c_ip.as_str(), "{s}");
    assert_eq!(
        s["names"][&c_ip]["name"], "db-a",
        "the endpoint the Service was translated to: {s}"
    );

    // Text: the header line names both ends (the cluster as it is now).
    let tracer = Tracer::start(&args(&t, &["--linger-ms", "100", "--kubeconfig", kc]));
    assert!(api.wait_watched(Duration::from_secs(10)));
    ping(&a.netns, &c_ip);
    std::thread::sleep(Duration::from_millis(400));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let header = format!("ICMP {a_ip} (shop/web-a) > {c_ip} (shop/db-b) echo id");
    assert!(
        out.stdout.lines().any(|l| l.starts_with(&header)),
        "no `{header}...` in\n{}",
        out.stdout
    );
    drop(api);

    // An API server that is not there: one warning, the traces as before, without names.
    let gone = ApiServer::start();
    let port = gone.port;
    let unreachable = gone.kubeconfig(&scratch.0);
    drop(gone);
    let started = Instant::now();
    let tracer = Tracer::start(&args(
        &t,
        &[
            "--output",
            "json",
            "--linger-ms",
            "100",
            "--kubeconfig",
            unreachable.to_str().unwrap(),
        ],
    ));
    ping(&a.netns, &c_ip);
    std::thread::sleep(Duration::from_millis(400));
    let out = tracer.stop();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", out.stderr);
    // Nothing else about it either (the kube client's own logs included).
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("pod names:") || l.to_lowercase().contains("kube"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one line about the API server: {}",
        out.stderr
    );
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        warnings[0]
    );
    let traces = out.traces();
    let to_c = between(&traces, &a_ip, &c_ip);
    assert_eq!(to_c.len(), 1, "tracing goes on: {traces:#?}");
    assert_eq!(to_c[0]["outcome"], "delivered");
    assert!(to_c[0].get("names").is_none(), "{}", to_c[0]);
    assert!(
        took < Duration::from_secs(20),
        "a refused connection holds nothing back ({took:?})"
    );

    // A kubeconfig that cannot be read: one line, before anything is attached.
    let missing = scratch.0.join("no-such-kubeconfig");
    let mut bad = vec!["trace".to_string()];
    bad.extend(args(&t, &["--kubeconfig", missing.to_str().unwrap()]));
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let out = run_tracer(&bad);
    assert!(!out.status.success());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].starts_with("tracer: --kubeconfig ") && lines[0].contains("no-such-kubeconfig"),
        "{}",
        lines[0]
    );
    lab.down().expect("lab down");
}
