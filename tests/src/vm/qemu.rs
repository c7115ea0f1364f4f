//! qemu processes: the command line of one guest, and starting it so that it cannot outlive
//! the process that started it.
//!
//! Design note: every qemu is forked by one process-wide spawner thread that lives until the
//! process exits, with `prctl(PR_SET_PDEATHSIG, SIGKILL)` set in the child before `exec`:
//! the kernel delivers the death signal when the *thread* that forked the child exits, so
//! forking from a test's thread (which ends with the test) would kill guests still in use,
//! while a long-lived thread ties them to the process, also when it is SIGKILLed. The child
//! then checks that its parent is still the one that forked it (the parent may have died
//! before the `prctl`), moves into its own process group (a terminal's Ctrl-C reaches the
//! driver, which shuts the guests down in order, not qemu directly) and keeps the underlay
//! socket open across `exec` (it is passed by number, `-netdev dgram,local.type=fd`). RAII
//! does the rest: a [`Qemu`] is killed and reaped on drop.
//!
//! The guest's serial console is qemu's stdout (`-serial stdio`); it and qemu's stderr are
//! copied by two threads into a bounded in-memory [`Console`], kept for error messages.
//!
//! Measured here (qemu 7.2 under TCG, no KVM): `-M microvm` hangs calibrating the TSC, so the
//! machine is q35 with `-nodefaults`; `-cpu max`; one vCPU per guest (the project's machines
//! have two cores); `-no-reboot`, so the guest's reboot (`sysrq b`, or a panic with
//! `panic=-1`) ends qemu.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};

use super::VmError;

/// The qemu binary (Debian's `qemu-system-x86`).
pub const QEMU: &str = "qemu-system-x86_64";
/// Most console bytes kept per guest (older output is dropped).
const CONSOLE_CAP: usize = 1 << 20;

/// Everything one guest's command line depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestConfig {
    /// Kernel image.
    pub vmlinuz: std::path::PathBuf,
    /// The initramfs built for the run.
    pub initramfs: std::path::PathBuf,
    /// The run dir (shared read-write).
    pub run_dir: std::path::PathBuf,
    /// Guest memory.
    pub memory_mib: u32,
    /// MAC address of the guest's `eth0`.
    pub mac: String,
    /// Descriptor number of the underlay socket in qemu (inherited).
    pub net_fd: RawFd,
    /// Extra kernel command line words (`vmlab_node=node1`, ...).
    pub cmdline: Vec<String>,
}

/// Escape a value for qemu's `key=value,...` option syntax (commas are doubled).
fn opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// The kernel command line.
pub fn kernel_cmdline(extra: &[String]) -> String {
    let mut words = vec![
        "console=ttyS0",
        "quiet",
        "panic=-1",
        // eth0, not enp0s2: the lab's uplink name.
        "net.ifnames=0",
    ];
    words.extend(extra.iter().map(String::as_str));
    words.join(" ")
}

/// qemu's arguments for one guest.
pub fn qemu_args(c: &GuestConfig) -> Vec<OsString> {
    let mut a: Vec<String> = [
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "1",
        "-M",
        "q35",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    a.extend([
        "-m".into(),
        c.memory_mib.to_string(),
        "-fsdev".into(),
        "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap".into(),
        "-device".into(),
        format!(
            "virtio-9p-pci,fsdev=root,mount_tag={}",
            super::initramfs::ROOT_TAG
        ),
        "-fsdev".into(),
        format!(
            "local,id=run,path={},security_model=none,multidevs=remap",
            opt(&c.run_dir)
        ),
        "-device".into(),
        format!(
            "virtio-9p-pci,fsdev=run,mount_tag={}",
            super::initramfs::RUN_TAG
        ),
        "-netdev".into(),
        format!("dgram,id=net0,local.type=fd,local.str={}", c.net_fd),
        "-device".into(),
        format!("virtio-net-pci,netdev=net0,mac={}", c.mac),
        "-kernel".into(),
        c.vmlinuz.to_string_lossy().into_owned(),
        "-initrd".into(),
        c.initramfs.to_string_lossy().into_owned(),
        "-append".into(),
        kernel_cmdline(&c.cmdline),
    ]);
    a.into_iter().map(OsString::from).collect()
}

/// A guest's console output (serial and qemu's own messages), bounded.
#[derive(Clone, Debug, Default)]
pub struct Console(Arc<Mutex<Vec<u8>>>);

impl Console {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(bytes);
        if buf.len() > CONSOLE_CAP {
            let excess = buf.len() - CONSOLE_CAP;
            buf.drain(..excess);
        }
    }

    /// Everything kept, as text (carriage returns removed).
    pub fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf).replace('\r', "")
    }

    /// The last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

fn pump(mut from: impl Read + Send + 'static, to: Console, name: String) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => to.push(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
        .expect("spawn console thread")
}

