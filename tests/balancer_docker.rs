//! Docker discovery of balancer backends, end to end: the real engine, the real daemon, a
//! busybox httpd on the host network labelled `sutazai.backend.port`, traffic through the
//! proxy, and the backend gone once the container is.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use support::{Container, RunningEngine, docker_ok, ensure_test_image, test_config, unique};
use sutazai_balancer::{BackendSnapshot, BackendSource, BackendSpec};
use sutazai_top::model::Snapshot;

const WAIT: Duration = Duration::from_secs(20);

/// Everything the library logs in this test binary, to check what discovery reports.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

/// One test at a time: every engine discovers every labelled container, so a second engine
/// would add the other test's containers and log its reports too.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

/// The engine with the balancer on a free loopback port and Docker discovery on; told to
/// quit when dropped.
struct Engine(RunningEngine);

impl Engine {
    fn start() -> Engine {
        let mut config = test_config(300);
        config.balancer.enabled = true;
        config.balancer.listen = "127.0.0.1:0".parse().unwrap();
        config.balancer.health.interval_ms = 500;
        let mut engine = RunningEngine::start_managing(config);
        engine.wait_for(WAIT, "a first tick", |s| s.seq >= 1);
        Engine(engine)
    }

    fn proxy(&self) -> SocketAddr {
        self.0
            .handle
            .balancer
            .as_ref()
            .expect("the balancer runs")
            .local_addr()
    }

    fn wait_backends(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&[BackendSnapshot]) -> bool,
    ) -> Arc<Snapshot> {
        self.0.wait_for(WAIT, what, |s| pred(&backends(s)))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let commands = self.0.handle.commands.clone();
        let _ = self
            .0
            .runtime
            .block_on(commands.send(sutazai_top::engine::Command::Quit));
    }
}

fn backends(snap: &Snapshot) -> Vec<BackendSnapshot> {
    snap.balancer
        .iter()
        .flat_map(|b| &b.pools)
        .flat_map(|p| p.backends.clone())
        .collect()
}

