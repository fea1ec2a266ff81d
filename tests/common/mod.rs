//! Deterministic synthetic snapshots for the TUI frame tests and the render bench.
//! No wall clock, no randomness, no real host data: every value is derived from indices.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use sutazai_top::model::Knob;
use sutazai_top::model::Mode;
use sutazai_top::model::{
    ActiveBatch, AgentClass, CgroupLayout, ChangesSnapshot, ContainerStat, ContainersSnapshot,
    CpuSnapshot, CpuTimes, DiskStat, DockerStatus, HostHistory, HostInfo, KsmStats, LogicalCpu,
    MemorySnapshot, NetStat, NodeMemory, Notice, NumaNode, Pressure, ProcessId, ProcessStat,
    PsiLine, PsiResource, SamplerHealth, Snapshot, Topology, UsageSource,
};
use sutazai_top::model::{Bottleneck, BottleneckKind, Evidence, Subject};
use sutazai_top::model::{Fix, Intent, IntentTarget, Measure, Risk};
use sutazai_top::model::{Proposal, ProposalStatus};

const GIB_KB: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;
const HISTORY_POINTS: usize = 60;
/// Processes in every non-empty state: more than fit on any screen, so the list scrolls.
const PROCESSES: usize = 40;

pub fn empty() -> Snapshot {
    Snapshot::default()
}

/// Times for a CPU that is `busy` percent busy (split user/system, no iowait).
pub fn busy(busy: f32) -> CpuTimes {
    CpuTimes {
        user: busy * 0.75,
        system: busy * 0.25,
        idle: 100.0 - busy,
        ..CpuTimes::default()
    }
}

fn psi(some10: f32, some60: f32, full: Option<(f32, f32)>) -> PsiResource {
    PsiResource {
        some: PsiLine {
            avg10: some10,
            avg60: some60,
            avg300: some60,
            total_us: 1_000_000,
        },
        full: full.map(|(avg10, avg60)| PsiLine {
            avg10,
            avg60,
            avg300: avg60,
            total_us: 500_000,
        }),
    }
}

/// A history with `HISTORY_POINTS` deterministic points per ring (a slow saw-tooth).
fn history() -> HostHistory {
    let mut h = HostHistory::with_capacity(HISTORY_POINTS);
    for i in 0..HISTORY_POINTS {
        let saw = (i % 20) as f32;
        h.cpu_busy_pct.push(20.0 + saw * 3.0);
        h.mem_used_pct.push(40.0 + saw * 0.5);
        h.swap_used_pct.push(1.0);
        h.psi_cpu_some.push(saw * 0.4);
        h.psi_memory_some.push(if i % 10 < 2 { 3.0 } else { 0.0 });
        h.psi_memory_full.push(if i % 10 < 2 { 1.0 } else { 0.0 });
        h.psi_io_some.push((i % 7) as f32);
        h.psi_io_full.push((i % 7) as f32 / 2.0);
    }
    h
}

