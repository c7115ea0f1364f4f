//! `tracer`: eBPF dataplane tracer for Kubernetes pod networking on Calico. The binary is the
//! command line of the library (`cli`).

fn main() -> std::process::ExitCode {
    tracer::cli::main()
}
