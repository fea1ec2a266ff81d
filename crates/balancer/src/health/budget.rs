//! The pool-wide ejection budget: how many of a pool's backends may be ejected at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::lock;

/// Pool-wide: how many backends are ejected; never more than max(1, n * pct / 100).
///
/// Holds the end time of every ejection in force, so a slot frees itself when its ejection
/// ends, without the ejected backend having to report back (it gets no requests while out).
/// Each entry names its backend (its [`BackendHealth::serial`](super::BackendHealth::serial))
/// so that removing an ejected backend from the pool frees its slot at once
/// ([`EjectionBudget::release`]).
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
    pub(super) fn try_take(
        &self,
        serial: u64,
        now: Instant,
        end: Instant,
        max_percent: u32,
    ) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::health::test_support::*;
    use crate::health::{Admission, BackendHealth, Outcome};

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
}
