//! Choosing a backend for one request: the six algorithms of the balancer.
//!
//! Every picker sees the pool as a slice of [`Candidate`]s (in the pool's order) and returns an
//! index into it. Pickers are shared by all proxy tasks (`&self`), so their state is atomics or
//! a tiny mutex held for one O(n) pass; none allocates on a pick (the Ketama ring and the smooth
//! weighted table are rebuilt only when the pool's `generation` changes).
//!
//! Eligibility is the same for all: `available` (health, outlier ejection and circuit breaker
//! allow a request) and below `max_connections` (0 meaning no limit, as HAProxy's `maxconn 0`).
//! A weight of 0 counts as 1: a backend in the pool is meant to get traffic (remove it or mark
//! it unavailable to drain it).

mod ketama;
mod least;
mod p2c;
mod rotation;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use super::ewma::PeakEwma;

// The pickers, for callers that want one directly rather than through `new_picker`.
pub use ketama::ConsistentHash;
pub use least::{LeastConnections, WeightedLeastConnections};
pub use p2c::PeakEwmaP2c;
pub use rotation::{RoundRobin, SmoothWeightedRoundRobin};

/// The balancing algorithm of a pool, named in config as its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Each eligible backend in turn.
    #[default]
    RoundRobin,
    /// nginx's smooth weighted round-robin: proportional to weight, interleaved.
    WeightedRoundRobin,
    /// Fewest requests in flight; ties take turns.
    LeastConnections,
    /// Fewest requests in flight per unit of weight; ties shared by weight.
    WeightedLeastConnections,
    /// Ketama ring keyed by the session (sticky sessions); round-robin without a session.
    ConsistentHash,
    /// Power of two choices on peak-EWMA latency × (in flight + 1).
    PeakEwma,
}

impl Algorithm {
    /// Every algorithm, in the order of [`Algorithm::NAMES`].
    pub const ALL: [Algorithm; 6] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::WeightedLeastConnections,
        Algorithm::ConsistentHash,
        Algorithm::PeakEwma,
    ];

    /// The config names, for help texts and error messages.
    pub const NAMES: [&'static str; 6] = [
        "round-robin",
        "weighted-round-robin",
        "least-connections",
        "weighted-least-connections",
        "consistent-hash",
        "peak-ewma",
    ];

    /// The config name (`round-robin`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => Self::NAMES[0],
            Algorithm::WeightedRoundRobin => Self::NAMES[1],
            Algorithm::LeastConnections => Self::NAMES[2],
            Algorithm::WeightedLeastConnections => Self::NAMES[3],
            Algorithm::ConsistentHash => Self::NAMES[4],
            Algorithm::PeakEwma => Self::NAMES[5],
        }
    }

    /// The algorithm named `name` (as in config; surrounding spaces and ASCII case ignored).
    pub fn parse(name: &str) -> Option<Algorithm> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown algorithm name; its message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown balancing algorithm {name:?} (expected one of: {})", Algorithm::NAMES.join(", "))]
pub struct UnknownAlgorithm {
    /// The name as given.
    pub name: String,
}

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::parse(s).ok_or_else(|| UnknownAlgorithm {
            name: s.to_string(),
        })
    }
}

/// One backend of a pool as a picker sees it; the slice is in the pool's order.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// `host:port`: stable identity, and the place on the Ketama ring.
    pub id: &'a str,
    /// Relative share of traffic; 0 is treated as 1.
    pub weight: u32,
    /// Requests sent and not yet answered.
    pub in_flight: u32,
    /// Most requests in flight at once; 0 means no limit.
    pub max_connections: u32,
    /// Health up/unknown, not ejected, and the circuit lets a request through.
    pub available: bool,
    /// The latency estimate the peak-EWMA picker compares.
    pub ewma: &'a PeakEwma,
}

