//! Prefetch on real traces: OLTP at 5000 blocks and sprite at 500 replayed through the same
//! policy (LRU and the default `adaptive`) with and without the learned prefetcher, then
//! issue 5's targets checked: no loss on OLTP@5000, at least +5 points on sprite@500.
//!
//! The replay is the cache's L1 path reduced to keys: a lookup (hit, or miss then insert at
//! Normal priority), the prefetcher told of the access, then each predicted key not resident
//! admitted at Low priority — the loader is "the trace's block is available", as it is for a
//! caller that registered one. Evictions are reported to the prefetcher so a prefetched key
//! evicted unused counts against its accuracy.
//! `cargo bench -p sutazai-cache --bench cache_prefetch`.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Instant;

use sutazai_cache::policy::{Policy, Priority, by_name};
use sutazai_cache::prefetch::{PrefetchStats, Prefetcher};
use sutazai_cache::trace::{read_arc, read_lirs};

const POLICIES: [&str; 2] = ["lru", "adaptive"];
/// The default depth of config `[cache] prefetch_depth`.
const DEPTH: usize = 3;

struct Case {
    trace: &'static str,
    size: u64,
    /// The least gain in points that meets the target.
    target_points: f64,
    target: &'static str,
}

const CASES: [Case; 2] = [
    Case {
        trace: "OLTP",
        size: 5000,
        target_points: 0.0,
        target: "no loss",
    },
    Case {
        trace: "sprite",
        size: 500,
        target_points: 5.0,
        target: "+5 points",
    },
];

fn traces_dir() -> PathBuf {
    sutazai_cache::trace::traces_dir()
}

fn load(trace: &str) -> Result<Vec<u64>, String> {
    let result = match trace {
        "OLTP" => read_arc(&traces_dir().join("arc/OLTP.lis.zst")),
        other => read_lirs(&traces_dir().join(format!("lirs/{other}.trace.gz"))),
    };
    result.map_err(|error| error.to_string())
}

struct Replay {
    hit_percent: f64,
    prefetch: PrefetchStats,
}

/// Replays `trace` through `policy`, with a prefetcher when `prefetcher` is given.
fn replay(
    mut policy: Box<dyn Policy>,
    mut prefetcher: Option<Prefetcher>,
    trace: &[u64],
) -> Replay {
    let mut hits = 0usize;
    for &key in trace {
        if policy.contains(key) {
            policy.on_hit(key);
            hits += 1;
        } else {
            policy.on_miss(key);
            let evicted = policy.on_insert(key, 1, Priority::Normal);
            report_evictions(prefetcher.as_mut(), &evicted);
        }
        if let Some(prefetcher) = prefetcher.as_mut() {
            prefetcher.on_access(key);
            prefetch(policy.as_mut(), prefetcher);
        }
    }
    let prefetch = prefetcher.map(|p| p.stats()).unwrap_or_default();
    Replay {
        hit_percent: 100.0 * hits as f64 / trace.len().max(1) as f64,
        prefetch,
    }
}

fn prefetch(policy: &mut dyn Policy, prefetcher: &mut Prefetcher) {
    for prediction in prefetcher.predict(DEPTH) {
        if policy.contains(prediction.key) {
            continue;
        }
        let evicted = policy.on_insert(prediction.key, 1, Priority::Low);
        if !evicted.contains(&prediction.key) {
            prefetcher.on_prefetched(prediction.key);
        }
        report_evictions(Some(prefetcher), &evicted);
    }
}

fn report_evictions(prefetcher: Option<&mut Prefetcher>, evicted: &[u64]) {
    if let Some(prefetcher) = prefetcher {
        for &key in evicted {
            prefetcher.on_evicted(key);
        }
    }
}

/// `cargo test --workspace --all-targets` runs benches too, without `--bench`: then only a smoke run
/// that proves the bench works, so the test suite stays short.
fn smoke_run() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

fn main() {
    let smoke = smoke_run();
    if smoke {
        println!(
            "(smoke run: sprite only; `cargo bench -p sutazai-cache --bench cache_prefetch` for all)"
        );
    }
    println!("prefetch: depth {DEPTH}, admitted at Low priority; hit % with and without\n");
    println!(
        "{:<8} {:>6} {:<9} {:>9} {:>9} {:>8} {:>10} {:>9} {:>8}  target",
        "trace", "size", "policy", "without", "with", "points", "prefetched", "accuracy", "seconds"
    );
    let mut missed = Vec::new();
    for case in CASES.iter().filter(|c| !smoke || c.trace == "sprite") {
        let trace = match load(case.trace) {
            Ok(trace) => trace,
            Err(error) => {
                println!("{:<8} cannot read the trace: {error}", case.trace);
                missed.push(format!("{}: trace unreadable", case.trace));
                continue;
            }
        };
        for name in POLICIES {
            let started = Instant::now();
            let (Some(plain), Some(with)) = (by_name(name, case.size), by_name(name, case.size))
            else {
                println!("unknown policy {name}");
                continue;
            };
            let without = replay(plain, None, &trace);
            let with = replay(with, Some(Prefetcher::with_depth(DEPTH)), &trace);
            let points = with.hit_percent - without.hit_percent;
            let met = points >= case.target_points - 1e-9;
            println!(
                "{:<8} {:>6} {:<9} {:>8.2}% {:>8.2}% {:>+8.2} {:>10} {:>8.1}% {:>8.2}  {} {}",
                case.trace,
                case.size,
                name,
                without.hit_percent,
                with.hit_percent,
                points,
                with.prefetch.prefetched,
                100.0 * with.prefetch.accuracy(),
                started.elapsed().as_secs_f64(),
                case.target,
                if met { "met" } else { "MISSED" }
            );
            if !met {
                missed.push(format!(
                    "{}@{} {name}: {points:+.2} points, target {}",
                    case.trace, case.size, case.target
                ));
            }
        }
    }
    println!();
    if missed.is_empty() {
        println!("all prefetch targets met");
    } else {
        println!("targets missed:");
        for line in missed {
            println!("  {line}");
        }
    }
}
