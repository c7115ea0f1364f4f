//! The user-space stages, in order: decode -> filter -> name -> correlate -> verdict -> flows ->
//! latency -> render.
//!
//! 1. **decode** (`event`): raw ring-buffer bytes to typed records; an undecodable record is
//!    counted (the tracer's own loss), never fatal.
//! 2. **filter**: replay's user-space `--filter` (live, the kernel filters).
//! 3. **name** (`names`): a drop's reason and location in the kernel's words; noise (a consumed
//!    skb, an echo reply nobody wanted) is counted and stops here.
//! 4. **correlate** (`correlate`): hops, drops and route lookups grouped into one [`Trace`] per
//!    packet with its outcome and evidence, emitted when settled (`tick`).
//! 5. **verdict** (`verdict`): why a dropped or lost packet died.
//! 6. **flows**: per 5-tuple totals of the emitted traces.
//! 7. **latency** (`latency`): per-segment histograms, with `--stats`.
//! 8. **render** (`render`): text or JSON lines, then the summary.
//!
//! One `Pipeline` is fed raw kernel records, whether they come straight from the ring buffers
//! (`tracer trace`) or from a recording (`tracer replay`), and `tick` is called with the
//! monotonic time after every drain, exactly as the live loop saw it. Fed the same records and
//! ticks, it therefore prints the same traces live and from a file.
//!
//! Besides its writer, an [`Observer`] may consume what the pipeline produces (the incident
//! report, `report`): every trace after its verdict, the clocks of a merge and the run's
//! numbers at the end, as the renderers get them.

