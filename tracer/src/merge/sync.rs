//! Wire crossings between recordings: the same packet seen leaving one recording's uplink and
//! arriving at another's, matched by identity, become constraints on the two clocks' offset
//! (see `offset`).
//!
//! A packet is the same at both ends when its inner identity ([`PacketId`]) and, when it is
//! encapsulated, its outer source, destination and source port agree. Times of different
//! recordings are compared only roughly, on their wall clocks (each recording's clock samples
//! map its monotonic time to its wall clock), to keep identities reused over time apart: a
//! crossing is used only when exactly one candidate lies within [`WINDOW_NS`]. Pending hops
//! older than the window are forgotten, so memory follows the packet rate, not the length of
//! the recordings. Per pair, only the tightest constraint of each direction per millisecond
//! is kept: a dropped constraint is a looser one, so the bound stays valid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use super::offset::{Constraint, Constraints};
use crate::event::HopRecord;
use crate::model::{Direction, PacketId};
use crate::topology::{IfaceKind, Topology};

/// How far apart (wall clock) the two ends of one crossing may be. Wall clocks kept by NTP
/// agree within milliseconds; this also covers a machine without NTP that booted recently.
pub const WINDOW_NS: u64 = 2_000_000_000;
/// Constraints of one direction kept per pair per bucket of this many ns of the first clock.
const BUCKET_NS: u64 = 1_000_000;
/// Pending hops are swept when this many were added since the last sweep.
const SWEEP_EVERY: usize = 65_536;

/// What identifies one packet at both ends of the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    packet: PacketId,
    outer: Option<(Ipv4Addr, Ipv4Addr, u16)>,
}

/// One end of a crossing seen, waiting for the other.
#[derive(Clone, Copy)]
struct End {
    rec: usize,
    ts_ns: u64,
    wall_ns: i128,
}

/// The constraints of one pair `(i, j)`, `i < j`, on `θ = clock_j − clock_i`, tightest per bucket.
#[derive(Default)]
struct PairBuckets {
    upper: BTreeMap<u64, Constraint>,
    lower: BTreeMap<u64, Constraint>,
}

/// Collects crossings from the hops of every recording.
pub struct WireMatcher {
    /// Per recording: its uplinks `(netns inode, ifindex)`.
    uplinks: Vec<HashSet<(u32, u32)>>,
    /// Per recording: `wall − monotonic` from its latest clock sample.
    wall_minus_mono: Vec<Option<i128>>,
    tx: HashMap<Key, Vec<End>>,
    rx: HashMap<Key, Vec<End>>,
    added: usize,
    newest_wall: i128,
    pairs: BTreeMap<(usize, usize), PairBuckets>,
    /// Crossings skipped because several candidates matched.
    pub ambiguous: u64,
    pub matched: u64,
}

impl WireMatcher {
    pub fn new(topologies: &[&Topology]) -> Self {
        let uplinks = topologies
            .iter()
            .map(|t| {
                t.nodes
                    .iter()
                    .flat_map(|n| {
                        n.ifaces
                            .iter()
                            .filter(|i| i.kind == IfaceKind::Uplink)
                            .map(move |i| (n.netns, i.ifindex))
                    })
                    .collect()
            })
            .collect();
        WireMatcher {
            uplinks,
            wall_minus_mono: vec![None; topologies.len()],
            tx: HashMap::new(),
            rx: HashMap::new(),
            added: 0,
            newest_wall: i128::MIN,
            pairs: BTreeMap::new(),
            ambiguous: 0,
            matched: 0,
        }
    }

    /// Recording `rec` sampled its clocks: its wall clock is `wall_minus_mono` ahead of its
    /// monotonic clock.
    pub fn clock(&mut self, rec: usize, wall_minus_mono: i128) {
        self.wall_minus_mono[rec] = Some(wall_minus_mono);
    }

    /// A hop of recording `rec`, as recorded (its own namespace inodes and clock).
    pub fn hop(&mut self, rec: usize, h: &HopRecord) {
        if !self.uplinks[rec].contains(&(h.netns, h.ifindex)) {
            return;
        }
        // Without a clock sample (a version 1 recording) the monotonic time stands in.
        let wall = i128::from(h.ts_ns) + self.wall_minus_mono[rec].unwrap_or(0);
        let key = Key {
            packet: h.packet,
            outer: h.encap.map(|e| (e.outer_src, e.outer_dst, e.outer_sport)),
        };
        let end = End {
            rec,
            ts_ns: h.ts_ns,
            wall_ns: wall,
        };
        let egress = h.dir == Direction::Egress;
        let (other, mine) = if egress {
            (&mut self.rx, &mut self.tx)
        } else {
            (&mut self.tx, &mut self.rx)
        };
        let window = i128::from(WINDOW_NS);
        let found = other.get_mut(&key).map(|ends| {
            let near: Vec<usize> = (0..ends.len())
                .filter(|&i| ends[i].rec != rec && (ends[i].wall_ns - wall).abs() <= window)
                .collect();
            match near.as_slice() {
                [one] => Some(ends.swap_remove(*one)),
                [] => None,
                _ => {
                    // Several packets with one identity within the window: none is trusted.
                    for &i in near.iter().rev() {
                        ends.swap_remove(i);
                    }
                    Some(End {
                        rec: usize::MAX,
                        ts_ns: 0,
                        wall_ns: 0,
                    })
                }
            }
        });
        match found.flatten() {
            Some(peer) if peer.rec == usize::MAX => self.ambiguous += 1,
            Some(peer) => {
                let (tx, rx) = if egress { (end, peer) } else { (peer, end) };
                self.crossing(tx, rx);
            }
            None => {
                mine.entry(key).or_default().push(end);
                self.added += 1;
            }
        }
        self.newest_wall = self.newest_wall.max(wall);
        if self.added >= SWEEP_EVERY {
            self.sweep();
        }
    }

    /// A packet left recording `tx.rec` and arrived at `rx.rec`.
    fn crossing(&mut self, tx: End, rx: End) {
        self.matched += 1;
        // θ = clock_j − clock_i for i < j; the constraint's time is on clock i.
        let (i, j, upper) = if tx.rec < rx.rec {
            (tx, rx, true)
        } else {
            (rx, tx, false)
        };
        let c = Constraint {
            t_ns: i.ts_ns,
            value_ns: (i128::from(j.ts_ns) - i128::from(i.ts_ns)) as i64,
        };
        let pair = self.pairs.entry((i.rec, j.rec)).or_default();
        let bucket = c.t_ns / BUCKET_NS;
        if upper {
            let e = pair.upper.entry(bucket).or_insert(c);
            if c.value_ns < e.value_ns {
                *e = c;
            }
        } else {
            let e = pair.lower.entry(bucket).or_insert(c);
            if c.value_ns > e.value_ns {
                *e = c;
            }
        }
    }

    /// Forgets pending ends older than the window.
    fn sweep(&mut self) {
        let cut = self.newest_wall - 2 * i128::from(WINDOW_NS);
        for map in [&mut self.tx, &mut self.rx] {
            map.retain(|_, ends| {
                ends.retain(|e| e.wall_ns >= cut);
                !ends.is_empty()
            });
        }
        self.added = 0;
    }

    /// The constraints of every pair that exchanged packets, `(i, j)` with `i < j`.
    pub fn constraints(&self) -> BTreeMap<(usize, usize), Constraints> {
        self.pairs
            .iter()
            .map(|(&k, p)| {
                (
                    k,
                    Constraints {
                        upper: p.upper.values().copied().collect(),
                        lower: p.lower.values().copied().collect(),
                    },
                )
            })
            .collect()
    }
}
