//! Collecting the report: a [`Collector`] observes the pipeline (every trace after its verdict,
//! the clocks of a merge, the nodes' recorded state, the run's numbers at the end) and
//! [`build`] adds what the merge says about its inputs (their headers, how each one ended) and
//! the audit of the nodes' state (`audit`, as `tracer check` runs it).
//!
//! Memory stays bounded whatever the size of the recordings: failed packets are grouped into
//! findings (same verdict at the same place), each keeping its first few packets in full and
//! counting the rest; incomplete traces are counted by where they were last seen; the latency
//! distributions are the pipeline's own histograms (the same numbers `replay --stats` prints),
//! read once at the end.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::model::*;
use super::wall_time;
use crate::{
    audit,
    latency::{
        segments_with_clock, ClockModel, ClockSource, LatencyStats, SegmentClock, SegmentName,
    },
    merge::{end_text, Opened, ReplayEnd, Replayed},
    model::{
        proto_name, ClockReport, CorrelateStats, FlowKey, FlowSummary, LossCounters, Outcome, Trace,
    },
    pipeline::Observer,
    render::{encap_text, flow_text, packet_text, route_node, route_text, RunSummary},
    state::NodeState,
    topology::Node,
};

/// Findings kept in full (failed packets of further kinds are counted only).
pub const MAX_FINDINGS: usize = 50;
/// Packets of a finding drawn hop by hop.
pub const EXAMPLES: usize = 3;
/// Packets of a finding listed one per line.
pub const PACKET_ROWS: usize = 20;
/// Flows named per finding.
const FLOWS_PER_FINDING: usize = 10;
/// Places where incomplete traces were last seen, kept apart.
const MAX_INCOMPLETE_GROUPS: usize = 50;
/// Flows of the flow table.
pub const MAX_FLOW_ROWS: usize = 100;
/// Flows with their own latency tables (failing flows first, then the busiest).
pub const MAX_LATENCY_FLOWS: usize = 20;
/// Bins of a latency histogram.
const BINS: usize = 24;

