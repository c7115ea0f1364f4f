//! The catalogue checked against itself and against the README: every fault has what the
//! tests need for each encapsulation it applies to, and the README's tables name it.

use std::collections::BTreeSet;

use super::*;
use crate::spec::LabSpec;

const ENCAPS: [Encap; 3] = [Encap::Vxlan, Encap::None, Encap::Ipip];

#[test]
fn every_fault_has_a_tracer_report_for_each_encapsulation_it_applies_to() {
    let mut problems = Vec::new();
    for (i, e) in CATALOGUE.iter().enumerate() {
        let name = e.name;
        if e.fault != Fault::ALL[i] {
            problems.push(format!("{name}: entry {i} is not Fault::ALL[{i}]"));
        }
        if e.encaps.is_empty() {
            problems.push(format!("{name}: applies to no encapsulation"));
        }
        if e.kernel_drops.is_empty() {
            problems.push(format!("{name}: no kernel drop"));
        }
        for encap in ENCAPS {
            let n = e.tracer.iter().filter(|r| r.encap == encap).count();
            match (e.encaps.contains(&encap), n) {
                (true, 1) | (false, 0) => {}
                (true, 0) => problems.push(format!(
                    "{name}: no tracer report for {encap} (run `tests/tests/verdicts.rs`: it \
                     prints what the tracer reports)"
                )),
                (true, _) => problems.push(format!("{name}: {n} tracer reports for {encap}")),
                (false, _) => problems.push(format!(
                    "{name}: a tracer report for {encap}, which it does not apply to"
                )),
            }
        }
        for r in e.tracer {
            // A trace that is not dropped (lost, its reply never back) has no drop point.
            if r.outcome != "dropped" {
                if r.verdict.is_empty() || !r.node.is_empty() {
                    problems.push(format!(
                        "{name} ({}): {} needs a verdict only",
                        r.encap, r.outcome
                    ));
                }
                continue;
            }
            if !["node1", "node2"].contains(&r.node) {
                problems.push(format!("{name} ({}): unknown node {}", r.encap, r.node));
            }
            for (what, v) in [
                ("device", r.device),
                ("reason", r.reason),
                ("function", r.function),
                ("verdict", r.verdict),
            ] {
                if v.is_empty() {
                    problems.push(format!("{name} ({}): empty {what}", r.encap));
                }
            }
            // Every lab fault is a state fault: `tracer check` must find it without traffic
            // (run `tests/tests/check.rs`: it prints what the audit reports).
            // ... unless the entry says why the audit cannot (NAT state it does not judge).
            if r.audit_exempt.is_none()
                && (r.audit.is_empty() || r.audit.iter().any(|c| c.is_empty()))
            {
                problems.push(format!("{name} ({}): no audit finding codes", r.encap));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `tracer_report` finds the report of the encapsulation asked for, and `cases` lists every
/// (fault, encapsulation) an entry declares.
#[test]
fn tracer_report_and_cases_follow_the_entries() {
    let cases: Vec<(Fault, Encap)> = Fault::cases().collect();
    for f in Fault::ALL {
        for encap in ENCAPS {
            let declared = f.applies_to(encap);
            assert_eq!(cases.contains(&(f, encap)), declared, "{f} ({encap})");
            if let Some(r) = f.tracer_report(encap) {
                assert!(declared, "{f} ({encap})");
                assert_eq!(r.encap, encap, "{f} ({encap})");
            }
        }
    }
    let declared: usize = CATALOGUE.iter().map(|e| e.encaps.len()).sum();
    assert_eq!(cases.len(), declared);
}

#[test]
fn names_parse_and_serialize() {
    for f in Fault::ALL {
        assert_eq!(f.name().parse::<Fault>().unwrap(), f);
        assert_eq!(f.to_string(), f.name());
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, format!("\"{}\"", f.name()));
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), f);
        assert!(!f.expected_drops().is_empty());
        assert_eq!(f.entry().fault, f);
    }
    let err = format!("{:#}", "encap".parse::<Fault>().unwrap_err());
    assert!(err.contains("unknown fault `encap`"), "{err}");
    assert!(err.contains("encap-never, missing-route,"), "{err}");
    assert!(err.contains("wrong-tunnel-source"), "{err}");
    assert!(Fault::ALL.iter().all(|f| f.applies_to(Encap::Vxlan)));
}

/// Every probe resolves in a lab of each encapsulation the fault applies to.
#[test]
fn probes_resolve_in_a_planned_lab() {
    for (fault, encap) in Fault::cases() {
        let t = LabSpec {
            encap,
            services: fault
                .needs_services()
                .then(crate::services::ServicesSpec::default),
            ..LabSpec::default()
        }
        .plan()
        .unwrap();
        let probe = fault.probe(&t).unwrap();
        if fault.needs_services() {
            continue; // Service addresses, node ports, the outside machine: see services::at
        }
        assert_eq!(probe.from_pod, "n1p0", "{fault}");
        assert!(
            t.pod_by_ip(probe.to).is_some() || t.nodes.iter().any(|n| n.ip == probe.to),
            "{fault}: {probe:?}"
        );
    }
}

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The backquoted words of `text` that are fault names.
fn faults_in(text: &str) -> Vec<Fault> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// The rows of the README's verdict table: (verdict, typical cause).
fn verdict_table(readme: &str) -> Vec<(String, String)> {
    let section = readme
        .split("\n### Where and why a packet died\n")
        .nth(1)
        .expect("README section `Where and why a packet died`");
    let rows: Vec<&str> = section
        .lines()
        .skip_while(|l| !l.starts_with("| verdict |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(!rows.is_empty(), "no verdict table in the README section");
    rows.iter()
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

/// The README's verdict table names every fault in the row of each verdict the tracer gives
/// it, and names no fault under a verdict it does not get.
#[test]
fn readme_verdict_table_names_every_fault_under_its_verdict() {
    let table = verdict_table(&readme());
    let mut problems = Vec::new();
    for (fault, encap) in Fault::cases() {
        let Some(r) = fault.tracer_report(encap) else {
            continue; // the report check above fails
        };
        match table.iter().find(|(v, _)| v == r.verdict) {
            None => problems.push(format!("no row for verdict `{}`", r.verdict)),
            Some((v, cause)) if !faults_in(cause).contains(&fault) => problems.push(format!(
                "row `{v}` does not name `{fault}` (its verdict in a {encap} lab)"
            )),
            Some(_) => {}
        }
    }
    for (verdict, cause) in &table {
        for fault in faults_in(cause) {
            if !fault.entry().tracer.iter().any(|r| r.verdict == verdict) {
                problems.push(format!(
                    "row `{verdict}` names `{fault}`, whose verdict is not `{verdict}`"
                ));
            }
        }
    }
    let problems: BTreeSet<String> = problems.into_iter().collect();
    assert!(
        problems.is_empty(),
        "README.md, verdict table:\n{}",
        problems.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The README's `lab break` paragraph lists every fault, in catalogue order.
#[test]
fn readme_lab_break_lists_every_fault() {
    let readme = readme();
    let start = readme
        .find("`cargo xtask lab break FAULT`")
        .expect("a `cargo xtask lab break FAULT` paragraph in README.md");
    let paragraph = readme[start..].split("\n\n").next().unwrap_or_default();
    assert_eq!(
        faults_in(paragraph),
        Fault::ALL,
        "README.md's `lab break` paragraph: {paragraph}"
    );
}
