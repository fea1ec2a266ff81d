//! Reports: what the engine saw and did, as JSON (for tools) and as one self-contained HTML
//! page with inline SVG charts (for people).
//!
//! Both are built from one [`json::Report`] view of a snapshot: host and topology, mode, the
//! time window the history rings cover, per-agent profiles, bottlenecks, proposals with their
//! before/after figures, active change batches, and the parts not built yet said as such. The
//! JSON also carries the whole snapshot, so nothing the engine knew is lost. Files are
//! written new (never through an existing path or a planted symlink), 0600, and synced, in
//! a directory that follows the rule of every path the engine owns (`sutazai-owned-paths`).

mod escape;
mod html;
pub mod json;
mod svg;

use std::io::Write;
use std::path::{Path, PathBuf};

use sutazai_owned_paths::{Access, OwnedDir, PathError};

use crate::model::Snapshot;

pub use json::Report;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The directory or the file broke the rule of owned paths, or could not be written.
    #[error("cannot write the report: {0}")]
    Path(#[from] PathError),
    #[error("{path} already exists; a report never overwrites a file (choose another name)")]
    Exists { path: PathBuf },
    #[error("cannot write a report in {}: 100 reports with this timestamp already exist", dir.display())]
    TooMany { dir: PathBuf },
    #[error("cannot encode report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The two shapes a report comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Html,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Html => "html",
        }
    }
}

/// The JSON report for `snap` (pure; no I/O). Its shape is assets/report.schema.json.
pub fn to_json(snap: &Snapshot) -> Result<String, ReportError> {
    Ok(serde_json::to_string_pretty(&Report::new(snap))?)
}

/// The HTML report for `snap`: one page, no network, every text escaped (pure; no I/O).
pub fn to_html(snap: &Snapshot) -> String {
    html::page(&Report::new(snap))
}

/// The report for `snap` in `format`.
pub fn render(snap: &Snapshot, format: Format) -> Result<String, ReportError> {
    match format {
        Format::Json => to_json(snap),
        Format::Html => Ok(to_html(snap)),
    }
}

/// Write the JSON report to a new timestamped file in `dir`; returns its path.
pub fn write_json(snap: &Snapshot, dir: &Path) -> Result<PathBuf, ReportError> {
    write_in_dir(snap, dir, Format::Json)
}

/// Write the report in `format` to a new timestamped file in `dir`; returns its path.
pub fn write_in_dir(snap: &Snapshot, dir: &Path, format: Format) -> Result<PathBuf, ReportError> {
    let text = render(snap, format)?;
    let stamp = file_stamp(snap.taken_at_ms / 1000);
    let owned = OwnedDir::ensure(dir)?;
    // A second export in the same second gets a numbered name.
    for attempt in 0..100 {
        let name = stamped_name(&stamp, attempt, format);
        match create_new(&owned, &name, &text) {
            Ok(()) => return Ok(absolute(dir.join(name))),
            Err(err) if err.already_exists() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ReportError::TooMany {
        dir: dir.to_path_buf(),
    })
}

/// The engine's report writer (`e`): both reports of a snapshot, side by side.
pub fn writer() -> crate::engine::ReportWriter {
    std::sync::Arc::new(|snap: &Snapshot, dir: &Path| {
        write_both(snap, dir)
            .map(|(json, html)| vec![json, html])
            .map_err(|err| err.to_string())
    })
}

/// Write the JSON and the HTML report side by side in `dir`, under one stamp (for `e` in the
/// dashboard); returns (json path, html path).
pub fn write_both(snap: &Snapshot, dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    let json = to_json(snap)?;
    let html = to_html(snap);
    let stamp = file_stamp(snap.taken_at_ms / 1000);
    let owned = OwnedDir::ensure(dir)?;
    for attempt in 0..100 {
        let json_name = stamped_name(&stamp, attempt, Format::Json);
        match create_new(&owned, &json_name, &json) {
            Ok(()) => {}
            Err(err) if err.already_exists() => continue,
            Err(err) => return Err(err.into()),
        }
        let html_name = stamped_name(&stamp, attempt, Format::Html);
        let written = create_new(&owned, &html_name, &html);
        if written.is_err() {
            let _ = std::fs::remove_file(dir.join(&json_name));
        }
        match written {
            Ok(()) => return Ok((absolute(dir.join(json_name)), absolute(dir.join(html_name)))),
            // Someone holds the HTML name: give the pair up, keep both under the next stamp.
            Err(err) if err.already_exists() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ReportError::TooMany {
        dir: dir.to_path_buf(),
    })
}

/// Write the report in `format` to exactly `path`, which must not exist yet, in a directory
/// that follows the rule of owned paths (else write it to stdout and redirect).
pub fn write_to_path(snap: &Snapshot, path: &Path, format: Format) -> Result<PathBuf, ReportError> {
    let text = render(snap, format)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| PathError::Unsafe {
            path: path.to_path_buf(),
            why: "names no file".to_string(),
        })?;
    match create_new(&OwnedDir::of(path)?, name, &text) {
        Ok(()) => Ok(absolute(path.to_path_buf())),
        Err(err) if err.already_exists() => Err(ReportError::Exists {
            path: path.to_path_buf(),
        }),
        Err(err) => Err(err.into()),
    }
}

fn stamped_name(stamp: &str, attempt: u32, format: Format) -> String {
    let ext = format.extension();
    if attempt == 0 {
        format!("sutazai-report-{stamp}.{ext}")
    } else {
        format!("sutazai-report-{stamp}-{attempt}.{ext}")
    }
}

/// A new file only (an existing path, a planted symlink included, is refused), 0600 because
/// the report holds command lines and container labels, which may carry secrets; synced.
fn create_new(dir: &OwnedDir, name: &str, text: &str) -> Result<(), PathError> {
    let (mut file, _) = dir.open(name, Access::CreateNew { create_mode: 0o600 })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| PathError::Io {
            path: dir.path().join(name),
            op: "write",
            source,
        })
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// Unix seconds in UTC, written with `format` (strftime).
fn utc(secs: u64, format: &str) -> String {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime(format)
        .to_string()
}

/// ISO 8601 UTC for Unix seconds.
pub fn iso8601(secs: u64) -> String {
    utc(secs, "%Y-%m-%dT%H:%M:%SZ")
}

/// The stamp in report file names, for Unix seconds.
pub fn file_stamp(secs: u64) -> String {
    utc(secs, "%Y%m%d-%H%M%S")
}

#[cfg(test)]
mod tests;
