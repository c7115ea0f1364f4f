//! Reads a [`NodeState`] in the calling thread's network namespace: rtnetlink dumps decoded
//! with the rust-netlink crates (links with their VXLAN/IPIP parameters, IPv4 addresses,
//! routes of every type in every table, rules, neighbours, and the FDB of VXLAN devices),
//! then the sysctls and the firewall. Each dump is independent: one that fails is named in
//! `unreadable` and the others are kept.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoIpTunnel, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
        LinkMessage, State,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol},
    rule::{RuleAction, RuleAttribute, RuleMessage},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use thiserror::Error;

use super::{
    firewall, sysctl, Addr, FdbEntry, Ipip, LinkState, Mac, Neighbour, Net, NodeState, RouteEntry,
    RouteType, RuleEntry, Vxlan,
};

#[derive(Debug, Error)]
pub enum DumpError {
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("netlink {what} dump: {err}")]
    Kernel { what: &'static str, err: io::Error },
    #[error("netlink {what} dump: undecodable reply: {err}")]
    Decode { what: &'static str, err: String },
}

/// Reads everything about the current namespace; `node` is its display name.
pub fn read_node(node: &str) -> NodeState {
    let mut st = NodeState {
        node: node.to_string(),
        ..NodeState::default()
    };
    let mut errors = Vec::new();
    match dump_links() {
        Ok(l) => st.links = l,
        Err(e) => errors.push(e.to_string()),
    }
    let name_of = |links: &[LinkState], i: u32| {
        links
            .iter()
            .find(|l| l.ifindex == i)
            .map(|l| l.name.clone())
            .unwrap_or_default()
    };
    match dump_addrs() {
        Ok(a) => {
            st.addrs = a
                .into_iter()
                .map(|mut a| {
                    a.dev = name_of(&st.links, a.ifindex);
                    a
                })
                .collect()
        }
        Err(e) => errors.push(e.to_string()),
    }
    match dump_routes() {
        Ok(r) => {
            st.routes = r
                .into_iter()
                .map(|mut r| {
                    r.dev = r.oif.map(|i| name_of(&st.links, i)).unwrap_or_default();
                    r
                })
                .collect()
        }
        Err(e) => errors.push(e.to_string()),
    }
    match dump_rules() {
        Ok(r) => st.rules = r,
        Err(e) => errors.push(e.to_string()),
    }
    match dump_neighbours() {
        Ok(n) => {
            st.neighbours = n
                .into_iter()
                .map(|mut n| {
                    n.dev = name_of(&st.links, n.ifindex);
                    n
                })
                .collect()
        }
        Err(e) => errors.push(e.to_string()),
    }
    match dump_fdb() {
        Ok(f) => {
            let vxlan: Vec<u32> = st.vteps().map(|l| l.ifindex).collect();
            st.fdb = f
                .into_iter()
                .filter(|f| vxlan.contains(&f.ifindex))
                .map(|mut f| {
                    f.dev = name_of(&st.links, f.ifindex);
                    f
                })
                .collect()
        }
        Err(e) => errors.push(e.to_string()),
    }
    let names: Vec<String> = st.links.iter().map(|l| l.name.clone()).collect();
    let (sysctls, missing) = sysctl::read(&names);
    st.sysctls = sysctls;
    errors.extend(missing);
    let (fw, fw_errors) = firewall::read();
    st.firewall = fw;
    errors.extend(fw_errors);
    st.unreadable = errors;
    st
}

/// Sends one dump request and collects the messages of the reply.
fn dump(
    what: &'static str,
    request: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, DumpError> {
    exchange(what, request, NLM_F_DUMP)
}

/// Sends one request (`flags` besides `NLM_F_REQUEST`: `NLM_F_DUMP` for a dump, `NLM_F_ACK`
/// for a single reply closed by an acknowledgement) and collects the messages of the reply.
pub(crate) fn exchange(
    what: &'static str,
    request: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, DumpError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(DumpError::Socket)?;
    socket.bind_auto().map_err(DumpError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(DumpError::Socket)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(DumpError::Socket)?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket.recv_from_full().map_err(DumpError::Socket)?;
        if data.is_empty() {
            return Err(DumpError::Decode {
                what,
                err: "the socket closed before the end of the dump".into(),
            });
        }
        let mut at = 0;
        while at < data.len() {
            let msg =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[at..]).map_err(|e| {
                    DumpError::Decode {
                        what,
                        err: e.to_string(),
                    }
                })?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(DumpError::Kernel {
                        what,
                        err: e.to_io(),
                    })
                }
                // The acknowledgement that closes a non-dump request.
                NetlinkPayload::Error(_) => return Ok(out),
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

pub(crate) fn dump_links() -> Result<Vec<LinkState>, DumpError> {
    let msgs = dump("link", RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_state(&l)),
            _ => None,
        })
        .collect())
}

