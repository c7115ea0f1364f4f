//! The user-space stages, in order: decode -> filter -> name -> correlate -> verdict -> flows ->
//! latency -> render.
//!
//! 1. **decode** (`event`): raw ring-buffer bytes to typed records; an undecodable record is
//!    counted (the tracer's own loss), never fatal.
//! 2. **filter**: replay's user-space `--filter` (live, the kernel filters).
//! 3. **name** (`names`): a drop's reason and location in the kernel's words; noise (a consumed
//!    skb, an echo reply nobody wanted) is counted and stops here.
//! 4. **correlate** (`correlate`): hops, drops and route lookups grouped into one [`Trace`] per
//!    packet with its outcome and evidence, emitted when settled (`tick`). A packet lost after
//!    leaving toward a machine no traced node is waits a second for an answer (`answered`):
//!    answered, it arrived (`incomplete`, no verdict).
//! 5. **verdict** (`verdict`): why a dropped or lost packet died; then the trace's addresses
//!    are named after their pods and Services where a cluster is watched (`k8s`).
//! 6. **flows**: per 5-tuple totals of the emitted traces.
//! 7. **latency** (`latency`): per-segment histograms, with `--stats`.
//! 8. **render** (`render`): text or JSON lines, then the summary.
//!
//! One `Pipeline` is fed raw kernel records, whether they come straight from the ring buffers
//! (`tracer trace`) or from a recording (`tracer replay`), and `tick` is called with the
//! monotonic time after every drain, exactly as the live loop saw it. Fed the same records and
//! ticks, it therefore prints the same traces live and from a file.
//!
//! Besides its writer, an [`Observer`] may consume what the pipeline produces (the metrics, the
//! incident report): every trace after its verdict, the nodes' state, the clocks of a merge and
//! the run's numbers at the end, as the renderers get them.

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
    event::{decode, DecodeError, DropRecord, Event, HopRecord, NatRecord, NatTuple},
    k8s::PodNames,
    latency::{self, ClockModel, LatencyStats, Measurements, SegmentName},
    model::{
        ClockReport, FlowKey, FlowSummary, LinkChange, LossCounters, NatStep, Outcome, PacketId,
        Trace,
    },
    names::{is_noise, is_receiver_drop, DropNames},
    nat::NatTable,
    render::{self, Output, RunSummary},
    state::NodeState,
    topology::Topology,
    verdict::{self, Evidence, StateSource},
};

/// How many turned-away hops are kept for a NAT record that may show they belong to a
/// followed packet.
const REJECTED_KEPT: usize = 4096;
/// The largest buffer kept from one JSON line to the next (a usual line takes ~3 KiB).
const LINE_KEPT: usize = 64 * 1024;

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
    /// Drops by the destination's own sockets, not attached to traces.
    receiver_drops: u64,
    /// NAT records that passed the filter.
    nat_records: u64,
}

/// Told of what the pipeline produces besides its printed output (the metrics of
/// `--metrics-addr`, the incident report): the pipeline calls it and knows nothing of what it
/// feeds.
pub trait Observer {
    /// A trace once judged (its verdict set), before it is printed; `clock` is the model its
    /// latency is measured with.
    fn trace(&mut self, t: &Trace, clock: &ClockModel);
    /// `n` records could not be decoded (the tracer's own loss).
    fn decode_errors(&mut self, n: u64);
    /// Where the clocks of merged recordings sit (before the summary).
    fn clocks(&mut self, _r: &ClockReport) {}
    /// A node's (namespace key `netns`) state, read at start or from a recording.
    fn node_state(&mut self, _netns: u32, _s: &NodeState) {}
    /// The end of the run: the summary as printed and the latency statistics (when kept).
    fn finish(&mut self, _s: &RunSummary<'_>, _latency: Option<&LatencyStats>) {}
}

/// An observer the caller keeps a handle on, to read it once the run is over (the report).
pub type SharedObserver = Arc<Mutex<dyn Observer>>;

impl<O: Observer + ?Sized> Observer for Arc<Mutex<O>> {
    fn trace(&mut self, t: &Trace, clock: &ClockModel) {
        lock(self).trace(t, clock);
    }

    fn decode_errors(&mut self, n: u64) {
        lock(self).decode_errors(n);
    }

    fn clocks(&mut self, r: &ClockReport) {
        lock(self).clocks(r);
    }

    fn node_state(&mut self, netns: u32, s: &NodeState) {
        lock(self).node_state(netns, s);
    }

