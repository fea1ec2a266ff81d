use std::path::Path;

use super::*;

#[test]
fn civil_dates() {
    assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(iso8601(1_795_753_435), "2026-11-27T04:23:55Z");
    assert_eq!(file_stamp(1_795_753_435), "20261127-042355");
}

fn snap_at(seq: u64) -> Snapshot {
    Snapshot {
        seq,
        taken_at_ms: 1_795_753_435_000,
        interval_ms: 1000,
        ..Snapshot::default()
    }
}

#[test]
fn reports_are_new_files_that_parse() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snap_at(7);
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
    // A snapshot without cache figures: the cache is off, never given invented numbers.
    assert_eq!(value["cache"]["status"], "off");
    assert!(value["cache"].get("stats").is_none());
    assert_eq!(value["pools"]["status"], "not built");
}

#[test]
fn unwritable_dir_is_an_error_naming_it() {
    let err = write_json(&Snapshot::default(), Path::new("/nonexistent/dir")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dir"), "{err}");
}

#[test]
fn both_formats_share_one_stamp_and_skip_taken_names() {
    let dir = tempfile::tempdir().unwrap();
    // Someone already holds the first HTML name: the pair moves on together.
    std::fs::write(dir.path().join("sutazai-report-20261127-042355.html"), "x").unwrap();
    let (json, html) = write_both(&snap_at(3), dir.path()).unwrap();
    assert!(
        json.to_string_lossy()
            .ends_with("sutazai-report-20261127-042355-1.json"),
        "{json:?}"
    );
    assert!(
        html.to_string_lossy()
            .ends_with("sutazai-report-20261127-042355-1.html"),
        "{html:?}"
    );
    assert!(
        !dir.path()
            .join("sutazai-report-20261127-042355.json")
            .exists()
    );
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
}

#[test]
fn an_existing_path_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.html");
    std::fs::write(&path, "keep me").unwrap();
    let err = write_to_path(&snap_at(1), &path, Format::Html).unwrap_err();
    assert!(matches!(err, ReportError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("mine.html"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}

#[test]
fn window_is_derived_from_points_and_interval() {
    let mut snap = snap_at(5);
    snap.history = crate::snapshot::HostHistory::with_capacity(10);
    for v in [10.0, 20.0, 30.0, 40.0] {
        snap.history.cpu_busy_pct.push(v);
    }
    let report = Report::new(&snap);
    assert_eq!(report.window.points, 4);
    assert_eq!(report.window.span_secs, 3.0);
    assert_eq!(report.window.first_sample_ms, Some(1_795_753_432_000));
    assert_eq!(
        report.window.last_sample_at.as_deref(),
        Some("2026-11-27T04:23:55Z")
    );
    let nothing = Snapshot::default();
    assert_eq!(Report::new(&nothing).window.first_sample_ms, None);
}

#[test]
fn html_escapes_everything_and_draws_empty_charts() {
    let mut snap = snap_at(1);
    snap.host.hostname = "<b>&'\"".into();
    let html = to_html(&snap);
    assert!(html.contains("&lt;b&gt;&amp;&#39;&quot;"));
    assert!(!html.contains("<b>&'"));
    assert!(html.contains("no samples yet"));
    assert!(html.contains("not built"));
}

#[test]
fn nice_ceilings() {
    assert_eq!(svg::nice_ceiling(0.0), 1.0);
    assert_eq!(svg::nice_ceiling(f64::NAN), 1.0);
    assert_eq!(svg::nice_ceiling(3.2), 5.0);
    assert_eq!(svg::nice_ceiling(17.0), 20.0);
    assert_eq!(svg::nice_ceiling(100.0), 100.0);
    assert_eq!(svg::nice_ceiling(101.0), 200.0);
}
