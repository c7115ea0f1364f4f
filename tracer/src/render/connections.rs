//! Both directions of a conversation side by side: a connection fails when its reply dies as
//! surely as when its request does, and the per-flow table shows the two as unrelated rows.
//! A flow and its reverse (addresses and ports swapped, same protocol) form one connection; the
//! direction whose first packet came first is the forward one. Pure: from the run's flow
//! summaries to lines and JSON.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{proto_name, FlowKey, FlowSummary};

/// One direction of a connection.
#[derive(Debug, Serialize)]
pub struct Direction {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub packets: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
    /// Where its packets died (`node ifname`) and the verdict, if they did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Connection {
    pub proto: String,
    pub forward: Direction,
    /// `None` when no packet of the reverse direction was traced.
    pub reply: Option<Direction>,
    /// `forward`, `reply`, `both`, or `none`.
    pub failed: &'static str,
}

fn direction(k: &FlowKey, f: &FlowSummary) -> Direction {
    let failure = f.failure.as_ref();
    Direction {
        src: k.src,
        dst: k.dst,
        sport: k.sport,
        dport: k.dport,
        packets: f.packets,
        delivered: f.delivered,
        dropped: f.dropped,
        lost: f.lost,
        failed_at: failure.map(|x| x.place.clone()),
        verdict: failure.and_then(|x| x.verdict),
    }
}

fn failed(d: &Direction) -> bool {
    d.dropped + d.lost > 0
}

/// The connections of the run's flows, in flow order.
pub fn connections(flows: &BTreeMap<FlowKey, FlowSummary>) -> Vec<Connection> {
    let mut out = Vec::new();
    let mut done: Vec<FlowKey> = Vec::new();
    for (k, f) in flows {
        if done.contains(k) {
            continue;
        }
        let rk = FlowKey {
            src: k.dst,
            dst: k.src,
            proto: k.proto,
            sport: k.dport,
            dport: k.sport,
        };
        done.push(*k);
        let rev = flows.get(&rk).filter(|_| rk != *k);
        if rev.is_some() {
            done.push(rk);
        }
        let (fwd, reply) = match rev {
            Some(r) if r.first_ts_ns < f.first_ts_ns => (direction(&rk, r), Some(direction(k, f))),
            Some(r) => (direction(k, f), Some(direction(&rk, r))),
            None => (direction(k, f), None),
        };
        let failed = match (failed(&fwd), reply.as_ref().is_some_and(failed)) {
            (true, true) => "both",
            (true, false) => "forward",
            (false, true) => "reply",
            (false, false) => "none",
        };
        out.push(Connection {
            proto: proto_name(k.proto),
            forward: fwd,
            reply,
            failed,
        });
    }
    out
}

fn endpoint(a: Ipv4Addr, port: u16, ports: bool) -> String {
    if ports {
        format!("{a}:{port}")
    } else {
        a.to_string()
    }
}

fn direction_text(d: &Direction) -> String {
    let mut s = format!("{}/{} delivered", d.delivered, d.packets);
    if d.dropped > 0 {
        s += &format!(", {} dropped", d.dropped);
    }
    if d.lost > 0 {
        s += &format!(", {} lost", d.lost);
    }
    if let Some(at) = &d.failed_at {
        s += &format!(" at {at}");
        if let Some(v) = d.verdict {
            s += &format!(" ({v})");
        }
    }
    s
}

/// One line per connection that failed in some direction (the healthy ones are the flow
/// table's business).
pub fn text_lines(conns: &[Connection]) -> Vec<String> {
    conns
        .iter()
        .filter(|c| c.failed != "none")
        .map(|c| {
            let f = &c.forward;
            let ports = f.sport != 0 || f.dport != 0;
            let name = format!(
                "{} {} <-> {}",
                c.proto.to_uppercase(),
                endpoint(f.src, f.sport, ports),
                endpoint(f.dst, f.dport, ports)
            );
            let reply = c
                .reply
                .as_ref()
                .map_or("no reply traced".to_string(), direction_text);
            let verdict = match c.failed {
                "forward" => "the request direction fails",
                "reply" => "the REPLY direction fails: the request got through",
                _ => "both directions fail",
            };
            format!(
                "{name}: request {}; reply {reply}: {verdict}",
                direction_text(f)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlowFailure, Outcome};

    fn key(src: &str, dst: &str, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            sport,
            dport,
        }
    }

    #[test]
    fn a_reply_that_dies_is_the_connections_failure() {
        let mut flows = BTreeMap::new();
        let req = key("10.244.0.1", "10.244.4.1", 40000, 80);
        let rep = key("10.244.4.1", "10.244.0.1", 80, 40000);
        flows.insert(
            req,
            FlowSummary {
                packets: 3,
                delivered: 3,
                first_ts_ns: 10,
                ..FlowSummary::default()
            },
        );
        flows.insert(
            rep,
            FlowSummary {
                packets: 3,
                dropped: 3,
                first_ts_ns: 20,
                failure: Some(FlowFailure {
                    outcome: Outcome::Dropped,
                    place: "node1 eth0".into(),
                    verdict: Some("rp-filter"),
                }),
                ..FlowSummary::default()
            },
        );
        // An unrelated healthy flow.
        flows.insert(
            key("10.244.0.2", "10.244.4.1", 1, 2),
            FlowSummary {
                packets: 1,
                delivered: 1,
                ..FlowSummary::default()
            },
        );
        let c = connections(&flows);
        assert_eq!(c.len(), 2);
        // The flow map orders the reply first; the earlier direction is still the request.
        let failing = c.iter().find(|c| c.failed != "none").unwrap();
        assert_eq!(failing.failed, "reply");
        assert_eq!(failing.forward.dport, 80);
        let lines = text_lines(&c);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("reply 0/3 delivered, 3 dropped at node1 eth0 (rp-filter)")
                && lines[0].contains("REPLY direction fails"),
            "{}",
            lines[0]
        );
        let json = serde_json::to_value(failing).unwrap();
        assert_eq!(json["failed"], "reply");
        assert_eq!(json["reply"]["verdict"], "rp-filter");
    }
}
