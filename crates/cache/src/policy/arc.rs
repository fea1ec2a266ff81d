//! Adaptive Replacement Cache (N. Megiddo and D. S. Modha, "ARC: A Self-Tuning, Low Overhead
//! Replacement Cache", USENIX FAST 2003).
//!
//! T1 holds keys seen once recently, T2 keys seen at least twice; B1 and B2 are their ghost
//! lists (keys only, recently evicted). A miss that hits a ghost list moves the target size
//! `p` of T1: toward recency on a B1 hit, toward frequency on a B2 hit. Sizes are weights
//! (1 per entry on traces), so with unit weights this is exactly the paper's algorithm.
//!
//! Priority: the victim inside T1 or T2 is chosen as in LRU — a Low entry among the
//! `CANDIDATE_WINDOW` coldest goes first, a High entry at the cold end gets one second chance
//! (moved to its list's hot end); a hit turns Low into Normal.

use super::list::{KeyMap, List, Queues, Slab};
use super::{KeyHash, Policy, PolicyStats, Priority};

const T1: u8 = 0;
const T2: u8 = 1;
const B1: u8 = 2;
const B2: u8 = 3;

#[derive(Debug)]
pub struct Arc {
    capacity: u64,
    /// Target weight of T1; fractional, as the paper's ratios of ghost-list sizes are.
    p: f64,
    slab: Slab,
    t1: List,
    t2: List,
    b1: List,
    b2: List,
    index: KeyMap<u32>,
    stats: PolicyStats,
}

impl Arc {
    pub fn new(capacity: u64) -> Self {
        let hint = capacity.min(super::RESERVE_AT_MOST) as usize * 2;
        let mut index = KeyMap::default();
        index.reserve(hint);
        Self {
            capacity,
            p: 0.0,
            slab: Slab::with_capacity(hint),
            t1: List::default(),
            t2: List::default(),
            b1: List::default(),
            b2: List::default(),
            index,
            stats: PolicyStats::default(),
        }
    }

    /// The adaptive target size of T1 (`p` in the paper).
    pub fn target(&self) -> f64 {
        self.p
    }

    fn forget(&mut self, idx: u32) {
        self.unlink(idx);
        let key = self.slab.node(idx).key;
        self.index.remove(&key);
        self.slab.release(idx);
    }

    fn drop_ghost_tail(&mut self, queue: u8) {
        if let Some(idx) = self.list_mut(queue).tail() {
            self.forget(idx);
        }
    }

    fn all_weight(&self) -> u64 {
        self.t1.weight + self.t2.weight + self.b1.weight + self.b2.weight
    }

    fn resident_weight(&self) -> u64 {
        self.t1.weight + self.t2.weight
    }

    /// REPLACE(x, p) of the paper: demote T1's or T2's victim to its ghost list.
    fn replace(&mut self, key_in_b2: bool, evicted: &mut Vec<KeyHash>) -> bool {
        let from_t1 = self.t1.len > 0
            && ((key_in_b2 && self.t1.weight as f64 == self.p)
                || self.t1.weight as f64 > self.p
                || self.t2.len == 0);
        let (from, ghost) = if from_t1 { (T1, B1) } else { (T2, B2) };
        let mut list = *self.list_mut(from);
        let victim = self.slab.pick_victim(&mut list);
        *self.list_mut(from) = list;
        let Some(idx) = victim else { return false };
        self.unlink(idx);
        self.push_front(idx, ghost);
        evicted.push(self.slab.node(idx).key);
        self.stats.evictions += 1;
        true
    }

    /// Evicts T1's victim outright, without a ghost (case IV.A when T1 fills the cache).
    fn evict_t1_outright(&mut self, evicted: &mut Vec<KeyHash>) -> bool {
        let mut list = self.t1;
        let victim = self.slab.pick_victim(&mut list);
        self.t1 = list;
        let Some(idx) = victim else { return false };
        evicted.push(self.slab.node(idx).key);
        self.forget(idx);
        self.stats.evictions += 1;
        true
    }

    fn make_room(&mut self, weight: u64, key_in_b2: bool, evicted: &mut Vec<KeyHash>) {
        while self.resident_weight() + weight > self.capacity {
            if !self.replace(key_in_b2, evicted) {
                break;
            }
        }
    }

    /// Case IV of the paper: a key in none of the four lists.
    fn insert_new(
        &mut self,
        key: KeyHash,
        weight: u64,
        priority: Priority,
        evicted: &mut Vec<KeyHash>,
    ) {
        let c = self.capacity;
        while self.t1.weight + self.b1.weight + weight > c && self.b1.len > 0 {
            self.drop_ghost_tail(B1);
        }
        while self.t1.weight + weight > c {
            if !self.evict_t1_outright(evicted) {
                break;
            }
        }
        while self.all_weight() + weight > 2 * c && self.b2.len > 0 {
            self.drop_ghost_tail(B2);
        }
        self.make_room(weight, false, evicted);
        let idx = self.slab.alloc(key, weight, priority, T1);
        self.push_front(idx, T1);
        self.index.insert(key, idx);
    }

