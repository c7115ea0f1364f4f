//! One file per hook.
pub mod tc_hop;
