//! The firewall of a node with its counters: the nftables ruleset (`nft -a list ruleset`,
//! which also shows what iptables-nft writes, as Calico and kube-proxy do on current
//! distributions) and, where the legacy x_tables are in use, `iptables-legacy-save -c`.
//!
//! Both are read as text and parsed into chains (family, table, name, hook, policy) and rules
//! (handle or position, the rule's text, its verdict, its counter, its comment). Calico's
//! chains (`cali-pi-<policy>`, `cali-po-<policy>`, `cali-pri-<profile>`, `cali-pro-<profile>`)
//! and rule comments (`cali:<hash>`) are kept verbatim, so a verdict can name the policy a
//! dropping rule belongs to. The commands run as children of the calling thread, so they see
//! the namespace that thread has entered.

use std::process::Command;

use serde::{Deserialize, Serialize};

/// What a rule does with a packet it matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "target")]
pub enum RuleVerdict {
    Accept,
    Drop,
    Reject,
    Jump(String),
    Goto(String),
    Return,
    /// A statement that does not end the chain (a counter, a log, a mark, NAT...).
    Continue,
}

impl RuleVerdict {
    pub fn discards(&self) -> bool {
        matches!(self, RuleVerdict::Drop | RuleVerdict::Reject)
    }
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// nftables' handle (stable while the rule exists); `None` for legacy iptables.
    pub handle: Option<u64>,
    /// 1-based position in its chain (what `iptables -L --line-numbers` shows).
    pub position: usize,
    /// The rule as listed, without its counter and handle.
    pub text: String,
    pub verdict: RuleVerdict,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub comment: Option<String>,
    /// The rule as `iptables-nft-save` writes it (`-A CHAIN ...`), for a rule of a table
    /// iptables-nft manages: nft lists its comment and xt matches (`-m set`) as opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<String>,
}

/// One chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// `nft` or `iptables-legacy`.
    pub source: String,
    /// `ip`, `inet`, `bridge`, `netdev`, ... (`ip` for legacy iptables).
    pub family: String,
    pub table: String,
    pub name: String,
    /// The netfilter hook of a base chain (`prerouting`, `input`, `forward`, `output`,
    /// `postrouting`, `ingress`).
    pub hook: Option<String>,
    /// `accept` or `drop` for a base chain.
    pub policy: Option<String>,
    /// Packets that met the policy (legacy iptables counts them; nftables does not).
    pub policy_packets: Option<u64>,
    pub rules: Vec<Rule>,
}

impl Chain {
    /// `table ip filter chain FORWARD`.
    pub fn path(&self) -> String {
        format!("table {} {} chain {}", self.family, self.table, self.name)
    }

    /// Whether the chain can see IPv4 packets.
    pub fn sees_ipv4(&self) -> bool {
        matches!(self.family.as_str(), "ip" | "inet")
    }
}

/// The whole ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firewall {
    pub chains: Vec<Chain>,
    /// The ipsets (`ipset save`) where the kernel has any: Felix's `cali40masq-ipam-pools`
    /// says which pools natOutgoing covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<IpSet>,
}

/// One ipset and its members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpSet {
    pub name: String,
    pub members: Vec<String>,
}

impl Firewall {
    /// Every rule that drops or rejects, with its chain.
    pub fn set(&self, name: &str) -> Option<&IpSet> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// The chain `name` of `table` (family `ip`).
    pub fn chain(&self, table: &str, name: &str) -> Option<&Chain> {
        self.chains
            .iter()
            .find(|c| c.family == "ip" && c.table == table && c.name == name)
    }

    pub fn discarding_rules(&self) -> impl Iterator<Item = (&Chain, &Rule)> {
        self.chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c, r)))
            .filter(|(_, r)| r.verdict.discards())
    }
}

