//! Whether a backend may take requests: active HTTP checks (rise/fall), passive outlier
//! ejection (Envoy's `consecutive_5xx` with a pool-wide ejection budget) and a circuit
//! breaker (closed, open, half-open with exactly one probe).
//!
//! Time is passed in (`now: Instant`) so the state machine is testable without sleeping.
//! The request path only reads atomics ([`BackendHealth::selectable`] runs for every candidate
//! of every pick); the rare transitions (an ejection, a check result) take a small mutex.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{CircuitState, Health};

/// Active health checking of one pool's backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Path requested with GET; a 2xx or 3xx answer is healthy.
    pub path: String,
    /// Time between two checks of a backend.
    pub interval: Duration,
    /// Connect + answer deadline of one check.
    pub timeout: Duration,
    /// Consecutive good checks that bring a backend up (0 counts as 1).
    pub rise: u32,
    /// Consecutive failed checks that take it down (0 counts as 1).
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: "/health".to_string(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// Passive outlier detection, as Envoy's `consecutive_5xx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Consecutive failed requests (5xx, connect failure, timeout) that eject; 0 disables.
    pub consecutive_failures: u32,
    /// The n-th ejection lasts `base_ejection × n`, at most `max_ejection`: a backend that
    /// keeps failing stays out longer each time instead of flapping every 30 s.
    pub base_ejection: Duration,
    /// Cap on one ejection's length.
    pub max_ejection: Duration,
    /// At most this percentage of the pool ejected at once (at least one backend may be):
    /// if many fail together the cause is likely shared, and ejecting them all would only
    /// overload the rest.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
}

/// The per-backend circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive gateway errors (connect failure, timeout, broken connection; not 5xx
    /// answers) that open the circuit; 0 disables the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before one probe request is let through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(10),
        }
    }
}

/// How one proxied request to a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer below 500 (a 4xx is the client's fault, not the backend's).
    Success,
    /// A 5xx answer.
    ServerError,
    /// Could not connect (refused, reset before the answer, unreachable).
    ConnectFailure,
    /// No answer within the deadline.
    Timeout,
    /// The connection broke after the request went out, before a full answer: the backend
    /// crashed or closed mid-request (the client's own failures are not reported at all).
    Broken,
}

impl Outcome {
    /// Counts for outlier detection: anything but success.
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }

    /// Counts for the circuit breaker: only the gateway errors (no usable answer at all).
    /// A 5xx is an answer: counting it here too would make the breaker a second outlier
    /// detector with the same threshold but without the pool's ejection cap, so a fault
    /// shared by every backend (a bad deploy answering 500) would take them all out.
    pub fn is_gateway_error(self) -> bool {
        matches!(
            self,
            Outcome::ConnectFailure | Outcome::Timeout | Outcome::Broken
        )
    }
}

/// How a request was let through by [`BackendHealth::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed (or ignored, in panic mode).
    Normal,
    /// The single half-open probe: only its result decides the circuit, and whoever holds
    /// it must give it back ([`BackendHealth::end_probe`]) if no result comes.
    Probe,
}

/// Serials of backend healths, so the ejection budget can tell its holders apart.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// Pool-wide: how many backends are ejected; never more than max(1, n * pct / 100).
///
/// Holds the end time of every ejection in force, so a slot frees itself when its ejection
/// ends, without the ejected backend having to report back (it gets no requests while out).
/// Each entry names its backend (its [`BackendHealth::serial`]) so that removing an ejected
/// backend from the pool frees its slot at once ([`EjectionBudget::release`]).
#[derive(Debug, Default)]
pub struct EjectionBudget {
    backends: AtomicU32,
    /// (serial, end time) of the ejections granted; expired ones are dropped on the next look.
    ejected_until: Mutex<Vec<(u64, Instant)>>,
}

impl EjectionBudget {
    /// A budget for an empty pool; call [`EjectionBudget::set_backends`] as it fills.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's current size (call whenever backends are added or removed).
    pub fn set_backends(&self, n: u32) {
        self.backends.store(n, Ordering::Relaxed);
    }

