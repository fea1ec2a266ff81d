//! Reports: the JSON report of a running engine checked against assets/report.schema.json
//! by a real validator (Debian's python3-jsonschema), the HTML report self-contained and
//! escaped, `sutazai-top report` end to end, and the HTML rendered by headless Chromium
//! (Debian's chromium) to a PNG that is looked at: right size, not blank.
//!
//! Needs dockerd, python3-jsonschema and chromium (scripts/test.sh installs them). These
//! tests fail, never skip, when a tool is missing.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Container, RunningEngine, test_config, unique};
use sutazai_top::model::Guard;
use sutazai_top::model::{DockerStatus, Snapshot};
use sutazai_top::model::{Measure, Risk};
use sutazai_top::model::{ProposalStatus, Verdict};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/report.schema.json");
const HOSTILE: &str = "<script>alert(1)</script>";

/// Validate `json` against the schema with Debian's jsonschema; Err(the validator's words).
fn validate(json: &str) -> Result<(), String> {
    const SCRIPT: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(sys.stdin)))
for e in errors[:5]:
    print("/".join(map(str, e.absolute_path)) + ": " + e.message[:300])
sys.exit(1 if errors else 0)
"#;
    // Debian's interpreter and package, not whatever python3 comes first on PATH.
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, SCHEMA])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (apt-get install python3-jsonschema)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "python3-jsonschema is missing: {stderr}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)))
    }
}

/// 131 agents (one with a hostile name), bottleneck and proposals (one applied with its
/// validation judged), two active batches.
fn rich_snapshot() -> Snapshot {
    let mut snap = common::with_active_changes(common::with_proposal(
        common::with_containers(131),
        Risk::Medium,
    ));
    snap.containers.agents[5].name = HOSTILE.into();
    snap.containers.agents[5].cpu_pct = 99.0;
    let mut applied = snap.proposals[0].clone();
    applied.id = 5;
    applied.fix.summary = format!("lower CPU weight of {HOSTILE}");
    applied.status = ProposalStatus::Applied { batch: 3 };
    applied.validation.before = vec![30.0, 32.0, 28.0];
    applied.validation.after = vec![12.0, 11.0];
    applied.validation.applied_at_ms = Some(snap.taken_at_ms - 60_000);
    applied.validation.guards = vec![Guard {
        figure: "host PSI memory some".into(),
        measure: Measure::HostPsiMemorySome,
        before: vec![1.0, 1.5],
        after: vec![1.2],
    }];
    applied.validation.verdict = Some(Verdict::Helped {
        before: 30.0,
        after: 11.5,
        improvement_pct: 61.7,
    });
    snap.proposals.push(applied);
    snap
}

