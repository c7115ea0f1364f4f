//! The tracer's user space, as a library; the `tracer` binary is its command line (`cli`), the
//! only public module.
//!
//! Capture (`capture`, with the loader: `attach`, `tcx`, `discover`, `netlink`, `netns`,
//! `hooks`, `btf`, `rcu`) attaches and drains the ring buffers; the `pipeline` runs the stages
//! in order: decode (`event`) -> name (`names`) -> correlate (`correlate`) -> verdict
//! (`verdict`) -> pod and Service names (`k8s`) -> flows -> latency (`latency`) -> render
//! (`render`). The types the stages exchange live in `model`; the flow filter is compiled by
//! `filter`. Commands wire capture to the pipeline (`trace`), to a file (`record`;
//! `record::replay` feeds the file back to the pipeline), or add probes (`diagnose`); `report`
//! writes an incident report from recordings (another consumer of the replayed pipeline),
//! `pcap` their packet bytes as pcap-ng (another), `progress` shows long commands' progress.

pub(crate) mod attach;
pub(crate) mod audit;
pub(crate) mod btf;
pub(crate) mod capture;
pub(crate) mod check;
pub mod cli;
pub(crate) mod clsact;
pub(crate) mod correlate;
pub(crate) mod diagnose;
pub(crate) mod discover;
pub(crate) mod event;
pub(crate) mod fast_hash;
pub(crate) mod filter;
#[cfg(test)]
mod fixtures;
pub(crate) mod follow;
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod hooks;
pub(crate) mod k8s;
pub(crate) mod latency;
pub(crate) mod machine;
pub(crate) mod merge;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod names;
pub(crate) mod nat;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod pcap;
pub(crate) mod pipeline;
pub(crate) mod pipeline_bench;
pub(crate) mod pods;
pub(crate) mod probes;
pub(crate) mod progress;
pub(crate) mod rcu;
pub(crate) mod record;
pub(crate) mod recording;
pub(crate) mod render;
pub(crate) mod replay;
pub(crate) mod report;
pub(crate) mod signals;
pub(crate) mod state;
pub(crate) mod tcx;
pub(crate) mod topology;
pub(crate) mod trace;
pub(crate) mod verdict;
