//! Per-program cost: `kernel.bpf_stats_enabled=1` and `bpftool -j prog show` around a TCP
//! iperf3 while the tracer runs with a matching and with a non-matching filter.
//!
//! Design note: the sysctl is switched on by a guard that writes the previous value back on
//! drop (also on error). The tracer's programs are told apart from anybody else's by id: we
//! list every program id before starting the tracer and only count programs with one of our
//! names whose id is new. run_time_ns / run_cnt are differences between a snapshot taken once
//! the tracer is ready and one taken right after iperf3, so loading and attaching are not
//! counted. Instances of the same program (one per node) are summed. With stats on, the
//! kernel adds two clock reads per program run, so these numbers are slightly pessimistic.

use std::{collections::HashSet, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    procs::run_capture,
    report::{CostRun, ProgCost, Proto},
    throughput::{self, Env, MISS_FILTER},
    Plan,
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Names of the tracer's programs (bpftool shows at most 15 characters; these fit).
pub const TRACER_PROGRAMS: &[&str] = &[
    "hop_ingress",
    "hop_egress",
    "hop_ingress_l3",
    "hop_egress_l3",
    "kfree_skb_btf",
    "kfree_skb_tp",
    "fib_lookup",
    "fib_lookup_btf",
];

/// Turns BPF run-time statistics on; restores the previous value on drop.
struct StatsOn {
    previous: String,
}

impl StatsOn {
    fn enable() -> Result<StatsOn> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(StatsOn { previous })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore kernel.bpf_stats_enabled={}: {e}",
                self.previous
            );
        }
    }
}

/// One program as `bpftool -j prog show` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgInfo {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

pub fn parse_prog_show(json: &str) -> Result<Vec<ProgInfo>> {
    let v: Value = serde_json::from_str(json).context("bpftool -j prog show: not JSON")?;
    let arr = v
        .as_array()
        .context("bpftool -j prog show: not a JSON array")?;
    Ok(arr
        .iter()
        .filter_map(|p| {
            Some(ProgInfo {
                id: p["id"].as_u64()?,
                name: p["name"].as_str().unwrap_or("").to_string(),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
            })
        })
        .collect())
}

fn prog_show() -> Result<Vec<ProgInfo>> {
    let out = run_capture(
        "bpftool",
        Command::new("bpftool").args(["-j", "prog", "show"]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            out.status,
            super::procs::last_lines(&out.stderr, 3)
        );
    }
    parse_prog_show(&out.stdout.join("\n"))
}

/// Per name: the difference `after - before` of the programs in `after` that are new (not in
/// `old_ids`) and carry one of the tracer's names, summed over instances; in
/// [`TRACER_PROGRAMS`] order.
pub fn cost_delta(
    old_ids: &HashSet<u64>,
    before: &[ProgInfo],
    after: &[ProgInfo],
) -> Vec<ProgCost> {
    let mut out: Vec<ProgCost> = Vec::new();
    for name in TRACER_PROGRAMS {
        let mut cost = ProgCost {
            name: name.to_string(),
            instances: 0,
            run_time_ns: 0,
            run_cnt: 0,
        };
        for a in after
            .iter()
            .filter(|p| p.name == *name && !old_ids.contains(&p.id))
        {
            let b = before.iter().find(|b| b.id == a.id);
            cost.instances += 1;
            cost.run_time_ns += a
                .run_time_ns
                .saturating_sub(b.map(|b| b.run_time_ns).unwrap_or(0));
            cost.run_cnt += a.run_cnt.saturating_sub(b.map(|b| b.run_cnt).unwrap_or(0));
        }
        if cost.instances > 0 {
            out.push(cost);
        }
    }
    out
}

/// Both runs (matching, then non-matching filter).
pub fn run(plan: &Plan, env: &Env) -> Result<Vec<CostRun>> {
    let _stats = StatsOn::enable()?;
    let mut runs = Vec::new();
    for (label, filter) in [
        ("match", env.match_filter.clone()),
        ("miss", MISS_FILTER.to_string()),
    ] {
        let r = match one(plan, env, &filter) {
            Ok((progs, bps)) => CostRun {
                label,
                filter,
                progs,
                bps,
                error: None,
            },
            Err(e) => CostRun {
                label,
                filter,
                progs: Vec::new(),
                bps: None,
                error: Some(format!("{e:#}")),
            },
        };
        eprintln!(
            "bench: program cost, {label} filter: tc average {} ns/run{}",
            r.tc_average()
                .map(|x| format!("{x:.1}"))
                .unwrap_or("-".into()),
            r.error
                .as_ref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        );
        runs.push(r);
    }
    Ok(runs)
}

/// The program costs and the TCP throughput of one run.
fn one(plan: &Plan, env: &Env, filter: &str) -> Result<(Vec<ProgCost>, Option<f64>)> {
    let old_ids: HashSet<u64> = prog_show()?.into_iter().map(|p| p.id).collect();
    let args = throughput::tracer_cmdline("trace", env, filter, &[]);
    let tracer = throughput::start_tracer(plan, env, &args)?;
    let before = prog_show()?;
    let sample = throughput::iperf(env, Proto::Tcp, plan.seconds)?;
    let after = prog_show()?;
    throughput::stop_tracer(tracer)?;
    let progs = cost_delta(&old_ids, &before, &after);
    if progs.is_empty() {
        bail!(
            "no new program named {} appeared",
            TRACER_PROGRAMS.join("/")
        );
    }
    Ok((progs, sample.bps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bpftool_and_counts_only_new_tracer_programs() {
        let before = parse_prog_show(
            r#"[{"id":1,"name":"hop_ingress","run_time_ns":500,"run_cnt":5},
                {"id":7,"name":"hop_ingress","run_time_ns":100,"run_cnt":1},
                {"id":8,"name":"hop_ingress","run_time_ns":0,"run_cnt":0},
                {"id":9,"name":"other"},{"type":"no id"}]"#,
        )
        .unwrap();
        assert_eq!(before.len(), 4);
        assert_eq!(before[3].run_cnt, 0);
        let after = parse_prog_show(
            r#"[{"id":1,"name":"hop_ingress","run_time_ns":9000,"run_cnt":90},
                {"id":7,"name":"hop_ingress","run_time_ns":1100,"run_cnt":11},
                {"id":8,"name":"hop_ingress","run_time_ns":2000,"run_cnt":10},
                {"id":10,"name":"fib_lookup","run_time_ns":300,"run_cnt":3},
                {"id":9,"name":"other","run_time_ns":5,"run_cnt":5}]"#,
        )
        .unwrap();
        let old: HashSet<u64> = [1, 9].into();
        let d = cost_delta(&old, &before, &after);
        assert_eq!(
            d,
            vec![
                ProgCost {
                    name: "hop_ingress".into(),
                    instances: 2,
                    run_time_ns: 3000,
                    run_cnt: 20
                },
                ProgCost {
                    name: "fib_lookup".into(),
                    instances: 1,
                    run_time_ns: 300,
                    run_cnt: 3
                },
            ]
        );
        assert_eq!(d[0].ns_per_run(), Some(150.0));
    }
}
