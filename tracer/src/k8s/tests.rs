//! Unit tests of the names cache: objects as the API server writes them (JSON), their claims,
//! an address reused, and the names a trace gets and shows.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;

use super::table::{pod_entry, service_entry, KindTable, NameTable};
use super::PodNames;
use crate::correlate::{CorrelateConfig, Correlator};
use crate::fixtures::{icmp, topology, vxlan_path};
use crate::latency::ClockModel;
use crate::model::{NatStep, ObjectKind, Trace};
use crate::render::{write_trace_json, write_trace_text};

/// A pod as `GET /api/v1/pods` lists it (the fields the cache reads, and some it does not).
fn pod(ns: &str, name: &str, uid: &str, ip: &str, created: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid, "resourceVersion": "1",
            "creationTimestamp": created, "labels": {"app": "web"}
        },
        "spec": {
            "nodeName": "node1",
            "containers": [{"name": "c", "image": "debian"}]
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.10.0.1"}
    }))
    .expect("a Pod")
}

fn service(ns: &str, name: &str, cluster_ip: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "uid": format!("svc-{name}")},
        "spec": {
            "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
            "ports": [{"port": 80, "protocol": "TCP"}]
        }
    }))
    .expect("a Service")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn name(t: &KindTable, a: &str) -> Option<String> {
    t.lookup(ip(a)).map(|n| n.describe())
}

const T1: &str = "2026-11-30T10:00:00Z";
const T2: &str = "2026-11-30T10:05:00Z";

#[test]
fn a_pod_is_named_from_its_listing_and_forgotten_when_deleted() {
    let p = pod("shop", "web-7d9f", "u1", "10.244.1.5", T1);
    let e = pod_entry(&p);
    assert_eq!(e.ips, [ip("10.244.1.5")]);
    assert_eq!(e.name.node.as_deref(), Some("node1"));
    assert_eq!(e.name.kind, ObjectKind::Pod);
    let mut t = KindTable::default();
    t.apply(e);
    assert_eq!(name(&t, "10.244.1.5").as_deref(), Some("shop/web-7d9f"));
    assert_eq!(name(&t, "10.244.1.6"), None);
    t.remove("u1");
    assert_eq!(
        name(&t, "10.244.1.5"),
        None,
        "a deleted pod's address has no name"
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn a_reused_address_names_the_new_pod_whatever_the_order_of_events() {
    let old = pod_entry(&pod("shop", "db-old", "u-old", "10.244.2.7", T1));
    let new = pod_entry(&pod("shop", "db-new", "u-new", "10.244.2.7", T2));
    // Deleted, then the new pod gets the address.
    let mut t = KindTable::default();
    t.apply(old.clone());
    t.remove("u-old");
    t.apply(new.clone());
    assert_eq!(name(&t, "10.244.2.7").as_deref(), Some("shop/db-new"));
    // The new pod seen before the old one's deletion; the old one modified meanwhile
    // (terminating): the newer pod has the address, and keeps it when the old one goes.
    let mut t = KindTable::default();
    t.apply(old.clone());
    t.apply(new.clone());
    t.apply(old.clone());
    assert_eq!(name(&t, "10.244.2.7").as_deref(), Some("shop/db-new"));
    t.remove("u-old");
    assert_eq!(name(&t, "10.244.2.7").as_deref(), Some("shop/db-new"));
    // The new pod deleted first: the address goes back to the one still claiming it.
    let mut t = KindTable::default();
    t.apply(old);
    t.apply(new);
    t.remove("u-new");
    assert_eq!(name(&t, "10.244.2.7").as_deref(), Some("shop/db-old"));
}

#[test]
fn a_pod_that_moves_to_another_address_leaves_the_old_one() {
    let mut t = KindTable::default();
    t.apply(pod_entry(&pod("a", "p", "u", "10.244.0.9", T1)));
    t.apply(pod_entry(&pod("a", "p", "u", "10.244.0.10", T1)));
    assert_eq!(name(&t, "10.244.0.9"), None);
    assert_eq!(name(&t, "10.244.0.10").as_deref(), Some("a/p"));
}

#[test]
fn host_network_ended_and_unscheduled_pods_claim_nothing() {
    let mut host = pod("kube-system", "calico-node-x", "h", "10.10.0.1", T1);
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert!(
        pod_entry(&host).ips.is_empty(),
        "the node's address is not the pod's"
    );
    let mut done = pod("batch", "job-1", "j", "10.244.3.3", T1);
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    assert!(pod_entry(&done).ips.is_empty());
    // A running pod that completes gives its address back.
    let mut t = KindTable::default();
    t.apply(pod_entry(&pod("batch", "job-1", "j", "10.244.3.3", T1)));
    assert!(name(&t, "10.244.3.3").is_some());
    t.apply(pod_entry(&done));
    assert_eq!(name(&t, "10.244.3.3"), None);
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "a", "uid": "p"},
        "status": {"phase": "Pending"}
    }))
    .unwrap();
    assert!(pod_entry(&pending).ips.is_empty());
}

