//! `tracer record`: the raw kernel records written to a file (or streamed to standard output)
//! as they are drained, to be correlated later by `tracer replay` exactly as `tracer trace`
//! would have live, also together with other machines' recordings (`merge`).
//!
//! Recording only copies bytes, so it keeps up with packet rates at which correlating and
//! rendering every packet live would not, and the file is the evidence an incident report can
//! be written from afterwards, on any machine. See `recording` for the file layout. A terminal
//! on standard error shows the progress (records, MiB, events lost; `progress`).

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::atomic::Ordering::Relaxed,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use clap::Args;
use tracer_common::{EventHeader, EVENT_DROP, EVENT_DROP_BYTES, SNAPLEN_MAX};

use crate::recording::{native_byte_order, Header, Trailer, Writer, SOURCE_HOOKS};
use crate::{
    capture::{CaptureArgs, DrainPacer, LossWatch, Session, Source},
    event::{declared, decode, Event},
    latency::ClockSource,
    machine::{monotonic_ns, ClockSample, Machine},
    metrics::{Exporter, MetricsArgs, Tap},
    names::{DropNames, KernelNames},
    progress::{self, Counters, LossUnit},
};

#[derive(Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub capture: CaptureArgs,
    /// The recording to write (replaced if it exists), or `-` to stream it to standard output
    /// (`ssh node tracer record --write - ... > node.rec`, or straight into `tracer replay`).
    #[arg(short = 'w', long = "write", value_name = "FILE|-")]
    pub write: PathBuf,
    /// Stop once the recording reaches this size, so that a forgotten recorder cannot fill
    /// the node's disk (0: no limit).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub max_mib: u64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Also keep the first N bytes of each packet at each hop and drop (at most 256; 0: only
    /// the parsed headers), for `tracer pcap`.
    #[arg(long, default_value_t = 0, value_name = "N", value_parser = parse_snaplen)]
    pub snaplen: u32,
}

/// `--snaplen N`: 0..=`SNAPLEN_MAX`.
fn parse_snaplen(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n as usize <= SNAPLEN_MAX => Ok(n),
        _ => Err(format!(
            "invalid snaplen '{s}' (0 to {SNAPLEN_MAX} bytes per packet)"
        )),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            && matches!(
                u16::from_ne_bytes([data[0], data[1]]),
                EVENT_DROP | EVENT_DROP_BYTES
            );
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

/// Where the recording goes: a file, or standard output (a stream).
enum Sink {
    File(File),
    Stdout(std::io::Stdout),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => f.write(buf),
            Sink::Stdout(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.flush(),
            Sink::Stdout(s) => s.flush(),
        }
    }
}

/// How often the clocks are sampled into the recording (besides at the start and the end).
const CLOCK_EVERY: Duration = Duration::from_secs(1);

