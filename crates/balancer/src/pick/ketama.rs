//! Consistent hashing on a Ketama ring, for sticky sessions.
//!
//! Each backend owns `160 × weight` points on a 64-bit ring, placed by hashing its id
//! (`host:port`), so the ring depends only on the set of ids and weights, never on the pool's
//! order: two proxies with the same backends send a session to the same place, and removing
//! one of N backends moves only the sessions it held (about 1/N of them). A session hashes to
//! a point; the first backend point clockwise from it wins; if that backend is ineligible the
//! walk continues clockwise, which spreads its sessions over the others instead of piling them
//! onto one neighbour.
//!
//! The ring is built once per pool `generation` and shared under an `RwLock`: a pick takes the
//! read lock, hashes the session and does one binary search, with no allocation.

use std::sync::RwLock;

use super::rotation::RoundRobin;
use super::{Candidate, Picker, unpoison};

/// Ring points per unit of weight (Ketama uses 160 per server of weight 1).
pub const POINTS_PER_WEIGHT: u64 = 160;
/// Upper bound on ring points, so absurd weights cannot make a pool cost gigabytes; above it
/// the points per unit of weight shrink proportionally (every backend keeps at least one).
pub const MAX_RING_POINTS: u64 = 1 << 18;

/// Ketama consistent hashing keyed by the session; round-robin for requests without one.
#[derive(Debug, Default)]
pub struct ConsistentHash {
    ring: RwLock<Option<Ring>>,
    without_session: RoundRobin,
}

#[derive(Debug)]
struct Ring {
    generation: u64,
    len: usize,
    /// (position, candidate index), sorted by position.
    points: Vec<(u64, u32)>,
}

impl ConsistentHash {
    /// A picker with no ring yet (built on the first pick with a session).
    pub fn new() -> Self {
        Self::default()
    }

