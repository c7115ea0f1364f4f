use std::net::Ipv4Addr;

use serde_json::Value;

use super::*;
use crate::correlate::{CorrelateConfig, Correlator};
use crate::fixtures::{hop, icmp, topology, vxlan_path, CALI_A, NS1, NS2};
use crate::model::Direction::{self, Egress, Ingress};
use crate::model::{FlowKey, Outcome, PacketId, Trace, TraceHop};
use crate::topology::IfaceKind::{self, Ipip, PodVeth, Uplink, Vxlan};

use SegmentName::{Decap, Encap, NodeRx, NodeTx, SameNode, Total, Wire};

const T0: u64 = 1_000_000_000;

type Step = (u32, &'static str, IfaceKind, Direction, u64);

/// The VXLAN path of `correlate::fixtures::vxlan_path`, as steps after the first hop.
const VXLAN: [Step; 6] = [
    (NS1, "cali3f2a9b0c1d4", PodVeth, Ingress, 0),
    (NS1, "vxlan.calico", Vxlan, Egress, 8_412),
    (NS1, "eth0", Uplink, Egress, 11_920),
    (NS2, "eth0", Uplink, Ingress, 19_001),
    (NS2, "vxlan.calico", Vxlan, Ingress, 25_500),
    (NS2, "calie0e1e2e3e4f", PodVeth, Egress, 31_250),
];

/// Hops of `steps` from `t0`, node2's clock reading `skew2` ns off; in the given order.
fn hops(t0: u64, skew2: i64, steps: &[Step]) -> Vec<TraceHop> {
    steps
        .iter()
        .map(|&(netns, ifname, kind, dir, d)| {
            let skew = if netns == NS2 { skew2 } else { 0 };
            TraceHop {
                node: if netns == NS1 { "node1" } else { "node2" }.into(),
                netns,
                ifindex: 0,
                ifname: ifname.into(),
                kind: Some(kind),
                dir,
                ts_ns: t0.checked_add_signed(skew).unwrap() + d,
                len: 84,
                encap: None,
                translated: false,
                snap: None,
            }
        })
        .collect()
}

/// A trace with the given hops (in the given order) and outcome. The rest comes from the
/// correlator, so these tests build whatever fields a trace carries besides its hops.
fn trace_of(packet: PacketId, hops: Vec<TraceHop>, outcome: Outcome) -> Trace {
    let mut c = Correlator::new(topology(), CorrelateConfig::default());
    c.push(hop(packet, NS1, CALI_A, Ingress, T0));
    let mut t = c.finish().pop().expect("one hop makes one trace");
    (t.hops, t.outcome) = (hops, outcome);
    t
}

/// A trace as the correlator emits it: hops sorted by time.
fn sorted(mut hops: Vec<TraceHop>, outcome: Outcome) -> Trace {
    hops.sort_by_key(|h| h.ts_ns);
    trace_of(icmp(1), hops, outcome)
}

/// `(name, ns, from, to, cross_node)` of each segment.
fn summary(t: &Trace) -> Vec<(SegmentName, i64, usize, usize, bool)> {
    segments(t)
        .iter()
        .map(|s| (s.name, s.ns, s.from, s.to, s.cross_node))
        .collect()
}

fn names(segs: &[Segment]) -> Vec<SegmentName> {
    segs.iter().map(|s| s.name).collect()
}

#[test]
fn vxlan_path_every_segment() {
    let mut c = Correlator::new(topology(), CorrelateConfig::default());
    vxlan_path(icmp(1), T0).into_iter().for_each(|h| c.push(h));
    let t = &c.finish()[0];
    assert_eq!(
        summary(t),
        [
            (NodeTx, 11_920, 0, 2, false),
            (Encap, 3_508, 1, 2, false),
            (Wire, 7_081, 2, 3, true),
            (Decap, 6_499, 3, 4, false),
            (NodeRx, 12_249, 3, 5, false),
            (Total, 31_250, 0, 5, true),
        ]
    );
    // The same from hand-built hops, IPIP the same with tunl0.
    assert_eq!(
        summary(&sorted(hops(T0, 0, &VXLAN), Outcome::Delivered)),
        summary(t)
    );
    let mut ipip = VXLAN;
    for i in [1, 4] {
        (ipip[i].1, ipip[i].2) = ("tunl0", Ipip);
    }
    assert_eq!(
        summary(&sorted(hops(T0, 0, &ipip), Outcome::Delivered)),
        summary(t)
    );
}

#[test]
fn native_routing_has_no_encap_or_decap() {
    let steps = [VXLAN[0], VXLAN[2], VXLAN[3], VXLAN[5]];
    let t = sorted(hops(T0, 0, &steps), Outcome::Delivered);
    assert_eq!(
        summary(&t),
        [
            (NodeTx, 11_920, 0, 1, false),
            (Wire, 7_081, 1, 2, true),
            (NodeRx, 12_249, 2, 3, false),
            (Total, 31_250, 0, 3, true),
        ]
    );
}

#[test]
fn same_node_path() {
    let steps = [
        (NS1, "cali3f2a9b0c1d4", PodVeth, Ingress, 0),
        (NS1, "cali77aa00bb11c", PodVeth, Egress, 4_321),
    ];
    let t = sorted(hops(T0, 0, &steps), Outcome::Delivered);
    assert_eq!(
        summary(&t),
        [(SameNode, 4_321, 0, 1, false), (Total, 4_321, 0, 1, false)]
    );
    // Out via the uplink and back in (hairpin) is not `same-node`.
    let mut steps = steps.to_vec();
    steps.insert(1, (NS1, "eth0", Uplink, Egress, 1_000));
    let t = sorted(hops(T0, 0, &steps), Outcome::Delivered);
    assert_eq!(names(&segments(&t)), [NodeTx, Total]);
}

#[test]
fn incomplete_traces_only_have_segments_with_both_ends() {
    // node2's uplink ingress missing: no wire, no decap, no node-rx; still delivered.
    let steps: Vec<Step> = VXLAN.iter().copied().filter(|s| s.4 != 19_001).collect();
    let t = sorted(hops(T0, 0, &steps), Outcome::Delivered);
    assert_eq!(names(&segments(&t)), [NodeTx, Encap, Total]);
    // Last seen at node2's tunnel: not delivered, so no total, and no node-rx.
    let t = sorted(hops(T0, 0, &VXLAN[..5]), Outcome::Incomplete);
    assert_eq!(names(&segments(&t)), [NodeTx, Encap, Wire, Decap]);
    // Seen only on the receiving node.
    let t = sorted(hops(T0, 0, &VXLAN[3..]), Outcome::Delivered);
    assert_eq!(names(&segments(&t)), [Decap, NodeRx, Total]);
    // One hop, or none: nothing.
    assert!(segments(&sorted(hops(T0, 0, &VXLAN[5..]), Outcome::Delivered)).is_empty());
    assert!(segments(&sorted(Vec::new(), Outcome::Incomplete)).is_empty());
    // Unknown interfaces (kind None) are no endpoints.
    let mut h = hops(T0, 0, &VXLAN);
    h[2].kind = None;
    let segs = segments(&sorted(h, Outcome::Delivered));
    assert_eq!(names(&segs), [Decap, NodeRx, Total]);
}

#[test]
fn out_of_order_hops_are_paired_by_time_not_index() {
    // Any order of the hop vector gives the same segments (by hop identity and value).
    let shuffled: Vec<Step> = [4, 1, 5, 0, 3, 2].iter().map(|&i| VXLAN[i]).collect();
    let t = trace_of(icmp(1), hops(T0, 0, &shuffled), Outcome::Delivered);
    let by_hop = |t: &Trace| -> Vec<(SegmentName, i64, u64, u64)> {
        segments(t)
            .iter()
            .map(|s| (s.name, s.ns, t.hops[s.from].ts_ns, t.hops[s.to].ts_ns))
            .collect()
    };
    assert_eq!(
        by_hop(&t),
        by_hop(&sorted(hops(T0, 0, &VXLAN), Outcome::Delivered))
    );
    // An end that comes before its start on one clock is never paired: no backwards node-tx
    // (the uplink egress precedes the pod's ingress), yet the tunnel -> uplink encap stays.
    let mut steps = VXLAN;
    (steps[0].4, steps[1].4) = (11_950, 11_000);
    let t = sorted(hops(T0, 0, &steps), Outcome::Incomplete);
    assert_eq!(names(&segments(&t)), [Encap, Wire, Decap, NodeRx]);
    assert!(segments(&t).iter().all(|s| s.ns >= 0));
}

#[test]
fn skewed_clocks_keep_segments_and_sign() {
    // node2's clock 1 ms behind node1's: the correlator's order puts node2's hops first.
    let t = sorted(hops(T0, -1_000_000, &VXLAN), Outcome::Delivered);
    assert_eq!(t.hops[0].netns, NS2);
    let segs = segments(&t);
    assert_eq!(names(&segs), [NodeTx, Encap, Wire, Decap, NodeRx, Total]);
    let ns = |n: SegmentName| segs.iter().find(|s| s.name == n).unwrap().ns;
    assert_eq!(
        [NodeTx, Encap, Decap, NodeRx].map(ns),
        [11_920, 3_508, 6_499, 12_249]
    );
    // Raw (one-clock) wire delta is negative, not wrapped; total is earliest -> latest raw.
    assert_eq!(ns(Wire), 7_081 - 1_000_000);
    assert_eq!(ns(Total), 1_000_000 - 7_081);
    // Extreme timestamps saturate instead of overflowing.
    let mut h = hops(0, 0, &VXLAN[2..4]);
    h[1].ts_ns = u64::MAX;
    let t = trace_of(icmp(1), h, Outcome::Incomplete);
    assert_eq!(segments(&t)[0].ns, i64::MAX);
}

#[test]
fn per_node_clock_without_offsets_skips_cross_node_segments() {
    let t = sorted(hops(T0, -1_000_000, &VXLAN), Outcome::Delivered);
    let clock = ClockModel::new(ClockSource::PerNode);
    assert_eq!(clock, ClockModel::per_node());
    assert!(!clock.synchronized(NS1, NS2));
    assert!(clock.synchronized(NS2, NS2));
    assert_eq!(
        names(&segments_with_clock(&t, &clock)),
        [NodeTx, Encap, Decap, NodeRx]
    );
    let mut stats = LatencyStats::new(clock);
    stats.record(&t);
    stats.record(&t);
    assert_eq!(stats.skipped_unsynchronized(), 4);
    assert_eq!(stats.skipped_negative(), 0);
    assert_eq!(stats.summary(None, Wire), None);
    assert_eq!(stats.summary(None, Total), None);
    assert_eq!(stats.summary(None, NodeTx).unwrap().count, 2);
    // A same-node trace needs no offsets, even per node.
    let steps = [
        (NS2, "calie0e1e2e3e4f", PodVeth, Ingress, 0),
        (NS2, "cali00", PodVeth, Egress, 900),
    ];
    stats.record(&sorted(hops(T0, 0, &steps), Outcome::Delivered));
    assert_eq!(stats.summary(None, Total).unwrap().max_ns, 900);
    let v = stats_json(&stats);
    assert_eq!(v["stats"]["clock"], "per-node");
    assert_eq!(v["stats"]["skipped_unsynchronized"], 4);
    assert!(v["stats"]["total"]["segments"].get("wire").is_none());
}

#[test]
fn per_node_clock_with_offsets_corrects_cross_node_segments() {
    let t = sorted(hops(T0, -1_000_000, &VXLAN), Outcome::Delivered);
    let mut clock = ClockModel::per_node();
    clock.set_offset(NS1, 0);
    clock.set_offset(NS2, 1_000_000);
    assert_eq!(
        segments_with_clock(&t, &clock)
            .iter()
            .map(|s| (s.name, s.ns))
            .collect::<Vec<_>>(),
        [
            (NodeTx, 11_920),
            (Encap, 3_508),
            (Wire, 7_081),
            (Decap, 6_499),
            (NodeRx, 12_249),
            (Total, 31_250)
        ]
    );
    // The total runs from the first hop to the last one on the corrected timeline.
    let total = *segments_with_clock(&t, &clock).last().unwrap();
    assert_eq!(
        (t.hops[total.from].netns, t.hops[total.to].netns),
        (NS1, NS2)
    );
    let mut stats = LatencyStats::new(clock.clone());
    stats.record(&t);
    assert_eq!(stats.summary(None, Wire).unwrap().max_ns, 7_081);
    assert_eq!(stats.skipped_unsynchronized(), 0);
    let v = stats_json(&stats);
    assert_eq!(v["stats"]["clock"], "per-node");
    assert_eq!(v["stats"]["clock_offsets_ns"][NS2.to_string()], 1_000_000);
    // A poor estimate leaves the wire negative: skipped and counted, never wrapped.
    stats.clock_mut().set_offset(NS2, 990_000);
    stats.record(&t);
    assert_eq!(stats.skipped_negative(), 1);
    assert_eq!(stats.summary(None, Wire).unwrap().count, 1);
    assert_eq!(stats.summary(None, Total).unwrap().count, 2);
}

#[test]
fn shared_kernel_ignores_offsets_and_counts_negative_wire() {
    let mut clock = ClockModel::shared_kernel();
    clock.set_offset(NS2, 5);
    assert_eq!(clock.offset(NS2), Some(0));
    let mut stats = LatencyStats::new(clock);
    stats.record(&sorted(hops(T0, -1_000_000, &VXLAN), Outcome::Delivered));
    assert_eq!(stats.skipped_negative(), 1);
    assert_eq!(stats.skipped_unsynchronized(), 0);
    assert_eq!(stats.summary(None, Wire), None);
    assert_eq!(stats.summary(None, NodeTx).unwrap().count, 1);
    assert!(stats_json(&stats)["stats"]
        .get("clock_offsets_ns")
        .is_none());
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Log-uniform-ish delay from 100 ns to ~1 ms.
    fn delay(&mut self) -> u64 {
        100 + (self.next() % 1_000) * (1 << (self.next() % 10))
    }
}

fn packet(flow: u8) -> PacketId {
    PacketId {
        src: Ipv4Addr::new(10, 244, 0, flow),
        ..icmp(1)
    }
}

/// VXLAN traces of three flows with random delays.
fn random_traces(n: usize, seed: u64) -> Vec<Trace> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let mut steps = VXLAN;
            let mut d = 0;
            for s in &mut steps[1..] {
                d += rng.delay();
                s.4 = d;
            }
            let outcome = if i % 7 == 0 {
                Outcome::Incomplete
            } else {
                Outcome::Delivered
            };
            let hops = hops(T0 + i as u64 * 10_000_000, 0, &steps);
            trace_of(packet((i % 3) as u8 + 1), hops, outcome)
        })
        .collect()
}

