//! Developer and CI entry points: `cargo xtask setup|build|demo|test|lab|run`.
//!
//! `demo` and `test` are the two commands README.md gives; both install missing prerequisites
//! first (see `setup`), so they work on a fresh machine.

mod bench;
mod demo;
mod fuzz;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lab::{Encap, Lab, LabSpec};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncapArg {
    Vxlan,
    None,
}

impl From<EncapArg> for Encap {
    fn from(e: EncapArg) -> Encap {
        match e {
            EncapArg::Vxlan => Encap::Vxlan,
            EncapArg::None => Encap::None,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (apt packages, rust-src, bpf-linker).
    Setup,
    /// Build the tracer (release, eBPF object embedded).
    Build,
    /// The main job: build, bring up the two-node lab, send cross-node traffic, print traces.
    Demo(demo::DemoArgs),
    /// Benchmark: throughput with and without the tracer (and tcpdump), per-program cost,
    /// user-space pipeline, start-up; a table of medians and ratios plus JSON.
    Bench(bench::BenchArgs),
    /// Run every test: formatting, clippy, unit tests, privileged lab integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Fuzz the recording reader and the merge (cargo-fuzz on nightly), from the corpus in
    /// fuzz/corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Manage the Calico-like lab.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Build, then run the tracer with these arguments (e.g. on a real node).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Create the lab (left running; remove it with `lab down`).
    Up {
        #[arg(long, value_enum, default_value = "vxlan")]
        encap: EncapArg,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        pods_per_node: usize,
        #[arg(long, default_value = "tlab")]
        prefix: String,
    },
    /// Remove every namespace of the lab (also after a half-finished `up`).
    Down {
        #[arg(long, default_value = "tlab")]
        prefix: String,
    },
    /// Break the running lab the way Calico clusters break (see `lab break --help`).
    Break {
        /// encap-never, missing-route, missing-fdb, missing-arp, underlay-blocks-vxlan,
        /// policy-drop, rp-filter, mtu, pod-cidr-overlap, wrong-tunnel-source
        fault: String,
        #[arg(long, default_value = "tlab")]
        prefix: String,
    },
    /// Undo a fault (or every active fault without an argument).
    Heal {
        fault: Option<String>,
        #[arg(long, default_value = "tlab")]
        prefix: String,
    },
    /// Print the lab's topology.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "tlab")]
        prefix: String,
    },
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run(false),
        Cmd::Build => {
            setup::run(true)?;
            build_tracer().map(|p| eprintln!("xtask: built {}", p.display()))
        }
        Cmd::Demo(args) => demo::run(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(&args),
        Cmd::Test { args } => test(&args),
        Cmd::Run { args } => {
            setup::run(true)?;
            let bin = build_tracer()?;
            let status = Command::new(bin).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Lab { cmd } => lab_cmd(cmd),
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

/// cargo of the nightly toolchain (the eBPF crate needs -Z build-std).
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .current_dir(workspace_root());
    c
}

/// Builds the release tracer binary and returns its path.
pub fn build_tracer() -> Result<PathBuf> {
    setup::sh(
        cargo().args(["build", "--release", "--package", "tracer"]),
        "cargo build --release -p tracer",
    )?;
    Ok(target_dir().join("release/tracer"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn test(extra: &[String]) -> Result<()> {
    setup::run(true)?;
    if !setup::is_root() {
        anyhow::bail!(
            "the tests attach eBPF programs and build network namespaces: run `sudo -E cargo xtask test` (as root)"
        );
    }
    setup::sh(
        cargo().args(["fmt", "--all", "--", "--check"]),
        "cargo fmt --check (run `cargo fmt --all`)",
    )?;
    let bin = build_tracer()?;
    // The host-side crates are checked and unit-tested without rebuilding the eBPF object
    // (AYA_BUILD_SKIP); the integration tests run the release binary built above.
    setup::sh(
        cargo()
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("AYA_BUILD_SKIP", "1"),
        "cargo clippy (host crates)",
    )?;
    setup::sh(
        nightly_cargo()
            .args([
                "clippy",
                "--package",
                "tracer-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(target_dir().join("ebpf-clippy"))
            .args(["--", "-D", "warnings"]),
        "cargo clippy (eBPF crate)",
    )?;
    setup::sh(
        cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "tracer-ebpf",
                "--no-fail-fast",
            ])
            .args(extra)
            .env("AYA_BUILD_SKIP", "1")
            .env("TRACER_BIN", &bin),
        "cargo test --workspace",
    )?;
    if extra.is_empty() {
        // A short run of both fuzzers from their corpus (no panic, no unbounded allocation).
        fuzz::run(&fuzz::FuzzArgs {
            seconds: 20,
            runs: None,
            target: None,
        })?;
        // The benchmark's smoke form: it must produce its table (its numbers are not judged).
        eprintln!("xtask: benchmark smoke run (cargo xtask bench --quick)");
        bench::run(bench::BenchArgs::quick())?;
    }
    Ok(())
}

fn running_lab(prefix: &str) -> Result<lab::Topology> {
    lab::status(prefix)
        .context("reading lab state")?
        .with_context(|| format!("no lab '{prefix}' is up (start one with `cargo xtask lab up`)"))
}

fn lab_cmd(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up {
            encap,
            nodes,
            pods_per_node,
            prefix,
        } => {
            let spec = LabSpec {
                prefix,
                nodes,
                pods_per_node,
                encap: encap.into(),
            };
            let started = std::time::Instant::now();
            let lab = Lab::up(&spec)?;
            let topo = lab.keep();
            eprintln!(
                "xtask: lab '{}' up in {:.1} s: {} nodes, {} pods ({}); `cargo xtask lab status` shows it",
                topo.prefix,
                started.elapsed().as_secs_f64(),
                topo.nodes.len(),
                topo.pods.len(),
                spec.encap,
            );
            Ok(())
        }
        LabCmd::Down { prefix } => {
            let n = lab::down_prefix(&prefix)?;
            eprintln!("xtask: removed {n} namespaces of lab '{prefix}'");
            Ok(())
        }
        LabCmd::Break { fault, prefix } => {
            let topo = running_lab(&prefix)?;
            let fault: lab::Fault = fault.parse()?;
            let info = lab::break_lab(&topo, fault)?;
            eprintln!("xtask: {}: {}", fault.name(), info.description);
            let p = &info.probe;
            eprintln!(
                "xtask: now failing: {} from pod {} to {}{}; try `tracer diagnose --from-netns {} ...`",
                p.proto,
                p.from_pod,
                p.to,
                p.port.map(|p| format!(":{p}")).unwrap_or_default(),
                topo.pod(&p.from_pod).map(|x| x.netns.as_str()).unwrap_or("?"),
            );
            Ok(())
        }
        LabCmd::Heal { fault, prefix } => {
            let topo = running_lab(&prefix)?;
            match fault {
                Some(f) => lab::heal(&topo, f.parse()?)?,
                None => lab::heal_all(&topo)?,
            }
            eprintln!("xtask: healed");
            Ok(())
        }
        LabCmd::Status { json, prefix } => {
            let Some(topo) = lab::status(&prefix).context("reading lab state")? else {
                anyhow::bail!("no lab '{prefix}' is up (start one with `cargo xtask lab up`)");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&topo)?);
            } else {
                println!("lab {} ({})", topo.prefix, topo.encap);
                for n in &topo.nodes {
                    println!(
                        "  node {:<8} netns {:<16} {} {}",
                        n.name, n.netns, n.uplink, n.ip
                    );
                }
                for p in &topo.pods {
                    println!(
                        "  pod  {:<8} netns {:<16} {} on {} via {}",
                        p.name, p.netns, p.ip, p.node, p.cali
                    );
                }
            }
            Ok(())
        }
    }
}
