//! Kubernetes Services in the lab (`lab up --services`): what kube-proxy (iptables mode) and
//! Calico's `natOutgoing` program on every node, so that the kernel's real NAT and conntrack
//! run as on a Calico node with kube-proxy.
//!
//! Design note: like the rest of the lab, a pure half and a system half. [`plan`] derives the
//! Services from the spec alone (addresses from the Service CIDR, endpoints from the plan's
//! pods), [`kube_proxy`] and [`calico_nat`] turn them into the `iptables-restore` scripts and
//! ipsets kube-proxy and Felix write (unit-tested without root), [`dns`] is the DNS wire format
//! of the responder and of the probes. The system half: `build` creates the "outside" machine,
//! loads the ipsets and rules into every node and starts the servers (`serve`: one `lab serve`
//! process per serving namespace: the DNS responder pod, the web pods, the outside machine),
//! [`probe`] sends the probes that go through NAT.
//!
//! What a services lab has (all of it in `lab status --json`, key `services`):
//! - Service CIDR (default 10.96.0.0/12); `kube-system/kube-dns` at its 10th address, ports
//!   `dns` UDP 53 and `dns-tcp` TCP 53, endpoint a DNS responder pod on node2 that answers
//!   A queries for `web.default.svc.cluster.local`;
//! - `default/web` (ClusterIP, port `http` TCP 80 -> 8080), one endpoint pod on node1 and one
//!   on node2, chosen by kube-proxy's `statistic --probability` rules;
//! - `default/web-np` (NodePort 30080 -> the web pod on node2, `externalTrafficPolicy:
//!   Cluster`: DNAT plus masquerade to the node's address);
//! - `natOutgoing`: pod traffic to an address outside every IP pool leaves masqueraded;
//! - the outside machine `{prefix}-outside`: a namespace on the underlay bridge with an
//!   address of the node subnet that is neither a node nor a pod, no route to the pod CIDR
//!   (its default route is the underlay's gateway, which nobody owns), a server answering TCP
//!   8080 with the address it sees the client as.
//!
//! The service pods are extra pods appended to their nodes' pods (`n1p{K}` the web pod of
//! node1, `n2p{K}` node2's, `n2p{K+1}` the DNS pod, K = pods per node), so the lab builds
//! them like any pod and tears them down with the rest.

mod build;
pub mod calico_nat;
pub mod dns;
pub mod kube_proxy;
pub mod probe;
mod serve;

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;

pub(crate) use build::run_with_input;
pub use build::start;
pub use serve::{serve, set_server_bin, stop_prefix, ServeArgs};

/// The default Service CIDR (kubeadm's).
pub const DEFAULT_SERVICE_CIDR: Cidr = Cidr {
    addr: Ipv4Addr::new(10, 96, 0, 0),
    len: 12,
};
/// Address index of the DNS Service in the Service CIDR (`10.96.0.10`).
pub const DNS_SERVICE_INDEX: u64 = 10;
/// Address index of `default/web`.
pub const WEB_SERVICE_INDEX: u64 = 20;
/// Address index of `default/web-np`.
pub const WEB_NP_SERVICE_INDEX: u64 = 30;
/// The port the web pods (and the outside machine) serve on.
pub const WEB_TARGET_PORT: u16 = 8080;
/// The web Services' port.
pub const WEB_PORT: u16 = 80;
/// The node port of `default/web-np`.
pub const NODE_PORT: u16 = 30080;
/// DNS.
pub const DNS_PORT: u16 = 53;
/// The name the DNS responder answers (with `default/web`'s cluster IP).
pub const DNS_NAME: &str = "web.default.svc.cluster.local";
/// Host index of the outside machine in the underlay subnet (nodes are 1..=64, the gateway
/// is 254).
pub const OUTSIDE_HOST: u64 = 200;
/// The outside machine's port on the underlay bridge.
pub const OUTSIDE_PORT: &str = "out0";
/// kube-proxy's masquerade mark (`--masquerade-bit 14`).
pub const MASQ_MARK: u32 = 0x4000;
/// The name of the outside machine as a probe's sender.
pub const OUTSIDE: &str = "outside";

/// What `--services` asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicesSpec {
    /// The Service CIDR (kube-apiserver's `--service-cluster-ip-range`).
    pub service_cidr: Cidr,
}

impl Default for ServicesSpec {
    fn default() -> Self {
        Self {
            service_cidr: DEFAULT_SERVICE_CIDR,
        }
    }
}

