//! Per-program cost: `kernel.bpf_stats_enabled=1` and `bpftool -j prog show` around a TCP
//! iperf3 while the tracer runs with a matching and with a non-matching filter.
//!
//! Design note: the sysctl is switched on by a guard that writes the previous value back on
//! drop (also on error). The tracer's programs are told apart from anybody else's by id: we
//! list every program id before starting the tracer and only count programs with one of our
//! names whose id is new. run_time_ns / run_cnt are differences between a snapshot taken once
//! the tracer is ready and one taken right after iperf3, so loading and attaching are not
//! counted. Instances of the same program (one per node) are summed. With stats on, the
//! kernel adds two clock reads per program run, so these numbers are slightly pessimistic.
//!
//! Next to them, each tc program of the running tracer is run [`TEST_RUN_REPEAT`] times with
//! `BPF_PROG_TEST_RUN` (`bpftool prog run`) on two synthetic frames carrying the benchmark
//! pods' TCP packet, alone and inside VXLAN, with statistics switched off meanwhile, and an
//! empty program just before on the same frame (`floor`): the program's own cost is the
//! difference, free of the traffic's noise, of bpf_stats' clock reads and of the test run's
//! own loop. With the matching filter each run emits an event; the repeat count
//! keeps them well inside the ring buffer. A verdict other than `TC_ACT_UNSPEC` is an error.

use std::{collections::HashSet, process::Command, time::Duration};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{
    floor::EmptyProgram,
    procs::run_capture,
    report::{CostRun, ProgCost, Proto, TestRunCost},
    throughput::{self, Env, MISS_FILTER},
    Plan,
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Runs per synthetic frame and program: with the matching filter each emits a 96-byte record,
/// and 5,000 of them (480 KB) stay below the quarter of the default 4 MiB ring from which the
/// programs force a wakeup (20,000 crossed it, and each run then paid for the wakeup: the
/// figure grew four- to tenfold).
pub const TEST_RUN_REPEAT: u32 = 5_000;
/// `TC_ACT_UNSPEC` (-1) as bpftool prints the return value.
const TC_ACT_UNSPEC: &str = "4294967295";

/// Names of the tracer's programs (bpftool shows at most 15 characters; these fit).
pub const TRACER_PROGRAMS: &[&str] = &[
    "hop_ingress",
    "hop_egress",
    "hop_ingress_l3",
    "hop_egress_l3",
    "kfree_skb_btf",
    "kfree_skb_tp",
    "fib_lookup",
    "fib_lookup_btf",
    "nat_dev_queue",
];

/// Turns BPF run-time statistics on; restores the previous value on drop.
struct StatsOn {
    previous: String,
}

impl StatsOn {
    fn enable() -> Result<StatsOn> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(StatsOn { previous })
    }
}

impl StatsOn {
    /// Runs `f` with statistics off (they cost two clock reads per program run, which would
    /// count in a synthetic-frame measurement), then turns them back on.
    fn paused<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        std::fs::write(STATS_SYSCTL, "0")
            .with_context(|| format!("writing 0 to {STATS_SYSCTL}"))?;
        let out = f();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        out
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "warning: could not restore kernel.bpf_stats_enabled={}: {e}",
                self.previous
            );
        }
    }
}

/// One program as `bpftool -j prog show` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgInfo {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

pub fn parse_prog_show(json: &str) -> Result<Vec<ProgInfo>> {
    let v: Value = serde_json::from_str(json).context("bpftool -j prog show: not JSON")?;
    let arr = v
        .as_array()
        .context("bpftool -j prog show: not a JSON array")?;
    Ok(arr
        .iter()
        .filter_map(|p| {
            Some(ProgInfo {
                id: p["id"].as_u64()?,
                name: p["name"].as_str().unwrap_or("").to_string(),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
                run_cnt: p["run_cnt"].as_u64().unwrap_or(0),
            })
        })
        .collect())
}

fn prog_show() -> Result<Vec<ProgInfo>> {
    let out = run_capture(
        "bpftool",
        Command::new("bpftool").args(["-j", "prog", "show"]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            out.status,
            super::procs::last_lines(&out.stderr, 3)
        );
    }
    parse_prog_show(&out.stdout.join("\n"))
}

/// Per name: the difference `after - before` of the programs in `after` that are new (not in
/// `old_ids`) and carry one of the tracer's names, summed over instances; in
/// [`TRACER_PROGRAMS`] order.
pub fn cost_delta(
    old_ids: &HashSet<u64>,
    before: &[ProgInfo],
    after: &[ProgInfo],
) -> Vec<ProgCost> {
    let mut out: Vec<ProgCost> = Vec::new();
    for name in TRACER_PROGRAMS {
        let mut cost = ProgCost {
            name: name.to_string(),
            instances: 0,
            run_time_ns: 0,
            run_cnt: 0,
        };
        for a in after
            .iter()
            .filter(|p| p.name == *name && !old_ids.contains(&p.id))
        {
            let b = before.iter().find(|b| b.id == a.id);
            cost.instances += 1;
            cost.run_time_ns += a
                .run_time_ns
                .saturating_sub(b.map(|b| b.run_time_ns).unwrap_or(0));
            cost.run_cnt += a.run_cnt.saturating_sub(b.map(|b| b.run_cnt).unwrap_or(0));
        }
        if cost.instances > 0 {
            out.push(cost);
        }
    }
    out
}

