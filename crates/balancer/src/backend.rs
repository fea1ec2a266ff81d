//! One backend: its address, its lock-free counters, its health, and its pool of idle
//! keep-alive connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::BackendSource;
use super::body::ReqBody;
use super::ewma::PeakEwma;
use super::health::{Admission, BackendHealth, EjectionBudget};
use super::histogram::LatencyHistogram;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 512;
/// A kept connection idle longer than this is closed rather than reused. Backends often
/// close idle keep-alive connections after about 5 s (nginx 75 s, Node 5 s, gunicorn 2 s):
/// a request written just as the backend's FIN is on its way is lost, and a non-idempotent
/// one cannot be retried. Reusing only recently active connections keeps that race rare.
pub(crate) const IDLE_REUSE_MAX_MS: u64 = 2_000;
/// For requests that cannot be retried, a tighter bound (HAProxy's `http-reuse safe` idea:
/// risk a stale connection only where a failure can be retried).
pub(crate) const IDLE_REUSE_UNSAFE_MAX_MS: u64 = 1_000;

/// A coarse clock (milliseconds since the first use), moved on by [`tick_coarse_clock`]
/// from a timer task: stamping each connection returned to the pool with it costs an atomic
/// load, not a clock read per request.
static COARSE_MS: AtomicU64 = AtomicU64::new(0);
static COARSE_ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Move the coarse clock to now (called every few tens of milliseconds).
pub(crate) fn tick_coarse_clock() {
    let origin = *COARSE_ORIGIN.get_or_init(Instant::now);
    let ms = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
    COARSE_MS.fetch_max(ms, Ordering::Relaxed);
}

fn coarse_now_ms() -> u64 {
    COARSE_MS.load(Ordering::Relaxed)
}

/// Tests age idle connections without sleeping (the clock only moves forward).
#[cfg(test)]
pub(crate) fn advance_coarse_clock(ms: u64) {
    COARSE_MS.fetch_add(ms, Ordering::Relaxed);
}

/// Requests waiting for a slot in one pool; a finished request wakes one.
#[derive(Default)]
pub(crate) struct Waiters {
    pub queued: AtomicU32,
    pub notify: Notify,
}

pub(crate) type Sender = SendRequest<ReqBody>;

pub(crate) struct Backend {
    /// `host:port`.
    pub id: String,
    pub host: String,
    pub port: u16,
    /// Every address the host resolved to, tried in order (`localhost` may give `::1`
    /// first while the backend listens on 127.0.0.1 only).
    pub addrs: Vec<SocketAddr>,
    /// Changed at run time through the API (`Balancer::change_backend`), which also bumps
    /// the pool's generation so pickers rebuild their tables.
    weight: AtomicU32,
    pub max_connections: u32,
    pub source: BackendSource,
    /// Draining: no new requests (in-flight ones finish, checks go on), so an operator can
    /// take it out for maintenance without cutting anyone off, as HAProxy's `drain`.
    pub draining: AtomicBool,
    /// `Host` for requests that came without one (h2 without :authority, health checks).
    pub host_header: HeaderValue,
    pub in_flight: AtomicU32,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub ewma: PeakEwma,
    pub latency: LatencyHistogram,
    pub health: BackendHealth,
    /// Set once removed from its pool: its connections are not kept any more.
    pub removed: AtomicBool,
    /// The pool's waiters, woken when a request here finishes.
    pub waiters: Arc<Waiters>,
    /// The pool's outlier ejection budget.
    pub ejections: Arc<EjectionBudget>,
    /// Kept hyper connections (h2c clients, and HTTP/1.1 ones the fast path handed over).
    idle: IdleList<Sender>,
    /// Kept connections of the HTTP/1.1 fast path.
    idle_raw: IdleList<RawConnection>,
    /// What the previous snapshot saw (only the snapshot touches it).
    pub last_tick: Mutex<LastTick>,
}

#[derive(Default)]
pub(crate) struct LastTick {
    pub requests: u64,
    pub latency_counts: Vec<u64>,
}

/// Why a request could not be had from a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendFailure {
    Connect,
    Timeout,
    /// The connection broke after the request went out. Counted against the backend: a
    /// healthy backend answers what it was sent; a crash, a reset or a close mid-request
    /// is what outlier detection and the breaker exist to notice.
    Broken,
    /// The client's side failed (its request body broke off): not the backend's fault,
    /// and not reported to its health.
    Client,
    /// The request's deadline passed while its body waited for the client (a slow
    /// upload): not the backend's fault either.
    ClientTimeout,
}

/// One of a backend's `max_connections` slots, held from the pick until the answer was
/// streamed to its end (or the request failed, or was cancelled: dropping the future that
/// holds it gives it back, so a client hanging up can never leak a slot). Carries the
/// half-open probe too: a probe dropped without a result frees the probe slot.
pub(crate) struct Slot {
    pub backend: Arc<Backend>,
    admission: Admission,
}

