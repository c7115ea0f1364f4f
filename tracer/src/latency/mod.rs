//! Latency: where a packet's time goes, per segment of its path, as percentiles.
//!
//! Pure user space, after correlation (collect -> decode -> correlate -> **latency** ->
//! render). A [`Trace`](crate::model::Trace) is cut into named [`Segment`]s (`node-tx`,
//! `encap`, `wire`, `decap`, `node-rx`, `same-node`, `total`), and [`LatencyStats`] keeps an
//! HDR histogram per segment, per flow and in total, rendered as text tables or one JSON line.
//!
//! Design notes:
//! - **Segments from roles, not from order.** Endpoints are found by interface role
//!   ([`IfaceKind`](crate::topology::IfaceKind)) and direction. Inside one node the hop times
//!   are exact (one clock), so a same-node segment pairs a start hop with the earliest matching
//!   end hop *on the same node at or after it in time*: a pair that would run backwards is
//!   never formed, and the hop vector's order does not matter. Across nodes the trace's sort
//!   order is only as good as the clocks, so `wire` pairs the first uplink egress with the first
//!   uplink ingress on another node whatever their times, and `total` takes the earliest and
//!   latest hop after clock correction. Missing endpoints simply mean no segment. At most one
//!   segment of each name per trace (the earliest start), in path order.
//! - **Signed deltas.** [`Segment::ns`] is an `i64`: a cross-node delta taken with clocks that
//!   differ can be negative and must never wrap. Same-node deltas are never negative by
//!   construction. The statistics cannot hold negative values: a negative delta that reaches
//!   them (bad offset estimate, mis-correlated hops) is skipped and counted
//!   (`skipped_negative`).
//! - **Clocks.** Each node stamps hops with its own `CLOCK_MONOTONIC`. [`ClockModel`] says whether
//!   all traced namespaces share one kernel ([`ClockSource::SharedKernel`]: the lab, or several
//!   netns of one host, offset 0; also any live run, since one tracer process sees one kernel)
//!   or not ([`ClockSource::PerNode`]: hops merged from several hosts), with an explicit
//!   per-netns offset. Cross-node segments (`wire`, and `total` when the trace spans nodes) are
//!   recorded only when both clocks are known on one timeline; otherwise they are counted in
//!   `skipped_unsynchronized`, and the JSON carries `"clock":"per-node"`.
//! - **Hot path.** [`Measurements::of`] finds segments into a fixed array on the stack (a
//!   trace has a handful of hops: the quadratic search is a few dozen comparisons), once per
//!   trace for the statistics and the JSON line; [`LatencyStats::record_measured`] looks the
//!   flow up once, and records into histograms. It allocates only when a flow is first seen,
//!   when a segment is first seen for a flow, and when a histogram grows to a larger range
//!   (auto-resize, a few times in a histogram's life).
//! - **Memory.** A histogram (1 ns .. 60 s, 3 significant digits, auto-resized from small)
//!   takes ~57 KB for values under 65 µs; a cross-node flow has six segments, so ~350 KB. Since
//!   every TCP connection is its own 5-tuple, per-flow histograms are capped
//!   ([`LatencyStats::with_max_flows`], default [`DEFAULT_MAX_FLOWS`]); traces of flows beyond
//!   the cap feed the total only and are counted (`traces_beyond_flow_limit`).
//! - **Exact ends.** The histograms quantize to 3 significant digits; min and max are also kept
//!   exactly, and percentiles are clamped into [min, max] so a summary is always monotone and a
//!   single sample reads back as itself.
//! - **In-kernel aggregation.** [`LatencyStats::record_bucketed`] takes log2 buckets (bucket `i`
//!   counts values in `[2^i, 2^(i+1))` ns) and records each bucket's count at its **lower
//!   bound** `2^i`: every reported percentile is then a lower bound of the true one, within a
//!   factor of two, and the powers of two in the output show the quantization.
//! - Output: wire names and JSON field names are a contract, as in `render`: later versions
//!   add fields, never rename.

mod clock;
mod output;
mod segment;
mod stats;

use serde::Serialize;

pub use clock::{ClockModel, ClockSource, MachineClock, SegmentClock};
pub use output::{write_stats_json, write_stats_text};
#[cfg(test)]
pub use segment::segments;
pub use segment::{segments_with_clock, Measurements};
pub use stats::{LatencyStats, Summary};
#[cfg(test)]
pub use stats::{DEFAULT_MAX_FLOWS, MAX_NS};

/// A named part of a packet's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentName {
    /// Through the sending node: pod veth ingress -> uplink egress (same node).
    NodeTx,
    /// Tunnel device egress (`vxlan.calico`, `tunl0`) -> uplink egress (same node).
    Encap,
    /// Uplink egress -> the peer node's uplink ingress (cross node).
    Wire,
    /// Uplink ingress -> tunnel device ingress (same node).
    Decap,
    /// Through the receiving node: uplink ingress -> pod veth egress (same node).
    NodeRx,
    /// Pod veth ingress -> pod veth egress on one node, no uplink in between.
    SameNode,
    /// First hop -> last hop of a delivered trace.
    Total,
}

impl SegmentName {
    /// Number of segment names.
    pub const COUNT: usize = 7;
    /// Every name, in path order (the order of the output).
    pub const ALL: [SegmentName; SegmentName::COUNT] = [
        SegmentName::NodeTx,
        SegmentName::Encap,
        SegmentName::Wire,
        SegmentName::Decap,
        SegmentName::NodeRx,
        SegmentName::SameNode,
        SegmentName::Total,
    ];

    /// Kebab-case name, identical in text and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SegmentName::NodeTx => "node-tx",
            SegmentName::Encap => "encap",
            SegmentName::Wire => "wire",
            SegmentName::Decap => "decap",
            SegmentName::NodeRx => "node-rx",
            SegmentName::SameNode => "same-node",
            SegmentName::Total => "total",
        }
    }

    /// Position in [`SegmentName::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One measured segment of one trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub name: SegmentName,
    /// `to` minus `from` in ns, clock-corrected for a cross-node segment; negative only for a
    /// cross-node segment whose clocks disagree.
    pub ns: i64,
    /// Index of the start hop in `trace.hops`.
    pub from: usize,
    /// Index of the end hop in `trace.hops`.
    pub to: usize,
    /// Whether the two hops are on different nodes (different netns).
    pub cross_node: bool,
    /// How the two hops' clocks relate: exact on one machine, else estimated with a bound.
    pub clock: SegmentClock,
}

#[cfg(test)]
mod tests;
