//! Named network namespaces (`/run/netns/NAME`, the `ip netns` convention): create, delete,
//! list, enter from a dedicated thread, run commands or `ip -batch` scripts inside.
//!
//! Design note: namespaces are created without forking: one dedicated thread loops
//! `unshare(CLONE_NEWNET)` + bind-mount of `/proc/thread-self/ns/net` onto `/run/netns/NAME`,
//! exactly what `ip netns add` does (including making `/run/netns` a shared mount), so
//! `ip netns list/exec/del` keep working on them. Namespaces are per thread, so anything that
//! `setns`es does it on a thread of its own that then exits; the calling thread never changes
//! namespace. Sysctls are written through `/proc/sys`, which resolves `net/*` against the
//! *calling thread's* network namespace. Everything else (links, addresses, routes) goes
//! through one `ip -netns NS -batch -` process per namespace.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread;

use anyhow::{bail, Context, Result};

use crate::script::Sysctl;

/// Where named network namespaces are bind-mounted.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `statfs` magic of nsfs (`NSFS_MAGIC`).
const NSFS_MAGIC: libc::__fsword_t = 0x6e73_6673;

/// `/run/netns/{name}`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes()).context("path contains a NUL byte")
}

fn os_err(what: impl FnOnce() -> String) -> anyhow::Error {
    anyhow::Error::new(io::Error::last_os_error()).context(what())
}

/// Move the current thread into the named network namespace.
pub(crate) fn enter(name: &str) -> Result<()> {
    let path = netns_path(name);
    let file = File::open(&path)
        .with_context(|| format!("network namespace `{name}` ({}) not found", path.display()))?;
    // SAFETY: `file` is an open descriptor for the duration of the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(os_err(|| format!("setns into `{name}`")));
    }
    Ok(())
}

/// Run `f` on a new thread that has entered network namespace `netns`, and return its result.
/// Sockets created inside `f` stay in that namespace for their whole life, so `f` may return
/// them to the caller. A panic in `f` is propagated.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let name = netns.to_owned();
    let handle = thread::Builder::new()
        .name(format!("netns:{name}"))
        .spawn(move || -> Result<T> {
            enter(&name)?;
            Ok(f())
        })
        .context("spawn netns thread")?;
    match handle.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Run `cmd` inside `netns` with `ip netns exec` and return its output, whatever its exit
/// status (check `output.status`). Fails only if the command could not be started.
pub fn exec_in(netns: &str, cmd: &[&str]) -> Result<Output> {
    if cmd.is_empty() {
        bail!("exec_in({netns}): empty command");
    }
    Command::new("ip")
        .args(["netns", "exec", netns])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run `ip netns exec {netns} {}`", cmd.join(" ")))
}

/// Inode number of the named network namespace (what `/proc/PID/ns/net` links to and what
/// `bpf_get_netns_cookie`-less tracers use to tell namespaces apart).
pub fn netns_inode(netns: &str) -> Result<u64> {
    let path = netns_path(netns);
    let meta = fs::metadata(&path)
        .with_context(|| format!("network namespace `{netns}` ({}) not found", path.display()))?;
    let c = cstr(&path)?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `sfs` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut sfs) } != 0 {
        return Err(os_err(|| format!("statfs {}", path.display())));
    }
    if sfs.f_type != NSFS_MAGIC {
        bail!(
            "{} exists but is not a mounted network namespace (stale file?)",
            path.display()
        );
    }
    Ok(meta.ino())
}

/// Names of every named network namespace (sorted).
pub fn list_netns() -> Result<Vec<String>> {
    let dir = match fs::read_dir(NETNS_RUN_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).context(format!("read {NETNS_RUN_DIR}")),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.with_context(|| format!("read {NETNS_RUN_DIR}"))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `/run/netns/{name}` exists.
pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Make `/run/netns` a shared mount point, like `ip netns add` does, so that namespace
/// mounts propagate to other mount namespaces and unmounting frees them everywhere.
fn prepare_run_dir() -> Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).with_context(|| format!("create {NETNS_RUN_DIR}"))?;
    let c = cstr(dir)?;
    let none = c"none";
    let mut made_mount = false;
    loop {
        // SAFETY: valid C strings; a null data pointer is allowed.
        let rc = unsafe {
            libc::mount(
                c"".as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || made_mount {
            return Err(err).context(format!("mount --make-rshared {NETNS_RUN_DIR}"));
        }
        // Not a mount point yet: bind it onto itself, then retry.
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(os_err(|| {
                format!("mount --rbind {NETNS_RUN_DIR} {NETNS_RUN_DIR}")
            }));
        }
        made_mount = true;
    }
    *done = true;
    Ok(())
}

