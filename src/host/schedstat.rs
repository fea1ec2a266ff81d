//! Run-queue delay of a group of processes, from /proc/<pid>/task/<tid>/schedstat.
//!
//! Each task's schedstat holds the nanoseconds it spent running and waiting on a run queue
//! (and its timeslices). Summed over an agent's tasks between two readings, the wait per unit
//! of run time says how much the agent is slowed by others holding its CPUs — the same
//! question PSI answers, but available on every kernel with schedstats, also where cgroup PSI
//! is not (cgroup v1-only hosts).
//!
//! schedstat is parsed by hand although procfs-core has `Schedstat`: it is read for every
//! task of every latency agent each tick, and procfs-core's parse (which first copies the text
//! into a new String) took 49 ns against 21 ns here (`cargo bench --bench proc_parsers`).
//! cgroup.procs is cgroupfs,
//! which procfs-core does not cover.

use std::collections::HashMap;
use std::time::Instant;

use super::HostRoots;
use crate::model::RunDelay;

/// Nanoseconds on a CPU and waiting for one, cumulative since the task started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskTimes {
    pub run_ns: u64,
    pub wait_ns: u64,
}

/// The first two fields of a schedstat line; `None` for anything else.
pub fn parse_schedstat(text: &str) -> Option<TaskTimes> {
    let mut fields = text.split_whitespace();
    let run_ns = fields.next()?.parse().ok()?;
    let wait_ns = fields.next()?.parse().ok()?;
    Some(TaskTimes { run_ns, wait_ns })
}

/// The pids listed in a cgroup.procs text; odd lines are skipped.
pub fn parse_procs(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .collect()
}

/// Every task of `pids` with its times, by tid. A process or task that exits while it is
/// read is skipped: it simply is not there any more.
pub fn task_times(roots: &HostRoots, pids: &[i32]) -> HashMap<i32, TaskTimes> {
    let mut tasks = HashMap::new();
    for pid in pids {
        let dir = roots.proc.join(pid.to_string()).join("task");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let times = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|text| parse_schedstat(&text));
            if let Some(times) = times {
                tasks.insert(tid, times);
            }
        }
    }
    tasks
}

/// Turns successive task readings into run delays. Tasks seen both times count their
/// growth; tasks new since the last reading count all they have (they started within the
/// interval); tasks that ended within it are lost, which undercounts short-lived work a
/// little and never overcounts.
#[derive(Debug, Default)]
pub struct RunDelayTracker {
    last: Option<(Instant, HashMap<i32, TaskTimes>)>,
}

impl RunDelayTracker {
    pub fn update(&mut self, now: Instant, tasks: HashMap<i32, TaskTimes>) -> Option<RunDelay> {
        let previous = self.last.replace((now, tasks));
        let (then, before) = previous?;
        let (_, current) = self.last.as_ref()?;
        let elapsed = now.checked_duration_since(then)?.as_secs_f64();
        if elapsed <= 0.0 {
            return None;
        }
        let (mut run, mut wait) = (0u64, 0u64);
        for (tid, times) in current {
            let base = before.get(tid).copied().unwrap_or_default();
            // A reused tid whose counters went backwards is a new task.
            let base = if times.run_ns < base.run_ns || times.wait_ns < base.wait_ns {
                TaskTimes::default()
            } else {
                base
            };
            run += times.run_ns - base.run_ns;
            wait += times.wait_ns - base.wait_ns;
        }
        Some(RunDelay {
            wait_ms_per_sec: wait as f64 / 1e6 / elapsed,
            wait_per_run: if run == 0 {
                0.0
            } else {
                wait as f64 / run as f64
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn schedstat_lines_parse_or_are_refused() {
        assert_eq!(
            parse_schedstat("123 456 7\n"),
            Some(TaskTimes {
                run_ns: 123,
                wait_ns: 456
            })
        );
        for bad in ["", "12", "a b c", "-1 2 3"] {
            assert_eq!(parse_schedstat(bad), None, "{bad:?}");
        }
        assert_eq!(parse_procs("1\n22\n\nx\n-3\n 4 \n"), vec![1, 22, 4]);
    }

    fn tasks(list: &[(i32, u64, u64)]) -> HashMap<i32, TaskTimes> {
        list.iter()
            .map(|&(tid, run_ns, wait_ns)| (tid, TaskTimes { run_ns, wait_ns }))
            .collect()
    }

    #[test]
    fn delay_is_the_growth_over_the_interval_with_new_tasks_counted_whole() {
        let mut tracker = RunDelayTracker::default();
        let start = Instant::now();
        assert_eq!(
            tracker.update(start, tasks(&[(1, 1_000_000_000, 500_000_000)])),
            None
        );
        // One second later: task 1 ran 400 ms and waited 100 ms more; task 2 is new (ran
        // 100 ms, waited 150 ms); a task that exited is simply gone.
        let delay = tracker
            .update(
                start + Duration::from_secs(1),
                tasks(&[
                    (1, 1_400_000_000, 600_000_000),
                    (2, 100_000_000, 150_000_000),
                ]),
            )
            .expect("a delay after two readings");
        assert!((delay.wait_ms_per_sec - 250.0).abs() < 1e-6, "{delay:?}");
        assert!((delay.wait_per_run - 0.5).abs() < 1e-9, "{delay:?}");
        // A tid reused by a younger task (counters went backwards) counts from zero.
        let delay = tracker
            .update(
                start + Duration::from_secs(2),
                tasks(&[(1, 10_000_000, 10_000_000)]),
            )
            .expect("delay");
        assert!((delay.wait_per_run - 1.0).abs() < 1e-9, "{delay:?}");
    }

    #[test]
    fn this_process_has_readable_task_times() {
        let roots = HostRoots::default();
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let found = task_times(&roots, &[me, i32::MAX]);
        assert!(found.contains_key(&me), "{found:?}");
        assert!(found.values().any(|t| t.run_ns > 0));
    }
}