impl Slot {
    pub fn admission(&self) -> Admission {
        self.admission
    }

    /// The result was reported to the backend's health, which freed the probe slot.
    pub fn reported(&mut self) {
        self.admission = Admission::Normal;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.admission == Admission::Probe {
            self.backend.health.end_probe();
        }
        self.backend.release();
    }
}

pub(crate) struct BackendParts {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub addrs: Vec<SocketAddr>,
    pub weight: u32,
    pub max_connections: u32,
    pub source: BackendSource,
    pub ewma: PeakEwma,
    pub health: BackendHealth,
    pub waiters: Arc<Waiters>,
    pub ejections: Arc<EjectionBudget>,
}

/// Kept keep-alive connections with the coarse time each became idle, most recent last.
pub(crate) struct IdleList<T>(Mutex<Vec<(T, u64)>>);

impl<T> Default for IdleList<T> {
    fn default() -> Self {
        IdleList(Mutex::new(Vec::new()))
    }
}

impl<T> IdleList<T> {
    /// The most recently used connection that is still open and was idle at most
    /// `max_idle_ms`. The most recent is last: the ones below it are older still, so one
    /// past [`IDLE_REUSE_MAX_MS`] means they all go; one past only a tighter bound stays
    /// for requests that may be retried.
    fn take(&self, max_idle_ms: u64, open: impl Fn(&T) -> bool) -> Option<T> {
        let now = coarse_now_ms();
        let mut idle = self.0.lock().ok()?;
        while let Some(&(_, since)) = idle.last() {
            let age = now.saturating_sub(since);
            if age > IDLE_REUSE_MAX_MS {
                idle.clear();
                return None;
            }
            if age > max_idle_ms {
                return None;
            }
            if let Some((connection, _)) = idle.pop()
                && open(&connection)
            {
                return Some(connection);
            }
        }
        None
    }

    fn put(&self, connection: T) {
        if let Ok(mut idle) = self.0.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((connection, coarse_now_ms()));
        }
    }

    fn clear(&self) {
        if let Ok(mut idle) = self.0.lock() {
            idle.clear();
        }
    }

    /// Close the kept connections that can no longer be reused: idle past
    /// [`IDLE_REUSE_MAX_MS`] (`take` would never hand them out) or closed by the backend.
    /// Without this a connection is only dropped when it is next looked at, and after a
    /// burst of load the backends' closed sockets sit in CLOSE_WAIT for ever.
    fn sweep(&self, open: impl Fn(&T) -> bool) {
        let now = coarse_now_ms();
        if let Ok(mut idle) = self.0.lock() {
            idle.retain(|(connection, since)| {
                now.saturating_sub(*since) <= IDLE_REUSE_MAX_MS && open(connection)
            });
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.0.lock().map_or(true, |idle| idle.is_empty())
    }
}

/// A backend connection the HTTP/1.1 fast path speaks on itself, with its read buffer
/// (kept with it: bytes a backend sent ahead would belong to no request, so it is empty
/// whenever the connection is idle).
pub(crate) struct RawConnection {
    pub stream: TcpStream,
    pub buf: BytesMut,
}

impl RawConnection {
    /// False once the backend closed it (or sent something unasked) while it was idle.
    /// Usually costs no system call: tokio knows the socket has nothing to read unless
    /// the reactor saw it become readable since the last read.
    fn still_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock)
    }
}

