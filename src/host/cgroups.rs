//! Control groups: where the hierarchies are mounted, which cgroup a process is in, and that
//! cgroup's usage counters, on v1, v2 and hybrid hosts.
//!
//! Mounts come from proc/self/mountinfo, never from guessed paths, so a host that mounts its
//! controllers elsewhere (or co-mounts "cpu,cpuacct") still works. A process's cgroup comes
//! from proc/<pid>/cgroup. Counters are read straight from the cgroup files, which stays cheap
//! with a hundred containers where Docker's one-shot stats calls do not.
//!
//! mountinfo and proc/<pid>/cgroup lines are parsed by procfs-core (`MountInfo::from_line`,
//! `ProcessCGroups`), one line at a time so a line it refuses is skipped alone; mountinfo's
//! octal escapes, which procfs-core leaves in place, are decoded here. The cgroup files
//! themselves (cpu.stat, io.stat, memory.max, ...) are cgroupfs, which procfs-core does not
//! cover: their small parsers below are by hand.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use procfs_core::{FromBufRead, ProcessCGroups};

use crate::host::{HostError, HostRoots, read_to_string};
use crate::model::{CgroupLayout, Pressure, UsageSource};

/// v1 memory limits at or above this mean "no limit" (the kernel reports a page-rounded
/// i64::MAX, which differs between page sizes).
pub(crate) const V1_UNLIMITED: u64 = 1 << 60;

/// Super options of a v1 cgroup mount that are flags, not controller names.
const NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "none",
    "all",
    "nsdelegate",
    "favordynmods",
    "memory_localevents",
    "memory_recursiveprot",
    "memory_hugetlb_accounting",
];

/// Where each cgroup hierarchy is mounted (paths already rebased onto the injected roots).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupMounts {
    /// v1 controller name -> mount dir; a co-mounted "cpu,cpuacct" maps both names.
    pub v1: BTreeMap<String, PathBuf>,
    /// The unified (v2) hierarchy's mount dir.
    pub unified: Option<PathBuf>,
    /// Mount dir -> the mount's root within its hierarchy (mountinfo field 4), kept only when
    /// not "/": inside a container the hierarchy is mounted from a sub-cgroup, and
    /// proc/<pid>/cgroup paths then start with that root.
    mount_roots: BTreeMap<PathBuf, String>,
}

/// One cgroup line of mountinfo, before rebasing.
#[derive(Debug, Clone, PartialEq)]
struct CgroupMountLine {
    root: String,
    mount_point: String,
    unified: bool,
    controllers: Vec<String>,
}

