//! One pool: content-addressed objects (each in a sealed memfd, or compressed while no one
//! references it), writable segments being filled, references counted per client and
//! summed per agent against the pool's quota. When a put needs room, unreferenced objects
//! are compressed first and evicted least recently used after; a referenced one never is.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::PoolSpec;
use crate::memfd::{self, ReadMap};
use crate::object::{ClientId, ObjectId, StoreError};
use crate::snapshot::{AgentUse, PoolSnapshot};

/// Who asks: the client connection, the agent it belongs to, and how much one client may hold.
#[derive(Debug, Clone)]
pub struct Holder {
    pub client: ClientId,
    pub agent: String,
    pub max_held: usize,
}

/// An object's bytes: in its sealed memfd (what readers map), or compressed while cold.
enum Body {
    Shared(OwnedFd),
    Packed(Arc<[u8]>),
}

struct Object {
    body: Body,
    size: u64,
    refs: u64,
    /// A logical clock for least-recently-used order.
    last_used: u64,
    /// Since when no one references it (or it was last used).
    touched: Instant,
    /// Compression did not pay (under 10 %): not tried again.
    incompressible: bool,
}

impl Object {
    fn physical(&self) -> u64 {
        match &self.body {
            Body::Shared(_) => self.size,
            Body::Packed(bytes) => bytes.len() as u64,
        }
    }
}

/// A writable segment (`allocate`): counted against the pool and its agent until sealed
/// into an object or its client goes.
struct Segment {
    fd: OwnedFd,
    size: u64,
    client: ClientId,
}

/// What a get finds.
pub enum Found {
    /// The descriptor (a duplicate) and the size.
    Ready(OwnedFd, u64),
    /// Compressed with this codec: the caller decompresses it outside the lock and calls
    /// [`Pool::thaw`].
    Packed(Arc<[u8]>, u64, crate::Compression),
}

#[derive(Debug, Default, Clone)]
struct Counters {
    evictions: u64,
    evicted_bytes: u64,
    compressions: u64,
    compressed_from: u64,
    compressed_to: u64,
    thaws: u64,
    refused: u64,
}

pub struct Pool {
    pub spec: PoolSpec,
    objects: HashMap<ObjectId, Object>,
    segments: HashMap<u64, Segment>,
    held: HashMap<ClientId, HashMap<ObjectId, u64>>,
    agents: HashMap<ClientId, String>,
    next_segment: u64,
    clock: u64,
    counters: Counters,
}

