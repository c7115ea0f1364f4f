//! Unit tests of the correlator.

use std::net::Ipv4Addr;

use super::*;
use crate::event::FibRecord;
use crate::fixtures::*;
use crate::model::Direction::{Egress, Ingress};

fn correlator() -> Correlator {
    Correlator::new(topology(), CorrelateConfig::default())
}

fn run(hops: &[HopRecord]) -> (Vec<Trace>, CorrelateStats) {
    let mut c = correlator();
    hops.iter().for_each(|h| c.push(h.clone()));
    (c.finish(), c.stats().clone())
}

fn places(t: &Trace) -> Vec<(&str, &str, Direction)> {
    t.hops
        .iter()
        .map(|h| (&*h.node, &*h.ifname, h.dir))
        .collect()
}

/// Per trace: (ip_id, number of hops, outcome).
fn shape(traces: &[Trace]) -> Vec<(u16, usize, Outcome)> {
    let one = |t: &Trace| (t.packet.ip_id, t.hops.len(), t.outcome);
    traces.iter().map(one).collect()
}

const DELIVERED: Outcome = Outcome::Delivered;
const INCOMPLETE: Outcome = Outcome::Incomplete;

#[test]
fn vxlan_path_in_order_is_one_delivered_trace() {
    let (traces, stats) = run(&vxlan_path(icmp(1), 1_000_000));
    assert_eq!(shape(&traces), [(1, 6, DELIVERED)]);
    let t = &traces[0];
    let expected = [
        ("node1", "cali3f2a9b0c1d4", Ingress),
        ("node1", "vxlan.calico", Egress),
        ("node1", "eth0", Egress),
        ("node2", "eth0", Ingress),
        ("node2", "vxlan.calico", Ingress),
        ("node2", "calie0e1e2e3e4f", Egress),
    ];
    assert_eq!(places(t), expected);
    let encap: Vec<_> = t.hops.iter().map(|h| h.encap.is_some()).collect();
    assert_eq!(encap, [false, false, true, true, false, false]);
    assert_eq!(t.hops[2].encap, Some(vxlan_encap()));
    assert_eq!(t.hops[3].encap, Some(vxlan_encap()));
    assert_eq!(
        (t.hops[0].kind, t.hops[3].netns),
        (Some(IfaceKind::PodVeth), NS2)
    );
    assert_eq!((t.icmp_type, t.first_len()), (8, 84));
    assert_eq!(
        (stats.hops_seen, stats.traces_emitted, stats.duplicates),
        (6, 1, 0)
    );
}

/// Calls `f` with every permutation of `v` (Heap's algorithm).
fn permutations<T>(v: &mut [T], k: usize, f: &mut impl FnMut(&[T])) {
    if k <= 1 {
        return f(v);
    }
    for i in 0..k {
        permutations(v, k - 1, f);
        v.swap(if k.is_multiple_of(2) { i } else { 0 }, k - 1);
    }
}

#[test]
fn every_arrival_order_gives_the_same_trace() {
    let mut hops = vxlan_path(icmp(1), 1_000_000);
    let (expected, _) = run(&hops);
    let mut n = 0;
    permutations(&mut hops, 6, &mut |p| {
        let order: Vec<_> = p.iter().map(|h| h.ts_ns).collect();
        assert_eq!(run(p).0, expected, "order {order:?}");
        n += 1;
    });
    assert_eq!(n, 720);
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let path = vxlan_path(icmp(1), 1_000_000);
    let mut hops = path.clone();
    hops.extend_from_slice(&path[1..4]);
    hops.push(path[0].clone());
    let (traces, stats) = run(&hops);
    assert_eq!(traces, run(&path).0);
    assert_eq!((stats.duplicates, stats.hops_seen), (4, 10));
}

#[test]
fn missing_hops() {
    let mut hops = vxlan_path(icmp(1), 1_000_000);
    hops.remove(3);
    assert_eq!(shape(&run(&hops).0), [(1, 5, DELIVERED)]);
    hops.truncate(3);
    let (traces, _) = run(&hops);
    // Last seen leaving node1's uplink, no kernel drop: lost between the nodes.
    assert_eq!(shape(&traces), [(1, 3, Outcome::Lost)]);
    hops.truncate(2);
    assert_eq!(shape(&run(&hops).0), [(1, 2, INCOMPLETE)]);
    assert_eq!(places(&traces[0])[2], ("node1", "eth0", Egress));
}

