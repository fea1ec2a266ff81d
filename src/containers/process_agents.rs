//! Agents that are plain processes (`[[agents]]`): which processes each entry matches, which
//! of their cgroups hold only them, and their usage when no cgroup does.
//!
//! Matching lists /proc every `RESCAN_EVERY` ticks (and when an agent's main process left),
//! reading each process's comm, and its command line or cgroup only when an entry asks for
//! them. A process matching several entries belongs to the first. Usage comes from the
//! agent's own cgroup as for a container; from each process's /proc files when the cgroup
//! holds other processes too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::config::{AgentEntry, ProcessMatcher};
use super::docker::Listed;
use crate::host::HostRoots;
use crate::host::cgroups::{CgroupCounters, CgroupMounts, ProcCgroups, parse_proc_cgroup};
use crate::host::processes::{parse_stat, parse_status};
use crate::model::{AgentCgroups, PROCESS_AGENT_PREFIX, ProcessAgent, UsageSource};

/// Ticks between two listings of /proc.
pub const RESCAN_EVERY: u64 = 2;

/// What one entry matched in one listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// As Docker would list a container: id "proc:<name>", state "running" or "exited".
    pub listed: Listed,
    /// The oldest matched process; `None` when nothing matched.
    pub main: Option<i32>,
    pub process: ProcessAgent,
    /// Its usage may be read from the main process's cgroup (that cgroup holds only it).
    pub own_usage_cgroup: bool,
}

/// Match every entry against the processes under `roots.proc`. Blocking.
pub fn scan(roots: &HostRoots, mounts: &CgroupMounts, entries: &[AgentEntry]) -> Vec<Found> {
    let wants_cmdline = entries.iter().any(|e| e.matcher.cmdline.is_some());
    let wants_cgroup = entries.iter().any(|e| e.matcher.cgroup.is_some());
    let myself = std::process::id() as i32;
    // Per entry: (start time, pid) of each matched process.
    let mut matched: Vec<Vec<(u64, i32)>> = vec![Vec::new(); entries.len()];
    for pid in list_pids(&roots.proc) {
        if pid == myself {
            continue;
        }
        let Some(seen) = Seen::read(roots, pid, entries, wants_cmdline, wants_cgroup) else {
            continue; // no entry's comm, gone meanwhile, or unreadable
        };
        if let Some(index) = entries.iter().position(|e| seen.matches(&e.matcher)) {
            matched[index].push((seen.start_time, pid));
        }
    }
    entries
        .iter()
        .zip(matched)
        .map(|(entry, mut pids)| {
            pids.sort_unstable();
            let pids: Vec<i32> = pids.into_iter().map(|(_, pid)| pid).collect();
            found(roots, mounts, entry, pids)
        })
        .collect()
}

/// The id of the agent an entry makes.
pub fn agent_id(entry: &AgentEntry) -> String {
    format!("{PROCESS_AGENT_PREFIX}{}", entry.name)
}

fn found(roots: &HostRoots, mounts: &CgroupMounts, entry: &AgentEntry, pids: Vec<i32>) -> Found {
    let main = pids.first().copied();
    let (cgroups, shared, own_usage_cgroup) = match main {
        Some(main) => ownership(roots, mounts, main, &pids),
        None => (AgentCgroups::default(), Vec::new(), false),
    };
    Found {
        listed: Listed {
            id: agent_id(entry),
            name: entry.name.clone(),
            image: "(processes)".to_string(),
            state: if main.is_some() { "running" } else { "exited" }.to_string(),
            labels: entry.labels.clone(),
        },
        main,
        process: ProcessAgent {
            matcher: entry.matcher.describe(),
            pids,
            cgroups,
            shared,
        },
        own_usage_cgroup,
    }
}

fn list_pids(proc_root: &Path) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// What matching needs of one process.
struct Seen {
    comm: String,
    start_time: u64,
    /// Arguments joined by spaces; empty for kernel threads (never matched).
    cmdline: String,
    cgroups: Option<ProcCgroups>,
}

impl Seen {
    /// `None` when no entry can match it (its comm is none of theirs), or it is gone.
    fn read(
        roots: &HostRoots,
        pid: i32,
        entries: &[AgentEntry],
        cmdline: bool,
        cgroup: bool,
    ) -> Option<Seen> {
        let dir = roots.proc.join(pid.to_string());
        let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
        // Most processes are no one's: leave after one file read.
        let candidate = entries
            .iter()
            .any(|e| e.matcher.comm.as_ref().is_none_or(|c| *c == stat.comm));
        if !candidate {
            return None;
        }
        let raw = std::fs::read(dir.join("cmdline")).ok()?;
        if raw.is_empty() {
            return None; // a kernel thread, or a zombie: not an agent
        }
        let cmdline = if cmdline {
            let words: Vec<_> = raw
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(String::from_utf8_lossy)
                .collect();
            words.join(" ")
        } else {
            String::new()
        };
        let cgroups = cgroup
            .then(|| std::fs::read_to_string(dir.join("cgroup")).ok())
            .flatten()
            .map(|text| parse_proc_cgroup(&text));
        Some(Seen {
            comm: stat.comm,
            start_time: stat.start_time,
            cmdline,
            cgroups,
        })
    }

