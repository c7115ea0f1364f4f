//! The metric families as a scrape shows them: names, label sets, values fed through a real
//! pipeline, the cardinality bound, the kernel readings, and the endpoint.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

use super::families::{
    Families, LOSS_CAUSES, MAX_DROP_SERIES, MAX_NAMESPACE_SERIES, OTHER_IFACE, OTHER_NAMESPACE,
};
use super::observer::{KernelReadings, TraceCounter};
use super::server::{self, parse_addr, read_request, Route, Server};
use crate::capture::ProgramRuns;
use crate::fixtures::*;
use crate::latency::ClockModel;
use crate::model::{DropPoint, LossCounters, ObjectKind, ObjectName, Outcome, Trace};
use crate::names::DropNames;
use crate::pipeline::{Observer, Pipeline, PipelineConfig, PrintArgs};
use crate::render::Output;

/// Names every drop reason `self.0`.
struct Named(&'static str);

impl DropNames for Named {
    fn reason_name(&self, _value: u32) -> String {
        self.0.to_string()
    }

    fn location(&self, addr: u64) -> String {
        format!("{addr:#x}")
    }
}

fn registry(bpf_stats: bool) -> (Registry, Families) {
    let mut r = Registry::with_prefix("tracer");
    let f = Families::register(&mut r, bpf_stats, None);
    (r, f)
}

fn openmetrics(r: &Registry) -> String {
    let mut s = String::new();
    text::encode(&mut s, r).unwrap();
    s
}

/// The value of the sample line `series` (name and labels exactly as encoded).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().unwrap())
    })
}

/// A VXLAN packet delivered pod A -> pod C, and one dropped on node1's vxlan.calico, through a
/// pipeline that tells the metrics; returns the scrape and the traces the pipeline emitted.
fn traced() -> (String, Vec<Trace>) {
    let (r, f) = registry(true);
    let print = PrintArgs {
        count: None,
        output: Output::Json,
        linger_ms: 300,
    };
    let cfg = PipelineConfig {
        collect: true,
        ..print.pipeline_config(ClockModel::shared_kernel())
    };
    let mut out = Vec::new();
    let mut pipe = Pipeline::new(topology(), cfg, &mut out);
    pipe.set_observer(Box::new(TraceCounter::new(f)));
    for h in vxlan_path(icmp(1), 1_000) {
        pipe.push_hop(h);
    }
    for h in &vxlan_path(icmp(2), 5_000_000)[..2] {
        pipe.push_hop(h.clone());
    }
    pipe.push_drop(
        &drop_of(icmp(2), NS1, VXLAN, 5_010_000),
        &Named("NO_TX_TARGET"),
    );
    pipe.close_all().unwrap();
    let traces = pipe.write_summary(LossCounters::default()).unwrap();
    (openmetrics(&r), traces)
}

