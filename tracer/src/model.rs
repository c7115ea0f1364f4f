//! The trace model: the types every stage exchanges, and nothing else.
//!
//! Decode produces records about packets ([`PacketId`], [`Encap`], [`Direction`]); the
//! correlator groups them into [`Trace`]s with their evidence ([`DropPoint`], [`RouteLookup`])
//! and an [`Outcome`]; the verdict stage adds a [`Verdict`]; latency and render read traces and
//! the run's counters ([`FlowSummary`], [`CorrelateStats`], [`LossCounters`]). Plain data: no
//! I/O, no logic beyond small accessors, so every stage can depend on this module and it on
//! none of them.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::topology::{Iface, IfaceKind, Link, Node};

// ---- Packets ----

/// Direction of a tc hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// Encapsulation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncapKind {
    Vxlan,
    Ipip,
}

impl EncapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EncapKind::Vxlan => "vxlan",
            EncapKind::Ipip => "ipip",
        }
    }
}

/// Outer headers of an encapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Encap {
    pub kind: EncapKind,
    /// VXLAN network identifier; 0 for IPIP.
    pub vni: u32,
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    /// Outer UDP ports (VXLAN); 0 for IPIP.
    pub outer_sport: u16,
    pub outer_dport: u16,
    pub outer_ip_id: u16,
}

/// The (inner) packet's identity: the same value at every hop of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP/UDP ports; 0 otherwise.
    pub sport: u16,
    pub dport: u16,
    pub ip_id: u16,
    /// TCP sequence number; 0 otherwise.
    pub tcp_seq: u32,
    /// ICMP echo identifier and sequence; 0 otherwise.
    pub icmp_id: u16,
    pub icmp_seq: u16,
}

/// The 5-tuple of a flow (what a per-flow summary groups by).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl PacketId {
    pub fn flow(&self) -> FlowKey {
        FlowKey {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
        }
    }
}

/// Human name of an IP protocol number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => other.to_string(),
    }
}

// ---- Traces ----

/// What became of a traced packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The last hop hands the packet to a pod (egress on a pod veth), or the packet is for a
    /// traced node and its last hop is an ingress on that node.
    Delivered,
    /// The kernel dropped it (see `Trace::drop`).
    Dropped,
    /// It vanished after leaving a node's uplink, without a kernel drop on a traced node: on
    /// the wire, or somewhere the tracer does not see.
    Lost,
    /// Anything else: the packet was last seen somewhere on the way.
    Incomplete,
}

impl Outcome {
    /// Lower-case name, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped => "dropped",
            Outcome::Lost => "lost",
            Outcome::Incomplete => "incomplete",
        }
    }
}

/// One hop of a trace, with names resolved through the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHop {
    /// Node name, or `netns:<inode>` for a namespace the topology does not know (shared with
    /// the correlator's interface table: emitting a hop allocates nothing).
    pub node: Arc<str>,
    pub netns: u32,
    pub ifindex: u32,
    /// Interface name, or `if<ifindex>` for an interface the topology does not know.
    pub ifname: Arc<str>,
    /// `None` for an interface the topology does not know.
    pub kind: Option<IfaceKind>,
    pub dir: Direction,
    pub ts_ns: u64,
    pub len: u32,
    pub encap: Option<Encap>,
    /// The packet had other addresses here than the trace's (after a NAT step).
    pub translated: bool,
    /// The packet's first bytes here (`record --snaplen`).
    pub snap: Option<Arc<Captured>>,
}

/// What the first captured byte of a packet starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkType {
    /// An Ethernet header (tc on veths, `vxlan.calico`, the uplink).
    Ethernet,
    /// An IPv4 header (tc on `tunl0`, and drops, read from the network header).
    Ipv4,
}

/// The first bytes of a packet as a hook saw it (`record --snaplen`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    pub link: LinkType,
    /// The packet's length from its first captured byte.
    pub orig_len: u32,
    pub data: Box<[u8]>,
}

