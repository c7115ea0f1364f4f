//! One trace as one JSON line, written by hand.
//!
//! Design note: with every packet of a busy flow traced, rendering is most of the tracer's
//! user-space cost (the `serde` view structs and `json!` segments cost ~3 µs per six-hop trace,
//! mostly escaping every key and building maps). This writer appends to one buffer per trace:
//! keys and punctuation are byte literals, numbers go through `itoa`, addresses are written
//! octet by octet, and only strings that come from outside (node and interface names, drop
//! reasons, explanations) are escaped, with a fast path for the usual plain ASCII. The field
//! names and types are the JSON contract described in README.md; `render::tests` parses the
//! output with `serde_json` and checks every field.

use std::io::{self, Write};
use std::net::Ipv4Addr;

use super::proto_json;
use crate::latency::{Measurements, SegmentClock};
use crate::model::{DropPoint, Encap, NatStep, ObjectName, PacketId, RouteLookup, Trace, TraceHop};

/// Writes `t` as one JSON object followed by a newline, with its segments as measured (`m`),
/// built in `buf` (cleared first; a caller that writes many traces passes the same buffer each
/// time, so that a line costs no allocation).
pub fn write(w: &mut impl Write, buf: &mut Vec<u8>, t: &Trace, m: &Measurements) -> io::Result<()> {
    buf.clear();
    let mut o = Out(std::mem::take(buf));
    write_line(&mut o, t, m);
    let res = w.write_all(&o.0);
    *buf = o.0;
    res
}

/// The line of `t`, newline included, appended to `o`.
fn write_line(o: &mut Out, t: &Trace, m: &Measurements) {
    let first = t.first_ts_ns();
    o.raw(b"{\"packet\":");
    o.packet(&t.packet);
    o.raw(b",\"hops\":[");
    for (i, h) in t.hops.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        o.hop(h, first);
    }
    o.raw(b"],\"outcome\":\"");
    o.raw(t.outcome.as_str().as_bytes());
    o.raw(b"\",\"tracer_loss\":");
    o.raw(if t.tracer_loss { b"true" } else { b"false" });
    if !t.nat.is_empty() {
        o.raw(b",\"nat\":[");
        for (i, n) in t.nat.iter().enumerate() {
            if i > 0 {
                o.raw(b",");
            }
            o.nat(n, first);
        }
        o.raw(b"]");
    }
    if !t.names.is_empty() {
        o.names(&t.names);
    }
    o.raw(b",\"drop\":");
    match &t.drop {
        Some(d) => o.drop_point(d, first),
        None => o.raw(b"null"),
    }
    o.raw(b",\"verdict\":");
    match &t.verdict {
        Some(v) => {
            o.raw(b"{\"name\":");
            o.str(v.name);
            o.raw(b",\"explanation\":");
            o.str(&v.explanation);
            o.raw(b",\"evidence\":[");
            for (i, e) in v.evidence.iter().enumerate() {
                if i > 0 {
                    o.raw(b",");
                }
                o.str(e);
            }
            o.raw(b"]}");
        }
        None => o.raw(b"null"),
    }
    o.raw(b",\"routes\":[");
    for (i, r) in t.routes.iter().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        o.route(t, r);
    }
    o.raw(b"],\"segments\":[");
    for (i, s) in m.segments().enumerate() {
        if i > 0 {
            o.raw(b",");
        }
        o.raw(b"{\"name\":\"");
        o.raw(s.name.as_str().as_bytes());
        o.raw(b"\",\"ns\":");
        match s.clock {
            // Between two machines, a negative value only says the estimate is off within its
            // bound: not a latency.
            SegmentClock::Estimated { .. } if s.ns < 0 => o.raw(b"null"),
            _ => o.num(s.ns),
        }
        o.raw(b",\"from\":");
        o.num(s.from as u64);
        o.raw(b",\"to\":");
        o.num(s.to as u64);
        o.raw(b",\"cross_node\":");
        o.raw(if s.cross_node { b"true" } else { b"false" });
        if let SegmentClock::Estimated { offset_ns, err_ns } = s.clock {
            o.raw(b",\"clock\":\"estimated\",\"offset_ns\":");
            o.num(offset_ns);
            o.raw(b",\"offset_err_ns\":");
            o.num(err_ns);
        }
        o.raw(b"}");
    }
    o.raw(b"]}\n");
}

