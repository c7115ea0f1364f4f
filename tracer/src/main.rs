//! `tracer`: eBPF dataplane tracer for Kubernetes pod networking on Calico.
//!
//! Pipeline: attach (loader) -> collect (ring buffers) -> decode (`event`) -> correlate ->
//! render. Each stage is its own module; `trace` wires them together.

mod attach;
mod correlate;
mod discover;
mod event;
mod filter;
mod netlink;
mod netns;
mod render;
mod signals;
mod topology;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tracer",
    version,
    about = "eBPF dataplane tracer for Kubernetes pod networking on Calico"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace packets hop by hop through pod veths, tunnels and uplinks.
    Trace(trace::TraceArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => trace::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
