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
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use tracer_common::{
    filter::FilterProgram, CTR_AGG_MAP_FULL, CTR_DROP_READ_ERR, CTR_FILTERED, CTR_MALFORMED,
    CTR_NOT_IPV4, CTR_RINGBUF_FULL, CTR_SAMPLED_OUT, EVENT_HOP, EVENT_HOP_BYTES, MODE_AGGREGATE,
    MODE_EVENTS, N_COUNTERS,
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
/// Ring buffer per load, MiB. The programs wake the tracer when a quarter (1 MiB, ~11k hop
/// records) is waiting; the other three quarters take 30 ms of records at 1 M/s (a two-node
/// 64-byte UDP flood traced at six hops) while the drain is scheduled.
pub const DEFAULT_RINGBUF_MIB: u32 = 4;
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
    /// Ring buffer size in MiB (power of two; default 4, 16 with `--snaplen`): one ring for
    /// every traced node and the hooks. A record wakes the tracer once a quarter of it is
    /// waiting, so the ring only has to absorb what arrives while the drain is being
    /// scheduled (see README, Memory).
    #[arg(long, value_name = "MIB")]
    pub ringbuf_mib: Option<u32>,
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
    /// Packet bytes every hop and drop carries (`record --snaplen`; 0: none).
    #[arg(skip)]
    pub snaplen: u32,
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
            ringbuf_mib: None,
            no_drops: false,
            sample: 1,
            drop_hook: HookChoice::Auto,
            fib_hook: HookChoice::Auto,
            no_rcu_expedite: false,
            tc_attach: TcAttach::Auto,
            snaplen: 0,
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
    /// Every load writes to one ring buffer (read through the first node's load); its
    /// records are told apart by kind and namespace.
    shared_ring: bool,
    /// Node index of each traced namespace (inode), for the shared ring's hop records.
    node_of_netns: std::collections::HashMap<u32, usize>,
    node_names: Vec<String>,
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
        // Records with packet bytes take up to 3.75 times the room of plain ones.
        let ringbuf_mib = cap.ringbuf_mib.unwrap_or(if cap.snaplen > 0 {
            4 * DEFAULT_RINGBUF_MIB
        } else {
            DEFAULT_RINGBUF_MIB
        });
        if !ringbuf_mib.is_power_of_two() {
            anyhow::bail!("--ringbuf-mib must be a power of two (got {})", ringbuf_mib);
        }
        preflight()?;
        // Before any thread exists: unshare(CLONE_NEWNS) refuses multi-threaded callers. The
        // private bpffs holds the maps every namespace's programs share: the ring buffer, the
        // aggregation state, and with a filter the flows it follows through NAT.
        let follow_nat = !(filter.is_match_all() || cap.no_drops || kernel_agg);
        let pins = match attach::private_bpffs() {
            Ok(dir) => Some(dir),
            Err(e) if kernel_agg => return Err(e),
            Err(e) => {
                log::warn!(
                    "{e:#}; one ring buffer per node{}",
                    if follow_nat {
                        ", and the filter will not follow packets through NAT (hops after a \
                         translation are traced only when their own addresses match)"
                    } else {
                        ""
                    }
                );
                None
            }
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
            ringbuf_bytes: ringbuf_mib << 20,
            mode: if kernel_agg {
                MODE_AGGREGATE
            } else {
                MODE_EVENTS
            },
            sample_every: cap.sample,
            shared_pins: pins.as_deref(),
            tc_attach: cap.tc_attach,
            vxlan_ports: [tracer_common::VXLAN_PORT, 0, 0, 0],
            snaplen: cap.snaplen,
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
            ringbuf_bytes: ringbuf_mib << 20,
            drop_hook: cap.drop_hook,
            fib_hook: cap.fib_hook,
            vxlan_ports: opts.vxlan_ports,
            shared_pins: pins.as_deref(),
            snaplen: cap.snaplen,
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
        let (mut nodes, hooks) = (nodes?, hooks?);
        // One ring for every load: read through the first node's load only (each reader maps
        // the whole ring).
        let shared_ring = pins.is_some();
        if shared_ring {
            for n in nodes.iter_mut().skip(1) {
                n.events = None;
            }
        }
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
        let node_of_netns = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.plan.node.netns, i))
            .collect();
        let node_names = nodes.iter().map(|n| n.plan.node.name.clone()).collect();
        let mut session = Session {
            shared_ring,
            node_of_netns,
            node_names,
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
        release_startup_memory();
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
        let shared = self.shared_ring;
        for (i, node) in self.nodes.iter_mut().enumerate() {
            let Some(events) = node.events.as_mut() else {
                continue;
            };
            for _ in 0..MAX_PER_DRAIN {
                let Some(item) = events.next() else {
                    break;
                };
                n += 1;
                if !shared {
                    on_record(Source::Node(i, &self.node_names[i]), &item)?;
                    continue;
                }
                // The shared ring: hops go to their node, the rest to the hooks.
                let source = match record_origin(&item) {
                    Some((EVENT_HOP | EVENT_HOP_BYTES, netns)) => {
                        let j = self.node_of_netns.get(&netns).copied().unwrap_or(i);
                        Source::Node(j, &self.node_names[j])
                    }
                    _ => match self.hooks.as_ref() {
                        Some(h) => Source::Hooks(&h.names),
                        None => Source::Node(i, &self.node_names[i]),
                    },
                };
                on_record(source, &item)?;
            }
        }
        if let Some(hooks) = self.hooks.as_mut() {
            if let Some(events) = hooks.events.as_mut() {
                for _ in 0..MAX_PER_DRAIN {
                    let Some(item) = events.next() else {
                        break;
                    };
                    n += 1;
                    on_record(Source::Hooks(&hooks.names), &item)?;
                }
            }
        }
        Ok(n)
    }

    /// The ring buffers' wakeups, for [`DrainPacer::wait`].
    pub fn wakeups(&self) -> Wakeups {
        let nodes = self.nodes.iter().filter_map(|n| n.events.as_ref());
        let fds: Vec<RawFd> = nodes
            .chain(self.hooks.iter().filter_map(|h| h.events.as_ref()))
            .map(|e| e.as_raw_fd())
            .collect();
        Wakeups::new(&fds)
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

    /// Sleeps until the next drain is due or a ring buffer wakes the tracer (see [`Wakeups`]);
    /// false once the capture should stop.
    pub fn wait(&mut self, stop: &StopFlag, wakeups: &Wakeups) -> bool {
        loop {
            if stop.is_set() || self.deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let now = Instant::now();
            if now >= self.next_tick {
                self.next_tick = now + DRAIN_INTERVAL;
                return true;
            }
            // Short naps so that a stop request is seen within a few ms; a ring buffer filling
            // up (a quarter waiting: the programs force a wakeup) ends the nap and the wait.
            if wakeups.wait((self.next_tick - now).min(Duration::from_millis(10))) {
                self.next_tick = Instant::now();
            }
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

/// Kind and namespace of a raw record (its `EventHeader`), if it has one.
fn record_origin(item: &[u8]) -> Option<(u16, u32)> {
    let kind = u16::from_le_bytes(item.get(0..2)?.try_into().ok()?);
    let netns = u32::from_le_bytes(item.get(16..20)?.try_into().ok()?);
    Some((kind, netns))
}

/// Hands the heap that start-up used and freed (the kernel's BTF parsed for every load,
/// kallsyms, the verifier's logs: tens of MB, spread over the attach threads' malloc arenas)
/// back to the system: glibc keeps freed memory in its arenas, and a tracer runs on every
/// node of a cluster for as long as it is asked to.
fn release_startup_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The ring buffers' forced wakeups (see `WAKE_BYTES` in the eBPF maps): an epoll set of
/// their descriptors, edge-triggered. A ring buffer's descriptor polls readable whenever any
/// record waits, which would turn the timer into a drain per record; edge-triggered, epoll
/// reports only the wakeups, which the programs send once a quarter of the ring is waiting.
pub struct Wakeups {
    epoll: Option<OwnedFd>,
}

impl Wakeups {
    /// Watches `fds`; without them (or if epoll fails: the timer still drains) it just sleeps.
    pub fn new(fds: &[RawFd]) -> Wakeups {
        if fds.is_empty() {
            return Wakeups { epoll: None };
        }
        // SAFETY: plain syscall; the result is checked before it is owned.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            log::warn!(
                "epoll_create1: {}: draining on the timer only",
                std::io::Error::last_os_error()
            );
            return Wakeups { epoll: None };
        }
        // SAFETY: `epfd` is a new descriptor owned by nobody else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
        for &fd in fds {
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: fd as u64,
            };
            // SAFETY: both descriptors are open; `ev` is valid for the call.
            if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                log::warn!(
                    "epoll_ctl: {}: draining on the timer only",
                    std::io::Error::last_os_error()
                );
                return Wakeups { epoll: None };
            }
        }
        Wakeups { epoll: Some(epoll) }
    }

    /// Waits up to `timeout` for a wakeup; true if one came.
    fn wait(&self, timeout: Duration) -> bool {
        let Some(epoll) = &self.epoll else {
            std::thread::sleep(timeout);
            return false;
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let ms = epoll_timeout_ms(timeout);
        // SAFETY: `events` is valid for `events.len()` entries for the whole call.
        let n = unsafe {
            libc::epoll_wait(
                epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                ms,
            )
        };
        n > 0
    }
}

/// `timeout` in whole ms for epoll_wait, rounded up: rounded down, the last fraction of a ms
/// before every drain became a 0 ms timeout, and the pacer spun on epoll_wait until the drain
/// was due (13 ms of CPU per second for an idle tracer).
fn epoll_timeout_ms(timeout: Duration) -> i32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    i32::try_from(ms).unwrap_or(i32::MAX)
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

    #[test]
    fn epoll_timeouts_round_up_so_the_pacer_never_spins() {
        // A fraction of a ms before the drain is due must sleep, not poll.
        assert_eq!(epoll_timeout_ms(Duration::from_micros(700)), 1);
        assert_eq!(epoll_timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(epoll_timeout_ms(Duration::from_micros(10_200)), 11);
        assert_eq!(epoll_timeout_ms(Duration::from_millis(10)), 10);
        assert_eq!(epoll_timeout_ms(Duration::ZERO), 0);
        assert_eq!(epoll_timeout_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
