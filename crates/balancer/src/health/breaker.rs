//! The per-backend circuit breaker: closed, open, half-open with exactly one probe.

use std::sync::atomic::Ordering;

use super::{Admission, BackendHealth, CircuitState, nanos, reset};

impl BackendHealth {
    pub(super) fn breaker_state(&self, t: u64) -> CircuitState {
        match self.open_until.load(Ordering::Acquire) {
            0 => CircuitState::Closed,
            until if t < until => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    pub(super) fn breaker_failure(&self, t: u64, admission: Admission) {
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

    pub(super) fn breaker_success(&self, t: u64, admission: Admission) {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};
    use std::time::Instant;

    use super::*;
    use crate::health::Outcome;
    use crate::health::test_support::*;

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
}
