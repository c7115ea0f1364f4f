//! Network namespaces: open one by name (`/run/netns/NAME`) or path, learn its inode, and run
//! code inside it on a dedicated thread (`setns(CLONE_NEWNET)` affects only the calling thread,
//! so the caller's namespace is never changed).

use std::{
    fs::File,
    os::fd::AsRawFd,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// An open handle on a network namespace.
#[derive(Debug)]
pub struct Netns {
    /// Display name: the name given, or the host name for the current namespace.
    pub name: String,
    file: File,
    /// Inode number: what the kernel programs report as `netns`.
    pub inode: u32,
}

impl Netns {
    /// The namespace of the calling process.
    pub fn current() -> Result<Netns> {
        let path = PathBuf::from("/proc/self/ns/net");
        let name = hostname().unwrap_or_else(|| "localhost".into());
        Netns::open_path(name, path)
    }

    /// A namespace given by name (looked up in /run/netns) or by path (anything with a '/').
    pub fn open(spec: &str) -> Result<Netns> {
        if spec.contains('/') {
            let path = PathBuf::from(spec);
            let name = path
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| spec.to_string());
            return Netns::open_path(name, path);
        }
        let path = Path::new("/run/netns").join(spec);
        if !path.exists() {
            bail!(
                "network namespace '{spec}' not found (no {}): list them with `ip netns list`",
                path.display()
            );
        }
        Netns::open_path(spec.to_string(), path)
    }

    pub fn open_path(name: String, path: PathBuf) -> Result<Netns> {
        let file = File::open(&path)
            .with_context(|| format!("cannot open network namespace {}", path.display()))?;
        let inode = file.metadata()?.ino() as u32;
        Ok(Netns { name, file, inode })
    }

    /// Another handle on the same namespace.
    pub fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            name: self.name.clone(),
            file: self.file.try_clone()?,
            inode: self.inode,
        })
    }

    /// A second handle on the namespace (for cleanup that must outlive the borrow).
    pub fn duplicate(&self) -> Result<File> {
        Ok(self.file.try_clone()?)
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let fd = self.file.as_raw_fd();
        let name = &self.name;
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `fd` is an open netns file owned by `self`, alive for this scope.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    let err = std::io::Error::last_os_error();
                    bail!("cannot enter network namespace {name}: {err} (are you root?)");
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("thread inside network namespace {name} panicked"))?
        })
    }
}

pub fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}
