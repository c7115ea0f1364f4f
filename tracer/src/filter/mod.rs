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

mod endpoint;
#[cfg(test)]
mod eval;

pub use endpoint::{may_involve, named_addresses};
#[cfg(test)]
mod tests;
