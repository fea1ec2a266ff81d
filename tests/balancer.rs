//! The load balancer against real backends: small hyper servers on 127.0.0.1 in this
//! process, the proxy started with `Balancer::start` on its own runtime.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

use sutazai_top::balancer::{BackendSpec, Balancer, BalancerSnapshot, CircuitState};
use sutazai_top::config::{BalancerBackendConfig, BalancerConfig, BalancerPoolConfig};

/// A backend: answers its name, counts the requests (health checks apart), can be slowed,
/// killed (listener and connections dropped) and revived on the same port.
struct TestBackend {
    name: &'static str,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
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
            tasks: Arc::default(),
        };
        backend.serve(listener);
        backend
    }

    fn serve(&self, listener: TcpListener) {
        let (name, hits, delay, tasks) = (
            self.name,
            self.hits.clone(),
            self.delay_ms.clone(),
            self.tasks.clone(),
        );
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (hits, delay) = (hits.clone(), delay.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (hits, delay) = (hits.clone(), delay.clone());
                    async move { Ok::<_, Infallible>(answer(name, req, &hits, &delay).await) }
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
        return Response::new(Full::new(Bytes::from_static(b"ok")));
    }
    hits.fetch_add(1, Ordering::SeqCst);
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

/// A config for the test: listen on a free port, checks rare unless a test wants them.
fn config(algorithm: &str, backends: Vec<BalancerBackendConfig>) -> BalancerConfig {
    let mut config = BalancerConfig {
        enabled: true,
        listen: "127.0.0.1:0".to_string(),
        algorithm: algorithm.to_string(),
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

fn backend_of<'a>(
    snap: &'a BalancerSnapshot,
    port: u16,
) -> &'a sutazai_top::balancer::BackendSnapshot {
    snap.pools
        .iter()
        .flat_map(|p| &p.backends)
        .find(|b| b.port == port)
        .expect("backend in the snapshot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_an_exact_rotation_and_forwards_the_client() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
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
    let slow = TestBackend::start("slow").await;
    slow.delay_ms.store(150, Ordering::SeqCst);
    let fast = TestBackend::start("fast").await;
    let proxy = start(&config(
        "least-connections",
        vec![slow.config(1, ""), fast.config(1, "")],
    ));
    let addr = proxy.0.local_addr();
    // Four clients in a loop for a while: the slow one holds its requests longer.
    let deadline = Instant::now() + Duration::from_millis(1200);
    let clients: Vec<_> = (0..4)
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
    let (s, f) = (slow.hits(), fast.hits());
    assert!(f > 5 * s, "slow {s}, fast {f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_by_header_and_by_cookie() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
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
        homes.push(first);
    }
    // The sessions spread: no backend has them all.
    let spread = counts(homes);
    assert!(spread.len() >= 2, "{spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_no_get_and_comes_back() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
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
            algorithm: "least-connections".to_string(),
            header: "x-request-type: compute".to_string(),
            path_prefix: String::new(),
        },
        BalancerPoolConfig {
            name: "embed".to_string(),
            algorithm: String::new(),
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
    use std::path::Path;
    use sutazai_top::config::Config;
    for (text, says) in [
        ("[balancer]\nalgorithm = \"random\"\n", "random"),
        ("[balancer]\nlisten = \"nowhere\"\n", "listen"),
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
        let err = Config::parse(text, Path::new("x")).unwrap_err().to_string();
        assert!(err.contains(says), "{text}: {err}");
    }
}
