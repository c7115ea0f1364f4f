//! Replaying recordings, one or several machines' at once, through one pipeline: one trace
//! per packet across the machines, as the one-process trace does on one kernel.
//!
//! Stages, per replay:
//! 1. **open** (`inputs`): headers read, namespaces keyed apart, nodes named, one topology.
//! 2. **clocks**: with several machines' recordings, where each clock sits on the reference
//!    timeline (the first recording's CLOCK_MONOTONIC). The wall-clock samples of the
//!    recordings give a start; `sync` then matches every packet that left one machine's uplink
//!    and reached another's into constraints on the pair's offset, `offset` fits each pair with
//!    a bound, and `clocks` chains the pairs to the reference. Files are read twice (first for
//!    the clocks, then for the traces), so every trace uses the final estimate; streams are
//!    read once, with the estimate refreshed as packets arrive ([`REFIT_EVERY_NS`]).
//! 3. **feed**: the recordings' frames merged in time: each recording is read up to its next
//!    drain mark (`Tick`), and the earliest mark, on the reference timeline, is the next tick
//!    of the pipeline. Records go through the pipeline with their namespaces keyed and their
//!    timestamps placed on the reference timeline.
//!
//! One recording replays exactly as before: nothing is moved, its clock is the reference.

mod clocks;
mod inputs;
pub(crate) mod offset;
mod sync;

use std::{collections::HashMap, io::Write, sync::Arc};

use anyhow::Result;

pub use inputs::Input;

use crate::{
    event::{decode, Event},
    k8s::PodNames,
    latency::{ClockModel, MachineClock},
    machine::Machine,
    model::{ClockReport, LinkChange, LossCounters, PairClockReport, RecordingClockReport, Trace},
    names::RecordedNames,
    pipeline::{Pipeline, PipelineConfig, Placement, SharedObserver},
    progress::{Counters, Counting},
    recording::{Frame, Header, Reader, RecordError, Trailer, SOURCE_HOOKS},
    signals::StopFlag,
    state::NodeState,
};
use clocks::{Basis, PairReport, RecordingClock};
use sync::WireMatcher;

/// With streams, the clock estimate is refreshed after this much reference time.
pub const REFIT_EVERY_NS: u64 = 2_000_000_000;
/// Samples per machine in the clock model's tables.
const TABLE_SAMPLES: u64 = 2_000;

/// How a recording's replay ended.
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
    /// Not read: not a recording, or one this tracer cannot read.
    Unreadable(RecordError),
}

/// The result of a replay.
pub struct Replayed {
    /// Per input: its name and how its replay ended.
    pub ends: Vec<(String, ReplayEnd)>,
    /// The traces, when the configuration collects them.
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests read them"))]
    pub traces: Vec<Trace>,
    pub warnings: Vec<String>,
    /// The recordings read, in order (the first is the reference).
    pub opened: Vec<Opened>,
    /// `realtime − monotonic` of the reference recording (its last clock sample), to show
    /// times on the wall clock; `None` for a recording without clock samples (version 1).
    pub reference_wall_minus_mono: Option<i128>,
}

/// A recording that was read: its name, header, and its nodes' names and namespace keys in the
/// merged traces (by node index).
pub struct Opened {
    pub name: String,
    pub header: Header,
    pub node_names: Vec<String>,
    pub node_keys: Vec<u32>,
}

/// Options of a replay.
#[derive(Clone, Default)]
pub struct ReplayOptions {
    /// Wait at the end of a file for more, until a stop request (set: the flag).
    pub follow: Option<StopFlag>,
    /// Stop requests (Ctrl-C) end a live merge of streams cleanly.
    pub stop: Option<StopFlag>,
    /// Called for every recording opened (the command's start-up lines).
    pub on_open: Option<fn(&str, &Header)>,
    /// Also hands the traces and the run's numbers to this consumer (the incident report).
    pub observer: Option<SharedObserver>,
    /// Counts the records and bytes read, for a progress display.
    pub progress: Option<Arc<Counters>>,
    /// Names the traces' addresses after the cluster's pods and Services (`k8s`).
    pub names: Option<PodNames>,
}