    /// How many backends may be out at once with `max_percent`: at least one, so a pool of
    /// fewer than ten can still eject its bad backend.
    pub fn max_ejected(&self, max_percent: u32) -> u32 {
        let n = u64::from(self.backends.load(Ordering::Relaxed));
        let allowed = n * u64::from(max_percent.min(100)) / 100;
        u32::try_from(allowed).unwrap_or(u32::MAX).max(1)
    }

    /// Ejections in force at `now`.
    pub fn ejected(&self, now: Instant) -> u32 {
        let mut until = lock(&self.ejected_until);
        until.retain(|&(_, end)| end > now);
        u32::try_from(until.len()).unwrap_or(u32::MAX)
    }

    /// The backend `serial` left the pool: its ejection, if any, no longer counts.
    pub fn release(&self, serial: u64) {
        lock(&self.ejected_until).retain(|&(holder, _)| holder != serial);
    }

    /// Takes a slot for `serial` until `end` if fewer than the maximum are out at `now`.
    fn try_take(&self, serial: u64, now: Instant, end: Instant, max_percent: u32) -> bool {
        let max = self.max_ejected(max_percent) as usize;
        let mut until = lock(&self.ejected_until);
        until.retain(|&(_, e)| e > now);
        if until.len() >= max {
            return false;
        }
        until.push((serial, end));
        true
    }
}

const CHECK_UNKNOWN: u8 = 0;
const CHECK_UP: u8 = 1;
const CHECK_DOWN: u8 = 2;

/// One backend's health: active-check verdict, outlier ejection and circuit breaker.
///
/// Times are stored as nanoseconds since the struct's creation plus one, so 0 can mean
/// "none" in an atomic.
#[derive(Debug)]
pub struct BackendHealth {
    outlier: OutlierConfig,
    breaker: BreakerConfig,
    rise: u32,
    fall: u32,
    origin: Instant,
    serial: u64,

    /// Consecutive failures counted for outlier detection.
    outlier_failures: AtomicU32,
    ejections: AtomicU32,
    /// When the current (or last) ejection ends; 0 when never ejected.
    ejected_until: AtomicU64,
    /// Serializes ejection decisions so two failing requests cannot eject twice.
    ejecting: Mutex<()>,

    /// Consecutive failures counted by the closed breaker.
    breaker_failures: AtomicU32,
    /// 0: closed. Otherwise open until this time, half-open after it.
    open_until: AtomicU64,
    /// The half-open probe is under way (its holder reports or gives it back).
    probe_taken: AtomicBool,

    /// The active checks' verdict: `CHECK_*`.
    checked: AtomicU8,
    /// (consecutive good checks, consecutive failed checks).
    check_streak: Mutex<(u32, u32)>,
}

impl BackendHealth {
    /// A backend nothing is known about yet: health unknown (it takes traffic), circuit
    /// closed. `rise` and `fall` of 0 count as 1.
    pub fn new(outlier: OutlierConfig, breaker: BreakerConfig, rise: u32, fall: u32) -> Self {
        BackendHealth {
            outlier,
            breaker,
            rise: rise.max(1),
            fall: fall.max(1),
            origin: origin_in_the_past(),
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            outlier_failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejecting: Mutex::new(()),
            breaker_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probe_taken: AtomicBool::new(false),
            checked: AtomicU8::new(CHECK_UNKNOWN),
            check_streak: Mutex::new((0, 0)),
        }
    }

    /// May a new request be sent (check not Down, not ejected, circuit closed, or half-open
    /// with its probe slot free)? Cheap: on every pick, for every candidate.
    pub fn selectable(&self, now: Instant) -> bool {
        let t = self.ticks(now);
        self.checked.load(Ordering::Relaxed) != CHECK_DOWN
            && !self.is_ejected(t)
            && match self.breaker_state(t) {
                CircuitState::Closed => true,
                CircuitState::Open => false,
                CircuitState::HalfOpen => !self.probe_taken.load(Ordering::Acquire),
            }
    }

    /// Panic mode's test: everything but the active checks' Down verdict is ignored
    /// (ejection and circuit alike), see `Pool::choose`.
    pub fn not_down(&self) -> bool {
        self.checked.load(Ordering::Relaxed) != CHECK_DOWN
    }

