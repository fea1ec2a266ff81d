//! The memory levels: L1 holds values as they are, L2 holds them lz4-compressed. Both find
//! entries by the policy's 64-bit hash of the stored key (`keys::entry_hash`) and check the
//! full key on every lookup, so a hash collision can only cost an entry, never return
//! another key's value. An entry takes exactly one cache line of the table (see
//! `Resident`): a get's lookup costs one memory access where the entry's key, value handle
//! and flags all are.

use std::sync::Mutex;

use bytes::Bytes;

use hashbrown::HashTable;

use super::hits::{Hit, HitSample};
use super::keys::{KeyMatch, entry_hash, is_private};
use super::policy::{KeyHash, Policy, Priority};

/// An entry as it moves between levels.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The stored key (namespace and the caller's key).
    pub key: Box<[u8]>,
    /// The value, or its lz4 block when `compressed`.
    pub data: Bytes,
    /// The value's length once decompressed.
    pub raw_len: usize,
    pub compressed: bool,
    pub priority: Priority,
    /// Brought in by a prefetch and not used yet.
    pub prefetched: bool,
}

impl Stored {
    /// What the entry weighs against a memory level's capacity.
    pub fn weight(&self) -> u64 {
        (self.key.len() + self.data.len()) as u64
    }

    /// The value as the caller put it.
    pub fn value(&self) -> Result<Bytes, String> {
        if !self.compressed {
            return Ok(self.data.clone());
        }
        lz4_flex::block::decompress(&self.data, self.raw_len)
            .map(Bytes::from)
            .map_err(|err| format!("lz4: {err}"))
    }

    /// The entry with its value as it is (for L1).
    pub fn into_raw(self) -> Result<Stored, String> {
        if !self.compressed {
            return Ok(self);
        }
        let data = self.value()?;
        Ok(Stored {
            data,
            compressed: false,
            ..self
        })
    }

    /// The entry compressed (for L2); a value lz4 cannot shrink stays as it is, so a get
    /// does not pay to decompress what saved nothing.
    pub fn into_compressed(self) -> Stored {
        if self.compressed {
            return self;
        }
        let packed = lz4_flex::block::compress(&self.data);
        if packed.len() >= self.data.len() {
            return self;
        }
        Stored {
            data: Bytes::from(packed),
            compressed: true,
            ..self
        }
    }
}

/// What an insert did: entries evicted to make room, and the new entry back if the level
/// did not take it (too large, or the policy's admission refused it).
pub(crate) struct Inserted {
    pub evicted: Vec<Stored>,
    pub refused: Option<Stored>,
}

/// Longest stored key kept inside the level's table itself.
const INLINE_KEY: usize = 22;

/// A stored key as a memory level keeps it: short keys (the common case) inside the table's
/// slot, so a lookup's full-key comparison reads the slot it already loaded instead of
/// following a pointer to another cache line; longer keys on the heap.
#[derive(Debug, Clone)]
enum SlotKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

impl SlotKey {
    fn new(key: Box<[u8]>) -> Self {
        if key.len() > INLINE_KEY {
            return SlotKey::Heap(key);
        }
        let mut bytes = [0u8; INLINE_KEY];
        bytes[..key.len()].copy_from_slice(&key);
        SlotKey::Inline {
            len: key.len() as u8,
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            SlotKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            SlotKey::Heap(key) => key,
        }
    }

    fn into_boxed(self) -> Box<[u8]> {
        match self {
            SlotKey::Inline { .. } => self.as_bytes().into(),
            SlotKey::Heap(key) => key,
        }
    }
}

/// An entry resident in a memory level: a `Stored` with its key in a `SlotKey`, in 64 bytes
/// aligned to a cache line (the hash is not kept: it is recomputed from the key when the
/// table grows, and when the policy names a victim by its hash).
#[derive(Debug)]
#[repr(align(64))]
pub(crate) struct Resident {
    key: SlotKey,
    pub data: Bytes,
    /// The value's length once decompressed (a level refuses values of 4 GiB or more).
    raw_len: u32,
    compressed: bool,
    priority: Priority,
    /// Brought in by a prefetch and not used yet.
    pub prefetched: bool,
}

