//! Control files of one cgroup directory, for agents that are plain processes (a container's
//! cgroup is Docker's to change, through [`super::ContainerActuator`]).
//!
//! The target's path is relative to the sys root and must start with "fs/cgroup/"
//! ("fs/cgroup/unified/agents/x", "fs/cgroup/cpu,cpuacct/agents/x"). Only a whitelist of
//! files is read or written, each value validated before anything is touched:
//!
//! - v2: cpu.weight (1..=10000), cpu.max ("QUOTA PERIOD", "max PERIOD", or the quota alone,
//!   which keeps the period), memory.high and memory.max (bytes, k/m/g, or "max"),
//!   cpuset.cpus and cpuset.mems (lists);
//! - v1: cpu.shares (2..=262144), cpu.cfs_quota_us (-1 or at least 1000),
//!   memory.limit_in_bytes and memory.soft_limit_in_bytes (bytes, k/m/g, or -1 / "max"),
//!   cpuset.cpus and cpuset.mems.
//!
//! Writes follow the host-file rules (no symlinked file, nothing world-writable from the sys
//! root down, the directory resolves inside the root, one write() for kernel files). On top,
//! no directory of the cgroup itself may be a symlink: cgroupfs has none, so one is a trap.
//! Only the hierarchy's mount may be a link (hybrid hosts link "cpu" to "cpu,cpuacct").
//!
//! A cgroup directory that no longer exists is `Gone`. Read-back is compared as the kernel
//! means it: memory limits are rounded down to whole pages, v1 reads "no limit" as
//! 9223372036854771712, cpu.max keeps a period that was not written, "0,1" is "0-1".

use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::container::{parse_bytes, parse_id_list, parse_shares};
use super::host_file::{Resolved, io_error, write_checked};
use super::{Actuator, invalid, unsupported};
use crate::host::cgroups::{CgroupMounts, V1_UNLIMITED, read_proc_cgroups};
use crate::host::{HostRoots, format_cpu_list};
use crate::model::{Change, Knob, Target};
use crate::optimizer::change::ActuatorError;

/// Why a target path with "." or ".." (or an absolute one) is refused.
const RELATIVE: &str = "relative to the sys root, with no \".\" or \"..\" components";
/// Components every target path starts with.
const CGROUP_PREFIX: [&str; 2] = ["fs", "cgroup"];
/// Kernel bounds of v2 cpu.weight.
const WEIGHT_RANGE: std::ops::RangeInclusive<i64> = 1..=10_000;
/// Kernel bounds of a CFS quota and period, in microseconds (1 ms .. 1 s for the period).
const MIN_QUOTA_US: i64 = 1_000;
const PERIOD_RANGE: std::ops::RangeInclusive<i64> = 1_000..=1_000_000;

/// Reads and writes the whitelisted control files of cgroup directories under `roots.sys`.
#[derive(Debug, Clone)]
pub struct CgroupFileActuator {
    pub roots: HostRoots,
}

/// What a whitelisted file holds, which decides how its values are checked and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    /// v2 cpu.weight.
    Weight,
    /// v2 cpu.max.
    CpuMax,
    /// v2 memory.high / memory.max: bytes or "max".
    V2Bytes,
    /// v1 cpu.shares.
    Shares,
    /// v1 cpu.cfs_quota_us: -1 or microseconds.
    CfsQuota,
    /// v1 memory.limit_in_bytes / memory.soft_limit_in_bytes: bytes or -1.
    V1Bytes,
    /// cpuset.cpus / cpuset.mems (v1 and v2).
    IdList,
}

const FILES: &[(&str, FileKind)] = &[
    ("cpu.weight", FileKind::Weight),
    ("cpu.max", FileKind::CpuMax),
    ("memory.high", FileKind::V2Bytes),
    ("memory.max", FileKind::V2Bytes),
    ("cpu.shares", FileKind::Shares),
    ("cpu.cfs_quota_us", FileKind::CfsQuota),
    ("memory.limit_in_bytes", FileKind::V1Bytes),
    ("memory.soft_limit_in_bytes", FileKind::V1Bytes),
    ("cpuset.cpus", FileKind::IdList),
    ("cpuset.mems", FileKind::IdList),
];

