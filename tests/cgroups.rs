//! Cgroup mounts, membership and counters: fixture v1 and v2 hosts with known values, the
//! real host (v1, v2 or hybrid: whatever it mounts), and a real cgroup with a busy process in it.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sutazai_top::host::HostRoots;
use sutazai_top::host::cgroups::{
    CgroupCounters, CgroupMounts, ProcCgroups, parse_proc_cgroup, read_proc_cgroups,
};
use sutazai_top::model::{CgroupLayout, Pressure, PsiLine, PsiResource, UsageSource};

use host_support::favour;

const CONTAINER_ID: &str = "eee71a6965a1c9c3837eb33248e30050e91b570b72a21a75e2660864fdcb6548";
const FIXTURE_PID: i32 = 4242;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn docker_path() -> String {
    format!("/docker/{CONTAINER_ID}")
}

#[test]
fn v1_fixture_detects_every_controller_and_ignores_named_hierarchy() {
    let dir = fixture("cgroup_v1");
    let mounts = CgroupMounts::detect(&HostRoots::under(&dir));
    assert_eq!(mounts.layout(), CgroupLayout::V1);
    assert_eq!(mounts.unified, None);
    let names: Vec<&str> = mounts.v1.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"
        ]
    );
    assert_eq!(
        mounts.v1.get("memory"),
        Some(&dir.join("sys/fs/cgroup/memory"))
    );
}

#[test]
fn v1_fixture_counters_are_read_exactly() {
    let roots = HostRoots::under(&fixture("cgroup_v1"));
    let mounts = CgroupMounts::detect(&roots);
    let cg = read_proc_cgroups(&roots, FIXTURE_PID).unwrap();
    assert_eq!(cg.unified, None);
    assert_eq!(cg.v1.len(), 8, "name=systemd is left out: {cg:?}");
    assert_eq!(cg.v1.get("memory"), Some(&docker_path()));
    let counters = mounts.read_counters(&cg).unwrap();
    assert_eq!(
        counters,
        CgroupCounters {
            source: UsageSource::CgroupV1,
            cpu_usage_ns: Some(123_456_789_000),
            memory_usage_bytes: 104_857_600,
            // total_inactive_file wins over the cgroup-local inactive_file.
            inactive_file_bytes: 4_194_304,
            memory_limit_bytes: Some(536_870_912),
            // The recursive throttle file, Read/Write rows of both devices, Totals skipped.
            io_read_bytes: 1_048_576 + 4096,
            io_write_bytes: 2_097_152 + 8192,
            pids: 12,
            nr_periods: 120,
            nr_throttled: 7,
            cpu_limit_cores: Some(1.5),
            cpu_weight: Some(512),
            cpuset_cpus: "0-1".to_string(),
            cpuset_mems: "0".to_string(),
            pressure: Pressure::default(),
            path: docker_path(),
        }
    );
}

#[test]
fn v2_fixture_detects_single_unified_mount() {
    let dir = fixture("cgroup_v2");
    let mounts = CgroupMounts::detect(&HostRoots::under(&dir));
    assert_eq!(mounts.layout(), CgroupLayout::V2);
    assert!(mounts.v1.is_empty());
    assert_eq!(mounts.unified, Some(dir.join("sys/fs/cgroup")));
}

fn psi(avg10: f32, avg60: f32, avg300: f32, total_us: u64) -> PsiLine {
    PsiLine {
        avg10,
        avg60,
        avg300,
        total_us,
    }
}

