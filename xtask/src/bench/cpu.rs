//! CPU per packet at a fixed load: iperf3 at a rate below saturation (64-byte UDP at a fixed
//! packet rate, TCP at a fixed bitrate) with nothing, the tracer in its modes, or tcpdump on
//! the same interfaces; the figure is the CPU time the whole machine spent per packet.
//!
//! Design notes:
//! - Throughput at saturation says little about cost on a 2-core machine where everything
//!   competes for the same CPUs (its ratios moved by 0.1 between runs). At a fixed load the
//!   work is fixed, and what a tool adds shows up as CPU time: busy = wall x CPUs - idle -
//!   steal over the iperf3 run, idle from cpuidle's per-state residency (µs) where the kernel
//!   has it, else /proc/stat (10 ms ticks). The /proc/stat split (user, system, softirq) and
//!   the tool's own process time (from /proc/PID/stat) say what the cost is made of.
//! - Packets are the client pod's interface counters (sent + received): every packet of the
//!   flow in either direction crosses the six traced hops, TCP's ACKs included.
//! - Configurations alternate within each round as in `throughput`; the tool starts before
//!   and stops after the measured window, so start-up is not counted. The tracer's resident
//!   memory (VmRSS, VmHWM) and its maps' memlock are read at the end of the window.
//! - `trace-node1` traces one node only (a tracer per node, as on a real cluster): its
//!   memory row is the one the one-node memory target reads.

use std::{process::Command, time::Instant};

use anyhow::{bail, Context, Result};

use super::{
    procs::{format_cmd, Proc},
    report::{
        cpu::{CpuConfig, CpuPhase, CpuSample},
        Proto,
    },
    throughput::{self, Config, Env},
    Plan,
};

/// The fixed loads: well below what the slowest configuration sustains on a 2-core machine.
pub const UDP_PPS: u64 = 30_000;
pub const TCP_BPS: u64 = 300_000_000;
/// `USER_HZ`: the unit of /proc/stat and /proc/PID/stat times (fixed at 100 by the ABI).
const TICK_NS: f64 = 10_000_000.0;

/// One configuration of the phase.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cfg {
    Shared(Config),
    /// `trace` of node 1 only.
    TraceOneNode,
}

