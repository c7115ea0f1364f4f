//! What a catalogue entry is made of ([`Entry`], its probe, kernel drops and tracer reports)
//! and the queries over the catalogue ([`Fault`]'s accessors), apart from the entries
//! themselves so that `catalogue.rs` holds the faults and little else.

use std::fmt;
use std::str::FromStr;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Fault, CATALOGUE};
use crate::faults::engine::PlanFn;
use crate::faults::probe::Probe;
use crate::faults::state::{node, pod};
use crate::services::OUTSIDE;
use crate::spec::Encap;
use crate::topology::Topology;

/// Everything known about one fault.
pub struct Entry {
    /// The fault.
    pub fault: Fault,
    /// Kebab-case name (`"encap-never"`), as in the CLI and the JSON.
    pub name: &'static str,
    /// One line: what the fault is.
    pub doc: &'static str,
    /// The encapsulations whose labs it applies to (the VXLAN-only faults make no sense
    /// without a tunnel). None is planned for IPIP labs yet: their nodes only exist as VM
    /// guests (this machine's kernel has no `ipip`), where no one process sees both nodes,
    /// which every fault's plan reads.
    pub encaps: &'static [Encap],
    /// The traffic it makes fail.
    pub probe: ProbeSpec,
    /// What it changes.
    pub plan: PlanFn,
    /// The kernel drops the probe leads to (the same in every encapsulation).
    pub kernel_drops: &'static [KernelDrop],
    /// What the tracer must report for the probe, one per encapsulation in `encaps`.
    pub tracer: &'static [TracerReport],
}

/// A probe by the lab's names, resolved against a topology by [`Fault::probe`].
#[derive(Clone, Copy, Debug)]
pub struct ProbeSpec {
    /// Sending pod, or [`OUTSIDE`] (the machine outside the cluster of a lab with Services).
    pub from_pod: &'static str,
    /// Destination.
    pub to: Target,
    /// `"icmp"`, `"tcp"` or `"udp"`.
    pub proto: &'static str,
    /// Destination port (tcp/udp).
    pub port: Option<u16>,
    /// Payload size; `None` = small default.
    pub size: Option<usize>,
    /// Don't fragment.
    pub df: bool,
}

/// The destination of a probe.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The address of this pod.
    Pod(&'static str),
    /// The (underlay) address of this node.
    Node(&'static str),
    /// The cluster IP and port of a Service (`namespace/name`, port name): a lab with
    /// Services.
    Service(&'static str, &'static str),
    /// This node's address and the node port of a Service (`namespace/name`).
    NodePort(&'static str, &'static str),
    /// The machine outside the cluster (its server's port for TCP).
    Outside,
}

/// A kernel drop a fault leads to, as declared ([`ExpectedDrop`] is its owned form).
#[derive(Clone, Copy, Debug)]
pub struct KernelDrop {
    /// Node whose network namespace frees the packet.
    pub node: &'static str,
    /// `enum skb_drop_reason` name without `SKB_DROP_REASON_`.
    pub reason: &'static str,
    /// Kernel function of the drop location.
    pub function: &'static str,
    /// What is dropped: `"probe"`, `"outer"` or `"arp"` (see [`ExpectedDrop::packet`]).
    pub packet: &'static str,
    /// Only after neighbour resolution gives up (about 3 s after sending).
    pub delayed: bool,
}

/// A kernel drop that a fault leads to (reason and function as `skb:kfree_skb` reports them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedDrop {
    /// Node whose network namespace frees the packet.
    pub node: String,
    /// `enum skb_drop_reason` name without `SKB_DROP_REASON_` (`"NEIGH_FAILED"`).
    pub reason: String,
    /// Kernel function of the drop location (`"neigh_invalidate"`).
    pub function: String,
    /// What is dropped: `"probe"` (the probe packet itself), `"outer"` (its VXLAN
    /// encapsulation) or `"arp"` (ARP requests of the neighbour resolution it triggers).
    pub packet: String,
    /// Only after neighbour resolution gives up (about 3 s after sending), not at once.
    pub delayed: bool,
}

/// What the tracer must report for a fault's probe in one encapsulation: the probe's trace is
/// dropped at this node, device, reason and function, with this verdict (or, for a trace
/// that is not dropped, has this [`outcome`](Self::outcome) and verdict, `""` for none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracerReport {
    /// The lab's encapsulation.
    pub encap: Encap,
    /// Node (lab name, `"node1"`) of the drop.
    pub node: &'static str,
    /// Device of the drop; `"cali"` means the probe pod's veth, `"pod"` the probe pod's own
    /// interface inside its namespace (a drop in the pod: `node` is the pod's node, and the
    /// tracer names the pod's namespace as the drop's).
    pub device: &'static str,
    /// Drop reason.
    pub reason: &'static str,
    /// Prefix of the drop function (the tracer adds `+0x..`).
    pub function: &'static str,
    /// Verdict name.
    pub verdict: &'static str,
    /// What `tracer check` reports about the fault's state, with no traffic: the finding
    /// codes it must include (see the tracer's `audit` module).
    pub audit: &'static [&'static str],
    /// The probe trace's outcome: `dropped` (node, device, reason and function say where),
    /// or `lost`, `incomplete`, `delivered` (they are then empty).
    pub outcome: &'static str,
    /// Why `audit` may be empty: the fault is not in a node's state the audit reads (kube-
    /// proxy's NAT rules, a full conntrack table it does not judge yet), said in one line.
    pub audit_exempt: Option<&'static str>,
}