fn base(cpus: Vec<LogicalCpu>, nodes: Vec<NumaNode>, isolated: Vec<u32>) -> Snapshot {
    let per_cpu = cpus
        .iter()
        .map(|cpu| (cpu.id, busy(((cpu.id * 37) % 90) as f32)))
        .collect();
    let node_memory = nodes
        .iter()
        .map(|n| NodeMemory {
            node: n.id,
            total_kb: n.mem_total_kb,
            free_kb: n.mem_total_kb / 4 + u64::from(n.id) * GIB_KB,
        })
        .collect();
    let total_kb = nodes.iter().map(|n| n.mem_total_kb).sum();
    let packages = 1;
    let physical_cores = cpus.len() as u32;
    Snapshot {
        seq: 42,
        taken_at_ms: 1_700_000_000_000,
        interval_ms: 1000,
        mode: Mode::Conservative,
        host: HostInfo {
            hostname: "agents-01".into(),
            kernel: "6.18.0-test".into(),
            uptime_secs: 3 * 86_400 + 4 * 3_600 + 5 * 60,
            is_root: true,
            cgroup_layout: CgroupLayout::Hybrid,
        },
        topology: Arc::new(Topology {
            cpus,
            nodes,
            caches: Vec::new(),
            isolated,
            packages,
            physical_cores,
        }),
        cpu: CpuSnapshot {
            total: busy(47.0),
            per_cpu,
            load1: 1.25,
            load5: 0.98,
            load15: 0.75,
            runnable: 3,
            blocked: 1,
            ctxt_per_sec: 12_345.0,
            forks_per_sec: 4.0,
            interrupts_per_sec: 2_000.0,
            online: None,
        },
        memory: MemorySnapshot {
            total_kb,
            available_kb: total_kb * 6 / 10,
            free_kb: total_kb / 4,
            cached_kb: total_kb / 5,
            buffers_kb: 300 * 1024,
            dirty_kb: 1200,
            writeback_kb: 0,
            anon_huge_kb: 2 * 1024,
            swap_total_kb: 2 * GIB_KB,
            swap_free_kb: 2 * GIB_KB - 64 * 1024,
            swap_in_per_sec: 0.0,
            swap_out_per_sec: 12.0,
            major_faults_per_sec: 3.0,
            thp_enabled: Some("madvise".into()),
            thp_defrag: Some("madvise".into()),
            ksm: None,
            nodes: node_memory,
            tunables: Default::default(),
        },
        pressure: Pressure {
            cpu: Some(psi(2.5, 1.75, Some((0.0, 0.0)))),
            memory: Some(psi(0.4, 0.25, Some((0.1, 0.05)))),
            io: Some(psi(22.0, 9.5, Some((6.0, 3.25)))),
            read_at_ms: 0,
        },
        history: history(),
        disks: disks(),
        nets: nets(),
        processes: (0..PROCESSES).map(process).collect(),
        samplers: samplers(),
        containers: ContainersSnapshot {
            status: DockerStatus::Connected {
                endpoint: "unix:///var/run/docker.sock".into(),
                version: "27.3.1".into(),
            },
            agents: Vec::new(),
            total_seen: 4,
            agent_label: Some("sutazai.agent".into()),
        },
        ..Snapshot::default()
    }
}

/// One process, busiest first as the engine sorts them: CPU falls as `i` grows. Every
/// fifth is a kernel thread (no command line), every seventh runs in an agent container.
pub fn process(i: usize) -> ProcessStat {
    let kernel_thread = i % 5 == 4;
    let policies = [
        "SCHED_OTHER",
        "SCHED_BATCH",
        "SCHED_IDLE",
        "SCHED_FIFO",
        "SCHED_RR",
        "SCHED_DEADLINE",
    ];
    let (comm, cmdline, cgroup) = if kernel_thread {
        (format!("kworker/{i}:1"), String::new(), "/".to_string())
    } else if i.is_multiple_of(7) {
        (
            "python3".to_string(),
            format!(
                "python3 -m agent.serve --port {} --model llama-3-8b-instruct",
                8000 + i
            ),
            format!("/docker/{}", container_id(i)),
        )
    } else {
        (
            format!("worker-{i:02}"),
            format!(
                "/usr/bin/worker-{i:02} --queue jobs-{i} --threads {}",
                i % 8 + 1
            ),
            format!("/system.slice/worker-{i:02}.service"),
        )
    };
    ProcessStat {
        id: ProcessId {
            pid: 1_000 + (i as i32) * 37,
            start_time: 5_000 + i as u64,
        },
        comm,
        cmdline,
        state: if i.is_multiple_of(3) { 'R' } else { 'S' },
        cpu_pct: 180.0 - (i as f32) * 4.5,
        rss_kb: ((i % 11) as u64 + 1) * 48 * 1024,
        threads: (i % 16) as u32 + 1,
        allowed_cpus: if i.is_multiple_of(2) {
            "0-1".into()
        } else {
            "1".into()
        },
        policy: policies
            .get(i % policies.len())
            .copied()
            .unwrap_or("SCHED_OTHER")
            .into(),
        nice: (i % 5) as i32 * 5 - 10,
        cgroup,
    }
}

fn disks() -> Vec<DiskStat> {
    ["nvme0n1", "nvme1n1", "sda"]
        .iter()
        .enumerate()
        .map(|(i, name)| DiskStat {
            name: (*name).into(),
            reads_per_sec: 120.0 / (i as f64 + 1.0),
            writes_per_sec: 45.0 * (i as f64 + 1.0),
            read_bytes_per_sec: 8.0 * MIB as f64 / (i as f64 + 1.0),
            write_bytes_per_sec: 1.5 * MIB as f64 * (i as f64 + 1.0),
            util_pct: [92.0, 35.0, 4.0].get(i).copied().unwrap_or(0.0),
            queue_depth: 2.5 / (i as f32 + 1.0),
            await_ms: 0.8 + i as f32 * 6.1,
        })
        .collect()
}

