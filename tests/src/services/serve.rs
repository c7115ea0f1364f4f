//! The servers of a services lab: `lab serve`, one process per serving namespace (the DNS
//! responder pod, each web pod, the outside machine), started by `lab up --services` and
//! stopped by its teardown.
//!
//! Design note: the servers must outlive the process that builds the lab (`lab up` returns,
//! `lab break` and the tracer's `diagnose` come later), so they are processes of their own:
//! the `lab` binary's hidden `serve` subcommand, detached with `setsid -f` (so nothing waits
//! for them and no zombie is left) and logging to a file next to their pid file in
//! `/run/tracer-lab/{prefix}.serve/`. A server enters its namespace before it binds, writes
//! its pid file once it listens (which is what the starter waits for), and exits on SIGTERM
//! or, should nobody stop it, within half a second of its namespace's name disappearing
//! (`lab down` from anywhere, a crashed test's leftovers removed by the next run), so it
//! never keeps a deleted lab's namespace alive. Stopping kills only the processes whose
//! command line names that pid file. What they serve:
//! - web (`--web-port`): TCP; each connection gets one line, `<label> <client ip:port>` (the
//!   pod that answered and the address the client had when it arrived: who masqueraded);
//! - DNS (`--dns-name`, `--dns-answer`): UDP and TCP 53, see [`super::dns`].
//!
//! The `lab` binary is found as `TRACER_LAB_BIN`, [`set_server_bin`] (xtask builds it), the
//! running executable when it is `lab`, or `lab` next to the running executable or one
//! directory up (cargo's `target/<profile>/lab` for its test binaries in `deps/`).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::dns;
use crate::netns::{enter, netns_inode};
use crate::status::STATE_DIR;

/// `lab serve`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Network namespace to serve in (its name under /run/netns).
    #[arg(long)]
    pub netns: String,
    /// What the web port says it is (the pod's name).
    #[arg(long)]
    pub label: String,
    /// TCP port of the web server.
    #[arg(long)]
    pub web_port: Option<u16>,
    /// The name the DNS responder answers A queries for (UDP and TCP 53).
    #[arg(long, requires = "dns_answer")]
    pub dns_name: Option<String>,
    /// The address it answers with.
    #[arg(long, requires = "dns_name")]
    pub dns_answer: Option<Ipv4Addr>,
    /// Written once every socket listens.
    #[arg(long)]
    pub pid_file: PathBuf,
}

static SERVER_BIN: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Use `bin` as the `lab` binary that runs the servers.
pub fn set_server_bin(bin: PathBuf) {
    *SERVER_BIN.lock().unwrap_or_else(|e| e.into_inner()) = Some(bin);
}

fn server_bin() -> Result<PathBuf> {
    if let Some(p) = SERVER_BIN.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("TRACER_LAB_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("find the running executable")?;
    if exe.file_stem().is_some_and(|s| s == "lab") {
        return Ok(exe);
    }
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("lab"))
        .find(|c| c.is_file())
        .with_context(|| {
            format!(
                "a services lab runs its servers with the `lab` binary, which is not next to {} \
                 (build it with `cargo build -p tracer-tests --bin lab`, or set TRACER_LAB_BIN)",
                exe.display()
            )
        })
}

/// `/run/tracer-lab/{prefix}.serve`.
fn serve_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.serve"))
}

/// What one server serves.
pub(crate) struct Server<'a> {
    pub netns: &'a str,
    pub label: &'a str,
    pub web_port: Option<u16>,
    pub dns: Option<(&'a str, Ipv4Addr)>,
}

