//! The memory pools served by the real engine (issue 17): agents in Python (the standard
//! library client, `clients/python`) put the same weights and the store keeps one copy; the
//! engine names each client's agent from its `[[agents]]` entry; the faces (`GET /api/pools`,
//! `/metrics`) show what sharing saves each one; an agent that dies releases what it held;
//! the Python client's own suite passes against the engine; a client sees the store restart
//! and can put again; an agent in a container reaches the store through the mounted socket
//! and is named by its container; an agent started with `run --ksm` shows beside the pools.

// Tests may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use support::{RunningEngine, Served, test_config, with_pools};
use sutazai_top::config::Config;
use sutazai_top::engine::Command;
use sutazai_top::model::Snapshot;

const MIB: u64 = 1 << 20;

fn clients_dir() -> String {
    format!("{}/clients/python", env!("CARGO_MANIFEST_DIR"))
}

/// A Python agent: connects, runs `script` (with `c` the client and `sutazai_pools` imported)
/// and keeps its connection until its stdin closes. `marker` is on its command line, for the
/// `[[agents]]` entry that matches it.
struct PythonAgent {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl PythonAgent {
    fn start(socket: &Path, marker: &str, script: &str) -> PythonAgent {
        let program = format!(
            "import sys, time\nsys.path.insert(0, {dir:?})\nimport sutazai_pools\n\
             c = sutazai_pools.Client({socket:?})\n{script}\nsys.stdout.flush()\nsys.stdin.read()\n",
            dir = clients_dir(),
            socket = socket.display().to_string(),
        );
        let mut child = Process::new("python3")
            .args(["-c", &program, marker])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        PythonAgent { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// Tell it to go on (a line on its stdin).
    fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    }
}

impl Drop for PythonAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_with_agents(dir: &Path) -> Config {
    let text = "[[agents]]\nname = \"embedder-a\"\ncmdline = \"pools-agent-a\"\n\
                [[agents]]\nname = \"embedder-b\"\ncmdline = \"pools-agent-b\"\n";
    let mut config = Config::parse(text, Path::new("test.toml")).unwrap();
    config.interval_ms = 200;
    config.docker.enabled = false;
    config.object_store = with_pools(test_config(200), dir, 64).object_store;
    config
}

fn use_of<'a>(snap: &'a Snapshot, agent: &str) -> Option<&'a sutazai_pools::AgentUse> {
    let store = snap.pools.serving.as_ref()?;
    store.agents.iter().find(|a| a.agent == agent)
}