fn nets() -> Vec<NetStat> {
    ["eth0", "docker0", "veth1a2b3c4"]
        .iter()
        .enumerate()
        .map(|(i, name)| NetStat {
            name: (*name).into(),
            rx_bytes_per_sec: 12.0 * MIB as f64 / (i as f64 + 1.0),
            tx_bytes_per_sec: 3.0 * MIB as f64 / (i as f64 + 1.0),
            rx_packets_per_sec: 9_000.0 / (i as f64 + 1.0),
            tx_packets_per_sec: 4_000.0 / (i as f64 + 1.0),
            errors_per_sec: if i == 0 { 2.0 } else { 0.0 },
        })
        .collect()
}

fn samplers() -> Vec<SamplerHealth> {
    [
        "cpu",
        "memory",
        "pressure",
        "disks",
        "nets",
        "processes",
        "containers",
    ]
    .iter()
    .enumerate()
    .map(|(i, name)| SamplerHealth {
        name: (*name).into(),
        last_duration_us: 300 + i as u64 * 250,
        last_cpu_us: 150 + i as u64 * 410,
        rounds: 42,
        total_cpu_us: 42 * (150 + i as u64 * 410),
        last_error: None,
        failures: 0,
        backoff_ms: 1_000,
    })
    .collect()
}

/// `snap` with two active change batches in the journal, the second left half applied.
pub fn with_active_changes(mut snap: Snapshot) -> Snapshot {
    snap.changes = ChangesSnapshot {
        state_dir: "/var/lib/sutazai-top".into(),
        journal_found: true,
        active: vec![
            ActiveBatch {
                batch: 3,
                label: "set Nice = 5 on process 4242 (4 threads)".into(),
                at_ms: snap.taken_at_ms.saturating_sub(90_000),
                applied: 4,
                total: 4,
                interrupted: false,
                thread_changes: 4,
            },
            ActiveBatch {
                batch: 7,
                label: "set Affinity = 0 on process 77 (9 threads)".into(),
                at_ms: snap.taken_at_ms.saturating_sub(7_200_000),
                applied: 2,
                total: 9,
                interrupted: true,
                thread_changes: 9,
            },
        ],
        problems: vec![],
    };
    snap
}

/// `snap` with a noisy-neighbour bottleneck and one proposed fix of `risk`.
pub fn with_proposal(mut snap: Snapshot, risk: Risk) -> Snapshot {
    let bottleneck = Bottleneck {
        kind: BottleneckKind::NoisyNeighbour,
        subject: Subject::Container {
            id: container_id(1),
            name: "agent-001".into(),
        },
        evidence: vec![Evidence {
            metric: "agent-001 cpu".into(),
            value: 96.5,
            threshold: 50.0,
            unit: "%".into(),
        }],
        since_seq: 40,
    };
    snap.bottlenecks = vec![bottleneck.clone()];
    snap.proposals = vec![Proposal {
        id: 4,
        bottleneck,
        fix: Fix {
            strategy: "batch-cpu-weight".into(),
            summary: "lower CPU weight of batch agents agent-001 to 256".into(),
            risk,
            metric: "host PSI cpu some avg10".into(),
            measure: Measure::HostPsiCpuSome,
            intents: vec![Intent {
                target: IntentTarget::Container {
                    id: container_id(1),
                    name: "agent-001".into(),
                },
                knob: Knob::ContainerCpuShares,
                expected_before: "1024".into(),
                after: "256".into(),
            }],
        },
        status: ProposalStatus::Proposed,
        proposed_seq: 41,
        validation: Default::default(),
    }];
    snap
}

/// `snap` whose disk sampler failed its last round.
pub fn with_sampler_error(mut snap: Snapshot) -> Snapshot {
    if let Some(disks) = snap.samplers.iter_mut().find(|s| s.name == "disks") {
        disks.last_error = Some("cannot read /proc/diskstats: permission denied".into());
        disks.failures = 3;
    }
    snap
}

