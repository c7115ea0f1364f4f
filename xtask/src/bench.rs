//! `cargo xtask bench [--quick] [--rounds N] [--seconds S] [--json PATH]`: what the tracer
//! costs, measured side by side in one run, printed as a table of medians and ratios with the
//! project's targets (PASS/MISS) and written as JSON (default `target/bench.json`).
//!
//! Design notes:
//! - Phases, in order: (1) throughput on a 2-node VXLAN lab (`tbench`), iperf3 TCP and UDP
//!   (64-byte datagrams) from pod n1p0 to pod n2p0 with no tracer, the tracer tracing the flow
//!   (`trace-flow`, in full runs also with `--no-drops`), the tracer with a filter that
//!   matches nothing (`filter-miss`), `tracer stats` (`--kernel-agg` when `tracer stats --help`
//!   lists it, else user-space stats, and the row says so), and tcpdump on the same
//!   interfaces; (2) per-program cost with `kernel.bpf_stats_enabled` on the same lab;
//!   (3) CPU per packet at a fixed load and the tracer's memory (`cpu`), same configurations
//!   plus one node traced alone; (4) `tracer pipeline-bench` when the tracer has it (`tracer pipeline-bench --help`
//!   succeeds; it may be hidden from `tracer --help`); (5) start-up with 1/100/500 pods on a
//!   node (lab `tbench-up`). Module split: `throughput`, `kernel` (bpf stats), `startup`
//!   (start-up and pipeline), `procs` (process guards), `report` (pure: medians, targets, table,
//!   JSON; unit-tested).
//! - Configurations alternate within a round (ABCDE ABCDE ...) so drift spreads evenly; the
//!   table shows medians over rounds and ratios of medians to the baseline. Lost events are
//!   never hidden: each tracer instance is stopped with SIGINT and its `lost_events` read from
//!   the `{"summary":...}` line; tcpdump's "dropped by kernel" stands in the same column.
//! - Measurements are never adjusted to meet a target. Missing a target exits 0; the command
//!   exits non-zero only when something could not run (a lab, a tool, a measurement), after
//!   still printing the table and writing the JSON with the errors in it.
//! - Cleanup: labs are RAII (`lab::Lab`), every child process is a `procs::Proc` killed on
//!   drop, the sysctl is restored by a guard, scratch files (ready files, pcaps) live in one
//!   directory removed on drop. A run killed by a signal cannot unwind: its children get the
//!   same Ctrl-C, its labs are removed at the next start, but `kernel.bpf_stats_enabled` may
//!   stay 1 if it was killed during the per-program phase.
//! - `--quick` (CI smoke, well under a minute): 1 round of 1 s, no `--no-drops` row, start-up
//!   with 1 and 100 pods only, a small pipeline run. Its numbers are not meaningful.
//! - The machine has 2 cores: iperf3 client, server and the kernel's softirq work already
//!   compete for them, so any user-space work of the tracer shows up in throughput. That is
//!   the point of the comparison, but absolute numbers vary a lot between machines.

mod cpu;
mod floor;
mod kernel;
mod procs;

pub use procs::format_cmd;
mod report;
mod startup;
mod throughput;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::Args;
use lab::{Encap, Lab, LabSpec};

use crate::{build_tracer, setup};

/// Prefix of the throughput lab.
const LAB_PREFIX: &str = "tbench";

#[derive(Args)]
pub struct BenchArgs {
    /// CI smoke form: 1 round of 1 s per measurement and fewer pods; checks that the
    /// benchmark runs and prints its table, not its numbers.
    #[arg(long)]
    quick: bool,
    /// Rounds of alternated configurations (default 3; 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per iperf3 measurement (default 3; 1 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// Where to write the JSON results (default target/bench.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

impl BenchArgs {
    /// The smoke form (`--quick`) with its defaults, as `cargo xtask test` runs it.
    pub fn quick() -> Self {
        BenchArgs {
            quick: true,
            rounds: None,
            seconds: None,
            json: None,
        }
    }
}

/// What this run measures and with what.
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub seconds: u64,
    pub tracer: PathBuf,
    /// `tracer stats` has `--kernel-agg`.
    pub kernel_agg: bool,
    /// `tracer` has a `pipeline-bench` subcommand.
    pub pipeline_bench: bool,
    pub pipeline_events: u64,
    pub startup_pods: Vec<usize>,
    pub startup_reps: usize,
    pub scratch: PathBuf,
}

