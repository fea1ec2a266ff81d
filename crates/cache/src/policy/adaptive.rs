//! The default policy: follow whichever policy does best on the live workload.
//!
//! Every other policy runs as a shadow on the same key stream (keys and weights only; no
//! values, so a shadow costs one policy's bookkeeping). One of them is the real policy: its
//! resident set is the level's. Every epoch (about one cache turnover of accesses) each
//! shadow's hit ratio is folded into a slowly decaying score; when another shadow's score
//! beats the followed one's by more than `HYSTERESIS` for `PERSIST` epochs in a row (and no
//! switch happened in the last `COOLDOWN` epochs), the next insert switches to it: keys it
//! holds that the level does not have are dropped from it, the level's keys it lacks are
//! offered to it (coldest first), and whatever it refuses or evicts is evicted for real, so
//! its resident set becomes exactly the level's.
//!
//! Priority is whatever the followed policy does with it (each shadow receives it).
//!
//! Large levels are judged on a sample: once the level holds `SAMPLE_FROM` entries, the
//! followed policy runs on its own over every key and the shadows become miniature caches
//! (1/`SAMPLE_RATE` of the capacity) fed only the keys whose hash falls in a fixed 1 in
//! `SAMPLE_RATE` slice — spatial sampling (SHARDS, Waldspurger et al., FAST '15 and ATC '17),
//! whose miniature caches predict the full-size hit ratio closely. Without it, every access
//! paid five policies' bookkeeping; with it, one policy's plus 5/`SAMPLE_RATE`. A switch then
//! builds a fresh full-size policy of the leader's kind from the level's keys.

use super::arc::Arc;
use super::lfu::Lfu;
use super::list::KeyMap;
use super::lru::Lru;
use super::s3fifo::S3Fifo;
use super::wtinylfu::WTinyLfu;
use super::{KeyHash, Policy, PolicyStats, Priority};

/// A rival's score must beat the followed policy's by this much (hit ratio) to be followed:
/// every switch costs the keys the two resident sets do not share.
const HYSTERESIS: f64 = 0.01;
/// Weight of the newest epoch in a score. Small, so a score spans ~20 epochs: shorter
/// memories chased the phases of periodic workloads (zigzag) and paid a switch each time.
const SCORE_DECAY: f64 = 0.05;
/// Bounds on the epoch length in accesses; within them it follows the resident count, so
/// an epoch covers about one turnover of the cache.
const MIN_EPOCH: u64 = 256;
const MAX_EPOCH: u64 = 16_384;
/// The policy followed before there is evidence: the most robust on the reference traces.
const INITIAL: usize = 3;
/// Epochs in a row the same rival must lead before it is followed.
const PERSIST: u32 = 2;
/// Epochs after a switch during which no other switch is considered.
const COOLDOWN: u32 = 4;
/// Resident entries from which the shadows are sampled (below it they see every key: a
/// small cache's miniature would be too small to tell policies apart).
const SAMPLE_FROM: usize = 8192;
/// One key in this many is fed to the sampled shadows (a power of two).
const SAMPLE_RATE: u64 = 8;

/// The policies the shadows run, in this order (`INITIAL` indexes it).
fn candidates(capacity: u64) -> Vec<Box<dyn Policy>> {
    vec![
        Box::new(Lru::new(capacity)),
        Box::new(Lfu::new(capacity)),
        Box::new(Arc::new(capacity)),
        Box::new(WTinyLfu::new(capacity)),
        Box::new(S3Fifo::new(capacity)),
    ]
}

/// Whether a key is in the sampled slice. Mixed first: keys are hashes in the cache but
/// plain block numbers when a trace is replayed, and the shard already chose by the high
/// bits of the hash.
fn sampled(key: KeyHash) -> bool {
    let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    mixed >> (64 - SAMPLE_RATE.trailing_zeros()) == 0
}

#[derive(Debug, Clone, Copy)]
struct Resident {
    weight: u64,
    priority: Priority,
}

pub struct Adaptive {
    capacity: u64,
    shadows: Vec<Box<dyn Policy>>,
    /// Once sampling: the followed policy at full size, over every key (before, the chosen
    /// shadow itself is the real policy).
    real: Option<Box<dyn Policy>>,
    /// Resident entries from which the shadows are sampled (`SAMPLE_FROM`).
    sample_from: usize,
    chosen: usize,
    switch_to: Option<usize>,
    resident: KeyMap<Resident>,
    weight: u64,
    epoch_hits: Vec<u64>,
    epoch_accesses: u64,
    scores: Vec<f64>,
    scored_epochs: u64,
    switches: u64,
    /// The rival currently leading by more than the hysteresis, and for how many epochs.
    leader: usize,
    lead_epochs: u32,
    cooldown: u32,
    stats: PolicyStats,
}

