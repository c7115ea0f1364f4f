//! Histograms per segment, per flow and in total.

use std::collections::hash_map::Entry;

use hdrhistogram::Histogram;

use super::clock::{ClockModel, ClockSource};
use super::segment::{Measured, Measurements};
use super::SegmentName;
use crate::fast_hash::FastMap;
use crate::model::{FlowKey, Trace};

/// Largest value a histogram holds (60 s); larger values are recorded as this.
pub const MAX_NS: u64 = 60_000_000_000;
/// Default cap on the number of flows with their own histograms.
pub const DEFAULT_MAX_FLOWS: usize = 1024;
/// Significant decimal digits of the histograms.
const SIGFIG: u8 = 3;

/// The distribution of one segment, in ns. Percentiles are the histogram's (3 significant
/// digits) clamped into the exact `[min_ns, max_ns]`, so they never decrease from left to right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One segment's histogram with its exact extremes.
#[derive(Clone, Debug)]
struct SegHist {
    hist: Histogram<u64>,
    min: u64,
    max: u64,
}

impl SegHist {
    fn new() -> Self {
        SegHist {
            hist: Histogram::new(SIGFIG)
                .expect("3 significant digits are within hdrhistogram's 0..=5"),
            min: u64::MAX,
            max: 0,
        }
    }

    fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        let ns = ns.min(MAX_NS);
        if self.hist.record_n(ns, n).is_err() {
            // Unreachable with auto-resize and values up to MAX_NS; keep the count regardless.
            self.hist.saturating_record_n(ns, n);
        }
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    fn summary(&self) -> Summary {
        let q = |q: f64| self.hist.value_at_quantile(q).clamp(self.min, self.max);
        Summary {
            count: self.hist.len(),
            min_ns: self.min,
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: self.max,
        }
    }
}

/// The histograms of one flow, or of all flows.
#[derive(Clone, Debug, Default)]
pub(super) struct SegmentSet {
    /// Traces that contributed at least one segment.
    pub(super) traces: u64,
    /// By [`SegmentName::index`]; created when the segment is first recorded.
    hists: [Option<SegHist>; SegmentName::COUNT],
}

impl SegmentSet {
    fn record_n(&mut self, name: SegmentName, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.hists[name.index()]
            .get_or_insert_with(SegHist::new)
            .record_n(ns, n);
    }

    /// Records one trace's segment values (by segment index).
    fn record_trace(&mut self, values: &[Option<u64>; SegmentName::COUNT]) {
        self.traces += 1;
        for (name, v) in SegmentName::ALL.iter().zip(values) {
            if let Some(ns) = *v {
                self.record_n(*name, ns, 1);
            }
        }
    }

    fn summary(&self, name: SegmentName) -> Option<Summary> {
        self.hists[name.index()]
            .as_ref()
            .filter(|h| !h.hist.is_empty())
            .map(SegHist::summary)
    }

    /// Summaries of the recorded segments, in path order.
    pub(super) fn summaries(&self) -> Vec<(SegmentName, Summary)> {
        SegmentName::ALL
            .iter()
            .filter_map(|&n| self.summary(n).map(|s| (n, s)))
            .collect()
    }
}

/// Latency histograms per segment, per flow and in total, under one clock model.
#[derive(Clone, Debug)]
pub struct LatencyStats {
    clock: ClockModel,
    max_flows: usize,
    pub(super) total: SegmentSet,
    pub(super) flows: FastMap<FlowKey, SegmentSet>,
    traces: u64,
    skipped_unsynchronized: u64,
    skipped_negative: u64,
    traces_beyond_flow_limit: u64,
}

impl LatencyStats {
    /// Empty statistics with per-flow histograms for up to [`DEFAULT_MAX_FLOWS`] flows.
    pub fn new(clock: ClockModel) -> Self {
        LatencyStats::with_max_flows(clock, DEFAULT_MAX_FLOWS)
    }

    /// Empty statistics with per-flow histograms for up to `max_flows` flows; traces of further
    /// flows count in the total only.
    pub fn with_max_flows(clock: ClockModel, max_flows: usize) -> Self {
        LatencyStats {
            clock,
            max_flows,
            total: SegmentSet::default(),
            flows: FastMap::default(),
            traces: 0,
            skipped_unsynchronized: 0,
            skipped_negative: 0,
            traces_beyond_flow_limit: 0,
        }
    }

    pub fn clock(&self) -> &ClockModel {
        &self.clock
    }

    /// The clock model, to set offsets as they are estimated; they apply to later traces.
    pub fn clock_mut(&mut self) -> &mut ClockModel {
        &mut self.clock
    }

    /// Measures one trace under this statistics' clock model and records it.
    #[cfg(test)]
    pub fn record(&mut self, trace: &Trace) {
        let m = Measurements::of(trace, &self.clock);
        self.record_measured(trace, &m);
    }

