//! The lab's Services (`lab up --services`) traced through the kernel's real NAT: kube-proxy's
//! iptables-nft chains and Calico's natOutgoing, in a VXLAN lab and a lab without
//! encapsulation (IPIP needs a real `tunl0`, which this machine's kernel lacks: the VM tests
//! are where IPIP runs).
//!
//! Per lab, under one tracer on both nodes:
//! - DNS over UDP and over TCP from n1p0 to the DNS Service 10.96.0.10:53, answered by the
//!   responder pod on node2: the request is one trace, DNATed on node1 to the responder, through
//!   node1's tunnel (VXLAN) or uplink (none) to the responder's veth; the reply is one trace with
//!   the un-DNAT step back to the Service address;
//! - the ClusterIP Service `default/web` reaches both of its endpoints (one per node);
//! - the NodePort from the outside machine: DNAT to the web pod on node2 and SNAT to node1
//!   (the pod sees node1, not the outside machine), traced as one request with both steps;
//! - natOutgoing: pod traffic to the outside machine arrives masqueraded to node1's address,
//!   traced with the SNAT step.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{require_root, Tracer};
use lab::services::probe::{dns_query, web_get};
use lab::{Encap, LabSpec, Topology};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(2);

fn services_lab(prefix: &str, encap: Encap) -> lab::Lab {
    require_root();
    let spec = LabSpec {
        prefix: prefix.into(),
        nodes: 2,
        pods_per_node: 1,
        encap,
        services: Some(lab::services::ServicesSpec::default()),
    };
    lab::down_prefix(prefix).expect("clean leftovers of an earlier run");
    lab::Lab::up(&spec).expect("lab up --services")
}

fn ip(v: &Value) -> Ipv4Addr {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {v}"))
}

/// The traces of packets `src -> dst:dport` of protocol `proto` (`tcp`, `udp`).
fn flows<'a>(
    traces: &'a [Value],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: &str,
    dport: Option<u16>,
) -> Vec<&'a Value> {
    traces
        .iter()
        .filter(|t| {
            let p = &t["packet"];
            ip(&p["src"]) == src
                && ip(&p["dst"]) == dst
                && p["proto"] == proto
                && dport.is_none_or(|d| p["dport"].as_u64() == Some(u64::from(d)))
        })
        .collect()
}