    fn pick_on_ring(
        &self,
        generation: u64,
        candidates: &[Candidate<'_>],
        key: u64,
    ) -> Option<usize> {
        {
            let cached = unpoison(self.ring.read());
            if let Some(ring) = cached.as_ref().filter(|r| r.fits(generation, candidates)) {
                return ring.lookup(key, candidates);
            }
        }
        let ring = Ring::build(generation, candidates);
        let chosen = ring.lookup(key, candidates);
        *unpoison(self.ring.write()) = Some(ring);
        chosen
    }
}

impl Picker for ConsistentHash {
    fn pick(
        &self,
        generation: u64,
        candidates: &[Candidate<'_>],
        session: Option<&[u8]>,
    ) -> Option<usize> {
        let Some(session) = session else {
            return self.without_session.pick(generation, candidates, None);
        };
        // Checked first so an all-ineligible pool costs O(n), not a walk around the ring.
        if !candidates.iter().any(Candidate::eligible) {
            return None;
        }
        self.pick_on_ring(generation, candidates, hash_bytes(session))
    }
}

impl Ring {
    /// The length check guards against a caller reusing a generation for a different pool:
    /// a stale ring could then point past the slice.
    fn fits(&self, generation: u64, candidates: &[Candidate<'_>]) -> bool {
        self.generation == generation && self.len == candidates.len()
    }

    fn build(generation: u64, candidates: &[Candidate<'_>]) -> Ring {
        let total_weight: u64 = candidates
            .iter()
            .map(|c| u64::from(c.effective_weight()))
            .sum();
        let per_weight = if total_weight.saturating_mul(POINTS_PER_WEIGHT) <= MAX_RING_POINTS {
            POINTS_PER_WEIGHT as f64
        } else {
            MAX_RING_POINTS as f64 / total_weight as f64
        };
        let mut points = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            let Ok(index) = u32::try_from(index) else {
                break; // more than 4 billion backends: the rest get no points
            };
            let count = ((f64::from(candidate.effective_weight()) * per_weight) as u64).max(1);
            let seed = hash_bytes(candidate.id.as_bytes());
            points.extend((0..count).map(|replica| (point_position(seed, replica), index)));
        }
        points.sort_unstable();
        Ring {
            generation,
            len: candidates.len(),
            points,
        }
    }

    /// The first eligible backend clockwise from `key`.
    fn lookup(&self, key: u64, candidates: &[Candidate<'_>]) -> Option<usize> {
        let start = self.points.partition_point(|&(position, _)| position < key);
        let (after, before) = self.points.split_at(start);
        before
            .iter()
            .chain(after)
            .map(|&(_, index)| index as usize)
            .find(|&index| candidates.get(index).is_some_and(Candidate::eligible))
    }
}

/// FNV-1a then MurmurHash3's 64-bit finalizer: FNV alone is fast and stable across builds
/// and machines (unlike `std`'s SipHash with random keys), but its high bits mix poorly; the
/// finalizer fixes the avalanche so ring positions and session keys spread evenly.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(hash)
}

/// Position of a backend's `replica`-th point: a bijective mix of (id hash, replica), so the
/// points of one backend never collide with each other.
fn point_position(seed: u64, replica: u64) -> u64 {
    fmix64(seed ^ fmix64(replica.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Pool;
    use super::*;
    use std::collections::HashMap;

    const SESSIONS: usize = 10_000;

    fn session(i: usize) -> String {
        format!("session-{i}")
    }

    /// Which backend id each session lands on.
    fn assignment(picker: &ConsistentHash, generation: u64, pool: &Pool) -> Vec<String> {
        let candidates = pool.candidates();
        (0..SESSIONS)
            .map(|i| {
                let index = picker
                    .pick(generation, &candidates, Some(session(i).as_bytes()))
                    .expect("eligible");
                pool.ids[index].clone()
            })
            .collect()
    }

    fn moved(before: &[String], after: &[String]) -> usize {
        before.iter().zip(after).filter(|(b, a)| b != a).count()
    }

    #[test]
    fn the_same_session_always_lands_on_the_same_backend() {
        let picker = ConsistentHash::new();
        let pool = Pool::new(7);
        let first = assignment(&picker, 1, &pool);
        assert_eq!(assignment(&picker, 1, &pool), first);
        // A fresh picker (another proxy, a restart) and a rebuilt ring agree.
        assert_eq!(assignment(&ConsistentHash::new(), 9, &pool), first);
        // The pool's order does not matter: the ring is placed by id.
        let mut reversed = Pool::new(7);
        reversed.ids.reverse();
        assert_eq!(assignment(&ConsistentHash::new(), 1, &reversed), first);
    }

    #[test]
    fn removing_one_of_ten_moves_only_its_sessions() {
        let picker = ConsistentHash::new();
        let pool = Pool::new(10);
        let before = assignment(&picker, 1, &pool);
        let removed = pool.ids[3].clone();
        let mut smaller = Pool::new(10);
        smaller.ids.remove(3);
        smaller.weights.remove(3);
        smaller.in_flight.remove(3);
        smaller.max_connections.remove(3);
        smaller.available.remove(3);
        smaller.ewmas.remove(3);
        let after = assignment(&picker, 2, &smaller);
        let moved_count = moved(&before, &after);
        assert!(
            moved_count <= SESSIONS / 10 + SESSIONS * 2 / 100,
            "{moved_count} of {SESSIONS} moved"
        );
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || *b == removed, "a session of {b} moved to {a}");
        }
        // Adding it back restores every session.
        assert_eq!(assignment(&picker, 3, &pool), before);
    }

    #[test]
    fn an_ineligible_backend_spreads_its_sessions_over_the_others() {
        let picker = ConsistentHash::new();
        let mut pool = Pool::new(10);
        let before = assignment(&picker, 1, &pool);
        pool.available[6] = false;
        let after = assignment(&picker, 1, &pool);
        let down = &pool.ids[6];
        let mut receivers: HashMap<&str, usize> = HashMap::new();
        for (b, a) in before.iter().zip(&after) {
            assert!(b == a || b == down, "a session of {b} moved to {a}");
            if b != a {
                *receivers.entry(a.as_str()).or_default() += 1;
            }
        }
        assert!(moved(&before, &after) <= SESSIONS / 10 + SESSIONS * 2 / 100);
        // 160 points each: the orphaned sessions go to (nearly) every other backend.
        assert!(receivers.len() >= 8, "{receivers:?}");
        // And they come back when it recovers (same generation, no rebuild).
        pool.available[6] = true;
        assert_eq!(assignment(&picker, 1, &pool), before);
    }

    #[test]
    fn a_full_backend_is_walked_past_too() {
        let picker = ConsistentHash::new();
        let mut pool = Pool::new(3);
        let home = picker
            .pick(1, &pool.candidates(), Some(b"user-42"))
            .expect("eligible");
        pool.in_flight[home] = 100;
        let elsewhere = picker
            .pick(1, &pool.candidates(), Some(b"user-42"))
            .expect("eligible");
        assert_ne!(home, elsewhere);
    }

    #[test]
    fn sessions_follow_the_weights() {
        let picker = ConsistentHash::new();
        let pool = Pool::weighted(&[1, 2, 3, 4]);
        let after = assignment(&picker, 1, &pool);
        for (i, id) in pool.ids.iter().enumerate() {
            let share = after.iter().filter(|a| *a == id).count() as f64 / SESSIONS as f64;
            let expected = f64::from(pool.weights[i]) / 10.0;
            assert!(
                (share - expected).abs() / expected < 0.15,
                "{id}: share {share:.3}, expected {expected:.3}"
            );
        }
    }

    #[test]
    fn equal_weights_spread_evenly() {
        let picker = ConsistentHash::new();
        let pool = Pool::new(10);
        let after = assignment(&picker, 1, &pool);
        for id in &pool.ids {
            let share = after.iter().filter(|a| *a == id).count();
            assert!((700..=1300).contains(&share), "{id}: {share} of {SESSIONS}");
        }
    }

    #[test]
    fn without_a_session_it_round_robins() {
        let picker = ConsistentHash::new();
        let pool = Pool::new(4);
        assert_eq!(pool.tally(&picker, 400), [100; 4]);
    }

    #[test]
    fn the_ring_is_rebuilt_only_when_the_generation_changes() {
        let picker = ConsistentHash::new();
        let pool = Pool::weighted(&[1, 0, 2]);
        let candidates = pool.candidates();
        let points_address = |p: &ConsistentHash| {
            unpoison(p.ring.read())
                .as_ref()
                .map(|r| (r.generation, r.points.as_ptr() as usize, r.points.len()))
        };
        picker.pick(5, &candidates, Some(b"a"));
        let built = points_address(&picker);
        assert_eq!(built.map(|b| (b.0, b.2)), Some((5, 160 * 4)));
        for i in 0..100u32 {
            picker.pick(5, &candidates, Some(&i.to_le_bytes()));
        }
        assert_eq!(
            points_address(&picker),
            built,
            "no rebuild within a generation"
        );
        picker.pick(6, &candidates, Some(b"a"));
        assert_eq!(points_address(&picker).map(|b| b.0), Some(6));
    }

    #[test]
    fn huge_weights_are_scaled_to_the_ring_cap() {
        let picker = ConsistentHash::new();
        let pool = Pool::weighted(&[u32::MAX, 1]);
        let candidates = pool.candidates();
        assert!(picker.pick(1, &candidates, Some(b"x")).is_some());
        let len = unpoison(picker.ring.read())
            .as_ref()
            .map(|r| r.points.len());
        assert!(
            len.is_some_and(|l| l as u64 <= MAX_RING_POINTS + 2),
            "{len:?}"
        );
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here would move every sticky session after an upgrade.
        assert_eq!(hash_bytes(b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash_bytes(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
    }
}
