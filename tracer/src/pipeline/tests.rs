//! The stages after correlation, run by the pipeline: flows, the noise filter and the verdict
//! stage (the correlator's own behaviour is tested in `correlate`).

use serde_json::Value;

use super::*;
use crate::fixtures::*;
use crate::model::FlowSummary;

/// Names every drop reason as the kernel named this test's drop.
struct Named(&'static str);

impl DropNames for Named {
    fn reason_name(&self, _value: u32) -> String {
        self.0.to_string()
    }

    fn location(&self, addr: u64) -> String {
        format!("{addr:#x}")
    }
}

/// JSON output, a 300 ms linger, traces collected for the test to read.
fn json_config() -> PipelineConfig {
    let print = PrintArgs {
        count: None,
        output: Output::Json,
        linger_ms: 300,
    };
    PipelineConfig {
        collect: true,
        ..print.pipeline_config(ClockModel::shared_kernel())
    }
}

fn pipeline(out: &mut Vec<u8>) -> Pipeline<&mut Vec<u8>> {
    Pipeline::new(topology(), json_config(), out)
}

/// Closes the pipeline and writes its summary: its traces.
fn finish(mut pipe: Pipeline<&mut Vec<u8>>) -> Vec<Trace> {
    pipe.close_all().unwrap();
    pipe.write_summary(LossCounters::default()).unwrap()
}

/// The JSON summary the pipeline wrote last.
fn summary(out: &[u8]) -> Value {
    let text = std::str::from_utf8(out).unwrap();
    let last = text.lines().last().expect("a summary line");
    let line: Value = serde_json::from_str(last).unwrap();
    line["summary"].clone()
}

#[test]
fn flow_summary_counts() {
    let mut out = Vec::new();
    let mut pipe = pipeline(&mut out);
    let mut tcp = icmp(5);
    (tcp.proto, tcp.sport, tcp.dport, tcp.icmp_id, tcp.icmp_seq) = (6, 40000, 5201, 0, 0);
    let lost = &vxlan_path(icmp(2), 2_000_000)[..3];
    let tcp = vxlan_path(tcp, 3_000_000);
    let hops = vxlan_path(icmp(1), 1_000)
        .into_iter()
        .chain(lost.iter().cloned());
    hops.chain(tcp.iter().cloned())
        .chain([tcp[0].clone()])
        .for_each(|h| pipe.push_hop(h));
    pipe.close_all().unwrap();
    let flows: Vec<_> = pipe.flows().iter().collect();
    assert_eq!(flows.len(), 2);
    let (key, icmp_flow) = flows[0];
    assert_eq!((key.proto, key.sport), (1, 0));
    let expected = FlowSummary {
        packets: 2,
        bytes: 168,
        hops: 9,
        first_ts_ns: 1_000,
        last_ts_ns: 2_011_920,
        delivered: 1,
        dropped: 0,
        lost: 1,
        incomplete: 0,
        failure: icmp_flow.failure.clone(),
    };
    assert_eq!(*icmp_flow, expected);
    let failure = icmp_flow.failure.as_ref().expect("the lost packet's place");
    assert_eq!(failure.outcome, crate::model::Outcome::Lost);
    assert!(failure.place.ends_with("eth0"), "{failure:?}");
    let (key, f) = flows[1];
    assert_eq!((key.proto, key.sport, key.dport), (6, 40000, 5201));
    assert_eq!((f.packets, f.bytes, f.hops, f.delivered), (1, 84, 6, 1));
    let traces = finish(pipe);
    let summary = summary(&out);
    assert_eq!(traces.len(), 3);
    assert_eq!(summary["duplicates"], 1, "{summary}");
    assert_eq!(summary["flows"].as_array().map(Vec::len), Some(2));
}

#[test]
fn noise_drops_do_not_change_a_delivered_trace() {
    let mut out = Vec::new();
    let mut pipe = pipeline(&mut out);
    let mut reply = icmp(7);
    std::mem::swap(&mut reply.src, &mut reply.dst);
    vxlan_path(reply, 1_000)
        .iter()
        .for_each(|h| pipe.push_hop(h.clone()));
    let mut d = drop_of(reply, NS1, 0, 50_000);
    d.icmp_type = 0;
    pipe.push_drop(&d, &Named("NO_SOCKET"));
    let traces = finish(pipe);
    let summary = summary(&out);
    assert_eq!(traces.len(), 1);
    assert_eq!(traces[0].outcome, Outcome::Delivered);
    assert!(traces[0].drop.is_none());
    assert_eq!(
        (&summary["drops_seen"], &summary["noise_drops"]),
        (&Value::from(1), &Value::from(1)),
        "{summary}"
    );
}

/// The verdict stage judges dropped and lost traces, and only those.
#[test]
fn verdicts_for_dropped_and_lost_traces_only() {
    let mut out = Vec::new();
    let mut pipe = pipeline(&mut out);
    vxlan_path(icmp(1), 1_000)
        .iter()
        .for_each(|h| pipe.push_hop(h.clone()));
    vxlan_path(icmp(2), 2_000_000)[..3]
        .iter()
        .for_each(|h| pipe.push_hop(h.clone()));
    let dropped = vxlan_path(icmp(3), 3_000_000);
    pipe.push_hop(dropped[0].clone());
    pipe.push_drop(
        &drop_of(icmp(3), NS1, VXLAN, 3_010_000),
        &Named("NO_TX_TARGET"),
    );
    let traces = finish(pipe);
    let summary = summary(&out);
    let verdicts: Vec<(Outcome, Option<&str>)> = traces
        .iter()
        .map(|t| (t.outcome, t.verdict.as_ref().map(|v| v.name)))
        .collect();
    assert_eq!(
        verdicts,
        [
            (Outcome::Delivered, None),
            (Outcome::Lost, Some("underlay-drop")),
            (Outcome::Dropped, Some("no-vxlan-fdb")),
        ]
    );
    assert_eq!(summary["drops_seen"], 1, "{summary}");
}

/// A pod veth that appears while tracing is named by the hops that cross it from then on, also
/// when hops on it were seen (as `if<N>`) before its name arrived.
#[test]
fn interfaces_learned_while_tracing_are_named() {
    use crate::model::{Direction, LinkChange};
    use crate::topology::{Iface, IfaceKind, Link};
    let mut out = Vec::new();
    let mut pipe = pipeline(&mut out);
    let new_pod = 31;
    let hop = |id, ts| hop(icmp(id), NS1, new_pod, Direction::Ingress, ts);
    pipe.push_hop(hop(1, 1_000));
    pipe.link_change(
        NS1,
        &LinkChange::Added {
            iface: Iface {
                ifindex: new_pod,
                name: "calinewpod0001".into(),
                kind: IfaceKind::PodVeth,
            },
            link: Link {
                ifindex: new_pod,
                name: "calinewpod0001".into(),
                mtu: 1450,
            },
        },
    );
    pipe.push_hop(hop(2, 2_000_000));
    let traces = finish(pipe);
    let names: Vec<(&str, Option<IfaceKind>)> = traces
        .iter()
        .map(|t| (&*t.hops[0].ifname, t.hops[0].kind))
        .collect();
    assert_eq!(
        names,
        [
            ("calinewpod0001", Some(IfaceKind::PodVeth)),
            ("calinewpod0001", Some(IfaceKind::PodVeth))
        ]
    );
}

/// A NAT record from node1's vxlan.calico: the packet entered as `before` and left as
/// `after`.
fn nat_record(before: PacketId, after: PacketId, ts_ns: u64, reply: bool) -> NatRecord {
    NatRecord {
        ts_ns,
        netns: NS1,
        ifindex: VXLAN,
        packet: after,
        tcp_flags: 0,
        icmp_type: 0,
        entered: NatTuple::of(&before),
        reply,
    }
}

fn udp_to(dst: &str, dport: u16) -> PacketId {
    PacketId {
        proto: 17,
        sport: 40000,
        dport,
        dst: dst.parse().unwrap(),
        icmp_id: 0,
        icmp_seq: 0,
        ..icmp(9)
    }
}

/// A packet to a Service address, DNATed on node1 to the endpoint on node2: one trace under
/// the Service address, the hops after the translation marked, the step named; the next packet
/// of the flow too, without a NAT record of its own; and the first packet's translated hops
/// that arrive before the record (another ring buffer) are moved into its trace.
#[test]
fn a_packet_keeps_one_trace_through_dnat() {
    for hops_first in [false, true] {
        let mut out = Vec::new();
        let mut pipe = pipeline(&mut out);
        let svc = udp_to("10.96.0.10", 53);
        let ep = udp_to("10.244.4.1", 5353);
        let pre = &vxlan_path(svc, 1_000)[..1];
        let post = &vxlan_path(ep, 1_000)[1..];
        pipe.push_hop(pre[0].clone());
        if hops_first {
            post.iter().for_each(|h| pipe.push_hop(h.clone()));
            pipe.push_nat(&nat_record(svc, ep, 9_000, false));
        } else {
            pipe.push_nat(&nat_record(svc, ep, 9_000, false));
            post.iter().for_each(|h| pipe.push_hop(h.clone()));
        }
        // The flow's next packet: no record, the table knows the flow.
        let mut svc2 = svc;
        svc2.ip_id = 10;
        let mut ep2 = ep;
        ep2.ip_id = 10;
        pipe.push_hop(vxlan_path(svc2, 2_000_000)[0].clone());
        vxlan_path(ep2, 2_000_000)[1..]
            .iter()
            .for_each(|h| pipe.push_hop(h.clone()));
        let traces = finish(pipe);
        assert_eq!(traces.len(), 2, "hops_first={hops_first}: {traces:#?}");
        for t in &traces {
            assert_eq!((t.packet.dst, t.packet.dport), (svc.dst, 53));
            assert_eq!(t.outcome, Outcome::Delivered, "{t:#?}");
            assert_eq!(t.hops.len(), 6);
            assert!(!t.hops[0].translated && t.hops[1..].iter().all(|h| h.translated));
        }
        let step = &traces[0].nat[0];
        assert_eq!(step.kind, "DNAT");
        assert_eq!(step.text(), "DNAT dst 10.96.0.10:53 -> 10.244.4.1:5353");
        assert!(traces[1].nat.is_empty(), "one record for the flow");
        let json: Value =
            serde_json::from_str(std::str::from_utf8(&out).unwrap().lines().next().unwrap())
                .unwrap();
        assert_eq!(json["nat"][0]["to"]["dst"], "10.244.4.1", "{json}");
        assert_eq!(json["hops"][1]["translated"], true, "{json}");
    }
}

/// A filter on the Service address follows the packet to its endpoint; one on the endpoint
/// includes the hop before the translation.
#[test]
fn the_filter_matches_either_side_of_a_translation() {
    for filter in ["host 10.96.0.10", "host 10.244.4.1"] {
        let mut out = Vec::new();
        let print = PrintArgs {
            count: None,
            output: Output::Json,
            linger_ms: 300,
        };
        let program = crate::filter::Filter::parse(filter)
            .unwrap()
            .compile()
            .unwrap();
        let cfg = PipelineConfig {
            collect: true,
            filter: Some(program),
            ..print.pipeline_config(ClockModel::shared_kernel())
        };
        let mut pipe = Pipeline::new(topology(), cfg, &mut out);
        let svc = udp_to("10.96.0.10", 53);
        let ep = udp_to("10.244.4.1", 5353);
        pipe.push_hop(vxlan_path(svc, 1_000)[0].clone());
        pipe.push_nat(&nat_record(svc, ep, 9_000, false));
        vxlan_path(ep, 1_000)[1..]
            .iter()
            .for_each(|h| pipe.push_hop(h.clone()));
        let traces = finish(pipe);
        assert_eq!(traces.len(), 1, "{filter}");
        assert_eq!(traces[0].hops.len(), 6, "{filter}");
    }
}

/// With `--stats`, a trace is measured once for the statistics and its JSON line: the lines
/// are those the trace renders to on its own, segments included, in the order traced, and the
/// statistics count the same segments.
#[test]
fn json_lines_with_stats_are_the_traces_as_rendered_alone() {
    let mut out = Vec::new();
    let cfg = PipelineConfig {
        stats: true,
        ..json_config()
    };
    let mut pipe = Pipeline::new(topology(), cfg, &mut out);
    // A delivered packet, one lost after its uplink, and one seen on node2 only; the later
    // ones start first, so the lines come out in another order than pushed.
    let mut lost = vxlan_path(icmp(2), 1_000_000);
    lost.truncate(3);
    let late = vxlan_path(icmp(3), 500_000).split_off(3);
    vxlan_path(icmp(1), 2_000_000)
        .into_iter()
        .chain(lost)
        .chain(late)
        .for_each(|h| pipe.push_hop(h));
    pipe.tick(2_000_000 + 400_000_000).unwrap();
    pipe.close_all().unwrap();
    let stats = pipe.latency.as_ref().expect("--stats");
    assert_eq!(stats.traces(), 3);
    let wire = stats
        .summary(None, SegmentName::Wire)
        .expect("a wire segment");
    assert_eq!(wire.count, 1);
    let traces = finish(pipe);
    let mut alone = Vec::new();
    for t in &traces {
        render::write_trace_json(&mut alone, t, &ClockModel::shared_kernel()).unwrap();
    }
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().take(traces.len()).collect();
    assert_eq!(lines.join("\n") + "\n", String::from_utf8(alone).unwrap());
    let ids: Vec<u16> = traces.iter().map(|t| t.packet.ip_id).collect();
    assert_eq!(ids, [3, 2, 1], "by first hop");
    let with_segments = lines
        .iter()
        .filter(|l| l.contains("\"name\":\"wire\""))
        .count();
    assert_eq!(with_segments, 1, "{text}");
}
