//! Render: traces and summaries as text for people and JSON lines for programs.
//!
//! The last stage of the pipeline (see `pipeline`). Formatting only: every number printed here
//! was computed upstream and arrives in a [`Trace`] or a [`RunSummary`] (the flows, the
//! correlator's counters, the loss counters the caller read from the kernel and the decoder).
//!
//! Design notes:
//! - Text: one header line per trace (the packet and its outcome), then one line per hop with
//!   columns aligned within the trace and the time relative to the first hop in µs (exact
//!   integer arithmetic, 3 decimals). An incomplete trace names the last place it was seen.
//! - JSON: one object per line, built from private `#[derive(Serialize)]` view structs that
//!   borrow from the trace, so the wire names are spelled out in one place and the domain
//!   types need no serde. Field names are a contract: later versions add fields, never rename.
//! - The summary keeps three kinds of numbers apart: what happened to packets (per flow and
//!   totals), what the tracer itself lost (ring buffer full, decode errors: gaps in the data,
//!   not kernel drops), and what it chose not to trace (filtered, not IPv4, malformed).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::latency::{ClockModel, Measurements, SegmentClock};
use crate::model::{
    proto_name, CorrelateStats, Encap, EncapKind, FlowKey, FlowSummary, LossCounters, Outcome,
    RouteLookup, Trace,
};

/// How traces and summaries are printed (`--output`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What a run saw besides its traces: everything the summary prints.
pub struct RunSummary<'a> {
    /// Per 5-tuple totals of the emitted traces, ordered by flow.
    pub flows: &'a BTreeMap<FlowKey, FlowSummary>,
    pub correlator: &'a CorrelateStats,
    /// Traces still open when the summary was written.
    pub open_traces: usize,
    /// Drop records seen (noise included), and those ignored as noise.
    pub drops_seen: u64,
    pub noise_drops: u64,
    /// Drops by the destination's own sockets (a full receive buffer, TCP's own checks): the
    /// network delivered the packet, the receiving application did not take it.
    pub receiver_drops: u64,
    /// The tracer's own losses and exclusions.
    pub loss: &'a LossCounters,
}

/// Writes one trace as text: a header line and one line per hop. A hop on another machine than
/// the first hop's (merged recordings) shows the bound of the two clocks' offset.
pub fn write_trace_text(w: &mut impl Write, t: &Trace, clock: &ClockModel) -> io::Result<()> {
    let outcome = match (t.outcome, t.hops.last()) {
        (Outcome::Incomplete, Some(h)) => {
            format!(
                "INCOMPLETE (last seen {} {} {}{})",
                h.node,
                h.ifname,
                h.dir.as_str(),
                if t.tracer_loss {
                    "; the tracer lost events meanwhile"
                } else {
                    ""
                }
            )
        }
        (Outcome::Incomplete, None) => "INCOMPLETE (no hops)".to_string(),
        (Outcome::Delivered, _) => Outcome::Delivered.as_str().to_string(),
        (Outcome::Dropped, _) => match &t.drop {
            Some(d) => format!("DROPPED on {} {} ({})", d.node, d.ifname, d.reason),
            None => "DROPPED".to_string(),
        },
        (Outcome::Lost, Some(h)) => {
            format!("LOST after {} {} {}", h.node, h.ifname, h.dir.as_str())
        }
        (Outcome::Lost, None) => "LOST".to_string(),
    };
    writeln!(w, "{}   {outcome}", packet_text(t))?;
    let first = t.first_ts_ns();
    let times: Vec<String> = t
        .hops
        .iter()
        .map(|h| micros(h.ts_ns.saturating_sub(first)))
        .collect();
    let node_w = t.hops.iter().map(|h| h.node.len()).max().unwrap_or(0);
    let if_w = t.hops.iter().map(|h| h.ifname.len()).max().unwrap_or(0);
    let time_w = times.iter().map(String::len).max().unwrap_or(0);
    for (h, time) in t.hops.iter().zip(&times) {
        let (node, ifname, dir) = (&h.node, &h.ifname, h.dir.as_str());
        write!(
            w,
            "  {node:<node_w$}  {ifname:<if_w$}  {dir:<7}  {time:>time_w$} us"
        )?;
        if let Some(SegmentClock::Estimated { err_ns, .. }) =
            t.hops.first().and_then(|h0| clock.relation(h0, h))
        {
            write!(w, " ±{}", micros(err_ns).trim_start_matches('+'))?;
        }
        let nat = if h.translated { "  (translated)" } else { "" };
        match h.encap {
            Some(e) => writeln!(w, "  {}{nat}", encap_text(&e))?,
            None => writeln!(w, "{nat}")?,
        }
    }
    for n in &t.nat {
        let time = micros(n.ts_ns.saturating_sub(first));
        writeln!(
            w,
            "  nat: {} {} at {time} us: {}{}",
            n.node,
            n.ifname,
            n.text(),
            nat_names_text(t, n)
        )?;
    }
    if let Some(d) = &t.drop {
        let time = micros(d.ts_ns.saturating_sub(first));
        writeln!(
            w,
            "  {:<node_w$}  {:<if_w$}  DROP     {time:>time_w$} us  {} in {}",
            d.node, d.ifname, d.reason, d.function
        )?;
    }
    if t.outcome == Outcome::Dropped || t.outcome == Outcome::Lost {
        for r in &t.routes {
            match route_node(t, r) {
                Some(node) => writeln!(w, "  route: {node} {}", route_text(t, r))?,
                None => writeln!(w, "  route: {}", route_text(t, r))?,
            }
        }
    }
    if let Some(v) = &t.verdict {
        writeln!(w, "  verdict: {}", v.name)?;
        for line in wrap(&v.explanation, 96) {
            writeln!(w, "    {line}")?;
        }
        for e in &v.evidence {
            writeln!(w, "    evidence: {e}")?;
        }
    }
    Ok(())
}

