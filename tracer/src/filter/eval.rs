//! A direct evaluator of the filter's AST: the reference the compiled (kernel) form is tested
//! against, so the two can never disagree unnoticed.

use std::net::Ipv4Addr;

use tracer_common::filter::has_ports;

use super::{prefix_mask, Dir, Expr, Filter, Prim};

impl Filter {
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

/// Packet fields for the AST evaluator: (source, destination), addresses in host order.
struct Packet {
    addrs: [u32; 2],
    ports: [u16; 2],
    proto: u8,
}

impl Expr {
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