#[test]
fn python_agents_share_one_copy_and_the_faces_show_what_each_saves() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_agents(dir.path());
    let socket = dir.path().join("pools.sock");
    let mut served = Served::start_managing(config, tempfile::tempdir().unwrap());
    // The same 4 MiB of "weights", put by two agents (the second waits for the first).
    let weights = "bytes(range(256)) * 16384";
    let put = "p = c.put(WEIGHTS); print(p.id, p.deduplicated)".replace("WEIGHTS", weights);
    let mut a = PythonAgent::start(&socket, "pools-agent-a", &put);
    let (id_a, dedup_a) = split(&a.line());
    let mut b = PythonAgent::start(&socket, "pools-agent-b", &put);
    let (id_b, dedup_b) = split(&b.line());
    assert_eq!(id_a, id_b);
    assert_eq!((dedup_a.as_str(), dedup_b.as_str()), ("False", "True"));

    // The engine names each client by its [[agents]] entry (once the agent is seen).
    let snap = served
        .engine
        .wait_for(Duration::from_secs(20), "both agents named", |s| {
            use_of(s, "embedder-a").is_some() && use_of(s, "embedder-b").is_some()
        });
    let store = snap.pools.serving.as_ref().unwrap();
    let pool = &store.pools[0];
    assert_eq!(pool.name, "default");
    assert_eq!(
        (pool.objects, pool.physical_bytes),
        (1, 4 * MIB),
        "one copy"
    );
    assert_eq!(
        pool.logical_bytes,
        8 * MIB,
        "what two private copies would take"
    );
    assert_eq!(pool.capacity_bytes, 64 * MIB);
    let a_use = use_of(&snap, "embedder-a").unwrap();
    assert_eq!((a_use.held_bytes, a_use.saved_bytes), (4 * MIB, 2 * MIB));

    // A Rust reader maps the same pages (no copy), and is named by its process.
    let mut reader = sutazai_pools::Client::connect(&socket).unwrap();
    let id = sutazai_pools::ObjectId::parse(&id_a).unwrap();
    let mapped = reader.get(&id).unwrap();
    let expected: Vec<u8> = (0..4 * MIB).map(|i| (i % 256) as u8).collect();
    assert!(mapped.as_slice() == expected.as_slice());

    // The faces: the API and the metrics carry the same figures (as of a tick after the get).
    served
        .engine
        .wait_for(Duration::from_secs(10), "the reader counted", |s| {
            s.pools
                .serving
                .as_ref()
                .is_some_and(|p| p.agents.len() == 3)
        });
    let api = served.get("/api/pools");
    assert_eq!(api.status, 200, "{}", api.text());
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    assert_eq!(json["socket"], socket.display().to_string());
    assert_eq!(json["pools"][0]["physical_bytes"], 4 * MIB);
    let held_by = |json: &serde_json::Value| -> Vec<String> {
        let agents = json["agents"].as_array().unwrap();
        agents
            .iter()
            .map(|a| a["agent"].as_str().unwrap().to_string())
            .collect()
    };
    let ours = format!("pid {}", std::process::id());
    assert!(
        held_by(&json).iter().any(|a| a.starts_with(&ours)),
        "{json}"
    );
    assert!(
        json["pools"][0]["dedup_ratio"].as_f64().unwrap() >= 2.9,
        "{json}"
    );
    let metrics = served.get("/metrics").text();
    assert!(metrics.contains("sutazai_pools_serving 1\n"), "{metrics}");
    assert!(
        metrics.contains("sutazai_pools_physical_bytes{pool=\"default\"} 4194304\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sutazai_pools_agent_saved_bytes{agent=\"embedder-a\",pool=\"default\"}"),
        "{metrics}"
    );

    // An agent that dies releases what it held; what the others hold is intact.
    drop(a);
    served
        .engine
        .wait_for(Duration::from_secs(10), "embedder-a's hold released", |s| {
            use_of(s, "embedder-a").is_none()
        });
    assert!(mapped.as_slice() == expected.as_slice());
    b.go();
    drop(mapped);
    drop(reader);
}

fn split(line: &str) -> (String, String) {
    let (id, dedup) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("agent said {line:?}"));
    (id.to_string(), dedup.to_string())
}

#[test]
fn the_python_client_passes_its_suite_against_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_pools(test_config(200), dir.path(), 16);
    let _engine = RunningEngine::start_managing(config);
    let out = Process::new("python3")
        .arg(format!("{}/test_sutazai_pools.py", clients_dir()))
        .env("SUTAZAI_POOLS_SOCKET", dir.path().join("pools.sock"))
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Ran 5 tests"), "{said}");
}

