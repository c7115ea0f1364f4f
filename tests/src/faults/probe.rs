//! A fault's probe, the traffic that fails while the fault is active, and running it.
//!
//! Probes use the pods' own sockets: ping, a TCP handshake, a UDP exchange, and `tcp-midflow`,
//! a TCP connection that resumes where the network has no state for it (as after a conntrack
//! entry on its path was lost): both ends are established in repair mode (`TCP_REPAIR`, as
//! CRIU restores a connection), so the first packet on the wire is a mid-connection segment,
//! which the destination's socket takes and echoes; nothing is sent when the probe closes.

use std::io;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use serde::{Deserialize, Serialize};

use crate::netns::{exec_in, in_netns};
use crate::services::probe::{run as services_probe, sender_netns};
use crate::topology::Topology;

/// Traffic that a fault makes fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Sending pod (`"n1p0"`), or `outside` (the machine outside the cluster of a lab with
    /// Services).
    pub from_pod: String,
    /// Destination: a pod or node address of the lab, or (a lab with Services) a Service's
    /// cluster IP, a node port, the outside machine.
    pub to: Ipv4Addr,
    /// `"icmp"`, `"tcp"`, `"udp"` or `"tcp-midflow"` (see the module note).
    pub proto: String,
    /// Destination port (tcp/udp).
    pub port: Option<u16>,
    /// Payload size (ICMP `-s`, UDP datagram); `None` = small default.
    pub size: Option<usize>,
    /// Don't fragment (ICMP `-M do`, UDP `IP_PMTUDISC_DO`; TCP always sets DF).
    pub df: bool,
}

impl Probe {
    /// Send the probe once from its pod; `Ok(true)` if it was answered within `timeout`,
    /// `Ok(false)` if not (timeout, or an ICMP error such as "frag needed"). Errors only when
    /// the probe could not be run. TCP/UDP to a pod or node of `topo`: a listener is opened in
    /// its namespace for the probe's duration; to a Service, a node port or the outside
    /// machine: the lab's servers answer ([`crate::services::probe`]).
    pub fn run(&self, topo: &Topology, timeout: Duration) -> Result<bool> {
        let from_ns = sender_netns(topo, &self.from_pod)?;
        if self.proto == "icmp" {
            return self.ping(&from_ns, timeout);
        }
        let (to, proto, port) = (self.to, self.proto.as_str(), self.port);
        if let Some(answered) = services_probe(topo, &from_ns, to, proto, port, timeout)? {
            return Ok(answered);
        }
        let dst_ns = topo
            .pod_by_ip(self.to)
            .map(|p| p.netns.clone())
            .or_else(|| {
                topo.nodes
                    .iter()
                    .find(|n| n.ip == self.to)
                    .map(|n| n.netns.clone())
            })
            .with_context(|| {
                format!("{} is not a pod or node of lab `{}`", self.to, topo.prefix)
            })?;
        match self.proto.as_str() {
            "tcp" => self.tcp(&from_ns, &dst_ns, timeout),
            "udp" => self.udp(&from_ns, &dst_ns, timeout),
            "tcp-midflow" => {
                let port = self.port.context("tcp-midflow probe without port")?;
                let from = topo.pod(&self.from_pod).with_context(|| {
                    format!("tcp-midflow probe from {}: not a pod", self.from_pod)
                })?;
                let dst = SocketAddrV4::new(self.to, port);
                midflow(&from_ns, &dst_ns, from.ip, dst, timeout)
                    .with_context(|| format!("tcp-midflow probe to {dst}"))
            }
            other => bail!("unknown probe protocol `{other}` (icmp, tcp, udp or tcp-midflow)"),
        }
    }