    /// Cases II and III: a ghost comes back, into T2 (`p` already moved in `on_miss`).
    fn insert_from_ghost(
        &mut self,
        idx: u32,
        weight: u64,
        priority: Priority,
        evicted: &mut Vec<KeyHash>,
    ) {
        let key_in_b2 = self.slab.node(idx).queue == B2;
        self.unlink(idx);
        self.make_room(weight, key_in_b2, evicted);
        let node = self.slab.node_mut(idx);
        node.weight = weight;
        node.priority = priority;
        node.chance_spent = false;
        self.push_front(idx, T2);
    }

    fn update_resident(
        &mut self,
        idx: u32,
        weight: u64,
        priority: Priority,
        evicted: &mut Vec<KeyHash>,
    ) {
        let queue = self.slab.node(idx).queue;
        // Out of the lists while room is made, so it cannot be its own victim.
        self.unlink(idx);
        let node = self.slab.node_mut(idx);
        node.weight = weight;
        node.priority = priority;
        self.make_room(weight, false, evicted);
        self.push_front(idx, queue);
    }
}

impl Queues for Arc {
    fn slab_mut(&mut self) -> &mut Slab {
        &mut self.slab
    }
    fn list_mut(&mut self, queue: u8) -> &mut List {
        match queue {
            T1 => &mut self.t1,
            T2 => &mut self.t2,
            B1 => &mut self.b1,
            _ => &mut self.b2,
        }
    }
}

impl Policy for Arc {
    fn name(&self) -> &'static str {
        "arc"
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.index
            .get(&key)
            .is_some_and(|&idx| self.slab.node(idx).queue <= T2)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        let queue = self.slab.node(idx).queue;
        if queue > T2 {
            return;
        }
        let mut list = *self.list_mut(queue);
        self.slab.note_hit(&mut list, idx);
        *self.list_mut(queue) = list;
        self.unlink(idx);
        self.push_front(idx, T2);
    }
    fn on_miss(&mut self, key: KeyHash) {
        self.stats.misses += 1;
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        let weight = self.slab.node(idx).weight.max(1) as f64;
        let (b1, b2) = (self.b1.weight.max(1) as f64, self.b2.weight.max(1) as f64);
        match self.slab.node(idx).queue {
            B1 => self.p = (self.p + (b2 / b1).max(1.0) * weight).min(self.capacity as f64),
            B2 => self.p = (self.p - (b1 / b2).max(1.0) * weight).max(0.0),
            _ => {}
        }
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
        match self.index.get(&key).copied() {
            Some(idx) if self.slab.node(idx).queue <= T2 => {
                self.update_resident(idx, weight, priority, &mut evicted)
            }
            Some(idx) => self.insert_from_ghost(idx, weight, priority, &mut evicted),
            None => self.insert_new(key, weight, priority, &mut evicted),
        }
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        if let Some(&idx) = self.index.get(&key) {
            self.forget(idx);
        }
    }
    fn len(&self) -> usize {
        self.t1.len + self.t2.len
    }
    fn weight(&self) -> u64 {
        self.resident_weight()
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        let mut keys = self.slab.keys(&self.t1);
        keys.extend(self.slab.keys(&self.t2));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    #[test]
    fn ghost_hits_move_the_target() {
        let mut arc = Arc::new(2);
        for key in [1, 1, 2, 3] {
            access(&mut arc, key);
        }
        // 1 is in T2; 3 pushed 2 from T1 into the ghost list B1.
        assert!(!arc.contains(2));
        assert_eq!(arc.target(), 0.0);
        arc.on_miss(2);
        assert_eq!(arc.target(), 1.0, "a B1 hit grows T1's target");
        assert_eq!(
            arc.on_insert(2, 1, Priority::Normal),
            vec![1],
            "T1 is at its target: T2 gives way"
        );
        assert!(arc.contains(2) && arc.contains(3));
        arc.on_miss(1);
        assert_eq!(arc.target(), 0.0, "a B2 hit shrinks it");
    }

    #[test]
    fn a_scan_does_not_flush_frequent_keys() {
        let mut arc = Arc::new(4);
        for key in [1, 2, 1, 2] {
            access(&mut arc, key);
        }
        for key in 100..120 {
            access(&mut arc, key);
        }
        assert!(
            arc.contains(1) && arc.contains(2),
            "T2 keeps the twice-seen keys"
        );
    }

    #[test]
    fn low_priority_is_evicted_first_and_weights_count() {
        let mut arc = Arc::new(3);
        arc.on_insert(1, 1, Priority::Normal);
        arc.on_insert(2, 1, Priority::Low);
        arc.on_insert(3, 1, Priority::Normal);
        assert_eq!(arc.on_insert(4, 1, Priority::Normal), vec![2]);
        assert_eq!(arc.on_insert(5, 3, Priority::Normal), vec![1, 3, 4]);
        assert_eq!(arc.on_insert(6, 4, Priority::Normal), vec![6]);
        assert_eq!((arc.len(), arc.weight(), arc.stats().rejections), (1, 3, 1));
    }
}
