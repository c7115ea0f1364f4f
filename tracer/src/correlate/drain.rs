//! Handing out the traces that are due, one at a time, in order.
//!
//! `expire` and `finish` decide which traces are due and in what order (by first-hop time,
//! then identity), and [`Correlator::next_due`] turns them into [`Trace`]s one by one, as the
//! pipeline asks. Only a small entry per due trace is sorted, never the traces: with every
//! packet of a busy flow traced, building the whole batch of `Trace`s first (~450 bytes each,
//! plus moving them into the next stage's batch) cost fresh memory for every drain and the
//! copying of each trace, twice.
//!
//! What is handed out, and in what order, is what a batch would have held: the evicted traces
//! first, then the due open ones in the order they were found, sorted stably by the same key.
//! Slots freed by a drain go back to the free list in the order they were found, as if each had
//! been emitted when it was found, so slot reuse (and with it the order of traces with equal
//! keys in a later `finish`) does not depend on the order they are handed out in.

use super::{Correlator, PacketId, Trace};

/// A trace due to be handed out.
#[derive(Clone, Copy)]
pub(super) struct Due {
    /// First-hop time (0 without hops), then identity: the order traces are handed out in.
    first_ts: u64,
    packet: PacketId,
    at: At,
}

#[derive(Clone, Copy)]
enum At {
    /// An open trace, still in its slot (`gen` as when it was found due).
    Slot { slot: u32, gen: u32 },
    /// An evicted trace, by its index in [`Drain::evicted`].
    Evicted(u32),
}

/// The traces of one `expire`/`finish`, being handed out.
#[derive(Default)]
pub(super) struct Drain {
    due: Vec<Due>,
    /// Next entry of `due` to hand out.
    pos: usize,
    evicted: Vec<Option<Trace>>,
    /// The due slots in the order they were found (see the module notes).
    found: Vec<u32>,
    /// `Correlator::slab_changes` when the drain started, and the slots the drain removed.
    changes_at_start: u64,
    removed: usize,
}

/// Most entries a drain keeps room for between drains (~770 KB; a drain of more allocates
/// again, and lets go of it at its end).
const DUE_KEPT: usize = 16 * 1024;

impl Correlator {
    /// Starts a drain: the evicted traces (`ready`) come first. Traces still due from a drain
    /// not handed out to its end are emitted first and come before them.
    pub(super) fn start_drain(&mut self) {
        let mut left = Vec::new();
        while let Some(t) = self.next_due() {
            left.push(t);
        }
        let d = &mut self.drain;
        d.due.clear();
        d.found.clear();
        d.pos = 0;
        d.removed = 0;
        d.changes_at_start = self.slab_changes;
        left.append(&mut self.ready);
        d.evicted = left.into_iter().map(Some).collect();
        for (i, t) in d.evicted.iter().flatten().enumerate() {
            d.due.push(Due {
                first_ts: t.first_ts_ns(),
                packet: t.packet,
                at: At::Evicted(i as u32),
            });
        }
    }

    /// Adds the open trace in `slot` to the drain.
    pub(super) fn add_due(&mut self, slot: u32) {
        let s = &self.slots[slot as usize];
        let Some(t) = s.trace.as_ref() else {
            return;
        };
        let first_ts = t.hops.iter().map(|h| h.ts_ns).min().unwrap_or(0);
        self.drain.due.push(Due {
            first_ts,
            packet: t.packet,
            at: At::Slot { slot, gen: s.gen },
        });
        self.drain.found.push(slot);
    }

    /// Orders the drain (stably: equal keys stay in the order they were added).
    pub(super) fn sort_drain(&mut self) {
        self.drain.due.sort_by_key(|d| (d.first_ts, d.packet));
    }

    /// The next trace of the current `expire`/`finish`, in order; `None` once all were handed
    /// out.
    pub fn next_due(&mut self) -> Option<Trace> {
        loop {
            let Some(&d) = self.drain.due.get(self.drain.pos) else {
                self.end_drain();
                return None;
            };
            self.drain.pos += 1;
            match d.at {
                At::Evicted(i) => {
                    if let Some(t) = self.drain.evicted[i as usize].take() {
                        return Some(t);
                    }
                }
                // A trace emitted meanwhile (pushes during a drain) was handed out elsewhere.
                At::Slot { slot, gen } if self.slots[slot as usize].gen == gen => {
                    self.drain.removed += 1;
                    return Some(self.emit(slot));
                }
                At::Slot { .. } => {}
            }
        }
    }

    /// Puts the slots the drain freed back in the order they were found (when no other trace
    /// was opened or removed meanwhile), and lets go of what the drain held.
    fn end_drain(&mut self) {
        let d = &mut self.drain;
        let n = d.removed;
        if n > 0 && self.slab_changes - d.changes_at_start == n as u64 && d.found.len() == n {
            let start = self.free.len() - n;
            self.free[start..].copy_from_slice(&d.found);
        }
        d.removed = 0;
        d.changes_at_start = self.slab_changes;
        d.due.clear();
        d.found.clear();
        d.evicted = Vec::new();
        d.pos = 0;
        if d.due.capacity() > DUE_KEPT {
            d.due = Vec::new();
            d.found = Vec::new();
        }
    }
}