/// The node a route lookup was made on, when its namespace is known (one of the trace's hops).
pub fn route_node<'a>(t: &'a Trace, r: &RouteLookup) -> Option<&'a str> {
    if r.netns == 0 {
        return None;
    }
    t.hops.iter().find(|h| h.netns == r.netns).map(|h| &*h.node)
}

/// Loopback's ifindex in every namespace: the input interface of output route lookups (a
/// packet the node sends itself, such as a tunnel's outer header).
const LOOPBACK_IFINDEX: u32 = 1;

/// The name of a route lookup's input interface: `lo` for the node's own packets, else the
/// trace's hop on that interface in the lookup's namespace; `None` when unknown.
pub fn route_iif<'a>(t: &'a Trace, r: &RouteLookup) -> Option<&'a str> {
    match r.iif {
        0 => None,
        LOOPBACK_IFINDEX => Some("lo"),
        iif => t
            .hops
            .iter()
            .find(|h| h.netns == r.netns && h.ifindex == iif)
            .map(|h| &*h.ifname),
    }
}

/// `table 254 10.244.0.1 -> 10.244.4.1 iif cali1: dev eth0 via 10.10.0.254` or
/// `...: no route (error -101)`. The input interface tells apart the lookups a forwarded
/// packet and the node's own output (`iif lo`) make for the same addresses.
pub(crate) fn route_text(t: &Trace, r: &RouteLookup) -> String {
    let mut head = format!("table {} {} -> {}", r.table, r.src, r.dst);
    match (route_iif(t, r), r.iif) {
        (Some(name), _) => head.push_str(&format!(" iif {name}")),
        (None, 0) => {}
        (None, iif) => head.push_str(&format!(" iif #{iif}")),
    }
    if r.err != 0 {
        return format!("{head}: no route (error {})", r.err);
    }
    match r.gw {
        Some(gw) => format!("{head}: dev {} via {gw}", r.dev),
        None => format!("{head}: dev {}", r.dev),
    }
}

/// Greedy word wrap.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Writes one trace as a JSON object on its own line (see `trace_json`).
#[cfg(test)]
pub fn write_trace_json(w: &mut impl Write, t: &Trace, clock: &ClockModel) -> io::Result<()> {
    trace_json::write(w, &mut Vec::new(), t, &Measurements::of(t, clock))
}

