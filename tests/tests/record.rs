//! `tracer record` then `tracer replay` on the lab: a recording made alongside a live trace
//! replays to the same traces; a recording of a fault explains the drop with the kernel's own
//! names, on replay; a recorder killed with SIGKILL leaves a file that still replays; bad files
//! and paths are one-line errors. Recordings live in a directory removed by a guard.

mod common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{hop_path, require_root, run_tracer, Tracer};
use lab::{traffic, Encap, Fault, Topology};
use serde_json::Value;

/// The route-lookup tracepoint is global and the labs share addresses: one case at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-rec-{name}-{}", std::process::id()));
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

fn capture_args(topo: &Topology, filter: &str) -> Vec<String> {
    let mut args = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend(["--filter".into(), filter.into()]);
    args
}

/// One case: a fresh VXLAN lab with one pod per node (both torn down on drop), the pods on
/// node1 and node2, and a scratch directory for the recording.
struct Case {
    lab: lab::Lab,
    topo: Topology,
    a: lab::Pod,
    b: lab::Pod,
    file: PathBuf,
    _scratch: Scratch,
}

impl Case {
    fn new(prefix: &str) -> Case {
        let lab = common::lab_up(prefix, 1, Encap::Vxlan);
        let topo = lab.topology().clone();
        let (a, b) = (
            topo.pods_on("node1")[0].clone(),
            topo.pods_on("node2")[0].clone(),
        );
        let scratch = Scratch::new(prefix);
        Case {
            file: scratch.0.join(format!("{prefix}.trec")),
            lab,
            topo,
            a,
            b,
            _scratch: scratch,
        }
    }

    /// Capture arguments for the traffic between the two pods.
    fn pair_args(&self) -> Vec<String> {
        capture_args(
            &self.topo,
            &format!("host {} and host {}", self.a.ip, self.b.ip),
        )
    }

    /// `pair_args` plus `--write FILE` and `extra`.
    fn record_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = self.pair_args();
        args.extend(["--write".into(), self.file.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// What identifies a trace regardless of which tracer instance stamped it.
fn trace_key(t: &Value) -> (String, Vec<(String, String, String)>, String) {
    (
        t["packet"].to_string(),
        hop_path(t),
        t["outcome"].as_str().unwrap_or("").to_string(),
    )
}

fn replay(file: &std::path::Path, extra: &[&str]) -> common::TracerOutput {
    let mut args = vec![
        "replay",
        file.to_str().expect("utf8 path"),
        "--output",
        "json",
    ];
    args.extend(extra);
    run_tracer(&args)
}

#[test]
fn replay_of_a_recording_equals_the_live_trace() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("trec");
    let (a, b, file) = (&case.a, &case.b, &case.file);
    let mut live_args = case.pair_args();
    live_args.extend([
        "--output".into(),
        "json".into(),
        "--linger-ms".into(),
        "100".into(),
    ]);
    let live = Tracer::start(&live_args);
    let rec = Tracer::start_cmd("record", &case.record_args(&[]));
    traffic::ping(&a.netns, b.ip, 3, true).expect("ping");
    traffic::ping(&b.netns, a.ip, 2, true).expect("ping back");
    std::thread::sleep(Duration::from_millis(600));
    let rec = rec.stop();
    let live = live.stop();
    assert!(rec.status.success(), "record failed: {}", rec.stderr);
    assert!(live.status.success(), "trace failed: {}", live.stderr);
    let summary = rec.summary();
    assert!(summary["records"].as_u64().unwrap_or(0) >= 30, "{summary}");
    assert_eq!(summary["lost_events"], 0, "{summary}");

    let out = replay(file, &["--linger-ms", "100"]);
    assert!(out.status.success(), "replay failed: {}", out.stderr);
    assert!(out.stderr.contains("replaying"), "{}", out.stderr);
    let replayed: BTreeSet<_> = out.traces().iter().map(trace_key).collect();
    let traced: BTreeSet<_> = live.traces().iter().map(trace_key).collect();
    // 5 echo requests and 5 replies, each over six hops.
    assert_eq!(traced.len(), 10, "live traces: {}", live.stdout);
    assert!(traced
        .iter()
        .all(|(_, hops, o)| hops.len() == 6 && o == "delivered"));
    assert_eq!(
        replayed, traced,
        "replayed:\n{}\nlive:\n{}",
        out.stdout, live.stdout
    );

    // A filter on replay keeps only the matching packets (the requests from a to b).
    let out = replay(file, &["--filter", &format!("src host {} and icmp", a.ip)]);
    assert!(out.status.success(), "{}", out.stderr);
    let filtered = out.traces();
    assert_eq!(filtered.len(), 5, "{}", out.stdout);
    assert!(filtered
        .iter()
        .all(|t| t["packet"]["src"] == a.ip.to_string()));
    assert!(out.summary()["filtered"].as_u64().unwrap_or(0) > 0);
    case.lab.down().expect("lab down");
}

#[test]
fn a_recorded_fault_is_explained_on_replay() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("trecf");
    let (topo, file) = (&case.topo, &case.file);
    let info = lab::break_lab(topo, Fault::MissingFdb).expect("break");
    let from = topo.pod(&info.probe.from_pod).expect("probe pod").clone();
    let mut args = capture_args(
        topo,
        &format!("host {} and host {}", from.ip, info.probe.to),
    );
    args.extend(["--write".into(), file.display().to_string()]);
    let rec = Tracer::start_cmd("record", &args);
    let started = Instant::now();
    let _ = info.probe.run(topo, Duration::from_millis(500));
    std::thread::sleep(Duration::from_millis(800).saturating_sub(started.elapsed()));
    let rec = rec.stop();
    assert!(rec.status.success(), "record failed: {}", rec.stderr);

    let out = replay(file, &[]);
    assert!(out.status.success(), "replay failed: {}", out.stderr);
    let traces = out.traces();
    let dropped: Vec<&Value> = traces
        .iter()
        .filter(|t| t["outcome"] == "dropped")
        .collect();
    assert!(
        !dropped.is_empty(),
        "no dropped trace on replay:\n{}",
        out.stdout
    );
    let d = &dropped[0]["drop"];
    assert_eq!(d["reason"], "NO_TX_TARGET", "{}", dropped[0]);
    assert_eq!(d["ifname"], "vxlan.calico", "{}", dropped[0]);
    assert!(
        d["function"]
            .as_str()
            .unwrap_or("")
            .starts_with("vxlan_xmit"),
        "{}",
        dropped[0]
    );
    assert_eq!(
        dropped[0]["verdict"]["name"], "no-vxlan-fdb",
        "{}",
        dropped[0]
    );
    lab::heal(topo, Fault::MissingFdb).expect("heal");
    case.lab.down().expect("lab down");
}

#[test]
fn a_killed_recorder_leaves_a_file_that_replays() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("treck");
    let (a, b, file) = (&case.a, &case.b, &case.file);
    let args = case.record_args(&["--no-drops"]);
    let rec = Tracer::start_cmd("record", &args);
    traffic::ping(&a.netns, b.ip, 2, true).expect("ping");
    // Two drain periods: the records are drained and flushed to the file.
    std::thread::sleep(Duration::from_millis(300));
    let killed = rec.stop_with(libc::SIGKILL);
    assert!(!killed.status.success());

