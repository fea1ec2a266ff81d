//! The balancer's HTTP/1.1 fast path against a hand-written backend on 127.0.0.1 that
//! answers in the shapes hyper's servers never use (chunked, interim 103, close-delimited)
//! and reports the request head it saw; clients speak raw HTTP/1.1 over TCP, so what is
//! checked is the bytes on the wire.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use sutazai_balancer::Balancer;
use sutazai_balancer::config::{BalancerBackendConfig, BalancerConfig};

/// The backend: counts its connections; answers by path.
struct RawBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn raw_backend() -> RawBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(backend_connection(stream));
        }
    });
    RawBackend {
        addr,
        connections,
        task,
    }
}

/// Requests one after another on one connection: the head (and a Content-Length body).
async fn backend_connection(mut stream: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head_end(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut length = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
        if header(&head, "transfer-encoding") == Some("chunked") {
            // Taken as it is, to its last chunk (no trailers in these tests).
            loop {
                if let Some(at) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    length = at + 5;
                    break;
                }
                if !read_more(&mut stream, &mut buf).await {
                    return;
                }
            }
        }
        while buf.len() < end + length {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body = buf[end..end + length].to_vec();
        buf.drain(..end + length);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let answer: Vec<u8> = match path.as_str() {
            "/chunked" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
            "/interim" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
                HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
            "/many-fields" => {
                let fields: String = (0..90).map(|i| format!("X-F{i}: {i}\r\n")).collect();
                format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 2\r\n\r\nok").into_bytes()
            }
            "/ws" if header(&head, "upgrade") == Some("websocket") => {
                let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\nhello from the backend;";
                if stream.write_all(switch).await.is_err() {
                    return;
                }
                // From here on: an echo of everything, upper-cased, until the client goes.
                let mut pending = buf.split_off(0);
                loop {
                    let echoed: Vec<u8> = pending.iter().map(u8::to_ascii_uppercase).collect();
                    if !echoed.is_empty() && stream.write_all(&echoed).await.is_err() {
                        return;
                    }
                    pending.clear();
                    if !read_more(&mut stream, &mut pending).await {
                        return;
                    }
                }
            }
            "/bye" => {
                // A keep-alive answer, then a keep-alive timeout of 100 ms, as real backends
                // have: a request reusing the connection meanwhile is served, else the
                // backend closes its side while the proxy keeps the connection idle.
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(100), stream.readable()).await {
                    Ok(Ok(())) => continue,
                    _ => return,
                }
            }
            "/garbage" => {
                let _ = stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").await;
                return;
            }
            "/until-close" => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
                    .await;
                return;
            }
            _ => {
                // The head as seen, then the body.
                let mut seen = head.into_bytes();
                seen.extend_from_slice(&body);
                let mut answer = format!(
                    "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\n\
                     Content-Length: {}\r\n\r\n",
                    seen.len()
                )
                .into_bytes();
                answer.extend_from_slice(&seen);
                answer
            }
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut more = [0u8; 4096];
    match stream.read(&mut more).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&more[..n]);
            true
        }
    }
}

async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// A field's value in a head (case-insensitive name; the first one).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn proxy_for(backend: &RawBackend) -> Arc<Balancer> {
    let mut config = BalancerConfig {
        enabled: true,
        listen: "127.0.0.1:0".parse().expect("an address"),
        algorithm: sutazai_balancer::pick::Algorithm::RoundRobin,
        backends: vec![BalancerBackendConfig {
            host: "127.0.0.1".to_string(),
            port: backend.addr.port(),
            weight: 1,
            max_connections: 64,
            pool: String::new(),
        }],
        ..BalancerConfig::default()
    };
    config.health.interval_ms = 60_000;
    Balancer::start(&config).expect("balancer starts")
}

struct Proxy(Arc<Balancer>);

impl Drop for Proxy {
    fn drop(&mut self) {
        tokio::task::block_in_place(|| self.0.shutdown());
    }
}