fn from_container(b: &BackendSnapshot, name: &str) -> bool {
    b.source
        == BackendSource::Docker {
            container: name.to_string(),
        }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 GET through `addr`; (status line, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// busybox httpd on the host network, serving `dir` on 127.0.0.1:`port`, with `labels`.
fn httpd(name: &str, port: u16, dir: &std::path::Path, labels: &[String]) -> Container {
    ensure_test_image();
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", name])
        .output();
    let volume = format!("{}:/www:ro", dir.display());
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        name,
        "-v",
        &volume,
    ];
    for label in labels {
        args.extend(["--label", label.as_str()]);
    }
    args.extend([
        support::test_image(),
        "httpd",
        "-f",
        "-p",
        &listen,
        "-h",
        "/www",
    ]);
    let id = docker_ok(&args);
    Container {
        name: name.to_string(),
        id,
    }
}

#[test]
fn a_labelled_host_network_container_serves_through_the_proxy_until_removed() {
    let _serial = serial();
    logs();
    let mut engine = Engine::start();
    let proxy = engine.proxy();

    // A backend from the API: discovery must never take it away.
    let api_port = free_port();
    engine
        .0
        .handle
        .balancer
        .as_ref()
        .unwrap()
        .add_backend(BackendSpec::new("127.0.0.1", api_port))
        .unwrap();

    let www = tempfile::tempdir().unwrap();
    let token = format!("served-by-docker-{}", std::process::id());
    std::fs::write(www.path().join("index.html"), &token).unwrap();
    std::fs::write(www.path().join("health"), "ok").unwrap();
    let port = free_port();
    let name = unique("lb-httpd");
    let container = httpd(
        &name,
        port,
        www.path(),
        &[
            format!("sutazai.backend.port={port}"),
            "sutazai.backend.weight=3".to_string(),
            "sutazai.backend.max_connections=7".to_string(),
        ],
    );

    let snap = engine.wait_backends("the container as a backend", |bs| {
        bs.iter().any(|b| from_container(b, &name))
    });
    let found: Vec<BackendSnapshot> = backends(&snap)
        .into_iter()
        .filter(|b| from_container(b, &name))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].host.as_str(), found[0].port), ("127.0.0.1", port));
    assert_eq!((found[0].weight, found[0].max_connections), (3, 7));

    // Take the API backend (nothing listens there) out of the way, then ask the proxy:
    // only the container can answer.
    let balancer = engine.0.handle.balancer.clone().unwrap();
    assert!(balancer.remove_backend("", "127.0.0.1", api_port).unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        match get(proxy, "/index.html") {
            Ok((status, body)) if status.contains(" 200 ") && body == token => break,
            other => assert!(
                Instant::now() < deadline,
                "no answer from the container through the proxy: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // An API backend added now stays through the removal below.
    balancer
        .add_backend(BackendSpec::new("127.0.0.1", api_port))
        .unwrap();
    container.remove();
    let snap = engine.wait_backends("the container's backend gone", |bs| {
        !bs.iter().any(|b| from_container(b, &name))
    });
    assert!(
        backends(&snap)
            .iter()
            .any(|b| b.port == api_port && b.source == BackendSource::Api),
        "the API backend stays: {:?}",
        backends(&snap)
    );
    assert!(
        log_text().contains("Docker backend added"),
        "{}",
        log_text()
    );
}

#[test]
fn a_bad_label_is_reported_once_and_ignored() {
    let _serial = serial();
    logs();
    let mut engine = Engine::start();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("health"), "ok").unwrap();
    let name = unique("lb-bad-label");
    let port = free_port();
    let _container = httpd(
        &name,
        port,
        www.path(),
        &["sutazai.backend.port=abc".to_string()],
    );
    let needle = format!("container {name}: label sutazai.backend.port = \"abc\"");
    let deadline = Instant::now() + WAIT;
    while !log_text().contains(&needle) {
        assert!(
            Instant::now() < deadline,
            "no report naming the container and the label; logs:\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Several more ticks and membership events: still one report, and no backend.
    let seq = engine.0.latest().seq;
    let snap = engine
        .0
        .wait_for(WAIT, "five more ticks", |s| s.seq >= seq + 5);
    assert_eq!(log_text().matches(&needle).count(), 1, "{}", log_text());
    assert!(
        !backends(&snap).iter().any(|b| from_container(b, &name)),
        "{:?}",
        backends(&snap)
    );
    assert!(
        !backends(&snap).iter().any(|b| b.port == port),
        "{:?}",
        backends(&snap)
    );
    // The operator sees why in the snapshot (the pane, GET /api/balancer), not only the log.
    let skipped = &snap
        .balancer
        .as_ref()
        .expect("the balancer runs")
        .docker_skipped;
    assert!(
        skipped.iter().any(|reason| reason.contains(&needle)),
        "{skipped:?}"
    );
}

/// `report`, `snapshot` and `bench` start engines that only observe: with the balancer
/// enabled in the config they must not bind its port (a running service already has it).
#[test]
fn an_engine_that_only_observes_serves_no_balancer() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let mut config = test_config(300);
    config.docker.enabled = false;
    config.balancer.enabled = true;
    config.balancer.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut engine = RunningEngine::start(config);
    engine.wait_for(WAIT, "two ticks", |s| s.seq >= 2);
    assert!(engine.handle.balancer.is_none());
    assert!(engine.latest().balancer.is_none());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on the balancer's port"
    );
}

/// Enabled but unable to start (its port is taken): the header says so, with the reason,
/// instead of a pane that reads as if the balancer were merely off.
#[test]
fn a_balancer_that_cannot_start_says_why_in_the_header() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let mut config = test_config(300);
    config.docker.enabled = false;
    config.balancer.enabled = true;
    config.balancer.listen = taken.local_addr().expect("its address");
    let mut engine = RunningEngine::start_managing(config);
    let snap = engine.wait_for(WAIT, "a first tick", |s| s.seq >= 1);
    assert!(engine.handle.balancer.is_none());
    let notice = snap.notice.as_ref().expect("a notice");
    assert!(notice.is_error, "{notice:?}");
    assert!(
        notice.text.contains("load balancer not started")
            && notice.text.contains("cannot listen on"),
        "{}",
        notice.text
    );
}
