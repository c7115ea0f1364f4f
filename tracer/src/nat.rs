//! The pipeline's NAT table: how each translated flow looked before conntrack translated it,
//! learnt from the NAT hook's records, so that every packet of the flow is followed under the
//! identity it had when it entered the first translating node (a Service's ClusterIP rather
//! than the endpoint kube-proxy picked, the pod rather than the node address natOutgoing put
//! in its place), on every node, in both directions.
//!
//! Keyed by the flow's tuple after the translation (addresses, protocol, ports; for ICMP the
//! echo id as source port). Conntrack keeps one translation per connection, so one record
//! teaches the table every later packet of the flow. An entry not used for
//! [`IDLE_NS`] is forgotten (a connection that ended; its tuple may come back as another one),
//! and the table holds at most [`MAX_FLOWS`] (the least recently used eighth goes when full).

use std::collections::HashMap;

use crate::{
    event::NatTuple,
    model::{NatStep, PacketId},
};

/// How long an unused translation is kept (conntrack's UDP timeout is 30-120 s).
pub const IDLE_NS: u64 = 120_000_000_000;
/// At most this many translated flows are remembered.
pub const MAX_FLOWS: usize = 1 << 16;

#[derive(Default)]
pub struct NatTable {
    /// After -> (before, last used).
    flows: HashMap<NatTuple, (NatTuple, u64)>,
    /// The reply tuple a translated request's answer has (the request's tuple after the
    /// translation, reversed) -> the request's step, for replies that come back untranslated.
    replies: HashMap<NatTuple, NatStep>,
}

impl NatTable {
    /// A NAT record: packets with tuple `now` had tuple `entered` when they entered the node.
    pub fn learn(&mut self, now: NatTuple, entered: NatTuple, ts_ns: u64) {
        if self.flows.len() >= MAX_FLOWS && !self.flows.contains_key(&now) {
            self.forget_oldest();
        }
        self.flows.insert(now, (entered, ts_ns));
    }

    /// A request's translation `step` (not a reply's): a packet with the reversed tuple of its
    /// result that no node translates back answers it untranslated ([`Self::answered`]).
    pub fn learn_request(&mut self, step: &NatStep) {
        if step.kind.starts_with("un-") {
            return;
        }
        let (src, sport, dst, dport) = step.to;
        let reply = NatTuple {
            src: dst,
            dst: src,
            proto: step.proto,
            sport: dport,
            dport: sport,
        };
        if self.replies.len() >= MAX_FLOWS && !self.replies.contains_key(&reply) {
            let oldest = self.replies.values().map(|s| s.ts_ns).min().unwrap_or(0);
            self.replies.retain(|_, s| s.ts_ns > oldest);
        }
        self.replies.insert(reply, step.clone());
    }

    /// The request step whose reply has `p`'s tuple (ICMP: not followed, its id is not a
    /// port the reply reverses).
    pub fn answered(&self, p: &PacketId) -> Option<&NatStep> {
        if p.proto == 1 {
            return None;
        }
        self.replies.get(&NatTuple::of(p))
    }

    /// The packet under the identity it had before its flow was translated, if it was.
    pub fn translate(&mut self, p: &PacketId, ts_ns: u64) -> Option<PacketId> {
        let (entered, used) = self.flows.get_mut(&NatTuple::of(p))?;
        *used = (*used).max(ts_ns);
        Some(entered.apply(p))
    }

    /// Forgets the translations unused since `now_ns - IDLE_NS`.
    pub fn expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(IDLE_NS);
        self.flows.retain(|_, (_, used)| *used >= cutoff);
        self.replies.retain(|_, s| s.ts_ns >= cutoff);
    }

    /// Forgets the least recently used eighth (at once, so a stream of new flows costs one
    /// pass per eighth of the table, not one per flow).
    fn forget_oldest(&mut self) {
        let mut used: Vec<u64> = self.flows.values().map(|(_, t)| *t).collect();
        if used.is_empty() {
            return;
        }
        let k = used.len() / 8;
        let (_, cutoff, _) = used.select_nth_unstable(k);
        let cutoff = *cutoff;
        self.flows.retain(|_, (_, t)| *t > cutoff);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> PacketId {
        PacketId {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 17,
            sport,
            dport,
            ip_id: 7,
            tcp_seq: 0,
            icmp_id: 0,
            icmp_seq: 0,
        }
    }

    #[test]
    fn a_translated_flow_is_followed_under_its_entered_identity() {
        let mut t = NatTable::default();
        let before = udp("10.244.0.1", 40000, "10.96.0.10", 53);
        let after = udp("10.244.0.1", 40000, "10.244.4.5", 53);
        t.learn(NatTuple::of(&after), NatTuple::of(&before), 1_000);
        let mut later = after;
        later.ip_id = 8;
        let back = t.translate(&later, 2_000).expect("translated");
        assert_eq!(
            (back.dst, back.dport, back.ip_id),
            (Ipv4Addr::new(10, 96, 0, 10), 53, 8)
        );
        // Another flow is not touched.
        assert_eq!(
            t.translate(&udp("10.244.0.1", 40001, "10.244.4.5", 53), 2_000),
            None
        );
        // Unused for longer than IDLE_NS: forgotten.
        t.expire(2_000 + IDLE_NS + 1);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn icmp_is_keyed_by_its_echo_id() {
        let mut t = NatTable::default();
        let mut before = udp("10.244.0.1", 0, "192.0.2.9", 0);
        before.proto = 1;
        before.icmp_id = 77;
        let mut after = before;
        after.src = "10.10.0.1".parse().unwrap();
        after.icmp_id = 1234;
        t.learn(NatTuple::of(&after), NatTuple::of(&before), 1);
        let back = t.translate(&after, 2).unwrap();
        assert_eq!((back.src, back.icmp_id), (before.src, 77));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut t = NatTable::default();
        for i in 0..(MAX_FLOWS + 10) {
            let p = udp(
                "10.244.0.1",
                (i % 60000) as u16,
                "10.96.0.10",
                (i / 60000) as u16 + 1,
            );
            t.learn(NatTuple::of(&p), NatTuple::of(&p), i as u64);
        }
        assert!(
            t.len() <= MAX_FLOWS && t.len() > MAX_FLOWS * 3 / 4,
            "{}",
            t.len()
        );
    }
}
