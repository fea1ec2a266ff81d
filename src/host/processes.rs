//! The busiest processes: CPU percent from proc/<pid>/stat deltas, details for the top few.
//!
//! At 1 Hz with thousands of processes only proc/<pid>/stat is read for every process; status,
//! cmdline and cgroup are read only for the `top_n` shown. Processes are keyed by
//! (pid, start time) so a reused pid is a new process, never diffed against the old one.
//!
//! proc/<pid>/stat and status are parsed by hand although procfs-core has types for both,
//! because they sit on the per-tick path and the library is slower there
//! (`cargo bench --bench proc_parsers` on this machine): stat, parsed for every process
//! every tick, 870 ns with procfs-core's `Stat` against 570-760 ns here (it copies the bytes
//! and converts all 52 fields, where we need 9; and its unchecked slicing would need checks
//! first not to panic on a line like ")(" or "(x)"); status, parsed for each process shown
//! every tick and by the thread actuator, 15.2 µs with `Status` against 1.8 µs (it maps
//! every line and requires two dozen we never read). cmdline has no procfs-core type.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::host::cgroups::read_proc_cgroups;
use crate::host::files::{FileCache, KeptFile};
use crate::host::{HostError, HostRoots};
use crate::model::{ProcessId, ProcessStat};

/// Characters of the command line kept for display.
const CMDLINE_DISPLAY_CHARS: usize = 120;
/// Bytes of cmdline read at most: enough for the display, cheap for huge argument lists.
const CMDLINE_READ_BYTES: u64 = 4096;
/// Fields after the comm that a usable stat line must have (through field 41, policy).
const STAT_FIELDS_AFTER_COMM: usize = 39;
/// Most stat files kept open (one per process), at most; see `kept_stat_file_limit`.
const MAX_KEPT_STAT_FILES: usize = 16_384;

/// How many stat files to keep open: half the open-file limit at most (the rest is for
/// containers' cgroup files, sockets and the terminal), and never more than
/// `MAX_KEPT_STAT_FILES`.
fn kept_stat_file_limit() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 2)
        .unwrap_or(MAX_KEPT_STAT_FILES)
        .min(MAX_KEPT_STAT_FILES)
}

/// The fields of proc/<pid>/stat that the sampler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    pub comm: String,
    pub state: char,
    /// Clock ticks in user and kernel mode (fields 14 and 15).
    pub utime: u64,
    pub stime: u64,
    pub nice: i32,
    pub num_threads: u32,
    /// Clock ticks since boot when the process started (field 22).
    pub start_time: u64,
    pub rss_pages: u64,
    /// Scheduling policy number (field 41).
    pub policy: u32,
}

/// Parse one proc/<pid>/stat. The comm sits between the FIRST '(' and the LAST ')' and may
/// itself hold spaces, parentheses and newlines, so fields are counted from that last ')'.
/// `None` for a truncated or garbled line.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?;
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    if rest.len() < STAT_FIELDS_AFTER_COMM {
        return None;
    }
    // Field n of stat(5) (1-based, pid = 1, comm = 2) is rest[n - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    let mut state_chars = field(3)?.chars();
    let state = state_chars
        .next()
        .filter(|_| state_chars.next().is_none())?;
    Some(StatFields {
        comm: comm.to_string(),
        state,
        utime: number(14)?,
        stime: number(15)?,
        nice: field(19)?.parse::<i32>().ok()?,
        num_threads: u32::try_from(number(20)?).ok()?,
        start_time: number(22)?,
        rss_pages: field(24)?.parse::<i64>().ok()?.max(0).unsigned_abs(),
        policy: u32::try_from(number(41)?).ok()?,
    })
}

/// The scheduling policy's name as sched(7) spells it.
pub fn policy_name(policy: u32) -> String {
    match policy {
        0 => "SCHED_OTHER".to_string(),
        1 => "SCHED_FIFO".to_string(),
        2 => "SCHED_RR".to_string(),
        3 => "SCHED_BATCH".to_string(),
        5 => "SCHED_IDLE".to_string(),
        6 => "SCHED_DEADLINE".to_string(),
        other => format!("SCHED_UNKNOWN({other})"),
    }
}

/// The proc/<pid>/status lines the sampler shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusFields {
    pub threads: Option<u32>,
    pub vm_rss_kb: Option<u64>,
    pub cpus_allowed_list: Option<String>,
}

