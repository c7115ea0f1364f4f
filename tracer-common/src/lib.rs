//! Wire types shared by the kernel programs (`tracer-ebpf`) and user space (`tracer`).
//!
//! Design notes:
//! - Every record that crosses the ring buffer is an [`Event<T>`]: an [`EventHeader`] (kind,
//!   length, time, CPU, namespace, interface), then a body `T` whose kind is
//!   [`EventBody::KIND`]. The kernel fills the header in one helper and user space reads it in
//!   one place; it checks `kind` and `len` before it reads a body, so a record written by a
//!   different build is rejected, never misread.
//! - `#[repr(C)]`, explicit padding, `u8`/`u32` flags instead of `bool`, and a size assertion
//!   beside each type: the two sides cannot disagree silently.
//! - Addresses are kept as the four bytes seen on the wire; ports, IP IDs and sequence numbers
//!   are converted to host order in the kernel.
//! - Nothing here is specific to one kernel build.
#![no_std]

pub mod filter;
pub mod parse;

/// Record kinds (`EventHeader::kind`).
pub const EVENT_HOP: u16 = 1;
/// A packet freed by `kfree_skb` with a drop reason (`DropEvent`).
pub const EVENT_DROP: u16 = 2;
/// A FIB lookup seen by the `fib:fib_table_lookup` tracepoint (`FibEvent`).
pub const EVENT_FIB: u16 = 3;
/// An encapsulation function entered (fentry/kprobe, where the kernel allows) (`FuncEvent`).
pub const EVENT_FUNC: u16 = 4;
/// A packet leaving a device with other addresses or ports than it entered the node with:
/// NAT by conntrack (`NatEvent`).
pub const EVENT_NAT: u16 = 5;
/// A tc hop with the first bytes of its packet (`--snaplen`): `Hop`, then a [`Snap`]
/// (`HopBytes`). Only emitted when `SNAPLEN` is non-zero.
pub const EVENT_HOP_BYTES: u16 = 6;
/// A drop with the first bytes of its packet from the network header (`DropBytes`).
pub const EVENT_DROP_BYTES: u16 = 7;

/// The most packet bytes a record carries (`--snaplen` is at most this).
pub const SNAPLEN_MAX: usize = 256;
/// `Snap::link`: the bytes start with an Ethernet header (tc on Ethernet-like devices:
/// veths, `vxlan.calico`, the uplink).
pub const LINK_ETHERNET: u8 = 1;
/// `Snap::link`: the bytes start with an IPv4 header (tc on L3 devices such as `tunl0`, and
/// the drop hook, which reads from the network header).
pub const LINK_IPV4: u8 = 2;

/// Direction of a tc hop (`Hop::dir`).
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Encapsulation of a packet seen at a hop (`Encap::kind`).
pub const ENCAP_NONE: u8 = 0;
pub const ENCAP_VXLAN: u8 = 1;
pub const ENCAP_IPIP: u8 = 2;

/// `Hop::flags`: the inner packet is an IPv4 fragment other than the first (no L4 header).
pub const HOP_F_FRAGMENT: u8 = 1 << 0;
/// `Hop::flags`: the L4 header could not be read (truncated packet).
pub const HOP_F_L4_TRUNCATED: u8 = 1 << 1;

/// The VXLAN UDP port used by Calico (IANA 4789).
pub const VXLAN_PORT: u16 = 4789;

/// Per-CPU counters kept by the kernel programs (index into the `COUNTERS` map).
/// Reserved (emitted events are counted in user space, not per packet in the kernel).
pub const CTR_EVENTS: u32 = 0;
/// Ring buffer reservation failed: an event the tracer itself lost.
pub const CTR_RINGBUF_FULL: u32 = 1;
/// Packet parsed but did not match the flow filter.
pub const CTR_FILTERED: u32 = 2;
/// Not IPv4 (ARP, IPv6, ...), or encapsulating something that is not IPv4.
pub const CTR_NOT_IPV4: u32 = 3;
/// Malformed or truncated headers.
pub const CTR_MALFORMED: u32 = 4;
/// A drop hook could not read the skb (bad offsets, or memory not readable).
pub const CTR_DROP_READ_ERR: u32 = 5;
/// Drops seen in a network namespace that is not traced (not reported).
pub const CTR_DROP_OTHER_NETNS: u32 = 6;
/// Packets not reported because of `--sample 1/N`.
pub const CTR_SAMPLED_OUT: u32 = 7;
/// In-kernel aggregation: packets whose state slot was taken over by another packet while
/// they were still in flight (see [`PktSlot`]), so their later segments were not measured.
pub const CTR_AGG_MAP_FULL: u32 = 8;
/// Number of counter slots (some reserved for later hooks).
pub const N_COUNTERS: u32 = 12;