/// A Service port's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// The Services of a lab, as `lab status --json` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    /// The Service CIDR.
    pub service_cidr: Cidr,
    /// The IP pools Calico masquerades from (`natOutgoing: true`): the pod CIDR.
    pub nat_outgoing_pools: Vec<Cidr>,
    /// The machine outside the cluster (NodePort client, natOutgoing target).
    pub outside: Outside,
    /// What the DNS responder answers.
    pub dns: DnsRecord,
    /// Every Service, DNS first.
    pub list: Vec<Service>,
}

/// A namespace on the underlay that stands for a machine outside the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outside {
    /// `{prefix}-outside`.
    pub netns: String,
    /// Its interface (`eth0`).
    pub ifname: String,
    /// Its veth peer on the underlay bridge (`out0`).
    pub underlay_port: String,
    /// Its address (in the node subnet, neither a node's nor the gateway's).
    pub ip: Ipv4Addr,
    /// Its default route (the underlay's gateway: it has no route to the pod CIDR).
    pub gateway: Ipv4Addr,
    /// The TCP port its server answers on with the client's address as seen there.
    pub port: u16,
}

/// The DNS responder's one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The Service in front of it (`kube-system/kube-dns`).
    pub service: String,
    /// The pod that answers.
    pub pod: String,
    /// The name it answers A queries for.
    pub name: String,
    /// The address it answers with (`default/web`'s cluster IP).
    pub answer: Ipv4Addr,
}

/// One Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Kubernetes namespace.
    pub namespace: String,
    /// Service name.
    pub name: String,
    /// `ClusterIP` or `NodePort`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Its ready endpoints.
    pub endpoints: Vec<Endpoint>,
    /// `Cluster` for NodePort Services (DNAT to any endpoint, masquerade to the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Port name (`dns`, `http`).
    pub name: String,
    /// Protocol.
    pub protocol: Proto,
    /// The Service port.
    pub port: u16,
    /// The endpoints' port.
    pub target_port: u16,
    /// The node port (NodePort Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

/// One endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Pod name (`n2p1`).
    pub pod: String,
    /// Its node (`node2`).
    pub node: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

impl Service {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// kube-proxy's service port name, `namespace/name:port`.
    pub fn port_name(&self, port: &ServicePort) -> String {
        format!("{}/{}:{}", self.namespace, self.name, port.name)
    }

    /// The port called `name`.
    pub fn port(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }
}

impl Services {
    /// The Service `namespace/name`.
    pub fn get(&self, id: &str) -> Option<&Service> {
        self.list.iter().find(|s| s.id() == id)
    }

    /// The Service `namespace/name`, or an error naming what exists.
    pub fn service(&self, id: &str) -> Result<&Service> {
        self.get(id).with_context(|| {
            let ids: Vec<String> = self.list.iter().map(Service::id).collect();
            format!("no Service {id} in the lab (it has {})", ids.join(", "))
        })
    }

    /// The Service and port a probe to `ip:port` meets: a cluster IP and Service port, or a
    /// node address (`node_ips`) and node port.
    pub fn at(
        &self,
        ip: Ipv4Addr,
        port: u16,
        node_ips: &[Ipv4Addr],
    ) -> Option<(&Service, &ServicePort)> {
        self.list.iter().find_map(|s| {
            s.ports
                .iter()
                .find(|p| {
                    (s.cluster_ip == ip && p.port == port)
                        || (node_ips.contains(&ip) && p.node_port == Some(port))
                })
                .map(|p| (s, p))
        })
    }
}

/// The service pods a services lab adds to node `i` (1-based): (role, count). Node1 runs a
/// web pod, node2 a web pod and the DNS responder; other nodes none.
pub fn extra_pods(node: usize) -> &'static [&'static str] {
    match node {
        1 => &["web"],
        2 => &["web", "dns"],
        _ => &[],
    }
}

/// The most service pods any node gets (for the block count).
pub const MAX_EXTRA_PODS: usize = 2;

