//! Helpers shared by the real-host and fixture-tree tests (cgroups, processes, host_system).
//! Each test binary uses only some of them.

#![allow(dead_code)]

use std::path::Path;

/// Copy a fixture tree so a test may rewrite files in it.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Lower a child's nice value so a test measures its CPU even while other builds load the
/// machine; only the process the test spawned is changed. Refusal (not root) is harmless:
/// the measurement just runs at normal priority.
pub fn favour(pid: u32) {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, -10) };
    if rc != 0 {
        eprintln!("could not raise the child's priority; measuring anyway");
    }
}

/// Field `field` (1-based, as in proc(5): 19 nice, 41 policy) of each thread's
/// /proc/<pid>/task/<tid>/stat, by tid. Threads that exit while being read are left out.
pub fn thread_stat_field(pid: u32, field: usize) -> std::collections::BTreeMap<u32, i64> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Default::default();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // Fields after the comm start at 3 ("state").
            let value = stat[stat.rfind(')')? + 2..].split(' ').nth(field - 3)?;
            Some((tid, value.parse().ok()?))
        })
        .collect()
}
