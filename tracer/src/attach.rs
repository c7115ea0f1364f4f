//! The loader: checks what the machine can do, loads the embedded eBPF object once per traced
//! network namespace (the namespace's inode and VXLAN port are patched in as read-only globals),
//! installs the flow filter and attaches the tc programs (tcx on >= 6.6) to every discovered
//! interface, from a thread that has entered that namespace.
//!
//! Attachments are bpf links owned by file descriptors in this process: dropping an
//! [`AttachedNode`], exiting, or being killed detaches everything; nothing is pinned.

use std::{
    collections::HashMap,
    fmt::Write as _,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::SchedClassifier,
    Ebpf, EbpfLoader,
};
use tracer_common::{
    filter::FilterProgram, CTR_RINGBUF_FULL, HIST_BUCKETS, MODE_AGGREGATE, N_COUNTERS, N_SEGMENTS,
    ROLE_ARRAY_LEN, ROLE_POD, ROLE_TUNNEL, ROLE_UPLINK,
};

use crate::{
    clsact,
    discover::{discover, AttachTarget, NodePlan},
    netns::Netns,
    rcu, tcx,
    topology::IfaceKind,
};

/// The eBPF object built by build.rs (empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-ebpf"));

/// The tc programs for interfaces with an Ethernet header (ingress, egress).
const L2_PROGRAMS: (&str, &str) = ("hop_ingress", "hop_egress");
/// The tc programs for interfaces without one (tunl0-like).
const L3_PROGRAMS: (&str, &str) = ("hop_ingress_l3", "hop_egress_l3");

/// The pair of programs that serves `target`.
fn programs_of(target: &AttachTarget) -> (&'static str, &'static str) {
    if target.l2 {
        L2_PROGRAMS
    } else {
        L3_PROGRAMS
    }
}

/// The programs some target of `targets` needs, each once. Verifying a tc program is the
/// largest part of start-up, so a node without tunl0 does not load the L3 pair.
fn programs_needed(targets: &[AttachTarget]) -> Vec<&'static str> {
    let mut out = Vec::new();
    for t in targets {
        let (ingress, egress) = programs_of(t);
        if !out.contains(&ingress) {
            out.extend([ingress, egress]);
        }
    }
    out
}

/// The embedded eBPF object.
pub fn ebpf_object() -> Result<&'static [u8]> {
    if EBPF_OBJECT.is_empty() {
        bail!("this tracer binary was built without its eBPF object (AYA_BUILD_SKIP); rebuild with `cargo build --release -p tracer`");
    }
    Ok(EBPF_OBJECT)
}

