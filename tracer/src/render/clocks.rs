//! Where each merged recording's clock sits on the reference timeline: one line per recording
//! and per pair that exchanged packets (text), or one `{"clocks": {...}}` line (JSON).

use std::io::{self, Write};

use serde::Serialize;

use crate::model::{ClockReport, PairClockReport, RecordingClockReport};

/// `3.712345678 s` for ns, with the sign.
fn seconds(ns: f64) -> String {
    format!("{:+.9} s", ns / 1e9)
}

/// `± 4.210 us`.
fn micros(ns: f64) -> String {
    format!("± {:.3} us", ns / 1e3)
}

pub fn write_clocks_text(w: &mut impl Write, r: &ClockReport) -> io::Result<()> {
    let name = |i: usize| r.recordings.get(i).map_or("?", |x| x.name.as_str());
    writeln!(
        w,
        "clocks: {} packets matched across recordings ({} ambiguous, not used); reference {}",
        r.matched,
        r.ambiguous,
        name(0)
    )?;
    for x in r.recordings.iter().skip(1) {
        let bound = match x.offset_err_ns {
            Some(e) => format!(" {}", micros(e)),
            None => String::new(),
        };
        writeln!(
            w,
            "  {} ({}): {}{bound} from the reference, {}",
            x.name,
            if x.host.is_empty() { "?" } else { &x.host },
            seconds(x.offset_ns),
            basis_text(x.basis),
        )?;
    }
    for p in &r.pairs {
        let what = match (p.fit, p.offset_ns, p.offset_err_ns) {
            ("two-sided", Some(o), Some(e)) => format!("{} {}", seconds(o), micros(e)),
            ("one-sided", Some(o), _) => format!(
                "{} {} (one direction only: a bound, not an estimate)",
                if p.a_to_b > 0 { "at most" } else { "at least" },
                seconds(o)
            ),
            _ => format!("no estimate ({})", p.why.as_deref().unwrap_or("no packets")),
        };
        writeln!(
            w,
            "  {} -> {}: {what}; {} packets one way, {} the other{}",
            name(p.a),
            name(p.b),
            p.a_to_b,
            p.b_to_a,
            if p.outliers > 0 {
                format!(", {} dropped as outliers", p.outliers)
            } else {
                String::new()
            }
        )?;
    }
    Ok(())
}

fn basis_text(basis: &str) -> &'static str {
    match basis {
        "same-clock" => "same kernel (one clock: exact)",
        "estimated" => "estimated from packets both ways",
        "one-sided" => "one direction only: a bound, not an estimate",
        "wall-clock" => "wall clocks only (no packets crossed): no bound",
        "reference" => "the reference",
        _ => "unknown: not placed",
    }
}

#[derive(Serialize)]
struct ClocksLine<'a> {
    clocks: ClocksJson<'a>,
}

#[derive(Serialize)]
struct ClocksJson<'a> {
    reference: &'a str,
    matched: u64,
    ambiguous: u64,
    recordings: Vec<RecordingJson<'a>>,
    pairs: Vec<PairJson<'a>>,
}

#[derive(Serialize)]
struct RecordingJson<'a> {
    name: &'a str,
    host: &'a str,
    boot_id: &'a str,
    basis: &'a str,
    offset_ns: i64,
    offset_err_ns: Option<u64>,
}

#[derive(Serialize)]
struct PairJson<'a> {
    a: &'a str,
    b: &'a str,
    a_to_b: usize,
    b_to_a: usize,
    fit: &'a str,
    offset_ns: Option<i64>,
    offset_err_ns: Option<u64>,
    outliers: usize,
    why: Option<&'a str>,
}

pub fn write_clocks_json<'a>(w: &mut impl Write, r: &'a ClockReport) -> io::Result<()> {
    let name = move |i: usize| r.recordings.get(i).map_or("?", |x| x.name.as_str());
    fn rec(x: &RecordingClockReport) -> RecordingJson<'_> {
        RecordingJson {
            name: &x.name,
            host: &x.host,
            boot_id: &x.boot_id,
            basis: x.basis,
            offset_ns: x.offset_ns.round() as i64,
            offset_err_ns: x.offset_err_ns.map(|e| e.ceil() as u64),
        }
    }
    let pair = |p: &'a PairClockReport| PairJson {
        a: name(p.a),
        b: name(p.b),
        a_to_b: p.a_to_b,
        b_to_a: p.b_to_a,
        fit: p.fit,
        offset_ns: p.offset_ns.map(|o| o.round() as i64),
        offset_err_ns: p.offset_err_ns.map(|e| e.ceil() as u64),
        outliers: p.outliers,
        why: p.why.as_deref(),
    };
    let line = ClocksLine {
        clocks: ClocksJson {
            reference: name(0),
            matched: r.matched,
            ambiguous: r.ambiguous,
            recordings: r.recordings.iter().map(rec).collect(),
            pairs: r.pairs.iter().map(pair).collect(),
        },
    };
    serde_json::to_writer(&mut *w, &line)?;
    writeln!(w)
}
