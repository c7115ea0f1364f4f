//! `vmlab` subcommands (`cargo xtask vmlab ...`, `lab vm ...`): run a command on a fresh VM
//! lab, keep one up interactively, run commands in it from another terminal, list kernels.
//!
//! Design note: xtask fetches kernels and builds the `lab` binary first (it owns the setup),
//! then calls [`run`] with that binary; the `lab` binary calls [`run`] with itself, and
//! assumes the setup was done. A lab kept up by `vmlab up` is reachable from other processes
//! because the agent protocol is files in its run dir: `vmlab exec` submits jobs there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::agent::Channel;
use super::kernel::{self, Series};
use super::lab::{runs_dir, VmLab, VmSpec};
use crate::cli::EncapArg;
use crate::LabSpec;

/// What to boot.
#[derive(Clone, Debug, Args)]
pub struct VmLabArgs {
    /// Kernel series of every guest: 6.1 (Debian 12's default) or 6.12.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Guests (= lab nodes).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    #[arg(long, default_value_t = 1)]
    pub pods_per_node: usize,
    #[arg(long, value_enum, default_value = "vxlan")]
    pub encap: EncapArg,
    #[arg(long, default_value = "vmlab")]
    pub prefix: String,
    /// Boot bare guests: no lab (no addresses, no pods).
    #[arg(long)]
    pub no_lab: bool,
    /// Memory per guest.
    #[arg(long, default_value_t = 1024)]
    pub memory_mib: u32,
}

impl VmLabArgs {
    /// The kernel series asked for.
    pub fn series(&self) -> Result<Series> {
        self.kernel.parse()
    }

    fn spec(&self, lab_bin: &Path, target_dir: &Path) -> Result<VmSpec> {
        let mut spec = VmSpec::new(
            self.series()?,
            LabSpec {
                prefix: self.prefix.clone(),
                nodes: self.nodes,
                pods_per_node: self.pods_per_node,
                encap: self.encap.into(),
                services: None,
            },
        );
        spec.lab_bin = (!self.no_lab).then(|| lab_bin.to_owned());
        spec.target_dir = target_dir.to_owned();
        spec.memory_mib = self.memory_mib;
        Ok(spec)
    }
}