/// [`write_trace_json`] with the trace's segments already measured (`m`), building the line in
/// `buf`, a buffer the caller keeps from one trace to the next (no allocation per line once it
/// has grown to the longest line).
pub fn write_trace_json_in(
    w: &mut impl Write,
    buf: &mut Vec<u8>,
    t: &Trace,
    m: &Measurements,
) -> io::Result<()> {
    trace_json::write(w, buf, t, m)
}

/// Writes the per-flow table, the totals and the tracer's own counters as text.
pub fn write_summary_text(w: &mut impl Write, r: &RunSummary<'_>) -> io::Result<()> {
    let loss = r.loss;
    let header = [
        "proto",
        "flow",
        "packets",
        "bytes",
        "hops",
        "delivered",
        "dropped",
        "lost",
        "incomplete",
    ];
    let mut rows = vec![header.map(String::from)];
    let mut total = Totals::default();
    for (key, f) in r.flows {
        total.add(f);
        rows.push(summary_row(
            proto_name(key.proto).to_uppercase(),
            flow_text(key),
            &Totals::of(f),
        ));
    }
    let flows = rows.len() - 1;
    rows.push(summary_row(
        "total".into(),
        format!("{flows} flow{}", if flows == 1 { "" } else { "s" }),
        &total,
    ));
    let mut widths = [0; 9];
    for r in &rows {
        for (wd, cell) in widths.iter_mut().zip(r) {
            *wd = (*wd).max(cell.len());
        }
    }
    writeln!(w, "flows:")?;
    for r in &rows {
        write!(w, "  {:<2$}  {:<3$}", r[0], r[1], widths[0], widths[1])?;
        for (cell, wd) in r.iter().zip(widths).skip(2) {
            write!(w, "  {cell:>wd$}")?;
        }
        writeln!(w)?;
    }
    let failing = connections::text_lines(&connections::connections(r.flows));
    if !failing.is_empty() {
        writeln!(w, "connections that fail (both directions):")?;
        for line in failing {
            writeln!(w, "  {line}")?;
        }
    }
    let s = r.correlator;
    writeln!(
        w,
        "correlator: {} hops seen, {} duplicates dropped, {} on unknown interfaces, \
         {} traces emitted ({} early: too many open, {} early: too many with one identity), \
         {} still open",
        s.hops_seen,
        s.duplicates,
        s.unknown_iface_hops,
        s.traces_emitted,
        s.evicted,
        s.identity_evicted,
        r.open_traces
    )?;
    writeln!(
        w,
        "kernel drops: {} seen, {} ignored as noise, {} by the receiving sockets (delivered; the \
         application did not take them)",
        r.drops_seen, r.noise_drops, r.receiver_drops
    )?;
    writeln!(
        w,
        "tracer lost (not kernel drops): {} events (ring buffer full), {} decode errors, \
         {} unreadable drops, {} aggregation slots taken over in flight",
        loss.ringbuf_full, loss.decode_errors, loss.drop_read_errors, loss.agg_map_full
    )?;
    if s.lost_withheld > 0 {
        writeln!(
            w,
            "{} traces are incomplete, not lost: the tracer lost events while they were in \
             flight (for every packet at this rate: `tracer record`, a larger --ringbuf-mib, or \
             --sample N)",
            s.lost_withheld
        )?;
    }
    writeln!(
        w,
        "not traced: {} filtered, {} not IPv4, {} malformed, {} sampled out",
        loss.filtered, loss.not_ipv4, loss.malformed, loss.sampled_out
    )
}