impl Cfg {
    fn name(self) -> &'static str {
        match self {
            Cfg::Shared(c) => c.name(),
            Cfg::TraceOneNode => "trace-node1",
        }
    }

    fn tracer_args(self, env: &Env, plan: &Plan) -> Option<Vec<String>> {
        match self {
            Cfg::Shared(c) => c.tracer_args(env, plan),
            Cfg::TraceOneNode => Some(
                [
                    "trace",
                    "--netns",
                    &env.node_ns[0],
                    "--filter",
                    &env.match_filter,
                    "--output",
                    "json",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
        }
    }

    fn label(self) -> String {
        match self {
            Cfg::TraceOneNode => "trace-node1 (one node traced)".into(),
            Cfg::Shared(Config::RecordFlow) => "record-flow (to a file)".into(),
            Cfg::Shared(Config::RecordFlowSnap) => "record-flow --snaplen 128".into(),
            Cfg::Shared(c) => c.name().into(),
        }
    }
}

fn configs() -> Vec<Cfg> {
    vec![
        Cfg::Shared(Config::Baseline),
        Cfg::Shared(Config::TraceFlow),
        Cfg::TraceOneNode,
        Cfg::Shared(Config::RecordFlow),
        Cfg::Shared(Config::RecordFlowSnap),
        Cfg::Shared(Config::FilterMiss),
        Cfg::Shared(Config::Stats),
        Cfg::Shared(Config::Tcpdump),
    ]
}

/// Every round, both loads, every configuration.
pub fn run(plan: &Plan, env: &Env) -> CpuPhase {
    let cfgs = configs();
    let mut phase = CpuPhase {
        udp_pps: UDP_PPS,
        tcp_bps: TCP_BPS,
        seconds: plan.seconds,
        idle_source: if cpuidle_us().is_some() {
            "cpuidle residency (µs)".into()
        } else {
            "/proc/stat (10 ms ticks)".into()
        },
        configs: cfgs
            .iter()
            .map(|&c| CpuConfig {
                name: c.name(),
                label: c.label(),
                command: match c.tracer_args(env, plan) {
                    Some(a) => {
                        let mut cmd = Command::new("tracer");
                        cmd.args(a);
                        format_cmd(&cmd)
                    }
                    None if c == Cfg::Shared(Config::Tcpdump) => {
                        "tcpdump -w FILE on each traced interface".into()
                    }
                    None => String::new(),
                },
                tcp: Vec::new(),
                udp: Vec::new(),
            })
            .collect(),
    };
    for round in 0..plan.rounds {
        for proto in [Proto::Udp, Proto::Tcp] {
            for (i, &c) in cfgs.iter().enumerate() {
                let s = measure(plan, env, c, proto).unwrap_or_else(|e| CpuSample {
                    error: Some(format!("{e:#}")),
                    ..CpuSample::default()
                });
                eprintln!(
                    "bench: cpu round {}/{} {:?} {:<14} {}",
                    round + 1,
                    plan.rounds,
                    proto,
                    c.name(),
                    match (&s.error, s.ns_per_packet()) {
                        (Some(e), _) => format!("error: {e}"),
                        (None, Some(ns)) => format!("{ns:.0} ns/packet, {} packets", s.packets),
                        (None, None) => "no packets".into(),
                    }
                );
                match proto {
                    Proto::Tcp => phase.configs[i].tcp.push(s),
                    Proto::Udp => phase.configs[i].udp.push(s),
                }
            }
        }
    }
    phase
}

/// What runs next to iperf3.
enum Tool {
    Nothing,
    Tracer(Proc),
    Tcpdumps(Vec<Proc>),
}

fn measure(plan: &Plan, env: &Env, c: Cfg, proto: Proto) -> Result<CpuSample> {
    let tool = match c.tracer_args(env, plan) {
        Some(args) => Tool::Tracer(throughput::start_tracer(plan, env, &args)?),
        None if c == Cfg::Shared(Config::Tcpdump) => {
            Tool::Tcpdumps(throughput::start_tcpdumps(env)?)
        }
        None => Tool::Nothing,
    };
    let pids: Vec<u32> = match &tool {
        Tool::Nothing => Vec::new(),
        Tool::Tracer(p) => vec![p.pid()],
        Tool::Tcpdumps(ps) => ps.iter().map(Proc::pid).collect(),
    };
    let before = Snapshot::take(env, &pids)?;
    let rate = match proto {
        Proto::Udp => UDP_PPS * 64 * 8,
        Proto::Tcp => TCP_BPS,
    };
    throughput::iperf_at(env, proto, plan.seconds, Some(rate))?;
    let after = Snapshot::take(env, &pids)?;
    let mut s = after.minus(&before)?;
    match tool {
        Tool::Nothing => {}
        Tool::Tracer(p) => {
            let mem = Memory::of(p.pid());
            s.rss_kib = mem.rss_kib;
            s.hwm_kib = mem.hwm_kib;
            s.maps_kib = mem.maps_kib;
            s.lost = Some(throughput::stop_tracer(p)?);
        }
        Tool::Tcpdumps(ps) => s.lost = Some(throughput::stop_tcpdumps(env, ps)?),
    }
    Ok(s)
}

/// The machine's and the tools' CPU counters and the flow's packets at one instant.
struct Snapshot {
    at: Instant,
    cpus: usize,
    /// /proc/stat's aggregate line: user nice system idle iowait irq softirq steal (ticks).
    stat: [u64; 8],
    idle_us: Option<u64>,
    packets: u64,
    tool_ticks: Option<u64>,
}

impl Snapshot {
    fn take(env: &Env, pids: &[u32]) -> Result<Snapshot> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let (stat, cpus) = parse_proc_stat(&text)?;
        let tool_ticks = if pids.is_empty() {
            None
        } else {
            let mut t = 0;
            for pid in pids {
                t += process_ticks(*pid)?;
            }
            Some(t)
        };
        Ok(Snapshot {
            at: Instant::now(),
            cpus,
            stat,
            idle_us: cpuidle_us(),
            packets: flow_packets(&env.client_ns)?,
            tool_ticks,
        })
    }

    fn minus(&self, b: &Snapshot) -> Result<CpuSample> {
        let d = |i: usize| self.stat[i].saturating_sub(b.stat[i]) as f64 * TICK_NS;
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (d(0), d(1), d(2), d(3), d(4), d(5), d(6), d(7));
        let wall_ns = self.at.duration_since(b.at).as_nanos() as f64;
        let busy_ns = match (self.idle_us, b.idle_us) {
            (Some(a), Some(bb)) => {
                self.cpus as f64 * wall_ns - a.saturating_sub(bb) as f64 * 1e3 - steal
            }
            _ => user + nice + system + irq + softirq,
        };
        let _ = (idle, iowait);
        let packets = self.packets.saturating_sub(b.packets);
        if packets == 0 {
            bail!("the flow sent no packets during the measurement");
        }
        Ok(CpuSample {
            busy_ns: busy_ns.max(0.0),
            user_ns: user + nice,
            system_ns: system,
            softirq_ns: softirq + irq,
            packets,
            tool_ns: self
                .tool_ticks
                .zip(b.tool_ticks)
                .map(|(a, b)| a.saturating_sub(b) as f64 * TICK_NS),
            ..CpuSample::default()
        })
    }
}

