//! `tracer report` on a recorded lab fault, checked in a real browser: the recording of the
//! `missing-fdb` fault becomes an HTML report and a Markdown one; headless Chromium (driven over
//! the DevTools pipe, `common::cdp`) opens the page and the test checks that it shows the
//! verdict and the audit's finding (both as the fault catalogue declares them), that the page
//! logged no error and requested nothing but itself, and takes a
//! screenshot and a printed PDF, kept as artifacts under `target/test-artifacts/report/`.
//! A control page (the report with an external image and a console error added, its
//! Content-Security-Policy removed) shows that the checks catch both. A truncated copy of the
//! recording still gives a report, with its "incomplete" notice. The progress line is drawn on
//! a terminal (`script` gives the commands one) and never when standard error is a pipe.
//!
//! Root, Chromium and `script` are required: missing, the test fails saying so.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{cdp::Browser, require_root, run_tracer, tracer_bin, Tracer};
use lab::{Encap, Fault};

/// Where the screenshot, the PDF and the reports are kept after the test.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/report");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir.canonicalize().expect("artifacts dir")
}

/// A scratch directory removed on drop, also when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("tracer-report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Records the `missing-fdb` fault of a fresh VXLAN lab (torn down on return) into `file`, and
/// each node on its own into `per_node` (as one recorder per machine would): the probe to the
/// other node fails while the probing pod still reaches its neighbour on the same node (the
/// incident "same-node pods talk, cross-node pods don't").
fn record_fault(file: &Path, per_node: &[PathBuf; 2]) {
    let lab = common::lab_up("trpt", 2, Encap::Vxlan);
    let topo = lab.topology().clone();
    let info = lab::break_lab(&topo, Fault::MissingFdb).expect("break");
    let from = topo.pod(&info.probe.from_pod).expect("probe pod").clone();
    let neighbour = topo
        .pods_on(&from.node)
        .into_iter()
        .find(|p| p.name != from.name)
        .expect("a second pod on the probing pod's node")
        .clone();
    let mut args = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".to_string(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        format!("host {}", from.ip),
        "--write".into(),
        file.display().to_string(),
    ]);
    let filter = format!("host {}", from.ip);
    let nodes: Vec<Tracer> = topo
        .nodes
        .iter()
        .zip(per_node)
        .map(|(n, f)| {
            let a = [
                "--netns",
                &n.netns,
                "--filter",
                &filter,
                "--write",
                f.to_str().expect("utf8"),
            ];
            Tracer::start_cmd("record", &a.map(String::from))
        })
        .collect();
    let rec = Tracer::start_cmd("record", &args);
    let started = Instant::now();
    let _ = info.probe.run(&topo, Duration::from_millis(500));
    lab::traffic::ping(&from.netns, neighbour.ip, 3, true).expect("same-node ping");
    std::thread::sleep(Duration::from_millis(800).saturating_sub(started.elapsed()));
    let rec = rec.stop();
    assert!(rec.status.success(), "record failed: {}", rec.stderr);
    for n in nodes {
        let out = n.stop();
        assert!(out.status.success(), "record failed: {}", out.stderr);
    }
    // Not a terminal: no progress line, no cursor control.
    assert_quiet(&rec.stderr);
    // On a terminal (`script` gives the recorder one), the progress line is drawn.
    let mut cmd = format!("{} record --duration 1s", tracer_bin().display());
    for a in args.iter().take_while(|a| *a != "--write") {
        cmd.push_str(&format!(" '{a}'"));
    }
    cmd.push_str(&format!(" --write {}.tty", file.display()));
    let transcript = on_a_terminal(&cmd);
    assert!(
        transcript.contains("recording") && transcript.contains(" MiB, 0 lost"),
        "no progress line on a terminal: {transcript:?}"
    );
    lab::heal(&topo, Fault::MissingFdb).expect("heal");
    lab.down().expect("lab down");
}

/// No progress output: no carriage return, no escape sequence, no progress counts.
fn assert_quiet(stderr: &str) {
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b') && !stderr.contains(" MiB, "),
        "progress drawn on a pipe: {stderr:?}"
    );
}