/// Parse one mountinfo line; `None` for lines that are not cgroup mounts or are malformed.
fn parse_mountinfo_line(line: &str) -> Option<CgroupMountLine> {
    // Most lines are other mounts; skip them before procfs-core builds two option maps each.
    let (_, after) = line.split_once(" - ")?;
    if !after.starts_with("cgroup") {
        return None;
    }
    let mount = procfs_core::process::MountInfo::from_line(line).ok()?;
    let unified = match mount.fs_type.as_str() {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    let controllers = if unified {
        Vec::new()
    } else {
        // Controllers are the bare super options ("cpu", "memory"); "name=systemd" and
        // flags like "rw" are not.
        mount
            .super_options
            .iter()
            .filter(|(option, value)| {
                value.is_none()
                    && !option.is_empty()
                    && !NON_CONTROLLER_OPTIONS.contains(&option.as_str())
            })
            .map(|(option, _)| option.clone())
            .collect()
    };
    Some(CgroupMountLine {
        root: unescape_mountinfo(&mount.root),
        mount_point: unescape_mountinfo(&mount.mount_point.to_string_lossy()),
        unified,
        controllers,
    })
}

/// mountinfo escapes space, tab, newline and backslash as three octal digits ("\040").
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes.get(i) == Some(&b'\\') && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (octal, bytes.get(i)) {
            (Some(byte), _) => {
                out.push(byte);
                i += 4;
            }
            (None, Some(&byte)) => {
                out.push(byte);
                i += 1;
            }
            (None, None) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points are host paths; those under /sys move onto `roots.sys` so fixture trees work.
fn rebase_mount_point(roots: &HostRoots, mount_point: &str) -> PathBuf {
    match Path::new(mount_point).strip_prefix("/sys") {
        Ok(rest) => roots.sys.join(rest),
        Err(_) => PathBuf::from(mount_point),
    }
}

impl CgroupMounts {
    /// Find the cgroup mounts from proc/self/mountinfo. An unreadable mountinfo gives no
    /// mounts (layout `None`), logged, since the rest of the tool still works without cgroups.
    pub fn detect(roots: &HostRoots) -> CgroupMounts {
        let path = roots.proc.join("self").join("mountinfo");
        match read_to_string(&path) {
            Ok(text) => Self::from_mountinfo(roots, &text),
            Err(err) => {
                tracing::warn!(%err, "cannot find cgroup mounts");
                CgroupMounts::default()
            }
        }
    }

    /// Build the mounts from mountinfo text. When a hierarchy is mounted twice (bind mounts),
    /// the first mount whose root is "/" wins, else the first seen.
    pub fn from_mountinfo(roots: &HostRoots, text: &str) -> CgroupMounts {
        let mut mounts = CgroupMounts::default();
        let lines = text.lines().filter_map(parse_mountinfo_line);
        let (whole, partial): (Vec<_>, Vec<_>) = lines.partition(|m| m.root == "/");
        for mount in whole.into_iter().chain(partial) {
            let dir = rebase_mount_point(roots, &mount.mount_point);
            let mut used = false;
            if mount.unified {
                if mounts.unified.is_none() {
                    mounts.unified = Some(dir.clone());
                    used = true;
                }
            } else {
                for controller in mount.controllers {
                    if let std::collections::btree_map::Entry::Vacant(slot) =
                        mounts.v1.entry(controller)
                    {
                        slot.insert(dir.clone());
                        used = true;
                    }
                }
            }
            if used && mount.root != "/" {
                mounts.mount_roots.insert(dir, mount.root);
            }
        }
        mounts
    }

    /// Which hierarchies the host has.
    pub fn layout(&self) -> CgroupLayout {
        match (!self.v1.is_empty(), self.unified.is_some()) {
            (true, true) => CgroupLayout::Hybrid,
            (true, false) => CgroupLayout::V1,
            (false, true) => CgroupLayout::V2,
            (false, false) => CgroupLayout::None,
        }
    }

    /// The directory of cgroup `cg_path` under the mount at `mount`, with the mount's root
    /// stripped. A path that climbs ("..", seen across cgroup namespaces) is refused rather
    /// than followed out of the hierarchy.
    pub fn cgroup_dir(&self, mount: &Path, cg_path: &str) -> Option<PathBuf> {
        let mut relative = Path::new(cg_path);
        if let Some(root) = self.mount_roots.get(mount)
            && let Ok(rest) = relative.strip_prefix(root)
        {
            relative = rest;
        }
        let mut dir = mount.to_path_buf();
        for component in relative.components() {
            match component {
                Component::Normal(part) => dir.push(part),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    tracing::debug!(cg_path, "refusing cgroup path that leaves its hierarchy");
                    return None;
                }
            }
        }
        Some(dir)
    }

    /// Directory of the process's cgroup for one v1 controller, if both are known.
    pub(super) fn v1_dir(&self, cg: &ProcCgroups, controller: &str) -> Option<PathBuf> {
        let mount = self.v1.get(controller)?;
        let path = cg.v1.get(controller)?;
        self.cgroup_dir(mount, path)
    }

    /// Directory of the process's unified cgroup, if both are known.
    pub(super) fn unified_dir(&self, cg: &ProcCgroups) -> Option<PathBuf> {
        self.cgroup_dir(self.unified.as_deref()?, cg.unified.as_deref()?)
    }
}

pub(super) fn unusable(cg_path: &str) -> HostError {
    HostError::Parse {
        path: PathBuf::from(cg_path),
        what: "cgroup path leaves its hierarchy".to_string(),
    }
}

/// Quota over period in cores; a negative quota (-1) means unlimited.
pub(crate) fn cores(quota: i64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

/// Which cgroups one process is in, from proc/<pid>/cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    /// The "0::/path" entry.
    pub unified: Option<String>,
    /// v1 controller name -> path. Named hierarchies (name=systemd) are left out.
    pub v1: BTreeMap<String, String>,
}

impl ProcCgroups {
    /// Whether any of the process's cgroups (unified or v1) is `path` or below it.
    pub fn within(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        self.unified.iter().chain(self.v1.values()).any(|own| {
            own == path
                || own
                    .strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The path to show for a process: the unified one on v2 hosts; on hybrid hosts the
    /// unified entry is usually just "/", so a v1 controller's path says more.
    pub fn display_path(&self) -> String {
        let v1 = ["cpu", "cpuacct", "memory"]
            .iter()
            .find_map(|c| self.v1.get(*c))
            .or_else(|| self.v1.values().next());
        match (&self.unified, v1) {
            (Some(unified), Some(v1)) if unified == "/" => v1.clone(),
            (Some(unified), _) => unified.clone(),
            (None, Some(v1)) => v1.clone(),
            (None, None) => String::new(),
        }
    }
}

/// Parse proc/<pid>/cgroup: lines "hierarchy-id:controller,list:/path". The path may itself
/// hold ':', so only the first two colons split. Malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut out = ProcCgroups::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // One line at a time: procfs-core refuses a whole text for one odd line.
        let Ok(ProcessCGroups(entries)) = ProcessCGroups::from_buf_read(line.as_bytes()) else {
            tracing::debug!("skipping malformed proc cgroup line");
            continue;
        };
        for entry in entries {
            if !entry.pathname.starts_with('/') {
                tracing::debug!("skipping malformed proc cgroup line");
                continue;
            }
            if entry.hierarchy == 0 && entry.controllers.is_empty() {
                out.unified = Some(entry.pathname);
                continue;
            }
            for controller in entry.controllers {
                // Named hierarchies ("name=systemd") have no controller.
                if !controller.contains('=') {
                    out.v1.insert(controller, entry.pathname.clone());
                }
            }
        }
    }
    out
}

/// Read and parse proc/<pid>/cgroup.
pub fn read_proc_cgroups(roots: &HostRoots, pid: i32) -> Result<ProcCgroups, HostError> {
    let path = roots.proc.join(pid.to_string()).join("cgroup");
    Ok(parse_proc_cgroup(&read_to_string(&path)?))
}

/// Usage counters of one cgroup as read (cumulative; rates are computed by the caller).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupCounters {
    pub source: UsageSource,
    /// CPU time used in all, nanoseconds.
    pub cpu_usage_ns: Option<u64>,
    pub memory_usage_bytes: u64,
    pub inactive_file_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub pids: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub cpu_limit_cores: Option<f64>,
    /// cpu.shares (v1) or cpu.weight (v2).
    pub cpu_weight: Option<u64>,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub pressure: Pressure,
    /// The cgroup path read: the unified path for v2, the memory controller's for v1.
    pub path: String,
}

/// The value of `key` in a flat-keyed cgroup file ("key value" per line, e.g. cpu.stat,
/// memory.stat). Scans without building a map: the hot path wants two or three keys out of
/// dozens. Odd lines are skipped; the first well-formed line for the key wins.
pub fn flat_keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(' ')?;
        rest.trim().parse::<u64>().ok()
    })
}

