//! The lab's command line (`up`, `down`, `break`, `heal`, `status`), shared by
//! `cargo xtask lab ...` on the host and the `lab` binary that VM guests run.
//!
//! Design note: one definition, so a node built in a guest (`lab up --node i ...`, with the
//! arguments from [`up_node_args`]) and a lab built on the host take the same flags, and
//! `lab status --json` means the same everywhere. The binary adds `lab vm ...`
//! ([`crate::vm::cli`]), which xtask offers as `cargo xtask vmlab ...`.

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};

use crate::{Encap, Lab, LabSpec};

/// Environment variable that gives `--prefix` its default (set in VM lab guests to their
/// lab's prefix, so `lab status` there needs no flag).
pub const PREFIX_ENV: &str = "TRACER_LAB_PREFIX";

/// `--encap` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EncapArg {
    /// `vxlan.calico` tunnels (Calico VXLAN mode).
    Vxlan,
    /// `tunl0` IP-in-IP (Calico `ipipMode: Always`; needs the kernel's `ipip`).
    Ipip,
    /// Native routing (what BGP would program).
    None,
}

impl From<EncapArg> for Encap {
    fn from(e: EncapArg) -> Encap {
        match e {
            EncapArg::Vxlan => Encap::Vxlan,
            EncapArg::Ipip => Encap::Ipip,
            EncapArg::None => Encap::None,
        }
    }
}

impl From<Encap> for EncapArg {
    fn from(e: Encap) -> EncapArg {
        match e {
            Encap::Vxlan => EncapArg::Vxlan,
            Encap::Ipip => EncapArg::Ipip,
            Encap::None => EncapArg::None,
        }
    }
}

/// The lab's subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCmd {
    /// Create the lab (left running; remove it with `lab down`).
    Up {
        #[arg(long, value_enum, default_value = "vxlan")]
        encap: EncapArg,
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        #[arg(long, default_value_t = 1)]
        pods_per_node: usize,
        #[arg(long, env = PREFIX_ENV, default_value = "tlab")]
        prefix: String,
        /// Build only node N (1-based) of the lab, on this machine: its network namespace
        /// becomes the node, `eth0` its uplink (one node per VM guest).
        #[arg(long)]
        node: Option<usize>,
        /// Kubernetes Services as kube-proxy (iptables mode) and Calico program them: a DNS
        /// Service and its responder pod, a ClusterIP and a NodePort Service, natOutgoing,
        /// and a machine outside the cluster (`lab status` lists them).
        #[arg(long)]
        services: bool,
        /// The Service CIDR (with --services).
        #[arg(long, requires = "services", default_value_t = crate::services::DEFAULT_SERVICE_CIDR)]
        service_cidr: crate::Cidr,
    },
    /// Remove every namespace of the lab (also after a half-finished `up`).
    Down {
        #[arg(long, env = PREFIX_ENV, default_value = "tlab")]
        prefix: String,
    },
    /// Break the running lab the way Calico clusters break (see `lab break --help`).
    Break {
        // The help lists the faults of the catalogue.
        #[arg(help = crate::Fault::names())]
        fault: String,
        #[arg(long, env = PREFIX_ENV, default_value = "tlab")]
        prefix: String,
    },
    /// Undo a fault (or every active fault without an argument).
    Heal {
        fault: Option<String>,
        #[arg(long, env = PREFIX_ENV, default_value = "tlab")]
        prefix: String,
    },
    /// Print this machine's CLOCK_MONOTONIC and CLOCK_REALTIME in ns (`<mono> <realtime>`):
    /// an independent reading of a VM guest's clock for the tests of the cross-machine merge.
    /// With `--serve DIR`: answer every request written to `DIR/req` (a number) with
    /// `<number> <mono>` in `DIR/resp`, polling every 100 µs, until `DIR/stop` exists.
    Clock {
        #[arg(long, value_name = "DIR")]
        serve: Option<std::path::PathBuf>,
    },
    /// Run a lab pod's servers (started by `lab up --services`; not for direct use).
    #[command(hide = true)]
    Serve(crate::services::ServeArgs),
    /// Print the lab's topology.
    Status {
        #[arg(long)]
        json: bool,
        #[arg(long, env = PREFIX_ENV, default_value = "tlab")]
        prefix: String,
    },
}

/// The arguments of `lab` that build node `node` (1-based) of `spec` on the machine running
/// it.
pub fn up_node_args(spec: &LabSpec, node: usize) -> Vec<String> {
    vec![
        "up".into(),
        "--node".into(),
        node.to_string(),
        "--prefix".into(),
        spec.prefix.clone(),
        "--nodes".into(),
        spec.nodes.to_string(),
        "--pods-per-node".into(),
        spec.pods_per_node.to_string(),
        "--encap".into(),
        spec.encap.to_string(),
    ]
}

fn running_lab(prefix: &str) -> Result<crate::Topology> {
    crate::status(prefix)
        .context("reading lab state")?
        .with_context(|| format!("no lab '{prefix}' is up (start one with `cargo xtask lab up`)"))
}

