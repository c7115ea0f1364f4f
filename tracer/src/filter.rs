//! Flow filter: a tcpdump-like expression parsed into an AST and compiled into the
//! [`FilterProgram`] that the kernel programs evaluate.
//!
//! Grammar (keywords are case-insensitive; an operator between primitives is mandatory):
//!
//! ```text
//! expr      := and_expr (("or" | "||") and_expr)*
//! and_expr  := unary (("and" | "&&") unary)*
//! unary     := ("not" | "!") unary | "(" expr ")" | primitive
//! primitive := ["src" | "dst"] ("host" ADDR | "net" NET | "port" N) | ("src" | "dst") ADDR
//!            | "tcp" | "udp" | "icmp" | "sctp" | "proto" (N | NAME)
//! NET       := ADDR "/" LEN | ADDR "mask" MASK | ADDR   (a bare address is a /32, like tcpdump)
//! ```
//!
//! A network written with host bits set (`net 10.1.2.3/8`) is masked to `10.0.0.0/8` rather
//! than rejected. Ports only exist for TCP, UDP and SCTP: `port 80` never matches ICMP and
//! `not port 80` always does (the semantics of [`FilterTerm::eval`]).
//!
//! Compilation pushes negations down to the primitives (negation normal form, De Morgan),
//! distributes `and` over `or` (DNF), removes duplicate terms, contradictory clauses and
//! clauses absorbed by a smaller one, then checks that the result fits the kernel limits.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use tracer_common::filter::{
    has_ports, FilterProgram, FilterTerm, MAX_CLAUSES, MAX_TERMS, MODE_DNF, TERM_ANY_NET,
    TERM_ANY_PORT, TERM_DST_NET, TERM_DST_PORT, TERM_PROTO, TERM_SRC_NET, TERM_SRC_PORT,
};

/// Deepest nesting of parentheses and `not` accepted by the parser.
const MAX_DEPTH: usize = 64;
/// Clause count above which the DNF expansion is abandoned (it could never fit anyway).
const EXPANSION_LIMIT: usize = 1024;

/// Why an expression could not be parsed or compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A parse error. `pos` is the byte offset of the offending token (or the end of the
    /// expression); the input is ASCII up to it, so it is displayed as a 1-based column.
    #[error("filter: {msg} at column {}", .pos + 1)]
    Syntax { msg: String, pos: usize },
    /// The DNF needs more clauses than the kernel holds. The count is exact once simplified;
    /// when the expansion is abandoned early (over `EXPANSION_LIMIT`), it is the size reached.
    #[error(
        "filter: too complex: needs {0} clauses, at most {MAX_CLAUSES} fit in the kernel \
         (simplify or split the trace)"
    )]
    TooManyClauses(usize),
    /// A clause needs more terms than the kernel holds.
    #[error(
        "filter: too complex: a clause needs {0} terms, at most {MAX_TERMS} fit in the kernel \
         (simplify or split the trace)"
    )]
    TooManyTerms(usize),
}

impl FilterError {
    /// Byte offset of the error in the expression, if it has one.
    pub fn position(&self) -> Option<usize> {
        match self {
            Self::Syntax { pos, .. } => Some(*pos),
            Self::TooManyClauses(_) | Self::TooManyTerms(_) => None,
        }
    }

    /// The message followed by the expression and a caret under the error position, for CLI
    /// output:
    ///
    /// ```text
    /// filter: invalid CIDR '10.0.0.0/33' at column 5
    ///   net 10.0.0.0/33
    ///       ^
    /// ```
    pub fn render(&self, expr: &str) -> String {
        let Some(pos) = self.position() else {
            return self.to_string();
        };
        let shown: String = expr
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let prefix = expr.get(..pos.min(expr.len())).unwrap_or(expr);
        let pad: String = prefix
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{self}\n  {shown}\n  {pad}^")
    }
}

fn syntax(pos: usize, msg: impl Into<String>) -> FilterError {
    let msg = msg.into();
    FilterError::Syntax { msg, pos }
}

/// Which address or port of the packet a primitive looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dir {
    Src,
    Dst,
    Any,
}

/// A primitive test. Declaration order is the order of terms in a compiled clause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Prim {
    Proto(u8),
    Port {
        dir: Dir,
        port: u16,
    },
    /// `addr` is already masked to `len` bits; `host A` is `len == 32`.
    Net {
        dir: Dir,
        addr: Ipv4Addr,
        len: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Prim(Prim),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    text: String,
    /// `None`: empty expression, every packet matches.
    expr: Option<Expr>,
}