/// All hops of one packet, sorted by time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub packet: PacketId,
    /// TCP flags byte and ICMP type of the packet (constant along the path).
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub hops: Vec<TraceHop>,
    pub outcome: Outcome,
    /// Where the kernel dropped the packet, if it did.
    pub drop: Option<DropPoint>,
    /// FIB lookups for the packet's destination seen while it was in flight (latest last).
    pub routes: Vec<RouteLookup>,
    /// For dropped and lost packets: the likely cause in the user's terms.
    pub verdict: Option<Verdict>,
    /// The tracer itself lost events (ring buffer full) while this packet was in flight, so
    /// missing hops prove nothing: such a trace is never called `lost`, only `incomplete`.
    pub tracer_loss: bool,
    /// Where conntrack translated the packet (DNAT to a Service endpoint, SNAT, and their
    /// reversal on the way back). `packet` is the packet as it entered the first translating
    /// node; hops after a translation are `translated`.
    pub nat: Vec<NatStep>,
    /// The pods and Services the trace's addresses belong to (`k8s`; empty without a
    /// cluster), in the order the addresses first appear: the packet's, then the NAT steps'.
    pub names: Vec<(Ipv4Addr, Arc<ObjectName>)>,
    /// For a packet that no node translated: the translation of the flow it answers, when its
    /// reversed tuple is a flow some node translated (a reply that did not go back through the
    /// node that translated the request, so it still carries the endpoint's address). Set
    /// when the trace is finished; evidence for the `asymmetric-snat` verdict.
    pub answers: Option<NatStep>,
}

/// The Kubernetes object an address belongs to at the time a trace is emitted (`k8s`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectName {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    /// The node a pod runs on (`None` for a Service, or a pod not yet scheduled).
    pub node: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Pod,
    Service,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pod => "pod",
            ObjectKind::Service => "service",
        }
    }
}

impl ObjectName {
    /// `default/web-7d9f` for a pod, `service default/web` for a Service.
    pub fn describe(&self) -> String {
        match self.kind {
            ObjectKind::Pod => format!("{}/{}", self.namespace, self.name),
            ObjectKind::Service => format!("service {}/{}", self.namespace, self.name),
        }
    }
}

/// One translation of a traced packet by conntrack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatStep {
    pub ts_ns: u64,
    pub node: String,
    pub netns: u32,
    /// The device the translated packet left by.
    pub ifname: String,
    /// `DNAT`, `SNAT`, `DNAT+SNAT`; on a reply `un-DNAT`, `un-SNAT`.
    pub kind: &'static str,
    pub proto: u8,
    /// `(src, sport, dst, dport)` before and after (ports 0 for ICMP but the echo id as
    /// source port).
    pub from: (Ipv4Addr, u16, Ipv4Addr, u16),
    pub to: (Ipv4Addr, u16, Ipv4Addr, u16),
}

impl NatStep {
    /// `DNAT 10.96.0.10:53 -> 10.244.4.5:53` (the side that changed).
    pub fn text(&self) -> String {
        let (fs, fsp, fd, fdp) = self.from;
        let (ts, tsp, td, tdp) = self.to;
        // ICMP's "port" is its echo id: shown only when NAT changed it.
        let ports = self.proto != 1;
        let ep = |a: Ipv4Addr, p: u16| {
            if p == 0 || !ports {
                a.to_string()
            } else {
                format!("{a}:{p}")
            }
        };
        let mut parts = Vec::new();
        if (fd, fdp) != (td, tdp) {
            parts.push(format!("dst {} -> {}", ep(fd, fdp), ep(td, tdp)));
        }
        if (fs, fsp) != (ts, tsp) {
            parts.push(format!("src {} -> {}", ep(fs, fsp), ep(ts, tsp)));
        }
        if !ports && fsp != tsp {
            parts.push(format!("echo id {fsp} -> {tsp}"));
        }
        format!("{} {}", self.kind, parts.join(", "))
    }
}

impl Trace {
    /// Time of the first hop (0 for a trace without hops).
    pub fn first_ts_ns(&self) -> u64 {
        self.hops.first().map_or(0, |h| h.ts_ns)
    }

    /// Time of the last hop (0 for a trace without hops).
    pub fn last_ts_ns(&self) -> u64 {
        self.hops.last().map_or(0, |h| h.ts_ns)
    }

