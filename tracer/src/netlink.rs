//! A minimal rtnetlink client: one `RTM_GETLINK` dump, decoded just enough to know each
//! interface's index, name, link type, MTU and, for tunnels, the underlying device, the local
//! address and (VXLAN) the UDP port, and a [`LinkMonitor`] subscribed to link changes (pods
//! come and go). It runs in the calling thread's network namespace.
//!
//! Attributes are walked with explicit bounds checks; a malformed reply is an error, not a panic.

use std::{io, net::Ipv4Addr};

use thiserror::Error;

const NETLINK_ROUTE: i32 = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
/// `RTMGRP_LINK`: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_ACK: u16 = 0x4;
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
/// The clsact qdisc's ingress and egress hooks (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_*)`).
pub const CLSACT_INGRESS: u32 = 0xFFFF_FFF2;
pub const CLSACT_EGRESS: u32 = 0xFFFF_FFF3;
/// `htons(ETH_P_ALL)`, the protocol of a filter that sees every packet.
const ETH_P_ALL_BE: u16 = 0x0300;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_IPTUN_LINK: u16 = 1;
const IFLA_IPTUN_LOCAL: u16 = 2;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `ARPHRD_ETHER`: the device carries Ethernet frames.
pub const ARPHRD_ETHER: u16 = 1;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("netlink error reply: {0}")]
    Reply(io::Error),
    #[error("malformed netlink reply: {0}")]
    Malformed(&'static str),
}

/// One interface as the kernel describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    /// `ARPHRD_*` link type.
    pub link_type: u16,
    pub mtu: u32,
    /// `IFLA_INFO_KIND`: "veth", "vxlan", "ipip", "bridge", ...
    pub kind: String,
    /// Tunnels: the underlying device (0 when not bound to one).
    pub tunnel_link: u32,
    /// Tunnels: the local (source) address, if set.
    pub tunnel_local: Option<Ipv4Addr>,
    /// VXLAN: destination UDP port and VNI.
    pub vxlan_port: Option<u16>,
    pub vxlan_id: Option<u32>,
}

impl Link {
    pub fn has_ethernet_header(&self) -> bool {
        self.link_type == ARPHRD_ETHER
    }
}

/// Lists every interface of the calling thread's network namespace.
pub fn dump_links() -> Result<Vec<Link>, NetlinkError> {
    // SAFETY: plain socket(2); the fd is wrapped in OwnedFd right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);

    let mut req = [0u8; NLMSG_HDRLEN + IFINFOMSG_LEN];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: sending a fully initialised buffer of the given length.
    let sent = unsafe { libc::send(raw, req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error().into());
    }

    let mut links = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= NLMSG_HDRLEN {
            let mlen = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
            let mtype = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if mlen < NLMSG_HDRLEN || mlen > msgs.len() {
                return Err(NetlinkError::Malformed("message length"));
            }
            let body = &msgs[NLMSG_HDRLEN..mlen];
            match mtype {
                NLMSG_DONE => return Ok(links),
                NLMSG_ERROR => {
                    let errno = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or(NetlinkError::Malformed("short error message"))?;
                    return Err(NetlinkError::Reply(io::Error::from_raw_os_error(-errno)));
                }
                _ => links.push(parse_link(body)?),
            }
            msgs = &msgs[align4(mlen).min(msgs.len())..];
        }
    }
}

/// A tc filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    pub priority: u16,
    pub handle: u32,
    /// `TCA_KIND` (`bpf` for eBPF programs).
    pub kind: String,
    /// For `bpf` filters, the name the loader gave (`TCA_BPF_NAME`).
    pub name: String,
}

