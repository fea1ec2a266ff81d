//! The engine's own CPUs. Once agents hold CPUs of their own, the engine keeps its threads
//! off them, as a kubelet keeps to the system's reserved CPUs: the tool that grants an
//! exclusive core must not be the noise on it. Our own process only, so no journal: it
//! ends with us.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs this thread may run on now.
pub fn current() -> Option<Vec<u32>> {
    let set = nix::sched::sched_getaffinity(Pid::from_raw(0)).ok()?;
    Some(
        (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .filter_map(|cpu| u32::try_from(cpu).ok())
            .collect(),
    )
}

/// Run every thread of this process on `cpus` (threads started later inherit it from the
/// thread that starts them). Returns how many threads were moved; a thread that ended
/// meanwhile is skipped.
pub fn confine_self(cpus: &[u32]) -> Result<usize, String> {
    if cpus.is_empty() {
        return Err("no CPU to run on".to_string());
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu as usize)
            .map_err(|e| format!("CPU {cpu} is beyond what affinity masks hold: {e}"))?;
    }
    let tasks =
        std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    let mut moved = 0;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<i32>().ok())
        else {
            continue;
        };
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => moved += 1,
            Err(nix::errno::Errno::ESRCH) => {}
            Err(errno) => return Err(format!("sched_setaffinity({tid}): {errno}")),
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness's threads are moved too, for a moment: each is put back on the CPUs
    /// it had before the assertions run.
    #[test]
    fn every_thread_moves_and_new_ones_inherit() {
        let had = current().expect("our affinity");
        let Some(&last) = had.last() else {
            panic!("no CPU in our affinity");
        };
        let handle = std::thread::spawn(move || {
            let moved = confine_self(&[last]).expect("confine");
            let later = std::thread::spawn(|| {
                std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default()
            })
            .join()
            .unwrap_or_default();
            let _ = confine_self(&had);
            (moved, later)
        });
        let (moved, later) = handle.join().expect("thread");
        assert!(moved >= 2, "moved {moved} threads");
        let allowed = later
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            allowed,
            last.to_string(),
            "a thread started later inherits it"
        );
    }
}
