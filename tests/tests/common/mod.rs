//! Shared harness of the privileged integration tests: root check (a test that cannot run fails
//! saying why, it is never skipped), the tracer binary, and a running tracer that is stopped
//! (and its output collected) also when a test fails.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod apiserver;
pub mod cdp;

/// Fails the test (never skips it) when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test attaches eBPF programs and creates network namespaces: it must run as root \
         (run `cargo xtask test` as root)"
    );
}

/// A fresh two-node lab (leftovers of an earlier run with this prefix removed first); it is
/// torn down when dropped, also when the test fails.
pub fn lab_up(prefix: &str, pods_per_node: usize, encap: lab::Encap) -> lab::Lab {
    require_root();
    let spec = lab::LabSpec {
        prefix: prefix.into(),
        nodes: 2,
        pods_per_node,
        encap,
        services: None,
    };
    lab::down_prefix(prefix).expect("clean leftovers of an earlier run");
    lab::Lab::up(&spec).expect("lab up")
}

/// A fresh two-node lab for `fault` (one pod per node): with Services when the fault needs
/// them (its probe goes through kube-proxy's or Calico's NAT), else a plain lab.
pub fn lab_up_for(prefix: &str, fault: lab::Fault, encap: lab::Encap) -> lab::Lab {
    require_root();
    let spec = lab::LabSpec {
        prefix: prefix.into(),
        nodes: 2,
        pods_per_node: 1,
        encap,
        services: fault
            .needs_services()
            .then(lab::services::ServicesSpec::default),
    };
    lab::down_prefix(prefix).expect("clean leftovers of an earlier run");
    lab::Lab::up(&spec).expect("lab up")
}