/// 2 CPUs without SMT, one node; CPU 0 is 95 % busy, CPU 1 20 %.
pub fn small_host() -> Snapshot {
    let cpus = (0..2)
        .map(|id| LogicalCpu {
            id,
            online: true,
            package: 0,
            core: id,
            node: 0,
            siblings: vec![id],
        })
        .collect();
    let nodes = vec![NumaNode {
        id: 0,
        cpus: vec![0, 1],
        mem_total_kb: 8 * GIB_KB,
        distances: vec![10],
    }];
    let mut snap = base(cpus, nodes, Vec::new());
    snap.cpu.per_cpu = vec![(0, busy(95.0)), (1, busy(20.0))];
    snap
}

/// 64 CPUs on 2 nodes: core N has siblings N and N+32; node 0 holds cores 0-15, node 1
/// cores 16-31; CPUs 60-63 are isolated. KSM is running.
pub fn numa64() -> Snapshot {
    let cpus = (0..64)
        .map(|id| {
            let core = id % 32;
            LogicalCpu {
                id,
                online: true,
                package: core / 16,
                core,
                node: core / 16,
                siblings: vec![core, core + 32],
            }
        })
        .collect();
    let nodes = (0..2)
        .map(|node| NumaNode {
            id: node,
            cpus: (0..64).filter(|id| (id % 32) / 16 == node).collect(),
            mem_total_kb: 64 * GIB_KB,
            distances: if node == 0 {
                vec![10, 21]
            } else {
                vec![21, 10]
            },
        })
        .collect();
    let mut snap = base(cpus, nodes, vec![60, 61, 62, 63]);
    snap.memory.ksm = Some(KsmStats {
        run: 1,
        pages_shared: 1_200,
        pages_sharing: 9_800,
        pages_unshared: 340,
        pages_volatile: 12,
        full_scans: 7,
        pages_to_scan: 100,
        sleep_millisecs: 20,
    });
    snap
}

/// A 64-hex container id whose first 12 digits (Docker's short id) differ between
/// containers, as real ids do: a multiplicative hash of `i`, then `i` itself.
pub fn container_id(i: usize) -> String {
    let short = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
    format!("{short:012x}{:052x}", i + 1)
}

/// One agent container with values derived from `i`.
pub fn container(i: usize) -> ContainerStat {
    let class = match i % 3 {
        0 => Some(AgentClass::Latency),
        1 => Some(AgentClass::Batch),
        _ => None,
    };
    let limited = i.is_multiple_of(4);
    let mut labels = BTreeMap::new();
    labels.insert("sutazai.agent".to_string(), "true".to_string());
    ContainerStat {
        id: container_id(i),
        name: format!("agent-{i:03}"),
        image: if i.is_multiple_of(3) {
            "sutazai/llm:1"
        } else {
            "sutazai/tool:2"
        }
        .into(),
        state: "running".into(),
        labels,
        class,
        priority: Some((i % 5) as i32),
        need: None,
        need_error: None,
        process: None,
        ksm: None,
        pid: Some(10_000 + i as i32),
        cgroup: Some(format!("/docker/{}", container_id(i))),
        source: UsageSource::CgroupV1,
        cpu_pct: ((i * 37) % 180) as f32 / 2.0,
        mem_bytes: ((i % 17) as u64 + 1) * 64 * MIB,
        mem_limit_bytes: limited.then_some(2048 * MIB),
        io_read_bytes_per_sec: ((i % 5) * 100 * 1024) as f64,
        io_write_bytes_per_sec: ((i % 3) * 2 * 1024 * 1024) as f64,
        pids: (i % 9) as u64 + 1,
        throttled_periods_delta: if i.is_multiple_of(7) {
            (i % 13) as u64 + 1
        } else {
            0
        },
        throttled_periods_total: (i * 3) as u64,
        cpu_limit_cores: limited.then_some(1.5),
        cpu_weight: Some(if class == Some(AgentClass::Batch) {
            512
        } else {
            1024
        }),
        cpuset_cpus: if i.is_multiple_of(2) {
            "0-1".into()
        } else {
            String::new()
        },
        cpuset_mems: String::new(),
        numa_memory_bytes: Vec::new(),
        run_delay: None,
        pressure: Pressure::default(),
        cpu_history: (0..12)
            .map(|t| ((i + t * 11) % 100) as f32)
            .collect::<VecDeque<f32>>(),
    }
}

/// The small host with `n` agent containers and 9 non-agent containers.
pub fn with_containers(n: usize) -> Snapshot {
    let mut snap = small_host();
    snap.containers.agents = (0..n).map(container).collect();
    snap.containers.total_seen = n + 9;
    snap
}