/// Reads the ruleset of the current namespace; the second value says what could not be read.
pub fn read() -> (Firewall, Vec<String>) {
    let mut fw = Firewall::default();
    let mut errors = Vec::new();
    match Command::new("nft").args(["-a", "list", "ruleset"]).output() {
        Ok(out) if out.status.success() => {
            fw.chains
                .extend(parse_nft(&String::from_utf8_lossy(&out.stdout)));
        }
        Ok(out) => errors.push(format!(
            "nft list ruleset failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => errors.push(format!(
            "nft: {e} (install nftables to read the firewall; rules are not read)"
        )),
    }
    // iptables-nft's own view of its tables: the comments and xt matches nft cannot show
    // (kube-proxy's Service names, Felix's ipset matches). Absent tool: nothing to add.
    if fw.chains.iter().any(|c| c.family == "ip") {
        if let Ok(out) = Command::new("iptables-nft-save").output() {
            if out.status.success() {
                merge_iptables_nft(
                    &mut fw.chains,
                    &parse_iptables_save(&String::from_utf8_lossy(&out.stdout)),
                );
            }
        }
    }
    // ipsets, where the module is loaded (listing them must not load it).
    if std::path::Path::new("/sys/module/ip_set").exists() {
        if let Ok(out) = Command::new("ipset").arg("save").output() {
            if out.status.success() {
                fw.sets = parse_ipset_save(&String::from_utf8_lossy(&out.stdout));
            }
        }
    }
    // Legacy x_tables: only when its tables exist (reading them must not load modules).
    let legacy = std::fs::read_to_string("/proc/net/ip_tables_names").unwrap_or_default();
    if !legacy.trim().is_empty() {
        match Command::new("iptables-legacy-save").arg("-c").output() {
            Ok(out) if out.status.success() => fw
                .chains
                .extend(parse_iptables_save(&String::from_utf8_lossy(&out.stdout))),
            Ok(out) => errors.push(format!(
                "iptables-legacy-save failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push(format!(
                "legacy iptables tables exist ({}) but iptables-legacy-save cannot run: {e}",
                legacy.split_whitespace().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    (fw, errors)
}

/// Parses `nft -a list ruleset`.
pub fn parse_nft(text: &str) -> Vec<Chain> {
    let mut chains = Vec::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<Chain> = None;
    // Depth of a block inside a table that is not a chain (set, map, flowtable...).
    let mut skip = 0usize;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if skip > 0 {
            skip += line.matches('{').count();
            skip = skip.saturating_sub(line.matches('}').count());
            continue;
        }
        if chain.is_none() {
            if let Some(rest) = line.strip_prefix("table ") {
                let mut w = rest.split_whitespace();
                if let (Some(f), Some(n)) = (w.next(), w.next()) {
                    table = Some((f.to_string(), n.to_string()));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("chain ") {
                if let Some((family, tname)) = &table {
                    chain = Some(Chain {
                        source: "nft".into(),
                        family: family.clone(),
                        table: tname.clone(),
                        name: rest
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .trim_matches('"')
                            .to_string(),
                        hook: None,
                        policy: None,
                        policy_packets: None,
                        rules: Vec::new(),
                    });
                }
                continue;
            }
            if line == "}" {
                table = None;
                continue;
            }
            // A set, map, flowtable... : skipped to its closing brace.
            skip = line
                .matches('{')
                .count()
                .saturating_sub(line.matches('}').count());
            continue;
        }
        let c = chain.as_mut().expect("inside a chain");
        if line == "}" {
            chains.push(chain.take().expect("a chain"));
            continue;
        }
        if line.starts_with("type ") && line.contains(" hook ") {
            let words: Vec<&str> = line
                .split(|ch: char| ch.is_whitespace() || ch == ';')
                .filter(|w| !w.is_empty())
                .collect();
            let after = |k: &str| {
                words
                    .iter()
                    .position(|w| *w == k)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| w.to_string())
            };
            c.hook = after("hook");
            c.policy = after("policy");
            continue;
        }
        let (body, handle) = match line.rsplit_once("# handle ") {
            Some((b, h)) => (b.trim(), h.trim().parse::<u64>().ok()),
            None => (line, None),
        };
        let position = c.rules.len() + 1;
        c.rules.push(parse_rule(body, handle, position));
    }
    chains
}

/// One rule's text: its counter, comment and verdict taken out.
fn parse_rule(body: &str, handle: Option<u64>, position: usize) -> Rule {
    let (body, comment) = match body.split_once("comment \"") {
        Some((before, after)) => {
            let (c, rest) = after.split_once('"').unwrap_or((after, ""));
            (
                format!("{} {}", before.trim(), rest.trim()),
                Some(c.to_string()),
            )
        }
        None => (body.to_string(), None),
    };
    let words: Vec<&str> = body.split_whitespace().collect();
    let mut kept = Vec::new();
    let (mut packets, mut bytes) = (None, None);
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            packets = words.get(i + 2).and_then(|w| w.parse().ok());
            bytes = words.get(i + 4).and_then(|w| w.parse().ok());
            i += 5;
            continue;
        }
        kept.push(words[i]);
        i += 1;
    }
    let verdict = nft_verdict(&kept);
    Rule {
        handle,
        position,
        text: kept.join(" "),
        verdict,
        packets,
        bytes,
        comment,
        iptables: None,
    }
}

fn nft_verdict(words: &[&str]) -> RuleVerdict {
    let n = words.len();
    if n >= 2 {
        match words[n - 2] {
            "jump" => return RuleVerdict::Jump(words[n - 1].trim_matches('"').to_string()),
            "goto" => return RuleVerdict::Goto(words[n - 1].trim_matches('"').to_string()),
            _ => {}
        }
    }
    if words.contains(&"reject") {
        return RuleVerdict::Reject;
    }
    match words.last().copied() {
        Some("drop") => RuleVerdict::Drop,
        Some("accept") => RuleVerdict::Accept,
        Some("return") => RuleVerdict::Return,
        _ => RuleVerdict::Continue,
    }
}

/// The hook of a built-in iptables chain.
fn builtin_hook(chain: &str) -> Option<&'static str> {
    Some(match chain {
        "PREROUTING" => "prerouting",
        "INPUT" => "input",
        "FORWARD" => "forward",
        "OUTPUT" => "output",
        "POSTROUTING" => "postrouting",
        _ => return None,
    })
}

/// Parses `iptables-save -c`.
pub fn parse_iptables_save(text: &str) -> Vec<Chain> {
    let mut chains: Vec<Chain> = Vec::new();
    let mut table = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            // `:FORWARD DROP [12:1008]` or `:cali-FORWARD - [0:0]`
            let mut w = decl.split_whitespace();
            let name = w.next().unwrap_or("").to_string();
            let policy = w.next().filter(|p| *p != "-").map(str::to_lowercase);
            let policy_packets = w.next().and_then(counter).map(|(p, _)| p);
            chains.push(Chain {
                source: "iptables-legacy".into(),
                family: "ip".into(),
                table: table.clone(),
                hook: builtin_hook(&name).map(str::to_string),
                name,
                policy,
                policy_packets,
                rules: Vec::new(),
            });
        } else if line.starts_with('[') || line.starts_with("-A ") {
            let (count, rest) = match line.strip_prefix('[') {
                Some(_) => {
                    let (c, r) = line.split_once(' ').unwrap_or((line, ""));
                    (counter(c), r.trim())
                }
                None => (None, line),
            };
            let Some(rest) = rest.strip_prefix("-A ") else {
                continue;
            };
            let (name, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(c) = chains
                .iter_mut()
                .rev()
                .find(|c| c.table == table && c.name == name)
            else {
                continue;
            };
            let words: Vec<&str> = spec.split_whitespace().collect();
            let target = words
                .iter()
                .position(|w| *w == "-j" || *w == "-g")
                .and_then(|i| Some((words[i], *words.get(i + 1)?)));
            let verdict = match target {
                Some((_, "ACCEPT")) => RuleVerdict::Accept,
                Some((_, "DROP")) => RuleVerdict::Drop,
                Some((_, "REJECT")) => RuleVerdict::Reject,
                Some((_, "RETURN")) => RuleVerdict::Return,
                Some(("-g", t)) => RuleVerdict::Goto(t.to_string()),
                Some((_, t)) if t.chars().any(|ch| ch.is_lowercase()) || t.contains('-') => {
                    RuleVerdict::Jump(t.to_string())
                }
                _ => RuleVerdict::Continue,
            };
            let comment = spec.split_once("--comment ").map(|(_, c)| {
                let c = c.trim_start();
                match c.strip_prefix('"') {
                    Some(q) => q.split('"').next().unwrap_or("").to_string(),
                    None => c.split_whitespace().next().unwrap_or("").to_string(),
                }
            });
            let position = c.rules.len() + 1;
            c.rules.push(Rule {
                handle: None,
                position,
                text: spec.to_string(),
                verdict,
                packets: count.map(|(p, _)| p),
                bytes: count.map(|(_, b)| b),
                comment,
                iptables: Some(format!("-A {name} {spec}")),
            });
        }
    }
    chains
}