/// Creates an L3 `tun` device `name`, up, in `netns` (which the lab removes with its
/// namespaces): like `tunl0`, it has no Ethernet header, so the tracer loads its L3 programs.
pub fn add_tun(netns: &str, name: &str) {
    for cmd in [
        &["ip", "tuntap", "add", "dev", name, "mode", "tun"][..],
        &["ip", "link", "set", name, "up"],
    ] {
        let out = lab::exec_in(netns, cmd).expect("ip");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The tracer binary: `TRACER_BIN` (set by `cargo xtask test`), else target/release/tracer.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/tracer");
    assert!(
        p.exists(),
        "tracer binary not found at {}: run the tests with `cargo xtask test` (it builds it and sets TRACER_BIN)",
        p.display()
    );
    p
}

/// A tracer process; killed on drop if still running. Its output is read continuously by two
/// threads, so a tracer printing a lot never blocks on a full pipe.
pub struct Tracer {
    child: Option<Child>,
    ready: PathBuf,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn reader(pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// What a finished tracer printed.
pub struct TracerOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl TracerOutput {
    /// JSON objects printed one per line (traces, then the summary).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    pub fn traces(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v.get("packet").is_some())
            .collect()
    }

    pub fn summary(&self) -> Value {
        self.json_lines()
            .into_iter()
            .find_map(|v| v.get("summary").cloned())
            .unwrap_or_else(|| panic!("no summary line in tracer output:\n{}", self.stdout))
    }
}

impl Tracer {
    /// Starts `tracer trace ARGS --ready-file F` and waits until it is attached.
    pub fn start(args: &[String]) -> Tracer {
        Tracer::start_cmd("trace", args)
    }

    /// Starts `tracer CMD ARGS --ready-file F` and waits until it is attached.
    pub fn start_cmd(cmd: &str, args: &[String]) -> Tracer {
        Tracer::start_with_stdout(cmd, args, Stdio::piped())
    }

    /// `start_cmd` with standard output going to `stdout` (a file, a FIFO: a recording
    /// streamed with `--write -`); the output's `stdout` is then empty.
    pub fn start_with_stdout(cmd: &str, args: &[String], stdout: Stdio) -> Tracer {
        let ready = std::env::temp_dir().join(format!(
            "tracer-test-{}-{}.ready",
            std::process::id(),
            args.join("_").len() + rand_suffix()
        ));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(tracer_bin())
            .arg(cmd)
            .args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the tracer");
        let stdout = child.stdout.take().map(reader);
        let stderr = child.stderr.take().map(reader);
        let mut t = Tracer {
            child: Some(child),
            ready,
            stdout,
            stderr,
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        while !self.ready.exists() {
            let child = self.child.as_mut().expect("tracer running");
            if let Ok(Some(_)) = child.try_wait() {
                let out = self
                    .child
                    .take()
                    .expect("child")
                    .wait_with_output()
                    .expect("output");
                panic!(
                    "the tracer exited before it was ready ({}):\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the tracer was not ready after 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` and collects the output.
    pub fn stop_with(mut self, signal: i32) -> TracerOutput {
        let child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = wait_with_timeout(child, Duration::from_secs(30));
        let _ = std::fs::remove_file(&self.ready);
        TracerOutput {
            status,
            stdout: self
                .stdout
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
        }
    }

    /// SIGINT (Ctrl-C) and collect the output.
    pub fn stop(self) -> TracerOutput {
        self.stop_with(libc::SIGINT)
    }
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            return child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rand_suffix() -> usize {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as usize)
        .unwrap_or(0)
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.ready);
    }
}

/// Runs the tracer to completion with `args` (for error cases) and returns its output.
pub fn run_tracer(args: &[&str]) -> TracerOutput {
    let out = Command::new(tracer_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tracer");
    TracerOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (node, ifname, dir) of each hop of a JSON trace.
pub fn hop_path(trace: &Value) -> Vec<(String, String, String)> {
    trace["hops"]
        .as_array()
        .expect("hops array")
        .iter()
        .map(|h| {
            (
                h["node"].as_str().expect("node").to_string(),
                h["ifname"].as_str().expect("ifname").to_string(),
                h["dir"].as_str().expect("dir").to_string(),
            )
        })
        .collect()
}

/// Runs `check` on every `(label, case)` with `workers` threads, each case to its end even when
/// others fail (a panic fails only its case), then fails once listing every failed case with
/// its panic message. Prints each case's time to stderr (shown with `--nocapture`).
pub fn each_case<C: Sync>(cases: &[(String, C)], workers: usize, check: impl Fn(&str, &C) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, cases.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((label, case)) = cases.get(i) else {
                    break;
                };
                let started = Instant::now();
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(label, case)));
                let secs = started.elapsed().as_secs_f64();
                match result {
                    Ok(()) => eprintln!("{label}: ok in {secs:.1} s"),
                    Err(panic) => {
                        let msg = panic
                            .downcast_ref::<String>()
                            .map(String::as_str)
                            .or_else(|| panic.downcast_ref::<&str>().copied())
                            .unwrap_or("(no message)");
                        eprintln!("{label}: FAILED in {secs:.1} s");
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        f.push((i, format!("{label}: {msg}")));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures
            .into_iter()
            .map(|(_, m)| m)
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

/// The test harness's thread count: `RUST_TEST_THREADS`, else the number of CPUs.
pub fn test_threads() -> usize {
    std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
}

/// Every (fault, encapsulation) of the catalogue with its lab prefix (`fault_prefix`).
/// `TRACER_LAB_FAULTS=name,name` narrows them to those faults while iterating on some (said
/// on stderr; `cargo xtask test` never sets it); an unknown name fails.
pub fn fault_cases(base: &str) -> Vec<(String, (lab::Fault, lab::Encap))> {
    let only: Option<Vec<lab::Fault>> = std::env::var("TRACER_LAB_FAULTS").ok().map(|v| {
        v.split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("TRACER_LAB_FAULTS: {e:#}"))
            })
            .collect()
    });
    if let Some(only) = &only {
        eprintln!("TRACER_LAB_FAULTS: only {only:?}");
    }
    lab::Fault::cases()
        .filter(|(f, _)| only.as_ref().is_none_or(|o| o.contains(f)))
        .map(|(f, e)| (fault_prefix(base, f, e), (f, e)))
        .collect()
}

/// A short lab prefix for a fault case: `{base}-{v|n}-{fault}`.
pub fn fault_prefix(base: &str, fault: lab::Fault, encap: lab::Encap) -> String {
    let e = match encap {
        lab::Encap::Vxlan => "v",
        lab::Encap::None => "n",
        lab::Encap::Ipip => "i",
    };
    format!("{base}-{e}-{fault}")
}

/// A child process killed (and reaped) when dropped, also when the test fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tracer diagnose --from <pod> --from-netns <its netns> --to <to> EXTRA... --output json`
/// on every node of `topo`: the `diagnosis` object it ends with.
pub fn diagnose(
    topo: &lab::Topology,
    from: &lab::Pod,
    to: std::net::Ipv4Addr,
    extra: &[&str],
) -> Value {
    let mut args = vec![
        "diagnose".to_string(),
        "--from".into(),
        from.ip.to_string(),
        "--from-netns".into(),
        from.netns.clone(),
        "--to".into(),
        to.to_string(),
        "--output".into(),
        "json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_tracer(&args);
    assert!(out.status.success(), "diagnose failed: {}", out.stderr);
    out.json_lines()
        .into_iter()
        .find_map(|v| v.get("diagnosis").cloned())
        .unwrap_or_else(|| panic!("no diagnosis line:\n{}", out.stdout))
}