/// Checks the prerequisites that every mode needs; each failure is one line saying what to do.
pub fn preflight() -> Result<()> {
    ebpf_object()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("tracer must run as root (it needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON): run it with sudo");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): a kernel built with CONFIG_DEBUG_INFO_BTF=y is required");
    }
    raise_memlock();
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones use memcg. Raising the
/// limit may be refused (it is on some locked-down machines): warn only where it matters.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let old_kernel = aya::util::KernelVersion::current()
            .map(|v| v < aya::util::KernelVersion::new(5, 11, 0))
            .unwrap_or(false);
        if old_kernel {
            log::warn!(
                "cannot raise RLIMIT_MEMLOCK ({}); on this pre-5.11 kernel loading may fail with EPERM",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// The programs attached in one network namespace, with their maps.
pub struct AttachedNode {
    pub plan: NodePlan,
    /// This load's ring buffer; `None` when the ring is shared and another load reads it.
    pub events: Option<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// Interfaces that disappeared between discovery and attach (pods deleted meanwhile).
    pub skipped: Vec<String>,
    /// tcx links created directly (see `tcx`), by interface: closing them detaches the
    /// programs.
    tcx_links: HashMap<u32, Vec<OwnedFd>>,
    /// Whether the kernel has tcx (else programs are attached through clsact by aya).
    tcx: bool,
    /// The tc programs verified so far (a pod veth that appears later may need a pair that
    /// start-up did not load).
    loaded: Vec<&'static str>,
    /// In-kernel aggregation: interface roles live in a map that a new pod veth must join.
    aggregate: bool,
    /// Without tcx: the clsact filters this process attached, deleted on drop (netlink
    /// filters would outlive the process).
    clsact: Option<clsact::Owned>,
    /// Owns the programs (and, on kernels without tcx, their links): dropping it detaches
    /// everything.
    _ebpf: Ebpf,
}

impl AttachedNode {
    /// Sum over CPUs of each counter (`CTR_*`).
    pub fn counters(&self) -> Result<[u64; N_COUNTERS as usize]> {
        sum_counters(&self.counters)
    }

    /// Events lost so far because the ring buffer was full (one map read).
    pub fn ringbuf_full(&self) -> Result<u64> {
        ringbuf_full(&self.counters)
    }

    /// `(program, run count, run time in ns)` of each loaded program (see [`program_runs`]).
    pub fn program_runs(&self) -> Vec<(String, u64, u64)> {
        program_runs(&self._ebpf)
    }

    /// The in-kernel latency histograms (shared by every namespace), summed over CPUs:
    /// `[segment][bucket]`.
    pub fn histograms(&self) -> Result<Vec<[u64; HIST_BUCKETS]>> {
        let map = self
            ._ebpf
            .map("LAT_HIST")
            .ok_or_else(|| anyhow!("no LAT_HIST map"))?;
        let hist: PerCpuArray<&MapData, [u64; HIST_BUCKETS]> = PerCpuArray::try_from(map)?;
        let mut out = vec![[0u64; HIST_BUCKETS]; N_SEGMENTS as usize];
        for (seg, sum) in out.iter_mut().enumerate() {
            for per_cpu in hist.get(&(seg as u32), 0)?.iter() {
                for (b, n) in sum.iter_mut().zip(per_cpu.iter()) {
                    *b += n;
                }
            }
        }
        Ok(out)
    }

    pub fn links(&self) -> usize {
        self.plan.targets.len() * 2 - self.skipped.len() * 2
    }

    /// Whether `ifindex` is one of the interfaces traced here.
    pub fn traces(&self, ifindex: u32) -> bool {
        self.plan.targets.iter().any(|t| t.ifindex == ifindex)
    }

    /// Attaches to an interface that appeared after start-up (a new pod), from inside `netns`,
    /// and adds it to the node's topology.
    pub(crate) fn attach_more(&mut self, netns: &Netns, target: AttachTarget) -> Result<()> {
        let (ingress, egress) = programs_of(&target);
        for prog in [ingress, egress] {
            if !self.loaded.contains(&prog) {
                let p: &mut SchedClassifier = self
                    ._ebpf
                    .program_mut(prog)
                    .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
                    .try_into()?;
                let started = Instant::now();
                p.load()
                    .with_context(|| format!("loading tc program {prog} (verifier)"))?;
                log_verified(prog, started, p.info());
                self.loaded.push(prog);
            }
        }
        if self.aggregate && target.kind == IfaceKind::PodVeth {
            set_roles(&mut self._ebpf, &[(target.ifindex, ROLE_POD)])?;
        }
        if self.tcx {
            let fd = |prog: &str| -> Result<RawFd> {
                let p: &SchedClassifier = self
                    ._ebpf
                    .program(prog)
                    .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
                    .try_into()?;
                Ok(p.fd()?.as_fd().as_raw_fd())
            };
            let (fi, fe, ifindex) = (fd(ingress)?, fd(egress)?, target.ifindex);
            let links = netns.run(move || {
                let _expedited = rcu::expedite(2, "attaching");
                Ok(vec![
                    tcx::link_create(fi, ifindex, false)?,
                    tcx::link_create(fe, ifindex, true)?,
                ])
            })?;
            self.tcx_links.insert(target.ifindex, links);
        } else {
            let ebpf = &mut self._ebpf;
            let name = target.name.clone();
            netns.run(move || clsact::attach_pair(ebpf, &name, ingress, egress))?;
            if let Some(owned) = self.clsact.as_mut() {
                owned.add(target.ifindex);
            }
        }
        let node = &mut self.plan.node;
        node.ifaces.retain(|i| i.ifindex != target.ifindex);
        node.ifaces.push(target.iface());
        self.plan.targets.push(target);
        Ok(())
    }

    /// Lets go of an interface that disappeared (closing its links; with clsact the kernel
    /// removed the filters with the device). The topology keeps its name for what is still in
    /// flight. Returns it, if it was traced.
    pub(crate) fn release(&mut self, ifindex: u32) -> Option<AttachTarget> {
        let i = self
            .plan
            .targets
            .iter()
            .position(|t| t.ifindex == ifindex)?;
        drop(self.tcx_links.remove(&ifindex));
        if let Some(owned) = self.clsact.as_mut() {
            owned.forget(ifindex);
        }
        let target = self.plan.targets.remove(i);
        self.skipped.retain(|s| s != &target.name);
        Some(target)
    }
}

impl Drop for AttachedNode {
    /// Closes the tcx links as one batch, with expedited RCU grace periods when there are many
    /// (see `rcu`); the remaining fields (programs, maps) drop after.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.tcx_links);
        let _expedited = rcu::expedite(links.values().map(Vec::len).sum(), "detaching");
        drop(links);
    }
}

/// Logs (at info level: `RUST_LOG=info`) what the verifier did for a program just loaded:
/// the instructions it processed (the figure the 1M limit applies to) and the time it took.
pub(crate) fn log_verified(
    name: &str,
    started: Instant,
    info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match info.ok().and_then(|i| i.verified_instruction_count()) {
        Some(n) => log::info!("verified {name}: {n} instructions in {ms:.0} ms"),
        None => log::info!("verified {name} in {ms:.0} ms (the kernel does not report the count)"),
    }
}

/// Sum over CPUs of `CTR_RINGBUF_FULL` of a `COUNTERS` map.
/// `(program, run count, run time in ns)` of each loaded program of `ebpf`, from the kernel's
/// program info: counted only while `kernel.bpf_stats_enabled` is on.
pub fn program_runs(ebpf: &Ebpf) -> Vec<(String, u64, u64)> {
    ebpf.programs()
        .filter_map(|(name, p)| {
            let info = p.info().ok()?;
            let ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
            Some((name.to_string(), info.run_count(), ns))
        })
        .collect()
}

/// Bytes waiting in a ring buffer of `ringbuf_bytes` from which the programs wake user space
/// (`WAKE_BYTES`): a quarter of it, so that three quarters absorb what arrives while the
/// drain is being scheduled.
pub fn wake_bytes(ringbuf_bytes: u32) -> u64 {
    u64::from(ringbuf_bytes / 4)
}

pub fn ringbuf_full(map: &PerCpuArray<MapData, u64>) -> Result<u64> {
    Ok(map.get(&CTR_RINGBUF_FULL, 0)?.iter().sum())
}

/// Sum over CPUs of each counter (`CTR_*`) of a `COUNTERS` map.
pub fn sum_counters(map: &PerCpuArray<MapData, u64>) -> Result<[u64; N_COUNTERS as usize]> {
    let mut out = [0u64; N_COUNTERS as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(out)
}

/// Options of one attach.
pub struct AttachOptions<'a> {
    pub extra_ifaces: &'a [String],
    pub filter: &'a FilterProgram,
    pub ringbuf_bytes: u32,
    /// `MODE_*` bits: per-packet events and/or in-kernel aggregation.
    pub mode: u32,
    /// Report one packet in N.
    pub sample_every: u32,
    /// Where the maps shared by every namespace's programs (aggregation state) are pinned: a
    /// bpffs private to this process (see `private_bpffs`).
    pub shared_pins: Option<&'a Path>,
    /// How the tc programs are attached.
    pub tc_attach: TcAttach,
    /// The UDP ports that mark VXLAN: every traced node's (see [`vxlan_ports`]).
    pub vxlan_ports: [u16; 4],
    /// Packet bytes each hop carries (`--snaplen`; 0: none).
    pub snaplen: u32,
}

/// The VXLAN ports of the nodes' VXLAN devices, each once: the programs of every node know
/// them all, so a packet sent to another node's port is recognised where it arrives. More
/// than four different ports: the first four (a warning says so); any other port is still
/// recognised by its well-formed VXLAN header.
pub fn vxlan_ports(ports: impl IntoIterator<Item = u16>) -> [u16; 4] {
    let mut out = [0u16; 4];
    let mut n = 0;
    for p in ports {
        if p == 0 || out[..n].contains(&p) {
            continue;
        }
        if n == out.len() {
            log::warn!("more than 4 VXLAN ports among the traced nodes: {p} is recognised only by its header");
            continue;
        }
        out[n] = p;
        n += 1;
    }
    if n == 0 {
        out[0] = tracer_common::VXLAN_PORT;
    }
    out
}

/// How tc programs are attached (`--tc-attach`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TcAttach {
    /// tcx links where the kernel has them (6.6+), else clsact filters through netlink.
    #[default]
    Auto,
    /// Only tcx links.
    Tcx,
    /// clsact filters through netlink (what kernels before 6.6 get).
    Netlink,
}