/// Create the named network namespaces, in order, on one dedicated thread. Returns the names
/// whose `/run/netns` entry this call created (for cleanup, even on error) and the outcome.
/// Fails on the first name that already exists.
pub(crate) fn create_netns(names: &[String]) -> (Vec<String>, Result<()>) {
    if let Err(e) = prepare_run_dir() {
        return (Vec::new(), Err(e));
    }
    let names = names.to_vec();
    let worker = thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || {
            let mut created = Vec::with_capacity(names.len());
            let result = (|| -> Result<()> {
                let proc_ns = c"/proc/thread-self/ns/net";
                for name in &names {
                    let path = netns_path(name);
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o000)
                        .open(&path)
                        .with_context(|| format!("create {}", path.display()))?;
                    created.push(name.clone());
                    // SAFETY: plain syscall; affects only this thread.
                    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                        return Err(os_err(|| format!("unshare(CLONE_NEWNET) for `{name}`")));
                    }
                    let target = cstr(&path)?;
                    // SAFETY: valid C strings; a null data pointer is allowed.
                    let rc = unsafe {
                        libc::mount(
                            proc_ns.as_ptr(),
                            target.as_ptr(),
                            c"none".as_ptr(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        )
                    };
                    if rc != 0 {
                        return Err(os_err(|| {
                            format!("bind-mount netns onto {}", path.display())
                        }));
                    }
                }
                Ok(())
            })();
            (created, result)
        });
    match worker {
        Ok(h) => match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(e) => (Vec::new(), Err(e).context("spawn netns-create thread")),
    }
}

/// Give the calling process's network namespace the name `name` (`ip netns attach NAME $$`):
/// `/run/netns/{name}` becomes a bind mount of it. Deleting the name later only unmounts it.
/// Fails if the name exists.
pub(crate) fn attach_current_netns(name: &str) -> Result<()> {
    prepare_run_dir()?;
    let path = netns_path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let target = cstr(&path)?;
    // The process's namespace, not a thread's: every thread of this process but the
    // namespace helpers is in it.
    // SAFETY: valid C strings; a null data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            c"/proc/self/ns/net".as_ptr(),
            target.as_ptr(),
            c"none".as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = os_err(|| format!("bind-mount this namespace onto {}", path.display()));
        let _ = fs::remove_file(&path);
        return Err(err);
    }
    Ok(())
}

/// Delete a named network namespace (`ip netns del`): lazy unmount + unlink. The kernel frees
/// the namespace, and with it every veth end inside, once nothing else references it.
/// A missing namespace is not an error.
pub(crate) fn delete_netns(name: &str) -> Result<()> {
    let path = netns_path(name);
    let c = cstr(&path)?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let err = io::Error::last_os_error();
        // EINVAL: not a mount point (half-created); ENOENT: already gone.
        if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(err).context(format!("umount {}", path.display()));
        }
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("remove {}", path.display())),
    }
}

/// Write sysctls in each of several namespaces, entering them one after the other on a single
/// dedicated thread.
pub(crate) fn write_sysctls(jobs: Vec<(String, Vec<Sysctl>)>) -> Result<()> {
    let worker = thread::Builder::new()
        .name("netns-sysctl".into())
        .spawn(move || -> Result<()> {
            for (netns, sysctls) in &jobs {
                enter(netns)?;
                for s in sysctls {
                    let path = Path::new("/proc/sys").join(&s.path);
                    match fs::write(&path, s.value) {
                        Ok(()) => {}
                        Err(e) if s.optional && e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("write {} = {} in `{netns}`", path.display(), s.value)
                            })
                        }
                    }
                }
            }
            Ok(())
        })
        .context("spawn netns-sysctl thread")?;
    match worker.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Feed `lines` to `{tool} -netns {netns} -batch -` (tool is `ip` or `bridge`). On failure the
/// error names the namespace and quotes the failing line.
pub(crate) fn run_batch(tool: &str, netns: &str, lines: &[String]) -> Result<()> {
    batch(tool, netns, lines, false)
}

/// [`run_batch`] with `-force`: every line is tried, failing ones are skipped (and the first
/// failure is still reported).
pub(crate) fn run_batch_force(tool: &str, netns: &str, lines: &[String]) -> Result<()> {
    batch(tool, netns, lines, true)
}

fn batch(tool: &str, netns: &str, lines: &[String], force: bool) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut child = Command::new(tool)
        .args(force.then_some("-force"))
        .args(["-netns", netns, "-batch", "-"])
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run `{tool}` (is iproute2 installed?)"))?;
    let mut input = lines.join("\n");
    input.push('\n');
    let mut stdin = child.stdin.take().context("child stdin")?;
    let out = thread::scope(|s| {
        // A separate writer, so a chatty child can never deadlock against a full pipe. A write
        // error (EPIPE after the child stopped at a failing line) shows in the exit status.
        s.spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        child.wait_with_output()
    })
    .with_context(|| format!("wait for `{tool} -netns {netns} -batch -`"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed_line = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Command failed -:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| lines.get(n.wrapping_sub(1)));
    match failed_line {
        Some(line) => bail!(
            "`{tool} -netns {netns}`: `{line}` failed: {}",
            stderr.trim()
        ),
        None => bail!(
            "`{tool} -netns {netns} -batch -` failed ({}): {}",
            out.status,
            stderr.trim()
        ),
    }
}
