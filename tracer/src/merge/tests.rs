//! Replay prints byte for byte what the live pipeline printed for the same records, and
//! recordings of several machines merge into traces across them.

use tracer_common::{Drop, DropEvent, EventHeader, HopEvent, Ipv4Packet, EVENT_DROP};

use super::*;
use crate::{
    correlate::CorrelateConfig,
    machine::Machine,
    names::DropNames,
    pipeline_bench::{packet_records, topology},
    recording::{
        tests::{header, loss},
        Writer,
    },
    render::Output,
};

struct Names;

impl DropNames for Names {
    fn reason_name(&self, value: u32) -> String {
        format!("REASON_{value}")
    }

    fn location(&self, addr: u64) -> String {
        format!("fn_{addr:x}+0x10")
    }
}

/// A drop of packet `n` (as built by `packet_records`) on node 2's pod veth.
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
            reason: 77,
            skb_len: 1414,
            pkt: Ipv4Packet { ..hop.body.pkt },
            ..Drop::default()
        },
    };
    // SAFETY: DropEvent is #[repr(C)] plain data without implicit padding.
    let bytes: [u8; size_of::<DropEvent>()] = unsafe { std::mem::transmute(ev) };
    bytes.to_vec()
}

fn config(output: Output, filter: Option<&str>) -> PipelineConfig {
    PipelineConfig {
        output,
        limit: None,
        stats: true,
        quiet: false,
        collect: false,
        kernel_agg: false,
        correlate: CorrelateConfig::default(),
        clock: ClockModel::shared_kernel(),
        filter: filter.map(|f| {
            crate::filter::Filter::parse(f)
                .expect("filter")
                .compile()
                .expect("compile")
        }),
    }
}

/// Runs the same records through a live pipeline and through a recording; returns both
/// outputs.
fn live_and_replayed(output: Output, filter: Option<&str>) -> (String, String, ReplayEnd) {
    let mut live_out = Vec::new();
    let mut live = Pipeline::new(topology(), config(output, filter), &mut live_out);
    let mut w = Writer::new(Vec::new(), &header()).expect("header");
    let mut recs = Vec::new();
    for batch in 0..20u64 {
        recs.clear();
        for p in batch * 50..(batch + 1) * 50 {
            packet_records(p, 1_000_000_000 + p * 1_000_000, &mut recs);
        }
        for r in &recs {
            // Node 2's records come from its own ring buffer.
            let node = if r[16..20] == 4_026_532_002u32.to_ne_bytes() {
                1
            } else {
                0
            };
            live.node_record("node", r);
            w.record(node, r).expect("record");
        }
        if batch == 7 {
            let d = drop_record(7 * 50, 1_000_000_000 + 7 * 50 * 1_000_000);
            live.hook_record(&d, &Names);
            w.reason(77, &Names.reason_name(77)).expect("reason");
            w.location(
                0xffff_ffff_8123_4567,
                &Names.location(0xffff_ffff_8123_4567),
            )
            .expect("location");
            w.record(SOURCE_HOOKS, &d).expect("record");
        }
        let now = 1_000_000_000 + (batch + 1) * 50 * 1_000_000;
        live.tick(now).expect("tick");
        w.tick(now).expect("tick");
    }
    live.close_all().expect("close");
    live.write_stats(None).expect("stats");
    live.write_summary(loss()).expect("summary");
    let file = w
        .finish(&Trailer {
            loss: loss(),
            records: 0,
            ended_unix_ms: 0,
        })
        .expect("finish");
    let mut replayed = Vec::new();
    let done = replay(
        vec![Input::Bytes("test.rec".into(), file)],
        config(output, filter),
        &mut replayed,
        &ReplayOptions::default(),
    )
    .expect("replay");
    let end = done.ends.into_iter().next().expect("one end").1;
    (
        String::from_utf8(live_out).expect("utf8"),
        String::from_utf8(replayed).expect("utf8"),
        end,
    )
}

#[test]
fn replay_prints_what_the_live_pipeline_printed() {
    for output in [Output::Text, Output::Json] {
        let (live, replayed, end) = live_and_replayed(output, None);
        assert!(matches!(end, ReplayEnd::Complete), "{end:?}");
        assert!(live.contains("REASON_77"), "the drop is in the live output");
        assert!(live.contains("fn_ffffffff81234567+0x10"));
        assert!(live.lines().count() > 1000, "{}", &live[..500]);
        assert_eq!(live, replayed, "{output:?}");
    }
}

#[test]
fn replay_filter_keeps_only_matching_packets() {
    let (live, replayed, _) = live_and_replayed(Output::Json, Some("port 40007"));
    assert_eq!(live, replayed);
    let traces: Vec<&str> = replayed
        .lines()
        .filter(|l| l.starts_with("{\"packet\""))
        .collect();
    assert_eq!(
        traces.len(),
        1,
        "one packet has source port 40007: {traces:?}"
    );
    assert!(traces[0].contains("40007"));
}

