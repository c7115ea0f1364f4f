//! Privileged tests of `lab::faults`: for every fault of the catalogue in each encapsulation it
//! applies to, in a lab of its own, the probe works, breaking makes it fail, `active` lists the
//! fault, healing (with the topology re-read from the state file, as another process would)
//! makes it work again and restores the nodes' routing, neighbour, FDB, link, nftables,
//! iptables (with Calico's rule comments) and sysctl (per-device IPv4 settings, `ip_forward`,
//! conntrack's TCP settings) state, and the pods' links and routes, exactly. Plus: same-node
//! pods keep talking under `encap-never` (the seed incident), pod-to-pod and node-to-node keep
//! working under `pod-cidr-overlap`, refusals.
//!
//! Every lab has its own short prefix, so the cycles run in parallel (as many at a time as the
//! harness runs tests); every cycle runs to its end and one failure lists every fault that
//! failed; failing probes wait [`LOST`] only. `drop_reasons` (ignored: about 30 s, global
//! tracepoint) checks each fault's [`lab::ExpectedDrop`]s with the `skb:kfree_skb` tracepoint;
//! run it with `cargo test -p tracer-tests --test faults -- --ignored --nocapture`.
//! Not root = failure with a message, never a silent skip.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use lab::{exec_in, faults, in_netns, Encap, Fault, Lab, LabSpec, Probe, Topology};

/// How long a probe that should fail is given.
const LOST: Duration = Duration::from_millis(300);
/// How long a probe that should work is given (per attempt, 3 attempts).
const ANSWERED: Duration = Duration::from_secs(1);

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the fault tests create network namespaces: they must run as root"
    );
}

fn up(prefix: &str, encap: Encap, pods_per_node: usize) -> Lab {
    up_with(prefix, encap, pods_per_node, false)
}

/// A lab, with Services (kube-proxy's and Calico's NAT, the outside machine) if `services`.
fn up_with(prefix: &str, encap: Encap, pods_per_node: usize, services: bool) -> Lab {
    require_root();
    lab::down_prefix(prefix).expect("clean leftovers of an earlier run");
    let spec = LabSpec {
        prefix: prefix.into(),
        nodes: 2,
        pods_per_node,
        encap,
        services: services.then(lab::services::ServicesSpec::default),
    };
    Lab::up(&spec).expect("lab up")
}

fn assert_answered(t: &Topology, probe: &Probe, when: &str) {
    for _ in 0..3 {
        if probe.run(t, ANSWERED).expect("run probe") {
            return;
        }
    }
    panic!("{}: {probe:?} not answered {when}", t.prefix);
}

fn assert_lost(t: &Topology, probe: &Probe, when: &str) {
    assert!(
        !probe.run(t, LOST).expect("run probe"),
        "{}: {probe:?} still answered {when}",
        t.prefix
    );
}

fn ping(from_pod: &str, to: std::net::Ipv4Addr) -> Probe {
    Probe {
        from_pod: from_pod.into(),
        to,
        proto: "icmp".into(),
        port: None,
        size: None,
        df: false,
    }
}

/// Output of a command in a namespace, lines sorted (route order changes with `replace`).
fn sorted_output(netns: &str, cmd: &[&str]) -> Vec<String> {
    let out = exec_in(netns, cmd).expect("exec");
    assert!(out.status.success(), "{cmd:?} in {netns} failed");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("{netns}: {}", l.trim_end()))
        .collect();
    lines.sort();
    lines
}

