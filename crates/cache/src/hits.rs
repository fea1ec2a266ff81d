//! A shard's log of L1 hits served under its read lock, replayed under the write lock.
//!
//! An L1 hit changes nothing a reader sees (the value, the level): only the policy's
//! bookkeeping and the counters. So a hit is served under the shard's read lock and only
//! recorded here (entry hash, agent id, whether the entry carried the prefetch mark); the
//! next holder of the write lock replays the log in order before doing anything else. Every
//! write (put, delete, miss, promotion, prefetch, snapshot, tick) takes the write lock, so
//! the policy sees the logged hits in order before any write: eviction decisions and hit
//! ratios are those of the policy replayed on its own, as long as every hit is logged. The
//! log is lossless: a reader that finds it full takes the write lock itself (replaying it
//! first).
//!
//! Every hit is counted, but past `EXACT_HITS` hits without the policy choosing a victim
//! only a sample is logged; the rest are counted in the thread's tally: see `HitSample` and
//! `tally`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::agents::AgentId;
use super::policy::KeyHash;
use super::tally::SAMPLE_STRIDE;

/// Hits recorded between two writes. Small enough that the entries a replay touches are
/// likely still in the CPU's caches; large enough that the write lock is rare on reads.
const CAPACITY: usize = 128;
/// The prefetch-mark bit in a slot's second word (the agent id is the low 32 bits).
const PREFETCHED: u64 = 1 << 32;
/// The bit of an entry that was Low when read.
const LOW: u64 = 1 << 33;

/// One recorded hit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hit {
    pub hash: KeyHash,
    pub agent: AgentId,
    /// The entry carried the prefetch mark when it was read.
    pub prefetched: bool,
    /// The entry was Low when it was read (the hit makes it Normal).
    pub low: bool,
}

pub(crate) struct HitLog {
    /// Slots claimed so far; may run past `CAPACITY` (those claims failed).
    next: AtomicUsize,
    slots: Box<[[AtomicU64; 2]]>,
}

impl Default for HitLog {
    fn default() -> Self {
        Self {
            next: AtomicUsize::new(0),
            slots: (0..CAPACITY)
                .map(|_| [AtomicU64::new(0), AtomicU64::new(0)])
                .collect(),
        }
    }
}

impl HitLog {
    /// Record a hit (the caller holds the shard's read lock); false when the log is full.
    /// Relaxed is enough: the replay happens under the write lock, which orders it after
    /// every reader's stores.
    pub fn record(&self, hit: Hit) -> bool {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self.slots.get(i) else {
            return false;
        };
        let tail = u64::from(hit.agent)
            | if hit.prefetched { PREFETCHED } else { 0 }
            | if hit.low { LOW } else { 0 };
        slot[0].store(hit.hash, Ordering::Relaxed);
        slot[1].store(tail, Ordering::Relaxed);
        true
    }

    /// Whether there is anything to replay (cheap: no write to the log).
    pub fn is_empty(&mut self) -> bool {
        *self.next.get_mut() == 0
    }

    /// The recorded hits in order, emptying the log (the write lock is held: `&mut`).
    pub fn take(&mut self) -> impl Iterator<Item = Hit> + '_ {
        let recorded = std::mem::take(self.next.get_mut()).min(CAPACITY);
        self.slots[..recorded].iter_mut().map(|slot| {
            let tail = *slot[1].get_mut();
            Hit {
                hash: *slot[0].get_mut(),
                agent: tail as AgentId,
                prefetched: tail & PREFETCHED != 0,
                low: tail & LOW != 0,
            }
        })
    }
}

/// Hits since the policy last chose a victim that a level shows it one by one.
const EXACT_HITS: u64 = 1024;

/// Whether a level's policy is shown every hit or a sample. A policy uses what it learns
/// from hits only when it chooses a victim (an entry to evict, or a newcomer to refuse);
/// showing it every hit costs a read-mostly level the policy's bookkeeping on each get (for
/// the adaptive policy, a W-TinyLFU sketch and list update plus the sampled shadows:
/// several cache misses, most of a get's time), and the log entry that carries the hit to
/// it. So once `EXACT_HITS` hits came without such a choice, a reader logs a hit only with
/// a chance of one in `tally::SAMPLE_STRIDE` and counts the others in its thread's tally.
/// The policy then sees a uniform sample, in which an entry hit often is still shown
/// often, so its place in the policy's order stays near what every hit would give it; an
/// entry hit rarely may keep an older place, and the adaptive policy's shadows weigh
/// misses more than hits while it lasts. That is a heuristic, not a bound: it is meant for
/// read-mostly stretches, and for a level with room to spare, where victims are chosen
/// rarely. On a full level whose misses are put back, under `EXACT_HITS` hits per
/// eviction means a hit ratio under 99.9% (every trace in ../shared/traces): there the
/// policy sees every hit, as when it is replayed on its own, and its next choice brings a
/// level back there. Every hit is counted either way. A hit on an entry with the prefetch
/// mark, or with a priority other than Normal, is always logged
/// (`Resident::hit_must_be_shown`).
#[derive(Debug, Default)]
pub(crate) struct HitSample {
    /// Hits since the policy last chose a victim (while sampling, each logged one stands
    /// for the stride).
    since_choice: u64,
}

impl HitSample {
    /// Whether readers log only a sample of the hits (read under the shard's read lock;
    /// changed only under its write lock).
    pub fn sampling(&self) -> bool {
        self.since_choice >= EXACT_HITS
    }

    /// A hit shown to the policy.
    pub fn shown(&mut self) {
        self.since_choice += if self.sampling() {
            u64::from(SAMPLE_STRIDE)
        } else {
            1
        };
    }

    /// The policy chose a victim: it has just used what it knew.
    pub fn chose(&mut self) {
        self.since_choice = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_starts_after_the_exact_hits_and_ends_at_a_choice() {
        let mut sample = HitSample::default();
        for _ in 0..EXACT_HITS {
            assert!(!sample.sampling());
            sample.shown();
        }
        assert!(sample.sampling());
        sample.chose();
        assert!(!sample.sampling());
    }

    #[test]
    fn hits_come_back_in_order_and_a_full_log_refuses() {
        let mut log = HitLog::default();
        assert!(log.is_empty());
        let hit = |i: u64| Hit {
            hash: i * 7,
            agent: (i % 3) as AgentId,
            prefetched: i.is_multiple_of(2),
            low: i.is_multiple_of(3),
        };
        for i in 0..CAPACITY as u64 {
            assert!(log.record(hit(i)));
        }
        assert!(!log.record(hit(999)), "full");
        let back: Vec<Hit> = log.take().collect();
        assert_eq!(back, (0..CAPACITY as u64).map(hit).collect::<Vec<_>>());
        assert!(log.is_empty());
        assert!(log.record(hit(1)));
        assert_eq!(log.take().collect::<Vec<_>>(), vec![hit(1)]);
    }
}
