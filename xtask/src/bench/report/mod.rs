//! Results of `cargo xtask bench`: the data model, medians and ratios, the targets, the table
//! on stdout and the JSON file.
//!
//! Design note: this half is pure (no processes, no root) so that it is unit-tested. Every
//! number in the table is a median over rounds, ratios are median / median of the baseline,
//! and lost events are shown as the maximum over rounds (a loss in any round is visible).
//! Targets are evaluated on exactly the numbers shown; a target whose input is missing is
//! `n/a`, never PASS.

use std::fmt::Write as _;

use serde_json::{json, Value};

pub mod cpu;

/// One iperf3 measurement (one configuration, one protocol, one round).
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Throughput at the receiver, bits/s.
    pub bps: Option<f64>,
    /// UDP datagrams received per second.
    pub pps: Option<f64>,
    /// `lost_events` of the tracer's summary line (tracer configurations).
    pub lost: Option<u64>,
    /// Packets tcpdump reported as "dropped by kernel", summed over its processes.
    pub tool_drops: Option<u64>,
    pub error: Option<String>,
}

/// Every round of one configuration.
#[derive(Clone, Debug)]
pub struct ConfigResult {
    /// Stable name (`baseline`, `trace-flow`, ...), the JSON key.
    pub name: &'static str,
    /// Shown in the table (may carry a note such as "user-space stats").
    pub label: String,
    /// The command that ran next to iperf3 (empty for the baseline).
    pub command: String,
    pub tcp: Vec<Sample>,
    pub udp: Vec<Sample>,
}

