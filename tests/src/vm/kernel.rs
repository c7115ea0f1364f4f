//! Guest kernels: Debian's own kernel packages, unpacked into a cache under the target dir.
//!
//! Design note: a kernel is fetched with the distribution's tools only (`apt-get download`,
//! `dpkg -x`, `depmod -b`): nothing is installed into the host's `/boot` or `/lib/modules`,
//! and the package's signature checks are apt's. The cache holds one directory per release,
//! `target/vmlab/kernels/<release>/` (the package's `boot/` and `lib/modules/<release>/`,
//! with the `modules.dep*` files `depmod` wrote), marked complete by a file written last; a
//! release being unpacked lives in `<release>.partial/` and is removed on failure. A series
//! (`6.1`, `6.12`) resolves to a release through apt's metadata only when nothing of that
//! series is cached yet, so a second run needs neither apt nor the network; the newest
//! cached release of a series is the one used.
//!
//! Series and packages (Debian 12): `6.1` is what `linux-image-amd64` depends on (Debian 12's
//! default kernel, `linux-image-6.1.0-N-amd64`), else the newest such package; `6.12` is the
//! newest `linux-image-6.12.N+deb12-amd64` (from bookworm's updates). The `cloud` flavours are
//! unusable here: no 9p. Resolution and version order are pure functions of apt's output.

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::VmError;

/// The file that marks a cached release complete.
const COMPLETE: &str = ".vmlab-complete";

/// A kernel series the VM lab boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Series {
    /// Debian 12's default kernel, 6.1 LTS (`linux-image-amd64`).
    V6_1,
    /// 6.12 LTS from bookworm's updates (`linux-image-6.12.*+deb12-amd64`).
    V6_12,
}

impl Series {
    /// Every series, oldest first.
    pub const ALL: [Series; 2] = [Series::V6_1, Series::V6_12];

    /// Whether a Debian kernel release string (`uname -r`) belongs to this series.
    pub fn matches(self, release: &str) -> bool {
        let Some(rest) = release.strip_suffix("-amd64") else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match self {
            // 6.1.0-57-amd64
            Series::V6_1 => rest.strip_prefix("6.1.0-").is_some_and(digits),
            // 6.12.117+deb12-amd64
            Series::V6_12 => rest
                .strip_prefix("6.12.")
                .and_then(|r| r.strip_suffix("+deb12"))
                .is_some_and(digits),
        }
    }

    /// The release to fetch, from apt's metadata: for 6.1 what `linux-image-amd64` depends
    /// on, else (and for 6.12) the newest matching package.
    pub fn resolve(self) -> Result<String> {
        if self == Series::V6_1 {
            let out = apt_query(&["apt-cache", "depends", "linux-image-amd64"])?;
            if let Some(r) = release_from_depends(self, &out) {
                return Ok(r);
            }
        }
        let pattern = match self {
            Series::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            Series::V6_12 => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
        };
        let out = apt_query(&["apt-cache", "search", "--names-only", pattern])?;
        newest_in_search(self, &out).with_context(|| {
            format!(
                "no Debian package of kernel series {self} is known to apt (`apt-cache search \
                 --names-only '{pattern}'` found none; is this Debian 12 with bookworm-updates?)"
            )
        })
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        })
    }
}

impl FromStr for Series {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "6.1" => Ok(Series::V6_1),
            "6.12" => Ok(Series::V6_12),
            other => bail!("unknown kernel series `{other}` (expected 6.1 or 6.12)"),
        }
    }
}

/// An unpacked kernel in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// Its series.
    pub series: Series,
    /// `uname -r` of the kernel (`6.12.117+deb12-amd64`).
    pub release: String,
    /// The unpacked package: `boot/vmlinuz-<release>`, `lib/modules/<release>/`.
    pub root: PathBuf,
}

