//! Unit tests of the benchmark report (pure: medians, targets, table, JSON).

use super::*;

fn sample(gbps: f64, lost: Option<u64>) -> Sample {
    Sample {
        bps: Some(gbps * 1e9),
        pps: Some(gbps * 1e5),
        lost,
        ..Sample::default()
    }
}

fn config(name: &'static str, tcp: &[f64], lost: Option<u64>) -> ConfigResult {
    ConfigResult {
        name,
        label: name.to_string(),
        command: String::new(),
        tcp: tcp.iter().map(|&g| sample(g, lost)).collect(),
        udp: tcp.iter().map(|&g| sample(g / 10.0, lost)).collect(),
    }
}

fn results() -> Results {
    Results {
        rounds: 3,
        seconds: 4,
        kernel: "6.18".into(),
        throughput: vec![
            config("baseline", &[10.0, 30.0, 20.0], None),
            config("trace-flow", &[19.5, 19.0, 50.0], Some(0)),
            config("filter-miss", &[19.0, 19.2, 1.0], Some(3)),
            ConfigResult {
                label: "tcpdump".into(),
                ..config("tcpdump", &[5.0, 6.0, 7.0], None)
            },
        ],
        cost: vec![CostRun {
            label: "match",
            filter: "host a".into(),
            progs: vec![
                ProgCost {
                    name: "hop_ingress".into(),
                    instances: 2,
                    run_time_ns: 3000,
                    run_cnt: 10,
                },
                ProgCost {
                    name: "hop_egress".into(),
                    instances: 2,
                    run_time_ns: 1000,
                    run_cnt: 30,
                },
                ProgCost {
                    name: "fib_lookup".into(),
                    instances: 1,
                    run_time_ns: 100_000,
                    run_cnt: 1,
                },
            ],
            test_runs: vec![TestRunCost {
                program: "hop_egress".into(),
                frame: "vxlan",
                repeat: 20000,
                ns: 46.0,
                floor_ns: Some(33.0),
            }],
            bps: Some(1e10),
            error: None,
        }],
        pipeline: Some(Pipeline::Unavailable),
        startup: vec![StartupRow {
            pods: 500,
            ready_ms: vec![2500.0, 1500.0, 1900.0],
            attached_ms: vec![1000.0],
            error: None,
        }],
        ..Results::default()
    }
}

#[test]
fn median_and_ratio() {
    assert_eq!(median(&[]), None);
    assert_eq!(median(&[3.0]), Some(3.0));
    assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    assert_eq!(ratio(Some(19.5), Some(20.0)), Some(0.975));
    assert_eq!(ratio(Some(1.0), Some(0.0)), None);
    assert_eq!(ratio(None, Some(1.0)), None);
}

#[test]
fn ratios_use_medians_and_tc_average_is_weighted() {
    let r = results();
    assert_eq!(r.tput_ratio("trace-flow", Proto::Tcp), Some(19.5 / 20.0));
    assert_eq!(r.tput_ratio("stats-kernel", Proto::Tcp), None);
    assert_eq!(r.cost[0].tc_average(), Some(100.0));
    assert_eq!(
        r.config("filter-miss").unwrap().max_lost(Proto::Tcp),
        Some(3)
    );
}

#[test]
fn targets_pass_miss_and_na() {
    let t = targets(&results());
    let get = |prefix: &str| {
        t.iter()
            .find(|t| t.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no target {prefix}"))
            .clone()
    };
    assert_eq!(get("trace-flow TCP").pass, Some(true));
    assert_eq!(get("trace-flow TCP").value, "0.975");
    assert_eq!(get("filter-miss TCP").pass, Some(false));
    assert_eq!(get("stats-kernel TCP").verdict(), "n/a");
    assert_eq!(get("tracer faster than tcpdump, TCP").pass, Some(true));
    assert_eq!(get("tc programs").pass, Some(true));
    // The own cost (46 - 33 ns) against the reporting program's limit.
    let own = get("tc programs' own cost <= 100 ns");
    assert_eq!((own.value.as_str(), own.pass), ("13 ns", Some(true)));
    assert_eq!(get("user-space").verdict(), "n/a");
    assert_eq!(
        get("zero lost events at TCP load (trace-flow)").pass,
        Some(true)
    );
    assert_eq!(
        get("zero lost events at TCP load (filter-miss)").pass,
        Some(false)
    );
    assert_eq!(get("attach to 500").value, "1900 ms");
    assert_eq!(get("attach to 500").pass, Some(true));
}

#[test]
fn table_has_every_section_and_aligned_rows() {
    let text = render(&results());
    for needle in [
        "Throughput",
        "baseline",
        "trace-flow",
        "0.975",
        "19.50",
        "Per-program cost",
        "hop_ingress",
        "300.0",
        "tc average",
        "BPF_PROG_TEST_RUN, match filter, 20000 runs of one frame each: hop_egress vxlan 46 ns \
         (own 13: empty program 33)",
        "n/a (tracer has no pipeline-bench)",
        "Start-up",
        "Targets",
        "PASS",
        "MISS",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("baseline") || l.starts_with("trace-flow"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].len(), rows[1].len(), "columns line up:\n{text}");
    assert!(!text.contains("Errors"));
}

#[test]
fn json_carries_medians_samples_and_targets() {
    let mut r = results();
    r.throughput[1].udp[0].error = Some("boom".into());
    let v = to_json(&r);
    assert_eq!(v["throughput"]["baseline"]["tcp"]["median_bps"], 20e9);
    assert_eq!(
        v["throughput"]["trace-flow"]["tcp"]["samples"][0]["lost_events"],
        0
    );
    assert_eq!(v["program_cost"][0]["tc_average_ns"], 100.0);
    assert_eq!(v["program_cost"][0]["test_runs"][0]["ns"], 46.0);
    assert_eq!(v["program_cost"][0]["test_runs"][0]["own_ns"], 13.0);
    assert_eq!(
        v["program_cost"][0]["test_runs"][0]["empty_program_ns"],
        33.0
    );
    assert_eq!(v["pipeline"]["available"], false);
    assert!(v["targets"].as_array().unwrap().len() > 10);
    assert_eq!(v["errors"][0], "trace-flow udp round 1: boom");
    assert!(render(&r).contains("Errors"));
}