#[test]
fn interleaved_packets_are_separate_traces() {
    let a = vxlan_path(icmp(1), 1_000_000);
    let b = vxlan_path(icmp(2), 1_005_000);
    let hops: Vec<_> = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| [y.clone(), x.clone()])
        .collect();
    assert_eq!(shape(&run(&hops).0), [(1, 6, DELIVERED), (2, 6, DELIVERED)]);
}

#[test]
fn same_identity_again_is_another_trace() {
    // Beyond the window.
    let mut hops = vxlan_path(icmp(1), 1_000_000);
    hops.extend(vxlan_path(icmp(1), 2_001_000_000));
    let (traces, stats) = run(&hops);
    assert_eq!(shape(&traces), [(1, 6, DELIVERED), (1, 6, DELIVERED)]);
    assert_eq!(stats.duplicates, 0);
    // Within the window: the repeated hop starts a new trace instead of merging.
    let p = icmp(1);
    let hops = [
        hop(p, NS1, CALI_A, Ingress, 1_000),
        hop(p, NS1, CALI_A, Ingress, 200_000_000),
        hop(p, NS1, CALI_B, Egress, 200_001_000),
    ];
    assert_eq!(
        shape(&run(&hops).0),
        [(1, 1, INCOMPLETE), (1, 2, DELIVERED)]
    );
}

#[test]
fn same_node_pair_is_two_hop_delivered() {
    let mut p = icmp(9);
    p.dst = Ipv4Addr::new(10, 244, 0, 2);
    let hops = [
        hop(p, NS1, CALI_B, Egress, 5_000),
        hop(p, NS1, CALI_A, Ingress, 1_000),
    ];
    let (traces, _) = run(&hops);
    assert_eq!(shape(&traces), [(9, 2, DELIVERED)]);
    let expected = [
        ("node1", "cali3f2a9b0c1d4", Ingress),
        ("node1", "cali77aa00bb11c", Egress),
    ];
    assert_eq!(places(&traces[0]), expected);
}

#[test]
fn packet_for_a_node_ending_at_its_ingress_is_delivered() {
    let mut p = icmp(3);
    p.dst = Ipv4Addr::new(10, 10, 0, 2);
    let hops = [
        hop(p, NS1, CALI_A, Ingress, 1_000),
        hop(p, NS1, ETH0, Egress, 2_000),
        hop(p, NS2, ETH0, Ingress, 3_000),
    ];
    assert_eq!(run(&hops).0[0].outcome, DELIVERED);
    assert_eq!(run(&hops[..2]).0[0].outcome, Outcome::Lost);
    assert_eq!(run(&hops[..1]).0[0].outcome, INCOMPLETE);
    // Ingress on another node than the destination's is not delivery.
    p.dst = Ipv4Addr::new(10, 10, 0, 1);
    assert_eq!(
        run(&[hop(p, NS2, ETH0, Ingress, 3_000)]).0[0].outcome,
        INCOMPLETE
    );
}

#[test]
fn expire_honours_linger_and_orders_by_first_hop() {
    let ms = 1_000_000;
    let mut c = correlator();
    let mut a = vxlan_path(icmp(1), 90 * ms);
    a[5].ts_ns = 120 * ms;
    let b = vxlan_path(icmp(2), 100 * ms);
    b.iter().chain(&a[..5]).for_each(|h| c.push(h.clone()));
    assert!(c.expire(390 * ms).is_empty());
    // A late hop keeps `a` open past the linger of its earlier hops.
    c.push(a[5].clone());
    // `b`'s newest hop is exactly `linger` old: not yet older than it.
    assert!(c.expire(400 * ms + 31_250).is_empty());
    assert_eq!(c.open_traces(), 2);
    let out = c.expire(420 * ms + 1);
    assert_eq!(shape(&out), [(1, 6, DELIVERED), (2, 6, DELIVERED)]);
    assert_eq!(c.open_traces(), 0);
    assert!(c.finish().is_empty());
    assert_eq!(c.stats().traces_emitted, 2);
}

#[test]
fn expire_is_exact_inside_a_bucket() {
    // Without waiting for late drops, so that incomplete traces expire after the linger.
    let cfg = CorrelateConfig {
        drop_wait_ns: 0,
        ..CorrelateConfig::default()
    };
    let mut c = Correlator::new(topology(), cfg);
    let t0 = 10 << BUCKET_SHIFT;
    c.push(hop(icmp(1), NS1, CALI_A, Ingress, t0 + 10));
    c.push(hop(icmp(2), NS1, CALI_A, Ingress, t0 + 20));
    let linger = CorrelateConfig::default().linger_ns;
    assert!(c.expire(t0 + 10 + linger).is_empty());
    assert_eq!(shape(&c.expire(t0 + 11 + linger)), [(1, 1, INCOMPLETE)]);
    assert_eq!(shape(&c.expire(t0 + 21 + linger)), [(2, 1, INCOMPLETE)]);
    // A hop arriving after its trace left starts a new one.
    c.push(hop(icmp(1), NS1, VXLAN, Egress, t0 + 30));
    assert_eq!(shape(&c.expire(t0 + 31 + linger)), [(1, 1, INCOMPLETE)]);
}

