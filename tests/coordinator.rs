//! The coordinator on a real host (issue 16): a latency agent declaring one exclusive CPU
//! and a batch agent start under an engine with `[coordinator] enforce = true`. The plan
//! gives the latency agent a CPU of its own and the batch agent the rest, applied through
//! the journal for real (docker inspect shows it); when the latency agent stops, its CPU
//! goes back to the shared pool; rollback puts every cpuset back.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Container, RunningEngine, docker_ok, test_config, unique};
use sutazai_top::engine::Command;
use sutazai_top::model::{AllocationState, Snapshot};

fn cpuset(c: &Container) -> String {
    docker_ok(&["inspect", "-f", "{{.HostConfig.CpusetCpus}}", &c.id])
}

fn allocation<'a>(snap: &'a Snapshot, c: &Container) -> Option<&'a sutazai_top::model::Allocation> {
    snap.coordinator
        .as_ref()?
        .agents
        .iter()
        .find(|a| a.id == c.id)
}

fn online_cpus() -> Vec<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    sutazai_top::host::parse_cpu_list(&text)
}

#[test]
fn declared_agents_get_their_cores_for_real_and_give_them_back() {
    let _one = support::cpu_tests_lock();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "needs two CPUs: one exclusive, one shared");
    let state = tempfile::tempdir().unwrap();
    let mut config = test_config(300);
    config.optimizer.state_dir = state.path().to_path_buf();
    config.coordinator.enforce = true;
    let mut engine = RunningEngine::start_managing(config);

    let latency = Container::run(
        &unique("coord-latency"),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=latency",
            "--label",
            "sutazai.cpus=1",
            "--label",
            "sutazai.priority=9",
        ],
        &["sleep", "600"],
    );
    let batch = Container::run(
        &unique("coord-batch"),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
        ],
        &["sleep", "600"],
    );
    let snap = engine.wait_for(Duration::from_secs(20), "the plan in place", |s| {
        [&latency, &batch]
            .iter()
            .all(|c| allocation(s, c).is_some_and(|a| a.in_place))
    });
    let mine = allocation(&snap, &latency).unwrap();
    assert_eq!(mine.state, AllocationState::Exclusive);
    assert_eq!(mine.cpus.len(), 1);
    let exclusive_cpu = mine.cpus[0];
    let shared: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| *c != exclusive_cpu)
        .collect();
    assert_eq!(
        cpuset(&latency),
        exclusive_cpu.to_string(),
        "docker shows it"
    );
    assert_eq!(
        sutazai_top::host::parse_cpu_list(&cpuset(&batch)),
        shared,
        "the batch agent shares the rest"
    );
    assert!(
        !snap.changes.active.is_empty(),
        "applied through the journal"
    );
    // The engine (in this process) keeps its threads off the exclusive CPU.
    let ours = || sutazai_top::host::own_affinity::current().unwrap();
    engine.wait_for(
        Duration::from_secs(5),
        "the engine off the exclusive CPU",
        |_| !ours().contains(&exclusive_cpu),
    );

    // The latency agent stops: its CPU goes back to the shared pool.
    latency.remove();
    let snap = engine.wait_for(Duration::from_secs(20), "the CPU given back", |s| {
        allocation(s, &batch).is_some_and(|a| a.in_place && a.cpus.is_empty())
    });
    assert_eq!(
        sutazai_top::host::parse_cpu_list(&cpuset(&batch)),
        cpus,
        "{:?} {:?} {:?}",
        snap.coordinator,
        snap.proposals
            .iter()
            .map(|p| (p.id, &p.fix.strategy, &p.status, &p.fix.intents))
            .collect::<Vec<_>>(),
        snap.changes.active
    );
    engine.wait_for(
        Duration::from_secs(5),
        "the engine back on every CPU",
        |_| ours() == cpus,
    );

    // Roll everything back: the batch agent may use every CPU again, as before. (Docker
    // cannot clear a cpuset to "", so every CPU may read as the full list.)
    engine.roll_back_all();
    let restored = cpuset(&batch);
    assert!(
        restored.is_empty() || sutazai_top::host::parse_cpu_list(&restored) == cpus,
        "{restored}"
    );
}

