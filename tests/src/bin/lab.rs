//! `lab`: the lab's command line as a binary of its own, for places without cargo or xtask:
//! VM guests run `lab up --node i ...` to build their node and `lab status --json` to
//! describe it; `lab vm ...` drives VM labs (what `cargo xtask vmlab` runs after its setup).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lab::cli::LabCmd;
use lab::vm::cli::VmCmd;

#[derive(Parser)]
#[command(name = "lab", about = "The Calico-like lab of the tracer project")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Lab(LabCmd),
    /// VM labs: every node a qemu guest of its own kernel (kernels must have been fetched by
    /// `cargo xtask setup --vm`).
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
        /// The target dir holding the kernels and runs (default: the workspace's).
        #[arg(long, global = true)]
        target_dir: Option<PathBuf>,
    },
}

fn main() {
    // Die quietly on a closed pipe (`lab status | head`), as command-line tools do.
    // SAFETY: setting a signal's disposition to its default has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let result = match Cli::parse().cmd {
        Cmd::Lab(cmd) => lab::cli::run(cmd).map(|()| 0),
        Cmd::Vm { cmd, target_dir } => std::env::current_exe()
            .map_err(anyhow::Error::from)
            .and_then(|me| {
                let target = target_dir.unwrap_or_else(lab::vm::default_target_dir);
                lab::vm::cli::run(cmd, &me, &target)
            }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("lab: {e:#}");
            std::process::exit(1);
        }
    }
}
