//! Traffic through the lab's NAT: a DNS query to the DNS Service, a connection to a web
//! Service's cluster IP or node port, or to the outside machine, from a pod or from the
//! outside machine, answered by the lab's servers.
//!
//! Design note: each exchange runs on a thread inside the sender's namespace and is bounded
//! by its timeout; what the servers answer says who answered and as whom the client arrived
//! (`n2p1 10.10.0.1:41234`: the web pod on node2 saw node1's address, so the client was
//! masqueraded). [`run`] is what a fault's probe does when its destination is one of these.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Result};

use super::dns::{self, DnsError};
use crate::netns::in_netns;
use crate::topology::Topology;

/// The namespace a probe is sent from: a pod's, or the outside machine's (`outside`).
pub fn sender_netns(t: &Topology, from: &str) -> Result<String> {
    if let Some(p) = t.pod(from) {
        return Ok(p.netns.clone());
    }
    match (&t.services, from) {
        (Some(s), super::OUTSIDE) => Ok(s.outside.netns.clone()),
        (None, super::OUTSIDE) => bail!(
            "lab `{}` has no outside machine (it is built with `lab up --services`)",
            t.prefix
        ),
        _ => bail!("no pod {from} in lab `{}`", t.prefix),
    }
}

/// The address a probe is sent from.
pub fn sender_ip(t: &Topology, from: &str) -> Result<Ipv4Addr> {
    if let Some(p) = t.pod(from) {
        return Ok(p.ip);
    }
    match &t.services {
        Some(s) if from == super::OUTSIDE => Ok(s.outside.ip),
        _ => bail!("no pod {from} in lab `{}`", t.prefix),
    }
}

/// Connect to `addr` from `netns` and read the server's line. `Ok(None)`: no answer
/// (timeout, refused: a REJECT, unreachable).
pub fn web_get(netns: &str, addr: SocketAddr, timeout: Duration) -> Result<Option<String>> {
    let got = in_netns(netns, move || -> std::io::Result<String> {
        let c = TcpStream::connect_timeout(&addr, timeout)?;
        c.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        c.take(256).read_to_string(&mut line)?;
        Ok(line.trim().to_owned())
    })?;
    match got {
        Ok(line) if !line.is_empty() => Ok(Some(line)),
        Ok(_) => Ok(None),
        Err(e) if unanswered(&e) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("connect to {addr} from `{netns}`"))),
    }
}

/// Ask the DNS server at `addr` for `name` from `netns`. `Ok(None)`: no answer at all.
pub fn dns_query(
    netns: &str,
    addr: SocketAddr,
    name: &str,
    tcp: bool,
    timeout: Duration,
) -> Result<Option<Result<Ipv4Addr, DnsError>>> {
    let name = name.to_owned();
    match in_netns(netns, move || dns::resolve(addr, &name, tcp, timeout))? {
        Ok(answer) => Ok(Some(answer)),
        Err(e) if unanswered(&e) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("DNS query to {addr} from `{netns}`"))),
    }
}

fn unanswered(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        TimedOut
            | WouldBlock
            | ConnectionRefused
            | ConnectionReset
            | HostUnreachable
            | NetworkUnreachable
            | UnexpectedEof
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::ECONNREFUSED)
    )
}

/// Run a TCP or UDP probe whose destination is a Service (cluster IP and port, or a node
/// address and node port) or the outside machine: `None` when it is neither, else whether it
/// was answered (a DNS query answered with the right address, a web line read).
pub fn run(
    t: &Topology,
    from_netns: &str,
    to: Ipv4Addr,
    proto: &str,
    port: Option<u16>,
    timeout: Duration,
) -> Result<Option<bool>> {
    let (Some(s), Some(port)) = (&t.services, port) else {
        return Ok(None);
    };
    let addr = SocketAddr::from((to, port));
    let node_ips: Vec<Ipv4Addr> = t.nodes.iter().map(|n| n.ip).collect();
    let outside = to == s.outside.ip && port == s.outside.port;
    let Some((svc, _)) = s.at(to, port, &node_ips) else {
        if outside && proto == "tcp" {
            return Ok(Some(web_get(from_netns, addr, timeout)?.is_some()));
        }
        return Ok(None);
    };
    if svc.id() == s.dns.service {
        let answer = dns_query(from_netns, addr, &s.dns.name, proto == "tcp", timeout)?;
        return Ok(Some(answer == Some(Ok(s.dns.answer))));
    }
    match proto {
        "tcp" => Ok(Some(web_get(from_netns, addr, timeout)?.is_some())),
        other => bail!("{} serves TCP; no {other} probe for it", svc.id()),
    }
}
