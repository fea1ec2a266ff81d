//! Least-connections and weighted least-connections.
//!
//! Both make two passes over the pool and no allocation: the first finds the lowest load and
//! how many share it, the second takes the tied backend a shared ticket counter points at.
//! Breaking ties by turn (not by "first in the list") matters: when the pool is idle every
//! backend ties at zero, and always picking index 0 would send a sequential client to one
//! backend only.

use std::cmp::Ordering as Cmp;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{Candidate, Picker};

/// Fewest requests in flight; ties take turns.
#[derive(Debug, Default)]
pub struct LeastConnections {
    next: AtomicUsize,
}

impl LeastConnections {
    /// A picker whose tie rotation starts at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Picker for LeastConnections {
    fn pick(&self, _: u64, candidates: &[Candidate<'_>], _: Option<&[u8]>) -> Option<usize> {
        let mut least = u32::MAX;
        let mut ties = 0usize;
        for candidate in candidates.iter().filter(|c| c.eligible()) {
            match candidate.in_flight.cmp(&least) {
                Cmp::Less => {
                    least = candidate.in_flight;
                    ties = 1;
                }
                Cmp::Equal => ties += 1,
                Cmp::Greater => {}
            }
        }
        if ties == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % ties;
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.eligible() && c.in_flight == least)
            .nth(turn)
            .map(|(index, _)| index)
    }
}

/// Fewest requests in flight per unit of weight (`in_flight / weight`, compared by
/// cross-multiplication in u64, so exact and float-free). Ties are shared in proportion to
/// weight: an idle pool with weights 5:1:1 still sends 5/7 of a sequential client's requests
/// to the first backend, as a weighted algorithm should.
#[derive(Debug, Default)]
pub struct WeightedLeastConnections {
    next: AtomicU64,
}

