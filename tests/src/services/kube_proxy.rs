//! The rules kube-proxy writes in iptables mode, as the `iptables-restore` input it feeds the
//! kernel (through iptables-nft here, the nf_tables backend of current distributions).
//!
//! Design note: pure text generation, unit-tested without root. The shapes follow kube-proxy's
//! `pkg/proxy/iptables/proxier.go` and the golden outputs of its `proxier_test.go`
//! (`TestOverallIPTablesRules`): the built-in chains jump to `KUBE-SERVICES` ("kubernetes
//! service portals") and `KUBE-POSTROUTING`; a cluster IP rule per Service port jumps to
//! `KUBE-SVC-<hash>`, which first marks traffic from outside the cluster CIDR for masquerade
//! (`KUBE-MARK-MASQ`, mark 0x4000), then picks an endpoint chain `KUBE-SEP-<hash>` with
//! `-m statistic --mode random --probability 1/n` (the last one unconditionally); an endpoint
//! chain marks hairpin traffic and DNATs. Node ports go `KUBE-SERVICES` (last rule, local
//! destinations) -> `KUBE-NODEPORTS` -> `KUBE-EXT-<hash>`, which marks everything for
//! masquerade (`externalTrafficPolicy: Cluster`) and jumps to the Service chain;
//! `KUBE-POSTROUTING` masquerades what carries the mark. The filter table holds
//! `KUBE-FORWARD` (conntrack INVALID dropped, marked and established traffic accepted),
//! `KUBE-FIREWALL`, and, for a Service without endpoints, a `REJECT` in `KUBE-SERVICES`
//! ("has no endpoints"). The hashes are kube-proxy's: the first 16 characters of the base32
//! (RFC 4648) SHA-256 of `namespace/name:port` + protocol (+ `ip:port` for an endpoint), so
//! the chain names are the ones a real cluster with these Services has
//! (`KUBE-SVC-TCOU7JCQXEZGVUNU` is kube-dns's UDP port everywhere).

use sha2::{Digest, Sha256};

use super::{Endpoint, Service, ServicePort, Services, MASQ_MARK};
use crate::cidr::Cidr;

/// One table's part of a restore script: chains to declare and rules in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRules {
    /// User chains (declared `:NAME - [0:0]`).
    pub chains: Vec<String>,
    /// `-A CHAIN ...` lines, in order.
    pub rules: Vec<String>,
}

/// kube-proxy's `portProtoHash`: base32(sha256(name + protocol))[:16].
pub fn port_proto_hash(port_name: &str, protocol: &str) -> String {
    hash16(&format!("{port_name}{protocol}"))
}

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    base32(&digest)[..16].to_owned()
}

/// RFC 4648 base32 (standard alphabet), without padding (kube-proxy cuts it anyway).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// `KUBE-SVC-<hash>` of a Service port.
pub fn svc_chain(svc: &Service, port: &ServicePort) -> String {
    format!(
        "KUBE-SVC-{}",
        port_proto_hash(&svc.port_name(port), &port.protocol.to_string())
    )
}

/// `KUBE-EXT-<hash>` of a Service port (node ports).
pub fn ext_chain(svc: &Service, port: &ServicePort) -> String {
    format!(
        "KUBE-EXT-{}",
        port_proto_hash(&svc.port_name(port), &port.protocol.to_string())
    )
}

/// `KUBE-SEP-<hash>` of one endpoint of a Service port.
pub fn sep_chain(svc: &Service, port: &ServicePort, ep: &Endpoint) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!(
            "{}{}{}:{}",
            svc.port_name(port),
            port.protocol,
            ep.ip,
            port.target_port
        ))
    )
}

/// `-m comment --comment X`, quoted when X has a space (as kube-proxy's restore input).
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// `-m tcp -p tcp -d IP --dport N`: the cluster IP match.
fn cluster_ip_match(svc: &Service, port: &ServicePort) -> String {
    let p = port.protocol;
    format!("-m {p} -p {p} -d {} --dport {}", svc.cluster_ip, port.port)
}

/// The `KUBE-SERVICES` (nat) rule that sends a Service port's cluster IP to its chain: what
/// `missing-service-rule` removes.
pub fn cluster_ip_jump(svc: &Service, port: &ServicePort) -> String {
    format!(
        "-A KUBE-SERVICES {} {} -j {}",
        comment(&format!("{} cluster IP", svc.port_name(port))),
        cluster_ip_match(svc, port),
        svc_chain(svc, port)
    )
}

/// The comment of a cluster IP jump (to find the rule in `iptables -S` output).
pub fn cluster_ip_comment(svc: &Service, port: &ServicePort) -> String {
    format!("{} cluster IP", svc.port_name(port))
}

/// The filter `KUBE-SERVICES` rule kube-proxy writes for a Service port without endpoints.
pub fn no_endpoints_reject(svc: &Service, port: &ServicePort) -> String {
    format!(
        "-A KUBE-SERVICES {} {} -j REJECT",
        comment(&format!("{} has no endpoints", svc.port_name(port))),
        cluster_ip_match(svc, port)
    )
}

