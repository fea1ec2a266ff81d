//! The proxy itself: accept loop, one task per client connection (HTTP/1.1 or h2c), and the
//! path of one request: route to a pool, choose a backend, send, retry, answer.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::backend::{
    Backend, IDLE_REUSE_MAX_MS, IDLE_REUSE_UNSAFE_MAX_MS, SendFailure, Sender, Slot,
};
use super::body::{Lease, ReqBody, ResBody};
use super::health::Outcome;
use super::pick::Algorithm;
use super::pool::{Choice, Members, Pool, Skip};

/// Request bodies up to this size are read whole so the request can be retried.
const RETRY_BODY_MAX: u64 = 64 * 1024;
/// A request's header block may be this large (HTTP/1.1 read buffer, h2 header list);
/// beyond it the client gets 431.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Attempts per request (the first and the retries), each on another backend.
const MAX_ATTEMPTS: usize = 3;
/// Retries always allowed per budget window, however few the requests (Envoy's
/// min_retry_concurrency plays this part).
const MIN_RETRIES: u64 = 10;
/// How long shutdown waits for client connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

/// Counters the snapshot reads; atomics, so the request path takes no lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
    pub retries_over_budget: AtomicU64,
    pub bad_requests: AtomicU64,
}

/// Retries may be at most `percent` of the requests of the last one to two seconds, plus
/// [`MIN_RETRIES`]: a failing backend is retried around, a failing fleet is not stormed.
pub(crate) struct RetryBudget {
    percent: u64,
    /// Totals as of the last two window marks (requests, retries).
    older: (AtomicU64, AtomicU64),
    newer: (AtomicU64, AtomicU64),
}

impl RetryBudget {
    pub fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            percent: u64::from(percent),
            older: Default::default(),
            newer: Default::default(),
        }
    }

    /// Take one retry from the budget (counted in `retries` when allowed). The check and
    /// the count are two steps, not one atomic: retries racing on other threads may pass
    /// the same check and overshoot by a few, which a budget of 20% can afford better than
    /// a compare-and-swap loop on every retry.
    fn allow(&self, counters: &Counters) -> bool {
        if self.percent == 0 {
            return false;
        }
        let requests = counters.requests.load(Ordering::Relaxed);
        let retries = counters.retries.load(Ordering::Relaxed);
        let window_requests = requests.saturating_sub(self.older.0.load(Ordering::Relaxed));
        let window_retries = retries.saturating_sub(self.older.1.load(Ordering::Relaxed));
        if window_retries < MIN_RETRIES + window_requests * self.percent / 100 {
            counters.retries.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Move the window on (every second).
    pub fn roll(&self, counters: &Counters) {
        let (requests, retries) = (
            counters.requests.load(Ordering::Relaxed),
            counters.retries.load(Ordering::Relaxed),
        );
        self.older.0.store(
            self.newer.0.swap(requests, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.older.1.store(
            self.newer.1.swap(retries, Ordering::Relaxed),
            Ordering::Relaxed,
        );
    }
}

/// Settings of the request path, converted once from config.
pub(crate) struct Settings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub queue_timeout: Duration,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_queue: u32,
    pub session_header: Option<HeaderName>,
    pub session_cookie: Vec<u8>,
    pub retry_after: HeaderValue,
}

/// Everything the request path shares.
pub(crate) struct Shared {
    /// Pools with rules, in config order (the first match wins).
    pub ruled: Vec<Arc<Pool>>,
    pub default: Arc<Pool>,
    pub settings: Settings,
    pub counters: Counters,
    pub budget: RetryBudget,
    /// Request body bytes held for retries right now (see [`BUFFERED_BODIES_MAX`]).
    pub buffered_bytes: AtomicU64,
}

impl Shared {
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.default).chain(self.ruled.iter())
    }

    fn route<B>(&self, req: &Request<B>) -> &Arc<Pool> {
        self.ruled
            .iter()
            .find(|pool| pool.rule.matches(req))
            .unwrap_or(&self.default)
    }
}

