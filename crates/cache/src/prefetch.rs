//! Learned prefetch: a successor model over the keys a cache is asked for.
//!
//! Two Markov tables learn which key follows which: order 1 (the last key) and order 2 (the
//! last two keys). Each row holds a few successors with decayed counts: every observation
//! of a context first multiplies its counts by `decay`, so a workload that changes is
//! followed after a few accesses instead of being outvoted by its own history. The
//! confidence of a successor is its count over the row's evidence plus a prior of one
//! unseen observation, so a successor seen once is a guess (0.5), seen consistently it
//! approaches 1. Order 2 answers when its context has enough evidence (it separates paths
//! that share a key), order 1 otherwise. An order-2 row is made only for a pair seen
//! before (a 256 KiB bitset remembers pairs): in a random workload almost no pair recurs,
//! and a row per pair would cost a cache miss on every access for nothing.
//!
//! Contexts are kept per stream (the cache uses one per agent): agents interleave their
//! requests, and the key that follows agent A's last key is A's next one, not whatever B
//! asked for in between. The tables are shared, so agents running the same workflow teach
//! each other.
//!
//! `predict(depth)` chains: the best successor of the current context, then the best
//! successor of (current, predicted), and so on, while the probability of the whole path
//! (the product of the steps' confidences) stays above the threshold.
//!
//! Memory is bounded: each table holds at most `max_contexts` rows; when one is full, the
//! least useful eighth (little evidence, long unseen) is dropped in one sweep, so the cost
//! is amortized to O(1) per access.
//!
//! Accuracy is counted from the cache's reports: a prefetched key that is then asked for is
//! used; one evicted or expired (not asked for within `expire_after` accesses) before that
//! is wasted. Accuracy = used / prefetched.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use super::policy::KeyHash;
use super::recent::RecentKeys;
use super::{Cache, Get, GetObserver};

/// Successors remembered per context: enough for a branch or two, small enough that a row
/// stays in one or two cache lines.
const SUCCESSORS_PER_ROW: usize = 4;
/// Pseudo-observations added to a row's evidence when computing confidence: one sighting of
/// a successor is a 50% guess, not a certainty.
const PRIOR: f32 = 1.0;
/// Fraction of the rows dropped when a table is full.
const SWEEP_DIVISOR: usize = 8;
/// Streams (agents) whose context is remembered; the least recently active goes first.
const MAX_STREAMS: usize = 1024;
/// Predictions remembered per stream so that a chain, which moves one key per access, does
/// not hand out the same keys again (at least the largest configurable depth, 16).
const ISSUED_MEMORY: usize = 32;
/// Accesses (learned ones) per judgement of whether the workload has anything to predict;
/// while backing off, `QUIET_SAMPLED_WINDOW`.
const QUIET_WINDOW: u64 = 1 << 16;
/// Taught accesses per judgement while backing off: fewer (a pattern that comes back should
/// be noticed within a few hundred thousand gets), but enough that one chance prediction
/// does not end the back-off (at 0.1 %, it takes two in 1024).
const QUIET_SAMPLED_WINDOW: u64 = 1 << 10;
/// Below this share of learned accesses that the model had predicted confidently, the
/// workload is judged unpredictable (a uniformly random one is, at about 0).
const QUIET_SHARE: f64 = 0.001;
/// While unpredictable, one key in this many teaches the model and is predicted from (one
/// get in 256 then takes the cache's observer through the model's lock: `CachePrefetcher`).
const QUIET_SAMPLE: u64 = 256;

/// The stream of [`Prefetcher::on_access`] and [`Prefetcher::predict`].
pub const DEFAULT_STREAM: u64 = 0;

/// Tuning of a [`Prefetcher`]; the defaults are workload-independent choices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefetchConfig {
    /// Most keys one `predict` returns (config `[cache] prefetch_depth`).
    pub depth: usize,
    /// Lowest path probability worth a prefetch.
    pub min_confidence: f32,
    /// Evidence an order-2 context needs before it is preferred to order 1.
    pub min_order2_evidence: f32,
    /// Factor applied to a row's counts at each observation of its context (0 < decay <= 1).
    pub decay: f32,
    /// Rows per table (order 1 and order 2 each).
    pub max_contexts: usize,
    /// Accesses after which a prefetched key still unused counts as wasted.
    pub expire_after: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            depth: 3,
            min_confidence: 0.6,
            min_order2_evidence: 1.5,
            decay: 0.85,
            max_contexts: 1 << 16,
            expire_after: 1 << 16,
        }
    }
}

/// A key the model expects soon, with the probability of the path that leads to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub key: KeyHash,
    pub confidence: f32,
    /// The key's bytes, if it was accessed through [`Prefetcher::on_access_named`] and its
    /// row is still in the table (a loader needs them).
    pub name: Option<Arc<[u8]>>,
}

