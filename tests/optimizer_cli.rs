//! The journaled change path from the command line, with real processes: `set`, `journal`,
//! `rollback`, and a kill -9 in the middle of a batch followed by a full restore.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
}

/// A python process with `threads` extra sleeping threads; killed when dropped.
struct Threads(Child);

impl Threads {
    fn spawn(threads: usize) -> Threads {
        let code = format!(
            "import threading,time\n[threading.Thread(target=time.sleep, args=(120,)).start() for _ in range({threads})]\ntime.sleep(120)"
        );
        let child = Command::new("python3").args(["-c", &code]).spawn().unwrap();
        let me = Threads(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while me.tids().len() < threads + 1 {
            assert!(
                Instant::now() < deadline,
                "python never started its threads"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn tids(&self) -> Vec<u32> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut tids: Vec<u32> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        tids.sort_unstable();
        tids
    }

    /// Each thread's nice, from /proc/<pid>/task/<tid>/stat (field 19).
    fn nices(&self) -> BTreeMap<u32, i64> {
        host_support::thread_stat_field(self.pid(), 19)
    }

    /// Each thread's Cpus_allowed_list.
    fn affinities(&self) -> BTreeMap<u32, String> {
        self.tids()
            .into_iter()
            .filter_map(|tid| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", self.pid()))
                        .ok()?;
                let line = status
                    .lines()
                    .find(|l| l.starts_with("Cpus_allowed_list:"))?;
                Some((tid, line.split_whitespace().nth(1)?.to_string()))
            })
            .collect()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(state: &std::path::Path, args: &[&str]) -> Output {
    bin()
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Start `set nice 7` on `procs` and kill -9 the tool once a few threads changed.
fn interrupted_batch(state: &std::path::Path, procs: &Threads) {
    let pid = procs.pid().to_string();
    let mut setter = bin()
        .arg("--state-dir")
        .arg(state)
        .args([
            "set",
            "--pid",
            &pid,
            "nice",
            "7",
            "--pause-between-ms",
            "250",
        ])
        .spawn()
        .unwrap();
    // Let a few threads change, then kill -9 the tool half way through its batch.
    let deadline = Instant::now() + Duration::from_secs(15);
    while procs.nices().values().filter(|&&n| n == 7).count() < 2 {
        assert!(Instant::now() < deadline, "the batch never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    setter.kill().unwrap();
    setter.wait().unwrap();
    let changed = procs.nices().values().filter(|&&n| n == 7).count();
    assert!(
        (2..9).contains(&changed),
        "the kill must land mid-batch: {changed} of 9 threads changed"
    );
}

#[test]
fn kill_9_in_the_middle_of_a_batch_then_rollback_restores_every_thread() {
    let state = tempfile::tempdir().unwrap();
    let procs = Threads::spawn(8);
    let original = procs.nices();
    assert_eq!(original.len(), 9);
    assert!(original.values().all(|&n| n != 7), "{original:?}");
    interrupted_batch(state.path(), &procs);

    let journal = run(state.path(), &["journal"]);
    assert!(journal.status.success(), "{}", text(&journal));
    let shown = text(&journal);
    assert!(
        shown.contains("batch 1") && shown.contains("[applied]") && shown.contains("[pending]"),
        "{shown}"
    );

    let rollback = run(state.path(), &["rollback", "--all"]);
    assert!(rollback.status.success(), "{}", text(&rollback));
    assert_eq!(
        procs.nices(),
        original,
        "every thread back to its own value"
    );

    let journal = run(state.path(), &["journal"]);
    assert!(
        text(&journal).contains("no open batch"),
        "{}",
        text(&journal)
    );
}

#[test]
fn set_then_rollback_by_id_restores_affinity_exactly() {
    let state = tempfile::tempdir().unwrap();
    let procs = Threads::spawn(3);
    let original = procs.affinities();
    let pid = procs.pid().to_string();

    let set = run(state.path(), &["set", "--pid", &pid, "affinity", "0"]);
    assert!(set.status.success(), "{}", text(&set));
    assert!(text(&set).contains("batch 1"), "{}", text(&set));
    assert!(
        procs.affinities().values().all(|a| a == "0"),
        "{:?}",
        procs.affinities()
    );

    let rollback = run(state.path(), &["rollback", "1"]);
    assert!(rollback.status.success(), "{}", text(&rollback));
    assert!(
        text(&rollback).contains("4 restored"),
        "{}",
        text(&rollback)
    );
    assert_eq!(procs.affinities(), original);

    // Rolled back batches are closed: a second rollback finds nothing.
    let again = run(state.path(), &["rollback", "1"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("no open batch 1"), "{}", text(&again));
}

/// A journal damaged after a change (CRLF endings from an editor) hides the change from the
/// rollback: it must say so and fail, not print "nothing to roll back" and exit 0.
#[test]
fn rollback_over_a_damaged_journal_fails_and_says_why() {
    let state = tempfile::tempdir().unwrap();
    let procs = Threads::spawn(1);
    let pid = procs.pid().to_string();
    let set = run(state.path(), &["set", "--pid", &pid, "nice", "5"]);
    assert!(set.status.success(), "{}", text(&set));
    let journal = state.path().join("journal.jsonl");
    let crlf = std::fs::read_to_string(&journal)
        .unwrap()
        .replace('\n', "\r\n");
    std::fs::write(&journal, crlf).unwrap();

    let rollback = run(state.path(), &["rollback", "--all"]);
    let said = String::from_utf8_lossy(&rollback.stdout).to_string();
    assert!(!rollback.status.success(), "{}", text(&rollback));
    assert!(!said.contains("nothing to roll back"), "{said}");
    assert!(said.contains("journal line 1 unusable"), "{said}");
    assert!(text(&rollback).contains("damaged"), "{}", text(&rollback));
    // The change is still there, and the operator was told.
    assert!(
        procs.nices().values().all(|&n| n == 5),
        "{:?}",
        procs.nices()
    );
}

#[test]
fn rollback_after_the_process_exited_reports_it_gone_and_closes() {
    let state = tempfile::tempdir().unwrap();
    let procs = Threads::spawn(2);
    let pid = procs.pid().to_string();
    let set = run(state.path(), &["set", "--pid", &pid, "nice", "5"]);
    assert!(set.status.success(), "{}", text(&set));
    drop(procs);
    let rollback = run(state.path(), &["rollback", "--all"]);
    assert!(rollback.status.success(), "{}", text(&rollback));
    assert!(
        text(&rollback).contains("3 already gone"),
        "{}",
        text(&rollback)
    );
    assert!(text(&run(state.path(), &["journal"])).contains("no open batch"));
}

#[test]
fn bad_values_change_nothing_and_say_why() {
    let state = tempfile::tempdir().unwrap();
    let procs = Threads::spawn(1);
    let before = procs.nices();
    let pid = procs.pid().to_string();
    for (knob, value) in [
        ("nice", "99"),
        ("policy", "SCHED_FIFO"),
        ("ioprio", "be/9"),
        ("affinity", "x"),
    ] {
        let out = run(state.path(), &["set", "--pid", &pid, knob, value]);
        assert_eq!(out.status.code(), Some(1), "{knob} {value}: {}", text(&out));
        assert!(text(&out).contains(value), "{knob} {value}: {}", text(&out));
    }
    assert_eq!(procs.nices(), before);
    assert!(text(&run(state.path(), &["journal"])).contains("no open batch"));
    let out = run(state.path(), &["set", "--pid", "999999999", "nice", "5"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn a_half_applied_batch_is_handled_at_start_per_on_unclean_exit() {
    use sutazai_top::config::UncleanExit;
    use sutazai_top::host::HostRoots;
    use sutazai_top::optimizer::view::recover_on_start;
    let roots = HostRoots::default();
    for policy in [UncleanExit::Ask, UncleanExit::Keep, UncleanExit::Restore] {
        let state = tempfile::tempdir().unwrap();
        let procs = Threads::spawn(8);
        let original = procs.nices();
        interrupted_batch(state.path(), &procs);
        let changed = procs.nices();
        let message = recover_on_start(state.path(), &roots, policy).expect("a half-applied batch");
        match policy {
            UncleanExit::Ask => {
                assert!(message.contains("r in Proposals"), "{message}");
                assert_eq!(procs.nices(), changed, "ask changes nothing");
            }
            UncleanExit::Keep => {
                assert!(message.contains("kept"), "{message}");
                assert_eq!(procs.nices(), changed, "keep changes nothing");
            }
            UncleanExit::Restore => {
                assert!(message.contains("restored"), "{message}");
                assert_eq!(procs.nices(), original, "restore puts every thread back");
                assert!(recover_on_start(state.path(), &roots, policy).is_none());
            }
        }
    }
    // No journal at all: nothing to do, and nothing created.
    let empty = tempfile::tempdir().unwrap();
    let absent = empty.path().join("state");
    assert!(recover_on_start(&absent, &roots, UncleanExit::Restore).is_none());
    assert!(!absent.exists());
}
