//! The incident report as plain data: everything the renderers (`html`, `markdown`) show, built
//! by `collect` from the pipeline's traces and numbers and the recordings' headers.
//!
//! Strings here are taken as they came, from recordings too (interface names, host names,
//! kernel strings are untrusted): the renderers escape them, each for its own format. Numbers
//! stay numbers (ns, counts) so that each renderer formats them the same way (`fmt`).

use crate::{
    latency::Summary,
    model::{ClockReport, CorrelateStats, LossCounters, Outcome},
};

/// The whole report, in the order it is shown.
#[derive(Clone, Debug)]
pub struct Report {
    pub title: String,
    pub tracer_version: &'static str,
    /// How each input was read.
    pub inputs: Vec<InputState>,
    pub completeness: Completeness,
    pub outcomes: Outcomes,
    /// What failed, most packets first.
    pub findings: Vec<Finding>,
    /// Failed packets in groups beyond the ones kept (counted, not shown).
    pub findings_left_out: u64,
    /// Traces that neither arrived nor failed provably, by where they were last seen.
    pub incomplete: Vec<IncompleteGroup>,
    pub flows: Vec<FlowRow>,
    pub flows_left_out: usize,
    pub latency: Latency,
    pub environment: Environment,
    /// What the merge warned about (duplicate recordings, recordings that never overlapped).
    pub warnings: Vec<String>,
}

/// How one input was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputState {
    pub name: String,
    pub end: InputEnd,
    /// One line: what the end means for the evidence.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputEnd {
    Complete,
    /// No end frame (a killed recorder): its kernel-side loss counters are unknown.
    NoEndFrame,
    /// Cut in the middle of a frame: read up to it.
    Truncated,
    /// A frame could not be read: read up to it.
    Damaged,
    /// Not a readable recording: not used at all.
    Unreadable,
}

impl InputEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            InputEnd::Complete => "complete",
            InputEnd::NoEndFrame => "no end frame",
            InputEnd::Truncated => "truncated",
            InputEnd::Damaged => "damaged",
            InputEnd::Unreadable => "unreadable",
        }
    }
}

/// Whether the evidence is complete, and the numbers that say so: the tracer's own losses
/// apart from the kernel's drops.
#[derive(Clone, Debug, Default)]
pub struct Completeness {
    /// One sentence per gap in the evidence; empty when the evidence is complete.
    pub missing: Vec<String>,
    /// The tracer's own losses and exclusions, summed over the recordings (plus the decode
    /// errors of this reading).
    pub loss: LossCounters,
    pub correlator: CorrelateStats,
    /// Traces marked incomplete because the tracer lost events while they were in flight.
    pub traces_with_tracer_loss: u64,
    /// Kernel drop records seen, and those ignored as noise (not faults).
    pub drops_seen: u64,
    pub noise_drops: u64,
}

impl Completeness {
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// What became of the traced packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    pub traces: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
    pub incomplete: u64,
}

impl Outcomes {
    pub fn failed(&self) -> u64 {
        self.dropped + self.lost
    }
}

/// A time on the reference timeline: its monotonic ns, and the wall clock when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub mono_ns: u64,
    /// `2026-12-01 10:22:33.123456 UTC`.
    pub wall: Option<String>,
}

/// Packets that failed the same way at the same place.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The verdict's name (`no-vxlan-fdb`).
    pub verdict: String,
    pub explanation: String,
    /// What the verdict rests on besides the trace (the nodes' state, the audit's findings).
    pub evidence: Vec<String>,
    pub outcome: Outcome,
    pub place: Place,
    pub count: u64,
    pub first: Moment,
    pub last: Moment,
    /// The flows it hit (the first few), and how many in all.
    pub flows: Vec<String>,
    pub flows_total: usize,
    /// Route lookups seen for the first packet, as text.
    pub routes: Vec<String>,
    /// The first packets, hop by hop.
    pub examples: Vec<Timeline>,
    /// The first packets, one line each.
    pub packets: Vec<PacketRow>,
}

/// Where packets failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The kernel said it dropped the packet: this is the kernel's own evidence.
    KernelDrop {
        node: String,
        ifname: String,
        reason: String,
        function: String,
        len: u32,
        /// The outer header when the dropped packet was encapsulated.
        encap: Option<String>,
    },
    /// No kernel drop on a traced node: the packet was not seen after this hop (the evidence
    /// is an absence).
    LostAfter {
        node: String,
        ifname: String,
        dir: &'static str,
    },
}

/// One failed packet of a finding.
#[derive(Clone, Debug)]
pub struct PacketRow {
    pub at: Moment,
    pub packet: String,
    pub hops: usize,
}

/// One packet across nodes and hops: a sequence diagram's content.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub packet: String,
    pub outcome: Outcome,
    pub start: Moment,
    /// The nodes, in the order the packet met them.
    pub lanes: Vec<String>,
    /// Hops and the drop, in time order.
    pub events: Vec<TimelineEvent>,
    pub segments: Vec<SegmentValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEvent {
    /// Index in `lanes`.
    pub lane: usize,
    pub kind: EventKind,
    /// The interface (or probed function), `-` for a drop without a device.
    pub ifname: String,
    /// ns since the packet's first hop (on the reference timeline).
    pub t_ns: u64,
    /// The clock bound against the first hop's machine, for a hop on another machine.
    pub err_ns: Option<u64>,
    /// The outer header, or the drop's reason and location.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Ingress,
    Egress,
    Drop,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ingress => "ingress",
            EventKind::Egress => "egress",
            EventKind::Drop => "DROP",
        }
    }
}