/// Prefetch counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefetchStats {
    /// Keys prefetched (promoted or loaded) on the model's advice.
    pub prefetched: u64,
    /// Prefetched keys asked for before they were evicted or expired.
    pub used: u64,
    /// Prefetched keys evicted or expired unused.
    pub wasted: u64,
    /// Rows in the order-1 and order-2 tables.
    pub contexts: u64,
}

impl PrefetchStats {
    /// used / prefetched; 0 before the first prefetch.
    pub fn accuracy(&self) -> f64 {
        if self.prefetched == 0 {
            0.0
        } else {
            self.used as f64 / self.prefetched as f64
        }
    }
}

/// The successor model plus the accuracy ledger. Not thread-safe by itself: the cache
/// keeps it behind its own lock.
#[derive(Debug)]
pub struct Prefetcher {
    config: PrefetchConfig,
    order1: Table<KeyHash>,
    order2: Table<(KeyHash, KeyHash)>,
    seen_pairs: Doorkeeper,
    streams: FastMap<u64, Context>,
    clock: u64,
    /// Prefetched keys not yet used, with the clock they were prefetched at.
    outstanding: FastMap<KeyHash, u64>,
    /// The same keys in prefetch order, to expire them; entries whose clock no longer
    /// matches `outstanding` were settled already.
    expiry: VecDeque<(KeyHash, u64)>,
    stats: PrefetchStats,
    quiet: Quiet,
}

/// Backing off on a workload with nothing to predict. Learning costs every access a row
/// of the successor tables (a cache miss, and table churn), which on random lookups buys
/// nothing: then only a fixed one-in-`QUIET_SAMPLE` slice of the keys teaches the model
/// (and is predicted from), until that slice shows transitions worth predicting again. A
/// pattern with no key in the slice (a loop over a few dozen keys may have none) is not
/// noticed; such a loop fits in any L1 and needs no prefetch.
#[derive(Debug, Default)]
struct Quiet {
    sampling: bool,
    learned: u64,
    predictable: u64,
}

/// Whether `key` is in the slice that teaches the model while it backs off.
fn in_quiet_sample(key: KeyHash) -> bool {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - QUIET_SAMPLE.trailing_zeros()) == 0
}

impl Quiet {
    fn teaches(&self, key: KeyHash) -> bool {
        !self.sampling || in_quiet_sample(key)
    }

    fn record(&mut self, predictable: bool) {
        self.learned += 1;
        self.predictable += u64::from(predictable);
        let window = if self.sampling {
            QUIET_SAMPLED_WINDOW
        } else {
            QUIET_WINDOW
        };
        if self.learned >= window {
            self.sampling = (self.predictable as f64) < QUIET_SHARE * self.learned as f64;
            self.learned = 0;
            self.predictable = 0;
        }
    }
}

impl Prefetcher {
    /// A prefetcher with `config`; a zero depth or an out-of-range decay is clamped to
    /// something meaningful rather than refused (the config layer validates the user's
    /// values).
    pub fn new(mut config: PrefetchConfig) -> Self {
        config.decay = config.decay.clamp(0.01, 1.0);
        config.max_contexts = config.max_contexts.max(SWEEP_DIVISOR);
        Self {
            config,
            order1: Table::new(config.max_contexts),
            order2: Table::new(config.max_contexts),
            seen_pairs: Doorkeeper::new(),
            streams: FastMap::default(),
            clock: 0,
            outstanding: FastMap::default(),
            expiry: VecDeque::new(),
            stats: PrefetchStats::default(),
            quiet: Quiet::default(),
        }
    }

    /// The default model with `depth` (config `[cache] prefetch_depth`).
    pub fn with_depth(depth: usize) -> Self {
        Self::new(PrefetchConfig {
            depth,
            ..PrefetchConfig::default()
        })
    }

    pub fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    /// One access to `key` (hit or miss): learns the transition and settles a prefetch of
    /// `key` as used.
    pub fn on_access(&mut self, key: KeyHash) {
        self.on_access_in(DEFAULT_STREAM, key, None);
    }

    /// As [`on_access`](Self::on_access), remembering the key's bytes so a prediction of it
    /// can be handed to a loader.
    pub fn on_access_named(&mut self, key: KeyHash, name: &[u8]) {
        self.on_access_in(DEFAULT_STREAM, key, Some(name));
    }

    /// An access by `stream` (one agent): learns in that stream's context. `name`, if
    /// given, is remembered for a loader.
    pub fn on_access_in(&mut self, stream: u64, key: KeyHash, name: Option<&[u8]>) {
        self.observe(stream, key, name);
    }

    /// Up to `depth` keys expected next (fewer when the model is not confident), most
    /// likely first; never the current key, never twice the same key.
    pub fn predict(&self, depth: usize) -> Vec<Prediction> {
        self.predict_in(DEFAULT_STREAM, depth)
    }