/// Compression keeps an object packed only when it saves at least this share.
const WORTH_PACKING: f64 = 0.9;

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        Pool {
            spec,
            objects: HashMap::new(),
            segments: HashMap::new(),
            held: HashMap::new(),
            agents: HashMap::new(),
            next_segment: 1,
            clock: 0,
            counters: Counters::default(),
        }
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }

    /// Store `bytes` once per content and give the holder a reference. Returns the id and
    /// whether the content was there already. It hashes and copies in the caller's hold of
    /// the pool: the server hashes and copies first, then calls `put_sealed`.
    pub fn put_bytes(
        &mut self,
        who: &Holder,
        bytes: &[u8],
    ) -> Result<(ObjectId, bool), StoreError> {
        let id = ObjectId::of(bytes);
        if self.objects.contains_key(&id) {
            self.hold(who, id)?;
            return Ok((id, true));
        }
        self.admit(who, Some(&id), bytes.len() as u64)?;
        let fd = memfd::sealed_with(&memfd_name(&id), bytes).map_err(StoreError::Memory)?;
        self.insert(id, fd, bytes.len() as u64);
        self.hold(who, id)?;
        Ok((id, false))
    }

    /// Take a sealed memfd whose bytes hash to `id` (adopted from a client, or copied from
    /// its file): stored unless the content is there already.
    pub fn put_sealed(
        &mut self,
        who: &Holder,
        id: ObjectId,
        fd: OwnedFd,
        size: u64,
    ) -> Result<bool, StoreError> {
        if self.objects.contains_key(&id) {
            self.hold(who, id)?;
            return Ok(true);
        }
        self.admit(who, Some(&id), size)?;
        self.insert(id, fd, size);
        self.hold(who, id)?;
        Ok(false)
    }

    /// One more reference to an object the pool has (a put of bytes it holds already).
    pub fn put_sealed_existing(&mut self, who: &Holder, id: ObjectId) -> Result<(), StoreError> {
        if !self.objects.contains_key(&id) {
            return Err(StoreError::Unknown(id.hex()));
        }
        self.hold(who, id)
    }

    pub fn get(&mut self, who: &Holder, id: &ObjectId) -> Result<Found, StoreError> {
        let object = self
            .objects
            .get(id)
            .ok_or_else(|| StoreError::Unknown(id.hex()))?;
        let size = object.size;
        let fd = match &object.body {
            Body::Packed(bytes) => {
                return Ok(Found::Packed(bytes.clone(), size, self.spec.compression));
            }
            Body::Shared(fd) => fd
                .try_clone()
                .map_err(|e| StoreError::Memory(format!("duplicating the descriptor: {e}")))?,
        };
        self.hold(who, *id)?;
        Ok(Found::Ready(fd, size))
    }

    /// Put a decompressed copy (a sealed memfd) in place of the packed bytes, room allowing.
    pub fn thaw(&mut self, id: &ObjectId, fd: OwnedFd) -> Result<(), StoreError> {
        let Some(object) = self.objects.get(id) else {
            return Err(StoreError::Unknown(id.hex()));
        };
        let Body::Packed(bytes) = &object.body else {
            return Ok(()); // thawed by another reader meanwhile
        };
        let (size, packed) = (object.size, bytes.len() as u64);
        self.make_room(size.saturating_sub(packed), Some(id))?;
        if let Some(object) = self.objects.get_mut(id) {
            object.body = Body::Shared(fd);
            self.counters.thaws += 1;
        }
        Ok(())
    }

    /// Drop one reference the client holds on `id`.
    pub fn release(&mut self, client: ClientId, id: &ObjectId) -> Result<(), StoreError> {
        let held = self.held.entry(client).or_default();
        match held.get_mut(id) {
            Some(count) if *count > 1 => *count -= 1,
            Some(_) => {
                held.remove(id);
            }
            None => return Err(StoreError::Unknown(id.hex())),
        }
        self.unref(id, 1);
        Ok(())
    }

    /// A client went away (closed, crashed): what it held is released, its unsealed
    /// segments freed.
    pub fn client_gone(&mut self, client: ClientId) {
        for (id, count) in self.held.remove(&client).unwrap_or_default() {
            self.unref(&id, count);
        }
        self.segments.retain(|_, s| s.client != client);
        self.agents.remove(&client);
    }

    /// The client's agent is known now.
    pub fn rename(&mut self, client: ClientId, agent: &str) {
        if let Some(name) = self.agents.get_mut(&client) {
            *name = agent.to_string();
        }
    }

    /// A writable segment of `size` bytes (fixed: it can neither shrink nor grow), counted
    /// against the pool and the agent until sealed or released with its client.
    pub fn allocate(&mut self, who: &Holder, size: u64) -> Result<(u64, OwnedFd), StoreError> {
        let number = self.next_segment;
        self.admit(who, None, size)?;
        let file =
            memfd::create(&format!("sutazai-segment-{number}")).map_err(StoreError::Memory)?;
        file.set_len(size)
            .map_err(|e| StoreError::Memory(format!("sizing the segment: {e}")))?;
        let seals = nix::fcntl::SealFlag::F_SEAL_SHRINK | nix::fcntl::SealFlag::F_SEAL_GROW;
        nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_ADD_SEALS(seals))
            .map_err(|e| StoreError::Memory(format!("fixing the segment's size: {e}")))?;
        let fd = OwnedFd::from(file);
        let theirs = fd
            .try_clone()
            .map_err(|e| StoreError::Memory(format!("duplicating the descriptor: {e}")))?;
        self.next_segment += 1;
        self.segments.insert(
            number,
            Segment {
                fd,
                size,
                client: who.client,
            },
        );
        self.agents.insert(who.client, who.agent.clone());
        Ok((number, theirs))
    }

    /// Seal a segment the client filled into an object (deduplicated like a put), so that
    /// another agent can get it read-only. Fails, keeping the segment, while the client
    /// still maps it writable.
    pub fn seal_segment(
        &mut self,
        who: &Holder,
        number: u64,
    ) -> Result<(ObjectId, bool), StoreError> {
        let segment = match self.segments.get(&number) {
            Some(s) if s.client == who.client => s,
            _ => return Err(StoreError::NoSegment(number)),
        };
        memfd::seal(segment.fd.as_fd())
            .map_err(|why| StoreError::Invalid(format!("segment {number}: {why}")))?;
        let size = segment.size;
        let id = hash_fd(&segment.fd, size)?;
        let Some(segment) = self.segments.remove(&number) else {
            return Err(StoreError::NoSegment(number));
        };
        if self.objects.contains_key(&id) {
            self.hold(who, id)?;
            return Ok((id, true));
        }
        // Its bytes were counted as a segment; now they count as the object.
        self.insert(id, segment.fd, size);
        self.hold(who, id)?;
        Ok((id, false))
    }

    /// Unreferenced objects idle for `after`, still in memfds and worth trying: what the
    /// background compressor packs (outside the lock), with a duplicate descriptor each.
    pub fn cold(&self, now: Instant, after: Duration) -> Vec<(ObjectId, OwnedFd, u64)> {
        if self.spec.compression == crate::Compression::None {
            return Vec::new();
        }
        self.objects
            .iter()
            .filter(|(_, o)| o.refs == 0 && !o.incompressible && o.size > 0)
            .filter(|(_, o)| now.saturating_duration_since(o.touched) >= after)
            .filter_map(|(id, o)| match &o.body {
                Body::Shared(fd) => fd.try_clone().ok().map(|fd| (*id, fd, o.size)),
                Body::Packed(_) => None,
            })
            .collect()
    }

    /// Keep `packed` in place of the memfd, if the object is still unreferenced and packing
    /// saves enough.
    pub fn packed(&mut self, id: &ObjectId, packed: Vec<u8>) {
        let Some(object) = self.objects.get_mut(id) else {
            return;
        };
        if object.refs > 0 || !matches!(object.body, Body::Shared(_)) {
            return; // got meanwhile: its readers map the memfd
        }
        if packed.len() as f64 > object.size as f64 * WORTH_PACKING {
            object.incompressible = true;
            return;
        }
        self.counters.compressions += 1;
        self.counters.compressed_from += object.size;
        self.counters.compressed_to += packed.len() as u64;
        object.body = Body::Packed(packed.into());
    }

    /// References on `id` across every client.
    pub fn refs(&self, id: &ObjectId) -> Option<u64> {
        self.objects.get(id).map(|o| o.refs)
    }

    pub fn size(&self, id: &ObjectId) -> Option<u64> {
        self.objects.get(id).map(|o| o.size)
    }

    pub fn is_packed(&self, id: &ObjectId) -> bool {
        self.objects
            .get(id)
            .is_some_and(|o| matches!(o.body, Body::Packed(_)))
    }

    /// Count a refusal (the server's, for a put it refused before the pool saw it).
    pub fn refused(&mut self) {
        self.counters.refused += 1;
    }

    /// The refusal for a put larger than the whole pool.
    pub fn too_large(&mut self, size: u64) -> StoreError {
        self.counters.refused += 1;
        self.full(size)
    }

    pub fn snapshot(&self) -> (PoolSnapshot, Vec<AgentUse>) {
        let holders = self.holders();
        let mut pool = PoolSnapshot {
            name: self.spec.name.clone(),
            compression: self.spec.compression.name().to_string(),
            capacity_bytes: self.spec.capacity,
            agent_quota_bytes: self.spec.agent_quota,
            used_bytes: self.used(),
            objects: self.objects.len(),
            segments: self.segments.len(),
            segment_bytes: self.segments.values().map(|s| s.size).sum(),
            evictions: self.counters.evictions,
            evicted_bytes: self.counters.evicted_bytes,
            compressions: self.counters.compressions,
            compressed_from_bytes: self.counters.compressed_from,
            compressed_to_bytes: self.counters.compressed_to,
            thaws: self.counters.thaws,
            refused: self.counters.refused,
            ..PoolSnapshot::default()
        };
        for (id, object) in &self.objects {
            pool.physical_bytes += object.physical();
            let k = holders.get(id).copied().unwrap_or(0);
            pool.logical_bytes += object.size * k.max(1);
            if object.refs > 0 {
                pool.referenced_objects += 1;
            } else {
                pool.unreferenced_bytes += object.physical();
            }
            if let Body::Packed(bytes) = &object.body {
                pool.packed_objects += 1;
                pool.packed_logical_bytes += object.size;
                pool.packed_bytes += bytes.len() as u64;
            }
        }
        (pool, self.agent_uses(&holders))
    }

    /// Per agent: what it holds (as it maps it), and what sharing saves it: for each object
    /// held by k clients, (1 - 1/k) of its size per holding client, as PSS divides pages.
    fn agent_uses(&self, holders: &HashMap<ObjectId, u64>) -> Vec<AgentUse> {
        let mut uses: HashMap<&str, AgentUse> = HashMap::new();
        let pool = &self.spec.name;
        fn row<'a, 'b>(
            uses: &'a mut HashMap<&'b str, AgentUse>,
            agent: &'b str,
            pool: &str,
        ) -> &'a mut AgentUse {
            uses.entry(agent).or_insert_with(|| AgentUse {
                agent: agent.to_string(),
                pool: pool.to_string(),
                ..AgentUse::default()
            })
        }
        for (client, held) in self.held.iter().filter(|(_, held)| !held.is_empty()) {
            let Some(agent) = self.agents.get(client) else {
                continue;
            };
            let usage = row(&mut uses, agent, pool);
            for id in held.keys() {
                let (Some(object), Some(&k)) = (self.objects.get(id), holders.get(id)) else {
                    continue;
                };
                usage.objects += 1;
                usage.held_bytes += object.size;
                usage.saved_bytes += object.size - object.size / k.max(1);
            }
        }
        for segment in self.segments.values() {
            if let Some(agent) = self.agents.get(&segment.client) {
                let usage = row(&mut uses, agent, pool);
                usage.segments += 1;
                usage.segment_bytes += segment.size;
            }
        }
        let mut uses: Vec<AgentUse> = uses.into_values().collect();
        uses.sort_by(|a, b| a.agent.cmp(&b.agent));
        uses
    }

    /// How many clients hold each object.
    fn holders(&self) -> HashMap<ObjectId, u64> {
        let mut holders = HashMap::new();
        for held in self.held.values() {
            for id in held.keys() {
                *holders.entry(*id).or_insert(0) += 1;
            }
        }
        holders
    }

    fn insert(&mut self, id: ObjectId, fd: OwnedFd, size: u64) {
        self.clock += 1;
        self.objects.insert(
            id,
            Object {
                body: Body::Shared(fd),
                size,
                refs: 0,
                last_used: self.clock,
                touched: Instant::now(),
                incompressible: false,
            },
        );
    }

    fn hold(&mut self, who: &Holder, id: ObjectId) -> Result<(), StoreError> {
        self.check_count(who, Some(&id))?;
        let size = self.objects.get(&id).map_or(0, |o| o.size);
        self.check_quota(who, Some(&id), size)?;
        self.clock += 1;
        *self
            .held
            .entry(who.client)
            .or_default()
            .entry(id)
            .or_insert(0) += 1;
        self.agents.insert(who.client, who.agent.clone());
        if let Some(object) = self.objects.get_mut(&id) {
            object.refs += 1;
            object.last_used = self.clock;
            object.touched = Instant::now();
        }
        Ok(())
    }

    fn unref(&mut self, id: &ObjectId, count: u64) {
        if let Some(object) = self.objects.get_mut(id) {
            object.refs = object.refs.saturating_sub(count);
            if object.refs == 0 {
                object.touched = Instant::now();
            }
        }
    }

    /// Room, quota and the client's bound for `size` new bytes; nothing changes on a refusal.
    fn admit(&mut self, who: &Holder, id: Option<&ObjectId>, size: u64) -> Result<(), StoreError> {
        let checked = self
            .check_count(who, None)
            .and_then(|()| self.check_quota(who, id, size))
            .and_then(|()| self.make_room(size, None));
        if checked.is_err() {
            self.counters.refused += 1;
        }
        checked
    }

    fn check_count(&self, who: &Holder, id: Option<&ObjectId>) -> Result<(), StoreError> {
        let held = self.held.get(&who.client);
        if id.is_some_and(|id| held.is_some_and(|h| h.contains_key(id))) {
            return Ok(()); // one more reference to one it holds
        }
        let count = held.map_or(0, |h| h.len())
            + self
                .segments
                .values()
                .filter(|s| s.client == who.client)
                .count();
        if count >= who.max_held {
            return Err(StoreError::TooManyHeld(count));
        }
        Ok(())
    }

    /// An agent may hold at most the quota (objects it references, counted once each,
    /// plus its segments).
    fn check_quota(
        &self,
        who: &Holder,
        id: Option<&ObjectId>,
        size: u64,
    ) -> Result<(), StoreError> {
        let quota = self.spec.agent_quota;
        if quota == 0 {
            return Ok(());
        }
        let clients: Vec<ClientId> = self
            .agents
            .iter()
            .filter(|(_, agent)| **agent == who.agent)
            .map(|(client, _)| *client)
            .chain(std::iter::once(who.client))
            .collect();
        let mut ids = HashSet::new();
        for client in &clients {
            ids.extend(self.held.get(client).into_iter().flat_map(|h| h.keys()));
        }
        if id.is_some_and(|id| ids.contains(id)) {
            return Ok(());
        }
        let held: u64 = ids
            .iter()
            .filter_map(|id| self.objects.get(id))
            .map(|o| o.size)
            .sum::<u64>()
            + self
                .segments
                .values()
                .filter(|s| clients.contains(&s.client))
                .map(|s| s.size)
                .sum::<u64>();
        if held + size > quota {
            return Err(StoreError::Quota {
                agent: who.agent.clone(),
                pool: self.spec.name.clone(),
                held,
                size,
                quota,
            });
        }
        Ok(())
    }

    fn used(&self) -> u64 {
        self.objects.values().map(Object::physical).sum::<u64>()
            + self.segments.values().map(|s| s.size).sum::<u64>()
    }

    /// What no eviction can free: referenced objects and segments.
    fn pinned(&self) -> (u64, usize) {
        let objects = self.objects.values().filter(|o| o.refs > 0);
        let bytes = objects.clone().map(Object::physical).sum::<u64>()
            + self.segments.values().map(|s| s.size).sum::<u64>();
        (bytes, objects.count() + self.segments.len())
    }

    fn full(&self, size: u64) -> StoreError {
        let (held, objects) = self.pinned();
        StoreError::Full {
            pool: self.spec.name.clone(),
            size,
            capacity: self.spec.capacity,
            held,
            objects,
        }
    }

    /// Compress, then evict, unreferenced objects (least recently used first) until `size`
    /// more bytes fit; nothing changes when they cannot fit even then. `keep` is never
    /// evicted (the object being thawed).
    fn make_room(&mut self, size: u64, keep: Option<&ObjectId>) -> Result<(), StoreError> {
        let capacity = self.spec.capacity;
        if self.used() + size <= capacity {
            return Ok(());
        }
        let keep_bytes = keep
            .and_then(|id| self.objects.get(id))
            .map_or(0, Object::physical);
        if self.pinned().0 + keep_bytes + size > capacity {
            return Err(self.full(size));
        }
        let mut idle: Vec<(u64, ObjectId)> = self
            .objects
            .iter()
            .filter(|(id, o)| o.refs == 0 && Some(*id) != keep)
            .map(|(id, o)| (o.last_used, *id))
            .collect();
        idle.sort_unstable();
        // Compressing first keeps the bytes; eviction loses them.
        for (_, id) in &idle {
            if self.used() + size <= capacity {
                return Ok(());
            }
            self.pack_now(id);
        }
        for (_, id) in idle {
            if self.used() + size <= capacity {
                break;
            }
            if let Some(object) = self.objects.remove(&id) {
                self.counters.evictions += 1;
                self.counters.evicted_bytes += object.size;
            }
        }
        Ok(())
    }

    /// Compress an unreferenced object in place, now (the pool is full).
    fn pack_now(&mut self, id: &ObjectId) {
        let codec = self.spec.compression;
        let Some(object) = self.objects.get(id) else {
            return;
        };
        let Body::Shared(fd) = &object.body else {
            return;
        };
        if object.incompressible {
            return;
        }
        let Ok(size) = usize::try_from(object.size) else {
            return;
        };
        let packed = match ReadMap::new(fd.as_fd(), size) {
            Ok(map) => codec.compress(map.as_slice()),
            Err(e) => {
                tracing::warn!(%e, "pools: mapping an object to compress it");
                None
            }
        };
        if let Some(packed) = packed {
            self.packed(id, packed);
        }
    }
}

/// The name a memfd shows in /proc/<pid>/maps: `/memfd:sutazai-pool-<id prefix>`.
pub fn memfd_name(id: &ObjectId) -> String {
    format!("sutazai-pool-{}", &id.hex()[..16])
}

/// The BLAKE3 id of a sealed memfd's `size` bytes, read through a map (no copy).
pub fn hash_fd(fd: &OwnedFd, size: u64) -> Result<ObjectId, StoreError> {
    let len = usize::try_from(size).map_err(|_| StoreError::Invalid("object too large".into()))?;
    let map = ReadMap::new(fd.as_fd(), len)
        .map_err(|e| StoreError::Memory(format!("mapping the object to hash it: {e}")))?;
    Ok(ObjectId::of(map.as_slice()))
}

#[cfg(test)]
mod tests;
