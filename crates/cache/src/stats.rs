//! Counters (kept per shard, under the shard's lock, so the hot path touches no shared
//! atomics) and the picture the snapshot carries: per level, per agent, in total.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::agents::AgentId;

/// One of the three levels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    L1,
    L2,
    L3,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::L1, Level::L2, Level::L3];

    /// "l1", "l2", "l3": the `X-Cache-Level` header's values.
    pub fn label(self) -> &'static str {
        match self {
            Level::L1 => "l1",
            Level::L2 => "l2",
            Level::L3 => "l3",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One level's counters in one shard.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LevelCounts {
    pub hits: u64,
    pub misses: u64,
    /// Entries pushed out of this level to make room (to the next level, or out of L3).
    pub evictions: u64,
    /// Entries that moved up out of this level on a hit (or a prefetch).
    pub promotions: u64,
    /// Entries this level received from the level above.
    pub demotions: u64,
    /// Entries found damaged (L3: bad checksum, truncated) and dropped.
    pub dropped_corrupt: u64,
}

impl LevelCounts {
    fn add(&mut self, other: &LevelCounts) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.evictions += other.evictions;
        self.promotions += other.promotions;
        self.demotions += other.demotions;
        self.dropped_corrupt += other.dropped_corrupt;
    }
}

/// Whole-cache and per-agent counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    /// Puts refused (too large for every level, or no level would take it).
    pub refused: u64,
    pub deletes: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.gets += other.gets;
        self.hits += other.hits;
        self.misses += other.misses;
        self.puts += other.puts;
        self.refused += other.refused;
        self.deletes += other.deletes;
    }
}

/// Hits over gets as a fraction, 0 before the first get.
fn ratio(hits: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        hits as f64 / total as f64
    }
}

/// Distinct agent names the cache tells apart; the rest are counted together, so a caller
/// inventing names cannot grow the books without bound.
pub(crate) const MAX_AGENTS: usize = 1024;
/// Where agents beyond `MAX_AGENTS` are counted.
pub const OTHER_AGENTS: &str = "(other agents)";

/// Per-agent counters of one shard, indexed by the agent's interned id (`agents`), so the
/// get path counts by index instead of looking a name up.
#[derive(Debug, Default, Clone)]
pub(crate) struct AgentBook {
    by_id: Vec<Counts>,
}

impl AgentBook {
    /// The counters of agent `id` (created on first use).
    pub fn of(&mut self, id: AgentId) -> &mut Counts {
        let i = id as usize;
        if i >= self.by_id.len() {
            self.by_id.resize(i + 1, Counts::default());
        }
        &mut self.by_id[i]
    }

    /// Adds these counters to `out` under the agents' names (`names[id]`). Ids this shard
    /// never counted (all zero: every use counts something) are left out.
    pub fn merge_into(&self, names: &[Arc<str>], out: &mut HashMap<String, Counts>) {
        for (counts, name) in self.by_id.iter().zip(names) {
            if *counts != Counts::default() {
                out.entry(name.to_string()).or_default().add(counts);
            }
        }
    }
}

/// Prefetch counters of one shard.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PrefetchCounts {
    /// Entries brought into the cache or promoted by a prefetch.
    pub prefetched: u64,
    /// Of those, entries a later get used.
    pub used: u64,
}

/// Everything a shard counts, merged across shards for a snapshot.
#[derive(Debug, Default, Clone)]
pub(crate) struct ShardCounts {
    pub levels: [LevelCounts; 3],
    pub total: Counts,
    pub agents: AgentBook,
    pub prefetch: PrefetchCounts,
}

/// The sizes and policies of one level (in one shard) at the moment of a snapshot.
#[derive(Debug, Clone, Default)]
pub(crate) struct LevelUsage {
    pub present: bool,
    pub capacity: u64,
    pub used: u64,
    pub entries: u64,
    pub policy: &'static str,
    pub chosen: &'static str,
}

/// The sum of every shard, before it becomes a `CacheSnapshot`.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub levels: [LevelCounts; 3],
    pub usage: [LevelUsage; 3],
    /// How often each policy was the one deciding, per level (adaptive's choice per shard).
    pub chosen: [HashMap<&'static str, usize>; 3],
    pub total: Counts,
    pub agents: HashMap<String, Counts>,
    pub prefetch: PrefetchCounts,
}