/// Accept clients until `shutdown`, then let open connections finish (up to [`DRAIN`]).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // Without it hyper reads the socket while each request is under way to spot a
        // client hanging up, and that read must grow a new buffer (the request's headers
        // still borrow the old one): an 8 KiB allocation per request. A client that leaves
        // is still noticed when its answer is written. The trade-off: an HTTP/1.1 client
        // that hangs up mid-request is not noticed until the backend answers, so the
        // backend works on, and its slot stays taken, for a gone client — at most until the
        // request's deadline (request_timeout). Nothing leaks: the slot is a guard that goes
        // back whenever the request's future ends (h2 resets are noticed at once).
        .half_close(true)
        .header_read_timeout(shared.settings.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    open.fetch_add(1, Ordering::Relaxed);
                    let open = open.clone();
                    let task = client_connection(
                        builder.clone(), stream, peer, shared.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        task.await;
                        open.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                Err(err) => {
                    // Out of descriptors and the like: back off rather than spin.
                    tracing::warn!(target: "sutazai_top::balancer", %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let deadline = Instant::now() + DRAIN;
    while open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one client connection's requests share.
struct ClientContext {
    shared: Arc<Shared>,
    /// The client's address as an X-Forwarded-For value, made once per connection.
    forwarded_for: HeaderValue,
}

async fn client_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let idle_timeout = shared.settings.idle_timeout;
    let activity = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: stream,
        activity: activity.clone(),
    };
    let forwarded_for = HeaderValue::try_from(peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let context = Arc::new(ClientContext {
        shared: shared.clone(),
        forwarded_for,
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(handle(&context, req).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // The idle check and shutdown run in a task of their own: polled beside the connection
    // they would be polled (a timer, a lock) on every wake of it, several per request.
    let close = Arc::new(CloseRequest::default());
    let watchdog = tokio::spawn(watch_connection(
        close.clone(),
        activity,
        idle_timeout,
        shutdown,
    ));
    let mut closing = false;
    let mut registered = false;
    // Set once closing: a graceful close waits for the requests under way, and a client
    // that stops reading its answer would hold its connection (and the backend's slot)
    // forever. After one more idle timeout the connection is dropped.
    let mut hard_stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let result = std::future::poll_fn(|cx| {
        if !registered {
            // A tokio task always polls with the same waker: handed over once.
            close.register(cx.waker());
            registered = true;
        }
        if !closing && close.requested.load(Ordering::SeqCst) {
            closing = true;
            connection.as_mut().graceful_shutdown();
            hard_stop = Some(Box::pin(tokio::time::sleep(idle_timeout)));
        }
        if let Some(stop) = hard_stop.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        connection.as_mut().poll(cx).map(Some)
    })
    .await;
    watchdog.abort();
    if let Some(Err(err)) = result {
        count_client_error(&shared, err.as_ref());
    }
}

/// Set by a connection's watchdog when the connection should finish (idle too long, or
/// the proxy shuts down); it wakes the connection's task.
#[derive(Default)]
struct CloseRequest {
    requested: AtomicBool,
    waker: std::sync::Mutex<Option<Waker>>,
}

impl CloseRequest {
    fn register(&self, waker: &Waker) {
        if let Ok(mut slot) = self.waker.lock() {
            *slot = Some(waker.clone());
        }
    }

    /// Flag first, then wake: a connection not yet registered sees the flag when it is.
    fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Ok(mut slot) = self.waker.lock()
            && let Some(waker) = slot.take()
        {
            waker.wake();
        }
    }
}

/// Ask the connection to finish once it was quiet for `idle_timeout` (checked every half of
/// it: cut after 1 to 1.5 idle timeouts) or the proxy shuts down.
async fn watch_connection(
    close: Arc<CloseRequest>,
    activity: Arc<AtomicU64>,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut idle_check = tokio::time::interval((idle_timeout / 2).max(Duration::from_millis(1)));
    idle_check.tick().await;
    let mut seen = activity.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            _ = idle_check.tick() => {
                let now = activity.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle_timeout {
                    break;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    close.request();
}

/// Requests hyper refused before they reached us (400, 431) or that timed out reading
/// their headers.
fn count_client_error(shared: &Shared, err: &(dyn std::error::Error + 'static)) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(hyper_err) = current.downcast_ref::<hyper::Error>() {
            if hyper_err.is_parse() || hyper_err.is_parse_too_large() || hyper_err.is_timeout() {
                shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        source = current.source();
    }
}

/// A client stream that counts its reads and writes, so the idle check can tell a quiet
/// connection from a busy one without a timer per read.
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
}

impl Watched {
    /// Only this stream writes the count (the idle check only reads it): a plain load and
    /// store, no locked read-modify-write per read or write.
    fn touch(&self) {
        let seen = self.activity.load(Ordering::Relaxed);
        self.activity.store(seen.wrapping_add(1), Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A local answer (no backend involved).
fn local(status: StatusCode, text: &'static str) -> Response<ResBody> {
    let mut response = Response::new(ResBody::local(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn unavailable(shared: &Shared, text: &'static str) -> Response<ResBody> {
    shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
    let mut response = local(StatusCode::SERVICE_UNAVAILABLE, text);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, shared.settings.retry_after.clone());
    response
}

/// The sticky key of a request for consistent hashing: the session header, else the cookie.
enum Session {
    Header(HeaderValue),
    Cookie(Bytes),
}

impl Session {
    fn of(settings: &Settings, headers: &HeaderMap) -> Option<Session> {
        if let Some(name) = &settings.session_header
            && let Some(value) = headers.get(name)
        {
            return Some(Session::Header(value.clone()));
        }
        if settings.session_cookie.is_empty() {
            return None;
        }
        headers.get_all(header::COOKIE).iter().find_map(|value| {
            value.as_bytes().split(|&b| b == b';').find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (pair[..eq].trim_ascii() == settings.session_cookie.as_slice())
                    .then(|| Session::Cookie(Bytes::copy_from_slice(pair[eq + 1..].trim_ascii())))
            })
        })
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Session::Header(value) => value.as_bytes(),
            Session::Cookie(bytes) => bytes,
        }
    }
}

/// Headers meaningful only for one connection (RFC 9110 §7.6.1), never forwarded; the
/// Proxy-* ones are addressed to (or from) a proxy, this one, not to the backend.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a request asked to switch protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    /// None asked, or `h2c` (which a server may ignore: the exchange goes on in HTTP/1.1).
    None,
    /// Another protocol (WebSocket, ...): cannot be carried to a backend.
    Refused,
}

fn strip_hop_by_hop(headers: &mut HeaderMap) -> Upgrade {
    // Most messages carry none: one pass of cheap name comparisons instead of a hashed
    // lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return Upgrade::None;
    }
    let upgrade = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|protocol| !protocol.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    // Headers any Connection field names are hop-by-hop too (a message may carry several
    // Connection fields). One field at a time, cloned (a reference count, no copy), as
    // removing the names needs the map.
    let mut field = 0;
    while let Some(connection) = headers
        .get_all(header::CONNECTION)
        .iter()
        .nth(field)
        .cloned()
    {
        field += 1;
        for name in connection.as_bytes().split(|&b| b == b',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        Upgrade::Refused
    } else {
        Upgrade::None
    }
}

/// HTTP/2 may split the cookies into several fields; HTTP/1.1 wants one, joined by "; "
/// (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    if fields.next().is_none() || fields.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Make the client's request one for a backend: HTTP/1.1, origin-form target, no
/// hop-by-hop headers, one Cookie field, X-Forwarded-For/Proto, a Host.
fn prepare(parts: &mut Parts, forwarded_for: &HeaderValue) -> Upgrade {
    let upgrade = strip_hop_by_hop(&mut parts.headers);
    if parts.version == Version::HTTP_2 {
        join_cookies(&mut parts.headers);
    }
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        if let Ok(uri) = origin.parse::<Uri>() {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;
    // One hashed lookup for both cases.
    match parts.headers.entry(&FORWARDED_FOR) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(forwarded_for.clone());
        }
        header::Entry::Occupied(mut earlier) => {
            let mut joined = earlier.get().as_bytes().to_vec();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(forwarded_for.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                earlier.insert(value);
            }
        }
    }
    parts
        .headers
        .insert(FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    upgrade
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Bytes of request bodies held for retries across all requests; beyond it bodies are
/// streamed (and so not retried). Bounds the proxy's memory however many clients there are:
/// [`RETRY_BODY_MAX`] alone only bounds one request.
const BUFFERED_BODIES_MAX: u64 = 64 * 1024 * 1024;

/// A share of [`BUFFERED_BODIES_MAX`], given back when the request ends.
struct BufferedShare<'a> {
    total: &'a AtomicU64,
    bytes: u64,
}

impl<'a> BufferedShare<'a> {
    fn take(total: &'a AtomicU64, bytes: u64) -> Option<BufferedShare<'a>> {
        let before = total.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > BUFFERED_BODIES_MAX {
            total.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(BufferedShare { total, bytes })
    }
}

impl Drop for BufferedShare<'_> {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The request body as it goes out: read whole when the request may be retried, the body
/// is small and the global buffer budget has room, else streamed. `Err`: the answer to
/// give when the client's body broke off (400) or came too slowly (408).
async fn outgoing_body(
    shared: &Shared,
    body: Incoming,
    retryable: bool,
) -> Result<(ReqBody, Option<BufferedShare<'_>>), Response<ResBody>> {
    if body.is_end_stream() {
        return Ok((ReqBody::Empty, None));
    }
    let length = body.size_hint().upper().filter(|&n| n <= RETRY_BODY_MAX);
    let share = match length {
        Some(n) if retryable => BufferedShare::take(&shared.buffered_bytes, n),
        _ => None,
    };
    let Some(share) = share else {
        return Ok((ReqBody::Stream(body, Arc::default()), None));
    };
    // Boxed: a rare path whose buffers would otherwise enlarge every request's future.
    // Bounded in time: a client dripping its body must not hold the request forever.
    let collect = Box::pin(body.collect());
    match tokio::time::timeout(shared.settings.request_timeout, collect).await {
        Ok(Ok(collected)) => Ok((ReqBody::Full(Some(collected.to_bytes())), Some(share))),
        Ok(Err(_)) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            Err(local(
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            ))
        }
        Err(_) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            Err(local(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            ))
        }
    }
}

/// One request, start to answer.
async fn handle(context: &ClientContext, req: Request<Incoming>) -> Response<ResBody> {
    let shared = &*context.shared;
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    if req.method() == Method::CONNECT {
        // A tunnel is a forward proxy's business; forwarded it would become `CONNECT /`.
        return local(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported by this proxy\n",
        );
    }
    let pool = &**shared.route(&req);
    let session = (pool.algorithm == Algorithm::ConsistentHash)
        .then(|| Session::of(&shared.settings, req.headers()))
        .flatten();
    let (mut parts, body) = req.into_parts();
    if prepare(&mut parts, &context.forwarded_for) == Upgrade::Refused {
        // Connections to backends are plain HTTP/1.1 exchanges: a WebSocket or other
        // upgrade cannot be carried; saying so beats a silent downgrade.
        return local(
            StatusCode::NOT_IMPLEMENTED,
            "protocol upgrades are not supported by this proxy\n",
        );
    }
    let mut retryable = idempotent(&parts.method);
    let (body, _buffered) = match outgoing_body(shared, body, retryable).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    retryable &= body.again().is_some();
    let max_idle_ms = if retryable {
        IDLE_REUSE_MAX_MS
    } else {
        IDLE_REUSE_UNSAFE_MAX_MS
    };
    let mut held = Some((parts, body));
    let mut tried = Skip::default();
    let mut deadline = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let members = pool.members();
        let session_bytes = session.as_ref().map(Session::bytes);
        let (slot, started) = match acquire(shared, pool, &members, &tried, session_bytes).await {
            Ok(got) => got,
            Err(response) => return response,
        };
        // One deadline for the whole request from its first send, shared by the retries:
        // a hanging backend costs request_timeout once, not once per attempt.
        let deadline = *deadline.get_or_insert(started + shared.settings.request_timeout);
        let Some(mut request) = next_request(&mut held, retryable && attempt < MAX_ATTEMPTS) else {
            debug_assert!(false, "the request was taken before its last attempt");
            return local(StatusCode::BAD_GATEWAY, "the request was lost\n");
        };
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, slot.backend.host_header.clone());
        }
        let serial = slot.backend.health.serial();
        let failure = match exchange(shared, slot, request, started, deadline, max_idle_ms).await {
            Ok(response) => return response,
            Err(failure) => failure,
        };
        let may_retry =
            failure.may_retry() && retryable && held.is_some() && attempt < MAX_ATTEMPTS;
        if may_retry && shared.budget.allow(&shared.counters) {
            tried.add(serial);
            continue;
        }
        if may_retry {
            shared
                .counters
                .retries_over_budget
                .fetch_add(1, Ordering::Relaxed);
        }
        return failure.response();
    }
    local(StatusCode::BAD_GATEWAY, "the backends failed\n")
}

/// The request for the next attempt: a copy while another attempt may follow
/// (`keep_copy`), else the original itself. `None` only if it was already taken.
fn next_request(held: &mut Option<(Parts, ReqBody)>, keep_copy: bool) -> Option<Request<ReqBody>> {
    if keep_copy
        && let Some((parts, body)) = held.as_ref()
        && let Some(again) = body.again()
    {
        return Some(Request::from_parts(parts.clone(), again));
    }
    held.take()
        .map(|(parts, body)| Request::from_parts(parts, body))
}

impl SendFailure {
    /// Worth another backend: it never answered. Not after a timeout (the request's
    /// deadline is spent) nor after the client's own failure.
    fn may_retry(self) -> bool {
        matches!(self, SendFailure::Connect | SendFailure::Broken)
    }

    /// The answer to the client when no attempt is left.
    fn response(self) -> Response<ResBody> {
        match self {
            SendFailure::Timeout => local(
                StatusCode::GATEWAY_TIMEOUT,
                "the backend did not answer in time\n",
            ),
            SendFailure::Client => local(
                StatusCode::BAD_REQUEST,
                "the request body could not be read\n",
            ),
            SendFailure::ClientTimeout => local(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            ),
            SendFailure::Connect | SendFailure::Broken => {
                local(StatusCode::BAD_GATEWAY, "the backend failed\n")
            }
        }
    }
}

/// A backend slot and when it was chosen, waiting in the pool's bounded queue when every
/// backend is full (or others already wait); the 503 to send when there is none.
async fn acquire(
    shared: &Shared,
    pool: &Pool,
    members: &Members,
    tried: &Skip,
    session: Option<&[u8]>,
) -> Result<(Slot, Instant), Response<ResBody>> {
    // With requests queued, a newcomer queues too: taking the slot a finished request just
    // freed for the oldest waiter would starve the queue. Not in consistent-hash pools:
    // there a waiter may be waiting for its own full home while other backends are free,
    // and newcomers must not wait on it.
    let fair = pool.algorithm != Algorithm::ConsistentHash;
    if !fair || pool.waiters.queued.load(Ordering::Relaxed) == 0 {
        match pool.choose(members, tried, session) {
            Choice::Got(slot, now) => return Ok((slot, now)),
            Choice::NoneUp => return Err(unavailable(shared, "no backend is up\n")),
            Choice::Full => {}
        }
    }
    // Boxed: the queue's timer and waiter would otherwise make every request's future
    // (moved whole a few times per request) larger, for a path few requests take.
    Box::pin(wait_in_queue(shared, pool, tried, session)).await
}

/// How long a newcomer lets the requests queued before it have the slots that free up
/// before trying itself. Bounded: a wake-up taken by a waiter that could not use it (its
/// session's home is elsewhere) must not leave the newcomer waiting for the full timeout.
const QUEUE_COURTESY: Duration = Duration::from_millis(50);

/// Every backend is full: wait (bounded in count and time) for a slot to come free.
async fn wait_in_queue(
    shared: &Shared,
    pool: &Pool,
    tried: &Skip,
    session: Option<&[u8]>,
) -> Result<(Slot, Instant), Response<ResBody>> {
    let waiters = &pool.waiters;
    let ahead = waiters.queued.fetch_add(1, Ordering::AcqRel);
    if ahead >= shared.settings.max_queue {
        waiters.queued.fetch_sub(1, Ordering::AcqRel);
        return Err(unavailable(
            shared,
            "every backend is full and the queue too\n",
        ));
    }
    // Leaves the queue however this ends (answered, timed out, client gone).
    struct InQueue<'a>(&'a super::backend::Waiters);
    impl Drop for InQueue<'_> {
        fn drop(&mut self) {
            self.0.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let _in_queue = InQueue(waiters);
    let deadline = tokio::time::Instant::now() + shared.settings.queue_timeout;
    // Requests ahead get the slots that free up first (see `acquire`).
    if ahead > 0 && pool.algorithm != Algorithm::ConsistentHash {
        let courtesy = (tokio::time::Instant::now() + QUEUE_COURTESY).min(deadline);
        let _ = tokio::time::timeout_at(courtesy, waiters.notify.notified()).await;
    }
    loop {
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Members may have changed while waiting: look at the current ones.
        let current = pool.members();
        match pool.choose(&current, tried, session) {
            Choice::Got(slot, now) => return Ok((slot, now)),
            Choice::NoneUp => return Err(unavailable(shared, "no backend is up\n")),
            Choice::Full => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(unavailable(shared, "every backend is full\n"));
        }
    }
}

/// Send one request on `slot` (chosen at `started`) and turn its answer into ours;
/// outcomes go to the backend's health, latency and EWMA. The slot goes back when the
/// answer was streamed, or here on failure, or whenever this future is dropped.
async fn exchange(
    shared: &Shared,
    mut slot: Slot,
    request: Request<ReqBody>,
    started: Instant,
    deadline: Instant,
    max_idle_ms: u64,
) -> Result<Response<ResBody>, SendFailure> {
    slot.backend.requests.fetch_add(1, Ordering::Relaxed);
    let sent = send(shared, &slot.backend, request, deadline, max_idle_ms).await;
    let admission = slot.admission();
    match sent {
        Ok((response, sender)) => {
            let backend = &*slot.backend;
            // One clock read serves the latency and the health verdict.
            let finished = Instant::now();
            let elapsed = finished.saturating_duration_since(started);
            backend.latency.record(elapsed);
            backend.ewma.observe(elapsed);
            let outcome = if response.status().is_server_error() {
                backend.errors.fetch_add(1, Ordering::Relaxed);
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            backend
                .health
                .on_result(outcome, admission, finished, &backend.ejections);
            slot.reported();
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let lease = Lease {
                slot,
                sender: Some(sender),
            };
            Ok(Response::from_parts(parts, ResBody::upstream(body, lease)))
        }
        // The client's body broke off or stalled: nothing learnt about the backend (a probe
        // is given back unreported when the slot drops).
        Err(failure @ (SendFailure::Client | SendFailure::ClientTimeout)) => Err(failure),
        Err(failure) => {
            let backend = &*slot.backend;
            backend.errors.fetch_add(1, Ordering::Relaxed);
            // A failure is slow as far as peak-EWMA is concerned: steer away from it.
            backend
                .ewma
                .observe(started.elapsed().max(shared.settings.connect_timeout));
            let outcome = match failure {
                SendFailure::Timeout => Outcome::Timeout,
                SendFailure::Connect => Outcome::ConnectFailure,
                _ => Outcome::Broken,
            };
            // A removed backend's late failures must not take an ejection slot its pool
            // already gave back.
            if !backend.removed.load(Ordering::Relaxed) {
                backend
                    .health
                    .on_result(outcome, admission, Instant::now(), &backend.ejections);
                slot.reported();
            }
            Err(failure)
        }
    }
}

/// Deliver the request on a kept connection (idle at most `max_idle_ms`), else on a new
/// one; a kept connection the backend closed meanwhile gives the request back untouched and
/// the next one is tried.
async fn send(
    shared: &Shared,
    backend: &Backend,
    mut request: Request<ReqBody>,
    deadline: Instant,
    max_idle_ms: u64,
) -> Result<(Response<Incoming>, Sender), SendFailure> {
    // Only a streamed body can keep the exchange waiting on the client.
    let client_stall = request.body().client_stall();
    let mut fresh_connections = 0;
    loop {
        let mut sender = match backend.take_idle(max_idle_ms) {
            Some(sender) => sender,
            None if fresh_connections < 2 => {
                fresh_connections += 1;
                backend.connect(shared.settings.connect_timeout).await?
            }
            None => return Err(SendFailure::Connect),
        };
        if std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .is_err()
        {
            continue;
        }
        let sending = sender.try_send_request(request);
        match tokio::time::timeout_at(deadline.into(), sending).await {
            Err(_)
                if client_stall
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::Relaxed)) =>
            {
                return Err(SendFailure::ClientTimeout);
            }
            Err(_) => return Err(SendFailure::Timeout),
            Ok(Ok(response)) => return Ok((response, sender)),
            Ok(Err(mut err)) => match err.take_message() {
                Some(unsent) => request = unsent,
                // The request body (the client's upload) failed, not the backend.
                None if err.error().is_user() => return Err(SendFailure::Client),
                None => return Err(SendFailure::Broken),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(session_header: Option<&'static str>, cookie: &str) -> Settings {
        Settings {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            queue_timeout: Duration::from_secs(1),
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_queue: 1,
            session_header: session_header.map(HeaderName::from_static),
            session_cookie: cookie.as_bytes().to_vec(),
            retry_after: HeaderValue::from_static("1"),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_any_connection_field_names() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-one"),
            ("connection", "X-Two"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("x-kept", "yes"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut map), Upgrade::None);
        let left: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn upgrades_other_than_h2c_are_refused() {
        let mut ws = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(strip_hop_by_hop(&mut ws), Upgrade::Refused);
        assert!(ws.is_empty());
        let mut h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h2c), Upgrade::None);
        assert!(h2c.is_empty(), "{h2c:?}");
        let mut plain = headers(&[("x-a", "1")]);
        assert_eq!(strip_hop_by_hop(&mut plain), Upgrade::None);
        assert_eq!(plain.len(), 1);
    }

    fn parts_of(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn prepare_makes_an_origin_form_http11_request_with_forwarded_headers() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut parts = parts_of(
            Request::get("http://agent.example:8080/v1/chat?x=1")
                .header("x-forwarded-for", "192.0.2.1")
                .body(())
                .expect("request"),
        );
        assert_eq!(prepare(&mut parts, &client), Upgrade::None);
        assert_eq!(parts.uri, "/v1/chat?x=1");
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["host"], "agent.example:8080");
        assert_eq!(parts.headers["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(parts.headers["x-forwarded-proto"], "http");

        let mut parts = parts_of(Request::get("/").body(()).expect("request"));
        prepare(&mut parts, &client);
        assert_eq!(parts.headers["x-forwarded-for"], "10.0.0.9");
        assert!(!parts.headers.contains_key("host"), "filled in per backend");
    }

    #[test]
    fn h2_cookie_fields_are_joined_for_http11() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut parts = parts_of(
            Request::get("http://a/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("cookie", "session=s3")
                .body(())
                .expect("request"),
        );
        prepare(&mut parts, &client);
        let cookies: Vec<_> = parts.headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; session=s3"]);
        // One field stays as it is.
        let mut parts = parts_of(
            Request::get("http://a/")
                .version(Version::HTTP_2)
                .header("cookie", "a=1")
                .body(())
                .expect("request"),
        );
        prepare(&mut parts, &client);
        assert_eq!(parts.headers["cookie"], "a=1");
    }

    fn session(settings: &Settings, map: &HeaderMap) -> Option<Vec<u8>> {
        Session::of(settings, map).map(|s| s.bytes().to_vec())
    }

    #[test]
    fn session_key_from_header_then_cookie() {
        let both = settings(Some("x-session-id"), "session");
        let map = headers(&[("x-session-id", "h1"), ("cookie", "session=c1")]);
        assert_eq!(session(&both, &map), Some(b"h1".to_vec()), "header first");
        for (cookie, expected) in [
            ("session=c1", Some(&b"c1"[..])),
            ("a=1; session = c2 ;b=2", Some(b"c2")),
            ("a=1;session=", Some(b"")),
            ("mysession=x; session2=y", None),
            ("session", None),
            ("", None),
        ] {
            let map = headers(&[("cookie", cookie)]);
            let map = if cookie.is_empty() {
                HeaderMap::new()
            } else {
                map
            };
            assert_eq!(session(&both, &map).as_deref(), expected, "{cookie:?}");
        }
        // Several Cookie fields (HTTP/2): any of them.
        let map = headers(&[("cookie", "a=1"), ("cookie", "session=c3")]);
        assert_eq!(session(&both, &map), Some(b"c3".to_vec()));
        // Neither configured: no session.
        let none = settings(None, "");
        assert_eq!(session(&none, &headers(&[("cookie", "session=c1")])), None);
    }

    #[test]
    fn idempotent_methods() {
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(idempotent(&method), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&method), "{method}");
        }
    }

    #[test]
    fn retry_budget_allows_the_minimum_plus_its_percentage_per_window() {
        let counters = Counters::default();
        let budget = RetryBudget::new(20);
        counters.requests.store(100, Ordering::Relaxed);
        let allowed = (0..100).filter(|_| budget.allow(&counters)).count();
        assert_eq!(allowed as u64, MIN_RETRIES + 20);
        assert_eq!(counters.retries.load(Ordering::Relaxed), MIN_RETRIES + 20);
        // Two rolls later the old window is gone: the minimum is there again.
        budget.roll(&counters);
        budget.roll(&counters);
        let allowed = (0..100).filter(|_| budget.allow(&counters)).count();
        assert_eq!(allowed as u64, MIN_RETRIES);
        // 0% means no retries at all.
        assert!(!RetryBudget::new(0).allow(&counters));
    }

    #[test]
    fn next_request_copies_until_the_last_attempt() {
        let (parts, ()) = Request::put("/x").body(()).expect("request").into_parts();
        let body = ReqBody::Full(Some(Bytes::from_static(b"payload")));
        let mut held = Some((parts, body));
        let copy = next_request(&mut held, true).expect("a copy");
        assert!(held.is_some());
        assert_eq!(copy.method(), Method::PUT);
        let last = next_request(&mut held, false).expect("the original");
        assert!(held.is_none());
        assert!(matches!(last.body(), ReqBody::Full(Some(b)) if &b[..] == b"payload"));
        assert!(next_request(&mut held, true).is_none());
    }

    #[test]
    fn buffered_bodies_share_one_global_budget() {
        let total = AtomicU64::new(0);
        let first = BufferedShare::take(&total, BUFFERED_BODIES_MAX - 10).expect("room");
        assert!(BufferedShare::take(&total, 11).is_none());
        let small = BufferedShare::take(&total, 10).expect("exactly full");
        drop((first, small));
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