/// The comment on the rule of `KUBE-EXT-<hash>` that marks node port traffic for masquerade.
pub fn ext_masq_comment(svc: &Service, port: &ServicePort) -> String {
    format!(
        "masquerade traffic for {} external destinations",
        svc.port_name(port)
    )
}

/// kube-proxy's probability for endpoint `i` of `n` (`%0.10f` of 1/(n-i)).
fn probability(i: usize, n: usize) -> String {
    format!("{:.10}", 1.0 / (n - i) as f64)
}

/// The nat table of one node: every Service port's chains (the same on every node).
pub fn nat(services: &Services, cluster_cidr: Cidr) -> TableRules {
    let mut t = TableRules::default();
    let mut svc_chains = Vec::new();
    let mut ext_chains = Vec::new();
    let mut sep_chains = Vec::new();
    let mut nodeports = Vec::new();
    let mut jumps = Vec::new();
    let mut bodies = Vec::new();
    for svc in &services.list {
        for port in &svc.ports {
            let name = svc.port_name(port);
            let svc_c = svc_chain(svc, port);
            if svc.endpoints.is_empty() {
                continue; // the REJECT in the filter table instead
            }
            jumps.push(cluster_ip_jump(svc, port));
            if let Some(np) = port.node_port {
                let ext = ext_chain(svc, port);
                let p = port.protocol;
                nodeports.push(format!(
                    "-A KUBE-NODEPORTS {} -m {p} -p {p} --dport {np} -j {ext}",
                    comment(&name)
                ));
                bodies.push(format!(
                    "-A {ext} {} -j KUBE-MARK-MASQ",
                    comment(&ext_masq_comment(svc, port))
                ));
                bodies.push(format!("-A {ext} -j {svc_c}"));
                ext_chains.push(ext);
            }
            bodies.push(format!(
                "-A {svc_c} {} {} ! -s {cluster_cidr} -j KUBE-MARK-MASQ",
                comment(&format!("{name} cluster IP")),
                cluster_ip_match(svc, port)
            ));
            let n = svc.endpoints.len();
            let mut seps = Vec::new();
            for (i, ep) in svc.endpoints.iter().enumerate() {
                let sep = sep_chain(svc, port, ep);
                let target = format!("{}:{}", ep.ip, port.target_port);
                let pick = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {}",
                        probability(i, n)
                    )
                } else {
                    String::new()
                };
                bodies.push(format!(
                    "-A {svc_c} {}{pick} -j {sep}",
                    comment(&format!("{name} -> {target}"))
                ));
                let p = port.protocol;
                seps.push(format!(
                    "-A {sep} {} -s {} -j KUBE-MARK-MASQ",
                    comment(&name),
                    ep.ip
                ));
                seps.push(format!(
                    "-A {sep} {} -m {p} -p {p} -j DNAT --to-destination {target}",
                    comment(&name)
                ));
                sep_chains.push(sep);
            }
            bodies.extend(seps);
            svc_chains.push(svc_c);
        }
    }
    t.chains = [
        "KUBE-NODEPORTS",
        "KUBE-SERVICES",
        "KUBE-MARK-MASQ",
        "KUBE-POSTROUTING",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(ext_chains)
    .chain(sep_chains)
    .chain(svc_chains)
    .collect();
    t.rules = vec![
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            .to_owned(),
        "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_owned(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
            .to_owned(),
    ];
    t.rules.extend(nodeports);
    t.rules.extend(jumps);
    t.rules.push(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
            .to_owned(),
    );
    t.rules.push(format!(
        "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK:#x}"
    ));
    t.rules.extend([
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j RETURN"),
        format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK:#x}"),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE"
            .to_owned(),
    ]);
    t.rules.extend(bodies);
    t
}