fn flow(n: u8) -> FlowKey {
    packet(n).flow()
}

#[test]
fn percentiles_are_monotone_and_exact_at_the_ends() {
    let mut stats = LatencyStats::new(ClockModel::shared_kernel());
    random_traces(2_000, 42)
        .iter()
        .for_each(|t| stats.record(t));
    for f in [None, Some(flow(2))] {
        for name in [NodeTx, Encap, Wire, Decap, NodeRx, Total] {
            let s = stats.summary(f.as_ref(), name).unwrap();
            let p = [s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns, s.max_ns];
            assert!(p.windows(2).all(|w| w[0] <= w[1]), "{name:?} {p:?}");
            assert!(s.min_ns >= 100 && s.count > 0);
        }
    }
    // One sample reads back as itself, although the histogram quantizes 31 250 ns.
    let mut one = LatencyStats::new(ClockModel::shared_kernel());
    one.record(&sorted(hops(T0, 0, &VXLAN), Outcome::Delivered));
    let s: Summary = one.summary(None, Total).unwrap();
    assert_eq!(
        [s.count, s.min_ns, s.p50_ns, s.p999_ns, s.max_ns],
        [1, 31_250, 31_250, 31_250, 31_250]
    );
    // A 1..=1000 µs ramp: percentiles within the histogram's 3 significant digits.
    let mut ramp = LatencyStats::new(ClockModel::shared_kernel());
    for us in 1..=1_000u64 {
        let steps = [
            (NS1, "cali3f2a9b0c1d4", PodVeth, Ingress, 0),
            (NS1, "cali77aa00bb11c", PodVeth, Egress, us * 1_000),
        ];
        ramp.record(&sorted(hops(T0, 0, &steps), Outcome::Incomplete));
    }
    let s = ramp.summary(None, SameNode).unwrap();
    assert_eq!((s.count, s.min_ns, s.max_ns), (1_000, 1_000, 1_000_000));
    for (got, want) in [
        (s.p50_ns, 500_000),
        (s.p90_ns, 900_000),
        (s.p99_ns, 990_000),
    ] {
        assert!(got.abs_diff(want) <= want / 1_000, "{got} vs {want}");
    }
}

