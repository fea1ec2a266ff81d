//! The real binary from the command line: config errors, flags, one-shot snapshot.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn unknown_config_key_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "mode = \"balanced\"\n[docker]\nenabled = true\nagent_lable = \"x\"\n",
    )
    .unwrap();
    let out = run(bin().arg("--config").arg(&path).arg("snapshot"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("agent_lable") && err.contains("line 4"),
        "{err}"
    );
    assert!(err.contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn bad_config_value_exits_2_naming_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "interval_ms = 10\n").unwrap();
    let out = run(bin().arg("--config").arg(&path).arg("snapshot"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("interval_ms = 10"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_config_file_exits_2_naming_it() {
    let out = run(bin().args(["--config", "/nonexistent/sutazai.toml", "snapshot"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/sutazai.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn interval_flag_below_floor_exits_2() {
    let out = run(bin().args(["--interval", "100", "snapshot"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--interval 100"), "{}", stderr(&out));
}

#[test]
fn bad_mode_flag_exits_2() {
    let out = run(bin().args(["--mode", "turbo", "snapshot"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("turbo"), "{}", stderr(&out));
}

#[test]
fn snapshot_prints_the_live_host_as_json() {
    let out = run(bin().args([
        "--no-docker",
        "--interval",
        "250",
        "--mode",
        "aggressive",
        "snapshot",
        "--ticks",
        "2",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let snap = &report["snapshot"];
    assert!(snap["seq"].as_u64().unwrap() >= 2);
    assert_eq!(snap["mode"], "aggressive");
    assert_eq!(snap["containers"]["status"]["state"], "disabled");
    let cpus = snap["topology"]["cpus"].as_array().unwrap().len() as i64;
    // SAFETY: sysconf only reads a system constant.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    assert_eq!(cpus, configured);
    assert_eq!(
        snap["cpu"]["per_cpu"].as_array().unwrap().len() as i64,
        configured
    );
    assert!(snap["memory"]["total_kb"].as_u64().unwrap() > 0);
    assert!(!snap["processes"].as_array().unwrap().is_empty());
}

#[test]
fn dashboard_without_a_terminal_says_so() {
    let out = run(bin().arg("--no-docker").stdin(std::process::Stdio::null()));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs a terminal"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn snapshot_over_a_fixture_host_shows_its_64_cpus_and_2_nodes() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/numa64");
    let out = run(bin()
        .args(["--no-docker", "--interval", "250"])
        .args(["--proc-root", &format!("{root}/proc")])
        .args(["--sys-root", &format!("{root}/sys")])
        .args(["snapshot", "--ticks", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let topology = &report["snapshot"]["topology"];
    assert_eq!(topology["cpus"].as_array().unwrap().len(), 64);
    assert_eq!(topology["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(topology["packages"], 2);
    assert_eq!(topology["physical_cores"], 32);
}

#[test]
fn not_root_runs_read_only_and_says_so() {
    // Copy the binary where an unprivileged user can run it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sutazai-top");
    std::fs::copy(env!("CARGO_BIN_EXE_sutazai-top"), &copy).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["--no-docker", "--interval", "250", "--report-dir", "/tmp"])
        .args(["snapshot", "--ticks", "1"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["snapshot"]["host"]["is_root"], false);
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
}