#[test]
fn dual_stack_pods_keep_their_ipv4_address() {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "ds", "namespace": "a", "uid": "ds"},
        "status": {"phase": "Running", "podIP": "fd00::5",
                   "podIPs": [{"ip": "fd00::5"}, {"ip": "10.244.5.5"}]}
    }))
    .unwrap();
    assert_eq!(pod_entry(&p).ips, [ip("10.244.5.5")]);
}

#[test]
fn services_are_named_by_cluster_ip_and_headless_ones_not_at_all() {
    let s = service_entry(&service("kube-system", "kube-dns", "10.96.0.10"));
    assert_eq!(s.ips, [ip("10.96.0.10")]);
    let mut t = NameTable::default();
    t.services.apply(s);
    t.services
        .apply(service_entry(&service("a", "headless", "None")));
    assert_eq!(t.services.len(), 1);
    assert_eq!(
        t.lookup(ip("10.96.0.10")).map(|n| n.describe()).as_deref(),
        Some("service kube-system/kube-dns")
    );
}

/// Pod A (10.244.0.1) and pod C (10.244.4.1) of the fixtures, and a Service.
fn cluster() -> PodNames {
    let mut t = NameTable::default();
    t.pods
        .apply(pod_entry(&pod("shop", "web-a", "a", "10.244.0.1", T1)));
    t.pods
        .apply(pod_entry(&pod("shop", "db-c", "c", "10.244.4.1", T1)));
    t.services
        .apply(service_entry(&service("shop", "db", "10.96.0.20")));
    PodNames::fixed(t)
}

fn a_to_c() -> Trace {
    let mut c = Correlator::new(topology(), CorrelateConfig::default());
    for h in vxlan_path(icmp(0x1a2b), 5_000_000) {
        c.push(h);
    }
    c.finish().pop().unwrap()
}

#[test]
fn a_trace_shows_its_pods_in_text_and_json() {
    let names = cluster();
    assert_eq!(
        names.describe(ip("10.244.0.1")).as_deref(),
        Some("shop/web-a")
    );
    let mut t = a_to_c();
    t.names = names.name_trace(&t);
    let mut out = Vec::new();
    write_trace_text(&mut out, &t, &ClockModel::shared_kernel()).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("ICMP 10.244.0.1 (shop/web-a) > 10.244.4.1 (shop/db-c) echo id 1234"),
        "{text}"
    );
    let mut out = Vec::new();
    write_trace_json(&mut out, &t, &ClockModel::shared_kernel()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["names"]["10.244.0.1"],
        json!({"kind": "pod", "namespace": "shop", "name": "web-a", "node": "node1"})
    );
    assert_eq!(v["names"]["10.244.4.1"]["name"], "db-c");
    assert_eq!(
        v["packet"]["src"], "10.244.0.1",
        "the old fields stay as they were"
    );
}

#[test]
fn without_names_the_output_is_unchanged() {
    let t = a_to_c();
    let mut out = Vec::new();
    write_trace_json(&mut out, &t, &ClockModel::shared_kernel()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v.get("names").is_none(), "{v}");
    // An empty cluster names nothing.
    let mut t = a_to_c();
    t.names = PodNames::fixed(NameTable::default()).name_trace(&t);
    assert!(t.names.is_empty());
}

#[test]
fn a_service_address_and_its_endpoint_are_named_through_nat() {
    let mut t = a_to_c();
    // Pod A asked for the Service; node1 DNATed it to pod C.
    t.packet.dst = ip("10.96.0.20");
    t.nat.push(NatStep {
        ts_ns: 5_001_000,
        node: "node1".into(),
        netns: 1,
        ifname: "vxlan.calico".into(),
        kind: "DNAT",
        proto: 1,
        from: (ip("10.244.0.1"), 1234, ip("10.96.0.20"), 0),
        to: (ip("10.244.0.1"), 1234, ip("10.244.4.1"), 0),
    });
    t.names = cluster().name_trace(&t);
    let addrs: Vec<Ipv4Addr> = t.names.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        addrs,
        [ip("10.244.0.1"), ip("10.96.0.20"), ip("10.244.4.1")],
        "each address once, in order"
    );
    let mut out = Vec::new();
    write_trace_text(&mut out, &t, &ClockModel::shared_kernel()).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("> 10.96.0.20 (service shop/db)"), "{text}");
    assert!(
        text.contains("(10.96.0.20 service shop/db, 10.244.4.1 shop/db-c)"),
        "{text}"
    );
}
