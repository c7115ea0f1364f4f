//! The report as Markdown (CommonMark with GitHub tables), for a ticket or a postmortem: the
//! same sections and numbers as the HTML page, tables instead of charts (the sequence diagram
//! becomes a table with one column per node).
//!
//! Every string that comes from a recording goes through [`esc`]: Markdown's punctuation is
//! backslash-escaped, so an interface named `*x*|<b>` stays that text (no emphasis, no table
//! cell break, no raw HTML), and line breaks cannot end a table row. Untrusted text is never
//! put in code spans (backslashes do not escape there).

use std::fmt::Write;

use super::model::*;
use super::{duration, moment, offset, signed};
use crate::model::Outcome;

/// Escapes Markdown's inline punctuation and flattens whitespace.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '~' | '#' | '&' | '!' | '{'
            | '}' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// One table row.
fn row(out: &mut String, cells: &[String]) {
    out.push('|');
    for c in cells {
        let _ = write!(out, " {c} |");
    }
    out.push('\n');
}

/// A table's header and alignment rows; `numeric` columns are right-aligned.
fn head(out: &mut String, cols: &[&str], numeric: &[bool]) {
    row(out, &cols.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    row(
        out,
        &numeric
            .iter()
            .map(|&n| if n { "---:" } else { "---" }.to_string())
            .collect::<Vec<_>>(),
    );
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# {}\n", esc(&r.title));
    let inputs: Vec<String> = r.inputs.iter().map(|i| esc(&i.name)).collect();
    let _ = writeln!(
        o,
        "Written by tracer {} from {}.\n",
        r.tracer_version,
        inputs.join(", ")
    );
    notice(&mut o, r);
    findings(&mut o, r);
    evidence(&mut o, r);
    timelines(&mut o, r);
    latency(&mut o, &r.latency);
    flows(&mut o, r);
    environment(&mut o, &r.environment);
    o
}

fn notice(o: &mut String, r: &Report) {
    let c = &r.completeness;
    if c.complete() {
        o.push_str(
            "> **Evidence complete.** Every recording was read to its end, the tracer lost no \
             event, and drops were recorded.\n\n",
        );
    } else {
        o.push_str(
            "> **Incomplete evidence.** This report shows everything that could be read. \
             What is missing:\n>\n",
        );
        for m in &c.missing {
            let _ = writeln!(o, "> - {}", esc(m));
        }
        o.push('\n');
    }
}

fn place(p: &Place) -> String {
    match p {
        Place::KernelDrop {
            node,
            ifname,
            reason,
            function,
            len,
            encap,
        } => format!(
            "dropped by the kernel on {} {}: **{}** in {} ({len} bytes{})",
            esc(node),
            esc(ifname),
            esc(reason),
            esc(function),
            encap
                .as_ref()
                .map(|e| format!(", still encapsulated: {}", esc(e)))
                .unwrap_or_default()
        ),
        Place::LostAfter { node, ifname, dir } => format!(
            "last seen at {} {} {dir}; no later hop and no kernel drop on a traced node",
            esc(node),
            esc(ifname)
        ),
    }
}

fn findings(o: &mut String, r: &Report) {
    let t = &r.outcomes;
    o.push_str("## 1. What failed, where and why\n\n");
    if t.failed() == 0 {
        let _ = writeln!(
            o,
            "No traced packet was dropped or lost. {} packets traced: {} delivered, {} \
             incomplete.\n",
            t.traces, t.delivered, t.incomplete
        );
    } else {
        let _ = writeln!(
            o,
            "**{} of {} traced packets failed**: {} dropped by the kernel, {} lost (not seen \
             again, no kernel drop on a traced node); {} delivered, {} incomplete.\n",
            t.failed(),
            t.traces,
            t.dropped,
            t.lost,
            t.delivered,
            t.incomplete
        );
    }
    let errors: Vec<String> = r
        .environment
        .audit
        .iter()
        .flat_map(|a| &a.findings)
        .filter(|f| f.severity == "error")
        .map(|f| format!("{} ({})", f.code, esc(&f.nodes.join(" → "))))
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(
            o,
            "The nodes' recorded state disagrees ({} error{}): {}{} — see the audit in section \
             6.\n",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors[..errors.len().min(5)].join(", "),
            if errors.len() > 5 { ", ..." } else { "" }
        );
    }
    for (i, f) in r.findings.iter().enumerate() {
        let _ = writeln!(
            o,
            "### {}. `{}` — {} packet{} {}\n",
            i + 1,
            f.verdict.replace('`', "'"),
            f.count,
            if f.count == 1 { "" } else { "s" },
            f.outcome.as_str()
        );
        let _ = writeln!(o, "- **Where:** {}", place(&f.place));
        let _ = writeln!(
            o,
            "- **Evidence:** {}",
            match f.place {
                Place::KernelDrop { .. } => "the kernel's own drop record",
                Place::LostAfter { .. } => "an absence (no hop after this one)",
            }
        );
        let when = if f.last.mono_ns == f.first.mono_ns {
            moment(&f.first)
        } else {
            format!("{} to {}", moment(&f.first), moment(&f.last))
        };
        let _ = writeln!(o, "- **When:** {when}");
        let mut flows: Vec<String> = f.flows.iter().map(|x| esc(x)).collect();
        if f.flows_total > f.flows.len() {
            flows.push(format!("and {} more", f.flows_total - f.flows.len()));
        }
        let _ = writeln!(o, "- **Flows:** {}", flows.join(", "));
        let _ = writeln!(o, "- **Why:** {}", esc(&f.explanation));
        for e in &f.evidence {
            let _ = writeln!(o, "- **Evidence:** {}", esc(e));
        }
        for rt in &f.routes {
            let _ = writeln!(o, "- **Route lookup:** {}", esc(rt));
        }
        o.push('\n');
        if f.packets.len() > 1 {
            head(
                o,
                &["first hop at", "packet", "hops"],
                &[false, false, true],
            );
            for p in &f.packets {
                row(o, &[moment(&p.at), esc(&p.packet), p.hops.to_string()]);
            }
            o.push('\n');
        }
    }
    if r.findings_left_out > 0 {
        let _ = writeln!(
            o,
            "{} more failed packets of other kinds are counted above but not shown.\n",
            r.findings_left_out
        );
    }
}