/// Both runs (matching, then non-matching filter).
pub fn run(plan: &Plan, env: &Env) -> Result<Vec<CostRun>> {
    let stats = StatsOn::enable()?;
    let mut runs = Vec::new();
    for (label, filter) in [
        ("match", env.match_filter.clone()),
        ("miss", MISS_FILTER.to_string()),
    ] {
        let r = match one(plan, env, &filter, &stats) {
            Ok((progs, bps, test_runs)) => {
                let (test_runs, error) = match test_runs {
                    Ok(t) => (t, None),
                    Err(e) => (Vec::new(), Some(format!("BPF_PROG_TEST_RUN: {e:#}"))),
                };
                CostRun {
                    label,
                    filter,
                    progs,
                    test_runs,
                    bps,
                    error,
                }
            }
            Err(e) => CostRun {
                label,
                filter,
                progs: Vec::new(),
                test_runs: Vec::new(),
                bps: None,
                error: Some(format!("{e:#}")),
            },
        };
        eprintln!(
            "bench: program cost, {label} filter: tc average {} ns/run{}",
            r.tc_average()
                .map(|x| format!("{x:.1}"))
                .unwrap_or("-".into()),
            r.error
                .as_ref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        );
        runs.push(r);
    }
    Ok(runs)
}

/// The program costs and the TCP throughput of one run, and the synthetic-frame costs.
type OneRun = (Vec<ProgCost>, Option<f64>, Result<Vec<TestRunCost>>);

fn one(plan: &Plan, env: &Env, filter: &str, stats: &StatsOn) -> Result<OneRun> {
    let old_ids: HashSet<u64> = prog_show()?.into_iter().map(|p| p.id).collect();
    let args = throughput::tracer_cmdline("trace", env, filter, &[]);
    let tracer = throughput::start_tracer(plan, env, &args)?;
    let before = prog_show()?;
    let sample = throughput::iperf(env, Proto::Tcp, plan.seconds)?;
    let after = prog_show()?;
    let test_runs = stats.paused(|| test_run_costs(env, &old_ids, &after));
    throughput::stop_tracer(tracer)?;
    let progs = cost_delta(&old_ids, &before, &after);
    if progs.is_empty() {
        bail!(
            "no new program named {} appeared",
            TRACER_PROGRAMS.join("/")
        );
    }
    Ok((progs, sample.bps, test_runs))
}

/// An Ethernet frame with an IPv4 header (`proto`, `payload`) from `src` to `dst`.
fn ipv4_frame(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xee; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(payload);
    f
}

/// The benchmark pods' TCP packet (client to server, 64 bytes of payload) alone, and inside
/// VXLAN between the two nodes: ("tcp", frame), ("vxlan", frame).
pub fn synthetic_frames(client: [u8; 4], server: [u8; 4]) -> [(&'static str, Vec<u8>); 2] {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&43070u16.to_be_bytes());
    tcp.extend_from_slice(&5201u16.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 2, 0, 0, 0, 0, 0]);
    tcp.resize(20 + 64, 0x5a);
    let inner = ipv4_frame(client, server, 6, &tcp);
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&4789u16.to_be_bytes());
    udp.extend_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0x10, 0, 0]);
    udp.extend_from_slice(&inner);
    let vxlan = ipv4_frame([10, 10, 0, 1], [10, 10, 0, 2], 17, &udp);
    [("vxlan", vxlan), ("tcp", inner)]
}