/// One hop of `t` (or, with `hop` `None`, its drop) as one JSON object: `{"trace","packet",
/// "hop"|"drop","outcome","verdict"}`, with the hop and drop objects of a trace line
/// (`tracer pcap`'s custom option per packet; `trace` numbers the traces of the run).
pub(crate) fn hop_object(t: &Trace, trace: u64, hop: Option<&TraceHop>) -> String {
    let mut o = Out(Vec::with_capacity(1024));
    let first = t.first_ts_ns();
    o.raw(b"{\"trace\":");
    o.num(trace);
    o.raw(b",\"packet\":");
    o.packet(&t.packet);
    match (hop, &t.drop) {
        (Some(h), _) => {
            o.raw(b",\"hop\":");
            o.hop(h, first);
        }
        (None, Some(d)) => {
            o.raw(b",\"drop\":");
            o.drop_point(d, first);
        }
        (None, None) => {}
    }
    o.raw(b",\"outcome\":\"");
    o.raw(t.outcome.as_str().as_bytes());
    o.raw(b"\",\"verdict\":");
    match &t.verdict {
        Some(v) => o.str(v.name),
        None => o.raw(b"null"),
    }
    o.raw(b"}");
    String::from_utf8(o.0).unwrap_or_default()
}

/// The line being built.
struct Out(Vec<u8>);

