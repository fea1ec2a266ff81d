//! Page migration with real effects on this host's one NUMA node: a python child that holds
//! 32 MiB of touched memory, its pages read from numa_maps and migrated with migrate_pages
//! through the optimizer and its journal. What several nodes would show is covered by the
//! unit tests; `plan` is also run against the 2-node fixture's sysfs with this host's /proc.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sutazai_top::eliminator::plan::plan;
use sutazai_top::host::HostRoots;
use sutazai_top::host::cgroups::{CgroupMounts, read_proc_cgroups};
use sutazai_top::host::processes::read_process_id;
use sutazai_top::model::{Change, Knob, Target};
use sutazai_top::model::{Intent, IntentTarget};
use sutazai_top::optimizer::actuators::{Actuator, HostActuators, parse_numa_maps};
use sutazai_top::optimizer::change::ActuatorError;
use sutazai_top::optimizer::journal::JOURNAL_FILE;
use sutazai_top::optimizer::master::{ApplyError, Optimizer};

const HELD_MIB: u64 = 32;

/// A python child holding `HELD_MIB` MiB it has written to (so every page is really
/// allocated), killed and reaped when dropped.
struct MemoryHolder {
    child: Child,
}

impl MemoryHolder {
    fn spawn() -> Self {
        let script = format!(
            "import sys,time; b = b'x' * ({HELD_MIB} << 20); print('ready', flush=True); time.sleep(120)"
        );
        let child = Command::new("python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed to run the NUMA tests");
        let mut holder = MemoryHolder { child };
        let stdout = holder.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("child's first line");
        assert_eq!(line.trim(), "ready", "child did not allocate its memory");
        holder
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    fn target(&self) -> Target {
        let id = read_process_id(&HostRoots::default(), self.pid()).expect("child is alive");
        Target::Process {
            pid: id.pid,
            start_time: id.start_time,
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MemoryHolder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Pages per node of `pid`, read independently of the actuator.
fn pages_on_node(pid: i32, node: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).expect("numa_maps");
    parse_numa_maps(&text).get(&node).copied().unwrap_or(0)
}

fn memory_nodes(target: &Target, after: &str) -> Change {
    Change {
        target: target.clone(),
        knob: Knob::MemoryNodes,
        before: "0".to_string(),
        after: after.to_string(),
    }
}

fn optimizer() -> (tempfile::TempDir, Optimizer<HostActuators>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (optimizer, _) =
        Optimizer::open(dir.path(), HostActuators::new(HostRoots::default())).expect("journal");
    (dir, optimizer)
}

fn journal_text(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap_or_default()
}

fn fixture_sys(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .join("sys")
}

#[test]
fn a_process_memory_reads_as_node_zero_and_migrates_there_verified() {
    let holder = MemoryHolder::spawn();
    let target = holder.target();
    let actuators = HostActuators::new(HostRoots::default());
    assert_eq!(
        actuators.read(&target, &Knob::MemoryNodes).expect("read"),
        "0"
    );
    let held_pages = pages_on_node(holder.pid(), 0);
    assert!(
        held_pages >= (HELD_MIB << 20) / 4096,
        "only {held_pages} pages on node 0"
    );

    let (dir, mut optimizer) = optimizer();
    let batch = optimizer
        .apply("numa test", &[memory_nodes(&target, "0")])
        .expect("migrating onto the one node verifies");
    assert_eq!(optimizer.open_batches().len(), 1);
    assert!(journal_text(dir.path()).contains("\"applied\""));
    // Nothing was lost on the way: the memory is still there, still on node 0.
    assert!(pages_on_node(holder.pid(), 0) >= held_pages - held_pages / 10);

    let report = optimizer.rollback(batch).expect("rollback");
    assert_eq!((report.restored, report.failed.len()), (1, 0));
    assert!(optimizer.open_batches().is_empty());
}

#[test]
fn an_offline_node_is_refused_before_anything_is_applied() {
    let holder = MemoryHolder::spawn();
    let target = holder.target();
    let (dir, mut optimizer) = optimizer();
    for bad in ["7", "", "0-x"] {
        let err = optimizer
            .apply("numa test", &[memory_nodes(&target, bad)])
            .expect_err("an invalid node list is refused");
        assert!(
            matches!(
                err,
                ApplyError::Undone {
                    error: ActuatorError::InvalidValue { .. },
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
    assert!(optimizer.open_batches().is_empty());
    let journal = journal_text(dir.path());
    assert!(journal.contains("\"failed\""), "{journal}");
    assert!(!journal.contains("\"applied\""), "{journal}");
    assert!(
        pages_on_node(holder.pid(), 0) > 0,
        "the child's memory is untouched"
    );
}

#[test]
fn a_process_that_is_gone_or_replaced_is_gone() {
    let mut holder = MemoryHolder::spawn();
    let target = holder.target();
    let actuators = HostActuators::new(HostRoots::default());
    let Target::Process { pid, start_time } = target else {
        unreachable!("a process target");
    };
    // Same pid, another start time: a recycled pid is never touched.
    let impostor = Target::Process {
        pid,
        start_time: start_time + 1,
    };
    assert!(matches!(
        actuators.write(&impostor, &Knob::MemoryNodes, "0"),
        Err(ActuatorError::Gone(_))
    ));
    holder.kill();
    assert!(matches!(
        actuators.read(&target, &Knob::MemoryNodes),
        Err(ActuatorError::Gone(_))
    ));
    let (_dir, mut optimizer) = optimizer();
    let err = optimizer
        .apply("numa test", &[memory_nodes(&target, "0")])
        .expect_err("a gone process cannot be migrated");
    assert!(
        matches!(
            err,
            ApplyError::Undone {
                error: ActuatorError::Gone(_),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn planning_a_container_process_memory_intent_gives_one_process_change() {
    let holder = MemoryHolder::spawn();
    let intent = |after: &str| Intent {
        target: IntentTarget::ContainerProcess {
            container: "c1".to_string(),
            name: "agent-1".to_string(),
            pid: holder.pid(),
        },
        knob: Knob::MemoryNodes,
        expected_before: "0".to_string(),
        after: after.to_string(),
    };
    // This host's processes, the 2-node fixture's sysfs: node 1 is online there.
    let two_nodes = HostRoots {
        proc: PathBuf::from("/proc"),
        sys: fixture_sys("numa64"),
    };
    let changes = plan(&[intent("1")], &two_nodes, "").expect("plan");
    assert_eq!(
        changes,
        vec![Change {
            target: holder.target(),
            knob: Knob::MemoryNodes,
            before: "0".to_string(),
            after: "1".to_string(),
        }]
    );
    // On this host the memory already is on node 0: nothing to do, not a change.
    let here = HostRoots::default();
    assert_eq!(plan(&[intent("0")], &here, "").expect("plan"), Vec::new());
    assert!(matches!(
        plan(&[intent("7")], &here, ""),
        Err(ActuatorError::InvalidValue { .. })
    ));
}

#[test]
fn the_kernel_itself_refuses_a_node_it_does_not_have() {
    // The fixture's sysfs says node 1 is online, so our validation lets "1" through and the
    // real migrate_pages is made: the kernel has no node 1 and answers EINVAL.
    let holder = MemoryHolder::spawn();
    let target = holder.target();
    let fooled = HostActuators::new(HostRoots {
        proc: PathBuf::from("/proc"),
        sys: fixture_sys("numa64"),
    });
    let err = fooled
        .write(&target, &Knob::MemoryNodes, "1")
        .expect_err("this host has one node");
    assert!(
        matches!(&err, ActuatorError::InvalidValue { why, .. } if why.contains("kernel")),
        "{err}"
    );
    assert!(pages_on_node(holder.pid(), 0) > 0);
}

#[test]
fn a_cgroup_reports_its_memory_per_node_on_this_host() {
    // The child runs in this test's cgroup: its 32 MiB count in that cgroup's numa_stat.
    let holder = MemoryHolder::spawn();
    let roots = HostRoots::default();
    let mounts = CgroupMounts::detect(&roots);
    let cg = read_proc_cgroups(&roots, holder.pid()).expect("child's cgroups");
    let mut reader = mounts.reader(&cg).expect("a memory cgroup");
    let per_node = reader.numa_memory_bytes();
    assert_eq!(per_node.len(), 1, "one node on this host: {per_node:?}");
    assert!(
        per_node[0] >= HELD_MIB << 20,
        "{} bytes on node 0",
        per_node[0]
    );
}