/// Writes the summary as one JSON object `{"summary": {...}}` on its own line.
pub fn write_summary_json(w: &mut impl Write, r: &RunSummary<'_>) -> io::Result<()> {
    let loss = r.loss;
    let mut total = Totals::default();
    let flows = r
        .flows
        .iter()
        .map(|(key, f)| {
            total.add(f);
            FlowJson {
                flow: flow_id(key),
                proto: proto_json(key.proto),
                src: key.src,
                dst: key.dst,
                sport: key.sport,
                dport: key.dport,
                packets: f.packets,
                bytes: f.bytes,
                hops: f.hops,
                delivered: f.delivered,
                dropped: f.dropped,
                lost: f.lost,
                incomplete: f.incomplete,
                first_ts_ns: f.first_ts_ns,
                last_ts_ns: f.last_ts_ns,
            }
        })
        .collect();
    let s = r.correlator;
    let view = SummaryLine {
        summary: SummaryJson {
            flows,
            connections: connections::connections(r.flows),
            traces: s.traces_emitted,
            hops: total.hops,
            bytes: total.bytes,
            delivered: total.delivered,
            dropped: total.dropped,
            lost: total.lost,
            incomplete: total.incomplete,
            drops_seen: r.drops_seen,
            noise_drops: r.noise_drops,
            receiver_drops: r.receiver_drops,
            lost_events: loss.ringbuf_full,
            decode_errors: loss.decode_errors,
            drop_read_errors: loss.drop_read_errors,
            encap_probe_hits: loss.encap_probe_hits,
            sampled_out: loss.sampled_out,
            agg_map_full: loss.agg_map_full,
            filtered: loss.filtered,
            not_ipv4: loss.not_ipv4,
            malformed: loss.malformed,
            hops_seen: s.hops_seen,
            duplicates: s.duplicates,
            unknown_iface_hops: s.unknown_iface_hops,
            evicted: s.evicted,
            identity_evicted: s.identity_evicted,
            open_traces: r.open_traces as u64,
            lost_withheld: s.lost_withheld,
        },
    };
    serde_json::to_writer(&mut *w, &view)?;
    writeln!(w)
}

/// Sums of the per-flow counters.
#[derive(Default)]
struct Totals {
    packets: u64,
    bytes: u64,
    hops: u64,
    delivered: u64,
    dropped: u64,
    lost: u64,
    incomplete: u64,
}

/// One line of the flow table.
fn summary_row(proto: String, flow: String, t: &Totals) -> [String; 9] {
    let n = [
        t.packets,
        t.bytes,
        t.hops,
        t.delivered,
        t.dropped,
        t.lost,
        t.incomplete,
    ];
    let [a, b, c, d, e, f, g] = n.map(|v| v.to_string());
    [proto, flow, a, b, c, d, e, f, g]
}

impl Totals {
    fn of(f: &FlowSummary) -> Self {
        let mut t = Totals::default();
        t.add(f);
        t
    }

    fn add(&mut self, f: &FlowSummary) {
        self.packets += f.packets;
        self.bytes += f.bytes;
        self.hops += f.hops;
        self.delivered += f.delivered;
        self.dropped += f.dropped;
        self.lost += f.lost;
        self.incomplete += f.incomplete;
    }
}

/// `+12.345` for 12 345 ns.
fn micros(ns: u64) -> String {
    format!("+{}.{:03}", ns / 1000, ns % 1000)
}

fn has_ports(proto: u8, sport: u16, dport: u16) -> bool {
    matches!(proto, 6 | 17 | 132) || sport != 0 || dport != 0
}

/// `10.0.0.1:80 > 10.0.0.2:4000`, or without ports for port-less protocols.
pub(crate) fn flow_text(k: &FlowKey) -> String {
    if has_ports(k.proto, k.sport, k.dport) {
        format!("{}:{} > {}:{}", k.src, k.sport, k.dst, k.dport)
    } else {
        format!("{} > {}", k.src, k.dst)
    }
}

/// `flow_text` of a trace's packet, each address that belongs to a pod or Service followed by
/// its name: `10.244.1.5 (default/web-7d9f) > 10.96.0.10 (service default/db)`.
fn named_flow_text(t: &Trace) -> String {
    let k = t.packet.flow();
    if t.names.is_empty() {
        return flow_text(&k);
    }
    let ports = has_ports(k.proto, k.sport, k.dport);
    let end = |a: Ipv4Addr, port: u16| {
        let mut s = if ports {
            format!("{a}:{port}")
        } else {
            a.to_string()
        };
        if let Some(n) = t.name_of(a) {
            s.push_str(&format!(" ({})", n.describe()));
        }
        s
    };
    format!("{} > {}", end(k.src, k.sport), end(k.dst, k.dport))
}

