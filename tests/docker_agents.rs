//! Containers against a real Docker daemon: discovery, usage from cgroup files, events,
//! limits, an unreachable daemon and a daemon that goes away and comes back.
//!
//! Needs a running dockerd (scripts/test.sh starts one). These tests fail, never skip, when
//! Docker is missing: a skipped test cannot catch a regression.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Container, RunningEngine, docker_ok, test_config, unique};
use sutazai_top::model::{AgentClass, ContainerStat, DockerStatus, Snapshot, UsageSource};

const TICK_MS: u64 = 500;

fn agent<'a>(snap: &'a Snapshot, name: &str) -> Option<&'a ContainerStat> {
    snap.containers.agents.iter().find(|c| c.name == name)
}

#[test]
fn labelled_containers_are_seen_busy_one_is_busy_and_removal_shows_within_a_tick() {
    let mut engine = RunningEngine::start(test_config(TICK_MS));
    engine.wait_for(Duration::from_secs(10), "docker connection", |s| {
        matches!(s.containers.status, DockerStatus::Connected { .. })
    });

    let busy_name = unique("busy");
    let idle_name = unique("idle");
    let plain_name = unique("plain");
    let busy = Container::run(
        &busy_name,
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
            "--label",
            "sutazai.priority=3",
        ],
        &["sh", "-c", "while :; do :; done"],
    );
    let idle = Container::run(
        &idle_name,
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=latency",
        ],
        &["sleep", "3600"],
    );
    let _plain = Container::run(&plain_name, &[], &["sleep", "3600"]);
    let started_seq = engine.latest().seq;

    // Within 3 ticks of both being up: present, and the busy one above 50% of a core.
    let snap = engine.wait_for(
        Duration::from_millis(3 * TICK_MS + 2_000),
        "busy agent above 50% CPU",
        |s| {
            agent(s, &idle_name).is_some() && agent(s, &busy_name).is_some_and(|c| c.cpu_pct > 50.0)
        },
    );
    let ticks = snap.seq - started_seq;
    println!("busy agent above 50% after {ticks} ticks");
    assert!(ticks <= 3, "took {ticks} ticks");

    let b = agent(&snap, &busy_name).unwrap();
    assert_eq!(b.id, busy.id);
    assert_eq!(b.class, Some(AgentClass::Batch));
    assert_eq!(b.priority, Some(3));
    assert_eq!(b.state, "running");
    assert!(b.pid.is_some_and(|p| p > 0));
    assert!(
        matches!(b.source, UsageSource::CgroupV1 | UsageSource::CgroupV2),
        "usage must come from cgroup files, got {:?}",
        b.source
    );
    assert!(
        b.cgroup.as_deref().is_some_and(|p| p.contains(&busy.id)),
        "{:?}",
        b.cgroup
    );
    assert!(b.pids >= 1);
    let i = agent(&snap, &idle_name).unwrap();
    assert_eq!(i.class, Some(AgentClass::Latency));
    assert!(i.cpu_pct < 10.0, "idle agent at {}%", i.cpu_pct);
    assert!(
        i.mem_bytes > 0 && i.mem_bytes < 64 << 20,
        "idle mem {}",
        i.mem_bytes
    );
    assert!(
        agent(&snap, &plain_name).is_none(),
        "unlabelled container counted as agent"
    );
    assert!(snap.containers.total_seen >= 3);

    // Removal: the Docker event makes the engine publish at once, within a tick of
    // `docker rm` returning, without waiting for the next tick.
    idle.remove();
    let removed_at = Instant::now();
    let snap = engine.wait_for(Duration::from_secs(5), "removed agent gone", |s| {
        agent(s, &idle_name).is_none()
    });
    let latency = removed_at.elapsed();
    println!("removed agent gone after {} ms", latency.as_millis());
    assert!(
        latency < Duration::from_millis(TICK_MS),
        "took {} ms, more than a tick",
        latency.as_millis()
    );
    assert!(agent(&snap, &busy_name).is_some());
}

#[test]
fn limits_and_cpuset_match_docker_inspect() {
    let mut engine = RunningEngine::start(test_config(TICK_MS));
    let name = unique("limited");
    let c = Container::run(
        &name,
        &[
            "--label",
            "sutazai.agent=1",
            "--cpus",
            "0.5",
            "--memory",
            "64m",
            "--cpuset-cpus",
            "0",
            "--cpu-shares",
            "512",
        ],
        &["sleep", "3600"],
    );
    let snap = engine.wait_for(
        Duration::from_secs(10),
        "limited agent with counters",
        |s| agent(s, &name).is_some_and(|a| a.source != UsageSource::None),
    );
    let a = agent(&snap, &name).unwrap();
    let inspect = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.CpusetCpus}} {{.HostConfig.CpuShares}}",
        &c.id,
    ]);
    let fields: Vec<&str> = inspect.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{inspect}");
    let nano: f64 = fields[0].parse().unwrap();
    assert_eq!(a.cpu_limit_cores, Some(nano / 1e9));
    assert_eq!(a.mem_limit_bytes, Some(fields[1].parse::<u64>().unwrap()));
    assert_eq!(a.cpuset_cpus, fields[2]);
    match a.source {
        // v1 exposes shares as set; v2 maps them onto a weight.
        UsageSource::CgroupV1 => assert_eq!(a.cpu_weight, Some(fields[3].parse().unwrap())),
        _ => assert!(a.cpu_weight.is_some()),
    }
    assert_eq!(a.cpu_limit_cores, Some(0.5));
    assert_eq!(a.mem_limit_bytes, Some(64 << 20));
}

