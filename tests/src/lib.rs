//! The Calico-like lab: network namespaces, veths, VTEPs and routes built the way Calico builds
//! a node, with RAII teardown. Used by `cargo xtask lab`, the demo and the integration tests.
//!
//! Design note: the crate is split into a pure half and a system half. [`spec`] turns a
//! [`LabSpec`] into a deterministic [`Topology`] (names, addresses, blocks), [`script`] turns a
//! topology into `ip`/`bridge` batch lines and sysctl writes; both are unit-tested without
//! root. [`Lab`] (module `build`) executes the scripts with a handful of processes, [`netns`]
//! provides the namespace plumbing (also for tests that generate traffic from inside pods), and
//! [`mod@status`] keeps `/run/tracer-lab/{prefix}.json` so that `lab status` can describe a lab
//! left running by `lab up`; [`traffic`] generates pod-to-pod traffic, and [`faults`] breaks a
//! running lab the way Calico clusters break (and heals it exactly): every fault is declared
//! once, in [`faults::catalogue`], and applied by [`faults::engine`]. Everything is keyed by the
//! prefix, so labs with different prefixes can coexist (parallel tests).
//!
//! [`services`] adds Kubernetes Services (kube-proxy's NAT, Calico's natOutgoing, a DNS
//! responder, a machine outside the cluster) to a lab built with `LabSpec::services`.
//!
//! [`vm`] runs the same lab with every node a qemu guest of its own kernel: each guest builds
//! its node with [`Lab::up_node`] through the `lab` binary ([`cli`], also behind
//! `cargo xtask lab`).

mod build;
pub mod churn;
pub mod cidr;
pub mod cli;
pub mod faults;
pub mod netns;
pub mod script;
pub mod services;
pub mod spec;
pub mod status;
pub mod topology;
pub mod traffic;
pub mod vm;

pub use build::{down_prefix, Lab};
pub use cidr::Cidr;
pub use faults::{
    active, break_lab, heal, heal_all, ExpectedDrop, Fault, FaultInfo, Probe, TracerReport,
};
pub use netns::{exec_in, in_netns, netns_inode};
pub use spec::{Encap, LabSpec};
pub use status::status;
pub use topology::{IpipTunnel, Node, Pod, Topology, Underlay, Vtep};
