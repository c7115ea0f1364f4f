//! `cargo xtask demo`: the main job. Builds the tracer, brings up the built-in two-node lab (or,
//! with `--real`, traces the current host), sends a little cross-node traffic between lab pods
//! once the tracer is ready, and lets the tracer print the hop-by-hop traces and its summary.
//! The lab is removed at the end, also on failure.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use lab::{traffic, Lab, LabSpec};

use lab::cli::EncapArg;

use crate::{bench::format_cmd, build_tracer, setup};

#[derive(Args)]
pub struct DemoArgs {
    /// Lab encapsulation.
    #[arg(long, value_enum, default_value = "vxlan")]
    encap: EncapArg,
    /// Output format of the tracer (text or json).
    #[arg(long, default_value = "text")]
    output: String,
    // "Break the lab first (FAULTS) and send that fault's failing probe", FAULTS from the
    // lab's catalogue.
    #[arg(long, value_name = "FAULT", help = format!(
        "Break the lab first ({}) and send that fault's failing probe: the trace ends in a verdict",
        lab::Fault::names()
    ))]
    fault: Option<String>,
    /// Trace this host (a real node) instead of the lab; the arguments after `--` go to
    /// `tracer trace` (e.g. `-- --filter 'host 10.244.1.5' --duration 30s`).
    #[arg(long)]
    real: bool,
    #[arg(last = true)]
    tracer_args: Vec<String>,
}

/// Kills the tracer if the demo fails halfway (its links go with it).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: DemoArgs) -> Result<()> {
    setup::run(true)?;
    if !setup::is_root() {
        bail!("the demo attaches eBPF programs and builds network namespaces: run it as root (sudo -E cargo xtask demo)");
    }
    let bin = build_tracer()?;
    if args.real {
        let status = Command::new(&bin)
            .arg("trace")
            .args(&args.tracer_args)
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }

    let spec = LabSpec {
        prefix: "tdemo".into(),
        nodes: 2,
        pods_per_node: 2,
        encap: args.encap.into(),
        services: None,
    };
    // A previous demo killed halfway may have left its namespaces behind.
    lab::down_prefix(&spec.prefix)?;
    eprintln!(
        "demo: bringing up a {}-node lab ({})",
        spec.nodes, spec.encap
    );
    let lab = Lab::up(&spec)?;
    let topo = lab.topology().clone();
    let pod = |name: &str| {
        topo.pod(name)
            .cloned()
            .with_context(|| format!("lab has no pod {name}"))
    };
    let (a, b, c) = (pod("n1p0")?, pod("n1p1")?, pod("n2p0")?);
    let fault = args
        .fault
        .as_deref()
        .map(str::parse::<lab::Fault>)
        .transpose()?;
    let probe = match fault {
        Some(f) => {
            let info = lab::break_lab(&topo, f)?;
            eprintln!("demo: broke the lab: {}: {}", f.name(), info.description);
            Some(info.probe)
        }
        None => None,
    };
    let filter = match &probe {
        Some(p) => format!("host {} and host {}", a.ip, p.to),
        None => format!("host {}", a.ip),
    };

    let ready = std::env::temp_dir().join(format!("tracer-demo-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut cmd = Command::new(&bin);
    cmd.arg("trace");
    for n in &topo.nodes {
        cmd.args(["--netns", &n.netns]);
    }
    cmd.args(["--filter", &filter])
        .args(["--output", &args.output])
        .args(["--duration", "8s"])
        .arg("--ready-file")
        .arg(&ready)
        .args(&args.tracer_args)
        .stdin(Stdio::null());
    eprintln!("demo: {}", format_cmd(&cmd));
    let mut tracer = ChildGuard(Some(cmd.spawn().context("starting the tracer")?));
    wait_ready(&ready, &mut tracer)?;

    match &probe {
        Some(p) => {
            eprintln!(
                "demo: probe {} from {} to {}{} (expected to fail; the tracer waits for late drops)",
                p.proto,
                p.from_pod,
                p.to,
                p.port.map(|n| format!(":{n}")).unwrap_or_default()
            );
            let answered = p.run(&topo, Duration::from_secs(1))?;
            eprintln!(
                "demo: probe {}",
                if answered { "answered" } else { "not answered" }
            );
        }
        None => {
            eprintln!(
                "demo: ping {} ({}) -> {} ({}), across nodes",
                a.name, a.ip, c.name, c.ip
            );
            traffic::ping(&a.netns, c.ip, 2, true)?;
            eprintln!("demo: TCP {} -> {}:8080", a.name, c.ip);
            traffic::tcp_exchange(&c.netns, c.ip, 8080, &a.netns, b"hello over the overlay")?;
            eprintln!("demo: UDP {} -> {}:5353", a.name, c.ip);
            traffic::udp_exchange(&c.netns, c.ip, 5353, &a.netns, b"ping over udp")?;
            eprintln!("demo: ping {} -> {} ({}), same node", a.name, b.name, b.ip);
            traffic::ping(&a.netns, b.ip, 1, true)?;
        }
    }

    let status = tracer.0.take().map(|mut c| c.wait()).transpose()?;
    let _ = std::fs::remove_file(&ready);
    lab.down()?;
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("tracer exited with {s}"),
        None => Ok(()),
    }
}

fn wait_ready(path: &std::path::Path, tracer: &mut ChildGuard) -> Result<()> {
    let started = Instant::now();
    while !path.exists() {
        if let Some(child) = tracer.0.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("the tracer exited before it was ready ({status})");
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the tracer was not ready after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
