//! The engine's cache for agents: three levels (L1 memory, L2 lz4-compressed memory, L3
//! disk), replacement policies behind one trait, learned prefetch, entries shared across
//! agents (issue 5). A crate of its own: it needs nothing of the engine, which
//! opens it with [`open_for`] from its `[cache]` section ([`CacheConfig`]).
//!
//! - [`Cache`] (`store`): put / get / delete, sharded by key, each shard under a read-write
//!   lock: an L1 hit takes the read lock and is logged (`hits`) or, once the policy sees
//!   only a sample, counted in the thread's tally (`tally`); everything else the write
//!   lock; `agents`: agent names interned to ids for the per-agent counters;
//! - `shard`: one shard's three levels, promotion on a hit and demotion on eviction;
//! - `level`: the memory levels; `disk`: L3, one checksummed file per entry (`l3file`: the
//!   file format);
//! - `keys`: shared and private namespaces, hashes; `stats`: counters and the snapshot.
//!
//! A key lives in exactly one level. A put goes to L1 if its share of L1 can hold the value
//! and the policy admits it, else to L2 (compressed), else to L3, else it is refused with the
//! reason per level. A hit in L2 or L3 moves the entry up when a level above admits it; what
//! a level evicts moves down one level, and what L3 evicts is gone.

mod agents;
pub mod config;
mod disk;
mod hits;
mod keys;
mod l3file;
mod level;
pub mod policy;
pub mod prefetch;
mod recent;
mod shard;
pub mod stats;
mod store;
mod tally;
pub mod trace;

pub use config::CacheConfig;
pub use policy::{PolicyName, Priority};
pub use stats::{AgentSnapshot, CacheSnapshot, Counts, Level, LevelSnapshot, PrefetchSnapshot};
pub use store::{
    Cache, CacheError, Get, GetObserver, Loader, MAX_AGENT_LEN, default_shards, open_for,
};

/// Longest key the cache takes, in bytes.
pub const MAX_KEY_LEN: usize = l3file::MAX_KEY_LEN;