/// v1 blkio service bytes: "MAJ:MIN Read N" rows summed over devices; "Total" rows and the
/// final "Total N" line are skipped so nothing is counted twice.
pub fn parse_blkio_service_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [_device, op, value] = words.as_slice() else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            tracing::debug!("skipping malformed blkio line");
            continue;
        };
        match *op {
            "Read" => read = read.saturating_add(value),
            "Write" => write = write.saturating_add(value),
            _ => {}
        }
    }
    (read, write)
}

/// v2 io.stat: "MAJ:MIN rbytes=N wbytes=N rios=..." summed over devices.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut write) = (0u64, 0u64);
    for line in text.lines() {
        for (key, value) in line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.split_once('='))
        {
            let Ok(value) = value.parse::<u64>() else {
                tracing::debug!(key, "skipping malformed io.stat field");
                continue;
            };
            match key {
                "rbytes" => read = read.saturating_add(value),
                "wbytes" => write = write.saturating_add(value),
                _ => {}
            }
        }
    }
    (read, write)
}

/// v2 cpu.max: "max 100000" is no limit, "50000 100000" is 0.5 cores.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    // The period is optional in writes but the kernel always prints it; default as it does.
    let period = words
        .next()
        .map_or(Some(100_000), |p| p.parse::<u64>().ok())?;
    if quota == "max" {
        return None;
    }
    cores(quota.parse::<i64>().ok()?, period)
}

