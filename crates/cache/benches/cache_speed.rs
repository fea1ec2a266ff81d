//! L1 speed: get and put throughput of the engine's cache against quick_cache 0.6 and
//! moka 0.12 (their `sync::Cache`), in the same run, single-threaded and with 2 threads.
//!
//! The key space fits in every contender (no evictions after the warm-up), keys are 8-byte
//! strings picked uniformly at random (precomputed per round, so the generator is not measured),
//! values 64 bytes (`bytes::Bytes`, so a get clones a handle, never the data). Workloads:
//! gets only, puts only, and the mix of 90% gets. The contenders take turns in each round
//! (other load on the machine falls on all of them); a figure is the median over the
//! rounds, and a ratio the median of the ratios between figures of the same round.
//! Target (issue 5): at least 0.8x quick_cache on gets.
//! `cargo bench -p sutazai-cache --bench cache_speed [-- NAME...]` (NAME: keep only the contenders so named;
//! `WORKLOADS=get,put,mixed` picks workloads, `ROUNDS=n` the rounds per figure).

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sutazai_cache::CacheConfig;
use sutazai_cache::prefetch::CachePrefetcher;
use sutazai_cache::{Cache, Priority};

const KEYS: usize = 100_000;
const CAPACITY: usize = 2 * KEYS;
const OPS_PER_THREAD: usize = 1_000_000;
/// Rounds per figure unless `ROUNDS` says otherwise: enough that one disturbed round does
/// not move a median on this noisy machine.
const RUNS: usize = 7;
const AGENT: &str = "bench";
const VALUE_BYTES: usize = 64;

trait Contender: Sync {
    fn name(&self) -> &'static str;
    fn get(&self, key: &[u8]) -> bool;
    fn put(&self, key: &[u8], value: &Bytes);
}

struct QuickCache(quick_cache::sync::Cache<Vec<u8>, Bytes>);

impl Contender for QuickCache {
    fn name(&self) -> &'static str {
        "quick_cache"
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn put(&self, key: &[u8], value: &Bytes) {
        self.0.insert(key.to_vec(), value.clone());
    }
}

struct Moka(moka::sync::Cache<Vec<u8>, Bytes>);

impl Contender for Moka {
    fn name(&self) -> &'static str {
        "moka"
    }
    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).is_some()
    }
    fn put(&self, key: &[u8], value: &Bytes) {
        self.0.insert(key.to_vec(), value.clone());
    }
}

/// The engine's cache through its public API, L1 only (L2 and L3 off, so every figure is
/// the L1 path), configured as the engine configures it apart from the level sizes.
struct Engine {
    label: &'static str,
    cache: Cache,
    _dir: tempfile::TempDir,
}

impl Engine {
    fn new(label: &'static str, policy: &str, prefetch: bool) -> Option<Self> {
        let config = CacheConfig {
            l1_bytes: 256 << 20,
            l2_bytes: 0,
            l3_bytes: 0,
            l1_policy: policy.parse().expect("a known policy"),
            ..CacheConfig::default()
        };
        let dir = tempfile::tempdir().ok()?;
        let cache = match Cache::new(&config, dir.path()) {
            Ok(cache) => cache,
            Err(error) => {
                println!("{label}: cannot build the cache: {error}");
                return None;
            }
        };
        if prefetch {
            let depth = config.prefetch_depth as usize;
            cache
                .set_observer(Arc::new(CachePrefetcher::with_depth(depth)))
                .ok()?;
        }
        Some(Self {
            label,
            cache,
            _dir: dir,
        })
    }
}

impl Contender for Engine {
    fn name(&self) -> &'static str {
        self.label
    }
    fn get(&self, key: &[u8]) -> bool {
        self.cache.get(key, AGENT).is_some()
    }
    fn put(&self, key: &[u8], value: &Bytes) {
        let _ = self
            .cache
            .put(key, value.clone(), AGENT, Priority::Normal, true);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Gets,
    Puts,
    Mixed,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Workload::Gets => "get",
            Workload::Puts => "put",
            Workload::Mixed => "90% get",
        }
    }
}

