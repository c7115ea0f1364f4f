//! Start-up time with 1, 100 and 500 pods on a node, and the user-space pipeline throughput.
//!
//! Design note: start-up is measured from just before the tracer is spawned to its ready file
//! appearing (polled every 2 ms), i.e. what a user or a test waits for, including the drop
//! hooks; the tracer's own `attached in N ms` line (from the start of attaching to the last
//! program attached, global hooks included) is reported next to it.
//! Each lab size gets its own lab (prefix `tbench-up`, removed before the next one); the lab is
//! idle while the tracer starts. The pipeline benchmark is the tracer's own
//! `pipeline-bench` subcommand, used only when the tracer has it.

use std::{process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use lab::{Encap, Lab, LabSpec};
use serde_json::Value;

use super::{
    procs::{run_capture, Proc, Stdout},
    report::{Pipeline, StartupRow},
    Plan,
};

pub const STARTUP_PREFIX: &str = "tbench-up";

pub fn run(plan: &Plan) -> Vec<StartupRow> {
    plan.startup_pods
        .iter()
        .map(|&pods| {
            let mut row = StartupRow {
                pods,
                ..StartupRow::default()
            };
            if let Err(e) = one_size(plan, &mut row) {
                row.error = Some(format!("{e:#}"));
            }
            eprintln!(
                "bench: start-up with {pods} pods: ready {:?} ms, attached {:?} ms{}",
                row.ready_ms,
                row.attached_ms,
                row.error
                    .as_ref()
                    .map(|e| format!(" (error: {e})"))
                    .unwrap_or_default()
            );
            row
        })
        .collect()
}

fn one_size(plan: &Plan, row: &mut StartupRow) -> Result<()> {
    lab::down_prefix(STARTUP_PREFIX)?;
    let lab = Lab::up(&LabSpec {
        prefix: STARTUP_PREFIX.into(),
        nodes: 2,
        pods_per_node: row.pods,
        encap: Encap::Vxlan,
        services: None,
    })?;
    let node = lab
        .topology()
        .node("node1")
        .context("lab has no node1")?
        .netns
        .clone();
    let ready = plan.scratch.join("startup.ready");
    for _ in 0..plan.startup_reps {
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(&plan.tracer);
        cmd.args(["trace", "--netns", &node, "--ready-file"])
            .arg(&ready);
        let mut p = Proc::spawn("tracer (start-up)", &mut cmd, Stdout::Null)?;
        let took = p.wait_file(&ready, Duration::from_secs(120))?;
        let out = p.stop(Duration::from_secs(20))?;
        if !out.status.success() {
            bail!("the tracer exited with {}", out.status);
        }
        row.ready_ms.push(took.as_secs_f64() * 1000.0);
        if let Some(ms) = attached_ms(&out.stderr) {
            row.attached_ms.push(ms);
        }
    }
    let _ = std::fs::remove_file(&ready);
    lab.down()
}

/// N of the tracer's `tracer: attached in N ms; ...` line.
pub fn attached_ms(stderr: &[String]) -> Option<f64> {
    stderr.iter().find_map(|l| {
        let rest = l.split("attached in ").nth(1)?;
        rest.split(" ms").next()?.trim().parse().ok()
    })
}

pub fn pipeline(plan: &Plan) -> Pipeline {
    if !plan.pipeline_bench {
        return Pipeline::Unavailable;
    }
    let (mut samples, mut with_json) = (Vec::new(), Vec::new());
    for _ in 0..plan.rounds {
        for (render, out) in [(false, &mut samples), (true, &mut with_json)] {
            match pipeline_once(plan, render) {
                Ok(x) => out.push(x),
                Err(e) => return Pipeline::Failed(format!("{e:#}")),
            }
        }
    }
    eprintln!("bench: pipeline-bench: {samples:?} events/s, with JSON rendering {with_json:?}");
    Pipeline::Measured {
        events: plan.pipeline_events,
        samples,
        with_json,
    }
}

/// One `tracer pipeline-bench` run; `render`: also render every trace as JSON.
fn pipeline_once(plan: &Plan, render: bool) -> Result<f64> {
    let events = plan.pipeline_events.to_string();
    let mut args = vec!["pipeline-bench", "--events", &events];
    if render {
        args.extend(["--render", "json"]);
    }
    let out = run_capture(
        "tracer pipeline-bench",
        Command::new(&plan.tracer).args(&args),
        Duration::from_secs(120),
    )?;
    if !out.status.success() {
        bail!(
            "tracer pipeline-bench exited with {}: {}",
            out.status,
            super::procs::last_lines(&out.stderr, 4)
        );
    }
    events_per_sec(&out.stdout).context("no JSON line with events_per_sec from pipeline-bench")
}

/// `events_per_sec` of the last JSON line that has it.
pub fn events_per_sec(lines: &[String]) -> Option<f64> {
    lines.iter().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        v.get("events_per_sec")?.as_f64()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attached_and_pipeline_lines() {
        let err: Vec<String> = [
            "tracer: tbench-up-node1: 6 programs on eth0",
            "tracer: attached in 387 ms; filter: none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(attached_ms(&err), Some(387.0));
        assert_eq!(attached_ms(&err[..1]), None);
        let out =
            vec![r#"{"events":1000,"seconds":0.0004,"events_per_sec":2500000.0}"#.to_string()];
        assert_eq!(events_per_sec(&out), Some(2.5e6));
    }
}
