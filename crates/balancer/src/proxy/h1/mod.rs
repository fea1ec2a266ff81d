//! The HTTP/1.1 fast path: the common request (HTTP/1.1, origin-form, no `Expect`, a body
//! of at most 64 KiB with a Content-Length) is served by a loop of our own on the client's
//! task: the head parsed with httparse and rewritten in one pass, written with its body in
//! one system call on a backend connection that task owns for the exchange, and the answer
//! relayed the same way. No channel, no second task, no per-request allocation beyond the
//! two rewritten heads. A protocol switch (a WebSocket) is asked of the backend; on its 101
//! the two connections are carried both ways until either closes.
//!
//! Everything else — h2c, HTTP/1.0, other upgrades, `Expect: 100-continue`, chunked or large
//! uploads, and anything malformed or oversized — is handed over to
//! hyper with the bytes read so far, and hyper serves the connection from there on exactly
//! as before (it answers 400/431/501, applies the header timeout, and so on).
//!
//! Choosing the backend, the queue, retries and what the backend's health learns are the
//! same functions the hyper path uses.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::exchange::{report_answer, report_failure};
use super::queue::acquire;
use super::retry::BufferedShare;
use super::{ClientContext, MAX_ATTEMPTS, local, retry_allowed};
use crate::backend::{
    IDLE_REUSE_MAX_MS, IDLE_REUSE_UNSAFE_MAX_MS, RawConnection, SendFailure, Slot,
};
use crate::body::ResBody;
use crate::pool::Skip;

mod chunked;
mod head;
mod upstream;

use head::{Asked, Framing, Parsed, RequestHead, parse_request};
use upstream::Relayed;

/// Initial read buffer of a client connection (grows up to the header limit).
const READ_BUFFER: usize = 8 * 1024;

/// How the fast path left a connection.
pub(super) enum Ended {
    /// Closed (by either side, or because the proxy asked).
    Closed,
    /// For hyper to serve from here on; the client's buffer holds the bytes read but not
    /// served (a request's start).
    Handover,
}

/// Serve requests on `client` until it closes, `closing()` says to stop between requests,
/// or a request needs hyper.
pub(super) async fn serve<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    context: &ClientContext,
    closing: impl Fn() -> bool,
) -> Ended {
    let shared = &*context.shared;
    loop {
        if buf.is_empty() {
            buf.reserve(READ_BUFFER);
            match read_unless(client, buf, &closing).await {
                Some(n) if n > 0 => {}
                _ => return Ended::Closed,
            }
        }
        // Set when a head is found incomplete: the whole of it must come by then.
        let mut head_deadline = None;
        let head = loop {
            match parse_request(buf, shared, context.forwarded_for.as_bytes()) {
                Parsed::Request(head) => break head,
                Parsed::Handover => return Ended::Handover,
                Parsed::Partial => {
                    let deadline = *head_deadline
                        .get_or_insert_with(|| Instant::now() + shared.settings.header_timeout);
                    if !read_rest_of_head(client, buf, context, deadline, &closing).await {
                        return Ended::Closed;
                    }
                }
            }
        };
        let body_len = head.content_length;
        // Bounds the bodies held across all clients, as the hyper path does; each is held
        // twice (as read, and in the request written to a backend) until it was answered.
        let share = match body_len {
            0 => None,
            n => match BufferedShare::take(&shared.buffered_bytes, 2 * n) {
                Some(share) => Some(share),
                None => return Ended::Handover,
            },
        };
        buf.advance(head.len);
        shared.busy_poll.progress();
        shared.counters.requests.fetch_add(1, Ordering::Relaxed);
        if let Err(response) = read_body(client, buf, body_len, context).await {
            let _ = client.write_all(&local_wire(&response, false, true)).await;
            return Ended::Closed;
        }
        let body_len = body_len as usize;
        let next = answer(client, context, &head, &buf[..body_len], closing()).await;
        shared.busy_poll.progress();
        buf.advance(body_len);
        drop(share);
        match next {
            Next::Request if !head.close && !closing() => {}
            Next::Tunnel(connection, slot) => {
                // What the client sent after its request is the new protocol's already.
                upstream::tunnel(client, buf, connection).await;
                drop(slot);
                return Ended::Closed;
            }
            _ => {
                let _ = client.shutdown().await;
                return Ended::Closed;
            }
        }
    }
}

