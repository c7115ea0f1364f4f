//! Clock offset between two machines, estimated from the packets they exchanged, with a
//! bound that holds as long as the model's assumptions do.
//!
//! Model: `θ(t) = clock_B(t) − clock_A(t)` is linear in time over a recording, `θ(t) = a + r·τ`
//! with `τ = (t − t0)` in seconds and a drift `|r| ≤ MAX_DRIFT` (crystal oscillators stay within
//! ±100 ppm; NTP-disciplined clocks within a few ppm). A packet that leaves A at `a_tx` (A's
//! clock) and arrives at B at `b_rx` (B's clock) took a delay `d ≥ 0`, so `θ(a_tx) ≤ b_rx − a_tx`:
//! an **upper** constraint. A packet from B to A gives `θ(a_rx) ≥ b_tx − a_rx`: a **lower**
//! constraint (Paxson 1998; Moon, Skelly and Towsley 1999).
//!
//! The lines `(a, r)` that satisfy every constraint form a convex polygon `P` in the plane of
//! the parameters. Only the lower convex hull of the upper points and the upper convex hull of
//! the lower points can bind, so the constraints are reduced to those hulls first; `P`'s
//! vertices are then the feasible pairwise intersections of the hull constraints and the drift
//! limits. The estimate is the mean of the vertices (a point of `P`), and at any time `τ` the
//! true offset lies between the smallest and the largest `a + r·τ` over the vertices: the
//! bound reported is the larger distance from the estimate to those extremes. With traffic in
//! one direction only, `P` is unbounded on one side: the result is one-sided.
//!
//! A pair matched wrongly (an identity reused within the matching window) can make the
//! constraints contradict each other. Then the most isolated extreme constraint is dropped and
//! the fit tried again, at most [`MAX_OUTLIERS`] times; the number dropped is reported.

/// Largest clock drift assumed, in ns per second (500 ppm).
pub const MAX_DRIFT: f64 = 500_000.0;
/// Most constraints dropped as outliers before giving up.
pub const MAX_OUTLIERS: usize = 64;
/// Slack for floating-point comparisons, ns.
const EPS: f64 = 0.5;

/// One bound on `θ` at time `t_ns` (the first machine's clock).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Constraint {
    pub t_ns: u64,
    pub value_ns: i64,
}

/// What the packets between two machines say about their clocks.
#[derive(Clone, Debug, Default)]
pub struct Constraints {
    /// `θ(t) ≤ value`: packets from the first machine to the second.
    pub upper: Vec<Constraint>,
    /// `θ(t) ≥ value`: packets from the second machine to the first.
    pub lower: Vec<Constraint>,
}

/// The fitted offset of one machine pair.
#[derive(Clone, Debug, PartialEq)]
pub enum Fit {
    /// Both directions seen: a line inside the feasible polygon and the polygon's vertices.
    TwoSided {
        t0_ns: u64,
        /// Estimate: `θ(t) = a + r·τ`, τ in seconds from `t0_ns`.
        a: f64,
        r: f64,
        vertices: Vec<(f64, f64)>,
        outliers: usize,
    },
    /// Only the first machine sent (`θ ≤ …`), or only the second (`θ ≥ …`): the tightest bound,
    /// which is the estimate if the fastest packet took no time at all.
    OneSided {
        t0_ns: u64,
        a: f64,
        r: f64,
        /// True when the bound is an upper one (`θ ≤ estimate`).
        upper: bool,
    },
    /// Nothing to go on, or constraints that contradict each other beyond repair.
    Unknown { why: String },
}

/// An estimate at one time: `θ` in ns and how far the truth can be from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub offset_ns: f64,
    pub bound: Bound,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bound {
    /// `|θ − offset_ns| ≤ err_ns`.
    Within { err_ns: f64 },
    /// The truth is at most (`upper`) or at least the estimate; how far is unknown.
    OneSided { upper: bool },
}

