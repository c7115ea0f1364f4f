//! The report as one self-contained HTML page.
//!
//! - **Self-contained**: the style is inline, the charts are inline SVG (`svg`), there is no
//!   script, no font, no image file and no link to anything outside the page; a
//!   Content-Security-Policy (`default-src 'none'`) makes the browser refuse any fetch that
//!   would slip in, so the page opens offline and never calls out.
//! - **Escaped**: the page is written with maud, which escapes every spliced string (interface
//!   and host names come from recordings: untrusted). Only the SVG of `svg` is spliced as it is,
//!   and plotters escapes the text it writes.
//! - **Printable**: print CSS (A4, black on white, charts scaled to the page, no section
//!   header left alone at the bottom of a page, wide tables wrapped).

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::model::*;
use super::{duration, moment, offset, signed, svg};
use crate::model::Outcome;

/// Flows whose histograms are drawn (their tables are all shown).
const CHARTED_FLOWS: usize = 5;

const CSS: &str = r#"
:root { --ink: #222; --muted: #666; --line: #d8d8d8; --bad: #c62828; --ok: #2e7d32; --warn: #ef6c00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); margin: 0 auto; padding: 24px; max-width: 1180px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; border-bottom: 2px solid var(--ink); padding-bottom: 2px; margin-top: 32px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
p.meta { color: var(--muted); margin: 0 0 16px; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
table { border-collapse: collapse; margin: 8px 0 12px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f9; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.notice { border: 2px solid; border-radius: 6px; padding: 10px 14px; margin: 12px 0 20px; }
.notice.incomplete { border-color: var(--bad); background: #fdecea; }
.notice.complete { border-color: var(--ok); background: #edf7ed; }
.notice ul { margin: 6px 0 0; }
.finding { border: 1px solid var(--line); border-left: 6px solid var(--bad); border-radius: 4px;
           padding: 8px 14px; margin: 12px 0; }
.finding.lost { border-left-color: var(--warn); }
.verdict { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 17px; color: var(--bad); }
dl.facts { display: grid; grid-template-columns: 11em 1fr; gap: 2px 12px; margin: 6px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
figure { margin: 10px 0 16px; }
figure svg { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; }
.charts { display: flex; flex-wrap: wrap; gap: 10px; }
.charts figure { margin: 0; flex: 0 1 420px; }
.muted { color: var(--muted); }
.bad { color: var(--bad); font-weight: 600; }
.ok { color: var(--ok); font-weight: 600; }
p.sub { font-weight: 600; margin: 10px 0 2px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 10pt; padding: 0; max-width: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2, h3 { break-after: avoid; }
  .finding, figure, tr, .notice { break-inside: avoid; }
  table { font-size: 9pt; }
}
"#;

/// The page.
pub fn render(r: &Report) -> String {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="Content-Security-Policy"
                    content="default-src 'none'; style-src 'unsafe-inline'; img-src data:";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="generator" content={ "tracer " (r.tracer_version) };
                title { (r.title) }
                style { (PreEscaped(CSS)) }
            }
            body {
                header {
                    h1 { (r.title) }
                    p.meta {
                        "Written by tracer " (r.tracer_version) " from "
                        @for (i, input) in r.inputs.iter().enumerate() {
                            @if i > 0 { ", " }
                            code { (input.name) }
                        }
                        "."
                    }
                }
                (notice(r))
                (findings(r))
                (evidence(r))
                (timelines(r))
                (latency(&r.latency))
                (flows(r))
                (environment(&r.environment))
            }
        }
    };
    page.into_string()
}

fn notice(r: &Report) -> Markup {
    let c = &r.completeness;
    html! {
        @if c.complete() {
            div.notice.complete id="completeness" {
                strong { "Evidence complete." }
                " Every recording was read to its end, the tracer lost no event, and drops were recorded."
            }
        } @else {
            div.notice.incomplete id="completeness" {
                strong { "Incomplete evidence." }
                " This report shows everything that could be read. What is missing:"
                ul { @for m in &c.missing { li { (m) } } }
            }
        }
    }
}

fn findings(r: &Report) -> Markup {
    let o = &r.outcomes;
    html! {
        section id="findings" {
            h2 { "1. What failed, where and why" }
            @if o.failed() == 0 {
                p.ok { "No traced packet was dropped or lost." }
                p { (o.traces) " packets traced: " (o.delivered) " delivered, "
                    (o.incomplete) " incomplete." }
            } @else {
                p {
                    span.bad { (o.failed()) " of " (o.traces) " traced packets failed" }
                    ": " (o.dropped) " dropped by the kernel, " (o.lost)
                    " lost (not seen again, no kernel drop on a traced node); "
                    (o.delivered) " delivered, " (o.incomplete) " incomplete."
                }
            }
            @let errors = audit_errors(r);
            @if !errors.is_empty() {
                p {
                    "The nodes' recorded state disagrees ("
                    (errors.len()) " error" @if errors.len() != 1 { "s" } "): "
                    @for (k, f) in errors.iter().take(5).enumerate() {
                        @if k > 0 { ", " }
                        code { (f.code) } " (" (f.nodes.join(" → ")) ")"
                    }
                    @if errors.len() > 5 { ", ..." }
                    " — see " a href="#audit" { "the audit" } "."
                }
            }
            @for (i, f) in r.findings.iter().enumerate() {
                (finding(i, f))
            }
            @if r.findings_left_out > 0 {
                p.muted { (r.findings_left_out) " more failed packets of other kinds are counted above but not shown." }
            }
        }
    }
}

/// The audit's errors (warnings stay in the environment section).
fn audit_errors(r: &Report) -> Vec<&AuditFinding> {
    r.environment
        .audit
        .iter()
        .flat_map(|a| &a.findings)
        .filter(|f| f.severity == "error")
        .collect()
}

fn place(p: &Place) -> Markup {
    html! {
        @match p {
            Place::KernelDrop { node, ifname, reason, function, len, encap } => {
                "dropped by the kernel on " code { (node) } " " code { (ifname) } ": "
                strong { (reason) } " in " code { (function) } " (" (len) " bytes"
                @if let Some(e) = encap { ", still encapsulated: " code { (e) } }
                ")"
            }
            Place::LostAfter { node, ifname, dir } => {
                "last seen at " code { (node) } " " code { (ifname) } " " (dir)
                "; no later hop and no kernel drop on a traced node"
            }
        }
    }
}

fn finding(i: usize, f: &Finding) -> Markup {
    let class = if f.outcome == Outcome::Lost {
        "finding lost"
    } else {
        "finding"
    };
    html! {
        article class=(class) id={ "finding-" (i + 1) } {
            h3 {
                span.verdict { (f.verdict) }
                " — " (f.count) " packet" @if f.count != 1 { "s" } " " (f.outcome.as_str())
            }
            dl.facts {
                dt { "Where" } dd { (place(&f.place)) }
                dt { "Evidence" } dd {
                    @match f.place {
                        Place::KernelDrop { .. } => "the kernel's own drop record (reason and location as the running kernel names them)",
                        Place::LostAfter { .. } => "an absence: the packet was not seen after this hop; the verdict reasons from the hops and routes seen",
                    }
                }
                dt { "When" } dd {
                    (moment(&f.first))
                    @if f.last.mono_ns != f.first.mono_ns { " to " (moment(&f.last)) }
                }
                dt { "Flows" } dd {
                    @for (j, fl) in f.flows.iter().enumerate() {
                        @if j > 0 { ", " } code { (fl) }
                    }
                    @if f.flows_total > f.flows.len() { " and " (f.flows_total - f.flows.len()) " more" }
                }
                dt { "Why" } dd { (f.explanation) }
                @if !f.evidence.is_empty() {
                    dt { "Evidence" } dd {
                        @for e in &f.evidence { (e) br; }
                    }
                }
                @if !f.routes.is_empty() {
                    dt { "Route lookups" } dd {
                        @for rt in &f.routes { code { (rt) } br; }
                    }
                }
            }
            @if f.packets.len() > 1 {
                p.sub { "Packets (" (f.packets.len())
                    @if (f.packets.len() as u64) < f.count { " first of " (f.count) } "):" }
                table {
                    tr { th { "first hop at" } th { "packet" } th.n { "hops" } }
                    @for p in &f.packets {
                        tr { td { (moment(&p.at)) } td.mono { (p.packet) } td.n { (p.hops) } }
                    }
                }
            }
            p.muted { "Hop by hop: " a href={ "#timeline-" (i + 1) } { "timeline " (i + 1) } "." }
        }
    }
}

fn evidence(r: &Report) -> Markup {
    let c = &r.completeness;
    let l = &c.loss;
    let s = &c.correlator;
    html! {
        section id="evidence" {
            h2 { "2. Is the evidence complete?" }
            @if c.complete() {
                p.ok { "Yes." }
            } @else {
                p.bad { "No: " (c.missing.len()) " gap" @if c.missing.len() != 1 { "s" } " (listed at the top)." }
            }
            h3 { "The tracer's own losses (gaps in the evidence, not network drops)" }
            table {
                tr { th { "what" } th.n { "count" } }
                tr { td { "events lost, ring buffer full" } td.n { (l.ringbuf_full) } }
                tr { td { "drains after which the tracer had lost events" } td.n { (s.loss_windows) } }
                tr { td { "traces incomplete because of those losses (no verdict)" } td.n { (c.traces_with_tracer_loss) } }
                tr { td { "of them, would otherwise have been called lost" } td.n { (s.lost_withheld) } }
                tr { td { "records that could not be decoded" } td.n { (l.decode_errors) } }
                tr { td { "kernel drops whose packet could not be read" } td.n { (l.drop_read_errors) } }
                tr { td { "traces closed early (too many open)" } td.n { (s.evicted + s.identity_evicted) } }
            }
            h3 { "Kernel drops (what the network did)" }
            table {
                tr { th { "what" } th.n { "count" } }
                tr { td { "drop records seen" } td.n { (c.drops_seen) } }
                tr { td { "ignored as noise (consumed packets, echo replies nobody waited for)" } td.n { (c.noise_drops) } }
                tr { td { "traced packets dropped" } td.n { (r.outcomes.dropped) } }
            }
            h3 { "Not traced, by choice" }
            p {
                (l.filtered) " filtered out, " (l.not_ipv4) " not IPv4, " (l.malformed)
                " malformed, " (l.sampled_out) " sampled out."
            }
            h3 { "Recordings" }
            table {
                tr { th { "recording" } th { "read" } th { "meaning" } }
                @for i in &r.inputs {
                    tr {
                        td { code { (i.name) } }
                        td class=(if i.end == InputEnd::Complete { "ok" } else { "bad" }) { (i.end.as_str()) }
                        td { (i.detail) }
                    }
                }
            }
            @if !r.incomplete.is_empty() {
                h3 { "Packets neither delivered nor provably failed" }
                table {
                    tr { th { "last seen on" } th { "interface" } th { "dir" } th { "tracer lost events meanwhile" } th.n { "packets" } }
                    @for g in &r.incomplete {
                        tr {
                            td { code { (g.node) } } td { code { (g.ifname) } } td { (g.dir) }
                            td { @if g.tracer_loss { span.bad { "yes" } } @else { "no" } }
                            td.n { (g.count) }
                        }
                    }
                }
            }
            @if !r.warnings.is_empty() {
                h3 { "Warnings" }
                ul { @for w in &r.warnings { li { (w) } } }
            }
        }
    }
}

fn timelines(r: &Report) -> Markup {
    html! {
        section id="timeline" {
            h2 { "3. Timeline of the failing packets" }
            @if r.findings.is_empty() {
                p.muted { "No failing packet." }
            }
            @for (i, f) in r.findings.iter().enumerate() {
                h3 id={ "timeline-" (i + 1) } {
                    (i + 1) ". " span.verdict { (f.verdict) }
                }
                @for (j, t) in f.examples.iter().enumerate() {
                    (timeline(t, j == 0))
                }
            }
        }
    }
}

fn timeline(t: &Timeline, first: bool) -> Markup {
    let body = html! {
        figure {
            (PreEscaped(svg::sequence(t)))
            figcaption {
                code { (t.packet) } " — " (t.outcome.as_str()) ", first hop at " (moment(&t.start))
                ". Nodes are lanes, rows are the packet's hops in time order."
            }
        }
        table {
            tr { th { "time" } th { "node" } th { "interface" } th { "what" } th { "detail" } }
            @for e in &t.events {
                tr {
                    td.n { (offset(e.t_ns)) @if let Some(err) = e.err_ns { " ±" (duration(err)) } }
                    td { code { (t.lanes.get(e.lane).map_or("?", String::as_str)) } }
                    td { code { (e.ifname) } }
                    td class=(if e.kind == EventKind::Drop { "bad" } else { "" }) { (e.kind.as_str()) }
                    td.mono { (e.detail) }
                }
            }
        }
        @if !t.segments.is_empty() {
            p {
                "Segments: "
                @for (k, s) in t.segments.iter().enumerate() {
                    @if k > 0 { ", " }
                    code { (s.name) } " " (signed(s.ns))
                    @if let Some(e) = s.err_ns { " ±" (duration(e)) }
                }
            }
        }
    };
    html! {
        @if !first { p.sub { "Another packet of this finding:" } }
        (body)
    }
}

fn summary_table(t: &SegmentTable) -> Markup {
    html! {
        table {
            tr {
                th { "segment" } th.n { "count" } th.n { "min" } th.n { "p50" } th.n { "p90" }
                th.n { "p99" } th.n { "p99.9" } th.n { "max" }
            }
            @for row in &t.rows {
                @let s = &row.summary;
                tr {
                    td { code { (row.name) } } td.n { (s.count) } td.n { (duration(s.min_ns)) }
                    td.n { (duration(s.p50_ns)) } td.n { (duration(s.p90_ns)) }
                    td.n { (duration(s.p99_ns)) } td.n { (duration(s.p999_ns)) }
                    td.n { (duration(s.max_ns)) }
                }
            }
        }
    }
}

fn charts(t: &SegmentTable, whose: &str) -> Markup {
    html! {
        div.charts {
            @for row in &t.rows {
                @if let Some(chart) = svg::histogram(row, &format!("{} — {whose}", row.name)) {
                    figure { (PreEscaped(chart)) }
                }
            }
        }
    }
}

fn latency(l: &Latency) -> Markup {
    html! {
        section id="latency" {
            h2 { "4. Latency per segment" }
            p { "Clocks: " (l.clock) "." }
            p.muted {
                "Segments: " code { "node-tx" } " pod veth ingress to uplink egress, "
                code { "encap" } " tunnel egress to uplink egress, " code { "wire" }
                " uplink to the peer's uplink, " code { "decap" } " uplink ingress to tunnel ingress, "
                code { "node-rx" } " uplink ingress to pod veth egress, " code { "same-node" }
                " pod to pod on one node, " code { "total" } " first to last hop of a delivered packet."
            }
            @if l.total.rows.is_empty() {
                p.muted { "No latency segment was measured." }
            } @else {
                h3 { "All flows (" (l.total.traces) " packets)" }
                (summary_table(&l.total))
                (charts(&l.total, "all flows"))
            }
            @for (i, f) in l.flows.iter().enumerate() {
                h3 {
                    "Flow " code { (f.flow) } " (" (f.table.traces) " packets)"
                    @if f.failing { " " span.bad { "failing" } }
                }
                (summary_table(&f.table))
                @if i < CHARTED_FLOWS { (charts(&f.table, &f.flow)) }
            }
            @if l.flows_left_out > 0 {
                p.muted { (l.flows_left_out) " more flows are in the total only here." }
            }
            p.muted {
                "Left out: " (l.skipped_unsynchronized) " segments across clocks without a bound, "
                (l.skipped_negative) " negative cross-machine values, "
                (l.traces_beyond_flow_limit) " packets beyond the per-flow limit (in the total)."
            }
        }
    }
}

fn flows(r: &Report) -> Markup {
    html! {
        section id="flows" {
            h2 { "5. Flows" }
            table {
                tr {
                    th { "proto" } th { "flow" } th.n { "packets" } th.n { "bytes" }
                    th.n { "delivered" } th.n { "dropped" } th.n { "lost" } th.n { "incomplete" }
                }
                @for f in &r.flows {
                    tr {
                        td { (f.proto) } td { code { (f.flow) } } td.n { (f.packets) }
                        td.n { (f.bytes) } td.n { (f.delivered) }
                        td.n class=(if f.dropped > 0 { "bad" } else { "" }) { (f.dropped) }
                        td.n class=(if f.lost > 0 { "bad" } else { "" }) { (f.lost) }
                        td.n { (f.incomplete) }
                    }
                }
            }
            @if r.flows_left_out > 0 {
                p.muted { (r.flows_left_out) " more flows are not listed." }
            }
        }
    }
}

fn environment(e: &Environment) -> Markup {
    html! {
        section id="environment" {
            h2 { "6. Environment" }
            h3 { "Machines and recordings" }
            table {
                tr {
                    th { "recording" } th { "host" } th { "kernel" } th { "boot id" }
                    th { "machine id" } th { "clock source" } th { "started" } th { "filter" }
                    th { "recorded" }
                }
                @for x in &e.recordings {
                    tr {
                        td { code { (x.name) } } td { (x.host) } td { (x.kernel) }
                        td.mono { (x.boot_id) } td.mono { (x.machine_id) } td { (x.clocksource) }
                        td { (x.started.as_deref().unwrap_or("?")) } td { code { (x.filter) } }
                        td {
                            @if x.hooks { "hops, drops, routes" } @else { span.bad { "hops only (--no-drops)" } }
                            @if x.sample > 1 { "; one packet in " (x.sample) }
                            "; tracer " (x.tracer_version)
                        }
                    }
                }
            }
            h3 { "Clocks" }
            (clocks(e))
            @for x in &e.recordings {
                @for n in &x.nodes { (node(n, &x.name)) }
            }
            h3 id="audit" { "Audit of the nodes' state" }
            @match &e.audit {
                None => p.muted {
                    "Not available: these recordings carry no node state (recorded by an older tracer, or cut before it was written)."
                },
                Some(a) => {
                    p {
                        "The state each recorder read when it started (routes of every table, neighbours, FDB, tunnel parameters, sysctls, firewall), checked on each node and across every pair of "
                        (a.nodes.len()) " nodes, as " code { "tracer check" } " does: "
                        @if a.findings.is_empty() { span.ok { "no finding." } }
                        @else { (a.findings.len()) " finding" @if a.findings.len() != 1 { "s" } "." }
                    }
                    @if !a.findings.is_empty() {
                        table {
                            tr { th { "severity" } th { "code" } th { "nodes" } th { "object" } th { "found" } th { "expected" } th { "fix" } }
                            @for f in &a.findings {
                                tr {
                                    td class=(if f.severity == "error" { "bad" } else { "" }) { (f.severity) }
                                    td { code { (f.code) } } td { (f.nodes.join(" → ")) }
                                    td { (f.object) } td { (f.found) } td { (f.expected) } td { (f.fix) }
                                }
                            }
                        }
                    }
                },
            }
        }
    }
}

fn clocks(e: &Environment) -> Markup {
    html! {
        @match &e.clocks {
            Clocks::Single => p {
                "One recording: one clock. Every node is a namespace of the recording's kernel, so every segment is exact."
            },
            Clocks::Merged(c) => {
                p {
                    (c.matched) " packets matched across recordings (" (c.ambiguous)
                    " ambiguous, not used). Times are on the clock of the first recording."
                }
                table {
                    tr { th { "recording" } th { "host" } th { "boot id" } th { "placed by" } th.n { "offset" } th.n { "bound" } }
                    @for x in &c.recordings {
                        tr {
                            td { code { (x.name) } } td { (x.host) } td.mono { (x.boot_id) } td { (x.basis) }
                            td.n { (signed(x.offset_ns.round() as i64)) }
                            td.n { @if let Some(b) = x.offset_err_ns { "±" (duration(b.ceil() as u64)) } @else { "none" } }
                        }
                    }
                }
                @if !c.pairs.is_empty() {
                    table {
                        tr { th { "pair" } th { "fit" } th.n { "packets a→b" } th.n { "b→a" } th.n { "offset b−a" } th.n { "bound" } th.n { "outliers" } }
                        @for p in &c.pairs {
                            tr {
                                td {
                                    code { (c.recordings.get(p.a).map_or("?", |x| x.name.as_str())) } " – "
                                    code { (c.recordings.get(p.b).map_or("?", |x| x.name.as_str())) }
                                }
                                td { (p.fit) @if let Some(w) = &p.why { " (" (w) ")" } }
                                td.n { (p.a_to_b) } td.n { (p.b_to_a) }
                                td.n { @if let Some(o) = p.offset_ns { (signed(o.round() as i64)) } @else { "-" } }
                                td.n { @if let Some(b) = p.offset_err_ns { "±" (duration(b.ceil() as u64)) } @else { "-" } }
                                td.n { (p.outliers) }
                            }
                        }
                    }
                }
            },
        }
    }
}

fn node(n: &NodeEnv, recording: &str) -> Markup {
    let tunnels: Vec<&IfaceEnv> = n.interfaces.iter().filter(|i| i.is_tunnel()).collect();
    html! {
        h3 { "Node " code { (n.name) } }
        dl.facts {
            dt { "recording" } dd { code { (recording) } }
            dt { "network namespace" } dd.mono { (n.netns) }
            dt { "addresses" } dd { (n.addrs.join(", ")) }
            dt { "underlay (uplink)" } dd { (n.uplink_addrs.join(", ")) }
            dt { "default gateway" } dd { (n.default_gw.as_deref().unwrap_or("none")) }
            dt { "tunnels" } dd {
                @if tunnels.is_empty() { "none" }
                @for (k, t) in tunnels.iter().enumerate() {
                    @if k > 0 { ", " }
                    code { (t.name) } " (" (t.kind.unwrap_or("?"))
                    @if let Some(m) = t.mtu { ", MTU " (m) } ")"
                }
            }
        }
        div {
            table {
                tr { th { "interface" } th.n { "index" } th { "traced as" } th.n { "MTU" } }
                @for i in &n.interfaces {
                    tr {
                        td { code { (i.name) } } td.n { (i.ifindex) }
                        td { (i.kind.unwrap_or("not traced")) }
                        td.n { @if let Some(m) = i.mtu { (m) } @else { "-" } }
                    }
                }
            }
            @if !n.routes.is_empty() {
                p {
                    @if n.routes_all_tables { "Routes of every table when recording started:" }
                    @else { "Main routing table when recording started:" }
                }
                ul { @for r in &n.routes { li { code { (r) } } } }
            }
        }
    }
}