impl Filter {
    /// Parses an expression; an empty or whitespace-only one matches everything.
    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        let toks = lex(expr)?;
        let end = expr.trim_end().len();
        let mut p = Parser { toks, i: 0, end };
        let parsed = match p.peek() {
            None => None,
            Some(_) => Some(p.parse_or(0)?),
        };
        if let Some(t) = p.peek() {
            return Err(trailing(t));
        }
        let text = expr.to_owned();
        Ok(Filter { text, expr: parsed })
    }

    /// Compiles to the kernel's DNF representation.
    pub fn compile(&self) -> Result<FilterProgram, FilterError> {
        let Some(expr) = &self.expr else {
            return Ok(FilterProgram::MATCH_ALL);
        };
        let clauses = dnf(expr, false)?;
        if clauses.len() > MAX_CLAUSES {
            return Err(FilterError::TooManyClauses(clauses.len()));
        }
        let widest = clauses.iter().map(BTreeSet::len).max().unwrap_or(0);
        if widest > MAX_TERMS {
            return Err(FilterError::TooManyTerms(widest));
        }
        let mut prog = FilterProgram {
            mode: MODE_DNF,
            n_clauses: clauses.len() as u32,
            ..FilterProgram::MATCH_ALL
        };
        for (slot, clause) in prog.clauses.iter_mut().zip(&clauses) {
            slot.n_terms = clause.len() as u32;
            for (term, lit) in slot.terms.iter_mut().zip(clause) {
                *term = lit.term();
            }
        }
        Ok(prog)
    }

    /// True when the expression was empty (no filtering).
    pub fn is_match_all(&self) -> bool {
        self.expr.is_none()
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Evaluates the AST directly on a packet, independently of the compiled form.
    pub fn matches(&self, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, sport: u16, dport: u16) -> bool {
        let (addrs, ports) = ([u32::from(src), u32::from(dst)], [sport, dport]);
        let pkt = Packet {
            addrs,
            ports,
            proto,
        };
        self.expr.as_ref().is_none_or(|e| e.eval(&pkt))
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

/// Canonical form: lowercase keywords, `host` for /32 networks, masked networks, protocol
/// names where known, and only the parentheses the structure needs (parsing it again yields
/// the same AST). The empty filter displays as an empty string.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.as_ref().map_or(Ok(()), |e| e.fmt_prec(f, 0))
    }
}

impl fmt::Display for Prim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |d: &Dir| match d {
            Dir::Src => "src ",
            Dir::Dst => "dst ",
            Dir::Any => "",
        };
        match self {
            Prim::Proto(p) => match proto_name(*p) {
                Some(name) => f.write_str(name),
                None => write!(f, "proto {p}"),
            },
            Prim::Port { dir: d, port } => write!(f, "{}port {port}", dir(d)),
            Prim::Net { dir: d, addr, len } if *len == 32 => write!(f, "{}host {addr}", dir(d)),
            Prim::Net { dir: d, addr, len } => write!(f, "{}net {addr}/{len}", dir(d)),
        }
    }
}

/// Packet fields for the AST evaluator: (source, destination), addresses in host order.
struct Packet {
    addrs: [u32; 2],
    ports: [u16; 2],
    proto: u8,
}

impl Expr {
    /// `prec`: 0 in an `or` operand, 1 in an `and` operand, 2 under `not`. Right operands are
    /// printed one level tighter so that right-nested chains keep their parentheses.
    fn fmt_prec(&self, f: &mut fmt::Formatter<'_>, prec: u8) -> fmt::Result {
        let (op, level, a, b) = match self {
            Expr::Prim(p) => return fmt::Display::fmt(p, f),
            Expr::Not(e) => {
                f.write_str("not ")?;
                return e.fmt_prec(f, 2);
            }
            Expr::And(a, b) => ("and", 1, a, b),
            Expr::Or(a, b) => ("or", 0, a, b),
        };
        let paren = prec > level;
        f.write_str(if paren { "(" } else { "" })?;
        a.fmt_prec(f, level)?;
        write!(f, " {op} ")?;
        b.fmt_prec(f, level + 1)?;
        f.write_str(if paren { ")" } else { "" })
    }

    fn eval(&self, p: &Packet) -> bool {
        match self {
            Expr::Prim(prim) => prim.eval(p),
            Expr::Not(e) => !e.eval(p),
            Expr::And(a, b) => a.eval(p) && b.eval(p),
            Expr::Or(a, b) => a.eval(p) || b.eval(p),
        }
    }
}

