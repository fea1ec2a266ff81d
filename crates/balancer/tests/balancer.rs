//! The load balancer against real backends: small hyper servers on 127.0.0.1 in this
//! process, the proxy started with `Balancer::start` on its own runtime.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use sutazai_balancer::config::{BalancerBackendConfig, BalancerConfig, BalancerPoolConfig};
use sutazai_balancer::{BackendSpec, BackendUpdate, Balancer, BalancerSnapshot, CircuitState};

/// A backend: answers its name, counts the requests (health checks apart), can be slowed,
/// killed (listener and connections dropped) and revived on the same port.
struct TestBackend {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    /// Answer this status instead of 200 (0: 200).
    status: Arc<AtomicU16>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl TestBackend {
    async fn start(name: &'static str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = TestBackend {
            name,
            addr: listener.local_addr().unwrap(),
            hits: Arc::default(),
            delay_ms: Arc::default(),
            status: Arc::default(),
            tasks: Arc::default(),
        };
        backend.serve(listener);
        backend
    }

    fn serve(&self, listener: TcpListener) {
        let (name, hits, delay, status, tasks) = (
            self.name,
            self.hits.clone(),
            self.delay_ms.clone(),
            self.status.clone(),
            self.tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (hits, delay, status) = (hits.clone(), delay.clone(), status.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (hits, delay, status) = (hits.clone(), delay.clone(), status.clone());
                    async move {
                        let mut response = answer(name, req, &hits, &delay).await;
                        let code = status.load(Ordering::SeqCst);
                        if code != 0 && response.status() == StatusCode::OK {
                            *response.status_mut() =
                                StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let conn = tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn revive(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn config(&self, weight: u32, pool: &str) -> BalancerBackendConfig {
        BalancerBackendConfig {
            host: "127.0.0.1".to_string(),
            port: self.addr.port(),
            weight,
            max_connections: 1024,
            pool: pool.to_string(),
        }
    }
}

async fn answer(
    name: &str,
    req: Request<Incoming>,
    hits: &AtomicUsize,
    delay: &AtomicU64,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        // Health checks are not requests (and a failing backend stays "up" to them).
        let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
        response
            .headers_mut()
            .insert("x-health", hyper::header::HeaderValue::from_static("1"));
        return response;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == "/echo" {
        return echo(req).await;
    }
    if req.uri().path() == "/big" {
        return Response::new(Full::new(Bytes::from(vec![b'b'; 16 << 20])));
    }
    let ms = delay.load(Ordering::SeqCst);
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let xff = req
        .headers()
        .get("x-forwarded-for")
        .cloned()
        .unwrap_or(hyper::header::HeaderValue::from_static("-"));
    let mut response = Response::new(Full::new(Bytes::from(name.to_string())));
    response.headers_mut().insert("x-seen-forwarded-for", xff);
    response
}

/// The request's header names (sorted, comma-separated) in `x-seen-headers` and its body
/// as the answer's; the answer carries hop-by-hop headers of its own.
async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut names: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
    names.sort();
    let Ok(body) = req.into_body().collect().await else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"body broke")));
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return response;
    };
    let mut response = Response::new(Full::new(body.to_bytes()));
    let headers = response.headers_mut();
    headers.insert("x-seen-headers", names.join(",").parse().unwrap());
    headers.insert("connection", "x-backend-private".parse().unwrap());
    headers.insert("x-backend-private", "1".parse().unwrap());
    headers.insert("proxy-authenticate", "Basic".parse().unwrap());
    headers.insert("x-backend-public", "1".parse().unwrap());
    response
}

/// A config for the test: listen on a free port, checks rare unless a test wants them.
fn config(algorithm: &str, backends: Vec<BalancerBackendConfig>) -> BalancerConfig {
    let mut config = BalancerConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().expect("an address"),
        algorithm: algorithm.parse().expect("an algorithm"),
        backends,
        ..BalancerConfig::default()
    };
    config.health.interval_ms = 60_000;
    config
}

struct Proxy(Arc<Balancer>);

impl Drop for Proxy {
    fn drop(&mut self) {
        // Joins the proxy's thread; the tests run on a multi-thread runtime.
        tokio::task::block_in_place(|| self.0.shutdown());
    }
}