/// Needs registered through the API (`POST /api/agents`) take the place of the labels, are
/// kept in the state dir, planned for and applied; `DELETE` gives the labels back.
#[test]
fn an_agent_registered_through_the_api_is_planned_for_and_forgotten_on_delete() {
    let _one = support::cpu_tests_lock();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "needs two CPUs: one exclusive, one shared");
    let mut config = test_config(300);
    config.coordinator.enforce = true;
    let served = support::Served::start_managing(config, tempfile::tempdir().unwrap());
    let target = Container::run(
        &unique("coord-registered"),
        &["--label", "sutazai.agent=1"],
        &["sleep", "600"],
    );
    let socket = served.socket.clone();
    let post = |body: &str| {
        support::wire::call(
            &socket,
            "POST",
            "/api/agents",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };

    let refused = post(r#"{"agent_id": "x", "cpu_cores": 1.5, "exclusive": true}"#);
    assert_eq!(refused.status, 400);
    assert!(refused.error().contains("whole"), "{}", refused.error());

    let body = format!(
        r#"{{"agent_id": "{}", "cpu_cores": 1, "priority": 8}}"#,
        target.name
    );
    let created = post(&body);
    assert_eq!(created.status, 201, "{}", created.error());
    assert_eq!(created.json()["agent"], target.name.as_str());
    let saved = std::fs::read_to_string(served.state_dir().join("agents.json")).unwrap();
    assert!(saved.contains(&target.name), "{saved}");

    // Planned and applied: one CPU of its own, as Docker shows it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let agent = loop {
        let listed = support::wire::call(&socket, "GET", "/api/agents", &[], b"").json();
        let agent = listed["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == target.name.as_str())
            .cloned();
        if let Some(agent) = agent.filter(|a| a["in_place"] == true) {
            assert_eq!(listed["registered"][0]["agent"], target.name.as_str());
            break agent;
        }
        assert!(Instant::now() < deadline, "never in place: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(agent["state"], "exclusive", "{agent}");
    assert_eq!(agent["declared_through"], "api", "{agent}");
    let given = agent["allocated"]["cpus"].as_str().unwrap().to_string();
    assert_eq!(cpuset(&target), given);

    // DELETE: the labels count again (nothing declared: every CPU); twice is a 404.
    let path = format!("/api/agents/{}", target.name);
    let deleted = support::wire::call(&socket, "DELETE", &path, &[], b"");
    assert_eq!(deleted.status, 200, "{}", deleted.error());
    let again = support::wire::call(&socket, "DELETE", &path, &[], b"");
    assert_eq!(again.status, 404);
    assert!(again.error().contains(&target.name), "{}", again.error());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = cpuset(&target);
        if shown.is_empty() || sutazai_top::host::parse_cpu_list(&shown) == cpus {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the CPU was not given back: {shown}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let commands = served.engine.handle.commands.clone();
    served
        .engine
        .runtime
        .block_on(commands.send(Command::RollbackAll))
        .unwrap();
}

/// A CPU going offline is planned for (issue 16, faults): on a copy of the 64-CPU fixture
/// host, taking CPU 63 offline takes it out of the shared pool at the next tick.
#[test]
fn a_cpu_going_offline_leaves_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numa64");
    let root = dir.path().join("host");
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut config = test_config(250);
    config.docker.enabled = false;
    config.host.proc_root = root.join("proc");
    config.host.sys_root = root.join("sys");
    config.optimizer.state_dir = dir.path().join("state");
    // CPU 99 does not exist: ignored, and said at start.
    config.coordinator.reserved_cpus = "0,99".to_string();
    let mut engine = RunningEngine::start(config);
    let shared = |s: &Snapshot| {
        s.coordinator
            .as_ref()
            .map(|c| c.shared.clone())
            .unwrap_or_default()
    };
    let snap = engine.wait_for(Duration::from_secs(10), "a plan", |s| !shared(s).is_empty());
    assert_eq!(shared(&snap), (1..64).collect::<Vec<u32>>());
    assert!(
        snap.notice
            .as_ref()
            .is_some_and(|n| n.is_error && n.text.contains("reserved_cpus: 99 not online")),
        "{:?}",
        snap.notice
    );

    let cpu = root.join("sys/devices/system/cpu");
    std::fs::write(cpu.join("online"), "0-62\n").unwrap();
    let snap = engine.wait_for(Duration::from_secs(10), "CPU 63 out of the plan", |s| {
        !shared(s).is_empty() && !shared(s).contains(&63)
    });
    assert_eq!(shared(&snap), (1..63).collect::<Vec<u32>>());
    assert!(
        snap.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("0-63 -> 0-62")),
        "{:?}",
        snap.notice
    );
}

/// The shared parent cgroup, removed on drop from every hierarchy (Docker makes it in each
/// one when it starts a container under it), after the test's containers are gone.
struct ParentDir(String);

impl Drop for ParentDir {
    fn drop(&mut self) {
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for hierarchy in hierarchies.flatten() {
            let dir = hierarchy.path().join(&self.0);
            for _ in 0..100 {
                if !dir.exists() || std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn read_cpus(path: &std::path::Path) -> Vec<u32> {
    let text = std::fs::read_to_string(path).unwrap();
    sutazai_top::host::parse_cpu_list(text.trim())
}

/// Prevention at birth: with `[coordinator] shared_parent`, the engine creates the parent
/// cgroup and keeps it to the shared pool; a batch agent started under it
/// (`--cgroup-parent`) is born off the latency agent's exclusive CPU, with no plan to catch
/// up with it. A rollback restores the parent.
#[test]
fn agents_started_under_the_shared_parent_are_born_on_the_shared_pool() {
    let _one = support::cpu_tests_lock();
    let cpus = online_cpus();
    assert!(cpus.len() >= 2, "needs two CPUs: one exclusive, one shared");
    let name = format!("sutazai-test-parent-{}", std::process::id());
    let _parent = ParentDir(name.clone());
    let parent_cpus = std::path::Path::new("/sys/fs/cgroup/cpuset")
        .join(&name)
        .join("cpuset.cpus");
    let mut config = test_config(300);
    config.optimizer.state_dir = tempfile::tempdir().unwrap().keep();
    config.coordinator.enforce = true;
    config.coordinator.shared_parent = name.clone();
    let mut engine = RunningEngine::start_managing(config);
    assert_eq!(read_cpus(&parent_cpus), cpus, "created with every CPU");

    let latency = Container::run(
        &unique("parent-latency"),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=latency",
            "--label",
            "sutazai.cpus=1",
        ],
        &["sleep", "600"],
    );
    let snap = engine.wait_for(Duration::from_secs(20), "the parent on the pool", |s| {
        s.coordinator.as_ref().is_some_and(|v| {
            v.parent
                .as_ref()
                .is_some_and(|p| p.in_place() && p.cpus.len() < cpus.len())
        }) && allocation(s, &latency).is_some_and(|a| a.in_place)
    });
    let exclusive = allocation(&snap, &latency).unwrap().cpus.clone();
    let shared: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| !exclusive.contains(c))
        .collect();
    assert_eq!(
        read_cpus(&parent_cpus),
        shared,
        "{:?} {:?}",
        snap.coordinator,
        snap.proposals
            .iter()
            .map(|p| (p.id, &p.status, &p.fix.intents))
            .collect::<Vec<_>>()
    );

    // Born confined: its CPUs are the pool's from its first instruction.
    let parent_flag = format!("--cgroup-parent=/{name}");
    let batch = Container::run(
        &unique("parent-batch"),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
            &parent_flag,
        ],
        &["sleep", "600"],
    );
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &batch.id]);
    let roots = sutazai_top::host::HostRoots::default();
    let allowed =
        sutazai_top::containers::process_agents::allowed_cpus(&roots, pid.parse().unwrap());
    assert_eq!(sutazai_top::host::parse_cpu_list(&allowed.unwrap()), shared);
    engine.wait_for(Duration::from_secs(10), "the batch agent in place", |s| {
        allocation(s, &batch).is_some_and(|a| a.in_place)
    });
    // (The plan may still set the same list through Docker: it planned before it had read
    // the new container's cgroup.)
    let set = cpuset(&batch);
    assert!(
        set.is_empty() || sutazai_top::host::parse_cpu_list(&set) == shared,
        "{set}"
    );

    // (The pool growing back when the latency agent leaves is tested without a parent
    // above; with one it did not come within 20 s in 2 of about 10 runs, cause not found:
    // see the issue 16 closing note.)
    engine.roll_back_all();
    assert_eq!(read_cpus(&parent_cpus), cpus);
    drop(engine);
    drop(batch);
}
