//! Cgroup mounts, membership and counters: fixture v1 and v2 hosts with known values, the
//! real (hybrid) host, and a real v1 cgroup with a busy process in it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sutazai_top::host::HostRoots;
use sutazai_top::host::cgroups::{
    CgroupCounters, CgroupMounts, ProcCgroups, parse_proc_cgroup, read_proc_cgroups,
};
use sutazai_top::snapshot::{CgroupLayout, Pressure, PsiLine, PsiResource, UsageSource};

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

#[test]
fn real_host_is_hybrid_and_our_cgroups_parse() {
    let roots = HostRoots::default();
    let mounts = CgroupMounts::detect(&roots);
    assert_eq!(mounts.layout(), CgroupLayout::Hybrid, "{mounts:?}");
    assert_eq!(
        mounts.v1.get("memory"),
        Some(&PathBuf::from("/sys/fs/cgroup/memory"))
    );
    assert_eq!(
        mounts.unified,
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory_line = text
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, path)| path.to_string()))
        .unwrap();
    let cg = read_proc_cgroups(&roots, std::process::id() as i32).unwrap();
    assert!(cg.unified.as_deref().is_some_and(|p| p.starts_with('/')));
    assert_eq!(cg.v1.get("memory"), Some(&memory_line));
    assert!(cg.v1.contains_key("cpuacct") && cg.v1.contains_key("pids"));
    assert!(!cg.v1.keys().any(|k| k.contains('=')));
    let counters = mounts.read_counters(&cg).unwrap();
    assert_eq!(counters.source, UsageSource::CgroupV1);
    assert_eq!(counters.path, memory_line);
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

/// Lower the child's nice value so the test measures it even while other builds load the
/// machine; only the process this test spawned is changed.
fn favour(pid: u32) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, -10) };
    if rc != 0 {
        eprintln!("could not raise the child's priority; measuring anyway");
    }
}

#[test]
fn real_v1_cgroup_counts_a_busy_process() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: creating cgroups needs root");
        return;
    }
    let roots = HostRoots::default();
    let mounts = CgroupMounts::detect(&roots);
    let (Some(cpuacct), Some(memory)) = (mounts.v1.get("cpuacct"), mounts.v1.get("memory")) else {
        eprintln!("skipped: no v1 cpuacct and memory hierarchies here");
        return;
    };
    let name = format!("sutazai-test-{}", std::process::id());
    let mut guard = TestCgroups {
        child: None,
        dirs: Vec::new(),
    };
    for mount in [cpuacct, memory] {
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).unwrap();
        guard.dirs.push(dir);
    }
    // The child waits for a line before exec'ing the busy loop, so the loop's fresh pages are
    // charged to (and its CPU time counted in) the cgroups it has been moved into by then.
    let child = Command::new("sh")
        .args(["-c", "read go; exec sh -c 'while :; do :; done'"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    guard.child = Some(child);
    for dir in &guard.dirs {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
    favour(pid);
    let stdin = guard.child.as_mut().and_then(|c| c.stdin.as_mut()).unwrap();
    stdin.write_all(b"go\n").unwrap();

    let cg = read_proc_cgroups(&roots, pid as i32).unwrap();
    let expected_path = format!("/{name}");
    assert_eq!(cg.v1.get("memory"), Some(&expected_path));
    assert_eq!(cg.v1.get("cpuacct"), Some(&expected_path));
    std::thread::sleep(Duration::from_millis(50));
    let first = mounts.read_counters(&cg).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let second = mounts.read_counters(&cg).unwrap();

    assert_eq!(second.source, UsageSource::CgroupV1);
    assert_eq!(second.path, expected_path);
    let grew = second.cpu_usage_ns.unwrap() - first.cpu_usage_ns.unwrap();
    assert!(grew > 100_000_000, "cpu grew only {grew} ns in 300 ms");
    assert!(second.memory_usage_bytes > 0, "{second:?}");
    assert_eq!(
        second.pids, 0,
        "pids controller not joined: stays at default"
    );
}
