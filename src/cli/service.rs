//! The engine as a service: `serve`, `status`, `stop`, the one-engine-per-host lock, and the
//! dashboard attaching to a running service instead of starting a second optimizer.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;
use sutazai_owned_paths::{Access, OwnedDir, open_owned};
use tokio::sync::mpsc;

use sutazai_top::api::routes::{Status, Stopping};
use sutazai_top::api::{self, ApiServer, Client, ClientError, StopChannel};
use sutazai_top::config::Config;
use sutazai_top::engine::{self, Command, EngineHandle};

use super::faces;

const PID_FILE: &str = "sutazai-top.pid";
/// How long `stop` waits for the engine to exit (a rollback may take a minute).
const STOP_WAIT: Duration = Duration::from_secs(120);
/// How long the service waits for the engine to finish after Quit.
const ENGINE_EXIT_WAIT: Duration = Duration::from_secs(60);

/// The one-engine-per-host lock on the pid file: a service holds it exclusively for its
/// life, a dashboard running its own engine holds a share (dashboards may be several, a
/// service may not start beside them). The kernel drops it when the process dies, however
/// it dies.
pub struct PidLock {
    file: Flock<File>,
    exclusive: bool,
}

impl PidLock {
    /// The pid file, by the rule of every owned path: the runtime dir ours (created 0700)
    /// and writable by nobody else, the file never through a symlink.
    fn open(runtime_dir: &Path) -> anyhow::Result<(File, PathBuf)> {
        let path = runtime_dir.join(PID_FILE);
        let dir = OwnedDir::ensure(runtime_dir)?;
        let (file, _) = dir.open(PID_FILE, Access::ReadWrite { create_mode: 0o644 })?;
        Ok((file, path))
    }

    /// The service's lock; refused, naming the holder, while another service or a
    /// dashboard with its own engine runs.
    pub fn acquire(runtime_dir: &Path) -> anyhow::Result<PidLock> {
        let (file, path) = PidLock::open(runtime_dir)?;
        let mut file = match try_flock(file, FlockArg::LockExclusiveNonblock)? {
            Ok(locked) => locked,
            Err(file) => return Err(PidLock::refusal(file, &path)),
        };
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(PidLock {
            file,
            exclusive: true,
        })
    }

    /// Why the service's lock is refused: who holds it, a service or dashboards.
    fn refusal(mut file: File, path: &Path) -> anyhow::Error {
        let holders = lock_holders(&file);
        let shared_only = !holders.is_empty() && holders.iter().all(|h| !h.exclusive);
        let pids = if holders.is_empty() {
            read_pid(&mut file)
                .map(|p| p.to_string())
                .unwrap_or_default()
        } else {
            let pids: Vec<String> = holders.iter().map(|h| h.pid.to_string()).collect();
            pids.join(", ")
        };
        if shared_only {
            return anyhow::anyhow!(
                "a sutazai-top dashboard runs its own engine (pid {pids}); one engine per \
                     host — quit it, start the service, then start the dashboard again (it \
                     attaches to the service)"
            );
        }
        anyhow::anyhow!(
            "another sutazai-top engine is already running (pid {pids}, lock {}); \
                 one engine per host — see `sutazai-top status`, stop it with `sutazai-top stop`",
            path.display()
        )
    }

    /// A dashboard's share: `Ok(None)` when a service holds the lock (attach to it instead).
    pub fn share(runtime_dir: &Path) -> anyhow::Result<Option<PidLock>> {
        let (file, _) = PidLock::open(runtime_dir)?;
        Ok(try_flock(file, FlockArg::LockSharedNonblock)?
            .ok()
            .map(|file| PidLock {
                file,
                exclusive: false,
            }))
    }

