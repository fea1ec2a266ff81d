//! The snapshot: the one immutable picture of the host that every face renders.
//!
//! The engine builds a new `Snapshot` every tick and publishes it as an `Arc` on a watch
//! channel. Faces (TUI, report, later the API) never read the host themselves; a pane is a
//! pure function of (snapshot, view state). Everything here is plain data and `Serialize`,
//! so the report is the snapshot written out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::identity::ProcessId;
use super::mode::Mode;

/// Everything a face may show, as of one tick.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Snapshot {
    /// Tick number, starting at 1 for the first published snapshot.
    pub seq: u64,
    /// Wall clock of this tick, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// The tick interval in force.
    pub interval_ms: u64,
    pub mode: Mode,
    /// Fixes the mode allows are applied without asking.
    pub auto_fix: bool,
    pub host: HostInfo,
    /// Read once at start (topology rarely changes); shared between snapshots.
    pub topology: Arc<Topology>,
    pub cpu: CpuSnapshot,
    pub memory: MemorySnapshot,
    pub pressure: Pressure,
    pub disks: Vec<DiskStat>,
    pub nets: Vec<NetStat>,
    /// The busiest processes this tick, highest CPU first.
    pub processes: Vec<ProcessStat>,
    pub containers: ContainersSnapshot,
    /// Host-wide series for sparklines and, later, trend prediction.
    pub history: HostHistory,
    /// Our changes active on the host, from the journal.
    pub changes: ChangesSnapshot,
    /// Bottlenecks that held for the configured number of ticks.
    pub bottlenecks: Vec<super::bottleneck::Bottleneck>,
    /// Fixes proposed for them, and where each stands.
    pub proposals: Vec<super::proposal::Proposal>,
    /// Health of each sampler: a failing or slow sampler shows here, never stalls the rest.
    pub samplers: Vec<SamplerHealth>,
    /// The engine's answer to the last command that has one (export path, errors...).
    pub notice: Option<Notice>,
    /// The agents' cache; `None` when `[cache] enabled = false`.
    #[serde(default)]
    pub cache: Option<sutazai_cache::CacheSnapshot>,
    /// The load balancer; `None` when `[balancer] enabled = false`.
    #[serde(default)]
    pub balancer: Option<sutazai_balancer::BalancerSnapshot>,
    /// The resource coordinator's plan; `None` when `[coordinator] enabled = false`.
    #[serde(default)]
    pub coordinator: Option<super::need::CoordinatorSnapshot>,
    /// The shared-memory pools: served, or why not.
    #[serde(default)]
    pub pools: PoolsView,
}

impl Snapshot {
    /// Agents holding nothing in the pools whose memory KSM may merge (marked mergeable, or
    /// merged already), most merged first: what the Pools pane and API show for them.
    pub fn ksm_outside_pools(&self) -> Vec<(String, AgentKsm)> {
        let in_pools = |name: &str| {
            self.pools
                .serving
                .as_ref()
                .is_some_and(|s| s.agents.iter().any(|a| a.agent == name))
        };
        let mut rows: Vec<(String, AgentKsm)> = self
            .containers
            .agents
            .iter()
            .filter_map(|a| Some((a.name.clone(), a.ksm?)))
            .filter(|(_, k)| k.merge_any || k.mergeable || k.merging_pages > 0)
            .filter(|(name, _)| !in_pools(name))
            .collect();
        rows.sort_by(|a, b| {
            b.1.merging_bytes
                .cmp(&a.1.merging_bytes)
                .then(a.0.cmp(&b.0))
        });
        rows
    }
}

/// KSM's counters for an agent's processes, summed (/proc/<pid>/ksm_stat).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct AgentKsm {
    /// Pages of its memory merged with identical pages elsewhere, and their bytes.
    pub merging_pages: u64,
    pub merging_bytes: u64,
    pub rmap_items: u64,
    /// What merging saves less what its metadata costs, in bytes (may be negative).
    pub profit_bytes: i64,
    /// Some process has the whole of its memory mergeable (PR_SET_MEMORY_MERGE).
    pub merge_any: bool,
    /// Some process has areas marked mergeable (madvise).
    pub mergeable: bool,
}

