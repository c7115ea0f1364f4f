//! Ctrl-C / SIGTERM handling that works even if the pipeline is busy: the signals are blocked in
//! every thread and a dedicated thread waits for them with `sigwait`. The first one asks the
//! pipeline to stop (final drain, summary); a second one exits at once. Either way the kernel
//! closes our bpf link descriptors on exit, which detaches every program.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use anyhow::{bail, Result};

/// Set once SIGINT or SIGTERM arrived.
#[derive(Clone)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it spawns later) and
/// starts the waiting thread. Call it before any other thread is started.
pub fn install() -> Result<StopFlag> {
    // SAFETY: sigset manipulation on a zeroed, owned sigset_t; pthread_sigmask on this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!(
                "cannot block SIGINT/SIGTERM: {}",
                std::io::Error::last_os_error()
            );
        }
        set
    };
    let flag = StopFlag(Arc::new(AtomicBool::new(false)));
    let f = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: waiting on the set blocked above; `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            if f.0.swap(true, Ordering::Relaxed) {
                eprintln!("tracer: second signal, exiting now");
                std::process::exit(130);
            }
        })?;
    Ok(flag)
}