    /// The pid of the service holding the lock in `runtime_dir`, if one does. Read from
    /// /proc/locks without taking a lock: a probe that took one, however briefly, would make
    /// a service starting at that moment think another engine runs.
    pub fn holder(runtime_dir: &Path) -> Option<u32> {
        let file = File::open(runtime_dir.join(PID_FILE)).ok()?;
        lock_holders(&file)
            .into_iter()
            .find(|h| h.exclusive)
            .map(|h| h.pid)
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        // An empty pid file says "no service"; the lock goes with the descriptor.
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// One holder of a flock, from /proc/locks.
struct Holder {
    pid: u32,
    exclusive: bool,
}

/// Who holds flocks on `file` (matched by inode in /proc/locks), to name them.
fn lock_holders(file: &File) -> Vec<Holder> {
    use std::os::unix::fs::MetadataExt;
    let Ok(inode) = file.metadata().map(|m| m.ino()) else {
        return Vec::new();
    };
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter_map(|line| {
            // "1: FLOCK  ADVISORY  WRITE 926 00:2e:1234 0 EOF"
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, mode, pid, id) = (
                fields.get(1)?,
                fields.get(3)?,
                fields.get(4)?,
                fields.get(5)?,
            );
            let same_file = id.rsplit(':').next()?.parse::<u64>().ok()? == inode;
            (*kind == "FLOCK" && same_file).then_some(Holder {
                pid: pid.parse().ok()?,
                exclusive: *mode == "WRITE",
            })
        })
        .filter(|h| h.pid != std::process::id())
        .collect()
}

/// Non-blocking flock: the locked file, or the file back when another process holds it.
fn try_flock(file: File, arg: FlockArg) -> anyhow::Result<Result<Flock<File>, File>> {
    match Flock::lock(file, arg) {
        Ok(locked) => Ok(Ok(locked)),
        Err((file, Errno::EWOULDBLOCK)) => Ok(Err(file)),
        Err((_, errno)) => Err(std::io::Error::from(errno)).context("cannot lock the pid file"),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

pub(crate) fn client(config: &Config) -> Client {
    Client::unix(&config.api.socket)
}

// -------------------------------------------------------------------------------------------
// serve
// -------------------------------------------------------------------------------------------

/// `sutazai-top serve`: the engine and its API, no terminal, until SIGTERM/SIGINT or
/// `POST /api/stop`.
pub fn serve(config: Config, runtime: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let lock = PidLock::acquire(&config.service.runtime_dir)?;
    init_service_logging(&config)?;
    let result = runtime.block_on(run_service(config));
    drop(lock);
    result
}

fn init_service_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    // RUST_LOG narrows or widens it per component (targets are module paths).
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => value,
        _ => config.log.level.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("bad log filter {filter:?}: {e}"))?;
    let writer = if config.service.log_file.is_empty() {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        let path = &config.service.log_file;
        // Appended by the rule of every owned path: never through a symlink, ours alone.
        let (file, _) = open_owned(Path::new(path), Access::Append { create_mode: 0o640 })
            .with_context(|| format!("cannot open the log file {path}"))?;
        BoxMakeWriter::new(std::io::stderr.and(Arc::new(file)))
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .try_init();
    Ok(())
}

async fn run_service(config: Config) -> anyhow::Result<()> {
    let rollback_on_exit = config.optimizer.rollback_on_exit;
    // The service decides about rollback itself at stop (per request or config), so the
    // engine must not roll back on its own when it quits.
    let mut engine_config = config.clone();
    engine_config.optimizer.rollback_on_exit = false;
    let (handle, engine) = engine::spawn_managing(engine_config.engine());
    let _alerts = sutazai_top::alerts::spawn_alerts(&config.alerts, handle.snapshots.clone());
    let (stop_tx, mut stop_rx) = mpsc::channel(1);
    let stop = StopChannel {
        sender: stop_tx,
        rollback_on_exit,
    };
    let server = match ApiServer::start(handle.clone(), &config.api, Some(stop)).await {
        Ok(server) => server,
        Err(err) => {
            let _ = handle.commands.send(Command::Quit).await;
            let _ = tokio::time::timeout(ENGINE_EXIT_WAIT, engine).await;
            return Err(err).context("cannot start the API");
        }
    };
    tracing::info!(
        pid = std::process::id(),
        mode = %config.mode,
        auto_fix = config.optimizer.auto_fix,
        socket = %config.api.socket.display(),
        "sutazai-top serving"
    );
    let rollback = tokio::select! {
        signal = termination() => {
            tracing::info!(signal, "stopping");
            rollback_on_exit
        }
        request = stop_rx.recv() => {
            let rollback = request.map_or(rollback_on_exit, |r| r.rollback);
            tracing::info!(rollback, "stop requested through the API");
            rollback
        }
    };
    stop_engine(&handle, engine, rollback).await;
    server.shutdown();
    tracing::info!("sutazai-top stopped");
    Ok(())
}

/// Roll back what is active if asked, then quit the engine and wait for it.
async fn stop_engine(handle: &EngineHandle, engine: tokio::task::JoinHandle<()>, rollback: bool) {
    let active = handle.snapshots.borrow().changes.active.len();
    if rollback {
        tracing::info!(batches = active, "rolling back every active change");
        if let Err(err) = api_rollback_all(handle).await {
            tracing::error!(%err, "rollback at stop failed; `sutazai-top rollback --all` retries");
        }
    } else if active > 0 {
        tracing::info!(
            batches = active,
            "changes stay active on the host; `sutazai-top rollback --all` undoes them"
        );
    }
    let _ = handle.commands.send(Command::Quit).await;
    if tokio::time::timeout(ENGINE_EXIT_WAIT, engine)
        .await
        .is_err()
    {
        tracing::warn!("the engine did not finish in time");
    }
}

/// The same rollback the API's `rollback-all` does (and waits for).
async fn api_rollback_all(handle: &EngineHandle) -> anyhow::Result<()> {
    api::ops::rollback_all(handle)
        .await
        .map(|_| ())
        .map_err(|f| anyhow::anyhow!(f.message))
}

/// SIGTERM or SIGINT; SIGHUP is logged and ignored (no terminal to lose).
async fn termination() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot listen for signals; stop with `sutazai-top stop`");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return "SIGTERM",
            _ = int.recv() => return "SIGINT",
            _ = hup.recv() => tracing::info!("SIGHUP ignored (the config is read at start)"),
        }
    }
}

