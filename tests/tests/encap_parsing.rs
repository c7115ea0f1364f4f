//! IPIP parsing without `tunl0` (CONFIG_NET_IPIP is off on the test machines): crafted IP-in-IP
//! packets (outer protocol 4) sent between lab pods, and through a `tun` device, which, like
//! `tunl0`, has no Ethernet header and so exercises the tracer's L3 programs.

mod common;

use std::{io::Write, net::Ipv4Addr, os::fd::FromRawFd};

use common::{hop_path, require_root, Tracer};
use lab::Encap;
use serde_json::Value;

/// Inner addresses of the crafted packets: inside the lab's pod CIDR, owned by no pod. They are
/// bytes inside a packet that is sent to a lab pod, never a destination of their own.
const INNER_SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 200, 1);
const INNER_DST: Ipv4Addr = Ipv4Addr::new(10, 244, 200, 2);

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header + ICMP echo request.
fn ipv4_icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, ip_id: u16, icmp_id: u16, seq: u16) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0];
    icmp.extend_from_slice(&icmp_id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(b"tracer ipip test");
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, ip_id, &icmp)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, ip_id: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&ip_id.to_be_bytes());
    h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// Sends `payload` as the body of an IP protocol 4 packet from the calling thread's netns.
fn send_ipip(dst: Ipv4Addr, payload: &[u8]) -> std::io::Result<()> {
    // SAFETY: plain socket(2); wrapped in a UdpSocket-like owner right away via OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_IPIP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned only here.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sending an initialised buffer to a valid sockaddr_in.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn inner_traces(traces: &[Value]) -> Vec<&Value> {
    traces
        .iter()
        .filter(|t| {
            t["packet"]["src"] == INNER_SRC.to_string()
                && t["packet"]["dst"] == INNER_DST.to_string()
        })
        .collect()
}

#[test]
fn ipip_between_pods_binds_outer_and_inner_headers() {
    require_root();
    let lab = common::lab_up("tt-ipip", 1, Encap::None);
    let topo = lab.topology().clone();
    let a = topo.pod("n1p0").expect("n1p0").clone();
    let c = topo.pod("n2p0").expect("n2p0").clone();
    let (n1, n2) = (&topo.nodes[0], &topo.nodes[1]);

    let mut args = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".to_string(), n.netns.clone()]);
    }
    // The filter applies to the inner header.
    args.extend([
        "--filter".into(),
        format!("src host {INNER_SRC} and icmp"),
        "--output".into(),
        "json".into(),
    ]);
    args.extend(["--linger-ms".into(), "100".into()]);
    let tracer = Tracer::start(&args);
    let packet = ipv4_icmp_echo(INNER_SRC, INNER_DST, 0x4242, 777, 5);
    let dst = c.ip;
    lab::in_netns(&a.netns, move || send_ipip(dst, &packet))
        .expect("netns")
        .expect("send IPIP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let traces = out.traces();
    let found = inner_traces(&traces);
    assert_eq!(found.len(), 1, "one trace of the inner packet: {traces:?}");
    let t = found[0];
    assert_eq!(t["packet"]["proto"], "icmp");
    assert_eq!(
        (
            t["packet"]["icmp_id"].as_u64(),
            t["packet"]["icmp_seq"].as_u64()
        ),
        (Some(777), Some(5))
    );
    assert_eq!(t["packet"]["ip_id"], 0x4242);
    let want = vec![
        (n1.netns.clone(), a.cali.clone(), "ingress".to_string()),
        (n1.netns.clone(), n1.uplink.clone(), "egress".to_string()),
        (n2.netns.clone(), n2.uplink.clone(), "ingress".to_string()),
        (n2.netns.clone(), c.cali.clone(), "egress".to_string()),
    ];
    assert_eq!(hop_path(t), want, "{t}");
    for h in t["hops"].as_array().expect("hops") {
        let e = &h["encap"];
        assert_eq!(e["type"], "ipip", "{h}");
        assert_eq!(e["outer_src"], a.ip.to_string(), "{h}");
        assert_eq!(e["outer_dst"], c.ip.to_string(), "{h}");
    }
    // Nothing but the crafted packet matched the filter.
    assert_eq!(traces.len(), 1, "{traces:?}");
    lab.down().expect("lab down");
}

#[test]
fn l3_device_without_ethernet_header_is_parsed() {
    require_root();
    let lab = common::lab_up("tt-tun", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let node = topo.nodes[0].clone();
    let a = topo.pod("n1p0").expect("n1p0").clone();
    common::add_tun(&node.netns, "tun0");

    let args = vec![
        "--netns".to_string(),
        node.netns.clone(),
        "--iface".into(),
        "tun0".into(),
        "--filter".into(),
        format!("host {INNER_SRC}"),
        "--output".into(),
        "json".into(),
        "--linger-ms".into(),
        "100".into(),
    ];
    let tracer = Tracer::start(&args);
    // Written into the tun device, the packets arrive at the node as received on tun0: a plain
    // ICMP echo to pod a, and the same echo wrapped in IPIP (outer: 10.244.200.1 -> pod a).
    let plain = ipv4_icmp_echo(INNER_SRC, a.ip, 0x1111, 4242, 1);
    let inner = ipv4_icmp_echo(INNER_SRC, INNER_DST, 0x2222, 4242, 2);
    let wrapped = ipv4(INNER_SRC, a.ip, 4, 0x3333, &inner);
    lab::in_netns(&node.netns, move || -> std::io::Result<()> {
        let mut tun = open_tun("tun0")?;
        tun.write_all(&plain)?;
        tun.write_all(&wrapped)?;
        Ok(())
    })
    .expect("netns")
    .expect("write to tun0");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = tracer.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let traces = out.traces();
    let src = INNER_SRC.to_string();
    let from_tun = |seq: u64| -> Vec<&Value> {
        traces
            .iter()
            .filter(|t| t["packet"]["src"] == src.as_str() && t["packet"]["icmp_seq"] == seq)
            .collect()
    };
    let on_tun = |t: &&Value| t["hops"][0]["ifname"] == "tun0" && t["hops"][0]["dir"] == "ingress";
    let plain_t = from_tun(1);
    assert_eq!(plain_t.len(), 1, "{traces:?}");
    assert!(on_tun(&plain_t[0]), "{}", plain_t[0]);
    assert!(plain_t[0]["hops"][0]["encap"].is_null());
    assert_eq!(plain_t[0]["packet"]["dst"], a.ip.to_string());
    // The node forwards the plain echo to pod a: the next hop is a's veth, egress.
    assert_eq!(
        plain_t[0]["hops"][1]["ifname"],
        a.cali.as_str(),
        "{}",
        plain_t[0]
    );

    let wrapped_t = from_tun(2);
    assert_eq!(wrapped_t.len(), 1, "{traces:?}");
    assert!(on_tun(&wrapped_t[0]), "{}", wrapped_t[0]);
    let e = &wrapped_t[0]["hops"][0]["encap"];
    assert_eq!(e["type"], "ipip");
    assert_eq!(e["outer_dst"], a.ip.to_string());
    assert_eq!(wrapped_t[0]["packet"]["dst"], INNER_DST.to_string());
    lab.down().expect("lab down");
}

/// Opens the persistent tun device `name` (IFF_TUN | IFF_NO_PI) in the calling thread's netns.
fn open_tun(name: &str) -> std::io::Result<std::fs::File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq-sized struct we own.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}
