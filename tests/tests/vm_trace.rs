//! The tracer on the kernels people run, across machines: two qemu guests of Debian's 6.1
//! (no tcx: clsact filters) or 6.12 (tcx), each one node of the lab with its own kernel and
//! its own clock, one `tracer record` in each, the recordings merged on the host.
//!
//! Per kernel and encapsulation (VXLAN and IPIP on a real `tunl0`): ICMP, TCP and UDP between
//! the pods of the two guests, both ways, traced hop by hop across the guests (pod veth, tunnel,
//! uplink on one; uplink, tunnel, pod veth on the other; the encapsulation probes' hops,
//! iptunnel_xmit and vxlan_rcv / ipip_rcv, in their places), every segment non-negative, the
//! offset estimated between the guests within its bound of an independent reading of their
//! clocks; then the faults, located and named from the merged recordings: the receiving
//! node's firewall drops the tunnel's packets (UDP 4789 for VXLAN, protocol 4 for IPIP), and
//! on a real tunl0 also a missing route and a tunnel MTU below the pods'. On
//! 6.1 also: a SIGKILLed tracer's clsact filters are removed by the next start.
//!
//! Needs the kernels (`cargo xtask setup --vm`, run by `cargo xtask test`) and the release
//! tracer; a test that cannot run fails saying why.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::vm::{Series, VmLab, VmSpec};
use lab::{Encap, LabSpec, Topology};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());
const T: Duration = Duration::from_secs(120);

fn tracer_bin() -> PathBuf {
    let bin = std::env::var_os("TRACER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer"));
    assert!(
        bin.exists(),
        "no release tracer at {} (run `cargo xtask build`)",
        bin.display()
    );
    bin
}

