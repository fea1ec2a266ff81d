//! Passive outlier ejection (Envoy's `consecutive_5xx`), bounded by the pool's
//! [`EjectionBudget`].

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{BackendHealth, EjectionBudget, lock, nanos};

impl BackendHealth {
    pub(super) fn is_ejected(&self, t: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > t
    }

    pub(super) fn count_outlier_failure(&self, now: Instant, t: u64, budget: &EjectionBudget) {
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
        let n = self.decayed_multiplier(t).saturating_add(1);
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
        self.ejections.fetch_add(1, Ordering::AcqRel);
        self.multiplier.store(n, Ordering::Release);
        self.ejected_until
            .store(t.saturating_add(nanos(length)), Ordering::Release);
        self.outlier_failures.store(0, Ordering::Release);
    }
}

impl BackendHealth {
    /// The last ejection's multiplier less one for every `base_ejection` since it ended.
    fn decayed_multiplier(&self, t: u64) -> u32 {
        let last = self.multiplier.load(Ordering::Acquire);
        let ended = self.ejected_until.load(Ordering::Acquire);
        let base = nanos(self.outlier.base_ejection).max(1);
        let quiet_periods = t.saturating_sub(ended) / base;
        let quiet_periods = u32::try_from(quiet_periods).unwrap_or(u32::MAX);
        last.saturating_sub(quiet_periods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Health;
    use crate::health::test_support::*;
    use crate::health::{Admission, Outcome};

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
    fn the_multiplier_falls_by_one_for_every_base_period_in() {
        let h = backend();
        let b = budget(10);
        let mut now = Instant::now();
        for _ in 0..3 {
            fail(&h, 5, now, &b);
            now += h.ejected_for(now).expect("ejected");
        }
        // Out for 30, 60, 90 s; then 65 s in (two whole base periods): 3 - 2 + 1 = 2.
        now += 65 * SEC;
        fail(&h, 5, now, &b);
        assert_eq!(h.ejected_for(now), Some(60 * SEC));
        now += 60 * SEC;
        // A long quiet spell takes it back to the first length.
        now += 3600 * SEC;
        fail(&h, 5, now, &b);
        assert_eq!(h.ejected_for(now), Some(30 * SEC));
        assert_eq!(h.ejections(), 5, "the count since start never falls");
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
}
