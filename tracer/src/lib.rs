//! The tracer's user space, as a library (the `tracer` binary is a thin CLI over it).
//!
//! Pipeline: attach (`attach`, `discover`, `netlink`, `netns`, `hooks`) -> collect (ring
//! buffers) -> decode (`event`) -> correlate (`correlate`, `verdict`) -> latency -> render.
//! Each stage is its own module; `trace` wires them together. Kernel names come from `btf` and
//! `kallsyms`; the flow filter is compiled by `filter`.

pub(crate) mod attach;
pub(crate) mod btf;
pub(crate) mod capture;
pub mod cli;
pub(crate) mod correlate;
pub(crate) mod diagnose;
pub(crate) mod discover;
pub(crate) mod event;
pub(crate) mod filter;
#[cfg(test)]
mod fixtures;
pub(crate) mod hooks;
pub(crate) mod latency;
pub(crate) mod model;
pub(crate) mod names;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod pipeline;
pub(crate) mod pipeline_bench;
pub(crate) mod rcu;
pub(crate) mod record;
pub(crate) mod render;
pub(crate) mod signals;
pub(crate) mod tcx;
pub(crate) mod topology;
pub(crate) mod trace;
pub(crate) mod verdict;