/// Gives the nft rules of the `ip` tables iptables-nft manages the comment and text
/// `iptables-nft-save` shows for them (same chain, same position; a chain whose rule count
/// differs, changed between the two reads, is left alone).
pub fn merge_iptables_nft(nft: &mut [Chain], saved: &[Chain]) {
    for c in nft.iter_mut().filter(|c| c.family == "ip") {
        let Some(s) = saved
            .iter()
            .find(|s| s.table == c.table && s.name == c.name)
        else {
            continue;
        };
        if s.rules.len() != c.rules.len() {
            continue;
        }
        for (r, x) in c.rules.iter_mut().zip(&s.rules) {
            if r.comment.is_none() {
                r.comment.clone_from(&x.comment);
            }
            r.iptables.clone_from(&x.iptables);
        }
    }
}

/// Parses `ipset save` (`create NAME TYPE ...`, `add NAME MEMBER`).
pub fn parse_ipset_save(text: &str) -> Vec<IpSet> {
    let mut sets: Vec<IpSet> = Vec::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("create"), Some(name), _) => sets.push(IpSet {
                name: name.to_string(),
                members: Vec::new(),
            }),
            (Some("add"), Some(name), Some(member)) => {
                if let Some(s) = sets.iter_mut().find(|s| s.name == name) {
                    s.members.push(member.to_string());
                }
            }
            _ => {}
        }
    }
    sets
}

