//! `tracer trace`: attach on every traced node, then drain the ring buffers on a short timer,
//! decode, correlate and print traces as they complete; stop on Ctrl-C / SIGTERM, after
//! `--duration`, or after `--count` traces, and print the per-flow summary with the tracer's own
//! losses reported apart from anything the kernel did.
//!
//! Ring buffers are written with BPF_RB_NO_WAKEUP, so there is no epoll wakeup per event: a
//! 50 ms timer drains them (see PLATFORM.md for what per-event wakeups cost).

use std::{
    io::{self, BufWriter, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tracer_common::{
    filter::FilterProgram, CTR_AGG_MAP_FULL, CTR_DROP_READ_ERR, CTR_FILTERED, CTR_MALFORMED,
    CTR_NOT_IPV4, CTR_RINGBUF_FULL, CTR_SAMPLED_OUT, MODE_AGGREGATE, MODE_EVENTS, SEG_DECAP,
    SEG_ENCAP, SEG_NODE_RX, SEG_NODE_TX, SEG_SAME_NODE, SEG_TOTAL, SEG_WIRE,
};

use crate::{
    attach::{self, attach_node, describe, preflight, AttachOptions, AttachedNode},
    correlate::{CorrelateConfig, Correlator, Trace},
    event::{decode, Event},
    filter::Filter,
    hooks::{attach_global, DropHook, GlobalHooks, HookOptions},
    latency::{self, ClockModel, LatencyStats, SegmentName},
    netns::Netns,
    render::{self, LossCounters},
    signals::{self, StopFlag},
    topology::Topology,
};

const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// A drain that found at least this many records means load: the next one starts at once.
const BUSY_DRAIN: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    /// Network namespace to trace (name in /run/netns or a path); repeat for several nodes.
    /// Without it, the current namespace is traced.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    /// Also attach to this interface (in every traced namespace that has it).
    #[arg(long = "iface", value_name = "IFNAME")]
    pub iface: Vec<String>,
    /// Flow filter, tcpdump-like: host, src/dst host, net CIDR, port, src/dst port, tcp, udp,
    /// icmp, and/or/not, parentheses. Applied in the kernel to the inner header.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this many packet traces.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this long (e.g. 10s, 500ms, 2m; plain number = seconds).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Written once every program is attached (tests start traffic only then).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Ring buffer size per node, in MiB (power of two).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ringbuf_mib: u32,
    /// How long a packet's trace stays open after its latest hop, in ms.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub linger_ms: u64,
    /// Only the tc hops: no drop hook, no route lookups, no encapsulation probes.
    #[arg(long)]
    pub no_drops: bool,
    /// Keep per-segment latency histograms (node-tx, encap, wire, decap, node-rx, ...) and
    /// print count, min, p50, p90, p99, p99.9 and max per flow and in total.
    #[arg(long)]
    pub stats: bool,
    /// With --stats: also print the statistics so far every D (e.g. 5s).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// With `stats`: aggregate latency in the kernel (per-CPU log2 histograms, no event per
    /// packet) for high packet rates; per-segment totals only.
    #[arg(long)]
    pub kernel_agg: bool,
    /// Report one packet in N (every hop of a reported packet is reported).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_sample)]
    pub sample: u32,
    /// Which kfree_skb hook to attach (auto: tp_btf, else the classic tracepoint).
    #[arg(long, value_enum, default_value_t = DropHook::Auto)]
    pub drop_hook: DropHook,
    /// Attach and detach at the normal pace: do not expedite RCU grace periods
    /// (/sys/kernel/rcu_expedited) around batches of 16 or more tcx links.
    #[arg(long)]
    pub no_rcu_expedite: bool,
    /// No per-packet output (set by `tracer stats`).
    #[arg(skip)]
    pub quiet: bool,
}

/// `N` or `1/N`.
fn parse_sample(s: &str) -> Result<u32, String> {
    let n = s.strip_prefix("1/").unwrap_or(s);
    match n.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("invalid sample rate '{s}' (use N or 1/N, N >= 1)")),
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{s}' (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit '{unit}' in '{s}' (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration '{s}'"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The latency segment of an in-kernel histogram index (`SEG_*`).
fn segment_name(seg: u32) -> Option<SegmentName> {
    Some(match seg {
        SEG_NODE_TX => SegmentName::NodeTx,
        SEG_ENCAP => SegmentName::Encap,
        SEG_WIRE => SegmentName::Wire,
        SEG_DECAP => SegmentName::Decap,
        SEG_NODE_RX => SegmentName::NodeRx,
        SEG_SAME_NODE => SegmentName::SameNode,
        SEG_TOTAL => SegmentName::Total,
        _ => return None,
    })
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn run(args: TraceArgs) -> Result<()> {
    run_session(args, None).map(|_| ())
}

/// Work started once every program is attached (diagnose's probes); runs on its own thread.
pub type OnReady = Box<dyn FnOnce() + Send>;

/// Attaches, traces until stopped, prints, and returns the traces when `on_ready` is given
/// (it is run on a thread of its own once everything is attached).
pub fn run_session(args: TraceArgs, on_ready: Option<OnReady>) -> Result<Vec<Trace>> {
    let filter = match &args.filter {
        Some(expr) => Filter::parse(expr).map_err(|e| anyhow::anyhow!("{}", e.render(expr)))?,
        None => Filter::parse("").map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    let program: FilterProgram = filter.compile().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !args.ringbuf_mib.is_power_of_two() {
        anyhow::bail!(
            "--ringbuf-mib must be a power of two (got {})",
            args.ringbuf_mib
        );
    }
    preflight()?;
    if args.kernel_agg && !args.quiet {
        anyhow::bail!("--kernel-agg is a statistics mode: use `tracer stats --kernel-agg`");
    }
    // Before any thread exists: unshare(CLONE_NEWNS) refuses multi-threaded callers.
    let pins = if args.kernel_agg {
        Some(attach::private_bpffs()?)
    } else {
        None
    };
    let stop = signals::install()?;

    let namespaces = if args.netns.is_empty() {
        vec![Netns::current()?]
    } else {
        args.netns
            .iter()
            .map(|n| Netns::open(n))
            .collect::<Result<Vec<_>>>()?
    };
    let opts = AttachOptions {
        extra_ifaces: &args.iface,
        filter: &program,
        ringbuf_bytes: args.ringbuf_mib << 20,
        mode: if args.kernel_agg {
            MODE_AGGREGATE
        } else {
            MODE_EVENTS
        },
        sample_every: args.sample,
        shared_pins: pins.as_deref(),
    };
    crate::rcu::set_enabled(!args.no_rcu_expedite);
    let started = Instant::now();
    let mut nodes = Vec::new();
    for ns in &namespaces {
        let node = attach_node(ns, &opts).with_context(|| format!("node {}", ns.name))?;
        eprintln!("tracer: {}", describe(&node));
        nodes.push(node);
    }
    eprintln!(
        "tracer: attached in {:.0} ms; filter: {}",
        started.elapsed().as_secs_f64() * 1000.0,
        if filter.is_match_all() {
            "none".to_string()
        } else {
            filter.to_string()
        }
    );
    let topology = Topology {
        nodes: nodes.iter().map(|n| n.plan.node.clone()).collect(),
    };
    // In-kernel aggregation is for high packet rates: no per-packet route-lookup events either.
    let hooks = if args.no_drops || args.kernel_agg {
        None
    } else {
        let netns: Vec<u32> = namespaces.iter().map(|n| n.inode).collect();
        let hooks = attach_global(&HookOptions {
            filter: &program,
            netns: &netns,
            ringbuf_bytes: args.ringbuf_mib << 20,
            drop_hook: args.drop_hook,
        })?;
        eprintln!("tracer: {}", hooks.attached.join("; "));
        Some(hooks)
    };
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"ready\n")
            .with_context(|| format!("writing ready file {}", path.display()))?;
    }
    let collect = on_ready.is_some();
    let worker = on_ready.map(std::thread::spawn);
    let traces = trace_loop(&args, nodes, hooks, topology, &stop, collect)?;
    if let Some(w) = worker {
        w.join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    }
    Ok(traces)
}

fn trace_loop(
    args: &TraceArgs,
    mut nodes: Vec<AttachedNode>,
    mut hooks: Option<GlobalHooks>,
    topology: Topology,
    stop: &StopFlag,
    collect: bool,
) -> Result<Vec<Trace>> {
    let deadline = args.duration.map(|d| Instant::now() + d);
    let cfg = CorrelateConfig {
        linger_ns: args.linger_ms * 1_000_000,
        ..CorrelateConfig::default()
    };
    let mut pipe = Pipeline {
        correlator: Correlator::new(topology, cfg),
        out: BufWriter::new(io::stdout().lock()),
        output: args.output,
        decode_errors: 0,
        func_events: 0,
        printed: 0,
        limit: args.count,
        latency: (args.stats || args.quiet).then(|| LatencyStats::new(ClockModel::shared_kernel())),
        quiet: args.quiet,
        collected: collect.then(Vec::new),
        kernel_agg: args.kernel_agg,
    };
    let mut next_report = args.interval.map(|i| Instant::now() + i);

    let mut next_tick = Instant::now();
    loop {
        if stop.is_set() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let now = Instant::now();
        if now < next_tick {
            // Short naps so that a stop request is seen within a few ms.
            std::thread::sleep((next_tick - now).min(Duration::from_millis(10)));
            continue;
        }
        next_tick = now + DRAIN_INTERVAL;
        if let (Some(at), Some(every)) = (next_report, args.interval) {
            if now >= at {
                pipe.write_stats(&nodes)?;
                next_report = Some(at + every);
            }
        }
        let mut drained = pipe.drain(&mut nodes)?;
        if let Some(h) = hooks.as_mut() {
            drained += pipe.drain_hooks(h);
        }
        if drained >= BUSY_DRAIN {
            // Under load: drain again at once rather than let the ring buffers fill up.
            next_tick = now;
        }
        if pipe.emit_expired(monotonic_ns())? {
            break;
        }
    }
    // Final drain: what is already in the ring buffers, then every open trace.
    pipe.drain(&mut nodes)?;
    if let Some(h) = hooks.as_mut() {
        pipe.drain_hooks(h);
    }
    let rest = pipe.correlator.finish();
    pipe.emit(rest)?;

    let mut loss = LossCounters {
        decode_errors: pipe.decode_errors,
        ..LossCounters::default()
    };
    for node in &nodes {
        let c = node.counters()?;
        loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
        loss.filtered += c[CTR_FILTERED as usize];
        loss.not_ipv4 += c[CTR_NOT_IPV4 as usize];
        loss.malformed += c[CTR_MALFORMED as usize];
        loss.sampled_out += c[CTR_SAMPLED_OUT as usize];
        loss.agg_map_full += c[CTR_AGG_MAP_FULL as usize];
    }
    if let Some(h) = &hooks {
        let c = h.counters()?;
        loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
        loss.drop_read_errors += c[CTR_DROP_READ_ERR as usize];
    }
    loss.encap_probe_hits = pipe.func_events;
    pipe.write_stats(&nodes)?;
    drop(hooks);
    // Detach before printing the summary: nothing stays attached longer than needed.
    drop(nodes);
    match pipe.output {
        Output::Text => render::write_summary_text(&mut pipe.out, &pipe.correlator, &loss)?,
        Output::Json => render::write_summary_json(&mut pipe.out, &pipe.correlator, &loss)?,
    }
    pipe.out.flush()?;
    Ok(pipe.collected.take().unwrap_or_default())
}

struct Pipeline<W: Write> {
    correlator: Correlator,
    out: W,
    output: Output,
    decode_errors: u64,
    func_events: u64,
    printed: u64,
    limit: Option<u64>,
    latency: Option<LatencyStats>,
    quiet: bool,
    /// Every emitted trace, when the caller wants them back.
    collected: Option<Vec<Trace>>,
    /// Latency comes from the kernel's histograms, not from traces.
    kernel_agg: bool,
}

impl<W: Write> Pipeline<W> {
    /// Moves every record waiting in the ring buffers into the correlator; returns how many.
    fn drain(&mut self, nodes: &mut [AttachedNode]) -> Result<usize> {
        let mut n = 0;
        for node in nodes.iter_mut() {
            while let Some(item) = node.events.next() {
                n += 1;
                match decode(&item) {
                    Ok(Event::Hop(hop)) => self.correlator.push(hop),
                    Ok(other) => self.unexpected(&other),
                    Err(e) => self.decode_error(&node.plan.node.name, &e),
                }
            }
        }
        Ok(n)
    }

    /// Prints the latency statistics so far (when kept).
    fn write_stats(&mut self, nodes: &[AttachedNode]) -> Result<()> {
        if self.kernel_agg {
            if let Some(first) = nodes.first() {
                let mut stats = LatencyStats::new(ClockModel::shared_kernel());
                for (seg, buckets) in first.histograms()?.iter().enumerate() {
                    if let Some(name) = segment_name(seg as u32) {
                        stats.record_bucketed(name, None, buckets);
                    }
                }
                self.latency = Some(stats);
            }
        }
        if let Some(stats) = &self.latency {
            match self.output {
                Output::Text => latency::write_stats_text(&mut self.out, stats)?,
                Output::Json => latency::write_stats_json(&mut self.out, stats)?,
            }
            self.out.flush()?;
        }
        Ok(())
    }

    /// Moves the drop / route / probe records into the correlator; returns how many.
    fn drain_hooks(&mut self, hooks: &mut GlobalHooks) -> usize {
        let mut n = 0;
        while let Some(item) = hooks.events.next() {
            n += 1;
            match decode(&item) {
                Ok(Event::Drop(d)) => {
                    let reason = hooks.names.reason_name(d.reason);
                    let function = hooks.names.location(d.location);
                    self.correlator.push_drop(&d, &reason, function);
                }
                Ok(Event::Fib(f)) => self.correlator.push_fib(f),
                Ok(Event::Func(_)) => self.func_events += 1,
                Ok(other) => self.unexpected(&other),
                Err(e) => self.decode_error("global hooks", &e),
            }
        }
        n
    }

    fn unexpected(&mut self, ev: &Event) {
        self.decode_errors += 1;
        log::warn!("record of an unexpected kind on this ring buffer: {ev:?}");
    }

    fn decode_error(&mut self, source: &str, e: &crate::event::DecodeError) {
        self.decode_errors += 1;
        if self.decode_errors <= 5 {
            log::warn!("undecodable record from {source}: {e}");
        }
    }

    /// Prints the traces that completed; returns true once `--count` is reached.
    fn emit_expired(&mut self, now_ns: u64) -> Result<bool> {
        let traces = self.correlator.expire(now_ns);
        self.emit(traces)
    }

    fn emit(&mut self, traces: Vec<Trace>) -> Result<bool> {
        for t in traces {
            if self.limit.is_some_and(|l| self.printed >= l) {
                break;
            }
            if let Some(stats) = self.latency.as_mut() {
                stats.record(&t);
            }
            if !self.quiet {
                match self.output {
                    Output::Text => render::write_trace_text(&mut self.out, &t)?,
                    Output::Json => render::write_trace_json(&mut self.out, &t)?,
                }
            }
            self.printed += 1;
            if let Some(all) = self.collected.as_mut() {
                all.push(t);
            }
        }
        self.out.flush()?;
        Ok(self.limit.is_some_and(|l| self.printed >= l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
