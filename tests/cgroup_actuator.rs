//! The cgroup-file actuator with real effects: fresh v1 cpu and memory cgroups holding a busy
//! child, changed through the journal and rolled back byte for byte; the command line's
//! `set --cgroup`; a cgroup removed under our feet. This host's unified (v2) hierarchy has no
//! controller enabled (its cgroup.controllers is empty), so the v2 files are exercised on a
//! fixture root of regular files, as are the safety rules (symlinks, world-writable paths).
//! Only cgroups the tests create are touched, and each is removed by a guard.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sutazai_top::host::HostRoots;
use sutazai_top::host::cgroups::CgroupMounts;
use sutazai_top::model::{Change, Knob, Target};
use sutazai_top::optimizer::actuators::{
    Actuator, CgroupFileActuator, HostActuators, plan_cgroup, process_cgroup,
};
use sutazai_top::optimizer::change::ActuatorError;
use sutazai_top::optimizer::master::{ApplyError, Optimizer};

/// Fresh cgroups named `name` under some v1 hierarchies, with an optional busy child in
/// them. On drop the child is moved back to the test's own cgroups, killed and reaped, and
/// every directory removed, on success and failure alike.
struct TestCgroup {
    /// (controller, cgroup dir) for each hierarchy.
    dirs: Vec<(String, PathBuf)>,
    child: Option<Child>,
}

impl TestCgroup {
    fn create(controllers: &[&str], tag: &str) -> TestCgroup {
        let mounts = CgroupMounts::detect(&HostRoots::default());
        let name = format!("sutazai-cgact-{}-{tag}", std::process::id());
        let mut guard = TestCgroup {
            dirs: Vec::new(),
            child: None,
        };
        for controller in controllers {
            let Some(mount) = mounts.v1.get(*controller) else {
                panic!("no v1 {controller} hierarchy: {mounts:?}");
            };
            let dir = mount.join(&name);
            if let Err(err) = std::fs::create_dir(&dir) {
                panic!("cannot create test cgroup {}: {err}", dir.display());
            }
            guard.dirs.push((controller.to_string(), dir));
        }
        guard
    }

    fn dir(&self, controller: &str) -> &Path {
        let found = self.dirs.iter().find(|(c, _)| c == controller);
        &found.expect("a cgroup for this controller").1
    }

    /// The target path of the cgroup in `controller`'s hierarchy, relative to /sys.
    fn target_path(&self, controller: &str) -> PathBuf {
        self.dir(controller)
            .strip_prefix("/sys")
            .expect("hierarchies are mounted under /sys")
            .to_path_buf()
    }

    fn file(&self, controller: &str, name: &str) -> Vec<u8> {
        std::fs::read(self.dir(controller).join(name)).unwrap()
    }

