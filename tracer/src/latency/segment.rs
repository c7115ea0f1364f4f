//! Cutting one trace into segments (see the module notes: roles, not order).

use super::clock::{saturate, ClockModel, SegmentClock};
use super::{Segment, SegmentName};
use crate::model::Direction::{self, Egress, Ingress};
use crate::model::{Outcome, Trace, TraceHop};
use crate::topology::IfaceKind;

const POD: &[IfaceKind] = &[IfaceKind::PodVeth];
const TUNNEL: &[IfaceKind] = &[IfaceKind::Vxlan, IfaceKind::Ipip];
const UPLINK: &[IfaceKind] = &[IfaceKind::Uplink];

/// What measuring one segment of one trace gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Measured {
    Segment(Segment),
    /// Both endpoints are there, but on nodes whose clocks are not on one timeline.
    Unsynchronized(SegmentName),
}

/// The segments of a trace, in path order, taking all hops as stamped by one clock (offset 0):
/// a cross-node `ns` is the raw difference of two nodes' clocks, which may be negative. See
/// [`segments_with_clock`] for traces from nodes with their own clocks.
#[cfg(test)]
pub fn segments(trace: &Trace) -> Vec<Segment> {
    segments_with_clock(trace, &ClockModel::shared_kernel())
}

/// The segments of a trace, in path order, under a clock model: cross-node segments are
/// clock-corrected, and left out when the two clocks are not synchronized.
pub fn segments_with_clock(trace: &Trace, clock: &ClockModel) -> Vec<Segment> {
    Measurements::of(trace, clock).segments().copied().collect()
}

/// What measuring one trace under one clock model gave, in path order (at most one entry per
/// segment name), without allocating: measured once per trace and shared by the statistics
/// ([`LatencyStats::record_measured`](super::LatencyStats::record_measured)) and the JSON line.
#[derive(Clone, Copy, Debug)]
pub struct Measurements {
    items: [Option<Measured>; SegmentName::COUNT],
}

impl Measurements {
    pub fn of(trace: &Trace, clock: &ClockModel) -> Self {
        let mut m = Measurements {
            items: [None; SegmentName::COUNT],
        };
        let mut n = 0;
        measure(trace, clock, |x| {
            // `measure` gives each segment name at most once.
            if let Some(slot) = m.items.get_mut(n) {
                *slot = Some(x);
                n += 1;
            }
        });
        m
    }

    /// Everything measured, in path order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Measured> + '_ {
        self.items.iter().map_while(|m| *m)
    }

    /// The segments (those whose clocks are on one timeline), in path order.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> + '_ {
        self.items
            .iter()
            .map_while(Option::as_ref)
            .filter_map(|m| match m {
                Measured::Segment(s) => Some(s),
                Measured::Unsynchronized(_) => None,
            })
    }
}

/// Calls `f` for each segment of the trace, in path order, without allocating.
pub(super) fn measure(trace: &Trace, clock: &ClockModel, mut f: impl FnMut(Measured)) {
    let hops = trace.hops.as_slice();
    let up_out = |_: &TraceHop, b: &TraceHop| is(b, UPLINK, Egress);
    let node_tx = local_pair(hops, |a| is(a, POD, Ingress), up_out);
    local(hops, SegmentName::NodeTx, node_tx, &mut f);
    let encap = local_pair(hops, |a| is(a, TUNNEL, Egress), up_out);
    local(hops, SegmentName::Encap, encap, &mut f);
    if let Some((from, to)) = wire(hops) {
        let (a, b) = (&hops[from], &hops[to]);
        f(match (clock.delta(a, b), clock.relation(a, b)) {
            (Some(ns), Some(clock)) => Measured::Segment(Segment {
                name: SegmentName::Wire,
                ns,
                from,
                to,
                cross_node: true,
                clock,
            }),
            _ => Measured::Unsynchronized(SegmentName::Wire),
        });
    }
    let up_in = |a: &TraceHop| is(a, UPLINK, Ingress);
    let decap = local_pair(hops, up_in, |_, b| is(b, TUNNEL, Ingress));
    local(hops, SegmentName::Decap, decap, &mut f);
    let node_rx = local_pair(hops, up_in, |_, b| is(b, POD, Egress));
    local(hops, SegmentName::NodeRx, node_rx, &mut f);
    let same_node = local_pair(
        hops,
        |a| is(a, POD, Ingress),
        |a, b| {
            is(b, POD, Egress)
                && !hops.iter().any(|u| {
                    u.netns == a.netns
                        && u.kind == Some(IfaceKind::Uplink)
                        && (a.ts_ns..=b.ts_ns).contains(&u.ts_ns)
                })
        },
    );
    local(hops, SegmentName::SameNode, same_node, &mut f);
    if trace.outcome == Outcome::Delivered && hops.len() >= 2 {
        if let Some(m) = total(hops, clock) {
            f(m);
        }
    }
}