impl Dir {
    /// Indices into `Packet::addrs` / `Packet::ports`.
    fn sides(self) -> &'static [usize] {
        match self {
            Dir::Src => &[0],
            Dir::Dst => &[1],
            Dir::Any => &[0, 1],
        }
    }
}

impl Prim {
    fn eval(&self, p: &Packet) -> bool {
        match *self {
            Prim::Proto(proto) => p.proto == proto,
            Prim::Port { dir, port } => {
                has_ports(p.proto) && dir.sides().iter().any(|&i| p.ports[i] == port)
            }
            Prim::Net { dir, addr, len } => {
                let hit = |&i: &usize| p.addrs[i] & prefix_mask(len) == u32::from(addr);
                dir.sides().iter().any(hit)
            }
        }
    }
}

/// Host-order netmask with `len` leading ones.
fn prefix_mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        1 => Some("icmp"),
        6 => Some("tcp"),
        17 => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    }
}

fn proto_by_name(name: &str) -> Option<u8> {
    [1, 6, 17, 132]
        .into_iter()
        .find(|p| proto_name(*p).is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

// ---------------------------------------------------------------------------------------
// Lexer and parser

const AND: &[&str] = &["and", "&&"];
const OR: &[&str] = &["or", "||"];
const NOT: &[&str] = &["not", "!"];
const OPERATORS: &[&str] = &["and", "&&", "or", "||", "not", "!", "(", ")"];
const QUALIFIED: &str = "'host', 'net', 'port' or an address";

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    pos: usize,
}

impl Token<'_> {
    fn is(&self, set: &[&str]) -> bool {
        set.iter().any(|k| self.text.eq_ignore_ascii_case(k))
    }

    fn is_word(&self) -> bool {
        !self.is(OPERATORS)
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b':' | b'_' | b'-')
}

/// Splits the expression into tokens. Only ASCII is accepted, so byte offsets are columns.
fn lex(expr: &str) -> Result<Vec<Token<'_>>, FilterError> {
    let b = expr.as_bytes();
    let (mut out, mut i) = (Vec::new(), 0);
    while i < b.len() {
        let len = match b[i] {
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'(' | b')' | b'!' => 1,
            b'&' | b'|' if b.get(i + 1) == Some(&b[i]) => 2,
            c if is_word_byte(c) => b[i..].iter().take_while(|c| is_word_byte(**c)).count(),
            _ => {
                let ch = expr[i..].chars().next().unwrap_or('?');
                return Err(syntax(i, format!("unexpected character '{ch}'")));
            }
        };
        out.push(Token {
            text: &expr[i..i + len],
            pos: i,
        });
        i += len;
    }
    Ok(out)
}

