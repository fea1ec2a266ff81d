//! Keys as the levels store them: the caller's bytes in a namespace (shared, or private to
//! one agent), and the hashes that pick a shard and name an entry to the policies.

use std::hash::Hasher;

use super::policy::KeyHash;

/// Namespace tags, the first byte of every stored key.
const SHARED: u8 = 0;
const PRIVATE: u8 = 1;

/// A key in its namespace, as stored: `[SHARED] key` or `[PRIVATE] agent_len(u16) agent key`.
/// The agent's name is inside the stored key, so one agent's private entry can never be
/// found under another agent's name.
pub(crate) fn stored_key(key: &[u8], private_to: Option<&str>) -> Vec<u8> {
    match private_to {
        None => {
            let mut out = Vec::with_capacity(key.len() + 1);
            out.push(SHARED);
            out.extend_from_slice(key);
            out
        }
        Some(agent) => {
            let agent = agent.as_bytes();
            let mut out = Vec::with_capacity(key.len() + agent.len() + 3);
            out.push(PRIVATE);
            // Agent names are at most MAX_AGENT_LEN bytes (checked by Cache), so this fits.
            out.extend_from_slice(&(agent.len() as u16).to_le_bytes());
            out.extend_from_slice(agent);
            out.extend_from_slice(key);
            out
        }
    }
}

/// What a level compares stored keys with: a stored key itself, or a caller's key in the
/// shared namespace (so a get of a shared key builds no stored key).
pub(crate) trait KeyMatch {
    fn matches(&self, stored: &[u8]) -> bool;
}

impl KeyMatch for [u8] {
    fn matches(&self, stored: &[u8]) -> bool {
        same_bytes(self, stored)
    }
}

/// `a == b`, without a call into libc's `memcmp` for the short keys most lookups compare:
/// two overlapping fixed-size loads from each side (the call and its setup cost more than
/// the compare).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        0 => true,
        1..=3 => a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1],
        4..=8 => {
            chunk::<4>(a, 0) == chunk::<4>(b, 0) && chunk::<4>(a, len - 4) == chunk::<4>(b, len - 4)
        }
        9..=16 => {
            chunk::<8>(a, 0) == chunk::<8>(b, 0) && chunk::<8>(a, len - 8) == chunk::<8>(b, len - 8)
        }
        _ => a == b,
    }
}

/// `N` bytes of `bytes` from `at` as an array: a fixed-size load, not a `memcpy` call.
fn chunk<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// A caller's key in the shared namespace.
pub(crate) struct SharedKey<'a>(pub &'a [u8]);

impl KeyMatch for SharedKey<'_> {
    fn matches(&self, stored: &[u8]) -> bool {
        stored
            .split_first()
            .is_some_and(|(&tag, key)| tag == SHARED && same_bytes(key, self.0))
    }
}

/// The key a get, a delete or a lookup resolves to: the agent's private entry, or the
/// shared one.
pub(crate) enum Visible<'a> {
    Private(Vec<u8>),
    Shared(SharedKey<'a>),
}

impl KeyMatch for Visible<'_> {
    fn matches(&self, stored: &[u8]) -> bool {
        match self {
            Visible::Private(own) => own.matches(stored),
            Visible::Shared(shared) => shared.matches(stored),
        }
    }
}

/// Whether a stored key is in some agent's private namespace.
pub(crate) fn is_private(stored: &[u8]) -> bool {
    stored.first() == Some(&PRIVATE)
}

/// The caller's key and the owning agent (for a private entry) back from a stored key;
/// `None` for bytes no `stored_key` produced (a foreign or damaged L3 file).
pub(crate) fn split_stored(stored: &[u8]) -> Option<(&[u8], Option<&str>)> {
    match stored.split_first()? {
        (&SHARED, key) => Some((key, None)),
        (&PRIVATE, rest) => {
            let len = usize::from(u16::from_le_bytes([*rest.first()?, *rest.get(1)?]));
            let agent = rest.get(2..2 + len)?;
            let key = rest.get(2 + len..)?;
            Some((key, Some(std::str::from_utf8(agent).ok()?)))
        }
        _ => None,
    }
}

const MUL_A: u64 = 0x9e37_79b9_7f4a_7c15;
const MUL_B: u64 = 0xe703_7ed1_a0b4_28db;
/// Mixed into private entries' hashes so `(key, agent)` never equals a shared key's hash by
/// construction.
const PRIVATE_SEED: u64 = 0x8ebc_6af0_9c88_c6e3;