impl Fit {
    /// The estimate at `t_ns` (the first machine's clock); `None` when unknown.
    pub fn at(&self, t_ns: u64) -> Option<Estimate> {
        match self {
            Fit::TwoSided {
                t0_ns,
                a,
                r,
                vertices,
                ..
            } => {
                let tau = seconds(t_ns, *t0_ns);
                let est = a + r * tau;
                let err = vertices
                    .iter()
                    .map(|(va, vr)| (va + vr * tau - est).abs())
                    .fold(0.0, f64::max);
                Some(Estimate {
                    offset_ns: est,
                    bound: Bound::Within { err_ns: err },
                })
            }
            Fit::OneSided { t0_ns, a, r, upper } => Some(Estimate {
                offset_ns: a + r * seconds(t_ns, *t0_ns),
                bound: Bound::OneSided { upper: *upper },
            }),
            Fit::Unknown { .. } => None,
        }
    }
}

fn seconds(t_ns: u64, t0_ns: u64) -> f64 {
    (t_ns as f64 - t0_ns as f64) / 1e9
}

/// A point `(τ, value)` of a constraint.
type Point = (f64, f64);

/// Fits the offset of one pair.
pub fn fit(c: &Constraints) -> Fit {
    let all = c.upper.iter().chain(&c.lower);
    let (Some(min), Some(max)) = (all.clone().map(|c| c.t_ns).min(), all.map(|c| c.t_ns).max())
    else {
        return Fit::Unknown {
            why: "no packet crossed between the two machines".into(),
        };
    };
    let t0_ns = min + (max - min) / 2;
    let points = |v: &[Constraint]| -> Vec<Point> {
        let mut p: Vec<Point> = v
            .iter()
            .map(|c| (seconds(c.t_ns, t0_ns), c.value_ns as f64))
            .collect();
        p.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
        p
    };
    let (mut up, mut lo) = (points(&c.upper), points(&c.lower));
    if up.is_empty() || lo.is_empty() {
        let is_upper = lo.is_empty();
        let hull = if is_upper {
            lower_hull(&up)
        } else {
            upper_hull(&lo)
        };
        let (a, r) = one_sided(&hull, is_upper);
        return Fit::OneSided {
            t0_ns,
            a,
            r,
            upper: is_upper,
        };
    }
    let mut outliers = 0;
    loop {
        let vertices = polygon(&lower_hull(&up), &upper_hull(&lo));
        if !vertices.is_empty() {
            let n = vertices.len() as f64;
            let a = vertices.iter().map(|v| v.0).sum::<f64>() / n;
            let r = vertices.iter().map(|v| v.1).sum::<f64>() / n;
            return Fit::TwoSided {
                t0_ns,
                a,
                r,
                vertices,
                outliers,
            };
        }
        if outliers == MAX_OUTLIERS || up.len() + lo.len() <= 2 {
            return Fit::Unknown {
                why: format!(
                    "the packets in both directions contradict each other even after dropping \
                     {outliers} outliers (a clock step, or identities matched wrongly)"
                ),
            };
        }
        drop_outlier(&mut up, &mut lo);
        outliers += 1;
    }
}

/// The line through the tightest bound of a one-sided constraint set: the hull edge that spans
/// the middle of the recording (slope kept within the drift limit), else the tightest point.
fn one_sided(hull: &[Point], upper: bool) -> (f64, f64) {
    for w in hull.windows(2) {
        let ((t1, v1), (t2, v2)) = (w[0], w[1]);
        if t1 <= 0.0 && 0.0 <= t2 && t2 > t1 {
            let r = ((v2 - v1) / (t2 - t1)).clamp(-MAX_DRIFT, MAX_DRIFT);
            return (v1 - r * t1, r);
        }
    }
    let tightest = hull.iter().map(|p| p.1).reduce(|x, y| {
        if (upper && y < x) || (!upper && y > x) {
            y
        } else {
            x
        }
    });
    (tightest.unwrap_or(0.0), 0.0)
}

