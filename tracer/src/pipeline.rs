//! The user-space stages after collection: decode -> correlate -> latency -> render.
//!
//! One `Pipeline` is fed raw kernel records, whether they come straight from the ring buffers
//! (`tracer trace`) or from a recording (`tracer replay`), and `tick` is called with the
//! monotonic time after every drain, exactly as the live loop saw it. Fed the same records and
//! ticks, it therefore prints the same traces live and from a file. Records that do not decode
//! are counted (the tracer's own loss), never fatal.

use std::{io::Write, net::Ipv4Addr};

use anyhow::Result;
use tracer_common::{
    filter::{FilterInput, FilterProgram},
    CTR_AGG_MAP_FULL, CTR_DROP_READ_ERR, CTR_FILTERED, CTR_MALFORMED, CTR_NOT_IPV4,
    CTR_RINGBUF_FULL, CTR_SAMPLED_OUT, N_COUNTERS, SEG_DECAP, SEG_ENCAP, SEG_NODE_RX, SEG_NODE_TX,
    SEG_SAME_NODE, SEG_TOTAL, SEG_WIRE,
};

use crate::{
    correlate::{CorrelateConfig, Correlator, Trace},
    event::{decode, DecodeError, Event, PacketId},
    latency::{self, ClockModel, LatencyStats, SegmentName},
    render::{self, LossCounters},
    topology::Topology,
    trace::Output,
};

/// Turns the raw values of a drop record into words: the live kernel's names, or the names a
/// recording kept.
pub trait DropNames {
    /// The drop reason's name in the kernel that dropped the packet (`reason <n>` if unknown).
    fn reason_name(&self, value: u32) -> String;
    /// `function+0xoff` of a drop location (the hex address if it cannot be symbolised).
    fn location(&self, addr: u64) -> String;
}

impl DropNames for crate::hooks::Names {
    fn reason_name(&self, value: u32) -> String {
        crate::hooks::Names::reason_name(self, value)
    }

    fn location(&self, addr: u64) -> String {
        crate::hooks::Names::location(self, addr)
    }
}

/// What the pipeline prints and keeps.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub output: Output,
    /// Stop after this many traces (`--count`).
    pub limit: Option<u64>,
    /// Keep per-segment latency histograms.
    pub stats: bool,
    /// No per-packet lines (`tracer stats`).
    pub quiet: bool,
    /// Hand every emitted trace back to the caller.
    pub collect: bool,
    /// Latency comes from the kernel's histograms, not from traces.
    pub kernel_agg: bool,
    pub correlate: CorrelateConfig,
    pub clock: ClockModel,
    /// A filter applied in user space (replay); live, the kernel filters.
    pub filter: Option<FilterProgram>,
}

pub struct Pipeline<W: Write> {
    correlator: Correlator,
    out: W,
    output: Output,
    decode_errors: u64,
    func_events: u64,
    printed: u64,
    limit: Option<u64>,
    latency: Option<LatencyStats>,
    clock: ClockModel,
    quiet: bool,
    collected: Option<Vec<Trace>>,
    kernel_agg: bool,
    filter: Option<FilterProgram>,
    /// Records the user-space filter left out.
    filtered: u64,
}

impl<W: Write> Pipeline<W> {
    pub fn new(topology: Topology, cfg: PipelineConfig, out: W) -> Self {
        Pipeline {
            correlator: Correlator::new(topology, cfg.correlate),
            out,
            output: cfg.output,
            decode_errors: 0,
            func_events: 0,
            printed: 0,
            limit: cfg.limit,
            latency: (cfg.stats || cfg.quiet).then(|| LatencyStats::new(cfg.clock.clone())),
            clock: cfg.clock,
            quiet: cfg.quiet,
            collected: cfg.collect.then(Vec::new),
            kernel_agg: cfg.kernel_agg,
            filter: cfg.filter,
            filtered: 0,
        }
    }

    /// Whether latency comes from the kernel's histograms (`--kernel-agg`).
    pub fn kernel_agg(&self) -> bool {
        self.kernel_agg
    }

    /// A record from a node's ring buffer (tc hops only).
    pub fn node_record(&mut self, source: &str, bytes: &[u8]) {
        match decode(bytes) {
            Ok(Event::Hop(hop)) if !self.packet_passes(&hop.packet) => {}
            Ok(Event::Hop(hop)) => self.correlator.push(hop),
            Ok(other) => self.unexpected(&other),
            Err(e) => self.decode_error(source, &e),
        }
    }

    /// A record from the global hooks' ring buffer (drops, route lookups, probes).
    pub fn hook_record(&mut self, bytes: &[u8], names: &dyn DropNames) {
        match decode(bytes) {
            Ok(Event::Drop(d)) if !self.packet_passes(&d.packet) => {}
            Ok(Event::Fib(f)) if !self.passes(f.src, f.dst, f.proto, f.sport, f.dport) => {}
            Ok(Event::Drop(d)) => {
                let reason = names.reason_name(d.reason);
                let function = names.location(d.location);
                self.correlator.push_drop(&d, &reason, function);
            }
            Ok(Event::Fib(f)) => self.correlator.push_fib(f),
            Ok(Event::Func(_)) => self.func_events += 1,
            Ok(other) => self.unexpected(&other),
            Err(e) => self.decode_error("global hooks", &e),
        }
    }

    /// Whether a packet passes the user-space filter (counted when it does not). Route lookups
    /// are matched on their addresses, protocol and ports, as in the kernel.
    fn passes(&mut self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        let ok = filter.matches(&FilterInput {
            saddr: u32::from_ne_bytes(src.octets()),
            daddr: u32::from_ne_bytes(dst.octets()),
            proto,
            sport,
            dport,
        });
        if !ok {
            self.filtered += 1;
        }
        ok
    }

