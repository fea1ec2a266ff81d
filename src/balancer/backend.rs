//! One backend: its address, its lock-free counters, its health, and its pool of idle
//! keep-alive connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::BackendSource;
use super::body::ReqBody;
use super::ewma::PeakEwma;
use super::health::{BackendHealth, EjectionBudget};
use super::histogram::LatencyHistogram;

/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 512;

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
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_connections: u32,
    pub source: BackendSource,
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
    idle: Mutex<Vec<Sender>>,
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
    /// The connection broke after the request went out.
    Broken,
}

pub(crate) struct BackendParts {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_connections: u32,
    pub source: BackendSource,
    pub ewma: PeakEwma,
    pub health: BackendHealth,
    pub waiters: Arc<Waiters>,
    pub ejections: Arc<EjectionBudget>,
}

impl Backend {
    pub fn new(parts: BackendParts) -> Backend {
        let host_header = HeaderValue::from_str(&parts.id)
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Backend {
            id: parts.id,
            host: parts.host,
            port: parts.port,
            addr: parts.addr,
            weight: parts.weight,
            max_connections: parts.max_connections,
            source: parts.source,
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
            idle: Mutex::new(Vec::new()),
            last_tick: Mutex::new(LastTick::default()),
        }
    }

    /// Take one of `max_connections` slots; false when all are taken.
    pub fn try_reserve(&self) -> bool {
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
    pub fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.waiters.queued.load(Ordering::Acquire) > 0 {
            self.waiters.notify.notify_one();
        }
    }

    /// The most recently used idle connection that is still open.
    pub fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keep a connection whose last response was read to the end.
    pub fn put_idle(&self, sender: Sender) {
        if sender.is_closed() || self.removed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
    }

    /// Close every idle connection (the backend left its pool).
    pub fn drop_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// A new keep-alive HTTP/1.1 connection; its driver runs as a task of this runtime.
    pub async fn connect(&self, timeout: Duration) -> Result<Sender, SendFailure> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
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
}