impl Candidate<'_> {
    /// May this backend take one more request now?
    pub fn eligible(&self) -> bool {
        self.available && (self.max_connections == 0 || self.in_flight < self.max_connections)
    }

    /// The weight as used by the algorithms: at least 1.
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// A balancing algorithm with its (shared, lock-free or briefly locked) state.
pub trait Picker: Send + Sync {
    /// Index of the chosen candidate, or None when none is eligible
    /// (eligible = available && in_flight < max_connections).
    /// `generation` changes whenever the pool's ids or weights change: rebuild rings/tables then
    /// (cheaply cached between calls; the request path must not allocate per pick).
    /// `session`: the sticky key (header or cookie value) for consistent-hash; others ignore it.
    fn pick(
        &self,
        generation: u64,
        candidates: &[Candidate<'_>],
        session: Option<&[u8]>,
    ) -> Option<usize>;
}

/// A fresh picker for `algorithm` (one per pool; keep it while the pool lives so rotations
/// continue and the ring stays cached).
pub fn new_picker(algorithm: Algorithm) -> Box<dyn Picker> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new()),
        Algorithm::WeightedRoundRobin => Box::new(SmoothWeightedRoundRobin::new()),
        Algorithm::LeastConnections => Box::new(LeastConnections::new()),
        Algorithm::WeightedLeastConnections => Box::new(WeightedLeastConnections::new()),
        Algorithm::ConsistentHash => Box::new(ConsistentHash::new()),
        Algorithm::PeakEwma => Box::new(PeakEwmaP2c::new()),
    }
}

