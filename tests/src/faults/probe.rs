//! A fault's probe, the traffic that fails while the fault is active, and running it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
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
    /// `"icmp"`, `"tcp"` or `"udp"`.
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
            other => bail!("unknown probe protocol `{other}` (icmp, tcp or udp)"),
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