/// `MODE` global bits: emit one event per packet per hop, and/or aggregate latency in the kernel.
pub const MODE_EVENTS: u32 = 1;
pub const MODE_AGGREGATE: u32 = 2;

/// Interface roles for in-kernel aggregation (`ROLES` map values).
pub const ROLE_POD: u8 = 1;
pub const ROLE_TUNNEL: u8 = 2;
pub const ROLE_UPLINK: u8 = 3;
/// Interfaces with an ifindex below this have their role in an array, the others in a hash.
pub const ROLE_ARRAY_LEN: u32 = 65536;

/// In-kernel latency histograms: one per segment, log2 buckets of nanoseconds (bucket `i`
/// counts deltas in `[2^i, 2^(i+1))`, bucket 0 also counts 0).
pub const HIST_BUCKETS: usize = 64;
pub const SEG_NODE_TX: u32 = 0;
pub const SEG_ENCAP: u32 = 1;
pub const SEG_WIRE: u32 = 2;
pub const SEG_DECAP: u32 = 3;
pub const SEG_NODE_RX: u32 = 4;
pub const SEG_SAME_NODE: u32 = 5;
pub const SEG_TOTAL: u32 = 6;
pub const N_SEGMENTS: u32 = 7;

/// Identity of a packet for in-kernel aggregation (same fields as user-space correlation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PktKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Ports, or ICMP id and sequence.
    pub a: u16,
    pub b: u16,
    pub ip_id: u16,
    pub proto: u8,
    pub _pad: u8,
    pub tcp_seq: u32,
}
const _: () = assert!(core::mem::size_of::<PktKey>() == 20);

/// Where a packet was last seen, for in-kernel aggregation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PktState {
    pub first_ts: u64,
    /// When the packet entered its current node (pod veth ingress or uplink ingress).
    pub entry_ts: u64,
    pub last_ts: u64,
    pub netns: u32,
    /// `role << 1 | dir` of the entry point and of the last hop.
    pub entry_point: u8,
    pub last_point: u8,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<PktState>() == 32);

/// Slots of the in-kernel aggregation table (a power of two). Small on purpose: 8,192 slots of
/// 56 bytes (448 KiB) stay in cache and in few TLB entries, where 65,536 (3.5 MiB) made every
/// hop a cache and TLB miss (bpf_stats per ingress hop under TCP: ~400 ns with 65,536 slots,
/// ~270 with 8,192). Packets are in flight for microseconds: at 1 M packets/s with 50 µs
/// each, about 50 are live, so a new packet takes over a live slot about 0.6 % of the time.
pub const PKT_SLOTS: u32 = 1 << 13;

/// One slot of the in-kernel aggregation table, an array indexed by a hash of the packet's
/// identity: which packet it follows (`live` non-zero until the packet is delivered) and
/// where that packet was last seen. A direct-mapped table instead of a hash map: each hop is
/// an array access the verifier inlines, with no insert or delete (and no map lock) per
/// packet. A packet whose slot another one takes over while it is in flight loses its later
/// segments, counted in `CTR_AGG_MAP_FULL` (see [`PKT_SLOTS`] for how rare that is).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PktSlot {
    pub key: PktKey,
    pub live: u32,
    pub state: PktState,
}
const _: () = assert!(core::mem::size_of::<PktSlot>() == 56);

/// Header at the start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of `EVENT_*`.
    pub kind: u16,
    /// Length of the whole record, header included.
    pub len: u16,
    /// CPU that produced the record.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC of the node that produced it.
    pub ts_ns: u64,
    /// Inode number of the network namespace the hook ran in.
    pub netns: u32,
    /// Interface index (in `netns`) of the hop.
    pub ifindex: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);

/// A ring-buffer record: the header, then the body of the header's kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event<T> {
    pub header: EventHeader,
    pub body: T,
}

/// A record body: its kind (`EVENT_*`). Bodies are `#[repr(C)]` with explicit padding and a
/// size that is a multiple of 8, so `Event<T>` has no implicit padding either.
pub trait EventBody: Copy {
    const KIND: u16;
}

