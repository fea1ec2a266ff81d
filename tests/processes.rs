//! The process sampler: odd comms and broken stat files on a fixture proc root, pid reuse,
//! and a real busy child on the real host.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use sutazai_top::host::HostRoots;
use sutazai_top::host::processes::{ProcessSampler, read_process_id};
use sutazai_top::model::{ProcessId, ProcessStat};

use host_support::{copy_tree, favour};

fn odd_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/procs_odd")
}

/// A writable copy of the odd proc root, so a test can rewrite stat files.
fn copy_of_odd_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&odd_fixture(), dir.path());
    dir
}

/// A stat line shaped like the fixture's, for rewriting between samples.
fn stat_line(pid: i32, comm: &str, utime: u64, start_time: u64) -> String {
    format!(
        "{pid} ({comm}) R 1 {pid} {pid} 0 -1 4194560 500 0 0 0 {utime} 100 0 0 20 0 2 0 \
         {start_time} 10485760 256 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 \
         0 0 0 0 0 0 0 0 0 0 0\n"
    )
}

fn by_pid(stats: &[ProcessStat], pid: i32) -> Option<&ProcessStat> {
    stats.iter().find(|p| p.id.pid == pid)
}

#[test]
fn odd_comms_parse_exactly_and_broken_stats_are_skipped() {
    let roots = HostRoots::under(&odd_fixture());
    let mut sampler = ProcessSampler::new(&roots, 10);
    let stats = sampler.sample().unwrap();
    let mut pids: Vec<i32> = stats.iter().map(|p| p.id.pid).collect();
    pids.sort_unstable();
    // 103 (truncated stat), 104 (garbage) and 105 (no stat: vanished) are skipped.
    assert_eq!(pids, [100, 101, 102]);

    let a = by_pid(&stats, 100).unwrap();
    assert_eq!(
        a,
        &ProcessStat {
            id: ProcessId {
                pid: 100,
                start_time: 5000
            },
            comm: "a) (b".to_string(),
            cmdline: "/usr/bin/a --flag (b)".to_string(),
            state: 'R',
            cpu_pct: 0.0,
            rss_kb: 1024,
            threads: 2,
            allowed_cpus: "0-1".to_string(),
            policy: "SCHED_OTHER".to_string(),
            nice: 0,
            // Hybrid-style membership: the v1 cpu path says more than the unified "/".
            cgroup: "/agents/100".to_string(),
        }
    );
    let xy = by_pid(&stats, 101).unwrap();
    assert_eq!(xy.comm, "x\ny");
    assert_eq!(xy.policy, "SCHED_BATCH");
    assert_eq!(xy.nice, 10);
    assert_eq!(xy.rss_kb, 2048);
    assert_eq!(xy.allowed_cpus, "0");
    let weird = by_pid(&stats, 102).unwrap();
    assert_eq!(weird.comm, "weird name");
    assert_eq!(weird.cmdline, "", "no cmdline, like a kernel thread");
    assert_eq!(weird.policy, "SCHED_IDLE");
    assert_eq!(weird.nice, 19);
    assert_eq!(weird.threads, 4);
    // First round: no interval yet, so ranking falls to resident memory.
    assert_eq!(
        stats.iter().map(|p| p.id.pid).collect::<Vec<_>>(),
        [101, 100, 102]
    );
}

#[test]
fn top_n_limits_the_list() {
    let roots = HostRoots::under(&odd_fixture());
    let stats = ProcessSampler::new(&roots, 1).sample().unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].id.pid, 101, "largest rss wins when CPU ties");
    assert!(ProcessSampler::new(&roots, 0).sample().unwrap().is_empty());
}

#[test]
fn read_process_id_on_fixture() {
    let roots = HostRoots::under(&odd_fixture());
    assert_eq!(
        read_process_id(&roots, 101),
        Some(ProcessId {
            pid: 101,
            start_time: 6000
        })
    );
    assert_eq!(read_process_id(&roots, 103), None);
    assert_eq!(read_process_id(&roots, 104), None);
    assert_eq!(read_process_id(&roots, 105), None);
    assert_eq!(read_process_id(&roots, 999_999), None);
}

