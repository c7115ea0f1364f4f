//! The store of open traces: a slab of slots (`Vec<Slot>` plus a free list), the identity
//! index whose chains link the open traces that share an identity (newest first, at most
//! [`MAX_SAME_IDENTITY`] long), and the expiry buckets each open trace is filed under (see the
//! design notes of the parent module). Opening, evicting early and removing live here;
//! deciding which trace a hop joins and what an emitted trace says live in the parent.

use super::{
    is_current, Correlator, Entry, Extra, OpenTrace, PackedId, RawHop, Slot, TraceHead,
    BUCKET_SHIFT, MAX_SAME_IDENTITY, NIL,
};
use std::collections::hash_map::Entry as IdEntry;

use crate::model::DropPoint;

impl Correlator {
    /// Opens a trace (evicting the oldest if too many are open) and files it for expiry.
    pub(super) fn open_slot(
        &mut self,
        key: PackedId,
        head: TraceHead,
        ts_ns: u64,
        hops: Vec<RawHop>,
        drop: Option<DropPoint>,
    ) {
        if self.open >= self.cfg.max_open.max(1) {
            self.evict_oldest();
        }
        self.bound_identity(key);
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    gen: 0,
                    trace: None,
                });
                self.slots.len() as u32 - 1
            }
        };
        let next = self.by_id.insert(key, slot).unwrap_or(NIL);
        let bucket = ts_ns >> BUCKET_SHIFT;
        let s = &mut self.slots[slot as usize];
        s.trace = Some(OpenTrace {
            packet: head.packet,
            tcp_flags: head.tcp_flags,
            icmp_type: head.icmp_type,
            first_ts: ts_ns,
            last_ts: ts_ns,
            bucket,
            next,
            hops,
            extra: drop.map(|drop| {
                Box::new(Extra {
                    drop: Some(drop),
                    nat: Vec::new(),
                })
            }),
        });
        let gen = s.gen;
        self.file(bucket, Entry { slot, gen });
        self.open += 1;
        self.slab_changes += 1;
    }

    /// Files an expiry entry under `bucket`.
    pub(super) fn file(&mut self, bucket: u64, e: Entry) {
        self.buckets.entry(bucket).or_default().push(e);
    }

    /// Makes room for one more open trace with identity `key`: when [`MAX_SAME_IDENTITY`]
    /// already have it, emits the oldest opened of them (the chain's tail) into `ready`.
    fn bound_identity(&mut self, key: PackedId) {
        let mut cur = self.by_id.get(&key).copied().unwrap_or(NIL);
        let (mut len, mut tail) = (0, NIL);
        while cur != NIL {
            let Some(t) = self.slots[cur as usize].trace.as_ref() else {
                break;
            };
            (len, tail) = (len + 1, cur);
            cur = t.next;
        }
        if len >= MAX_SAME_IDENTITY {
            let trace = self.emit(tail);
            self.ready.push(trace);
            self.stats.identity_evicted += 1;
        }
    }

    /// Emits the open trace with the oldest newest hop (to bucket precision) into `ready`.
    fn evict_oldest(&mut self) {
        while let Some(mut first) = self.buckets.first_entry() {
            let bucket = *first.key();
            let mut victim = None;
            while let Some(e) = first.get_mut().pop() {
                if is_current(&self.slots, e, bucket) {
                    victim = Some(e.slot);
                    break;
                }
            }
            if first.get().is_empty() {
                first.remove();
            }
            if let Some(slot) = victim {
                let trace = self.emit(slot);
                self.ready.push(trace);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// Removes an open trace from the slab and the identity index.
    pub(super) fn remove(&mut self, slot: u32) -> Option<OpenTrace> {
        let s = &mut self.slots[slot as usize];
        let t = s.trace.take()?;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(slot);
        self.open -= 1;
        self.slab_changes += 1;
        // One probe of the index: the common case is a trace alone with its identity.
        if let IdEntry::Occupied(mut head) = self.by_id.entry(PackedId::new(&t.packet)) {
            if *head.get() == slot {
                if t.next == NIL {
                    head.remove();
                } else {
                    *head.get_mut() = t.next;
                }
            } else {
                let mut cur = *head.get();
                while let Some(c) = self.slots[cur as usize].trace.as_mut() {
                    if c.next == slot {
                        c.next = t.next;
                        break;
                    }
                    cur = c.next;
                    if cur == NIL {
                        break;
                    }
                }
            }
        }
        Some(t)
    }
}
