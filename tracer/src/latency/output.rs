//! Latency output: text tables for people, one JSON line for programs.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::clock::{ClockModel, ClockSource};
use super::stats::{LatencyStats, SegmentSet, Summary};
use super::SegmentName;
use crate::model::{proto_name, FlowKey};

const COLUMNS: [&str; 8] = [
    "segment", "count", "min", "p50", "p90", "p99", "p99.9", "max",
];

/// Writes one table per flow, then the total table, in µs with 3 decimals, then what was
/// skipped.
pub fn write_stats_text(w: &mut impl Write, s: &LatencyStats) -> io::Result<()> {
    let mut tables: Vec<(String, Vec<[String; 8]>)> = Vec::new();
    for key in s.flows() {
        if let Some(set) = s.flows.get(&key) {
            let title = format!("flow {} ({})", flow_text(&key), traces_text(set.traces));
            tables.push((title, rows(set)));
        }
    }
    // Histograms merged from the kernel carry no trace count: say where they come from.
    let source = if s.total.traces == 0 && !rows(&s.total).is_empty() {
        "in-kernel histograms, log2 buckets at their lower bound".to_string()
    } else {
        traces_text(s.total.traces)
    };
    tables.push((format!("total ({source})"), rows(&s.total)));
    let mut widths = COLUMNS.map(str::len);
    for r in tables.iter().flat_map(|(_, rows)| rows) {
        for (wd, cell) in widths.iter_mut().zip(r) {
            *wd = (*wd).max(cell.len());
        }
    }
    let clock = match s.clock().source {
        ClockSource::SharedKernel => "shared-kernel",
        ClockSource::PerNode => "per-node, cross-node segments only where both offsets are known",
        ClockSource::Estimated => {
            "estimated from the packets between machines; cross-machine segments within the \
             clock bound, see the clocks line"
        }
    };
    writeln!(w, "latency per segment in us (clock: {clock}):")?;
    for (title, rows) in &tables {
        writeln!(w, "{title}")?;
        write_row(w, &COLUMNS.map(String::from), &widths)?;
        for r in rows {
            write_row(w, r, &widths)?;
        }
    }
    writeln!(
        w,
        "skipped: {} cross-node segments (clocks not synchronized), {} negative deltas, \
         {} traces beyond the flow limit",
        s.skipped_unsynchronized(),
        s.skipped_negative(),
        s.traces_beyond_flow_limit()
    )
}

/// Writes the statistics as one JSON object `{"stats": {...}}` on its own line.
pub fn write_stats_json(w: &mut impl Write, s: &LatencyStats) -> io::Result<()> {
    let flows = s
        .flows()
        .iter()
        .filter_map(|key| {
            let set = s.flows.get(key)?;
            Some(FlowJson {
                flow: flow_id(key),
                traces: set.traces,
                segments: SegmentsJson(set.summaries()),
            })
        })
        .collect();
    let view = StatsLine {
        stats: StatsJson {
            clock: s.clock().source.as_str(),
            clock_offsets_ns: offsets_json(s.clock()),
            traces: s.traces(),
            total: TotalJson {
                traces: s.total.traces,
                segments: SegmentsJson(s.total.summaries()),
            },
            flows,
            skipped_unsynchronized: s.skipped_unsynchronized(),
            skipped_negative: s.skipped_negative(),
            traces_beyond_flow_limit: s.traces_beyond_flow_limit(),
        },
    };
    serde_json::to_writer(&mut *w, &view)?;
    writeln!(w)
}

fn rows(set: &SegmentSet) -> Vec<[String; 8]> {
    set.summaries()
        .iter()
        .map(|(name, s)| {
            [
                name.as_str().to_string(),
                s.count.to_string(),
                micros(s.min_ns),
                micros(s.p50_ns),
                micros(s.p90_ns),
                micros(s.p99_ns),
                micros(s.p999_ns),
                micros(s.max_ns),
            ]
        })
        .collect()
}

fn write_row(w: &mut impl Write, r: &[String; 8], widths: &[usize; 8]) -> io::Result<()> {
    write!(w, "  {:<1$}", r[0], widths[0])?;
    for (cell, wd) in r.iter().zip(widths).skip(1) {
        write!(w, "  {cell:>wd$}")?;
    }
    writeln!(w)
}

fn traces_text(n: u64) -> String {
    format!("{n} trace{}", if n == 1 { "" } else { "s" })
}

/// `12.345` for 12 345 ns (exact integer arithmetic).
fn micros(ns: u64) -> String {
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// `ICMP 10.0.0.1 > 10.0.0.2`, or with ports, as in the summary table.
fn flow_text(k: &FlowKey) -> String {
    let proto = proto_name(k.proto).to_uppercase();
    if matches!(k.proto, 6 | 17 | 132) || k.sport != 0 || k.dport != 0 {
        format!("{proto} {}:{} > {}:{}", k.src, k.sport, k.dst, k.dport)
    } else {
        format!("{proto} {} > {}", k.src, k.dst)
    }
}

/// `<src>:<sport>><dst>:<dport>/<proto>`, the flow identifier of the other JSON lines.
fn flow_id(k: &FlowKey) -> String {
    let proto = match k.proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        other => other.to_string(),
    };
    format!("{}:{}>{}:{}/{proto}", k.src, k.sport, k.dst, k.dport)
}

/// Offsets by netns (as a string key), only under a per-node clock.
fn offsets_json(clock: &ClockModel) -> BTreeMap<String, i64> {
    match clock.source {
        ClockSource::SharedKernel | ClockSource::Estimated => BTreeMap::new(),
        ClockSource::PerNode => clock.offsets().map(|(n, o)| (n.to_string(), o)).collect(),
    }
}

#[derive(Serialize)]
struct StatsLine {
    stats: StatsJson,
}

#[derive(Serialize)]
struct StatsJson {
    clock: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    clock_offsets_ns: BTreeMap<String, i64>,
    traces: u64,
    total: TotalJson,
    flows: Vec<FlowJson>,
    skipped_unsynchronized: u64,
    skipped_negative: u64,
    traces_beyond_flow_limit: u64,
}

#[derive(Serialize)]
struct TotalJson {
    traces: u64,
    segments: SegmentsJson,
}

#[derive(Serialize)]
struct FlowJson {
    flow: String,
    traces: u64,
    segments: SegmentsJson,
}

/// Segment name -> summary, as a JSON object in path order.
struct SegmentsJson(Vec<(SegmentName, Summary)>);

impl Serialize for SegmentsJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, s) in &self.0 {
            map.serialize_entry(name.as_str(), &SummaryJson::from(s))?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct SummaryJson {
    count: u64,
    min_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
}

impl From<&Summary> for SummaryJson {
    fn from(s: &Summary) -> Self {
        SummaryJson {
            count: s.count,
            min_ns: s.min_ns,
            p50_ns: s.p50_ns,
            p90_ns: s.p90_ns,
            p99_ns: s.p99_ns,
            p999_ns: s.p999_ns,
            max_ns: s.max_ns,
        }
    }
}