#[test]
fn v2_fixture_counters_are_read_exactly() {
    let roots = HostRoots::under(&fixture("cgroup_v2"));
    let mounts = CgroupMounts::detect(&roots);
    let cg = read_proc_cgroups(&roots, FIXTURE_PID).unwrap();
    assert_eq!(cg.unified, Some(docker_path()));
    assert!(cg.v1.is_empty());
    let counters = mounts.read_counters(&cg).unwrap();
    assert_eq!(
        counters,
        CgroupCounters {
            source: UsageSource::CgroupV2,
            cpu_usage_ns: Some(2_500_000_000),
            memory_usage_bytes: 104_857_600,
            inactive_file_bytes: 4_194_304,
            memory_limit_bytes: Some(536_870_912),
            io_read_bytes: 1_048_576 + 4096,
            io_write_bytes: 2_097_152 + 8192,
            pids: 12,
            nr_periods: 50,
            nr_throttled: 7,
            cpu_limit_cores: Some(1.5),
            cpu_weight: Some(100),
            // cpuset.cpus is empty (unset); the effective file is what applies.
            cpuset_cpus: "0-1".to_string(),
            cpuset_mems: "0".to_string(),
            pressure: Pressure {
                cpu: Some(PsiResource {
                    some: psi(1.5, 0.75, 0.25, 123_456),
                    full: Some(psi(0.5, 0.25, 0.1, 65_432)),
                }),
                memory: Some(PsiResource {
                    some: psi(2.0, 1.0, 0.5, 2000),
                    full: Some(psi(1.0, 0.5, 0.25, 1000)),
                }),
                io: Some(PsiResource {
                    some: psi(3.0, 2.0, 1.0, 3000),
                    full: Some(psi(2.5, 1.5, 0.75, 2500)),
                }),
                // Read through the 2 s cache: of unknown age.
                read_at_ms: 0,
            },
            path: docker_path(),
        }
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn hybrid_v1_counters_take_pressure_from_unified_tree_and_honour_mount_root() {
    let dir = tempfile::tempdir().unwrap();
    let roots = HostRoots::under(dir.path());
    // Inside a container the memory hierarchy is mounted from the container's own cgroup.
    write(
        &roots.proc.join("self/mountinfo"),
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    );
    write(
        &roots.sys.join("fs/cgroup/memory/memory.usage_in_bytes"),
        "4096\n",
    );
    write(
        &roots.sys.join("fs/cgroup/memory/memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    write(
        &roots.sys.join("fs/cgroup/unified/agents/a/cpu.pressure"),
        "some avg10=9.00 avg60=8.00 avg300=7.00 total=99\n",
    );
    let mounts = CgroupMounts::detect(&roots);
    assert_eq!(mounts.layout(), CgroupLayout::Hybrid);
    let cg = parse_proc_cgroup("4:memory:/docker/abc\n0::/agents/a\n");
    let counters = mounts.read_counters(&cg).unwrap();
    assert_eq!(counters.source, UsageSource::CgroupV1);
    assert_eq!(counters.path, "/docker/abc");
    assert_eq!(counters.memory_usage_bytes, 4096);
    assert_eq!(counters.memory_limit_bytes, None, "2^63-ish is unlimited");
    // Controllers that are not mounted leave their figures at the default.
    assert_eq!(counters.cpu_usage_ns, None);
    assert_eq!(counters.cpu_limit_cores, None);
    assert_eq!(counters.pids, 0);
    assert_eq!(
        counters.pressure.cpu.map(|p| p.some),
        Some(psi(9.0, 8.0, 7.0, 99))
    );
    assert_eq!(counters.pressure.memory, None);
}

#[test]
fn v2_missing_optional_files_leave_defaults_and_unlimited_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let roots = HostRoots::under(dir.path());
    write(
        &roots.proc.join("self/mountinfo"),
        "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
    );
    let cgdir = roots.sys.join("fs/cgroup/x.slice");
    // cpu.stat is the one file every v2 cgroup has; everything else here is optional.
    write(&cgdir.join("cpu.stat"), "usage_usec 5\n");
    write(&cgdir.join("memory.current"), "77\n");
    write(&cgdir.join("memory.max"), "max\n");
    write(&cgdir.join("cpu.max"), "max 100000\n");
    write(&cgdir.join("cpuset.cpus"), "3\n");
    let mounts = CgroupMounts::detect(&roots);
    let counters = mounts
        .read_counters(&parse_proc_cgroup("0::/x.slice\n"))
        .unwrap();
    assert_eq!(
        counters,
        CgroupCounters {
            source: UsageSource::CgroupV2,
            cpu_usage_ns: Some(5000),
            memory_usage_bytes: 77,
            cpuset_cpus: "3".to_string(),
            path: "/x.slice".to_string(),
            ..CgroupCounters::default()
        }
    );
}

#[test]
fn vanished_cgroup_is_an_error_naming_the_path() {
    for name in ["cgroup_v1", "cgroup_v2"] {
        let mounts = CgroupMounts::detect(&HostRoots::under(&fixture(name)));
        let cg = parse_proc_cgroup("4:memory:/docker/gone\n0::/docker/gone\n");
        let err = mounts.read_counters(&cg).unwrap_err().to_string();
        assert!(err.contains("/docker/gone"), "{name}: {err}");
    }
    // No hierarchy holds the process at all.
    let none = CgroupMounts::default();
    assert!(none.read_counters(&ProcCgroups::default()).is_err());
}

#[test]
fn missing_proc_cgroup_is_an_error() {
    let roots = HostRoots::under(&fixture("cgroup_v2"));
    let err = read_proc_cgroups(&roots, 999_999).unwrap_err().to_string();
    assert!(err.contains("999999/cgroup"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The real host: v1, v2 or hybrid, whichever this machine mounts
// ---------------------------------------------------------------------------------------------

/// One cgroup mount as the test reads it from mountinfo, independently of the library.
#[derive(Debug, Clone, PartialEq)]
struct MountedHierarchy {
    /// The mount's root within its hierarchy (field 4).
    root: String,
    mount_point: PathBuf,
    /// Controllers bound to a v1 hierarchy; empty for cgroup2 and for named-only v1
    /// hierarchies (name=systemd), which hold no controller and so do not count as v1.
    controllers: Vec<String>,
    unified: bool,
}

/// Controller names a v1 mount may bind: the kernel's list plus whatever /proc/cgroups adds,
/// so a mount option such as "xattr" or "name=systemd" is never taken for a controller.
fn v1_controller_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "debug",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    ]
    .map(str::to_string)
    .to_vec();
    let listed = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
    names.extend(
        listed
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string),
    );
    names
}

fn cgroup_hierarchies(mountinfo: &str, controller_names: &[String]) -> Vec<MountedHierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let head: Vec<&str> = before.split_whitespace().collect();
            let tail: Vec<&str> = after.split_whitespace().collect();
            let unified = match *tail.first()? {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let options = tail.get(2).copied().unwrap_or("");
            let controllers = options
                .split(',')
                .filter(|o| !unified && controller_names.iter().any(|n| n == o))
                .map(str::to_string)
                .collect();
            Some(MountedHierarchy {
                root: head.get(3)?.to_string(),
                mount_point: PathBuf::from(head.get(4)?),
                controllers,
                unified,
            })
        })
        .collect()
}

