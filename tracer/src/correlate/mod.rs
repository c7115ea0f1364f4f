//! Correlation: hop records in, one [`Trace`] per packet out, with its outcome and evidence.
//!
//! The correlate stage of the pipeline (see `pipeline`): it stops at the outcome and the
//! evidence (the drop, the route lookups); the verdict stage judges the trace after it. Pure:
//! no I/O and no clock. The caller passes "now" to [`Correlator::expire`], so the same code runs live and on
//! recorded files, and is unit-tested with synthetic records.
//!
//! Design notes:
//! - **Identity.** Hops belong to one trace when their [`PacketId`] is equal and the trace's
//!   hops, this one included, span at most `window_ns`. A hop equal to one already in the
//!   trace in (netns, ifindex, direction, ts) is a duplicate (dropped, counted). A hop at a
//!   (netns, ifindex, direction) the trace already has, at another time, is another packet
//!   that reused the identity (a retransmission): it never joins that trace. When several open
//!   traces share the identity, the hop joins the one closest to it in time.
//! - **Hot path.** `push` makes no allocation of its own beyond the trace's hop `Vec` (and,
//!   about once a millisecond, an expiry bucket). Open traces live in a slab (`Vec<Slot>` + free list);
//!   the identity index maps a packed 184-bit identity to the newest open trace with it, and
//!   traces with the same identity are chained through the slab. Interfaces are resolved once
//!   per `(netns, ifindex)` into an interned table, so a hop stores a `u32`, not names.
//!   Names are copied into [`TraceHop`]s only when a trace is emitted.
//! - **Expiry.** Each open trace is filed under the ~1 ms bucket (`ts >> 20`) of its newest
//!   hop in an ordered map; when its newest hop moves to a later bucket it is filed again and
//!   the old entry goes stale (detected by slot generation and bucket, skipped lazily). So
//!   `push` touches the map at most once per new trace or bucket change, and `expire` visits
//!   only buckets at or before the cut-off, checking the boundary bucket hop by hop: it emits
//!   exactly the traces whose newest hop is older than `now - linger_ns`.
//! - **Memory.** At most `max_open` traces are open. Opening one more first emits the oldest
//!   (oldest newest hop, to bucket precision) early; it is counted in `evicted` and handed out
//!   by the next `expire`/`finish`.
//! - **One identity, many packets.** At most [`MAX_SAME_IDENTITY`] open traces share an
//!   identity; opening one more first emits the oldest of them early (`identity_evicted`). So
//!   the chain `push` walks stays short even when a flow sends many packets that look alike
//!   (UDP from an unconnected socket with DF set carries IP ID 0, a replayed or looping
//!   packet): without the bound, 80,000 such packets within the linger made every push walk
//!   every earlier one, and the tracer spent 20 s on one drain.
//! - **Outcome.** Decided when a trace is emitted, from its last hop by time (see
//!   [`Outcome`]).
//! - **Limits.** A hop that arrives after its trace was emitted (later than the linger) starts
//!   a new trace, and a duplicate of an emitted hop is not recognised. Two packets with one
//!   identity whose hops interleave in time can be mixed up; the per-hop conflict rule keeps
//!   that to the rare case of out-of-order arrival within one window.
//! - The identity hash is a fast multiplicative hash, not a keyed one: the tracer trades hash
//!   flooding resistance (an identity-crafting pod can only slow its own chain) for speed.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::event::HopRecord;
use crate::fast_hash::FastMap;
use crate::model::{
    Captured, CorrelateStats, Direction, DropPoint, Encap, LinkChange, NatStep, Outcome, PacketId,
    Trace, TraceHop,
};
use crate::topology::{IfaceKind, Topology};

/// Open traces that may share one packet identity (see the design note).
pub const MAX_SAME_IDENTITY: usize = 16;

