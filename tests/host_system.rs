//! Host system readers against fixture trees (a 64-CPU two-node host, a tree of malformed
//! files) and against the real machine.

// Tests and benches may unwrap: a panic there is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod host_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use sutazai_top::host::cpu::{CpuSampler, parse_proc_stat};
use sutazai_top::host::disks::DiskSampler;
use sutazai_top::host::info::read_host_info;
use sutazai_top::host::memory::{MemorySampler, parse_vmstat};
use sutazai_top::host::net::NetSampler;
use sutazai_top::host::psi::read_system_pressure;
use sutazai_top::host::topology::read_topology;
use sutazai_top::host::{HostError, HostRoots, parse_cpu_list};
use sutazai_top::model::{CacheInfo, NumaNode};

use host_support::copy_tree;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// numa64: 2 sockets, 2 nodes, 64 CPUs
// ---------------------------------------------------------------------------------------------

fn numa64() -> HostRoots {
    HostRoots::under(&fixture("numa64"))
}

#[test]
fn numa64_topology_is_read_exactly() {
    let topo = read_topology(&numa64()).unwrap();
    assert_eq!(topo.cpus.len(), 64);
    assert_eq!(
        topo.cpus.iter().map(|c| c.id).collect::<Vec<_>>(),
        (0..64).collect::<Vec<_>>()
    );
    assert!(topo.cpus.iter().all(|c| c.online));
    assert_eq!(topo.packages, 2);
    assert_eq!(topo.physical_cores, 32);
    assert_eq!(topo.isolated, vec![60, 61, 62, 63]);

    let cpu5 = &topo.cpus[5];
    assert_eq!(cpu5.siblings, vec![5, 37]);
    assert_eq!((cpu5.package, cpu5.core, cpu5.node), (0, 5, 0));
    let cpu53 = &topo.cpus[53];
    assert_eq!(cpu53.siblings, vec![21, 53]);
    assert_eq!((cpu53.package, cpu53.core, cpu53.node), (1, 5, 1));

    let socket = |p: u32| {
        parse_cpu_list(&format!(
            "{}-{},{}-{}",
            p * 16,
            p * 16 + 15,
            p * 16 + 32,
            p * 16 + 47
        ))
    };
    assert_eq!(
        topo.nodes,
        vec![
            NumaNode {
                id: 0,
                cpus: socket(0),
                mem_total_kb: 65_843_516,
                distances: vec![10, 21],
            },
            NumaNode {
                id: 1,
                cpus: socket(1),
                mem_total_kb: 66_055_168,
                distances: vec![21, 10],
            },
        ]
    );
    for cpu in &topo.cpus {
        let expected_node = (cpu.id % 32) / 16;
        assert_eq!(cpu.node, expected_node, "cpu {}", cpu.id);
    }
}

#[test]
fn numa64_caches_are_deduplicated() {
    let topo = read_topology(&numa64()).unwrap();
    let count = |level: u32, kind: &str| {
        topo.caches
            .iter()
            .filter(|c| c.level == level && c.kind == kind)
            .count()
    };
    assert_eq!(count(1, "Data"), 32);
    assert_eq!(count(1, "Instruction"), 32);
    assert_eq!(count(2, "Unified"), 32);
    assert_eq!(count(3, "Unified"), 2);
    assert_eq!(topo.caches.len(), 98);
    let size_of = |level: u32, kind: &str| -> Vec<u64> {
        let mut sizes: Vec<u64> = topo
            .caches
            .iter()
            .filter(|c| c.level == level && c.kind == kind)
            .map(|c| c.size_kb)
            .collect();
        sizes.dedup();
        sizes
    };
    assert_eq!(size_of(1, "Data"), vec![48]);
    assert_eq!(size_of(1, "Instruction"), vec![32]);
    assert_eq!(size_of(2, "Unified"), vec![2048]);
    assert_eq!(size_of(3, "Unified"), vec![30720]);
    let l2_of_cpu5 = topo
        .caches
        .iter()
        .find(|c| c.level == 2 && c.shared_cpus.contains(&5));
    assert_eq!(
        l2_of_cpu5,
        Some(&CacheInfo {
            level: 2,
            kind: "Unified".to_string(),
            size_kb: 2048,
            shared_cpus: vec![5, 37],
        })
    );
    let l3: Vec<&CacheInfo> = topo.caches.iter().filter(|c| c.level == 3).collect();
    assert_eq!(l3[0].shared_cpus, parse_cpu_list("0-15,32-47"));
    assert_eq!(l3[1].shared_cpus, parse_cpu_list("16-31,48-63"));
}