#[test]
fn bucketed_input_is_recorded_at_lower_bounds() {
    let mut stats = LatencyStats::new(ClockModel::shared_kernel());
    // 3 values in [2, 4) ns, 5 in [8, 16) ns, 2 in [2^20, 2^21) ns.
    let mut buckets = [0u64; 32];
    (buckets[1], buckets[3], buckets[20]) = (3, 5, 2);
    stats.record_bucketed(NodeTx, Some(flow(1)), &buckets);
    stats.record_bucketed(NodeTx, None, &buckets);
    let s = stats.summary(Some(&flow(1)), NodeTx).unwrap();
    assert_eq!(
        [s.count, s.min_ns, s.p50_ns, s.p90_ns, s.max_ns],
        [10, 2, 8, 1 << 20, 1 << 20]
    );
    assert_eq!(stats.summary(None, NodeTx).unwrap().count, 20);
    assert_eq!(stats.traces(), 0);
    // Bucketed and per-trace input of one segment mix.
    stats.record(&sorted(hops(T0, 0, &VXLAN), Outcome::Delivered));
    assert_eq!(stats.summary(None, NodeTx).unwrap().count, 21);
    // Empty input creates nothing; buckets past 60 s are held at 60 s.
    stats.record_bucketed(Decap, Some(flow(2)), &[0; 8]);
    assert_eq!(stats.flows(), [flow(1)]);
    let mut far = [0u64; 70];
    far[69] = 1;
    stats.record_bucketed(Decap, None, &far);
    assert_eq!(stats.summary(None, Decap).unwrap().max_ns, MAX_NS);
    // In-kernel wire deltas contradict per-node clocks: counted, not recorded.
    let mut per_node = LatencyStats::new(ClockModel::per_node());
    per_node.record_bucketed(Wire, None, &buckets);
    assert_eq!(per_node.skipped_unsynchronized(), 10);
    assert_eq!(per_node.summary(None, Wire), None);
}