// One cache line: more would put a get's key and value handle on two.
const _: () = assert!(std::mem::size_of::<Resident>() == 64);

impl Resident {
    /// The caller checked that the value is below 4 GiB (`fits_raw_len`).
    fn new(entry: Stored) -> Self {
        Resident {
            raw_len: entry.raw_len as u32,
            key: SlotKey::new(entry.key),
            data: entry.data,
            compressed: entry.compressed,
            priority: entry.priority,
            prefetched: entry.prefetched,
        }
    }

    fn key(&self) -> &[u8] {
        self.key.as_bytes()
    }

    /// Whether a hit on this entry must reach the policy even when it sees only a sample
    /// (`hits::HitSample`): the first hit on a prefetched entry settles the prefetch, a hit
    /// makes a Low entry Normal and gives a High one back its second chance.
    pub fn hit_must_be_shown(&self) -> bool {
        self.prefetched || self.priority != Priority::Normal
    }

    pub fn is_low(&self) -> bool {
        self.priority == Priority::Low
    }

    /// A hit reached the policy, which makes a Low entry Normal (a guess proven); the entry
    /// says so too, so it keeps that standing when it moves between levels.
    fn proven(&mut self) {
        if self.priority == Priority::Low {
            self.priority = Priority::Normal;
        }
    }

    fn weight(&self) -> u64 {
        (self.key().len() + self.data.len()) as u64
    }

    /// A copy as it moves between levels (the value is shared, not copied).
    pub fn to_stored(&self) -> Stored {
        Stored {
            key: self.key().into(),
            data: self.data.clone(),
            raw_len: self.raw_len as usize,
            compressed: self.compressed,
            priority: self.priority,
            prefetched: self.prefetched,
        }
    }

    fn into_stored(self) -> Stored {
        Stored {
            key: self.key.into_boxed(),
            data: self.data,
            raw_len: self.raw_len as usize,
            compressed: self.compressed,
            priority: self.priority,
            prefetched: self.prefetched,
        }
    }
}

/// The policy of a level whose shard is held for writing (no locking: `&mut`).
fn policy_of(policy: &mut Mutex<Box<dyn Policy>>) -> &mut dyn Policy {
    policy.get_mut().unwrap_or_else(|p| p.into_inner()).as_mut()
}

/// One memory level of one shard.
pub(crate) struct MemLevel {
    /// In a mutex only so that the level can be shared under the shard's read lock (a
    /// policy is `Send`, not `Sync`): readers never touch it, and every change happens
    /// under the shard's write lock through `get_mut`, which costs nothing.
    policy: Mutex<Box<dyn Policy>>,
    capacity: u64,
    entries: HashTable<Resident>,
    used: u64,
    compressed: bool,
    /// Entries in some agent's private namespace (a get probes that namespace only when
    /// the shard holds any).
    private: usize,
    /// Which hits served under the read lock the policy is shown.
    sample: HitSample,
}