/// Rewrite proc/stat so that cpu 3 spends 50 ticks in user and 50 idle while every other CPU
/// spends 100 ticks idle; ctxt, processes and intr grow too.
fn advance_stat(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let add = |words: &mut Vec<String>, index: usize, by: u64| {
            let value: u64 = words[index].parse().unwrap();
            words[index] = (value + by).to_string();
        };
        match words[0].as_str() {
            "cpu" => {
                add(&mut words, 1, 50);
                add(&mut words, 4, 63 * 100 + 50);
            }
            "cpu3" => {
                add(&mut words, 1, 50);
                add(&mut words, 4, 50);
            }
            w if w.starts_with("cpu") => add(&mut words, 4, 100),
            "ctxt" | "processes" | "intr" => add(&mut words, 1, 1000),
            _ => {}
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn numa64_cpu_sampler_deltas() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("numa64"), dir.path());
    let roots = HostRoots::under(dir.path());
    let mut sampler = CpuSampler::new(&roots);

    let first = sampler.sample().unwrap();
    assert!(first.per_cpu.is_empty());
    assert_eq!(first.total, Default::default());
    assert_eq!(first.ctxt_per_sec, 0.0);
    assert_eq!((first.load1, first.load5, first.load15), (12.5, 10.25, 8.0));
    assert_eq!((first.runnable, first.blocked), (7, 2));

    let stat_path = roots.proc.join("stat");
    let text = std::fs::read_to_string(&stat_path).unwrap();
    std::fs::write(&stat_path, advance_stat(&text)).unwrap();
    std::thread::sleep(Duration::from_millis(10));

    let second = sampler.sample().unwrap();
    assert_eq!(second.per_cpu.len(), 64);
    let (id3, cpu3) = second.per_cpu[3];
    assert_eq!(id3, 3);
    assert_eq!(cpu3.user, 50.0);
    assert_eq!(cpu3.idle, 50.0);
    assert_eq!(cpu3.busy(), 50.0);
    for (id, times) in second.per_cpu.iter().filter(|(id, _)| *id != 3) {
        assert_eq!(times.idle, 100.0, "cpu {id}");
        assert_eq!(times.user, 0.0, "cpu {id}");
    }
    assert!((second.total.user - 50.0 * 100.0 / 6400.0).abs() < 1e-4);
    assert!(second.ctxt_per_sec > 0.0);
    assert!(second.forks_per_sec > 0.0);
    assert!(second.interrupts_per_sec > 0.0);
    // 1000 events in at most a few seconds of test time, at least the 10 ms slept.
    assert!(second.ctxt_per_sec <= 100_000.0);
}

#[test]
fn numa64_memory_info_pressure_disks_net() {
    let roots = numa64();
    let memory = MemorySampler::new(&roots).sample().unwrap();
    assert_eq!(memory.total_kb, 65_843_516 + 66_055_168);
    assert_eq!(memory.free_kb, 60_123_456 + 61_000_000);
    assert_eq!(memory.available_kb, memory.free_kb + 2_000_000);
    assert_eq!(memory.cached_kb, 1_843_200);
    assert_eq!(memory.buffers_kb, 102_400);
    assert_eq!(memory.dirty_kb, 128);
    assert_eq!(memory.anon_huge_kb, 409_600);
    assert_eq!(memory.swap_total_kb, 8_388_604);
    assert_eq!(memory.thp_enabled.as_deref(), Some("madvise"));
    assert_eq!(memory.thp_defrag.as_deref(), Some("madvise"));
    let ksm = memory.ksm.unwrap();
    assert_eq!(
        (ksm.run, ksm.pages_shared, ksm.pages_sharing),
        (1, 100, 900)
    );
    assert_eq!((ksm.full_scans, ksm.sleep_millisecs), (12, 20));
    assert_eq!(memory.nodes.len(), 2);
    assert_eq!(
        (
            memory.nodes[1].node,
            memory.nodes[1].total_kb,
            memory.nodes[1].free_kb
        ),
        (1, 66_055_168, 61_000_000)
    );

    let info = read_host_info(&roots);
    assert_eq!(info.hostname, "numa64-fixture");
    assert_eq!(info.kernel, "6.8.0-fixture");
    assert_eq!(info.uptime_secs, 86_400);

    let pressure = read_system_pressure(&roots);
    assert_eq!(pressure.cpu.unwrap().some.avg10, 12.5);
    assert_eq!(pressure.memory.unwrap().full.unwrap().total_us, 1234);
    assert_eq!(pressure.io.unwrap().some.avg300, 1.0);

    let disks = DiskSampler::new(&roots).sample().unwrap();
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["nvme0n1"]);

    let nets = NetSampler::new(&roots).sample().unwrap();
    let names: Vec<&str> = nets.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["lo", "ens1"]);
}

