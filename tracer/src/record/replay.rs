//! `tracer replay`: reads a recording and runs it through the same pipeline as a live trace:
//! the records in the order they were drained, and the correlator expired at the recorded
//! drain times, so the traces, verdicts, latency and summary are those the live run would
//! have printed. A recording cut short is replayed up to its last whole frame with a warning;
//! a corrupt one prints what came before the damage and then fails.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::PathBuf,
};

use anyhow::{Context, Result};
use clap::Args;

use super::format::{Frame, Reader, RecordError, SOURCE_HOOKS};
use crate::{
    filter::Filter,
    latency::{ClockModel, ClockSource},
    model::Trace,
    names::RecordedNames,
    pipeline::{Pipeline, PipelineConfig, PrintArgs},
};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// A recording written by `tracer record --write FILE`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Only packets matching this filter (same syntax as `trace --filter`), on top of the
    /// filter the recording was made with.
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

pub fn replay(args: ReplayArgs) -> Result<()> {
    let filter = match &args.filter {
        Some(expr) => Some(
            Filter::parse(expr)
                .map_err(|e| anyhow::anyhow!("{}", e.render(expr)))?
                .compile()
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        None => None,
    };
    let file = File::open(&args.file)
        .with_context(|| format!("opening recording {}", args.file.display()))?;
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", args.file.display()))?;
    let h = reader.header.clone();
    eprintln!(
        "tracer: replaying {}: recorded by tracer {} on {} (kernel {}), {} node(s), filter: {}{}",
        args.file.display(),
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
    let cfg = PipelineConfig {
        stats: args.stats || args.stats_only,
        quiet: args.stats_only,
        filter,
        ..args.print.pipeline_config(clock_model(&h.clock)?)
    };
    let (end, _) = replay_into(&mut reader, cfg, BufWriter::new(io::stdout().lock()))?;
    match end {
        ReplayEnd::Complete | ReplayEnd::CountReached => Ok(()),
        ReplayEnd::NoTrailer => {
            eprintln!("tracer: warning: the recording has no end frame (the recorder was killed?); the tracer's own kernel-side loss counters are unknown");
            Ok(())
        }
        ReplayEnd::Truncated(e) => {
            eprintln!("tracer: warning: {e}; replayed everything before it, the tracer's own kernel-side loss counters are unknown");
            Ok(())
        }
        ReplayEnd::Damaged(e) => Err(anyhow::anyhow!(e)).with_context(|| {
            format!(
                "{} is damaged; everything before the damage was replayed",
                args.file.display()
            )
        }),
    }
}

/// How a replay ended.
#[derive(Debug)]
pub enum ReplayEnd {
    /// Read to the end frame.
    Complete,
    /// `--count` traces were printed.
    CountReached,
    /// The file ends at a frame boundary but has no end frame (a killed recorder).
    NoTrailer,
    /// The file ends in the middle of a frame.
    Truncated(RecordError),
    /// A frame could not be read; what came before it was replayed.
    Damaged(RecordError),
}

/// Feeds every frame of `reader` through a pipeline writing to `out`, then the summary;
/// returns how the replay ended and the traces (when `cfg.collect`).
pub fn replay_into<R: Read, W: Write>(
    reader: &mut Reader<R>,
    cfg: PipelineConfig,
    out: W,
) -> Result<(ReplayEnd, Vec<Trace>)> {
    let topology = reader.header.topology.clone();
    let node_names: Vec<String> = topology.nodes.iter().map(|n| n.name.clone()).collect();
    let mut pipe = Pipeline::new(topology, cfg, out);
    let mut names = RecordedNames::default();
    let mut trailer = None;
    let mut end = None;
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e @ RecordError::Truncated { .. }) => {
                // The cut frame is the tracer's own loss.
                pipe.count_decode_errors(1);
                end = Some(ReplayEnd::Truncated(e));
                break;
            }
            Err(e) => {
                end = Some(ReplayEnd::Damaged(e));
                break;
            }
        };
        match frame {
            Frame::Record { source, data } if source == SOURCE_HOOKS => {
                pipe.hook_record(data, &names)
            }
            Frame::Record { source, data } => match node_names.get(usize::from(source)) {
                Some(node) => pipe.node_record(node, data),
                None => pipe.count_decode_errors(1),
            },
            Frame::Reason { value, name } => names.add_reason(value, name),
            Frame::Location { addr, symbol } => names.add_location(addr, symbol),
            Frame::Loss { from_ns, to_ns } => pipe.tracer_loss(from_ns, to_ns),
            Frame::Tick { now_ns } => {
                if pipe.tick(now_ns)? {
                    end = Some(ReplayEnd::CountReached);
                    break;
                }
            }
            Frame::End(t) => trailer = Some(t),
        }
    }
    pipe.close_all()?;
    pipe.write_stats(None)?;
    let loss = trailer.as_ref().map(|t| t.loss).unwrap_or_default();
    let traces = pipe.write_summary(loss)?;
    let end = end.unwrap_or(if trailer.is_some() {
        ReplayEnd::Complete
    } else {
        ReplayEnd::NoTrailer
    });
    Ok((end, traces))
}
