//! The compiled flow filter that the kernel programs evaluate.
//!
//! User space parses a tcpdump-like expression, pushes negations down to the primitives and
//! expands it into a disjunction of conjunctions (DNF): the packet matches when every term of
//! at least one clause matches. The kernel side walks at most `MAX_CLAUSES * MAX_TERMS` terms
//! with fixed loop bounds, which keeps the verifier happy and the cost per packet small.
//!
//! Addresses and masks are stored as the four wire bytes read as a native `u32`
//! (`u32::from_ne_bytes(octets)`), so the kernel compares them with the bytes of the packet
//! without any byte swapping.

/// Maximum number of clauses (ORed).
pub const MAX_CLAUSES: usize = 8;
/// Maximum number of terms per clause (ANDed).
pub const MAX_TERMS: usize = 8;

/// `FilterProgram::mode`: no filter, every IPv4 packet matches.
pub const MODE_MATCH_ALL: u32 = 0;
/// `FilterProgram::mode`: evaluate the clauses.
pub const MODE_DNF: u32 = 1;

/// Term kinds (`FilterTerm::kind`).
pub const TERM_SRC_NET: u8 = 1;
pub const TERM_DST_NET: u8 = 2;
/// Source or destination address in the network.
pub const TERM_ANY_NET: u8 = 3;
pub const TERM_SRC_PORT: u8 = 4;
pub const TERM_DST_PORT: u8 = 5;
/// Source or destination port.
pub const TERM_ANY_PORT: u8 = 6;
pub const TERM_PROTO: u8 = 7;

/// One primitive test on the (inner) IPv4 packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterTerm {
    /// One of `TERM_*`.
    pub kind: u8,
    /// Non-zero: the term's result is inverted.
    pub negate: u8,
    /// IP protocol number for `TERM_PROTO`.
    pub proto: u8,
    pub _pad: u8,
    /// Network address (wire bytes as native `u32`), already masked.
    pub addr: u32,
    /// Network mask (wire bytes as native `u32`).
    pub mask: u32,
    /// Port, host order.
    pub port: u16,
    pub _pad2: u16,
}
const _: () = assert!(core::mem::size_of::<FilterTerm>() == 16);

/// A conjunction of terms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterClause {
    pub n_terms: u32,
    pub terms: [FilterTerm; MAX_TERMS],
}
const _: () = assert!(core::mem::size_of::<FilterClause>() == 4 + 16 * MAX_TERMS);

/// The whole filter: a disjunction of clauses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterProgram {
    /// `MODE_MATCH_ALL` or `MODE_DNF`.
    pub mode: u32,
    /// Number of used clauses; 0 with `MODE_DNF` matches nothing.
    pub n_clauses: u32,
    pub clauses: [FilterClause; MAX_CLAUSES],
}
const _: () =
    assert!(core::mem::size_of::<FilterProgram>() == 8 + (4 + 16 * MAX_TERMS) * MAX_CLAUSES);

/// A flow the filter follows although its addresses do not match it: the tuple a matching
/// packet got from NAT (and its reverse, for the replies). Keys of the kernel's `NAT_FOLLOW`
/// map, explicit padding so that equal flows are equal bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FollowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FollowKey>() == 16);

impl FollowKey {
    #[inline(always)]
    pub fn of(i: &FilterInput) -> FollowKey {
        FollowKey {
            saddr: i.saddr,
            daddr: i.daddr,
            sport: i.sport,
            dport: i.dport,
            proto: i.proto,
            _pad: [0; 3],
        }
    }

    /// The other direction of the flow.
    #[inline(always)]
    pub fn reverse(&self) -> FollowKey {
        FollowKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }
}

/// The packet fields a filter looks at (shared by the kernel and the user-space reference
/// evaluator, so both implement exactly the same semantics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterInput {
    /// Source address, wire bytes as native `u32`.
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    /// Host order; 0 when the protocol has no ports.
    pub sport: u16,
    pub dport: u16,
}

impl FilterTerm {
    /// Evaluates this term on a packet.
    #[inline(always)]
    pub fn eval(&self, p: &FilterInput) -> bool {
        let hit = match self.kind {
            TERM_SRC_NET => p.saddr & self.mask == self.addr,
            TERM_DST_NET => p.daddr & self.mask == self.addr,
            TERM_ANY_NET => p.saddr & self.mask == self.addr || p.daddr & self.mask == self.addr,
            TERM_SRC_PORT => has_ports(p.proto) && p.sport == self.port,
            TERM_DST_PORT => has_ports(p.proto) && p.dport == self.port,
            TERM_ANY_PORT => has_ports(p.proto) && (p.sport == self.port || p.dport == self.port),
            TERM_PROTO => p.proto == self.proto,
            _ => false,
        };
        hit != (self.negate != 0)
    }
}

/// Protocols whose header starts with source and destination ports (TCP, UDP, SCTP).
#[inline(always)]
pub fn has_ports(proto: u8) -> bool {
    proto == 6 || proto == 17 || proto == 132
}

impl FilterProgram {
    /// A filter that matches every packet.
    pub const MATCH_ALL: FilterProgram = FilterProgram {
        mode: MODE_MATCH_ALL,
        n_clauses: 0,
        clauses: [FilterClause {
            n_terms: 0,
            terms: [FilterTerm {
                kind: 0,
                negate: 0,
                proto: 0,
                _pad: 0,
                addr: 0,
                mask: 0,
                port: 0,
                _pad2: 0,
            }; MAX_TERMS],
        }; MAX_CLAUSES],
    };

    /// Reference evaluation, written with the same fixed bounds as the kernel loop.
    pub fn matches(&self, p: &FilterInput) -> bool {
        if self.mode == MODE_MATCH_ALL {
            return true;
        }
        let n_clauses = self.n_clauses as usize;
        for (c, clause) in self.clauses.iter().enumerate() {
            if c >= n_clauses {
                break;
            }
            let n_terms = clause.n_terms as usize;
            let mut all = true;
            for (t, term) in clause.terms.iter().enumerate() {
                if t >= n_terms {
                    break;
                }
                if !term.eval(p) {
                    all = false;
                    break;
                }
            }
            if all {
                return true;
            }
        }
        false
    }
}