// -------------------------------------------------------------------------------------------
// status, stop
// -------------------------------------------------------------------------------------------

/// Why no engine answered, in words for the operator.
fn not_running(config: &Config, err: &ClientError) -> anyhow::Error {
    if let ClientError::Connect { source, .. } = err
        && source.kind() == ErrorKind::PermissionDenied
    {
        return anyhow::anyhow!(
            "cannot reach the engine's API at {}: permission denied (the socket is root-only)",
            config.api.socket.display()
        );
    }
    match PidLock::holder(&config.service.runtime_dir) {
        Some(pid) => anyhow::anyhow!(
            "a sutazai-top engine (pid {pid}) holds the lock but its API does not answer: {err}"
        ),
        None => {
            let dashboards: Vec<String> = File::open(config.service.runtime_dir.join(PID_FILE))
                .map(|f| lock_holders(&f))
                .unwrap_or_default()
                .iter()
                .map(|h| h.pid.to_string())
                .collect();
            if dashboards.is_empty() {
                anyhow::anyhow!("no sutazai-top engine is running ({err})")
            } else {
                anyhow::anyhow!(
                    "no sutazai-top service is running; a dashboard runs its own engine (pid {}) \
                     and serves no API",
                    dashboards.join(", ")
                )
            }
        }
    }
}

