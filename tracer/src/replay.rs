//! `tracer replay`: prints the traces, verdicts and latency of one recording, or of several
//! machines' recordings merged into one trace per packet (see `merge`), as `tracer trace`
//! would have printed them live. Inputs are files, or streams followed as they arrive
//! (`-` for standard input, `<(ssh node tracer record --write - ...)`); `--follow` waits at
//! the end of a file that is still being written.
//!
//! A recording cut short is replayed up to its last whole frame with a warning; a damaged one
//! prints what came before the damage and fails; an input that is not a recording is named
//! and the others are still merged. While the traces go to a file or a pipe, a terminal on
//! standard error shows the progress (`progress`).

use std::{
    io::{self, BufWriter, IsTerminal},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Result;
use clap::Args;

use crate::{
    filter::Filter,
    k8s::NamesArgs,
    latency::{ClockModel, ClockSource},
    merge::{self, end_text, Input, ReplayEnd, ReplayOptions},
    pipeline::{PipelineConfig, PrintArgs},
    progress::{self, Counters, LossUnit},
    recording::Reader,
    signals,
};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Recordings written by `tracer record --write FILE|-`: files, `-` for standard input, or
    /// pipes. Several are merged into one trace per packet across their machines.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Only packets matching this filter (same syntax as `trace --filter`), on top of the
    /// filter the recordings were made with.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    #[command(flatten)]
    pub print: PrintArgs,
    /// Per-segment latency statistics as well (`trace --stats`).
    #[arg(long)]
    pub stats: bool,
    /// Only the latency statistics, no per-packet lines (`tracer stats`).
    #[arg(long)]
    pub stats_only: bool,
    /// At the end of a file, wait for more (a recording still being written) until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub names: NamesArgs,
}

fn clock_model(name: &str) -> Result<ClockModel> {
    if name == ClockSource::SharedKernel.as_str() {
        Ok(ClockModel::shared_kernel())
    } else if name == ClockSource::PerNode.as_str() {
        Ok(ClockModel::per_node())
    } else {
        anyhow::bail!("the recording uses an unknown clock '{name}'")
    }
}

/// A `--filter` expression compiled (an error says where, with a caret).
pub(crate) fn compile_filter(
    expr: Option<&str>,
) -> Result<Option<tracer_common::filter::FilterProgram>> {
    let Some(expr) = expr else {
        return Ok(None);
    };
    let filter = Filter::parse(expr).map_err(|e| anyhow::anyhow!("{}", e.render(expr)))?;
    Ok(Some(filter.compile().map_err(|e| anyhow::anyhow!("{e}"))?))
}

/// The recordings named on the command line, and the clock of a single recording (the one it
/// states; a merge estimates its own).
pub(crate) fn open_inputs(files: &[PathBuf]) -> Result<(Vec<Input>, ClockModel)> {
    let mut inputs = Vec::new();
    for path in files {
        let input = Input::from_arg(path)
            .map_err(|e| anyhow::anyhow!("opening recording {}: {e}", path.display()))?;
        inputs.push(input);
    }
    let clock = match inputs.as_mut_slice() {
        [Input::File(path)] => {
            let file = std::fs::File::open(&*path)?;
            let reader = Reader::new(io::BufReader::new(file))
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            clock_model(&reader.header.clock)?
        }
        _ => ClockModel::shared_kernel(),
    };
    Ok((inputs, clock))
}

/// The size of the inputs when they are all files (a progress bar's length), else `None`.
pub(crate) fn input_bytes(inputs: &[Input]) -> Option<u64> {
    inputs
        .iter()
        .map(|i| match i {
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            _ => None,
        })
        .sum()
}

/// How a command that reads recordings to their end and writes one file (`report`, `pcap`)
/// replays them: stopped by Ctrl-C when an input is a stream, the progress line on a terminal
/// (dropping the display ends it), and the pods' names.
pub(crate) fn read_to_end(
    inputs: &[Input],
    names: Option<crate::k8s::PodNames>,
) -> Result<(ReplayOptions, progress::Display)> {
    let stop = if inputs.iter().any(|i| !i.rereadable()) {
        Some(signals::install()?)
    } else {
        None
    };
    let counters = Arc::new(Counters::default());
    let display = progress::Display::start(
        "reading",
        input_bytes(inputs),
        LossUnit::Windows,
        counters.clone(),
    );
    let opts = ReplayOptions {
        stop,
        progress: Some(counters),
        names,
        ..ReplayOptions::default()
    };
    Ok((opts, display))
}

pub fn replay(args: ReplayArgs) -> Result<()> {
    let filter = compile_filter(args.filter.as_deref())?;
    let (inputs, clock) = open_inputs(&args.files)?;
    let cfg = PipelineConfig {
        stats: args.stats || args.stats_only,
        quiet: args.stats_only,
        filter,
        ..args.print.pipeline_config(clock)
    };
    let stop = if args.follow || inputs.iter().any(|i| !i.rereadable()) {
        Some(signals::install()?)
    } else {
        None
    };
    let names = args.names.start_synced()?;
    // The traces printed on a terminal are progress enough.
    let counters = Arc::new(Counters::default());
    let display = progress::Display::start_if(
        io::stderr().is_terminal() && !io::stdout().is_terminal(),
        progress::REDRAW,
        "replaying",
        input_bytes(&inputs),
        LossUnit::Windows,
        counters.clone(),
    );
    let opts = ReplayOptions {
        follow: stop.clone().filter(|_| args.follow),
        stop,
        on_open: Some(describe),
        progress: Some(counters),
        names,
        ..ReplayOptions::default()
    };
    let out = BufWriter::new(io::stdout().lock());
    let done = merge::replay(inputs, cfg, out, &opts);
    drop(display);
    let done = done?;
    for w in &done.warnings {
        eprintln!("tracer: warning: {w}");
    }
    // One recording speaks of "the recording"; several name theirs.
    let single = done.ends.len() == 1;
    let mut failed = None;
    for (name, end) in done.ends {
        let who = if single {
            String::new()
        } else {
            format!("{name}: ")
        };
        match end {
            ReplayEnd::Complete | ReplayEnd::CountReached => {}
            ReplayEnd::NoTrailer | ReplayEnd::Truncated(_) => {
                eprintln!("tracer: warning: {who}{}", end_text(&end));
            }
            ReplayEnd::Damaged(e) => {
                failed.get_or_insert(anyhow::anyhow!(e).context(format!(
                    "{name} is damaged; everything before the damage was replayed"
                )));
            }
            ReplayEnd::Unreadable(e) => {
                failed.get_or_insert(anyhow::anyhow!("{name}: {e}; the others were replayed"));
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The start-up line of a single recording.
fn describe(name: &str, h: &crate::recording::Header) {
    eprintln!(
        "tracer: replaying {name}: recorded by tracer {} on {} (kernel {}), {} node(s), filter: {}{}",
        h.tracer_version,
        h.host,
        h.kernel,
        h.topology.nodes.len(),
        h.filter,
        if h.hooks {
            ""
        } else {
            " (no drops: recorded with --no-drops)"
        },
    );
}
