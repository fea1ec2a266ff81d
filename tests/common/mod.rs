//! Deterministic synthetic snapshots for the TUI frame tests and the render bench.
//! No wall clock, no randomness, no real host data: every value is derived from indices.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use sutazai_top::config::Mode;
use sutazai_top::snapshot::{
    AgentClass, CgroupLayout, ContainerStat, ContainersSnapshot, CpuSnapshot, CpuTimes,
    DockerStatus, HostHistory, HostInfo, KsmStats, LogicalCpu, MemorySnapshot, NodeMemory, Notice,
    NumaNode, Pressure, PsiLine, PsiResource, Snapshot, Topology, UsageSource,
};

const GIB_KB: u64 = 1024 * 1024;
const MIB: u64 = 1024 * 1024;
const HISTORY_POINTS: usize = 60;

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
        },
        pressure: Pressure {
            cpu: Some(psi(2.5, 1.75, Some((0.0, 0.0)))),
            memory: Some(psi(0.4, 0.25, Some((0.1, 0.05)))),
            io: Some(psi(22.0, 9.5, Some((6.0, 3.25)))),
        },
        history: history(),
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
        id: format!("{:064x}", i + 1),
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
        pid: Some(10_000 + i as i32),
        cgroup: Some(format!("/docker/{:064x}", i + 1)),
        source: UsageSource::CgroupV1,
        cpu_pct: ((i * 37) % 180) as f32 / 2.0,
        mem_bytes: ((i % 17) as u64 + 1) * 64 * MIB,
        mem_limit_bytes: limited.then_some(2048 * MIB),
        io_read_bytes_per_sec: ((i % 5) * 100 * 1024) as f64,
        io_write_bytes_per_sec: ((i % 3) * 2 * 1024 * 1024) as f64,
        pids: (i % 9) as u64 + 1,
        throttled_periods_delta: if i.is_multiple_of(7) { (i % 13) as u64 + 1 } else { 0 },
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
