//! One shard: its part of each level, under one lock. A key lives in exactly one level
//! (exclusive caching); every move between levels happens under the shard's lock, so a
//! concurrent get, put or delete of the same key sees it before or after, never half-moved.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::agents::AgentId;
use super::disk::{DiskLevel, Fetched, Read3, Refusal, Ticket};
use super::hits::{Hit, HitLog};
use super::keys::{KeyMatch, entry_hash};
use super::level::{MemLevel, Stored};
use super::policy::KeyHash;
use super::stats::{Level, LevelUsage, ShardCounts};
use super::tally::Tallies;

/// A step under the shard's lock: done, or first read this L3 file with the lock released
/// (then the step runs again with what was read).
pub(crate) enum Got<T> {
    Done(T),
    Fetch(Ticket),
}

/// Why a level did not take a put's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Skip {
    Off,
    TooLarge,
    NotAdmitted,
    Disabled(String),
}

/// L3 in a mutex only so that the shard can be shared under its read lock (the disk
/// level's policy is `Send`, not `Sync`). Every change already happens under the shard's
/// write lock, through `get_mut` (free); the mutex is locked only to look into L3 from a
/// `&Shard` (a private-entry probe, a snapshot's sizes).
pub(crate) struct L3(Mutex<DiskLevel>);

impl L3 {
    pub fn new(level: DiskLevel) -> Self {
        Self(Mutex::new(level))
    }

