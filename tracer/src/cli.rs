//! The command line: one subcommand per job, each a thin call into its module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{check, diagnose, pcap, pipeline_bench, record, replay, report, trace};

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
    /// Per-segment latency statistics only (no per-packet lines): `trace --stats` quietly.
    Stats(trace::TraceArgs),
    /// Write the raw kernel records to a file, to correlate later with `replay` (cheap enough
    /// for every packet of a fast flow; the file is the evidence for a report).
    Record(record::RecordArgs),
    /// Print the traces, verdicts and latency of a recording, as `trace` would have live.
    Replay(replay::ReplayArgs),
    /// Write an incident report (one HTML page, or Markdown) from one or several recordings.
    Report(report::ReportArgs),
    /// Write the packet bytes of recordings made with `record --snaplen N` as one pcap-ng file
    /// (Wireshark), each packet commented with its trace, hop and verdict.
    Pcap(pcap::PcapArgs),
    /// Send a few probes from a pod's namespace to one address, trace them, print one verdict.
    Diagnose(diagnose::DiagnoseArgs),
    /// Audit the nodes' routes, neighbours, FDB, tunnels, sysctls and firewall against each
    /// other, with no traffic (live with --netns, or from recordings).
    Check(check::CheckArgs),
    /// Benchmark of the user-space pipeline (decode + correlate + latency) on synthetic events.
    #[command(hide = true)]
    PipelineBench(pipeline_bench::PipelineBenchArgs),
}

/// Parses the command line, runs the command, and says what failed in one line.
/// Fixed malloc thresholds (glibc): start-up allocates and frees blocks of several MB (the
/// kernel's BTF parsed for every load), and glibc's default then raises its mmap and trim
/// thresholds to match, after which freed memory stays in the process for good. A tracer runs
/// on every node for as long as it is asked to: blocks over 256 KiB come from mmap and go back
/// when freed, and a heap keeps at most 1 MiB free at its top.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

pub fn main() -> ExitCode {
    tune_allocator();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Stats(mut args) => {
            args.quiet = true;
            args.stats = true;
            trace::run(args)
        }
        Command::Record(args) => record::run(args),
        Command::Replay(args) => replay::replay(args),
        Command::Report(args) => report::run(args),
        Command::Pcap(args) => pcap::run(args),
        Command::Diagnose(args) => diagnose::run(args),
        Command::Check(args) => check::run(args),
        Command::PipelineBench(args) => pipeline_bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
