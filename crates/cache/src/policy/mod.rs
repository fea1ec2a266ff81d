//! Replacement policies: which keys of one cache level stay resident.
//!
//! A policy tracks keys (as 64-bit hashes) and their weights against a capacity; the level
//! that uses it stores the values under their full keys, so a hash collision can cost a
//! wrong eviction but never a wrong value. Capacity and weights are in whatever unit the
//! level chooses: bytes for the cache's levels, 1 per entry when replaying a trace.
//!
//! The protocol, per access: `contains` → on a hit `on_hit`; on a miss the caller fetches the
//! value and calls `on_insert`, which returns the keys evicted to make room (and may refuse
//! the new key itself — admission, as W-TinyLFU does — in which case that key is among the
//! evicted). `on_remove` drops a key the caller deleted or moved to another level.
//!
//! Every policy honours [`Priority`] (each file says exactly how): a Low entry is evicted
//! before Normal ones near the cold end, a High one gets a second chance before it can be
//! evicted, and a hit turns a Low entry into a Normal one (a prefetched entry that was used
//! has proved itself). An entry heavier than the whole capacity is refused: `on_insert`
//! returns it as evicted and counts a rejection.

mod adaptive;
mod arc;
mod lfu;
mod list;
mod lru;
mod s3fifo;
mod wtinylfu;

pub use adaptive::Adaptive;
pub use arc::Arc;
pub use lfu::Lfu;
pub use lru::Lru;
pub use s3fifo::S3Fifo;
pub use wtinylfu::WTinyLfu;

/// A policy's name as the config spells it (`l1_policy = "w-tinylfu"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    Adaptive,
    Lru,
    Lfu,
    Arc,
    #[serde(rename = "w-tinylfu")]
    WTinyLfu,
    #[serde(rename = "s3-fifo")]
    S3Fifo,
}

impl PolicyName {
    /// Every policy, the default (`adaptive`) first.
    pub const ALL: [PolicyName; 6] = [
        PolicyName::Adaptive,
        PolicyName::Lru,
        PolicyName::Lfu,
        PolicyName::Arc,
        PolicyName::WTinyLfu,
        PolicyName::S3Fifo,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyName::Adaptive => "adaptive",
            PolicyName::Lru => "lru",
            PolicyName::Lfu => "lfu",
            PolicyName::Arc => "arc",
            PolicyName::WTinyLfu => "w-tinylfu",
            PolicyName::S3Fifo => "s3-fifo",
        }
    }

    /// A new policy of this kind over `capacity`.
    pub fn build(self, capacity: u64) -> Box<dyn Policy> {
        match self {
            PolicyName::Adaptive => Box::new(Adaptive::new(capacity)),
            PolicyName::Lru => Box::new(Lru::new(capacity)),
            PolicyName::Lfu => Box::new(Lfu::new(capacity)),
            PolicyName::Arc => Box::new(Arc::new(capacity)),
            PolicyName::WTinyLfu => Box::new(WTinyLfu::new(capacity)),
            PolicyName::S3Fifo => Box::new(S3Fifo::new(capacity)),
        }
    }
}

impl std::fmt::Display for PolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown policy {name:?}: expected one of {}",
                    POLICY_NAMES.join(", ")
                )
            })
    }
}

/// Every policy `by_name` knows, the default (`adaptive`) first.
pub const POLICY_NAMES: [&str; 6] = {
    let mut names = [""; 6];
    let mut i = 0;
    while i < names.len() {
        names[i] = PolicyName::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The policy called `name` (one of [`POLICY_NAMES`]) over `capacity`, or `None` for an
/// unknown name.
pub fn by_name(name: &str, capacity: u64) -> Option<Box<dyn Policy>> {
    name.parse::<PolicyName>().ok().map(|p| p.build(capacity))
}

/// Entries a policy reserves room for up front; beyond that its tables grow as entries come.
/// Capacities in bytes are far larger than the entries they will hold, and every level of
/// every shard has a policy (`adaptive` six), so reserving by capacity would cost megabytes
/// of an empty cache.
pub(crate) const RESERVE_AT_MOST: u64 = 1 << 10;

/// A key as policies see it: a 64-bit hash of the full key bytes.
pub type KeyHash = u64;

/// How much an entry is worth keeping; higher weighs against eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Prefetched or speculative: the first to go.
    Low,
    #[default]
    Normal,
    High,
}

/// Counters every policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// New keys the policy refused to admit (counted in `evictions` too).
    pub rejections: u64,
}

