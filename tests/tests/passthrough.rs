//! The tracer never changes what happens to a packet: every tc program it attaches returns
//! `TC_ACT_UNSPEC` (tcx "next") and leaves the packet's bytes as they were, on every path:
//! matching and non-matching packets, VXLAN and IPIP, anything the quick path declines, every
//! truncation, and random bytes; in per-packet event mode and in in-kernel aggregation mode.
//!
//! Design note: the programs are the ones a running tracer attached in a lab node, found by id
//! through the tracer's own `/proc/<pid>/fdinfo` (no other program on the machine is touched),
//! and run with `BPF_PROG_TEST_RUN` on crafted frames from inside the node's namespace, so that
//! the context's `ifindex` can name the node's pod veth (the aggregation path looks up the
//! interface's role). Nothing is sent on any interface.

mod common;

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
};

use aya::programs::loaded_programs;
use common::{require_root, Tracer};
use lab::Encap;

/// `TC_ACT_UNSPEC` (-1) as the u32 `BPF_PROG_TEST_RUN` reports.
const TC_ACT_UNSPEC: u32 = u32::MAX;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const VXLAN_PORT: u16 = 4789;

/// `bpf_attr.test` (BPF_PROG_TEST_RUN).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The head of `struct __sk_buff` up to `ifindex` (the kernel zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct SkbCtx {
    fields: [u32; 10],
    ifindex: u32,
}

/// Frames `BPF_PROG_TEST_RUN` itself refuses (EINVAL) before the program runs: an IPv4 or IPv6
/// EtherType without the whole fixed IP header behind it.
fn refused_by_the_kernel(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() < 14 + 20,
        0x86dd => frame.len() < 14 + 40,
        _ => false,
    }
}

/// Runs the program once on `frame` as received on `ifindex`; returns (verdict, bytes after),
/// or `None` for a frame the kernel refuses to run programs on (see `refused_by_the_kernel`).
fn test_run(prog: &impl AsFd, frame: &[u8], ifindex: u32) -> Option<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = SkbCtx {
        ifindex,
        ..SkbCtx::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: std::mem::size_of::<SkbCtx>() as u32,
        ctx_in: &ctx as *const SkbCtx as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: bpf(2) with a fully initialised attr whose buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    let err = std::io::Error::last_os_error();
    if rc != 0 && err.raw_os_error() == Some(libc::EINVAL) && refused_by_the_kernel(frame) {
        return None;
    }
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN on the {}-byte frame {frame:02x?}: {err}",
        frame.len(),
    );
    out.truncate(attr.data_size_out as usize);
    Some((attr.retval, out))
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0xee; 12];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn l4(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let mut b = sport.to_be_bytes().to_vec();
    b.extend_from_slice(&dport.to_be_bytes());
    b.resize(len, 0x5a);
    b
}

fn vxlan(outer_src: Ipv4Addr, outer_dst: Ipv4Addr, flags: u8, inner: &[u8]) -> Vec<u8> {
    let mut udp = l4(40000, VXLAN_PORT, 8);
    udp.extend_from_slice(&[flags, 0, 0, 0, 0, 0x10, 0, 0]);
    udp.extend_from_slice(&eth(0x0800, inner));
    eth(0x0800, &ipv4(outer_src, outer_dst, 17, &udp))
}

/// Frames for every path of the parser, with the addresses of the traced pods (`a`, `b`) so
/// that some match the filter and some do not.
fn corpus(a: Ipv4Addr, b: Ipv4Addr) -> Vec<Vec<u8>> {
    let other = Ipv4Addr::new(10, 244, 250, 250);
    let (n1, n2) = (Ipv4Addr::new(10, 10, 0, 1), Ipv4Addr::new(10, 10, 0, 2));
    let tcp = ipv4(a, b, 6, &l4(43070, 5201, 40));
    let udp = ipv4(b, a, 17, &l4(5353, 53, 30));
    let icmp = ipv4(a, b, 1, &[8, 0, 0, 0, 0x04, 0xd2, 0, 1, 1, 2, 3, 4]);
    let miss = ipv4(other, other, 6, &l4(1, 2, 40));
    let mut options = tcp.clone();
    options[0] = 0x46;
    options.splice(20..20, [1, 1, 1, 1]);
    let mut fragment = tcp.clone();
    fragment[6..8].copy_from_slice(&[0x20, 0x10]);
    let mut vlan = eth(0x0800, &tcp);
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
    let mut seeds = vec![
        eth(0x0800, &tcp),
        eth(0x0800, &udp),
        eth(0x0800, &icmp),
        eth(0x0800, &miss),
        eth(0x0800, &options),
        eth(0x0800, &fragment),
        vlan,
        vxlan(n1, n2, 0x08, &tcp),
        vxlan(n1, n2, 0x08, &miss),
        vxlan(n1, n2, 0x00, &tcp),
        eth(0x0800, &ipv4(n1, n2, 4, &tcp)),
        eth(0x86dd, &[0x60; 60]),
        eth(0x0806, &[0; 28]),
    ];
    // Every truncation of the interesting frames (BPF_PROG_TEST_RUN needs an Ethernet header,
    // and refuses IP frames shorter than their fixed IP header: those are skipped).
    let mut frames = Vec::new();
    for s in &seeds {
        for len in 14..s.len() {
            frames.push(s[..len].to_vec());
        }
    }
    // Random bytes behind a valid Ethernet/IPv4 start, and entirely random frames.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..2000 {
        let mut f = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % f.len();
            f[at] = next() as u8;
        }
        frames.push(f);
    }
    for _ in 0..200 {
        let len = 14 + (next() as usize % 150);
        frames.push((0..len).map(|_| next() as u8).collect());
    }
    frames.append(&mut seeds);
    frames
}

