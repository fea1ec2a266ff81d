//! A pool: the backends serving one request type, its rule, its algorithm, and choosing a
//! backend with room for one request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};

use super::backend::{Backend, Slot, Waiters};
use super::health::EjectionBudget;
use super::pick::{Algorithm, Candidate, Picker};

/// Which requests a pool takes (all of its parts must match).
pub(crate) struct Rule {
    pub header: Option<(HeaderName, HeaderValue)>,
    pub path_prefix: Option<String>,
}

impl Rule {
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        self.matches_head(req.uri().path(), |name| {
            req.headers().get(name).map(HeaderValue::as_bytes)
        })
    }

    /// As `matches`, for a request head given as its path and a lookup of a header's
    /// first value (the HTTP/1.1 fast path has no `Request`).
    pub fn matches_head<'a>(
        &self,
        path: &str,
        header: impl Fn(&HeaderName) -> Option<&'a [u8]>,
    ) -> bool {
        if let Some((name, value)) = &self.header
            && header(name) != Some(value.as_bytes())
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !path.starts_with(prefix.as_str())
        {
            return false;
        }
        self.header.is_some() || self.path_prefix.is_some()
    }

    /// For the snapshot: `header x-request-type: compute`, `path /v1/embed*`, `default`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((name, value)) = &self.header {
            parts.push(format!(
                "header {}: {}",
                name,
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        if let Some(prefix) = &self.path_prefix {
            parts.push(format!("path {prefix}*"));
        }
        if parts.is_empty() {
            "default".to_string()
        } else {
            parts.join(" and ")
        }
    }
}

/// The backends as of one membership change; replaced whole, never edited in place.
pub(crate) struct Members {
    pub generation: u64,
    pub backends: Vec<Arc<Backend>>,
}

pub(crate) struct Pool {
    pub name: String,
    pub algorithm: Algorithm,
    pub rule: Rule,
    picker: Box<dyn Picker>,
    members: RwLock<Arc<Members>>,
    pub ejections: Arc<EjectionBudget>,
    pub waiters: Arc<Waiters>,
    /// Choices made in panic mode (see [`Pool::choose`]).
    pub panics: AtomicU64,
}

/// What choosing a backend gave.
pub(crate) enum Choice {
    /// A backend with a slot reserved for this request, and the moment it was chosen (the
    /// request's start: no second clock read).
    Got(Slot, Instant),
    /// Some backend could take requests but every one of them is at max_connections (or a
    /// session's home backend is).
    Full,
    /// No backend may take a request (none, all down, ejected or open).
    NoneUp,
}

/// Pools up to this size pick from candidates on the stack.
const STACK_CANDIDATES: usize = 16;
/// Backends one choice skips at most: the ones a request tried (one per attempt) and the
/// ones lost to a race while choosing.
const SKIP_MAX: usize = 8;

/// Backends to pass over, by [`BackendHealth::serial`](super::health::BackendHealth::serial):
/// indices would not do, as the member list may change between two attempts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Skip {
    serials: [u64; SKIP_MAX],
    len: usize,
}

impl Skip {
    /// False when full (the caller stops looking).
    pub fn add(&mut self, serial: u64) -> bool {
        if self.len == SKIP_MAX {
            return false;
        }
        self.serials[self.len] = serial;
        self.len += 1;
        true
    }

    pub fn contains(&self, serial: u64) -> bool {
        self.serials[..self.len].contains(&serial)
    }
}

impl Pool {
    pub fn new(name: String, algorithm: Algorithm, rule: Rule) -> Pool {
        Pool {
            name,
            algorithm,
            rule,
            picker: super::pick::new_picker(algorithm),
            members: RwLock::new(Arc::new(Members {
                generation: 0,
                backends: Vec::new(),
            })),
            ejections: Arc::new(EjectionBudget::new()),
            waiters: Arc::new(Waiters::default()),
            panics: AtomicU64::new(0),
        }
    }