/// The small host whose Docker daemon does not answer.
pub fn docker_unreachable() -> Snapshot {
    let mut snap = small_host();
    snap.containers = ContainersSnapshot {
        status: DockerStatus::Unreachable {
            endpoint: "unix:///var/run/docker.sock".into(),
            error: "connection refused (os error 111)".into(),
            retry_in_ms: 5_000,
        },
        agents: Vec::new(),
        total_seen: 0,
        agent_label: Some("sutazai.agent".into()),
    };
    snap
}

/// `snap` with the engine's notice set.
pub fn with_notice(mut snap: Snapshot, text: &str, is_error: bool) -> Snapshot {
    snap.notice = Some(Notice {
        seq: 7,
        text: text.into(),
        is_error,
    });
    snap
}

/// A cache that has worked a while: every level used, L3 disabled by a full disk, two
/// damaged files dropped, prefetch running, three agents. Numbers derived by hand so the
/// frames can be checked: L1 hit ratio 600/1000, and so on.
pub fn cache_snapshot() -> sutazai_cache::CacheSnapshot {
    use sutazai_cache::{
        AgentSnapshot, CacheSnapshot, Counts, Level, LevelSnapshot, PrefetchSnapshot,
    };
    let level = |level: Level, capacity: u64, used: u64, entries: u64, hits: u64, misses: u64| {
        LevelSnapshot {
            level,
            present: true,
            capacity_bytes: capacity,
            used_bytes: used,
            entries,
            largest_entry_bytes: capacity / 4,
            hits,
            misses,
            hit_ratio: hits as f64 / (hits + misses) as f64,
            evictions: entries / 2,
            promotions: hits / 2,
            demotions: entries / 4,
            dropped_corrupt: 0,
            policy: "adaptive".into(),
            chosen: "w-tinylfu".into(),
            disabled: None,
        }
    };
    let mut l3 = level(Level::L3, 4 << 30, 3 << 30, 9_000, 100, 300);
    l3.disabled = Some(
        "/var/lib/sutazai-top/cache: write failed: No space left on device (os error 28)".into(),
    );
    l3.dropped_corrupt = 2;
    l3.policy = "lru".into();
    l3.chosen = "lru".into();
    let agent = |name: &str, gets: u64, hits: u64, puts: u64| AgentSnapshot {
        agent: name.into(),
        counts: Counts {
            gets,
            hits,
            misses: gets - hits,
            puts,
            refused: 0,
            deletes: 0,
        },
        hit_ratio: hits as f64 / gets as f64,
    };
    CacheSnapshot {
        levels: vec![
            level(Level::L1, 256 * MIB, 128 * MIB, 2_000, 600, 400),
            level(Level::L2, 1024 * MIB, 256 * MIB, 5_000, 100, 300),
            l3,
        ],
        total: Counts {
            gets: 1_000,
            hits: 800,
            misses: 200,
            puts: 500,
            refused: 3,
            deletes: 10,
        },
        hit_ratio: 0.8,
        agents: vec![
            agent("agent-01", 600, 500, 300),
            agent("agent-02", 300, 250, 150),
            agent("agent-03", 100, 50, 50),
        ],
        hit_ratio_history: (0..30).map(|i| (50 + (i * 7) % 50) as f32).collect(),
        prefetch: Some(PrefetchSnapshot {
            depth: 3,
            prefetched: 80,
            used: 50,
            accuracy: 0.625,
        }),
        shards: 4,
    }
}

/// `snap` with the working cache above.
pub fn with_cache(mut snap: Snapshot) -> Snapshot {
    snap.cache = Some(cache_snapshot());
    snap
}

/// `snap` with a cache just started: L2 off, nothing asked yet.
pub fn with_fresh_cache(mut snap: Snapshot) -> Snapshot {
    let mut cache = cache_snapshot();
    cache.total = Default::default();
    cache.hit_ratio = 0.0;
    cache.agents.clear();
    cache.hit_ratio_history.clear();
    cache.prefetch = None;
    for level in &mut cache.levels {
        let (level_id, capacity, policy) =
            (level.level, level.capacity_bytes, level.policy.clone());
        *level = sutazai_cache::LevelSnapshot {
            level: level_id,
            present: true,
            capacity_bytes: capacity,
            policy: policy.clone(),
            chosen: policy,
            ..Default::default()
        };
    }
    cache.levels[1].present = false;
    cache.levels[1].capacity_bytes = 0;
    snap.cache = Some(cache);
    snap
}