    /// A shell spinning on a CPU, moved into every cgroup of this guard.
    fn start_busy_child(&mut self) -> i32 {
        let child = Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        for (_, dir) in &self.dirs {
            if let Err(err) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                panic!("cannot move the child into {}: {err}", dir.display());
            }
        }
        i32::try_from(pid).unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Back into the test's own cgroups first, so the directories empty at once.
            let me = i32::try_from(std::process::id()).unwrap_or(0);
            for (controller, _) in &self.dirs {
                if let Ok(home) = process_cgroup(&HostRoots::default(), me, Some(controller)) {
                    let procs = Path::new("/sys").join(home).join("cgroup.procs");
                    let _ = std::fs::write(procs, child.id().to_string());
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for (_, dir) in &self.dirs {
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn assert_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test creates cgroups and must run as root (scripts/test.sh runs the suite as root)"
    );
}

/// Whether the host has v1 cpu and memory hierarchies (a note when it has not).
fn v1_cpu_and_memory() -> bool {
    let mounts = CgroupMounts::detect(&HostRoots::default());
    let present = mounts.v1.contains_key("cpu") && mounts.v1.contains_key("memory");
    if !present {
        eprintln!(
            "no v1 cpu and memory hierarchies on this host; the v1 test has nothing to change"
        );
    }
    present
}

/// A fresh test cgroup in the v1 `controllers`, or `None` on a host without v1 cpu and
/// memory hierarchies. Panics when not root: these tests must not pass by doing nothing.
fn v1_test_cgroup(controllers: &[&str], tag: &str) -> Option<TestCgroup> {
    assert_root();
    v1_cpu_and_memory().then(|| TestCgroup::create(controllers, tag))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// nr_throttled of a v1 cpu cgroup.
fn throttled(dir: &Path) -> u64 {
    let stat = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    stat.lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .expect("cpu.stat has nr_throttled")
}

#[test]
fn v1_files_apply_through_the_journal_and_roll_back_byte_identical() {
    let Some(mut cg) = v1_test_cgroup(&["cpu", "memory"], "apply") else {
        return;
    };
    let pid = cg.start_busy_child();
    let roots = HostRoots::default();
    assert_eq!(
        process_cgroup(&roots, pid, Some("cpu")).unwrap(),
        cg.target_path("cpu")
    );
    assert_eq!(
        process_cgroup(&roots, pid, Some("memory")).unwrap(),
        cg.target_path("memory")
    );
    let files = [
        ("cpu", "cpu.shares", "512", "512"),
        ("cpu", "cpu.cfs_quota_us", "20000", "20000"),
        ("memory", "memory.limit_in_bytes", "64m", "67108864"),
        // Not page-aligned: the kernel rounds it down, and that still verifies.
        (
            "memory",
            "memory.soft_limit_in_bytes",
            "33554433",
            "33554432",
        ),
    ];
    let originals: Vec<Vec<u8>> = files.iter().map(|(c, f, ..)| cg.file(c, f)).collect();
    let changes: Vec<Change> = files
        .iter()
        .map(|(c, f, after, _)| plan_cgroup(&roots, &cg.target_path(c), f, after).unwrap())
        .collect();
    for ((change, original), (_, file, ..)) in changes.iter().zip(&originals).zip(&files) {
        assert_eq!(
            change.before,
            text(original),
            "{file}: before read from the host"
        );
    }
    assert_eq!(changes[2].after, "67108864", "stored in the form written");

    let state = tempfile::tempdir().unwrap();
    let (mut optimizer, _) = Optimizer::open(state.path(), HostActuators::new(roots)).unwrap();
    let throttled_before = throttled(cg.dir("cpu"));
    let batch = optimizer.apply("cgroup knobs", &changes).unwrap();
    for (controller, file, _, kernel) in &files {
        assert_eq!(text(&cg.file(controller, file)), *kernel, "{file}");
    }
    // The quota binds: a spinning child at 0.2 cores is throttled within a few periods.
    let deadline = Instant::now() + Duration::from_secs(5);
    while throttled(cg.dir("cpu")) <= throttled_before {
        assert!(
            Instant::now() < deadline,
            "the quota never throttled the child"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(optimizer.open_batches().len(), 1);

    let report = optimizer.rollback(batch).unwrap();
    assert_eq!((report.restored, report.gone), (4, 0), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    for ((controller, file, ..), original) in files.iter().zip(&originals) {
        assert_eq!(
            &cg.file(controller, file),
            original,
            "{file} not restored exactly"
        );
    }
    assert!(optimizer.open_batches().is_empty());
    drop(cg);
}

#[test]
fn a_change_that_fails_undoes_the_ones_before_it() {
    let Some(cg) = v1_test_cgroup(&["cpu"], "unwind") else {
        return;
    };
    let roots = HostRoots::default();
    let path = cg.target_path("cpu");
    let shares = cg.file("cpu", "cpu.shares");
    let quota = cg.file("cpu", "cpu.cfs_quota_us");
    let good = plan_cgroup(&roots, &path, "cpu.shares", "256").unwrap();
    // Below the kernel's 1 ms floor: refused by validation, after the first change landed.
    let bad = Change {
        target: Target::Cgroup { path: path.clone() },
        knob: Knob::CgroupFile {
            file: "cpu.cfs_quota_us".to_string(),
        },
        before: text(&quota),
        after: "500".to_string(),
    };
    let state = tempfile::tempdir().unwrap();
    let (mut optimizer, _) = Optimizer::open(state.path(), HostActuators::new(roots)).unwrap();
    match optimizer.apply("half bad", &[good, bad]) {
        Err(ApplyError::Undone {
            index: 1,
            error: ActuatorError::InvalidValue { .. },
            ..
        }) => {}
        other => panic!("expected the batch undone at change 1, got {other:?}"),
    }
    assert_eq!(cg.file("cpu", "cpu.shares"), shares);
    assert_eq!(cg.file("cpu", "cpu.cfs_quota_us"), quota);
    assert!(optimizer.open_batches().is_empty());
}

#[test]
fn a_removed_cgroup_is_gone_and_its_rollback_has_nothing_to_restore() {
    let Some(cg) = v1_test_cgroup(&["cpu"], "gone") else {
        return;
    };
    let roots = HostRoots::default();
    let path = cg.target_path("cpu");
    let change = plan_cgroup(&roots, &path, "cpu.shares", "300").unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut optimizer, _) =
        Optimizer::open(state.path(), HostActuators::new(roots.clone())).unwrap();
    let batch = optimizer
        .apply("to vanish", std::slice::from_ref(&change))
        .unwrap();
    std::fs::remove_dir(cg.dir("cpu")).unwrap();

    let actuator = CgroupFileActuator::new(roots.clone());
    for result in [
        actuator.read(&change.target, &change.knob).map(|_| ()),
        actuator.apply(&change),
        plan_cgroup(&roots, &path, "cpu.shares", "300").map(|_| ()),
    ] {
        assert!(matches!(result, Err(ActuatorError::Gone(_))), "{result:?}");
    }
    let report = optimizer.rollback(batch).unwrap();
    assert_eq!((report.restored, report.gone), (0, 1), "{report:?}");
    assert!(optimizer.open_batches().is_empty());
}

fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cli_set_cgroup_is_journaled_and_rolled_back() {
    let Some(mut cg) = v1_test_cgroup(&["cpu"], "cli") else {
        return;
    };
    cg.start_busy_child();
    let state = tempfile::tempdir().unwrap();
    let original = cg.file("cpu", "cpu.cfs_quota_us");
    let shares = cg.file("cpu", "cpu.shares");
    let path = cg.target_path("cpu");
    let path = path.to_str().unwrap();

    let set = cli(
        state.path(),
        &["set", "--cgroup", path, "cpu.cfs_quota_us", "30000"],
    );
    assert!(set.status.success(), "{}", said(&set));
    assert!(said(&set).contains("batch 1"), "{}", said(&set));
    assert_eq!(text(&cg.file("cpu", "cpu.cfs_quota_us")), "30000");
    let journal = cli(state.path(), &["journal"]);
    assert!(
        said(&journal).contains(&format!("cgroup {path}")),
        "{}",
        said(&journal)
    );

    let rollback = cli(state.path(), &["rollback", "1"]);
    assert!(rollback.status.success(), "{}", said(&rollback));
    assert_eq!(cg.file("cpu", "cpu.cfs_quota_us"), original);

    // An absolute path under the sys root names the same cgroup.
    let absolute = format!("/sys/{path}");
    let set = cli(
        state.path(),
        &["set", "--cgroup", &absolute, "cpu.shares", "700"],
    );
    assert!(set.status.success(), "{}", said(&set));
    assert_eq!(text(&cg.file("cpu", "cpu.shares")), "700");
    let rollback = cli(state.path(), &["rollback", "--all"]);
    assert!(rollback.status.success(), "{}", said(&rollback));
    assert_eq!(cg.file("cpu", "cpu.shares"), shares);
}

#[test]
fn cli_refuses_bad_cgroup_input_and_changes_nothing() {
    let Some(cg) = v1_test_cgroup(&["cpu"], "clibad") else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let path = cg.target_path("cpu");
    let path = path.to_str().unwrap();
    let shares = cg.file("cpu", "cpu.shares");
    for (args, expected) in [
        (
            vec!["--cgroup", path, "cpu.bogus", "5"],
            "not a file this tool writes",
        ),
        (vec!["--cgroup", path, "cpu.shares", "1"], "2..=262144"),
        (vec!["--cgroup", path, "shares", "512"], "not a cgroup file"),
        (vec!["--pid", "1", "cpu.shares", "512"], "use --cgroup"),
        (
            vec!["--cgroup", "fs/cgroup/../../etc", "cpu.shares", "512"],
            "\"..\" components",
        ),
    ] {
        let mut full = vec!["set"];
        full.extend(&args);
        let out = cli(state.path(), &full);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", said(&out));
        assert!(said(&out).contains(expected), "{args:?}: {}", said(&out));
    }
    assert_eq!(cg.file("cpu", "cpu.shares"), shares);
    let journal = cli(state.path(), &["journal"]);
    assert!(
        said(&journal).contains("no open batch"),
        "{}",
        said(&journal)
    );
}

/// A fixture root whose cgroup "fs/cgroup/unified/agents/x" holds the v2 files as regular
/// files with a kernel's defaults.
fn v2_fixture() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let rel = PathBuf::from("fs/cgroup/unified/agents/x");
    let dir = root.path().join("sys").join(&rel);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, content) in [
        ("cpu.weight", "100\n"),
        ("cpu.max", "max 100000\n"),
        ("memory.high", "max\n"),
        ("memory.max", "max\n"),
        ("cpuset.cpus", "\n"),
        ("cpuset.mems", "\n"),
    ] {
        std::fs::write(dir.join(file), content).unwrap();
    }
    // tempdir is 0700; the rules refuse only world-writable modes, so make it ordinary.
    for dir in [root.path().to_path_buf(), dir] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (root, rel)
}

fn fixture_file(root: &Path, rel: &Path, file: &str) -> Vec<u8> {
    std::fs::read(root.join("sys").join(rel).join(file)).unwrap()
}

#[test]
fn v2_files_on_a_fixture_root_apply_and_undo_exactly() {
    let (root, rel) = v2_fixture();
    let roots = HostRoots::under(root.path());
    let cases = [
        ("cpu.weight", "50", "50"),
        ("cpu.max", "50000 100000", "50000 100000"),
        ("memory.high", "48m", "50331648"),
        ("memory.max", "64m", "67108864"),
        ("cpuset.cpus", "1,0", "0-1"),
        ("cpuset.mems", "0", "0"),
    ];
    let originals: Vec<Vec<u8>> = cases
        .iter()
        .map(|(f, ..)| fixture_file(root.path(), &rel, f))
        .collect();
    let changes: Vec<Change> = cases
        .iter()
        .map(|(f, after, _)| plan_cgroup(&roots, &rel, f, after).unwrap())
        .collect();
    let state = tempfile::tempdir().unwrap();
    let (mut optimizer, _) = Optimizer::open(state.path(), HostActuators::new(roots)).unwrap();
    let batch = optimizer.apply("v2 knobs", &changes).unwrap();
    for (file, _, written) in &cases {
        assert_eq!(text(&fixture_file(root.path(), &rel, file)), *written);
    }
    let report = optimizer.rollback(batch).unwrap();
    assert_eq!(report.restored, cases.len(), "{report:?}");
    for ((file, ..), original) in cases.iter().zip(&originals) {
        // The trailing newline is the kernel's; what was read, and written back, is the value.
        assert_eq!(
            text(&fixture_file(root.path(), &rel, file)),
            text(original),
            "{file}"
        );
    }
}

fn refused(result: Result<(), ActuatorError>) -> bool {
    matches!(result, Err(ActuatorError::Refused(_)))
}

#[test]
fn fixture_symlinks_world_writable_paths_and_bad_values_are_refused_untouched() {
    let (root, rel) = v2_fixture();
    let actuator = CgroupFileActuator::new(HostRoots::under(root.path()));
    let weight = Knob::CgroupFile {
        file: "cpu.weight".to_string(),
    };
    let cg_dir = root.path().join("sys").join(&rel);
    let target = |path: &str| Target::Cgroup {
        path: PathBuf::from(path),
    };

    // A symlinked cgroup dir, even one pointing inside the root.
    symlink(&cg_dir, cg_dir.with_file_name("link")).unwrap();
    let linked = target("fs/cgroup/unified/agents/link");
    assert!(refused(actuator.write(&linked, &weight, "50")));
    assert!(matches!(
        actuator.read(&linked, &weight),
        Err(ActuatorError::Refused(_))
    ));

    // A symlinked file.
    let x = target("fs/cgroup/unified/agents/x");
    std::fs::rename(cg_dir.join("cpu.weight"), cg_dir.join("real.weight")).unwrap();
    symlink("real.weight", cg_dir.join("cpu.weight")).unwrap();
    assert!(refused(actuator.write(&x, &weight, "50")));
    std::fs::remove_file(cg_dir.join("cpu.weight")).unwrap();
    std::fs::rename(cg_dir.join("real.weight"), cg_dir.join("cpu.weight")).unwrap();

    // A world-writable file, then a world-writable directory on the way.
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&cg_dir.join("cpu.weight"), 0o666);
    assert!(refused(actuator.write(&x, &weight, "50")));
    mode(&cg_dir.join("cpu.weight"), 0o644);
    let agents = cg_dir.parent().unwrap().to_path_buf();
    mode(&agents, 0o777);
    assert!(refused(actuator.write(&x, &weight, "50")));
    mode(&agents, 0o755);

    // Bad paths, an unknown file, an out-of-range value.
    for path in [
        "fs/cgroup/../../etc",
        "kernel/mm",
        "/sys/fs/cgroup/x",
        "fs/cgroup",
    ] {
        let result = actuator.write(&target(path), &weight, "50");
        assert!(
            matches!(result, Err(ActuatorError::InvalidValue { ref value, .. }) if value == path),
            "{path}: {result:?}"
        );
    }
    let unknown = Knob::CgroupFile {
        file: "cgroup.procs".to_string(),
    };
    match actuator.write(&x, &unknown, "1") {
        Err(ActuatorError::InvalidValue { value, .. }) => assert_eq!(value, "cgroup.procs"),
        other => panic!("expected InvalidValue naming the file, got {other:?}"),
    }
    for (file, value) in [
        ("cpu.weight", "0"),
        ("cpu.max", "10 100000"),
        ("memory.max", "-1"),
    ] {
        let knob = Knob::CgroupFile {
            file: file.to_string(),
        };
        let result = actuator.write(&x, &knob, value);
        assert!(
            matches!(result, Err(ActuatorError::InvalidValue { .. })),
            "{file} {value}: {result:?}"
        );
    }
    assert_eq!(text(&fixture_file(root.path(), &rel, "cpu.weight")), "100");
    assert_eq!(
        text(&fixture_file(root.path(), &rel, "cpu.max")),
        "max 100000"
    );
    assert_eq!(text(&fixture_file(root.path(), &rel, "memory.max")), "max");

    // A file the cgroup does not have is unsupported; a cgroup that is not there is gone.
    std::fs::remove_file(cg_dir.join("memory.high")).unwrap();
    let high = Knob::CgroupFile {
        file: "memory.high".to_string(),
    };
    assert!(matches!(
        actuator.write(&x, &high, "64m"),
        Err(ActuatorError::Unsupported(_))
    ));
    let missing = target("fs/cgroup/unified/agents/nope");
    assert!(matches!(
        actuator.write(&missing, &weight, "50"),
        Err(ActuatorError::Gone(_))
    ));
}