    pub fn get_mut(&mut self) -> &mut DiskLevel {
        // A panic in L3 leaves at worst an entry that fails its checksum, never a wrong value.
        self.0.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, DiskLevel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Shard {
    pub l1: Option<MemLevel>,
    pub l2: Option<MemLevel>,
    pub l3: Option<L3>,
    /// L3's private entries as of the last write (readers must not lock L3 on every get
    /// to know whether a private probe is needed); kept by `Writing`.
    pub l3_private: usize,
    pub counts: ShardCounts,
    /// L1 hits served under the read lock, not yet told to the policy and the counters.
    pub hits: HitLog,
}

impl Shard {
    /// An L1 hit served under the read lock: the value, the hit recorded for replay. `None`
    /// on a miss in L1 or when the log is full: then the caller takes the write lock.
    pub fn read_l1<K: KeyMatch + ?Sized>(
        &self,
        hash: KeyHash,
        key: &K,
        agent: AgentId,
        tallies: &Tallies,
    ) -> Option<Bytes> {
        let l1 = self.l1.as_ref()?;
        let entry = l1.peek(hash, key)?;
        if l1.sampling_hits() && !entry.hit_must_be_shown() && tallies.count_unlogged(agent) {
            return Some(entry.data.clone());
        }
        let hit = Hit {
            hash,
            agent,
            prefetched: entry.prefetched,
            low: entry.is_low(),
        };
        self.hits.record(hit).then(|| entry.data.clone())
    }

    /// Replays the hits served under the read lock, in order, as `get` would have counted
    /// them. Called first by every holder of the write lock.
    pub fn replay_hits(&mut self) {
        if self.hits.is_empty() {
            return;
        }
        let Some(l1) = self.l1.as_mut() else {
            return;
        };
        let counts = &mut self.counts;
        for hit in self.hits.take() {
            counts.levels[0].hits += 1;
            counts.prefetch.used += u64::from(l1.replay_hit(hit));
            for c in [&mut counts.total, counts.agents.of(hit.agent)] {
                c.gets += 1;
                c.hits += 1;
            }
        }
    }

    /// Where `key` is, without counting a lookup or moving anything.
    pub fn locate<K: KeyMatch + ?Sized>(&self, hash: KeyHash, key: &K) -> Option<Level> {
        if self.l1.as_ref().is_some_and(|l| l.holds(hash, key)) {
            Some(Level::L1)
        } else if self.l2.as_ref().is_some_and(|l| l.holds(hash, key)) {
            Some(Level::L2)
        } else if self.l3.as_ref().is_some_and(|l| l.lock().holds(hash, key)) {
            Some(Level::L3)
        } else {
            None
        }
    }

    /// Whether an agent's private `key` is here: only the levels holding private entries
    /// are looked at, so a shard whose L3 holds none never takes L3's lock for it (a get
    /// under the read lock would otherwise queue on that lock behind every other reader).
    pub fn holds_private<K: KeyMatch + ?Sized>(&self, hash: KeyHash, key: &K) -> bool {
        let in_memory = |level: &Option<MemLevel>| {
            level
                .as_ref()
                .is_some_and(|l| l.private_entries() > 0 && l.holds(hash, key))
        };
        in_memory(&self.l1)
            || in_memory(&self.l2)
            || (self.l3_private > 0 && self.l3.as_ref().is_some_and(|l| l.lock().holds(hash, key)))
    }

    /// Refreshes `l3_private` (at the end of every write).
    pub fn note_l3_private(&mut self) {
        self.l3_private = self
            .l3
            .as_mut()
            .map_or(0, |l3| l3.get_mut().private_entries());
    }

    pub fn private_entries(&self) -> usize {
        self.l1.as_ref().map_or(0, MemLevel::private_entries)
            + self.l2.as_ref().map_or(0, MemLevel::private_entries)
            + self.l3_private
    }

    /// A counted lookup through the levels; a hit below L1 is promoted if a level above
    /// admits it. Gives the value and the level it was found in, or asks for an L3 file
    /// (then `get_fetched` goes on with it).
    pub fn get<K: KeyMatch + ?Sized>(
        &mut self,
        hash: KeyHash,
        key: &K,
    ) -> Got<Option<(Bytes, Level)>> {
        if let Some(found) = self.get_l1(hash, key) {
            return Got::Done(Some(found));
        }
        if let Some(found) = self.get_l2(hash, key) {
            return Got::Done(Some(found));
        }
        let Some(l3) = self.l3.as_mut().map(L3::get_mut) else {
            return Got::Done(None);
        };
        match l3.ticket(hash, key) {
            Some(ticket) => Got::Fetch(ticket),
            None => {
                self.counts.levels[2].misses += 1;
                Got::Done(None)
            }
        }
    }

    /// `get` once its L3 file is read; looks again from the top if the entry changed
    /// while it was read.
    pub fn get_fetched<K: KeyMatch + ?Sized>(
        &mut self,
        hash: KeyHash,
        key: &K,
        fetched: Fetched,
    ) -> Got<Option<(Bytes, Level)>> {
        let Some(l3) = self.l3.as_mut().map(L3::get_mut) else {
            return Got::Done(None);
        };
        let counts = &mut self.counts.levels[2];
        match l3.settle(hash, key, fetched) {
            None => self.get(hash, key),
            Some(Read3::Hit(mut entry)) => match entry.value() {
                Ok(value) => {
                    counts.hits += 1;
                    if std::mem::take(&mut entry.prefetched) {
                        self.counts.prefetch.used += 1;
                    }
                    self.promote(Level::L3, hash, entry);
                    Got::Done(Some((value, Level::L3)))
                }
                Err(_) => {
                    l3.take(hash, key);
                    counts.dropped_corrupt += 1;
                    counts.misses += 1;
                    Got::Done(None)
                }
            },
            Some(Read3::Dropped) => {
                counts.dropped_corrupt += 1;
                counts.misses += 1;
                Got::Done(None)
            }
        }
    }

    fn get_l1<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> Option<(Bytes, Level)> {
        let l1 = self.l1.as_mut()?;
        let counts = &mut self.counts.levels[0];
        match l1.lookup(hash, key) {
            Some(entry) => {
                counts.hits += 1;
                if std::mem::take(&mut entry.prefetched) {
                    self.counts.prefetch.used += 1;
                }
                Some((entry.data.clone(), Level::L1))
            }
            None => {
                counts.misses += 1;
                None
            }
        }
    }

    fn get_l2<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> Option<(Bytes, Level)> {
        let l2 = self.l2.as_mut()?;
        let Some(entry) = l2.lookup(hash, key) else {
            self.counts.levels[1].misses += 1;
            return None;
        };
        let was_prefetched = std::mem::take(&mut entry.prefetched);
        let entry = entry.to_stored();
        let value = match entry.value() {
            Ok(value) => value,
            Err(err) => {
                tracing::warn!(target: "sutazai_top::cache", %err, "dropping an undecodable L2 entry");
                l2.discard(hash, key);
                self.counts.levels[1].dropped_corrupt += 1;
                self.counts.levels[1].misses += 1;
                return None;
            }
        };
        self.counts.levels[1].hits += 1;
        self.counts.prefetch.used += u64::from(was_prefetched);
        self.promote(Level::L2, hash, entry);
        Some((value, Level::L2))
    }

    /// Move a hit entry up to the highest level above `from` that admits it; true if moved.
    pub fn promote(&mut self, from: Level, hash: KeyHash, entry: Stored) -> bool {
        let targets: &[Level] = match from {
            Level::L1 => &[],
            Level::L2 => &[Level::L1],
            Level::L3 => &[Level::L1, Level::L2],
        };
        for &target in targets {
            let Some(level) = self.mem_mut(target) else {
                continue;
            };
            let done = level.insert(hash, entry.clone());
            let admitted = done.refused.is_none();
            if admitted {
                self.take_from(from, hash, &*entry.key);
                self.counts.levels[from.index()].promotions += 1;
            }
            self.demote(target, done.evicted);
            if admitted {
                return true;
            }
        }
        false
    }

    fn mem_mut(&mut self, level: Level) -> Option<&mut MemLevel> {
        match level {
            Level::L1 => self.l1.as_mut(),
            Level::L2 => self.l2.as_mut(),
            Level::L3 => None,
        }
    }

    fn take_from<K: KeyMatch + ?Sized>(&mut self, level: Level, hash: KeyHash, key: &K) -> bool {
        match level {
            Level::L1 | Level::L2 => self.mem_mut(level).is_some_and(|l| l.discard(hash, key)),
            Level::L3 => self
                .l3
                .as_mut()
                .map(L3::get_mut)
                .is_some_and(|l| l.take(hash, key)),
        }
    }

    /// Entries `from` evicted go down to the next level that takes them, or out.
    fn demote(&mut self, from: Level, evicted: Vec<Stored>) {
        self.counts.levels[from.index()].evictions += evicted.len() as u64;
        for entry in evicted {
            let hash = entry_hash(&entry.key);
            let below: Vec<Level> = Level::ALL.into_iter().filter(|l| *l > from).collect();
            // No level below takes it: the entry leaves the cache (an eviction, counted).
            let _ = self.place(&below, hash, entry, true);
        }
    }

    /// Put `entry` into the first of `levels` that takes it; the reasons the others gave.
    fn place(
        &mut self,
        levels: &[Level],
        hash: KeyHash,
        mut entry: Stored,
        demoting: bool,
    ) -> Result<Level, Vec<(Level, Skip)>> {
        let mut skipped = Vec::new();
        for &target in levels {
            if target == Level::L3 {
                let Some(l3) = self.l3.as_mut().map(L3::get_mut) else {
                    skipped.push((target, Skip::Off));
                    continue;
                };
                match l3.insert(hash, &entry) {
                    Ok(evicted) => {
                        self.counts.levels[2].evictions += evicted;
                        self.counts.levels[2].demotions += u64::from(demoting);
                        return Ok(target);
                    }
                    Err(Refusal::TooLarge) => skipped.push((target, Skip::TooLarge)),
                    Err(Refusal::NotAdmitted) => skipped.push((target, Skip::NotAdmitted)),
                    Err(Refusal::Disabled(why)) => skipped.push((target, Skip::Disabled(why))),
                }
                continue;
            }
            let Some(level) = self.mem_mut(target) else {
                skipped.push((target, Skip::Off));
                continue;
            };
            let capacity = level.capacity();
            let done = level.insert(hash, entry);
            self.demote(target, done.evicted);
            match done.refused {
                None => {
                    self.counts.levels[target.index()].demotions += u64::from(demoting);
                    return Ok(target);
                }
                Some(back) => {
                    let why = if back.weight() > capacity {
                        Skip::TooLarge
                    } else {
                        Skip::NotAdmitted
                    };
                    skipped.push((target, why));
                    entry = back;
                }
            }
        }
        Err(skipped)
    }

    /// Store `entry` (its value as the caller gave it) in the highest level that takes it,
    /// replacing any earlier value under the key.
    pub fn put(&mut self, hash: KeyHash, entry: Stored) -> Result<Level, Vec<(Level, Skip)>> {
        self.remove(hash, &*entry.key);
        self.place(&Level::ALL, hash, entry, false)
    }

    /// Remove `key` from whichever level holds it.
    pub fn remove<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> bool {
        Level::ALL
            .iter()
            .any(|&level| self.take_from(level, hash, key))
    }

    /// Bring `key` up from L2 or L3 for a prefetch, marked so a later hit counts as used.
    /// Gives the level it is in now (`None` if it is not cached), or asks for its L3 file
    /// (then this runs again with `fetched`).
    pub fn prefetch_promote<K: KeyMatch + ?Sized>(
        &mut self,
        hash: KeyHash,
        key: &K,
        fetched: Option<Fetched>,
    ) -> Got<Option<Level>> {
        let Some(from) = self.locate(hash, key) else {
            return Got::Done(None);
        };
        let entry = match (from, fetched) {
            (Level::L1, _) => return Got::Done(Some(Level::L1)),
            (Level::L2, _) => match self.l2.as_ref().and_then(|l2| l2.peek(hash, key)) {
                Some(entry) => entry.to_stored(),
                None => return Got::Done(None),
            },
            (Level::L3, fetched) => {
                let Some(l3) = self.l3.as_mut().map(L3::get_mut) else {
                    return Got::Done(None);
                };
                let settled = fetched.and_then(|f| l3.settle(hash, key, f));
                match settled {
                    Some(Read3::Hit(entry)) => entry,
                    Some(Read3::Dropped) => {
                        self.counts.levels[2].dropped_corrupt += 1;
                        return Got::Done(None);
                    }
                    // Not read yet, or changed while it was read.
                    None => match l3.ticket(hash, key) {
                        Some(ticket) => return Got::Fetch(ticket),
                        None => return Got::Done(None),
                    },
                }
            }
        };
        // Marked only if it moves (so `used` never counts what was not prefetched), with
        // its own priority: a prefetch must not lower a proven entry.
        let marked = Stored {
            prefetched: true,
            ..entry
        };
        if self.promote(from, hash, marked) {
            self.counts.prefetch.prefetched += 1;
        }
        Got::Done(self.locate(hash, key))
    }

    /// Sizes and policies per level (`&mut`: the policies are reached without locking).
    pub fn usage(&mut self) -> [LevelUsage; 3] {
        let mem = |l: Option<&mut MemLevel>| match l {
            Some(l) => {
                let (policy, chosen) = l.policy_names();
                LevelUsage {
                    present: true,
                    capacity: l.capacity(),
                    used: l.used(),
                    entries: l.len() as u64,
                    policy,
                    chosen,
                }
            }
            None => LevelUsage::default(),
        };
        let disk = match self.l3.as_mut().map(L3::get_mut) {
            Some(l) => LevelUsage {
                present: true,
                capacity: l.capacity(),
                used: l.used(),
                entries: l.len() as u64,
                policy: l.policy().name(),
                chosen: l.policy().chosen(),
            },
            None => LevelUsage::default(),
        };
        [mem(self.l1.as_mut()), mem(self.l2.as_mut()), disk]
    }
}