/// Tuning of the correlator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelateConfig {
    /// Maximum spread (first to last hop) of one packet's hops.
    pub window_ns: u64,
    /// How long a trace stays open after its newest hop before it is emitted.
    pub linger_ns: u64,
    /// Maximum number of open traces; beyond it the oldest is emitted early.
    pub max_open: usize,
    /// How long a trace that is neither delivered nor dropped stays open after its newest hop,
    /// waiting for a late drop: neighbour resolution gives up (NEIGH_FAILED) about 3 s after
    /// the packet was queued. Also the window within which a drop joins a trace.
    pub drop_wait_ns: u64,
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            window_ns: 1_000_000_000,
            linger_ns: 300_000_000,
            max_open: 1 << 20,
            drop_wait_ns: 4_000_000_000,
        }
    }
}

/// End of a chain of open traces sharing an identity.
const NIL: u32 = u32::MAX;
/// Expiry buckets are `ts >> BUCKET_SHIFT` (about 1 ms).
const BUCKET_SHIFT: u32 = 20;
/// The "bucket" of a trace found due, being handed out (`drain`): filed nowhere.
const DUE: u64 = u64::MAX;

/// A [`PacketId`] packed losslessly into three words (32+32 | 8+16+16+16 | 32+16+16 bits).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PackedId([u64; 3]);

impl PackedId {
    fn new(p: &PacketId) -> Self {
        PackedId([
            (u64::from(u32::from(p.src)) << 32) | u64::from(u32::from(p.dst)),
            (u64::from(p.proto) << 48)
                | (u64::from(p.sport) << 32)
                | (u64::from(p.dport) << 16)
                | u64::from(p.ip_id),
            (u64::from(p.tcp_seq) << 32) | (u64::from(p.icmp_id) << 16) | u64::from(p.icmp_seq),
        ])
    }
}

impl Hash for PackedId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.iter().for_each(|&w| state.write_u64(w));
    }
}

/// An interned interface: what a hop's `(netns, ifindex)` resolves to.
struct IfaceInfo {
    netns: u32,
    ifindex: u32,
    node: Arc<str>,
    ifname: Arc<str>,
    /// `None` when the topology does not know the interface.
    kind: Option<IfaceKind>,
}

/// A hop as stored while its trace is open.
#[derive(Clone)]
struct RawHop {
    ts_ns: u64,
    len: u32,
    iface: u32,
    dir: Direction,
    encap: Option<Encap>,
    /// Seen with the addresses after a NAT step (see `nat`).
    translated: bool,
    snap: Option<Arc<Captured>>,
}

struct OpenTrace {
    /// Its identity (the key it is indexed under is `PackedId::new(&packet)`).
    packet: PacketId,
    tcp_flags: u8,
    icmp_type: u8,
    first_ts: u64,
    last_ts: u64,
    /// Expiry bucket of `last_ts`: where the trace's live entry is filed.
    bucket: u64,
    /// Next open trace with the same identity, or `NIL`.
    next: u32,
    hops: Vec<RawHop>,
    /// The drop and the NAT steps, which few traces have: kept apart so that an open trace
    /// takes two cache lines, not five (hundreds of thousands are open at 1 M packets/s).
    extra: Option<Box<Extra>>,
}

#[derive(Default)]
struct Extra {
    drop: Option<DropPoint>,
    nat: Vec<NatStep>,
}

impl OpenTrace {
    fn drop(&self) -> Option<&DropPoint> {
        self.extra.as_ref()?.drop.as_ref()
    }

    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The drop and the NAT steps, taken out.
    fn take_extra(&mut self) -> (Option<DropPoint>, Vec<NatStep>) {
        match self.extra.take() {
            Some(e) => (e.drop, e.nat),
            None => (None, Vec::new()),
        }
    }
}

/// What identifies a trace besides its hops.
#[derive(Clone, Copy)]
struct TraceHead {
    packet: PacketId,
    tcp_flags: u8,
    icmp_type: u8,
}

/// How a hop relates to an open trace with the same identity.
enum Fit {
    Duplicate,
    /// Joins; the value is its distance in time from the trace's span.
    Joins(u64),
    /// Another packet (same hop at another time, or out of the window).
    Other,
}