impl Backend {
    pub fn new(parts: BackendParts) -> Backend {
        let host_header = HeaderValue::from_str(&parts.id)
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Backend {
            id: parts.id,
            host: parts.host,
            port: parts.port,
            addrs: parts.addrs,
            weight: AtomicU32::new(parts.weight),
            max_connections: parts.max_connections,
            source: parts.source,
            draining: AtomicBool::new(false),
            host_header,
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ewma: parts.ewma,
            latency: LatencyHistogram::new(),
            health: parts.health,
            removed: AtomicBool::new(false),
            waiters: parts.waiters,
            ejections: parts.ejections,
            idle: IdleList::default(),
            idle_raw: IdleList::default(),
            last_tick: Mutex::new(LastTick::default()),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A slot for one request, admitted by the circuit breaker at `now`; `None` when
    /// every slot is taken or the breaker refuses (open, or its probe is taken).
    pub fn try_slot(self: &Arc<Self>, now: Instant, ignore_breaker: bool) -> Option<Slot> {
        if !self.try_reserve() {
            return None;
        }
        let admission = if ignore_breaker {
            Some(Admission::Normal)
        } else {
            self.health.begin(now)
        };
        match admission {
            Some(admission) => Some(Slot {
                backend: self.clone(),
                admission,
            }),
            None => {
                self.release();
                None
            }
        }
    }

    /// Take one of `max_connections` slots; false when all are taken.
    fn try_reserve(&self) -> bool {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.max_connections {
                return false;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// Give a slot back and wake a queued request, if any waits.
    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.waiters.queued.load(Ordering::Acquire) > 0 {
            self.waiters.notify.notify_one();
        }
    }

    /// The most recently used idle hyper connection that is still open and was idle at
    /// most `max_idle_ms`.
    pub fn take_idle(&self, max_idle_ms: u64) -> Option<Sender> {
        self.idle.take(max_idle_ms, |sender| !sender.is_closed())
    }

    /// Keep a hyper connection whose last response was read to the end.
    pub fn put_idle(&self, sender: Sender) {
        if sender.is_closed() || self.removed.load(Ordering::Relaxed) {
            return;
        }
        self.idle.put(sender);
    }

    /// As `take_idle`, for the HTTP/1.1 fast path's own connections.
    pub fn take_idle_raw(&self, max_idle_ms: u64) -> Option<RawConnection> {
        self.idle_raw.take(max_idle_ms, RawConnection::still_open)
    }

    /// As `put_idle`, for the HTTP/1.1 fast path's own connections.
    pub fn put_idle_raw(&self, connection: RawConnection) {
        if !self.removed.load(Ordering::Relaxed) {
            self.idle_raw.put(connection);
        }
    }

    /// Close the idle connections that can no longer be reused (see `IdleList::sweep`).
    pub fn sweep_idle(&self) {
        self.idle.sweep(|sender| !sender.is_closed());
        self.idle_raw.sweep(RawConnection::still_open);
    }

    /// Close every idle connection (the backend left its pool).
    pub fn drop_idle(&self) {
        self.idle.clear();
        self.idle_raw.clear();
    }

    /// A new keep-alive HTTP/1.1 connection; its driver runs as a task of this runtime.
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, SendFailure> {
        let stream = match tokio::time::timeout(timeout, self.connect_any()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(_)) => return Err(SendFailure::Connect),
            Err(_) => return Err(SendFailure::Timeout),
        };
        // Small requests and answers must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| SendFailure::Connect)?;
        tokio::spawn(async move {
            // Ends when the backend closes or every sender is dropped; nothing to report.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The first of the backend's addresses that accepts a connection.
    pub async fn connect_any(&self) -> std::io::Result<TcpStream> {
        let mut last_error = None;
        for addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::BreakerConfig;
    use crate::pick::Algorithm;
    use crate::pool::tests::pool_of;

    /// A backend at `addrs`, in a pool of its own.
    fn backend_at(addrs: Vec<SocketAddr>) -> Backend {
        let pool = pool_of(Algorithm::RoundRobin, 1, 10, BreakerConfig::default());
        let members = pool.members();
        let template = &members.backends[0];
        Backend::new(BackendParts {
            id: template.id.clone(),
            host: template.host.clone(),
            port: addrs.first().map_or(0, |a| a.port()),
            addrs,
            weight: 1,
            max_connections: 10,
            source: template.source.clone(),
            ewma: PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10)),
            health: BackendHealth::new(Default::default(), BreakerConfig::default(), 2, 3),
            waiters: template.waiters.clone(),
            ejections: template.ejections.clone(),
        })
    }

    #[tokio::test]
    async fn every_resolved_address_is_tried_in_turn() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        }; // dropped: refused from now on
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = listener.local_addr().expect("addr");
        let backend = backend_at(vec![closed, open]);
        let stream = backend.connect_any().await.expect("the second address");
        assert_eq!(stream.peer_addr().expect("peer"), open);
        assert!(backend_at(vec![closed]).connect_any().await.is_err());
    }

    #[tokio::test]
    async fn kept_connections_idle_too_long_are_not_reused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let backend = backend_at(vec![addr]);
        let sender = backend
            .connect(Duration::from_secs(1))
            .await
            .expect("connect");
        backend.put_idle(sender);
        let sender = backend.take_idle(IDLE_REUSE_MAX_MS).expect("just kept");
        backend.put_idle(sender);
        advance_coarse_clock(1_500);
        assert!(
            backend.take_idle(IDLE_REUSE_UNSAFE_MAX_MS).is_none(),
            "too old for a request that cannot be retried"
        );
        let sender = backend
            .take_idle(IDLE_REUSE_MAX_MS)
            .expect("still young enough for one that can");
        backend.put_idle(sender);
        advance_coarse_clock(IDLE_REUSE_MAX_MS + 500);
        assert!(backend.take_idle(IDLE_REUSE_MAX_MS).is_none());
        assert!(backend.idle.is_empty(), "closed");
        holder.abort();
    }
}
