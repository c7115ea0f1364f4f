//! Unit tests of the filter parser and compiler.

use super::*;
use tracer_common::filter::{FilterInput, MODE_MATCH_ALL};

fn parse(expr: &str) -> Filter {
    Filter::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

fn err(expr: &str) -> String {
    match Filter::parse(expr).and_then(|f| f.compile()) {
        Ok(p) => panic!("{expr:?} compiled to {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// The compiled clauses, decoded from the kernel representation: terms joined by " & ",
/// clauses by " | ", `!` for a negated term.
fn dnf_text(expr: &str) -> String {
    let p = parse(expr).compile().unwrap();
    assert_eq!(p.mode, MODE_DNF);
    let term = |t: &FilterTerm| {
        let net = format!(
            "{}/{}",
            Ipv4Addr::from(t.addr.to_ne_bytes()),
            t.mask.count_ones()
        );
        let body = match t.kind {
            TERM_PROTO => format!("proto{}", t.proto),
            TERM_SRC_PORT => format!("sport{}", t.port),
            TERM_DST_PORT => format!("dport{}", t.port),
            TERM_ANY_PORT => format!("port{}", t.port),
            TERM_SRC_NET => format!("snet{net}"),
            TERM_DST_NET => format!("dnet{net}"),
            TERM_ANY_NET => format!("net{net}"),
            k => panic!("kind {k}"),
        };
        format!("{}{body}", if t.negate != 0 { "!" } else { "" })
    };
    let clause = |c: &tracer_common::filter::FilterClause| {
        let terms: Vec<String> = c.terms[..c.n_terms as usize].iter().map(term).collect();
        terms.join(" & ")
    };
    let clauses: Vec<String> = p.clauses[..p.n_clauses as usize]
        .iter()
        .map(clause)
        .collect();
    clauses.join(" | ")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn each_primitive() {
    let cases = [
        ("host 10.0.0.1", "net10.0.0.1/32"),
        ("src host 10.0.0.1", "snet10.0.0.1/32"),
        ("dst host 10.0.0.1", "dnet10.0.0.1/32"),
        ("src 10.0.0.1", "snet10.0.0.1/32"),
        ("net 10.0.0.0/8", "net10.0.0.0/8"),
        ("src net 10.1.0.0/16", "snet10.1.0.0/16"),
        ("dst net 10.1.2.0/24", "dnet10.1.2.0/24"),
        ("net 172.16.0.0 mask 255.240.0.0", "net172.16.0.0/12"),
        ("port 80", "port80"),
        ("src port 53", "sport53"),
        ("dst port 0", "dport0"),
        ("dst port 65535", "dport65535"),
        ("tcp", "proto6"),
        ("UDP", "proto17"),
        ("icmp", "proto1"),
        ("sctp", "proto132"),
        ("proto 47", "proto47"),
        ("proto tcp", "proto6"),
        ("not tcp", "!proto6"),
    ];
    for (expr, want) in cases {
        assert_eq!(dnf_text(expr), want, "{expr}");
    }
    // Wire byte order: the bytes in memory are the bytes on the wire.
    let t = parse("net 10.1.2.3/8").compile().unwrap().clauses[0].terms[0];
    assert_eq!(
        (t.addr.to_ne_bytes(), t.mask.to_ne_bytes()),
        ([10, 0, 0, 0], [255, 0, 0, 0])
    );
}

#[test]
fn empty_is_match_all() {
    for e in ["", "   ", "\t\n"] {
        let f = parse(e);
        assert!(f.is_match_all());
        assert_eq!(f.compile().unwrap().mode, MODE_MATCH_ALL);
        assert_eq!(f.to_string(), "");
        assert!(f.matches(ip("1.2.3.4"), ip("5.6.7.8"), 1, 0, 0));
    }
    assert!(!parse("tcp").is_match_all());
}

#[test]
fn precedence_parentheses_negation() {
    let cases = [
        ("tcp or udp and port 53", "proto6 | proto17 & port53"),
        (
            "(tcp or udp) and port 53",
            "proto6 & port53 | proto17 & port53",
        ),
        ("tcp||(udp&&!port 53)", "proto6 | proto17 & !port53"),
        ("not tcp and udp", "proto17"),
        ("tcp or (udp or icmp)", "proto6 | proto17 | proto1"),
        ("HOST 10.1.2.3 AND Not Port 80", "!port80 & net10.1.2.3/32"),
        // De Morgan
        ("not (tcp or port 53)", "!proto6 & !port53"),
        ("!(host 10.0.0.1 && port 80)", "!net10.0.0.1/32 | !port80"),
        ("not not tcp", "proto6"),
        ("not (not src port 1 or not dst port 2)", "sport1 & dport2"),
        // Duplicates, absorption and redundant protocol tests.
        ("tcp and tcp and port 1 and port 1", "proto6 & port1"),
        ("tcp or tcp and port 80", "proto6"),
        ("tcp and port 80 or tcp", "proto6"),
        ("host 1.1.1.1 and not host 1.1.1.1 or udp", "proto17"),
    ];
    for (expr, clauses) in cases {
        assert_eq!(dnf_text(expr), clauses, "{expr}");
    }
    let canonical = [
        "((tcp)) => tcp",
        "tcp||(udp&&!port 53) => tcp or udp and not port 53",
        "(tcp or udp) and port 53 => (tcp or udp) and port 53",
        "tcp or (udp or icmp) => tcp or (udp or icmp)",
        "tcp and (udp and not icmp) => tcp and (udp and not icmp)",
        "!(host 10.0.0.1 && port 80) => not (host 10.0.0.1 and port 80)",
        "HOST 10.1.2.3 AND Not Port 80 => host 10.1.2.3 and not port 80",
        "proto 6 or proto 17 or proto 47 => tcp or udp or proto 47",
        // CIDR: /32 is a host, a bare address is a /32, host bits are masked off.
        "net 10.0.0.7/32 => host 10.0.0.7",
        "net 10.0.0.7 => host 10.0.0.7",
        "net 10.0.0.0 mask 255.0.0.0 => net 10.0.0.0/8",
        "net 10.1.2.3/8 => net 10.0.0.0/8",
        "dst net 255.255.255.255/0 => dst net 0.0.0.0/0",
        "net 192.168.1.77/31 => net 192.168.1.76/31",
    ];
    for case in canonical {
        let (expr, want) = case.split_once(" => ").unwrap();
        assert_eq!(parse(expr).to_string(), want, "{expr}");
    }
}

#[test]
fn contradictions_match_nothing() {
    let pkt = FilterInput {
        proto: 6,
        sport: 1,
        dport: 80,
        ..Default::default()
    };
    for e in "tcp and not tcp;tcp and udp;icmp and port 80;not (port 1 or not port 1)".split(';') {
        let p = parse(e).compile().unwrap();
        assert_eq!((p.mode, p.n_clauses), (MODE_DNF, 0), "{e}");
        assert!(!p.matches(&pkt));
    }
}

#[test]
fn cidr_edge_cases() {
    assert_eq!(dnf_text("net 0.0.0.0/0"), "net0.0.0.0/0");
    let all = parse("net 0.0.0.0/0").compile().unwrap();
    let pkt = FilterInput {
        saddr: 0x1234_5678,
        ..Default::default()
    };
    assert!(all.matches(&pkt));
    // Host bits are masked off (documented choice), not rejected: see also the canonical forms.
    let f = parse("net 10.1.2.3/8");
    assert!(f.matches(ip("10.200.0.1"), ip("1.1.1.1"), 6, 1, 2));
    assert!(!f.matches(ip("11.0.0.1"), ip("1.1.1.1"), 6, 1, 2));
    for bad in "10.0.0.0/33 10.0.0.0/ 10.0.0/8 10.0.0.0/-1 10.0.0.0/8/8 /8 x".split(' ') {
        assert_eq!(
            err(&format!("net {bad}")),
            format!("filter: invalid CIDR '{bad}' at column 5")
        );
    }
}

const UNKNOWN_FOO: &str = "unknown primitive 'foo' (expected host, net, port, src, dst, tcp, \
                           udp, icmp, sctp, proto, not or '(') at column 9";

#[test]
fn errors_with_positions() {
    let cases = [
        "host => expected an address after 'host' at column 5",
        "host and tcp => expected an address after 'host' at column 6",
        "host 10.0.0.256 => invalid address '10.0.0.256' at column 6",
        "net 10.0.0.0/33 => invalid CIDR '10.0.0.0/33' at column 5",
        "net 10.0.0.0 mask 255.0.255.0 => invalid netmask '255.0.255.0' at column 19",
        "net 10.0.0.0 mask => expected a netmask after 'mask' at column 18",
        "(tcp or udp)) => unexpected ')' at column 13",
        "tcp and () => unexpected ')' at column 10",
        ") => unexpected ')' at column 1",
        "port 70000 => port 70000 out of range at column 6",
        "port 99999999999 => port 99999999999 out of range at column 6",
        "port http => invalid port 'http' at column 6",
        "port -1 => invalid port '-1' at column 6",
        "proto 256 => protocol 256 out of range at column 7",
        "tcp udp => expected 'and' or 'or' before 'udp' at column 5",
        "(tcp udp) => expected 'and' or 'or' before 'udp' at column 6",
        "tcp and => expected an expression after 'and' at column 8",
        "tcp and    => expected an expression after 'and' at column 8",
        "tcp or or udp => expected an expression after 'or' at column 8",
        "not => expected an expression after 'not' at column 4",
        "and tcp => unexpected 'and' at column 1",
        "(tcp or udp => unclosed '(' at column 1",
        "tcp & udp => unexpected character '&' at column 5",
        "tcp | udp => unexpected character '|' at column 5",
        "tcp and héllo => unexpected character 'é' at column 10",
        "src foo => expected 'host', 'net', 'port' or an address after 'src' at column 5",
        "dst => expected 'host', 'net', 'port' or an address after 'dst' at column 4",
    ];
    for case in cases {
        let (expr, msg) = case.split_once(" => ").unwrap();
        assert_eq!(err(expr), format!("filter: {msg}"), "{expr:?}");
    }
    assert_eq!(err("tcp and foo"), format!("filter: {UNKNOWN_FOO}"));
    let deep = format!("{}tcp{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(
        err(&deep),
        "filter: expression nested too deeply at column 65"
    );
    assert_eq!(
        err(&"not ".repeat(100)),
        "filter: expression nested too deeply at column 257"
    );
}

#[test]
fn too_complex() {
    let e = "(host 10.0.0.1 or host 10.0.0.2 or host 10.0.0.3) and \
             (port 1 or port 2 or port 3 or port 4)";
    let msg = "filter: too complex: needs 12 clauses, at most 8 fit in the kernel \
               (simplify or split the trace)";
    assert_eq!(err(e), msg);
    let e = "(host 10.0.0.1 or host 10.0.0.2) and (port 1 or port 2 or port 3 or port 4)";
    assert_eq!(parse(e).compile().unwrap().n_clauses, 8);
    let nine: Vec<String> = (1..=9).map(|i| format!("not port {i}")).collect();
    let msg = "filter: too complex: a clause needs 9 terms, at most 8 fit in the kernel \
               (simplify or split the trace)";
    assert_eq!(err(&nine.join(" and ")), msg);
    assert_eq!(
        parse(&nine[..8].join(" and ")).compile().unwrap().clauses[0].n_terms,
        8
    );
    // An exponential expansion is cut short instead of blowing up.
    let big: Vec<String> = (0..16)
        .map(|i| format!("(src port {i} or dst port {i})"))
        .collect();
    assert_eq!(
        Filter::parse(&big.join(" and ")).unwrap().compile(),
        Err(FilterError::TooManyClauses(1024 * 2))
    );
}

#[test]
fn caret_rendering() {
    let e = Filter::parse("net 10.0.0.0/33").unwrap_err();
    assert_eq!(e.position(), Some(4));
    let want = "filter: invalid CIDR '10.0.0.0/33' at column 5\n  net 10.0.0.0/33\n      ^";
    assert_eq!(e.render("net 10.0.0.0/33"), want);
    let e = Filter::parse("tcp and").unwrap_err();
    assert!(e.render("tcp and").ends_with("\n  tcp and\n         ^"));
    let e = Filter::parse("\ttcp )").unwrap_err();
    assert!(e.render("\ttcp )").ends_with("\n  \ttcp )\n  \t    ^"));
    let e = FilterError::TooManyTerms(9);
    assert_eq!((e.position(), e.render("tcp")), (None, e.to_string()));
}

#[test]
fn from_str_and_display_round_trip() {
    let f: Filter = "src host 10.0.0.1 && (dst port 80 || dst port 443)"
        .parse()
        .unwrap();
    assert_eq!(
        f.as_str(),
        "src host 10.0.0.1 && (dst port 80 || dst port 443)"
    );
    assert_eq!(
        f.to_string(),
        "src host 10.0.0.1 and (dst port 80 or dst port 443)"
    );
    for expr in exprs() {
        let f = parse(expr);
        let again = parse(&f.to_string());
        assert_eq!(again.expr, f.expr, "{expr:?} -> {f}");
        assert_eq!(again.to_string(), f.to_string());
    }
}

/// About thirty expressions covering every primitive and operator, separated by `;`.
const EXPRS: &str = "host 10.0.0.1; src host 10.0.0.1; dst host 10.0.0.2; net 10.0.0.0/8;\
    src net 10.0.0.0/30; dst net 192.168.0.0/16; net 0.0.0.0/0; not net 0.0.0.0/0;\
    port 80; src port 0; dst port 53; not port 80; tcp; udp or icmp;\
    not tcp and not udp; proto 17 and port 53; tcp and port 80 or udp and port 53;\
    (tcp or udp) and (port 53 or port 80); not (tcp and port 80);\
    not (host 10.0.0.1 or host 10.0.0.2) and port 80;\
    src host 10.0.0.1 and dst host 10.0.0.2 or src host 10.0.0.2 and dst host 10.0.0.1;\
    host 10.0.0.1 and not (port 80 or port 443) and tcp;\
    !(src port 80 || dst port 80) && net 10.0.0.0/8; icmp or not port 80;\
    not icmp and not port 0; tcp and not tcp or udp;\
    (tcp or icmp) and not (icmp and host 10.0.0.1);\
    not (not (tcp or udp) or not (port 443 or net 192.168.1.0/24));\
    src port 443 and not dst port 443 or dst port 443 and not src port 443;\
    not (net 10.0.0.0/8 and (port 53 or udp)) and not icmp;\
    (udp or tcp) and (src net 10.0.0.0/24 or dst net 10.0.0.0/24) and not port 0;\
    tcp or (udp or (icmp or (port 80 and not host 255.255.255.255)))";

fn exprs() -> impl Iterator<Item = &'static str> {
    EXPRS.split(';').map(str::trim)
}

/// AST evaluation and the compiled DNF (kernel reference evaluator) agree exactly.
#[test]
fn compiled_program_agrees_with_ast() {
    let addrs = "10.0.0.1 10.0.0.2 10.0.0.3 192.168.1.1 0.0.0.0 255.255.255.255";
    let addrs: Vec<Ipv4Addr> = addrs.split(' ').map(ip).collect();
    let ports = [0, 53, 80, 443];
    let mut grid = Vec::new();
    for (&s, &d) in addrs.iter().flat_map(|s| addrs.iter().map(move |d| (s, d))) {
        for (&sp, &dp) in ports.iter().flat_map(|s| ports.iter().map(move |d| (s, d))) {
            grid.extend([1, 6, 17].map(|p| (s, d, p, sp, dp)));
        }
    }
    let mut checked = 0;
    for expr in exprs() {
        let f = parse(expr);
        let prog = f.compile().unwrap_or_else(|e| panic!("{expr}: {e}"));
        let mut hits = 0;
        for (src, dst, proto, sport, dport) in grid.iter().copied() {
            let (saddr, daddr) = (src.octets(), dst.octets());
            let (saddr, daddr) = (u32::from_ne_bytes(saddr), u32::from_ne_bytes(daddr));
            let input = FilterInput {
                saddr,
                daddr,
                proto,
                sport,
                dport,
            };
            let want = f.matches(src, dst, proto, sport, dport);
            assert_eq!(
                prog.matches(&input),
                want,
                "{expr}: {src}:{sport} > {dst}:{dport} p{proto}"
            );
            hits += usize::from(want);
            checked += 1;
        }
        assert!(
            hits > 0 || expr.starts_with("not net 0.0.0.0/0"),
            "{expr} never matched"
        );
    }
    assert_eq!(checked, 32 * 36 * 3 * 16);
}

#[test]
fn icmp_has_no_ports() {
    let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
    assert!(!parse("port 80").matches(a, b, 1, 80, 80));
    assert!(parse("not port 80").matches(a, b, 1, 80, 80));
    assert!(parse("port 80").matches(a, b, 132, 80, 1));
    assert!(!parse("port 80").matches(a, b, 6, 81, 82));
}
