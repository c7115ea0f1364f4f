//! `tracer diagnose`: send a few probe packets from inside the source pod's network namespace to
//! one address, trace them on the nodes, and print one verdict.
//!
//! It only ever sends from the namespace the user names (`--from-netns`) and only to the address
//! the user names (`--to`): ICMP echo requests (raw socket), and a TCP connect or a UDP datagram
//! when `--port` is given. The probes start once every program is attached.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::{
    capture::CaptureArgs,
    discover::local_addrs,
    model::{Outcome, Trace},
    netns::Netns,
    pipeline::PrintArgs,
    render::Output,
    trace::{run_session, TraceArgs},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProbeProto {
    Icmp,
    Tcp,
    Udp,
}

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    /// The source pod's address (the probes' source; checked against the namespace).
    #[arg(long, value_name = "POD_IP")]
    pub from: Ipv4Addr,
    /// The source pod's network namespace (name in /run/netns or a path): probes are sent from
    /// inside it, and from nowhere else.
    #[arg(long, value_name = "NAME|PATH")]
    pub from_netns: String,
    /// The destination address: the only address probes are sent to.
    #[arg(long, value_name = "IP")]
    pub to: Ipv4Addr,
    /// Probe protocol; tcp and udp need --port (to port 53 the UDP probe is a DNS query). ICMP
    /// echoes are always sent too; the verdict is about the protocol asked for.
    #[arg(long, value_enum, default_value = "icmp")]
    pub proto: ProbeProto,
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Number of ICMP echo requests.
    #[arg(long, default_value_t = 3)]
    pub probes: u16,
    /// ICMP payload size in bytes (with DF set), e.g. to test the MTU.
    #[arg(long, default_value_t = 56)]
    pub size: usize,
    /// Node network namespaces to trace (as for `trace --netns`); without it, the current one.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub names: crate::k8s::NamesArgs,
}

/// What `diagnose` concluded.
#[derive(Debug, Serialize)]
struct Diagnosis {
    from: Ipv4Addr,
    to: Ipv4Addr,
    probes: usize,
    delivered: usize,
    dropped: usize,
    lost: usize,
    /// The answers (to -> from): a connection fails when they die too.
    replies: Counts,
    /// Which direction failed: `request`, `reply`, or `none`.
    failed: &'static str,
    /// Where (`node ifname` of the drop, or of the last hop of a lost packet).
    failed_at: Option<String>,
    verdict: Option<VerdictView>,
}

#[derive(Debug, Default, Serialize)]
struct Counts {
    traced: usize,
    delivered: usize,
    dropped: usize,
    lost: usize,
}

#[derive(Debug, Serialize)]
struct VerdictView {
    name: &'static str,
    explanation: String,
    evidence: Vec<String>,
}

pub fn run(args: DiagnoseArgs) -> Result<()> {
    if args.proto != ProbeProto::Icmp && args.port.is_none() {
        bail!("--proto {:?} needs --port", args.proto);
    }
    let pod = Netns::open(&args.from_netns)?;
    let from = args.from;
    let pod_has_addr = pod.run(move || Ok(local_addrs()?.iter().any(|(_, a)| *a == from)))?;
    if !pod_has_addr {
        bail!(
            "{} is not an address of network namespace {}",
            args.from,
            args.from_netns
        );
    }
    let mut filter = format!("host {} and host {}", args.from, args.to);
    if let Some(port) = args.port {
        filter = format!("{filter} and (icmp or port {port})");
    }
    let mut capture = CaptureArgs::new(args.netns.clone(), Some(filter));
    // Probes take about a second; a neighbour failure is only reported ~3 s later.
    capture.duration = Some(Duration::from_secs(7));
    let trace_args = TraceArgs {
        capture,
        print: PrintArgs {
            count: None,
            output: args.output,
            linger_ms: 300,
        },
        stats: false,
        interval: None,
        kernel_agg: false,
        quiet: false,
        metrics: Default::default(),
        names: args.names.clone(),
    };
    let (to, proto, port, count, size) = (args.to, args.proto, args.port, args.probes, args.size);
    let sender = Box::new(move || {
        if let Err(e) = pod.run(move || send_probes(to, proto, port, count, size)) {
            eprintln!("tracer: sending probes: {e:#}");
        }
    });
    let traces = run_session(trace_args, Some(sender))?;
    let diagnosis = diagnose(&args, &traces);
    match args.output {
        Output::Json => println!("{}", serde_json::json!({ "diagnosis": diagnosis })),
        Output::Text => print_text(&diagnosis),
    }
    Ok(())
}

