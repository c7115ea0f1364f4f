//! `tracer record --snaplen 128` of a lab fault, then `tracer pcap`, checked with tshark: the
//! `policy-drop` fault (an nftables rule on node2 drops TCP to pod n2p0, NETFILTER_DROP) on a
//! VXLAN lab, with pings to a reachable pod of node2 beside it. tshark opens the file, the
//! interfaces are named `node/ifname` after the traces' hops, every packet has its comment,
//! `frame.comment contains "NETFILTER_DROP"` finds the dropped TCP segments (their bytes
//! decode as TCP to the policy's port: the drop hook's link type is right), the pings decode
//! as Ethernet frames with ICMP inside, the times are the wall clock of the recording, and the
//! packet count equals the hops and drops of the traces `tracer replay --output json` prints
//! of the same recording. A truncated copy still converts, saying what is missing; a
//! recording made without `--snaplen` is a one-line error.
//!
//! Root and tshark are required: missing, the test fails saying so.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{require_root, run_tracer, Tracer};
use lab::{Encap, Fault};

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-pcap-{}", std::process::id()));
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

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// `tshark -r FILE ARGS...`: its standard output (it must succeed).
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("tshark (Debian's package `tshark`, installed by `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// One field of every packet matching `filter` (all with an empty filter).
fn fields(file: &Path, filter: &str, field: &str) -> Vec<String> {
    let mut args = vec!["-T", "fields", "-e", field];
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    tshark(file, &args).lines().map(str::to_string).collect()
}

/// Records the `policy-drop` fault of a fresh VXLAN lab (torn down on return) with
/// `--snaplen 128` into `with`, and the same traffic without it into `without`; returns the
/// policy's TCP port and the wall clock before and after.
fn record_fault(with: &Path, without: &Path) -> (u16, f64, f64) {
    let lab = common::lab_up("tpcp", 2, Encap::Vxlan);
    let topo = lab.topology().clone();
    let info = lab::break_lab(&topo, Fault::PolicyDrop).expect("break");
    let port = info.probe.port.expect("the policy probe's port");
    let from = topo.pod(&info.probe.from_pod).expect("probe pod").clone();
    // A pod of the other node the policy leaves alone: its pings are delivered.
    let reachable = topo
        .pods
        .iter()
        .find(|p| p.node != from.node && p.ip != info.probe.to)
        .expect("a second pod on the other node")
        .clone();
    let filter = format!("host {}", from.ip);
    let args = |file: &Path, snap: bool| {
        let mut a = Vec::new();
        for n in &topo.nodes {
            a.extend(["--netns".to_string(), n.netns.clone()]);
        }
        a.extend(["--filter".into(), filter.clone()]);
        if snap {
            a.extend(["--snaplen".into(), "128".into()]);
        }
        a.extend(["--write".into(), file.display().to_string()]);
        a
    };
    let start = unix_s();
    let rec = Tracer::start_cmd("record", &args(with, true));
    let plain = Tracer::start_cmd("record", &args(without, false));
    let started = Instant::now();
    let _ = info.probe.run(&topo, Duration::from_millis(500));
    lab::traffic::ping(&from.netns, reachable.ip, 3, true).expect("cross-node ping");
    std::thread::sleep(Duration::from_millis(800).saturating_sub(started.elapsed()));
    for r in [rec, plain] {
        let out = r.stop();
        assert!(out.status.success(), "record failed: {}", out.stderr);
    }
    let end = unix_s();
    lab::heal(&topo, Fault::PolicyDrop).expect("heal");
    lab.down().expect("lab down");
    (port, start, end)
}

/// The traces of `tracer replay --output json`: (hops, drops) in all, and the `node/ifname`
/// of every hop and drop.
fn replayed(rec: &Path) -> (usize, usize, BTreeSet<String>) {
    let out = run_tracer(&["replay", "--output", "json", rec.to_str().expect("utf8")]);
    assert!(out.status.success(), "replay failed: {}", out.stderr);
    let (mut hops, mut drops, mut names) = (0, 0, BTreeSet::new());
    for line in out.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let Some(h) = v.get("hops").and_then(|h| h.as_array()) else {
            continue;
        };
        hops += h.len();
        for hop in h {
            names.insert(format!(
                "{}/{}",
                hop["node"].as_str().expect("node"),
                hop["ifname"].as_str().expect("ifname")
            ));
        }
        if let Some(d) = v.get("drop").filter(|d| !d.is_null()) {
            drops += 1;
            names.insert(format!(
                "{}/{}",
                d["node"].as_str().expect("node"),
                d["ifname"].as_str().expect("ifname")
            ));
        }
    }
    (hops, drops, names)
}

