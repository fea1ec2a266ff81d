//! System-knob fixes (THP, vm.swappiness, vm.dirty_*, cpufreq governor) carried out for
//! real: proposed from a sampled snapshot, planned (before read from the files), applied
//! through the Optimizer with a journal, checked on disk, rolled back.
//!
//! The fixture root is a copy of the 64-CPU NUMA tree with the knob files this test needs
//! added (cpufreq is absent on this VM). The real-host test does the same against the
//! kernel's own files for the knobs this host has, restoring them exactly.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use host_support::copy_tree;
use sutazai_top::eliminator::built_in;
use sutazai_top::eliminator::plan::plan;
use sutazai_top::eliminator::strategy::{Context, propose_all};
use sutazai_top::eliminator::system_knobs::{
    DIRTY_BACKGROUND_RATIO, DIRTY_RATIO, SWAPPINESS, THP_DEFRAG, THP_ENABLED, governor_path,
};
use sutazai_top::host::HostRoots;
use sutazai_top::host::memory::MemorySampler;
use sutazai_top::model::Fix;
use sutazai_top::model::Mode;
use sutazai_top::model::Snapshot;
use sutazai_top::model::{Bottleneck, BottleneckKind, Evidence, Subject};
use sutazai_top::model::{Change, Target};
use sutazai_top::optimizer::actuators::{Actuator, HostActuators};
use sutazai_top::optimizer::master::Optimizer;

const SYSTEM_KNOB_STRATEGIES: [&str; 4] = [
    "transparent-hugepages",
    "lower-swappiness",
    "lower-dirty-ratios",
    "performance-governor",
];

/// Every knob file of the fixture with its content, as the kernel would print it.
fn fixture_knobs() -> Vec<(String, &'static str)> {
    let mut files = vec![
        (THP_ENABLED.to_string(), "always madvise [never]\n"),
        (
            THP_DEFRAG.to_string(),
            "always defer defer+madvise [madvise] never\n",
        ),
        (SWAPPINESS.to_string(), "60\n"),
        (DIRTY_RATIO.to_string(), "20\n"),
        (DIRTY_BACKGROUND_RATIO.to_string(), "10\n"),
        ("proc/sys/vm/dirty_expire_centisecs".to_string(), "3000\n"),
    ];
    // CPUs 0 and 1 scale down and offer performance, 2 is there already, 3 cannot.
    for (cpu, governor, available) in [
        (0, "powersave\n", "performance powersave\n"),
        (1, "powersave\n", "performance powersave\n"),
        (2, "performance\n", "performance powersave\n"),
        (3, "schedutil\n", "schedutil\n"),
    ] {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        files.push((governor_path(cpu), governor));
        files.push((format!("{dir}/scaling_available_governors"), available));
    }
    files
}

/// A writable copy of the numa64 tree with the knob files added; every directory on the way
/// to them 0755 and every file 0644, as on sysfs, so the actuator's safety rules pass.
fn fixture() -> (tempfile::TempDir, HostRoots) {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numa64");
    copy_tree(&source, dir.path());
    for (path, content) in fixture_knobs() {
        write_private(dir.path(), &path, content);
    }
    // 8 GB dirty of 128 GB RAM: above the 5 % backlog the dirty-ratio strategy looks for.
    let meminfo = dir.path().join("proc/meminfo");
    let text = std::fs::read_to_string(&meminfo).expect("fixture meminfo");
    let text = text.replace("Dirty:               128 kB", "Dirty:           8000000 kB");
    assert!(
        text.contains("Dirty:           8000000 kB"),
        "fixture meminfo changed"
    );
    std::fs::write(&meminfo, text).expect("rewrite meminfo");
    let roots = HostRoots::under(dir.path());
    (dir, roots)
}

fn write_private(root: &Path, relative: &str, content: &str) {
    let file = root.join(relative);
    let parent = file.parent().expect("knob file has a directory");
    std::fs::create_dir_all(parent).expect("fixture dirs");
    let mut dir = root.to_path_buf();
    for part in Path::new(relative)
        .parent()
        .into_iter()
        .flat_map(Path::components)
    {
        dir.push(part);
        set_mode(&dir, 0o755);
    }
    std::fs::write(&file, content).expect("fixture file");
    set_mode(&file, 0o644);
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Full bytes of each file, by path relative to the root.
fn bytes_of(root: &Path, paths: &[String]) -> BTreeMap<String, Vec<u8>> {
    paths
        .iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::read(root.join(p)).expect("read knob file"),
            )
        })
        .collect()
}

