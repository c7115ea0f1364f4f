//! Throughput: iperf3 from pod n1p0 to pod n2p0 with nothing, the tracer in its modes, or
//! tcpdump running next to it; also the helpers the per-program cost phase shares (iperf3,
//! starting and stopping a tracer, reading its summary).
//!
//! Design note: configurations alternate within every round (ABCDE ABCDE, per protocol), so
//! slow drift of the machine (thermal, other jobs) spreads over all of them instead of biasing
//! one. Every tracer or tcpdump instance lives for exactly one measurement: started, ready
//! (ready file / "listening on"), iperf3, SIGINT, its final numbers read. The iperf3 server
//! lives for the whole phase in pod n2p0's namespace. UDP uses 64-byte datagrams at full
//! speed (`-b 0`): a packet-rate load, reported as datagrams received per second.
//!
//! On machines with two or more CPUs the iperf3 client is pinned to CPU 0 and the server to
//! CPU 1 (`taskset`). Unpinned, the scheduler's placement of the two (same CPU or not, and
//! where the softirq work lands) changed from run to run, which moved 64-byte UDP by ±10 %
//! between identical baseline runs on the 2-core VM; pinned, identical runs agree within a few
//! percent. The tracer and tcpdump are not pinned: they compete for the CPUs as they would.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use lab::Topology;
use serde_json::Value;

use super::{
    procs::{format_cmd, Proc, Stdout},
    report::{ConfigResult, Proto, Sample},
    Plan,
};

pub const IPERF_PORT: &str = "5201";
/// A filter that matches no packet of the lab (an address no pod has; never a target).
pub const MISS_FILTER: &str = "host 10.244.250.250";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The throughput lab as the benchmark sees it, plus the iperf3 server.
pub struct Env {
    pub client_ns: String,
    pub client_ip: String,
    pub server_ip: String,
    pub node_ns: Vec<String>,
    /// (node netns, interface) pairs that tcpdump listens on.
    pub capture_ifaces: Vec<(String, String)>,
    pub match_filter: String,
    pub scratch: PathBuf,
    _server: Proc,
}

impl Env {
    pub fn new(topo: &Topology, scratch: &Path) -> Result<Env> {
        let pod = |n: &str| topo.pod(n).with_context(|| format!("lab has no pod {n}"));
        let (a, b) = (pod("n1p0")?, pod("n2p0")?);
        let mut capture_ifaces = Vec::new();
        for p in [a, b] {
            let node = topo.node_of(p).context("pod without node")?;
            capture_ifaces.push((node.netns.clone(), node.uplink.clone()));
            if let Some(v) = &node.vtep {
                capture_ifaces.push((node.netns.clone(), v.ifname.clone()));
            }
            capture_ifaces.push((node.netns.clone(), p.cali.clone()));
        }
        let mut server = Proc::spawn(
            "iperf3 server",
            Command::new("ip")
                .args(["netns", "exec", &b.netns])
                .args(pin_to_cpu(1))
                .args(["iperf3", "-s", "-p", IPERF_PORT]),
            Stdout::Null,
        )?;
        let ns = b.netns.clone();
        server.wait_until(Duration::from_secs(10), "listening socket", |_| {
            lab::exec_in(
                &ns,
                &["ss", "-Hltn", "sport", "=", &format!(":{IPERF_PORT}")],
            )
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false)
        })?;
        Ok(Env {
            client_ns: a.netns.clone(),
            client_ip: a.ip.to_string(),
            server_ip: b.ip.to_string(),
            node_ns: topo.nodes.iter().map(|n| n.netns.clone()).collect(),
            capture_ifaces,
            match_filter: format!("host {} and host {}", a.ip, b.ip),
            scratch: scratch.to_path_buf(),
            _server: server,
        })
    }

    pub fn ready_file(&self) -> PathBuf {
        self.scratch.join("tracer.ready")
    }
}

/// One throughput configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Config {
    Baseline,
    TraceFlow,
    TraceFlowNoDrops,
    RecordFlow,
    /// `record-flow` with `--snaplen 128`: what keeping the packets' first bytes costs.
    RecordFlowSnap,
    FilterMiss,
    Stats,
    Tcpdump,
}

