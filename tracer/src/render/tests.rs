//! Unit tests of `render`.

use serde_json::{json, Value};

use super::*;
use crate::correlate::{CorrelateConfig, Correlator};
use crate::event::HopRecord;
use crate::fixtures::*;
use crate::latency::ClockModel;
use crate::model::Direction::{Egress, Ingress};

fn traces(hops: &[HopRecord]) -> (Vec<Trace>, Correlator) {
    let mut c = Correlator::new(topology(), CorrelateConfig::default());
    hops.iter().for_each(|h| c.push(h.clone()));
    (c.finish(), c)
}

fn text(t: &Trace) -> String {
    let mut out = Vec::new();
    write_trace_text(&mut out, t, &ClockModel::shared_kernel()).unwrap();
    String::from_utf8(out).unwrap()
}

fn json_line(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> Value {
    let mut out = Vec::new();
    f(&mut out).unwrap();
    let s = String::from_utf8(out).unwrap();
    assert_eq!(s.matches('\n').count(), 1, "one line: {s}");
    assert!(s.ends_with('\n'));
    serde_json::from_str(&s).unwrap()
}

#[test]
fn vxlan_trace_as_text() {
    let (t, _) = traces(&vxlan_path(icmp(0x1a2b), 5_000_000));
    let expected = "\
ICMP 10.244.0.1 > 10.244.4.1 echo id 1234 seq 1 ipid 0x1a2b len 84   delivered
  node1  cali3f2a9b0c1d4  ingress   +0.000 us
  node1  vxlan.calico     egress    +8.412 us
  node1  eth0             egress   +11.920 us  vxlan vni 4096 10.10.0.1:51234 > 10.10.0.2:4789
  node2  eth0             ingress  +19.001 us  vxlan vni 4096 10.10.0.1:51234 > 10.10.0.2:4789
  node2  vxlan.calico     ingress  +25.500 us
  node2  calie0e1e2e3e4f  egress   +31.250 us
";
    assert_eq!(text(&t[0]), expected);
}

#[test]
fn incomplete_tcp_trace_as_text() {
    let mut p = icmp(7);
    (p.proto, p.sport, p.dport, p.tcp_seq, p.icmp_id, p.icmp_seq) = (6, 40000, 5201, 99, 0, 0);
    let mut hops = vec![
        hop(p, NS1, CALI_A, Ingress, 1_000),
        hop(p, NS1, 42, Egress, 1_500),
    ];
    hops.iter_mut().for_each(|h| h.tcp_flags = 0x12);
    let (t, _) = traces(&hops);
    let s = text(&t[0]);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines,
        [
            "TCP 10.244.0.1:40000 > 10.244.4.1:5201 seq 99 flags [S.] ipid 0x0007 len 84   \
             INCOMPLETE (last seen node1 if42 egress)",
            "  node1  cali3f2a9b0c1d4  ingress  +0.000 us",
            "  node1  if42             egress   +0.500 us",
        ]
    );
    assert_eq!(tcp_flags_text(0), "[none]");
    assert_eq!(tcp_flags_text(0x19), "[FP.]");
    let ipip = Encap {
        kind: EncapKind::Ipip,
        ..vxlan_encap()
    };
    assert_eq!(encap_text(&ipip), "ipip 10.10.0.1 > 10.10.0.2");
}