/// What makes two failed packets one finding: verdict, outcome and place (not the length or
/// the outer ports, which differ by packet and flow).
type GroupKey = (String, &'static str, String, String, String, String);

/// The pipeline's traces and numbers, as far as the report needs them.
#[derive(Default)]
pub struct Collector {
    findings: Vec<Finding>,
    /// Per finding, its flows.
    finding_flows: Vec<BTreeSet<FlowKey>>,
    index: HashMap<GroupKey, usize>,
    findings_left_out: u64,
    incomplete: BTreeMap<(String, String, &'static str, bool), u64>,
    incomplete_left_out: u64,
    outcomes: Outcomes,
    traces_with_tracer_loss: u64,
    failing_flows: HashSet<FlowKey>,
    clocks: Option<ClockReport>,
    /// The nodes' state as recorded, by namespace key.
    states: Vec<(u32, NodeState)>,
    end: Option<End>,
}

/// The run's numbers, copied at its end.
struct End {
    flows: BTreeMap<FlowKey, FlowSummary>,
    correlator: CorrelateStats,
    drops_seen: u64,
    noise_drops: u64,
    loss: LossCounters,
    latency: Latency,
}

impl Observer for Collector {
    fn trace(&mut self, t: &Trace, clock: &ClockModel) {
        let o = &mut self.outcomes;
        o.traces += 1;
        match t.outcome {
            Outcome::Delivered => o.delivered += 1,
            Outcome::Dropped | Outcome::Lost => {
                if t.outcome == Outcome::Dropped {
                    o.dropped += 1;
                } else {
                    o.lost += 1;
                }
                self.failing_flows.insert(t.packet.flow());
                self.failed(t, clock);
            }
            Outcome::Incomplete => {
                o.incomplete += 1;
                self.traces_with_tracer_loss += u64::from(t.tracer_loss);
                let (node, ifname, dir) = match t.hops.last() {
                    Some(h) => (h.node.to_string(), h.ifname.to_string(), h.dir.as_str()),
                    None => ("?".into(), "?".into(), "-"),
                };
                let key = (node, ifname, dir, t.tracer_loss);
                if self.incomplete.len() < MAX_INCOMPLETE_GROUPS
                    || self.incomplete.contains_key(&key)
                {
                    *self.incomplete.entry(key).or_default() += 1;
                } else {
                    self.incomplete_left_out += 1;
                }
            }
        }
    }

    fn decode_errors(&mut self, _n: u64) {
        // Counted by the pipeline: the summary at the end carries them.
    }

    fn clocks(&mut self, r: &ClockReport) {
        self.clocks = Some(r.clone());
    }

    fn node_state(&mut self, netns: u32, s: &NodeState) {
        // One state per node (two recordings of one namespace carry it twice).
        if !self.states.iter().any(|(k, _)| *k == netns) {
            self.states.push((netns, s.clone()));
        }
    }

    fn finish(&mut self, s: &RunSummary<'_>, latency: Option<&LatencyStats>) {
        let latency = latency.map_or_else(Latency::default, |l| {
            latency_of(l, &self.failing_flows, s.flows)
        });
        self.end = Some(End {
            flows: s.flows.clone(),
            correlator: s.correlator.clone(),
            drops_seen: s.drops_seen,
            noise_drops: s.noise_drops,
            loss: *s.loss,
            latency,
        });
    }
}

impl Collector {
    /// A dropped or lost packet: into its finding.
    fn failed(&mut self, t: &Trace, clock: &ClockModel) {
        let place = place_of(t);
        let verdict = t.verdict.as_ref();
        let name = verdict.map_or("(no verdict)", |v| v.name).to_string();
        let key: GroupKey = match &place {
            Place::KernelDrop {
                node,
                ifname,
                reason,
                function,
                ..
            } => (
                name.clone(),
                t.outcome.as_str(),
                node.clone(),
                ifname.clone(),
                reason.clone(),
                function.clone(),
            ),
            Place::LostAfter { node, ifname, dir } => (
                name.clone(),
                t.outcome.as_str(),
                node.clone(),
                ifname.clone(),
                dir.to_string(),
                String::new(),
            ),
        };
        let at = moment(t.first_ts_ns());
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None if self.findings.len() >= MAX_FINDINGS => {
                self.findings_left_out += 1;
                return;
            }
            None => {
                self.findings.push(Finding {
                    verdict: name,
                    explanation: verdict.map(|v| v.explanation.clone()).unwrap_or_default(),
                    evidence: verdict.map(|v| v.evidence.clone()).unwrap_or_default(),
                    outcome: t.outcome,
                    place,
                    count: 0,
                    first: at.clone(),
                    last: at.clone(),
                    flows: Vec::new(),
                    flows_total: 0,
                    routes: routes_of(t),
                    examples: Vec::new(),
                    packets: Vec::new(),
                });
                self.finding_flows.push(BTreeSet::new());
                self.index.insert(key, self.findings.len() - 1);
                self.findings.len() - 1
            }
        };
        let f = &mut self.findings[i];
        f.count += 1;
        if at.mono_ns < f.first.mono_ns {
            f.first = at.clone();
        }
        if at.mono_ns > f.last.mono_ns {
            f.last = at.clone();
        }
        if f.examples.len() < EXAMPLES {
            f.examples.push(timeline(t, clock));
        }
        if f.packets.len() < PACKET_ROWS {
            f.packets.push(PacketRow {
                at,
                packet: packet_text(t),
                hops: t.hops.len(),
            });
        }
        self.finding_flows[i].insert(t.packet.flow());
    }
}

/// A time on the reference timeline, its wall clock filled in by `build`.
fn moment(mono_ns: u64) -> Moment {
    Moment {
        mono_ns,
        wall: None,
    }
}

/// Where a failed packet died: the kernel's drop, else the last hop it was seen at.
fn place_of(t: &Trace) -> Place {
    if let Some(d) = &t.drop {
        return Place::KernelDrop {
            node: d.node.clone(),
            ifname: d.ifname.clone(),
            reason: d.reason.clone(),
            function: d.function.clone(),
            len: d.len,
            encap: d.encap.as_ref().map(encap_text),
        };
    }
    match t.hops.last() {
        Some(h) => Place::LostAfter {
            node: h.node.to_string(),
            ifname: h.ifname.to_string(),
            dir: h.dir.as_str(),
        },
        None => Place::LostAfter {
            node: "?".into(),
            ifname: "?".into(),
            dir: "-",
        },
    }
}

/// The route lookups seen for a packet, as the text output prints them.
fn routes_of(t: &Trace) -> Vec<String> {
    t.routes
        .iter()
        .map(|r| match route_node(t, r) {
            Some(node) => format!("{node} {}", route_text(t, r)),
            None => route_text(t, r),
        })
        .collect()
}

/// One packet as lanes (nodes) and events (hops, the drop) in time.
pub fn timeline(t: &Trace, clock: &ClockModel) -> Timeline {
    let mut lanes: Vec<String> = Vec::new();
    let mut lane = |node: &str| match lanes.iter().position(|l| l == node) {
        Some(i) => i,
        None => {
            lanes.push(node.to_string());
            lanes.len() - 1
        }
    };
    let first = t.first_ts_ns();
    let h0 = t.hops.first();
    let mut events: Vec<TimelineEvent> = t
        .hops
        .iter()
        .map(|h| TimelineEvent {
            lane: lane(&h.node),
            kind: match h.dir {
                crate::model::Direction::Ingress => EventKind::Ingress,
                crate::model::Direction::Egress => EventKind::Egress,
            },
            ifname: h.ifname.to_string(),
            t_ns: h.ts_ns.saturating_sub(first),
            err_ns: match h0.and_then(|h0| clock.relation(h0, h)) {
                Some(SegmentClock::Estimated { err_ns, .. }) => Some(err_ns),
                _ => None,
            },
            detail: h.encap.as_ref().map(encap_text).unwrap_or_default(),
        })
        .collect();
    if let Some(d) = &t.drop {
        let ev = TimelineEvent {
            lane: lane(&d.node),
            kind: EventKind::Drop,
            ifname: d.ifname.clone(),
            t_ns: d.ts_ns.saturating_sub(first),
            err_ns: None,
            detail: format!("{} in {}", d.reason, d.function),
        };
        // After every hop at or before it (a stable place among equal times).
        let at = events.partition_point(|e| e.t_ns <= ev.t_ns);
        events.insert(at, ev);
    }
    let segments = segments_with_clock(t, clock)
        .into_iter()
        .map(|s| SegmentValue {
            name: s.name.as_str(),
            ns: s.ns,
            err_ns: match s.clock {
                SegmentClock::Exact => None,
                SegmentClock::Estimated { err_ns, .. } => Some(err_ns),
            },
        })
        .collect();
    Timeline {
        packet: packet_text(t),
        outcome: t.outcome,
        start: moment(first),
        lanes,
        events,
        segments,
    }
}

/// The latency tables: the total, then failing flows, then the busiest, from the pipeline's
/// histograms.
fn latency_of(
    l: &LatencyStats,
    failing: &HashSet<FlowKey>,
    flows: &BTreeMap<FlowKey, FlowSummary>,
) -> Latency {
    let mut keys = l.flows();
    keys.sort_by_key(|k| {
        (
            !failing.contains(k),
            std::cmp::Reverse(flows.get(k).map_or(0, |f| f.packets)),
            *k,
        )
    });
    let shown = keys.len().min(MAX_LATENCY_FLOWS);
    let clock = match l.clock().source {
        ClockSource::SharedKernel => "one kernel, one clock: every segment is exact".to_string(),
        ClockSource::PerNode => {
            "one clock per node without offsets: segments across nodes are left out".to_string()
        }
        ClockSource::Estimated => "clocks of several machines placed on the first \
             recording's timeline: segments across machines are within the bound of the \
             estimate (see the clocks), segments within a machine are exact"
            .to_string(),
    };
    Latency {
        clock,
        total: table(l, None),
        flows: keys[..shown]
            .iter()
            .map(|k| FlowLatency {
                flow: format!("{} {}", proto_name(k.proto).to_uppercase(), flow_text(k)),
                failing: failing.contains(k),
                table: table(l, Some(k)),
            })
            .collect(),
        flows_left_out: keys.len() - shown,
        skipped_unsynchronized: l.skipped_unsynchronized(),
        skipped_negative: l.skipped_negative(),
        traces_beyond_flow_limit: l.traces_beyond_flow_limit(),
    }
}

fn table(l: &LatencyStats, flow: Option<&FlowKey>) -> SegmentTable {
    SegmentTable {
        traces: l.traces_measured(flow),
        rows: SegmentName::ALL
            .iter()
            .filter_map(|&name| {
                let summary = l.summary(flow, name)?;
                Some(SegmentRow {
                    name: name.as_str(),
                    summary,
                    bins: bins(&l.distribution(flow, name)),
                })
            })
            .collect(),
    }
}

/// `BINS` log-spaced bins from the smallest to the largest value (one bin when they are equal).
pub fn bins(values: &[(u64, u64)]) -> Vec<Bin> {
    let (Some(&(lo, _)), Some(&(hi, _))) = (values.first(), values.last()) else {
        return Vec::new();
    };
    let (lo, hi) = (lo.max(1) as f64, hi.max(1) as f64);
    if hi <= lo * 1.000_1 {
        let count = values.iter().map(|v| v.1).sum();
        return vec![Bin {
            lo_ns: lo * 0.9,
            hi_ns: hi * 1.1,
            count,
        }];
    }
    let ratio = (hi / lo).ln();
    let mut out: Vec<Bin> = (0..BINS)
        .map(|i| Bin {
            lo_ns: lo * (ratio * i as f64 / BINS as f64).exp(),
            hi_ns: lo * (ratio * (i + 1) as f64 / BINS as f64).exp(),
            count: 0,
        })
        .collect();
    for &(v, n) in values {
        let x = ((v.max(1) as f64 / lo).ln() / ratio * BINS as f64).floor();
        let i = (x.max(0.0) as usize).min(BINS - 1);
        out[i].count += n;
    }
    out
}

/// The report from what the collector saw and what the replay said about its inputs.
pub fn build(c: Collector, title: String, done: &Replayed) -> Report {
    let wall = |m: &mut Moment| {
        m.wall = done
            .reference_wall_minus_mono
            .map(|w| wall_time(i128::from(m.mono_ns) + w, 6));
    };
    let mut findings = c.findings;
    for (f, flows) in findings.iter_mut().zip(c.finding_flows) {
        f.flows_total = flows.len();
        f.flows = flows
            .iter()
            .take(FLOWS_PER_FINDING)
            .map(|k| format!("{} {}", proto_name(k.proto).to_uppercase(), flow_text(k)))
            .collect();
        wall(&mut f.first);
        wall(&mut f.last);
        f.packets.iter_mut().for_each(|p| wall(&mut p.at));
        f.examples.iter_mut().for_each(|x| wall(&mut x.start));
    }
    findings.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.first.mono_ns.cmp(&b.first.mono_ns))
    });
    let end = c.end.unwrap_or_else(|| End {
        flows: BTreeMap::new(),
        correlator: CorrelateStats::default(),
        drops_seen: 0,
        noise_drops: 0,
        loss: LossCounters::default(),
        latency: Latency::default(),
    });
    let inputs: Vec<InputState> = done.ends.iter().map(input_state).collect();
    let mut completeness = Completeness {
        missing: Vec::new(),
        loss: end.loss,
        correlator: end.correlator.clone(),
        traces_with_tracer_loss: c.traces_with_tracer_loss,
        drops_seen: end.drops_seen,
        noise_drops: end.noise_drops,
    };
    completeness.missing = missing(&completeness, &inputs, &done.opened, c.clocks.as_ref());
    let mut incomplete: Vec<IncompleteGroup> = c
        .incomplete
        .into_iter()
        .map(
            |((node, ifname, dir, tracer_loss), count)| IncompleteGroup {
                node,
                ifname,
                dir,
                tracer_loss,
                count,
            },
        )
        .collect();
    incomplete.sort_by_key(|g| std::cmp::Reverse(g.count));
    if c.incomplete_left_out > 0 {
        incomplete.push(IncompleteGroup {
            node: "(elsewhere)".into(),
            ifname: "-".into(),
            dir: "-",
            tracer_loss: false,
            count: c.incomplete_left_out,
        });
    }
    let (flows, flows_left_out) = flow_rows(&end.flows, &c.failing_flows);
    Report {
        title,
        tracer_version: env!("CARGO_PKG_VERSION"),
        inputs,
        completeness,
        outcomes: c.outcomes,
        findings,
        findings_left_out: c.findings_left_out,
        incomplete,
        flows,
        flows_left_out,
        latency: end.latency,
        environment: Environment {
            recordings: done
                .opened
                .iter()
                .map(|o| recording_env(o, &c.states))
                .collect(),
            clocks: c.clocks.map_or(Clocks::Single, Clocks::Merged),
            audit: audit_of(&c.states),
        },
        warnings: done.warnings.clone(),
    }
}

