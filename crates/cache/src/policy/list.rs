//! Building blocks shared by the list-based policies: a slab of nodes threaded by intrusive
//! doubly-linked lists (so moving a key between queues never allocates), a cheap hasher for
//! maps keyed by `KeyHash`, and the priority-aware victim choice.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{KeyHash, Priority};

/// How many entries from a queue's cold end are searched for a Low-priority victim: far
/// enough to spare a Normal entry, short enough to keep eviction O(1).
pub(crate) const CANDIDATE_WINDOW: usize = 8;

const NIL: u32 = u32::MAX;

/// A policy whose keys live on several lists threaded through one slab (ARC's T1/T2/B1/B2,
/// W-TinyLFU's window and main, S3-FIFO's small/main/ghost): moving a node between its
/// queues is the same everywhere, given where the slab and each queue's list are.
pub(crate) trait Queues {
    fn slab_mut(&mut self) -> &mut Slab;
    /// The list of queue number `queue`.
    fn list_mut(&mut self, queue: u8) -> &mut List;

    /// Take node `idx` off the list it is on.
    fn unlink(&mut self, idx: u32) {
        let queue = self.slab_mut().node(idx).queue;
        let mut list = *self.list_mut(queue);
        self.slab_mut().unlink(&mut list, idx);
        *self.list_mut(queue) = list;
    }

    /// Put node `idx` at the hot end of `queue`.
    fn push_front(&mut self, idx: u32, queue: u8) {
        self.slab_mut().node_mut(idx).queue = queue;
        let mut list = *self.list_mut(queue);
        self.slab_mut().push_front(&mut list, idx);
        *self.list_mut(queue) = list;
    }
}

/// Mixes a `KeyHash` once; SipHash would cost more than the rest of an access. Keys from
/// traces are small sequential integers, so a multiply-xorshift is needed, not the identity.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, key: u64) {
        self.0 = mix(key);
    }
}

/// A 64-bit finalizer (from splitmix64): every input bit affects every output bit.
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(crate) type KeyMap<V> = HashMap<KeyHash, V, BuildHasherDefault<KeyHasher>>;

/// One resident (or ghost) key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node {
    pub key: KeyHash,
    pub weight: u64,
    pub priority: Priority,
    /// Which queue of its policy holds it (the policy's own numbering).
    pub queue: u8,
    /// A small access counter for the policies that keep one (S3-FIFO).
    pub freq: u8,
    /// A High entry spends this once instead of being evicted; a hit restores it.
    pub chance_spent: bool,
    prev: u32,
    next: u32,
}

/// A queue threaded through the slab: `head` is the hot (MRU / newest) end, `tail` the cold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    pub len: usize,
    pub weight: u64,
    /// Linked entries that are not Normal: when both are 0 the victim is simply the tail.
    low: usize,
    high: usize,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            len: 0,
            weight: 0,
            low: 0,
            high: 0,
        }
    }
}