#[test]
fn trace_json_has_the_contract_fields() {
    let (t, _) = traces(&vxlan_path(icmp(0x1a2b), 5_000_000));
    let v = json_line(|w| write_trace_json(w, &t[0], &ClockModel::shared_kernel()));
    assert_eq!(
        v["packet"],
        json!({"src": "10.244.0.1", "dst": "10.244.4.1", "proto": "icmp", "sport": 0,
               "dport": 0, "ip_id": 0x1a2b, "tcp_seq": 0, "icmp_id": 1234, "icmp_seq": 1,
               "flow": "10.244.0.1:0>10.244.4.1:0/icmp"})
    );
    assert_eq!(v["outcome"], "delivered");
    let hops = v["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 6);
    assert_eq!(
        hops[3],
        json!({"node": "node2", "netns": NS2, "ifname": "eth0", "ifindex": ETH0,
               "kind": "uplink", "dir": "ingress", "ts_ns": 5_019_001, "delta_ns": 19_001,
               "len": 134, "encap": {"type": "vxlan", "vni": 4096, "outer_src": "10.10.0.1",
               "outer_dst": "10.10.0.2", "outer_sport": 51234, "outer_dport": 4789}})
    );
    assert_eq!(hops[0]["kind"], "pod-veth");
    assert_eq!(hops[0]["delta_ns"], 0);
    assert!(hops[0]["encap"].is_null());
    assert_eq!(hops[1]["kind"], "vxlan");
}

#[test]
fn trace_json_drop_verdict_routes_segments_and_escaping() {
    let (mut t, _) = traces(&vxlan_path(icmp(0x1a2b), 5_000_000));
    let mut t = t.remove(0);
    // Names come from outside (netlink, BTF): quotes, backslashes, control and non-ASCII
    // characters must survive the round trip.
    let odd = "we\"ird\\name\n\u{1}é";
    t.hops[0].node = odd.into();
    t.outcome = Outcome::Dropped;
    t.drop = Some(crate::model::DropPoint {
        node: "node1".into(),
        netns: NS1,
        ifindex: 4,
        ifname: "vxlan.calico".into(),
        ts_ns: 5_016_395,
        reason: "NO_TX_TARGET".into(),
        reason_code: 73,
        function: "vxlan_xmit+0xdab".into(),
        location: 0xffff_ffff_c0de_0dab,
        len: 84,
        encap: None,
        snap: None,
    });
    t.verdict = Some(crate::model::Verdict {
        name: "no-vxlan-fdb",
        explanation: odd.to_string(),
        evidence: vec![format!("node1: {odd}")],
    });
    t.routes = vec![RouteLookup {
        ts_ns: 5_000_100,
        netns: 0,
        table: 254,
        err: -101,
        src: "10.244.0.1".parse().unwrap(),
        dst: "10.244.4.1".parse().unwrap(),
        oif: 0,
        iif: 3,
        dev: String::new(),
        gw: None,
    }];
    t.routes.push(RouteLookup {
        netns: NS1,
        err: 0,
        iif: CALI_A,
        dev: "vxlan.calico".into(),
        gw: Some("10.244.4.0".parse().unwrap()),
        ..t.routes[0].clone()
    });
    let v = json_line(|w| write_trace_json(w, &t, &ClockModel::shared_kernel()));
    assert_eq!(v["hops"][0]["node"], odd);
    assert_eq!(v["outcome"], "dropped");
    assert_eq!(
        v["drop"],
        json!({"node": "node1", "netns": NS1, "ifname": "vxlan.calico", "ifindex": 4,
               "function": "vxlan_xmit+0xdab", "reason": "NO_TX_TARGET", "reason_code": 73,
               "location": "0xffffffffc0de0dab", "ts_ns": 5_016_395, "delta_ns": 16_395,
               "len": 84, "encap": null})
    );
    assert_eq!(
        v["verdict"],
        json!({"name": "no-vxlan-fdb", "explanation": odd, "evidence": [format!("node1: {odd}")]})
    );
    assert_eq!(
        v["routes"],
        json!([{"ts_ns": 5_000_100, "netns": 0, "node": null, "iif": 3, "iif_name": null,
                "table": 254, "err": -101, "src": "10.244.0.1", "dst": "10.244.4.1", "dev": "",
                "gw": null},
               {"ts_ns": 5_000_100, "netns": NS1, "node": odd, "iif": CALI_A,
                "iif_name": "cali3f2a9b0c1d4", "table": 254, "err": 0, "src": "10.244.0.1",
                "dst": "10.244.4.1", "dev": "vxlan.calico", "gw": "10.244.4.0"}])
    );
    let segs = v["segments"].as_array().unwrap();
    let names: Vec<&str> = segs.iter().map(|s| s["name"].as_str().unwrap()).collect();
    // A dropped packet has no end-to-end total.
    assert_eq!(names, ["node-tx", "encap", "wire", "decap", "node-rx"]);
    assert_eq!(
        segs[2],
        json!({"name": "wire", "ns": 19_001 - 11_920, "from": 2, "to": 3, "cross_node": true})
    );
}

#[test]
fn json_proto_and_unknown_kind() {
    let mut p = icmp(1);
    (p.proto, p.sport, p.dport) = (132, 1, 2);
    let (t, _) = traces(&[hop(p, 9, 4, Ingress, 1)]);
    let v = json_line(|w| write_trace_json(w, &t[0], &ClockModel::shared_kernel()));
    assert_eq!(v["packet"]["proto"], "132");
    assert_eq!(v["packet"]["flow"], "10.244.0.1:1>10.244.4.1:2/132");
    assert_eq!(v["hops"][0]["kind"], Value::Null);
    assert_eq!(v["hops"][0]["node"], "netns:9");
    assert_eq!(v["outcome"], "incomplete");
}

/// What the pipeline hands render for a summary: the correlator's counters and the flows of
/// its traces.
struct SummaryInput {
    c: Correlator,
    flows: BTreeMap<FlowKey, FlowSummary>,
}

impl SummaryInput {
    fn new() -> Self {
        let mut udp = icmp(3);
        (udp.proto, udp.sport, udp.dport, udp.icmp_id, udp.icmp_seq) = (17, 5353, 53, 0, 0);
        let mut hops = vxlan_path(icmp(1), 1_000);
        hops.extend(vxlan_path(icmp(2), 2_000_000));
        hops.extend_from_slice(&vxlan_path(udp, 3_000_000)[..2]);
        hops.push(hops[0].clone());
        let (traces, c) = traces(&hops);
        let mut flows = BTreeMap::<FlowKey, FlowSummary>::new();
        for t in &traces {
            flows.entry(t.packet.flow()).or_default().record(t);
        }
        SummaryInput { c, flows }
    }

    fn summary<'a>(&'a self, loss: &'a LossCounters) -> RunSummary<'a> {
        RunSummary {
            flows: &self.flows,
            correlator: self.c.stats(),
            open_traces: self.c.open_traces(),
            drops_seen: 0,
            noise_drops: 0,
            receiver_drops: 0,
            loss,
        }
    }
}

#[test]
fn summary_as_text() {
    let input = SummaryInput::new();
    let loss = LossCounters {
        ringbuf_full: 7,
        decode_errors: 2,
        filtered: 5,
        ..Default::default()
    };
    let mut out = Vec::new();
    write_summary_text(&mut out, &input.summary(&loss)).unwrap();
    let s = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "flows:",
            "  proto  flow                             packets  bytes  hops  delivered  dropped  lost  incomplete",
            "  ICMP   10.244.0.1 > 10.244.4.1                2    168    12          2        0     0           0",
            "  UDP    10.244.0.1:5353 > 10.244.4.1:53        1     84     2          0        0     0           1",
            "  total  2 flows                                3    252    14          2        0     0           1",
        ]
    );
    assert!(lines[5].starts_with("correlator: 15 hops seen, 1 duplicates dropped"));
    assert_eq!(lines[6], "kernel drops: 0 seen, 0 ignored as noise, 0 by the receiving sockets (delivered; the application did not take them)");
    assert_eq!(
        lines[7],
        "tracer lost (not kernel drops): 7 events (ring buffer full), 2 decode errors, 0 unreadable drops, 0 aggregation slots taken over in flight"
    );
    assert_eq!(
        lines[8],
        "not traced: 5 filtered, 0 not IPv4, 0 malformed, 0 sampled out"
    );
}