/// The names of the files this actuator handles, for messages and help.
pub fn cgroup_file_names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(name, _)| *name)
}

/// The whitelisted file a knob names, or `InvalidValue` naming it.
fn file_kind(knob: &Knob) -> Result<(&str, FileKind), ActuatorError> {
    let Knob::CgroupFile { file } = knob else {
        return Err(ActuatorError::Unsupported(format!(
            "{knob:?} is not a cgroup file"
        )));
    };
    FILES
        .iter()
        .find(|(name, _)| name == file)
        .map(|(name, kind)| (*name, *kind))
        .ok_or_else(|| ActuatorError::InvalidValue {
            knob: "cgroup file".to_string(),
            value: file.clone(),
            why: format!(
                "not a file this tool writes; known: {}",
                cgroup_file_names().collect::<Vec<_>>().join(", ")
            ),
        })
}

/// `value` validated for `kind` and spelled the way the file is written: plain numbers,
/// canonical lists ("1,0" is "0-1"), "max" and -1 kept as the kernel's words.
fn written_form(kind: FileKind, value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.contains(['\n', '\r', '\0']) {
        return Err("must be one line".to_string());
    }
    match kind {
        FileKind::Weight => parse_in_range(value, &WEIGHT_RANGE).map(|w| w.to_string()),
        FileKind::Shares => parse_shares(value).map(|s| s.to_string()),
        FileKind::CpuMax => parse_cpu_max(value).map(|max| max.to_string()),
        FileKind::CfsQuota => parse_cfs_quota(value).map(|q| q.to_string()),
        FileKind::V2Bytes => Ok(parse_bytes(value)?
            .map(|b| b.to_string())
            .unwrap_or_else(|| "max".to_string())),
        FileKind::V1Bytes if value == "-1" => Ok("-1".to_string()),
        FileKind::V1Bytes => Ok(parse_bytes(value)
            .map_err(|_| "expected bytes (\"67108864\" or \"64m\") or -1 for none".to_string())?
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-1".to_string())),
        FileKind::IdList => Ok(parse_id_list(value)?
            .map(|ids| format_cpu_list(&ids))
            .unwrap_or_default()),
    }
}

fn parse_in_range(value: &str, range: &std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let number: i64 = value
        .parse()
        .map_err(|_| "not a whole number".to_string())?;
    if range.contains(&number) {
        Ok(number)
    } else {
        Err(format!("out of {}..={}", range.start(), range.end()))
    }
}

/// v1 cpu.cfs_quota_us: -1 (no quota) or at least 1 ms.
fn parse_cfs_quota(value: &str) -> Result<i64, String> {
    let quota: i64 = value
        .parse()
        .map_err(|_| "not a whole number".to_string())?;
    if quota == -1 || quota >= MIN_QUOTA_US {
        Ok(quota)
    } else {
        Err(format!("must be -1 (no quota) or at least {MIN_QUOTA_US}"))
    }
}

/// A v2 cpu.max value: the quota ("max" is none) and, when given, the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuMax {
    quota: Option<i64>,
    period: Option<i64>,
}

impl std::fmt::Display for CpuMax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.quota {
            Some(quota) => write!(f, "{quota}")?,
            None => write!(f, "max")?,
        }
        match self.period {
            Some(period) => write!(f, " {period}"),
            None => Ok(()),
        }
    }
}

fn parse_cpu_max(value: &str) -> Result<CpuMax, String> {
    let mut words = value.split_whitespace();
    let (Some(quota), period, None) = (words.next(), words.next(), words.next()) else {
        return Err("expected \"QUOTA PERIOD\", \"max PERIOD\", or the quota alone".to_string());
    };
    let quota = match quota {
        "max" => None,
        number => Some(
            parse_in_range(number, &(MIN_QUOTA_US..=i64::MAX))
                .map_err(|why| format!("quota {number:?}: {why} (microseconds, or \"max\")"))?,
        ),
    };
    let period = period
        .map(|p| parse_in_range(p, &PERIOD_RANGE).map_err(|why| format!("period {p:?}: {why}")))
        .transpose()?;
    Ok(CpuMax { quota, period })
}