// ---- Several machines ----

const NS: [u32; 2] = [4_026_532_001, 4_026_532_002];
const MS: u64 = 1_000_000;
/// Machine B's clock: `θ(t) = clock_B − clock_A`.
const THETA0_NS: f64 = 5_123_456_789.0;
const DRIFT_NS_PER_S: f64 = 30_000.0;

fn theta(true_ns: u64) -> f64 {
    THETA0_NS + DRIFT_NS_PER_S * (true_ns as f64 / 1e9 - 1.0)
}

/// One tc hop record: `(node, ifindex, dir)` at `ts`, optionally VXLAN-encapsulated.
fn hop_bytes(node: usize, ifindex: u32, dir: u8, ts: u64, pkt: Ipv4Packet, vxlan: bool) -> Vec<u8> {
    let encap = if vxlan {
        let (a, b) = if node == 0 && dir == tracer_common::DIR_EGRESS
            || node == 1 && dir == tracer_common::DIR_INGRESS
        {
            ([10, 10, 0, 1], [10, 10, 0, 2])
        } else {
            ([10, 10, 0, 2], [10, 10, 0, 1])
        };
        tracer_common::Encap {
            kind: tracer_common::ENCAP_VXLAN,
            vni: 4096,
            saddr: if pkt.saddr[2] == 0 { a } else { b },
            daddr: if pkt.saddr[2] == 0 { b } else { a },
            sport: 40000 + pkt.ip_id % 100,
            dport: 4789,
            ..tracer_common::Encap::default()
        }
    } else {
        tracer_common::Encap::default()
    };
    let ev = HopEvent {
        header: EventHeader {
            kind: tracer_common::EVENT_HOP,
            len: size_of::<HopEvent>() as u16,
            cpu: 0,
            ts_ns: ts,
            netns: NS[node],
            ifindex,
        },
        body: tracer_common::Hop {
            dir,
            skb_len: 98,
            encap,
            pkt,
            ..tracer_common::Hop::default()
        },
    };
    // SAFETY: HopEvent is #[repr(C)] plain data without implicit padding.
    let bytes: [u8; size_of::<HopEvent>()] = unsafe { std::mem::transmute(ev) };
    bytes.to_vec()
}

/// The six hops of an echo request (pod A on node1 -> pod C on node2) or its reply, with a
/// wire delay of `wire_ns`: `(node, record, true time)`.
fn exchange(n: u16, t: u64, wire_ns: u64, reply: bool) -> Vec<(usize, Vec<u8>, u64)> {
    use tracer_common::{DIR_EGRESS as E, DIR_INGRESS as I};
    let (src, dst, from, to) = if reply {
        ([10, 244, 4, 1], [10, 244, 0, 1], 1, 0)
    } else {
        ([10, 244, 0, 1], [10, 244, 4, 1], 0, 1)
    };
    let pkt = Ipv4Packet {
        saddr: src,
        daddr: dst,
        proto: 1,
        ip_id: n.wrapping_mul(2) + u16::from(reply),
        icmp_type: if reply { 0 } else { 8 },
        icmp_id: 77,
        icmp_seq: n,
        ttl: 64,
        tot_len: 84,
        ..Ipv4Packet::default()
    };
    let steps = [
        (from, 4, I, 0, false),
        (from, 3, E, 5_000, false),
        (from, 2, E, 8_000, true),
        (to, 2, I, 8_000 + wire_ns, true),
        (to, 3, I, 13_000 + wire_ns, false),
        (to, 4, E, 16_000 + wire_ns, false),
    ];
    steps
        .into_iter()
        .map(|(node, ifindex, dir, dt, vxlan)| {
            (
                node,
                hop_bytes(node, ifindex, dir, t + dt, pkt, vxlan),
                t + dt,
            )
        })
        .collect()
}