/// What follows an answer on the client's connection.
enum Next {
    /// Another request may come.
    Request,
    Close,
    /// The backend switched protocols (a WebSocket): the two connections are carried both
    /// ways until either closes, the backend's slot taken until then.
    Tunnel(RawConnection, Slot),
}

/// Read more of the client's bytes, unless `closing()` says to stop first; `None` when
/// stopping, the byte count (0: the client closed) otherwise.
async fn read_unless<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    closing: &impl Fn() -> bool,
) -> Option<usize> {
    let read = client.read_buf(buf);
    tokio::pin!(read);
    std::future::poll_fn(|cx| {
        if closing() {
            return std::task::Poll::Ready(None);
        }
        read.as_mut().poll(cx).map(|result| result.ok().or(Some(0)))
    })
    .await
}

/// A head split across reads: read more of it, by `deadline` (the header timeout from
/// when the head was found incomplete; `parse_request` hands a head past the size limit to
/// hyper, which answers 431). False when the connection ends: the client went, the proxy
/// is closing, or the rest did not come in time (answered 408 and counted as a bad
/// request, as hyper does with its header timeout).
async fn read_rest_of_head<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    context: &ClientContext,
    deadline: Instant,
    closing: &impl Fn() -> bool,
) -> bool {
    let shared = &*context.shared;
    buf.reserve(READ_BUFFER);
    let read = read_unless(client, buf, closing);
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Some(n)) => n > 0,
        Ok(None) => false,
        Err(_) => {
            shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            let timeout = local(
                StatusCode::REQUEST_TIMEOUT,
                "the request head did not arrive in time\n",
            );
            let _ = client.write_all(&local_wire(&timeout, false, true)).await;
            false
        }
    }
}

