//! The VM lab on real, separate kernels: Debian's 6.1 and 6.12 booted under qemu, one lab node
//! per guest. Needs the kernels in the cache (`cargo xtask test` fetches them; without them a
//! test fails saying `cargo xtask setup --vm`, it is never skipped) and qemu.
//!
//! The tests are serialized among themselves (one lock): guests are CPU-bound (TCG), and two
//! guests already use both cores of the project's machines. Every test's guests, hub and run
//! dir go with its `VmLab`, also when it fails; the tests check that nothing is left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lab::vm::{qemu_processes, runs_dir, Series, VmError, VmLab, VmSpec};
use lab::{Encap, LabSpec, Topology};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const T: Duration = Duration::from_secs(60);

fn spec(series: Series, prefix: &str, encap: Encap, with_lab: bool) -> VmSpec {
    let mut s = VmSpec::new(
        series,
        LabSpec {
            prefix: prefix.into(),
            nodes: 2,
            pods_per_node: 1,
            encap,
            services: None,
        },
    );
    s.lab_bin = with_lab.then(|| PathBuf::from(env!("CARGO_BIN_EXE_lab")));
    s
}

fn boot(spec: &VmSpec) -> VmLab {
    let started = Instant::now();
    let vm = VmLab::boot(spec).unwrap_or_else(|e| panic!("boot {}: {e}", spec.kernel));
    let boots: Vec<String> = vm
        .nodes()
        .iter()
        .map(|n| format!("{n} {:.1} s", vm.boot_time(n).unwrap().as_secs_f64()))
        .collect();
    eprintln!(
        "{} {}: up in {:.1} s (boot {})",
        spec.lab.prefix,
        vm.kernel().release,
        started.elapsed().as_secs_f64(),
        boots.join(", ")
    );
    vm
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cmd` on `node`, which must succeed; its stdout.
fn sh(vm: &VmLab, node: &str, cmd: &str) -> String {
    let out = vm
        .exec(node, cmd, T)
        .unwrap_or_else(|e| panic!("{node}: {e}"));
    assert!(
        out.status.success(),
        "{node}: `{cmd}` failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ping(vm: &VmLab, t: &Topology, from: &str, to: &str) {
    let (src, dst) = (t.pod(from).unwrap(), t.pod(to).unwrap());
    let out = sh(
        vm,
        &src.node,
        &format!(
            "ip netns exec {} ping -n -c 3 -i 0.3 -W 3 {}",
            src.netns, dst.ip
        ),
    );
    // `sh` asserted ping's success: at least one echo answered.
    assert!(
        out.contains(" received"),
        "{from} -> {to} ({}): {out}",
        dst.ip
    );
}

/// The lab in each guest: its own node, as `lab status --json` says, with the plan's devices.
fn check_nodes(vm: &VmLab, spec: &LabSpec) {
    let plan = spec.plan().unwrap();
    for (i, node) in plan.nodes.iter().enumerate() {
        // The guest's PATH has the lab binary, and its environment the lab's prefix.
        let json = sh(vm, &node.name, "lab status --json");
        let here = Topology::from_json(&json).unwrap();
        assert_eq!(here.local_node.as_deref(), Some(node.name.as_str()));
        assert_eq!(here.nodes, plan.nodes, "the whole plan, as on the host");
        // The node is the guest's root namespace, addressed by its lab name.
        let links = sh(
            vm,
            &node.name,
            &format!("ip -netns {} -o link show; ip netns list", node.netns),
        );
        let pod = &plan.pods_on(&node.name)[0];
        assert!(links.contains(&pod.cali), "{links}");
        assert!(links.contains(&pod.netns), "{links}");
        let addr = sh(vm, &node.name, "ip -o -4 addr show dev eth0");
        assert!(addr.contains(&format!("inet {}/24", node.ip)), "{addr}");
        let routes = sh(vm, &node.name, "ip route");
        let remote = &plan.nodes[1 - i];
        let expect = match spec.encap {
            Encap::Vxlan => format!(
                "{} via {} dev vxlan.calico onlink",
                remote.blocks[0],
                remote.vtep.as_ref().unwrap().ip
            ),
            Encap::Ipip => format!("{} via {} dev tunl0 onlink", remote.blocks[0], remote.ip),
            Encap::None => format!("{} via {} dev eth0", remote.blocks[0], remote.ip),
        };
        assert!(
            routes.contains(&expect),
            "{}: {expect} in\n{routes}",
            node.name
        );
        if spec.encap == Encap::Ipip {
            let tunl = sh(
                vm,
                &node.name,
                "ip -d -o link show tunl0; ip -o -4 addr show dev tunl0",
            );
            assert!(tunl.contains("mtu 1480") && tunl.contains(",UP"), "{tunl}");
            assert!(tunl.contains("ipip"), "{tunl}");
            let tip = node.ipip.as_ref().unwrap().ip;
            assert!(tunl.contains(&format!("inet {tip}/32")), "{tunl}");
            let pod_mtu = sh(
                vm,
                &node.name,
                &format!("ip -netns {} -o link show eth0", pod.netns),
            );
            assert!(pod_mtu.contains("mtu 1480"), "{pod_mtu}");
        }
    }
}

fn check_lab(vm: &VmLab, spec: &LabSpec) {
    check_nodes(vm, spec);
    let t = spec.plan().unwrap();
    ping(vm, &t, "n1p0", "n2p0");
    ping(vm, &t, "n2p0", "n1p0");
}

/// `lab down` in every guest leaves nothing of the lab in it.
fn lab_down_everywhere(vm: &VmLab, spec: &LabSpec) {
    let bin = env!("CARGO_BIN_EXE_lab");
    for node in vm.nodes() {
        sh(vm, node, &format!("{bin} down --prefix {}", spec.prefix));
        let left = sh(
            vm,
            node,
            "ip netns list; ip -o link show | grep -E 'cali|vxlan' ; ip -o -4 addr show dev eth0; \
             ip -o -4 addr show dev tunl0 2>/dev/null; ip route; true",
        );
        assert!(left.trim().is_empty(), "{node} after lab down:\n{left}");
    }
}

fn run_dir_gone(run: &Path) {
    assert!(!run.exists(), "run dir {} left", run.display());
    let left = qemu_processes(run);
    assert!(left.is_empty(), "qemu left: {left:?}");
}

/// Boot two guests of `series`, build the lab with `first` encapsulation, check, take it
/// down in the guests, build it again with `second`, check, and shut down.
fn both_encaps(series: Series, prefix: &str, first: Encap, second: Encap) {
    let _serial = serial();
    let started = Instant::now();
    let s = spec(series, prefix, first, true);
    let vm = boot(&s);
    let release = vm.kernel().release.clone();
    assert!(series.matches(&release), "{release} is not {series}");
    let mut boot_ids = Vec::new();
    for node in vm.nodes() {
        assert_eq!(vm.release(node).unwrap(), release);
        assert_eq!(
            sh(&vm, node, "uname -r").trim(),
            release,
            "{node}'s own kernel"
        );
        boot_ids.push(sh(&vm, node, "cat /proc/sys/kernel/random/boot_id"));
        let console = vm.console(node).unwrap();
        assert!(
            console.contains(&format!("vmlab-agent: {node} ready")),
            "{console}"
        );
    }
    boot_ids.dedup();
    assert_eq!(boot_ids.len(), 2, "each guest is a kernel of its own");
    check_lab(&vm, &s.lab);
    lab_down_everywhere(&vm, &s.lab);
    let mut again = s.lab.clone();
    again.encap = second;
    let bin = env!("CARGO_BIN_EXE_lab");
    for (i, node) in vm.nodes().into_iter().enumerate() {
        let args = lab::cli::up_node_args(&again, i + 1).join(" ");
        sh(&vm, node, &format!("{bin} {args}"));
    }
    check_lab(&vm, &again);
    let run = vm.run_dir().to_owned();
    let down = Instant::now();
    vm.shutdown().expect("the guests end when asked");
    eprintln!(
        "{prefix}: shut down in {:.1} s; {first} + {second} on {release} in {:.1} s",
        down.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    run_dir_gone(&run);
}

#[test]
fn debian_6_1_vxlan_then_ipip() {
    both_encaps(Series::V6_1, "vm-61", Encap::Vxlan, Encap::Ipip);
}

#[test]
fn debian_6_12_ipip_then_vxlan() {
    both_encaps(Series::V6_12, "vm-612", Encap::Ipip, Encap::Vxlan);
}

/// The command channel on bare guests: timeouts kill, dropped handles kill, the shared dir
/// is shared both ways, and everything is gone after drop.
#[test]
fn commands_timeouts_kills_and_the_shared_dir() {
    let _serial = serial();
    let vm = boot(&spec(Series::V6_12, "vm-ctl", Encap::Vxlan, false));
    let run = vm.run_dir().to_owned();
    let n1 = vm.nodes()[0].to_owned();

    let out: Output = vm.exec(&n1, "echo out; echo err >&2; exit 7", T).unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        ("out\n".into(), "err\n".into())
    );
    let env = sh(&vm, &n1, "echo $VMLAB_NODE $(hostname) $(id -u)");
    assert_eq!(env.trim(), format!("{n1} vm-ctl-node1 0"));

    let started = Instant::now();
    let err = vm
        .exec(&n1, "echo started; sleep 30", Duration::from_secs(2))
        .expect_err("sleep 30 cannot finish in 2 s");
    assert!(matches!(err, VmError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("started"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    {
        let bg = vm
            .spawn(&n1, "sleep 300 & echo $! > /tmp/bg.pid; wait")
            .unwrap();
        let start = Instant::now();
        while sh(&vm, &n1, "cat /tmp/bg.pid 2>/dev/null; true")
            .trim()
            .is_empty()
        {
            assert!(start.elapsed() < T, "background job never started");
        }
        assert!(!bg.finished());
    } // dropped: killed with its children
      // Gone, or a zombie not yet reaped by the agent (PID 1).
    let alive = sh(
        &vm,
        &n1,
        "s=$(cut -d' ' -f3 /proc/$(cat /tmp/bg.pid)/stat 2>/dev/null); \
         [ -n \"$s\" ] && [ \"$s\" != Z ] && echo alive; true",
    );
    assert!(alive.trim().is_empty(), "the dropped job's child survived");
    let waited = vm
        .spawn(&n1, "sleep 1; echo done")
        .unwrap()
        .wait(T)
        .unwrap();
    assert_eq!(text(&waited.stdout), "done\n");

    let shared = vm.shared_dir();
    std::fs::write(shared.join("from-host"), "host").unwrap();
    let got = sh(
        &vm,
        &n1,
        &format!(
            "cat {0}/from-host; echo guest > {0}/from-guest",
            shared.display()
        ),
    );
    assert_eq!(got, "host");
    assert_eq!(
        std::fs::read_to_string(shared.join("from-guest")).unwrap(),
        "guest\n"
    );
    assert!(matches!(
        vm.exec("node9", "true", T),
        Err(VmError::NoSuchNode { .. })
    ));
    drop(vm);
    run_dir_gone(&run);
}

/// A guest that cannot boot (here: init told to keep a host path that does not exist) ends
/// the boot with its console in the error, and leaves nothing; so does a boot timeout.
#[test]
fn failed_boots_report_the_console_and_leave_nothing() {
    let _serial = serial();
    let runs = runs_dir(&std::fs::canonicalize(lab::vm::default_target_dir()).unwrap());
    let before = list(&runs);
    let mut s = spec(Series::V6_12, "vm-fail", Encap::Vxlan, false);
    s.keep_visible = vec![PathBuf::from("/tmp/vmlab-no-such-dir/x")];
    let err = VmLab::boot(&s)
        .err()
        .expect("init cannot keep a missing path");
    let msg = err.to_string();
    assert!(matches!(err, VmError::Boot { .. }), "{msg}");
    assert!(msg.contains("qemu exited"), "{msg}");
    assert!(
        msg.contains("vmlab-init: keep /tmp/vmlab-no-such-dir/x"),
        "{msg}"
    );

    let mut s = spec(Series::V6_12, "vm-slow", Encap::Vxlan, false);
    s.boot_timeout = Duration::from_secs(1);
    let err = VmLab::boot(&s)
        .err()
        .expect("no guest boots in 1 s under TCG");
    assert!(err.to_string().contains("no agent after 1 s"), "{err}");
    assert!(err.to_string().contains("--- console of node1"), "{err}");
    assert_eq!(list(&runs), before, "run dirs left behind");
    for prefix in ["vm-fail-", "vm-slow-"] {
        let left = qemu_processes(&runs.join(prefix));
        assert!(left.is_empty(), "qemu of {prefix}* left: {left:?}");
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A driver killed with SIGKILL leaves no qemu (the death signal), and its run dir is
/// removed by the next clean-up.
#[test]
fn killed_driver_leaves_no_qemu() {
    let _serial = serial();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args([
            "vm", "up", "--kernel", "6.12", "--no-lab", "--prefix", "vm-kill",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start `lab vm up`");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Reap(child);
    let mut run = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(r) = line.strip_prefix("vmlab: up: run dir ") {
            run = Some(PathBuf::from(r));
            break;
        }
    }
    let run = run.expect("`lab vm up` never said it was up");
    let pids = qemu_processes(&run);
    assert_eq!(pids.len(), 2, "two guests running: {pids:?}");
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGKILL) };
    let _ = child.0.wait();
    let start = Instant::now();
    while !qemu_processes(&run).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "qemu outlived its killed driver by 5 s: {:?}",
            qemu_processes(&run)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "qemu gone {:.2} s after the driver's SIGKILL",
        start.elapsed().as_secs_f64()
    );
    assert!(
        run.exists(),
        "a SIGKILLed driver cannot clean up its run dir"
    );
    let removed = lab::vm::clean_stale_runs(run.parent().unwrap());
    assert!(
        removed >= 1 && !run.exists(),
        "the stale run dir is removed"
    );
}
