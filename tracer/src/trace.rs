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
use tracer_common::{filter::FilterProgram, MODE_AGGREGATE, MODE_EVENTS};

use crate::{
    attach::{
        self, attach_node, describe, open_node, plan_node, preflight, AttachOptions, AttachedNode,
    },
    correlate::{CorrelateConfig, Trace},
    discover::NodePlan,
    filter::Filter,
    hooks::{attach_global, GlobalHooks, HookChoice, HookOptions},
    latency::ClockModel,
    netns::Netns,
    pipeline::{add_hook_counters, add_node_counters, Pipeline, PipelineConfig},
    render::LossCounters,
    signals::{self, StopFlag},
    topology::Topology,
};

const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// A drain that found at least this many records means load: the next one starts at once.
const BUSY_DRAIN: usize = 4096;
/// At most this many records per ring buffer per drain: under sustained load a ring buffer is
/// never empty, and expiry, loss checks and the stop request must still get their turn.
const MAX_PER_DRAIN: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What to capture and where: shared by `tracer trace`, `tracer stats` and `tracer record`.
#[derive(Args, Clone, Debug)]
pub struct CaptureArgs {
    /// Network namespace to trace (name in /run/netns or a path); repeat for several nodes.
    /// Without it, the current namespace is traced.
    #[arg(long = "netns", value_name = "NAME|PATH")]
    pub netns: Vec<String>,
    /// Also attach to this interface, in every traced namespace that has it (an error when
    /// none has it).
    #[arg(long = "iface", value_name = "IFNAME")]
    pub iface: Vec<String>,
    /// Flow filter, tcpdump-like: host, src/dst host, net CIDR, port, src/dst port, tcp, udp,
    /// icmp, and/or/not, parentheses. Applied in the kernel to the inner header.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Stop after this long (e.g. 10s, 500ms, 2m; plain number = seconds).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Written once every program is attached (tests start traffic only then).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Ring buffer size per node, in MiB (power of two).
    #[arg(long, default_value_t = 16, value_name = "MIB")]
    pub ringbuf_mib: u32,
    /// Only the tc hops: no drop hook, no route lookups, no encapsulation probes.
    #[arg(long)]
    pub no_drops: bool,
    /// Report one packet in N (every hop of a reported packet is reported).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_sample)]
    pub sample: u32,
    /// Which kfree_skb hook to attach (auto: tp_btf, else the classic tracepoint).
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub drop_hook: HookChoice,
    /// Which fib_table_lookup hook to attach (auto: tp_btf, else the classic tracepoint).
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub fib_hook: HookChoice,
    /// Attach and detach at the normal pace: do not expedite RCU grace periods
    /// (/sys/kernel/rcu_expedited) around batches of 16 or more tcx links.
    #[arg(long)]
    pub no_rcu_expedite: bool,
}

impl CaptureArgs {
    /// The defaults of the command line, tracing `netns` with `filter`.
    pub fn new(netns: Vec<String>, filter: Option<String>) -> CaptureArgs {
        CaptureArgs {
            netns,
            iface: Vec::new(),
            filter,
            duration: None,
            ready_file: None,
            ringbuf_mib: 16,
            no_drops: false,
            sample: 1,
            drop_hook: HookChoice::Auto,
            fib_hook: HookChoice::Auto,
            no_rcu_expedite: false,
        }
    }
}

/// How traces are assembled and printed: shared by `tracer trace` and `tracer replay`.
#[derive(Args, Clone, Debug)]
pub struct PrintArgs {
    /// Stop after this many packet traces.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// How long a packet's trace stays open after its latest hop, in ms.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub linger_ms: u64,
}

