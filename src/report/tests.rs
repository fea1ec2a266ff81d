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
    // Nor pool figures: no engine serves them here, and the report says why.
    assert_eq!(value["pools"]["status"], "not served");
    assert!(value["pools"].get("stats").is_none());
    // Nor balancer figures: it is off, and says how it would be turned on.
    assert_eq!(value["balancer"]["status"], "off");
    assert!(value["balancer"].get("stats").is_none());
    assert!(
        value["balancer"]["note"]
            .as_str()
            .unwrap()
            .contains("[balancer] enabled = false")
    );
    assert_eq!(value["coordinator"]["status"], "off");
    assert!(value["coordinator"].get("plan").is_none());
}

/// The coordinator's plan in both reports: every agent with its state and reason (escaped).
#[test]
fn the_plan_is_in_both_reports() {
    use crate::model::{Allocation, AllocationState, CoordinatorSnapshot};
    let mut snap = snap_at(2);
    let allocation = |name: &str, state: AllocationState, cpus: Vec<u32>| Allocation {
        id: format!("{name}-id"),
        name: name.to_string(),
        priority: 9,
        need: None,
        state,
        cpus,
        mems: vec![],
        cpu_shares: Some(1843),
        memory_limit_bytes: None,
        in_place: false,
        waiting: false,
        rebalanced: 0,
    };
    snap.coordinator = Some(CoordinatorSnapshot {
        enforce: true,
        reserved: vec![0],
        shared: vec![2, 3],
        agents: vec![
            allocation("llm", AllocationState::Exclusive, vec![1]),
            allocation(
                "typo",
                AllocationState::Misdeclared {
                    why: "sutazai.memory = \"<4x>\": not a size".to_string(),
                },
                vec![2, 3],
            ),
        ],
        plan_us: 42,
        declared: vec![],
        parent: None,
    });
    let json: serde_json::Value = serde_json::from_str(&to_json(&snap).unwrap()).unwrap();
    assert_eq!(json["coordinator"]["status"], "running");
    assert_eq!(json["coordinator"]["plan"]["agents"][0]["cpus"][0], 1);
    let html = to_html(&snap);
    assert!(
        html.contains("reserved CPUs 0 · shared pool 2-3 · enforcing · planned in 42 µs"),
        "{html}"
    );
    assert!(html.contains("<td>llm</td><td>9</td><td>-</td><td>exclusive</td><td>1</td>"));
    assert!(
        html.contains("&lt;4x&gt;") && !html.contains("<4x>"),
        "reasons are escaped"
    );
}

fn balancer_snapshot() -> sutazai_balancer::BalancerSnapshot {
    use sutazai_balancer::{
        BackendSnapshot, BackendSource, BalancerSnapshot, CircuitState, Health, PoolSnapshot,
    };
    let up = BackendSnapshot {
        id: "127.0.0.1:18081".into(),
        host: "127.0.0.1".into(),
        port: 18081,
        weight: 1,
        max_connections: 100,
        health: Health::Up,
        requests_total: 900,
        requests_per_sec: 12.5,
        latency_p50_ms: Some(1.25),
        latency_p99_ms: Some(9.5),
        ewma_ms: 1.5,
        ..BackendSnapshot::default()
    };
    let ejected = BackendSnapshot {
        id: "<i>10.0.0.7:8000".into(),
        source: BackendSource::Docker {
            container: "agent-007".into(),
        },
        health: Health::Ejected,
        circuit: CircuitState::HalfOpen,
        errors_total: 57,
        ejections: 2,
        ejected_for_secs: Some(45),
        ..up.clone()
    };
    BalancerSnapshot {
        listen: "127.0.0.1:8080".into(),
        requests_total: 1_000,
        requests_per_sec: 12.5,
        rejected_total: 3,
        pools: vec![PoolSnapshot {
            name: "default".into(),
            algorithm: "round-robin".into(),
            rule: "default".into(),
            backends: vec![up, ejected],
            panic_choices_total: 0,
        }],
        ..BalancerSnapshot::default()
    }
}

#[test]
fn a_running_balancer_is_reported_with_its_own_figures() {
    let mut snap = snap_at(2);
    snap.balancer = Some(balancer_snapshot());
    let value: serde_json::Value = serde_json::from_str(&to_json(&snap).unwrap()).unwrap();
    let section = &value["balancer"];
    assert_eq!(section["status"], "running");
    assert_eq!(section["stats"]["listen"], "127.0.0.1:8080");
    let backends = &section["stats"]["pools"][0]["backends"];
    assert_eq!(backends[0]["latency_p99_ms"], 9.5);
    assert_eq!(backends[1]["health"], "ejected");
    assert_eq!(backends[1]["circuit"], "half_open");
    assert_eq!(backends[1]["source"]["kind"], "docker");
    assert_eq!(backends[1]["ejected_for_secs"], 45);

    let html = to_html(&snap);
    assert!(html.contains("<h2>Load balancer</h2>"), "{html}");
    assert!(html.contains("listening on 127.0.0.1:8080 · 12.5 requests/s"));
    assert!(html.contains("<h3>Pool default · round-robin · rule: default</h3>"));
    assert!(html.contains("<td>127.0.0.1:18081</td><td>config</td><td>up</td><td>closed</td>"));
    assert!(
        html.contains("<td>1.25</td><td>9.50</td>"),
        "latencies in ms"
    );
    assert!(html.contains("<td>2 (out for 45 s more)</td>"));
    assert!(html.contains("&lt;i&gt;10.0.0.7:8000"), "ids are escaped");
    assert!(!html.contains("<i>10.0.0.7"));
}

#[test]
fn unwritable_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("reports");
    let err = write_json(&Snapshot::default(), &under_a_file).unwrap_err();
    assert!(err.to_string().contains("a-file/reports"), "{err}");
}

/// Reports follow the rule of every owned path (issue 15): a dir others may write, or a
/// symlink to one, is refused naming why, and nothing is written there; a missing one is
/// created 0700, and the files in it are 0600.
#[test]
fn a_report_dir_others_could_swap_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = write_both(&snap_at(1), &open).unwrap_err();
    assert!(err.to_string().contains("world-writable"), "{err}");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&open, &link).unwrap();
    let err = write_json(&snap_at(1), &link).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    let err = write_to_path(&snap_at(1), &open.join("r.html"), Format::Html).unwrap_err();
    assert!(err.to_string().contains("world-writable"), "{err}");
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);

    let fresh = dir.path().join("new/reports");
    let (json, html) = write_both(&snap_at(1), &fresh).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!((mode(&json), mode(&html)), (0o600, 0o600));
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
    snap.history = crate::model::HostHistory::with_capacity(10);
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
    assert!(html.contains("not served: this face has no engine serving the pools"));
    assert!(html.contains("off: the load balancer is disabled"));
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