impl OpenTrace {
    fn fit(&self, hop: &RawHop, window_ns: u64) -> Fit {
        let mut conflict = false;
        for h in &self.hops {
            if h.iface == hop.iface && h.dir == hop.dir {
                if h.ts_ns == hop.ts_ns {
                    return Fit::Duplicate;
                }
                conflict = true;
            }
        }
        let first = self.first_ts.min(hop.ts_ns);
        let last = self.last_ts.max(hop.ts_ns);
        if conflict || last - first > window_ns {
            return Fit::Other;
        }
        Fit::Joins(
            (self.first_ts.saturating_sub(hop.ts_ns)).max(hop.ts_ns.saturating_sub(self.last_ts)),
        )
    }
}

struct Slot {
    /// Bumped whenever the slot's trace is removed, so old expiry entries go stale.
    gen: u32,
    trace: Option<OpenTrace>,
}

#[derive(Clone, Copy)]
struct Entry {
    slot: u32,
    gen: u32,
}

/// Groups hop records into per-packet traces (see the module notes).
pub struct Correlator {
    topology: Topology,
    cfg: CorrelateConfig,
    ifaces: Vec<IfaceInfo>,
    iface_index: FastMap<u64, u32>,
    by_id: FastMap<PackedId, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    open: usize,
    buckets: BTreeMap<u64, Vec<Entry>>,
    /// Traces evicted early, handed out by the next `expire`/`finish`.
    ready: Vec<Trace>,
    /// The traces of the current `expire`/`finish`, being handed out.
    drain: drain::Drain,
    /// Traces opened and removed so far (see `drain`).
    slab_changes: u64,
    stats: CorrelateStats,
    /// Recent FIB lookups, attached to traces when they are emitted.
    fibs: evidence::RecentFibs,
    /// Time windows `[from, to]` in which the tracer lost events, oldest first.
    loss_windows: std::collections::VecDeque<(u64, u64)>,
}

impl Correlator {
    pub fn new(topology: Topology, cfg: CorrelateConfig) -> Self {
        let mut ifaces = Vec::new();
        let mut iface_index = FastMap::default();
        for node in &topology.nodes {
            for iface in &node.ifaces {
                let key = iface_key(node.netns, iface.ifindex);
                iface_index.entry(key).or_insert_with(|| {
                    ifaces.push(IfaceInfo {
                        netns: node.netns,
                        ifindex: iface.ifindex,
                        node: node.name.as_str().into(),
                        ifname: iface.name.as_str().into(),
                        kind: Some(iface.kind),
                    });
                    ifaces.len() as u32 - 1
                });
            }
        }
        Correlator {
            topology,
            cfg,
            ifaces,
            iface_index,
            by_id: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            buckets: BTreeMap::new(),
            ready: Vec::new(),
            drain: drain::Drain::default(),
            slab_changes: 0,
            stats: CorrelateStats::default(),
            fibs: evidence::RecentFibs::default(),
            loss_windows: std::collections::VecDeque::new(),
        }
    }

    /// The tracer lost events (ring buffer full) somewhere in `[from_ns, to_ns]` (between two
    /// drains): traces in flight then cannot be called lost.
    pub fn note_tracer_loss(&mut self, from_ns: u64, to_ns: u64) {
        self.stats.loss_windows += 1;
        // Windows older than anything that can still be open are of no use.
        let horizon = self.cfg.window_ns + self.cfg.drop_wait_ns + self.cfg.linger_ns;
        while self
            .loss_windows
            .front()
            .is_some_and(|&(_, to)| to + horizon < from_ns)
        {
            self.loss_windows.pop_front();
        }
        self.loss_windows.push_back((from_ns, to_ns));
    }

    /// Whether the tracer lost events while a packet seen from `first` to `last` could still
    /// have produced hops (up to the drop wait after its last one).
    fn lost_events_during(&self, first: u64, last: u64) -> bool {
        let until = last + self.cfg.drop_wait_ns;
        self.loss_windows
            .iter()
            .any(|&(from, to)| from <= until && to >= first)
    }

    /// Adds one hop record (any order, duplicates allowed).
    pub fn push(&mut self, hop: HopRecord) {
        self.push_hop(hop, false);
    }

    /// Adds one hop record whose identity the pipeline translated back across a NAT step.
    pub fn push_translated(&mut self, hop: HopRecord) {
        self.push_hop(hop, true);
    }

