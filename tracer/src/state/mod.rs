//! The live state of a node, as evidence: what the kernel of one network namespace will do with
//! a packet, read from the kernel itself (rtnetlink, `/proc/sys`, the firewall's own listing)
//! and kept as plain data, so that verdicts and the cross-node audit (the `audit` module) are pure
//! functions of it, and so that it can be written into a recording and audited later, off the
//! machine.
//!
//! - `read`: the rtnetlink dumps (links with their tunnel parameters, addresses, routes of every
//!   type in every table, rules, neighbours, the FDB of every VXLAN device);
//! - `sysctl`: the sysctls a packet depends on (forwarding, reverse-path filter, proxy ARP...);
//! - `firewall`: the nftables ruleset (which includes what iptables-nft writes) and the rules of
//!   legacy iptables, with their counters.
//!
//! Reading runs inside the namespace (`Netns::run`); a part that cannot be read (no `nft`
//! binary, a sysctl missing on this kernel) is recorded in `unreadable` and the rest is kept.
//! The queries here (`lookup`, `vteps`, `blocks`, ...) know Calico's conventions only as
//! defaults (a VXLAN device is any `vxlan` link, not only `vxlan.calico`): nothing assumes the
//! lab's names or addresses.

pub mod firewall;
pub mod read;
pub mod sysctl;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

pub use firewall::Firewall;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Net {
    pub fn new(addr: Ipv4Addr, len: u8) -> Net {
        Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len: len.min(32),
        }
    }

    #[cfg(test)]
    pub fn host(addr: Ipv4Addr) -> Net {
        Net { addr, len: 32 }
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.len) == u32::from(self.addr)
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Net, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("bad address in {s:?}"))?;
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("bad prefix length in {s:?}"))?;
        Ok(Net::new(addr, len))
    }
}

impl Serialize for Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Net, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn from_slice(b: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(b).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let bytes: Vec<u8> = s
            .split(':')
            .map(|p| u8::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("bad MAC {s:?}"))?;
        Mac::from_slice(&bytes).ok_or_else(|| format!("bad MAC {s:?}"))
    }
}

impl Serialize for Mac {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// VXLAN device parameters (`ip -d link show`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxlan {
    pub vni: Option<u32>,
    /// Destination UDP port (the kernel's default is 8472 when none is given; Calico uses 4789).
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    /// The underlay device's index.
    pub link: Option<u32>,
    pub learning: bool,
}

/// IPIP device parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipip {
    pub local: Option<Ipv4Addr>,
    pub remote: Option<Ipv4Addr>,
    pub link: Option<u32>,
}

/// One interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub ifindex: u32,
    pub name: String,
    /// The link kind (`veth`, `vxlan`, `ipip`, `bridge`...), empty for a physical NIC.
    pub kind: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// RFC 2863 operational state (`up`, `down`, `lower-layer-down`, `unknown`...).
    pub oper: String,
    /// The bridge or bond it is enslaved to.
    pub master: Option<u32>,
    /// A veth peer's namespace id (`IFLA_LINK_NETNSID`), when the peer lives elsewhere.
    pub peer_netnsid: Option<i32>,
    pub vxlan: Option<Vxlan>,
    pub ipip: Option<Ipip>,
}

/// One IPv4 address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub ifindex: u32,
    pub dev: String,
    pub net: Net,
    pub addr: Ipv4Addr,
}

/// The type of a route (`RTN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteType {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Other,
}

impl RouteType {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteType::Unicast => "unicast",
            RouteType::Local => "local",
            RouteType::Broadcast => "broadcast",
            RouteType::Anycast => "anycast",
            RouteType::Multicast => "multicast",
            RouteType::Blackhole => "blackhole",
            RouteType::Unreachable => "unreachable",
            RouteType::Prohibit => "prohibit",
            RouteType::Throw => "throw",
            RouteType::Other => "other",
        }
    }

    /// A route that makes the kernel drop (or refuse) the packet.
    pub fn discards(self) -> bool {
        matches!(
            self,
            RouteType::Blackhole | RouteType::Unreachable | RouteType::Prohibit
        )
    }
}

/// The main routing table's id.
pub const TABLE_MAIN: u32 = 254;
/// The local table's id.
pub const TABLE_LOCAL: u32 = 255;

/// One IPv4 route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub table: u32,
    #[serde(rename = "type")]
    pub kind: RouteType,
    pub dst: Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// The output device's name (empty without one).
    pub dev: String,
    pub onlink: bool,
    pub metric: u32,
    /// The routing protocol that installed it (`kernel`, `boot`, `static`, `bird`, or a number).
    pub proto: String,
    pub prefsrc: Option<Ipv4Addr>,
}

