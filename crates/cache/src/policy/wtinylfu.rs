//! W-TinyLFU with an adaptive window (G. Einziger, R. Friedman, B. Manes, "TinyLFU: A Highly
//! Efficient Cache Admission Policy", ACM ToS 2017; the window adaptation follows Caffeine).
//!
//! New keys enter a small LRU window. Keys leaving the window are candidates for the main
//! region, a segmented LRU (probation, then protected once hit there); a candidate is
//! admitted only if a count-min sketch (4-bit counters, all halved every `10 x` its width
//! increments) says it is more frequent than the main region's victim, so one-hit wonders
//! cannot push out popular keys. The window's share starts at 1% and is moved by hill
//! climbing: every sample period, if the hit rate improved keep stepping the same way, else
//! turn back; steps decay and restart after a large change in hit rate.
//!
//! Priority: in a candidate/victim duel a Low candidate never displaces a Normal or High
//! victim, and a Low victim always gives way to a Normal or High candidate; a High victim that
//! wins nothing is kept once more (moved to probation's hot end, chance spent), a High
//! candidate that loses goes back to the window once. Plain evictions (no duel) take a Low
//! entry among the coldest first. A hit turns Low into Normal.

use super::list::{KeyMap, List, Queues, Slab, mix};
use super::{KeyHash, Policy, PolicyStats, Priority};

const WINDOW: u8 = 0;
const PROBATION: u8 = 1;
const PROTECTED: u8 = 2;

const PERCENT_MAIN: f64 = 0.99;
const PERCENT_MAIN_PROTECTED: f64 = 0.80;
const HILL_CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
const HILL_CLIMBER_STEP_PERCENT: f64 = 0.0625;
const HILL_CLIMBER_STEP_DECAY_RATE: f64 = 0.98;
/// Hit-rate changes smaller than this are sampling noise: the climber keeps its direction
/// (with a decaying step) instead of turning back. Without it a tiny dip after a converged
/// step sends a full-size step the wrong way (loop@1000 lost 3 points to that).
const HILL_CLIMBER_NOISE: f64 = 0.005;
/// A candidate this frequent that loses is still admitted 1 time in 128, so an attacker
/// cannot pin a victim by inflating its count (Caffeine's hash-flooding guard).
const ADMIT_HASHDOS_THRESHOLD: u8 = 6;
/// Sketch width bound, so a byte-sized capacity does not allocate a huge sketch up front;
/// the sketch grows with the number of resident entries.
const INITIAL_SKETCH_ENTRIES: u64 = 1 << 16;

/// A count-min sketch of 4-bit counters, 16 per word, four rows.
#[derive(Debug)]
struct FrequencySketch {
    table: Vec<u64>,
    sample_size: u64,
    size: u64,
}

impl FrequencySketch {
    fn new(entries: u64) -> Self {
        let entries = entries.max(16);
        let words = entries.next_power_of_two();
        Self {
            table: vec![0; words as usize],
            sample_size: 10 * entries,
            size: 0,
        }
    }

    fn width(&self) -> u64 {
        self.table.len() as u64
    }

