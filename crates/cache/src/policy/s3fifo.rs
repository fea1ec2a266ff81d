//! S3-FIFO (J. Yang et al., "FIFO queues are all you need for cache eviction", SOSP 2023).
//!
//! New keys enter a small FIFO S (10% of the capacity); most are one-hit wonders and leave it
//! quickly ("quick demotion") into the ghost FIFO G, which remembers keys only. A key hit
//! while in S moves on to the main FIFO M when it reaches S's tail; a key found in G goes
//! straight to M. M evicts by FIFO with lazy promotion: a tail entry with hits left is
//! reinserted at the head with one hit fewer. Counters saturate at 3.
//!
//! Priority: a Low entry with no hits among the `CANDIDATE_WINDOW` oldest of S or M is
//! evicted first; a High entry without hits gets one second chance (from S it moves to M,
//! in M it is reinserted); a hit turns Low into Normal and restores a High entry's chance.

use super::list::{CANDIDATE_WINDOW, KeyMap, List, Queues, Slab};
use super::{KeyHash, Policy, PolicyStats, Priority};

const SMALL: u8 = 0;
const MAIN: u8 = 1;
const GHOST: u8 = 2;
const MAX_FREQ: u8 = 3;
/// Hits needed while in S to be moved to M rather than demoted.
const MOVE_TO_MAIN: u8 = 1;

#[derive(Debug)]
pub struct S3Fifo {
    capacity: u64,
    small_target: u64,
    ghost_capacity: u64,
    slab: Slab,
    small: List,
    main: List,
    ghost: List,
    index: KeyMap<u32>,
    stats: PolicyStats,
}

impl S3Fifo {
    pub fn new(capacity: u64) -> Self {
        let small_target = (capacity / 10).max(1);
        let hint = capacity.min(super::RESERVE_AT_MOST) as usize * 2;
        let mut index = KeyMap::default();
        index.reserve(hint);
        Self {
            capacity,
            small_target,
            ghost_capacity: capacity - small_target.min(capacity),
            slab: Slab::with_capacity(hint),
            small: List::default(),
            main: List::default(),
            ghost: List::default(),
            index,
            stats: PolicyStats::default(),
        }
    }

    fn forget(&mut self, idx: u32) {
        self.unlink(idx);
        let key = self.slab.node(idx).key;
        self.index.remove(&key);
        self.slab.release(idx);
    }

    fn resident_weight(&self) -> u64 {
        self.small.weight + self.main.weight
    }

    /// A never-hit Low entry among the oldest of `queue`, evicted before anything else.
    fn unproven_low(&self, queue: &List) -> Option<u32> {
        let mut cursor = queue.tail();
        for _ in 0..CANDIDATE_WINDOW {
            let idx = cursor?;
            let node = self.slab.node(idx);
            if node.priority == Priority::Low && node.freq == 0 {
                return Some(idx);
            }
            cursor = self.slab.hotter(idx);
        }
        None
    }

    /// Evicts one resident entry; returns its key.
    fn evict(&mut self) -> Option<KeyHash> {
        loop {
            if self.small.len == 0 && self.main.len == 0 {
                return None;
            }
            let from_small = self.small.len > 0
                && (self.small.weight >= self.small_target || self.main.len == 0);
            let evicted = if from_small {
                self.evict_from_small()
            } else {
                self.evict_from_main()
            };
            if evicted.is_some() {
                self.stats.evictions += 1;
                return evicted;
            }
        }
    }

    /// Takes S's tail: on to M if it was hit (or is High with its chance), else out into G.
    /// Returns `None` when the tail only moved to M.
    fn evict_from_small(&mut self) -> Option<KeyHash> {
        let idx = self.unproven_low(&self.small).or(self.small.tail())?;
        let node = *self.slab.node(idx);
        let second_chance = node.priority == Priority::High && !node.chance_spent;
        if node.freq >= MOVE_TO_MAIN || second_chance {
            self.unlink(idx);
            let moved = self.slab.node_mut(idx);
            moved.freq = 0;
            moved.chance_spent |= second_chance;
            self.push_front(idx, MAIN);
            return None;
        }
        self.unlink(idx);
        self.slab.node_mut(idx).freq = 0;
        self.push_front(idx, GHOST);
        self.trim_ghost();
        Some(node.key)
    }

    /// Takes M's tail: reinserted while it has hits (or a High chance), else out.
    fn evict_from_main(&mut self) -> Option<KeyHash> {
        let idx = self.unproven_low(&self.main).or(self.main.tail())?;
        let node = *self.slab.node(idx);
        let second_chance = node.priority == Priority::High && !node.chance_spent;
        if node.freq > 0 || second_chance {
            self.unlink(idx);
            let kept = self.slab.node_mut(idx);
            if node.freq > 0 {
                kept.freq -= 1;
            } else {
                kept.chance_spent = true;
            }
            self.push_front(idx, MAIN);
            return None;
        }
        self.forget(idx);
        Some(node.key)
    }

    fn trim_ghost(&mut self) {
        while self.ghost.weight > self.ghost_capacity {
            match self.ghost.tail() {
                Some(idx) => self.forget(idx),
                None => break,
            }
        }
    }

