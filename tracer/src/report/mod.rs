//! `tracer report`: an incident report from one or several recordings, as one self-contained
//! HTML page (or Markdown, for a ticket or a postmortem).
//!
//! The report is another consumer of the pipeline that `replay` runs: the same inputs (files,
//! `-`, pipes; several merged across machines with their clock offsets, `merge`), the same
//! traces, verdicts and latency histograms, handed to a [`collect::Collector`] (a pipeline
//! `Observer`) instead of being printed. Nothing is judged or measured here that the pipeline
//! does not judge or measure itself.
//!
//! - `model`: the report as plain data, in the order it is shown: what failed (findings:
//!   verdict, place, evidence), whether the evidence is complete (the tracer's own losses apart
//!   from kernel drops, recordings cut short), the failing packets hop by hop, latency per
//!   segment, flows, the environment (machines, nodes, interfaces, tunnels, routes, clocks, and
//!   the audit of the node states the recordings carry, as `tracer check` runs it).
//! - `collect`: the observer (bounded memory) and the build of the model.
//! - `html`: one page, no script, no external reference (a Content-Security-Policy that
//!   allows none), print CSS; every string from a recording goes through maud's escaping.
//! - `markdown`: the same content, tables instead of charts, every string escaped.
//! - `svg`: the charts (sequence diagram, histograms) drawn with plotters' SVG backend.
//!
//! A damaged or truncated recording still gives a report: what precedes the damage is used and
//! the report opens with a notice that says what is missing. While the recordings are read, a
//! terminal on standard error shows the progress (`progress`).

mod collect;
mod html;
mod markdown;
mod model;
mod svg;
#[cfg(test)]
mod tests;

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use tracer_common::filter::FilterProgram;

use crate::{
    correlate::CorrelateConfig,
    latency::ClockModel,
    merge::{self, Input, ReplayOptions},
    pipeline::{PipelineConfig, SharedObserver},
    render::Output,
    replay,
};
use collect::Collector;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Recordings written by `tracer record --write FILE|-`: files, `-` for standard input, or
    /// pipes. Several are merged into one trace per packet across their machines.
    #[arg(value_name = "RECORDING", required = true)]
    pub files: Vec<PathBuf>,
    /// The report to write (replaced if it exists), or `-` for standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE|-")]
    pub output: PathBuf,
    /// `html` (one self-contained page) or `md` (Markdown); by default `md` for an output named
    /// `*.md`, else `html`.
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Only packets matching this filter (same syntax as `trace --filter`).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// The report's title.
    #[arg(long, default_value = "Incident report")]
    pub title: String,
    /// How long a packet's trace stays open after its latest hop, in ms (as in `replay`).
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub linger_ms: u64,
    #[command(flatten)]
    pub names: crate::k8s::NamesArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Html,
    Md,
}

impl Format {
    /// The format asked for, else the output's extension's.
    fn of(asked: Option<Format>, output: &Path) -> Format {
        asked.unwrap_or(match output.extension().and_then(|e| e.to_str()) {
            Some("md" | "markdown") => Format::Md,
            _ => Format::Html,
        })
    }
}

pub fn run(args: ReportArgs) -> Result<()> {
    let format = Format::of(args.format, &args.output);
    let filter = replay::compile_filter(args.filter.as_deref())?;
    let (inputs, clock) = replay::open_inputs(&args.files)?;
    let to_stdout = args.output.as_os_str() == "-";
    // Created first: a bad path fails before the recordings are read.
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        Box::new(BufWriter::new(File::create(&args.output).with_context(
            || format!("creating report {}", args.output.display()),
        )?))
    };
    let names = args.names.start_synced()?;
    let (opts, display) = replay::read_to_end(&inputs, names)?;
    let cfg = pipeline_config(clock, filter, args.linger_ms);
    let done = report_of(inputs, cfg, opts, args.title.clone());
    drop(display);
    let (report, warnings) = match done {
        Ok(d) => d,
        Err(e) => {
            // No report: no empty file left behind.
            drop(out);
            if !to_stdout {
                let _ = std::fs::remove_file(&args.output);
            }
            return Err(e);
        }
    };
    let text = match format {
        Format::Html => html::render(&report),
        Format::Md => markdown::render(&report),
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .with_context(|| format!("writing report {}", args.output.display()))?;
    for w in &warnings {
        eprintln!("tracer: warning: {w}");
    }
    for i in report
        .inputs
        .iter()
        .filter(|i| i.end != model::InputEnd::Complete)
    {
        eprintln!("tracer: warning: {}: {}", i.name, i.detail);
    }
    eprintln!("tracer: {}", status_line(&report, &args.output, text.len()));
    Ok(())
}