fn link_state(l: &LinkMessage) -> LinkState {
    let mut s = LinkState {
        ifindex: l.header.index,
        up: l.header.flags.contains(LinkFlags::Up),
        carrier: l.header.flags.contains(LinkFlags::LowerUp),
        ..LinkState::default()
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => s.name.clone_from(n),
            LinkAttribute::Mtu(m) => s.mtu = *m,
            LinkAttribute::Address(mac) => s.mac = Mac::from_slice(mac),
            LinkAttribute::OperState(o) => s.oper = oper_name(o).to_string(),
            LinkAttribute::Controller(m) => s.master = Some(*m),
            LinkAttribute::LinkNetNsId(id) => s.peer_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => s.kind = kind_name(k),
                        LinkInfo::Data(InfoData::Vxlan(v)) => s.vxlan = Some(vxlan(v)),
                        LinkInfo::Data(InfoData::IpTunnel(t)) => s.ipip = Some(ipip(t)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if s.kind == "vxlan" && s.vxlan.is_none() {
        s.vxlan = Some(Vxlan::default());
    }
    if s.kind == "ipip" && s.ipip.is_none() {
        s.ipip = Some(Ipip::default());
    }
    if s.kind != "ipip" {
        // An IpTunnel info block belongs to sit/gre-like devices too: keep only IPIP's.
        s.ipip = None;
    }
    s
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Veth => "veth".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::IpIp => "ipip".into(),
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Bond => "bond".into(),
        InfoKind::Wireguard => "wireguard".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn oper_name(s: &State) -> &'static str {
    match s {
        State::Up => "up",
        State::Down => "down",
        State::LowerLayerDown => "lower-layer-down",
        State::Unknown => "unknown",
        State::NotPresent => "not-present",
        State::Testing => "testing",
        State::Dormant => "dormant",
        _ => "other",
    }
}

fn vxlan(info: &[InfoVxlan]) -> Vxlan {
    let mut v = Vxlan::default();
    for i in info {
        match i {
            InfoVxlan::Id(id) => v.vni = Some(*id),
            InfoVxlan::Port(p) => v.port = Some(*p),
            InfoVxlan::Local(a) => v.local = Some(*a),
            InfoVxlan::Link(l) => v.link = Some(*l).filter(|l| *l != 0),
            InfoVxlan::Learning(b) => v.learning = *b,
            _ => {}
        }
    }
    v
}

fn ipip(info: &[InfoIpTunnel]) -> Ipip {
    let mut t = Ipip::default();
    let v4 = |a: &IpAddr| match a {
        IpAddr::V4(a) if !a.is_unspecified() => Some(*a),
        _ => None,
    };
    for i in info {
        match i {
            InfoIpTunnel::Local(a) => t.local = v4(a),
            InfoIpTunnel::Remote(a) => t.remote = v4(a),
            InfoIpTunnel::Link(l) => t.link = Some(*l).filter(|l| *l != 0),
            _ => {}
        }
    }
    t
}

pub(crate) fn dump_addrs() -> Result<Vec<Addr>, DumpError> {
    let mut req = AddressMessage::default();
    req.header.family = AddressFamily::Inet;
    let msgs = dump("address", RouteNetlinkMessage::GetAddress(req))?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let local = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
            _ => None,
        });
        let addr = local.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
                _ => None,
            })
        });
        if let Some(addr) = addr {
            out.push(Addr {
                ifindex: a.header.index,
                dev: String::new(),
                net: Net::new(addr, a.header.prefix_len),
                addr,
            });
        }
    }
    Ok(out)
}

fn dump_routes() -> Result<Vec<RouteEntry>, DumpError> {
    let mut req = RouteMessage::default();
    req.header.address_family = AddressFamily::Inet;
    let msgs = dump("route", RouteNetlinkMessage::GetRoute(req))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_entry(&r),
            _ => None,
        })
        .collect())
}

fn route_entry(r: &RouteMessage) -> Option<RouteEntry> {
    if r.header.address_family != AddressFamily::Inet {
        return None;
    }
    let v4 = |a: &RouteAddress| match a {
        RouteAddress::Inet(a) => Some(*a),
        _ => None,
    };
    let mut e = RouteEntry {
        table: u32::from(r.header.table),
        kind: route_type(r.header.kind),
        dst: Net::new(Ipv4Addr::UNSPECIFIED, r.header.destination_prefix_length),
        gateway: None,
        oif: None,
        dev: String::new(),
        onlink: r.header.flags.contains(RouteFlags::Onlink),
        metric: 0,
        proto: proto_name(r.header.protocol),
        prefsrc: None,
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                e.dst = Net::new(v4(d)?, r.header.destination_prefix_length)
            }
            RouteAttribute::Gateway(g) => e.gateway = v4(g),
            RouteAttribute::Oif(i) => e.oif = Some(*i),
            RouteAttribute::Priority(p) => e.metric = *p,
            RouteAttribute::Table(t) => e.table = *t,
            RouteAttribute::PrefSource(s) => e.prefsrc = v4(s),
            RouteAttribute::MultiPath(hops) => {
                // The first next hop stands for the route (ECMP is rare on Calico nodes).
                if let Some(h) = hops.first() {
                    e.oif = Some(h.interface_index);
                    e.gateway = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => v4(g),
                        _ => None,
                    });
                }
            }
            _ => {}
        }
    }
    Some(e)
}

