//! Calico's filter chains as Felix programs them in iptables mode, for the lab's firewall
//! faults (`calico-policy-drop`, `conntrack-invalid`): what a real Calico node's `filter`
//! table holds, so that the tracer meets a realistic ruleset and has to name a policy from it.
//!
//! Design note: pure text generation, unit-tested without root: an `iptables-restore` script
//! (applied with `iptables-nft-restore --noflush`, the nf_tables backend Calico uses on current
//! distributions) and the script that removes exactly what it added. The shapes follow Felix
//! (projectcalico/calico `felix/rules/static.go`, `endpoints.go`, `policy.go`,
//! `rule_defs.go`; v3.2x `iptables-save` dumps of real clusters look the same): `FORWARD`
//! jumps to `cali-FORWARD`, which clears Calico's mark bits and dispatches by interface
//! (`-i cali+` to `cali-from-wl-dispatch`, `-o cali+` to `cali-to-wl-dispatch`), which `goto`s
//! the workload's `cali-fw-<veth>` / `cali-tw-<veth>` chain: conntrack first (`RELATED,
//! ESTABLISHED` accepted, `INVALID` dropped), then the policies that select the workload
//! (`cali-pi-<id>`: an allow rule sets the accept mark, a deny rule drops; "Drop if no
//! policies passed packet"), then its profile (`cali-pri-kns.<namespace>`, which accepts).
//! Back in `FORWARD`, "Policy explicitly accepted packet." accepts what carries the accept
//! mark. Every rule carries a `cali:<16 characters>` comment; a policy chain's first rule also
//! carries `Policy <namespace>/<tier>.<name> ingress`. Chain names are Felix's length-limited
//! ids: prefix + id when that fits iptables' 28 characters, else prefix + `_` + a hash (most
//! real policy chains look like `cali-pi-_f33B8osgBB9KBtqM0k-`). The hashes have the shape of
//! Felix's (base64url) but not its values (Felix hashes with SHA-2; a label needs no crypto
//! crate): stable across runs of one build. Felix's host-endpoint, failsafe, NAT and raw
//! chains are left out: the lab has no host endpoints and they carry no pod traffic here.

use std::hash::{DefaultHasher, Hash, Hasher};

/// iptables' longest chain name (`XT_EXTENSION_MAXNAMELEN` - 1), Felix's limit.
const MAX_CHAIN_NAME: usize = 28;
/// Felix's mark bits (its default `IptablesMarkMask` 0xffff0000): accept, pass, and the mask
/// `cali-FORWARD` clears first (pass and the two scratch bits).
const MARK_ACCEPT: u32 = 0x10000;
const MARK_PASS: u32 = 0x20000;
const MARK_CLEAR: u32 = 0xe0000;

/// A pod's workload endpoint on the node.
#[derive(Clone, Copy, Debug)]
pub struct Workload<'a> {
    /// Its host-side veth (`cali…`).
    pub iface: &'a str,
    /// Its Kubernetes namespace (the profile `kns.<namespace>` allows everything).
    pub namespace: &'a str,
}

/// A Calico NetworkPolicy selecting one workload, ingress only: deny TCP to one port, allow
/// the rest.
#[derive(Clone, Debug)]
pub struct Policy {
    pub namespace: String,
    pub tier: String,
    pub name: String,
    /// The TCP port its deny rule drops.
    pub deny_tcp_port: u16,
}

impl Policy {
    /// Felix's id of the policy (`default/default.deny-8080`): namespace, then tier-qualified
    /// name.
    pub fn id(&self) -> String {
        format!("{}/{}.{}", self.namespace, self.tier, self.name)
    }

    /// Its inbound chain (`cali-pi-_…`).
    pub fn chain(&self) -> String {
        length_limited("cali-pi-", &self.id())
    }
}

/// The chains of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chains {
    /// `iptables-restore` script that adds them (apply with `--noflush`).
    pub apply: String,
    /// The script that removes exactly what `apply` added.
    pub undo: String,
    /// The chain whose rule drops the policy's traffic, if a policy is given.
    pub policy_chain: Option<String>,
    /// The target workload's `cali-tw-<veth>` chain (where `INVALID` packets to it are
    /// dropped).
    pub target_chain: String,
}

/// One rule: chain and the rest of its `-A` line.
struct Rule {
    chain: String,
    spec: String,
}

/// Builds rules in Felix's order of matches: the interface or protocol matches Felix puts
/// first, then the `cali:` hash comment, then the rest.
struct ChainBuilder {
    rules: Vec<Rule>,
}