impl Plan {
    fn new(args: &BenchArgs, tracer: PathBuf, scratch: &Path) -> Result<Plan> {
        let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 });
        let seconds = args.seconds.unwrap_or(if args.quick { 1 } else { 3 });
        if rounds == 0 || seconds == 0 {
            bail!("--rounds and --seconds must be at least 1");
        }
        let help = |args: &[&str]| -> Option<String> {
            Command::new(&tracer)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let kernel_agg = help(&["stats", "--help"]).is_some_and(|h| h.contains("--kernel-agg"));
        // The subcommand may be hidden from `tracer --help`: ask it directly.
        let pipeline_bench = help(&["pipeline-bench", "--help"]).is_some();
        Ok(Plan {
            quick: args.quick,
            rounds,
            seconds,
            tracer,
            kernel_agg,
            pipeline_bench,
            pipeline_events: if args.quick { 200_000 } else { 2_000_000 },
            startup_pods: if args.quick {
                vec![1, 100]
            } else {
                vec![1, 100, 500]
            },
            startup_reps: rounds,
            scratch: scratch.to_path_buf(),
        })
    }
}

/// A private scratch directory, removed with everything in it on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    setup::run(true)?;
    if !setup::is_root() {
        bail!("the benchmark attaches eBPF programs and builds network namespaces: run it as root (sudo -E cargo xtask bench)");
    }
    let tracer = build_tracer()?;
    let scratch = Scratch::new()?;
    let plan = Plan::new(&args, tracer, &scratch.0)?;
    if !plan.kernel_agg {
        eprintln!(
            "bench: `tracer stats --help` has no --kernel-agg: the stats-kernel row measures user-space stats"
        );
    }
    let started = Instant::now();
    let mut results = report::Results {
        quick: plan.quick,
        rounds: plan.rounds,
        seconds: plan.seconds,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        tracer: plan.tracer.display().to_string(),
        kernel_agg: plan.kernel_agg,
        ..report::Results::default()
    };
    if let Err(e) = network_phases(&plan, &mut results) {
        results.errors.push(format!("throughput lab: {e:#}"));
    }
    results.pipeline = Some(startup::pipeline(&plan));
    results.startup = startup::run(&plan);
    results.elapsed_s = started.elapsed().as_secs_f64();

    print!("{}", report::render(&results));
    let path = args
        .json
        .unwrap_or_else(|| crate::target_dir().join("bench.json"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report::to_json(&results))?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("\nJSON: {}", path.display());
    let errors = results.all_errors();
    if !errors.is_empty() {
        bail!(
            "{} part(s) of the benchmark could not run (see Errors above)",
            errors.len()
        );
    }
    Ok(())
}

/// Throughput and per-program cost on one 2-node VXLAN lab (removed at the end, also on error).
fn network_phases(plan: &Plan, results: &mut report::Results) -> Result<()> {
    // A benchmark killed halfway may have left its namespaces behind.
    lab::down_prefix(LAB_PREFIX)?;
    lab::down_prefix(startup::STARTUP_PREFIX)?;
    let lab = Lab::up(&LabSpec {
        prefix: LAB_PREFIX.into(),
        nodes: 2,
        pods_per_node: 1,
        encap: Encap::Vxlan,
        services: None,
    })?;
    let env = throughput::Env::new(lab.topology(), &plan.scratch)?;
    lab::traffic::ping(&env.client_ns, env.server_ip.parse()?, 1, true)
        .context("the lab does not carry traffic between n1p0 and n2p0")?;
    results.throughput = throughput::run(plan, &env);
    match kernel::run(plan, &env) {
        Ok(c) => results.cost = c,
        Err(e) => results.errors.push(format!("per-program cost: {e:#}")),
    }
    results.cpu = Some(cpu::run(plan, &env));
    drop(env);
    lab.down()
}