impl Out {
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    fn num(&mut self, n: impl itoa::Integer) {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    /// A quoted dotted quad.
    fn ip(&mut self, a: Ipv4Addr) {
        self.0.push(b'"');
        self.ip_bare(a);
        self.0.push(b'"');
    }

    /// A dotted quad, unquoted (inside a string being written). A line has some eight: the
    /// digits are built in a fixed-size array and appended whole, then the line is cut to
    /// their length (one fixed-size copy, not four calls to `memcpy`).
    fn ip_bare(&mut self, a: Ipv4Addr) {
        let mut quad = [0u8; 16];
        let mut n = 0;
        for (i, o) in a.octets().into_iter().enumerate() {
            if i > 0 {
                quad[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                quad[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                quad[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            quad[n] = b'0' + o % 10;
            n += 1;
        }
        let at = self.0.len();
        self.0.extend_from_slice(&quad);
        self.0.truncate(at + n);
    }

    /// A JSON string, escaped (RFC 8259: quote, backslash and control characters).
    fn str(&mut self, s: &str) {
        self.0.push(b'"');
        let bytes = s.as_bytes();
        if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
            self.0.extend_from_slice(bytes);
        } else {
            for c in s.chars() {
                match c {
                    '"' => self.raw(b"\\\""),
                    '\\' => self.raw(b"\\\\"),
                    '\n' => self.raw(b"\\n"),
                    '\r' => self.raw(b"\\r"),
                    '\t' => self.raw(b"\\t"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(self.0, "\\u{:04x}", c as u32);
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        self.raw(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        self.0.push(b'"');
    }

    fn packet(&mut self, p: &PacketId) {
        self.raw(b"{\"src\":");
        self.ip(p.src);
        self.raw(b",\"dst\":");
        self.ip(p.dst);
        self.raw(b",\"proto\":");
        let proto = proto_json(p.proto);
        self.str(&proto);
        self.raw(b",\"sport\":");
        self.num(p.sport);
        self.raw(b",\"dport\":");
        self.num(p.dport);
        self.raw(b",\"ip_id\":");
        self.num(p.ip_id);
        self.raw(b",\"tcp_seq\":");
        self.num(p.tcp_seq);
        self.raw(b",\"icmp_id\":");
        self.num(p.icmp_id);
        self.raw(b",\"icmp_seq\":");
        self.num(p.icmp_seq);
        // The flow's stable identifier, `<src>:<sport>><dst>:<dport>/<proto>`, as `flow_id`.
        let f = p.flow();
        self.raw(b",\"flow\":\"");
        self.ip_bare(f.src);
        self.raw(b":");
        self.num(f.sport);
        self.raw(b">");
        self.ip_bare(f.dst);
        self.raw(b":");
        self.num(f.dport);
        self.raw(b"/");
        self.raw(proto.as_bytes());
        self.raw(b"\"}");
    }

    fn hop(&mut self, h: &TraceHop, first: u64) {
        self.raw(b"{\"node\":");
        self.str(&h.node);
        self.raw(b",\"netns\":");
        self.num(h.netns);
        self.raw(b",\"ifname\":");
        self.str(&h.ifname);
        self.raw(b",\"ifindex\":");
        self.num(h.ifindex);
        self.raw(b",\"kind\":");
        match h.kind {
            Some(k) => {
                self.raw(b"\"");
                self.raw(k.as_str().as_bytes());
                self.raw(b"\"");
            }
            None => self.raw(b"null"),
        }
        self.raw(b",\"dir\":\"");
        self.raw(h.dir.as_str().as_bytes());
        self.raw(b"\",\"ts_ns\":");
        self.num(h.ts_ns);
        self.raw(b",\"delta_ns\":");
        self.num(h.ts_ns.saturating_sub(first));
        self.raw(b",\"len\":");
        self.num(h.len);
        self.raw(b",\"encap\":");
        self.encap(h.encap.as_ref());
        if h.translated {
            self.raw(b",\"translated\":true");
        }
        self.raw(b"}");
    }

    fn nat(&mut self, n: &NatStep, first: u64) {
        self.raw(b"{\"node\":");
        self.str(&n.node);
        self.raw(b",\"ifname\":");
        self.str(&n.ifname);
        self.raw(b",\"kind\":");
        self.str(n.kind);
        self.raw(b",\"ts_ns\":");
        self.num(n.ts_ns);
        self.raw(b",\"delta_ns\":");
        self.num(n.ts_ns.saturating_sub(first));
        for (name, (src, sport, dst, dport)) in [("from", n.from), ("to", n.to)] {
            self.raw(b",\"");
            self.raw(name.as_bytes());
            self.raw(b"\":{\"src\":");
            self.ip(src);
            self.raw(b",\"sport\":");
            self.num(sport);
            self.raw(b",\"dst\":");
            self.ip(dst);
            self.raw(b",\"dport\":");
            self.num(dport);
            self.raw(b"}");
        }
        self.raw(b"}");
    }

    /// `,"names":{"10.244.1.5":{"kind":"pod","namespace":..,"name":..,"node":..},..}`.
    fn names(&mut self, names: &[(Ipv4Addr, std::sync::Arc<ObjectName>)]) {
        self.raw(b",\"names\":{");
        for (i, (a, n)) in names.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            self.ip(*a);
            self.raw(b":{\"kind\":\"");
            self.raw(n.kind.as_str().as_bytes());
            self.raw(b"\",\"namespace\":");
            self.str(&n.namespace);
            self.raw(b",\"name\":");
            self.str(&n.name);
            self.raw(b",\"node\":");
            match &n.node {
                Some(node) => self.str(node),
                None => self.raw(b"null"),
            }
            self.raw(b"}");
        }
        self.raw(b"}");
    }

    fn encap(&mut self, e: Option<&Encap>) {
        let Some(e) = e else {
            return self.raw(b"null");
        };
        self.raw(b"{\"type\":\"");
        self.raw(e.kind.as_str().as_bytes());
        self.raw(b"\",\"vni\":");
        self.num(e.vni);
        self.raw(b",\"outer_src\":");
        self.ip(e.outer_src);
        self.raw(b",\"outer_dst\":");
        self.ip(e.outer_dst);
        self.raw(b",\"outer_sport\":");
        self.num(e.outer_sport);
        self.raw(b",\"outer_dport\":");
        self.num(e.outer_dport);
        self.raw(b"}");
    }

    fn drop_point(&mut self, d: &DropPoint, first: u64) {
        self.raw(b"{\"node\":");
        self.str(&d.node);
        self.raw(b",\"netns\":");
        self.num(d.netns);
        self.raw(b",\"ifname\":");
        self.str(&d.ifname);
        self.raw(b",\"ifindex\":");
        self.num(d.ifindex);
        self.raw(b",\"function\":");
        self.str(&d.function);
        self.raw(b",\"reason\":");
        self.str(&d.reason);
        self.raw(b",\"reason_code\":");
        self.num(d.reason_code);
        let _ = write!(self.0, ",\"location\":\"{:#x}\"", d.location);
        self.raw(b",\"ts_ns\":");
        self.num(d.ts_ns);
        self.raw(b",\"delta_ns\":");
        self.num(d.ts_ns.saturating_sub(first));
        self.raw(b",\"len\":");
        self.num(d.len);
        self.raw(b",\"encap\":");
        self.encap(d.encap.as_ref());
        self.raw(b"}");
    }

    fn route(&mut self, t: &Trace, r: &RouteLookup) {
        self.raw(b"{\"ts_ns\":");
        self.num(r.ts_ns);
        self.raw(b",\"netns\":");
        self.num(r.netns);
        self.raw(b",\"node\":");
        match super::route_node(t, r) {
            Some(node) => self.str(node),
            None => self.raw(b"null"),
        }
        self.raw(b",\"iif\":");
        self.num(r.iif);
        self.raw(b",\"iif_name\":");
        match super::route_iif(t, r) {
            Some(name) => self.str(name),
            None => self.raw(b"null"),
        }
        self.raw(b",\"table\":");
        self.num(r.table);
        self.raw(b",\"err\":");
        self.num(r.err);
        self.raw(b",\"src\":");
        self.ip(r.src);
        self.raw(b",\"dst\":");
        self.ip(r.dst);
        self.raw(b",\"dev\":");
        self.str(&r.dev);
        self.raw(b",\"gw\":");
        match r.gw {
            Some(gw) => self.ip(gw),
            None => self.raw(b"null"),
        }
        self.raw(b"}");
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::Out;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 249, 250, 255];
        for a in octets {
            for b in octets {
                let ip = Ipv4Addr::new(a, b, 255 - a, 7);
                let mut o = Out(b"x".to_vec());
                o.ip_bare(ip);
                assert_eq!(o.0, format!("x{ip}").into_bytes());
            }
        }
    }
}
