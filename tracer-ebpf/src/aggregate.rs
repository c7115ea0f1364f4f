//! In-kernel latency aggregation: no event per packet. Each hop looks up where the packet was
//! last seen (a shared direct-mapped table indexed by a hash of its identity, see `PktSlot`),
//! adds the time since then to the per-CPU log2 histogram of the segment it closes, and records
//! itself. User space merges the per-CPU
//! histograms. Segments: node-tx (pod ingress -> uplink egress), encap (tunnel egress -> uplink
//! egress), wire (uplink egress -> another node's uplink ingress), decap (uplink ingress ->
//! tunnel ingress), node-rx (uplink ingress -> pod egress), same-node (pod ingress -> pod
//! egress), total (first hop -> pod egress).

use tracer_common::{
    Ipv4Packet, PktKey, PktState, CTR_AGG_MAP_FULL, DIR_EGRESS, DIR_INGRESS, HIST_BUCKETS,
    PKT_SLOTS, ROLE_ARRAY_LEN, ROLE_POD, ROLE_TUNNEL, ROLE_UPLINK, SEG_DECAP, SEG_ENCAP,
    SEG_NODE_RX, SEG_NODE_TX, SEG_SAME_NODE, SEG_TOTAL, SEG_WIRE,
};

use crate::maps::{count, LAT_HIST, PKT_STATE, ROLES, ROLE_BY_IFINDEX};

/// A slot whose packet was last seen longer ago than this was abandoned (the packet was
/// dropped or left the traced nodes; crossing two nodes takes microseconds): taking it over
/// loses nothing and is not counted.
const ABANDONED_NS: u64 = 100_000_000;

#[inline(always)]
fn point(role: u8, dir: u8) -> u8 {
    (role << 1) | dir
}

/// The identity used to follow a packet (the same fields as user-space correlation).
#[inline(always)]
pub fn key_of(p: &Ipv4Packet) -> PktKey {
    let (a, b) = if p.proto == 1 {
        (p.icmp_id, p.icmp_seq)
    } else {
        (p.sport, p.dport)
    };
    PktKey {
        saddr: p.saddr,
        daddr: p.daddr,
        a,
        b,
        ip_id: p.ip_id,
        proto: p.proto,
        _pad: 0,
        tcp_seq: p.tcp_seq,
    }
}

/// floor(log2(v)) for v > 0, 0 for 0: six compare-and-shift steps (BPF has no clz).
#[inline(always)]
fn log2(mut v: u64) -> usize {
    let mut r = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

#[inline(always)]
fn record(segment: u32, delta: u64) {
    if let Some(hist) = LAT_HIST.get_ptr_mut(segment) {
        let bucket = log2(delta);
        if bucket < HIST_BUCKETS {
            // SAFETY: per-CPU slot, index checked.
            unsafe { (*hist)[bucket] += 1 };
        }
    }
}

/// Accounts one hop of `pkt` seen at `ifindex` (direction `dir`) in `netns` at `ts`.
#[inline(always)]
pub fn hop(pkt: &Ipv4Packet, ifindex: u32, dir: u8, netns: u32, ts: u64) {
    let role = if ifindex < ROLE_ARRAY_LEN {
        ROLE_BY_IFINDEX.get(ifindex).copied().unwrap_or(0)
    } else {
        // SAFETY: map lookup with a key on the stack.
        unsafe { ROLES.get(ifindex) }.copied().unwrap_or(0)
    };
    if role == 0 {
        return;
    }
    let key = key_of(pkt);
    let here = point(role, dir);
    let Some(slot) = PKT_STATE.get_ptr_mut(identity_hash(&key) & (PKT_SLOTS - 1)) else {
        return;
    };
    // SAFETY: the pointer comes from a lookup of this array with an index below its size; the
    // slot is updated in place (the hops of one packet follow each other, so only a packet
    // with a colliding hash could write it meanwhile, which at worst skews that one sample).
    let slot = unsafe { &mut *slot };
    if slot.live == 0 || slot.key != key {
        // First sighting: take the slot (a delivered packet's last hop does not).
        if here == point(ROLE_POD, DIR_EGRESS) {
            return;
        }
        if slot.live != 0 && ts.saturating_sub(slot.state.last_ts) < ABANDONED_NS {
            count(CTR_AGG_MAP_FULL);
        }
        slot.key = key;
        slot.live = 1;
        slot.state = PktState {
            first_ts: ts,
            entry_ts: ts,
            last_ts: ts,
            netns,
            entry_point: here,
            last_point: here,
            _pad: 0,
        };
        return;
    }
    let state = &mut slot.state;
    if ts >= state.last_ts {
        let same_node = state.netns == netns;
        let since_last = ts - state.last_ts;
        let since_entry = ts.saturating_sub(state.entry_ts);
        let last = state.last_point;
        let entry = state.entry_point;
        if here == point(ROLE_UPLINK, DIR_EGRESS) && same_node {
            if entry == point(ROLE_POD, DIR_INGRESS) {
                record(SEG_NODE_TX, since_entry);
            }
            if last == point(ROLE_TUNNEL, DIR_EGRESS) {
                record(SEG_ENCAP, since_last);
            }
        } else if here == point(ROLE_UPLINK, DIR_INGRESS) && !same_node {
            if last == point(ROLE_UPLINK, DIR_EGRESS) {
                record(SEG_WIRE, since_last);
            }
        } else if here == point(ROLE_TUNNEL, DIR_INGRESS) && same_node {
            if last == point(ROLE_UPLINK, DIR_INGRESS) {
                record(SEG_DECAP, since_last);
            }
        } else if here == point(ROLE_POD, DIR_EGRESS) && same_node {
            if entry == point(ROLE_UPLINK, DIR_INGRESS) {
                record(SEG_NODE_RX, since_entry);
            } else if entry == point(ROLE_POD, DIR_INGRESS) {
                record(SEG_SAME_NODE, since_entry);
            }
            record(SEG_TOTAL, ts.saturating_sub(state.first_ts));
        }
    }
    if here == point(ROLE_POD, DIR_EGRESS) {
        // Delivered: free the slot.
        slot.live = 0;
        return;
    }
    if state.netns != netns || here == point(ROLE_POD, DIR_INGRESS) {
        state.entry_ts = ts;
        state.entry_point = here;
    }
    state.netns = netns;
    state.last_ts = ts;
    state.last_point = here;
}

/// A stable hash of the packet identity (for `--sample`): FNV-1a over the key's words.
#[inline(always)]
pub fn identity_hash(k: &PktKey) -> u32 {
    let words = [
        u32::from_ne_bytes(k.saddr),
        u32::from_ne_bytes(k.daddr),
        (u32::from(k.a) << 16) | u32::from(k.b),
        (u32::from(k.ip_id) << 8) | u32::from(k.proto),
        k.tcp_seq,
    ];
    let mut h: u32 = 0x811c_9dc5;
    for w in words {
        h ^= w;
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^ (h >> 16)
}