/// Two samples with swapping in between, as the engine would see a swapping host.
fn sample(roots: &HostRoots) -> Snapshot {
    let mut sampler = MemorySampler::new(roots);
    sampler.sample().expect("first memory sample");
    std::thread::sleep(Duration::from_millis(20));
    let vmstat = roots.proc.join("vmstat");
    let text = std::fs::read_to_string(&vmstat).expect("fixture vmstat");
    std::fs::write(&vmstat, text.replace("pswpout 0", "pswpout 500")).expect("bump pswpout");
    Snapshot {
        memory: sampler.sample().expect("second memory sample"),
        ..Snapshot::default()
    }
}

fn bottleneck(kind: BottleneckKind) -> Bottleneck {
    Bottleneck {
        kind,
        subject: Subject::Host,
        evidence: vec![Evidence {
            metric: "from the detector".into(),
            value: 1.0,
            threshold: 0.5,
            unit: "%".into(),
        }],
        since_seq: 1,
    }
}

/// The system-knob fixes aggressive mode allows for every host-wide bottleneck.
fn system_knob_fixes(snap: &Snapshot) -> Vec<Fix> {
    let context = Context {
        thp_allowed: true,
        ..Context::default()
    };
    let strategies = built_in();
    [
        BottleneckKind::CpuSaturation,
        BottleneckKind::MemoryPressure,
        BottleneckKind::IoSaturation,
    ]
    .into_iter()
    .flat_map(|kind| {
        propose_all(
            &strategies,
            &bottleneck(kind),
            snap,
            &context,
            Mode::Aggressive,
        )
    })
    .filter(|fix| SYSTEM_KNOB_STRATEGIES.contains(&fix.strategy.as_str()))
    .collect()
}

/// (path, before, after) of one planned change.
type Planned = (String, String, String);

/// (path, before, after) of each planned change.
fn planned(changes: &[Change]) -> Vec<Planned> {
    changes
        .iter()
        .map(|c| {
            let sutazai_top::model::Knob::HostFile { path } = &c.knob else {
                panic!("host file change expected: {c:?}");
            };
            assert_eq!(c.target, Target::Host);
            (
                path.display().to_string(),
                c.before.clone(),
                c.after.clone(),
            )
        })
        .collect()
}

fn triple(path: &str, before: &str, after: &str) -> Planned {
    (path.to_string(), before.to_string(), after.to_string())
}

/// What each fix of the fixture plans, by strategy (the THP strategy has two fixes).
fn expected_plans() -> Vec<(&'static str, Vec<Planned>)> {
    vec![
        (
            "transparent-hugepages",
            vec![
                triple(THP_ENABLED, "never", "madvise"),
                triple(THP_DEFRAG, "madvise", "defer+madvise"),
            ],
        ),
        (
            "transparent-hugepages",
            vec![triple(THP_ENABLED, "never", "always")],
        ),
        (
            "performance-governor",
            vec![
                triple(&governor_path(0), "powersave", "performance"),
                triple(&governor_path(1), "powersave", "performance"),
            ],
        ),
        ("lower-swappiness", vec![triple(SWAPPINESS, "60", "10")]),
        (
            "lower-dirty-ratios",
            vec![
                triple(DIRTY_BACKGROUND_RATIO, "10", "5"),
                triple(DIRTY_RATIO, "20", "10"),
            ],
        ),
    ]
}