/// The names of a NAT step's addresses that it changed: `  (10.244.4.5 default/db-0)`.
fn nat_names_text(t: &Trace, n: &crate::model::NatStep) -> String {
    let mut addrs: Vec<Ipv4Addr> = Vec::new();
    for (a, b) in [(n.from.0, n.to.0), (n.from.2, n.to.2)] {
        if a != b {
            addrs.extend([a, b]);
        }
    }
    let named: Vec<String> = addrs
        .into_iter()
        .filter_map(|a| t.name_of(a).map(|o| format!("{a} {}", o.describe())))
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!("  ({})", named.join(", "))
    }
}

/// tcpdump's notation for TCP flags: `[S.]` is SYN+ACK.
fn tcp_flags_text(flags: u8) -> String {
    const NAMES: [(u8, char); 8] = [
        (0x01, 'F'),
        (0x02, 'S'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, '.'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'W'),
    ];
    let s: String = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|&(_, c)| c)
        .collect();
    if s.is_empty() {
        "[none]".into()
    } else {
        format!("[{s}]")
    }
}

/// The header line of a trace, without the outcome.
pub(crate) fn packet_text(t: &Trace) -> String {
    let p = &t.packet;
    let proto = proto_name(p.proto).to_uppercase();
    let flow = named_flow_text(t);
    let detail = match p.proto {
        1 => match t.icmp_type {
            8 => format!(" echo id {} seq {}", p.icmp_id, p.icmp_seq),
            0 => format!(" echo reply id {} seq {}", p.icmp_id, p.icmp_seq),
            other => format!(" type {other}"),
        },
        6 => format!(" seq {} flags {}", p.tcp_seq, tcp_flags_text(t.tcp_flags)),
        _ => String::new(),
    };
    format!(
        "{proto} {flow}{detail} ipid {:#06x} len {}",
        p.ip_id,
        t.first_len()
    )
}

pub(crate) fn encap_text(e: &Encap) -> String {
    match e.kind {
        EncapKind::Vxlan => format!(
            "vxlan vni {} {}:{} > {}:{}",
            e.vni, e.outer_src, e.outer_sport, e.outer_dst, e.outer_dport
        ),
        EncapKind::Ipip => format!("ipip {} > {}", e.outer_src, e.outer_dst),
    }
}

/// `icmp`, `tcp`, `udp`, or the protocol number (allocates only for the last).
fn proto_json(proto: u8) -> Cow<'static, str> {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        other => other.to_string().into(),
    }
}

/// `<src>:<sport>><dst>:<dport>/<proto>`, the flow's stable identifier in JSON.
fn flow_id(k: &FlowKey) -> String {
    format!(
        "{}:{}>{}:{}/{}",
        k.src,
        k.sport,
        k.dst,
        k.dport,
        proto_json(k.proto)
    )
}

#[derive(Serialize)]
struct SummaryLine {
    summary: SummaryJson,
}

#[derive(Serialize)]
struct SummaryJson {
    flows: Vec<FlowJson>,
    /// Each flow with its reverse: which direction fails, and where.
    connections: Vec<connections::Connection>,
    traces: u64,
    hops: u64,
    bytes: u64,
    delivered: u64,
    dropped: u64,
    lost: u64,
    incomplete: u64,
    drops_seen: u64,
    noise_drops: u64,
    receiver_drops: u64,
    lost_events: u64,
    decode_errors: u64,
    drop_read_errors: u64,
    encap_probe_hits: u64,
    sampled_out: u64,
    agg_map_full: u64,
    filtered: u64,
    not_ipv4: u64,
    malformed: u64,
    hops_seen: u64,
    duplicates: u64,
    unknown_iface_hops: u64,
    evicted: u64,
    identity_evicted: u64,
    open_traces: u64,
    lost_withheld: u64,
}

#[derive(Serialize)]
struct FlowJson {
    flow: String,
    proto: Cow<'static, str>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    packets: u64,
    bytes: u64,
    hops: u64,
    delivered: u64,
    dropped: u64,
    lost: u64,
    incomplete: u64,
    first_ts_ns: u64,
    last_ts_ns: u64,
}

mod clocks;
mod connections;
pub(crate) mod trace_json;

pub use clocks::{write_clocks_json, write_clocks_text};

#[cfg(test)]
mod tests;
