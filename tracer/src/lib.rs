//! The tracer's user space, as a library (the `tracer` binary is a thin CLI over it).
//!
//! Pipeline: attach (`attach`, `discover`, `netlink`, `netns`, `hooks`) -> collect (ring
//! buffers) -> decode (`event`) -> correlate (`correlate`, `verdict`) -> latency -> render.
//! Each stage is its own module; `trace` wires them together. Kernel names come from `btf` and
//! `kallsyms`; the flow filter is compiled by `filter`.

pub mod attach;
pub mod btf;
pub mod capture;
pub mod correlate;
pub mod diagnose;
pub mod discover;
pub mod event;
pub mod filter;
#[cfg(test)]
mod fixtures;
pub mod hooks;
pub mod latency;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod pipeline;
pub mod pipeline_bench;
pub mod rcu;
pub mod record;
pub mod render;
pub mod signals;
pub mod tcx;
pub mod topology;
pub mod trace;
pub mod verdict;