    /// [`predict`](Self::predict) after `stream`'s last accesses.
    pub fn predict_in(&self, stream: u64, depth: usize) -> Vec<Prediction> {
        let mut predictions = Vec::new();
        let Some(&Context {
            last: Some(last),
            before_last,
            taught: true,
            ..
        }) = self.streams.get(&stream)
        else {
            // No access yet, or the last one did not teach (backing off): nothing to say.
            return predictions;
        };
        let (mut older, mut newer) = (before_last, last);
        let mut path_probability = 1.0f32;
        while predictions.len() < depth {
            let Some((next, confidence)) = self.best_successor(older, newer) else {
                break;
            };
            path_probability *= confidence;
            let repeated = next == last || predictions.iter().any(|p| p.key == next);
            if path_probability < self.config.min_confidence || repeated {
                break;
            }
            let name = self.order1.rows.get(&next).and_then(|row| row.name.clone());
            predictions.push(Prediction {
                key: next,
                confidence: path_probability,
                name,
            });
            older = Some(newer);
            newer = next;
        }
        predictions
    }

    /// As [`predict_in`](Self::predict_in), leaving out the keys this stream was already
    /// handed and has not asked for since: the chain after k is k+1, k+2, k+3, after k+1 it
    /// is k+2, k+3, k+4, and only k+4 is news. The keys returned are remembered.
    pub fn predict_fresh_in(&mut self, stream: u64, depth: usize) -> Vec<Prediction> {
        let mut predictions = self.predict_in(stream, depth);
        if let Some(context) = self.streams.get_mut(&stream) {
            predictions.retain(|p| context.slot_of_issued(p.key).is_none());
            for prediction in &predictions {
                context.remember_issued(prediction.key);
            }
        }
        predictions
    }

    /// The cache prefetched `key` (promoted it to L1 or loaded it). A key already waiting
    /// to be used is not counted twice.
    pub fn on_prefetched(&mut self, key: KeyHash) {
        if self.outstanding.contains_key(&key) {
            return;
        }
        self.outstanding.insert(key, self.clock);
        self.expiry.push_back((key, self.clock));
        self.stats.prefetched += 1;
    }

    /// `key` left the cache (or the level it was prefetched into): if it was prefetched and
    /// never used, the prefetch was wasted.
    pub fn on_evicted(&mut self, key: KeyHash) {
        if self.outstanding.remove(&key).is_some() {
            self.stats.wasted += 1;
        }
    }

    /// Whether `key` was prefetched and not yet used, evicted or expired.
    pub fn is_outstanding(&self, key: KeyHash) -> bool {
        self.outstanding.contains_key(&key)
    }

    /// Whether the model learns from a sample only, the workload having shown nothing to
    /// predict (see `Quiet`).
    pub fn backing_off(&self) -> bool {
        self.quiet.sampling
    }

    pub fn stats(&self) -> PrefetchStats {
        PrefetchStats {
            contexts: (self.order1.rows.len() + self.order2.rows.len()) as u64,
            ..self.stats
        }
    }

    /// As `observe`, the stream's two previous keys given by the caller (the cache's
    /// observer keeps them per thread while it shows the model only the keys that teach);
    /// where the caller has none (another thread served them, or its slots moved on), the
    /// model's own context stands: the stream's last key it saw.
    fn observe_after(
        &mut self,
        stream: u64,
        (before_last, last): (Option<KeyHash>, Option<KeyHash>),
        key: KeyHash,
        name: Option<&[u8]>,
    ) -> bool {
        if last.is_some() {
            let context = self.context_mut(stream);
            context.before_last = before_last;
            context.last = last;
        }
        self.observe(stream, key, name)
    }

