//! Whether a backend may take requests: active HTTP checks (rise/fall), passive outlier
//! ejection (Envoy's `consecutive_5xx` with a pool-wide ejection budget) and a circuit
//! breaker (closed, open, half-open with exactly one probe).
//!
//! Time is passed in (`now: Instant`) so the state machine is testable without sleeping.
//! The request path only reads atomics ([`BackendHealth::selectable`] runs for every candidate
//! of every pick); the rare transitions (an ejection, a check result) take a small mutex.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{CircuitState, Health};

mod breaker;
mod budget;
mod check;
mod config;
mod outlier;

pub use budget::EjectionBudget;
pub use check::check_once;
pub use config::{BreakerConfig, HealthConfig, OutlierConfig};

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
    /// Times ejected since the backend was added (what the pane shows).
    ejections: AtomicU32,
    /// The `n` of the last ejection's `base × n`: it falls by one for every `base` the
    /// backend then stays in (as Envoy's multiplier does), so a backend that fails once a
    /// day is not out for the cap a week later. Only touched under `ejecting`.
    multiplier: AtomicU32,
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
            multiplier: AtomicU32::new(0),
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

/// Helpers the submodules' tests share.
#[cfg(test)]
mod test_support {
    use super::*;

    pub(super) const SEC: Duration = Duration::from_secs(1);

    pub(super) fn backend() -> BackendHealth {
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

    pub(super) fn breaker(threshold: u32) -> BackendHealth {
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

    pub(super) fn budget(n: u32) -> EjectionBudget {
        let budget = EjectionBudget::new();
        budget.set_backends(n);
        budget
    }

    /// Failures that count for both outlier detection and the breaker.
    pub(super) fn fail(h: &BackendHealth, times: u32, now: Instant, budget: &EjectionBudget) {
        for _ in 0..times {
            h.on_result(Outcome::Broken, Admission::Normal, now, budget);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
}