fn count_eligible(candidates: &[Candidate<'_>]) -> usize {
    candidates.iter().filter(|c| c.eligible()).count()
}

/// Index of the `n`-th (from 0) eligible candidate.
fn nth_eligible(candidates: &[Candidate<'_>], n: usize) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.eligible())
        .nth(n)
        .map(|(index, _)| index)
}

/// A poisoned lock only means another task panicked mid-pick; the tables stay usable (at
/// worst one rotation step is skewed), so recover the guard instead of spreading the panic.
fn unpoison<G>(result: Result<G, std::sync::PoisonError<G>>) -> G {
    result.unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod testkit {
    //! A pool of owned backend data to lend out as candidates.
    use super::*;
    use crate::ewma::{DEFAULT_DECAY, DEFAULT_RTT, monotonic_ns};

    pub struct Pool {
        pub ids: Vec<String>,
        pub weights: Vec<u32>,
        pub in_flight: Vec<u32>,
        pub max_connections: Vec<u32>,
        pub available: Vec<bool>,
        pub ewmas: Vec<PeakEwma>,
    }

    impl Pool {
        pub fn new(n: usize) -> Pool {
            Pool::weighted(&vec![1; n])
        }

        pub fn weighted(weights: &[u32]) -> Pool {
            let n = weights.len();
            let now = monotonic_ns();
            Pool {
                ids: (0..n).map(|i| format!("10.0.0.{}:8000", i + 1)).collect(),
                weights: weights.to_vec(),
                in_flight: vec![0; n],
                max_connections: vec![100; n],
                available: vec![true; n],
                // One creation time: equal estimates must decay alike, or the oldest would
                // always look cheapest.
                ewmas: (0..n)
                    .map(|_| PeakEwma::new_at(DEFAULT_RTT, DEFAULT_DECAY, now))
                    .collect(),
            }
        }

        pub fn candidates(&self) -> Vec<Candidate<'_>> {
            (0..self.ids.len())
                .map(|i| Candidate {
                    id: &self.ids[i],
                    weight: self.weights[i],
                    in_flight: self.in_flight[i],
                    max_connections: self.max_connections[i],
                    available: self.available[i],
                    ewma: &self.ewmas[i],
                })
                .collect()
        }

        /// `rounds` picks without in-flight changes; the number of picks per backend.
        pub fn tally(&self, picker: &dyn Picker, rounds: usize) -> Vec<usize> {
            let candidates = self.candidates();
            let mut tally = vec![0; self.ids.len()];
            for _ in 0..rounds {
                let index = picker
                    .pick(1, &candidates, None)
                    .expect("an eligible backend");
                tally[index] += 1;
            }
            tally
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::Pool;
    use super::*;

    #[test]
    fn names_round_trip_through_parse_serde_and_display() {
        for (algorithm, name) in Algorithm::ALL.into_iter().zip(Algorithm::NAMES) {
            assert_eq!(algorithm.name(), name);
            assert_eq!(Algorithm::parse(name), Some(algorithm));
            assert_eq!(algorithm.to_string(), name);
            let json = serde_json::to_string(&algorithm).expect("serialize");
            assert_eq!(json, format!("\"{name}\""));
            let back: Algorithm = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back, algorithm);
        }
        assert_eq!(Algorithm::parse(" Peak-EWMA "), Some(Algorithm::PeakEwma));
        assert_eq!(Algorithm::parse("random"), None);
        let error = "random".parse::<Algorithm>().expect_err("unknown name");
        assert!(error.to_string().contains("\"random\""));
        assert!(error.to_string().contains("weighted-least-connections"));
        assert!(serde_json::from_str::<Algorithm>("\"roundrobin\"").is_err());
    }

    #[test]
    fn eligibility_and_weight_rules() {
        let mut pool = Pool::new(1);
        pool.in_flight[0] = 100;
        assert!(!pool.candidates()[0].eligible(), "full");
        pool.max_connections[0] = 0;
        assert!(pool.candidates()[0].eligible(), "0 = no limit");
        pool.available[0] = false;
        assert!(!pool.candidates()[0].eligible(), "unavailable");
        pool.weights[0] = 0;
        assert_eq!(pool.candidates()[0].effective_weight(), 1);
    }

    #[test]
    fn every_algorithm_handles_empty_and_all_ineligible_pools() {
        for algorithm in Algorithm::ALL {
            let picker = new_picker(algorithm);
            assert_eq!(picker.pick(0, &[], None), None, "{algorithm} empty");
            assert_eq!(picker.pick(0, &[], Some(b"s")), None, "{algorithm} empty");
            let mut pool = Pool::new(3);
            pool.available = vec![false; 3];
            let candidates = pool.candidates();
            for session in [None, Some(&b"user-1"[..])] {
                assert_eq!(picker.pick(1, &candidates, session), None, "{algorithm}");
            }
            let mut pool = Pool::new(2);
            pool.in_flight = vec![100, 100];
            assert_eq!(
                picker.pick(1, &pool.candidates(), None),
                None,
                "{algorithm}"
            );
        }
    }

    #[test]
    fn every_algorithm_picks_the_single_eligible_backend() {
        for algorithm in Algorithm::ALL {
            let picker = new_picker(algorithm);
            let mut pool = Pool::weighted(&[0, 3, 1, 2]);
            pool.available = vec![false, false, true, false];
            let candidates = pool.candidates();
            for i in 0..20u32 {
                let session = i.to_string();
                for s in [None, Some(session.as_bytes())] {
                    assert_eq!(picker.pick(7, &candidates, s), Some(2), "{algorithm}");
                }
            }
        }
    }

    #[test]
    fn every_algorithm_survives_generation_and_length_changes() {
        for algorithm in Algorithm::ALL {
            let picker = new_picker(algorithm);
            for (generation, n) in [(1u64, 5usize), (2, 2), (2, 7), (3, 0), (4, 1), (1, 3)] {
                let pool = Pool::weighted(&vec![0; n]);
                let candidates = pool.candidates();
                for i in 0..50u32 {
                    let session = i.to_be_bytes();
                    for s in [None, Some(&session[..])] {
                        let picked = picker.pick(generation, &candidates, s);
                        match n {
                            0 => assert_eq!(picked, None, "{algorithm}"),
                            _ => assert!(picked.is_some_and(|p| p < n), "{algorithm} {picked:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pickers_are_shareable_across_threads() {
        let picker: std::sync::Arc<dyn Picker> = new_picker(Algorithm::RoundRobin).into();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let picker = std::sync::Arc::clone(&picker);
                std::thread::spawn(move || {
                    let pool = Pool::new(4);
                    pool.tally(picker.as_ref(), 1000)
                })
            })
            .collect();
        let mut total = [0usize; 4];
        for t in threads {
            let tally = t.join().expect("picker thread");
            for (sum, n) in total.iter_mut().zip(tally) {
                *sum += n;
            }
        }
        // One shared ticket counter: 4000 picks over 4 backends is exactly 1000 each.
        assert_eq!(total, [1000; 4]);
    }
}
