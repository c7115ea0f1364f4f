//! Developer and CI entry points: `cargo xtask setup|build|demo|test|lab|vmlab|run`.
//!
//! `demo` and `test` are the two commands README.md gives; both install missing prerequisites
//! first (see `setup`), so they work on a fresh machine.

mod bench;
mod demo;
mod fuzz;
mod setup;

use std::{path::PathBuf, process::Command};

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install missing prerequisites (apt packages, rust-src, bpf-linker).
    Setup {
        /// Also what the VM lab needs: qemu, busybox-static, kmod, and the 6.1 and 6.12 kernels.
        #[arg(long)]
        vm: bool,
    },
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
        cmd: lab::cli::LabCmd,
    },
    /// The VM lab: every node a qemu guest of its own kernel (Debian 6.1 or 6.12).
    Vmlab {
        #[command(subcommand)]
        cmd: lab::vm::cli::VmCmd,
    },
    /// Build, then run the tracer with these arguments (e.g. on a real node).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
        Cmd::Setup { vm } => {
            setup::run(false)?;
            if vm {
                setup::vm(&lab::vm::Series::ALL, &target_dir())?;
            }
            Ok(())
        }
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
        Cmd::Lab { cmd } => lab::cli::run(cmd),
        Cmd::Vmlab { cmd } => {
            setup::run(true)?;
            let series: Vec<_> = cmd.series()?.into_iter().collect();
            setup::vm(&series, &target_dir())?;
            let lab_bin = build_lab_bin()?;
            let code = lab::vm::cli::run(cmd, &lab_bin, &target_dir())?;
            std::process::exit(code);
        }
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

/// Builds the `lab` binary (run inside VM guests to build their node) and returns its path.
pub fn build_lab_bin() -> Result<PathBuf> {
    setup::sh(
        cargo()
            .args(["build", "--package", "tracer-tests", "--bin", "lab"])
            .env("AYA_BUILD_SKIP", "1"),
        "cargo build -p tracer-tests --bin lab",
    )?;
    Ok(target_dir().join("debug/lab"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn test(extra: &[String]) -> Result<()> {
    setup::run(true)?;
    // The VM lab tests (tests/tests/vm.rs) boot both kernel series.
    setup::vm(&lab::vm::Series::ALL, &target_dir())?;
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    fn help(path: &[&str]) -> String {
        let mut cmd = Cli::command();
        let mut sub = &mut cmd;
        for name in path {
            sub = sub.find_subcommand_mut(name).expect("subcommand");
        }
        sub.render_help().to_string()
    }

    /// `lab break --help` and `demo --help` list every fault of the catalogue, in its order.
    #[test]
    fn help_lists_the_catalogues_faults() {
        Cli::command().debug_assert();
        let names: Vec<&str> = lab::Fault::ALL.map(lab::Fault::name).to_vec();
        for path in [&["lab", "break"][..], &["demo"]] {
            let help = help(path);
            let listed = help
                .split(|c: char| c.is_whitespace() || "(),".contains(c))
                .filter(|w| w.parse::<lab::Fault>().is_ok())
                .collect::<Vec<_>>();
            assert_eq!(listed, names, "{path:?}: {help}");
        }
    }
}
