//! Child processes of the benchmark (tracer, iperf3, tcpdump, bpftool) under RAII guards.
//!
//! Design note: every process is a [`Proc`]; dropping one that is still running kills it with
//! SIGKILL and reaps it, so an error or a panic anywhere never leaves a tracer, iperf3 or
//! tcpdump behind. A clean stop is SIGINT (`kill -s INT PID`: xtask has no libc dependency)
//! followed by a bounded wait. Processes inside a lab namespace are started with
//! `ip netns exec`, which `exec`s, so the PID we hold is the tool itself. stderr is collected
//! line by line on a thread (it is small: readiness lines, statistics); stdout is either
//! discarded or read by a thread that keeps only its last lines ([`Tail`]), which costs about
//! what writing to /dev/null costs while still giving us the tracer's final summary line.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// What happens to a child's stdout.
#[derive(Clone, Copy, Debug)]
pub enum Stdout {
    /// Discarded (`/dev/null`).
    Null,
    /// Read continuously; only the last N lines are kept.
    Tail(usize),
    /// Read and kept in full (small outputs such as `iperf3 -J`).
    All,
}

/// A running child process; killed and reaped on drop unless it was waited for.
pub struct Proc {
    what: String,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout_reader: Option<JoinHandle<Vec<String>>>,
}

