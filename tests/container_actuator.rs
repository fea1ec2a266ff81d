//! The container actuator against the real Docker daemon: every change is checked in
//! `docker inspect` and in the container's own cgroup files, after apply and after rollback.
//! These tests need the daemon and fail without it.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{Container, docker_ok, unique};
use sutazai_top::host::{HostRoots, format_cpu_list, parse_cpu_list};
use sutazai_top::model::{Change, Knob, Target};
use sutazai_top::optimizer::actuators::{Actuator, HostActuators, plan_container};
use sutazai_top::optimizer::change::ActuatorError;
use sutazai_top::optimizer::master::{ApplyError, Optimizer};

const LABEL: &str = "sutazai-test=container-actuator";

fn start(name: &str, limits: &[&str]) -> Container {
    let mut extra = vec!["--label", LABEL];
    extra.extend_from_slice(limits);
    Container::run(&unique(name), &extra, &["sleep", "3600"])
}

/// What `docker inspect` records, as (CpusetCpus, CpuShares, NanoCpus, Memory).
fn inspected(c: &Container) -> (String, i64, i64, i64) {
    let out = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.CpusetCpus}}|{{.HostConfig.CpuShares}}|{{.HostConfig.NanoCpus}}|{{.HostConfig.Memory}}",
        &c.id,
    ]);
    let fields: Vec<&str> = out.split('|').collect();
    assert_eq!(fields.len(), 4, "inspect output {out:?}");
    let num = |s: &str| {
        s.parse::<i64>()
            .unwrap_or_else(|_| panic!("not a number: {s:?}"))
    };
    (
        fields[0].to_string(),
        num(fields[1]),
        num(fields[2]),
        num(fields[3]),
    )
}

/// The values the kernel enforces, read from the container's cgroup files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kernel {
    cpus: String,
    /// cpu.shares on v1, cpu.weight on v2.
    weight: String,
    /// -1 for no quota.
    quota_us: i64,
    period_us: i64,
    /// memory.limit_in_bytes on v1; memory.max on v2 ("max" for none).
    memory: String,
}

/// Cgroup directories of a process: v1 per controller, else the v2 one.
struct Cgroups {
    v1: Vec<(String, PathBuf)>,
    v2: Option<PathBuf>,
}

impl Cgroups {
    fn of(c: &Container) -> Cgroups {
        let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &c.id]);
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let mut cgroups = Cgroups {
            v1: Vec::new(),
            v2: None,
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if controllers.is_empty() {
                cgroups.v2 = Some(PathBuf::from("/sys/fs/cgroup").join(rel));
            } else {
                for controller in controllers.split(',') {
                    let dir = PathBuf::from("/sys/fs/cgroup").join(controller).join(rel);
                    cgroups.v1.push((controller.to_string(), dir));
                }
            }
        }
        cgroups
    }

    fn file(&self, v1_controller: &str, v1_name: &str, v2_name: &str) -> String {
        let path = match self.v1.iter().find(|(c, _)| c == v1_controller) {
            Some((_, dir)) => dir.join(v1_name),
            None => self.v2.as_ref().expect("a v1 or v2 cgroup").join(v2_name),
        };
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .trim()
            .to_string()
    }

    fn read(&self) -> Kernel {
        let (quota_us, period_us) = if self.v1.iter().any(|(c, _)| c == "cpu") {
            (
                self.file("cpu", "cpu.cfs_quota_us", "").parse().unwrap(),
                self.file("cpu", "cpu.cfs_period_us", "").parse().unwrap(),
            )
        } else {
            let max = self.file("cpu", "", "cpu.max");
            let mut words = max.split_whitespace();
            let quota = match words.next() {
                Some("max") => -1,
                Some(q) => q.parse().unwrap(),
                None => panic!("empty cpu.max"),
            };
            (quota, words.next().unwrap().parse().unwrap())
        };
        Kernel {
            cpus: format_cpu_list(&parse_cpu_list(&self.file(
                "cpuset",
                "cpuset.cpus",
                "cpuset.cpus.effective",
            ))),
            weight: self.file("cpu", "cpu.shares", "cpu.weight"),
            quota_us,
            period_us,
            memory: self.file("memory", "memory.limit_in_bytes", "memory.max"),
        }
    }

    fn is_v1(&self) -> bool {
        self.v1.iter().any(|(c, _)| c == "cpu")
    }
}

fn optimizer() -> (tempfile::TempDir, Optimizer<HostActuators>) {
    let dir = tempfile::tempdir().unwrap();
    let (optimizer, _recovery) =
        Optimizer::open(dir.path(), HostActuators::new(HostRoots::default())).unwrap();
    (dir, optimizer)
}

fn plan(c: &Container, changes: &[(Knob, &str)]) -> Vec<Change> {
    changes
        .iter()
        .map(|(knob, after)| plan_container(&c.id, knob.clone(), after).unwrap())
        .collect()
}