fn evidence(o: &mut String, r: &Report) {
    let c = &r.completeness;
    let (l, s) = (&c.loss, &c.correlator);
    o.push_str("## 2. Is the evidence complete?\n\n");
    if c.complete() {
        o.push_str("Yes.\n\n");
    } else {
        let _ = writeln!(o, "**No**: {} gaps (listed at the top).\n", c.missing.len());
    }
    o.push_str("### The tracer's own losses (gaps in the evidence, not network drops)\n\n");
    head(o, &["what", "count"], &[false, true]);
    for (what, n) in [
        ("events lost, ring buffer full", l.ringbuf_full),
        (
            "drains after which the tracer had lost events",
            s.loss_windows,
        ),
        (
            "traces incomplete because of those losses (no verdict)",
            c.traces_with_tracer_loss,
        ),
        (
            "of them, would otherwise have been called lost",
            s.lost_withheld,
        ),
        ("records that could not be decoded", l.decode_errors),
        (
            "kernel drops whose packet could not be read",
            l.drop_read_errors,
        ),
        (
            "traces closed early (too many open)",
            s.evicted + s.identity_evicted,
        ),
    ] {
        row(o, &[what.to_string(), n.to_string()]);
    }
    o.push_str("\n### Kernel drops (what the network did)\n\n");
    head(o, &["what", "count"], &[false, true]);
    for (what, n) in [
        ("drop records seen", c.drops_seen),
        ("ignored as noise", c.noise_drops),
        ("traced packets dropped", r.outcomes.dropped),
    ] {
        row(o, &[what.to_string(), n.to_string()]);
    }
    let _ = writeln!(
        o,
        "\nNot traced, by choice: {} filtered out, {} not IPv4, {} malformed, {} sampled out.\n",
        l.filtered, l.not_ipv4, l.malformed, l.sampled_out
    );
    o.push_str("### Recordings\n\n");
    head(o, &["recording", "read", "meaning"], &[false, false, false]);
    for i in &r.inputs {
        row(
            o,
            &[esc(&i.name), i.end.as_str().to_string(), esc(&i.detail)],
        );
    }
    o.push('\n');
    if !r.incomplete.is_empty() {
        o.push_str("### Packets neither delivered nor provably failed\n\n");
        head(
            o,
            &[
                "last seen on",
                "interface",
                "dir",
                "tracer lost events meanwhile",
                "packets",
            ],
            &[false, false, false, false, true],
        );
        for g in &r.incomplete {
            row(
                o,
                &[
                    esc(&g.node),
                    esc(&g.ifname),
                    g.dir.to_string(),
                    if g.tracer_loss { "yes" } else { "no" }.to_string(),
                    g.count.to_string(),
                ],
            );
        }
        o.push('\n');
    }
    if !r.warnings.is_empty() {
        o.push_str("### Warnings\n\n");
        for w in &r.warnings {
            let _ = writeln!(o, "- {}", esc(w));
        }
        o.push('\n');
    }
}

