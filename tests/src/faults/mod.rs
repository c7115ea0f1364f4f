//! Fault injection: break a running lab the way real Calico clusters break, and heal it.
//!
//! Design note: what a fault *is* and how faults are *applied* live apart.
//! - [`catalogue`] declares every fault, one entry each: name and doc, the encapsulations it
//!   applies to, its plan, its probe, the kernel drops the probe leads to and what the tracer
//!   must report for it per encapsulation. It is the single source the CLI, the fault tests,
//!   the tracer's verdict cases and the README are checked against; adding a fault is adding
//!   an entry there.
//! - [`engine`] runs a plan as apply/undo steps computed from the kernel's current state,
//!   persists the undo steps in `/run/tracer-lab/{prefix}.faults.json` under the per-prefix
//!   lock, and heals; it knows no particular fault.
//! - `plans` holds the plans too long to read inline in an entry; [`felix`] writes Calico's
//!   filter chains the way Felix does, for the firewall faults.
//! - `state` reads the kernel state plans change; `probe` runs a fault's probe.
//! - [`nat`] holds the plans of the faults of a lab with Services (kube-proxy's and Calico's
//!   NAT, conntrack), `conntrack` fills a conntrack table.

pub mod catalogue;
mod conntrack;
pub mod engine;
pub mod felix;
pub mod nat;
mod plans;
mod probe;
mod state;

pub use catalogue::{
    Entry, ExpectedDrop, Fault, KernelDrop, ProbeSpec, Target, TracerReport, CATALOGUE, FAULT_MTU,
    MTU_PROBE_SIZE, NFT_TABLE_POLICY, NFT_TABLE_UNDERLAY, OVERLAP_RULE_PREF, OVERLAP_TABLE,
    POLICY_PORT, RPF_NIC, SECOND_NIC,
};
pub use engine::{active, active_info, break_lab, heal, heal_all, FaultInfo};
pub use plans::{CALICO_POLICY, POD_NAMESPACE};
pub use probe::Probe;
