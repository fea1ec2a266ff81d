//! Host-wide knobs held in one sysfs or procfs file.
//!
//! A knob path names its root by its first component: "sys/kernel/mm/ksm/run" is
//! `roots.sys` + "kernel/mm/ksm/run", "proc/sys/vm/swappiness" is `roots.proc` +
//! "sys/vm/swappiness". Any other first component, an absolute path, or a "." or ".."
//! component is an invalid value.
//!
//! Writes are refused when the file is a symlink or world-writable, when its directory
//! resolves outside the root, or when any directory from the root down to it is
//! world-writable: a root tool must never write where another user could redirect it.
//! Directory symlinks inside the root are followed (sysfs's cpuN/cpufreq is one).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::{Actuator, invalid, unsupported};
use crate::host::HostRoots;
use crate::model::{Knob, Target};
use crate::optimizer::change::ActuatorError;

const WORLD_WRITABLE: u32 = 0o002;

/// Reads and writes host files under the roots' sys and proc trees.
#[derive(Debug, Clone)]
pub struct HostFileActuator {
    pub roots: HostRoots,
}

/// A knob path resolved against the roots: the file, and the root it must stay inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub(super) root: PathBuf,
    pub(super) file: PathBuf,
}

impl HostFileActuator {
    pub fn new(roots: HostRoots) -> Self {
        HostFileActuator { roots }
    }

    /// The knob's file under its root, or `InvalidValue` for a path outside the rule.
    fn resolve(&self, knob: &Knob) -> Result<Resolved, ActuatorError> {
        let Knob::HostFile { path } = knob else {
            return Err(unsupported(&Target::Host, knob));
        };
        let bad = |why: &str| invalid(knob, &path.display().to_string(), why);
        let mut components = path.components();
        let root = match components.next() {
            Some(Component::Normal(first)) if first == "sys" => self.roots.sys.clone(),
            Some(Component::Normal(first)) if first == "proc" => self.roots.proc.clone(),
            _ => return Err(bad("must start with sys/ or proc/")),
        };
        let mut file = root.clone();
        let mut depth = 0;
        for component in components {
            match component {
                Component::Normal(part) => file.push(part),
                _ => return Err(bad("no \".\" or \"..\" components")),
            }
            depth += 1;
        }
        if depth == 0 {
            return Err(bad("names no file"));
        }
        Ok(Resolved { root, file })
    }
}

impl Actuator for HostFileActuator {
    fn read(&self, target: &Target, knob: &Knob) -> Result<String, ActuatorError> {
        check_target(target, knob)?;
        let resolved = self.resolve(knob)?;
        let text = std::fs::read_to_string(&resolved.file)
            .map_err(|err| io_error(&err, "read", &resolved.file))?;
        Ok(knob_value(&text))
    }

    fn write(&self, target: &Target, knob: &Knob, value: &str) -> Result<(), ActuatorError> {
        check_target(target, knob)?;
        let resolved = self.resolve(knob)?;
        check_value(knob, value)?;
        write_checked(&resolved, value)
    }
}

/// Write `value` to the resolved file once the safety rules hold (see [`checked_path`]).
/// Shared with the cgroup-file actuator, whose files follow the same rules.
pub(super) fn write_checked(resolved: &Resolved, value: &str) -> Result<(), ActuatorError> {
    let path = checked_path(resolved)?;
    let mut file = open_for_write(&path)?;
    let mut text = value.to_string();
    if !is_kernel_file(&file) {
        // A regular file (a fixture) stands in for a kernel file: it must read back as the
        // kernel's would, and not keep the tail of a longer old value.
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        text = rendered_like_kernel(&old, value);
        file.set_len(0)
            .map_err(|err| io_error(&err, "truncate", &path))?;
    }
    // One write() call: sysfs and cgroupfs take a value in a single write.
    let written = file
        .write(text.as_bytes())
        .map_err(|err| io_error(&err, "write", &path))?;
    if written != text.len() {
        return Err(ActuatorError::Io(format!(
            "short write to {}",
            path.display()
        )));
    }
    Ok(())
}