impl fmt::Display for RouteEntry {
    /// In `ip route` form: `blackhole 10.244.4.0/26`, `10.244.4.0/26 via 10.244.4.0 dev
    /// vxlan.calico onlink`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteType::Unicast {
            write!(f, "{} ", self.kind.as_str())?;
        }
        if self.dst.len == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if !self.dev.is_empty() {
            write!(f, " dev {}", self.dev)?;
        }
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if self.table != TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        Ok(())
    }
}

/// One policy routing rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleEntry {
    pub priority: u32,
    /// `to-table`, `blackhole`, `unreachable`, `prohibit`, `goto`, `nop`.
    pub action: String,
    pub table: u32,
    pub src: Option<Net>,
    pub dst: Option<Net>,
    pub iif: Option<String>,
    pub oif: Option<String>,
    pub fwmark: Option<u32>,
}

impl RuleEntry {
    /// Whether the rule selects a locally routed packet to `dst` that has no mark and no
    /// particular source or interface (what a lookup for an address means).
    pub fn selects(&self, dst: Ipv4Addr) -> bool {
        self.src.is_none_or(|n| n.len == 0)
            && self.dst.is_none_or(|n| n.contains(dst))
            && self.iif.is_none()
            && self.oif.is_none()
            && self.fwmark.is_none_or(|m| m == 0)
    }
}

/// What decides a packet's fate in [`NodeState::resolve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    Route(&'a RouteEntry),
    /// A rule that discards (`blackhole`, `unreachable`, `prohibit`).
    Rule(&'a RuleEntry),
    Nothing,
}

/// One IPv4 neighbour (ARP) entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    pub ifindex: u32,
    pub dev: String,
    pub addr: Ipv4Addr,
    pub lladdr: Option<Mac>,
    /// `permanent`, `reachable`, `stale`, `failed`, `incomplete`, `noarp`...
    pub state: String,
}

/// One bridge forwarding entry of a VXLAN device (`bridge fdb show dev vxlan.calico`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub dev: String,
    pub mac: Mac,
    /// The remote VTEP's underlay address.
    pub dst: Option<Ipv4Addr>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub state: String,
}

/// Everything read from one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node's display name (netns name or host name).
    pub node: String,
    pub links: Vec<LinkState>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<RouteEntry>,
    pub rules: Vec<RuleEntry>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    /// `net.ipv4.ip_forward`, `net.ipv4.conf.<dev>.rp_filter`, ... (dotted names).
    pub sysctls: BTreeMap<String, String>,
    pub firewall: Firewall,
    /// What could not be read, one line each.
    pub unreadable: Vec<String>,
}

/// The role of a tunnel device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    Vxlan,
    Ipip,
}

impl NodeState {
    pub fn link(&self, ifindex: u32) -> Option<&LinkState> {
        self.links.iter().find(|l| l.ifindex == ifindex)
    }

