//! Traffic between lab pods, generated from inside their network namespaces with plain sockets
//! (and `ping`), so tests and the demo need no other tools. Every exchange is bounded in time and
//! only ever targets addresses of the lab's own namespaces.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{exec_in, in_netns};

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `count` ICMP echo requests from `netns` to `dst`; fails if none is answered and
/// `must_answer` is set.
pub fn ping(netns: &str, dst: Ipv4Addr, count: u32, must_answer: bool) -> Result<String> {
    let out = exec_in(
        netns,
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            &dst.to_string(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if must_answer && !out.status.success() {
        bail!(
            "ping {dst} from {netns} failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

/// The two ends of one exchange, as seen by the client.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    pub client: SocketAddrV4,
    pub server: SocketAddrV4,
}

fn v4(addr: SocketAddr) -> Result<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(anyhow!("unexpected IPv6 address {a}")),
    }
}

/// A TCP connection from `client_ns` to `server_ip:port` in `server_ns`: the client sends
/// `payload`, the server echoes it, both close.
pub fn tcp_exchange(
    server_ns: &str,
    server_ip: Ipv4Addr,
    port: u16,
    client_ns: &str,
    payload: &[u8],
) -> Result<Exchange> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server_ns_owned = server_ns.to_string();
    let server = std::thread::spawn(move || {
        in_netns(&server_ns_owned, move || -> Result<()> {
            let listener = TcpListener::bind((server_ip, port))?;
            ready_tx.send(()).ok();
            listener.set_nonblocking(false)?;
            let (mut conn, _) = listener.accept()?;
            conn.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut buf = vec![0u8; 64 * 1024];
            let n = conn.read(&mut buf)?;
            conn.write_all(&buf[..n])?;
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(IO_TIMEOUT)
        .map_err(|_| anyhow!("TCP server in {server_ns} did not start"))?;
    let payload = payload.to_vec();
    let exchange = in_netns(client_ns, move || -> Result<Exchange> {
        let dst = SocketAddr::from((server_ip, port));
        let mut conn = TcpStream::connect_timeout(&dst, IO_TIMEOUT)
            .with_context(|| format!("TCP connect to {dst}"))?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.write_all(&payload)?;
        let mut back = vec![0u8; payload.len()];
        conn.read_exact(&mut back).context("reading the TCP echo")?;
        Ok(Exchange {
            client: v4(conn.local_addr()?)?,
            server: v4(dst)?,
        })
    })??;
    server
        .join()
        .map_err(|_| anyhow!("TCP server thread panicked"))???;
    Ok(exchange)
}

/// One UDP datagram from `client_ns` to `server_ip:port` in `server_ns`, and one reply.
pub fn udp_exchange(
    server_ns: &str,
    server_ip: Ipv4Addr,
    port: u16,
    client_ns: &str,
    payload: &[u8],
) -> Result<Exchange> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server_ns_owned = server_ns.to_string();
    let server = std::thread::spawn(move || {
        in_netns(&server_ns_owned, move || -> Result<()> {
            let sock = UdpSocket::bind((server_ip, port))?;
            sock.set_read_timeout(Some(IO_TIMEOUT))?;
            ready_tx.send(()).ok();
            let mut buf = vec![0u8; 64 * 1024];
            let (n, from) = sock.recv_from(&mut buf)?;
            sock.send_to(&buf[..n], from)?;
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(IO_TIMEOUT)
        .map_err(|_| anyhow!("UDP server in {server_ns} did not start"))?;
    let payload = payload.to_vec();
    let exchange = in_netns(client_ns, move || -> Result<Exchange> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        let dst = SocketAddr::from((server_ip, port));
        sock.send_to(&payload, dst)?;
        let mut buf = vec![0u8; payload.len() + 1];
        sock.recv_from(&mut buf)
            .context("waiting for the UDP reply")?;
        let local = v4(sock.local_addr()?)?;
        // The socket is bound to 0.0.0.0; the source the kernel picked is the pod's address.
        let client = SocketAddrV4::new(source_addr_for(dst)?, local.port());
        Ok(Exchange {
            client,
            server: v4(dst)?,
        })
    })??;
    server
        .join()
        .map_err(|_| anyhow!("UDP server thread panicked"))???;
    Ok(exchange)
}

/// The source address the kernel picks towards `dst` (from the calling thread's namespace).
fn source_addr_for(dst: SocketAddr) -> Result<Ipv4Addr> {
    let probe = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    probe.connect(dst)?;
    match probe.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => bail!("no IPv4 source towards {dst}"),
    }
}
