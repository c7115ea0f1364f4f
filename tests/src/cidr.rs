//! A small IPv4 prefix type (`a.b.c.d/n`).
//!
//! Design note: the lab only ever needs IPv4 networks (pod CIDR, /22 node regions, /26 blocks,
//! the underlay /24), so this is deliberately tiny instead of pulling in an ipnet-like crate.
//! It serializes as the string `"a.b.c.d/n"` (the form `ip route` prints and the status JSON
//! uses) and parses back from it. The address is kept as given; `network()` masks host bits.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 address with a prefix length, e.g. `10.244.0.0/26`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The address (normally the network address).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Cidr {
    /// A prefix; fails if `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self> {
        if len > 32 {
            bail!("prefix length {len} is larger than 32");
        }
        Ok(Self { addr, len })
    }

    /// The netmask as an integer (`/26` -> `0xffff_ffc0`).
    pub fn mask(&self) -> u32 {
        match self.len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n)),
        }
    }

    /// The prefix with host bits cleared.
    pub fn network(&self) -> Self {
        Self {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            len: self.len,
        }
    }

    /// Whether the address has no host bits set.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// Whether `ip` falls inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Number of addresses covered (`/26` -> 64).
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    /// The `n`-th address of the prefix (0 = network address), `None` past the end.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        let base = u64::from(u32::from(self.network().addr));
        u32::try_from(base + n).ok().map(Ipv4Addr::from)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s
            .split_once('/')
            .with_context(|| format!("`{s}` is not of the form a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .with_context(|| format!("bad address in `{s}`"))?;
        let len: u8 = len
            .parse()
            .with_context(|| format!("bad prefix length in `{s}`"))?;
        Self::new(addr, len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: anyhow::Error| serde::de::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_roundtrip() {
        let c: Cidr = "10.244.4.64/26".parse().unwrap();
        assert_eq!(c.addr, Ipv4Addr::new(10, 244, 4, 64));
        assert_eq!(c.len, 26);
        assert_eq!(c.to_string(), "10.244.4.64/26");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn math() {
        let c: Cidr = "10.244.0.0/26".parse().unwrap();
        assert_eq!(c.size(), 64);
        assert_eq!(c.nth(0), Some(Ipv4Addr::new(10, 244, 0, 0)));
        assert_eq!(c.nth(63), Some(Ipv4Addr::new(10, 244, 0, 63)));
        assert_eq!(c.nth(64), None);
        assert!(c.contains(Ipv4Addr::new(10, 244, 0, 63)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 0, 64)));
        let host: Cidr = "10.10.0.1/24".parse().unwrap();
        assert!(!host.is_network());
        assert_eq!(host.network().to_string(), "10.10.0.0/24");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().mask(), 0);
        assert_eq!("1.2.3.4/32".parse::<Cidr>().unwrap().size(), 1);
    }

    #[test]
    fn serde_as_string() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, "\"10.244.0.0/16\"");
        let back: Cidr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<Cidr>("\"nope\"").is_err());
    }
}