// ---------------------------------------------------------------------------------------------
// malformed: every file mixes good lines with short, missing and garbage ones. Files that
// procfs-core parses whole (loadavg, vmstat, net/dev) are refused whole instead: no kernel
// prints such lines, and a refused file must still never panic or yield made-up figures.
// ---------------------------------------------------------------------------------------------

fn malformed() -> HostRoots {
    HostRoots::under(&fixture("malformed"))
}

#[test]
fn malformed_stat_keeps_good_lines_and_loadavg_is_refused() {
    let roots = malformed();
    let stat = parse_proc_stat(&std::fs::read_to_string(roots.proc.join("stat")).unwrap());
    assert_eq!(stat.per_cpu.keys().copied().collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(stat.per_cpu[&0].idle, 500);
    assert_eq!(stat.per_cpu[&3].user, 100);
    assert_eq!(stat.total.map(|t| t.idle), Some(1000));
    assert_eq!(stat.ctxt, Some(12_345));
    assert_eq!(stat.forks, None);
    assert_eq!(stat.interrupts, None);

    let mut sampler = CpuSampler::new(&roots);
    let first = sampler.sample().unwrap();
    assert_eq!((first.runnable, first.blocked), (4, 0));
    // "x/y" where the kernel prints runnable/total: the whole line is refused, loads read 0.
    assert_eq!((first.load1, first.load5, first.load15), (0.0, 0.0, 0.0));
    // Nothing moved between the two readings: no CPU has data, and nothing panics.
    let second = sampler.sample().unwrap();
    assert!(second.per_cpu.is_empty());
    assert_eq!(second.ctxt_per_sec, 0.0);
}

#[test]
fn malformed_memory_keeps_good_lines() {
    let roots = malformed();
    let memory = MemorySampler::new(&roots).sample().unwrap();
    assert_eq!(memory.total_kb, 1_000_000);
    assert_eq!(memory.available_kb, 600_000);
    assert_eq!(memory.swap_total_kb, 2_000);
    assert_eq!(memory.dirty_kb, 12);
    assert_eq!(memory.free_kb, 0);
    assert_eq!(memory.cached_kb, 0);
    assert_eq!(memory.buffers_kb, 0);
    assert_eq!(memory.swap_free_kb, 0);
    assert_eq!(memory.thp_enabled, None);
    assert_eq!(memory.ksm, None);
    assert!(memory.nodes.is_empty());

    // meminfo falls back to the line scan when procfs-core refuses it; vmstat is refused whole.
    let vmstat = parse_vmstat(&std::fs::read_to_string(roots.proc.join("vmstat")).unwrap());
    assert!(vmstat.is_empty(), "{vmstat:?}");
    assert_eq!(memory.swap_in_per_sec, 0.0);
    assert_eq!(memory.major_faults_per_sec, 0.0);
}

#[test]
fn malformed_pressure_and_disks_keep_good_lines_and_net_is_refused() {
    let roots = malformed();
    let pressure = read_system_pressure(&roots);
    let cpu = pressure.cpu.unwrap();
    assert_eq!(cpu.some.avg300, 3.0);
    assert_eq!(cpu.some.total_us, 400);
    assert_eq!(cpu.full, None);
    assert_eq!(pressure.memory, None);
    assert_eq!(pressure.io, None);

    let mut disks = DiskSampler::new(&roots);
    let first = disks.sample().unwrap();
    let names: Vec<&str> = first.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["sda"]);
    assert_eq!(disks.sample().unwrap().len(), 1);

    // net/dev with short and garbage interface lines is refused whole, as a parse error.
    let mut nets = NetSampler::new(&roots);
    assert!(matches!(nets.sample(), Err(HostError::Parse { .. })));
    assert!(matches!(nets.sample(), Err(HostError::Parse { .. })));
}

#[test]
fn missing_tree_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let roots = HostRoots::under(dir.path());
    assert!(read_topology(&roots).is_err());
    assert!(CpuSampler::new(&roots).sample().is_err());
    assert!(MemorySampler::new(&roots).sample().is_err());
    assert!(DiskSampler::new(&roots).sample().is_err());
    assert!(NetSampler::new(&roots).sample().is_err());
    assert_eq!(read_system_pressure(&roots), Default::default());
    let info = read_host_info(&roots);
    assert_eq!((info.hostname.as_str(), info.uptime_secs), ("", 0));
}