impl WeightedLeastConnections {
    /// A picker whose tie rotation starts at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

/// `a` carries less load per weight than `b`: a.in_flight / a.w  vs  b.in_flight / b.w.
fn load_cmp(a: &Candidate<'_>, b: &Candidate<'_>) -> Cmp {
    let left = u64::from(a.in_flight) * u64::from(b.effective_weight());
    let right = u64::from(b.in_flight) * u64::from(a.effective_weight());
    left.cmp(&right)
}

impl Picker for WeightedLeastConnections {
    fn pick(&self, _: u64, candidates: &[Candidate<'_>], _: Option<&[u8]>) -> Option<usize> {
        let mut least: Option<&Candidate<'_>> = None;
        let mut tied_weight = 0u64;
        for candidate in candidates.iter().filter(|c| c.eligible()) {
            let order = least.map_or(Cmp::Less, |l| load_cmp(candidate, l));
            match order {
                Cmp::Less => {
                    least = Some(candidate);
                    tied_weight = u64::from(candidate.effective_weight());
                }
                Cmp::Equal => tied_weight += u64::from(candidate.effective_weight()),
                Cmp::Greater => {}
            }
        }
        let least = least?;
        // Weighted turn: ticket t lands on the backend whose slice of [0, Σw) holds t.
        let mut ticket = self.next.fetch_add(1, Ordering::Relaxed) % tied_weight;
        for (index, candidate) in candidates.iter().enumerate() {
            if !candidate.eligible() || load_cmp(candidate, least) != Cmp::Equal {
                continue;
            }
            let weight = u64::from(candidate.effective_weight());
            if ticket < weight {
                return Some(index);
            }
            ticket -= weight;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Pool;
    use super::*;

    #[test]
    fn least_connections_picks_the_fewest_in_flight() {
        let picker = LeastConnections::new();
        let mut pool = Pool::new(4);
        pool.in_flight = vec![3, 1, 2, 5];
        assert_eq!(pool.tally(&picker, 10), [0, 10, 0, 0]);
        pool.available[1] = false;
        assert_eq!(pool.tally(&picker, 10), [0, 0, 10, 0]);
    }

    #[test]
    fn least_connections_ties_rotate() {
        let picker = LeastConnections::new();
        let mut pool = Pool::new(5);
        pool.in_flight = vec![2, 0, 4, 0, 0];
        assert_eq!(pool.tally(&picker, 300), [0, 100, 0, 100, 100]);
    }

    #[test]
    fn least_connections_balances_in_flight_under_load() {
        // Requests that never finish: in flight must stay level (max - min <= 1).
        let picker = LeastConnections::new();
        let mut pool = Pool::new(4);
        pool.max_connections = vec![0; 4];
        for _ in 0..103 {
            let picked = picker.pick(1, &pool.candidates(), None).expect("eligible");
            pool.in_flight[picked] += 1;
            let max = pool.in_flight.iter().max().copied().unwrap_or(0);
            let min = pool.in_flight.iter().min().copied().unwrap_or(0);
            assert!(max - min <= 1, "{:?}", pool.in_flight);
        }
    }

    #[test]
    fn least_connections_with_a_slow_backend() {
        // Backend 0 answers in 10 ticks, the others in 1: it must get far fewer requests.
        let picker = LeastConnections::new();
        let mut pool = Pool::new(3);
        let mut finishing: Vec<(usize, usize)> = Vec::new(); // (done at tick, backend)
        let mut served = [0usize; 3];
        for tick in 0..1000 {
            finishing.retain(|&(done, backend)| {
                let keep = done > tick;
                if !keep {
                    pool.in_flight[backend] -= 1;
                }
                keep
            });
            for _ in 0..4 {
                let picked = picker.pick(1, &pool.candidates(), None).expect("eligible");
                pool.in_flight[picked] += 1;
                served[picked] += 1;
                finishing.push((tick + if picked == 0 { 10 } else { 1 }, picked));
            }
        }
        assert!(served[0] * 3 < served[1], "{served:?}");
        assert!(served[0] * 3 < served[2], "{served:?}");
    }

    #[test]
    fn weighted_least_connections_compares_load_per_weight() {
        let picker = WeightedLeastConnections::new();
        let mut pool = Pool::weighted(&[2, 1, 4]);
        pool.in_flight = vec![4, 3, 9]; // 2, 3, 2.25
        assert_eq!(pool.tally(&picker, 10), [10, 0, 0]);
        pool.in_flight = vec![4, 3, 7]; // 2, 3, 1.75
        assert_eq!(pool.tally(&picker, 10), [0, 0, 10]);
        pool.weights = vec![0, 1, 1]; // weight 0 counts as 1: 4, 3, 7
        assert_eq!(pool.tally(&picker, 10), [0, 10, 0]);
    }

    #[test]
    fn weighted_least_connections_shares_ties_by_weight() {
        let picker = WeightedLeastConnections::new();
        let pool = Pool::weighted(&[5, 1, 1]);
        assert_eq!(pool.tally(&picker, 700), [500, 100, 100]);
        let mut pool = Pool::weighted(&[2, 1, 3]);
        pool.in_flight = vec![2, 1, 9]; // 1, 1, 3: the first two tie
        assert_eq!(pool.tally(&picker, 300), [200, 100, 0]);
    }

    #[test]
    fn weighted_least_connections_holds_in_flight_proportional_to_weight() {
        let picker = WeightedLeastConnections::new();
        let mut pool = Pool::weighted(&[1, 2, 5]);
        pool.max_connections = vec![0; 3];
        for _ in 0..800 {
            let picked = picker.pick(1, &pool.candidates(), None).expect("eligible");
            pool.in_flight[picked] += 1;
        }
        assert_eq!(pool.in_flight, [100, 200, 500]);
    }

    #[test]
    fn weighted_least_connections_does_not_overflow() {
        let picker = WeightedLeastConnections::new();
        let mut pool = Pool::weighted(&[u32::MAX, u32::MAX]);
        pool.in_flight = vec![u32::MAX - 1, u32::MAX - 2];
        pool.max_connections = vec![0, 0];
        assert_eq!(pool.tally(&picker, 3), [0, 3]);
    }
}
