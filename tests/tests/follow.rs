//! Pods that come and go while a recorder runs, as on a real node: 200 pods created and
//! destroyed on a lab node, then traffic from a pod that appeared after start-up is traced hop
//! by hop (on replay, with its veth named), and the recorder holds no more file descriptors
//! (links, maps, sockets) and not much more memory than before the churn.

mod common;

use std::{path::PathBuf, time::Duration};

use common::{hop_path, require_root, run_tracer, Tracer};
use lab::{churn, traffic, Encap};

/// Open file descriptors and resident memory (kB) of a process.
fn footprint(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the recorder's fds")
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    (fds, rss)
}

#[test]
fn pods_that_come_and_go_are_followed() {
    require_root();
    let lab = common::lab_up("tfo", 1, Encap::Vxlan);
    let topo = lab.topology().clone();
    let file = std::env::temp_dir().join(format!("tracer-follow-{}.trec", std::process::id()));
    let _cleanup = RemoveOnDrop(file.clone());
    let mut args: Vec<String> = Vec::new();
    for n in &topo.nodes {
        args.extend(["--netns".into(), n.netns.clone()]);
    }
    args.extend([
        "--filter".into(),
        "net 10.244.0.0/16".into(),
        "--write".into(),
        file.display().to_string(),
    ]);
    let rec = Tracer::start_cmd("record", &args);
    std::thread::sleep(Duration::from_millis(300));
    let before = footprint(rec.pid());
    for round in 0..4 {
        let pods = churn::add_pods(&topo, "node1", 0, 50).expect("add 50 pods");
        std::thread::sleep(Duration::from_millis(1_200));
        assert_eq!(pods.pods().len(), 50, "round {round}");
        pods.remove().expect("remove the pods");
        std::thread::sleep(Duration::from_millis(500));
    }
    // A pod's namespace is destroyed by the kernel in the background (its veth goes some time
    // after `ip netns del`), and only then is the link released: wait for it, up to 15 s.
    let started = std::time::Instant::now();
    let mut after = footprint(rec.pid());
    while after.0 > before.0 && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(200));
        after = footprint(rec.pid());
    }
    eprintln!(
        "fds {} -> {}, rss {} -> {} kB (settled after {:?})",
        before.0,
        after.0,
        before.1,
        after.1,
        started.elapsed()
    );
    // A pod that appears now: followed within a second, then traced.
    let new = churn::add_pods(&topo, "node1", 0, 1).expect("add a pod");
    let pod = new.pods()[0].clone();
    std::thread::sleep(Duration::from_millis(1_000));
    let peer = topo.pods_on("node2")[0].clone();
    traffic::ping(&pod.netns, peer.ip, 3, true).expect("ping from the new pod");
    std::thread::sleep(Duration::from_millis(600));
    let out = rec.stop();
    assert!(out.status.success(), "record: {}", out.stderr);
    assert!(
        out.stdout.contains("\"lost_events\":0"),
        "the recorder lost events: {}",
        out.stdout
    );
    // No growth: every link of the 200 pods was closed again; memory within 8 MiB.
    assert!(
        after.0 <= before.0,
        "file descriptors grew from {} to {} over the churn",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + 8 * 1024,
        "resident memory grew from {} kB to {} kB over the churn",
        before.1,
        after.1
    );
    let replay = run_tracer(&["replay", file.to_str().expect("utf8"), "--output", "json"]);
    assert!(replay.status.success(), "replay: {}", replay.stderr);
    let from_new: Vec<_> = replay
        .traces()
        .into_iter()
        .filter(|t| t["packet"]["src"] == pod.ip.to_string())
        .collect();
    assert_eq!(from_new.len(), 3, "{}", replay.stdout);
    let node1 = &topo.nodes[0].netns;
    for t in &from_new {
        let path = hop_path(t);
        assert_eq!(t["outcome"], "delivered", "{t}");
        assert_eq!(path.len(), 6, "{path:?}");
        assert_eq!(
            path[0],
            (node1.clone(), pod.cali.clone(), "ingress".to_string()),
            "{path:?}"
        );
    }
    new.remove().expect("remove the pod");
    lab.down().expect("lab down");
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