    /// Learns from one access; true if it taught the model (else, backing off, there is
    /// nothing to predict from it: `predict_in` would return nothing).
    fn observe(&mut self, stream: u64, key: KeyHash, name: Option<&[u8]>) -> bool {
        self.clock += 1;
        if self.outstanding.remove(&key).is_some() {
            self.stats.used += 1;
        }
        self.expire_outstanding();
        let (clock, decay) = (self.clock, self.config.decay);
        let teaches = self.quiet.teaches(key);
        let context = self.context_mut(stream);
        let Context {
            last, before_last, ..
        } = *context;
        context.forget_issued(key);
        *context = Context {
            last: Some(key),
            before_last: last,
            active: clock,
            taught: teaches,
            ..*context
        };
        if !teaches {
            return false;
        }
        let min_confidence = self.config.min_confidence;
        let mut predictable = false;
        if let Some(last) = last {
            // Backing off, an order-1 row too only for a transition seen before: a row per
            // taught access of a random workload made the table churn (an insert, and its
            // share of a sweep) for transitions that never recur. A pattern is still seen
            // from its second pass on.
            if !self.quiet.sampling || self.seen_pairs.check_and_mark(last, key) {
                let row = self.order1.row_mut(last, clock);
                predictable = row
                    .best()
                    .is_some_and(|(next, confidence)| next == key && confidence >= min_confidence);
                row.observe(key, decay);
            }
            // An order-2 row only for a pair seen before: most pairs of a random workload
            // never recur, and a row for each would cost a cache miss and table churn.
            if let Some(before_last) = before_last
                && self.seen_pairs.check_and_mark(before_last, last)
            {
                self.order2
                    .row_mut((before_last, last), clock)
                    .observe(key, decay);
            }
        }
        if let Some(name) = name {
            // While backing off, a sampled key's bytes go only into a row that exists
            // already: on a random workload a row per sampled key, made just to hold its
            // name, cost a table insert (and its share of a sweep) and an allocation every
            // eight gets, for predictions that do not come. Once the workload is
            // predictable again, every taught key is named as before.
            let row = if self.quiet.sampling {
                self.order1.rows.get_mut(&key)
            } else {
                Some(self.order1.row_mut(key, clock))
            };
            if let Some(row) = row {
                row.last_seen = clock;
                if row.name.as_deref() != Some(name) {
                    row.name = Some(Arc::from(name));
                }
            }
        }
        let was_sampling = self.quiet.sampling;
        self.quiet.record(predictable);
        if was_sampling && !self.quiet.sampling {
            // Every key is seen again: the other streams' contexts hold keys of the slice,
            // not their last ones, and would teach one false transition each.
            for (&id, context) in self.streams.iter_mut() {
                if id != stream {
                    context.last = None;
                    context.before_last = None;
                }
            }
        }
        true
    }

    fn context_mut(&mut self, stream: u64) -> &mut Context {
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&stream) {
            let idlest = self
                .streams
                .iter()
                .min_by_key(|(_, context)| context.active)
                .map(|(id, _)| *id);
            if let Some(idlest) = idlest {
                self.streams.remove(&idlest);
            }
        }
        self.streams.entry(stream).or_default()
    }

    fn expire_outstanding(&mut self) {
        while let Some(&(key, at)) = self.expiry.front() {
            if self.clock.saturating_sub(at) <= self.config.expire_after {
                break;
            }
            self.expiry.pop_front();
            if self.outstanding.get(&key) == Some(&at) {
                self.outstanding.remove(&key);
                self.stats.wasted += 1;
            }
        }
        // Keys settled early leave stale entries behind; keep the queue proportional.
        if self.expiry.len() > 2 * self.outstanding.len() + 1024 {
            let outstanding = &self.outstanding;
            self.expiry
                .retain(|(key, at)| outstanding.get(key) == Some(at));
        }
    }

    /// The best successor after (`older`, `newer`): order 2 when that context has enough
    /// evidence, else order 1.
    fn best_successor(&self, older: Option<KeyHash>, newer: KeyHash) -> Option<(KeyHash, f32)> {
        let order2 = older
            .filter(|&older| self.seen_pairs.contains(older, newer))
            .and_then(|older| self.order2.rows.get(&(older, newer)))
            .filter(|row| row.evidence >= self.config.min_order2_evidence);
        match order2 {
            Some(row) => row.best(),
            None => self.order1.rows.get(&newer).and_then(Row::best),
        }
    }
}

/// A stream's last two keys.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    last: Option<KeyHash>,
    before_last: Option<KeyHash>,
    /// Clock of the stream's last access.
    active: u64,
    /// Whether the last access taught the model (always, unless backing off); predictions
    /// are made only after those.
    taught: bool,
    /// Keys recently handed out for prefetch and not accessed since (slot i is valid when
    /// bit i of `issued_valid` is set).
    issued: [KeyHash; ISSUED_MEMORY],
    issued_valid: u32,
    issued_next: u8,
}

impl Context {
    fn slot_of_issued(&self, key: KeyHash) -> Option<usize> {
        (0..ISSUED_MEMORY).find(|&i| self.issued_valid & (1 << i) != 0 && self.issued[i] == key)
    }

    fn remember_issued(&mut self, key: KeyHash) {
        let slot = usize::from(self.issued_next) % ISSUED_MEMORY;
        self.issued[slot] = key;
        self.issued_valid |= 1 << slot;
        self.issued_next = ((slot + 1) % ISSUED_MEMORY) as u8;
    }

    fn forget_issued(&mut self, key: KeyHash) {
        // Nothing handed out (always so while backing off): skip the scan.
        if self.issued_valid == 0 {
            return;
        }
        if let Some(slot) = self.slot_of_issued(key) {
            self.issued_valid &= !(1 << slot);
        }
    }
}