/// Whether a value read back is what was written, as the kernel means it.
fn same_in_kind(kind: FileKind, wrote: &str, read: &str) -> bool {
    let (wrote, read) = (wrote.trim(), read.trim());
    match kind {
        FileKind::Weight | FileKind::Shares | FileKind::CfsQuota => {
            matches!((wrote.parse::<i64>(), read.parse::<i64>()), (Ok(a), Ok(b)) if a == b)
        }
        FileKind::CpuMax => match (parse_cpu_max(wrote), parse_cpu_max(read)) {
            // A quota written alone keeps whatever period the cgroup had.
            (Ok(w), Ok(r)) => w.quota == r.quota && (w.period.is_none() || w.period == r.period),
            _ => false,
        },
        FileKind::V2Bytes | FileKind::V1Bytes => match (limit_bytes(wrote), limit_bytes(read)) {
            (Some(None), Some(None)) => true,
            (Some(Some(w)), Some(Some(r))) => r == w - w % crate::host::page_size(),
            _ => false,
        },
        FileKind::IdList => match (parse_id_list(wrote), parse_id_list(read)) {
            (Ok(w), Ok(r)) => {
                w.map(|ids| format_cpu_list(&ids)) == r.map(|ids| format_cpu_list(&ids))
            }
            _ => false,
        },
    }
}

/// A memory limit: `Some(None)` for none ("max", -1, or v1's page-rounded i64::MAX),
/// `Some(Some(bytes))` for a limit, `None` for something else.
fn limit_bytes(value: &str) -> Option<Option<u64>> {
    if value == "max" || value == "-1" {
        return Some(None);
    }
    let bytes = u64::try_from(parse_bytes(value).ok()??).ok()?;
    Some((bytes < V1_UNLIMITED).then_some(bytes))
}

impl CgroupFileActuator {
    pub fn new(roots: HostRoots) -> Self {
        CgroupFileActuator { roots }
    }

    /// The cgroup directory of `target`, checked: a path under "fs/cgroup/" with no "." or
    /// ".." component, existing (else `Gone`), and no symlink below the hierarchy's mount.
    fn cgroup_dir(&self, target: &Target, knob: &Knob) -> Result<PathBuf, ActuatorError> {
        let Target::Cgroup { path } = target else {
            return Err(unsupported(target, knob));
        };
        let parts = checked_components(path)?;
        let mut dir = self.roots.sys.clone();
        let last = parts.len() - 1;
        for (index, part) in parts.iter().enumerate() {
            dir.push(part);
            // Index 2 is the mount ("cpu" may link to "cpu,cpuacct"); below it, only dirs.
            if index < CGROUP_PREFIX.len() || (index == CGROUP_PREFIX.len() && index != last) {
                continue;
            }
            let meta =
                std::fs::symlink_metadata(&dir).map_err(|err| gone_or_io(&err, path, &dir))?;
            if meta.file_type().is_symlink() {
                return Err(ActuatorError::Refused(format!(
                    "{} is a symlink, never a cgroup",
                    dir.display()
                )));
            }
        }
        if !dir.is_dir() {
            return Err(ActuatorError::Gone(format!(
                "cgroup {} no longer exists",
                path.display()
            )));
        }
        Ok(dir)
    }

    fn file_error(
        &self,
        err: &std::io::Error,
        action: &str,
        dir: &Path,
        file: &Path,
    ) -> ActuatorError {
        // A cgroup removed between the check and the open, or while open (ENODEV).
        if !dir.is_dir() || err.raw_os_error() == Some(libc::ENODEV) {
            return ActuatorError::Gone(format!("cgroup {} no longer exists", dir.display()));
        }
        if err.kind() == ErrorKind::NotFound {
            return ActuatorError::Unsupported(format!(
                "{} does not exist (another cgroup version, or the controller is not enabled)",
                file.display()
            ));
        }
        io_error(err, action, file)
    }
}