impl Adaptive {
    pub fn new(capacity: u64) -> Self {
        let shadows = candidates(capacity);
        let count = shadows.len();
        Self {
            capacity,
            shadows,
            real: None,
            sample_from: SAMPLE_FROM,
            chosen: INITIAL,
            leader: INITIAL,
            lead_epochs: 0,
            cooldown: 0,
            switch_to: None,
            resident: KeyMap::default(),
            weight: 0,
            epoch_hits: vec![0; count],
            epoch_accesses: 0,
            scores: vec![0.0; count],
            scored_epochs: 0,
            switches: 0,
            stats: PolicyStats::default(),
        }
    }

    /// How many times it changed the policy it follows.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Each shadow's current score (its decayed recent hit ratio), by name.
    pub fn scores(&self) -> Vec<(&'static str, f64)> {
        self.shadows
            .iter()
            .zip(&self.scores)
            .map(|(shadow, &score)| (shadow.name(), score))
            .collect()
    }

    /// Whether the shadows see a sample of the keys rather than all of them.
    pub fn sampling(&self) -> bool {
        self.real.is_some()
    }

    fn epoch_length(&self) -> u64 {
        let seen = match self.real {
            Some(_) => self.resident.len() as u64 / SAMPLE_RATE,
            None => self.resident.len() as u64,
        };
        seen.clamp(MIN_EPOCH, MAX_EPOCH)
    }

    /// The policy deciding what the level holds.
    fn real_mut(&mut self) -> &mut dyn Policy {
        match &mut self.real {
            Some(real) => real.as_mut(),
            None => self.shadows[self.chosen].as_mut(),
        }
    }

    /// Once sampling, the full-size policy hears of every lookup; whether the shadows
    /// should hear of this one too.
    fn lookup_reaches_shadows(&mut self, key: KeyHash, hit: bool) -> bool {
        let Some(real) = &mut self.real else {
            return true;
        };
        if hit {
            real.on_hit(key);
        } else {
            real.on_miss(key);
        }
        sampled(key)
    }

    /// Whether the shadows see `key`.
    fn shadows_see(&self, key: KeyHash) -> bool {
        self.real.is_none() || sampled(key)
    }

    /// The level has grown large: the followed shadow becomes the real policy, and each
    /// shadow is shrunk to a miniature holding the sampled keys it held (those the level
    /// has too, whose weights are known), so the scores go on without a warm-up.
    fn start_sampling(&mut self) {
        let miniature = (self.capacity / SAMPLE_RATE).max(1);
        let mut full_size = std::mem::replace(&mut self.shadows, candidates(miniature));
        for (small, full) in self.shadows.iter_mut().zip(&full_size) {
            for key in full.resident_keys().into_iter().rev() {
                if let Some(entry) = self.resident.get(&key).filter(|_| sampled(key)) {
                    small.on_insert(key, entry.weight, entry.priority);
                }
            }
        }
        self.real = Some(full_size.swap_remove(self.chosen));
    }