    /// `skb->len` at the first hop (0 for a trace without hops).
    pub fn first_len(&self) -> u32 {
        self.hops.first().map_or(0, |h| h.len)
    }

    /// The pod or Service address `a` belongs to, when known.
    pub fn name_of(&self, a: Ipv4Addr) -> Option<&ObjectName> {
        self.names.iter().find(|(x, _)| *x == a).map(|(_, n)| &**n)
    }
}

/// Where the kernel dropped a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropPoint {
    /// Node of `skb->dev` (or `netns:<inode>`).
    pub node: String,
    pub netns: u32,
    pub ifindex: u32,
    /// Device name (`-` when the skb had no device).
    pub ifname: String,
    pub ts_ns: u64,
    /// Drop reason name from the running kernel (`NETFILTER_DROP`, ...), or `reason <n>`.
    pub reason: String,
    pub reason_code: u32,
    /// Symbolised location: `nft_do_chain+0x3f2`.
    pub function: String,
    pub location: u64,
    pub len: u32,
    /// The dropped skb's outer header when it was still (or already) encapsulated.
    pub encap: Option<Encap>,
    /// The packet's first bytes from its network header (`record --snaplen`).
    pub snap: Option<Arc<Captured>>,
}

/// One FIB lookup that concerned a traced packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteLookup {
    pub ts_ns: u64,
    /// Namespace the lookup was made in, when known (0: unknown).
    pub netns: u32,
    pub table: u32,
    /// 0 when a route was found, else a negative errno.
    pub err: i32,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub oif: u32,
    pub iif: u32,
    /// Output device name ("" when none).
    pub dev: String,
    pub gw: Option<Ipv4Addr>,
}

/// Why a packet died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Stable machine name (see `verdict`'s module notes).
    pub name: &'static str,
    pub explanation: String,
    /// The facts it rests on besides the trace: state read from the nodes (a route, a
    /// neighbour entry, a sysctl, a firewall rule and its counter) and the audit's findings.
    pub evidence: Vec<String>,
}

impl Verdict {
    /// The same verdict with more evidence.
    pub fn with_evidence(mut self, more: Vec<String>) -> Verdict {
        self.evidence.extend(more);
        self
    }
}

// ---- Counters of a run ----

/// Per 5-tuple totals over emitted traces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowSummary {
    /// Packets (traces).
    pub packets: u64,
    /// Sum of `skb->len` at each trace's first hop.
    pub bytes: u64,
    /// Hops over all traces.
    pub hops: u64,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
    pub incomplete: u64,
    /// Where the flow's packets died, the latest first seen place: enough to say which
    /// direction of a connection fails and where.
    pub failure: Option<FlowFailure>,
}

/// Where a flow's packets died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowFailure {
    pub outcome: Outcome,
    /// `node ifname` of the drop, or of the last hop of a lost packet.
    pub place: String,
    pub verdict: Option<&'static str>,
}

impl FlowSummary {
    /// Counts one emitted trace.
    pub fn record(&mut self, t: &Trace) {
        if self.packets == 0 {
            self.first_ts_ns = t.first_ts_ns();
        }
        self.first_ts_ns = self.first_ts_ns.min(t.first_ts_ns());
        self.last_ts_ns = self.last_ts_ns.max(t.last_ts_ns());
        self.packets += 1;
        self.bytes += u64::from(t.first_len());
        self.hops += t.hops.len() as u64;
        match t.outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::Dropped => self.dropped += 1,
            Outcome::Lost => self.lost += 1,
            Outcome::Incomplete => self.incomplete += 1,
        }
        if matches!(t.outcome, Outcome::Dropped | Outcome::Lost) {
            let place = match (&t.drop, t.hops.last()) {
                (Some(d), _) => format!("{} {}", d.node, d.ifname),
                (None, Some(h)) => format!("{} {}", h.node, h.ifname),
                (None, None) => String::new(),
            };
            self.failure = Some(FlowFailure {
                outcome: t.outcome,
                place,
                verdict: t.verdict.as_ref().map(|v| v.name),
            });
        }
    }
}

