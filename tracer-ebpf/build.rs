//! Linker arguments of the eBPF object, and a rebuild when bpf-linker changes (it is the
//! linker of this crate).
fn main() {
    // The flow filter stays a global function in BTF, verified once on its own (src/filter.rs).
    println!("cargo:rustc-link-arg-bins=--export=tracer_filter");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