/// The aggregate `cpu` line of /proc/stat (first 8 fields) and the number of CPUs.
fn parse_proc_stat(text: &str) -> Result<([u64; 8], usize)> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no aggregate cpu line")?;
    let mut out = [0u64; 8];
    for (o, f) in out.iter_mut().zip(line.split_whitespace().skip(1)) {
        *o = f.parse().with_context(|| format!("/proc/stat: {line}"))?;
    }
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Ok((out, cpus.max(1)))
}

/// Idle residency of every CPU summed over its idle states, µs (None without cpuidle).
fn cpuidle_us() -> Option<u64> {
    let mut total = 0;
    let mut any = false;
    for cpu in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let name = cpu.file_name();
        let name = name.to_string_lossy();
        if !name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
            continue;
        };
        for st in states.flatten() {
            if let Some(us) = std::fs::read_to_string(st.path().join("time"))
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                total += us;
                any = true;
            }
        }
    }
    any.then_some(total)
}

/// utime + stime of a process, ticks.
fn process_ticks(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces: fields are counted after its closing parenthesis.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the man page, utime 14, stime 15.
    let get = |i: usize| -> Result<u64> {
        f.get(i - 3)
            .and_then(|s| s.parse().ok())
            .context("malformed /proc/PID/stat")
    };
    Ok(get(14)? + get(15)?)
}

/// Packets sent + received by the client pod's `eth0`.
fn flow_packets(netns: &str) -> Result<u64> {
    let out = lab::exec_in(
        netns,
        &[
            "cat",
            "/sys/class/net/eth0/statistics/tx_packets",
            "/sys/class/net/eth0/statistics/rx_packets",
        ],
    )?;
    if !out.status.success() {
        bail!(
            "reading eth0's counters in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for l in text.lines() {
        n += l.trim().parse::<u64>().context("eth0 packet counter")?;
    }
    Ok(n)
}

/// A process's resident memory and the memlock of its BPF maps.
struct Memory {
    rss_kib: Option<u64>,
    hwm_kib: Option<u64>,
    maps_kib: Option<u64>,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status.lines().find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        };
        let mut maps = None;
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) {
            for fd in fds.flatten() {
                let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
                if !info.contains("map_type:") {
                    continue;
                }
                if let Some(bytes) = info.lines().find_map(|l| {
                    l.strip_prefix("memlock:")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                }) {
                    *maps.get_or_insert(0) += bytes / 1024;
                }
            }
        }
        Memory {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            maps_kib: maps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_process_ticks() {
        let text = "cpu  100 5 50 1000 3 0 20 7 0 0\ncpu0 50 2 25 500 1 0 10 3 0 0\n\
                    cpu1 50 3 25 500 2 0 10 4 0 0\nintr 1 2\n";
        let (stat, cpus) = parse_proc_stat(text).unwrap();
        assert_eq!((stat, cpus), ([100, 5, 50, 1000, 3, 0, 20, 7], 2));
        assert!(parse_proc_stat("intr 1\n").is_err());
        let me = process_ticks(std::process::id()).unwrap();
        assert!(me < 1 << 40);
    }
}