/// The prefetcher as the cache's [`GetObserver`]: every get teaches the model (in the
/// agent's own stream) and each confident prediction is handed to [`Cache::prefetch`],
/// which promotes the key from L2/L3 or loads it through the registered loader at Low
/// priority (with no loader it only promotes). The cache counts prefetched and used
/// entries itself (they carry a mark), so its snapshot holds the accuracy.
///
/// While the model backs off (see `Quiet`), only the gets that would teach it go through
/// its lock, with the two keys their agent asked for before on this thread (`recent`): a
/// random workload costs 255 gets in 256 a flag and a thread-local slot, where each took
/// the lock and the stream's context in the model.
#[derive(Debug)]
pub struct CachePrefetcher {
    model: Mutex<Prefetcher>,
    depth: usize,
    /// `model.backing_off()` as of the last get it saw, readable without its lock.
    backing_off: AtomicBool,
    recent: RecentKeys,
}

impl CachePrefetcher {
    pub fn new(config: PrefetchConfig) -> Self {
        Self {
            depth: config.depth,
            model: Mutex::new(Prefetcher::new(config)),
            backing_off: AtomicBool::new(false),
            recent: RecentKeys::new(),
        }
    }

    /// The default model fetching `depth` keys ahead (config `[cache] prefetch_depth`).
    pub fn with_depth(depth: usize) -> Self {
        Self::new(PrefetchConfig {
            depth,
            ..PrefetchConfig::default()
        })
    }

    /// The model's own counters (contexts held; the cache counts the accuracy).
    pub fn stats(&self) -> PrefetchStats {
        self.model
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stats()
    }

    /// Whether the model learns from a sample only (as of the last get it saw).
    pub fn backing_off(&self) -> bool {
        self.backing_off.load(Ordering::Relaxed)
    }

    /// Learns from the get and returns what to prefetch; `None` when the model, backing
    /// off, would not learn from this key, or another thread holds it (prefetch is advice,
    /// and a get must not queue behind it).
    fn learn_and_predict(&self, get: &Get<'_>) -> Option<Vec<Prediction>> {
        let Get {
            key,
            key_hash,
            agent_id,
            ..
        } = *get;
        // One stream per agent: its id in the cache (the names past the 1024th share one).
        let stream = u64::from(agent_id);
        let before = self.recent.push(stream, key_hash);
        let backing_off = self.backing_off();
        if backing_off && !in_quiet_sample(key_hash) {
            return None;
        }
        let mut model = match self.model.try_lock() {
            Ok(model) => model,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let taught = if backing_off {
            model.observe_after(stream, before, key_hash, Some(key))
        } else {
            model.observe(stream, key_hash, Some(key))
        };
        self.backing_off
            .store(model.backing_off(), Ordering::Relaxed);
        if !taught {
            // The model began to back off since the flag was read.
            return Some(Vec::new());
        }
        Some(model.predict_fresh_in(stream, self.depth))
    }
}

impl GetObserver for CachePrefetcher {
    fn on_get(&self, cache: &Cache, get: &Get<'_>) {
        if self.depth == 0 {
            return;
        }
        let Some(predictions) = self.learn_and_predict(get) else {
            return;
        };
        for prediction in predictions {
            // A key is known by name only if it was asked for since its row was made; the
            // model's hash alone cannot be loaded.
            if let Some(name) = prediction.name {
                cache.prefetch(&name, get.agent);
            }
        }
    }
}

/// One context's successors.
#[derive(Debug, Clone, Default)]
struct Row {
    successors: [(KeyHash, f32); SUCCESSORS_PER_ROW],
    len: u8,
    /// Decayed number of observations of this context.
    evidence: f32,
    /// Clock of the last observation (or naming), for the eviction sweep.
    last_seen: u64,
    name: Option<Arc<[u8]>>,
}

impl Row {
    fn observe(&mut self, next: KeyHash, decay: f32) {
        self.evidence = self.evidence * decay + 1.0;
        let len = usize::from(self.len);
        for slot in &mut self.successors[..len] {
            slot.1 *= decay;
        }
        if let Some(slot) = self.successors[..len]
            .iter_mut()
            .find(|slot| slot.0 == next)
        {
            slot.1 += 1.0;
        } else if len < SUCCESSORS_PER_ROW {
            self.successors[len] = (next, 1.0);
            self.len += 1;
        } else if let Some(weakest) = self
            .successors
            .iter_mut()
            .min_by(|a, b| a.1.total_cmp(&b.1))
        {
            *weakest = (next, 1.0);
        }
    }

    fn best(&self) -> Option<(KeyHash, f32)> {
        let (key, count) = self.successors[..usize::from(self.len)]
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((*key, count / (self.evidence + PRIOR)))
    }
}

#[derive(Debug)]
struct Table<K> {
    rows: FastMap<K, Row>,
    max_rows: usize,
}

impl<K: std::hash::Hash + Eq + Copy> Table<K> {
    fn new(max_rows: usize) -> Self {
        Self {
            rows: FastMap::default(),
            max_rows,
        }
    }