    /// The IPv4 addresses of a device.
    pub fn addrs_of(&self, ifindex: u32) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.addrs
            .iter()
            .filter(move |a| a.ifindex == ifindex)
            .map(|a| a.addr)
    }

    /// Whether `a` is one of this node's addresses.
    pub fn owns(&self, a: Ipv4Addr) -> bool {
        self.addrs.iter().any(|x| x.addr == a)
    }

    /// The VXLAN devices.
    pub fn vteps(&self) -> impl Iterator<Item = &LinkState> {
        self.links.iter().filter(|l| l.vxlan.is_some())
    }

    /// The IPIP devices (Calico's `tunl0` is the fallback device of the `ipip` module).
    pub fn ipip_devs(&self) -> impl Iterator<Item = &LinkState> {
        self.links.iter().filter(|l| l.ipip.is_some())
    }

    pub fn tunnel_kind(&self, ifindex: u32) -> Option<TunnelKind> {
        let l = self.link(ifindex)?;
        if l.vxlan.is_some() {
            Some(TunnelKind::Vxlan)
        } else if l.ipip.is_some() {
            Some(TunnelKind::Ipip)
        } else {
            None
        }
    }

    /// The underlay device: the one the VXLAN device is bound to, else the one whose address
    /// it sources from, else the default route's.
    pub fn uplink(&self) -> Option<&LinkState> {
        let vtep = self.vteps().next().and_then(|l| l.vxlan.as_ref());
        if let Some(l) = vtep.and_then(|v| v.link).and_then(|i| self.link(i)) {
            return Some(l);
        }
        if let Some(local) = vtep.and_then(|v| v.local) {
            if let Some(a) = self.addrs.iter().find(|a| a.addr == local) {
                return self.link(a.ifindex);
            }
        }
        self.routes
            .iter()
            .filter(|r| r.table == TABLE_MAIN && r.dst.len == 0 && r.kind == RouteType::Unicast)
            .min_by_key(|r| r.metric)
            .and_then(|r| r.oif)
            .and_then(|i| self.link(i))
    }

    /// The node's underlay address: its VXLAN local address, else the uplink's first.
    pub fn underlay_addr(&self) -> Option<Ipv4Addr> {
        self.vteps()
            .find_map(|l| l.vxlan.as_ref().and_then(|v| v.local))
            .or_else(|| self.uplink().and_then(|l| self.addrs_of(l.ifindex).next()))
    }

    /// The address blocks this node claims: its blackhole routes (Calico installs one per
    /// IPAM block it owns, so that addresses of the block without a pod are dropped here).
    pub fn blocks(&self) -> Vec<Net> {
        self.routes
            .iter()
            .filter(|r| r.kind == RouteType::Blackhole && r.dst.len > 0)
            .map(|r| r.dst)
            .collect()
    }

    /// Host routes to local pods: `/32` through a veth (`cali*` by Calico's naming).
    pub fn pod_routes(&self) -> impl Iterator<Item = &RouteEntry> {
        self.routes.iter().filter(|r| {
            r.table == TABLE_MAIN
                && r.kind == RouteType::Unicast
                && r.dst.len == 32
                && r.gateway.is_none()
                && r.oif
                    .and_then(|i| self.link(i))
                    .is_some_and(|l| l.kind == "veth")
        })
    }

    /// What the kernel would decide for a packet to `dst` (without mark or input interface
    /// constraints): rules in priority order, the longest prefix in the table a rule points
    /// to, `throw` continuing with the next rule; a rule that discards decides at once.
    pub fn resolve(&self, dst: Ipv4Addr) -> Resolution<'_> {
        let mut rules: Vec<&RuleEntry> = self.rules.iter().filter(|r| r.selects(dst)).collect();
        rules.sort_by_key(|r| r.priority);
        // Without rules (a reading that failed) the kernel's defaults: local, main, default.
        let defaults = [TABLE_LOCAL, TABLE_MAIN, 253];
        let steps: Vec<(Option<&RuleEntry>, u32)> = if rules.is_empty() {
            defaults.iter().map(|t| (None, *t)).collect()
        } else {
            rules.iter().map(|r| (Some(*r), r.table)).collect()
        };
        for (rule, table) in steps {
            match rule.map(|r| r.action.as_str()) {
                Some("blackhole" | "unreachable" | "prohibit") => {
                    return Resolution::Rule(rule.expect("a rule"))
                }
                Some("to-table") | None => {}
                Some(_) => continue,
            }
            let best = self
                .routes
                .iter()
                .filter(|r| r.table == table && r.dst.contains(dst))
                .filter(|r| !matches!(r.kind, RouteType::Broadcast | RouteType::Multicast))
                .max_by(|a, b| a.dst.len.cmp(&b.dst.len).then(b.metric.cmp(&a.metric)));
            match best {
                Some(r) if r.kind == RouteType::Throw => continue,
                Some(r) => return Resolution::Route(r),
                None => continue,
            }
        }
        Resolution::Nothing
    }

    /// The route chosen for `dst`, if a route decides (see [`NodeState::resolve`]).
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&RouteEntry> {
        match self.resolve(dst) {
            Resolution::Route(r) => Some(r),
            _ => None,
        }
    }

    /// The neighbour entry for `addr` on device `ifindex`.
    pub fn neighbour(&self, ifindex: u32, addr: Ipv4Addr) -> Option<&Neighbour> {
        self.neighbours
            .iter()
            .find(|n| n.ifindex == ifindex && n.addr == addr)
    }

    /// The FDB entries of device `ifindex` for `mac`.
    pub fn fdb_for(&self, ifindex: u32, mac: Mac) -> impl Iterator<Item = &FdbEntry> {
        self.fdb
            .iter()
            .filter(move |f| f.ifindex == ifindex && f.mac == mac)
    }

    /// A sysctl's value (dotted name).
    pub fn sysctl(&self, name: &str) -> Option<&str> {
        self.sysctls.get(name).map(String::as_str)
    }

    /// The reverse-path filter mode in force on a device: the larger of `all` and the
    /// device's own (the kernel's rule). `None` when neither could be read.
    pub fn rp_filter(&self, dev: &str) -> Option<u8> {
        let get = |k: &str| {
            self.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"))
                .and_then(|v| v.parse::<u8>().ok())
        };
        match (get("all"), get(dev)) {
            (Some(a), Some(d)) => Some(a.max(d)),
            (a, d) => a.or(d),
        }
    }
}