#[test]
fn summary_as_json() {
    let input = SummaryInput::new();
    let loss = LossCounters {
        ringbuf_full: 7,
        decode_errors: 2,
        ..Default::default()
    };
    let v = json_line(|w| write_summary_json(w, &input.summary(&loss)));
    let s = &v["summary"];
    assert_eq!(
        (s["traces"].as_u64(), s["hops"].as_u64()),
        (Some(3), Some(14))
    );
    assert_eq!(
        (s["lost_events"].as_u64(), s["decode_errors"].as_u64()),
        (Some(7), Some(2))
    );
    assert_eq!(s["duplicates"], 1);
    let flows = s["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 2);
    assert_eq!(flows[1]["flow"], "10.244.0.1:5353>10.244.4.1:53/udp");
    assert_eq!(
        (
            &flows[0]["packets"],
            &flows[0]["bytes"],
            &flows[0]["delivered"]
        ),
        (&json!(2), &json!(168), &json!(2))
    );
    assert_eq!(flows[1]["incomplete"], 1);
}

/// Route lines name the lookup's input interface: the lookups a forwarded packet and the node's
/// own output make for the same addresses would otherwise print alike.
#[test]
fn route_lines_name_the_input_interface() {
    let (mut t, _) = traces(&vxlan_path(icmp(0x1a2b), 5_000_000));
    let mut t = t.remove(0);
    t.outcome = Outcome::Lost;
    let forward = RouteLookup {
        ts_ns: 5_000_100,
        netns: NS1,
        table: 254,
        err: 0,
        src: "10.244.0.1".parse().unwrap(),
        dst: "10.244.4.1".parse().unwrap(),
        oif: ETH0,
        iif: CALI_A,
        dev: "eth0".into(),
        gw: Some("10.10.0.254".parse().unwrap()),
    };
    t.routes = vec![
        forward.clone(),
        RouteLookup {
            iif: 1,
            ..forward.clone()
        },
        RouteLookup {
            iif: 77,
            ..forward.clone()
        },
        RouteLookup {
            iif: 0,
            err: -101,
            gw: None,
            dev: String::new(),
            ..forward
        },
    ];
    let s = text(&t);
    let routes: Vec<&str> = s.lines().filter(|l| l.contains("route:")).collect();
    assert_eq!(
        routes,
        [
            "  route: node1 table 254 10.244.0.1 -> 10.244.4.1 iif cali3f2a9b0c1d4: dev eth0 via 10.10.0.254",
            "  route: node1 table 254 10.244.0.1 -> 10.244.4.1 iif lo: dev eth0 via 10.10.0.254",
            "  route: node1 table 254 10.244.0.1 -> 10.244.4.1 iif #77: dev eth0 via 10.10.0.254",
            "  route: node1 table 254 10.244.0.1 -> 10.244.4.1: no route (error -101)",
        ]
    );
}