    fn row_mut(&mut self, context: K, clock: u64) -> &mut Row {
        if self.rows.len() >= self.max_rows && !self.rows.contains_key(&context) {
            self.drop_least_useful(clock);
        }
        let row = self.rows.entry(context).or_default();
        row.last_seen = clock;
        row
    }

    /// Drops the least useful eighth of the rows: usefulness is the row's evidence, worth
    /// less the longer the context has not been seen (measured in table turnovers).
    fn drop_least_useful(&mut self, clock: u64) {
        let turnover = self.max_rows as f32;
        let usefulness = |row: &Row| {
            row.evidence / (1.0 + clock.saturating_sub(row.last_seen) as f32 / turnover)
        };
        let mut scores: Vec<f32> = self.rows.values().map(usefulness).collect();
        let cut = (scores.len() / SWEEP_DIVISOR).max(1);
        let (_, threshold, _) = scores.select_nth_unstable_by(cut - 1, |a, b| a.total_cmp(b));
        let threshold = *threshold;
        let mut to_drop = cut;
        self.rows.retain(|_, row| {
            let drop = to_drop > 0 && usefulness(row) <= threshold;
            to_drop -= usize::from(drop);
            !drop
        });
    }
}

/// Which (older, newer) pairs were seen: one bit per hashed pair, cleared when an eighth
/// of the bits are set, so it forgets at the pace of the workload. A false positive only creates a
/// row early; after a clear a recurring pair is back after one sighting.
#[derive(Debug)]
struct Doorkeeper {
    bits: Vec<u64>,
    marked: usize,
}

impl Doorkeeper {
    /// 2^21 bits: 256 KiB, small enough to stay in a CPU cache.
    const BITS_LOG2: u32 = 21;
    /// Cleared when this fraction of the bits is set: false positives stay under 1/8.
    const CLEAR_DIVISOR: usize = 8;

    fn new() -> Self {
        Self {
            bits: vec![0; (1 << Self::BITS_LOG2) / 64],
            marked: 0,
        }
    }

    fn slot(older: KeyHash, newer: KeyHash) -> (usize, u64) {
        let mut hasher = MixHasher::default();
        hasher.write_u64(older);
        hasher.write_u64(newer);
        let bit = (hasher.finish() >> (64 - Self::BITS_LOG2)) as usize;
        (bit / 64, 1 << (bit % 64))
    }

    fn contains(&self, older: KeyHash, newer: KeyHash) -> bool {
        let (word, mask) = Self::slot(older, newer);
        self.bits[word] & mask != 0
    }

