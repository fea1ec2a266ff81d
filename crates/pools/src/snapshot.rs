//! What the faces show of the store: each pool's figures and, per agent, what it holds and
//! what sharing saves it. Plain data, serialized as the API's `GET /api/pools`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolsSnapshot {
    /// Where agents connect.
    pub socket: String,
    /// Client connections now.
    pub clients: usize,
    pub pools: Vec<PoolSnapshot>,
    /// One row per agent and pool it holds something in.
    pub agents: Vec<AgentUse>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolSnapshot {
    pub name: String,
    /// The codec of cold objects: lz4, zlib or none.
    pub compression: String,
    pub capacity_bytes: u64,
    /// 0: no quota.
    pub agent_quota_bytes: u64,
    /// Objects as stored (compressed ones at their compressed size) plus segments.
    pub used_bytes: u64,
    pub objects: usize,
    pub referenced_objects: usize,
    /// Unreferenced objects: what eviction may free.
    pub unreferenced_bytes: u64,
    pub segments: usize,
    pub segment_bytes: u64,
    /// Each object once, as stored.
    pub physical_bytes: u64,
    /// Each object once per client holding it: what private copies would take.
    pub logical_bytes: u64,
    /// Compressed now: their size before and after.
    pub packed_objects: usize,
    pub packed_logical_bytes: u64,
    pub packed_bytes: u64,
    /// Since start: objects evicted (garbage collected), compressed, decompressed on a get,
    /// and requests refused (full, quota).
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub compressions: u64,
    pub compressed_from_bytes: u64,
    pub compressed_to_bytes: u64,
    pub thaws: u64,
    pub refused: u64,
}

impl PoolSnapshot {
    /// Logical over physical bytes: how many copies deduplication saves (1.0: none).
    pub fn dedup_ratio(&self) -> Option<f64> {
        (self.physical_bytes > 0).then(|| self.logical_bytes as f64 / self.physical_bytes as f64)
    }

    /// Compressed objects' size before over after.
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.packed_bytes > 0).then(|| self.packed_logical_bytes as f64 / self.packed_bytes as f64)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentUse {
    pub agent: String,
    pub pool: String,
    pub objects: usize,
    /// The objects' bytes, as the agent maps them.
    pub held_bytes: u64,
    /// What sharing saves it: (1 - 1/k) of each object held by k clients.
    pub saved_bytes: u64,
    pub segments: usize,
    pub segment_bytes: u64,
}