/// The `vmlab` subcommands.
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Boot the guests, build the lab, run CMD (a shell line) on every guest (or --node),
    /// print each guest's output, tear everything down; exits with the worst exit status.
    Run {
        #[command(flatten)]
        lab: VmLabArgs,
        /// Run only on this guest (node1, node2, ...).
        #[arg(long)]
        node: Option<String>,
        /// Seconds CMD may run.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The command, a shell line (`-- 'tracer trace ... & ping ...'`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Boot the guests, build the lab, and keep them until Ctrl-C (use `vmlab exec` meanwhile).
    Up {
        #[command(flatten)]
        lab: VmLabArgs,
    },
    /// Run CMD in a guest of a lab kept up by `vmlab up` (the newest running one by default).
    Exec {
        /// The guest (node1, node2, ...).
        node: String,
        /// The run dir of the lab (printed by `vmlab up`).
        #[arg(long)]
        run: Option<PathBuf>,
        /// Seconds CMD may run.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// List the cached kernels.
    Kernels,
}

impl VmCmd {
    /// The kernel series this command boots, if it boots any.
    pub fn series(&self) -> Result<Option<Series>> {
        match self {
            VmCmd::Run { lab, .. } | VmCmd::Up { lab } => lab.series().map(Some),
            VmCmd::Exec { .. } | VmCmd::Kernels => Ok(None),
        }
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Run a `vmlab` subcommand with `lab_bin` as the in-guest lab binary and kernels and runs
/// under `target_dir`; returns the exit code to end with.
pub fn run(cmd: VmCmd, lab_bin: &Path, target_dir: &Path) -> Result<i32> {
    match cmd {
        VmCmd::Run {
            lab,
            node,
            timeout,
            cmd,
        } => {
            let vm = boot(&lab, lab_bin, target_dir)?;
            let line = cmd.join(" ");
            let timeout = Duration::from_secs(timeout);
            let nodes: Vec<String> = match node {
                Some(n) => vec![n],
                None => vm.nodes().iter().map(|s| (*s).to_owned()).collect(),
            };
            let outputs: Vec<_> = thread::scope(|s| {
                let handles: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        let vm = &vm;
                        let line = &line;
                        s.spawn(move || vm.exec(n, line, timeout))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
            let mut worst = 0;
            for (n, out) in nodes.iter().zip(outputs) {
                let out = out?;
                let code = out.status.code().unwrap_or(1);
                worst = worst.max(code);
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "== {n} ({}) exit {code} ==", vm.release(n)?)?;
                stdout.write_all(&out.stdout)?;
                drop(stdout);
                std::io::stderr().write_all(&out.stderr)?;
            }
            let started = Instant::now();
            vm.shutdown()?;
            eprintln!("vmlab: down in {:.1} s", started.elapsed().as_secs_f64());
            Ok(worst)
        }
        VmCmd::Up { lab } => {
            let handler: extern "C" fn(libc::c_int) = on_signal;
            // SAFETY: the handler only stores to an atomic.
            unsafe {
                libc::signal(libc::SIGINT, handler as libc::sighandler_t);
                libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
            }
            let vm = boot(&lab, lab_bin, target_dir)?;
            println!("vmlab: up: run dir {}", vm.run_dir().display());
            println!(
                "vmlab: shared dir {} (same path in the guests); `cargo xtask vmlab exec {} -- CMD`; Ctrl-C ends it",
                vm.shared_dir().display(),
                vm.nodes()[0]
            );
            std::io::stdout().flush()?;
            while !STOP.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(100));
            }
            eprintln!("vmlab: shutting down");
            vm.shutdown()?;
            Ok(0)
        }
        VmCmd::Exec {
            node,
            run,
            timeout,
            cmd,
        } => {
            let run = match run {
                Some(r) => r,
                None => newest_run(&runs_dir(target_dir))?,
            };
            let chan = Channel::new(&run, &node);
            if chan.ready().is_none() {
                bail!("no running guest {node} in {}", run.display());
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let id = format!("x{}-{nanos}", std::process::id());
            chan.submit(&id, &cmd.join(" "))
                .with_context(|| format!("submit to {node} in {}", run.display()))?;
            let start = Instant::now();
            loop {
                if let Some(r) = chan.take(&id) {
                    std::io::stdout().write_all(&r.stdout)?;
                    std::io::stderr().write_all(&r.stderr)?;
                    return Ok(r.code);
                }
                if start.elapsed() > Duration::from_secs(timeout) || !run.exists() {
                    let _ = chan.kill(&id);
                    bail!(
                        "`{}` on {node} did not finish within {timeout} s",
                        cmd.join(" ")
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        VmCmd::Kernels => {
            let cache = kernel::cache_dir(target_dir);
            for s in Series::ALL {
                match kernel::cached(s, &cache) {
                    Ok(k) => println!("{s:<5} {} {}", k.release, k.root.display()),
                    Err(e) => println!("{s:<5} -  ({e})"),
                }
            }
            Ok(0)
        }
    }
}

fn boot(args: &VmLabArgs, lab_bin: &Path, target_dir: &Path) -> Result<VmLab> {
    let spec = args.spec(lab_bin, target_dir)?;
    let started = Instant::now();
    let vm = VmLab::boot(&spec)?;
    let boots: Vec<String> = vm
        .nodes()
        .iter()
        .map(|n| {
            let t = vm.boot_time(n).unwrap_or_default();
            format!("{n} {:.1} s", t.as_secs_f64())
        })
        .collect();
    eprintln!(
        "vmlab: {} guests of {} up{} in {:.1} s (boot: {})",
        vm.nodes().len(),
        vm.kernel().release,
        if spec.lab_bin.is_some() {
            format!(" with lab '{}' ({})", spec.lab.prefix, spec.lab.encap)
        } else {
            String::new()
        },
        started.elapsed().as_secs_f64(),
        boots.join(", ")
    );
    Ok(vm)
}

/// The newest run dir under `runs` whose guests are up.
fn newest_run(runs: &Path) -> Result<PathBuf> {
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(runs)
        .with_context(|| {
            format!(
                "no VM lab runs in {} (start one with `vmlab up`)",
                runs.display()
            )
        })?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let t = std::fs::metadata(p.join("owner")).ok()?.modified().ok()?;
            Some((t, p))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, p)| p).with_context(|| {
        format!(
            "no VM lab is up in {} (start one with `vmlab up`)",
            runs.display()
        )
    })
}