impl PrintArgs {
    /// The pipeline configuration these arguments ask for (statistics and collection off).
    pub fn pipeline_config(&self, clock: ClockModel) -> PipelineConfig {
        PipelineConfig {
            output: self.output,
            limit: self.count,
            stats: false,
            quiet: false,
            collect: false,
            kernel_agg: false,
            correlate: CorrelateConfig {
                linger_ns: self.linger_ms * 1_000_000,
                ..CorrelateConfig::default()
            },
            clock,
            filter: None,
        }
    }
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    #[command(flatten)]
    pub print: PrintArgs,
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

/// Where a drained record comes from.
pub enum Source<'a> {
    /// The tc hops of node `index` (in `Session::nodes`), named `name`.
    Node(usize, &'a str),
    /// The global hooks (drops, route lookups, probes), with the kernel's names for drops.
    Hooks(&'a crate::hooks::Names),
}

/// Everything attached for one capture: the nodes' tc programs, the global hooks, and what
/// user space knows about the nodes. Dropping it detaches everything.
pub struct Session {
    pub nodes: Vec<AttachedNode>,
    pub hooks: Option<GlobalHooks>,
    pub topology: Topology,
    /// The filter as the user wrote it, normalised (`none` when everything matches).
    pub filter_text: String,
    pub stop: StopFlag,
}

impl Session {
    /// Validates the arguments, attaches on every traced node (and the global hooks unless
    /// `--no-drops` or `kernel_agg`), and writes the ready file.
    pub fn start(cap: &CaptureArgs, kernel_agg: bool) -> Result<Session> {
        let filter = match &cap.filter {
            Some(expr) => Filter::parse(expr).map_err(|e| anyhow::anyhow!("{}", e.render(expr)))?,
            None => Filter::parse("").map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        let program: FilterProgram = filter.compile().map_err(|e| anyhow::anyhow!("{e}"))?;
        if !cap.ringbuf_mib.is_power_of_two() {
            anyhow::bail!(
                "--ringbuf-mib must be a power of two (got {})",
                cap.ringbuf_mib
            );
        }
        preflight()?;
        // Before any thread exists: unshare(CLONE_NEWNS) refuses multi-threaded callers.
        let pins = if kernel_agg {
            Some(attach::private_bpffs()?)
        } else {
            None
        };
        let stop = signals::install()?;

        let namespaces = if cap.netns.is_empty() {
            vec![Netns::current()?]
        } else {
            cap.netns
                .iter()
                .map(|n| Netns::open(n))
                .collect::<Result<Vec<_>>>()?
        };
        let opts = AttachOptions {
            extra_ifaces: &cap.iface,
            filter: &program,
            ringbuf_bytes: cap.ringbuf_mib << 20,
            mode: if kernel_agg {
                MODE_AGGREGATE
            } else {
                MODE_EVENTS
            },
            sample_every: cap.sample,
            shared_pins: pins.as_deref(),
        };
        crate::rcu::set_enabled(!cap.no_rcu_expedite);
        let started = Instant::now();
        let plans = namespaces
            .iter()
            .map(|ns| plan_node(ns, &opts).with_context(|| format!("node {}", ns.name)))
            .collect::<Result<Vec<_>>>()?;
        check_named_ifaces(&cap.iface, &plans)?;
        // Maps are created one namespace at a time (the shared aggregation maps are found or
        // pinned by whichever load comes first); the programs are then verified and attached
        // for every namespace at once, next to the global hooks: verification is CPU work and
        // the largest part of start-up.
        let opened = namespaces
            .iter()
            .zip(plans)
            .map(|(ns, plan)| {
                open_node(ns, plan, &opts).with_context(|| format!("node {}", ns.name))
            })
            .collect::<Result<Vec<_>>>()?;
        // In-kernel aggregation is for high packet rates: no per-packet route-lookup events
        // either.
        let want_hooks = !(cap.no_drops || kernel_agg);
        let netns: Vec<u32> = namespaces.iter().map(|n| n.inode).collect();
        let hook_opts = HookOptions {
            filter: &program,
            netns: &netns,
            ringbuf_bytes: cap.ringbuf_mib << 20,
            drop_hook: cap.drop_hook,
            fib_hook: cap.fib_hook,
        };
        let (nodes, hooks) = std::thread::scope(|s| {
            let hooks = want_hooks.then(|| s.spawn(|| attach_global(&hook_opts)));
            let nodes: Vec<_> = namespaces
                .iter()
                .zip(opened)
                .map(|(ns, node)| {
                    s.spawn(move || {
                        attach_node(ns, node).with_context(|| format!("node {}", ns.name))
                    })
                })
                .collect();
            let nodes = nodes
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("an attach thread panicked")))
                })
                .collect::<Result<Vec<_>>>();
            let hooks = hooks
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the hook thread panicked")))
                })
                .transpose();
            (nodes, hooks)
        });
        let (nodes, hooks) = (nodes?, hooks?);
        for node in &nodes {
            eprintln!("tracer: {}", describe(node));
        }
        if let Some(h) = &hooks {
            eprintln!("tracer: {}", h.attached.join("; "));
        }
        let filter_text = if filter.is_match_all() {
            "none".to_string()
        } else {
            filter.to_string()
        };
        eprintln!(
            "tracer: attached in {:.0} ms; filter: {filter_text}",
            started.elapsed().as_secs_f64() * 1000.0,
        );
        let topology = Topology {
            nodes: nodes.iter().map(|n| n.plan.node.clone()).collect(),
        };
        if let Some(path) = &cap.ready_file {
            std::fs::write(path, b"ready\n")
                .with_context(|| format!("writing ready file {}", path.display()))?;
        }
        Ok(Session {
            nodes,
            hooks,
            topology,
            filter_text,
            stop,
        })
    }

    /// Hands every waiting record to `on_record`, at most `MAX_PER_DRAIN` per ring buffer (under
    /// sustained load a ring buffer is never empty); returns how many. Stops at the first error.
    pub fn drain<E>(
        &mut self,
        mut on_record: impl FnMut(Source<'_>, &[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut n = 0;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            for _ in 0..MAX_PER_DRAIN {
                let Some(item) = node.events.next() else {
                    break;
                };
                n += 1;
                on_record(Source::Node(i, &node.plan.node.name), &item)?;
            }
        }
        if let Some(hooks) = self.hooks.as_mut() {
            for _ in 0..MAX_PER_DRAIN {
                let Some(item) = hooks.events.next() else {
                    break;
                };
                n += 1;
                on_record(Source::Hooks(&hooks.names), &item)?;
            }
        }
        Ok(n)
    }

    /// Events lost so far by every ring buffer of the session (ring buffer full).
    pub fn ringbuf_full(&self) -> Result<u64> {
        let mut n = 0;
        for node in &self.nodes {
            n += node.ringbuf_full()?;
        }
        if let Some(h) = &self.hooks {
            n += h.ringbuf_full()?;
        }
        Ok(n)
    }

    /// The kernel-side counters of the tracer's own losses and exclusions, summed.
    pub fn loss_counters(&self) -> Result<LossCounters> {
        let mut loss = LossCounters::default();
        for node in &self.nodes {
            add_node_counters(&mut loss, &node.counters()?);
        }
        if let Some(h) = &self.hooks {
            add_hook_counters(&mut loss, &h.counters()?);
        }
        Ok(loss)
    }
}

