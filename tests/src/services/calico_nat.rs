//! What Felix writes for `natOutgoing` in iptables mode, and the whole restore script of a
//! node (Felix's nat chains and kube-proxy's tables together).
//!
//! Design note: pure text, unit-tested without root. Felix keeps two ipsets, `cali40all-ipam-
//! pools` (every IP pool) and `cali40masq-ipam-pools` (the pools with `natOutgoing: true`),
//! and masquerades in `cali-nat-outgoing` what comes from a masquerading pool and goes to no
//! pool at all; its nat chains hang off the built-in ones through `cali-PREROUTING`,
//! `cali-OUTPUT` and `cali-POSTROUTING`, inserted before kube-proxy's jumps. The rules and
//! their `cali:` comments are copied from `iptables-save` of real Calico nodes (Felix hashes
//! a rule's chain, position and content, so these rules carry the same comment everywhere);
//! the floating-IP chains are there, empty, as on a node without floating IPs. Turning
//! `natOutgoing` off is Felix emptying `cali40masq-ipam-pools` (the rule stays).

use super::kube_proxy::{self, TableRules};
use super::Services;
use crate::topology::Topology;

/// Felix's ipset of every IP pool.
pub const ALL_POOLS_SET: &str = "cali40all-ipam-pools";
/// Felix's ipset of the pools with `natOutgoing: true`.
pub const MASQ_POOLS_SET: &str = "cali40masq-ipam-pools";

/// `ipset restore` input: both sets, holding the pod CIDR.
pub fn ipsets(services: &Services, pools: &[crate::Cidr]) -> String {
    let mut s = String::new();
    for (set, members) in [
        (ALL_POOLS_SET, pools),
        (MASQ_POOLS_SET, &services.nat_outgoing_pools[..]),
    ] {
        s.push_str(&format!("create {set} hash:net family inet\n"));
        for m in members {
            s.push_str(&format!("add {set} {m}\n"));
        }
    }
    s
}

/// The `ipset` command lines that turn `natOutgoing` off for `pool` and back on.
pub fn nat_outgoing_toggle(pool: &crate::Cidr) -> (Vec<String>, Vec<String>) {
    let argv = |verb: &str| {
        ["ipset", verb, MASQ_POOLS_SET, &pool.to_string()]
            .map(str::to_owned)
            .to_vec()
    };
    (argv("del"), argv("add"))
}

/// The `cali-nat-outgoing` masquerade rule (the one `natOutgoing` relies on).
pub const NAT_OUTGOING_RULE: &str = "-A cali-nat-outgoing -m comment --comment \
     \"cali:flqWnvo8yq4ULQLa\" -m set --match-set cali40masq-ipam-pools src -m set ! \
     --match-set cali40all-ipam-pools dst -j MASQUERADE --random-fully";

