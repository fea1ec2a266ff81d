//! The objects: content-addressed (BLAKE3), each in a sealed memfd nobody can change, with
//! references counted per client. Unreferenced objects are evicted least recently used first
//! when a put needs room; a referenced one never is.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

/// An object's id: the BLAKE3 hash of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    #[error(
        "pool {pool} cannot fit {size} bytes: capacity {capacity}, {held} held by objects \
         still referenced ({objects} of them)"
    )]
    Full {
        pool: String,
        size: u64,
        capacity: u64,
        held: u64,
        objects: usize,
    },
    #[error("this client already holds {0} objects, the most one client may")]
    TooManyHeld(usize),
    #[error("shared memory: {0}")]
    Memory(String),
}

struct Object {
    memfd: OwnedFd,
    size: u64,
    refs: u64,
    /// Puts of these bytes in all (the same content put twice is stored once).
    puts: u64,
    last_used: u64,
}

/// What the store holds, for the faces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub capacity: u64,
    pub objects: usize,
    /// Bytes stored once per content.
    pub physical_bytes: u64,
    /// Bytes as put: what the agents would hold without deduplication.
    pub logical_bytes: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
}

/// One pool of sealed objects.
pub struct Store {
    name: String,
    capacity: u64,
    objects: HashMap<ObjectId, Object>,
    held: HashMap<ClientId, HashMap<ObjectId, u64>>,
    max_held_per_client: usize,
    clock: u64,
    evictions: u64,
    evicted_bytes: u64,
}

impl Store {
    pub fn new(name: &str, capacity: u64, max_held_per_client: usize) -> Store {
        Store {
            name: name.to_string(),
            capacity,
            objects: HashMap::new(),
            held: HashMap::new(),
            max_held_per_client,
            clock: 0,
            evictions: 0,
            evicted_bytes: 0,
        }
    }

    /// Store `bytes` (once per content) and give `client` a reference. Returns the id and
    /// whether the content was there already.
    pub fn put(&mut self, client: ClientId, bytes: &[u8]) -> Result<(ObjectId, bool), StoreError> {
        let id = ObjectId::of(bytes);
        self.check_room_to_hold(client, &id)?;
        self.clock += 1;
        let existed = if let Some(object) = self.objects.get_mut(&id) {
            object.puts += 1;
            object.last_used = self.clock;
            true
        } else {
            let size = bytes.len() as u64;
            self.make_room(size)?;
            let memfd = sealed_memfd(&id, bytes)?;
            self.objects.insert(
                id,
                Object {
                    memfd,
                    size,
                    refs: 0,
                    puts: 1,
                    last_used: self.clock,
                },
            );
            false
        };
        self.hold(client, id);
        Ok((id, existed))
    }

    /// A descriptor of object `id` (read-only by its seals), and a reference for `client`.
    pub fn get(&mut self, client: ClientId, id: &ObjectId) -> Result<(OwnedFd, u64), StoreError> {
        self.check_room_to_hold(client, id)?;
        self.clock += 1;
        let clock = self.clock;
        let object = self
            .objects
            .get_mut(id)
            .ok_or_else(|| StoreError::Unknown(id.hex()))?;
        object.last_used = clock;
        let fd = object
            .memfd
            .try_clone()
            .map_err(|e| StoreError::Memory(format!("duplicating the descriptor: {e}")))?;
        let size = object.size;
        self.hold(client, *id);
        Ok((fd, size))
    }

    /// Drop one reference `client` holds on `id`.
    pub fn release(&mut self, client: ClientId, id: &ObjectId) -> Result<(), StoreError> {
        let held = self.held.entry(client).or_default();
        match held.get_mut(id) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                held.remove(id);
            }
            None => return Err(StoreError::Unknown(id.hex())),
        }
        if let Some(object) = self.objects.get_mut(id) {
            object.refs = object.refs.saturating_sub(1);
        }
        Ok(())
    }

    /// A client went away (closed, crashed): everything it held is released.
    pub fn client_gone(&mut self, client: ClientId) {
        for (id, count) in self.held.remove(&client).unwrap_or_default() {
            if let Some(object) = self.objects.get_mut(&id) {
                object.refs = object.refs.saturating_sub(count);
            }
        }
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            capacity: self.capacity,
            objects: self.objects.len(),
            physical_bytes: self.objects.values().map(|o| o.size).sum(),
            logical_bytes: self.objects.values().map(|o| o.size * o.puts).sum(),
            evictions: self.evictions,
            evicted_bytes: self.evicted_bytes,
        }
    }

    /// The refusal for a put larger than the whole pool.
    pub fn too_large(&self, size: u64) -> StoreError {
        StoreError::Full {
            pool: self.name.clone(),
            size,
            capacity: self.capacity,
            held: self
                .objects
                .values()
                .filter(|o| o.refs > 0)
                .map(|o| o.size)
                .sum(),
            objects: self.objects.values().filter(|o| o.refs > 0).count(),
        }
    }

    /// References on `id` across every client.
    pub fn refs(&self, id: &ObjectId) -> Option<u64> {
        self.objects.get(id).map(|o| o.refs)
    }

    fn hold(&mut self, client: ClientId, id: ObjectId) {
        *self.held.entry(client).or_default().entry(id).or_insert(0) += 1;
        if let Some(object) = self.objects.get_mut(&id) {
            object.refs += 1;
        }
    }

    fn check_room_to_hold(&self, client: ClientId, id: &ObjectId) -> Result<(), StoreError> {
        let held = self.held.get(&client);
        let count = held.map_or(0, |h| h.len());
        let already = held.is_some_and(|h| h.contains_key(id));
        if count >= self.max_held_per_client && !already {
            return Err(StoreError::TooManyHeld(count));
        }
        Ok(())
    }

    /// Evict unreferenced objects, least recently used first, until `size` more bytes fit;
    /// nothing is evicted when they cannot fit even then.
    fn make_room(&mut self, size: u64) -> Result<(), StoreError> {
        let used: u64 = self.objects.values().map(|o| o.size).sum();
        if used + size <= self.capacity {
            return Ok(());
        }
        let held: u64 = self
            .objects
            .values()
            .filter(|o| o.refs > 0)
            .map(|o| o.size)
            .sum();
        if held + size > self.capacity {
            return Err(StoreError::Full {
                pool: self.name.clone(),
                size,
                capacity: self.capacity,
                held,
                objects: self.objects.values().filter(|o| o.refs > 0).count(),
            });
        }
        let mut idle: Vec<(u64, ObjectId, u64)> = self
            .objects
            .iter()
            .filter(|(_, o)| o.refs == 0)
            .map(|(id, o)| (o.last_used, *id, o.size))
            .collect();
        idle.sort_unstable();
        let mut used = used;
        for (_, id, bytes) in idle {
            if used + size <= self.capacity {
                break;
            }
            self.objects.remove(&id);
            used -= bytes;
            self.evictions += 1;
            self.evicted_bytes += bytes;
        }
        Ok(())
    }
}

