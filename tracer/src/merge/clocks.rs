//! Each recording's clock on the reference timeline (the first recording's CLOCK_MONOTONIC):
//! pairwise offset fits chained through the recordings that exchanged packets.
//!
//! For every recording the merge picks the best way to the reference: recordings of one boot
//! of one kernel share the clock exactly (offset 0); otherwise the chain of two-sided fits
//! (see `offset`) whose summed bound, taken at the middle of each pair's traffic, is the
//! smallest (Dijkstra); else a one-sided fit (the offset is then known only on one side);
//! else the wall clocks' difference (as good as the machines' NTP, no bound); else nothing.
//! Along a chain the bounds add up. The bound of a fit is convex in time, and so is a sum of
//! them, so its value between two samples is at most the larger of the two: the tables handed
//! to the clock model keep that property.

use std::collections::{BTreeMap, BinaryHeap};

use super::offset::{fit, Bound, Constraints, Fit};
use crate::machine::Machine;

/// How a recording's offset to the reference is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The reference itself.
    Reference,
    /// Recorded on the kernel (and boot) of a recording already placed: the same clock.
    SameClock,
    /// Estimated from packets in both directions: with a bound.
    Estimated,
    /// Only packets in one direction: the offset is a bound, not an estimate.
    OneSided,
    /// No packet crossed: the wall clocks' difference, no bound.
    WallClock,
    /// Nothing relates this clock to the others.
    Unknown,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Reference => "reference",
            Basis::SameClock => "same-clock",
            Basis::Estimated => "estimated",
            Basis::OneSided => "one-sided",
            Basis::WallClock => "wall-clock",
            Basis::Unknown => "unknown",
        }
    }

    /// Whether segments to other machines get a bound.
    pub fn bounded(self) -> bool {
        matches!(self, Basis::Reference | Basis::SameClock | Basis::Estimated)
    }
}

/// One step of a chain: from recording `from` to `to` through the fit of their pair.
#[derive(Clone, Debug)]
enum Step {
    /// The same clock: offset 0, exactly.
    Same,
    /// `θ = clock_to − clock_from`, from the pair's fit; `forward` when the fit's pair is
    /// `(from, to)` (else `(to, from)`, and the fit is negated).
    Fit { fit: Fit, forward: bool },
}

/// A recording's clock on the reference timeline.
#[derive(Clone, Debug)]
pub struct RecordingClock {
    pub basis: Basis,
    steps: Vec<Step>,
    /// `clock_this − clock_reference` from the wall clocks, when both have clock samples.
    wall_theta: Option<f64>,
}

impl RecordingClock {
    /// A clock left as recorded: the reference itself (one recording).
    pub fn as_recorded() -> RecordingClock {
        RecordingClock {
            basis: Basis::Reference,
            steps: Vec::new(),
            wall_theta: Some(0.0),
        }
    }

    /// `n` samples `(reference time, θ, bound)` between this clock's times `from` and `to`
    /// (empty without a bound). The bound is convex in time (a sum of maxima of linear
    /// functions), so between two samples it is at most the larger of the two.
    pub fn table(&self, from: u64, to: u64, n: u64) -> Vec<(u64, i64, u64)> {
        let (a, b) = (self.to_reference(from), self.to_reference(to.max(from)));
        let n = n.max(1);
        (0..=n)
            .filter_map(|k| {
                let t = a + (b - a) / n * k;
                let (theta, err) = self.theta(t);
                Some((t, theta.round() as i64, err?.ceil() as u64))
            })
            .collect()
    }

    /// `clock_this − clock_reference` at reference time `t_ref`, and its bound (when there is
    /// one).
    pub fn theta(&self, t_ref: u64) -> (f64, Option<f64>) {
        match self.basis {
            Basis::Reference | Basis::SameClock if self.steps.is_empty() => (0.0, Some(0.0)),
            Basis::WallClock => (self.wall_theta.unwrap_or(0.0), None),
            Basis::Unknown => (0.0, None),
            _ => {
                let (mut theta, mut err, mut bounded) = (0.0, 0.0, true);
                for step in &self.steps {
                    let Step::Fit { fit, forward } = step else {
                        continue;
                    };
                    // The fit's time is on its pair's first clock.
                    let t_here = (t_ref as f64 + theta).max(0.0) as u64;
                    let Some(e) = (if *forward {
                        fit.at(t_here)
                    } else {
                        // On the other clock: one fixed-point step is far below a nanosecond.
                        fit.at(t_here)
                            .and_then(|g| fit.at((t_here as f64 - g.offset_ns).max(0.0) as u64))
                    }) else {
                        return (theta, None);
                    };
                    theta += if *forward { e.offset_ns } else { -e.offset_ns };
                    match e.bound {
                        Bound::Within { err_ns } => err += err_ns,
                        Bound::OneSided { .. } => bounded = false,
                    }
                }
                (theta, bounded.then_some(err))
            }
        }
    }

    /// A timestamp of this recording's clock on the reference timeline.
    pub fn to_reference(&self, ts_ns: u64) -> u64 {
        let (guess, _) = self.theta(ts_ns);
        let t_ref = (ts_ns as f64 - guess).max(0.0) as u64;
        let (theta, _) = self.theta(t_ref);
        (ts_ns as f64 - theta).round().max(0.0) as u64
    }
}