/// Everything a fault may change on the nodes (and the pods' links).
fn snapshot(t: &Topology) -> Vec<String> {
    let mut v = Vec::new();
    for n in &t.nodes {
        let ns = n.netns.as_str();
        v.extend(sorted_output(
            ns,
            &["ip", "-o", "route", "show", "table", "all"],
        ));
        v.extend(sorted_output(ns, &["ip", "-o", "rule", "show"]));
        v.extend(sorted_output(ns, &["ip", "-o", "link", "show"]));
        v.extend(sorted_output(ns, &["ip", "-o", "addr", "show"]));
        v.extend(sorted_output(
            ns,
            &["ip", "neigh", "show", "nud", "permanent"],
        ));
        v.extend(sorted_output(ns, &["bridge", "fdb", "show"]));
        // Without the counters: kube-proxy's rules (iptables-nft) count every packet.
        v.extend(
            sorted_output(ns, &["nft", "list", "ruleset"])
                .into_iter()
                .map(|l| without_counters(&l)),
        );
        // iptables-nft's view (its comments do not show in nft's) and Calico's ipsets.
        v.extend(
            sorted_output(ns, &["iptables-nft-save"])
                .into_iter()
                .filter(|l| !l.starts_with(&format!("{ns}: #")))
                .map(|l| without_save_counters(&l)),
        );
        v.extend(sorted_output(ns, &["ipset", "save"]));
        v.extend(conntrack_state(ns));
        v.extend(sysctls(ns).into_iter().map(|l| format!("{ns}: {l}")));
    }
    for p in &t.pods {
        v.extend(sorted_output(&p.netns, &["ip", "-o", "link", "show"]));
        v.extend(sorted_output(&p.netns, &["ip", "-o", "route", "show"]));
    }
    v
}

/// iptables-save's `[packets:bytes]` (a chain's policy counters) -> `[]`.
fn without_save_counters(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            let counters = w.strip_prefix('[').and_then(|w| w.strip_suffix(']'));
            match counters.and_then(|c| c.split_once(':')) {
                Some((p, b))
                    if !p.is_empty()
                        && p.bytes().all(|c| c.is_ascii_digit())
                        && b.bytes().all(|c| c.is_ascii_digit()) =>
                {
                    "[]"
                }
                _ => w,
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `counter packets N bytes M` -> `counter`.
fn without_counters(line: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split(' ').peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if w.trim_start() == "counter" && words.peek() == Some(&"packets") {
            words.nth(3); // packets N bytes M
        }
    }
    out.join(" ")
}

/// Conntrack's limit and the entries `conntrack-full` fills a table with (where conntrack is
/// loaded: the labs with Services).
fn conntrack_state(ns: &str) -> Vec<String> {
    let max = in_netns(ns, || {
        fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max").ok()
    })
    .unwrap();
    let Some(max) = max else {
        return Vec::new();
    };
    let mark = format!("{:#x}", faults::nat::CONNTRACK_FILL_MARK);
    let out = exec_in(ns, &["conntrack", "-L", "--mark", &mark]).expect("conntrack");
    assert!(out.status.success(), "conntrack -L in {ns}");
    let filled = String::from_utf8_lossy(&out.stdout).lines().count();
    vec![
        format!("{ns}: nf_conntrack_max = {}", max.trim()),
        format!("{ns}: conntrack entries marked {mark}: {filled}"),
    ]
}

/// The sysctls a fault may change: every per-device IPv4 setting (`forwarding`, `rp_filter`,
/// `proxy_arp`, ...), `ip_forward`, and conntrack's TCP settings.
fn sysctls(ns: &str) -> Vec<String> {
    in_netns(ns, || {
        let mut files = vec![std::path::PathBuf::from("/proc/sys/net/ipv4/ip_forward")];
        for dir in fs::read_dir("/proc/sys/net/ipv4/conf").unwrap() {
            files.extend(
                fs::read_dir(dir.unwrap().path())
                    .unwrap()
                    .map(|f| f.unwrap().path()),
            );
        }
        // Only where conntrack is loaded.
        let conntrack = fs::read_dir("/proc/sys/net/netfilter")
            .into_iter()
            .flatten();
        for f in conntrack {
            let path = f.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("nf_conntrack_tcp_") {
                files.push(path);
            }
        }
        let mut vals: Vec<String> = files
            .into_iter()
            .filter_map(|p| {
                let val = fs::read_to_string(&p).ok()?;
                Some(format!("{} = {}", p.display(), val.trim()))
            })
            .collect();
        vals.sort();
        vals
    })
    .unwrap()
}

fn assert_same(before: &[String], after: &[String], what: &str) {
    let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        gone.is_empty() && new.is_empty(),
        "{what}: state differs\n  missing: {gone:#?}\n  extra: {new:#?}"
    );
}

