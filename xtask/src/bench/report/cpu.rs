//! The fixed-load phase's results: CPU per packet and memory per configuration, the table and
//! the JSON (pure, unit-tested).
//!
//! Design note: the figure is the CPU time the whole machine spent (all CPUs, every kind:
//! user, system, softirq) divided by the packets of the flow, at one fixed offered load. The
//! added cost of a configuration is taken round by round against the baseline measured in the
//! same round (configurations alternate), and the table shows the median and the range of
//! those differences over rounds. The benchmark's own noise is the range of the baseline
//! itself over rounds: an added cost inside it is not told apart from zero.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::{median, Proto, Target};

/// One configuration at one load in one round.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// CPU time of the whole machine during the load (wall x CPUs - idle - steal), ns.
    pub busy_ns: f64,
    /// Of which (from /proc/stat, 10 ms resolution): user, system, softirq + irq, ns.
    pub user_ns: f64,
    pub system_ns: f64,
    pub softirq_ns: f64,
    /// Packets of the flow, both directions (the client pod's interface counters).
    pub packets: u64,
    /// CPU time (user + system) of the tool's own processes (tracer, tcpdumps), ns.
    pub tool_ns: Option<f64>,
    /// The tracer's resident memory at the end of the load, and its peak, KiB.
    pub rss_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// Memory of the tracer's BPF maps (memlock of its map descriptors), KiB.
    pub maps_kib: Option<u64>,
    /// The tracer's lost events, or tcpdump's "dropped by kernel".
    pub lost: Option<u64>,
    pub error: Option<String>,
}

impl CpuSample {
    pub fn ns_per_packet(&self) -> Option<f64> {
        (self.error.is_none() && self.packets > 0).then(|| self.busy_ns / self.packets as f64)
    }

    fn tool_ns_per_packet(&self) -> Option<f64> {
        let t = self.tool_ns?;
        (self.error.is_none() && self.packets > 0).then(|| t / self.packets as f64)
    }
}

/// Every round of one configuration, per load.
#[derive(Clone, Debug)]
pub struct CpuConfig {
    pub name: &'static str,
    pub label: String,
    pub command: String,
    pub tcp: Vec<CpuSample>,
    pub udp: Vec<CpuSample>,
}

impl CpuConfig {
    pub fn samples(&self, p: Proto) -> &[CpuSample] {
        match p {
            Proto::Tcp => &self.tcp,
            Proto::Udp => &self.udp,
        }
    }

    fn median_of(&self, p: Proto, f: impl Fn(&CpuSample) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.samples(p).iter().filter_map(f).collect();
        median(&v)
    }
}

/// The fixed-load phase.
#[derive(Clone, Debug, Default)]
pub struct CpuPhase {
    /// Offered loads: 64-byte UDP datagrams per second, TCP bits per second.
    pub udp_pps: u64,
    pub tcp_bps: u64,
    pub seconds: u64,
    /// Where idle time came from (`cpuidle` in µs, or `/proc/stat` in 10 ms ticks).
    pub idle_source: String,
    pub configs: Vec<CpuConfig>,
}

