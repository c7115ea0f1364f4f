//! Record now, correlate later: `tracer record` writes the raw kernel records to a file as they
//! are drained, and `tracer replay` feeds them through the same pipeline as `tracer trace`.
//!
//! Recording only copies bytes, so it keeps up with packet rates at which correlating and
//! rendering every packet live would not, and the file is the evidence an incident report can
//! be written from afterwards, on any machine. See `format` for the file layout.

pub mod format;
mod replay;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use clap::Args;
pub use replay::{replay, ReplayArgs};
#[cfg(test)]
use replay::{replay_into, ReplayEnd};
use tracer_common::{EventHeader, EVENT_DROP};

use crate::{
    capture::{monotonic_ns, CaptureArgs, DrainPacer, LossWatch, Session, Source},
    event::{decode, Event},
    latency::ClockSource,
    names::{DropNames, KernelNames},
};
use format::{native_byte_order, Header, Trailer, Writer, SOURCE_HOOKS};

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The recording to write (replaced if it exists).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
    /// Stop once the recording reaches this size, so that a forgotten recorder cannot fill
    /// the node's disk (0: no limit).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub max_mib: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string())
}

/// The names of drop reasons and locations already written to the recording.
#[derive(Default)]
struct NamesWritten {
    reasons: HashSet<u32>,
    locations: HashSet<u64>,
}

impl NamesWritten {
    /// Before a hook record: the names its drop needs, if not written yet.
    fn before<W: Write>(
        &mut self,
        w: &mut Writer<W>,
        data: &[u8],
        names: &KernelNames,
    ) -> std::io::Result<()> {
        let is_drop = data.len() >= std::mem::size_of::<EventHeader>()
            && u16::from_ne_bytes([data[0], data[1]]) == EVENT_DROP;
        if !is_drop {
            return Ok(());
        }
        // An undecodable record is written as it is; replay counts it.
        if let Ok(Event::Drop(d)) = decode(data) {
            if self.reasons.insert(d.reason) {
                w.reason(d.reason, &names.reason_name(d.reason))?;
            }
            if self.locations.insert(d.location) {
                w.location(d.location, &names.location(d.location))?;
            }
        }
        Ok(())
    }
}

/// `tracer record`: attach, copy every record to the file until stopped, write the trailer.
pub fn run(args: RecordArgs) -> Result<()> {
    // Create the file before attaching: a bad path fails before anything is attached.
    let file = File::create(&args.write)
        .with_context(|| format!("creating recording {}", args.write.display()))?;
    let mut session = Session::start(&args.capture, false)?;
    let header = Header {
        tracer_version: env!("CARGO_PKG_VERSION").to_string(),
        host: crate::netns::hostname().unwrap_or_else(|| "localhost".into()),
        kernel: kernel_release(),
        started_unix_ms: unix_ms(),
        byte_order: native_byte_order().to_string(),
        clock: ClockSource::SharedKernel.as_str().to_string(),
        filter: session.filter_text.clone(),
        sample: args.capture.sample,
        hooks: session.hooks.is_some(),
        topology: session.topology.clone(),
    };
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, file), &header)
        .context("writing the recording's header")?;
    w.flush().context("writing the recording's header")?;
    eprintln!("tracer: recording to {}", args.write.display());
    let mut names = NamesWritten::default();
    let mut pacer = DrainPacer::new(args.capture.duration);
    let mut losses = LossWatch::new(&session)?;
    let limit = args.max_mib.checked_mul(1 << 20).filter(|&l| l > 0);
    while pacer.wait(&session.stop) {
        pacer.drained(drain(&mut w, &mut session, &mut names, &mut losses)?);
        if limit.is_some_and(|l| w.bytes() >= l) {
            eprintln!(
                "tracer: the recording reached --max-mib {} MiB: stopping (raise it, or 0 for no limit)",
                args.max_mib
            );
            break;
        }
    }
    drain(&mut w, &mut session, &mut names, &mut losses)?;
    let loss = session.loss_counters()?;
    drop(session);
    let records = w.records();
    let trailer = Trailer {
        loss,
        records,
        ended_unix_ms: unix_ms(),
    };
    let file = w.finish(&trailer).context("finishing the recording")?;
    let bytes = file
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.metadata())
        .map_or(0, |m| m.len());
    eprintln!(
        "tracer: recorded {records} records ({:.1} MiB) to {}; {} lost by the tracer (ring buffer full); replay with `tracer replay {}`",
        bytes as f64 / (1 << 20) as f64,
        args.write.display(),
        loss.ringbuf_full,
        args.write.display(),
    );
    // One machine-readable line on stdout, with the same `lost_events` key as `trace`.
    println!(
        "{}",
        serde_json::json!({ "summary": {
            "file": args.write.display().to_string(),
            "records": records,
            "bytes": bytes,
            "lost_events": loss.ringbuf_full,
            "filtered": loss.filtered,
            "sampled_out": loss.sampled_out,
        }})
    );
    Ok(())
}

/// Copies every waiting record to the recording, then a tick; returns how many records.
fn drain<W: Write>(
    w: &mut Writer<W>,
    session: &mut Session,
    names: &mut NamesWritten,
    losses: &mut LossWatch,
) -> Result<usize> {
    let n = session
        .drain(|source, item| match source {
            Source::Node(i, _) => w.record(i as u16, item),
            Source::Hooks(hook_names) => {
                names.before(w, item, hook_names)?;
                w.record(SOURCE_HOOKS, item)
            }
        })
        .context("writing the recording")?;
    let now = monotonic_ns();
    if let Some((from, to)) = losses.check(session, now)? {
        w.loss(from, to).context("writing the recording")?;
    }
    w.tick(now).context("writing the recording")?;
    if n > 0 {
        // What was drained reaches the file now: a recorder killed later loses nothing of it.
        w.flush().context("writing the recording")?;
    }
    Ok(n)
}
