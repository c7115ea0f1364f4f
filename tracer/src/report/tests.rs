//! The report's content from fixture traces (the same pipeline that `replay` runs, observed by
//! the collector): findings with their evidence and timelines, completeness, latency, the
//! environment; a recording cut short or damaged still gives a report that says what is
//! missing; the HTML and Markdown escape what recordings say and reference nothing outside.

use std::{
    io,
    sync::{Arc, Mutex},
};

use tracer_common::{Drop, DropEvent, EventHeader, HopEvent, EVENT_DROP};

use super::collect::{bins, build, Collector};
use super::model::*;
use super::*;
use crate::{
    fixtures::{self, drop_of, icmp, vxlan_path, CALI_A, NS1, VXLAN},
    latency::ClockModel,
    merge::{Opened, ReplayEnd, Replayed},
    model::{ClockReport, LossCounters, Outcome, PairClockReport, RecordingClockReport},
    names::DropNames,
    pipeline::{Pipeline, SharedObserver},
    pipeline_bench::packet_records,
    recording::{self, Trailer, Writer, SOURCE_HOOKS},
    state::{LinkState, NodeState, RouteEntry, RouteType, Vxlan},
    topology::Topology,
};

/// Names every drop as the kernel named the `missing-fdb` fault's drop.
struct Names;

impl DropNames for Names {
    fn reason_name(&self, _value: u32) -> String {
        "NO_TX_TARGET".into()
    }

    fn location(&self, _addr: u64) -> String {
        "vxlan_xmit+0xdab".into()
    }
}

const MS: u64 = 1_000_000;

/// Feeds the fixture traffic through a pipeline observed by a collector: `delivered` packets
/// over the whole VXLAN path, two dropped on node1's vxlan.calico (no FDB entry), one lost
/// after node1's uplink. Returns the report built as the command builds it.
fn fixture_report(topo: Topology, delivered: u16) -> Report {
    let collector = Arc::new(Mutex::new(Collector::default()));
    let observer: SharedObserver = collector.clone();
    let cfg = pipeline_config(ClockModel::shared_kernel(), None, 300);
    let mut pipe = Pipeline::new(topo.clone(), cfg, io::sink());
    pipe.set_observer(Box::new(observer));
    let mut t = 1_000 * MS;
    for id in 0..delivered {
        for h in vxlan_path(icmp(id), t) {
            pipe.push_hop(h);
        }
        t += 10 * MS;
    }
    for id in [100, 101] {
        for h in &vxlan_path(icmp(id), t)[..2] {
            pipe.push_hop(h.clone());
        }
        pipe.push_drop(&drop_of(icmp(id), NS1, VXLAN, t + 16_395), &Names);
        t += 10 * MS;
    }
    for h in &vxlan_path(icmp(200), t)[..3] {
        pipe.push_hop(h.clone());
    }
    pipe.tick(t + 10_000 * MS).expect("tick");
    pipe.close_all().expect("close");
    pipe.write_stats(None).expect("stats");
    pipe.write_summary(LossCounters::default())
        .expect("summary");
    let mut header = recording::tests::header();
    header.topology = topo;
    header.machine.hostname = "host-a".into();
    header.machine.boot_id = "b00t".into();
    let done = Replayed {
        ends: vec![("a.trec".into(), ReplayEnd::Complete)],
        traces: Vec::new(),
        warnings: Vec::new(),
        opened: vec![Opened {
            name: "a.trec".into(),
            node_names: header
                .topology
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .collect(),
            node_keys: header.topology.nodes.iter().map(|n| n.netns).collect(),
            header,
        }],
        reference_wall_minus_mono: Some(1_796_000_000_000_000_000),
    };
    let c = std::mem::take(&mut *collector.lock().expect("lock"));
    build(c, "Incident report".into(), &done)
}