/// Plan, apply, check, roll back one fix; returns the changes it made.
fn apply_and_roll_back(roots: &HostRoots, fix: &Fix) -> Vec<Change> {
    let journal = tempfile::tempdir().expect("journal dir");
    let actuators = HostActuators::new(roots.clone());
    let changes = plan(&fix.intents, roots, "").expect("plan");
    let (mut optimizer, _) = Optimizer::open(journal.path(), actuators.clone()).expect("journal");
    let batch = optimizer.apply(&fix.summary, &changes).expect("apply");
    for change in &changes {
        let now = actuators
            .read(&Target::Host, &change.knob)
            .expect("read back");
        assert_eq!(now, change.after, "{:?} after apply", change.knob);
    }
    assert_eq!(optimizer.open_batches().len(), 1, "the batch is active");
    let report = optimizer.rollback(batch).expect("rollback");
    assert_eq!(report.restored, changes.len(), "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(optimizer.open_batches().is_empty(), "the batch is closed");
    for change in &changes {
        let now = actuators
            .read(&Target::Host, &change.knob)
            .expect("read back");
        assert_eq!(now, change.before, "{:?} after rollback", change.knob);
    }
    changes
}

#[test]
fn sampler_sees_the_fixture_knobs() {
    let (_dir, roots) = fixture();
    let snap = sample(&roots);
    let tunables = &snap.memory.tunables;
    assert_eq!(tunables.swappiness, Some(60));
    assert_eq!(tunables.dirty_ratio, Some(20));
    assert_eq!(tunables.dirty_background_ratio, Some(10));
    assert_eq!(tunables.dirty_expire_centisecs, Some(3000));
    let governors: Vec<(u32, &str)> = tunables
        .governors
        .iter()
        .map(|g| (g.cpu, g.governor.as_str()))
        .collect();
    assert_eq!(
        governors,
        [
            (0, "powersave"),
            (1, "powersave"),
            (2, "performance"),
            (3, "schedutil")
        ]
    );
    assert_eq!(snap.memory.thp_enabled.as_deref(), Some("never"));
    assert!(snap.memory.swap_out_per_sec > 0.0);
}

#[test]
fn the_untouched_numa64_tree_has_no_tunables() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numa64");
    let mut sampler = MemorySampler::new(&HostRoots::under(&source));
    let tunables = sampler.sample().expect("memory sample").tunables;
    assert_eq!(tunables, Default::default());
}

#[test]
fn every_system_knob_fix_applies_and_rolls_back_on_a_fixture_root() {
    let (dir, roots) = fixture();
    let snap = sample(&roots);
    let fixes = system_knob_fixes(&snap);
    let mut done = Vec::new();
    for fix in &fixes {
        let changes = apply_and_roll_back(&roots, fix);
        done.push((fix.strategy.as_str(), planned(&changes)));
    }
    assert_eq!(done, expected_plans());
    // Untouched files stay untouched: cpu2 already runs performance, cpu3 cannot.
    let untouched = [governor_path(2), governor_path(3)];
    let bytes = bytes_of(dir.path(), &untouched);
    assert_eq!(bytes[&governor_path(2)], b"performance\n");
    assert_eq!(bytes[&governor_path(3)], b"schedutil\n");
}

/// The operator's promise: after a rollback the host reads exactly as before, byte for
/// byte. On real sysfs/procfs the kernel re-renders each file; on a fixture the actuator
/// renders it the same way (brackets moved in a choice list, a trailing newline).
#[test]
fn rollback_leaves_every_fixture_file_byte_identical() {
    let (dir, roots) = fixture();
    let paths: Vec<String> = fixture_knobs().into_iter().map(|(p, _)| p).collect();
    let before = bytes_of(dir.path(), &paths);
    let snap = sample(&roots);
    let fixes = system_knob_fixes(&snap);
    assert_eq!(fixes.len(), expected_plans().len());
    for fix in &fixes {
        apply_and_roll_back(&roots, fix);
        let after = bytes_of(dir.path(), &paths);
        for (path, bytes) in &before {
            assert_eq!(
                String::from_utf8_lossy(&after[path]),
                String::from_utf8_lossy(bytes),
                "{path} after rolling back {}",
                fix.strategy
            );
        }
    }
}

/// Puts real kernel files back as they were if a test fails half way.
struct RestoreOnDrop {
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl RestoreOnDrop {
    fn save(paths: &[&str]) -> Self {
        let files = paths
            .iter()
            .map(|p| {
                let path = Path::new("/").join(p);
                let bytes = std::fs::read(&path).expect("read real knob");
                (path, bytes)
            })
            .collect();
        RestoreOnDrop { files }
    }
}

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        for (path, bytes) in &self.files {
            if std::fs::read(path).ok().as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            // The kernel takes the selected word ("[madvise]" of a choice list) or number.
            let text = String::from_utf8_lossy(bytes);
            let word = match text.split_once('[').and_then(|(_, r)| r.split_once(']')) {
                Some((word, _)) => word.to_string(),
                None => text.trim().to_string(),
            };
            if let Err(err) = std::fs::write(path, word) {
                eprintln!("could not restore {}: {err}", path.display());
            }
        }
    }
}