#[test]
fn reused_pid_is_a_new_process_not_a_huge_delta() {
    let dir = copy_of_odd_fixture();
    let roots = HostRoots::under(dir.path());
    let stat = roots.proc.join("100/stat");
    let mut sampler = ProcessSampler::new(&roots, 10);
    std::fs::write(&stat, stat_line(100, "a) (b", 300, 5000)).unwrap();
    sampler.sample().unwrap();

    // Same process, more CPU time: a real, positive delta.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&stat, stat_line(100, "a) (b", 310, 5000)).unwrap();
    let same = sampler.sample().unwrap();
    let a = by_pid(&same, 100).unwrap();
    assert!(a.cpu_pct > 0.0, "{a:?}");
    assert_eq!(same.first().map(|p| p.id.pid), Some(100), "busiest first");

    // The pid is reused by a process that started later with a huge counter of its own.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&stat, stat_line(100, "new one", 900_000, 9000)).unwrap();
    let reused = sampler.sample().unwrap();
    let new = by_pid(&reused, 100).unwrap();
    assert_eq!(
        new.id,
        ProcessId {
            pid: 100,
            start_time: 9000
        }
    );
    assert_eq!(new.comm, "new one");
    assert_eq!(new.cpu_pct, 0.0);
}

#[test]
fn gone_processes_are_forgotten() {
    let dir = copy_of_odd_fixture();
    let roots = HostRoots::under(dir.path());
    let mut sampler = ProcessSampler::new(&roots, 10);
    sampler.sample().unwrap();
    std::fs::remove_dir_all(roots.proc.join("100")).unwrap();
    let stats = sampler.sample().unwrap();
    assert!(by_pid(&stats, 100).is_none());
    // Back with the same identity after having been absent one round: no stale baseline.
    copy_tree(&odd_fixture().join("proc/100"), &roots.proc.join("100"));
    std::fs::write(
        roots.proc.join("100/stat"),
        stat_line(100, "a) (b", 900_000, 5000),
    )
    .unwrap();
    let stats = sampler.sample().unwrap();
    assert_eq!(by_pid(&stats, 100).map(|p| p.cpu_pct), Some(0.0));
}

#[test]
fn unreadable_proc_root_is_an_error() {
    let roots = HostRoots::under(Path::new("/nonexistent-sutazai-root"));
    let err = ProcessSampler::new(&roots, 5).sample().unwrap_err();
    assert!(
        err.to_string().contains("nonexistent-sutazai-root"),
        "{err}"
    );
}

/// Kills and reaps the child on every exit path.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn real_busy_child_shows_its_cpu() {
    let child = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let pid = guard.0.id() as i32;
    favour(guard.0.id());
    let roots = HostRoots::default();
    // Every process, so the child is found whatever else is busy.
    let mut sampler = ProcessSampler::new(&roots, usize::MAX);
    let first = sampler.sample().unwrap();
    assert_eq!(by_pid(&first, pid).map(|p| p.cpu_pct), Some(0.0));
    std::thread::sleep(Duration::from_millis(300));
    let second = sampler.sample().unwrap();
    let stat = by_pid(&second, pid).unwrap();
    assert!(stat.cpu_pct > 50.0, "{stat:?}");
    assert_eq!(stat.comm, "sh");
    assert_eq!(stat.cmdline, "sh -c while :; do :; done");
    assert_eq!(stat.policy, "SCHED_OTHER");
    assert!(stat.threads >= 1 && stat.rss_kb > 0, "{stat:?}");
    assert!(!stat.allowed_cpus.is_empty());
    assert_eq!(read_process_id(&roots, pid), Some(stat.id));
    // Our own process is there too, with its identity.
    let me = std::process::id() as i32;
    let own = by_pid(&second, me).unwrap();
    assert_eq!(read_process_id(&roots, me), Some(own.id));
    drop(guard);
    assert_eq!(read_process_id(&roots, pid), None, "reaped child is gone");
}