#[test]
fn json_report_of_a_running_engine_matches_the_schema() {
    let name = unique("report-agent");
    let _agent = Container::run(
        &name,
        &[
            "--label",
            "sutazai.agent=true",
            "--label",
            "sutazai.class=batch",
        ],
        &["sleep", "60"],
    );
    let mut engine = RunningEngine::start(test_config(250));
    let snap = engine.wait_for(Duration::from_secs(15), "3 ticks and the agent", |s| {
        s.seq >= 3
            && matches!(s.containers.status, DockerStatus::Connected { .. })
            && s.containers.agents.iter().any(|a| a.name == name)
    });
    let json = sutazai_top::report::to_json(&snap).unwrap();
    validate(&json).unwrap_or_else(|e| panic!("live report does not match the schema:\n{e}"));

    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let agent = report["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name.as_str())
        .expect("the agent is profiled");
    assert_eq!(agent["class"], "batch");
    assert!(report["window"]["points"].as_u64().unwrap() >= 3);
    assert!(
        report["window"]["first_sample_ms"].as_u64() < report["window"]["last_sample_ms"].as_u64()
    );
    // The running engine's cache is reported with its own figures.
    assert_eq!(report["cache"]["status"], "running");
    assert_eq!(
        report["cache"]["stats"]["levels"].as_array().map(Vec::len),
        Some(3),
        "{}",
        report["cache"]
    );
    // The report engine only observes: the pools are not served by it, and it says so.
    assert_eq!(report["pools"]["status"], "not served");
    assert!(report["pools"].get("stats").is_none());
    // The test config leaves the balancer off: said so, no figures.
    assert_eq!(report["balancer"]["status"], "off");
    assert!(report["balancer"].get("stats").is_none());

    // The validator really checks: a report missing a section, or with a wrong type, fails.
    let mut broken = report.clone();
    broken.as_object_mut().unwrap().remove("window");
    assert!(
        validate(&broken.to_string()).is_err(),
        "a report without window passed"
    );
    let mut broken = report;
    broken["agents"][0]["cpu_pct"] = "busy".into();
    let err = validate(&broken.to_string()).expect_err("a string cpu_pct passed");
    assert!(err.contains("cpu_pct"), "{err}");
}

#[test]
fn json_report_with_proposals_and_changes_matches_the_schema() {
    let json = sutazai_top::report::to_json(&rich_snapshot()).unwrap();
    validate(&json).unwrap_or_else(|e| panic!("{e}"));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["agents"].as_array().unwrap().len(), 131);
    let applied = &report["proposals"][1];
    assert_eq!(applied["status"], "applied");
    assert_eq!(applied["outcome"]["baseline_mean"], 30.0);
    assert_eq!(applied["outcome"]["window_mean"], 11.5);
    assert_eq!(applied["outcome"]["verdict"], "helped");
    assert_eq!(applied["outcome"]["guards"][0]["window_mean"], 1.2);
    assert_eq!(report["changes"]["active"].as_array().unwrap().len(), 2);
    assert_eq!(report["bottlenecks"][0]["evidence"][0]["value"], 96.5);
}

#[test]
fn json_report_with_a_running_balancer_matches_the_schema() {
    let snap = common::with_balancer(rich_snapshot());
    let json = sutazai_top::report::to_json(&snap).unwrap();
    validate(&json).unwrap_or_else(|e| panic!("{e}"));
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["balancer"]["status"], "running");
    let pools = report["balancer"]["stats"]["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["backends"][2]["health"], "ejected");
    // The schema really checks the balancer: running without figures, an unknown health,
    // and figures while off all fail.
    let mut broken = report.clone();
    broken["balancer"].as_object_mut().unwrap().remove("stats");
    assert!(
        validate(&broken.to_string()).is_err(),
        "running without stats"
    );
    let mut broken = report.clone();
    broken["balancer"]["stats"]["pools"][0]["backends"][0]["health"] = "fine".into();
    let err = validate(&broken.to_string()).expect_err("health \"fine\" passed");
    assert!(err.contains("health"), "{err}");
    let mut broken = report;
    broken["balancer"]["status"] = "off".into();
    assert!(validate(&broken.to_string()).is_err(), "off with stats");
}