#[test]
fn the_pcap_of_a_recorded_fault_opens_in_tshark_with_the_drop_commented() {
    require_root();
    let scratch = Scratch::new();
    let rec = scratch.0.join("fault.trec");
    let plain = scratch.0.join("plain.trec");
    let (port, start, end) = record_fault(&rec, &plain);
    let pcap = scratch.0.join("fault.pcapng");
    let r = run_tracer(&[
        "pcap",
        rec.to_str().expect("utf8"),
        "-o",
        pcap.to_str().expect("utf8"),
    ]);
    assert!(r.status.success(), "pcap failed: {}", r.stderr);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    assert!(r.stderr.contains("tracer: wrote "), "{}", r.stderr);

    // The same count of packets as the replayed traces have hops and drops.
    let (hops, drops, names) = replayed(&rec);
    assert!(drops >= 1, "no drop traced");
    let frames = fields(&pcap, "", "frame.number");
    assert_eq!(frames.len(), hops + drops, "{}", r.stderr);

    // Interfaces named `node/ifname`, those of the traces.
    let ifaces: BTreeSet<String> = fields(&pcap, "", "frame.interface_name")
        .into_iter()
        .collect();
    assert_eq!(ifaces, names);
    assert!(
        ifaces.iter().any(|i| i.ends_with("/vxlan.calico"))
            && ifaces.iter().any(|i| i.ends_with("/eth0")),
        "{ifaces:?}"
    );

    // Every packet has its comment; the drop's names the reason, location and verdict.
    let comments = fields(&pcap, "", "frame.comment");
    assert!(
        comments.iter().all(|c| c.starts_with("tracer trace ")),
        "{comments:#?}"
    );
    let dropped = fields(
        &pcap,
        "frame.comment contains \"NETFILTER_DROP\"",
        "frame.comment",
    );
    assert_eq!(dropped.len(), drops, "{dropped:#?}");
    for c in &dropped {
        assert!(
            c.contains("DROP on tpcp-node2/")
                && c.contains("nft_do_chain")
                && c.contains("verdict firewall-drop"),
            "{c}"
        );
    }
    // The dropped bytes are the TCP segments to the policy's port (raw IP from the network
    // header), and the pings are Ethernet frames with ICMP inside.
    let tcp = format!("frame.comment contains \"NETFILTER_DROP\" && tcp.dstport == {port}");
    assert_eq!(fields(&pcap, &tcp, "frame.number").len(), drops);
    let echo = fields(&pcap, "eth && icmp.type == 8", "frame.comment");
    assert!(!echo.is_empty(), "no ICMP echo decoded");
    assert!(echo.iter().all(|c| c.ends_with("delivered")), "{echo:#?}");
    // Wall-clock times, in nanoseconds.
    let times: Vec<f64> = fields(&pcap, "", "frame.time_epoch")
        .iter()
        .map(|t| t.parse().expect("a time"))
        .collect();
    assert!(
        times.iter().all(|&t| t >= start - 1.0 && t <= end + 1.0),
        "times {:?} outside {start}..{end}",
        &times[..3]
    );
    let ns = fields(&pcap, "", "frame.time_epoch");
    assert!(
        ns[0].split('.').nth(1).is_some_and(|f| f.len() == 9),
        "{}",
        ns[0]
    );

    // A truncated copy: the packets before the cut, and a warning saying what is missing.
    let cut = scratch.0.join("cut.trec");
    let bytes = std::fs::read(&rec).expect("recording");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 5]).expect("cut");
    let cut_pcap = scratch.0.join("cut.pcapng");
    let r = run_tracer(&[
        "pcap",
        cut.to_str().expect("utf8"),
        "-o",
        cut_pcap.to_str().expect("utf8"),
    ]);
    assert!(
        r.status.success(),
        "pcap of a truncated file failed: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("warning")
            && r.stderr.contains("middle of a frame")
            && r.stderr.contains("missing"),
        "{}",
        r.stderr
    );
    let n = fields(&cut_pcap, "", "frame.number").len();
    assert!(n > 0 && n < frames.len(), "{n} of {} packets", frames.len());

    // Without --snaplen: one line saying so, and no file.
    let none = scratch.0.join("plain.pcapng");
    let r = run_tracer(&[
        "pcap",
        plain.to_str().expect("utf8"),
        "-o",
        none.to_str().expect("utf8"),
    ]);
    assert!(!r.status.success());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("recorded without --snaplen"),
        "{}",
        r.stderr
    );
    assert!(!none.exists());
}
