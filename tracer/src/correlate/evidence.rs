//! Evidence beyond tc hops: kernel drops and FIB lookups, attached to the packet traces.
//!
//! A drop record carries the dropped packet's (inner) identity, so it joins the open trace of
//! that packet the way a hop does; a drop with no open trace starts one (a packet dropped before
//! any traced hop). Noise never reaches here (the pipeline drops it after naming). FIB lookups
//! carry no namespace: the recent ones are kept in a bounded ring and attached to a trace by
//! destination address and time.

use std::collections::VecDeque;

use super::{Correlator, Entry, PackedId, TraceHead, BUCKET_SHIFT, NIL};
use crate::event::{DropRecord, FibRecord};
use crate::model::{DropPoint, PacketId, RouteLookup, TraceHop};

impl RouteLookup {
    fn from_record(f: &FibRecord) -> Self {
        RouteLookup {
            ts_ns: f.ts_ns,
            netns: f.netns,
            table: f.table,
            err: f.err,
            src: f.src,
            dst: f.dst,
            oif: f.oif,
            iif: f.iif,
            dev: f.dev_name().to_string(),
            gw: f.gw,
        }
    }
}

/// Most FIB lookups kept; older ones are forgotten.
const MAX_FIBS: usize = 16 * 1024;
/// Most lookups attached to one trace.
const MAX_ROUTES_PER_TRACE: usize = 8;
/// Lookups up to this long before a trace's first hop still describe it: the kernel reports a
/// successful lookup of a (source, destination) pair at most every 100 ms, and the lookup of a
/// locally generated packet happens before its first tc hop.
const FIB_LEAD_NS: u64 = 1_000_000_000;

/// A bounded ring of recent lookups.
#[derive(Default)]
pub(super) struct RecentFibs {
    ring: VecDeque<FibRecord>,
}

impl RecentFibs {
    fn push(&mut self, f: FibRecord) {
        if self.ring.len() == MAX_FIBS {
            self.ring.pop_front();
        }
        self.ring.push_back(f);
    }

    /// Lookups for `packet`'s destination in `[first - lead, last]`, oldest first, at most a
    /// few; a lookup whose namespace is known must be one of the namespaces of `hops`.
    ///
    /// Runs for every emitted trace, so it allocates only what it returns: the window is found
    /// from the newest end of the ring, repeats are recognised on the raw records, and only the
    /// lookups kept become [`RouteLookup`]s (each with its device name as a `String`).
    pub(super) fn for_packet(
        &self,
        packet: &PacketId,
        first: u64,
        last: u64,
        hops: &[TraceHop],
    ) -> Vec<RouteLookup> {
        let from = first.saturating_sub(FIB_LEAD_NS);
        // Records arrive in drain order, close to time order: scanning back to a second before
        // the window covers any reordering between ring buffers.
        let stop = from.saturating_sub(FIB_LEAD_NS);
        let start = self
            .ring
            .iter()
            .rposition(|f| f.ts_ns < stop)
            .map_or(0, |i| i + 1);
        // Indices of the distinct matching lookups, oldest first (a repeat of an earlier one
        // says nothing new).
        let mut distinct: Vec<usize> = Vec::new();
        for (i, f) in self.ring.iter().enumerate().skip(start) {
            let wanted = f.ts_ns >= from
                && f.ts_ns <= last
                && f.dst == packet.dst
                && (f.netns == 0 || hops.iter().any(|h| h.netns == f.netns))
                // Calico pods route via 169.254.1.1: a lookup choosing a link-local gateway is
                // the pod's own, not a node's (what tells them apart when the namespace is
                // unknown).
                && !f.gw.is_some_and(|g| g.is_link_local());
            if wanted && !distinct.iter().any(|&d| same_lookup(&self.ring[d], f)) {
                distinct.push(i);
            }
        }
        let keep = distinct.len().saturating_sub(MAX_ROUTES_PER_TRACE);
        distinct[keep..]
            .iter()
            .map(|&i| RouteLookup::from_record(&self.ring[i]))
            .collect()
    }
}

/// The same lookup, whenever it was made (every field a [`RouteLookup`] shows but the time).
fn same_lookup(a: &FibRecord, b: &FibRecord) -> bool {
    (a.netns, a.table, a.err, a.src, a.dst) == (b.netns, b.table, b.err, b.src, b.dst)
        && (a.oif, a.iif, a.gw) == (b.oif, b.iif, b.gw)
        && a.dev_bytes() == b.dev_bytes()
}

impl Correlator {
    /// Adds one FIB lookup.
    pub fn push_fib(&mut self, f: FibRecord) {
        self.fibs.push(f);
    }

    /// Adds one drop (not noise), with its reason name and symbolised location already
    /// resolved.
    pub fn push_drop(&mut self, d: &DropRecord, reason: &str, function: String) {
        let (node, ifname) = self.drop_names(d.netns, d.ifindex);
        let point = DropPoint {
            node,
            netns: d.netns,
            ifindex: d.ifindex,
            ifname,
            ts_ns: d.ts_ns,
            reason: reason.to_string(),
            reason_code: d.reason,
            function,
            location: d.location,
            len: d.len,
            encap: d.encap,
            snap: d.snap.clone(),
        };
        let key = PackedId::new(&d.packet);
        let mut best: Option<(u64, u32)> = None;
        let mut cur = self.by_id.get(&key).copied().unwrap_or(NIL);
        while cur != NIL {
            let Some(t) = self.slots[cur as usize].trace.as_ref() else {
                break;
            };
            let first = t.first_ts.min(d.ts_ns);
            let last = t.last_ts.max(d.ts_ns);
            let window = self.cfg.window_ns.max(self.cfg.drop_wait_ns);
            if t.drop().is_none() && last - first <= window {
                let dist = t
                    .first_ts
                    .saturating_sub(d.ts_ns)
                    .max(d.ts_ns.saturating_sub(t.last_ts));
                if best.is_none_or(|(bd, _)| dist < bd) {
                    best = Some((dist, cur));
                }
            }
            cur = t.next;
        }
        match best {
            Some((_, slot)) => {
                self.extend_span(slot, d.ts_ns);
                // A settled trace: file it by its newest event again (it may have been held
                // for a late drop), so that it is emitted one linger after the drop.
                let gen = self.slots[slot as usize].gen;
                if let Some(t) = self.slots[slot as usize].trace.as_mut() {
                    t.extra_mut().drop = Some(point);
                    t.bucket = t.last_ts >> BUCKET_SHIFT;
                    let bucket = t.bucket;
                    self.file(bucket, Entry { slot, gen });
                }
            }
            None => {
                let head = TraceHead {
                    packet: d.packet,
                    tcp_flags: 0,
                    icmp_type: d.icmp_type,
                };
                self.open_slot(key, head, d.ts_ns, Vec::new(), Some(point));
            }
        }
    }

    /// Node and device names of a drop: the device need not be one the tracer attached to.
    fn drop_names(&self, netns: u32, ifindex: u32) -> (String, String) {
        let Some(node) = self.topology.node_or_pod(netns) else {
            return (format!("netns:{netns}"), format!("if{ifindex}"));
        };
        let ifname = if ifindex == 0 {
            "-".to_string()
        } else {
            node.link_name(ifindex)
                .map_or_else(|| format!("if{ifindex}"), str::to_string)
        };
        (node.name.clone(), ifname)
    }
}