/// The same round trip on this host's own kernel files (THP and vm.*; cpufreq is absent
/// here, so the governor strategy must propose nothing).
#[test]
fn real_host_knobs_round_trip_byte_identical() {
    let paths = [
        THP_ENABLED,
        THP_DEFRAG,
        SWAPPINESS,
        DIRTY_RATIO,
        DIRTY_BACKGROUND_RATIO,
    ];
    for path in paths {
        assert!(Path::new("/").join(path).exists(), "this host has /{path}");
    }
    let _guard = RestoreOnDrop::save(&paths);
    let roots = HostRoots::default();
    let before = bytes_of(Path::new("/"), &paths.map(str::to_string));
    let mut sampler = MemorySampler::new(&roots);
    let mut snap = Snapshot {
        memory: sampler.sample().expect("memory sample"),
        ..Snapshot::default()
    };
    // This idle VM neither swaps nor holds dirty pages: say it does, so the strategies
    // speak; the knob values they act on are the host's own.
    snap.memory.swap_out_per_sec = 50.0;
    snap.memory.dirty_kb = snap.memory.total_kb / 10;
    let fixes = system_knob_fixes(&snap);
    assert!(
        fixes.iter().all(|f| f.strategy != "performance-governor"),
        "no cpufreq on this host: {fixes:?}"
    );
    let strategies: Vec<&str> = fixes.iter().map(|f| f.strategy.as_str()).collect();
    assert!(
        strategies.len() >= 2,
        "expected THP and vm fixes on this host (swappiness > 10, dirty ratios above the \
         targets, THP not always); got {strategies:?}"
    );
    for fix in &fixes {
        let changes = apply_and_roll_back(&roots, fix);
        assert!(!changes.is_empty(), "{}", fix.strategy);
        let after = bytes_of(Path::new("/"), &paths.map(str::to_string));
        assert_eq!(after, before, "after rolling back {}", fix.strategy);
    }
}

/// A plan replacing another (`Optimizer::supersede`) goes straight from the old batch's
/// values to its own, never back through the values from before it; a knob only the old
/// batch set is put back; and rolling the new batch back restores the host from before
/// both.
#[test]
fn a_replacing_batch_starts_from_the_values_before_the_one_it_replaces() {
    let (_dir, roots) = fixture();
    let journal = tempfile::tempdir().expect("journal dir");
    let actuators = HostActuators::new(roots.clone());
    let (mut optimizer, _) = Optimizer::open(journal.path(), actuators.clone()).expect("journal");
    let knob = |path: &str| sutazai_top::model::Knob::HostFile {
        path: PathBuf::from(path),
    };
    let change = |path: &str, before: &str, after: &str| Change {
        target: Target::Host,
        knob: knob(path),
        before: before.to_string(),
        after: after.to_string(),
    };
    let read = |path: &str| actuators.read(&Target::Host, &knob(path)).expect("read");
    let old = optimizer
        .apply(
            "old plan",
            &[
                change(SWAPPINESS, "60", "10"),
                change(DIRTY_RATIO, "20", "10"),
            ],
        )
        .expect("old plan");
    // The new plan keeps swappiness at 10 (as read now), leaves the dirty ratio alone and
    // sets the background ratio.
    let new = optimizer
        .supersede(
            &[old],
            "new plan",
            vec![
                change(SWAPPINESS, "10", "10"),
                change(DIRTY_BACKGROUND_RATIO, "10", "5"),
            ],
        )
        .expect("new plan");
    assert_eq!(read(SWAPPINESS), "10");
    assert_eq!(
        read(DIRTY_RATIO),
        "20",
        "only the old plan set it: put back"
    );
    assert_eq!(read(DIRTY_BACKGROUND_RATIO), "5");
    let open = optimizer.open_batches();
    assert_eq!(open.iter().map(|b| b.batch).collect::<Vec<_>>(), vec![new]);
    let swappiness = open[0]
        .changes
        .iter()
        .find(|(c, _)| c.knob == knob(SWAPPINESS))
        .expect("kept in the new batch");
    assert_eq!(
        swappiness.0.before, "60",
        "from the value before the old plan"
    );

    let report = optimizer.rollback(new).expect("rollback");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(read(SWAPPINESS), "60");
    assert_eq!(read(DIRTY_RATIO), "20");
    assert_eq!(read(DIRTY_BACKGROUND_RATIO), "10");
    assert!(optimizer.open_batches().is_empty());
}
