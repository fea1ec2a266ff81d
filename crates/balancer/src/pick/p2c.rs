//! The predictive algorithm: power of two choices on peak-EWMA cost (as linkerd and Finagle).
//!
//! Two distinct eligible backends are drawn at random and the one with the lower
//! `ewma.cost(in_flight)` wins. Comparing two random backends instead of scanning for the
//! global minimum avoids the herd effect: many proxies (or tasks) with a slightly stale view
//! do not all rush to the same "best" backend, yet the slow one still loses almost every duel.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Candidate, Picker, count_eligible, nth_eligible};
use crate::ewma::monotonic_ns;

/// Power of two choices on peak-EWMA latency × (in flight + 1). Stateless: the randomness is
/// a per-thread xorshift generator, so concurrent picks share no cache line.
#[derive(Debug, Default)]
pub struct PeakEwmaP2c;

impl PeakEwmaP2c {
    /// The picker (stateless; see the type).
    pub fn new() -> Self {
        PeakEwmaP2c
    }
}

impl Picker for PeakEwmaP2c {
    fn pick(&self, _: u64, candidates: &[Candidate<'_>], _: Option<&[u8]>) -> Option<usize> {
        let eligible = count_eligible(candidates);
        match eligible {
            0 => None,
            1 => nth_eligible(candidates, 0),
            _ => {
                let (first, second) = two_distinct(eligible);
                let a = nth_eligible(candidates, first)?;
                let b = nth_eligible(candidates, second)?;
                let now = monotonic_ns();
                let cost = |i: usize| candidates[i].ewma.cost_at(candidates[i].in_flight, now);
                Some(if cost(b) < cost(a) { b } else { a })
            }
        }
    }
}

/// Two distinct uniform indices below `n` (n >= 2): the second is drawn from the n - 1 others.
fn two_distinct(n: usize) -> (usize, usize) {
    let first = below(n);
    let mut second = below(n - 1);
    if second >= first {
        second += 1;
    }
    (first, second)
}

/// Uniform-enough index below `n` (Lemire's multiply-shift: no division, bias < n / 2^64).
fn below(n: usize) -> usize {
    ((u128::from(next_random()) * n as u128) >> 64) as usize
}

/// xorshift64* on a per-thread state, seeded from a global splitmix sequence and the clock so
/// threads (and runs) differ. Not cryptographic; it only needs to be cheap and unbiased.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn seed() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let mut z = SEQUENCE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(monotonic_ns());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    // xorshift must never hold 0.
    (z ^ (z >> 31)) | 1
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Pool;
    use super::*;
    use std::time::Duration;

    #[test]
    fn two_distinct_are_distinct_and_uniform() {
        let mut firsts = [0usize; 4];
        let mut pairs = [[0usize; 4]; 4];
        for _ in 0..120_000 {
            let (a, b) = two_distinct(4);
            assert_ne!(a, b);
            assert!(a < 4 && b < 4);
            firsts[a] += 1;
            pairs[a][b] += 1;
        }
        for count in firsts {
            assert!((28_500..=31_500).contains(&count), "{firsts:?}");
        }
        for (a, row) in pairs.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                if a != b {
                    assert!((9_000..=11_000).contains(&count), "{pairs:?}");
                }
            }
        }
    }

    #[test]
    fn a_slow_backend_gets_clearly_fewer_picks() {
        let pool = Pool::new(4);
        // Observed at one instant: the fast ones tie exactly, the draw order decides.
        let now = monotonic_ns();
        for (i, ewma) in pool.ewmas.iter().enumerate() {
            let rtt = if i == 2 { 400 } else { 5 };
            ewma.observe_at(Duration::from_millis(rtt), now);
        }
        let tally = pool.tally(&PeakEwmaP2c::new(), 8000);
        // The two draws are distinct, so every duel it is in has a faster opponent: it never
        // wins. The others share the picks about evenly.
        assert_eq!(tally[2], 0, "{tally:?}");
        for i in [0, 1, 3] {
            assert!((2300..=3000).contains(&tally[i]), "{tally:?}");
        }
    }

    #[test]
    fn in_flight_raises_the_cost() {
        // Equal latency, but backend 0 has a queue: it loses every duel it is in.
        let mut pool = Pool::new(3);
        pool.in_flight = vec![9, 0, 0];
        let tally = pool.tally(&PeakEwmaP2c::new(), 3000);
        assert_eq!(tally[0], 0, "{tally:?}");
    }

    #[test]
    fn load_follows_latency_in_a_simulation() {
        // Backends answer in 2, 5 and 50 ms; latency is fed back as observed.
        let pool = Pool::new(3);
        let latency = [2u64, 5, 50];
        let picker = PeakEwmaP2c::new();
        let candidates = pool.candidates();
        let mut tally = [0usize; 3];
        for _ in 0..3000 {
            let picked = picker.pick(1, &candidates, None).expect("eligible");
            tally[picked] += 1;
            pool.ewmas[picked].observe(Duration::from_millis(latency[picked]));
        }
        assert!(tally[2] * 10 < tally[0], "{tally:?}");
        assert!(tally[2] * 10 < tally[1], "{tally:?}");
    }

    #[test]
    fn skips_ineligible_backends() {
        let mut pool = Pool::new(5);
        pool.available[0] = false;
        pool.in_flight[4] = 100;
        let tally = pool.tally(&PeakEwmaP2c::new(), 3000);
        assert_eq!((tally[0], tally[4]), (0, 0), "{tally:?}");
        assert!(tally[1..4].iter().all(|&n| n > 500), "{tally:?}");
    }
}