/// The interfaces a trace went through, `node/ifname/dir`.
fn path(t: &Value) -> Vec<String> {
    t["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            format!(
                "{}/{}/{}",
                h["node"].as_str().unwrap_or("?"),
                h["ifname"].as_str().unwrap_or("?"),
                h["dir"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// A request through DNAT on node1 to `ep` (`ep_port`): delivered to the endpoint's veth, one
/// DNAT step on node1 from `svc` to `ep`, through node1's tunnel or uplink.
fn assert_dnat_request(t: &Value, topo: &Topology, svc: (Ipv4Addr, u16), ep: (Ipv4Addr, u16)) {
    let n1 = topo.node("node1").unwrap();
    let pod = topo.pod_by_ip(ep.0).expect("endpoint pod");
    assert_eq!(t["outcome"], "delivered", "{t}");
    let step = &t["nat"][0];
    assert_eq!(step["kind"], "DNAT", "{t}");
    assert_eq!(step["node"], n1.netns.as_str(), "{t}");
    assert_eq!(
        (ip(&step["from"]["dst"]), step["from"]["dport"].as_u64()),
        (svc.0, Some(u64::from(svc.1))),
        "{t}"
    );
    assert_eq!(
        (ip(&step["to"]["dst"]), step["to"]["dport"].as_u64()),
        (ep.0, Some(u64::from(ep.1))),
        "{t}"
    );
    let hops = path(t);
    let out_dev = match topo.encap {
        Encap::Vxlan => "vxlan.calico",
        _ => "eth0",
    };
    if pod.node != "node1" {
        assert!(
            hops.contains(&format!("{}/{out_dev}/egress", n1.netns)),
            "through node1's {out_dev}: {hops:?}"
        );
    }
    let last = hops.last().expect("a hop");
    assert!(
        last.ends_with(&format!("/{}/egress", pod.cali)),
        "ends at the endpoint's veth {}: {hops:?}",
        pod.cali
    );
    let translated = t["hops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["translated"] == true);
    assert!(translated, "hops after the DNAT are marked: {t}");
}

/// The reply to a DNATed request: delivered, with the un-DNAT step back to `svc`.
fn assert_undnat_reply(t: &Value, svc: (Ipv4Addr, u16)) {
    assert_eq!(t["outcome"], "delivered", "{t}");
    let step = &t["nat"][0];
    assert_eq!(step["kind"], "un-DNAT", "{t}");
    assert_eq!(
        (ip(&step["to"]["src"]), step["to"]["sport"].as_u64()),
        (svc.0, Some(u64::from(svc.1))),
        "{t}"
    );
}

fn check(prefix: &str, encap: Encap) {
    let lab = services_lab(prefix, encap);
    let topo = lab.topology().clone();
    let s = topo.services.clone().expect("services");
    let client = topo.pod("n1p0").unwrap().clone();
    let n1 = topo.node("node1").unwrap().clone();
    let dns = s.service("kube-system/kube-dns").unwrap().clone();
    let dns_ep = dns.endpoints[0].clone();
    let web = s.service("default/web").unwrap().clone();
    let np = s.service("default/web-np").unwrap().clone();
    let node_port = np.ports[0].node_port.unwrap();

    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend(["--output", "json", "--linger-ms", "100"].map(String::from));
    let tracer = Tracer::start(&args);

    // DNS over UDP and TCP through the Service.
    let dns_addr = SocketAddr::from((dns.cluster_ip, 53));
    for tcp in [false, true] {
        let answer =
            dns_query(&client.netns, dns_addr, &s.dns.name, tcp, TIMEOUT).expect("query runs");
        assert_eq!(
            answer,
            Some(Ok(s.dns.answer)),
            "DNS over {} to {dns_addr}",
            if tcp { "TCP" } else { "UDP" }
        );
    }
    // ClusterIP: both endpoints answer (kube-proxy picks one at random, 1/2 each).
    let web_addr = SocketAddr::from((web.cluster_ip, web.ports[0].port));
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while seen.len() < web.endpoints.len() && started.elapsed() < Duration::from_secs(10) {
        let line = web_get(&client.netns, web_addr, TIMEOUT)
            .expect("connect")
            .unwrap_or_else(|| panic!("{web_addr} unanswered"));
        seen.insert(line.split(' ').next().unwrap_or_default().to_owned());
    }
    let want: BTreeSet<String> = web.endpoints.iter().map(|e| e.pod.clone()).collect();
    assert_eq!(seen, want, "both endpoints of {}", web.id());
    // NodePort from outside: the pod sees node1, not the outside machine.
    let np_addr = SocketAddr::from((n1.ip, node_port));
    let line = web_get(&s.outside.netns, np_addr, TIMEOUT)
        .expect("connect")
        .unwrap_or_else(|| panic!("{np_addr} from outside unanswered"));
    let seen_as: Ipv4Addr = line
        .split(' ')
        .nth(1)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| match a {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => panic!("v6"),
        })
        .expect("the server's line");
    assert_ne!(
        seen_as, s.outside.ip,
        "NodePort traffic is masqueraded: {line}"
    );
    assert!(
        topo.nodes.iter().any(|n| n.name == "node1")
            && (seen_as == n1.ip
                || n1.vtep.as_ref().is_some_and(|v| v.ip == seen_as)
                || seen_as.octets()[..3] == n1.blocks[0].addr.octets()[..3]),
        "masqueraded to an address of node1: {line}"
    );
    // natOutgoing: the outside machine sees node1's address.
    let out_addr = SocketAddr::from((s.outside.ip, s.outside.port));
    let line = web_get(&client.netns, out_addr, TIMEOUT)
        .expect("connect")
        .unwrap_or_else(|| panic!("{out_addr} from n1p0 unanswered"));
    assert!(
        line.starts_with(&format!("outside {}:", n1.ip)),
        "natOutgoing masquerades to node1's address: {line}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let traces = out.traces();

    // DNS requests and replies, UDP and TCP: one trace each way per packet.
    for proto in ["udp", "tcp"] {
        let reqs = flows(&traces, client.ip, dns.cluster_ip, proto, Some(53));
        assert!(
            !reqs.is_empty(),
            "DNS proto {proto} request traced: {traces:#?}"
        );
        for r in &reqs {
            assert_dnat_request(r, &topo, (dns.cluster_ip, 53), (dns_ep.ip, 53));
        }
        let replies = flows(&traces, dns_ep.ip, client.ip, proto, None);
        assert!(!replies.is_empty(), "DNS proto {proto} reply traced");
        for r in &replies {
            assert_undnat_reply(r, (dns.cluster_ip, 53));
        }
        assert!(
            flows(&traces, client.ip, dns_ep.ip, proto, Some(53)).is_empty(),
            "no request is a trace of its own under the endpoint's address"
        );
    }
    // ClusterIP: SYNs DNATed to each endpoint.
    let syns = flows(
        &traces,
        client.ip,
        web.cluster_ip,
        "tcp",
        Some(web.ports[0].port),
    );
    for e in &web.endpoints {
        let to_e: Vec<&&Value> = syns
            .iter()
            .filter(|t| t["nat"][0]["to"]["dst"] == e.ip.to_string().as_str())
            .collect();
        assert!(!to_e.is_empty(), "a request DNATed to {}: {syns:#?}", e.pod);
        for t in to_e {
            assert_dnat_request(t, &topo, (web.cluster_ip, 80), (e.ip, 8080));
        }
    }
    // NodePort: one request trace from outside, DNAT and SNAT on node1.
    let np_reqs = flows(&traces, s.outside.ip, n1.ip, "tcp", Some(node_port));
    assert!(!np_reqs.is_empty(), "NodePort request traced");
    for t in &np_reqs {
        let step = &t["nat"][0];
        assert_eq!(step["kind"], "DNAT+SNAT", "{t}");
        assert_eq!(step["node"], n1.netns.as_str(), "{t}");
        assert_eq!(ip(&step["to"]["dst"]), np.endpoints[0].ip, "{t}");
        assert_eq!(ip(&step["to"]["src"]), seen_as, "{t}");
        assert_eq!(t["outcome"], "delivered", "{t}");
    }
    // natOutgoing: the request leaves node1's uplink translated (SNAT to node1).
    let out_reqs = flows(
        &traces,
        client.ip,
        s.outside.ip,
        "tcp",
        Some(s.outside.port),
    );
    assert!(!out_reqs.is_empty(), "natOutgoing request traced");
    for t in &out_reqs {
        let step = &t["nat"][0];
        assert_eq!(step["kind"], "SNAT", "{t}");
        assert_eq!(ip(&step["to"]["src"]), n1.ip, "{t}");
        assert!(
            path(t).contains(&format!("{}/eth0/egress", n1.netns)),
            "{t}"
        );
    }
    // Replies from outside enter node1 addressed to node1 (their identity in the trace) and
    // are un-SNATed there to the pod.
    let back: Vec<&Value> = flows(&traces, s.outside.ip, n1.ip, "tcp", None)
        .into_iter()
        .filter(|t| t["packet"]["sport"].as_u64() == Some(u64::from(s.outside.port)))
        .collect();
    assert!(!back.is_empty(), "natOutgoing reply traced");
    for t in &back {
        assert_eq!(t["nat"][0]["kind"], "un-SNAT", "{t}");
        assert_eq!(ip(&t["nat"][0]["to"]["dst"]), client.ip, "{t}");
        assert_eq!(t["outcome"], "delivered", "{t}");
    }
    lab.down().expect("lab down");
    let left: Vec<String> = lab::netns::list_netns()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left by lab down: {left:?}");
}

#[test]
fn services_traced_through_nat() {
    let cases: Vec<(String, Encap)> = [("tsv", Encap::Vxlan), ("tsn", Encap::None)]
        .map(|(p, e)| (p.to_owned(), e))
        .to_vec();
    common::each_case(&cases, 1, |prefix, &encap| check(prefix, encap));
}

/// `tracer diagnose --to <DNS Service> --proto udp --port 53` from a pod: the DNS query goes
/// through DNAT to the responder and back (no verdict), and with the Service's rules gone on
/// the asking node the request fails with `no-service-rule`.
#[test]
fn diagnose_dns_through_the_service() {
    let lab = services_lab("tsd", Encap::Vxlan);
    let topo = lab.topology().clone();
    let s = topo.services.clone().expect("services");
    let client = topo.pod("n1p0").unwrap().clone();
    let dns = s.service("kube-system/kube-dns").unwrap().clone();
    let diagnose = || {
        let extra = ["--proto", "udp", "--port", "53", "--probes", "1"];
        common::diagnose(&topo, &client, dns.cluster_ip, &extra)
    };
    let d = diagnose();
    assert_eq!(d["failed"], "none", "{d}");
    assert!(d["verdict"].is_null(), "{d}");
    assert_eq!(d["probes"], 1, "the one DNS query, through DNAT: {d}");
    assert_eq!(d["delivered"], 1, "{d}");
    assert_eq!(d["replies"]["delivered"], 1, "the answer, un-DNATed: {d}");

    lab::break_lab(&topo, lab::Fault::MissingServiceRule).expect("break");
    let d = diagnose();
    lab::heal(&topo, lab::Fault::MissingServiceRule).expect("heal");
    assert_eq!(d["failed"], "request", "{d}");
    assert_eq!(d["verdict"]["name"], "no-service-rule", "{d}");
    assert!(
        d["verdict"]["explanation"]
            .as_str()
            .is_some_and(|e| e.contains(&dns.cluster_ip.to_string())),
        "{d}"
    );
    lab.down().expect("lab down");
}