/// A fresh netlink route socket in the calling thread's namespace.
fn route_socket() -> Result<std::os::fd::OwnedFd, NetlinkError> {
    // SAFETY: plain socket(2); the fd is wrapped in OwnedFd right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A `tcmsg` request for `ifindex` on hook `parent`.
fn tc_request(ty: u16, flags: u16, ifindex: u32, parent: u32, handle: u32, info: u32) -> Vec<u8> {
    let mut req = vec![0u8; NLMSG_HDRLEN + TCMSG_LEN];
    req[4..6].copy_from_slice(&ty.to_ne_bytes());
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let t = NLMSG_HDRLEN;
    req[t + 4..t + 8].copy_from_slice(&ifindex.to_ne_bytes());
    req[t + 8..t + 12].copy_from_slice(&handle.to_ne_bytes());
    req[t + 12..t + 16].copy_from_slice(&parent.to_ne_bytes());
    req[t + 16..t + 20].copy_from_slice(&info.to_ne_bytes());
    req
}

/// Sends `req` and reads the answers until the end of a dump, or the acknowledgement; calls
/// `each` with the body of every other message.
fn converse(
    mut req: Vec<u8>,
    mut each: impl FnMut(u16, &[u8]) -> Result<(), NetlinkError>,
) -> Result<(), NetlinkError> {
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    let sock = route_socket()?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: sending a fully initialised buffer of the given length.
    if unsafe { libc::send(raw, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error().into());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receiving into a buffer we own, bounded by its length.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= NLMSG_HDRLEN {
            let mlen = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
            let mtype = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if mlen < NLMSG_HDRLEN || mlen > msgs.len() {
                return Err(NetlinkError::Malformed("message length"));
            }
            let body = &msgs[NLMSG_HDRLEN..mlen];
            match mtype {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = body
                        .get(0..4)
                        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .ok_or(NetlinkError::Malformed("short error message"))?;
                    return if errno == 0 {
                        Ok(())
                    } else {
                        Err(NetlinkError::Reply(io::Error::from_raw_os_error(-errno)))
                    };
                }
                t => each(t, body)?,
            }
            msgs = &msgs[align4(mlen).min(msgs.len())..];
        }
    }
}

/// The filters on clsact hook `parent` (`CLSACT_INGRESS` or `CLSACT_EGRESS`) of `ifindex`, in
/// the calling thread's namespace; none when the interface has no clsact qdisc.
pub fn tc_filters(ifindex: u32, parent: u32) -> Result<Vec<TcFilter>, NetlinkError> {
    let req = tc_request(
        RTM_GETTFILTER,
        NLM_F_REQUEST | NLM_F_DUMP,
        ifindex,
        parent,
        0,
        0,
    );
    let mut out = Vec::new();
    let r = converse(req, |ty, body| {
        if ty == RTM_NEWTFILTER {
            if let Some(f) = parse_tc_filter(body)? {
                out.push(f);
            }
        }
        Ok(())
    });
    match r {
        // No clsact qdisc (or no such device): no filters of anyone.
        Err(NetlinkError::Reply(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(Vec::new())
        }
        r => r.map(|()| out),
    }
}

/// Deletes the `bpf` filter `(priority, handle)` on hook `parent` of `ifindex`.
pub fn delete_tc_filter(
    ifindex: u32,
    parent: u32,
    priority: u16,
    handle: u32,
) -> Result<(), NetlinkError> {
    let info = (u32::from(priority) << 16) | u32::from(ETH_P_ALL_BE);
    let mut req = tc_request(
        RTM_DELTFILTER,
        NLM_F_REQUEST | NLM_F_ACK,
        ifindex,
        parent,
        handle,
        info,
    );
    let kind = b"bpf\0";
    req.extend(((4 + kind.len()) as u16).to_ne_bytes());
    req.extend(TCA_KIND.to_ne_bytes());
    req.extend(kind);
    while !req.len().is_multiple_of(4) {
        req.push(0);
    }
    converse(req, |_, _| Ok(()))
}

fn parse_tc_filter(body: &[u8]) -> Result<Option<TcFilter>, NetlinkError> {
    if body.len() < TCMSG_LEN {
        return Err(NetlinkError::Malformed("short tcmsg"));
    }
    let handle = u32::from_ne_bytes(body[8..12].try_into().unwrap_or_default());
    let info = u32::from_ne_bytes(body[16..20].try_into().unwrap_or_default());
    let (mut kind, mut name) = (String::new(), String::new());
    let text = |p: &[u8]| {
        let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
        String::from_utf8_lossy(&p[..end]).into_owned()
    };
    for attr in attrs(&body[TCMSG_LEN..]) {
        let (ty, p) = attr?;
        match ty {
            TCA_KIND => kind = text(p),
            TCA_OPTIONS => {
                for opt in attrs(p) {
                    let (oty, op) = opt?;
                    if oty == TCA_BPF_NAME {
                        name = text(op);
                    }
                }
            }
            _ => {}
        }
    }
    // The chain's own entry (handle 0) is not a filter.
    Ok((handle != 0).then_some(TcFilter {
        priority: (info >> 16) as u16,
        handle,
        kind,
        name,
    }))
}

/// A change of the namespace's links, as the kernel announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed (`RTM_NEWLINK`).
    New(Link),
    /// A link is gone (`RTM_DELLINK`).
    Del(Link),
    /// Events were lost (the socket's buffer overflowed): list the links again.
    Overrun,
}