/// The pipeline as a report runs it: every trace, latency statistics kept, nothing printed.
fn pipeline_config(
    clock: ClockModel,
    filter: Option<FilterProgram>,
    linger_ms: u64,
) -> PipelineConfig {
    PipelineConfig {
        output: Output::Json,
        limit: None,
        stats: true,
        quiet: true,
        collect: false,
        kernel_agg: false,
        correlate: CorrelateConfig {
            linger_ns: linger_ms * 1_000_000,
            ..CorrelateConfig::default()
        },
        clock,
        filter,
    }
}

/// Reads the recordings through the pipeline, the collector observing it: the report, and the
/// merge's warnings.
fn report_of(
    inputs: Vec<Input>,
    cfg: PipelineConfig,
    opts: ReplayOptions,
    title: String,
) -> Result<(model::Report, Vec<String>)> {
    let collector = Arc::new(Mutex::new(Collector::default()));
    let observer: SharedObserver = collector.clone();
    let opts = ReplayOptions {
        observer: Some(observer),
        ..opts
    };
    let done = merge::replay(inputs, cfg, io::sink(), &opts)?;
    let collected = std::mem::take(&mut *collector.lock().unwrap_or_else(|e| e.into_inner()));
    let report = collect::build(collected, title, &done);
    Ok((report, done.warnings))
}

/// The command's last line: what was written, what failed, whether the evidence is complete.
fn status_line(r: &model::Report, output: &Path, bytes: usize) -> String {
    let failed = r.outcomes.failed();
    let verdicts: Vec<String> = r
        .findings
        .iter()
        .take(3)
        .map(|f| format!("{} x{}", f.verdict, f.count))
        .collect();
    let what = if failed == 0 {
        format!("{} traces, none dropped or lost", r.outcomes.traces)
    } else {
        format!(
            "{failed} of {} packets dropped or lost ({}{})",
            r.outcomes.traces,
            verdicts.join(", "),
            if r.findings.len() > 3 { ", ..." } else { "" }
        )
    };
    let evidence = if r.completeness.complete() {
        "evidence complete".to_string()
    } else {
        let n = r.completeness.missing.len();
        format!(
            "evidence INCOMPLETE ({n} gap{}, stated in the report)",
            if n == 1 { "" } else { "s" }
        )
    };
    let to = if output.as_os_str() == "-" {
        "standard output".to_string()
    } else {
        output.display().to_string()
    };
    format!(
        "report written to {to} ({:.1} kB): {what}; {evidence}",
        bytes as f64 / 1e3
    )
}

/// `850 ns`, `12.345 µs`, `3.456 ms`, `1.234 s`.
pub(crate) fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.3} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.3} ms", ns as f64 / 1e6),
        _ => format!("{:.3} s", ns as f64 / 1e9),
    }
}

/// `+12.345 µs`: time since a packet's first hop.
pub(crate) fn offset(ns: u64) -> String {
    format!("+{}", duration(ns))
}

/// A segment's value, negative ones too (a cross-machine estimate off within its bound).
pub(crate) fn signed(ns: i64) -> String {
    if ns < 0 {
        format!("-{}", duration(ns.unsigned_abs()))
    } else {
        duration(ns.unsigned_abs())
    }
}

/// A time of the report: the wall clock when known, else the reference monotonic clock.
pub(crate) fn moment(m: &model::Moment) -> String {
    match &m.wall {
        Some(w) => w.clone(),
        None => format!("{:.6} s (monotonic clock)", m.mono_ns as f64 / 1e9),
    }
}

/// `2026-12-01 10:22:33.123456 UTC` for ns since the epoch, with `decimals` (0..=9) digits of
/// the second.
pub(crate) fn wall_time(unix_ns: i128, decimals: u32) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let frac = unix_ns.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    let time = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let decimals = decimals.min(9);
    if decimals == 0 {
        format!("{time} UTC")
    } else {
        let f = frac / 10i128.pow(9 - decimals);
        format!("{time}.{f:0w$} UTC", w = decimals as usize)
    }
}
