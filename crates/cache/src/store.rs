//! `Cache`: the three levels behind one thread-safe API, sharded by key.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use super::agents::AgentNames;
use super::disk::{self, DiskLevel, DiskShared, Fetched};
use super::hits::HitLog;
use super::keys::{
    SharedKey, Visible, hash_bytes, namespaced_hash, shard_of, split_stored, stored_key,
};
use super::l3file::MAX_KEY_LEN;
use super::level::{MemLevel, Stored};
use super::policy::Priority;
use super::shard::{Got, L3, Shard, Skip};
use super::stats::{CacheSnapshot, Counts, Extra, History, Level, LevelUsage, ShardCounts, Totals};
use super::tally::Tallies;
use crate::config::CacheConfig;
use crate::policy::PolicyName;

/// Longest agent name; a private entry's key carries it.
pub const MAX_AGENT_LEN: usize = 128;
/// Each shard gets at least this much L1 (a shard's capacity bounds the largest value a
/// level takes, so shards are few on a small cache and one on a tiny one).
const SHARD_MIN_L1: u64 = 8 << 20;
const MAX_SHARDS: u64 = 32;
/// Agents listed in a snapshot (the busiest).
const AGENTS_SHOWN: usize = 50;

/// Supplies the value of a key the cache does not hold, for prefetch (see `Cache::prefetch`).
pub type Loader = Arc<dyn Fn(&[u8]) -> Option<Bytes> + Send + Sync>;