/// Probe traces (from -> to) and their answers (to -> from): the failing direction, where it
/// fails, and the most frequent verdict there.
fn diagnose(args: &DiagnoseArgs, traces: &[Trace]) -> Diagnosis {
    // The probes of the protocol asked for (ICMP echoes to a Service address are never
    // translated: kube-proxy only has rules for its ports), matched by any of the addresses
    // they had along the path: a probe to a Service address and its answer through DNAT.
    let proto = match args.proto {
        ProbeProto::Icmp => 1,
        ProbeProto::Tcp => 6,
        ProbeProto::Udp => 17,
    };
    let probes: Vec<&Trace> = traces
        .iter()
        .filter(|t| t.packet.proto == proto && carries(t, args.from, args.to))
        .collect();
    let replies: Vec<&Trace> = traces
        .iter()
        .filter(|t| t.packet.proto == proto && carries(t, args.to, args.from))
        .collect();
    let count = |set: &[&Trace], o: Outcome| set.iter().filter(|t| t.outcome == o).count();
    fn failing<'a>(set: &[&'a Trace]) -> Vec<&'a Trace> {
        set.iter()
            .copied()
            .filter(|t| matches!(t.outcome, Outcome::Dropped | Outcome::Lost))
            .collect()
    }
    let (failed, dead) = match (failing(&probes), failing(&replies)) {
        (p, _) if !p.is_empty() => ("request", p),
        (_, r) if !r.is_empty() => ("reply", r),
        _ => ("none", Vec::new()),
    };
    // The most frequent verdict among the failing direction's packets.
    let mut verdicts: Vec<(&'static str, usize, &Trace)> = Vec::new();
    for t in &dead {
        if let Some(v) = &t.verdict {
            match verdicts.iter_mut().find(|(n, _, _)| *n == v.name) {
                Some(e) => e.1 += 1,
                None => verdicts.push((v.name, 1, t)),
            }
        }
    }
    verdicts.sort_by_key(|v| std::cmp::Reverse(v.1));
    let chosen = verdicts.first().map(|v| v.2).or(dead.first().copied());
    let failed_at = chosen.map(|t| match (&t.drop, t.hops.last()) {
        (Some(d), _) => format!("{} {}", d.node, d.ifname),
        (None, Some(h)) => format!("{} {}", h.node, h.ifname),
        (None, None) => String::new(),
    });
    Diagnosis {
        from: args.from,
        to: args.to,
        probes: probes.len(),
        delivered: count(&probes, Outcome::Delivered),
        dropped: count(&probes, Outcome::Dropped),
        lost: count(&probes, Outcome::Lost),
        replies: Counts {
            traced: replies.len(),
            delivered: count(&replies, Outcome::Delivered),
            dropped: count(&replies, Outcome::Dropped),
            lost: count(&replies, Outcome::Lost),
        },
        failed,
        failed_at,
        verdict: chosen
            .and_then(|t| t.verdict.as_ref())
            .map(|v| VerdictView {
                name: v.name,
                explanation: v.explanation.clone(),
                evidence: v.evidence.clone(),
            }),
    }
}

/// Whether `t` is a packet from `src` to `dst` under any of the addresses it had: as it was
/// first seen, or before or after one of its NAT steps.
fn carries(t: &Trace, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
    (t.packet.src == src && t.packet.dst == dst)
        || t.nat
            .iter()
            .any(|n| (n.from.0 == src && n.from.2 == dst) || (n.to.0 == src && n.to.2 == dst))
}

