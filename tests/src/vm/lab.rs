//! [`VmLab`]: boot the guests of one run, build the lab in them, run commands, tear down.
//!
//! Design note: boot is one sequence whose every step leaves something the `VmLab` owns, so a
//! failure at any step drops a half-made `VmLab` and its `Drop` undoes exactly what exists:
//! run dir (with its `owner`: PID and start time of the driver), agent script, per-guest
//! directories, initramfs, hub, then one qemu per node, all started before any is waited for
//! (they boot in parallel, one vCPU each). Readiness is the agent's `ready` file; a qemu that
//! exits first, or no `ready` within the boot timeout, is an error carrying the console.
//! Then `lab up --node i` runs in every guest at once. Commands are jobs of the agent
//! protocol ([`super::agent`]); [`GuestProcess`] is one job, killed on drop.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::agent::{agent_script, Channel, JobResult};
use super::hub::Hub;
use super::initramfs::{self, shell_quote, InitParams};
use super::kernel::{self, Kernel, Series};
use super::qemu::{Console, GuestConfig, Qemu};
use super::VmError;
use crate::{LabSpec, Topology};

/// How long the guests get to end by themselves before SIGKILL.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long building one node in its guest may take.
const LAB_BUILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of console in error messages.
const CONSOLE_LINES: usize = 40;

/// What to boot.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The kernel series every guest runs.
    pub kernel: Series,
    /// The lab: one guest per node; guests are named after the nodes (`node1`, ...).
    pub lab: LabSpec,
    /// The `lab` binary that builds node i in guest i (`lab up --node i ...`); `None` boots
    /// bare guests (no lab: `eth0` down, no namespaces).
    pub lab_bin: Option<PathBuf>,
    /// The target dir: kernels are cached in `<target>/vmlab/kernels`, runs live in
    /// `<target>/vmlab/runs`.
    pub target_dir: PathBuf,
    /// Memory per guest.
    pub memory_mib: u32,
    /// How long a guest may take to boot.
    pub boot_timeout: Duration,
    /// Host paths that must stay visible in guests (the target dir, the workspace and the
    /// lab binary's directory always are). Commands in guests find the lab binary and the
    /// release tracer (`<target>/release`) on their `PATH`.
    pub keep_visible: Vec<PathBuf>,
}

impl VmSpec {
    /// Guests of `kernel` for `lab`, without a lab binary (set [`VmSpec::lab_bin`]).
    pub fn new(kernel: Series, lab: LabSpec) -> VmSpec {
        VmSpec {
            kernel,
            lab,
            lab_bin: None,
            target_dir: default_target_dir(),
            memory_mib: 1024,
            boot_timeout: Duration::from_secs(120),
            keep_visible: Vec::new(),
        }
    }
}

/// The workspace's target dir: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn default_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Where runs live: `<target>/vmlab/runs`.
pub fn runs_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("vmlab/runs")
}

struct Guest {
    name: String,
    qemu: Mutex<Qemu>,
    console: Console,
    chan: Channel,
    release: String,
    boot_time: Duration,
}

/// A running VM lab; dropping it shuts everything down and removes the run dir.
pub struct VmLab {
    topo: Topology,
    kernel: Kernel,
    run_dir: PathBuf,
    guests: Vec<Guest>,
    hub: Option<Hub>,
    seq: AtomicU64,
}

impl VmLab {
    /// Boot one guest per node of `spec.lab` (in parallel) and, with a lab binary, build
    /// each node in its guest. On error everything started is torn down.
    pub fn boot(spec: &VmSpec) -> Result<VmLab, VmError> {
        let topo = spec
            .lab
            .plan()
            .map_err(|e| VmError::Spec(format!("{e:#}")))?;
        let target = fs::canonicalize(&spec.target_dir)
            .map_err(|e| VmError::io(format!("target dir {}", spec.target_dir.display()), e))?;
        let kernel = kernel::cached(spec.kernel, &kernel::cache_dir(&target))?;
        let runs = runs_dir(&target);
        fs::create_dir_all(&runs)
            .map_err(|e| VmError::io(format!("create {}", runs.display()), e))?;
        clean_stale_runs(&runs);
        let run_dir = new_run_dir(&runs, &topo.prefix)?;
        let mut lab = VmLab {
            topo,
            kernel,
            run_dir,
            guests: Vec::new(),
            hub: None,
            seq: AtomicU64::new(0),
        };
        lab.start_guests(spec, &target)?;
        lab.wait_ready(spec.boot_timeout)?;
        if let Some(bin) = &spec.lab_bin {
            lab.build_lab(&spec.lab, bin)?;
        }
        Ok(lab)
    }