/// The layout a host has, from counting its cgroup (with a controller) and cgroup2 mounts.
fn expected_layout(hierarchies: &[MountedHierarchy]) -> CgroupLayout {
    let v1 = hierarchies
        .iter()
        .filter(|h| !h.controllers.is_empty())
        .count();
    let v2 = hierarchies.iter().filter(|h| h.unified).count();
    match (v1 > 0, v2 > 0) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::None,
    }
}

fn real_hierarchies() -> Vec<MountedHierarchy> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    cgroup_hierarchies(&mountinfo, &v1_controller_names())
}

/// The derivation the real-host tests rely on gives the known answer on the fixture hosts.
#[test]
fn expected_layout_derivation_matches_fixture_hosts() {
    let names = v1_controller_names();
    for (name, layout) in [
        ("cgroup_v1", CgroupLayout::V1),
        ("cgroup_v2", CgroupLayout::V2),
    ] {
        let text = std::fs::read_to_string(fixture(name).join("proc/self/mountinfo")).unwrap();
        assert_eq!(
            expected_layout(&cgroup_hierarchies(&text, &names)),
            layout,
            "{name}"
        );
    }
    // A named-only v1 hierarchy beside the unified tree is still a v2 host.
    let text = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
                40 30 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,none,name=systemd\n";
    assert_eq!(
        expected_layout(&cgroup_hierarchies(text, &names)),
        CgroupLayout::V2
    );
    let hybrid = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    assert_eq!(
        expected_layout(&cgroup_hierarchies(hybrid, &names)),
        CgroupLayout::Hybrid
    );
}

/// Our own membership, read straight from the proc file: (unified path, controller -> path).
fn raw_self_cgroup() -> (Option<String>, BTreeMap<String, String>) {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut unified = None;
    let mut v1 = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.splitn(3, ':').collect();
        let [id, controllers, path] = fields[..] else {
            panic!("unexpected /proc/self/cgroup line {line:?}");
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_string());
        }
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            v1.insert(controller.to_string(), path.to_string());
        }
    }
    (unified, v1)
}

