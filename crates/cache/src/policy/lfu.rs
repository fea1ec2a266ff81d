//! Least frequently used, with aging: every resident key counts its hits; the key with the
//! fewest is evicted, the least recently used among equals. So that a key popular long ago
//! cannot stay forever, all counts are halved each time the cache has seen `AGING_PERIOD`
//! accesses per resident key.
//!
//! Priority: Low entries are ordered before every Normal and High one, so they are evicted
//! first whatever their count (a hit makes them Normal); a High entry chosen as victim gets
//! one second chance: it is touched as if just used, its chance spent until its next hit.

use std::collections::BTreeSet;

use super::list::KeyMap;
use super::{KeyHash, Policy, PolicyStats, Priority};

/// Accesses per resident key between two halvings of every count.
const AGING_PERIOD: u64 = 8;

#[derive(Debug, Clone, Copy)]
struct Entry {
    weight: u64,
    priority: Priority,
    count: u32,
    last_use: u64,
    chance_spent: bool,
}

impl Entry {
    /// The eviction order: lowest first.
    fn rank(&self, key: KeyHash) -> (bool, u32, u64, KeyHash) {
        (
            self.priority != Priority::Low,
            self.count,
            self.last_use,
            key,
        )
    }
}

#[derive(Debug)]
pub struct Lfu {
    capacity: u64,
    weight: u64,
    entries: KeyMap<Entry>,
    order: BTreeSet<(bool, u32, u64, KeyHash)>,
    /// Accesses seen, for aging.
    clock: u64,
    /// Recency stamps, bumped by every touch (hit, insert, second chance).
    stamp: u64,
    next_aging: u64,
    stats: PolicyStats,
}

impl Lfu {
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            weight: 0,
            entries: KeyMap::default(),
            order: BTreeSet::new(),
            clock: 0,
            stamp: 0,
            next_aging: AGING_PERIOD * 64,
            stats: PolicyStats::default(),
        }
    }

    /// The hit count of a resident key (after aging).
    pub fn count(&self, key: KeyHash) -> Option<u32> {
        self.entries.get(&key).map(|entry| entry.count)
    }

    fn next_stamp(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    fn tick(&mut self) {
        self.clock += 1;
        if self.clock >= self.next_aging {
            self.age();
        }
    }

    fn age(&mut self) {
        self.order.clear();
        for (&key, entry) in self.entries.iter_mut() {
            entry.count /= 2;
            self.order.insert(entry.rank(key));
        }
        self.next_aging = self.clock + AGING_PERIOD * (self.entries.len() as u64).max(64);
    }

    /// Applies `change` to a resident entry, keeping the order set in step.
    fn modify(&mut self, key: KeyHash, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.entries.get_mut(&key) {
            self.order.remove(&entry.rank(key));
            change(entry);
            self.order.insert(entry.rank(key));
        }
    }

    fn evict_one(&mut self, sparing: KeyHash) -> Option<KeyHash> {
        loop {
            let &(_, _, _, key) = self.order.iter().find(|rank| rank.3 != sparing)?;
            let entry = *self.entries.get(&key)?;
            if entry.priority == Priority::High && !entry.chance_spent {
                let now = self.next_stamp();
                self.modify(key, |entry| {
                    entry.chance_spent = true;
                    entry.last_use = now;
                });
                continue;
            }
            self.remove_entry(key);
            self.stats.evictions += 1;
            return Some(key);
        }
    }

    fn remove_entry(&mut self, key: KeyHash) {
        if let Some(entry) = self.entries.remove(&key) {
            self.order.remove(&entry.rank(key));
            self.weight -= entry.weight;
        }
    }

    fn make_room(&mut self, needed: u64, sparing: KeyHash, evicted: &mut Vec<KeyHash>) {
        while self.weight + needed > self.capacity {
            match self.evict_one(sparing) {
                Some(key) => evicted.push(key),
                None => break,
            }
        }
    }
}

