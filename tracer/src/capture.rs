//! Capture: everything between the kernel and the first user-space stage, shared by `tracer
//! trace`, `tracer stats`, `tracer record` and `tracer diagnose`.
//!
//! [`Session::start`] validates the capture arguments, attaches on every traced node (tc
//! programs per namespace, the global hooks once) and writes the ready file; dropping the
//! session detaches everything. [`Session::drain`] hands every waiting ring-buffer record to
//! the caller with its [`Source`]; a pipeline (`trace`) or a recording (`record`) takes it from
//! there. [`DrainPacer`] says when to drain and [`LossWatch`] notices, drain by drain, when the
//! ring buffers lost events.
//!
//! Ring buffers are written with BPF_RB_NO_WAKEUP, so there is no epoll wakeup per event: a
//! 50 ms timer drains them (see PLATFORM.md for what per-event wakeups cost), at once again
//! after a busy drain.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use tracer_common::{
    filter::FilterProgram, CTR_AGG_MAP_FULL, CTR_DROP_READ_ERR, CTR_FILTERED, CTR_MALFORMED,
    CTR_NOT_IPV4, CTR_RINGBUF_FULL, CTR_SAMPLED_OUT, MODE_AGGREGATE, MODE_EVENTS, N_COUNTERS,
};

use crate::{
    attach::{
        self, attach_node, describe, open_node, plan_node, preflight, AttachOptions, AttachedNode,
        TcAttach,
    },
    discover::NodePlan,
    filter::Filter,
    follow::Follower,
    hooks::{attach_global, GlobalHooks, HookChoice, HookOptions},
    machine::monotonic_ns,
    model::{LinkChange, LossCounters},
    names::KernelNames,
    netns::Netns,
    pods,
    signals::{self, StopFlag},
    state::{read::read_node, NodeState},
    topology::{Node, Topology},
    verdict::StateSource,
};

const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// A drain that found at least this many records means load: the next one starts at once.
const BUSY_DRAIN: usize = 4096;
/// At most this many records per ring buffer per drain: under sustained load a ring buffer is
/// never empty, and expiry, loss checks and the stop request must still get their turn.
const MAX_PER_DRAIN: usize = 65_536;

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
    /// How to attach the tc programs: tcx links where the kernel has them (auto), only tcx,
    /// or clsact filters through netlink (what kernels before 6.6 get; first in line, removed
    /// at exit, and removed by the next start when a killed tracer left them).
    #[arg(long, value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,
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
            tc_attach: TcAttach::Auto,
        }
    }
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