/// run_time_ns / run_cnt of one program name, summed over its instances (one per node).
#[derive(Clone, Debug, PartialEq)]
pub struct ProgCost {
    pub name: String,
    pub instances: usize,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgCost {
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

/// One tc program run `repeat` times with `BPF_PROG_TEST_RUN` on one synthetic frame: its own
/// cost, without traffic, cache misses of a real path, or bpf_stats' clock reads.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRunCost {
    pub program: String,
    /// `vxlan` (a VXLAN frame with the pods' TCP packet inside) or `tcp` (that packet alone).
    pub frame: &'static str,
    pub repeat: u32,
    pub ns: f64,
    /// An empty pass-through tc program on the same frame, as many runs, just before: the
    /// test run's own cost on this machine (see `floor`).
    pub floor_ns: Option<f64>,
}

impl TestRunCost {
    /// The program's own cost: its figure minus the empty program's.
    pub fn own_ns(&self) -> Option<f64> {
        self.floor_ns.map(|f| (self.ns - f).max(0.0))
    }
}

/// The tc hop programs (the ones with the per-packet target).
pub const TC_PROGRAMS: &[&str] = &[
    "hop_ingress",
    "hop_egress",
    "hop_ingress_l3",
    "hop_egress_l3",
];

/// One per-program cost run: the tracer with one filter during a TCP iperf3.
#[derive(Clone, Debug)]
pub struct CostRun {
    /// `match` or `miss`.
    pub label: &'static str,
    pub filter: String,
    pub progs: Vec<ProgCost>,
    /// The same programs on synthetic frames (`BPF_PROG_TEST_RUN`).
    pub test_runs: Vec<TestRunCost>,
    /// TCP throughput during the run (stats collection on), bits/s.
    pub bps: Option<f64>,
    pub error: Option<String>,
}

/// The per-packet target for a tc program: reporting the packet (`match` filter) or
/// rejecting it (`miss`).
pub fn tc_limit_ns(label: &str) -> f64 {
    if label == "miss" {
        30.0
    } else {
        100.0
    }
}

impl CostRun {
    /// Average ns per run over the tc programs, weighted by runs.
    pub fn tc_average(&self) -> Option<f64> {
        let tc = self
            .progs
            .iter()
            .filter(|p| TC_PROGRAMS.contains(&p.name.as_str()));
        let (ns, cnt) = tc.fold((0u64, 0u64), |(n, c), p| (n + p.run_time_ns, c + p.run_cnt));
        (cnt > 0).then(|| ns as f64 / cnt as f64)
    }
}

#[derive(Clone, Debug)]
pub enum Pipeline {
    /// The tracer has no `pipeline-bench` subcommand.
    Unavailable,
    Measured {
        events: u64,
        /// Decode + correlate + latency, events/s per run.
        samples: Vec<f64>,
        /// The same with every trace rendered as a JSON line (`--render json`).
        with_json: Vec<f64>,
    },
    Failed(String),
}

/// Start-up with one lab size.
#[derive(Clone, Debug, Default)]
pub struct StartupRow {
    pub pods: usize,
    /// Spawn to ready file, ms, per repetition.
    pub ready_ms: Vec<f64>,
    /// The tracer's own `attached in N ms`, per repetition.
    pub attached_ms: Vec<f64>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub quick: bool,
    pub rounds: usize,
    pub seconds: u64,
    pub kernel: String,
    pub tracer: String,
    /// The stats-kernel row ran `tracer stats --kernel-agg` (else user-space stats).
    pub kernel_agg: bool,
    pub throughput: Vec<ConfigResult>,
    pub cost: Vec<CostRun>,
    /// CPU per packet at a fixed load, and memory.
    pub cpu: Option<cpu::CpuPhase>,
    pub pipeline: Option<Pipeline>,
    pub startup: Vec<StartupRow>,
    /// Phases that could not run at all.
    pub errors: Vec<String>,
    pub elapsed_s: f64,
}

/// Median of the values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

pub fn ratio(x: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (x, base) {
        (Some(x), Some(b)) if b > 0.0 => Some(x / b),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl ConfigResult {
    pub fn samples(&self, p: Proto) -> &[Sample] {
        match p {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }

    pub fn median_bps(&self, p: Proto) -> Option<f64> {
        median(
            &self
                .samples(p)
                .iter()
                .filter_map(|s| s.bps)
                .collect::<Vec<_>>(),
        )
    }

    pub fn median_pps(&self, p: Proto) -> Option<f64> {
        median(
            &self
                .samples(p)
                .iter()
                .filter_map(|s| s.pps)
                .collect::<Vec<_>>(),
        )
    }

    /// Largest loss over the rounds (tracer events, or tcpdump's kernel drops).
    pub fn max_lost(&self, p: Proto) -> Option<u64> {
        self.samples(p)
            .iter()
            .filter_map(|s| s.lost.or(s.tool_drops))
            .max()
    }

    fn errors(&self) -> usize {
        self.tcp
            .iter()
            .chain(&self.udp)
            .filter(|s| s.error.is_some())
            .count()
    }
}

impl Results {
    pub fn config(&self, name: &str) -> Option<&ConfigResult> {
        self.throughput.iter().find(|c| c.name == name)
    }

    /// Median of `name` over the baseline's median.
    pub fn tput_ratio(&self, name: &str, p: Proto) -> Option<f64> {
        let base = self.config("baseline")?.median_bps(p);
        ratio(self.config(name)?.median_bps(p), base)
    }

    /// Every error of a measurement or phase, for the exit status.
    pub fn all_errors(&self) -> Vec<String> {
        let mut out = self.errors.clone();
        for c in &self.throughput {
            for (p, s) in [("tcp", &c.tcp), ("udp", &c.udp)] {
                for (round, s) in s.iter().enumerate() {
                    if let Some(e) = &s.error {
                        out.push(format!("{} {p} round {}: {e}", c.name, round + 1));
                    }
                }
            }
        }
        for c in self.cpu.iter().flat_map(|c| &c.configs) {
            for (p, s) in [("tcp", &c.tcp), ("udp", &c.udp)] {
                for (round, s) in s.iter().enumerate() {
                    if let Some(e) = &s.error {
                        out.push(format!("cpu {} {p} round {}: {e}", c.name, round + 1));
                    }
                }
            }
        }
        out.extend(
            self.cost
                .iter()
                .filter_map(|c| c.error.as_ref().map(|e| format!("cost {}: {e}", c.label))),
        );
        if let Some(Pipeline::Failed(e)) = &self.pipeline {
            out.push(format!("pipeline-bench: {e}"));
        }
        out.extend(self.startup.iter().filter_map(|r| {
            r.error
                .as_ref()
                .map(|e| format!("start-up {} pods: {e}", r.pods))
        }));
        out
    }
}

/// One target: what it says, the measured value, and PASS / MISS / n/a.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub name: String,
    pub value: String,
    pub pass: Option<bool>,
}

impl Target {
    pub(crate) fn new(
        name: impl Into<String>,
        value: Option<f64>,
        fmt: impl Fn(f64) -> String,
        ok: impl Fn(f64) -> bool,
    ) -> Target {
        Target {
            name: name.into(),
            value: value.map(&fmt).unwrap_or_else(|| "n/a".into()),
            pass: value.map(ok),
        }
    }

    pub fn verdict(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        }
    }
}

/// Tracer configurations whose lost events must be zero at the TCP load.
const TRACER_CONFIGS: &[&str] = &[
    "trace-flow",
    "trace-flow-nodrops",
    "record-flow",
    "record-flow-snaplen128",
    "filter-miss",
    "stats-kernel",
];

pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let r3 = |x: f64| format!("{x:.3}");
    for (name, min) in [
        ("trace-flow", 0.95),
        ("record-flow", 0.95),
        ("filter-miss", 0.98),
        ("stats-kernel", 0.98),
    ] {
        for (p, pn) in [(Proto::Tcp, "TCP"), (Proto::Udp, "UDP")] {
            t.push(Target::new(
                format!("{name} {pn} throughput ratio >= {min}"),
                r.tput_ratio(name, p),
                r3,
                |x| x >= min,
            ));
        }
    }
    for (config, (p, pn)) in ["trace-flow", "record-flow"]
        .into_iter()
        .flat_map(|c| [(c, (Proto::Tcp, "TCP")), (c, (Proto::Udp, "UDP"))])
    {
        let (a, b) = (r.tput_ratio(config, p), r.tput_ratio("tcpdump", p));
        if config == "record-flow" && a.is_none() {
            continue;
        }
        let diff = a.zip(b).map(|(a, b)| a - b);
        t.push(Target {
            name: format!("tracer faster than tcpdump, {pn} ({config} ratio > tcpdump ratio)"),
            value: match (a, b) {
                (Some(a), Some(b)) => format!("{a:.3} vs {b:.3}"),
                _ => "n/a".into(),
            },
            pass: diff.map(|d| d > 0.0),
        });
    }
    for c in &r.cost {
        let limit = tc_limit_ns(c.label);
        t.push(Target::new(
            format!(
                "tc programs <= {limit} ns per packet under TCP, bpf_stats ({} filter)",
                c.label
            ),
            c.tc_average(),
            |x| format!("{x:.0} ns"),
            move |x| x <= limit,
        ));
    }
    // The same targets for the programs' own cost on synthetic frames (no bpf_stats, no
    // traffic, the empty program's figure taken off): reported next to, never instead of, the
    // measurement under traffic above.
    for c in r.cost.iter().filter(|c| !c.test_runs.is_empty()) {
        let limit = tc_limit_ns(c.label);
        let own: Option<Vec<f64>> = c.test_runs.iter().map(TestRunCost::own_ns).collect();
        let mean = own.map(|o| o.iter().sum::<f64>() / o.len() as f64);
        t.push(Target::new(
            format!(
                "tc programs' own cost <= {limit} ns per packet, BPF_PROG_TEST_RUN minus an \
                 empty program ({} filter)",
                c.label
            ),
            mean,
            |x| format!("{x:.0} ns"),
            move |x| x <= limit,
        ));
    }
    let (pipe, json) = match &r.pipeline {
        Some(Pipeline::Measured {
            samples, with_json, ..
        }) => (median(samples), median(with_json)),
        _ => (None, None),
    };
    t.push(Target::new(
        "user-space pipeline (decode + correlate) >= 5 M events/s",
        pipe,
        |x| format!("{:.2} M/s", x / 1e6),
        |x| x >= 5e6,
    ));
    t.push(Target::new(
        "user-space pipeline with JSON rendering >= 3 M events/s",
        json,
        |x| format!("{:.2} M/s", x / 1e6),
        |x| x >= 3e6,
    ));
    for name in TRACER_CONFIGS {
        if let Some(c) = r.config(name) {
            t.push(Target::new(
                format!("zero lost events at TCP load ({name})"),
                c.max_lost(Proto::Tcp).map(|x| x as f64),
                |x| format!("{x:.0}"),
                |x| x == 0.0,
            ));
        }
    }
    if let Some(c) = &r.cpu {
        t.extend(cpu::targets(c));
    }
    let s500 = r.startup.iter().find(|s| s.pods == 500);
    t.push(Target::new(
        "attach to 500 pods < 2 s (start to ready file)",
        s500.and_then(|s| median(&s.ready_ms)),
        |x| format!("{x:.0} ms"),
        |x| x < 2000.0,
    ));
    t
}

fn opt(v: Option<f64>, scale: f64, prec: usize) -> String {
    v.map(|x| format!("{:.*}", prec, x / scale))
        .unwrap_or_else(|| "-".into())
}

fn lost_cell(c: &ConfigResult, p: Proto) -> String {
    let drops = c.samples(p).iter().any(|s| s.tool_drops.is_some());
    match c.max_lost(p) {
        Some(n) if drops => format!("{n} (tcpdump)"),
        Some(n) => n.to_string(),
        None => "-".into(),
    }
}

/// The whole report as text.
pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let mode = if r.quick {
        " (quick: numbers are not meaningful)"
    } else {
        ""
    };
    let _ = writeln!(
        o,
        "\n== tracer benchmark{mode}: {} round(s) x {} s, kernel {}, {:.0} s in total",
        r.rounds, r.seconds, r.kernel, r.elapsed_s
    );
    if !r.throughput.is_empty() {
        let _ = writeln!(
            o,
            "\nThroughput: iperf3 n1p0 -> n2p0 across VXLAN (client on CPU 0, server on CPU 1 where\n\
             there are two), median over rounds, ratio to baseline;\n\
             lost = tracer lost_events (max over rounds), or tcpdump's 'dropped by kernel'"
        );
        let _ = writeln!(
            o,
            "{:<34} {:>9} {:>7} {:>16}   {:>9} {:>7} {:>16}",
            "configuration", "TCP Gb/s", "ratio", "lost", "UDP kpps", "ratio", "lost"
        );
        for c in &r.throughput {
            let mut label = c.label.clone();
            let errs = c.errors();
            if errs > 0 {
                label.push_str(&format!(" [{errs} failed]"));
            }
            let _ = writeln!(
                o,
                "{:<34} {:>9} {:>7} {:>16}   {:>9} {:>7} {:>16}",
                label,
                opt(c.median_bps(Proto::Tcp), 1e9, 2),
                opt(r.tput_ratio(c.name, Proto::Tcp), 1.0, 3),
                lost_cell(c, Proto::Tcp),
                opt(c.median_pps(Proto::Udp), 1e3, 1),
                opt(r.tput_ratio(c.name, Proto::Udp), 1.0, 3),
                lost_cell(c, Proto::Udp),
            );
        }
    }
    if !r.cost.is_empty() {
        let _ = writeln!(
            o,
            "\nPer-program cost (kernel.bpf_stats_enabled=1, TCP iperf3, both nodes): ns per run"
        );
        let mut head = format!("{:<18}", "program");
        for c in &r.cost {
            head.push_str(&format!(
                " {:>14} {:>12}",
                format!("{} ns/run", c.label),
                "runs"
            ));
        }
        let _ = writeln!(o, "{head}");
        let mut names: Vec<&str> = Vec::new();
        for c in &r.cost {
            for p in &c.progs {
                if !names.contains(&p.name.as_str()) {
                    names.push(&p.name);
                }
            }
        }
        for name in names {
            let mut line = format!("{name:<18}");
            for c in &r.cost {
                let p = c.progs.iter().find(|p| p.name == name);
                line.push_str(&format!(
                    " {:>14} {:>12}",
                    opt(p.and_then(ProgCost::ns_per_run), 1.0, 1),
                    p.map(|p| p.run_cnt.to_string())
                        .unwrap_or_else(|| "-".into())
                ));
            }
            let _ = writeln!(o, "{line}");
        }
        let mut avg = format!("{:<18}", "tc average");
        let mut tput = format!("{:<18}", "TCP Gb/s");
        for c in &r.cost {
            avg.push_str(&format!(" {:>14} {:>12}", opt(c.tc_average(), 1.0, 1), ""));
            tput.push_str(&format!(" {:>14} {:>12}", opt(c.bps, 1e9, 2), ""));
        }
        let _ = writeln!(o, "{avg}\n{tput}");
        for c in &r.cost {
            let _ = writeln!(o, "  {} filter: {}", c.label, c.filter);
        }
        for c in r.cost.iter().filter(|c| !c.test_runs.is_empty()) {
            let runs: Vec<String> = c
                .test_runs
                .iter()
                .map(|t| match t.floor_ns {
                    Some(f) => format!(
                        "{} {} {:.0} ns (own {:.0}: empty program {f:.0})",
                        t.program,
                        t.frame,
                        t.ns,
                        t.ns - f
                    ),
                    None => format!("{} {} {:.0} ns", t.program, t.frame, t.ns),
                })
                .collect();
            let _ = writeln!(
                o,
                "  BPF_PROG_TEST_RUN, {} filter, {} runs of one frame each: {}",
                c.label,
                c.test_runs[0].repeat,
                runs.join(", ")
            );
        }
    }
    if let Some(c) = &r.cpu {
        cpu::render(c, &mut o);
    }
    if let Some(p) = &r.pipeline {
        let text = match p {
            Pipeline::Unavailable => "n/a (tracer has no pipeline-bench)".to_string(),
            Pipeline::Failed(e) => format!("failed: {e}"),
            Pipeline::Measured {
                events,
                samples,
                with_json,
            } => format!(
                "{} M events/s decode + correlate, {} M events/s with JSON rendering (medians \
                 of {}, {} events each)",
                opt(median(samples), 1e6, 2),
                opt(median(with_json), 1e6, 2),
                samples.len(),
                events
            ),
        };
        let _ = writeln!(o, "\nUser-space pipeline (tracer pipeline-bench): {text}");
    }
    if !r.startup.is_empty() {
        let _ = writeln!(
            o,
            "\nStart-up: tracer trace --netns node1, median over repetitions"
        );
        let _ = writeln!(
            o,
            "{:<14} {:>16} {:>22}",
            "pods on node1", "to ready file ms", "'attached in' ms"
        );
        for s in &r.startup {
            let err = if s.error.is_some() { "  [failed]" } else { "" };
            let _ = writeln!(
                o,
                "{:<14} {:>16} {:>22}{err}",
                s.pods,
                opt(median(&s.ready_ms), 1.0, 0),
                opt(median(&s.attached_ms), 1.0, 0)
            );
        }
    }
    let _ = writeln!(o, "\nTargets");
    for t in targets(r) {
        let _ = writeln!(o, "  {:<72} {:>16}  {}", t.name, t.value, t.verdict());
    }
    let errors = r.all_errors();
    if !errors.is_empty() {
        let _ = writeln!(o, "\nErrors");
        for e in errors {
            let _ = writeln!(o, "  {e}");
        }
    }
    o
}