/// Parse proc/<pid>/status; lines it does not need or cannot parse are ignored.
pub fn parse_status(text: &str) -> StatusFields {
    let mut out = StatusFields::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Threads" => out.threads = value.parse().ok(),
            "VmRSS" => out.vm_rss_kb = value.strip_suffix("kB").and_then(|n| n.trim().parse().ok()),
            "Cpus_allowed_list" => out.cpus_allowed_list = Some(value.to_string()),
            _ => {}
        }
    }
    out
}

/// proc/<pid>/cmdline (NUL-separated arguments) as one display string of at most
/// `CMDLINE_DISPLAY_CHARS` characters; empty for kernel threads.
pub fn format_cmdline(raw: &[u8]) -> String {
    let joined = raw
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(CMDLINE_DISPLAY_CHARS) {
        Some((cut, _)) => joined.get(..cut).unwrap_or_default().to_string(),
        None => joined,
    }
}

/// Parse the bytes of a proc/<pid>/stat; `None` (debug log) when malformed.
fn stat_from_bytes(pid: i32, bytes: &[u8]) -> Option<StatFields> {
    let parsed = parse_stat(&String::from_utf8_lossy(bytes));
    if parsed.is_none() {
        tracing::debug!(pid, "skipping process with malformed stat");
    }
    parsed
}

/// The identity of a live process, or `None` when it is gone or unreadable.
pub fn read_process_id(roots: &HostRoots, pid: i32) -> Option<ProcessId> {
    let bytes = std::fs::read(roots.proc.join(pid.to_string()).join("stat")).ok()?;
    stat_from_bytes(pid, &bytes).map(|stat| ProcessId {
        pid,
        start_time: stat.start_time,
    })
}

/// What is shown about a process besides its counters.
#[derive(Debug, Clone)]
struct Labels {
    /// The comm these were read under; a new comm (exec) means read them again.
    comm: String,
    cmdline: String,
    cgroup: String,
}

/// A pid being followed: its kept stat file and what the last round read.
struct Followed {
    stat: KeptFile,
    /// Identity and utime + stime at the last round; a new start time is a new process.
    last: Option<(ProcessId, u64)>,
    /// The round that last listed this pid; older entries are dropped.
    round: u64,
}

/// One process seen this round, before its details are read.
struct Seen {
    id: ProcessId,
    stat: StatFields,
    cpu_pct: f32,
}

/// Keeps the previous round's CPU ticks of every process to turn counters into percentages.
pub struct ProcessSampler {
    proc_root: PathBuf,
    roots: HostRoots,
    top_n: usize,
    ticks_per_sec: f64,
    page_kb: u64,
    /// Every listed pid with its kept stat file and last counters.
    followed: HashMap<i32, Followed>,
    /// Most stat files kept open; past it the rest are opened per round.
    kept_limit: usize,
    round: u64,
    buffer: Vec<u8>,
    prev_at: Option<Instant>,
    /// status files of the processes shown, kept open between rounds.
    status_files: FileCache,
    /// cmdline and cgroup of each process shown, read once per process identity and comm:
    /// they change only at exec (which changes comm) or a cgroup move (rare; the entry is
    /// also dropped whenever the process leaves the shown set).
    labels: HashMap<ProcessId, Labels>,
}

impl ProcessSampler {
    pub fn new(roots: &HostRoots, top_n: usize) -> Self {
        ProcessSampler {
            proc_root: roots.proc.clone(),
            roots: roots.clone(),
            top_n,
            ticks_per_sec: super::clock_ticks_per_sec(),
            page_kb: super::page_size() / 1024,
            followed: HashMap::new(),
            kept_limit: kept_stat_file_limit(),
            round: 0,
            buffer: Vec::new(),
            prev_at: None,
            status_files: FileCache::new(),
            labels: HashMap::new(),
        }
    }