/// One recording being read.
struct Src {
    name: String,
    reader: Reader<Box<dyn std::io::Read + Send>>,
    names: RecordedNames,
    keys: HashMap<u32, u32>,
    clock: RecordingClock,
    node_names: Vec<String>,
    /// The next drain mark read but not yet handed on (this recording's clock).
    tick: Option<u64>,
    end: Option<ReplayEnd>,
    trailer: Option<Trailer>,
    wall_minus_mono: Option<i128>,
    /// First and last drain marks seen (this recording's clock).
    span: Option<(u64, u64)>,
    /// The namespace inode of each of the recording's nodes, by node index.
    node_netns: Vec<u32>,
    progress: Option<Arc<Counters>>,
}

impl Placement for Src {
    fn netns(&self, inode: u32) -> u32 {
        self.keys.get(&inode).copied().unwrap_or(inode)
    }

    fn time(&self, ts_ns: u64) -> u64 {
        self.clock.to_reference(ts_ns)
    }
}

/// What happens to the frames of the merged recordings.
trait Visitor {
    fn record(&mut self, i: usize, src: &Src, source: u16, data: &[u8]);
    fn clock(&mut self, i: usize, wall_minus_mono: i128);
    fn loss(&mut self, from_ns: u64, to_ns: u64);
    /// Node (namespace key) `netns` gained or lost a traced interface.
    fn link(&mut self, _netns: u32, _change: &LinkChange) {}
    /// The live state of node (namespace key) `netns`, read when its recording started.
    fn state(&mut self, _netns: u32, _state: &NodeState) {}
    /// A drain mark at reference time `t`; true to stop (`--count` reached).
    fn tick(&mut self, t: u64) -> Result<bool>;
    /// Before the next drain mark (at about `t`) is chosen: a chance to place the sources'
    /// clocks anew.
    fn place(&mut self, _srcs: &mut [Src], _t: u64) {}
}

