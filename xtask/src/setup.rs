//! Prerequisites: installs what is missing and is quick when everything is there.
//!
//! - Debian packages: LLVM 22 (for bpf-linker), iproute2, nftables, iptables, ping, tcpdump,
//!   iperf3, bpftool, util-linux (taskset), prometheus (the server and `promtool` the metrics
//!   test scrapes and checks the tracer with), chromium and bsdutils (`script`) for the incident
//!   report's test (a headless browser opens the report; `script` gives a command a terminal),
//!   tshark for the pcap-ng test (its setuid question answered "no" through debconf first);
//!   ipset and conntrack for the lab with Services;
//! - rust-src for the nightly toolchain (the eBPF crate builds core with -Z build-std);
//! - bpf-linker built against LLVM 22 (`LLVM_PREFIX=/usr/lib/llvm-22`; without it, cargo finds
//!   an older llvm-config and fails with `unable to find library -lLLVM`).
//!
//! The VM lab (`vm`, for `cargo xtask test` and `cargo xtask vmlab`) also needs the Debian
//! packages `qemu-system-x86` (qemu 7.2, TCG is enough), `busybox-static` (the guests'
//! initramfs) and `kmod` (`depmod`/`modprobe`, on the host for the kernels' module lists and
//! in the guests, which run the host's files), an empty `/lib/modules` to mount the guest
//! kernel's modules over (a host without a kernel package has none), and the Debian kernel
//! packages of each series, unpacked into `target/vmlab/kernels` (see `lab::vm::kernel`;
//! nothing goes to `/boot`).

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// Debian packages and a file each one provides (checked before calling apt).
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libclang-22-dev", "/usr/lib/llvm-22/lib/libclang.so"),
    ("iproute2", "/usr/sbin/ip"),
    ("nftables", "/usr/sbin/nft"),
    ("iptables", "/usr/sbin/iptables"),
    ("iputils-ping", "/usr/bin/ping"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("iperf3", "/usr/bin/iperf3"),
    ("bpftool", "/usr/sbin/bpftool"),
    // taskset (the benchmark pins iperf3); part of every Debian base system, listed so that a
    // slimmer image still gets it.
    ("util-linux", "/usr/bin/taskset"),
    // The metrics test (tests/tests/metrics.rs) runs its own server on localhost and promtool.
    ("prometheus", "/usr/bin/promtool"),
    // The incident report's test opens the page in headless Chromium (tests/tests/report.rs)
    // and runs commands on a terminal with `script` to see their progress line.
    ("chromium", "/usr/bin/chromium"),
    ("bsdutils", "/usr/bin/script"),
    // The pcap-ng test (tests/tests/pcap.rs) opens the tracer's file with tshark. Its
    // wireshark-common asks whether non-root users may capture: answered "no" beforehand
    // (`debconf_preseed`), so the install never waits for an answer.
    ("tshark", "/usr/bin/tshark"),
    // The lab with Services (tests/src/services, the NAT faults): Felix's natOutgoing ipset,
    // and conntrack to forget or fill connections.
    ("ipset", "/usr/sbin/ipset"),
    ("conntrack", "/usr/sbin/conntrack"),
];

/// Answers to packages' install-time questions, set before `apt-get install` (one
/// `debconf-set-selections` line each).
const DEBCONF: &[&str] = &["wireshark-common wireshark-common/install-setuid boolean false"];

/// Debian packages of the VM lab, with a file each provides.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    // The `busybox` package has a dynamic /bin/busybox, which an initramfs cannot run.
    ("busybox-static", "/usr/share/doc/busybox-static"),
    ("kmod", "/usr/bin/kmod"),
];

pub fn run(quiet: bool) -> Result<()> {
    apt_install(PACKAGES)?;
    let has_src = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false);
    if !has_src {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        sh(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly (is the nightly toolchain installed? `rustup toolchain install nightly`)",
        )?;
    }

    if which("bpf-linker").is_none() {
        eprintln!("xtask: building bpf-linker against LLVM 22 (about a minute)");
        sh(
            Command::new("cargo")
                .args(["install", "bpf-linker@0.13.0", "--locked", "--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker@0.13.0 --locked --no-default-features --features llvm-22",
        )?;
    }

    ensure_tracefs();
    if !quiet {
        eprintln!("xtask: prerequisites present");
    }
    Ok(())
}

/// Installs the packages of `list` whose file is missing (one `apt-get install`).
fn apt_install(list: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = list
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing packages {}: run `sudo apt-get update && sudo apt-get install -y {}`",
                missing.join(", "),
                missing.join(" ")
            );
        }
        eprintln!("xtask: installing {}", missing.join(" "));
        sh(
            Command::new("apt-get").arg("update").arg("-q"),
            "apt-get update",
        )?;
        debconf_preseed()?;
        sh(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )?;
    }

    Ok(())
}

/// Sets the answers of [`DEBCONF`] (`debconf-set-selections`, part of every Debian system).
fn debconf_preseed() -> Result<()> {
    use std::io::Write;
    let mut child = Command::new("debconf-set-selections")
        .stdin(Stdio::piped())
        .spawn()
        .context("running debconf-set-selections")?;
    if let Some(mut stdin) = child.stdin.take() {
        for line in DEBCONF {
            writeln!(stdin, "{line}").context("writing to debconf-set-selections")?;
        }
    }
    let status = child.wait().context("running debconf-set-selections")?;
    if !status.success() {
        bail!("debconf-set-selections failed ({status}): the tshark install might ask a question");
    }
    Ok(())
}

/// What the VM lab needs (see the module notes), and the kernels of `series` in the cache
/// under `target_dir`. Quick when everything is there.
pub fn vm(series: &[lab::vm::Series], target_dir: &Path) -> Result<()> {
    apt_install(VM_PACKAGES)?;
    let modules = Path::new("/lib/modules");
    if !modules.exists() {
        std::fs::create_dir_all(modules)
            .context("create /lib/modules (the VM guests mount their kernel's modules over it)")?;
    }
    let cache = lab::vm::kernel::cache_dir(target_dir);
    for s in series {
        let k = lab::vm::kernel::fetch(*s, &cache)
            .with_context(|| format!("fetch the Debian kernel of series {s}"))?;
        eprintln!("xtask: kernel {s}: {}", k.release);
    }
    Ok(())
}

/// Tracepoints need tracefs; mount it if it is not (harmless when already mounted).
fn ensure_tracefs() {
    let mounted = Command::new("mountpoint")
        .args(["-q", "/sys/kernel/tracing"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted && is_root() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn which(bin: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut dirs: Vec<_> = std::env::split_paths(&path).collect();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}

/// Runs a command with inherited output; on failure, says which step failed.
pub fn sh(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// cargo-fuzz (for `cargo xtask fuzz`), installed once.
pub fn fuzz_prerequisites() -> Result<()> {
    if which("cargo-fuzz").is_none() {
        eprintln!("xtask: installing cargo-fuzz (about a minute)");
        sh(
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
            "cargo install cargo-fuzz",
        )?;
    }
    Ok(())
}