/// Have `len` body bytes in `buf`, reading the rest within the request timeout: a client
/// dripping its body gets 408, one that breaks it off 400 (both counted as bad requests).
async fn read_body<C: AsyncRead + Unpin>(
    client: &mut C,
    buf: &mut BytesMut,
    len: u64,
    context: &ClientContext,
) -> Result<(), Response<ResBody>> {
    let len = len as usize;
    if buf.len() >= len {
        return Ok(());
    }
    let shared = &*context.shared;
    buf.reserve(len - buf.len());
    let fill = async {
        while buf.len() < len {
            match client.read_buf(buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    };
    let outcome = tokio::time::timeout(shared.settings.request_timeout, fill).await;
    if outcome == Ok(true) {
        return Ok(());
    }
    shared.counters.bad_requests.fetch_add(1, Ordering::Relaxed);
    Err(match outcome {
        Ok(_) => local(
            StatusCode::BAD_REQUEST,
            "the request body could not be read\n",
        ),
        Err(_) => local(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time\n",
        ),
    })
}

/// Choose a backend, send, retry on another where that is safe, and write the answer.
async fn answer<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    context: &ClientContext,
    head: &RequestHead<'_>,
    body: &[u8],
    closing: bool,
) -> Next {
    let shared = &*context.shared;
    let pool = &**head.pool;
    let close_client = head.close || closing;
    let retryable = head.idempotent;
    let max_idle_ms = if retryable {
        IDLE_REUSE_MAX_MS
    } else {
        IDLE_REUSE_UNSAFE_MAX_MS
    };
    let mut tried = Skip::default();
    let mut last_failure = None;
    let mut deadline = None;
    let mut request = Vec::with_capacity(head.wire.len() + body.len() + 64);
    for attempt in 1..=MAX_ATTEMPTS {
        let members = pool.members();
        let session = head.session.as_ref().map(|s| s.bytes());
        let (slot, started) = match acquire(shared, pool, &members, &tried, session).await {
            Ok(got) => got,
            // After a failed attempt its failure answers (as the hyper path), not "no
            // backend is up" because the one that failed is now skipped.
            Err(response) => {
                let response = last_failure.map_or(response, |f: SendFailure| f.response());
                return write_local(client, &response, head, close_client).await;
            }
        };
        // One deadline from the first send, shared by the retries (as the hyper path).
        let deadline = *deadline.get_or_insert(started + shared.settings.request_timeout);
        request.clear();
        request.extend_from_slice(&head.wire);
        if !head.has_host {
            request.extend_from_slice(b"host: ");
            request.extend_from_slice(slot.backend.host_header.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        let serial = slot.backend.health.serial();
        let exchange = Exchange {
            request: &request,
            asked: Asked {
                head: head.is_head,
                upgrade: head.upgrade.as_deref(),
                close_client,
            },
            started,
            deadline,
            max_idle_ms,
        };
        let failure = match exchange.run(client, context, slot).await {
            Ok(next) => return next,
            Err(failure) => failure,
        };
        let may_retry = failure.may_retry() && retryable && attempt < MAX_ATTEMPTS;
        if retry_allowed(shared, may_retry) {
            tried.add(serial);
            last_failure = Some(failure);
            continue;
        }
        return write_local(client, &failure.response(), head, close_client).await;
    }
    let failed = local(StatusCode::BAD_GATEWAY, "the backends failed\n");
    write_local(client, &failed, head, close_client).await
}

/// One attempt on one backend.
struct Exchange<'a> {
    request: &'a [u8],
    asked: Asked<'a>,
    started: Instant,
    deadline: Instant,
    max_idle_ms: u64,
}

impl Exchange<'_> {
    /// Send, report the outcome to the backend's health, relay the answer. The slot goes
    /// back when the answer was relayed (or the attempt failed, or the future was
    /// dropped), or with the tunnel a switch opened.
    async fn run<C: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        context: &ClientContext,
        mut slot: Slot,
    ) -> Result<Next, SendFailure> {
        let shared = &*context.shared;
        slot.backend.requests.fetch_add(1, Ordering::Relaxed);
        let sent = upstream::send(
            &slot.backend,
            self.request,
            self.asked,
            shared.settings.connect_timeout,
            self.deadline,
            self.max_idle_ms,
        )
        .await;
        let (mut connection, head) = match sent {
            Ok(sent) => sent,
            Err(failure) => {
                report_failure(shared, &mut slot, failure, self.started);
                return Err(failure);
            }
        };
        report_answer(&mut slot, self.started, head.status >= 500);
        // An answer that ends with the backend's close ends the client's connection too
        // (its head said so): nothing else could tell the client where it ended.
        let client_closes = self.asked.close_client || head.framing == Framing::UntilClose;
        Ok(match upstream::relay(client, &mut connection, head).await {
            Relayed::Switched => Next::Tunnel(connection, slot),
            Relayed::Broken => Next::Close,
            Relayed::Reusable => {
                slot.backend.put_idle_raw(connection);
                if client_closes {
                    Next::Close
                } else {
                    Next::Request
                }
            }
            Relayed::Whole if client_closes => Next::Close,
            Relayed::Whole => Next::Request,
        })
    }
}

/// Write a local answer to the request.
async fn write_local<C: AsyncWrite + Unpin>(
    client: &mut C,
    response: &Response<ResBody>,
    request: &RequestHead<'_>,
    close: bool,
) -> Next {
    let wire = local_wire(response, request.is_head, close);
    if client.write_all(&wire).await.is_ok() && !close {
        Next::Request
    } else {
        Next::Close
    }
}

/// A local answer (its body is ours, never a backend's) as HTTP/1.1 bytes; the answer to a
/// HEAD has its length but not its body.
fn local_wire(response: &Response<ResBody>, to_head: bool, close: bool) -> Vec<u8> {
    let status = response.status();
    let body: &[u8] = match response.body() {
        ResBody::Local(Some(bytes)) => bytes,
        _ => b"",
    };
    let mut wire = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    for (name, value) in response.headers() {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if close {
        wire.extend_from_slice(b"connection: close\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    if !to_head {
        wire.extend_from_slice(body);
    }
    wire
}
