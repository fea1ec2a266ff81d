//! Per-thread tallies of the L1 hits that skip the hit log.
//!
//! Once a level's policy sees only a sample of its hits (`hits::HitSample`), a hit outside
//! the sample need not be logged, but it must still be counted, per agent and in total. A
//! shared counter would cost each such get an atomic read-modify-write on a cache line the
//! cores pass back and forth (the log's slot counter was one, and most of a get's time with
//! two threads). Instead each thread counts into a tally of its own, which only it writes,
//! and a snapshot adds the tallies up.
//!
//! A thread's tally outlives the thread (its counts stay in the total) and is taken over by
//! the next thread that starts counting, so a cache has at most as many tallies as threads
//! ever counted into it at once.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::agents::AgentId;
use super::stats::MAX_AGENTS;

/// A hit is logged all the same with a chance of one in this many: the policy's sample.
/// Drawn at random, not every n-th: a cyclic workload whose period shares a factor with a
/// fixed stride would show the policy the same few keys again and again, and never the rest.
pub(crate) const SAMPLE_STRIDE: u32 = 128;

/// Tells the tallies of different caches apart in a thread's list.
static NEXT_BOOK: AtomicU64 = AtomicU64::new(1);

/// One thread's counts of unlogged hits, by agent id.
struct Tally {
    /// A live thread counts into it.
    taken: AtomicBool,
    /// Written by the owning thread only (a load and a store, no read-modify-write).
    hits: Box<[AtomicU64]>,
}

impl Tally {
    fn new() -> Self {
        Self {
            taken: AtomicBool::new(true),
            hits: (0..=MAX_AGENTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A tally this thread counts into; handed back when the thread ends.
struct Held {
    book: u64,
    tally: Arc<Tally>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.tally.taken.store(false, Ordering::Release);
    }
}

/// This thread's tallies (one per cache it counted into) and its sampling draws.
struct Mine {
    held: Vec<Held>,
    /// xorshift64 state (never 0).
    draws: u64,
}

static NEXT_SEED: AtomicU64 = AtomicU64::new(0x2545_f491_4f6c_dd1d);

thread_local! {
    static MINE: RefCell<Mine> = RefCell::new(Mine {
        held: Vec::new(),
        // Each thread its own sequence of draws.
        draws: NEXT_SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) | 1,
    });
}

/// One cache's tallies.
pub(crate) struct Tallies {
    book: u64,
    all: Mutex<Vec<Arc<Tally>>>,
}

impl Tallies {
    pub fn new() -> Self {
        Self {
            book: NEXT_BOOK.fetch_add(1, Ordering::Relaxed),
            all: Mutex::new(Vec::new()),
        }
    }

    /// An L1 hit the policy need not see: counted for `agent` here and true, unless it
    /// falls in this thread's one-in-`SAMPLE_STRIDE` sample (or the thread is ending), in
    /// which case the caller logs it.
    pub fn count_unlogged(&self, agent: AgentId) -> bool {
        MINE.try_with(|mine| {
            let Ok(mut mine) = mine.try_borrow_mut() else {
                return false;
            };
            let mut draw = mine.draws;
            draw ^= draw << 13;
            draw ^= draw >> 7;
            draw ^= draw << 17;
            mine.draws = draw;
            if (draw >> 40).is_multiple_of(u64::from(SAMPLE_STRIDE)) {
                return false;
            }
            let tally = match mine.held.iter().position(|h| h.book == self.book) {
                Some(i) => &mine.held[i].tally,
                None => {
                    // A tally only this thread still holds belongs to a cache that is gone.
                    mine.held.retain(|h| Arc::strong_count(&h.tally) > 1);
                    let tally = self.take();
                    mine.held.push(Held {
                        book: self.book,
                        tally,
                    });
                    &mine.held[mine.held.len() - 1].tally
                }
            };
            let Some(slot) = tally.hits.get(agent as usize) else {
                return false;
            };
            // Release, and Acquire in `hits_by_agent`: a snapshot that sees this count also
            // sees the agent's name, interned before it (free on x86).
            slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Release);
            true
        })
        .unwrap_or(false)
    }

    /// A tally no live thread holds, else a new one.
    fn take(&self) -> Arc<Tally> {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let free = all.iter().find(|tally| {
            tally
                .taken
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        if let Some(tally) = free {
            return tally.clone();
        }
        let tally = Arc::new(Tally::new());
        all.push(tally.clone());
        tally
    }

    /// Unlogged hits so far, by agent id (trailing agents with none left out).
    pub fn hits_by_agent(&self) -> Vec<u64> {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let mut sum = Vec::new();
        for tally in all.iter() {
            let counted = tally.hits.iter().map(|n| n.load(Ordering::Acquire));
            for (id, n) in counted.enumerate().filter(|(_, n)| *n > 0) {
                if id >= sum.len() {
                    sum.resize(id + 1, 0);
                }
                sum[id] += n;
            }
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(tallies: &Tallies, agent: AgentId, gets: u32) -> u64 {
        (0..gets).filter(|_| tallies.count_unlogged(agent)).count() as u64
    }

    #[test]
    fn about_one_hit_in_the_stride_is_left_to_the_log_and_the_rest_add_up() {
        let tallies = Tallies::new();
        let n = 1000 * SAMPLE_STRIDE;
        let unlogged = counted(&tallies, 3, n);
        let logged = u64::from(n) - unlogged;
        assert!((800..1200).contains(&logged), "{logged} of {n} logged");
        assert_eq!(tallies.hits_by_agent(), vec![0, 0, 0, unlogged]);
    }

    #[test]
    fn counts_outlive_their_thread_and_its_tally_is_taken_over() {
        let tallies = Tallies::new();
        let first =
            std::thread::scope(|s| s.spawn(|| counted(&tallies, 0, 1000)).join()).expect("thread");
        let second =
            std::thread::scope(|s| s.spawn(|| counted(&tallies, 0, 1000)).join()).expect("thread");
        assert_eq!(tallies.hits_by_agent(), vec![first + second]);
        let held = tallies.all.lock().expect("lock").len();
        assert_eq!(held, 1, "the second thread took over the first one's tally");
        std::thread::scope(|s| {
            let a = s.spawn(|| counted(&tallies, 1, 500));
            let b = s.spawn(|| counted(&tallies, 1, 500));
            let both = a.join().expect("a") + b.join().expect("b");
            assert_eq!(tallies.hits_by_agent()[1], both);
        });
    }

    #[test]
    fn two_caches_count_apart() {
        let (one, two) = (Tallies::new(), Tallies::new());
        let a = counted(&one, 0, 100);
        let b = counted(&two, 0, 50);
        assert_eq!(one.hits_by_agent(), vec![a]);
        assert_eq!(two.hits_by_agent(), vec![b]);
    }
}