/// The correlator's own counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CorrelateStats {
    /// Every hop pushed, duplicates included.
    pub hops_seen: u64,
    /// Exact duplicates dropped.
    pub duplicates: u64,
    /// Hops on a `(netns, ifindex)` the topology does not know (kept).
    pub unknown_iface_hops: u64,
    /// Traces emitted (by `expire`, `finish` or eviction).
    pub traces_emitted: u64,
    /// Traces emitted early because too many were open.
    pub evicted: u64,
    /// Traces emitted early because too many open traces had their identity.
    pub identity_evicted: u64,
    /// Drains after which the tracer found it had lost events (ring buffer full).
    pub loss_windows: u64,
    /// Traces that would have been called lost but are incomplete because the tracer lost
    /// events while they were in flight.
    pub lost_withheld: u64,
}

/// Counters of the tracer's own losses and exclusions, filled by the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LossCounters {
    /// Events lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Records the decoder rejected.
    pub decode_errors: u64,
    /// Packets that did not match the flow filter.
    pub filtered: u64,
    /// Packets that were not IPv4.
    pub not_ipv4: u64,
    /// Packets with malformed or truncated headers.
    pub malformed: u64,
    /// Drops whose skb could not be read (reported apart: the tracer's own blind spot).
    pub drop_read_errors: u64,
    /// Encapsulation function probe hits (fentry/kprobe), where the kernel allows them.
    pub encap_probe_hits: u64,
    /// Packets skipped by `--sample`.
    pub sampled_out: u64,
    /// In-kernel aggregation: packets whose state slot another packet took over while they
    /// were in flight (their later segments were not measured): the tracer's own loss.
    pub agg_map_full: u64,
}

// ---- Clocks of merged recordings ----

/// Where each merged recording's clock sits on the reference timeline (the first recording's
/// CLOCK_MONOTONIC), and what the packets between each pair of recordings said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClockReport {
    pub recordings: Vec<RecordingClockReport>,
    pub pairs: Vec<PairClockReport>,
    /// Packets matched across recordings, and matches skipped as ambiguous.
    pub matched: u64,
    pub ambiguous: u64,
}

/// One recording's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingClockReport {
    pub name: String,
    pub host: String,
    pub boot_id: String,
    /// `reference`, `same-clock`, `estimated`, `one-sided`, `wall-clock` or `unknown`.
    pub basis: &'static str,
    /// `clock − reference` in the middle of the recording, and its bound.
    pub offset_ns: f64,
    pub offset_err_ns: Option<f64>,
}

/// The offset of one pair of recordings that exchanged packets (`b − a`, in the middle of their
/// traffic).
#[derive(Clone, Debug, PartialEq)]
pub struct PairClockReport {
    pub a: usize,
    pub b: usize,
    /// Constraints from packets a -> b and b -> a.
    pub a_to_b: usize,
    pub b_to_a: usize,
    /// `two-sided`, `one-sided` or `none`.
    pub fit: &'static str,
    pub offset_ns: Option<f64>,
    pub offset_err_ns: Option<f64>,
    /// Constraints dropped as contradicting the others.
    pub outliers: usize,
    /// Why there is no fit.
    pub why: Option<String>,
}

// ---- Nodes that change while traced ----

/// An interface of a traced node that appeared or went away during the capture (pods come and
/// go): recorded in the stream, applied by the pipeline to its topology.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkChange {
    /// Now traced: its role and name, and its MTU.
    Added { iface: Iface, link: Link },
    /// Gone: no longer traced (its name stays known for what is still in flight).
    Removed { ifindex: u32, name: String },
}

impl LinkChange {
    /// The node as it is after the change. A removed interface is no longer traced, but its
    /// name stays among the node's links (what is still in flight is named by it).
    pub fn apply_to(&self, node: &mut Node) {
        match self {
            LinkChange::Added { iface, link } => {
                node.ifaces.retain(|i| i.ifindex != iface.ifindex);
                node.ifaces.push(iface.clone());
                node.links.retain(|l| l.ifindex != link.ifindex);
                node.links.push(link.clone());
            }
            LinkChange::Removed { ifindex, .. } => node.ifaces.retain(|i| i.ifindex != *ifindex),
        }
    }
}