    /// One round: the `top_n` processes by CPU percent (ties: resident memory), busiest first.
    /// Every percentage is 0 on the first round, which has no interval yet.
    pub fn sample(&mut self) -> Result<Vec<ProcessStat>, HostError> {
        let now = Instant::now();
        let pids = self.list_pids()?;
        let elapsed_secs = self
            .prev_at
            .map(|then| now.duration_since(then).as_secs_f64())
            .filter(|&secs| secs > 0.0);
        self.round += 1;
        let round = self.round;
        let mut seen = Vec::with_capacity(pids.len());
        for pid in pids {
            let keep_open = self.followed.len() < self.kept_limit;
            let proc_root = &self.proc_root;
            let followed = self.followed.entry(pid).or_insert_with(|| Followed {
                stat: KeptFile::new(proc_root.join(pid.to_string()).join("stat")),
                last: None,
                round: 0,
            });
            let bytes = match followed.stat.read_bytes(&mut self.buffer) {
                Ok(bytes) => bytes,
                Err(err) => {
                    // Gone between the listing and the read: processes exit all the time.
                    tracing::debug!(pid, %err, "process vanished or stat unreadable");
                    continue;
                }
            };
            let Some(stat) = stat_from_bytes(pid, bytes) else {
                continue;
            };
            followed.round = round;
            let id = ProcessId {
                pid,
                start_time: stat.start_time,
            };
            let total = stat.utime.saturating_add(stat.stime);
            let cpu_pct = match (elapsed_secs, followed.last) {
                // Only the same identity is diffed: a reused pid starts again at 0.
                (Some(secs), Some((last_id, before))) if last_id == id => {
                    (total.saturating_sub(before) as f64 / self.ticks_per_sec / secs * 100.0) as f32
                }
                _ => 0.0,
            };
            followed.last = Some((id, total));
            if !keep_open {
                followed.stat.close();
            }
            seen.push(Seen { id, stat, cpu_pct });
        }
        self.prev_at = Some(now);
        // Forget (and close the files of) pids that were not listed or not readable.
        self.followed.retain(|_, f| f.round == round);
        seen.sort_by(|a, b| {
            b.cpu_pct
                .total_cmp(&a.cpu_pct)
                .then(b.stat.rss_pages.cmp(&a.stat.rss_pages))
                .then(a.id.cmp(&b.id))
        });
        let top_n = self.top_n;
        let shown: Vec<ProcessStat> = seen
            .into_iter()
            .filter_map(|s| self.details(s))
            .take(top_n)
            .collect();
        let shown_ids: HashSet<ProcessId> = shown.iter().map(|p| p.id).collect();
        self.labels.retain(|id, _| shown_ids.contains(id));
        let shown_pids: HashSet<i32> = shown_ids.iter().map(|id| id.pid).collect();
        self.status_files
            .retain(|path| pid_of_path(path).is_some_and(|pid| shown_pids.contains(&pid)));
        Ok(shown)
    }

    /// Numeric entries of the proc root.
    fn list_pids(&self) -> Result<Vec<i32>, HostError> {
        let entries = std::fs::read_dir(&self.proc_root).map_err(|source| HostError::Io {
            path: self.proc_root.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid > 0)
            .collect())
    }

    /// Read status (each round), cmdline and cgroup (once per process) of one process shown;
    /// `None` when it vanished since its stat was read.
    fn details(&mut self, seen: Seen) -> Option<ProcessStat> {
        let dir = self.proc_root.join(seen.id.pid.to_string());
        let status = match self.status_files.read_bytes(&dir.join("status")) {
            Ok(bytes) => parse_status(&String::from_utf8_lossy(bytes)),
            Err(err) => {
                tracing::debug!(pid = seen.id.pid, %err, "process vanished before its status was read");
                return None;
            }
        };
        let roots = &self.roots;
        if self
            .labels
            .get(&seen.id)
            .is_some_and(|l| l.comm != seen.stat.comm)
        {
            self.labels.remove(&seen.id);
        }
        let Labels {
            cmdline, cgroup, ..
        } = self
            .labels
            .entry(seen.id)
            .or_insert_with(|| {
                let cgroup = match read_proc_cgroups(roots, seen.id.pid) {
                    Ok(cg) => cg.display_path(),
                    Err(err) => {
                        tracing::debug!(pid = seen.id.pid, %err, "no cgroup for process");
                        String::new()
                    }
                };
                Labels {
                    comm: seen.stat.comm.clone(),
                    cmdline: read_cmdline(&dir.join("cmdline")),
                    cgroup,
                }
            })
            .clone();
        let stat = seen.stat;
        Some(ProcessStat {
            id: seen.id,
            cmdline,
            state: stat.state,
            cpu_pct: seen.cpu_pct,
            rss_kb: status
                .vm_rss_kb
                .unwrap_or(stat.rss_pages.saturating_mul(self.page_kb)),
            threads: status.threads.unwrap_or(stat.num_threads),
            allowed_cpus: status.cpus_allowed_list.unwrap_or_default(),
            policy: policy_name(stat.policy),
            nice: stat.nice,
            cgroup,
            comm: stat.comm,
        })
    }
}

