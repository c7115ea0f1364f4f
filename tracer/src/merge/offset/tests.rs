//! The estimator against synthetic exchanges with a known offset, drift, delays and jitter:
//! the truth must lie within the reported bound, and the bound must be tight where the data
//! allows.

use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// The clocks of a pair: `θ(t) = offset + drift·(t − start)` (t on A's clock, ns; drift in
/// ns per second).
#[derive(Clone, Copy)]
struct Truth {
    offset_ns: f64,
    drift: f64,
    start_ns: u64,
}

impl Truth {
    fn at(&self, t_ns: u64) -> f64 {
        self.offset_ns + self.drift * ((t_ns - self.start_ns) as f64 / 1e9)
    }
}

/// One packet each way every `every_ns` for `span_ns`, delays drawn from `delay` (ns).
fn exchange(
    truth: Truth,
    span_ns: u64,
    every_ns: u64,
    rng: &mut Rng,
    mut delay: impl FnMut(&mut Rng) -> u64,
    both: bool,
) -> Constraints {
    let mut c = Constraints::default();
    let mut t = truth.start_ns;
    while t < truth.start_ns + span_ns {
        // A -> B: leaves A at t, arrives d later; B stamps its own clock.
        let d = delay(rng);
        let b_rx = (t + d) as f64 + truth.at(t + d);
        c.upper.push(Constraint {
            t_ns: t,
            value_ns: (b_rx - t as f64).round() as i64,
        });
        if both {
            // B -> A: leaves B at A-time t + every/2, arrives d' later.
            let s = t + every_ns / 2;
            let d2 = delay(rng);
            let b_tx = s as f64 + truth.at(s);
            let a_rx = s + d2;
            c.lower.push(Constraint {
                t_ns: a_rx,
                value_ns: (b_tx - a_rx as f64).round() as i64,
            });
        }
        t += every_ns;
    }
    c
}

