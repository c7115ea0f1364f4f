//! The machine a capture runs on: what identifies it among the machines of a cluster, and how
//! its CLOCK_MONOTONIC (the clock of every kernel timestamp) relates to its wall clock.
//!
//! A recording carries both, so that recordings of several machines can be merged: the machine
//! identity keys its namespaces apart from another machine's (namespace inodes collide across
//! machines: the initial one is the same number everywhere) and tells two recordings of one
//! kernel (one clock) from recordings of two; the clock samples give the starting point of the
//! offset between two machines' monotonic clocks (as good as their NTP), which the merge then
//! refines from the packets themselves.

use serde::{Deserialize, Serialize};

/// What identifies a machine (every field may be empty when the machine does not say).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Machine {
    pub hostname: String,
    /// `/etc/machine-id`: stable across reboots.
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`: one per boot, hence per CLOCK_MONOTONIC.
    pub boot_id: String,
    pub kernel: String,
    /// `/sys/devices/system/clocksource/clocksource0/current_clocksource` (`tsc`, `kvm-clock`).
    pub clocksource: String,
}

impl Machine {
    /// This machine.
    pub fn current() -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            hostname: crate::netns::hostname().unwrap_or_default(),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel: read("/proc/sys/kernel/osrelease"),
            clocksource: read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        }
    }

    /// Whether two captures ran on one kernel since one boot, hence with one CLOCK_MONOTONIC.
    /// Unknown (empty) boot ids never match.
    pub fn same_clock(&self, other: &Machine) -> bool {
        !self.boot_id.is_empty() && self.boot_id == other.boot_id
    }
}

/// CLOCK_MONOTONIC and the wall clocks read together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSample {
    pub mono_ns: u64,
    /// CLOCK_REALTIME, ns since the epoch.
    pub realtime_ns: u64,
    /// CLOCK_TAI (0 where the kernel does not keep it).
    pub tai_ns: u64,
    /// Half the time the readings took: how far apart the clocks may have been read.
    pub err_ns: u32,
}

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec; on error it is left at zero.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` uses.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

impl ClockSample {
    /// Reads the clocks as close together as possible: the monotonic reading between two of
    /// the wall clock, the wall clock taken as their midpoint (the tightest of three tries).
    pub fn now() -> ClockSample {
        (0..3)
            .map(|_| {
                let r1 = clock_ns(libc::CLOCK_REALTIME);
                let mono = monotonic_ns();
                let tai = clock_ns(libc::CLOCK_TAI);
                let r2 = clock_ns(libc::CLOCK_REALTIME);
                let half = r2.saturating_sub(r1) / 2;
                ClockSample {
                    mono_ns: mono,
                    realtime_ns: r1 + half,
                    tai_ns: tai,
                    err_ns: u32::try_from(half).unwrap_or(u32::MAX),
                }
            })
            .min_by_key(|s| s.err_ns)
            .unwrap_or_default()
    }

    /// `realtime − monotonic`: what to add to this machine's monotonic time to get its wall
    /// clock's time.
    pub fn wall_minus_mono(&self) -> i128 {
        i128::from(self.realtime_ns) - i128::from(self.mono_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_this_machine_are_consistent() {
        let a = ClockSample::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = ClockSample::now();
        assert!(b.mono_ns > a.mono_ns && b.realtime_ns > a.realtime_ns);
        // Both clocks advanced by the same ~20 ms (no step in between).
        let drift = (b.wall_minus_mono() - a.wall_minus_mono()).abs();
        assert!(
            drift < 1_000_000,
            "wall and monotonic moved apart by {drift} ns"
        );
        assert!(a.err_ns < 1_000_000, "{a:?}");
        let m = Machine::current();
        assert!(!m.boot_id.is_empty() && !m.kernel.is_empty(), "{m:?}");
        assert!(m.same_clock(&Machine::current()));
        assert!(!Machine::default().same_clock(&Machine::default()));
    }
}