/// A recording of `nodes` (indexes into the two-node topology) on machine `boot`, whose clock
/// reads `clock(true time)`, with every record of `hops` on those nodes and a drain mark every
/// 50 ms.
fn recording(
    nodes: &[usize],
    boot: &str,
    hops: &[(usize, Vec<u8>, u64)],
    clock: impl Fn(u64) -> u64,
    wall_error_ns: i128,
) -> Vec<u8> {
    let mut h = header();
    h.machine = Machine {
        hostname: format!("host-{boot}"),
        boot_id: boot.into(),
        ..Machine::default()
    };
    h.topology
        .nodes
        .retain(|n| nodes.iter().any(|&i| NS[i] == n.netns));
    let mut w = Writer::new(Vec::new(), &h).expect("header");
    // The wall clock is true time + 1.7e18 (+ this machine's NTP error).
    let wall = |t: u64| 1_700_000_000_000_000_000i128 + i128::from(t) + wall_error_ns;
    let sample = |t: u64| crate::machine::ClockSample {
        mono_ns: clock(t),
        realtime_ns: wall(t) as u64,
        tai_ns: 0,
        err_ns: 100,
    };
    w.clock(&sample(hops[0].2)).expect("clock");
    let mut next_tick = hops[0].2 + 50 * MS;
    for (node, rec, t) in hops {
        while *t >= next_tick {
            w.tick(clock(next_tick)).expect("tick");
            next_tick += 50 * MS;
        }
        if let Some(i) = nodes.iter().position(|n| n == node) {
            // Rewrite the timestamp to this machine's clock.
            let mut rec = rec.clone();
            rec[8..16].copy_from_slice(&clock(*t).to_ne_bytes());
            w.record(i as u16, &rec).expect("record");
        }
    }
    w.tick(clock(next_tick)).expect("tick");
    w.clock(&sample(next_tick)).expect("clock");
    w.finish(&Trailer::default()).expect("finish")
}

/// 400 echo requests and replies, 10 ms apart, wire delays of 20..80 µs, in time order.
fn ping_traffic() -> Vec<(usize, Vec<u8>, u64)> {
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut hops = Vec::new();
    for n in 0..400u16 {
        let t = 1_000_000_000 + u64::from(n) * 10 * MS;
        hops.extend(exchange(n, t, 20_000 + rnd() % 60_000, false));
        hops.extend(exchange(n, t + 2 * MS, 20_000 + rnd() % 60_000, true));
    }
    hops.sort_by_key(|h| h.2);
    hops
}

fn json_config() -> PipelineConfig {
    PipelineConfig {
        collect: true,
        ..config(Output::Json, None)
    }
}

/// (node, ifname, dir) of every hop, and the outcome, of one trace.
type Shape = (Vec<(String, String, &'static str)>, &'static str);

fn shapes(traces: &[Trace]) -> Vec<Shape> {
    traces
        .iter()
        .map(|t| {
            let hops = t
                .hops
                .iter()
                .map(|h| (h.node.to_string(), h.ifname.to_string(), h.dir.as_str()))
                .collect();
            (hops, t.outcome.as_str())
        })
        .collect()
}

fn lines_with(out: &[u8], key: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get(key).is_some())
        .collect()
}

#[test]
fn two_machines_merge_into_the_traces_one_kernel_would_give() {
    let hops = ping_traffic();
    // One kernel, one recorder: the truth.
    let one = recording(&[0, 1], "one", &hops, |t| t, 0);
    let mut out = Vec::new();
    let truth = replay(
        vec![Input::Bytes("one.rec".into(), one)],
        json_config(),
        &mut out,
        &ReplayOptions::default(),
    )
    .expect("replay");
    // Two machines: B's clock is seconds ahead and drifts; its wall clock is 3 ms off.
    let clock_b = |t: u64| (t as f64 + theta(t)).round() as u64;
    let a = recording(&[0], "a", &hops, |t| t, 0);
    let b = recording(&[1], "b", &hops, clock_b, 3_000_000);
    let mut out = Vec::new();
    let merged = replay(
        vec![
            Input::Bytes("a.rec".into(), a),
            Input::Bytes("b.rec".into(), b),
        ],
        json_config(),
        &mut out,
        &ReplayOptions::default(),
    )
    .expect("merge");
    assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
    assert_eq!(truth.traces.len(), 800);
    assert_eq!(shapes(&merged.traces), shapes(&truth.traces));
    assert!(merged
        .traces
        .iter()
        .all(|t| t.outcome == crate::model::Outcome::Delivered));
    // The estimate holds the truth within its bound, and the bound is tight (the fastest
    // wire delay each way is 20 µs).
    let clocks = &lines_with(&out, "clocks")[0]["clocks"];
    let rec_b = &clocks["recordings"][1];
    assert_eq!(rec_b["basis"], "estimated", "{clocks}");
    let err = rec_b["offset_err_ns"].as_f64().expect("bounded");
    let mid = 1_000_000_000 + 200 * 10 * MS;
    let miss = (rec_b["offset_ns"].as_f64().expect("offset") - theta(mid)).abs();
    assert!(
        miss <= err + 2.0,
        "truth off by {miss} ns, bound {err}: {clocks}"
    );
    assert!(err < 50_000.0, "bound {err} ns is loose: {clocks}");
    // Every wire segment is estimated, non-negative, and within its bound of the truth.
    for t in lines_with(&out, "packet") {
        let wire = t["segments"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "wire"))
            .unwrap_or_else(|| panic!("no wire segment: {t}"));
        assert_eq!(wire["clock"], "estimated", "{wire}");
        let ns = wire["ns"].as_i64().unwrap_or_else(|| panic!("{wire}"));
        let err = wire["offset_err_ns"].as_i64().expect("bound");
        assert!((20_000 - err..=80_000 + err).contains(&ns), "{wire}");
    }
}