/// Probe works -> break -> probe fails (+ `during`) -> heal from the state -> works again and
/// the state is exactly as before.
fn cycle(prefix: &str, encap: Encap, fault: Fault, during: impl FnOnce(&Topology)) {
    let started = Instant::now();
    let lab = up_with(prefix, encap, 1, fault.needs_services());
    let t = lab.topology();
    let probe = fault.probe(t).expect("probe");
    assert_answered(t, &probe, "before the fault");
    let before = snapshot(t);

    let info = lab::break_lab(t, fault).expect("break");
    eprintln!("{prefix}: {fault}: {} [{}]", info.description, info.node);
    assert_eq!(info.fault, fault);
    assert_eq!(info.probe, probe);
    assert_eq!(info.expected_drops, fault.expected_drops());
    assert!(!info.description.contains('\n'));
    assert_lost(t, &probe, &format!("under {fault}"));
    assert_eq!(lab::active(prefix).unwrap(), vec![fault]);
    assert_eq!(faults::active_info(prefix).unwrap(), vec![info]);
    during(t);

    let from_state = lab::status(prefix).unwrap().expect("lab state");
    lab::heal(&from_state, fault).expect("heal");
    assert!(lab::active(prefix).unwrap().is_empty());
    assert!(!lab::status::faults_path(prefix).exists());
    assert_answered(t, &probe, &format!("after healing {fault}"));
    assert_same(&before, &snapshot(t), &format!("{prefix}: heal {fault}"));
    lab.down().expect("lab down");
    eprintln!("{prefix}: {fault} cycle in {:?}", started.elapsed());
}

/// Every fault of the catalogue in every encapsulation it applies to, in parallel.
#[test]
fn every_fault_breaks_and_heals_exactly() {
    require_root();
    let cases = common::fault_cases("tf");
    common::each_case(&cases, common::test_threads(), |prefix, &(fault, encap)| {
        cycle(prefix, encap, fault, |t| while_broken(fault, encap, t));
    });
}

/// What a fault must break and spare beyond its probe, checked while it is active.
fn while_broken(fault: Fault, encap: Encap, t: &Topology) {
    match (fault, encap) {
        (Fault::Mtu, Encap::Vxlan) => mtu_also_with_udp_and_tcp(t),
        (Fault::PodCidrOverlap, _) => pod_cidr_overlap_only_loses_pod_to_node(t),
        _ => {}
    }
}

fn mtu_also_with_udp_and_tcp(t: &Topology) {
    let mut udp = Fault::Mtu.probe(t).unwrap();
    (udp.proto, udp.port) = ("udp".into(), Some(5353));
    assert_lost(t, &udp, "udp 1200 bytes with DF under mtu");
    udp.df = false;
    assert_answered(t, &udp, "udp 1200 bytes without DF (fragmented) under mtu");
    let tcp = Probe {
        proto: "tcp".into(),
        port: Some(8080),
        size: None,
        df: false,
        ..udp
    };
    assert_answered(t, &tcp, "a TCP handshake under mtu");
}

fn pod_cidr_overlap_only_loses_pod_to_node(t: &Topology) {
    let (n1, n2) = (t.node("node1").unwrap(), t.node("node2").unwrap());
    let p2 = t.pod("n2p0").unwrap();
    assert_answered(t, &ping("n1p0", p2.ip), "pod-to-pod under pod-cidr-overlap");
    assert_answered(t, &ping("n2p0", n1.ip), "node2's pod to node1");
    let out = exec_in(&n1.netns, &["ping", "-c1", "-W1", &n2.ip.to_string()]).unwrap();
    assert!(out.status.success(), "node-to-node under pod-cidr-overlap");
}

