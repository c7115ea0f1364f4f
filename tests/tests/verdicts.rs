//! Every lab fault found, located and explained: for each fault of the catalogue
//! (`lab::faults::catalogue`) in each encapsulation it applies to, break the lab, send the
//! fault's probe while the tracer runs, and check the probe's trace against the catalogue's
//! [`lab::TracerReport`]: outcome, the drop's node, device, reason and function, and the verdict
//! name. Then heal, and check the same probe is delivered. A fault without a report fails,
//! printing what the tracer reported (the values to declare); every fault runs to its end and
//! one failure lists them all.
//!
//! The route-lookup tracepoint has no namespace and every lab uses the same addresses, so the
//! cases run one at a time (a lock), not in parallel: each case sees only its own traffic.

mod common;

use std::{
    net::Ipv4Addr,
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{require_root, Tracer};
use lab::{Encap, Fault, Topology};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn ip_of(v: &Value) -> Ipv4Addr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// Runs the probe under the tracer; returns the traces of probe packets (from -> to).
fn traced_probe(
    topo: &Topology,
    fault: Fault,
    wait: Duration,
    extra: &[&str],
) -> (Vec<Value>, common::TracerOutput) {
    let probe = fault.probe(topo).expect("probe");
    let from_ip = lab::services::probe::sender_ip(topo, &probe.from_pod).expect("probe sender");
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        // Through NAT the answer may come from another address (asymmetric SNAT).
        if fault.needs_services() {
            format!("host {from_ip}")
        } else {
            format!("host {from_ip} and host {}", probe.to)
        },
        "--output".into(),
        "json".into(),
        "--linger-ms".into(),
        "100".into(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let tracer = Tracer::start(&args);
    let started = Instant::now();
    let _ = probe
        .run(topo, Duration::from_millis(500))
        .expect("probe runs");
    // Drops after a neighbour timeout come about 3 s after the packet.
    if let Some(rest) = wait.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let out = tracer.stop();
    assert!(
        out.status.success(),
        "tracer failed: {}\n{}",
        out.status,
        out.stderr
    );
    let traces = out
        .traces()
        .into_iter()
        .filter(|t| {
            let (src, dst) = (ip_of(&t["packet"]["src"]), ip_of(&t["packet"]["dst"]));
            // Through NAT, answers come back to the sender from wherever; an ICMP error a
            // node sends about a UDP or TCP probe (host unreachable) is no answer.
            let answer = fault.needs_services()
                && (dst == from_ip || un_natted_to(t, from_ip))
                && t["packet"]["proto"].as_str() == Some(probe.proto.as_str());
            (src == from_ip && dst == probe.to) || answer
        })
        .collect();
    (traces, out)
}

/// Whether one of the trace's NAT steps turned its destination into `ip` (an answer to a
/// masqueraded request, traced under the address it came back to: the node's).
fn un_natted_to(t: &Value, ip: Ipv4Addr) -> bool {
    t["nat"]
        .as_array()
        .is_some_and(|steps| steps.iter().any(|s| ip_of(&s["to"]["dst"]) == ip))
}

/// The catalogue entry a dropped trace would need: `traced(...)` as written in the catalogue.
fn observed(topo: &Topology, encap: Encap, probe_cali: &str, t: &Value) -> String {
    let d = &t["drop"];
    let netns = d["node"].as_str().unwrap_or("?");
    let pod = topo.pods.iter().find(|p| p.netns == netns);
    let node = topo
        .nodes
        .iter()
        .find(|n| n.netns == netns || pod.is_some_and(|p| p.node == n.name))
        .map_or(netns, |n| n.name.as_str());
    let device = match d["ifname"].as_str().unwrap_or("?") {
        _ if pod.is_some() => "pod",
        dev if dev == probe_cali => "cali",
        dev => dev,
    };
    let function = d["function"].as_str().unwrap_or("?");
    let function = function.split('+').next().unwrap_or(function);
    format!(
        "traced(Encap::{encap:?}, {node:?}, {device:?}, ({:?}, {function:?}), {:?})",
        d["reason"].as_str().unwrap_or("?"),
        t["verdict"]["name"].as_str().unwrap_or("?")
    )
}

/// Breaks a fresh lab `prefix` of `encap` with `fault`, traces the probe (the tracer gets
/// `extra` arguments) and checks it against the catalogue; heals and checks delivery.
fn check(fault: Fault, encap: Encap, prefix: &str, extra: &[&str]) {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up_for(prefix, fault, encap);
    let topo = lab.topology().clone();
    let info = lab::break_lab(&topo, fault).expect("break");
    let delayed = info.expected_drops.iter().any(|d| d.delayed);
    let wait = if delayed {
        Duration::from_millis(4800)
    } else {
        Duration::from_millis(800)
    };
    let (traces, out) = traced_probe(&topo, fault, wait, extra);
    let what = format!("{} ({:?}): {}", fault.name(), encap, info.description);
    let want = fault.tracer_report(encap).map_or("dropped", |x| x.outcome);
    let dropped: Vec<&Value> = traces
        .iter()
        .filter(|t| t["outcome"] == want && (want == "dropped" || !t["verdict"].is_null()))
        .collect();
    assert!(
        !dropped.is_empty(),
        "{what}: no {want} probe trace in\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let t = dropped[0];
    let cali = topo
        .pod(&info.probe.from_pod)
        .map_or_else(String::new, |p| p.cali.clone());
    let Some(x) = fault.tracer_report(encap) else {
        panic!(
            "{what}: the catalogue has no tracer report for {encap}; the tracer reported {}\n\
             in {t}",
            observed(&topo, encap, &cali, t)
        );
    };
    if x.outcome != "dropped" {
        check_not_dropped(t, x, &what);
        lab::heal(&topo, fault).expect("heal");
        check_healed(&topo, fault, extra, &what);
        lab.down().expect("lab down");
        return;
    }
    let d = &t["drop"];
    let node = topo.node(x.node).expect("node");
    let probe_pod = topo.pod(&info.probe.from_pod).expect("pod");
    // A drop in the probe pod's namespace ("pod") is named after that namespace.
    let netns = match x.device {
        "pod" => probe_pod.netns.as_str(),
        _ => node.netns.as_str(),
    };
    assert_eq!(d["node"], netns, "{what}: drop node in {t}");
    let device = match x.device {
        "cali" => cali,
        "pod" => probe_pod.ifname.clone(),
        other => other.to_string(),
    };
    assert_eq!(d["ifname"], device.as_str(), "{what}: drop device in {t}");
    assert_eq!(d["reason"], x.reason, "{what}: reason in {t}");
    let function = d["function"].as_str().expect("function");
    assert!(
        function.starts_with(x.function),
        "{what}: function {function}, expected {}",
        x.function
    );
    assert_eq!(t["verdict"]["name"], x.verdict, "{what}: verdict in {t}");
    let explanation = t["verdict"]["explanation"].as_str().expect("explanation");
    assert!(
        explanation.len() > 80,
        "{what}: explanation too thin: {explanation}"
    );
    // No probe trace may claim delivery while the fault is active.
    assert!(
        traces.iter().all(|t| t["outcome"] != "delivered"),
        "{what}: a probe was delivered despite the fault: {traces:?}"
    );

    lab::heal(&topo, fault).expect("heal");
    check_healed(&topo, fault, extra, &what);
    lab.down().expect("lab down");
}

/// A probe trace that is not dropped (lost: its reply never came back; or the reply's own
/// trace): its outcome and verdict as the catalogue declares them.
fn check_not_dropped(t: &Value, x: &lab::TracerReport, what: &str) {
    assert_eq!(t["outcome"], x.outcome, "{what}: outcome in {t}");
    assert_eq!(t["verdict"]["name"], x.verdict, "{what}: verdict in {t}");
    let explanation = t["verdict"]["explanation"].as_str().expect("explanation");
    assert!(
        explanation.len() > 80,
        "{what}: explanation too thin: {explanation}"
    );
}

/// After heal the same probe is delivered, with no verdict.
fn check_healed(topo: &Topology, fault: Fault, extra: &[&str], what: &str) {
    let (traces, out) = traced_probe(topo, fault, Duration::from_millis(800), extra);
    assert!(
        !traces.is_empty(),
        "{what}: no probe trace after heal:\n{}",
        out.stdout
    );
    // The machine outside the cluster is not traced: a packet to it (a request masqueraded
    // by natOutgoing, a NodePort's reply) leaves node1's uplink and is seen no more; healed,
    // its flow is answered, so it is `incomplete` (it left the traced nodes and the path
    // works), with no verdict.
    let outside = topo.services.as_ref().map(|s| s.outside.ip);
    assert!(
        traces.iter().any(|t| t["outcome"] == "delivered"),
        "{what}: nothing delivered after heal: {traces:?}"
    );
    for t in &traces {
        let to_outside = outside.is_some_and(|o| {
            let after_nat = t["nat"]
                .as_array()
                .and_then(|n| n.last())
                .map(|s| ip_of(&s["to"]["dst"]));
            after_nat.unwrap_or_else(|| ip_of(&t["packet"]["dst"])) == o
        });
        if to_outside && t["outcome"] == "incomplete" && t["verdict"].is_null() {
            continue;
        }
        assert!(
            t["outcome"] == "delivered" && t["verdict"].is_null(),
            "{what}: after heal every probe must be delivered: {traces:?}"
        );
    }
}

/// Every fault of the catalogue, in every encapsulation it applies to, one after the other.
#[test]
fn every_fault_found_located_and_explained() {
    require_root();
    let cases = common::fault_cases("tv");
    common::each_case(&cases, 1, |prefix, &(fault, encap)| {
        check(fault, encap, prefix, &[]);
    });
}

use Encap::Vxlan;
use Fault::*;

/// A healthy lab under load: every traced packet is delivered, no trace carries a verdict.
#[test]
fn healthy_lab_under_load_has_no_fault_verdicts() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tv-ok", 2, Encap::Vxlan);
    let topo = lab.topology().clone();
    let (a, b, c) = (
        topo.pod("n1p0").expect("n1p0").clone(),
        topo.pod("n1p1").expect("n1p1").clone(),
        topo.pod("n2p0").expect("n2p0").clone(),
    );
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        "net 10.244.0.0/16".into(),
        "--output".into(),
        "json".into(),
    ]);
    let tracer = Tracer::start(&args);
    // iperf3 TCP for 2 s at a rate the tracer follows packet by packet, plus pings and small
    // TCP/UDP exchanges, across nodes and on one node.
    let server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.netns,
            "iperf3",
            "-s",
            "-1",
            "-B",
            &c.ip.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 (installed by `cargo xtask setup`)");
    let mut server = scopeguard(server);
    std::thread::sleep(Duration::from_millis(300));
    let client = lab::exec_in(
        &a.netns,
        &[
            "iperf3",
            "-c",
            &c.ip.to_string(),
            "-t",
            "2",
            "-b",
            "100M",
            "-l",
            "16K",
        ],
    )
    .expect("iperf3 client");
    assert!(
        client.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&client.stderr)
    );
    for port in 9000..9010 {
        lab::traffic::tcp_exchange(&c.netns, c.ip, port, &a.netns, &[7u8; 4000]).expect("tcp");
        lab::traffic::udp_exchange(&b.netns, b.ip, port, &a.netns, b"udp").expect("udp");
    }
    lab::traffic::ping(&a.netns, c.ip, 5, true).expect("ping");
    let _ = server.0.wait();
    std::thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let summary = out.summary();
    assert_eq!(
        summary["lost_events"], 0,
        "the tracer lost events: {summary}"
    );
    let traces = out.traces();
    assert!(
        traces.len() > 1000,
        "expected a loaded run, got {} traces",
        traces.len()
    );
    let bad: Vec<&Value> = traces
        .iter()
        .filter(|t| !t["verdict"].is_null() || t["outcome"] == "dropped" || t["outcome"] == "lost")
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} traces with a fault: {:?}",
        bad.len(),
        traces.len(),
        &bad[..bad.len().min(3)]
    );
    lab.down().expect("lab down");
}