/// The truth lies within the bound at the start, the middle and the end; returns the largest
/// bound seen.
fn check_within(fit: &Fit, truth: Truth, span_ns: u64) -> f64 {
    let mut worst: f64 = 0.0;
    for t in [
        truth.start_ns,
        truth.start_ns + span_ns / 3,
        truth.start_ns + span_ns / 2,
        truth.start_ns + span_ns - 1,
    ] {
        let e = fit.at(t).expect("an estimate");
        let Bound::Within { err_ns } = e.bound else {
            panic!("two-sided data gave {e:?}");
        };
        let miss = (truth.at(t) - e.offset_ns).abs();
        assert!(
            miss <= err_ns + 1.0,
            "at {t}: truth {} estimate {} bound {err_ns}",
            truth.at(t),
            e.offset_ns
        );
        worst = worst.max(err_ns);
    }
    worst
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

#[test]
fn constant_offset_both_ways_is_bounded_by_the_fastest_round_trip() {
    let mut rng = Rng(7);
    let truth = Truth {
        offset_ns: 3_712_345_678.0,
        drift: 0.0,
        start_ns: 50 * S,
    };
    // 20..200 µs one way, 10 s of traffic, a packet each way every 10 ms.
    let c = exchange(
        truth,
        10 * S,
        10 * MS,
        &mut rng,
        |r| r.range(20_000, 200_000),
        true,
    );
    let f = fit(&c);
    let worst = check_within(&f, truth, 10 * S);
    // The feasible band is at most the fastest delay each way wide (~40 µs here).
    assert!(worst <= 45_000.0, "bound {worst} ns is loose");
    assert!(matches!(f, Fit::TwoSided { outliers: 0, .. }), "{f:?}");
}

#[test]
fn drift_is_followed_over_a_long_recording() {
    for (drift, offset) in [(50_000.0, -12_000_000_000.0), (-80_000.0, 5.0)] {
        let mut rng = Rng(11);
        let truth = Truth {
            offset_ns: offset,
            drift,
            start_ns: 1_000 * S,
        };
        let span = 120 * S;
        let c = exchange(
            truth,
            span,
            50 * MS,
            &mut rng,
            |r| r.range(5_000, 80_000),
            true,
        );
        let f = fit(&c);
        let worst = check_within(&f, truth, span);
        assert!(
            worst <= 20_000.0,
            "drift {drift}: bound {worst} ns is loose"
        );
        // A model without drift would be off by drift·span/2 = milliseconds here.
        let Fit::TwoSided { r, .. } = f else {
            panic!("{f:?}")
        };
        assert!(
            (r - drift).abs() < 1_000.0,
            "drift {drift} estimated as {r}"
        );
    }
}

#[test]
fn heavy_tailed_jitter_and_reordering_change_nothing() {
    let mut rng = Rng(3);
    let truth = Truth {
        offset_ns: 987_654.0,
        drift: 20_000.0,
        start_ns: 10 * S,
    };
    let span = 30 * S;
    // Mostly 30 µs, sometimes queued for up to 50 ms.
    let mut c = exchange(
        truth,
        span,
        5 * MS,
        &mut rng,
        |r| {
            if r.next() % 20 == 0 {
                r.range(MS, 50 * MS)
            } else {
                r.range(30_000, 40_000)
            }
        },
        true,
    );
    let in_order = fit(&c);
    // Constraints arrive in any order (several ring buffers, several recordings).
    for v in [&mut c.upper, &mut c.lower] {
        for i in (1..v.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    let shuffled = fit(&c);
    assert_eq!(in_order, shuffled);
    let worst = check_within(&shuffled, truth, span);
    assert!(worst <= 45_000.0, "bound {worst} ns");
}

#[test]
fn one_way_traffic_gives_a_one_sided_bound() {
    let mut rng = Rng(5);
    let truth = Truth {
        offset_ns: -4_000_000.0,
        drift: 0.0,
        start_ns: 5 * S,
    };
    let c = exchange(
        truth,
        5 * S,
        10 * MS,
        &mut rng,
        |r| r.range(20_000, 90_000),
        false,
    );
    let f = fit(&c);
    let e = f.at(7 * S).expect("an estimate");
    assert_eq!(e.bound, Bound::OneSided { upper: true });
    // The truth is below the tightest upper bound, by at most the fastest delay.
    let gap = e.offset_ns - truth.at(7 * S);
    assert!((0.0..=25_000.0).contains(&gap), "gap {gap}");
    // And only the other direction: a lower bound.
    let reversed = Constraints {
        upper: Vec::new(),
        lower: exchange(
            truth,
            5 * S,
            10 * MS,
            &mut rng,
            |r| r.range(20_000, 90_000),
            true,
        )
        .lower,
    };
    let e = fit(&reversed).at(7 * S).expect("an estimate");
    assert_eq!(e.bound, Bound::OneSided { upper: false });
    assert!(truth.at(7 * S) >= e.offset_ns - 1.0);
}

#[test]
fn wrong_matches_are_dropped_as_outliers() {
    let mut rng = Rng(9);
    let truth = Truth {
        offset_ns: 250_000.0,
        drift: 0.0,
        start_ns: 3 * S,
    };
    let span = 20 * S;
    let mut c = exchange(
        truth,
        span,
        20 * MS,
        &mut rng,
        |r| r.range(50_000, 70_000),
        true,
    );
    // Three packets matched to the wrong partner: each bound is a millisecond on the wrong
    // side of the truth.
    for k in [10, 300, 700] {
        c.upper[k].value_ns -= 1_000_000;
    }
    c.lower[500].value_ns += 2_000_000;
    let f = fit(&c);
    let Fit::TwoSided { outliers, .. } = &f else {
        panic!("{f:?}")
    };
    assert_eq!(*outliers, 4, "{f:?}");
    let worst = check_within(&f, truth, span);
    assert!(worst <= 75_000.0, "bound {worst}");
}

#[test]
fn nothing_or_nonsense_is_unknown() {
    assert!(matches!(fit(&Constraints::default()), Fit::Unknown { .. }));
    assert_eq!(fit(&Constraints::default()).at(0), None);
    // Every packet says something else: far more contradictions than outliers allowed.
    let mut c = Constraints::default();
    for i in 0..200u64 {
        c.upper.push(Constraint {
            t_ns: i * MS,
            value_ns: -(i as i64) * 1_000_000,
        });
        c.lower.push(Constraint {
            t_ns: i * MS,
            value_ns: (i as i64) * 1_000_000,
        });
    }
    let f = fit(&c);
    assert!(matches!(f, Fit::Unknown { .. }), "{f:?}");
}

#[test]
fn hulls_keep_only_the_binding_points() {
    let pts = [
        (0.0, 5.0),
        (1.0, 1.0),
        (1.0, 3.0),
        (2.0, 4.0),
        (3.0, 2.0),
        (4.0, 6.0),
    ];
    assert_eq!(
        lower_hull(&pts),
        [(0.0, 5.0), (1.0, 1.0), (3.0, 2.0), (4.0, 6.0)]
    );
    let mut up = pts.to_vec();
    up.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    assert_eq!(upper_hull(&up), [(0.0, 5.0), (4.0, 6.0)]);
}