#[test]
fn real_host_layout_matches_mountinfo_and_our_cgroups_parse() {
    let hierarchies = real_hierarchies();
    let layout = expected_layout(&hierarchies);
    let roots = HostRoots::default();
    let mounts = CgroupMounts::detect(&roots);
    assert_eq!(mounts.layout(), layout, "{hierarchies:?}\n{mounts:?}");

    // Every mounted v1 controller is found, at one of the places it is mounted.
    let v1_controllers: BTreeSet<&String> =
        hierarchies.iter().flat_map(|h| &h.controllers).collect();
    for controller in &v1_controllers {
        let found = mounts.v1.get(*controller);
        assert!(
            hierarchies
                .iter()
                .any(|h| h.controllers.contains(controller) && Some(&h.mount_point) == found),
            "{controller}: {found:?}"
        );
    }
    assert_eq!(mounts.v1.len(), v1_controllers.len(), "{mounts:?}");
    let unified_points: Vec<&PathBuf> = hierarchies
        .iter()
        .filter(|h| h.unified)
        .map(|h| &h.mount_point)
        .collect();
    match &mounts.unified {
        Some(found) => assert!(unified_points.contains(&found), "{found:?}"),
        None => assert!(unified_points.is_empty(), "{unified_points:?}"),
    }

    let (raw_unified, raw_v1) = raw_self_cgroup();
    let cg = read_proc_cgroups(&roots, std::process::id() as i32).unwrap();
    // Named hierarchies (name=systemd) hold no controller and are left out.
    let mut raw_controllers = raw_v1.clone();
    raw_controllers.retain(|controller, _| !controller.contains('='));
    assert_eq!(cg.v1, raw_controllers);
    assert_eq!(cg.unified, raw_unified);
    match layout {
        CgroupLayout::V1 | CgroupLayout::Hybrid => {
            for controller in &v1_controllers {
                let path = cg.v1.get(*controller);
                assert!(
                    path.is_some_and(|p| p.starts_with('/')),
                    "{controller}: {cg:?}"
                );
            }
        }
        CgroupLayout::V2 | CgroupLayout::None => {}
    }
    if matches!(layout, CgroupLayout::V2 | CgroupLayout::Hybrid) {
        let path = cg.unified.as_deref();
        assert!(
            path.is_some_and(|p| p.starts_with('/')),
            "no 0:: entry: {cg:?}"
        );
    }

    let memory_v1 = v1_controllers.iter().any(|c| *c == "memory");
    match (memory_v1, &raw_unified, mounts.unified.is_some()) {
        (true, _, _) => {
            let counters = mounts.read_counters(&cg).unwrap();
            assert_eq!(counters.source, UsageSource::CgroupV1);
            assert_eq!(Some(&counters.path), raw_v1.get("memory"));
            assert!(counters.memory_usage_bytes > 0, "{counters:?}");
        }
        (false, Some(unified), true) => {
            let counters = mounts.read_counters(&cg).unwrap();
            assert_eq!(counters.source, UsageSource::CgroupV2);
            assert_eq!(&counters.path, unified);
            assert!(
                counters.cpu_usage_ns.is_some_and(|ns| ns > 0),
                "{counters:?}"
            );
        }
        _ => assert!(mounts.read_counters(&cg).is_err(), "no hierarchy holds us"),
    }
}