/// Maps shared by the programs of every traced namespace when aggregating in the kernel.
const SHARED_MAPS: [&str; 2] = ["PKT_STATE", "LAT_HIST"];
/// The flows the filter follows through NAT, shared by the hooks' and the nodes' programs.
pub const NAT_FOLLOW_MAP: &str = "NAT_FOLLOW";
/// Whether the hooks have put a flow in `NAT_FOLLOW` yet (shared with it).
pub const NAT_FOLLOWING_MAP: &str = "NAT_FOLLOWING";
/// The ring buffer, shared by every load when the private bpffs exists: one ring per tracer,
/// whatever the number of nodes (each ring is mapped twice, so it is resident twice over once
/// the producer has gone round it).
pub const EVENTS_MAP: &str = "EVENTS";

/// Mounts a bpffs that only this process sees and that vanishes with it: the tracer moves to a
/// private mount namespace and mounts a fresh bpffs instance over /sys/fs/bpf there (the host's
/// /sys/fs/bpf, if any, is untouched). Maps pinned in it are shared by the per-namespace loads
/// and freed when the tracer exits, however it exits. Must run before any thread is started.
pub fn private_bpffs() -> Result<PathBuf> {
    let dir = PathBuf::from("/sys/fs/bpf");
    // SAFETY: unshare/mount with valid NUL-terminated strings; no pointers are retained.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!(
                "cannot create a private mount namespace for shared maps: {}",
                std::io::Error::last_os_error()
            );
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "cannot make mounts private: {}",
                std::io::Error::last_os_error()
            );
        }
        let bpf = c"bpf";
        let target = c"/sys/fs/bpf";
        if libc::mount(
            bpf.as_ptr(),
            target.as_ptr(),
            bpf.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "cannot mount a private bpffs on /sys/fs/bpf: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(dir)
}