impl Config {
    pub fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::TraceFlow => "trace-flow",
            Config::TraceFlowNoDrops => "trace-flow-nodrops",
            Config::RecordFlow => "record-flow",
            Config::RecordFlowSnap => "record-flow-snaplen128",
            Config::FilterMiss => "filter-miss",
            Config::Stats => "stats-kernel",
            Config::Tcpdump => "tcpdump",
        }
    }

    /// The tracer's arguments (without `--ready-file`) for the tracer configurations.
    pub fn tracer_args(self, env: &Env, plan: &Plan) -> Option<Vec<String>> {
        let (sub, filter, extra): (&str, &str, &[&str]) = match self {
            Config::Baseline | Config::Tcpdump => return None,
            Config::TraceFlow => ("trace", &env.match_filter, &[]),
            Config::TraceFlowNoDrops => ("trace", &env.match_filter, &["--no-drops"]),
            Config::RecordFlow => {
                let file = env.scratch.join("flow.trec").display().to_string();
                return Some(tracer_cmdline(
                    "record",
                    env,
                    &env.match_filter,
                    &["--write", &file],
                ));
            }
            Config::RecordFlowSnap => {
                let file = env.scratch.join("flow-snap.trec").display().to_string();
                return Some(tracer_cmdline(
                    "record",
                    env,
                    &env.match_filter,
                    &["--snaplen", "128", "--write", &file],
                ));
            }
            Config::FilterMiss => ("trace", MISS_FILTER, &[]),
            Config::Stats if plan.kernel_agg => ("stats", &env.match_filter, &["--kernel-agg"]),
            Config::Stats => ("stats", &env.match_filter, &[]),
        };
        Some(tracer_cmdline(sub, env, filter, extra))
    }

    fn label(self, plan: &Plan) -> String {
        match self {
            Config::TraceFlowNoDrops => "trace-flow --no-drops".into(),
            Config::RecordFlow => "record-flow (to a file)".into(),
            Config::RecordFlowSnap => "record-flow --snaplen 128".into(),
            Config::Stats if !plan.kernel_agg => "stats-kernel (user-space stats)".into(),
            c => c.name().into(),
        }
    }

    fn command(self, env: &Env, plan: &Plan) -> String {
        match (self, self.tracer_args(env, plan)) {
            (_, Some(a)) => {
                let mut cmd = Command::new("tracer");
                cmd.args(a);
                format_cmd(&cmd)
            }
            (Config::Tcpdump, _) => format!(
                "tcpdump -i IF -w FILE for each of {}",
                env.capture_ifaces
                    .iter()
                    .map(|(n, i)| format!("{n}/{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        }
    }
}

/// The configurations of this run, in round order.
pub fn configs(plan: &Plan) -> Vec<Config> {
    let mut c = vec![Config::Baseline, Config::TraceFlow];
    if !plan.quick {
        c.push(Config::TraceFlowNoDrops);
    }
    c.extend([Config::RecordFlow, Config::RecordFlowSnap]);
    c.extend([Config::FilterMiss, Config::Stats, Config::Tcpdump]);
    c
}

/// Every round, every protocol, every configuration; failures are recorded per sample.
pub fn run(plan: &Plan, env: &Env) -> Vec<ConfigResult> {
    let configs = configs(plan);
    let mut results: Vec<ConfigResult> = configs
        .iter()
        .map(|&c| ConfigResult {
            name: c.name(),
            label: c.label(plan),
            command: c.command(env, plan),
            tcp: Vec::new(),
            udp: Vec::new(),
        })
        .collect();
    for round in 0..plan.rounds {
        for proto in [Proto::Tcp, Proto::Udp] {
            for (i, &c) in configs.iter().enumerate() {
                let t0 = std::time::Instant::now();
                let s = measure(plan, env, c, proto).unwrap_or_else(|e| Sample {
                    error: Some(format!("{e:#}")),
                    ..Sample::default()
                });
                eprintln!(
                    "bench: round {}/{} {:?} {:<20} {} ({:.1} s)",
                    round + 1,
                    plan.rounds,
                    proto,
                    c.name(),
                    describe(&s),
                    t0.elapsed().as_secs_f64()
                );
                match proto {
                    Proto::Tcp => results[i].tcp.push(s),
                    Proto::Udp => results[i].udp.push(s),
                }
            }
        }
    }
    results
}

fn describe(s: &Sample) -> String {
    if let Some(e) = &s.error {
        return format!("error: {e}");
    }
    let mut d = format!("{:.2} Gbit/s", s.bps.unwrap_or(0.0) / 1e9);
    if let Some(p) = s.pps {
        d.push_str(&format!(", {:.1} kpps", p / 1e3));
    }
    if let Some(l) = s.lost {
        d.push_str(&format!(", lost events {l}"));
    }
    if let Some(l) = s.tool_drops {
        d.push_str(&format!(", tcpdump kernel drops {l}"));
    }
    d
}

fn measure(plan: &Plan, env: &Env, c: Config, proto: Proto) -> Result<Sample> {
    if let Some(args) = c.tracer_args(env, plan) {
        let tracer = start_tracer(plan, env, &args)?;
        let r = iperf(env, proto, plan.seconds)?;
        let lost = stop_tracer(tracer)?;
        return Ok(Sample {
            lost: Some(lost),
            ..r
        });
    }
    if c == Config::Tcpdump {
        let dumps = start_tcpdumps(env)?;
        let r = iperf(env, proto, plan.seconds)?;
        let drops = stop_tcpdumps(env, dumps)?;
        return Ok(Sample {
            tool_drops: Some(drops),
            ..r
        });
    }
    iperf(env, proto, plan.seconds)
}

/// Starts the tracer with `args` plus a ready file and waits until it is attached.
/// `tracer SUB --netns <each node> --filter FILTER --output json EXTRA...` (`record` writes a
/// file and its summary line is JSON anyway: no `--output`).
pub fn tracer_cmdline(sub: &str, env: &Env, filter: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![sub.to_string()];
    for ns in &env.node_ns {
        args.extend(["--netns".to_string(), ns.clone()]);
    }
    args.extend(["--filter".into(), filter.into()]);
    if sub != "record" {
        args.extend(["--output".into(), "json".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn start_tracer(plan: &Plan, env: &Env, args: &[String]) -> Result<Proc> {
    let ready = env.ready_file();
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(&plan.tracer);
    cmd.args(args).arg("--ready-file").arg(&ready);
    let mut p = Proc::spawn(format!("`{}`", format_cmd(&cmd)), &mut cmd, Stdout::Tail(4))?;
    p.wait_file(&ready, READY_TIMEOUT)?;
    let _ = std::fs::remove_file(&ready);
    Ok(p)
}

/// SIGINT, wait, and return `lost_events` from the summary line.
pub fn stop_tracer(p: Proc) -> Result<u64> {
    let out = p.stop(STOP_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "the tracer exited with {}: {}",
            out.status,
            super::procs::last_lines(&out.stderr, 6)
        );
    }
    lost_events(&out.stdout).with_context(|| {
        format!(
            "no summary line with lost_events in the tracer's output (last lines: {})",
            super::procs::last_lines(&out.stdout, 2)
        )
    })
}

/// `summary.lost_events` of the last `{"summary":...}` line.
pub fn lost_events(lines: &[String]) -> Option<u64> {
    lines.iter().rev().find_map(|l| {
        let v: Value = serde_json::from_str(l).ok()?;
        v.get("summary")?.get("lost_events")?.as_u64()
    })
}

pub fn start_tcpdumps(env: &Env) -> Result<Vec<Proc>> {
    let mut procs = Vec::new();
    for (i, (ns, iface)) in env.capture_ifaces.iter().enumerate() {
        let file = env.scratch.join(format!("dump{i}.pcap"));
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", ns, "tcpdump", "-Z", "root", "-i", iface, "-w",
        ])
        .arg(&file);
        procs.push(Proc::spawn(
            format!("tcpdump -i {iface} in {ns}"),
            &mut cmd,
            Stdout::Null,
        )?);
    }
    for p in &mut procs {
        p.wait_stderr("listening on", READY_TIMEOUT)?;
    }
    Ok(procs)
}

/// Stops every tcpdump, sums their "dropped by kernel", removes the capture files.
pub fn stop_tcpdumps(env: &Env, procs: Vec<Proc>) -> Result<u64> {
    for p in &procs {
        p.interrupt()?;
    }
    let mut drops = 0;
    for p in procs {
        let out = p.wait(STOP_TIMEOUT)?;
        drops += tcpdump_drops(&out.stderr).unwrap_or(0);
    }
    for i in 0..env.capture_ifaces.len() {
        let _ = std::fs::remove_file(env.scratch.join(format!("dump{i}.pcap")));
    }
    Ok(drops)
}

/// `N packets dropped by kernel` of tcpdump's final statistics.
pub fn tcpdump_drops(stderr: &[String]) -> Option<u64> {
    stderr.iter().find_map(|l| {
        l.trim()
            .strip_suffix("packets dropped by kernel")?
            .trim()
            .parse()
            .ok()
    })
}

/// `taskset -c CPU` in front of an iperf3 command, when the machine has a second CPU to keep
/// the client and the server apart (see the design note).
fn pin_to_cpu(cpu: usize) -> Vec<String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return Vec::new();
    }
    vec!["taskset".into(), "-c".into(), cpu.to_string()]
}

/// One iperf3 run from the client pod to the server pod at full speed (retried once if the
/// server is still busy with the previous test).
pub fn iperf(env: &Env, proto: Proto, seconds: u64) -> Result<Sample> {
    iperf_at(env, proto, seconds, None)
}

/// One iperf3 run at `bitrate` bits/s (`None`: as fast as it goes; UDP counts the 64-byte
/// payloads).
pub fn iperf_at(env: &Env, proto: Proto, seconds: u64, bitrate: Option<u64>) -> Result<Sample> {
    let secs = seconds.to_string();
    let rate = bitrate.unwrap_or(0).to_string();
    let mut args = vec![
        "iperf3",
        "-c",
        &env.server_ip,
        "-p",
        IPERF_PORT,
        "-t",
        &secs,
        "-J",
    ];
    match proto {
        Proto::Udp => args.extend(["-u", "-b", &rate, "-l", "64"]),
        Proto::Tcp if bitrate.is_some() => args.extend(["-b", &rate]),
        Proto::Tcp => {}
    }
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let out = super::procs::run_capture(
            "iperf3 client",
            Command::new("ip")
                .args(["netns", "exec", &env.client_ns])
                .args(pin_to_cpu(0))
                .args(&args),
            Duration::from_secs(seconds + 20),
        )?;
        match parse_iperf(&out.stdout.join("\n"), proto) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e.context(format!("iperf3 ({})", out.status))),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Receiver-side throughput (and UDP datagrams/s) from `iperf3 -J`.
pub fn parse_iperf(json: &str, proto: Proto) -> Result<Sample> {
    let v: Value = serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let recv = if end["sum_received"].is_object() {
        &end["sum_received"]
    } else {
        &end["sum"]
    };
    let bps = recv["bits_per_second"]
        .as_f64()
        .context("iperf3 output has no end.sum_received.bits_per_second")?;
    let pps = if proto == Proto::Udp {
        let secs = recv["seconds"].as_f64().filter(|s| *s > 0.0);
        let got = recv["packets"]
            .as_u64()
            .zip(recv["lost_packets"].as_u64())
            .map(|(p, l)| p.saturating_sub(l));
        Some(got.zip(secs).map(|(g, s)| g as f64 / s).unwrap_or(0.0))
    } else {
        None
    };
    Ok(Sample {
        bps: Some(bps),
        pps,
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf_json_receiver_side() {
        let tcp = r#"{"end":{"sum_sent":{"bits_per_second":2e9},"sum_received":{"bits_per_second":1.5e9}}}"#;
        let s = parse_iperf(tcp, Proto::Tcp).unwrap();
        assert_eq!((s.bps, s.pps), (Some(1.5e9), None));
        let udp = r#"{"end":{"sum":{"bits_per_second":9},"sum_received":{"seconds":2.0,
            "bits_per_second":88e6,"packets":500,"lost_packets":100}}}"#;
        let s = parse_iperf(udp, Proto::Udp).unwrap();
        assert_eq!((s.bps, s.pps), (Some(88e6), Some(200.0)));
        let err = parse_iperf(r#"{"start":{},"error":"the server is busy"}"#, Proto::Tcp);
        assert!(format!("{:#}", err.unwrap_err()).contains("busy"));
    }

    #[test]
    fn summary_and_tcpdump_lines() {
        let lines: Vec<String> = [
            r#"{"packet":{}}"#,
            r#"{"summary":{"flows":[],"lost_events":42}}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(lost_events(&lines), Some(42));
        assert_eq!(lost_events(&lines[..1]), None);
        let err: Vec<String> = [
            "tcpdump: listening on eth0",
            "10 packets captured",
            "7 packets dropped by kernel",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(tcpdump_drops(&err), Some(7));
    }
}