#[test]
fn html_report_is_self_contained_escaped_with_charts_and_tables() {
    let html = sutazai_top::report::to_html(&rich_snapshot());
    for outside in [
        "http://",
        "https://",
        "<script src",
        "<link",
        "@import",
        "url(",
    ] {
        assert!(
            !html.contains(outside),
            "the page reaches outside: {outside}"
        );
    }
    assert!(
        !html.contains(HOSTILE),
        "a container name went in unescaped"
    );
    assert!(
        !html.to_lowercase().contains("<script"),
        "the page has a script"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // Charts: host usage, PSI, top agents, and one before/after per proposal.
    assert!(
        html.matches("<svg class=\"chart\"").count() >= 3 + 2,
        "charts missing"
    );
    for chart in [
        "CPU busy and memory used",
        "Pressure stall",
        "Top agents by CPU",
        "#5 before and after",
    ] {
        assert!(html.contains(chart), "no chart {chart}");
    }
    assert!(
        html.matches("<polyline").count() >= 5,
        "line charts have no lines"
    );
    // Tables: agents (131 rows), bottlenecks, proposals, active changes.
    assert_eq!(html.matches("<tr><td title=").count(), 131);
    for heading in [
        "Agents (131)",
        "Bottlenecks (1)",
        "Proposals and outcomes (2)",
        "Active changes (2)",
    ] {
        assert!(html.contains(heading), "no section {heading}");
    }
    assert!(
        html.contains("helped 62% (30.0 -&gt; 11.5)"),
        "verdict missing"
    );
    assert!(html.contains("<h2>Memory pools</h2>"));
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>"));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
}

#[test]
fn report_command_writes_html_and_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile.html");
    let out = bin()
        .args([
            "--no-docker",
            "--interval",
            "500",
            "report",
            "--format",
            "html",
            "-o",
        ])
        .arg(&file)
        .args(["--duration", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        file.display().to_string(),
        "prints the path"
    );
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // 3 s at 500 ms: at least 6 points in the window.
    let points: usize = html
        .split(" points every")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|n| n.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .expect("the window card says how many points");
    assert!(points >= 6, "only {points} points in a 3 s window");

    // Onto the file just written: refused at once, file untouched.
    let out = bin()
        .args(["--no-docker", "report", "--format", "json", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("profile.html"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), html);

    // Bad flags are usage errors.
    for bad in [
        &["--format", "pdf"][..],
        &["--duration", "0"],
        &["--duration", "soon"],
    ] {
        let out = bin().arg("report").args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
}

#[test]
fn report_command_writes_json_to_the_report_dir_or_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["--no-docker", "--interval", "250", "--report-dir"])
        .arg(dir.path())
        .arg("report")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.starts_with(dir.path()) && path.extension().unwrap() == "json",
        "{path:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(report["snapshot"]["seq"].as_u64().unwrap() >= 3);

    let out = bin()
        .args(["--no-docker", "--interval", "250", "report", "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["tool"], "sutazai-top");
}

/// Width, height and the summed IDAT length of a PNG.
fn png_facts(path: &Path) -> (u32, u32, usize) {
    let data = std::fs::read(path).unwrap();
    assert_eq!(
        &data[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let be32 = |at: usize| u32::from_be_bytes(data[at..at + 4].try_into().unwrap());
    assert_eq!(&data[12..16], b"IHDR");
    let (width, height) = (be32(16), be32(20));
    let mut idat = 0;
    let mut at = 8;
    while at + 8 <= data.len() {
        let len = be32(at) as usize;
        if &data[at + 4..at + 8] == b"IDAT" {
            idat += len;
        }
        at += 12 + len;
    }
    (width, height, idat)
}

/// Render `html_file` with headless Chromium into `png`.
fn screenshot(html_file: &Path, png: &Path, profile: &Path) {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            // This machine's network is closed: without these Chromium keeps trying to
            // reach Google's hosts in the background.
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1280,2000")
        .arg(format!("file://{}", html_file.display()))
        .output()
        .expect("chromium runs (apt-get install chromium)");
    assert!(
        out.status.success() && png.exists(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    // Kept after the test (page and render), for a person to look at.
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let report = kept.join("report-render.html");
    let _ = std::fs::remove_file(&report);
    std::fs::write(&report, sutazai_top::report::to_html(&rich_snapshot())).unwrap();
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();

    let png = kept.join("report-render.png");
    let _ = std::fs::remove_file(&png);
    let blank_png = dir.path().join("blank.png");
    screenshot(&report, &png, &dir.path().join("profile"));
    screenshot(&blank, &blank_png, &dir.path().join("profile"));

    let (width, height, idat) = png_facts(&png);
    let (_, _, blank_idat) = png_facts(&blank_png);
    assert_eq!((width, height), (1280, 2000), "{}", png.display());
    assert!(
        idat > blank_idat * 10,
        "the render looks blank: {idat} bytes of image data, a blank page {blank_idat}"
    );
}