/// Start `s` for lab `prefix` and wait until it listens.
pub(crate) fn spawn(prefix: &str, s: &Server<'_>) -> Result<()> {
    let dir = serve_dir(prefix);
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let pid_file = dir.join(format!("{}.pid", s.netns));
    let log = dir.join(format!("{}.log", s.netns));
    let _ = fs::remove_file(&pid_file);
    let bin = server_bin()?;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--netns".into(),
        s.netns.into(),
        "--label".into(),
        s.label.into(),
        "--pid-file".into(),
        pid_file.display().to_string(),
    ];
    if let Some(p) = s.web_port {
        args.extend(["--web-port".into(), p.to_string()]);
    }
    if let Some((name, ip)) = s.dns {
        args.extend([
            "--dns-name".into(),
            name.into(),
            "--dns-answer".into(),
            ip.to_string(),
        ]);
    }
    let out = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new("setsid");
    cmd.arg("-f")
        .arg(&bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // The server outlives this process: it must hold none of its descriptors (a test's
    // `flock` on the shared lab-test lock is inherited by everything it starts, and a
    // server keeping it locked after the test deadlocked every other engineer's tests).
    // SAFETY: close_range is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::close_range(3, libc::c_uint::MAX, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let status = cmd.status().context("run `setsid` (util-linux)")?;
    ensure!(
        status.success(),
        "`setsid -f {}` failed: {status}",
        bin.display()
    );
    let started = Instant::now();
    while !pid_file.exists() {
        if started.elapsed() > Duration::from_secs(10) {
            let text = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the server in `{}` did not start within 10 s ({}): {}",
                s.netns,
                bin.display(),
                text.trim()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Stop every server of lab `prefix` (those whose command line names their pid file) and
/// remove their directory. Missing is fine.
pub fn stop_prefix(prefix: &str) -> Result<()> {
    let dir = serve_dir(prefix);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut pids = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "pid") {
            continue;
        }
        let Some(pid) = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*path.to_string_lossy());
        if ours {
            // SAFETY: kill(2) on a process whose command line names this lab's pid file.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            pids.push(pid);
        }
    }
    let started = Instant::now();
    while pids.iter().any(|&p| alive(p)) && started.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    ensure!(
        left.is_empty(),
        "lab `{prefix}`: servers {left:?} did not stop"
    );
    fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// `lab serve`: serve in the namespace until SIGTERM or until its name is gone.
pub fn serve(a: &ServeArgs) -> Result<()> {
    let inode = netns_inode(&a.netns)?;
    // Every thread started from here on is in the namespace too.
    enter(&a.netns)?;
    let any = Ipv4Addr::UNSPECIFIED;
    if let Some(port) = a.web_port {
        let l = TcpListener::bind((any, port)).with_context(|| format!("listen on TCP {port}"))?;
        let label = a.label.clone();
        thread::spawn(move || accept_loop(&l, move |c| web(c, &label)));
    }
    if let (Some(name), Some(ip)) = (a.dns_name.clone(), a.dns_answer) {
        let port = super::DNS_PORT;
        let udp = UdpSocket::bind((any, port)).context("bind UDP 53")?;
        let tcp = TcpListener::bind((any, port)).context("listen on TCP 53")?;
        let n = name.clone();
        thread::spawn(move || dns_udp(&udp, &n, ip));
        thread::spawn(move || accept_loop(&tcp, move |c| dns_tcp(c, &name, ip)));
    }
    let tmp = a.pid_file.with_extension("tmp");
    fs::write(&tmp, std::process::id().to_string())
        .with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &a.pid_file).with_context(|| format!("write {}", a.pid_file.display()))?;
    loop {
        thread::sleep(Duration::from_millis(300));
        if netns_inode(&a.netns).ok() != Some(inode) {
            eprintln!("lab serve: namespace `{}` is gone, exiting", a.netns);
            let _ = fs::remove_file(&a.pid_file);
            return Ok(());
        }
    }
}

fn accept_loop(l: &TcpListener, handle: impl Fn(TcpStream) + Send + Clone + 'static) {
    for conn in l.incoming().flatten() {
        let h = handle.clone();
        thread::spawn(move || {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            h(conn);
        });
    }
}

fn web(mut c: TcpStream, label: &str) {
    let peer = c.peer_addr().map(|p| p.to_string()).unwrap_or_default();
    let _ = c.write_all(format!("{label} {peer}\n").as_bytes());
}

fn dns_udp(s: &UdpSocket, name: &str, ip: Ipv4Addr) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, peer)) = s.recv_from(&mut buf) else {
            continue;
        };
        if let Some(r) = dns::answer(&buf[..n], name, ip) {
            let _ = s.send_to(&r, peer);
        }
    }
}

fn dns_tcp(mut c: TcpStream, name: &str, ip: Ipv4Addr) {
    loop {
        let mut len = [0u8; 2];
        if c.read_exact(&mut len).is_err() {
            return;
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if c.read_exact(&mut q).is_err() {
            return;
        }
        let Some(r) = dns::answer(&q, name, ip) else {
            return;
        };
        let mut msg = (r.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&r);
        if c.write_all(&msg).is_err() {
            return;
        }
    }
}