/// Where a drained record comes from.
pub enum Source<'a> {
    /// The tc hops of node `index` (in `Session::nodes`), named `name`.
    Node(usize, &'a str),
    /// The global hooks (drops, route lookups, probes), with the kernel's names for drops.
    Hooks(&'a KernelNames),
}

/// What the kernel counted for one loaded program while `kernel.bpf_stats_enabled` was on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    /// The node whose interfaces it is attached to; `""` for the global hooks.
    pub node: String,
    pub program: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Everything attached for one capture: the nodes' tc programs, the global hooks, and what
/// user space knows about the nodes. Dropping it detaches everything.
/// The traced nodes' namespaces, to read their state again (see `verdict::Evidence`).
pub struct LiveStates {
    nodes: Vec<Netns>,
}

impl StateSource for LiveStates {
    fn read(&mut self, netns: u32) -> Option<NodeState> {
        let ns = self.nodes.iter().find(|n| n.inode == netns)?;
        let name = ns.name.clone();
        ns.run(move || Ok(read_node(&name))).ok()
    }
}

pub struct Session {
    pub nodes: Vec<AttachedNode>,
    pub hooks: Option<GlobalHooks>,
    pub topology: Topology,
    /// The filter as the user wrote it, normalised (`none` when everything matches).
    pub filter_text: String,
    pub stop: StopFlag,
    /// The traced namespaces, in node order, and their link monitors (pods that come and go).
    namespaces: Vec<Netns>,
    follower: Follower,
    /// Every traced node's state as read before the ready file was written (none with
    /// `kernel_agg`), so that no packet sent once the tracer is ready dies before it: the
    /// firewall counters a verdict compares start from there.
    initial_states: Vec<NodeState>,
}

impl Session {
    /// Validates the arguments, attaches on every traced node (and the global hooks unless
    /// `--no-drops` or `kernel_agg`), reads the nodes' state (unless `kernel_agg`), and writes
    /// the ready file.
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
        // Before any thread exists: unshare(CLONE_NEWNS) refuses multi-threaded callers. The
        // private bpffs holds the maps every namespace's programs share: the aggregation
        // state, and with a filter the flows it follows through NAT.
        let follow_nat = !(filter.is_match_all() || cap.no_drops || kernel_agg);
        let pins = if kernel_agg || follow_nat {
            match attach::private_bpffs() {
                Ok(dir) => Some(dir),
                Err(e) if !kernel_agg => {
                    log::warn!(
                        "{e:#}; the filter will not follow packets through NAT (hops after a \
                         translation are traced only when their own addresses match)"
                    );
                    None
                }
                Err(e) => return Err(e),
            }
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
        // Subscribed before discovery: a pod veth created meanwhile is either found or
        // announced.
        let follower = Follower::start(&namespaces);
        let mut opts = AttachOptions {
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
            tc_attach: cap.tc_attach,
            vxlan_ports: [tracer_common::VXLAN_PORT, 0, 0, 0],
        };
        crate::rcu::set_enabled(!cap.no_rcu_expedite);
        let started = Instant::now();
        let plans = namespaces
            .iter()
            .map(|ns| plan_node(ns, &opts).with_context(|| format!("node {}", ns.name)))
            .collect::<Result<Vec<_>>>()?;
        check_named_ifaces(&cap.iface, &plans)?;
        opts.vxlan_ports = attach::vxlan_ports(plans.iter().map(|p| p.vxlan_port));
        // In-kernel aggregation is for high packet rates: no per-packet route-lookup events
        // either.
        let want_hooks = !(cap.no_drops || kernel_agg);
        // The pods' namespaces: drops inside a pod (its gateway's ARP unanswered, no route in
        // the pod) belong to its traces. Only the drop hook looks at them.
        let pods: Vec<Node> = if want_hooks {
            namespaces
                .iter()
                .zip(&plans)
                .flat_map(|(ns, plan)| pods::find(ns, &plan.node))
                .collect()
        } else {
            Vec::new()
        };
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
        let netns: Vec<u32> = namespaces
            .iter()
            .map(|n| n.inode)
            .chain(pods.iter().map(|p| p.netns))
            .collect();
        let hook_opts = HookOptions {
            filter: &program,
            netns: &netns,
            ringbuf_bytes: cap.ringbuf_mib << 20,
            drop_hook: cap.drop_hook,
            fib_hook: cap.fib_hook,
            vxlan_ports: opts.vxlan_ports,
            shared_pins: pins.as_deref(),
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
        if !pods.is_empty() {
            eprintln!(
                "tracer: drops inside {} pod namespace{} traced too",
                pods.len(),
                if pods.len() == 1 { "" } else { "s" }
            );
        }
        let mut topology = Topology {
            nodes: nodes.iter().map(|n| n.plan.node.clone()).collect(),
            pods,
        };
        // The encapsulation probes' hops are on pseudo-interfaces of every node.
        if let Some(h) = &hooks {
            for node in &mut topology.nodes {
                node.ifaces.extend(h.probes.ifaces());
            }
        }
        let mut session = Session {
            nodes,
            hooks,
            topology,
            filter_text,
            stop,
            namespaces,
            follower,
            initial_states: Vec::new(),
        };
        if !kernel_agg {
            session.initial_states = session.read_states();
        }
        if let Some(path) = &cap.ready_file {
            std::fs::write(path, b"ready\n")
                .with_context(|| format!("writing ready file {}", path.display()))?;
        }
        Ok(session)
    }

    /// Follows the pods that came and went since the last call (see `follow`): attaches to
    /// the new pod veths, releases the old ones, and returns the changes by node index (the
    /// session's topology is updated).
    pub fn follow_links(&mut self) -> Vec<(usize, LinkChange)> {
        let changes = self.follower.poll(&mut self.nodes, &self.namespaces);
        for (i, c) in &changes {
            if let Some(node) = self.topology.nodes.get_mut(*i) {
                c.apply_to(node);
            }
        }
        changes
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

    /// The states read at start, before the ready file (empty with `kernel_agg`); taken once.
    pub fn take_initial_states(&mut self) -> Vec<NodeState> {
        std::mem::take(&mut self.initial_states)
    }

    /// The live state of every traced node (`crate::state`), read inside its namespace, in
    /// node order; a node that cannot be entered gets a state saying so.
    pub fn read_states(&self) -> Vec<NodeState> {
        self.namespaces
            .iter()
            .map(|ns| {
                let name = ns.name.clone();
                ns.run(move || Ok(read_node(&name)))
                    .unwrap_or_else(|e| NodeState {
                        node: ns.name.clone(),
                        unreadable: vec![format!("{e:#}")],
                        ..NodeState::default()
                    })
            })
            .collect()
    }

    /// Reads the traced nodes' state again on demand (the verdicts' evidence, live).
    pub fn state_source(&self) -> Result<LiveStates> {
        Ok(LiveStates {
            nodes: self
                .namespaces
                .iter()
                .map(Netns::try_clone)
                .collect::<Result<_>>()?,
        })
    }

    /// Run count and run time of every loaded program: each node's tc programs under the
    /// node's name, the global hooks under `""`.
    pub fn program_runs(&self) -> Vec<ProgramRuns> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| (n.plan.node.name.as_str(), n.program_runs()));
        let hooks = self.hooks.iter().map(|h| ("", h.program_runs()));
        nodes
            .chain(hooks)
            .flat_map(|(node, runs)| {
                runs.into_iter()
                    .map(move |(program, run_count, run_time_ns)| ProgramRuns {
                        node: node.to_string(),
                        program,
                        run_count,
                        run_time_ns,
                    })
            })
            .collect()
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

    /// Events the ring buffers lost since the session started (as of the last check).
    pub fn lost(&self) -> u64 {
        self.seen
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

/// Adds a node's kernel counters (`CTR_*`, summed over CPUs) to `loss`.
fn add_node_counters(loss: &mut LossCounters, c: &[u64; N_COUNTERS as usize]) {
    loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
    loss.filtered += c[CTR_FILTERED as usize];
    loss.not_ipv4 += c[CTR_NOT_IPV4 as usize];
    loss.malformed += c[CTR_MALFORMED as usize];
    loss.sampled_out += c[CTR_SAMPLED_OUT as usize];
    loss.agg_map_full += c[CTR_AGG_MAP_FULL as usize];
}

/// Adds the global hooks' kernel counters to `loss`.
fn add_hook_counters(loss: &mut LossCounters, c: &[u64; N_COUNTERS as usize]) {
    loss.ringbuf_full += c[CTR_RINGBUF_FULL as usize];
    loss.drop_read_errors += c[CTR_DROP_READ_ERR as usize];
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
