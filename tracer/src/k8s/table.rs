//! The address -> object tables the watchers keep: pure data, fed with the API's objects and
//! watch events, read by [`super::PodNames::lookup`].
//!
//! Which object an address belongs to when several claim it: an address is only reused once the
//! pod that had it is gone from the network, but the API may still show the old pod (its
//! deletion not yet seen, or terminating) while the new one already has the address. The newest
//! object (creation time, then the order in which their events arrived) wins, and when it goes
//! the address falls back to any other object still claiming it. Pods that claim nothing:
//! `hostNetwork` pods (their address is the node's), pods that ended (phase `Succeeded` or
//! `Failed`: the address is released), pods not yet given an address; Services without a
//! cluster IP (headless, `ExternalName`). Only IPv4 addresses are kept (the tracer is IPv4).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{ObjectKind, ObjectName};

/// What one object claims: its addresses and its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `metadata.uid` (else `namespace/name`): a pod re-created under the same name is
    /// another object.
    pub uid: String,
    pub ips: Vec<Ipv4Addr>,
    /// `metadata.creationTimestamp` in ns since the epoch (0 when absent).
    pub created: i128,
    pub name: ObjectName,
}

/// One object's claim on one address.
#[derive(Clone, Debug)]
struct Claim {
    uid: String,
    created: i128,
    /// When the claim was made (applied events count up): the tie-breaker.
    seq: u64,
    name: Arc<ObjectName>,
}

/// The objects of one kind (pods, or Services) by address.
#[derive(Clone, Debug, Default)]
pub struct KindTable {
    /// Each object's addresses, by uid.
    objects: HashMap<String, Vec<Ipv4Addr>>,
    by_ip: HashMap<Ipv4Addr, Vec<Claim>>,
    seq: u64,
}

impl KindTable {
    /// An object added or modified: its claims replace the ones it had.
    pub fn apply(&mut self, e: Entry) {
        self.remove(&e.uid);
        if e.ips.is_empty() {
            return;
        }
        self.seq += 1;
        let name = Arc::new(e.name);
        for ip in &e.ips {
            self.by_ip.entry(*ip).or_default().push(Claim {
                uid: e.uid.clone(),
                created: e.created,
                seq: self.seq,
                name: name.clone(),
            });
        }
        self.objects.insert(e.uid, e.ips);
    }

    /// An object deleted: its addresses go back to any other claimant, else to nobody.
    pub fn remove(&mut self, uid: &str) {
        let Some(ips) = self.objects.remove(uid) else {
            return;
        };
        for ip in ips {
            if let Some(claims) = self.by_ip.get_mut(&ip) {
                claims.retain(|c| c.uid != uid);
                if claims.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
    }

    /// The object address `a` belongs to now.
    pub fn lookup(&self, a: Ipv4Addr) -> Option<&Arc<ObjectName>> {
        self.by_ip
            .get(&a)?
            .iter()
            .max_by_key(|c| (c.created, c.seq))
            .map(|c| &c.name)
    }

    /// How many objects claim an address.
    pub fn len(&self) -> usize {
        self.objects.len()
    }
}

/// Pods and Services by address.
#[derive(Clone, Debug, Default)]
pub struct NameTable {
    pub pods: KindTable,
    pub services: KindTable,
}

impl NameTable {
    /// A pod's name first (pod and Service ranges never overlap in a sane cluster).
    pub fn lookup(&self, a: Ipv4Addr) -> Option<&Arc<ObjectName>> {
        self.pods.lookup(a).or_else(|| self.services.lookup(a))
    }
}

/// What a pod claims (no address when it claims none: see the module notes).
pub fn pod_entry(p: &Pod) -> Entry {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ended = matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    let ips = if host_network || ended {
        Vec::new()
    } else {
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        let single = status.and_then(|s| s.pod_ip.as_deref());
        ipv4s(listed.into_iter().chain(single))
    };
    entry(
        &p.metadata,
        ObjectKind::Pod,
        ips,
        spec.and_then(|s| s.node_name.clone()),
    )
}

/// What a Service claims: its cluster IPs.
pub fn service_entry(s: &Service) -> Entry {
    let spec = s.spec.as_ref();
    let listed = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .map(|ips| ips.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    let single = spec.and_then(|s| s.cluster_ip.as_deref());
    let ips = ipv4s(listed.into_iter().chain(single));
    entry(&s.metadata, ObjectKind::Service, ips, None)
}

/// The uid an object is known by (`namespace/name` for one without a uid).
pub fn uid(meta: &ObjectMeta) -> String {
    match &meta.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or("")
        ),
    }
}

fn entry(meta: &ObjectMeta, kind: ObjectKind, ips: Vec<Ipv4Addr>, node: Option<String>) -> Entry {
    Entry {
        uid: uid(meta),
        ips,
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_nanosecond()),
        name: ObjectName {
            kind,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            node,
        },
    }
}

/// The distinct IPv4 addresses among `addrs` (IPv6, `None` and garbage left out).
fn ipv4s<'a>(addrs: impl Iterator<Item = &'a str>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for a in addrs {
        if let Ok(ip) = a.parse::<Ipv4Addr>() {
            if !ip.is_unspecified() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}
