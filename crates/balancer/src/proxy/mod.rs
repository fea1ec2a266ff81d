//! The proxy itself: accept loop, one task per client connection (HTTP/1.1 or h2c), and the
//! path of one request: route to a pool, choose a backend, send, retry, answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::backend::{IDLE_REUSE_MAX_MS, IDLE_REUSE_UNSAFE_MAX_MS, SendFailure};
use super::body::ResBody;
use super::pick::Algorithm;
use super::pool::{Pool, Skip};

mod busy_poll;
mod connection;
mod exchange;
mod h1;
mod headers;
mod queue;
mod retry;
mod session;

pub(crate) use busy_poll::BusyPoll;
pub(crate) use connection::serve;
pub(crate) use retry::RetryBudget;

use exchange::exchange;
use headers::{Upgrade, prepare};
use queue::acquire;
use retry::{idempotent, next_request, outgoing_body};
use session::Session;

/// A request's header block may be this large (HTTP/1.1 read buffer, h2 header list);
/// beyond it the client gets 431.
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Attempts per request (the first and the retries), each on another backend.
const MAX_ATTEMPTS: usize = 3;

/// Counters the snapshot reads; atomics, so the request path takes no lock.
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub retries: AtomicU64,
    pub retries_over_budget: AtomicU64,
    pub bad_requests: AtomicU64,
    /// Connections the HTTP/1.1 fast path handed over to hyper.
    pub general_path_connections: AtomicU64,
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
    /// Request body bytes held for retries right now (see [`retry::BUFFERED_BODIES_MAX`]).
    pub buffered_bytes: AtomicU64,
    pub busy_poll: BusyPoll,
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

/// What one client connection's requests share.
struct ClientContext {
    shared: Arc<Shared>,
    /// The client's address as an X-Forwarded-For value, made once per connection.
    forwarded_for: HeaderValue,
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
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        // Which one would the backend believe? RFC 9112 §3.2: answer 400.
        return local(StatusCode::BAD_REQUEST, "more than one Host field\n");
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
    let mut last_failure: Option<SendFailure> = None;
    let mut deadline = None;
    for attempt in 1..=MAX_ATTEMPTS {
        let members = pool.members();
        let session_bytes = session.as_ref().map(Session::bytes);
        let (slot, started) = match acquire(shared, pool, &members, &tried, session_bytes).await {
            Ok(got) => got,
            // After a failed attempt, its failure is the answer (a 502 for a garbled reply),
            // not "no backend is up" because the one that failed is now skipped.
            Err(response) => return last_failure.map_or(response, SendFailure::response),
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
        if retry_allowed(shared, may_retry) {
            tried.add(serial);
            last_failure = Some(failure);
            continue;
        }
        return failure.response();
    }
    local(StatusCode::BAD_GATEWAY, "the backends failed\n")
}

/// Whether a failed attempt that `may_retry` is retried: the retry budget decides, and a
/// retry it refuses is counted.
fn retry_allowed(shared: &Shared, may_retry: bool) -> bool {
    if !may_retry {
        return false;
    }
    if shared.budget.allow(&shared.counters) {
        return true;
    }
    shared
        .counters
        .retries_over_budget
        .fetch_add(1, Ordering::Relaxed);
    false
}

/// Helpers the submodules' tests share.
#[cfg(test)]
mod test_support {
    use hyper::header::{HeaderMap, HeaderValue};

    pub(super) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }
}