    let out = replay(file, &[]);
    assert!(out.status.success(), "replay failed: {}", out.stderr);
    assert!(
        out.stderr.contains("no end frame") || out.stderr.contains("middle of a frame"),
        "no warning about the missing end: {}",
        out.stderr
    );
    assert!(out.stderr.contains("no drops"), "{}", out.stderr);
    let delivered = out
        .traces()
        .iter()
        .filter(|t| t["outcome"] == "delivered" && hop_path(t).len() == 6)
        .count();
    assert_eq!(delivered, 4, "2 requests and 2 replies:\n{}", out.stdout);
    case.lab.down().expect("lab down");
}

#[test]
fn bad_recordings_and_paths_are_one_line_errors() {
    let scratch = Scratch::new("bad");
    let one_line = |out: &common::TracerOutput, needle: &str| {
        assert!(!out.status.success(), "succeeded: {}", out.stdout);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line: {}", out.stderr);
        assert!(
            lines[0].contains(needle),
            "{needle:?} not in {}",
            out.stderr
        );
    };
    let missing = scratch.0.join("missing.trec");
    one_line(&replay(&missing, &[]), "opening recording");
    let garbage = scratch.0.join("garbage.trec");
    std::fs::write(&garbage, b"this is not a recording at all").expect("write");
    one_line(&replay(&garbage, &[]), "not a tracer recording");
    let nowhere = scratch.0.join("no/such/dir/x.trec");
    let out = run_tracer(&["record", "--write", nowhere.to_str().expect("utf8")]);
    one_line(&out, "creating recording");
    let out = run_tracer(&[
        "replay",
        garbage.to_str().expect("utf8"),
        "--filter",
        "port x",
    ]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains('^'),
        "filter error with a caret: {}",
        out.stderr
    );
}

#[test]
fn the_recorder_stops_itself_at_max_mib() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::new("trecm");
    let (a, b, file) = (&case.a, &case.b, &case.file);
    let args = case.record_args(&["--max-mib", "1"]);
    let rec = Tracer::start_cmd("record", &args);
    // ~5000 echo requests and replies, six hops each: ~6 MB of records, more than the cap.
    let flood = std::process::Command::new("ip")
        .args(["netns", "exec", &a.netns, "ping", "-f", "-q", "-c", "5000"])
        .arg(b.ip.to_string())
        .output()
        .expect("ping -f");
    assert!(
        flood.status.success(),
        "{}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let started = Instant::now();
    let out = loop {
        // The recorder stops by itself; SIGINT after 10 s would make the test fail below.
        if started.elapsed() > Duration::from_secs(10) || !file_growing(file) {
            break rec.stop();
        }
    };
    assert!(
        out.stderr.contains("reached --max-mib 1 MiB"),
        "the recorder did not stop at the cap: {}",
        out.stderr
    );
    let size = std::fs::metadata(file).expect("recording").len();
    assert!(
        (1 << 20..8 << 20).contains(&size),
        "size {size} is not near the 1 MiB cap"
    );
    let replayed = replay(file, &[]);
    assert!(replayed.status.success(), "{}", replayed.stderr);
    assert!(!replayed.stderr.contains("warning"), "{}", replayed.stderr);
    assert!(replayed.traces().len() > 100);
    case.lab.down().expect("lab down");
}

/// False once the file has not grown for 300 ms (the recorder has stopped writing).
fn file_growing(path: &std::path::Path) -> bool {
    let size = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let before = size();
    std::thread::sleep(Duration::from_millis(300));
    size() != before
}
