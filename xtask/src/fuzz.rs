//! `cargo xtask fuzz [--seconds S] [--runs N]`: the coverage-guided fuzzers of `fuzz/`
//! (cargo-fuzz, libFuzzer, nightly) on the recording reader and on the merge, each from its
//! corpus kept in the repository (`fuzz/corpus/<target>`), with allocations limited so that an
//! unbounded one is a failure. `cargo xtask test` runs both briefly; a crash leaves its input
//! in `fuzz/artifacts/<target>/` and fails the run. The kept corpus is only read: what a run
//! finds goes to `fuzz/target/new-corpus/<target>/` (fold it in with `cargo +nightly fuzz cmin
//! -O <target> corpus/<target>` after copying it over), so the working tree stays clean.

use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;

use crate::{setup, workspace_root};

/// The fuzz targets, each with a corpus directory of the same name.
pub const TARGETS: [&str; 2] = ["recording", "merge"];
/// Largest allocation a fuzz input may cause (libFuzzer's -malloc_limit_mb).
const MALLOC_LIMIT_MB: u32 = 256;

#[derive(Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target (ignored with --runs).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Inputs per target instead of a time limit.
    #[arg(long)]
    pub runs: Option<u64>,
    /// Only this target (recording or merge).
    #[arg(long)]
    pub target: Option<String>,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    setup::fuzz_prerequisites()?;
    let dir = workspace_root().join("fuzz");
    for target in TARGETS
        .iter()
        .filter(|t| args.target.as_deref().is_none_or(|w| w == **t))
    {
        let limit = match args.runs {
            Some(n) => format!("-runs={n}"),
            None => format!("-max_total_time={}", args.seconds),
        };
        eprintln!("xtask: fuzzing {target} ({limit})");
        let found = dir.join("target/new-corpus").join(target);
        std::fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        setup::sh(
            Command::new("rustup")
                .args(["run", "nightly", "cargo", "fuzz", "run", "-O", target])
                .arg(&found)
                .arg(format!("corpus/{target}"))
                .args(["--", &limit, &format!("-malloc_limit_mb={MALLOC_LIMIT_MB}")])
                .arg("-print_final_stats=1")
                .current_dir(&dir)
                // The tracer's eBPF object is not needed to fuzz user space.
                .env("AYA_BUILD_SKIP", "1"),
            &format!("cargo fuzz run {target} (a crash input is in fuzz/artifacts/{target}/)"),
        )?;
    }
    Ok(())
}
