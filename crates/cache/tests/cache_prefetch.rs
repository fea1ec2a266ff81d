//! Prefetch through the real `Cache`: the prefetcher as the cache's get observer, a loader
//! registered by the caller, prefetched entries admitted at Low priority.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use sutazai_cache::CacheConfig;
use sutazai_cache::policy::POLICY_NAMES;
use sutazai_cache::prefetch::CachePrefetcher;
use sutazai_cache::{Cache, Level, Priority};

const VALUE_BYTES: usize = 1000;
const AGENT: &str = "agent-a";

/// An L1-only cache of about `entries` values, one shard so capacity is exact.
fn small_cache(policy: &str, entries: u64, dir: &tempfile::TempDir) -> Cache {
    let config = CacheConfig {
        l1_bytes: entries * (VALUE_BYTES as u64 + 16),
        l2_bytes: 0,
        l3_bytes: 0,
        l1_policy: policy.parse().expect("a known policy"),
        prefetch_depth: 3,
        ..CacheConfig::default()
    };
    Cache::with_shards(&config, dir.path(), 1).expect("cache")
}

fn value_of(key: &[u8]) -> Bytes {
    Bytes::from(vec![key.last().copied().unwrap_or(0); VALUE_BYTES])
}

/// A loader that has every key: the backing store a caller would read through.
fn register_loader(cache: &Cache) {
    cache
        .set_loader(Arc::new(|key: &[u8]| Some(value_of(key))))
        .expect("loader");
}

fn key(i: usize) -> Vec<u8> {
    format!("doc-{i:04}").into_bytes()
}

/// Reads `rounds` passes over `keys` sequential keys, putting what missed (read-through);
/// returns the hits.
fn sequential_reads(cache: &Cache, keys: usize, rounds: usize) -> usize {
    let mut hits = 0;
    for _ in 0..rounds {
        for i in 0..keys {
            let key = key(i);
            match cache.get(&key, AGENT) {
                Some((value, _)) => {
                    assert_eq!(value, value_of(&key), "another key's value");
                    hits += 1;
                }
                None => {
                    cache
                        .put(&key, value_of(&key), AGENT, Priority::Normal, true)
                        .expect("put");
                }
            }
        }
    }
    hits
}

#[test]
fn prefetch_with_a_loader_turns_a_repeated_scan_into_hits() {
    let (keys, rounds) = (200, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    // The scan is four times larger than L1: LRU alone never hits.
    let plain = small_cache("lru", 50, &dir);
    let without = sequential_reads(&plain, keys, rounds);

    let dir = tempfile::tempdir().expect("tempdir");
    let cache = small_cache("lru", 50, &dir);
    register_loader(&cache);
    let prefetcher = Arc::new(CachePrefetcher::with_depth(3));
    cache.set_observer(prefetcher.clone()).expect("observer");
    let with = sequential_reads(&cache, keys, rounds);

    let total = keys * rounds;
    assert!(
        with > without + total / 2,
        "hits with prefetch {with}, without {without}, of {total}"
    );
    let snapshot = cache.snapshot();
    let prefetch = snapshot.prefetch.expect("prefetch counted");
    assert!(prefetch.prefetched > 0 && prefetch.used > 0, "{prefetch:?}");
    assert!(
        prefetch.accuracy > 0.8,
        "a strict scan is predictable: {prefetch:?}"
    );
    assert!(prefetcher.stats().contexts > 0);
}

#[test]
fn without_a_loader_prefetch_only_promotes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = small_cache("lru", 50, &dir);
    cache
        .set_observer(Arc::new(CachePrefetcher::with_depth(3)))
        .expect("observer");
    // Gets of keys nobody put: nothing to promote, no loader, so nothing may appear.
    for _ in 0..5 {
        for i in 0..20 {
            assert!(cache.get(&key(i), AGENT).is_none());
        }
    }
    for i in 0..20 {
        assert_eq!(
            cache.contains(&key(i), AGENT),
            None,
            "key {i} appeared with no loader"
        );
    }
}