/// Error for a token left over after a complete expression.
fn trailing(t: Token<'_>) -> FilterError {
    if t.is(&[")"]) {
        syntax(t.pos, "unexpected ')'")
    } else {
        syntax(t.pos, format!("expected 'and' or 'or' before '{}'", t.text))
    }
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    i: usize,
    /// Position reported for errors at the end of the expression.
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.i).copied()
    }

    fn eat(&mut self, set: &[&str]) -> bool {
        let hit = self.peek().is_some_and(|t| t.is(set));
        self.i += usize::from(hit);
        hit
    }

    /// "expected `what` after <previous token>" at the current position.
    fn expected(&self, what: &str) -> FilterError {
        let after = self.i.checked_sub(1).map_or("", |j| self.toks[j].text);
        let pos = self.peek().map_or(self.end, |t| t.pos);
        syntax(pos, format!("expected {what} after '{after}'"))
    }

    /// Takes the argument word of the previous keyword.
    fn arg(&mut self, what: &str) -> Result<Token<'a>, FilterError> {
        match self.peek() {
            Some(t) if t.is_word() => {
                self.i += 1;
                Ok(t)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn parse_or(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut lhs = self.parse_and(depth)?;
        while self.eat(OR) {
            lhs = Expr::Or(Box::new(lhs), Box::new(self.parse_and(depth)?));
        }
        Ok(lhs)
    }

    fn parse_and(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let mut lhs = self.parse_unary(depth)?;
        while self.eat(AND) {
            lhs = Expr::And(Box::new(lhs), Box::new(self.parse_unary(depth)?));
        }
        Ok(lhs)
    }

    fn parse_unary(&mut self, depth: usize) -> Result<Expr, FilterError> {
        let Some(t) = self.peek() else {
            return Err(self.expected("an expression"));
        };
        if (t.is(NOT) || t.is(&["("])) && depth >= MAX_DEPTH {
            return Err(syntax(t.pos, "expression nested too deeply"));
        }
        if t.is_word() {
            self.i += 1;
            return self.parse_primitive(t).map(Expr::Prim);
        }
        if self.eat(NOT) {
            return Ok(Expr::Not(Box::new(self.parse_unary(depth + 1)?)));
        }
        if self.eat(&["("]) {
            let e = self.parse_or(depth + 1)?;
            return match self.peek() {
                Some(c) if c.is(&[")"]) => {
                    self.i += 1;
                    Ok(e)
                }
                Some(c) => Err(trailing(c)),
                None => Err(syntax(t.pos, "unclosed '('")),
            };
        }
        if self.i > 0 && !t.is(&[")"]) {
            return Err(self.expected("an expression"));
        }
        Err(syntax(t.pos, format!("unexpected '{}'", t.text)))
    }

    /// Parses the primitive starting with `t` (already consumed).
    fn parse_primitive(&mut self, t: Token<'a>) -> Result<Prim, FilterError> {
        let dir = [("src", Dir::Src), ("dst", Dir::Dst)]
            .into_iter()
            .find_map(|(kw, dir)| t.is(&[kw]).then_some(dir))
            .unwrap_or(Dir::Any);
        let q = if dir == Dir::Any {
            t
        } else {
            self.arg(QUALIFIED)?
        };
        if q.is(&["host"]) {
            let addr = parse_addr(self.arg("an address")?, "address")?;
            return Ok(Prim::Net { dir, addr, len: 32 });
        }
        if q.is(&["net"]) {
            return self.parse_net(dir);
        }
        if q.is(&["port"]) {
            let port = parse_number(self.arg("a port number")?, "port", u16::MAX.into())?;
            let port = port as u16;
            return Ok(Prim::Port { dir, port });
        }
        if dir != Dir::Any {
            // tcpdump's `src 10.0.0.1` shorthand for `src host 10.0.0.1`.
            if let Ok(addr) = q.text.parse() {
                return Ok(Prim::Net { dir, addr, len: 32 });
            }
            self.i -= 1;
            return Err(self.expected(QUALIFIED));
        }
        if t.is(&["proto"]) {
            let a = self.arg("a protocol number")?;
            return match proto_by_name(a.text) {
                Some(p) => Ok(Prim::Proto(p)),
                None => parse_number(a, "protocol", u8::MAX.into()).map(|n| Prim::Proto(n as u8)),
            };
        }
        proto_by_name(t.text).map(Prim::Proto).ok_or_else(|| {
            let msg = format!(
                "unknown primitive '{}' (expected host, net, port, src, dst, tcp, udp, icmp, \
                 sctp, proto, not or '(')",
                t.text
            );
            syntax(t.pos, msg)
        })
    }

    /// `A/len`, `A mask M` or a bare `A` (/32). Host bits are masked off.
    fn parse_net(&mut self, dir: Dir) -> Result<Prim, FilterError> {
        let a = self.arg("a network (like 10.0.0.0/8)")?;
        let (addr, len) = if let Some((addr, len)) = a.text.split_once('/') {
            let addr = addr.parse::<Ipv4Addr>().ok();
            let len = len.parse::<u8>().ok().filter(|l| *l <= 32);
            addr.zip(len).ok_or_else(|| invalid("CIDR", a))?
        } else if self.peek().is_some_and(|t| t.is(&["mask"])) {
            self.i += 1;
            let m = self.arg("a netmask")?;
            let mask = u32::from(parse_addr(m, "netmask")?);
            if mask.leading_ones() + mask.trailing_zeros() != 32 {
                return Err(invalid("netmask", m));
            }
            (parse_addr(a, "CIDR")?, mask.leading_ones() as u8)
        } else {
            (parse_addr(a, "CIDR")?, 32)
        };
        let addr = Ipv4Addr::from(u32::from(addr) & prefix_mask(len));
        Ok(Prim::Net { dir, addr, len })
    }
}

fn invalid(what: &str, t: Token<'_>) -> FilterError {
    syntax(t.pos, format!("invalid {what} '{}'", t.text))
}

fn parse_addr(t: Token<'_>, what: &str) -> Result<Ipv4Addr, FilterError> {
    t.text.parse().map_err(|_| invalid(what, t))
}

/// A decimal number up to `max`; all-digit text beyond it is "out of range".
fn parse_number(t: Token<'_>, what: &str, max: u32) -> Result<u32, FilterError> {
    if !t.text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(what, t));
    }
    match t.text.parse::<u32>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(syntax(t.pos, format!("{what} {} out of range", t.text))),
    }
}