fn samples_json(s: &[Sample]) -> Value {
    Value::Array(
        s.iter()
            .map(|s| {
                json!({"bps": s.bps, "pps": s.pps, "lost_events": s.lost,
                       "tcpdump_kernel_drops": s.tool_drops, "error": s.error})
            })
            .collect(),
    )
}

/// The machine-readable form of everything in the table (and the per-round samples).
pub fn to_json(r: &Results) -> Value {
    let mut tput = serde_json::Map::new();
    for c in &r.throughput {
        let mut entry = json!({"label": c.label, "command": c.command});
        for (key, p) in [("tcp", Proto::Tcp), ("udp", Proto::Udp)] {
            entry[key] = json!({
                "median_bps": c.median_bps(p),
                "median_pps": c.median_pps(p),
                "ratio": r.tput_ratio(c.name, p),
                "max_lost": c.max_lost(p),
                "samples": samples_json(c.samples(p)),
            });
        }
        tput.insert(c.name.to_string(), entry);
    }
    let cost: Vec<Value> = r
        .cost
        .iter()
        .map(|c| {
            json!({
                "filter_kind": c.label, "filter": c.filter, "tcp_bps": c.bps,
                "tc_average_ns": c.tc_average(), "error": c.error,
                "test_runs": c.test_runs.iter().map(|t| json!({
                    "program": t.program, "frame": t.frame, "repeat": t.repeat, "ns": t.ns,
                    "empty_program_ns": t.floor_ns, "own_ns": t.own_ns(),
                })).collect::<Vec<_>>(),
                "programs": c.progs.iter().map(|p| json!({
                    "name": p.name, "instances": p.instances, "run_time_ns": p.run_time_ns,
                    "run_cnt": p.run_cnt, "ns_per_run": p.ns_per_run(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let pipeline = match &r.pipeline {
        None => Value::Null,
        Some(Pipeline::Unavailable) => json!({"available": false}),
        Some(Pipeline::Failed(e)) => json!({"available": true, "error": e}),
        Some(Pipeline::Measured {
            events,
            samples,
            with_json,
        }) => json!({
            "available": true, "events": events, "events_per_sec": samples,
            "median_events_per_sec": median(samples),
            "json_render_events_per_sec": with_json,
            "median_json_render_events_per_sec": median(with_json),
        }),
    };
    let startup: Vec<Value> = r
        .startup
        .iter()
        .map(|s| {
            json!({"pods": s.pods, "ready_ms": s.ready_ms, "attached_ms": s.attached_ms,
                   "median_ready_ms": median(&s.ready_ms),
                   "median_attached_ms": median(&s.attached_ms), "error": s.error})
        })
        .collect();
    let targets: Vec<Value> = targets(r)
        .into_iter()
        .map(|t| json!({"target": t.name, "value": t.value, "pass": t.pass}))
        .collect();
    json!({
        "quick": r.quick, "rounds": r.rounds, "seconds": r.seconds, "kernel": r.kernel,
        "tracer": r.tracer, "elapsed_s": r.elapsed_s, "stats_kernel_agg": r.kernel_agg,
        "throughput": tput, "program_cost": cost, "pipeline": pipeline, "startup": startup,
        "cpu_per_packet": r.cpu.as_ref().map(cpu::to_json),
        "targets": targets, "errors": r.all_errors(),
    })
}

#[cfg(test)]
mod tests;