/// The Services of a lab whose pods are planned: `pod_of(node, role)` names the service pod of
/// that role on that node (`n2p1`) and its address.
pub fn plan(
    spec: &ServicesSpec,
    prefix: &str,
    pod_cidr: Cidr,
    underlay: (Cidr, Ipv4Addr),
    pod_of: impl Fn(usize, &str) -> Option<(String, Ipv4Addr)>,
) -> Result<Services> {
    let cidr = spec.service_cidr;
    ensure!(
        cidr.is_network(),
        "the Service CIDR {cidr} has host bits set (did you mean {}?)",
        cidr.network()
    );
    ensure!(
        cidr.size() > WEB_NP_SERVICE_INDEX,
        "the Service CIDR {cidr} is too small (the lab uses its first {} addresses)",
        WEB_NP_SERVICE_INDEX + 1
    );
    let (subnet, gateway) = underlay;
    for (what, other) in [("pod CIDR", pod_cidr), ("node subnet", subnet)] {
        ensure!(
            !cidr.contains(other.addr) && !other.contains(cidr.addr),
            "the Service CIDR {cidr} overlaps the {what} {other}"
        );
    }
    let ip = |i| cidr.nth(i).context("address past the Service CIDR");
    let ep = |node: usize, role: &str| -> Result<Endpoint> {
        let (pod, ip) =
            pod_of(node, role).with_context(|| format!("no {role} pod planned on node{node}"))?;
        Ok(Endpoint {
            pod,
            node: format!("node{node}"),
            ip,
        })
    };
    let dns_ep = ep(2, "dns")?;
    let web_ip = ip(WEB_SERVICE_INDEX)?;
    let port = |name: &str, protocol, port, target_port, node_port| ServicePort {
        name: name.to_owned(),
        protocol,
        port,
        target_port,
        node_port,
    };
    let list = vec![
        Service {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            kind: "ClusterIP".into(),
            cluster_ip: ip(DNS_SERVICE_INDEX)?,
            ports: vec![
                port("dns", Proto::Udp, DNS_PORT, DNS_PORT, None),
                port("dns-tcp", Proto::Tcp, DNS_PORT, DNS_PORT, None),
            ],
            endpoints: vec![dns_ep.clone()],
            external_traffic_policy: None,
        },
        Service {
            namespace: "default".into(),
            name: "web".into(),
            kind: "ClusterIP".into(),
            cluster_ip: web_ip,
            ports: vec![port("http", Proto::Tcp, WEB_PORT, WEB_TARGET_PORT, None)],
            endpoints: vec![ep(1, "web")?, ep(2, "web")?],
            external_traffic_policy: None,
        },
        Service {
            namespace: "default".into(),
            name: "web-np".into(),
            kind: "NodePort".into(),
            cluster_ip: ip(WEB_NP_SERVICE_INDEX)?,
            ports: vec![port(
                "http",
                Proto::Tcp,
                WEB_PORT,
                WEB_TARGET_PORT,
                Some(NODE_PORT),
            )],
            endpoints: vec![ep(2, "web")?],
            external_traffic_policy: Some("Cluster".into()),
        },
    ];
    Ok(Services {
        service_cidr: cidr,
        nat_outgoing_pools: vec![pod_cidr],
        outside: Outside {
            netns: outside_netns(prefix),
            ifname: crate::spec::ETH0.to_owned(),
            underlay_port: OUTSIDE_PORT.to_owned(),
            ip: subnet
                .nth(OUTSIDE_HOST)
                .context("the node subnet has no room for the outside machine")?,
            gateway,
            port: WEB_TARGET_PORT,
        },
        dns: DnsRecord {
            service: "kube-system/kube-dns".into(),
            pod: dns_ep.pod,
            name: DNS_NAME.into(),
            answer: web_ip,
        },
        list,
    })
}

