//! Least recently used: one list, hits move to the hot end, evictions take the cold end.
//!
//! Priority: among the `CANDIDATE_WINDOW` coldest entries a Low one is evicted first; a High
//! entry reaching the cold end is moved back to the hot end once (its second chance) before
//! it can be evicted; a hit turns Low into Normal and restores a High entry's chance.

use super::list::{KeyMap, List, Slab};
use super::{KeyHash, Policy, PolicyStats, Priority};

#[derive(Debug)]
pub struct Lru {
    capacity: u64,
    slab: Slab,
    list: List,
    index: KeyMap<u32>,
    stats: PolicyStats,
}

impl Lru {
    pub fn new(capacity: u64) -> Self {
        let hint = capacity.min(super::RESERVE_AT_MOST) as usize;
        let mut index = KeyMap::default();
        index.reserve(hint);
        Self {
            capacity,
            slab: Slab::with_capacity(hint),
            list: List::default(),
            index,
            stats: PolicyStats::default(),
        }
    }

    fn evict_one(&mut self) -> Option<KeyHash> {
        let idx = self.slab.pick_victim(&mut self.list)?;
        self.slab.unlink(&mut self.list, idx);
        let key = self.slab.node(idx).key;
        self.slab.release(idx);
        self.index.remove(&key);
        self.stats.evictions += 1;
        Some(key)
    }

    fn make_room(&mut self, needed: u64, evicted: &mut Vec<KeyHash>) {
        while self.list.weight + needed > self.capacity {
            match self.evict_one() {
                Some(key) => evicted.push(key),
                None => break,
            }
        }
    }
}

impl Policy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.index.contains_key(&key)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        if let Some(&idx) = self.index.get(&key) {
            self.slab.note_hit(&mut self.list, idx);
            self.slab.move_to_front(&mut self.list, idx);
        }
    }
    fn on_miss(&mut self, _key: KeyHash) {
        self.stats.misses += 1;
    }
    fn on_insert(&mut self, key: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash> {
        let mut evicted = Vec::new();
        if weight > self.capacity {
            self.on_remove(key);
            self.stats.evictions += 1;
            self.stats.rejections += 1;
            evicted.push(key);
            return evicted;
        }
        if let Some(&idx) = self.index.get(&key) {
            self.slab.update(&mut self.list, idx, weight, priority);
            // Keep the updated key out of the victims while shrinking to fit.
            self.slab.unlink(&mut self.list, idx);
            self.make_room(weight, &mut evicted);
            self.slab.push_front(&mut self.list, idx);
            return evicted;
        }
        self.make_room(weight, &mut evicted);
        let idx = self.slab.alloc(key, weight, priority, 0);
        self.slab.push_front(&mut self.list, idx);
        self.index.insert(key, idx);
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        if let Some(idx) = self.index.remove(&key) {
            self.slab.unlink(&mut self.list, idx);
            self.slab.release(idx);
        }
    }
    fn len(&self) -> usize {
        self.list.len
    }
    fn weight(&self) -> u64 {
        self.list.weight
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        self.slab.keys(&self.list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = Lru::new(3);
        for key in [1, 2, 3] {
            assert!(!access(&mut lru, key));
        }
        assert!(access(&mut lru, 1));
        assert_eq!(lru.on_insert(4, 1, Priority::Normal), vec![2]);
        assert_eq!(lru.on_insert(5, 1, Priority::Normal), vec![3]);
        assert_eq!(lru.resident_keys(), vec![5, 4, 1]);
        let stats = lru.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (1, 3, 2));
    }

    #[test]
    fn low_priority_goes_before_older_normal() {
        let mut lru = Lru::new(3);
        lru.on_insert(1, 1, Priority::Normal);
        lru.on_insert(2, 1, Priority::Low);
        lru.on_insert(3, 1, Priority::Normal);
        assert_eq!(lru.on_insert(4, 1, Priority::Normal), vec![2]);
    }

    #[test]
    fn high_priority_survives_one_eviction_round() {
        let mut lru = Lru::new(2);
        lru.on_insert(1, 1, Priority::High);
        lru.on_insert(2, 1, Priority::Normal);
        assert_eq!(lru.on_insert(3, 1, Priority::Normal), vec![2]);
        assert!(lru.contains(1));
        assert_eq!(
            lru.on_insert(4, 1, Priority::Normal),
            vec![1],
            "its chance is spent"
        );
    }

    #[test]
    fn weights_evict_until_the_new_entry_fits() {
        let mut lru = Lru::new(10);
        lru.on_insert(1, 4, Priority::Normal);
        lru.on_insert(2, 4, Priority::Normal);
        assert_eq!(lru.on_insert(3, 6, Priority::Normal), vec![1]);
        assert_eq!(lru.weight(), 10);
        assert_eq!(
            lru.on_insert(9, 11, Priority::Normal),
            vec![9],
            "heavier than the capacity"
        );
        assert_eq!(lru.stats().rejections, 1);
        assert_eq!(
            lru.on_insert(2, 10, Priority::Normal),
            vec![3],
            "growing a resident entry"
        );
        assert_eq!((lru.len(), lru.weight()), (1, 10));
    }
}