/// The batch the issue asks for: cpuset 0, shares 512, half a core, 64 MiB.
fn the_batch(c: &Container) -> Vec<Change> {
    plan(
        c,
        &[
            (Knob::ContainerCpusetCpus, "0"),
            (Knob::ContainerCpuShares, "512"),
            (Knob::ContainerCpuQuota, "0.5"),
            (Knob::ContainerMemoryLimit, "64m"),
        ],
    )
}

const MIB_64: i64 = 64 << 20;

/// After the batch: Docker's record and the kernel agree on every value.
fn assert_batch_applied(c: &Container, cgroups: &Cgroups) {
    assert_eq!(inspected(c), ("0".to_string(), 512, 500_000_000, MIB_64));
    let kernel = cgroups.read();
    assert_eq!(kernel.cpus, "0");
    assert_eq!(
        kernel.quota_us * 2,
        kernel.period_us,
        "half a core: {kernel:?}"
    );
    assert_eq!(kernel.memory, MIB_64.to_string());
    if cgroups.is_v1() {
        assert_eq!(kernel.weight, "512");
    }
}

#[test]
fn batch_applies_and_rolls_back_to_exact_originals() {
    let c = start(
        "exact",
        &[
            "--cpuset-cpus",
            "1",
            "--cpu-shares",
            "1024",
            "--cpus",
            "1.5",
            "--memory",
            "256m",
            "--memory-swap",
            "512m",
        ],
    );
    let cgroups = Cgroups::of(&c);
    let original_kernel = cgroups.read();
    let original_inspect = inspected(&c);
    assert_eq!(
        original_inspect,
        ("1".to_string(), 1024, 1_500_000_000, 256 << 20)
    );
    assert_eq!(original_kernel.cpus, "1");
    assert_eq!(original_kernel.memory, (256i64 << 20).to_string());

    let changes = the_batch(&c);
    let befores: Vec<&str> = changes.iter().map(|ch| ch.before.as_str()).collect();
    assert_eq!(befores, ["1", "1024", "1.5", "268435456"]);
    let afters: Vec<&str> = changes.iter().map(|ch| ch.after.as_str()).collect();
    assert_eq!(afters, ["0", "512", "0.5", "67108864"]);

    let (_dir, mut optimizer) = optimizer();
    let batch = optimizer.apply("container knobs", &changes).unwrap();
    assert_batch_applied(&c, &cgroups);

    let report = optimizer.rollback(batch).unwrap();
    assert_eq!((report.restored, report.gone), (4, 0));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(optimizer.open_batches().is_empty());
    assert_eq!(inspected(&c), original_inspect);
    assert_eq!(cgroups.read(), original_kernel);
}

/// Docker cannot set a limit back to none (a 0 or "" in an update is ignored), so a container
/// started without limits gets the equivalent back: every CPU, the default weight, a quota of
/// every CPU, the kernel's unlimited memory value. The kernel's cpuset, weight and memory
/// limit are exactly the originals; the quota is the one documented difference.
#[test]
fn defaults_come_back_as_their_kernel_equivalents() {
    let c = start("defaults", &[]);
    let cgroups = Cgroups::of(&c);
    let original_kernel = cgroups.read();
    assert_eq!(inspected(&c), (String::new(), 0, 0, 0));
    let changes = the_batch(&c);
    let befores: Vec<&str> = changes.iter().map(|ch| ch.before.as_str()).collect();
    assert_eq!(befores, ["", "1024", "max", "max"]);

    let (_dir, mut optimizer) = optimizer();
    let batch = optimizer.apply("from defaults", &changes).unwrap();
    assert_batch_applied(&c, &cgroups);
    let report = optimizer.rollback(batch).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.restored, 4);

    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let online = parse_cpu_list(&online);
    let cores = i64::try_from(online.len()).unwrap();
    let after = cgroups.read();
    assert_eq!(after.cpus, original_kernel.cpus);
    assert_eq!(after.weight, original_kernel.weight);
    assert_eq!(after.memory, original_kernel.memory);
    assert_eq!(original_kernel.quota_us, -1);
    assert_eq!(
        after.quota_us,
        cores * after.period_us,
        "every CPU: {after:?}"
    );
    let (cpus, shares, nanos, memory) = inspected(&c);
    assert_eq!(cpus, format_cpu_list(&online));
    assert_eq!((shares, nanos), (1024, cores * 1_000_000_000));
    assert_eq!(memory, 9_223_372_036_854_771_712);

    // Read through the actuator, each is the same value as what was there before.
    let actuators = HostActuators::new(HostRoots::default());
    for change in &changes {
        let now = actuators.read(&change.target, &change.knob).unwrap();
        assert!(
            actuators.same_value(&change.knob, &change.before, &now),
            "{:?}: before {:?}, now {now:?}",
            change.knob,
            change.before
        );
    }
}