/// `lab status`'s lines about the Services.
pub fn describe(s: &Services) -> String {
    let mut out = format!(
        "  services (CIDR {}, natOutgoing from {}):\n",
        s.service_cidr,
        s.nat_outgoing_pools
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for svc in &s.list {
        let ports: Vec<String> = svc
            .ports
            .iter()
            .map(|p| {
                let np = p
                    .node_port
                    .map(|n| format!(" nodePort {n}"))
                    .unwrap_or_default();
                format!(
                    "{} {}/{} -> {}{np}",
                    p.name, p.port, p.protocol, p.target_port
                )
            })
            .collect();
        let eps: Vec<String> = svc
            .endpoints
            .iter()
            .map(|e| format!("{} {} on {}", e.pod, e.ip, e.node))
            .collect();
        out.push_str(&format!(
            "  svc  {:<22} {:<9} {:<15} {}; endpoints: {}\n",
            svc.id(),
            svc.kind,
            svc.cluster_ip,
            ports.join(", "),
            eps.join(", ")
        ));
    }
    out.push_str(&format!(
        "  dns  {} answers {} with {}\n  outside netns {:<16} {} (TCP {} tells the client's address)\n",
        s.dns.pod, s.dns.name, s.dns.answer, s.outside.netns, s.outside.ip, s.outside.port
    ));
    out
}

/// Name of the outside machine's namespace.
pub fn outside_netns(prefix: &str) -> String {
    format!("{prefix}-outside")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encap, LabSpec};

    fn services_lab(pods: usize) -> crate::Topology {
        LabSpec {
            pods_per_node: pods,
            services: Some(ServicesSpec::default()),
            ..LabSpec::default()
        }
        .plan()
        .unwrap()
    }

    #[test]
    fn default_services() {
        let t = services_lab(1);
        let s = t.services.as_ref().unwrap();
        assert_eq!(s.service_cidr.to_string(), "10.96.0.0/12");
        let dns = s.service("kube-system/kube-dns").unwrap();
        assert_eq!(dns.cluster_ip, Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(dns.endpoints.len(), 1);
        assert_eq!(dns.endpoints[0].node, "node2");
        assert_eq!(dns.endpoints[0].pod, "n2p2");
        let web = s.service("default/web").unwrap();
        let nodes: Vec<&str> = web.endpoints.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(nodes, ["node1", "node2"]);
        let np = s.service("default/web-np").unwrap();
        assert_eq!(np.ports[0].node_port, Some(NODE_PORT));
        assert_eq!(np.endpoints[0].node, "node2");
        assert_eq!(s.dns.answer, web.cluster_ip);
        assert_eq!(s.outside.ip, Ipv4Addr::new(10, 10, 0, 200));
        assert_eq!(s.outside.netns, "tlab-outside");
        // The service pods are pods of the plan, with their addresses.
        for svc in &s.list {
            for e in &svc.endpoints {
                let p = t.pod(&e.pod).unwrap();
                assert_eq!((p.ip, p.node.as_str()), (e.ip, e.node.as_str()));
            }
        }
        assert_eq!(t.pods_on("node1").len(), 2);
        assert_eq!(t.pods_on("node2").len(), 3);
        assert!(t.netns_names().contains(&"tlab-outside"));
        let n1 = [t.nodes[0].ip, t.nodes[1].ip];
        let (svc, port) = s.at(n1[0], NODE_PORT, &n1).unwrap();
        assert_eq!((svc.name.as_str(), port.port), ("web-np", WEB_PORT));
        assert_eq!(
            s.at(dns.cluster_ip, 53, &n1).unwrap().0.name,
            "kube-dns".to_string()
        );
        assert!(s.at(dns.cluster_ip, 80, &n1).is_none());
        // The JSON shape the tests and the tracer read.
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["services"]["list"][0]["cluster_ip"], "10.96.0.10");
        assert_eq!(v["services"]["list"][0]["ports"][0]["protocol"], "udp");
        assert_eq!(v["services"]["list"][2]["type"], "NodePort");
        assert_eq!(v["services"]["list"][2]["ports"][0]["node_port"], 30080);
        assert_eq!(crate::Topology::from_json(&t.to_json()).unwrap(), t);
    }

    #[test]
    fn plain_labs_have_no_services() {
        let t = LabSpec::default().plan().unwrap();
        assert!(t.services.is_none());
        assert!(!t.to_json().contains("services"));
        assert_eq!(t.pods.len(), 2);
    }

    #[test]
    fn service_pods_follow_the_regular_pods() {
        let t = services_lab(3);
        let s = t.services.unwrap();
        assert_eq!(s.dns.pod, "n2p4");
        let web = s.service("default/web").unwrap();
        assert_eq!(web.endpoints[0].pod, "n1p3");
        assert_eq!(web.endpoints[1].pod, "n2p3");
        // None mode, other CIDR.
        let t = LabSpec {
            encap: Encap::None,
            services: Some(ServicesSpec {
                service_cidr: "172.20.0.0/16".parse().unwrap(),
            }),
            ..LabSpec::default()
        }
        .plan()
        .unwrap();
        let s = t.services.unwrap();
        assert_eq!(
            s.service("kube-system/kube-dns").unwrap().cluster_ip,
            Ipv4Addr::new(172, 20, 0, 10)
        );
    }

    #[test]
    fn bad_service_cidrs() {
        for (cidr, why) in [
            ("10.244.0.0/16", "overlaps the pod CIDR"),
            ("10.0.0.0/8", "overlaps"),
            ("10.10.0.0/24", "overlaps the node subnet"),
            ("10.96.0.0/28", "too small"),
            ("10.96.0.1/12", "host bits"),
        ] {
            let err = LabSpec {
                services: Some(ServicesSpec {
                    service_cidr: cidr.parse().unwrap(),
                }),
                ..LabSpec::default()
            }
            .plan()
            .unwrap_err();
            assert!(format!("{err:#}").contains(why), "{cidr}: {err:#}");
        }
    }
}
