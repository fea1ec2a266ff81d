//! L3: one file per entry under the cache directory.
//!
//! Why a file per entry rather than a segment log: an entry is dropped by unlinking its
//! file, so eviction never needs compaction and the space comes back at once; a damaged
//! file costs that one entry; and the index is rebuilt from a directory listing plus each
//! file's header. The cost — one inode per entry — is small next to the values this level
//! is for (too large or too cold for memory).
//!
//! A file is `<entry hash, 16 hex>.l3` (format in `l3file`): a 32-byte header, the full key,
//! the value (as L2 held it: lz4 or plain). The CRC covers the header's fields, the key and the
//! value, so a flipped bit anywhere is caught; the file's length must match the header, so a
//! truncated file is caught. Both are checked on every read and a bad file is deleted, never
//! returned. Files are written to a temporary name (O_EXCL, 0600) and renamed into place, so
//! a reader never sees half a file; nothing is fsynced, because after a crash a torn file
//! fails its checksum and is dropped, which is all a cache owes.
//!
//! Any write error (ENOSPC above all) disables the level for new entries, with a warning and
//! the reason in the stats, while L1 and L2 go on; the entries already on disk stay readable.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use super::keys::{HashIndex, KeyMatch, is_private};
use super::l3file::{
    HEADER_LEN, MAX_KEY_LEN, encode, read_file, read_index_entry, remove_quietly, write_new,
};
use super::level::Stored;
use super::policy::{KeyHash, Policy, Priority};

const SUFFIX: &str = ".l3";
const TMP_PREFIX: &str = ".tmp-";

/// What every shard's L3 shares: the directory, whether it still takes writes, and the
/// reads in progress.
pub(crate) struct DiskShared {
    dir: PathBuf,
    off: AtomicBool,
    reason: Mutex<Option<String>>,
    ready: Mutex<bool>,
    seq: AtomicU64,
    /// When each read in progress began, by its number: a read that hangs holds no lock,
    /// so this is how a stalled disk is seen.
    reading: Mutex<HashMap<u64, Instant>>,
}

impl DiskShared {
    pub fn new(dir: PathBuf) -> DiskShared {
        DiskShared {
            dir,
            off: AtomicBool::new(false),
            reason: Mutex::new(None),
            ready: Mutex::new(false),
            seq: AtomicU64::new(0),
            reading: Mutex::new(HashMap::new()),
        }
    }

    /// Read the file a ticket names. Called with the shard unlocked: a disk that hangs
    /// stalls this caller only, and shows in `stalled_reads` meanwhile.
    pub fn fetch(&self, ticket: Ticket) -> Fetched {
        let id = self.seq.fetch_add(1, Ordering::Relaxed);
        self.reads().insert(id, Instant::now());
        let read = read_file(&ticket.path);
        self.reads().remove(&id);
        Fetched { ticket, read }
    }

    /// Reads in progress for longer than `after`.
    pub fn stalled_reads(&self, after: Duration) -> usize {
        self.reads()
            .values()
            .filter(|began| began.elapsed() > after)
            .count()
    }

    fn reads(&self) -> MutexGuard<'_, HashMap<u64, Instant>> {
        self.reading.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why L3 takes no new entries, if it does not.
    pub fn disabled(&self) -> Option<String> {
        if !self.off.load(Ordering::Acquire) {
            return None;
        }
        self.reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn disable(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::warn!(target: "sutazai_top::cache", %reason,
                "L3 disabled: no new entries go to disk; L1 and L2 go on");
            *slot = Some(reason);
        }
        self.off.store(true, Ordering::Release);
    }

    /// The directory, created 0700 on first use (not at start, so an engine that never
    /// spills to disk leaves no trace); refused if it is a symlink or someone else's.
    fn ensure_dir(&self) -> Result<(), String> {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if *ready {
            return Ok(());
        }
        let dir = &self.dir;
        // The rule of every path the engine owns (ours, never a symlink, nobody else may
        // write), and then closed to reading too: values may be private.
        let owned = sutazai_owned_paths::OwnedDir::ensure(dir).map_err(|e| e.to_string())?;
        let meta = owned
            .as_file()
            .metadata()
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        check_dir(dir, &meta)?;
        *ready = true;
        Ok(())
    }

    fn path_of(&self, hash: KeyHash) -> PathBuf {
        self.dir.join(format!("{hash:016x}{SUFFIX}"))
    }
}

/// Our directory must be a real directory (not a symlink), ours, and closed to others. An
/// existing one that is not is refused (L3 then stays off, saying why), never chmodded:
/// someone made it that way, and values may be private.
fn check_dir(dir: &Path, meta: &fs::Metadata) -> Result<(), String> {
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (or is a symlink)",
            dir.display()
        ));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{} belongs to uid {}, not to us",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}); chmod 0700 it",
            dir.display(),
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// One entry's place in the index.
#[derive(Debug, Clone)]
pub(crate) struct DiskEntry {
    pub key: Box<[u8]>,
    /// The file's length: what the entry weighs against L3's capacity.
    pub size: u64,
    pub priority: Priority,
    /// Which indexing of its hash this is, set when indexed: a read done unlocked is taken
    /// only if the entry it read is still this one.
    pub generation: u64,
}