#[test]
fn a_drop_is_a_finding_with_its_evidence_and_timeline() {
    let r = fixture_report(fixtures::topology(), 3);
    assert_eq!(
        r.outcomes,
        Outcomes {
            traces: 6,
            delivered: 3,
            dropped: 2,
            lost: 1,
            incomplete: 0
        }
    );
    assert_eq!(r.findings.len(), 2, "{:#?}", r.findings);
    let f = &r.findings[0];
    assert_eq!((f.verdict.as_str(), f.count), ("no-vxlan-fdb", 2));
    assert_eq!(
        f.place,
        Place::KernelDrop {
            node: "node1".into(),
            ifname: "vxlan.calico".into(),
            reason: "NO_TX_TARGET".into(),
            function: "vxlan_xmit+0xdab".into(),
            len: 98,
            encap: None,
        }
    );
    assert!(f.explanation.contains("FDB"), "{}", f.explanation);
    assert_eq!(f.flows, ["ICMP 10.244.0.1 > 10.244.4.1"]);
    // The first packet's time on the wall clock: reference monotonic + realtime offset.
    assert_eq!(
        f.first.wall.as_deref(),
        Some("2026-11-30 00:53:21.030000 UTC")
    );
    assert!(f.last.mono_ns > f.first.mono_ns);
    assert_eq!(f.packets.len(), 2);
    // Hop by hop: one lane, two hops, then the drop 16.395 µs after the first hop.
    let tl = &f.examples[0];
    assert_eq!(tl.lanes, ["node1"]);
    let what: Vec<(&str, EventKind, u64)> = tl
        .events
        .iter()
        .map(|e| (e.ifname.as_str(), e.kind, e.t_ns))
        .collect();
    assert_eq!(
        what,
        [
            ("cali3f2a9b0c1d4", EventKind::Ingress, 0),
            ("vxlan.calico", EventKind::Egress, 8_412),
            ("vxlan.calico", EventKind::Drop, 16_395),
        ]
    );
    assert_eq!(tl.events[2].detail, "NO_TX_TARGET in vxlan_xmit+0xdab");
    // The lost packet: its evidence is an absence after node1's uplink.
    let lost = &r.findings[1];
    assert_eq!(lost.outcome, Outcome::Lost);
    assert_eq!(
        lost.place,
        Place::LostAfter {
            node: "node1".into(),
            ifname: "eth0".into(),
            dir: "egress"
        }
    );
    assert!(lost.examples[0].events[2]
        .detail
        .starts_with("vxlan vni 4096"));
    // The flows: the failing one first.
    assert_eq!(r.flows.len(), 1);
    assert_eq!((r.flows[0].dropped, r.flows[0].lost), (2, 1));
}

#[test]
fn latency_environment_and_completeness_come_from_the_run() {
    let r = fixture_report(fixtures::topology(), 4);
    // The pipeline's histograms: 4 delivered packets and the lost one, node-tx 11.920 µs each.
    let node_tx = r
        .latency
        .total
        .rows
        .iter()
        .find(|row| row.name == "node-tx")
        .expect("node-tx");
    assert_eq!((node_tx.summary.count, node_tx.summary.p50_ns), (5, 11_920));
    assert_eq!(node_tx.bins.iter().map(|b| b.count).sum::<u64>(), 5);
    let total = r.latency.total.rows.iter().find(|r| r.name == "total");
    assert_eq!(total.map(|t| t.summary.max_ns), Some(31_250));
    assert!(r.latency.clock.contains("exact"), "{}", r.latency.clock);
    assert_eq!(r.latency.flows.len(), 1);
    assert!(r.latency.flows[0].failing);
    // Environment from the recording's header.
    let env = &r.environment;
    assert_eq!(env.recordings[0].host, "host-a");
    assert_eq!(env.recordings[0].boot_id, "b00t");
    let node1 = &env.recordings[0].nodes[0];
    assert_eq!(node1.name, "node1");
    let vx = node1
        .interfaces
        .iter()
        .find(|i| i.is_tunnel())
        .expect("tunnel");
    assert_eq!((vx.name.as_str(), vx.mtu), ("vxlan.calico", Some(1450)));
    assert!(matches!(env.clocks, Clocks::Single));
    assert!(env.audit.is_none());
    // Complete: nothing lost by the tracer, one complete recording.
    assert!(r.completeness.complete(), "{:?}", r.completeness.missing);
    assert_eq!(r.completeness.drops_seen, 2);
}