/// The balancer in one line: where it listens, its backends and load; "off" when disabled.
async fn balancer_line(config: &Config) -> String {
    let response = match client(config).get("/api/balancer").await {
        Ok(response) => response,
        // An older service or a failing call: say so rather than guess.
        Err(err) => return format!("balancer: unknown ({err})"),
    };
    if response.status == 404 {
        return "balancer: off".to_string();
    }
    let b = match response.json::<sutazai_balancer::BalancerSnapshot>() {
        Ok(b) => b,
        Err(err) => return format!("balancer: unknown ({err})"),
    };
    describe_balancer(&b)
}

fn describe_balancer(b: &sutazai_balancer::BalancerSnapshot) -> String {
    let backends: Vec<_> = b.pools.iter().flat_map(|p| &p.backends).collect();
    let count = |health| backends.iter().filter(|x| x.health == health).count();
    let up = count(sutazai_balancer::Health::Up);
    // Right after a start no check has finished: those backends take traffic, and "0 up"
    // alone would read as an outage.
    let unchecked = match count(sutazai_balancer::Health::Unknown) {
        0 => String::new(),
        n => format!(", {n} not checked yet"),
    };
    format!(
        "balancer: {} · {} backends ({up} up{unchecked}) in {} pools · {:.1} req/s",
        b.listen,
        backends.len(),
        b.pools.len(),
        b.requests_per_sec
    )
}

pub async fn status(config: &Config) -> anyhow::Result<()> {
    let status: Status = match client(config).get("/api/status").await {
        Ok(response) => response.json()?,
        Err(err) => return Err(not_running(config, &err)),
    };
    println!(
        "sutazai-top engine: running (pid {}, up {}, version {})",
        status.pid,
        human_duration(status.uptime_secs),
        status.version
    );
    println!(
        "mode: {}, auto-fix {}{}",
        status.mode,
        if status.auto_fix { "on" } else { "off" },
        if status.is_root {
            ""
        } else {
            " (read-only: not root)"
        }
    );
    println!("agents: {}", status.agents);
    println!(
        "open bottlenecks: {} (open proposals: {})",
        status.open_bottlenecks, status.open_proposals
    );
    println!(
        "applied fixes: {} (active change batches: {})",
        status.applied_fixes, status.active_batches
    );
    println!("{}", coordinator_line(config).await);
    println!("{}", balancer_line(config).await);
    Ok(())
}