impl ChainBuilder {
    fn rule(&mut self, chain: &str, pre: &str, rest: &str) {
        let n = self.rules.iter().filter(|r| r.chain == chain).count();
        let hash = hash_chars(&format!("{chain}#{n}"), 16);
        let pre = if pre.is_empty() {
            String::new()
        } else {
            format!("{pre} ")
        };
        self.rules.push(Rule {
            chain: chain.to_owned(),
            spec: format!("{pre}-m comment --comment \"cali:{hash}\" {rest}"),
        });
    }
}

/// Felix's chains for `workloads` (the pods of one node), with `policy` selecting the
/// workload on `target` (its veth) if given; VXLAN labs also drop VXLAN sent by workloads
/// (`vxlan_port`), as Felix does.
pub fn chains(
    workloads: &[Workload<'_>],
    target: &str,
    policy: Option<&Policy>,
    vxlan_port: Option<u16>,
) -> Chains {
    let mut b = ChainBuilder { rules: Vec::new() };
    let mut names: Vec<String> = vec![
        "cali-FORWARD".into(),
        "cali-from-wl-dispatch".into(),
        "cali-to-wl-dispatch".into(),
    ];
    let clear = |m: u32| format!("-j MARK --set-xmark 0x0/{m:#x}");
    let set = |m: u32| format!("-j MARK --set-xmark {m:#x}/{m:#x}");
    let is_set = |m: u32| format!("-m mark --mark {m:#x}/{m:#x}");
    let is_clear = |m: u32| format!("-m mark --mark 0x0/{m:#x}");

    b.rule("cali-FORWARD", "", &clear(MARK_CLEAR));
    b.rule("cali-FORWARD", "-i cali+", "-j cali-from-wl-dispatch");
    b.rule("cali-FORWARD", "-o cali+", "-j cali-to-wl-dispatch");

    let mut namespaces: Vec<&str> = workloads.iter().map(|w| w.namespace).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in &namespaces {
        for (dir, pfx) in [("ingress", "cali-pri-"), ("egress", "cali-pro-")] {
            let chain = length_limited(pfx, &format!("kns.{ns}"));
            let comment = format!("-m comment --comment \"Profile kns.{ns} {dir}\"");
            b.rule(&chain, "", &format!("{comment} {}", set(MARK_ACCEPT)));
            names.push(chain);
        }
    }

    let policy_chain = policy.map(|p| {
        let chain = p.chain();
        let comment = format!("-m comment --comment \"Policy {} ingress\"", p.id());
        let dport = format!("-m multiport --dports {}", p.deny_tcp_port);
        b.rule(&chain, "-p tcp", &format!("{comment} {dport} -j DROP"));
        b.rule(&chain, "", &set(MARK_ACCEPT));
        names.push(chain.clone());
        chain
    });

    let mut target_chain = String::new();
    for w in workloads {
        let (fw, tw) = (
            length_limited("cali-fw-", w.iface),
            length_limited("cali-tw-", w.iface),
        );
        let iface = w.iface;
        b.rule(
            "cali-from-wl-dispatch",
            &format!("-i {iface}"),
            &format!("-g {fw}"),
        );
        b.rule(
            "cali-to-wl-dispatch",
            &format!("-o {iface}"),
            &format!("-g {tw}"),
        );
        let (pri, pro) = (
            length_limited("cali-pri-", &format!("kns.{}", w.namespace)),
            length_limited("cali-pro-", &format!("kns.{}", w.namespace)),
        );
        for (chain, profile, egress) in [(&fw, &pro, true), (&tw, &pri, false)] {
            b.rule(
                chain,
                "",
                "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            );
            b.rule(chain, "", "-m conntrack --ctstate INVALID -j DROP");
            b.rule(chain, "", &clear(MARK_ACCEPT));
            if let (true, Some(port)) = (egress, vxlan_port) {
                let c = "-m comment --comment \"Drop VXLAN encapped packets originating in \
                         workloads\"";
                b.rule(
                    chain,
                    "-p udp",
                    &format!("{c} -m multiport --dports {port} -j DROP"),
                );
            }
            if let (false, Some(pc)) = (egress, policy_chain.as_ref()) {
                if iface == target {
                    let start = "-m comment --comment \"Start of policies\"";
                    b.rule(chain, "", &format!("{start} {}", clear(MARK_PASS)));
                    b.rule(chain, "", &format!("{} -j {pc}", is_clear(MARK_PASS)));
                    let ret = "-m comment --comment \"Return if policy accepted\"";
                    b.rule(
                        chain,
                        "",
                        &format!("{ret} {} -j RETURN", is_set(MARK_ACCEPT)),
                    );
                    let drop = "-m comment --comment \"Drop if no policies passed packet\"";
                    b.rule(
                        chain,
                        "",
                        &format!("{drop} {} -j DROP", is_clear(MARK_PASS)),
                    );
                }
            }
            b.rule(chain, "", &format!("-j {profile}"));
            let ret = "-m comment --comment \"Return if profile accepted\"";
            b.rule(
                chain,
                "",
                &format!("{ret} {} -j RETURN", is_set(MARK_ACCEPT)),
            );
            let drop = "-m comment --comment \"Drop if no profiles matched\"";
            b.rule(chain, "", &format!("{drop} -j DROP"));
        }
        if iface == target {
            target_chain = tw.clone();
        }
        names.extend([fw, tw]);
    }
    let unknown = "-m comment --comment \"Unknown interface\" -j DROP";
    b.rule("cali-from-wl-dispatch", "", unknown);
    b.rule("cali-to-wl-dispatch", "", unknown);

    // FORWARD: Felix inserts its jump first and appends the accept rules.
    b.rule("FORWARD", "", "-j cali-FORWARD");
    let accepted = "-m comment --comment \"Policy explicitly accepted packet.\"";
    b.rule(
        "FORWARD",
        "",
        &format!("{accepted} {} -j ACCEPT", is_set(MARK_ACCEPT)),
    );
    b.rule("FORWARD", "", &set(MARK_ACCEPT));

    let (forward, rest): (Vec<&Rule>, Vec<&Rule>) =
        b.rules.iter().partition(|r| r.chain == "FORWARD");
    let mut apply = String::from("*filter\n");
    let mut undo = String::from("*filter\n");
    for n in &names {
        apply.push_str(&format!(":{n} - [0:0]\n"));
    }
    for (i, r) in forward.iter().enumerate() {
        let op = if i == 0 { "-I FORWARD 1" } else { "-A FORWARD" };
        apply.push_str(&format!("{op} {}\n", r.spec));
        undo.push_str(&format!("-D FORWARD {}\n", r.spec));
    }
    for r in rest {
        apply.push_str(&format!("-A {} {}\n", r.chain, r.spec));
    }
    for n in &names {
        undo.push_str(&format!("-F {n}\n"));
    }
    for n in &names {
        undo.push_str(&format!("-X {n}\n"));
    }
    apply.push_str("COMMIT\n");
    undo.push_str("COMMIT\n");
    Chains {
        apply,
        undo,
        policy_chain,
        target_chain,
    }
}

/// Felix's `GetLengthLimitedID`: `prefix + suffix` if it fits a chain name, else `prefix +
/// "_" +` a hash of `suffix` filling the rest.
pub fn length_limited(prefix: &str, suffix: &str) -> String {
    let total = prefix.len() + suffix.len();
    if total > MAX_CHAIN_NAME || (total == MAX_CHAIN_NAME && suffix.starts_with('_')) {
        let n = MAX_CHAIN_NAME - 1 - prefix.len();
        format!("{prefix}_{}", hash_chars(suffix, n))
    } else {
        format!("{prefix}{suffix}")
    }
}

/// `n` base64url characters derived from `seed` (stable for a build).
fn hash_chars(seed: &str, n: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(n);
    let mut round = 0u64;
    while out.len() < n {
        let mut h = DefaultHasher::new();
        (seed, round).hash(&mut h);
        let mut bits = h.finish();
        for _ in 0..10 {
            if out.len() == n {
                break;
            }
            out.push(char::from(ALPHABET[(bits & 63) as usize]));
            bits >>= 6;
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            namespace: "default".into(),
            tier: "default".into(),
            name: "deny-8080".into(),
            deny_tcp_port: 8080,
        }
    }

    const W: [Workload<'static>; 2] = [
        Workload {
            iface: "cali55c37e3f5bd",
            namespace: "default",
        },
        Workload {
            iface: "cali0123456789a",
            namespace: "default",
        },
    ];

    #[test]
    fn chain_names_are_length_limited_like_felix() {
        assert_eq!(
            length_limited("cali-tw-", "cali55c37e3f5bd"),
            "cali-tw-cali55c37e3f5bd"
        );
        assert_eq!(
            length_limited("cali-pri-", "kns.default"),
            "cali-pri-kns.default"
        );
        let p = policy().chain();
        assert_eq!(p.len(), 28, "{p}");
        assert!(p.starts_with("cali-pi-_"), "{p}");
        assert!(p[9..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(p, policy().chain(), "stable");
        // Exactly 28 characters starting with the shortening mark: hashed, as Felix does.
        let odd = length_limited("cali-pi-", "_abcdefghijklmnopqrs");
        assert_ne!(odd, "cali-pi-_abcdefghijklmnopqrs");
        assert_eq!(odd.len(), 28);
    }

    #[test]
    fn the_policy_drops_in_its_own_chain_named_in_a_comment() {
        let c = chains(&W, W[0].iface, Some(&policy()), Some(4789));
        let pc = c.policy_chain.clone().expect("policy chain");
        let lines: Vec<&str> = c.apply.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(*lines.last().unwrap(), "COMMIT");
        let deny = lines
            .iter()
            .find(|l| l.starts_with(&format!("-A {pc} ")))
            .expect("a rule of the policy");
        assert!(
            deny.contains("-m comment --comment \"Policy default/default.deny-8080 ingress\""),
            "{deny}"
        );
        assert!(deny.starts_with(&format!("-A {pc} -p tcp -m comment --comment \"cali:")));
        assert!(
            deny.ends_with("-m multiport --dports 8080 -j DROP"),
            "{deny}"
        );
        // The target's tw chain jumps to it; the other workload's does not.
        let jumps = |chain: &str| {
            lines
                .iter()
                .any(|l| l.starts_with(&format!("-A {chain} ")) && l.ends_with(&format!("-j {pc}")))
        };
        assert!(jumps("cali-tw-cali55c37e3f5bd"));
        assert!(!jumps("cali-tw-cali0123456789a"));
        assert_eq!(c.target_chain, "cali-tw-cali55c37e3f5bd");
        // Every rule has a cali: hash of 16 characters, all different.
        let mut hashes: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A ") || l.starts_with("-I "))
            .map(|l| {
                let h = l.split("\"cali:").nth(1).expect("a cali: comment");
                &h[..h.find('"').unwrap()]
            })
            .collect();
        assert!(hashes.iter().all(|h| h.len() == 16), "{hashes:?}");
        let n = hashes.len();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), n, "hashes repeat");
        // Conntrack before policy, the dispatch by interface, the FORWARD jump first.
        let tw: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A cali-tw-cali55c37e3f5bd "))
            .collect();
        assert!(tw[0].ends_with("--ctstate RELATED,ESTABLISHED -j ACCEPT"));
        assert!(tw[1].ends_with("--ctstate INVALID -j DROP"));
        assert!(lines.iter().any(|l| l.starts_with(
            "-A cali-to-wl-dispatch -o cali55c37e3f5bd -m comment --comment \"cali:"
        ) && l.ends_with("-g cali-tw-cali55c37e3f5bd")));
        assert!(lines[1..]
            .iter()
            .find(|l| !l.starts_with(':'))
            .unwrap()
            .starts_with("-I FORWARD 1 -m comment"));
        assert!(c
            .apply
            .contains("Drop VXLAN encapped packets originating in workloads"));
    }

    #[test]
    fn undo_removes_every_chain_and_forward_rule_it_added() {
        let c = chains(&W, W[1].iface, None, None);
        assert_eq!(c.policy_chain, None);
        assert!(!c.apply.contains("cali-pi-"));
        assert!(!c.apply.contains("VXLAN"));
        let declared: Vec<&str> = c
            .apply
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(declared.len(), 9, "{declared:?}");
        for chain in &declared {
            assert!(c.undo.contains(&format!("-F {chain}\n")), "{chain}");
            assert!(c.undo.contains(&format!("-X {chain}\n")), "{chain}");
        }
        let added: Vec<String> = c
            .apply
            .lines()
            .filter_map(|l| {
                l.strip_prefix("-I FORWARD 1 ")
                    .or_else(|| l.strip_prefix("-A FORWARD "))
            })
            .map(|s| format!("-D FORWARD {s}"))
            .collect();
        assert_eq!(added.len(), 3);
        for d in &added {
            assert!(c.undo.lines().any(|l| l == d), "{d}");
        }
        // Flushes come before deletions (chains refer to each other).
        let last_flush = c.undo.rfind("\n-F ").unwrap();
        let first_delete = c.undo.find("\n-X ").unwrap();
        assert!(last_flush < first_delete);
    }
}