/// Finds what to attach to in `netns`, leaving out the pod veths the filter cannot concern.
pub fn plan_node(netns: &Netns, opts: &AttachOptions<'_>) -> Result<NodePlan> {
    let name = netns.name.clone();
    let inode = netns.inode;
    let mut plan = netns.run(|| {
        // Filters a killed tracer left (netlink filters outlive their process): gone first.
        let stale = clsact::remove_stale()?;
        let mut plan = discover(&name, inode, opts.extra_ifaces)?;
        plan.stale_filters = stale;
        Ok(plan)
    })?;
    plan.leave_out_unconcerned_pods(opts.filter, opts.extra_ifaces);
    Ok(plan)
}

/// One namespace's eBPF object with its maps created and filled, programs not yet verified.
pub struct OpenedNode {
    plan: NodePlan,
    ebpf: Ebpf,
    mode: u32,
    tc_attach: TcAttach,
}

/// Creates the maps of `netns`'s load (and, with `shared_pins`, finds or pins the shared ones:
/// so this step runs for one namespace at a time) and fills them from `plan` and `opts`.
pub fn open_node(netns: &Netns, plan: NodePlan, opts: &AttachOptions<'_>) -> Result<OpenedNode> {
    let inode = netns.inode;
    for note in &plan.notes {
        log::warn!("{note}");
    }

    let wake = wake_bytes(opts.ringbuf_bytes);
    let mut loader = EbpfLoader::new();
    loader
        .override_global("NETNS_INO", &inode, true)
        .override_global("VXLAN_PORTS", &opts.vxlan_ports, true)
        .override_global("MODE", &opts.mode, true)
        .override_global("SAMPLE_EVERY", &opts.sample_every, true)
        .override_global("SNAPLEN", &opts.snaplen, true)
        .map_max_entries("EVENTS", opts.ringbuf_bytes)
        .override_global("WAKE_BYTES", &wake, true);
    let pins: Vec<(&str, PathBuf)> = match opts.shared_pins {
        Some(dir) if opts.mode & MODE_AGGREGATE != 0 => SHARED_MAPS
            .iter()
            .chain([&NAT_FOLLOW_MAP, &NAT_FOLLOWING_MAP, &EVENTS_MAP])
            .map(|m| (*m, dir.join(m)))
            .collect(),
        Some(dir) => [NAT_FOLLOW_MAP, NAT_FOLLOWING_MAP, EVENTS_MAP]
            .iter()
            .map(|m| (*m, dir.join(m)))
            .collect(),
        None => Vec::new(),
    };
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(ebpf_object()?)
        .context("loading the eBPF object")?;
    if opts.mode & MODE_AGGREGATE != 0 {
        let roles: Vec<(u32, u8)> = plan
            .targets
            .iter()
            .filter_map(|t| {
                let role = match t.kind {
                    IfaceKind::PodVeth => ROLE_POD,
                    IfaceKind::Vxlan | IfaceKind::Ipip => ROLE_TUNNEL,
                    IfaceKind::Uplink => ROLE_UPLINK,
                    IfaceKind::Other | IfaceKind::Function => return None,
                };
                Some((t.ifindex, role))
            })
            .collect();
        set_roles(&mut ebpf, &roles)?;
    }
    {
        let mut filter: Array<&mut MapData, FilterProgram> = Array::try_from(
            ebpf.map_mut("FILTER")
                .ok_or_else(|| anyhow!("eBPF object has no FILTER map"))?,
        )?;
        filter.set(0, opts.filter, 0)?;
    }
    Ok(OpenedNode {
        plan,
        ebpf,
        mode: opts.mode,
        tc_attach: opts.tc_attach,
    })
}