/// Drops the more isolated of the two extreme constraints at zero drift (the smallest upper
/// value, the largest lower value): a lone wrong match stands apart from the next one.
fn drop_outlier(up: &mut Vec<Point>, lo: &mut Vec<Point>) {
    // (index of the extreme, its distance to the nearest other value on its side).
    let extreme = |pts: &[Point], smallest: bool| -> Option<(usize, f64)> {
        let (i, e) = pts.iter().enumerate().reduce(|(i, p), (j, q)| {
            if (smallest && q.1 < p.1) || (!smallest && q.1 > p.1) {
                (j, q)
            } else {
                (i, p)
            }
        })?;
        let gap = pts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| (p.1 - e.1).abs())
            .fold(f64::INFINITY, f64::min);
        Some((i, if gap.is_finite() { gap } else { 0.0 }))
    };
    match (extreme(up, true), extreme(lo, false)) {
        (Some((i, gu)), Some((_, gl))) if gu >= gl && up.len() > 1 => {
            up.remove(i);
        }
        (_, Some((j, _))) if lo.len() > 1 => {
            lo.remove(j);
        }
        (Some((i, _)), _) if up.len() > 1 => {
            up.remove(i);
        }
        _ => {}
    }
}

/// Lower convex hull of points sorted by `τ` (Andrew's monotone chain): for each `τ` the
/// smallest value.
fn lower_hull(pts: &[Point]) -> Vec<Point> {
    let mut hull: Vec<Point> = Vec::new();
    for &p in pts {
        if hull.last().is_some_and(|q: &Point| q.0 == p.0) {
            // Sorted by value within one τ: the first is the smallest.
            continue;
        }
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull
}

/// Upper convex hull of points sorted by `τ`: for each `τ` the largest value.
fn upper_hull(pts: &[Point]) -> Vec<Point> {
    let mut flipped: Vec<Point> = pts.iter().map(|&(t, v)| (t, -v)).collect();
    // Within one τ the largest value must come first once negated.
    flipped.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    lower_hull(&flipped)
        .into_iter()
        .map(|(t, v)| (t, -v))
        .collect()
}

fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// The vertices `(a, r)` of the feasible polygon: `a + r·τ ≤ v` for every upper point,
/// `≥ v` for every lower point, `|r| ≤ MAX_DRIFT`. Empty when infeasible.
fn polygon(upper: &[Point], lower: &[Point]) -> Vec<(f64, f64)> {
    // Each constraint is a line a = v − r·τ in the (a, r) plane; the drift limits are r = ±R.
    #[derive(Clone, Copy)]
    enum Line {
        /// a + r·τ = v.
        Offset(f64, f64),
        /// r = value.
        Drift(f64),
    }
    let lines: Vec<Line> = upper
        .iter()
        .chain(lower)
        .map(|&(t, v)| Line::Offset(t, v))
        .chain([Line::Drift(MAX_DRIFT), Line::Drift(-MAX_DRIFT)])
        .collect();
    let feasible = |a: f64, r: f64| {
        r.abs() <= MAX_DRIFT * (1.0 + 1e-12)
            && upper.iter().all(|&(t, v)| a + r * t <= v + EPS)
            && lower.iter().all(|&(t, v)| a + r * t >= v - EPS)
    };
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, l1) in lines.iter().enumerate() {
        for l2 in &lines[i + 1..] {
            let p = match (*l1, *l2) {
                (Line::Offset(t1, v1), Line::Offset(t2, v2)) => {
                    if (t1 - t2).abs() < 1e-12 {
                        continue;
                    }
                    let r = (v1 - v2) / (t1 - t2);
                    (v1 - r * t1, r)
                }
                (Line::Offset(t, v), Line::Drift(r)) | (Line::Drift(r), Line::Offset(t, v)) => {
                    (v - r * t, r)
                }
                (Line::Drift(_), Line::Drift(_)) => continue,
            };
            if feasible(p.0, p.1)
                && !out
                    .iter()
                    .any(|q| (q.0 - p.0).abs() < 1e-6 && (q.1 - p.1).abs() < 1e-9)
            {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