fn input_state((name, end): &(String, ReplayEnd)) -> InputState {
    let e = match end {
        ReplayEnd::Complete | ReplayEnd::CountReached => InputEnd::Complete,
        ReplayEnd::NoTrailer => InputEnd::NoEndFrame,
        ReplayEnd::Truncated(_) => InputEnd::Truncated,
        ReplayEnd::Damaged(_) => InputEnd::Damaged,
        ReplayEnd::Unreadable(_) => InputEnd::Unreadable,
    };
    InputState {
        name: name.clone(),
        end: e,
        detail: end_text(end),
    }
}

/// One sentence per gap in the evidence.
fn missing(
    c: &Completeness,
    inputs: &[InputState],
    opened: &[Opened],
    clocks: Option<&ClockReport>,
) -> Vec<String> {
    let mut out: Vec<String> = inputs
        .iter()
        .filter(|i| i.end != InputEnd::Complete)
        .map(|i| format!("{}: {}", i.name, i.detail))
        .collect();
    let l = &c.loss;
    if l.ringbuf_full > 0 || c.correlator.loss_windows > 0 {
        out.push(format!(
            "the tracer lost {} events (ring buffer full; {} drains with losses): {} traces in \
             flight then are incomplete and got no verdict ({} of them would otherwise have \
             been called lost)",
            l.ringbuf_full,
            c.correlator.loss_windows,
            c.traces_with_tracer_loss,
            c.correlator.lost_withheld
        ));
    }
    if l.decode_errors > 0 {
        out.push(format!("{} records could not be decoded", l.decode_errors));
    }
    if l.drop_read_errors > 0 {
        out.push(format!(
            "{} kernel drops could not be read (their packet is unknown)",
            l.drop_read_errors
        ));
    }
    if l.agg_map_full > 0 {
        out.push(format!(
            "{} packets lost their in-kernel aggregation slot in flight",
            l.agg_map_full
        ));
    }
    let evicted = c.correlator.evicted + c.correlator.identity_evicted;
    if evicted > 0 {
        out.push(format!(
            "{evicted} traces were closed early (too many open at once): their later hops may \
             be in other traces"
        ));
    }
    for o in opened {
        if !o.header.hooks {
            out.push(format!(
                "{} was recorded with --no-drops: kernel drops and route lookups were not \
                 recorded, so no drop is named",
                o.name
            ));
        }
        if o.header.sample > 1 {
            out.push(format!(
                "{} recorded one packet in {} (--sample)",
                o.name, o.header.sample
            ));
        }
    }
    if let Some(r) = clocks {
        for x in &r.recordings {
            if matches!(x.basis, "wall-clock" | "unknown") {
                out.push(format!(
                    "{}: no packet crossed between it and another recording: its clock has no \
                     bound and latencies across it are left out",
                    x.name
                ));
            }
        }
    }
    out
}