/// What a kernel file reads after `value` is written to it: in a choice list the brackets
/// move to the chosen word ("always [madvise] never"), else the value on a line of its own.
fn rendered_like_kernel(old: &str, value: &str) -> String {
    let value = value.trim();
    let words: Vec<&str> = old.split_whitespace().collect();
    let is_choice = words.iter().any(|w| w.starts_with('[') && w.ends_with(']'));
    let bare: Vec<&str> = words.iter().map(|w| w.trim_matches(['[', ']'])).collect();
    if is_choice && bare.contains(&value) {
        let marked: Vec<String> = bare
            .iter()
            .map(|w| {
                if *w == value {
                    format!("[{w}]")
                } else {
                    (*w).to_string()
                }
            })
            .collect();
        return format!("{}\n", marked.join(" "));
    }
    format!("{value}\n")
}

fn check_target(target: &Target, knob: &Knob) -> Result<(), ActuatorError> {
    match target {
        Target::Host => Ok(()),
        _ => Err(unsupported(target, knob)),
    }
}

/// The value of a file's content: the bracketed word when there is one ("always [madvise]
/// never" is "madvise"), else the content trimmed.
fn knob_value(text: &str) -> String {
    let trimmed = text.trim();
    let bracketed = trimmed
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(word, _)| word.trim())
        .filter(|word| !word.is_empty());
    bracketed.unwrap_or(trimmed).to_string()
}

