//! `--metrics-addr` checked with the real tools: a Prometheus server (Debian's `prometheus`)
//! started on localhost with a configuration of its own scrapes the tracer every second while
//! pods of a two-node lab talk and a lab fault (`policy-drop`) drops their packets; the test
//! then asks Prometheus's HTTP API for the drop series (reason `NETFILTER_DROP`, on node2's
//! `vxlan.calico`), the verdict, the latency histograms and the programs' costs (with the
//! kernel's run-time statistics on), and `promtool check metrics` checks a scrape of the
//! endpoint. Prometheus is stopped and its directory removed also when
//! the test fails (RAII), as is the lab.
//!
//! Also: `tracer record` (which correlates nothing itself) and `tracer stats --kernel-agg`
//! (no trace per packet: the kernel's histograms) serve the same families, scraped directly;
//! and (no root needed) a metrics address already in use is a one-line error.
//!
//! The lab tests run one at a time (a lock): every lab uses the same pod addresses.

mod common;

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{require_root, run_tracer, Tracer};
use lab::{traffic, Encap, Fault};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// A port nobody listens on now (the kernel's choice; free again when this returns).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET path` over HTTP/1.0 (the body then ends with the connection); status and body.
fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// A Prometheus server scraping `target` every second, on a port of its own, with its
/// configuration and storage in a directory of its own; stopped and removed on drop.
struct Prometheus {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        assert!(
            std::path::Path::new(PROMETHEUS).exists() && std::path::Path::new(PROMTOOL).exists(),
            "{PROMETHEUS} / {PROMTOOL} not found: install Debian's `prometheus` package \
             (`cargo xtask setup` does)"
        );
        let dir = std::env::temp_dir().join(format!(
            "tracer-test-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        fs::create_dir_all(&dir).expect("prometheus temp dir");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: tracer\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus {
            child: Some(child),
            dir,
            addr,
        };
        p.wait_ready();
        p
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/-/ready", None) {
                return;
            }
            let child = self.child.as_mut().expect("prometheus");
            if let Ok(Some(status)) = child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "prometheus not ready after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The instant vector of a PromQL query: `(labels, value)` per series.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (status, body) = http_get(self.addr, &path, None).expect("query prometheus");
        assert_eq!(status, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus answers JSON");
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"]
            .as_array()
            .expect("a vector")
            .iter()
            .map(|s| {
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .expect("a sample value");
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// Queries until `ok` holds for the result (Prometheus scrapes every second), at most 30 s.
    fn wait_for(&self, promql: &str, ok: impl Fn(&[(Value, f64)]) -> bool) -> Vec<(Value, f64)> {
        let started = Instant::now();
        loop {
            let r = self.query(promql);
            if ok(&r) {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Prometheus never had what `{promql}` should give (last: {r:?}); targets: {}",
                http_get(self.addr, "/api/v1/targets", None)
                    .map(|(_, b)| b)
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let started = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `promtool check metrics` on `scrape`: its exit status and what it said.
fn promtool_check(scrape: &str) -> (bool, String) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn prometheus_scrapes_drops_verdicts_and_latency() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tpm", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let a = topo.pod("n1p0").expect("n1p0").clone();
    let c = topo.pod("n2p0").expect("n2p0").clone();
    let node2 = topo.node("node2").expect("node2").netns.clone();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        format!("host {} and host {}", a.ip, c.ip),
        "--output".into(),
        "json".into(),
        "--linger-ms".into(),
        "100".into(),
        "--metrics-addr".into(),
        metrics.to_string(),
    ]);
    // The kernel counts program runs while a BPF_ENABLE_STATS descriptor is open, as it does
    // with `kernel.bpf_stats_enabled=1`, without touching the sysctl that other users of this
    // machine may set: open before the tracer starts, closed at the end.
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
    let tracer = Tracer::start(&args);
    let prom = Prometheus::start(metrics);

    // Traffic that gets through: every segment of the VXLAN path, both ways.
    traffic::ping(&a.netns, c.ip, 5, true).expect("ping n1p0 -> n2p0");
    // Then the fault: node2's forward hook drops what goes to n2p0.
    let info = lab::break_lab(&topo, Fault::PolicyDrop).expect("break policy-drop");
    let probe = Fault::PolicyDrop.probe(&topo).expect("probe");
    assert!(
        !probe.run(&topo, Duration::from_millis(500)).expect("probe"),
        "the probe got through under {}",
        info.description
    );

    let drops = prom.wait_for(
        r#"tracer_kernel_drops_total{reason="NETFILTER_DROP"}"#,
        |r| r.iter().any(|(_, v)| *v >= 1.0),
    );
    assert!(
        drops.iter().any(|(m, v)| m["node"] == node2.as_str()
            && m["interface"] == "vxlan.calico"
            && m["job"] == "tracer"
            && *v >= 1.0),
        "the drop is not on {node2} vxlan.calico: {drops:?}"
    );
    prom.wait_for(r#"tracer_verdicts_total{verdict="firewall-drop"}"#, |r| {
        r.iter().any(|(_, v)| *v >= 1.0)
    });
    // Latency: the histograms of the path's segments, and a quantile Prometheus computes
    // from their buckets.
    for segment in ["node-tx", "encap", "wire", "decap", "node-rx", "total"] {
        prom.wait_for(
            &format!(r#"tracer_segment_latency_seconds_count{{segment="{segment}"}}"#),
            |r| r.iter().any(|(_, v)| *v >= 5.0),
        );
    }
    let buckets = prom.query(r#"tracer_segment_latency_seconds_bucket{segment="total"}"#);
    assert!(buckets.len() > 10, "total's buckets: {buckets:?}");
    let p50 = prom.query(
        r#"histogram_quantile(0.5, tracer_segment_latency_seconds_bucket{segment="total"})"#,
    );
    assert!(
        p50.len() == 1 && p50[0].1 > 0.0 && p50[0].1 < 0.1,
        "median of total: {p50:?}"
    );
    let packets = prom.query(r#"tracer_traced_packets_total"#);
    assert!(
        topo.nodes.iter().all(|n| packets
            .iter()
            .any(|(m, v)| m["node"] == n.netns.as_str() && *v >= 10.0)),
        "traced packets per node: {packets:?}"
    );
    let losses = prom.query("tracer_own_losses_total");
    let causes: Vec<&str> = losses
        .iter()
        .filter_map(|(m, _)| m["cause"].as_str())
        .collect();
    for cause in [
        "ringbuf_full",
        "decode_error",
        "drop_read_error",
        "agg_map_full",
    ] {
        assert!(causes.contains(&cause), "own losses: {losses:?}");
    }
    // Program costs: the kernel counts while the statistics are on (held on by `_stats`).
    // (The sysctl shows what was written to it, not the descriptors: it may say 0 here.)
    assert_eq!(prom.query("tracer_bpf_stats_enabled").len(), 1);
    for program in ["hop_ingress", "hop_egress", "kfree_skb_btf"] {
        prom.wait_for(
            &format!(r#"sum(tracer_program_runs_total{{program="{program}"}})"#),
            |r| r.len() == 1 && r[0].1 >= 5.0,
        );
        prom.wait_for(
            &format!(r#"sum(tracer_program_run_seconds_total{{program="{program}"}})"#),
            |r| r.len() == 1 && r[0].1 > 0.0,
        );
    }

    // The endpoint's own scrape, as curl would fetch it, passes promtool's checks; the
    // OpenMetrics one (what Prometheus asked for) ends as the format says.
    let (status, scrape) = http_get(metrics, "/metrics", None).expect("scrape");
    assert_eq!(status, 200, "{scrape}");
    let (ok, said) = promtool_check(&scrape);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}\n{scrape}"
    );
    let (_, om) = http_get(
        metrics,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .expect("scrape");
    assert!(om.ends_with("# EOF\n"), "{om}");

    drop(prom);
    let out = tracer.stop();
    assert!(out.status.success(), "tracer failed: {}", out.stderr);
    let summary = out.summary();
    assert!(
        summary["dropped"].as_u64().is_some_and(|n| n >= 1),
        "{summary}"
    );
    drop(lab);
}

/// The value of `series` (name and labels as the text format writes them) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().ok())?
    })
}

/// Scrapes `addr` until every `(series, at least)` holds (at most 20 s); the last scrape.
fn scrape_until(addr: SocketAddr, want: &[(&str, f64)]) -> String {
    let started = Instant::now();
    loop {
        let (status, scrape) = http_get(addr, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{scrape}");
        if want
            .iter()
            .all(|(s, min)| sample(&scrape, s).is_some_and(|v| v >= *min))
        {
            return scrape;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never got {want:?} in\n{scrape}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn record_and_kernel_agg_stats_serve_the_families() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::lab_up("tpr", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let a = topo.pod("n1p0").expect("n1p0").clone();
    let c = topo.pod("n2p0").expect("n2p0").clone();
    let recording = RemovedOnDrop(
        std::env::temp_dir().join(format!("tracer-test-metrics-{}.trec", std::process::id())),
    );
    for cmd in ["record", "stats"] {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut args: Vec<String> = Vec::new();
        for n in &topo.nodes {
            args.extend(["--netns".into(), n.netns.clone()]);
        }
        args.extend([
            "--filter".into(),
            format!("host {} and host {}", a.ip, c.ip),
            "--metrics-addr".into(),
            metrics.to_string(),
        ]);
        match cmd {
            "record" => args.extend(["--write".into(), recording.0.display().to_string()]),
            _ => args.push("--kernel-agg".into()),
        }
        let tracer = Tracer::start_cmd(cmd, &args);
        traffic::ping(&a.netns, c.ip, 5, true).expect("ping n1p0 -> n2p0");
        // Requests and replies: ten packets, each through every segment of the path.
        let mut want = vec![(
            r#"tracer_segment_latency_seconds_count{segment="wire"}"#,
            10.0,
        )];
        if cmd == "record" {
            want.extend([
                (r#"tracer_traces_total{outcome="delivered"}"#, 10.0),
                (
                    r#"tracer_segment_latency_seconds_count{segment="total"}"#,
                    10.0,
                ),
            ]);
        } else {
            want.push((
                r#"tracer_segment_latency_seconds_count{segment="node-tx"}"#,
                10.0,
            ));
        }
        let scrape = scrape_until(metrics, &want);
        let (ok, said) = promtool_check(&scrape);
        assert!(
            ok && said.trim().is_empty(),
            "{cmd}: promtool: {said}\n{scrape}"
        );
        let out = tracer.stop();
        assert!(out.status.success(), "{cmd} failed: {}", out.stderr);
    }
    drop(lab);
}

/// A file removed when dropped, also when the test fails.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn a_metrics_address_in_use_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for cmd in ["trace", "stats", "record"] {
        let mut args = vec![cmd, "--metrics-addr", &addr, "--duration", "1s"];
        if cmd == "record" {
            args.extend(["--write", "/dev/null"]);
        }
        let out = run_tracer(&args);
        assert!(!out.status.success(), "{cmd}: {}", out.stderr);
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "{cmd}: not one line:\n{}", out.stderr);
        assert!(
            lines[0].contains(&addr) && lines[0].contains("already in use"),
            "{cmd}: {}",
            lines[0]
        );
        assert!(out.stdout.is_empty(), "{cmd}: {}", out.stdout);
    }
}