/// A balancer that has worked a while: two pools, five backends. In `default` one backend
/// is ejected (circuit open, out for 45 s more, twice so far); in `compute` one is half-open
/// (its probe in flight) and the other close to its connection limit.
pub fn balancer_snapshot() -> sutazai_balancer::BalancerSnapshot {
    use sutazai_balancer::{
        BackendSnapshot, BackendSource, BalancerSnapshot, CircuitState, Health, PoolSnapshot,
    };
    let backend =
        |host: &str, port: u16, source: BackendSource, weight: u32, max: u32| BackendSnapshot {
            id: format!("{host}:{port}"),
            host: host.into(),
            port,
            weight,
            max_connections: max,
            source,
            health: Health::Up,
            ..BackendSnapshot::default()
        };
    let mut a = backend("127.0.0.1", 18081, BackendSource::Config, 1, 100);
    (a.in_flight, a.requests_total, a.requests_per_sec) = (3, 400_000, 420.5);
    (a.errors_total, a.ewma_ms) = (2, 1.4);
    (a.latency_p50_ms, a.latency_p99_ms) = (Some(1.2), Some(8.5));
    let mut b = backend("127.0.0.1", 18082, BackendSource::Config, 2, 100);
    (b.in_flight, b.requests_total, b.requests_per_sec) = (7, 800_000, 830.0);
    (b.errors_total, b.ewma_ms) = (0, 1.3);
    (b.latency_p50_ms, b.latency_p99_ms) = (Some(1.1), Some(9.8));
    let mut ejected = backend(
        "10.0.0.7",
        8000,
        BackendSource::Docker {
            container: "agent-007".into(),
        },
        1,
        100,
    );
    ejected.health = Health::Ejected;
    ejected.circuit = CircuitState::Open;
    (
        ejected.requests_total,
        ejected.errors_total,
        ejected.ewma_ms,
    ) = (34_000, 57, 250.0);
    (ejected.ejections, ejected.ejected_for_secs) = (2, Some(45));
    let mut busy = backend("127.0.0.1", 19001, BackendSource::Api, 4, 16);
    (busy.in_flight, busy.requests_total, busy.requests_per_sec) = (12, 500, 35.2);
    (busy.errors_total, busy.ewma_ms) = (1, 140.0);
    (busy.latency_p50_ms, busy.latency_p99_ms) = (Some(120.0), Some(850.0));
    let mut probing = backend("127.0.0.1", 19002, BackendSource::Api, 1, 16);
    probing.circuit = CircuitState::HalfOpen;
    (
        probing.in_flight,
        probing.requests_total,
        probing.requests_per_sec,
    ) = (1, 67, 0.4);
    (probing.errors_total, probing.ewma_ms, probing.ejections) = (9, 600.0, 1);
    (probing.latency_p50_ms, probing.latency_p99_ms) = (Some(95.0), Some(95.0));
    BalancerSnapshot {
        listen: "127.0.0.1:8080".into(),
        requests_total: 1_234_567,
        requests_per_sec: 1286.1,
        queued: 3,
        rejected_total: 17,
        retries_total: 40,
        retries_over_budget_total: 2,
        bad_requests_total: 5,
        general_path_connections_total: 2,
        busy_poll: sutazai_balancer::BusyPollSnapshot {
            window_us: 50,
            paid_total: 90_000,
            wasted_total: 1_200,
            polling_ns_total: 1_500_000_000,
        },
        docker_skipped: vec![
            "container agent-9: label sutazai.backend.port = \"abc\" is not a port".into(),
        ],
        pools: vec![
            PoolSnapshot {
                name: "default".into(),
                algorithm: "peak-ewma".into(),
                rule: "default".into(),
                backends: vec![a, b, ejected],
                panic_choices_total: 0,
            },
            PoolSnapshot {
                name: "compute".into(),
                algorithm: "least-connections".into(),
                rule: "header x-request-type: compute".into(),
                backends: vec![busy, probing],
                panic_choices_total: 3,
            },
        ],
    }
}

/// `snap` with the working balancer above.
pub fn with_balancer(mut snap: Snapshot) -> Snapshot {
    snap.balancer = Some(balancer_snapshot());
    snap
}
