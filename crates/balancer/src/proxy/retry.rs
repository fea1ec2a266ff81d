//! What makes a request retryable: its method, the retry budget, and a body read whole
//! within the per-request and global buffer limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};

use super::{Counters, Shared, local};
use crate::backend::SendFailure;
use crate::body::{ReqBody, ResBody};

/// Request bodies up to this size are read whole so the request can be retried.
pub(super) const RETRY_BODY_MAX: u64 = 64 * 1024;

/// Retries always allowed per budget window, however few the requests (Envoy's
/// min_retry_concurrency plays this part).
const MIN_RETRIES: u64 = 10;

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
    pub(super) fn allow(&self, counters: &Counters) -> bool {
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

pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Bytes of request bodies held for retries across all requests; beyond it bodies are
/// streamed (and so not retried). Bounds the proxy's memory however many clients there are:
/// [`RETRY_BODY_MAX`] alone only bounds one request.
pub(super) const BUFFERED_BODIES_MAX: u64 = 64 * 1024 * 1024;

/// A share of [`BUFFERED_BODIES_MAX`], given back when the request ends.
pub(super) struct BufferedShare<'a> {
    total: &'a AtomicU64,
    bytes: u64,
}

impl<'a> BufferedShare<'a> {
    pub(super) fn take(total: &'a AtomicU64, bytes: u64) -> Option<BufferedShare<'a>> {
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
pub(super) async fn outgoing_body(
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

/// The request for the next attempt: a copy while another attempt may follow
/// (`keep_copy`), else the original itself. `None` only if it was already taken.
pub(super) fn next_request(
    held: &mut Option<(Parts, ReqBody)>,
    keep_copy: bool,
) -> Option<Request<ReqBody>> {
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
    pub(super) fn may_retry(self) -> bool {
        matches!(self, SendFailure::Connect | SendFailure::Broken)
    }

    /// The answer to the client when no attempt is left.
    pub(super) fn response(self) -> Response<ResBody> {
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

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