/// Felix's nat table on a node (`vxlan`: the lab has `vxlan.calico`).
pub fn nat(vxlan_dev: Option<&str>) -> TableRules {
    let chains = [
        "cali-OUTPUT",
        "cali-POSTROUTING",
        "cali-PREROUTING",
        "cali-fip-dnat",
        "cali-fip-snat",
        "cali-nat-outgoing",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut rules: Vec<String> = [
        "-A PREROUTING -m comment --comment \"cali:6gwbT8clXdHdC1b1\" -j cali-PREROUTING",
        "-A OUTPUT -m comment --comment \"cali:tVnHkvAo15HuiPy0\" -j cali-OUTPUT",
        "-A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j cali-POSTROUTING",
        "-A cali-OUTPUT -m comment --comment \"cali:GBTAv2p5CwevEyJm\" -j cali-fip-dnat",
        "-A cali-POSTROUTING -m comment --comment \"cali:Z-c7XtVd2Bq7s_hA\" -j cali-fip-snat",
        "-A cali-POSTROUTING -m comment --comment \"cali:nYKhEzDlr11Jccal\" -j cali-nat-outgoing",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(dev) = vxlan_dev {
        // Host-originated traffic into the tunnel leaves with the tunnel's address.
        rules.push(format!(
            "-A cali-POSTROUTING -o {dev} -m comment --comment \"cali:e9dnSgSVNmIcpVhP\" -m \
             addrtype ! --src-type LOCAL --limit-iface-out -m addrtype --src-type LOCAL -j \
             MASQUERADE --random-fully"
        ));
    }
    rules.push(
        "-A cali-PREROUTING -m comment --comment \"cali:r6XmIziWUJsdOK6Z\" -j cali-fip-dnat"
            .to_owned(),
    );
    rules.push(NAT_OUTGOING_RULE.to_owned());
    TableRules { chains, rules }
}

/// The `iptables-restore` script of a node: kube-proxy's filter table, then the nat table
/// with Felix's chains before kube-proxy's (Felix inserts its jumps at the top).
pub fn restore_script(t: &Topology, services: &Services) -> String {
    let vxlan = t.nodes.first().and_then(|n| n.vtep.as_ref());
    let felix = nat(vxlan.map(|v| v.ifname.as_str()));
    let kube_nat = kube_proxy::nat(services, t.pod_cidr);
    let kube_filter = kube_proxy::filter(services);
    let mut s = String::new();
    let mut table = |name: &str, builtins: &[&str], parts: &[&TableRules]| {
        s.push_str(&format!("*{name}\n"));
        for b in builtins {
            s.push_str(&format!(":{b} ACCEPT [0:0]\n"));
        }
        for p in parts {
            for c in &p.chains {
                s.push_str(&format!(":{c} - [0:0]\n"));
            }
        }
        // Built-in chains' jumps first, each part in order, then the user chains' rules.
        let builtin = |r: &&String| builtins.iter().any(|b| r.starts_with(&format!("-A {b} ")));
        for p in parts {
            for r in p.rules.iter().filter(builtin) {
                s.push_str(&format!("{r}\n"));
            }
        }
        for p in parts {
            for r in p.rules.iter().filter(|r| !builtin(r)) {
                s.push_str(&format!("{r}\n"));
            }
        }
        s.push_str("COMMIT\n");
    };
    table("filter", &["INPUT", "FORWARD", "OUTPUT"], &[&kube_filter]);
    table(
        "nat",
        &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        &[&felix, &kube_nat],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::ServicesSpec;
    use crate::{Encap, LabSpec};

    fn lab(encap: Encap) -> Topology {
        LabSpec {
            encap,
            services: Some(ServicesSpec::default()),
            ..LabSpec::default()
        }
        .plan()
        .unwrap()
    }

    #[test]
    fn ipsets_hold_the_pools() {
        let t = lab(Encap::Vxlan);
        let s = ipsets(t.services.as_ref().unwrap(), &[t.pod_cidr]);
        assert_eq!(
            s,
            "create cali40all-ipam-pools hash:net family inet\n\
             add cali40all-ipam-pools 10.244.0.0/16\n\
             create cali40masq-ipam-pools hash:net family inet\n\
             add cali40masq-ipam-pools 10.244.0.0/16\n"
        );
        let (off, on) = nat_outgoing_toggle(&t.pod_cidr);
        assert_eq!(
            off.join(" "),
            "ipset del cali40masq-ipam-pools 10.244.0.0/16"
        );
        assert_eq!(
            on.join(" "),
            "ipset add cali40masq-ipam-pools 10.244.0.0/16"
        );
    }

    #[test]
    fn restore_script_shape() {
        let t = lab(Encap::Vxlan);
        let s = restore_script(&t, t.services.as_ref().unwrap());
        let lines: Vec<&str> = s.lines().collect();
        let pos = |l: &str| {
            lines
                .iter()
                .position(|x| *x == l)
                .unwrap_or_else(|| panic!("no `{l}` in\n{s}"))
        };
        // Felix's jump comes before kube-proxy's in POSTROUTING.
        assert!(
            pos("-A POSTROUTING -m comment --comment \"cali:O3lYWMrLQYEMJtB5\" -j cali-POSTROUTING")
                < pos("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING")
        );
        pos(NAT_OUTGOING_RULE);
        assert!(s.contains("-o vxlan.calico"));
        assert_eq!(lines.iter().filter(|l| **l == "COMMIT").count(), 2);
        assert!(s.starts_with("*filter\n:INPUT ACCEPT [0:0]\n"));
        // Every chain is declared before any rule.
        for part in s.split("COMMIT\n").filter(|p| !p.is_empty()) {
            let lines: Vec<&str> = part.lines().collect();
            let first_rule = lines.iter().position(|l| l.starts_with("-A")).unwrap();
            let last_decl = lines.iter().rposition(|l| l.starts_with(':')).unwrap();
            assert!(last_decl < first_rule);
        }
        let none = lab(Encap::None);
        assert!(!restore_script(&none, none.services.as_ref().unwrap()).contains("vxlan"));
    }
}