/// The seed incident: same-node pods talk, cross-node pods don't.
fn same_node_survives_encap_never(prefix: &str, encap: Encap) {
    let lab = up(prefix, encap, 2);
    let t = lab.topology();
    let same = ping("n1p0", t.pod("n1p1").unwrap().ip);
    let info = lab::break_lab(t, Fault::EncapNever).expect("break");
    assert_eq!(info.node, "node1,node2");
    assert_lost(t, &info.probe, "across nodes under encap-never");
    assert_answered(t, &same, "on the same node under encap-never");
    let back = ping("n2p1", t.pod("n2p0").unwrap().ip);
    assert_answered(t, &back, "on node2 under encap-never");
    lab::heal_all(t).expect("heal_all");
    assert_answered(t, &info.probe, "across nodes after heal_all");
    lab.down().expect("lab down");
}

#[test]
fn vxlan_encap_never_keeps_same_node_pods() {
    same_node_survives_encap_never("tf-v-samenode", Encap::Vxlan);
}

#[test]
fn none_encap_never_keeps_same_node_pods() {
    same_node_survives_encap_never("tf-n-samenode", Encap::None);
}

#[test]
fn refusals_and_heal_all() {
    let lab = up("tf-v-refuse", Encap::Vxlan, 1);
    let t = lab.topology();
    let before = snapshot(t);
    lab::break_lab(t, Fault::MissingRoute).expect("break missing-route");
    let again = lab::break_lab(t, Fault::MissingRoute).expect_err("second missing-route");
    assert!(format!("{again:#}").contains("already active"), "{again:#}");
    lab::break_lab(t, Fault::Mtu).expect("a different fault at the same time");
    lab::break_lab(t, Fault::UnderlayBlocksVxlan).expect("a third");
    assert_eq!(
        lab::active("tf-v-refuse").unwrap(),
        [Fault::MissingRoute, Fault::Mtu, Fault::UnderlayBlocksVxlan]
    );
    let not_active = lab::heal(t, Fault::PolicyDrop).expect_err("heal of an inactive fault");
    assert!(
        format!("{not_active:#}").contains("not active"),
        "{not_active:#}"
    );
    lab::heal(t, Fault::Mtu).expect("heal one of three");
    assert_eq!(
        lab::active("tf-v-refuse").unwrap(),
        [Fault::MissingRoute, Fault::UnderlayBlocksVxlan]
    );
    lab::heal_all(t).expect("heal_all");
    assert!(lab::active("tf-v-refuse").unwrap().is_empty());
    assert_same(&before, &snapshot(t), "heal_all");
    assert_answered(t, &Fault::Mtu.probe(t).unwrap(), "after heal_all");

    // A lab that is not running is refused, and so are VXLAN faults in none mode.
    let ghost = LabSpec::with_prefix("tf-ghost").plan().unwrap();
    let err = lab::break_lab(&ghost, Fault::MissingRoute).expect_err("lab not up");
    assert!(format!("{err:#}").contains("not running"), "{err:#}");
    lab.down().expect("lab down");
    assert!(!lab::status::faults_path("tf-v-refuse").exists());
}

