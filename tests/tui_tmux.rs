//! The real binary in a real terminal (tmux), driven by keys as a person would.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;
mod tmux_support;

use std::process::Command;
use std::time::{Duration, Instant};

use tmux_support::{Tmux, wait_for_file};

#[test]
fn dashboard_keys_mode_help_export_and_quit_with_terminal_restored() {
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit");
    let stty_before = dir.path().join("stty-before");
    let stty_after = dir.path().join("stty-after");
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let command = format!(
        "stty -g > {before}; {bin} --no-docker --interval 500 --report-dir {reports}; \
         echo $? > {exit}; stty -g > {after}; sleep 30",
        bin = env!("CARGO_BIN_EXE_sutazai-top"),
        reports = reports.display(),
        exit = exit_file.display(),
        before = stty_before.display(),
        after = stty_after.display(),
    );
    let tmux = Tmux::start("keys", &command);

    let screen = tmux.wait_for("CONSERVATIVE");
    for pane in ["Cores", "Memory", "Containers"] {
        assert!(screen.contains(pane), "no {pane} pane:\n{screen}");
    }

    tmux.keys(&["2"]);
    tmux.wait_for("BALANCED");

    tmux.keys(&["?"]);
    let help = tmux.wait_for("Help");
    assert!(help.contains("quit") || help.contains("Quit"), "{help}");
    tmux.keys(&["Escape"]);
    // A key sent right behind Escape would reach the terminal as Alt+key: wait until the
    // help is closed.
    let deadline = Instant::now() + Duration::from_secs(15);
    while tmux.screen().contains("Help · keys") {
        assert!(Instant::now() < deadline, "Escape never closed the help");
        std::thread::sleep(Duration::from_millis(100));
    }

    tmux.keys(&["e"]);
    let screen = tmux.wait_for("report written to");
    // JSON and HTML side by side, under one stamp.
    let mut written: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "{screen}");
    assert_eq!(written[0].with_extension(""), written[1].with_extension(""));
    assert_eq!(written[1].extension().unwrap(), "json");
    let text = std::fs::read_to_string(&written[1]).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(report["snapshot"]["mode"], "balanced");
    assert!(report["snapshot"]["history"]["cpu_busy_pct"]["points"].is_array());
    let html = std::fs::read_to_string(&written[0]).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));

    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&exit_file).trim(), "0");
    // The terminal settings after exit are exactly those before start (raw mode undone).
    assert_eq!(wait_for_file(&stty_after), wait_for_file(&stty_before));
}

#[test]
fn ctrl_c_quits_cleanly_too() {
    let dir = tempfile::tempdir().unwrap();
    let exit_file = dir.path().join("exit");
    let command = format!(
        "{bin} --no-docker; echo $? > {exit}; sleep 30",
        bin = env!("CARGO_BIN_EXE_sutazai-top"),
        exit = exit_file.display(),
    );
    let tmux = Tmux::start("ctrlc", &command);
    tmux.wait_for("Cores");
    tmux.keys(&["C-c"]);
    assert_eq!(wait_for_file(&exit_file).trim(), "0");
}

#[test]
fn sigterm_and_sighup_quit_with_the_terminal_restored() {
    for (tag, signal) in [("term", "-TERM"), ("hup", "-HUP")] {
        let dir = tempfile::tempdir().unwrap();
        let exit_file = dir.path().join("exit");
        let stty_before = dir.path().join("stty-before");
        let stty_after = dir.path().join("stty-after");
        // The report dir makes this instance's command line unique, so pgrep finds only it.
        let command = format!(
            "stty -g > {before}; {bin} --no-docker --report-dir {dir}; echo $? > {exit}; \
             stty -g > {after}; sleep 30",
            bin = env!("CARGO_BIN_EXE_sutazai-top"),
            dir = dir.path().display(),
            exit = exit_file.display(),
            before = stty_before.display(),
            after = stty_after.display(),
        );
        let tmux = Tmux::start(tag, &command);
        tmux.wait_for("Cores");
        // Anchored at the binary so the shell running the command line does not match.
        let pattern = format!(
            "^{} --no-docker --report-dir {}",
            env!("CARGO_BIN_EXE_sutazai-top"),
            dir.path().display()
        );
        let found = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&found.stdout).trim().to_string();
        assert!(
            !pid.is_empty() && !pid.contains('\n'),
            "pgrep found {pid:?}"
        );
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(wait_for_file(&exit_file).trim(), "0", "{signal}");
        assert_eq!(
            wait_for_file(&stty_after),
            wait_for_file(&stty_before),
            "{signal}"
        );
    }
}

/// Each thread's nice of process `pid`.
fn thread_nices(pid: u32) -> Vec<i64> {
    host_support::thread_stat_field(pid, 19)
        .into_values()
        .collect()
}

#[test]
fn r_in_proposals_rolls_back_a_change_made_from_the_command_line() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new("python3")
        .args(["-c", "import threading,time\n[threading.Thread(target=time.sleep, args=(60,)).start() for _ in range(2)]\ntime.sleep(60)"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while thread_nices(pid).len() < 3 {
        assert!(Instant::now() < deadline, "python threads never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let original = thread_nices(pid);
    let set = Command::new(env!("CARGO_BIN_EXE_sutazai-top"))
        .arg("--state-dir")
        .arg(state.path())
        .args(["set", "--pid", &pid.to_string(), "nice", "6"])
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(thread_nices(pid).iter().all(|&n| n == 6));

    let command = format!(
        "{bin} --no-docker --interval 500 --state-dir {state}; sleep 30",
        bin = env!("CARGO_BIN_EXE_sutazai-top"),
        state = state.path().display(),
    );
    let tmux = Tmux::start("rollback", &command);
    tmux.wait_for("CONSERVATIVE");
    for _ in 0..8 {
        tmux.keys(&["Tab"]);
    }
    let screen = tmux.wait_for("set Nice = 6");
    assert!(screen.contains("#1"), "{screen}");
    tmux.keys(&["r"]);
    tmux.wait_for("batch 1 rolled back: 3 restored");
    assert_eq!(thread_nices(pid), original);
    tmux.wait_for("no change of ours is active");
    tmux.keys(&["q"]);
    let _ = child.kill();
    let _ = child.wait();
}
