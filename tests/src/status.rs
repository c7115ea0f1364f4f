//! Lab state on disk: `/run/tracer-lab/{prefix}.json` (the topology of a running lab, written
//! by `up`, removed by `down`), `{prefix}.faults.json` (active faults, see [`crate::faults`])
//! and the per-prefix lock file next to them.
//!
//! Design note: the network namespaces themselves are the source of truth for *whether*
//! something exists (so `down_prefix` works without any state file); the JSON file only adds
//! *what* was built, for `status`. `status` cross-checks the two and reports inconsistencies
//! (state without namespaces, namespaces without state) as errors telling the user what to
//! run. `/run` is a tmpfs, so a reboot clears both consistently. An exclusive `flock` on
//! `{prefix}.lock` serializes `up`/`down` of the same prefix across processes.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::netns::{list_netns, netns_exists};
use crate::spec::{is_lab_netns, validate_prefix};
use crate::topology::Topology;

/// Directory of the state and lock files.
pub const STATE_DIR: &str = "/run/tracer-lab";

/// `/run/tracer-lab/{prefix}.json`.
pub fn state_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.json"))
}

/// `/run/tracer-lab/{prefix}.faults.json`: the active faults of a lab and how to undo them
/// (written by [`crate::faults`], removed with the state file).
pub fn faults_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.faults.json"))
}

/// Names of the existing network namespaces that belong to lab `prefix` (sorted).
pub fn lab_netns(prefix: &str) -> Result<Vec<String>> {
    Ok(list_netns()?
        .into_iter()
        .filter(|n| is_lab_netns(prefix, n))
        .collect())
}

/// Atomically write the state file of a lab.
pub(crate) fn write_state(t: &Topology) -> Result<()> {
    fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
    let path = state_path(&t.prefix);
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, t.to_json()).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("rename {} to {}", tmp.display(), path.display()))
    })
}

/// The topology in the state file of lab `prefix`, `None` without one (no cross-check).
pub(crate) fn read_state(prefix: &str) -> Result<Option<Topology>> {
    let path = state_path(prefix);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(format!("read {}", path.display())),
    };
    Topology::from_json(&text)
        .map(Some)
        .with_context(|| format!("parse {}", path.display()))
}

/// Remove the state file of a lab and its faults file (missing is fine).
pub(crate) fn remove_state(prefix: &str) -> Result<()> {
    for path in [state_path(prefix), faults_path(prefix)] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("remove {}", path.display())),
        }
    }
    Ok(())
}

/// An exclusive lock on one prefix, released on drop.
pub(crate) struct PrefixLock(#[expect(dead_code, reason = "held only for its drop")] File);

/// Take the per-prefix lock, waiting for another `up`/`down` of the same prefix to finish.
pub(crate) fn lock_prefix(prefix: &str) -> Result<PrefixLock> {
    fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
    let path = Path::new(STATE_DIR).join(format!("{prefix}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    // SAFETY: `file` is open for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("flock {}", path.display()));
    }
    Ok(PrefixLock(file))
}

/// The topology of the running lab `prefix`, `None` if no lab with that prefix is up.
///
/// Errors if the state is inconsistent: a state file whose namespaces are (partly) gone, or
/// lab namespaces without a state file (an interrupted `up`); both tell the user to run
/// `cargo xtask lab down --prefix P`.
pub fn status(prefix: &str) -> Result<Option<Topology>> {
    validate_prefix(prefix)?;
    let path = state_path(prefix);
    let Some(topo) = read_state(prefix)? else {
        let stray = lab_netns(prefix)?;
        if stray.is_empty() {
            return Ok(None);
        }
        bail!(
            "{} network namespace(s) of lab `{prefix}` exist (e.g. `{}`) but there is no state \
             file {} (interrupted `up`, or an `up` still running?); run \
             `cargo xtask lab down --prefix {prefix}`",
            stray.len(),
            stray[0],
            path.display()
        );
    };
    let missing: Vec<&str> = topo
        .local_netns_names()
        .into_iter()
        .filter(|n| !netns_exists(n))
        .collect();
    if !missing.is_empty() {
        bail!(
            "lab `{prefix}` is broken: {} of its {} network namespaces are missing (e.g. `{}`); \
             run `cargo xtask lab down --prefix {prefix}`",
            missing.len(),
            topo.local_netns_names().len(),
            missing[0]
        );
    }
    Ok(Some(topo))
}