    fn matches(&self, m: &ProcessMatcher) -> bool {
        let comm = m.comm.as_ref().is_none_or(|c| *c == self.comm);
        let cmdline = m
            .cmdline
            .as_ref()
            .is_none_or(|piece| self.cmdline.contains(piece.as_str()));
        let cgroup = m
            .cgroup
            .as_ref()
            .is_none_or(|want| self.cgroups.as_ref().is_some_and(|cg| cg.within(want)));
        comm && cmdline && cgroup
    }
}

/// Which controllers' cgroups hold only the agent's processes (as target paths relative to
/// the sys root), the reasons for the others, and whether usage may be read from the cgroup
/// the reader would pick (memory for v1, unified for v2).
fn ownership(
    roots: &HostRoots,
    mounts: &CgroupMounts,
    main: i32,
    pids: &[i32],
) -> (AgentCgroups, Vec<String>, bool) {
    let read = |pid: i32| {
        std::fs::read_to_string(roots.proc.join(pid.to_string()).join("cgroup"))
            .ok()
            .map(|t| parse_proc_cgroup(&t))
    };
    let Some(main_cg) = read(main) else {
        return (
            AgentCgroups::default(),
            vec!["cgroup: unreadable".into()],
            false,
        );
    };
    let others: Vec<ProcCgroups> = pids[1..].iter().filter_map(|&p| read(p)).collect();
    let mine: HashSet<i32> = pids.iter().copied().collect();
    let v1 = mounts.v1.contains_key("memory") && main_cg.v1.contains_key("memory");
    let mut shared = Vec::new();
    let mut own = |controller: &str| -> Option<PathBuf> {
        let (mount, path, pick): (_, _, fn(&ProcCgroups, &str) -> Option<String>) = if v1 {
            let pick = |cg: &ProcCgroups, c: &str| cg.v1.get(c).cloned();
            (
                mounts.v1.get(controller)?,
                main_cg.v1.get(controller)?,
                pick,
            )
        } else {
            let pick = |cg: &ProcCgroups, _: &str| cg.unified.clone();
            (mounts.unified.as_ref()?, main_cg.unified.as_ref()?, pick)
        };
        let mut refuse = |why: String| {
            shared.push(format!("{controller}: {why}"));
            None
        };
        if path == "/" {
            return refuse("cgroup / is the root, shared by every process".into());
        }
        if others
            .iter()
            .any(|cg| pick(cg, controller).as_ref() != Some(path))
        {
            return refuse(format!("processes are in different {controller} cgroups"));
        }
        let dir = mounts.cgroup_dir(mount, path)?;
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let strangers = procs
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
            .filter(|p| !mine.contains(p))
            .count();
        if strangers > 0 {
            return refuse(format!("cgroup {path} holds {strangers} other processes"));
        }
        match dir.strip_prefix(&roots.sys) {
            Ok(relative) => Some(relative.to_path_buf()),
            Err(_) => refuse(format!("cgroup {path} is not under the sys root")),
        }
    };
    let cgroups = AgentCgroups {
        v2: !v1,
        cpuset: own("cpuset"),
        cpu: own("cpu"),
        memory: own("memory"),
    };
    // The reader takes CPU time from cpuacct on v1, which may be a hierarchy of its own.
    let cpuacct_own = !v1 || !mounts.v1.contains_key("cpuacct") || own("cpuacct").is_some();
    let usage_own = cgroups.memory.is_some() && cpuacct_own;
    shared.dedup();
    (cgroups, shared, usage_own)
}

/// Usage summed over the agent's processes, for an agent whose cgroup holds others: CPU
/// time, resident memory, threads. Processes that left meanwhile are skipped. Blocking.
pub fn procfs_counters(roots: &HostRoots, pids: &[i32]) -> Option<CgroupCounters> {
    let tick_ns = 1e9 / crate::host::clock_ticks_per_sec();
    let page = crate::host::page_size();
    let mut counters = CgroupCounters {
        source: UsageSource::Procfs,
        cpu_usage_ns: Some(0),
        ..CgroupCounters::default()
    };
    let mut any = false;
    for &pid in pids {
        let dir = roots.proc.join(pid.to_string());
        let Some(stat) = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        else {
            continue;
        };
        any = true;
        let ns = ((stat.utime + stat.stime) as f64 * tick_ns) as u64;
        counters.cpu_usage_ns = counters.cpu_usage_ns.map(|n| n + ns);
        counters.memory_usage_bytes += stat.rss_pages * page;
        counters.pids += u64::from(stat.num_threads);
    }
    any.then_some(counters)
}

/// The CPUs a process may run on (its affinity, within its cpuset), as a list.
pub fn allowed_cpus(roots: &HostRoots, pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(roots.proc.join(pid.to_string()).join("status")).ok()?;
    parse_status(&text).cpus_allowed_list
}
