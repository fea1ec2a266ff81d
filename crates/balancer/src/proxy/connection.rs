//! One task per client connection: the accept loop, the HTTP/1.1 fast path (`h1`) first,
//! hyper for what it hands over (h2c and the unusual HTTP/1.x), the idle and shutdown
//! watchdog, and the count of requests hyper refused.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::h1::{self, Ended};
use super::{ClientContext, MAX_HEADER_BYTES, Shared, handle};

/// How long shutdown waits for client connections to finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

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
    let mut io = Watched {
        inner: stream,
        activity: activity.clone(),
        read_ahead: BytesMut::new(),
    };
    let forwarded_for = HeaderValue::try_from(peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let context = Arc::new(ClientContext {
        shared: shared.clone(),
        forwarded_for,
    });
    // The idle check and shutdown run in a task of their own: polled beside the connection
    // they would be polled (a timer, a lock) on every wake of it, several per request.
    let close = Arc::new(CloseRequest::default());
    let watchdog = tokio::spawn(watch_connection(
        close.clone(),
        activity,
        idle_timeout,
        shutdown,
    ));
    let mut buf = BytesMut::new();
    let ended = fast_path(&mut io, &mut buf, &context, &close, idle_timeout).await;
    if let Some(Ended::Handover) = ended {
        shared
            .counters
            .general_path_connections
            .fetch_add(1, Ordering::Relaxed);
        io.read_ahead = buf;
        serve_with_hyper(&builder, io, context, &close, idle_timeout, &shared).await;
    }
    watchdog.abort();
}

/// The HTTP/1.1 fast path on this connection, until it ends or hands over to hyper. Asked
/// to close mid-request (idle too long: a client that stopped reading its answer; or
/// shutdown), it finishes the request but gives up after one more idle timeout.
async fn fast_path(
    io: &mut Watched,
    buf: &mut BytesMut,
    context: &ClientContext,
    close: &CloseRequest,
    idle_timeout: Duration,
) -> Option<Ended> {
    let serving = h1::serve(io, buf, context, || close.requested.load(Ordering::SeqCst));
    tokio::pin!(serving);
    let mut registered = false;
    let mut hard_stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if !registered {
            // A tokio task always polls with the same waker: handed over once.
            close.register(cx.waker());
            registered = true;
        }
        if hard_stop.is_none() && close.requested.load(Ordering::SeqCst) {
            hard_stop = Some(Box::pin(tokio::time::sleep(idle_timeout)));
        }
        if let Some(stop) = hard_stop.as_mut()
            && stop.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        serving.as_mut().poll(cx).map(Some)
    })
    .await
}

/// hyper serves the rest of the connection (HTTP/1.1 or h2c), from the bytes the fast
/// path read but did not serve.
async fn serve_with_hyper(
    builder: &auto::Builder<TokioExecutor>,
    io: Watched,
    context: Arc<ClientContext>,
    close: &CloseRequest,
    idle_timeout: Duration,
    shared: &Shared,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let context = context.clone();
        async move { Ok::<_, Infallible>(handle(&context, req).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing = false;
    let mut registered = false;
    // Set once closing: a graceful close waits for the requests under way, and a client
    // that stops reading its answer would hold its connection (and the backend's slot)
    // forever. After one more idle timeout the connection is dropped.
    let mut hard_stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let result = std::future::poll_fn(|cx| {
        if !registered {
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
    if let Some(Err(err)) = result {
        count_client_error(shared, err.as_ref());
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
    /// Bytes the fast path read but left to hyper (handed over with the connection): read
    /// before the socket. Empty while the fast path serves.
    read_ahead: BytesMut,
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
        if !self.read_ahead.is_empty() {
            let n = self.read_ahead.len().min(buf.remaining());
            buf.put_slice(&self.read_ahead[..n]);
            self.read_ahead.advance(n);
            return Poll::Ready(Ok(()));
        }
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