    /// This backend's identity in its pool's [`EjectionBudget`] (unique in the process).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Called once the backend was picked: `Normal` with the circuit closed, `Probe` for the
    /// one request a half-open circuit lets through, `None` when open or when another
    /// request holds the probe (lost the race: pick another). No time limit on a probe: its
    /// holder reports its result or gives it back when dropped ([`Self::end_probe`]).
    pub fn begin(&self, now: Instant) -> Option<Admission> {
        let t = self.ticks(now);
        match self.breaker_state(t) {
            CircuitState::Closed => Some(Admission::Normal),
            CircuitState::Open => None,
            CircuitState::HalfOpen => self
                .probe_taken
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Admission::Probe),
        }
    }

    /// A probe ended without a result (its request was cancelled): let the next one in.
    pub fn end_probe(&self) {
        self.probe_taken.store(false, Ordering::Release);
    }

    /// The request's outcome (passive outlier detection + breaker). Only the probe's own
    /// result moves a half-open circuit; it also gives the probe slot back.
    pub fn on_result(
        &self,
        outcome: Outcome,
        admission: Admission,
        now: Instant,
        budget: &EjectionBudget,
    ) {
        let t = self.ticks(now);
        if outcome.is_failure() {
            self.count_outlier_failure(now, t, budget);
        } else {
            reset(&self.outlier_failures);
        }
        if outcome.is_gateway_error() {
            self.breaker_failure(t, admission);
        } else {
            self.breaker_success(t, admission);
        }
    }

    /// An active check's result (rise/fall counting).
    pub fn on_check(&self, ok: bool) {
        let mut streak = lock(&self.check_streak);
        let (good, bad) = &mut *streak;
        if ok {
            *good = good.saturating_add(1);
            *bad = 0;
            if *good >= self.rise {
                self.checked.store(CHECK_UP, Ordering::Relaxed);
            }
        } else {
            *bad = bad.saturating_add(1);
            *good = 0;
            if *bad >= self.fall {
                self.checked.store(CHECK_DOWN, Ordering::Relaxed);
            }
        }
    }

    /// Ejected while an ejection is in force; otherwise the active checks' verdict.
    pub fn health(&self, now: Instant) -> Health {
        if self.is_ejected(self.ticks(now)) {
            return Health::Ejected;
        }
        match self.checked.load(Ordering::Relaxed) {
            CHECK_UP => Health::Up,
            CHECK_DOWN => Health::Down,
            _ => Health::Unknown,
        }
    }

    /// The breaker's state at `now` (open turns half-open by time alone, without a call).
    pub fn circuit(&self, now: Instant) -> CircuitState {
        self.breaker_state(self.ticks(now))
    }

    /// Times ejected since creation.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Time left of the ejection in force, if any.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let t = self.ticks(now);
        let until = self.ejected_until.load(Ordering::Acquire);
        (until > t).then(|| Duration::from_nanos(until - t))
    }

    /// `now` as stored in the atomics: ns since `origin`, plus one (never 0).
    fn ticks(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX - 1) + 1
    }

    fn is_ejected(&self, t: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > t
    }

    fn count_outlier_failure(&self, now: Instant, t: u64, budget: &EjectionBudget) {
        let threshold = self.outlier.consecutive_failures;
        // Late failures of requests sent before the ejection say nothing new.
        if threshold == 0 || self.is_ejected(t) {
            return;
        }
        let failures = self.outlier_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= threshold {
            self.try_eject(now, t, budget);
        }
    }

    /// Ejects for `base × n` (capped) if still warranted and the pool's budget has room; if
    /// it has none the count stays, so the next failure asks again.
    fn try_eject(&self, now: Instant, t: u64, budget: &EjectionBudget) {
        let _one_at_a_time = lock(&self.ejecting);
        if self.is_ejected(t)
            || self.outlier_failures.load(Ordering::Acquire) < self.outlier.consecutive_failures
        {
            return;
        }
        let n = self.ejections.load(Ordering::Acquire).saturating_add(1);
        let length = self
            .outlier
            .base_ejection
            .saturating_mul(n)
            .min(self.outlier.max_ejection);
        if !budget.try_take(
            self.serial,
            now,
            now + length,
            self.outlier.max_ejected_percent,
        ) {
            return;
        }
        self.ejections.store(n, Ordering::Release);
        self.ejected_until
            .store(t.saturating_add(nanos(length)), Ordering::Release);
        self.outlier_failures.store(0, Ordering::Release);
    }

    fn breaker_state(&self, t: u64) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if t < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    fn breaker_failure(&self, t: u64, admission: Admission) {
        let threshold = self.breaker.failure_threshold;
        if admission == Admission::Probe {
            // The probe failed: open again for another period (frees the probe slot).
            self.open(t);
            return;
        }
        // Open or half-open: late results of requests sent before; only the probe decides.
        if self.breaker_state(t) == CircuitState::Closed && threshold > 0 {
            let failures = self.breaker_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if failures >= threshold {
                self.open(t);
            }
        }
    }

    fn breaker_success(&self, t: u64, admission: Admission) {
        if admission == Admission::Probe {
            self.breaker_failures.store(0, Ordering::Release);
            self.open_until.store(0, Ordering::Release);
            self.probe_taken.store(false, Ordering::Release);
        } else if self.breaker_state(t) == CircuitState::Closed {
            reset(&self.breaker_failures);
        }
    }

    fn open(&self, t: u64) {
        self.breaker_failures.store(0, Ordering::Release);
        let until = t.saturating_add(nanos(self.breaker.open_for)).max(t + 1);
        self.open_until.store(until, Ordering::Release);
        self.probe_taken.store(false, Ordering::Release);
    }
}