#[test]
fn flows_beyond_the_cap_feed_the_total_only() {
    let mut stats = LatencyStats::with_max_flows(ClockModel::shared_kernel(), 1);
    for i in 1..=3u8 {
        let t = trace_of(packet(i), hops(T0, 0, &VXLAN), Outcome::Delivered);
        stats.record(&t);
    }
    assert_eq!(stats.flows(), [flow(1)]);
    assert_eq!(stats.traces_beyond_flow_limit(), 2);
    assert_eq!(stats.summary(None, Total).unwrap().count, 3);
    // The default cap.
    let mut many = LatencyStats::new(ClockModel::shared_kernel());
    for i in 0..=DEFAULT_MAX_FLOWS {
        let p = PacketId {
            ip_id: i as u16,
            sport: i as u16,
            ..packet(1)
        };
        many.record(&trace_of(p, hops(T0, 0, &VXLAN), Outcome::Delivered));
    }
    assert_eq!(many.flows().len(), DEFAULT_MAX_FLOWS);
    assert_eq!(many.traces_beyond_flow_limit(), 1);
    // A trace without segments is counted but creates no flow.
    let mut empty = LatencyStats::new(ClockModel::shared_kernel());
    empty.record(&sorted(hops(T0, 0, &VXLAN[..1]), Outcome::Incomplete));
    assert_eq!((empty.traces(), empty.flows().len()), (1, 0));
}