fn key_of(index: usize) -> [u8; 8] {
    (index as u64).to_be_bytes()
}

/// Uniform random key indices (xorshift), one sequence per thread.
fn key_stream(seed: u64, len: usize) -> Vec<u32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % KEYS as u64) as u32
        })
        .collect()
}

fn run_thread(cache: &dyn Contender, workload: Workload, keys: &[u32], value: &Bytes) -> usize {
    let mut found = 0;
    for (n, &index) in keys.iter().enumerate() {
        let key = key_of(index as usize);
        let is_put = match workload {
            Workload::Gets => false,
            Workload::Puts => true,
            Workload::Mixed => n % 10 == 9,
        };
        if is_put {
            cache.put(&key, value);
        } else {
            found += usize::from(cache.get(&key));
        }
    }
    found
}

/// Operations per second over `threads` threads, one run.
fn measure_once(
    cache: &dyn Contender,
    workload: Workload,
    threads: usize,
    streams: &[Vec<u32>],
    value: &Bytes,
) -> f64 {
    let started = Instant::now();
    let found: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = streams[..threads]
            .iter()
            .map(|keys| scope.spawn(move || run_thread(cache, workload, keys, value)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(0))
            .sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(found);
    (threads * OPS_PER_THREAD) as f64 / seconds
}

/// Rounds per figure: `ROUNDS` from the environment, else `RUNS`.
fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(RUNS)
}

/// Ops/s of each contender in each of `rounds()` rounds (`[contender][round]`); the
/// contenders take turns within a round so that load from other processes on the machine
/// falls on all of them alike, and a ratio is taken between figures of the same round.
/// Every round draws new key streams (the same for every contender): a stream replayed
/// again and again would be a pattern the prefetcher learns, not a random workload.
fn measure_all(
    contenders: &[Box<dyn Contender>],
    workload: Workload,
    threads: usize,
    seed: &mut u64,
    value: &Bytes,
) -> Vec<Vec<f64>> {
    let mut rates = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds() {
        let streams: Vec<Vec<u32>> = (0..threads)
            .map(|_| {
                *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                key_stream(*seed, OPS_PER_THREAD)
            })
            .collect();
        for (round_rates, cache) in rates.iter_mut().zip(contenders) {
            round_rates.push(measure_once(
                cache.as_ref(),
                workload,
                threads,
                &streams,
                value,
            ));
        }
    }
    rates
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A contender's figures against quick_cache's of the same rounds: median ops/s, and the
/// median, lowest and highest of the per-round ratios.
struct Figure {
    rate: f64,
    ratio: f64,
    lowest: f64,
    highest: f64,
}

fn figure(rates: &[f64], quick: &[f64]) -> Figure {
    let ratios: Vec<f64> = rates.iter().zip(quick).map(|(r, q)| r / q).collect();
    Figure {
        rate: median(rates.to_vec()),
        ratio: median(ratios.clone()),
        lowest: ratios.iter().copied().fold(f64::INFINITY, f64::min),
        highest: ratios.iter().copied().fold(0.0, f64::max),
    }
}

fn warm(cache: &dyn Contender, value: &Bytes) {
    for index in 0..KEYS {
        cache.put(&key_of(index), value);
    }
    let missing = (0..KEYS)
        .filter(|&index| !cache.get(&key_of(index)))
        .count();
    if missing > 0 {
        println!(
            "warning: {} lost {missing} of {KEYS} keys that fit",
            cache.name()
        );
    }
}

/// The engine's contenders first (the default configuration — adaptive L1 with the
/// prefetcher attached, as `open_for` builds it — is the one held to the target), then the
/// peers; `QUICK` is quick_cache's index.
fn contenders() -> Vec<Box<dyn Contender>> {
    let mut all: Vec<Box<dyn Contender>> = Vec::new();
    for (label, policy, prefetch) in [
        ("engine L1 (default)", "adaptive", true),
        ("engine L1 adaptive", "adaptive", false),
        ("engine L1 lru", "lru", false),
        ("engine L1 lru+prefetch", "lru", true),
    ] {
        if let Some(engine) = Engine::new(label, policy, prefetch) {
            all.push(Box::new(engine));
        }
    }
    all.push(Box::new(QuickCache(quick_cache::sync::Cache::new(
        CAPACITY,
    ))));
    all.push(Box::new(Moka(moka::sync::Cache::new(CAPACITY as u64))));
    // `cargo bench -p sutazai-cache --bench cache_speed -- NAME...` keeps the contenders whose name contains
    // a NAME (and quick_cache, the yardstick), e.g. to profile one of them.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    all.retain(|c| {
        filters.is_empty()
            || c.name() == "quick_cache"
            || filters.iter().any(|f| c.name().contains(f.as_str()))
    });
    all
}