    /// Whether the pair was seen before; marks it seen.
    fn check_and_mark(&mut self, older: KeyHash, newer: KeyHash) -> bool {
        let (word, mask) = Self::slot(older, newer);
        if self.bits[word] & mask != 0 {
            return true;
        }
        if self.marked >= (1 << Self::BITS_LOG2) / Self::CLEAR_DIVISOR {
            self.bits.fill(0);
            self.marked = 0;
        }
        self.bits[word] |= mask;
        self.marked += 1;
        false
    }
}

/// Keys are already hashes (or small integers from traces): one multiply-xorshift mix per
/// word is enough and far cheaper than SipHash.
#[derive(Default, Clone, Copy)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
    fn write_u64(&mut self, word: u64) {
        let mut x = self.0.rotate_left(29) ^ word;
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = x ^ (x >> 31);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(prefetcher: &mut Prefetcher, keys: &[KeyHash]) {
        for &key in keys {
            prefetcher.on_access(key);
        }
    }

    fn keys(predictions: &[Prediction]) -> Vec<KeyHash> {
        predictions.iter().map(|p| p.key).collect()
    }

    #[test]
    fn order_one_learns_a_repeated_chain_and_chains_predictions() {
        let mut prefetcher = Prefetcher::with_depth(3);
        for _ in 0..5 {
            feed(&mut prefetcher, &[1, 2, 3, 4, 5]);
        }
        feed(&mut prefetcher, &[1]);
        // Five sightings: each step is ~0.75 sure, so the three-step path is below 0.6.
        let early = keys(&prefetcher.predict(3));
        assert!(early.len() < 3 && early.first() == Some(&2), "{early:?}");
        for _ in 0..15 {
            feed(&mut prefetcher, &[2, 3, 4, 5, 1]);
        }
        let predictions = prefetcher.predict(3);
        assert_eq!(keys(&predictions), vec![2, 3, 4]);
        assert!(
            predictions
                .windows(2)
                .all(|w| w[0].confidence >= w[1].confidence),
            "{predictions:?}"
        );
        assert_eq!(
            keys(&prefetcher.predict(1)),
            vec![2],
            "depth caps the chain"
        );
    }

    #[test]
    fn a_single_sighting_is_not_enough_confidence() {
        let mut prefetcher = Prefetcher::with_depth(3);
        feed(&mut prefetcher, &[1, 2, 9, 1]);
        assert!(
            prefetcher.predict(3).is_empty(),
            "1→2 seen once is a 50% guess"
        );
        feed(&mut prefetcher, &[2, 9, 1]);
        assert_eq!(keys(&prefetcher.predict(1)), vec![2]);
    }

    #[test]
    fn order_two_separates_paths_that_share_a_key() {
        // A→X→B and C→X→D: order 1 after X is a coin toss, order 2 knows.
        let (a, b, c, d, x) = (10, 11, 12, 13, 99);
        let mut prefetcher = Prefetcher::with_depth(1);
        for _ in 0..6 {
            feed(&mut prefetcher, &[a, x, b, c, x, d]);
        }
        feed(&mut prefetcher, &[a, x]);
        assert_eq!(keys(&prefetcher.predict(1)), vec![b]);
        feed(&mut prefetcher, &[b, c, x]);
        assert_eq!(keys(&prefetcher.predict(1)), vec![d]);
        // The order-1 row alone would not pass the threshold.
        let row = prefetcher.order1.rows.get(&x).expect("row for X");
        assert!(row.best().expect("successor").1 < 0.6, "{row:?}");
    }

    #[test]
    fn an_order_two_row_waits_for_a_pair_seen_twice() {
        let mut prefetcher = Prefetcher::with_depth(1);
        feed(&mut prefetcher, &[1, 2, 3]);
        assert!(prefetcher.order2.rows.is_empty(), "(1, 2) seen once");
        assert_eq!(prefetcher.order1.rows.len(), 2);
        feed(&mut prefetcher, &[1, 2, 4]);
        assert_eq!(prefetcher.order2.rows.len(), 1, "(1, 2) seen twice");
        assert!(prefetcher.order2.rows.contains_key(&(1, 2)));
    }

    #[test]
    fn the_threshold_stops_a_weak_chain() {
        let config = PrefetchConfig {
            min_confidence: 0.95,
            ..PrefetchConfig::default()
        };
        let mut prefetcher = Prefetcher::new(config);
        for _ in 0..20 {
            feed(&mut prefetcher, &[1, 2, 3]);
        }
        feed(&mut prefetcher, &[1]);
        // Each step is about 0.87 confident (decayed evidence ~6.7 plus the prior): not enough.
        assert!(prefetcher.predict(3).is_empty());
        let lenient = PrefetchConfig {
            min_confidence: 0.8,
            ..config
        };
        let mut prefetcher = Prefetcher::new(lenient);
        for _ in 0..20 {
            feed(&mut prefetcher, &[1, 2, 3]);
        }
        feed(&mut prefetcher, &[1]);
        assert_eq!(
            keys(&prefetcher.predict(3)),
            vec![2],
            "the two-step path falls below 0.8"
        );
    }

    #[test]
    fn decay_follows_a_changed_successor() {
        let mut prefetcher = Prefetcher::with_depth(1);
        for _ in 0..50 {
            feed(&mut prefetcher, &[1, 2, 7]);
        }
        feed(&mut prefetcher, &[1]);
        assert_eq!(keys(&prefetcher.predict(1)), vec![2]);
        // The workload changes: 1 is now followed by 3. A few sightings outweigh fifty old ones.
        for _ in 0..5 {
            feed(&mut prefetcher, &[3, 8, 1]);
        }
        assert_eq!(keys(&prefetcher.predict(1)), vec![3]);
    }

    #[test]
    fn memory_stays_bounded_and_keeps_the_useful_rows() {
        let config = PrefetchConfig {
            max_contexts: 64,
            ..PrefetchConfig::default()
        };
        let mut prefetcher = Prefetcher::new(config);
        for round in 0..200u64 {
            // A hot loop seen every round, and a stream of one-off keys.
            feed(&mut prefetcher, &[1, 2, 3]);
            feed(&mut prefetcher, &[1000 + round * 2, 1001 + round * 2]);
        }
        assert!(prefetcher.order1.rows.len() <= 64 && prefetcher.order2.rows.len() <= 64);
        assert!(prefetcher.stats().contexts <= 128);
        feed(&mut prefetcher, &[1]);
        assert_eq!(
            keys(&prefetcher.predict(2)),
            vec![2, 3],
            "the hot rows survived the sweeps"
        );
    }

    #[test]
    fn accuracy_counts_used_evicted_and_expired_prefetches() {
        let config = PrefetchConfig {
            expire_after: 3,
            ..PrefetchConfig::default()
        };
        let mut prefetcher = Prefetcher::new(config);
        prefetcher.on_prefetched(1);
        prefetcher.on_prefetched(1);
        prefetcher.on_prefetched(2);
        prefetcher.on_prefetched(3);
        prefetcher.on_access(1); // used
        prefetcher.on_evicted(2); // wasted
        prefetcher.on_evicted(2); // already settled
        assert!(prefetcher.is_outstanding(3));
        feed(&mut prefetcher, &[7, 8, 9]); // 3 expires unused
        assert!(!prefetcher.is_outstanding(3));
        prefetcher.on_access(3); // too late to count
        let stats = prefetcher.stats();
        assert_eq!((stats.prefetched, stats.used, stats.wasted), (3, 1, 2));
        assert!((stats.accuracy() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(PrefetchStats::default().accuracy(), 0.0);
    }

    #[test]
    fn interleaved_streams_keep_their_own_context() {
        let mut prefetcher = Prefetcher::with_depth(2);
        for _ in 0..10 {
            for (a, b) in [(1, 101), (2, 102), (3, 103)] {
                prefetcher.on_access_in(7, a, None);
                prefetcher.on_access_in(8, b, None);
            }
        }
        prefetcher.on_access_in(7, 1, None);
        prefetcher.on_access_in(8, 101, None);
        assert_eq!(keys(&prefetcher.predict_in(7, 2)), vec![2, 3]);
        assert_eq!(keys(&prefetcher.predict_in(8, 2)), vec![102, 103]);
        assert!(
            prefetcher.predict_in(9, 2).is_empty(),
            "an unknown stream has no context"
        );
    }

    #[test]
    fn fresh_predictions_are_handed_out_once_until_used() {
        let mut prefetcher = Prefetcher::with_depth(3);
        for _ in 0..20 {
            feed(&mut prefetcher, &[1, 2, 3, 4, 5, 6]);
        }
        feed(&mut prefetcher, &[1]);
        let stream = DEFAULT_STREAM;
        assert_eq!(keys(&prefetcher.predict_fresh_in(stream, 3)), vec![2, 3, 4]);
        assert!(
            prefetcher.predict_fresh_in(stream, 3).is_empty(),
            "nothing new"
        );
        feed(&mut prefetcher, &[2]);
        assert_eq!(
            keys(&prefetcher.predict_fresh_in(stream, 3)),
            vec![5],
            "only the news"
        );
        // A loop shorter than the memory: keys asked for are handed out again next time.
        feed(&mut prefetcher, &[3, 4, 5, 6, 1]);
        assert_eq!(keys(&prefetcher.predict_fresh_in(stream, 1)), vec![2]);
        assert_eq!(
            keys(&prefetcher.predict(3)),
            vec![2, 3, 4],
            "plain predict is unaffected"
        );
    }

    #[test]
    fn predictions_carry_the_names_of_named_keys() {
        let mut prefetcher = Prefetcher::with_depth(2);
        for _ in 0..10 {
            prefetcher.on_access_named(1, b"one");
            prefetcher.on_access_named(2, b"two");
            prefetcher.on_access(3);
        }
        prefetcher.on_access_named(1, b"one");
        let predictions = prefetcher.predict(2);
        assert_eq!(keys(&predictions), vec![2, 3]);
        assert_eq!(predictions[0].name.as_deref(), Some(&b"two"[..]));
        assert_eq!(predictions[1].name, None);
    }

    #[test]
    fn backs_off_on_random_lookups_and_comes_back_for_a_pattern() {
        let mut prefetcher = Prefetcher::with_depth(3);
        // Uniformly random keys: nothing is ever predictable, so after a window the model
        // learns from a one-in-256 sample only (and predicts only after those).
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut random = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % 100_000
        };
        for _ in 0..(QUIET_WINDOW + 10) {
            prefetcher.on_access(random());
        }
        assert!(prefetcher.backing_off());
        let contexts = prefetcher.stats().contexts;
        for _ in 0..QUIET_WINDOW {
            prefetcher.on_access(random());
        }
        let grown = prefetcher.stats().contexts - contexts;
        assert!(
            grown < QUIET_WINDOW / 3,
            "backing off, {grown} rows were made in {QUIET_WINDOW} accesses"
        );
        // A loop of 4096 keys (about 16 in the slice): the transitions into the slice's
        // keys are predictable, so the model learns from every key again, and predicts
        // the loop.
        let mut key = 0;
        let mut accesses = 0;
        while prefetcher.backing_off() {
            prefetcher.on_access(1_000_000 + key);
            key = (key + 1) % 4096;
            accesses += 1;
            assert!(
                accesses < 10 * QUIET_SAMPLED_WINDOW * QUIET_SAMPLE,
                "never came back"
            );
        }
        for _ in 0..2 * 4096 {
            prefetcher.on_access(1_000_000 + key);
            key = (key + 1) % 4096;
        }
        let next = 1_000_000 + key;
        assert_eq!(keys(&prefetcher.predict(3))[0], next);
    }
}