fn stats_json(s: &LatencyStats) -> Value {
    let mut out = Vec::new();
    write_stats_json(&mut out, s).unwrap();
    let line = String::from_utf8(out).unwrap();
    assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
    assert!(line.ends_with('\n'));
    serde_json::from_str(&line).unwrap()
}

fn two_flow_stats() -> LatencyStats {
    let mut stats = LatencyStats::new(ClockModel::shared_kernel());
    stats.record(&sorted(hops(T0, 0, &VXLAN), Outcome::Delivered));
    stats.record(&sorted(hops(T0, 1_000, &VXLAN), Outcome::Delivered));
    let mut udp = icmp(2);
    (udp.proto, udp.sport, udp.dport) = (17, 5353, 53);
    let steps = [
        (NS1, "cali3f2a9b0c1d4", PodVeth, Ingress, 0),
        (NS1, "cali77aa00bb11c", PodVeth, Egress, 1_203),
    ];
    stats.record(&trace_of(udp, hops(T0, 0, &steps), Outcome::Delivered));
    stats
}

#[test]
fn stats_as_text() {
    let mut out = Vec::new();
    write_stats_text(&mut out, &two_flow_stats()).unwrap();
    let s = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    // min and max are exact; percentiles are the histogram's (3 significant digits: 7 081 ns
    // falls in a bucket 4 ns wide, reported by its top, 7 083).
    assert_eq!(
        lines,
        [
            "latency per segment in us (clock: shared-kernel):",
            "flow ICMP 10.244.0.1 > 10.244.4.1 (2 traces)",
            "  segment    count     min     p50     p90     p99   p99.9     max",
            "  node-tx        2  11.920  11.920  11.920  11.920  11.920  11.920",
            "  encap          2   3.508   3.508   3.508   3.508   3.508   3.508",
            "  wire           2   7.081   7.083   8.081   8.081   8.081   8.081",
            "  decap          2   6.499   6.499   6.499   6.499   6.499   6.499",
            "  node-rx        2  12.249  12.249  12.249  12.249  12.249  12.249",
            "  total          2  31.250  31.263  32.250  32.250  32.250  32.250",
            "flow UDP 10.244.0.1:5353 > 10.244.4.1:53 (1 trace)",
            "  segment    count     min     p50     p90     p99   p99.9     max",
            "  same-node      1   1.203   1.203   1.203   1.203   1.203   1.203",
            "  total          1   1.203   1.203   1.203   1.203   1.203   1.203",
            "total (3 traces)",
            "  segment    count     min     p50     p90     p99   p99.9     max",
            "  node-tx        2  11.920  11.920  11.920  11.920  11.920  11.920",
            "  encap          2   3.508   3.508   3.508   3.508   3.508   3.508",
            "  wire           2   7.081   7.083   8.081   8.081   8.081   8.081",
            "  decap          2   6.499   6.499   6.499   6.499   6.499   6.499",
            "  node-rx        2  12.249  12.249  12.249  12.249  12.249  12.249",
            "  same-node      1   1.203   1.203   1.203   1.203   1.203   1.203",
            "  total          3   1.203  31.263  32.250  32.250  32.250  32.250",
            "skipped: 0 cross-node segments (clocks not synchronized), 0 negative deltas, \
             0 traces beyond the flow limit",
        ]
    );
    let mut out = Vec::new();
    write_stats_text(&mut out, &LatencyStats::new(ClockModel::per_node())).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("latency per segment in us (clock: per-node, "));
    assert!(s.contains("total (0 traces)\n  segment "));
}

