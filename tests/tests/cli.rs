//! The tracer's command line: bad input and missing capabilities give one clear line, and a
//! tracer that is killed (SIGKILL) or stopped (SIGTERM) leaves no program attached.

mod common;

use std::process::Command;

use common::{require_root, run_tracer, Tracer};
use lab::{Encap, Lab, LabSpec};

fn one_line_error(out: &common::TracerOutput, needle: &str) {
    assert!(!out.status.success(), "expected a failure, got success: {}", out.stdout);
    let err = out.stderr.trim();
    assert!(err.contains(needle), "stderr should mention '{needle}':\n{err}");
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

    let spec = LabSpec { prefix: "tt-cli".into(), nodes: 2, pods_per_node: 1, encap: Encap::Vxlan };
    lab::down_prefix(&spec.prefix).expect("clean leftovers");
    let lab = Lab::up(&spec).expect("lab up");
    let node = &lab.topology().nodes[0].netns;
    let out = run_tracer(&["trace", "--netns", node, "--iface", "nosuchif0", "--duration", "1s"]);
    one_line_error(&out, "nosuchif0");
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
    assert!(stderr.contains("root"), "stderr should say root is needed:\n{stderr}");
}

/// Number of tcx programs attached in `netns` (bpftool lists them per device).
fn tcx_attachments(netns: &str) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "bpftool", "-j", "net", "show"])
        .output()
        .expect("bpftool (installed by `cargo xtask setup`)");
    assert!(out.status.success(), "bpftool net show failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let mut n = 0;
    for entry in v.as_array().into_iter().flatten() {
        for key in ["tcx", "tc"] {
            n += entry.get(key).and_then(|a| a.as_array()).map_or(0, |a| a.len());
        }
    }
    n
}

#[test]
fn killed_or_stopped_tracer_leaves_nothing_attached() {
    require_root();
    let spec = LabSpec { prefix: "tt-kill".into(), nodes: 2, pods_per_node: 1, encap: Encap::Vxlan };
    lab::down_prefix(&spec.prefix).expect("clean leftovers");
    let lab = Lab::up(&spec).expect("lab up");
    let node = lab.topology().nodes[0].netns.clone();
    assert_eq!(tcx_attachments(&node), 0, "attachments before the tracer started");

    for signal in [libc::SIGKILL, libc::SIGTERM, libc::SIGINT] {
        let tracer = Tracer::start(&["--netns".into(), node.clone()]);
        // cali (1 pod), vxlan.calico, eth0: ingress and egress each.
        assert_eq!(tcx_attachments(&node), 6, "attachments while tracing");
        let out = tracer.stop_with(signal);
        if signal != libc::SIGKILL {
            assert!(out.status.success(), "signal {signal}: {}\n{}", out.status, out.stderr);
        }
        assert_eq!(tcx_attachments(&node), 0, "attachments left after signal {signal}");
    }
    lab.down().expect("lab down");
}