#[test]
fn the_page_escapes_what_recordings_say_and_references_nothing_outside() {
    let mut topo = fixtures::topology();
    let evil = "cali<script>alert(1)</script>";
    let node1 = &mut topo.nodes[0];
    node1.name = "node\"1&<b>|*x*".into();
    for l in &mut node1.links {
        if l.ifindex == CALI_A {
            l.name = evil.into();
        }
    }
    for i in &mut node1.ifaces {
        if i.ifindex == CALI_A {
            i.name = evil.into();
        }
    }
    let mut r = fixture_report(topo, 2);
    r.environment.audit = Some(Audit {
        nodes: vec!["node1".into(), "<node2>".into()],
        findings: vec![AuditFinding {
            severity: "error",
            code: "no-vtep-fdb",
            nodes: vec!["node1".into(), "<node2>".into()],
            object: "fdb".into(),
            found: "none".into(),
            expected: "ee:ee".into(),
            fix: "restart <felix>".into(),
        }],
    });
    let page = html::render(&r);
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..40]);
    assert!(!page.contains("<script"), "an unescaped script tag");
    assert!(!page.contains("<b>"), "an unescaped tag from a node name");
    assert!(page.contains("cali&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("restart &lt;felix&gt;"));
    // The browser refuses any fetch: a Content-Security-Policy in the head.
    let csp = "<meta http-equiv=\"Content-Security-Policy\" \
               content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">";
    let head = &page[..page.find("</head>").expect("a head")];
    assert!(head.contains(csp), "no CSP in {head}");
    // Nothing fetched: no link, no source, no URL but the SVG namespace.
    for needle in ["<link", "src=", "url(", "@import", "<iframe", "<object"] {
        assert!(!page.contains(needle), "{needle} in the page");
    }
    let urls = page.matches("http://").count() + page.matches("https://").count();
    let ns = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(urls, ns, "a URL other than the SVG namespace");
    // Charts are inline SVG: the timelines and the histograms.
    assert!(ns >= 4, "{ns} charts");
    let md = markdown::render(&r);
    assert!(md.contains("cali\\<script\\>alert(1)\\</script\\>"));
    assert!(md.contains("node\"1\\&\\<b\\>\\|\\*x\\*"), "{md}");
    // No raw HTML: every `<` is escaped.
    assert!(md.match_indices('<').all(|(i, _)| md[..i].ends_with('\\')));
    // A table row keeps its four cells: the escaped name does not split it.
    let row = md
        .lines()
        .find(|l| l.starts_with("| cali\\<script"))
        .expect("the interface's row");
    assert_eq!(
        row.matches('|').count() - row.matches("\\|").count(),
        5,
        "{row}"
    );
}

#[test]
fn both_formats_carry_the_verdict_the_timeline_and_the_numbers() {
    let r = fixture_report(fixtures::topology(), 3);
    let page = html::render(&r);
    let md = markdown::render(&r);
    for (text, escaped) in [(&page, false), (&md, true)] {
        let (reason, function) = if escaped {
            ("NO\\_TX\\_TARGET", "vxlan\\_xmit+0xdab")
        } else {
            ("NO_TX_TARGET", "vxlan_xmit+0xdab")
        };
        for needle in [
            "no-vxlan-fdb",
            reason,
            function,
            "Evidence complete",
            "node-tx",
            "2026-11-30 00:53:21.030000 UTC",
            "+16.395 µs",
            "Audit of the nodes' state",
        ] {
            assert!(text.contains(needle), "{needle} missing");
        }
    }
    // Findings first, then the evidence, the timeline, latency, flows, environment.
    let order = [
        "1. What failed",
        "2. Is the evidence complete?",
        "3. Timeline",
        "4. Latency",
        "5. Flows",
        "6. Environment",
    ];
    for text in [&page, &md] {
        let at: Vec<usize> = order
            .iter()
            .map(|h| text.find(h).unwrap_or_else(|| panic!("{h} missing")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    }
    // Markdown: the timeline is a table with one column per node.
    assert!(
        md.contains("| time | node1 | detail |"),
        "{}",
        md.lines()
            .filter(|l| l.contains("time"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(md.contains(
        "| +16.395 µs | **DROP** vxlan.calico | NO\\_TX\\_TARGET in vxlan\\_xmit+0xdab |"
    ));
}

#[test]
fn merged_clocks_are_shown_with_their_bounds() {
    let mut r = fixture_report(fixtures::topology(), 1);
    let rec = |name: &str, basis, offset_ns, err| RecordingClockReport {
        name: name.into(),
        host: format!("{name}-host"),
        boot_id: "id".into(),
        basis,
        offset_ns,
        offset_err_ns: err,
    };
    r.environment.clocks = Clocks::Merged(ClockReport {
        recordings: vec![
            rec("n1.trec", "reference", 0.0, Some(0.0)),
            rec("n2.trec", "estimated", 5_123_456_789.0, Some(212_000.0)),
        ],
        pairs: vec![PairClockReport {
            a: 0,
            b: 1,
            a_to_b: 40,
            b_to_a: 38,
            fit: "two-sided",
            offset_ns: Some(5_123_456_789.0),
            offset_err_ns: Some(212_000.0),
            outliers: 1,
            why: None,
        }],
        matched: 78,
        ambiguous: 2,
    });
    let page = html::render(&r);
    let md = markdown::render(&r);
    for text in [&page, &md] {
        assert!(text.contains("5.123 s"), "offset");
        assert!(text.contains("±212.000 µs"), "bound");
        assert!(text.contains("78 packets matched"));
    }
    assert!(page.contains("two-sided"));
}

// ---- Recordings cut short or damaged ----

/// A drop of packet `n` (as `packet_records` builds it) on node 2's pod veth.
fn drop_record(n: u64, ts: u64) -> Vec<u8> {
    let mut recs = Vec::new();
    packet_records(n, ts, &mut recs);
    // SAFETY: HopEvent is #[repr(C)] plain data; any bit pattern read back is valid.
    let hop: HopEvent = unsafe { std::ptr::read_unaligned(recs[5].as_ptr().cast()) };
    let ev = DropEvent {
        header: EventHeader {
            kind: EVENT_DROP,
            len: size_of::<DropEvent>() as u16,
            ts_ns: ts + 10_000,
            ..hop.header
        },
        body: Drop {
            location: 0xffff_ffff_8123_4567,
            reason: 5,
            skb_len: 1414,
            pkt: hop.body.pkt,
            ..Drop::default()
        },
    };
    // SAFETY: DropEvent is #[repr(C)] plain data without implicit padding.
    let bytes: [u8; size_of::<DropEvent>()] = unsafe { std::mem::transmute(ev) };
    bytes.to_vec()
}

/// A recording of 200 TCP packets over VXLAN, packet 3 dropped by a firewall on node 2.
fn recording() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &recording::tests::header()).expect("header");
    let mut recs = Vec::new();
    for batch in 0..20u64 {
        recs.clear();
        for p in batch * 10..(batch + 1) * 10 {
            packet_records(p, 1_000 * MS + p * MS, &mut recs);
        }
        for r in &recs {
            let node = u16::from(r[16..20] == 4_026_532_002u32.to_ne_bytes());
            w.record(node, r).expect("record");
        }
        if batch == 0 {
            w.reason(5, "NETFILTER_DROP").expect("reason");
            w.location(0xffff_ffff_8123_4567, "nft_do_chain+0x46f")
                .expect("location");
            w.record(SOURCE_HOOKS, &drop_record(3, 1_003 * MS))
                .expect("drop");
        }
        w.tick(1_000 * MS + (batch + 1) * 10 * MS).expect("tick");
    }
    w.finish(&Trailer::default()).expect("finish")
}

fn report_of_bytes(bytes: Vec<u8>) -> Report {
    let cfg = pipeline_config(ClockModel::shared_kernel(), None, 300);
    let inputs = vec![Input::Bytes("node.trec".into(), bytes)];
    report_of(inputs, cfg, ReplayOptions::default(), "t".into())
        .expect("report")
        .0
}

#[test]
fn a_whole_recording_gives_a_complete_report() {
    let r = report_of_bytes(recording());
    assert_eq!(r.inputs[0].end, InputEnd::Complete);
    assert!(r.completeness.complete(), "{:?}", r.completeness.missing);
    assert_eq!((r.outcomes.traces, r.outcomes.dropped), (200, 1));
    assert_eq!(r.findings[0].verdict, "firewall-drop");
}

#[test]
fn the_recorded_node_state_is_audited_and_its_routes_shown() {
    let mut state = NodeState {
        node: "node1".into(),
        routes: vec![RouteEntry {
            table: 254,
            kind: RouteType::Blackhole,
            dst: "10.244.0.0/26".parse().expect("net"),
            gateway: None,
            oif: None,
            dev: String::new(),
            onlink: false,
            metric: 0,
            proto: "static".into(),
            prefsrc: None,
        }],
        // A tunnel makes it a Calico node, which the node checks concern.
        links: vec![LinkState {
            ifindex: 3,
            name: "vxlan.calico".into(),
            kind: "vxlan".into(),
            mtu: 1450,
            up: true,
            carrier: true,
            oper: "up".into(),
            vxlan: Some(Vxlan {
                vni: Some(4096),
                port: Some(4789),
                ..Vxlan::default()
            }),
            ..LinkState::default()
        }],
        ..NodeState::default()
    };
    state
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "0".into());
    let expected: Vec<&str> = crate::audit::audit(std::slice::from_ref(&state))
        .iter()
        .map(|f| f.code)
        .collect();
    assert!(expected.contains(&"ip-forward-off"), "{expected:?}");
    let mut w = Writer::new(Vec::new(), &recording::tests::header()).expect("header");
    w.state(0, &state).expect("state");
    let mut recs = Vec::new();
    packet_records(0, 1_000 * MS, &mut recs);
    for r in &recs {
        let node = u16::from(r[16..20] == 4_026_532_002u32.to_ne_bytes());
        w.record(node, r).expect("record");
    }
    w.tick(1_010 * MS).expect("tick");
    let r = report_of_bytes(w.finish(&Trailer::default()).expect("finish"));
    let audit = r.environment.audit.as_ref().expect("an audit");
    assert_eq!(audit.nodes, ["node1"]);
    let codes: Vec<&str> = audit.findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, expected);
    // node1's routes come from its state (every table, every type); node2 has none recorded.
    let nodes = &r.environment.recordings[0].nodes;
    assert!(nodes[0].routes_all_tables);
    assert_eq!(nodes[0].routes, ["blackhole 10.244.0.0/26"]);
    assert!(!nodes[1].routes_all_tables);
    let page = html::render(&r);
    assert!(page.contains("ip-forward-off") && page.contains("Routes of every table"));
    assert!(markdown::render(&r).contains("ip-forward-off"));
    // Without states: the section says the audit is not available.
    let none = report_of_bytes(recording());
    assert!(none.environment.audit.is_none());
    assert!(html::render(&none).contains("carry no node state"));
}

#[test]
fn a_truncated_recording_says_what_is_missing_and_renders_the_rest() {
    let mut bytes = recording();
    let whole = bytes.len();
    bytes.truncate(whole / 2 + 3);
    let r = report_of_bytes(bytes);
    assert_eq!(r.inputs[0].end, InputEnd::Truncated);
    assert!(!r.completeness.complete());
    let m = &r.completeness.missing[0];
    assert!(
        m.starts_with("node.trec: the recording ends in the middle of a frame at byte"),
        "{m}"
    );
    assert!(m.contains("loss counters are unknown"), "{m}");
    // What precedes the cut: the firewall drop (batch 0) and about half the packets.
    assert_eq!(r.findings[0].verdict, "firewall-drop");
    assert!((80..120).contains(&r.outcomes.traces), "{:?}", r.outcomes);
    for text in [html::render(&r), markdown::render(&r)] {
        assert!(text.contains("Incomplete evidence"));
        assert!(text.contains("truncated"));
        assert!(text.contains("firewall-drop"));
    }
}

#[test]
fn a_damaged_recording_says_where_and_renders_what_precedes() {
    let mut bytes = recording();
    // Find the 1000th frame and make its kind unknown.
    let header_len = u32::from_le_bytes(bytes[12..16].try_into().expect("4")) as usize;
    let mut at = 16 + header_len;
    for _ in 0..1000 {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4")) as usize;
        at += 8 + len;
    }
    bytes[at] = 0xee;
    let r = report_of_bytes(bytes);
    assert_eq!(r.inputs[0].end, InputEnd::Damaged);
    let m = &r.completeness.missing[0];
    assert!(m.contains(&format!("corrupt frame at byte {at}")), "{m}");
    assert!(
        r.outcomes.traces > 100 && r.outcomes.traces < 200,
        "{:?}",
        r.outcomes
    );
    assert!(html::render(&r).contains("Incomplete evidence"));
}

#[test]
fn tracer_losses_are_stated_apart_from_kernel_drops() {
    let mut w = Writer::new(Vec::new(), &recording::tests::header()).expect("header");
    let mut recs = Vec::new();
    for p in 0..3 {
        packet_records(p, 1_000 * MS + p * MS, &mut recs);
    }
    // Packet 2 is seen on node 1 only, and the tracer lost events meanwhile.
    for r in &recs[..15] {
        let node = u16::from(r[16..20] == 4_026_532_002u32.to_ne_bytes());
        w.record(node, r).expect("record");
    }
    w.loss(1_000 * MS, 1_010 * MS).expect("loss");
    w.tick(1_010 * MS).expect("tick");
    let trailer = Trailer {
        loss: LossCounters {
            ringbuf_full: 42,
            ..LossCounters::default()
        },
        ..Trailer::default()
    };
    let r = report_of_bytes(w.finish(&trailer).expect("finish"));
    assert!(!r.completeness.complete());
    assert!(
        r.completeness.missing[0].starts_with("the tracer lost 42 events"),
        "{:?}",
        r.completeness.missing
    );
    assert_eq!(r.completeness.traces_with_tracer_loss, 1);
    // Not a failure: an incomplete packet, last seen on node 1, no verdict.
    assert_eq!((r.outcomes.failed(), r.outcomes.incomplete), (0, 1));
    assert!(r.incomplete[0].tracer_loss);
    assert_eq!(r.completeness.drops_seen, 0);
    let page = html::render(&r);
    assert!(page.contains("The tracer's own losses (gaps in the evidence, not network drops)"));
}

#[test]
fn histogram_bins_and_wall_clock() {
    let b = bins(&[(1_000, 2), (10_000, 3), (100_000, 5)]);
    assert_eq!(b.len(), 24);
    assert_eq!(b.iter().map(|x| x.count).sum::<u64>(), 10);
    assert_eq!((b[0].count, b[23].count), (2, 5));
    assert!((b[0].lo_ns - 1_000.0).abs() < 1e-6 && (b[23].hi_ns - 100_000.0).abs() < 1e-3);
    let one = bins(&[(5_000, 7)]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].count, 7);
    assert!(bins(&[]).is_empty());
    assert_eq!(wall_time(0, 0), "1970-01-01 00:00:00 UTC");
    assert_eq!(
        wall_time(951_782_400 * 1_000_000_000, 3),
        "2000-02-29 00:00:00.000 UTC"
    );
    assert_eq!(
        wall_time(4_107_542_400 * 1_000_000_000 + 123_456_789, 6),
        "2100-03-01 00:00:00.123456 UTC"
    );
    assert_eq!(duration(999), "999 ns");
    assert_eq!(duration(16_395), "16.395 µs");
    assert_eq!(duration(3_000_000_000), "3.000 s");
    assert_eq!(signed(-1_500), "-1.500 µs");
}

#[test]
fn the_sequence_diagram_draws_every_lane_and_event() {
    let r = fixture_report(fixtures::topology(), 1);
    let lost = &r.findings[1].examples[0];
    let svg = svg::sequence(lost);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("node1"));
    assert!(svg.contains("eth0 egress"));
    assert!(svg.contains("not seen again"));
    // A packet across both nodes has two lanes.
    let mut t = lost.clone();
    t.lanes.push("node2".into());
    t.events.push(TimelineEvent {
        lane: 1,
        kind: EventKind::Ingress,
        ifname: "eth0".into(),
        t_ns: 19_001,
        err_ns: Some(250),
        detail: String::new(),
    });
    let svg = svg::sequence(&t);
    assert!(svg.contains("node2") && svg.contains("±250 ns"));
}

#[test]
fn output_format_follows_the_extension() {
    use std::path::Path;
    assert_eq!(Format::of(None, Path::new("r.md")), Format::Md);
    assert_eq!(Format::of(None, Path::new("r.html")), Format::Html);
    assert_eq!(Format::of(None, Path::new("-")), Format::Html);
    assert_eq!(
        Format::of(Some(Format::Md), Path::new("r.html")),
        Format::Md
    );
}
