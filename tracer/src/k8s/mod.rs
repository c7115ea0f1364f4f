//! Kubernetes names for addresses: which pod (namespace, name, node) or Service an address
//! belongs to, from a watched cache of the cluster's Pods and Services.
//!
//! Design notes:
//! - **Credentials as kubectl finds them.** `--kubeconfig PATH`, else `$KUBECONFIG` or
//!   `~/.kube/config`, else the pod's service account in a cluster (kube's `Config::infer`).
//!   A `--kubeconfig` that cannot be read is a one-line error before anything is attached;
//!   no credentials at all is one info line (hidden at the default log level) and nothing
//!   else changes; an API server that cannot be reached is one warning, and tracing goes on
//!   without names (the watchers retry with back-off and names appear once it answers).
//! - **Async at the edge only.** The tracer is synchronous; the kube client and its watchers
//!   run on a current-thread tokio runtime on a thread of their own (`watch`), started after
//!   the capture (whose start-up must be the only thread: a private mount namespace). They
//!   write one [`NameTable`] behind an `RwLock`; the pipeline reads it (a hash lookup per
//!   address under a read lock that writers hold for one event's update).
//! - **The table is pure** (`table`): it is fed the API's objects and watch events and is
//!   unit-tested without a cluster. A re-list (the watcher's `Init` .. `InitDone`) is built
//!   aside and swapped in whole, so a pod deleted while the watch was down does not linger.
//! - **Names when a trace is emitted.** The pipeline names a trace's addresses as it emits it
//!   ([`PodNames::name_trace`]), so a pod deleted and its address given to a new pod names the
//!   new pod from then on. `replay` and `report` name recorded traffic with the cluster's
//!   objects of now, not of the recording's time (README says so).

mod table;
#[cfg(test)]
mod tests;
mod watch;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use crate::model::{ObjectName, Trace};
pub use table::NameTable;

/// How long a command waits for the first complete list of pods and Services before it goes
/// on without them (an API server that refuses the connection ends the wait at once).
pub const FIRST_SYNC_WAIT: Duration = Duration::from_secs(5);

/// `--kubeconfig` and `--no-pod-names`, on the commands that show addresses.
#[derive(Args, Clone, Debug, Default)]
pub struct NamesArgs {
    /// Name the addresses of pods and Services (namespace/name) from the cluster this
    /// kubeconfig points at; without it $KUBECONFIG, ~/.kube/config, or in a pod its service
    /// account are used when present.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Do not ask any Kubernetes API server for names.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub no_pod_names: bool,
}

/// Where the watcher's credentials come from.
enum Source {
    /// `--kubeconfig`, read and parsed already.
    File(Box<kube::config::Kubeconfig>),
    /// The usual environment (kube's `Config::infer`).
    Infer,
}

impl NamesArgs {
    /// Reads an explicit `--kubeconfig` (a one-line error when it cannot be read), else looks
    /// whether the environment has credentials; `None` without credentials or with
    /// `--no-pod-names`. Call it before anything is attached, and [`Pending::start`] once the
    /// capture has started (see the module notes).
    pub fn prepare(&self) -> Result<Option<Pending>> {
        if self.no_pod_names {
            return Ok(None);
        }
        if let Some(path) = &self.kubeconfig {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                anyhow::anyhow!("--kubeconfig {}: {}", path.display(), one_line(&e))
            })?;
            return Ok(Some(Pending(Source::File(Box::new(kc)))));
        }
        let home_config = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".kube/config"))
            .is_some_and(|p| p.exists());
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        if std::env::var_os("KUBECONFIG").is_some() || home_config || in_cluster {
            Ok(Some(Pending(Source::Infer)))
        } else {
            log::info!(
                "no Kubernetes credentials (--kubeconfig, $KUBECONFIG, ~/.kube/config, a \
                 service account): addresses are shown without pod names"
            );
            Ok(None)
        }
    }

    /// `prepare` and `start`, then a wait (at most [`FIRST_SYNC_WAIT`]) for the first complete
    /// lists: for the commands that read recordings, whose traces would otherwise be emitted
    /// before any name is known.
    pub fn start_synced(&self) -> Result<Option<PodNames>> {
        let Some(pending) = self.prepare()? else {
            return Ok(None);
        };
        let names = pending.start()?;
        names.wait_synced(FIRST_SYNC_WAIT);
        Ok(Some(names))
    }
}

