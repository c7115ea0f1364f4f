//! `tracer check`, the audit of the nodes' state with no traffic, on the lab: a healthy lab
//! (both encapsulations) has no finding and exits 0; every fault of the catalogue, in every
//! encapsulation it applies to, is found with the finding codes its catalogue entry names
//! (exit status 1 when one of them is an error), and healing it leaves no finding. From
//! recordings: one `tracer record` per node (as on a real cluster, one recorder per machine),
//! then `tracer check REC1 REC2` finds a fault that only the two nodes together show (node1's
//! FDB entry for node2's VTEP against node2's underlay address). Bad input: a namespace that
//! does not exist, a recording without states.
//!
//! Every case has its own lab prefix, so they run in parallel. Not root = failure with a
//! message, never a silent skip.

mod common;

use std::process::Command;

use common::{lab_up, require_root, run_tracer, tracer_bin, Tracer};
use lab::{Encap, Fault, Topology};
use serde_json::Value;

/// `tracer check --output json` on every node of the lab: (exit success, finding codes,
/// findings).
fn check(t: &Topology) -> (bool, Vec<String>, Value) {
    let mut args = vec!["check".to_string(), "--output".into(), "json".into()];
    for n in &t.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    let out = Command::new(tracer_bin())
        .args(&args)
        .output()
        .expect("run tracer check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "check output is not one JSON object ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    for n in v["nodes"].as_array().expect("nodes") {
        assert_eq!(
            n["unreadable"],
            serde_json::json!([]),
            "parts of {} not read",
            n["node"]
        );
    }
    let codes = codes(&v);
    (out.status.success(), codes, v["findings"].clone())
}

fn codes(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["code"].as_str().unwrap_or("").to_string())
        .collect()
}

fn has_error(findings: &Value) -> bool {
    findings
        .as_array()
        .into_iter()
        .flatten()
        .any(|f| f["severity"] == "error")
}

#[test]
fn healthy_labs_have_no_finding() {
    for (prefix, encap) in [("tck-hv", Encap::Vxlan), ("tck-hn", Encap::None)] {
        let lab = lab_up(prefix, 2, encap);
        let (ok, codes, findings) = check(lab.topology());
        assert!(ok && codes.is_empty(), "{encap}: {findings:#}");
        lab.down().expect("lab down");
    }
}

/// Every fault of the catalogue: found with its codes while active, gone once healed.
#[test]
fn every_fault_is_found_without_traffic() {
    require_root();
    let cases = common::fault_cases("tck");
    common::each_case(&cases, common::test_threads(), |prefix, &(fault, encap)| {
        let lab = common::lab_up_for(prefix, fault, encap);
        let t = lab.topology();
        let want = fault
            .tracer_report(encap)
            .expect("a report for the encapsulation")
            .audit;
        lab::break_lab(t, fault).expect("break");
        let (ok, codes, findings) = check(t);
        let missing: Vec<&&str> = want
            .iter()
            .filter(|w| !codes.iter().any(|c| c == *w))
            .collect();
        assert!(
            missing.is_empty(),
            "{fault} ({encap}): the audit does not report {missing:?}; it reports \
             {codes:?} (paste what fits into the catalogue's `.audit(&[...])`):\n{findings:#}"
        );
        assert_eq!(
            ok,
            !has_error(&findings),
            "exit status must say whether there is an error: {findings:#}"
        );
        for f in findings.as_array().expect("findings") {
            for k in ["object", "found", "expected", "fix"] {
                assert!(
                    !f[k].as_str().unwrap_or("").is_empty(),
                    "{fault}: finding without {k}: {f}"
                );
            }
        }
        lab::heal(t, fault).expect("heal");
        let (ok, codes, findings) = check(t);
        assert!(
            ok && codes.is_empty(),
            "{fault}: findings after healing: {findings:#}"
        );
        lab.down().expect("lab down");
    });
}

/// One recorder per node, audited together afterwards.
#[test]
fn recordings_of_two_nodes_are_audited_together() {
    let lab = lab_up("tck-rec", 1, Encap::Vxlan);
    let t = lab.topology();
    lab::break_lab(t, Fault::WrongTunnelSource).expect("break");
    let dir = tempdir();
    let mut files = Vec::new();
    for n in &t.nodes {
        let file = dir.join(format!("{}.trec", n.name));
        let tracer = Tracer::start_cmd(
            "record",
            &[
                "--netns".into(),
                n.netns.clone(),
                "--write".into(),
                file.display().to_string(),
            ],
        );
        let out = tracer.stop();
        assert!(out.status.success(), "record: {}", out.stderr);
        files.push(file.display().to_string());
    }
    // Each recording alone shows one node: the pair's finding needs both.
    let alone = run_tracer(&["check", "--output", "json", &files[0]]);
    let v: Value = serde_json::from_str(alone.stdout.trim()).expect("json");
    assert!(
        !codes(&v).contains(&"fdb-wrong-underlay".to_string()),
        "{}",
        alone.stdout
    );
    let both = run_tracer(&["check", "--output", "json", &files[0], &files[1]]);
    let v: Value = serde_json::from_str(both.stdout.trim()).expect("json");
    assert_eq!(
        v["nodes"].as_array().map(Vec::len),
        Some(2),
        "{}",
        both.stdout
    );
    assert!(
        codes(&v).contains(&"fdb-wrong-underlay".to_string()),
        "{}",
        both.stdout
    );
    assert!(!both.status.success());
    assert!(
        both.stderr.contains("the audit found"),
        "one line says why it failed: {}",
        both.stderr
    );
    lab::heal(t, Fault::WrongTunnelSource).expect("heal");
    lab.down().expect("lab down");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_one_clear_line() {
    require_root();
    let out = run_tracer(&["check", "--netns", "tck-no-such-netns"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("tck-no-such-netns") && out.stderr.trim().lines().count() == 1,
        "{}",
        out.stderr
    );
    let dir = tempdir();
    let junk = dir.join("junk.trec");
    std::fs::write(&junk, b"not a recording").unwrap();
    let out = run_tracer(&["check", &junk.display().to_string()]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("not a tracer recording"),
        "{}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tracer-check-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
