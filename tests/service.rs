//! The service faces from the command line: `serve` as a real child process in temp dirs,
//! `status`, `stop`, the one-engine lock, and the dashboard attaching to the service in a
//! real terminal (tmux).

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;
mod support;
mod tmux_support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tmux_support::{Tmux, wait_for_file};

const BIN: &str = env!("CARGO_BIN_EXE_sutazai-top");

/// A config of the test's own: temp state, runtime dir and socket; no Docker (speed).
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        Setup::with("[docker]\nenabled = false\n")
    }

    /// `extra` is TOML appended (sections other than those written here).
    fn with(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            "interval_ms = 300\nreport_dir = \"{d}\"\n{extra}\
             [optimizer]\nstate_dir = \"{d}/state\"\n\
             [api]\nsocket = \"{d}/run/api.sock\"\ntoken_file = \"{d}/state/api.token\"\n\
             [service]\nruntime_dir = \"{d}/run\"\nlog_file = \"{d}/serve.log\"\n",
            d = dir.path().display()
        );
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn serve(&self, args: &[&str]) -> Service {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Service { child }
    }

    /// `status` until it succeeds (the service is up).
    fn wait_until_serving(&self, service: &mut Service) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["status"]);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("serve exited early ({status}): {}", service.stderr());
            }
            assert!(Instant::now() < deadline, "the service never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("run/sutazai-top.pid")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/api.sock")
    }
}

/// The service child; killed if the test ends before it does.
struct Service {
    child: Child,
}

impl Service {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the service did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True when nobody holds the pid file's lock.
fn lock_is_free(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    rc == 0
}

#[test]
fn serve_status_second_refused_dashboard_attaches_and_stop() {
    let setup = Setup::new();
    // Nothing runs yet: status says so and fails.
    let out = setup.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no sutazai-top engine is running"),
        "{}",
        text(&out)
    );

    let mut service = setup.serve(&["--mode", "aggressive"]);
    let status = setup.wait_until_serving(&mut service);
    assert!(status.contains("mode: aggressive"), "{status}");
    assert!(
        status.contains(&format!("pid {}", service.pid())),
        "{status}"
    );
    assert!(status.contains("agents: 0"), "{status}");
    assert_eq!(
        std::fs::read_to_string(setup.pid_file()).unwrap().trim(),
        service.pid().to_string()
    );
    assert!(!lock_is_free(&setup.pid_file()));

    // A second engine is refused, naming the first.
    let out = setup.run(&["serve"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&format!("pid {}", service.pid())),
        "{}",
        text(&out)
    );