/// A v2 limit: "max" is none.
pub fn parse_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        other => other.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> HostRoots {
        HostRoots::under(Path::new("/fx"))
    }

    #[test]
    fn mountinfo_co_mounted_controllers_map_both_names_and_named_are_ignored() {
        let text = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
22 1 8:1 / / rw - ext4 /dev/sda1 rw
garbage
";
        let m = CgroupMounts::from_mountinfo(&roots(), text);
        let dir = PathBuf::from("/fx/sys/fs/cgroup/cpu,cpuacct");
        assert_eq!(m.v1.get("cpu"), Some(&dir));
        assert_eq!(m.v1.get("cpuacct"), Some(&dir));
        assert_eq!(m.v1.len(), 2);
        assert_eq!(m.unified, Some(PathBuf::from("/fx/sys/fs/cgroup/unified")));
        assert_eq!(m.layout(), CgroupLayout::Hybrid);
    }

    #[test]
    fn mountinfo_layouts_and_empty() {
        assert_eq!(
            CgroupMounts::from_mountinfo(&roots(), "").layout(),
            CgroupLayout::None
        );
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = CgroupMounts::from_mountinfo(&roots(), v2);
        assert_eq!(m.layout(), CgroupLayout::V2);
        assert_eq!(m.unified, Some(PathBuf::from("/fx/sys/fs/cgroup")));
        let v1 = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            CgroupMounts::from_mountinfo(&roots(), v1).layout(),
            CgroupLayout::V1
        );
    }

    #[test]
    fn mount_outside_sys_is_kept_and_escapes_decoded() {
        let text = "50 1 0:40 / /mnt/my\\040cg rw - cgroup cgroup rw,pids\n";
        let m = CgroupMounts::from_mountinfo(&roots(), text);
        assert_eq!(m.v1.get("pids"), Some(&PathBuf::from("/mnt/my cg")));
        assert_eq!(unescape_mountinfo("a\\134b\\"), "a\\b\\");
        assert_eq!(unescape_mountinfo("\\04"), "\\04");
    }

    #[test]
    fn mount_root_is_stripped_and_whole_mount_preferred() {
        let text = "\
60 1 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
61 1 0:33 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
62 1 0:33 / /mnt/pids rw - cgroup cgroup rw,pids
";
        let m = CgroupMounts::from_mountinfo(&roots(), text);
        let mem = m.v1.get("memory").cloned().unwrap();
        assert_eq!(
            m.cgroup_dir(&mem, "/docker/abc/child"),
            Some(PathBuf::from("/fx/sys/fs/cgroup/memory/child"))
        );
        assert_eq!(m.cgroup_dir(&mem, "/docker/abc"), Some(mem.clone()));
        // A path outside the root is not stripped.
        assert_eq!(
            m.cgroup_dir(&mem, "/other"),
            Some(PathBuf::from("/fx/sys/fs/cgroup/memory/other"))
        );
        assert_eq!(m.cgroup_dir(&mem, "/../escape"), None);
        assert_eq!(m.v1.get("pids"), Some(&PathBuf::from("/mnt/pids")));
        assert_eq!(
            m.cgroup_dir(Path::new("/mnt/pids"), "/docker/abc"),
            Some(PathBuf::from("/mnt/pids/docker/abc"))
        );
    }

    #[test]
    fn proc_cgroup_parses_v1_unified_and_skips_garbage() {
        let text = "\
12:cpu,cpuacct:/docker/abc
9:name=systemd:/init.scope
4:memory:/a:b
0::/system.slice/x.service
garbage
7:blkio
x:pids:/p
8:pids:relative

";
        let cg = parse_proc_cgroup(text);
        assert_eq!(cg.unified.as_deref(), Some("/system.slice/x.service"));
        assert_eq!(cg.v1.get("cpu").map(String::as_str), Some("/docker/abc"));
        assert_eq!(
            cg.v1.get("cpuacct").map(String::as_str),
            Some("/docker/abc")
        );
        assert_eq!(cg.v1.get("memory").map(String::as_str), Some("/a:b"));
        assert_eq!(cg.v1.len(), 3);
        assert_eq!(parse_proc_cgroup(""), ProcCgroups::default());
    }

    #[test]
    fn display_path_prefers_meaningful_entry() {
        let hybrid = parse_proc_cgroup("1:cpu:/docker/x\n0::/\n");
        assert_eq!(hybrid.display_path(), "/docker/x");
        let v2 = parse_proc_cgroup("0::/user.slice\n");
        assert_eq!(v2.display_path(), "/user.slice");
        assert_eq!(ProcCgroups::default().display_path(), "");
    }

    #[test]
    fn flat_keyed_skips_odd_lines() {
        let text = "nr_periods 10\nbad\nnr_throttled x\ntoo many 1 2\n\nusage_usec 5\n\
                    inactive_file 7\ntotal_inactive_file 9\n";
        assert_eq!(flat_keyed_value(text, "nr_periods"), Some(10));
        assert_eq!(flat_keyed_value(text, "usage_usec"), Some(5));
        assert_eq!(flat_keyed_value(text, "nr_throttled"), None);
        assert_eq!(flat_keyed_value(text, "too"), None);
        assert_eq!(flat_keyed_value(text, "inactive_file"), Some(7));
        assert_eq!(flat_keyed_value(text, "total_inactive_file"), Some(9));
        assert_eq!(flat_keyed_value(text, "nr_"), None);
    }

    #[test]
    fn blkio_sums_read_write_over_devices_skipping_totals() {
        let text = "\
8:0 Read 100
8:0 Write 10
8:0 Sync 110
8:0 Total 110
8:16 Read 1
8:16 Write 2
8:16 Read garbage
Total 113
";
        assert_eq!(parse_blkio_service_bytes(text), (101, 12));
        assert_eq!(parse_blkio_service_bytes(""), (0, 0));
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "8:0 rbytes=100 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n\
                    259:0 rbytes=5 wbytes=x\n253:1\n";
        assert_eq!(parse_io_stat(text), (105, 20));
        assert_eq!(parse_io_stat("garbage"), (0, 0));
    }

    #[test]
    fn cpu_max_and_max_values() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(0.5));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1.5));
        assert_eq!(parse_cpu_max("200000"), Some(2.0));
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("x 100000"), None);
        assert_eq!(parse_cpu_max("5000 0"), None);
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max("1024\n"), Some(1024));
        assert_eq!(parse_max("junk"), None);
        assert_eq!(cores(-1, 100_000), None);
    }
}