impl Kernel {
    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>` of the package (what the guest sees at `/lib/modules/<release>`).
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// The kernel's build configuration (`CONFIG_*=y|m`).
    pub fn config(&self) -> io::Result<String> {
        fs::read_to_string(self.root.join(format!("boot/config-{}", self.release)))
    }
}

/// The cache directory of kernels under a target dir: `<target>/vmlab/kernels`.
pub fn cache_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("vmlab/kernels")
}

/// The newest complete cached kernel of `series` in `cache`, or an error saying how to fetch
/// one (this never downloads).
pub fn cached(series: Series, cache: &Path) -> Result<Kernel, VmError> {
    let not_cached = || VmError::KernelNotCached {
        series: series.to_string(),
        dir: cache.to_owned(),
    };
    let entries = match fs::read_dir(cache) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_cached()),
        Err(e) => return Err(VmError::io(format!("read {}", cache.display()), e)),
    };
    let newest = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|r| series.matches(r) && cache.join(r).join(COMPLETE).exists())
        .max_by(|a, b| compare_versions(a, b))
        .ok_or_else(not_cached)?;
    Ok(Kernel {
        series,
        root: cache.join(&newest),
        release: newest,
    })
}

/// The cached kernel of `series`, fetched and unpacked first if none is cached (needs root,
/// apt and the network then). Says on stderr what it fetches.
pub fn fetch(series: Series, cache: &Path) -> Result<Kernel> {
    if let Ok(k) = cached(series, cache) {
        return Ok(k);
    }
    let release = match series.resolve() {
        Ok(r) => r,
        Err(_) => {
            // A fresh machine may have no package lists yet.
            run(
                Command::new("apt-get").args(["update", "-q"]),
                "apt-get update",
            )?;
            series.resolve()?
        }
    };
    let package = format!("linux-image-{release}");
    eprintln!(
        "vmlab: fetching kernel {release} ({package}, ~70-110 MB) into {}",
        cache.display()
    );
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let partial = cache.join(format!("{release}.partial"));
    let result = unpack(&package, &release, &partial);
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial);
    }
    result?;
    let root = cache.join(&release);
    let _ = fs::remove_dir_all(&root);
    fs::rename(&partial, &root)
        .with_context(|| format!("rename {} to {}", partial.display(), root.display()))?;
    Ok(Kernel {
        series,
        release,
        root,
    })
}

fn unpack(package: &str, release: &str, partial: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(partial);
    let download = partial.join(".download");
    fs::create_dir_all(&download).with_context(|| format!("create {}", download.display()))?;
    // As root, apt's download sandbox user cannot write here: download as root, quietly.
    run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(&download),
        &format!("apt-get download {package}"),
    )?;
    let deb = fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(partial),
        &format!("dpkg -x {}", deb.display()),
    )?;
    fs::remove_dir_all(&download).with_context(|| format!("remove {}", download.display()))?;
    run(
        Command::new("depmod").arg("-b").arg(partial).arg(release),
        &format!("depmod -b {} {release}", partial.display()),
    )?;
    let vmlinuz = partial.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.exists() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    fs::write(partial.join(COMPLETE), package).context("mark the kernel complete")?;
    Ok(())
}

fn apt_query(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The release named by a `Depends: linux-image-<release>` line of `apt-cache depends`.
pub fn release_from_depends(series: Series, apt_depends: &str) -> Option<String> {
    apt_depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .filter_map(|d| d.trim().strip_prefix("linux-image-"))
        .filter(|r| series.matches(r))
        .max_by(|a, b| compare_versions(a, b))
        .map(str::to_owned)
}

/// The newest release of `series` among `apt-cache search` lines (`<package> - <summary>`).
pub fn newest_in_search(series: Series, apt_search: &str) -> Option<String> {
    apt_search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| p.strip_prefix("linux-image-"))
        .filter(|r| series.matches(r))
        .max_by(|a, b| compare_versions(a, b))
        .map(str::to_owned)
}

/// Order release strings by their numbers (`6.12.9` < `6.12.117`, `6.1.0-9` < `6.1.0-57`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    nums(a).cmp(&nums(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_match_debian_releases() {
        assert!(Series::V6_1.matches("6.1.0-57-amd64"));
        assert!(!Series::V6_1.matches("6.1.0-57-cloud-amd64"));
        assert!(!Series::V6_1.matches("6.1.0-57-rt-amd64"));
        assert!(!Series::V6_1.matches("6.12.117+deb12-amd64"));
        assert!(Series::V6_12.matches("6.12.117+deb12-amd64"));
        assert!(!Series::V6_12.matches("6.12.117+deb12-cloud-amd64"));
        assert!(!Series::V6_12.matches("6.12.117+deb12-rt-amd64"));
        assert!(!Series::V6_12.matches("6.12.117+deb12-amd64-dbg"));
        assert!(!Series::V6_12.matches("6.1.0-57-amd64"));
        assert_eq!("6.12".parse::<Series>().unwrap(), Series::V6_12);
        assert_eq!(Series::V6_1.to_string(), "6.1");
        assert!("5.10".parse::<Series>().is_err());
    }

    #[test]
    fn resolve_from_apt_output() {
        let depends = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            release_from_depends(Series::V6_1, depends).as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(release_from_depends(Series::V6_12, depends), None);
        let search = "\
linux-image-6.12.115+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
linux-image-6.12.117+deb12-amd64-dbg - Debug symbols
linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12 for x86-64 cloud (signed)
linux-image-6.12.9+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
";
        assert_eq!(
            newest_in_search(Series::V6_12, search).as_deref(),
            Some("6.12.117+deb12-amd64")
        );
        let search61 = "linux-image-6.1.0-9-amd64 - x\nlinux-image-6.1.0-57-amd64 - x\n";
        assert_eq!(
            newest_in_search(Series::V6_1, search61).as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(newest_in_search(Series::V6_12, search61), None);
    }

    #[test]
    fn version_order() {
        assert_eq!(
            compare_versions("6.12.9+deb12-amd64", "6.12.117+deb12-amd64"),
            Ordering::Less
        );
        assert_eq!(
            compare_versions("6.1.0-57-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
    }

    #[test]
    fn cache_picks_the_newest_complete_release() {
        let dir = std::env::temp_dir().join(format!("vmlab-kcache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let err = cached(Series::V6_12, &dir).unwrap_err();
        assert!(err.to_string().contains("cargo xtask setup --vm"), "{err}");
        for (r, complete) in [
            ("6.12.9+deb12-amd64", true),
            ("6.12.117+deb12-amd64", true),
            ("6.12.200+deb12-amd64", false),
            ("6.1.0-57-amd64", true),
        ] {
            fs::create_dir_all(dir.join(r)).unwrap();
            if complete {
                fs::write(dir.join(r).join(COMPLETE), "x").unwrap();
            }
        }
        let k = cached(Series::V6_12, &dir).unwrap();
        assert_eq!(k.release, "6.12.117+deb12-amd64");
        assert_eq!(
            k.vmlinuz(),
            dir.join("6.12.117+deb12-amd64/boot/vmlinuz-6.12.117+deb12-amd64")
        );
        assert_eq!(
            cached(Series::V6_1, &dir).unwrap().release,
            "6.1.0-57-amd64"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