/// The (inner) IPv4 packet and the fields that identify it across hops.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Packet {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// TCP/UDP ports, host order; 0 for other protocols.
    pub sport: u16,
    pub dport: u16,
    /// IPv4 identification, host order.
    pub ip_id: u16,
    /// IPv4 total length, host order.
    pub tot_len: u16,
    pub proto: u8,
    pub ttl: u8,
    /// TCP flags byte (FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// IPv4 flags and fragment offset, host order.
    pub frag_off: u16,
    /// ICMP echo identifier and sequence, host order; 0 otherwise.
    pub icmp_id: u16,
    pub icmp_seq: u16,
    pub _pad: u16,
    /// TCP sequence number, host order; 0 otherwise.
    pub tcp_seq: u32,
}
const _: () = assert!(core::mem::size_of::<Ipv4Packet>() == 32);

/// The outer headers of an encapsulated packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encap {
    /// One of `ENCAP_*`; the other fields are zero for `ENCAP_NONE`.
    pub kind: u8,
    pub _pad: [u8; 3],
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Outer UDP ports (VXLAN), host order.
    pub sport: u16,
    pub dport: u16,
    /// Outer IPv4 identification and total length, host order.
    pub ip_id: u16,
    pub tot_len: u16,
}
const _: () = assert!(core::mem::size_of::<Encap>() == 24);

/// Body of an `EVENT_HOP` record: one packet seen by a tc program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hop {
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub dir: u8,
    /// `HOP_F_*` bits.
    pub flags: u8,
    pub _pad: u16,
    /// `skb->len`: bytes of the whole skb (all segments of a GSO packet).
    pub skb_len: u32,
    /// `skb->mark`.
    pub mark: u32,
    /// `skb->gso_segs`-like hint: number of MSS-sized segments if known, else 0.
    pub gso_segs: u32,
    pub encap: Encap,
    pub pkt: Ipv4Packet,
}
const _: () = assert!(core::mem::size_of::<Hop>() == 72);

impl EventBody for Hop {
    const KIND: u16 = EVENT_HOP;
}

/// An `EVENT_HOP` record as written to the ring buffer.
pub type HopEvent = Event<Hop>;
const _: () = assert!(core::mem::size_of::<HopEvent>() == 96);

/// Body of an `EVENT_DROP` record: an skb freed with a drop reason. The header's `netns` and
/// `ifindex` come from `skb->dev` (0 when the skb has no device).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drop {
    /// Kernel text address that freed the skb (symbolised in user space).
    pub location: u64,
    /// The skb's kernel address: a hint within one node, never an identity across nodes.
    pub skb: u64,
    /// `enum skb_drop_reason` value of the running kernel (named in user space from BTF).
    pub reason: u32,
    pub skb_len: u32,
    /// `HOP_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 3],
    pub mark: u32,
    pub encap: Encap,
    pub pkt: Ipv4Packet,
}
const _: () = assert!(core::mem::size_of::<Drop>() == 88);

impl EventBody for Drop {
    const KIND: u16 = EVENT_DROP;
}

/// An `EVENT_DROP` record as written to the ring buffer.
pub type DropEvent = Event<Drop>;
const _: () = assert!(core::mem::size_of::<DropEvent>() == 112);

/// Body of an `EVENT_FIB` record: one IPv4 FIB lookup. The tracepoint carries no namespace, so
/// the header's `netns` is 0 and user space matches lookups to packets by addresses and time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fib {
    pub table: u32,
    /// 0 when a route was found, else a negative errno (-ENETUNREACH, ...).
    pub err: i32,
    /// Output and input interface indexes (0 when none).
    pub oif: u32,
    pub iif: u32,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// Gateway of the chosen nexthop (0.0.0.0 when directly connected or none).
    pub gw: [u8; 4],
    pub proto: u8,
    pub scope: u8,
    pub _pad: u16,
    pub sport: u16,
    pub dport: u16,
    /// Name of the output device, NUL padded.
    pub dev: [u8; 16],
    pub _pad_end: u32,
}
const _: () = assert!(core::mem::size_of::<Fib>() == 56);

impl EventBody for Fib {
    const KIND: u16 = EVENT_FIB;
}

/// An `EVENT_FIB` record as written to the ring buffer.
pub type FibEvent = Event<Fib>;
const _: () = assert!(core::mem::size_of::<FibEvent>() == 80);

/// Encapsulation functions probed with fentry/kprobe (`Func::func`).
/// `iptunnel_xmit`: every IPv4 tunnel (VXLAN through the UDP tunnel code, IPIP) hands the
/// encapsulated packet to IP here, outer addresses as arguments, inner header still marked.
pub const FUNC_IPTUNNEL_XMIT: u32 = 1;
/// `vxlan_rcv`: a VXLAN packet arriving at its socket, outer headers still in place.
pub const FUNC_VXLAN_RCV: u32 = 2;
/// `ipip_rcv`: an IPIP packet arriving, outer header still in place.
pub const FUNC_IPIP_RCV: u32 = 3;
/// The interface index that stands for function `f` in a trace's hops (never a real one).
pub const FUNC_IFINDEX_BASE: u32 = 0xFFFF_0000;