#[test]
fn unreachable_docker_is_a_status_and_the_host_still_shows() {
    let socket = std::env::temp_dir().join(format!("sutazai-nothing-{}.sock", std::process::id()));
    let endpoint = format!("unix://{}", socket.display());
    let mut config = test_config(300);
    config.docker.endpoint = endpoint.clone();
    let mut engine = RunningEngine::start(config);
    let snap = engine.wait_for(Duration::from_secs(10), "unreachable status", |s| {
        matches!(s.containers.status, DockerStatus::Unreachable { .. }) && s.seq >= 2
    });
    match &snap.containers.status {
        DockerStatus::Unreachable {
            endpoint: shown,
            error,
            retry_in_ms,
        } => {
            assert_eq!(shown, &endpoint);
            assert!(!error.is_empty());
            assert!(*retry_in_ms >= 1000);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(snap.containers.agents.is_empty());
    assert!(!snap.topology.cpus.is_empty());
    assert!(snap.memory.total_kb > 0);
    assert!(
        !snap.cpu.per_cpu.is_empty(),
        "cpu sampler must not wait for Docker"
    );
}

/// A unix-socket relay to the real daemon that the test can stop and restart, standing in for
/// a daemon restart without touching the shared daemon.
struct Relay {
    path: PathBuf,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    fn start(rt: &tokio::runtime::Runtime, path: &PathBuf) -> Relay {
        let _ = std::fs::remove_file(path);
        let listener = rt.block_on(async { tokio::net::UnixListener::bind(path).unwrap() });
        let task = rt.spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
            // Dropping the JoinSet (when this task is aborted) cuts every relayed connection.
        });
        Relay {
            path: path.clone(),
            task: Some(task),
        }
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn daemon_going_away_and_back_is_followed_with_backoff() {
    let path = std::env::temp_dir().join(format!("sutazai-relay-{}.sock", std::process::id()));
    let mut config = test_config(TICK_MS);
    config.docker.endpoint = format!("unix://{}", path.display());
    let mut engine = RunningEngine::start(config);
    engine.wait_for(
        Duration::from_secs(10),
        "unreachable before the relay",
        |s| matches!(s.containers.status, DockerStatus::Unreachable { .. }),
    );

    let mut relay = Relay::start(&engine.runtime, &path);
    engine.wait_for(
        Duration::from_secs(15),
        "connected through the relay",
        |s| matches!(s.containers.status, DockerStatus::Connected { .. }),
    );

    relay.stop();
    engine.wait_for(
        Duration::from_secs(10),
        "unreachable after the relay stops",
        |s| matches!(s.containers.status, DockerStatus::Unreachable { .. }),
    );

    let _relay = Relay::start(&engine.runtime, &path);
    engine.wait_for(Duration::from_secs(15), "reconnected", |s| {
        matches!(s.containers.status, DockerStatus::Connected { .. })
    });
}

/// "1.5GiB" / "316KiB" / "20MB" (docker stats' MemUsage) in bytes.
fn docker_size(text: &str) -> f64 {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unknown unit {other:?} in {text:?}"),
    };
    number.parse::<f64>().unwrap() * scale
}

#[test]
fn memory_matches_docker_stats() {
    let mut engine = RunningEngine::start(test_config(TICK_MS));
    let name = unique("filled");
    let _c = Container::run(
        &name,
        &["--label", "sutazai.agent=1"],
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; sleep 3600",
        ],
    );
    let snap = engine.wait_for(Duration::from_secs(15), "24 MiB in the agent", |s| {
        agent(s, &name).is_some_and(|a| a.mem_bytes > 24 << 20)
    });
    let ours = agent(&snap, &name).unwrap().mem_bytes as f64;
    let stats = docker_ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", &name]);
    let theirs = docker_size(stats.split('/').next().unwrap());
    let gap = (ours - theirs).abs() / theirs;
    println!(
        "memory: ours {ours:.0} B, docker stats {theirs:.0} B, gap {:.2}%",
        gap * 100.0
    );
    assert!(gap < 0.05, "ours {ours} vs docker stats {theirs} ({stats})");
}
