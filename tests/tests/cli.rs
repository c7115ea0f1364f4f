//! The tracer's command line: bad input and missing capabilities give one clear line, and a
//! tracer that is killed (SIGKILL) or stopped (SIGTERM) leaves no program attached.

mod common;

use std::process::Command;

use aya::programs::{SchedClassifier, TcAttachType};
use common::{require_root, run_tracer, Tracer};
use lab::Encap;

fn one_line_error(out: &common::TracerOutput, needle: &str) {
    assert!(
        !out.status.success(),
        "expected a failure, got success: {}",
        out.stdout
    );
    let err = out.stderr.trim();
    assert!(
        err.contains(needle),
        "stderr should mention '{needle}':\n{err}"
    );
    assert!(!err.contains("panicked"), "the tracer panicked:\n{err}");
}

#[test]
fn bad_filter_is_a_clear_error_with_its_position() {
    let out = run_tracer(&["trace", "--filter", "host 10.0.0.1 and port"]);
    one_line_error(&out, "column");
    let out = run_tracer(&["trace", "--filter", "net 10.0.0.0/40"]);
    one_line_error(&out, "10.0.0.0/40");
}

#[test]
fn missing_namespace_and_interface_are_clear_errors() {
    require_root();
    let out = run_tracer(&["trace", "--netns", "tt-no-such-netns", "--duration", "1s"]);
    one_line_error(&out, "tt-no-such-netns");

    let lab = common::lab_up("tt-cli", 1, Encap::Vxlan);
    let node = &lab.topology().nodes[0].netns;
    let out = run_tracer(&[
        "trace",
        "--netns",
        node,
        "--iface",
        "nosuchif0",
        "--duration",
        "1s",
    ]);
    one_line_error(&out, "nosuchif0");

    // Several namespaces: an interface none has is the same one-line error; one that only
    // some have is attached where it exists, with a warning naming the others.
    let topo = lab.topology().clone();
    let (n1, n2) = (&topo.nodes[0].netns, &topo.nodes[1].netns);
    let mut both = vec!["trace", "--netns", n1, "--netns", n2];
    both.extend(["--iface", "nosuchif0", "--duration", "1s"]);
    let out = run_tracer(&both);
    one_line_error(&out, "does not exist in any traced namespace");
    let cali = &topo.pods_on("node1")[0].cali;
    let mut some = vec!["trace", "--netns", n1, "--netns", n2];
    some.extend(["--iface", cali, "--duration", "1s"]);
    let out = run_tracer(&some);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("interface '{cali}' is not in {n2}")),
        "{}",
        out.stderr
    );
    lab.down().expect("lab down");
}

#[test]
fn not_root_is_a_clear_error() {
    require_root();
    // Drop to nobody with setpriv (util-linux) to see what an unprivileged user gets.
    let bin = common::tracer_bin();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .args(["trace", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux) is needed for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("root"),
        "stderr should say root is needed:\n{stderr}"
    );
}

/// Number of tcx programs attached to `ifaces` in `netns` (BPF_PROG_QUERY from inside it).
fn tcx_attachments(netns: &str, ifaces: &[String]) -> usize {
    let ifaces = ifaces.to_vec();
    lab::in_netns(netns, move || {
        let mut n = 0;
        for ifname in &ifaces {
            for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
                let (_, progs) = SchedClassifier::query_tcx(ifname, dir)
                    .unwrap_or_else(|e| panic!("querying tcx on {ifname}: {e}"));
                n += progs.len();
            }
        }
        n
    })
    .expect("query inside the node namespace")
}

/// The first node's namespace and the interfaces the tracer attaches to there (pod veths,
/// vxlan.calico, the uplink).
fn first_node_ifaces(lab: &lab::Lab) -> (String, Vec<String>) {
    let topo = lab.topology();
    let node = &topo.nodes[0];
    let mut ifaces: Vec<String> = topo
        .pods_on(&node.name)
        .iter()
        .map(|p| p.cali.clone())
        .collect();
    ifaces.extend(["vxlan.calico".to_string(), node.uplink.clone()]);
    (node.netns.clone(), ifaces)
}

