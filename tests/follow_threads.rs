//! Per-thread changes follow threads that start while their batch is active: a real python
//! child starts threads on cue (one of them pins itself), the batch is extended to them in
//! the journal, and a rollback restores every thread — the ones it started with, the ones
//! that inherited our values, and the one that had chosen its own CPU.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sutazai_top::host::processes::parse_stat;
use sutazai_top::host::{HostRoots, format_cpu_list, parse_cpu_list};
use sutazai_top::model::{Change, Knob};
use sutazai_top::optimizer::actuators::{HostActuators, plan_process};
use sutazai_top::optimizer::follow::follow_new_threads;
use sutazai_top::optimizer::master::Optimizer;

const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// Starts one extra thread; on the file "go" two more, one of which pins itself to CPU 1;
/// on "go2" one more.
const SCRIPT: &str = r#"
import os, sys, threading, time
cue_dir = sys.argv[1]
def wait_for(name):
    while not os.path.exists(os.path.join(cue_dir, name)):
        time.sleep(0.02)
def sleeper():
    time.sleep(120)
def own_cpu():
    os.sched_setaffinity(0, {1})
    time.sleep(120)
threading.Thread(target=sleeper, daemon=True).start()
wait_for("go")
threading.Thread(target=sleeper, daemon=True).start()
threading.Thread(target=own_cpu, daemon=True).start()
wait_for("go2")
threading.Thread(target=sleeper, daemon=True).start()
time.sleep(120)
"#;

struct Cued {
    child: Child,
    dir: tempfile::TempDir,
}

impl Cued {
    fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("python3")
            .args(["-c", SCRIPT])
            .arg(dir.path())
            .spawn()
            .expect("python3 must be installed");
        let cued = Cued { child, dir };
        cued.wait_threads(2);
        cued
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    fn cue(&self, name: &str, threads: usize) {
        std::fs::write(self.dir.path().join(name), b"").expect("cue file");
        self.wait_threads(threads);
    }

