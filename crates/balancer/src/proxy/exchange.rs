//! One attempt: the request sent to a backend, its answer or failure reported to the
//! backend's health, latency and EWMA.

use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::Shared;
use super::headers::strip_hop_by_hop;
use crate::backend::{Backend, SendFailure, Sender, Slot};
use crate::body::{Lease, ReqBody, ResBody};
use crate::health::Outcome;

/// Send one request on `slot` (chosen at `started`) and turn its answer into ours;
/// outcomes go to the backend's health, latency and EWMA. The slot goes back when the
/// answer was streamed, or here on failure, or whenever this future is dropped.
pub(super) async fn exchange(
    shared: &Shared,
    mut slot: Slot,
    request: Request<ReqBody>,
    started: Instant,
    deadline: Instant,
    max_idle_ms: u64,
) -> Result<Response<ResBody>, SendFailure> {
    slot.backend.requests.fetch_add(1, Ordering::Relaxed);
    let sent = send(shared, &slot.backend, request, deadline, max_idle_ms).await;
    match sent {
        Ok((response, sender)) => {
            report_answer(&mut slot, started, response.status().is_server_error());
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let lease = Lease {
                slot,
                sender: Some(sender),
            };
            Ok(Response::from_parts(parts, ResBody::upstream(body, lease)))
        }
        Err(failure) => {
            report_failure(shared, &mut slot, failure, started);
            Err(failure)
        }
    }
}

/// A backend's answer arrived (its head): latency, EWMA and health learn of it.
pub(super) fn report_answer(slot: &mut Slot, started: Instant, server_error: bool) {
    let admission = slot.admission();
    let backend = &*slot.backend;
    // One clock read serves the latency and the health verdict.
    let finished = Instant::now();
    let elapsed = finished.saturating_duration_since(started);
    backend.latency.record(elapsed);
    backend.ewma.observe(elapsed);
    let outcome = if server_error {
        backend.errors.fetch_add(1, Ordering::Relaxed);
        Outcome::ServerError
    } else {
        Outcome::Success
    };
    backend
        .health
        .on_result(outcome, admission, finished, &backend.ejections);
    slot.reported();
}

/// An attempt failed: the backend's errors, EWMA and health learn of it, unless the client
/// was at fault (its body broke off or stalled: nothing learnt about the backend, and a
/// probe is given back unreported when the slot drops).
pub(super) fn report_failure(
    shared: &Shared,
    slot: &mut Slot,
    failure: SendFailure,
    started: Instant,
) {
    if matches!(failure, SendFailure::Client | SendFailure::ClientTimeout) {
        return;
    }
    let admission = slot.admission();
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
    // A removed backend's late failures must not take an ejection slot its pool already
    // gave back.
    if !backend.removed.load(Ordering::Relaxed) {
        backend
            .health
            .on_result(outcome, admission, Instant::now(), &backend.ejections);
        slot.reported();
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
