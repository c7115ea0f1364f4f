//! Which pods a filter can concern: a packet on a pod's veth has the pod's address as its
//! source (leaving the pod) or its destination (entering it), so the veth of a pod whose
//! address can be neither in a matching packet never sees one, and need not be attached.
//!
//! The answer must never be "no" for an address that some matching packet carries: each
//! clause of the compiled DNF is checked with the address fixed on one side and the other
//! side free. Address terms are exact (prefix intersection, and exclusion by one prefix that
//! covers what is left); protocol and port terms are assumed satisfiable, and exclusions that
//! only together cover what is left are not noticed: both err on the side of "yes".

use std::net::Ipv4Addr;

use tracer_common::filter::{
    FilterClause, FilterProgram, FilterTerm, MODE_MATCH_ALL, TERM_ANY_NET, TERM_DST_NET,
    TERM_SRC_NET,
};

/// A prefix in host byte order (`addr` already masked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Net {
    addr: u32,
    mask: u32,
}

impl Net {
    const ALL: Net = Net { addr: 0, mask: 0 };

    fn of(t: &FilterTerm) -> Net {
        let host = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
        Net {
            addr: host(t.addr),
            mask: host(t.mask),
        }
    }

    fn contains_addr(self, a: u32) -> bool {
        a & self.mask == self.addr
    }

    /// Whether every address of `other` is in `self`.
    fn covers(self, other: Net) -> bool {
        self.mask & other.mask == self.mask && other.addr & self.mask == self.addr
    }

    /// The intersection of two prefixes: the narrower one when nested, else empty.
    fn intersect(self, other: Net) -> Option<Net> {
        if self.covers(other) {
            Some(other)
        } else if other.covers(self) {
            Some(self)
        } else {
            None
        }
    }
}

