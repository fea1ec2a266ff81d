//! A pool: the backends serving one request type, its rule, its algorithm, and choosing a
//! backend with room for one request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hyper::Request;
use hyper::header::{HeaderName, HeaderValue};

use super::backend::{Backend, Waiters};
use super::health::EjectionBudget;
use super::pick::{Algorithm, Candidate, Picker};

/// Which requests a pool takes (all of its parts must match).
pub(crate) struct Rule {
    pub header: Option<(HeaderName, HeaderValue)>,
    pub path_prefix: Option<String>,
}

impl Rule {
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        if let Some((name, value)) = &self.header
            && req.headers().get(name) != Some(value)
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !req.uri().path().starts_with(prefix.as_str())
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
}

/// What choosing a backend gave.
pub(crate) enum Choice {
    /// A backend with a slot reserved for this request, its index in `Members`, and the
    /// moment it was chosen (the request's start: no second clock read).
    Got(Arc<Backend>, usize, Instant),
    /// Some backend could take requests but every one of them is at max_connections.
    Full,
    /// No backend may take a request (none, all down, ejected or open).
    NoneUp,
}

/// Pools up to this size pick from candidates on the stack.
const STACK_CANDIDATES: usize = 16;

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

    /// A backend for one request, skipping those in `tried` (bit i: index i).
    pub fn choose(&self, members: &Members, tried: u64, session: Option<&[u8]>) -> Choice {
        let backends = &members.backends;
        if backends.is_empty() {
            return Choice::NoneUp;
        }
        let now = Instant::now();
        // A backend picked but lost (full by now, or its half-open probe taken) is skipped.
        let mut skip = tried;
        for _ in 0..backends.len().min(64) + 1 {
            let picked = if backends.len() <= STACK_CANDIDATES {
                let dummy = &backends[0].ewma;
                let candidates: [Candidate<'_>; STACK_CANDIDATES] =
                    std::array::from_fn(|i| match backends.get(i) {
                        Some(b) => candidate(b, skip, i, now),
                        None => Candidate {
                            id: "",
                            weight: 1,
                            in_flight: 0,
                            max_connections: 0,
                            available: false,
                            ewma: dummy,
                        },
                    });
                let candidates = &candidates[..backends.len()];
                self.picker.pick(members.generation, candidates, session)
            } else {
                let candidates: Vec<Candidate<'_>> = backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| candidate(b, skip, i, now))
                    .collect();
                self.picker.pick(members.generation, &candidates, session)
            };
            let Some(index) = picked.filter(|&i| i < backends.len()) else {
                return self.why_none(backends, skip, now);
            };
            let backend = &backends[index];
            if backend.try_reserve() {
                if backend.health.begin(now) {
                    return Choice::Got(backend.clone(), index, now);
                }
                backend.release();
            }
            if index < 64 {
                skip |= 1 << index;
            }
        }
        self.why_none(backends, skip, now)
    }

    fn why_none(&self, backends: &[Arc<Backend>], skip: u64, now: Instant) -> Choice {
        let any_up = backends
            .iter()
            .enumerate()
            .any(|(i, b)| !skipped(skip, i) && b.health.selectable(now));
        if any_up { Choice::Full } else { Choice::NoneUp }
    }

    /// Requests waiting in this pool right now.
    pub fn queued(&self) -> u32 {
        self.waiters.queued.load(Ordering::Relaxed)
    }
}

fn skipped(skip: u64, index: usize) -> bool {
    index < 64 && skip & (1 << index) != 0
}

fn candidate(backend: &Backend, skip: u64, index: usize, now: Instant) -> Candidate<'_> {
    Candidate {
        id: &backend.id,
        weight: backend.weight,
        in_flight: backend.in_flight.load(Ordering::Relaxed),
        max_connections: backend.max_connections,
        available: !skipped(skip, index) && backend.health.selectable(now),
        ewma: &backend.ewma,
    }
}