/// Gives interfaces their role for in-kernel aggregation: an array below `ROLE_ARRAY_LEN`, a
/// hash above.
fn set_roles(ebpf: &mut Ebpf, roles: &[(u32, u8)]) -> Result<()> {
    let mut by_index: Array<&mut MapData, u8> = Array::try_from(
        ebpf.map_mut("ROLE_BY_IFINDEX")
            .ok_or_else(|| anyhow!("eBPF object has no ROLE_BY_IFINDEX map"))?,
    )?;
    for &(ifindex, role) in roles.iter().filter(|(i, _)| *i < ROLE_ARRAY_LEN) {
        by_index.set(ifindex, role, 0)?;
    }
    let mut by_hash: BpfHashMap<&mut MapData, u32, u8> = BpfHashMap::try_from(
        ebpf.map_mut("ROLES")
            .ok_or_else(|| anyhow!("eBPF object has no ROLES map"))?,
    )?;
    for &(ifindex, role) in roles.iter().filter(|(i, _)| *i >= ROLE_ARRAY_LEN) {
        by_hash.insert(ifindex, role, 0)?;
    }
    Ok(())
}

/// Verifies the programs `opened` needs and attaches them in `netns`. Independent of other
/// namespaces: start-up runs it for every namespace at once (verification is CPU work).
pub fn attach_node(netns: &Netns, opened: OpenedNode) -> Result<AttachedNode> {
    let OpenedNode {
        plan,
        mut ebpf,
        mode,
        tc_attach,
    } = opened;
    let programs = programs_needed(&plan.targets);
    for &prog in &programs {
        let p: &mut SchedClassifier = ebpf
            .program_mut(prog)
            .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
            .try_into()?;
        let started = Instant::now();
        p.load()
            .with_context(|| format!("loading tc program {prog} (verifier)"))?;
        log_verified(prog, started, p.info());
    }

    let targets = plan.targets.clone();
    let expedited = rcu::expedite(targets.len() * 2, "attaching");
    let (skipped, links, mut ebpf) =
        netns.run(|| attach_targets(&netns.name, ebpf, &programs, &targets, tc_attach))?;
    drop(expedited);

    let events = Some(RingBuf::try_from(
        ebpf.take_map(EVENTS_MAP)
            .ok_or_else(|| anyhow!("eBPF object has no EVENTS map"))?,
    )?);
    let counters = PerCpuArray::try_from(
        ebpf.take_map("COUNTERS")
            .ok_or_else(|| anyhow!("eBPF object has no COUNTERS map"))?,
    )?;
    let clsact = match &links {
        Some(_) => None,
        None => {
            let mut owned = clsact::Owned::new(netns.duplicate()?);
            for t in targets.iter().filter(|t| !skipped.contains(&t.name)) {
                owned.add(t.ifindex);
            }
            Some(owned)
        }
    };
    Ok(AttachedNode {
        clsact,
        tcx: links.is_some(),
        tcx_links: links.unwrap_or_default(),
        loaded: programs,
        aggregate: mode & MODE_AGGREGATE != 0,
        plan,
        events,
        counters,
        skipped,
        _ebpf: ebpf,
    })
}