/// Runs every frame through every tc program of the tracer started with `args` and checks the
/// verdict and the bytes. Returns how many (program, frame) runs were checked.
fn check_mode(
    node_ns: &str,
    pod_veth: u32,
    cmd: &str,
    args: &[String],
    frames: &[Vec<u8>],
) -> usize {
    let tracer = Tracer::start_cmd(cmd, args);
    let ids: HashSet<u32> = std::fs::read_dir(format!("/proc/{}/fdinfo", tracer.pid()))
        .expect("the tracer's fdinfo")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect();
    let progs: Vec<_> = loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()))
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("hop_")))
        .collect();
    let names: HashSet<String> = progs
        .iter()
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect();
    // tun0 makes the tracer load the L3 pair as well.
    for want in [
        "hop_ingress",
        "hop_egress",
        "hop_ingress_l3",
        "hop_egress_l3",
    ] {
        assert!(names.contains(want), "{want} not loaded: {names:?}");
    }
    let fds: Vec<_> = progs
        .iter()
        .map(|p| {
            (
                p.name_as_str().unwrap_or("?").to_string(),
                p.fd().expect("program fd"),
            )
        })
        .collect();
    let frames = frames.to_vec();
    let runs = lab::in_netns(node_ns, move || -> Result<usize, String> {
        let mut runs = 0;
        for (name, fd) in &fds {
            for frame in &frames {
                for ifindex in [0, pod_veth] {
                    let Some((verdict, after)) = test_run(fd, frame, ifindex) else {
                        continue;
                    };
                    if verdict != TC_ACT_UNSPEC {
                        return Err(format!("{name} returned {verdict} for {frame:02x?}"));
                    }
                    if &after != frame {
                        return Err(format!(
                            "{name} changed the frame {frame:02x?} into {after:02x?}"
                        ));
                    }
                    runs += 1;
                }
            }
        }
        Ok(runs)
    })
    .expect("entering the node's namespace")
    .unwrap_or_else(|e| panic!("{cmd} mode: {e}"));
    let out = tracer.stop();
    assert!(out.status.success(), "tracer: {}", out.stderr);
    runs
}

#[test]
fn tc_programs_pass_every_packet_through_unchanged() {
    require_root();
    let lab = common::lab_up("tt-pass", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let node = topo.nodes[0].clone();
    let (a, b) = (
        topo.pod("n1p0").expect("n1p0").clone(),
        topo.pod("n2p0").expect("n2p0").clone(),
    );
    common::add_tun(&node.netns, "tun0");
    let veth = lab::exec_in(
        &node.netns,
        &["cat", &format!("/sys/class/net/{}/ifindex", a.cali)],
    )
    .expect("cat");
    let pod_veth: u32 = String::from_utf8_lossy(&veth.stdout)
        .trim()
        .parse()
        .expect("the pod veth's ifindex");
    let frames = corpus(a.ip, b.ip);
    let base = || {
        vec![
            "--netns".to_string(),
            node.netns.clone(),
            "--iface".into(),
            "tun0".into(),
            "--filter".into(),
            format!("host {} and host {}", a.ip, b.ip),
        ]
    };
    let mut events = base();
    events.extend(["--output".into(), "json".into(), "--no-drops".into()]);
    let mut runs = check_mode(&node.netns, pod_veth, "trace", &events, &frames);
    let mut agg = base();
    agg.push("--kernel-agg".into());
    runs += check_mode(&node.netns, pod_veth, "stats", &agg, &frames);
    assert!(runs > 4 * frames.len(), "only {runs} runs");
    lab.down().expect("lab down");
}