/// Added ns per packet of one configuration against the same round's baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct Added {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl CpuPhase {
    pub fn config(&self, name: &str) -> Option<&CpuConfig> {
        self.configs.iter().find(|c| c.name == name)
    }

    /// Round-by-round difference to the baseline, ns per packet.
    pub fn added(&self, name: &str, p: Proto) -> Option<Added> {
        let base = self.config("baseline")?.samples(p);
        let c = self.config(name)?.samples(p);
        let diffs: Vec<f64> = base
            .iter()
            .zip(c)
            .filter_map(|(b, s)| Some(s.ns_per_packet()? - b.ns_per_packet()?))
            .collect();
        Some(Added {
            median: median(&diffs)?,
            min: diffs.iter().copied().fold(f64::INFINITY, f64::min),
            max: diffs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// The benchmark's noise at one load: the range of the baseline's ns per packet over
    /// rounds (0 with one round: then nothing can be told apart, see `within_noise`).
    pub fn noise(&self, p: Proto) -> Option<f64> {
        let v: Vec<f64> = self
            .config("baseline")?
            .samples(p)
            .iter()
            .filter_map(CpuSample::ns_per_packet)
            .collect();
        if v.is_empty() {
            return None;
        }
        let (lo, hi) = v
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        Some(hi - lo)
    }

    /// Whether `name`'s added cost is within the noise of zero (needs two rounds or more).
    pub fn within_noise(&self, name: &str, p: Proto) -> Option<bool> {
        let rounds = self.config("baseline")?.samples(p).len();
        if rounds < 2 {
            return None;
        }
        Some(self.added(name, p)?.median.abs() <= self.noise(p)?)
    }

    /// Added ns per packet of `name` over tcpdump's.
    pub fn ratio_to_tcpdump(&self, name: &str, p: Proto) -> Option<f64> {
        let a = self.added(name, p)?.median;
        let t = self.added("tcpdump", p)?.median;
        (t > 0.0).then(|| a / t)
    }

    fn load(&self, p: Proto) -> String {
        match p {
            Proto::Udp => format!("UDP 64-byte at {} kpps", self.udp_pps / 1000),
            Proto::Tcp => format!("TCP at {} Mbit/s", self.tcp_bps / 1_000_000),
        }
    }
}

fn cell(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// The phase as text.
pub fn render(c: &CpuPhase, o: &mut String) {
    let _ = writeln!(
        o,
        "\nCPU per packet at a fixed load (n1p0 -> n2p0, {} s per run, idle time from {}): the\n\
         whole machine's CPU time / packets of the flow (both directions); added = minus the\n\
         same round's baseline (median [min..max] over rounds); tool = the tool's own processes",
        c.seconds, c.idle_source
    );
    for p in [Proto::Udp, Proto::Tcp] {
        let noise = c.noise(p);
        let _ = writeln!(
            o,
            "{}: noise (baseline range over rounds) {} ns/packet",
            c.load(p),
            cell(noise, 0)
        );
        let _ = writeln!(
            o,
            "  {:<30} {:>8} {:>22} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8}",
            "configuration",
            "ns/pkt",
            "added ns/pkt",
            "tool",
            "/tcpdump",
            "RSS MB",
            "peak",
            "maps",
            "lost"
        );
        for cfg in &c.configs {
            let added = (cfg.name != "baseline")
                .then(|| c.added(cfg.name, p))
                .flatten()
                .map(|a| format!("{:.0} [{:.0}..{:.0}]", a.median, a.min, a.max))
                .unwrap_or_else(|| "-".into());
            let mib = |f: fn(&CpuSample) -> Option<u64>| {
                cfg.median_of(p, |s| f(s).map(|k| k as f64 / 1024.0))
            };
            let lost = cfg.samples(p).iter().filter_map(|s| s.lost).max();
            let errs = cfg.samples(p).iter().filter(|s| s.error.is_some()).count();
            let mut label = cfg.label.clone();
            if errs > 0 {
                label.push_str(&format!(" [{errs} failed]"));
            }
            let ratio = match cfg.name {
                "baseline" | "tcpdump" => None,
                n => c.ratio_to_tcpdump(n, p),
            };
            let _ = writeln!(
                o,
                "  {:<30} {:>8} {:>22} {:>8} {:>9} {:>7} {:>7} {:>7} {:>8}",
                label,
                cell(cfg.median_of(p, CpuSample::ns_per_packet), 0),
                added,
                cell(cfg.median_of(p, CpuSample::tool_ns_per_packet), 0),
                cell(ratio, 2),
                cell(mib(|s| s.rss_kib), 1),
                cell(mib(|s| s.hwm_kib), 1),
                cell(mib(|s| s.maps_kib), 1),
                lost.map_or_else(|| "-".into(), |l| l.to_string()),
            );
        }
        let split: Vec<String> = c
            .configs
            .iter()
            .filter_map(|cfg| {
                let per = |f: fn(&CpuSample) -> f64| {
                    cfg.median_of(p, |s| {
                        (s.error.is_none() && s.packets > 0).then(|| f(s) / s.packets as f64)
                    })
                };
                Some(format!(
                    "{} {:.0}/{:.0}/{:.0}",
                    cfg.name,
                    per(|s| s.user_ns)?,
                    per(|s| s.system_ns)?,
                    per(|s| s.softirq_ns)?
                ))
            })
            .collect();
        let _ = writeln!(
            o,
            "  user/system/softirq ns per packet (/proc/stat): {}",
            split.join(", ")
        );
    }
}

/// The targets on the numbers of this phase.
pub fn targets(c: &CpuPhase) -> Vec<Target> {
    let mut t = Vec::new();
    for (p, pn) in [(Proto::Udp, "UDP"), (Proto::Tcp, "TCP")] {
        for (name, max) in [("trace-flow", 1.0), ("record-flow", 0.5)] {
            t.push(Target::new(
                format!("{name} adds <= {max} x tcpdump's CPU per packet, {pn}"),
                c.ratio_to_tcpdump(name, p),
                |x| format!("{x:.2} x"),
                |x| x <= max,
            ));
        }
        for name in ["filter-miss", "stats-kernel"] {
            let added = c.added(name, p).map(|a| a.median);
            t.push(Target {
                name: format!("{name} adds CPU per packet within the noise of zero, {pn}"),
                value: match (added, c.noise(p)) {
                    (Some(a), Some(n)) => format!("{a:.0} vs noise {n:.0} ns"),
                    _ => "n/a".into(),
                },
                pass: c.within_noise(name, p),
            });
        }
    }
    let one_node = c.config("trace-node1").and_then(|cfg| {
        let v: Vec<f64> = [Proto::Udp, Proto::Tcp]
            .iter()
            .flat_map(|&p| cfg.samples(p))
            .filter_map(|s| s.rss_kib.map(|k| k as f64 / 1024.0))
            .collect();
        v.into_iter().reduce(f64::max)
    });
    t.push(Target::new(
        "one-node tracer under 40 MB resident (max over loads and rounds)",
        one_node,
        |x| format!("{x:.1} MB"),
        |x| x < 40.0,
    ));
    t
}

fn samples_json(s: &[CpuSample]) -> Value {
    Value::Array(
        s.iter()
            .map(|s| {
                json!({"busy_ns": s.busy_ns, "user_ns": s.user_ns, "system_ns": s.system_ns,
                       "softirq_ns": s.softirq_ns, "packets": s.packets, "tool_ns": s.tool_ns,
                       "ns_per_packet": s.ns_per_packet(), "rss_kib": s.rss_kib,
                       "hwm_kib": s.hwm_kib, "maps_kib": s.maps_kib, "lost": s.lost,
                       "error": s.error})
            })
            .collect(),
    )
}

pub fn to_json(c: &CpuPhase) -> Value {
    let per = |p: Proto| -> Value {
        c.configs
            .iter()
            .map(|cfg| {
                let a = c.added(cfg.name, p);
                (
                    cfg.name.to_string(),
                    json!({
                        "label": cfg.label,
                        "command": cfg.command,
                        "median_ns_per_packet": cfg.median_of(p, CpuSample::ns_per_packet),
                        "added_ns_per_packet": a.as_ref().map(|a| a.median),
                        "added_range": a.as_ref().map(|a| [a.min, a.max]),
                        "within_noise": c.within_noise(cfg.name, p),
                        "samples": samples_json(cfg.samples(p)),
                    }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    json!({
        "udp_pps": c.udp_pps,
        "tcp_bps": c.tcp_bps,
        "seconds": c.seconds,
        "idle_source": c.idle_source,
        "noise_ns_per_packet": {"udp": c.noise(Proto::Udp), "tcp": c.noise(Proto::Tcp)},
        "udp": per(Proto::Udp),
        "tcp": per(Proto::Tcp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(busy_ns: f64, packets: u64) -> CpuSample {
        CpuSample {
            busy_ns,
            packets,
            ..CpuSample::default()
        }
    }

    fn cfg(name: &'static str, udp: Vec<CpuSample>) -> CpuConfig {
        CpuConfig {
            name,
            label: name.into(),
            command: String::new(),
            tcp: Vec::new(),
            udp,
        }
    }

    #[test]
    fn added_cost_is_per_round_against_the_baseline() {
        let c = CpuPhase {
            udp_pps: 30_000,
            tcp_bps: 300_000_000,
            seconds: 3,
            idle_source: "cpuidle".into(),
            configs: vec![
                cfg(
                    "baseline",
                    vec![s(1000e3, 1000), s(1100e3, 1000), s(1050e3, 1000)],
                ),
                cfg(
                    "trace-flow",
                    vec![s(1400e3, 1000), s(1600e3, 1000), s(1500e3, 1000)],
                ),
                cfg(
                    "filter-miss",
                    vec![s(1020e3, 1000), s(1080e3, 1000), s(1050e3, 1000)],
                ),
                cfg(
                    "tcpdump",
                    vec![s(1800e3, 1000), s(2000e3, 1000), s(1900e3, 1000)],
                ),
            ],
        };
        let a = c.added("trace-flow", Proto::Udp).unwrap();
        assert_eq!((a.median, a.min, a.max), (450.0, 400.0, 500.0));
        assert_eq!(c.noise(Proto::Udp), Some(100.0));
        assert_eq!(c.within_noise("filter-miss", Proto::Udp), Some(true));
        assert_eq!(c.within_noise("trace-flow", Proto::Udp), Some(false));
        // tcpdump adds 800, 900, 850: median 850.
        assert_eq!(
            c.ratio_to_tcpdump("trace-flow", Proto::Udp),
            Some(450.0 / 850.0)
        );
        // No TCP samples: nothing is claimed.
        assert_eq!(c.added("trace-flow", Proto::Tcp), None);
        let mut text = String::new();
        render(&c, &mut text);
        assert!(text.contains("450 [400..500]"), "{text}");
        let j = to_json(&c);
        assert_eq!(j["udp"]["trace-flow"]["added_ns_per_packet"], 450.0);
    }

    #[test]
    fn one_round_or_a_failed_sample_claims_nothing() {
        let mut failed = s(5000e3, 1000);
        failed.error = Some("iperf3 failed".into());
        let c = CpuPhase {
            configs: vec![
                cfg("baseline", vec![s(1000e3, 1000)]),
                cfg("stats-kernel", vec![failed]),
            ],
            ..CpuPhase::default()
        };
        assert_eq!(c.within_noise("baseline", Proto::Udp), None);
        assert_eq!(c.added("stats-kernel", Proto::Udp), None);
    }
}