/// The coordinator in one line: agents by state, the reserved CPUs and the shared pool.
async fn coordinator_line(config: &Config) -> String {
    let response = match client(config).get("/api/agents").await {
        Ok(response) => response,
        Err(err) => return format!("coordinator: unknown ({err})"),
    };
    match response.status {
        404 => return "coordinator: off".to_string(),
        503 => return "coordinator: no plan yet (the first tick has not run)".to_string(),
        _ => {}
    }
    let plan = match response.json::<serde_json::Value>() {
        Ok(plan) => plan,
        Err(err) => return format!("coordinator: unknown ({err})"),
    };
    let agents = plan["agents"].as_array().cloned().unwrap_or_default();
    let count = |state: &str| agents.iter().filter(|a| a["state"] == state).count();
    let list = |key: &str| match plan[key].as_str() {
        Some("") | None => "none".to_string(),
        Some(cpus) => cpus.to_string(),
    };
    format!(
        "coordinator: {} exclusive, {} shared, {} pending, {} misdeclared; reserved CPUs {}, \
         shared pool {}; {}",
        count("exclusive"),
        count("shared"),
        count("pending"),
        count("misdeclared"),
        list("reserved"),
        match list("shared").as_str() {
            "none" => "every CPU".to_string(),
            cpus => cpus.to_string(),
        },
        if plan["enforce"] == true {
            "enforcing"
        } else {
            "proposing (approve with a)"
        }
    )
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// `sutazai-top stop`: ask the service to stop (rolling back or not) and wait until it has.
pub async fn stop(config: &Config, rollback: Option<bool>) -> anyhow::Result<()> {
    let body = match rollback {
        Some(rollback) => json!({ "rollback": rollback }),
        None => json!({}),
    };
    let stopping: Stopping = match client(config).post("/api/stop", &body).await {
        Ok(response) => response.json()?,
        Err(err) => return Err(not_running(config, &err)),
    };
    let started = Instant::now();
    while PidLock::holder(&config.service.runtime_dir).is_some() || process_alive(stopping.pid) {
        anyhow::ensure!(
            started.elapsed() < STOP_WAIT,
            "the engine (pid {}) has not stopped after {}s",
            stopping.pid,
            STOP_WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let what = match stopping.rollback {
        true => "its changes rolled back",
        false => "its changes kept",
    };
    println!("sutazai-top engine (pid {}) stopped, {what}", stopping.pid);
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    PathBuf::from(format!("/proc/{pid}")).join("stat").exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

// -------------------------------------------------------------------------------------------
// the dashboard: attach to a running service, else run its own engine
// -------------------------------------------------------------------------------------------

/// Attach to the service that holds the lock: its pid, a handle on its engine, and the task
/// that follows it (ends when detached or when the service goes).
pub(crate) async fn attach(
    config: &Config,
) -> anyhow::Result<(
    u32,
    EngineHandle,
    tokio::task::JoinHandle<api::remote::Detached>,
)> {
    let pid = PidLock::holder(&config.service.runtime_dir).unwrap_or(0);
    let (handle, remote) = api::remote::attach(
        client(config),
        (config.report_dir.clone(), sutazai_top::report::writer()),
    )
    .await
    .map_err(|err| {
        anyhow::anyhow!(
            "a sutazai-top service (pid {pid}) is running but its API at {} does not answer: {err}",
            config.api.socket.display()
        )
    })?;
    Ok((pid, handle, remote))
}

pub async fn dashboard(config: Config) -> anyhow::Result<()> {
    // A share of the lock keeps a service from starting beside this dashboard's engine;
    // without a usable runtime dir (not root) the dashboard runs on, read-only anyway.
    match PidLock::share(&config.service.runtime_dir) {
        Ok(Some(_shared)) => return faces::dashboard(config).await,
        Ok(None) => {}
        Err(err) => {
            tracing::debug!("no engine lock: {err:#}");
            return faces::dashboard(config).await;
        }
    }
    let (pid, handle, remote) = attach(&config).await?;
    tracing::info!(pid, "attached to the running service");
    let face = handle.clone();
    let result = tokio::task::spawn_blocking(move || sutazai_top::tui::run(face)).await;
    // Detach: the service keeps running.
    let _ = handle.commands.send(Command::Quit).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), remote).await;
    if let Ok(Ok(api::remote::Detached::ServiceGone)) = ended {
        eprintln!("sutazai-top: the service (pid {pid}) stopped answering; detached");
    }
    result
        .context("the dashboard thread failed")?
        .context("terminal error")
}

#[cfg(test)]
mod tests {
    use sutazai_balancer::{BackendSnapshot, BalancerSnapshot, Health, PoolSnapshot};

    use super::describe_balancer;

    #[test]
    fn the_balancer_line_tells_unchecked_backends_from_down_ones() {
        let backend = |health| BackendSnapshot {
            health,
            ..BackendSnapshot::default()
        };
        let mut b = BalancerSnapshot {
            listen: "127.0.0.1:8080".to_string(),
            requests_per_sec: 12.0,
            pools: vec![PoolSnapshot {
                backends: vec![backend(Health::Unknown), backend(Health::Unknown)],
                ..PoolSnapshot::default()
            }],
            ..BalancerSnapshot::default()
        };
        assert_eq!(
            describe_balancer(&b),
            "balancer: 127.0.0.1:8080 · 2 backends (0 up, 2 not checked yet) in 1 pools · 12.0 req/s"
        );
        b.pools[0].backends = vec![backend(Health::Up), backend(Health::Down)];
        assert_eq!(
            describe_balancer(&b),
            "balancer: 127.0.0.1:8080 · 2 backends (1 up) in 1 pools · 12.0 req/s"
        );
    }
}
