//! One file per hook.
pub mod drop;
pub mod encap_fn;
pub mod fib;
pub mod nat;
pub mod tc_hop;
