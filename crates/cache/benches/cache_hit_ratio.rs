//! Hit ratio of every replacement policy on every trace in ../shared/traces at the README's
//! sizes, with moka and quick_cache replayed the same way, printed as one table, then the
//! targets of issue 5 checked. `cargo bench -p sutazai-cache --bench cache_hit_ratio [-- FILTER...]`: a
//! filter keeps the rows whose trace name contains it.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use sutazai_cache::policy::{Adaptive, POLICY_NAMES, Policy, access, by_name};
use sutazai_cache::trace::{read_arc, read_lirs};

/// (trace, file, sizes); the README's sizes.
const ARC_TRACES: [(&str, &[u64]); 3] = [
    ("OLTP", &[1000, 2000, 5000, 10000, 15000]),
    ("P3", &[32768]),
    ("P6", &[32768]),
];
const LIRS_TRACES: [&str; 8] = [
    "cs", "gli", "loop", "multi2", "ps", "scan", "sprite", "zigzag",
];
const LIRS_SIZES: &[u64] = &[500, 1000];

struct Row {
    trace: &'static str,
    size: u64,
    /// Hit % per policy, in `POLICY_NAMES` order.
    policies: Vec<f64>,
    chosen: String,
    moka: f64,
    quick: f64,
}

fn traces_dir() -> PathBuf {
    sutazai_cache::trace::traces_dir()
}

fn percent(hits: usize, total: usize) -> f64 {
    100.0 * hits as f64 / total.max(1) as f64
}

fn replay_policy(name: &str, size: u64, trace: &[u64]) -> f64 {
    let Some(mut policy) = by_name(name, size) else {
        return f64::NAN;
    };
    let hits = trace
        .iter()
        .filter(|&&key| access(policy.as_mut(), key))
        .count();
    percent(hits, trace.len())
}

/// The adaptive policy's hit %, what it followed at the end, and how often it switched.
fn replay_adaptive(size: u64, trace: &[u64]) -> (f64, String) {
    let mut adaptive = Adaptive::new(size);
    let hits = trace
        .iter()
        .filter(|&&key| access(&mut adaptive, key))
        .count();
    (
        percent(hits, trace.len()),
        format!("{} ({} switches)", adaptive.chosen(), adaptive.switches()),
    )
}

fn replay_moka(size: u64, trace: &[u64]) -> f64 {
    let cache: moka::sync::Cache<u64, ()> = moka::sync::Cache::new(size);
    let mut hits = 0;
    for &key in trace {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, ());
        }
    }
    percent(hits, trace.len())
}

fn replay_quick_cache(size: u64, trace: &[u64]) -> f64 {
    let mut cache: quick_cache::unsync::Cache<u64, ()> =
        quick_cache::unsync::Cache::new(size as usize);
    let mut hits = 0;
    for &key in trace {
        if cache.get(&key).is_some() {
            hits += 1;
        } else {
            cache.insert(key, ());
        }
    }
    percent(hits, trace.len())
}

fn measure(trace_name: &'static str, size: u64, trace: &[u64]) -> Row {
    let mut policies = Vec::new();
    let mut chosen = String::new();
    for name in POLICY_NAMES {
        if name == "adaptive" {
            let (hit, active) = replay_adaptive(size, trace);
            chosen = active;
            policies.push(hit);
        } else {
            policies.push(replay_policy(name, size, trace));
        }
    }
    Row {
        trace: trace_name,
        size,
        policies,
        chosen,
        moka: replay_moka(size, trace),
        quick: replay_quick_cache(size, trace),
    }
}

fn load(filters: &[String]) -> Vec<(&'static str, Vec<u64>, &'static [u64])> {
    let wanted =
        |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()));
    let mut traces = Vec::new();
    for (name, sizes) in ARC_TRACES {
        if wanted(name) {
            let path = traces_dir().join("arc").join(format!("{name}.lis.zst"));
            match read_arc(&path) {
                Ok(trace) => traces.push((name, trace, sizes)),
                Err(e) => eprintln!("skipping {name}: {e}"),
            }
        }
    }
    for name in LIRS_TRACES {
        if wanted(name) {
            let path = traces_dir().join("lirs").join(format!("{name}.trace.gz"));
            match read_lirs(&path) {
                Ok(trace) => traces.push((name, trace, LIRS_SIZES)),
                Err(e) => eprintln!("skipping {name}: {e}"),
            }
        }
    }
    traces
}