/// Every `--iface` must exist in at least one traced namespace (before anything is attached);
/// where only some have it, the others are named in a warning.
fn check_named_ifaces(named: &[String], plans: &[NodePlan]) -> Result<()> {
    for want in named {
        let lacking: Vec<&str> = plans
            .iter()
            .filter(|p| p.missing_ifaces.contains(want))
            .map(|p| p.node.name.as_str())
            .collect();
        match lacking.as_slice() {
            [] => {}
            [only] if plans.len() == 1 => anyhow::bail!(
                "{only}: interface '{want}' does not exist (see `ip link` in that namespace)"
            ),
            _ if lacking.len() == plans.len() => anyhow::bail!(
                "interface '{want}' does not exist in any traced namespace (see `ip link` in each)"
            ),
            some => log::warn!(
                "interface '{want}' is not in {}: attached where it exists",
                some.join(", ")
            ),
        }
    }
    Ok(())
}

/// When to drain: every `DRAIN_INTERVAL`, at once again after a busy drain, until a stop
/// request or the deadline.
pub struct DrainPacer {
    deadline: Option<Instant>,
    next_tick: Instant,
}

impl DrainPacer {
    pub fn new(duration: Option<Duration>) -> DrainPacer {
        let now = Instant::now();
        DrainPacer {
            deadline: duration.map(|d| now + d),
            next_tick: now,
        }
    }

    /// Sleeps until the next drain is due; false once the capture should stop.
    pub fn wait(&mut self, stop: &StopFlag) -> bool {
        loop {
            if stop.is_set() || self.deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + DRAIN_INTERVAL;
                return true;
            }
            // Short naps so that a stop request is seen within a few ms.
            std::thread::sleep((self.next_tick - now).min(Duration::from_millis(10)));
        }
    }

    /// A drain found `n` records: under load, drain again at once rather than let the ring
    /// buffers fill up.
    pub fn drained(&mut self, n: usize) {
        if n >= BUSY_DRAIN {
            self.next_tick = Instant::now();
        }
    }
}