    fn make_room(&mut self, weight: u64, evicted: &mut Vec<KeyHash>) {
        while self.resident_weight() + weight > self.capacity {
            match self.evict() {
                Some(key) => evicted.push(key),
                None => break,
            }
        }
    }
}

impl Queues for S3Fifo {
    fn slab_mut(&mut self) -> &mut Slab {
        &mut self.slab
    }
    fn list_mut(&mut self, queue: u8) -> &mut List {
        match queue {
            SMALL => &mut self.small,
            MAIN => &mut self.main,
            _ => &mut self.ghost,
        }
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3-fifo"
    }
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn contains(&self, key: KeyHash) -> bool {
        self.index
            .get(&key)
            .is_some_and(|&idx| self.slab.node(idx).queue != GHOST)
    }
    fn on_hit(&mut self, key: KeyHash) {
        self.stats.hits += 1;
        let Some(&idx) = self.index.get(&key) else {
            return;
        };
        let queue = self.slab.node(idx).queue;
        if queue == GHOST {
            return;
        }
        let mut list = *self.list_mut(queue);
        self.slab.note_hit(&mut list, idx);
        *self.list_mut(queue) = list;
        let node = self.slab.node_mut(idx);
        node.freq = (node.freq + 1).min(MAX_FREQ);
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
        let existing = self.index.get(&key).copied();
        let queue = match existing {
            Some(idx) => {
                let queue = self.slab.node(idx).queue;
                // Out of its queue while room is made, so it cannot be its own victim.
                self.unlink(idx);
                if queue == GHOST { MAIN } else { queue }
            }
            None => SMALL,
        };
        self.make_room(weight, &mut evicted);
        let idx = match existing {
            Some(idx) => {
                let node = self.slab.node_mut(idx);
                node.weight = weight;
                node.priority = priority;
                if queue == MAIN && node.queue == GHOST {
                    node.freq = 0;
                    node.chance_spent = false;
                }
                idx
            }
            None => {
                let idx = self.slab.alloc(key, weight, priority, SMALL);
                self.index.insert(key, idx);
                idx
            }
        };
        self.push_front(idx, queue);
        evicted
    }
    fn on_remove(&mut self, key: KeyHash) {
        if let Some(&idx) = self.index.get(&key) {
            self.forget(idx);
        }
    }
    fn len(&self) -> usize {
        self.small.len + self.main.len
    }
    fn weight(&self) -> u64 {
        self.resident_weight()
    }
    fn stats(&self) -> PolicyStats {
        self.stats
    }
    fn resident_keys(&self) -> Vec<KeyHash> {
        let mut keys = self.slab.keys(&self.small);
        keys.extend(self.slab.keys(&self.main));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access;

    #[test]
    fn one_hit_wonders_are_demoted_quickly() {
        let mut s3 = S3Fifo::new(10);
        access(&mut s3, 1);
        access(&mut s3, 1);
        for key in 100..130 {
            access(&mut s3, key);
        }
        assert!(
            s3.contains(1),
            "a key hit while in S moved on to M and survives the scan"
        );
        assert!(!s3.contains(100));
        // 128 was evicted into the ghost list; coming back it goes straight to M.
        let evicted = s3.on_insert(5, 1, Priority::Normal);
        assert_eq!(evicted.len(), 1);
        let ghost = evicted[0];
        access(&mut s3, ghost);
        assert_eq!(s3.slab.node(s3.index[&ghost]).queue, MAIN);
    }

    #[test]
    fn main_gives_hit_entries_another_round() {
        let mut s3 = S3Fifo::new(10);
        for key in 1..=10 {
            access(&mut s3, key);
            access(&mut s3, key);
        }
        // The first ones moved to M on the way out of S.
        for key in 50..80 {
            access(&mut s3, key);
        }
        let resident = s3.resident_keys();
        assert!(resident.len() == 10 && s3.weight() == 10);
        assert!(
            resident.iter().filter(|&&k| k <= 10).count() >= 8,
            "{resident:?}"
        );
    }

    #[test]
    fn priority_and_weights() {
        let mut s3 = S3Fifo::new(4);
        s3.on_insert(1, 1, Priority::Normal);
        s3.on_insert(2, 1, Priority::Low);
        s3.on_insert(3, 1, Priority::High);
        s3.on_insert(4, 1, Priority::Normal);
        assert_eq!(
            s3.on_insert(5, 1, Priority::Normal),
            vec![2],
            "the unproven Low entry first"
        );
        assert_eq!(s3.on_insert(6, 1, Priority::Normal), vec![1]);
        assert_eq!(
            s3.on_insert(7, 1, Priority::Normal),
            vec![4],
            "3 took its second chance into M"
        );
        assert!(s3.contains(3));
        assert_eq!(s3.on_insert(8, 5, Priority::Normal), vec![8]);
        assert_eq!(s3.stats().rejections, 1);
        let evicted = s3.on_insert(9, 4, Priority::Normal);
        assert_eq!((s3.len(), s3.weight(), evicted.len()), (1, 4, 4));
    }
}