#[test]
fn a_python_client_sees_the_store_restart_and_puts_again() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pools.sock");
    let config = with_pools(test_config(200), dir.path(), 16);
    let engine = RunningEngine::start_managing(config.clone());
    let script = "p = c.put(b'prompt prefix'); print('put', flush=True); sys.stdin.readline()\n\
                  try:\n    c.put(b'again')\nexcept sutazai_pools.StoreRestarted as e:\n    print('restarted:', e, flush=True)\n\
                  sys.stdin.readline()\nc = sutazai_pools.Client(SOCKET)\nprint('dedup', c.put(b'prompt prefix').deduplicated, flush=True)";
    let script = script.replace("SOCKET", &format!("{:?}", socket.display().to_string()));
    let mut agent = PythonAgent::start(&socket, "pools-agent", &script);
    assert_eq!(agent.line(), "put");
    let commands = engine.handle.commands.clone();
    engine
        .runtime
        .block_on(commands.send(Command::Quit))
        .unwrap();
    wait_until("the socket removed", || !socket.exists());
    agent.go();
    let said = agent.line();
    assert!(
        said.starts_with("restarted: the store restarted or stopped"),
        "{said}"
    );

    let mut engine = RunningEngine::start_managing(config);
    engine.wait_for(Duration::from_secs(10), "the store served again", |s| {
        s.pools.serving.is_some()
    });
    agent.go();
    assert_eq!(
        agent.line(),
        "dedup False",
        "objects do not survive the store"
    );
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_agent_started_with_ksm_merging_shows_beside_the_pools() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of sleep under a name of our own, so the [[agents]] entry matches it alone.
    let program = dir.path().join("ksm-sleeper");
    std::fs::copy("/bin/sleep", &program).unwrap();
    let text = "[[agents]]\nname = \"ksm-agent\"\ncomm = \"ksm-sleeper\"\n";
    let mut config = Config::parse(text, Path::new("test.toml")).unwrap();
    config.interval_ms = 200;
    config.docker.enabled = false;
    config.object_store = with_pools(test_config(200), dir.path(), 16).object_store;
    let mut served = Served::start_managing(config, tempfile::tempdir().unwrap());
    let mut child = Process::new(env!("CARGO_BIN_EXE_sutazai-top"))
        .args(["run", "--ksm", "--"])
        .arg(&program)
        .arg("600")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let snap = served
        .engine
        .wait_for(Duration::from_secs(20), "its KSM counters", |s| {
            s.containers
                .agents
                .iter()
                .any(|a| a.name == "ksm-agent" && a.ksm.is_some_and(|k| k.merge_any))
        });
    assert_eq!(snap.ksm_outside_pools()[0].0, "ksm-agent");
    served
        .engine
        .wait_for(Duration::from_secs(5), "a later tick", |s| s.seq > snap.seq);
    let json: serde_json::Value = serde_json::from_slice(&served.get("/api/pools").body).unwrap();
    assert_eq!(json["ksm"][0]["agent"], "ksm-agent", "{json}");
    assert_eq!(json["ksm"][0]["ksm"]["merge_any"], true, "{json}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_agent_in_a_container_reaches_the_store_through_a_mounted_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pools.sock");
    // The default mode (0600, root only) lets the container's root in: it is the host's
    // root (no user namespace).
    let config = with_pools(test_config(200), dir.path(), 16);
    let mut served = Served::start_managing(config, tempfile::tempdir().unwrap());
    let name = support::unique("pools-agent");
    // The host's Python, read-only, in the busybox image; the socket mounted in, as the
    // README shows; no network.
    let script = "import sys, time\nsys.path.insert(0, '/clients')\nimport sutazai_pools\n\
                  c = sutazai_pools.Client('/run/sutazai-pools.sock')\n\
                  c.put(b'embedding table ' * 10000)\ntime.sleep(600)\n";
    let mounts = [
        format!("{}:/run/sutazai-pools.sock", socket.display()),
        format!("{}:/clients:ro", clients_dir()),
        "/usr:/usr:ro".to_string(),
        "/usr/lib:/lib:ro".to_string(),
        "/usr/lib64:/lib64:ro".to_string(),
    ];
    let mut extra = vec!["--label", "sutazai.agent=1"];
    for mount in &mounts {
        extra.extend(["-v", mount.as_str()]);
    }
    let _container = support::Container::run(&name, &extra, &["/usr/bin/python3", "-c", script]);
    let snap = served.engine.wait_for(
        Duration::from_secs(30),
        "the container named as the agent",
        |s| use_of(s, &name).is_some(),
    );
    assert_eq!(use_of(&snap, &name).unwrap().held_bytes, 160_000);
}