fn timelines(o: &mut String, r: &Report) {
    o.push_str("## 3. Timeline of the failing packets\n\n");
    if r.findings.is_empty() {
        o.push_str("No failing packet.\n\n");
    }
    for (i, f) in r.findings.iter().enumerate() {
        let _ = writeln!(o, "### {}. `{}`\n", i + 1, f.verdict.replace('`', "'"));
        for t in &f.examples {
            timeline(o, t);
        }
    }
}

/// One packet as a table: a column per node (lane), a row per event.
fn timeline(o: &mut String, t: &Timeline) {
    let _ = writeln!(
        o,
        "{} — {}, first hop at {}:\n",
        esc(&t.packet),
        t.outcome.as_str(),
        moment(&t.start)
    );
    let mut cols: Vec<String> = vec!["time".into()];
    cols.extend(t.lanes.iter().map(|l| esc(l)));
    cols.push("detail".into());
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut numeric = vec![true];
    numeric.extend(std::iter::repeat_n(false, t.lanes.len() + 1));
    head(o, &names, &numeric);
    for e in &t.events {
        let mut cells = vec![match e.err_ns {
            Some(err) => format!("{} ±{}", offset(e.t_ns), duration(err)),
            None => offset(e.t_ns),
        }];
        for lane in 0..t.lanes.len() {
            cells.push(if lane == e.lane {
                match e.kind {
                    EventKind::Drop => format!("**DROP** {}", esc(&e.ifname)),
                    k => format!("{} {}", esc(&e.ifname), k.as_str()),
                }
            } else {
                String::new()
            });
        }
        cells.push(esc(&e.detail));
        row(o, &cells);
    }
    if t.outcome == Outcome::Lost {
        let mut cells = vec![String::new()];
        cells.extend(std::iter::repeat_n(String::new(), t.lanes.len()));
        cells.push("not seen again (no kernel drop on a traced node)".into());
        row(o, &cells);
    }
    if !t.segments.is_empty() {
        let segs: Vec<String> = t
            .segments
            .iter()
            .map(|s| match s.err_ns {
                Some(e) => format!("{} {} ±{}", s.name, signed(s.ns), duration(e)),
                None => format!("{} {}", s.name, signed(s.ns)),
            })
            .collect();
        let _ = writeln!(o, "\nSegments: {}.", segs.join(", "));
    }
    o.push('\n');
}