impl PolicyStats {
    /// Hits over all lookups, as a fraction; 0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// A replacement policy over one level's keys.
pub trait Policy: Send {
    /// Short name: "lru", "lfu", "arc", "w-tinylfu", "s3-fifo", "adaptive".
    fn name(&self) -> &'static str;
    /// Capacity in the level's unit.
    fn capacity(&self) -> u64;
    /// Whether `key` is resident.
    fn contains(&self, key: KeyHash) -> bool;
    /// A lookup of a resident key (counts a hit).
    fn on_hit(&mut self, key: KeyHash);
    /// A lookup that missed (counts a miss; ghost-list policies learn from it).
    fn on_miss(&mut self, key: KeyHash);
    /// Admit `key` of `weight` at `priority`; returns the keys evicted to make room, which
    /// include `key` itself if it was not admitted. Inserting a resident key updates its
    /// weight and priority.
    fn on_insert(&mut self, key: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash>;
    /// Forget `key` (deleted, or moved to another level); not an eviction.
    fn on_remove(&mut self, key: KeyHash);
    /// Resident keys.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sum of resident weights.
    fn weight(&self) -> u64;
    fn stats(&self) -> PolicyStats;
    /// Resident keys, in no promised order (a policy switch compares resident sets).
    fn resident_keys(&self) -> Vec<KeyHash>;
    /// The policy actually deciding: its own name, except for `adaptive`, which names the
    /// policy it currently follows.
    fn chosen(&self) -> &'static str {
        self.name()
    }
}

/// Replay one access through `policy` the way a cache would: hit, or miss then insert
/// (weight 1, normal priority). Returns whether it hit.
pub fn access(policy: &mut dyn Policy, key: KeyHash) -> bool {
    if policy.contains(key) {
        policy.on_hit(key);
        true
    } else {
        policy.on_miss(key);
        policy.on_insert(key, 1, Priority::Normal);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_builds_its_policy() {
        for name in POLICY_NAMES {
            let policy = by_name(name, 10).expect(name);
            assert_eq!(policy.name(), name);
            assert_eq!(policy.capacity(), 10);
        }
        assert!(by_name("mru", 10).is_none());
    }

    #[test]
    fn every_policy_counts_and_refuses_what_cannot_fit() {
        for name in POLICY_NAMES {
            let mut policy = by_name(name, 8).expect(name);
            for key in [1, 2, 1, 3, 1, 4, 5, 6, 7, 8, 9, 10, 1] {
                access(policy.as_mut(), key);
            }
            let stats = policy.stats();
            assert_eq!(stats.hits + stats.misses, 13, "{name}");
            assert!(stats.hits >= 2 && stats.evictions >= 1, "{name}: {stats:?}");
            assert!(policy.len() <= 8 && policy.weight() <= 8, "{name}");
            assert_eq!(
                policy.on_insert(99, 9, Priority::Normal),
                vec![99],
                "{name}"
            );
            assert!(!policy.contains(99), "{name}");
            assert_eq!(policy.stats().rejections, stats.rejections + 1, "{name}");
            let mut keys = policy.resident_keys();
            keys.sort_unstable();
            assert_eq!(keys.len(), policy.len(), "{name}");
            policy.on_remove(keys[0]);
            assert!(!policy.contains(keys[0]), "{name}");
        }
    }

    #[test]
    fn priority_protects_a_high_entry_in_every_policy() {
        for name in POLICY_NAMES {
            let mut policy = by_name(name, 4).expect(name);
            policy.on_insert(1, 1, Priority::High);
            for key in 2..=4 {
                policy.on_insert(key, 1, Priority::Normal);
            }
            let evicted = policy.on_insert(5, 1, Priority::Normal);
            assert!(
                !evicted.contains(&1),
                "{name} evicted the High entry first: {evicted:?}"
            );
        }
    }
}
