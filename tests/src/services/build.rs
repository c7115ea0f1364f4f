//! Building the Services of a lab whose namespaces exist: the outside machine, each node's
//! ipsets and rules, the servers.
//!
//! Design note: runs after the lab's own build (`crate::build`), inside the same failure guard:
//! the outside namespace is pushed to the list of namespaces a failed `up` removes, and a
//! failure after the servers started stops them. Rules go in with one `iptables-nft-restore
//! --noflush` per node (the nf_tables backend, as kube-proxy and Felix on current
//! distributions), ipsets with one `ipset restore`; both read their script on stdin.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use super::serve::{spawn, stop_prefix, Server};
use super::{calico_nat, Services};
use crate::netns::{create_netns, run_batch, write_sysctls};
use crate::script;
use crate::topology::Topology;

/// Run `argv` in `netns` with `input` on its standard input; fail with its stderr.
pub(crate) fn run_with_input(netns: &str, argv: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run `{}` (installed by `cargo xtask setup`?)", argv[0]))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input = input.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    ensure!(
        out.status.success(),
        "`{}` in `{netns}` failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Build the Services of `t` (which must have them); `created` gets the namespaces made here.
pub fn start(t: &Topology, created: &mut Vec<String>) -> Result<()> {
    let s = t
        .services
        .as_ref()
        .context("the lab has no Services to build")?;
    outside(t, s, created).context("the outside machine")?;
    let ipsets = calico_nat::ipsets(s, &[t.pod_cidr]);
    let rules = calico_nat::restore_script(t, s);
    for n in &t.nodes {
        run_with_input(&n.netns, &["ipset", "restore"], &ipsets)
            .with_context(|| format!("Calico's ipsets on {}", n.name))?;
        run_with_input(&n.netns, &["iptables-nft-restore", "--noflush"], &rules)
            .with_context(|| format!("kube-proxy's and Calico's rules on {}", n.name))?;
    }
    if let Err(e) = servers(t, s) {
        let _ = stop_prefix(&t.prefix);
        return Err(e);
    }
    Ok(())
}

fn outside(t: &Topology, s: &Services, created: &mut Vec<String>) -> Result<()> {
    let o = &s.outside;
    let (made, result) = create_netns(std::slice::from_ref(&o.netns));
    created.extend(made);
    result?;
    write_sysctls(vec![(o.netns.clone(), script::leaf_sysctls())])?;
    let mtu = t.nodes.first().map_or(1500, |n| n.mtu);
    run_batch(
        "ip",
        &t.underlay.netns,
        &[
            format!(
                "link add {} mtu {mtu} type veth peer name {} netns {} mtu {mtu}",
                o.underlay_port, o.ifname, o.netns
            ),
            format!(
                "link set {} master {} up",
                o.underlay_port, t.underlay.bridge
            ),
        ],
    )?;
    run_batch(
        "ip",
        &o.netns,
        &[
            "link set lo up".to_owned(),
            format!(
                "addr add {}/{} dev {}",
                o.ip, t.underlay.subnet.len, o.ifname
            ),
            format!("link set {} up", o.ifname),
            format!("route add default via {} dev {}", o.gateway, o.ifname),
        ],
    )
}

fn servers(t: &Topology, s: &Services) -> Result<()> {
    let mut web_pods: Vec<&str> = s
        .list
        .iter()
        .filter(|svc| svc.id() != s.dns.service)
        .flat_map(|svc| svc.endpoints.iter().map(|e| e.pod.as_str()))
        .collect();
    web_pods.sort_unstable();
    web_pods.dedup();
    for name in web_pods {
        let pod = t.pod(name).with_context(|| format!("no pod {name}"))?;
        spawn(
            &t.prefix,
            &Server {
                netns: &pod.netns,
                label: &pod.name,
                web_port: Some(super::WEB_TARGET_PORT),
                dns: None,
            },
        )?;
    }
    let dns_pod = t
        .pod(&s.dns.pod)
        .with_context(|| format!("no pod {}", s.dns.pod))?;
    spawn(
        &t.prefix,
        &Server {
            netns: &dns_pod.netns,
            label: &dns_pod.name,
            web_port: None,
            dns: Some((&s.dns.name, s.dns.answer)),
        },
    )?;
    spawn(
        &t.prefix,
        &Server {
            netns: &s.outside.netns,
            label: "outside",
            web_port: Some(s.outside.port),
            dns: None,
        },
    )
}