/// ns per run from `bpftool prog run` output (`duration (average): 46ns`, or `duration: 46ns`
/// from older bpftool), after checking the program's verdict.
pub fn parse_prog_run(out: &str) -> Result<f64> {
    let ret = out
        .split("Return value: ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .context("bpftool prog run: no return value")?;
    if ret != TC_ACT_UNSPEC {
        bail!("the program returned {ret}, not TC_ACT_UNSPEC (pass-through)");
    }
    let ns = out
        .split("duration")
        .nth(1)
        .and_then(|d| d.split(':').nth(1))
        .and_then(|d| d.trim().split("ns").next())
        .context("bpftool prog run: no duration")?;
    ns.parse::<f64>()
        .with_context(|| format!("bpftool prog run: duration {ns:?}"))
}

/// The tracer's tc programs (one instance of each name) on the synthetic frames.
fn test_run_costs(
    env: &Env,
    old_ids: &HashSet<u64>,
    progs: &[ProgInfo],
) -> Result<Vec<TestRunCost>> {
    let ip = |s: &str| -> Result<[u8; 4]> {
        Ok(s.parse::<std::net::Ipv4Addr>()
            .with_context(|| format!("pod address {s}"))?
            .octets())
    };
    let mut files = Vec::new();
    for (kind, frame) in synthetic_frames(ip(&env.client_ip)?, ip(&env.server_ip)?) {
        let path = env.scratch.join(format!("frame-{kind}.bin"));
        std::fs::write(&path, &frame).with_context(|| format!("writing {}", path.display()))?;
        files.push((kind, path, frame));
    }
    // Without the floor the figures stand as they are (the program's cost plus the loop's).
    let empty = EmptyProgram::load()
        .map_err(|e| eprintln!("bench: no test-run floor: {e:#}"))
        .ok();
    let mut out = Vec::new();
    for name in ["hop_ingress", "hop_egress"] {
        let Some(p) = progs
            .iter()
            .find(|p| p.name == name && !old_ids.contains(&p.id))
        else {
            continue;
        };
        for (kind, path, frame) in &files {
            let floor_ns = empty.as_ref().and_then(|e| {
                e.test_run(frame, TEST_RUN_REPEAT)
                    .map_err(|e| eprintln!("bench: no test-run floor: {e:#}"))
                    .ok()
            });
            let id = p.id.to_string();
            let repeat = TEST_RUN_REPEAT.to_string();
            let run = run_capture(
                "bpftool prog run",
                Command::new("bpftool")
                    .args(["prog", "run", "id", &id, "data_in"])
                    .arg(path)
                    .args(["repeat", &repeat]),
                Duration::from_secs(30),
            )?;
            let text = [run.stdout.join("\n"), run.stderr.join("\n")].join("\n");
            if !run.status.success() {
                bail!("bpftool prog run id {id} failed: {}", text.trim());
            }
            out.push(TestRunCost {
                program: name.to_string(),
                frame: kind,
                repeat: TEST_RUN_REPEAT,
                ns: parse_prog_run(&text).with_context(|| format!("{name} on the {kind} frame"))?,
                floor_ns,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bpftool_prog_run_and_refuses_a_dropping_verdict() {
        let ns = parse_prog_run("Return value: 4294967295, duration (average): 46ns\n").unwrap();
        assert_eq!(ns, 46.0);
        assert_eq!(
            parse_prog_run("Return value: 4294967295, duration: 1292ns").unwrap(),
            1292.0
        );
        let err = parse_prog_run("Return value: 2, duration (average): 46ns").unwrap_err();
        assert!(format!("{err}").contains("returned 2"), "{err}");
        assert!(parse_prog_run("Error: failed to run program").is_err());
    }

    #[test]
    fn synthetic_frames_carry_the_pods_packet() {
        let [(vk, vxlan), (tk, tcp)] = synthetic_frames([10, 244, 0, 1], [10, 244, 4, 1]);
        assert_eq!((vk, tk), ("vxlan", "tcp"));
        // The TCP frame is the VXLAN frame's inner frame, behind 14 + 20 + 8 + 8 bytes.
        assert_eq!(&vxlan[50..], &tcp[..]);
        assert_eq!(&tcp[26..34], &[10, 244, 0, 1, 10, 244, 4, 1]);
        assert_eq!(u16::from_be_bytes([vxlan[36], vxlan[37]]), 4789);
        assert_eq!(vxlan[42], 0x08, "VXLAN I flag");
        assert_eq!(
            u16::from_be_bytes([vxlan[16], vxlan[17]]) as usize,
            vxlan.len() - 14,
            "outer IPv4 total length"
        );
    }

    #[test]
    fn parses_bpftool_and_counts_only_new_tracer_programs() {
        let before = parse_prog_show(
            r#"[{"id":1,"name":"hop_ingress","run_time_ns":500,"run_cnt":5},
                {"id":7,"name":"hop_ingress","run_time_ns":100,"run_cnt":1},
                {"id":8,"name":"hop_ingress","run_time_ns":0,"run_cnt":0},
                {"id":9,"name":"other"},{"type":"no id"}]"#,
        )
        .unwrap();
        assert_eq!(before.len(), 4);
        assert_eq!(before[3].run_cnt, 0);
        let after = parse_prog_show(
            r#"[{"id":1,"name":"hop_ingress","run_time_ns":9000,"run_cnt":90},
                {"id":7,"name":"hop_ingress","run_time_ns":1100,"run_cnt":11},
                {"id":8,"name":"hop_ingress","run_time_ns":2000,"run_cnt":10},
                {"id":10,"name":"fib_lookup","run_time_ns":300,"run_cnt":3},
                {"id":9,"name":"other","run_time_ns":5,"run_cnt":5}]"#,
        )
        .unwrap();
        let old: HashSet<u64> = [1, 9].into();
        let d = cost_delta(&old, &before, &after);
        assert_eq!(
            d,
            vec![
                ProgCost {
                    name: "hop_ingress".into(),
                    instances: 2,
                    run_time_ns: 3000,
                    run_cnt: 20
                },
                ProgCost {
                    name: "fib_lookup".into(),
                    instances: 1,
                    run_time_ns: 300,
                    run_cnt: 3
                },
            ]
        );
        assert_eq!(d[0].ns_per_run(), Some(150.0));
    }
}
