//! The Rust client's side of `bench/pools.sh`, against a running store:
//! `pools_bench SOCKET get` prints get latency (get + read-only map) per size;
//! `pools_bench SOCKET put` prints put throughput, hashing included, beside a memcpy of the
//! same bytes. One `key=value` line per figure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use sutazai_pools::{Client, Compression};

const SIZES: [(usize, &str, usize); 3] = [
    (4 << 10, "4KiB", 5000),
    (1 << 20, "1MiB", 3000),
    (256 << 20, "256MiB", 3000),
];
const PUT_SIZE: usize = 256 << 20;
const PUT_ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(socket), Some(what)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: pools_bench SOCKET get|put");
        std::process::exit(2);
    };
    let mut client = Client::connect(Path::new(socket)).expect("connecting to the store");
    match what.as_str() {
        "get" => get_latency(&mut client),
        "put" => put_throughput(&mut client),
        other => panic!("unknown {other}"),
    }
}

fn get_latency(client: &mut Client) {
    for (size, name, rounds) in SIZES {
        let bytes = noise(size, 1);
        let put = client.put(&bytes).unwrap();
        let mut took = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let start = Instant::now();
            let mapped = client.get(&put.id).unwrap();
            black_box(mapped.as_slice().first());
            took.push(start.elapsed());
            drop(mapped);
            client.release(&put.id).unwrap();
        }
        took.sort_unstable();
        println!(
            "get size={name} rounds={rounds} p50_us={:.1} p99_us={:.1}",
            us(took[rounds / 2]),
            us(took[rounds * 99 / 100])
        );
        client.release(&put.id).unwrap();
    }
}

fn put_throughput(client: &mut Client) {
    // A pool of its own without compression: a put must not wait on packing the last one.
    client
        .create_pool("bench-put", 2 * PUT_SIZE as u64, Compression::None)
        .unwrap();
    let mut bytes = noise(PUT_SIZE, 2);
    let (mut from_bytes, mut from_memfd, mut memcpy) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..PUT_ROUNDS {
        bytes[..8].copy_from_slice(&(round as u64).to_le_bytes()); // new content each round
        let start = Instant::now();
        let put = client.put_in("bench-put", &bytes).unwrap();
        from_bytes.push(start.elapsed());
        client.release(&put.id).unwrap();

        // Already in a memfd of the client's: the store seals and hashes it, no copy.
        bytes[8..16].copy_from_slice(&(round as u64).to_le_bytes());
        let mut memfd = sutazai_pools::memfd::create("sutazai-pool-bench").unwrap();
        memfd.write_all(&bytes).unwrap();
        let start = Instant::now();
        let put = client.put_fd("bench-put", memfd.as_fd()).unwrap();
        from_memfd.push(start.elapsed());
        drop(memfd);
        client.release(&put.id).unwrap();

        let start = Instant::now();
        let copy = bytes.clone(); // a fresh destination, as the memfd is
        black_box(&copy);
        memcpy.push(start.elapsed());
    }
    for (what, took) in [
        ("put_bytes", from_bytes),
        ("put_memfd", from_memfd),
        ("memcpy", memcpy),
    ] {
        let best = took.iter().min().copied().unwrap_or_default();
        let mut sorted = took.clone();
        sorted.sort_unstable();
        println!(
            "{what} size=256MiB rounds={PUT_ROUNDS} median_gb_s={:.2} best_gb_s={:.2}",
            gb_s(sorted[PUT_ROUNDS / 2]),
            gb_s(best)
        );
    }
    let hash_start = Instant::now();
    black_box(blake3::hash(&bytes));
    println!("blake3 size=256MiB gb_s={:.2}", gb_s(hash_start.elapsed()));
}

fn noise(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn gb_s(d: Duration) -> f64 {
    PUT_SIZE as f64 / d.as_secs_f64() / 1e9
}