/// Attaches both directions on every target, from inside the namespace: tcx links (by
/// interface), or, where the kernel has no tcx (`None`), aya's attach (clsact + netlink).
/// Pod veths that vanished meanwhile are skipped.
type TcxLinks = Option<HashMap<u32, Vec<OwnedFd>>>;

fn attach_targets(
    node: &str,
    mut ebpf: Ebpf,
    programs: &[&'static str],
    targets: &[AttachTarget],
    how: TcAttach,
) -> Result<(Vec<String>, TcxLinks, Ebpf)> {
    let mut fds = std::collections::HashMap::new();
    for &prog in programs {
        let p: &SchedClassifier = ebpf
            .program(prog)
            .ok_or_else(|| anyhow!("eBPF object has no program {prog}"))?
            .try_into()?;
        fds.insert(prog, p.fd()?.as_fd().as_raw_fd());
    }
    let jobs: Vec<(RawFd, u32, bool)> = targets
        .iter()
        .flat_map(|t| {
            let (ingress, egress) = programs_of(t);
            [
                (fds[ingress], t.ifindex, false),
                (fds[egress], t.ifindex, true),
            ]
        })
        .collect();
    // Every pod veth of a node without uplink or tunnel may have been left out by the filter.
    let Some(&(fd0, if0, eg0)) = jobs.first() else {
        return Ok((Vec::new(), Some(HashMap::new()), ebpf));
    };
    // Probe tcx with the first job: old kernels answer EINVAL (unknown attach type).
    let first = match how {
        TcAttach::Netlink => Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
        _ => tcx::link_create(fd0, if0, eg0),
    };
    if let Err(e) = &first {
        let no_tcx = matches!(
            e.raw_os_error(),
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
        );
        if no_tcx && how == TcAttach::Tcx {
            bail!("{node}: --tc-attach tcx, but this kernel has no tcx ({e}; tcx needs 6.6)");
        }
        if no_tcx {
            if how == TcAttach::Auto {
                log::warn!("{node}: no tcx on this kernel ({e}); attaching through clsact/netlink, one interface at a time");
            }
            let mut skipped = Vec::new();
            for t in targets {
                let (ingress, egress) = programs_of(t);
                match clsact::attach_pair(&mut ebpf, &t.name, ingress, egress) {
                    Ok(()) => {}
                    Err(e) if t.kind == IfaceKind::PodVeth && !iface_exists(&t.name) => {
                        log::warn!("{node}: {} vanished before attach ({e:#}); skipped", t.name);
                        skipped.push(t.name.clone());
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok((skipped, None, ebpf));
        }
    }
    let mut results = vec![first];
    results.extend(
        jobs[1..]
            .iter()
            .map(|&(fd, ifindex, egress)| tcx::link_create(fd, ifindex, egress)),
    );
    let mut links: HashMap<u32, Vec<OwnedFd>> = HashMap::with_capacity(targets.len());
    let mut skipped = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        let t = &targets[i / 2];
        match r {
            Ok(fd) => links.entry(t.ifindex).or_default().push(fd),
            Err(e) if t.kind == IfaceKind::PodVeth && e.raw_os_error() == Some(libc::ENODEV) => {
                if !skipped.contains(&t.name) {
                    log::warn!("{node}: {} vanished before attach ({e}); skipped", t.name);
                    skipped.push(t.name.clone());
                }
            }
            Err(e) => {
                let dir = if jobs[i].2 { "egress" } else { "ingress" };
                bail!("attaching to {} {dir}: {e}", t.name);
            }
        }
    }
    Ok((skipped, Some(links), ebpf))
}

fn iface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// One line per node for stderr: what was attached where.
pub fn describe(node: &AttachedNode) -> String {
    /// Pod veths named one by one up to this many; beyond, a count and the first few.
    const LIST_PODS: usize = 8;
    let mut s = format!("{}: {} programs on", node.plan.node.name, node.links());
    let attached = node
        .plan
        .targets
        .iter()
        .filter(|t| !node.skipped.contains(&t.name));
    let (pods, infra): (Vec<_>, Vec<_>) = attached.partition(|t| t.kind == IfaceKind::PodVeth);
    for t in &infra {
        let _ = write!(s, " {}", t.name);
    }
    if pods.len() <= LIST_PODS {
        for t in &pods {
            let _ = write!(s, " {}", t.name);
        }
    } else {
        let _ = write!(s, " and {} pod veths (", pods.len());
        for t in &pods[..3] {
            let _ = write!(s, "{} ", t.name);
        }
        s.push_str("...)");
    }
    if node.plan.stale_filters.0 > 0 {
        let _ = write!(
            s,
            "; removed {} stale tc filters a killed tracer left on {}",
            node.plan.stale_filters.0,
            node.plan.stale_filters.1.join(", ")
        );
    }
    if node.plan.pods_left_out > 0 {
        let _ = write!(
            s,
            "; {} pod veths left out (the filter cannot match their pods)",
            node.plan.pods_left_out
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, kind: IfaceKind, l2: bool) -> AttachTarget {
        AttachTarget {
            ifindex: 1,
            name: name.into(),
            kind,
            l2,
        }
    }

    #[test]
    fn only_the_program_pairs_some_target_needs_are_loaded() {
        let veth = target("cali1", IfaceKind::PodVeth, true);
        let vxlan = target("vxlan.calico", IfaceKind::Vxlan, true);
        let tunl = target("tunl0", IfaceKind::Ipip, false);
        assert_eq!(
            programs_needed(&[veth.clone(), vxlan.clone()]),
            ["hop_ingress", "hop_egress"]
        );
        assert_eq!(
            programs_needed(std::slice::from_ref(&tunl)),
            ["hop_ingress_l3", "hop_egress_l3"]
        );
        assert_eq!(
            programs_needed(&[veth, tunl.clone(), vxlan, tunl.clone()]),
            [
                "hop_ingress",
                "hop_egress",
                "hop_ingress_l3",
                "hop_egress_l3"
            ]
        );
        assert!(programs_needed(&[]).is_empty());
        assert_eq!(programs_of(&tunl), L3_PROGRAMS);
    }
}