#[test]
fn a_refused_third_change_undoes_the_first_two() {
    let c = start(
        "all-or-nothing",
        &[
            "--cpuset-cpus",
            "1",
            "--cpu-shares",
            "1024",
            "--memory",
            "256m",
        ],
    );
    let cgroups = Cgroups::of(&c);
    let original_kernel = cgroups.read();
    let original_inspect = inspected(&c);
    // One byte is syntactically a limit; Docker refuses anything under 6 MB.
    let changes = plan(
        &c,
        &[
            (Knob::ContainerCpusetCpus, "0"),
            (Knob::ContainerCpuShares, "512"),
            (Knob::ContainerMemoryLimit, "1"),
        ],
    );
    let (_dir, mut optimizer) = optimizer();
    match optimizer.apply("doomed", &changes) {
        Err(ApplyError::Undone {
            index: 2,
            total: 3,
            error: ActuatorError::InvalidValue { why, .. },
        }) => assert!(why.contains("6MB"), "Docker's own message expected: {why}"),
        other => panic!("expected Undone at change 2 with Docker's refusal, got {other:?}"),
    }
    assert!(optimizer.open_batches().is_empty());
    assert_eq!(inspected(&c), original_inspect);
    assert_eq!(cgroups.read(), original_kernel);
}

#[test]
fn a_removed_container_is_gone_on_apply_and_on_rollback() {
    let c = start("removed", &["--cpu-shares", "1024"]);
    let changes = plan(&c, &[(Knob::ContainerCpuShares, "512")]);
    c.remove();
    let (_dir, mut optimizer) = optimizer();
    match optimizer.apply("too late", &changes) {
        Err(ApplyError::Undone {
            index: 0,
            error: ActuatorError::Gone(_),
            ..
        }) => {}
        other => panic!("expected Gone, got {other:?}"),
    }
    assert!(optimizer.open_batches().is_empty());

    let c = start(
        "removed-later",
        &["--cpu-shares", "1024", "--memory", "256m"],
    );
    let changes = plan(
        &c,
        &[
            (Knob::ContainerCpuShares, "512"),
            (Knob::ContainerMemoryLimit, "64m"),
        ],
    );
    let batch = optimizer.apply("then removed", &changes).unwrap();
    assert_eq!(inspected(&c).1, 512);
    c.remove();
    let report = optimizer.rollback(batch).unwrap();
    assert_eq!((report.restored, report.gone), (0, 2));
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(optimizer.open_batches().is_empty(), "batch closed");
}

#[test]
fn invalid_values_are_refused_before_docker_sees_them() {
    let c = start("invalid", &[]);
    for (knob, value) in [
        (Knob::ContainerCpuQuota, "0.001"),
        (Knob::ContainerCpuQuota, "1,5"),
        (Knob::ContainerMemoryLimit, "0"),
        (Knob::ContainerCpusetCpus, "0-"),
        (Knob::ContainerCpuShares, "1"),
    ] {
        match plan_container(&c.id, knob.clone(), value) {
            Err(ActuatorError::InvalidValue { .. }) => {}
            other => panic!("{knob:?} {value:?}: expected InvalidValue, got {other:?}"),
        }
    }
    assert_eq!(inspected(&c), (String::new(), 0, 0, 0));
    // A CPU that does not exist passes our syntax check; Docker's refusal comes back as is.
    let target = Target::Container { id: c.id.clone() };
    let actuators = HostActuators::new(HostRoots::default());
    match actuators.write(&target, &Knob::ContainerCpusetCpus, "4000") {
        Err(ActuatorError::InvalidValue { why, .. }) => {
            assert!(why.contains("not available"), "{why}")
        }
        other => panic!("expected Docker's refusal, got {other:?}"),
    }
}

#[test]
fn cli_set_then_dashboard_engine_rolls_back_the_container() {
    let state = tempfile::tempdir().unwrap();
    let c = start("cli", &["--memory", "256m", "--memory-swap", "512m"]);
    let memory = || docker_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", &c.id]);
    assert_eq!(memory(), (256u64 << 20).to_string());

    let set = std::process::Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["set", "--container", &c.name, "memory", "64m"])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(memory(), (64u64 << 20).to_string());

    // The engine's rollback (what `r` in the Proposals pane sends) restores it.
    let mut config = support::test_config(300);
    config.docker.enabled = false;
    config.optimizer.state_dir = state.path().to_path_buf();
    let mut engine = support::RunningEngine::start(config);
    engine.wait_for(
        Duration::from_secs(10),
        "the batch in the journal view",
        |s| s.changes.active.iter().any(|b| b.batch == 1),
    );
    let commands = engine.handle.commands.clone();
    engine
        .runtime
        .block_on(commands.send(sutazai_top::engine::Command::Rollback(1)))
        .unwrap();
    let snap = engine.wait_for(Duration::from_secs(15), "rollback notice", |s| {
        s.notice
            .as_ref()
            .is_some_and(|n| n.text.contains("batch 1 rolled back"))
    });
    let notice = snap.notice.clone().unwrap();
    assert!(!notice.is_error, "{}", notice.text);
    assert!(notice.text.contains("1 restored"), "{}", notice.text);
    assert_eq!(memory(), (256u64 << 20).to_string());
    assert!(snap.changes.active.is_empty());
}