/// A netlink socket subscribed to the link changes of the namespace it was opened in (it stays
/// bound to that namespace whichever thread reads it). Non-blocking: `poll` returns what is
/// waiting.
pub struct LinkMonitor {
    sock: std::os::fd::OwnedFd,
}

impl LinkMonitor {
    /// Subscribes in the calling thread's namespace.
    pub fn open() -> Result<LinkMonitor, NetlinkError> {
        // SAFETY: plain socket(2); the fd is wrapped in OwnedFd right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid value before the fields are set.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: bind(2) with a valid sockaddr_nl and its size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(LinkMonitor { sock })
    }

    /// Every link change announced since the last call.
    pub fn poll(&self) -> Result<Vec<LinkEvent>, NetlinkError> {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&self.sock);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: receiving into a buffer we own, bounded by its length.
            let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(out),
                    Some(libc::ENOBUFS) => {
                        out.push(LinkEvent::Overrun);
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(e.into()),
                }
            }
            out.extend(parse_events(&buf[..n as usize])?);
        }
    }
}

/// The link changes in one datagram of notifications.
fn parse_events(mut msgs: &[u8]) -> Result<Vec<LinkEvent>, NetlinkError> {
    let mut out = Vec::new();
    while msgs.len() >= NLMSG_HDRLEN {
        let mlen = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
        let mtype = u16::from_ne_bytes([msgs[4], msgs[5]]);
        if mlen < NLMSG_HDRLEN || mlen > msgs.len() {
            return Err(NetlinkError::Malformed("message length"));
        }
        let body = &msgs[NLMSG_HDRLEN..mlen];
        match mtype {
            RTM_NEWLINK => out.push(LinkEvent::New(parse_link(body)?)),
            RTM_DELLINK => out.push(LinkEvent::Del(parse_link(body)?)),
            _ => {}
        }
        msgs = &msgs[align4(mlen).min(msgs.len())..];
    }
    Ok(out)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates over the attributes in `buf` as (type, payload).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NetlinkError>> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            buf = &[];
            return Some(Err(NetlinkError::Malformed("attribute length")));
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((ty, payload)))
    })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(0..4)?.try_into().ok()?))
}

fn parse_link(body: &[u8]) -> Result<Link, NetlinkError> {
    if body.len() < IFINFOMSG_LEN {
        return Err(NetlinkError::Malformed("short ifinfomsg"));
    }
    let mut link = Link {
        link_type: u16::from_ne_bytes([body[2], body[3]]),
        ifindex: u32::from_ne_bytes([body[4], body[5], body[6], body[7]]),
        ..Link::default()
    };
    for attr in attrs(&body[IFINFOMSG_LEN..]) {
        let (ty, p) = attr?;
        match ty {
            IFLA_IFNAME => {
                let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
                link.name = String::from_utf8_lossy(&p[..end]).into_owned();
            }
            IFLA_MTU => link.mtu = u32_of(p).unwrap_or(0),
            IFLA_LINKINFO => parse_linkinfo(p, &mut link)?,
            _ => {}
        }
    }
    Ok(link)
}