/// Replays `inputs` through a pipeline writing to `out`, then its summary (the clocks line
/// first, for several recordings).
pub fn replay<W: Write>(
    inputs: Vec<Input>,
    cfg: PipelineConfig,
    out: W,
    opts: &ReplayOptions,
) -> Result<Replayed> {
    let mut ends = Vec::new();
    let mut warnings = Vec::new();
    // Open every input; one that is not a readable recording is reported, the rest go on.
    let mut kept: Vec<Input> = Vec::new();
    let mut readers: Vec<Rd> = Vec::new();
    for mut input in inputs {
        let name = input.name();
        let r = input
            .open(opts.follow.as_ref())
            .map(|r| counted(r, &opts.progress))
            .map_err(RecordError::Io)
            .and_then(Reader::new);
        match r {
            Ok(reader) => {
                if let Some(f) = opts.on_open {
                    f(&name, &reader.header);
                }
                kept.push(input);
                readers.push(reader);
            }
            Err(e) => ends.push((name, ReplayEnd::Unreadable(e))),
        }
    }
    if kept.is_empty() {
        let why = ends
            .iter()
            .map(|(n, e)| format!("{n}: {}", end_text(e)))
            .collect::<Vec<_>>()
            .join("; ");
        anyhow::bail!("no recording to replay ({why})");
    }
    let headers: Vec<Header> = readers.iter().map(|r| r.header.clone()).collect();
    let machines: Vec<Machine> = headers.iter().map(|h| h.machine.clone()).collect();
    let topologies: Vec<_> = headers.iter().map(|h| &h.topology).collect();
    let placed = inputs::place(&topologies, &machines);
    for &(a, b) in &placed.same_namespaces {
        warnings.push(format!(
            "{} and {} recorded the same namespaces of one machine (boot id {}): their hops are \
             merged, duplicates counted once",
            kept[a].name(),
            kept[b].name(),
            machines[a].boot_id
        ));
    }
    let merging = kept.len() > 1;
    let two_pass = merging && opts.follow.is_none() && kept.iter().all(Input::rereadable);
    if let Some(p) = &opts.progress {
        p.passes.store(
            if two_pass { 2 } else { 1 },
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    // Clocks: a first pass over every file (several recordings, all files).
    let mut matcher = WireMatcher::new(&topologies);
    let (clocks, spans, pairs) = if two_pass {
        // Records and losses are counted once, in the second pass (bytes in both).
        let mut srcs = sources(readers, &kept, &placed, None, &None);
        // Placed by their wall clocks meanwhile, so that the files are read side by side.
        let walls = first_walls(&mut srcs)?;
        for (i, w) in walls.iter().enumerate() {
            if let Some(w) = w {
                matcher.clock(i, *w);
            }
        }
        let (wall_clocks, _) = clocks::place(&machines, &walls, Default::default());
        for (s, c) in srcs.iter_mut().zip(wall_clocks) {
            s.clock = c;
        }
        drive(
            &mut srcs,
            &mut SyncVisitor {
                matcher: &mut matcher,
            },
            None,
        )?;
        let walls: Vec<Option<i128>> = srcs.iter().map(|s| s.wall_minus_mono).collect();
        let spans: Vec<Option<(u64, u64)>> = srcs.iter().map(|s| s.span).collect();
        readers = kept
            .iter_mut()
            .map(|i| Ok(Reader::new(counted(i.open(None)?, &opts.progress))?))
            .collect::<Result<_>>()?;
        let (c, p) = clocks::place(&machines, &walls, matcher.constraints());
        (Some(c), spans, p)
    } else {
        (None, vec![None; kept.len()], Vec::new())
    };
    let pass_one = (matcher.matched, matcher.ambiguous);
    let mut srcs = sources(readers, &kept, &placed, clocks, &opts.progress);
    for (s, span) in srcs.iter_mut().zip(spans) {
        s.span = span;
    }
    let model = if merging {
        clock_model(&srcs, &placed.machine_of)
    } else {
        cfg.clock.clone()
    };
    let mut pipe = Pipeline::new(
        placed.topology.clone(),
        PipelineConfig {
            clock: model,
            ..cfg
        },
        out,
    );
    if let Some(o) = &opts.observer {
        pipe.set_observer(Box::new(o.clone()));
    }
    if let Some(n) = &opts.names {
        pipe.set_names(n.clone());
    }
    let mut v = PipeVisitor {
        pipe: &mut pipe,
        online: (merging && !two_pass).then_some(Online {
            matcher,
            machines: machines.clone(),
            machine_of: placed.machine_of.clone(),
            last_fit: None,
        }),
    };
    let count_reached = drive(&mut srcs, &mut v, opts.stop.as_ref())?;
    let online = v.online.take();
    let report = merging.then(|| match &online {
        Some(o) => {
            let walls: Vec<Option<i128>> = srcs.iter().map(|s| s.wall_minus_mono).collect();
            let pairs = clocks::place(&o.machines, &walls, o.matcher.constraints()).1;
            clock_report(
                &srcs,
                &machines,
                pairs,
                o.matcher.matched,
                o.matcher.ambiguous,
            )
        }
        None => clock_report(&srcs, &machines, pairs, pass_one.0, pass_one.1),
    });
    if let Some(r) = &report {
        warnings.extend(no_overlap(r));
    }
    pipe.close_all()?;
    pipe.write_stats(None)?;
    if let Some(r) = &report {
        pipe.write_clocks(r)?;
    }
    let loss = srcs
        .iter()
        .filter_map(|s| s.trailer.as_ref().map(|t| t.loss))
        .fold(LossCounters::default(), add_loss);
    let traces = pipe.write_summary(loss)?;
    let reference_wall_minus_mono = srcs.first().and_then(|s| s.wall_minus_mono);
    let opened = srcs
        .iter()
        .zip(headers)
        .zip(placed.node_names)
        .map(|((s, header), node_names)| Opened {
            name: s.name.clone(),
            header,
            node_names,
            node_keys: s.node_netns.iter().map(|&i| s.netns(i)).collect(),
        })
        .collect();
    for s in srcs {
        let end = match s.end {
            Some(e) => e,
            None if count_reached => ReplayEnd::CountReached,
            None => ReplayEnd::NoTrailer,
        };
        ends.push((s.name, end));
    }
    Ok(Replayed {
        ends,
        traces,
        warnings,
        opened,
        reference_wall_minus_mono,
    })
}

type Rd = Reader<Box<dyn std::io::Read + Send>>;

/// `r`, counting the bytes read through it when progress is shown.
fn counted(
    r: Box<dyn std::io::Read + Send>,
    progress: &Option<Arc<Counters>>,
) -> Box<dyn std::io::Read + Send> {
    match progress {
        Some(p) => Box::new(Counting::new(r, p.clone())),
        None => r,
    }
}

/// Every reader as a source; `clocks` places them (`None`: as recorded).
fn sources(
    readers: Vec<Rd>,
    inputs: &[Input],
    placed: &inputs::Placed,
    clocks: Option<Vec<RecordingClock>>,
    progress: &Option<Arc<Counters>>,
) -> Vec<Src> {
    let mut clocks = clocks.map(Vec::into_iter);
    readers
        .into_iter()
        .enumerate()
        .map(|(i, reader)| Src {
            name: inputs[i].name(),
            reader,
            names: RecordedNames::default(),
            keys: placed.keys[i].clone(),
            clock: clocks
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or_else(RecordingClock::as_recorded),
            node_names: placed.node_names[i].clone(),
            tick: None,
            end: None,
            trailer: None,
            wall_minus_mono: None,
            span: None,
            node_netns: placed.node_netns[i].clone(),
            progress: progress.clone(),
        })
        .collect()
}

/// Reads every source up to its first drain mark (the clock sample comes before it): their
/// wall clocks.
fn first_walls(srcs: &mut [Src]) -> Result<Vec<Option<i128>>> {
    let mut none = NoVisitor;
    for (i, s) in srcs.iter_mut().enumerate() {
        read_until_tick(i, s, &mut none)?;
    }
    Ok(srcs.iter().map(|s| s.wall_minus_mono).collect())
}

/// Ignores frames (and a record read while looking for the wall clock is not lost: pass one
/// only needs the hops, and a drain's worth of them before the first mark is a handful).
struct NoVisitor;

impl Visitor for NoVisitor {
    fn record(&mut self, _: usize, _: &Src, _: u16, _: &[u8]) {}
    fn clock(&mut self, _: usize, _: i128) {}
    fn loss(&mut self, _: u64, _: u64) {}
    fn tick(&mut self, _: u64) -> Result<bool> {
        Ok(false)
    }
}

fn add_loss(a: LossCounters, b: LossCounters) -> LossCounters {
    LossCounters {
        ringbuf_full: a.ringbuf_full + b.ringbuf_full,
        decode_errors: a.decode_errors + b.decode_errors,
        filtered: a.filtered + b.filtered,
        not_ipv4: a.not_ipv4 + b.not_ipv4,
        malformed: a.malformed + b.malformed,
        drop_read_errors: a.drop_read_errors + b.drop_read_errors,
        encap_probe_hits: a.encap_probe_hits + b.encap_probe_hits,
        sampled_out: a.sampled_out + b.sampled_out,
        agg_map_full: a.agg_map_full + b.agg_map_full,
    }
}

/// One line for how a recording's replay ended, for messages.
pub fn end_text(e: &ReplayEnd) -> String {
    match e {
        ReplayEnd::Complete => "complete".into(),
        ReplayEnd::CountReached => "--count reached".into(),
        ReplayEnd::NoTrailer => {
            "no end frame (the recorder was killed?): its kernel-side loss counters are unknown"
                .into()
        }
        ReplayEnd::Truncated(e) => {
            format!("{e}; replayed everything before it, its kernel-side loss counters are unknown")
        }
        ReplayEnd::Damaged(e) => format!("damaged: {e}; everything before the damage was replayed"),
        ReplayEnd::Unreadable(e) => format!("not replayed: {e}"),
    }
}

/// Reads `s` up to its next drain mark (or its end), handing every frame to `v`.
fn read_until_tick(i: usize, s: &mut Src, v: &mut impl Visitor) -> Result<()> {
    loop {
        let frame = match s.reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                s.end = Some(if s.trailer.is_some() {
                    ReplayEnd::Complete
                } else {
                    ReplayEnd::NoTrailer
                });
                return Ok(());
            }
            Err(e @ RecordError::Truncated { .. }) => {
                s.end = Some(ReplayEnd::Truncated(e));
                return Ok(());
            }
            Err(e) => {
                s.end = Some(ReplayEnd::Damaged(e));
                return Ok(());
            }
        };
        match frame {
            Frame::Record { source, data } => {
                // The frame borrows the reader; the visitor gets the rest of the source.
                let data = data.to_vec();
                if let Some(p) = &s.progress {
                    p.add_records(1);
                }
                v.record(i, s, source, &data);
            }
            Frame::Reason { value, name } => s.names.add_reason(value, name),
            Frame::Location { addr, symbol } => s.names.add_location(addr, symbol),
            Frame::Loss { from_ns, to_ns } => {
                if let Some(p) = &s.progress {
                    p.add_losses(1);
                }
                let (from, to) = (s.clock.to_reference(from_ns), s.clock.to_reference(to_ns));
                v.loss(from, to);
            }
            Frame::Clock(c) => {
                s.wall_minus_mono = Some(c.wall_minus_mono());
                v.clock(i, c.wall_minus_mono());
            }
            Frame::Link { node, change } => {
                if let Some(&inode) = s.node_netns.get(usize::from(node)) {
                    v.link(s.netns(inode), &change);
                }
            }
            Frame::State { node, state } => {
                if let Some(&inode) = s.node_netns.get(usize::from(node)) {
                    v.state(s.netns(inode), &state);
                }
            }
            Frame::Tick { now_ns } => {
                s.tick = Some(now_ns);
                s.span = Some(match s.span {
                    None => (now_ns, now_ns),
                    Some((a, b)) => (a.min(now_ns), b.max(now_ns)),
                });
                return Ok(());
            }
            Frame::End(t) => {
                s.trailer = Some(t);
                s.end = Some(ReplayEnd::Complete);
                return Ok(());
            }
        }
    }
}