fn summary_table(o: &mut String, t: &SegmentTable) {
    head(
        o,
        &[
            "segment", "count", "min", "p50", "p90", "p99", "p99.9", "max",
        ],
        &[false, true, true, true, true, true, true, true],
    );
    for r in &t.rows {
        let s = &r.summary;
        row(
            o,
            &[
                r.name.to_string(),
                s.count.to_string(),
                duration(s.min_ns),
                duration(s.p50_ns),
                duration(s.p90_ns),
                duration(s.p99_ns),
                duration(s.p999_ns),
                duration(s.max_ns),
            ],
        );
    }
    o.push('\n');
}

fn latency(o: &mut String, l: &Latency) {
    o.push_str("## 4. Latency per segment\n\n");
    let _ = writeln!(o, "Clocks: {}.\n", esc(&l.clock));
    if l.total.rows.is_empty() {
        o.push_str("No latency segment was measured.\n\n");
    } else {
        let _ = writeln!(o, "### All flows ({} packets)\n", l.total.traces);
        summary_table(o, &l.total);
    }
    for f in &l.flows {
        let _ = writeln!(
            o,
            "### Flow {} ({} packets){}\n",
            esc(&f.flow),
            f.table.traces,
            if f.failing { " — failing" } else { "" }
        );
        summary_table(o, &f.table);
    }
    if l.flows_left_out > 0 {
        let _ = writeln!(
            o,
            "{} more flows are in the total only here.\n",
            l.flows_left_out
        );
    }
    let _ = writeln!(
        o,
        "Left out: {} segments across clocks without a bound, {} negative cross-machine \
         values, {} packets beyond the per-flow limit (in the total).\n",
        l.skipped_unsynchronized, l.skipped_negative, l.traces_beyond_flow_limit
    );
}

fn flows(o: &mut String, r: &Report) {
    o.push_str("## 5. Flows\n\n");
    head(
        o,
        &[
            "proto",
            "flow",
            "packets",
            "bytes",
            "delivered",
            "dropped",
            "lost",
            "incomplete",
        ],
        &[false, false, true, true, true, true, true, true],
    );
    for f in &r.flows {
        row(
            o,
            &[
                f.proto.clone(),
                esc(&f.flow),
                f.packets.to_string(),
                f.bytes.to_string(),
                f.delivered.to_string(),
                f.dropped.to_string(),
                f.lost.to_string(),
                f.incomplete.to_string(),
            ],
        );
    }
    o.push('\n');
    if r.flows_left_out > 0 {
        let _ = writeln!(o, "{} more flows are not listed.\n", r.flows_left_out);
    }
}

fn environment(o: &mut String, e: &Environment) {
    o.push_str("## 6. Environment\n\n### Machines and recordings\n\n");
    head(
        o,
        &[
            "recording",
            "host",
            "kernel",
            "boot id",
            "machine id",
            "clock source",
            "started",
            "filter",
            "recorded",
        ],
        &[false; 9],
    );
    for x in &e.recordings {
        let mut what = if x.hooks {
            "hops, drops, routes".to_string()
        } else {
            "hops only (--no-drops)".to_string()
        };
        if x.sample > 1 {
            let _ = write!(what, "; one packet in {}", x.sample);
        }
        let _ = write!(what, "; tracer {}", esc(&x.tracer_version));
        row(
            o,
            &[
                esc(&x.name),
                esc(&x.host),
                esc(&x.kernel),
                esc(&x.boot_id),
                esc(&x.machine_id),
                esc(&x.clocksource),
                x.started.clone().unwrap_or_else(|| "?".into()),
                esc(&x.filter),
                what,
            ],
        );
    }
    o.push_str("\n### Clocks\n\n");
    match &e.clocks {
        Clocks::Single => o.push_str(
            "One recording: one clock. Every node is a namespace of the recording's kernel, \
             so every segment is exact.\n\n",
        ),
        Clocks::Merged(c) => {
            let _ = writeln!(
                o,
                "{} packets matched across recordings ({} ambiguous, not used). Times are on \
                 the clock of the first recording.\n",
                c.matched, c.ambiguous
            );
            head(
                o,
                &[
                    "recording",
                    "host",
                    "boot id",
                    "placed by",
                    "offset",
                    "bound",
                ],
                &[false, false, false, false, true, true],
            );
            for x in &c.recordings {
                row(
                    o,
                    &[
                        esc(&x.name),
                        esc(&x.host),
                        esc(&x.boot_id),
                        x.basis.to_string(),
                        signed(x.offset_ns.round() as i64),
                        x.offset_err_ns
                            .map_or("none".into(), |b| format!("±{}", duration(b.ceil() as u64))),
                    ],
                );
            }
            o.push('\n');
        }
    }
    for x in &e.recordings {
        for n in &x.nodes {
            node(o, n, &x.name);
        }
    }
    audit(o, e.audit.as_ref());
}