/// Credentials found, the watcher not started yet.
pub struct Pending(Source);

impl Pending {
    /// Starts the watcher thread.
    pub fn start(self) -> Result<PodNames> {
        PodNames::watch(self.0)
    }
}

/// The error and its causes on one line.
pub(crate) fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s.replace('\n', " ")
}

/// Where the watchers are: each kind's first list, and the first failure.
#[derive(Debug, Default)]
struct SyncState {
    pods: bool,
    services: bool,
    failed: bool,
}

/// What the watcher thread and the readers share.
#[derive(Default)]
struct Inner {
    table: RwLock<NameTable>,
    sync: Mutex<SyncState>,
    synced: Condvar,
}

/// Tells the watcher thread to stop when the last handle goes.
struct StopGuard(tokio::sync::watch::Sender<bool>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A handle on the names cache: cheap to clone, cheap to read from any thread.
#[derive(Clone)]
pub struct PodNames {
    inner: Arc<Inner>,
    _stop: Option<Arc<StopGuard>>,
}

impl std::fmt::Debug for PodNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = read(&self.inner.table);
        f.debug_struct("PodNames")
            .field("pods", &t.pods.len())
            .field("services", &t.services.len())
            .finish()
    }
}

fn read(t: &RwLock<NameTable>) -> std::sync::RwLockReadGuard<'_, NameTable> {
    t.read().unwrap_or_else(|e| e.into_inner())
}

impl PodNames {
    fn watch(source: Source) -> Result<PodNames> {
        let inner = Arc::new(Inner::default());
        let (tx, rx) = tokio::sync::watch::channel(false);
        watch::spawn(source, inner.clone(), rx)?;
        Ok(PodNames {
            inner,
            _stop: Some(Arc::new(StopGuard(tx))),
        })
    }

    /// A fixed table, watched by nobody (tests).
    #[cfg(test)]
    pub fn fixed(table: NameTable) -> PodNames {
        PodNames {
            inner: Arc::new(Inner {
                table: RwLock::new(table),
                ..Inner::default()
            }),
            _stop: None,
        }
    }

    /// The pod or Service `a` belongs to now.
    pub fn lookup(&self, a: Ipv4Addr) -> Option<Arc<ObjectName>> {
        read(&self.inner.table).lookup(a).cloned()
    }

    /// `default/web-7d9f` (a pod) or `service default/web` for an address that belongs to one.
    #[cfg(test)]
    pub fn describe(&self, a: Ipv4Addr) -> Option<String> {
        self.lookup(a).map(|n| n.describe())
    }

    /// The names of a trace's addresses (the packet's, then its NAT steps'), each once.
    pub fn name_trace(&self, t: &Trace) -> Vec<(Ipv4Addr, Arc<ObjectName>)> {
        let p = &t.packet;
        let mut addrs = vec![p.src, p.dst];
        for n in &t.nat {
            addrs.extend([n.from.0, n.from.2, n.to.0, n.to.2]);
        }
        let mut out: Vec<(Ipv4Addr, Arc<ObjectName>)> = Vec::new();
        for a in addrs {
            if out.iter().any(|(x, _)| *x == a) {
                continue;
            }
            if let Some(n) = self.lookup(a) {
                out.push((a, n));
            }
        }
        out
    }

    /// Whether the first lists arrived or the API server failed (a live command holds its
    /// traces back until then, for at most [`FIRST_SYNC_WAIT`]).
    pub fn settled(&self) -> bool {
        let s = self.inner.sync.lock().unwrap_or_else(|e| e.into_inner());
        (s.pods && s.services) || s.failed
    }

    /// Waits until pods and Services are both listed, the API server failed, or `timeout`.
    /// Returns whether both lists arrived.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut s = self.inner.sync.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.pods && s.services {
                return true;
            }
            let now = Instant::now();
            if s.failed || now >= deadline {
                return false;
            }
            s = self
                .inner
                .synced
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}