    fn ping(&self, from_ns: &str, timeout: Duration) -> Result<bool> {
        let (wait, dst) = (format!("{:.3}", timeout.as_secs_f64()), self.to.to_string());
        let size = self.size.map(|s| s.to_string());
        let mut cmd = vec!["ping", "-n", "-q", "-c", "1", "-W", &wait];
        if self.df {
            cmd.extend(["-M", "do"]);
        }
        if let Some(s) = &size {
            cmd.extend(["-s", s]);
        }
        cmd.push(&dst);
        let out = exec_in(from_ns, &cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            return Ok(true);
        }
        ensure!(
            stdout.contains("packets transmitted"),
            "`{}` in `{from_ns}` failed (is iputils-ping installed?): {}{}",
            cmd.join(" "),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(false)
    }

    fn tcp(&self, from_ns: &str, dst_ns: &str, timeout: Duration) -> Result<bool> {
        let addr = SocketAddr::from((self.to, self.port.context("tcp probe without port")?));
        let _listener = in_netns(dst_ns, move || TcpListener::bind(addr))?
            .with_context(|| format!("listen on {addr} in `{dst_ns}`"))?;
        let connected = in_netns(from_ns, move || TcpStream::connect_timeout(&addr, timeout))?;
        match connected {
            Ok(_) => Ok(true),
            Err(e) => unanswered(e).with_context(|| format!("tcp probe to {addr}")),
        }
    }

    fn udp(&self, from_ns: &str, dst_ns: &str, timeout: Duration) -> Result<bool> {
        let addr = SocketAddr::from((self.to, self.port.context("udp probe without port")?));
        let server = in_netns(dst_ns, move || UdpSocket::bind(addr))?
            .with_context(|| format!("bind {addr} in `{dst_ns}`"))?;
        let client = in_netns(from_ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
        if self.df {
            let v: libc::c_int = libc::IP_PMTUDISC_DO;
            // SAFETY: valid socket, option value of the documented type and size.
            let rc = unsafe {
                libc::setsockopt(
                    client.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    (&raw const v).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            ensure!(rc == 0, "IP_MTU_DISCOVER: {}", io::Error::last_os_error());
        }
        server.set_read_timeout(Some(timeout))?;
        client.set_read_timeout(Some(timeout))?;
        let payload = vec![0x5a_u8; self.size.unwrap_or(32)];
        if let Err(e) = client.send_to(&payload, addr) {
            return unanswered(e);
        }
        let mut buf = vec![0_u8; payload.len() + 1];
        let (n, peer) = match server.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) => return unanswered(e),
        };
        server.send_to(&buf[..n], peer)?;
        match client.recv_from(&mut buf) {
            Ok(_) => Ok(true),
            Err(e) => unanswered(e),
        }
    }
}

/// `TCP_REPAIR_QUEUE` values and `TCP_REPAIR` modes (`linux/tcp.h`).
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCP_REPAIR_ON: libc::c_int = 1;
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;

/// `struct tcp_repair_window`.
#[repr(C)]
struct TcpRepairWindow {
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: valid socket; `v` is a live value of the type and size the option takes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One end of an established TCP connection made in repair mode (as CRIU restores one): bound
/// to `local`, next sequence numbers `snd` (to send) and `rcv` (to receive), connected to
/// `peer` and out of repair mode without a packet on the wire.
fn repaired(local: SocketAddrV4, peer: SocketAddrV4, snd: u32, rcv: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tcp = libc::IPPROTO_TCP;
    setsockopt(&sock, tcp, libc::TCP_REPAIR, &TCP_REPAIR_ON)?;
    let (l, p) = (sockaddr(local), sockaddr(peer));
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: valid socket and address of the documented type and size.
    if unsafe { libc::bind(sock.as_raw_fd(), (&raw const l).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for (queue, seq) in [(TCP_SEND_QUEUE, snd), (TCP_RECV_QUEUE, rcv)] {
        setsockopt(&sock, tcp, libc::TCP_REPAIR_QUEUE, &queue)?;
        setsockopt(&sock, tcp, libc::TCP_QUEUE_SEQ, &seq)?;
    }
    // SAFETY: as for bind; in repair mode connect(2) sends nothing.
    if unsafe { libc::connect(sock.as_raw_fd(), (&raw const p).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let window = TcpRepairWindow {
        snd_wl1: rcv,
        snd_wnd: 65_535,
        max_window: 65_535,
        rcv_wnd: 65_535,
        rcv_wup: rcv,
    };
    setsockopt(&sock, tcp, libc::TCP_REPAIR_WINDOW, &window)?;
    setsockopt(&sock, tcp, libc::TCP_REPAIR, &TCP_REPAIR_OFF_NO_WP)?;
    Ok(sock)
}

/// Closes a socket without a packet (back in repair mode first): nothing follows the probe.
fn close_quietly(sock: OwnedFd) {
    let _ = setsockopt(&sock, libc::IPPROTO_TCP, libc::TCP_REPAIR, &TCP_REPAIR_ON);
    drop(sock);
}

/// Resumes a TCP connection from `from_ns` (`src`) to `dst:port` in `dst_ns` that the
/// network never saw start: both ends are made established in repair mode, then the client
/// sends 8 bytes (the first packet on the wire is a mid-connection segment, ACK and PSH) and
/// the server echoes them; answered when the echo comes back within `timeout`.
fn midflow(
    from_ns: &str,
    dst_ns: &str,
    src: Ipv4Addr,
    dst: SocketAddrV4,
    timeout: Duration,
) -> Result<bool> {
    let noise = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let client = SocketAddrV4::new(src, 40_000 + (noise % 20_000) as u16);
    let (c_seq, s_seq) = (noise.wrapping_mul(2_654_435_761), noise.rotate_left(7));
    let server = in_netns(dst_ns, move || repaired(dst, client, s_seq, c_seq))?
        .with_context(|| format!("repair-mode socket {dst} in `{dst_ns}` (needs root)"))?;
    let client = in_netns(from_ns, move || repaired(client, dst, c_seq, s_seq))?
        .with_context(|| format!("repair-mode socket {client} in `{from_ns}`"))?;
    let (server, client) = (TcpStream::from(server), TcpStream::from(client));
    let answered = (|| -> io::Result<bool> {
        server.set_read_timeout(Some(timeout))?;
        client.set_read_timeout(Some(timeout))?;
        (&client).write_all(b"midflow!")?;
        let mut buf = [0_u8; 8];
        if let Err(e) = (&server).read_exact(&mut buf) {
            return unanswered(e).map_err(io::Error::other);
        }
        (&server).write_all(&buf)?;
        match (&client).read_exact(&mut buf) {
            Ok(()) => Ok(&buf == b"midflow!"),
            Err(e) => unanswered(e).map_err(io::Error::other),
        }
    })();
    close_quietly(OwnedFd::from(client));
    close_quietly(OwnedFd::from(server));
    Ok(answered?)
}

/// Socket errors that mean "the probe got no answer" (as opposed to "could not probe").
fn unanswered(e: io::Error) -> Result<bool> {
    let lost = matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::HostUnreachable
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EMSGSIZE)
    );
    if lost {
        Ok(false)
    } else {
        Err(e.into())
    }
}