/// Kills a child process on drop.
struct ChildGuard(std::process::Child);

fn scopeguard(c: std::process::Child) -> ChildGuard {
    ChildGuard(c)
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The classic skb/kfree_skb tracepoint (what kernels without tp_btf get) finds the same drop.
#[test]
fn missing_fdb_with_the_classic_drop_tracepoint() {
    check(MissingFdb, Vxlan, "tv-tp", &["--drop-hook", "tracepoint"]);
}

/// `tracer diagnose` sends its probes from the named pod, traces them and gives one verdict;
/// after the heal it reports delivery and no verdict.
#[test]
fn diagnose_names_the_fault_and_then_its_absence() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tv-dg", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let a = topo.pod("n1p0").expect("n1p0").clone();
    let c = topo.pod("n2p0").expect("n2p0").clone();
    let diagnose = || common::diagnose(&topo, &a, c.ip, &[]);
    lab::break_lab(&topo, MissingFdb).expect("break");
    let d = diagnose();
    assert_eq!(d["verdict"]["name"], "no-vxlan-fdb", "{d}");
    assert_eq!(d["probes"], 3, "{d}");
    assert_eq!(d["dropped"], 3, "{d}");
    assert_eq!(d["failed"], "request", "{d}");
    lab::heal(&topo, MissingFdb).expect("heal");
    let d = diagnose();
    assert!(d["verdict"].is_null(), "{d}");
    assert_eq!(d["delivered"], 3, "{d}");
    assert_eq!(d["failed"], "none", "{d}");

    // Only the answers die (a host rule on the asking pod's node drops echo replies toward
    // its pods): the requests get through, the REPLY direction is the one that fails, and
    // the rule whose counter moved is named.
    let n1 = &topo.node("node1").expect("node1").netns;
    let nft = |cmd: &str| {
        let out = lab::exec_in(n1, &["nft", cmd]).expect("nft");
        assert!(
            out.status.success(),
            "nft {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    nft("add table ip tv_reply; add chain ip tv_reply replies { type filter hook forward priority filter; }; \
         add rule ip tv_reply replies icmp type echo-reply counter drop");
    let d = diagnose();
    nft("delete table ip tv_reply");
    assert_eq!(d["delivered"], 3, "{d}");
    assert_eq!(d["replies"]["dropped"], 3, "{d}");
    assert_eq!(d["failed"], "reply", "{d}");
    assert!(
        d["failed_at"].as_str().is_some_and(|s| s.contains("node1")),
        "{d}"
    );
    assert_eq!(d["verdict"]["name"], "firewall-drop", "{d}");
    assert!(
        d["verdict"]["explanation"]
            .as_str()
            .is_some_and(|e| e.contains("table ip tv_reply chain replies")),
        "{d}"
    );
    lab.down().expect("lab down");
}

/// Both route-lookup hooks show the lookup that sent the probe to the unreachable default
/// gateway (the encap-never incident); tp_btf also says on which node it was made, and shows no
/// gateway for a directly connected route (the classic record leaves that field stale).
#[test]
fn route_lookups_from_both_fib_hooks() {
    require_root();
    for (hook, prefix, attached) in [
        ("btf", "tv-rb", "routes: tp_btf/fib_table_lookup"),
        (
            "tracepoint",
            "tv-rt",
            "routes: tracepoint fib/fib_table_lookup",
        ),
    ] {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let lab = common::lab_up(prefix, 1, Vxlan);
        let topo = lab.topology().clone();
        let info = lab::break_lab(&topo, EncapNever).expect("break");
        let (traces, out) = traced_probe(
            &topo,
            EncapNever,
            Duration::from_millis(4800),
            &["--fib-hook", hook],
        );
        assert!(out.stderr.contains(attached), "{hook}: {}", out.stderr);
        let node1 = topo.node("node1").expect("node1");
        let routes: Vec<&Value> = traces
            .iter()
            .flat_map(|t| t["routes"].as_array().into_iter().flatten())
            .collect();
        let default = routes.iter().find(|r| {
            r["dst"] == info.probe.to.to_string()
                && r["dev"] == node1.uplink.as_str()
                && r["gw"] == "10.10.0.254"
                && r["err"] == 0
        });
        let default =
            default.unwrap_or_else(|| panic!("{hook}: no default-route lookup in {routes:?}"));
        match hook {
            "btf" => assert_eq!(default["node"], node1.netns.as_str(), "{default}"),
            _ => assert!(default["node"].is_null(), "{default}"),
        }
        lab::heal(&topo, EncapNever).expect("heal");
        if hook == "btf" {
            // Healed: the receiving node's lookup for the pod is a connected route, no gateway.
            let (traces, _) = traced_probe(
                &topo,
                EncapNever,
                Duration::from_millis(800),
                &["--fib-hook", hook],
            );
            let node2 = topo.node("node2").expect("node2");
            let local = traces
                .iter()
                .flat_map(|t| t["routes"].as_array().into_iter().flatten())
                .find(|r| r["node"] == node2.netns.as_str())
                .unwrap_or_else(|| panic!("no lookup on node2 in {traces:?}"));
            assert!(
                local["dev"].as_str().unwrap_or("").starts_with("cali"),
                "{local}"
            );
            assert!(local["gw"].is_null(), "{local}");
        }
        lab.down().expect("lab down");
    }
}