fn print_table(rows: &[Row]) {
    print!("| trace | size |");
    for name in POLICY_NAMES {
        print!(" {name} |");
    }
    println!(" moka | quick_cache | adaptive chose |");
    println!(
        "|---|---:|{}---:|---:|---|",
        "---:|".repeat(POLICY_NAMES.len())
    );
    for row in rows {
        print!("| {} | {} |", row.trace, row.size);
        let best = best_other(row);
        for (i, hit) in row.policies.iter().enumerate() {
            let mark = if i > 0 && *hit == best { "*" } else { "" };
            print!(" {hit:.2}{mark} |");
        }
        println!(" {:.2} | {:.2} | {} |", row.moka, row.quick, row.chosen);
    }
    println!("(* best of the non-adaptive policies)");
}

/// The best hit % among the policies other than `adaptive` (index 0).
fn best_other(row: &Row) -> f64 {
    row.policies[1..].iter().copied().fold(f64::MIN, f64::max)
}

fn check_targets(rows: &[Row]) {
    println!("\nTargets (issue 5):");
    let behind: Vec<String> = rows
        .iter()
        .filter(|row| row.policies[0] < best_other(row) - 1.0)
        .map(|row| {
            format!(
                "{}@{} ({:.2} vs best {:.2})",
                row.trace,
                row.size,
                row.policies[0],
                best_other(row)
            )
        })
        .collect();
    if behind.is_empty() {
        println!(
            "- adaptive within 1 point of the best policy: all {} rows",
            rows.len()
        );
    } else {
        println!(
            "- adaptive within 1 point of the best policy: NOT on {}",
            behind.join(", ")
        );
    }
    let ahead = rows.iter().filter(|row| row.policies[0] > row.moka).count();
    println!("- adaptive ahead of moka on {ahead} of {} rows", rows.len());
    let tiny = POLICY_NAMES
        .iter()
        .position(|&n| n == "w-tinylfu")
        .unwrap_or(0);
    for (trace, size, want) in [("gli", 1000, "~50%"), ("loop", 1000, ">95%")] {
        if let Some(row) = rows.iter().find(|r| r.trace == trace && r.size == size) {
            println!(
                "- W-TinyLFU {trace}@{size}: {:.2}% (target {want})",
                row.policies[tiny]
            );
        }
    }
}

/// `cargo test --workspace --all-targets` runs benches too, without `--bench`: then only a smoke run
/// that proves the bench works, so the test suite stays short.
fn smoke_run() -> bool {
    !std::env::args().any(|arg| arg == "--bench")
}

fn main() {
    let mut filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if smoke_run() && filters.is_empty() {
        println!(
            "(smoke run: the cs trace only; `cargo bench -p sutazai-cache --bench cache_hit_ratio` for all)"
        );
        filters.push("cs".to_string());
    }
    let started = Instant::now();
    let traces = load(&filters);
    let jobs: Vec<(&'static str, &[u64], u64)> = traces
        .iter()
        .flat_map(|(name, trace, sizes)| {
            sizes
                .iter()
                .map(move |&size| (*name, trace.as_slice(), size))
        })
        .collect();
    let next = Mutex::new(0usize);
    let results = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let job = {
                        let Ok(mut next) = next.lock() else { return };
                        let job = *next;
                        *next += 1;
                        job
                    };
                    let Some(&(name, trace, size)) = jobs.get(job) else {
                        return;
                    };
                    let row = measure(name, size, trace);
                    if let Ok(mut results) = results.lock() {
                        results.push((job, row));
                    }
                }
            });
        }
    });
    let mut rows = results.into_inner().unwrap_or_default();
    rows.sort_by_key(|(job, _)| *job);
    let rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
    println!(
        "Hit ratio (%) per trace and cache size (entries), every policy replayed the same way:\n"
    );
    print_table(&rows);
    check_targets(&rows);
    println!(
        "\n({} rows in {:.1} s)",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
}
