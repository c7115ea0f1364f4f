//! `tracer pcap`: the packet bytes of recordings made with `record --snaplen N`, as one pcap-ng
//! file for Wireshark and tshark.
//!
//! Another consumer of the pipeline `replay` runs (as the incident report is): the same inputs
//! (files, `-`, pipes; several recordings merged across machines with their clock offsets,
//! `merge`), the same traces and verdicts, handed to a [`Collector`] (a pipeline `Observer`).
//! Each hop of a trace that carries bytes becomes one packet, and so does its drop: the
//! interface block is `node/ifname`, the time is the hop's on the wall clock (the reference
//! recording's monotonic clock mapped as the report maps it), the comment names the trace
//! (`trace N`: the Nth trace `tracer replay` prints of the same recordings and filter), the
//! hop, the outcome and verdict, and for the drop its reason and location; a custom option
//! holds the hop's JSON (`writer`).
//!
//! Nothing is synthesized: a recording made without `--snaplen` has no bytes, and that is a
//! one-line error; hops without bytes (the encapsulation probes carry none) are counted and
//! named in a warning, not invented. The packets are kept in memory until the end (the wall
//! clock mapping is final only then): about the snap length plus ~0.6 kB of comment and JSON
//! per packet. A damaged or truncated recording still gives a file with what precedes the
//! damage, and a warning that says what is missing.

#[cfg(test)]
mod tests;
mod writer;

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use clap::Args;

use crate::{
    correlate::CorrelateConfig,
    latency::ClockModel,
    merge::{self, end_text, ReplayEnd, ReplayOptions},
    model::{Captured, DropPoint, Outcome, Trace, TraceHop},
    pipeline::{Observer, PipelineConfig, SharedObserver},
    render::{encap_text, packet_text, trace_json::hop_object, Output},
    replay,
};
use writer::{Hook, Iface, Packet};

#[derive(Args, Debug)]
pub struct PcapArgs {
    /// Recordings written by `tracer record --snaplen N --write FILE|-`: files, `-` for
    /// standard input, or pipes. Several are merged into one trace per packet.
    #[arg(value_name = "RECORDING", required = true)]
    pub files: Vec<PathBuf>,
    /// The pcap-ng file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Only packets matching this filter (same syntax as `trace --filter`).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// How long a packet's trace stays open after its latest hop, in ms (as in `replay`).
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub linger_ms: u64,
    /// Pod and Service names in the packets' comments (`--kubeconfig`, see `trace`).
    #[command(flatten)]
    pub names: crate::k8s::NamesArgs,
}

/// What the pipeline handed over: one packet per hop or drop with bytes, on the reference
/// recording's monotonic clock.
#[derive(Default)]
pub(crate) struct Collector {
    traces: u64,
    packets: Vec<Packet>,
    /// Hops and drops of traces that carry no bytes.
    hops_without_bytes: u64,
    drops_without_bytes: u64,
    decode_errors: u64,
}

impl Observer for Collector {
    fn trace(&mut self, t: &Trace, _clock: &ClockModel) {
        self.traces += 1;
        let n = self.traces;
        let total = t.hops.len();
        for (i, h) in t.hops.iter().enumerate() {
            match &h.snap {
                Some(snap) => self.packets.push(hop_packet(t, n, i, total, h, snap)),
                None => self.hops_without_bytes += 1,
            }
        }
        if let Some(d) = &t.drop {
            match &d.snap {
                Some(snap) => self.packets.push(drop_packet(t, n, d, snap)),
                None => self.drops_without_bytes += 1,
            }
        }
    }

    fn decode_errors(&mut self, n: u64) {
        self.decode_errors += n;
    }
}

/// `dropped on node2/eth0, verdict firewall-drop`, `delivered`, ... The drop's reason is only in
/// the drop's own packet, so that a display filter on it finds that packet.
fn outcome_text(t: &Trace) -> String {
    let mut s = t.outcome.as_str().to_string();
    if let (Outcome::Dropped, Some(d)) = (t.outcome, &t.drop) {
        s += &format!(" on {}/{}", d.node, d.ifname);
    }
    if let Some(v) = &t.verdict {
        s += &format!(", verdict {}", v.name);
    }
    s
}

fn hop_packet(
    t: &Trace,
    n: u64,
    i: usize,
    total: usize,
    h: &TraceHop,
    snap: &Arc<Captured>,
) -> Packet {
    let mut comment = format!(
        "tracer trace {n} hop {}/{total}: {}/{} {}{}: {}",
        i + 1,
        h.node,
        h.ifname,
        h.dir.as_str(),
        if h.translated { " (translated)" } else { "" },
        packet_text(t),
    );
    if let Some(e) = &h.encap {
        comment += &format!(" in {}", encap_text(e));
    }
    comment += &format!("; {}", outcome_text(t));
    Packet {
        iface: Iface {
            node: h.node.to_string(),
            ifname: h.ifname.to_string(),
            link: snap.link,
            hook: Hook::Tc,
        },
        ts_ns: i128::from(h.ts_ns),
        snap: snap.clone(),
        comment,
        json: hop_object(t, n, Some(h)),
    }
}