fn is(h: &TraceHop, kinds: &[IfaceKind], dir: Direction) -> bool {
    h.dir == dir && h.kind.is_some_and(|k| kinds.contains(&k))
}

fn local(
    hops: &[TraceHop],
    name: SegmentName,
    pair: Option<(usize, usize)>,
    f: &mut impl FnMut(Measured),
) {
    if let Some((from, to)) = pair {
        f(Measured::Segment(Segment {
            name,
            ns: saturate(i128::from(hops[to].ts_ns) - i128::from(hops[from].ts_ns)),
            from,
            to,
            cross_node: false,
            clock: SegmentClock::Exact,
        }));
    }
}

/// The same-node pair with the earliest start: a hop for which `start` holds, and the earliest
/// hop on its node, at or after it in time, for which `end(start_hop, hop)` holds (ties broken
/// by index). Never a pair that runs backwards in time.
fn local_pair(
    hops: &[TraceHop],
    start: impl Fn(&TraceHop) -> bool,
    end: impl Fn(&TraceHop, &TraceHop) -> bool,
) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, a) in hops.iter().enumerate() {
        if !start(a) || best.is_some_and(|(b, _)| (hops[b].ts_ns, b) <= (a.ts_ns, i)) {
            continue;
        }
        let found = hops
            .iter()
            .enumerate()
            .filter(|&(j, b)| j != i && b.netns == a.netns && b.ts_ns >= a.ts_ns && end(a, b))
            .min_by_key(|&(j, b)| (b.ts_ns, j));
        if let Some((j, _)) = found {
            best = Some((i, j));
        }
    }
    best
}

/// The first uplink egress (by index) that has an uplink ingress on another node, and the first
/// such ingress. Times are not compared: they come from two clocks.
fn wire(hops: &[TraceHop]) -> Option<(usize, usize)> {
    hops.iter()
        .enumerate()
        .filter(|(_, a)| is(a, UPLINK, Egress))
        .find_map(|(i, a)| {
            hops.iter()
                .position(|b| b.netns != a.netns && is(b, UPLINK, Ingress))
                .map(|j| (i, j))
        })
}

/// Earliest to latest hop (latest index on ties), on the reference timeline when the trace
/// spans nodes.
fn total(hops: &[TraceHop], clock: &ClockModel) -> Option<Measured> {
    let h0 = hops.first()?;
    let spans_nodes = hops.iter().any(|h| h.netns != h0.netns);
    let mut ends: Option<((i128, usize), (i128, usize))> = None;
    for (i, h) in hops.iter().enumerate() {
        let t = if spans_nodes {
            match clock.corrected(h) {
                Some(t) => t,
                None => return Some(Measured::Unsynchronized(SegmentName::Total)),
            }
        } else {
            i128::from(h.ts_ns)
        };
        ends = Some(match ends {
            None => ((t, i), (t, i)),
            Some((first, last)) => (
                if t < first.0 { (t, i) } else { first },
                if t >= last.0 { (t, i) } else { last },
            ),
        });
    }
    let ((t0, from), (t1, to)) = ends?;
    let Some(relation) = clock.relation(&hops[from], &hops[to]) else {
        return Some(Measured::Unsynchronized(SegmentName::Total));
    };
    Some(Measured::Segment(Segment {
        name: SegmentName::Total,
        ns: saturate(t1 - t0),
        from,
        to,
        cross_node: hops[from].netns != hops[to].netns,
        clock: relation,
    }))
}
