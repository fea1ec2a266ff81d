//! Agents that are plain processes (`[[agents]]`, issue 16) on the real host. Two processes
//! become agents through the config: a latency agent matched by its command name, in v1
//! cpuset, cpu, cpuacct and memory cgroups of its own that the test makes, and a batch agent
//! matched by its command line, left in the test's own (shared) cgroups. With the coordinator
//! enforcing, the first gets a CPU of its own written to its cpuset cgroup, the second is
//! moved off it by the affinity of its threads (its cgroup is not its own to change); when
//! the first exits its CPU goes back; a rollback restores both exactly.
//!
//! Rebalancing by load on the same kind of agents: an idle exclusive agent and a shared
//! pool saturated by spinning shells; the coordinator proposes lending the idle CPU and the
//! step is approved. With one spinner per CPU, host CPU pressure falls and the step is
//! kept; with three per CPU it does not, and the step is rolled back and the plan restored.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use support::RunningEngine;
use sutazai_top::config::Config;
use sutazai_top::engine::Command;
use sutazai_top::host::cgroups::CgroupMounts;
use sutazai_top::host::{HostRoots, parse_cpu_list};
use sutazai_top::model::{Allocation, AllocationState, ContainerStat, Snapshot, UsageSource};

/// The hierarchies the latency agent gets cgroups of its own in.
const CONTROLLERS: [&str; 4] = ["cpuset", "cpu", "cpuacct", "memory"];

/// A copy of `sleep` under a name of our own (so its comm is unique), run for 600 s.
fn start_named(dir: &Path, name: &str) -> (Child, PathBuf) {
    let binary = dir.join(name);
    std::fs::copy("/bin/sleep", &binary).unwrap();
    let child = Process::new(&binary)
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    (child, binary)
}

/// Test cgroups holding one process; on drop the process is killed and the dirs removed.
struct OwnCgroups {
    dirs: Vec<PathBuf>,
}

impl OwnCgroups {
    fn create(name: &str, pid: u32) -> OwnCgroups {
        let mounts = CgroupMounts::detect(&HostRoots::default());
        let mut guard = OwnCgroups { dirs: Vec::new() };
        for controller in CONTROLLERS {
            let mount = mounts.v1.get(controller).unwrap();
            let dir = mount.join(name);
            std::fs::create_dir(&dir).unwrap();
            guard.dirs.push(dir.clone());
            if controller == "cpuset" {
                // A v1 cpuset cgroup starts empty: give it its parent's CPUs and nodes.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let parent = std::fs::read(mount.join(file)).unwrap();
                    std::fs::write(dir.join(file), parent).unwrap();
                }
            }
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
        }
        guard
    }

    fn read(&self, controller: &str, file: &str) -> String {
        let index = CONTROLLERS.iter().position(|c| *c == controller).unwrap();
        std::fs::read_to_string(self.dirs[index].join(file))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for OwnCgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Kills and reaps on drop, panics included.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn allowed_cpus(pid: u32) -> Vec<u32> {
    let roots = HostRoots::default();
    let list = sutazai_top::containers::process_agents::allowed_cpus(&roots, pid as i32);
    parse_cpu_list(&list.unwrap())
}

fn agent<'a>(snap: &'a Snapshot, name: &str) -> Option<&'a ContainerStat> {
    let id = format!("proc:{name}");
    snap.containers.agents.iter().find(|a| a.id == id)
}

/// An engine managing the host, from a config text, its journal in `state`.
fn engine_for(text: &str, state: &Path) -> RunningEngine {
    let mut config = Config::parse(text, Path::new("test.toml")).unwrap();
    config.optimizer.state_dir = state.to_path_buf();
    RunningEngine::start_managing(config)
}

/// The first snapshot where every one of `names` is as planned.
fn in_place(engine: &mut RunningEngine, what: &str, names: &[&str]) -> std::sync::Arc<Snapshot> {
    engine.wait_for(Duration::from_secs(20), what, |s| {
        names
            .iter()
            .all(|n| allocation(s, n).is_some_and(|a| a.in_place))
    })
}

fn allocation<'a>(snap: &'a Snapshot, name: &str) -> Option<&'a Allocation> {
    let id = format!("proc:{name}");
    snap.coordinator
        .as_ref()?
        .agents
        .iter()
        .find(|a| a.id == id)
}

