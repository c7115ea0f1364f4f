//! Builds the eBPF object (`tracer-ebpf`, nightly, bpfel-unknown-none, bpf-linker) with
//! aya-build and leaves it in OUT_DIR, where `include_bytes_aligned!` embeds it.
//!
//! `AYA_BUILD_SKIP=1` skips the eBPF build (fast unit-test builds without bpf-linker); the
//! binary then carries an empty object and refuses to trace with a clear message.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("tracer-ebpf");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if !skip {
        // Fail early with the command to run instead of an obscure linker error.
        if which_in_path("bpf-linker").is_none() {
            anyhow::bail!(
                "bpf-linker not found in PATH: run `cargo xtask setup` (or \
                 `LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --no-default-features \
                 --features llvm-22`)"
            );
        }
        println!("cargo:rerun-if-changed=../tracer-common/src");
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: "../tracer-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )?;
    if skip {
        fs::write(&object, [])?;
    }
    Ok(())
}

fn which_in_path(bin: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.is_file())
}