/// The addresses `program`'s address terms name (each prefix's first address).
pub fn named_addresses(program: &FilterProgram) -> Vec<Ipv4Addr> {
    if program.mode == MODE_MATCH_ALL {
        return Vec::new();
    }
    let mut out: Vec<Ipv4Addr> = program
        .clauses
        .iter()
        .take(program.n_clauses as usize)
        .flat_map(|c| c.terms.iter().take(c.n_terms as usize))
        .filter(|t| matches!(t.kind, TERM_SRC_NET | TERM_DST_NET | TERM_ANY_NET))
        .map(|t| Ipv4Addr::from(Net::of(t).addr))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Whether some packet with `addr` as its source or its destination can match `program`.
pub fn may_involve(program: &FilterProgram, addr: Ipv4Addr) -> bool {
    if program.mode == MODE_MATCH_ALL {
        return true;
    }
    let a = u32::from(addr);
    program
        .clauses
        .iter()
        .take(program.n_clauses as usize)
        .any(|c| satisfiable(c, a, true) || satisfiable(c, a, false))
}

/// Whether `clause` can hold for a packet whose source (`fixed_is_src`) or destination is `a`,
/// the other address being free.
fn satisfiable(clause: &FilterClause, a: u32, fixed_is_src: bool) -> bool {
    // What the free address must be in, and what it must not be in.
    let mut within = Net::ALL;
    let mut outside: Vec<Net> = Vec::new();
    for t in clause.terms.iter().take(clause.n_terms as usize) {
        let net = Net::of(t);
        let negate = t.negate != 0;
        let on_fixed = match t.kind {
            TERM_SRC_NET => Some(fixed_is_src),
            TERM_DST_NET => Some(!fixed_is_src),
            TERM_ANY_NET => None,
            // Protocol and ports: assumed satisfiable.
            _ => continue,
        };
        let fixed_hit = net.contains_addr(a);
        match (on_fixed, negate) {
            // The term is about the fixed address only: it holds or it does not.
            (Some(true), _) => {
                if fixed_hit == negate {
                    return false;
                }
            }
            // About the free address only.
            (Some(false), false) => match within.intersect(net) {
                Some(n) => within = n,
                None => return false,
            },
            (Some(false), true) => outside.push(net),
            // Either address: satisfied by the fixed one, else the free one must be in it.
            (None, false) => {
                if !fixed_hit {
                    match within.intersect(net) {
                        Some(n) => within = n,
                        None => return false,
                    }
                }
            }
            // Neither address: the fixed one must be outside, and so must the free one.
            (None, true) => {
                if fixed_hit {
                    return false;
                }
                outside.push(net);
            }
        }
    }
    !outside.iter().any(|n| n.covers(within))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;

    fn program(expr: &str) -> FilterProgram {
        Filter::parse(expr)
            .expect("parse")
            .compile()
            .expect("compile")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("address")
    }

    #[test]
    fn a_pair_of_hosts_concerns_those_two_only() {
        let p = program("host 10.244.0.1 and host 10.244.4.1");
        assert!(may_involve(&p, ip("10.244.0.1")));
        assert!(may_involve(&p, ip("10.244.4.1")));
        assert!(!may_involve(&p, ip("10.244.0.2")));
        let p = program("src host 10.244.0.1 and dst net 10.244.4.0/26 and tcp and port 80");
        assert!(may_involve(&p, ip("10.244.0.1")));
        assert!(may_involve(&p, ip("10.244.4.9")));
        assert!(!may_involve(&p, ip("10.244.0.9")));
        assert!(!may_involve(&p, ip("10.244.5.9")));
    }

    #[test]
    fn one_host_or_no_address_concerns_everyone() {
        for expr in [
            "",
            "host 10.96.0.10",
            "tcp and port 53",
            "not host 10.244.0.1",
            "udp",
        ] {
            let p = program(expr);
            assert!(may_involve(&p, ip("10.244.7.7")), "{expr:?}");
        }
        // Any pod may talk to an excluded host's peer, but not be the excluded host itself
        // when the other side must be excluded too.
        let p = program("not host 10.244.0.1");
        assert!(!may_involve(&p, ip("10.244.0.1")));
        let p = program("host 10.244.0.1 or host 10.244.4.1");
        assert!(may_involve(&p, ip("10.1.2.3")));
    }

    /// Soundness against the AST evaluator: whenever some packet with the address on one side
    /// matches (found by trying the filter's own addresses, their neighbours and a few
    /// strangers on the other side, with every protocol and port the filter names), the
    /// answer is yes.
    #[test]
    fn never_no_when_a_matching_packet_exists() {
        let exprs = [
            "host 10.0.0.1 and host 10.0.0.2",
            "src host 10.0.0.1 and not dst net 10.0.0.0/30",
            "net 10.0.0.0/24 and not net 10.0.0.0/25",
            "(host 10.0.0.1 or host 10.0.1.1) and (host 10.0.0.2 or net 10.0.2.0/24)",
            "not (host 10.0.0.1 or host 10.0.0.2)",
            "dst host 10.0.0.2 and src net 10.0.0.0/16 and udp and port 53",
            "not src host 10.0.0.1 and not dst host 10.0.0.1",
            "host 10.0.0.1 and not host 10.0.0.1",
            "src net 10.0.0.0/8 and dst net 10.0.0.0/31 and not dst host 10.0.0.1",
        ];
        let candidates: Vec<Ipv4Addr> = [
            "10.0.0.0",
            "10.0.0.1",
            "10.0.0.2",
            "10.0.0.3",
            "10.0.0.200",
            "10.0.1.1",
            "10.0.2.7",
            "10.1.0.1",
            "192.168.1.1",
            "0.0.0.0",
        ]
        .iter()
        .map(|s| ip(s))
        .collect();
        for expr in exprs {
            let f = Filter::parse(expr).expect("parse");
            let p = f.compile().expect("compile");
            for &a in &candidates {
                let witness = candidates.iter().any(|&b| {
                    [(6u8, 53u16), (17, 53), (1, 0)]
                        .iter()
                        .any(|&(proto, port)| {
                            f.matches(a, b, proto, port, port) || f.matches(b, a, proto, port, port)
                        })
                });
                if witness {
                    assert!(
                        may_involve(&p, a),
                        "{expr}: {a} can match but was ruled out"
                    );
                }
            }
        }
        // And the pruning is not vacuous: the pair filter rules strangers out.
        let p = program(exprs[0]);
        assert!(!may_involve(&p, ip("10.0.0.3")));
        let p = program(exprs[7]);
        assert!(
            !may_involve(&p, ip("10.0.0.1")),
            "a contradiction concerns no one"
        );
    }
}