/// Merges the sources' frames in time order into `v` until every source ends, `v` stops
/// (true: `--count` reached) or a stop request.
fn drive(srcs: &mut [Src], v: &mut impl Visitor, stop: Option<&StopFlag>) -> Result<bool> {
    loop {
        for (i, s) in srcs.iter_mut().enumerate() {
            if s.end.is_none() && s.tick.is_none() {
                read_until_tick(i, s, v)?;
            }
        }
        let earliest = |srcs: &[Src]| {
            srcs.iter()
                .enumerate()
                .filter_map(|(i, s)| Some((s.clock.to_reference(s.tick?), i)))
                .min()
        };
        let Some((t, _)) = earliest(srcs) else {
            return Ok(false);
        };
        v.place(srcs, t);
        let Some((t, i)) = earliest(srcs) else {
            return Ok(false);
        };
        srcs[i].tick = None;
        if v.tick(t)? {
            return Ok(true);
        }
        if stop.is_some_and(StopFlag::is_set) {
            return Ok(false);
        }
    }
}

/// Pass one: only the wire crossings.
struct SyncVisitor<'a> {
    matcher: &'a mut WireMatcher,
}

impl Visitor for SyncVisitor<'_> {
    fn record(&mut self, i: usize, _src: &Src, source: u16, data: &[u8]) {
        if source == SOURCE_HOOKS {
            return;
        }
        if let Ok(Event::Hop(h)) = decode(data) {
            self.matcher.hop(i, &h);
        }
    }

    fn clock(&mut self, i: usize, wall_minus_mono: i128) {
        self.matcher.clock(i, wall_minus_mono);
    }

    fn loss(&mut self, _from: u64, _to: u64) {}

    fn tick(&mut self, _t: u64) -> Result<bool> {
        Ok(false)
    }
}