/// `[packets:bytes]`.
fn counter(s: &str) -> Option<(u64, u64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFT: &str = r#"table ip filter { # handle 3
	chain INPUT { # handle 1
		type filter hook input priority filter; policy accept;
		udp dport 4789 counter packets 7 bytes 700 drop # handle 4
	}
	chain FORWARD { # handle 2
		type filter hook forward priority filter; policy drop;
		counter packets 10 bytes 840 jump cali-FORWARD # handle 5
		oifname "cali+" counter packets 3 bytes 252 drop comment "cali:abc123" # handle 6
	}
	set blocked { # handle 7
		type ipv4_addr
		elements = { 10.0.0.1,
			     10.0.0.2 }
	}
	chain cali-pi-_default-deny { # handle 8
		ip saddr @blocked counter packets 0 bytes 0 reject with icmp port-unreachable # handle 9
	}
}
table inet other { # handle 4
	chain c { # handle 1
		ip protocol 4 drop # handle 2
	}
}
"#;

    #[test]
    fn parses_the_nft_listing() {
        let chains = parse_nft(NFT);
        let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["INPUT", "FORWARD", "cali-pi-_default-deny", "c"]);
        let input = &chains[0];
        assert_eq!(input.path(), "table ip filter chain INPUT");
        assert_eq!(input.hook.as_deref(), Some("input"));
        assert_eq!(input.policy.as_deref(), Some("accept"));
        let r = &input.rules[0];
        assert_eq!(
            (r.handle, r.position, r.packets, r.bytes),
            (Some(4), 1, Some(7), Some(700))
        );
        assert_eq!(r.text, "udp dport 4789 drop");
        assert_eq!(r.verdict, RuleVerdict::Drop);
        let fwd = &chains[1];
        assert_eq!(fwd.policy.as_deref(), Some("drop"));
        assert_eq!(
            fwd.rules[0].verdict,
            RuleVerdict::Jump("cali-FORWARD".into())
        );
        assert_eq!(fwd.rules[1].comment.as_deref(), Some("cali:abc123"));
        assert_eq!(fwd.rules[1].text, "oifname \"cali+\" drop");
        assert_eq!(chains[2].rules[0].verdict, RuleVerdict::Reject);
        assert_eq!(chains[2].hook, None);
        assert_eq!(
            (chains[3].family.as_str(), chains[3].rules[0].packets),
            ("inet", None)
        );
    }

    #[test]
    fn parses_iptables_save() {
        let text = "# Generated\n*filter\n:INPUT ACCEPT [5:300]\n:FORWARD DROP [2:168]\n\
                    :cali-FORWARD - [0:0]\n[9:756] -A FORWARD -j cali-FORWARD\n\
                    [2:168] -A cali-FORWARD -o cali+ -m comment --comment \"cali:xyz\" -j DROP\n\
                    COMMIT\n";
        let chains = parse_iptables_save(text);
        assert_eq!(chains.len(), 3);
        let fwd = &chains[1];
        assert_eq!(
            (
                fwd.hook.as_deref(),
                fwd.policy.as_deref(),
                fwd.policy_packets
            ),
            (Some("forward"), Some("drop"), Some(2))
        );
        assert_eq!(
            fwd.rules[0].verdict,
            RuleVerdict::Jump("cali-FORWARD".into())
        );
        let r = &chains[2].rules[0];
        assert_eq!((r.verdict.clone(), r.packets), (RuleVerdict::Drop, Some(2)));
        assert_eq!(r.comment.as_deref(), Some("cali:xyz"));
        assert_eq!(chains[2].hook, None);
    }

    #[test]
    fn garbage_gives_no_chains_and_no_panic() {
        for text in [
            "",
            "}}}}",
            "chain x {\n drop\n",
            "table ip t {\n chain c {\n",
            "*filter\n-A X -j\n[1:] -A",
        ] {
            let _ = parse_nft(text);
            let _ = parse_iptables_save(text);
        }
    }
}