#[test]
fn killed_or_stopped_tracer_leaves_nothing_attached() {
    require_root();
    let lab = common::lab_up("tt-kill", 1, Encap::Vxlan);
    let (node, ifaces) = first_node_ifaces(&lab);
    let count = || tcx_attachments(&node, &ifaces);
    assert_eq!(count(), 0, "attachments before the tracer started");

    for signal in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT] {
        let tracer = Tracer::start(&["--netns".into(), node.clone()]);
        // cali (1 pod), vxlan.calico, eth0: ingress and egress each.
        assert_eq!(count(), 6, "attachments while tracing");
        let out = tracer.stop_with(signal);
        if signal != libc::SIGKILL {
            assert!(
                out.status.success(),
                "signal {signal}: {}\n{}",
                out.status,
                out.stderr
            );
        }
        assert_eq!(count(), 0, "attachments left after signal {signal}");
    }
    lab.down().expect("lab down");
}

/// Where the kernel refuses fentry and has no kprobes (lockdown, CONFIG_KPROBES off: the test
/// machines), the tracer warns once, names its fallback and traces on; where it allows them,
/// it says what it attached. Either way it attaches a drop hook and runs.
#[test]
fn refused_encapsulation_probes_fall_back_with_one_warning() {
    require_root();
    let lab = common::lab_up("tt-fb", 1, Encap::Vxlan);
    let node = lab.topology().nodes[0].netns.clone();
    let out = run_tracer(&["trace", "--netns", &node, "--duration", "1s"]);
    assert!(out.status.success(), "{}", out.stderr);
    let warnings = out
        .stderr
        .matches("encapsulation probes unavailable")
        .count();
    let attached = out.stderr.contains("encapsulation: fentry/")
        || out.stderr.contains("encapsulation: kprobe/");
    assert!(
        attached || warnings == 1,
        "expected the probes attached or exactly one fallback warning:\n{}",
        out.stderr
    );
    if warnings == 1 {
        assert!(
            out.stderr
                .contains("using the tc hops on vxlan.calico/tunl0 and the uplink instead"),
            "the warning must name the fallback:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("drops: tp_btf/kfree_skb")
            || out.stderr.contains("drops: tracepoint skb/kfree_skb"),
        "a drop hook must be attached:\n{}",
        out.stderr
    );
    lab.down().expect("lab down");
}

const RCU_SWITCH: &str = "/sys/kernel/rcu_expedited";

fn rcu_switch() -> String {
    std::fs::read_to_string(RCU_SWITCH)
        .unwrap_or_else(|e| panic!("{RCU_SWITCH}: {e}"))
        .trim()
        .to_string()
}

/// Many pods: the tracer turns expedited RCU grace periods on only while it attaches and
/// detaches its tcx links (each otherwise waits for a full grace period), puts the switch back
/// as it found it, and leaves nothing attached, whether stopped or killed.
#[test]
fn many_pods_attach_with_expedited_rcu_and_restore_the_switch() {
    require_root();
    let lab = common::lab_up("tt-many", 40, Encap::Vxlan);
    let (node, ifaces) = first_node_ifaces(&lab);
    let links = ifaces.len() * 2;
    let count = || tcx_attachments(&node, &ifaces);
    let original = rcu_switch();

    for signal in [libc::SIGINT, libc::SIGKILL] {
        // Watch the switch while the tracer starts (reads of a sysfs file take microseconds).
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen_on = false;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    seen_on |= rcu_switch() == "1";
                }
                seen_on
            })
        };
        let tracer = Tracer::start(&["--netns".into(), node.clone()]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen_on = watcher.join().expect("watcher");
        if original == "0" {
            assert!(
                seen_on,
                "{RCU_SWITCH} was never 1 while attaching {links} links"
            );
        }
        assert_eq!(
            rcu_switch(),
            original,
            "switch not restored after attaching"
        );
        assert_eq!(count(), links, "attachments while tracing");
        let out = tracer.stop_with(signal);
        if signal != libc::SIGKILL {
            assert!(out.status.success(), "{}\n{}", out.status, out.stderr);
            assert!(
                out.stderr
                    .contains(&format!("and {} pod veths (", ifaces.len() - 2)),
                "the start-up line should count the pod veths:\n{}",
                out.stderr
            );
        }
        assert_eq!(
            rcu_switch(),
            original,
            "switch not restored after signal {signal}"
        );
        assert_eq!(count(), 0, "attachments left after signal {signal}");
    }

    // Opting out attaches the same links without touching the switch.
    let tracer = Tracer::start(&["--netns".into(), node.clone(), "--no-rcu-expedite".into()]);
    assert_eq!(count(), links, "attachments with --no-rcu-expedite");
    assert!(tracer.stop().status.success());
    assert_eq!(count(), 0, "attachments left after --no-rcu-expedite");
    assert_eq!(rcu_switch(), original);
    lab.down().expect("lab down");
}
