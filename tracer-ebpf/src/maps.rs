//! Maps shared by the programs, the per-load globals, and the emit/count helpers: every
//! record reaches the ring buffer through [`emit`], the one place that fills the header.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    filter::FilterProgram, CtLayout, Event, EventBody, EventHeader, FibLayout, PktSlot, SkbLayout,
    Snap, CTR_RINGBUF_FULL, HIST_BUCKETS, MODE_EVENTS, N_COUNTERS, N_SEGMENTS, PKT_SLOTS,
    ROLE_ARRAY_LEN, SNAPLEN_MAX,
};
use tracer_common::{filter::FollowKey, parse::VxlanPorts};

/// Slots of [`FIB_SEEN`] (a power of two).
pub const FIB_SEEN_SLOTS: u32 = 4096;

/// One slot of [`FIB_SEEN`]: the pair last reported there and when (`bpf_ktime_get_ns`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct FibSeen {
    pub pair: u64,
    pub at: u64,
}

/// Default ring buffer size; user space may resize it before loading.
const RINGBUF_BYTES: u32 = 4 << 20;

/// `BPF_RB_NO_WAKEUP`: user space drains on a timer; a wakeup per event is too expensive.
pub const RB_NO_WAKEUP: u64 = 1;
/// `BPF_RB_FORCE_WAKEUP`: the ring buffer is filling up, user space must drain now.
const RB_FORCE_WAKEUP: u64 = 2;
/// `BPF_RB_AVAIL_DATA` for `bpf_ringbuf_query`: bytes produced and not yet consumed.
const RB_AVAIL_DATA: u64 = 0;

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RINGBUF_BYTES, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(N_COUNTERS, 0);

#[map]
pub static FILTER: Array<FilterProgram> = Array::with_max_entries(1, 0);

/// Flows the filter follows through NAT (see `filter`): filled by the NAT hook, read by every
/// program's filter. Shared by the hooks' and every node's programs through a pin in the
/// tracer's private bpffs when a filter is set.
#[map]
pub static NAT_FOLLOW: LruHashMap<FollowKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// Non-zero once the NAT hook has put a flow in `NAT_FOLLOW` (shared the same way): until
/// then a packet the filter rejects costs an array load instead of a hash lookup (28 ns of the
/// 42 ns a rejecting tc program spent on its own, `BPF_PROG_TEST_RUN`, 6.18).
#[map]
pub static NAT_FOLLOWING: Array<u32> = Array::with_max_entries(1, 0);

/// Network namespaces (inodes) whose drops are reported by the global hooks.
#[map]
pub static TRACED_NETNS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Last time a route lookup was reported per (source, destination, input interface): lookups
/// repeat for every forwarded packet, so a successful one is reported at most every
/// `FIB_EVERY_NS` per pair. A direct-mapped table indexed by a hash of the pair (an array
/// lookup, which the verifier inlines, instead of a hash map's): two pairs on one slot only
/// report their lookups more often.
#[map]
pub static FIB_SEEN: Array<FibSeen> = Array::with_max_entries(FIB_SEEN_SLOTS, 0);

/// Role (`ROLE_*`, 0: none) of each attached interface of this namespace whose ifindex is
/// below `ROLE_ARRAY_LEN` (aggregation): an array lookup, which the verifier inlines.
#[map]
pub static ROLE_BY_IFINDEX: Array<u8> = Array::with_max_entries(ROLE_ARRAY_LEN, 0);

/// Roles of the attached interfaces with larger ifindexes (nodes with a long pod churn).
#[map]
pub static ROLES: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// Where each in-flight packet was last seen (aggregation): a direct-mapped table indexed by
/// a hash of the packet's identity (see `PktSlot`). Shared by every traced namespace (user
/// space pins it in a private bpffs so that all loads use one map).
#[map]
pub static PKT_STATE: Array<PktSlot> = Array::with_max_entries(PKT_SLOTS, 0);

/// Per-CPU log2 latency histograms, one per segment (aggregation; shared like PKT_STATE).
#[map]
pub static LAT_HIST: PerCpuArray<[u64; HIST_BUCKETS]> =
    PerCpuArray::with_max_entries(N_SEGMENTS, 0);

/// Bytes waiting in the ring buffer from which a record wakes user space (set by user space
/// before loading: a quarter of the ring). Below it user space drains on its timer, so a quiet
/// or steady flow costs no wakeups; a burst is drained as soon as it reaches this mark, which
/// is what lets the ring buffer be small (see `capture`).
#[unsafe(no_mangle)]
static WAKE_BYTES: u64 = (RINGBUF_BYTES / 4) as u64;