/// A client's connection and what it has read but not yet taken as an answer.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One answer: its head and body (by Content-Length, chunked to its end, or to the close).
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!(
                "no answer within 5 s; have {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    async fn answer(&mut self) -> Answer {
        self.answer_to(false).await
    }

    /// The answer to a HEAD: a head and no body, whatever its length says.
    async fn answer_to(&mut self, head_request: bool) -> Answer {
        let end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(self.more().await, "closed before a head");
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let body_end = if head.starts_with("HTTP/1.1 1") || head_request {
            0 // an interim answer has no body
        } else if let Some(length) = header(&head, "content-length") {
            let length: usize = length.parse().unwrap();
            while self.buf.len() < length {
                assert!(self.more().await, "closed mid-body");
            }
            length
        } else if header(&head, "transfer-encoding") == Some("chunked") {
            loop {
                if let Some(at) = find_chunked_end(&self.buf) {
                    break at;
                }
                assert!(self.more().await, "closed mid-chunked body");
            }
        } else {
            while self.more().await {}
            self.buf.len()
        };
        let body = self.buf.drain(..body_end).collect();
        Answer { head, body }
    }

    /// Read until `text` starts what is unread, and take it.
    async fn expect(&mut self, text: &[u8]) {
        while !self.buf.starts_with(text) {
            assert!(
                self.more().await,
                "closed; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
        self.buf.drain(..text.len());
    }

    /// True when the proxy closed the connection (nothing more comes).
    async fn closed(&mut self) -> bool {
        !self.more().await
    }
}

/// The end of a chunked body whose last chunk and trailers are in `buf`.
fn find_chunked_end(buf: &[u8]) -> Option<usize> {
    let last = buf.windows(3).position(|w| w == b"0\r\n")?;
    let after = &buf[last..];
    after
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| last + at + 4)
}

/// What the hardening pass found the proxy passing on (issue 15): two Host fields are a 400
/// (RFC 9112 §3.2), an absolute-form target's authority is the Host the backend sees
/// (§3.2.2), and a backend answering garbage is a 502, not "no backend is up".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_requests_are_refused_and_a_garbled_answer_is_a_502() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let ask = |request: &'static [u8]| {
        let addr = proxy.0.local_addr();
        async move {
            let mut client = Client::connect(addr).await;
            client.send(request).await;
            client.answer().await
        }
    };
    let two_hosts = ask(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    assert!(
        two_hosts.head.starts_with("HTTP/1.1 400"),
        "{}",
        two_hosts.head
    );

    let absolute = ask(b"GET http://target.test/abs HTTP/1.1\r\nHost: client.test\r\n\r\n").await;
    let seen = String::from_utf8_lossy(&absolute.body).to_ascii_lowercase();
    assert!(seen.starts_with("get /abs http/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nhost: target.test\r\n"), "{seen}");
    assert!(!seen.contains("client.test"), "{seen}");

    let garbled = ask(b"GET /garbage HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(garbled.head.starts_with("HTTP/1.1 502"), "{}", garbled.head);
}

/// Sockets of this machine's connections to `port` in CLOSE_WAIT (the backend closed, the
/// holder did not), from /proc/net/tcp: specific to this test's backend, whatever else runs.
fn close_wait_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2) == Some(&remote.as_str()) && fields.get(3) == Some(&"08")
        })
        .count()
}