    fn finish(&mut self, s: &RunSummary<'_>, latency: Option<&LatencyStats>) {
        lock(self).finish(s, latency);
    }
}

/// A poisoned lock still observes: an observer holds plain data.
fn lock<O: ?Sized>(m: &Mutex<O>) -> std::sync::MutexGuard<'_, O> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Pipeline<W: Write> {
    correlator: Correlator,
    /// What the verdict stage judges against (the correlator has its own copy for naming).
    topology: Topology,
    flows: BTreeMap<FlowKey, FlowSummary>,
    /// Traces that left the traced nodes, waiting for an answer (`answered`).
    answered: answered::Answered,
    counts: Counts,
    out: W,
    /// The JSON line being built, kept from one trace to the next.
    line: Vec<u8>,
    output: Output,
    limit: Option<u64>,
    latency: Option<LatencyStats>,
    clock: ClockModel,
    quiet: bool,
    collected: Option<Vec<Trace>>,
    kernel_agg: bool,
    filter: Option<FilterProgram>,
    /// The nodes' state and the audit's findings, for the verdicts.
    evidence: Evidence,
    /// How translated flows looked before NAT (see `nat`).
    nat: NatTable,
    /// The latest hops the filter turned away (see `push_nat`).
    rejected: std::collections::VecDeque<HopRecord>,
    observer: Option<Box<dyn Observer>>,
    /// The pods and Services the traces' addresses are named after (`k8s`).
    names: Option<PodNames>,
}

impl<W: Write> Pipeline<W> {
    pub fn new(topology: Topology, cfg: PipelineConfig, out: W) -> Self {
        Pipeline {
            correlator: Correlator::new(topology.clone(), cfg.correlate),
            topology,
            flows: BTreeMap::new(),
            answered: answered::Answered::default(),
            counts: Counts::default(),
            out,
            line: Vec::new(),
            output: cfg.output,
            limit: cfg.limit,
            latency: cfg.stats.then(|| LatencyStats::new(cfg.clock.clone())),
            clock: cfg.clock,
            quiet: cfg.quiet,
            collected: cfg.collect.then(Vec::new),
            kernel_agg: cfg.kernel_agg,
            filter: cfg.filter,
            evidence: Evidence::default(),
            nat: NatTable::default(),
            rejected: std::collections::VecDeque::new(),
            observer: None,
            names: None,
        }
    }

    /// A node's state (read live at start, or a recording's state frame): evidence for the
    /// verdicts.
    pub fn set_state(&mut self, netns: u32, state: NodeState) {
        if let Some(o) = self.observer.as_mut() {
            o.node_state(netns, &state);
        }
        self.evidence.set(netns, state);
    }

    /// Where to read a node's state again when one of its packets dies (live only).
    pub fn set_state_source(&mut self, source: Box<dyn StateSource>) {
        self.evidence.set_source(source);
    }

    /// Every trace emitted from now on, and every undecodable record, is also told to `o`.
    pub fn set_observer(&mut self, o: Box<dyn Observer>) {
        self.observer = Some(o);
    }