/// The workloads measured: all, or those named in `WORKLOADS` (`get`, `put`, `mixed`,
/// comma-separated), e.g. to profile the get path alone.
fn workloads() -> Vec<Workload> {
    let wanted = std::env::var("WORKLOADS").unwrap_or_default();
    [
        (Workload::Gets, "get"),
        (Workload::Puts, "put"),
        (Workload::Mixed, "mixed"),
    ]
    .into_iter()
    .filter(|(_, name)| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == *name))
    .map(|(workload, _)| workload)
    .collect()
}

/// `cargo test --workspace --all-targets` runs benches too, without `--bench`: then only a smoke run
/// that proves the bench works, so the test suite stays short.
fn smoke_run() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

fn main() {
    let value = Bytes::from(vec![7u8; VALUE_BYTES]);
    let mut seed = 0xd1b5_4a32_d192_ed03u64;
    let contenders = contenders();
    for cache in &contenders {
        warm(cache.as_ref(), &value);
    }
    if smoke_run() {
        println!(
            "(smoke run: every contender filled and read back; `cargo bench -p sutazai-cache --bench cache_speed` measures)"
        );
        return;
    }
    println!(
        "L1 speed: {KEYS} keys (fit), {VALUE_BYTES}-byte values, {OPS_PER_THREAD} ops per thread, {} rounds;\n\
         medians, and the ratio to quick_cache in the same round (median, lowest-highest)\n",
        rounds()
    );
    println!(
        "{:<22} {:<8} {:>7} {:>14} {:>13} {:>12}",
        "cache", "ops", "threads", "ops/s", "x quick_cache", "range"
    );
    let mut engine_get_ratios = Vec::new();
    for workload in workloads() {
        for threads in [1, 2] {
            let rates = measure_all(&contenders, workload, threads, &mut seed, &value);
            let quick_index = contenders
                .iter()
                .position(|c| c.name() == "quick_cache")
                .unwrap_or(0);
            let quick = &rates[quick_index];
            let figures: Vec<Figure> = rates.iter().map(|r| figure(r, quick)).collect();
            for (cache, f) in contenders.iter().zip(&figures) {
                println!(
                    "{:<22} {:<8} {:>7} {:>14.0} {:>12.2}x {:>5.2}-{:.2}x",
                    cache.name(),
                    workload.label(),
                    threads,
                    f.rate,
                    f.ratio,
                    f.lowest,
                    f.highest
                );
            }
            if workload == Workload::Gets {
                engine_get_ratios.push((threads, figures[0].ratio));
            }
        }
    }
    println!();
    for (threads, ratio) in engine_get_ratios {
        let verdict = if ratio >= 0.8 { "met" } else { "MISSED" };
        println!(
            "target: {} gets at >= 0.8x quick_cache, {threads} thread(s): {ratio:.2}x (median) {verdict}",
            contenders[0].name()
        );
    }
}
