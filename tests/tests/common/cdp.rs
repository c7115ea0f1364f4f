//! Headless Chromium driven over the DevTools protocol (CDP) through `--remote-debugging-pipe`:
//! the browser reads commands on its fd 3 and writes answers and events on its fd 4, one JSON
//! message per NUL-terminated record. No port is opened (nothing to collide with other tests,
//! nothing reachable from elsewhere), and every console message, page error and network
//! request of the page arrives as an event, so a test can say exactly what the page did
//! instead of reading the browser's log.
//!
//! The browser runs with a profile directory of its own (removed on drop) and its background
//! services off; it is killed (and reaped) when the [`Browser`] is dropped, also when a test
//! fails.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::fd::{FromRawFd, RawFd},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    child: Child,
    to: File,
    from: Receiver<Value>,
    next_id: u64,
    /// Events received so far (method, params, session id).
    pub events: Vec<Value>,
    profile: PathBuf,
}

/// A pipe whose two ends are duplicated to fds >= 10 with close-on-exec (so `dup2` onto 3 and 4
/// in the child always makes a new descriptor that survives exec).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    let high = |fd: RawFd| {
        // SAFETY: duplicating a descriptor we own.
        let h = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(h >= 10, "fcntl: {}", std::io::Error::last_os_error());
        // SAFETY: closing the original, which nothing else uses.
        unsafe { libc::close(fd) };
        h
    };
    (high(fds[0]), high(fds[1]))
}

impl Browser {
    /// Starts `chromium --headless` with the DevTools pipe; fails the test (never skips) when
    /// Chromium is not installed.
    pub fn start() -> Browser {
        let bin = ["chromium", "chromium-browser"]
            .iter()
            .find_map(|b| which(b))
            .expect(
                "chromium not found: install it with `cargo xtask setup` (Debian package \
                 `chromium`)",
            );
        let profile = std::env::temp_dir().join(format!("tracer-cdp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile dir");
        let (cmd_r, cmd_w) = pipe();
        let (ev_r, ev_w) = pipe();
        let mut c = Command::new(bin);
        c.args([
            "--headless",
            "--remote-debugging-pipe",
            // Root in a container: no sandbox; no GPU on the machines.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--mute-audio",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only dup2 (async-signal-safe) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(cmd_r, 3) < 0 || libc::dup2(ev_w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().expect("cannot start chromium");
        // SAFETY: the child has its copies; ours of the child's ends are closed.
        unsafe {
            libc::close(cmd_r);
            libc::close(ev_w);
        }
        // SAFETY: we own these descriptors from here on.
        let (to, from_file) = unsafe { (File::from_raw_fd(cmd_w), File::from_raw_fd(ev_r)) };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(0, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                            if tx.send(v).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            events: Vec::new(),
            profile,
        }
    }

    /// Sends a command (to a page's session, or to the browser) and waits for its result.
    pub fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("json");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        let started = Instant::now();
        loop {
            let left = TIMEOUT.saturating_sub(started.elapsed());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    assert!(v.get("error").is_none(), "{method} failed: {}", v["error"]);
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!("{method}: no answer in {TIMEOUT:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("{method}: chromium exited"),
            }
        }
    }

    /// Waits for an event of `method` on `session` (events already received count).
    pub fn wait_event(&mut self, session: &str, method: &str) -> Value {
        let is = |v: &Value| v["method"] == method && v["sessionId"] == session;
        if let Some(v) = self.events.iter().find(|v| is(v)) {
            return v.clone();
        }
        let started = Instant::now();
        loop {
            let left = TIMEOUT.saturating_sub(started.elapsed());
            match self.from.recv_timeout(left) {
                Ok(v) => {
                    self.events.push(v.clone());
                    if is(&v) {
                        return v;
                    }
                }
                Err(e) => panic!("no {method} event: {e:?}"),
            }
        }
    }

    /// Opens `url` in a new page with the console, log, network and page domains on, and
    /// waits for its load event: the page's session id.
    pub fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        for domain in ["Runtime", "Log", "Network", "Page"] {
            self.call(Some(&session), &format!("{domain}.enable"), json!({}));
        }
        self.call(Some(&session), "Page.navigate", json!({ "url": url }));
        self.wait_event(&session, "Page.loadEventFired");
        // Late console messages and requests of the load arrive right after it.
        self.call(
            Some(&session),
            "Runtime.evaluate",
            json!({ "expression": "1" }),
        );
        session
    }

    /// Evaluates `expr` in the page; its value.
    pub fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true }),
        );
        r["result"]["value"].clone()
    }

    /// Console errors, uncaught exceptions and error log entries (CSP violations, failed
    /// loads) of the page, one line each.
    pub fn errors(&self, session: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|v| v["sessionId"] == session)
            .filter_map(|v| {
                let p = &v["params"];
                match v["method"].as_str()? {
                    "Runtime.consoleAPICalled"
                        if matches!(p["type"].as_str(), Some("error" | "assert")) =>
                    {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Runtime.exceptionThrown" => {
                        Some(format!("exception: {}", p["exceptionDetails"]))
                    }
                    "Log.entryAdded" if p["entry"]["level"] == "error" => {
                        Some(format!("log: {}", p["entry"]["text"]))
                    }
                    "Network.loadingFailed" => Some(format!("load failed: {}", p["errorText"])),
                    _ => None,
                }
            })
            .collect()
    }

    /// Every URL the page requested.
    pub fn requests(&self, session: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|v| v["sessionId"] == session && v["method"] == "Network.requestWillBeSent")
            .filter_map(|v| v["params"]["request"]["url"].as_str().map(str::to_string))
            .collect()
    }

    /// A PNG of the whole page (not only the viewport), written to `path`.
    pub fn screenshot(&mut self, session: &str, path: &Path) {
        let m = self.call(Some(session), "Page.getLayoutMetrics", json!({}));
        let size = &m["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1280.0).ceil(),
            size["height"].as_f64().unwrap_or(800.0).ceil(),
        );
        let shot = self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 },
            }),
        );
        let data = shot["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64(data)).expect("write screenshot");
    }

    /// The page printed (A4, its print CSS), as a PDF written to `path`; its size in bytes.
    pub fn pdf(&mut self, session: &str, path: &Path) -> usize {
        let pdf = self.call(
            Some(session),
            "Page.printToPDF",
            json!({ "preferCSSPageSize": true, "printBackground": true }),
        );
        let bytes = base64(pdf["data"].as_str().expect("pdf data"));
        std::fs::write(path, &bytes).expect("write pdf");
        bytes.len()
    }

    /// Sets the viewport (CSS pixels).
    pub fn viewport(&mut self, session: &str, width: u32, height: u32) {
        self.call(
            Some(session),
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// CDP's base64 (screenshots, PDFs) decoded.
fn base64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64 from chromium")
}