/// Multiply, fold the 128-bit product: the mixing step of wyhash-style hashes.
fn fold(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// A fast 64-bit hash, the same in every run and build (it names L3 files, which must mean
/// the same keys after a restart). Not keyed: collisions cost an entry, never a wrong value,
/// since every level compares the full key.
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = (bytes.len() as u64) ^ MUL_B;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fold(h ^ u64::from_le_bytes(word), MUL_A);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    fold(h ^ u64::from_le_bytes(tail) ^ MUL_A, MUL_B)
}

/// The entry hash of `key` in its namespace, from the hash of the caller's key alone (so a
/// get computes one hash of the key for the shard and the shared lookup).
pub(crate) fn namespaced_hash(key_hash: u64, private_to: Option<&str>) -> KeyHash {
    match private_to {
        None => key_hash,
        Some(agent) => fold(key_hash ^ PRIVATE_SEED, hash_bytes(agent.as_bytes()) | 1),
    }
}

/// The hash the policies see for a stored key.
pub(crate) fn entry_hash(stored: &[u8]) -> KeyHash {
    match split_stored(stored) {
        Some((key, agent)) => namespaced_hash(hash_bytes(key), agent),
        None => hash_bytes(stored),
    }
}

/// The shard of a caller's key (by its hash): by the caller's key alone, so the shared and
/// the private entries under one key live in the same shard and one lock covers both.
pub(crate) fn shard_of(key_hash: u64, shards: usize) -> usize {
    // The high bits: the low bits pick hash-map buckets inside the shard.
    ((key_hash >> 32) as usize) % shards.max(1)
}

/// The hasher of the cache's own maps: a `u64` key (an entry hash, already mixed) is taken
/// as it is; bytes (agent names) go through `hash_bytes`.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fold(self.0 ^ hash_bytes(bytes), MUL_A);
    }
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
}

pub(crate) type FastBuild = std::hash::BuildHasherDefault<FastHasher>;

/// A map keyed by entry hashes.
pub(crate) type HashIndex<V> = std::collections::HashMap<KeyHash, V, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_roundtrip_and_differ() {
        let shared = stored_key(b"k\0/x", None);
        let mine = stored_key(b"k\0/x", Some("agent-a"));
        let theirs = stored_key(b"k\0/x", Some("agent-b"));
        assert_ne!(shared, mine);
        assert_ne!(mine, theirs);
        assert_eq!(split_stored(&shared), Some((&b"k\0/x"[..], None)));
        assert_eq!(split_stored(&mine), Some((&b"k\0/x"[..], Some("agent-a"))));
        assert_eq!(split_stored(&[]), None);
        assert_eq!(split_stored(&[9, 1]), None);
        assert_eq!(split_stored(&[PRIVATE, 9, 0, b'a']), None);
    }

    #[test]
    fn hashes_are_stable_and_spread() {
        // Pinned: L3 file names written by an earlier build must still mean their keys.
        assert_eq!(hash_bytes(b"abc"), hash_bytes(b"abc"));
        assert_eq!(
            hash_bytes(b""),
            0x126e_57ef_2f24_25d7,
            "{:#x}",
            hash_bytes(b"")
        );
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abd"));
        assert_ne!(hash_bytes(b"abc"), hash_bytes(b"abc\0"));
        let h = hash_bytes(b"abc");
        assert!(shard_of(h, 8) < 8);
        assert_eq!(shard_of(h, 0), 0);
        assert_ne!(namespaced_hash(h, Some("a")), namespaced_hash(h, Some("b")));
        assert_ne!(namespaced_hash(h, Some("a")), h);
        assert_eq!(entry_hash(&stored_key(b"abc", None)), h);
        assert_eq!(
            entry_hash(&stored_key(b"abc", Some("a"))),
            namespaced_hash(h, Some("a"))
        );
        // 10 000 keys over 16 shards: none gets less than half or more than twice its share.
        let mut per_shard = [0usize; 16];
        for i in 0..10_000u32 {
            per_shard[shard_of(hash_bytes(format!("key-{i}").as_bytes()), 16)] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (312..=1250).contains(n)),
            "{per_shard:?}"
        );
    }

    #[test]
    fn short_and_long_keys_compare_byte_for_byte() {
        for len in 0..40usize {
            let a: Vec<u8> = (0..len as u8).collect();
            assert!(same_bytes(&a, &a.clone()), "{len}");
            for i in 0..len {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!same_bytes(&a, &b), "{len} bytes, byte {i} differs");
            }
            assert!(!same_bytes(&a, &[a.as_slice(), &[0]].concat()), "{len}");
        }
    }

    #[test]
    fn the_fast_hasher_tells_strings_apart() {
        use std::hash::BuildHasher;
        let build = FastBuild::default();
        assert_ne!(build.hash_one("agent-a"), build.hash_one("agent-b"));
        assert_ne!(build.hash_one("ab"), build.hash_one("a"));
        assert_eq!(build.hash_one(42u64), 42);
    }
}