/// Body of an `EVENT_FUNC` record: a packet seen by an encapsulation function, with its inner
/// identity and the outer header it gets (transmit) or arrived in (receive). The header's
/// `netns` and `ifindex` are those of `skb->dev` (the tunnel device when transmitting, the
/// receiving device when receiving).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Func {
    /// One of `FUNC_*`.
    pub func: u32,
    pub skb_len: u32,
    /// The skb's address: a hint within one node.
    pub skb: u64,
    /// `DIR_EGRESS` (encapsulation) or `DIR_INGRESS` (decapsulation).
    pub dir: u8,
    /// `HOP_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 6],
    pub encap: Encap,
    pub pkt: Ipv4Packet,
}
const _: () = assert!(core::mem::size_of::<Func>() == 80);

impl EventBody for Func {
    const KIND: u16 = EVENT_FUNC;
}

/// An `EVENT_FUNC` record as written to the ring buffer.
pub type FuncEvent = Event<Func>;
const _: () = assert!(core::mem::size_of::<FuncEvent>() == 104);

/// Kernel struct layout for the drop hooks, resolved by user space from the running kernel's BTF
/// (and the classic tracepoint's format file) and patched into the programs as a read-only
/// global before loading (`SKB_OFFSETS`): the verifier knows each offset, so `tp_btf/kfree_skb`
/// loads the skb's fields directly through its typed pointer. Offsets are in bytes; nothing
/// here is baked at build time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkbLayout {
    /// Non-zero when user space resolved the layout; the hooks do nothing otherwise.
    pub valid: u32,
    pub skb_head: u32,
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_network_header: u32,
    pub skb_mark: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    /// Classic `skb/kfree_skb` tracepoint record: offsets of skbaddr, location and reason.
    pub tp_skbaddr: u32,
    pub tp_location: u32,
    pub tp_reason: u32,
    /// `sk_buff`: `data`, and the inner network header a tunnel sets before it encapsulates
    /// (the encapsulation probes).
    pub skb_data: u32,
    pub skb_inner_network_header: u32,
    /// `sk_buff._nfct` (the conntrack entry and its state); 0 without conntrack.
    pub skb_nfct: u32,
    /// `sk_buff.tail`: the end of the linear data, an offset from `head` (`--snaplen`).
    pub skb_tail: u32,
}
const _: () = assert!(core::mem::size_of::<SkbLayout>() == 64);

/// Where conntrack keeps what the NAT hook reads (`CT_OFFSETS`), from the running kernel's
/// BTF (vmlinux, or the `nf_conntrack` module's): `nf_conn.status`, `nf_conn.tuplehash[0]`
/// and the size of one `nf_conntrack_tuple_hash` (the reply direction's is the next), and
/// inside a hash the tuple's source address and "port" (`u.all`: the ICMP id for ICMP), its
/// destination address and port, and the protocol. Zero `valid`: the NAT hook does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtLayout {
    pub valid: u32,
    pub ct_status: u32,
    pub ct_tuplehash: u32,
    pub tuplehash_size: u32,
    pub src_ip: u32,
    pub src_port: u32,
    pub dst_ip: u32,
    pub dst_port: u32,
    pub protonum: u32,
    pub _pad: [u32; 7],
}
const _: () = assert!(core::mem::size_of::<CtLayout>() == 64);

/// `nf_conn.status` bits: source or destination NAT set up for the connection.
pub const IPS_NAT_MASK: u64 = (1 << 4) | (1 << 5);
/// `enum ip_conntrack_info` values from which a packet belongs to the reply direction.
pub const IP_CT_IS_REPLY: u64 = 3;

/// Body of an `EVENT_NAT` record: a packet as it leaves a device (`pkt`, its identity with
/// the current addresses) and the addresses and ports it had when it entered the node
/// (conntrack's tuple of the packet's direction). For ICMP the "source port" is the echo
/// identifier and the destination port 0. The header's `netns` and `ifindex` are those of the
/// device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat {
    pub pkt: Ipv4Packet,
    pub entered_saddr: [u8; 4],
    pub entered_daddr: [u8; 4],
    /// Host order.
    pub entered_sport: u16,
    pub entered_dport: u16,
    /// 1 when the packet belongs to the connection's reply direction.
    pub reply: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<Nat>() == 48);

