//! The REST API end to end: the real engine, the real server on a Unix socket in a temp dir
//! (and on TCP with its token), every route including the refusals, and a real fix applied
//! through the API to real containers and rolled back through it.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod host_support;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Container, Served, docker_ok, test_config, unique, wire};
use sutazai_top::api::{ApiResponse, ApiServer, Client, OPENAPI, StopRequest};
use sutazai_top::config::Config;
use sutazai_top::model::Snapshot;
use sutazai_top::model::{Proposal, ProposalStatus};

fn json_of(r: &ApiResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// An error answer: the status, JSON with an `error` text containing `needle`.
fn assert_error(r: &ApiResponse, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let error = json_of(r)["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains(needle),
        "error {error:?} does not mention {needle:?}"
    );
}

fn quiet_config() -> Config {
    let mut config = test_config(300);
    config.docker.enabled = false;
    config
}

#[test]
fn every_route_answers_and_bad_requests_get_json_errors() {
    let mut served = Served::start(quiet_config(), tempfile::tempdir().unwrap());

    // The socket is root-only: 0600 in a 0700 directory.
    let socket = served.dir.path().join("run/api.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&socket), 0o600);
    assert_eq!(mode(socket.parent().unwrap()), 0o700);

    let health = json_of(&served.get("/api/health"));
    assert_eq!(health["status"], "ok");
    assert!(health["seq"].as_u64().unwrap() >= 1);

    let status = json_of(&served.get("/api/status"));
    assert_eq!(status["mode"], "conservative");
    assert_eq!(status["pid"], std::process::id());
    assert_eq!(status["active_batches"], 0);

    let r = served.get("/api/metrics");
    assert_eq!(r.status, 200);
    let snap: Snapshot = r.json().expect("the snapshot deserializes");
    assert!(snap.seq >= 1 && snap.interval_ms == 300);

    assert!(json_of(&served.get("/api/proposals")).is_array());

    // Mode: read, change, refuse nonsense.
    assert_eq!(json_of(&served.get("/api/mode"))["mode"], "conservative");
    let r = served.put("/api/mode", r#"{"mode":"balanced"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["mode"], "balanced");
    assert_eq!(json_of(&served.get("/api/status"))["mode"], "balanced");
    assert_error(
        &served.put("/api/mode", r#"{"mode":"turbo"}"#),
        400,
        "turbo",
    );
    assert_error(
        &served.put("/api/mode", r#"{"mode":"#),
        400,
        "not valid JSON",
    );
    assert_error(
        &served.put("/api/mode", r#"{"mood":"balanced"}"#),
        400,
        "mood",
    );
    assert_error(&served.put("/api/mode", ""), 400, "JSON");

    // Limits: a body over 64 KiB, a head over 8 KiB.
    let big = format!(r#"{{"mode":"{}"}}"#, "x".repeat(70 * 1024));
    assert_error(&served.put("/api/mode", &big), 413, "larger than");
    let long = "y".repeat(9 * 1024);
    let r = served.engine.runtime.block_on(served.client.send(
        "GET",
        "/api/health",
        &[("x-long", &long)],
        Vec::new(),
    ));
    match r {
        Ok(r) => assert_error(&r, 431, "head is larger than 8192 bytes"),
        Err(e) => panic!("an oversize head gets an answer, not {e}"),
    }
    // Heads hyper cannot parse get a JSON error naming what was wrong, not its empty 400.
    for (raw, status, says) in [
        (
            &b"GET /api/health HTTP/1.1\r\nno colon here\r\n\r\n"[..],
            400,
            "malformed request head",
        ),
        (
            b"G(T /api/health HTTP/1.1\r\n\r\n",
            400,
            "malformed request head",
        ),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "HTTP/1.1 only"),
        (
            b"PUT /api/mode HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
            400,
            "two different content-length",
        ),
        (
            b"PUT /api/mode HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
            400,
            "must end with chunked",
        ),
    ] {
        let answer = wire::exchange(&served.socket, raw, b"");
        assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(raw));
        assert!(
            answer.error().contains(says),
            "{:?} for {}",
            answer.error(),
            String::from_utf8_lossy(raw)
        );
    }
    let many: String = (0..120).map(|i| format!("x-{i}: y\r\n")).collect();
    let answer = wire::exchange(
        &served.socket,
        format!("GET /api/health HTTP/1.1\r\n{many}\r\n").as_bytes(),
        b"",
    );
    assert_eq!(
        (
            answer.status,
            answer.error().contains("more than 100 header fields")
        ),
        (431, true)
    );

    // Unknown ids and bad ids.
    assert_error(
        &served.post("/api/proposals/999999/approve", ""),
        404,
        "999999",
    );
    assert_error(&served.post("/api/proposals/abc/approve", ""), 400, "abc");
    assert_error(
        &served.post("/api/proposals/999999/dismiss", ""),
        404,
        "999999",
    );
    assert_error(
        &served.post("/api/changes/424242/rollback", ""),
        404,
        "424242",
    );
    assert_error(
        &served.post("/api/proposals/%ff%00/approve", ""),
        400,
        "not a number",
    );
    assert_error(
        &served.post("/api/eliminate/no_such:thing", ""),
        404,
        "no_such:thing",
    );

    let r = served.post("/api/changes/rollback-all", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["batches"], json!([]));

    let before = json_of(&served.get("/api/health"))["seq"].as_u64().unwrap();
    let detection = json_of(&served.post("/api/optimize", ""));
    assert!(detection["seq"].as_u64().unwrap() > before);
    assert!(detection["bottlenecks"].is_array() && detection["proposals"].is_array());

    let report = json_of(&served.get("/api/report"));
    assert!(report.is_object());

    let r = served.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.content_type.starts_with("application/openmetrics-text"),
        "{}",
        r.content_type
    );
    assert!(
        r.text().contains("# TYPE ") && r.text().ends_with("# EOF\n"),
        "{}",
        r.text()
    );

    let r = served.get("/api/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), OPENAPI);

    // Unknown path, wrong method.
    assert_error(&served.get("/api/nothing"), 404, "/api/nothing");
    assert_error(&served.get("/"), 404, "no such path");
    let r = served.call(&served.client, "DELETE", "/api/mode", b"");
    assert_error(&r, 405, "GET, PUT");
    assert_error(&served.get("/api/optimize"), 405, "POST");

    // Stop: a bad body is refused, a good one reaches the service.
    assert_error(
        &served.post("/api/stop", r#"{"rollback":"yes"}"#),
        400,
        "rollback",
    );
    let r = served.post("/api/stop", r#"{"rollback":false}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["rollback"], false);
    assert_eq!(
        served.stops.try_recv().ok(),
        Some(StopRequest { rollback: false })
    );
    // Without a choice the service's rollback_on_exit decides.
    let r = served.post("/api/stop", "");
    assert_eq!(json_of(&r)["rollback"], true, "{}", r.text());
    assert_eq!(
        served.stops.try_recv().ok(),
        Some(StopRequest { rollback: true })
    );
    // Still serving after all that.
    assert_eq!(served.get("/api/health").status, 200);
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_never_taken() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/api.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file left by a dead engine: bound, then the listener closed.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let served = Served::start(quiet_config(), dir);
    assert_eq!(served.get("/api/health").status, 200);

    let mut config = quiet_config();
    config.api.socket = socket.clone();
    let second = served.engine.runtime.block_on(ApiServer::start(
        served.engine.handle.clone(),
        &config.api,
        None,
    ));
    let err = second
        .err()
        .expect("a live socket is not taken over")
        .to_string();
    assert!(err.contains("another engine"), "{err}");
    assert_eq!(
        served.get("/api/health").status,
        200,
        "the first still serves"
    );

    // A plain file in the socket's place is never deleted.
    let file = served.dir.path().join("not-a-socket");
    std::fs::write(&file, "data").unwrap();
    config.api.socket = file.clone();
    let err = served
        .engine
        .runtime
        .block_on(ApiServer::start(
            served.engine.handle.clone(),
            &config.api,
            None,
        ))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn tcp_needs_the_bearer_token_from_the_file_the_engine_creates() {
    let mut config = quiet_config();
    config.api.listen = Some("127.0.0.1:0".parse().unwrap());
    let served = Served::start(config, tempfile::tempdir().unwrap());
    let addr = served
        .server
        .as_ref()
        .and_then(|s| s.tcp)
        .expect("listening on TCP");
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let token_file = served.dir.path().join("state/api.token");
    let meta = std::fs::metadata(&token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));

    let none = Client::tcp(addr.to_string(), None);
    let wrong = Client::tcp(addr.to_string(), Some("0".repeat(64)));
    let right = Client::tcp(addr.to_string(), Some(token.clone()));
    for path in ["/api/health", "/api/metrics", "/api/nothing"] {
        assert_error(&served.call(&none, "GET", path, b""), 401, "token");
        assert_error(&served.call(&wrong, "GET", path, b""), 401, "token");
    }
    assert_error(
        &served.call(&none, "PUT", "/api/mode", br#"{"mode":"aggressive"}"#),
        401,
        "token",
    );
    assert_eq!(json_of(&served.get("/api/mode"))["mode"], "conservative");

    let r = served.call(&right, "GET", "/api/health", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = served.call(&right, "PUT", "/api/mode", br#"{"mode":"aggressive"}"#);
    assert_eq!(json_of(&r)["mode"], "aggressive");
    // The Unix socket needs no token.
    assert_eq!(served.get("/api/health").status, 200);

    // The token file is reused, not replaced, by the next start.
    drop(served);
}

fn shares(c: &Container) -> String {
    let raw = docker_ok(&["inspect", "-f", "{{.HostConfig.CpuShares}}", &c.id]);
    // Docker cannot clear shares back to "unset" (0): the kernel default 1024 stands for it.
    if raw == "0" { "1024".to_string() } else { raw }
}

fn batch_hog(name: &str) -> Container {
    Container::run(
        &unique(name),
        &[
            "--label",
            "sutazai.agent=1",
            "--label",
            "sutazai.class=batch",
        ],
        &["sh", "-c", "while :; do :; done"],
    )
}

fn wait_for_proposal(served: &Served, strategy: &str) -> Proposal {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let proposals: Vec<Proposal> = served.get("/api/proposals").json().unwrap();
        if let Some(p) = proposals
            .iter()
            .rev()
            .find(|p| p.fix.strategy == strategy && p.status.is_open() && p.fix.intents.len() >= 2)
        {
            return p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no open {strategy} proposal: {proposals:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn approve_applies_for_real_and_rollback_through_the_api_restores() {
    let a = batch_hog("api-hog-a");
    let b = batch_hog("api-hog-b");
    let before = (shares(&a), shares(&b));
    let mut config = test_config(300);
    config.detect.hold_ticks = 2;
    let served = Served::start(config, tempfile::tempdir().unwrap());

    let weight = wait_for_proposal(&served, "batch-cpu-weight");
    let r = served.post(&format!("/api/proposals/{}/approve", weight.id), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let applied: Proposal = r.json().unwrap();
    let ProposalStatus::Applied { batch } = applied.status else {
        panic!("not applied: {:?}", applied.status);
    };
    assert_eq!((shares(&a), shares(&b)), ("256".into(), "256".into()));
    let status = json_of(&served.get("/api/status"));
    assert!(status["applied_fixes"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["active_batches"].as_u64().unwrap() >= 1, "{status}");
    // Approving it again is a conflict: it is no longer open.
    assert_error(
        &served.post(&format!("/api/proposals/{}/approve", weight.id), ""),
        409,
        "applied",
    );

    let r = served.post(&format!("/api/changes/{batch}/rollback"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json_of(&r)["batches"], json!([batch]));
    assert_eq!((shares(&a), shares(&b)), before, "original shares back");
    assert_error(
        &served.post(&format!("/api/changes/{batch}/rollback"), ""),
        404,
        &batch.to_string(),
    );

    // Eliminate by bottleneck id: the strongest open proposal for it is applied.
    let detection = json_of(&served.post("/api/optimize", ""));
    let policy = wait_for_proposal(&served, "batch-scheduler-policy");
    let id = policy.bottleneck.id();
    assert!(
        detection["bottlenecks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["id"] == id.as_str())
            || served
                .get("/api/metrics")
                .json::<Snapshot>()
                .unwrap()
                .bottlenecks
                .iter()
                .any(|b| b.id() == id),
        "the bottleneck {id} is listed with its id"
    );
    let r = served.post(&format!("/api/eliminate/{id}"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let eliminated: Proposal = r.json().unwrap();
    assert!(
        matches!(eliminated.status, ProposalStatus::Applied { .. }),
        "{:?}",
        eliminated.status
    );
    assert_eq!(eliminated.bottleneck.id(), id);

    let r = served.post("/api/changes/rollback-all", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let snap: Snapshot = served.get("/api/metrics").json().unwrap();
    assert!(snap.changes.active.is_empty(), "{:?}", snap.changes.active);
    assert_eq!((shares(&a), shares(&b)), before, "original shares back");
}

/// The dashboard attached to a service renders snapshots it got as JSON: every synthetic
/// snapshot of the frame tests survives the trip.
#[test]
fn snapshots_roundtrip_through_json() {
    let samples = [
        common::empty(),
        common::small_host(),
        common::numa64(),
        common::with_containers(131),
        common::docker_unreachable(),
        common::with_active_changes(common::small_host()),
        common::with_proposal(common::small_host(), sutazai_top::model::Risk::Medium),
        common::with_sampler_error(common::small_host()),
        common::with_notice(common::small_host(), "hello", true),
    ];
    for snap in samples {
        let text = serde_json::to_string(&snap).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snap);
    }
}

/// The dashboard's view of a service: snapshots mirrored from the API, commands turned into
/// API calls, answers shown as the notice, `e` writing the service's report here.
#[test]
fn a_remote_handle_mirrors_the_engine_and_turns_commands_into_calls() {
    use sutazai_top::engine::Command;
    let served = Served::start(quiet_config(), tempfile::tempdir().unwrap());
    let reports = served.dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    let rt = &served.engine.runtime;
    let (mut remote, task) = rt
        .block_on(sutazai_top::api::remote::attach(
            served.client.clone(),
            (reports.clone(), sutazai_top::report::writer()),
        ))
        .expect("attaches");
    let wait = |remote: &mut sutazai_top::engine::EngineHandle,
                what: &str,
                pred: &dyn Fn(&Snapshot) -> bool| {
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if pred(&remote.snapshots.borrow_and_update()) {
                        return;
                    }
                    remote.snapshots.changed().await.expect("still attached");
                }
            })
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        })
    };
    let first = remote.snapshots.borrow().seq;
    wait(&mut remote, "newer snapshots", &|s| s.seq > first);

    let commands = remote.commands.clone();
    let send = |c: Command| rt.block_on(commands.send(c)).unwrap();
    send(Command::SetMode(sutazai_top::model::Mode::Aggressive));
    wait(&mut remote, "the service's mode", &|s| {
        s.mode == sutazai_top::model::Mode::Aggressive
    });
    assert_eq!(json_of(&served.get("/api/mode"))["mode"], "aggressive");

    send(Command::Apply(987654));
    wait(&mut remote, "the refusal as a notice", &|s| {
        s.notice
            .as_ref()
            .is_some_and(|n| n.is_error && n.text.contains("no proposal 987654"))
    });

    send(Command::ExportReport);
    wait(&mut remote, "the report notice", &|s| {
        s.notice
            .as_ref()
            .is_some_and(|n| !n.is_error && n.text.contains("report written to"))
    });
    // Both reports, as `e` writes them in a local dashboard, 0600.
    let mut written: Vec<_> = std::fs::read_dir(&reports)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    written.sort();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(
        written[0].extension().is_some_and(|e| e == "html"),
        "{written:?}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&written[1]).unwrap()).unwrap();
    assert!(report["host"].is_object(), "{report}");
    for file in &written {
        assert_eq!(
            std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // Quit detaches; the engine keeps serving.
    send(Command::Quit);
    let ended = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await })
        .expect("the remote tasks end")
        .unwrap();
    assert_eq!(ended, sutazai_top::api::remote::Detached::Quit);
    assert_eq!(served.get("/api/health").status, 200);
}

/// A balancer backend: answers every request with `body`, one request per connection, on a
/// thread of its own; stopped when dropped.
struct TinyBackend {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TinyBackend {
    fn start(body: &str) -> TinyBackend {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        TinyBackend {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TinyBackend {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the blocking accept so the thread sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One GET through the proxy: (status code, body).
fn get_through(proxy: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn balancer_backends_are_added_and_removed_through_the_api() {
    let mut config = quiet_config();
    config.balancer.enabled = true;
    config.balancer.listen = "127.0.0.1:0".parse().unwrap();
    let served = Served::start(config, tempfile::tempdir().unwrap());
    let proxy = served
        .engine
        .handle
        .balancer
        .as_ref()
        .expect("the balancer runs")
        .local_addr();

    let stats = served.get("/api/balancer");
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats = json_of(&stats);
    assert_eq!(stats["listen"], proxy.to_string());
    assert_eq!(stats["pools"][0]["name"], "default");

    let backend = TinyBackend::start("from-the-tiny-backend");
    let id = format!("127.0.0.1:{}", backend.port);
    let added = served.post(
        "/api/balancer/backends",
        &json!({"host": "127.0.0.1", "port": backend.port, "weight": 2}).to_string(),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(
        json_of(&added),
        json!({"backend": id.clone(), "pools": ["default"]})
    );
    assert_eq!(
        get_through(proxy, "/anything"),
        (200, "from-the-tiny-backend".to_string())
    );

    // The next tick's snapshot shows it, from the API, with its weight.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = json_of(&served.get("/api/balancer"));
        let listed = stats["pools"][0]["backends"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(b) = listed.iter().find(|b| b["id"] == id.as_str()) {
            assert_eq!(b["source"]["kind"], "api");
            assert_eq!(b["weight"], 2);
            assert!(b["requests_total"].as_u64().unwrap_or(0) >= 1, "{b}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in GET /api/balancer: {stats}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let again = served.post(
        "/api/balancer/backends",
        &json!({"host": "127.0.0.1", "port": backend.port}).to_string(),
    );
    assert_error(&again, 409, &id);
    for (body, field) in [
        (json!({"host": "127.0.0.1", "port": "80"}), "port"),
        (json!({"host": "127.0.0.1", "port": 0}), "port"),
        (json!({"port": 80}), "host"),
        (
            json!({"host": "127.0.0.1", "port": 80, "weight": 0}),
            "weight",
        ),
        (
            json!({"host": "127.0.0.1", "port": 80, "max_connections": -1}),
            "max_connections",
        ),
        (
            json!({"host": "127.0.0.1", "port": 80, "pool": "nope"}),
            "pool",
        ),
        (
            json!({"host": "127.0.0.1", "port": 80, "colour": 1}),
            "colour",
        ),
    ] {
        let r = served.post("/api/balancer/backends", &body.to_string());
        assert_error(&r, 400, field);
    }

    // Drain it: no new requests (the only backend, so 503), then back in with weight 5.
    let patch = |body: serde_json::Value| {
        served.call(
            &served.client,
            "PATCH",
            &format!("/api/balancer/backends/{id}"),
            body.to_string().as_bytes(),
        )
    };
    let drained = patch(json!({"drain": true}));
    assert_eq!(drained.status, 200, "{}", drained.text());
    assert_eq!(
        json_of(&drained),
        json!({"backend": id.clone(), "pools": ["default"]})
    );
    assert_eq!(get_through(proxy, "/anything").0, 503);
    let back = patch(json!({"drain": false, "weight": 5}));
    assert_eq!(back.status, 200, "{}", back.text());
    assert_eq!(
        get_through(proxy, "/anything"),
        (200, "from-the-tiny-backend".to_string())
    );
    for (body, needle) in [
        (json!({}), "nothing to change"),
        (json!({"weight": 0}), "weight"),
        (json!({"drain": "yes"}), "drain"),
        (json!({"weight": 2, "colour": 1}), "colour"),
        (json!({"drain": true, "pool": "nope"}), "pool"),
    ] {
        assert_error(&patch(body), 400, needle);
    }
    let unknown = served.call(
        &served.client,
        "PATCH",
        "/api/balancer/backends/127.0.0.1:9",
        br#"{"drain": true}"#,
    );
    assert_error(&unknown, 404, "127.0.0.1:9");

    let removed = served.call(
        &served.client,
        "DELETE",
        &format!("/api/balancer/backends/{id}"),
        b"",
    );
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(
        json_of(&removed),
        json!({"backend": id.clone(), "pools": ["default"]})
    );
    let gone = served.call(
        &served.client,
        "DELETE",
        &format!("/api/balancer/backends/{id}"),
        b"",
    );
    assert_error(&gone, 404, &id);
    let malformed = served.call(&served.client, "DELETE", "/api/balancer/backends/nope", b"");
    assert_error(&malformed, 400, "host:port");
    // No backend left: the proxy answers 503 at once rather than hanging.
    assert_eq!(get_through(proxy, "/anything").0, 503);
}

#[test]
fn with_the_balancer_off_its_routes_say_so() {
    let served = Served::start(quiet_config(), tempfile::tempdir().unwrap());
    assert_error(&served.get("/api/balancer"), 404, "balancer");
    let add = served.post(
        "/api/balancer/backends",
        &json!({"host": "127.0.0.1", "port": 80}).to_string(),
    );
    assert_error(&add, 409, "balancer");
    let remove = served.call(
        &served.client,
        "DELETE",
        "/api/balancer/backends/127.0.0.1:80",
        b"",
    );
    assert_error(&remove, 409, "balancer");
    let change = served.call(
        &served.client,
        "PATCH",
        "/api/balancer/backends/127.0.0.1:80",
        br#"{"drain": true}"#,
    );
    assert_error(&change, 409, "balancer");
}