fn audit(o: &mut String, a: Option<&Audit>) {
    o.push_str("### Audit of the nodes' state\n\n");
    let Some(a) = a else {
        o.push_str(
            "Not available: these recordings carry no node state (recorded by an older tracer, \
             or cut before it was written).\n\n",
        );
        return;
    };
    let _ = writeln!(
        o,
        "The state each recorder read when it started, checked on each node and across every \
         pair of {} nodes, as `tracer check` does: {}.\n",
        a.nodes.len(),
        match a.findings.len() {
            0 => "no finding".to_string(),
            1 => "1 finding".to_string(),
            n => format!("{n} findings"),
        }
    );
    if a.findings.is_empty() {
        return;
    }
    head(
        o,
        &[
            "severity", "code", "nodes", "object", "found", "expected", "fix",
        ],
        &[false; 7],
    );
    for f in &a.findings {
        row(
            o,
            &[
                f.severity.to_string(),
                f.code.to_string(),
                esc(&f.nodes.join(" → ")),
                esc(&f.object),
                esc(&f.found),
                esc(&f.expected),
                esc(&f.fix),
            ],
        );
    }
    o.push('\n');
}

fn node(o: &mut String, n: &NodeEnv, recording: &str) {
    let _ = writeln!(o, "### Node {}\n", esc(&n.name));
    let tunnels: Vec<String> = n
        .interfaces
        .iter()
        .filter(|i| i.is_tunnel())
        .map(|t| match t.mtu {
            Some(m) => format!("{} ({}, MTU {m})", esc(&t.name), t.kind.unwrap_or("?")),
            None => format!("{} ({})", esc(&t.name), t.kind.unwrap_or("?")),
        })
        .collect();
    let _ = writeln!(o, "- recording: {}", esc(recording));
    let _ = writeln!(o, "- network namespace: {}", n.netns);
    let _ = writeln!(o, "- addresses: {}", n.addrs.join(", "));
    let _ = writeln!(o, "- underlay (uplink): {}", n.uplink_addrs.join(", "));
    let _ = writeln!(
        o,
        "- default gateway: {}",
        n.default_gw.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        o,
        "- tunnels: {}\n",
        if tunnels.is_empty() {
            "none".to_string()
        } else {
            tunnels.join(", ")
        }
    );
    head(
        o,
        &["interface", "index", "traced as", "MTU"],
        &[false, true, false, true],
    );
    for i in &n.interfaces {
        row(
            o,
            &[
                esc(&i.name),
                i.ifindex.to_string(),
                i.kind.unwrap_or("not traced").to_string(),
                i.mtu.map_or("-".into(), |m| m.to_string()),
            ],
        );
    }
    if !n.routes.is_empty() {
        o.push_str(if n.routes_all_tables {
            "\nRoutes of every table when recording started:\n\n"
        } else {
            "\nMain routing table when recording started:\n\n"
        });
        for r in &n.routes {
            let _ = writeln!(o, "- {}", esc(r));
        }
    }
    o.push('\n');
}
