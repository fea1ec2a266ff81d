//! Reading the machine: /proc and /sys, with both roots injectable so tests can point the
//! readers at fixture trees (several NUMA nodes, 64 CPUs, v1-only or v2-only cgroups).
//!
//! Readers never panic on odd input: a line they cannot parse is skipped with a debug log;
//! a file that is missing yields `None` or an empty list where the kernel may lack it, and an
//! error naming the path where it must exist.
//!
//! /proc files are parsed with procfs-core's types where it has one (its parsers work on the
//! bytes already read, so no file is opened twice): meminfo, vmstat, diskstats, net/dev,
//! loadavg, uptime, mountinfo and proc/<pid>/cgroup. procfs-core parses /proc/net/dev and
//! the vmstat lines we read as a whole, so there one line no kernel would print makes the
//! reading refused (logged) instead of skipped. Each module's header names what stays by
//! hand and why: files procfs-core lacks (sysfs, cgroupfs) or misreads, and the per-process,
//! per-task and per-container hot paths where it is measurably slower.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod cgroup_files;
pub mod cgroups;
pub mod config;
pub use config::HostConfig;
pub mod cpu;
pub mod disks;
pub mod files;
pub mod health;
pub mod info;
pub mod ksm;
pub mod memory;
pub mod net;
pub mod own_affinity;
pub mod processes;
pub mod psi;
pub mod schedstat;
pub mod topology;

/// The kernel's page size in bytes (4096 where it cannot be asked).
pub fn page_size() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|size| u64::try_from(size).ok())
        .filter(|&size| size >= 1024)
        .unwrap_or(4096)
}

/// Clock ticks per second of /proc's time counters (100 where it cannot be asked).
pub fn clock_ticks_per_sec() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    }
}

/// Where the host's procfs and sysfs are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for HostRoots {
    fn default() -> Self {
        HostRoots {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
        }
    }
}

impl HostRoots {
    /// Roots for a fixture tree laid out as `<dir>/proc` and `<dir>/sys`.
    pub fn under(dir: &Path) -> Self {
        HostRoots {
            proc: dir.join("proc"),
            sys: dir.join("sys"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file that must exist could not be read. File contents are never echoed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("cannot parse {path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// Read a whole file to a string, naming the path on failure.
pub fn read_to_string(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Read a file that the kernel may not have (optional feature): `None` when absent or
/// unreadable, logged at debug.
pub fn read_optional(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) => {
            tracing::debug!(path = %path.display(), %err, "optional file not readable");
            None
        }
    }
}

/// Parse a kernel CPU list such as "0-3,8,10-11" into ids. Malformed parts are skipped.
/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn parse_cpu_list(text: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('-') {
            Some((a, b)) => match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a <= b && b - a < 1 << 16 => out.extend(a..=b),
                _ => tracing::debug!(part, "skipping malformed cpu list range"),
            },
            None => match part.parse::<u32>() {
                Ok(n) => out.push(n),
                Err(_) => tracing::debug!(part, "skipping malformed cpu list entry"),
            },
        }
    }
    out
}

/// A CPU or node list read strictly, as a value to write or a setting: "" is `None` (every
/// one); each part must be N or N-M. (`parse_cpu_list` skips what it cannot read: it is for
/// the kernel's own files.)
pub fn parse_id_list(value: &str) -> Result<Option<Vec<u32>>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for part in value.split(',').map(str::trim) {
        let well_formed = !part.is_empty()
            && part.chars().all(|c| c.is_ascii_digit() || c == '-')
            && part.matches('-').count() <= 1;
        let parsed = if well_formed {
            parse_cpu_list(part)
        } else {
            Vec::new()
        };
        if parsed.is_empty() {
            return Err(format!(
                "{part:?} is not a CPU or a range of CPUs (N or N-M)"
            ));
        }
        ids.extend(parsed);
    }
    Ok(Some(ids))
}

/// Format ids as a kernel-style CPU list, collapsing runs: [0,1,2,5] -> "0-2,5".
pub fn format_cpu_list(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// Per-second rate of a counter. A counter that went backwards (reset, wrap) or a zero
/// interval gives 0, never a huge bogus figure.
pub fn counter_rate(prev: u64, cur: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if cur < prev || secs <= 0.0 {
        return 0.0;
    }
    (cur - prev) as f64 / secs
}

/// The numbered subdirectories `<prefix>N` of `dir`, sorted by N. Absent dir -> empty.
pub fn numbered_dirs(dir: &Path, prefix: &str) -> Vec<(u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        tracing::debug!(path = %dir.display(), "directory not readable");
        return Vec::new();
    };
    let mut found: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = name.to_str()?.strip_prefix(prefix)?.parse::<u32>().ok()?;
            Some((id, entry.path()))
        })
        .collect();
    found.sort_unstable_by_key(|(id, _)| *id);
    found
}

/// The previous reading of counters kept by name (disks, interfaces), for rates.
pub type NamedReading<C> = Option<(std::collections::HashMap<String, C>, std::time::Instant)>;

/// Figures for each named counter set between the previous reading and `current` (taken
/// now), in `current`'s order; then `current` becomes the previous reading. The first reading,
/// and a name not seen before, are compared with themselves: every rate is 0.
pub fn rates_by_name<C, S>(
    prev: &mut NamedReading<C>,
    current: Vec<(String, C)>,
    between: impl Fn(&str, &C, &C, Duration) -> S,
) -> Vec<S> {
    let now = std::time::Instant::now();
    let stats = current
        .iter()
        .map(|(name, cur)| match prev {
            Some((before, at)) => {
                let before = before.get(name).unwrap_or(cur);
                between(name, before, cur, now.saturating_duration_since(*at))
            }
            None => between(name, cur, cur, Duration::ZERO),
        })
        .collect();
    *prev = Some((current.into_iter().collect(), now));
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip_and_skip_garbage() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("x,2,5-3,7"), vec![2, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(format_cpu_list(&[5, 0, 1, 2, 2]), "0-2,5");
        assert_eq!(format_cpu_list(&[]), "");
    }
}