#[test]
fn process_agents_from_the_config_are_agents_and_get_their_cores() {
    let _one = support::cpu_tests_lock();
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test makes cgroups and must run as root"
    );
    let mounts = CgroupMounts::detect(&HostRoots::default());
    assert!(
        CONTROLLERS.iter().all(|c| mounts.v1.contains_key(*c)),
        "this test needs v1 cpuset, cpu, cpuacct and memory hierarchies: {mounts:?}"
    );
    let cpus = parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap());
    assert!(cpus.len() >= 2, "needs two CPUs: one exclusive, one shared");

    let bins = tempfile::tempdir().unwrap();
    let tag = std::process::id() % 100_000;
    let (latency_name, batch_name) = (format!("pa-l-{tag}"), format!("pa-b-{tag}"));
    let (latency, _) = start_named(bins.path(), &latency_name);
    let latency_pid = latency.id();
    let mut latency = Reaped(latency);
    let (batch, batch_binary) = start_named(bins.path(), &batch_name);
    let batch_pid = batch.id();
    let _batch = Reaped(batch);
    let own = OwnCgroups::create(&format!("sutazai-pa-{tag}"), latency_pid);
    let cpuset_before = own.read("cpuset", "cpuset.cpus");

    let state = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
interval_ms = 300
[docker]
enabled = false
[coordinator]
enforce = true

[[agents]]
name = "{latency_name}"
comm = "{latency_name}"
class = "latency"
cpus = 1
priority = 9

[[agents]]
name = "{batch_name}"
cmdline = "{} 600"
class = "batch"
"#,
        batch_binary.display()
    );
    let mut engine = engine_for(&text, state.path());

    let snap = in_place(
        &mut engine,
        "the plan in place",
        &[&latency_name, &batch_name],
    );
    // Both are agents, with what matched and which cgroups are theirs.
    let l = agent(&snap, &latency_name).unwrap();
    assert_eq!(l.pid, Some(latency_pid as i32));
    assert_eq!(l.source, UsageSource::CgroupV1);
    let process = l.process.as_ref().unwrap();
    assert!(
        process.own_cpuset() && process.shared.is_empty(),
        "{process:?}"
    );
    let b = agent(&snap, &batch_name).unwrap();
    assert_eq!(b.pid, Some(batch_pid as i32));
    assert_eq!(
        b.source,
        UsageSource::Procfs,
        "its cgroup holds the test too"
    );
    let process = b.process.as_ref().unwrap();
    assert!(!process.own_cpuset(), "{process:?}");
    assert!(
        process.shared.iter().any(|s| s.starts_with("cpuset:")),
        "{process:?}"
    );

    // The latency agent's CPU is written to its own cpuset; the batch agent is kept off
    // it by its threads' affinity.
    let mine = allocation(&snap, &latency_name).unwrap();
    assert_eq!(mine.state, AllocationState::Exclusive);
    assert_eq!(mine.cpus.len(), 1);
    let exclusive = mine.cpus[0];
    assert_eq!(own.read("cpuset", "cpuset.cpus"), exclusive.to_string());
    let shared: Vec<u32> = cpus.iter().copied().filter(|c| *c != exclusive).collect();
    assert_eq!(allowed_cpus(batch_pid), shared);
    assert!(
        !snap.changes.active.is_empty(),
        "applied through the journal"
    );

    // The latency agent exits: its CPU goes back to the batch agent.
    let _ = latency.0.kill();
    let _ = latency.0.wait();
    engine.wait_for(Duration::from_secs(20), "the CPU given back", |s| {
        allocation(s, &batch_name).is_some_and(|a| a.in_place)
            && agent(s, &latency_name).is_some_and(|a| a.state == "exited")
    });
    assert_eq!(allowed_cpus(batch_pid), cpus);

    // A rollback restores the host as it was.
    engine.roll_back_all();
    assert_eq!(allowed_cpus(batch_pid), cpus);
    assert_eq!(own.read("cpuset", "cpuset.cpus"), cpuset_before);
}

/// A shell spinning on a CPU, its command line marked so an entry can match it.
fn spinner(marker: &str) -> Reaped {
    let child = Process::new("sh")
        .args(["-c", &format!("while :; do :; done # {marker}")])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Reaped(child)
}

#[test]
fn an_idle_exclusive_agent_lends_its_cpu_to_a_saturated_pool_and_the_pressure_proves_it() {
    // One spinner per CPU: on the pool's one CPU they wait, on every CPU they do not.
    lend_and_judge(1, true);
}

#[test]
fn a_rebalance_that_does_not_ease_the_pressure_is_rolled_back_and_the_plan_restored() {
    // Three spinners per CPU wait whatever the pool holds: lending helps nothing.
    lend_and_judge(3, false);
}

/// An idle exclusive agent and `per_cpu` spinners per CPU in the shared pool: the
/// rebalance is proposed and approved; validation keeps it when `helps`, else rolls it back
/// and the declared plan comes back.
fn lend_and_judge(per_cpu: usize, helps: bool) {
    let _one = support::cpu_tests_lock();
    let cpus = parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap());
    assert!(cpus.len() >= 2, "needs two CPUs: one exclusive, one shared");
    assert!(
        std::path::Path::new("/proc/pressure/cpu").exists(),
        "the pressure proof needs PSI (/proc/pressure/cpu)"
    );
    let bins = tempfile::tempdir().unwrap();
    let tag = std::process::id() % 100_000;
    let (idle_name, pool_name) = (format!("pa-i-{tag}"), format!("pa-p-{tag}"));
    let (idle, _) = start_named(bins.path(), &idle_name);
    let idle_pid = idle.id();
    let _idle = Reaped(idle);
    let marker = format!("sutazai-spin-{tag}");
    let spinners: Vec<Reaped> = (0..cpus.len() * per_cpu)
        .map(|_| spinner(&marker))
        .collect();

    let state = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