/// The filter table of one node.
pub fn filter(services: &Services) -> TableRules {
    let chains = [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FIREWALL",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
    ]
    .map(str::to_owned)
    .to_vec();
    let new = "-m conntrack --ctstate NEW";
    let mut rules: Vec<String> = [
        format!("-A INPUT {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS".to_owned(),
        format!("-A INPUT {new} -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        "-A INPUT -j KUBE-FIREWALL".to_owned(),
        format!("-A FORWARD {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD".to_owned(),
        format!("-A FORWARD {new} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        format!("-A FORWARD {new} -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        format!("-A OUTPUT {new} -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        format!("-A OUTPUT {new} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        "-A OUTPUT -j KUBE-FIREWALL".to_owned(),
    ]
    .to_vec();
    for svc in services.list.iter().filter(|s| s.endpoints.is_empty()) {
        rules.extend(svc.ports.iter().map(|p| no_endpoints_reject(svc, p)));
    }
    rules.extend([
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d \
         127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
            .to_owned(),
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".to_owned(),
        format!(
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark \
             --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j ACCEPT"
        ),
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m \
         conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .to_owned(),
    ]);
    TableRules { chains, rules }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{Proto, ServicesSpec};
    use crate::LabSpec;

    fn services() -> Services {
        LabSpec {
            services: Some(ServicesSpec::default()),
            ..LabSpec::default()
        }
        .plan()
        .unwrap()
        .services
        .unwrap()
    }

    #[test]
    fn hashes_are_kube_proxys() {
        // From kube-proxy's own golden test output (proxier_test.go).
        assert_eq!(port_proto_hash("ns1/svc1:p80", "tcp"), "XPGD46QRK7WJZT7O");
        assert_eq!(port_proto_hash("ns2/svc2:p80", "tcp"), "GNZBNJ2PO5MGZ6GT");
        assert_eq!(hash16("ns1/svc1:p80tcp10.180.0.1:80"), "SXIVWICOYRO3J4NJ");
        // kube-dns's chains, the same in every cluster.
        assert_eq!(
            port_proto_hash("kube-system/kube-dns:dns", "udp"),
            "TCOU7JCQXEZGVUNU"
        );
        assert_eq!(
            port_proto_hash("kube-system/kube-dns:dns-tcp", "tcp"),
            "ERIFXISQEP7F7OF4"
        );
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn nat_rules_have_kube_proxys_shape() {
        let s = services();
        let t = nat(&s, "10.244.0.0/16".parse().unwrap());
        let has = |l: &str| t.rules.iter().any(|r| r == l);
        assert!(has(
            "-A KUBE-SERVICES -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -m udp \
             -p udp -d 10.96.0.10 --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU"
        ));
        let web = s.service("default/web").unwrap();
        let port = &web.ports[0];
        let svc_c = svc_chain(web, port);
        let (ep1, ep2) = (&web.endpoints[0], &web.endpoints[1]);
        assert!(has(&format!(
            "-A {svc_c} -m comment --comment \"default/web:http -> {}:8080\" -m statistic \
             --mode random --probability 0.5000000000 -j {}",
            ep1.ip,
            sep_chain(web, port, ep1)
        )));
        assert!(has(&format!(
            "-A {svc_c} -m comment --comment \"default/web:http -> {}:8080\" -j {}",
            ep2.ip,
            sep_chain(web, port, ep2)
        )));
        assert!(has(&format!(
            "-A {svc_c} -m comment --comment \"default/web:http cluster IP\" -m tcp -p tcp -d \
             10.96.0.20 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"
        )));
        assert!(has(&format!(
            "-A {} -m comment --comment default/web:http -m tcp -p tcp -j DNAT \
             --to-destination {}:8080",
            sep_chain(web, port, ep1),
            ep1.ip
        )));
        let np = s.service("default/web-np").unwrap();
        let ext = ext_chain(np, &np.ports[0]);
        assert!(has(&format!(
            "-A KUBE-NODEPORTS -m comment --comment default/web-np:http -m tcp -p tcp --dport \
             30080 -j {ext}"
        )));
        assert!(has(&format!(
            "-A {ext} -m comment --comment \"masquerade traffic for default/web-np:http \
             external destinations\" -j KUBE-MARK-MASQ"
        )));
        assert!(has("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"));
        // The node port rule is the last of KUBE-SERVICES; every chain jumped to is declared.
        let services_rules: Vec<&String> = t
            .rules
            .iter()
            .filter(|r| r.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert!(services_rules
            .last()
            .unwrap()
            .ends_with("-j KUBE-NODEPORTS"));
        assert_eq!(services_rules.len(), 5, "4 ports + node ports");
        for r in &t.rules {
            let target = r.split(" -j ").nth(1).unwrap().split(' ').next().unwrap();
            if target.starts_with("KUBE-") {
                assert!(t.chains.iter().any(|c| c == target), "{target} in {r}");
            }
            let chain = r.split_whitespace().nth(1).unwrap();
            assert!(
                chain.chars().all(|c| c.is_ascii_uppercase() || c == '-')
                    || t.chains.iter().any(|c| c == chain),
                "{chain}"
            );
        }
    }

    #[test]
    fn a_service_without_endpoints_is_rejected_in_filter() {
        let mut s = services();
        let f = filter(&s);
        assert!(!f.rules.iter().any(|r| r.contains("REJECT")));
        assert!(f
            .rules
            .contains(&"-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".to_owned()));
        s.list[1].endpoints.clear();
        let f = filter(&s);
        assert!(f.rules.contains(
            &"-A KUBE-SERVICES -m comment --comment \"default/web:http has no endpoints\" -m \
              tcp -p tcp -d 10.96.0.20 --dport 80 -j REJECT"
                .to_owned()
        ));
        let n = nat(&s, "10.244.0.0/16".parse().unwrap());
        assert!(!n.rules.iter().any(|r| r.contains("default/web:http")));
        assert_eq!(s.list[1].ports[0].protocol, Proto::Tcp);
    }

    #[test]
    fn probabilities() {
        assert_eq!(probability(0, 2), "0.5000000000");
        assert_eq!(probability(0, 3), "0.3333333333");
        assert_eq!(probability(1, 3), "0.5000000000");
    }
}