/// A busy child in cgroups this test created; killed, reaped and removed on every exit path.
struct TestCgroups {
    child: Option<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in &self.dirs {
            // The reaped task may take a moment to leave the cgroup.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl TestCgroups {
    /// Create `name` under each mount (co-mounted controllers share one directory).
    fn create(mounts: &[&PathBuf], name: &str) -> TestCgroups {
        let mut guard = TestCgroups {
            child: None,
            dirs: Vec::new(),
        };
        for mount in mounts {
            let dir = mount.join(name);
            if guard.dirs.contains(&dir) {
                continue;
            }
            if let Err(err) = std::fs::create_dir(&dir) {
                panic!("cannot create test cgroup {}: {err}", dir.display());
            }
            guard.dirs.push(dir);
        }
        guard
    }

    /// Start a busy child, move it into every test cgroup, then let it start spinning.
    /// The child waits for a line before exec'ing the busy loop, so the loop's fresh pages are
    /// charged to (and its CPU time counted in) the cgroups it has been moved into by then.
    fn start_busy_child(&mut self) -> u32 {
        let child = Command::new("sh")
            .args(["-c", "read go; exec sh -c 'while :; do :; done'"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        for dir in &self.dirs {
            if let Err(err) = std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
                panic!("cannot move the child into {}: {err}", dir.display());
            }
        }
        favour(pid);
        let stdin = self.child.as_mut().and_then(|c| c.stdin.as_mut()).unwrap();
        stdin.write_all(b"go\n").unwrap();
        pid
    }
}

/// The cgroup path a test cgroup has in proc/<pid>/cgroup: the directory under the mount,
/// prefixed by the mount's root when the hierarchy is mounted from a sub-cgroup.
fn expected_cgroup_path(hierarchies: &[MountedHierarchy], mount: &Path, name: &str) -> String {
    let root = hierarchies
        .iter()
        .find(|h| h.mount_point == mount)
        .map_or("/", |h| h.root.as_str());
    format!("{}/{name}", root.trim_end_matches('/'))
}

/// Counters read twice, 300 ms apart, with the CPU time the busy child used in between.
fn measure(mounts: &CgroupMounts, cg: &ProcCgroups) -> (CgroupCounters, u64) {
    std::thread::sleep(Duration::from_millis(50));
    let first = mounts.read_counters(cg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = mounts.read_counters(cg).unwrap();
    let (Some(before), Some(after)) = (first.cpu_usage_ns, second.cpu_usage_ns) else {
        panic!("no CPU usage read: {first:?} then {second:?}");
    };
    (second, after.saturating_sub(before))
}

/// v1 and hybrid hosts: the child in fresh cpuacct and memory cgroups.
fn busy_child_in_v1_cgroups(mounts: &CgroupMounts, cpuacct: &PathBuf, memory: &PathBuf) {
    let name = format!("sutazai-test-{}", std::process::id());
    let mut guard = TestCgroups::create(&[cpuacct, memory], &name);
    let pid = guard.start_busy_child();
    let hierarchies = real_hierarchies();

    let cg = read_proc_cgroups(&HostRoots::default(), pid as i32).unwrap();
    let memory_path = expected_cgroup_path(&hierarchies, memory, &name);
    assert_eq!(cg.v1.get("memory"), Some(&memory_path));
    let cpuacct_path = expected_cgroup_path(&hierarchies, cpuacct, &name);
    assert_eq!(cg.v1.get("cpuacct"), Some(&cpuacct_path));
    let (counters, grew) = measure(mounts, &cg);

    assert_eq!(counters.source, UsageSource::CgroupV1);
    assert_eq!(counters.path, memory_path);
    assert!(grew > 100_000_000, "cpu grew only {grew} ns in 300 ms");
    assert!(counters.memory_usage_bytes > 0, "{counters:?}");
    // The child joined no pids cgroup of ours; its own pids cgroup is not read on v1.
    assert_eq!(counters.pids, 0, "pids controller not joined: {counters:?}");
    drop(guard);
}

/// v2 hosts: the child in a fresh cgroup under the unified mount, with no controller
/// enabled by us. cpu.stat is in every v2 cgroup; memory.current and pids.current only when
/// the parent already delegates those controllers, so they are checked only then.
fn busy_child_in_v2_cgroup(mounts: &CgroupMounts, unified: &PathBuf) {
    let name = format!("sutazai-test-{}", std::process::id());
    let mut guard = TestCgroups::create(&[unified], &name);
    let pid = guard.start_busy_child();
    let dir = unified.join(&name);

    let cg = read_proc_cgroups(&HostRoots::default(), pid as i32).unwrap();
    let path = expected_cgroup_path(&real_hierarchies(), unified, &name);
    assert_eq!(cg.unified, Some(path.clone()), "{cg:?}");
    let (counters, grew) = measure(mounts, &cg);

    assert_eq!(counters.source, UsageSource::CgroupV2);
    assert_eq!(counters.path, path);
    assert!(grew > 100_000_000, "cpu grew only {grew} ns in 300 ms");
    if dir.join("memory.current").exists() {
        assert!(counters.memory_usage_bytes > 0, "{counters:?}");
    } else {
        assert_eq!(
            counters.memory_usage_bytes, 0,
            "no memory.current: {counters:?}"
        );
    }
    if dir.join("pids.current").exists() {
        assert_eq!(counters.pids, 1, "only the busy child: {counters:?}");
    } else {
        assert_eq!(counters.pids, 0, "no pids.current: {counters:?}");
    }
    drop(guard);
}

#[test]
fn real_cgroup_counts_a_busy_process() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test creates cgroups and must run as root (scripts/test.sh runs the suite as root)"
    );
    let mounts = CgroupMounts::detect(&HostRoots::default());
    match mounts.layout() {
        CgroupLayout::V1 | CgroupLayout::Hybrid => {
            let (Some(cpuacct), Some(memory)) = (mounts.v1.get("cpuacct"), mounts.v1.get("memory"))
            else {
                panic!("v1 host without both cpuacct and memory hierarchies: {mounts:?}");
            };
            busy_child_in_v1_cgroups(&mounts, cpuacct, memory);
        }
        CgroupLayout::V2 => {
            let Some(unified) = &mounts.unified else {
                unreachable!("a v2 layout has a unified mount");
            };
            busy_child_in_v2_cgroup(&mounts, unified);
        }
        CgroupLayout::None => panic!("no cgroup hierarchy mounted; cannot measure a cgroup"),
    }
}
