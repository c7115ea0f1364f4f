//! Progress of a long command (`record`, `replay`, `report`) on standard error: records, MiB
//! and the tracer's own losses so far, redrawn a few times a second, only when standard error
//! is a terminal. Otherwise nothing at all is drawn or started: scripts, pipes and log files
//! see the command's own lines only.
//!
//! The command's loop only bumps [`Counters`] (relaxed atomics: a few ns per record, no lock,
//! no call into the drawing code); a [`Display`] thread reads them every [`REDRAW`] and draws
//! with `indicatif` (a maintained progress-bar crate: it handles terminal width, clearing and
//! rate limiting). The thread is started after the command's signal handling (see `signals`:
//! it inherits the blocked signals) and stopped and joined when the display is dropped; the bar
//! is cleared then, so the command's last line stands alone.

use std::{
    io::IsTerminal,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the display is redrawn.
pub const REDRAW: Duration = Duration::from_millis(200);

/// What a long command has done so far.
#[derive(Debug, Default)]
pub struct Counters {
    /// Kernel records written or read.
    pub records: AtomicU64,
    /// Bytes written or read (over all passes of a merge).
    pub bytes: AtomicU64,
    /// The tracer's own losses: events lost (ring buffer full) while recording, loss windows
    /// met while reading a recording.
    pub losses: AtomicU64,
    /// How many times the inputs are read (a merge of files reads them twice); 0 counts as 1.
    pub passes: AtomicU64,
}

impl Counters {
    pub fn add_records(&self, n: u64) {
        self.records.fetch_add(n, Relaxed);
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Relaxed);
    }

    pub fn add_losses(&self, n: u64) {
        self.losses.fetch_add(n, Relaxed);
    }
}

/// A reader that counts the bytes read through it.
pub struct Counting<R> {
    inner: R,
    counters: Arc<Counters>,
}

impl<R> Counting<R> {
    pub fn new(inner: R, counters: Arc<Counters>) -> Self {
        Counting { inner, counters }
    }
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.add_bytes(n as u64);
        Ok(n)
    }
}

/// What the losses of a command are called on its progress line.
#[derive(Clone, Copy, Debug)]
pub enum LossUnit {
    /// Recording: events the ring buffers lost.
    Events,
    /// Reading a recording: drains after which the recorder found it had lost events.
    Windows,
}

/// The progress line on standard error while it lives (nothing when it is not a terminal).
pub struct Display {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Display {
    /// Draws `counters` under `label` when standard error is a terminal, from now on;
    /// `total_bytes` (per pass) gives a bar and a percentage, else the line only counts.
    pub fn start(
        label: &str,
        total_bytes: Option<u64>,
        unit: LossUnit,
        counters: Arc<Counters>,
    ) -> Display {
        Display::start_if(
            std::io::stderr().is_terminal(),
            Duration::ZERO,
            label,
            total_bytes,
            unit,
            counters,
        )
    }

    /// `start` when `show` (the caller knows the terminal is the right place), else nothing;
    /// the first frame after `first` (a command whose start-up lines follow: they come first,
    /// and a quick command draws nothing).
    pub fn start_if(
        show: bool,
        first: Duration,
        label: &str,
        total_bytes: Option<u64>,
        unit: LossUnit,
        counters: Arc<Counters>,
    ) -> Display {
        let stop = Arc::new(AtomicBool::new(false));
        if !show {
            return Display { stop, thread: None };
        }
        // Hidden until the first frame: setting it up draws nothing yet.
        let bar = ProgressBar::with_draw_target(
            total_bytes.filter(|&t| t > 0),
            ProgressDrawTarget::hidden(),
        );
        // `wide_msg` is cut to the terminal's width: the line never wraps.
        let template = match total_bytes.filter(|&t| t > 0) {
            Some(_) => "{prefix} [{bar:16}] {percent:>3}% {wide_msg}",
            None => "{prefix} {spinner} {wide_msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        if first.is_zero() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            draw(&bar, &counters, total_bytes, unit);
        }
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                std::thread::park_timeout(if first.is_zero() { REDRAW } else { first });
                if !first.is_zero() && !flag.load(Relaxed) {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                }
                while !flag.load(Relaxed) {
                    draw(&bar, &counters, total_bytes, unit);
                    std::thread::park_timeout(REDRAW);
                }
                bar.finish_and_clear();
            })
            .ok();
        Display { stop, thread }
    }
}

/// One redraw from the counters.
fn draw(bar: &ProgressBar, c: &Counters, total_bytes: Option<u64>, unit: LossUnit) {
    let passes = c.passes.load(Relaxed).max(1);
    let bytes = c.bytes.load(Relaxed);
    bar.set_message(line(
        c.records.load(Relaxed),
        bytes,
        c.losses.load(Relaxed),
        unit,
    ));
    if let Some(t) = total_bytes.filter(|&t| t > 0) {
        bar.set_length(t.saturating_mul(passes));
    }
    bar.set_position(bytes);
    bar.tick();
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// `12345 records, 3.4 MiB, 0 lost` (events the tracer lost), or `..., 0 loss windows`
/// (drains after which the recorder had lost events): short enough for an 80-column line.
pub fn line(records: u64, bytes: u64, losses: u64, unit: LossUnit) -> String {
    let mib = bytes as f64 / (1 << 20) as f64;
    match unit {
        LossUnit::Events => format!("{records} records, {mib:.1} MiB, {losses} lost"),
        LossUnit::Windows => format!("{records} records, {mib:.1} MiB, {losses} loss windows"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_reader_and_line() {
        let c = Arc::new(Counters::default());
        let mut r = Counting::new(&b"0123456789"[..], c.clone());
        let mut buf = [0u8; 4];
        std::io::Read::read_exact(&mut r, &mut buf).expect("read");
        std::io::Read::read_to_end(&mut r, &mut Vec::new()).expect("read");
        assert_eq!(c.bytes.load(Relaxed), 10);
        assert_eq!(
            line(12, 3 << 20, 1, LossUnit::Events),
            "12 records, 3.0 MiB, 1 lost"
        );
        assert_eq!(
            line(0, 0, 2, LossUnit::Windows),
            "0 records, 0.0 MiB, 2 loss windows"
        );
    }

    #[test]
    fn nothing_is_started_off_a_terminal() {
        let d = Display::start_if(
            false,
            Duration::ZERO,
            "x",
            None,
            LossUnit::Windows,
            Arc::new(Counters::default()),
        );
        assert!(d.thread.is_none());
    }
}