fn route_type(k: netlink_packet_route::route::RouteType) -> RouteType {
    use netlink_packet_route::route::RouteType as K;
    match k {
        K::Unicast => RouteType::Unicast,
        K::Local => RouteType::Local,
        K::Broadcast => RouteType::Broadcast,
        K::Anycast => RouteType::Anycast,
        K::Multicast => RouteType::Multicast,
        K::BlackHole => RouteType::Blackhole,
        K::Unreachable => RouteType::Unreachable,
        K::Prohibit => RouteType::Prohibit,
        K::Throw => RouteType::Throw,
        _ => RouteType::Other,
    }
}

fn proto_name(p: RouteProtocol) -> String {
    match p {
        RouteProtocol::Kernel => "kernel".into(),
        RouteProtocol::Boot => "boot".into(),
        RouteProtocol::Static => "static".into(),
        RouteProtocol::Bird => "bird".into(),
        RouteProtocol::Dhcp => "dhcp".into(),
        RouteProtocol::Bgp => "bgp".into(),
        RouteProtocol::Unspec => "unspec".into(),
        other => u8::from(other).to_string(),
    }
}

fn dump_rules() -> Result<Vec<RuleEntry>, DumpError> {
    let mut req = RuleMessage::default();
    req.header.family = AddressFamily::Inet;
    let msgs = dump("rule", RouteNetlinkMessage::GetRule(req))?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewRule(r) = m else {
            continue;
        };
        let mut e = RuleEntry {
            priority: 0,
            action: match r.header.action {
                RuleAction::ToTable => "to-table",
                RuleAction::Goto => "goto",
                RuleAction::Nop => "nop",
                RuleAction::Blackhole => "blackhole",
                RuleAction::Unreachable => "unreachable",
                RuleAction::Prohibit => "prohibit",
                _ => "other",
            }
            .to_string(),
            table: u32::from(r.header.table),
            src: None,
            dst: None,
            iif: None,
            oif: None,
            fwmark: None,
        };
        for a in &r.attributes {
            match a {
                RuleAttribute::Priority(p) => e.priority = *p,
                RuleAttribute::Table(t) => e.table = *t,
                RuleAttribute::Destination(IpAddr::V4(d)) => {
                    e.dst = Some(Net::new(*d, r.header.dst_len))
                }
                RuleAttribute::Source(IpAddr::V4(s)) => {
                    e.src = Some(Net::new(*s, r.header.src_len))
                }
                RuleAttribute::Iifname(n) => e.iif = Some(n.clone()),
                RuleAttribute::Oifname(n) => e.oif = Some(n.clone()),
                RuleAttribute::FwMark(m) => e.fwmark = Some(*m),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

fn neigh_state(s: NeighbourState) -> &'static str {
    match s {
        NeighbourState::Permanent => "permanent",
        NeighbourState::Reachable => "reachable",
        NeighbourState::Stale => "stale",
        NeighbourState::Delay => "delay",
        NeighbourState::Probe => "probe",
        NeighbourState::Failed => "failed",
        NeighbourState::Incomplete => "incomplete",
        NeighbourState::Noarp => "noarp",
        NeighbourState::None => "none",
        _ => "other",
    }
}

fn dump_neighbours() -> Result<Vec<Neighbour>, DumpError> {
    let mut req = NeighbourMessage::default();
    req.header.family = AddressFamily::Inet;
    let msgs = dump("neighbour", RouteNetlinkMessage::GetNeighbour(req))?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        let addr = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(*a),
            _ => None,
        });
        let Some(addr) = addr else { continue };
        out.push(Neighbour {
            ifindex: n.header.ifindex,
            dev: String::new(),
            addr,
            lladdr: n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(m) => Mac::from_slice(m),
                _ => None,
            }),
            state: neigh_state(n.header.state).to_string(),
        });
    }
    Ok(out)
}

fn dump_fdb() -> Result<Vec<FdbEntry>, DumpError> {
    let mut req = NeighbourMessage::default();
    req.header.family = AddressFamily::Bridge;
    let msgs = dump("fdb", RouteNetlinkMessage::GetNeighbour(req))?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        let mac = n.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(m) => Mac::from_slice(m),
            _ => None,
        });
        let Some(mac) = mac else { continue };
        let mut e = FdbEntry {
            ifindex: n.header.ifindex,
            dev: String::new(),
            mac,
            dst: None,
            vni: None,
            port: None,
            state: neigh_state(n.header.state).to_string(),
        };
        for a in &n.attributes {
            match a {
                // In an AF_BRIDGE message the crate cannot know the address family of
                // the remote: a 4-byte destination is the VTEP's IPv4 underlay address.
                NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => e.dst = Some(*d),
                NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                    e.dst = <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                }
                NeighbourAttribute::Vni(v) => e.vni = Some(*v),
                NeighbourAttribute::Port(p) => e.port = Some(*p),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}
