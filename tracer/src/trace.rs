//! `tracer trace` and `tracer stats`: a capture [`Session`] feeding a [`Pipeline`] live. Drain
//! the ring buffers on the capture's pace, hand every record to the pipeline, tick it with the
//! monotonic time after each drain so that completed traces are printed; stop on Ctrl-C /
//! SIGTERM, after `--duration`, or after `--count` traces, and print the per-flow summary with
//! the tracer's own losses reported apart from anything the kernel did.

use std::{
    io::{self, BufWriter, Write},
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;

use crate::{
    capture::{parse_duration, CaptureArgs, DrainPacer, LossWatch, Session, Source},
    latency::ClockModel,
    machine::monotonic_ns,
    metrics::{Exporter, MetricsArgs},
    model::Trace,
    pipeline::{Pipeline, PipelineConfig, PrintArgs},
};

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub print: PrintArgs,
    /// Keep per-segment latency histograms (node-tx, encap, wire, decap, node-rx, ...) and
    /// print count, min, p50, p90, p99, p99.9 and max per flow and in total.
    #[arg(long)]
    pub stats: bool,
    /// With --stats: also print the statistics so far every D (e.g. 5s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// With `stats`: aggregate latency in the kernel (per-CPU log2 histograms, no event per
    /// packet) for high packet rates; per-segment totals only.
    #[arg(long)]
    pub kernel_agg: bool,
    /// No per-packet output (set by `tracer stats`).
    #[arg(skip)]
    pub quiet: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

pub fn run(args: TraceArgs) -> Result<()> {
    run_session(args, None).map(|_| ())
}

/// Work started once every program is attached (diagnose's probes); runs on its own thread.
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Attaches, traces until stopped, prints, and returns the traces when `on_ready` is given
/// (it is run on a thread of its own once everything is attached).
pub fn run_session(args: TraceArgs, on_ready: Option<OnReady>) -> Result<Vec<Trace>> {
    if args.kernel_agg && !args.quiet {
        anyhow::bail!("--kernel-agg is a statistics mode: use `tracer stats --kernel-agg`");
    }
    let metrics = args.metrics.bind()?;
    let session = Session::start(&args.capture, args.kernel_agg)?;
    let mut metrics = metrics.map(|m| m.serve(args.kernel_agg)).transpose()?;
    let collect = on_ready.is_some();
    let worker = on_ready.map(std::thread::spawn);
    let traces = trace_loop(&args, session, collect, metrics.as_mut())?;
    if let Some(w) = worker {
        w.join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    }
    Ok(traces)
}

fn trace_loop(
    args: &TraceArgs,
    mut session: Session,
    collect: bool,
    mut metrics: Option<&mut Exporter>,
) -> Result<Vec<Trace>> {
    let cfg = PipelineConfig {
        stats: args.stats,
        quiet: args.quiet,
        collect,
        kernel_agg: args.kernel_agg,
        ..args.print.pipeline_config(ClockModel::shared_kernel())
    };
    let mut pipe = Pipeline::new(
        session.topology.clone(),
        cfg,
        BufWriter::new(io::stdout().lock()),
    );
    if !args.kernel_agg {
        // The nodes' state, evidence for the verdicts; read again when a packet dies.
        let states = session.take_initial_states();
        for (node, state) in session.topology.nodes.iter().zip(states) {
            pipe.set_state(node.netns, state);
        }
        pipe.set_state_source(Box::new(session.state_source()?));
    }
    if let Some(m) = &metrics {
        pipe.set_observer(m.observer());
    }
    let mut next_report = args.interval.map(|i| Instant::now() + i);
    let mut pacer = DrainPacer::new(args.capture.duration);
    let mut losses = LossWatch::new(&session)?;
    let wakeups = session.wakeups();
    while pacer.wait(&session.stop, &wakeups) {
        if let (Some(at), Some(every)) = (next_report, args.interval) {
            if Instant::now() >= at {
                write_stats(&mut pipe, &session)?;
                next_report = Some(at + every);
            }
        }
        for (i, change) in session.follow_links() {
            let netns = session.topology.nodes[i].netns;
            pipe.link_change(netns, &change);
        }
        pacer.drained(drain(&mut pipe, &mut session));
        let now = monotonic_ns();
        if let Some((from, to)) = losses.check(&session, now)? {
            pipe.tracer_loss(from, to);
        }
        if let Some(m) = metrics.as_mut() {
            m.refresh(&session);
        }
        if pipe.tick(now)? {
            break;
        }
    }
    // Final drain: what is already in the ring buffers, then every open trace.
    drain(&mut pipe, &mut session);
    if let Some((from, to)) = losses.check(&session, monotonic_ns())? {
        pipe.tracer_loss(from, to);
    }
    pipe.close_all()?;
    let loss = session.loss_counters()?;
    write_stats(&mut pipe, &session)?;
    // Detach before printing the summary: nothing stays attached longer than needed.
    drop(session);
    pipe.write_summary(loss)
}

/// Moves every record waiting in the ring buffers into the pipeline; returns how many.
fn drain<W: Write>(pipe: &mut Pipeline<W>, session: &mut Session) -> usize {
    // The pipeline counts what it cannot decode; nothing here fails.
    let Ok(n) = session.drain(|source, item| -> Result<(), std::convert::Infallible> {
        match source {
            Source::Node(_, name) => pipe.node_record(name, item),
            Source::Hooks(names) => pipe.hook_record(item, names),
        }
        Ok(())
    });
    n
}

fn write_stats<W: Write>(pipe: &mut Pipeline<W>, session: &Session) -> Result<()> {
    let hist = match (pipe.kernel_agg(), session.nodes.first()) {
        (true, Some(first)) => Some(first.histograms()?),
        _ => None,
    };
    pipe.write_stats(hist.as_deref())
}