    fn push_hop(&mut self, hop: HopRecord, translated: bool) {
        self.stats.hops_seen += 1;
        let raw = RawHop {
            ts_ns: hop.ts_ns,
            len: hop.len,
            iface: self.iface_id(hop.netns, hop.ifindex),
            dir: hop.dir,
            encap: hop.encap,
            translated,
            snap: hop.snap.clone(),
        };
        let key = PackedId::new(&hop.packet);
        let mut best: Option<(u64, u32)> = None;
        let mut cur = self.by_id.get(&key).copied().unwrap_or(NIL);
        while cur != NIL {
            let Some(t) = self.slots[cur as usize].trace.as_ref() else {
                break;
            };
            match t.fit(&raw, self.cfg.window_ns) {
                Fit::Duplicate => {
                    self.stats.duplicates += 1;
                    return;
                }
                Fit::Joins(d) if best.is_none_or(|(bd, _)| d < bd) => best = Some((d, cur)),
                Fit::Joins(_) | Fit::Other => {}
            }
            cur = t.next;
        }
        match best {
            Some((_, slot)) => self.join(slot, raw),
            None => self.open_trace(key, &hop, raw),
        }
    }

    /// Emits the traces whose newest hop is older than `now_ns - linger_ns`, plus any evicted
    /// early, ordered by first-hop time.
    #[cfg(test)]
    pub fn expire(&mut self, now_ns: u64) -> Vec<Trace> {
        self.start_expire(now_ns);
        std::iter::from_fn(|| self.next_due()).collect()
    }

    /// [`Correlator::expire`], the traces handed out one by one by [`Correlator::next_due`].
    pub fn start_expire(&mut self, now_ns: u64) {
        let cutoff = now_ns.saturating_sub(self.cfg.linger_ns);
        let cutoff_bucket = cutoff >> BUCKET_SHIFT;
        self.start_drain();
        while let Some(first) = self.buckets.first_entry() {
            let bucket = *first.key();
            if bucket > cutoff_bucket {
                break;
            }
            let entries = first.remove();
            let mut keep = Vec::new();
            for e in entries {
                if !is_current(&self.slots, e, bucket) {
                    continue;
                }
                // In buckets before the cut-off's, every current trace has expired.
                let last = self.slots[e.slot as usize]
                    .trace
                    .as_ref()
                    .map_or(0, |t| t.last_ts);
                if bucket < cutoff_bucket || last < cutoff {
                    if let Some(later) = self.hold_for_drop(e.slot, bucket, now_ns) {
                        // Not settled yet: look again when a late drop would have arrived.
                        self.file(
                            later,
                            Entry {
                                slot: e.slot,
                                gen: e.gen,
                            },
                        );
                        continue;
                    }
                    // Due: no longer filed anywhere (its entries are gone or stale).
                    if let Some(t) = self.slots[e.slot as usize].trace.as_mut() {
                        t.bucket = DUE;
                    }
                    self.add_due(e.slot);
                } else {
                    keep.push(e);
                }
            }
            if !keep.is_empty() {
                // Only the cut-off's own bucket can keep entries, and it is the last one due.
                self.buckets.insert(bucket, keep);
                break;
            }
        }
        self.sort_drain();
    }

    /// For a trace that is neither delivered nor dropped and whose newest hop is younger than
    /// `drop_wait_ns`: moves its expiry to a later bucket (returned, always after `bucket`).
    fn hold_for_drop(&mut self, slot: u32, bucket: u64, now_ns: u64) -> Option<u64> {
        let wait = self.cfg.drop_wait_ns;
        if wait <= self.cfg.linger_ns {
            return None;
        }
        let t = self.slots[slot as usize].trace.as_ref()?;
        let release = t.last_ts.saturating_add(wait);
        if now_ns >= release || t.drop().is_some() {
            return None;
        }
        // Delivered, or gone out of the machine through its uplink (seen no more): no later
        // drop of this kernel can be this packet's, and holding every packet that leaves a
        // node for seconds is what a one-node tracer of a busy flow cannot afford (60k
        // packets/s held 4 s took 170 MB).
        let newest = t.hops.iter().max_by_key(|h| h.ts_ns)?;
        if matches!(
            self.outcome(&t.packet, std::slice::from_ref(newest)),
            Outcome::Delivered | Outcome::Lost
        ) {
            return None;
        }
        let later = ((release - self.cfg.linger_ns) >> BUCKET_SHIFT).max(bucket + 1);
        if let Some(t) = self.slots[slot as usize].trace.as_mut() {
            t.bucket = later;
        }
        Some(later)
    }