    // `rollback` works beside the running engine (it waits for the journal lock).
    let out = setup.run(&["rollback", "--all"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to roll back"),
        "{}",
        text(&out)
    );

    // The dashboard attaches: it shows the service's mode, and its keys steer the service.
    let exit_file = setup.dir.path().join("dashboard-exit");
    let command = format!(
        "{BIN} --config {config}; echo $? > {exit}; sleep 30",
        config = setup.config.display(),
        exit = exit_file.display(),
    );
    let tmux = Tmux::start("attach", &command);
    tmux.wait_for("AGGRESSIVE");
    tmux.wait_for("attached to the running service");
    tmux.keys(&["2"]);
    tmux.wait_for("BALANCED");
    let status = String::from_utf8_lossy(&setup.run(&["status"]).stdout).into_owned();
    assert!(status.contains("mode: balanced"), "{status}");
    assert!(
        status.contains(
            "coordinator: 0 exclusive, 0 shared, 0 pending, 0 misdeclared; reserved CPUs none, \
             shared pool"
        ) && status.contains("proposing (approve with a)"),
        "{status}"
    );
    // e in the attached dashboard writes the service's reports here, JSON and HTML.
    tmux.keys(&["e"]);
    tmux.wait_for("report written to");
    let reports: Vec<_> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("sutazai-report-"))
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let json = reports
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json.unwrap()).unwrap()).unwrap();
    assert!(report["host"].is_object(), "{report}");
    // q detaches; the service keeps running.
    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&exit_file).trim(), "0");
    assert!(setup.run(&["status"]).status.success());
    assert!(service.child.try_wait().unwrap().is_none());

    // stop ends it: exit 0, lock released, socket gone, status fails again.
    let out = setup.run(&["stop", "--keep"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("(pid {}) stopped", service.pid())),
        "{}",
        text(&out)
    );
    // "stopped" only once the process is gone: no gap in which a new `serve` could start
    // beside an engine still alive (issue 15).
    let status = service
        .child
        .try_wait()
        .unwrap()
        .unwrap_or_else(|| panic!("stop returned while pid {} still ran", service.pid()));
    assert!(status.success(), "{status}: {}", service.stderr());
    assert!(lock_is_free(&setup.pid_file()));
    assert!(!setup.socket().exists());
    assert_eq!(setup.run(&["status"]).status.code(), Some(1));
    let out = setup.run(&["stop"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let log = std::fs::read_to_string(setup.dir.path().join("serve.log")).unwrap();
    assert!(
        log.contains("sutazai-top serving") && log.contains("stop requested"),
        "{log}"
    );
}

/// Every path the service owns follows one rule (issue 15): a token others can read, a token
/// behind a symlink, a runtime dir that is a symlink or open to all, a log file behind a
/// symlink: each is refused naming the path and why, and the service does not start.
#[test]
fn serve_refuses_paths_others_could_read_or_swap() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let token = "0123456789abcdef0123456789abcdef";
    let on_tcp = |s: &Setup| {
        let text = std::fs::read_to_string(&s.config).unwrap();
        let text = text.replace("[api]\n", "[api]\nlisten = \"127.0.0.1:0\"\n");
        std::fs::write(&s.config, text).unwrap();
    };
    type Arrange = Box<dyn Fn(&Setup, &Path)>;
    let cases: Vec<(&str, Arrange, &str)> = vec![
        (
            "a token others can read",
            Box::new(move |s, d| {
                on_tcp(s);
                let file = d.join("state/api.token");
                std::fs::write(&file, token).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            }),
            "readable by others",
        ),
        (
            "a token behind a symlink",
            Box::new(move |s, d| {
                on_tcp(s);
                std::fs::write(d.join("planted.token"), token).unwrap();
                std::fs::set_permissions(
                    d.join("planted.token"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
                symlink(d.join("planted.token"), d.join("state/api.token")).unwrap();
            }),
            "is a symlink",
        ),
        (
            "a runtime dir that is a symlink",
            Box::new(|_, d| {
                std::fs::create_dir(d.join("elsewhere")).unwrap();
                symlink(d.join("elsewhere"), d.join("run")).unwrap();
            }),
            "is a symlink",
        ),
        (
            "a runtime dir open to all",
            Box::new(|_, d| {
                std::fs::create_dir(d.join("run")).unwrap();
                std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o777))
                    .unwrap();
            }),
            "world-writable",
        ),
        (
            "a log file behind a symlink",
            Box::new(|_, d| {
                std::fs::write(d.join("victim"), "").unwrap();
                symlink(d.join("victim"), d.join("serve.log")).unwrap();
            }),
            "is a symlink",
        ),
    ];
    for (what, arrange, says) in cases {
        let setup = Setup::new();
        arrange(&setup, setup.dir.path());
        let mut service = setup.serve(&[]);
        let status = service.wait_exit(Duration::from_secs(20));
        let stderr = service.stderr();
        assert!(!status.success(), "{what}: served anyway");
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
}

#[test]
fn sigterm_stops_cleanly_and_a_killed_service_blocks_nothing() {
    let setup = Setup::new();
    let mut first = setup.serve(&[]);
    setup.wait_until_serving(&mut first);
    // kill -9: no cleanup at all; the socket file stays behind, the kernel drops the lock.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(setup.socket().exists());
    assert!(lock_is_free(&setup.pid_file()));

    let mut second = setup.serve(&[]);
    let status = setup.wait_until_serving(&mut second);
    assert!(
        status.contains(&format!("pid {}", second.pid())),
        "{status}"
    );
    assert!(status.contains("mode: conservative"), "{status}");

    // A dashboard attached to it...
    let exit_file = setup.dir.path().join("dashboard-exit");
    let err_file = setup.dir.path().join("dashboard-stderr");
    let command = format!(
        "{BIN} --config {config} 2> {err}; echo $? > {exit}; sleep 30",
        config = setup.config.display(),
        err = err_file.display(),
        exit = exit_file.display(),
    );
    let tmux = Tmux::start("gone", &command);
    tmux.wait_for("attached to the running service");

    // SAFETY: a signal to the child we started.
    assert_eq!(unsafe { libc::kill(second.pid() as i32, libc::SIGTERM) }, 0);
    let status = second.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}: {}", second.stderr());
    assert!(lock_is_free(&setup.pid_file()));
    assert!(!setup.socket().exists());

    // ...detaches on its own when the service is gone, and says so.
    assert_eq!(wait_for_file(&exit_file).trim(), "0");
    let said = std::fs::read_to_string(&err_file).unwrap();
    assert!(said.contains("stopped answering"), "{said}");
}