/// Streams merged in one pass: the wire crossings feed the estimate as they come.
struct Online {
    matcher: WireMatcher,
    machines: Vec<Machine>,
    machine_of: HashMap<u32, usize>,
    /// Reference time of the last placement (none yet: the first drain mark places the clocks
    /// by their wall clocks).
    last_fit: Option<u64>,
}

/// Pass two: the pipeline.
struct PipeVisitor<'a, W: Write> {
    pipe: &'a mut Pipeline<W>,
    online: Option<Online>,
}

impl<W: Write> Visitor for PipeVisitor<'_, W> {
    fn record(&mut self, i: usize, src: &Src, source: u16, data: &[u8]) {
        if source == SOURCE_HOOKS {
            self.pipe.hook_record_placed(data, &src.names, src);
            return;
        }
        if let Some(o) = self.online.as_mut() {
            if let Ok(Event::Hop(h)) = decode(data) {
                o.matcher.hop(i, &h);
            }
        }
        match src.node_names.get(usize::from(source)) {
            Some(node) => self.pipe.node_record_placed(node, data, src),
            None => self.pipe.count_decode_errors(1),
        }
    }

    fn clock(&mut self, i: usize, wall_minus_mono: i128) {
        if let Some(o) = self.online.as_mut() {
            o.matcher.clock(i, wall_minus_mono);
        }
    }

    fn loss(&mut self, from_ns: u64, to_ns: u64) {
        self.pipe.tracer_loss(from_ns, to_ns);
    }

    fn link(&mut self, netns: u32, change: &LinkChange) {
        self.pipe.link_change(netns, change);
    }

    fn state(&mut self, netns: u32, state: &NodeState) {
        self.pipe.set_state(netns, state.clone());
    }

    fn tick(&mut self, t: u64) -> Result<bool> {
        self.pipe.tick(t)
    }

    fn place(&mut self, srcs: &mut [Src], t: u64) {
        let Some(o) = self.online.as_mut() else {
            return;
        };
        if o.last_fit.is_some_and(|last| t < last + REFIT_EVERY_NS) {
            return;
        }
        o.last_fit = Some(t);
        let walls: Vec<Option<i128>> = srcs.iter().map(|s| s.wall_minus_mono).collect();
        let (clocks, _) = clocks::place(&o.machines, &walls, o.matcher.constraints());
        for (s, c) in srcs.iter_mut().zip(clocks) {
            s.clock = c;
        }
        self.pipe.set_clock(clock_model(srcs, &o.machine_of));
    }
}