    /// Emits every trace still open (and any evicted early), ordered by first-hop time.
    #[cfg(test)]
    pub fn finish(&mut self) -> Vec<Trace> {
        self.start_finish();
        std::iter::from_fn(|| self.next_due()).collect()
    }

    /// [`Correlator::finish`], the traces handed out one by one by [`Correlator::next_due`].
    pub fn start_finish(&mut self) {
        self.start_drain();
        for slot in 0..self.slots.len() as u32 {
            if let Some(t) = self.slots[slot as usize].trace.as_mut() {
                t.bucket = DUE;
                self.add_due(slot);
            }
        }
        self.buckets.clear();
        self.sort_drain();
    }

    /// The longest span of one packet's hops.
    pub fn window_ns(&self) -> u64 {
        self.cfg.window_ns
    }

    pub fn stats(&self) -> &CorrelateStats {
        &self.stats
    }

    /// Number of traces currently open.
    pub fn open_traces(&self) -> usize {
        self.open
    }

    /// A traced node gained or lost an interface: a new one is known by name and role from now
    /// on (also if hops on it were seen before and named `if<N>`); a removed one keeps its name.
    pub fn link_change(&mut self, netns: u32, c: &LinkChange) {
        let Some(node) = self.topology.nodes.iter_mut().find(|n| n.netns == netns) else {
            return;
        };
        c.apply_to(node);
        if let LinkChange::Added { iface, .. } = c {
            let info = IfaceInfo {
                netns,
                ifindex: iface.ifindex,
                node: node.name.as_str().into(),
                ifname: iface.name.as_str().into(),
                kind: Some(iface.kind),
            };
            match self.iface_index.get(&iface_key(netns, iface.ifindex)) {
                Some(&id) => self.ifaces[id as usize] = info,
                None => {
                    self.ifaces.push(info);
                    let id = self.ifaces.len() as u32 - 1;
                    self.iface_index.insert(iface_key(netns, iface.ifindex), id);
                }
            }
        }
    }

    /// Interns `(netns, ifindex)`, counting hops on interfaces the topology does not know.
    fn iface_id(&mut self, netns: u32, ifindex: u32) -> u32 {
        let key = iface_key(netns, ifindex);
        let id = match self.iface_index.get(&key) {
            Some(&id) => id,
            None => self.intern_unknown(netns, ifindex),
        };
        if self.ifaces[id as usize].kind.is_none() {
            self.stats.unknown_iface_hops += 1;
        }
        id
    }

    #[cold]
    fn intern_unknown(&mut self, netns: u32, ifindex: u32) -> u32 {
        let node = match self.topology.node(netns) {
            Some(n) => n.name.clone(),
            None => format!("netns:{netns}"),
        };
        self.ifaces.push(IfaceInfo {
            netns,
            ifindex,
            node: node.into(),
            ifname: format!("if{ifindex}").into(),
            kind: None,
        });
        let id = self.ifaces.len() as u32 - 1;
        self.iface_index.insert(iface_key(netns, ifindex), id);
        id
    }

    fn join(&mut self, slot: u32, hop: RawHop) {
        let Some(t) = self.slots[slot as usize].trace.as_mut() else {
            return;
        };
        let ts_ns = hop.ts_ns;
        t.hops.push(hop);
        self.extend_span(slot, ts_ns);
    }