/// A running qemu; killed and reaped on drop.
pub struct Qemu {
    child: Child,
    console: Console,
    readers: Vec<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl Qemu {
    /// Start qemu for `config`, handing it `net` (the guest's end of the underlay) as
    /// descriptor `config.net_fd`.
    pub fn start(config: &GuestConfig, net: OwnedFd, name: &str) -> Result<Qemu, VmError> {
        if net.as_raw_fd() != config.net_fd {
            return Err(VmError::Host(format!(
                "underlay descriptor {} is not the configured {}",
                net.as_raw_fd(),
                config.net_fd
            )));
        }
        let mut cmd = Command::new(QEMU);
        cmd.args(qemu_args(config))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_tied(cmd, Some(net))
            .map_err(|e| VmError::io(format!("start {QEMU} (install qemu-system-x86)"), e))?;
        let console = Console::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(pump(out, console.clone(), format!("console:{name}")));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(pump(err, console.clone(), format!("qemu-err:{name}")));
        }
        Ok(Qemu {
            child,
            console,
            readers,
            exited: None,
        })
    }

    /// The console so far.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// qemu's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGKILL (if still running) and reap.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

struct SpawnRequest {
    cmd: Command,
    inherit: Option<OwnedFd>,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Start `cmd` from the process-wide spawner thread, with the death signal set (see the module
/// notes); `inherit` stays open across `exec` at its number.
pub fn spawn_tied(cmd: Command, inherit: Option<OwnedFd>) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("vmlab-spawner".into())
            .spawn(move || {
                for req in rx {
                    let _ = req.reply.send(spawn_here(req.cmd, req.inherit));
                }
            })
            .expect("spawn the vmlab spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnRequest {
            cmd,
            inherit,
            reply,
        })
        .map_err(|_| io::Error::other("the vmlab spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the vmlab spawner thread is gone"))?
}

fn spawn_here(mut cmd: Command, inherit: Option<OwnedFd>) -> io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let fd = inherit.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before the death signal was armed.
                libc::_exit(1);
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    // The child has its copy; the parent's is closed here.
    drop(inherit);
    child
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let c = GuestConfig {
            vmlinuz: "/k/boot/vmlinuz-6.12".into(),
            initramfs: "/r/initramfs.cpio".into(),
            run_dir: "/t/vmlab/runs/a,b".into(),
            memory_mib: 1024,
            mac: "52:54:00:76:6d:01".into(),
            net_fd: 7,
            cmdline: vec!["vmlab_node=node1".into()],
        };
        let a: Vec<String> = qemu_args(&c)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let after = |flag: &str| -> Vec<&str> {
            a.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(after("-smp"), ["1"]);
        assert_eq!(after("-m"), ["1024"]);
        assert_eq!(after("-M"), ["q35"]);
        assert!(a.iter().any(|x| x == "-no-reboot"));
        assert!(a.iter().any(|x| x == "-nodefaults"));
        assert_eq!(
            after("-netdev"),
            ["dgram,id=net0,local.type=fd,local.str=7"]
        );
        assert_eq!(
            after("-device")[2],
            "virtio-net-pci,netdev=net0,mac=52:54:00:76:6d:01"
        );
        let fsdev = after("-fsdev");
        assert!(fsdev[0].contains("path=/,") && fsdev[0].contains("readonly=on"));
        assert_eq!(
            fsdev[1],
            "local,id=run,path=/t/vmlab/runs/a,,b,security_model=none,multidevs=remap"
        );
        assert!(!fsdev[1].contains("readonly"));
        let append = after("-append")[0];
        assert!(append.contains("net.ifnames=0"));
        assert!(append.contains("console=ttyS0"));
        assert!(append.ends_with("vmlab_node=node1"));
        // Nothing that could reach a network outside the guests.
        assert!(!a.iter().any(|x| x.contains("user") || x.contains("tap")));
    }

    #[test]
    fn console_is_bounded_and_tails() {
        let c = Console::default();
        c.push(b"one\r\ntwo\nthree\n");
        assert_eq!(c.tail(2), "two\nthree");
        c.push(&vec![b'x'; CONSOLE_CAP + 10]);
        assert_eq!(c.0.lock().unwrap().len(), CONSOLE_CAP);
    }

    #[test]
    fn spawned_children_keep_the_descriptor_in_their_own_group() {
        // (That they die with this process is the VM tests' `killed_driver_leaves_no_qemu`.)
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let fd = OwnedFd::from(b);
        let n = fd.as_raw_fd();
        // bash: dash redirects only descriptors 0-9.
        let mut cmd = Command::new("bash");
        cmd.arg("-c").arg(format!(
            "[ -e /proc/self/fd/{n} ] && echo fd-open >&{n}; \
             cat /proc/self/stat | cut -d' ' -f5 >&{n}"
        ));
        let mut child = spawn_tied(cmd, Some(fd)).unwrap();
        assert!(child.wait().unwrap().success());
        let mut buf = [0u8; 64];
        let n1 = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n1], b"fd-open\n");
        let n2 = a.recv(&mut buf).unwrap();
        let pgid: u32 = std::str::from_utf8(&buf[..n2])
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(pgid, child.id(), "the child leads its own process group");
    }
}