#[test]
fn none_mode_refuses_vxlan_faults() {
    let lab = up("tf-n-refuse", Encap::None, 1);
    let t = lab.topology();
    for fault in Fault::ALL
        .into_iter()
        .filter(|f| !f.applies_to(Encap::None))
    {
        let err = lab::break_lab(t, fault).expect_err("VXLAN fault in none mode");
        assert!(format!("{err:#}").contains("needs a VXLAN lab"), "{err:#}");
    }
    assert!(lab::active("tf-n-refuse").unwrap().is_empty());
    // Dropping the lab with an active fault removes the faults file too.
    lab::break_lab(t, Fault::PolicyDrop).expect("break");
    assert!(lab::status::faults_path("tf-n-refuse").exists());
    drop(lab);
    assert!(!lab::status::faults_path("tf-n-refuse").exists());
    assert!(lab::active("tf-n-refuse").unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Drop reasons, with the kernel's skb:kfree_skb tracepoint in a tracefs instance of our own.

const TRACEFS: &str = "/sys/kernel/tracing";
/// Reasons of drops that happen anyway (ping sockets, socket teardown, other activity).
const NOISE: [&str; 3] = ["NO_SOCKET", "NOT_SPECIFIED", "QUEUE_PURGE"];

struct TraceInstance(std::path::PathBuf);

impl TraceInstance {
    fn new(name: &str) -> Self {
        let mounted = std::process::Command::new("mountpoint")
            .args(["-q", TRACEFS])
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let ok = std::process::Command::new("mount")
                .args(["-t", "tracefs", "tracefs", TRACEFS])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot mount tracefs on {TRACEFS}");
        }
        let dir = std::path::Path::new(TRACEFS).join("instances").join(name);
        if !dir.exists() {
            fs::create_dir(&dir).expect("create tracefs instance");
        }
        Self(dir)
    }

    fn capture(&self, f: impl FnOnce()) -> String {
        let enable = self.0.join("events/skb/kfree_skb/enable");
        fs::write(self.0.join("trace"), "").unwrap();
        fs::write(&enable, "1").unwrap();
        f();
        fs::write(&enable, "0").unwrap();
        fs::read_to_string(self.0.join("trace")).unwrap()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("events/skb/kfree_skb/enable"), "0");
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
#[ignore = "about 30 s; the kfree_skb tracepoint is global (run alone)"]
fn drop_reasons() {
    let trace = TraceInstance::new("tracer-lab-faults");
    for (encap, services) in [
        (Encap::Vxlan, false),
        (Encap::None, false),
        (Encap::Vxlan, true),
        (Encap::None, true),
    ] {
        let lab = up_with("tf-drops", encap, 1, services);
        let t = lab.topology();
        let faults = Fault::ALL
            .into_iter()
            .filter(|f| f.applies_to(encap) && f.needs_services() == services);
        for fault in faults {
            let info = lab::break_lab(t, fault).expect("break");
            let delayed = info.expected_drops.iter().any(|d| d.delayed);
            let text = trace.capture(|| {
                let _ = info.probe.run(t, LOST);
                if delayed {
                    std::thread::sleep(Duration::from_millis(3500));
                }
            });
            // An expected drop may have a noise reason (a blackhole route: NOT_SPECIFIED in
            // ip_error; NO_SOCKET of a reply at a client that does not know its source), so it
            // is looked for among all of them and shown.
            let expected = |l: &str| {
                info.expected_drops.iter().any(|d| {
                    l.contains(&format!("location={}+", d.function))
                        && l.contains(&format!("reason: {}", d.reason))
                })
            };
            let all: Vec<&str> = text.lines().filter(|l| l.contains("kfree_skb:")).collect();
            let seen: Vec<&str> = all
                .iter()
                .copied()
                .filter(|l| {
                    expected(l) || !NOISE.iter().any(|n| l.contains(&format!("reason: {n}")))
                })
                .collect();
            eprintln!("{encap} {fault}:\n  {}", seen.join("\n  "));
            for d in &info.expected_drops {
                let proto = if d.packet == "arp" { "2054" } else { "2048" };
                assert!(
                    all.iter()
                        .any(|l| l.contains(&format!("location={}+", d.function))
                            && l.contains(&format!("reason: {}", d.reason))
                            && l.contains(&format!("protocol={proto}"))),
                    "{encap} {fault}: no {} drop in {} (protocol {proto})",
                    d.reason,
                    d.function
                );
            }
            lab::heal(t, fault).expect("heal");
        }
        lab.down().expect("lab down");
    }
}
