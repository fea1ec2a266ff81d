//! Memory pools: one copy of shared data for every agent. A content-addressed object store
//! (BLAKE3) in sealed memfds, served on a Unix socket; a client gets an object's descriptor
//! (`SCM_RIGHTS`) and maps it read-only, so the bytes are never copied to read them.
//!
//! Pools have a size, a per-agent quota and a codec: unreferenced objects are compressed
//! when cold (or when the pool is full) and evicted least recently used after that; a
//! referenced object never is. Writable segments (`allocate`) are sealed into objects to
//! share them. The engine serves it; the faces read [`PoolsSnapshot`].

pub mod client;
pub mod compress;
pub mod config;
pub mod memfd;
pub mod object;
pub mod pool;
pub mod pools;
pub mod server;
pub mod snapshot;
pub mod wire;

pub use client::{Client, ClientError, Mapped, Put, Segment};
pub use compress::Compression;
pub use config::{ObjectStoreConfig, PoolConfig, PoolSpec};
pub use object::{ClientId, ObjectId, StoreError};
pub use server::{AgentOf, Server, ServerConfig, StartError};
pub use snapshot::{AgentUse, PoolSnapshot, PoolsSnapshot};
