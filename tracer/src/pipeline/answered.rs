//! Packets that left the traced nodes toward a machine none of them is: their trace ends on an
//! uplink, and that alone proves nothing. A tracer runs on each node of a real cluster (or on
//! some of them), so most cross-node packets leave what one tracer sees; calling each of them
//! lost, with a verdict and a fix, would be a verdict the evidence contradicts as soon as the
//! answer comes back.
//!
//! Such a trace is held for [`HOLD_NS`] (an answer comes within a round trip; traces are
//! emitted in time order) before the verdict stage. If a packet of the reverse flow was traced
//! meanwhile or in the 10 s before (by its own addresses or by a NAT step's: the last packet
//! of a connection has no answer after it, but its peer answered the ones before; a TCP
//! segment counts only with its ACK flag: a retransmitted SYN answers nothing), the path
//! to that machine works for this flow: the trace is `incomplete` (last seen leaving the node)
//! and gets no verdict. A path that breaks in the middle of a connection is therefore called
//! lost only 10 s after its last answer. Otherwise it goes on as
//! `lost` and is judged like any other: a wrong tunnel endpoint, natOutgoing off, a real
//! underlay loss all have no answer.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use crate::{
    fast_hash::FastMap,
    model::{Direction, FlowKey, Outcome, Trace},
    topology::{IfaceKind, Topology},
};

/// How long a trace that left the traced nodes waits for an answer.
pub const HOLD_NS: u64 = 1_000_000_000;
/// At most this many traces wait; beyond, the oldest is released early (a one-way flood leaving
/// a one-node tracer would otherwise hold a second of packets: at 30 kpps, 30 MB). An established
/// flow's answers are mostly seen before its packets are held (the 10 s before count).
pub const MAX_HELD: usize = 4096;
/// How recent an earlier packet of the reverse flow may be to count as an answer: the last
/// packet of a connection (its final ACK) has none after it, but its peer answered the ones
/// before.
pub const ANSWERED_BEFORE_NS: u64 = 10_000_000_000;

const TCP_ACK: u8 = 0x10;

/// Lost traces waiting for an answer, and when each flow was last seen.
#[derive(Default)]
pub struct Answered {
    held: VecDeque<Trace>,
    /// Newest first-hop time of a trace per flow (its own addresses and its NAT steps').
    last_seen: FastMap<FlowKey, u64>,
}

impl Answered {
    /// Notes that `t` was traced (every trace that goes on, held ones when released).
    pub fn saw(&mut self, t: &Trace) {
        // A TCP segment without ACK (a SYN, or its retransmission because no SYN-ACK came)
        // answers nothing.
        if t.packet.proto == 6 && t.tcp_flags & TCP_ACK == 0 {
            return;
        }
        let ts = t.first_ts_ns();
        let mut note = |k: FlowKey| {
            let e = self.last_seen.entry(k).or_insert(0);
            *e = (*e).max(ts);
        };
        note(t.packet.flow());
        for n in &t.nat {
            note(FlowKey {
                src: n.to.0,
                sport: n.to.1,
                dst: n.to.2,
                dport: n.to.3,
                proto: n.proto,
            });
        }
    }

    /// Holds `t` if it is lost after leaving toward a machine no traced node is; gives it back
    /// otherwise.
    pub fn hold(&mut self, t: Trace, topo: &Topology) -> Option<Trace> {
        if t.outcome == Outcome::Lost && left_untraced(&t, topo) {
            self.held.push_back(t);
            return None;
        }
        Some(t)
    }

    /// The held traces whose wait is over at `now_ns` (all of them with `u64::MAX`; the
    /// oldest beyond `MAX_HELD`), each made `incomplete` without a verdict if it was answered.
    pub fn release(&mut self, now_ns: u64) -> Vec<Trace> {
        let mut out = Vec::new();
        while let Some(t) = self.held.front() {
            if t.last_ts_ns().saturating_add(HOLD_NS) > now_ns && self.held.len() <= MAX_HELD {
                break;
            }
            let mut t = self.held.pop_front().expect("front");
            if self.answered(&t) {
                t.outcome = Outcome::Incomplete;
            }
            out.push(t);
        }
        out
    }