use std::{
    collections::BTreeMap,
    io::Write,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use anyhow::Result;
use clap::Args;
use tracer_common::{
    filter::{FilterInput, FilterProgram},
    SEG_DECAP, SEG_ENCAP, SEG_NODE_RX, SEG_NODE_TX, SEG_SAME_NODE, SEG_TOTAL, SEG_WIRE,
};

use crate::{
    correlate::{CorrelateConfig, Correlator},
    event::{decode, DecodeError, DropRecord, Event, HopRecord},
    latency::{self, ClockModel, LatencyStats, SegmentName},
    model::{
        ClockReport, FlowKey, FlowSummary, LinkChange, LossCounters, Outcome, PacketId, Trace,
    },
    names::{is_noise, DropNames},
    render::{self, Output, RunSummary},
    state::NodeState,
    topology::Topology,
    verdict,
};

/// How traces are assembled and printed: shared by `tracer trace` and `tracer replay`.
#[derive(Args, Clone, Debug)]
pub struct PrintArgs {
    /// Stop after this many packet traces.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// How long a packet's trace stays open after its latest hop, in ms.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub linger_ms: u64,
}

impl PrintArgs {
    /// The pipeline configuration these arguments ask for (statistics and collection off).
    pub fn pipeline_config(&self, clock: ClockModel) -> PipelineConfig {
        PipelineConfig {
            output: self.output,
            limit: self.count,
            stats: false,
            quiet: false,
            collect: false,
            kernel_agg: false,
            correlate: CorrelateConfig {
                linger_ns: self.linger_ms * 1_000_000,
                ..CorrelateConfig::default()
            },
            clock,
            filter: None,
        }
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

/// Where the records of one source go among those of other sources, when recordings of several
/// machines are merged (`merge`): the key of each namespace (inodes of two machines collide)
/// and each timestamp on the reference clock. Live and for one recording, records stay as they
/// were recorded ([`AsRecorded`]).
pub trait Placement {
    /// The key that stands for namespace `inode` of this source (0 stays 0: unknown).
    fn netns(&self, inode: u32) -> u32;
    /// A timestamp of this source's clock on the reference clock.
    fn time(&self, ts_ns: u64) -> u64;
}

/// Records as they were recorded.
pub struct AsRecorded;

impl Placement for AsRecorded {
    fn netns(&self, inode: u32) -> u32 {
        inode
    }

    fn time(&self, ts_ns: u64) -> u64 {
        ts_ns
    }
}

/// Another consumer of what the pipeline produces, besides its writer (the incident report).
pub trait Observer: Send {
    /// A trace after its verdict, with the clock model it is measured under.
    fn trace(&mut self, t: &Trace, clock: &ClockModel);
    /// Where the clocks of merged recordings sit (before the summary).
    fn clocks(&mut self, _r: &ClockReport) {}
    /// The live state of node (namespace key) `netns` when its recording started.
    fn node_state(&mut self, _netns: u32, _s: &NodeState) {}
    /// The end of the run: the summary as printed and the latency statistics (when kept).
    fn finish(&mut self, _s: &RunSummary<'_>, _latency: Option<&LatencyStats>) {}
}

/// An observer shared with the caller, who reads it once the run is over.
pub type SharedObserver = Arc<Mutex<dyn Observer>>;

/// Runs `f` on the observer, if any (a poisoned lock still observes: it holds plain data).
fn observe(o: &Option<SharedObserver>, f: impl FnOnce(&mut dyn Observer)) {
    if let Some(o) = o {
        f(&mut *o.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// The pipeline's own counters (the correlator keeps its own).
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    decode_errors: u64,
    func_events: u64,
    printed: u64,
    /// Records the user-space filter left out.
    filtered: u64,
    /// Drop records named (noise included).
    drops_seen: u64,
    /// Drops that are not faults, ignored.
    noise_drops: u64,
}

pub struct Pipeline<W: Write> {
    correlator: Correlator,
    /// What the verdict stage judges against (the correlator has its own copy for naming).
    topology: Topology,
    flows: BTreeMap<FlowKey, FlowSummary>,
    counts: Counts,
    out: W,
    output: Output,
    limit: Option<u64>,
    latency: Option<LatencyStats>,
    clock: ClockModel,
    quiet: bool,
    collected: Option<Vec<Trace>>,
    kernel_agg: bool,
    filter: Option<FilterProgram>,
    observer: Option<SharedObserver>,
}

impl<W: Write> Pipeline<W> {
    pub fn new(topology: Topology, cfg: PipelineConfig, out: W) -> Self {
        Pipeline {
            correlator: Correlator::new(topology.clone(), cfg.correlate),
            topology,
            flows: BTreeMap::new(),
            counts: Counts::default(),
            out,
            output: cfg.output,
            limit: cfg.limit,
            latency: (cfg.stats || cfg.quiet).then(|| LatencyStats::new(cfg.clock.clone())),
            clock: cfg.clock,
            quiet: cfg.quiet,
            collected: cfg.collect.then(Vec::new),
            kernel_agg: cfg.kernel_agg,
            filter: cfg.filter,
            observer: None,
        }
    }

    /// Hands every trace and the run's numbers to `o` as well.
    pub fn observe(&mut self, o: SharedObserver) {
        self.observer = Some(o);
    }

    /// Whether latency comes from the kernel's histograms (`--kernel-agg`).
    pub fn kernel_agg(&self) -> bool {
        self.kernel_agg
    }

    /// A record from a node's ring buffer (tc hops only).
    pub fn node_record(&mut self, source: &str, bytes: &[u8]) {
        self.node_record_placed(source, bytes, &AsRecorded);
    }

    /// A record from the global hooks' ring buffer (drops, route lookups, probes).
    pub fn hook_record(&mut self, bytes: &[u8], names: &dyn DropNames) {
        self.hook_record_placed(bytes, names, &AsRecorded);
    }

    /// `node_record` for a source whose records are placed among others' (a merge).
    pub fn node_record_placed(&mut self, source: &str, bytes: &[u8], at: &dyn Placement) {
        match decode(bytes) {
            Ok(Event::Hop(mut hop)) => {
                (hop.ts_ns, hop.netns) = (at.time(hop.ts_ns), at.netns(hop.netns));
                self.push_hop(hop)
            }
            Ok(other) => self.unexpected(&other),
            Err(e) => self.decode_error(source, &e),
        }
    }

    /// `hook_record` for a source whose records are placed among others' (a merge).
    pub fn hook_record_placed(&mut self, bytes: &[u8], names: &dyn DropNames, at: &dyn Placement) {
        match decode(bytes) {
            Ok(Event::Drop(mut d)) => {
                (d.ts_ns, d.netns) = (at.time(d.ts_ns), at.netns(d.netns));
                self.push_drop(&d, names)
            }
            Ok(Event::Fib(f)) if !self.passes(f.src, f.dst, f.proto, f.sport, f.dport) => {}
            Ok(Event::Fib(mut f)) => {
                (f.ts_ns, f.netns) = (at.time(f.ts_ns), at.netns(f.netns));
                self.correlator.push_fib(f)
            }
            Ok(Event::Func(mut hop)) => {
                self.counts.func_events += 1;
                (hop.ts_ns, hop.netns) = (at.time(hop.ts_ns), at.netns(hop.netns));
                self.push_hop(hop)
            }
            Ok(other) => self.unexpected(&other),
            Err(e) => self.decode_error("global hooks", &e),
        }
    }

    /// A decoded hop: filter, then correlate.
    pub(crate) fn push_hop(&mut self, hop: HopRecord) {
        if self.packet_passes(&hop.packet) {
            self.correlator.push(hop);
        }
    }

    /// A decoded drop: filter, name, drop the noise, then correlate.
    pub(crate) fn push_drop(&mut self, d: &DropRecord, names: &dyn DropNames) {
        if !self.packet_passes(&d.packet) {
            return;
        }
        self.counts.drops_seen += 1;
        let reason = names.reason_name(d.reason);
        if is_noise(&reason, &d.packet, d.icmp_type) {
            self.counts.noise_drops += 1;
            return;
        }
        let function = names.location(d.location);
        self.correlator.push_drop(d, &reason, function);
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
            self.counts.filtered += 1;
        }
        ok
    }

    /// `passes` for a packet's identity.
    fn packet_passes(&mut self, p: &PacketId) -> bool {
        self.passes(p.src, p.dst, p.proto, p.sport, p.dport)
    }

    /// A traced node (namespace key `netns`) gained or lost an interface.
    pub fn link_change(&mut self, netns: u32, c: &LinkChange) {
        if let Some(node) = self.topology.nodes.iter_mut().find(|n| n.netns == netns) {
            c.apply_to(node);
        }
        self.correlator.link_change(netns, c);
    }

    /// A recording's node (namespace key `netns`) state, read when recording started: handed
    /// to the observer (verdicts do not use it yet).
    pub fn node_state(&mut self, netns: u32, s: &NodeState) {
        observe(&self.observer, |o| o.node_state(netns, s));
    }

    /// The tracer lost events (ring buffer full) between two drains, `[from_ns, to_ns]`: traces
    /// in flight then are not called lost.
    pub fn tracer_loss(&mut self, from_ns: u64, to_ns: u64) {
        self.correlator.note_tracer_loss(from_ns, to_ns);
    }

    /// Records that could not be read as whole records (a recording cut short): the tracer's
    /// own loss.
    pub fn count_decode_errors(&mut self, n: u64) {
        self.counts.decode_errors += n;
    }

    fn unexpected(&mut self, ev: &Event) {
        self.counts.decode_errors += 1;
        log::warn!("record of an unexpected kind on this ring buffer: {ev:?}");
    }

    fn decode_error(&mut self, source: &str, e: &DecodeError) {
        self.counts.decode_errors += 1;
        if self.counts.decode_errors <= 5 {
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

    /// The stages after correlation, trace by trace: verdict, flows, latency, render.
    fn emit(&mut self, traces: Vec<Trace>) -> Result<bool> {
        for mut t in traces {
            if self.limit.is_some_and(|l| self.counts.printed >= l) {
                break;
            }
            if matches!(t.outcome, Outcome::Dropped | Outcome::Lost) {
                t.verdict = verdict::judge(&t, &self.topology);
            }
            self.flows.entry(t.packet.flow()).or_default().record(&t);
            if let Some(stats) = self.latency.as_mut() {
                stats.record(&t);
            }
            if !self.quiet {
                match self.output {
                    Output::Text => render::write_trace_text(&mut self.out, &t, &self.clock)?,
                    Output::Json => render::write_trace_json(&mut self.out, &t, &self.clock)?,
                }
            }
            observe(&self.observer, |o| o.trace(&t, &self.clock));
            self.counts.printed += 1;
            if let Some(all) = self.collected.as_mut() {
                all.push(t);
            }
        }
        self.out.flush()?;
        Ok(self.limit.is_some_and(|l| self.counts.printed >= l))
    }

    /// A new clock model (a merge refined its estimate): later traces are measured with it.
    pub fn set_clock(&mut self, clock: ClockModel) {
        if let Some(stats) = self.latency.as_mut() {
            *stats.clock_mut() = clock.clone();
        }
        self.clock = clock;
    }

    /// Prints where each merged recording's clock sits on the reference timeline.
    pub fn write_clocks(&mut self, r: &ClockReport) -> Result<()> {
        observe(&self.observer, |o| o.clocks(r));
        match self.output {
            Output::Text => render::write_clocks_text(&mut self.out, r)?,
            Output::Json => render::write_clocks_json(&mut self.out, r)?,
        }
        self.out.flush()?;
        Ok(())
    }

    /// Per 5-tuple totals over the traces emitted so far, ordered by flow.
    pub fn flows(&self) -> &BTreeMap<FlowKey, FlowSummary> {
        &self.flows
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
        loss.decode_errors += self.counts.decode_errors;
        loss.filtered += self.counts.filtered;
        loss.encap_probe_hits += self.counts.func_events;
        let summary = RunSummary {
            flows: &self.flows,
            correlator: self.correlator.stats(),
            open_traces: self.correlator.open_traces(),
            drops_seen: self.counts.drops_seen,
            noise_drops: self.counts.noise_drops,
            loss: &loss,
        };
        observe(&self.observer, |o| {
            o.finish(&summary, self.latency.as_ref())
        });
        match self.output {
            Output::Text => render::write_summary_text(&mut self.out, &summary)?,
            Output::Json => render::write_summary_json(&mut self.out, &summary)?,
        }
        self.out.flush()?;
        Ok(self.collected.take().unwrap_or_default())
    }
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

#[cfg(test)]
mod tests;
