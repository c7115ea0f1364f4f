//! NAT steps: a packet translated by conntrack keeps one trace.
//!
//! The pipeline gives the correlator every packet under the identity it had when it entered
//! the first node that translated it (`PacketId` with the entered addresses; hops seen after
//! the translation come through `push_translated`). A NAT record attaches its step to that
//! trace (opening one if the packet was not seen before it, as a drop does). Hops that arrived
//! before the NAT record told the pipeline about the translation (the first packet of a flow,
//! when the node's ring buffer is drained before the hooks') opened a trace of their own under
//! the translated identity: the step moves them into the packet's trace.

use super::{Correlator, OpenTrace, PackedId, TraceHead, NIL};
use crate::model::{NatStep, PacketId};

impl Correlator {
    /// A NAT step of the packet `entered` (its identity before the step), which left the step
    /// as `now`.
    pub fn push_nat(
        &mut self,
        entered: &PacketId,
        now: &PacketId,
        tcp_flags: u8,
        icmp_type: u8,
        step: NatStep,
    ) {
        let ts = step.ts_ns;
        let key = PackedId::new(entered);
        let slot = match self.closest(key, ts) {
            Some(slot) => slot,
            None => {
                let head = TraceHead {
                    packet: *entered,
                    tcp_flags,
                    icmp_type,
                };
                self.open_slot(key, head, ts, Vec::new(), None);
                match self.by_id.get(&key) {
                    Some(&slot) => slot,
                    None => return,
                }
            }
        };
        // Hops already filed under the translated identity belong here.
        let now_key = PackedId::new(now);
        if now_key != key {
            while let Some(other) = self.closest(now_key, ts) {
                let Some(t) = self.remove(other) else {
                    break;
                };
                self.merge_into(slot, t);
            }
        }
        self.extend_span(slot, ts);
        if let Some(t) = self.slots[slot as usize].trace.as_mut() {
            let nat = &mut t.extra_mut().nat;
            let dup = nat
                .iter()
                .any(|s| s.netns == step.netns && s.from == step.from && s.to == step.to);
            if !dup {
                nat.push(step);
            }
        }
    }

    /// The open trace with identity `key` closest in time to `ts` within the window.
    fn closest(&self, key: PackedId, ts: u64) -> Option<u32> {
        let window = self.cfg.window_ns.max(self.cfg.drop_wait_ns);
        let mut best: Option<(u64, u32)> = None;
        let mut cur = self.by_id.get(&key).copied().unwrap_or(NIL);
        while cur != NIL {
            let t = self.slots[cur as usize].trace.as_ref()?;
            let first = t.first_ts.min(ts);
            let last = t.last_ts.max(ts);
            if last - first <= window {
                let dist = t
                    .first_ts
                    .saturating_sub(ts)
                    .max(ts.saturating_sub(t.last_ts));
                if best.is_none_or(|(d, _)| dist < d) {
                    best = Some((dist, cur));
                }
            }
            cur = t.next;
        }
        best.map(|(_, s)| s)
    }

    /// Moves an open trace's hops (as translated), drop and steps into `slot`'s trace.
    fn merge_into(&mut self, slot: u32, mut from: OpenTrace) {
        let (drop, nat) = from.take_extra();
        for mut h in from.hops {
            h.translated = true;
            let ts = h.ts_ns;
            if let Some(t) = self.slots[slot as usize].trace.as_mut() {
                t.hops.push(h);
            }
            self.extend_span(slot, ts);
        }
        if let Some(t) = self.slots[slot as usize].trace.as_mut() {
            if drop.is_some() || !nat.is_empty() {
                let e = t.extra_mut();
                if e.drop.is_none() {
                    e.drop = drop;
                }
                e.nat.extend(nat);
            }
        }
    }
}