#[test]
fn colliding_namespaces_and_unreadable_inputs() {
    let hops = ping_traffic();
    // Both machines trace their initial namespace: the same inode on both.
    let init = |rec: Vec<u8>| -> Vec<u8> {
        let mut r = Reader::new(std::io::Cursor::new(rec)).expect("reader");
        let mut h = r.header.clone();
        for n in &mut h.topology.nodes {
            n.netns = 0xF000_0000;
        }
        let mut w = Writer::new(Vec::new(), &h).expect("header");
        while let Some(f) = r.next_frame().expect("frame") {
            match f {
                Frame::Record { source, data } => {
                    let mut d = data.to_vec();
                    d[16..20].copy_from_slice(&0xF000_0000u32.to_ne_bytes());
                    w.record(source, &d).expect("record");
                }
                Frame::Tick { now_ns } => w.tick(now_ns).expect("tick"),
                Frame::Clock(c) => w.clock(&c).expect("clock"),
                Frame::End(t) => return w.finish(&t).expect("finish"),
                _ => {}
            }
        }
        unreachable!("the recording has an end frame")
    };
    let a = init(recording(&[0], "a", &hops, |t| t, 0));
    let b = init(recording(&[1], "b", &hops, |t| t + 7_000_000_000, 0));
    let mut out = Vec::new();
    let merged = replay(
        vec![
            Input::Bytes("a.rec".into(), a),
            Input::Bytes("garbage.rec".into(), b"not a recording at all".to_vec()),
            Input::Bytes("b.rec".into(), b),
        ],
        json_config(),
        &mut out,
        &ReplayOptions::default(),
    )
    .expect("merge");
    let garbage = merged.ends.iter().find(|(n, _)| n == "garbage.rec");
    assert!(
        matches!(garbage, Some((_, ReplayEnd::Unreadable(_)))),
        "{:?}",
        merged.ends
    );
    // The two machines' hops stay apart: six hops per trace, three on each.
    assert_eq!(merged.traces.len(), 800);
    for t in &merged.traces {
        assert_eq!(t.hops.len(), 6, "{t:?}");
        let nodes: std::collections::BTreeSet<_> = t.hops.iter().map(|h| h.netns).collect();
        assert_eq!(nodes.len(), 2, "{t:?}");
    }
}

#[test]
fn one_machine_recorded_twice_counts_each_hop_once() {
    let hops = ping_traffic();
    let one = recording(&[0, 1], "same", &hops, |t| t, 0);
    let mut out = Vec::new();
    let merged = replay(
        vec![
            Input::Bytes("x.rec".into(), one.clone()),
            Input::Bytes("y.rec".into(), one),
        ],
        json_config(),
        &mut out,
        &ReplayOptions::default(),
    )
    .expect("merge");
    assert_eq!(merged.warnings.len(), 1, "{:?}", merged.warnings);
    assert!(merged.warnings[0].contains("same namespaces"));
    assert_eq!(merged.traces.len(), 800);
    assert!(merged.traces.iter().all(|t| t.hops.len() == 6));
}

#[test]
fn recordings_that_never_meet_are_placed_by_their_wall_clocks_and_say_so() {
    let hops = ping_traffic();
    let (early, late): (Vec<_>, Vec<_>) = hops.into_iter().partition(|h| h.2 < 2_500_000_000);
    let a = recording(&[0], "a", &early, |t| t, 0);
    let b = recording(&[1], "b", &late, |t| t + 9_000_000_000, 0);
    let mut out = Vec::new();
    let merged = replay(
        vec![
            Input::Bytes("a.rec".into(), a),
            Input::Bytes("b.rec".into(), b),
        ],
        json_config(),
        &mut out,
        &ReplayOptions::default(),
    )
    .expect("merge");
    assert!(
        merged
            .warnings
            .iter()
            .any(|w| w.contains("b.rec") && w.contains("wall clocks")),
        "{:?}",
        merged.warnings
    );
    let clocks = &lines_with(&out, "clocks")[0]["clocks"];
    assert_eq!(clocks["recordings"][1]["basis"], "wall-clock", "{clocks}");
    // No latency across the two machines is invented.
    for t in lines_with(&out, "packet") {
        let segs = t["segments"].as_array().cloned().unwrap_or_default();
        assert!(segs.iter().all(|s| s["cross_node"] == false), "{t}");
    }
}