    /// Records the segments of one trace measured under this statistics' clock model (`m`), in
    /// the total and in its flow. Cross-node segments whose clocks are not synchronized are
    /// counted in `skipped_unsynchronized`, negative deltas in `skipped_negative`.
    pub fn record_measured(&mut self, trace: &Trace, m: &Measurements) {
        self.traces += 1;
        let mut values = [None; SegmentName::COUNT];
        let (mut any, mut unsynchronized, mut negative) = (false, 0, 0);
        for m in m.iter() {
            match m {
                Measured::Segment(s) => match u64::try_from(s.ns) {
                    Ok(ns) => {
                        values[s.name.index()] = Some(ns);
                        any = true;
                    }
                    Err(_) => negative += 1,
                },
                Measured::Unsynchronized(_) => unsynchronized += 1,
            }
        }
        self.skipped_unsynchronized += unsynchronized;
        self.skipped_negative += negative;
        if !any {
            return;
        }
        self.total.record_trace(&values);
        if let Some(set) = self.flow_set(trace.packet.flow()) {
            set.record_trace(&values);
        } else {
            self.traces_beyond_flow_limit += 1;
        }
    }

    /// Records a log2 histogram aggregated elsewhere (per-CPU maps in the kernel, merged):
    /// `buckets[i]` counts values in `[2^i, 2^(i+1))` ns and is recorded at the bucket's
    /// **lower bound** `2^i` (so bucket 0 at 1 ns), in the total and, with `flow`, in that
    /// flow. Such values come from one kernel's clock: a `wire` histogram under
    /// [`ClockSource::PerNode`] contradicts the model and is counted as unsynchronized instead.
    pub fn record_bucketed(
        &mut self,
        segment: SegmentName,
        flow: Option<FlowKey>,
        buckets: &[u64],
    ) {
        if segment == SegmentName::Wire && self.clock.source == ClockSource::PerNode {
            let n = buckets.iter().fold(0u64, |a, &n| a.saturating_add(n));
            self.skipped_unsynchronized = self.skipped_unsynchronized.saturating_add(n);
            return;
        }
        if buckets.iter().all(|&n| n == 0) {
            return;
        }
        for (i, &n) in buckets.iter().enumerate() {
            self.total.record_n(segment, bucket_lower_bound(i), n);
        }
        if let Some(set) = flow.and_then(|k| self.flow_set(k)) {
            for (i, &n) in buckets.iter().enumerate() {
                set.record_n(segment, bucket_lower_bound(i), n);
            }
        }
    }

    /// The summary of one segment, in one flow or (with `None`) in total.
    pub fn summary(&self, flow: Option<&FlowKey>, segment: SegmentName) -> Option<Summary> {
        self.set(flow)?.summary(segment)
    }

    /// The values recorded for one segment, in one flow or (with `None`) in total, as
    /// `(value_ns, count)` in ascending order at the histogram's resolution (3 significant
    /// digits): what a chart of the distribution draws.
    pub fn distribution(&self, flow: Option<&FlowKey>, segment: SegmentName) -> Vec<(u64, u64)> {
        let Some(h) = self
            .set(flow)
            .and_then(|s| s.hists[segment.index()].as_ref())
        else {
            return Vec::new();
        };
        h.hist
            .iter_recorded()
            .map(|v| {
                (
                    v.value_iterated_to().clamp(h.min, h.max),
                    v.count_at_value(),
                )
            })
            .collect()
    }

    /// Traces that gave at least one segment, in one flow or (with `None`) in total.
    pub fn traces_measured(&self, flow: Option<&FlowKey>) -> u64 {
        self.set(flow).map_or(0, |s| s.traces)
    }

    fn set(&self, flow: Option<&FlowKey>) -> Option<&SegmentSet> {
        match flow {
            None => Some(&self.total),
            Some(k) => self.flows.get(k),
        }
    }

    /// Flows with their own histograms, in order.
    pub fn flows(&self) -> Vec<FlowKey> {
        let mut keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        keys.sort_unstable();
        keys
    }

    /// Traces recorded (and merged in), with or without segments.
    pub fn traces(&self) -> u64 {
        self.traces
    }

    /// Cross-node segments left out because the two clocks are not on one timeline.
    pub fn skipped_unsynchronized(&self) -> u64 {
        self.skipped_unsynchronized
    }

    /// Segments left out because their (cross-node) delta was negative.
    pub fn skipped_negative(&self) -> u64 {
        self.skipped_negative
    }

    /// Traces whose flow had no histograms of its own (over the flow cap): in the total only.
    pub fn traces_beyond_flow_limit(&self) -> u64 {
        self.traces_beyond_flow_limit
    }

    /// The flow's histograms, created on first sight while under the cap.
    fn flow_set(&mut self, key: FlowKey) -> Option<&mut SegmentSet> {
        let len = self.flows.len();
        match self.flows.entry(key) {
            Entry::Occupied(e) => Some(e.into_mut()),
            Entry::Vacant(e) if len < self.max_flows => Some(e.insert(SegmentSet::default())),
            Entry::Vacant(_) => None,
        }
    }
}

/// `2^i`, saturating for buckets past the `u64` range.
fn bucket_lower_bound(i: usize) -> u64 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u64.checked_shl(i))
        .unwrap_or(u64::MAX)
}