// ---------------------------------------------------------------------------------------
// Compilation: negation normal form and DNF

/// A possibly negated primitive: one kernel term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Lit {
    prim: Prim,
    neg: bool,
}

/// A conjunction of literals; the set removes duplicates and fixes the order.
type Clause = BTreeSet<Lit>;

impl Lit {
    fn term(&self) -> FilterTerm {
        let negate = u8::from(self.neg);
        let pick = |dir, src, dst, any| match dir {
            Dir::Src => src,
            Dir::Dst => dst,
            Dir::Any => any,
        };
        let t = FilterTerm {
            negate,
            ..FilterTerm::default()
        };
        match self.prim {
            Prim::Proto(proto) => FilterTerm {
                kind: TERM_PROTO,
                proto,
                ..t
            },
            Prim::Port { dir, port } => {
                let kind = pick(dir, TERM_SRC_PORT, TERM_DST_PORT, TERM_ANY_PORT);
                FilterTerm { kind, port, ..t }
            }
            Prim::Net { dir, addr, len } => FilterTerm {
                kind: pick(dir, TERM_SRC_NET, TERM_DST_NET, TERM_ANY_NET),
                addr: u32::from_ne_bytes(addr.octets()),
                mask: u32::from_ne_bytes(prefix_mask(len).to_be_bytes()),
                ..t
            },
        }
    }
}

/// DNF of `e` (negated when `neg`). Negations are pushed down to the primitives on the way
/// (De Morgan), so the recursion computes the NNF and its DNF expansion in one pass.
fn dnf(e: &Expr, neg: bool) -> Result<Vec<Clause>, FilterError> {
    match e {
        Expr::Prim(prim) => Ok(vec![Clause::from([Lit { prim: *prim, neg }])]),
        Expr::Not(inner) => dnf(inner, !neg),
        // a and b; not (a or b) = not a and not b
        Expr::And(a, b) if !neg => conjoin(&dnf(a, false)?, &dnf(b, false)?),
        Expr::Or(a, b) if neg => conjoin(&dnf(a, true)?, &dnf(b, true)?),
        // a or b; not (a and b) = not a or not b
        Expr::And(a, b) | Expr::Or(a, b) => {
            let mut clauses = dnf(a, neg)?;
            clauses.extend(dnf(b, neg)?);
            simplify(clauses)
        }
    }
}

/// `(a1 or a2) and (b1 or b2)` = `a1 and b1 or a1 and b2 or a2 and b1 or a2 and b2`.
fn conjoin(a: &[Clause], b: &[Clause]) -> Result<Vec<Clause>, FilterError> {
    let needed = a.len().saturating_mul(b.len());
    if needed > EXPANSION_LIMIT {
        return Err(FilterError::TooManyClauses(needed));
    }
    let products = a.iter().flat_map(|x| b.iter().map(move |y| x | y));
    simplify(products.filter_map(reduce).collect())
}

/// Drops redundant literals of a clause; `None` when the clause can never match: it holds a
/// term and its negation, two different protocols, or a port test with a port-less protocol.
fn reduce(mut c: Clause) -> Option<Clause> {
    if c.iter().any(|l| c.contains(&Lit { neg: !l.neg, ..*l })) {
        return None;
    }
    let mut protos = c.iter().filter_map(|l| match l.prim {
        Prim::Proto(p) if !l.neg => Some(p),
        _ => None,
    });
    if let Some(p) = protos.next() {
        if protos.next().is_some() {
            return None;
        }
        let port_test = c
            .iter()
            .any(|l| !l.neg && matches!(l.prim, Prim::Port { .. }));
        if port_test && !has_ports(p) {
            return None;
        }
        // `tcp and not udp` is `tcp`.
        c.retain(|l| !l.neg || !matches!(l.prim, Prim::Proto(q) if q != p));
    }
    Some(c)
}

/// Removes duplicate clauses and clauses absorbed by a smaller one (`a or a and b` = `a`).
fn simplify(clauses: Vec<Clause>) -> Result<Vec<Clause>, FilterError> {
    let mut out: Vec<Clause> = Vec::with_capacity(clauses.len());
    for c in clauses {
        if !out.iter().any(|k| k.is_subset(&c)) {
            out.retain(|k| !c.is_subset(k));
            out.push(c);
        }
    }
    if out.len() > EXPANSION_LIMIT {
        return Err(FilterError::TooManyClauses(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
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
        for e in
            "tcp and not tcp;tcp and udp;icmp and port 80;not (port 1 or not port 1)".split(';')
        {
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
}