/// Runs the shell command `cmd` on a pseudo-terminal (`script`): what the terminal showed.
fn on_a_terminal(cmd: &str) -> String {
    let out = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .output()
        .expect("`script` (Debian's bsdutils) runs a command on a terminal");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd}: {transcript}");
    transcript
}

fn report(args: &[&str]) -> common::TracerOutput {
    let mut all = vec!["report"];
    all.extend(args);
    run_tracer(&all)
}

/// What the page shows, and what it did while loading.
struct Seen {
    findings: String,
    notice: String,
    /// The audit's section (what follows its heading).
    audit: String,
    charts: u64,
    errors: Vec<String>,
    requests: Vec<String>,
}

fn open(b: &mut Browser, page: &Path, shot: Option<(&Path, &Path)>) -> Seen {
    let url = format!("file://{}", page.display());
    let s = b.open(&url);
    b.viewport(&s, 1280, 900);
    let text = |b: &mut Browser, sel: &str| {
        b.eval(
            &s,
            &format!("(document.querySelector('{sel}') || {{innerText: ''}}).innerText"),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    };
    let findings = text(b, "#findings");
    let notice = text(b, "#completeness");
    let audit = b
        .eval(
            &s,
            "(() => { const h = document.querySelector('#audit'); let t = ''; \
             for (let e = h && h.nextElementSibling; e && e.tagName !== 'H3'; \
             e = e.nextElementSibling) t += e.innerText + '\\n'; return t; })()",
        )
        .as_str()
        .unwrap_or("")
        .to_string();
    // Charts that were laid out with a size (an SVG the browser could not parse has none).
    let charts = b
        .eval(
            &s,
            "[...document.querySelectorAll('svg')].filter(e => { const r = \
             e.getBoundingClientRect(); return r.width > 100 && r.height > 50; }).length",
        )
        .as_u64()
        .unwrap_or(0);
    if let Some((png, pdf)) = shot {
        b.screenshot(&s, png);
        assert!(b.pdf(&s, pdf) > 10_000, "the printed PDF is empty");
    }
    Seen {
        findings,
        notice,
        audit,
        charts,
        errors: b.errors(&s),
        requests: b.requests(&s),
    }
}

#[test]
fn the_report_of_a_recorded_fault_shows_the_verdict_in_chromium() {
    require_root();
    let scratch = Scratch::new();
    let out = artifacts();
    let rec = scratch.0.join("fault.trec");
    let per_node = [scratch.0.join("node1.trec"), scratch.0.join("node2.trec")];
    record_fault(&rec, &per_node);
    let rec_s = rec.to_str().expect("utf8");
    // What the catalogue says the tracer must report for this fault.
    let want = Fault::MissingFdb
        .entry()
        .tracer
        .iter()
        .find(|t| t.encap == Encap::Vxlan)
        .expect("the fault's VXLAN entry");

    // The HTML report: the command's last line names the verdict.
    let html = out.join("report.html");
    let r = report(&[rec_s, "-o", html.to_str().expect("utf8")]);
    assert!(r.status.success(), "report failed: {}", r.stderr);
    let last = r.stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("report written to") && last.contains(want.verdict),
        "{}",
        r.stderr
    );
    assert!(last.contains("evidence complete"), "{}", r.stderr);
    assert_quiet(&r.stderr);
    let page = std::fs::read_to_string(&html).expect("report.html");
    assert!(page.contains(want.reason) && page.contains(want.function));

    // Markdown, by the extension.
    let md = out.join("report.md");
    let r = report(&[rec_s, "-o", md.to_str().expect("utf8")]);
    assert!(r.status.success(), "{}", r.stderr);
    let text = std::fs::read_to_string(&md).expect("report.md");
    assert!(text.starts_with("# Incident report"), "{}", &text[..80]);
    assert!(text.contains(&format!("`{}`", want.verdict)));
    assert!(text.contains(&want.reason.replace('_', "\\_")));
    assert!(!text.contains("<svg"), "charts in Markdown");

    // The page in Chromium.
    let mut b = Browser::start();
    let png = out.join("report.png");
    let pdf = out.join("report.pdf");
    let seen = open(&mut b, &html, Some((&png, &pdf)));
    assert!(
        seen.findings.contains(want.verdict) && seen.findings.contains(want.reason),
        "the verdict is not shown: {}",
        seen.findings
    );
    assert!(seen.notice.contains("Evidence complete"), "{}", seen.notice);
    // The recorders' node states are audited: the fault's finding is on the page.
    for code in want.audit {
        assert!(
            seen.audit.contains(code),
            "{code} not in the audit: {}",
            seen.audit
        );
    }
    assert!(seen.charts >= 2, "{} charts laid out", seen.charts);
    assert!(seen.errors.is_empty(), "page errors: {:#?}", seen.errors);
    let own = format!("file://{}", html.display());
    assert_eq!(seen.requests, [own], "requests besides the page itself");
    let shot = std::fs::read(&png).expect("screenshot");
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 20_000,
        "screenshot of {} bytes",
        shot.len()
    );
    eprintln!("screenshot: {}", png.display());

    // Control: the same checks on a page that calls out and logs an error must see both.
    let bad = scratch.0.join("control.html");
    let tampered = page
        .replacen("<meta http-equiv=\"Content-Security-Policy\"", "<meta name=\"x\"", 1)
        .replacen(
            "</body>",
            "<img src=\"http://127.0.0.1:9/x.png\"><script>console.error('control')</script></body>",
            1,
        );
    assert_ne!(tampered, page);
    std::fs::write(&bad, tampered).expect("control page");
    let seen = open(&mut b, &bad, None);
    assert!(
        seen.requests
            .iter()
            .any(|u| u.starts_with("http://127.0.0.1:9/")),
        "the external request went unseen: {:?}",
        seen.requests
    );
    assert!(
        seen.errors.iter().any(|e| e.contains("control")),
        "the console error went unseen: {:?}",
        seen.errors
    );

    // One recording per node, merged: the same verdict, the recordings' clocks (one kernel
    // here: the same clock), both nodes' environment.
    let merged = out.join("report-merged.html");
    let mut args: Vec<&str> = per_node.iter().map(|p| p.to_str().expect("utf8")).collect();
    args.extend(["-o", merged.to_str().expect("utf8")]);
    let r = report(&args);
    assert!(r.status.success(), "{}", r.stderr);
    assert!(r.stderr.contains(want.verdict), "{}", r.stderr);
    let page = std::fs::read_to_string(&merged).expect("merged report");
    assert!(
        page.contains("same-clock"),
        "the clocks of the merge are not shown"
    );
    for p in &per_node {
        assert!(page.contains(&p.display().to_string()));
    }
    assert!(
        page.contains("Node <code>trpt-node2</code>"),
        "node2's environment"
    );

    // A truncated recording: a report all the same, saying what is missing.
    let cut = scratch.0.join("cut.trec");
    let bytes = std::fs::read(&rec).expect("recording");
    std::fs::write(&cut, &bytes[..bytes.len() * 3 / 5]).expect("cut");
    let cut_html = out.join("report-truncated.html");
    let r = report(&[
        cut.to_str().expect("utf8"),
        "-o",
        cut_html.to_str().expect("utf8"),
    ]);
    assert!(
        r.status.success(),
        "report of a truncated file failed: {}",
        r.stderr
    );
    assert!(r.stderr.contains("warning"), "{}", r.stderr);
    assert!(r.stderr.contains("evidence INCOMPLETE"), "{}", r.stderr);
    let seen = open(&mut b, &cut_html, None);
    assert!(
        seen.notice.contains("Incomplete evidence") && seen.notice.contains("middle of a frame"),
        "no incomplete notice: {}",
        seen.notice
    );
    assert!(seen.errors.is_empty(), "{:?}", seen.errors);

    // On a terminal, the progress line is drawn (`script` runs the command on a pty).
    let cmd = format!(
        "{} report {rec_s} -o {}",
        tracer_bin().display(),
        scratch.0.join("tty.html").display()
    );
    let transcript = on_a_terminal(&cmd);
    assert!(
        transcript.contains("reading [") && transcript.contains(" loss windows"),
        "no progress line on a terminal: {transcript:?}"
    );

    // Bad input is one line.
    let r = report(&[
        "/nonexistent.trec",
        "-o",
        scratch.0.join("x.html").to_str().expect("utf8"),
    ]);
    assert!(!r.status.success());
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("opening recording"), "{}", r.stderr);
}