/// One latency segment of one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentValue {
    pub name: &'static str,
    pub ns: i64,
    pub err_ns: Option<u64>,
}

/// Traces that were last seen at one place and neither arrived nor failed provably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncompleteGroup {
    pub node: String,
    pub ifname: String,
    pub dir: &'static str,
    /// Whether the tracer lost events while they were in flight (then nothing can be said).
    pub tracer_loss: bool,
    pub count: u64,
}

/// One flow of the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    pub proto: String,
    pub flow: String,
    pub packets: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub lost: u64,
    pub incomplete: u64,
}

/// Latency per segment, in total and per flow.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// How hop times of different nodes were compared.
    pub clock: String,
    pub total: SegmentTable,
    pub flows: Vec<FlowLatency>,
    pub flows_left_out: usize,
    pub skipped_unsynchronized: u64,
    pub skipped_negative: u64,
    pub traces_beyond_flow_limit: u64,
}

#[derive(Clone, Debug)]
pub struct FlowLatency {
    pub flow: String,
    /// Whether packets of this flow failed.
    pub failing: bool,
    pub table: SegmentTable,
}

/// One distribution per segment, in path order.
#[derive(Clone, Debug, Default)]
pub struct SegmentTable {
    /// Traces that gave a segment.
    pub traces: u64,
    pub rows: Vec<SegmentRow>,
}

#[derive(Clone, Debug)]
pub struct SegmentRow {
    pub name: &'static str,
    pub summary: Summary,
    /// Log-spaced bins between the minimum and the maximum (empty: no chart).
    pub bins: Vec<Bin>,
}

/// Values in `[lo_ns, hi_ns)` (the last bin includes its end).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bin {
    pub lo_ns: f64,
    pub hi_ns: f64,
    pub count: u64,
}

/// Where the packets went: the machines, their nodes and how their clocks relate.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    pub recordings: Vec<RecordingEnv>,
    pub clocks: Clocks,
    /// The audit of the nodes' state as the recordings carry it (`tracer check`); `None` when
    /// they carry no node state (recorded by an older tracer, or cut before it was written).
    pub audit: Option<Audit>,
}

/// One recording: its machine and what it traced.
#[derive(Clone, Debug, Default)]
pub struct RecordingEnv {
    pub name: String,
    pub tracer_version: String,
    pub host: String,
    pub machine_id: String,
    pub boot_id: String,
    pub kernel: String,
    pub clocksource: String,
    pub started: Option<String>,
    pub filter: String,
    /// One packet in `sample` was recorded.
    pub sample: u32,
    /// Whether drops and route lookups were recorded.
    pub hooks: bool,
    pub nodes: Vec<NodeEnv>,
}

/// One traced node (network namespace) as it was when recording started.
#[derive(Clone, Debug, Default)]
pub struct NodeEnv {
    /// As named in the traces (`name@host` where two machines share a name).
    pub name: String,
    pub netns: u32,
    pub addrs: Vec<String>,
    pub uplink_addrs: Vec<String>,
    pub default_gw: Option<String>,
    pub interfaces: Vec<IfaceEnv>,
    /// Routes when recording started, in `ip route` form.
    pub routes: Vec<String>,
    /// Whether `routes` are every route of every table (the node's recorded state), or only
    /// the main table's unicast routes (the recording's header: older recordings).
    pub routes_all_tables: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceEnv {
    pub name: String,
    pub ifindex: u32,
    /// The role of a traced interface (`pod-veth`, `vxlan`, `uplink`, ...); `None`: not traced.
    pub kind: Option<&'static str>,
    pub mtu: Option<u32>,
}

impl IfaceEnv {
    /// A tunnel device (VXLAN or IPIP).
    pub fn is_tunnel(&self) -> bool {
        matches!(self.kind, Some("vxlan" | "ipip"))
    }
}

/// How the clocks of the recordings relate.
#[derive(Clone, Debug, Default)]
pub enum Clocks {
    /// One recording: one clock (`shared-kernel`: every node a namespace of one kernel).
    #[default]
    Single,
    /// Several recordings placed on the first one's timeline.
    Merged(ClockReport),
}

/// The audit of the nodes' recorded state (`audit`, the same findings `tracer check REC...`
/// prints): what the nodes disagree about, with no traffic.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    /// The nodes audited (their state was in the recordings).
    pub nodes: Vec<String>,
    /// Errors first.
    pub findings: Vec<AuditFinding>,
}

#[derive(Clone, Debug, Default)]
pub struct AuditFinding {
    /// `error` or `warning`.
    pub severity: &'static str,
    /// Stable name (`no-vtep-fdb`, ...).
    pub code: &'static str,
    /// The node the object is on, then the node it concerns.
    pub nodes: Vec<String>,
    pub object: String,
    pub found: String,
    pub expected: String,
    pub fix: String,
}
