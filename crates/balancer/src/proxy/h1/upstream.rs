//! The backend side of the fast path: a request written on a kept (or new) connection of
//! our own, its answer's head read, its body relayed to the client as it comes.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::ChunkedEnd;
use super::head::{Asked, Framing, ResponseHead, ResponseParse, parse_response};
use crate::backend::{Backend, RawConnection, SendFailure};

/// Read buffer of a backend connection (grows for a larger head).
const READ_BUFFER: usize = 16 * 1024;

/// Deliver `request` (a whole head and body) on a kept connection idle at most
/// `max_idle_ms`, else on a new one, and read the answer's head by `deadline`. A kept
/// connection that fails before the request could be written is dropped and the next one
/// tried, as the hyper path does with a closed connection.
pub(super) async fn send(
    backend: &Backend,
    request: &[u8],
    asked: Asked<'_>,
    connect_timeout: Duration,
    deadline: Instant,
    max_idle_ms: u64,
) -> Result<(RawConnection, ResponseHead), SendFailure> {
    let mut fresh_connections = 0;
    loop {
        let (mut connection, kept) = match backend.take_idle_raw(max_idle_ms) {
            Some(connection) => (connection, true),
            None if fresh_connections < 2 => {
                fresh_connections += 1;
                (connect(backend, connect_timeout).await?, false)
            }
            None => return Err(SendFailure::Connect),
        };
        // One deadline for writing the request and reading the answer's head: a backend
        // that stops reading costs request_timeout, as one that stops answering does.
        let exchange = async {
            if connection.stream.write_all(request).await.is_err() {
                return Err(Unsent);
            }
            Ok(read_head(&mut connection, asked).await)
        };
        return match tokio::time::timeout_at(deadline.into(), exchange).await {
            Err(_) => Err(SendFailure::Timeout),
            // A kept connection the backend closed meanwhile: the next one.
            Ok(Err(Unsent)) if kept => continue,
            Ok(Err(Unsent)) => Err(SendFailure::Broken),
            Ok(Ok(Err(failure))) => Err(failure),
            Ok(Ok(Ok(head))) => Ok((connection, head)),
        };
    }
}

/// Writing the request failed.
struct Unsent;

async fn connect(backend: &Backend, timeout: Duration) -> Result<RawConnection, SendFailure> {
    let stream = match tokio::time::timeout(timeout, backend.connect_any()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return Err(SendFailure::Connect),
        Err(_) => return Err(SendFailure::Timeout),
    };
    // Small requests and answers must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    Ok(RawConnection {
        stream,
        buf: BytesMut::with_capacity(READ_BUFFER),
    })
}

/// The answer's head, interim answers (100, 103) skipped; the head's bytes are consumed
/// from the connection's buffer, what follows is the body's start.
async fn read_head(
    connection: &mut RawConnection,
    asked: Asked<'_>,
) -> Result<ResponseHead, SendFailure> {
    loop {
        if !connection.buf.is_empty() {
            match parse_response(&connection.buf, asked) {
                ResponseParse::Complete(head) => {
                    connection.buf.advance(head.len);
                    return Ok(head);
                }
                ResponseParse::Interim(len) => {
                    connection.buf.advance(len);
                    continue;
                }
                ResponseParse::Invalid => return Err(SendFailure::Broken),
                ResponseParse::Partial => {}
            }
        }
        connection.buf.reserve(READ_BUFFER);
        match connection.stream.read_buf(&mut connection.buf).await {
            Ok(0) | Err(_) => return Err(SendFailure::Broken),
            Ok(_) => {}
        }
    }
}

/// How relaying an answer ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Relayed {
    /// Whole; the backend's connection can carry another request.
    Reusable,
    /// Whole; the backend's connection closes (it said so, or the body ran to its close).
    Whole,
    /// The backend broke off or sent a malformed body, or the client went away: the
    /// client's connection must close (its answer is cut short).
    Broken,
    /// The 101 went out: the two connections are a tunnel from here on.
    Switched,
}