/// Attaches, traces until stopped, prints, and returns the traces when `on_ready` is given
/// (it is run on a thread of its own once everything is attached).
pub fn run_session(args: TraceArgs, on_ready: Option<OnReady>) -> Result<Vec<Trace>> {
    if args.kernel_agg && !args.quiet {
        anyhow::bail!("--kernel-agg is a statistics mode: use `tracer stats --kernel-agg`");
    }
    let session = Session::start(&args.capture, args.kernel_agg)?;
    let collect = on_ready.is_some();
    let worker = on_ready.map(std::thread::spawn);
    let traces = trace_loop(&args, session, collect)?;
    if let Some(w) = worker {
        w.join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    }
    Ok(traces)
}

fn trace_loop(args: &TraceArgs, mut session: Session, collect: bool) -> Result<Vec<Trace>> {
    let cfg = PipelineConfig {
        stats: args.stats,
        quiet: args.quiet,
        collect,
        kernel_agg: args.kernel_agg,
        ..args.print.pipeline_config(ClockModel::shared_kernel())
    };
    let mut pipe = Pipeline::new(
        session.topology.clone(),
        cfg,
        BufWriter::new(io::stdout().lock()),
    );
    let mut next_report = args.interval.map(|i| Instant::now() + i);
    let mut pacer = DrainPacer::new(args.capture.duration);
    let mut losses = LossWatch::new(&session)?;
    while pacer.wait(&session.stop) {
        if let (Some(at), Some(every)) = (next_report, args.interval) {
            if Instant::now() >= at {
                write_stats(&mut pipe, &session)?;
                next_report = Some(at + every);
            }
        }
        pacer.drained(drain(&mut pipe, &mut session));
        let now = monotonic_ns();
        if let Some((from, to)) = losses.check(&session, now)? {
            pipe.tracer_loss(from, to);
        }
        if pipe.tick(now)? {
            break;
        }
    }
    // Final drain: what is already in the ring buffers, then every open trace.
    drain(&mut pipe, &mut session);
    if let Some((from, to)) = losses.check(&session, monotonic_ns())? {
        pipe.tracer_loss(from, to);
    }
    pipe.close_all()?;
    let loss = session.loss_counters()?;
    write_stats(&mut pipe, &session)?;
    // Detach before printing the summary: nothing stays attached longer than needed.
    drop(session);
    pipe.write_summary(loss)
}

/// Notices, drain by drain, when the ring buffers' lost-event counter grew.
pub struct LossWatch {
    seen: u64,
    since_ns: u64,
}

impl LossWatch {
    pub fn new(session: &Session) -> Result<LossWatch> {
        Ok(LossWatch {
            seen: session.ringbuf_full()?,
            since_ns: monotonic_ns(),
        })
    }

    /// After a drain at `now_ns`: the window since the previous drain if events were lost in
    /// it.
    pub fn check(&mut self, session: &Session, now_ns: u64) -> Result<Option<(u64, u64)>> {
        let full = session.ringbuf_full()?;
        let window = (full > self.seen).then_some((self.since_ns, now_ns));
        (self.seen, self.since_ns) = (full, now_ns);
        Ok(window)
    }
}

/// Moves every record waiting in the ring buffers into the pipeline; returns how many.
fn drain<W: Write>(pipe: &mut Pipeline<W>, session: &mut Session) -> usize {
    // The pipeline counts what it cannot decode; nothing here fails.
    let Ok(n) = session.drain(|source, item| -> Result<(), std::convert::Infallible> {
        match source {
            Source::Node(_, name) => pipe.node_record(name, item),
            Source::Hooks(names) => pipe.hook_record(item, names),
        }
        Ok(())
    });
    n
}

fn write_stats<W: Write>(pipe: &mut Pipeline<W>, session: &Session) -> Result<()> {
    let hist = match (pipe.kernel_agg(), session.nodes.first()) {
        (true, Some(first)) => Some(first.histograms()?),
        _ => None,
    };
    pipe.write_stats(hist.as_deref())
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