impl EventBody for Nat {
    const KIND: u16 = EVENT_NAT;
}

/// An `EVENT_NAT` record as written to the ring buffer.
pub type NatEvent = Event<Nat>;

/// The first bytes of a packet as a hook saw it (`--snaplen`): `data[..cap_len]` holds them;
/// the rest of `data` is not written (and a record is cut to `EventHeader::len`, which counts
/// only `cap_len` bytes of it, rounded up to 8).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    pub cap_len: u16,
    /// `LINK_ETHERNET` or `LINK_IPV4`: what the first byte starts.
    pub link: u8,
    pub _pad: u8,
    /// The packet's length from its first captured byte (pcap's original length).
    pub orig_len: u32,
    pub data: [u8; SNAPLEN_MAX],
}
const _: () = assert!(core::mem::size_of::<Snap>() == 8 + SNAPLEN_MAX);

impl Default for Snap {
    fn default() -> Self {
        Snap {
            cap_len: 0,
            link: 0,
            _pad: 0,
            orig_len: 0,
            data: [0; SNAPLEN_MAX],
        }
    }
}

/// The bytes of `Snap` before `data`.
pub const SNAP_FIXED: usize = 8;

/// Body of an `EVENT_HOP_BYTES` record: a hop and its packet's first bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopBytes {
    pub hop: Hop,
    pub snap: Snap,
}
const _: () = assert!(core::mem::size_of::<HopBytes>() == 72 + 8 + SNAPLEN_MAX);

impl EventBody for HopBytes {
    const KIND: u16 = EVENT_HOP_BYTES;
}

/// Body of an `EVENT_DROP_BYTES` record: a drop and its packet's first bytes from the network
/// header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropBytes {
    pub drop: Drop,
    pub snap: Snap,
}
const _: () = assert!(core::mem::size_of::<DropBytes>() == 88 + 8 + SNAPLEN_MAX);

impl EventBody for DropBytes {
    const KIND: u16 = EVENT_DROP_BYTES;
}

/// The length a record with `cap_len` packet bytes declares in its header: the body up to
/// the snap's data, then the bytes rounded up to 8.
pub const fn snap_record_len<T: EventBody>(cap_len: usize) -> usize {
    core::mem::size_of::<Event<T>>() - SNAPLEN_MAX + ((cap_len + 7) & !7)
}

/// Offsets for `tp_btf/fib_table_lookup` (args: tb_id, flowi4, fib_nh_common, err), resolved
/// from the running kernel's BTF by user space and patched into the program as a read-only
/// global before it is loaded: the verifier then knows every offset, so the program loads the
/// fields through the typed pointers directly (one instruction each) instead of probe-reading
/// them. Zero `valid`: the program does nothing (the classic tracepoint is used instead).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibLayout {
    /// Non-zero when user space resolved every offset.
    pub valid: u32,
    /// `flowi4`: `flowi4_oif`, `flowi4_iif`, `flowi4_proto`, `flowi4_scope`, `saddr`, `daddr`,
    /// `uli.ports.dport`, `uli.ports.sport`.
    pub flow_oif: u32,
    pub flow_iif: u32,
    pub flow_proto: u32,
    pub flow_scope: u32,
    pub flow_saddr: u32,
    pub flow_daddr: u32,
    pub flow_dport: u32,
    pub flow_sport: u32,
    /// `fib_nh_common`: `nhc_gw_family`, `nhc_gw` (IPv4 view), `nhc_dev`.
    pub nhc_gw_family: u32,
    pub nhc_gw: u32,
    pub nhc_dev: u32,
    /// `net_device`: `name`, `nd_net.net`; `net`: `ns.inum`.
    pub dev_name: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<FibLayout>() == 64);

#[cfg(feature = "user")]
mod pod {
    /// `aya::Pod` for wire types. Every one is `#[repr(C)]`, `Copy`, made only of integers and
    /// byte arrays, with explicit padding, so every bit pattern is valid.
    macro_rules! pod {
        ($($t:ty),* $(,)?) => {$(
            // SAFETY: see the macro's note; the types listed below all qualify.
            unsafe impl aya::Pod for $t {}
        )*};
    }
    pod!(
        super::EventHeader,
        super::Hop,
        super::SkbLayout,
        super::FibLayout,
        super::CtLayout,
        super::PktKey,
        super::PktState,
        super::PktSlot,
        super::filter::FilterProgram,
    );
    // SAFETY: a header followed by a `Pod` body, both `#[repr(C)]` without implicit padding.
    unsafe impl<T: aya::Pod> aya::Pod for super::Event<T> {}
}