fn sh(vm: &VmLab, node: &str, cmd: &str) -> String {
    let out = vm
        .exec(node, cmd, T)
        .unwrap_or_else(|e| panic!("{node}: {e}"));
    assert!(
        out.status.success(),
        "{node}: `{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's CLOCK_MONOTONIC.
fn host_mono() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// An independent reading of `guest mono − host mono`: a clock server in the guest (`lab
/// clock --serve`) answers requests written to a directory shared with the host; the guest
/// read its clock between the host's writing the request and reading the answer: the
/// midpoint, ± half that window (the tightest of 30 round trips).
fn guest_minus_host(vm: &VmLab, node: &str) -> (i128, i128) {
    let dir = vm.shared_dir().join(format!("clock-{node}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("clock dir");
    let server = vm
        .spawn(node, &format!("exec lab clock --serve {}", dir.display()))
        .expect("clock server");
    let mut best: Option<(i128, i128)> = None;
    for seq in 1..=30u32 {
        let before = host_mono();
        std::fs::write(dir.join("req"), seq.to_string()).expect("request");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mono: i128 = loop {
            let resp = std::fs::read_to_string(dir.join("resp")).unwrap_or_default();
            let mut words = resp.split_whitespace();
            if words.next() == Some(seq.to_string().as_str()) {
                break words
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("a clock reading");
            }
            assert!(
                Instant::now() < deadline,
                "{node}: the clock server does not answer"
            );
            std::thread::sleep(Duration::from_micros(50));
        };
        let after = host_mono();
        let half = (after - before) / 2;
        let reading = (mono - (before + half), half);
        if best.is_none_or(|b| reading.1 < b.1) {
            best = Some(reading);
        }
    }
    std::fs::write(dir.join("stop"), b"").expect("stop");
    let _ = server.wait(T);
    best.expect("30 readings")
}

/// (node, ifname, dir) of each hop; with `functions`, the encapsulation probes' hops too.
fn path(t: &Value, functions: bool) -> Vec<(String, String, String)> {
    t["hops"]
        .as_array()
        .map(|hops| {
            hops.iter()
                .filter(|h| functions || h["kind"] != "function")
                .map(|h| {
                    let s = |k: &str| h[k].as_str().unwrap_or("").to_string();
                    (s("node"), s("ifname"), s("dir"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One recording in every guest while `traffic` runs; the merged JSON lines.
fn record_merged(vm: &VmLab, tag: &str, filter: &str, traffic: impl FnOnce()) -> Vec<Value> {
    let shared = vm.shared_dir().to_owned();
    let mut recorders = Vec::new();
    for node in vm.nodes() {
        let ready = shared.join(format!("{tag}-{node}.ready"));
        let file = shared.join(format!("{tag}-{node}.trec"));
        let cmd = format!(
            "exec tracer record --filter '{filter}' --write {} --ready-file {} --duration 60s",
            file.display(),
            ready.display()
        );
        recorders.push((
            node.to_string(),
            ready,
            file,
            vm.spawn(node, &cmd).expect("spawn"),
        ));
    }
    let started = Instant::now();
    for (node, ready, _, p) in &recorders {
        while !ready.exists() {
            let (_, err) = p.output_so_far();
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{node}: the recorder is not ready after 300 s:\n{err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    eprintln!(
        "{tag}: recorders ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    traffic();
    std::thread::sleep(Duration::from_millis(1500));
    let mut files = Vec::new();
    for (node, _, file, p) in recorders {
        sh(vm, &node, "pkill -INT -f 'tracer record' || true");
        let out = p.wait(T).expect("the recorder ends");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{node}: record failed:\n{err}");
        assert!(
            err.contains("\"lost_events\":0") || !err.contains("lost_events"),
            "{err}"
        );
        files.push(file);
    }
    let out = Command::new(tracer_bin())
        .arg("replay")
        .args(&files)
        .args(["--output", "json"])
        .output()
        .expect("replay");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "replay: {stderr}");
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Traffic of every protocol between the pods of the two guests, both ways.
fn traffic(vm: &VmLab, t: &Topology) {
    let (a, b) = (t.pod("n1p0").unwrap(), t.pod("n2p0").unwrap());
    sh(
        vm,
        "node1",
        &format!("ip netns exec {} ping -n -c 3 -i 0.3 {}", a.netns, b.ip),
    );
    sh(
        vm,
        "node2",
        &format!("ip netns exec {} ping -n -c 2 -i 0.3 {}", b.netns, a.ip),
    );
    let server = vm
        .spawn(
            "node2",
            &format!("exec ip netns exec {} iperf3 -s -1 -B {}", b.netns, b.ip),
        )
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(800));
    sh(
        vm,
        "node1",
        &format!(
            "ip netns exec {} iperf3 -c {} -t 1 -b 2M -l 1000",
            a.netns, b.ip
        ),
    );
    let _ = server.wait(T);
    let server = vm
        .spawn(
            "node2",
            &format!("exec ip netns exec {} iperf3 -s -1 -B {}", b.netns, b.ip),
        )
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(800));
    sh(
        vm,
        "node1",
        &format!(
            "ip netns exec {} iperf3 -c {} -u -t 1 -b 200K -l 200",
            a.netns, b.ip
        ),
    );
    let _ = server.wait(T);
}

fn check_healthy(lines: &[Value], t: &Topology, encap: Encap, offset_truth: (i128, i128)) {
    let tunnel = match encap {
        Encap::Vxlan => "vxlan.calico",
        _ => "tunl0",
    };
    let (n1, n2) = (&t.nodes[0].netns, &t.nodes[1].netns);
    let (a, b) = (t.pod("n1p0").unwrap(), t.pod("n2p0").unwrap());
    // The encapsulation probes (kprobe or fentry; both kernels have kprobes): the outer
    // header is added in iptunnel_xmit (between the tunnel's egress and the uplink's) and
    // taken off in vxlan_rcv / ipip_rcv (between the uplink's ingress and the tunnel's).
    let rcv = match encap {
        Encap::Vxlan => "vxlan_rcv",
        _ => "ipip_rcv",
    };
    let traces: Vec<&Value> = lines.iter().filter(|v| v.get("packet").is_some()).collect();
    let (mut seen, mut seen_probed) = (BTreeSet::new(), BTreeSet::new());
    for tr in &traces {
        let forward = tr["packet"]["src"] == a.ip.to_string();
        let ((tx, tx_pod), (rx, rx_pod)) = if forward {
            ((n1, &a.cali), (n2, &b.cali))
        } else {
            ((n2, &b.cali), (n1, &a.cali))
        };
        let probed = [
            (tx, tx_pod.as_str(), "ingress"),
            (tx, tunnel, "egress"),
            (tx, "iptunnel_xmit", "egress"),
            (tx, "eth0", "egress"),
            (rx, "eth0", "ingress"),
            (rx, rcv, "ingress"),
            (rx, tunnel, "ingress"),
            (rx, rx_pod.as_str(), "egress"),
        ];
        let owned = |hops: &[(&String, &str, &str)]| -> Vec<(String, String, String)> {
            hops.iter()
                .map(|(n, i, d)| (n.to_string(), i.to_string(), d.to_string()))
                .collect()
        };
        let want_probed = owned(&probed);
        let want = owned(
            &probed
                .iter()
                .filter(|(_, i, _)| !["iptunnel_xmit", rcv].contains(i))
                .copied()
                .collect::<Vec<_>>(),
        );
        let key = (
            tr["packet"]["proto"].as_str().unwrap_or("").to_string(),
            forward,
        );
        if tr["outcome"] == "delivered" {
            if path(tr, false) == want {
                seen.insert(key.clone());
            }
            if path(tr, true) == want_probed {
                seen_probed.insert(key);
            }
        }
        for s in tr["segments"].as_array().into_iter().flatten() {
            if let Some(ns) = s["ns"].as_i64() {
                assert!(ns >= 0, "negative segment {s} in {tr}");
            }
        }
    }
    for want in [
        ("icmp", true),
        ("icmp", false),
        ("tcp", true),
        ("tcp", false),
        ("udp", true),
    ] {
        assert!(
            seen.contains(&(want.0.to_string(), want.1)),
            "no delivered {} trace {} across the guests hop by hop; seen {seen:?} in {} traces",
            want.0,
            if want.1 {
                "node1 -> node2"
            } else {
                "node2 -> node1"
            },
            traces.len()
        );
        assert!(
            seen_probed.contains(&(want.0.to_string(), want.1)),
            "no delivered {} trace with the encapsulation probes' hops (iptunnel_xmit, {rcv}) \
             in place; seen {seen_probed:?}; e.g. {:?}",
            want.0,
            traces.first().map(|t| path(t, true))
        );
    }
    // The merge's estimate of node2 − node1 agrees with the independent reading.
    let clocks = lines
        .iter()
        .find_map(|v| v.get("clocks"))
        .expect("a clocks line");
    let rec = &clocks["recordings"][1];
    assert_eq!(rec["basis"], "estimated", "{clocks}");
    let est = i128::from(rec["offset_ns"].as_i64().expect("offset"));
    let err = i128::from(rec["offset_err_ns"].as_i64().expect("bounded"));
    let (truth, uncertainty) = offset_truth;
    eprintln!("offset node2 - node1: estimated {est} ± {err} ns, read {truth} ± {uncertainty} ns");
    assert!(
        (est - truth).abs() <= err + uncertainty,
        "estimated {est} ± {err} ns, independent reading {truth} ± {uncertainty} ns: {clocks}"
    );
}

/// One fault per encapsulation, applied in the guests, named from the merged recordings.
/// A fault applied in the guests: shell lines to break and heal it, the probe's ping
/// options, and where the drop must be found (device prefix) with which reason and verdict.
struct GuestFault {
    name: &'static str,
    node: &'static str,
    setup: String,
    undo: String,
    ping: &'static str,
    /// Neighbour resolution gives up about 3 s after the packet.
    wait: Duration,
    want: (&'static str, &'static str, &'static str, &'static str),
}

/// The faults of an encapsulation: the receiving node's firewall drops the tunnel's packets
/// (UDP 4789 for VXLAN, IP protocol 4 for IPIP; drop reasons exist for it from 5.17 on); for
/// IPIP on a real tunl0 also a missing route to the other node's block and a tunnel MTU below
/// the pods' (DF set).
fn guest_faults(vm: &VmLab, t: &Topology, encap: Encap) -> Vec<GuestFault> {
    let b = t.pod("n2p0").unwrap();
    let rule = match encap {
        Encap::Vxlan => "udp dport 4789 drop",
        _ => "ip protocol 4 drop",
    };
    let mut v = vec![GuestFault {
        name: "underlay-blocks-tunnel",
        node: "node2",
        setup: format!(
            "nft 'add table ip vmf; add chain ip vmf input {{ type filter hook input priority \
             filter; }}; add rule ip vmf input {rule}'"
        ),
        undo: "nft delete table ip vmf".into(),
        ping: "-c 2 -i 0.3 -W 1",
        wait: Duration::ZERO,
        want: ("node2", "eth0", "NETFILTER_DROP", "underlay-drop"),
    }];
    if encap == Encap::Ipip {
        let routes = sh(vm, "node1", &format!("ip route show match {}", b.ip));
        let route = routes
            .lines()
            .find(|l| l.contains("dev tunl0"))
            .expect("node1's route to node2's block through tunl0")
            .trim()
            .to_string();
        v.push(GuestFault {
            name: "missing-route",
            node: "node1",
            setup: format!("ip route del {route}"),
            undo: format!("ip route replace {route}"),
            ping: "-c 1 -W 1",
            wait: Duration::from_millis(3500),
            want: ("node1", "eth0", "NEIGH_FAILED", "no-route"),
        });
        v.push(GuestFault {
            name: "mtu",
            node: "node1",
            setup: "ip link set dev tunl0 mtu 1000".into(),
            undo: "ip link set dev tunl0 mtu 1480".into(),
            ping: "-c 2 -i 0.3 -W 1 -s 1200 -M do",
            wait: Duration::ZERO,
            want: ("node1", "cali", "PKT_TOO_BIG", "mtu"),
        });
    }
    v
}

/// Each fault of the encapsulation, applied in the guests, located and named from the merged
/// recordings.
fn check_faults(vm: &VmLab, t: &Topology, encap: Encap, tag: &str) {
    let (a, b) = (t.pod("n1p0").unwrap(), t.pod("n2p0").unwrap());
    for f in guest_faults(vm, t, encap) {
        let tag = format!("{tag}-{}", f.name);
        sh(vm, f.node, &f.setup);
        let filter = format!("host {} and host {}", a.ip, b.ip);
        let lines = record_merged(vm, &tag, &filter, || {
            let _ = vm.exec(
                "node1",
                &format!("ip netns exec {} ping -n {} {}", a.netns, f.ping, b.ip),
                T,
            );
            std::thread::sleep(f.wait);
        });
        sh(vm, f.node, &f.undo);
        let (node, dev, reason, verdict) = f.want;
        let netns = &t.node(node).unwrap().netns;
        let dropped: Vec<&Value> = lines
            .iter()
            .filter(|v| v["outcome"] == "dropped" && v["packet"]["src"] == a.ip.to_string())
            .collect();
        let hit = dropped.iter().any(|tr| {
            tr["drop"]["node"] == netns.as_str()
                && tr["drop"]["ifname"]
                    .as_str()
                    .is_some_and(|i| i.starts_with(dev))
                && tr["drop"]["reason"] == reason
                && tr["verdict"]["name"] == verdict
        });
        assert!(
            hit,
            "{tag}: no {reason} on {node} {dev}* with verdict {verdict} in {dropped:?}\nall: {lines:?}"
        );
    }
}

/// On 6.1 (no tcx): filters of a SIGKILLed tracer are removed by the next start.
fn check_clsact_cleanup(vm: &VmLab) {
    let p = vm
        .spawn("node1", "exec tracer trace --duration 60s")
        .expect("spawn");
    let started = Instant::now();
    while !sh(vm, "node1", "tc filter show dev eth0 ingress").contains("hop_ingress") {
        assert!(started.elapsed() < T, "the tracer did not attach");
        std::thread::sleep(Duration::from_millis(300));
    }
    sh(vm, "node1", "pkill -KILL -f 'tracer trace'");
    drop(p);
    assert!(sh(vm, "node1", "tc filter show dev eth0 ingress").contains("hop_ingress"));
    let out = sh(vm, "node1", "tracer trace --duration 1s 2>&1");
    assert!(
        out.contains("stale tc filters a killed tracer left"),
        "{out}"
    );
    let left = sh(vm, "node1", "for d in $(ls /sys/class/net); do tc filter show dev $d ingress; tc filter show dev $d egress; done 2>/dev/null");
    assert!(!left.contains("hop_"), "left after a clean exit:\n{left}");
}

fn across(series: Series, prefix: &str, encaps: [Encap; 2]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _ = tracer_bin();
    let mut spec = VmSpec::new(
        series,
        LabSpec {
            prefix: prefix.into(),
            nodes: 2,
            pods_per_node: 1,
            encap: encaps[0],
            services: None,
        },
    );
    spec.lab_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_lab")));
    let vm = VmLab::boot(&spec).unwrap_or_else(|e| panic!("boot {series}: {e}"));
    let lab_bin = env!("CARGO_BIN_EXE_lab");
    for (k, encap) in encaps.into_iter().enumerate() {
        let mut lab = spec.lab.clone();
        lab.encap = encap;
        if k > 0 {
            for (i, node) in vm.nodes().into_iter().enumerate() {
                sh(&vm, node, &format!("{lab_bin} down --prefix {prefix}"));
                let args = lab::cli::up_node_args(&lab, i + 1).join(" ");
                sh(&vm, node, &format!("{lab_bin} {args}"));
            }
        }
        let t = lab.plan().unwrap();
        let tag = format!("{prefix}-{encap}");
        let (d1, u1) = guest_minus_host(&vm, "node1");
        let (d2, u2) = guest_minus_host(&vm, "node2");
        let (a, b) = (t.pod("n1p0").unwrap(), t.pod("n2p0").unwrap());
        let filter = format!("host {} and host {}", a.ip, b.ip);
        let lines = record_merged(&vm, &tag, &filter, || traffic(&vm, &t));
        check_healthy(&lines, &t, encap, (d2 - d1, u1 + u2));
        check_faults(&vm, &t, encap, &tag);
    }
    if series == Series::V6_1 {
        check_clsact_cleanup(&vm);
    }
    vm.shutdown().expect("shut down");
}

#[test]
fn debian_6_1_vxlan_and_ipip_traced_across_guests() {
    across(Series::V6_1, "vt-61", [Encap::Vxlan, Encap::Ipip]);
}

#[test]
fn debian_6_12_ipip_and_vxlan_traced_across_guests() {
    across(Series::V6_12, "vt-612", [Encap::Ipip, Encap::Vxlan]);
}
