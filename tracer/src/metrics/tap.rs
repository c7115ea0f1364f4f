//! `tracer record --metrics-addr`: the records the recorder writes also go through a pipeline
//! that prints nothing and feeds the metrics, as `tracer stats` would live.

use std::io;

use crate::capture::Source;
use crate::correlate::CorrelateConfig;
use crate::latency::ClockModel;
use crate::model::LinkChange;
use crate::pipeline::{Observer, Pipeline, PipelineConfig};
use crate::render::Output;
use crate::topology::Topology;

/// A silent pipeline beside a recorder.
pub struct Tap {
    pipe: Pipeline<io::Sink>,
}

impl Tap {
    pub fn new(topology: Topology, observer: Box<dyn Observer>) -> Tap {
        let cfg = PipelineConfig {
            output: Output::Text,
            limit: None,
            stats: false,
            quiet: true,
            collect: false,
            kernel_agg: false,
            correlate: CorrelateConfig::default(),
            clock: ClockModel::shared_kernel(),
            filter: None,
        };
        let mut pipe = Pipeline::new(topology, cfg, io::sink());
        pipe.set_observer(observer);
        Tap { pipe }
    }

    /// A drained record, as the recorder got it.
    pub fn record(&mut self, source: &Source<'_>, item: &[u8]) {
        match source {
            Source::Node(_, name) => self.pipe.node_record(name, item),
            Source::Hooks(names) => self.pipe.hook_record(item, *names),
        }
    }

    /// Node `netns` gained or lost an interface.
    pub fn link_change(&mut self, netns: u32, c: &LinkChange) {
        self.pipe.link_change(netns, c);
    }

    /// The ring buffers lost events between two drains.
    pub fn tracer_loss(&mut self, from_ns: u64, to_ns: u64) {
        self.pipe.tracer_loss(from_ns, to_ns);
    }

    /// After a drain: the traces that settled are counted.
    pub fn tick(&mut self, now_ns: u64) {
        // Nothing is written (a sink) and there is no --count: this cannot fail or stop.
        let _ = self.pipe.tick(now_ns);
    }

    /// The end of the recording: every open trace is counted.
    pub fn finish(&mut self) {
        let _ = self.pipe.close_all();
    }
}