/// Host-file values are one line of text: what a read returns, what an operator types.
fn check_value(knob: &Knob, value: &str) -> Result<(), ActuatorError> {
    if value.trim().is_empty() {
        return Err(invalid(knob, value, "empty"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(invalid(knob, value, "must be one line"));
    }
    Ok(())
}

/// The path to open once the safety rules hold: the file is not a symlink, its directory
/// resolves inside the root, and nothing from the root down is world-writable.
fn checked_path(resolved: &Resolved) -> Result<PathBuf, ActuatorError> {
    let file = &resolved.file;
    let meta = std::fs::symlink_metadata(file).map_err(|err| io_error(&err, "inspect", file))?;
    if meta.file_type().is_symlink() {
        return Err(ActuatorError::Refused(format!(
            "{} is a symlink",
            file.display()
        )));
    }
    let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
        return Err(ActuatorError::Io(format!(
            "{} has no directory",
            file.display()
        )));
    };
    let root = canonical_dir(&resolved.root)?;
    let dir = canonical_dir(parent)?;
    let Ok(below_root) = dir.strip_prefix(&root) else {
        return Err(ActuatorError::Refused(format!(
            "{} resolves outside {}",
            file.display(),
            root.display()
        )));
    };
    let mut current = root.clone();
    refuse_world_writable(&current)?;
    for part in below_root.components() {
        current.push(part);
        refuse_world_writable(&current)?;
    }
    Ok(dir.join(name))
}

fn canonical_dir(path: &Path) -> Result<PathBuf, ActuatorError> {
    std::fs::canonicalize(path).map_err(|err| io_error(&err, "resolve", path))
}

fn refuse_world_writable(path: &Path) -> Result<(), ActuatorError> {
    let meta = std::fs::metadata(path).map_err(|err| io_error(&err, "inspect", path))?;
    if meta.mode() & WORLD_WRITABLE != 0 {
        return Err(ActuatorError::Refused(format!(
            "{} is world-writable",
            path.display()
        )));
    }
    Ok(())
}

/// Open without following a symlink or creating anything, then re-check the opened file
/// itself, which no rename can swap any more.
fn open_for_write(path: &Path) -> Result<File, ActuatorError> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| io_error(&err, "open", path))?;
    let meta = file
        .metadata()
        .map_err(|err| io_error(&err, "inspect", path))?;
    if !meta.file_type().is_file() {
        return Err(ActuatorError::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.mode() & WORLD_WRITABLE != 0 {
        return Err(ActuatorError::Refused(format!(
            "{} is world-writable",
            path.display()
        )));
    }
    Ok(file)
}

/// Whether the open file lives on sysfs, procfs or a cgroup filesystem.
/// Their files (sysfs, procfs, cgroup v1 and v2) are not truncated, only written, as the
/// kernel expects.
fn is_kernel_file(file: &File) -> bool {
    use nix::sys::statfs::{
        CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC,
    };
    nix::sys::statfs::fstatfs(file).is_ok_and(|stats| {
        [
            SYSFS_MAGIC,
            PROC_SUPER_MAGIC,
            CGROUP_SUPER_MAGIC,
            CGROUP2_SUPER_MAGIC,
        ]
        .contains(&stats.filesystem_type())
    })
}

/// An I/O error as an actuator error, by what it means for the operator.
pub(super) fn io_error(err: &std::io::Error, action: &str, path: &Path) -> ActuatorError {
    let what = format!("cannot {action} {}", path.display());
    match (err.kind(), err.raw_os_error()) {
        (ErrorKind::NotFound, _) => {
            ActuatorError::Unsupported(format!("{} does not exist", path.display()))
        }
        (ErrorKind::PermissionDenied, _) => ActuatorError::Denied(what),
        (_, Some(libc::EROFS)) => ActuatorError::Denied(format!("{what}: read-only filesystem")),
        (_, Some(libc::ELOOP)) => {
            ActuatorError::Refused(format!("{} is a symlink", path.display()))
        }
        (_, Some(libc::EINVAL)) => ActuatorError::InvalidValue {
            knob: path.display().to_string(),
            value: String::new(),
            why: "the kernel rejected the value".to_string(),
        },
        _ => ActuatorError::Io(format!("{what}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(path: &str) -> Knob {
        Knob::HostFile {
            path: PathBuf::from(path),
        }
    }

    #[test]
    fn paths_pick_their_root_by_first_component() {
        let actuator = HostFileActuator::new(HostRoots::under(Path::new("/fx")));
        let resolved = actuator.resolve(&knob("sys/kernel/mm/ksm/run")).ok();
        assert_eq!(
            resolved.map(|r| (r.root, r.file)),
            Some((
                PathBuf::from("/fx/sys"),
                PathBuf::from("/fx/sys/kernel/mm/ksm/run")
            ))
        );
        let resolved = actuator.resolve(&knob("proc/sys/vm/swappiness")).ok();
        assert_eq!(
            resolved.map(|r| r.file),
            Some(PathBuf::from("/fx/proc/sys/vm/swappiness"))
        );
        for bad in [
            "etc/passwd",
            "/sys/kernel",
            "sys",
            "sys/../etc/passwd",
            "sys/a/../../x",
            "./sys/x",
            "",
        ] {
            assert!(
                matches!(
                    actuator.resolve(&knob(bad)),
                    Err(ActuatorError::InvalidValue { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn values_take_the_bracketed_word() {
        assert_eq!(knob_value("always [madvise] never\n"), "madvise");
        assert_eq!(
            knob_value("always defer defer+madvise [madvise] never"),
            "madvise"
        );
        assert_eq!(knob_value("60\n"), "60");
        assert_eq!(knob_value("  performance \n"), "performance");
        assert_eq!(knob_value("[] x"), "[] x");
    }

    #[test]
    fn fixture_files_read_back_as_kernel_files_would() {
        assert_eq!(
            rendered_like_kernel("always [madvise] never\n", "never"),
            "always madvise [never]\n"
        );
        assert_eq!(rendered_like_kernel("60\n", "10"), "10\n");
        assert_eq!(rendered_like_kernel("", "1"), "1\n");
        // A word outside the list is written as is (the kernel would refuse it).
        assert_eq!(rendered_like_kernel("[a] b\n", "c"), "c\n");
    }

    #[test]
    fn multi_line_and_empty_values_are_invalid() {
        assert!(check_value(&knob("sys/x"), "never").is_ok());
        for bad in ["", "  ", "a\nb", "a\0"] {
            assert!(matches!(
                check_value(&knob("sys/x"), bad),
                Err(ActuatorError::InvalidValue { .. })
            ));
        }
    }
}
