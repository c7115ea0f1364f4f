//! Kernels without tcx (before 6.6) get the tc programs as clsact filters through netlink
//! (forced here with `--tc-attach netlink`; the VM suite runs the real thing on 6.1): first in
//! line, traffic traced, others' filters left alone, removed on a clean exit, and left by a
//! SIGKILL only until the next start, which removes them and says so.

mod common;

use std::time::Duration;

use common::{require_root, Tracer};
use lab::{exec_in, traffic, Encap};

/// `tc filter show` of both clsact hooks of `dev` in `netns`.
fn filters(netns: &str, dev: &str) -> String {
    let mut all = String::new();
    for hook in ["ingress", "egress"] {
        let out = exec_in(netns, &["tc", "filter", "show", "dev", dev, hook]).expect("tc");
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

fn ours(text: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(" bpf ") && l.contains("name hop_"))
        .count()
}

#[test]
fn clsact_filters_come_first_and_never_outlive_the_next_start() {
    require_root();
    let lab = common::lab_up("tcl", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let node = &topo.nodes[0].netns;
    // Someone else's filter, there before us: it must survive everything we do.
    let qdisc = exec_in(node, &["tc", "qdisc", "add", "dev", "eth0", "clsact"]).expect("tc");
    assert!(
        qdisc.status.success(),
        "{}",
        String::from_utf8_lossy(&qdisc.stderr)
    );
    for hook in ["ingress", "egress"] {
        // A classic-BPF filter that accepts everything (cls_bpf is there; matchall, u32 and
        // the actions may not be).
        let add = [
            "tc",
            "filter",
            "add",
            "dev",
            "eth0",
            hook,
            "prio",
            "10",
            "bpf",
            "bytecode",
            "1,6 0 0 4294967295,",
            "classid",
            "1:1",
        ];
        let out = exec_in(node, &add).expect("tc");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let args: Vec<String> = [
        "--netns",
        node.as_str(),
        "--tc-attach",
        "netlink",
        "--filter",
        "icmp",
        "--output",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (a, b) = (&topo.pods_on("node1")[0], &topo.pods_on("node2")[0]);

    // 1. Attached first in line, traffic traced, nothing of ours left after a clean exit.
    let t = Tracer::start(&args);
    let text = filters(node, "eth0");
    assert_eq!(ours(&text), 2, "{text}");
    let first = text
        .lines()
        .find(|l| l.contains("pref"))
        .unwrap_or_default();
    assert!(first.contains("pref 1 bpf"), "ours are not first:\n{text}");
    traffic::ping(&a.netns, b.ip, 2, true).expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    let out = t.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.traces()
            .iter()
            .any(|t| t["hops"].as_array().is_some_and(|h| h.len() >= 3)),
        "nothing traced through clsact: {}",
        out.stdout
    );
    let text = filters(node, "eth0");
    assert_eq!(ours(&text), 0, "left after a clean exit:\n{text}");
    assert!(
        text.contains("bytecode"),
        "someone else's filter is gone:\n{text}"
    );

    // 2. SIGKILL leaves them; the next start removes them and says so.
    let t = Tracer::start(&args);
    let _ = t.stop_with(libc::SIGKILL);
    let text = filters(node, "eth0");
    assert_eq!(ours(&text), 2, "a killed tracer's filters:\n{text}");
    let t = Tracer::start(&args);
    let out = t.stop();
    assert!(
        out.stderr
            .contains("removed 6 stale tc filters a killed tracer left"),
        "{}",
        out.stderr
    );
    for dev in ["eth0", "vxlan.calico", a.cali.as_str()] {
        let text = filters(node, dev);
        assert_eq!(ours(&text), 0, "{dev}:\n{text}");
    }
    assert!(filters(node, "eth0").contains("bytecode"));
    lab.down().expect("lab down");
}