/// What the merge reports about one pair that exchanged packets.
#[derive(Clone, Debug)]
pub struct PairReport {
    pub a: usize,
    pub b: usize,
    /// Constraints from packets a -> b and b -> a (after keeping the tightest per ms).
    pub a_to_b: usize,
    pub b_to_a: usize,
    pub fit: Fit,
}

/// Places every recording's clock; `machines[0]` is the reference.
pub fn place(
    machines: &[Machine],
    wall_minus_mono: &[Option<i128>],
    pairs: BTreeMap<(usize, usize), Constraints>,
) -> (Vec<RecordingClock>, Vec<PairReport>) {
    let n = machines.len();
    let reports: Vec<PairReport> = pairs
        .into_iter()
        .map(|((a, b), c)| PairReport {
            a,
            b,
            a_to_b: c.upper.len(),
            b_to_a: c.lower.len(),
            fit: fit(&c),
        })
        .collect();
    let wall_theta = |k: usize| -> Option<f64> {
        // θ_k = mono_k − mono_ref at one instant = (wall − mono)_ref − (wall − mono)_k.
        Some((wall_minus_mono[0]? - wall_minus_mono[k]?) as f64)
    };
    // Edges: (from, to, weight, step). Weight: the bound at the middle of the pair's traffic.
    let mut edges: Vec<Vec<(usize, f64, Step)>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && machines[i].same_clock(&machines[j]) {
                edges[i].push((j, 0.0, Step::Same));
            }
        }
    }
    let mut one_sided: Vec<Vec<(usize, Step)>> = vec![Vec::new(); n];
    for r in &reports {
        let mid = match &r.fit {
            Fit::TwoSided { t0_ns, .. } | Fit::OneSided { t0_ns, .. } => *t0_ns,
            Fit::Unknown { .. } => continue,
        };
        let step = |forward| Step::Fit {
            fit: r.fit.clone(),
            forward,
        };
        match r.fit.at(mid).map(|e| e.bound) {
            Some(Bound::Within { err_ns }) => {
                edges[r.a].push((r.b, err_ns, step(true)));
                edges[r.b].push((r.a, err_ns, step(false)));
            }
            Some(Bound::OneSided { .. }) => {
                one_sided[r.a].push((r.b, step(true)));
                one_sided[r.b].push((r.a, step(false)));
            }
            None => {}
        }
    }
    // Dijkstra from the reference over exact and two-sided edges.
    let mut best: Vec<Option<(f64, Vec<Step>)>> = vec![None; n];
    best[0] = Some((0.0, Vec::new()));
    let mut heap = BinaryHeap::new();
    heap.push(Ord64(0.0, 0));
    while let Some(Ord64(d, u)) = heap.pop() {
        let Some((du, path)) = best[u].clone() else {
            continue;
        };
        if d > du {
            continue;
        }
        for (v, w, step) in &edges[u] {
            let dv = du + w;
            if best[*v].as_ref().is_none_or(|(old, _)| dv < *old) {
                let mut p = path.clone();
                p.push(step.clone());
                best[*v] = Some((dv, p));
                heap.push(Ord64(dv, *v));
            }
        }
    }
    let clocks = (0..n)
        .map(|k| {
            if k == 0 {
                return RecordingClock {
                    basis: Basis::Reference,
                    steps: Vec::new(),
                    wall_theta: Some(0.0),
                };
            }
            if let Some((_, steps)) = &best[k] {
                let basis = if steps.iter().all(|s| matches!(s, Step::Same)) {
                    Basis::SameClock
                } else {
                    Basis::Estimated
                };
                let steps = steps
                    .iter()
                    .filter(|s| !matches!(s, Step::Same))
                    .cloned()
                    .collect();
                return RecordingClock {
                    basis,
                    steps,
                    wall_theta: wall_theta(k),
                };
            }
            // One step of a one-sided fit from a recording already placed exactly or by
            // estimate (no longer chains of guesses).
            let via = one_sided[k].iter().find_map(|(from, step)| {
                let (_, path) = best[*from].as_ref()?;
                let back = match step {
                    Step::Fit { fit, forward } => Step::Fit {
                        fit: fit.clone(),
                        forward: !forward,
                    },
                    Step::Same => Step::Same,
                };
                let mut p: Vec<Step> = path
                    .iter()
                    .filter(|s| !matches!(s, Step::Same))
                    .cloned()
                    .collect();
                p.push(back);
                Some(p)
            });
            match (via, wall_theta(k)) {
                (Some(steps), w) => RecordingClock {
                    basis: Basis::OneSided,
                    steps,
                    wall_theta: w,
                },
                (None, Some(w)) => RecordingClock {
                    basis: Basis::WallClock,
                    steps: Vec::new(),
                    wall_theta: Some(w),
                },
                (None, None) => RecordingClock {
                    basis: Basis::Unknown,
                    steps: Vec::new(),
                    wall_theta: None,
                },
            }
        })
        .collect();
    (clocks, reports)
}

/// A heap entry ordered by the smallest distance first.
struct Ord64(f64, usize);

impl PartialEq for Ord64 {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Ord64 {}

impl PartialOrd for Ord64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ord64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0)
    }
}