/// A base a day back, so an `Instant` taken a little before the struct was created (a caller's
/// `now` read earlier) still maps to a distinct time instead of saturating at the origin.
fn origin_in_the_past() -> Instant {
    let now = Instant::now();
    [86_400, 3_600, 1]
        .into_iter()
        .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
        .unwrap_or(now)
}

/// Stores 0 only if needed: a success on every request must not dirty a shared cache line.
fn reset(counter: &AtomicU32) {
    if counter.load(Ordering::Relaxed) != 0 {
        counter.store(0, Ordering::Release);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The guarded data stays consistent across a panic elsewhere (plain counters), so recover.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One active check: GET `path` with Host header, `timeout`; ok = 2xx/3xx answer.
///
/// A fresh HTTP/1.1 connection each time (`Connection: close`), so the check also proves the
/// backend still accepts connections; the body is not read. The timeout covers connect,
/// request and response headers.
pub async fn check_once(addr: SocketAddr, host: &str, config: &HealthConfig) -> bool {
    match tokio::time::timeout(config.timeout, fetch_status(addr, host, &config.path)).await {
        Ok(Ok(status)) => status.is_success() || status.is_redirection(),
        Ok(Err(error)) => {
            tracing::debug!(%addr, path = %config.path, "health check failed: {error:#}");
            false
        }
        Err(_) => {
            tracing::debug!(%addr, path = %config.path, timeout = ?config.timeout,
                "health check timed out");
            false
        }
    }
}

async fn fetch_status(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<hyper::StatusCode> {
    use anyhow::Context as _;
    let request = Request::get(path)
        .header(
            HOST,
            if host.is_empty() {
                addr.to_string()
            } else {
                host.to_string()
            },
        )
        .header(USER_AGENT, "sutazai-top-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("invalid health check request (path {path:?}, host {host:?})"))?;
    let stream = TcpStream::connect(addr).await.context("connect")?;
    // Best effort: a check is one small request, Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    let mut connection = std::pin::pin!(connection);
    // The connection task must run for the sender to become ready and for the answer to
    // arrive: drive both here rather than spawning a task that could outlive the check.
    let exchange = async {
        sender.ready().await.context("connection not ready")?;
        sender.send_request(request).await.context("request")
    };
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased;
        response = &mut exchange => Ok(response?.status()),
        ended = &mut connection => {
            ended.context("connection")?;
            // With `Connection: close` the connection may finish in the same wake-up as the
            // answer: the answer is then already waiting (or the exchange fails at once).
            Ok(exchange.await?.status())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    const SEC: Duration = Duration::from_secs(1);

    fn backend() -> BackendHealth {
        BackendHealth::new(
            OutlierConfig::default(),
            BreakerConfig {
                failure_threshold: 0, // outlier tests: breaker off
                open_for: 10 * SEC,
            },
            2,
            3,
        )
    }

    fn breaker(threshold: u32) -> BackendHealth {
        BackendHealth::new(
            OutlierConfig {
                consecutive_failures: 0, // breaker tests: outlier detection off
                ..OutlierConfig::default()
            },
            BreakerConfig {
                failure_threshold: threshold,
                open_for: 10 * SEC,
            },
            2,
            3,
        )
    }

    fn budget(n: u32) -> EjectionBudget {
        let budget = EjectionBudget::new();
        budget.set_backends(n);
        budget
    }

    /// Failures that count for both outlier detection and the breaker.
    fn fail(h: &BackendHealth, times: u32, now: Instant, budget: &EjectionBudget) {
        for _ in 0..times {
            h.on_result(Outcome::Broken, Admission::Normal, now, budget);
        }
    }

    #[test]
    fn defaults_match_the_issue() {
        let h = HealthConfig::default();
        assert_eq!(
            (h.path.as_str(), h.interval, h.timeout, h.rise, h.fall),
            ("/health", 2 * SEC, SEC, 2, 3)
        );
        let o = OutlierConfig::default();
        assert_eq!(
            (
                o.consecutive_failures,
                o.base_ejection,
                o.max_ejection,
                o.max_ejected_percent
            ),
            (5, 30 * SEC, 300 * SEC, 10)
        );
    }

    #[test]
    fn five_consecutive_failures_eject_for_thirty_seconds() {
        let h = backend();
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 4, t0, &b);
        assert!(h.selectable(t0));
        assert_eq!(h.health(t0), Health::Unknown);
        h.on_result(Outcome::Timeout, Admission::Normal, t0, &b);
        assert!(!h.selectable(t0));
        assert_eq!(h.health(t0), Health::Ejected);
        assert_eq!(h.ejections(), 1);
        assert_eq!(h.ejected_for(t0), Some(30 * SEC));
        assert_eq!(h.ejected_for(t0 + 20 * SEC), Some(10 * SEC));
        assert_eq!(b.ejected(t0), 1);
        // Back when the time is up, and the budget slot is free again.
        let back = t0 + 30 * SEC;
        assert!(h.selectable(back));
        assert_eq!(h.health(back), Health::Unknown);
        assert_eq!(h.ejected_for(back), None);
        assert_eq!(b.ejected(back), 0);
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let h = backend();
        let b = budget(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            fail(&h, 4, t0, &b);
            h.on_result(Outcome::Success, Admission::Normal, t0, &b);
        }
        assert!(h.selectable(t0));
        assert_eq!(h.ejections(), 0);
        // Every failure kind counts.
        h.on_result(Outcome::ConnectFailure, Admission::Normal, t0, &b);
        h.on_result(Outcome::Timeout, Admission::Normal, t0, &b);
        fail(&h, 3, t0, &b);
        assert_eq!(h.health(t0), Health::Ejected);
    }

    #[test]
    fn ejection_grows_with_each_ejection_up_to_the_cap() {
        let h = backend();
        let b = budget(10);
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..12 {
            fail(&h, 5, now, &b);
            let length = h.ejected_for(now).expect("ejected");
            lengths.push(length.as_secs());
            now += length;
        }
        assert_eq!(
            lengths,
            [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
        );
        assert_eq!(h.ejections(), 12);
    }

    #[test]
    fn failures_while_ejected_do_not_extend_it() {
        let h = backend();
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 5, t0, &b);
        fail(&h, 20, t0 + SEC, &b);
        assert_eq!(h.ejections(), 1);
        assert_eq!(h.ejected_for(t0 + SEC), Some(29 * SEC));
    }

    #[test]
    fn the_budget_caps_ejections_at_ten_percent_but_allows_one() {
        let t0 = Instant::now();
        // 20 backends: 2 may be out.
        let b = budget(20);
        let pool: Vec<_> = (0..20).map(|_| backend()).collect();
        for h in &pool {
            fail(h, 5, t0, &b);
        }
        let ejected = pool.iter().filter(|h| !h.selectable(t0)).count();
        assert_eq!(ejected, 2);
        assert_eq!(b.ejected(t0), 2);
        // A refused backend is ejected by its next failure once a slot frees up.
        let later = t0 + 30 * SEC;
        assert_eq!(b.ejected(later), 0);
        let refused = pool
            .iter()
            .find(|h| h.ejections() == 0)
            .expect("a refused one");
        h_fail_once(refused, later, &b);
        assert_eq!(refused.health(later), Health::Ejected);

        // 3 backends: 10% is 0, but one may still be out.
        let b = budget(3);
        let pool: Vec<_> = (0..3).map(|_| backend()).collect();
        for h in &pool {
            fail(h, 5, t0, &b);
        }
        assert_eq!(pool.iter().filter(|h| !h.selectable(t0)).count(), 1);
        assert_eq!(b.max_ejected(10), 1);
        assert_eq!(budget(0).max_ejected(10), 1);
        assert_eq!(budget(50).max_ejected(10), 5);
        assert_eq!(budget(50).max_ejected(500), 50);
    }

    fn h_fail_once(h: &BackendHealth, now: Instant, b: &EjectionBudget) {
        h.on_result(Outcome::ConnectFailure, Admission::Normal, now, b);
    }

    #[test]
    fn rise_and_fall_counting() {
        let h = backend();
        let t0 = Instant::now();
        assert_eq!(h.health(t0), Health::Unknown);
        assert!(h.selectable(t0), "unknown takes traffic");
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Unknown);
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
        h.on_check(false);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Up, "fall is 3");
        h.on_check(true); // breaks the failing streak
        h.on_check(false);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Up);
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Down);
        assert!(!h.selectable(t0));
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Down, "rise is 2");
        assert!(!h.selectable(t0));
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
        assert!(h.selectable(t0));
    }

    #[test]
    fn zero_rise_and_fall_count_as_one() {
        let h = BackendHealth::new(OutlierConfig::default(), BreakerConfig::default(), 0, 0);
        let t0 = Instant::now();
        h.on_check(false);
        assert_eq!(h.health(t0), Health::Down);
        h.on_check(true);
        assert_eq!(h.health(t0), Health::Up);
    }

    #[test]
    fn breaker_opens_then_half_opens_with_one_probe() {
        let h = breaker(3);
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 2, t0, &b);
        assert_eq!(h.circuit(t0), CircuitState::Closed);
        assert!(h.begin(t0).is_some());
        fail(&h, 1, t0, &b);
        assert_eq!(h.circuit(t0), CircuitState::Open);
        assert!(!h.selectable(t0));
        assert!(h.begin(t0).is_none());
        let t1 = t0 + 9 * SEC;
        assert_eq!(h.circuit(t1), CircuitState::Open);
        // Late answers of earlier requests change nothing while open.
        h.on_result(Outcome::Success, Admission::Normal, t1, &b);
        assert_eq!(h.circuit(t1), CircuitState::Open);

        let t2 = t0 + 10 * SEC;
        assert_eq!(h.circuit(t2), CircuitState::HalfOpen);
        assert!(h.selectable(t2));
        assert_eq!(h.begin(t2), Some(Admission::Probe), "the probe");
        assert!(!h.selectable(t2), "probe slot taken");
        assert!(h.begin(t2).is_none(), "exactly one probe");
        // The probe fails: open again for a full period.
        h.on_result(Outcome::Timeout, Admission::Probe, t2 + SEC, &b);
        assert_eq!(h.circuit(t2 + SEC), CircuitState::Open);
        assert_eq!(h.circuit(t2 + 10 * SEC), CircuitState::Open);
        let t3 = t2 + 11 * SEC;
        assert_eq!(h.circuit(t3), CircuitState::HalfOpen);
        assert_eq!(h.begin(t3), Some(Admission::Probe));
        // The probe succeeds: closed, with a fresh failure count.
        h.on_result(Outcome::Success, Admission::Probe, t3, &b);
        assert_eq!(h.circuit(t3), CircuitState::Closed);
        assert_eq!(h.begin(t3), Some(Admission::Normal));
        assert_eq!(h.begin(t3), Some(Admission::Normal));
        fail(&h, 2, t3, &b);
        assert_eq!(h.circuit(t3), CircuitState::Closed);
    }

    #[test]
    fn a_success_resets_the_breaker_count() {
        let h = breaker(3);
        let b = budget(10);
        let t0 = Instant::now();
        for _ in 0..5 {
            fail(&h, 2, t0, &b);
            h.on_result(Outcome::Success, Admission::Normal, t0, &b);
        }
        assert_eq!(h.circuit(t0), CircuitState::Closed);
    }

    #[test]
    fn a_cancelled_probe_gives_its_slot_back_at_once() {
        let h = breaker(1);
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 1, t0, &b);
        let half_open = t0 + 10 * SEC;
        assert_eq!(h.begin(half_open), Some(Admission::Probe));
        // No time limit: a slow probe is not joined by a second one, however long it takes.
        assert!(h.begin(half_open + 100 * SEC).is_none());
        // Its request was cancelled: the next request is the probe.
        h.end_probe();
        assert!(h.selectable(half_open));
        assert_eq!(h.begin(half_open), Some(Admission::Probe));
    }

    #[test]
    fn only_the_probes_own_result_decides_a_half_open_circuit() {
        let h = breaker(1);
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 1, t0, &b);
        let half_open = t0 + 10 * SEC;
        assert_eq!(h.begin(half_open), Some(Admission::Probe));
        // A late answer of a request sent before the circuit opened: no verdict.
        h.on_result(Outcome::Success, Admission::Normal, half_open, &b);
        assert_eq!(h.circuit(half_open), CircuitState::HalfOpen);
        h.on_result(Outcome::Timeout, Admission::Normal, half_open, &b);
        assert_eq!(h.circuit(half_open), CircuitState::HalfOpen);
        assert!(h.begin(half_open).is_none(), "the probe is still under way");
        // A 5xx is an answer: the probe reached a working backend.
        h.on_result(Outcome::ServerError, Admission::Probe, half_open, &b);
        assert_eq!(h.circuit(half_open), CircuitState::Closed);
    }

    #[test]
    fn answers_with_5xx_eject_but_never_open_the_circuit() {
        let h = BackendHealth::new(OutlierConfig::default(), BreakerConfig::default(), 2, 3);
        let b = budget(10);
        let t0 = Instant::now();
        for _ in 0..20 {
            h.on_result(Outcome::ServerError, Admission::Normal, t0, &b);
        }
        assert_eq!(h.health(t0), Health::Ejected);
        assert_eq!(h.circuit(t0), CircuitState::Closed);
        // Gateway errors open it.
        let h = breaker(3);
        for outcome in [Outcome::ConnectFailure, Outcome::Timeout, Outcome::Broken] {
            h.on_result(outcome, Admission::Normal, t0, &b);
        }
        assert_eq!(h.circuit(t0), CircuitState::Open);
    }

    #[test]
    fn removing_an_ejected_backend_frees_its_budget_slot() {
        let b = budget(3);
        let (first, second) = (backend(), backend());
        let t0 = Instant::now();
        fail(&first, 5, t0, &b);
        assert_eq!(first.health(t0), Health::Ejected);
        fail(&second, 5, t0, &b);
        assert_eq!(second.health(t0), Health::Unknown, "budget full");
        b.release(first.serial());
        assert_eq!(b.ejected(t0), 0);
        second.on_result(Outcome::Broken, Admission::Normal, t0, &b);
        assert_eq!(second.health(t0), Health::Ejected);
        // Releasing a backend that holds no slot changes nothing.
        b.release(first.serial());
        assert_eq!(b.ejected(t0), 1);
    }

    #[test]
    fn only_one_thread_wins_the_half_open_probe() {
        for round in 0..50 {
            let h = Arc::new(breaker(1));
            let b = budget(10);
            let t0 = Instant::now();
            fail(&h, 1, t0, &b);
            let half_open = t0 + 10 * SEC;
            let threads = 8;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let h = Arc::clone(&h);
                    let barrier = Arc::clone(&barrier);
                    std::thread::spawn(move || {
                        barrier.wait();
                        h.selectable(half_open) && h.begin(half_open).is_some()
                    })
                })
                .collect();
            let winners = handles
                .into_iter()
                .map(|t| t.join().expect("prober thread"))
                .filter(|&won| won)
                .count();
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[test]
    fn outlier_and_breaker_together() {
        let h = BackendHealth::new(OutlierConfig::default(), BreakerConfig::default(), 2, 3);
        let b = budget(10);
        let t0 = Instant::now();
        fail(&h, 5, t0, &b);
        assert_eq!(h.health(t0), Health::Ejected);
        assert_eq!(h.circuit(t0), CircuitState::Open);
        // After 10 s the circuit is half-open but the ejection still holds it out.
        assert_eq!(h.circuit(t0 + 10 * SEC), CircuitState::HalfOpen);
        assert!(!h.selectable(t0 + 10 * SEC));
        // After 30 s the probe may go.
        let back = t0 + 30 * SEC;
        assert!(h.selectable(back));
        assert_eq!(h.begin(back), Some(Admission::Probe));
        h.on_result(Outcome::Success, Admission::Probe, back, &b);
        assert_eq!(
            (h.health(back), h.circuit(back)),
            (Health::Unknown, CircuitState::Closed)
        );
    }

    // ---- check_once against real sockets ----

    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use std::convert::Infallible;
    use tokio::net::TcpListener;

    /// A tiny backend: 200 on /health, 302 on /moved, 503 otherwise; records Host headers.
    async fn spawn_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&hosts);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let host = request
                            .headers()
                            .get(HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        lock(&seen).push(host);
                        let status = match request.uri().path() {
                            "/health" => StatusCode::OK,
                            "/moved" => StatusCode::FOUND,
                            _ => StatusCode::SERVICE_UNAVAILABLE,
                        };
                        async move {
                            let mut response = Response::new(Empty::<Bytes>::new());
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, hosts)
    }

    fn config(path: &str, timeout: Duration) -> HealthConfig {
        HealthConfig {
            path: path.to_string(),
            timeout,
            ..HealthConfig::default()
        }
    }

    #[tokio::test]
    async fn check_once_against_a_real_backend() {
        let (addr, hosts) = spawn_backend().await;
        assert!(check_once(addr, "agent.local", &config("/health", SEC)).await);
        assert!(
            check_once(addr, "agent.local", &config("/moved", SEC)).await,
            "3xx is ok"
        );
        assert!(
            !check_once(addr, "agent.local", &config("/other", SEC)).await,
            "503"
        );
        assert!(check_once(addr, "", &config("/health", SEC)).await);
        let hosts = lock(&hosts).clone();
        assert_eq!(hosts[..3], ["agent.local"; 3]);
        assert_eq!(hosts[3], addr.to_string(), "empty host: the address");
    }

    #[tokio::test]
    async fn check_once_rejects_a_bad_path_without_panicking() {
        let (addr, _) = spawn_backend().await;
        assert!(!check_once(addr, "agent.local", &config("health check", SEC)).await);
        assert!(!check_once(addr, "bad\nhost", &config("/health", SEC)).await);
    }

    #[tokio::test]
    async fn check_once_fails_fast_on_a_closed_port() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr")
        }; // dropped: nothing listens there any more
        let started = Instant::now();
        assert!(!check_once(addr, "x", &config("/health", 5 * SEC)).await);
        assert!(started.elapsed() < SEC, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn check_once_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream); // accept, never read nor answer
            }
        });
        let timeout = Duration::from_millis(300);
        let started = Instant::now();
        assert!(!check_once(addr, "x", &config("/health", timeout)).await);
        let elapsed = started.elapsed();
        assert!(elapsed >= timeout && elapsed < 3 * SEC, "{elapsed:?}");
        holder.abort();
    }
}