fn drop_packet(t: &Trace, n: u64, d: &DropPoint, snap: &Arc<Captured>) -> Packet {
    let mut comment = format!(
        "tracer trace {n} DROP on {}/{}: {} in {} (location {:#x}): {}",
        d.node,
        d.ifname,
        d.reason,
        d.function,
        d.location,
        packet_text(t),
    );
    if let Some(e) = &d.encap {
        comment += &format!(" in {}", encap_text(e));
    }
    match &t.verdict {
        Some(v) => comment += &format!("; verdict {}: {}", v.name, v.explanation),
        None => comment += "; no verdict",
    }
    Packet {
        iface: Iface {
            node: d.node.clone(),
            ifname: d.ifname.clone(),
            link: snap.link,
            hook: Hook::Drop,
        },
        ts_ns: i128::from(d.ts_ns),
        snap: snap.clone(),
        comment,
        json: hop_object(t, n, None),
    }
}

/// The pipeline as `pcap` runs it: every trace, nothing printed, no statistics.
fn pipeline_config(
    clock: ClockModel,
    filter: Option<tracer_common::filter::FilterProgram>,
    linger_ms: u64,
) -> PipelineConfig {
    PipelineConfig {
        output: Output::Json,
        limit: None,
        stats: false,
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

pub fn run(args: PcapArgs) -> Result<()> {
    let filter = replay::compile_filter(args.filter.as_deref())?;
    let (inputs, clock) = replay::open_inputs(&args.files)?;
    // Created first: a bad path fails before the recordings are read.
    let out = File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    // No file is left behind when there is nothing to write.
    let remove = |e: anyhow::Error| {
        let _ = std::fs::remove_file(&args.output);
        e
    };
    let names = args.names.start_synced().map_err(remove)?;
    let (opts, display) = replay::read_to_end(&inputs, names).map_err(remove)?;
    let cfg = pipeline_config(clock, filter, args.linger_ms);
    let name = args.output.display().to_string();
    let done = convert(inputs, cfg, opts, BufWriter::new(out), &name);
    drop(display);
    let (mut out, c) = done.map_err(remove)?;
    out.flush()
        .with_context(|| format!("writing {name}"))
        .map_err(remove)?;
    for w in &c.warnings {
        eprintln!("tracer: warning: {w}");
    }
    eprintln!(
        "tracer: wrote {} packets of {} traces on {} interfaces to {name}",
        c.written.packets, c.traces, c.written.interfaces
    );
    Ok(())
}

/// What a conversion wrote, and what the user must know about it.
#[derive(Debug)]
pub(crate) struct Converted {
    pub written: writer::Written,
    pub traces: u64,
    pub warnings: Vec<String>,
}

/// Reads the recordings through the pipeline and writes their packets with bytes to `out`
/// (named `out_name` in warnings).
pub(crate) fn convert<W: Write>(
    inputs: Vec<merge::Input>,
    cfg: PipelineConfig,
    opts: ReplayOptions,
    out: W,
    out_name: &str,
) -> Result<(W, Converted)> {
    let collector = Arc::new(Mutex::new(Collector::default()));
    let observer: SharedObserver = collector.clone();
    let opts = ReplayOptions {
        observer: Some(observer),
        ..opts
    };
    let done = merge::replay(inputs, cfg, io::sink(), &opts)?;
    let collected = std::mem::take(&mut *collector.lock().unwrap_or_else(|e| e.into_inner()));

    // What could not be read at all, and what was cut short.
    let mut warnings = done.warnings.clone();
    let mut unreadable = Vec::new();
    for (name, end) in &done.ends {
        match end {
            ReplayEnd::Complete | ReplayEnd::CountReached => {}
            ReplayEnd::Unreadable(e) => unreadable.push(format!("{name}: {e}")),
            other => warnings.push(format!(
                "{name}: {}; the packets before that are in {out_name}, those after are missing",
                end_text(other),
            )),
        }
    }
    if unreadable.len() == done.ends.len() {
        anyhow::bail!("{}", unreadable.join("; "));
    }
    warnings.extend(unreadable.iter().map(|u| format!("{u}; not in the file")));
    if collected.packets.is_empty() {
        let without: Vec<&str> = done
            .opened
            .iter()
            .filter(|o| o.header.snaplen == 0)
            .map(|o| o.name.as_str())
            .collect();
        if !without.is_empty() && without.len() == done.opened.len() {
            anyhow::bail!(
                "{}: recording has no packet bytes (recorded without --snaplen; record with `tracer record --snaplen 128 ...`)",
                without.join(", ")
            );
        }
    }
    if collected.hops_without_bytes + collected.drops_without_bytes > 0 {
        warnings.push(format!(
            "{} hops and {} drops carry no packet bytes (encapsulation probes never do; or a recording made without --snaplen): not in the file",
            collected.hops_without_bytes, collected.drops_without_bytes
        ));
    }
    if collected.decode_errors > 0 {
        warnings.push(format!(
            "{} records could not be decoded (not in the file)",
            collected.decode_errors
        ));
    }
    let offset = match done.reference_wall_minus_mono {
        Some(o) => o,
        None => {
            warnings.push(
                "the recording has no clock samples (format version 1): packet times are its monotonic clock, not the wall clock"
                    .into(),
            );
            0
        }
    };
    let packets: Vec<Packet> = collected
        .packets
        .into_iter()
        .map(|p| Packet {
            ts_ns: p.ts_ns + offset,
            ..p
        })
        .collect();
    let (out, written) = writer::write(out, packets)?;
    Ok((
        out,
        Converted {
            written,
            traces: collected.traces,
            warnings,
        },
    ))
}
