//! The metric families, their label sets and their help texts: every name a scrape shows is
//! spelled here, once.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use super::kernel_agg::KernelLatency;
use crate::latency::SegmentName;
use crate::model::Outcome;

/// Distinct drop series (node, interface, reason) kept apart; drops beyond are counted under
/// [`OTHER_IFACE`] (pods come and go, and each pod's veth has its own name).
pub const MAX_DROP_SERIES: usize = 1000;
/// The interface label of drops beyond [`MAX_DROP_SERIES`].
pub const OTHER_IFACE: &str = "other";

/// Distinct (namespace, reason) series of drops by Kubernetes namespace; beyond, the
/// namespace is [`OTHER_NAMESPACE`] (a cluster has tens of namespaces, rarely thousands).
pub const MAX_NAMESPACE_SERIES: usize = 500;
/// The namespace label of drops beyond [`MAX_NAMESPACE_SERIES`].
pub const OTHER_NAMESPACE: &str = "other";

/// Upper bounds of the latency buckets: 256 ns to 2^30 ns (1.07 s), doubling (the segments of
/// the lab's paths take 0.3-20 µs; a loaded wire or a queued packet, milliseconds).
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(256e-9, 2.0, 23)
}

/// The latency family's name (before prefix and unit) and help.
pub const LATENCY: &str = "segment_latency";
pub const LATENCY_HELP: &str = "Latency of each named segment of a traced packet's path (node-tx, \
     encap, wire, decap, node-rx, same-node, total); with --kernel-agg, the kernel's log2 \
     histograms (the sum at their buckets' lower bounds)";

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A kernel drop's place and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub node: String,
    pub interface: String,
    pub reason: String,
}

/// A dropped packet's Kubernetes namespace and the kernel's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamespaceDropLabels {
    pub namespace: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SegmentLabels {
    pub segment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub node: String,
    pub program: String,
}

/// The causes of the tracer's own losses: exactly the "tracer lost" line of the run summary.
pub const LOSS_CAUSES: [&str; 4] = [
    "ringbuf_full",
    "decode_error",
    "drop_read_error",
    "agg_map_full",
];

/// Every family, registered. Cloning shares the series (they are reference-counted).
#[derive(Clone, Debug)]
pub struct Families {
    pub drops: Family<DropLabels, Counter>,
    pub namespace_drops: Family<NamespaceDropLabels, Counter>,
    pub verdicts: Family<VerdictLabels, Counter>,
    pub traces: Family<OutcomeLabels, Counter>,
    pub latency: Family<SegmentLabels, Histogram, fn() -> Histogram>,
    pub packets: Family<NodeLabels, Counter>,
    pub bytes: Family<NodeLabels, Counter>,
    pub own_losses: Family<CauseLabels, Counter>,
    pub program_runs: Family<ProgramLabels, Counter>,
    pub program_seconds: Family<ProgramLabels, Counter<f64>>,
    pub bpf_stats_enabled: Gauge,
}