#[test]
fn stats_as_json() {
    let v = stats_json(&two_flow_stats());
    let s = &v["stats"];
    assert_eq!(s["clock"], "shared-kernel");
    assert_eq!(
        (s["traces"].as_u64(), s["skipped_unsynchronized"].as_u64()),
        (Some(3), Some(0))
    );
    let total = &s["total"]["segments"];
    let keys: Vec<&str> = total
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = [
        "node-tx",
        "encap",
        "wire",
        "decap",
        "node-rx",
        "same-node",
        "total",
    ];
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(
        total["wire"],
        serde_json::json!({"count": 2, "min_ns": 7_081, "p50_ns": 7_083, "p90_ns": 8_081,
                           "p99_ns": 8_081, "p999_ns": 8_081, "max_ns": 8_081})
    );
    let flows = s["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[0]["flow"], "10.244.0.1:0>10.244.4.1:0/icmp");
    assert_eq!(flows[1]["flow"], "10.244.0.1:5353>10.244.4.1:53/udp");
    assert_eq!(flows[1]["traces"], 1);
    assert_eq!(flows[1]["segments"]["same-node"]["max_ns"], 1_203);
    assert!(flows[1]["segments"].get("wire").is_none());
    // The line itself lists segments in path order.
    let mut out = Vec::new();
    write_stats_json(&mut out, &two_flow_stats()).unwrap();
    let line = String::from_utf8(out).unwrap();
    let at = |k: &str| line.find(&format!("\"{k}\":{{\"count\"")).unwrap();
    assert!(at("node-tx") < at("encap") && at("encap") < at("wire") && at("node-rx") < at("total"));
}

#[test]
fn per_trace_segments() {
    let t = sorted(hops(T0, 0, &VXLAN), Outcome::Delivered);
    let segs = segments_with_clock(&t, &ClockModel::shared_kernel());
    assert_eq!(segs.len(), 6);
    assert_eq!(
        (
            segs[2].name,
            segs[2].ns,
            segs[2].from,
            segs[2].to,
            segs[2].cross_node
        ),
        (SegmentName::Wire, 7_081, 2, 3, true)
    );
    assert_eq!(segs[0].name, SegmentName::NodeTx);
    // Without offsets per node, the cross-node ones are left out.
    let names: Vec<&str> = segments_with_clock(&t, &ClockModel::per_node())
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["node-tx", "encap", "decap", "node-rx"]);
    assert_eq!(
        serde_json::to_value(SegmentName::SameNode).unwrap(),
        "same-node"
    );
    assert!(SegmentName::ALL
        .iter()
        .enumerate()
        .all(|(i, n)| n.index() == i));
}