impl Totals {
    /// Adds one shard's counters and sizes, all but the per-agent ones (`add_agents`).
    pub fn add_usage(&mut self, counts: &ShardCounts, usage: &[LevelUsage; 3]) {
        for (i, one) in usage.iter().enumerate() {
            self.levels[i].add(&counts.levels[i]);
            let sum = &mut self.usage[i];
            sum.present |= one.present;
            sum.capacity += one.capacity;
            sum.used += one.used;
            sum.entries += one.entries;
            if one.present {
                sum.policy = one.policy;
                *self.chosen[i].entry(one.chosen).or_default() += 1;
            }
        }
        self.total.add(&counts.total);
        self.prefetch.prefetched += counts.prefetch.prefetched;
        self.prefetch.used += counts.prefetch.used;
    }

    /// Adds one shard's per-agent counters; `names` are the agents' names by id, read after
    /// the shard's counters (a name is interned before anything is counted under its id).
    pub fn add_agents(&mut self, book: &AgentBook, names: &[Arc<str>]) {
        book.merge_into(names, &mut self.agents);
    }

    /// Adds the L1 hits counted in the threads' tallies instead of a shard (`tally`), by
    /// agent id; `names` as for `add_agents`.
    pub fn add_unlogged_hits(&mut self, by_agent: &[u64], names: &[Arc<str>]) {
        let mut book = AgentBook::default();
        for (id, &hits) in by_agent.iter().enumerate().filter(|(_, n)| **n > 0) {
            let counts = book.of(id as AgentId);
            counts.gets += hits;
            counts.hits += hits;
            self.total.gets += hits;
            self.total.hits += hits;
            self.levels[0].hits += hits;
        }
        self.add_agents(&book, names);
    }
}

/// One level as the snapshot shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LevelSnapshot {
    pub level: Level,
    /// False when its capacity is 0 (the level is off).
    pub present: bool,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub entries: u64,
    /// The largest value (with its key) one entry of this level may take: the level's
    /// capacity divided among the shards.
    pub largest_entry_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    /// Hits over lookups that reached this level.
    pub hit_ratio: f64,
    pub evictions: u64,
    pub promotions: u64,
    pub demotions: u64,
    /// Damaged entries found and dropped (L3 only).
    pub dropped_corrupt: u64,
    /// The configured policy ("adaptive", "lru", ...).
    pub policy: String,
    /// The policy actually deciding (what `adaptive` follows; in most shards, if they differ).
    pub chosen: String,
    /// Why the level takes no new entries (L3 after a write error), if it does not.
    pub disabled: Option<String>,
}

/// One agent's use of the cache.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSnapshot {
    pub agent: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub hit_ratio: f64,
}

/// Prefetch accuracy: prefetched and then used, over prefetched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrefetchSnapshot {
    pub depth: u32,
    pub prefetched: u64,
    pub used: u64,
    pub accuracy: f64,
}

/// The cache as of one tick (`Snapshot::cache`, `GET /api/cache`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheSnapshot {
    /// L1, L2, L3 in that order.
    pub levels: Vec<LevelSnapshot>,
    pub total: Counts,
    pub hit_ratio: f64,
    /// Busiest agents first (by gets + puts).
    pub agents: Vec<AgentSnapshot>,
    /// Hit ratio in percent, one point per tick that saw gets, oldest first.
    pub hit_ratio_history: Vec<f32>,
    /// `None` until something was prefetched (or with no prefetcher attached).
    pub prefetch: Option<PrefetchSnapshot>,
    pub shards: usize,
}

impl CacheSnapshot {
    pub fn level(&self, level: Level) -> Option<&LevelSnapshot> {
        self.levels.iter().find(|l| l.level == level)
    }
}

/// What a snapshot needs besides the counters.
pub(crate) struct Extra {
    pub shards: usize,
    pub disabled: [Option<String>; 3],
    pub history: Vec<f32>,
    pub prefetch_depth: u32,
    pub agents_shown: usize,
}