/// `MODE_*` bits (set by user space before loading).
#[unsafe(no_mangle)]
static MODE: u32 = MODE_EVENTS;

/// Report one packet in N (1 = all), chosen by a hash of its identity so that every hop of a
/// sampled packet is reported.
#[unsafe(no_mangle)]
static SAMPLE_EVERY: u32 = 1;

/// Packet bytes each hop and drop carries (`--snaplen`; 0: none, at most `SNAPLEN_MAX`). A
/// frozen global: with 0, the verifier prunes the bytes path as dead code, so the programs
/// verify and run as without the option.
#[unsafe(no_mangle)]
static SNAPLEN: u32 = 0;

#[inline(always)]
pub fn snaplen() -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(&SNAPLEN) }
}

#[inline(always)]
pub fn mode() -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(&MODE) }
}

#[inline(always)]
pub fn sample_every() -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(&SAMPLE_EVERY) }
}

/// Kernel struct offsets for the drop hooks (patched in by user space from BTF; all zero,
/// `valid` included, in loads that do not attach them). Read-only and frozen like
/// [`FIB_OFFSETS`].
#[unsafe(no_mangle)]
static SKB_OFFSETS: SkbLayout = SkbLayout {
    valid: 0,
    skb_head: 0,
    skb_len: 0,
    skb_dev: 0,
    skb_network_header: 0,
    skb_mark: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    tp_skbaddr: 0,
    tp_location: 0,
    tp_reason: 0,
    skb_data: 0,
    skb_inner_network_header: 0,
    skb_nfct: 0,
    skb_tail: 0,
};

/// One offset of [`SKB_OFFSETS`] (a constant to the verifier), e.g.
/// `skb_offset(|l| &l.skb_dev)`.
#[inline(always)]
pub fn skb_offset(field: impl FnOnce(&SkbLayout) -> &u32) -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(field(&SKB_OFFSETS)) }
}

/// Kernel struct offsets for `tp_btf/fib_table_lookup` (patched in by user space from BTF;
/// all zero, `valid` included, in loads that do not attach it). Read-only and frozen, so the
/// verifier knows each offset: the program loads fields through its typed pointers directly.
#[unsafe(no_mangle)]
static FIB_OFFSETS: FibLayout = FibLayout {
    valid: 0,
    flow_oif: 0,
    flow_iif: 0,
    flow_proto: 0,
    flow_scope: 0,
    flow_saddr: 0,
    flow_daddr: 0,
    flow_dport: 0,
    flow_sport: 0,
    nhc_gw_family: 0,
    nhc_gw: 0,
    nhc_dev: 0,
    dev_name: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    _pad: 0,
};

/// Conntrack's layout for the NAT hook (patched in by user space from BTF; all zero in loads
/// that do not attach it).
#[unsafe(no_mangle)]
static CT_OFFSETS: CtLayout = CtLayout {
    valid: 0,
    ct_status: 0,
    ct_tuplehash: 0,
    tuplehash_size: 0,
    src_ip: 0,
    src_port: 0,
    dst_ip: 0,
    dst_port: 0,
    protonum: 0,
    _pad: [0; 7],
};

/// One offset of [`CT_OFFSETS`].
#[inline(always)]
pub fn ct_offset(field: impl FnOnce(&CtLayout) -> &u32) -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(field(&CT_OFFSETS)) }
}

/// One offset of [`FIB_OFFSETS`], read so that the verifier sees a load from the frozen
/// global (a known constant), e.g. `fib_offset(|l| &l.flow_saddr)`.
#[inline(always)]
pub fn fib_offset(field: impl FnOnce(&FibLayout) -> &u32) -> u32 {
    // SAFETY: as for `netns_ino`.
    unsafe { core::ptr::read_volatile(field(&FIB_OFFSETS)) }
}

/// Inode of the network namespace these programs are attached in (set by user space).
#[unsafe(no_mangle)]
static NETNS_INO: u32 = 0;

/// UDP destination ports that mark VXLAN: those of every traced node's VXLAN device (Felix
/// `vxlanPort`, default 4789); 0 is unused.
#[unsafe(no_mangle)]
static VXLAN_PORTS: [u16; 4] = [tracer_common::VXLAN_PORT, 0, 0, 0];

#[inline(always)]
pub fn netns_ino() -> u32 {
    // SAFETY: a plain read of a global that user space patched before loading; volatile so that
    // the compiler does not fold in the default.
    unsafe { core::ptr::read_volatile(&NETNS_INO) }
}