impl Families {
    /// Creates and registers every family in `registry` (prefix `tracer_`).
    /// `bpf_stats_enabled` is the sysctl at start: the program costs' help says when they
    /// cannot count. With `kernel_latency` (`--kernel-agg`), the latency histograms are the
    /// kernel's, not those of traces.
    pub fn register(
        registry: &mut Registry,
        bpf_stats_enabled: bool,
        kernel_latency: Option<KernelLatency>,
    ) -> Families {
        let f = Families {
            drops: Family::default(),
            namespace_drops: Family::default(),
            verdicts: Family::default(),
            traces: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            packets: Family::default(),
            bytes: Family::default(),
            own_losses: Family::default(),
            program_runs: Family::default(),
            program_seconds: Family::default(),
            bpf_stats_enabled: Gauge::default(),
        };
        registry.register(
            "kernel_drops",
            "Packets the kernel dropped (kfree_skb with a drop reason) on a traced node, by node, \
             interface and drop reason; noise (consumed skbs, echo replies nobody waits for) is \
             not counted, nor are the tracer's own losses (tracer_own_losses_total)",
            f.drops.clone(),
        );
        registry.register(
            "namespace_drops",
            "Packets the kernel dropped, by the Kubernetes namespace of the sending pod (else of \
             the pod or Service it was sent to) and drop reason; only where the tracer watches a \
             cluster (--kubeconfig) and the packet's addresses belong to one",
            f.namespace_drops.clone(),
        );
        registry.register(
            "verdicts",
            "Dropped and lost packets by verdict (why the packet died: no-route, firewall-drop, \
             ...)",
            f.verdicts.clone(),
        );
        registry.register(
            "traces",
            "Packet traces emitted, by outcome (delivered, dropped, lost, incomplete)",
            f.traces.clone(),
        );
        match kernel_latency {
            Some(k) => registry.register_collector(Box::new(k)),
            None => {
                registry.register_with_unit(LATENCY, LATENCY_HELP, Unit::Seconds, f.latency.clone())
            }
        }
        registry.register(
            "traced_packets",
            "Traced packets seen on each node (a packet that crosses two nodes counts on both)",
            f.packets.clone(),
        );
        registry.register_with_unit(
            "traced",
            "Bytes of the traced packets on each node (skb->len at the packet's first hop on \
             that node)",
            Unit::Bytes,
            f.bytes.clone(),
        );
        registry.register(
            "own_losses",
            "What the tracer itself lost, not kernel drops: events lost because a ring buffer \
             was full, undecodable records, drops whose skb could not be read, in-kernel \
             aggregation slots taken over in flight",
            f.own_losses.clone(),
        );
        let stats_note = if bpf_stats_enabled {
            "counted by the kernel while kernel.bpf_stats_enabled is 1"
        } else {
            "kernel.bpf_stats_enabled was 0 when the tracer started: the kernel counts only \
             while it is 1 (`sysctl kernel.bpf_stats_enabled=1`) or while some process holds \
             BPF_ENABLE_STATS open (`bpftool prog profile`), else this stays 0"
        };
        registry.register(
            "program_runs",
            format!(
                "Runs of each loaded eBPF program, by node (empty for the global hooks) and \
                 program; {stats_note}"
            ),
            f.program_runs.clone(),
        );
        registry.register_with_unit(
            "program_run",
            format!(
                "Time spent running each loaded eBPF program, by node (empty for the global \
                 hooks) and program; {stats_note}"
            ),
            Unit::Seconds,
            f.program_seconds.clone(),
        );
        registry.register(
            "bpf_stats_enabled",
            "kernel.bpf_stats_enabled as last read (1: the program costs count; 0: they count only \
             while a process holds BPF_ENABLE_STATS open)",
            f.bpf_stats_enabled.clone(),
        );
        // Series whose absence would say nothing: present at 0 from the start.
        for cause in LOSS_CAUSES {
            f.own_loss(cause);
        }
        for outcome in [
            Outcome::Delivered,
            Outcome::Dropped,
            Outcome::Lost,
            Outcome::Incomplete,
        ] {
            f.traces.get_or_create_owned(&outcome_labels(outcome));
        }
        f
    }

    /// The histogram of one segment.
    pub fn segment(&self, s: SegmentName) -> Histogram {
        self.latency.get_or_create_owned(&SegmentLabels {
            segment: s.as_str().into(),
        })
    }

    /// The counter of one cause of the tracer's own losses (one of [`LOSS_CAUSES`]).
    pub fn own_loss(&self, cause: &str) -> Counter {
        self.own_losses.get_or_create_owned(&CauseLabels {
            cause: cause.into(),
        })
    }
}

pub fn outcome_labels(o: Outcome) -> OutcomeLabels {
    OutcomeLabels {
        outcome: o.as_str().into(),
    }
}
