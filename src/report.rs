//! Export: the current snapshot and its history as a JSON report.
//!
//! The report is the snapshot written out, wrapped with what produced it. It is written to a
//! new file (never through an existing path or symlink), synced, then shown by its path.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::snapshot::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write report in {dir}: {source}")]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode report: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Serialize)]
struct Report<'a> {
    tool: &'static str,
    version: &'static str,
    /// ISO 8601 UTC time of the snapshot.
    taken_at: String,
    snapshot: &'a Snapshot,
}

/// Serialize the report for `snap` (pure; no I/O).
pub fn to_json(snap: &Snapshot) -> Result<String, ReportError> {
    let report = Report {
        tool: "sutazai-top",
        version: env!("CARGO_PKG_VERSION"),
        taken_at: iso8601(snap.taken_at_ms / 1000),
        snapshot: snap,
    };
    Ok(serde_json::to_string_pretty(&report)?)
}

/// Write the report to a new timestamped file in `dir`; returns its path.
pub fn write_json(snap: &Snapshot, dir: &Path) -> Result<PathBuf, ReportError> {
    let text = to_json(snap)?;
    let stamp = file_stamp(snap.taken_at_ms / 1000);
    let io_err = |source| ReportError::Write {
        dir: dir.to_path_buf(),
        source,
    };
    // create_new refuses an existing path (and so a planted symlink); a second export in the
    // same second gets a numbered name.
    for attempt in 0..100 {
        let name = if attempt == 0 {
            format!("sutazai-report-{stamp}.json")
        } else {
            format!("sutazai-report-{stamp}-{attempt}.json")
        };
        let path = dir.join(name);
        // 0600: the report holds command lines, which may carry secrets.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(text.as_bytes()).map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                return Ok(std::path::absolute(&path).unwrap_or(path));
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(io_err(err)),
        }
    }
    Err(io_err(std::io::Error::other(
        "100 reports with this timestamp already exist",
    )))
}

/// (year, month, day, hour, minute, second) in UTC for Unix seconds.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn iso8601(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

fn file_stamp(secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_795_753_435), "2026-11-27T04:23:55Z");
        assert_eq!(file_stamp(1_795_753_435), "20261127-042355");
    }

    #[test]
    fn reports_are_new_files_that_parse() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot {
            seq: 7,
            taken_at_ms: 1_795_753_435_000,
            ..Snapshot::default()
        };
        let first = write_json(&snap, dir.path()).unwrap();
        let second = write_json(&snap, dir.path()).unwrap();
        assert_ne!(first, second);
        assert!(second.to_string_lossy().ends_with("-1.json"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&first).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "reports are private to their owner");
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&first).unwrap()).unwrap();
        assert_eq!(value["snapshot"]["seq"], 7);
        assert_eq!(value["taken_at"], "2026-11-27T04:23:55Z");
    }

    #[test]
    fn unwritable_dir_is_an_error_naming_it() {
        let err = write_json(&Snapshot::default(), Path::new("/nonexistent/dir")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
    }
}