#[inline(always)]
pub fn vxlan_ports() -> VxlanPorts {
    // SAFETY: as for `netns_ino`.
    VxlanPorts(unsafe { core::ptr::read_volatile(&VXLAN_PORTS) })
}

#[inline(always)]
pub fn count(counter: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Writes one record (`header` from the arguments, then `body`) to the ring buffer, without a
/// wakeup unless the ring buffer holds `WAKE_BYTES` or more; a full ring buffer is counted
/// (`CTR_RINGBUF_FULL`), the tracer's own loss.
#[inline(always)]
pub fn emit<T: EventBody + 'static>(ts_ns: u64, netns: u32, ifindex: u32, body: T) {
    let Some(mut entry) = EVENTS.reserve::<Event<T>>(0) else {
        return count(CTR_RINGBUF_FULL);
    };
    entry.write(Event {
        header: EventHeader {
            kind: T::KIND,
            len: core::mem::size_of::<Event<T>>() as u16,
            // SAFETY: a helper without arguments, valid in every program type.
            cpu: unsafe { bpf_get_smp_processor_id() },
            ts_ns,
            netns,
            ifindex,
        },
        body,
    });
    entry.submit(submit_flags());
}

/// `BPF_RB_FORCE_WAKEUP` once `WAKE_BYTES` or more wait in the ring buffer, else no wakeup.
#[inline(always)]
fn submit_flags() -> u64 {
    // SAFETY: as for `netns_ino`.
    let wake = unsafe { core::ptr::read_volatile(&WAKE_BYTES) };
    if EVENTS.query(RB_AVAIL_DATA) >= wake {
        RB_FORCE_WAKEUP
    } else {
        RB_NO_WAKEUP
    }
}

/// `n` (in `1..=SNAPLEN_MAX`) computed so that the verifier sees those bounds in the register
/// handed to a helper: read back opaquely (LLVM may not fold what follows), then
/// `((n - 1) & (SNAPLEN_MAX - 1)) + 1`, which is `n` again. Without it, LLVM tests `n == 0` on
/// another copy than the one it passes, and 6.1's verifier rejects the size's lower bound of 0
/// (`invalid access to memory ... size=0`; 6.18's accepts it).
#[inline(always)]
pub fn verifier_bounded(n: u32) -> u32 {
    const _: () = assert!(SNAPLEN_MAX.is_power_of_two());
    // SAFETY: a volatile read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    (n.wrapping_sub(1) & (SNAPLEN_MAX as u32 - 1)) + 1
}

/// Like [`emit`], for a body that ends in a [`Snap`]: `write_body` writes the body but the
/// snap (the record itself, not a copy on the stack) and returns where the snap is; `fill` copies at most `max` packet
/// bytes into the snap's data (straight into the ring buffer, nothing on the stack) and
/// returns how many, with the packet's length from its first byte; the header declares only
/// the bytes written (`snap_record_len`), and user space cuts the record there.
#[inline(always)]
pub fn emit_snap<T: EventBody + 'static>(
    ts_ns: u64,
    netns: u32,
    ifindex: u32,
    write_body: impl FnOnce(*mut T) -> *mut Snap,
    link: u8,
    fill: impl FnOnce(*mut u8) -> (u32, u32),
) {
    let Some(mut entry) = EVENTS.reserve::<Event<T>>(0) else {
        return count(CTR_RINGBUF_FULL);
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of `Event<T>`'s size; each field is written
    // through a raw pointer before the record is submitted (the snap's data only up to the
    // bytes copied, which is what the header declares).
    unsafe {
        let snap = write_body(core::ptr::addr_of_mut!((*ev).body));
        let (cap, orig_len) = fill(core::ptr::addr_of_mut!((*snap).data).cast::<u8>());
        let cap = cap.min(SNAPLEN_MAX as u32);
        core::ptr::addr_of_mut!((*snap).cap_len).write(cap as u16);
        core::ptr::addr_of_mut!((*snap).link).write(link);
        core::ptr::addr_of_mut!((*snap).orig_len).write(orig_len);
        core::ptr::addr_of_mut!((*ev).header).write(EventHeader {
            kind: T::KIND,
            len: tracer_common::snap_record_len::<T>(cap as usize) as u16,
            cpu: bpf_get_smp_processor_id(),
            ts_ns,
            netns,
            ifindex,
        });
    }
    entry.submit(submit_flags());
}