    /// Every trace emitted from now on has its addresses named after the pods and Services
    /// they belong to, as `names` has them at that moment.
    pub fn set_names(&mut self, names: PodNames) {
        self.names = Some(names);
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
            Ok(Event::Nat(mut n)) => {
                (n.ts_ns, n.netns) = (at.time(n.ts_ns), at.netns(n.netns));
                self.push_nat(&n)
            }
            Ok(other) => self.unexpected(&other),
            Err(e) => self.decode_error("global hooks", &e),
        }
    }

    /// A decoded hop: back to its flow's identity before NAT, filter, then correlate.
    pub(crate) fn push_hop(&mut self, mut hop: HopRecord) {
        match self.nat.translate(&hop.packet, hop.ts_ns) {
            Some(entered) => {
                let now = hop.packet;
                hop.packet = entered;
                if self.either_passes(&entered, &now) {
                    self.correlator.push_translated(hop);
                }
            }
            None => {
                if self.packet_passes(&hop.packet) {
                    self.correlator.push(hop);
                } else if self.filter.is_some() {
                    // A NAT record may yet show that this packet became one the filter wants.
                    if self.rejected.len() == REJECTED_KEPT {
                        self.rejected.pop_front();
                    }
                    self.rejected.push_back(hop);
                }
            }
        }
    }

    /// A NAT record: learnt (the flow's later packets are followed under the identity they
    /// entered with), and a step of the packet's trace.
    pub(crate) fn push_nat(&mut self, n: &NatRecord) {
        let entered = n.entered.apply(&n.packet);
        if !self.either_passes(&entered, &n.packet) {
            return;
        }
        self.counts.nat_records += 1;
        let now = NatTuple::of(&n.packet);
        // A flow already translated once on an earlier node keeps that first identity.
        let first = self.nat.translate(&entered, n.ts_ns).unwrap_or(entered);
        self.nat.learn(now, NatTuple::of(&first), n.ts_ns);
        let (node, ifname) = match self.topology.node(n.netns) {
            Some(node) => (
                node.name.clone(),
                node.link_name(n.ifindex)
                    .map_or_else(|| format!("if{}", n.ifindex), str::to_string),
            ),
            None => (format!("netns:{}", n.netns), format!("if{}", n.ifindex)),
        };
        let e = &n.entered;
        let p = &n.packet;
        let (src_changed, dst_changed) = (
            (e.src, e.sport) != (p.src, NatTuple::of(p).sport),
            (e.dst, e.dport) != (p.dst, NatTuple::of(p).dport),
        );
        let kind = match (n.reply, src_changed, dst_changed) {
            (false, true, true) => "DNAT+SNAT",
            (false, false, _) => "DNAT",
            (false, true, false) => "SNAT",
            (true, true, true) => "un-DNAT+SNAT",
            (true, true, false) => "un-DNAT",
            (true, false, _) => "un-SNAT",
        };
        let t = NatTuple::of(p);
        let step = NatStep {
            ts_ns: n.ts_ns,
            node,
            netns: n.netns,
            ifname,
            kind,
            proto: p.proto,
            from: (e.src, e.sport, e.dst, e.dport),
            to: (t.src, t.sport, t.dst, t.dport),
        };
        self.nat.learn_request(&step);
        self.correlator
            .push_nat(&first, &n.packet, n.tcp_flags, n.icmp_type, step);
        // Hops of the packet before the translation that the filter turned away: the
        // translated packet matches it, so they belong to the trace.
        let before = NatTuple::of(&entered);
        let window = self.correlator_window();
        let (take, keep): (Vec<HopRecord>, Vec<HopRecord>) = std::mem::take(&mut self.rejected)
            .into_iter()
            .partition(|h| {
                NatTuple::of(&h.packet) == before && h.ts_ns.abs_diff(n.ts_ns) <= window
            });
        self.rejected = keep.into();
        for h in take {
            self.correlator.push(h);
        }
    }

    fn correlator_window(&self) -> u64 {
        self.correlator.window_ns()
    }

    /// Whether either view of a translated packet passes the user-space filter (a filter on a
    /// Service address follows the packet to its endpoint, one on the endpoint includes the
    /// hop before the translation).
    fn either_passes(&mut self, entered: &PacketId, now: &PacketId) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        let input = |p: &PacketId| FilterInput {
            saddr: u32::from_ne_bytes(p.src.octets()),
            daddr: u32::from_ne_bytes(p.dst.octets()),
            proto: p.proto,
            sport: p.sport,
            dport: p.dport,
        };
        let ok = filter.matches(&input(entered)) || filter.matches(&input(now));
        if !ok {
            self.counts.filtered += 1;
        }
        ok
    }

    /// A decoded drop: back to its flow's identity before NAT, filter, name, drop the noise,
    /// then correlate.
    pub(crate) fn push_drop(&mut self, d: &DropRecord, names: &dyn DropNames) {
        let mut d = d.clone();
        let passes = match self.nat.translate(&d.packet, d.ts_ns) {
            Some(entered) => {
                let now = d.packet;
                d.packet = entered;
                self.either_passes(&entered, &now)
            }
            None => self.packet_passes(&d.packet),
        };
        if !passes {
            return;
        }
        let d = &d;
        self.counts.drops_seen += 1;
        let reason = names.reason_name(d.reason);
        if is_noise(&reason, &d.packet, d.icmp_type) {
            self.counts.noise_drops += 1;
            return;
        }
        let function = names.location(d.location);
        if is_receiver_drop(&reason, &function) {
            self.counts.receiver_drops += 1;
            return;
        }
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

    /// The tracer lost events (ring buffer full) between two drains, `[from_ns, to_ns]`: traces
    /// in flight then are not called lost.
    pub fn tracer_loss(&mut self, from_ns: u64, to_ns: u64) {
        self.correlator.note_tracer_loss(from_ns, to_ns);
    }

    /// Records that could not be read as whole records (a recording cut short): the tracer's
    /// own loss.
    pub fn count_decode_errors(&mut self, n: u64) {
        self.counts.decode_errors += n;
        if let Some(o) = self.observer.as_mut() {
            o.decode_errors(n);
        }
    }

    fn unexpected(&mut self, ev: &Event) {
        self.count_decode_errors(1);
        log::warn!("record of an unexpected kind on this ring buffer: {ev:?}");
    }

    fn decode_error(&mut self, source: &str, e: &DecodeError) {
        self.count_decode_errors(1);
        if self.counts.decode_errors <= 5 {
            log::warn!("undecodable record from {source}: {e}");
        }
    }

    /// After a drain, at monotonic time `now_ns`: prints the traces that completed; returns
    /// true once `--count` is reached.
    pub fn tick(&mut self, now_ns: u64) -> Result<bool> {
        self.nat.expire(now_ns);
        self.correlator.start_expire(now_ns);
        self.emit(now_ns)
    }

    /// Closes every open trace (end of the session) and prints it.
    pub fn close_all(&mut self) -> Result<()> {
        self.correlator.start_finish();
        self.emit(u64::MAX).map(|_| ())
    }

    /// The stages after correlation, for the traces the correlator hands out: traces that left
    /// the traced nodes wait for an answer (`answered`), the others go on at once; then those
    /// whose wait is over at `now_ns`. Each trace goes through every stage before the next is
    /// taken: no batch of traces is built.
    fn emit(&mut self, now_ns: u64) -> Result<bool> {
        let mut res = Ok(());
        while let Some(t) = self.correlator.next_due() {
            self.answered.saw(&t);
            if let Some(t) = self.answered.hold(t, &self.topology) {
                // After a failed write, the rest are still taken from the correlator (and
                // noted as seen), as they would have been in one batch.
                if res.is_ok() {
                    res = self.stages(t);
                }
            }
        }
        res?;
        for t in self.answered.release(now_ns) {
            self.stages(t)?;
        }
        self.out.flush()?;
        Ok(self.limit_reached())
    }

    /// Whether `--count` traces were printed.
    fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|l| self.counts.printed >= l)
    }

    /// Verdict, names, flows, latency, render, for one trace (none once `--count` is reached).
    fn stages(&mut self, mut t: Trace) -> Result<()> {
        if self.limit_reached() {
            return Ok(());
        }
        if t.nat.is_empty() {
            t.answers = self.nat.answered(&t.packet).cloned();
        }
        if matches!(t.outcome, Outcome::Dropped | Outcome::Lost) {
            // The state at the time of the failure (live: read again, at most once a
            // second per node) of the node where the packet died.
            let node = match &t.drop {
                Some(d) => self.topology.pod(d.netns).map_or(Some(d.netns), |p| {
                    let host = &p.pod_of.as_ref()?.node;
                    self.topology
                        .nodes
                        .iter()
                        .find(|n| &n.name == host)
                        .map(|n| n.netns)
                }),
                None => t.hops.last().map(|h| h.netns),
            };
            if let Some(netns) = node {
                self.evidence.refresh(netns);
            }
            t.verdict = verdict::judge(&t, &self.topology, &self.evidence);
        }
        if let Some(names) = &self.names {
            t.names = names.name_trace(&t);
        }
        self.flows.entry(t.packet.flow()).or_default().record(&t);
        let json = !self.quiet && self.output == Output::Json;
        // Measured once for the statistics and the line (the statistics' clock model is
        // `self.clock`: `set_clock` sets both).
        let measured = (self.latency.is_some() || json).then(|| Measurements::of(&t, &self.clock));
        if let (Some(stats), Some(m)) = (self.latency.as_mut(), &measured) {
            stats.record_measured(&t, m);
        }
        if let Some(o) = self.observer.as_mut() {
            o.trace(&t, &self.clock);
        }
        if !self.quiet {
            match self.output {
                Output::Text => render::write_trace_text(&mut self.out, &t, &self.clock)?,
                Output::Json => {
                    let m = match &measured {
                        Some(m) => m,
                        None => &Measurements::of(&t, &self.clock),
                    };
                    render::write_trace_json_in(&mut self.out, &mut self.line, &t, m)?;
                    if self.line.capacity() > LINE_KEPT {
                        self.line = Vec::new();
                    }
                }
            }
        }
        self.counts.printed += 1;
        if let Some(all) = self.collected.as_mut() {
            all.push(t);
        }
        Ok(())
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
        if let Some(o) = self.observer.as_mut() {
            o.clocks(r);
        }
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
            receiver_drops: self.counts.receiver_drops,
            loss: &loss,
        };
        if let Some(o) = self.observer.as_mut() {
            o.finish(&summary, self.latency.as_ref());
        }
        match self.output {
            Output::Text => render::write_summary_text(&mut self.out, &summary)?,
            Output::Json => render::write_summary_json(&mut self.out, &summary)?,
        }
        self.out.flush()?;
        Ok(self.collected.take().unwrap_or_default())
    }
}

/// The latency segment of an in-kernel histogram index (`SEG_*`).
pub(crate) fn segment_name(seg: u32) -> Option<SegmentName> {
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

mod answered;
#[cfg(test)]
mod tests;