    /// Word index and bit offset of `key`'s counter in row `row`.
    fn slot(&self, key: KeyHash, row: u64) -> (usize, u32) {
        let h = mix(key.wrapping_add(row.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let word = (h & (self.table.len() as u64 - 1)) as usize;
        let nibble = ((h >> 58) & 15) as u32;
        (word, nibble * 4)
    }

    fn frequency(&self, key: KeyHash) -> u8 {
        (0..4)
            .map(|row| {
                let (word, shift) = self.slot(key, row);
                ((self.table[word] >> shift) & 15) as u8
            })
            .min()
            .unwrap_or(0)
    }

    fn increment(&mut self, key: KeyHash) {
        let mut added = false;
        for row in 0..4 {
            let (word, shift) = self.slot(key, row);
            if (self.table[word] >> shift) & 15 < 15 {
                self.table[word] += 1 << shift;
                added = true;
            }
        }
        if added {
            self.size += 1;
            if self.size >= self.sample_size {
                self.reset();
            }
        }
    }

    /// Halves every counter: the sketch forgets old popularity.
    fn reset(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.table {
            odd += u64::from((*word & 0x1111_1111_1111_1111).count_ones());
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.size = (self.size - odd / 4) / 2;
    }
}

#[derive(Debug)]
pub struct WTinyLfu {
    capacity: u64,
    window_max: u64,
    protected_max: u64,
    slab: Slab,
    window: List,
    probation: List,
    protected: List,
    index: KeyMap<u32>,
    sketch: FrequencySketch,
    /// The key whose miss was just counted in the sketch, so its insert does not count twice.
    last_missed: Option<KeyHash>,
    hits_in_sample: u64,
    misses_in_sample: u64,
    previous_hit_rate: f64,
    step_size: f64,
    adjustment: i64,
    random: u64,
    stats: PolicyStats,
}

impl WTinyLfu {
    pub fn new(capacity: u64) -> Self {
        let main = (capacity as f64 * PERCENT_MAIN) as u64;
        let hint = capacity.min(super::RESERVE_AT_MOST) as usize;
        let mut index = KeyMap::default();
        index.reserve(hint);
        Self {
            capacity,
            window_max: capacity - main,
            protected_max: (main as f64 * PERCENT_MAIN_PROTECTED) as u64,
            slab: Slab::with_capacity(hint),
            window: List::default(),
            probation: List::default(),
            protected: List::default(),
            index,
            sketch: FrequencySketch::new(capacity.min(INITIAL_SKETCH_ENTRIES)),
            last_missed: None,
            hits_in_sample: 0,
            misses_in_sample: 0,
            previous_hit_rate: 0.0,
            step_size: -HILL_CLIMBER_STEP_PERCENT * capacity as f64,
            adjustment: 0,
            random: 0x853c_49e6_748f_ea9b,
            stats: PolicyStats::default(),
        }
    }

    /// The window's current share of the capacity, as set by hill climbing.
    pub fn window_max(&self) -> u64 {
        self.window_max
    }

    fn move_to(&mut self, idx: u32, queue: u8) {
        self.unlink(idx);
        self.push_front(idx, queue);
    }

    fn evict(&mut self, idx: u32, evicted: &mut Vec<KeyHash>) {
        self.unlink(idx);
        let key = self.slab.node(idx).key;
        self.index.remove(&key);
        self.slab.release(idx);
        self.stats.evictions += 1;
        evicted.push(key);
    }

    fn resident_weight(&self) -> u64 {
        self.window.weight + self.probation.weight + self.protected.weight
    }

    fn main_max(&self) -> u64 {
        self.capacity - self.window_max
    }

    fn record(&mut self, key: KeyHash) {
        self.sketch.increment(key);
        let needed = self.index.len() as u64;
        if needed > self.sketch.width() {
            // More entries than counters per row: widen (losing the counts, like Caffeine).
            self.sketch = FrequencySketch::new(needed);
        }
    }

    fn demote_from_protected(&mut self) {
        let limit = self.protected_max.min(self.main_max());
        while self.protected.weight > limit {
            let Some(idx) = self.protected.tail() else {
                break;
            };
            self.move_to(idx, PROBATION);
        }
    }

    /// The main region's coldest entry: probation first, then protected, then the window.
    fn victim(&mut self) -> Option<u32> {
        for queue in [PROBATION, PROTECTED, WINDOW] {
            let mut list = *self.list_mut(queue);
            let victim = self.slab.pick_victim(&mut list);
            *self.list_mut(queue) = list;
            if victim.is_some() {
                return victim;
            }
        }
        None
    }

    fn next_random(&mut self) -> u64 {
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    /// TinyLFU's admission test, tilted by priority.
    fn admit(&mut self, candidate: u32, victim: u32) -> bool {
        let (c, v) = (*self.slab.node(candidate), *self.slab.node(victim));
        match (c.priority == Priority::Low, v.priority == Priority::Low) {
            (true, false) => return false,
            (false, true) => return true,
            _ => {}
        }
        let candidate_freq = self.sketch.frequency(c.key);
        let victim_freq = self.sketch.frequency(v.key);
        if candidate_freq > victim_freq {
            true
        } else if candidate_freq >= ADMIT_HASHDOS_THRESHOLD {
            self.next_random() & 127 == 0
        } else {
            false
        }
    }

    /// Moves the window's overflow into probation, then evicts until the weight fits:
    /// each candidate from the window duels the main region's victim.
    fn evict_entries(&mut self, sparing: Option<u32>, evicted: &mut Vec<KeyHash>) {
        let mut candidates = Vec::new();
        while self.window.weight > self.window_max {
            let Some(idx) = self.window.tail() else { break };
            if Some(idx) == sparing && self.window.len == 1 {
                break;
            }
            self.unlink(idx);
            candidates.push(idx);
        }
        let mut returning = Vec::new();
        for idx in candidates {
            while self.resident_weight() + self.slab.node(idx).weight > self.capacity {
                let Some(victim) = self.victim() else { break };
                if self.admit(idx, victim) {
                    let node = *self.slab.node(victim);
                    if node.priority == Priority::High && !node.chance_spent {
                        self.slab.node_mut(victim).chance_spent = true;
                        self.move_to(victim, PROBATION);
                        continue;
                    }
                    self.evict(victim, evicted);
                } else {
                    break;
                }
            }
            if self.resident_weight() + self.slab.node(idx).weight <= self.capacity {
                self.push_front(idx, PROBATION);
                continue;
            }
            let node = self.slab.node_mut(idx);
            if node.priority == Priority::High && !node.chance_spent {
                node.chance_spent = true;
                returning.push(idx);
                continue;
            }
            self.push_front(idx, PROBATION);
            self.stats.rejections += 1;
            self.evict(idx, evicted);
        }
        for idx in returning {
            self.push_front(idx, WINDOW);
        }
        while self.resident_weight() > self.capacity {
            let Some(victim) = self.victim() else { break };
            self.evict(victim, evicted);
        }
    }

    /// Caffeine's hill climber: called after each insert; acts once per sample period.
    fn climb(&mut self) {
        self.determine_adjustment();
        self.demote_from_protected();
        match self.adjustment {
            0 => {}
            amount if amount > 0 => self.increase_window(amount as u64),
            amount => self.decrease_window(amount.unsigned_abs()),
        }
    }

    fn determine_adjustment(&mut self) {
        let requests = self.hits_in_sample + self.misses_in_sample;
        if requests < self.sketch.sample_size {
            return;
        }
        let hit_rate = self.hits_in_sample as f64 / requests as f64;
        let change = hit_rate - self.previous_hit_rate;
        let amount = if change >= -HILL_CLIMBER_NOISE {
            self.step_size
        } else {
            -self.step_size
        };
        self.step_size = if change.abs() >= HILL_CLIMBER_RESTART_THRESHOLD {
            HILL_CLIMBER_STEP_PERCENT * self.capacity as f64 * amount.signum()
        } else {
            HILL_CLIMBER_STEP_DECAY_RATE * amount
        };
        self.previous_hit_rate = hit_rate;
        self.adjustment = amount as i64;
        self.hits_in_sample = 0;
        self.misses_in_sample = 0;
    }

    fn increase_window(&mut self, wanted: u64) {
        if self.protected_max == 0 {
            return;
        }
        let mut quota = wanted.min(self.protected_max);
        self.protected_max -= quota;
        self.window_max += quota;
        self.demote_from_protected();
        loop {
            let from = self
                .probation
                .tail()
                .filter(|&idx| self.slab.node(idx).weight <= quota);
            let Some(idx) = from.or(self.protected.tail()) else {
                break;
            };
            let weight = self.slab.node(idx).weight;
            if quota < weight {
                break;
            }
            quota -= weight;
            self.move_to(idx, WINDOW);
        }
        self.protected_max += quota;
        self.window_max -= quota;
        self.adjustment = quota as i64;
    }

    fn decrease_window(&mut self, wanted: u64) {
        if self.window_max <= 1 {
            return;
        }
        let mut quota = wanted.min(self.window_max - 1);
        self.protected_max += quota;
        self.window_max -= quota;
        while let Some(idx) = self.window.tail() {
            let weight = self.slab.node(idx).weight;
            if quota < weight {
                break;
            }
            quota -= weight;
            self.move_to(idx, PROBATION);
        }
        self.protected_max -= quota;
        self.window_max += quota;
        self.adjustment = -(quota as i64);
    }
}

impl Queues for WTinyLfu {
    fn slab_mut(&mut self) -> &mut Slab {
        &mut self.slab
    }
    fn list_mut(&mut self, queue: u8) -> &mut List {
        match queue {
            WINDOW => &mut self.window,
            PROBATION => &mut self.probation,
            _ => &mut self.protected,
        }
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> &'static str {
        "w-tinylfu"
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.index.contains_key(&key)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        self.hits_in_sample += 1;
        self.record(key);
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        let queue = self.slab.node(idx).queue;
        let mut list = *self.list_mut(queue);
        self.slab.note_hit(&mut list, idx);
        *self.list_mut(queue) = list;
        match queue {
            PROBATION => {
                self.move_to(idx, PROTECTED);
                self.demote_from_protected();
            }
            _ => self.move_to(idx, queue),
        }
    }
    fn on_miss(&mut self, key: KeyHash) {
        self.stats.misses += 1;
        self.misses_in_sample += 1;
        self.record(key);
        self.last_missed = Some(key);
    }
    fn on_insert(&mut self, key: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash> {
        let mut evicted = Vec::new();
        if self.last_missed.take() != Some(key) && !self.index.contains_key(&key) {
            self.record(key);
        }
        if weight > self.capacity {
            self.on_remove(key);
            self.stats.evictions += 1;
            self.stats.rejections += 1;
            evicted.push(key);
            return evicted;
        }
        let idx = match self.index.get(&key).copied() {
            Some(idx) => {
                let queue = self.slab.node(idx).queue;
                let mut list = *self.list_mut(queue);
                self.slab.update(&mut list, idx, weight, priority);
                *self.list_mut(queue) = list;
                self.move_to(idx, queue);
                idx
            }
            None => {
                let idx = self.slab.alloc(key, weight, priority, WINDOW);
                self.index.insert(key, idx);
                self.push_front(idx, WINDOW);
                idx
            }
        };
        self.evict_entries(Some(idx), &mut evicted);
        self.climb();
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        if let Some(idx) = self.index.remove(&key) {
            self.unlink(idx);
            self.slab.release(idx);
        }
    }
    fn len(&self) -> usize {
        self.index.len()
    }
    fn weight(&self) -> u64 {
        self.resident_weight()
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        let mut keys = self.slab.keys(&self.window);
        keys.extend(self.slab.keys(&self.probation));
        keys.extend(self.slab.keys(&self.protected));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    fn warm(policy: &mut WTinyLfu, keys: std::ops::RangeInclusive<u64>, rounds: usize) {
        for _ in 0..rounds {
            for key in keys.clone() {
                access(policy, key);
            }
        }
    }

    #[test]
    fn a_one_hit_wonder_is_not_admitted_over_a_frequent_key() {
        let mut tiny = WTinyLfu::new(10);
        warm(&mut tiny, 1..=10, 3);
        tiny.on_miss(100);
        tiny.on_insert(100, 1, Priority::Normal);
        tiny.on_miss(101);
        assert_eq!(tiny.on_insert(101, 1, Priority::Normal), vec![100]);
        assert!(tiny.stats().rejections >= 1);
        assert_eq!(tiny.len(), 10);
    }

    #[test]
    fn a_frequent_newcomer_is_admitted() {
        let mut tiny = WTinyLfu::new(10);
        warm(&mut tiny, 1..=10, 1);
        for _ in 0..5 {
            tiny.record(200);
        }
        tiny.on_miss(200);
        tiny.on_insert(200, 1, Priority::Normal);
        tiny.on_miss(201);
        let evicted = tiny.on_insert(201, 1, Priority::Normal);
        assert!(tiny.contains(200), "evicted {evicted:?}");
    }

    #[test]
    fn a_low_priority_candidate_cannot_displace_a_normal_key() {
        let mut tiny = WTinyLfu::new(10);
        warm(&mut tiny, 1..=10, 1);
        for _ in 0..5 {
            tiny.record(300);
        }
        tiny.on_insert(300, 1, Priority::Low);
        assert_eq!(tiny.on_insert(301, 1, Priority::Normal), vec![300]);
    }

    #[test]
    fn weights_and_refusal() {
        let mut tiny = WTinyLfu::new(10);
        assert_eq!(tiny.on_insert(1, 11, Priority::Normal), vec![1]);
        tiny.on_insert(2, 6, Priority::Normal);
        tiny.on_insert(3, 4, Priority::Normal);
        assert_eq!(tiny.weight(), 10);
        let evicted = tiny.on_insert(4, 5, Priority::Normal);
        assert!(tiny.weight() <= 10 && !evicted.is_empty(), "{evicted:?}");
    }

    #[test]
    fn hill_climbing_moves_the_window() {
        let mut tiny = WTinyLfu::new(100);
        let start = tiny.window_max();
        // A recency-friendly stream: a sliding range, each key reused soon after first use.
        for i in 0..20_000u64 {
            access(&mut tiny, i / 4 + (i % 4) * 7);
        }
        assert_ne!(tiny.window_max(), start);
    }
}