/// The unit file is valid for systemd (checked by systemd-analyze against this binary) and
/// keeps what the engine needs: its directories, the stop timeout for a rollback, writable
/// /proc and /sys.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/sutazai-top.service"
    ))
    .unwrap();
    for line in [
        "Type=simple",
        "ExecStart=/usr/local/bin/sutazai-top serve",
        "Restart=on-failure",
        "RuntimeDirectory=sutazai-top",
        "StateDirectory=sutazai-top",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}");
    }
    for forbidden in [
        "ProtectKernelTunables=yes",
        "ProtectControlGroups=yes",
        "ProtectProc=",
    ] {
        assert!(
            !unit.lines().any(|l| l.starts_with(forbidden)),
            "{forbidden} would stop the engine from doing its job"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sutazai-top.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/sutazai-top", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}

/// A busy batch-class agent (the engine proposes lowering its weight and its policy).
fn batch_hog(name: &str) -> support::Container {
    support::Container::run(
        &support::unique(name),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
        ],
        &["sh", "-c", "while :; do :; done"],
    )
}

fn shares(c: &support::Container) -> String {
    let raw = support::docker_ok(&["inspect", "-f", "{{.HostConfig.CpuShares}}", &c.id]);
    if raw == "0" { "1024".to_string() } else { raw }
}

fn policies(c: &support::Container) -> Vec<i64> {
    let pid: u32 = support::docker_ok(&["inspect", "-f", "{{.State.Pid}}", &c.id])
        .parse()
        .unwrap();
    host_support::thread_stat_field(pid, 41)
        .into_values()
        .collect()
}

/// Approve the newest open proposal of `strategy` through the service's API; its batch.
fn approve(rt: &tokio::runtime::Runtime, client: &sutazai_top::api::Client, strategy: &str) -> u64 {
    use sutazai_top::model::{Proposal, ProposalStatus};
    let deadline = Instant::now() + Duration::from_secs(40);
    let proposal =
        loop {
            let all: Vec<Proposal> = rt
                .block_on(client.get("/api/proposals"))
                .unwrap()
                .json()
                .unwrap();
            if let Some(p) = all.iter().rev().find(|p| {
                p.fix.strategy == strategy && p.status.is_open() && p.fix.intents.len() >= 2
            }) {
                break p.clone();
            }
            assert!(Instant::now() < deadline, "no {strategy} proposal: {all:?}");
            std::thread::sleep(Duration::from_millis(300));
        };
    let applied: Proposal = rt
        .block_on(client.post(
            &format!("/api/proposals/{}/approve", proposal.id),
            &serde_json::json!({}),
        ))
        .unwrap()
        .json()
        .unwrap();
    match applied.status {
        ProposalStatus::Applied { batch } => batch,
        other => panic!("{strategy} not applied: {other:?}"),
    }
}

/// Changes the service made are undone by `sutazai-top rollback ID` while it runs, and by
/// `stop --rollback` when it stops.
#[test]
fn rollback_beside_the_service_and_stop_with_rollback_restore_the_host() {
    let a = batch_hog("svc-hog-a");
    let b = batch_hog("svc-hog-b");
    let before_shares = (shares(&a), shares(&b));
    let before_policies = (policies(&a), policies(&b));
    let setup = Setup::with("[detect]\nhold_ticks = 2\n");
    let mut service = setup.serve(&[]);
    setup.wait_until_serving(&mut service);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = sutazai_top::api::Client::unix(setup.socket());

    let batch = approve(&rt, &client, "batch-cpu-weight");
    assert_eq!((shares(&a), shares(&b)), ("256".into(), "256".into()));
    // The command-line rollback waits for the journal lock the engine shares.
    let out = setup.run(&["rollback", &batch.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!((shares(&a), shares(&b)), before_shares);

    approve(&rt, &client, "batch-scheduler-policy");
    assert!(policies(&a).iter().all(|&p| p == 3), "SCHED_BATCH");
    let out = setup.run(&["stop", "--rollback"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rolled back"),
        "{}",
        text(&out)
    );
    assert!(service.wait_exit(Duration::from_secs(10)).success());
    assert_eq!((policies(&a), policies(&b)), before_policies);
    assert_eq!((shares(&a), shares(&b)), before_shares);
    let out = setup.run(&["journal"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no open batch"),
        "nothing left open: {}",
        text(&out)
    );
}

/// A dashboard running its own engine holds a share of the lock: a service is refused
/// beside it (naming it), and starts once the dashboard has quit.
#[test]
fn a_service_is_refused_beside_a_dashboard_with_its_own_engine() {
    let setup = Setup::new();
    let exit_file = setup.dir.path().join("dashboard-exit");
    let command = format!(
        "{BIN} --config {config}; echo $? > {exit}; sleep 30",
        config = setup.config.display(),
        exit = exit_file.display(),
    );
    let tmux = Tmux::start("own", &command);
    tmux.wait_for("CONSERVATIVE");
    let screen = tmux.screen();
    assert!(!screen.contains("attached"), "{screen}");

    let out = setup.run(&["serve"]);
    assert!(!out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let pid = Command::new("pgrep")
        .args([
            "-f",
            &format!("^{BIN} --config {}$", setup.config.display()),
        ])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty() && !pid.contains('\n'), "pgrep: {pid:?}");
    assert!(
        err.contains("dashboard") && err.contains(&format!("pid {pid}")),
        "{}",
        text(&out)
    );
    let out = setup.run(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("dashboard runs its own engine (pid {pid})")),
        "{}",
        text(&out)
    );

    tmux.keys(&["q"]);
    assert_eq!(wait_for_file(&exit_file).trim(), "0");
    let mut service = setup.serve(&[]);
    setup.wait_until_serving(&mut service);
    let out = setup.run(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    // No flag: the config's rollback_on_exit (false by default) decides.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("its changes kept"),
        "{}",
        text(&out)
    );
}

/// `report` while a service runs reports the service's engine (its balancer runs in it),
/// not a fresh read-only engine of its own that would see none of it, and binds nothing.
#[test]
fn a_report_while_a_service_runs_is_of_the_service() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let setup = Setup::with(&format!(
        "[docker]\nenabled = false\n[balancer]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    // Without a service: an engine of its own, which serves no balancer.
    let alone = setup.run(&["report", "--format", "json", "-o", "-"]);
    assert!(alone.status.success(), "{}", text(&alone));
    let alone: serde_json::Value = serde_json::from_slice(&alone.stdout).unwrap();
    assert_eq!(alone["balancer"]["status"], "off", "{}", alone["balancer"]);

    let mut service = setup.serve(&[]);
    setup.wait_until_serving(&mut service);
    let out = setup.run(&["report", "--format", "json", "-o", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["balancer"]["status"], "running",
        "{}",
        report["balancer"]
    );
    assert_eq!(
        report["balancer"]["stats"]["listen"],
        format!("127.0.0.1:{port}")
    );
    let status = setup.run(&["status"]);
    let said = text(&status);
    assert!(
        said.contains(&format!(
            "balancer: 127.0.0.1:{port} · 0 backends (0 up) in 1 pools"
        )),
        "{said}"
    );
    let status = setup.run(&["stop"]);
    assert!(status.status.success(), "{}", text(&status));
    service.wait_exit(Duration::from_secs(20));
}