/// Run one lab subcommand (messages on stderr, `status` on stdout).
pub fn run(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up {
            encap,
            nodes,
            pods_per_node,
            prefix,
            node,
            services,
            service_cidr,
        } => {
            let spec = LabSpec {
                prefix,
                nodes,
                pods_per_node,
                encap: encap.into(),
                services: services.then_some(crate::services::ServicesSpec { service_cidr }),
            };
            let started = std::time::Instant::now();
            let lab = match node {
                Some(i) => Lab::up_node(&spec, i)?,
                None => Lab::up(&spec)?,
            };
            let topo = lab.keep();
            let what = match &topo.local_node {
                Some(n) => format!(
                    "node {n} of {} ({} pods here)",
                    topo.nodes.len(),
                    topo.pods_on(n).len()
                ),
                None => format!("{} nodes, {} pods", topo.nodes.len(), topo.pods.len()),
            };
            eprintln!(
                "lab '{}' up in {:.1} s: {what} ({}); `lab status` shows it",
                topo.prefix,
                started.elapsed().as_secs_f64(),
                spec.encap,
            );
            Ok(())
        }
        LabCmd::Down { prefix } => {
            let n = crate::down_prefix(&prefix)?;
            eprintln!("removed {n} namespaces of lab '{prefix}'");
            Ok(())
        }
        LabCmd::Break { fault, prefix } => {
            let topo = running_lab(&prefix)?;
            let fault: crate::Fault = fault.parse()?;
            let info = crate::break_lab(&topo, fault)?;
            eprintln!("{}: {}", fault.name(), info.description);
            let p = &info.probe;
            let from = crate::services::probe::sender_netns(&topo, &p.from_pod)?;
            eprintln!(
                "now failing: {} from {} to {}{}; try `tracer diagnose --from-netns {from} ...`",
                p.proto,
                match topo.pod(&p.from_pod) {
                    Some(_) => format!("pod {}", p.from_pod),
                    None => format!("the {} machine", p.from_pod),
                },
                p.to,
                p.port.map(|p| format!(":{p}")).unwrap_or_default(),
            );
            Ok(())
        }
        LabCmd::Heal { fault, prefix } => {
            let topo = running_lab(&prefix)?;
            match fault {
                Some(f) => crate::heal(&topo, f.parse()?)?,
                None => crate::heal_all(&topo)?,
            }
            eprintln!("healed");
            Ok(())
        }
        LabCmd::Clock { serve } => {
            let read = |id| {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: clock_gettime writes into a valid timespec.
                unsafe { libc::clock_gettime(id, &mut ts) };
                ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
            };
            let Some(dir) = serve else {
                println!(
                    "{} {}",
                    read(libc::CLOCK_MONOTONIC),
                    read(libc::CLOCK_REALTIME)
                );
                return Ok(());
            };
            let mut last = String::new();
            while !dir.join("stop").exists() {
                let req = std::fs::read_to_string(dir.join("req")).unwrap_or_default();
                if !req.is_empty() && req != last {
                    let mono = read(libc::CLOCK_MONOTONIC);
                    let tmp = dir.join("resp.tmp");
                    std::fs::write(&tmp, format!("{} {mono}", req.trim()))?;
                    std::fs::rename(&tmp, dir.join("resp"))?;
                    last = req;
                }
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            Ok(())
        }
        LabCmd::Serve(args) => crate::services::serve(&args),
        LabCmd::Status { json, prefix } => {
            let topo = running_lab(&prefix)?;
            if json {
                println!("{}", topo.to_json());
            } else {
                let here = topo
                    .local_node
                    .as_deref()
                    .map(|n| format!(", this machine is {n}"))
                    .unwrap_or_default();
                println!("lab {} ({}{here})", topo.prefix, topo.encap);
                for n in &topo.nodes {
                    println!(
                        "  node {:<8} netns {:<16} {} {}",
                        n.name, n.netns, n.uplink, n.ip
                    );
                }
                for p in &topo.pods {
                    println!(
                        "  pod  {:<8} netns {:<16} {} on {} via {}",
                        p.name, p.netns, p.ip, p.node, p.cali
                    );
                }
                if let Some(s) = &topo.services {
                    print!("{}", crate::services::describe(s));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: LabCmd,
    }

    #[test]
    fn up_node_args_parse_back_to_the_spec() {
        for encap in [Encap::Vxlan, Encap::Ipip, Encap::None] {
            let spec = LabSpec {
                prefix: "vm-x".into(),
                nodes: 3,
                pods_per_node: 4,
                encap,
                services: None,
            };
            let args = std::iter::once("lab".to_owned()).chain(up_node_args(&spec, 2));
            let cli = Cli::try_parse_from(args).unwrap();
            let LabCmd::Up {
                encap: e,
                nodes,
                pods_per_node,
                prefix,
                node,
                services,
                ..
            } = cli.cmd
            else {
                panic!("not up");
            };
            assert_eq!(
                LabSpec {
                    prefix,
                    nodes,
                    pods_per_node,
                    encap: e.into(),
                    services: None,
                },
                spec
            );
            assert_eq!(node, Some(2));
            assert!(!services);
            assert_eq!(EncapArg::from(encap), e);
        }
    }
}