impl List {
    pub fn tail(&self) -> Option<u32> {
        (self.tail != NIL).then_some(self.tail)
    }
    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Slab {
    nodes: Vec<Node>,
    free: Vec<u32>,
}

impl Slab {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            nodes: Vec::with_capacity(n),
            free: Vec::new(),
        }
    }

    pub fn alloc(&mut self, key: KeyHash, weight: u64, priority: Priority, queue: u8) -> u32 {
        let node = Node {
            key,
            weight,
            priority,
            queue,
            freq: 0,
            chance_spent: false,
            prev: NIL,
            next: NIL,
        };
        match self.free.pop() {
            Some(idx) => {
                self.nodes[idx as usize] = node;
                idx
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Returns an unlinked node's slot to the free list.
    pub fn release(&mut self, idx: u32) {
        self.free.push(idx);
    }

    pub fn node(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }

    pub fn node_mut(&mut self, idx: u32) -> &mut Node {
        &mut self.nodes[idx as usize]
    }

    /// The neighbour one step toward the hot end.
    pub fn hotter(&self, idx: u32) -> Option<u32> {
        let prev = self.nodes[idx as usize].prev;
        (prev != NIL).then_some(prev)
    }

    pub fn push_front(&mut self, list: &mut List, idx: u32) {
        let old_head = list.head;
        {
            let node = &mut self.nodes[idx as usize];
            node.prev = NIL;
            node.next = old_head;
        }
        if old_head == NIL {
            list.tail = idx;
        } else {
            self.nodes[old_head as usize].prev = idx;
        }
        list.head = idx;
        self.account(list, idx, true);
    }

    pub fn unlink(&mut self, list: &mut List, idx: u32) {
        let Node { prev, next, .. } = self.nodes[idx as usize];
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        self.account(list, idx, false);
    }

    pub fn move_to_front(&mut self, list: &mut List, idx: u32) {
        if list.head != idx {
            self.unlink(list, idx);
            self.push_front(list, idx);
        }
    }

    /// Changes a linked node's weight or priority while keeping its list's totals right.
    pub fn update(&mut self, list: &mut List, idx: u32, weight: u64, priority: Priority) {
        self.account(list, idx, false);
        let node = &mut self.nodes[idx as usize];
        node.weight = weight;
        node.priority = priority;
        self.account(list, idx, true);
    }

    fn account(&self, list: &mut List, idx: u32, add: bool) {
        let node = &self.nodes[idx as usize];
        let (low, high) = match node.priority {
            Priority::Low => (1, 0),
            Priority::Normal => (0, 0),
            Priority::High => (0, 1),
        };
        if add {
            list.len += 1;
            list.weight += node.weight;
            list.low += low;
            list.high += high;
        } else {
            list.len -= 1;
            list.weight -= node.weight;
            list.low -= low;
            list.high -= high;
        }
    }

    /// A hit proves an entry: a Low one (prefetched) becomes Normal, a High one earns back
    /// its second chance.
    pub fn note_hit(&mut self, list: &mut List, idx: u32) {
        let node = self.nodes[idx as usize];
        if node.priority == Priority::Low {
            self.update(list, idx, node.weight, Priority::Normal);
        }
        self.nodes[idx as usize].chance_spent = false;
    }

    /// The entry to evict from `list`, honouring priority: the coldest Low entry among the
    /// `CANDIDATE_WINDOW` coldest goes first; otherwise the tail, except that a High tail
    /// with its chance unspent is moved to the hot end (chance spent) and the next is tried.
    /// Terminates: every pass either returns or spends one chance.
    pub fn pick_victim(&mut self, list: &mut List) -> Option<u32> {
        loop {
            let tail = list.tail()?;
            if list.low == 0 && list.high == 0 {
                return Some(tail);
            }
            if list.low > 0
                && let Some(low) = self.coldest_low(list)
            {
                return Some(low);
            }
            let node = self.nodes[tail as usize];
            if node.priority == Priority::High && !node.chance_spent {
                self.nodes[tail as usize].chance_spent = true;
                self.move_to_front(list, tail);
                continue;
            }
            return Some(tail);
        }
    }

    fn coldest_low(&self, list: &List) -> Option<u32> {
        let mut cursor = list.tail();
        for _ in 0..CANDIDATE_WINDOW {
            let idx = cursor?;
            if self.nodes[idx as usize].priority == Priority::Low {
                return Some(idx);
            }
            cursor = self.hotter(idx);
        }
        None
    }

    /// Keys of `list` from the hot end to the cold end.
    pub fn keys(&self, list: &List) -> Vec<KeyHash> {
        let mut keys = Vec::with_capacity(list.len);
        let mut cursor = list.head();
        while let Some(idx) = cursor {
            let node = &self.nodes[idx as usize];
            keys.push(node.key);
            cursor = (node.next != NIL).then_some(node.next);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_order_and_totals() {
        let mut slab = Slab::default();
        let mut list = List::default();
        let a = slab.alloc(1, 2, Priority::Normal, 0);
        let b = slab.alloc(2, 3, Priority::Low, 0);
        slab.push_front(&mut list, a);
        slab.push_front(&mut list, b);
        assert_eq!(slab.keys(&list), vec![2, 1]);
        assert_eq!((list.len, list.weight), (2, 5));
        slab.move_to_front(&mut list, a);
        assert_eq!(slab.keys(&list), vec![1, 2]);
        assert_eq!(
            slab.pick_victim(&mut list),
            Some(b),
            "the Low entry goes first"
        );
        slab.unlink(&mut list, b);
        assert_eq!((list.len, list.weight, list.low), (1, 2, 0));
    }

    #[test]
    fn high_tail_gets_one_second_chance() {
        let mut slab = Slab::default();
        let mut list = List::default();
        let high = slab.alloc(1, 1, Priority::High, 0);
        let normal = slab.alloc(2, 1, Priority::Normal, 0);
        slab.push_front(&mut list, high);
        slab.push_front(&mut list, normal);
        assert_eq!(slab.pick_victim(&mut list), Some(normal));
        assert_eq!(
            slab.keys(&list),
            vec![1, 2],
            "the High entry moved to the hot end"
        );
        slab.unlink(&mut list, normal);
        assert_eq!(
            slab.pick_victim(&mut list),
            Some(high),
            "its chance is spent"
        );
    }
}