/// `tracer record`: attach, copy every record to the file until stopped, write the trailer.
pub fn run(args: RecordArgs) -> Result<()> {
    let to_stdout = args.write.as_os_str() == "-";
    let name = if to_stdout {
        "standard output".to_string()
    } else {
        args.write.display().to_string()
    };
    // Listen and create the file before attaching: a port in use or a bad path fails before
    // anything is attached (and a port in use before the file is replaced).
    let metrics = args.metrics.bind()?;
    let sink = if to_stdout {
        if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            anyhow::bail!(
                "--write - streams a binary recording to standard output, which is a terminal: \
                 redirect it (`> node.rec`, `| ssh ...`, or `tracer replay <(...)`)"
            );
        }
        Sink::Stdout(std::io::stdout())
    } else {
        Sink::File(
            File::create(&args.write)
                .with_context(|| format!("creating recording {}", args.write.display()))?,
        )
    };
    let capture = CaptureArgs {
        snaplen: args.snaplen,
        ..args.capture.clone()
    };
    let mut session = Session::start(&capture, false)?;
    // With metrics, the records also go through a pipeline that prints nothing.
    let mut metrics: Option<(Exporter, Tap)> = match metrics {
        Some(m) => {
            let exporter = m.serve(false)?;
            let tap = Tap::new(session.topology.clone(), exporter.observer());
            Some((exporter, tap))
        }
        None => None,
    };
    let machine = Machine::current();
    let header = Header {
        tracer_version: env!("CARGO_PKG_VERSION").to_string(),
        host: machine.hostname.clone(),
        kernel: machine.kernel.clone(),
        machine,
        started_unix_ms: unix_ms(),
        byte_order: native_byte_order().to_string(),
        clock: ClockSource::SharedKernel.as_str().to_string(),
        filter: session.filter_text.clone(),
        sample: args.capture.sample,
        hooks: session.hooks.is_some(),
        snaplen: args.snaplen,
        topology: session.topology.clone(),
    };
    let mut w = Writer::new(BufWriter::with_capacity(1 << 20, sink), &header)
        .context("writing the recording's header")?;
    w.clock(&ClockSample::now())
        .context("writing the recording's header")?;
    // The nodes' state, the evidence `tracer check` audits later (a few ms per node).
    for (i, state) in session.take_initial_states().iter().enumerate() {
        w.state(i as u16, state)
            .context("writing the recording's node states")?;
    }
    w.flush().context("writing the recording's header")?;
    eprintln!("tracer: recording to {name}");
    let mut names = NamesWritten::default();
    let mut pacer = DrainPacer::new(args.capture.duration);
    let mut losses = LossWatch::new(&session)?;
    let mut next_clock = Instant::now() + CLOCK_EVERY;
    let limit = args.max_mib.checked_mul(1 << 20).filter(|&l| l > 0);
    // After the session's signal handling: the display's thread inherits the blocked signals.
    let counters = Arc::new(Counters::default());
    let mut display = Some(progress::Display::start(
        "recording",
        None,
        LossUnit::Events,
        counters.clone(),
    ));
    let wakeups = session.wakeups();
    while pacer.wait(&session.stop, &wakeups) {
        if Instant::now() >= next_clock {
            w.clock(&ClockSample::now())
                .context("writing the recording")?;
            next_clock += CLOCK_EVERY;
        }
        for (i, change) in session.follow_links() {
            w.link(i as u16, &change).context("writing the recording")?;
            if let Some((_, tap)) = metrics.as_mut() {
                tap.link_change(session.topology.nodes[i].netns, &change);
            }
        }
        let mut tap = metrics.as_mut().map(|(_, tap)| tap);
        pacer.drained(drain(
            &mut w,
            &mut session,
            &mut names,
            &mut losses,
            &mut tap,
        )?);
        if let Some((exporter, _)) = metrics.as_mut() {
            exporter.refresh(&session);
        }
        counters.records.store(w.records(), Relaxed);
        counters.bytes.store(w.bytes(), Relaxed);
        counters.losses.store(losses.lost(), Relaxed);
        if limit.is_some_and(|l| w.bytes() >= l) {
            display.take();
            eprintln!(
                "tracer: the recording reached --max-mib {} MiB: stopping (raise it, or 0 for no limit)",
                args.max_mib
            );
            break;
        }
    }
    drop(display);
    let mut tap = metrics.as_mut().map(|(_, tap)| tap);
    drain(&mut w, &mut session, &mut names, &mut losses, &mut tap)?;
    if let Some(tap) = tap {
        tap.finish();
    }
    w.clock(&ClockSample::now())
        .context("writing the recording")?;
    let loss = session.loss_counters()?;
    drop(session);
    let records = w.records();
    let bytes = w.bytes();
    let trailer = Trailer {
        loss,
        records,
        ended_unix_ms: unix_ms(),
    };
    w.finish(&trailer).context("finishing the recording")?;
    eprintln!(
        "tracer: recorded {records} records ({:.1} MiB) to {name}; {} lost by the tracer (ring buffer full){}",
        bytes as f64 / (1 << 20) as f64,
        loss.ringbuf_full,
        if to_stdout {
            String::new()
        } else {
            format!("; replay with `tracer replay {}`", args.write.display())
        },
    );
    // One machine-readable line, with the same `lost_events` key as `trace`: on stdout, unless
    // stdout carries the recording itself.
    let line = serde_json::json!({ "summary": {
        "file": if to_stdout { "-".to_string() } else { args.write.display().to_string() },
        "records": records,
        "bytes": bytes,
        "lost_events": loss.ringbuf_full,
        "filtered": loss.filtered,
        "sampled_out": loss.sampled_out,
    }});
    if to_stdout {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
    Ok(())
}

/// Copies every waiting record to the recording (and to the metrics' `tap`), then a tick;
/// returns how many records.
fn drain<W: Write>(
    w: &mut Writer<W>,
    session: &mut Session,
    names: &mut NamesWritten,
    losses: &mut LossWatch,
    tap: &mut Option<&mut Tap>,
) -> Result<usize> {
    let n = session
        .drain(|source, item| {
            if let Some(tap) = tap.as_mut() {
                tap.record(&source, item);
            }
            // A record with packet bytes is cut where its header says (its ring-buffer slot
            // is larger).
            let item = declared(item);
            match source {
                Source::Node(i, _) => w.record(i as u16, item),
                Source::Hooks(hook_names) => {
                    names.before(w, item, hook_names)?;
                    w.record(SOURCE_HOOKS, item)
                }
            }
        })
        .context("writing the recording")?;
    let now = monotonic_ns();
    if let Some((from, to)) = losses.check(session, now)? {
        w.loss(from, to).context("writing the recording")?;
        if let Some(tap) = tap.as_mut() {
            tap.tracer_loss(from, to);
        }
    }
    if let Some(tap) = tap.as_mut() {
        tap.tick(now);
    }
    w.tick(now).context("writing the recording")?;
    // What was drained reaches the file now: a recorder killed later loses nothing of it, and a
    // reader following the stream sees every drain mark (a merge waits for each recording's
    // marks), even when nothing was drained.
    w.flush().context("writing the recording")?;
    Ok(n)
}
