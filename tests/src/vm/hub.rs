//! The underlay: one L2 segment joining every guest's `eth0`, as a learning switch on a thread
//! of the driver process.
//!
//! Design note: each guest gets one end of a `socketpair(AF_UNIX, SOCK_DGRAM)` as its NIC's
//! backend (`-netdev dgram,local.type=fd`, qemu >= 7.2), one datagram per Ethernet frame; the
//! hub holds the other ends and forwards frames: to the port that last sent from the frame's
//! destination MAC, else (broadcast, multicast, unknown) to every other port. Measured
//! alternatives: `-netdev socket,udp=` is point-to-point (two guests only); `mcast=` on
//! loopback works (IGMP stays on `lo`), but every guest hears its own frames back, concurrent
//! runs share a group unless each picks its own, and it rides on the host's IP stack. Unix
//! socket pairs have no addresses or ports to collide, involve no network stack of the host
//! at all (nothing can leave the VMs), and die with the driver. A frame that a guest cannot
//! take at once (its socket buffer full) is dropped, as a switch would.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Largest frame (virtio-net without offloads: 1514 + headroom; anything fits).
const MAX_FRAME: usize = 65_536;
/// How often the hub thread checks whether it should stop.
const POLL_MS: i32 = 100;

/// Frame counters of a running hub.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Frames received from guests.
    pub frames: AtomicU64,
    /// Frames not delivered to a port (buffer full, guest gone).
    pub dropped: AtomicU64,
}

/// A running hub; stopped on drop.
pub struct Hub {
    stop: Arc<AtomicBool>,
    stats: Arc<HubStats>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    /// Start a hub with `ports` ports; returns it and the guests' ends, in port order.
    pub fn start(ports: usize) -> io::Result<(Hub, Vec<OwnedFd>)> {
        let mut hub_ends = Vec::with_capacity(ports);
        let mut guest_ends = Vec::with_capacity(ports);
        for _ in 0..ports {
            let (h, g) = UnixDatagram::pair()?;
            h.set_nonblocking(true)?;
            hub_ends.push(h);
            guest_ends.push(OwnedFd::from(g));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(HubStats::default());
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            thread::Builder::new()
                .name("vmlab-hub".into())
                .spawn(move || run(&hub_ends, &stop, &stats))?
        };
        Ok((
            Hub {
                stop,
                stats,
                thread: Some(thread),
            },
            guest_ends,
        ))
    }

    /// Its counters.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where a frame goes: `Some(port)` for a known unicast destination, `None` to flood.
pub fn destination(table: &HashMap<[u8; 6], usize>, frame: &[u8], from: usize) -> Option<usize> {
    let dst: [u8; 6] = frame.get(..6)?.try_into().ok()?;
    if dst[0] & 1 != 0 {
        return None; // broadcast or multicast
    }
    table.get(&dst).copied().filter(|&p| p != from)
}

fn run(ends: &[UnixDatagram], stop: &AtomicBool, stats: &HubStats) {
    let mut table: HashMap<[u8; 6], usize> = HashMap::new();
    let mut fds: Vec<libc::pollfd> = ends
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = vec![0u8; MAX_FRAME];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_MS) };
        if n <= 0 {
            continue;
        }
        for from in 0..fds.len() {
            if fds[from].revents & libc::POLLIN == 0 {
                continue;
            }
            // Drain what is queued on this port (non-blocking).
            while let Ok(len) = ends[from].recv(&mut buf) {
                stats.frames.fetch_add(1, Ordering::Relaxed);
                let frame = &buf[..len];
                if let Some(src) = frame.get(6..12).and_then(|s| <[u8; 6]>::try_from(s).ok()) {
                    if src[0] & 1 == 0 {
                        table.insert(src, from);
                    }
                }
                let targets: Vec<usize> = match destination(&table, frame, from) {
                    Some(p) => vec![p],
                    None => (0..ends.len()).filter(|&p| p != from).collect(),
                };
                for to in targets {
                    if ends[to].send(frame).is_err() {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    fn recv(s: &UnixDatagram) -> Option<Vec<u8>> {
        let mut b = [0u8; 2048];
        s.recv(&mut b).ok().map(|n| b[..n].to_vec())
    }

    #[test]
    fn floods_then_learns() {
        let (hub, ends) = Hub::start(3).unwrap();
        let g: Vec<UnixDatagram> = ends.into_iter().map(UnixDatagram::from).collect();
        for s in &g {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let (a, b) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        // Broadcast from port 0 reaches 1 and 2, not 0.
        let bc = frame([0xff; 6], a, b"who-has");
        g[0].send(&bc).unwrap();
        assert_eq!(recv(&g[1]).as_deref(), Some(&bc[..]));
        assert_eq!(recv(&g[2]).as_deref(), Some(&bc[..]));
        assert_eq!(recv(&g[0]), None);
        // The reply from port 1 to a (learned on port 0) goes to port 0 only.
        let reply = frame(a, b, b"is-at");
        g[1].send(&reply).unwrap();
        assert_eq!(recv(&g[0]).as_deref(), Some(&reply[..]));
        assert_eq!(recv(&g[2]), None);
        // Unknown unicast floods.
        let unknown = frame([2, 0, 0, 0, 0, 9], a, b"x");
        g[0].send(&unknown).unwrap();
        assert!(recv(&g[1]).is_some() && recv(&g[2]).is_some());
        assert_eq!(hub.stats().frames.load(Ordering::Relaxed), 3);
        drop(hub);
    }

    #[test]
    fn destination_rules() {
        let mut t = HashMap::new();
        t.insert([2, 0, 0, 0, 0, 1], 0);
        let f = |d: [u8; 6]| frame(d, [2, 0, 0, 0, 0, 7], b"");
        assert_eq!(destination(&t, &f([2, 0, 0, 0, 0, 1]), 1), Some(0));
        assert_eq!(destination(&t, &f([2, 0, 0, 0, 0, 1]), 0), None);
        assert_eq!(destination(&t, &f([0x01, 0, 0x5e, 0, 0, 1]), 1), None);
        assert_eq!(destination(&t, b"short", 1), None);
    }
}