/// An L3 read to do with the shard unlocked: the file, and the entry it must still be.
pub(crate) struct Ticket {
    path: PathBuf,
    generation: u64,
}

/// A ticket's file as read, to hand back under the shard's lock.
pub(crate) struct Fetched {
    ticket: Ticket,
    read: Result<Stored, String>,
}

/// Why L3 did not take an entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    TooLarge,
    NotAdmitted,
    Disabled(String),
}

/// What an L3 read came to.
pub(crate) enum Read3 {
    Hit(Stored),
    /// The file was damaged (or gone) and has been dropped (the reason went to the log).
    Dropped,
}

/// One shard's part of L3.
pub(crate) struct DiskLevel {
    shared: Arc<DiskShared>,
    policy: Box<dyn Policy>,
    index: HashIndex<DiskEntry>,
    used: u64,
    private: usize,
    generations: u64,
}

impl DiskLevel {
    pub fn new(shared: Arc<DiskShared>, policy: Box<dyn Policy>) -> DiskLevel {
        DiskLevel {
            shared,
            policy,
            index: HashIndex::default(),
            used: 0,
            private: 0,
            generations: 0,
        }
    }

    pub fn capacity(&self) -> u64 {
        self.policy.capacity()
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    pub fn private_entries(&self) -> usize {
        self.private
    }

    fn removed(&mut self, entry: &DiskEntry) {
        self.used -= entry.size;
        if is_private(&entry.key) {
            self.private -= 1;
        }
    }

    fn added(&mut self, hash: KeyHash, mut entry: DiskEntry) {
        self.generations += 1;
        entry.generation = self.generations;
        self.used += entry.size;
        self.private += usize::from(is_private(&entry.key));
        self.index.insert(hash, entry);
    }

    pub fn holds<K: KeyMatch + ?Sized>(&self, hash: KeyHash, key: &K) -> bool {
        self.index.get(&hash).is_some_and(|e| key.matches(&e.key))
    }

    /// What to read for `key`, or `None` on a miss (told to the policy).
    pub fn ticket<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> Option<Ticket> {
        let Some(entry) = self.index.get(&hash).filter(|e| key.matches(&e.key)) else {
            self.policy.on_miss(hash);
            return None;
        };
        Some(Ticket {
            path: self.shared.path_of(hash),
            generation: entry.generation,
        })
    }

    /// A read done unlocked, taken back under the lock: a hit, or a damaged file dropped and
    /// reported (never returned). `None` if the entry was written or removed meanwhile: the
    /// read may be of another file, so the caller looks again.
    pub fn settle<K: KeyMatch + ?Sized>(
        &mut self,
        hash: KeyHash,
        key: &K,
        fetched: Fetched,
    ) -> Option<Read3> {
        let current = self.index.get(&hash).map(|e| e.generation);
        if current != Some(fetched.ticket.generation) {
            return None;
        }
        let checked = fetched.read.and_then(|s| {
            if key.matches(&s.key) {
                Ok(s)
            } else {
                Err("the file holds another key".to_string())
            }
        });
        Some(match checked {
            Ok(stored) => {
                self.policy.on_hit(hash);
                Read3::Hit(stored)
            }
            Err(why) => {
                let path = fetched.ticket.path;
                self.forget(hash);
                remove_quietly(&path);
                let reason = format!("{}: {why}", path.display());
                tracing::warn!(target: "sutazai_top::cache", %reason, "dropped a damaged L3 entry");
                Read3::Dropped
            }
        })
    }

    /// Remove `key` and its file (deleted, overwritten or promoted).
    pub fn take<K: KeyMatch + ?Sized>(&mut self, hash: KeyHash, key: &K) -> bool {
        if !self.holds(hash, key) {
            return false;
        }
        self.forget(hash);
        remove_quietly(&self.shared.path_of(hash));
        true
    }

    fn forget(&mut self, hash: KeyHash) -> Option<DiskEntry> {
        let entry = self.index.remove(&hash)?;
        self.policy.on_remove(hash);
        self.removed(&entry);
        Some(entry)
    }

    /// Write `entry` to disk if it fits, the policy admits it and L3 is enabled. Returns the
    /// number of entries evicted (out of the cache) to make room.
    pub fn insert(&mut self, hash: KeyHash, entry: &Stored) -> Result<u64, Refusal> {
        if let Some(reason) = self.shared.disabled() {
            return Err(Refusal::Disabled(reason));
        }
        let size = (HEADER_LEN + entry.key.len() + entry.data.len()) as u64;
        if size > self.capacity() || entry.key.len() > MAX_KEY_LEN {
            return Err(Refusal::TooLarge);
        }
        if let Err(reason) = self.shared.ensure_dir() {
            self.shared.disable(reason.clone());
            return Err(Refusal::Disabled(reason));
        }
        // A colliding hash (another key) gives up its slot and its file name.
        if self.forget(hash).is_some() {
            remove_quietly(&self.shared.path_of(hash));
        }
        let mut evicted = 0;
        let mut admitted = true;
        for gone in self.policy.on_insert(hash, size, entry.priority) {
            if gone == hash {
                admitted = false;
            } else if let Some(e) = self.index.remove(&gone) {
                self.removed(&e);
                remove_quietly(&self.shared.path_of(gone));
                evicted += 1;
            }
        }
        if !admitted {
            return Err(Refusal::NotAdmitted);
        }
        if let Err(reason) = self.write(hash, entry) {
            self.policy.on_remove(hash);
            self.shared.disable(reason.clone());
            return Err(Refusal::Disabled(reason));
        }
        let indexed = DiskEntry {
            key: entry.key.clone(),
            size,
            priority: entry.priority,
            generation: 0,
        };
        self.added(hash, indexed);
        Ok(evicted)
    }

    fn write(&self, hash: KeyHash, entry: &Stored) -> Result<(), String> {
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.shared.dir.join(format!(
            "{TMP_PREFIX}{hash:016x}-{}-{seq}",
            std::process::id()
        ));
        let written = write_new(&tmp, &encode(entry));
        let renamed = written.and_then(|()| fs::rename(&tmp, self.shared.path_of(hash)));
        renamed.map_err(|err| {
            remove_quietly(&tmp);
            format!("{}: write failed: {err}", self.shared.dir.display())
        })
    }

    /// Take an entry found on disk at start; returns the files evicted if the level is
    /// over capacity (the configured size shrank).
    pub fn adopt(&mut self, hash: KeyHash, entry: DiskEntry) -> u64 {
        let mut evicted = 0;
        let mut admitted = true;
        for gone in self.policy.on_insert(hash, entry.size, entry.priority) {
            if gone == hash {
                admitted = false;
            } else if let Some(e) = self.index.remove(&gone) {
                self.removed(&e);
                remove_quietly(&self.shared.path_of(gone));
                evicted += 1;
            }
        }
        if admitted {
            self.added(hash, entry);
        } else {
            remove_quietly(&self.shared.path_of(hash));
            evicted += 1;
        }
        evicted
    }
}

/// What a start-up scan found.
pub(crate) struct Found {
    pub hash: KeyHash,
    pub entry: DiskEntry,
    pub modified: SystemTime,
}

/// Every valid entry in the directory, oldest first; damaged files and leftover temporary
/// files are deleted. A missing directory is an empty cache; one that is not ours is an
/// error (L3 then starts disabled).
pub(crate) fn scan(shared: &DiskShared) -> Result<(Vec<Found>, u64), String> {
    let dir = shared.dir();
    match fs::symlink_metadata(dir) {
        Ok(meta) => check_dir(dir, &meta)?,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(err) => return Err(format!("{}: {err}", dir.display())),
    }
    let listing = fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    let (mut found, mut dropped) = (Vec::new(), 0);
    for item in listing.flatten() {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = item.path();
        if name.starts_with(TMP_PREFIX) {
            remove_quietly(&path);
            continue;
        }
        let Some(hash) = name
            .strip_suffix(SUFFIX)
            .filter(|h| h.len() == 16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        let checked = read_index_entry(&path).and_then(|entry| {
            if super::keys::entry_hash(&entry.key) == hash {
                Ok(entry)
            } else {
                Err("the key does not match the file name".to_string())
            }
        });
        match checked {
            Ok(entry) => {
                let modified = item
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push(Found {
                    hash,
                    entry,
                    modified,
                });
            }
            Err(why) => {
                tracing::warn!(target: "sutazai_top::cache", path = %path.display(), %why,
                    "dropping a damaged L3 file");
                remove_quietly(&path);
                dropped += 1;
            }
        }
    }
    found.sort_by_key(|f| f.modified);
    Ok((found, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyName;
    use bytes::Bytes;

    fn stored(key: &[u8], value: &'static [u8]) -> Stored {
        Stored {
            key: key.into(),
            data: Bytes::from_static(value),
            raw_len: value.len(),
            compressed: false,
            priority: Priority::Normal,
            prefetched: false,
        }
    }

    /// A read done with the shard unlocked is taken only if the entry is still the one it
    /// read: rewritten meanwhile, the caller must read again (the file may be the new one).
    #[test]
    fn a_read_of_an_entry_rewritten_meanwhile_is_not_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(DiskShared::new(dir.path().join("l3")));
        let mut level = DiskLevel::new(shared.clone(), PolicyName::Lru.build(1 << 20));
        let key: &[u8] = b"\0k";
        level.insert(7, &stored(key, b"old")).expect("insert");
        let ticket = level.ticket(7, key).expect("indexed");
        let fetched = shared.fetch(ticket);
        level.insert(7, &stored(key, b"new")).expect("rewrite");
        assert!(
            level.settle(7, key, fetched).is_none(),
            "a stale read was taken"
        );

        let fetched = shared.fetch(level.ticket(7, key).expect("indexed"));
        match level.settle(7, key, fetched) {
            Some(Read3::Hit(entry)) => assert_eq!(&entry.data[..], b"new"),
            _ => panic!("the fresh read was not a hit"),
        }
        assert_eq!(
            shared.stalled_reads(Duration::ZERO),
            0,
            "reads are unregistered"
        );
    }
}