#[test]
fn a_pipeline_feeds_every_trace_family() {
    let (scrape, traces) = traced();
    assert_eq!(traces.len(), 2, "{traces:?}");
    let dropped = traces
        .iter()
        .find(|t| t.outcome == Outcome::Dropped)
        .expect("a dropped trace");
    let verdict = dropped.verdict.as_ref().expect("a verdict").name;
    let v = |series: &str| value(&scrape, series);
    assert_eq!(
        v(
            r#"tracer_kernel_drops_total{node="node1",interface="vxlan.calico",reason="NO_TX_TARGET"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        v(&format!(r#"tracer_verdicts_total{{verdict="{verdict}"}}"#)),
        Some(1.0)
    );
    assert_eq!(v(r#"tracer_traces_total{outcome="delivered"}"#), Some(1.0));
    assert_eq!(v(r#"tracer_traces_total{outcome="dropped"}"#), Some(1.0));
    assert_eq!(v(r#"tracer_traces_total{outcome="lost"}"#), Some(0.0));
    // Both packets were on node1, one reached node2; bytes at each node's first hop.
    assert_eq!(v(r#"tracer_traced_packets_total{node="node1"}"#), Some(2.0));
    assert_eq!(v(r#"tracer_traced_packets_total{node="node2"}"#), Some(1.0));
    assert_eq!(v(r#"tracer_traced_bytes_total{node="node1"}"#), Some(168.0));
    assert_eq!(v(r#"tracer_traced_bytes_total{node="node2"}"#), Some(134.0));
    // node-tx of the delivered packet: 11,920 ns, in the bucket up to 16,384 ns, not below.
    let seg = |s: &str, le: &str| {
        v(&format!(
            r#"tracer_segment_latency_seconds_bucket{{le="{le}",segment="{s}"}}"#
        ))
    };
    assert_eq!(seg("node-tx", "0.000008192"), Some(0.0), "{scrape}");
    assert_eq!(seg("node-tx", "0.000016384"), Some(1.0));
    assert_eq!(seg("node-tx", "+Inf"), Some(1.0));
    let count = |s: &str| {
        v(&format!(
            r#"tracer_segment_latency_seconds_count{{segment="{s}"}}"#
        ))
    };
    for s in ["node-tx", "encap", "wire", "decap", "node-rx", "total"] {
        assert_eq!(count(s), Some(1.0), "{s} in {scrape}");
    }
    assert_eq!(count("same-node"), Some(0.0));
    let sum = v(r#"tracer_segment_latency_seconds_sum{segment="total"}"#).unwrap();
    assert!((sum - 31_250e-9).abs() < 1e-12, "total sum {sum}");
}

#[test]
fn the_encoding_has_the_documented_names_types_and_units() {
    let (r, f) = registry(true);
    let mut kernel = KernelReadings::new(f.clone());
    kernel.programs(&[ProgramRuns {
        node: String::new(),
        program: "kfree_skb_btf".into(),
        run_count: 1,
        run_time_ns: 1,
    }]);
    let mut counter = TraceCounter::new(f);
    let (_, traces) = traced();
    for t in &traces {
        counter.trace(t, &ClockModel::shared_kernel());
    }
    let scrape = openmetrics(&r);
    for line in [
        "# TYPE tracer_kernel_drops counter",
        "# TYPE tracer_verdicts counter",
        "# TYPE tracer_traces counter",
        "# TYPE tracer_segment_latency_seconds histogram",
        "# UNIT tracer_segment_latency_seconds seconds",
        "# TYPE tracer_traced_packets counter",
        "# TYPE tracer_traced_bytes counter",
        "# UNIT tracer_traced_bytes bytes",
        "# TYPE tracer_own_losses counter",
        "# TYPE tracer_program_runs counter",
        "# TYPE tracer_program_run_seconds counter",
        "# TYPE tracer_bpf_stats_enabled gauge",
    ] {
        assert!(
            scrape.lines().any(|l| l == line),
            "no `{line}` in\n{scrape}"
        );
    }
    assert!(scrape.ends_with("# EOF\n"));
    // The Prometheus text format carries the same series.
    let mut plain = String::new();
    prometheus_text::encode(&mut plain, &r).unwrap();
    assert!(
        plain.contains("# TYPE tracer_own_losses_total counter"),
        "{plain}"
    );
    assert!(plain.contains("\ntracer_program_runs_total{node=\"\",program=\"kfree_skb_btf\"} 1\n"));
    assert!(!plain.contains("# EOF"));
}

/// Every label name of every sample line.
fn label_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in scrape.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = l.split_once('{') else {
            continue;
        };
        let labels = labels.rsplit_once('}').unwrap().0;
        for kv in labels.split("\",") {
            names.insert(kv.split_once('=').unwrap().0.to_string());
        }
    }
    names
}

#[test]
fn no_label_carries_a_packet_an_address_or_a_port() {
    let (scrape, _) = traced();
    let allowed: BTreeSet<String> = [
        "node",
        "interface",
        "reason",
        "verdict",
        "outcome",
        "segment",
        "cause",
        "program",
        "le",
    ]
    .map(String::from)
    .into();
    let names = label_names(&scrape);
    assert!(names.is_subset(&allowed), "{names:?}");
    for addr in ["10.244.", "10.10.0.", "4789", "51234"] {
        assert!(!scrape.contains(addr), "{addr} in\n{scrape}");
    }
}

fn drop_point(node: &str, ifname: String, reason: &str) -> DropPoint {
    DropPoint {
        node: node.into(),
        netns: NS1,
        ifindex: 0,
        ifname,
        ts_ns: 1,
        reason: reason.into(),
        reason_code: 0,
        function: "f".into(),
        location: 0,
        len: 0,
        encap: None,
        snap: None,
    }
}

#[test]
fn drop_series_are_capped() {
    let (r, f) = registry(true);
    let mut counter = TraceCounter::new(f.clone());
    let extra = 50;
    let mut t = Trace {
        packet: icmp(1),
        tcp_flags: 0,
        icmp_type: 8,
        hops: Vec::new(),
        outcome: Outcome::Dropped,
        drop: None,
        routes: Vec::new(),
        verdict: None,
        tracer_loss: false,
        nat: Vec::new(),
        names: Vec::new(),
        answers: None,
    };
    for i in 0..MAX_DROP_SERIES + extra {
        t.drop = Some(drop_point(
            "node1",
            format!("cali{i:011}"),
            "NETFILTER_DROP",
        ));
        counter.trace(&t, &ClockModel::shared_kernel());
    }
    // A series that exists goes on counting in its own place.
    t.drop = Some(drop_point(
        "node1",
        format!("cali{:011}", 0),
        "NETFILTER_DROP",
    ));
    counter.trace(&t, &ClockModel::shared_kernel());
    let scrape = openmetrics(&r);
    assert_eq!(
        scrape.matches("tracer_kernel_drops_total{").count(),
        MAX_DROP_SERIES + 1
    );
    let other = format!(
        r#"tracer_kernel_drops_total{{node="node1",interface="{OTHER_IFACE}",reason="NETFILTER_DROP"}}"#
    );
    assert_eq!(value(&scrape, &other), Some(extra as f64));
    let first = r#"tracer_kernel_drops_total{node="node1",interface="cali00000000000",reason="NETFILTER_DROP"}"#;
    assert_eq!(value(&scrape, first), Some(2.0));
}

/// A pod of namespace `ns` at `addr`.
fn pod_named(addr: std::net::Ipv4Addr, ns: &str) -> (std::net::Ipv4Addr, Arc<ObjectName>) {
    let name = ObjectName {
        kind: ObjectKind::Pod,
        namespace: ns.into(),
        name: "p".into(),
        node: None,
    };
    (addr, Arc::new(name))
}

#[test]
fn drops_count_by_the_senders_namespace_else_the_receivers_and_are_capped() {
    let (r, f) = registry(true);
    let mut counter = TraceCounter::new(f);
    let mut t = Trace {
        packet: icmp(1),
        tcp_flags: 0,
        icmp_type: 8,
        hops: Vec::new(),
        outcome: Outcome::Dropped,
        drop: Some(drop_point("node1", "cali0".into(), "NETFILTER_DROP")),
        routes: Vec::new(),
        verdict: None,
        tracer_loss: false,
        nat: Vec::new(),
        names: Vec::new(),
        answers: None,
    };
    let clock = ClockModel::shared_kernel();
    // No names (no cluster): no series.
    counter.trace(&t, &clock);
    t.names = vec![pod_named(t.packet.dst, "db")];
    counter.trace(&t, &clock);
    t.names.push(pod_named(t.packet.src, "web"));
    counter.trace(&t, &clock);
    counter.trace(&t, &clock);
    for i in 0..MAX_NAMESPACE_SERIES + 3 {
        t.names = vec![pod_named(t.packet.src, &format!("ns{i}"))];
        counter.trace(&t, &clock);
    }
    let scrape = openmetrics(&r);
    let series = |ns: &str| {
        format!(r#"tracer_namespace_drops_total{{namespace="{ns}",reason="NETFILTER_DROP"}}"#)
    };
    assert_eq!(value(&scrape, &series("db")), Some(1.0), "{scrape}");
    assert_eq!(value(&scrape, &series("web")), Some(2.0));
    assert_eq!(
        scrape.matches("tracer_namespace_drops_total{").count(),
        MAX_NAMESPACE_SERIES + 1
    );
    assert_eq!(value(&scrape, &series(OTHER_NAMESPACE)), Some(5.0));
    // Every drop is still in the kernel drops.
    let all =
        r#"tracer_kernel_drops_total{node="node1",interface="cali0",reason="NETFILTER_DROP"}"#;
    assert_eq!(
        value(&scrape, all),
        Some((4 + MAX_NAMESPACE_SERIES + 3) as f64)
    );
}

#[test]
fn own_losses_are_apart_and_complete() {
    let (r, f) = registry(true);
    let scrape = openmetrics(&r);
    for cause in LOSS_CAUSES {
        let series = format!(r#"tracer_own_losses_total{{cause="{cause}"}}"#);
        assert_eq!(value(&scrape, &series), Some(0.0), "{series} at start");
    }
    let mut counter = TraceCounter::new(f.clone());
    let mut kernel = KernelReadings::new(f);
    counter.decode_errors(3);
    let mut loss = LossCounters {
        ringbuf_full: 10,
        drop_read_errors: 2,
        agg_map_full: 1,
        // Not losses: exclusions, never in this family.
        filtered: 1000,
        not_ipv4: 7,
        ..LossCounters::default()
    };
    kernel.losses(&loss);
    loss.ringbuf_full = 15;
    kernel.losses(&loss);
    kernel.losses(&loss);
    let scrape = openmetrics(&r);
    let v = |cause: &str| {
        value(
            &scrape,
            &format!(r#"tracer_own_losses_total{{cause="{cause}"}}"#),
        )
    };
    assert_eq!(v("ringbuf_full"), Some(15.0));
    assert_eq!(v("decode_error"), Some(3.0));
    assert_eq!(v("drop_read_error"), Some(2.0));
    assert_eq!(v("agg_map_full"), Some(1.0));
    assert_eq!(
        scrape.matches("tracer_own_losses_total{").count(),
        LOSS_CAUSES.len()
    );
    assert!(!scrape.contains("tracer_kernel_drops_total{"), "{scrape}");
}

#[test]
fn program_costs_follow_the_kernel_and_say_when_it_does_not_count() {
    let (r, f) = registry(true);
    let mut kernel = KernelReadings::new(f);
    let run = |count, ns| ProgramRuns {
        node: "node1".into(),
        program: "hop_ingress".into(),
        run_count: count,
        run_time_ns: ns,
    };
    kernel.programs(&[run(100, 12_000)]);
    kernel.programs(&[run(250, 30_000)]);
    kernel.bpf_stats_enabled(true);
    let scrape = openmetrics(&r);
    let labels = r#"{node="node1",program="hop_ingress"}"#;
    assert_eq!(
        value(&scrape, &format!("tracer_program_runs_total{labels}")),
        Some(250.0)
    );
    let secs = value(
        &scrape,
        &format!("tracer_program_run_seconds_total{labels}"),
    )
    .unwrap();
    assert!((secs - 30e-6).abs() < 1e-12, "{secs}");
    assert_eq!(value(&scrape, "tracer_bpf_stats_enabled"), Some(1.0));
    assert!(!scrape.contains("bpf_stats_enabled was 0"));

    let (r, f) = registry(false);
    KernelReadings::new(f).programs(&[run(0, 0)]);
    let scrape = openmetrics(&r);
    for family in ["tracer_program_runs", "tracer_program_run_seconds"] {
        let help = scrape
            .lines()
            .find(|l| l.starts_with(&format!("# HELP {family} ")))
            .unwrap();
        assert!(help.contains("kernel.bpf_stats_enabled was 0"), "{help}");
    }
}

#[test]
fn metrics_addresses() {
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(parse_addr("9474"), Ok(local(9474)));
    assert_eq!(parse_addr(":9100"), Ok(local(9100)));
    assert_eq!(parse_addr("localhost:8080"), Ok(local(8080)));
    assert_eq!(parse_addr("127.0.0.1:1"), Ok(local(1)));
    assert_eq!(
        parse_addr("0.0.0.0:9474"),
        Ok(SocketAddr::from(([0, 0, 0, 0], 9474)))
    );
    assert_eq!(parse_addr("[::1]:9474"), Ok("[::1]:9474".parse().unwrap()));
    assert_eq!(
        parse_addr(super::server::DEFAULT_ADDR),
        Ok(local(9474)),
        "the default is localhost"
    );
    for bad in ["", "host:1", "70000", "10.0.0.1", "example.com:9474"] {
        let e = parse_addr(bad).unwrap_err();
        assert!(
            e.contains("invalid metrics address") && !e.contains('\n'),
            "{e}"
        );
    }
}

#[test]
fn requests_are_routed() {
    let route = |req: &str| read_request(&mut req.as_bytes()).unwrap();
    assert_eq!(
        route("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"),
        Some(Route::Metrics { openmetrics: true, head: false })
    );
    assert_eq!(
        route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
        Some(Route::Metrics {
            openmetrics: false,
            head: false
        })
    );
    assert_eq!(
        route("HEAD /metrics HTTP/1.1\r\n\r\n"),
        Some(Route::Metrics {
            openmetrics: false,
            head: true
        })
    );
    assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Some(Route::NotFound));
    assert_eq!(
        route("POST /metrics HTTP/1.1\r\n\r\n"),
        Some(Route::MethodNotAllowed)
    );
    assert_eq!(
        route("\x16\x03\x01garbage\r\n\r\n"),
        Some(Route::BadRequest)
    );
    // A head that never ends within the bound.
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(10_000));
    assert_eq!(route(&long), Some(Route::BadRequest));
    assert_eq!(route(""), None);
}

/// One request to the endpoint; the whole response.
fn get(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_endpoint_serves_openmetrics_and_the_text_format() {
    let (r, f) = registry(true);
    f.own_loss("ringbuf_full").inc_by(4);
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let srv = Server::start(listener, Arc::new(r)).unwrap();
    let addr = srv.addr();
    let om = get(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n",
    );
    assert!(om.starts_with("HTTP/1.1 200 OK\r\n"), "{om}");
    assert!(om.contains("\r\nContent-Type: application/openmetrics-text; version=1.0.0"));
    assert!(om.contains("\ntracer_own_losses_total{cause=\"ringbuf_full\"} 4\n"));
    assert!(om.ends_with("# EOF\n"));
    let (head, body) = om.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(&format!("Content-Length: {}", body.len())));

    let plain = get(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(
        plain.contains("\r\nContent-Type: text/plain; version=0.0.4"),
        "{plain}"
    );
    assert!(!plain.contains("# EOF"));
    assert!(get(addr, "GET /x HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    // A client that connects and says nothing does not stop the next one being served.
    let idle = TcpStream::connect(addr).unwrap();
    assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    drop(idle);
    drop(srv);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}

#[test]
fn an_address_in_use_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = server::bind(addr).unwrap_err().to_string();
    assert!(
        e.contains(&addr.to_string()) && e.contains("already in use"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn kernel_histograms_are_served_at_exact_bounds() {
    use super::kernel_agg::{convert, KernelLatency};
    use tracer_common::{HIST_BUCKETS, N_SEGMENTS, SEG_NODE_TX};

    let mut node_tx = [0u64; HIST_BUCKETS];
    // [8, 16) ns, [8192, 16384) ns, [2^40, 2^41) ns.
    (node_tx[3], node_tx[13], node_tx[40]) = (2, 5, 1);
    let (buckets, count, sum) = convert(&node_tx);
    assert_eq!(count, 8);
    let want_sum = (2.0 * 8.0 + 5.0 * 8192.0 + 2f64.powi(40)) * 1e-9;
    assert!((sum - want_sum).abs() < 1e-9, "{sum}");
    assert_eq!(buckets.len(), 24);
    assert_eq!(buckets[0], (256e-9, 2));
    assert_eq!(buckets[6], (16384e-9, 5));
    assert_eq!(buckets[23], (f64::INFINITY, 1));
    assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), count);

    let mut r = Registry::with_prefix("tracer");
    let k = KernelLatency::new();
    Families::register(&mut r, true, Some(k.clone()));
    let empty = openmetrics(&r);
    assert_eq!(
        value(
            &empty,
            r#"tracer_segment_latency_seconds_count{segment="wire"}"#
        ),
        Some(0.0),
        "{empty}"
    );
    let mut hist = vec![[0u64; HIST_BUCKETS]; N_SEGMENTS as usize];
    hist[SEG_NODE_TX as usize] = node_tx;
    k.set(hist);
    let scrape = openmetrics(&r);
    assert_eq!(
        scrape
            .lines()
            .filter(|l| *l == "# TYPE tracer_segment_latency_seconds histogram")
            .count(),
        1,
        "{scrape}"
    );
    let bucket = |le: &str| {
        value(
            &scrape,
            &format!(r#"tracer_segment_latency_seconds_bucket{{le="{le}",segment="node-tx"}}"#),
        )
    };
    assert_eq!(bucket("2.56e-7"), Some(2.0), "{scrape}");
    assert_eq!(bucket("0.000008192"), Some(2.0));
    assert_eq!(bucket("0.000016384"), Some(7.0));
    assert_eq!(bucket("1.073741824"), Some(7.0));
    assert_eq!(bucket("+Inf"), Some(8.0));
    let mut plain = String::new();
    prometheus_text::encode(&mut plain, &r).unwrap();
    assert!(plain.contains("tracer_segment_latency_seconds_count{segment=\"node-tx\"} 8\n"));
}

#[test]
fn the_flag_alone_is_localhost() {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        metrics: super::MetricsArgs,
    }
    let parse = |args: &[&str]| {
        Cli::try_parse_from([&["tracer"], args].concat())
            .map(|c| c.metrics.metrics_addr)
            .map_err(|e| e.to_string())
    };
    assert_eq!(parse(&[]), Ok(None));
    assert_eq!(
        parse(&["--metrics-addr"]),
        Ok(Some("127.0.0.1:9474".parse().unwrap()))
    );
    assert_eq!(
        parse(&["--metrics-addr", "9100"]),
        Ok(Some("127.0.0.1:9100".parse().unwrap()))
    );
    assert_eq!(
        parse(&["--metrics-addr", "0.0.0.0:9100"]),
        Ok(Some("0.0.0.0:9100".parse().unwrap()))
    );
    let e = parse(&["--metrics-addr", "nine"]).unwrap_err();
    assert!(e.contains("invalid metrics address 'nine'"), "{e}");
}