/// A memfd holding `bytes`, sealed against writes, shrinking, growing and new seals.
fn sealed_memfd(id: &ObjectId, bytes: &[u8]) -> Result<OwnedFd, StoreError> {
    let name = format!("sutazai-pool-{}", &id.hex()[..16]);
    let memfd = memfd_create(
        name.as_str(),
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(|e| StoreError::Memory(format!("memfd_create: {e}")))?;
    let mut file = File::from(memfd);
    file.write_all(bytes)
        .map_err(|e| StoreError::Memory(format!("writing the object: {e}")))?;
    let seals = SealFlag::F_SEAL_WRITE
        | SealFlag::F_SEAL_SHRINK
        | SealFlag::F_SEAL_GROW
        | SealFlag::F_SEAL_SEAL;
    fcntl(file.as_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| StoreError::Memory(format!("sealing the object: {e}")))?;
    Ok(OwnedFd::from(file))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_same_bytes_are_stored_once_and_counted_per_put() {
        let mut store = Store::new("default", 1 << 20, 16);
        let (a, existed) = store.put(1, b"weights").unwrap();
        assert!(!existed);
        let (b, existed) = store.put(2, b"weights").unwrap();
        assert!(existed);
        assert_eq!(a, b);
        let stats = store.stats();
        assert_eq!(
            (stats.objects, stats.physical_bytes, stats.logical_bytes),
            (1, 7, 14)
        );
        assert_eq!(store.refs(&a), Some(2));
        store.client_gone(1);
        assert_eq!(store.refs(&a), Some(1));
        store.release(2, &a).unwrap();
        assert_eq!(store.refs(&a), Some(0));
        assert!(matches!(store.release(2, &a), Err(StoreError::Unknown(_))));
    }

    #[test]
    fn unreferenced_objects_go_first_and_referenced_ones_never() {
        let mut store = Store::new("small", 10, 16);
        let (old, _) = store.put(1, b"aaaa").unwrap();
        let (kept, _) = store.put(1, b"bbbb").unwrap();
        store.release(1, &old).unwrap();
        // 4 + 4 + 4 > 10: the unreferenced one goes.
        let (_, _) = store.put(1, b"cccc").unwrap();
        assert!(store.refs(&old).is_none());
        assert_eq!(store.refs(&kept), Some(1));
        assert_eq!(store.stats().evictions, 1);
        // Everything referenced: refused, saying what holds the space.
        let err = store.put(1, b"dddddd").unwrap_err();
        assert!(err.to_string().contains("8 held"), "{err}");
        assert_eq!(
            store.stats().objects,
            2,
            "nothing evicted for a put that cannot fit"
        );
    }

    #[test]
    fn the_memfd_is_sealed_against_change() {
        let mut store = Store::new("default", 1 << 20, 16);
        let (id, _) = store.put(1, b"sealed").unwrap();
        let (fd, size) = store.get(2, &id).unwrap();
        assert_eq!(size, 6);
        let mut file = File::from(fd);
        assert!(file.write_all(b"x").is_err(), "F_SEAL_WRITE");
        assert!(file.set_len(1).is_err(), "F_SEAL_SHRINK");
        assert!(file.set_len(100).is_err(), "F_SEAL_GROW");
    }

    #[test]
    fn a_client_holds_a_bounded_number_of_objects() {
        let mut store = Store::new("default", 1 << 20, 2);
        store.put(1, b"one").unwrap();
        store.put(1, b"two").unwrap();
        assert_eq!(store.put(1, b"three"), Err(StoreError::TooManyHeld(2)));
        assert!(
            store.put(1, b"one").is_ok(),
            "another reference to one it holds"
        );
        assert!(store.put(2, b"three").is_ok(), "another client");
    }

    #[test]
    fn ids_print_and_parse() {
        let id = ObjectId::of(b"x");
        assert_eq!(ObjectId::parse(&id.hex()), Some(id));
        assert_eq!(ObjectId::parse("zz"), None);
    }
}
