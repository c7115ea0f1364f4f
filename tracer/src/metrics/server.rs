//! The HTTP endpoint: `GET /metrics` on a listening socket, served by one thread of its own.
//!
//! Why a `std` listener and not a server crate: the endpoint answers one request kind for one
//! client (Prometheus scrapes one target at a time), and the candidates are either built for
//! much more (hyper needs an async runtime, tokio, for one route) or unreleased for years
//! (tiny_http 0.12, 2022). What makes a hand-written server fragile is parsing, and that is
//! done by `httparse` (hyper's own request parser). The rest is bounded: a request head of at
//! most 8 KiB, read within 2 s; a response written within 5 s; one connection at a time,
//! closed after its response. A client that stalls holds the endpoint for those seconds at
//! most, and never the tracing, which runs on another thread and waits for nothing here.
//!
//! Content negotiation as Prometheus's own client libraries do it: OpenMetrics text when the
//! request accepts `application/openmetrics-text` (Prometheus does), else the Prometheus text
//! format 0.0.4 (curl, a browser, `promtool check metrics`).

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use prometheus_client::{encoding, registry::Registry};

/// The default address: localhost only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9474";

const MAX_HEAD: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Parses `--metrics-addr`: `PORT` or `:PORT` (localhost), `localhost:PORT`, or `IP:PORT`
/// (IPv6 in brackets): another address than localhost only when it is written out.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = |p: &str| {
        p.parse::<u16>()
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    };
    if let Ok(a) = port(s.strip_prefix(':').unwrap_or(s)) {
        return Ok(a);
    }
    if let Some(p) = s.strip_prefix("localhost:") {
        if let Ok(a) = port(p) {
            return Ok(a);
        }
    }
    s.parse().map_err(|_| {
        format!(
            "invalid metrics address '{s}' (use PORT, IP:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9474)"
        )
    })
}

/// A listening endpoint and its thread; dropping it stops the thread.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Listens on `addr` (nothing is served until [`Server::start`]). The error is one line, the
/// address in use named.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => anyhow::anyhow!(
            "--metrics-addr {addr}: the address is already in use (another process listens \
             there): choose another port"
        ),
        _ => anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {e}"),
    })
}

impl Server {
    /// Serves `registry` on `listener` from a thread of its own.
    pub fn start(listener: TcpListener, registry: Arc<Registry>) -> anyhow::Result<Server> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("metrics".into()).spawn({
            let stop = stop.clone();
            move || serve(&listener, &registry, &stop)
        })?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address listened on (the port the kernel chose for port 0).
    #[cfg(test)]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_millis(200)).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    let mut size_hint = 4096;
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, registry, &mut size_hint) {
                    log::debug!("metrics endpoint: {e}");
                }
            }
            Err(e) => {
                log::warn!("metrics endpoint: accept: {e}");
                // Out of file descriptors or the like: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request asked for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /metrics` (or `HEAD`), in OpenMetrics when `openmetrics`.
    Metrics {
        openmetrics: bool,
        head: bool,
    },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

/// Reads a request head (bounded in size and time) and routes it; `None` when the client
/// closed the connection first.
pub(super) fn read_request(stream: &mut impl Read) -> io::Result<Option<Route>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(None);
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => return Ok(Some(route(&req))),
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) | Err(_) => return Ok(Some(Route::BadRequest)),
        }
    }
}

fn route(req: &httparse::Request<'_, '_>) -> Route {
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Route::MethodNotAllowed,
    };
    let path = req.path.unwrap_or("");
    if path.split('?').next() != Some("/metrics") {
        return Route::NotFound;
    }
    let openmetrics = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("accept")
            && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
    });
    Route::Metrics { openmetrics, head }
}

/// The response to a route: status line, content type and body.
pub(super) fn respond(
    route: &Route,
    registry: &Registry,
    size_hint: &mut usize,
) -> (&'static str, &'static str, String) {
    match route {
        Route::Metrics { openmetrics, .. } => {
            let mut body = String::with_capacity(*size_hint);
            let (ctype, encoded) = if *openmetrics {
                (OPENMETRICS, encoding::text::encode(&mut body, registry))
            } else {
                (
                    encoding::prometheus_text::CONTENT_TYPE,
                    encoding::prometheus_text::encode(&mut body, registry),
                )
            };
            match encoded {
                Ok(()) => {
                    *size_hint = body.len() + body.len() / 4;
                    ("200 OK", ctype, body)
                }
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "the metrics could not be encoded\n".into(),
                ),
            }
        }
        Route::NotFound => (
            "404 Not Found",
            "text/plain",
            "the tracer serves its metrics on /metrics\n".into(),
        ),
        Route::MethodNotAllowed => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".into(),
        ),
        Route::BadRequest => ("400 Bad Request", "text/plain", "bad request\n".into()),
    }
}

fn handle(mut stream: TcpStream, registry: &Registry, size_hint: &mut usize) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let Some(route) = read_request(&mut stream)? else {
        return Ok(());
    };
    let (status, ctype, body) = respond(&route, registry, size_hint);
    let head_only = matches!(route, Route::Metrics { head: true, .. });
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if route == Route::MethodNotAllowed {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes())?;
    if !head_only {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}