fn print_text(d: &Diagnosis) {
    println!(
        "diagnosis {} -> {}: {} probe packets traced: {} delivered, {} dropped, {} lost",
        d.from, d.to, d.probes, d.delivered, d.dropped, d.lost
    );
    let r = &d.replies;
    println!(
        "replies {} -> {}: {} traced: {} delivered, {} dropped, {} lost",
        d.to, d.from, r.traced, r.delivered, r.dropped, r.lost
    );
    let at = d.failed_at.as_deref().unwrap_or("?");
    match d.failed {
        "request" => println!("failed: the request ({} -> {}), at {at}", d.from, d.to),
        "reply" => println!(
            "failed: the REPLY ({} -> {}), at {at}: the request got through",
            d.to, d.from
        ),
        _ => {}
    }
    match &d.verdict {
        Some(v) => {
            println!("verdict: {}\n  {}", v.name, v.explanation);
            for e in &v.evidence {
                println!("  evidence: {e}");
            }
        }
        None if d.probes > 0 && d.delivered == d.probes && d.failed == "none" => {
            println!("verdict: none: every probe was delivered")
        }
        None if d.failed != "none" => {
            println!("verdict: none: the failing packets have no verdict")
        }
        None => {
            println!("verdict: none: the probes were not seen on the traced nodes (wrong --netns?)")
        }
    }
}

/// Runs inside the pod's namespace.
fn send_probes(
    to: Ipv4Addr,
    proto: ProbeProto,
    port: Option<u16>,
    count: u16,
    size: usize,
) -> Result<()> {
    // SAFETY: plain socket(2), owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if fd < 0 {
        bail!("raw ICMP socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned only here.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let df: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: setsockopt with a valid int option value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&df as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let id = (std::process::id() & 0xffff) as u16;
    for seq in 1..=count {
        let pkt = echo_request(id, seq, size);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(to.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: sending an initialised buffer to a valid sockaddr_in.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            // EMSGSIZE (learned PMTU) or EHOSTUNREACH are results, not errors of the tool.
            eprintln!("tracer: probe {seq}: {}", std::io::Error::last_os_error());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    match (proto, port) {
        (ProbeProto::Tcp, Some(port)) => {
            let dst = SocketAddr::from((to, port));
            if let Err(e) = TcpStream::connect_timeout(&dst, Duration::from_secs(1)) {
                eprintln!("tracer: TCP probe to {dst}: {e}");
            }
        }
        (ProbeProto::Udp, Some(port)) => {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("UDP probe socket")?;
            // To port 53 a real DNS query (a resolver drops what it cannot parse), else a
            // plain datagram.
            let payload = if port == 53 {
                dns_query(id)
            } else {
                b"tracer diagnose probe".to_vec()
            };
            s.send_to(&payload, (to, port)).context("UDP probe")?;
            // The socket stays open for the answer: closed, it would turn the answer into a
            // NO_SOCKET drop of our own making.
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .context("UDP probe socket")?;
            let mut buf = [0u8; 512];
            let _ = s.recv_from(&mut buf);
        }
        _ => {}
    }
    Ok(())
}

/// A DNS query for the A record of `kubernetes.default.svc.cluster.local` (the name every
/// cluster's DNS answers), recursion desired.
fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in "kubernetes.default.svc.cluster.local".split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// An ICMP echo request with `size` bytes of payload.
fn echo_request(id: u16, seq: u16, size: usize) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend((0..size).map(|i| (i % 251) as u8));
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_is_well_formed() {
        let q = dns_query(0xbeef);
        assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
        // One question, no other records; the name's labels, then type A class IN.
        assert_eq!(&q[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(q[12], 10);
        assert_eq!(&q[13..23], b"kubernetes");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
    }

    #[test]
    fn echo_request_checksums_to_zero() {
        let p = echo_request(0x1234, 7, 56);
        assert_eq!(p.len(), 64);
        assert_eq!(checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }
}