/// The path's components, or `InvalidValue` naming the path: "fs/cgroup/" and at least
/// one more plain component.
fn checked_components(path: &Path) -> Result<Vec<&std::ffi::OsStr>, ActuatorError> {
    let bad = |why: &str| ActuatorError::InvalidValue {
        knob: "cgroup path".to_string(),
        value: path.display().to_string(),
        why: why.to_string(),
    };
    // Path::components drops an inner "." silently; the journal keeps one spelling.
    let dotted = path
        .as_os_str()
        .as_bytes()
        .split(|byte| *byte == b'/')
        .any(|part| part == b"." || part == b"..");
    if dotted {
        return Err(bad(RELATIVE));
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            _ => {
                return Err(bad(RELATIVE));
            }
        }
    }
    let prefixed = parts.len() > CGROUP_PREFIX.len()
        && parts
            .iter()
            .zip(CGROUP_PREFIX)
            .all(|(part, want)| *part == want);
    if !prefixed {
        return Err(bad("must start with fs/cgroup/ and name a cgroup below it"));
    }
    Ok(parts)
}

/// A missing directory on the way to a cgroup means the cgroup is gone.
fn gone_or_io(err: &std::io::Error, path: &Path, at: &Path) -> ActuatorError {
    if err.kind() == ErrorKind::NotFound {
        ActuatorError::Gone(format!("cgroup {} no longer exists", path.display()))
    } else {
        io_error(err, "inspect", at)
    }
}

impl Actuator for CgroupFileActuator {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        let (name, _) = file_kind(knob)?;
        let dir = self.cgroup_dir(target, knob)?;
        let file = dir.join(name);
        let text = std::fs::read_to_string(&file)
            .map_err(|err| self.file_error(&err, "read", &dir, &file))?;
        Ok(text.trim().to_string())
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        let (name, kind) = file_kind(knob)?;
        let written = written_form(kind, value).map_err(|why| invalid(knob, value, why))?;
        let dir = self.cgroup_dir(target, knob)?;
        let resolved = Resolved {
            root: self.roots.sys.clone(),
            file: dir.join(name),
        };
        match write_checked(&resolved, &written) {
            Ok(()) => Ok(()),
            Err(ActuatorError::InvalidValue { why, .. }) => Err(invalid(knob, value, why)),
            Err(ActuatorError::Unsupported(_) | ActuatorError::Io(_)) if !dir.is_dir() => Err(
                ActuatorError::Gone(format!("cgroup {} no longer exists", dir.display())),
            ),
            Err(ActuatorError::Unsupported(_)) => Err(ActuatorError::Unsupported(format!(
                "{} does not exist (another cgroup version, or the controller is not enabled)",
                resolved.file.display()
            ))),
            Err(other) => Err(other),
        }
    }

    fn same_value(&self, knob: &Knob, wrote: &str, read: &str) -> bool {
        match file_kind(knob) {
            Ok((_, kind)) => same_in_kind(kind, wrote, read),
            Err(_) => false,
        }
    }
}

/// One change of a cgroup file, with `before` read from the host and `after` validated
/// and stored in the form it is written ("64m" becomes "67108864", "1,0" becomes "0-1").
pub fn plan_cgroup(
    roots: &HostRoots,
    cgroup_path: &Path,
    file: &str,
    after: &str,
) -> Result<Change, ActuatorError> {
    let knob = Knob::CgroupFile {
        file: file.to_string(),
    };
    let (_, kind) = file_kind(&knob)?;
    let after = written_form(kind, after).map_err(|why| invalid(&knob, after, why))?;
    let target = Target::Cgroup {
        path: cgroup_path.to_path_buf(),
    };
    let before = CgroupFileActuator::new(roots.clone()).read(&target, &knob)?;
    Ok(Change {
        target,
        knob,
        before,
        after,
    })
}

