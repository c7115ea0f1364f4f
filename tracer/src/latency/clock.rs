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
    /// Recordings of several machines merged: their timestamps were placed on the reference
    /// timeline (the first recording's clock) by an estimate with a bound (see `merge`), so a
    /// segment between two machines is known within the sum of their bounds.
    Estimated,
}

impl ClockSource {
    /// `shared-kernel` or `per-node`, as in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::SharedKernel => "shared-kernel",
            ClockSource::PerNode => "per-node",
            ClockSource::Estimated => "estimated",
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
    /// [`ClockSource::Estimated`]: the machine of each namespace key, and each machine's place
    /// on the reference timeline.
    machine_of: HashMap<u32, usize>,
    machines: Vec<MachineClock>,
}

/// One machine's clock placed on the reference timeline (already applied to its timestamps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineClock {
    /// How the placement is known (`reference`, `same-clock`, `estimated`, `one-sided`,
    /// `wall-clock`, `unknown`).
    pub basis: &'static str,
    /// Samples `(reference ns, offset θ = clock − reference, bound)`, sorted by time; empty
    /// when the placement has no bound. The bound between two samples is at most the larger
    /// of the two (it is convex in time).
    pub table: Vec<(u64, i64, u64)>,
}

impl MachineClock {
    /// `(θ, bound)` at reference time `t`; `None` without a bound.
    pub fn at(&self, t: u64) -> Option<(i64, u64)> {
        let i = self.table.partition_point(|s| s.0 <= t);
        let (lo, hi) = match (i.checked_sub(1), self.table.get(i)) {
            (Some(l), Some(h)) => (self.table[l], *h),
            (Some(l), None) => (self.table[l], self.table[l]),
            (None, Some(h)) => (*h, *h),
            (None, None) => return None,
        };
        let theta = if hi.0 > lo.0 {
            let f = (t.saturating_sub(lo.0)) as f64 / (hi.0 - lo.0) as f64;
            lo.1 as f64 + f * (hi.1 - lo.1) as f64
        } else {
            lo.1 as f64
        };
        Some((theta.round() as i64, lo.2.max(hi.2)))
    }
}

/// How the two clocks of a segment relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SegmentClock {
    /// One clock (one machine): the value is exact.
    #[default]
    Exact,
    /// Two machines whose clocks were placed on one timeline: `offset_ns` (end's clock minus
    /// start's) was taken out, and the value is within `±err_ns` of the truth.
    Estimated { offset_ns: i64, err_ns: u64 },
}

impl ClockModel {
    pub fn new(source: ClockSource) -> Self {
        ClockModel {
            offsets: HashMap::new(),
            source,
            machine_of: HashMap::new(),
            machines: Vec::new(),
        }
    }

    /// Merged recordings: the machine of each namespace key and each machine's clock.
    pub fn estimated(machine_of: HashMap<u32, usize>, machines: Vec<MachineClock>) -> Self {
        ClockModel {
            machine_of,
            machines,
            ..ClockModel::new(ClockSource::Estimated)
        }
    }

    /// The machine clock of a namespace key (estimated models only).
    fn machine(&self, netns: u32) -> Option<(usize, &MachineClock)> {
        let m = *self.machine_of.get(&netns)?;
        Some((m, self.machines.get(m)?))
    }

    /// How the clocks of two hops relate: exact on one machine (or one kernel), estimated
    /// between machines. `None` when the two are not on one timeline.
    pub fn relation(&self, from: &TraceHop, to: &TraceHop) -> Option<SegmentClock> {
        if from.netns == to.netns {
            return Some(SegmentClock::Exact);
        }
        match self.source {
            ClockSource::SharedKernel => Some(SegmentClock::Exact),
            ClockSource::PerNode => self.synchronized_nodes(from.netns, to.netns),
            ClockSource::Estimated => {
                let (ma, a) = self.machine(from.netns)?;
                let (mb, b) = self.machine(to.netns)?;
                if ma == mb {
                    return Some(SegmentClock::Exact);
                }
                let (ta, ea) = a.at(from.ts_ns)?;
                let (tb, eb) = b.at(from.ts_ns)?;
                Some(SegmentClock::Estimated {
                    offset_ns: tb - ta,
                    err_ns: ea + eb,
                })
            }
        }
    }

    fn synchronized_nodes(&self, a: u32, b: u32) -> Option<SegmentClock> {
        (self.offset(a).is_some() && self.offset(b).is_some()).then_some(SegmentClock::Exact)
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
            // Merged timestamps are on the reference timeline already; a machine without a
            // bound is not.
            ClockSource::Estimated => match self.machine(netns) {
                Some((_, m)) if !m.table.is_empty() => Some(0),
                _ => None,
            },
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