#[test]
fn unknown_interfaces_are_kept_and_counted() {
    let p = icmp(1);
    let (traces, stats) = run(&[
        hop(p, NS1, CALI_A, Ingress, 1_000),
        hop(p, NS1, 42, Egress, 2_000),
        hop(p, 77, 5, Ingress, 3_000),
        hop(p, 77, 5, Egress, 4_000),
    ]);
    assert_eq!(stats.unknown_iface_hops, 3);
    assert_eq!(shape(&traces), [(1, 4, INCOMPLETE)]);
    let t = &traces[0];
    let expected = [
        ("node1", "if42", Egress),
        ("netns:77", "if5", Ingress),
        ("netns:77", "if5", Egress),
    ];
    assert_eq!(places(t)[1..], expected);
    assert_eq!(
        (t.hops[2].kind, t.hops[2].netns, t.hops[2].ifindex),
        (None, 77, 5)
    );
}

#[test]
fn open_traces_are_bounded() {
    let cfg = CorrelateConfig {
        max_open: 2,
        ..CorrelateConfig::default()
    };
    let mut c = Correlator::new(topology(), cfg);
    for id in 0..5u16 {
        c.push(hop(
            icmp(id),
            NS1,
            CALI_A,
            Ingress,
            u64::from(id) << (BUCKET_SHIFT + 1),
        ));
    }
    assert_eq!((c.open_traces(), c.stats().evicted), (2, 3));
    let early = c.expire(0);
    assert_eq!(
        early.iter().map(|t| t.packet.ip_id).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(c.finish().len(), 2);
    assert_eq!(c.stats().traces_emitted, 5);
}

/// Many packets with one identity (UDP with IP ID 0, a replayed packet): each still gets its
/// own trace with its own hops, but at most `MAX_SAME_IDENTITY` stay open at once, so `push`
/// never walks a long chain.
#[test]
fn packets_sharing_one_identity_are_bounded() {
    let mut c = Correlator::new(topology(), CorrelateConfig::default());
    let n = 10_000u64;
    for i in 0..n {
        // Every microsecond the same packet identity enters and leaves node1: each packet
        // conflicts with the previous one on both interfaces, so it opens its own trace.
        c.push(hop(icmp(0), NS1, CALI_A, Ingress, 1_000_000 + i * 1_000));
        c.push(hop(icmp(0), NS1, VXLAN, Egress, 1_000_500 + i * 1_000));
        assert!(c.open_traces() <= MAX_SAME_IDENTITY);
    }
    assert_eq!(c.open_traces(), MAX_SAME_IDENTITY);
    assert_eq!(c.stats().identity_evicted, n - MAX_SAME_IDENTITY as u64);
    let mut traces = c.expire(0);
    traces.extend(c.finish());
    assert_eq!(traces.len() as u64, n);
    // No hop was lost or mixed up: each trace is one packet's two hops, half a microsecond apart.
    for t in &traces {
        let ts: Vec<u64> = t.hops.iter().map(|h| h.ts_ns).collect();
        assert_eq!(ts.len(), 2, "{ts:?}");
        assert_eq!(ts[1] - ts[0], 500, "{ts:?}");
    }
    assert_eq!(c.stats().evicted, 0);
}

#[test]
fn unsettled_traces_wait_for_a_late_drop() {
    let ms = 1_000_000;
    let mut c = correlator();
    let linger = CorrelateConfig::default().linger_ns;
    let wait = CorrelateConfig::default().drop_wait_ns;
    let t0 = 1_000 * ms;
    // Packet 1: leaves the pod, is routed to eth0 and dies 3 s later in neighbour resolution.
    c.push(hop(icmp(1), NS1, CALI_A, Ingress, t0));
    // Packet 2: same path, never dropped: incomplete once the wait is over.
    c.push(hop(icmp(2), NS1, CALI_A, Ingress, t0 + ms));
    // Packet 3: delivered, emitted after the linger as usual.
    vxlan_path(icmp(3), t0)
        .iter()
        .for_each(|h| c.push(h.clone()));
    let out = c.expire(t0 + 6 * ms + linger);
    assert_eq!(shape(&out), [(3, 6, DELIVERED)]);
    assert!(c.expire(t0 + 2_000 * ms).is_empty(), "held for a late drop");
    c.push_drop(
        &drop_of(icmp(1), NS1, ETH0, t0 + 3_000 * ms),
        "NEIGH_FAILED",
        "neigh_invalidate+0x8c".into(),
    );
    let out = c.expire(t0 + 3_000 * ms + linger + 1);
    assert_eq!(shape(&out), [(1, 1, Outcome::Dropped)]);
    let d = out[0].drop.as_ref().expect("drop attached");
    assert_eq!(
        (d.node.as_str(), d.ifname.as_str(), d.reason.as_str()),
        ("node1", "eth0", "NEIGH_FAILED")
    );
    // The correlator stops at the outcome and the evidence: the verdict stage judges it.
    assert!(out[0].verdict.is_none());
    assert_eq!(
        crate::verdict::judge(&out[0], &topology(), &Default::default()).map(|v| v.name),
        Some("no-neighbour")
    );
    assert!(c.expire(t0 + ms + wait - 1).is_empty());
    assert_eq!(
        shape(&c.expire(t0 + ms + wait + 2 * ms)),
        [(2, 1, INCOMPLETE)]
    );
    assert_eq!(c.open_traces(), 0);
}

#[test]
fn a_packet_gone_out_of_the_uplink_is_not_held_for_a_drop() {
    let ms = 1_000_000;
    let mut c = correlator();
    let linger = CorrelateConfig::default().linger_ns;
    let t0 = 1_000 * ms;
    // Left node1 through its uplink and was seen no more (the peer is not traced): no later
    // drop of this kernel can be its own, so it goes out after the linger, not the drop wait.
    let path = vxlan_path(icmp(4), t0);
    path[..3].iter().for_each(|h| c.push(h.clone()));
    // Still before the uplink: held for a late drop as usual.
    c.push(hop(icmp(5), NS1, CALI_A, Ingress, t0));
    let out = c.expire(path[2].ts_ns + linger + 1);
    assert_eq!(shape(&out), [(4, 3, Outcome::Lost)]);
    assert_eq!(
        c.open_traces(),
        1,
        "the packet before the uplink is still held"
    );
}

/// A route lookup for the packet's destination, made in `netns` (0: unknown) via `gw`.
fn fib(packet: &PacketId, netns: u32, ts_ns: u64, dev: &str, gw: Option<Ipv4Addr>) -> FibRecord {
    let mut name = [0u8; 16];
    name[..dev.len()].copy_from_slice(dev.as_bytes());
    FibRecord {
        ts_ns,
        netns,
        table: 254,
        err: 0,
        oif: 3,
        iif: 10,
        src: packet.src,
        dst: packet.dst,
        gw,
        proto: packet.proto,
        sport: packet.sport,
        dport: packet.dport,
        dev: name,
    }
}

/// Lookups join a trace when they are for its destination, in a namespace it visited (or an
/// unknown one that is not a pod's own), once each.
#[test]
fn route_lookups_of_the_nodes_the_packet_crossed_once_each() {
    let p = icmp(1);
    let t0 = 1_000_000;
    let vtep = Some(Ipv4Addr::new(10, 244, 4, 0));
    let mut c = correlator();
    c.push_fib(fib(&p, NS1, t0 + 1_000, "vxlan.calico", vtep));
    // The same lookup again: dropped. Another node's lookup in a namespace the packet never
    // visited, and a pod's own lookup via 169.254.1.1: not this trace's.
    c.push_fib(fib(&p, NS1, t0 + 2_000, "vxlan.calico", vtep));
    c.push_fib(fib(&p, 4_026_539_999, t0 + 3_000, "eth0", None));
    c.push_fib(fib(
        &p,
        0,
        t0 + 500,
        "eth0",
        Some(Ipv4Addr::new(169, 254, 1, 1)),
    ));
    // Unknown namespace (classic tracepoint): kept. For another destination: not this trace's.
    c.push_fib(fib(&p, 0, t0 + 20_000, "calie0e1e2e3e4f", None));
    let other = PacketId {
        dst: Ipv4Addr::new(10, 244, 9, 9),
        ..p
    };
    c.push_fib(fib(&other, NS1, t0 + 4_000, "eth0", None));
    vxlan_path(p, t0).into_iter().for_each(|h| c.push(h));
    let traces = c.finish();
    assert_eq!(traces.len(), 1);
    let got: Vec<(u32, &str)> = traces[0]
        .routes
        .iter()
        .map(|r| (r.netns, r.dev.as_str()))
        .collect();
    assert_eq!(got, [(NS1, "vxlan.calico"), (0, "calie0e1e2e3e4f")]);
}

/// The window (from a second before the first hop to the last hop), the cap (the newest
/// distinct lookups), and repeats recognised by the device name up to its NUL.
#[test]
fn route_lookups_in_the_window_newest_distinct_kept() {
    let p = icmp(1);
    let t0 = 5_000_000_000;
    let mut c = correlator();
    // Long before the window (the scan stops there) and just before it: not this trace's.
    c.push_fib(fib(&p, NS1, 1_000, "eth0", None));
    c.push_fib(fib(&p, NS1, t0 - 1_000_000_001, "eth0", None));
    // Twelve distinct lookups in the window (another output interface each).
    for i in 0..12u32 {
        let mut f = fib(&p, NS1, t0 - 900_000_000 + u64::from(i), "eth0", None);
        f.oif = 100 + i;
        c.push_fib(f);
    }
    // A repeat of the newest whose name buffer has bytes after the NUL (the classic record
    // leaves them unwritten): the same lookup.
    let mut again = fib(&p, NS1, t0 - 800_000_000, "eth0", None);
    again.oif = 111;
    again.dev[10] = b'x';
    c.push_fib(again);
    // After the last hop: not this trace's.
    c.push_fib(fib(&p, NS1, t0 + 10_000_000, "lo", None));
    vxlan_path(p, t0).into_iter().for_each(|h| c.push(h));
    let traces = c.finish();
    let oifs: Vec<u32> = traces[0].routes.iter().map(|r| r.oif).collect();
    assert_eq!(oifs, (104..112).collect::<Vec<u32>>());
    assert!(traces[0].routes.iter().all(|r| r.dev == "eth0"));
}

/// A packet last seen leaving node1's uplink is lost, unless the tracer itself lost events
/// while it was in flight: then it is only incomplete, flagged, and gets no verdict.
#[test]
fn no_lost_verdict_while_the_tracer_was_losing_events() {
    let t0 = 100_000_000_000;
    let first_three = |id| vxlan_path(icmp(id), t0)[..3].to_vec();
    let run_with = |window: Option<(u64, u64)>| {
        let mut c = correlator();
        if let Some((from, to)) = window {
            c.note_tracer_loss(from, to);
        }
        first_three(1).into_iter().for_each(|h| c.push(h));
        let t = c.finish().pop().expect("one trace");
        (t, c.stats().clone())
    };
    let (t, stats) = run_with(None);
    assert_eq!((t.outcome, t.tracer_loss), (Outcome::Lost, false));
    assert!(crate::verdict::judge(&t, &topology(), &Default::default()).is_some());
    assert_eq!(stats.lost_withheld, 0);

    // Events lost 2 ms after the packet's last hop: its later hops may be among them.
    let (t, stats) = run_with(Some((t0 + 2_000_000, t0 + 50_000_000)));
    assert_eq!((t.outcome, t.tracer_loss), (Outcome::Incomplete, true));
    let v = crate::verdict::judge(&t, &topology(), &Default::default());
    assert!(v.is_none(), "{v:?}");
    assert_eq!(stats.lost_withheld, 1);

    // Losses long before the packet say nothing about it.
    let (t, _) = run_with(Some((t0 - 20_000_000_000, t0 - 19_000_000_000)));
    assert_eq!((t.outcome, t.tracer_loss), (Outcome::Lost, false));
}

/// Traces are handed out in first-hop order, but their slots are freed in the order `expire`
/// found them (by newest hop), as when each was emitted on the spot: which slot a later trace
/// gets does not depend on the hand-out order.
#[test]
fn expire_frees_slots_in_the_order_it_found_the_traces() {
    let ms = 1_000_000;
    let mut c = correlator();
    // `early` starts first but ends last; `late` starts and ends in between.
    c.push(hop(icmp(1), NS1, CALI_A, Ingress, 10 * ms));
    c.push(hop(icmp(1), NS1, VXLAN, Egress, 30 * ms));
    c.push(hop(icmp(2), NS1, CALI_A, Ingress, 20 * ms));
    let (early, late) = (
        c.by_id[&PackedId::new(&icmp(1))],
        c.by_id[&PackedId::new(&icmp(2))],
    );
    c.start_expire(10_000 * ms);
    let handed: Vec<u16> = std::iter::from_fn(|| c.next_due())
        .map(|t| t.packet.ip_id)
        .collect();
    assert_eq!(handed, [1, 2], "by first hop");
    assert_eq!(c.free, [late, early], "in the order found");
    assert_eq!(c.open_traces(), 0);
}
