//! The encapsulation probes: the kernel functions where a packet gets its outer header
//! (`iptunnel_xmit`, for every IPv4 tunnel) and where it arrives in one (`vxlan_rcv`,
//! `ipip_rcv`), each reported as a hop of the trace with the inner identity and the outer
//! header bound together (see `tracer-ebpf/src/programs/encap_fn.rs`).
//!
//! fentry where the kernel allows it (vmlinux functions only: the receive functions live in
//! modules), else a kprobe; a module that is not loaded has nothing to probe (a VXLAN node has
//! no `ipip_rcv`). Kernels without either (lockdown refuses fentry, `CONFIG_KPROBES` is off)
//! get one warning and the tc hops on the tunnel devices and the uplink, as before. In a trace a
//! probe is a hop on the pseudo-interface `FUNC_IFINDEX_BASE + func`, named after the function
//! (kind `function`).

use std::time::Instant;

use anyhow::{anyhow, Result};
use aya::{
    programs::{FEntry, KProbe},
    Ebpf,
};
use tracer_common::{FUNC_IFINDEX_BASE, FUNC_IPIP_RCV, FUNC_IPTUNNEL_XMIT, FUNC_VXLAN_RCV};

use crate::{
    attach::log_verified,
    btf::Btf,
    topology::{Iface, IfaceKind},
};

/// (function id, kernel function, program suffix, fentry allowed) of every probe.
const FUNCS: [(u32, &str, &str, bool); 3] = [
    (FUNC_IPTUNNEL_XMIT, "iptunnel_xmit", "iptunnel_xmit", true),
    (FUNC_VXLAN_RCV, "vxlan_rcv", "vxlan_rcv", false),
    (FUNC_IPIP_RCV, "ipip_rcv", "ipip_rcv", false),
];

/// The probes attached: `(function id, name, how)`.
#[derive(Clone, Debug, Default)]
pub struct Attached {
    pub funcs: Vec<(u32, &'static str, &'static str)>,
}

impl Attached {
    /// The start-up line, when something is attached.
    pub fn line(&self) -> Option<String> {
        (!self.funcs.is_empty()).then(|| {
            let each: Vec<String> = self
                .funcs
                .iter()
                .map(|(_, f, how)| format!("{how}/{f}"))
                .collect();
            format!("encapsulation: {}", each.join(", "))
        })
    }

    /// The pseudo-interfaces the probes' hops are on (added to every traced node).
    pub fn ifaces(&self) -> Vec<Iface> {
        self.funcs
            .iter()
            .map(|&(id, name, _)| Iface {
                ifindex: FUNC_IFINDEX_BASE + id,
                name: name.to_string(),
                kind: IfaceKind::Function,
            })
            .collect()
    }
}

/// Whether kernel text symbol `name` exists now (a module function only once it is loaded).
fn has_symbol(name: &str) -> bool {
    use std::io::BufRead as _;
    // Line by line: the file is ~10 MB of text.
    std::fs::File::open("/proc/kallsyms").is_ok_and(|f| {
        std::io::BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.split_whitespace().nth(2).is_some_and(|s| s == name))
    })
}

/// Attaches what the kernel allows; warns once when nothing could be.
pub fn attach(ebpf: &mut Ebpf, aya_btf: &aya::Btf, btf: &Btf) -> Attached {
    let mut out = Attached::default();
    let (mut fentry_err, mut kprobe_err) = (None, None);
    let mut missing = Vec::new();
    for (id, func, prog, fentry_ok) in FUNCS {
        let in_vmlinux = btf.has_func(func);
        if !in_vmlinux && !has_symbol(func) {
            missing.push(func);
            continue;
        }
        if fentry_ok && in_vmlinux {
            let fentry = (|| -> Result<()> {
                let p: &mut FEntry = ebpf
                    .program_mut(&format!("fentry_{prog}"))
                    .ok_or_else(|| anyhow!("no program fentry_{prog}"))?
                    .try_into()?;
                let started = Instant::now();
                p.load(func, aya_btf)?;
                log_verified(&format!("fentry_{prog}"), started, p.info());
                p.attach()?;
                Ok(())
            })();
            match fentry {
                Ok(()) => {
                    out.funcs.push((id, func, "fentry"));
                    continue;
                }
                Err(e) => {
                    log::info!(
                        "fentry/{func} refused ({}): trying a kprobe",
                        first_line(&e)
                    );
                    fentry_err = fentry_err.or(Some(e));
                }
            }
        }
        let kprobe = (|| -> Result<()> {
            let p: &mut KProbe = ebpf
                .program_mut(&format!("kprobe_{prog}"))
                .ok_or_else(|| anyhow!("no program kprobe_{prog}"))?
                .try_into()?;
            let started = Instant::now();
            p.load()?;
            log_verified(&format!("kprobe_{prog}"), started, p.info());
            p.attach(func, 0)?;
            Ok(())
        })();
        match kprobe {
            Ok(()) => out.funcs.push((id, func, "kprobe")),
            Err(e) => kprobe_err = kprobe_err.or(Some(e)),
        }
    }
    let why = |e: Option<anyhow::Error>| e.map_or_else(|| "not tried".into(), |e| first_line(&e));
    if out.funcs.is_empty() {
        log::warn!(
            "encapsulation probes unavailable (fentry: {}; kprobe: {}); using the tc hops on \
             vxlan.calico/tunl0 and the uplink instead",
            why(fentry_err),
            why(kprobe_err)
        );
    } else if kprobe_err.is_some() {
        log::warn!(
            "some encapsulation probes did not attach (kprobe: {}); the others did",
            why(kprobe_err)
        );
    }
    if !missing.is_empty() {
        log::info!(
            "no {} in this kernel now (its module is not loaded): not probed",
            missing.join(", ")
        );
    }
    out
}

/// The first line of an error and its causes.
pub(crate) fn first_line(e: &anyhow::Error) -> String {
    let mut chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.dedup();
    chain
        .join(": ")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
