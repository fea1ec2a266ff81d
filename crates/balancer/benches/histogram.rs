//! Recording a request's latency: the balancer's own lock-free histogram against HdrHistogram
//! (the `hdrhistogram` crate), which needs `&mut` to record and so sits behind a mutex when
//! connection tasks on several threads record into one backend's histogram. The figure
//! decides whether the request path keeps its own (see `src/histogram.rs`'s header).
//!
//! `cargo bench -p sutazai-balancer --bench histogram`: ns per record, on 1 thread and on 2
//! threads recording into the same histogram, and the ratio hdrhistogram / ours.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sutazai_balancer::histogram::LatencyHistogram;

/// Latencies as a proxy sees them: tens of microseconds to tens of milliseconds.
fn latencies(n: usize) -> Vec<Duration> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_nanos(10_000 + x % 50_000_000)
        })
        .collect()
}

/// ns per record over `per_thread` records on each of `threads` threads sharing `record`.
fn ns_per_record(
    threads: usize,
    per_thread: usize,
    record: Arc<dyn Fn(Duration) + Send + Sync>,
) -> f64 {
    let values = Arc::new(latencies(per_thread));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (values, record) = (values.clone(), record.clone());
            std::thread::spawn(move || {
                for &v in values.iter() {
                    record(v);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed().as_nanos() as f64 / (threads * per_thread) as f64
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (per_thread, rounds) = if smoke { (10_000, 1) } else { (2_000_000, 7) };
    println!("ns per record (median of {rounds} rounds, {per_thread} records per thread)");
    println!(
        "{:>8} {:>10} {:>18} {:>8}",
        "threads", "ours", "hdrhistogram+mutex", "ratio"
    );
    for threads in [1, 2] {
        let mut ours = Vec::new();
        let mut hdr = Vec::new();
        for _ in 0..rounds {
            let histogram = Arc::new(LatencyHistogram::new());
            let h = histogram.clone();
            ours.push(ns_per_record(
                threads,
                per_thread,
                Arc::new(move |d| h.record(d)),
            ));
            assert_eq!(histogram.count(), (threads * per_thread) as u64);
            // The same range and precision as ours: 1 ns .. 2^36 ns, 16 sub-buckets (1 digit
            // would be coarser, 2 is the nearest HdrHistogram setting).
            let shared = Arc::new(Mutex::new(
                Histogram::<u64>::new_with_bounds(1, 1 << 36, 2).unwrap(),
            ));
            let s = shared.clone();
            hdr.push(ns_per_record(
                threads,
                per_thread,
                Arc::new(move |d: Duration| {
                    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                    s.lock().unwrap().saturating_record(ns);
                }),
            ));
            assert_eq!(shared.lock().unwrap().len(), (threads * per_thread) as u64);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, h) = (median(&mut ours), median(&mut hdr));
        println!("{threads:>8} {o:>10.1} {h:>18.1} {:>7.2}x", h / o);
    }
    if smoke {
        println!("(smoke run; `cargo bench -p sutazai-balancer --bench histogram` measures)");
    }
}