    /// Widens an open trace's time span to `ts_ns`, refiling it for expiry when needed.
    fn extend_span(&mut self, slot: u32, ts_ns: u64) {
        let Some(t) = self.slots[slot as usize].trace.as_mut() else {
            return;
        };
        t.first_ts = t.first_ts.min(ts_ns);
        if ts_ns > t.last_ts {
            t.last_ts = ts_ns;
            let bucket = ts_ns >> BUCKET_SHIFT;
            if bucket > t.bucket {
                t.bucket = bucket;
                let gen = self.slots[slot as usize].gen;
                self.file(bucket, Entry { slot, gen });
            }
        }
    }

    fn open_trace(&mut self, key: PackedId, rec: &HopRecord, hop: RawHop) {
        let ts_ns = hop.ts_ns;
        let mut hops = Vec::with_capacity(8);
        hops.push(hop);
        let head = TraceHead {
            packet: rec.packet,
            tcp_flags: rec.tcp_flags,
            icmp_type: rec.icmp_type,
        };
        self.open_slot(key, head, ts_ns, hops, None);
    }

    /// Removes an open trace and turns it into a [`Trace`] (no verdict yet: a later stage).
    fn emit(&mut self, slot: u32) -> Trace {
        let Some(mut open) = self.remove(slot) else {
            unreachable!("emit is only called on open slots")
        };
        let (drop, nat) = open.take_extra();
        let mut raw = open.hops;
        raw.sort_unstable_by_key(|h| (h.ts_ns, h.iface, h.dir));
        let mut outcome = match &drop {
            Some(_) => Outcome::Dropped,
            None => self.outcome(&open.packet, &raw),
        };
        let tracer_loss = matches!(outcome, Outcome::Lost | Outcome::Incomplete)
            && self.lost_events_during(open.first_ts, open.last_ts);
        if tracer_loss && outcome == Outcome::Lost {
            // The hops after the uplink may be among what the tracer lost.
            outcome = Outcome::Incomplete;
            self.stats.lost_withheld += 1;
        }
        let hops: Vec<TraceHop> = raw
            .into_iter()
            .map(|h| {
                let i = &self.ifaces[h.iface as usize];
                TraceHop {
                    node: i.node.clone(),
                    netns: i.netns,
                    ifindex: i.ifindex,
                    ifname: i.ifname.clone(),
                    kind: i.kind,
                    dir: h.dir,
                    ts_ns: h.ts_ns,
                    len: h.len,
                    encap: h.encap,
                    translated: h.translated,
                    snap: h.snap,
                }
            })
            .collect();
        let routes = self
            .fibs
            .for_packet(&open.packet, open.first_ts, open.last_ts, &hops);
        self.stats.traces_emitted += 1;
        Trace {
            packet: open.packet,
            tcp_flags: open.tcp_flags,
            icmp_type: open.icmp_type,
            hops,
            outcome,
            drop,
            routes,
            verdict: None,
            tracer_loss,
            nat,
            names: Vec::new(),
            answers: None,
        }
    }

    fn outcome(&self, packet: &PacketId, hops: &[RawHop]) -> Outcome {
        let Some(last) = hops.last() else {
            return Outcome::Incomplete;
        };
        let iface = &self.ifaces[last.iface as usize];
        let to_pod = last.dir == Direction::Egress && iface.kind == Some(IfaceKind::PodVeth);
        let to_node = last.dir == Direction::Ingress
            && (self.topology.owner_of(packet.dst)).is_some_and(|n| n.netns == iface.netns);
        if to_pod || to_node {
            Outcome::Delivered
        } else if last.dir == Direction::Egress && iface.kind == Some(IfaceKind::Uplink) {
            Outcome::Lost
        } else {
            Outcome::Incomplete
        }
    }
}

fn iface_key(netns: u32, ifindex: u32) -> u64 {
    (u64::from(netns) << 32) | u64::from(ifindex)
}

/// Whether `e`, filed under `bucket`, is the live expiry entry of an open trace.
fn is_current(slots: &[Slot], e: Entry, bucket: u64) -> bool {
    let s = &slots[e.slot as usize];
    s.gen == e.gen && s.trace.as_ref().is_some_and(|t| t.bucket == bucket)
}

mod drain;
mod evidence;
mod nat;
mod slots;

#[cfg(test)]
mod tests;