impl Totals {
    pub fn into_snapshot(self, extra: Extra) -> CacheSnapshot {
        let levels = Level::ALL
            .iter()
            .zip(extra.disabled)
            .map(|(&level, disabled)| {
                let i = level.index();
                let (c, u) = (&self.levels[i], &self.usage[i]);
                let chosen = self.chosen[i]
                    .iter()
                    .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
                    .map(|(name, _)| name.to_string())
                    .unwrap_or_default();
                LevelSnapshot {
                    level,
                    present: u.present,
                    capacity_bytes: u.capacity,
                    used_bytes: u.used,
                    entries: u.entries,
                    largest_entry_bytes: u.capacity / extra.shards.max(1) as u64,
                    hits: c.hits,
                    misses: c.misses,
                    hit_ratio: ratio(c.hits, c.hits + c.misses),
                    evictions: c.evictions,
                    promotions: c.promotions,
                    demotions: c.demotions,
                    dropped_corrupt: c.dropped_corrupt,
                    policy: u.policy.to_string(),
                    chosen,
                    disabled,
                }
            })
            .collect();
        let mut agents: Vec<AgentSnapshot> = self
            .agents
            .into_iter()
            .map(|(agent, counts)| AgentSnapshot {
                agent,
                hit_ratio: ratio(counts.hits, counts.gets),
                counts,
            })
            .collect();
        agents.sort_by(|a, b| {
            let busy = |x: &AgentSnapshot| x.counts.gets + x.counts.puts;
            busy(b).cmp(&busy(a)).then_with(|| a.agent.cmp(&b.agent))
        });
        agents.truncate(extra.agents_shown);
        // An L3 entry a hit could not promote keeps its mark and may count twice; used
        // stays within prefetched so the accuracy is never above 100%.
        let used = self.prefetch.used.min(self.prefetch.prefetched);
        let prefetch = (self.prefetch.prefetched > 0).then(|| PrefetchSnapshot {
            depth: extra.prefetch_depth,
            prefetched: self.prefetch.prefetched,
            used,
            accuracy: ratio(used, self.prefetch.prefetched),
        });
        CacheSnapshot {
            levels,
            hit_ratio: ratio(self.total.hits, self.total.gets),
            total: self.total,
            agents,
            hit_ratio_history: extra.history,
            prefetch,
            shards: extra.shards,
        }
    }
}

/// Points kept for the hit-ratio sparkline.
pub(crate) const HISTORY_POINTS: usize = 120;

/// The hit ratio per tick: the change in hits over the change in gets since the last point.
#[derive(Debug, Default)]
pub(crate) struct History {
    last: (u64, u64),
    points: VecDeque<f32>,
}

impl History {
    pub fn record(&mut self, total: &Counts) {
        let (gets, hits) = (
            total.gets.saturating_sub(self.last.0),
            total.hits.saturating_sub(self.last.1),
        );
        self.last = (total.gets, total.hits);
        if gets == 0 {
            return;
        }
        if self.points.len() == HISTORY_POINTS {
            self.points.pop_front();
        }
        self.points.push_back((100.0 * ratio(hits, gets)) as f32);
    }

    pub fn points(&self) -> Vec<f32> {
        self.points.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_books_merge_by_name_and_skip_unused_ids() {
        let names: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("b"), Arc::from("c")];
        let (mut one, mut two) = (AgentBook::default(), AgentBook::default());
        one.of(0).gets += 2;
        two.of(0).gets += 1;
        two.of(2).puts += 1;
        let mut merged = HashMap::new();
        one.merge_into(&names, &mut merged);
        two.merge_into(&names, &mut merged);
        assert_eq!(merged.len(), 2, "{merged:?}");
        assert_eq!(merged["a"].gets, 3);
        assert_eq!(merged["c"].puts, 1);
    }

    #[test]
    fn history_records_the_ratio_per_interval() {
        let mut h = History::default();
        h.record(&Counts {
            gets: 4,
            hits: 1,
            ..Counts::default()
        });
        h.record(&Counts {
            gets: 4,
            hits: 1,
            ..Counts::default()
        });
        h.record(&Counts {
            gets: 8,
            hits: 5,
            ..Counts::default()
        });
        assert_eq!(h.points(), vec![25.0, 100.0]);
    }
}
