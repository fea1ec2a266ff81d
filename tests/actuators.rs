//! Actuators with real effects: a real multi-threaded child process for thread knobs, fixture
//! trees in a temporary directory for host files. Only what the tests create is changed.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sutazai_top::host::processes::parse_stat;
use sutazai_top::host::{HostRoots, format_cpu_list, parse_cpu_list};
use sutazai_top::model::{Change, Knob, Target};
use sutazai_top::optimizer::actuators::{
    Actuator, HostActuators, HostFileActuator, ThreadActuator, plan_process,
};
use sutazai_top::optimizer::change::ActuatorError;

const THREADS: usize = 4;
const SCHED_BATCH: u32 = 3;
const SCHED_FIFO: u32 = 1;
const IOPRIO_BE_7: i64 = (2 << 13) | 7;

/// A python child with `THREADS` threads, killed and reaped when dropped.
struct ThreadedChild {
    child: Child,
}

impl ThreadedChild {
    fn spawn() -> Self {
        let child = Command::new("python3")
            .args([
                "-c",
                "import threading,time; [threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(3)]; time.sleep(60)",
            ])
            .spawn()
            .expect("python3 must be installed to run the actuator tests");
        let spawned = ThreadedChild { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tids(spawned.pid()).len() != THREADS {
            assert!(
                Instant::now() < deadline,
                "child never reached {THREADS} threads"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        spawned
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ThreadedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tids(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    tids
}

/// One thread's knobs as the kernel reports them, read independently of the actuator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ThreadState {
    cpus: String,
    nice: i32,
    policy: u32,
    ioprio: i64,
}

fn thread_state(pid: i32, tid: i32) -> ThreadState {
    let dir = format!("/proc/{pid}/task/{tid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).expect("task status");
    let cpus = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|list| format_cpu_list(&parse_cpu_list(list)))
        .expect("Cpus_allowed_list line");
    let stat = parse_stat(&std::fs::read_to_string(format!("{dir}/stat")).expect("task stat"))
        .expect("parsable task stat");
    // SAFETY: ioprio_get(IOPRIO_WHO_PROCESS, tid) takes integers and touches no memory of ours.
    let ioprio = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, tid) };
    assert!(ioprio >= 0, "ioprio_get failed for {tid}");
    ThreadState {
        cpus,
        nice: stat.nice,
        policy: stat.policy,
        ioprio,
    }
}

fn all_states(pid: i32) -> BTreeMap<i32, ThreadState> {
    tids(pid)
        .into_iter()
        .map(|tid| (tid, thread_state(pid, tid)))
        .collect()
}

/// A knob, the value to apply, and how to tell from a thread's state that it holds.
type Step = (Knob, &'static str, fn(&ThreadState) -> bool);

fn plan(pid: i32, knob: Knob, after: &str) -> Vec<Change> {
    plan_process(&HostRoots::default(), pid, knob.clone(), after)
        .unwrap_or_else(|err| panic!("planning {knob:?} = {after}: {err}"))
}

#[test]
fn thread_knobs_apply_to_every_thread_and_undo_exactly() {
    let child = ThreadedChild::spawn();
    let pid = child.pid();
    let original = all_states(pid);
    assert_eq!(original.len(), THREADS);
    let actuator = ThreadActuator::new(HostRoots::default());

    let steps: [Step; 4] = [
        (Knob::Affinity, "0", |s| s.cpus == "0"),
        (Knob::Policy, "SCHED_BATCH", |s| s.policy == SCHED_BATCH),
        (Knob::Nice, "5", |s| s.nice == 5),
        (Knob::IoPriority, "be/7", |s| s.ioprio == IOPRIO_BE_7),
    ];
    // Each step must really change something, or the test could not fail.
    for (tid, state) in &original {
        for (knob, after, holds) in &steps {
            assert!(!holds(state), "thread {tid} already has {knob:?} = {after}");
        }
    }

    let mut applied = Vec::new();
    for (knob, after, holds) in &steps {
        let changes = plan(pid, knob.clone(), after);
        assert_eq!(changes.len(), THREADS, "{knob:?}: one change per thread");
        for change in &changes {
            assert!(matches!(change.target, Target::Thread { pid: p, .. } if p == pid));
            actuator
                .apply(change)
                .unwrap_or_else(|err| panic!("apply {knob:?} = {after}: {err}"));
        }
        for (tid, state) in all_states(pid) {
            assert!(
                holds(&state),
                "thread {tid} after {knob:?} = {after}: {state:?}"
            );
        }
        applied.push(changes);
    }
    // Earlier knobs stay as set while later ones are applied.
    for (tid, state) in all_states(pid) {
        assert_eq!(
            (state.cpus.as_str(), state.policy, state.nice, state.ioprio),
            ("0", SCHED_BATCH, 5, IOPRIO_BE_7),
            "thread {tid}"
        );
    }

    for changes in applied.iter().rev() {
        for change in changes.iter().rev() {
            actuator
                .undo(change)
                .unwrap_or_else(|err| panic!("undo {:?}: {err}", change.knob));
        }
    }
    assert_eq!(
        all_states(pid),
        original,
        "undo restores every thread exactly"
    );
}

#[test]
fn befores_are_read_per_thread_in_kernel_notation() {
    let child = ThreadedChild::spawn();
    let pid = child.pid();
    let original = all_states(pid);
    let changes = plan(pid, Knob::Nice, "+5");
    for change in &changes {
        let Target::Thread { tid, .. } = change.target else {
            panic!("not a thread target");
        };
        let state = original.get(&tid).expect("planned tid exists");
        assert_eq!(change.before, state.nice.to_string());
        assert_eq!(change.after, "5", "after is stored canonically");
    }
    let changes = plan(pid, Knob::Affinity, "1,0");
    let first = original.values().next().expect("a thread");
    assert_eq!(
        changes.first().map(|c| c.before.as_str()),
        Some(first.cpus.as_str())
    );
    assert_eq!(changes.first().map(|c| c.after.as_str()), Some("0-1"));
    let changes = plan(pid, Knob::IoPriority, "idle");
    assert!(
        changes
            .iter()
            .all(|c| c.before == "none" && c.after == "idle")
    );
    assert_eq!(all_states(pid), original, "planning changes nothing");
}

#[test]
fn a_dead_process_is_gone_never_a_panic() {
    let mut child = ThreadedChild::spawn();
    let pid = child.pid();
    let changes = plan(pid, Knob::Nice, "5");
    child.kill();
    let actuator = ThreadActuator::new(HostRoots::default());
    for change in &changes {
        assert!(matches!(
            actuator.apply(change),
            Err(ActuatorError::Gone(_))
        ));
        assert!(matches!(actuator.undo(change), Err(ActuatorError::Gone(_))));
        assert!(matches!(
            actuator.read(&change.target, &change.knob),
            Err(ActuatorError::Gone(_))
        ));
    }
    assert!(matches!(
        plan_process(&HostRoots::default(), pid, Knob::Nice, "5"),
        Err(ActuatorError::Gone(_))
    ));
}

#[test]
fn a_wrong_start_time_or_foreign_tid_is_gone_and_untouched() {
    let child = ThreadedChild::spawn();
    let pid = child.pid();
    let original = all_states(pid);
    let actuator = ThreadActuator::new(HostRoots::default());
    for mut change in plan(pid, Knob::Nice, "5") {
        if let Target::Thread { start_time, .. } = &mut change.target {
            *start_time += 1;
        }
        assert!(matches!(
            actuator.apply(&change),
            Err(ActuatorError::Gone(_))
        ));
    }
    // A tid that is not one of the process's tasks: this test's own thread.
    let change = plan(pid, Knob::Nice, "5").remove(0);
    let Target::Thread { start_time, .. } = change.target else {
        panic!("not a thread target");
    };
    // SAFETY: gettid has no preconditions.
    let foreign_tid = unsafe { libc::gettid() };
    let foreign = Change {
        target: Target::Thread {
            pid,
            tid: foreign_tid,
            start_time,
        },
        ..change
    };
    assert!(matches!(
        actuator.apply(&foreign),
        Err(ActuatorError::Gone(_))
    ));
    assert_eq!(all_states(pid), original);
}

#[test]
fn invalid_values_change_nothing() {
    let child = ThreadedChild::spawn();
    let pid = child.pid();
    let original = all_states(pid);
    let actuator = ThreadActuator::new(HostRoots::default());
    let cases = [
        (Knob::Nice, "99"),
        (Knob::Nice, "-21"),
        (Knob::Policy, "SCHED_FIFO"),
        (Knob::Policy, "batch"),
        (Knob::IoPriority, "be/9"),
        (Knob::IoPriority, "best-effort"),
        (Knob::Affinity, ""),
        (Knob::Affinity, "0-x"),
        (Knob::Affinity, "4095"),
    ];
    for (knob, bad) in cases {
        assert!(
            matches!(
                plan_process(&HostRoots::default(), pid, knob.clone(), bad),
                Err(ActuatorError::InvalidValue { .. })
            ),
            "plan {knob:?} = {bad:?}"
        );
        // A change that slipped past planning (say, a hand-edited journal) is refused too.
        let valid = match knob {
            Knob::Nice => "5",
            Knob::Policy => "SCHED_BATCH",
            Knob::IoPriority => "be/7",
            _ => "0",
        };
        for mut change in plan(pid, knob.clone(), valid) {
            change.after = bad.to_string();
            assert!(
                matches!(
                    actuator.apply(&change),
                    Err(ActuatorError::InvalidValue { .. })
                ),
                "apply {knob:?} = {bad:?}"
            );
        }
    }
    assert_eq!(all_states(pid), original, "nothing changed");
}

#[test]
fn a_real_time_thread_is_refused() {
    let child = ThreadedChild::spawn();
    let pid = child.pid();
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is a valid sched_param that outlives the call; pid is our own child.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    assert_eq!(rc, 0, "making the child SCHED_FIFO");
    let before = all_states(pid);
    assert_eq!(before.get(&pid).map(|s| s.policy), Some(SCHED_FIFO));

    assert!(matches!(
        plan_process(&HostRoots::default(), pid, Knob::Policy, "SCHED_BATCH"),
        Err(ActuatorError::Refused(_))
    ));
    let start_time = plan(pid, Knob::Nice, "5")
        .first()
        .and_then(|c| match c.target {
            Target::Thread { start_time, .. } => Some(start_time),
            _ => None,
        })
        .expect("a thread change");
    let change = Change {
        target: Target::Thread {
            pid,
            tid: pid,
            start_time,
        },
        knob: Knob::Policy,
        before: "SCHED_FIFO".to_string(),
        after: "SCHED_BATCH".to_string(),
    };
    let actuator = ThreadActuator::new(HostRoots::default());
    assert!(matches!(
        actuator.apply(&change),
        Err(ActuatorError::Refused(_))
    ));
    assert_eq!(all_states(pid), before, "the RT thread is untouched");
}

/// A fixture root with THP's enabled file; the tempdir is private (0700), the tree 0755.
fn thp_fixture(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let thp = dir.path().join("sys/kernel/mm/transparent_hugepage");
    std::fs::create_dir_all(&thp).expect("fixture dirs");
    for sub in [
        "sys",
        "sys/kernel",
        "sys/kernel/mm",
        "sys/kernel/mm/transparent_hugepage",
    ] {
        set_mode(&dir.path().join(sub), 0o755);
    }
    let file = thp.join("enabled");
    std::fs::write(&file, content).expect("fixture file");
    set_mode(&file, 0o644);
    (dir, file)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn thp_knob() -> Knob {
    Knob::HostFile {
        path: PathBuf::from("sys/kernel/mm/transparent_hugepage/enabled"),
    }
}

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read fixture")
}

#[test]
fn host_file_reads_the_bracketed_word_applies_and_undoes() {
    let (dir, file) = thp_fixture("always [madvise] never\n");
    let actuator = HostFileActuator::new(HostRoots::under(dir.path()));
    assert_eq!(
        actuator.read(&Target::Host, &thp_knob()).ok().as_deref(),
        Some("madvise")
    );

    let change = Change {
        target: Target::Host,
        knob: thp_knob(),
        before: "madvise".to_string(),
        after: "never".to_string(),
    };
    actuator.apply(&change).expect("apply never");
    // The fixture reads back as the kernel's file would: the brackets moved.
    assert_eq!(read_file(&file), "always madvise [never]\n");
    assert_eq!(
        actuator.read(&Target::Host, &thp_knob()).ok().as_deref(),
        Some("never")
    );

    actuator.undo(&change).expect("undo");
    assert_eq!(
        read_file(&file),
        "always [madvise] never\n",
        "byte for byte"
    );
    assert_eq!(
        actuator.read(&Target::Host, &thp_knob()).ok().as_deref(),
        Some("madvise")
    );

    // The router sends host targets to the same actuator.
    let all = HostActuators::new(HostRoots::under(dir.path()));
    all.apply(&change).expect("apply through the router");
    assert_eq!(read_file(&file), "always madvise [never]\n");
}

#[test]
fn host_file_refuses_symlinks_and_world_writable_paths() {
    let (dir, file) = thp_fixture("always [madvise] never\n");
    let roots = HostRoots::under(dir.path());
    let actuator = HostFileActuator::new(roots);
    let change = |after: &str| Change {
        target: Target::Host,
        knob: thp_knob(),
        before: "madvise".to_string(),
        after: after.to_string(),
    };

    // The knob file replaced by a symlink to a file outside the root.
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "precious\n").expect("outside file");
    std::fs::remove_file(&file).expect("remove knob file");
    symlink(&outside, &file).expect("symlink");
    assert!(matches!(
        actuator.apply(&change("never")),
        Err(ActuatorError::Refused(_))
    ));
    assert_eq!(read_file(&outside), "precious\n");

    // A world-writable knob file.
    std::fs::remove_file(&file).expect("remove symlink");
    std::fs::write(&file, "always [madvise] never\n").expect("knob file");
    set_mode(&file, 0o666);
    assert!(matches!(
        actuator.apply(&change("never")),
        Err(ActuatorError::Refused(_))
    ));
    assert_eq!(read_file(&file), "always [madvise] never\n");

    // A world-writable directory on the way down.
    set_mode(&file, 0o644);
    let mm = dir.path().join("sys/kernel/mm");
    set_mode(&mm, 0o777);
    assert!(matches!(
        actuator.apply(&change("never")),
        Err(ActuatorError::Refused(_))
    ));
    assert_eq!(read_file(&file), "always [madvise] never\n");

    // A directory symlink that leads outside the root.
    set_mode(&mm, 0o755);
    let elsewhere = dir.path().join("elsewhere/transparent_hugepage");
    std::fs::create_dir_all(&elsewhere).expect("outside dir");
    std::fs::write(elsewhere.join("enabled"), "keep\n").expect("outside knob");
    std::fs::remove_dir_all(mm.join("transparent_hugepage")).expect("remove thp dir");
    symlink(&elsewhere, mm.join("transparent_hugepage")).expect("dir symlink");
    assert!(matches!(
        actuator.apply(&change("never")),
        Err(ActuatorError::Refused(_))
    ));
    assert_eq!(read_file(&elsewhere.join("enabled")), "keep\n");
}

#[test]
fn host_file_rejects_bad_paths_values_and_missing_files() {
    let (dir, file) = thp_fixture("always [madvise] never\n");
    let actuator = HostFileActuator::new(HostRoots::under(dir.path()));
    for path in [
        "etc/passwd",
        "sys/../outside",
        "/sys/kernel/mm/transparent_hugepage/enabled",
    ] {
        let knob = Knob::HostFile {
            path: PathBuf::from(path),
        };
        assert!(
            matches!(
                actuator.write(&Target::Host, &knob, "never"),
                Err(ActuatorError::InvalidValue { .. })
            ),
            "{path}"
        );
    }
    for value in ["", "never\nalways"] {
        assert!(matches!(
            actuator.write(&Target::Host, &thp_knob(), value),
            Err(ActuatorError::InvalidValue { .. })
        ));
    }
    let missing = Knob::HostFile {
        path: PathBuf::from("sys/kernel/mm/ksm/run"),
    };
    assert!(matches!(
        actuator.read(&Target::Host, &missing),
        Err(ActuatorError::Unsupported(_))
    ));
    assert!(matches!(
        actuator.write(&Target::Host, &missing, "1"),
        Err(ActuatorError::Unsupported(_))
    ));
    assert!(
        !dir.path().join("sys/kernel/mm/ksm").exists(),
        "nothing created"
    );
    assert_eq!(read_file(&file), "always [madvise] never\n");
}

#[test]
fn real_thp_setting_reads_as_one_word() {
    let path = Path::new("/sys/kernel/mm/transparent_hugepage/enabled");
    assert!(
        path.exists(),
        "this host has THP; the test must not pass without it"
    );
    let actuator = HostFileActuator::new(HostRoots::default());
    let value = actuator.read(&Target::Host, &thp_knob()).expect("read THP");
    assert!(
        ["always", "madvise", "never"].contains(&value.as_str()),
        "{value}"
    );
    assert!(read_file(path).contains(&format!("[{value}]")));
}