/// The clock model of a merge: each namespace key's machine, each machine's placement sampled
/// over the replay.
fn clock_model(srcs: &[Src], machine_of: &HashMap<u32, usize>) -> ClockModel {
    let machines = srcs
        .iter()
        .map(|s| {
            let bounded = s.clock.basis.bounded();
            MachineClock {
                basis: s.clock.basis.as_str(),
                table: match (bounded, s.span) {
                    // A stream's span so far, and the time until the next placement.
                    (true, Some((a, b))) => s.clock.table(a, b + 2 * REFIT_EVERY_NS, TABLE_SAMPLES),
                    (true, None) => s.clock.table(0, 0, 1),
                    _ => Vec::new(),
                },
            }
        })
        .collect();
    ClockModel::estimated(machine_of.clone(), machines)
}

fn clock_report(
    srcs: &[Src],
    machines: &[Machine],
    pairs: Vec<PairReport>,
    matched: u64,
    ambiguous: u64,
) -> ClockReport {
    let recordings = srcs
        .iter()
        .zip(machines)
        .map(|(s, machine)| {
            let mid = s
                .span
                .map_or(0, |(a, b)| s.clock.to_reference(a + (b - a) / 2));
            let (offset_ns, err) = s.clock.theta(mid);
            RecordingClockReport {
                name: s.name.clone(),
                host: machine.hostname.clone(),
                boot_id: machine.boot_id.clone(),
                basis: s.clock.basis.as_str(),
                offset_ns,
                offset_err_ns: err,
            }
        })
        .collect();
    let pairs = pairs
        .into_iter()
        .map(|p| {
            let (fit, estimate, outliers, why) = match &p.fit {
                offset::Fit::TwoSided {
                    t0_ns, outliers, ..
                } => ("two-sided", p.fit.at(*t0_ns), *outliers, None),
                offset::Fit::OneSided { t0_ns, .. } => ("one-sided", p.fit.at(*t0_ns), 0, None),
                offset::Fit::Unknown { why } => ("none", None, 0, Some(why.clone())),
            };
            PairClockReport {
                a: p.a,
                b: p.b,
                a_to_b: p.a_to_b,
                b_to_a: p.b_to_a,
                fit,
                offset_ns: estimate.map(|e| e.offset_ns),
                offset_err_ns: estimate.and_then(|e| match e.bound {
                    offset::Bound::Within { err_ns } => Some(err_ns),
                    offset::Bound::OneSided { .. } => None,
                }),
                outliers,
                why,
            }
        })
        .collect();
    ClockReport {
        recordings,
        pairs,
        matched,
        ambiguous,
    }
}

/// Recordings whose traffic never met another's: their clocks rest on the wall clock alone.
fn no_overlap(r: &ClockReport) -> Vec<String> {
    r.recordings
        .iter()
        .filter(|x| {
            [Basis::WallClock, Basis::Unknown]
                .map(Basis::as_str)
                .contains(&x.basis)
        })
        .map(|x| {
            format!(
                "{}: no packet crossed between it and another recording (do they overlap in \
                 time, with the same filter?): its clock is placed by {}, without a bound, and \
                 latencies across it are left out",
                x.name,
                if x.basis == Basis::WallClock.as_str() {
                    "the wall clocks"
                } else {
                    "nothing"
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
