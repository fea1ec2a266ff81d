//! Object ids and the errors of the store.

use serde::{Deserialize, Serialize};

/// An object's id: the BLAKE3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    pub fn of(bytes: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(bytes).as_bytes())
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id from its 64 hex digits.
    pub fn parse(text: &str) -> Option<ObjectId> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(ObjectId(out))
    }
}

/// Who holds references: one per client connection.
pub type ClientId = u64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("no object {0}")]
    Unknown(String),
    #[error("no pool {0:?}")]
    NoPool(String),
    #[error(
        "pool {pool} cannot fit {size} bytes: capacity {capacity}, {held} held by objects \
         still referenced and segments ({objects} of them)"
    )]
    Full {
        pool: String,
        size: u64,
        capacity: u64,
        held: u64,
        objects: usize,
    },
    #[error(
        "agent {agent} holds {held} bytes in pool {pool}; {size} more would pass its quota of {quota}"
    )]
    Quota {
        agent: String,
        pool: String,
        held: u64,
        size: u64,
        quota: u64,
    },
    #[error("this client already holds {0} objects and segments, the most one client may")]
    TooManyHeld(usize),
    #[error("no segment {0} of this client")]
    NoSegment(u64),
    #[error("pool {0:?} exists with another size or codec")]
    PoolDiffers(String),
    #[error("{0}")]
    Invalid(String),
    #[error("shared memory: {0}")]
    Memory(String),
}