// ---------------------------------------------------------------------------------------------
// The real machine
// ---------------------------------------------------------------------------------------------

#[test]
fn real_topology_matches_sysconf() {
    // SAFETY: sysconf only reads system configuration.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    let topo = read_topology(&HostRoots::default()).unwrap();
    assert_eq!(topo.cpus.len() as i64, configured);
    assert!(!topo.nodes.is_empty());
    assert!(topo.packages >= 1);
    assert!(topo.physical_cores >= 1 && topo.physical_cores as usize <= topo.cpus.len());
    for cpu in &topo.cpus {
        assert!(cpu.siblings.contains(&cpu.id));
    }
}

#[test]
fn real_cpu_times_sum_to_one_hundred() {
    let mut sampler = CpuSampler::new(&HostRoots::default());
    let first = sampler.sample().unwrap();
    assert!(first.per_cpu.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let second = sampler.sample().unwrap();
    assert!(!second.per_cpu.is_empty());
    for (id, t) in &second.per_cpu {
        let sum = t.user + t.nice + t.system + t.iowait + t.irq + t.softirq + t.steal + t.idle;
        assert!((sum - 100.0).abs() < 0.5, "cpu {id}: {sum}");
    }
    assert!(second.ctxt_per_sec > 0.0);
    assert!(second.interrupts_per_sec > 0.0);
}

#[test]
fn real_memory_total_matches_sysinfo() {
    let memory = MemorySampler::new(&HostRoots::default()).sample().unwrap();
    // SAFETY: sysinfo is plain integers, for which all-zero bytes are a valid value.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable sysinfo struct for the call to fill.
    let rc = unsafe { libc::sysinfo(&mut info) };
    assert_eq!(rc, 0);
    let sysinfo_kb = info.totalram as f64 * f64::from(info.mem_unit) / 1024.0;
    let diff = (memory.total_kb as f64 - sysinfo_kb).abs() / sysinfo_kb;
    assert!(
        diff < 0.01,
        "meminfo {} kB vs sysinfo {sysinfo_kb} kB",
        memory.total_kb
    );
    assert!(memory.available_kb > 0 && memory.available_kb <= memory.total_kb);
}

/// PSI is optional (CONFIG_PSI, `psi=0` on the command line): the kernel creates
/// /proc/pressure exactly when it accounts pressure, so the reader must report all three
/// resources when the directory is there and none, without error, when it is not.
fn assert_pressure_matches_proc_pressure(roots: &HostRoots) {
    let pressure = read_system_pressure(roots);
    let in_range = |avg: f32| (0.0..=100.0).contains(&avg);
    if roots.proc.join("pressure").is_dir() {
        let cpu = pressure
            .cpu
            .expect("/proc/pressure exists but no cpu pressure was read");
        assert!(
            in_range(cpu.some.avg10) && in_range(cpu.some.avg300),
            "{cpu:?}"
        );
        // Memory and io have had a "full" line since PSI began; cpu only since 5.13.
        let memory = pressure
            .memory
            .expect("/proc/pressure exists but no memory pressure");
        assert!(memory.full.is_some(), "{memory:?}");
        let io = pressure
            .io
            .expect("/proc/pressure exists but no io pressure");
        assert!(io.full.is_some(), "{io:?}");
    } else {
        assert_eq!(
            pressure,
            Default::default(),
            "no /proc/pressure, yet pressure was read"
        );
    }
}

#[test]
fn pressure_check_holds_on_hosts_with_and_without_psi() {
    assert_pressure_matches_proc_pressure(&numa64());
    let without_psi = tempfile::tempdir().unwrap();
    assert_pressure_matches_proc_pressure(&HostRoots::under(without_psi.path()));
}

#[test]
fn real_pressure_disks_and_net() {
    let roots = HostRoots::default();
    assert_pressure_matches_proc_pressure(&roots);

    let mut disks = DiskSampler::new(&roots);
    disks.sample().unwrap();
    let again = disks.sample().unwrap();
    assert!(again.iter().all(|d| !d.name.starts_with("loop")));
    assert!(again.iter().all(|d| (0.0..=100.0).contains(&d.util_pct)));

    let mut nets = NetSampler::new(&roots);
    let first = nets.sample().unwrap();
    assert!(first.iter().any(|n| n.name == "lo"));
    assert!(nets.sample().unwrap().iter().any(|n| n.name == "lo"));
}
