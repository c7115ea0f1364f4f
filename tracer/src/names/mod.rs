//! Where a drop is named: the one home of drop-reason and drop-location naming, live and
//! replayed alike.
//!
//! A drop record carries raw kernel values: an `enum skb_drop_reason` value (which differs
//! between kernels) and a text address. [`DropNames`] turns them into the kernel's own words:
//! [`KernelNames`] from the running kernel (reasons from BTF, else the tracepoint's format
//! file; locations through `/proc/kallsyms`), [`RecordedNames`] from the names a recording
//! kept of the kernel it was made on. [`is_noise`] says which named drops are not faults (a
//! consumed skb, the echo reply a ping socket did not want); the pipeline counts and skips
//! those before correlation, so noise never turns a delivered trace into a dropped one.

pub mod kallsyms;
pub mod reason_docs;
mod reasons;

use std::collections::HashMap;

pub use reasons::DropReasons;

use crate::{btf::Btf, model::PacketId};
use kallsyms::Kallsyms;

/// Turns the raw values of a drop record into words.
pub trait DropNames {
    /// The drop reason's name in the kernel that dropped the packet (`reason <n>` if unknown).
    fn reason_name(&self, value: u32) -> String;
    /// `function+0xoff` of a drop location (the hex address if it cannot be symbolised).
    fn location(&self, addr: u64) -> String;
}

/// Names from the running kernel: drop reasons and text symbols.
pub struct KernelNames {
    pub reasons: DropReasons,
    pub kallsyms: Option<Kallsyms>,
}

impl KernelNames {
    /// Reads the reasons from BTF (else from `kfree_format`, the `skb/kfree_skb` tracepoint's
    /// format file, with a warning) and the symbols from kallsyms (without it, locations are
    /// addresses, with a warning). An error only when no reason can be named at all.
    pub fn load(btf: &Btf, kfree_format: Option<&str>) -> anyhow::Result<KernelNames> {
        let reasons = match DropReasons::from_btf(btf) {
            Ok(r) => r,
            Err(e) => match kfree_format.map(DropReasons::from_tracepoint_format) {
                Some(Ok(r)) => {
                    log::warn!(
                        "drop reasons not in BTF ({e}); using the kfree_skb tracepoint's format file"
                    );
                    r
                }
                _ => anyhow::bail!(
                    "cannot name drop reasons: {e}, and no kfree_skb tracepoint format"
                ),
            },
        };
        let kallsyms = match Kallsyms::load() {
            Ok(k) => Some(k),
            Err(e) => {
                log::warn!(
                    "cannot read /proc/kallsyms ({e}); drop locations are shown as addresses"
                );
                None
            }
        };
        Ok(KernelNames { reasons, kallsyms })
    }
}

impl DropNames for KernelNames {
    fn reason_name(&self, value: u32) -> String {
        self.reasons
            .name(value)
            .map_or_else(|| format!("reason {value}"), str::to_string)
    }

    fn location(&self, addr: u64) -> String {
        match &self.kallsyms {
            Some(k) => k.format(addr),
            None => format!("{addr:#x}"),
        }
    }
}

/// Drop reason and location names as a recording kept them (the recorder writes the name of
/// each value before the first record that uses it).
#[derive(Default)]
pub struct RecordedNames {
    reasons: HashMap<u32, String>,
    locations: HashMap<u64, String>,
}

impl RecordedNames {
    pub fn add_reason(&mut self, value: u32, name: String) {
        self.reasons.insert(value, name);
    }

    pub fn add_location(&mut self, addr: u64, symbol: String) {
        self.locations.insert(addr, symbol);
    }
}

impl DropNames for RecordedNames {
    fn reason_name(&self, value: u32) -> String {
        self.reasons
            .get(&value)
            .cloned()
            .unwrap_or_else(|| format!("reason {value}"))
    }

    fn location(&self, addr: u64) -> String {
        self.locations
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| format!("{addr:#x}"))
    }
}

/// Drops that are not faults: a consumed skb, or the echo reply a ping socket did not want
/// (every echo reply produces one at some ping socket).
pub fn is_noise(reason: &str, packet: &PacketId, icmp_type: u8) -> bool {
    match reason {
        "NOT_DROPPED_YET" | "CONSUMED" => true,
        "NO_SOCKET" => packet.proto == 1 && icmp_type == 0,
        _ => false,
    }
}

/// Drops by the destination's own sockets, after the network delivered the packet: a full
/// receive buffer or backlog, protocol memory, a socket filter, TCP's own sequence, window and
/// state checks. Not faults of the dataplane (they are counted apart in the summary);
/// `NO_SOCKET` is not one of them: nothing listening, or a tunnel packet on the wrong port,
/// is a fault to explain.
///
/// `function` is where it happened (`tcp_v4_rcv+0x99`): TCP's receive path discards without a
/// specific reason what a socket in TIME_WAIT or a closing one no longer wants (a late ACK).
pub fn is_receiver_drop(reason: &str, function: &str) -> bool {
    let in_tcp_rcv = ["tcp_v4_rcv+", "tcp_v6_rcv+"]
        .iter()
        .any(|f| function.starts_with(f));
    matches!(
        reason,
        "SOCKET_RCVBUFF" | "SOCKET_BACKLOG" | "SOCKET_CLOSE" | "SOCKET_FILTER" | "PROTO_MEM"
    ) || reason.starts_with("TCP_")
        || reason.starts_with("UNIX_")
        || (reason == "NOT_SPECIFIED" && in_tcp_rcv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_drops_are_socket_level_only() {
        for r in [
            "SOCKET_RCVBUFF",
            "TCP_OLD_DATA",
            "TCP_ZEROWINDOW",
            "PROTO_MEM",
        ] {
            assert!(is_receiver_drop(r, "tcp_v4_rcv+0x99"), "{r}");
        }
        for r in [
            "NO_SOCKET",
            "NETFILTER_DROP",
            "OTHERHOST",
            "NEIGH_FAILED",
            "SKB_CSUM",
        ] {
            assert!(!is_receiver_drop(r, "tcp_v4_rcv+0x99"), "{r}");
        }
        // Unspecified: TCP's receive path discarding for a TIME_WAIT socket is the receiver's;
        // anywhere else (a blackhole route in ip_error, a veth down) it is the network's.
        assert!(is_receiver_drop("NOT_SPECIFIED", "tcp_v4_rcv+0x99"));
        assert!(!is_receiver_drop("NOT_SPECIFIED", "ip_error+0x4f"));
        assert!(!is_receiver_drop(
            "NOT_SPECIFIED",
            "__dev_forward_skb2+0x30"
        ));
    }

    #[test]
    fn recorded_names_fall_back_to_the_raw_values() {
        let mut n = RecordedNames::default();
        n.add_reason(77, "NO_TX_TARGET".into());
        n.add_location(0xffff_1234, "vxlan_xmit+0x10".into());
        assert_eq!(n.reason_name(77), "NO_TX_TARGET");
        assert_eq!(n.reason_name(78), "reason 78");
        assert_eq!(n.location(0xffff_1234), "vxlan_xmit+0x10");
        assert_eq!(n.location(0x10), "0x10");
    }
}