/// The pools as a face shows them.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PoolsView {
    /// The store's figures while the engine serves it.
    pub serving: Option<sutazai_pools::PoolsSnapshot>,
    /// Why it does not: disabled, an engine that only observes, the socket taken...
    pub not_serving: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub kernel: String,
    pub uptime_secs: u64,
    /// True when running as root (uid 0); otherwise the engine is read-only.
    pub is_root: bool,
    pub cgroup_layout: CgroupLayout,
}

/// Which cgroup hierarchies the host mounts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// Only cgroup v1 controllers.
    V1,
    /// Only the unified (v2) hierarchy.
    V2,
    /// v1 controllers plus a unified tree (systemd "hybrid" mode).
    Hybrid,
    /// No cgroup filesystem found.
    #[default]
    None,
}

// ---------------------------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Topology {
    /// Every logical CPU that is present, ordered by id.
    pub cpus: Vec<LogicalCpu>,
    /// NUMA nodes; a host without NUMA information gets one node 0 holding every CPU.
    pub nodes: Vec<NumaNode>,
    /// Cache instances, deduplicated: one entry per (level, type, set of CPUs sharing it).
    pub caches: Vec<CacheInfo>,
    /// CPUs isolated from the scheduler (isolcpus), from /sys/devices/system/cpu/isolated.
    pub isolated: Vec<u32>,
    pub packages: u32,
    pub physical_cores: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct LogicalCpu {
    pub id: u32,
    pub online: bool,
    pub package: u32,
    /// Core id within the package (as the kernel reports it).
    pub core: u32,
    pub node: u32,
    /// SMT siblings including this CPU, from thread_siblings_list.
    pub siblings: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
    pub mem_total_kb: u64,
    /// Distance to every node, in node-id order (10 = local).
    pub distances: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CacheInfo {
    pub level: u32,
    /// "Data", "Instruction" or "Unified".
    pub kind: String,
    pub size_kb: u64,
    pub shared_cpus: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------------

/// Share of one CPU's (or all CPUs') time over the last interval, each in percent (0..=100).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f32,
    pub nice: f32,
    pub system: f32,
    pub iowait: f32,
    pub irq: f32,
    pub softirq: f32,
    pub steal: f32,
    pub idle: f32,
}

impl CpuTimes {
    /// Busy percent: everything but idle and iowait. All-zero times mean "no data yet"
    /// (first tick, or a CPU whose counters went backwards) and count as 0, not 100.
    pub fn busy(&self) -> f32 {
        if self.has_data() {
            (100.0 - self.idle - self.iowait).clamp(0.0, 100.0)
        } else {
            0.0
        }
    }

    /// False for the all-zero value that stands for "no interval measured".
    pub fn has_data(&self) -> bool {
        let total = self.user
            + self.nice
            + self.system
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
            + self.idle;
        total > 0.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CpuSnapshot {
    /// All CPUs together.
    pub total: CpuTimes,
    /// (cpu id, its times), ordered by id. Empty on the first sample (no interval yet).
    pub per_cpu: Vec<(u32, CpuTimes)>,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
    /// Runnable tasks (procs_running) and tasks blocked on I/O (procs_blocked).
    pub runnable: u32,
    pub blocked: u32,
    pub ctxt_per_sec: f64,
    pub forks_per_sec: f64,
    pub interrupts_per_sec: f64,
    /// The kernel's list of online CPUs (sys devices/system/cpu/online); `None` when it
    /// cannot be read. A change from the topology's is a CPU going offline or online.
    #[serde(default)]
    pub online: Option<Vec<u32>>,
}

// ---------------------------------------------------------------------------------------------
// Memory and pressure
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct MemorySnapshot {
    pub total_kb: u64,
    pub available_kb: u64,
    pub free_kb: u64,
    pub cached_kb: u64,
    pub buffers_kb: u64,
    pub dirty_kb: u64,
    pub writeback_kb: u64,
    pub anon_huge_kb: u64,
    pub swap_total_kb: u64,
    pub swap_free_kb: u64,
    /// Pages swapped in / out per second (pswpin / pswpout).
    pub swap_in_per_sec: f64,
    pub swap_out_per_sec: f64,
    /// Major page faults per second (pgmajfault).
    pub major_faults_per_sec: f64,
    /// THP mode: the bracketed word of transparent_hugepage/enabled, e.g. "madvise".
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    pub ksm: Option<KsmStats>,
    /// Per NUMA node memory (from nodeN/meminfo).
    pub nodes: Vec<NodeMemory>,
    /// vm.* sysctls and cpufreq governors, as the system-knob strategies need them.
    pub tunables: Tunables,
}

/// Kernel tunables the system-knob strategies compare against; `None` (or empty) where the
/// file does not exist on this host.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Tunables {
    pub swappiness: Option<u32>,
    pub dirty_ratio: Option<u32>,
    pub dirty_background_ratio: Option<u32>,
    pub dirty_expire_centisecs: Option<u32>,
    /// One entry per CPU with a cpufreq governor, by CPU id; empty without cpufreq.
    pub governors: Vec<CpuGovernor>,
}

/// A CPU's cpufreq governor and the ones its driver offers.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CpuGovernor {
    pub cpu: u32,
    pub governor: String,
    pub available: Vec<String>,
}

impl MemorySnapshot {
    /// Used fraction of memory, 0..=1, counting reclaimable cache as available.
    pub fn used_fraction(&self) -> f64 {
        if self.total_kb == 0 {
            return 0.0;
        }
        1.0 - self.available_kb as f64 / self.total_kb as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct KsmStats {
    pub run: u32,
    pub pages_shared: u64,
    pub pages_sharing: u64,
    pub pages_unshared: u64,
    pub pages_volatile: u64,
    pub full_scans: u64,
    pub pages_to_scan: u64,
    pub sleep_millisecs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct NodeMemory {
    pub node: u32,
    pub total_kb: u64,
    pub free_kb: u64,
}

/// One PSI line: share of wall time stalled, in percent, over 10 s, 60 s and 300 s windows,
/// and the total stall time in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f32,
    pub avg60: f32,
    pub avg300: f32,
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct PsiResource {
    pub some: PsiLine,
    /// Absent for system-wide cpu on older kernels.
    pub full: Option<PsiLine>,
}

/// Pressure stall information for one scope (the system or one cgroup); `None` where the
/// kernel does not provide it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<PsiResource>,
    pub memory: Option<PsiResource>,
    pub io: Option<PsiResource>,
    /// When these files were read (ms since the epoch), so stall totals can be turned into
    /// rates over the real interval between two readings; 0 when unknown (a reading reused
    /// from a cache of unknown age).
    #[serde(default)]
    pub read_at_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Disks and network
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct DiskStat {
    pub name: String,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    pub read_bytes_per_sec: f64,
    pub write_bytes_per_sec: f64,
    /// Percent of the interval the device had I/O in flight.
    pub util_pct: f32,
    /// Average number of requests in flight (from weighted time in queue).
    pub queue_depth: f32,
    /// Average time per completed request, milliseconds.
    pub await_ms: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct NetStat {
    pub name: String,
    pub rx_bytes_per_sec: f64,
    pub tx_bytes_per_sec: f64,
    pub rx_packets_per_sec: f64,
    pub tx_packets_per_sec: f64,
    /// Errors plus drops, both directions, per second.
    pub errors_per_sec: f64,
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ProcessStat {
    pub id: ProcessId,
    /// The kernel's comm (may contain spaces and parentheses).
    pub comm: String,
    /// First part of the command line, for display; empty for kernel threads.
    pub cmdline: String,
    pub state: char,
    /// Percent of one CPU over the last interval (can exceed 100 for multi-threaded work).
    pub cpu_pct: f32,
    pub rss_kb: u64,
    pub threads: u32,
    /// Cpus_allowed_list as the kernel prints it, e.g. "0-3,8".
    pub allowed_cpus: String,
    /// "SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE".
    pub policy: String,
    pub nice: i32,
    /// The process's cgroup path: the unified entry, unless it is just "/" on a hybrid host
    /// where the v1 cpu (else cpuacct, else memory) path says more.
    pub cgroup: String,
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DockerStatus {
    /// Docker is disabled in the config.
    Disabled,
    /// First connection attempt in progress.
    #[default]
    Connecting,
    Connected {
        endpoint: String,
        version: String,
    },
    /// Nothing answered at `endpoint`; the engine retries after `retry_in_ms`.
    Unreachable {
        endpoint: String,
        error: String,
        retry_in_ms: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ContainersSnapshot {
    pub status: DockerStatus,
    /// Containers that count as agents (label filter, or all when configured), by name.
    pub agents: Vec<ContainerStat>,
    /// How many containers Docker reports in all, agents or not.
    pub total_seen: usize,
    /// The label that makes a container an agent; `None` when every container counts.
    pub agent_label: Option<String>,
}

/// Latency-sensitive or batch, from the `sutazai.class` label.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AgentClass {
    Latency,
    Batch,
}

/// Where a container's usage figures came from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    CgroupV1,
    CgroupV2,
    /// bollard's one-shot stats, only when the cgroup files could not be found.
    DockerStats,
    /// Summed from each process's /proc files: a process agent whose cgroup holds others.
    Procfs,
    /// Not running, or nothing could be read yet.
    #[default]
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ContainerStat {
    /// Full container id.
    pub id: String,
    pub name: String,
    pub image: String,
    /// Docker's state: running, exited, paused...
    pub state: String,
    pub labels: BTreeMap<String, String>,
    pub class: Option<AgentClass>,
    pub priority: Option<i32>,
    /// What its labels declare it needs (`sutazai.cpus`, `.exclusive`, `.memory`, `.numa`).
    #[serde(default)]
    pub need: Option<super::need::Need>,
    /// Why its declaration was refused, naming the label.
    #[serde(default)]
    pub need_error: Option<String>,
    /// Main process pid on the host, when running.
    pub pid: Option<i32>,
    /// The container's cgroup path as found from /proc/<pid>/cgroup.
    pub cgroup: Option<String>,
    pub source: UsageSource,
    /// Percent of one CPU over the last interval.
    pub cpu_pct: f32,
    /// Memory usage minus inactive file cache, the figure `docker stats` shows.
    pub mem_bytes: u64,
    pub mem_limit_bytes: Option<u64>,
    pub io_read_bytes_per_sec: f64,
    pub io_write_bytes_per_sec: f64,
    pub pids: u64,
    /// CFS periods throttled during the last interval, and in all.
    pub throttled_periods_delta: u64,
    pub throttled_periods_total: u64,
    /// CPU quota in cores (quota / period), if limited.
    pub cpu_limit_cores: Option<f64>,
    /// cpu.shares (v1) or cpu.weight (v2) as read.
    pub cpu_weight: Option<u64>,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// Bytes of the container's memory on each NUMA node (index = node id), from the memory
    /// cgroup's memory.numa_stat, re-read every 10 s; empty when unknown.
    pub numa_memory_bytes: Vec<u64>,
    pub pressure: Pressure,
    /// Latency-class agents only: how long their tasks waited on run queues over the last
    /// tick (from each task's schedstat); `None` for other agents and on the first tick.
    pub run_delay: Option<RunDelay>,
    /// Recent CPU percent samples, oldest first, for a sparkline.
    pub cpu_history: VecDeque<f32>,
    /// Set for an agent that is plain processes (`[[agents]]`), not a container.
    #[serde(default)]
    pub process: Option<super::process_agent::ProcessAgent>,
    /// What KSM merges for its processes (read every few ticks); `None` where the kernel
    /// has no /proc/<pid>/ksm_stat.
    #[serde(default)]
    pub ksm: Option<AgentKsm>,
}

impl ContainerStat {
    /// The target for a container-level knob of this agent, container or process agent.
    pub fn intent_target(&self) -> super::fix::IntentTarget {
        match &self.process {
            Some(process) => super::fix::IntentTarget::ProcessAgent {
                id: self.id.clone(),
                name: self.name.clone(),
                process: process.clone(),
            },
            None => super::fix::IntentTarget::Container {
                id: self.id.clone(),
                name: self.name.clone(),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// History, health, notices
// ---------------------------------------------------------------------------------------------

/// A fixed-capacity ring of samples, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Ring {
    pub capacity: usize,
    pub points: VecDeque<f32>,
}

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring {
            capacity: capacity.max(1),
            points: VecDeque::with_capacity(capacity.max(1)),
        }
    }

    pub fn push(&mut self, value: f32) {
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(value);
    }

    pub fn last(&self) -> Option<f32> {
        self.points.back().copied()
    }
}

/// Host-wide series, one point per tick.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct HostHistory {
    pub cpu_busy_pct: Ring,
    pub mem_used_pct: Ring,
    pub swap_used_pct: Ring,
    pub psi_cpu_some: Ring,
    pub psi_memory_some: Ring,
    pub psi_memory_full: Ring,
    pub psi_io_some: Ring,
    pub psi_io_full: Ring,
}

impl HostHistory {
    pub fn with_capacity(points: usize) -> Self {
        HostHistory {
            cpu_busy_pct: Ring::new(points),
            mem_used_pct: Ring::new(points),
            swap_used_pct: Ring::new(points),
            psi_cpu_some: Ring::new(points),
            psi_memory_some: Ring::new(points),
            psi_memory_full: Ring::new(points),
            psi_io_some: Ring::new(points),
            psi_io_full: Ring::new(points),
        }
    }
}

/// What the journal says is active on the host.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ChangesSnapshot {
    /// The journal's directory.
    pub state_dir: String,
    /// False until the journal has been read (or when it does not exist yet).
    pub journal_found: bool,
    /// Open batches: applied and not rolled back, or cut short by a crash.
    pub active: Vec<ActiveBatch>,
    /// Journal lines that could not be used, or why the journal could not be read.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ActiveBatch {
    pub batch: u64,
    pub label: String,
    /// When the batch began, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub applied: usize,
    pub total: usize,
    /// A change of the batch was still pending: the run applying it ended mid-batch.
    pub interrupted: bool,
    /// How many of its changes act on single threads (new threads of those processes are
    /// brought under the batch while it is active).
    pub thread_changes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct SamplerHealth {
    pub name: String,
    /// Wall time of the last round, microseconds.
    pub last_duration_us: u64,
    /// CPU time the last round's file reading cost, microseconds (the sampler's own cost).
    pub last_cpu_us: u64,
    /// Successful rounds so far, and the CPU time they cost in all (for the mean).
    pub rounds: u64,
    pub total_cpu_us: u64,
    pub last_error: Option<String>,
    /// Consecutive failed or overrun rounds.
    pub failures: u32,
    /// Current wait between rounds, milliseconds (grows while failing).
    pub backoff_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notice {
    pub seq: u64,
    pub text: String,
    pub is_error: bool,
}

/// Run delay over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct RunDelay {
    /// Milliseconds waited on a run queue per second of wall time (all tasks summed).
    pub wait_ms_per_sec: f64,
    /// Seconds waited per second run: 0.25 means a quarter second of waiting for every
    /// second on a CPU.
    pub wait_per_run: f64,
}
