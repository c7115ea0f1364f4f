//! The little of DNS the lab needs: a query for one A record, the responder's answer, and a
//! client over UDP and TCP (RFC 1035: 12-byte header, one question, answers with a name
//! pointer; over TCP every message is preceded by its 2-byte length).
//!
//! Design note: the responder is authoritative for one name (`DNS_NAME`) and answers it with
//! one A record; any other name gets NXDOMAIN, anything that is not a standard query is
//! ignored. The client checks the answer (id, response bit, rcode, the A record), so a probe
//! that gets an answer has really been answered by the responder through the Service.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use thiserror::Error;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
const TTL: u32 = 30;

/// What is wrong with a DNS message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("message too short")]
    Short,
    #[error("bad name in message")]
    BadName,
    #[error("name label longer than 63 bytes: {0}")]
    LongLabel(String),
    #[error("answer for another query (id {got:#06x}, expected {want:#06x})")]
    OtherId { got: u16, want: u16 },
    #[error("not a response")]
    NotResponse,
    #[error("server answered rcode {0}")]
    Rcode(u8),
    #[error("no A record in the answer")]
    NoAddress,
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), DnsError> {
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|&l| l > 0 && l <= 63)
            .ok_or_else(|| DnsError::LongLabel(label.to_owned()))?;
        out.push(len);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(())
}

/// A standard query (recursion desired) for the A record of `name`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    put_name(&mut q, name)?;
    q.extend_from_slice(&TYPE_A.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

fn u16_at(m: &[u8], at: usize) -> Result<u16, DnsError> {
    m.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Short)
}

/// Reads a (possibly compressed) name at `at`; returns it lowercased and the offset after it.
fn read_name(m: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *m.get(at).ok_or(DnsError::Short)?;
        match len {
            0 => {
                let name = labels.join(".");
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let ptr = usize::from(u16_at(m, at)? & 0x3fff);
                end.get_or_insert(at + 2);
                at = ptr;
            }
            l if l <= 63 => {
                let label = m
                    .get(at + 1..at + 1 + usize::from(l))
                    .ok_or(DnsError::Short)?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + usize::from(l);
            }
            _ => return Err(DnsError::BadName),
        }
    }
    Err(DnsError::BadName)
}

/// The responder's answer to `q`: the A record `ip` for `name`, NXDOMAIN for another name
/// (authoritative either way); `None` for what is not a standard query with one question.
pub fn answer(q: &[u8], name: &str, ip: Ipv4Addr) -> Option<Vec<u8>> {
    let flags = u16_at(q, 2).ok()?;
    if flags & 0x8000 != 0 || flags & 0x7800 != 0 || u16_at(q, 4).ok()? != 1 {
        return None;
    }
    let (qname, after) = read_name(q, 12).ok()?;
    let qtype = u16_at(q, after).ok()?;
    let question = &q[12..after + 4];
    let found = qname == name.trim_end_matches('.').to_ascii_lowercase();
    let with_a = found && (qtype == TYPE_A || qtype == 255);
    // QR, AA, the query's RD, RA; NXDOMAIN for another name.
    let rcode = if found { 0 } else { 3 };
    let flags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode;
    let mut r = Vec::with_capacity(q.len() + 16);
    r.extend_from_slice(&q[0..2]);
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, u8::from(with_a), 0, 0, 0, 0]);
    r.extend_from_slice(question);
    if with_a {
        r.extend_from_slice(&0xc00cu16.to_be_bytes());
        r.extend_from_slice(&TYPE_A.to_be_bytes());
        r.extend_from_slice(&CLASS_IN.to_be_bytes());
        r.extend_from_slice(&TTL.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}

/// The first A record of a response to query `id`.
pub fn parse_answer(r: &[u8], id: u16) -> Result<Ipv4Addr, DnsError> {
    let got = u16_at(r, 0)?;
    if got != id {
        return Err(DnsError::OtherId { got, want: id });
    }
    let flags = u16_at(r, 2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::NotResponse);
    }
    let rcode = (flags & 0x000f) as u8;
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let (qd, an) = (u16_at(r, 4)?, u16_at(r, 6)?);
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(r, at)?.1 + 4;
    }
    for _ in 0..an {
        at = read_name(r, at)?.1;
        let (rtype, len) = (u16_at(r, at)?, usize::from(u16_at(r, at + 8)?));
        let data = r.get(at + 10..at + 10 + len).ok_or(DnsError::Short)?;
        if rtype == TYPE_A && len == 4 {
            return Ok(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Err(DnsError::NoAddress)
}

/// Ask `server` for the A record of `name` over UDP or TCP, from the calling thread's network
/// namespace. `Ok(Err(_))`: the server answered, but not with an address; `Err`: no answer
/// (timeout, refused, unreachable) or the socket failed.
pub fn resolve(
    server: SocketAddr,
    name: &str,
    tcp: bool,
    timeout: Duration,
) -> io::Result<Result<Ipv4Addr, DnsError>> {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let q = query(id, name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let resp = if tcp {
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&q);
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut r)?;
        r
    } else {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.set_read_timeout(Some(timeout))?;
        s.connect(server)?;
        s.send(&q)?;
        let mut buf = [0u8; 512];
        let n = s.recv(&mut buf)?;
        buf[..n].to_vec()
    };
    Ok(parse_answer(&resp, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "web.default.svc.cluster.local";

    #[test]
    fn query_and_answer_round_trip() {
        let ip = Ipv4Addr::new(10, 96, 0, 20);
        let q = query(0x1234, NAME).unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(q.len(), 12 + NAME.len() + 2 + 4);
        let r = answer(&q, NAME, ip).unwrap();
        assert_eq!(parse_answer(&r, 0x1234), Ok(ip));
        assert_eq!(
            parse_answer(&r, 0x1235),
            Err(DnsError::OtherId {
                got: 0x1234,
                want: 0x1235
            })
        );
        // Case-insensitive, trailing dot.
        let q = query(7, "WEB.default.svc.cluster.local.").unwrap();
        assert_eq!(parse_answer(&answer(&q, NAME, ip).unwrap(), 7), Ok(ip));
    }

    #[test]
    fn other_names_and_garbage() {
        let ip = Ipv4Addr::new(10, 96, 0, 20);
        let q = query(1, "db.default.svc.cluster.local").unwrap();
        let r = answer(&q, NAME, ip).unwrap();
        assert_eq!(parse_answer(&r, 1), Err(DnsError::Rcode(3)));
        assert_eq!(answer(b"tracer diagnose probe", NAME, ip), None);
        assert_eq!(answer(&[0; 5], NAME, ip), None);
        // A response is not answered.
        let mut resp = answer(&query(2, NAME).unwrap(), NAME, ip).unwrap();
        assert_eq!(answer(&resp, NAME, ip), None);
        resp.truncate(20);
        assert!(parse_answer(&resp, 2).is_err());
        assert!(query(1, &"x".repeat(64)).is_err());
        // A pointer loop is refused, not followed forever.
        let mut l = query(3, NAME).unwrap();
        l[12] = 0xc0;
        l[13] = 12;
        assert_eq!(answer(&l, NAME, ip), None);
    }
}