impl MemLevel {
    pub fn new(policy: Box<dyn Policy>, compressed: bool) -> MemLevel {
        MemLevel {
            capacity: policy.capacity(),
            policy: Mutex::new(policy),
            entries: HashTable::new(),
            used: 0,
            compressed,
            private: 0,
            sample: HitSample::default(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The policy's name and, for `adaptive`, the policy it follows.
    pub fn policy_names(&mut self) -> (&'static str, &'static str) {
        let policy = policy_of(&mut self.policy);
        (policy.name(), policy.chosen())
    }

    pub fn private_entries(&self) -> usize {
        self.private
    }

    fn removed(&mut self, entry: &Resident) {
        self.used -= entry.weight();
        if is_private(entry.key()) {
            self.private -= 1;
        }
    }

    /// Whether `key` is here, without counting a lookup.
    pub fn holds<K: KeyMatch + ?Sized>(&self, hash: KeyHash, key: &K) -> bool {
        self.peek(hash, key).is_some()
    }

    /// The entry under `key`, without counting a lookup.
    pub fn peek<K: KeyMatch + ?Sized>(&self, hash: KeyHash, key: &K) -> Option<&Resident> {
        self.entries.find(hash, |e| key.matches(e.key()))
    }

    /// The entry under `hash`, whatever its key: the policies name entries by hash, and a
    /// level holds one entry per hash (`take_slot`).
    fn by_hash(&mut self, hash: KeyHash) -> Option<&mut Resident> {
        self.entries.find_mut(hash, |e| entry_hash(e.key()) == hash)
    }

    /// Takes the entry under `hash` out of the table (the caller settles the policy).
    fn remove_hash(&mut self, hash: KeyHash) -> Option<Resident> {
        let found = self
            .entries
            .find_entry(hash, |e| entry_hash(e.key()) == hash);
        found.ok().map(|entry| entry.remove().0)
    }

    fn put_resident(&mut self, hash: KeyHash, entry: Stored) {
        self.used += entry.weight();
        self.private += usize::from(is_private(&entry.key));
        self.entries
            .insert_unique(hash, Resident::new(entry), |e| entry_hash(e.key()));
    }

    /// A counted lookup: the entry on a hit (the policy learns either way).
    pub fn lookup<K: KeyMatch + ?Sized>(
        &mut self,
        hash: KeyHash,
        key: &K,
    ) -> Option<&mut Resident> {
        match self.entries.find_mut(hash, |e| key.matches(e.key())) {
            Some(entry) => {
                self.sample.shown();
                policy_of(&mut self.policy).on_hit(hash);
                entry.proven();
                Some(entry)
            }
            None => {
                policy_of(&mut self.policy).on_miss(hash);
                None
            }
        }
    }

    /// Whether readers log only a sample of this level's hits (see `hits::HitSample`).
    pub fn sampling_hits(&self) -> bool {
        self.sample.sampling()
    }

    /// Replays a hit served under the shard's read lock (see `hits`): the policy learns of
    /// it, an entry read with the prefetch mark loses it, a Low one becomes Normal. True if
    /// this hit used the prefetch (the first hit on the entry since it was prefetched).
    pub fn replay_hit(&mut self, hit: Hit) -> bool {
        self.sample.shown();
        policy_of(&mut self.policy).on_hit(hit.hash);
        if !(hit.prefetched || hit.low) {
            return false;
        }
        // No write came between the read and now (the log is replayed before any), so the
        // entry under `hash` is the one that was read.
        let Some(entry) = self.by_hash(hit.hash) else {
            return false;
        };
        entry.proven();
        hit.prefetched && std::mem::take(&mut entry.prefetched)
    }

    /// Remove `key` and drop it (deleted, overwritten, or moved to another level by a copy);
    /// true if it was here.
    pub fn discard<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> bool {
        let Ok(found) = self.entries.find_entry(hash, |e| key.matches(e.key())) else {
            return false;
        };
        let entry = found.remove().0;
        policy_of(&mut self.policy).on_remove(hash);
        self.removed(&entry);
        true
    }

    /// Admit `entry` (converted to this level's form) if it fits and the policy takes it.
    /// `hash` is the entry's `keys::entry_hash`, as everywhere in the cache.
    pub fn insert(&mut self, hash: KeyHash, entry: Stored) -> Inserted {
        debug_assert_eq!(hash, entry_hash(&entry.key), "an entry's hash is its key's");
        let entry = if self.compressed {
            entry.into_compressed()
        } else {
            match entry.into_raw() {
                Ok(raw) => raw,
                Err(err) => {
                    // Our own lz4 block failed to decode: memory damage or a bug. Drop it.
                    tracing::warn!(target: "sutazai_top::cache", %err, "dropping an undecodable entry");
                    return Inserted {
                        evicted: Vec::new(),
                        refused: None,
                    };
                }
            }
        };
        let weight = entry.weight();
        if weight > self.capacity() || u32::try_from(entry.raw_len).is_err() {
            return Inserted {
                evicted: Vec::new(),
                refused: Some(entry),
            };
        }
        // A colliding hash (another key) leaves first: the slot holds one key.
        let mut evicted: Vec<Stored> = self.take_slot(hash).into_iter().collect();
        let out = self.offer(hash, weight, entry.priority);
        let mut refused = None;
        let mut admitted = true;
        let mut pushed_out = Vec::new();
        for gone in out {
            if gone == hash {
                admitted = false;
            } else if let Some(e) = self.remove_hash(gone) {
                self.removed(&e);
                pushed_out.push((gone, e.into_stored()));
            }
        }
        let high_pushed_out = pushed_out.iter().any(|(_, e)| e.priority == Priority::High);
        if admitted && entry.priority == Priority::Low && high_pushed_out {
            // A Low entry (a prefetch: a guess) must never cost a High one its place; the
            // policy picked a High victim, so the guess is refused and the High entries
            // go back (the room they left is free, so they fit).
            policy_of(&mut self.policy).on_remove(hash);
            admitted = false;
            pushed_out = self.restore_high(pushed_out);
        }
        evicted.extend(pushed_out.into_iter().map(|(_, e)| e));
        if admitted {
            self.put_resident(hash, entry);
        } else {
            refused = Some(entry);
        }
        Inserted { evicted, refused }
    }

    /// Re-admits the High entries of `pushed_out` (see `insert`); returns what stays out.
    fn restore_high(&mut self, pushed_out: Vec<(KeyHash, Stored)>) -> Vec<(KeyHash, Stored)> {
        let mut out = Vec::new();
        for (hash, entry) in pushed_out {
            if entry.priority != Priority::High {
                out.push((hash, entry));
                continue;
            }
            let mut back_in = true;
            for gone in self.offer(hash, entry.weight(), Priority::High) {
                if gone == hash {
                    back_in = false;
                } else if let Some(e) = self.remove_hash(gone) {
                    self.removed(&e);
                    out.push((gone, e.into_stored()));
                }
            }
            if back_in {
                self.put_resident(hash, entry);
            } else {
                out.push((hash, entry));
            }
        }
        out
    }

    /// The policy's answer to a newcomer: the keys to evict (the newcomer's own when it is
    /// refused). Any such choice ends a sampled stretch (`hits::HitSample`).
    fn offer(&mut self, hash: KeyHash, weight: u64, priority: Priority) -> Vec<KeyHash> {
        let out = policy_of(&mut self.policy).on_insert(hash, weight, priority);
        if !out.is_empty() {
            self.sample.chose();
        }
        out
    }

    fn take_slot(&mut self, hash: KeyHash) -> Option<Stored> {
        let entry = self.remove_hash(hash)?;
        policy_of(&mut self.policy).on_remove(hash);
        self.removed(&entry);
        Some(entry.into_stored())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::stored_key;
    use crate::policy::by_name;

    /// A shared entry and its hash.
    fn stored(key: &[u8], value: &[u8]) -> (KeyHash, Stored) {
        let key = stored_key(key, None);
        (
            entry_hash(&key),
            Stored {
                key: key.into(),
                data: Bytes::copy_from_slice(value),
                raw_len: value.len(),
                compressed: false,
                priority: Priority::Normal,
                prefetched: false,
            },
        )
    }

    fn insert(level: &mut MemLevel, key: &[u8], value: &[u8]) -> Inserted {
        let (hash, entry) = stored(key, value);
        level.insert(hash, entry)
    }

    #[test]
    fn compressed_level_roundtrips_and_counts_compressed_bytes() {
        let policy = by_name("lru", 1 << 20).expect("lru");
        let mut level = MemLevel::new(policy, true);
        let value = vec![7u8; 10_000];
        let done = insert(&mut level, b"k", &value);
        assert!(done.refused.is_none() && done.evicted.is_empty());
        assert!(level.used() < 1_000, "lz4 shrinks a run: {}", level.used());
        let (hash, _) = stored(b"k", &[]);
        let hit = level
            .lookup(hash, &stored_key(b"k", None)[..])
            .expect("hit");
        assert_eq!(
            hit.to_stored().value().expect("decodes"),
            Bytes::from(value)
        );
        assert!(level.lookup(hash, &b"other key, same hash"[..]).is_none());
    }

    #[test]
    fn a_hit_proves_a_low_entry_on_either_path() {
        let policy = by_name("lru", 1000).expect("lru");
        let mut level = MemLevel::new(policy, false);
        let mut keys = Vec::new();
        for name in [&b"a"[..], b"b"] {
            let (hash, mut entry) = stored(name, &[1; 4]);
            entry.priority = Priority::Low;
            assert!(level.insert(hash, entry).refused.is_none());
            keys.push((hash, stored_key(name, None)));
        }
        let low = |level: &MemLevel, (hash, key): &(KeyHash, Vec<u8>)| {
            level.peek(*hash, &key[..]).expect("held").is_low()
        };
        assert!(low(&level, &keys[0]) && low(&level, &keys[1]));
        // A get under the write lock, and one served under the read lock and replayed.
        assert!(level.lookup(keys[0].0, &keys[0].1[..]).is_some());
        let replayed = Hit {
            hash: keys[1].0,
            agent: 0,
            prefetched: false,
            low: true,
        };
        assert!(!level.replay_hit(replayed), "not a prefetch");
        assert!(!low(&level, &keys[0]) && !low(&level, &keys[1]));
        assert_eq!(
            level
                .peek(keys[1].0, &keys[1].1[..])
                .map(|e| e.to_stored().priority),
            Some(Priority::Normal),
            "and so it moves to another level"
        );
    }

    #[test]
    fn entries_are_found_by_key_and_evicted_by_hash_as_the_table_grows() {
        let policy = by_name("lru", 1000 * 12).expect("lru");
        let mut level = MemLevel::new(policy, false);
        for i in 0..2000u32 {
            let done = insert(&mut level, &i.to_le_bytes(), &[1; 7]);
            assert!(done.refused.is_none());
            if i >= 1000 {
                let gone: Vec<&[u8]> = done.evicted.iter().map(|e| &e.key[1..]).collect();
                assert_eq!(gone, vec![&(i - 1000).to_le_bytes()[..]], "LRU order");
            }
        }
        assert_eq!((level.len(), level.used()), (1000, 1000 * 12));
        for i in 1000..2000u32 {
            let (hash, _) = stored(&i.to_le_bytes(), &[]);
            let key = stored_key(&i.to_le_bytes(), None);
            assert_eq!(level.peek(hash, &key[..]).map(|e| e.data.len()), Some(7));
            assert!(level.discard(hash, &key[..]));
            assert!(!level.holds(hash, &key[..]));
        }
        assert_eq!((level.len(), level.used()), (0, 0));
    }

    #[test]
    fn too_large_is_refused_and_eviction_returns_the_entries() {
        // Weights: the stored key (namespace byte and key) plus the value.
        let policy = by_name("lru", 12).expect("lru");
        let mut level = MemLevel::new(policy, false);
        assert!(insert(&mut level, b"k", &[0; 11]).refused.is_some());
        assert!(insert(&mut level, b"a", &[1; 4]).refused.is_none());
        assert!(insert(&mut level, b"b", &[2; 4]).refused.is_none());
        let done = insert(&mut level, b"c", &[3; 4]);
        assert_eq!(done.evicted.len(), 1);
        assert_eq!(&*done.evicted[0].key, &stored_key(b"a", None)[..]);
        assert_eq!(level.used(), 12);
    }
}