/// Where the body of an answer ends, as its bytes come.
enum BodyEnd {
    Length(u64),
    Chunked(ChunkedEnd),
    Close,
}

impl BodyEnd {
    fn of(framing: Framing) -> BodyEnd {
        match framing {
            Framing::Length(n) => BodyEnd::Length(n),
            Framing::Chunked => BodyEnd::Chunked(ChunkedEnd::new()),
            // What follows a 101 is the new protocol's, all of it: sent on with the head.
            Framing::UntilClose | Framing::Switched => BodyEnd::Close,
        }
    }

    /// How many of `bytes` belong to the body; `None`: malformed.
    fn take(&mut self, bytes: &[u8]) -> Option<usize> {
        match self {
            BodyEnd::Length(left) => {
                let n = (*left).min(bytes.len() as u64);
                *left -= n;
                Some(n as usize)
            }
            BodyEnd::Chunked(end) => end.scan(bytes).ok(),
            BodyEnd::Close => Some(bytes.len()),
        }
    }

    fn done(&self) -> bool {
        match self {
            BodyEnd::Length(left) => *left == 0,
            BodyEnd::Chunked(end) => end.done(),
            BodyEnd::Close => false,
        }
    }
}

/// Send the client the rewritten head and the body as it comes from the backend. The head
/// and the body's first bytes go out in one write: a small answer costs one system call.
pub(super) async fn relay<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    connection: &mut RawConnection,
    head: ResponseHead,
) -> Relayed {
    let mut end = BodyEnd::of(head.framing);
    let mut out = head.wire;
    let Some(first) = end.take(&connection.buf) else {
        return Relayed::Broken;
    };
    out.extend_from_slice(&connection.buf[..first]);
    connection.buf.advance(first);
    if client.write_all(&out).await.is_err() {
        return Relayed::Broken;
    }
    if head.framing == Framing::Switched {
        return Relayed::Switched;
    }
    while !end.done() {
        connection.buf.clear();
        connection.buf.reserve(READ_BUFFER);
        match connection.stream.read_buf(&mut connection.buf).await {
            Ok(0) if matches!(end, BodyEnd::Close) => return Relayed::Whole,
            Ok(0) | Err(_) => return Relayed::Broken,
            Ok(_) => {}
        }
        let Some(body) = end.take(&connection.buf) else {
            return Relayed::Broken;
        };
        if client.write_all(&connection.buf[..body]).await.is_err() {
            return Relayed::Broken;
        }
        connection.buf.advance(body);
    }
    // Bytes past the answer's end belong to no request: that connection is not kept.
    if head.reusable && connection.buf.is_empty() {
        Relayed::Reusable
    } else {
        Relayed::Whole
    }
}

/// Carry a switched connection (a WebSocket) both ways until either side closes: first
/// the bytes the client sent after its request (already read), then whatever comes. The
/// backend connection is never kept after it.
pub(super) async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    early: &[u8],
    mut connection: RawConnection,
) {
    if !early.is_empty() && connection.stream.write_all(early).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_backend, mut to_backend) = connection.stream.split();
    let upstream = async {
        let _ = tokio::io::copy(&mut from_client, &mut to_backend).await;
        let _ = to_backend.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut from_backend, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::pin!(upstream, downstream);
    // Once one side has closed, the other gets a moment to finish (the answer to a close
    // frame), then both go: a peer that never closes its half cannot hold the backend's
    // slot (copy_bidirectional would wait for both).
    tokio::select! {
        () = &mut upstream => {
            let _ = tokio::time::timeout(TUNNEL_GRACE, &mut downstream).await;
        }
        () = &mut downstream => {
            let _ = tokio::time::timeout(TUNNEL_GRACE, &mut upstream).await;
        }
    }
}

/// How long a tunnel's other direction may go on once one side closed.
const TUNNEL_GRACE: Duration = Duration::from_secs(1);
