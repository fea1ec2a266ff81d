//! Memory pools: one copy of shared data for every agent. A content-addressed object store
//! (BLAKE3) in sealed memfds, served on a Unix socket; a client gets an object's descriptor
//! (`SCM_RIGHTS`) and maps it read-only, so the bytes are never copied to read them.
//!
//! Built so far: the store (deduplication, references per client, LRU eviction of what no
//! one references, refusals that say what holds the space), the socket server and the Rust
//! client. Not yet: the engine serving it, `[[pools]]`, compression of cold objects, the
//! Python client, the faces (issue 17).

pub mod client;
pub mod server;
pub mod store;
pub mod wire;

pub use client::{Client, ClientError, Mapped, Put};
pub use server::{Server, ServerConfig};
pub use store::{ObjectId, Store, StoreError, StoreStats};