    pub fn members(&self) -> Arc<Members> {
        match self.members.read() {
            Ok(members) => members.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the members with `change` applied to a copy of them.
    pub fn update<T>(&self, change: impl FnOnce(&mut Vec<Arc<Backend>>) -> T) -> T {
        let mut guard = match self.members.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut backends = guard.backends.clone();
        let result = change(&mut backends);
        self.ejections.set_backends(backends.len() as u32);
        *guard = Arc::new(Members {
            generation: guard.generation + 1,
            backends,
        });
        result
    }

    /// A backend for one request, passing over those in `tried`.
    ///
    /// A request with a session (consistent hashing) stays with its home backend while that
    /// one is available, even when it is full: it queues for it (`Full`) instead of landing
    /// elsewhere and losing its session.
    ///
    /// Panic mode (Envoy's): when ejection and open circuits leave no backend at all, they
    /// are ignored and every backend the active checks do not call down takes requests
    /// again. Outlier ejection is capped at 10% of the pool, but the breakers are not, and
    /// a fault shared by every backend would otherwise answer everything with 503 — better
    /// to let the backends try. Counted in `panics`.
    pub fn choose(&self, members: &Members, tried: &Skip, session: Option<&[u8]>) -> Choice {
        let backends = &members.backends;
        if backends.is_empty() {
            return Choice::NoneUp;
        }
        let now = Instant::now();
        match self.choose_among(members, tried, session, now, false) {
            Choice::NoneUp if !backends.iter().any(|b| b.health.selectable(now)) => {
                let chosen = self.choose_among(members, tried, session, now, true);
                if matches!(chosen, Choice::Got(..)) {
                    self.panics.fetch_add(1, Ordering::Relaxed);
                }
                chosen
            }
            chosen => chosen,
        }
    }

    fn choose_among(
        &self,
        members: &Members,
        tried: &Skip,
        session: Option<&[u8]>,
        now: Instant,
        panic: bool,
    ) -> Choice {
        let backends = &members.backends;
        // A backend picked but lost (full by now, or its half-open probe taken) is skipped.
        let mut skip = *tried;
        for _ in 0..=backends.len().min(SKIP_MAX) {
            let Some(index) = self.pick(members, &skip, session, now, panic) else {
                break;
            };
            let backend = &backends[index];
            if let Some(slot) = backend.try_slot(now, panic) {
                return Choice::Got(slot, now);
            }
            let full = backend.in_flight.load(Ordering::Relaxed) >= backend.max_connections;
            if session.is_some() && full {
                return Choice::Full;
            }
            if !skip.add(backend.health.serial()) {
                break;
            }
        }
        let any_up = backends
            .iter()
            .any(|b| !skip.contains(b.health.serial()) && usable(b, now, panic));
        if any_up { Choice::Full } else { Choice::NoneUp }
    }

    /// The picker's choice among the candidates not skipped; an index into `members`.
    fn pick(
        &self,
        members: &Members,
        skip: &Skip,
        session: Option<&[u8]>,
        now: Instant,
        panic: bool,
    ) -> Option<usize> {
        let backends = &members.backends;
        let sticky = session.is_some();
        let candidate = |b| candidate(b, skip, sticky, now, panic);
        let picked = if backends.len() <= STACK_CANDIDATES {
            let dummy = &backends[0].ewma;
            let candidates: [Candidate<'_>; STACK_CANDIDATES] =
                std::array::from_fn(|i| match backends.get(i) {
                    Some(b) => candidate(b),
                    None => Candidate {
                        id: "",
                        weight: 1,
                        in_flight: 0,
                        max_connections: 0,
                        available: false,
                        ewma: dummy,
                    },
                });
            self.picker
                .pick(members.generation, &candidates[..backends.len()], session)
        } else {
            let candidates: Vec<Candidate<'_>> = backends.iter().map(candidate).collect();
            self.picker.pick(members.generation, &candidates, session)
        };
        picked.filter(|&i| i < backends.len())
    }

    /// Requests waiting in this pool right now.
    pub fn queued(&self) -> u32 {
        self.waiters.queued.load(Ordering::Relaxed)
    }
}

fn candidate<'a>(
    b: &'a Arc<Backend>,
    skip: &Skip,
    sticky: bool,
    now: Instant,
    panic: bool,
) -> Candidate<'a> {
    Candidate {
        id: &b.id,
        weight: b.weight(),
        in_flight: b.in_flight.load(Ordering::Relaxed),
        // A session ignores fullness: it waits for its home (see `Pool::choose`).
        max_connections: if sticky { 0 } else { b.max_connections },
        available: !skip.contains(b.health.serial()) && usable(b, now, panic),
        ewma: &b.ewma,
    }
}

/// May `backend` be picked: normally by its whole health, in panic mode unless checked down.
/// A draining backend takes nothing new, panic mode included: draining is the operator's
/// decision, not a symptom.
fn usable(backend: &Backend, now: Instant, panic: bool) -> bool {
    if backend.is_draining() {
        return false;
    }
    if panic {
        backend.health.not_down()
    } else {
        backend.health.selectable(now)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::BackendSource;
    use crate::backend::BackendParts;
    use crate::ewma::{DEFAULT_DECAY, DEFAULT_RTT, PeakEwma};
    use crate::health::{Admission, BackendHealth, BreakerConfig, Outcome, OutlierConfig};
    use std::time::Duration;

    /// A pool of `n` backends (nothing listens on their ports: choosing never connects).
    pub(crate) fn pool_of(
        algorithm: Algorithm,
        n: u16,
        max_connections: u32,
        breaker: BreakerConfig,
    ) -> Pool {
        let pool = Pool::new(
            "p".to_string(),
            algorithm,
            Rule {
                header: None,
                path_prefix: None,
            },
        );
        let (waiters, ejections) = (pool.waiters.clone(), pool.ejections.clone());
        pool.update(|backends| {
            for i in 0..n {
                backends.push(Arc::new(Backend::new(BackendParts {
                    id: format!("127.0.0.1:{}", 1000 + i),
                    host: "127.0.0.1".to_string(),
                    port: 1000 + i,
                    addrs: Vec::new(),
                    weight: 1,
                    max_connections,
                    source: BackendSource::Config,
                    ewma: PeakEwma::new(DEFAULT_RTT, DEFAULT_DECAY),
                    health: BackendHealth::new(OutlierConfig::default(), breaker.clone(), 2, 3),
                    waiters: waiters.clone(),
                    ejections: ejections.clone(),
                })));
            }
        });
        pool
    }

    fn got(choice: Choice) -> Slot {
        match choice {
            Choice::Got(slot, _) => slot,
            Choice::Full => panic!("full"),
            Choice::NoneUp => panic!("none up"),
        }
    }

    fn fail(backend: &Backend, times: u32) {
        for _ in 0..times {
            backend.health.on_result(
                Outcome::Broken,
                Admission::Normal,
                Instant::now(),
                &backend.ejections,
            );
        }
    }

    #[test]
    fn panic_mode_ignores_ejection_and_breakers_when_nothing_else_is_left() {
        let pool = pool_of(Algorithm::RoundRobin, 2, 10, BreakerConfig::default());
        let members = pool.members();
        for backend in &members.backends {
            fail(backend, 5);
        }
        // One ejected (the budget allows one of two), both circuits open.
        assert!(
            members
                .backends
                .iter()
                .all(|b| !b.health.selectable(Instant::now()))
        );
        let slot = got(pool.choose(&members, &Skip::default(), None));
        assert_eq!(slot.admission(), Admission::Normal);
        assert_eq!(pool.panics.load(Ordering::Relaxed), 1);
        drop(slot);
        // Backends the active checks call down stay out even then.
        for backend in &members.backends {
            for _ in 0..3 {
                backend.health.on_check(false);
            }
        }
        assert!(matches!(
            pool.choose(&members, &Skip::default(), None),
            Choice::NoneUp
        ));
    }

    #[test]
    fn a_session_waits_for_its_full_home_instead_of_moving() {
        let pool = pool_of(Algorithm::ConsistentHash, 3, 1, BreakerConfig::default());
        let members = pool.members();
        let session = Some(&b"user-7"[..]);
        let home = got(pool.choose(&members, &Skip::default(), session));
        let home_serial = home.backend.health.serial();
        assert!(matches!(
            pool.choose(&members, &Skip::default(), session),
            Choice::Full
        ));
        // Others still get the free backends.
        let other = got(pool.choose(&members, &Skip::default(), Some(&b"user-8"[..])));
        drop(other);
        drop(home);
        let again = got(pool.choose(&members, &Skip::default(), session));
        assert_eq!(again.backend.health.serial(), home_serial);
        assert_eq!(home_serial_in_flight(&members, home_serial), 1);
    }

    fn home_serial_in_flight(members: &Members, serial: u64) -> u32 {
        members
            .backends
            .iter()
            .find(|b| b.health.serial() == serial)
            .map(|b| b.in_flight.load(Ordering::Relaxed))
            .unwrap_or(u32::MAX)
    }

    #[test]
    fn tried_backends_stay_skipped_when_the_members_change() {
        let pool = pool_of(Algorithm::RoundRobin, 3, 10, BreakerConfig::default());
        let before = pool.members();
        let mut tried = Skip::default();
        let tried_serial = before.backends[2].health.serial();
        tried.add(tried_serial);
        // The first member leaves: indices shift, serials do not.
        pool.update(|backends| {
            backends.remove(0);
        });
        let after = pool.members();
        for _ in 0..10 {
            let slot = got(pool.choose(&after, &tried, None));
            assert_ne!(slot.backend.health.serial(), tried_serial);
        }
    }

    #[test]
    fn dropping_a_slot_gives_back_its_place_and_its_probe() {
        let breaker = BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_millis(1),
        };
        let pool = pool_of(Algorithm::RoundRobin, 1, 10, breaker);
        let members = pool.members();
        let backend = &members.backends[0];
        fail(backend, 1);
        std::thread::sleep(Duration::from_millis(5));
        let probe = got(pool.choose(&members, &Skip::default(), None));
        assert_eq!(probe.admission(), Admission::Probe);
        assert_eq!(backend.in_flight.load(Ordering::Relaxed), 1);
        // Half-open with the probe out: no other request goes.
        assert!(backend.try_slot(Instant::now(), false).is_none());
        drop(probe); // cancelled, no result
        assert_eq!(backend.in_flight.load(Ordering::Relaxed), 0);
        let next = backend
            .try_slot(Instant::now(), false)
            .expect("the probe slot is free");
        assert_eq!(next.admission(), Admission::Probe);
    }
}