/// Failing flows first, then the busiest.
fn flow_rows(
    flows: &BTreeMap<FlowKey, FlowSummary>,
    failing: &HashSet<FlowKey>,
) -> (Vec<FlowRow>, usize) {
    let mut all: Vec<(&FlowKey, &FlowSummary)> = flows.iter().collect();
    all.sort_by_key(|(k, f)| (!failing.contains(k), std::cmp::Reverse(f.packets), **k));
    let shown = all.len().min(MAX_FLOW_ROWS);
    let rows = all[..shown]
        .iter()
        .map(|(k, f)| FlowRow {
            proto: proto_name(k.proto).to_uppercase(),
            flow: flow_text(k),
            packets: f.packets,
            bytes: f.bytes,
            delivered: f.delivered,
            dropped: f.dropped,
            lost: f.lost,
            incomplete: f.incomplete,
        })
        .collect();
    (rows, all.len() - shown)
}

/// The audit of the recorded states; `None` without any.
fn audit_of(states: &[(u32, NodeState)]) -> Option<Audit> {
    if states.is_empty() {
        return None;
    }
    let nodes: Vec<NodeState> = states.iter().map(|(_, s)| s.clone()).collect();
    Some(Audit {
        nodes: nodes.iter().map(|n| n.node.clone()).collect(),
        findings: audit::audit(&nodes)
            .into_iter()
            .map(|f| AuditFinding {
                severity: f.severity.as_str(),
                code: f.code,
                nodes: f.nodes,
                object: f.object,
                found: f.found,
                expected: f.expected,
                fix: f.fix,
            })
            .collect(),
    })
}