    /// `passes` for a packet's identity.
    fn packet_passes(&mut self, p: &PacketId) -> bool {
        self.passes(p.src, p.dst, p.proto, p.sport, p.dport)
    }

    /// The tracer lost events (ring buffer full) between two drains, `[from_ns, to_ns]`: traces
    /// in flight then are not called lost.
    pub fn tracer_loss(&mut self, from_ns: u64, to_ns: u64) {
        self.correlator.note_tracer_loss(from_ns, to_ns);
    }

    /// Records that could not be read as whole records (a recording cut short): the tracer's
    /// own loss.
    pub fn count_decode_errors(&mut self, n: u64) {
        self.decode_errors += n;
    }

    fn unexpected(&mut self, ev: &Event) {
        self.decode_errors += 1;
        log::warn!("record of an unexpected kind on this ring buffer: {ev:?}");
    }

    fn decode_error(&mut self, source: &str, e: &DecodeError) {
        self.decode_errors += 1;
        if self.decode_errors <= 5 {
            log::warn!("undecodable record from {source}: {e}");
        }
    }

    /// After a drain, at monotonic time `now_ns`: prints the traces that completed; returns
    /// true once `--count` is reached.
    pub fn tick(&mut self, now_ns: u64) -> Result<bool> {
        let traces = self.correlator.expire(now_ns);
        self.emit(traces)
    }

    /// Closes every open trace (end of the session) and prints it.
    pub fn close_all(&mut self) -> Result<()> {
        let rest = self.correlator.finish();
        self.emit(rest).map(|_| ())
    }

    fn emit(&mut self, traces: Vec<Trace>) -> Result<bool> {
        for t in traces {
            if self.limit.is_some_and(|l| self.printed >= l) {
                break;
            }
            if let Some(stats) = self.latency.as_mut() {
                stats.record(&t);
            }
            if !self.quiet {
                match self.output {
                    Output::Text => render::write_trace_text(&mut self.out, &t)?,
                    Output::Json => render::write_trace_json(&mut self.out, &t)?,
                }
            }
            self.printed += 1;
            if let Some(all) = self.collected.as_mut() {
                all.push(t);
            }
        }
        self.out.flush()?;
        Ok(self.limit.is_some_and(|l| self.printed >= l))
    }

    /// Prints the latency statistics so far (when kept); `kernel_hist` are the in-kernel
    /// histograms (`[segment][bucket]`) in `--kernel-agg` mode.
    pub fn write_stats(
        &mut self,
        kernel_hist: Option<&[[u64; tracer_common::HIST_BUCKETS]]>,
    ) -> Result<()> {
        if self.kernel_agg {
            if let Some(hist) = kernel_hist {
                let mut stats = LatencyStats::new(self.clock.clone());
                for (seg, buckets) in hist.iter().enumerate() {
                    if let Some(name) = segment_name(seg as u32) {
                        stats.record_bucketed(name, None, buckets);
                    }
                }
                self.latency = Some(stats);
            }
        }
        if let Some(stats) = &self.latency {
            match self.output {
                Output::Text => latency::write_stats_text(&mut self.out, stats)?,
                Output::Json => latency::write_stats_json(&mut self.out, stats)?,
            }
            self.out.flush()?;
        }
        Ok(())
    }

    /// Prints the per-flow summary with the tracer's own losses (`loss` holds the kernel-side
    /// counters; decode errors and probe hits are the pipeline's own) and returns the traces
    /// kept for the caller.
    pub fn write_summary(mut self, mut loss: LossCounters) -> Result<Vec<Trace>> {
        loss.decode_errors += self.decode_errors;
        loss.filtered += self.filtered;
        loss.encap_probe_hits += self.func_events;
        match self.output {
            Output::Text => render::write_summary_text(&mut self.out, &self.correlator, &loss)?,
            Output::Json => render::write_summary_json(&mut self.out, &self.correlator, &loss)?,
        }
        self.out.flush()?;
        Ok(self.collected.take().unwrap_or_default())
    }
}

/// Adds a node's kernel counters (`CTR_*`, summed over CPUs) to `loss`.
pub fn add_node_counters(loss: &mut LossCounters, c: &[u64; N_COUNTERS as usize]) {
    loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
    loss.filtered += c[CTR_FILTERED as usize];
    loss.not_ipv4 += c[CTR_NOT_IPV4 as usize];
    loss.malformed += c[CTR_MALFORMED as usize];
    loss.sampled_out += c[CTR_SAMPLED_OUT as usize];
    loss.agg_map_full += c[CTR_AGG_MAP_FULL as usize];
}

/// Adds the global hooks' kernel counters to `loss`.
pub fn add_hook_counters(loss: &mut LossCounters, c: &[u64; N_COUNTERS as usize]) {
    loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
    loss.drop_read_errors += c[CTR_DROP_READ_ERR as usize];
}

/// The latency segment of an in-kernel histogram index (`SEG_*`).
fn segment_name(seg: u32) -> Option<SegmentName> {
    Some(match seg {
        SEG_NODE_TX => SegmentName::NodeTx,
        SEG_ENCAP => SegmentName::Encap,
        SEG_WIRE => SegmentName::Wire,
        SEG_DECAP => SegmentName::Decap,
        SEG_NODE_RX => SegmentName::NodeRx,
        SEG_SAME_NODE => SegmentName::SameNode,
        SEG_TOTAL => SegmentName::Total,
        _ => return None,
    })
}