    fn start_guests(&mut self, spec: &VmSpec, target: &Path) -> Result<(), VmError> {
        let run = self.run_dir.clone();
        let agent = run.join("agent.sh");
        // The release tracer first: the lab binary's directory (a debug target dir) may hold a
        // tracer built without its eBPF object.
        let mut path: Vec<PathBuf> = vec![target.join("release")];
        path.extend(
            spec.lab_bin
                .as_deref()
                .and_then(Path::parent)
                .map(Path::to_owned),
        );
        let env = [(crate::cli::PREFIX_ENV, self.topo.prefix.as_str())];
        write(&agent, agent_script(&run, &path, &env).as_bytes())?;
        let shared = self.shared_dir();
        fs::create_dir_all(&shared)
            .map_err(|e| VmError::io(format!("create {}", shared.display()), e))?;
        let mut keep = vec![target.to_owned(), workspace_root()];
        keep.extend(spec.keep_visible.iter().cloned());
        if let Some(dir) = spec.lab_bin.as_deref().and_then(Path::parent) {
            keep.push(dir.to_owned());
        }
        let keep = keep
            .into_iter()
            .map(|p| fs::canonicalize(&p).unwrap_or(p))
            .collect();
        let initrd = run.join("initramfs.cpio");
        let params = InitParams {
            release: self.kernel.release.clone(),
            modules_dir: self.kernel.modules_dir(),
            modules: Vec::new(),
            keep,
            run_dir: run.clone(),
            agent,
        };
        initramfs::build(&self.kernel, params, &initrd)?;
        let (hub, ends) = Hub::start(self.topo.nodes.len())
            .map_err(|e| VmError::io("start the underlay hub", e))?;
        self.hub = Some(hub);
        for (i, (node, end)) in self.topo.nodes.iter().zip(ends).enumerate() {
            let chan = Channel::new(&run, &node.name);
            chan.create()
                .map_err(|e| VmError::io(format!("create the directory of {}", node.name), e))?;
            let config = GuestConfig {
                vmlinuz: self.kernel.vmlinuz(),
                initramfs: initrd.clone(),
                run_dir: run.clone(),
                memory_mib: spec.memory_mib,
                mac: guest_mac(i + 1),
                net_fd: end.as_raw_fd(),
                cmdline: vec![
                    format!("vmlab_node={}", node.name),
                    format!("vmlab_host={}", node.netns),
                ],
            };
            let qemu = Qemu::start(&config, end, &node.name)?;
            self.guests.push(Guest {
                name: node.name.clone(),
                console: qemu.console().clone(),
                qemu: Mutex::new(qemu),
                chan,
                release: String::new(),
                boot_time: Duration::ZERO,
            });
        }
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), VmError> {
        let start = Instant::now();
        loop {
            let mut waiting = None;
            for g in &mut self.guests {
                if !g.release.is_empty() {
                    continue;
                }
                if let Some(r) = g.chan.ready() {
                    g.release = r;
                    g.boot_time = start.elapsed();
                    continue;
                }
                let exited = g.qemu.lock().unwrap_or_else(|e| e.into_inner()).exited();
                if let Some(status) = exited {
                    return Err(VmError::Boot {
                        node: g.name.clone(),
                        reason: format!("qemu exited ({status}) before the agent started"),
                        console: g.console.tail(CONSOLE_LINES),
                    });
                }
                waiting.get_or_insert(g.name.clone());
            }
            let Some(node) = waiting else {
                return Ok(());
            };
            if start.elapsed() > timeout {
                let console = self.console_tail(&node);
                return Err(VmError::Boot {
                    node,
                    reason: format!("no agent after {} s", timeout.as_secs()),
                    console,
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn build_lab(&self, spec: &LabSpec, bin: &Path) -> Result<(), VmError> {
        let results: Vec<Result<(), VmError>> = thread::scope(|s| {
            let handles: Vec<_> = (1..=self.guests.len())
                .map(|i| {
                    s.spawn(move || {
                        let node = &self.guests[i - 1].name;
                        let argv = crate::cli::up_node_args(spec, i);
                        let cmd = std::iter::once(bin.to_string_lossy().into_owned())
                            .chain(argv)
                            .map(|a| shell_quote(&a))
                            .collect::<Vec<_>>()
                            .join(" ");
                        let out = self.exec(node, &cmd, LAB_BUILD_TIMEOUT)?;
                        if out.status.success() {
                            return Ok(());
                        }
                        Err(VmError::LabBuild {
                            node: node.clone(),
                            code: out.status.code().unwrap_or(-1),
                            stderr: format!(
                                "{}{}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr)
                            ),
                        })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        results.into_iter().collect()
    }

    /// The lab's plan (every node and pod; node i is guest i).
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The kernel the guests run.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Guest names (the node names), in node order.
    pub fn nodes(&self) -> Vec<&str> {
        self.guests.iter().map(|g| g.name.as_str()).collect()
    }

    /// The run dir (shared read-write with every guest, at the same path in the guests).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// A directory for files exchanged with the guests: `<run dir>/shared`, the same path on
    /// the host and in every guest, written through at once both ways.
    pub fn shared_dir(&self) -> PathBuf {
        self.run_dir.join("shared")
    }

    fn guest(&self, node: &str) -> Result<usize, VmError> {
        self.guests
            .iter()
            .position(|g| g.name == node)
            .ok_or_else(|| VmError::NoSuchNode {
                node: node.to_owned(),
                known: self.nodes().join(", "),
            })
    }

    /// `uname -r` as guest `node` reported it when its agent started.
    pub fn release(&self, node: &str) -> Result<&str, VmError> {
        Ok(&self.guests[self.guest(node)?].release)
    }

    /// How long guest `node` took from qemu's start to its agent running.
    pub fn boot_time(&self, node: &str) -> Result<Duration, VmError> {
        Ok(self.guests[self.guest(node)?].boot_time)
    }

    /// Guest `node`'s console so far (kernel messages, init and agent lines).
    pub fn console(&self, node: &str) -> Result<String, VmError> {
        Ok(self.guests[self.guest(node)?].console.text())
    }

    fn console_tail(&self, node: &str) -> String {
        self.guest(node)
            .map(|i| self.guests[i].console.tail(CONSOLE_LINES))
            .unwrap_or_default()
    }

    /// The qemu process ids.
    pub fn qemu_pids(&self) -> Vec<u32> {
        self.guests
            .iter()
            .map(|g| g.qemu.lock().unwrap_or_else(|e| e.into_inner()).pid())
            .collect()
    }

    /// Run shell command `cmd` as root in guest `node` and wait for it (killed after
    /// `timeout`, which is then an error with what it had printed).
    pub fn exec(&self, node: &str, cmd: &str, timeout: Duration) -> Result<Output, VmError> {
        self.spawn(node, cmd)?.wait(timeout)
    }

    /// [`VmLab::exec`] on every guest at once; the outputs in node order.
    pub fn exec_all(&self, cmd: &str, timeout: Duration) -> Result<Vec<Output>, VmError> {
        thread::scope(|s| {
            let handles: Vec<_> = self
                .guests
                .iter()
                .map(|g| s.spawn(move || self.exec(&g.name, cmd, timeout)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Start shell command `cmd` in guest `node` in the background; the handle kills it (its
    /// whole process group) when dropped.
    pub fn spawn(&self, node: &str, cmd: &str) -> Result<GuestProcess<'_>, VmError> {
        let guest = self.guest(node)?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        self.guests[guest]
            .chan
            .submit(&id, cmd)
            .map_err(|e| VmError::io(format!("submit a command to {node}"), e))?;
        Ok(GuestProcess {
            lab: self,
            guest,
            id,
            cmd: cmd.to_owned(),
            done: false,
        })
    }

    fn gone(&self, guest: usize) -> Option<ExitStatus> {
        self.guests[guest]
            .qemu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .exited()
    }

    /// Shut every guest down and remove the run dir (what dropping does), reporting guests
    /// that had to be killed.
    pub fn shutdown(mut self) -> Result<(), VmError> {
        let killed = self.teardown();
        if killed.is_empty() {
            Ok(())
        } else {
            Err(VmError::Host(format!(
                "guests {} did not end within {} s of the shutdown request and were killed",
                killed.join(", "),
                SHUTDOWN_GRACE.as_secs()
            )))
        }
    }

    /// Returns the guests that had to be killed.
    fn teardown(&mut self) -> Vec<String> {
        for (i, g) in self.guests.iter().enumerate() {
            if self.gone(i).is_none() {
                let _ = g.chan.shutdown();
            }
        }
        let start = Instant::now();
        while (0..self.guests.len()).any(|i| self.gone(i).is_none())
            && start.elapsed() < SHUTDOWN_GRACE
        {
            thread::sleep(Duration::from_millis(20));
        }
        let mut killed = Vec::new();
        for (i, g) in self.guests.iter().enumerate() {
            if self.gone(i).is_none() {
                killed.push(g.name.clone());
            }
            g.qemu.lock().unwrap_or_else(|e| e.into_inner()).kill();
        }
        self.guests.clear();
        self.hub = None;
        if let Err(e) = fs::remove_dir_all(&self.run_dir) {
            if e.kind() != io::ErrorKind::NotFound {
                eprintln!("warning: remove {}: {e}", self.run_dir.display());
            }
        }
        killed
    }
}

impl Drop for VmLab {
    fn drop(&mut self) {
        if !self.run_dir.as_os_str().is_empty() {
            self.teardown();
        }
    }
}

/// A command running in a guest; killed (its process group) when dropped unfinished.
pub struct GuestProcess<'a> {
    lab: &'a VmLab,
    guest: usize,
    id: String,
    cmd: String,
    done: bool,
}

impl GuestProcess<'_> {
    fn chan(&self) -> &Channel {
        &self.lab.guests[self.guest].chan
    }

    fn node(&self) -> &str {
        &self.lab.guests[self.guest].name
    }

    /// Whether it has ended.
    pub fn finished(&self) -> bool {
        self.done || self.chan().status(&self.id).is_some()
    }

    /// What it has printed so far (stdout, stderr).
    pub fn output_so_far(&self) -> (String, String) {
        let (o, e) = self.chan().output(&self.id);
        (
            String::from_utf8_lossy(&o).into_owned(),
            String::from_utf8_lossy(&e).into_owned(),
        )
    }

    /// Wait for it to end; after `timeout` it is killed and that is an error.
    pub fn wait(mut self, timeout: Duration) -> Result<Output, VmError> {
        let start = Instant::now();
        loop {
            if let Some(r) = self.chan().take(&self.id) {
                self.done = true;
                return Ok(output(r));
            }
            if let Some(status) = self.lab.gone(self.guest) {
                self.done = true;
                return Err(VmError::GuestGone {
                    node: self.node().to_owned(),
                    status: status.to_string(),
                    cmd: self.cmd.clone(),
                    console: self.lab.guests[self.guest].console.tail(CONSOLE_LINES),
                });
            }
            if start.elapsed() > timeout {
                let r = self.stop();
                let (stdout, stderr) = r.map(|r| (r.stdout, r.stderr)).unwrap_or_default();
                return Err(VmError::Timeout {
                    node: self.node().to_owned(),
                    cmd: self.cmd.clone(),
                    timeout_s: timeout.as_secs(),
                    stdout: String::from_utf8_lossy(&stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&stderr).into_owned(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kill it (SIGKILL to its process group) and return what it had printed; its status is
    /// its own if it had ended, else 137.
    pub fn kill(mut self) -> Result<Output, VmError> {
        match self.stop() {
            Some(r) => Ok(output(r)),
            None => Err(VmError::Host(format!(
                "`{}` on {} did not confirm its kill",
                self.cmd,
                self.node()
            ))),
        }
    }

    fn stop(&mut self) -> Option<JobResult> {
        self.done = true;
        if let Some(r) = self.chan().take(&self.id) {
            return Some(r);
        }
        let _ = self.chan().kill(&self.id);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) && self.lab.gone(self.guest).is_none() {
            if let Some(r) = self.chan().take(&self.id) {
                return Some(r);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for GuestProcess<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stop();
        }
    }
}

fn output(r: JobResult) -> Output {
    Output {
        status: ExitStatus::from_raw((r.code & 0xff) << 8),
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

/// MAC of guest i's `eth0` (qemu's 52:54:00 prefix, "vm", the node number).
pub fn guest_mac(i: usize) -> String {
    format!("52:54:00:76:6d:{:02x}", i & 0xff)
}

fn write(path: &Path, data: &[u8]) -> Result<(), VmError> {
    fs::write(path, data).map_err(|e| VmError::io(format!("write {}", path.display()), e))
}

/// Start time of process `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// `<runs>/<prefix>-<pid>-<n>`, created, with its `owner` file.
fn new_run_dir(runs: &Path, prefix: &str) -> Result<PathBuf, VmError> {
    let pid = std::process::id();
    let started = start_time(pid).unwrap_or(0);
    for n in 0.. {
        let dir = runs.join(format!("{prefix}-{pid}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                write(&dir.join("owner"), format!("{pid} {started}\n").as_bytes())?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VmError::io(format!("create {}", dir.display()), e)),
        }
    }
    unreachable!("an unbounded range")
}

/// Whether the driver that owns run dir `dir` is gone.
fn owner_gone(dir: &Path) -> bool {
    let Ok(owner) = fs::read_to_string(dir.join("owner")) else {
        // Created but never owned (a driver killed in between), or not a run dir: only
        // removed once old enough not to be a run being created right now.
        return fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60));
    };
    let mut words = owner.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (words.next().flatten(), words.next().flatten()) {
        (Some(pid), Some(started)) => u32::try_from(pid)
            .ok()
            .and_then(start_time)
            .is_none_or(|t| t != started),
        _ => true,
    }
}

/// qemu processes whose command line mentions `run_dir` (the ones of that run).
pub fn qemu_processes(run_dir: &Path) -> Vec<u32> {
    let needle = run_dir.to_string_lossy().into_owned();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with(super::qemu::QEMU) && c.contains(&needle)
            })
        })
        .collect()
}

/// Remove the run dirs under `runs` whose driver is gone (killed before it could clean up),
/// SIGKILLing any qemu still running for them; returns how many were removed.
pub fn clean_stale_runs(runs: &Path) -> usize {
    let Ok(entries) = fs::read_dir(runs) else {
        return 0;
    };
    let mut removed = 0;
    for dir in entries.filter_map(|e| Some(e.ok()?.path())) {
        if !dir.is_dir() || !owner_gone(&dir) {
            continue;
        }
        for pid in qemu_processes(&dir) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_distinct_and_local_to_qemu() {
        assert_eq!(guest_mac(1), "52:54:00:76:6d:01");
        assert_ne!(guest_mac(1), guest_mac(2));
    }

    #[test]
    fn stale_runs_are_those_of_dead_drivers() {
        let runs = std::env::temp_dir().join(format!("vmlab-runs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&runs);
        fs::create_dir_all(&runs).unwrap();
        let live = new_run_dir(&runs, "t").unwrap();
        let dead = runs.join("t-dead");
        fs::create_dir(&dead).unwrap();
        // A PID that exists (ours) with another start time: reused PID, the owner is gone.
        fs::write(dead.join("owner"), format!("{} 1\n", std::process::id())).unwrap();
        let fresh = runs.join("t-being-created");
        fs::create_dir(&fresh).unwrap();
        assert!(!owner_gone(&live));
        assert!(owner_gone(&dead));
        assert!(!owner_gone(&fresh), "no owner yet, but young");
        assert_eq!(clean_stale_runs(&runs), 1);
        assert!(live.exists() && fresh.exists() && !dead.exists());
        assert_eq!(
            new_run_dir(&runs, "t")
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap(),
            format!("t-{}-1", std::process::id())
        );
        fs::remove_dir_all(&runs).unwrap();
    }

    #[test]
    fn missing_kernel_fails_saying_how_to_fetch_it() {
        let target = std::env::temp_dir().join(format!("vmlab-target-{}", std::process::id()));
        fs::create_dir_all(&target).unwrap();
        let mut spec = VmSpec::new(Series::V6_12, LabSpec::with_prefix("vmt"));
        spec.target_dir = target.clone();
        let err = VmLab::boot(&spec).err().expect("no kernel cached there");
        assert!(matches!(err, VmError::KernelNotCached { .. }), "{err}");
        assert!(err.to_string().contains("cargo xtask setup --vm"));
        assert!(
            !runs_dir(&target).exists(),
            "nothing created before the kernel is found"
        );
        fs::remove_dir_all(&target).unwrap();
    }
}