/// The pid of a path like <proc>/<pid>/stat.
fn pid_of_path(path: &Path) -> Option<i32> {
    path.parent()?.file_name()?.to_str()?.parse().ok()
}

fn read_cmdline(path: &Path) -> String {
    let mut raw = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|file| file.take(CMDLINE_READ_BYTES).read_to_end(&mut raw));
    if let Err(err) = read {
        tracing::debug!(path = %path.display(), %err, "cmdline unreadable");
    }
    format_cmdline(&raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full stat line with the given comm; fields after it are numbered so a test can tell
    /// which one was picked.
    fn stat_line(comm: &str) -> String {
        format!(
            "42 ({comm}) R 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 -5 3 0 12345 1000000 \
             77 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 3 0 0 0 0 0 0 0 0 0 0 0\n"
        )
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let s = parse_stat(&stat_line("a) (b")).unwrap();
        assert_eq!(s.comm, "a) (b");
        assert_eq!(s.state, 'R');
        assert_eq!((s.utime, s.stime), (250, 50));
        assert_eq!(s.nice, -5);
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.start_time, 12345);
        assert_eq!(s.rss_pages, 77);
        assert_eq!(s.policy, 3);
        assert_eq!(parse_stat(&stat_line("x\ny")).unwrap().comm, "x\ny");
        assert_eq!(parse_stat(&stat_line("")).unwrap().comm, "");
        assert_eq!(parse_stat(&stat_line("))((")).unwrap().comm, "))((");
    }

    #[test]
    fn bad_stat_is_none() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2 3"), None);
        assert_eq!(parse_stat(")( R"), None);
        let line = stat_line("x");
        assert_eq!(parse_stat(line.get(..line.len() / 2).unwrap()), None);
        assert_eq!(parse_stat(&line.replace(" 250 ", " x ")), None);
        assert_eq!(parse_stat(&line.replace(" R ", " RR ")), None);
    }

    #[test]
    fn policy_names() {
        assert_eq!(policy_name(0), "SCHED_OTHER");
        assert_eq!(policy_name(1), "SCHED_FIFO");
        assert_eq!(policy_name(2), "SCHED_RR");
        assert_eq!(policy_name(3), "SCHED_BATCH");
        assert_eq!(policy_name(5), "SCHED_IDLE");
        assert_eq!(policy_name(6), "SCHED_DEADLINE");
        assert_eq!(policy_name(9), "SCHED_UNKNOWN(9)");
    }

    #[test]
    fn status_fields_and_odd_lines() {
        let s = parse_status(
            "Name:\tx\nThreads:\t7\nVmRSS:\t   2048 kB\nCpus_allowed_list:\t0-1\ngarbage\nThreads\n",
        );
        assert_eq!(s.threads, Some(7));
        assert_eq!(s.vm_rss_kb, Some(2048));
        assert_eq!(s.cpus_allowed_list.as_deref(), Some("0-1"));
        assert_eq!(parse_status(""), StatusFields::default());
        assert_eq!(parse_status("VmRSS: lots\nThreads: -1\n").vm_rss_kb, None);
    }

    #[test]
    fn cmdline_joins_and_truncates() {
        assert_eq!(format_cmdline(b"python3\0-m\0agent\0"), "python3 -m agent");
        assert_eq!(format_cmdline(b""), "");
        assert_eq!(format_cmdline(b"a\0\0b"), "a b");
        let long = "é".repeat(300);
        let shown = format_cmdline(long.as_bytes());
        assert_eq!(shown.chars().count(), CMDLINE_DISPLAY_CHARS);
        assert_eq!(format_cmdline(&[0xff, 0, b'x']), "\u{fffd} x");
    }

    #[test]
    fn clock_and_page_size_are_sane() {
        assert!(crate::host::clock_ticks_per_sec() >= 1.0);
        assert!(crate::host::page_size() / 1024 >= 4);
    }
}
