//! Prometheus metrics: `tracer trace|stats|record --metrics-addr ADDR` serves OpenMetrics on
//! `http://ADDR/metrics` while it captures.
//!
//! What is exported (names and labels in `families`, spelled once): kernel drops by node,
//! interface and reason; verdicts by name; traces by outcome; per-segment latency histograms;
//! traced packets and bytes per node; the tracer's own losses by cause (the run summary's
//! "tracer lost" line, never mixed with kernel drops); each loaded program's run count and run
//! time (the kernel's program info, counted while `kernel.bpf_stats_enabled` is on). With
//! `stats --kernel-agg` there is no trace per packet: the latency histograms are then the
//! kernel's (`kernel_agg`), and the families that count traces stay at 0.
//!
//! Design notes:
//! - **The pipeline does not know Prometheus.** It calls a [`crate::pipeline::Observer`] for
//!   every emitted trace and every undecodable record; [`observer::TraceCounter`] is that
//!   observer. What only the capture knows (the kernel's loss counters, program info) is read
//!   by the command's loop through [`Exporter::refresh`], at most once a second.
//! - **Bounded cardinality.** No label carries a packet, an address or a port. Nodes are the
//!   traced namespaces; interfaces appear only on drops, capped at
//!   [`families::MAX_DROP_SERIES`] series (beyond: `interface="other"`); reasons are the
//!   kernel's drop-reason names; verdicts, outcomes, segments and loss causes are fixed sets;
//!   programs are the tracer's own.
//! - **Scrapes never hold up tracing.** The endpoint runs on its own thread (`server`). The
//!   pipeline updates atomics through handles it keeps; a family's lock is taken for writing
//!   only when a series is created, and a histogram's lock for one observation or while one
//!   scrape formats that one histogram (microseconds).
//! - **Bind first, serve later.** The address is bound before anything is attached (a port in
//!   use is a one-line error, with nothing attached and no time lost); its thread starts once
//!   the capture has started, since the capture's start-up wants to be the only thread
//!   (signal mask, a private mount namespace for `--kernel-agg`).
//! - `tracer record` copies records without correlating them; with `--metrics-addr` it also
//!   feeds them to a pipeline that prints nothing (`Tap`), so a recorder's metrics are those
//!   `tracer stats` would give, at that pipeline's cost.

mod families;
mod kernel_agg;
mod observer;
mod server;
mod tap;

use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use clap::Args;
use prometheus_client::registry::Registry;

pub use observer::TraceCounter;
pub use tap::Tap;

use crate::capture::Session;
use families::Families;
use kernel_agg::KernelLatency;
use observer::KernelReadings;
use server::{parse_addr, Server, DEFAULT_ADDR};

/// How often the kernel's counters are read into the metrics.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `--metrics-addr`, shared by `trace`, `stats` and `record`.
#[derive(Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (OpenMetrics) on http://ADDR/metrics: PORT, :PORT or
    /// localhost:PORT listen on 127.0.0.1 only, like the flag alone (127.0.0.1:9474);
    /// another address (0.0.0.0:PORT, [::]:PORT) only when written out.
    #[arg(
        long,
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = DEFAULT_ADDR,
        value_parser = parse_addr
    )]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Listens on the address, when one was asked for: call it before anything is attached
    /// (a port in use fails at once), and [`Listening::serve`] once the capture has started
    /// (its thread must come after the capture's own start-up, which wants a single thread).
    pub fn bind(&self) -> Result<Option<Listening>> {
        self.metrics_addr
            .map(|addr| {
                let listener = server::bind(addr)?;
                eprintln!(
                    "tracer: metrics on http://{}/metrics",
                    listener.local_addr()?
                );
                Ok(Listening { listener })
            })
            .transpose()
    }
}

/// A bound metrics address, not served yet.
pub struct Listening {
    listener: TcpListener,
}

impl Listening {
    /// Registers the families and serves them; with `kernel_agg`, the latency histograms are
    /// the kernel's (read by [`Exporter::refresh`]).
    pub fn serve(self, kernel_agg: bool) -> Result<Exporter> {
        let stats = bpf_stats_enabled();
        let mut registry = Registry::with_prefix("tracer");
        let kernel_latency = kernel_agg.then(KernelLatency::new);
        let families = Families::register(&mut registry, stats, kernel_latency.clone());
        families.bpf_stats_enabled.set(i64::from(stats));
        let server = Server::start(self.listener, Arc::new(registry))?;
        Ok(Exporter {
            kernel: KernelReadings::new(families.clone()),
            families,
            next_refresh: Instant::now(),
            kernel_latency,
            _server: server,
        })
    }
}

/// The metrics of one run and their endpoint; dropping it closes the endpoint.
pub struct Exporter {
    families: Families,
    kernel: KernelReadings,
    next_refresh: Instant,
    /// `--kernel-agg`: the kernel's latency histograms, as last read.
    kernel_latency: Option<KernelLatency>,
    /// Held for its thread: dropping it closes the endpoint.
    _server: Server,
}

impl Exporter {
    /// The observer to give the pipeline (every trace and decode error counted).
    pub fn observer(&self) -> Box<TraceCounter> {
        Box::new(TraceCounter::new(self.families.clone()))
    }

    /// Reads the kernel's loss counters and the programs' costs into the metrics, at most
    /// once a second (call it after every drain). A failed read is logged, never fatal.
    pub fn refresh(&mut self, session: &Session) {
        let now = Instant::now();
        if now < self.next_refresh {
            return;
        }
        self.next_refresh = now + REFRESH_EVERY;
        match session.loss_counters() {
            Ok(loss) => self.kernel.losses(&loss),
            Err(e) => log::debug!("metrics: reading the loss counters: {e:#}"),
        }
        self.kernel.programs(&session.program_runs());
        self.kernel.bpf_stats_enabled(bpf_stats_enabled());
        if let (Some(k), Some(node)) = (&self.kernel_latency, session.nodes.first()) {
            match node.histograms() {
                Ok(hist) => k.set(hist),
                Err(e) => log::debug!("metrics: reading the kernel's histograms: {e:#}"),
            }
        }
    }
}

/// Whether the kernel counts program runs now (`kernel.bpf_stats_enabled`).
fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string(BPF_STATS_SYSCTL).is_ok_and(|s| s.trim() != "0")
}

#[cfg(test)]
mod tests;