/// Told of every get after the shard's lock is released (the prefetcher learns from it and
/// may call `Cache::prefetch` from inside `on_get`).
pub trait GetObserver: Send + Sync {
    fn on_get(&self, cache: &Cache, get: &Get<'_>);
}

/// One get, as an observer is told of it.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    pub key: &'a [u8],
    /// The cache's hash of `key`, so an observer need not hash it again.
    pub key_hash: u64,
    pub agent: &'a str,
    /// The agent's id in this cache, unique per name up to the 1024th; the names past it
    /// share one (as they share their counters).
    pub agent_id: u32,
    /// Where the key was found.
    pub found: Option<Level>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CacheError {
    #[error("agent name must be 1 to {MAX_AGENT_LEN} bytes; got {0} bytes")]
    BadAgent(usize),
    #[error("key of {0} bytes is longer than the limit of {MAX_KEY_LEN} bytes")]
    KeyTooLong(usize),
    #[error("value of {len} bytes was not stored: {reasons}")]
    Refused { len: usize, reasons: String },
    #[error("a {0} is already registered with this cache")]
    AlreadySet(&'static str),
}

/// The agents' cache: L1 (memory), L2 (lz4 in memory), L3 (disk). Thread-safe; share it in
/// an `Arc`.
pub struct Cache {
    /// An L1 hit needs only a shard's read lock (see `hits`); everything else its write lock.
    shards: Box<[RwLock<Shard>]>,
    agents: AgentNames,
    /// L1 hits counted per thread instead of logged (see `tally`).
    tallies: Tallies,
    config: CacheConfig,
    disk: Option<Arc<DiskShared>>,
    history: Mutex<History>,
    /// Each shard's figures as the statistics last read them, for a tick that finds the
    /// shard held past `SHARD_WAIT` (a disk read that stalls holds it).
    last_read: Box<[Mutex<Option<ShardFigures>>]>,
    loader: OnceLock<Loader>,
    observer: OnceLock<Arc<dyn GetObserver>>,
}

/// One shard's counters and level sizes, as the statistics read them, and when.
type ShardFigures = (ShardCounts, [LevelUsage; 3], std::time::Instant);

/// A shard unreadable, or an L3 read unfinished, this long is reported (L3 degraded):
/// shorter, it is only busy.
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// L3 reads one get may make when the entry is rewritten while each is read.
const MAX_FETCHES: usize = 3;

/// How long the statistics wait for one shard before taking its last figures instead: the
/// engine's tick must never wait on a stuck disk read.
const SHARD_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.shards.len())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Shards for a configuration: one per `SHARD_MIN_L1` of L1 (or of the larger levels when
/// L1 is off), at most four per CPU (more only adds lock-free memory, not parallelism) and
/// at most `MAX_SHARDS`.
pub fn default_shards(config: &CacheConfig) -> usize {
    let base = config
        .l1_bytes
        .max(config.l2_bytes / 4)
        .max(config.l3_bytes / 16);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    (base / SHARD_MIN_L1).min(cpus * 4).clamp(1, MAX_SHARDS) as usize
}

impl Cache {
    /// A cache as configured, its L3 in `l3_dir` (entries found there are taken back).
    pub fn new(config: &CacheConfig, l3_dir: &Path) -> Result<Cache, CacheError> {
        Cache::with_shards(config, l3_dir, default_shards(config))
    }

    /// As `new`, with a chosen number of shards (each level's capacity is divided among
    /// them, and a shard's part bounds the largest entry a level takes).
    pub fn with_shards(
        config: &CacheConfig,
        l3_dir: &Path,
        shards: usize,
    ) -> Result<Cache, CacheError> {
        let shards = shards.max(1);
        let disk = (config.l3_bytes > 0).then(|| Arc::new(DiskShared::new(l3_dir.to_path_buf())));
        let mut built = Vec::with_capacity(shards);
        for _ in 0..shards {
            built.push(new_shard(config, shards as u64, disk.as_ref())?);
        }
        if let Some(disk) = &disk {
            adopt_disk(disk, &mut built);
        }
        Ok(Cache {
            last_read: (0..shards).map(|_| Mutex::new(None)).collect(),
            shards: built.into_iter().map(RwLock::new).collect(),
            agents: AgentNames::new(),
            tallies: Tallies::new(),
            config: config.clone(),
            disk,
            history: Mutex::new(History::default()),
            loader: OnceLock::new(),
            observer: OnceLock::new(),
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a key, by the hash of the caller's key.
    fn shard(&self, key_hash: u64) -> &RwLock<Shard> {
        &self.shards[shard_of(key_hash, self.shards.len())]
    }

    /// The shard of a key for writing, its logged hits replayed first (so the policy sees
    /// every hit before the write, in order: see `hits`).
    fn lock(&self, key_hash: u64) -> Writing<'_> {
        write_replayed(self.shard(key_hash))
    }

    /// The shard of a key for an L1 hit or a look that changes nothing.
    fn read(&self, key_hash: u64) -> RwLockReadGuard<'_, Shard> {
        // A panic while holding a shard cannot leave it inconsistent in a way a reader
        // could see as another key's value (every entry carries its full key), so a
        // poisoned lock is taken over rather than failing every later call.
        self.shard(key_hash)
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Store `value` under `key`, shared with every agent or private to `agent`. Returns the
    /// level it went to: the highest whose share can hold it and whose policy admits it.
    pub fn put(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        agent: &str,
        priority: Priority,
        shared: bool,
    ) -> Result<Level, CacheError> {
        self.store(key, value.into(), agent, priority, shared, false)
    }

    fn store(
        &self,
        key: &[u8],
        value: Bytes,
        agent: &str,
        priority: Priority,
        shared: bool,
        prefetched: bool,
    ) -> Result<Level, CacheError> {
        check_agent(agent)?;
        if key.len() > MAX_KEY_LEN {
            return Err(CacheError::KeyTooLong(key.len()));
        }
        let len = value.len();
        let key_hash = hash_bytes(key);
        let private_to = (!shared).then_some(agent);
        let stored = stored_key(key, private_to);
        let hash = namespaced_hash(key_hash, private_to);
        let entry = Stored {
            key: stored.into_boxed_slice(),
            raw_len: len,
            data: value,
            compressed: false,
            priority,
            prefetched,
        };
        let mut shard = self.lock(key_hash);
        let placed = shard.put(hash, entry);
        let refused = placed.is_err();
        let count = |c: &mut Counts| {
            c.puts += 1;
            c.refused += u64::from(refused);
        };
        let agent_id = self.agents.id(agent_label(agent));
        count(&mut shard.counts.total);
        count(shard.counts.agents.of(agent_id));
        if prefetched && !refused {
            shard.counts.prefetch.prefetched += 1;
        }
        drop(shard);
        placed.map_err(|skipped| CacheError::Refused {
            len,
            reasons: self.describe(&skipped),
        })
    }

    fn describe(&self, skipped: &[(Level, Skip)]) -> String {
        let n = self.shards.len() as u64;
        let share = |bytes: u64| bytes / n;
        let largest = [
            share(self.config.l1_bytes),
            share(self.config.l2_bytes),
            share(self.config.l3_bytes),
        ];
        skipped
            .iter()
            .map(|(level, why)| match why {
                Skip::Off => format!("{level} is off"),
                Skip::TooLarge => format!(
                    "{level} holds entries of at most {} bytes{}",
                    largest[level.index()],
                    if *level == Level::L2 {
                        " compressed"
                    } else {
                        ""
                    }
                ),
                Skip::NotAdmitted => format!("{level}'s policy did not admit it"),
                Skip::Disabled(why) => format!("{level} is disabled ({why})"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value under `key` as `agent` sees it (its private entry first, else the shared
    /// one) and the level it was found in. A hit below L1 is promoted if the policy allows.
    pub fn get(&self, key: &[u8], agent: &str) -> Option<(Bytes, Level)> {
        let key_hash = hash_bytes(key);
        let agent_id = self.agents.id(agent_label(agent));
        let found = match self.read_l1(key, key_hash, agent, agent_id) {
            Some(value) => Some((value, Level::L1)),
            None => self.get_locked(key, key_hash, agent, agent_id),
        };
        if let Some(observer) = self.observer.get() {
            let get = Get {
                key,
                key_hash,
                agent,
                agent_id,
                found: found.as_ref().map(|(_, level)| *level),
            };
            observer.on_get(self, &get);
        }
        found
    }

    /// The L1 hit path, under the shard's read lock: the hit is logged for the policy and
    /// the counters (`hits`), or only counted in this thread's tally once the policy sees a
    /// sample (`tally`). `None` on an L1 miss or a full log.
    fn read_l1(&self, key: &[u8], key_hash: u64, agent: &str, agent_id: u32) -> Option<Bytes> {
        let shard = self.read(key_hash);
        let (stored, hash) = visible_key(&shard, key, key_hash, agent);
        shard.read_l1(hash, &stored, agent_id, &self.tallies)
    }

    /// Every other get, under the write lock: L1 misses, promotions from L2 and L3 (an L3
    /// file is read with the lock released). A key rewritten during every read is a miss.
    fn get_locked(
        &self,
        key: &[u8],
        key_hash: u64,
        agent: &str,
        agent_id: u32,
    ) -> Option<(Bytes, Level)> {
        self.with_fetches(key_hash, |shard, fetched| {
            let (stored, hash) = visible_key(shard, key, key_hash, agent);
            let found = match fetched {
                None => shard.get(hash, &stored),
                Some(fetched) => shard.get_fetched(hash, &stored, fetched),
            };
            if let Got::Done(found) = &found {
                let count = |c: &mut Counts| {
                    c.gets += 1;
                    c.hits += u64::from(found.is_some());
                    c.misses += u64::from(found.is_none());
                };
                count(&mut shard.counts.total);
                count(shard.counts.agents.of(agent_id));
            }
            found
        })
        .flatten()
    }

    /// Run `step` under the shard's write lock. Each time it asks for an L3 file, the file
    /// is read with the lock released, so a hung disk stalls this caller only, and `step`
    /// runs again with it. `None` if it still asks after `MAX_FETCHES` reads.
    fn with_fetches<T>(
        &self,
        key_hash: u64,
        mut step: impl FnMut(&mut Shard, Option<Fetched>) -> Got<T>,
    ) -> Option<T> {
        let mut fetched = None;
        for _ in 0..MAX_FETCHES {
            let ticket = match step(&mut self.lock(key_hash), fetched.take()) {
                Got::Done(done) => return Some(done),
                Got::Fetch(ticket) => ticket,
            };
            // A ticket comes only from an L3, so the disk is there.
            fetched = Some(self.disk.as_ref()?.fetch(ticket));
        }
        None
    }

    /// Where `key` is for `agent`, without counting a lookup or moving anything.
    pub fn contains(&self, key: &[u8], agent: &str) -> Option<Level> {
        let key_hash = hash_bytes(key);
        let shard = self.read(key_hash);
        let (stored, hash) = visible_key(&shard, key, key_hash, agent);
        shard.locate(hash, &stored)
    }

    /// Remove what `get(key, agent)` would return (the agent's private entry, else the
    /// shared one); true if something was removed.
    pub fn delete(&self, key: &[u8], agent: &str) -> bool {
        let key_hash = hash_bytes(key);
        let mut shard = self.lock(key_hash);
        let (stored, hash) = visible_key(&shard, key, key_hash, agent);
        let removed = shard.remove(hash, &stored);
        shard.counts.total.deletes += 1;
        shard
            .counts
            .agents
            .of(self.agents.id(agent_label(agent)))
            .deletes += 1;
        removed
    }

    /// Register where prefetched values come from (once).
    pub fn set_loader(&self, loader: Loader) -> Result<(), CacheError> {
        self.loader
            .set(loader)
            .map_err(|_| CacheError::AlreadySet("loader"))
    }

    /// Register the observer every get is reported to (once): the prefetcher.
    pub fn set_observer(&self, observer: Arc<dyn GetObserver>) -> Result<(), CacheError> {
        self.observer
            .set(observer)
            .map_err(|_| CacheError::AlreadySet("get observer"))
    }

    /// Make a shared `key` ready for a get that is predicted: promote it from L2 or L3, or
    /// else load it through the loader (if one is registered) at low priority, so a wrong
    /// guess cannot push out proven entries. Returns where the key is now.
    pub fn prefetch(&self, key: &[u8], agent: &str) -> Option<Level> {
        let stored = SharedKey(key);
        let hash = hash_bytes(key);
        // `Some(level)` when the key is cached (the level it is in now, if still cached).
        let cached = self.with_fetches(hash, |shard, fetched| match fetched {
            None if shard.locate(hash, &stored).is_none() => Got::Done(None),
            fetched => match shard.prefetch_promote(hash, &stored, fetched) {
                Got::Done(level) => Got::Done(Some(level)),
                Got::Fetch(ticket) => Got::Fetch(ticket),
            },
        });
        match cached {
            Some(None) => {}
            Some(Some(level)) => return level,
            None => return None,
        }
        // Loaded outside the lock: a loader may be slow. A put meanwhile wins below.
        let value = (self.loader.get()?)(key)?;
        if let Some(level) = self.contains(key, agent) {
            return Some(level);
        }
        self.store(key, value, agent_label(agent), Priority::Low, true, true)
            .ok()
    }

    /// The cache's statistics as of now.
    pub fn snapshot(&self) -> CacheSnapshot {
        let totals = self.totals();
        let history = self.history_lock().points();
        self.finish(totals, history)
    }

    /// The statistics, and one more hit-ratio point for the sparkline (the engine calls
    /// this once per tick).
    pub fn tick(&self) -> CacheSnapshot {
        let totals = self.totals();
        let history = {
            let mut history = self.history_lock();
            history.record(&totals.0.total);
            history.points()
        };
        self.finish(totals, history)
    }

    fn history_lock(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The sum of every shard, and how many were held too long to read (their figures are
    /// from the last tick they were free).
    fn totals(&self) -> (Totals, usize) {
        let mut totals = Totals::default();
        let mut stalled = 0;
        // Held until the names are read below: the per-agent books are read in place.
        let mut lasts = Vec::with_capacity(self.shards.len());
        for (shard, last) in self.shards.iter().zip(self.last_read.iter()) {
            let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
            // The write lock: the counts are exact only once the logged hits are replayed.
            match try_write_replayed(shard, SHARD_WAIT) {
                Some(mut shard) => {
                    let usage = shard.usage();
                    *last = Some((shard.counts.clone(), usage, std::time::Instant::now()));
                }
                None => {
                    let read_at = last.as_ref().map(|(_, _, at)| *at);
                    stalled += usize::from(read_at.is_none_or(|at| at.elapsed() > STALLED_AFTER));
                }
            }
            if let Some((counts, usage, _)) = last.as_ref() {
                totals.add_usage(counts, usage);
            }
            lasts.push(last);
        }
        let unlogged = self.tallies.hits_by_agent();
        // Read after every shard and tally: an agent first seen while they were being read
        // was interned before it was counted, so its name is here too.
        let names = self.agents.names();
        for (counts, _, _) in lasts.iter().filter_map(|last| last.as_ref()) {
            totals.add_agents(&counts.agents, &names);
        }
        totals.add_unlogged_hits(&unlogged, &names);
        (totals, stalled)
    }

    fn finish(&self, (totals, stalled): (Totals, usize), history: Vec<f32>) -> CacheSnapshot {
        let hung_reads = self
            .disk
            .as_ref()
            .map_or(0, |d| d.stalled_reads(STALLED_AFTER));
        let l3_disabled = match (stalled, hung_reads) {
            (0, 0) => self.disk.as_ref().and_then(|d| d.disabled()),
            (0, n) => Some(format!(
                "degraded: {n} disk reads unfinished after {} s (a stalled disk?)",
                STALLED_AFTER.as_secs()
            )),
            (n, _) => Some(format!(
                "degraded: {n} of {} shards held for over {} s (a stalled disk?); \
                 their figures are from the last tick they were free",
                self.shards.len(),
                STALLED_AFTER.as_secs()
            )),
        };
        totals.into_snapshot(Extra {
            shards: self.shards.len(),
            disabled: [None, None, l3_disabled],
            history,
            prefetch_depth: self.config.prefetch_depth,
            agents_shown: AGENTS_SHOWN,
        })
    }

    /// Why L3 takes no new entries, if it does not.
    pub fn l3_disabled(&self) -> Option<String> {
        self.disk.as_ref().and_then(|d| d.disabled())
    }
}

/// A shard's write lock, its logged hits replayed first (see `hits`).
/// As `write_replayed`, but giving up after `wait` (spinning: the locks are normally held for
/// microseconds, and this runs on the engine's tick, which must not sleep on a stuck one).
fn try_write_replayed(shard: &RwLock<Shard>, wait: std::time::Duration) -> Option<Writing<'_>> {
    let started = std::time::Instant::now();
    loop {
        let guard = match shard.try_write() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if started.elapsed() < wait => {
                std::thread::yield_now();
                continue;
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        return Some(replayed(guard));
    }
}

fn write_replayed(shard: &RwLock<Shard>) -> Writing<'_> {
    // Poison is taken over, as in `Cache::read`.
    replayed(shard.write().unwrap_or_else(|p| p.into_inner()))
}

fn replayed(mut shard: RwLockWriteGuard<'_, Shard>) -> Writing<'_> {
    shard.replay_hits();
    Writing(shard)
}

/// A shard held for writing. On release it notes L3's private entries for readers, which
/// cannot look into L3 cheaply (`Shard::l3_private`).
struct Writing<'a>(RwLockWriteGuard<'a, Shard>);

impl std::ops::Deref for Writing<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.0
    }
}

impl std::ops::DerefMut for Writing<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.0
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.note_l3_private();
    }
}

fn check_agent(agent: &str) -> Result<(), CacheError> {
    if agent.is_empty() || agent.len() > MAX_AGENT_LEN {
        return Err(CacheError::BadAgent(agent.len()));
    }
    Ok(())
}

/// The name an agent's counters go under (a get with an over-long name is still counted).
fn agent_label(agent: &str) -> &str {
    if agent.is_empty() {
        return "anonymous";
    }
    let mut end = agent.len().min(MAX_AGENT_LEN);
    while !agent.is_char_boundary(end) {
        end -= 1;
    }
    &agent[..end]
}

/// The stored key `agent` sees under `key`: its private entry if it has one, else the
/// shared one.
fn visible_key<'a>(shard: &Shard, key: &'a [u8], key_hash: u64, agent: &str) -> (Visible<'a>, u64) {
    if shard.private_entries() > 0 && check_agent(agent).is_ok() {
        let private = stored_key(key, Some(agent));
        let hash = namespaced_hash(key_hash, Some(agent));
        if shard.holds_private(hash, private.as_slice()) {
            return (Visible::Private(private), hash);
        }
    }
    (Visible::Shared(SharedKey(key)), key_hash)
}

fn new_shard(
    config: &CacheConfig,
    shards: u64,
    disk: Option<&Arc<DiskShared>>,
) -> Result<Shard, CacheError> {
    let policy = |name: PolicyName, bytes: u64| name.build(bytes / shards);
    let l1 = match config.l1_bytes {
        0 => None,
        bytes => Some(MemLevel::new(policy(config.l1_policy, bytes), false)),
    };
    let l2 = match config.l2_bytes {
        0 => None,
        bytes => Some(MemLevel::new(policy(config.l2_policy, bytes), true)),
    };
    let l3 = disk.map(|disk| {
        L3::new(DiskLevel::new(
            disk.clone(),
            policy(config.l3_policy, config.l3_bytes),
        ))
    });
    Ok(Shard {
        l1,
        l2,
        l3,
        l3_private: 0,
        counts: ShardCounts::default(),
        hits: HitLog::default(),
    })
}

/// Take back the entries an earlier run left in L3, each into its key's shard.
fn adopt_disk(disk: &DiskShared, shards: &mut [Shard]) {
    let (found, dropped) = match disk::scan(disk) {
        Ok(found) => found,
        Err(reason) => {
            disk.disable(reason);
            return;
        }
    };
    let n = shards.len();
    if let Some(first) = shards.first_mut() {
        first.counts.levels[2].dropped_corrupt += dropped;
    }
    let mut adopted = 0usize;
    for item in found {
        let Some((key, _)) = split_stored(&item.entry.key) else {
            continue;
        };
        let i = shard_of(hash_bytes(key), n);
        if let Some(l3) = shards.get_mut(i).and_then(|s| s.l3.as_mut()) {
            l3.get_mut().adopt(item.hash, item.entry);
            adopted += 1;
        }
    }
    for shard in shards.iter_mut() {
        shard.note_l3_private();
    }
    if adopted > 0 {
        tracing::info!(target: "sutazai_top::cache", entries = adopted,
            dir = %disk.dir().display(), "L3 entries found from an earlier run");
    }
}

/// The engine's cache as configured (`None` when `[cache] enabled = false`, or if it cannot
/// be built, which is logged). L3 lives in `[cache] dir`, else in `default_dir`.
pub fn open_for(cache: &CacheConfig, default_dir: &Path) -> Option<Arc<Cache>> {
    if !cache.enabled {
        return None;
    }
    let dir = if cache.dir.as_os_str().is_empty() {
        default_dir.to_path_buf()
    } else {
        cache.dir.clone()
    };
    match Cache::new(cache, &dir) {
        Ok(built) => {
            if let Some(reason) = built.l3_disabled() {
                tracing::warn!(target: "sutazai_top::cache", %reason, "L3 is disabled");
            }
            if cache.prefetch_depth > 0 {
                let depth = cache.prefetch_depth as usize;
                let prefetcher = super::prefetch::CachePrefetcher::with_depth(depth);
                // A fresh cache has no observer yet, so this cannot fail.
                let _ = built.set_observer(Arc::new(prefetcher));
            }
            Some(Arc::new(built))
        }
        Err(err) => {
            tracing::error!(target: "sutazai_top::cache", %err, "the cache is off");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn l1_only(policy: &str, l1_bytes: u64, dir: &Path) -> Cache {
        let config = CacheConfig {
            l1_bytes,
            l2_bytes: 0,
            l3_bytes: 0,
            l1_policy: policy.parse().expect("a known policy"),
            ..CacheConfig::default()
        };
        Cache::with_shards(&config, dir, 1).expect("cache")
    }

    #[test]
    fn a_logged_hit_reaches_the_policy_before_the_next_write() {
        // LRU holding two entries: a hit on `a` served under the read lock must make `b` the
        // one a third put evicts, exactly as when the hit moved `a` at once.
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = l1_only("lru", 2 * (1 + 1 + 8), dir.path());
        for key in [b"a", b"b"] {
            cache
                .put(key, vec![0u8; 8], "x", Priority::Normal, true)
                .expect("put");
        }
        assert_eq!(cache.get(b"a", "x").map(|(_, l)| l), Some(Level::L1));
        cache
            .put(b"c", vec![0u8; 8], "x", Priority::Normal, true)
            .expect("put");
        assert!(
            cache.contains(b"a", "x").is_some(),
            "a was used last but one"
        );
        assert!(
            cache.contains(b"b", "x").is_none(),
            "b was the least recently used"
        );
    }

    #[test]
    fn counts_are_exact_across_full_logs_and_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = l1_only("adaptive", 1 << 20, dir.path());
        for i in 0..64u32 {
            cache
                .put(&i.to_le_bytes(), vec![1u8; 16], "w", Priority::Normal, true)
                .expect("put");
        }
        // More gets than a log holds, from two threads and two agents each.
        let per_thread = 5_000u64;
        std::thread::scope(|scope| {
            for t in 0..2u32 {
                let cache = &cache;
                scope.spawn(move || {
                    for n in 0..per_thread as u32 {
                        let agent = if n % 3 == 0 { "r1" } else { "r2" };
                        let key = ((n * 7 + t) % 64).to_le_bytes();
                        let (value, level) = cache.get(&key, agent).expect("resident");
                        assert_eq!((value.len(), level), (16, Level::L1));
                    }
                });
            }
        });
        assert!(
            cache.tallies.hits_by_agent().iter().sum::<u64>() > 0,
            "the gets went past the exact hits, so most were counted in the tallies"
        );
        assert!(cache.get(b"absent", "r1").is_none());
        let snap = cache.snapshot();
        assert_eq!(snap.total.gets, 2 * per_thread + 1);
        assert_eq!(snap.total.hits, 2 * per_thread);
        let l1 = snap.level(Level::L1).expect("l1");
        assert_eq!((l1.hits, l1.misses), (2 * per_thread, 1));
        let gets = |name: &str| {
            snap.agents
                .iter()
                .find(|a| a.agent == name)
                .map(|a| a.counts.gets)
        };
        let r1 = 2 * per_thread.div_ceil(3);
        assert_eq!(gets("r1"), Some(r1 + 1));
        assert_eq!(gets("r2"), Some(2 * per_thread - r1));
        assert_eq!(gets("w"), Some(0), "w only put");
    }

    #[test]
    fn a_policy_shown_a_sample_of_the_hits_still_keeps_the_hot_keys() {
        // LRU holding 200 entries. Keys 100..200 are hit first, within the hits shown one
        // by one; then keys 0..100, 2000 times each, long after the level began to show its
        // policy only a sample. 100 new keys must push out 100..200, the least recently
        // used: were the sampled hits lost, 0..100 would be the LRU end and go instead.
        let dir = tempfile::tempdir().expect("tempdir");
        let weight = (1 + 4 + 16) as u64;
        let cache = l1_only("lru", 200 * weight, dir.path());
        let put = |i: u32| {
            cache
                .put(&i.to_le_bytes(), vec![0u8; 16], "x", Priority::Normal, true)
                .expect("put");
        };
        (0..200).for_each(put);
        for _ in 0..11 {
            for i in 100..200u32 {
                assert!(cache.get(&i.to_le_bytes(), "x").is_some());
            }
        }
        for _ in 0..2000 {
            for i in 0..100u32 {
                assert!(cache.get(&i.to_le_bytes(), "x").is_some());
            }
        }
        (1000..1100).for_each(put);
        let kept = |range: std::ops::Range<u32>| {
            range
                .filter(|i| cache.contains(&i.to_le_bytes(), "x").is_some())
                .count()
        };
        assert_eq!(kept(0..100), 100, "the keys hit while sampling stayed");
        assert_eq!(kept(100..200), 0, "the keys hit before went");
        assert_eq!(cache.snapshot().total.hits, 11 * 100 + 2000 * 100);
    }

    #[test]
    fn only_a_victim_choice_ends_a_sampled_stretch() {
        // Nine gets and one put, over and over: where the puts overwrite in a level with
        // room, the policy chooses nothing and the gets go on sampled (most counted in the
        // tallies); where every put evicts, every hit is shown (none in the tallies).
        let weight = (1 + 4 + 16) as u64;
        let unlogged = |room: u64, new_keys: bool| {
            let dir = tempfile::tempdir().expect("tempdir");
            let cache = l1_only("lru", room * weight, dir.path());
            let put = |i: u32| {
                cache
                    .put(&i.to_le_bytes(), vec![0u8; 16], "x", Priority::Normal, true)
                    .expect("put");
            };
            (0..100).for_each(put);
            for round in 0..3000u32 {
                for n in 0..9 {
                    let i = if new_keys {
                        round + 100 - 1 - n % 50
                    } else {
                        n * 11
                    };
                    assert!(cache.get(&i.to_le_bytes(), "x").is_some(), "{round} {i}");
                }
                put(if new_keys { round + 100 } else { round % 100 });
            }
            cache.tallies.hits_by_agent().iter().sum::<u64>()
        };
        assert!(unlogged(1000, false) > 10_000, "overwrites with room");
        assert_eq!(unlogged(100, true), 0, "an eviction per put");
    }

    #[test]
    fn a_hit_on_a_low_entry_reaches_the_policy_while_it_sees_a_sample() {
        // LRU holding 200 entries, the oldest one Low (a guess: evicted first among the
        // coldest). Past the exact hits, five hits on it must still reach the policy (which
        // makes it Normal and the most recent), or the next put evicts it.
        let dir = tempfile::tempdir().expect("tempdir");
        let weight = (1 + 4 + 16) as u64;
        let cache = l1_only("lru", 200 * weight, dir.path());
        let put = |i: u32, priority| {
            cache
                .put(&i.to_le_bytes(), vec![0u8; 16], "x", priority, true)
                .expect("put");
        };
        put(0, Priority::Low);
        (1..200).for_each(|i| put(i, Priority::Normal));
        for _ in 0..11 {
            for i in 1..200u32 {
                assert!(cache.get(&i.to_le_bytes(), "x").is_some());
            }
        }
        for _ in 0..5 {
            assert!(cache.get(&0u32.to_le_bytes(), "x").is_some());
        }
        put(1000, Priority::Normal);
        assert!(cache.contains(&0u32.to_le_bytes(), "x").is_some());
        let kept = (1..200u32)
            .filter(|i| cache.contains(&i.to_le_bytes(), "x").is_some())
            .count();
        assert_eq!(kept, 198, "a Normal entry made room");
    }

    #[test]
    fn a_default_cache_costs_little_memory_until_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = rss_kb();
        let cache = Cache::new(&CacheConfig::default(), &dir.path().join("cache")).expect("cache");
        let grown = rss_kb().saturating_sub(before);
        eprintln!("default cache: {} shards, +{grown} KiB", cache.shards());
        assert!(grown < 32 * 1024, "an empty default cache took {grown} KiB");
        assert!(
            !dir.path().join("cache").exists(),
            "L3's directory waits for a first write"
        );
    }

    /// A shard held by a read that stalls (a hung disk holds it while it reads L3) must not
    /// stall the statistics, which the engine's tick reads: they take that shard's last
    /// figures and say L3 is degraded (issue 15).
    #[test]
    fn the_statistics_never_wait_on_a_stuck_shard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache =
            Arc::new(Cache::with_shards(&CacheConfig::default(), dir.path(), 4).expect("cache"));
        cache
            .put(b"k", Bytes::from_static(b"v"), "a", Priority::Normal, true)
            .expect("put");
        let before = cache.tick();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let holder = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let _stuck = cache.shards[0].write().unwrap_or_else(|p| p.into_inner());
                let _ = held_tx.send(());
                std::thread::sleep(std::time::Duration::from_secs(3));
            })
        };
        held_rx.recv().expect("the shard is held");
        // Held past STALLED_AFTER: no longer just busy.
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        {
            let cache = cache.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(cache.tick());
            });
        }
        let during = done_rx
            .recv_timeout(std::time::Duration::from_secs(1))
            .expect("the statistics waited on the stuck shard");
        let l3 = during.level(Level::L3).expect("L3");
        assert!(
            l3.disabled
                .as_deref()
                .is_some_and(|why| why.contains("degraded")),
            "{:?}",
            l3.disabled
        );
        assert_eq!(
            during.total.puts, before.total.puts,
            "the held shard's last figures count"
        );
        holder.join().expect("holder");
        let after = cache.tick();
        let why = after.level(Level::L3).and_then(|l| l.disabled.clone());
        assert!(
            !why.is_some_and(|why| why.contains("degraded")),
            "free again"
        );
    }
}
