//! The pipeline's side of the metrics: an [`Observer`] that counts every emitted trace into the
//! families, and the periodic readings of the kernel's counters (own losses, program costs).
//!
//! The pipeline thread is the only writer. A series is looked up in the family once and its
//! handle kept (an `Arc` around atomics), so the per-trace work is a local map lookup and a
//! few atomic adds; the family's lock is taken only to create a series. A histogram's own
//! lock is held for one observation, or while one scrape formats that histogram.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::families::{
    outcome_labels, DropLabels, Families, NamespaceDropLabels, NodeLabels, ProgramLabels,
    VerdictLabels, MAX_DROP_SERIES, MAX_NAMESPACE_SERIES, OTHER_IFACE, OTHER_NAMESPACE,
};
use crate::capture::ProgramRuns;
use crate::latency::{segments_with_clock, ClockModel, SegmentName};
use crate::model::{DropPoint, LossCounters, Outcome, Trace};
use crate::pipeline::Observer;

/// Counts traces into the families (see the module notes).
pub struct TraceCounter {
    f: Families,
    /// By outcome: delivered, dropped, lost, incomplete.
    outcomes: [Counter; 4],
    /// By [`SegmentName::index`].
    segments: [Histogram; SegmentName::COUNT],
    /// Packets and bytes, by node name.
    nodes: HashMap<Arc<str>, (Counter, Counter)>,
    /// The drop series created so far (bounded by [`MAX_DROP_SERIES`]).
    drop_series: HashSet<DropLabels>,
    /// The drop-by-namespace series created so far (bounded by [`MAX_NAMESPACE_SERIES`]).
    namespace_series: HashSet<NamespaceDropLabels>,
    decode_errors: Counter,
}

impl TraceCounter {
    pub fn new(f: Families) -> TraceCounter {
        let outcome = |o| f.traces.get_or_create_owned(&outcome_labels(o));
        TraceCounter {
            outcomes: [
                outcome(Outcome::Delivered),
                outcome(Outcome::Dropped),
                outcome(Outcome::Lost),
                outcome(Outcome::Incomplete),
            ],
            segments: SegmentName::ALL.map(|s| f.segment(s)),
            nodes: HashMap::new(),
            drop_series: HashSet::new(),
            namespace_series: HashSet::new(),
            decode_errors: f.own_loss("decode_error"),
            f,
        }
    }

    fn node(&mut self, node: &Arc<str>) -> &(Counter, Counter) {
        if !self.nodes.contains_key(node) {
            let labels = NodeLabels {
                node: node.to_string(),
            };
            let series = (
                self.f.packets.get_or_create_owned(&labels),
                self.f.bytes.get_or_create_owned(&labels),
            );
            self.nodes.insert(node.clone(), series);
        }
        &self.nodes[node]
    }

    fn drop(&mut self, d: &DropPoint) {
        let mut labels = DropLabels {
            node: d.node.clone(),
            interface: d.ifname.clone(),
            reason: d.reason.clone(),
        };
        if !self.drop_series.contains(&labels) {
            if self.drop_series.len() >= MAX_DROP_SERIES {
                labels.interface = OTHER_IFACE.into();
            }
            self.drop_series.insert(labels.clone());
        }
        self.f.drops.get_or_create(&labels).inc();
    }

    /// A drop of a packet from (else to) a pod or Service: by its namespace.
    fn namespace_drop(&mut self, t: &Trace, d: &DropPoint) {
        let Some(ns) = [t.packet.src, t.packet.dst]
            .into_iter()
            .find_map(|a| t.name_of(a))
            .map(|n| &n.namespace)
        else {
            return;
        };
        let mut labels = NamespaceDropLabels {
            namespace: ns.clone(),
            reason: d.reason.clone(),
        };
        if !self.namespace_series.contains(&labels) {
            if self.namespace_series.len() >= MAX_NAMESPACE_SERIES {
                labels.namespace = OTHER_NAMESPACE.into();
            }
            self.namespace_series.insert(labels.clone());
        }
        self.f.namespace_drops.get_or_create(&labels).inc();
    }
}