impl Policy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.entries.contains_key(&key)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        let now = self.next_stamp();
        self.modify(key, |entry| {
            entry.count = entry.count.saturating_add(1);
            entry.last_use = now;
            entry.chance_spent = false;
            if entry.priority == Priority::Low {
                entry.priority = Priority::Normal;
            }
        });
        self.tick();
    }
    fn on_miss(&mut self, _key: KeyHash) {
        self.stats.misses += 1;
        self.tick();
    }
    fn on_insert(&mut self, key: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash> {
        let mut evicted = Vec::new();
        if weight > self.capacity {
            self.remove_entry(key);
            self.stats.evictions += 1;
            self.stats.rejections += 1;
            evicted.push(key);
            return evicted;
        }
        let now = self.next_stamp();
        if let Some(old) = self.entries.get(&key).copied() {
            self.make_room(weight.saturating_sub(old.weight), key, &mut evicted);
            self.weight = self.weight - old.weight + weight;
            self.modify(key, |entry| {
                entry.weight = weight;
                entry.priority = priority;
                entry.last_use = now;
            });
            return evicted;
        }
        self.make_room(weight, key, &mut evicted);
        let entry = Entry {
            weight,
            priority,
            count: 1,
            last_use: now,
            chance_spent: false,
        };
        self.order.insert(entry.rank(key));
        self.entries.insert(key, entry);
        self.weight += weight;
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        self.remove_entry(key);
    }
    fn len(&self) -> usize {
        self.entries.len()
    }
    fn weight(&self) -> u64 {
        self.weight
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        self.order.iter().rev().map(|rank| rank.3).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    #[test]
    fn evicts_the_least_frequent_then_the_least_recent() {
        let mut lfu = Lfu::new(3);
        for key in [1, 1, 1, 2, 2, 3, 4] {
            access(&mut lfu, key);
        }
        // 4 pushed out 3 (both counted once; 3 was older).
        assert!(!lfu.contains(3));
        assert_eq!(lfu.on_insert(5, 1, Priority::Normal), vec![4]);
        access(&mut lfu, 5);
        assert_eq!(
            lfu.on_insert(6, 1, Priority::Normal),
            vec![2],
            "both counted twice: the older goes"
        );
        assert_eq!(lfu.stats().evictions, 3);
    }

    #[test]
    fn aging_halves_counts_so_old_favourites_fade() {
        let mut lfu = Lfu::new(2);
        for _ in 0..100 {
            access(&mut lfu, 1);
        }
        let before = lfu.count(1).unwrap_or(0);
        for _ in 0..(AGING_PERIOD * 64) {
            access(&mut lfu, 2);
        }
        let after = lfu.count(1).unwrap_or(0);
        assert!(after * 2 <= before, "count 1 went {before} -> {after}");
    }

    #[test]
    fn priority_and_weights() {
        let mut lfu = Lfu::new(3);
        lfu.on_insert(1, 1, Priority::High);
        lfu.on_insert(2, 1, Priority::Normal);
        lfu.on_insert(3, 1, Priority::Low);
        lfu.on_hit(3);
        lfu.on_hit(3); // now Normal with count 3
        assert_eq!(
            lfu.on_insert(4, 1, Priority::Low),
            vec![2],
            "1 spent its chance instead"
        );
        assert_eq!(
            lfu.on_insert(5, 1, Priority::Normal),
            vec![4],
            "Low goes first, newer or not"
        );
        assert_eq!(
            lfu.on_insert(6, 1, Priority::Normal),
            vec![1],
            "the chance is spent"
        );
        assert_eq!(lfu.on_insert(7, 4, Priority::Normal), vec![7]);
        assert_eq!(lfu.stats().rejections, 1);
        assert_eq!(
            lfu.on_insert(3, 3, Priority::Normal),
            vec![5, 6],
            "growing a resident entry"
        );
        assert_eq!((lfu.len(), lfu.weight()), (1, 3));
    }
}
