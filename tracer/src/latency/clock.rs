//! The clock model: which hop timestamps can be subtracted from which.

use std::collections::HashMap;

use crate::model::TraceHop;

/// Where the hop timestamps come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClockSource {
    /// All traced nodes share one kernel, hence one `CLOCK_MONOTONIC`: every offset is 0. The
    /// lab, several netns of one host, and any live run of one tracer process.
    SharedKernel,
    /// Each node has its own clock (a real cluster, hops merged from several hosts): a
    /// cross-node delta means something only once both nodes' offsets are known.
    PerNode,
}

impl ClockSource {
    /// `shared-kernel` or `per-node`, as in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::SharedKernel => "shared-kernel",
            ClockSource::PerNode => "per-node",
        }
    }
}

/// How to put the timestamps of different nodes (netns) on one timeline.
///
/// A node's **offset** is what to add to its timestamps to express them on the reference
/// timeline: `reference = ts + offset`. If node B's clock reads 5 µs ahead of the reference,
/// its offset is -5000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockModel {
    /// Offset per netns inode; only consulted for [`ClockSource::PerNode`].
    offsets: HashMap<u32, i64>,
    pub source: ClockSource,
}

impl ClockModel {
    pub fn new(source: ClockSource) -> Self {
        ClockModel {
            offsets: HashMap::new(),
            source,
        }
    }

    /// One kernel, one clock: every cross-node delta is meaningful.
    pub fn shared_kernel() -> Self {
        ClockModel::new(ClockSource::SharedKernel)
    }

    /// One clock per node, no offset known yet: cross-node deltas are skipped.
    pub fn per_node() -> Self {
        ClockModel::new(ClockSource::PerNode)
    }

    /// Sets the offset of the node with network namespace `netns` (see the type's notes). For
    /// [`ClockSource::SharedKernel`] it is stored but not used: one clock has no offsets.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "the cross-node merge (issue 12) sets clock offsets"
        )
    )]
    pub fn set_offset(&mut self, netns: u32, offset_ns: i64) {
        self.offsets.insert(netns, offset_ns);
    }

    /// The offset of a node, when known (always 0 with a shared kernel).
    pub fn offset(&self, netns: u32) -> Option<i64> {
        match self.source {
            ClockSource::SharedKernel => Some(0),
            ClockSource::PerNode => self.offsets.get(&netns).copied(),
        }
    }

    /// The offsets set so far, by netns, in no particular order.
    pub fn offsets(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.offsets.iter().map(|(&n, &o)| (n, o))
    }

    /// Whether timestamps of the two nodes can be subtracted.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the cross-node merge (issue 12) asks it")
    )]
    pub fn synchronized(&self, a: u32, b: u32) -> bool {
        a == b || (self.offset(a).is_some() && self.offset(b).is_some())
    }

    /// `to - from` on the reference timeline, or `None` when the clocks are not synchronized.
    /// Saturates at the `i64` range instead of wrapping.
    pub fn delta(&self, from: &TraceHop, to: &TraceHop) -> Option<i64> {
        let (a, b) = if from.netns == to.netns {
            (0, 0)
        } else {
            (self.offset(from.netns)?, self.offset(to.netns)?)
        };
        Some(saturate(
            (i128::from(to.ts_ns) + i128::from(b)) - (i128::from(from.ts_ns) + i128::from(a)),
        ))
    }

    /// A hop's time on the reference timeline, when its node's offset is known.
    pub(super) fn corrected(&self, hop: &TraceHop) -> Option<i128> {
        Some(i128::from(hop.ts_ns) + i128::from(self.offset(hop.netns)?))
    }
}

pub(super) fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}
