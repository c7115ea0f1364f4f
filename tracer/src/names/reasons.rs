//! Drop-reason names of the running kernel: `enum skb_drop_reason` from BTF, else the
//! `skb/kfree_skb` tracepoint's format file. Values differ between kernels, so a drop record
//! carries the raw value and only this table names it.

use std::collections::{BTreeMap, HashMap};

use crate::btf::{Btf, BtfError};

const DROP_REASON_PREFIX: &str = "SKB_DROP_REASON_";

/// Drop-reason names as the kernel prints them (`NO_SOCKET`, not `SKB_DROP_REASON_NO_SOCKET`).
#[derive(Debug, Clone, Default)]
pub struct DropReasons {
    by_value: BTreeMap<u32, String>,
    by_name: HashMap<String, u32>,
}

impl DropReasons {
    /// From `enum skb_drop_reason` in the kernel's BTF.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        Ok(Self::from_pairs(btf.enum_values("skb_drop_reason")?))
    }

    /// From enum (name, value) pairs: `SKB_DROP_REASON_X` becomes `X`, and `SKB_CONSUMED`,
    /// `SKB_NOT_DROPPED_YET` lose `SKB_`. `SKB_DROP_REASON_SUBSYS_MASK` (a mask, not a reason)
    /// and values outside u32 are skipped; when two names share a value, `name` gives the first.
    pub fn from_pairs(pairs: Vec<(String, i64)>) -> Self {
        let short = pairs.into_iter().filter_map(|(name, value)| {
            let short = match name.strip_prefix(DROP_REASON_PREFIX) {
                Some("SUBSYS_MASK") => return None,
                Some(s) => s,
                None => name.strip_prefix("SKB_").unwrap_or(&name),
            };
            Some((short.to_string(), value))
        });
        Self::from_short_names(short)
    }

    fn from_short_names(pairs: impl Iterator<Item = (String, i64)>) -> Self {
        let mut r = DropReasons::default();
        for (name, value) in pairs {
            let Ok(value) = u32::try_from(value) else {
                continue;
            };
            r.by_value.entry(value).or_insert_with(|| name.clone());
            r.by_name.entry(name).or_insert(value);
        }
        r
    }

    /// From the `print fmt:` line of `/sys/kernel/tracing/events/skb/kfree_skb/format`:
    /// `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, ...)`.
    pub fn from_tracepoint_format(text: &str) -> Result<Self, BtfError> {
        let err = |m: String| BtfError::TracepointFormat(m);
        let fmt = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("print fmt:"))
            .ok_or_else(|| err("no 'print fmt:' line".into()))?;
        let start = fmt
            .find("__print_symbolic(REC->reason")
            .or_else(|| fmt.find("__print_symbolic("))
            .ok_or_else(|| err("no __print_symbolic(...) in 'print fmt:'".into()))?;
        // `{ 2, "NOT_SPECIFIED" }, ...)`: the names never contain braces or parentheses.
        let table = &fmt[start..];
        let table = &table[..table
            .find(')')
            .ok_or_else(|| err("unclosed table".into()))?];
        let mut pairs = Vec::new();
        for entry in table.split('{').skip(1) {
            let bad = || err(format!("bad __print_symbolic entry '{{{entry}'"));
            let (value, name) = entry.split_once(',').ok_or_else(bad)?;
            let name = name.trim_end().trim_end_matches(',').trim_end();
            let name = name.strip_suffix('}').ok_or_else(bad)?.trim();
            let name = name.strip_prefix('"').and_then(|n| n.strip_suffix('"'));
            let value = value.trim();
            let value = match value.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => value.parse().ok(),
            };
            match (value, name) {
                (Some(v), Some(n)) => pairs.push((n.to_string(), v)),
                _ => return Err(bad()),
            }
        }
        if pairs.is_empty() {
            return Err(err("empty __print_symbolic table".into()));
        }
        Ok(Self::from_short_names(pairs.into_iter()))
    }

    /// Name of a reason value.
    pub fn name(&self, value: u32) -> Option<&str> {
        self.by_value.get(&value).map(String::as_str)
    }

    /// Value of a reason name (`NO_SOCKET` or `SKB_DROP_REASON_NO_SOCKET`).
    #[cfg(test)]
    pub fn value(&self, name: &str) -> Option<u32> {
        let short = name.strip_prefix(DROP_REASON_PREFIX).unwrap_or(name);
        self.by_name.get(short).copied()
    }

    /// Number of distinct values.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_value.len()
    }

    /// (value, name) pairs sorted by value.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.by_value.iter().map(|(&k, n)| (k, n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btf_drop_reasons_from_pairs() {
        let names = "SKB_NOT_DROPPED_YET SKB_CONSUMED SKB_DROP_REASON_NOT_SPECIFIED \
            SKB_DROP_REASON_SKB_CSUM X SKB_DROP_REASON_SUBSYS_MASK";
        let values = [0, 1, 2, 3, -1, 0xffff0000];
        let pairs = names.split(' ').map(String::from).zip(values).collect();
        let r = DropReasons::from_pairs(pairs);
        assert_eq!(
            (r.len(), r.name(1), r.name(3)),
            (4, Some("CONSUMED"), Some("SKB_CSUM"))
        );
        assert_eq!(r.value("SKB_DROP_REASON_SKB_CSUM"), r.value("SKB_CSUM"));
        assert_eq!((r.value("NOT_SPECIFIED"), r.name(9)), (Some(2), None));
    }

    const FORMAT: &str = "name: kfree_skb\nID: 2310\nformat:\n\
        \tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"skbaddr=%p location=%pS reason: %s\", REC->skbaddr, REC->location, \
        __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" }, { 3, \"NO_SOCKET\" }, \
        {0x4,\"SOCKET_CLOSE\"}, { 75, \"SKB_CSUM\" }, { 128, \"MAX\" })\n";

    #[test]
    fn btf_drop_reasons_from_tracepoint_format() {
        let r = DropReasons::from_tracepoint_format(FORMAT).unwrap();
        assert_eq!(
            (r.name(2), r.name(4)),
            (Some("NOT_SPECIFIED"), Some("SOCKET_CLOSE"))
        );
        assert_eq!((r.value("SKB_CSUM"), r.name(5)), (Some(75), None));
        let values: Vec<u32> = r.iter().map(|(v, _)| v).collect();
        assert_eq!(values, [2, 3, 4, 75, 128]);
        let (b1, b2) = (FORMAT.replace("{ 3,", "{ 3 "), FORMAT.replace("})", "}"));
        for bad in ["", "print fmt: \"%d\", REC->x", &b1, &b2] {
            assert!(DropReasons::from_tracepoint_format(bad).is_err(), "{bad}");
        }
    }

    /// The running kernel's BTF names the reasons the verdicts rely on, and agrees with the
    /// tracepoint's format file.
    #[test]
    fn reasons_of_the_running_kernel() {
        let btf = Btf::from_sys().expect("the kernel's BTF (/sys/kernel/btf/vmlinux)");
        let r = DropReasons::from_btf(&btf).unwrap();
        let all: Vec<_> = r.iter().map(|(v, n)| format!("{v}={n}")).collect();
        eprintln!("{} drop reasons: {}", r.len(), all.join(" "));
        let want = "NOT_SPECIFIED NO_SOCKET NETFILTER_DROP IP_RPFILTER NEIGH_FAILED \
            IP_INNOROUTES PKT_TOO_BIG NO_TX_TARGET";
        for n in want.split_whitespace() {
            assert!(r.value(n).is_some(), "{n}");
        }
        let format = "/sys/kernel/tracing/events/skb/kfree_skb/format";
        if let Ok(text) = std::fs::read_to_string(format) {
            let tp = DropReasons::from_tracepoint_format(&text).unwrap();
            for (v, n) in tp.iter() {
                assert_eq!(r.name(v), Some(n), "tracepoint and BTF disagree on {v}");
            }
            eprintln!("the tracepoint format agrees on its {} reasons", tp.len());
        }
    }
}