/// The cgroup of process `pid` as a target path ("fs/cgroup/cpu/agents/x"): in the v1
/// hierarchy of `controller`, or in the unified one when `controller` is `None`. Read from
/// proc/<pid>/cgroup and the mounts in proc/self/mountinfo.
pub fn process_cgroup(
    roots: &HostRoots,
    pid: i32,
    controller: Option<&str>,
) -> Result<PathBuf, ActuatorError> {
    let cgroups = read_proc_cgroups(roots, pid).map_err(|err| {
        if roots.proc.join(pid.to_string()).exists() {
            ActuatorError::Io(err.to_string())
        } else {
            ActuatorError::Gone(format!("process {pid} has exited"))
        }
    })?;
    let mounts = CgroupMounts::detect(roots);
    let (mount, cg_path) = match controller {
        Some(name) => (mounts.v1.get(name), cgroups.v1.get(name)),
        None => (mounts.unified.as_ref(), cgroups.unified.as_ref()),
    };
    let hierarchy = controller.map_or("unified".to_string(), |c| format!("v1 {c}"));
    let (Some(mount), Some(cg_path)) = (mount, cg_path) else {
        return Err(ActuatorError::Unsupported(format!(
            "process {pid} is in no mounted {hierarchy} hierarchy"
        )));
    };
    let dir = mounts.cgroup_dir(mount, cg_path).ok_or_else(|| {
        ActuatorError::Refused(format!(
            "the {hierarchy} cgroup of process {pid} leaves its hierarchy"
        ))
    })?;
    dir.strip_prefix(&roots.sys)
        .map(Path::to_path_buf)
        .map_err(|_| {
            ActuatorError::Unsupported(format!(
                "the {hierarchy} hierarchy is mounted at {}, outside {}",
                mount.display(),
                roots.sys.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(file: &str) -> Knob {
        Knob::CgroupFile {
            file: file.to_string(),
        }
    }

    fn form(file: &str, value: &str) -> Result<String, String> {
        let (_, kind) = file_kind(&knob(file)).map_err(|e| e.to_string())?;
        written_form(kind, value)
    }

    fn same(file: &str, wrote: &str, read: &str) -> bool {
        let actuator = CgroupFileActuator::new(HostRoots::under(Path::new("/nonexistent")));
        actuator.same_value(&knob(file), wrote, read)
    }

    #[test]
    fn valid_values_take_their_written_form() {
        let cases = [
            ("cpu.weight", "1", "1"),
            ("cpu.weight", " 10000 ", "10000"),
            ("cpu.max", "max", "max"),
            ("cpu.max", "50000", "50000"),
            ("cpu.max", "max 100000", "max 100000"),
            ("cpu.max", "50000  100000", "50000 100000"),
            ("memory.high", "64m", "67108864"),
            ("memory.max", "max", "max"),
            ("cpuset.cpus", "1,0", "0-1"),
            ("cpuset.mems", "0", "0"),
            ("cpuset.cpus", "", ""),
            ("cpu.shares", "512", "512"),
            ("cpu.cfs_quota_us", "-1", "-1"),
            ("cpu.cfs_quota_us", "1000", "1000"),
            ("memory.limit_in_bytes", "-1", "-1"),
            ("memory.limit_in_bytes", "max", "-1"),
            ("memory.soft_limit_in_bytes", "1g", "1073741824"),
            (
                "memory.limit_in_bytes",
                "9223372036854771712",
                "9223372036854771712",
            ),
        ];
        for (file, value, expected) in cases {
            assert_eq!(
                form(file, value).as_deref(),
                Ok(expected),
                "{file} {value:?}"
            );
        }
    }

    #[test]
    fn out_of_range_and_malformed_values_are_refused() {
        let cases = [
            ("cpu.weight", "0"),
            ("cpu.weight", "10001"),
            ("cpu.weight", "x"),
            ("cpu.max", ""),
            ("cpu.max", "999 100000"),
            ("cpu.max", "50000 999"),
            ("cpu.max", "50000 1000001"),
            ("cpu.max", "50000 100000 7"),
            ("cpu.max", "-1"),
            ("memory.high", "0"),
            ("memory.max", "-1"),
            ("memory.max", "lots"),
            ("cpuset.cpus", "0-"),
            ("cpuset.mems", "a"),
            ("cpu.shares", "1"),
            ("cpu.shares", "262145"),
            ("cpu.cfs_quota_us", "999"),
            ("cpu.cfs_quota_us", "0"),
            ("cpu.cfs_quota_us", "-2"),
            ("memory.limit_in_bytes", "0"),
            ("memory.limit_in_bytes", "-5"),
            ("memory.soft_limit_in_bytes", "1\n2"),
        ];
        for (file, value) in cases {
            assert!(form(file, value).is_err(), "{file} {value:?} accepted");
        }
    }

    #[test]
    fn unknown_files_are_invalid_and_named() {
        for file in [
            "cgroup.procs",
            "memory.oom_control",
            "../cpu.shares",
            "tasks",
            "",
        ] {
            match file_kind(&knob(file)) {
                Err(ActuatorError::InvalidValue { value, .. }) => assert_eq!(value, file),
                other => panic!("{file:?}: expected InvalidValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn read_back_is_compared_as_the_kernel_means_it() {
        let page = crate::host::page_size();
        let unaligned = 64 * 1024 * 1024 + 1;
        let rounded = (unaligned - unaligned % page).to_string();
        assert!(same("memory.max", &unaligned.to_string(), &rounded));
        assert!(same(
            "memory.limit_in_bytes",
            &unaligned.to_string(),
            &rounded
        ));
        assert!(!same(
            "memory.max",
            &unaligned.to_string(),
            &(unaligned - page - 1).to_string()
        ));
        assert!(same("memory.max", "64m", "67108864"));
        assert!(same("memory.max", "max", "max\n"));
        assert!(!same("memory.max", "max", "67108864"));
        assert!(same("memory.limit_in_bytes", "-1", "9223372036854771712"));
        assert!(same(
            "memory.soft_limit_in_bytes",
            "9223372036854771712",
            "9223372036854771712"
        ));
        assert!(!same("memory.limit_in_bytes", "-1", "67108864"));
        assert!(same("cpu.max", "max", "max 100000"));
        assert!(same("cpu.max", "50000", "50000 100000"));
        assert!(same("cpu.max", "50000 100000", "50000 100000\n"));
        assert!(!same("cpu.max", "50000 200000", "50000 100000"));
        assert!(!same("cpu.max", "max", "50000 100000"));
        assert!(same("cpuset.cpus", "0,1", "0-1"));
        assert!(same("cpuset.mems", "", ""));
        assert!(!same("cpuset.cpus", "0", "0-1"));
        assert!(same("cpu.shares", "512", "512\n"));
        assert!(!same("cpu.cfs_quota_us", "50000", "-1"));
        assert!(same("cpu.weight", "100", " 100"));
        assert!(!same("cpu.weight", "100", "bogus"));
        assert!(!same("cgroup.procs", "1", "1"));
    }

    #[test]
    fn paths_must_stay_under_fs_cgroup() {
        for good in [
            "fs/cgroup/unified/agents/x",
            "fs/cgroup/cpu,cpuacct/a",
            "fs/cgroup/x",
        ] {
            assert!(
                checked_components(Path::new(good)).is_ok(),
                "{good:?} refused"
            );
        }
        for bad in [
            "fs/cgroup",
            "fs/cgroup/",
            "/sys/fs/cgroup/cpu/x",
            "fs/cgroup/../../etc",
            "fs/cgroup/cpu/./x",
            "kernel/mm",
            "fs/cgroupx/cpu",
            "",
        ] {
            assert!(
                matches!(
                    checked_components(Path::new(bad)),
                    Err(ActuatorError::InvalidValue { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn wrong_target_or_knob_is_refused_before_any_io() {
        let actuator = CgroupFileActuator::new(HostRoots::under(Path::new("/nonexistent")));
        let err = actuator
            .read(&Target::Host, &knob("cpu.shares"))
            .unwrap_err();
        assert!(matches!(err, ActuatorError::Unsupported(_)), "{err}");
        let target = Target::Cgroup {
            path: PathBuf::from("fs/cgroup/cpu/x"),
        };
        let err = actuator.read(&target, &Knob::Nice).unwrap_err();
        assert!(matches!(err, ActuatorError::Unsupported(_)), "{err}");
        let err = actuator.read(&target, &knob("cpu.shares")).unwrap_err();
        assert!(matches!(err, ActuatorError::Gone(_)), "{err}");
    }
}