fn start(config: &BalancerConfig) -> Proxy {
    Proxy(Balancer::start(config).expect("balancer starts"))
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: String,
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", "proxy.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn counts(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in names {
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn backend_of(snap: &BalancerSnapshot, port: u16) -> &sutazai_balancer::BackendSnapshot {
    snap.pools
        .iter()
        .flat_map(|p| &p.backends)
        .find(|b| b.port == port)
        .expect("backend in the snapshot")
}

/// Backends "a", "b" and "c", answering at once.
async fn three_backends() -> [TestBackend; 3] {
    [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_an_exact_rotation_and_forwards_the_client() {
    let backends = three_backends().await;
    let proxy = start(&config(
        "round-robin",
        backends.iter().map(|b| b.config(1, "")).collect(),
    ));
    let addr = proxy.0.local_addr();
    let mut order = Vec::new();
    for _ in 0..30 {
        let answer = get(addr, "/work", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["x-seen-forwarded-for"], "127.0.0.1");
        order.push(answer.body);
    }
    for window in order.chunks(3) {
        let mut names = window.to_vec();
        names.sort();
        assert_eq!(names, ["a", "b", "c"], "{order:?}");
    }
    for backend in &backends {
        assert_eq!(backend.hits(), 10);
    }
    let snap = proxy.0.snapshot();
    assert_eq!(snap.requests_total, 30);
    assert_eq!(
        backend_of(&snap, backends[0].addr.port()).requests_total,
        10
    );
    assert!(
        backend_of(&snap, backends[0].addr.port())
            .latency_p50_ms
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_requests() {
    let light = TestBackend::start("light").await;
    let heavy = TestBackend::start("heavy").await;
    let proxy = start(&config(
        "weighted-round-robin",
        vec![light.config(1, ""), heavy.config(3, "")],
    ));
    for _ in 0..80 {
        assert_eq!(
            get(proxy.0.local_addr(), "/", &[]).await.status,
            StatusCode::OK
        );
    }
    assert!((18..=22).contains(&light.hits()), "light {}", light.hits());
    assert!((58..=62).contains(&heavy.hits()), "heavy {}", heavy.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_slow_backend() {
    // Four clients in a loop: the slow one holds its requests longer.
    let (slow, fast) = hits_of_two("least-connections", 4, (150, 1), (0, 1)).await;
    assert!(fast > 5 * slow, "slow {slow}, fast {fast}");
}

/// `clients` clients in a loop for 1.5 s against `algorithm` over two backends, each
/// `(answer delay ms, weight)`; the hits each backend got.
async fn hits_of_two(
    algorithm: &str,
    clients: usize,
    a: (u64, u32),
    b: (u64, u32),
) -> (usize, usize) {
    let first = TestBackend::start("a").await;
    first.delay_ms.store(a.0, Ordering::SeqCst);
    let second = TestBackend::start("b").await;
    second.delay_ms.store(b.0, Ordering::SeqCst);
    let proxy = start(&config(
        algorithm,
        vec![first.config(a.1, ""), second.config(b.1, "")],
    ));
    let addr = proxy.0.local_addr();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    (first.hits(), second.hits())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_learns_which_backend_is_slow() {
    // Both start at the default 30 ms estimate; the slow one's 100 ms answers raise its
    // estimate at once (peak), so two-choice picks leave it nearly alone.
    let (slow, fast) = hits_of_two("peak-ewma", 4, (100, 1), (0, 1)).await;
    assert!(fast > 10 * slow.max(1), "slow {slow}, fast {fast}");
    assert!(slow >= 1, "the slow backend was tried at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_least_connections_keeps_in_flight_in_proportion_to_weight() {
    // Equally slow backends, weights 3:1, eight clients always waiting: the in-flight
    // counts settle at 6 and 2, so the hits go about 3:1 (plain least-connections: 1:1).
    let (heavy, light) = hits_of_two("weighted-least-connections", 8, (40, 3), (40, 1)).await;
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        (2.4..3.6).contains(&ratio),
        "{heavy} vs {light}: {ratio:.2}"
    );
    let (one, other) = hits_of_two("least-connections", 8, (40, 3), (40, 1)).await;
    let ratio = one as f64 / other.max(1) as f64;
    assert!(
        (0.75..1.33).contains(&ratio),
        "unweighted: {one} vs {other}: {ratio:.2}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_by_header_and_by_cookie() {
    let backends = three_backends().await;
    let proxy = start(&config(
        "consistent-hash",
        backends.iter().map(|b| b.config(1, "")).collect(),
    ));
    let addr = proxy.0.local_addr();
    let mut homes = Vec::new();
    for session in 0..24 {
        let id = format!("user-{session}");
        let first = get(addr, "/", &[("x-session-id", &id)]).await.body;
        for _ in 0..3 {
            assert_eq!(get(addr, "/", &[("x-session-id", &id)]).await.body, first);
        }
        let cookie = format!("theme=dark; session={id}; lang=en");
        let by_cookie = get(addr, "/", &[("cookie", &cookie)]).await.body;
        for _ in 0..3 {
            assert_eq!(get(addr, "/", &[("cookie", &cookie)]).await.body, by_cookie);
        }
        assert_eq!(by_cookie, first, "the same session by header and by cookie");
        homes.push(first);
    }
    // The sessions spread: no backend has them all.
    let spread = counts(homes);
    assert!(spread.len() >= 2, "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_get_and_comes_back() {
    let backends = three_backends().await;
    let mut cfg = config(
        "round-robin",
        backends.iter().map(|b| b.config(1, "")).collect(),
    );
    cfg.health.interval_ms = 200;
    cfg.breaker.open_ms = 300;
    cfg.outlier.base_ejection_ms = 300;
    cfg.outlier.max_ejection_ms = 600;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let victim = &backends[1];
    for i in 0..60 {
        if i == 15 {
            victim.kill();
        }
        let answer = get(addr, "/", &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
    }
    let snap = proxy.0.snapshot();
    let gone = backend_of(&snap, victim.addr.port());
    assert!(gone.errors_total >= 1 && gone.errors_total <= 5, "{gone:?}");
    assert!(snap.retries_total >= 1, "{snap:?}");
    let hits_when_dead = victim.hits();
    victim.revive().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while victim.hits() == hits_when_dead {
        assert!(
            Instant::now() < deadline,
            "the revived backend got no request in 5 s"
        );
        assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_circuit_lets_exactly_one_probe_through() {
    let steady = TestBackend::start("steady").await;
    let flaky = TestBackend::start("flaky").await;
    let mut cfg = config(
        "round-robin",
        vec![steady.config(1, ""), flaky.config(1, "")],
    );
    cfg.breaker.failure_threshold = 2;
    cfg.breaker.open_ms = 400;
    cfg.outlier.consecutive_failures = 1000;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    flaky.kill();
    for _ in 0..6 {
        assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
    }
    let snap = proxy.0.snapshot();
    assert_eq!(
        backend_of(&snap, flaky.addr.port()).circuit,
        CircuitState::Open,
        "{snap:?}"
    );
    // Back, but slow: its probe is still under way while the next requests arrive.
    flaky.delay_ms.store(400, Ordering::SeqCst);
    flaky.revive().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = flaky.hits();
    let burst: Vec<_> = (0..10)
        .map(|_| tokio::spawn(async move { get(addr, "/", &[]).await.status }))
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(flaky.hits() - before, 1, "exactly one probe");
    // Only the probe's own answer can close a half-open circuit.
    assert_eq!(
        backend_of(&proxy.0.snapshot(), flaky.addr.port()).circuit,
        CircuitState::Closed
    );
    // The probe succeeded: the circuit is closed and the backend takes its share again.
    flaky.delay_ms.store(0, Ordering::SeqCst);
    let before = flaky.hits();
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(flaky.hits() - before, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backends_queue_then_503_with_retry_after() {
    let only = TestBackend::start("only").await;
    only.delay_ms.store(300, Ordering::SeqCst);
    let mut backend = only.config(1, "");
    backend.max_connections = 1;
    let mut cfg = config("round-robin", vec![backend]);
    cfg.max_queue = 1;
    cfg.queue_timeout_ms = 2000;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let first = tokio::spawn(async move { get(addr, "/", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = tokio::spawn(async move { get(addr, "/", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let rejected = get(addr, "/", &[]).await;
    assert_eq!(rejected.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejected.headers["retry-after"], "2");
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(
        queued.await.unwrap(),
        StatusCode::OK,
        "the queued request is served"
    );

    // A short queue timeout: the waiting request gets 503 when it runs out.
    let mut cfg = cfg.clone();
    cfg.queue_timeout_ms = 100;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let first = tokio::spawn(async move { get(addr, "/", &[]).await.status });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let timed_out = get(addr, "/", &[]).await;
    assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(timed_out.headers["retry-after"], "1");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_millis(250),
        "{waited:?}"
    );
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert!(proxy.0.snapshot().rejected_total >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_is_503_at_once() {
    // No backend at all.
    let proxy = start(&config("round-robin", Vec::new()));
    let started = Instant::now();
    let answer = get(proxy.0.local_addr(), "/", &[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_millis(200));

    // Two backends whose ports nobody listens on, found down by the checks.
    let dead = [TestBackend::start("x").await, TestBackend::start("y").await];
    for backend in &dead {
        backend.kill();
    }
    let mut cfg = config("peak-ewma", dead.iter().map(|b| b.config(1, "")).collect());
    cfg.health.interval_ms = 100;
    cfg.health.fall = 1;
    let proxy = start(&cfg);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let answer = get(proxy.0.local_addr(), "/", &[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(200));
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The peer may answer and close before all of an oversized request is written.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_slow_clients_are_refused() {
    let only = TestBackend::start("only").await;
    let mut cfg = config("round-robin", vec![only.config(1, "")]);
    cfg.header_timeout_ms = 300;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();

    let answer = raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = raw(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // Half a request line, then nothing: cut by the header timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow client was not cut");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert_eq!(only.hits(), 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(proxy.0.snapshot().bad_requests_total >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_is_proxied() {
    let only = TestBackend::start("only").await;
    let proxy = start(&config("round-robin", vec![only.config(1, "")]));
    let stream = TcpStream::connect(proxy.0.local_addr()).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = Request::get("http://proxy.test/h2")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), hyper::Version::HTTP_2);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"only");
    }
    assert_eq!(only.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_backend_finishes_its_requests_and_takes_no_new_ones() {
    let slow = TestBackend::start("slow").await;
    slow.delay_ms.store(400, Ordering::SeqCst);
    let other = TestBackend::start("other").await;
    let proxy = start(&config(
        "weighted-round-robin",
        vec![slow.config(1, ""), other.config(1, "")],
    ));
    let addr = proxy.0.local_addr();
    let port = slow.addr.port();
    // A request under way on the slow backend when the drain starts.
    let under_way = tokio::spawn(async move {
        loop {
            let answer = get(addr, "/", &[]).await;
            if answer.body == "slow" {
                return answer.status;
            }
        }
    });
    wait_for(
        "a request in flight on the slow backend",
        Duration::from_secs(5),
        || in_flight(&proxy, port) == 1,
    )
    .await;
    let drain = BackendUpdate {
        drain: Some(true),
        ..BackendUpdate::default()
    };
    assert!(
        proxy
            .0
            .change_backend("", "127.0.0.1", port, drain)
            .unwrap()
    );
    let hits_before = slow.hits();
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await.body, "other");
    }
    assert_eq!(
        under_way.await.unwrap(),
        StatusCode::OK,
        "the one under way finished"
    );
    assert_eq!(slow.hits(), hits_before, "no new request reached it");
    let shown = backend_of(&proxy.0.snapshot(), port).clone();
    assert!(shown.draining, "{shown:?}");

    // Back in, with weight 3: the rotation follows the new weights at once.
    slow.delay_ms.store(0, Ordering::SeqCst);
    let back = BackendUpdate {
        weight: Some(3),
        drain: Some(false),
    };
    assert!(proxy.0.change_backend("", "127.0.0.1", port, back).unwrap());
    let (slow_before, other_before) = (slow.hits(), other.hits());
    for _ in 0..40 {
        assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
    }
    assert_eq!(
        (slow.hits() - slow_before, other.hits() - other_before),
        (30, 10)
    );
    let bad = BackendUpdate {
        weight: Some(0),
        drain: None,
    };
    let refused = proxy.0.change_backend("", "127.0.0.1", port, bad);
    assert!(refused.unwrap_err().to_string().contains("weight"));
    assert!(!proxy.0.change_backend("", "127.0.0.1", 9, back).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_are_added_and_removed_at_run_time() {
    let first = TestBackend::start("first").await;
    let second = TestBackend::start("second").await;
    let proxy = start(&config("round-robin", vec![first.config(1, "")]));
    let addr = proxy.0.local_addr();
    proxy
        .0
        .add_backend(BackendSpec::new("127.0.0.1", second.addr.port()))
        .unwrap();
    let duplicate = proxy
        .0
        .add_backend(BackendSpec::new("127.0.0.1", second.addr.port()));
    assert!(duplicate.unwrap_err().to_string().contains("already"));
    // The same server under another name is the same backend; 0.0.0.0 is no target at all.
    let alias = proxy
        .0
        .add_backend(BackendSpec::new("127.1", second.addr.port()))
        .unwrap_err()
        .to_string();
    assert!(
        alias.contains("already") && alias.contains("as 127.0.0.1"),
        "{alias}"
    );
    let any = proxy
        .0
        .add_backend(BackendSpec::new("0.0.0.0", second.addr.port()))
        .unwrap_err()
        .to_string();
    assert!(any.contains("not one to connect to"), "{any}");
    let mut elsewhere = BackendSpec::new("127.0.0.1", second.addr.port());
    elsewhere.pool = "nowhere".to_string();
    assert!(
        proxy
            .0
            .add_backend(elsewhere)
            .unwrap_err()
            .to_string()
            .contains("nowhere")
    );
    let mut bad = BackendSpec::new("127.0.0.1", 9);
    bad.weight = 0;
    assert!(
        proxy
            .0
            .add_backend(bad)
            .unwrap_err()
            .to_string()
            .contains("weight")
    );
    for _ in 0..10 {
        get(addr, "/", &[]).await;
    }
    assert_eq!((first.hits(), second.hits()), (5, 5));
    assert!(
        proxy
            .0
            .remove_backend("", "127.0.0.1", second.addr.port())
            .unwrap()
    );
    assert!(
        !proxy
            .0
            .remove_backend("default", "127.0.0.1", second.addr.port())
            .unwrap()
    );
    for _ in 0..10 {
        assert_eq!(get(addr, "/", &[]).await.body, "first");
    }
    let snap = proxy.0.snapshot();
    assert_eq!(snap.pools[0].backends.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_types_go_to_their_pools() {
    let general = TestBackend::start("general").await;
    let compute = TestBackend::start("compute").await;
    let embed = TestBackend::start("embed").await;
    let mut cfg = config(
        "round-robin",
        vec![
            general.config(1, ""),
            compute.config(1, "compute"),
            embed.config(1, "embed"),
        ],
    );
    cfg.pools = vec![
        BalancerPoolConfig {
            name: "compute".to_string(),
            algorithm: Some(sutazai_balancer::pick::Algorithm::LeastConnections),
            header: "x-request-type: compute".to_string(),
            path_prefix: String::new(),
        },
        BalancerPoolConfig {
            name: "embed".to_string(),
            algorithm: None,
            header: String::new(),
            path_prefix: "/v1/embed".to_string(),
        },
    ];
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    assert_eq!(get(addr, "/chat", &[]).await.body, "general");
    assert_eq!(
        get(addr, "/chat", &[("x-request-type", "compute")])
            .await
            .body,
        "compute"
    );
    assert_eq!(
        get(addr, "/chat", &[("x-request-type", "light")])
            .await
            .body,
        "general"
    );
    assert_eq!(get(addr, "/v1/embed/texts", &[]).await.body, "embed");
    let snap = proxy.0.snapshot();
    let rules: Vec<_> = snap
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.rule.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            ("default", "default"),
            ("compute", "header x-request-type: compute"),
            ("embed", "path /v1/embed*")
        ]
    );
    assert_eq!(snap.pools[1].algorithm, "least-connections");
}

#[test]
fn bad_balancer_config_is_named() {
    #[derive(serde::Deserialize)]
    struct Root {
        balancer: BalancerConfig,
    }
    for (text, says) in [
        ("[balancer]\nalgorithm = \"random\"\n", "random"),
        ("[balancer]\nlisten = \"nowhere\"\n", "listen"),
        ("[balancer]\nworker_threads = 0\n", "worker_threads = 0"),
        ("[balancer]\nbusy_poll_us = 5000\n", "busy_poll_us = 5000"),
        (
            "[balancer]\n[[balancer.backends]]\nhost = \"h\"\nport = 1\npool = \"gpu\"\n",
            "balancer.backends[0].pool",
        ),
        (
            "[balancer]\n[[balancer.backends]]\nhost = \"h\"\nport = 1\nweight = 0\n",
            "weight",
        ),
        (
            "[balancer]\n[[balancer.pools]]\nname = \"p\"\nheader = \"no colon\"\n",
            "balancer.pools[0].header",
        ),
        (
            "[balancer]\n[[balancer.pools]]\nname = \"p\"\n",
            "neither header nor path_prefix",
        ),
    ] {
        // A bad value is refused while parsing; rules across keys by `problem`.
        let err = match toml::from_str::<Root>(text) {
            Err(err) => err.to_string(),
            Ok(root) => root.balancer.problem().expect("a problem"),
        };
        assert!(err.contains(says), "{text}: {err}");
    }
}

/// Busy polling is on by default with one thread, says its window, polls, and is off when
/// configured so or when the runtime has several threads (the poller needs one thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_is_on_with_one_thread_only() {
    let backends = three_backends().await;
    let members = || backends.iter().map(|b| b.config(1, "")).collect();
    let mut cases = Vec::new();
    for (threads, busy_poll_us) in [(1, None), (1, Some(0)), (1, Some(1000)), (2, None)] {
        let mut config = config("round-robin", members());
        config.worker_threads = threads;
        if let Some(us) = busy_poll_us {
            config.busy_poll_us = us;
        }
        let proxy = start(&config);
        for _ in 0..50 {
            let answer = get(proxy.0.local_addr(), "/", &[]).await;
            assert_eq!(answer.status, StatusCode::OK);
        }
        let poll = proxy.0.snapshot().busy_poll;
        let stretches = poll.paid_total + poll.wasted_total;
        if poll.window_us == 0 {
            assert_eq!((stretches, poll.polling_ns_total), (0, 0), "{poll:?}");
        }
        if poll.window_us == 1000 {
            // Back-to-back requests on loopback: most gaps between a request and its
            // answer, and an answer and the next request, are well under a millisecond.
            assert!(stretches > 0 && poll.polling_ns_total > 0, "{poll:?}");
        }
        cases.push(poll.window_us);
    }
    assert_eq!(cases, [50, 0, 1000, 0]);
}

/// In flight on the backend at `port`, as the proxy counts it.
fn in_flight(proxy: &Proxy, port: u16) -> u64 {
    backend_of(&proxy.0.snapshot(), port).in_flight
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_requests_give_their_slots_back() {
    let slow = TestBackend::start("slow").await;
    slow.delay_ms.store(700, Ordering::SeqCst);
    let mut backend = slow.config(1, "");
    backend.max_connections = 1;
    let proxy = start(&config("round-robin", vec![backend]));
    let (addr, port) = (proxy.0.local_addr(), slow.addr.port());

    // h2: the client resets its stream; the slot must come back long before the backend
    // answers (700 ms).
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get("http://proxy.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await.map(|_| ()) });
    wait_for("h2 request in flight", Duration::from_secs(1), || {
        in_flight(&proxy, port) == 1
    })
    .await;
    let aborted_at = Instant::now();
    pending.abort();
    wait_for(
        "slot back after the h2 reset",
        Duration::from_millis(400),
        || in_flight(&proxy, port) == 0,
    )
    .await;
    assert!(aborted_at.elapsed() < Duration::from_millis(450));

    // h1: the client hangs up; the slot comes back at the latest when the backend answers.
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        .await
        .unwrap();
    wait_for("h1 request in flight", Duration::from_secs(1), || {
        in_flight(&proxy, port) == 1
    })
    .await;
    drop(client);
    wait_for(
        "slot back after the h1 hang-up",
        Duration::from_secs(2),
        || in_flight(&proxy, port) == 0,
    )
    .await;
    // The one slot is usable again.
    slow.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
}

/// A request head and the first `sent` bytes of a `length`-byte body, then the client
/// goes away (`hang_up`) or stays silent; what the proxy answered, if anything.
async fn partial_upload(
    addr: SocketAddr,
    method: &str,
    length: usize,
    sent: usize,
    hang_up: bool,
) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("{method} /echo HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: {length}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'x'; sent]).await.unwrap();
    if hang_up {
        tokio::time::sleep(Duration::from_millis(100)).await;
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_abandoning_uploads_are_not_held_against_the_backend() {
    let only = TestBackend::start("only").await;
    let proxy = start(&config("round-robin", vec![only.config(1, "")]));
    let addr = proxy.0.local_addr();
    // A streamed POST (too large to buffer), broken off eight times: more than enough to
    // open the circuit or eject if it counted.
    for _ in 0..8 {
        partial_upload(addr, "POST", 200_000, 70_000, true).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snap = proxy.0.snapshot();
    let backend = backend_of(&snap, only.addr.port());
    assert_eq!(backend.circuit, CircuitState::Closed, "{backend:?}");
    assert_eq!(backend.ejections, 0, "{backend:?}");
    assert_eq!(backend.in_flight, 0, "{backend:?}");
    assert_eq!(get(addr, "/", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_drips_gets_408() {
    let only = TestBackend::start("only").await;
    let mut cfg = config("round-robin", vec![only.config(1, "")]);
    cfg.request_timeout_ms = 300;
    let proxy = start(&cfg);
    let started = Instant::now();
    // Small and idempotent: read whole before sending, within the request timeout.
    let answer = partial_upload(proxy.0.local_addr(), "PUT", 100, 10, false).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(only.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_backends_cost_one_request_timeout_not_one_per_attempt() {
    let backends = three_backends().await;
    for backend in &backends {
        backend.delay_ms.store(5_000, Ordering::SeqCst);
    }
    let mut cfg = config(
        "round-robin",
        backends.iter().map(|b| b.config(1, "")).collect(),
    );
    cfg.request_timeout_ms = 300;
    let proxy = start(&cfg);
    let started = Instant::now();
    let answer = get(proxy.0.local_addr(), "/", &[]).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(took < Duration::from_millis(600), "{took:?}");
    let hits: usize = backends.iter().map(TestBackend::hits).sum();
    assert_eq!(hits, 1, "a timed-out request is not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_backend_wakes_the_requests_queued_for_it() {
    let only = TestBackend::start("only").await;
    only.delay_ms.store(1_500, Ordering::SeqCst);
    let mut backend = only.config(1, "");
    backend.max_connections = 1;
    let mut cfg = config("round-robin", vec![backend]);
    cfg.queue_timeout_ms = 5_000;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let first = tokio::spawn(async move { get(addr, "/", &[]).await.status });
    wait_for("first in flight", Duration::from_secs(1), || {
        in_flight(&proxy, only.addr.port()) == 1
    })
    .await;
    let queued = tokio::spawn(async move { get(addr, "/", &[]).await });
    wait_for("second queued", Duration::from_secs(1), || {
        proxy.0.snapshot().queued == 1
    })
    .await;
    let removed_at = Instant::now();
    assert!(
        proxy
            .0
            .remove_backend("", "127.0.0.1", only.addr.port())
            .unwrap()
    );
    let answer = queued.await.unwrap();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "no backend is up\n");
    assert!(removed_at.elapsed() < Duration::from_millis(500));
    // The request under way on the removed backend finishes.
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_stop_at_the_proxy_both_ways() {
    let only = TestBackend::start("only").await;
    let proxy = start(&config("round-robin", vec![only.config(1, "")]));
    let addr = proxy.0.local_addr();
    let answer = get(
        addr,
        "/echo",
        &[
            ("connection", "x-client-private"),
            ("x-client-private", "1"),
            ("proxy-authorization", "Basic eDp5"),
            ("keep-alive", "timeout=5"),
            ("x-client-public", "1"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.headers["x-seen-headers"]
        .to_str()
        .unwrap()
        .to_string();
    let seen: Vec<&str> = seen.split(',').collect();
    assert!(seen.contains(&"x-client-public"), "{seen:?}");
    for gone in [
        "x-client-private",
        "proxy-authorization",
        "keep-alive",
        "connection",
    ] {
        assert!(
            !seen.contains(&gone),
            "{gone} reached the backend: {seen:?}"
        );
    }
    assert!(answer.headers.contains_key("x-backend-public"));
    for gone in ["x-backend-private", "proxy-authenticate"] {
        assert!(
            !answer.headers.contains_key(gone),
            "{gone} reached the client"
        );
    }

    // What cannot be carried is refused, not mangled.
    let connect = raw(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(connect.starts_with("HTTP/1.1 405"), "{connect:?}");
    // A WebSocket is carried to the backend, which decides: this one does not switch, so
    // the answer is an ordinary one (tests/balancer_fast_path.rs has one that switches).
    let websocket = get(
        addr,
        "/chat",
        &[("connection", "upgrade"), ("upgrade", "websocket")],
    )
    .await;
    assert_eq!(websocket.status, StatusCode::OK);
    // h2c upgrades may be ignored: answered in HTTP/1.1.
    let h2c = get(
        addr,
        "/",
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(h2c.status, StatusCode::OK);
    assert_eq!(only.hits(), 3, "CONNECT never reaches it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gets_survive_a_backend_killed_mid_load() {
    let backends = three_backends().await;
    for backend in &backends {
        backend.delay_ms.store(10, Ordering::SeqCst);
    }
    let proxy = start(&config(
        "round-robin",
        backends.iter().map(|b| b.config(1, "")).collect(),
    ));
    let addr = proxy.0.local_addr();
    let deadline = Instant::now() + Duration::from_millis(1_000);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while Instant::now() < deadline {
                    statuses.push(get(addr, "/", &[]).await.status);
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let victim_hits = backends[1].hits();
    backends[1].kill();
    let mut total = 0;
    for client in clients {
        for status in client.await.unwrap() {
            assert_eq!(status, StatusCode::OK);
            total += 1;
        }
    }
    assert!(victim_hits > 0 && total > 100, "{victim_hits} {total}");
    let snap = proxy.0.snapshot();
    assert!(snap.retries_total >= 1, "{snap:?}");
}

/// A backend that reads each request (head and body) and closes without answering; the
/// `x-id` of every request it read, health checks apart.
async fn read_and_close_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let seen = ids.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                        .map(str::to_string)
                };
                let length: usize = header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + length {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if head.starts_with("get /health") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                if let Some(id) = header("x-id") {
                    seen.lock().unwrap().push(id);
                }
                // Dropped: closed with no answer.
            });
        }
    });
    (addr, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_backend_fails_after_reading_it_is_never_sent_twice() {
    let (first, first_ids) = read_and_close_backend().await;
    let (second, second_ids) = read_and_close_backend().await;
    let backend = |addr: SocketAddr| BalancerBackendConfig {
        host: "127.0.0.1".to_string(),
        port: addr.port(),
        weight: 1,
        max_connections: 1024,
        pool: String::new(),
    };
    let mut cfg = config("round-robin", vec![backend(first), backend(second)]);
    cfg.breaker.failure_threshold = 1_000;
    cfg.outlier.consecutive_failures = 1_000;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let posts: Vec<_> = (0..20)
        .map(|i| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let request = Request::post("/order")
                    .header("host", "proxy.test")
                    .header("x-id", format!("order-{i}"))
                    .body(Full::new(Bytes::from_static(b"{\"qty\":1}")))
                    .unwrap();
                sender.send_request(request).await.unwrap().status()
            })
        })
        .collect();
    for post in posts {
        assert_eq!(post.await.unwrap(), StatusCode::BAD_GATEWAY);
    }
    let mut ids = first_ids.lock().unwrap().clone();
    ids.extend(second_ids.lock().unwrap().iter().cloned());
    let per_id = counts(ids);
    assert_eq!(per_id.len(), 20, "{per_id:?}");
    assert!(per_id.values().all(|&n| n == 1), "sent twice: {per_id:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_budget_is_spent() {
    let alive = TestBackend::start("alive").await;
    let dead = TestBackend::start("dead").await;
    let mut cfg = config("round-robin", vec![alive.config(1, ""), dead.config(1, "")]);
    // Nothing takes the dead backend out: every other request needs a retry.
    cfg.breaker.failure_threshold = 1_000;
    cfg.outlier.consecutive_failures = 1_000;
    cfg.retry_budget_percent = 1;
    let proxy = start(&cfg);
    dead.kill();
    let addr = proxy.0.local_addr();
    let mut failed = 0;
    for _ in 0..60 {
        if get(addr, "/", &[]).await.status != StatusCode::OK {
            failed += 1;
        }
    }
    let snap = proxy.0.snapshot();
    assert!(snap.retries_over_budget_total > 0, "{snap:?}");
    assert_eq!(failed, snap.retries_over_budget_total, "{snap:?}");
    // The minimum of 10 per window, plus 1% of 60 requests (0).
    assert!((10..=12).contains(&snap.retries_total), "{snap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_answering_500_eject_only_one_and_no_circuit_opens() {
    let backends = [
        TestBackend::start("good").await,
        TestBackend::start("bad1").await,
        TestBackend::start("bad2").await,
    ];
    backends[1].status.store(500, Ordering::SeqCst);
    backends[2].status.store(500, Ordering::SeqCst);
    let proxy = start(&config(
        "round-robin",
        backends.iter().map(|b| b.config(1, "")).collect(),
    ));
    let addr = proxy.0.local_addr();
    for _ in 0..45 {
        let status = get(addr, "/", &[]).await.status;
        assert!(
            status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR,
            "{status}"
        );
    }
    let snap = proxy.0.snapshot();
    let bad: Vec<_> = backends[1..]
        .iter()
        .map(|b| backend_of(&snap, b.addr.port()))
        .collect();
    let ejected = bad
        .iter()
        .filter(|b| b.health == sutazai_balancer::Health::Ejected)
        .count();
    assert_eq!(ejected, 1, "the 10% cap allows one of three: {bad:?}");
    assert!(
        bad.iter().all(|b| b.circuit == CircuitState::Closed),
        "{bad:?}"
    );
    let ejected_for = bad.iter().find_map(|b| b.ejected_for_secs);
    assert!(matches!(ejected_for, Some(29 | 30)), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_is_retried_intact_and_a_large_one_is_streamed_once() {
    let (closer, closer_ids) = read_and_close_backend().await;
    let echo = TestBackend::start("echo").await;
    let mut cfg = config(
        "round-robin",
        vec![
            BalancerBackendConfig {
                host: "127.0.0.1".to_string(),
                port: closer.port(),
                weight: 1,
                max_connections: 1024,
                pool: String::new(),
            },
            echo.config(1, ""),
        ],
    );
    cfg.breaker.failure_threshold = 1_000;
    cfg.outlier.consecutive_failures = 1_000;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    let put = |id: String, body: Bytes| async move {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::put("/echo")
            .header("host", "proxy.test")
            .header("x-id", id)
            .body(Full::new(body))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    };
    let small = Bytes::from(vec![b's'; 1000]);
    for i in 0..4 {
        let (status, body) = put(format!("small-{i}"), small.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, small, "the retried body arrived whole");
    }
    assert_eq!(echo.hits(), 4);
    // Above the 64 KiB retry limit: streamed, so sent once, and a failure is the answer.
    let large = Bytes::from(vec![b'l'; 100 * 1024]);
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(put(format!("large-{i}"), large.clone()).await.0);
    }
    let failed = statuses
        .iter()
        .filter(|&&s| s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(failed, 2, "{statuses:?}");
    let large_ids: Vec<_> = closer_ids
        .lock()
        .unwrap()
        .iter()
        .filter(|id| id.starts_with("large"))
        .cloned()
        .collect();
    assert_eq!(large_ids.len(), 2, "{large_ids:?}");
    assert_eq!(echo.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_upload_is_the_clients_timeout_not_the_backends() {
    let only = TestBackend::start("only").await;
    let mut cfg = config("round-robin", vec![only.config(1, "")]);
    cfg.request_timeout_ms = 300;
    let proxy = start(&cfg);
    let addr = proxy.0.local_addr();
    // POST: not retryable, so streamed to the backend as it comes; six stall together,
    // more than the breaker's and the outlier detector's five.
    let uploads: Vec<_> = (0..6)
        .map(|_| tokio::spawn(partial_upload(addr, "POST", 1_000, 10, false)))
        .collect();
    for upload in uploads {
        let answer = upload.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    }
    let snap = proxy.0.snapshot();
    let backend = backend_of(&snap, only.addr.port());
    assert_eq!(backend.errors_total, 0, "{backend:?}");
    assert_eq!(backend.circuit, CircuitState::Closed, "{backend:?}");
    assert_eq!(backend.ejections, 0, "{backend:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_after_the_idle_timeout() {
    let only = TestBackend::start("only").await;
    let mut cfg = config("round-robin", vec![only.config(1, "")]);
    cfg.idle_timeout_ms = 300;
    let proxy = start(&cfg);
    let mut client = TcpStream::connect(proxy.0.local_addr()).await.unwrap();
    client
        .write_all(b"GET /big HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        .await
        .unwrap();
    // 16 MiB do not fit in the socket buffers: the answer stalls with its slot held.
    wait_for("answer under way", Duration::from_secs(1), || {
        in_flight(&proxy, only.addr.port()) == 1
    })
    .await;
    // Quiet for an idle timeout (checked every half), then one more to finish: cut.
    wait_for("slow reader cut", Duration::from_secs(2), || {
        in_flight(&proxy, only.addr.port()) == 0
    })
    .await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_does_not_resolve_is_skipped_not_fatal() {
    let only = TestBackend::start("only").await;
    let mut unresolvable = only.config(1, "");
    unresolvable.host = "no-such-host.invalid".to_string();
    let proxy = start(&config(
        "round-robin",
        vec![unresolvable, only.config(1, "")],
    ));
    assert_eq!(
        get(proxy.0.local_addr(), "/", &[]).await.body,
        "only",
        "the others serve"
    );
    assert_eq!(proxy.0.snapshot().pools[0].backends.len(), 1);
    // Through the API it is an error naming the host.
    let err = proxy
        .0
        .add_backend(BackendSpec::new("no-such-host.invalid", 80))
        .unwrap_err();
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
}
