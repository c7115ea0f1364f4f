//! The plans of the NAT faults (a lab with Services, see [`crate::services`]): what breaks
//! when kube-proxy's or Calico's NAT is wrong, read from and written to the nodes' iptables
//! (nf_tables backend) and ipsets, and the conntrack table filled.
//!
//! Design note: every plan reads the rules it changes from the kernel (`iptables-nft -S`), so
//! its undo puts back exactly the rule that was there, at the position it had (`-I CHAIN N`),
//! in the text iptables itself prints; only the rules kube-proxy *adds* for a changed state
//! (the "has no endpoints" REJECT) come from [`crate::services::kube_proxy`].

use std::net::Ipv4Addr;

use anyhow::{ensure, Context, Result};

use super::engine::{Ctx, Plan, Planned};
use crate::services::{calico_nat, kube_proxy, Services};
use crate::topology::Node;

/// The mark of the entries `conntrack-full` fills a table with.
pub const CONNTRACK_FILL_MARK: u32 = 0x7ab_0000;

fn services<'a>(c: &'a Ctx<'_>) -> Result<&'a Services> {
    c.t.services
        .as_ref()
        .context("the lab has no Services (`lab up --services`)")
}

/// The `-A` rules of `chain` in `table` on `node`, as `iptables -S` prints them.
fn rules_of(node: &Node, table: &str, chain: &str) -> Result<Vec<String>> {
    let out = crate::netns::exec_in(&node.netns, &["iptables-nft", "-t", table, "-S", chain])?;
    ensure!(
        out.status.success(),
        "`iptables-nft -t {table} -S {chain}` on {} failed: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect())
}

/// The rule of `chain` carrying `--comment "comment"`, with its 1-based position.
fn rule_with_comment(
    node: &Node,
    table: &str,
    chain: &str,
    comment: &str,
) -> Result<(usize, String)> {
    let quoted = format!("--comment \"{comment}\"");
    rules_of(node, table, chain)?
        .into_iter()
        .enumerate()
        .find(|(_, r)| r.contains(&quoted))
        .map(|(i, r)| (i + 1, r))
        .with_context(|| {
            format!(
                "{} has no rule `{comment}` in {table} {chain} (another fault?)",
                node.name
            )
        })
}

/// `-D CHAIN spec` of an `-A CHAIN spec` line.
fn delete(rule: &str) -> String {
    rule.replacen("-A ", "-D ", 1)
}

/// `-I CHAIN N spec` of an `-A CHAIN spec` line.
fn insert_at(rule: &str, pos: usize) -> String {
    let mut words = rule.splitn(3, ' ');
    let (_, chain, rest) = (words.next(), words.next(), words.next());
    format!(
        "-I {} {pos} {}",
        chain.unwrap_or_default(),
        rest.unwrap_or_default()
    )
}

fn script(table: &str, lines: &[String]) -> String {
    format!("*{table}\n{}\nCOMMIT\n", lines.join("\n"))
}

/// The jump target of a rule (`-j X`).
fn target(rule: &str) -> Option<&str> {
    rule.split(" -j ").nth(1)?.split_whitespace().next()
}

/// `missing-service-rule`: node1's kube-proxy lost the DNS Service's cluster IP rules.
pub fn missing_service_rule(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let s = services(c)?;
    let dns = s.service(&s.dns.service)?;
    let n1 = c.n1;
    let mut found = Vec::new();
    for port in &dns.ports {
        found.push(rule_with_comment(
            n1,
            "nat",
            "KUBE-SERVICES",
            &kube_proxy::cluster_ip_comment(dns, port),
        )?);
    }
    found.sort();
    let apply: Vec<String> = found.iter().map(|(_, r)| delete(r)).collect();
    let undo: Vec<String> = found.iter().map(|(i, r)| insert_at(r, *i)).collect();
    p.iptables(
        &n1.netns,
        "nat",
        script("nat", &apply),
        script("nat", &undo),
    )?;
    Ok(Planned {
        node: n1.name.clone(),
        description: format!(
            "removed kube-proxy's KUBE-SERVICES rules for {} ({}:53 UDP and TCP) on {}: \
             nothing translates the Service address, which follows the default route",
            dns.id(),
            dns.cluster_ip,
            n1.name
        ),
    })
}

/// `service-no-endpoints`: `default/web` lost its endpoints, and every node's kube-proxy
/// rewrote its rules: the Service's chains gone, a REJECT "has no endpoints" instead.
pub fn service_no_endpoints(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let s = services(c)?;
    let web = s.service("default/web")?;
    let mut touched = Vec::new();
    for n in &c.t.nodes {
        let (mut nat_apply, mut nat_undo) = (Vec::new(), Vec::new());
        let (mut filter_apply, mut filter_undo) = (Vec::new(), Vec::new());
        let mut jumps = Vec::new();
        for port in &web.ports {
            let comment = kube_proxy::cluster_ip_comment(web, port);
            let (pos, jump) = rule_with_comment(n, "nat", "KUBE-SERVICES", &comment)?;
            let svc = target(&jump).context("a cluster IP rule without a target")?;
            let svc_rules = rules_of(n, "nat", svc)?;
            let seps: Vec<String> = svc_rules
                .iter()
                .filter_map(|r| target(r))
                .filter(|t| t.starts_with("KUBE-SEP-"))
                .map(str::to_owned)
                .collect();
            nat_apply.push(delete(&jump));
            nat_apply.extend([format!("-F {svc}"), format!("-X {svc}")]);
            for sep in &seps {
                nat_apply.extend([format!("-F {sep}"), format!("-X {sep}")]);
                nat_undo.push(format!(":{sep} - [0:0]"));
            }
            nat_undo.push(format!(":{svc} - [0:0]"));
            for sep in &seps {
                nat_undo.extend(rules_of(n, "nat", sep)?);
            }
            nat_undo.extend(svc_rules);
            jumps.push((pos, jump));
            let reject = kube_proxy::no_endpoints_reject(web, port);
            filter_undo.push(delete(&reject));
            filter_apply.push(reject);
        }
        jumps.sort();
        nat_undo.extend(jumps.iter().map(|(pos, j)| insert_at(j, *pos)));
        p.iptables(
            &n.netns,
            "nat",
            script("nat", &nat_apply),
            script("nat", &nat_undo),
        )?;
        p.iptables(
            &n.netns,
            "filter",
            script("filter", &filter_apply),
            script("filter", &filter_undo),
        )?;
        touched.push(n.name.as_str());
    }
    Ok(Planned {
        node: touched.join(","),
        description: format!(
            "{} has no endpoints: on {} its KUBE-SVC/KUBE-SEP chains are gone and filter \
             KUBE-SERVICES rejects {}:{} (\"has no endpoints\", icmp-port-unreachable)",
            web.id(),
            touched.join(", "),
            web.cluster_ip,
            web.ports[0].port
        ),
    })
}

/// `conntrack-full`: node1's conntrack table is full of established flows.
pub fn conntrack_full(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    services(c)?;
    let n1 = c.n1;
    let max = super::conntrack::max(&n1.netns)?;
    p.conntrack_fill(&n1.netns, CONNTRACK_FILL_MARK);
    Ok(Planned {
        node: n1.name.clone(),
        description: format!(
            "filled {}'s conntrack table to nf_conntrack_max ({max}, the kernel's global limit \
             per namespace) with assured entries marked {CONNTRACK_FILL_MARK:#x}: new flows \
             through {} are dropped",
            n1.name, n1.name
        ),
    })
}

/// `nodeport-no-snat`: node1 does not mark node port traffic for masquerade, so the endpoint
/// on node2 answers the outside client directly, from its own address.
pub fn nodeport_no_snat(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let s = services(c)?;
    let np = s
        .list
        .iter()
        .find(|svc| svc.ports.iter().any(|p| p.node_port.is_some()))
        .context("no NodePort Service")?;
    let port = np
        .ports
        .iter()
        .find(|p| p.node_port.is_some())
        .context("no node port")?;
    let n1 = c.n1;
    let ext = kube_proxy::ext_chain(np, port);
    let (pos, rule) = rule_with_comment(n1, "nat", &ext, &kube_proxy::ext_masq_comment(np, port))?;
    p.iptables(
        &n1.netns,
        "nat",
        script("nat", &[delete(&rule)]),
        script("nat", &[insert_at(&rule, pos)]),
    )?;
    let ep = np
        .endpoints
        .first()
        .context("the NodePort Service has no endpoint")?;
    Ok(Planned {
        node: n1.name.clone(),
        description: format!(
            "removed the KUBE-MARK-MASQ rule of {ext} ({}, node port {}) on {}: node port \
             traffic is DNATed to {} on {} but not masqueraded, so the reply goes from the \
             pod's address straight to the client",
            np.id(),
            port.node_port.unwrap_or_default(),
            n1.name,
            ep.ip,
            ep.node
        ),
    })
}

/// `nat-outgoing-off`: the pool's `natOutgoing` is false (Felix empties
/// `cali40masq-ipam-pools` on every node): pod traffic leaves with the pod's address.
pub fn nat_outgoing_off(c: &Ctx<'_>, p: &mut Plan) -> Result<Planned> {
    let s = services(c)?;
    for n in &c.t.nodes {
        // Healing also forgets the connections the fault left untranslated: conntrack keeps
        // the NAT decision of a flow's first packet, and a probe after heal may get the same
        // source port as one during the fault (`conntrack -D` fails when nothing matches).
        let forget = format!("conntrack -D -d {} >/dev/null 2>&1; true", s.outside.ip);
        p.exec(
            &n.netns,
            vec!["true".into()],
            ["sh", "-c", &forget].map(str::to_owned).to_vec(),
        );
        for pool in &s.nat_outgoing_pools {
            let (off, on) = calico_nat::nat_outgoing_toggle(pool);
            p.exec(&n.netns, off, on);
        }
    }
    let o: Ipv4Addr = s.outside.ip;
    Ok(Planned {
        node: c
            .t
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        description: format!(
            "natOutgoing off: {} emptied on every node, so pod traffic to {o} (outside every \
             IP pool) leaves with the pod's address, and {o} has no route back to {}",
            calico_nat::MASQ_POOLS_SET,
            c.t.pod_cidr
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_text() {
        let r = "-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment \
                 \"kube-system/kube-dns:dns cluster IP\" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU";
        assert!(delete(r).starts_with("-D KUBE-SERVICES -d 10.96.0.10/32 "));
        assert!(insert_at(r, 3).starts_with("-I KUBE-SERVICES 3 -d 10.96.0.10/32 -p udp "));
        assert_eq!(target(r), Some("KUBE-SVC-TCOU7JCQXEZGVUNU"));
        assert_eq!(
            script("nat", &[delete(r)]),
            format!("*nat\n{}\nCOMMIT\n", delete(r))
        );
    }
}