/// After a burst of load, the idle connections the backend closed are swept in the
/// background: their descriptors go back without waiting for the next request (issue 15).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_closed_by_the_backend_are_swept() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let addr = proxy.0.local_addr();
    let clients: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                client.send(b"GET /bye HTTP/1.1\r\nHost: a\r\n\r\n").await;
                client.answer().await
            })
        })
        .collect();
    for client in clients {
        assert!(client.await.unwrap().head.starts_with("HTTP/1.1 200"));
    }
    let port = backend.addr.port();
    // The backend closes its side 100 ms after answering.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while close_wait_to(port) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections to the backend still in CLOSE_WAIT",
            close_wait_to(port)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        backend.connections.load(Ordering::SeqCst) >= 2,
        "the load used several connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_stay_on_the_fast_path_and_reuse_backend_connections() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    for i in 0..40 {
        client
            .send(format!("GET /n{i} HTTP/1.1\r\nHost: proxy.test\r\n\r\n").as_bytes())
            .await;
        let answer = client.answer().await;
        assert!(
            answer.head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            answer.head
        );
        let seen = String::from_utf8_lossy(&answer.body).into_owned();
        assert!(
            seen.starts_with(&format!("GET /n{i} HTTP/1.1\r\n")),
            "{seen}"
        );
    }
    // Sequential requests: one backend connection serves them all (a second at most, if
    // a health check or a race took one).
    assert!(backend.connections.load(Ordering::SeqCst) <= 2);
    let snap = proxy.0.snapshot();
    assert_eq!(
        snap.general_path_connections_total, 0,
        "all on the fast path"
    );
    assert_eq!(snap.requests_total, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_sees_a_clean_head_and_the_client_a_clean_answer() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    client
        .send(
            b"PUT /echo HTTP/1.1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n\
              Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\n\
              X-Forwarded-For: 192.0.2.7\r\nContent-Length: 4\r\n\r\nbody",
        )
        .await;
    let answer = client.answer().await;
    let seen = String::from_utf8_lossy(&answer.body).into_owned();
    for gone in [
        "connection",
        "x-hop",
        "te",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(
            header(&seen, gone).is_none(),
            "{gone} reached the backend: {seen}"
        );
    }
    let backend_id = format!("127.0.0.1:{}", backend.addr.port());
    assert_eq!(header(&seen, "host"), Some(backend_id.as_str()), "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("192.0.2.7, 127.0.0.1")
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"));
    assert!(seen.ends_with("\r\n\r\nbody"), "{seen}");
    assert!(
        header(&answer.head, "x-private").is_none(),
        "{}",
        answer.head
    );
    assert!(
        header(&answer.head, "connection").is_none(),
        "{}",
        answer.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_interim_and_pipelined_answers_keep_their_framing() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    // Three requests in one write: answered in order, each whole and no more.
    client
        .send(
            b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /interim HTTP/1.1\r\nHost: a\r\n\r\n\
              GET /last HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
    let chunked = client.answer().await;
    assert_eq!(header(&chunked.head, "transfer-encoding"), Some("chunked"));
    assert_eq!(
        chunked.body,
        b"5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    );
    let interim = client.answer().await;
    assert!(
        interim.head.starts_with("HTTP/1.1 200 OK"),
        "103 not passed on: {}",
        interim.head
    );
    assert_eq!(interim.body, b"ok");
    let last = client.answer().await;
    assert!(String::from_utf8_lossy(&last.body).starts_with("GET /last "));
    assert_eq!(proxy.0.snapshot().general_path_connections_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_delimited_by_the_close_closes_the_client_too() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    client
        .send(b"GET /until-close HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let answer = client.answer().await;
    assert_eq!(
        header(&answer.head, "connection"),
        Some("close"),
        "{}",
        answer.head
    );
    assert_eq!(answer.body, b"all of it");
    // A client's Connection: close is honoured too.
    let mut client = Client::connect(proxy.0.local_addr()).await;
    client
        .send(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let answer = client.answer().await;
    assert_eq!(header(&answer.head, "connection"), Some("close"));
    assert!(client.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_fast_path_leaves_are_served_by_the_general_one() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let addr = proxy.0.local_addr();
    // HTTP/1.0, a chunked upload, Expect: 100-continue.
    let mut old = Client::connect(addr).await;
    old.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    let answer = old.answer().await;
    assert!(String::from_utf8_lossy(&answer.body).starts_with("GET /old HTTP/1.1\r\n"));

    let mut chunked = Client::connect(addr).await;
    chunked
        .send(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    let answer = chunked.answer().await;
    assert!(
        String::from_utf8_lossy(&answer.body).ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
        "{:?}",
        answer.body
    );

    let mut expect = Client::connect(addr).await;
    expect
        .send(b"PUT /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        .await;
    let go_on = expect.answer().await;
    assert!(go_on.head.starts_with("HTTP/1.1 100"), "{}", go_on.head);
    expect.send(b"hi").await;
    let answer = expect.answer().await;
    assert!(String::from_utf8_lossy(&answer.body).ends_with("\r\n\r\nhi"));

    assert_eq!(proxy.0.snapshot().general_path_connections_total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_to_head_has_no_body_and_the_next_answer_parses() {
    let backend = raw_backend().await;
    let port = backend.addr.port();
    let proxy = {
        let proxy = Proxy(proxy_for(&backend));
        drop(backend); // nothing listens there any more: every attempt fails to connect
        proxy
    };
    let mut client = Client::connect(proxy.0.local_addr()).await;
    client
        .send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let to_head = client.answer_to(true).await;
    assert!(to_head.head.starts_with("HTTP/1.1 5"), "{}", to_head.head);
    let length: usize = header(&to_head.head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 0, "the length of the body a GET would get");
    let to_get = client.answer().await;
    assert!(
        to_get.head.starts_with("HTTP/1.1 5"),
        "{} (port {port})",
        to_get.head
    );
    assert_eq!(to_get.body.len(), length);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_with_as_many_fields_as_hyper_takes_pass() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    client
        .send(b"GET /many-fields HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let answer = client.answer().await;
    assert!(answer.head.starts_with("HTTP/1.1 200"), "{}", answer.head);
    assert_eq!(header(&answer.head, "x-f89"), Some("89"));
    assert_eq!(answer.body, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_carried_both_ways_until_it_closes() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let mut client = Client::connect(proxy.0.local_addr()).await;
    // The request and the first frame's bytes in one write: those belong to the new
    // protocol and must reach the backend after the switch.
    client
        .send(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nearly",
        )
        .await;
    let switched = client.answer_to(true).await;
    assert!(
        switched.head.starts_with("HTTP/1.1 101 "),
        "{}",
        switched.head
    );
    assert_eq!(header(&switched.head, "upgrade"), Some("websocket"));
    assert_eq!(header(&switched.head, "connection"), Some("upgrade"));
    assert_eq!(header(&switched.head, "sec-websocket-accept"), Some("x"));
    client.expect(b"hello from the backend;EARLY").await;
    client.send(b"and more").await;
    client.expect(b"AND MORE").await;
    let port = backend.addr.port();
    let snap = proxy.0.snapshot();
    let in_flight = |snap: &sutazai_balancer::BalancerSnapshot| {
        snap.pools
            .iter()
            .flat_map(|p| &p.backends)
            .find(|b| b.port == port)
            .map(|b| b.in_flight)
    };
    assert_eq!(
        in_flight(&snap),
        Some(1),
        "the tunnel holds its backend slot"
    );
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while in_flight(&proxy.0.snapshot()) != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.0.snapshot().general_path_connections_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_split_across_writes_stay_on_the_fast_path() {
    let backend = raw_backend().await;
    let proxy = Proxy(proxy_for(&backend));
    let addr = proxy.0.local_addr();
    let mut split = Client::connect(addr).await;
    split.send(b"GET /split HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    split.send(b"st: a\r\n\r\n").await;
    let answer = split.answer().await;
    assert!(String::from_utf8_lossy(&answer.body).starts_with("GET /split "));
    split.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let answer = split.answer().await;
    assert!(String::from_utf8_lossy(&answer.body).starts_with("GET /after "));
    // A WebSocket handshake in pieces still switches (hyper would answer an upgrade 501).
    let mut ws = Client::connect(addr).await;
    ws.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ws.send(b"Upgrade: websocket\r\n\r\n").await;
    let switched = ws.answer_to(true).await;
    assert!(
        switched.head.starts_with("HTTP/1.1 101 "),
        "{}",
        switched.head
    );
    ws.expect(b"hello from the backend;").await;
    ws.send(b"ping").await;
    ws.expect(b"PING").await;
    assert_eq!(proxy.0.snapshot().general_path_connections_total, 0);
}