#[test]
fn prefetched_entries_never_push_out_a_high_priority_entry() {
    let mut pushed_out = Vec::new();
    for policy in POLICY_NAMES {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = small_cache(policy, 20, &dir);
        register_loader(&cache);
        cache
            .set_observer(Arc::new(CachePrefetcher::with_depth(3)))
            .expect("observer");
        let precious: Vec<Vec<u8>> = (0..3)
            .map(|i| format!("precious-{i}").into_bytes())
            .collect();
        for key in &precious {
            let level = cache
                .put(key, value_of(key), AGENT, Priority::High, true)
                .expect("put");
            assert_eq!(level, Level::L1, "{policy}");
        }
        // Only gets: every entry that arrives now is a prefetch, far more than L1 holds.
        for _ in 0..10 {
            for i in 0..100 {
                cache.get(&key(i), AGENT);
            }
        }
        // Prefetches must have happened; under LRU they overflow L1 several times (other
        // policies may refuse most of them, which is their right).
        let prefetched = cache.snapshot().prefetch.map_or(0, |p| p.prefetched);
        let needed = if policy == "lru" { 60 } else { 1 };
        assert!(
            prefetched >= needed,
            "{policy}: only {prefetched} prefetches"
        );
        for key in &precious {
            if cache.contains(key, AGENT) != Some(Level::L1) {
                pushed_out.push(format!("{policy}: {}", String::from_utf8_lossy(key)));
            }
        }
    }
    assert!(
        pushed_out.is_empty(),
        "prefetches pushed out High entries: {pushed_out:?}"
    );
}

#[test]
fn agents_interleaving_their_scans_are_learned_separately() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = small_cache("lru", 50, &dir);
    register_loader(&cache);
    cache
        .set_observer(Arc::new(CachePrefetcher::with_depth(3)))
        .expect("observer");
    // Agent a scans doc-0000.., agent b doc-1000..; which of them asks next is random, so
    // the merged stream the cache sees has no stable successor: only per-agent contexts
    // make it predictable.
    let (keys, rounds) = (100, 8);
    let agents = [("agent-a", 0usize), ("agent-b", 1000usize)];
    let mut next = [0usize; 2];
    let mut coin = 0x2545_f491_4f6c_dd1du64;
    let (mut hits, mut total) = (0, 0);
    while next.iter().any(|&n| n < keys * rounds) {
        coin ^= coin << 13;
        coin ^= coin >> 7;
        coin ^= coin << 17;
        let who = if next[0] >= keys * rounds {
            1
        } else if next[1] >= keys * rounds {
            0
        } else {
            (coin & 1) as usize
        };
        let (agent, base) = agents[who];
        let key = key(base + next[who] % keys);
        next[who] += 1;
        total += 1;
        match cache.get(&key, agent) {
            Some((value, _)) => {
                assert_eq!(value, value_of(&key));
                hits += 1;
            }
            None => {
                cache
                    .put(&key, value_of(&key), agent, Priority::Normal, true)
                    .expect("put");
            }
        }
    }
    assert!(hits > total / 2, "{hits} hits of {total}");
}

/// xorshift64: the same "random" workload on every run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn backing_off_on_random_gets_still_notices_short_paths_in_random_order() {
    // Random gets: nothing to predict, so the prefetcher backs off and shows its model only
    // a one-in-256 slice of the keys. Then the agent reads 1000 prompts, each followed by its
    // embedding, the prompts in random order: every other step is predictable, though two
    // keys of the slice in a row almost never belong to one pair. The model is handed the
    // key before each key of the slice, so about half of what it learns is predictable
    // (given only the slice's previous key, just the rare pairs with both keys in the
    // slice would be, and for most key names none).
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = small_cache("lru", 64, &dir);
    let prefetcher = Arc::new(CachePrefetcher::with_depth(3));
    cache.set_observer(prefetcher.clone()).expect("observer");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut gets = 0u64;
    while !prefetcher.backing_off() {
        let n = next_random(&mut state) % 1_000_000;
        cache.get(format!("random-{n}").as_bytes(), AGENT);
        gets += 1;
        assert!(gets < 1_000_000, "never backed off on random gets");
    }
    let mut gets = 0u64;
    while prefetcher.backing_off() {
        let prompt = next_random(&mut state) % 1000;
        cache.get(format!("prompt-{prompt}").as_bytes(), AGENT);
        cache.get(format!("embedding-{prompt}").as_bytes(), AGENT);
        gets += 2;
        assert!(
            gets < 2_000_000,
            "prompt then embedding was never noticed as predictable"
        );
    }
    eprintln!("predictable again after {gets} gets");
}