    fn answered(&self, t: &Trace) -> bool {
        let p = &t.packet;
        let reverse = |src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16| FlowKey {
            src: dst,
            sport: dport,
            dst: src,
            dport: sport,
            proto: p.proto,
        };
        let mut keys = vec![reverse(p.src, p.sport, p.dst, p.dport)];
        keys.extend(
            t.nat
                .iter()
                .map(|n| reverse(n.to.0, n.to.1, n.to.2, n.to.3)),
        );
        let since = t.first_ts_ns().saturating_sub(ANSWERED_BEFORE_NS);
        keys.iter()
            .any(|k| self.last_seen.get(k).is_some_and(|&ts| ts >= since))
    }

    /// How many traces are held.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Whether `t`'s last hop is an uplink's egress toward a machine that is no traced node (the
/// tunnel's peer for an encapsulated packet, else the packet's destination, after NAT) and no
/// pod of one.
fn left_untraced(t: &Trace, topo: &Topology) -> bool {
    let Some(last) = t.hops.last() else {
        return false;
    };
    if last.dir != Direction::Egress || last.kind != Some(IfaceKind::Uplink) {
        return false;
    }
    let to = match &last.encap {
        Some(e) => e.outer_dst,
        None => t.nat.last().map_or(t.packet.dst, |n| n.to.2),
    };
    let pod_of_a_node = topo.nodes.iter().any(|n| {
        n.routes.iter().any(|r| {
            r.prefix_len == 32 && r.dst == to && IfaceKind::from_name(&r.dev) == IfaceKind::PodVeth
        })
    });
    topo.owner_of(to).is_none() && !pod_of_a_node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::{CorrelateConfig, Correlator};
    use crate::fixtures::{icmp, topology, vxlan_path};

    /// node1's half of a VXLAN ping: it leaves eth0 towards `peer` and is seen no more.
    fn left_towards(peer: Ipv4Addr) -> Trace {
        let mut c = Correlator::new(topology(), CorrelateConfig::default());
        vxlan_path(icmp(1), 1_000_000)[..3]
            .iter()
            .for_each(|h| c.push(h.clone()));
        let mut t = c.finish().pop().expect("a trace");
        assert_eq!(t.outcome, Outcome::Lost);
        for h in &mut t.hops {
            if let Some(e) = h.encap.as_mut() {
                e.outer_dst = peer;
            }
        }
        t
    }

    /// The answer: the same flow the other way, later.
    fn answer_to(t: &Trace) -> Trace {
        let mut a = t.clone();
        a.packet.src = t.packet.dst;
        a.packet.dst = t.packet.src;
        for h in &mut a.hops {
            h.ts_ns += 500_000;
        }
        a.outcome = Outcome::Delivered;
        a
    }

    #[test]
    fn a_packet_that_left_the_traced_nodes_and_was_answered_is_not_lost() {
        let topo = topology();
        let stranger: Ipv4Addr = "192.0.2.7".parse().unwrap();
        let t = left_towards(stranger);
        let last = t.last_ts_ns();
        let mut a = Answered::default();
        a.saw(&t);
        assert!(a.hold(t.clone(), &topo).is_none(), "held for an answer");
        let reply = answer_to(&t);
        a.saw(&reply);
        assert!(a.release(last + HOLD_NS - 1).is_empty(), "still waiting");
        let out = a.release(last + HOLD_NS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].outcome, Outcome::Incomplete, "answered: it arrived");

        // No answer: it goes on as lost (to be judged).
        let mut a = Answered::default();
        a.saw(&t);
        assert!(a.hold(t.clone(), &topo).is_none());
        let out = a.release(u64::MAX);
        assert_eq!(out[0].outcome, Outcome::Lost);

        // A flood of them: at most MAX_HELD wait, the oldest go on early.
        let mut a = Answered::default();
        for _ in 0..MAX_HELD + 3 {
            assert!(a.hold(t.clone(), &topo).is_none());
        }
        assert_eq!(a.release(0).len(), 3);
        assert_eq!(a.held(), MAX_HELD);

        // Towards a traced node: a real loss, never held.
        let to_node2 = left_towards(topo.nodes[1].addrs[0]);
        let mut a = Answered::default();
        assert!(a.hold(to_node2, &topo).is_some());
        assert_eq!(a.held(), 0);
    }
}