impl Observer for TraceCounter {
    fn trace(&mut self, t: &Trace, clock: &ClockModel) {
        let i = match t.outcome {
            Outcome::Delivered => 0,
            Outcome::Dropped => 1,
            Outcome::Lost => 2,
            Outcome::Incomplete => 3,
        };
        self.outcomes[i].inc();
        if let Some(v) = &t.verdict {
            self.f
                .verdicts
                .get_or_create(&VerdictLabels {
                    verdict: v.name.into(),
                })
                .inc();
        }
        if let Some(d) = &t.drop {
            self.drop(d);
            self.namespace_drop(t, d);
        }
        // Once per node (a trace has a handful of hops), at the node's first hop.
        for (i, h) in t.hops.iter().enumerate() {
            if t.hops[..i].iter().any(|p| p.node == h.node) {
                continue;
            }
            let (packets, bytes) = self.node(&h.node);
            packets.inc();
            bytes.inc_by(u64::from(h.len));
        }
        for s in segments_with_clock(t, clock) {
            if let Ok(ns) = u64::try_from(s.ns) {
                self.segments[s.name.index()].observe(ns as f64 * 1e-9);
            }
        }
    }

    fn decode_errors(&mut self, n: u64) {
        self.decode_errors.inc_by(n);
    }
}

/// Turns the kernel's cumulative counters (read every second) into counter increments.
pub struct KernelReadings {
    f: Families,
    /// Own losses counted in the kernel, as last read: ring buffer full, unreadable drops,
    /// aggregation slots taken over.
    losses: [u64; 3],
    /// Each program's readings, by (node, program).
    programs: HashMap<(String, String), ProgramSeries>,
}

/// One program's run count and run time (ns) as last read, and its two series.
struct ProgramSeries {
    count: u64,
    ns: u64,
    runs: Counter,
    seconds: Counter<f64>,
}

impl KernelReadings {
    pub fn new(f: Families) -> KernelReadings {
        KernelReadings {
            f,
            losses: [0; 3],
            programs: HashMap::new(),
        }
    }

    /// The kernel's loss counters now (cumulative since the capture started).
    pub fn losses(&mut self, loss: &LossCounters) {
        let now = [loss.ringbuf_full, loss.drop_read_errors, loss.agg_map_full];
        for ((cause, last), now) in ["ringbuf_full", "drop_read_error", "agg_map_full"]
            .iter()
            .zip(&mut self.losses)
            .zip(now)
        {
            if now > *last {
                self.f.own_loss(cause).inc_by(now - *last);
                *last = now;
            }
        }
    }

    /// The programs' run counts and times now (cumulative since each was loaded).
    pub fn programs(&mut self, runs: &[ProgramRuns]) {
        for r in runs {
            let f = &self.f;
            let p = self
                .programs
                .entry((r.node.clone(), r.program.clone()))
                .or_insert_with(|| {
                    let labels = ProgramLabels {
                        node: r.node.clone(),
                        program: r.program.clone(),
                    };
                    ProgramSeries {
                        count: 0,
                        ns: 0,
                        runs: f.program_runs.get_or_create_owned(&labels),
                        seconds: f.program_seconds.get_or_create_owned(&labels),
                    }
                });
            if r.run_count > p.count {
                p.runs.inc_by(r.run_count - p.count);
                p.count = r.run_count;
            }
            if r.run_time_ns > p.ns {
                p.seconds.inc_by((r.run_time_ns - p.ns) as f64 * 1e-9);
                p.ns = r.run_time_ns;
            }
        }
    }

    /// Whether `kernel.bpf_stats_enabled` is on now.
    pub fn bpf_stats_enabled(&mut self, on: bool) {
        self.f.bpf_stats_enabled.set(i64::from(on));
    }
}