    fn wait_threads(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while states(self.pid()).len() != n {
            assert!(Instant::now() < deadline, "child never reached {n} threads");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cued {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (Cpus_allowed_list, policy) of every thread, read straight from /proc.
fn states(pid: i32) -> BTreeMap<i32, (String, u32)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|tid| {
            let dir = format!("/proc/{pid}/task/{tid}");
            let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
            let cpus = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(|list| format_cpu_list(&parse_cpu_list(list)))?;
            let stat = parse_stat(&std::fs::read_to_string(format!("{dir}/stat")).ok()?)?;
            Some((tid, (cpus, stat.policy)))
        })
        .collect()
}

fn wait_until(what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn plan(pid: i32, knob: Knob, after: &str) -> Vec<Change> {
    plan_process(&HostRoots::default(), pid, knob.clone(), after)
        .unwrap_or_else(|err| panic!("planning {knob:?} = {after}: {err}"))
}

fn optimizer(dir: &Path) -> Optimizer<HostActuators> {
    Optimizer::open(dir, HostActuators::new(HostRoots::default()))
        .expect("journal opens")
        .0
}

#[test]
fn new_threads_get_the_batch_values_and_every_thread_is_restored_on_rollback() {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online");
    let all_cpus = format_cpu_list(&parse_cpu_list(&online));
    assert_ne!(
        all_cpus, "0",
        "needs two CPUs: the test pins threads to CPU 0"
    );
    let child = Cued::spawn();
    let pid = child.pid();
    let original = states(pid);
    assert!(
        original
            .values()
            .all(|(cpus, policy)| *cpus == all_cpus && *policy == SCHED_OTHER),
        "{original:?}"
    );

    let state = tempfile::tempdir().expect("state dir");
    let mut opt = optimizer(state.path());
    let mut changes = plan(pid, Knob::Affinity, "0");
    changes.extend(plan(pid, Knob::Policy, "SCHED_BATCH"));
    let batch = opt.apply("pin and batch", &changes).expect("applies");

    // Two threads start under the batch: one inherits CPU 0, one pins itself to CPU 1.
    child.cue("go", 4);
    wait_until("the self-pinned thread", || {
        states(pid).values().any(|(cpus, _)| cpus == "1")
    });
    let started: Vec<i32> = states(pid)
        .into_keys()
        .filter(|tid| !original.contains_key(tid))
        .collect();
    assert_eq!(started.len(), 2);
    let own_choice = states(pid)
        .into_iter()
        .find(|(_, (cpus, _))| cpus == "1")
        .map(|(tid, _)| tid)
        .expect("self-pinned thread");

    let state_now = opt
        .open_batches()
        .into_iter()
        .find(|b| b.batch == batch)
        .expect("batch open");
    let report = follow_new_threads(&mut opt, &HostRoots::default(), &state_now).expect("follows");
    assert_eq!(report.applied, 4, "2 new threads x 2 knobs: {report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    for (tid, (cpus, policy)) in states(pid) {
        assert_eq!((cpus.as_str(), policy), ("0", SCHED_BATCH), "thread {tid}");
    }
    // A second pass finds nothing new.
    let state_now = opt.open_batches().into_iter().find(|b| b.batch == batch);
    let again = follow_new_threads(&mut opt, &HostRoots::default(), &state_now.expect("open"));
    assert_eq!(again.expect("follows").applied, 0);

    // One more thread starts after the last pass: the rollback itself brings it in.
    child.cue("go2", 5);
    drop(opt);
    let mut opt = optimizer(state.path());
    let report = opt.rollback_following(batch).expect("rolls back");
    assert!(report.failed.is_empty(), "{report:?}");

    for (tid, (cpus, policy)) in states(pid) {
        let expected_cpus = if tid == own_choice { "1" } else { &all_cpus };
        assert_eq!(
            (cpus.as_str(), policy),
            (expected_cpus, SCHED_OTHER),
            "thread {tid} after rollback"
        );
    }
    assert!(opt.open_batches().is_empty(), "batch closed");
}

#[test]
fn the_running_engine_brings_new_threads_under_an_active_batch() {
    let child = Cued::spawn();
    let pid = child.pid();
    let state = tempfile::tempdir().expect("state dir");
    let batch = {
        let mut opt = optimizer(state.path());
        opt.apply("pin", &plan(pid, Knob::Affinity, "0"))
            .expect("applies")
    };

    let mut config = sutazai_top::config::Config {
        interval_ms: 250,
        ..Default::default()
    };
    config.optimizer.state_dir = state.path().to_path_buf();
    config.docker.enabled = false;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _engine =
        runtime.block_on(async { sutazai_top::engine::spawn_managing(config.engine()).0 });

    child.cue("go", 4);
    // The thread that pins itself to CPU 1 is brought back to CPU 0. The journal view
    // refreshes every 5 s and threads are followed every 2 s.
    wait_until("the self-pinned thread", || {
        states(pid).values().any(|(cpus, _)| cpus == "1")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while states(pid).values().any(|(cpus, _)| cpus != "0") {
        assert!(
            Instant::now() < deadline,
            "new threads never brought under the batch: {:?}",
            states(pid)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(_engine);
    drop(runtime);

    let mut opt = optimizer(state.path());
    let extended = opt
        .open_batches()
        .into_iter()
        .find(|b| b.batch == batch)
        .map(|b| b.changes.len());
    assert_eq!(extended, Some(4), "the batch names all four threads now");
    opt.rollback_following(batch).expect("rolls back");
    let after: Vec<String> = states(pid).into_values().map(|(cpus, _)| cpus).collect();
    assert_eq!(
        after.iter().filter(|cpus| *cpus == "1").count(),
        1,
        "the self-pinned thread gets its own choice back: {after:?}"
    );
    assert!(after.iter().all(|cpus| *cpus != "0"), "{after:?}");
}
