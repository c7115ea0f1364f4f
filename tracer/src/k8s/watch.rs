//! The watcher thread: a current-thread tokio runtime running kube's watchers of all Pods and
//! all Services (list, then watch from the list's resourceVersion, re-list when the watch
//! expires; back-off on errors), each event applied to the shared [`NameTable`].
//!
//! What the user sees of it: the first failure (credentials the client cannot use, an API
//! server that does not answer or refuses) is one warning; later ones are debug lines (the
//! watchers keep retrying); a list that arrives after a failure is one info line.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config, Resource};

use super::table::{self, Entry, KindTable, NameTable};
use super::{one_line, Inner, Source};

/// Which table a watcher feeds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Pods,
    Services,
}

impl Kind {
    fn table(self, t: &mut NameTable) -> &mut KindTable {
        match self {
            Kind::Pods => &mut t.pods,
            Kind::Services => &mut t.services,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Services => "services",
        }
    }
}

/// Whether a warning was printed (one per run).
static WARNED: AtomicBool = AtomicBool::new(false);

impl Inner {
    fn write(&self, f: impl FnOnce(&mut NameTable)) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        f(&mut t);
    }

    fn set_sync(&self, f: impl FnOnce(&mut super::SyncState)) {
        let mut s = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        self.synced.notify_all();
    }

    /// The first failure is a warning, the rest are debug lines.
    fn failed(&self, what: &str) {
        if WARNED.swap(true, Ordering::Relaxed) {
            log::debug!("pod names: {what}");
        } else {
            log::warn!(
                "pod names: {what}; tracing goes on without them (retrying in the background)"
            );
        }
        self.set_sync(|s| s.failed = true);
    }
}

/// Starts the watcher thread.
pub(super) fn spawn(
    source: Source,
    inner: Arc<Inner>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("k8s-names".into())
        .spawn(move || {
            block_stop_signals();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return inner.failed(&format!("cannot start the async runtime: {e}")),
            };
            rt.block_on(run(source, inner, stop));
        })
        .map(|_| ())
}

/// Ctrl-C and SIGTERM are the command's to handle (`signals`), never this thread's.
fn block_stop_signals() {
    // SAFETY: sigset manipulation on a zeroed, owned sigset_t; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

async fn run(source: Source, inner: Arc<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let config = match source {
        Source::File(kc) => {
            Config::from_custom_kubeconfig(*kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| one_line(&e))
        }
        Source::Infer => Config::infer().await.map_err(|e| one_line(&e)),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => return inner.failed(&format!("Kubernetes credentials: {e}")),
    };
    let url = config.cluster_url.to_string();
    let client = match Client::try_from(config) {
        Ok(c) => c,
        Err(e) => return inner.failed(&format!("Kubernetes client for {url}: {}", one_line(&e))),
    };
    let pods = follow(
        Api::<Pod>::all(client.clone()),
        Kind::Pods,
        table::pod_entry,
        &inner,
        &url,
    );
    let services = follow(
        Api::<Service>::all(client),
        Kind::Services,
        table::service_entry,
        &inner,
        &url,
    );
    tokio::select! {
        _ = futures_util::future::join(pods, services) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Applies one kind's watch events to the table, for as long as the stream runs.
async fn follow<K>(api: Api<K>, kind: Kind, entry: fn(&K) -> Entry, inner: &Inner, url: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut stream = pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    // A re-list is built aside and swapped in whole at its end.
    let mut staging: Option<KindTable> = None;
    let mut failing = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Init) => staging = Some(KindTable::default()),
            Ok(Event::InitApply(o)) => staging
                .get_or_insert_with(Default::default)
                .apply(entry(&o)),
            Ok(Event::InitDone) => {
                let t = staging.take().unwrap_or_default();
                let n = t.len();
                inner.write(|names| *kind.table(names) = t);
                if failing {
                    log::info!(
                        "pod names: {url} answers again ({n} {} with addresses)",
                        kind.plural()
                    );
                    failing = false;
                } else {
                    log::debug!("pod names: {n} {} with addresses from {url}", kind.plural());
                }
                inner.set_sync(|s| match kind {
                    Kind::Pods => s.pods = true,
                    Kind::Services => s.services = true,
                });
            }
            Ok(Event::Apply(o)) => {
                let e = entry(&o);
                inner.write(|names| kind.table(names).apply(e));
            }
            Ok(Event::Delete(o)) => {
                let uid = table::uid(o.meta());
                inner.write(|names| kind.table(names).remove(&uid));
            }
            Err(e) => {
                failing = true;
                inner.failed(&format!(
                    "the Kubernetes API server at {url} ({}): {}",
                    kind.plural(),
                    one_line(&e)
                ));
            }
        }
    }
}