/// A child that has exited.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// The kept stdout lines (all, or the last N).
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Proc {
    /// Starts `cmd` (stdin closed, stderr collected, stdout as asked).
    pub fn spawn(what: impl Into<String>, cmd: &mut Command, stdout: Stdout) -> Result<Proc> {
        let what = what.into();
        cmd.stdin(Stdio::null()).stderr(Stdio::piped());
        match stdout {
            Stdout::Null => cmd.stdout(Stdio::null()),
            Stdout::Tail(_) | Stdout::All => cmd.stdout(Stdio::piped()),
        };
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {what} ({})", format_cmd(cmd)))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|pipe| {
            let lines = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().expect("stderr lines").push(line);
                }
            })
        });
        let stdout_reader = match stdout {
            Stdout::Null => None,
            Stdout::Tail(keep) => child.stdout.take().map(|p| spawn_tail(p, keep)),
            Stdout::All => child.stdout.take().map(|p| spawn_tail(p, usize::MAX)),
        };
        Ok(Proc {
            what,
            child: Some(child),
            stderr,
            stderr_reader,
            stdout_reader,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The stderr lines read so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().expect("stderr lines").clone()
    }

    /// Fails (with its stderr) if the process has exited.
    fn ensure_running(&mut self) -> Result<()> {
        let child = self.child.as_mut().context("process already reaped")?;
        if let Some(status) = child.try_wait()? {
            // Give the reader a moment to collect the last lines.
            thread::sleep(Duration::from_millis(20));
            bail!(
                "{} exited early ({status}): {}",
                self.what,
                last_lines(&self.stderr(), 6)
            );
        }
        Ok(())
    }

    /// Polls `cond` until it holds (returns how long that took), the process exits, or
    /// `timeout` passes.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Proc) -> bool,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            if cond(self) {
                return Ok(started.elapsed());
            }
            self.ensure_running()?;
            if started.elapsed() > timeout {
                bail!(
                    "{}: no {what} after {:.0} s: {}",
                    self.what,
                    timeout.as_secs_f64(),
                    last_lines(&self.stderr(), 6)
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for `path` to exist (a `--ready-file`).
    pub fn wait_file(&mut self, path: &Path, timeout: Duration) -> Result<Duration> {
        self.wait_until(timeout, "ready file", |_| path.exists())
    }

    /// Waits for a stderr line containing `needle`.
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        self.wait_until(timeout, &format!("`{needle}` on stderr"), |p| {
            p.stderr
                .lock()
                .expect("stderr lines")
                .iter()
                .any(|l| l.contains(needle))
        })
    }

    /// Sends SIGINT (the clean stop of the tracer, tcpdump and iperf3).
    pub fn interrupt(&self) -> Result<()> {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-s", "INT", &pid])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s INT {pid} ({}) failed", self.what);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; kills it after that (an error).
    pub fn wait(mut self, timeout: Duration) -> Result<Exited> {
        let started = Instant::now();
        let status = loop {
            let child = self.child.as_mut().context("process already reaped")?;
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!(
                    "{} did not exit within {:.0} s (killed): {}",
                    self.what,
                    timeout.as_secs_f64(),
                    last_lines(&self.stderr(), 6)
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        self.child = None;
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let stdout = match self.stdout_reader.take() {
            Some(h) => h
                .join()
                .map_err(|_| anyhow!("stdout reader of {} panicked", self.what))?,
            None => Vec::new(),
        };
        Ok(Exited {
            status,
            stdout,
            stderr: self.stderr(),
        })
    }

    /// SIGINT, then [`Proc::wait`].
    pub fn stop(self, timeout: Duration) -> Result<Exited> {
        self.interrupt()?;
        self.wait(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion (killed after `timeout`) and returns its full output.
pub fn run_capture(what: &str, cmd: &mut Command, timeout: Duration) -> Result<Exited> {
    Proc::spawn(what, cmd, Stdout::All)?.wait(timeout)
}

/// The last `n` of `lines`, joined with " | " (for error messages).
pub fn last_lines(lines: &[String], n: usize) -> String {
    let start = lines.len().saturating_sub(n);
    let s = lines[start..].join(" | ");
    if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

pub fn format_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

fn spawn_tail(mut pipe: impl Read + Send + 'static, keep: usize) -> JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut tail = Tail::new(keep);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => tail.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        tail.lines()
    })
}

/// Keeps the last `keep` lines of a byte stream without splitting every line: bytes are
/// appended, and once the buffer passes a few MiB its front is cut at a line boundary.
pub struct Tail {
    buf: Vec<u8>,
    keep: usize,
    cap: usize,
}

impl Tail {
    pub fn new(keep: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            keep,
            cap: 4 << 20,
        }
    }

    #[cfg(test)]
    fn with_cap(keep: usize, cap: usize) -> Tail {
        Tail {
            cap,
            ..Tail::new(keep)
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.cap && self.keep != usize::MAX {
            self.trim();
        }
    }

    /// Cuts the buffer after the newline that ends the line before the last `keep` lines.
    fn trim(&mut self) {
        let mut end = self.buf.len();
        // A trailing newline terminates the last line; it is not a boundary before it.
        if self.buf.last() == Some(&b'\n') {
            end -= 1;
        }
        let mut seen = 0;
        while let Some(p) = self.buf[..end].iter().rposition(|&b| b == b'\n') {
            seen += 1;
            if seen == self.keep {
                self.buf.drain(..=p);
                return;
            }
            end = p;
        }
    }

    /// The kept lines (the last `keep`, or fewer).
    pub fn lines(mut self) -> Vec<String> {
        self.trim();
        let text = String::from_utf8_lossy(&self.buf);
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut q: VecDeque<String> = lines.into();
        while q.len() > self.keep {
            q.pop_front();
        }
        q.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_across_chunks_and_trims() {
        let mut t = Tail::with_cap(2, 16);
        for i in 0..100 {
            let line = format!("line {i}\n");
            let (a, b) = line.as_bytes().split_at(3);
            t.push(a);
            t.push(b);
            assert!(t.buf.len() < 64, "trimmed as it goes");
        }
        assert_eq!(t.lines(), vec!["line 98", "line 99"]);
    }

    #[test]
    fn tail_without_trailing_newline_and_short_input() {
        let mut t = Tail::with_cap(3, 4);
        t.push(b"a\nb\nc\nd");
        assert_eq!(t.lines(), vec!["b", "c", "d"]);
        let mut t = Tail::new(5);
        t.push(b"only\n");
        assert_eq!(t.lines(), vec!["only"]);
        let mut t = Tail::new(usize::MAX);
        t.push(b"x\ny\n");
        assert_eq!(t.lines(), vec!["x", "y"]);
    }

    #[test]
    fn last_lines_joins_the_end() {
        let l: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(last_lines(&l, 2), "b | c");
        assert_eq!(last_lines(&[], 2), "(no output)");
    }
}
