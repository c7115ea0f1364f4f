//! One recorder per node, merged: on the lab (every node a namespace of this kernel) the merged
//! traces must equal the one-process trace of the same traffic (hops, outcomes, verdicts), and
//! the offset estimated between the recordings must hold the truth (zero) within its bound.
//! Once with files replayed afterwards, once with `--write -` streams followed live through
//! FIFOs, during a fault.

mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use common::{hop_path, require_root, tracer_bin, Tracer};
use lab::{traffic, Encap, Fault, Topology};
use serde_json::Value;

/// Route lookups are global and the labs share addresses: one case at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-merge-{name}-{}", std::process::id()));
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

/// Packet, hop path (node, interface, direction), outcome and verdict of a JSON trace.
type Key = (String, Vec<(String, String, String)>, String, String);

fn key(t: &Value) -> Key {
    (
        t["packet"].to_string(),
        hop_path(t),
        t["outcome"].as_str().unwrap_or("").to_string(),
        t["verdict"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn filter(topo: &Topology) -> String {
    let (a, b) = (&topo.pods_on("node1")[0], &topo.pods_on("node2")[0]);
    format!("host {} and host {}", a.ip, b.ip)
}

fn capture(netns: &[&str], filter: &str) -> Vec<String> {
    let mut args: Vec<String> = netns
        .iter()
        .flat_map(|n| ["--netns".to_string(), n.to_string()])
        .collect();
    args.extend(["--filter".into(), filter.into()]);
    args
}

/// Pings both ways and a TCP exchange between the two pods.
fn traffic(topo: &Topology) {
    let (a, b) = (&topo.pods_on("node1")[0], &topo.pods_on("node2")[0]);
    traffic::ping(&a.netns, b.ip, 3, true).expect("ping");
    traffic::ping(&b.netns, a.ip, 2, true).expect("ping back");
    traffic::tcp_exchange(&b.netns, b.ip, 9100, &a.netns, &[7u8; 3000]).expect("tcp");
}

/// The `{"clocks": ...}` line of a merge: the recordings share one clock (one kernel), and the
/// estimate between them holds the truth, 0: within its bound when packets crossed both ways,
/// on the right side of a one-sided bound when they crossed one way only.
fn check_clocks(lines: &[Value], fit: &str) {
    let clocks = lines
        .iter()
        .find_map(|v| v.get("clocks"))
        .unwrap_or_else(|| panic!("no clocks line in {lines:?}"));
    assert_eq!(clocks["recordings"][1]["basis"], "same-clock", "{clocks}");
    let pair = &clocks["pairs"][0];
    assert_eq!(pair["fit"], fit, "{clocks}");
    let offset = pair["offset_ns"].as_i64().expect("offset");
    if fit == "two-sided" {
        let err = pair["offset_err_ns"].as_i64().expect("bound");
        assert!(
            offset.abs() <= err,
            "the true offset (0, one kernel) is outside {offset} ± {err} ns: {clocks}"
        );
        assert!(err < 1_000_000, "a bound of {err} ns says little: {clocks}");
    } else {
        // Only the second recording's packets reached the first: offset >= estimate.
        assert_eq!(pair["a_to_b"], 0, "{clocks}");
        assert!(pair["offset_err_ns"].is_null(), "{clocks}");
        assert!(
            offset <= 0,
            "0 is not above the lower bound {offset}: {clocks}"
        );
    }
}

fn traces(lines: &[Value]) -> BTreeSet<Key> {
    lines
        .iter()
        .filter(|v| v.get("packet").is_some())
        .map(key)
        .collect()
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn recordings_of_each_node_merge_into_the_one_process_trace() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tmg", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let scratch = Scratch::new("files");
    let f = filter(&topo);
    let (n1, n2) = (&topo.nodes[0].netns, &topo.nodes[1].netns);
    let mut live_args = capture(&[n1, n2], &f);
    live_args.extend(["--output".into(), "json".into()]);
    let live = Tracer::start(&live_args);
    let files: Vec<PathBuf> = ["n1", "n2"]
        .iter()
        .map(|n| scratch.0.join(format!("{n}.trec")))
        .collect();
    let recorders: Vec<Tracer> = [n1, n2]
        .iter()
        .zip(&files)
        .map(|(ns, file)| {
            let mut args = capture(&[ns], &f);
            args.extend(["--write".into(), file.display().to_string()]);
            Tracer::start_cmd("record", &args)
        })
        .collect();
    traffic(&topo);
    std::thread::sleep(Duration::from_millis(500));
    for r in recorders {
        let out = r.stop();
        assert!(out.status.success(), "record: {}", out.stderr);
    }
    let live = live.stop();
    assert!(live.status.success(), "trace: {}", live.stderr);
    let args: Vec<&str> = ["replay"]
        .into_iter()
        .chain(files.iter().map(|p| p.to_str().expect("utf8")))
        .chain(["--output", "json"])
        .collect();
    let merged = common::run_tracer(&args);
    assert!(merged.status.success(), "replay: {}", merged.stderr);
    let merged_lines = json_lines(&merged.stdout);
    check_clocks(&merged_lines, "two-sided");
    let (want, got) = (traces(&live.json_lines()), traces(&merged_lines));
    assert!(want.len() >= 14, "a loaded run: {want:?}");
    assert_eq!(
        got, want,
        "merged:\n{}\nlive:\n{}",
        merged.stdout, live.stdout
    );
    lab.down().expect("lab down");
}

/// Opens `fifo` for writing: blocks until the reader (the replay) opens it.
fn fifo_writer(fifo: &Path) -> File {
    File::options().write(true).open(fifo).expect("open FIFO")
}

#[test]
fn streams_followed_live_explain_a_fault_as_the_one_process_trace_does() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tms", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let scratch = Scratch::new("streams");
    let info = lab::break_lab(&topo, Fault::MissingFdb).expect("break");
    let f = filter(&topo);
    let (n1, n2) = (&topo.nodes[0].netns, &topo.nodes[1].netns);
    let mut live_args = capture(&[n1, n2], &f);
    live_args.extend(["--output".into(), "json".into()]);
    let live = Tracer::start(&live_args);
    let fifos: Vec<PathBuf> = ["n1", "n2"].iter().map(|n| scratch.0.join(n)).collect();
    for fifo in &fifos {
        let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("path");
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    // The replay opens the FIFOs in order; each recorder's end is opened here, meeting it.
    let replay = Command::new(tracer_bin())
        .arg("replay")
        .args(&fifos)
        .args(["--output", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replay");
    let recorders: Vec<Tracer> = [n1, n2]
        .iter()
        .zip(&fifos)
        .map(|(ns, fifo)| {
            let mut args = capture(&[ns], &f);
            args.extend(["--write".into(), "-".into()]);
            Tracer::start_with_stdout("record", &args, Stdio::from(fifo_writer(fifo)))
        })
        .collect();
    let _ = info.probe.run(&topo, Duration::from_millis(500));
    // The other way: requests arrive, replies die on node1 like the probe.
    let _ = traffic::ping(
        &topo.pods_on("node2")[0].netns,
        topo.pods_on("node1")[0].ip,
        2,
        true,
    );
    std::thread::sleep(Duration::from_millis(800));
    for r in recorders {
        let out = r.stop();
        assert!(out.status.success(), "record: {}", out.stderr);
        assert!(out.stderr.contains("\"lost_events\":0"), "{}", out.stderr);
    }
    let live = live.stop();
    let merged = replay
        .wait_with_output()
        .expect("replay ends with its streams");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&merged.stdout),
        String::from_utf8_lossy(&merged.stderr),
    );
    assert!(merged.status.success(), "replay: {stderr}");
    let merged_lines = json_lines(&stdout);
    // Nothing node1 sends reaches node2 under the fault: packets crossed one way only.
    check_clocks(&merged_lines, "one-sided");
    let (want, got) = (traces(&live.json_lines()), traces(&merged_lines));
    assert!(
        got.iter().any(|k| k.3 == "no-vxlan-fdb"),
        "no verdict for the fault in the merge:\n{stdout}"
    );
    assert_eq!(got, want, "merged:\n{stdout}\nlive:\n{}", live.stdout);
    lab::heal(&topo, Fault::MissingFdb).expect("heal");
    lab.down().expect("lab down");
}