fn recording_env(o: &Opened, states: &[(u32, NodeState)]) -> RecordingEnv {
    let h = &o.header;
    let m = &h.machine;
    RecordingEnv {
        name: o.name.clone(),
        tracer_version: h.tracer_version.clone(),
        host: if m.hostname.is_empty() {
            h.host.clone()
        } else {
            m.hostname.clone()
        },
        machine_id: m.machine_id.clone(),
        boot_id: m.boot_id.clone(),
        kernel: if m.kernel.is_empty() {
            h.kernel.clone()
        } else {
            m.kernel.clone()
        },
        clocksource: m.clocksource.clone(),
        started: (h.started_unix_ms > 0)
            .then(|| wall_time(i128::from(h.started_unix_ms) * 1_000_000, 3)),
        filter: h.filter.clone(),
        sample: h.sample,
        hooks: h.hooks,
        nodes: h
            .topology
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let key = o.node_keys.get(i).copied().unwrap_or(n.netns);
                let state = states.iter().find(|(k, _)| *k == key).map(|(_, s)| s);
                node_env(n, o.node_names.get(i), state)
            })
            .collect(),
    }
}

/// A node from the recording's header, with its recorded state's routes when there is one.
fn node_env(n: &Node, placed: Option<&String>, state: Option<&NodeState>) -> NodeEnv {
    let mut interfaces: Vec<IfaceEnv> = n
        .links
        .iter()
        .map(|l| IfaceEnv {
            name: l.name.clone(),
            ifindex: l.ifindex,
            kind: n
                .ifaces
                .iter()
                .find(|i| i.ifindex == l.ifindex)
                .map(|i| i.kind.as_str()),
            mtu: Some(l.mtu),
        })
        .collect();
    for i in &n.ifaces {
        if !interfaces.iter().any(|x| x.ifindex == i.ifindex) {
            interfaces.push(IfaceEnv {
                name: i.name.clone(),
                ifindex: i.ifindex,
                kind: Some(i.kind.as_str()),
                mtu: None,
            });
        }
    }
    let strings = |v: &[std::net::Ipv4Addr]| v.iter().map(|a| a.to_string()).collect();
    NodeEnv {
        name: placed.cloned().unwrap_or_else(|| n.name.clone()),
        netns: n.netns,
        addrs: strings(&n.addrs),
        uplink_addrs: strings(&n.uplink_addrs),
        default_gw: n.default_gw.map(|g| g.to_string()),
        interfaces,
        routes: match state {
            Some(s) => s.routes.iter().map(|r| r.to_string()).collect(),
            None => n
                .routes
                .iter()
                .map(|r| match r.gw {
                    Some(gw) => format!("{}/{} via {gw} dev {}", r.dst, r.prefix_len, r.dev),
                    None => format!("{}/{} dev {}", r.dst, r.prefix_len, r.dev),
                })
                .collect(),
        },
        routes_all_tables: state.is_some(),
    }
}
