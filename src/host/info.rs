//! Who the host is: name, kernel, uptime, and whether we may change anything (root).
//! proc/uptime goes through procfs-core; hostname and osrelease are one word each, read as is.

use procfs_core::FromRead;

use crate::host::{HostRoots, read_optional};
use crate::model::HostInfo;

/// Read the host's identity. Missing files give empty strings or 0 (logged at debug) so a
/// partial fixture or a locked-down procfs never stops the engine from starting.
/// `cgroup_layout` stays at its default: the caller knows the mounts.
pub fn read_host_info(roots: &HostRoots) -> HostInfo {
    let kernel_dir = roots.proc.join("sys").join("kernel");
    HostInfo {
        hostname: read_trimmed(&kernel_dir.join("hostname")),
        kernel: read_trimmed(&kernel_dir.join("osrelease")),
        uptime_secs: read_optional(&roots.proc.join("uptime"))
            .map(|text| parse_uptime_secs(&text))
            .unwrap_or(0),
        is_root: nix::unistd::geteuid().is_root(),
        ..HostInfo::default()
    }
}

fn read_trimmed(path: &std::path::Path) -> String {
    read_optional(path)
        .map(|text| text.trim().to_string())
        .unwrap_or_default()
}

/// Whole seconds since boot from proc/uptime ("12345.67 23456.78", both fields as every
/// kernel prints them), parsed by procfs-core's `Uptime`; 0 when unparseable.
pub fn parse_uptime_secs(text: &str) -> u64 {
    let parsed = procfs_core::Uptime::from_read(text.as_bytes())
        .ok()
        .map(|uptime| uptime.uptime)
        // f64 parsing takes "inf" and "-5", which no kernel prints.
        .filter(|secs| secs.is_finite() && *secs >= 0.0);
    match parsed {
        // Truncation is intended: uptime is shown in whole seconds.
        Some(secs) => secs as u64,
        None => {
            tracing::debug!("uptime not parseable");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_takes_whole_seconds_of_first_field() {
        assert_eq!(parse_uptime_secs("12345.67 23456.78\n"), 12345);
        assert_eq!(parse_uptime_secs("7 1"), 7);
    }

    #[test]
    fn uptime_garbage_is_zero() {
        assert_eq!(parse_uptime_secs(""), 0);
        assert_eq!(parse_uptime_secs("abc 1.0"), 0);
        assert_eq!(parse_uptime_secs("-5.0 1.0"), 0);
        assert_eq!(parse_uptime_secs("inf 1.0"), 0);
        // The kernel always prints the idle time too; procfs-core requires it.
        assert_eq!(parse_uptime_secs("7"), 0);
    }

    #[test]
    fn reads_fixture_files_and_missing_ones_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("proc/sys/kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        std::fs::write(kernel.join("hostname"), "agents-01\n").unwrap();
        std::fs::write(dir.path().join("proc/uptime"), "99.90 10.00\n").unwrap();
        let info = read_host_info(&HostRoots::under(dir.path()));
        assert_eq!(info.hostname, "agents-01");
        assert_eq!(info.kernel, "");
        assert_eq!(info.uptime_secs, 99);
        assert_eq!(info.is_root, nix::unistd::geteuid().is_root());
        assert_eq!(info.cgroup_layout, crate::model::CgroupLayout::None);
    }
}
