//! `tracer stats --kernel-agg --metrics-addr`: no trace per packet, so the latency histograms
//! are the kernel's own (per-CPU log2 histograms, summed over CPUs), read every second and
//! served under the same name and buckets as the histograms of traces.
//!
//! Kernel bucket `i` counts values in `[2^i, 2^(i+1))` ns, so it lies entirely at or below the
//! bound `2^(i+1)` ns: the cumulative counts are exact at every bound from 256 ns (buckets
//! below it fold into the first) to 2^30 ns, and the rest is `+Inf`. The sum is not kept by
//! the kernel: it is summed at the buckets' lower bounds, a lower bound of the true sum (as
//! `tracer stats --kernel-agg` reports its percentiles).

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Unit,
};
use tracer_common::{HIST_BUCKETS, N_SEGMENTS};

use super::families::{latency_buckets, SegmentLabels, LATENCY, LATENCY_HELP};
use crate::pipeline::segment_name;

/// The in-kernel histograms as last read, by segment index (`SEG_*`).
#[derive(Clone, Debug)]
pub struct KernelLatency(Arc<Mutex<Vec<[u64; HIST_BUCKETS]>>>);

impl KernelLatency {
    /// Every segment empty (until the first reading).
    pub fn new() -> KernelLatency {
        let empty = vec![[0; HIST_BUCKETS]; N_SEGMENTS as usize];
        KernelLatency(Arc::new(Mutex::new(empty)))
    }

    /// The histograms just read (cumulative since the capture started).
    pub fn set(&self, hist: Vec<[u64; HIST_BUCKETS]>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = hist;
    }
}

/// `(upper bound in s, count)` per bucket of the exported histogram (`+Inf` last), its count
/// and its sum at the kernel buckets' lower bounds, in s.
pub fn convert(kernel: &[u64; HIST_BUCKETS]) -> (Vec<(f64, u64)>, u64, f64) {
    let bounds: Vec<f64> = latency_buckets().chain([f64::INFINITY]).collect();
    let mut out: Vec<(f64, u64)> = bounds.iter().map(|&b| (b, 0)).collect();
    let (mut count, mut sum_ns) = (0u64, 0f64);
    for (i, &n) in kernel.iter().enumerate() {
        if n == 0 {
            continue;
        }
        // Values below 2^(i+1) ns: the first bound at or above it (bounds are 2^(8+k) ns).
        let k = (i + 1).saturating_sub(8).min(out.len() - 1);
        out[k].1 += n;
        count += n;
        sum_ns += n as f64 * 2f64.powi(i as i32);
    }
    (out, count, sum_ns * 1e-9)
}

impl Collector for KernelLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A copy, so that the lock is not held while formatting.
        let hist = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let unit = Unit::Seconds;
        let mut metric =
            encoder.encode_descriptor(LATENCY, LATENCY_HELP, Some(&unit), MetricType::Histogram)?;
        for (seg, kernel) in hist.iter().enumerate() {
            let Some(name) = segment_name(seg as u32) else {
                continue;
            };
            let labels = SegmentLabels {
                segment: name.as_str().into(),
            };
            let (buckets, count, sum) = convert(kernel);
            metric
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}
