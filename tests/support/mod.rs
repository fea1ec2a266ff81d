//! Shared helpers for the tests that drive a real Docker daemon and the real engine.
#![allow(dead_code)] // each test binary uses a different part

pub mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sutazai_top::api::{ApiResponse, ApiServer, Client, StopChannel, StopRequest};
use sutazai_top::config::Config;
use sutazai_top::engine::{self, EngineConfig, EngineHandle};
use sutazai_top::model::Snapshot;
use tokio::sync::mpsc;

/// The test image, built by the one recipe the benches use too (`scripts/busybox-image.sh`:
/// Debian's busybox-static with every applet), imported once if Docker lacks it.
pub fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/busybox-image.sh");
        let out = Command::new(script)
            .output()
            .expect("scripts/busybox-image.sh runs");
        assert!(
            out.status.success(),
            "scripts/busybox-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs")
}

/// Run docker, panicking with its stderr when it fails.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Make sure the test image is there (kept for the tests that call it before a run).
pub fn ensure_test_image() {
    test_image();
}

/// A container this test started; removed (forcibly) when dropped, even on failure.
pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// `docker run -d --network none --name NAME [extra...] IMAGE cmd...`
    pub fn run(name: &str, extra: &[&str], cmd: &[&str]) -> Container {
        ensure_test_image();
        let _ = docker(&["rm", "-f", name]);
        let mut args = vec!["run", "-d", "--network", "none", "--name", name];
        args.extend_from_slice(extra);
        args.push(test_image());
        args.extend_from_slice(cmd);
        let id = docker_ok(&args);
        Container {
            name: name.to_string(),
            id,
        }
    }

    pub fn remove(&self) {
        docker_ok(&["rm", "-f", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

/// A name unique to this test process, so parallel runs never collide.
pub fn unique(name: &str) -> String {
    format!("sutazai-test-{}-{name}", std::process::id())
}

/// A test config: fast tick, no config file involved. The memory pools are off: an engine
/// that runs for the host would serve them on /run's socket; tests that want them give a
/// socket of their own (`with_pools`).
pub fn test_config(interval_ms: u64) -> Config {
    let mut config = Config {
        interval_ms,
        ..Config::default()
    };
    config.object_store.enabled = false;
    config
}

/// The memory pools served on a socket in `dir`.
pub fn with_pools(mut config: Config, dir: &Path, size_mb: u64) -> Config {
    config.object_store.enabled = true;
    config.object_store.socket = dir.join("pools.sock");
    config.object_store.shared_memory_size_mb = size_mb;
    config
}

/// The engine and its API in a temp dir (the API tests and the cache API tests); everything
/// is stopped and removed when dropped.
pub struct Served {
    pub engine: RunningEngine,
    pub server: Option<ApiServer>,
    /// What `POST /api/stop` asked.
    pub stops: mpsc::Receiver<StopRequest>,
    pub client: Client,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Served {
    pub fn start(config: Config, dir: tempfile::TempDir) -> Served {
        // An engine that serves the balancer is one that runs for the host, as `serve` does.
        let manages = config.balancer.enabled;
        Served::start_with(config, dir, manages)
    }

    /// As `serve` runs it: the engine runs for the host (it may change it).
    pub fn start_managing(config: Config, dir: tempfile::TempDir) -> Served {
        Served::start_with(config, dir, true)
    }

    fn start_with(mut config: Config, dir: tempfile::TempDir, manages: bool) -> Served {
        config.optimizer.state_dir = dir.path().join("state");
        config.api.socket = dir.path().join("run/api.sock");
        config.api.token_file = dir.path().join("state/api.token");
        std::fs::create_dir_all(&config.optimizer.state_dir).unwrap();
        std::fs::set_permissions(
            &config.optimizer.state_dir,
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let engine = if manages {
            RunningEngine::start_managing(config.clone())
        } else {
            RunningEngine::start(config.clone())
        };
        let (tx, stops) = mpsc::channel(1);
        let server = engine
            .runtime
            .block_on(ApiServer::start(
                engine.handle.clone(),
                &config.api,
                Some(StopChannel {
                    sender: tx,
                    rollback_on_exit: true,
                }),
            ))
            .expect("the API starts");
        let client = Client::unix(&config.api.socket);
        let mut served = Served {
            engine,
            server: Some(server),
            stops,
            client,
            socket: config.api.socket.clone(),
            dir,
        };
        served
            .engine
            .wait_for(Duration::from_secs(15), "a first tick", |s| s.seq >= 1);
        served
    }

    pub fn call(&self, client: &Client, method: &str, path: &str, body: &[u8]) -> ApiResponse {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        self.engine
            .runtime
            .block_on(client.send(method, path, headers, body.to_vec()))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn get(&self, path: &str) -> ApiResponse {
        self.call(&self.client, "GET", path, b"")
    }

    pub fn post(&self, path: &str, body: &str) -> ApiResponse {
        self.call(&self.client, "POST", path, body.as_bytes())
    }

    pub fn put(&self, path: &str, body: &str) -> ApiResponse {
        self.call(&self.client, "PUT", path, body.as_bytes())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _guard = self.engine.runtime.enter();
            server.shutdown();
        }
        let commands = self.engine.handle.commands.clone();
        let _ = self
            .engine
            .runtime
            .block_on(commands.send(sutazai_top::engine::Command::Quit));
    }
}

/// The engine on its own runtime, for tests that are plain (non-async) functions.
pub struct RunningEngine {
    pub runtime: tokio::runtime::Runtime,
    pub handle: EngineHandle,
}

impl RunningEngine {
    pub fn start(config: Config) -> RunningEngine {
        Self::start_with(config, engine::spawn)
    }

    /// The engine as the dashboard runs it (it may change the host: auto-fix, validation).
    pub fn start_managing(config: Config) -> RunningEngine {
        Self::start_with(config, engine::spawn_managing)
    }

    fn start_with(
        config: Config,
        spawn: fn(EngineConfig) -> (EngineHandle, tokio::task::JoinHandle<()>),
    ) -> RunningEngine {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.block_on(async { spawn(config.engine()).0 });
        RunningEngine { runtime, handle }
    }

    /// Wait (up to `timeout`) for a snapshot that satisfies `pred`; returns it.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut pred: impl FnMut(&Snapshot) -> bool,
    ) -> Arc<Snapshot> {
        let deadline = Instant::now() + timeout;
        let rx = &mut self.handle.snapshots;
        loop {
            let snap = rx.borrow_and_update().clone();
            if pred(&snap) {
                return snap;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; last snapshot seq {}: {:?}; notice {:?}; \
                 proposals {:?}",
                snap.seq,
                snap.containers.status,
                snap.notice.as_ref().map(|n| &n.text),
                snap.proposals
                    .iter()
                    .map(|p| (p.id, &p.fix.strategy, &p.status))
                    .collect::<Vec<_>>()
            );
            let changed = self
                .runtime
                .block_on(async { tokio::time::timeout(left, rx.changed()).await });
            if let Ok(Err(_)) = changed {
                panic!("engine stopped while waiting for {what}");
            }
        }
    }

    /// Roll every open batch back and wait until nothing is active.
    pub fn roll_back_all(&mut self) {
        let commands = self.handle.commands.clone();
        self.runtime
            .block_on(commands.send(sutazai_top::engine::Command::RollbackAll))
            .expect("the engine takes commands");
        self.wait_for(Duration::from_secs(20), "nothing active", |s| {
            s.changes.active.is_empty()
        });
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        self.handle.snapshots.borrow().clone()
    }
}

/// Held while a test gives CPUs away (the coordinator's tests): they must not run beside
/// each other, whether as threads of one test binary (`cargo test`) or as processes
/// (`cargo nextest`). An advisory lock on a file, released when dropped.
pub struct CpuTestsLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn cpu_tests_lock() -> CpuTestsLock {
    // flock: every open of the file is locked apart, threads of one process included.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("sutazai-test-cpus.lock"))
        .expect("the lock file of the CPU tests");
    let locked = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
        Ok(locked) => locked,
        Err((_, err)) => panic!("locking the CPU tests' lock file: {err}"),
    };
    // An engine of an earlier test in this process may have left our threads off the CPUs
    // it granted (it keeps off exclusive CPUs); processes we start would inherit that.
    let online =
        std::fs::read_to_string("/sys/devices/system/cpu/online").expect("the online CPUs");
    let every = sutazai_top::host::parse_cpu_list(online.trim());
    sutazai_top::host::own_affinity::confine_self(&every).expect("back on every CPU");
    CpuTestsLock(locked)
}