interval_ms = 500
mode = "balanced"
[docker]
enabled = false
[optimizer]
validation_secs = 12
[coordinator]
enforce = true
rebalance_window_secs = 5

[[agents]]
name = "{idle_name}"
comm = "{idle_name}"
class = "batch"
cpus = {}
exclusive = true

[[agents]]
name = "{pool_name}"
cmdline = "{marker}"
class = "batch"
"#,
        cpus.len() - 1
    );
    let mut engine = engine_for(&text, state.path());

    // The declared plan: the idle agent holds every CPU but one, the spinners share one.
    let snap = in_place(
        &mut engine,
        "the declared plan in place",
        &[&idle_name, &pool_name],
    );
    let pool_pids = &agent(&snap, &pool_name)
        .unwrap()
        .process
        .as_ref()
        .unwrap()
        .pids;
    assert_eq!(
        pool_pids.len(),
        spinners.len(),
        "one agent of every spinner"
    );
    let held = allocation(&snap, &idle_name).unwrap().cpus.clone();
    assert_eq!(held.len(), cpus.len() - 1);

    // Saturated pool, waiting tasks, an idle exclusive CPU: a rebalance is proposed.
    let snap = engine.wait_for(Duration::from_secs(40), "a rebalance proposed", |s| {
        s.proposals
            .iter()
            .any(|p| p.fix.strategy == "coordinator-rebalance" && p.status.is_open())
    });
    let proposal = snap
        .proposals
        .iter()
        .find(|p| p.fix.strategy == "coordinator-rebalance" && p.status.is_open())
        .unwrap();
    assert_eq!(
        proposal.bottleneck.kind,
        sutazai_top::model::BottleneckKind::LoadImbalance
    );
    assert!(
        proposal.fix.summary.contains(&idle_name),
        "{}",
        proposal.fix.summary
    );
    let id = proposal.id;
    let commands = engine.handle.commands.clone();
    engine
        .runtime
        .block_on(commands.send(Command::Apply(id)))
        .unwrap();

    // Applied: the pool has a CPU more, the spinners run on it.
    let snap = engine.wait_for(Duration::from_secs(20), "the lent CPU in the pool", |s| {
        let every_cpu = s
            .coordinator
            .as_ref()
            .is_some_and(|v| v.shared.len() == cpus.len());
        every_cpu && allocation(s, &pool_name).is_some_and(|a| a.in_place)
    });
    let view = snap.coordinator.as_ref().unwrap();
    assert_eq!(allocation(&snap, &idle_name).unwrap().rebalanced, -1);
    assert!(view.rebalanced());
    let spinner_pid = u32::try_from(pool_pids[0]).unwrap();
    assert_eq!(allowed_cpus(spinner_pid), cpus);
    assert!(!allowed_cpus(idle_pid).is_empty());

    // Validation judges it on host CPU pressure: kept if it fell, else rolled back, and
    // the declared plan is put back.
    let snap = engine.wait_for(Duration::from_secs(40), "the step judged", |s| {
        s.proposals
            .iter()
            .any(|p| p.id == id && p.validation.verdict.is_some())
    });
    let judged = snap.proposals.iter().find(|p| p.id == id).unwrap();
    let helped = matches!(
        judged.validation.verdict,
        Some(sutazai_top::model::Verdict::Helped { .. })
    );
    assert_eq!(helped, helps, "{:?}", judged.validation);
    if !helps {
        engine.wait_for(Duration::from_secs(30), "the declared plan back", |s| {
            let rolled_back = s.proposals.iter().any(|p| {
                p.id == id
                    && matches!(
                        p.status,
                        sutazai_top::model::ProposalStatus::RolledBack { .. }
                    )
            });
            let declared = s.coordinator.as_ref().is_some_and(|v| !v.rebalanced());
            rolled_back
                && declared
                && allocation(s, &idle_name).is_some_and(|a| a.in_place && a.cpus == held)
        });
        let shared: Vec<u32> = cpus.iter().copied().filter(|c| !held.contains(c)).collect();
        assert_eq!(allowed_cpus(spinner_pid), shared);
    }

    // A rollback gives the spinners back their CPUs as they were.
    engine.roll_back_all();
    assert_eq!(allowed_cpus(spinner_pid), cpus);
    drop(spinners);
}
