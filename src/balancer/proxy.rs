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

use super::backend::{Backend, SendFailure, Sender};
use super::body::{Lease, ReqBody, ResBody};
use super::health::Outcome;
use super::pick::Algorithm;
use super::pool::{Choice, Pool};

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

    /// Take one retry from the budget (counted in `retries` when allowed).
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
        // is still noticed when its answer is written.
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
    let result = std::future::poll_fn(|cx| {
        if !registered {
            // A tokio task always polls with the same waker: handed over once.
            close.register(cx.waker());
            registered = true;
        }
        if !closing && close.requested.load(Ordering::SeqCst) {
            closing = true;
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await;
    watchdog.abort();
    if let Err(err) = result {
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

/// Headers meaningful only for one connection (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass of cheap name comparisons instead of a hashed
    // lookup per hop-by-hop name.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Headers the Connection header names are hop-by-hop too.
    if let Some(connection) = headers.get(header::CONNECTION).cloned() {
        if let Ok(names) = connection.to_str() {
            for name in names.split(',') {
                if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

static FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Make the client's request one for a backend: HTTP/1.1, origin-form target, no
/// hop-by-hop headers, X-Forwarded-For/Proto, a Host.
fn prepare(parts: &mut Parts, forwarded_for: &HeaderValue) {
    strip_hop_by_hop(&mut parts.headers);
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
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// The request body as it goes out: read whole when the request may be retried and the
/// body is small, else streamed. `Err` when the client's body broke while being read.
async fn outgoing_body(body: Incoming, retryable: bool) -> Result<ReqBody, ()> {
    if body.is_end_stream() {
        return Ok(ReqBody::Empty);
    }
    if !retryable || body.size_hint().upper().is_none_or(|n| n > RETRY_BODY_MAX) {
        return Ok(ReqBody::Stream(body));
    }
    // Boxed: a rare path whose buffers would otherwise enlarge every request's future.
    match Box::pin(body.collect()).await {
        Ok(collected) => Ok(ReqBody::Full(Some(collected.to_bytes()))),
        Err(_) => Err(()),
    }
}

/// One request, start to answer.
async fn handle(context: &ClientContext, req: Request<Incoming>) -> Response<ResBody> {
    let shared = &*context.shared;
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let pool = &**shared.route(&req);
    let session = (pool.algorithm == Algorithm::ConsistentHash)
        .then(|| Session::of(&shared.settings, req.headers()))
        .flatten();
    let (mut parts, body) = req.into_parts();
    prepare(&mut parts, &context.forwarded_for);
    let mut retryable = idempotent(&parts.method);
    let Ok(body) = outgoing_body(body, retryable).await else {
        shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
        return local(
            StatusCode::BAD_REQUEST,
            "the request body could not be read\n",
        );
    };
    retryable &= body.again().is_some();
    let mut held = Some((parts, body));
    let mut tried: u64 = 0;
    for attempt in 1..=MAX_ATTEMPTS {
        let members = pool.members();
        let session_bytes = session.as_ref().map(Session::bytes);
        let (backend, index, started) =
            match acquire(shared, pool, &members, tried, session_bytes).await {
                Ok(got) => got,
                Err(response) => return response,
            };
        // Keep the original while a retry is still possible; the last attempt takes it.
        let request = match (&held, retryable && attempt < MAX_ATTEMPTS) {
            (Some((parts, body)), true) => match body.again() {
                Some(again) => Request::from_parts(parts.clone(), again),
                None => take_request(&mut held),
            },
            _ => take_request(&mut held),
        };
        let mut request = request;
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, backend.host_header.clone());
        }
        match exchange(shared, &backend, request, started).await {
            Ok(response) => return response,
            Err(failure) => {
                let may_retry = retryable && held.is_some() && attempt < MAX_ATTEMPTS;
                if may_retry && shared.budget.allow(&shared.counters) {
                    if index < 64 {
                        tried |= 1 << index;
                    }
                    continue;
                }
                if may_retry {
                    shared
                        .counters
                        .retries_over_budget
                        .fetch_add(1, Ordering::Relaxed);
                }
                return match failure {
                    SendFailure::Timeout => local(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the backend did not answer in time\n",
                    ),
                    _ => local(StatusCode::BAD_GATEWAY, "the backend failed\n"),
                };
            }
        }
    }
    local(StatusCode::BAD_GATEWAY, "the backends failed\n")
}

fn take_request(held: &mut Option<(Parts, ReqBody)>) -> Request<ReqBody> {
    match held.take() {
        Some((parts, body)) => Request::from_parts(parts, body),
        // Unreachable by construction (the last attempt takes it once); answer empty.
        None => Request::new(ReqBody::Empty),
    }
}

/// A backend with a slot reserved and when it was chosen, waiting in the pool's bounded
/// queue when every backend is full; the 503 to send when there is none.
async fn acquire(
    shared: &Shared,
    pool: &Pool,
    members: &super::pool::Members,
    tried: u64,
    session: Option<&[u8]>,
) -> Result<(Arc<Backend>, usize, Instant), Response<ResBody>> {
    match pool.choose(members, tried, session) {
        Choice::Got(backend, index, now) => Ok((backend, index, now)),
        Choice::NoneUp => Err(unavailable(shared, "no backend is up\n")),
        // Boxed: the queue's timer and waiter would otherwise make every request's future
        // (moved whole a few times per request) larger, for a path few requests take.
        Choice::Full => Box::pin(wait_in_queue(shared, pool, tried, session)).await,
    }
}

/// Every backend is full: wait (bounded in count and time) for a slot to come free.
async fn wait_in_queue(
    shared: &Shared,
    pool: &Pool,
    tried: u64,
    session: Option<&[u8]>,
) -> Result<(Arc<Backend>, usize, Instant), Response<ResBody>> {
    let waiters = &pool.waiters;
    if waiters.queued.fetch_add(1, Ordering::AcqRel) >= shared.settings.max_queue {
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
    loop {
        let notified = waiters.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Members may have changed while waiting: look at the current ones.
        let current = pool.members();
        match pool.choose(&current, tried, session) {
            Choice::Got(backend, index, now) => return Ok((backend, index, now)),
            Choice::NoneUp => return Err(unavailable(shared, "no backend is up\n")),
            Choice::Full => {}
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(unavailable(shared, "every backend is full\n"));
        }
    }
}

/// Send one request to `backend` (its slot reserved at `started`) and turn its answer into
/// ours; outcomes go to the backend's health, latency and EWMA.
async fn exchange(
    shared: &Shared,
    backend: &Arc<Backend>,
    request: Request<ReqBody>,
    started: Instant,
) -> Result<Response<ResBody>, SendFailure> {
    backend.requests.fetch_add(1, Ordering::Relaxed);
    match send(shared, backend, request).await {
        Ok((response, sender)) => {
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
                .on_result(outcome, finished, &backend.ejections);
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let lease = Lease {
                backend: backend.clone(),
                sender: Some(sender),
            };
            Ok(Response::from_parts(parts, ResBody::upstream(body, lease)))
        }
        Err(failure) => {
            backend.errors.fetch_add(1, Ordering::Relaxed);
            // A failure is slow as far as peak-EWMA is concerned: steer away from it.
            backend
                .ewma
                .observe(started.elapsed().max(shared.settings.connect_timeout));
            let outcome = match failure {
                SendFailure::Timeout => Outcome::Timeout,
                SendFailure::Connect => Outcome::ConnectFailure,
                SendFailure::Broken => Outcome::ServerError,
            };
            backend
                .health
                .on_result(outcome, Instant::now(), &backend.ejections);
            backend.release();
            Err(failure)
        }
    }
}

/// Deliver the request on a kept connection, else on a new one; a kept connection the
/// backend closed meanwhile gives the request back untouched and the next one is tried.
async fn send(
    shared: &Shared,
    backend: &Backend,
    mut request: Request<ReqBody>,
) -> Result<(Response<Incoming>, Sender), SendFailure> {
    let timeout = shared.settings.request_timeout;
    let mut fresh_connections = 0;
    loop {
        let mut sender = match backend.take_idle() {
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
        match tokio::time::timeout(timeout, sender.try_send_request(request)).await {
            Err(_) => return Err(SendFailure::Timeout),
            Ok(Ok(response)) => return Ok((response, sender)),
            Ok(Err(mut err)) => match err.take_message() {
                Some(unsent) => request = unsent,
                None => return Err(SendFailure::Broken),
            },
        }
    }
}