impl TracerReport {
    /// The audit's finding codes for this fault in this encapsulation.
    pub const fn audit(mut self, codes: &'static [&'static str]) -> TracerReport {
        self.audit = codes;
        self
    }

    /// No audit finding, and why that is right for this fault.
    pub const fn audit_exempt(mut self, why: &'static str) -> TracerReport {
        self.audit_exempt = Some(why);
        self
    }
}

impl Fault {
    /// The fault's catalogue entry.
    pub fn entry(self) -> &'static Entry {
        &CATALOGUE[self as usize]
    }

    /// Kebab-case name (`"encap-never"`), as in the CLI and the JSON.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Whether the fault exists in a lab of this encapsulation (the VXLAN-only faults make
    /// no sense without a tunnel; none is planned for IPIP labs yet).
    pub fn applies_to(self, encap: Encap) -> bool {
        self.entry().encaps.contains(&encap)
    }

    /// The traffic this fault makes fail in `t` (n1p0 -> n2p0 ICMP unless said otherwise).
    pub fn probe(self, t: &Topology) -> Result<Probe> {
        let spec = self.entry().probe;
        let services = || {
            t.services.as_ref().with_context(|| {
                format!("{self}'s probe needs a lab with Services (`lab up --services`)")
            })
        };
        let (to, port) = match spec.to {
            Target::Pod(name) => (pod(t, name)?.ip, spec.port),
            Target::Node(name) => (node(t, name)?.ip, spec.port),
            Target::Service(id, port) => {
                let svc = services()?.service(id)?;
                let p = svc
                    .port(port)
                    .with_context(|| format!("{id} has no port {port}"))?;
                ensure!(
                    p.protocol.to_string() == spec.proto,
                    "{self}: {id} {port} is {}",
                    p.protocol
                );
                (svc.cluster_ip, Some(p.port))
            }
            Target::NodePort(name, id) => {
                let svc = services()?.service(id)?;
                let np = svc.ports.iter().find_map(|p| p.node_port);
                (
                    node(t, name)?.ip,
                    Some(np.with_context(|| format!("{id} has no node port"))?),
                )
            }
            Target::Outside => {
                let o = &services()?.outside;
                (o.ip, (spec.proto != "icmp").then_some(o.port))
            }
        };
        let from_pod = match spec.from_pod {
            OUTSIDE => {
                services()?;
                OUTSIDE.to_owned()
            }
            name => pod(t, name)?.name.clone(),
        };
        Ok(Probe {
            from_pod,
            to,
            proto: spec.proto.into(),
            port,
            size: spec.size,
            df: spec.df,
        })
    }

    /// Whether the fault needs a lab with Services (its probe goes to a Service, a node port
    /// or the outside machine, or comes from there).
    pub fn needs_services(self) -> bool {
        let spec = self.entry().probe;
        spec.from_pod == OUTSIDE
            || matches!(
                spec.to,
                Target::Service(..) | Target::NodePort(..) | Target::Outside
            )
    }

    /// The kernel drops the probe leads to, as observed with `skb:kfree_skb` on 6.18 (the
    /// same in both encapsulations where the fault applies to both).
    pub fn expected_drops(self) -> Vec<ExpectedDrop> {
        self.entry()
            .kernel_drops
            .iter()
            .map(|d| ExpectedDrop {
                node: d.node.into(),
                reason: d.reason.into(),
                function: d.function.into(),
                packet: d.packet.into(),
                delayed: d.delayed,
            })
            .collect()
    }

    /// What the tracer must report for the probe in a lab of `encap`; `None` when the fault
    /// does not apply to it (or, which a unit test refuses, the entry lacks the report).
    pub fn tracer_report(self, encap: Encap) -> Option<&'static TracerReport> {
        self.entry().tracer.iter().find(|r| r.encap == encap)
    }

    /// Every fault's name, in catalogue order, comma-separated (`encap-never, missing-route,
    /// ...`): for error messages and the `--help` of the commands that take a fault.
    pub fn names() -> String {
        Fault::ALL.map(Fault::name).join(", ")
    }

    /// Every (fault, encapsulation) the catalogue declares, faults in documentation order.
    pub fn cases() -> impl Iterator<Item = (Fault, Encap)> {
        CATALOGUE
            .iter()
            .flat_map(|e| e.encaps.iter().map(move |&encap| (e.fault, encap)))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .with_context(|| format!("unknown fault `{s}` (valid: {})", Fault::names()))
    }
}