fn parse_linkinfo(p: &[u8], link: &mut Link) -> Result<(), NetlinkError> {
    let mut data: &[u8] = &[];
    for attr in attrs(p) {
        let (ty, v) = attr?;
        match ty {
            IFLA_INFO_KIND => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                link.kind = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            IFLA_INFO_DATA => data = v,
            _ => {}
        }
    }
    let ipv4 = |v: &[u8]| -> Option<Ipv4Addr> {
        let b: [u8; 4] = v.get(0..4)?.try_into().ok()?;
        (b != [0; 4]).then(|| Ipv4Addr::from(b))
    };
    match link.kind.as_str() {
        "vxlan" => {
            for attr in attrs(data) {
                let (ty, v) = attr?;
                match ty {
                    IFLA_VXLAN_ID => link.vxlan_id = u32_of(v),
                    IFLA_VXLAN_LINK => link.tunnel_link = u32_of(v).unwrap_or(0),
                    IFLA_VXLAN_LOCAL => link.tunnel_local = ipv4(v),
                    IFLA_VXLAN_PORT => {
                        link.vxlan_port = v.get(0..2).map(|b| u16::from_be_bytes([b[0], b[1]]))
                    }
                    _ => {}
                }
            }
        }
        "ipip" => {
            for attr in attrs(data) {
                let (ty, v) = attr?;
                match ty {
                    IFLA_IPTUN_LINK => link.tunnel_link = u32_of(v).unwrap_or(0),
                    IFLA_IPTUN_LOCAL => link.tunnel_local = ipv4(v),
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_a_vxlan_link() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[2..4].copy_from_slice(&ARPHRD_ETHER.to_ne_bytes());
        body[4..8].copy_from_slice(&7i32.to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, b"vxlan.calico\0"));
        body.extend(attr(IFLA_MTU, &1450u32.to_ne_bytes()));
        let mut data = attr(IFLA_VXLAN_ID, &4096u32.to_ne_bytes());
        data.extend(attr(IFLA_VXLAN_LINK, &2u32.to_ne_bytes()));
        data.extend(attr(IFLA_VXLAN_LOCAL, &[10, 10, 0, 1]));
        data.extend(attr(IFLA_VXLAN_PORT, &4789u16.to_be_bytes()));
        let mut info = attr(IFLA_INFO_KIND, b"vxlan\0");
        info.extend(attr(IFLA_INFO_DATA, &data));
        body.extend(attr(IFLA_LINKINFO, &info));
        let link = parse_link(&body).unwrap();
        assert_eq!(link.ifindex, 7);
        assert_eq!(link.name, "vxlan.calico");
        assert_eq!(link.mtu, 1450);
        assert_eq!(link.kind, "vxlan");
        assert_eq!(link.vxlan_id, Some(4096));
        assert_eq!(link.tunnel_link, 2);
        assert_eq!(link.tunnel_local, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(link.vxlan_port, Some(4789));
        assert!(link.has_ethernet_header());
    }

    #[test]
    fn link_notifications() {
        let msg = |ty: u16, ifindex: i32, name: &[u8]| {
            let mut body = vec![0u8; IFINFOMSG_LEN];
            body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
            body.extend(attr(IFLA_IFNAME, name));
            let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
            m.extend(ty.to_ne_bytes());
            m.extend([0u8; 10]);
            m.extend(body);
            m
        };
        let mut dgram = msg(RTM_NEWLINK, 41, b"cali0123456789a\0");
        dgram.extend(msg(RTM_DELLINK, 40, b"caliold\0"));
        dgram.extend(msg(RTM_GETLINK, 1, b"lo\0"));
        let ev = parse_events(&dgram).unwrap();
        assert!(
            matches!(&ev[0], LinkEvent::New(l) if l.ifindex == 41 && l.name == "cali0123456789a")
        );
        assert!(matches!(&ev[1], LinkEvent::Del(l) if l.ifindex == 40));
        assert_eq!(ev.len(), 2);
        assert!(parse_events(&dgram[..20]).is_err());
    }

    #[test]
    fn rejects_truncated_attributes() {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body.extend_from_slice(&[40, 0, 3, 0, b'e', b't']);
        assert!(matches!(parse_link(&body), Err(NetlinkError::Malformed(_))));
        assert!(matches!(
            parse_link(&[0; 8]),
            Err(NetlinkError::Malformed(_))
        ));
    }
}
