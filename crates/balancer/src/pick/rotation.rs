//! Round-robin and nginx's smooth weighted round-robin.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidate, Picker, count_eligible, nth_eligible, unpoison};

/// Each eligible backend in turn. One shared ticket counter: the k-th pick goes to the
/// (k mod eligible)-th eligible backend, so the rotation is exact even across threads, and a
/// backend next to an ineligible one does not get its share as well (as "walk to the next
/// eligible" would give it).
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A picker whose rotation starts at the first eligible backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Picker for RoundRobin {
    fn pick(&self, _: u64, candidates: &[Candidate<'_>], _: Option<&[u8]>) -> Option<usize> {
        let eligible = count_eligible(candidates);
        if eligible == 0 {
            return None;
        }
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        nth_eligible(candidates, ticket % eligible)
    }
}

/// nginx's smooth weighted round-robin (`ngx_http_upstream_get_peer`): each pick adds every
/// eligible backend's weight to its `current`, takes the largest `current` (first on ties) and
/// subtracts the total weight from it. Over any cycle of Σweights picks each backend gets
/// exactly its weight, interleaved (5:1:1 gives a a b a c a a, not a a a a a b c).
#[derive(Debug, Default)]
pub struct SmoothWeightedRoundRobin {
    table: Mutex<SmoothTable>,
}

#[derive(Debug, Default)]
struct SmoothTable {
    /// The generation `current` was built for (`None` before the first pick).
    generation: Option<u64>,
    current: Vec<i64>,
}

impl SmoothWeightedRoundRobin {
    /// A picker with an empty table (built on the first pick).
    pub fn new() -> Self {
        Self::default()
    }
}

impl SmoothTable {
    /// Starts over when the pool changed, as nginx does on reload; reuses the allocation.
    fn fit(&mut self, generation: u64, len: usize) {
        if self.generation != Some(generation) || self.current.len() != len {
            self.generation = Some(generation);
            self.current.clear();
            self.current.resize(len, 0);
        }
    }
}

impl Picker for SmoothWeightedRoundRobin {
    fn pick(
        &self,
        generation: u64,
        candidates: &[Candidate<'_>],
        _: Option<&[u8]>,
    ) -> Option<usize> {
        let mut table = unpoison(self.table.lock());
        table.fit(generation, candidates.len());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            if !candidate.eligible() {
                continue;
            }
            let weight = i64::from(candidate.effective_weight());
            table.current[index] += weight;
            total += weight;
            if best.is_none_or(|b| table.current[index] > table.current[b]) {
                best = Some(index);
            }
        }
        let chosen = best?;
        table.current[chosen] -= total;
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Pool;
    use super::*;

    fn sequence(picker: &dyn Picker, pool: &Pool, n: usize) -> Vec<usize> {
        let candidates = pool.candidates();
        (0..n)
            .map(|_| picker.pick(1, &candidates, None).expect("eligible"))
            .collect()
    }

    #[test]
    fn round_robin_rotates_exactly() {
        let picker = RoundRobin::new();
        let pool = Pool::new(3);
        assert_eq!(sequence(&picker, &pool, 7), [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(Pool::new(5).tally(&picker, 5000), [1000; 5]);
    }

    #[test]
    fn round_robin_skips_ineligible_without_doubling_a_neighbour() {
        let picker = RoundRobin::new();
        let mut pool = Pool::new(4);
        pool.available[1] = false;
        pool.in_flight[3] = 100; // full
        assert_eq!(sequence(&picker, &pool, 6), [0, 2, 0, 2, 0, 2]);
        let mut pool = Pool::new(4);
        pool.available[1] = false;
        let tally = pool.tally(&picker, 3000);
        assert_eq!(tally, [1000, 0, 1000, 1000]);
    }

    #[test]
    fn round_robin_ignores_weights() {
        let pool = Pool::weighted(&[5, 1, 1]);
        assert_eq!(pool.tally(&RoundRobin::new(), 300), [100, 100, 100]);
    }

    #[test]
    fn smooth_weighted_matches_nginx_sequence() {
        let picker = SmoothWeightedRoundRobin::new();
        let pool = Pool::weighted(&[5, 1, 1]);
        let a_b_c = sequence(&picker, &pool, 14);
        assert_eq!(a_b_c, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_weighted_gives_exact_proportions_per_cycle() {
        let weights = [3, 7, 1, 4, 0];
        let pool = Pool::weighted(&weights);
        let cycle: usize = weights.iter().map(|w| (*w).max(1) as usize).sum();
        let picker = SmoothWeightedRoundRobin::new();
        for _ in 0..5 {
            let tally = pool.tally(&picker, cycle);
            assert_eq!(tally, [3, 7, 1, 4, 1]);
        }
    }

    #[test]
    fn smooth_weighted_interleaves_light_backends() {
        // 1:1:8 as nginx spreads it: the light ones apart, never back to back.
        let picker = SmoothWeightedRoundRobin::new();
        let pool = Pool::weighted(&[1, 1, 8]);
        let picks = sequence(&picker, &pool, 100);
        for cycle in picks.chunks(10) {
            assert_eq!(cycle, [2, 2, 2, 0, 2, 2, 1, 2, 2, 2]);
        }
    }

    #[test]
    fn smooth_weighted_redistributes_an_ineligible_share() {
        let picker = SmoothWeightedRoundRobin::new();
        let mut pool = Pool::weighted(&[2, 1, 1]);
        pool.available[0] = false;
        assert_eq!(pool.tally(&picker, 100), [0, 50, 50]);
    }

    #[test]
    fn smooth_weighted_restarts_on_a_new_generation() {
        let picker = SmoothWeightedRoundRobin::new();
        let pool = Pool::weighted(&[5, 1, 1]);
        let candidates = pool.candidates();
        picker.pick(1, &candidates, None);
        picker.pick(1, &candidates, None);
        let restarted: Vec<_> = (0..7)
            .map(|_| picker.pick(2, &candidates, None).expect("eligible"))
            .collect();
        assert_eq!(restarted, [0, 0, 1, 0, 2, 0, 0]);
    }
}
