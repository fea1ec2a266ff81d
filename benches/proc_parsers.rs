//! Parsing /proc: our hand parsers against procfs-core's on this machine's own files, the
//! figures behind which files the host readers hand to procfs-core (README, "Reading /proc",
//! and each reader's header). ns per parse, best of 5 rounds.
//!
//! `cargo bench --bench proc_parsers`

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Instant;

use procfs_core::{FromBufRead, FromRead};
use sutazai_top::host::memory::{parse_kb_fields, parse_meminfo, parse_vmstat};
use sutazai_top::host::processes::{parse_stat, parse_status};
use sutazai_top::host::psi::parse_psi;
use sutazai_top::host::schedstat::parse_schedstat;

const VM_KEYS: [&str; 3] = ["pswpin ", "pswpout ", "pgmajfault "];

/// ns per call of `parse`, best of 5 rounds of `n` calls.
fn ns(n: u32, mut parse: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                parse();
            }
            start.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

fn row(file: &str, ours: f64, theirs: f64, what: &str) {
    println!(
        "{file:<24} {ours:>10.0} {theirs:>12.0} {:>7.2}x  {what}",
        theirs / ours
    );
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let n = if smoke { 10 } else { 20_000 };
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let stat = read("/proc/self/stat");
    let status = read("/proc/self/status");
    let schedstat = read("/proc/self/schedstat");
    let meminfo = read("/proc/meminfo");
    let vmstat = read("/proc/vmstat");
    let pressure = read("/proc/pressure/memory");

    println!(
        "{:<24} {:>10} {:>12} {:>8}",
        "file", "ours ns", "procfs ns", "ratio"
    );
    row(
        "/proc/<pid>/stat",
        ns(n, || drop(black_box(parse_stat(black_box(&stat))))),
        ns(n, || {
            drop(black_box(procfs_core::process::Stat::from_read(black_box(
                stat.as_bytes(),
            ))))
        }),
        "every process, every tick: by hand",
    );
    row(
        "/proc/<pid>/status",
        ns(n, || drop(black_box(parse_status(black_box(&status))))),
        ns(n, || {
            drop(black_box(procfs_core::process::Status::from_buf_read(
                black_box(status.as_bytes()),
            )))
        }),
        "every process, every tick: by hand",
    );
    row(
        "task schedstat",
        ns(n, || {
            black_box(parse_schedstat(black_box(&schedstat)));
        }),
        ns(n, || {
            drop(black_box(procfs_core::process::Schedstat::from_read(
                black_box(schedstat.as_bytes()),
            )))
        }),
        "every task of every latency agent: by hand",
    );
    if !pressure.is_empty() {
        row(
            "PSI file",
            ns(n, || {
                black_box(parse_psi(black_box(&pressure)));
            }),
            ns(n, || {
                drop(black_box(procfs_core::MemoryPressure::from_buf_read(
                    black_box(pressure.as_bytes()),
                )))
            }),
            "every container, every tick: by hand",
        );
    }
    row(
        "/proc/meminfo",
        ns(n, || drop(black_box(parse_kb_fields(black_box(&meminfo))))),
        ns(n, || drop(black_box(parse_meminfo(black_box(&meminfo))))),
        "once a tick: procfs-core (with its checks)",
    );
    // Both procfs-core: the whole file, against the sampler's way (the 3 lines it uses
    // picked out first, the picking counted).
    let pick = |text: &str| -> String {
        text.lines()
            .filter(|l| VM_KEYS.iter().any(|k| l.starts_with(k)))
            .flat_map(|l| [l, "\n"])
            .collect()
    };
    row(
        "/proc/vmstat",
        ns(n, || drop(black_box(parse_vmstat(black_box(&vmstat))))),
        ns(n, || {
            let three = pick(black_box(&vmstat));
            drop(black_box(procfs_core::VmStat::from_buf_read(
                three.as_bytes(),
            )));
        }),
        "once a tick, procfs-core: whole file (left) vs the 3 lines used (right)",
    );
    if smoke {
        println!("(smoke run; `cargo bench --bench proc_parsers` measures)");
    }
}