    fn end_of_access(&mut self) {
        self.epoch_accesses += 1;
        if self.epoch_accesses < self.epoch_length() {
            return;
        }
        let accesses = self.epoch_accesses as f64;
        let decay = SCORE_DECAY;
        for (score, hits) in self.scores.iter_mut().zip(&mut self.epoch_hits) {
            let ratio = *hits as f64 / accesses;
            *score = if self.scored_epochs == 0 {
                ratio
            } else {
                decay * ratio + (1.0 - decay) * *score
            };
        }
        self.scored_epochs += 1;
        self.epoch_hits.iter_mut().for_each(|h| *h = 0);
        self.epoch_accesses = 0;
        let best = (0..self.scores.len())
            .max_by(|&a, &b| self.scores[a].total_cmp(&self.scores[b]))
            .unwrap_or(self.chosen);
        if best != self.chosen && self.scores[best] > self.scores[self.chosen] + HYSTERESIS {
            self.lead_epochs = if best == self.leader {
                self.lead_epochs + 1
            } else {
                1
            };
            self.leader = best;
        } else {
            self.lead_epochs = 0;
        }
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return;
        }
        if self.lead_epochs >= PERSIST {
            self.switch_to = Some(best);
            self.lead_epochs = 0;
            self.cooldown = COOLDOWN;
        }
    }

    /// Makes shadow `next` the real policy: its resident set becomes the level's. Keys it
    /// holds that the level does not have are dropped from it; the room that frees is
    /// offered to the level's keys it lacks (coldest first, so the new policy ranks them
    /// below its own), and whatever it then refuses or evicts is evicted for real.
    fn switch(&mut self, next: usize, evicted: &mut Vec<KeyHash>) {
        if self.real.is_some() {
            self.switch_real(next, evicted);
            return;
        }
        let previous = self.shadows[self.chosen].resident_keys();
        for key in self.shadows[next].resident_keys() {
            if !self.resident.contains_key(&key) {
                self.shadows[next].on_remove(key);
            }
        }
        for &key in previous.iter().rev() {
            let Some(&entry) = self.resident.get(&key) else {
                continue;
            };
            if self.shadows[next].contains(key) {
                continue;
            }
            for gone in self.shadows[next].on_insert(key, entry.weight, entry.priority) {
                if self.resident.contains_key(&gone) {
                    self.drop_resident(gone);
                    self.stats.evictions += 1;
                    evicted.push(gone);
                }
            }
        }
        self.chosen = next;
        self.switches += 1;
    }

    /// `switch` once sampling: a fresh full-size policy of the leader's kind takes the
    /// level's keys (in the old policy's order reversed, as `switch` offers them), and what
    /// it cannot hold is evicted for real.
    fn switch_real(&mut self, next: usize, evicted: &mut Vec<KeyHash>) {
        let name = self.shadows[next].name();
        let Some(mut fresh) = super::by_name(name, self.capacity) else {
            return;
        };
        let previous = self.real_mut().resident_keys();
        for &key in previous.iter().rev() {
            let Some(&entry) = self.resident.get(&key) else {
                continue;
            };
            for gone in fresh.on_insert(key, entry.weight, entry.priority) {
                if self.resident.contains_key(&gone) {
                    self.drop_resident(gone);
                    self.stats.evictions += 1;
                    evicted.push(gone);
                }
            }
        }
        self.real = Some(fresh);
        self.chosen = next;
        self.switches += 1;
    }

    fn drop_resident(&mut self, key: KeyHash) {
        if let Some(old) = self.resident.remove(&key) {
            self.weight -= old.weight;
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn chosen(&self) -> &'static str {
        self.shadows[self.chosen].name()
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.resident.contains_key(&key)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        let Some(entry) = self.resident.get_mut(&key) else {
            return;
        };
        if entry.priority == Priority::Low {
            entry.priority = Priority::Normal;
        }
        let entry = *entry;
        if !self.lookup_reaches_shadows(key, true) {
            return;
        }
        for (i, shadow) in self.shadows.iter_mut().enumerate() {
            if shadow.contains(key) {
                shadow.on_hit(key);
                self.epoch_hits[i] += 1;
            } else {
                shadow.on_miss(key);
                shadow.on_insert(key, entry.weight, entry.priority);
            }
        }
        self.end_of_access();
    }
    fn on_miss(&mut self, key: KeyHash) {
        self.stats.misses += 1;
        if !self.lookup_reaches_shadows(key, false) {
            return;
        }
        for (i, shadow) in self.shadows.iter_mut().enumerate() {
            if shadow.contains(key) {
                // The shadow would have hit; the level will insert, which it already holds.
                shadow.on_hit(key);
                self.epoch_hits[i] += 1;
            } else {
                shadow.on_miss(key);
            }
        }
        self.end_of_access();
    }
    fn on_insert(&mut self, key: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash> {
        let mut evicted = Vec::new();
        if let Some(next) = self.switch_to.take() {
            self.switch(next, &mut evicted);
        }
        let sampling = self.real.is_some();
        if self.shadows_see(key) {
            for (i, shadow) in self.shadows.iter_mut().enumerate() {
                if sampling || i != self.chosen {
                    shadow.on_insert(key, weight, priority);
                }
            }
        }
        let real = self.real_mut().on_insert(key, weight, priority);
        self.drop_resident(key);
        if self.real_mut().contains(key) {
            self.resident.insert(key, Resident { weight, priority });
            self.weight += weight;
        } else {
            self.stats.rejections += 1;
        }
        for gone in real {
            // Keys the policy held without the level having them (see `switch`) are not
            // the level's to evict.
            if gone == key || self.resident.contains_key(&gone) {
                self.drop_resident(gone);
                self.stats.evictions += 1;
                evicted.push(gone);
            }
        }
        if !sampling && self.resident.len() >= self.sample_from {
            self.start_sampling();
        }
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        self.drop_resident(key);
        if let Some(real) = &mut self.real {
            real.on_remove(key);
        }
        for shadow in &mut self.shadows {
            shadow.on_remove(key);
        }
    }
    fn len(&self) -> usize {
        self.resident.len()
    }
    fn weight(&self) -> u64 {
        self.weight
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        self.resident.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    fn assert_sets_equal(adaptive: &Adaptive) {
        let real = adaptive.real.as_ref();
        let mut policy_keys = real
            .unwrap_or(&adaptive.shadows[adaptive.chosen])
            .resident_keys();
        let mut level_keys = adaptive.resident_keys();
        policy_keys.sort_unstable();
        level_keys.sort_unstable();
        assert_eq!(policy_keys, level_keys);
        assert!(adaptive.weight() <= adaptive.capacity());
    }

    #[test]
    fn follows_the_policy_that_wins_and_keeps_the_sets_equal() {
        let mut adaptive = Adaptive::new(100);
        assert_eq!(adaptive.chosen(), "w-tinylfu");
        // Every key used twice, 30 accesses apart, never again: recency wins, while
        // frequency admission refuses each newcomer against victims already seen twice.
        let mut hits = 0;
        for i in 30..40_000u64 {
            hits += usize::from(access(&mut adaptive, i));
            hits += usize::from(access(&mut adaptive, i - 30));
        }
        let chosen = adaptive.chosen();
        assert_ne!(chosen, "w-tinylfu");
        assert!(adaptive.switches() >= 1);
        assert!(hits > 35_000, "{hits} hits of 79,940 under {chosen}");
        assert_sets_equal(&adaptive);
        // Then a loop slightly larger than the cache: recency gets nothing, frequency wins.
        for i in 0..200_000u64 {
            access(&mut adaptive, 1_000_000 + i % 110);
        }
        let chosen = adaptive.chosen();
        assert!(
            ["lfu", "w-tinylfu", "s3-fifo"].contains(&chosen),
            "{chosen}"
        );
        assert_sets_equal(&adaptive);
    }

    #[test]
    fn a_large_level_samples_its_shadows_and_still_follows_the_winner() {
        let capacity = 20_000;
        // Every key used twice, 3000 accesses apart, never again: recency wins (as in the
        // small case above), and the level grows past SAMPLE_FROM on the way.
        let replay = |adaptive: &mut Adaptive| {
            let mut hits = 0u64;
            let gap = 3_000;
            for i in gap..200_000u64 {
                hits += u64::from(access(adaptive, i));
                hits += u64::from(access(adaptive, i - gap));
            }
            hits
        };
        let mut unsampled = Adaptive::new(capacity);
        unsampled.sample_from = usize::MAX;
        let unsampled_hits = replay(&mut unsampled);
        let mut adaptive = Adaptive::new(capacity);
        let hits = replay(&mut adaptive);
        assert!(adaptive.sampling(), "{} resident", adaptive.len());
        assert!(!unsampled.sampling());
        let miniature = adaptive.shadows[0].capacity();
        assert_eq!(miniature, capacity / SAMPLE_RATE);
        // The shadows saw about one key in SAMPLE_RATE.
        let shadow_lookups = adaptive.shadows[0].stats().hits + adaptive.shadows[0].stats().misses;
        let all = adaptive.stats().hits + adaptive.stats().misses;
        let share = shadow_lookups as f64 / all as f64;
        assert!(
            (0.08..0.17).contains(&share),
            "shadows saw {shadow_lookups} of {all} lookups"
        );
        let chosen = adaptive.chosen();
        assert_ne!(chosen, "w-tinylfu", "switched away from the initial policy");
        // Sampling decides later (fresh miniatures learn first), and must cost little.
        assert!(
            hits as f64 >= 0.9 * unsampled_hits as f64,
            "{hits} hits sampled vs {unsampled_hits} unsampled, under {chosen}"
        );
        assert_sets_equal(&adaptive);
        // A loop slightly larger than the cache: frequency wins, sampled as well.
        for i in 0..600_000u64 {
            access(&mut adaptive, 10_000_000 + i % 22_000);
        }
        let chosen = adaptive.chosen();
        assert!(
            ["lfu", "w-tinylfu", "s3-fifo"].contains(&chosen),
            "{chosen}"
        );
        assert_sets_equal(&adaptive);
        assert!(adaptive.weight() <= capacity && adaptive.len() <= capacity as usize);
    }

    #[test]
    fn a_switch_makes_the_new_policy_hold_exactly_the_level_keys() {
        let mut adaptive = Adaptive::new(4);
        for key in [1, 2, 3, 4] {
            access(&mut adaptive, key);
        }
        let lru = 0;
        // Make the LRU shadow disagree: it lacks 2 and holds 9, which the level never had.
        adaptive.shadows[lru].on_remove(2);
        adaptive.shadows[lru].on_insert(9, 1, Priority::Normal);
        adaptive.switch_to = Some(lru);
        let evicted = adaptive.on_insert(5, 1, Priority::Normal);
        assert_eq!(adaptive.chosen(), "lru");
        assert!(
            !adaptive.shadows[lru].contains(9),
            "a key the level never held is dropped"
        );
        assert!(
            adaptive.contains(2),
            "the level's key LRU lacked was offered to it"
        );
        assert_eq!(evicted, vec![1], "then LRU evicts its coldest to admit 5");
        assert!(adaptive.contains(5) && !adaptive.contains(1));
        assert_sets_equal(&adaptive);
    }
}
